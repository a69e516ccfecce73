// gtest helpers for absl::Status / absl::StatusOr, so that tests assert on a helper's error
// (and print it) instead of dereferencing a failed StatusOr.
#ifndef ICAE_TESTS_TESTING_STATUS_H_
#define ICAE_TESTS_TESTING_STATUS_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/util/status_macros.h"

// ASSERT_OK_AND_ASSIGN(auto x, StatusOrExpr()): fails the test (and returns) with the status,
// or assigns the value.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ICAE_ASSERT_OK_AND_ASSIGN_IMPL_(ICAE_CONCAT_(icae_test_statusor_, __LINE__), lhs, expr)
#define ICAE_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  ASSERT_TRUE(tmp.ok()) << tmp.status();                \
  lhs = std::move(tmp).value()

namespace icae::testing {

// EXPECT_THAT(status_or, IsOkAndHolds(value or matcher)): OK and matching; else prints the status.
MATCHER_P(IsOkAndHolds, expected, "is OK and holds a matching value") {
  if (!arg.ok()) {
    *result_listener << "status " << arg.status();
    return false;
  }
  *result_listener << "holds " << ::testing::PrintToString(*arg) << " ";
  return ::testing::ExplainMatchResult(expected, *arg, result_listener);
}

}  // namespace icae::testing

#endif  // ICAE_TESTS_TESTING_STATUS_H_
