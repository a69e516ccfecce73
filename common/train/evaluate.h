// ICAE evaluation (the paper's measurements, on held-out data):
//   autoencoding  BLEU-4 / exact match / token accuracy of [slots][AE] → greedy reconstruction
//   continuation  perplexity of the next N tokens given the full context, its slots, nothing
//   instructions  exact match / token F1 of greedy answers on held-out instruction data
// Callers hold an inference guard (c10::InferenceMode) or at least torch::NoGradGuard.
#ifndef ICAE_COMMON_TRAIN_EVALUATE_H_
#define ICAE_COMMON_TRAIN_EVALUATE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/icae/adapter.h"
#include "common/model/transformer.h"
#include "common/tokenizer/tokenizer.h"
#include "common/train/text_data.h"

namespace icae::train {

struct AutoencodeResult {
  int64_t length = 0;     // context ids per passage (BOS included)
  int64_t passages = 0;
  int64_t slots = 0;      // slots per passage
  double bleu4 = 0, exact_match = 0, token_accuracy = 0;  // means over passages
  // Exposure bias, side by side: the fraction of text ids that are the argmax when the decoder
  // is fed the true prefix (teacher forcing, as in training), and the mean number of leading
  // ids greedy decoding gets right before its first mistake.
  double teacher_forced_accuracy = 0, greedy_correct_prefix = 0;
};

// `count` evenly spaced passages of `length` ids (BOS + length-1 text ids) from `stream`;
// reconstruction target = the text ids (greedy decoding, at most length + 8 new tokens).
absl::StatusOr<AutoencodeResult> EvalAutoencode(const Transformer& model, const IcaeAdapter& adapter,
                                                const std::vector<int32_t>& stream, int64_t length,
                                                int64_t count);

// Reconstructs one passage (context ids with BOS); returns the generated ids (EOS excluded).
absl::StatusOr<std::vector<int64_t>> Reconstruct(const Transformer& model, const IcaeAdapter& adapter,
                                                 const std::vector<int64_t>& context,
                                                 int64_t max_new_tokens);

struct ContinuationResult {
  int64_t context_length = 0, next_tokens = 0, windows = 0;
  double ppl_full = 0, ppl_slots = 0, ppl_none = 0;
};

// Windows of context_length (BOS included) + next_tokens ids; perplexity of the next tokens
// given (a) the context's own tokens, (b) its slots (continue template), (c) BOS alone.
absl::StatusOr<ContinuationResult> EvalContinuation(const Transformer& model,
                                                    const IcaeAdapter& adapter,
                                                    const std::vector<int32_t>& stream,
                                                    int64_t context_length, int64_t next_tokens,
                                                    int64_t count);

struct InstructionResult {
  int64_t examples = 0;
  double exact_match = 0, f1 = 0;
  std::map<std::string, std::pair<int64_t, double>> per_task_exact;  // task → (n, EM)
  std::vector<std::string> predictions;
};

absl::StatusOr<InstructionResult> EvalInstructions(const Transformer& model,
                                                   const IcaeAdapter& adapter,
                                                   const Tokenizer& tokenizer,
                                                   const std::vector<InstructionExample>& examples,
                                                   int64_t max_new_tokens);

}  // namespace icae::train

#endif  // ICAE_COMMON_TRAIN_EVALUATE_H_
