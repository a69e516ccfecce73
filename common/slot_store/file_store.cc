#include "common/slot_store/file_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/slot_store/slot_id.h"
#include "common/slot_store/absl_compat.h"
#include "common/util/status_macros.h"
#include "glog/logging.h"

namespace icae::slot_store {
namespace {

constexpr char kEnvelopeMagic[8] = {'I', 'C', 'A', 'E', 'F', 'S', '0', '1'};
constexpr size_t kEnvelopeBytes = 16;
constexpr char kSuffix[] = ".slot";
constexpr char kTempPrefix[] = ".tmp-";

// Filesystem errors are the store being unusable (folder gone, unwritable, unreadable, full):
// UNAVAILABLE, so clients retry rather than re-encode. The client-facing message names the
// operation only; the path (a server detail) goes to the log.
absl::Status StoreError(int err, std::string_view op, std::string_view path) {
  LOG(WARNING) << "file slot store: " << ToAbsl(op) << " " << ToAbsl(path) << ": "
               << std::strerror(err);
  return absl::UnavailableError(
      absl::StrCat("file slot store: ", ToAbsl(op), ": ", std::strerror(err)));
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

int64_t ToMicros(absl::Time t) {
  if (t == absl::InfiniteFuture()) return INT64_MAX;
  return absl::ToUnixMicros(t);
}

// Sets both file times to now, precisely. The kernel's own "now" is tick-coarse (ms), which
// would make back-to-back accesses tie in the LRU order; an explicit time needs ownership, so
// fall back to UTIME_NOW (needs only write access) for files another user wrote.
void Touch(int fd) {
  struct timespec ts[2];
  clock_gettime(CLOCK_REALTIME, &ts[0]);
  ts[1] = ts[0];
  if (::futimens(fd, ts) != 0) {
    ts[0].tv_nsec = ts[1].tv_nsec = UTIME_NOW;
    ::futimens(fd, ts);  // best effort: LRU order only
  }
}

absl::Status WriteAll(int fd, const struct iovec* iov_in, int n, const std::string& path) {
  std::vector<struct iovec> iov(iov_in, iov_in + n);
  size_t i = 0;
  while (i < iov.size()) {
    ssize_t w = ::writev(fd, &iov[i], static_cast<int>(iov.size() - i));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return StoreError(errno, "writing a record", path);
    size_t left = static_cast<size_t>(w);
    while (i < iov.size() && left >= iov[i].iov_len) left -= iov[i++].iov_len;
    if (i < iov.size()) {
      iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
      iov[i].iov_len -= left;
    }
  }
  return absl::OkStatus();
}

// Reads exactly n bytes at `offset`; false on a short read (the file is shorter than its
// stat said, which for an immutable file means it is damaged).
absl::StatusOr<bool> ReadExact(int fd, char* out, size_t n, off_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t r = ::pread(fd, out, n, offset);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return StoreError(errno, "reading a record", path);
    if (r == 0) return false;
    out += r;
    n -= static_cast<size_t>(r);
    offset += r;
  }
  return true;
}

// Parses the envelope; false when it is not ours.
bool ParseEnvelope(const char* p, int64_t* expires_micros) {
  if (std::memcmp(p, kEnvelopeMagic, sizeof kEnvelopeMagic) != 0) return false;
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[8 + i])) << (8 * i);
  *expires_micros = static_cast<int64_t>(v);
  return true;
}

}  // namespace

FileSlotStore::FileSlotStore(FileStoreOptions options) : options_(std::move(options)) {}

FileSlotStore::~FileSlotStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

absl::StatusOr<std::unique_ptr<FileSlotStore>> FileSlotStore::Open(
    const FileStoreOptions& options) {
  if (options.dir.empty() || options.dir[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("file store folder must be an absolute path, got '", options.dir, "'"));
  }
  if (options.max_bytes == 0 || options.max_record_bytes == 0) {
    return absl::InvalidArgumentError("file store max_bytes and max_record_bytes must be > 0");
  }
  if (!(options.low_watermark > 0 && options.low_watermark <= 1)) {
    return absl::InvalidArgumentError("file store low_watermark must be in (0, 1]");
  }
  // mkdir -p
  for (size_t pos = 1; pos <= options.dir.size(); ++pos) {
    if (pos == options.dir.size() || options.dir[pos] == '/') {
      std::string prefix = options.dir.substr(0, pos);
      if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
        return StoreError(errno, "creating the folder", prefix);
      }
    }
  }
  struct stat st;
  if (::stat(options.dir.c_str(), &st) != 0) return StoreError(errno, "stat of the folder", options.dir);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(options.dir, " is not a folder"));
  }
  std::unique_ptr<FileSlotStore> store(new FileSlotStore(options));
  const std::string lock_path = options.dir + "/.lock";
  store->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (store->lock_fd_ < 0) return StoreError(errno, "opening the lock file", lock_path);
  RETURN_IF_ERROR(store->ScanAndEvict(""));
  return store;
}

absl::StatusOr<std::unique_ptr<FileSlotStore>> FileSlotStore::FromUri(const StoreUri& uri) {
  if (!uri.host.empty() && uri.host != "localhost") {
    return absl::InvalidArgumentError(absl::StrCat(
        "file:// needs an absolute folder, file:///path/to/dir (got host '", uri.host,
        "'; relative paths are not supported)"));
  }
  if (uri.port != -1 || uri.path.empty() || uri.path == "/") {
    return absl::InvalidArgumentError("file:// needs a folder: file:///path/to/dir");
  }
  UriParams params(uri);
  FileStoreOptions opt;
  opt.dir = uri.path;
  while (opt.dir.size() > 1 && opt.dir.back() == '/') opt.dir.pop_back();
  ASSIGN_OR_RETURN(opt.max_bytes, params.TakeBytes("max_bytes", opt.max_bytes, 1));
  ASSIGN_OR_RETURN(opt.max_record_bytes,
                   params.TakeBytes("max_record_bytes", opt.max_record_bytes, 1));
  ASSIGN_OR_RETURN(opt.default_ttl, params.TakeDuration("ttl", opt.default_ttl));
  ASSIGN_OR_RETURN(int64_t fsync, params.TakeInt("fsync", 0, 0, 1));
  opt.fsync = fsync == 1;
  RETURN_IF_ERROR(params.Finish());
  return Open(opt);
}

std::string FileSlotStore::PathFor(std::string_view id) const {
  return absl::StrCat(options_.dir, "/", ToAbsl(id), kSuffix);
}

void FileSlotStore::AddBytes(int64_t entries, int64_t bytes, int64_t written) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_ = std::max<int64_t>(0, entries_ + entries);
  bytes_ = std::max<int64_t>(0, bytes_ + bytes);
  written_since_scan_ += written;
}

absl::Status FileSlotStore::Put(std::string_view id, std::string_view record,
                                absl::Duration ttl) {
  RETURN_IF_ERROR(internal::CheckPut(id, record, ttl, options_.max_record_bytes,
                                     options_.max_bytes));
  const int64_t expires = ToMicros(internal::ExpiryFor(ttl, options_.default_ttl, absl::Now()));
  char envelope[kEnvelopeBytes];
  std::memcpy(envelope, kEnvelopeMagic, sizeof kEnvelopeMagic);
  for (int i = 0; i < 8; ++i) {
    envelope[8 + i] = static_cast<char>(static_cast<uint64_t>(expires) >> (8 * i));
  }

  const std::string tmp = absl::StrCat(options_.dir, "/", kTempPrefix, ::getpid(), "-",
                                       temp_counter_.fetch_add(1), "-", ToAbsl(id));
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (fd.get() < 0) return StoreError(errno, "creating a temp file", tmp);
    struct iovec iov[2] = {{envelope, kEnvelopeBytes},
                           {const_cast<char*>(record.data()), record.size()}};
    absl::Status s = WriteAll(fd.get(), iov, 2, tmp);
    if (s.ok() && options_.fsync && ::fdatasync(fd.get()) != 0) {
      s = StoreError(errno, "fdatasync", tmp);
    }
    if (s.ok()) Touch(fd.get());
    if (s.ok() && ::close(fd.release()) != 0) s = StoreError(errno, "closing a temp file", tmp);
    if (!s.ok()) {
      ::unlink(tmp.c_str());
      return s;
    }
  }
  const std::string path = PathFor(id);
  struct stat old;
  const bool replaced = ::lstat(path.c_str(), &old) == 0;
  // Unlink first instead of renaming over the old file: ext4 (auto_da_alloc) flushes the new
  // file's data on a rename that replaces another, which measured 3-7 ms per Put here. Readers
  // see the old record, none (a miss) or the new one; never a partial one.
  if (replaced) ::unlink(path.c_str());
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = StoreError(errno, "renaming a temp file", tmp);
    ::unlink(tmp.c_str());
    return s;
  }
  if (options_.fsync) {
    Fd dir(::open(options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() >= 0) ::fsync(dir.get());
  }
  const int64_t old_bytes =
      replaced && old.st_size >= static_cast<off_t>(kEnvelopeBytes) ? old.st_size - kEnvelopeBytes : 0;
  AddBytes(replaced ? 0 : 1, static_cast<int64_t>(record.size()) - old_bytes,
           static_cast<int64_t>(record.size()));

  bool scan = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto slack =
        static_cast<int64_t>(static_cast<double>(options_.max_bytes) * (1 - options_.low_watermark));
    scan = bytes_ > static_cast<int64_t>(options_.max_bytes) ||
           written_since_scan_ > std::max<int64_t>(slack, 1);
  }
  if (scan) {
    // A failed trim does not undo the write; the next Put tries again.
    if (absl::Status s = ScanAndEvict(id); !s.ok()) LOG(WARNING) << "slot file store: " << s;
  }
  return absl::OkStatus();
}

void FileSlotStore::RemoveIfSame(const std::string& path, int fd) {
  // Only unlink the file we judged: another process may have renamed a fresh one into place.
  struct stat mine, now;
  if (::fstat(fd, &mine) == 0 && ::lstat(path.c_str(), &now) == 0 && mine.st_ino == now.st_ino &&
      mine.st_dev == now.st_dev && ::unlink(path.c_str()) == 0) {
    AddBytes(-1, -(std::max<int64_t>(mine.st_size, kEnvelopeBytes) - kEnvelopeBytes), 0);
  }
}

absl::StatusOr<FileSlotStore::Opened> FileSlotStore::OpenForRead(const std::string& path,
                                                                  int* fd) const {
  *fd = -1;
  // Never block and never follow: a FIFO or device in place of a record would hang open() or
  // read() (and with it the encoder's batch thread), a symlink would read outside the folder.
  // lstat keeps us from opening such a thing at all; O_NONBLOCK | O_NOFOLLOW and the fstat
  // below cover one swapped in between.
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return StoreError(errno, "stat of a record", path);
    // A missing folder is a store that is down, not a record that is absent: clients must
    // not be sent to re-encode into a store that cannot hold anything.
    struct stat dir;
    if (::stat(options_.dir.c_str(), &dir) != 0) return StoreError(errno, "stat of the folder", options_.dir);
    if (!S_ISDIR(dir.st_mode)) return StoreError(ENOTDIR, "stat of the folder", options_.dir);
    return Opened::kAbsent;
  }
  if (!S_ISREG(st.st_mode)) return Opened::kNotRegular;
  *fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (*fd < 0) {
    if (errno == ENOENT) return Opened::kAbsent;  // removed since the lstat
    if (errno == ELOOP) return Opened::kNotRegular;
    return StoreError(errno, "opening a record", path);
  }
  if (::fstat(*fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(*fd);
    *fd = -1;
    return Opened::kNotRegular;
  }
  return Opened::kFile;
}

absl::StatusOr<RecordBytes> FileSlotStore::Get(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  const std::string path = PathFor(id);
  int raw_fd = -1;
  ASSIGN_OR_RETURN(Opened opened, OpenForRead(path, &raw_fd));
  Fd fd(raw_fd);
  if (opened == Opened::kAbsent) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.misses;
    return absl::NotFoundError(absl::StrCat("slot ", ToAbsl(id), " not in the file store"));
  }
  if (opened == Opened::kNotRegular) {
    // Not something this store wrote: remove it (a folder is left alone) so a Put can
    // replace it, and report it like any other corrupt entry.
    struct stat st;
    const bool removed = ::lstat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode) &&
                         ::unlink(path.c_str()) == 0;
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.corrupt;
    return absl::DataLossError(absl::StrCat("slot ", ToAbsl(id),
                                            " in the file store is not a regular file",
                                            removed ? "; removed" : ""));
  }
  auto corrupt = [&](std::string_view why) {
    RemoveIfSame(path, fd.get());
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.corrupt;
    return absl::DataLossError(
        absl::StrCat("slot ", ToAbsl(id), " in the file store is corrupt (", ToAbsl(why), "); removed"));
  };
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return StoreError(errno, "stat of a record", path);
  if (st.st_size < static_cast<off_t>(kEnvelopeBytes)) return corrupt("shorter than its envelope");
  const uint64_t record_size = static_cast<uint64_t>(st.st_size) - kEnvelopeBytes;
  if (record_size > options_.max_record_bytes) {
    // Possibly written by a process with a larger bound: refuse, but leave it alone.
    return absl::ResourceExhaustedError(absl::StrCat("slot ", ToAbsl(id), " is ", record_size,
                                                     " bytes, over max_record_bytes ",
                                                     options_.max_record_bytes));
  }
  char envelope[kEnvelopeBytes];
  ASSIGN_OR_RETURN(bool full, ReadExact(fd.get(), envelope, kEnvelopeBytes, 0, path));
  int64_t expires = 0;
  if (!full || !ParseEnvelope(envelope, &expires)) return corrupt("bad envelope");
  if (expires <= absl::ToUnixMicros(absl::Now())) {
    RemoveIfSame(path, fd.get());
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.expirations;
    ++stats_.misses;
    return absl::NotFoundError(absl::StrCat("slot ", ToAbsl(id), " expired"));
  }
  auto bytes = std::make_shared<std::string>(record_size, '\0');
  ASSIGN_OR_RETURN(full, ReadExact(fd.get(), bytes->data(), record_size, kEnvelopeBytes, path));
  if (!full) return corrupt("truncated");
  if (absl::Status s = VerifySlotRecord(*bytes); !s.ok()) return corrupt(ToStd(s.message()));
  Touch(fd.get());
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.hits;
  }
  return RecordBytes(std::move(bytes));
}

absl::StatusOr<bool> FileSlotStore::Contains(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  const std::string path = PathFor(id);
  int raw_fd = -1;
  ASSIGN_OR_RETURN(Opened opened, OpenForRead(path, &raw_fd));
  Fd fd(raw_fd);
  // Something that is not a regular file holds no record: absent, so the encoder computes the
  // record again and its Put replaces the thing.
  if (opened != Opened::kFile) return false;
  char envelope[kEnvelopeBytes];
  ASSIGN_OR_RETURN(bool full, ReadExact(fd.get(), envelope, kEnvelopeBytes, 0, path));
  int64_t expires = 0;
  // A damaged envelope counts as present; Get will report and remove it.
  if (!full || !ParseEnvelope(envelope, &expires)) return true;
  return expires > absl::ToUnixMicros(absl::Now());
}

absl::Status FileSlotStore::Delete(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  const std::string path = PathFor(id);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return absl::OkStatus();
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return StoreError(errno, "removing a record", path);
  }
  AddBytes(-1, -(std::max<int64_t>(st.st_size, kEnvelopeBytes) - kEnvelopeBytes), 0);
  return absl::OkStatus();
}

absl::Status FileSlotStore::Trim() { return ScanAndEvict(""); }

absl::Status FileSlotStore::ScanAndEvict(std::string_view keep) {
  std::unique_lock<std::mutex> in_process(scan_mu_, std::try_to_lock);
  // Another thread of this process is scanning right now; it will do the work.
  if (!in_process.owns_lock()) return absl::OkStatus();
  while (::flock(lock_fd_, LOCK_EX) != 0) {
    if (errno != EINTR) return StoreError(errno, "locking", options_.dir + "/.lock");
  }
  struct Unlock {
    int fd;
    ~Unlock() { ::flock(fd, LOCK_UN); }
  } unlock{lock_fd_};

  struct FileInfo {
    struct timespec mtime;
    int64_t bytes;
    std::string name;
  };
  std::vector<FileInfo> files;
  DIR* dir = ::opendir(options_.dir.c_str());
  if (dir == nullptr) return StoreError(errno, "listing the folder", options_.dir);
  const int dir_fd = ::dirfd(dir);
  const absl::Time now = absl::Now();
  int64_t total = 0;
  while (struct dirent* e = ::readdir(dir)) {
    absl::string_view name = e->d_name;
    struct stat st;
    if (absl::StartsWith(name, kTempPrefix)) {
      if (::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          absl::TimeFromTimespec(st.st_mtim) + options_.stale_temp_age < now) {
        ::unlinkat(dir_fd, e->d_name, 0);
      }
      continue;
    }
    if (!absl::EndsWith(name, kSuffix)) continue;
    if (!ValidateSlotId(ToStd(name.substr(0, name.size() - (sizeof kSuffix - 1)))).ok()) continue;
    if (::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
      continue;
    }
    const int64_t bytes = std::max<int64_t>(st.st_size, kEnvelopeBytes) - kEnvelopeBytes;
    total += bytes;
    files.push_back(FileInfo{st.st_mtim, bytes, std::string(name)});
  }
  ::closedir(dir);

  int64_t entries = static_cast<int64_t>(files.size());
  int64_t evicted = 0;
  if (total > static_cast<int64_t>(options_.max_bytes)) {
    const auto target = static_cast<int64_t>(static_cast<double>(options_.max_bytes) *
                                             options_.low_watermark);
    std::sort(files.begin(), files.end(), [](const FileInfo& a, const FileInfo& b) {
      if (a.mtime.tv_sec != b.mtime.tv_sec) return a.mtime.tv_sec < b.mtime.tv_sec;
      if (a.mtime.tv_nsec != b.mtime.tv_nsec) return a.mtime.tv_nsec < b.mtime.tv_nsec;
      return a.name < b.name;
    });
    const std::string keep_name = keep.empty() ? "" : absl::StrCat(ToAbsl(keep), kSuffix);
    for (const FileInfo& f : files) {
      if (total <= target) break;
      if (f.name == keep_name) continue;
      const std::string path = options_.dir + "/" + f.name;
      if (::unlink(path.c_str()) == 0) {
        total -= f.bytes;
        --entries;
        ++evicted;
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  entries_ = entries;
  bytes_ = total;
  written_since_scan_ = 0;
  stats_.evictions += evicted;
  return absl::OkStatus();
}

SlotStoreStats FileSlotStore::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SlotStoreStats s = stats_;
  s.entries = entries_;
  s.bytes = bytes_;
  return s;
}

std::string FileSlotStore::Describe() const {
  return absl::StrCat("file://", options_.dir, "?max_bytes=", options_.max_bytes);
}

}  // namespace icae::slot_store
