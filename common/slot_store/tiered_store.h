// tiered:// — a bounded in-process memory LRU in front of any other store, so a decoder keeps
// its hot slots local and asks the shared store (file, redis) only on a local miss.
//
//   C++:  TieredSlotStore(local_options, std::move(backend))
//   URI:  tiered://?local_max_bytes=256M&local_max_record_bytes=..&local_ttl=0
//                  &backend=<percent-encoded store URI>      (backend is required)
//
// Put writes through: the backend first (its answer is the answer), then the local tier.
// Get: local hit, else backend; a backend hit is kept locally (shared, not copied). Delete
// removes from both. A local copy is served without asking the backend, so it can outlive the
// backend's TTL or eviction: harmless for content-addressed immutable records; set local_ttl to
// bound how long. A record too big for the local tier is simply not kept locally.
#ifndef ICAE_COMMON_SLOT_STORE_TIERED_STORE_H_
#define ICAE_COMMON_SLOT_STORE_TIERED_STORE_H_

#include <memory>
#include <string>

#include "common/slot_store/memory_store.h"
#include "common/slot_store/slot_store.h"
#include "common/slot_store/store_uri.h"

namespace icae::slot_store {

class TieredSlotStore final : public SlotStore {
 public:
  // local.default_ttl is the local_ttl above (zero: local copies live until evicted).
  TieredSlotStore(const MemoryStoreOptions& local, std::unique_ptr<SlotStore> backend);
  static absl::StatusOr<std::unique_ptr<TieredSlotStore>> FromUri(const StoreUri& uri);

  absl::Status Put(std::string_view id, std::string_view record,
                   absl::Duration ttl = absl::ZeroDuration()) override;
  absl::StatusOr<RecordBytes> Get(std::string_view id) override;
  absl::StatusOr<bool> Contains(std::string_view id) override;
  absl::Status Delete(std::string_view id) override;
  // hits: local + backend hits; misses: misses in both; entries/bytes/evictions: local tier;
  // expirations and corrupt: both. Per-tier figures: local().Stats(), backend().Stats().
  SlotStoreStats Stats() const override;
  std::string Describe() const override;

  MemorySlotStore& local() { return local_; }
  SlotStore& backend() { return *backend_; }

 private:
  MemorySlotStore local_;
  std::unique_ptr<SlotStore> backend_;
};

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_TIERED_STORE_H_
