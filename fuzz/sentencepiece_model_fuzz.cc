// tokenizer.model (a serialized SentencePiece ModelProto, parsed with our own schema), then
// a short encode and decode with whatever vocabulary it holds.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/tokenizer/sentencepiece_tokenizer.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto tok = icae::SentencePieceTokenizer::FromSerialized(bytes, "tokenizer.model");
  if (!tok.ok()) return 0;
  const auto ids = (*tok)->Encode("Hello, w\xc3\xb6rld \xe2\x96\x81 <0x41> 12", /*add_bos=*/true);
  for (int32_t id : ids) FUZZ_CHECK((*tok)->IsValidId(id));
  auto text = (*tok)->Decode(ids);
  FUZZ_CHECK(text.ok());
  auto detok = (*tok)->NewDetokenizer();
  std::string streamed;
  for (int32_t id : ids) detok->Push(id, &streamed);
  detok->Flush(&streamed);
  FUZZ_CHECK(streamed == *text);
  return 0;
}
