// AVX-512 kernels of cpu_gemv.h. Built with -mavx512bf16; only called after a CPUID check.
//
// The decode-step product reads each bf16 weight row once, widens it to float32 and multiplies
// it by FMA with up to 8 float32 input rows (a decode step of several sequences). Widening 32
// bf16 values takes two instructions when the even and the odd elements go to separate
// vectors (shift left / mask), so the input rows are stored in that order: per 32-element
// block, its 16 even elements, then its 16 odd ones (GemvInputLayout), zero-padded to a
// multiple of 32. Every output element is computed the same way whatever the number of rows —
// one accumulator for even and one for odd elements, then one fixed horizontal sum — so a
// sequence's logits are bit-identical whether it decodes alone or in a batch. FMA on widened
// weights replaced vdpbf16ps (pairwise bf16 dot products): from 3 rows on the BF16 dot
// instructions, not the weight stream, bounded the step.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

// GCC 12 reports the intrinsics' own "undefined" temporaries (_mm512_reduce_add_ps,
// _mm512_cvtepi32_epi16) as (maybe-)uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace icae {
namespace {

// Output rows r0 .. r0 + R - 1 against M input rows. One accumulator per (input row, output
// row): per 32-element block it takes the even elements' FMA, then the odd ones'; the R·M
// chains are independent, and each input vector loaded serves R weight rows (from L2 at 8
// rows, the input loads and not the FMAs bounded a one-row-at-a-time loop).
// The hardware prefetcher alone did not overlap the weight stream with the FMAs at 4-8 rows
// (cycles per block ≈ memory time + compute time); an explicit prefetch this far ahead does.
#ifndef ICAE_GEMV_PREFETCH
#define ICAE_GEMV_PREFETCH 4096
#endif
#ifndef ICAE_GEMV_HINT
#define ICAE_GEMV_HINT _MM_HINT_T0
#endif
constexpr int64_t kPrefetchElements = ICAE_GEMV_PREFETCH;

template <int M, int R>
inline void GemvBlock(const uint16_t* w, const float* x, int64_t ldx, float* y, int64_t ldy,
                      int64_t k, int64_t r0) {
  const int64_t full = k / 32 * 32;
  const int64_t tail = k - full;
  const __mmask32 tail_mask = static_cast<__mmask32>((1ull << tail) - 1);
  const __m512i odd_mask = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
  __m512 acc[R][M];
#pragma GCC unroll 8
  for (int q = 0; q < R; ++q) {
#pragma GCC unroll 8
    for (int j = 0; j < M; ++j) acc[q][j] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < full + (tail != 0 ? 32 : 0); i += 32) {
    __m512 even[R], odd[R];
#pragma GCC unroll 8
    for (int q = 0; q < R; ++q) {
      const uint16_t* p = w + (r0 + q) * k + i;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchElements), ICAE_GEMV_HINT);
      const __m512i raw = i < full ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16(tail_mask, p);
      even[q] = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
      odd[q] = _mm512_castsi512_ps(_mm512_and_si512(raw, odd_mask));
    }
#pragma GCC unroll 8
    for (int j = 0; j < M; ++j) {
      const __m512 xe = _mm512_loadu_ps(x + j * ldx + i);
#pragma GCC unroll 8
      for (int q = 0; q < R; ++q) acc[q][j] = _mm512_fmadd_ps(even[q], xe, acc[q][j]);
    }
#pragma GCC unroll 8
    for (int j = 0; j < M; ++j) {
      const __m512 xo = _mm512_loadu_ps(x + j * ldx + i + 16);
#pragma GCC unroll 8
      for (int q = 0; q < R; ++q) acc[q][j] = _mm512_fmadd_ps(odd[q], xo, acc[q][j]);
    }
  }
#pragma GCC unroll 8
  for (int q = 0; q < R; ++q) {
#pragma GCC unroll 8
    for (int j = 0; j < M; ++j) y[j * ldy + r0 + q] = _mm512_reduce_add_ps(acc[q][j]);
  }
}

template <int M>
void GemvRows(const uint16_t* w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t k,
              int64_t row_begin, int64_t row_end) {
  constexpr int R = M <= 2 ? 4 : 2;  // 2 keeps 2·8 accumulators + weights within 32 registers
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R) GemvBlock<M, R>(w, x, ldx, y, ldy, k, r);
  for (; r < row_end; ++r) GemvBlock<M, 1>(w, x, ldx, y, ldy, k, r);
}

}  // namespace

// Few-row products on packed weights (PackedBf16Weight): panels of 32 output rows, k-major,
// each k's 32 bf16 values interleaved so that widening the even elements gives output rows
// 0..15 and the odd ones rows 16..31. Per k the kernel loads a panel's 64 bytes once, widens
// them (2 instructions) and does one FMA per input row and 16 outputs with the input element
// broadcast: no horizontal sums and no input vector loads, which bounded the dot-product
// kernel above for short rows (k 256: 2.3x faster at 8 rows). Each output is one float32 FMA
// chain over k in order whatever the blocking, so a row's result does not depend on how many
// rows are multiplied with it, nor on the thread split.
namespace {

// 16 floats → bf16 as LibTorch rounds (nearest even; NaN → 0x7FC0).
inline __m256i RoundBf16(__m512 f) {
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7FFF);
  const __m512i qnan = _mm512_set1_epi32(0x7FC0);
  const __m512i u = _mm512_castps_si512(f);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q), qnan);
  return _mm512_cvtepi32_epi16(r);
}

// MB input rows × NV panels (32·NV outputs); MB·2NV accumulators stay in registers.
template <int MB, int NV>
inline void PanelBlock(const uint16_t* wp, int64_t k, const float* x, int64_t ldx, uint16_t* y,
                       int64_t ldy, int64_t col0, int64_t n) {
  const __m512i odd_mask = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
  __m512 acc[MB][2 * NV];
#pragma GCC unroll 16
  for (int j = 0; j < MB; ++j) {
#pragma GCC unroll 16
    for (int v = 0; v < 2 * NV; ++v) acc[j][v] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < k; ++i) {
    __m512 w[2 * NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const uint16_t* src = wp + (v * k + i) * 32;
      // Weights that come from memory (large models) stream only with an explicit prefetch.
      _mm_prefetch(reinterpret_cast<const char*>(src + kPrefetchElements), ICAE_GEMV_HINT);
      const __m512i raw = _mm512_loadu_si512(src);
      w[2 * v] = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
      w[2 * v + 1] = _mm512_castsi512_ps(_mm512_and_si512(raw, odd_mask));
    }
#pragma GCC unroll 16
    for (int j = 0; j < MB; ++j) {
      const __m512 xb = _mm512_set1_ps(x[j * ldx + i]);
#pragma GCC unroll 16
      for (int v = 0; v < 2 * NV; ++v) acc[j][v] = _mm512_fmadd_ps(w[v], xb, acc[j][v]);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < MB; ++j) {
#pragma GCC unroll 16
    for (int v = 0; v < 2 * NV; ++v) {
      const int64_t col = col0 + (v / 2) * 32 + (v % 2) * 16;
      const int64_t left = n - col;
      if (left <= 0) continue;
      const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
      _mm256_mask_storeu_epi16(y + j * ldy + col, mask, RoundBf16(acc[j][v]));
    }
  }
}

template <int MB>
void PanelRange(const uint16_t* w, int64_t k, const float* x, int64_t ldx, uint16_t* y, int64_t ldy,
                int64_t n, int64_t p0, int64_t p1) {
  // Enough independent FMA chains to cover the FMA latency, within 32 vector registers.
  constexpr int NV = MB >= 6 ? 1 : MB >= 3 ? 2 : 4;
  int64_t p = p0;
  for (; p + NV <= p1; p += NV) PanelBlock<MB, NV>(w + p * k * 32, k, x, ldx, y, ldy, p * 32, n);
  for (; p < p1; ++p) PanelBlock<MB, 1>(w + p * k * 32, k, x, ldx, y, ldy, p * 32, n);
}

}  // namespace

// Bytes of packed weights that the row blocks of one product share while they stay in L2
// (2 MiB per core here): a few panels at a time go through every row block before the next
// ones load.
#ifndef ICAE_GEMV_PANEL_CHUNK_BYTES
#define ICAE_GEMV_PANEL_CHUNK_BYTES (256 * 1024)
#endif

// y[j][c] (bf16, row stride ldy) for the outputs c of panels [p0, p1) of a packed weight with
// n outputs and k inputs, and input rows x[j] (float32, row stride ldx), j < m; rows in
// blocks of 8. Panels are the outer loop, in chunks of ICAE_GEMV_PANEL_CHUNK_BYTES: with the
// rows outside, a 20-row prefill chunk streamed a large model's weights from memory three
// times (once per block of 8 rows) instead of once.
void PackedGemmBf16Avx512(const uint16_t* w, int64_t n, int64_t k, const float* x, int64_t ldx,
                          int64_t m, uint16_t* y, int64_t ldy, int64_t p0, int64_t p1) {
  // Multiples of 4 panels, so that PanelRange's blocks of NV panels run whole.
  const int64_t chunk = m <= 8 ? p1 - p0 : std::max<int64_t>(4, ICAE_GEMV_PANEL_CHUNK_BYTES / (k * 64) / 4 * 4);
  for (int64_t c0 = p0; c0 < p1; c0 += chunk) {
    const int64_t c1 = std::min(p1, c0 + chunk);
    for (int64_t r = 0; r < m; r += 8) {
      const float* xr = x + r * ldx;
      uint16_t* yr = y + r * ldy;
      switch (m - r < 8 ? m - r : 8) {
        case 1: PanelRange<1>(w, k, xr, ldx, yr, ldy, n, c0, c1); break;
        case 2: PanelRange<2>(w, k, xr, ldx, yr, ldy, n, c0, c1); break;
        case 3: PanelRange<3>(w, k, xr, ldx, yr, ldy, n, c0, c1); break;
        case 4: PanelRange<4>(w, k, xr, ldx, yr, ldy, n, c0, c1); break;
        case 5: PanelRange<5>(w, k, xr, ldx, yr, ldy, n, c0, c1); break;
        case 6: PanelRange<6>(w, k, xr, ldx, yr, ldy, n, c0, c1); break;
        case 7: PanelRange<7>(w, k, xr, ldx, yr, ldy, n, c0, c1); break;
        default: PanelRange<8>(w, k, xr, ldx, yr, ldy, n, c0, c1); break;
      }
    }
  }
}

// dst[i] = bf16(src[i]) with LibTorch's rounding (nearest even; NaN → 0x7FC0), 16 at a time:
// the scalar conversion cost as much as the products for small layers at 8 rows.
void RoundToBf16Avx512(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(dst + i, mask, RoundBf16(_mm512_maskz_loadu_ps(mask, src + i)));
  }
}

// y[j][r] for rows r in [row_begin, row_end) of w [n, k] (bf16) and inputs x[j] (j < m,
// 1 <= m <= 8, in GemvInputLayout, row stride ldx); y has row stride ldy.
void GemvBf16Avx512(const uint16_t* w, const float* x, int64_t ldx, int64_t m, float* y,
                    int64_t ldy, int64_t k, int64_t row_begin, int64_t row_end) {
  switch (m) {
    case 1: return GemvRows<1>(w, x, ldx, y, ldy, k, row_begin, row_end);
    case 2: return GemvRows<2>(w, x, ldx, y, ldy, k, row_begin, row_end);
    case 3: return GemvRows<3>(w, x, ldx, y, ldy, k, row_begin, row_end);
    case 4: return GemvRows<4>(w, x, ldx, y, ldy, k, row_begin, row_end);
    case 5: return GemvRows<5>(w, x, ldx, y, ldy, k, row_begin, row_end);
    case 6: return GemvRows<6>(w, x, ldx, y, ldy, k, row_begin, row_end);
    case 7: return GemvRows<7>(w, x, ldx, y, ldy, k, row_begin, row_end);
    default: return GemvRows<8>(w, x, ldx, y, ldy, k, row_begin, row_end);
  }
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

// Phase 3: out = Σ_j p_j · v_j over `segments` value blocks in order (v[i] with row stride
// v_stride[i], len[i] rows; p runs on across them), float accumulation, written as bf16;
// head_dim a multiple of 16.
void DecodeWeightedSumAvx512(const float* p, const uint16_t* const* v, const int64_t* v_stride,
                             const int64_t* len, int64_t segments, int64_t hd, uint16_t* out) {
  constexpr int kMaxChunks = 16;  // head_dim up to 256
  __m512 acc[kMaxChunks];
  const int64_t chunks = hd / 16;
  for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t seg = 0; seg < segments; ++seg) {
    for (int64_t j = 0; j < len[seg]; ++j) {
      const __m512 pj = _mm512_set1_ps(*p++);
      const uint16_t* vj = v[seg] + j * v_stride[seg];
      for (int64_t c = 0; c < chunks; ++c) {
        __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(vj + 16 * c));
        acc[c] = _mm512_fmadd_ps(pj, _mm512_cvtpbh_ps((__m256bh)raw), acc[c]);
      }
    }
  }
  for (int64_t c = 0; c < chunks; ++c) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * c),
                        (__m256i)_mm512_cvtneps_pbh(acc[c]));
  }
}

}  // namespace icae
