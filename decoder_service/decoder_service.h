// icae.v1.Decoder over gRPC (callback API). Generate is a ServerWriteReactor whose stream state
// (GenerateStream) is shared with the scheduler: the scheduler pushes messages, the reactor
// writes them one at a time (coalescing chunks that pile up behind a slow client), and
// OnCancel flags the sequence so the scheduler drops it within one step.
#ifndef ICAE_DECODER_SERVICE_DECODER_SERVICE_H_
#define ICAE_DECODER_SERVICE_DECODER_SERVICE_H_

#include <atomic>

#include "common/server/auth.h"
#include "common/server/metrics.h"
#include "common/server/rpc_common.h"
#include "decoder_service/decoder_core.h"
#include "icae/v1/icae.grpc.pb.h"

namespace icae::decoder {

class DecoderServiceImpl final : public icae::v1::Decoder::CallbackService {
 public:
  // The core arrives after the model has loaded (SetCore); until then calls are UNAVAILABLE.
  DecoderServiceImpl(const server::ApiKeyAuthenticator& auth, server::MetricsRegistry& metrics);
  void SetCore(DecoderCore* core) { rpc_.SetCore(core); }

  grpc::ServerWriteReactor<icae::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const icae::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const icae::v1::GetModelInfoRequest* request,
                                         icae::v1::ModelInfo* response) override;

  // Validate → core: the stream's first status (OK = the sequence is queued).
  absl::Status StartGeneration(grpc::CallbackServerContext* ctx, const icae::v1::GenerateRequest& request,
                               std::shared_ptr<GenerationSink> sink,
                               std::shared_ptr<std::atomic<bool>> cancelled);
  void Count(const char* method, const absl::Status& st) { rpc_.Count(method, st); }

 private:
  server::RpcCommon<DecoderCore> rpc_;
};

}  // namespace icae::decoder

#endif  // ICAE_DECODER_SERVICE_DECODER_SERVICE_H_
