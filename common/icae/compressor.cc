#include "common/icae/compressor.h"

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace icae {

Segmentation SegmentContext(int64_t length, int64_t mem_size, int64_t rate) {
  Segmentation s;
  if (length <= 0) return s;
  const int64_t per = mem_size * rate;
  s.num_segments = (length + per - 1) / per;
  s.segment_length = (length + s.num_segments - 1) / s.num_segments;
  for (int64_t k = 0; k < s.num_segments; ++k) {
    const int64_t b = k * s.segment_length;
    const int64_t e = std::min(length, b + s.segment_length);
    if (b < e) s.spans.emplace_back(b, e);
  }
  s.num_segments = static_cast<int64_t>(s.spans.size());
  return s;
}

int64_t SpreadMemoryPosition(int64_t j, int64_t n, int64_t mem_size) {
  return (2 * j + 1) * n / (2 * mem_size);
}

Compressor::Compressor(const Transformer& model, const IcaeAdapter& adapter, CompressorOptions options)
    : model_(model), adapter_(adapter), options_(options) {}

int64_t Compressor::max_context_tokens() const {
  return options_.max_context_tokens > 0 ? options_.max_context_tokens
                                         : adapter_.config.max_context_tokens;
}

absl::Status Compressor::Validate(const std::vector<int64_t>& ids) const {
  if (ids.empty()) return absl::InvalidArgumentError("empty context: nothing to compress");
  if (static_cast<int64_t>(ids.size()) > max_context_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat("context of ", ids.size(),
                                                   " tokens exceeds the maximum of ",
                                                   max_context_tokens()));
  }
  const int64_t V = adapter_.config.base_vocab_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= V) {
      return absl::InvalidArgumentError(absl::StrCat("context token ", i, " has id ", ids[i],
                                                     ", outside the base vocabulary [0, ", V, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<CompressedContext>> Compressor::Compress(
    const std::vector<std::vector<int64_t>>& contexts, bool with_lora) const {
  const IcaeConfig& c = adapter_.config;
  const int64_t S = c.mem_size;
  for (const auto& ids : contexts) RETURN_IF_ERROR(Validate(ids));
  // The memory-token embeddings are the same for every segment: [S, hidden].
  torch::Tensor memory = adapter_.memory_embed.narrow(0, 0, S).to(model_.device(), model_.dtype());
  struct Job {
    size_t context;
    int64_t segment;
    torch::Tensor embeds;
    torch::Tensor positions;  // undefined: 0, 1, 2, … (sequential)
  };
  std::vector<Job> jobs;
  std::vector<CompressedContext> out(contexts.size());
  for (size_t i = 0; i < contexts.size(); ++i) {
    Segmentation seg = SegmentContext(static_cast<int64_t>(contexts[i].size()), S,
                                      c.mean_compression_rate);
    out[i].num_segments = seg.num_segments;
    out[i].num_tokens = static_cast<int64_t>(contexts[i].size());
    auto ids = torch::tensor(contexts[i], torch::kInt64);
    for (int64_t k = 0; k < seg.num_segments; ++k) {
      auto [b, e] = seg.spans[k];
      ASSIGN_OR_RETURN(torch::Tensor emb, model_.Embed(ids.slice(0, b, e)));
      torch::Tensor positions;
      if (c.memory_positions == IcaeConfig::MemoryPositions::kSpread) {
        std::vector<int64_t> pos(e - b + S);
        for (int64_t t = 0; t < e - b; ++t) pos[t] = t;
        for (int64_t j = 0; j < S; ++j) pos[e - b + j] = SpreadMemoryPosition(j, e - b, S);
        positions = torch::tensor(pos, torch::kInt64);
      }
      jobs.push_back({i, k, torch::cat({emb, memory}, 0), positions});
    }
  }
  std::vector<std::vector<torch::Tensor>> slots(contexts.size());
  for (size_t i = 0; i < contexts.size(); ++i) slots[i].resize(out[i].num_segments);
  ForwardOptions fo;
  fo.lora = with_lora ? &adapter_.lora : nullptr;
  fo.output = ForwardOutput::kHidden;
  // Slots come from the weights as loaded even where the decoder side runs on int8 copies.
  fo.full_precision_weights = true;
  const size_t per_batch = static_cast<size_t>(std::max<int64_t>(1, options_.max_segments_per_batch));
  for (size_t start = 0; start < jobs.size(); start += per_batch) {
    const size_t end = std::min(jobs.size(), start + per_batch);
    std::vector<SequenceInput> batch(end - start);
    for (size_t j = start; j < end; ++j) {
      batch[j - start].embeds = jobs[j].embeds;
      batch[j - start].positions = jobs[j].positions;
      batch[j - start].num_outputs = S;  // the memory positions are the last S
    }
    ASSIGN_OR_RETURN(torch::Tensor hidden, model_.Forward(batch, fo));  // [(end-start)·S, H]
    for (size_t j = start; j < end; ++j) {
      slots[jobs[j].context][jobs[j].segment] = hidden.narrow(0, (j - start) * S, S);
    }
  }
  for (size_t i = 0; i < contexts.size(); ++i) out[i].slots = torch::cat(slots[i], 0);
  return out;
}

}  // namespace icae
