// The life cycle both service binaries share, and the flags they share (defined in
// service_main.cc, which is compiled into each service executable, not into a library, so the
// `icae` tool does not grow server flags):
//   listen → health NOT_SERVING → port file → load (model, store) → SERVING
//   → SIGTERM/SIGINT → NOT_SERVING, refuse new work (UNAVAILABLE) → wait for in-flight work up
//   to --grace_period → cancel the rest → shut the server down → exit 0.
#ifndef ICAE_COMMON_SERVER_SERVICE_MAIN_H_
#define ICAE_COMMON_SERVER_SERVICE_MAIN_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/impl/codegen/service_type.h>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/server/auth.h"
#include "common/server/grpc_server.h"
#include "common/server/metrics.h"
#include "common/server/model_bundle.h"
#include "common/slot_store/slot_store.h"

ABSL_DECLARE_FLAG(std::string, listen);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, adapter);
ABSL_DECLARE_FLAG(std::string, dtype);
ABSL_DECLARE_FLAG(std::string, store);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(int64_t, max_batch);
ABSL_DECLARE_FLAG(int64_t, max_queue);
ABSL_DECLARE_FLAG(int64_t, max_context_tokens);
ABSL_DECLARE_FLAG(int64_t, max_request_id_bytes);
ABSL_DECLARE_FLAG(int32_t, max_message_bytes);
ABSL_DECLARE_FLAG(int32_t, metrics_port);
ABSL_DECLARE_FLAG(std::string, metrics_host);
ABSL_DECLARE_FLAG(int32_t, metrics_max_connections);
ABSL_DECLARE_FLAG(absl::Duration, grace_period);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, api_keys_file);
ABSL_DECLARE_FLAG(std::string, port_file);

namespace icae::server {

struct ServiceHooks {
  std::string service_name;       // e.g. "icae.v1.Encoder" (health status is set for it and "")
  grpc::Service* service = nullptr;
  // Called after the server listens; loads everything and makes the service ready.
  std::function<absl::Status(const ModelBundleOptions&, std::unique_ptr<slot_store::SlotStore>)> load;
  std::function<void()> start_draining;  // refuse new work
  std::function<int64_t()> in_flight;    // work still running or queued
  std::function<void()> cancel_all;      // end what is left (grace period over)
  std::function<void()> stop;            // join worker threads
  // Wraps the store opened from --store (the decoder puts a local LRU in front).
  std::function<std::string(const std::string&)> store_uri = nullptr;
};

// Parses nothing: call after absl::ParseCommandLine. Returns the process exit code.
int RunService(ServiceHooks& hooks, MetricsRegistry& metrics);

// The API-key authenticator from --api_keys_file (a disabled one when empty).
absl::StatusOr<std::unique_ptr<ApiKeyAuthenticator>> AuthFromFlags();

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_SERVICE_MAIN_H_
