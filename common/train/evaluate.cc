#include "common/train/evaluate.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/icae/compressor.h"
#include "common/icae/prompt.h"
#include "common/model/generate.h"
#include "common/train/metrics.h"
#include "common/util/status_macros.h"

namespace icae::train {
namespace {

// Logits [next.size(), V] (float32) of `next` after an input prefix, teacher-forced in one
// forward pass: the prefix's last position predicts next[0], next[k] predicts next[k + 1].
absl::StatusOr<torch::Tensor> NextLogits(const Transformer& model, const SequenceInput& prefix,
                                         const std::vector<int64_t>& next) {
  SequenceInput in = prefix;
  std::vector<int64_t> feed(next.begin(), next.end() - 1);
  if (!feed.empty()) {
    ASSIGN_OR_RETURN(torch::Tensor fe, model.Embed(torch::tensor(feed, torch::kInt64)));
    in.embeds = torch::cat({prefix.embeds, fe.to(prefix.embeds.scalar_type())}, 0);
    if (prefix.positions.defined()) in.positions = ExtendPositions(prefix.positions, fe.size(0));
  }
  in.num_outputs = static_cast<int64_t>(next.size());
  std::vector<SequenceInput> batch{in};
  ASSIGN_OR_RETURN(torch::Tensor logits, model.Forward(batch));
  return logits.to(torch::kFloat32);
}

// Summed NLL of `next` after an input prefix.
absl::StatusOr<double> NextNll(const Transformer& model, const SequenceInput& prefix,
                               const std::vector<int64_t>& next) {
  ASSIGN_OR_RETURN(torch::Tensor logits, NextLogits(model, prefix, next));
  auto nll = torch::nn::functional::cross_entropy(
      logits, torch::tensor(next, torch::kInt64).to(logits.device()),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  return nll.item<double>();
}

// The decoder input of [slots][AE] for one context (ids with BOS).
absl::StatusOr<SequenceInput> AutoencodeInput(const Transformer& model, const IcaeAdapter& adapter,
                                              const std::vector<int64_t>& context) {
  Compressor compressor(model, adapter);
  ASSIGN_OR_RETURN(auto c, compressor.Compress({context}));
  return SlotDecoderInput(model, adapter, PromptMode::kAutoencode, c, {});
}

absl::StatusOr<std::vector<int64_t>> GreedyFrom(const Transformer& model, const IcaeAdapter& adapter,
                                                const SequenceInput& prefix, int64_t max_new_tokens) {
  GenerateOptions go;
  go.max_new_tokens = max_new_tokens;
  ASSIGN_OR_RETURN(GenerateResult r, Generate(model, prefix, IcaeDecodeOptions(adapter, go)));
  return r.ids;
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> Reconstruct(const Transformer& model, const IcaeAdapter& adapter,
                                                 const std::vector<int64_t>& context,
                                                 int64_t max_new_tokens) {
  ASSIGN_OR_RETURN(SequenceInput in, AutoencodeInput(model, adapter, context));
  return GreedyFrom(model, adapter, in, max_new_tokens);
}

absl::StatusOr<AutoencodeResult> EvalAutoencode(const Transformer& model, const IcaeAdapter& adapter,
                                                const std::vector<int32_t>& stream, int64_t length,
                                                int64_t count) {
  if (length < 2 || count < 1) return absl::InvalidArgumentError("length >= 2 and count >= 1 needed");
  if (static_cast<int64_t>(stream.size()) < length) {
    return absl::InvalidArgumentError(absl::StrCat("held-out text has fewer than ", length, " tokens"));
  }
  AutoencodeResult r;
  r.length = length;
  r.passages = count;
  const Segmentation seg = SegmentContext(length, adapter.config.mem_size,
                                          adapter.config.mean_compression_rate);
  r.slots = seg.num_segments * adapter.config.mem_size;
  for (int64_t k = 0; k < count; ++k) {
    auto text = SpacedWindow(stream, length - 1, k, count);
    std::vector<int64_t> ctx{model.config().bos_token_id};
    ctx.insert(ctx.end(), text.begin(), text.end());
    ASSIGN_OR_RETURN(SequenceInput in, AutoencodeInput(model, adapter, ctx));
    ASSIGN_OR_RETURN(auto hyp, GreedyFrom(model, adapter, in, length + 8));
    r.bleu4 += Bleu4(hyp, text);
    r.exact_match += hyp == text ? 1.0 : 0.0;
    r.token_accuracy += TokenAccuracy(hyp, text);
    size_t prefix = 0;
    while (prefix < hyp.size() && prefix < text.size() && hyp[prefix] == text[prefix]) ++prefix;
    r.greedy_correct_prefix += static_cast<double>(prefix);
    // Argmax over the base vocabulary, as greedy decoding takes it.
    ASSIGN_OR_RETURN(torch::Tensor logits, NextLogits(model, in, text));
    auto best = logits.narrow(1, 0, adapter.config.base_vocab_size).argmax(1);
    auto truth = torch::tensor(text, torch::kInt64).to(best.device());
    r.teacher_forced_accuracy += best.eq(truth).to(torch::kFloat64).mean().item<double>();
  }
  r.bleu4 /= count;
  r.exact_match /= count;
  r.token_accuracy /= count;
  r.teacher_forced_accuracy /= count;
  r.greedy_correct_prefix /= count;
  return r;
}

absl::StatusOr<ContinuationResult> EvalContinuation(const Transformer& model,
                                                    const IcaeAdapter& adapter,
                                                    const std::vector<int32_t>& stream,
                                                    int64_t context_length, int64_t next_tokens,
                                                    int64_t count) {
  if (context_length < 2 || next_tokens < 1 || count < 1) {
    return absl::InvalidArgumentError("context length >= 2, next tokens >= 1, windows >= 1 needed");
  }
  if (static_cast<int64_t>(stream.size()) < context_length + next_tokens) {
    return absl::InvalidArgumentError("held-out text is too short for these windows");
  }
  ContinuationResult r;
  r.context_length = context_length;
  r.next_tokens = next_tokens;
  r.windows = count;
  const int64_t bos = model.config().bos_token_id;
  Compressor compressor(model, adapter);
  double full = 0, slots = 0, none = 0;
  for (int64_t k = 0; k < count; ++k) {
    auto w = SpacedWindow(stream, context_length - 1 + next_tokens, k, count);
    std::vector<int64_t> ctx{bos};
    ctx.insert(ctx.end(), w.begin(), w.begin() + (context_length - 1));
    std::vector<int64_t> next(w.begin() + (context_length - 1), w.end());
    SequenceInput full_in, none_in;
    ASSIGN_OR_RETURN(full_in.embeds, model.Embed(torch::tensor(ctx, torch::kInt64)));
    ASSIGN_OR_RETURN(double a, NextNll(model, full_in, next));
    ASSIGN_OR_RETURN(auto c, compressor.Compress({ctx}));
    ASSIGN_OR_RETURN(SequenceInput mem, SlotDecoderInput(model, adapter, PromptMode::kContinue, c, {}));
    ASSIGN_OR_RETURN(double b, NextNll(model, mem, next));
    ASSIGN_OR_RETURN(none_in.embeds, model.Embed(torch::tensor(std::vector<int64_t>{bos})));
    ASSIGN_OR_RETURN(double n, NextNll(model, none_in, next));
    full += a;
    slots += b;
    none += n;
  }
  const double tokens = static_cast<double>(count * next_tokens);
  r.ppl_full = std::exp(full / tokens);
  r.ppl_slots = std::exp(slots / tokens);
  r.ppl_none = std::exp(none / tokens);
  return r;
}

absl::StatusOr<InstructionResult> EvalInstructions(const Transformer& model,
                                                   const IcaeAdapter& adapter,
                                                   const Tokenizer& tokenizer,
                                                   const std::vector<InstructionExample>& examples,
                                                   int64_t max_new_tokens) {
  if (examples.empty()) return absl::InvalidArgumentError("no instruction examples");
  Compressor compressor(model, adapter);
  InstructionResult r;
  r.examples = static_cast<int64_t>(examples.size());
  std::map<std::string, int64_t> task_n;
  std::map<std::string, double> task_em;
  for (const auto& e : examples) {
    std::vector<int64_t> ctx;
    for (int32_t id : tokenizer.Encode(e.input, true)) ctx.push_back(id);
    if (static_cast<int64_t>(ctx.size()) > compressor.max_context_tokens()) {
      ctx.resize(compressor.max_context_tokens());
    }
    std::vector<int64_t> prompt;
    for (int32_t id : tokenizer.Encode(e.prompt, false)) prompt.push_back(id);
    ASSIGN_OR_RETURN(auto c, compressor.Compress({ctx}));
    ASSIGN_OR_RETURN(SequenceInput prefix, SlotDecoderInput(model, adapter, PromptMode::kInstruct, c, prompt));
    GenerateOptions go;
    go.max_new_tokens = max_new_tokens;
    ASSIGN_OR_RETURN(GenerateResult g, Generate(model, prefix, IcaeDecodeOptions(adapter, go)));
    std::vector<int32_t> ids(g.ids.begin(), g.ids.end());
    ASSIGN_OR_RETURN(std::string text, tokenizer.Decode(ids));
    const bool em = AnswerExactMatch(text, e.answer);
    r.exact_match += em;
    r.f1 += AnswerF1(text, e.answer);
    const std::string task = e.task.empty() ? "all" : e.task;
    ++task_n[task];
    task_em[task] += em;
    r.predictions.push_back(text);
  }
  r.exact_match /= r.examples;
  r.f1 /= r.examples;
  for (const auto& [t, n] : task_n) r.per_task_exact[t] = {n, task_em[t] / n};
  return r;
}

}  // namespace icae::train
