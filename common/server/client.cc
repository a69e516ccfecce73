#include "common/server/client.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/server/status.h"
#include "common/util/mapped_file.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace icae::server {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ClientOptions& o) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(o.max_receive_message_bytes);
  if (!o.lb_policy.empty()) args.SetLoadBalancingPolicyName(o.lb_policy);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (!o.tls_ca_file.empty()) {
    auto ca = ReadFileToString(o.tls_ca_file);
    if (!ca.ok()) return ca.status();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *ca;
    creds = grpc::SslCredentials(ssl);
    if (!o.tls_server_name.empty()) args.SetSslTargetNameOverride(o.tls_server_name);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(target, creds, args);
}

void AddAuth(grpc::ClientContext* ctx, const ClientOptions& o) {
  if (!o.api_key.empty()) ctx->AddMetadata("authorization", "Bearer " + o.api_key);
}

absl::StatusOr<std::string> CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                                        const std::string& service, absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::microseconds(absl::ToInt64Microseconds(timeout)));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, req, &resp);
  if (!st.ok()) return FromGrpcStatus(st);
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
}

absl::Status WaitForServing(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& service, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  std::string last = "no answer";
  while (absl::Now() < deadline) {
    auto s = CheckHealth(channel, service, absl::Seconds(1));
    if (s.ok() && *s == "SERVING") return absl::OkStatus();
    last = s.ok() ? *s : std::string(s.status().message());
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat("not SERVING after ", absl::FormatDuration(timeout),
                                                  " (last: ", last, ")"));
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::string& log_file) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    // Children must get SIGTERM/SIGINT even when the parent blocked them.
    sigset_t set;
    sigemptyset(&set);
    ::sigprocmask(SIG_SETMASK, &set, nullptr);
    if (!log_file.empty()) {
      int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
    }
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid));
}

ChildProcess::~ChildProcess() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    int st;
    ::waitpid(pid_, &st, 0);
  }
}

void ChildProcess::Signal(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

bool ChildProcess::Running() {
  if (reaped_) return false;
  int st;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    return false;
  }
  return true;
}

absl::StatusOr<int> ChildProcess::Wait(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (reaped_) return 0;  // reaped earlier by Running()
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return st;
    }
    if (absl::Now() >= deadline) return absl::DeadlineExceededError("child still running");
    absl::SleepFor(absl::Milliseconds(10));
  }
}

absl::StatusOr<PortFile> ReadPortFile(const std::string& path, absl::Duration timeout,
                                      ChildProcess* child) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    auto text = ReadFileToString(path);
    if (text.ok() && !text->empty()) {
      PortFile pf;
      for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
        if (absl::StartsWith(line, "grpc=")) pf.grpc = std::string(line.substr(5));
        if (absl::StartsWith(line, "metrics=")) pf.metrics = std::string(line.substr(8));
      }
      if (!pf.grpc.empty()) return pf;
    }
    if (child != nullptr && !child->Running()) {
      return absl::UnavailableError("the service exited before it was listening (see its log)");
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("no port file at ", path, " after ",
                                                      absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

}  // namespace icae::server
