#include "common/server/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace icae::server {
namespace {

void AtomicAdd(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

bool ValidName(const std::string& n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    char c = n[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrCat(static_cast<int64_t>(v));
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

std::string LabelText(const Labels& labels, const std::string& extra_name = "",
                      const std::string& extra_value = "") {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    absl::StrAppend(&out, first ? "" : ",", k, "=\"", EscapeLabelValue(v), "\"");
    first = false;
  }
  if (!extra_name.empty()) {
    absl::StrAppend(&out, first ? "" : ",", extra_name, "=\"", extra_value, "\"");
  }
  return out + "}";
}

}  // namespace

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Counter::Inc(double v) {
  if (v < 0) return;  // counters only go up
  AtomicAdd(value_, v);
}

void Gauge::Inc(double v) { AtomicAdd(value_, v); }

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::Observe(double v) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  counts_[i]++;
  sum_ += v;
  count_++;
}

Histogram::Snapshot Histogram::Snap() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t acc = 0;
  for (uint64_t c : counts_) {
    acc += c;
    s.cumulative.push_back(acc);
  }
  s.sum = sum_;
  s.count = count_;
  return s;
}

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

MetricsRegistry::Series* MetricsRegistry::GetSeries(const std::string& name,
                                                    const std::string& help, Type type,
                                                    const Labels& labels) {
  if (!ValidName(name)) {
    std::fprintf(stderr, "bad metric name '%s'\n", name.c_str());
    std::abort();
  }
  for (const auto& [k, v] : labels) {
    if (!ValidName(k)) {
      std::fprintf(stderr, "bad label name '%s' on metric '%s'\n", k.c_str(), name.c_str());
      std::abort();
    }
  }
  Family* fam = nullptr;
  for (auto& f : families_) {
    if (f->name == name) fam = f.get();
  }
  if (fam == nullptr) {
    families_.push_back(std::make_unique<Family>());
    fam = families_.back().get();
    fam->name = name;
    fam->help = help;
    fam->type = type;
  } else if (fam->type != type) {
    std::fprintf(stderr, "metric '%s' registered with two types\n", name.c_str());
    std::abort();
  }
  for (auto& s : fam->series) {
    if (s->labels == labels) return s.get();
  }
  fam->series.push_back(std::make_unique<Series>());
  fam->series.back()->labels = labels;
  return fam->series.back().get();
}

Counter* MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                     const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Series* s = GetSeries(name, help, Type::kCounter, labels);
  if (!s->counter) s->counter = std::make_unique<Counter>();
  return s->counter.get();
}

Gauge* MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                                 const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Series* s = GetSeries(name, help, Type::kGauge, labels);
  if (!s->gauge) s->gauge = std::make_unique<Gauge>();
  return s->gauge.get();
}

Histogram* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> buckets, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Series* s = GetSeries(name, help, Type::kHistogram, labels);
  if (!s->histogram) s->histogram = std::make_unique<Histogram>(std::move(buckets));
  return s->histogram.get();
}

void MetricsRegistry::AddCallbackGauge(const std::string& name, const std::string& help,
                                       std::function<double()> fn, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  GetSeries(name, help, Type::kGauge, labels)->callback = std::move(fn);
}

void MetricsRegistry::AddCallbackCounter(const std::string& name, const std::string& help,
                                         std::function<double()> fn, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  GetSeries(name, help, Type::kCounter, labels)->callback = std::move(fn);
}

std::string MetricsRegistry::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& f : families_) {
    const char* type = f->type == Type::kCounter ? "counter"
                       : f->type == Type::kGauge ? "gauge" : "histogram";
    absl::StrAppend(&out, "# HELP ", f->name, " ", f->help, "\n# TYPE ", f->name, " ", type, "\n");
    for (const auto& s : f->series) {
      if (s->histogram) {
        auto snap = s->histogram->Snap();
        for (size_t i = 0; i <= snap.upper_bounds.size(); ++i) {
          std::string le = i < snap.upper_bounds.size() ? FormatValue(snap.upper_bounds[i]) : "+Inf";
          absl::StrAppend(&out, f->name, "_bucket", LabelText(s->labels, "le", le), " ",
                          snap.cumulative[i], "\n");
        }
        absl::StrAppend(&out, f->name, "_sum", LabelText(s->labels), " ", FormatValue(snap.sum), "\n");
        absl::StrAppend(&out, f->name, "_count", LabelText(s->labels), " ", snap.count, "\n");
        continue;
      }
      double v = s->callback ? s->callback() : s->counter ? s->counter->value()
                                                : s->gauge ? s->gauge->value() : 0.0;
      absl::StrAppend(&out, f->name, LabelText(s->labels), " ", FormatValue(v), "\n");
    }
  }
  return out;
}

}  // namespace icae::server
