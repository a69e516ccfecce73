#include "common/tokenizer/sentencepiece_tokenizer.h"

#include <climits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/tokenizer/bpe_merge.h"
#include "common/tokenizer/sentencepiece_model.pb.h"
#include "common/tokenizer/utf8.h"

namespace icae {

using tokenizer_internal::BpeLink;
using tokenizer_internal::ParseBytePiece;
using tokenizer_internal::kSpaceSymbol;
using tokenizer_internal::Utf8Assembler;

namespace {

const char* ModelTypeName(int t) {
  switch (t) {
    case spm::TrainerSpec::UNIGRAM: return "UNIGRAM";
    case spm::TrainerSpec::BPE: return "BPE";
    case spm::TrainerSpec::WORD: return "WORD";
    case spm::TrainerSpec::CHAR: return "CHAR";
    default: return "unknown";
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::FromSerialized(
    std::string_view bytes, const std::string& origin) {
  auto error = [&origin](absl::StatusCode code, absl::string_view what) {
    return absl::Status(code, absl::StrCat(origin, ": ", what));
  };
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return error(absl::StatusCode::kInvalidArgument, "too large for a SentencePiece model");
  }
  spm::ModelProto proto;
  if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return error(absl::StatusCode::kDataLoss,
                 "not a valid SentencePiece model: protobuf parsing failed (truncated or "
                 "corrupt file)");
  }
  if (proto.pieces_size() == 0) {
    return error(absl::StatusCode::kInvalidArgument, "SentencePiece model has no pieces");
  }
  // Real models always carry both specs; a file cut at a field boundary still parses, and
  // silently falling back to the defaults would tokenize differently.
  if (!proto.has_trainer_spec() || !proto.has_normalizer_spec()) {
    return error(absl::StatusCode::kDataLoss,
                 absl::StrCat("SentencePiece model has no ",
                              proto.has_trainer_spec() ? "normalizer_spec" : "trainer_spec",
                              " (truncated file?)"));
  }
  const spm::TrainerSpec& trainer = proto.trainer_spec();
  if (trainer.model_type() != spm::TrainerSpec::BPE) {
    return error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("SentencePiece model_type ", ModelTypeName(trainer.model_type()),
                              " is not supported (only BPE)"));
  }

  std::unique_ptr<SentencePieceTokenizer> tok(new SentencePieceTokenizer());
  tok->byte_to_id_.fill(-1);
  tok->pieces_.resize(proto.pieces_size());
  for (int i = 0; i < proto.pieces_size(); ++i) {
    const auto& sp = proto.pieces(i);
    Piece& p = tok->pieces_[i];
    p.text = sp.piece();
    p.score = sp.score();
    p.type = static_cast<PieceType>(sp.type());
    if (p.text.empty()) {
      return error(absl::StatusCode::kInvalidArgument, absl::StrCat("piece ", i, " is empty"));
    }
    const bool mergeable = p.type == PieceType::kNormal || p.type == PieceType::kUserDefined ||
                           p.type == PieceType::kUnused;
    auto& map = mergeable ? tok->mergeable_ : tok->reserved_;
    if (tok->mergeable_.count(p.text) || tok->reserved_.count(p.text)) {
      return error(absl::StatusCode::kInvalidArgument,
                   absl::StrCat("piece ", i, " '", p.text, "' is defined twice"));
    }
    map.emplace(p.text, i);
    switch (p.type) {
      case PieceType::kUnknown:
        if (tok->unk_id_ >= 0) {
          return error(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("pieces ", tok->unk_id_, " and ", i, " are both UNKNOWN"));
        }
        tok->unk_id_ = i;
        break;
      case PieceType::kByte: {
        const int b = ParseBytePiece(p.text);
        if (b < 0) {
          return error(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("byte piece ", i, " '", p.text, "' is not of the form <0xHH>"));
        }
        p.byte = static_cast<int16_t>(b);
        tok->byte_to_id_[b] = i;
        break;
      }
      case PieceType::kUserDefined:
        tok->user_symbols_.Add(p.text);
        break;
      case PieceType::kUnused:
        tok->has_unused_ = true;
        break;
      default:
        break;
    }
  }
  if (tok->unk_id_ < 0) {
    return error(absl::StatusCode::kInvalidArgument, "SentencePiece model has no UNKNOWN piece");
  }
  tok->byte_fallback_ = trainer.byte_fallback();
  if (tok->byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      if (tok->byte_to_id_[b] < 0) {
        return error(absl::StatusCode::kInvalidArgument,
                     absl::StrFormat("byte_fallback is set but piece <0x%02X> is missing", b));
      }
    }
  }
  // As SentencePieceProcessor::bos_id(): the id of bos_piece if it is a control piece.
  auto control_id = [&tok](const std::string& piece) {
    const int32_t id = tok->LookupPiece(piece);
    return tok->pieces_[id].type == PieceType::kControl ? id : -1;
  };
  // Word-by-word merging is exact only if no piece has a U+2581 right after another character
  // (true for models trained with split_by_whitespace, e.g. Mistral's), and only without
  // UNUSED pieces, whose re-splitting SentencePiece records across the whole text.
  tok->split_before_space_ = !tok->has_unused_;
  for (const Piece& p : tok->pieces_) {
    if (p.type != PieceType::kNormal && p.type != PieceType::kUserDefined) continue;
    const std::string_view t = p.text;
    for (size_t pos = t.find(kSpaceSymbol, 1); pos != std::string_view::npos;
         pos = t.find(kSpaceSymbol, pos + 1)) {
      if (pos < kSpaceSymbol.size() ||
          t.substr(pos - kSpaceSymbol.size(), kSpaceSymbol.size()) != kSpaceSymbol) {
        tok->split_before_space_ = false;
        break;
      }
    }
    if (!tok->split_before_space_) break;
  }
  tok->bos_id_ = control_id(trainer.bos_piece());
  tok->eos_id_ = control_id(trainer.eos_piece());
  tok->unk_surface_ = trainer.unk_surface();

  const spm::NormalizerSpec& norm = proto.normalizer_spec();
  tokenizer_internal::NormalizerOptions options;
  options.add_dummy_prefix = norm.add_dummy_prefix();
  options.remove_extra_whitespaces = norm.remove_extra_whitespaces();
  options.escape_whitespaces = norm.escape_whitespaces();
  options.treat_whitespace_as_suffix = trainer.treat_whitespace_as_suffix();
  tok->strip_leading_space_ = norm.add_dummy_prefix() || norm.remove_extra_whitespaces();
  tok->remove_extra_whitespaces_ = norm.remove_extra_whitespaces();
  const absl::Status st = tok->normalizer_.Init(
      options, norm.precompiled_charsmap(),
      tok->user_symbols_.empty() ? nullptr : &tok->user_symbols_);
  if (!st.ok()) return error(absl::StatusCode::kInvalidArgument, st.message());
  return tok;
}

int32_t SentencePieceTokenizer::LookupPiece(std::string_view piece) const {
  if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
  if (auto it = mergeable_.find(piece); it != mergeable_.end()) return it->second;
  return unk_id_;
}

int32_t SentencePieceTokenizer::PieceToId(std::string_view piece) const {
  if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
  if (auto it = mergeable_.find(piece); it != mergeable_.end()) return it->second;
  return -1;
}

std::string SentencePieceTokenizer::IdToPiece(int32_t id) const {
  return IsValidId(id) ? pieces_[id].text : std::string();
}

std::vector<int32_t> SentencePieceTokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  const std::string normalized = normalizer_.Normalize(text);
  if (normalized.empty()) return ids;
  ids.reserve(ids.size() + normalized.size() / 3);

  EncodeState state;
  if (!split_before_space_) {
    EncodeSegment(normalized, &state, &ids);
    return ids;
  }
  // SentencePiece merges over the whole text, but when no piece can contain "x▁" (x not ▁),
  // no merge ever crosses the point before a ▁ that follows another character, so merging
  // word by word gives the same ids — and keeps the heap small and in cache.
  const std::string_view all(normalized);
  size_t start = 0;
  for (size_t pos = all.find(kSpaceSymbol, 1); pos != std::string_view::npos;
       pos = all.find(kSpaceSymbol, pos + kSpaceSymbol.size())) {
    if (pos >= kSpaceSymbol.size() &&
        all.substr(pos - kSpaceSymbol.size(), kSpaceSymbol.size()) == kSpaceSymbol) {
      continue;  // inside a run of spaces: whitespace pieces may span it
    }
    if (pos > start) EncodeSegment(all.substr(start, pos - start), &state, &ids);
    start = pos;
  }
  EncodeSegment(all.substr(start), &state, &ids);
  return ids;
}

void SentencePieceTokenizer::EncodeSegment(std::string_view text, EncodeState* state,
                                           std::vector<int32_t>* ids) const {
  // Initial symbols: whole user-defined symbols (never merged), else one character each.
  std::vector<Symbol>& symbols = state->symbols;
  std::vector<BpeLink>& links = state->links;
  symbols.clear();
  links.clear();
  for (size_t pos = 0; pos < text.size();) {
    const std::string_view rest = text.substr(pos);
    size_t len = user_symbols_.Match(rest);
    const bool frozen = len > 0;
    if (!frozen) {
      len = std::min(rest.size(),
                     tokenizer_internal::Utf8LeadLength(static_cast<uint8_t>(rest[0])));
    }
    BpeLink link;
    link.prev = static_cast<int32_t>(symbols.size()) - 1;
    link.next = pos + len < text.size() ? static_cast<int32_t>(symbols.size()) + 1 : -1;
    link.frozen = frozen;
    links.push_back(link);
    symbols.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(len)});
    pos += len;
  }

  auto view = [text](uint32_t begin, uint32_t len) { return text.substr(begin, len); };
  // For UNUSED pieces: the pair a merged piece came from, to split it again at the end
  // (SentencePiece records it when the pair is found; the last one found wins).
  tokenizer_internal::StringKeyMap<std::string_view, std::pair<std::string_view, std::string_view>>
      rev_merge;
  tokenizer_internal::RunBpeMerges(
      links,
      [&](int32_t l, int32_t r, float* score, int32_t* merged) {
        const std::string_view piece = view(symbols[l].begin, symbols[l].len + symbols[r].len);
        auto it = mergeable_.find(piece);
        if (it == mergeable_.end()) return false;
        *merged = it->second;
        *score = pieces_[it->second].score;
        if (pieces_[it->second].type == PieceType::kUnused) {
          rev_merge[piece] = {view(symbols[l].begin, symbols[l].len),
                              view(symbols[r].begin, symbols[r].len)};
        }
        return true;
      },
      [&](int32_t l, int32_t r, int32_t /*merged*/) { symbols[l].len += symbols[r].len; },
      &state->heap_storage);

  auto emit = [&](std::string_view w, int32_t id) {
    const bool is_unk = pieces_[id].type == PieceType::kUnknown;
    if (is_unk && byte_fallback_) {
      for (char c : w) ids->push_back(byte_to_id_[static_cast<uint8_t>(c)]);
    } else if (!(is_unk && state->prev_unk)) {
      // A run of unknown pieces becomes one <unk> (SentencePiece merges their surfaces).
      ids->push_back(id);
    }
    state->prev_unk = is_unk;
  };
  // UNUSED pieces are split back into the pair they came from, recursively.
  auto resegment = [&](std::string_view w, auto& self) -> void {
    const int32_t id = LookupPiece(w);
    if (pieces_[id].type == PieceType::kUnused) {
      if (auto it = rev_merge.find(w); it != rev_merge.end()) {
        const auto parts = it->second;
        self(parts.first, self);
        self(parts.second, self);
        return;
      }
    }
    emit(w, id);
  };
  for (int32_t i = links.empty() ? -1 : 0; i >= 0; i = links[i].next) {
    const std::string_view w = view(symbols[i].begin, symbols[i].len);
    if (has_unused_) {
      resegment(w, resegment);
    } else {
      emit(w, LookupPiece(w));
    }
  }
}

// SentencePiece's Decode, one id at a time: runs of byte pieces are reassembled into UTF-8,
// control pieces are invisible, <unk> prints unk_surface, U+2581 becomes a space, and the
// first piece that starts the text loses its leading U+2581 (the dummy prefix) — also after
// leading control pieces such as <s>, as SentencePiece >= 0.1.99 does.
class SentencePieceTokenizer::SpDetokenizer final : public Detokenizer {
 public:
  explicit SpDetokenizer(const SentencePieceTokenizer& tok) : tok_(tok) {}

  void Push(int32_t id, std::string* out) override {
    const Piece& p = tok_.pieces_[id];
    const size_t before = out->size();
    if (p.type == PieceType::kByte) {
      bytes_.Add(static_cast<uint8_t>(p.byte), out);
      text_started_ |= out->size() > before;
      return;
    }
    bytes_.Flush(out);
    if (bos_ws_seen_ || text_started_ || out->size() > before) expect_bos_ws_ = false;
    bos_ws_seen_ = false;
    if (p.type == PieceType::kControl) {
      // invisible
    } else if (p.type == PieceType::kUnknown) {
      out->append(tok_.unk_surface_);
    } else {
      std::string_view piece = p.text;
      if (expect_bos_ws_ && tok_.strip_leading_space_ &&
          piece.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) {
        piece.remove_prefix(kSpaceSymbol.size());
        // With remove_extra_whitespaces every leading space goes, so keep expecting one.
        bos_ws_seen_ = !tok_.remove_extra_whitespaces_;
      }
      AppendUnescaped(piece, out);
    }
    text_started_ |= out->size() > before;
  }

  void Flush(std::string* out) override {
    const size_t before = out->size();
    bytes_.Flush(out);
    text_started_ |= out->size() > before;
  }

 private:
  static void AppendUnescaped(std::string_view piece, std::string* out) {
    size_t pos;
    while ((pos = piece.find(kSpaceSymbol)) != std::string_view::npos) {
      out->append(piece.data(), pos);
      out->push_back(' ');
      piece.remove_prefix(pos + kSpaceSymbol.size());
    }
    out->append(piece);
  }

  const SentencePieceTokenizer& tok_;
  Utf8Assembler bytes_;
  bool expect_bos_ws_ = true;  // the next visible piece starts the text
  bool bos_ws_seen_ = false;   // the previous piece consumed the dummy-prefix space
  bool text_started_ = false;  // some text has been produced
};

std::unique_ptr<Detokenizer> SentencePieceTokenizer::NewDetokenizer() const {
  return std::make_unique<SpDetokenizer>(*this);
}

}  // namespace icae
