#include "common/slot_store/slot_record.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/slot_store/crc32c.h"
#include "common/slot_store/absl_compat.h"
#include "common/util/finite.h"
#include "common/util/status_macros.h"

namespace icae::slot_store {
namespace {

constexpr char kMagic[8] = {'I', 'C', 'A', 'E', 'S', 'L', 'O', 'T'};

// Field offsets; see the table in slot_record.h.
constexpr size_t kOffVersion = 8;
constexpr size_t kOffDType = 12;
constexpr size_t kOffModelFp = 16;
constexpr size_t kOffAdapterFp = 48;
constexpr size_t kOffMemSize = 80;
constexpr size_t kOffRate = 84;
constexpr size_t kOffSegments = 88;
constexpr size_t kOffReserved2 = 92;
constexpr size_t kOffNSlots = 96;
constexpr size_t kOffHidden = 104;
constexpr size_t kOffTokens = 112;
constexpr size_t kOffCreated = 120;
constexpr size_t kOffPayloadBytes = 128;
static_assert(kOffPayloadBytes + 8 == kSlotRecordHeaderBytes);

void PutU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
void PutU64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // upper case is rejected too: one spelling per fingerprint
}

absl::Status PutFingerprint(char* out, std::string_view hex, const char* what) {
  if (hex.size() != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " fingerprint must be 64 lowercase hex chars, got ", hex.size()));
  }
  for (size_t i = 0; i < 32; ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " fingerprint must be 64 lowercase hex chars"));
    }
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return absl::OkStatus();
}

std::string FingerprintHex(const char* p) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    auto b = static_cast<uint8_t>(p[i]);
    out[2 * i] = kHex[b >> 4];
    out[2 * i + 1] = kHex[b & 15];
  }
  return out;
}

bool KnownDType(SlotDType d) { return DTypeSize(d) != 0; }

// Multiplies with overflow detection.
bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

// Shape checks shared by encode (InvalidArgument) and parse (DataLoss).
absl::Status CheckShape(const SlotRecordHeader& h, uint64_t payload_bytes) {
  if (!KnownDType(h.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown dtype ", static_cast<int>(h.dtype)));
  }
  uint64_t expect_slots = 0;
  if (MulOverflows(h.segment_count, h.mem_size, &expect_slots) || expect_slots != h.n_slots) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "n_slots %d != segment_count %d * mem_size %d", h.n_slots, h.segment_count, h.mem_size));
  }
  ASSIGN_OR_RETURN(uint64_t want, h.PayloadBytes());
  if (want != payload_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "payload is %d bytes, shape [%d, %d] of %s needs %d", payload_bytes, h.n_slots,
        h.hidden_size, DTypeName(h.dtype), want));
  }
  return absl::OkStatus();
}

// Index of the first NaN or infinity in a payload of `dtype` elements, or -1.
int64_t FirstNonFinite(SlotDType dtype, std::string_view payload) {
  switch (dtype) {
    case SlotDType::kFloat32: return icae::FirstNonFinite(FloatFormat::kFloat32, payload.data(), payload.size() / 4);
    case SlotDType::kBFloat16: return icae::FirstNonFinite(FloatFormat::kBFloat16, payload.data(), payload.size() / 2);
    default: return icae::FirstNonFinite(FloatFormat::kFloat16, payload.data(), payload.size() / 2);
  }
}

absl::Status DataLoss(std::string_view what) {
  return absl::DataLossError(absl::StrCat("corrupt slot record: ", ToAbsl(what)));
}

}  // namespace

size_t DTypeSize(SlotDType dtype) {
  switch (dtype) {
    case SlotDType::kFloat32:
      return 4;
    case SlotDType::kBFloat16:
    case SlotDType::kFloat16:
      return 2;
    default:
      return 0;
  }
}

const char* DTypeName(SlotDType dtype) {
  switch (dtype) {
    case SlotDType::kFloat32:
      return "float32";
    case SlotDType::kBFloat16:
      return "bfloat16";
    case SlotDType::kFloat16:
      return "float16";
    default:
      return "unspecified";
  }
}

absl::StatusOr<uint64_t> SlotRecordHeader::PayloadBytes() const {
  uint64_t elems = 0, bytes = 0;
  if (MulOverflows(n_slots, hidden_size, &elems) ||
      MulOverflows(elems, DTypeSize(dtype), &bytes)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("shape [%d, %d] overflows 64 bits", n_slots, hidden_size));
  }
  return bytes;
}

absl::StatusOr<std::string> EncodeSlotRecord(const SlotRecord& record) {
  const SlotRecordHeader& h = record.header;
  RETURN_IF_ERROR(CheckShape(h, record.payload.size()));
  std::string out(kSlotRecordOverheadBytes + record.payload.size(), '\0');
  char* p = out.data();
  std::memcpy(p, kMagic, sizeof kMagic);
  PutU32(p + kOffVersion, kSlotRecordVersion);
  p[kOffDType] = static_cast<char>(h.dtype);
  RETURN_IF_ERROR(PutFingerprint(p + kOffModelFp, h.model_fingerprint, "model"));
  RETURN_IF_ERROR(PutFingerprint(p + kOffAdapterFp, h.adapter_fingerprint, "adapter"));
  PutU32(p + kOffMemSize, h.mem_size);
  PutU32(p + kOffRate, h.rate);
  PutU32(p + kOffSegments, h.segment_count);
  PutU64(p + kOffNSlots, h.n_slots);
  PutU64(p + kOffHidden, h.hidden_size);
  PutU64(p + kOffTokens, h.token_count);
  PutU64(p + kOffCreated, static_cast<uint64_t>(h.created_unix_micros));
  PutU64(p + kOffPayloadBytes, record.payload.size());
  if (!record.payload.empty()) {
    std::memcpy(p + kSlotRecordHeaderBytes, record.payload.data(), record.payload.size());
  }
  const size_t body = kSlotRecordHeaderBytes + record.payload.size();
  PutU32(p + body, Crc32cExtend(0, p, body));
  return out;
}

absl::StatusOr<SlotRecordView> ParseSlotRecordView(std::string_view bytes) {
  if (bytes.size() < kSlotRecordOverheadBytes) {
    return DataLoss(absl::StrCat("truncated: ", bytes.size(), " bytes, header alone is ",
                                 kSlotRecordOverheadBytes));
  }
  const char* p = bytes.data();
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0) return DataLoss("bad magic");
  const uint32_t version = GetU32(p + kOffVersion);
  if (version != kSlotRecordVersion) {
    return DataLoss(absl::StrCat("unsupported format version ", version, " (this build reads ",
                                 kSlotRecordVersion, ")"));
  }
  if (p[13] != 0 || p[14] != 0 || p[15] != 0 || GetU32(p + kOffReserved2) != 0) {
    return DataLoss("reserved header bytes are not zero");
  }
  // The declared payload size must match the bytes present exactly: catches truncation and
  // trailing garbage before any payload byte is touched.
  const uint64_t payload_bytes = GetU64(p + kOffPayloadBytes);
  if (payload_bytes != bytes.size() - kSlotRecordOverheadBytes) {
    return DataLoss(absl::StrCat("header declares ", payload_bytes, " payload bytes, ",
                                 bytes.size() - kSlotRecordOverheadBytes, " present"));
  }
  const size_t body = kSlotRecordHeaderBytes + payload_bytes;
  if (Crc32cExtend(0, p, body) != GetU32(p + body)) return DataLoss("checksum mismatch");

  SlotRecordView view;
  SlotRecordHeader& h = view.header;
  h.dtype = static_cast<SlotDType>(static_cast<uint8_t>(p[kOffDType]));
  h.model_fingerprint = FingerprintHex(p + kOffModelFp);
  h.adapter_fingerprint = FingerprintHex(p + kOffAdapterFp);
  h.mem_size = GetU32(p + kOffMemSize);
  h.rate = GetU32(p + kOffRate);
  h.segment_count = GetU32(p + kOffSegments);
  h.n_slots = GetU64(p + kOffNSlots);
  h.hidden_size = GetU64(p + kOffHidden);
  h.token_count = GetU64(p + kOffTokens);
  h.created_unix_micros = static_cast<int64_t>(GetU64(p + kOffCreated));
  if (absl::Status s = CheckShape(h, payload_bytes); !s.ok()) return DataLoss(ToStd(s.message()));
  view.payload = bytes.substr(kSlotRecordHeaderBytes, payload_bytes);
  // A checksum only proves the bytes are the ones written; slots holding NaN or infinity
  // (written by a broken encoder, or forged with a recomputed CRC) would decode to garbage.
  if (const int64_t bad = FirstNonFinite(h.dtype, view.payload); bad >= 0) {
    const auto hidden = static_cast<int64_t>(h.hidden_size);
    return DataLoss(absl::StrCat("non-finite value (NaN or infinity) at slot ", bad / hidden,
                                 ", element ", bad % hidden));
  }
  return view;
}

absl::StatusOr<SlotRecord> ParseSlotRecord(std::string_view bytes) {
  ASSIGN_OR_RETURN(SlotRecordView view, ParseSlotRecordView(bytes));
  return SlotRecord{std::move(view.header), std::string(view.payload)};
}

absl::Status VerifySlotRecord(std::string_view bytes) {
  return ParseSlotRecordView(bytes).status();
}

absl::Status CheckSlotRecordFingerprints(const SlotRecordHeader& header,
                                         std::string_view model_fingerprint,
                                         std::string_view adapter_fingerprint) {
  if (header.model_fingerprint != model_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("slot record was made by model ", header.model_fingerprint.substr(0, 16),
                     "..., this server runs model ", ToAbsl(model_fingerprint.substr(0, 16)), "..."));
  }
  if (header.adapter_fingerprint != adapter_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat(
        "slot record was made with adapter ", header.adapter_fingerprint.substr(0, 16),
        "..., this server runs adapter ", ToAbsl(adapter_fingerprint.substr(0, 16)), "..."));
  }
  return absl::OkStatus();
}

}  // namespace icae::slot_store
