// AVX-512 VNNI kernel of the int8 weights (QuantizedInt8Weight, cpu_gemv.h). Built with
// -mavx512vnni; only called after a CPUID check (CpuInt8GemvAvxAvailable).
//
// Per panel of 32 outputs and 32-input block, the weights are 8 groups of [32 outputs × 4
// inputs] bytes (q + 128): one vpdpbusd multiplies 16 outputs' 4 unsigned weight bytes by the
// same 4 signed input bytes (broadcast) and adds the 4 products into each output's 32-bit lane.
// Starting the lane at -128·Σq_x removes the +128 offset, so the block's integer dot product
// is exact, whatever the order. It then adds into the output's float32 sum as
// fma(float(dot), d_w · d_x, sum), blocks in order — the portable kernel's arithmetic, so both
// give the same bits, and a row's result does not depend on the other rows or the thread split.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

// GCC 12 reports the intrinsics' own "undefined" temporaries as (maybe-)uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace icae {
namespace {

constexpr int64_t kBlockBytes = 32 * 32 + 32 * 2;  // QuantizedInt8Weight::kBlockBytes
// As the bf16 kernels: the weight stream overlaps the arithmetic only with an explicit
// prefetch this far ahead.
constexpr int64_t kPrefetchBytes = 8192;

// R input rows against one panel's block: integer dot products in registers, then one fma per
// 16 outputs into acc [R][32] (float32, in L1).
template <int R>
inline void RowsBlock(const uint8_t* blk, const int8_t* xq, int64_t ldq, const int32_t* bias,
                      const float* xd, int64_t ldd, __m512 sw_lo, __m512 sw_hi, float* acc) {
  __m512i lo[R], hi[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm512_set1_epi32(bias[r * ldd]);
#pragma GCC unroll 8
  for (int g = 0; g < 8; ++g) {
    const __m512i w0 = _mm512_loadu_si512(blk + g * 128);
    const __m512i w1 = _mm512_loadu_si512(blk + g * 128 + 64);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      int32_t x4;
      std::memcpy(&x4, xq + r * ldq + g * 4, 4);
      const __m512i xb = _mm512_set1_epi32(x4);
      lo[r] = _mm512_dpbusd_epi32(lo[r], w0, xb);
      hi[r] = _mm512_dpbusd_epi32(hi[r], w1, xb);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const __m512 dx = _mm512_set1_ps(xd[r * ldd]);
    float* a = acc + r * 32;
    _mm512_store_ps(a, _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo[r]), _mm512_mul_ps(sw_lo, dx), _mm512_load_ps(a)));
    _mm512_store_ps(a + 16, _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi[r]), _mm512_mul_ps(sw_hi, dx),
                                            _mm512_load_ps(a + 16)));
  }
}

// 16 bf16 values → float32 (exact: a shift).
inline __m512 Bf16ToFloat(__m256i raw) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

}  // namespace

// y[j][c] (float32, row stride ldy) for the outputs c of panels [p0, p1) of an int8 weight with
// n outputs and kb 32-input blocks, and m <= 32 input rows quantized per block: xq [m, kb·32],
// xd [m, kb] scales, xbias [m, kb] = -128·Σq.
void PackedGemmInt8Avx512(const uint8_t* w, int64_t n, int64_t kb, const int8_t* xq,
                          const float* xd, const int32_t* xbias, int64_t m, float* y, int64_t ldy,
                          int64_t p0, int64_t p1) {
  alignas(64) float acc[32 * 32];
  const int64_t ldq = kb * 32;
  for (int64_t p = p0; p < p1; ++p) {
    for (int64_t i = 0; i < m * 32; ++i) acc[i] = 0.0f;
    for (int64_t b = 0; b < kb; ++b) {
      const uint8_t* blk = w + (p * kb + b) * kBlockBytes;
      for (int64_t line = 0; line < kBlockBytes; line += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBytes + line), _MM_HINT_T0);
      }
      const __m512i scales = _mm512_loadu_si512(blk + 1024);
      const __m512 sw_lo = Bf16ToFloat(_mm512_castsi512_si256(scales));
      const __m512 sw_hi = Bf16ToFloat(_mm512_extracti64x4_epi64(scales, 1));
      for (int64_t r = 0; r < m;) {
        const int8_t* q = xq + r * ldq + b * 32;
        const int32_t* bias = xbias + r * kb + b;
        const float* d = xd + r * kb + b;
        float* a = acc + r * 32;
        // Up to 8 rows at once: 16 integer accumulators + 2 weight vectors stay in registers.
        switch (m - r >= 8 ? 8 : m - r) {
          case 1: RowsBlock<1>(blk, q, ldq, bias, d, kb, sw_lo, sw_hi, a); r += 1; break;
          case 2: RowsBlock<2>(blk, q, ldq, bias, d, kb, sw_lo, sw_hi, a); r += 2; break;
          case 3: RowsBlock<3>(blk, q, ldq, bias, d, kb, sw_lo, sw_hi, a); r += 3; break;
          case 4: RowsBlock<4>(blk, q, ldq, bias, d, kb, sw_lo, sw_hi, a); r += 4; break;
          case 5: RowsBlock<5>(blk, q, ldq, bias, d, kb, sw_lo, sw_hi, a); r += 5; break;
          case 6: RowsBlock<6>(blk, q, ldq, bias, d, kb, sw_lo, sw_hi, a); r += 6; break;
          case 7: RowsBlock<7>(blk, q, ldq, bias, d, kb, sw_lo, sw_hi, a); r += 7; break;
          default: RowsBlock<8>(blk, q, ldq, bias, d, kb, sw_lo, sw_hi, a); r += 8; break;
        }
      }
    }
    const int64_t left = n - p * 32;
    const __mmask16 m0 = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    const __mmask16 m1 = left >= 32 ? __mmask16(0xFFFF) : left <= 16 ? __mmask16(0) : __mmask16((1u << (left - 16)) - 1);
    for (int64_t r = 0; r < m; ++r) {
      _mm512_mask_storeu_ps(y + r * ldy + p * 32, m0, _mm512_load_ps(acc + r * 32));
      _mm512_mask_storeu_ps(y + r * ldy + p * 32 + 16, m1, _mm512_load_ps(acc + r * 32 + 16));
    }
  }
}

}  // namespace icae
