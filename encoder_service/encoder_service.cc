#include "encoder_service/encoder_service.h"

#include <glog/logging.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/server/log_safe.h"
#include "common/server/status.h"

namespace icae::encoder {

EncoderServiceImpl::EncoderServiceImpl(const server::ApiKeyAuthenticator& auth,
                                       server::MetricsRegistry& metrics)
    : rpc_("encoder", auth, metrics) {
  latency_ = metrics.AddHistogram("icae_encode_request_duration_seconds",
                                  "End-to-end latency of Encode calls", server::LatencyBuckets());
}

grpc::ServerUnaryReactor* EncoderServiceImpl::Encode(grpc::CallbackServerContext* ctx,
                                                     const icae::v1::EncodeRequest* request,
                                                     icae::v1::EncodeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  const absl::Time start = absl::Now();
  auto finish = [this, reactor, start](const absl::Status& st) {
    rpc_.Count("Encode", st);
    latency_->Observe(absl::ToDoubleSeconds(absl::Now() - start));
    reactor->Finish(server::ToGrpcStatus(st));
  };
  auto tenant = rpc_.auth().Authenticate(ctx->client_metadata());
  if (!tenant.ok()) {
    finish(tenant.status());
    return reactor;
  }
  auto core = rpc_.core();
  if (!core.ok()) {
    finish(core.status());
    return reactor;
  }
  auto job = (*core)->Prepare(*request, *tenant);
  if (!job.ok()) {
    LOG(INFO) << "encode request_id=" << server::LogSafe(request->request_id())
              << " rejected: " << server::LogSafe(job.status().ToString(), server::kMaxStatusMessageBytes);
    finish(job.status());
    return reactor;
  }
  job->is_cancelled = [ctx] { return ctx->IsCancelled(); };
  // `response` and `ctx` stay valid until Finish; the core calls back exactly once.
  (*core)->Submit(std::move(*job), [response, finish](absl::StatusOr<icae::v1::EncodeResponse> r) {
    if (r.ok()) *response = std::move(*r);
    finish(r.status());
  });
  return reactor;
}

grpc::ServerUnaryReactor* EncoderServiceImpl::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                           const icae::v1::GetModelInfoRequest*,
                                                           icae::v1::ModelInfo* response) {
  return rpc_.GetModelInfo(ctx, response);
}

}  // namespace icae::encoder
