// Status propagation helpers (abseil 20220623 ships none publicly).
#ifndef ICAE_COMMON_UTIL_STATUS_MACROS_H_
#define ICAE_COMMON_UTIL_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ICAE_CONCAT_INNER_(a, b) a##b
#define ICAE_CONCAT_(a, b) ICAE_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status icae_status_ = (expr);          \
    if (!icae_status_.ok()) return icae_status_;   \
  } while (0)

// ASSIGN_OR_RETURN(auto x, StatusOrExpr()): assigns the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(ICAE_CONCAT_(icae_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // ICAE_COMMON_UTIL_STATUS_MACROS_H_
