// Unmerged LoRA on the attention projections: y = x W^T + ((x A^T) B^T) * alpha / r.
// Kept apart from the base weights so one loaded model serves with the adapter on (ICAE
// encoder) and off (decoder) per forward call.
#ifndef ICAE_COMMON_MODEL_LORA_H_
#define ICAE_COMMON_MODEL_LORA_H_

#include <vector>

#include <torch/torch.h>

#include "common/model/cpu_gemv.h"

namespace icae {

struct LoraLayer {
  // Undefined tensors mean "no LoRA on this projection".
  torch::Tensor q_a, q_b;  // A [r, hidden], B [q_width, r]
  torch::Tensor v_a, v_b;  // A [r, hidden], B [kv_width, r]
};

struct LoraWeights {
  std::vector<LoraLayer> layers;  // one per transformer layer
  double scaling = 1.0;           // alpha / r
};

// Adds the LoRA term of (a, b) for input x to y: y + linear(linear(x, a), b) * scaling
// (PlainLinear: in float32 for bf16 on CPUs without AVX-512 BF16).
inline torch::Tensor ApplyLora(const torch::Tensor& y, const torch::Tensor& x,
                               const torch::Tensor& a, const torch::Tensor& b, double scaling) {
  if (!a.defined()) return y;
  return y + PlainLinear(PlainLinear(x, a), b) * scaling;
}

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_LORA_H_
