// llama2.c's tokenizer file (`tokenizer.bin`, e.g. stories260K's tok512.bin) with the encode
// and decode rules of llama2.c's run.c (see shared/models/stories260K/SOURCE.md):
//   file:   int32 max_token_length, then per token: float32 score, int32 len, len bytes.
//   encode: [BOS] + " " (if text is non-empty) + per UTF-8 code point its piece or its bytes
//           as <0xHH> tokens (id = byte + 3), then best-score merges; no normalisation.
//   decode: piece text; a piece right after BOS loses a leading space; <0xHH> is the byte.
// Ids 1 and 2 are BOS and EOS, as in llama2.c.
#ifndef ICAE_COMMON_TOKENIZER_LLAMA2C_TOKENIZER_H_
#define ICAE_COMMON_TOKENIZER_LLAMA2C_TOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/piece_map.h"
#include "common/tokenizer/tokenizer.h"

namespace icae {

class Llama2cTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kBosId = 1;
  static constexpr int32_t kEosId = 2;
  static constexpr int32_t kByteOffset = 3;  // <0xHH> has id HH + 3
  // Bounds on the header's max_token_length that we accept (llama2.c files use ~7..50).
  static constexpr int32_t kMaxTokenLengthLimit = 1 << 16;

  // Parses the file's bytes; `origin` names it in errors. Every read is bounds-checked.
  static absl::StatusOr<std::unique_ptr<Llama2cTokenizer>> FromBytes(std::string_view bytes,
                                                                     const std::string& origin);
  // True if `bytes` start like a llama2.c tokenizer (a plausible max_token_length). A
  // SentencePiece ModelProto never does: its first bytes read as a huge int32.
  static bool LooksLikeLlama2c(std::string_view bytes);

  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const override { return kBosId; }
  int32_t eos_id() const override { return kEosId; }
  int32_t unk_id() const override { return 0; }
  std::string IdToPiece(int32_t id) const override;
  int32_t PieceToId(std::string_view piece) const override;
  std::string_view format() const override { return "llama2c"; }
  std::unique_ptr<Detokenizer> NewDetokenizer() const override;

  float score(int32_t id) const { return pieces_[id].score; }

 private:
  class Llama2cDetokenizer;
  struct Piece {
    std::string text;
    float score = 0;
    int16_t byte = -1;  // 0..255 if the text is exactly <0xHH>
  };

  Llama2cTokenizer() = default;

  std::vector<Piece> pieces_;
  // Piece text -> lowest id with that text.
  tokenizer_internal::PieceMap<int32_t> by_text_;
  int32_t space_id_ = -1;  // the dummy-prefix piece " "
};

}  // namespace icae

#endif  // ICAE_COMMON_TOKENIZER_LLAMA2C_TOKENIZER_H_
