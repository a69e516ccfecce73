// A small Prometheus registry (counters, gauges, histograms, with fixed label sets) rendered in
// the text exposition format 0.0.4. prometheus-cpp is not packaged in Debian 12; this covers
// what the services export. All metric objects are thread-safe and live as long as the registry.
#ifndef ICAE_COMMON_SERVER_METRICS_H_
#define ICAE_COMMON_SERVER_METRICS_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace icae::server {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Inc(double v = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double v = 1.0);
  void Dec(double v = 1.0) { Inc(-v); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // sorted, +Inf implied
  void Observe(double v);
  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Snap() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Bucket helpers.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
std::vector<double> LatencyBuckets();  // 1 ms .. ~60 s

class MetricsRegistry {
 public:
  // Same name + same labels returns the same object. A name must keep one type and help text.
  // Names and label names must match [a-zA-Z_:][a-zA-Z0-9_:]* (checked; a bad one aborts at
  // start-up, as it is a programming error).
  Counter* AddCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge* AddGauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram* AddHistogram(const std::string& name, const std::string& help,
                          std::vector<double> buckets, const Labels& labels = {});
  // A gauge (or counter) read at scrape time, e.g. from the slot store's statistics.
  void AddCallbackGauge(const std::string& name, const std::string& help,
                        std::function<double()> fn, const Labels& labels = {});
  void AddCallbackCounter(const std::string& name, const std::string& help,
                          std::function<double()> fn, const Labels& labels = {});

  // Text exposition format, families in registration order.
  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> callback;
  };
  struct Family {
    std::string name, help;
    Type type;
    std::vector<std::unique_ptr<Series>> series;
  };
  Series* GetSeries(const std::string& name, const std::string& help, Type type,
                    const Labels& labels);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Family>> families_;
};

// Escapes a label value for the exposition format (backslash, quote, newline).
std::string EscapeLabelValue(const std::string& v);

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_METRICS_H_
