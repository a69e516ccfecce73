// SentencePiece BPE model (`tokenizer.model`) with SentencePiece's own semantics
// (sentencepiece_processor.cc, bpe_model.cc, normalizer.cc), reimplemented so we never link
// libsentencepiece.
#ifndef ICAE_COMMON_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
#define ICAE_COMMON_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/bpe_merge.h"
#include "common/tokenizer/piece_map.h"
#include "common/tokenizer/sentencepiece_normalizer.h"
#include "common/tokenizer/tokenizer.h"

namespace icae {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Piece types, numbered as in SentencePiece's ModelProto.
  enum class PieceType : uint8_t {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6,
  };

  // Parses a serialized ModelProto. `origin` names it in errors.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> FromSerialized(
      std::string_view bytes, const std::string& origin);

  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  int32_t unk_id() const override { return unk_id_; }
  std::string IdToPiece(int32_t id) const override;
  int32_t PieceToId(std::string_view piece) const override;
  std::string_view format() const override { return "sentencepiece-bpe"; }
  std::unique_ptr<Detokenizer> NewDetokenizer() const override;

  // The normalised text Encode() segments (spaces as U+2581, with the dummy prefix).
  std::string Normalize(std::string_view text) const { return normalizer_.Normalize(text); }
  PieceType type(int32_t id) const { return pieces_[id].type; }

 private:
  class SpDetokenizer;
  struct Piece {
    std::string text;
    float score = 0;
    PieceType type = PieceType::kNormal;
    int16_t byte = -1;  // 0..255 for byte pieces <0xHH>
  };

  struct Symbol {
    uint32_t begin;
    uint32_t len;
  };
  // Scratch reused across the segments of one Encode() call.
  struct EncodeState {
    std::vector<Symbol> symbols;
    std::vector<tokenizer_internal::BpeLink> links;
    std::vector<tokenizer_internal::BpeCandidate> heap_storage;
    bool prev_unk = false;  // the last emitted piece was <unk>
  };

  SentencePieceTokenizer() = default;
  // BPE over one stretch of normalised text; appends its ids.
  void EncodeSegment(std::string_view text, EncodeState* state, std::vector<int32_t>* ids) const;
  // SentencePiece's PieceToId: reserved (control/unknown/byte) pieces first, then the others;
  // unknown text maps to unk_id_.
  int32_t LookupPiece(std::string_view piece) const;

  std::vector<Piece> pieces_;
  // Pieces BPE may produce (NORMAL, USER_DEFINED, UNUSED), by text.
  tokenizer_internal::PieceMap<int32_t> mergeable_;
  // CONTROL, UNKNOWN and BYTE pieces, by text.
  tokenizer_internal::PieceMap<int32_t> reserved_;
  std::array<int32_t, 256> byte_to_id_{};
  int32_t unk_id_ = -1;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  bool byte_fallback_ = false;
  bool has_unused_ = false;
  // Merging word by word (before each U+2581 that follows another character) is exact.
  bool split_before_space_ = false;
  // Decoder strips the dummy-prefix space only when encoding could have added one.
  bool strip_leading_space_ = true;
  bool remove_extra_whitespaces_ = false;
  std::string unk_surface_;
  tokenizer_internal::PrefixMatcher user_symbols_;
  tokenizer_internal::Normalizer normalizer_;
};

}  // namespace icae

#endif  // ICAE_COMMON_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
