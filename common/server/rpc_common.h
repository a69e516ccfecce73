// What every icae.v1 service's RPC layer shares: the per-RPC request counter, the core that
// arrives once the model has loaded, and GetModelInfo.
#ifndef ICAE_COMMON_SERVER_RPC_COMMON_H_
#define ICAE_COMMON_SERVER_RPC_COMMON_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/server/auth.h"
#include "common/server/metrics.h"
#include "common/server/serving_core.h"
#include "common/server/status.h"
#include "icae/v1/icae.pb.h"

namespace icae::server {

// `Core` is the service's core type (a ServingCore).
template <typename Core>
class RpcCommon {
  static_assert(std::is_base_of_v<ServingCore, Core>, "a service core is a ServingCore");

 public:
  // `side` names the service in errors ("encoder", "decoder").
  RpcCommon(std::string side, const ApiKeyAuthenticator& auth, MetricsRegistry& metrics)
      : side_(std::move(side)), auth_(auth), metrics_(metrics) {}

  // The core serves from now on; until then calls are UNAVAILABLE.
  void SetCore(Core* core) { core_.store(core); }
  // The core, or UNAVAILABLE while the model loads.
  absl::StatusOr<Core*> core() const {
    Core* c = core_.load();
    if (c == nullptr) return absl::UnavailableError("the " + side_ + " is loading its model");
    return c;
  }
  const ApiKeyAuthenticator& auth() const { return auth_; }

  // icae_requests_total{method, code}: one count per finished RPC.
  void Count(const char* method, const absl::Status& st) {
    metrics_.AddCounter("icae_requests_total", "Finished RPCs by method and status code",
                        {{"method", method}, {"code", absl::StatusCodeToString(st.code())}})
        ->Increment();
  }

  // GetModelInfo: authenticate → the core's info.
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         icae::v1::ModelInfo* response) {
    auto* reactor = ctx->DefaultReactor();
    absl::Status st = auth_.Authenticate(ctx->client_metadata()).status();
    if (st.ok()) {
      auto c = core();
      if (c.ok()) *response = (*c)->Info();
      st = c.status();
    }
    Count("GetModelInfo", st);
    reactor->Finish(ToGrpcStatus(st));
    return reactor;
  }

 private:
  const std::string side_;
  const ApiKeyAuthenticator& auth_;
  MetricsRegistry& metrics_;
  std::atomic<Core*> core_{nullptr};
};

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_RPC_COMMON_H_
