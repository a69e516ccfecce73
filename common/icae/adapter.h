// An ICAE adapter: LoRA on q_proj/v_proj (encoder only) and the memory-token embedding table
// [mem_size + 3, hidden] (memory tokens, then AE, LM, FT), with its icae_config.json.
#ifndef ICAE_COMMON_ICAE_ADAPTER_H_
#define ICAE_COMMON_ICAE_ADAPTER_H_

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/icae/icae_config.h"
#include "common/model/config.h"
#include "common/model/lora.h"

namespace icae {

struct IcaeAdapter {
  IcaeConfig config;
  LoraWeights lora;
  torch::Tensor memory_embed;  // [mem_size + 3, hidden], compute dtype
  std::string path;

  // Embedding of a special id (memory tokens, AE, LM, FT) → [hidden].
  torch::Tensor SpecialEmbedding(int64_t id) const;
};

// Loads the released checkpoint layout
// (icae.base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_{A,B}.default.weight,
// memory_token_embed.weight) and the icae_config.json beside it, checking every shape against
// the base model and the config and rejecting NaN/Inf. Tensors are converted to `dtype`.
absl::StatusOr<IcaeAdapter> LoadIcaeAdapter(const std::string& path, const ModelConfig& base,
                                            torch::Dtype dtype, torch::Device device = torch::kCPU);

// A random adapter for `base` (N(0, 0.02); benchmarks and load tests): mem_size memory slots,
// LoRA rank r on q/v, the special ids following the base vocabulary as the release has them.
// Drawn on `device` (see RandomWeights).
IcaeAdapter RandomIcaeAdapter(const ModelConfig& base, int64_t mem_size, int64_t r, torch::Dtype dtype,
                              uint64_t seed, torch::Device device = torch::kCPU);

// Writes an adapter in the released layout + icae_config.json beside it.
absl::Status SaveIcaeAdapter(const IcaeAdapter& adapter, const std::string& path);

// Name of a LoRA tensor in the released layout.
std::string LoraTensorName(int64_t layer, const std::string& proj, char ab);

}  // namespace icae

#endif  // ICAE_COMMON_ICAE_ADAPTER_H_
