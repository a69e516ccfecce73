// The llama2.c checkpoint header (`icae convert llama2c`): the header and the file size it
// implies, checked before any table is copied out of the file.
#include <cstddef>
#include <cstdint>

#include "common/model/llama2c_header.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header = icae::ParseLlama2cHeader(data, size);
  if (!header.ok()) return 0;
  // The converter copies each part in turn: together they must be exactly the file.
  uint64_t bytes = icae::Llama2cHeader::kBytes;
  for (const auto& part : header->Parts()) {
    uint64_t n = 4;
    for (int64_t d : part.shape) {
      FUZZ_CHECK(d > 0);
      n *= static_cast<uint64_t>(d);
    }
    bytes += n;
  }
  FUZZ_CHECK(bytes == size);
  return 0;
}
