#include "common/tokenizer/llama2c_tokenizer.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/bpe_merge.h"
#include "common/tokenizer/utf8.h"

namespace icae {

using tokenizer_internal::BpeLink;
using tokenizer_internal::ParseBytePiece;
using tokenizer_internal::Utf8Assembler;

namespace {

int32_t ReadI32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);  // files are little-endian, as is every machine we build for
  return static_cast<int32_t>(v);
}

float ReadF32(const char* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

bool Llama2cTokenizer::LooksLikeLlama2c(std::string_view bytes) {
  if (bytes.size() < 4) return false;
  const int32_t max_len = ReadI32(bytes.data());
  return max_len >= 1 && max_len <= kMaxTokenLengthLimit;
}

absl::StatusOr<std::unique_ptr<Llama2cTokenizer>> Llama2cTokenizer::FromBytes(
    std::string_view bytes, const std::string& origin) {
  auto error = [&origin](absl::StatusCode code, absl::string_view what) {
    return absl::Status(code, absl::StrCat(origin, ": llama2.c tokenizer: ", what));
  };
  if (bytes.size() < 4) {
    return error(absl::StatusCode::kDataLoss,
                 absl::StrCat("file has ", bytes.size(), " bytes, too short for the header"));
  }
  const int32_t max_len = ReadI32(bytes.data());
  if (max_len < 1 || max_len > kMaxTokenLengthLimit) {
    return error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("max_token_length ", max_len, " is out of range [1, ",
                              kMaxTokenLengthLimit, "]"));
  }
  std::unique_ptr<Llama2cTokenizer> tok(new Llama2cTokenizer());
  size_t pos = 4;
  while (pos < bytes.size()) {
    const size_t id = tok->pieces_.size();
    if (bytes.size() - pos < 8) {
      return error(absl::StatusCode::kDataLoss,
                   absl::StrCat("truncated: token ", id, " at offset ", pos, " needs 8 header "
                                "bytes, ", bytes.size() - pos, " left"));
    }
    const float score = ReadF32(bytes.data() + pos);
    const int32_t len = ReadI32(bytes.data() + pos + 4);
    pos += 8;
    if (len < 0 || len > max_len) {
      return error(absl::StatusCode::kInvalidArgument,
                   absl::StrCat("token ", id, " at offset ", pos - 8, " has length ", len,
                                ", outside [0, max_token_length=", max_len, "]"));
    }
    if (bytes.size() - pos < static_cast<size_t>(len)) {
      return error(absl::StatusCode::kDataLoss,
                   absl::StrCat("truncated: token ", id, " needs ", len, " bytes at offset ",
                                pos, ", ", bytes.size() - pos, " left"));
    }
    Piece p;
    p.text.assign(bytes.data() + pos, len);
    p.score = score;
    p.byte = static_cast<int16_t>(ParseBytePiece(p.text));
    pos += len;
    tok->by_text_.try_emplace(p.text, static_cast<int32_t>(id));
    tok->pieces_.push_back(std::move(p));
  }
  // Byte fallback emits ids byte + 3 for any byte, so all of them must exist.
  if (tok->pieces_.size() < 256 + kByteOffset) {
    return error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("has ", tok->pieces_.size(), " tokens; need at least ",
                              256 + kByteOffset, " (<unk>, BOS, EOS and 256 byte tokens)"));
  }
  if (auto it = tok->by_text_.find(" "); it != tok->by_text_.end()) tok->space_id_ = it->second;
  return tok;
}

std::string Llama2cTokenizer::IdToPiece(int32_t id) const {
  return IsValidId(id) ? pieces_[id].text : std::string();
}

int32_t Llama2cTokenizer::PieceToId(std::string_view piece) const {
  auto it = by_text_.find(piece);
  return it == by_text_.end() ? -1 : it->second;
}

std::vector<int32_t> Llama2cTokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> tokens;
  tokens.reserve(text.size() + 2);
  if (add_bos) tokens.push_back(kBosId);
  if (!text.empty() && space_id_ >= 0) tokens.push_back(space_id_);
  // Code points as llama2.c groups them: a byte that is not a continuation byte starts a new
  // group; at most 4 bytes per group.
  for (size_t i = 0; i < text.size();) {
    size_t len = 1;
    while (i + len < text.size() && len < 4 &&
           (static_cast<uint8_t>(text[i + len]) & 0xC0) == 0x80) {
      ++len;
    }
    const std::string_view cp = text.substr(i, len);
    if (auto it = by_text_.find(cp); it != by_text_.end()) {
      tokens.push_back(it->second);
    } else {
      for (char c : cp) tokens.push_back(static_cast<uint8_t>(c) + kByteOffset);
    }
    i += len;
  }

  // llama2.c merges the *stored texts* of adjacent tokens (so a byte token takes part as the
  // literal "<0xHH>"), and only when the result's score beats its -1e10 starting value.
  std::vector<BpeLink> links(tokens.size());
  for (size_t i = 0; i < links.size(); ++i) {
    links[i].prev = static_cast<int32_t>(i) - 1;
    links[i].next = i + 1 < links.size() ? static_cast<int32_t>(i) + 1 : -1;
  }
  std::string scratch;
  std::vector<tokenizer_internal::BpeCandidate> heap;
  tokenizer_internal::RunBpeMerges(
      links,
      [&](int32_t l, int32_t r, float* score, int32_t* merged) {
        scratch.assign(pieces_[tokens[l]].text);
        scratch.append(pieces_[tokens[r]].text);
        auto it = by_text_.find(scratch);
        if (it == by_text_.end() || !(pieces_[it->second].score > -1e10f)) return false;
        *score = pieces_[it->second].score;
        *merged = it->second;
        return true;
      },
      [&](int32_t l, int32_t /*r*/, int32_t merged) { tokens[l] = merged; }, &heap);

  std::vector<int32_t> ids;
  ids.reserve(tokens.size());
  for (int32_t i = links.empty() ? -1 : 0; i >= 0; i = links[i].next) ids.push_back(tokens[i]);
  return ids;
}

// llama2.c's decode(prev, token) over a stream, with two changes for a text API: BOS/EOS
// give no text (llama2.c would print "\n<s>\n"), and runs of byte tokens are reassembled into
// valid UTF-8 (invalid bytes become U+FFFD) instead of being printed raw.
class Llama2cTokenizer::Llama2cDetokenizer final : public Detokenizer {
 public:
  explicit Llama2cDetokenizer(const Llama2cTokenizer& tok) : tok_(tok) {}

  void Push(int32_t id, std::string* out) override {
    const Piece& p = tok_.pieces_[id];
    const int32_t prev = prev_;
    prev_ = id;
    if (p.byte >= 0) {
      bytes_.Add(static_cast<uint8_t>(p.byte), out);
      return;
    }
    bytes_.Flush(out);
    if (id == kBosId || id == kEosId) return;
    std::string_view text = p.text;
    if (prev == kBosId && !text.empty() && text[0] == ' ') text.remove_prefix(1);
    out->append(text);
  }

  void Flush(std::string* out) override { bytes_.Flush(out); }

 private:
  const Llama2cTokenizer& tok_;
  Utf8Assembler bytes_;
  int32_t prev_ = -1;
};

std::unique_ptr<Detokenizer> Llama2cTokenizer::NewDetokenizer() const {
  return std::make_unique<Llama2cDetokenizer>(*this);
}

}  // namespace icae
