// Instruction data made from held-in text: every answer is derivable from the context alone
// (first/last sentence, what follows a quoted phrase, which of two words occurs, how many
// sentences, which word follows a given word). Reproducible from the seed.
#ifndef ICAE_COMMON_TRAIN_INSTRUCTIONS_H_
#define ICAE_COMMON_TRAIN_INSTRUCTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/train/text_data.h"

namespace icae::train {

struct InstructionGenOptions {
  int64_t count = 1000;
  uint64_t seed = 1;
  int64_t min_words = 30;  // passage length bounds (words)
  int64_t max_words = 80;
};

// Splits text into sentences (on . ! ? followed by a space and a capital or quote), with
// whitespace collapsed.
std::vector<std::string> SplitSentences(const std::string& text);

// Generates `count` examples from the sentences of `text`.
absl::StatusOr<std::vector<InstructionExample>> GenerateInstructions(
    const std::string& text, const InstructionGenOptions& options);

// One JSON object per line: {"input", "prompt", "answer", "task"}.
std::string InstructionToJsonLine(const InstructionExample& e);

}  // namespace icae::train

#endif  // ICAE_COMMON_TRAIN_INSTRUCTIONS_H_
