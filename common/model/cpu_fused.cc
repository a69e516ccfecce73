#include "common/model/cpu_fused.h"

#include <cmath>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>

#include "common/model/cpu_gemv.h"

namespace icae {

#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
// The AVX-512 row kernels (cpu_gemv_avx512.cc).
void RmsNormRowAvx512(const uint16_t* x, const uint16_t* w, int64_t h, float eps, uint16_t* y);
void SiluMulRowAvx512(const uint16_t* g, const uint16_t* u, int64_t n, uint16_t* y);
void DecodeAttentionRowAvx512(const uint16_t* q, const uint16_t* const* k, const uint16_t* const* v,
                              const int64_t* stride, const int64_t* len, int64_t segments, int64_t hd,
                              float scale, float* scratch, uint16_t* out);
void MaskedSoftmaxRowAvx512(uint16_t* row, int64_t begin, int64_t end, int64_t len, float scale,
                            float* scratch);
#endif
#if defined(ICAE_HAVE_AVX2_BF16_KERNEL)
// The AVX2 one (cpu_gemv_avx2.cc), where AVX-512 BF16 is missing.
void DecodeAttentionRowAvx2(const uint16_t* q, const uint16_t* const* k, const uint16_t* const* v,
                            const int64_t* stride, const int64_t* len, int64_t segments, int64_t hd,
                            float scale, float* scratch, uint16_t* out);
void SiluMulRowAvx2(const uint16_t* g, const uint16_t* u, int64_t n, uint16_t* y);
#endif

bool UseFusedCpuOps(const torch::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == torch::kBFloat16 &&
         (c10::InferenceMode::is_enabled() || !torch::GradMode::is_enabled());
}

torch::Tensor FusedRmsNorm(const torch::Tensor& x_in, const torch::Tensor& w_in, double eps) {
  auto x = x_in.contiguous();
  auto w = w_in.contiguous();
  const int64_t n = x.size(0), h = x.size(1);
  auto y = torch::empty_like(x);
  const auto* xp = x.data_ptr<at::BFloat16>();
  const auto* wp = w.data_ptr<at::BFloat16>();
  auto* yp = y.data_ptr<at::BFloat16>();
  // Rows are independent: the same bits on any number of threads.
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
  if (CpuBf16GemvAvailable()) {
    const auto* xs = reinterpret_cast<const uint16_t*>(xp);
    const auto* ws = reinterpret_cast<const uint16_t*>(wp);
    auto* ys = reinterpret_cast<uint16_t*>(yp);
    const float e32 = static_cast<float>(eps);
    at::parallel_for(0, n, ParallelGrain(2 * h, 4 * h), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) RmsNormRowAvx512(xs + r * h, ws, h, e32, ys + r * h);
    });
    return y;
  }
#endif
  at::parallel_for(0, n, ParallelGrain(2 * h, 4 * h), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const at::BFloat16* xr = xp + r * h;
      float ss = 0;
      for (int64_t i = 0; i < h; ++i) {
        float v = static_cast<float>(xr[i]);
        ss += v * v;
      }
      const float scale = 1.0f / std::sqrt(ss / static_cast<float>(h) + static_cast<float>(eps));
      at::BFloat16* yr = yp + r * h;
      for (int64_t i = 0; i < h; ++i) {
        at::BFloat16 normed(static_cast<float>(xr[i]) * scale);
        yr[i] = at::BFloat16(static_cast<float>(wp[i]) * static_cast<float>(normed));
      }
    }
  });
  return y;
}

RopeTable MakeRopeTable(const torch::Tensor& positions, const torch::Tensor& inv_freq) {
  auto pos = positions.to(torch::kInt64).contiguous();
  auto inv = inv_freq.to(torch::kFloat32).contiguous();
  const int64_t n = pos.numel(), half = inv.numel();
  RopeTable t;
  t.cos.resize(static_cast<size_t>(n * half));
  t.sin.resize(static_cast<size_t>(n * half));
  const int64_t* pp = pos.data_ptr<int64_t>();
  const float* ip = inv.data_ptr<float>();
  at::parallel_for(0, n, ParallelGrain(40 * half, 8 * half), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      for (int64_t j = 0; j < half; ++j) {
        const float a = static_cast<float>(pp[r]) * ip[j];
        // Rounded to bf16 as the tensor version does (cos/sin tables cast to the model dtype).
        t.cos[r * half + j] = static_cast<float>(at::BFloat16(std::cos(a)));
        t.sin[r * half + j] = static_cast<float>(at::BFloat16(std::sin(a)));
      }
    }
  });
  return t;
}

torch::Tensor FusedRope(torch::Tensor x, const RopeTable& table) {
  const int64_t n = x.size(0), heads = x.size(1), half = x.size(2) / 2;
  auto* base = x.data_ptr<at::BFloat16>();
  const int64_t s0 = x.stride(0), s1 = x.stride(1);
  at::parallel_for(0, n, ParallelGrain(4 * heads * half, 8 * heads * half), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* cs = table.cos.data() + t * half;
      const float* sn = table.sin.data() + t * half;
      for (int64_t hh = 0; hh < heads; ++hh) {
        at::BFloat16* v = base + t * s0 + hh * s1;
        for (int64_t j = 0; j < half; ++j) {
          const float a = static_cast<float>(v[j]), c = static_cast<float>(v[j + half]);
          v[j] = at::BFloat16(a * cs[j] - c * sn[j]);
          v[j + half] = at::BFloat16(c * cs[j] + a * sn[j]);
        }
      }
    }
  });
  return x;
}

torch::Tensor FusedRope(torch::Tensor x, const torch::Tensor& positions, const torch::Tensor& inv_freq) {
  return FusedRope(std::move(x), MakeRopeTable(positions, inv_freq));
}



torch::Tensor FusedDecodeAttention(const torch::Tensor& q, const std::vector<std::vector<KVCache::Span>>& spans,
                                   int64_t kv_heads, double scale) {
#if defined(ICAE_HAVE_AVX512BF16_KERNEL) || defined(ICAE_HAVE_AVX2_BF16_KERNEL)
  const int64_t B = q.size(0), heads = q.size(1), hd = q.size(2);
  // The AVX-512 kernel takes head_dim a multiple of 32, the AVX2 one a multiple of 8.
  const bool avx512 = CpuBf16GemvAvailable();
  if (!(avx512 || CpuAvx2KernelsAvailable()) || !UseFusedCpuOps(q) || hd % (avx512 ? 32 : 8) != 0 || hd > 256 ||
      q.stride(2) != 1 || static_cast<int64_t>(spans.size()) != B || kv_heads < 1 || heads % kv_heads != 0) {
    return torch::Tensor();
  }
  constexpr size_t kMaxSegments = 8;  // per sequence (in practice a shared prefix + its own part)
  int64_t max_len = 0;
  for (int64_t s = 0; s < B; ++s) {
    if (spans[s].empty() || spans[s].size() > kMaxSegments) return torch::Tensor();
    int64_t len = 0;
    for (const auto& sp : spans[s]) len += sp.length;
    max_len = std::max(max_len, len);
  }
  const int64_t group = heads / kv_heads;
  const float inv_scale = static_cast<float>(1.0 / scale);
  const auto* qp = reinterpret_cast<const uint16_t*>(q.data_ptr<at::BFloat16>());
  const int64_t q_stride0 = q.stride(0), q_stride1 = q.stride(1);
  auto out = torch::empty({B, heads * hd}, q.options());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  // One task per (sequence, head) row: scores 16 keys at a time, softmax and the values'
  // weighted sum in one pass over a scratch row (one fork/join per layer, no tensor ops).
  const int64_t grain = ParallelGrain(max_len * hd * 2, max_len * hd * 4);
  at::parallel_for(0, B * heads, grain, [&](int64_t b, int64_t e) {
    std::vector<float> scratch(static_cast<size_t>(max_len));
    const uint16_t* kps[kMaxSegments];
    const uint16_t* vps[kMaxSegments];
    int64_t strides[kMaxSegments], lens[kMaxSegments];
    for (int64_t r = b; r < e; ++r) {
      const int64_t s = r / heads, h = r % heads, kvh = h / group;
      const auto& S = spans[s];
      for (size_t i = 0; i < S.size(); ++i) {
        kps[i] = static_cast<const uint16_t*>(S[i].keys) + kvh * S[i].head_stride;
        vps[i] = static_cast<const uint16_t*>(S[i].values) + kvh * S[i].head_stride;
        strides[i] = S[i].row_stride;
        lens[i] = S[i].length;
      }
      const uint16_t* qr = qp + s * q_stride0 + h * q_stride1;
      uint16_t* orow = op + s * heads * hd + h * hd;
      const auto segments = static_cast<int64_t>(S.size());
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
      if (avx512) {
        DecodeAttentionRowAvx512(qr, kps, vps, strides, lens, segments, hd, inv_scale, scratch.data(), orow);
        continue;
      }
#endif
#if defined(ICAE_HAVE_AVX2_BF16_KERNEL)
      DecodeAttentionRowAvx2(qr, kps, vps, strides, lens, segments, hd, inv_scale, scratch.data(), orow);
#endif
    }
  });
  return out;
#else
  (void)q, (void)spans, (void)kv_heads, (void)scale;
  return torch::Tensor();
#endif
}

bool FusedMaskedSoftmax(torch::Tensor& scores, int64_t n, int64_t past, int64_t window, double scale) {
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
  if (!CpuBf16GemvAvailable() || !UseFusedCpuOps(scores) || scores.dim() != 3 || !scores.is_contiguous() ||
      n < 1 || past < 0 || window < 0 || scores.size(1) % n != 0 || scores.size(2) != past + n) {
    return false;
  }
  const int64_t rows = scores.size(0) * scores.size(1), len = scores.size(2);
  auto* base = reinterpret_cast<uint16_t*>(scores.data_ptr<at::BFloat16>());
  const float s = static_cast<float>(scale);
  at::parallel_for(0, rows, ParallelGrain(8 * len, 8 * len), [&](int64_t b, int64_t e) {
    std::vector<float> scratch(static_cast<size_t>(len));
    for (int64_t r = b; r < e; ++r) {
      const int64_t qi = past + r % n;  // this row's query position in the cache
      const int64_t begin = window > 0 ? std::max<int64_t>(0, qi - window + 1) : 0;
      MaskedSoftmaxRowAvx512(base + r * len, begin, qi + 1, len, s, scratch.data());
    }
  });
  return true;
#else
  (void)scores, (void)n, (void)past, (void)window, (void)scale;
  return false;
#endif
}

torch::Tensor FusedSiluMul(const torch::Tensor& g, const torch::Tensor& u) {
#if defined(ICAE_HAVE_AVX512BF16_KERNEL) || defined(ICAE_HAVE_AVX2_BF16_KERNEL)
  const bool avx512 = CpuBf16GemvAvailable();
  if (!(avx512 || CpuAvx2KernelsAvailable()) || !UseFusedCpuOps(g) || !UseFusedCpuOps(u) || g.dim() != 2 ||
      g.sizes() != u.sizes() || g.stride(1) != 1 || u.stride(1) != 1) {
    return torch::Tensor();
  }
  const int64_t n = g.size(0), h = g.size(1), gs = g.stride(0), us = u.stride(0);
  auto y = torch::empty({n, h}, g.options());
  const auto* gp = reinterpret_cast<const uint16_t*>(g.data_ptr<at::BFloat16>());
  const auto* up = reinterpret_cast<const uint16_t*>(u.data_ptr<at::BFloat16>());
  auto* yp = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  at::parallel_for(0, n, ParallelGrain(20 * h, 6 * h), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
      if (avx512) {
        SiluMulRowAvx512(gp + r * gs, up + r * us, h, yp + r * h);
        continue;
      }
#endif
#if defined(ICAE_HAVE_AVX2_BF16_KERNEL)
      SiluMulRowAvx2(gp + r * gs, up + r * us, h, yp + r * h);
#endif
    }
  });
  return y;
#else
  (void)g, (void)u;
  return torch::Tensor();
#endif
}

}  // namespace icae
