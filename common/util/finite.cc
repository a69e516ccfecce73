#include "common/util/finite.h"

#include <cstring>

namespace icae {
namespace {

template <typename U>
int64_t Scan(const unsigned char* p, int64_t n, U mask) {
  // Blocks of 64 elements are tested with an OR-free early exit per block, so the common
  // all-finite case is a tight loop the compiler vectorises.
  constexpr int64_t kBlock = 64;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    bool bad = false;
    for (int64_t j = 0; j < kBlock; ++j) {
      U v;
      std::memcpy(&v, p + (i + j) * sizeof(U), sizeof(U));
      bad |= (v & mask) == mask;
    }
    if (bad) break;
  }
  for (; i < n; ++i) {
    U v;
    std::memcpy(&v, p + i * sizeof(U), sizeof(U));
    if ((v & mask) == mask) return i;
  }
  return -1;
}

}  // namespace

int64_t FirstNonFinite(FloatFormat format, const void* data, int64_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  switch (format) {
    case FloatFormat::kFloat32: return Scan<uint32_t>(p, n, 0x7f800000u);
    case FloatFormat::kBFloat16: return Scan<uint16_t>(p, n, static_cast<uint16_t>(0x7f80));
    case FloatFormat::kFloat16: return Scan<uint16_t>(p, n, static_cast<uint16_t>(0x7c00));
  }
  return -1;
}

}  // namespace icae
