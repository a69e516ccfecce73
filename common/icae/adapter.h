// An ICAE adapter: LoRA on q_proj/v_proj (encoder only) and the memory-token embedding table
// [mem_size + 3, hidden] (memory tokens, then AE, LM, FT), with its icae_config.json.
#ifndef ICAE_COMMON_ICAE_ADAPTER_H_
#define ICAE_COMMON_ICAE_ADAPTER_H_

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/model/config.h"
#include "common/model/lora.h"

namespace icae {

struct IcaeConfig {
  // Defaults = the released v2 checkpoint (Mistral-7B).
  int64_t mem_size = 128;
  int64_t mean_compression_rate = 4;
  int64_t lora_r = 512;
  double lora_alpha = 32;
  std::vector<std::string> lora_target_modules = {"q_proj", "v_proj"};
  int64_t base_vocab_size = 32000;
  int64_t pad_token_id = 32000;
  int64_t ae_token_id = 32129;
  int64_t lm_token_id = 32130;
  int64_t ft_token_id = 32131;
  // Maximum context tokens one Compress accepts (the release trained up to 5120).
  int64_t max_context_tokens = 5120;
  // Continue mode appends [LM] after the slots (when the adapter was trained with it).
  bool continue_with_lm_token = false;
  // Instruct template around slots and prompt (Mistral instruct by default); data, not code.
  std::vector<int64_t> instruct_prefix_ids = {1, 733, 16289, 28793};  // "<s>[INST]"
  std::vector<int64_t> instruct_suffix_ids = {733, 28748, 16289, 28793};  // " [/INST]"

  int64_t first_memory_id() const { return base_vocab_size + 1; }
  double lora_scaling() const { return lora_alpha / static_cast<double>(lora_r); }
};

// Parses icae_config.json text; fields absent take the defaults above. mem_size etc. are
// checked for consistency (special ids must follow the memory tokens as getao computes them).
absl::StatusOr<IcaeConfig> ParseIcaeConfig(const std::string& json_text, const std::string& source);
std::string IcaeConfigToJson(const IcaeConfig& c);

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
IcaeAdapter RandomIcaeAdapter(const ModelConfig& base, int64_t mem_size, int64_t r, torch::Dtype dtype,
                              uint64_t seed);

// Writes an adapter in the released layout + icae_config.json beside it.
absl::Status SaveIcaeAdapter(const IcaeAdapter& adapter, const std::string& path);

// Name of a LoRA tensor in the released layout.
std::string LoraTensorName(int64_t layer, const std::string& proj, char ab);

}  // namespace icae

#endif  // ICAE_COMMON_ICAE_ADAPTER_H_
