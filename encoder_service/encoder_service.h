// icae.v1.Encoder over gRPC (callback API). Thin: authenticate → validate → core → map status.
#ifndef ICAE_ENCODER_SERVICE_ENCODER_SERVICE_H_
#define ICAE_ENCODER_SERVICE_ENCODER_SERVICE_H_

#include "common/server/auth.h"
#include "common/server/metrics.h"
#include "common/server/rpc_common.h"
#include "encoder_service/encoder_core.h"
#include "icae/v1/icae.grpc.pb.h"

namespace icae::encoder {

class EncoderServiceImpl final : public icae::v1::Encoder::CallbackService {
 public:
  // The core arrives after the model has loaded (SetCore); until then calls are UNAVAILABLE.
  EncoderServiceImpl(const server::ApiKeyAuthenticator& auth, server::MetricsRegistry& metrics);
  void SetCore(EncoderCore* core) { rpc_.SetCore(core); }

  grpc::ServerUnaryReactor* Encode(grpc::CallbackServerContext* ctx,
                                   const icae::v1::EncodeRequest* request,
                                   icae::v1::EncodeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const icae::v1::GetModelInfoRequest* request,
                                         icae::v1::ModelInfo* response) override;

 private:
  server::RpcCommon<EncoderCore> rpc_;
  server::Histogram* latency_;
};

}  // namespace icae::encoder

#endif  // ICAE_ENCODER_SERVICE_ENCODER_SERVICE_H_
