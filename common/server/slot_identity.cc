#include "common/server/slot_identity.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/slot_store/sha256.h"
#include "common/slot_store/slot_id.h"
#include "common/util/status_macros.h"

namespace icae::server {
namespace {

torch::Dtype FromSlotDType(slot_store::SlotDType d) {
  switch (d) {
    case slot_store::SlotDType::kBFloat16: return torch::kBFloat16;
    case slot_store::SlotDType::kFloat16: return torch::kFloat16;
    default: return torch::kFloat32;
  }
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> ContextIds(const ModelBundle& bundle, const ContextInput& context,
                                                int64_t max_tokens) {
  std::vector<int64_t> ids;
  if (context.text != nullptr) {
    if (context.text->empty()) return absl::InvalidArgumentError("empty context");
    ASSIGN_OR_RETURN(ids, bundle.TokenizeBounded(*context.text, /*add_bos=*/true, max_tokens, "context",
                                                 "--max_context_tokens"));
  } else {
    ids.assign(context.ids.begin(), context.ids.end());
    RETURN_IF_ERROR(bundle.CheckIds(ids, "context"));
  }
  if (ids.empty()) return absl::InvalidArgumentError("empty context");
  if (static_cast<int64_t>(ids.size()) > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("context of ", ids.size(), " tokens is over the bound of ",
                                                   max_tokens, " (--max_context_tokens)"));
  }
  return ids;
}

SlotAddress AddressOf(const ModelBundle& bundle, std::string_view tenant, absl::Span<const int64_t> ids) {
  slot_store::SlotIdInputs in;
  in.tenant = tenant;
  in.model_fingerprint = bundle.model_fingerprint();
  in.adapter_fingerprint = bundle.adapter_fingerprint();
  in.mem_size = static_cast<uint32_t>(bundle.adapter().config.mem_size);
  in.rate = static_cast<uint32_t>(bundle.adapter().config.mean_compression_rate);
  SlotAddress a;
  a.slot_id = slot_store::ComputeSlotId(in, ids);
  a.store_key = TenantStoreKey(tenant, a.slot_id);
  return a;
}

std::string TenantStoreKey(std::string_view tenant, std::string_view slot_id) {
  if (tenant.empty()) return std::string(slot_id);
  slot_store::Sha256 h;
  h.UpdateField("icae-tenant/v1");
  h.UpdateField(tenant);
  return absl::StrCat("t", h.FinishHex().substr(0, 16), "_", std::string(slot_id));
}

slot_store::SlotRecord MakeSlotRecord(const ModelBundle& bundle, const CompressedContext& c) {
  slot_store::SlotRecord r;
  auto& h = r.header;
  h.model_fingerprint = bundle.model_fingerprint();
  h.adapter_fingerprint = bundle.adapter_fingerprint();
  h.dtype = bundle.slot_dtype();
  h.mem_size = static_cast<uint32_t>(bundle.adapter().config.mem_size);
  h.rate = static_cast<uint32_t>(bundle.adapter().config.mean_compression_rate);
  h.segment_count = static_cast<uint32_t>(c.num_segments);
  h.n_slots = static_cast<uint64_t>(c.slots.size(0));
  h.hidden_size = static_cast<uint64_t>(c.slots.size(1));
  h.token_count = static_cast<uint64_t>(c.num_tokens);
  h.created_unix_micros = absl::ToUnixMicros(absl::Now());
  torch::Tensor s = c.slots.to(torch::kCPU, bundle.model().dtype()).contiguous();
  r.payload.assign(static_cast<const char*>(s.data_ptr()), s.numel() * s.element_size());
  return r;
}

absl::StatusOr<torch::Tensor> SlotsFromRecord(const ModelBundle& bundle, const slot_store::SlotRecordView& r) {
  RETURN_IF_ERROR(slot_store::CheckSlotRecordFingerprints(r.header, bundle.model_fingerprint(),
                                                          bundle.adapter_fingerprint()));
  const int64_t hidden = bundle.model().config().hidden_size;
  if (static_cast<int64_t>(r.header.hidden_size) != hidden) {
    return absl::FailedPreconditionError(absl::StrCat("slots have hidden size ", r.header.hidden_size,
                                                      "; this model has ", hidden));
  }
  if (r.header.mem_size != static_cast<uint32_t>(bundle.adapter().config.mem_size)) {
    return absl::FailedPreconditionError("slots were made with another mem_size");
  }
  torch::Dtype dt = FromSlotDType(r.header.dtype);
  const int64_t n = static_cast<int64_t>(r.header.n_slots);
  if (static_cast<uint64_t>(n) * hidden * torch::elementSize(dt) != r.payload.size()) {
    return absl::DataLossError("slot payload size does not match its header");
  }
  // from_blob does not copy; .to(..., copy=true) gives the tensor its own memory.
  torch::Tensor view = torch::from_blob(const_cast<char*>(r.payload.data()), {n, hidden},
                                        torch::TensorOptions().dtype(dt));
  return view.to(bundle.model().device(), bundle.model().dtype(), /*non_blocking=*/false, /*copy=*/true);
}

}  // namespace icae::server
