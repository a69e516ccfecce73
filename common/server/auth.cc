#include "common/server/auth.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/util/mapped_file.h"

namespace icae::server {
namespace {

bool ValidTenant(std::string_view t) {
  if (t.empty() || t.size() > 64) return false;
  for (char c : t) {
    if (!(absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.')) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ApiKeyAuthenticator>> ApiKeyAuthenticator::FromText(
    std::string_view text, const std::string& origin) {
  auto auth = std::make_unique<ApiKeyAuthenticator>();
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_no;
    line = line.substr(0, line.find('#'));
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    std::vector<std::string> parts = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", line_no, ": expected '<key> <tenant>'"));
    }
    if (parts[0].size() < 8) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ":", line_no, ": key shorter than 8 characters"));
    }
    if (!ValidTenant(parts[1])) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", line_no, ": tenant must match [A-Za-z0-9_.-]{1,64}"));
    }
    if (!auth->tenants_.emplace(parts[0], parts[1]).second) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ":", line_no, ": repeated key"));
    }
  }
  if (auth->tenants_.empty()) return absl::InvalidArgumentError(absl::StrCat(origin, ": no keys"));
  return auth;
}

absl::StatusOr<std::unique_ptr<ApiKeyAuthenticator>> ApiKeyAuthenticator::FromFile(
    const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return FromText(*text, path);
}

absl::StatusOr<std::string> ApiKeyAuthenticator::AuthenticateHeader(std::string_view header,
                                                                   bool present) const {
  if (!enabled()) return std::string();
  if (!present) return absl::UnauthenticatedError("missing 'authorization: Bearer <key>' metadata");
  absl::string_view h(header.data(), header.size());
  if (!absl::ConsumePrefix(&h, "Bearer ")) {
    return absl::UnauthenticatedError("authorization metadata must be 'Bearer <key>'");
  }
  auto it = tenants_.find(std::string(h));
  if (it == tenants_.end()) return absl::UnauthenticatedError("unknown API key");
  return it->second;
}

absl::StatusOr<std::string> ApiKeyAuthenticator::Authenticate(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
  if (!enabled()) return std::string();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return AuthenticateHeader("", false);
  return AuthenticateHeader(std::string_view(it->second.data(), it->second.size()), true);
}

}  // namespace icae::server
