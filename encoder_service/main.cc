// encoder_service: icae.v1.Encoder over gRPC. Compresses contexts into memory slots (batched
// across concurrent calls) and writes them to the slot store. See --helpfull for the flags.
#include <glog/logging.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/server/service_main.h"
#include "encoder_service/encoder_core.h"
#include "encoder_service/encoder_service.h"

ABSL_FLAG(absl::Duration, batch_wait, absl::Milliseconds(5),
          "how long an Encode call waits for others to share its compression pass");

int main(int argc, char** argv) {
  icae::server::BlockTerminationSignals();
  absl::SetProgramUsageMessage("icae encoder service: --model DIR --adapter FILE --store URI ...");
  absl::ParseCommandLine(argc, argv);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;

  icae::server::MetricsRegistry metrics;
  auto auth = icae::server::AuthFromFlags();
  if (!auth.ok()) {
    LOG(ERROR) << "--api_keys_file: " << auth.status();
    return 2;
  }
  icae::encoder::EncoderServiceImpl service(**auth, metrics);
  std::unique_ptr<icae::server::ModelBundle> bundle;
  std::unique_ptr<icae::slot_store::SlotStore> store;
  std::unique_ptr<icae::encoder::EncoderCore> core;

  icae::server::ServiceHooks hooks;
  hooks.service_name = "icae.v1.Encoder";
  hooks.service = &service;
  hooks.load = [&](const icae::server::ModelBundleOptions& mo,
                   std::unique_ptr<icae::slot_store::SlotStore> s) -> absl::Status {
    auto b = icae::server::ModelBundle::Load(mo);
    if (!b.ok()) return b.status();
    bundle = std::move(*b);
    store = std::move(s);
    icae::encoder::EncoderOptions eo;
    eo.max_batch = absl::GetFlag(FLAGS_max_batch);
    eo.max_queue = absl::GetFlag(FLAGS_max_queue);
    eo.batch_wait = absl::GetFlag(FLAGS_batch_wait);
    eo.max_context_tokens = absl::GetFlag(FLAGS_max_context_tokens);
    eo.max_request_id_bytes = absl::GetFlag(FLAGS_max_request_id_bytes);
    if (eo.max_batch < 1 || eo.max_queue < 0 || eo.max_context_tokens < 0 || eo.max_request_id_bytes < 0) {
      return absl::InvalidArgumentError(
          "--max_batch must be >= 1, --max_queue, --max_context_tokens and --max_request_id_bytes >= 0");
    }
    core = std::make_unique<icae::encoder::EncoderCore>(*bundle, *store, eo, metrics);
    auto* st = store.get();
    metrics.AddCallbackGauge("icae_slot_cache_bytes", "Bytes held by the slot store (-1 = unknown)",
                             [st] { return static_cast<double>(st->Stats().bytes); });
    service.SetCore(core.get());
    return absl::OkStatus();
  };
  hooks.start_draining = [&] { if (core) core->StartDraining(); };
  hooks.in_flight = [&]() -> int64_t { return core ? core->InFlight() : 0; };
  hooks.cancel_all = [] {};
  hooks.stop = [&] { if (core) core->Stop(); };
  return icae::server::RunService(hooks, metrics);
}
