// SlotStore: the slot cache interface (content-addressed, immutable records, thread-safe) and
// OpenSlotStore(), which picks a backend from a URI.
//
// URIs (parameters are optional unless marked; byte counts take K/M/G/T suffixes, durations are
// seconds or "500ms"-style; unknown parameters are rejected):
//   memory://?max_bytes=1G&max_record_bytes=256M&ttl=0
//       In-process LRU bounded by record bytes (memory_store.h).
//   file:///abs/dir?max_bytes=10G&max_record_bytes=256M&ttl=0&fsync=0
//       One host, any number of processes sharing the folder (file_store.h).
//   redis://[:password@]host:port[/db]?ttl=0&timeout_ms=1000&pool=8&prefix=icae:slot:
//          &max_record_bytes=256M&backoff_ms=200
//       hiredis with a connection pool (redis_store.h).
//   redis-cluster://[:password@]host:port[,host:port...]?wait_replicas=0&max_redirects=5
//          &ttl=0&timeout_ms=1000&pool=8&prefix=icae:slot:&max_record_bytes=256M&backoff_ms=200
//       Redis Cluster: hash-slot routing, MOVED/ASK, a pool per node (redis_cluster_store.h).
//   tiered://?local_max_bytes=256M&local_ttl=0&backend=<percent-encoded URI>
//       A memory LRU in front of any other store (tiered_store.h); build the backend part with
//       UrlEncode(), e.g. "tiered://?backend=" + UrlEncode("redis://h:6379/0?ttl=3600").
// ttl=0 means records do not expire unless Put() gives a TTL.
#ifndef ICAE_COMMON_SLOT_STORE_SLOT_STORE_H_
#define ICAE_COMMON_SLOT_STORE_SLOT_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/slot_store/slot_record.h"

namespace icae::slot_store {

// Limits every backend shares. Defaults are what OpenSlotStore uses when the URI is silent.
inline constexpr uint64_t kDefaultMaxRecordBytes = uint64_t{256} << 20;

struct SlotStoreStats {
  int64_t entries = 0;      // records held; -1 when the backend cannot tell cheaply (redis)
  int64_t bytes = 0;        // record bytes held; -1 when unknown (redis)
  int64_t hits = 0;         // Get() calls that returned a record
  int64_t misses = 0;       // Get() calls that found nothing (absent, evicted or expired)
  int64_t evictions = 0;    // records removed to stay within max_bytes
  int64_t expirations = 0;  // records found past their TTL and removed
  int64_t corrupt = 0;      // records that failed verification on Get (DATA_LOSS) and were removed
};

// An immutable record as stored. Holding it keeps the bytes alive even if the store evicts the
// entry meanwhile (for the memory store this is the cached object itself: no copy on a hit).
using RecordBytes = std::shared_ptr<const std::string>;

class SlotStore {
 public:
  virtual ~SlotStore() = default;

  // Stores an encoded SlotRecord under `id` (replacing any record there; IDs are content
  // addresses, so a replacement holds the same content). `ttl`: ZeroDuration() = the store's
  // default (the URI's ttl=), InfiniteDuration() = never expires, else expire after it.
  // INVALID_ARGUMENT: bad id (ValidateSlotId), bytes that are not a valid SlotRecord, negative
  // ttl. RESOURCE_EXHAUSTED: record larger than max_record_bytes or than the whole store.
  // UNAVAILABLE: backend unreachable.
  virtual absl::Status Put(std::string_view id, std::string_view record,
                           absl::Duration ttl = absl::ZeroDuration()) = 0;
  // Encodes and stores.
  absl::Status PutRecord(std::string_view id, const SlotRecord& record,
                         absl::Duration ttl = absl::ZeroDuration());

  // NOT_FOUND when absent, evicted or expired (the client re-encodes). DATA_LOSS when the stored
  // bytes fail verification; the bad entry is removed, so the next Get says NOT_FOUND.
  // UNAVAILABLE: backend unreachable.
  virtual absl::StatusOr<RecordBytes> Get(std::string_view id) = 0;
  // Get + ParseSlotRecord.
  absl::StatusOr<SlotRecord> GetRecord(std::string_view id);

  // Whether a live record is stored (no verification, no hit/miss counting).
  virtual absl::StatusOr<bool> Contains(std::string_view id) = 0;
  // Removes the record; OK whether or not it was there.
  virtual absl::Status Delete(std::string_view id) = 0;

  virtual SlotStoreStats Stats() const = 0;
  // The store's URI without secrets, for logs.
  virtual std::string Describe() const = 0;
};

// Creates a store from a URI (see the top of this file). INVALID_ARGUMENT with a message naming
// the problem for an unknown scheme, a malformed URI, an unknown or bad parameter.
// Opening a redis:// or redis-cluster:// store does not connect (connections are made on first use), so it succeeds
// while Redis is down; operations then answer UNAVAILABLE until it is up.
absl::StatusOr<std::unique_ptr<SlotStore>> OpenSlotStore(const std::string& uri);

namespace internal {
// Checks shared by every backend's Put: id, record validity, TTL sign, size bounds.
absl::Status CheckPut(std::string_view id, std::string_view record, absl::Duration ttl,
                      uint64_t max_record_bytes, uint64_t max_bytes);
// The absolute expiry for a Put: InfiniteFuture() when the record does not expire.
absl::Time ExpiryFor(absl::Duration ttl, absl::Duration default_ttl, absl::Time now);
}  // namespace internal

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_SLOT_STORE_H_
