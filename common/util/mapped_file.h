// Read-only memory-mapped file. Every accessor is bounds-checked by the caller against size().
#ifndef ICAE_COMMON_UTIL_MAPPED_FILE_H_
#define ICAE_COMMON_UTIL_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <ostream>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace icae {

class MappedFile {
 public:
  static absl::StatusOr<std::shared_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

// Reads a whole (small) file into a string.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `contents` to `path` atomically (temp file in the same folder, then rename).
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);
// Same, streaming: `write` fills the temp file (large files need no in-memory copy).
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::function<void(std::ostream&)>& write);

}  // namespace icae

#endif  // ICAE_COMMON_UTIL_MAPPED_FILE_H_
