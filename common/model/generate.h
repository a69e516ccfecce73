// Autoregressive generation for one sequence on the KV cache: prefill the prefix (ids or
// embeddings), then one token per step until the stop decision (common/model/stop.h: EOS, a
// stop id, stop text, the length bound) or the caller ends it.
#ifndef ICAE_COMMON_MODEL_GENERATE_H_
#define ICAE_COMMON_MODEL_GENERATE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/sampler.h"
#include "common/model/stop.h"
#include "common/model/transformer.h"

namespace icae {

struct GenerateOptions {
  SamplingParams sampling;
  int64_t max_new_tokens = 256;
  std::vector<int64_t> stop_token_ids;  // besides EOS (and the config's extra stop id)
  bool ignore_eos = false;
  // Choose only among the first `logits_limit` logits (ICAE: the base vocabulary); 0 = all.
  int64_t logits_limit = 0;
  const LoraWeights* lora = nullptr;
  // Stop text: generation ends where one of these appears in the output text, which
  // token_text gives (the text an output id adds, e.g. an IncrementalDecoder's Push; called
  // with -1 at the end for what it still holds back). on_text receives the text safe to show.
  std::vector<std::string> stop_sequences;
  std::function<std::string(int64_t)> token_text;
  std::function<void(const std::string&)> on_text;
};

struct GenerateResult {
  std::vector<int64_t> ids;  // generated ids (stop/EOS ids excluded)
  FinishReason finish_reason = FinishReason::kLength;
  std::string stop_sequence;  // when kStopSequence
  int64_t prefix_tokens = 0;
  double prefill_seconds = 0;  // time to first token
  double total_seconds = 0;
};

// on_token(id) is called for each generated id; returning false stops (kCaller).
using TokenCallback = std::function<bool(int64_t)>;

absl::StatusOr<GenerateResult> Generate(const Transformer& model, SequenceInput prefix,
                                        const GenerateOptions& options,
                                        const TokenCallback& on_token = nullptr);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_GENERATE_H_
