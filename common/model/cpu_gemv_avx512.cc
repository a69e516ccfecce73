// AVX-512 BF16 kernel of cpu_gemv.h. Built with -mavx512bf16; only called after a CPUID check.
#include <immintrin.h>

#include <cstdint>

namespace icae {

namespace {

inline __m512bh Load(const uint16_t* p, int64_t remaining) {
  if (remaining >= 32) return (__m512bh)_mm512_loadu_si512(p);
  __mmask32 mask = (remaining <= 0) ? 0 : ((1u << remaining) - 1u);
  return (__m512bh)_mm512_maskz_loadu_epi16(mask, p);
}

}  // namespace

void GemvBf16Avx512(const uint16_t* w, const uint16_t* x, float* y, int64_t n, int64_t k,
                    int64_t row_begin, int64_t row_end) {
  int64_t r = row_begin;
  // Four rows at a time share each load of x.
  for (; r + 4 <= row_end; r += 4) {
    const uint16_t* w0 = w + r * k;
    const uint16_t* w1 = w0 + k;
    const uint16_t* w2 = w1 + k;
    const uint16_t* w3 = w2 + k;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
           a3 = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 32) {
      const int64_t rem = k - i;
      __m512bh xv = Load(x + i, rem);
      a0 = _mm512_dpbf16_ps(a0, Load(w0 + i, rem), xv);
      a1 = _mm512_dpbf16_ps(a1, Load(w1 + i, rem), xv);
      a2 = _mm512_dpbf16_ps(a2, Load(w2 + i, rem), xv);
      a3 = _mm512_dpbf16_ps(a3, Load(w3 + i, rem), xv);
    }
    y[r] = _mm512_reduce_add_ps(a0);
    y[r + 1] = _mm512_reduce_add_ps(a1);
    y[r + 2] = _mm512_reduce_add_ps(a2);
    y[r + 3] = _mm512_reduce_add_ps(a3);
  }
  for (; r < row_end; ++r) {
    const uint16_t* w0 = w + r * k;
    __m512 a0 = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 32) {
      const int64_t rem = k - i;
      a0 = _mm512_dpbf16_ps(a0, Load(w0 + i, rem), Load(x + i, rem));
    }
    y[r] = _mm512_reduce_add_ps(a0);
  }
  (void)n;
}

}  // namespace icae
