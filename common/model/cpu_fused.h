// Fused CPU versions of the small per-layer operations of a decode step (RMSNorm, RoPE). In a
// one-token step each LibTorch op costs a few microseconds of dispatch and allocation, and a
// layer runs ~20 of them; these loops do the same arithmetic in one pass. Used for bf16
// inference on CPU only; float32 (conformance) and autograd keep the plain tensor ops.
#ifndef ICAE_COMMON_MODEL_CPU_FUSED_H_
#define ICAE_COMMON_MODEL_CPU_FUSED_H_

#include <torch/torch.h>

#include <vector>

#include "common/model/kv_cache.h"

namespace icae {

// True when the fused kernels apply to x (CPU, bf16, contiguous, no autograd).
bool UseFusedCpuOps(const torch::Tensor& x);

// w * bf16(x * rsqrt(mean(x²) + eps)), statistics in float32. x [N, H], w [H].
torch::Tensor FusedRmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps);

// RoPE's cos/sin for N positions, [N, head_dim / 2] float32 each (values rounded to bf16, as
// the tensor version's tables): angle = float(pos) * inv_freq. Built once per forward and
// shared by every layer's q and k.
struct RopeTable {
  std::vector<float> cos, sin;
};
RopeTable MakeRopeTable(const torch::Tensor& positions, const torch::Tensor& inv_freq);

// HF rotate_half RoPE on x [N, heads, head_dim] (any strides on N/heads as long as head_dim is
// contiguous), in place, with the table of x's N positions. Returns x.
torch::Tensor FusedRope(torch::Tensor x, const RopeTable& table);
torch::Tensor FusedRope(torch::Tensor x, const torch::Tensor& positions, const torch::Tensor& inv_freq);

}  // namespace icae



namespace icae {

// Single-query (decode) attention for a batch of sequences in one call: q [B, heads, head_dim]
// (head_dim contiguous); spans[s] is sequence s's cache as runs of bf16 positions in order
// (KVCache::Spans: e.g. a shared prefix, then the sequence's own positions), read in place
// with no tensor op per sequence. Query head h uses kv head h / (heads / kv_heads). Scores and
// softmax in float32, the weighted sum accumulated in float32 across the runs in order, so the
// result does not depend on how the positions are split. Returns [B, heads · head_dim] bf16,
// or an undefined tensor when the kernel does not apply (then use the tensor ops).
torch::Tensor FusedDecodeAttention(const torch::Tensor& q, const std::vector<std::vector<KVCache::Span>>& spans,
                                   int64_t kv_heads, double scale);

// Causal (and sliding-window) softmax of one sequence's prefill attention scores, in place:
// scores [B, rows, past + n] bf16 (q · kᵀ, unscaled), row r the query at cache position
// past + r % n, which sees keys max(0, that − window + 1) .. that (window 0: no window). Each
// row becomes bf16(softmax(scores · scale)) over the keys it sees, 0 elsewhere, in float32,
// with no bias tensor and no float32 copy of the scores. False (scores untouched) when the
// kernel does not apply: then use the tensor ops.
bool FusedMaskedSoftmax(torch::Tensor& scores, int64_t n, int64_t past, int64_t window, double scale);

// The MLP's activation: bf16(bf16(silu(g)) · u) for g, u [N, I] bf16 (rows at any stride, e.g.
// the two halves of the stacked gate/up product), in one pass, into a new contiguous [N, I].
// Undefined when the kernel does not apply (neither AVX-512 BF16 nor AVX2 + FMA, other
// dtypes): then use the tensor ops.
torch::Tensor FusedSiluMul(const torch::Tensor& g, const torch::Tensor& u);

}  // namespace icae
#endif  // ICAE_COMMON_MODEL_CPU_FUSED_H_
