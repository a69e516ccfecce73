#include "common/model/cpu_gemv.h"

#include <ATen/Parallel.h>

namespace icae {

#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
// Defined in cpu_gemv_avx512.cc (compiled with -mavx512bf16).
void GemvBf16Avx512(const uint16_t* w, const uint16_t* x, int64_t ldx, int64_t m, float* y,
                    int64_t ldy, int64_t k, int64_t row_begin, int64_t row_end);
#endif

bool CpuBf16GemvAvailable() {
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
  static const bool ok = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
  return ok;
#else
  return false;
#endif
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w) {
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
  // Up to 2 rows (sequences in a decode step) share one pass over the weights. From 3 rows on
  // the dot products, not the weight stream, bound this kernel and oneDNN's GEMM is faster
  // (measured on the 246M bench layers: 1 row 11.5 vs 20.0 ms, 2 rows 15.1 vs 16.2 ms,
  // 3 rows 22.2 vs 16.1 ms, 8 rows 30.2 vs 17.6 ms).
  constexpr int64_t kMaxRows = 2;
  if (x.dim() == 2 && x.size(0) <= kMaxRows && x.scalar_type() == torch::kBFloat16 &&
      w.scalar_type() == torch::kBFloat16 && x.device().is_cpu() && w.device().is_cpu() &&
      w.dim() == 2 && w.is_contiguous() && x.size(1) == w.size(1) &&
      (c10::InferenceMode::is_enabled() || !torch::GradMode::is_enabled()) &&
      CpuBf16GemvAvailable()) {
    const int64_t m = x.size(0), n = w.size(0), k = w.size(1);
    auto xc = x.contiguous();
    auto y = torch::empty({m, n}, x.options());
    const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
    const auto* xp = reinterpret_cast<const uint16_t*>(xc.data_ptr<at::BFloat16>());
    at::BFloat16* yp = y.data_ptr<at::BFloat16>();
    at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
      // Accumulate a block in float32 on the stack, round once to bf16.
      constexpr int64_t kBlock = 128;
      float buf[kMaxRows * kBlock];
      for (int64_t s = b; s < e; s += kBlock) {
        const int64_t t = std::min<int64_t>(e, s + kBlock);
        GemvBf16Avx512(wp + s * k, xp, k, m, buf, kBlock, k, 0, t - s);
        for (int64_t j = 0; j < m; ++j) {
          for (int64_t i = s; i < t; ++i) yp[j * n + i] = at::BFloat16(buf[j * kBlock + i - s]);
        }
      }
    });
    return y;
  }
#endif
  return torch::linear(x, w);
}

}  // namespace icae
