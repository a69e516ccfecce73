#include "common/server/metrics.h"

#include <prometheus/check_names.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>

namespace icae::server {
namespace {

[[noreturn]] void Fail(const std::string& what, const std::string& name) {
  std::fprintf(stderr, "metric '%s': %s\n", name.c_str(), what.c_str());
  std::abort();
}

void CheckNames(const std::string& name, const Labels& labels) {
  if (!prometheus::CheckMetricName(name)) Fail("bad metric name", name);
  for (const auto& [k, v] : labels) {
    if (!prometheus::CheckLabelName(k)) Fail("bad label name '" + k + "'", name);
  }
}

// prometheus-cpp reports misuse (bad names, a name with two types) by throwing; here that is
// a programming error found at start-up, reported like ours.
template <typename F>
auto OrAbort(const std::string& name, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    Fail(e.what(), name);
  }
}

}  // namespace

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
          0.75,  1.0,    1.5,   2.0,  3.0,   5.0,  10.0,  20.0, 40.0, 60.0};
}

void ScrapeTimeMetrics::Add(const std::string& name, const std::string& help,
                            prometheus::MetricType type, std::function<double()> fn,
                            const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto fam = std::find_if(families_.begin(), families_.end(),
                          [&](const Family& f) { return f.name == name; });
  if (fam == families_.end()) {
    families_.push_back(Family{name, help, type, {}});
    fam = families_.end() - 1;
  }
  for (Series& s : fam->series) {
    if (s.labels == labels) {
      s.fn = std::move(fn);
      return;
    }
  }
  fam->series.push_back(Series{labels, std::move(fn)});
}

std::vector<prometheus::MetricFamily> ScrapeTimeMetrics::Collect() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<prometheus::MetricFamily> out;
  for (const Family& f : families_) {
    prometheus::MetricFamily mf;
    mf.name = f.name;
    mf.help = f.help;
    mf.type = f.type;
    for (const Series& s : f.series) {
      prometheus::ClientMetric m;
      for (const auto& [k, v] : s.labels) m.label.push_back({k, v});
      const double value = s.fn();
      if (f.type == prometheus::MetricType::Counter) {
        m.counter.value = value;
      } else {
        m.gauge.value = value;
      }
      mf.metric.push_back(std::move(m));
    }
    out.push_back(std::move(mf));
  }
  return out;
}

MetricsRegistry::MetricsRegistry()
    : registry_(std::make_shared<prometheus::Registry>()),
      scrape_time_(std::make_shared<ScrapeTimeMetrics>()) {}

void MetricsRegistry::ClaimName(const std::string& name, prometheus::MetricType type,
                                bool scrape_time, const Labels& labels) {
  CheckNames(name, labels);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = kinds_.emplace(name, std::make_pair(type, scrape_time));
  if (!inserted && it->second != std::make_pair(type, scrape_time)) {
    Fail("registered with two types (or both read at scrape time and not)", name);
  }
}

Counter* MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                     const Labels& labels) {
  ClaimName(name, prometheus::MetricType::Counter, false, labels);
  return OrAbort(name, [&] {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add(labels);
  });
}

Gauge* MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                                 const Labels& labels) {
  ClaimName(name, prometheus::MetricType::Gauge, false, labels);
  return OrAbort(name, [&] {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add(labels);
  });
}

Histogram* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> buckets, const Labels& labels) {
  ClaimName(name, prometheus::MetricType::Histogram, false, labels);
  std::sort(buckets.begin(), buckets.end());
  return OrAbort(name, [&] {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_).Add(
        labels, prometheus::Histogram::BucketBoundaries(std::move(buckets)));
  });
}

void MetricsRegistry::AddCallbackGauge(const std::string& name, const std::string& help,
                                       std::function<double()> fn, const Labels& labels) {
  ClaimName(name, prometheus::MetricType::Gauge, true, labels);
  scrape_time_->Add(name, help, prometheus::MetricType::Gauge, std::move(fn), labels);
}

void MetricsRegistry::AddCallbackCounter(const std::string& name, const std::string& help,
                                         std::function<double()> fn, const Labels& labels) {
  ClaimName(name, prometheus::MetricType::Counter, true, labels);
  scrape_time_->Add(name, help, prometheus::MetricType::Counter, std::move(fn), labels);
}

std::vector<std::weak_ptr<prometheus::Collectable>> MetricsRegistry::Collectables() const {
  return {registry_, scrape_time_};
}

std::string MetricsRegistry::Render() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (auto& f : scrape_time_->Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace icae::server
