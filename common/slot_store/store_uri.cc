#include "common/slot_store/store_uri.h"

#include <cctype>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/slot_store/absl_compat.h"
#include "common/util/status_macros.h"

namespace icae::slot_store {
namespace {

absl::Status BadUri(absl::string_view uri, absl::string_view why) {
  // Keep messages short: a long URI is cut (and may hold a password, which is not echoed).
  std::string shown(uri.substr(0, 200));
  if (auto at = shown.find('@'); at != std::string::npos) {
    if (auto s = shown.find("://"); s != std::string::npos && s < at) {
      shown = shown.substr(0, s + 3) + "***" + shown.substr(at);
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("bad store URI '", shown, "': ", why));
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string UrlEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

absl::StatusOr<std::string> UrlDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) {
      return absl::InvalidArgumentError("truncated percent escape");
    }
    const int hi = HexDigit(text[i + 1]), lo = HexDigit(text[i + 2]);
    if (hi < 0 || lo < 0) return absl::InvalidArgumentError("bad percent escape");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

absl::StatusOr<StoreUri> ParseStoreUri(std::string_view uri_in) {
  const absl::string_view uri = ToAbsl(uri_in);
  StoreUri out;
  const size_t sep = uri.find("://");
  if (sep == absl::string_view::npos || sep == 0) {
    return BadUri(uri, "expected scheme://... (memory://, file:///dir, redis://host:port/db, "
                       "redis-cluster://host:port,host:port, tiered://?backend=...)");
  }
  out.scheme = absl::AsciiStrToLower(uri.substr(0, sep));
  for (char c : out.scheme) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') {
      return BadUri(uri, "bad scheme");
    }
  }
  absl::string_view rest = uri.substr(sep + 3);
  if (rest.find('#') != absl::string_view::npos) return BadUri(uri, "fragments (#) not allowed");
  absl::string_view query;
  if (size_t q = rest.find('?'); q != absl::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  absl::string_view authority = rest, path;
  if (size_t slash = rest.find('/'); slash != absl::string_view::npos) {
    authority = rest.substr(0, slash);
    path = rest.substr(slash);
  }
  if (size_t at = authority.rfind('@'); at != absl::string_view::npos) {
    auto info = UrlDecode(ToStd(authority.substr(0, at)));
    if (!info.ok()) return BadUri(uri, info.status().message());
    out.userinfo = *std::move(info);
    authority = authority.substr(at + 1);
  }
  const bool list = authority.find(',') != absl::string_view::npos;
  for (absl::string_view piece : absl::StrSplit(authority, ',')) {
    StoreEndpoint ep;
    absl::string_view port;
    if (!piece.empty() && piece[0] == '[') {  // [IPv6]:port
      const size_t close = piece.find(']');
      if (close == absl::string_view::npos) return BadUri(uri, "unclosed '[' in host");
      ep.host = std::string(piece.substr(1, close - 1));
      absl::string_view after = piece.substr(close + 1);
      if (!after.empty()) {
        if (after[0] != ':') return BadUri(uri, "junk after IPv6 host");
        port = after.substr(1);
        if (port.empty()) return BadUri(uri, "empty port");
      }
    } else if (size_t colon = piece.rfind(':'); colon != absl::string_view::npos) {
      ep.host = std::string(piece.substr(0, colon));
      port = piece.substr(colon + 1);
      if (port.empty()) return BadUri(uri, "empty port");
    } else {
      ep.host = std::string(piece);
    }
    if (!port.empty()) {
      int p = 0;
      if (!absl::SimpleAtoi(port, &p) || p < 1 || p > 65535 ||
          port.find_first_not_of("0123456789") != absl::string_view::npos) {
        return BadUri(uri, absl::StrCat("port must be 1..65535, got '", port, "'"));
      }
      ep.port = p;
    }
    if (list && ep.host.empty()) {
      return BadUri(uri, "empty host in a host list (expected host:port,host:port)");
    }
    if (!ep.host.empty() || ep.port != -1) out.endpoints.push_back(std::move(ep));
  }
  if (!out.endpoints.empty()) {
    out.host = out.endpoints[0].host;
    out.port = out.endpoints[0].port;
  }
  auto decoded_path = UrlDecode(ToStd(path));
  if (!decoded_path.ok()) return BadUri(uri, decoded_path.status().message());
  out.path = *std::move(decoded_path);
  if (!query.empty()) {
    for (absl::string_view kv : absl::StrSplit(query, '&', absl::SkipEmpty())) {
      const size_t eq = kv.find('=');
      auto key = UrlDecode(ToStd(kv.substr(0, eq)));
      auto value = UrlDecode(ToStd(eq == absl::string_view::npos ? absl::string_view() : kv.substr(eq + 1)));
      if (!key.ok()) return BadUri(uri, key.status().message());
      if (!value.ok()) return BadUri(uri, value.status().message());
      if (key->empty()) return BadUri(uri, "empty parameter name");
      if (!out.params.emplace(*key, *value).second) {
        return BadUri(uri, absl::StrCat("parameter '", *key, "' given twice"));
      }
    }
  }
  return out;
}

absl::StatusOr<uint64_t> ParseByteSize(std::string_view text_in) {
  const absl::string_view text = ToAbsl(text_in);
  absl::string_view t = absl::StripAsciiWhitespace(text);
  size_t digits = 0;
  while (digits < t.size() && std::isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
  uint64_t value = 0;
  if (digits == 0 || !absl::SimpleAtoi(t.substr(0, digits), &value)) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a byte count"));
  }
  std::string suffix = absl::AsciiStrToLower(t.substr(digits));
  for (absl::string_view tail : {"ib", "b"}) {
    if (suffix.size() > tail.size() && absl::EndsWith(suffix, tail)) {
      suffix.resize(suffix.size() - tail.size());
      break;
    }
  }
  int shift = 0;
  if (suffix.empty() || suffix == "b") {
    shift = 0;
  } else if (suffix == "k") {
    shift = 10;
  } else if (suffix == "m") {
    shift = 20;
  } else if (suffix == "g") {
    shift = 30;
  } else if (suffix == "t") {
    shift = 40;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a byte count (use digits with K, M, G or T)"));
  }
  if (shift > 0 && value > (~uint64_t{0} >> shift)) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' overflows 64 bits"));
  }
  return value << shift;
}

absl::StatusOr<uint64_t> UriParams::TakeBytes(const std::string& name, uint64_t def,
                                              uint64_t min_value) {
  known_.insert(name);
  auto it = params_.find(name);
  if (it == params_.end()) return def;
  auto v = ParseByteSize(it->second);
  if (!v.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(scheme_, ":// parameter ", name, ": ", v.status().message()));
  }
  if (*v < min_value) {
    return absl::InvalidArgumentError(absl::StrCat(scheme_, ":// parameter ", name,
                                                   " must be at least ", min_value));
  }
  return *v;
}

absl::StatusOr<int64_t> UriParams::TakeInt(const std::string& name, int64_t def,
                                           int64_t min_value, int64_t max_value) {
  known_.insert(name);
  auto it = params_.find(name);
  if (it == params_.end()) return def;
  int64_t v = 0;
  if (!absl::SimpleAtoi(it->second, &v) || v < min_value || v > max_value) {
    return absl::InvalidArgumentError(
        absl::StrCat(scheme_, ":// parameter ", name, " must be an integer in [", min_value,
                     ", ", max_value, "], got '", it->second, "'"));
  }
  return v;
}

absl::StatusOr<absl::Duration> UriParams::TakeDuration(const std::string& name,
                                                       absl::Duration def) {
  known_.insert(name);
  auto it = params_.find(name);
  if (it == params_.end()) return def;
  double seconds = 0;
  absl::Duration d;
  if (absl::SimpleAtod(it->second, &seconds)) {
    if (!std::isfinite(seconds)) seconds = -1;  // rejected below
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(it->second, &d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        scheme_, ":// parameter ", name, " must be seconds or a duration like 500ms, got '",
        it->second, "'"));
  }
  if (d < absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(scheme_, ":// parameter ", name, " must be a finite, non-negative duration"));
  }
  return d;
}

std::string UriParams::TakeString(const std::string& name, const std::string& def) {
  known_.insert(name);
  auto it = params_.find(name);
  return it == params_.end() ? def : it->second;
}

absl::Status UriParams::Finish() const {
  for (const auto& [name, value] : params_) {
    if (known_.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown parameter '", name, "' for ",
                                                     scheme_, ":// (known: ",
                                                     absl::StrJoin(known_, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace icae::slot_store
