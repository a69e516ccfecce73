#include "common/tokenizer/tokenizer.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/llama2c_tokenizer.h"
#include "common/tokenizer/sentencepiece_tokenizer.h"

namespace icae {
namespace {

// Tokenizer files are small (Mistral's is 0.5 MB; Llama 3 style vocabularies a few MB).
constexpr size_t kMaxTokenizerFileBytes = size_t{256} << 20;

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    const std::string what = absl::StrCat("cannot open tokenizer file ", path, ": ",
                                          std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(what) : absl::InvalidArgumentError(what);
  }
  struct stat st;
  if (::fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    std::fclose(f);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  if (static_cast<size_t>(st.st_size) > kMaxTokenizerFileBytes) {
    std::fclose(f);
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.st_size,
                                                   " bytes is too large for a tokenizer (max ",
                                                   kMaxTokenizerFileBytes, ")"));
  }
  std::string data(static_cast<size_t>(st.st_size), '\0');
  const size_t got = data.empty() ? 0 : std::fread(data.data(), 1, data.size(), f);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed || got != data.size()) {
    return absl::DataLossError(absl::StrCat("error reading tokenizer file ", path));
  }
  return data;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromBytes(std::string_view bytes,
                                                                const std::string& origin) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": empty file, not a tokenizer"));
  }
  if (Llama2cTokenizer::LooksLikeLlama2c(bytes)) {
    auto tok = Llama2cTokenizer::FromBytes(bytes, origin);
    if (!tok.ok()) return tok.status();
    return std::unique_ptr<Tokenizer>(std::move(tok).value());
  }
  auto tok = SentencePieceTokenizer::FromSerialized(bytes, origin);
  if (!tok.ok()) {
    if (tok.status().code() == absl::StatusCode::kDataLoss &&
        static_cast<uint8_t>(bytes[0]) != 0x0A) {
      // Neither format's first bytes: say both were tried.
      return absl::InvalidArgumentError(
          absl::StrCat(origin,
                       ": not a tokenizer: neither a SentencePiece model (protobuf parsing "
                       "failed) nor a llama2.c tokenizer .bin (implausible header)"));
    }
    return tok.status();
  }
  return std::unique_ptr<Tokenizer>(std::move(tok).value());
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  auto data = ReadSmallFile(path);
  if (!data.ok()) return data.status();
  return FromBytes(*data, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromModelDir(const std::string& dir) {
  for (const char* name : {"tokenizer.model", "tokenizer.bin"}) {
    const std::string path = absl::StrCat(dir, "/", name);
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) return Load(path);
  }
  return absl::NotFoundError(
      absl::StrCat("no tokenizer.model or tokenizer.bin in model folder ", dir));
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!IsValidId(ids[i])) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", ids[i], " at position ", i,
                                                     " is out of range [0, ", vocab_size(),
                                                     ")"));
    }
  }
  std::string text;
  auto detok = NewDetokenizer();
  for (int32_t id : ids) detok->Push(id, &text);
  detok->Flush(&text);
  return text;
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer)
    : tokenizer_(tokenizer), detokenizer_(tokenizer.NewDetokenizer()) {}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer,
                                       absl::Span<const int32_t> context_ids)
    : IncrementalDecoder(tokenizer) {
  std::string discard;
  for (int32_t id : context_ids) {
    if (tokenizer_.IsValidId(id)) detokenizer_->Push(id, &discard);
  }
}

std::string IncrementalDecoder::Push(int32_t id) {
  std::string out;
  if (tokenizer_.IsValidId(id)) detokenizer_->Push(id, &out);
  return out;
}

std::string IncrementalDecoder::Flush() {
  std::string out;
  detokenizer_->Flush(&out);
  return out;
}

}  // namespace icae
