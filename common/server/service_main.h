// One skeleton for both service binaries: ServiceMain owns start-up and shutdown (flags,
// signals, logging, metrics and their listener, API keys, TLS, health, model and store
// loading) and a service plugs in through ServiceDefinition, its core through ServingCore:
//   listen → health NOT_SERVING → port file → load (model, store) → core → SERVING
//   → SIGTERM/SIGINT → NOT_SERVING, refuse new work (UNAVAILABLE) → wait for in-flight work up
//   to --grace_period → cancel the rest → shut the server down → exit 0.
// The shared flags are defined in the icae_service_main library, which only the service
// executables link (the `icae` tool does not grow server flags).
#ifndef ICAE_COMMON_SERVER_SERVICE_MAIN_H_
#define ICAE_COMMON_SERVER_SERVICE_MAIN_H_

#include <grpcpp/impl/codegen/service_type.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "common/server/auth.h"
#include "common/server/metrics.h"
#include "common/server/model_bundle.h"
#include "common/server/serving_core.h"
#include "common/slot_store/slot_store.h"

// Shared flags a service reads when it builds its core.
ABSL_DECLARE_FLAG(int64_t, max_batch);
ABSL_DECLARE_FLAG(int64_t, max_queue);
ABSL_DECLARE_FLAG(int64_t, max_context_tokens);
ABSL_DECLARE_FLAG(int64_t, max_request_id_bytes);

namespace icae::server {

// What one service binary adds to the skeleton.
class ServiceDefinition {
 public:
  virtual ~ServiceDefinition() = default;

  // The gRPC service name, e.g. "icae.v1.Encoder" (logs).
  virtual const char* Name() const = 0;
  // Called once, before the server listens. The service answers UNAVAILABLE until StartCore
  // has handed it a core. It must outlive ServiceMain.
  virtual grpc::Service* MakeService(const ApiKeyAuthenticator& auth, MetricsRegistry& metrics) = 0;
  // The store URI to open, given --store (the decoder puts a local cache in front).
  virtual std::string StoreUri(const std::string& store_flag) const { return store_flag; }
  // Bytes of packed weight copies the model may take for few-row products (decode steps); 0
  // for a service that never multiplies few rows. INVALID_ARGUMENT for a bad flag.
  virtual absl::StatusOr<int64_t> MaxPackedWeightBytes() const { return 0; }
  // The weights decode steps multiply by (ModelLoadOptions::weights): bf16 for a service that
  // never decodes (the encoder: slots stay faithful). INVALID_ARGUMENT for a bad flag.
  virtual absl::StatusOr<WeightsFormat> DecodeWeights() const { return WeightsFormat::kBf16; }
  // Once the model and the store are loaded: builds the core from the service's flags
  // (INVALID_ARGUMENT for one out of range), registers its store metrics and hands the core to
  // the service. `bundle` and `store` outlive the core.
  virtual absl::StatusOr<std::unique_ptr<ServingCore>> StartCore(const ModelBundle& bundle,
                                                                 slot_store::SlotStore& store,
                                                                 MetricsRegistry& metrics) = 0;
};

// The whole life of a service process; returns its exit code (0 after a clean shutdown,
// 1 when it cannot start, 2 for bad flags).
int ServiceMain(int argc, char** argv, const std::string& usage, ServiceDefinition& service);

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_SERVICE_MAIN_H_
