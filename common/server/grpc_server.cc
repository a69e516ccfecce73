#include "common/server/grpc_server.h"

#include <pthread.h>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/strings/str_cat.h"
#include "common/util/mapped_file.h"

namespace icae::server {

absl::Status ConfigureServerBuilder(const GrpcServerOptions& o, grpc::ServerBuilder* builder,
                                    int* selected_port) {
  static bool once = [] {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    return true;
  }();
  (void)once;
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both a certificate and a key file");
  }
  if (!o.tls_cert_file.empty()) {
    auto cert = ReadFileToString(o.tls_cert_file);
    if (!cert.ok()) return cert.status();
    auto key = ReadFileToString(o.tls_key_file);
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }
  if (o.max_receive_message_bytes <= 0) {
    return absl::InvalidArgumentError("max receive message bytes must be > 0");
  }
  builder->AddListeningPort(o.listen, creds, selected_port);
  builder->SetMaxReceiveMessageSize(o.max_receive_message_bytes);
  builder->SetMaxSendMessageSize(o.max_send_message_bytes);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, o.keepalive_time_ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, o.keepalive_timeout_ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, o.max_connection_age_ms);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, o.max_connection_age_grace_ms);
  return absl::OkStatus();
}

std::string BoundAddress(const std::string& listen, int port) {
  size_t colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? listen : listen.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  return absl::StrCat(host, ":", port);
}

absl::Status WritePortFile(const std::string& path, const std::string& grpc_address,
                           const std::string& metrics_address) {
  if (path.empty()) return absl::OkStatus();
  return WriteFileAtomically(path, absl::StrCat("grpc=", grpc_address, "\nmetrics=", metrics_address, "\n"));
}

void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

}  // namespace icae::server
