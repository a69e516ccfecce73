#include "common/model/generate.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace icae {

absl::StatusOr<GenerateResult> Generate(const Transformer& model, SequenceInput prefix,
                                        const GenerateOptions& options,
                                        const TokenCallback& on_token) {
  RETURN_IF_ERROR(ValidateSamplingParams(options.sampling));
  if (options.max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens must be >= 0");
  const ModelConfig& c = model.config();
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  GenerateResult result;
  result.prefix_tokens = prefix.embeds.defined() ? prefix.embeds.size(0)
                         : prefix.ids.defined()  ? prefix.ids.size(0) : 0;
  if (result.prefix_tokens == 0) return absl::InvalidArgumentError("empty prompt");
  if (result.prefix_tokens + options.max_new_tokens > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", result.prefix_tokens, " tokens) + max_new_tokens (", options.max_new_tokens,
        ") exceeds the model's context of ", c.max_position_embeddings));
  }
  KVCache cache = model.NewCache(result.prefix_tokens + options.max_new_tokens);
  prefix.cache = &cache;
  prefix.num_outputs = 1;
  ForwardOptions fo;
  fo.lora = options.lora;
  std::vector<SequenceInput> batch{prefix};
  const int64_t limit = options.logits_limit > 0 ? std::min(options.logits_limit, c.vocab_size)
                                                 : c.vocab_size;
  Sampler sampler(options.sampling);
  std::vector<int64_t> history;
  if (prefix.ids.defined()) {
    auto ids = prefix.ids.to(torch::kCPU).to(torch::kInt64).contiguous();
    history.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
  }
  StopDecision stop(c, StopCriteria{options.max_new_tokens, options.stop_token_ids,
                                    options.stop_sequences, options.ignore_eos});
  auto finish = [&] {
    std::string tail = stop.Finish(options.token_text ? options.token_text(-1) : "");
    if (options.on_text && !tail.empty()) options.on_text(tail);
    result.finish_reason = stop.finish_reason();
    result.stop_sequence = stop.stop_sequence();
    result.total_seconds = seconds();
    return result;
  };
  while (!stop.done()) {
    ASSIGN_OR_RETURN(torch::Tensor logits, model.Forward(batch, fo));
    if (result.ids.empty()) result.prefill_seconds = seconds();
    auto row = logits[0].to(torch::kCPU).contiguous();
    int64_t next = sampler.Next(row.data_ptr<float>(), limit, history);
    if (stop.EndsBefore(next)) break;
    result.ids.push_back(next);
    history.push_back(next);
    const std::string text = stop.Output(options.token_text ? options.token_text(next) : "");
    if (options.on_text && !text.empty()) options.on_text(text);
    if (on_token && !on_token(next)) {
      result.finish_reason = FinishReason::kCaller;
      result.total_seconds = seconds();
      return result;
    }
    SequenceInput in;
    in.ids = torch::tensor({next}, torch::kInt64);
    in.cache = &cache;
    batch[0] = in;
  }
  return finish();
}

}  // namespace icae
