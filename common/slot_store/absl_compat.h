// Debian's abseil 20220623 is built with its own absl::string_view (not an alias of
// std::string_view), so the two do not convert implicitly. These helpers cross the gap.
#ifndef ICAE_COMMON_SLOT_STORE_ABSL_COMPAT_H_
#define ICAE_COMMON_SLOT_STORE_ABSL_COMPAT_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace icae::slot_store {

inline absl::string_view ToAbsl(std::string_view s) { return {s.data(), s.size()}; }
inline std::string_view ToStd(absl::string_view s) { return {s.data(), s.size()}; }

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_ABSL_COMPAT_H_
