// A llama2.c tokenizer file (tokenizer.bin), then a short encode and decode with it.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/tokenizer/llama2c_tokenizer.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto tok = icae::Llama2cTokenizer::FromBytes(bytes, "tokenizer.bin");
  if (!tok.ok()) return 0;
  CheckEncodeDecode(**tok, "Once upon a time, \xc3\xa9t\xc3\xa9 <0x0A>");
  return 0;
}
