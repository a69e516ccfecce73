// SentencePiece's text normalisation (normalizer.cc), driven by the model's NormalizerSpec:
// optional character-map rewriting (the precompiled charsmap, e.g. NFKC for spm_train's
// default "nmt_nfkc"; empty for "identity" as in Mistral), removal of extra whitespace,
// spaces -> U+2581, and the dummy prefix U+2581. Malformed UTF-8 bytes become U+FFFD.
#ifndef ICAE_COMMON_TOKENIZER_SENTENCEPIECE_NORMALIZER_H_
#define ICAE_COMMON_TOKENIZER_SENTENCEPIECE_NORMALIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace icae::tokenizer_internal {

inline constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

// Longest-prefix matcher over a small set of strings (SentencePiece's user-defined symbols,
// which are never split or normalised).
class PrefixMatcher {
 public:
  void Add(std::string_view s);
  // Length of the longest symbol that prefixes `s`, or 0.
  size_t Match(std::string_view s) const;
  bool empty() const { return by_first_byte_count_ == 0; }

 private:
  // Per first byte, the symbols starting with it, longest first.
  std::vector<std::vector<std::string>> by_first_byte_ = std::vector<std::vector<std::string>>(256);
  size_t by_first_byte_count_ = 0;
};

struct NormalizerOptions {
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool treat_whitespace_as_suffix = false;
};

class Normalizer {
 public:
  // `charsmap` is NormalizerSpec.precompiled_charsmap (may be empty); it is copied. Returns
  // INVALID_ARGUMENT if its framing is broken.
  absl::Status Init(const NormalizerOptions& options, std::string_view charsmap,
                    const PrefixMatcher* user_symbols);

  // The normalised form of `input` ("" for empty or, with remove_extra_whitespaces,
  // all-space input).
  std::string Normalize(std::string_view input) const;

 private:
  // One normalisation step at the start of `input` (non-empty): the replacement text and
  // how many input bytes it consumes.
  std::pair<std::string_view, size_t> NormalizePrefix(std::string_view input) const;
  // Longest charsmap rule matching a prefix of `input`: sets *value (offset into
  // replacements_) and returns the matched length, or 0.
  size_t TrieLongestPrefix(std::string_view input, uint32_t* value) const;

  NormalizerOptions options_;
  std::vector<uint32_t> trie_;  // Darts-clone double-array units
  std::string replacements_;    // NUL-terminated replacement strings
  const PrefixMatcher* user_symbols_ = nullptr;
};

}  // namespace icae::tokenizer_internal

#endif  // ICAE_COMMON_TOKENIZER_SENTENCEPIECE_NORMALIZER_H_
