// Slot identity, in one place: which context a client means (the one validator of a context
// given as text or token ids), the slot ID it gets (content address over tenant, model and
// adapter fingerprints, mem_size, rate and token ids), where a tenant's record is stored, how
// compressed slots become a SlotRecord, and how a record becomes slots again after checking
// it was made by this model and adapter. Encoder and decoder both go through here.
#ifndef ICAE_COMMON_SERVER_SLOT_IDENTITY_H_
#define ICAE_COMMON_SERVER_SLOT_IDENTITY_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/icae/compressor.h"
#include "common/server/model_bundle.h"
#include "common/slot_store/slot_record.h"

namespace icae::server {

// A client's context as the API carries it: text, or token ids (one of the two).
struct ContextInput {
  const std::string* text = nullptr;          // tokenized with BOS
  absl::Span<const int64_t> ids;              // used when text is null
};

// The context's token ids: text must be valid UTF-8 and is tokenized with BOS; ids must be in
// the base vocabulary. Not empty, at most `max_tokens` (--max_context_tokens). INVALID_ARGUMENT
// naming what is wrong.
absl::StatusOr<std::vector<int64_t>> ContextIds(const ModelBundle& bundle, const ContextInput& context,
                                                int64_t max_tokens);

// Where a context's slots live: the API slot ID (64 hex) and the store key for the tenant.
struct SlotAddress {
  std::string slot_id;
  std::string store_key;
};
SlotAddress AddressOf(const ModelBundle& bundle, std::string_view tenant, absl::Span<const int64_t> ids);

// The store key of a slot ID for a tenant: the ID itself for the default tenant, else
// "t<16 hex of SHA-256(tenant)>_<id>", so tenants never share store entries. The tenant comes
// from the authenticated caller, never from the request.
std::string TenantStoreKey(std::string_view tenant, std::string_view slot_id);

// A record of compressed slots (payload in the model's dtype, this bundle's fingerprints).
slot_store::SlotRecord MakeSlotRecord(const ModelBundle& bundle, const CompressedContext& c);

// Slots [n, hidden] in the model's dtype from a stored record: FAILED_PRECONDITION for a record
// of another model, adapter, hidden size or mem_size; DATA_LOSS when its payload does not match
// its header.
absl::StatusOr<torch::Tensor> SlotsFromRecord(const ModelBundle& bundle, const slot_store::SlotRecordView& r);

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_SLOT_IDENTITY_H_
