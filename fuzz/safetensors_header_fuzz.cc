// The safetensors header and tensor table (what SafetensorsFile::Open checks before any
// tensor is read from a mapped file).
#include <cstddef>
#include <cstdint>

#include "common/model/safetensors_header.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header = icae::ParseSafetensorsHeader(data, size);
  if (!header.ok()) return 0;
  // What the loaders rely on: every tensor lies inside the data section, its byte count
  // matches its shape, and its dimensions are valid tensor sizes.
  FUZZ_CHECK(header->data_offset + header->data_size == size);
  for (const auto& [name, e] : header->tensors) {
    FUZZ_CHECK(e.begin <= e.end && e.end <= header->data_size);
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      FUZZ_CHECK(d >= 0);
      numel *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(numel * icae::SafetensorsDtypeSize(e.dtype) == e.end - e.begin);
  }
  return 0;
}
