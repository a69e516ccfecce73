// icae_config.json: the ICAE adapter's settings (memory size, compression rate, LoRA, special
// ids, instruct template). No LibTorch here, so the parser builds and is fuzzed on its own
// (fuzz/icae_config_fuzz.cc).
#ifndef ICAE_COMMON_ICAE_ICAE_CONFIG_H_
#define ICAE_COMMON_ICAE_ICAE_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

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
  // RoPE positions of the memory tokens and slots (JSON "memory_positions"):
  //   kSequential ("sequential", the reference): memory tokens follow their segment's tokens
  //     (positions n..n+S-1 in the encoder); decoder rows take positions 0, 1, 2, … in order.
  //   kSpread ("spread"): each memory token and its slot sit at the centre of the span of
  //     context tokens it stands for (memory token j of an n-token segment at
  //     floor((2j+1)·n / 2S)), in the encoder and in the decoder, where slot sets take the
  //     positions of their contexts' tokens and the rows after the slots continue from the
  //     end of the contexts. Slot j and the tokens it holds are then a fixed distance apart,
  //     so a small decoder finds its place in the slots by position instead of by content.
  enum class MemoryPositions { kSequential, kSpread };
  MemoryPositions memory_positions = MemoryPositions::kSequential;

  int64_t first_memory_id() const { return base_vocab_size + 1; }
  double lora_scaling() const { return lora_alpha / static_cast<double>(lora_r); }
};

// Parses icae_config.json text; fields absent take the defaults above. mem_size etc. are
// checked for consistency (special ids must follow the memory tokens as getao computes them).
absl::StatusOr<IcaeConfig> ParseIcaeConfig(const std::string& json_text, const std::string& source);
std::string IcaeConfigToJson(const IcaeConfig& c);

}  // namespace icae

#endif  // ICAE_COMMON_ICAE_ICAE_CONFIG_H_
