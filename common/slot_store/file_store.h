// file:///dir — records as files in one folder that any number of processes on the host share.
//
// Layout: <dir>/<id>.slot holds a 16-byte envelope ("ICAEFS01", i64 LE expiry in Unix micros,
// INT64_MAX = never) followed by the encoded SlotRecord. Writers write <dir>/.tmp-* and rename
// it into place, so a reader sees the old file, the new file or none — never a half-written
// one. Without fsync a machine crash can still leave a torn file under its final name; the
// record checksum catches that (DATA_LOSS, file removed). Readers keep their open descriptor,
// so a record being read cannot be pulled away by an eviction in another process.
//
// Only regular files are records: a FIFO, device, symlink or folder named <id>.slot is never
// opened in a way that can block or leave the folder; Get answers DATA_LOSS and removes it,
// Contains says absent. Filesystem failures (folder missing, unwritable, unreadable, full) are
// UNAVAILABLE with the path only in the server log.
//
// LRU: a file's mtime is its last access (set on Put and on every Get; atime is unreliable
// under relatime/noatime mounts). When a process's view of the folder's size passes max_bytes
// it takes <dir>/.lock (flock), rescans the folder and deletes the least recently used files
// down to low_watermark * max_bytes. Each process counts its own writes since its last scan
// and rescans after writing (1 - low_watermark) * max_bytes, so with P writers the folder can
// exceed max_bytes by at most about P times that slack before someone trims it.
#ifndef ICAE_COMMON_SLOT_STORE_FILE_STORE_H_
#define ICAE_COMMON_SLOT_STORE_FILE_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/slot_store/slot_store.h"
#include "common/slot_store/store_uri.h"

namespace icae::slot_store {

struct FileStoreOptions {
  std::string dir;                          // absolute; created if missing
  uint64_t max_bytes = uint64_t{10} << 30;  // bound on the sum of record sizes in the folder
  uint64_t max_record_bytes = kDefaultMaxRecordBytes;
  absl::Duration default_ttl = absl::ZeroDuration();  // zero: no expiry
  bool fsync = false;          // fdatasync each record and the folder before renaming (durable)
  double low_watermark = 0.9;  // eviction frees down to this fraction of max_bytes
  // Temp files older than this are leftovers of a crashed writer and are removed on scans.
  absl::Duration stale_temp_age = absl::Minutes(10);
};

class FileSlotStore final : public SlotStore {
 public:
  // Creates the folder if needed and scans it (size, stale temp files).
  static absl::StatusOr<std::unique_ptr<FileSlotStore>> Open(const FileStoreOptions& options);
  // file:///abs/dir?max_bytes=&max_record_bytes=&ttl=&fsync=
  static absl::StatusOr<std::unique_ptr<FileSlotStore>> FromUri(const StoreUri& uri);
  ~FileSlotStore() override;

  absl::Status Put(std::string_view id, std::string_view record,
                   absl::Duration ttl = absl::ZeroDuration()) override;
  absl::StatusOr<RecordBytes> Get(std::string_view id) override;
  absl::StatusOr<bool> Contains(std::string_view id) override;
  absl::Status Delete(std::string_view id) override;
  // entries/bytes: this process's view (last scan plus its own changes since).
  SlotStoreStats Stats() const override;
  std::string Describe() const override;

  // Rescans the folder now and evicts if it is over max_bytes (also used by tests).
  absl::Status Trim();

 private:
  FileStoreOptions options_;
  int lock_fd_ = -1;
  // Serialises this process's scans; other processes are kept out by flock on lock_fd_.
  std::mutex scan_mu_;
  mutable std::mutex mu_;
  int64_t entries_ = 0;             // mu_
  int64_t bytes_ = 0;               // mu_
  int64_t written_since_scan_ = 0;  // mu_
  SlotStoreStats stats_;            // counters only; mu_
  std::atomic<uint64_t> temp_counter_{0};

  explicit FileSlotStore(FileStoreOptions options);
  std::string PathFor(std::string_view id) const;
  enum class Opened { kAbsent, kNotRegular, kFile };
  // Opens a record for reading without blocking or following links; *fd is set only for
  // kFile. UNAVAILABLE when the folder itself is gone or unreadable.
  absl::StatusOr<Opened> OpenForRead(const std::string& path, int* fd) const;
  // Scans the folder; if it is over max_bytes, deletes LRU files down to the low watermark,
  // sparing `keep` (the record just written).
  absl::Status ScanAndEvict(std::string_view keep);
  void RemoveIfSame(const std::string& path, int fd);
  void AddBytes(int64_t entries, int64_t bytes, int64_t written);
};

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_FILE_STORE_H_
