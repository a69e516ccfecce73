#include "common/tokenizer/sentencepiece_normalizer.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/utf8.h"

namespace icae::tokenizer_internal {

void PrefixMatcher::Add(std::string_view s) {
  if (s.empty()) return;
  auto& list = by_first_byte_[static_cast<uint8_t>(s[0])];
  list.emplace_back(s);
  std::stable_sort(list.begin(), list.end(), [](const std::string& a, const std::string& b) {
    return a.size() > b.size();
  });
  ++by_first_byte_count_;
}

size_t PrefixMatcher::Match(std::string_view s) const {
  if (s.empty() || by_first_byte_count_ == 0) return 0;
  for (const std::string& cand : by_first_byte_[static_cast<uint8_t>(s[0])]) {
    if (s.substr(0, cand.size()) == cand) return cand.size();
  }
  return 0;
}

absl::Status Normalizer::Init(const NormalizerOptions& options, std::string_view charsmap,
                              const PrefixMatcher* user_symbols) {
  options_ = options;
  user_symbols_ = user_symbols;
  trie_.clear();
  replacements_.clear();
  if (charsmap.empty()) return absl::OkStatus();
  // Layout: uint32 little-endian trie size in bytes, the trie units, then the replacement
  // strings (each NUL-terminated) that trie values point into.
  if (charsmap.size() <= 4) {
    return absl::InvalidArgumentError("precompiled_charsmap is too short");
  }
  uint32_t trie_bytes = 0;
  for (int i = 3; i >= 0; --i) trie_bytes = (trie_bytes << 8) | static_cast<uint8_t>(charsmap[i]);
  if (trie_bytes > charsmap.size() - 4 || trie_bytes % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "precompiled_charsmap: trie size ", trie_bytes, " does not fit in ", charsmap.size(),
        " bytes"));
  }
  trie_.resize(trie_bytes / 4);
  for (size_t i = 0; i < trie_.size(); ++i) {
    const auto* p = reinterpret_cast<const uint8_t*>(charsmap.data() + 4 + 4 * i);
    trie_[i] = uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) |
               (uint32_t{p[3]} << 24);
  }
  replacements_.assign(charsmap.substr(4 + trie_bytes));
  return absl::OkStatus();
}

size_t Normalizer::TrieLongestPrefix(std::string_view input, uint32_t* value) const {
  // Darts-clone's commonPrefixSearch; every unit access is bounds-checked because the trie
  // comes from the model file.
  auto offset = [](uint32_t unit) { return (unit >> 10) << ((unit & (1U << 9)) >> 6); };
  auto label = [](uint32_t unit) { return unit & ((1U << 31) | 0xFF); };
  auto has_leaf = [](uint32_t unit) { return ((unit >> 8) & 1) == 1; };
  const size_t n = trie_.size();
  if (n == 0) return 0;
  size_t node = 0;
  uint32_t unit = trie_[node];
  node ^= offset(unit);
  size_t longest = 0;
  for (size_t i = 0; i < input.size(); ++i) {
    const uint8_t c = static_cast<uint8_t>(input[i]);
    node ^= c;
    if (node >= n) break;
    unit = trie_[node];
    if (label(unit) != c) break;
    node ^= offset(unit);
    if (node >= n) break;
    if (has_leaf(unit)) {
      longest = i + 1;
      *value = trie_[node] & ((1U << 31) - 1);
    }
  }
  return longest;
}

std::pair<std::string_view, size_t> Normalizer::NormalizePrefix(std::string_view input) const {
  if (user_symbols_ != nullptr) {
    const size_t len = user_symbols_->Match(input);
    if (len > 0) return {input.substr(0, len), len};
  }
  uint32_t value = 0;
  const size_t matched = trie_.empty() ? 0 : TrieLongestPrefix(input, &value);
  if (matched > 0 && value < replacements_.size()) {
    const char* s = replacements_.data() + value;
    const size_t max_len = replacements_.size() - value;
    const void* nul = std::memchr(s, '\0', max_len);
    const size_t len = nul ? static_cast<const char*>(nul) - s : max_len;
    return {std::string_view(s, len), matched};
  }
  size_t len;
  if (!DecodeUtf8Char(input, &len)) {
    // Malformed UTF-8: one byte becomes U+FFFD (as SentencePiece does).
    return {kReplacementChar, 1};
  }
  return {input.substr(0, len), len};
}

std::string Normalizer::Normalize(std::string_view input) const {
  std::string out;
  if (input.empty()) return out;
  if (options_.remove_extra_whitespaces) {
    while (!input.empty()) {
      const auto [text, consumed] = NormalizePrefix(input);
      if (text != " ") break;
      input.remove_prefix(consumed);
    }
    if (input.empty()) return out;
  }
  out.reserve(input.size() * 3 / 2 + 8);
  const std::string_view space = options_.escape_whitespaces ? kSpaceSymbol : " ";
  if (!options_.treat_whitespace_as_suffix && options_.add_dummy_prefix) out.append(space);

  bool prev_space = options_.remove_extra_whitespaces;
  while (!input.empty()) {
    auto [text, consumed] = NormalizePrefix(input);
    if (prev_space) {
      while (!text.empty() && text[0] == ' ') text.remove_prefix(1);
    }
    if (!text.empty()) {
      for (char c : text) {
        if (options_.escape_whitespaces && c == ' ') {
          out.append(kSpaceSymbol);
        } else {
          out.push_back(c);
        }
      }
      prev_space = text.back() == ' ';
    }
    input.remove_prefix(consumed);
    if (!options_.remove_extra_whitespaces) prev_space = false;
  }
  if (options_.remove_extra_whitespaces) {
    while (out.size() >= space.size() &&
           std::string_view(out).substr(out.size() - space.size()) == space) {
      out.resize(out.size() - space.size());
    }
  }
  if (options_.treat_whitespace_as_suffix && options_.add_dummy_prefix) out.append(space);
  return out;
}

}  // namespace icae::tokenizer_internal
