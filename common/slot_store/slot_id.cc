#include "common/slot_store/slot_id.h"

#include "absl/strings/str_cat.h"
#include "common/slot_store/absl_compat.h"
#include "common/slot_store/sha256.h"

namespace icae::slot_store {
namespace {

template <typename T>
std::string SlotIdImpl(const SlotIdInputs& in, absl::Span<const T> tokens) {
  Sha256 h;
  h.UpdateField("icae-slot-id/v1");
  h.UpdateField(in.tenant);
  h.UpdateField(in.model_fingerprint);
  h.UpdateField(in.adapter_fingerprint);
  h.UpdateU32(in.mem_size);
  h.UpdateU32(in.rate);
  h.UpdateU64(tokens.size());
  // Batch the token bytes: one EVP update per 4 KiB instead of one per token.
  uint8_t buf[4096];
  size_t used = 0;
  for (T t : tokens) {
    const auto v = static_cast<uint64_t>(static_cast<int64_t>(t));
    for (int i = 0; i < 8; ++i) buf[used++] = static_cast<uint8_t>(v >> (8 * i));
    if (used == sizeof buf) {
      h.Update(buf, used);
      used = 0;
    }
  }
  h.Update(buf, used);
  return h.FinishHex();
}

}  // namespace

std::string ComputeSlotId(const SlotIdInputs& inputs, absl::Span<const int64_t> token_ids) {
  return SlotIdImpl(inputs, token_ids);
}

std::string ComputeSlotId(const SlotIdInputs& inputs, absl::Span<const int32_t> token_ids) {
  return SlotIdImpl(inputs, token_ids);
}

absl::Status ValidateSlotId(std::string_view id) {
  if (id.empty() || id.size() > kMaxSlotIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot id must be 1..", kMaxSlotIdLength, " chars, got ", id.size()));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          "slot id may only contain letters, digits, '_' and '-'");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateApiSlotId(std::string_view id, std::string_view field) {
  if (id.size() != kApiSlotIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(ToAbsl(field), " must be a slot ID from Encode (", kApiSlotIdLength,
                     " lowercase hex characters), got ", id.size(), " bytes"));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return absl::InvalidArgumentError(
          absl::StrCat(ToAbsl(field), " must be a slot ID from Encode (", kApiSlotIdLength,
                       " lowercase hex characters): byte ", i, " is not one"));
    }
  }
  return absl::OkStatus();
}

}  // namespace icae::slot_store
