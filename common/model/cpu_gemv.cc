#include "common/model/cpu_gemv.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#if defined(ICAE_HAVE_AMX_BF16_KERNEL)
#include <cpuid.h>
#endif

namespace icae {

#if defined(ICAE_HAVE_AVX512VNNI_KERNEL)
// Defined in cpu_gemv_int8_avx512.cc (compiled with -mavx512vnni).
void PackedGemmInt8Avx512(const uint8_t* w, int64_t n, int64_t kb, const int8_t* xq,
                          const float* xd, const int32_t* xbias, int64_t m, float* y, int64_t ldy,
                          int64_t p0, int64_t p1);
#endif

#if defined(ICAE_HAVE_AVX2_BF16_KERNEL)
// Defined in cpu_gemv_avx2.cc (compiled with -mavx2 -mfma).
void PackedGemmBf16Avx2(const uint16_t* w, int64_t n, int64_t k2, const float* x, int64_t ldx, int64_t m,
                        uint16_t* y, int64_t ldy, int64_t p0, int64_t p1);
void WidenBf16Avx2(const uint16_t* x, float* y, int64_t n);
#endif

#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
// Defined in cpu_gemv_avx512.cc (compiled with -mavx512bf16).
void GemvBf16Avx512(const uint16_t* w, const float* x, int64_t ldx, int64_t m, float* y,
                    int64_t ldy, int64_t k, int64_t row_begin, int64_t row_end);
void RoundToBf16Avx512(const float* src, uint16_t* dst, int64_t n);
void PackedGemmBf16Avx512(const uint16_t* w, int64_t n, int64_t k2, const uint16_t* x, int64_t ldx,
                          int64_t m, uint16_t* y, int64_t ldy, int64_t p0, int64_t p1, bool dot);
bool PackedDotIsFasterAvx512();
#if defined(ICAE_HAVE_AMX_BF16_KERNEL)
// Defined in cpu_gemv_amx.cc (compiled with -mamx-tile -mamx-bf16).
bool RequestAmxPermission();
void PackedGemmBf16Amx(const uint16_t* w, int64_t n, int64_t k2, const uint16_t* x, int64_t ldx, int64_t m,
                       uint16_t* y, int64_t ldy, int64_t p0, int64_t p1);
#endif

namespace {

// The kernel's input layout: each row as float32, per 32-element block its 16 even elements
// then its 16 odd ones, zero-padded to ld = k rounded up to 32.
void GemvInputLayout(const uint16_t* x, int64_t m, int64_t k, int64_t ld, float* out) {
  for (int64_t j = 0; j < m; ++j) {
    const uint16_t* xj = x + j * k;
    float* oj = out + j * ld;
    for (int64_t b = 0; b < ld; b += 32) {
      for (int64_t t = 0; t < 16; ++t) {
        const int64_t e = b + 2 * t, o = e + 1;
        const uint32_t ev = e < k ? uint32_t{xj[e]} << 16 : 0, ov = o < k ? uint32_t{xj[o]} << 16 : 0;
        std::memcpy(oj + b + t, &ev, 4);
        std::memcpy(oj + b + 16 + t, &ov, 4);
      }
    }
  }
}

}  // namespace
#endif

int64_t ParallelGrain(int64_t macs_per_item, int64_t bytes_per_item) {
  constexpr double kMinTaskNanos = 30000, kMacsPerNano = 25, kBytesPerNano = 10;
  const double item = std::max(static_cast<double>(macs_per_item) / kMacsPerNano,
                               static_cast<double>(bytes_per_item) / kBytesPerNano);
  return item >= kMinTaskNanos ? 1 : static_cast<int64_t>(std::ceil(kMinTaskNanos / std::max(item, 1.0)));
}

namespace {
std::atomic<int> g_packed_kernel{static_cast<int>(PackedBf16Kernel::kAuto)};
}  // namespace

void SetPackedBf16Kernel(PackedBf16Kernel kernel) { g_packed_kernel.store(static_cast<int>(kernel)); }

bool CpuAmxAvailable() {
#if defined(ICAE_HAVE_AMX_BF16_KERNEL)
  static const bool ok = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!CpuBf16GemvAvailable() || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool tile = (edx >> 24) & 1u, bf16 = (edx >> 22) & 1u;
    return tile && bf16 && RequestAmxPermission();
  }();
  return ok;
#else
  return false;
#endif
}

const char* PackedBf16KernelName(PackedBf16Kernel kernel) {
  switch (kernel) {
    case PackedBf16Kernel::kDot: return "dot";
    case PackedBf16Kernel::kFma: return "fma";
    case PackedBf16Kernel::kAmx: return "amx";
    case PackedBf16Kernel::kAuto: break;
  }
  return "auto";
}

PackedBf16Kernel PackedBf16KernelInUse() {
  PackedBf16Kernel k = static_cast<PackedBf16Kernel>(g_packed_kernel.load());
  if (k == PackedBf16Kernel::kAuto) {
    static const PackedBf16Kernel from_env = [] {
      const char* e = std::getenv("ICAE_PACKED_BF16_KERNEL");
      if (e == nullptr) return PackedBf16Kernel::kAuto;
      for (PackedBf16Kernel c : {PackedBf16Kernel::kDot, PackedBf16Kernel::kFma, PackedBf16Kernel::kAmx}) {
        if (std::strcmp(e, PackedBf16KernelName(c)) == 0) return c;
      }
      return PackedBf16Kernel::kAuto;
    }();
    k = from_env;
  }
  if (k == PackedBf16Kernel::kAmx && !CpuAmxAvailable()) k = PackedBf16Kernel::kAuto;
  if (k != PackedBf16Kernel::kAuto) return k;
  if (CpuAmxAvailable()) return PackedBf16Kernel::kAmx;
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
  return CpuBf16GemvAvailable() && PackedDotIsFasterAvx512() ? PackedBf16Kernel::kDot : PackedBf16Kernel::kFma;
#else
  return PackedBf16Kernel::kFma;
#endif
}

bool CpuBf16GemvAvailable() {
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
  static const bool ok = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
  return ok;
#else
  return false;
#endif
}

bool CpuAvx2KernelsAvailable() {
#if defined(ICAE_HAVE_AVX2_BF16_KERNEL)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

bool CpuPackedBf16Available() { return CpuBf16GemvAvailable() || CpuAvx2KernelsAvailable(); }

namespace {

bool Bf16CpuWeight(const torch::Tensor& w) {
  return w.defined() && w.dim() == 2 && w.scalar_type() == torch::kBFloat16 && w.device().is_cpu() &&
         w.size(0) > 0 && w.size(1) > 0;
}

// Weights PackedBf16Weight takes: the AVX-512 kernels or the AVX2 one multiply them.
bool PackableWeight(const torch::Tensor& w) { return Bf16CpuWeight(w) && CpuPackedBf16Available(); }

// Rows and inputs the kernels can take now: few bf16 rows on CPU, no autograd recording.
[[maybe_unused]] bool KernelInput(const torch::Tensor& x, const torch::Tensor& w, int64_t max_rows) {
  return x.dim() == 2 && x.size(0) >= 1 && x.size(0) <= max_rows && x.scalar_type() == torch::kBFloat16 &&
         x.device().is_cpu() && x.size(1) == w.size(1) &&
         (c10::InferenceMode::is_enabled() || !torch::GradMode::is_enabled());
}

// Packed weights and their inputs go by input pairs: k rounded up to even.
int64_t PairPadded(int64_t k) { return (k + 1) / 2 * 2; }

}  // namespace

int64_t PackedBf16Weight::PackedBytes(const torch::Tensor& w) {
  if (!PackableWeight(w)) return 0;
  return (w.size(0) + 31) / 32 * 32 * PairPadded(w.size(1)) * 2;
}

PackedBf16Weight PackedBf16Weight::Pack(const torch::Tensor& w) {
  PackedBf16Weight p;
  if (!PackableWeight(w)) return p;
  const int64_t n = w.size(0), k = w.size(1), k2 = PairPadded(k), panels = (n + 31) / 32;
  auto wc = w.contiguous();
  const auto* src = reinterpret_cast<const uint16_t*>(wc.data_ptr<at::BFloat16>());
  p.data_ = torch::zeros({panels * k2 * 32}, torch::kBFloat16);
  auto* dst = reinterpret_cast<uint16_t*>(p.data_.data_ptr<at::BFloat16>());
  // Per input pair i of a panel, 64 values: output rows 0..15, each as its pair (w[r][2i],
  // w[r][2i + 1]), then rows 16..31 the same way.
  at::parallel_for(0, panels, 1, [&](int64_t b, int64_t e) {
    for (int64_t pi = b; pi < e; ++pi) {
      for (int64_t r = 0; r < 32 && pi * 32 + r < n; ++r) {
        const uint16_t* s = src + (pi * 32 + r) * k;
        uint16_t* d = dst + pi * k2 * 32 + (r / 16) * 32 + (r % 16) * 2;
        for (int64_t i = 0; i < k; ++i) d[i / 2 * 64 + i % 2] = s[i];
      }
    }
  });
  p.n_ = n;
  p.k_ = k;
  return p;
}

const uint16_t* PackedBf16Weight::data() const {
  return reinterpret_cast<const uint16_t*>(data_.data_ptr<at::BFloat16>());
}

bool CpuInt8GemvAvxAvailable() {
#if defined(ICAE_HAVE_AVX512VNNI_KERNEL)
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vnni");
  return ok;
#else
  return false;
#endif
}

namespace {

bool QuantizableWeight(const torch::Tensor& w) {
  return w.defined() && w.dim() == 2 && w.device().is_cpu() && w.size(0) > 0 && w.size(1) > 0 &&
         (w.scalar_type() == torch::kFloat32 || w.scalar_type() == torch::kBFloat16 ||
          w.scalar_type() == torch::kFloat16);
}

float Bf16BitsToFloat(uint16_t b) {
  const uint32_t u = uint32_t{b} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The smallest bf16 >= d (d >= 0 and finite): the weights' scale, so that |w| / scale <= 127.
uint16_t Bf16RoundUp(float d) {
  uint32_t u;
  std::memcpy(&u, &d, 4);
  if ((u & 0xFFFFu) != 0) u += 0x10000u;
  return static_cast<uint16_t>(u >> 16);
}

// Input rows quantized per 32-block for the int8 kernels: q [m, kb·32] int8, their scale
// d [m, kb] (float32) and bias [m, kb] = -128·Σq (the kernels' weights are stored as q + 128;
// the bias takes the offset back out of the integer dot product). Shared by both kernels, so
// they see the same integers.
struct Int8Activations {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> bias;
};

void QuantizeActivations(const float* x, int64_t m, int64_t k, Int8Activations& a) {
  const int64_t kb = (k + 31) / 32, kp = kb * 32;
  a.q.assign(m * kp, 0);
  a.d.assign(m * kb, 0.0f);
  a.bias.assign(m * kb, 0);
  // Adding and subtracting 1.5·2^23 rounds |v| <= 2^22 to the nearest integer (ties to even)
  // in plain float arithmetic, which the compiler vectorizes (lrint per element cost ~5% of a
  // decode step of the 246M model).
  constexpr float kRound = 12582912.0f;
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t b = 0; b < kb; ++b) {
      const float* xs = x + j * k + b * 32;
      const int64_t len = std::min<int64_t>(32, k - b * 32);
      float amax = 0.0f;
      bool finite = true;
      for (int64_t i = 0; i < len; ++i) {
        const float v = std::fabs(xs[i]);
        finite = finite & (v <= std::numeric_limits<float>::max());
        amax = std::max(amax, v);
      }
      // A NaN or Inf input makes its outputs NaN (d = NaN, q = 0), as the float kernels would.
      if (!finite) {
        a.d[j * kb + b] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      const float d = amax / 127.0f, id = 127.0f / amax;
      // All zero, or so small (< 4e-37) that 127 / amax overflows: the block adds nothing.
      if (amax == 0.0f || !(id <= std::numeric_limits<float>::max())) continue;
      int32_t sum = 0;
      int8_t* q = a.q.data() + j * kp + b * 32;
      for (int64_t i = 0; i < len; ++i) {
        const float r = (xs[i] * id + kRound) - kRound;
        q[i] = static_cast<int8_t>(std::clamp(static_cast<int32_t>(r), -127, 127));
        sum += q[i];
      }
      a.d[j * kb + b] = d;
      a.bias[j * kb + b] = -128 * sum;
    }
  }
}

// The portable kernel: outputs of panels [p0, p1) for m rows, y float32 with row stride ldy.
// Same arithmetic as the AVX-512 one: an exact integer dot product per 32-block, then one
// fma per block in block order.
void PackedGemmInt8Reference(const uint8_t* w, int64_t n, int64_t kb, const int8_t* xq,
                             const float* xd, const int32_t* xbias, int64_t m, float* y,
                             int64_t ldy, int64_t p0, int64_t p1) {
  constexpr int64_t kB = QuantizedInt8Weight::kBlockBytes;
  for (int64_t p = p0; p < p1; ++p) {
    for (int64_t t = 0; t < 32; ++t) {
      const int64_t col = p * 32 + t;
      if (col >= n) break;
      for (int64_t j = 0; j < m; ++j) {
        float acc = 0.0f;
        for (int64_t b = 0; b < kb; ++b) {
          const uint8_t* blk = w + (p * kb + b) * kB;
          const int8_t* q = xq + j * kb * 32 + b * 32;
          int32_t dot = xbias[j * kb + b];
          for (int64_t i = 0; i < 32; ++i) dot += int32_t{blk[(i / 4) * 128 + t * 4 + i % 4]} * q[i];
          uint16_t sb;
          std::memcpy(&sb, blk + 1024 + 2 * t, 2);
          const float d = Bf16BitsToFloat(sb) * xd[j * kb + b];
          acc = std::fma(static_cast<float>(dot), d, acc);
        }
        y[j * ldy + col] = acc;
      }
    }
  }
}

// y [m, n] float32 = x [m, k] float32 · w's int8 copy, over threads by panels.
void Int8Gemm(const QuantizedInt8Weight& w, const float* x, int64_t m, float* y, bool avx) {
  const int64_t n = w.rows(), k = w.cols(), kb = (k + 31) / 32, panels = (n + 31) / 32;
  thread_local Int8Activations act;
  QuantizeActivations(x, m, k, act);
  const uint8_t* wp = w.data();
  const int8_t* xq = act.q.data();
  const float* xd = act.d.data();
  const int32_t* xbias = act.bias.data();
  // Chunks of 4 panels, claimed in turn (ParallelForDynamic).
  ParallelForDynamic(panels, ParallelGrain(std::min(m, kMaxPackedRows) * 32 * k, 34 * k), 4, [&](int64_t b, int64_t e) {
    // The AVX-512 kernel keeps up to kMaxPackedRows rows' sums on its stack: more rows (a
    // prefill) go through a panel in chunks while it is in cache. Only whole panels ever go to
    // a thread, and each row's sums are its own, so neither the split nor the chunks change a
    // row's result.
    for (int64_t p = m <= kMaxPackedRows ? e - 1 : b; p < e; ++p) {
      const int64_t p0 = m <= kMaxPackedRows ? b : p;
      for (int64_t r = 0; r < m; r += kMaxPackedRows) {
        const int64_t rows = std::min(kMaxPackedRows, m - r);
#if defined(ICAE_HAVE_AVX512VNNI_KERNEL)
        if (avx) {
          PackedGemmInt8Avx512(wp, n, kb, xq + r * kb * 32, xd + r * kb, xbias + r * kb, rows, y + r * n, n, p0, p + 1);
          continue;
        }
#endif
        PackedGemmInt8Reference(wp, n, kb, xq + r * kb * 32, xd + r * kb, xbias + r * kb, rows, y + r * n, n, p0, p + 1);
      }
    }
  });
}

}  // namespace

int64_t QuantizedInt8Weight::QuantizedBytes(const torch::Tensor& w) {
  if (!QuantizableWeight(w)) return 0;
  return (w.size(0) + 31) / 32 * ((w.size(1) + 31) / 32) * kBlockBytes;
}

QuantizedInt8Weight QuantizedInt8Weight::Quantize(const torch::Tensor& w) {
  QuantizedInt8Weight qw;
  if (!QuantizableWeight(w)) return qw;
  const int64_t n = w.size(0), k = w.size(1), kb = (k + 31) / 32, panels = (n + 31) / 32;
  torch::NoGradGuard no_grad;
  auto wf = w.to(torch::kFloat32).contiguous();
  const float* src = wf.data_ptr<float>();
  // q = 0 is stored as 128; padded outputs keep scale 0.
  qw.data_ = torch::full({panels * kb * kBlockBytes}, 128, torch::kUInt8);
  uint8_t* dst = qw.data_.data_ptr<uint8_t>();
  at::parallel_for(0, panels, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      for (int64_t t = 0; t < 32 && p * 32 + t < n; ++t) {
        const float* row = src + (p * 32 + t) * k;
        for (int64_t b = 0; b < kb; ++b) {
          uint8_t* blk = dst + (p * kb + b) * kBlockBytes;
          const int64_t len = std::min<int64_t>(32, k - b * 32);
          float amax = 0.0f;
          for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(row[b * 32 + i]));
          const uint16_t sb = Bf16RoundUp(amax / 127.0f);
          std::memcpy(blk + 1024 + 2 * t, &sb, 2);
          const float d = Bf16BitsToFloat(sb);
          if (d == 0.0f) continue;
          for (int64_t i = 0; i < len; ++i) {
            const long v = std::clamp<long>(std::lrint(row[b * 32 + i] / d), -127, 127);
            blk[(i / 4) * 128 + t * 4 + i % 4] = static_cast<uint8_t>(v + 128);
          }
        }
      }
    }
  });
  qw.n_ = n;
  qw.k_ = k;
  return qw;
}

torch::Tensor QuantizedInt8Weight::Dequantize() const {
  auto out = torch::zeros({n_, k_}, torch::kFloat32);
  if (!defined()) return out;
  const int64_t kb = (k_ + 31) / 32;
  float* o = out.data_ptr<float>();
  const uint8_t* src = data();
  for (int64_t r = 0; r < n_; ++r) {
    const int64_t p = r / 32, t = r % 32;
    for (int64_t b = 0; b < kb; ++b) {
      const uint8_t* blk = src + (p * kb + b) * kBlockBytes;
      uint16_t sb;
      std::memcpy(&sb, blk + 1024 + 2 * t, 2);
      const float d = Bf16BitsToFloat(sb);
      for (int64_t i = 0; i < 32 && b * 32 + i < k_; ++i) {
        o[r * k_ + b * 32 + i] = static_cast<float>(int32_t{blk[(i / 4) * 128 + t * 4 + i % 4]} - 128) * d;
      }
    }
  }
  return out;
}

void Int8GemmForTest(const QuantizedInt8Weight& w, const float* x, int64_t m, float* y, bool avx) {
  Int8Gemm(w, x, m, y, avx && CpuInt8GemvAvxAvailable());
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const PackedBf16Weight* packed,
                     const QuantizedInt8Weight* q8) {
  // With AVX-512 VNNI the int8 kernel takes any number of rows (a 512-row prefill ran 4x faster
  // than the bf16 torch::linear on one loaded core), so a stream's results do not depend on
  // how its prefill was chunked or how many streams share a step; the portable kernel only
  // serves decode-sized products.
  if (q8 != nullptr && q8->defined() && q8->rows() == w.size(0) && x.dim() == 2 && x.size(0) >= 1 &&
      (x.size(0) <= kMaxPackedRows || CpuInt8GemvAvxAvailable()) && x.size(1) == q8->cols() && x.device().is_cpu() &&
      (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16) &&
      (c10::InferenceMode::is_enabled() || !torch::GradMode::is_enabled())) {
    const int64_t m = x.size(0), n = q8->rows();
    auto xf = x.to(torch::kFloat32).contiguous();
    auto y = torch::empty({m, n}, torch::kFloat32);
    Int8Gemm(*q8, xf.data_ptr<float>(), m, y.data_ptr<float>(), CpuInt8GemvAvxAvailable());
    // bf16 outputs rounded as LibTorch rounds (nearest even), as the bf16 kernels do.
    return y.to(x.scalar_type());
  }
#if defined(ICAE_HAVE_AVX512BF16_KERNEL) || defined(ICAE_HAVE_AVX2_BF16_KERNEL)
  // The AVX2 kernel takes any number of rows (a prefill too): LibTorch's bf16 products have no
  // fast path on such CPUs. The AVX-512 ones take decode-sized products; oneDNN does the rest.
  const int64_t max_packed_rows = CpuBf16GemvAvailable() ? kMaxPackedRows : std::numeric_limits<int64_t>::max();
  if (packed != nullptr && packed->defined() && packed->rows() == w.size(0) && KernelInput(x, w, max_packed_rows)) {
    const int64_t m = x.size(0), n = packed->rows(), k = packed->cols(), k2 = PairPadded(k);
    auto xc = x.contiguous();
    const auto* xp = reinterpret_cast<const uint16_t*>(xc.data_ptr<at::BFloat16>());
    auto y = torch::empty({m, n}, x.options());
    auto* yp = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
    const uint16_t* wp = packed->data();
    // Chunks of 4 panels: the widest block at one row.
    const int64_t panels = (n + 31) / 32, grain = ParallelGrain(m * 32 * k2, 64 * k2);
#if defined(ICAE_HAVE_AVX2_BF16_KERNEL)
    if (!CpuBf16GemvAvailable()) {
      // The AVX2 kernel broadcasts float32 inputs: the rows widened once, zero-padded to k2.
      thread_local std::vector<float> xf;
      xf.resize(static_cast<size_t>(m * k2));
      for (int64_t j = 0; j < m; ++j) {
        WidenBf16Avx2(xp + j * k, xf.data() + j * k2, k);
        if (k2 != k) xf[j * k2 + k] = 0.0f;
      }
      const float* xfp = xf.data();
      ParallelForDynamic(panels, grain, 4, [&](int64_t b, int64_t e) {
        PackedGemmBf16Avx2(wp, n, k2, xfp, k2, m, yp, n, b, e);
      });
      return y;
    }
#endif
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
    // The kernel reads inputs in pairs: an odd k gets a copy with a zero after each row.
    thread_local std::vector<uint16_t> xbuf;
    if (k2 != k) {
      xbuf.assign(static_cast<size_t>(m * k2), 0);
      for (int64_t j = 0; j < m; ++j) std::memcpy(xbuf.data() + j * k2, xp + j * k, static_cast<size_t>(k) * 2);
      xp = xbuf.data();
    }
    const PackedBf16Kernel kernel = PackedBf16KernelInUse();
    ParallelForDynamic(panels, grain, 4, [&](int64_t b, int64_t e) {
#if defined(ICAE_HAVE_AMX_BF16_KERNEL)
      if (kernel == PackedBf16Kernel::kAmx) return PackedGemmBf16Amx(wp, n, k2, xp, k2, m, yp, n, b, e);
#endif
      PackedGemmBf16Avx512(wp, n, k2, xp, k2, m, yp, n, b, e, kernel == PackedBf16Kernel::kDot);
    });
    return y;
#endif
  }
#endif
#if defined(ICAE_HAVE_AVX512BF16_KERNEL)
  // Up to 8 rows (sequences in a decode step) share one pass over the weights; the kernel is
  // FMA-bound only past that. Its arithmetic per row does not depend on the number of rows.
  constexpr int64_t kMaxRows = 8;
  if (Bf16CpuWeight(w) && CpuBf16GemvAvailable() && w.is_contiguous() && KernelInput(x, w, kMaxRows)) {
    const int64_t m = x.size(0), n = w.size(0), k = w.size(1);
    const int64_t ldx = (k + 31) / 32 * 32;
    auto xc = x.contiguous();
    // The inputs on a cache-line boundary (split loads cost ~30% at 8 rows); no allocation
    // per call once grown.
    thread_local std::vector<float> xbuf;
    if (static_cast<int64_t>(xbuf.size()) < m * ldx + 16) xbuf.resize(m * ldx + 16);
    float* xf = xbuf.data() + (16 - reinterpret_cast<uintptr_t>(xbuf.data()) / 4 % 16) % 16;
    GemvInputLayout(reinterpret_cast<const uint16_t*>(xc.data_ptr<at::BFloat16>()), m, k, ldx, xf);
    auto y = torch::empty({m, n}, x.options());
    const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
    const float* xp = xf;
    auto* yp = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
    at::parallel_for(0, n, std::max<int64_t>(16, ParallelGrain(m * k, 2 * k)), [&](int64_t b, int64_t e) {
      // Accumulate a block in float32 on the stack, round once to bf16.
      constexpr int64_t kBlock = 128;
      float buf[kMaxRows * kBlock];
      for (int64_t s = b; s < e; s += kBlock) {
        const int64_t t = std::min<int64_t>(e, s + kBlock);
        GemvBf16Avx512(wp + s * k, xp, ldx, m, buf, kBlock, k, 0, t - s);
        for (int64_t j = 0; j < m; ++j) RoundToBf16Avx512(buf + j * kBlock, yp + j * n + s, t - s);
      }
    });
    return y;
  }
#endif
  return PlainLinear(x, w);
}

bool UpcastBf16Products(const torch::Tensor& x) {
  return x.scalar_type() == torch::kBFloat16 && x.device().is_cpu() && !CpuBf16GemvAvailable() &&
         (c10::InferenceMode::is_enabled() || !torch::GradMode::is_enabled());
}

torch::Tensor PlainLinear(const torch::Tensor& x, const torch::Tensor& w) {
  if (UpcastBf16Products(x) && w.scalar_type() == torch::kBFloat16) {
    return torch::linear(x.to(torch::kFloat32), w.to(torch::kFloat32)).to(torch::kBFloat16);
  }
  return torch::linear(x, w);
}

}  // namespace icae
