// The services' Prometheus metrics: prometheus-cpp's registry (counters, gauges, histograms)
// plus values read at scrape time (e.g. the slot store's bytes), behind one small registry so a
// call site stays one line: `metrics.AddCounter("icae_x_total", "help")->Increment()`.
// The metric objects are prometheus-cpp's own (thread-safe, alive as long as the registry).
#ifndef ICAE_COMMON_SERVER_METRICS_H_
#define ICAE_COMMON_SERVER_METRICS_H_

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/labels.h>
#include <prometheus/registry.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace icae::server {

using Labels = prometheus::Labels;  // label name -> value
using Counter = prometheus::Counter;
using Gauge = prometheus::Gauge;
using Histogram = prometheus::Histogram;

// Bucket helpers.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
std::vector<double> LatencyBuckets();  // 1 ms .. 60 s

// Metric families whose values are read when scraped. A prometheus::Collectable, so the
// exposer collects it beside the registry.
class ScrapeTimeMetrics : public prometheus::Collectable {
 public:
  void Add(const std::string& name, const std::string& help, prometheus::MetricType type,
           std::function<double()> fn, const Labels& labels);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  struct Series {
    Labels labels;
    std::function<double()> fn;
  };
  struct Family {
    std::string name, help;
    prometheus::MetricType type;
    std::vector<Series> series;
  };
  mutable std::mutex mu_;
  std::vector<Family> families_;
};

class MetricsRegistry {
 public:
  MetricsRegistry();

  // Same name + same labels returns the same object. A name keeps one type (and the help and
  // buckets it was first registered with). Names and label names must match
  // [a-zA-Z_:][a-zA-Z0-9_:]*: a bad one aborts, as it is a programming error.
  Counter* AddCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge* AddGauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram* AddHistogram(const std::string& name, const std::string& help,
                          std::vector<double> buckets, const Labels& labels = {});
  // A gauge (or counter) read at scrape time, e.g. from the slot store's statistics.
  void AddCallbackGauge(const std::string& name, const std::string& help,
                        std::function<double()> fn, const Labels& labels = {});
  void AddCallbackCounter(const std::string& name, const std::string& help,
                          std::function<double()> fn, const Labels& labels = {});

  // What an exposer serves: the registry and the scrape-time metrics.
  std::vector<std::weak_ptr<prometheus::Collectable>> Collectables() const;
  // Everything in the text exposition format 0.0.4 (what /metrics answers).
  std::string Render() const;

 private:
  // Aborts on a bad name, or a name already registered with another type or kind (a
  // scrape-time family and a registry family of one name would be exposed twice).
  void ClaimName(const std::string& name, prometheus::MetricType type, bool scrape_time,
                 const Labels& labels);

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ScrapeTimeMetrics> scrape_time_;
  std::mutex mu_;
  std::map<std::string, std::pair<prometheus::MetricType, bool>> kinds_;  // mu_
};

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_METRICS_H_
