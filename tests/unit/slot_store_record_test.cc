// SlotRecord encode/parse, CRC-32C, slot IDs, weight fingerprints and store URI parsing.
#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/slot_store/crc32c.h"
#include "common/slot_store/fingerprint.h"
#include "common/slot_store/sha256.h"
#include "common/slot_store/slot_id.h"
#include "common/slot_store/slot_record.h"
#include "common/slot_store/slot_store.h"
#include "common/slot_store/store_uri.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tests/unit/slot_store_testing.h"

namespace icae::slot_store {
namespace {

using ::icae::slot_store::testing::kAdapterFp;
using ::icae::slot_store::testing::kModelFp;
using ::icae::slot_store::testing::MakeRecord;
using ::testing::HasSubstr;

TEST(SlotStoreCrc32c, KnownValues) {
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);  // RFC 3720 check value
  std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(zeros), 0x8A9136AAu);  // RFC 3720 B.4
  // Incremental == one shot, at every split point and odd alignments.
  std::string text = "The quick brown fox jumps over the lazy dog, twice over for alignment.";
  for (size_t split = 0; split <= text.size(); ++split) {
    uint32_t c = Crc32cExtend(0, text.data(), split);
    c = Crc32cExtend(c, text.data() + split, text.size() - split);
    EXPECT_EQ(c, Crc32c(text)) << split;
  }
}

TEST(SlotStoreSha256, KnownValue) {
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(SlotStoreRecord, RoundTripKeepsEveryField) {
  SlotRecord r = MakeRecord(2 * 3 * 8 * 4);  // replaced below with a real shape
  r.header.dtype = SlotDType::kFloat32;
  r.header.mem_size = 4;
  r.header.segment_count = 3;
  r.header.n_slots = 12;
  r.header.hidden_size = 8;
  r.header.rate = 4;
  r.header.token_count = 190;
  r.header.created_unix_micros = -5;  // signed field survives
  r.payload.assign(12 * 8 * 4, '\x5a');
  auto bytes = EncodeSlotRecord(r);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(bytes->size(), kSlotRecordOverheadBytes + r.payload.size());
  auto back = ParseSlotRecord(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->header.model_fingerprint, kModelFp);
  EXPECT_EQ(back->header.adapter_fingerprint, kAdapterFp);
  EXPECT_EQ(back->header.dtype, SlotDType::kFloat32);
  EXPECT_EQ(back->header.mem_size, 4u);
  EXPECT_EQ(back->header.rate, 4u);
  EXPECT_EQ(back->header.segment_count, 3u);
  EXPECT_EQ(back->header.n_slots, 12u);
  EXPECT_EQ(back->header.hidden_size, 8u);
  EXPECT_EQ(back->header.token_count, 190u);
  EXPECT_EQ(back->header.created_unix_micros, -5);
  EXPECT_EQ(back->payload, r.payload);
  auto view = ParseSlotRecordView(*bytes);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->payload.data(), bytes->data() + kSlotRecordHeaderBytes);  // no copy
}

TEST(SlotStoreRecord, EncodeRejectsInconsistentRecords) {
  SlotRecord r = MakeRecord(64);
  r.payload.pop_back();
  EXPECT_EQ(EncodeSlotRecord(r).status().code(), absl::StatusCode::kInvalidArgument);
  r = MakeRecord(64);
  r.header.model_fingerprint = "abc";
  EXPECT_THAT(EncodeSlotRecord(r).status().message(), HasSubstr("64 lowercase hex"));
  r = MakeRecord(64);
  r.header.adapter_fingerprint = std::string(64, 'G');
  EXPECT_EQ(EncodeSlotRecord(r).status().code(), absl::StatusCode::kInvalidArgument);
  r = MakeRecord(64);
  r.header.dtype = SlotDType::kUnspecified;
  EXPECT_EQ(EncodeSlotRecord(r).status().code(), absl::StatusCode::kInvalidArgument);
  r = MakeRecord(64);
  r.header.segment_count = 2;  // n_slots 1 != 2 * 1
  EXPECT_THAT(EncodeSlotRecord(r).status().message(), HasSubstr("n_slots"));
  r = MakeRecord(0);  // empty payload with hidden 0 is consistent
  EXPECT_TRUE(EncodeSlotRecord(r).ok());
  r.header.n_slots = uint64_t{1} << 62;  // overflowing shape
  r.header.segment_count = 0;
  r.header.mem_size = 0;
  EXPECT_FALSE(EncodeSlotRecord(r).ok());
}

TEST(SlotStoreRecord, EveryTruncationIsDataLoss) {
  auto bytes = EncodeSlotRecord(MakeRecord(64));
  ASSERT_TRUE(bytes.ok());
  for (size_t n = 0; n < bytes->size(); ++n) {
    auto parsed = ParseSlotRecord(std::string_view(*bytes).substr(0, n));
    ASSERT_EQ(parsed.status().code(), absl::StatusCode::kDataLoss) << "length " << n;
  }
  // Extra bytes after the checksum are corruption too.
  EXPECT_EQ(ParseSlotRecord(*bytes + "x").status().code(), absl::StatusCode::kDataLoss);
}

TEST(SlotStoreRecord, EveryBitFlipIsDataLoss) {
  auto bytes = EncodeSlotRecord(MakeRecord(32));
  ASSERT_TRUE(bytes.ok());
  for (size_t i = 0; i < bytes->size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = *bytes;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      ASSERT_EQ(ParseSlotRecord(bad).status().code(), absl::StatusCode::kDataLoss)
          << "byte " << i << " bit " << bit;
    }
  }
}

// A record whose checksum is right but whose slots hold NaN or infinity is corrupt in every
// dtype (what a forged record or a broken encoder leaves); finite extremes are fine.
TEST(SlotStoreRecord, NonFinitePayloadIsDataLoss) {
  struct Case {
    SlotDType dtype;
    std::string element;  // little-endian bytes of one element
    bool finite;
  };
  const std::vector<Case> cases = {
      {SlotDType::kBFloat16, std::string("\xc0\x7f", 2), false},  // NaN
      {SlotDType::kBFloat16, std::string("\x80\xff", 2), false},  // -inf
      {SlotDType::kBFloat16, std::string("\x7f\x7f", 2), true},   // largest finite
      {SlotDType::kFloat16, std::string("\x00\x7c", 2), false},   // +inf
      {SlotDType::kFloat16, std::string("\x01\xfe", 2), false},   // NaN
      {SlotDType::kFloat16, std::string("\xff\x7b", 2), true},    // 65504
      {SlotDType::kFloat32, std::string("\x00\x00\xc0\x7f", 4), false},  // NaN
      {SlotDType::kFloat32, std::string("\x00\x00\x80\x7f", 4), false},  // +inf
      {SlotDType::kFloat32, std::string("\xff\xff\x7f\x7f", 4), true},   // FLT_MAX
  };
  for (const Case& c : cases) {
    SlotRecord r = MakeRecord(0);
    r.header.dtype = c.dtype;
    r.header.hidden_size = 5;
    r.payload.assign(5 * c.element.size(), '\0');
    r.payload.replace(3 * c.element.size(), c.element.size(), c.element);  // element 3
    auto bytes = EncodeSlotRecord(r);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    absl::Status st = VerifySlotRecord(*bytes);
    if (c.finite) {
      EXPECT_TRUE(st.ok()) << DTypeName(c.dtype) << ": " << st;
    } else {
      EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << DTypeName(c.dtype);
      EXPECT_THAT(st.message(), HasSubstr("non-finite value"));
      EXPECT_THAT(st.message(), HasSubstr("slot 0, element 3"));
      EXPECT_EQ(ParseSlotRecordView(*bytes).status().code(), absl::StatusCode::kDataLoss);
    }
  }
}

TEST(SlotStoreRecord, WrongVersionAndMagicAreNamed) {
  auto bytes = EncodeSlotRecord(MakeRecord(16));
  ASSERT_TRUE(bytes.ok());
  std::string v2 = *bytes;
  v2[8] = 2;
  auto s = ParseSlotRecord(v2).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("version 2"));
  std::string magic = *bytes;
  magic[0] = 'X';
  EXPECT_THAT(ParseSlotRecord(magic).status().message(), HasSubstr("magic"));
  EXPECT_EQ(ParseSlotRecord(std::string(1000, '\0')).status().code(), absl::StatusCode::kDataLoss);
}

TEST(SlotStoreRecord, HugeDeclaredShapeIsRejectedWithoutAllocating) {
  // A crafted header claiming terabytes must fail on the size check, not on an allocation.
  auto bytes = EncodeSlotRecord(MakeRecord(16));
  ASSERT_TRUE(bytes.ok());
  std::string bad = *bytes;
  for (int i = 0; i < 8; ++i) bad[128 + i] = '\xff';  // payload_bytes = 2^64 - 1
  EXPECT_EQ(ParseSlotRecord(bad).status().code(), absl::StatusCode::kDataLoss);
}

TEST(SlotStoreRecord, FingerprintMismatchIsFailedPrecondition) {
  SlotRecord r = MakeRecord(16);
  EXPECT_TRUE(CheckSlotRecordFingerprints(r.header, kModelFp, kAdapterFp).ok());
  auto other_model = CheckSlotRecordFingerprints(r.header, std::string(64, 'c'), kAdapterFp);
  EXPECT_EQ(other_model.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other_model.message(), HasSubstr("model"));
  auto other_adapter = CheckSlotRecordFingerprints(r.header, kModelFp, std::string(64, 'c'));
  EXPECT_EQ(other_adapter.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other_adapter.message(), HasSubstr("adapter"));
}

TEST(SlotStoreSlotId, DeterministicAndSensitiveToEveryInput) {
  const std::vector<int64_t> tokens = {1, 415, 2936, 9060, 285, 1142};
  SlotIdInputs in{"tenant-a", kModelFp, kAdapterFp, 128, 4};
  const std::string id = ComputeSlotId(in, tokens);
  EXPECT_EQ(id.size(), 64u);
  EXPECT_TRUE(ValidateSlotId(id).ok());
  EXPECT_EQ(id, ComputeSlotId(in, tokens));
  // int32 callers get the same ID as int64 callers.
  const std::vector<int32_t> tokens32(tokens.begin(), tokens.end());
  EXPECT_EQ(id, ComputeSlotId(in, tokens32));

  std::vector<std::string> variants;
  auto with = [&](SlotIdInputs v, std::vector<int64_t> t) { variants.push_back(ComputeSlotId(v, t)); };
  with({"tenant-b", kModelFp, kAdapterFp, 128, 4}, tokens);
  with({"tenant-a", std::string(64, 'c'), kAdapterFp, 128, 4}, tokens);
  with({"tenant-a", kModelFp, std::string(64, 'c'), 128, 4}, tokens);
  with({"tenant-a", kModelFp, kAdapterFp, 64, 4}, tokens);
  with({"tenant-a", kModelFp, kAdapterFp, 128, 2}, tokens);
  with(in, {1, 415, 2936, 9060, 285});
  with(in, {1, 415, 2936, 9060, 285, 1143});
  with(in, {});
  for (const auto& v : variants) EXPECT_NE(v, id);
  // Length prefixes keep field boundaries: moving a character between fields changes the ID.
  std::string m1 = "x" + kModelFp, a1 = kAdapterFp;
  std::string m2 = kModelFp, a2 = "x" + kAdapterFp;
  EXPECT_NE(ComputeSlotId({"", m1, a1, 1, 1}, tokens), ComputeSlotId({"", m2, a2, 1, 1}, tokens));
  EXPECT_NE(ComputeSlotId({"ab", "c", "", 1, 1}, tokens),
            ComputeSlotId({"a", "bc", "", 1, 1}, tokens));
}

TEST(SlotStoreSlotId, ValidateRejectsUnsafeIds) {
  EXPECT_TRUE(ValidateSlotId("abc-DEF_123").ok());
  EXPECT_TRUE(ValidateSlotId(std::string(kMaxSlotIdLength, 'a')).ok());
  EXPECT_FALSE(ValidateSlotId(std::string(kMaxSlotIdLength + 1, 'a')).ok());
  for (const char* bad : {"", "../etc", "a/b", "a.b", "a b", "a\nb", ".."}) {
    EXPECT_EQ(ValidateSlotId(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// Client-supplied slot IDs follow the API's format, not the storage rule: the message names
// the field and the client's own length.
TEST(SlotStoreSlotId, ApiFormatIs64LowercaseHex) {
  const std::string good = ComputeSlotId(SlotIdInputs{"", kModelFp, kAdapterFp, 8, 4},
                                         std::vector<int64_t>{1, 2, 3});
  EXPECT_TRUE(ValidateApiSlotId(good, "slot_ids[0]").ok());
  EXPECT_TRUE(ValidateApiSlotId(std::string(64, 'f'), "slot_ids[0]").ok());
  struct Case {
    std::string id;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"", "got 0 bytes"},
      {"abc", "got 3 bytes"},
      {std::string(63, 'a'), "got 63 bytes"},
      {std::string(65, 'a'), "got 65 bytes"},
      {std::string(128, 'a'), "got 128 bytes"},  // storage would take it; the API does not
      {std::string(64, 'z'), "byte 0 is not one"},
      {std::string(64, 'A'), "byte 0 is not one"},  // upper case: one spelling per ID
      {std::string(63, 'a') + "\n", "byte 63 is not one"},
  };
  for (const Case& c : cases) {
    absl::Status st = ValidateApiSlotId(c.id, "slot_ids[2]");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.id;
    EXPECT_THAT(st.message(), HasSubstr("slot_ids[2]"));
    EXPECT_THAT(st.message(), HasSubstr(c.says));
    EXPECT_THAT(st.message(), HasSubstr("64 lowercase hex"));
  }
}

class SlotStoreFingerprint : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = icae::testing::MakeTempDir("icae-fp"); }
  void TearDown() override {
    std::string out;
    icae::testing::RunCommand("rm -rf '" + dir_ + "'", &out);
  }
  // A safetensors-shaped file: header JSON, then `data`.
  std::string WriteSafetensors(const std::string& name, const std::string& json,
                               const std::string& data) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(json.size() >> (8 * i));
    bytes += json + data;
    return Write(name, bytes);
  }
  std::string Write(const std::string& name, const std::string& bytes) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  std::string dir_;
};

TEST_F(SlotStoreFingerprint, SafetensorsSameContentSameFingerprint) {
  const std::string json = R"({"w":{"dtype":"F32","shape":[4096],"data_offsets":[0,16384]}})";
  std::string data(16384, '\x01');
  auto a = FingerprintFiles({WriteSafetensors("a.safetensors", json, data)});
  auto b = FingerprintFiles({WriteSafetensors("elsewhere.safetensors", json, data)});
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->size(), 64u);
  EXPECT_EQ(*a, *b);  // names and folders do not matter
}

TEST_F(SlotStoreFingerprint, SafetensorsDifferentWeightsSameHeaderDiffer) {
  // Same header and size (like the pretrained vs fine-tuned ICAE adapters): sampled data blocks
  // must tell them apart, wherever in the data the difference lies.
  const std::string json = R"({"w":{"dtype":"F32","shape":[65536],"data_offsets":[0,262144]}})";
  std::string data(262144, '\x01');
  auto base = FingerprintFiles({WriteSafetensors("base.safetensors", json, data)});
  ASSERT_TRUE(base.ok());
  std::string tuned = data;
  for (char& c : tuned) c = '\x02';
  auto ft = FingerprintFiles({WriteSafetensors("ft.safetensors", json, tuned)});
  ASSERT_TRUE(ft.ok());
  EXPECT_NE(*base, *ft);
  std::string last_byte = data;
  last_byte.back() = '\x03';
  auto last = FingerprintFiles({WriteSafetensors("last.safetensors", json, last_byte)});
  EXPECT_NE(*base, *last);
  std::string header2 = R"({"w":{"dtype":"F16","shape":[65536],"data_offsets":[0,262144]}})";
  auto h2 = FingerprintFiles({WriteSafetensors("h2.safetensors", header2, data)});
  EXPECT_NE(*base, *h2);
}

TEST_F(SlotStoreFingerprint, OtherFilesHashedWholeAndSetIsOrderFree) {
  std::string a = Write("config.json", "{\"hidden_size\": 64}");
  std::string b = Write("blob.bin", std::string(3 << 20, 'z'));
  auto ab = FingerprintFiles({a, b});
  auto ba = FingerprintFiles({b, a});
  ASSERT_TRUE(ab.ok());
  EXPECT_EQ(*ab, *ba);
  auto only_a = FingerprintFiles({a});
  EXPECT_NE(*ab, *only_a);
  std::string changed = std::string(3 << 20, 'z');
  changed[(3 << 20) / 2] = 'y';
  Write("blob.bin", changed);
  EXPECT_NE(*ab, *FingerprintFiles({a, b}));
  // A file that merely starts like safetensors but declares too long a header is hashed whole.
  std::string fake(16, '\0');
  fake[0] = '\x7f';
  fake[7] = '\x7f';
  EXPECT_TRUE(FingerprintFiles({Write("fake.safetensors", fake)}).ok());
  EXPECT_TRUE(FingerprintFiles({Write("empty", "")}).ok());
}

TEST_F(SlotStoreFingerprint, Errors) {
  EXPECT_EQ(FingerprintFiles({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FingerprintFiles({dir_ + "/missing.safetensors"}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SlotStoreUri, ParsesParts) {
  auto u = ParseStoreUri("redis://:p%40ss@cache.local:6380/3?ttl=60&timeout_ms=50");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->scheme, "redis");
  EXPECT_EQ(u->userinfo, ":p@ss");
  EXPECT_EQ(u->host, "cache.local");
  EXPECT_EQ(u->port, 6380);
  EXPECT_EQ(u->path, "/3");
  EXPECT_EQ(u->params.at("ttl"), "60");
  auto f = ParseStoreUri("file:///var/cache/icae%20slots?max_bytes=1G");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->host, "");
  EXPECT_EQ(f->path, "/var/cache/icae slots");
  auto v6 = ParseStoreUri("redis://[::1]:7000/0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 7000);
  auto nested = "tiered://?backend=" + UrlEncode("redis://h:1/0?ttl=5&pool=2");
  auto t = ParseStoreUri(nested);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->params.at("backend"), "redis://h:1/0?ttl=5&pool=2");
}

TEST(SlotStoreUri, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("1048576"), 1048576u);
  EXPECT_EQ(*ParseByteSize("64K"), 65536u);
  EXPECT_EQ(*ParseByteSize("64KiB"), 65536u);
  EXPECT_EQ(*ParseByteSize("8M"), 8u << 20);
  EXPECT_EQ(*ParseByteSize("2g"), uint64_t{2} << 30);
  EXPECT_EQ(*ParseByteSize("10B"), 10u);
  for (const char* bad : {"", "K", "12Q", "-1", "1.5M", "99999999999999999999", "20000000T"}) {
    EXPECT_FALSE(ParseByteSize(bad).ok()) << bad;
  }
}

TEST(SlotStoreUri, BadUrisAreInvalidArgumentWithAClearMessage) {
  struct Case {
    const char* uri;
    const char* says;
  } cases[] = {
      {"", "scheme://"},
      {"memory", "scheme://"},
      {"s3://bucket", "unknown slot store scheme 's3://'"},
      {"memory://?max_bytes=lots", "max_bytes"},
      {"memory://?max_bytes=0", "at least 1"},
      {"memory://?max_byte=1", "unknown parameter 'max_byte'"},
      {"memory://?ttl=-3", "non-negative"},
      {"memory://?ttl=soon", "ttl"},
      {"memory://?max_bytes=1&max_bytes=2", "given twice"},
      {"memory://host", "no host"},
      {"file://relative/dir", "absolute"},
      {"file://", "needs a folder"},
      {"file:///tmp/x?fsync=2", "fsync"},
      {"redis://", "needs a host"},
      {"redis://h:99999/0", "port"},
      {"redis://h:6379/zero", "database number"},
      {"redis://h:6379/0?pool=0", "pool"},
      {"redis://h:6379/0?timeout_ms=abc", "timeout_ms"},
      {"redis://h:6379/0?colour=red", "unknown parameter 'colour'"},
      {"redis://:secret@h:6379/0?pool=0", "pool"},
      {"tiered://", "backend="},
      {"tiered://?backend=tiered%3A%2F%2F", "cannot itself be tiered"},
      {"tiered://?backend=memory%3A%2F%2F%3Fmax_bytes%3Dx", "max_bytes"},
      {"memory://?x=%zz", "percent escape"},
  };
  for (const auto& c : cases) {
    auto store = OpenSlotStore(c.uri);
    ASSERT_FALSE(store.ok()) << c.uri;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << c.uri;
    EXPECT_THAT(store.status().message(), HasSubstr(c.says)) << c.uri;
    EXPECT_THAT(store.status().message(), ::testing::Not(HasSubstr("secret"))) << c.uri;
  }
}

TEST(SlotStoreUri, GoodUrisOpen) {
  for (const char* uri : {"memory://", "memory://?max_bytes=64M&ttl=500ms&max_record_bytes=8M",
                          "redis://127.0.0.1:1/0?timeout_ms=5&pool=2&prefix=t:",
                          "tiered://?local_max_bytes=1M&backend=memory%3A%2F%2F"}) {
    auto store = OpenSlotStore(uri);
    EXPECT_TRUE(store.ok()) << uri << ": " << store.status();
  }
}

}  // namespace
}  // namespace icae::slot_store
