// UTF-8 helpers with SentencePiece's exact rules for what counts as a valid character, so our
// normalisation and byte-piece reassembly replace malformed input with U+FFFD exactly where
// SentencePiece does.
#ifndef ICAE_COMMON_TOKENIZER_UTF8_H_
#define ICAE_COMMON_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace icae::tokenizer_internal {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Decodes one character at the start of `s` (non-empty). Returns true and sets *len when the
// bytes are a well-formed, shortest-form UTF-8 encoding of a scalar value (no surrogates,
// <= U+10FFFF). Otherwise returns false with *len = 1: the caller consumes one byte.
bool DecodeUtf8Char(std::string_view s, size_t* len);

// Byte length a lead byte announces, without validating: 1 for ASCII and for stray bytes.
// (SentencePiece's OneCharLen, used to split normalised text into initial symbols.)
inline size_t Utf8LeadLength(uint8_t b) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[b >> 4];
}

// True if `s` is entirely well-formed UTF-8 (by DecodeUtf8Char's rules).
bool IsValidUtf8(std::string_view s);

// Turns a stream of raw bytes (from byte-fallback tokens) into UTF-8 text the way
// SentencePiece's decoder does for a run of byte pieces: each well-formed character is copied,
// each byte that cannot start one becomes U+FFFD. Bytes that may still become a character are
// held back until the next byte or Flush(), so output never splits a character.
class Utf8Assembler {
 public:
  // Appends the text completed by `b` (possibly none) to *out.
  void Add(uint8_t b, std::string* out);
  // Ends the run: held-back bytes become U+FFFD each (they can no longer be completed).
  void Flush(std::string* out);
  bool empty() const { return pending_len_ == 0; }

 private:
  // Emits as much of pending_ as is decided; keeps a possibly-incomplete tail.
  void Drain(std::string* out, bool at_end);

  char pending_[4] = {0, 0, 0, 0};
  size_t pending_len_ = 0;
};

// "<0x41>" -> 0x41; -1 if `piece` is not exactly a byte-fallback piece.
int ParseBytePiece(std::string_view piece);

}  // namespace icae::tokenizer_internal

#endif  // ICAE_COMMON_TOKENIZER_UTF8_H_
