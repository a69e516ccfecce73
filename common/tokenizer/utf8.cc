#include "common/tokenizer/utf8.h"

#include <cstring>

namespace icae::tokenizer_internal {
namespace {

bool IsTrail(uint8_t b) { return (b & 0xC0) == 0x80; }
bool IsScalar(uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

}  // namespace

bool DecodeUtf8Char(std::string_view s, size_t* len) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  *len = 1;
  if (n == 0) return false;
  const uint8_t b = p[0];
  if (b < 0x80) return true;
  if (n >= 2 && (b & 0xE0) == 0xC0) {
    const uint32_t c = ((b & 0x1F) << 6) | (p[1] & 0x3F);
    if (IsTrail(p[1]) && c >= 0x80) {
      *len = 2;
      return true;
    }
  } else if (n >= 3 && (b & 0xF0) == 0xE0) {
    const uint32_t c = ((b & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    if (IsTrail(p[1]) && IsTrail(p[2]) && c >= 0x800 && IsScalar(c)) {
      *len = 3;
      return true;
    }
  } else if (n >= 4 && (b & 0xF8) == 0xF0) {
    const uint32_t c = ((b & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) |
                       (p[3] & 0x3F);
    if (IsTrail(p[1]) && IsTrail(p[2]) && IsTrail(p[3]) && c >= 0x10000 && IsScalar(c)) {
      *len = 4;
      return true;
    }
  }
  return false;
}

bool IsValidUtf8(std::string_view s) {
  while (!s.empty()) {
    size_t len;
    if (!DecodeUtf8Char(s, &len)) return false;
    s.remove_prefix(len);
  }
  return true;
}

void Utf8Assembler::Add(uint8_t b, std::string* out) {
  pending_[pending_len_++] = static_cast<char>(b);
  Drain(out, /*at_end=*/false);
}

void Utf8Assembler::Flush(std::string* out) { Drain(out, /*at_end=*/true); }

void Utf8Assembler::Drain(std::string* out, bool at_end) {
  while (pending_len_ > 0) {
    const std::string_view view(pending_, pending_len_);
    if (!at_end) {
      // Hold back a proper prefix of a multi-byte sequence whose bytes so far are all
      // continuation bytes: the next byte decides it. Whatever we decide later is what a
      // decoder that sees the whole run decides, since that only looks at the lead's length.
      const size_t want = Utf8LeadLength(static_cast<uint8_t>(pending_[0]));
      bool maybe = pending_len_ < want;
      for (size_t i = 1; maybe && i < pending_len_; ++i) {
        maybe = IsTrail(static_cast<uint8_t>(pending_[i]));
      }
      // Bytes 0xF8..0xFF announce length 4 in the table but can never start a character.
      if (maybe && static_cast<uint8_t>(pending_[0]) < 0xF8) return;
    }
    size_t len;
    if (DecodeUtf8Char(view, &len)) {
      out->append(pending_, len);
    } else {
      out->append(kReplacementChar);
    }
    std::memmove(pending_, pending_ + len, pending_len_ - len);
    pending_len_ -= len;
  }
}

int ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]);
  const int lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace icae::tokenizer_internal
