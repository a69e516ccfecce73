#include "common/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace icae {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be >= 0, got ", p.temperature));
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  if (p.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("repetition_penalty must be > 0, got ", p.repetition_penalty));
  }
  return absl::OkStatus();
}

int64_t Sampler::Next(const float* logits, int64_t n, const std::vector<int64_t>& history) {
  if (params_.temperature <= 0 && params_.repetition_penalty == 1.0) {
    // Plain greedy: no copy of the logits; ties go to the lowest id (as torch.argmax).
    return std::max_element(logits, logits + n) - logits;
  }
  work_.assign(logits, logits + n);
  if (params_.repetition_penalty != 1.0) {
    for (int64_t id : history) {
      if (id < 0 || id >= n) continue;
      float& v = work_[id];
      v = v > 0 ? v / params_.repetition_penalty : v * params_.repetition_penalty;
    }
  }
  if (params_.temperature <= 0) {
    // Greedy; ties go to the lowest id (as torch.argmax).
    return std::max_element(work_.begin(), work_.end()) - work_.begin();
  }
  idx_.resize(n);
  std::iota(idx_.begin(), idx_.end(), 0);
  int64_t k = params_.top_k > 0 ? std::min<int64_t>(params_.top_k, n) : n;
  auto by_logit = [&](int32_t a, int32_t b) {
    return work_[a] > work_[b] || (work_[a] == work_[b] && a < b);
  };
  // Only the candidates that can matter are sorted: top-k, else everything within a
  // probability of e^-30 of the best (the rest cannot reach any top-p mass in float).
  if (k < n) {
    std::partial_sort(idx_.begin(), idx_.begin() + k, idx_.end(), by_logit);
    idx_.resize(k);
  } else {
    float best = *std::max_element(work_.begin(), work_.end());
    float cut = best - 30.0f * static_cast<float>(params_.temperature);
    idx_.erase(std::remove_if(idx_.begin(), idx_.end(), [&](int32_t i) { return work_[i] < cut; }),
               idx_.end());
    std::sort(idx_.begin(), idx_.end(), by_logit);
  }
  const double inv_t = 1.0 / params_.temperature;
  const double top = work_[idx_[0]];
  std::vector<double> probs(idx_.size());
  double sum = 0;
  for (size_t i = 0; i < idx_.size(); ++i) {
    probs[i] = std::exp((work_[idx_[i]] - top) * inv_t);
    sum += probs[i];
  }
  size_t keep = idx_.size();
  if (params_.top_p < 1.0) {
    double acc = 0;
    for (size_t i = 0; i < idx_.size(); ++i) {
      acc += probs[i] / sum;
      if (acc >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept_sum = 0;
  for (size_t i = 0; i < keep; ++i) kept_sum += probs[i];
  std::uniform_real_distribution<double> uni(0.0, kept_sum);
  double r = uni(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= probs[i];
    if (r <= 0) return idx_[i];
  }
  return idx_[keep - 1];
}

}  // namespace icae
