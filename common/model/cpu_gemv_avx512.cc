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
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

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

// Few-row products on packed weights (PackedBf16Weight): panels of 32 output rows, stored by
// input pair: per pair (2i, 2i + 1), rows 0..15's two weights each, then rows 16..31's (128
// bytes). Per pair the kernel loads a panel's 128 bytes once and does one vdpbf16ps per input
// row and 16 outputs with the row's bf16 pair broadcast: no widening, no horizontal sums and
// no input vector loads, which bounded the dot-product kernel above for short rows. The
// inputs are bf16 already (the products' operands), so the pairs lose nothing; each product
// of two bf16 values is exact in float32. Each output is one float32 chain over the pairs in
// order whatever the blocking, so a row's result does not depend on how many rows are
// multiplied with it, nor on the thread split. Where vdpbf16ps is slow (Intel cores have run
// it at a quarter of the FMA rate) the same layout feeds FMAs instead: the 128 bytes widened
// to float32 (the pairs' first elements by a shift, the second by a mask), two FMAs per input
// row with x[2i] and x[2i + 1] broadcast. PackedBf16KernelInUse() picks one per process, by
// timing both instructions once (AMD EPYC here: the same instruction rate, so the dot kernel
// does twice the multiply-adds).
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

// MB input rows × NV panels (32·NV outputs); MB·2NV accumulators stay in registers. Per input
// pair, kDot: one vdpbf16ps per input row and 16 outputs adds both pairs' products into the
// output's float32 sum, with the row's bf16 pair broadcast; else the weights widened and two
// FMAs (first elements, then second ones).
template <int MB, int NV, bool kDot>
inline void PanelBlock(const uint16_t* wp, int64_t k2, const uint16_t* x, int64_t ldx, uint16_t* y,
                       int64_t ldy, int64_t col0, int64_t n) {
  __m512 acc[MB][2 * NV];
#pragma GCC unroll 16
  for (int j = 0; j < MB; ++j) {
#pragma GCC unroll 16
    for (int v = 0; v < 2 * NV; ++v) acc[j][v] = _mm512_setzero_ps();
  }
  const __m512i second_mask = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
  for (int64_t i = 0; i < k2; i += 2) {
    __m512i w[2 * NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const uint16_t* src = wp + (v * k2 + i) * 32;
      // Weights that come from memory (large models) stream only with an explicit prefetch.
      _mm_prefetch(reinterpret_cast<const char*>(src + kPrefetchElements), ICAE_GEMV_HINT);
      w[2 * v] = _mm512_loadu_si512(src);
      w[2 * v + 1] = _mm512_loadu_si512(src + 32);
    }
    if constexpr (kDot) {
#pragma GCC unroll 16
      for (int j = 0; j < MB; ++j) {
        int32_t pair;
        std::memcpy(&pair, x + j * ldx + i, 4);
        const __m512bh xb = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 16
        for (int v = 0; v < 2 * NV; ++v) acc[j][v] = _mm512_dpbf16_ps(acc[j][v], (__m512bh)w[v], xb);
      }
    } else {
      __m512 first[2 * NV], second[2 * NV];
#pragma GCC unroll 16
      for (int v = 0; v < 2 * NV; ++v) {
        first[v] = _mm512_castsi512_ps(_mm512_slli_epi32(w[v], 16));
        second[v] = _mm512_castsi512_ps(_mm512_and_si512(w[v], second_mask));
      }
#pragma GCC unroll 16
      for (int j = 0; j < MB; ++j) {
        const uint32_t x0 = uint32_t{x[j * ldx + i]} << 16, x1 = uint32_t{x[j * ldx + i + 1]} << 16;
        float f0, f1;
        std::memcpy(&f0, &x0, 4);
        std::memcpy(&f1, &x1, 4);
        const __m512 xb0 = _mm512_set1_ps(f0), xb1 = _mm512_set1_ps(f1);
#pragma GCC unroll 16
        for (int v = 0; v < 2 * NV; ++v) {
          acc[j][v] = _mm512_fmadd_ps(first[v], xb0, acc[j][v]);
          acc[j][v] = _mm512_fmadd_ps(second[v], xb1, acc[j][v]);
        }
      }
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

template <int MB, bool kDot>
void PanelRange(const uint16_t* w, int64_t k2, const uint16_t* x, int64_t ldx, uint16_t* y, int64_t ldy,
                int64_t n, int64_t p0, int64_t p1) {
  // Enough independent chains to cover the latency, within 32 vector registers.
  constexpr int NV = MB >= 6 ? 1 : MB >= 3 ? 2 : kDot ? 4 : 2;
  int64_t p = p0;
  for (; p + NV <= p1; p += NV) PanelBlock<MB, NV, kDot>(w + p * k2 * 32, k2, x, ldx, y, ldy, p * 32, n);
  for (; p < p1; ++p) PanelBlock<MB, 1, kDot>(w + p * k2 * 32, k2, x, ldx, y, ldy, p * 32, n);
}

template <bool kDot>
void PanelRows(const uint16_t* w, int64_t k2, const uint16_t* xr, int64_t ldx, uint16_t* yr, int64_t ldy,
               int64_t n, int64_t c0, int64_t c1, int64_t rows) {
  switch (rows) {
    case 1: return PanelRange<1, kDot>(w, k2, xr, ldx, yr, ldy, n, c0, c1);
    case 2: return PanelRange<2, kDot>(w, k2, xr, ldx, yr, ldy, n, c0, c1);
    case 3: return PanelRange<3, kDot>(w, k2, xr, ldx, yr, ldy, n, c0, c1);
    case 4: return PanelRange<4, kDot>(w, k2, xr, ldx, yr, ldy, n, c0, c1);
    case 5: return PanelRange<5, kDot>(w, k2, xr, ldx, yr, ldy, n, c0, c1);
    case 6: return PanelRange<6, kDot>(w, k2, xr, ldx, yr, ldy, n, c0, c1);
    case 7: return PanelRange<7, kDot>(w, k2, xr, ldx, yr, ldy, n, c0, c1);
    default: return PanelRange<8, kDot>(w, k2, xr, ldx, yr, ldy, n, c0, c1);
  }
}

// Seconds for `reps` × 8 independent vdpbf16ps (dot) or vfmadd231ps chains.
template <bool kDot>
__attribute__((noinline)) double TimeChains(int64_t reps) {
  __m512 a[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm512_set1_ps(1e-30f * static_cast<float>(i));
  const __m512 f = _mm512_set1_ps(0.5f);
  const __m512bh h = (__m512bh)_mm512_set1_epi16(0x3F00);  // 0.5 in bf16
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < reps; ++r) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) a[i] = kDot ? _mm512_dpbf16_ps(a[i], h, h) : _mm512_fmadd_ps(a[i], f, f);
    __asm__ volatile("" : "+v"(a[0]), "+v"(a[1]), "+v"(a[2]), "+v"(a[3]), "+v"(a[4]), "+v"(a[5]), "+v"(a[6]),
                     "+v"(a[7]));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  float sink[16];
  _mm512_storeu_ps(sink, a[0]);
  __asm__ volatile("" : : "r"(sink) : "memory");
  return s;
}

}  // namespace

// Whether vdpbf16ps runs at 0.6 or more of vfmadd231ps's instruction rate on this core (best
// of 5 short runs each, ~1 ms in all, timed once): it does two multiply-adds per lane to
// FMA's one and needs no widening, so the packed kernel uses it then.
bool PackedDotIsFasterAvx512() {
  static const bool dot = [] {
    double t_dot = 1e9, t_fma = 1e9;
    for (int i = 0; i < 5; ++i) {
      t_dot = std::min(t_dot, TimeChains<true>(8192));
      t_fma = std::min(t_fma, TimeChains<false>(8192));
    }
    return t_dot <= t_fma / 0.6;
  }();
  return dot;
}

// Bytes of packed weights that the row blocks of one product share while they stay in L2
// (2 MiB per core here): a few panels at a time go through every row block before the next
// ones load.
#ifndef ICAE_GEMV_PANEL_CHUNK_BYTES
#define ICAE_GEMV_PANEL_CHUNK_BYTES (256 * 1024)
#endif

// y[j][c] (bf16, row stride ldy) for the outputs c of panels [p0, p1) of a packed weight with
// n outputs and k2 inputs (k rounded up to even), and input rows x[j] (bf16, zero-padded to k2,
// row stride ldx), j < m; rows in
// blocks of 8. Panels are the outer loop, in chunks of ICAE_GEMV_PANEL_CHUNK_BYTES: with the
// rows outside, a 20-row prefill chunk streamed a large model's weights from memory three
// times (once per block of 8 rows) instead of once.
void PackedGemmBf16Avx512(const uint16_t* w, int64_t n, int64_t k2, const uint16_t* x, int64_t ldx,
                          int64_t m, uint16_t* y, int64_t ldy, int64_t p0, int64_t p1, bool dot) {
  // Multiples of 4 panels, so that PanelRange's blocks of NV panels run whole.
  const int64_t chunk = m <= 8 ? p1 - p0 : std::max<int64_t>(4, ICAE_GEMV_PANEL_CHUNK_BYTES / (k2 * 64) / 4 * 4);
  for (int64_t c0 = p0; c0 < p1; c0 += chunk) {
    const int64_t c1 = std::min(p1, c0 + chunk);
    for (int64_t r = 0; r < m; r += 8) {
      const uint16_t* xr = x + r * ldx;
      uint16_t* yr = y + r * ldy;
      const int64_t rows = std::min<int64_t>(8, m - r);
      if (dot) {
        PanelRows<true>(w, k2, xr, ldx, yr, ldy, n, c0, c1, rows);
      } else {
        PanelRows<false>(w, k2, xr, ldx, yr, ldy, n, c0, c1, rows);
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

// Decode attention (FusedDecodeAttention), one query head at a time.
namespace {

// Lane i of the result = the sum of v[i]'s 16 lanes: a transposing reduction tree (31 shuffles
// and adds for 16 vectors, against ~8 per vector for one horizontal sum each).
inline __m512 Sum16(const __m512 v[16]) {
  __m512 w[8], x[4], y[2];
  for (int i = 0; i < 8; ++i) {  // 256-bit halves: [v_i lo+hi, v_i+8 lo+hi]
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[i], v[i + 8], 0x44), _mm512_shuffle_f32x4(v[i], v[i + 8], 0xEE));
  }
  for (int i = 0; i < 4; ++i) {  // 128-bit lanes: [v_i, v_i+8, v_i+4, v_i+12], 4 partials each
    x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[i], w[i + 4], 0x88), _mm512_shuffle_f32x4(w[i], w[i + 4], 0xDD));
  }
  for (int i = 0; i < 2; ++i) {
    y[i] = _mm512_add_ps(_mm512_unpacklo_ps(x[i], x[i + 2]), _mm512_unpackhi_ps(x[i], x[i + 2]));
  }
  const __m512 z = _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x44), _mm512_shuffle_ps(y[0], y[1], 0xEE));
  // z holds the sums in the order 0 2 1 3 8 10 9 11 4 6 5 7 12 14 13 15 (an involution).
  const __m512i order = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
  return _mm512_permutexvar_ps(order, z);
}

// exp(x) for x <= 0 (softmax after subtracting the maximum), float32, within ~2 ulp: Cephes'
// expf polynomial on x - n·ln2, scaled by 2^n.
inline __m512 ExpNonPositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// Scores of one query head against up to 16 keys at once: lane j = q · k_j · scale for
// j < count (lanes past count repeat the last key), head_dim 32·HC. Every lane's sum runs in
// the same order, so a key's score has the same bits wherever a block of 16 starts: the result
// does not depend on how a cache's positions are split into runs. One pointer walks the keys
// (16 row pointers spilled to the stack) and HC is a compile-time constant (the accumulators
// stay in registers).
template <int HC>
inline __m512 Scores16(const uint16_t* q, const uint16_t* k, int64_t k_stride, int64_t count, __m512 scale) {
  __m512bh qv[HC];
#pragma GCC unroll 8
  for (int h = 0; h < HC; ++h) qv[h] = (__m512bh)_mm512_loadu_si512(q + 32 * h);
  __m512 acc[16];
  const uint16_t* row = k;
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    __m512 a = _mm512_dpbf16_ps(_mm512_setzero_ps(), qv[0], (__m512bh)_mm512_loadu_si512(row));
#pragma GCC unroll 8
    for (int h = 1; h < HC; ++h) a = _mm512_dpbf16_ps(a, qv[h], (__m512bh)_mm512_loadu_si512(row + 32 * h));
    acc[j] = a;
    row += j + 1 < count ? k_stride : 0;
  }
  return _mm512_mul_ps(Sum16(acc), scale);
}

// acc[c] += p · v[16c .. 16c + 15] for c < C (one value row, bf16 widened).
template <int C>
inline void AddRow(float p, const uint16_t* v, __m512* acc) {
  const __m512 pv = _mm512_set1_ps(p);
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 16 * c));
    acc[c] = _mm512_fmadd_ps(pv, _mm512_cvtpbh_ps((__m256bh)raw), acc[c]);
  }
}

// out = out_scale · Σ_j p_j · v_j over `segments` value blocks in order (v[i] with row stride
// stride[i], len[i] rows; p runs on across them), float accumulation, written as bf16, for
// head_dim 16·C. Rows of even and odd index (counted across the blocks, so the result does not
// depend on how the rows are split into blocks) go to two sets of accumulators, added at the
// end. C is a compile-time constant so that the accumulators stay in registers: indexed by a
// runtime count they lived on the stack, and the loop ran at the stack round trip's latency.
template <int C>
void WeightedSum(const float* p, const uint16_t* const* v, const int64_t* stride, const int64_t* len,
                 int64_t segments, uint16_t* out, float out_scale) {
  __m512 acc0[C], acc1[C];
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c) acc0[c] = acc1[c] = _mm512_setzero_ps();
  int64_t g = 0;  // rows so far, over every block
  for (int64_t seg = 0; seg < segments; ++seg) {
    const uint16_t* vs = v[seg];
    const int64_t n = len[seg], st = stride[seg];
    int64_t j = 0;
    if ((g & 1) != 0 && j < n) AddRow<C>(p[g++], vs + st * j++, acc1);
    for (; j + 2 <= n; j += 2, g += 2) {
      AddRow<C>(p[g], vs + st * j, acc0);
      AddRow<C>(p[g + 1], vs + st * (j + 1), acc1);
    }
    if (j < n) AddRow<C>(p[g++], vs + st * j, acc0);
  }
  const __m512 vscale = _mm512_set1_ps(out_scale);
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * c),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_add_ps(acc0[c], acc1[c]), vscale)));
  }
}

// head_dim a multiple of 32, up to 256.
void WeightedSum(const float* p, const uint16_t* const* v, const int64_t* stride, const int64_t* len,
                 int64_t segments, int64_t hd, uint16_t* out, float out_scale) {
  switch (hd / 16) {
    case 2: return WeightedSum<2>(p, v, stride, len, segments, out, out_scale);
    case 4: return WeightedSum<4>(p, v, stride, len, segments, out, out_scale);
    case 6: return WeightedSum<6>(p, v, stride, len, segments, out, out_scale);
    case 8: return WeightedSum<8>(p, v, stride, len, segments, out, out_scale);
    case 10: return WeightedSum<10>(p, v, stride, len, segments, out, out_scale);
    case 12: return WeightedSum<12>(p, v, stride, len, segments, out, out_scale);
    case 14: return WeightedSum<14>(p, v, stride, len, segments, out, out_scale);
    default: return WeightedSum<16>(p, v, stride, len, segments, out, out_scale);
  }
}

// Every key's score (scratch, in order over the runs); returns the number of keys.
template <int HC>
int64_t AllScores(const uint16_t* q, const uint16_t* const* k, const int64_t* stride, const int64_t* len,
                  int64_t segments, float scale, float* scratch) {
  const __m512 vscale = _mm512_set1_ps(scale);
  int64_t total = 0;
  for (int64_t seg = 0; seg < segments; ++seg) {
    float* row = scratch + total;
    for (int64_t j = 0; j < len[seg]; j += 16) {
      const int64_t count = std::min<int64_t>(16, len[seg] - j);
      const __mmask16 valid = static_cast<__mmask16>((1u << count) - 1);
      _mm512_mask_storeu_ps(row + j, valid, Scores16<HC>(q, k[seg] + j * stride[seg], stride[seg], count, vscale));
    }
    total += len[seg];
  }
  return total;
}

}  // namespace

// One (sequence, head) of a decode step: softmax(q · K · scale) · V over `segments` runs of
// keys/values in order (run i: len[i] rows of k[i] and v[i], row stride stride[i]), float
// accumulation, written as bf16. scratch holds Σ len floats.
void DecodeAttentionRowAvx512(const uint16_t* q, const uint16_t* const* k, const uint16_t* const* v,
                              const int64_t* stride, const int64_t* len, int64_t segments, int64_t hd,
                              float scale, float* scratch, uint16_t* out) {
  int64_t total = 0;
  switch (hd / 32) {
    case 1: total = AllScores<1>(q, k, stride, len, segments, scale, scratch); break;
    case 2: total = AllScores<2>(q, k, stride, len, segments, scale, scratch); break;
    case 3: total = AllScores<3>(q, k, stride, len, segments, scale, scratch); break;
    case 4: total = AllScores<4>(q, k, stride, len, segments, scale, scratch); break;
    case 5: total = AllScores<5>(q, k, stride, len, segments, scale, scratch); break;
    case 6: total = AllScores<6>(q, k, stride, len, segments, scale, scratch); break;
    case 7: total = AllScores<7>(q, k, stride, len, segments, scale, scratch); break;
    default: total = AllScores<8>(q, k, stride, len, segments, scale, scratch); break;
  }
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 16 <= total; j += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(scratch + j));
  float m = _mm512_reduce_max_ps(mx);
  for (; j < total; ++j) m = std::max(m, scratch[j]);
  const __m512 vm = _mm512_set1_ps(m);
  __m512 sum = _mm512_setzero_ps();
  for (j = 0; j + 16 <= total; j += 16) {
    const __m512 e = ExpNonPositive(_mm512_sub_ps(_mm512_loadu_ps(scratch + j), vm));
    _mm512_storeu_ps(scratch + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (j < total) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (total - j)) - 1);
    const __m512 e = ExpNonPositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, scratch + j), vm));
    _mm512_mask_storeu_ps(scratch + j, tail, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(tail, e));
  }
  WeightedSum(scratch, v, stride, len, segments, hd, out, 1.0f / _mm512_reduce_add_ps(sum));
}

// One row of a prefill attention's bf16 scores (q · kᵀ), in place: row[begin, end) becomes
// bf16(softmax(row · scale)) over those keys, the rest of the row's len entries 0 (masked).
// scratch holds len floats.
namespace {
// The first min(n, 16) lanes.
inline __mmask16 FirstLanes(int64_t n) { return static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1); }
}  // namespace

void MaskedSoftmaxRowAvx512(uint16_t* row, int64_t begin, int64_t end, int64_t len, float scale,
                            float* scratch) {
  const __m512 vscale = _mm512_set1_ps(scale);
  const int64_t count = end - begin;
  uint16_t* r = row + begin;
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < count; j += 16) {
    const __mmask16 m = FirstLanes(count - j);
    const __m512 x = _mm512_mul_ps(_mm512_cvtpbh_ps((__m256bh)_mm256_maskz_loadu_epi16(m, r + j)), vscale);
    _mm512_mask_storeu_ps(scratch + j, m, x);
    mx = _mm512_mask_max_ps(mx, m, mx, x);
  }
  const __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < count; j += 16) {
    const __mmask16 m = FirstLanes(count - j);
    const __m512 e = ExpNonPositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scratch + j), vm));
    _mm512_mask_storeu_ps(scratch + j, m, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
  }
  const __m512 vsum = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
  for (int64_t j = 0; j < count; j += 16) {
    const __mmask16 m = FirstLanes(count - j);
    _mm256_mask_storeu_epi16(r + j, m, RoundBf16(_mm512_div_ps(_mm512_maskz_loadu_ps(m, scratch + j), vsum)));
  }
  std::fill(row, row + begin, uint16_t{0});
  std::fill(row + end, row + len, uint16_t{0});
}

// RMSNorm of one row of h values (cpu_fused.h FusedRmsNorm): the sum of squares in two float32
// vectors of 16 lanes, one horizontal sum, then y = bf16(w · bf16(x · rsqrt(mean + eps))). The
// portable loop summed one element after the other: a dependency chain of h float additions,
// 2.7% of a 512-token encoder pass.
void RmsNormRowAvx512(const uint16_t* x, const uint16_t* w, int64_t h, float eps, uint16_t* y) {
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t j = 0; j < h; j += 16) {
    const __m512 v = _mm512_cvtpbh_ps((__m256bh)_mm256_maskz_loadu_epi16(FirstLanes(h - j), x + j));
    acc[(j / 16) & 1] = _mm512_fmadd_ps(v, v, acc[(j / 16) & 1]);
  }
  const float ss = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
  const __m512 scale = _mm512_set1_ps(1.0f / std::sqrt(ss / static_cast<float>(h) + eps));
  for (int64_t j = 0; j < h; j += 16) {
    const __mmask16 m = FirstLanes(h - j);
    const __m512 v = _mm512_cvtpbh_ps((__m256bh)_mm256_maskz_loadu_epi16(m, x + j));
    const __m512 normed = _mm512_cvtpbh_ps((__m256bh)RoundBf16(_mm512_mul_ps(v, scale)));
    const __m512 wv = _mm512_cvtpbh_ps((__m256bh)_mm256_maskz_loadu_epi16(m, w + j));
    _mm256_mask_storeu_epi16(y + j, m, RoundBf16(_mm512_mul_ps(wv, normed)));
  }
}

// y = bf16(bf16(silu(g)) · u) over n values, as torch::silu(g) * u rounds (silu in float32,
// rounded to bf16, then the product): silu(g) = g / (1 + e^-g) for g >= 0 and g·e^g / (1 + e^g)
// below, so that the exponential's argument is never positive. One pass instead of LibTorch's
// two over the [rows, intermediate] activations, with no strided copy of the gate half.
void SiluMulRowAvx512(const uint16_t* g, const uint16_t* u, int64_t n, uint16_t* y) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = FirstLanes(n - j);
    const __m512 gv = _mm512_cvtpbh_ps((__m256bh)_mm256_maskz_loadu_epi16(m, g + j));
    const __m512 e = ExpNonPositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(gv)));
    const __mmask16 neg = _mm512_cmp_ps_mask(gv, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 num = _mm512_mask_mul_ps(gv, neg, gv, e);  // g, or g·e^g below 0
    const __m512 silu = _mm512_cvtpbh_ps((__m256bh)RoundBf16(_mm512_div_ps(num, _mm512_add_ps(one, e))));
    const __m512 uv = _mm512_cvtpbh_ps((__m256bh)_mm256_maskz_loadu_epi16(m, u + j));
    _mm256_mask_storeu_epi16(y + j, m, RoundBf16(_mm512_mul_ps(silu, uv)));
  }
}

}  // namespace icae
