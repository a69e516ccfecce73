// What both services do the same way around their gRPC server: listening (loopback by
// default, port 0 = a free port), TLS, message size, keepalive and max connection age, health
// and reflection, the port file that tests and `icae up` read, and SIGTERM/SIGINT handling.
#ifndef ICAE_COMMON_SERVER_GRPC_SERVER_H_
#define ICAE_COMMON_SERVER_GRPC_SERVER_H_

#include <csignal>
#include <memory>
#include <string>

#include <grpcpp/server_builder.h>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace icae::server {

struct GrpcServerOptions {
  std::string listen = "127.0.0.1:0";
  std::string tls_cert_file;  // PEM; both set = TLS, neither = plaintext
  std::string tls_key_file;
  int max_receive_message_bytes = 4 << 20;
  int max_send_message_bytes = 64 << 20;
  // Keepalive pings and a maximum connection age, so clients notice dead peers and
  // re-resolve (rebalance across replicas) after scale-up.
  int keepalive_time_ms = 30000;
  int keepalive_timeout_ms = 10000;
  int max_connection_age_ms = 300000;
  int max_connection_age_grace_ms = 60000;
};

// Applies listen address, credentials, limits and keepalive to `builder`; *selected_port is
// filled in once the server starts. Turns on the default health service and reflection.
absl::Status ConfigureServerBuilder(const GrpcServerOptions& options, grpc::ServerBuilder* builder,
                                    int* selected_port);

// "host:port" with the port actually bound (listen's host part, port replaced).
std::string BoundAddress(const std::string& listen, int port);

// Writes "grpc=HOST:PORT\nmetrics=HOST:PORT\n" atomically (no-op for an empty path).
absl::Status WritePortFile(const std::string& path, const std::string& grpc_address,
                           const std::string& metrics_address);

// Blocks SIGTERM and SIGINT in the calling thread and every thread it creates later; call
// first thing in main. WaitForTerminationSignal() then returns the signal that came.
void BlockTerminationSignals();
int WaitForTerminationSignal();

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_GRPC_SERVER_H_
