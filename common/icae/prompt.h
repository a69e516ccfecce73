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
#include "common/icae/compressor.h"
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

// One slot set's extent in the decoder input: its rows (slots, or the baseline's context
// embeddings) and the context tokens they stand for (a slot record's token_count).
struct MemoryExtent {
  int64_t rows = 0;
  int64_t tokens = 0;
};

// RoPE positions [rows] int64 (CPU) of AssembleDecoderInput's rows for this mode and these
// memories (in order); `rows` is the assembled input's length. Rows past it (generated ids)
// continue from the last position + 1 (KVCache::next_position).
//   sequential: 0 … rows-1 (the reference's layout; the same as passing no positions).
//   spread: the mode's lead at 0 … a-1; slot set k over the positions of its context's tokens,
//     a + (tokens of the sets before it) + [0, tokens), each slot at the centre of its
//     segment's span (SpreadMemoryPosition); a set whose rows are its tokens (the baseline's
//     context) at its tokens' own positions; the rows after the slots continue from
//     a + (all sets' tokens).
// Errors (spread): a set whose rows are neither its tokens nor the slots its token count
// compresses to.
absl::StatusOr<torch::Tensor> DecoderInputPositions(const IcaeAdapter& adapter, PromptMode mode,
                                                    const std::vector<MemoryExtent>& memories,
                                                    int64_t rows);

// `positions` [n] followed by `extra` more, each one past the one before (rows appended to an
// input, e.g. teacher-forced targets).
torch::Tensor ExtendPositions(const torch::Tensor& positions, int64_t extra);

// AssembleDecoderInput and DecoderInputPositions for compressed contexts, in order: one
// SequenceInput (embeds, positions; no cache).
absl::StatusOr<SequenceInput> SlotDecoderInput(const Transformer& model, const IcaeAdapter& adapter,
                                               PromptMode mode,
                                               const std::vector<CompressedContext>& contexts,
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
