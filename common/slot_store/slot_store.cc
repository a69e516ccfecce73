#include "common/slot_store/slot_store.h"

#include "absl/strings/str_cat.h"
#include "common/slot_store/file_store.h"
#include "common/slot_store/memory_store.h"
#include "common/slot_store/redis_cluster_store.h"
#include "common/slot_store/redis_store.h"
#include "common/slot_store/slot_id.h"
#include "common/slot_store/store_uri.h"
#include "common/slot_store/tiered_store.h"
#include "common/util/status_macros.h"

namespace icae::slot_store {

absl::Status SlotStore::PutRecord(std::string_view id, const SlotRecord& record,
                                  absl::Duration ttl) {
  ASSIGN_OR_RETURN(std::string bytes, EncodeSlotRecord(record));
  return Put(id, bytes, ttl);
}

absl::StatusOr<SlotRecord> SlotStore::GetRecord(std::string_view id) {
  ASSIGN_OR_RETURN(RecordBytes bytes, Get(id));
  return ParseSlotRecord(*bytes);
}

absl::StatusOr<std::unique_ptr<SlotStore>> OpenSlotStore(const std::string& uri) {
  ASSIGN_OR_RETURN(StoreUri parsed, ParseStoreUri(uri));
  auto wrap = [&](auto store) -> absl::StatusOr<std::unique_ptr<SlotStore>> {
    if (!store.ok()) {
      // Say which URI was refused; the backend's message says why.
      return absl::Status(store.status().code(),
                          absl::StrCat(store.status().message(), " (in ", parsed.scheme,
                                       ":// store URI)"));
    }
    return std::unique_ptr<SlotStore>(*std::move(store));
  };
  if (parsed.scheme == "memory") return wrap(MemorySlotStore::FromUri(parsed));
  if (parsed.scheme == "file") return wrap(FileSlotStore::FromUri(parsed));
  if (parsed.scheme == "redis") return wrap(RedisSlotStore::FromUri(parsed));
  if (parsed.scheme == "redis-cluster") return wrap(RedisClusterSlotStore::FromUri(parsed));
  if (parsed.scheme == "tiered") return wrap(TieredSlotStore::FromUri(parsed));
  return absl::InvalidArgumentError(
      absl::StrCat("unknown slot store scheme '", parsed.scheme,
                   "://' (known: memory://, file://, redis://, redis-cluster://, tiered://)"));
}

namespace internal {

absl::Status CheckPut(std::string_view id, std::string_view record, absl::Duration ttl,
                      uint64_t max_record_bytes, uint64_t max_bytes) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  if (ttl < absl::ZeroDuration()) return absl::InvalidArgumentError("negative TTL");
  if (record.size() > max_record_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "record of ", record.size(), " bytes exceeds max_record_bytes ", max_record_bytes));
  }
  if (record.size() > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "record of ", record.size(), " bytes exceeds the store's max_bytes ", max_bytes));
  }
  if (absl::Status s = VerifySlotRecord(record); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("not a valid slot record: ", s.message()));
  }
  return absl::OkStatus();
}

absl::Time ExpiryFor(absl::Duration ttl, absl::Duration default_ttl, absl::Time now) {
  if (ttl == absl::InfiniteDuration()) return absl::InfiniteFuture();
  if (ttl == absl::ZeroDuration()) ttl = default_ttl;
  if (ttl <= absl::ZeroDuration() || ttl == absl::InfiniteDuration()) {
    return absl::InfiniteFuture();
  }
  return now + ttl;
}

}  // namespace internal
}  // namespace icae::slot_store
