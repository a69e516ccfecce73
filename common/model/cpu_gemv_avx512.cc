// AVX-512 BF16 kernel of cpu_gemv.h. Built with -mavx512bf16; only called after a CPUID check.
// One weight row at a time (a single sequential stream per thread prefetches best here: 4- or
// 8-row blocks measured 5-10% slower), two accumulators to shorten the dependency chain.
#include <immintrin.h>

#include <cstdint>

namespace icae {

void GemvBf16Avx512(const uint16_t* w, const uint16_t* x, float* y, int64_t k, int64_t row_begin,
                    int64_t row_end) {
  const int64_t full = k / 32 * 32;
  const int64_t tail = k - full;
  const __mmask32 tail_mask = tail == 0 ? 0 : static_cast<__mmask32>((1ull << tail) - 1);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint16_t* p = w + r * k;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= full; i += 64) {
      a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(p + i), (__m512bh)_mm512_loadu_si512(x + i));
      a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(p + i + 32),
                            (__m512bh)_mm512_loadu_si512(x + i + 32));
    }
    for (; i < full; i += 32) {
      a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(p + i), (__m512bh)_mm512_loadu_si512(x + i));
    }
    if (tail != 0) {
      a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi16(tail_mask, p + full),
                            (__m512bh)_mm512_maskz_loadu_epi16(tail_mask, x + full));
    }
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  }
}

}  // namespace icae
