#include "common/icae/prompt.h"

#include "absl/strings/str_cat.h"
#include "common/icae/compressor.h"
#include "common/util/status_macros.h"

namespace icae {

absl::StatusOr<PromptMode> ParsePromptMode(const std::string& name) {
  if (name == "autoencode" || name == "ae") return PromptMode::kAutoencode;
  if (name == "instruct") return PromptMode::kInstruct;
  if (name == "continue") return PromptMode::kContinue;
  if (name == "raw") return PromptMode::kRaw;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown mode '", name, "' (autoencode, instruct, continue, raw)"));
}

const char* PromptModeName(PromptMode mode) {
  switch (mode) {
    case PromptMode::kAutoencode: return "autoencode";
    case PromptMode::kInstruct: return "instruct";
    case PromptMode::kContinue: return "continue";
    case PromptMode::kRaw: return "raw";
  }
  return "unknown";
}

int64_t LeadPositions(const IcaeAdapter& adapter, PromptMode mode) {
  return mode == PromptMode::kInstruct ? static_cast<int64_t>(adapter.config.instruct_prefix_ids.size()) : 0;
}

absl::StatusOr<torch::Tensor> ContextAsMemory(const Transformer& model,
                                              const std::vector<int64_t>& context_ids) {
  if (context_ids.empty()) return absl::InvalidArgumentError("empty context");
  return model.Embed(torch::tensor(context_ids, torch::kInt64));
}

absl::StatusOr<torch::Tensor> AssembleDecoderInput(const Transformer& model,
                                                   const IcaeAdapter& adapter, PromptMode mode,
                                                   const std::vector<torch::Tensor>& memories,
                                                   const std::vector<int64_t>& prompt_ids) {
  const IcaeConfig& c = adapter.config;
  const int64_t H = model.config().hidden_size;
  if (memories.empty()) return absl::InvalidArgumentError("no slots given");
  std::vector<torch::Tensor> parts;
  auto embed = [&](const std::vector<int64_t>& ids) -> absl::Status {
    if (ids.empty()) return absl::OkStatus();
    for (int64_t id : ids) {
      if (id < 0 || id >= c.base_vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("prompt id ", id,
                                                       " is outside the base vocabulary [0, ",
                                                       c.base_vocab_size, ")"));
      }
    }
    ASSIGN_OR_RETURN(torch::Tensor e, model.Embed(torch::tensor(ids, torch::kInt64)));
    parts.push_back(e);
    return absl::OkStatus();
  };
  auto special = [&](int64_t id) {
    parts.push_back(adapter.SpecialEmbedding(id).to(model.device(), model.dtype()).unsqueeze(0));
  };
  auto add_memories = [&]() -> absl::Status {
    for (size_t i = 0; i < memories.size(); ++i) {
      const auto& m = memories[i];
      if (m.dim() != 2 || m.size(1) != H) {
        return absl::InvalidArgumentError(absl::StrCat(
            "slot set ", i, " has shape ", c10::str(m.sizes()), "; this model needs [n, ", H, "]"));
      }
      if (m.size(0) == 0) return absl::InvalidArgumentError(absl::StrCat("slot set ", i, " is empty"));
      parts.push_back(m.to(model.device(), model.dtype()));
    }
    return absl::OkStatus();
  };
  switch (mode) {
    case PromptMode::kAutoencode:
      if (!prompt_ids.empty()) return absl::InvalidArgumentError("autoencode mode takes no prompt");
      RETURN_IF_ERROR(add_memories());
      special(c.ae_token_id);
      break;
    case PromptMode::kInstruct:
      RETURN_IF_ERROR(embed(c.instruct_prefix_ids));
      RETURN_IF_ERROR(add_memories());
      special(c.ft_token_id);
      RETURN_IF_ERROR(embed(prompt_ids));
      RETURN_IF_ERROR(embed(c.instruct_suffix_ids));
      break;
    case PromptMode::kContinue:
      RETURN_IF_ERROR(add_memories());
      if (c.continue_with_lm_token) special(c.lm_token_id);
      RETURN_IF_ERROR(embed(prompt_ids));
      break;
    case PromptMode::kRaw:
      RETURN_IF_ERROR(add_memories());
      RETURN_IF_ERROR(embed(prompt_ids));
      break;
  }
  return torch::cat(parts, 0);
}

absl::StatusOr<torch::Tensor> DecoderInputPositions(const IcaeAdapter& adapter, PromptMode mode,
                                                    const std::vector<MemoryExtent>& memories,
                                                    int64_t rows) {
  const IcaeConfig& c = adapter.config;
  if (rows < 0) return absl::InvalidArgumentError("negative input length");
  std::vector<int64_t> pos;
  pos.reserve(rows);
  if (c.memory_positions == IcaeConfig::MemoryPositions::kSequential) {
    for (int64_t i = 0; i < rows; ++i) pos.push_back(i);
    return torch::tensor(pos, torch::kInt64);
  }
  const int64_t lead = LeadPositions(adapter, mode);
  for (int64_t i = 0; i < lead && i < rows; ++i) pos.push_back(i);
  int64_t base = lead;  // the position of the current set's first context token
  for (size_t k = 0; k < memories.size(); ++k) {
    const MemoryExtent& m = memories[k];
    // Bounded so that positions cannot overflow whatever a record claims.
    constexpr int64_t kMaxTokens = int64_t{1} << 40;
    if (m.tokens < 1 || m.tokens > kMaxTokens || m.rows < 1) {
      return absl::InvalidArgumentError(absl::StrCat("slot set ", k, ": ", m.rows, " rows for ", m.tokens,
                                                     " context tokens"));
    }
    if (m.rows == m.tokens) {
      for (int64_t t = 0; t < m.tokens; ++t) pos.push_back(base + t);
    } else {
      const Segmentation seg = SegmentContext(m.tokens, c.mem_size, c.mean_compression_rate);
      if (seg.num_segments * c.mem_size != m.rows) {
        return absl::InvalidArgumentError(absl::StrCat(
            "slot set ", k, ": ", m.rows, " slots cannot stand for ", m.tokens, " context tokens (",
            seg.num_segments, " segments of ", c.mem_size, " slots)"));
      }
      for (const auto& [b, e] : seg.spans) {
        for (int64_t j = 0; j < c.mem_size; ++j) pos.push_back(base + b + SpreadMemoryPosition(j, e - b, c.mem_size));
      }
    }
    base += m.tokens;
  }
  if (static_cast<int64_t>(pos.size()) > rows) {
    return absl::InvalidArgumentError(absl::StrCat("the slot sets hold ", pos.size(), " rows, more than the input's ", rows));
  }
  for (int64_t p = base; static_cast<int64_t>(pos.size()) < rows; ++p) pos.push_back(p);
  return torch::tensor(pos, torch::kInt64);
}

torch::Tensor ExtendPositions(const torch::Tensor& positions, int64_t extra) {
  if (extra <= 0) return positions;
  const int64_t next = positions.numel() > 0 ? positions[-1].item<int64_t>() + 1 : 0;
  return torch::cat({positions.to(torch::kInt64), torch::arange(next, next + extra, torch::kInt64)});
}

absl::StatusOr<SequenceInput> SlotDecoderInput(const Transformer& model, const IcaeAdapter& adapter,
                                               PromptMode mode,
                                               const std::vector<CompressedContext>& contexts,
                                               const std::vector<int64_t>& prompt_ids) {
  std::vector<torch::Tensor> memories;
  std::vector<MemoryExtent> extents;
  for (const auto& c : contexts) {
    memories.push_back(c.slots);
    extents.push_back({c.slots.size(0), c.num_tokens});
  }
  SequenceInput in;
  ASSIGN_OR_RETURN(in.embeds, AssembleDecoderInput(model, adapter, mode, memories, prompt_ids));
  ASSIGN_OR_RETURN(in.positions, DecoderInputPositions(adapter, mode, extents, in.embeds.size(0)));
  return in;
}

GenerateOptions IcaeDecodeOptions(const IcaeAdapter& adapter, GenerateOptions base) {
  base.lora = nullptr;
  base.logits_limit = adapter.config.base_vocab_size;
  return base;
}

}  // namespace icae
