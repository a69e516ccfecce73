// memory:// — an in-process LRU of records bounded by their total bytes.
#ifndef ICAE_COMMON_SLOT_STORE_MEMORY_STORE_H_
#define ICAE_COMMON_SLOT_STORE_MEMORY_STORE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "common/slot_store/slot_store.h"
#include "common/slot_store/store_uri.h"

namespace icae::slot_store {

struct MemoryStoreOptions {
  uint64_t max_bytes = uint64_t{1} << 30;  // bound on the sum of record sizes
  uint64_t max_record_bytes = kDefaultMaxRecordBytes;
  absl::Duration default_ttl = absl::ZeroDuration();  // zero: no expiry
};

class MemorySlotStore final : public SlotStore {
 public:
  explicit MemorySlotStore(const MemoryStoreOptions& options);
  // memory://?max_bytes=&max_record_bytes=&ttl=
  static absl::StatusOr<std::unique_ptr<MemorySlotStore>> FromUri(const StoreUri& uri);

  absl::Status Put(std::string_view id, std::string_view record,
                   absl::Duration ttl = absl::ZeroDuration()) override;
  absl::StatusOr<RecordBytes> Get(std::string_view id) override;
  absl::StatusOr<bool> Contains(std::string_view id) override;
  absl::Status Delete(std::string_view id) override;
  SlotStoreStats Stats() const override;
  std::string Describe() const override;

  // Inserts bytes the caller has already verified (the tiered store after a backend hit):
  // shares them instead of copying. RESOURCE_EXHAUSTED when they can never fit.
  absl::Status PutShared(std::string_view id, RecordBytes record, absl::Time expires);

  const MemoryStoreOptions& options() const { return options_; }

 private:
  struct Entry {
    RecordBytes bytes;
    absl::Time expires;
    std::list<std::string>::iterator lru_pos;
  };
  void EraseLocked(decltype(absl::flat_hash_map<std::string, Entry>().begin()) it);

  const MemoryStoreOptions options_;
  // std::mutex rather than absl::Mutex: TSan intercepts pthread locks, but not the distro's
  // uninstrumented abseil, so this keeps the TSan run free of false reports.
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_;  // guarded by mu_
  std::list<std::string> lru_;                       // most recently used first; mu_
  uint64_t bytes_ = 0;                               // mu_
  SlotStoreStats stats_;                             // counters only; mu_
};

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_MEMORY_STORE_H_
