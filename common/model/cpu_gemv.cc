#include "common/model/cpu_gemv.h"

#include <ATen/Parallel.h>

#include <cstring>
#include <vector>

namespace icae {

#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
// Defined in cpu_gemv_avx512.cc (compiled with -mavx512bf16).
void GemvBf16Avx512(const uint16_t* w, const float* x, int64_t ldx, int64_t m, float* y,
                    int64_t ldy, int64_t k, int64_t row_begin, int64_t row_end);
void RoundToBf16Avx512(const float* src, uint16_t* dst, int64_t n);

namespace {

// The kernel's input layout: each row as float32, per 32-element block its 16 even elements
// then its 16 odd ones, zero-padded to ld = k rounded up to 32.
void GemvInputLayout(const uint16_t* x, int64_t m, int64_t k, int64_t ld, float* out) {
  for (int64_t j = 0; j < m; ++j) {
    const uint16_t* xj = x + j * k;
    float* oj = out + j * ld;
    for (int64_t b = 0; b < ld; b += 32) {
      for (int64_t t = 0; t < 16; ++t) {
        const int64_t e = b + 2 * t, o = e + 1;
        const uint32_t ev = e < k ? uint32_t{xj[e]} << 16 : 0, ov = o < k ? uint32_t{xj[o]} << 16 : 0;
        std::memcpy(oj + b + t, &ev, 4);
        std::memcpy(oj + b + 16 + t, &ov, 4);
      }
    }
  }
}

}  // namespace
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
  // Up to 8 rows (sequences in a decode step) share one pass over the weights; the kernel is
  // FMA-bound only past that. Its arithmetic per row does not depend on the number of rows.
  constexpr int64_t kMaxRows = 8;
  if (x.dim() == 2 && x.size(0) <= kMaxRows && x.scalar_type() == torch::kBFloat16 &&
      w.scalar_type() == torch::kBFloat16 && x.device().is_cpu() && w.device().is_cpu() &&
      w.dim() == 2 && w.is_contiguous() && x.size(1) == w.size(1) &&
      (c10::InferenceMode::is_enabled() || !torch::GradMode::is_enabled()) &&
      CpuBf16GemvAvailable()) {
    const int64_t m = x.size(0), n = w.size(0), k = w.size(1);
    const int64_t ldx = (k + 31) / 32 * 32;
    auto xc = x.contiguous();
    // The inputs on a cache-line boundary (split loads cost ~30% at 8 rows); no allocation
    // per call once grown.
    thread_local std::vector<float> xbuf;
    if (static_cast<int64_t>(xbuf.size()) < m * ldx + 16) xbuf.resize(m * ldx + 16);
    float* xf = xbuf.data() + (16 - reinterpret_cast<uintptr_t>(xbuf.data()) / 4 % 16) % 16;
    GemvInputLayout(reinterpret_cast<const uint16_t*>(xc.data_ptr<at::BFloat16>()), m, k, ldx, xf);
    auto y = torch::empty({m, n}, x.options());
    const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
    const float* xp = xf;
    auto* yp = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
    at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
      // Accumulate a block in float32 on the stack, round once to bf16.
      constexpr int64_t kBlock = 128;
      float buf[kMaxRows * kBlock];
      for (int64_t s = b; s < e; s += kBlock) {
        const int64_t t = std::min<int64_t>(e, s + kBlock);
        GemvBf16Avx512(wp + s * k, xp, ldx, m, buf, kBlock, k, 0, t - s);
        for (int64_t j = 0; j < m; ++j) RoundToBf16Avx512(buf + j * kBlock, yp + j * n + s, t - s);
      }
    });
    return y;
  }
#endif
  return torch::linear(x, w);
}

}  // namespace icae
