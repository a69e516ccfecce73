// AVX-512 BF16 kernels of cpu_gemv.h. Built with -mavx512bf16; only called after a CPUID check.
// One weight row at a time (a single sequential stream per thread prefetches best here: 4- or
// 8-row blocks measured 5-10% slower). With m input rows (a decode step of m sequences) each
// weight chunk is loaded once and used for all m dot products, so the step still reads the
// weights once.
#include <immintrin.h>

#include <cstdint>

namespace icae {
namespace {

template <int M>
void GemvRows(const uint16_t* w, const uint16_t* x, int64_t ldx, float* y, int64_t ldy, int64_t k,
              int64_t row_begin, int64_t row_end) {
  const int64_t full = k / 32 * 32;
  const int64_t tail = k - full;
  const __mmask32 tail_mask = tail == 0 ? 0 : static_cast<__mmask32>((1ull << tail) - 1);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint16_t* p = w + r * k;
    __m512 acc[M][2];
    for (int j = 0; j < M; ++j) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= full; i += 64) {
      const __m512bh w0 = (__m512bh)_mm512_loadu_si512(p + i);
      const __m512bh w1 = (__m512bh)_mm512_loadu_si512(p + i + 32);
      for (int j = 0; j < M; ++j) {
        const uint16_t* xj = x + j * ldx + i;
        acc[j][0] = _mm512_dpbf16_ps(acc[j][0], w0, (__m512bh)_mm512_loadu_si512(xj));
        acc[j][1] = _mm512_dpbf16_ps(acc[j][1], w1, (__m512bh)_mm512_loadu_si512(xj + 32));
      }
    }
    for (; i < full; i += 32) {
      const __m512bh w0 = (__m512bh)_mm512_loadu_si512(p + i);
      for (int j = 0; j < M; ++j) {
        acc[j][0] = _mm512_dpbf16_ps(acc[j][0], w0, (__m512bh)_mm512_loadu_si512(x + j * ldx + i));
      }
    }
    if (tail != 0) {
      const __m512bh w0 = (__m512bh)_mm512_maskz_loadu_epi16(tail_mask, p + full);
      for (int j = 0; j < M; ++j) {
        acc[j][1] = _mm512_dpbf16_ps(
            acc[j][1], w0, (__m512bh)_mm512_maskz_loadu_epi16(tail_mask, x + j * ldx + full));
      }
    }
    for (int j = 0; j < M; ++j) y[j * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]));
  }
}

}  // namespace

// y[j][r] for rows r in [row_begin, row_end) of w [n, k] and inputs x[j] (j < m, m <= 2, row
// stride ldx); y has row stride ldy.
void GemvBf16Avx512(const uint16_t* w, const uint16_t* x, int64_t ldx, int64_t m, float* y,
                    int64_t ldy, int64_t k, int64_t row_begin, int64_t row_end) {
  if (m == 1) return GemvRows<1>(w, x, ldx, y, ldy, k, row_begin, row_end);
  return GemvRows<2>(w, x, ldx, y, ldy, k, row_begin, row_end);
}

}  // namespace icae

namespace icae {

// Decode attention, phase 1: scores[j] = (q · k_j) * scale for one query head against `len`
// keys (row stride k_stride elements); head_dim is a multiple of 32.
void DecodeScoresAvx512(const uint16_t* q, const uint16_t* k, int64_t k_stride, int64_t len,
                        int64_t hd, float scale, float* scores) {
  for (int64_t j = 0; j < len; ++j) {
    const uint16_t* kj = k + j * k_stride;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < hd; i += 32) {
      acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(q + i),
                             (__m512bh)_mm512_loadu_si512(kj + i));
    }
    scores[j] = _mm512_reduce_add_ps(acc) * scale;
  }
}

// Phase 3: out = Σ_j p_j · v_j (float accumulation), written as bf16; head_dim multiple of 16.
void DecodeWeightedSumAvx512(const float* p, const uint16_t* v, int64_t v_stride, int64_t len,
                             int64_t hd, uint16_t* out) {
  constexpr int kMaxChunks = 16;  // head_dim up to 256
  __m512 acc[kMaxChunks];
  const int64_t chunks = hd / 16;
  for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < len; ++j) {
    const __m512 pj = _mm512_set1_ps(p[j]);
    const uint16_t* vj = v + j * v_stride;
    for (int64_t c = 0; c < chunks; ++c) {
      __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(vj + 16 * c));
      acc[c] = _mm512_fmadd_ps(pj, _mm512_cvtpbh_ps((__m256bh)raw), acc[c]);
    }
  }
  for (int64_t c = 0; c < chunks; ++c) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * c),
                        (__m256i)_mm512_cvtneps_pbh(acc[c]));
  }
}

}  // namespace icae
