// Decoder side: the input embeddings around memory slots, per mode (LoRA off at decode):
//   autoencode  [slots][AE]
//   instruct    embed(prefix) ; slots ; [FT] ; embed(prompt) ; embed(suffix)   (template = data
//               in IcaeConfig: instruct_prefix_ids / instruct_suffix_ids)
//   continue    [slots] (+[LM] when the adapter was trained with it) ; embed(prompt)
//   raw         [slots] ; embed(prompt)
// Several slot sets are concatenated in the order given. For the uncompressed baseline the
// "memory" is the context's own token embeddings in place of slots.
#ifndef ICAE_COMMON_ICAE_PROMPT_H_
#define ICAE_COMMON_ICAE_PROMPT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/icae/adapter.h"
#include "common/model/generate.h"
#include "common/model/transformer.h"

namespace icae {

enum class PromptMode { kAutoencode, kInstruct, kContinue, kRaw };

absl::StatusOr<PromptMode> ParsePromptMode(const std::string& name);
const char* PromptModeName(PromptMode mode);

// Decoder input embeddings [T, hidden] in the model's dtype.
absl::StatusOr<torch::Tensor> AssembleDecoderInput(const Transformer& model,
                                                   const IcaeAdapter& adapter, PromptMode mode,
                                                   const std::vector<torch::Tensor>& memories,
                                                   const std::vector<int64_t>& prompt_ids);

// Decoder input positions before the first slot (the mode's template lead): the slot-only
// prefix of the input is these positions followed by the slots.
int64_t LeadPositions(const IcaeAdapter& adapter, PromptMode mode);

// The baseline's "memory": the context ids' own embeddings [L, hidden].
absl::StatusOr<torch::Tensor> ContextAsMemory(const Transformer& model,
                                              const std::vector<int64_t>& context_ids);

// Generation options for slot-conditioned decoding: adapter off, choice restricted to the
// base vocabulary.
GenerateOptions IcaeDecodeOptions(const IcaeAdapter& adapter, GenerateOptions base);

}  // namespace icae

#endif  // ICAE_COMMON_ICAE_PROMPT_H_
