// The Prometheus scrape endpoint on its own port: prometheus-cpp's pull Exposer (civetweb)
// serving GET /metrics from a MetricsRegistry. Bounded: a fixed pool of max_connections worker
// threads (connections beyond it wait in the listen queue until one is free), and a connection
// that does not send its request or take the answer within io_timeout is dropped — idle or slow
// clients (the listener may face a whole cluster network) cannot hold a worker for longer.
// Plus the client side the tests and tools use to read a scrape.
#ifndef ICAE_COMMON_SERVER_METRICS_HTTP_H_
#define ICAE_COMMON_SERVER_METRICS_HTTP_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/server/metrics.h"

namespace prometheus {
class Exposer;
}

namespace icae::server {

struct MetricsHttpOptions {
  // Connections served at once (--metrics_max_connections): civetweb's worker threads.
  int max_connections = 32;
  // A connection must send its whole request, and take the answer, within this.
  absl::Duration io_timeout = absl::Seconds(2);
};

class MetricsHttpServer {
 public:
  // Binds host:port (IPv4; port 0 = a free port, see port()). The registry must outlive the
  // server.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& host, int port, const MetricsRegistry* registry,
      const MetricsHttpOptions& options = {});
  ~MetricsHttpServer();  // stops
  int port() const { return port_; }
  void Stop();

 private:
  MetricsHttpServer(std::unique_ptr<prometheus::Exposer> exposer, int port);

  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_;
};

// Client side (tests): GET http://host:port/path; returns the body of a
// 200 answer.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path);

// Value of the sample `name` with exactly the labels `labels_text` (e.g.
// "{finish_reason=\"length\"}"; "" = unlabelled; label order does not matter) in a text
// exposition; NOT_FOUND when absent, INVALID_ARGUMENT when `labels_text` does not parse.
absl::StatusOr<double> FindSample(const std::string& exposition, const std::string& name,
                                  const std::string& labels_text = "");

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_METRICS_HTTP_H_
