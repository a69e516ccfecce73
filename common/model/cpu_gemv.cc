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
void PackedGemmBf16Avx512(const uint16_t* w, int64_t n, int64_t k, const float* x, int64_t ldx,
                          int64_t m, uint16_t* y, int64_t ldy, int64_t p0, int64_t p1);

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

namespace {

bool PackableWeight(const torch::Tensor& w) {
  return w.defined() && w.dim() == 2 && w.scalar_type() == torch::kBFloat16 && w.device().is_cpu() &&
         w.size(0) > 0 && w.size(1) > 0 && CpuBf16GemvAvailable();
}

// Rows and inputs the kernels can take now: few bf16 rows on CPU, no autograd recording.
[[maybe_unused]] bool KernelInput(const torch::Tensor& x, const torch::Tensor& w, int64_t max_rows) {
  return x.dim() == 2 && x.size(0) >= 1 && x.size(0) <= max_rows && x.scalar_type() == torch::kBFloat16 &&
         x.device().is_cpu() && x.size(1) == w.size(1) &&
         (c10::InferenceMode::is_enabled() || !torch::GradMode::is_enabled());
}

}  // namespace

int64_t PackedBf16Weight::PackedBytes(const torch::Tensor& w) {
  if (!PackableWeight(w)) return 0;
  return (w.size(0) + 31) / 32 * 32 * w.size(1) * 2;
}

PackedBf16Weight PackedBf16Weight::Pack(const torch::Tensor& w) {
  PackedBf16Weight p;
  if (!PackableWeight(w)) return p;
  const int64_t n = w.size(0), k = w.size(1), panels = (n + 31) / 32;
  auto wc = w.contiguous();
  const auto* src = reinterpret_cast<const uint16_t*>(wc.data_ptr<at::BFloat16>());
  p.data_ = torch::zeros({panels * k * 32}, torch::kBFloat16);
  auto* dst = reinterpret_cast<uint16_t*>(p.data_.data_ptr<at::BFloat16>());
  // Element t of a panel's k-th 32: output row t / 2 for even t, 16 + t / 2 for odd t.
  at::parallel_for(0, panels, 1, [&](int64_t b, int64_t e) {
    for (int64_t pi = b; pi < e; ++pi) {
      for (int64_t t = 0; t < 32; ++t) {
        const int64_t row = pi * 32 + (t % 2 == 0 ? t / 2 : 16 + t / 2);
        if (row >= n) continue;
        const uint16_t* s = src + row * k;
        uint16_t* d = dst + pi * k * 32 + t;
        for (int64_t i = 0; i < k; ++i) d[i * 32] = s[i];
      }
    }
  });
  p.n_ = n;
  p.k_ = k;
  return p;
}

const uint16_t* PackedBf16Weight::data() const {
  return reinterpret_cast<const uint16_t*>(data_.data_ptr<at::BFloat16>());
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const PackedBf16Weight* packed) {
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
  if (packed != nullptr && packed->defined() && packed->rows() == w.size(0) && KernelInput(x, w, kMaxPackedRows)) {
    const int64_t m = x.size(0), n = packed->rows(), k = packed->cols();
    auto xc = x.contiguous();
    // The inputs widened to float32 once (each is broadcast into n / 16 FMAs).
    thread_local std::vector<float> xbuf;
    if (static_cast<int64_t>(xbuf.size()) < m * k) xbuf.resize(m * k);
    const auto* xs = reinterpret_cast<const uint16_t*>(xc.data_ptr<at::BFloat16>());
    for (int64_t i = 0; i < m * k; ++i) {
      const uint32_t u = uint32_t{xs[i]} << 16;
      std::memcpy(&xbuf[i], &u, 4);
    }
    auto y = torch::empty({m, n}, x.options());
    auto* yp = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
    const float* xp = xbuf.data();
    const uint16_t* wp = packed->data();
    at::parallel_for(0, (n + 31) / 32, 1, [&](int64_t b, int64_t e) {
      PackedGemmBf16Avx512(wp, n, k, xp, k, m, yp, n, b, e);
    });
    return y;
  }
  // Up to 8 rows (sequences in a decode step) share one pass over the weights; the kernel is
  // FMA-bound only past that. Its arithmetic per row does not depend on the number of rows.
  constexpr int64_t kMaxRows = 8;
  if (PackableWeight(w) && w.is_contiguous() && KernelInput(x, w, kMaxRows)) {
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
