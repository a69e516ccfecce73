// SlotRecord: what the slot cache stores for one encoded context — a versioned header, the slot
// vectors as raw bytes, and a checksum. Bytes and shapes only; no tensor library here.
//
// Wire format, version 1 (all integers little-endian; 140 bytes + payload):
//   off  size  field
//     0     8  magic "ICAESLOT"
//     8     4  format_version (= 1)
//    12     1  dtype (SlotDType)           13  3  reserved, zero
//    16    32  model fingerprint (SHA-256 digest)
//    48    32  adapter fingerprint (SHA-256 digest)
//    80     4  mem_size                     84  4  rate
//    88     4  segment_count                92  4  reserved, zero
//    96     8  n_slots (= segment_count * mem_size)
//   104     8  hidden_size
//   112     8  token_count (source tokens that were compressed)
//   120     8  created_unix_micros (signed)
//   128     8  payload_bytes (= n_slots * hidden_size * DTypeSize(dtype))
//   136     P  payload: [n_slots, hidden_size] row-major, host (little-endian) element order
// 136+P     4  CRC-32C over bytes [0, 136+P)
//
// Why CRC-32C and not SHA-256 for the checksum: the checksum only has to catch accidents
// (torn or truncated writes, bit rot, a wrong file); a keyless hash cannot stop someone who can
// write to the store anyway, since they can recompute it. CRC-32C detects every burst error up to
// 32 bits, runs at several GB/s with the SSE4.2 instruction (an 8 MiB record costs ~1 ms; SHA-256
// would cost ~5 ms even with SHA-NI) and so can be verified on every read from a shared store.
#ifndef ICAE_COMMON_SLOT_STORE_SLOT_RECORD_H_
#define ICAE_COMMON_SLOT_STORE_SLOT_RECORD_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace icae::slot_store {

enum class SlotDType : uint8_t {
  kUnspecified = 0,  // never valid in a record
  kFloat32 = 1,
  kBFloat16 = 2,
  kFloat16 = 3,
};
// Bytes per element; 0 for kUnspecified or unknown values.
size_t DTypeSize(SlotDType dtype);
const char* DTypeName(SlotDType dtype);

inline constexpr uint32_t kSlotRecordVersion = 1;
inline constexpr size_t kSlotRecordHeaderBytes = 136;
inline constexpr size_t kSlotRecordOverheadBytes = kSlotRecordHeaderBytes + 4;  // + CRC

struct SlotRecordHeader {
  std::string model_fingerprint;    // 64 lowercase hex chars (see fingerprint.h)
  std::string adapter_fingerprint;  // 64 lowercase hex chars
  SlotDType dtype = SlotDType::kUnspecified;
  uint32_t mem_size = 0;       // S: slots per segment
  uint32_t rate = 0;           // compression rate the segments were cut for
  uint32_t segment_count = 0;
  uint64_t n_slots = 0;        // segment_count * mem_size
  uint64_t hidden_size = 0;
  uint64_t token_count = 0;    // source tokens compressed into these slots
  int64_t created_unix_micros = 0;

  // Bytes the payload must have: n_slots * hidden_size * DTypeSize(dtype), or an error when
  // the shape is inconsistent or the product overflows.
  absl::StatusOr<uint64_t> PayloadBytes() const;
};

struct SlotRecord {
  SlotRecordHeader header;
  std::string payload;
};

// A parsed record that points into the bytes it was parsed from (no copy of the payload).
struct SlotRecordView {
  SlotRecordHeader header;
  std::string_view payload;
};

// Serialises a record. InvalidArgument when fields are inconsistent (fingerprints not 64 hex
// chars, unknown dtype, n_slots != segment_count * mem_size, payload size != shape).
absl::StatusOr<std::string> EncodeSlotRecord(const SlotRecord& record);

// Parses and verifies untrusted bytes: every size is checked against the bytes actually present
// before anything is read or allocated. Short, oversized, wrong-magic, wrong-version,
// inconsistent or checksum-failing input is DATA_LOSS, and so is a payload holding NaN or
// infinity; it never crashes or over-reads. Pure function of its input (fuzzable). This is the
// one validation of records: every store runs it on Put and on reads it did not itself verify.
absl::StatusOr<SlotRecordView> ParseSlotRecordView(std::string_view bytes);
absl::StatusOr<SlotRecord> ParseSlotRecord(std::string_view bytes);

// The checks of ParseSlotRecordView without building the result (what stores run on reads).
absl::Status VerifySlotRecord(std::string_view bytes);

// FAILED_PRECONDITION naming both sides when the record was made by another model or adapter,
// so a decoder can refuse it; OK when both fingerprints match.
absl::Status CheckSlotRecordFingerprints(const SlotRecordHeader& header,
                                         std::string_view model_fingerprint,
                                         std::string_view adapter_fingerprint);

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_SLOT_RECORD_H_
