// The safetensors header and tensor table, parsed from bytes in memory: u64 little-endian
// header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end)},
// "__metadata__": {...}}, then the data section. No LibTorch here, so the parser builds and
// is fuzzed on its own (fuzz/safetensors_header_fuzz.cc); SafetensorsFile::Open uses it.
#ifndef ICAE_COMMON_MODEL_SAFETENSORS_HEADER_H_
#define ICAE_COMMON_MODEL_SAFETENSORS_HEADER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace icae {

struct SafetensorsEntry {
  std::string dtype;  // one of the names SafetensorsDtypeSize knows
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // [begin, end) within the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;  // the string values of __metadata__
  uint64_t data_offset = 0;                     // 8 + N: where the data section starts
  uint64_t data_size = 0;
};

// Bytes per element of a safetensors dtype name ("F32", "BF16", ...); 0 if unknown.
size_t SafetensorsDtypeSize(const std::string& dtype);

// Validates the whole header against `size` bytes of file: JSON shape, dtypes, offsets in
// range, sizes consistent with shapes, no overlaps. InvalidArgument("invalid safetensors: ...")
// names the tensor; callers prefix the file's name.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* bytes, size_t size);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_SAFETENSORS_HEADER_H_
