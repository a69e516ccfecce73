// SlotRecord bytes as a store returns them (a shared Redis, a file, a peer): the three entry
// points must agree, and an accepted record must encode back to the same bytes' meaning.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/slot_store/slot_record.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace ss = icae::slot_store;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto view = ss::ParseSlotRecordView(bytes);
  auto record = ss::ParseSlotRecord(bytes);
  const auto verified = ss::VerifySlotRecord(bytes);
  FUZZ_CHECK(view.ok() == record.ok());
  FUZZ_CHECK(view.ok() == verified.ok());
  if (!view.ok()) {
    FUZZ_CHECK(view.status().code() == record.status().code());
    return 0;
  }
  FUZZ_CHECK(view->payload.data() >= bytes.data() &&
             view->payload.data() + view->payload.size() <= bytes.data() + bytes.size());
  FUZZ_CHECK(record->payload == view->payload);
  auto payload_bytes = record->header.PayloadBytes();
  FUZZ_CHECK(payload_bytes.ok() && *payload_bytes == record->payload.size());
  auto encoded = ss::EncodeSlotRecord(*record);
  FUZZ_CHECK(encoded.ok());
  auto again = ss::ParseSlotRecordView(*encoded);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->payload == view->payload);
  FUZZ_CHECK(again->header.n_slots == view->header.n_slots);
  FUZZ_CHECK(again->header.model_fingerprint == view->header.model_fingerprint);
  return 0;
}
