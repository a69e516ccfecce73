#include "common/slot_store/memory_store.h"

#include "absl/strings/str_cat.h"
#include "common/slot_store/slot_id.h"
#include "common/slot_store/absl_compat.h"
#include "common/util/status_macros.h"

namespace icae::slot_store {

MemorySlotStore::MemorySlotStore(const MemoryStoreOptions& options) : options_(options) {}

absl::StatusOr<std::unique_ptr<MemorySlotStore>> MemorySlotStore::FromUri(const StoreUri& uri) {
  if (!uri.host.empty() || (!uri.path.empty() && uri.path != "/") || uri.port != -1) {
    return absl::InvalidArgumentError("memory:// takes no host or path: memory://?max_bytes=N");
  }
  UriParams params(uri);
  MemoryStoreOptions opt;
  ASSIGN_OR_RETURN(opt.max_bytes, params.TakeBytes("max_bytes", opt.max_bytes, 1));
  ASSIGN_OR_RETURN(opt.max_record_bytes,
                   params.TakeBytes("max_record_bytes", opt.max_record_bytes, 1));
  ASSIGN_OR_RETURN(opt.default_ttl, params.TakeDuration("ttl", opt.default_ttl));
  RETURN_IF_ERROR(params.Finish());
  return std::make_unique<MemorySlotStore>(opt);
}

void MemorySlotStore::EraseLocked(decltype(absl::flat_hash_map<std::string, Entry>().begin()) it) {
  bytes_ -= it->second.bytes->size();
  lru_.erase(it->second.lru_pos);
  entries_.erase(it);
}

absl::Status MemorySlotStore::Put(std::string_view id, std::string_view record,
                                  absl::Duration ttl) {
  RETURN_IF_ERROR(internal::CheckPut(id, record, ttl, options_.max_record_bytes,
                                     options_.max_bytes));
  // Copy outside the lock: records are megabytes.
  auto bytes = std::make_shared<const std::string>(record);
  return PutShared(id, std::move(bytes), internal::ExpiryFor(ttl, options_.default_ttl, absl::Now()));
}

absl::Status MemorySlotStore::PutShared(std::string_view id, RecordBytes record,
                                        absl::Time expires) {
  const uint64_t size = record->size();
  if (size > options_.max_bytes || size > options_.max_record_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "record of ", size, " bytes exceeds the memory store's bound (max_bytes ",
        options_.max_bytes, ", max_record_bytes ", options_.max_record_bytes, ")"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = entries_.find(ToAbsl(id)); it != entries_.end()) EraseLocked(it);
  const absl::Time now = absl::Now();
  while (bytes_ + size > options_.max_bytes && !lru_.empty()) {
    auto victim = entries_.find(lru_.back());
    if (victim->second.expires <= now) {
      ++stats_.expirations;
    } else {
      ++stats_.evictions;
    }
    EraseLocked(victim);
  }
  lru_.emplace_front(id);
  entries_.emplace(std::string(id), Entry{std::move(record), expires, lru_.begin()});
  bytes_ += size;
  return absl::OkStatus();
}

absl::StatusOr<RecordBytes> MemorySlotStore::Get(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(ToAbsl(id));
  if (it != entries_.end() && it->second.expires <= absl::Now()) {
    EraseLocked(it);
    ++stats_.expirations;
    it = entries_.end();
  }
  if (it == entries_.end()) {
    ++stats_.misses;
    return absl::NotFoundError(absl::StrCat("slot ", ToAbsl(id), " not in the memory store"));
  }
  ++stats_.hits;
  lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
  return it->second.bytes;
}

absl::StatusOr<bool> MemorySlotStore::Contains(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(ToAbsl(id));
  return it != entries_.end() && it->second.expires > absl::Now();
}

absl::Status MemorySlotStore::Delete(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = entries_.find(ToAbsl(id)); it != entries_.end()) EraseLocked(it);
  return absl::OkStatus();
}

SlotStoreStats MemorySlotStore::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SlotStoreStats s = stats_;
  s.entries = static_cast<int64_t>(entries_.size());
  s.bytes = static_cast<int64_t>(bytes_);
  return s;
}

std::string MemorySlotStore::Describe() const {
  return absl::StrCat("memory://?max_bytes=", options_.max_bytes);
}

}  // namespace icae::slot_store
