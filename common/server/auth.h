// API keys and tenants. A key file has one "<key> <tenant>" per line ('#' starts a comment);
// a caller sends "authorization: Bearer <key>". The tenant namespace is mixed into slot IDs and
// store keys on the server side only (a client-supplied salt could be forged; see
// slot_identity.h).
#ifndef ICAE_COMMON_SERVER_AUTH_H_
#define ICAE_COMMON_SERVER_AUTH_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <grpcpp/support/string_ref.h>

#include "absl/status/statusor.h"

namespace icae::server {

class ApiKeyAuthenticator {
 public:
  // No keys: every caller is the default tenant "".
  ApiKeyAuthenticator() = default;
  // Parses key-file text. INVALID_ARGUMENT for a malformed line, a repeated key, a key shorter
  // than 8 characters or a tenant outside [A-Za-z0-9_.-]{1,64}.
  static absl::StatusOr<std::unique_ptr<ApiKeyAuthenticator>> FromText(std::string_view text,
                                                                      const std::string& origin);
  static absl::StatusOr<std::unique_ptr<ApiKeyAuthenticator>> FromFile(const std::string& path);

  bool enabled() const { return !tenants_.empty(); }
  // The caller's tenant from the "authorization" metadata. UNAUTHENTICATED when keys are
  // configured and the header is missing, not "Bearer <key>", or the key is unknown.
  absl::StatusOr<std::string> Authenticate(
      const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const;
  absl::StatusOr<std::string> AuthenticateHeader(std::string_view header, bool present) const;

 private:
  std::map<std::string, std::string, std::less<>> tenants_;  // key -> tenant
};

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_AUTH_H_
