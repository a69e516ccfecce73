// Matrix-vector products for decode steps on CPU. A one-row bf16 product is memory-bound:
// LibTorch 1.13's oneDNN path streams weights at ~22 GB/s here, well under the machine's
// bandwidth, and it is most of a decode step. This kernel reads each weight once (widened to
// float32 for AVX-512 FMAs with up to 8 input rows), split over threads by output rows. A
// row's result does not depend on how many rows are multiplied with it.
#ifndef ICAE_COMMON_MODEL_CPU_GEMV_H_
#define ICAE_COMMON_MODEL_CPU_GEMV_H_

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>

namespace icae {

// True when this CPU (and build) can run the bf16 GEMV kernel.
bool CpuBf16GemvAvailable();

// True when this CPU (and build) multiplies packed bf16 weights (PackedBf16Weight): with the
// AVX-512 kernels, or else with the AVX2 + FMA one, whose bits equal the AVX-512 FMA variant's.
bool CpuPackedBf16Available();

// True when this CPU (and build) has the AVX2 + FMA kernels (cpu_gemv_avx2.cc), which serve
// where CpuBf16GemvAvailable() is false.
bool CpuAvx2KernelsAvailable();

// A bf16 weight [n, k] repacked for few-row products: panels of 32 output rows, each stored by
// input pair (per pair, the panel's 64 weights in two cache lines, for vdpbf16ps). Same size
// as the weight (n rounded up to 32, k to even); a private copy beside it, so models pack only within a byte
// budget (Transformer: ModelLoadOptions::max_packed_weight_bytes).
class PackedBf16Weight {
 public:
  PackedBf16Weight() = default;
  // The packed copy of w, or an empty object where the kernel does not apply (not bf16, not
  // 2-D, not on CPU, or !CpuPackedBf16Available()).
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

// True when this CPU (and build) runs the int8 kernel with AVX-512 VNNI; the portable kernel
// serves int8 products elsewhere.
bool CpuInt8GemvAvxAvailable();

// A weight [n, k] quantized once to int8 for decode steps (weight-only, as llama.cpp's q8_0):
// per output row, blocks of 32 consecutive inputs share one scale d = max|w| / 127 (stored as
// bf16, rounded up so that |w| / d <= 127), q = round(w / d). Dequantized w ≈ q·d, within d/2.
// 1.06 bytes per weight instead of bf16's 2: a decode step, which streams every weight once,
// reads about half the bytes.
//
// Layout (for the AVX-512 VNNI kernel, whose vpdpbusd multiplies 4 consecutive unsigned bytes
// by 4 signed ones into one 32-bit lane): panels of 32 output rows; per panel, per 32-input
// block, 8 groups of [32 outputs × 4 inputs] bytes holding q + 128 (unsigned), then the 32
// outputs' bf16 scales: 1088 bytes per panel and block. k is padded to 32 (q = 0), n to 32
// (q = 0, scale 0).
class QuantizedInt8Weight {
 public:
  static constexpr int64_t kBlock = 32;
  static constexpr int64_t kPanel = 32;
  static constexpr int64_t kBlockBytes = kPanel * kBlock + kPanel * 2;

  QuantizedInt8Weight() = default;
  // The quantized copy of w (2-D, float32/bf16/fp16, finite, on CPU), or an empty object where
  // it does not apply (other shapes or devices).
  static QuantizedInt8Weight Quantize(const torch::Tensor& w);
  // Bytes Quantize(w) would take (0 where it would give an empty object).
  static int64_t QuantizedBytes(const torch::Tensor& w);
  bool defined() const { return data_.defined(); }
  int64_t rows() const { return n_; }
  int64_t cols() const { return k_; }
  int64_t bytes() const { return defined() ? data_.numel() : 0; }
  const uint8_t* data() const { return data_.data_ptr<uint8_t>(); }
  // q·d as float32 [n, k] (tests: the weight the kernels multiply by).
  torch::Tensor Dequantize() const;

 private:
  torch::Tensor data_;  // uint8 [ceil(n / 32) · ceil(k / 32) · kBlockBytes]
  int64_t n_ = 0, k_ = 0;
};

// The int8 kernels, for tests: y [m, n] float32 (row stride n) = x · dequantized(w)ᵀ with each
// row of x [m, k] (float32) quantized per 32-block to int8 the same way (d = max|x| / 127,
// float32, round to nearest). Per output and block the integer dot product is exact and adds
// into a float32 sum as fma(float(dot), d_w · d_x, sum), blocks in order, so the reference and
// the AVX-512 kernel give the same bits, and a row's result depends on no other row.
// `avx` = false: the portable kernel; true: the AVX-512 VNNI one (CpuInt8GemvAvxAvailable()).
// Any m (rows go through the kernels in chunks of kMaxPackedRows).
void Int8GemmForTest(const QuantizedInt8Weight& w, const float* x, int64_t m, float* y, bool avx);

// Items per task for at::parallel_for over a decode step's kernels, so that each task carries
// at least ~30 µs of work, estimated from an item's multiply-adds (at ~25 per ns, one core's
// AVX-512 FMA rate here) or bytes read (at ~10 per ns), whichever takes longer. Forking
// LibTorch's OpenMP team and joining it costs ~10-20 µs with the wake-ups, more than a small
// model's product or a few sequences' attention: with a grain of 1 every one of them woke the
// other core, which the service's gRPC and writer threads needed (default model, 8 streams
// through the services: 2.2x one stream on 2 threads, 2.8-3.0x on 1). Large products still
// split across every core.
int64_t ParallelGrain(int64_t macs_per_item, int64_t bytes_per_item);

// f(b, e) over [0, n) in chunks of `chunk` items that the threads of one parallel region claim
// in turn from a shared counter, instead of at::parallel_for's fixed halves: a thread that
// arrives late or runs slower (a decode step's weight stream shares the memory bus) takes
// fewer chunks rather than leaving the others waiting at the join. With fewer than two tasks'
// worth of items (grain, as ParallelGrain gives it) it runs on the calling thread. Which thread
// computes an item never changes its result in our kernels.
template <typename F>
void ParallelForDynamic(int64_t n, int64_t grain, int64_t chunk, const F& f) {
  const int64_t tasks = std::min<int64_t>(at::get_num_threads(), (n + grain - 1) / std::max<int64_t>(1, grain));
  if (tasks <= 1 || at::in_parallel_region()) {
    if (n > 0) f(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    for (int64_t b = next.fetch_add(chunk); b < n; b = next.fetch_add(chunk)) f(b, std::min(n, b + chunk));
  });
}

// The instruction of the packed kernel: vdpbf16ps (kDot), FMAs on widened weights (kFma), or
// AMX tdpbf16ps on tiles of up to 16 rows (kAmx, where CpuAmxAvailable()). kAuto (the
// default): $ICAE_PACKED_BF16_KERNEL (dot | fma | amx) where set and usable, else AMX where
// available, else whichever of dot and FMA this core runs faster, timed once per process.
// Each gives a row the same bits whatever the batch; they differ from each other in rounding
// only. One process uses one (PackedBf16KernelInUse), so streams never mix them.
enum class PackedBf16Kernel { kAuto, kDot, kFma, kAmx };
void SetPackedBf16Kernel(PackedBf16Kernel kernel);
// The kernel products run on now (never kAuto); a forced kAmx without AMX runs kAuto's choice.
PackedBf16Kernel PackedBf16KernelInUse();
const char* PackedBf16KernelName(PackedBf16Kernel kernel);
// True when this CPU has AMX-BF16, the build has the kernel, and the OS let this process use
// the tile registers (asked once per process).
bool CpuAmxAvailable();
// Rows up to which a packed weight's AVX-512 kernel serves a product (decode steps of up to
// this many sequences, prefill chunks of up to this many positions); more rows go to
// torch::linear. The AVX2 kernel takes any number.
inline constexpr int64_t kMaxPackedRows = 32;

// y = x · wᵀ for few-row x ([m, k], m <= 8; more rows go to torch::linear) and w [n, k], both bf16, contiguous, on CPU.
// With `packed` (w's PackedBf16Weight) and m <= kMaxPackedRows (any m with the AVX2 kernel),
// the packed kernel computes it.
// Falls back to PlainLinear when no kernel applies (other dtypes/devices, many rows,
// autograd recording).
// With `q8` (w's QuantizedInt8Weight) and float32 or bf16 x, the int8 kernel computes it
// instead (output in x's dtype): any number of rows where CpuInt8GemvAvxAvailable(), else up
// to kMaxPackedRows (more rows use w itself).
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const PackedBf16Weight* packed = nullptr,
                     const QuantizedInt8Weight* q8 = nullptr);

// Without AVX-512 BF16, LibTorch multiplies bf16 matrices in a reference loop (a 144-token
// prefill of the default model ran at 180 tokens/s on an AVX2 EPYC): true for bf16 CPU
// tensors there outside autograd, where products go through float32 instead (exact operands,
// as every bf16 is a float32; float32 sums, rounded once to bf16).
bool UpcastBf16Products(const torch::Tensor& x);

// torch::linear(x, w), in float32 where UpcastBf16Products(x): products no kernel takes
// (LoRA's low-rank factors, weights beyond the packing budget).
torch::Tensor PlainLinear(const torch::Tensor& x, const torch::Tensor& w);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_CPU_GEMV_H_
