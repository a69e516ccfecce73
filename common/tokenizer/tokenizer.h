// Text <-> token ids for the models we serve, without libsentencepiece (which crashes next to
// gRPC's protobuf; see DESIGN.md "Environment facts"). Two formats:
//   - SentencePiece `tokenizer.model` (BPE), parsed with our own copy of its protobuf schema
//     and encoded/decoded with SentencePiece's semantics (Mistral, Llama);
//   - llama2.c `tokenizer.bin` (e.g. tok512.bin of stories260K) with llama2.c's semantics.
#ifndef ICAE_COMMON_TOKENIZER_TOKENIZER_H_
#define ICAE_COMMON_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace icae {

// Turns ids back into text one id at a time. Made by Tokenizer::NewDetokenizer(); it is the
// single implementation behind Tokenizer::Decode() and IncrementalDecoder, so the two always
// agree. Ids must be in range (callers check).
class Detokenizer {
 public:
  virtual ~Detokenizer() = default;
  // Appends the text completed by `id` to *out (possibly nothing: bytes of an unfinished
  // UTF-8 character are held back).
  virtual void Push(int32_t id, std::string* out) = 0;
  // Appends what is held back (incomplete characters become U+FFFD).
  virtual void Flush(std::string* out) = 0;
};

// Immutable once loaded: Encode/Decode/... may be called from many threads at once.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads a tokenizer file; the format is detected from the content (a SentencePiece
  // ModelProto or a llama2.c tokenizer .bin), not from the name. Errors name the file:
  // NOT_FOUND if it cannot be opened, INVALID_ARGUMENT / DATA_LOSS if it is not a valid
  // tokenizer (garbage, truncated, unsupported model type, ...).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  // Same for bytes already in memory; `origin` names them in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromBytes(std::string_view bytes,
                                                              const std::string& origin);
  // Loads `dir`/tokenizer.model, else `dir`/tokenizer.bin (NOT_FOUND if neither exists).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromModelDir(const std::string& dir);

  // Token ids for `text` (any bytes; malformed UTF-8 is handled as the format's reference
  // implementation does). With add_bos, starts with bos_id() (if the model has one).
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_bos) const = 0;

  // Text for `ids`: byte pieces are reassembled into UTF-8 (invalid sequences become U+FFFD),
  // control tokens (BOS/EOS) give no text, and the leading space that encoding adds is dropped
  // as the reference implementation does. Ids outside [0, vocab_size()) -> INVALID_ARGUMENT.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 if the model has none
  virtual int32_t eos_id() const = 0;  // -1 if the model has none
  virtual int32_t unk_id() const = 0;  // -1 if the model has none
  // The vocabulary entry of `id` as stored (SentencePiece: with U+2581 for spaces); "" if out
  // of range.
  virtual std::string IdToPiece(int32_t id) const = 0;
  // Id of the vocabulary entry `piece`, or -1.
  virtual int32_t PieceToId(std::string_view piece) const = 0;
  // "sentencepiece-bpe" or "llama2c".
  virtual std::string_view format() const = 0;

  // A fresh decoding state (see Detokenizer). The tokenizer must outlive it.
  virtual std::unique_ptr<Detokenizer> NewDetokenizer() const = 0;

  bool IsValidId(int32_t id) const { return id >= 0 && id < vocab_size(); }
};

// Streaming decode for generation: feed ids one at a time; each call returns the newly
// completed text. A UTF-8 character is never split across calls (incomplete byte sequences
// are held back), and the concatenation of all Push() results plus Flush() equals
// Decode(all ids). Ids out of range are skipped (they produce no text). The tokenizer must
// outlive the decoder.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer);
  // Continues after `context_ids` (e.g. the prompt): outputs are then what
  // Decode(context_ids + pushed ids) adds after the context's own text — so a continuation's
  // leading space is kept, and llama2.c's "drop the space after BOS" rule sees the context.
  IncrementalDecoder(const Tokenizer& tokenizer, absl::Span<const int32_t> context_ids);

  std::string Push(int32_t id);
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  std::unique_ptr<Detokenizer> detokenizer_;
};

}  // namespace icae

#endif  // ICAE_COMMON_TOKENIZER_TOKENIZER_H_
