// Next-token choice from logits: greedy, or sampled with temperature, top-k, top-p and a
// repetition penalty; a seed makes a run reproducible.
#ifndef ICAE_COMMON_MODEL_SAMPLER_H_
#define ICAE_COMMON_MODEL_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"

namespace icae {

struct SamplingParams {
  double temperature = 0.0;        // 0 = greedy
  double top_p = 1.0;              // (0, 1]
  int64_t top_k = 0;               // 0 = no limit
  double repetition_penalty = 1.0; // >= 1 lowers the logits of ids already seen (CTRL style)
  uint64_t seed = 0;               // used when sampling
};

// Checks bounds; returns InvalidArgument naming the field.
absl::Status ValidateSamplingParams(const SamplingParams& p);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}
  // logits: `n` float32 values. `history`: ids seen so far (for the repetition penalty).
  int64_t Next(const float* logits, int64_t n, const std::vector<int64_t>& history);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> work_;
  std::vector<int32_t> idx_;
};

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_SAMPLER_H_
