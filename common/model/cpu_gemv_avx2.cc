// AVX2 + FMA kernels for CPUs without AVX-512 BF16 (AMD Zen 2/3, older Intel cores): the
// packed bf16 product (cpu_gemv.h, PackedBf16Weight) and decode attention (cpu_fused.h). Built
// with -mavx2 -mfma; only called after a CPUID check (CpuAvx2KernelsAvailable). Without them
// LibTorch's bf16 products run a reference loop on such CPUs: a decode step of the default
// model took 7.5 ms, 1.4 ms with the packed product alone.
//
// The packed product has the AVX-512 kernel's FMA variant's arithmetic, so a row's bits do
// not depend on which of the two a CPU runs: per output, one float32 chain over the input
// pairs in order, the pair's first weight times x[2i], then the second times x[2i + 1], each
// one FMA; the sum rounded once to bf16 as LibTorch rounds (nearest even, NaN → 0x7FC0).
//
// A panel's record of one input pair is 64 bf16 values: rows 0..15 as (w[r][2i], w[r][2i + 1]),
// then rows 16..31. So the 8 outputs of group g (rows 8g .. 8g + 7) sit in 32 contiguous bytes
// at offset 16g: one load, widened by a shift (first elements) and a mask (second ones).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace icae {
namespace {

constexpr int64_t kPrefetchBytes = 8192;

// 8 floats → 8 bf16 as LibTorch rounds.
inline __m128i RoundBf16x8(__m256 f) {
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF);
  const __m256i u = _mm256_castps_si256(f);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, lsb)), 16);
  const __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(nan));
  // Values fit 16 bits: pack within 128-bit lanes, then take the low quadword of each lane.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
  return _mm256_castsi256_si128(packed);
}

inline void StoreBf16x8(uint16_t* dst, __m256 f, int64_t left) {
  const __m128i v = RoundBf16x8(f);
  if (left >= 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), v);
  } else if (left > 0) {
    uint16_t tmp[8];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(tmp), v);
    std::memcpy(dst, tmp, static_cast<size_t>(left) * 2);
  }
}

// MB input rows (float32, the bf16 inputs widened) × V groups of 8 outputs, groups g0 ..
// g0 + V - 1 of one panel; MB·V accumulators in the 16 vector registers.
template <int MB, int V>
inline void SlabBlock(const uint16_t* panel, int64_t k2, int g0, const float* x, int64_t ldx,
                      uint16_t* y, int64_t ldy, int64_t col0, int64_t n) {
  __m256 acc[MB][V];
#pragma GCC unroll 8
  for (int j = 0; j < MB; ++j) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[j][v] = _mm256_setzero_ps();
  }
  const __m256i second_mask = _mm256_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
  const uint16_t* rec = panel + g0 * 16;
  for (int64_t i = 0; i < k2; i += 2, rec += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(rec) + kPrefetchBytes, _MM_HINT_T0);
    __m256 first[V], second[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + v * 16));
      first[v] = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
      second[v] = _mm256_castsi256_ps(_mm256_and_si256(raw, second_mask));
    }
#pragma GCC unroll 8
    for (int j = 0; j < MB; ++j) {
      const __m256 x0 = _mm256_broadcast_ss(x + j * ldx + i);
      const __m256 x1 = _mm256_broadcast_ss(x + j * ldx + i + 1);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) {
        acc[j][v] = _mm256_fmadd_ps(first[v], x0, acc[j][v]);
        acc[j][v] = _mm256_fmadd_ps(second[v], x1, acc[j][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < MB; ++j) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const int64_t col = col0 + (g0 + v) * 8;
      StoreBf16x8(y + j * ldy + col, acc[j][v], n - col);
    }
  }
}

// Groups [g0, g0 + V) of one panel for all m rows, in blocks of up to 4 rows: the slab's
// weights (k2·V·16 bytes) stay in L1/L2 while the row blocks go through them.
template <int V>
void Slab(const uint16_t* panel, int64_t k2, int g0, const float* x, int64_t ldx, int64_t m, uint16_t* y,
          int64_t ldy, int64_t col0, int64_t n) {
  for (int64_t r = 0; r < m; r += 4) {
    const float* xr = x + r * ldx;
    uint16_t* yr = y + r * ldy;
    switch (std::min<int64_t>(4, m - r)) {
      case 1: SlabBlock<1, V>(panel, k2, g0, xr, ldx, yr, ldy, col0, n); break;
      case 2: SlabBlock<2, V>(panel, k2, g0, xr, ldx, yr, ldy, col0, n); break;
      case 3: SlabBlock<3, V>(panel, k2, g0, xr, ldx, yr, ldy, col0, n); break;
      default: SlabBlock<4, V>(panel, k2, g0, xr, ldx, yr, ldy, col0, n); break;
    }
  }
}

}  // namespace

// y[j][c] (bf16, row stride ldy) for the outputs c of panels [p0, p1) of a packed weight with n
// outputs and k2 inputs (k rounded up to even), input rows x[j] (float32 holding bf16 values,
// zero-padded to k2, row stride ldx), j < m.
void PackedGemmBf16Avx2(const uint16_t* w, int64_t n, int64_t k2, const float* x, int64_t ldx, int64_t m,
                        uint16_t* y, int64_t ldy, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const uint16_t* panel = w + p * k2 * 32;
    const int64_t col0 = p * 32;
    if (m == 1) {
      // One row: a whole panel per pass, 4 independent chains.
      Slab<4>(panel, k2, 0, x, ldx, m, y, ldy, col0, n);
      continue;
    }
    // Groups past n hold zero weights; skip them.
    for (int g0 = 0; g0 < 4 && col0 + g0 * 8 < n; g0 += 2) Slab<2>(panel, k2, g0, x, ldx, m, y, ldy, col0, n);
  }
}

// y[i] = x[i] widened (bf16 → float32), n values.
void WidenBf16Avx2(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
  }
  for (; i < n; ++i) {
    const uint32_t u = uint32_t{x[i]} << 16;
    std::memcpy(y + i, &u, 4);
  }
}

}  // namespace icae

// Decode attention for CPUs without AVX-512 BF16 (cpu_fused.h FusedDecodeAttention).
namespace icae {
namespace {

inline __m256 LoadBf16x8(const uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lane i of the result = the sum of v[i]'s 8 lanes, every vector's lanes added by the same
// tree ((0+1)+(2+3))+((4+5)+(6+7)): 6 horizontal adds, 2 permutes and an add for 8 vectors,
// against ~5 shuffles and adds per vector for one horizontal sum each.
inline __m256 Sum8(const __m256 v[8]) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  // a: lanes 0-3 the first halves' sums of v0..v3, lanes 4-7 their second halves'; b: v4..v7.
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// exp(x) for x <= 0 (softmax after subtracting the maximum), float32, within ~2 ulp: Cephes'
// expf polynomial on x - n·ln2, times 2^n built in the exponent bits (n >= -126: normal).
inline __m256 ExpNonPositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// The first n lanes (n < 8) as a mask for maskload/maskstore.
inline __m256i FirstLanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Scores of one query head (q32: widened to float32) against up to 8 keys at once: lane j =
// q · k_j · scale for j < count (lanes past count repeat the last key), head_dim hd a multiple
// of 8. Every key's sum runs in the same order (8-dim chunks in turn, then Sum8's tree), so a
// score has the same bits wherever a block of 8 starts: the result does not depend on how a
// cache's positions are split into runs.
inline __m256 Scores8(const float* q32, int64_t hd, const uint16_t* k, int64_t k_stride, int64_t count,
                      __m256 scale) {
  const uint16_t* rows[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) rows[j] = k + std::min<int64_t>(j, count - 1) * k_stride;
  __m256 acc[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t d = 0; d < hd; d += 8) {
    const __m256 qd = _mm256_loadu_ps(q32 + d);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qd, LoadBf16x8(rows[j] + d), acc[j]);
  }
  return _mm256_mul_ps(Sum8(acc), scale);
}

// out[c0 .. c0 + 16·C2) = out_scale · Σ_j p_j · v_j over every run's rows in order, one chain
// per output (the same arithmetic as a widened 8-lane chain per 8 outputs). Each 32-byte load
// of 16 values is widened by a shift (even dims) and a mask (odd dims) into two sets of
// accumulators, interleaved back at the end: half the widening work of converting 8 at a time.
template <int C2>
void WeightedSumPairs(const float* p, const uint16_t* const* v, const int64_t* stride, const int64_t* len,
                      int64_t segments, int64_t c0, float out_scale, uint16_t* out) {
  __m256 even[C2], odd[C2];
#pragma GCC unroll 8
  for (int c = 0; c < C2; ++c) even[c] = odd[c] = _mm256_setzero_ps();
  const __m256i second_mask = _mm256_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
  int64_t g = 0;
  for (int64_t seg = 0; seg < segments; ++seg) {
    const uint16_t* row = v[seg] + c0;
    for (int64_t j = 0; j < len[seg]; ++j, ++g, row += stride[seg]) {
      const __m256 pv = _mm256_set1_ps(p[g]);
#pragma GCC unroll 8
      for (int c = 0; c < C2; ++c) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 * c));
        even[c] = _mm256_fmadd_ps(pv, _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16)), even[c]);
        odd[c] = _mm256_fmadd_ps(pv, _mm256_castsi256_ps(_mm256_and_si256(raw, second_mask)), odd[c]);
      }
    }
  }
  const __m256 s = _mm256_set1_ps(out_scale);
#pragma GCC unroll 8
  for (int c = 0; c < C2; ++c) {
    // even: dims 0 2 4 6 | 8 10 12 14, odd: 1 3 5 7 | 9 11 13 15
    const __m256 lo = _mm256_unpacklo_ps(even[c], odd[c]);  // 0 1 2 3 | 8 9 10 11
    const __m256 hi = _mm256_unpackhi_ps(even[c], odd[c]);  // 4 5 6 7 | 12 13 14 15
    StoreBf16x8(out + c0 + 16 * c, _mm256_mul_ps(_mm256_permute2f128_ps(lo, hi, 0x20), s), 8);
    StoreBf16x8(out + c0 + 16 * c + 8, _mm256_mul_ps(_mm256_permute2f128_ps(lo, hi, 0x31), s), 8);
  }
}

// The same for the 8 dims at c0 (head_dim an odd multiple of 8: its last ones).
void WeightedSum8(const float* p, const uint16_t* const* v, const int64_t* stride, const int64_t* len,
                  int64_t segments, int64_t c0, float out_scale, uint16_t* out) {
  __m256 acc = _mm256_setzero_ps();
  int64_t g = 0;
  for (int64_t seg = 0; seg < segments; ++seg) {
    const uint16_t* row = v[seg] + c0;
    for (int64_t j = 0; j < len[seg]; ++j, ++g, row += stride[seg]) {
      acc = _mm256_fmadd_ps(_mm256_set1_ps(p[g]), LoadBf16x8(row), acc);
    }
  }
  StoreBf16x8(out + c0, _mm256_mul_ps(acc, _mm256_set1_ps(out_scale)), 8);
}

}  // namespace

// y = bf16(bf16(silu(g)) · u) over n values, as torch::silu(g) * u rounds (silu in float32,
// rounded to bf16, then the product), the AVX-512 kernel's arithmetic: silu(g) = g / (1 + e^-g)
// for g >= 0 and g·e^g / (1 + e^g) below, so the exponential's argument is never positive.
void SiluMulRowAvx2(const uint16_t* g, const uint16_t* u, int64_t n, uint16_t* y) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  auto eight = [&](const uint16_t* gp, const uint16_t* up, uint16_t* yp) {
    const __m256 gv = LoadBf16x8(gp);
    const __m256 e = ExpNonPositive(_mm256_or_ps(gv, sign));  // e^-|g|
    const __m256 neg = _mm256_cmp_ps(gv, zero, _CMP_LT_OQ);
    const __m256 num = _mm256_blendv_ps(gv, _mm256_mul_ps(gv, e), neg);  // g, or g·e^g below 0
    const __m256 silu = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(RoundBf16x8(_mm256_div_ps(num, _mm256_add_ps(one, e)))), 16));
    StoreBf16x8(yp, _mm256_mul_ps(silu, LoadBf16x8(up)), 8);
  };
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) eight(g + j, u + j, y + j);
  if (j < n) {  // the last n - j values through zero-padded copies
    uint16_t gt[8] = {}, ut[8] = {}, yt[8];
    std::memcpy(gt, g + j, static_cast<size_t>(n - j) * 2);
    std::memcpy(ut, u + j, static_cast<size_t>(n - j) * 2);
    eight(gt, ut, yt);
    std::memcpy(y + j, yt, static_cast<size_t>(n - j) * 2);
  }
}

// One (sequence, head) of a decode step: softmax(q · K · scale) · V over `segments` runs of
// keys/values in order (run i: len[i] rows of k[i] and v[i], row stride stride[i]), float32
// accumulation, written as bf16; head_dim hd a multiple of 8, at most 256. scratch holds Σ len
// floats. Each key's score and each output's sum run in a fixed order, so neither the batch
// nor the split into runs changes a row's bits.
void DecodeAttentionRowAvx2(const uint16_t* q, const uint16_t* const* k, const uint16_t* const* v,
                            const int64_t* stride, const int64_t* len, int64_t segments, int64_t hd,
                            float scale, float* scratch, uint16_t* out) {
  alignas(32) float q32[256];
  WidenBf16Avx2(q, q32, hd);
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t total = 0;
  for (int64_t seg = 0; seg < segments; ++seg) {
    float* row = scratch + total;
    for (int64_t j = 0; j < len[seg]; j += 8) {
      const int64_t count = std::min<int64_t>(8, len[seg] - j);
      const __m256 sc = Scores8(q32, hd, k[seg] + j * stride[seg], stride[seg], count, vscale);
      if (count == 8) {
        _mm256_storeu_ps(row + j, sc);
      } else {
        _mm256_maskstore_ps(row + j, FirstLanes(count), sc);
      }
    }
    total += len[seg];
  }
  __m256 mx = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 8 <= total; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(scratch + j));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mx);
  float m = lanes[0];
  for (int i = 1; i < 8; ++i) m = std::max(m, lanes[i]);
  for (; j < total; ++j) m = std::max(m, scratch[j]);
  const __m256 vm = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  for (j = 0; j + 8 <= total; j += 8) {
    const __m256 e = ExpNonPositive(_mm256_sub_ps(_mm256_loadu_ps(scratch + j), vm));
    _mm256_storeu_ps(scratch + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (j < total) {
    const __m256i tail = FirstLanes(total - j);
    __m256 e = ExpNonPositive(_mm256_sub_ps(_mm256_maskload_ps(scratch + j, tail), vm));
    e = _mm256_and_ps(e, _mm256_castsi256_ps(tail));
    _mm256_maskstore_ps(scratch + j, tail, e);
    sum = _mm256_add_ps(sum, e);
  }
  const float inv = 1.0f / HorizontalSum(sum);
  int64_t c0 = 0;
  for (; c0 + 64 <= hd; c0 += 64) WeightedSumPairs<4>(scratch, v, stride, len, segments, c0, inv, out);
  switch ((hd - c0) / 16) {
    case 1: WeightedSumPairs<1>(scratch, v, stride, len, segments, c0, inv, out); break;
    case 2: WeightedSumPairs<2>(scratch, v, stride, len, segments, c0, inv, out); break;
    case 3: WeightedSumPairs<3>(scratch, v, stride, len, segments, c0, inv, out); break;
    default: break;
  }
  c0 += (hd - c0) / 16 * 16;
  if (c0 < hd) WeightedSum8(scratch, v, stride, len, segments, c0, inv, out);
}

}  // namespace icae
