// Helpers shared by tests: where the shared test data lives, temp dirs, running the CLI.
#ifndef ICAE_TESTS_TEST_UTIL_H_
#define ICAE_TESTS_TEST_UTIL_H_

#include <string>

namespace icae::testing {

// $ICAE_TESTDATA, else <source>/../shared/testdata.
std::string TestDataDir();
// The folder above TestDataDir() (holds models/, tokenizers/, corpora/).
std::string SharedDir();
// True if `path` exists.
bool PathExists(const std::string& path);
// A fresh empty directory under the system temp dir, removed by the caller (or left behind).
std::string MakeTempDir(const std::string& prefix);
// Path of the built `icae` command-line tool.
std::string IcaeBinary();
// Runs a shell command; returns its exit code and puts stdout in *out (stderr in *err if given).
int RunCommand(const std::string& command, std::string* out, std::string* err = nullptr);

}  // namespace icae::testing

// Skips the current test (with a message saying what is missing) when the shared test data
// is absent, as in a user's fresh clone. CI sets ICAE_TESTDATA and checks that it exists.
#define ICAE_REQUIRE_TESTDATA(path)                                                     \
  do {                                                                                  \
    if (!::icae::testing::PathExists(path)) {                                           \
      GTEST_SKIP() << "test data not found: " << (path)                                 \
                   << " (set ICAE_TESTDATA to the shared testdata folder)";             \
    }                                                                                   \
  } while (0)

#endif  // ICAE_TESTS_TEST_UTIL_H_
