// Matrix-vector products for decode steps on CPU. A one-row bf16 product is memory-bound:
// LibTorch 1.13's oneDNN path streams weights at ~22 GB/s here, well under the machine's
// bandwidth, and it is most of a decode step. This kernel reads each weight once (widened to
// float32 for AVX-512 FMAs with up to 8 input rows), split over threads by output rows. A
// row's result does not depend on how many rows are multiplied with it.
#ifndef ICAE_COMMON_MODEL_CPU_GEMV_H_
#define ICAE_COMMON_MODEL_CPU_GEMV_H_

#include <torch/torch.h>

namespace icae {

// True when this CPU (and build) can run the bf16 GEMV kernel.
bool CpuBf16GemvAvailable();

// A bf16 weight [n, k] repacked for few-row products: panels of 32 output rows, each stored
// k-major (per input element, the panel's 32 weights in one cache line). Same size as the
// weight (n rounded up to 32); a private copy beside it, so models pack only within a byte
// budget (Transformer: ModelLoadOptions::max_packed_weight_bytes).
class PackedBf16Weight {
 public:
  PackedBf16Weight() = default;
  // The packed copy of w, or an empty object where the kernel does not apply (not bf16, not
  // 2-D, not on CPU, or this CPU lacks AVX-512 BF16).
  static PackedBf16Weight Pack(const torch::Tensor& w);
  // Bytes the packed copy of w would take (0 where Pack would give an empty object).
  static int64_t PackedBytes(const torch::Tensor& w);
  bool defined() const { return data_.defined(); }
  int64_t rows() const { return n_; }
  int64_t cols() const { return k_; }
  int64_t bytes() const { return defined() ? data_.numel() * 2 : 0; }
  const uint16_t* data() const;

 private:
  torch::Tensor data_;  // [ceil(n / 32) · k · 32] bf16
  int64_t n_ = 0, k_ = 0;
};

// Rows up to which a packed weight's kernel serves a product (decode steps of up to this many
// sequences, prefill chunks of up to this many positions); more rows go to torch::linear.
inline constexpr int64_t kMaxPackedRows = 32;

// y = x · wᵀ for few-row x ([m, k], m <= 8; more rows go to torch::linear) and w [n, k], both bf16, contiguous, on CPU.
// With `packed` (w's PackedBf16Weight) and m <= kMaxPackedRows, the packed kernel computes it.
// Falls back to torch::linear when no kernel applies (other dtypes/devices, many rows,
// autograd recording).
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const PackedBf16Weight* packed = nullptr);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_CPU_GEMV_H_
