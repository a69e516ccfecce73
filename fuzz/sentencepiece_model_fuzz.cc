// tokenizer.model (a serialized SentencePiece ModelProto, parsed with our own schema), then
// a short encode and decode with whatever vocabulary it holds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/tokenizer/sentencepiece_tokenizer.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto tok = icae::SentencePieceTokenizer::FromSerialized(bytes, "tokenizer.model");
  if (!tok.ok()) return 0;
  CheckEncodeDecode(**tok, "Hello, w\xc3\xb6rld \xe2\x96\x81 <0x41> 12");
  return 0;
}
