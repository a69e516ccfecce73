#include "common/server/service_main.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/server/grpc_server.h"
#include "common/server/metrics_http.h"
#include "common/util/device.h"
#include "common/util/paths.h"
#include "common/util/runtime.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "gRPC listen address host:port (port 0 = a free port; see --port_file)");
ABSL_FLAG(std::string, model, "", "model folder (HF layout); empty = the embedded default model");
ABSL_FLAG(std::string, adapter, "", "ICAE adapter .safetensors; empty = the default model's adapter");
ABSL_FLAG(std::string, dtype, "bfloat16", "compute dtype: bfloat16 | float32 | float16");
ABSL_FLAG(std::string, device, "cpu",
          "where the model, adapter, KV caches and slots live: cpu | cuda | cuda:N (slots cross "
          "the store as the same bytes whatever the device)");
ABSL_FLAG(std::string, store, "file:///tmp/icae-slots?max_bytes=1G",
          "slot store URI: memory://, file:///dir, redis://host:port/db, "
          "redis-cluster://host:port[,host:port...], tiered://");
ABSL_FLAG(int32_t, threads, 0, "LibTorch intra-op threads (0 = all cores)");
ABSL_FLAG(int64_t, max_batch, 8, "encoder: contexts per compression pass; decoder: running sequences");
ABSL_FLAG(int64_t, max_queue, 64, "requests waiting for admission; beyond it RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_context_tokens, 0, "bound on context tokens (0 = the adapter's bound)");
ABSL_FLAG(int64_t, max_request_id_bytes, 128, "bound on a request's request_id (bytes)");
ABSL_FLAG(int32_t, max_message_bytes, 4 << 20, "largest request message accepted (bytes)");
ABSL_FLAG(int32_t, metrics_port, 0, "Prometheus /metrics port (0 = a free port, -1 = off)");
ABSL_FLAG(std::string, metrics_host, "127.0.0.1",
          "IPv4 address the /metrics listener binds (0.0.0.0 to let Prometheus scrape the pod IP)");
ABSL_FLAG(int32_t, metrics_max_connections, 32,
          "/metrics connections served at once (worker threads; an idle one is dropped after 2 s); "
          "beyond: they wait for a free worker");
ABSL_FLAG(absl::Duration, grace_period, absl::Seconds(30),
          "on SIGTERM: how long in-flight work may finish before it is cancelled");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain (TLS when set with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key");
ABSL_FLAG(std::string, api_keys_file, "",
          "file of '<key> <tenant>' lines; when set, calls need 'authorization: Bearer <key>'");
ABSL_FLAG(std::string, port_file, "",
          "write 'grpc=HOST:PORT' and 'metrics=HOST:PORT' here once listening");

namespace icae::server {
namespace {

absl::StatusOr<std::unique_ptr<ApiKeyAuthenticator>> AuthFromFlags() {
  const std::string path = absl::GetFlag(FLAGS_api_keys_file);
  if (path.empty()) return std::make_unique<ApiKeyAuthenticator>();
  return ApiKeyAuthenticator::FromFile(path);
}

ModelBundleOptions ModelFromFlags() {
  ModelBundleOptions mo;
  const std::string model = absl::GetFlag(FLAGS_model);
  mo.model_dir = model.empty() ? DefaultModelDir() : model;
  mo.adapter_path = absl::GetFlag(FLAGS_adapter);
  if (mo.adapter_path.empty()) {
    mo.adapter_path = model.empty() ? DefaultAdapterPath() : mo.model_dir + "/icae_adapter.safetensors";
  }
  mo.dtype = absl::GetFlag(FLAGS_dtype);
  mo.device = absl::GetFlag(FLAGS_device);
  return mo;
}

// SIGTERM/SIGINT → drain: refuse new work, let in-flight work finish within the grace period,
// then cancel what is left and give it a moment to send its final answers.
void Drain(ServingCore& core) {
  core.StartDraining();
  const absl::Time deadline = absl::Now() + absl::GetFlag(FLAGS_grace_period);
  while (core.InFlight() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  if (core.InFlight() == 0) return;
  LOG(WARNING) << core.InFlight() << " requests still running after the grace period: cancelling";
  core.CancelAll();
  for (int i = 0; i < 100 && core.InFlight() > 0; ++i) absl::SleepFor(absl::Milliseconds(10));
}

}  // namespace

int ServiceMain(int argc, char** argv, const std::string& usage, ServiceDefinition& definition) {
  // Before any thread exists, so every thread inherits the blocked signals.
  BlockTerminationSignals();
  absl::SetProgramUsageMessage(usage);
  absl::ParseCommandLine(argc, argv);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;

  RuntimeOptions ro;
  ro.threads = absl::GetFlag(FLAGS_threads);
  ConfigureRuntime(ro);
  // A device this process cannot use is a bad flag: refused before anything listens.
  if (auto device = ResolveDevice(absl::GetFlag(FLAGS_device)); !device.ok()) {
    LOG(ERROR) << device.status().message();
    return 2;
  }

  MetricsRegistry metrics;
  auto auth = AuthFromFlags();
  if (!auth.ok()) {
    LOG(ERROR) << "--api_keys_file: " << auth.status();
    return 2;
  }
  grpc::Service* service = definition.MakeService(**auth, metrics);
  // Declared before the listeners so that they stop first (the store's scrape-time metrics
  // read the store).
  std::unique_ptr<ModelBundle> bundle;
  std::unique_ptr<slot_store::SlotStore> store;
  std::unique_ptr<ServingCore> core;

  std::unique_ptr<MetricsHttpServer> metrics_http;
  std::string metrics_address;
  if (absl::GetFlag(FLAGS_metrics_port) >= 0) {
    const std::string host = absl::GetFlag(FLAGS_metrics_host);
    MetricsHttpOptions mo;
    mo.max_connections = absl::GetFlag(FLAGS_metrics_max_connections);
    auto m = MetricsHttpServer::Start(host, absl::GetFlag(FLAGS_metrics_port), &metrics, mo);
    if (!m.ok()) {
      LOG(ERROR) << m.status();
      return 1;
    }
    metrics_http = std::move(*m);
    metrics_address = absl::StrCat(host == "0.0.0.0" ? "127.0.0.1" : host, ":", metrics_http->port());
  }

  GrpcServerOptions go;
  go.listen = absl::GetFlag(FLAGS_listen);
  go.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  go.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  go.max_receive_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  grpc::ServerBuilder builder;
  int port = 0;
  if (auto st = ConfigureServerBuilder(go, &builder, &port); !st.ok()) {
    LOG(ERROR) << st;
    return 2;
  }
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    LOG(ERROR) << "cannot listen on " << go.listen;
    return 1;
  }
  auto* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  const std::string address = BoundAddress(go.listen, port);
  LOG(INFO) << definition.Name() << " listening on " << address
            << (metrics_address.empty() ? "" : ", metrics on http://" + metrics_address + "/metrics");
  if (auto st = WritePortFile(absl::GetFlag(FLAGS_port_file), address, metrics_address); !st.ok()) {
    LOG(ERROR) << st;
    return 1;
  }

  ModelBundleOptions mo = ModelFromFlags();
  auto packed_bytes = definition.MaxPackedWeightBytes();
  if (!packed_bytes.ok()) {
    LOG(ERROR) << packed_bytes.status();
    server->Shutdown();
    return 2;
  }
  mo.max_packed_weight_bytes = *packed_bytes;
  auto weights = definition.DecodeWeights();
  if (!weights.ok()) {
    LOG(ERROR) << weights.status();
    server->Shutdown();
    return 2;
  }
  mo.weights = *weights;
  auto opened = slot_store::OpenSlotStore(definition.StoreUri(absl::GetFlag(FLAGS_store)));
  if (!opened.ok()) {
    LOG(ERROR) << "--store: " << opened.status();
    server->Shutdown();
    return 2;
  }
  store = std::move(*opened);
  LOG(INFO) << "slot store " << store->Describe();
  const absl::Time t0 = absl::Now();
  auto loaded = ModelBundle::Load(mo);
  if (!loaded.ok()) {
    LOG(ERROR) << "loading failed: " << loaded.status();
    server->Shutdown();
    return 1;
  }
  bundle = std::move(*loaded);
  auto started = definition.StartCore(*bundle, *store, metrics);
  if (!started.ok()) {
    LOG(ERROR) << "starting failed: " << started.status();
    server->Shutdown();
    return started.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  core = std::move(*started);
  LOG(INFO) << "loaded " << mo.model_dir << " + " << mo.adapter_path << " in "
            << absl::FormatDuration(absl::Now() - t0) << " (packed weight copies: "
            << bundle->model().packed_weight_bytes() << " bytes; decode weights "
            << WeightsFormatName(bundle->model().weights_format()) << ", int8 copies "
            << bundle->model().int8_weight_bytes() << " bytes); SERVING";
  health->SetServingStatus(true);

  const int sig = WaitForTerminationSignal();
  LOG(INFO) << "signal " << sig << ": draining (grace period "
            << absl::FormatDuration(absl::GetFlag(FLAGS_grace_period)) << ")";
  health->SetServingStatus(false);
  Drain(*core);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  core->Stop();
  if (metrics_http) metrics_http->Stop();
  LOG(INFO) << "stopped";
  return 0;
}

}  // namespace icae::server
