// A tiny HTTP/1.1 listener for Prometheus scrapes on its own port: GET /metrics (the registry
// in text format) and GET /healthz ("ok"); anything else 404/405. "Connection: close",
// requests bounded in size and time (a slow or huge request is dropped). Connections are
// served concurrently, each on its own short-lived thread, up to max_connections: idle or slow
// clients (the listener may face a whole cluster network) cannot delay a scrape; past the
// limit a new connection gets 503 at once.
#ifndef ICAE_COMMON_SERVER_METRICS_HTTP_H_
#define ICAE_COMMON_SERVER_METRICS_HTTP_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <condition_variable>
#include <mutex>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/server/metrics.h"

namespace icae::server {

struct MetricsHttpOptions {
  // Connections served at once (--metrics_max_connections); beyond: 503 and closed.
  int max_connections = 32;
  // A connection must send its whole request, and take the answer, within this.
  absl::Duration io_timeout = absl::Seconds(2);
};

class MetricsHttpServer {
 public:
  // Binds host:port (port 0 = a free port; see port()). The registry must outlive the server.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& host, int port, const MetricsRegistry* registry,
      const MetricsHttpOptions& options = {});
  ~MetricsHttpServer();  // stops and joins
  int port() const { return port_; }
  void Stop();

 private:
  MetricsHttpServer(int fd, int port, const MetricsRegistry* registry, MetricsHttpOptions options);
  void Loop();
  void Serve(int conn);

  int listen_fd_;
  int port_;
  int wake_pipe_[2] = {-1, -1};  // readable once stopping: wakes the accept loop and every connection
  const MetricsRegistry* registry_;
  MetricsHttpOptions options_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable idle_;
  int active_ = 0;  // connection threads running; mu_
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
