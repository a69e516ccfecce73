// Llama/Mistral decoder-only transformer on LibTorch: one forward pass over a batch of
// sequences of different lengths, packed (no padding), each with its own KV cache.
//
//   x = embed(ids) or given embeddings                        [N, hidden], N = sum of n_i
//   per layer: x += Wo · attn(rope(Wq·rmsnorm(x)), rope(Wk·…), Wv·…)   (LoRA on q/v optional)
//              x += Wdown · (silu(Wgate·rmsnorm(x)) ⊙ Wup·rmsnorm(x))
//   out = rmsnorm(x[selected rows]) → hidden states, or · lm_headᵀ → logits
//
// Linear layers run on all N rows at once; attention runs per sequence against its cache.
#ifndef ICAE_COMMON_MODEL_TRANSFORMER_H_
#define ICAE_COMMON_MODEL_TRANSFORMER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/model/config.h"
#include "common/model/cpu_gemv.h"
#include "common/model/kv_cache.h"
#include "common/model/lora.h"

namespace icae {

// The weights the decoder-side products (decode steps, short prefill chunks) multiply by.
// kBf16: the weights as loaded, in the compute dtype (bf16 when serving). kInt8: an int8 copy
// (QuantizedInt8Weight, 32-value blocks with one scale, as llama.cpp's q8_0) of every product
// of the layers and the LM head, made once at load: about half the bytes per decode step. CPU
// only. The encoder never uses it (ForwardOptions::full_precision_weights): slots stay what
// the bf16 model makes.
enum class WeightsFormat { kBf16, kInt8 };

// "bf16" or "int8"; anything else is INVALID_ARGUMENT naming both.
absl::StatusOr<WeightsFormat> ParseWeightsFormat(const std::string& name);
const char* WeightsFormatName(WeightsFormat f);

struct ModelLoadOptions {
  // Compute dtype: kFloat32 or kBFloat16 on CPU; kFloat16/kBFloat16 on CUDA.
  torch::Dtype dtype = torch::kFloat32;
  torch::Device device = torch::kCPU;
  // On CPU, tensors stored in the compute dtype are read-only views of the file's mapping
  // (no copy: loads in the time it takes to check them, pages shared with every process that
  // maps the same file); q/k/v and gate/up are stacked by a view where the file holds them
  // back to back in that order, and stay separate products otherwise (never copied).
  // false: owned, stacked, writable tensors (training).
  bool weights_in_place = true;
  // Few-row products (decode steps, short prefill chunks) run on repacked copies of the bf16
  // weights (PackedBf16Weight: 2.3x faster at 8 rows on short rows), a private copy as large
  // as the weights. Models whose packable weights exceed this many bytes are not packed (the
  // unpacked kernel serves them); 0 never packs.
  int64_t max_packed_weight_bytes = kDefaultMaxPackedWeightBytes;
  static constexpr int64_t kDefaultMaxPackedWeightBytes = int64_t{1} << 30;
  WeightsFormat weights = WeightsFormat::kBf16;
};

// One sequence's new input for a forward step.
struct SequenceInput {
  torch::Tensor ids;         // [n] int64 token ids, or
  torch::Tensor embeds;      // [n, hidden] input embeddings (used when defined)
  KVCache* cache = nullptr;  // appended to; nullptr = attend only within this input
  // Optional explicit RoPE positions [n] int64; default cache length + 0..n-1.
  torch::Tensor positions;
  // How many trailing positions to return: 1 = last (decode), -1 = all.
  int64_t num_outputs = 1;
};

enum class ForwardOutput { kLogits, kHidden };

struct ForwardOptions {
  const LoraWeights* lora = nullptr;  // adapter enabled iff non-null
  ForwardOutput output = ForwardOutput::kLogits;
  // true: the weights as loaded even where the model holds int8 copies (WeightsFormat::kInt8):
  // the encoder (Compressor) sets it, so slots do not depend on the decoder's weight format.
  bool full_precision_weights = false;
};

struct ModelWeights {
  torch::Tensor embed_tokens;  // [vocab, hidden]
  torch::Tensor lm_head;       // [vocab, hidden] (same tensor as embed_tokens when tied)
  torch::Tensor final_norm;    // [hidden]
  struct Layer {
    torch::Tensor attn_norm, mlp_norm;  // [hidden]
    // Either stacked (one product per step) or separate (views of a mapped file):
    torch::Tensor wqkv;                 // [q_width + 2 kv_width, hidden] (q, k, v stacked), or
    torch::Tensor wq, wk, wv;           // when wqkv is undefined
    torch::Tensor wo;                   // [hidden, q_width]
    torch::Tensor w_gate_up;            // [2 intermediate, hidden] (gate, up stacked), or
    torch::Tensor w_gate, w_up;         // when w_gate_up is undefined
    torch::Tensor w_down;               // [hidden, intermediate]
  };
  std::vector<Layer> layers;
};

class Transformer {
 public:
  // Loads <dir>/config.json and the safetensors weights (HF names): views of the mapping where
  // options allow, otherwise converted once to options.dtype. Missing tensors, shapes that
  // differ from the config, and NaN/Inf values are errors.
  static absl::StatusOr<std::unique_ptr<Transformer>> Load(const std::string& model_dir,
                                                           const ModelLoadOptions& options = {});
  // Builds a model around given weights (tests, benchmarks, training from scratch); packs
  // them for few-row products within max_packed_weight_bytes (see ModelLoadOptions).
  // With WeightsFormat::kInt8 it also quantizes every product's weight (on CPU).
  Transformer(ModelConfig config, ModelWeights weights,
              int64_t max_packed_weight_bytes = ModelLoadOptions::kDefaultMaxPackedWeightBytes,
              WeightsFormat weights_format = WeightsFormat::kBf16);

  // Runs one step for every sequence. Returns the selected rows of every sequence, packed in
  // order: [sum of outputs, vocab] float32 logits or [sum of outputs, hidden] hidden states in
  // the compute dtype. Appends to each cache. Ids must lie in [0, vocab) (checked).
  // Thread-safe for distinct caches (weights are read-only). Callers doing inference should
  // hold a c10::InferenceMode guard; training calls it with autograd on and cache = nullptr.
  absl::StatusOr<torch::Tensor> Forward(std::vector<SequenceInput>& batch,
                                        const ForwardOptions& options = {}) const;

  // Input embeddings of ids [n] → [n, hidden].
  absl::StatusOr<torch::Tensor> Embed(const torch::Tensor& ids) const;

  // A new empty cache for one sequence.
  KVCache NewCache(int64_t initial_capacity = 0) const;

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // Writable weights (training); drops the packed copies, which would go stale.
  ModelWeights& mutable_weights() {
    packed_ = PackedWeights();
    int8_ = Int8Weights();
    return weights_;
  }
  // Bytes of the packed copies of the weights (0: none).
  int64_t packed_weight_bytes() const { return packed_.bytes; }
  // kInt8 when decode steps use int8 copies of the weights; their bytes (0: none).
  WeightsFormat weights_format() const {
    return int8_.layers.empty() ? WeightsFormat::kBf16 : WeightsFormat::kInt8;
  }
  int64_t int8_weight_bytes() const { return int8_.bytes; }
  torch::Dtype dtype() const { return weights_.embed_tokens.scalar_type(); }
  torch::Device device() const { return weights_.embed_tokens.device(); }
  int64_t NumParameters() const;
  // Files the weights came from (empty when built in memory).
  const std::vector<std::string>& weight_files() const { return weight_files_; }

  // Splits the stacked tensors back to HF names (for saving).
  std::vector<std::pair<std::string, torch::Tensor>> NamedWeights() const;

 private:
  torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w) const;
  // Packed copies of every product's weight, all or none (one kernel per model: a row's
  // result never depends on which other products were packed).
  struct PackedWeights {
    struct Layer {
      PackedBf16Weight wqkv, wq, wk, wv, wo, w_gate_up, w_gate, w_up, w_down;
    };
    std::vector<Layer> layers;
    PackedBf16Weight lm_head;
    int64_t bytes = 0;
  };
  static PackedWeights Pack(const ModelWeights& w, int64_t max_bytes);
  // int8 copies of every product's weight (WeightsFormat::kInt8), all or none.
  struct Int8Weights {
    struct Layer {
      QuantizedInt8Weight wqkv, wq, wk, wv, wo, w_gate_up, w_gate, w_up, w_down;
    };
    std::vector<Layer> layers;
    QuantizedInt8Weight lm_head;
    int64_t bytes = 0;
  };
  static Int8Weights Quantize(const ModelWeights& w);
  ModelConfig config_;
  ModelWeights weights_;
  PackedWeights packed_;
  Int8Weights int8_;
  torch::Tensor inv_freq_;  // [head_dim / 2] float32
  std::vector<std::string> weight_files_;
};

// Parses a dtype name: "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16".
absl::StatusOr<torch::Dtype> ParseDtype(const std::string& name);

// Random weights with the given config (N(0, 0.02), norms 1) for benchmarks and tests. On the
// CPU the draw is fixed by the seed; on another device the tensors are drawn there (a 7B model
// drawn on the CPU would take minutes), from that device's generator.
ModelWeights RandomWeights(const ModelConfig& config, torch::Dtype dtype, uint64_t seed,
                           torch::Device device = torch::kCPU);

// The same weights with q/k/v and gate/up as separate products (row views of the stacked
// tensors, no copy): the layout of a model loaded in place. For benchmarks and tests.
ModelWeights SeparateProjections(const ModelWeights& weights, const ModelConfig& config);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_TRANSFORMER_H_
