// Hash maps keyed by piece text that can be probed with a std::string_view without building a
// std::string. (Debian's abseil is built with its own absl::string_view, distinct from
// std::string_view, so its default transparent string hashing does not accept the latter.)
#ifndef ICAE_COMMON_TOKENIZER_PIECE_MAP_H_
#define ICAE_COMMON_TOKENIZER_PIECE_MAP_H_

#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace icae::tokenizer_internal {

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const {
    return absl::Hash<absl::string_view>{}(absl::string_view(s.data(), s.size()));
  }
};

struct StringViewEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};

template <typename K, typename V>
using StringKeyMap = absl::flat_hash_map<K, V, StringViewHash, StringViewEq>;

// Piece text -> value, probed with std::string_view.
template <typename V>
using PieceMap = StringKeyMap<std::string, V>;

inline absl::string_view ToAbsl(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace icae::tokenizer_internal

#endif  // ICAE_COMMON_TOKENIZER_PIECE_MAP_H_
