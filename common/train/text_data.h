// Training data: token streams from text files, random windows over them, instruction JSONL.
#ifndef ICAE_COMMON_TRAIN_TEXT_DATA_H_
#define ICAE_COMMON_TRAIN_TEXT_DATA_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"

namespace icae::train {

// Tokenizes a text file line by line (no BOS, empty lines skipped) into one stream. Line by
// line because SentencePiece's normaliser folds newlines away anyway, and each line then
// starts with the word-boundary piece, so lines join like words.
absl::StatusOr<std::vector<int32_t>> TokenizeTextFile(const Tokenizer& tokenizer,
                                                      const std::string& path);

// A seeded generator for (seed, step, micro-batch): each step's data depends only on these,
// so a resumed run sees exactly the batches the uninterrupted run would have seen.
std::mt19937_64 StepRng(uint64_t seed, int64_t step, int64_t micro);

// `length` ids starting at a random offset of `stream` (which must be longer than length).
std::vector<int64_t> RandomWindow(const std::vector<int32_t>& stream, int64_t length,
                                  std::mt19937_64& rng);
// Window `k` of `count` evenly spaced over the stream (deterministic held-out sets).
std::vector<int64_t> SpacedWindow(const std::vector<int32_t>& stream, int64_t length,
                                  int64_t k, int64_t count);

// One instruction example in the PwC data set's format.
struct InstructionExample {
  std::string input;   // the context to compress
  std::string prompt;  // the question
  std::string answer;
  std::string task;    // optional: which generator made it (per-task accuracy)
};

absl::StatusOr<std::vector<InstructionExample>> LoadInstructionJsonl(const std::string& path);

}  // namespace icae::train

#endif  // ICAE_COMMON_TRAIN_TEXT_DATA_H_
