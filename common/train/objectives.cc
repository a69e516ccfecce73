#include "common/train/objectives.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/icae/compressor.h"
#include "common/icae/prompt.h"
#include "common/util/status_macros.h"

namespace icae::train {
namespace {

// Cross-entropy summed over the rows of `logits` [N, V] against `labels` [N].
LossSum SummedCrossEntropy(const torch::Tensor& logits, const std::vector<int64_t>& labels) {
  LossSum out;
  out.sum = torch::nn::functional::cross_entropy(
      logits.to(torch::kFloat32), torch::tensor(labels, torch::kInt64).to(logits.device()),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  out.tokens = static_cast<int64_t>(labels.size());
  return out;
}

}  // namespace

absl::StatusOr<LossSum> LmLossSum(const Transformer& model,
                                  const std::vector<std::vector<int64_t>>& sequences) {
  std::vector<SequenceInput> batch;
  std::vector<int64_t> labels;
  for (const auto& s : sequences) {
    if (s.size() < 2) return absl::InvalidArgumentError("an LM sequence needs at least 2 ids");
    SequenceInput in;
    in.ids = torch::tensor(std::vector<int64_t>(s.begin(), s.end() - 1), torch::kInt64);
    in.num_outputs = -1;
    batch.push_back(in);
    labels.insert(labels.end(), s.begin() + 1, s.end());
  }
  ASSIGN_OR_RETURN(torch::Tensor logits, model.Forward(batch));  // [N, V] float32
  return SummedCrossEntropy(logits, labels);
}

namespace {

// Logits [Σ target sizes, V] of every example's targets, teacher-forced (the template, then
// target_input or the target less its last id); `labels` gets the targets in the same order.
absl::StatusOr<torch::Tensor> IcaeTargetLogits(const Transformer& model, const IcaeAdapter& adapter,
                                               const std::vector<IcaeExample>& examples,
                                               std::vector<int64_t>* labels) {
  if (examples.empty()) return absl::InvalidArgumentError("empty ICAE batch");
  CompressorOptions co;
  co.max_segments_per_batch = 1 << 20;  // one packed encoder pass
  Compressor compressor(model, adapter, co);
  std::vector<std::vector<int64_t>> contexts;
  for (const auto& e : examples) contexts.push_back(e.context);
  ASSIGN_OR_RETURN(auto compressed, compressor.Compress(contexts, /*with_lora=*/true));

  std::vector<SequenceInput> batch;
  for (size_t i = 0; i < examples.size(); ++i) {
    const IcaeExample& e = examples[i];
    if (e.target.empty()) return absl::InvalidArgumentError("an ICAE example has no target");
    PromptMode mode = e.objective == IcaeObjective::kAutoencode ? PromptMode::kAutoencode
                      : e.objective == IcaeObjective::kContinue ? PromptMode::kContinue
                                                                : PromptMode::kInstruct;
    ASSIGN_OR_RETURN(SequenceInput lead,
                     SlotDecoderInput(model, adapter, mode, {compressed[i]},
                                      mode == PromptMode::kInstruct ? e.prompt : std::vector<int64_t>{}));
    const torch::Tensor& prefix = lead.embeds;
    // Teacher forcing: the last prefix position predicts target[0], target[k] predicts
    // target[k + 1].
    SequenceInput in;
    if (!e.target_input.empty() && e.target_input.size() + 1 != e.target.size()) {
      return absl::InvalidArgumentError("an ICAE example's target_input must be its target less one id");
    }
    if (e.target.size() > 1) {
      const std::vector<int64_t> inputs =
          e.target_input.empty() ? std::vector<int64_t>(e.target.begin(), e.target.end() - 1)
                                 : e.target_input;
      ASSIGN_OR_RETURN(torch::Tensor tgt_emb,
                       model.Embed(torch::tensor(inputs, torch::kInt64)));
      in.embeds = torch::cat({prefix, tgt_emb.to(prefix.scalar_type())}, 0);
    } else {
      in.embeds = prefix;
    }
    in.positions = ExtendPositions(lead.positions, in.embeds.size(0) - prefix.size(0));
    in.num_outputs = static_cast<int64_t>(e.target.size());
    batch.push_back(in);
    labels->insert(labels->end(), e.target.begin(), e.target.end());
  }
  ForwardOptions fo;  // LoRA off on the decoder side
  return model.Forward(batch, fo);
}

}  // namespace

absl::StatusOr<LossSum> IcaeLossSum(const Transformer& model, const IcaeAdapter& adapter,
                                    const std::vector<IcaeExample>& examples) {
  std::vector<int64_t> labels;
  ASSIGN_OR_RETURN(torch::Tensor logits, IcaeTargetLogits(model, adapter, examples, &labels));
  // Only the base vocabulary is ever predicted (the model's vocabulary is the base one).
  return SummedCrossEntropy(logits, labels);
}

absl::StatusOr<std::vector<std::vector<int64_t>>> IcaePredictions(const Transformer& model,
                                                                  const IcaeAdapter& adapter,
                                                                  const std::vector<IcaeExample>& examples) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> labels;
  ASSIGN_OR_RETURN(torch::Tensor logits, IcaeTargetLogits(model, adapter, examples, &labels));
  const torch::Tensor best =
      logits.narrow(1, 0, adapter.config.base_vocab_size).argmax(1).to(torch::kCPU).contiguous();
  const int64_t* p = best.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> out;
  for (const auto& e : examples) {
    out.emplace_back(p, p + e.target.size());
    p += e.target.size();
  }
  return out;
}

IcaeAdapter NewIcaeAdapter(const Transformer& base, const IcaeConfig& config, uint64_t seed) {
  torch::manual_seed(seed);
  const ModelConfig& mc = base.config();
  const int64_t H = mc.hidden_size, r = config.lora_r;
  IcaeAdapter a;
  a.config = config;
  a.lora.scaling = config.lora_scaling();
  const double bound = 1.0 / std::sqrt(static_cast<double>(H));
  // Drawn on the CPU (the same adapter for a given seed whatever the device), then placed
  // beside the base model's weights.
  const torch::Device device = base.device();
  auto uniform = [&](int64_t rows) {
    return torch::empty({rows, H}, torch::kFloat32).uniform_(-bound, bound).to(device);
  };
  for (int64_t i = 0; i < mc.num_hidden_layers; ++i) {
    LoraLayer L;
    for (const auto& m : config.lora_target_modules) {
      if (m == "q_proj") {
        L.q_a = uniform(r);
        L.q_b = torch::zeros({mc.q_width(), r}, torch::TensorOptions(torch::kFloat32).device(device));
      } else if (m == "v_proj") {
        L.v_a = uniform(r);
        L.v_b = torch::zeros({mc.kv_width(), r}, torch::TensorOptions(torch::kFloat32).device(device));
      }
    }
    a.lora.layers.push_back(std::move(L));
  }
  torch::NoGradGuard ng;
  auto emb = base.weights().embed_tokens.to(torch::kFloat32);
  const double std = emb.std().item<double>();
  a.memory_embed = (torch::randn({config.mem_size + 3, H}, torch::kFloat32).to(device) * std) +
                   emb.mean(0, /*keepdim=*/true);
  return a;
}

NamedTensors AdapterParameters(IcaeAdapter& a) {
  NamedTensors out;
  for (size_t i = 0; i < a.lora.layers.size(); ++i) {
    auto& L = a.lora.layers[i];
    if (L.q_a.defined()) {
      out.emplace_back(LoraTensorName(i, "q_proj", 'A'), L.q_a);
      out.emplace_back(LoraTensorName(i, "q_proj", 'B'), L.q_b);
    }
    if (L.v_a.defined()) {
      out.emplace_back(LoraTensorName(i, "v_proj", 'A'), L.v_a);
      out.emplace_back(LoraTensorName(i, "v_proj", 'B'), L.v_b);
    }
  }
  out.emplace_back("memory_token_embed.weight", a.memory_embed);
  return out;
}

NamedTensors ModelParameters(Transformer& model) {
  ModelWeights& w = model.mutable_weights();
  NamedTensors out;
  out.emplace_back("embed_tokens", w.embed_tokens);
  if (!model.config().tie_word_embeddings) out.emplace_back("lm_head", w.lm_head);
  out.emplace_back("final_norm", w.final_norm);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    auto& L = w.layers[i];
    const std::string p = absl::StrCat("layers.", i, ".");
    // Stacked layout (a model loaded with weights_in_place = false, or built in memory); a
    // separate one names its parts.
    for (auto [name, t] : {std::pair<const char*, torch::Tensor*>{"attn_norm", &L.attn_norm},
                           {"mlp_norm", &L.mlp_norm}, {"wqkv", &L.wqkv}, {"wq", &L.wq},
                           {"wk", &L.wk}, {"wv", &L.wv}, {"wo", &L.wo}, {"w_gate_up", &L.w_gate_up},
                           {"w_gate", &L.w_gate}, {"w_up", &L.w_up}, {"w_down", &L.w_down}}) {
      if (t->defined()) out.emplace_back(p + name, *t);
    }
  }
  return out;
}

}  // namespace icae::train

namespace icae::train {

absl::Status SaveTrainedAdapter(const IcaeAdapter& a, const std::string& path) {
  IcaeAdapter copy;
  copy.config = a.config;
  copy.lora.scaling = a.lora.scaling;
  for (const auto& L : a.lora.layers) {
    LoraLayer d;
    if (L.q_a.defined()) d.q_a = L.q_a.detach(), d.q_b = L.q_b.detach();
    if (L.v_a.defined()) d.v_a = L.v_a.detach(), d.v_b = L.v_b.detach();
    copy.lora.layers.push_back(d);
  }
  copy.memory_embed = a.memory_embed.detach();
  return SaveIcaeAdapter(copy, path);
}

}  // namespace icae::train
