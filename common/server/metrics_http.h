// A tiny HTTP/1.1 listener for Prometheus scrapes on its own port: GET /metrics (the registry
// in text format) and GET /healthz ("ok"); anything else 404/405. One connection at a time,
// "Connection: close", requests bounded in size and time (a slow or huge request is dropped).
#ifndef ICAE_COMMON_SERVER_METRICS_HTTP_H_
#define ICAE_COMMON_SERVER_METRICS_HTTP_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/server/metrics.h"

namespace icae::server {

class MetricsHttpServer {
 public:
  // Binds host:port (port 0 = a free port; see port()). The registry must outlive the server.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& host,
                                                                  int port,
                                                                  const MetricsRegistry* registry);
  ~MetricsHttpServer();  // stops and joins
  int port() const { return port_; }
  void Stop();

 private:
  MetricsHttpServer(int fd, int port, const MetricsRegistry* registry);
  void Loop();
  void Serve(int conn);

  int listen_fd_;
  int port_;
  int wake_pipe_[2] = {-1, -1};
  const MetricsRegistry* registry_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// Client side (tests, `icae bench serve`): GET http://host:port/path; returns the body of a
// 200 answer.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path);

// Value of an unlabelled sample (or a sample with exactly `labels_text`, e.g.
// "{finish_reason=\"length\"}") in a text exposition; NOT_FOUND when absent.
absl::StatusOr<double> FindSample(const std::string& exposition, const std::string& name,
                                  const std::string& labels_text = "");

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_METRICS_HTTP_H_
