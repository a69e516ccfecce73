// What the fuzz targets share: FUZZ_CHECK aborts (a libFuzzer finding) when a property of a
// parser's result does not hold, in every build type (assert() is gone under NDEBUG).
#ifndef ICAE_FUZZ_FUZZ_CHECK_H_
#define ICAE_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                             \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

#endif  // ICAE_FUZZ_FUZZ_CHECK_H_
