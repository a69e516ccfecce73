// AMX kernel of cpu_gemv.h's packed bf16 products. Built with -mamx-tile -mamx-bf16; only
// called once CpuAmxAvailable() has checked the CPU and obtained the kernel's permission to
// use the tile registers.
//
// The packed layout (PackedBf16Weight: per panel of 32 outputs, per input pair, 16 outputs'
// pairs in one 64-byte line and the other 16 in the next) is already the B operand of
// tdpbf16ps: a tile of 16 input pairs × 16 outputs is 16 of those lines, 128 bytes apart. So
// the weights load as they are stored, and one tdpbf16ps multiplies up to 16 input rows by
// 32 inputs × 16 outputs (8192 multiply-adds; vdpbf16ps does 32). Each output's sum runs over
// the inputs in chunks of 32, in the same order whatever the number of input rows in the tile
// (a row of the result depends only on that input row), so a stream gets the same bits alone
// or batched, as with the AVX-512 kernels.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace icae {

// Defined in cpu_gemv_avx512.cc (rounds as LibTorch: nearest even, NaN → 0x7FC0).
void RoundToBf16Avx512(const float* src, uint16_t* dst, int64_t n);

namespace {

// ldtilecfg's 64-byte operand (palette 1).
struct TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles: 0, 1 the float32 sums of a panel's two halves (rows × 16 outputs); 2 the inputs
// (rows × 32 bf16); 3, 4 the weights of the two halves (16 pairs × 16 outputs); 5, 6, 7 the
// same three operands for the last `tail_pairs` (< 16) input pairs where k is not a multiple
// of 32.
void ConfigureTiles(int rows, int tail_pairs) {
  TileConfig c;
  for (int t : {0, 1}) c.rows[t] = static_cast<uint8_t>(rows), c.colsb[t] = 64;
  c.rows[2] = static_cast<uint8_t>(rows), c.colsb[2] = 64;
  for (int t : {3, 4}) c.rows[t] = 16, c.colsb[t] = 64;
  if (tail_pairs > 0) {
    c.rows[5] = static_cast<uint8_t>(rows), c.colsb[5] = static_cast<uint16_t>(tail_pairs * 4);
    for (int t : {6, 7}) c.rows[t] = static_cast<uint8_t>(tail_pairs), c.colsb[t] = 64;
  }
  _tile_loadconfig(&c);
}

// Bytes of packed weights that the row blocks of one product share while they stay in L2, as
// in the AVX-512 kernel: with more than 16 rows, a few panels go through every block of 16
// rows before the next ones load.
constexpr int64_t kPanelChunkBytes = 256 * 1024;

}  // namespace

// Linux keeps the AMX tile data off until a process asks for it (arch_prctl
// ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); the CPUID bits alone do not make it usable.
bool RequestAmxPermission() {
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// y[j][c] (bf16, row stride ldy) for the outputs c of panels [p0, p1) of a packed weight with
// n outputs and k2 inputs (k rounded up to even), and input rows x[j] (bf16, zero-padded to
// k2, row stride ldx), j < m.
void PackedGemmBf16Amx(const uint16_t* w, int64_t n, int64_t k2, const uint16_t* x, int64_t ldx, int64_t m,
                       uint16_t* y, int64_t ldy, int64_t p0, int64_t p1) {
  const int64_t chunks = k2 / 32;
  const int tail = static_cast<int>(k2 % 32 / 2);
  const int64_t panel_elems = k2 * 32;
  const int64_t chunk = m <= 16 ? p1 - p0 : std::max<int64_t>(1, kPanelChunkBytes / (panel_elems * 2));
  alignas(64) float sums[16 * 32];
  for (int64_t c0 = p0; c0 < p1; c0 += chunk) {
    const int64_t c1 = std::min(p1, c0 + chunk);
    for (int64_t r = 0; r < m; r += 16) {
      const int rows = static_cast<int>(std::min<int64_t>(16, m - r));
      ConfigureTiles(rows, tail);
      const uint16_t* xr = x + r * ldx;
      for (int64_t p = c0; p < c1; ++p) {
        const uint16_t* wp = w + p * panel_elems;
        _tile_zero(0);
        _tile_zero(1);
        for (int64_t c = 0; c < chunks; ++c) {
          _tile_loadd(2, xr + c * 32, ldx * 2);
          _tile_loadd(3, wp + c * 1024, 128);
          _tile_loadd(4, wp + c * 1024 + 32, 128);
          _tile_dpbf16ps(0, 2, 3);
          _tile_dpbf16ps(1, 2, 4);
        }
        if (tail > 0) {
          _tile_loadd(5, xr + chunks * 32, ldx * 2);
          _tile_loadd(6, wp + chunks * 1024, 128);
          _tile_loadd(7, wp + chunks * 1024 + 32, 128);
          _tile_dpbf16ps(0, 5, 6);
          _tile_dpbf16ps(1, 5, 7);
        }
        _tile_stored(0, sums, 128);
        _tile_stored(1, sums + 16, 128);
        const int64_t col = p * 32, count = std::min<int64_t>(32, n - col);
        for (int j = 0; j < rows; ++j) RoundToBf16Avx512(sums + j * 32, y + (r + j) * ldy + col, count);
      }
    }
  }
  // Tile state left in use would be saved and restored (8 KiB) at every context switch.
  _tile_release();
}

}  // namespace icae
