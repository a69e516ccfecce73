// What the fuzz targets share: FUZZ_CHECK aborts (a libFuzzer finding) when a property of a
// parser's result does not hold, in every build type (assert() is gone under NDEBUG).
#ifndef ICAE_FUZZ_FUZZ_CHECK_H_
#define ICAE_FUZZ_FUZZ_CHECK_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#define FUZZ_CHECK(cond)                                                             \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

// Whatever vocabulary a parsed tokenizer holds: encoding `text` gives valid ids, and decoding
// them at once equals decoding them one at a time (the streaming detokenizer).
template <typename Tokenizer>
void CheckEncodeDecode(const Tokenizer& tok, std::string_view text) {
  const auto ids = tok.Encode(text, /*add_bos=*/true);
  for (int32_t id : ids) FUZZ_CHECK(tok.IsValidId(id));
  auto decoded = tok.Decode(ids);
  FUZZ_CHECK(decoded.ok());
  auto detok = tok.NewDetokenizer();
  std::string streamed;
  for (int32_t id : ids) detok->Push(id, &streamed);
  detok->Flush(&streamed);
  FUZZ_CHECK(streamed == *decoded);
}

#endif  // ICAE_FUZZ_FUZZ_CHECK_H_
