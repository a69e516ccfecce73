#include "common/slot_store/tiered_store.h"

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace icae::slot_store {

TieredSlotStore::TieredSlotStore(const MemoryStoreOptions& local,
                                 std::unique_ptr<SlotStore> backend)
    : local_(local), backend_(std::move(backend)) {}

absl::StatusOr<std::unique_ptr<TieredSlotStore>> TieredSlotStore::FromUri(const StoreUri& uri) {
  if (!uri.host.empty() || (!uri.path.empty() && uri.path != "/") || uri.port != -1) {
    return absl::InvalidArgumentError(
        "tiered:// takes only parameters: tiered://?local_max_bytes=N&backend=<encoded URI>");
  }
  UriParams params(uri);
  MemoryStoreOptions local;
  local.max_bytes = uint64_t{256} << 20;
  ASSIGN_OR_RETURN(local.max_bytes, params.TakeBytes("local_max_bytes", local.max_bytes, 1));
  ASSIGN_OR_RETURN(local.max_record_bytes,
                   params.TakeBytes("local_max_record_bytes", local.max_record_bytes, 1));
  ASSIGN_OR_RETURN(local.default_ttl, params.TakeDuration("local_ttl", local.default_ttl));
  const std::string backend_uri = params.TakeString("backend", "");
  RETURN_IF_ERROR(params.Finish());
  if (backend_uri.empty()) {
    return absl::InvalidArgumentError(
        "tiered:// needs backend=<percent-encoded store URI>, e.g. "
        "tiered://?backend=redis%3A%2F%2F127.0.0.1%3A6379%2F0");
  }
  if (backend_uri.rfind("tiered:", 0) == 0) {
    return absl::InvalidArgumentError("tiered:// backend cannot itself be tiered://");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SlotStore> backend, OpenSlotStore(backend_uri));
  return std::make_unique<TieredSlotStore>(local, std::move(backend));
}

absl::Status TieredSlotStore::Put(std::string_view id, std::string_view record,
                                  absl::Duration ttl) {
  RETURN_IF_ERROR(backend_->Put(id, record, ttl));  // validates id, record and bounds
  // The local copy must not outlive an explicit TTL, nor the local one.
  const absl::Time now = absl::Now();
  absl::Time expires = internal::ExpiryFor(absl::ZeroDuration(), local_.options().default_ttl, now);
  if (ttl > absl::ZeroDuration()) expires = std::min(expires, internal::ExpiryFor(ttl, {}, now));
  // Too big for the local tier: fine, the backend has it.
  (void)local_.PutShared(id, std::make_shared<const std::string>(record), expires);
  return absl::OkStatus();
}

absl::StatusOr<RecordBytes> TieredSlotStore::Get(std::string_view id) {
  absl::StatusOr<RecordBytes> local = local_.Get(id);
  if (local.ok() || !absl::IsNotFound(local.status())) return local;
  ASSIGN_OR_RETURN(RecordBytes bytes, backend_->Get(id));
  (void)local_.PutShared(
      id, bytes, internal::ExpiryFor(absl::ZeroDuration(), local_.options().default_ttl, absl::Now()));
  return bytes;
}

absl::StatusOr<bool> TieredSlotStore::Contains(std::string_view id) {
  ASSIGN_OR_RETURN(bool here, local_.Contains(id));
  if (here) return true;
  return backend_->Contains(id);
}

absl::Status TieredSlotStore::Delete(std::string_view id) {
  RETURN_IF_ERROR(local_.Delete(id));
  return backend_->Delete(id);
}

SlotStoreStats TieredSlotStore::Stats() const {
  const SlotStoreStats l = local_.Stats();
  const SlotStoreStats b = backend_->Stats();
  SlotStoreStats s = l;
  s.hits = l.hits + b.hits;
  s.misses = b.misses;
  s.expirations = l.expirations + b.expirations;
  s.corrupt = l.corrupt + b.corrupt;
  return s;
}

std::string TieredSlotStore::Describe() const {
  return absl::StrCat("tiered://?local_max_bytes=", local_.options().max_bytes,
                      "&backend=", backend_->Describe());
}

}  // namespace icae::slot_store
