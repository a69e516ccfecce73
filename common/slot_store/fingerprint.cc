#include "common/slot_store/fingerprint.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/slot_store/sha256.h"
#include "common/util/status_macros.h"

namespace icae::slot_store {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status ErrnoStatus(int err, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  return err == ENOENT ? absl::NotFoundError(msg) : absl::FailedPreconditionError(msg);
}

// Reads exactly n bytes at offset (short files were ruled out by the caller's size checks).
absl::Status ReadAt(int fd, uint64_t offset, size_t n, char* out, const std::string& path) {
  while (n > 0) {
    ssize_t got = ::pread(fd, out, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return ErrnoStatus(errno, "reading " + path);
    if (got == 0) return absl::DataLossError(absl::StrCat(path, " shrank while being read"));
    out += got;
    offset += got;
    n -= got;
  }
  return absl::OkStatus();
}

absl::StatusOr<Sha256::Digest> FingerprintOne(const std::string& path,
                                              const FingerprintOptions& opt) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "opening " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat " + path);
  const uint64_t size = st.st_size;

  Sha256 h;
  h.UpdateField("icae-weights-fingerprint/v1");
  uint64_t header_len = 0;
  bool safetensors = false;
  if (size >= 9) {
    char head[9];
    RETURN_IF_ERROR(ReadAt(fd.get(), 0, sizeof head, head, path));
    for (int i = 0; i < 8; ++i) {
      header_len |= static_cast<uint64_t>(static_cast<uint8_t>(head[i])) << (8 * i);
    }
    safetensors = header_len >= 2 && header_len <= opt.max_header_bytes &&
                  header_len <= size - 8 && head[8] == '{';
  }
  h.UpdateU64(size);
  std::string buf;
  if (safetensors) {
    h.UpdateField("safetensors");
    buf.resize(header_len);
    RETURN_IF_ERROR(ReadAt(fd.get(), 8, header_len, buf.data(), path));
    h.UpdateField(buf);
    const uint64_t data_start = 8 + header_len;
    const uint64_t data_len = size - data_start;
    const uint64_t block = std::min<uint64_t>(opt.sample_block_bytes, data_len);
    const int blocks = block == 0 ? 0 : std::max(1, opt.sample_blocks);
    buf.resize(block);
    for (int k = 0; k < blocks; ++k) {
      const uint64_t span = data_len - block;
      const uint64_t off =
          blocks == 1 ? 0
                      : static_cast<uint64_t>(static_cast<unsigned __int128>(span) * k /
                                              (blocks - 1));
      RETURN_IF_ERROR(ReadAt(fd.get(), data_start + off, block, buf.data(), path));
      h.Update(buf);
    }
  } else {
    h.UpdateField("whole-file");
    buf.resize(1 << 20);
    for (uint64_t off = 0; off < size;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
      RETURN_IF_ERROR(ReadAt(fd.get(), off, n, buf.data(), path));
      h.Update(buf.data(), n);
      off += n;
    }
  }
  return h.Finish();
}

}  // namespace

absl::StatusOr<std::string> FingerprintFiles(const std::vector<std::string>& paths,
                                             const FingerprintOptions& options) {
  if (paths.empty()) return absl::InvalidArgumentError("FingerprintFiles: no files given");
  std::vector<Sha256::Digest> digests;
  digests.reserve(paths.size());
  for (const std::string& path : paths) {
    ASSIGN_OR_RETURN(Sha256::Digest d, FingerprintOne(path, options));
    digests.push_back(d);
  }
  std::sort(digests.begin(), digests.end());
  Sha256 h;
  h.UpdateField("icae-weights-fingerprint-set/v1");
  h.UpdateU64(digests.size());
  for (const auto& d : digests) h.Update(d.data(), d.size());
  return h.FinishHex();
}

}  // namespace icae::slot_store
