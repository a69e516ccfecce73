// The real encoder_service / decoder_service binaries on loopback for integration tests: start
// one (free ports, tiny ICAE test model, float32, small bounds), call it, read its metrics.
#ifndef ICAE_TESTS_INTEGRATION_SERVICES_HARNESS_H_
#define ICAE_TESTS_INTEGRATION_SERVICES_HARNESS_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/server/client.h"
#include "common/server/metrics_http.h"
#include "icae/v1/icae.grpc.pb.h"
#include "tests/test_util.h"
#include "tests/testing/requests.h"

namespace icae {

using testing::SlotRequest;
using testing::TextRequest;

inline std::string GoldenDir() { return testing::TestDataDir() + "/icae-golden"; }
inline std::string ServiceBinary(const std::string& name) {
  return std::string(ICAE_BINARY_DIR) + "/" + name + "/" + name;
}

inline constexpr int64_t kMaxContext = 512;
inline constexpr int64_t kMaxNew = 64;
inline constexpr int64_t kMaxPrompt = 48;
inline constexpr int kMaxSlotIds = 3;

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// One running service binary.
struct Service {
  std::unique_ptr<server::ChildProcess> proc;
  std::string address, metrics, log;
  std::shared_ptr<grpc::Channel> channel;

  // A scrape of its /metrics, or why there is none.
  absl::StatusOr<std::string> Metrics() const {
    auto colon = metrics.rfind(':');
    return server::HttpGet(metrics.substr(0, colon), std::stoi(metrics.substr(colon + 1)), "/metrics");
  }
  // One sample of a fresh scrape (NOT_FOUND when it is not exported).
  absl::StatusOr<double> Sample(const std::string& name, const std::string& labels = "") const {
    auto m = Metrics();
    if (!m.ok()) return m.status();
    return server::FindSample(*m, name, labels);
  }
  std::string Health() const {
    auto h = server::CheckHealth(channel, "", absl::Seconds(2));
    return h.ok() ? *h : std::string(h.status().message());
  }
};

inline absl::StatusOr<Service> StartService(const std::string& name, const std::string& dir, const std::string& store,
                                     std::vector<std::string> extra = {}) {
  static int counter = 0;
  Service s;
  const std::string tag = absl::StrCat(name, "-", counter++);
  const std::string port_file = dir + "/" + tag + ".port";
  s.log = dir + "/" + tag + ".log";
  std::vector<std::string> argv = {ServiceBinary(name),
                                   "--model=" + GoldenDir() + "/model",
                                   "--adapter=" + GoldenDir() + "/icae_adapter.safetensors",
                                   "--dtype=float32",
                                   "--threads=1",
                                   "--store=" + store,
                                   "--port_file=" + port_file,
                                   "--max_context_tokens=" + std::to_string(kMaxContext),
                                   "--max_message_bytes=1048576",
                                   "--grace_period=5s"};
  if (name == "decoder_service") {
    argv.push_back("--max_new_tokens=" + std::to_string(kMaxNew));
    argv.push_back("--max_prompt_tokens=" + std::to_string(kMaxPrompt));
    argv.push_back("--max_slot_ids=" + std::to_string(kMaxSlotIds));
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = server::ChildProcess::Start(argv, s.log);
  if (!p.ok()) return p.status();
  s.proc = std::move(*p);
  auto pf = server::ReadPortFile(port_file, absl::Seconds(60), s.proc.get());
  if (!pf.ok()) {
    return absl::Status(pf.status().code(), absl::StrCat(name, ": ", pf.status().message(), "; log:\n", ReadFile(s.log)));
  }
  s.address = pf->grpc;
  s.metrics = pf->metrics;
  auto ch = server::MakeChannel(s.address, {});
  if (!ch.ok()) return ch.status();
  s.channel = *ch;
  absl::Status st;
  for (int i = 0; i < 60; ++i) {
    st = server::WaitForServing(s.channel, "", absl::Seconds(1));
    if (st.ok()) return s;
    if (!s.proc->Running()) break;
  }
  return absl::UnavailableError(absl::StrCat(name, " did not become SERVING (", st.message(), "); log:\n",
                                             ReadFile(s.log)));
}


struct GenResult {
  grpc::Status status;
  std::vector<int64_t> ids;
  std::string text;
  icae::v1::GenerateFinal final;
  int messages = 0;
};

inline GenResult RunGenerate(const std::shared_ptr<grpc::Channel>& ch, const icae::v1::GenerateRequest& req,
                      const std::string& api_key = "", absl::Duration timeout = absl::Seconds(60)) {
  auto stub = icae::v1::Decoder::NewStub(ch);
  grpc::ClientContext ctx;
  if (!api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + api_key);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
  auto reader = stub->Generate(&ctx, req);
  GenResult r;
  icae::v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    r.messages++;
    for (int64_t id : msg.token_ids()) r.ids.push_back(id);
    r.text += msg.text();
    if (msg.has_final()) r.final = msg.final();
  }
  r.status = reader->Finish();
  return r;
}

inline grpc::Status RunEncode(const std::shared_ptr<grpc::Channel>& ch, const icae::v1::EncodeRequest& req,
                       icae::v1::EncodeResponse* resp, const std::string& api_key = "") {
  auto stub = icae::v1::Encoder::NewStub(ch);
  grpc::ClientContext ctx;
  if (!api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + api_key);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return stub->Encode(&ctx, req, resp);
}

}  // namespace icae

#endif  // ICAE_TESTS_INTEGRATION_SERVICES_HARNESS_H_
