#include "common/model/transformer.h"

#include <torch/version.h>

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/model/cpu_fused.h"
#include "common/model/cpu_gemv.h"
#include "common/model/safetensors.h"
#include "common/util/device.h"
#include "common/util/status_macros.h"

namespace icae {
namespace {

// LibTorch 2.x has one fused attention op (flash / memory-efficient kernels on CUDA); 1.13 does
// not, and there attention stays the plain tensor ops on every device.
#if TORCH_VERSION_MAJOR >= 2
constexpr bool kHaveFusedAttention = true;
#else
constexpr bool kHaveFusedAttention = false;
#endif

std::string LayerName(int64_t i, const std::string& rest) {
  return absl::StrCat("model.layers.", i, ".", rest);
}

// A layer with its stacked projections as row views (no copy) of the stacked tensors.
ModelWeights::Layer SeparateLayer(const ModelWeights::Layer& in, const ModelConfig& c) {
  ModelWeights::Layer L = in;
  if (L.wqkv.defined()) {
    L.wq = L.wqkv.narrow(0, 0, c.q_width());
    L.wk = L.wqkv.narrow(0, c.q_width(), c.kv_width());
    L.wv = L.wqkv.narrow(0, c.q_width() + c.kv_width(), c.kv_width());
    L.wqkv = torch::Tensor();
  }
  if (L.w_gate_up.defined()) {
    L.w_gate = L.w_gate_up.narrow(0, 0, c.intermediate_size);
    L.w_up = L.w_gate_up.narrow(0, c.intermediate_size, c.intermediate_size);
    L.w_gate_up = torch::Tensor();
  }
  return L;
}

// One [Σ rows, k] tensor over 2-D row blocks that lie back to back in memory (q, k, v written
// in that order into a mapped file): the stacked layout without a copy. It keeps the parts (and
// so the mapping) alive. Undefined when they are not adjacent.
torch::Tensor StackedView(const std::vector<torch::Tensor>& parts) {
  int64_t rows = 0;
  const char* next = nullptr;
  for (const auto& t : parts) {
    if (t.dim() != 2 || !t.is_contiguous() || t.size(1) != parts[0].size(1) ||
        t.scalar_type() != parts[0].scalar_type() || !t.device().is_cpu()) {
      return torch::Tensor();
    }
    const char* p = static_cast<const char*>(t.data_ptr());
    if (next != nullptr && p != next) return torch::Tensor();
    next = p + t.nbytes();
    rows += t.size(0);
  }
  std::vector<torch::Tensor> keep = parts;
  return torch::from_blob(parts[0].data_ptr(), {rows, parts[0].size(1)},
                          [keep](void*) mutable { keep.clear(); }, parts[0].options());
}

// Attention of one sequence through LibTorch's fused op, in the layout of the tensor-op path:
// qs [nkv, group·n, hd] (the query heads of kv head j are rows of batch j, so keys and values
// are read once per kv head, never repeated), K, V [nkv, kv_len, hd], bias [group·n, kv_len]
// additive (0 / -inf) or undefined (every key visible). Scale 1/sqrt(hd), as the plain path.
// Returns [nkv, group·n, hd].
torch::Tensor CudaAttention(const torch::Tensor& qs, const torch::Tensor& K, const torch::Tensor& V,
                            const torch::Tensor& bias) {
#if TORCH_VERSION_MAJOR >= 2
  auto q = qs.unsqueeze(0), k = K.unsqueeze(0), v = V.unsqueeze(0);
  torch::Tensor o = bias.defined() ? at::scaled_dot_product_attention(q, k, v, bias, 0.0, false)
                                   : at::scaled_dot_product_attention(q, k, v, {}, 0.0, false);
  return o.squeeze(0);
#else
  (void)K, (void)V, (void)bias;
  return qs;  // not reached: kHaveFusedAttention is false
#endif
}

torch::Tensor RotateHalf(const torch::Tensor& x) {
  int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

absl::StatusOr<torch::Dtype> ParseDtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "f32") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "f16") return torch::kFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "' (use float32, bfloat16 or float16)"));
}

absl::StatusOr<WeightsFormat> ParseWeightsFormat(const std::string& name) {
  if (name == "bf16") return WeightsFormat::kBf16;
  if (name == "int8") return WeightsFormat::kInt8;
  return absl::InvalidArgumentError(absl::StrCat("unknown weights format '", name, "' (use bf16 or int8)"));
}

const char* WeightsFormatName(WeightsFormat f) { return f == WeightsFormat::kInt8 ? "int8" : "bf16"; }

Transformer::Int8Weights Transformer::Quantize(const ModelWeights& w) {
  Int8Weights q;
  auto quantize = [&q](const torch::Tensor& t) {
    if (!t.defined()) return QuantizedInt8Weight();
    QuantizedInt8Weight r = QuantizedInt8Weight::Quantize(t);
    q.bytes += r.bytes();
    return r;
  };
  for (const auto& L : w.layers) {
    Int8Weights::Layer o;
    o.wqkv = quantize(L.wqkv), o.wq = quantize(L.wq), o.wk = quantize(L.wk), o.wv = quantize(L.wv);
    o.wo = quantize(L.wo), o.w_gate_up = quantize(L.w_gate_up), o.w_gate = quantize(L.w_gate);
    o.w_up = quantize(L.w_up), o.w_down = quantize(L.w_down);
    q.layers.push_back(std::move(o));
  }
  q.lm_head = quantize(w.lm_head);
  return q;
}

Transformer::PackedWeights Transformer::Pack(const ModelWeights& w, int64_t max_bytes) {
  PackedWeights p;
  if (max_bytes <= 0) return p;
  int64_t total = PackedBf16Weight::PackedBytes(w.lm_head);
  bool all = total > 0;
  for (const auto& L : w.layers) {
    for (const torch::Tensor* t : {&L.wqkv, &L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate_up, &L.w_gate, &L.w_up, &L.w_down}) {
      if (!t->defined()) continue;
      const int64_t b = PackedBf16Weight::PackedBytes(*t);
      all = all && b > 0;
      total += b;
    }
  }
  if (!all || total > max_bytes) return p;
  for (const auto& L : w.layers) {
    PackedWeights::Layer q;
    auto pack = [](const torch::Tensor& t) { return t.defined() ? PackedBf16Weight::Pack(t) : PackedBf16Weight(); };
    q.wqkv = pack(L.wqkv), q.wq = pack(L.wq), q.wk = pack(L.wk), q.wv = pack(L.wv), q.wo = pack(L.wo);
    q.w_gate_up = pack(L.w_gate_up), q.w_gate = pack(L.w_gate), q.w_up = pack(L.w_up), q.w_down = pack(L.w_down);
    p.layers.push_back(std::move(q));
  }
  p.lm_head = PackedBf16Weight::Pack(w.lm_head);
  p.bytes = total;
  return p;
}

Transformer::Transformer(ModelConfig config, ModelWeights weights, int64_t max_packed_weight_bytes,
                         WeightsFormat weights_format)
    : config_(std::move(config)), weights_(std::move(weights)) {
  packed_ = Pack(weights_, max_packed_weight_bytes);
  // The int8 kernels are CPU ones (Load refuses kInt8 on another device).
  if (weights_format == WeightsFormat::kInt8 && weights_.embed_tokens.device().is_cpu()) {
    int8_ = Quantize(weights_);
  }
  // inv_freq as HF computes it: 1 / theta^(arange(0, d, 2) / d), in float32.
  auto exponent = torch::arange(0, config_.head_dim, 2, torch::kInt64).to(torch::kFloat32) /
                  static_cast<double>(config_.head_dim);
  inv_freq_ = (1.0 / torch::pow(c10::Scalar(config_.rope_theta), exponent)).to(torch::kFloat32)
                  .to(weights_.embed_tokens.device());
}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::Load(const std::string& model_dir,
                                                               const ModelLoadOptions& options) {
  // A device this process cannot use is an error, not a LibTorch exception halfway through.
  RETURN_IF_ERROR(CheckDeviceAvailable(options.device));
  if (options.weights == WeightsFormat::kInt8 && !options.device.is_cpu()) {
    return absl::InvalidArgumentError("int8 weights run on the CPU only (use --weights bf16 on a GPU)");
  }
  ASSIGN_OR_RETURN(ModelConfig c, LoadModelConfig(model_dir));
  ASSIGN_OR_RETURN(auto src, WeightSource::Open(model_dir));
  const torch::Dtype dt = options.dtype;
  const bool in_place = options.weights_in_place && options.device.is_cpu();
  auto load = [&](const std::string& name,
                  std::vector<int64_t> shape) -> absl::StatusOr<torch::Tensor> {
    ASSIGN_OR_RETURN(torch::Tensor t, src->Load(name, dt, shape, in_place));
    if (FirstNonFiniteElement(t) >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(model_dir, ": tensor '", name,
                                                     "' contains NaN or Inf"));
    }
    return t.to(options.device);
  };
  // Mapped tensors stay where they are; stacking them would copy them.
  auto mapped = [&](std::initializer_list<std::string> names) {
    if (!in_place) return false;
    for (const auto& n : names) {
      auto info = src->Info(n);
      auto stored = info.ok() ? SafetensorsDtype(info->dtype) : absl::StatusOr<torch::Dtype>(info.status());
      if (!stored.ok() || *stored != dt) return false;
    }
    return true;
  };
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  ModelWeights w;
  ASSIGN_OR_RETURN(w.embed_tokens, load("model.embed_tokens.weight", {V, H}));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;
  } else {
    ASSIGN_OR_RETURN(w.lm_head, load("lm_head.weight", {V, H}));
  }
  ASSIGN_OR_RETURN(w.final_norm, load("model.norm.weight", {H}));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    ModelWeights::Layer L;
    ASSIGN_OR_RETURN(L.attn_norm, load(LayerName(i, "input_layernorm.weight"), {H}));
    ASSIGN_OR_RETURN(L.mlp_norm, load(LayerName(i, "post_attention_layernorm.weight"), {H}));
    const std::string q = LayerName(i, "self_attn.q_proj.weight"), k = LayerName(i, "self_attn.k_proj.weight"),
                      v = LayerName(i, "self_attn.v_proj.weight"), g = LayerName(i, "mlp.gate_proj.weight"),
                      u = LayerName(i, "mlp.up_proj.weight");
    ASSIGN_OR_RETURN(L.wq, load(q, {c.q_width(), H}));
    ASSIGN_OR_RETURN(L.wk, load(k, {c.kv_width(), H}));
    ASSIGN_OR_RETURN(L.wv, load(v, {c.kv_width(), H}));
    ASSIGN_OR_RETURN(L.wo, load(LayerName(i, "self_attn.o_proj.weight"), {H, c.q_width()}));
    ASSIGN_OR_RETURN(L.w_gate, load(g, {I, H}));
    ASSIGN_OR_RETURN(L.w_up, load(u, {I, H}));
    ASSIGN_OR_RETURN(L.w_down, load(LayerName(i, "mlp.down_proj.weight"), {H, I}));
    // Stacked (one product instead of three, or two): owned copies are concatenated, mapped
    // tensors that lie back to back in the file (written in q, k, v / gate, up order) are
    // viewed as one; other mapped tensors stay separate products rather than be copied.
    L.wqkv = mapped({q, k, v}) ? StackedView({L.wq, L.wk, L.wv}) : torch::cat({L.wq, L.wk, L.wv}, 0).contiguous();
    if (L.wqkv.defined()) L.wq = L.wk = L.wv = torch::Tensor();
    L.w_gate_up = mapped({g, u}) ? StackedView({L.w_gate, L.w_up}) : torch::cat({L.w_gate, L.w_up}, 0).contiguous();
    if (L.w_gate_up.defined()) L.w_gate = L.w_up = torch::Tensor();
    w.layers.push_back(std::move(L));
  }
  auto model = std::make_unique<Transformer>(c, std::move(w), options.max_packed_weight_bytes, options.weights);
  model->weight_files_ = src->Files();
  return model;
}

int64_t Transformer::NumParameters() const {
  int64_t n = weights_.embed_tokens.numel() + weights_.final_norm.numel();
  if (!config_.tie_word_embeddings) n += weights_.lm_head.numel();
  for (const auto& L : weights_.layers) {
    for (const torch::Tensor* t : {&L.attn_norm, &L.mlp_norm, &L.wqkv, &L.wq, &L.wk, &L.wv, &L.wo,
                                   &L.w_gate_up, &L.w_gate, &L.w_up, &L.w_down}) {
      if (t->defined()) n += t->numel();
    }
  }
  return n;
}

KVCache Transformer::NewCache(int64_t initial_capacity) const {
  return KVCache(config_, weights_.embed_tokens.options(), initial_capacity);
}

torch::Tensor Transformer::RmsNorm(const torch::Tensor& x, const torch::Tensor& w) const {
  if (UseFusedCpuOps(x) && x.dim() == 2) return FusedRmsNorm(x, w, config_.rms_norm_eps);
  // As HF: statistics in float32, then back to the compute dtype before the weight.
  auto xf = x.to(torch::kFloat32);
  auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
  return w * (xf * torch::rsqrt(var + config_.rms_norm_eps)).to(x.scalar_type());
}

absl::StatusOr<torch::Tensor> Transformer::Embed(const torch::Tensor& ids) const {
  if (ids.dim() != 1) return absl::InvalidArgumentError("token ids must be a 1-D tensor");
  if (ids.numel() > 0) {
    auto lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", lo < 0 ? lo : hi, " is outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
  }
  return weights_.embed_tokens.index_select(0, ids.to(torch::kInt64).to(device()));
}

absl::StatusOr<torch::Tensor> Transformer::Forward(std::vector<SequenceInput>& batch,
                                                   const ForwardOptions& options) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, hd = c.head_dim, nh = c.num_attention_heads,
                nkv = c.num_key_value_heads, group = nh / nkv;
  if (batch.empty()) return absl::InvalidArgumentError("empty batch");
  if (options.lora != nullptr &&
      static_cast<int64_t>(options.lora->layers.size()) != c.num_hidden_layers) {
    return absl::InvalidArgumentError("LoRA weights do not match the number of layers");
  }
  // 1. Embeddings and positions, packed. Ids of consecutive sequences are embedded by one
  // gather and positions are collected in one vector: a decode step of many sequences pays
  // tensor ops per step, not per sequence.
  std::vector<torch::Tensor> xs;
  std::vector<int64_t> lens, offsets, pos_v, pending_ids;
  auto flush_ids = [&]() -> absl::Status {
    if (pending_ids.empty()) return absl::OkStatus();
    for (int64_t id : pending_ids) {
      if (id < 0 || id >= c.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")"));
      }
    }
    xs.push_back(weights_.embed_tokens.index_select(0, torch::tensor(pending_ids, torch::kInt64).to(device())));
    pending_ids.clear();
    return absl::OkStatus();
  };
  // Appends a 1-D integer tensor's values (CPU int64 read in place).
  auto append_ints = [](const torch::Tensor& t, std::vector<int64_t>& out) {
    const torch::Tensor v = t.device().is_cpu() && t.scalar_type() == torch::kInt64 && t.is_contiguous()
                                ? t
                                : t.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t* p = v.data_ptr<int64_t>();
    out.insert(out.end(), p, p + v.numel());
  };
  int64_t total = 0;
  for (auto& s : batch) {
    int64_t n = 0;
    if (s.embeds.defined()) {
      if (s.embeds.dim() != 2 || s.embeds.size(1) != H) {
        return absl::InvalidArgumentError(absl::StrCat("input embeddings must be [n, ", H, "]"));
      }
      RETURN_IF_ERROR(flush_ids());
      xs.push_back(s.embeds.to(device(), dtype()));
      n = s.embeds.size(0);
    } else if (s.ids.defined()) {
      if (s.ids.dim() != 1) return absl::InvalidArgumentError("token ids must be a 1-D tensor");
      append_ints(s.ids, pending_ids);
      n = s.ids.size(0);
    } else {
      return absl::InvalidArgumentError("a sequence has neither ids nor embeddings");
    }
    if (n == 0) return absl::InvalidArgumentError("a sequence has no new tokens");
    const int64_t first_pos = s.cache ? s.cache->next_position() : 0;
    if (s.positions.defined()) {
      if (s.positions.dim() != 1 || s.positions.size(0) != n) {
        return absl::InvalidArgumentError("positions must be [n] for n new tokens");
      }
      append_ints(s.positions, pos_v);
    } else {
      for (int64_t i = 0; i < n; ++i) pos_v.push_back(first_pos + i);
    }
    if (s.cache) s.cache->Reserve(n);
    offsets.push_back(total);
    lens.push_back(n);
    total += n;
  }
  RETURN_IF_ERROR(flush_ids());
  torch::Tensor x = xs.size() == 1 ? xs[0] : torch::cat(xs, 0);  // [N, H]
  torch::Tensor pos = torch::tensor(pos_v, torch::kInt64).to(device());

  // Kernel choice, once per call: the hand-written CPU kernels only ever see CPU tensors
  // (UseFusedCpuOps checks the device), CUDA attention goes through the fused op.
  const bool fused = UseFusedCpuOps(x);
  const bool fused_softmax = fused && CpuBf16GemvAvailable();
  // bf16 attention products in float32 where LibTorch has no fast bf16 path (UpcastBf16Products).
  const bool upcast = UpcastBf16Products(x);
  const torch::Dtype product_dtype = upcast ? torch::kFloat32 : dtype();
  const bool cuda_attention = kHaveFusedAttention && x.device().is_cuda();

  // Causal (and sliding-window) attention bias per sequence, shared by every layer:
  // [group·n, kv_len] of 0 / -inf in the products' dtype, added inside the score product.
  // Query i (cache index past + i) sees keys 0..past + i. The fused CPU softmax masks by
  // itself: no bias then.
  std::vector<torch::Tensor> bias(batch.size());
  for (size_t s = 0; s < batch.size() && !fused_softmax; ++s) {
    const int64_t n = lens[s];
    const int64_t past = batch[s].cache ? batch[s].cache->length() : 0;
    const int64_t kv_len = past + n;
    const bool windowed = c.sliding_window > 0 && kv_len > c.sliding_window;
    if (n == 1 && !windowed) continue;
    auto qi = torch::arange(past, past + n, pos.options()).unsqueeze(1);
    auto kj = torch::arange(0, kv_len, pos.options()).unsqueeze(0);
    auto masked = kj > qi;
    if (windowed) masked = masked.logical_or(qi - kj >= c.sliding_window);
    auto b = torch::zeros({n, kv_len}, x.options().dtype(product_dtype))
                 .masked_fill(masked, -std::numeric_limits<float>::infinity());
    bias[s] = b.unsqueeze(0).expand({group, n, kv_len}).reshape({group * n, kv_len});
  }

  // 2. RoPE tables for these positions: angle = float32(pos) * inv_freq, as HF.
  torch::Tensor cos, sin;
  RopeTable rope;
  if (fused) {
    rope = MakeRopeTable(pos, inv_freq_);
  } else {
    auto angle = pos.to(torch::kFloat32).unsqueeze(1) * inv_freq_.unsqueeze(0);  // [N, hd/2]
    auto emb = torch::cat({angle, angle}, -1);
    cos = emb.cos().to(dtype()).unsqueeze(1);  // [N, 1, hd]
    sin = emb.sin().to(dtype()).unsqueeze(1);
  }
  const double scale = std::sqrt(static_cast<double>(hd));
  const bool use_int8 = !int8_.layers.empty() && !options.full_precision_weights;
  // Decode rows: one new token after a cache (within the window). They take the fused kernel
  // whatever else the step holds, so a decoding sequence's token has the same bits whether or
  // not another sequence prefills beside it; through the tensor ops, the 7 decode rows of a
  // step that also prefilled a 24-token prompt cost 6x the whole step without it.
  std::vector<char> single_cached(batch.size());
  std::vector<int64_t> single_rows;  // their rows in x, in batch order
  for (size_t s = 0; s < batch.size(); ++s) {
    single_cached[s] = lens[s] == 1 && batch[s].cache != nullptr &&
                       (c.sliding_window == 0 || batch[s].cache->length() < c.sliding_window);
    if (single_cached[s]) single_rows.push_back(offsets[s]);
  }
  const int64_t n_single = static_cast<int64_t>(single_rows.size());
  const bool all_single_cached = n_single == static_cast<int64_t>(batch.size());
  const torch::Tensor single_index = fused && n_single > 0 && !all_single_cached
                                         ? torch::tensor(single_rows, torch::kInt64).to(device())
                                         : torch::Tensor();

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const auto& L = weights_.layers[l];
    static const PackedWeights::Layer kUnpacked;
    const auto& P = packed_.layers.empty() ? kUnpacked : packed_.layers[l];
    static const Int8Weights::Layer kNoInt8;
    const auto& Q = use_int8 ? int8_.layers[l] : kNoInt8;
    auto h = RmsNorm(x, L.attn_norm);
    torch::Tensor q, k, v;
    if (L.wqkv.defined()) {
      auto qkv = Linear(h, L.wqkv, &P.wqkv, &Q.wqkv);  // [N, q + 2 kv]
      q = qkv.narrow(1, 0, c.q_width());
      k = qkv.narrow(1, c.q_width(), c.kv_width());
      v = qkv.narrow(1, c.q_width() + c.kv_width(), c.kv_width());
    } else {
      q = Linear(h, L.wq, &P.wq, &Q.wq);
      k = Linear(h, L.wk, &P.wk, &Q.wk);
      v = Linear(h, L.wv, &P.wv, &Q.wv);
    }
    if (options.lora != nullptr) {
      const LoraLayer& lo = options.lora->layers[l];
      q = ApplyLora(q, h, lo.q_a, lo.q_b, options.lora->scaling);
      v = ApplyLora(v, h, lo.v_a, lo.v_b, options.lora->scaling);
    }
    auto q3 = q.reshape({total, nh, hd});
    auto k3 = k.reshape({total, nkv, hd});
    if (fused) {
      // In place: q and k are views of this step's own qkv buffer (or LoRA's fresh sum).
      q3 = FusedRope(q3.stride(2) == 1 ? q3 : q3.contiguous(), rope);
      k3 = FusedRope(k3.stride(2) == 1 ? k3 : k3.contiguous(), rope);
    } else {
      q3 = q3 * cos + RotateHalf(q3) * sin;
      k3 = k3 * cos + RotateHalf(k3) * sin;
    }
    auto v3 = v.reshape({total, nkv, hd});

    // Decode rows take the fused kernel: one call for all of them instead of ~20 tensor ops
    // per sequence. fused_attn: their outputs [n_single, nh·hd] in batch order.
    torch::Tensor fused_attn;
    if (fused && n_single > 0) {
      // A cache extending a shared prefix is read in place, run by run; raw pointers, not
      // tensor ops: per sequence and layer those cost more than the attention itself.
      std::vector<std::vector<KVCache::Span>> spans(n_single);
      if (k3.stride(2) != 1) k3 = k3.contiguous();
      if (v3.stride(2) != 1) v3 = v3.contiguous();
      const char* kb = static_cast<const char*>(k3.data_ptr());
      const char* vb = static_cast<const char*>(v3.data_ptr());
      const int64_t es = static_cast<int64_t>(k3.element_size());
      for (size_t s = 0, i = 0; s < batch.size(); ++s) {
        if (!single_cached[s]) continue;
        batch[s].cache->WriteOne(l, kb + offsets[s] * k3.stride(0) * es, k3.stride(1),
                                 vb + offsets[s] * v3.stride(0) * es, v3.stride(1));
        batch[s].cache->Spans(l, 1, &spans[i++]);
      }
      fused_attn = FusedDecodeAttention(all_single_cached ? q3 : q3.index_select(0, single_index), spans, nkv, scale);
    }
    std::vector<torch::Tensor> outs;  // per sequence the tensor ops took
    outs.reserve(batch.size());
    for (size_t s = 0; s < batch.size(); ++s) {
      if (fused_attn.defined() && single_cached[s]) continue;
      const int64_t n = lens[s], off = offsets[s];
      // [n, nkv, hd] → [nkv, n, hd]
      auto ks = k3.narrow(0, off, n).transpose(0, 1);
      auto vs = v3.narrow(0, off, n).transpose(0, 1);
      torch::Tensor K, Vv;
      int64_t past = 0;
      if (batch[s].cache != nullptr) {
        past = batch[s].cache->length();
        // A decode row's key and value are in the cache already (WriteOne above).
        if (!(fused && single_cached[s])) batch[s].cache->Write(l, ks, vs);
        K = batch[s].cache->Keys(l, n);
        Vv = batch[s].cache->Values(l, n);
      } else {
        K = ks;
        Vv = vs;
      }
      const int64_t kv_len = past + n;
      // Query head h uses kv head h / group: [n, nh, hd] → [nkv, group·n, hd].
      auto qs = q3.narrow(0, off, n).reshape({n, nkv, group, hd}).permute({1, 2, 0, 3})
                    .reshape({nkv, group * n, hd});
      if (cuda_attention) {
        outs.push_back(CudaAttention(qs, K, Vv, bias[s]).reshape({nkv, group, n, hd})
                           .permute({2, 0, 1, 3}).reshape({n, nh * hd}));
        continue;
      }
      if (fused_softmax) {
        auto probs = torch::bmm(qs, K.transpose(1, 2));  // [nkv, group·n, kv_len], masked in place
        if (!FusedMaskedSoftmax(probs, n, past, c.sliding_window, 1.0 / scale)) {
          return absl::InternalError(absl::StrCat("fused softmax refused scores of ", kv_len, " keys for ", n,
                                                  " queries after ", past));
        }
        outs.push_back(torch::bmm(probs, Vv).reshape({nkv, group, n, hd}).permute({2, 0, 1, 3}).reshape({n, nh * hd}));
        continue;
      }
      torch::Tensor scores;  // [nkv, group·n, kv_len]
      if (upcast) {
        qs = qs.to(product_dtype);
        K = K.to(product_dtype);
        Vv = Vv.to(product_dtype);
      }
      if (bias[s].defined()) {
        scores = torch::baddbmm(bias[s].unsqueeze(0).expand({nkv, group * n, kv_len}), qs,
                                K.transpose(1, 2), /*beta=*/1.0, /*alpha=*/1.0 / scale);
      } else {
        scores = torch::bmm(qs, K.transpose(1, 2)) / scale;
      }
      auto probs = torch::softmax(scores, -1, torch::kFloat32).to(product_dtype);
      auto o = torch::bmm(probs, Vv).to(dtype());  // [nkv, group·n, hd]
      outs.push_back(o.reshape({nkv, group, n, hd}).permute({2, 0, 1, 3}).reshape({n, nh * hd}));
    }
    torch::Tensor attn;
    if (outs.empty()) {
      attn = fused_attn;
    } else if (!fused_attn.defined()) {
      attn = outs.size() == 1 ? outs[0] : torch::cat(outs, 0);
    } else {  // decode rows and the others, back in batch order
      std::vector<torch::Tensor> parts;
      parts.reserve(batch.size());
      for (size_t s = 0, i = 0, o = 0; s < batch.size(); ++s) {
        parts.push_back(single_cached[s] ? fused_attn.narrow(0, static_cast<int64_t>(i++), 1) : outs[o++]);
      }
      attn = torch::cat(parts, 0);
    }
    x = x + Linear(attn, L.wo, &P.wo, &Q.wo);

    auto h2 = RmsNorm(x, L.mlp_norm);
    torch::Tensor g, u;
    if (L.w_gate_up.defined()) {
      auto gu = Linear(h2, L.w_gate_up, &P.w_gate_up, &Q.w_gate_up);
      g = gu.narrow(1, 0, c.intermediate_size);
      u = gu.narrow(1, c.intermediate_size, c.intermediate_size);
    } else {
      g = Linear(h2, L.w_gate, &P.w_gate, &Q.w_gate);
      u = Linear(h2, L.w_up, &P.w_up, &Q.w_up);
    }
    torch::Tensor act = fused ? FusedSiluMul(g, u) : torch::Tensor();
    if (!act.defined()) act = torch::silu(g) * u;
    x = x + Linear(act, L.w_down, &P.w_down, &Q.w_down);
  }
  for (size_t s = 0; s < batch.size(); ++s) {
    if (batch[s].cache != nullptr) batch[s].cache->Advance(lens[s], pos_v[offsets[s] + lens[s] - 1] + 1);
  }

  // 3. Selected rows → final norm → hidden or logits.
  std::vector<torch::Tensor> sel;
  for (size_t s = 0; s < batch.size(); ++s) {
    int64_t k = batch[s].num_outputs < 0 ? lens[s] : std::min(batch[s].num_outputs, lens[s]);
    sel.push_back(x.narrow(0, offsets[s] + lens[s] - k, k));
  }
  auto y = sel.size() == 1 ? sel[0] : torch::cat(sel, 0);
  auto hn = RmsNorm(y, weights_.final_norm);
  if (options.output == ForwardOutput::kHidden) return hn;
  return Linear(hn, weights_.lm_head, &packed_.lm_head, use_int8 ? &int8_.lm_head : nullptr).to(torch::kFloat32);
}

std::vector<std::pair<std::string, torch::Tensor>> Transformer::NamedWeights() const {
  const ModelConfig& c = config_;
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", weights_.embed_tokens);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const auto& L = weights_.layers[i];
    out.emplace_back(LayerName(i, "input_layernorm.weight"), L.attn_norm);
    out.emplace_back(LayerName(i, "post_attention_layernorm.weight"), L.mlp_norm);
    const ModelWeights::Layer S = L.wqkv.defined() || L.w_gate_up.defined() ? SeparateLayer(L, c) : L;
    out.emplace_back(LayerName(i, "self_attn.q_proj.weight"), S.wq);
    out.emplace_back(LayerName(i, "self_attn.k_proj.weight"), S.wk);
    out.emplace_back(LayerName(i, "self_attn.v_proj.weight"), S.wv);
    out.emplace_back(LayerName(i, "self_attn.o_proj.weight"), L.wo);
    out.emplace_back(LayerName(i, "mlp.gate_proj.weight"), S.w_gate);
    out.emplace_back(LayerName(i, "mlp.up_proj.weight"), S.w_up);
    out.emplace_back(LayerName(i, "mlp.down_proj.weight"), L.w_down);
  }
  out.emplace_back("model.norm.weight", weights_.final_norm);
  if (!c.tie_word_embeddings) out.emplace_back("lm_head.weight", weights_.lm_head);
  return out;
}

ModelWeights RandomWeights(const ModelConfig& c, torch::Dtype dtype, uint64_t seed, torch::Device device) {
  torch::manual_seed(seed);  // seeds the CUDA generators too
  const auto on = torch::TensorOptions().device(device);
  auto randn = [&](std::vector<int64_t> shape) {
    return (torch::randn(shape, on) * 0.02).to(dtype).contiguous();
  };
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  ModelWeights w;
  w.embed_tokens = randn({c.vocab_size, H});
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : randn({c.vocab_size, H});
  w.final_norm = torch::ones({H}, on).to(dtype);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    ModelWeights::Layer L;
    L.attn_norm = torch::ones({H}, on).to(dtype);
    L.mlp_norm = torch::ones({H}, on).to(dtype);
    L.wqkv = randn({c.q_width() + 2 * c.kv_width(), H});
    L.wo = randn({H, c.q_width()});
    L.w_gate_up = randn({2 * I, H});
    L.w_down = randn({H, I});
    w.layers.push_back(std::move(L));
  }
  return w;
}

ModelWeights SeparateProjections(const ModelWeights& weights, const ModelConfig& config) {
  ModelWeights out = weights;
  for (auto& L : out.layers) L = SeparateLayer(L, config);
  return out;
}

}  // namespace icae
