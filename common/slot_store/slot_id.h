// Slot IDs: content addresses for encoded contexts. Same inputs -> same ID -> cache hit.
#ifndef ICAE_COMMON_SLOT_STORE_SLOT_ID_H_
#define ICAE_COMMON_SLOT_STORE_SLOT_ID_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace icae::slot_store {

// Everything that changes the slots. The tenant namespace must be set by the server from the
// authenticated caller, never taken from the request (a client-supplied salt can be forged).
struct SlotIdInputs {
  std::string_view tenant;               // "" for a single-tenant deployment
  std::string_view model_fingerprint;    // FingerprintFiles() of the base model
  std::string_view adapter_fingerprint;  // FingerprintFiles() of the ICAE adapter
  uint32_t mem_size = 0;
  uint32_t rate = 0;
};

// SHA-256 (64 lowercase hex chars) over a versioned, length-prefixed encoding of the inputs
// and the token ids (each as a little-endian int64, so int32 and int64 callers agree):
//   field("icae-slot-id/v1") field(tenant) field(model) field(adapter) u32(mem_size) u32(rate)
//   u64(n_tokens) i64(token)...            where field(x) = u64(len(x)) || x
std::string ComputeSlotId(const SlotIdInputs& inputs, absl::Span<const int64_t> token_ids);
std::string ComputeSlotId(const SlotIdInputs& inputs, absl::Span<const int32_t> token_ids);

// IDs the stores accept: 1..128 chars of [A-Za-z0-9_-]. Anything else (path separators, dots,
// spaces) is InvalidArgument, so an ID can be a file name or a Redis key as it is.
inline constexpr size_t kMaxSlotIdLength = 128;
absl::Status ValidateSlotId(std::string_view id);

// The API's slot ID: what ComputeSlotId returns and Encode answers, exactly 64 lowercase hex
// characters. Client input is checked against this (not the looser storage rule above, which
// also admits tenant-prefixed store keys): INVALID_ARGUMENT naming `field` (e.g. "slot_ids[2]")
// and the length the client sent; the value itself is not echoed.
inline constexpr size_t kApiSlotIdLength = 64;
absl::Status ValidateApiSlotId(std::string_view id, std::string_view field);

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_SLOT_ID_H_
