// The llama2.c checkpoint header (7 little-endian int32: dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size (negative = separate classifier), seq_len) and the float32 tables that
// follow it, parsed from bytes in memory. No LibTorch here, so the parser builds and is fuzzed
// on its own (fuzz/llama2c_fuzz.cc); ConvertLlama2cCheckpoint uses it.
#ifndef ICAE_COMMON_MODEL_LLAMA2C_HEADER_H_
#define ICAE_COMMON_MODEL_LLAMA2C_HEADER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace icae {

struct Llama2cHeader {
  static constexpr size_t kBytes = 28;

  int64_t dim = 0;
  int64_t hidden_dim = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t vocab_size = 0;
  int64_t seq_len = 0;
  bool shared_classifier = true;  // the classifier is the token embedding (vocab_size > 0)

  int64_t head_dim() const { return dim / n_heads; }

  // One float32 table of the file, in file order after the header.
  struct Part {
    const char* name;
    std::vector<int64_t> shape;
  };
  std::vector<Part> Parts() const;
};

// Checks the header's values are plausible and that `size` (the whole file) is exactly the
// header plus the tables they imply. InvalidArgument("invalid llama2.c checkpoint: ...");
// callers prefix the file's name.
absl::StatusOr<Llama2cHeader> ParseLlama2cHeader(const uint8_t* bytes, size_t size);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_LLAMA2C_HEADER_H_
