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

// acc[c] (8 lanes each, C of them: dims c0 .. c0 + 8C) = Σ_j p_j · v_j over every run's rows in
// order, one chain per lane: the result does not depend on how the rows are split into runs.
template <int C>
void WeightedSumChunk(const float* p, const uint16_t* const* v, const int64_t* stride, const int64_t* len,
                      int64_t segments, int64_t c0, float out_scale, uint16_t* out) {
  __m256 acc[C];
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
  int64_t g = 0;
  for (int64_t seg = 0; seg < segments; ++seg) {
    const uint16_t* row = v[seg] + c0;
    for (int64_t j = 0; j < len[seg]; ++j, ++g, row += stride[seg]) {
      const __m256 pv = _mm256_set1_ps(p[g]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[c] = _mm256_fmadd_ps(pv, LoadBf16x8(row + 8 * c), acc[c]);
    }
  }
  const __m256 s = _mm256_set1_ps(out_scale);
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) StoreBf16x8(out + c0 + 8 * c, _mm256_mul_ps(acc[c], s), 8);
}

}  // namespace

// One (sequence, head) of a decode step: softmax(q · K · scale) · V over `segments` runs of
// keys/values in order (run i: len[i] rows of k[i] and v[i], row stride stride[i]), float32
// accumulation, written as bf16; head_dim hd a multiple of 8. scratch holds Σ len floats. Each
// key's score and each output's sum run in a fixed order, so neither the batch nor the split
// into runs changes a row's bits.
void DecodeAttentionRowAvx2(const uint16_t* q, const uint16_t* const* k, const uint16_t* const* v,
                            const int64_t* stride, const int64_t* len, int64_t segments, int64_t hd,
                            float scale, float* scratch, uint16_t* out) {
  int64_t total = 0;
  for (int64_t seg = 0; seg < segments; ++seg) {
    const uint16_t* row = k[seg];
    for (int64_t j = 0; j < len[seg]; ++j, row += stride[seg]) {
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      int64_t d = 0;
      for (; d + 16 <= hd; d += 16) {
        a0 = _mm256_fmadd_ps(LoadBf16x8(q + d), LoadBf16x8(row + d), a0);
        a1 = _mm256_fmadd_ps(LoadBf16x8(q + d + 8), LoadBf16x8(row + d + 8), a1);
      }
      if (d < hd) a0 = _mm256_fmadd_ps(LoadBf16x8(q + d), LoadBf16x8(row + d), a0);
      scratch[total++] = HorizontalSum(_mm256_add_ps(a0, a1)) * scale;
    }
  }
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < total; ++j) m = std::max(m, scratch[j]);
  float sum = 0.0f;
  for (int64_t j = 0; j < total; ++j) {
    scratch[j] = std::exp(scratch[j] - m);
    sum += scratch[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t c0 = 0; c0 < hd; c0 += 64) {
    switch (std::min<int64_t>(8, (hd - c0) / 8)) {
      case 1: WeightedSumChunk<1>(scratch, v, stride, len, segments, c0, inv, out); break;
      case 2: WeightedSumChunk<2>(scratch, v, stride, len, segments, c0, inv, out); break;
      case 3: WeightedSumChunk<3>(scratch, v, stride, len, segments, c0, inv, out); break;
      case 4: WeightedSumChunk<4>(scratch, v, stride, len, segments, c0, inv, out); break;
      case 5: WeightedSumChunk<5>(scratch, v, stride, len, segments, c0, inv, out); break;
      case 6: WeightedSumChunk<6>(scratch, v, stride, len, segments, c0, inv, out); break;
      case 7: WeightedSumChunk<7>(scratch, v, stride, len, segments, c0, inv, out); break;
      default: WeightedSumChunk<8>(scratch, v, stride, len, segments, c0, inv, out); break;
    }
  }
}

}  // namespace icae
