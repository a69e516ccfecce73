// encoder_service: icae.v1.Encoder over gRPC. Compresses contexts into memory slots (batched
// across concurrent calls) and writes them to the slot store. See --helpfull for the flags.
#include "absl/flags/flag.h"
#include "common/server/service_main.h"
#include "encoder_service/encoder_core.h"
#include "encoder_service/encoder_service.h"

ABSL_FLAG(absl::Duration, batch_wait, absl::Milliseconds(5),
          "how long an Encode call waits for others to share its compression pass");

namespace icae::encoder {
namespace {

class EncoderDefinition final : public server::ServiceDefinition {
 public:
  const char* Name() const override { return "icae.v1.Encoder"; }

  grpc::Service* MakeService(const server::ApiKeyAuthenticator& auth,
                             server::MetricsRegistry& metrics) override {
    service_ = std::make_unique<EncoderServiceImpl>(auth, metrics);
    return service_.get();
  }

  absl::StatusOr<std::unique_ptr<server::ServingCore>> StartCore(
      const server::ModelBundle& bundle, slot_store::SlotStore& store,
      server::MetricsRegistry& metrics) override {
    EncoderOptions o;
    o.max_batch = absl::GetFlag(FLAGS_max_batch);
    o.max_queue = absl::GetFlag(FLAGS_max_queue);
    o.batch_wait = absl::GetFlag(FLAGS_batch_wait);
    o.max_context_tokens = absl::GetFlag(FLAGS_max_context_tokens);
    o.max_request_id_bytes = absl::GetFlag(FLAGS_max_request_id_bytes);
    if (o.max_batch < 1 || o.max_queue < 0 || o.max_context_tokens < 0 || o.max_request_id_bytes < 0) {
      return absl::InvalidArgumentError(
          "--max_batch must be >= 1, --max_queue, --max_context_tokens and --max_request_id_bytes >= 0");
    }
    auto core = std::make_unique<EncoderCore>(bundle, store, o, metrics);
    metrics.AddCallbackGauge("icae_slot_cache_bytes", "Bytes held by the slot store (-1 = unknown)",
                             [&store] { return static_cast<double>(store.Stats().bytes); });
    service_->SetCore(core.get());
    return core;
  }

 private:
  std::unique_ptr<EncoderServiceImpl> service_;
};

}  // namespace
}  // namespace icae::encoder

int main(int argc, char** argv) {
  icae::encoder::EncoderDefinition encoder;
  return icae::server::ServiceMain(
      argc, argv, "icae encoder service: --model DIR --adapter FILE --store URI ...", encoder);
}
