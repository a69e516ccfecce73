// Client-side helpers shared by the `icae` commands, the benchmark and the tests: channels
// (TLS, round_robin), API-key metadata, waiting for health SERVING, and child processes.
#ifndef ICAE_COMMON_SERVER_CLIENT_H_
#define ICAE_COMMON_SERVER_CLIENT_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace icae::server {

struct ClientOptions {
  std::string api_key;       // sent as "authorization: Bearer <key>" when not empty
  std::string tls_ca_file;   // PEM roots: TLS when set, plaintext otherwise
  std::string tls_server_name;  // override of the name checked in the server certificate
  std::string lb_policy;     // e.g. "round_robin" (with a dns:/// target); "" = gRPC default
  int max_receive_message_bytes = 64 << 20;
};

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ClientOptions& options);
// Adds the API key metadata to a call.
void AddAuth(grpc::ClientContext* ctx, const ClientOptions& options);

// Polls grpc.health.v1.Health/Check(service) until SERVING or the timeout.
absl::Status WaitForServing(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& service, absl::Duration timeout);
// One Check; the status as text ("SERVING", "NOT_SERVING", ...) or the RPC error.
absl::StatusOr<std::string> CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                                        const std::string& service, absl::Duration timeout);

// A child process (a service binary) that dies with its parent (PR_SET_PDEATHSIG).
class ChildProcess {
 public:
  // argv[0] is the program path. stdout/stderr go to `log_file` when not empty.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::vector<std::string>& argv,
                                                             const std::string& log_file = "");
  ~ChildProcess();  // SIGKILL + reap if still running
  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // Waits for exit up to `timeout`; the exit status (as waitpid) or DEADLINE_EXCEEDED.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  bool Running();

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  bool reaped_ = false;
};

// Reads a port file written by the services (see grpc_server.h): waits for it to appear.
struct PortFile {
  std::string grpc;     // host:port
  std::string metrics;  // host:port ("" when metrics are off)
};
absl::StatusOr<PortFile> ReadPortFile(const std::string& path, absl::Duration timeout,
                                      ChildProcess* child = nullptr);

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_CLIENT_H_
