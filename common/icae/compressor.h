// Encoder side: context ids → memory slots. The context is cut into n = ceil(L / (S·rate))
// segments of ceil(L / n) ids; each segment, followed by the S memory tokens, goes through the
// model with LoRA on (positions from 0); the final-norm hidden states at the memory positions
// are the slots. Segments of one context, and of several contexts, run as one packed batch.
#ifndef ICAE_COMMON_ICAE_COMPRESSOR_H_
#define ICAE_COMMON_ICAE_COMPRESSOR_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/icae/adapter.h"
#include "common/model/transformer.h"

namespace icae {

struct CompressorOptions {
  // Upper bound on context length; 0 = the adapter's max_context_tokens.
  int64_t max_context_tokens = 0;
  // Segments per forward pass (bounds activation memory); all segments still give identical
  // results however they are grouped.
  int64_t max_segments_per_batch = 16;
};

struct Segmentation {
  int64_t num_segments = 0;
  int64_t segment_length = 0;
  std::vector<std::pair<int64_t, int64_t>> spans;  // [begin, end) per segment
};

struct CompressedContext {
  torch::Tensor slots;  // [num_segments · mem_size, hidden], compute dtype
  int64_t num_segments = 0;
  int64_t num_tokens = 0;
};

// getao v2's arithmetic for a context of `length` ids.
Segmentation SegmentContext(int64_t length, int64_t mem_size, int64_t rate);

// IcaeConfig::MemoryPositions::kSpread: the position of memory token j (of mem_size) relative
// to the start of its n-token segment, the centre of the span it stands for:
// floor((2j + 1)·n / (2·mem_size)).
int64_t SpreadMemoryPosition(int64_t j, int64_t n, int64_t mem_size);

class Compressor {
 public:
  Compressor(const Transformer& model, const IcaeAdapter& adapter, CompressorOptions options = {});

  // Compresses each context (ids as given, BOS included by the caller when wanted).
  // Errors: empty context, longer than the bound, ids outside the base vocabulary.
  absl::StatusOr<std::vector<CompressedContext>> Compress(
      const std::vector<std::vector<int64_t>>& contexts, bool with_lora = true) const;

  absl::Status Validate(const std::vector<int64_t>& ids) const;
  int64_t max_context_tokens() const;

 private:
  const Transformer& model_;
  const IcaeAdapter& adapter_;
  CompressorOptions options_;
};

}  // namespace icae

#endif  // ICAE_COMMON_ICAE_COMPRESSOR_H_
