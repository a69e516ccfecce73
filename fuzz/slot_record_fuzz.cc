// SlotRecord bytes as a store returns them (a shared Redis, a file, a peer): the three entry
// points must agree, and an accepted record must encode back to the same bytes' meaning.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/slot_store/crc32c.h"
#include "common/slot_store/slot_record.h"
#include "fuzz/fuzz_check.h"

namespace {

namespace ss = icae::slot_store;

void CheckRecord(std::string_view bytes) {
  auto view = ss::ParseSlotRecordView(bytes);
  auto record = ss::ParseSlotRecord(bytes);
  const auto verified = ss::VerifySlotRecord(bytes);
  FUZZ_CHECK(view.ok() == record.ok());
  FUZZ_CHECK(view.ok() == verified.ok());
  if (!view.ok()) {
    FUZZ_CHECK(view.status().code() == record.status().code());
    return;
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
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  CheckRecord(bytes);
  // Again with the trailing CRC-32C recomputed, as a forger with write access would: a
  // mutation would almost never keep the checksum right, and the checks behind it (header
  // fields, shape, payload size, NaN/Inf) must hold up too.
  if (size >= 4) {
    std::string fixed(bytes);
    const uint32_t crc = ss::Crc32c(std::string_view(fixed.data(), size - 4));
    for (int i = 0; i < 4; ++i) fixed[size - 4 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
    CheckRecord(fixed);
  }
  return 0;
}
