// NaN/Inf scans over raw IEEE data, without allocating: an element is non-finite exactly when
// its exponent bits are all ones, in each of the three formats. One home for the check the
// slot records and the model/adapter loaders apply to bytes that come from outside.
#ifndef ICAE_COMMON_UTIL_FINITE_H_
#define ICAE_COMMON_UTIL_FINITE_H_

#include <cstdint>

namespace icae {

enum class FloatFormat { kFloat32, kBFloat16, kFloat16 };

// Index of the first NaN or infinity among n elements at data (any alignment), or -1.
int64_t FirstNonFinite(FloatFormat format, const void* data, int64_t n);

}  // namespace icae

#endif  // ICAE_COMMON_UTIL_FINITE_H_
