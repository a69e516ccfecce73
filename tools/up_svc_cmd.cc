// icae up [--store URI] [--model DIR --adapter FILE] [--dtype D] [--threads N]
//         [--decode-step-threads N] (the decoder's; 0 = auto)
// Starts one encoder_service and one decoder_service on free loopback ports (default store: a
// file:// store in a fresh temp folder), waits until both report SERVING, prints exactly
//   encoder=HOST:PORT
//   decoder=HOST:PORT
// on stdout, and runs until SIGINT/SIGTERM, when it stops both cleanly (SIGTERM, grace period).
// Service logs go to <temp>/encoder.log and decoder.log (paths on stderr).
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/server/client.h"
#include "common/server/grpc_server.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

std::string SelfDir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.find_last_of('/'));
}

// $ICAE_<NAME> (upper case), else the build layout (<build>/tools/icae →
// <build>/<name>/<name>), else beside the icae binary (installed layout).
std::string FindServiceBinary(const std::string& name) {
  std::string env_name = name == "encoder_service" ? "ICAE_ENCODER_SERVICE" : "ICAE_DECODER_SERVICE";
  if (const char* e = std::getenv(env_name.c_str())) return e;
  const std::string dir = SelfDir();
  std::string build = dir + "/../" + name + "/" + name;
  if (::access(build.c_str(), X_OK) == 0) return build;
  return dir + "/" + name;
}

int Up(const std::vector<std::string>& argv) {
  const std::string cmd = "up";
  auto args = Args::Parse(argv, {"store", "model", "adapter", "dtype", "device", "threads", "startup-timeout",
                                 "grace-period", "api-keys-file", "max-batch", "max-context-tokens",
                                 "decode-step-threads"},
                          {});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->positional().empty()) {
    return Fail(cmd, "usage: icae up [--store URI] [--model DIR --adapter FILE] [--dtype D] [--device cpu|cuda[:N]] [--threads N]", 2);
  }
  NumericFlags num(*args);
  const auto timeout = absl::Seconds(num.Double("startup-timeout", 300));
  num.Int("max-batch", 1);  // passed on as given; checked here so a bad number is ours to report
  num.Int("max-context-tokens", 0);
  num.Int("threads", 1);
  num.Int("decode-step-threads", 0);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  char tmpl[] = "/tmp/icae-up-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return Fail(cmd, "cannot make a temp folder");
  const std::string dir = tmpl;
  const std::string store = args->Get("store", "file://" + dir + "/slots?max_bytes=1G");

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  std::vector<std::string> common = {"--store=" + store, "--metrics_port=0",
                                     "--grace_period=" + args->Get("grace-period", "10s")};
  for (const char* f : {"model", "adapter", "dtype", "device", "threads", "api-keys-file", "max-batch", "max-context-tokens"}) {
    if (args->Has(f)) {
      std::string flag = f;
      for (char& c : flag) if (c == '-') c = '_';
      common.push_back("--" + flag + "=" + args->Get(f));
    }
  }
  struct Svc {
    std::string name, label;
    std::unique_ptr<server::ChildProcess> proc;
    server::PortFile ports;
  };
  std::vector<Svc> svcs(2);
  svcs[0].name = "encoder_service";
  svcs[0].label = "encoder";
  svcs[1].name = "decoder_service";
  svcs[1].label = "decoder";
  for (auto& s : svcs) {
    std::vector<std::string> av = {FindServiceBinary(s.name), "--port_file=" + dir + "/" + s.label + ".port"};
    av.insert(av.end(), common.begin(), common.end());
    if (s.label == "decoder" && args->Has("decode-step-threads")) {
      av.push_back("--decode_step_threads=" + args->Get("decode-step-threads"));
    }
    auto p = server::ChildProcess::Start(av, dir + "/" + s.label + ".log");
    if (!p.ok()) return Fail(cmd, std::string(p.status().message()));
    s.proc = std::move(*p);
  }
  for (auto& s : svcs) {
    auto pf = server::ReadPortFile(dir + "/" + s.label + ".port", timeout, s.proc.get());
    if (!pf.ok()) return Fail(cmd, absl::StrCat(s.label, ": ", pf.status().message(), " (log: ", dir, "/", s.label, ".log)"));
    s.ports = *pf;
    auto ch = server::MakeChannel(s.ports.grpc, {});
    if (!ch.ok()) return Fail(cmd, std::string(ch.status().message()));
    absl::Status st;
    absl::Time deadline = absl::Now() + timeout;
    while (true) {
      st = server::WaitForServing(*ch, "", absl::Seconds(1));
      if (st.ok() || absl::Now() > deadline || !s.proc->Running()) break;
    }
    if (!st.ok()) return Fail(cmd, absl::StrCat(s.label, " did not become SERVING: ", st.message(), " (log: ", dir, "/", s.label, ".log)"));
  }
  std::cout << "encoder=" << svcs[0].ports.grpc << "\n" << "decoder=" << svcs[1].ports.grpc << "\n" << std::flush;
  std::cerr << "icae up: store " << store << "; metrics http://" << svcs[0].ports.metrics << "/metrics, http://"
            << svcs[1].ports.metrics << "/metrics; logs in " << dir << "; Ctrl-C to stop\n";
  int code = 0;
  while (true) {
    timespec ts{0, 200 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig > 0) break;
    bool died = false;
    for (auto& s : svcs) {
      if (!s.proc->Running()) {
        std::cerr << "icae up: " << s.label << " exited unexpectedly (log: " << dir << "/" << s.label << ".log)\n";
        died = true;
      }
    }
    if (died) {
      code = 1;
      break;
    }
  }
  for (auto& s : svcs) s.proc->Signal(SIGTERM);
  for (auto& s : svcs) {
    auto st = s.proc->Wait(absl::Seconds(30));
    if (!st.ok()) std::cerr << "icae up: " << s.label << " did not stop in time; killed\n";
  }
  return code;
}

ICAE_REGISTER_COMMAND("up", "start a local encoder + decoder on free ports; prints their addresses", Up);

}  // namespace
}  // namespace icae::tools
