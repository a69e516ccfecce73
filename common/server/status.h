// The one place where absl::Status meets grpc::Status (both directions), so every RPC maps
// errors the same way. Messages are capped (servers commonly cap them around 1 KB).
#ifndef ICAE_COMMON_SERVER_STATUS_H_
#define ICAE_COMMON_SERVER_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace icae::server {

inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Same code (the numeric values agree), message truncated to kMaxStatusMessageBytes.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_STATUS_H_
