// memory:// store (LRU by bytes, TTL, bounds) and the tiered store over in-process backends.
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "common/slot_store/file_store.h"
#include "common/slot_store/memory_store.h"
#include "common/slot_store/slot_store.h"
#include "common/slot_store/tiered_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tests/unit/slot_store_testing.h"

namespace icae::slot_store {
namespace {

using ::icae::slot_store::testing::MakeRecord;
using ::icae::slot_store::testing::RecordBytesOfSize;
using ::testing::HasSubstr;

constexpr size_t kRecord = 1000;  // bytes per test record

MemoryStoreOptions Bounded(uint64_t max_bytes) {
  MemoryStoreOptions o;
  o.max_bytes = max_bytes;
  return o;
}

TEST(SlotStoreMemory, RoundTrip) {
  MemorySlotStore store(Bounded(1 << 20));
  const SlotRecord record = MakeRecord(512, 7);
  ASSERT_TRUE(store.PutRecord("id-1", record).ok());
  auto back = store.GetRecord("id-1");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->payload, record.payload);
  EXPECT_EQ(back->header.hidden_size, record.header.hidden_size);
  EXPECT_TRUE(*store.Contains("id-1"));
  EXPECT_FALSE(*store.Contains("id-2"));
  EXPECT_EQ(store.Get("id-2").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store.Delete("id-1").ok());
  ASSERT_TRUE(store.Delete("id-1").ok());  // idempotent
  EXPECT_EQ(store.Get("id-1").status().code(), absl::StatusCode::kNotFound);
  SlotStoreStats s = store.Stats();
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.misses, 2);
  EXPECT_EQ(s.entries, 0);
  EXPECT_EQ(s.bytes, 0);
}

TEST(SlotStoreMemory, LruOrderAndByteBound) {
  MemorySlotStore store(Bounded(3 * kRecord));
  ASSERT_TRUE(store.Put("a", RecordBytesOfSize(kRecord, 1)).ok());
  ASSERT_TRUE(store.Put("b", RecordBytesOfSize(kRecord, 2)).ok());
  ASSERT_TRUE(store.Put("c", RecordBytesOfSize(kRecord, 3)).ok());
  // Exactly at the bound: nothing evicted.
  EXPECT_EQ(store.Stats().bytes, static_cast<int64_t>(3 * kRecord));
  EXPECT_EQ(store.Stats().evictions, 0);
  ASSERT_TRUE(store.Get("a").ok());  // a becomes most recent; b is now the LRU
  ASSERT_TRUE(store.Put("d", RecordBytesOfSize(kRecord, 4)).ok());  // one past the bound
  EXPECT_EQ(store.Get("b").status().code(), absl::StatusCode::kNotFound);
  for (const char* id : {"a", "c", "d"}) EXPECT_TRUE(store.Get(id).ok()) << id;
  EXPECT_EQ(store.Stats().evictions, 1);
  EXPECT_EQ(store.Stats().bytes, static_cast<int64_t>(3 * kRecord));
  // A bigger record evicts as many as needed, least recent first (d, then c; a was read last).
  ASSERT_TRUE(store.Get("c").ok());
  ASSERT_TRUE(store.Get("a").ok());
  ASSERT_TRUE(store.Put("e", RecordBytesOfSize(2 * kRecord, 5)).ok());
  EXPECT_FALSE(*store.Contains("d"));
  EXPECT_FALSE(*store.Contains("c"));
  EXPECT_TRUE(*store.Contains("a"));
  EXPECT_TRUE(*store.Contains("e"));
  EXPECT_LE(store.Stats().bytes, static_cast<int64_t>(3 * kRecord));
}

TEST(SlotStoreMemory, RecordAtAndPastMaxBytes) {
  MemorySlotStore store(Bounded(2 * kRecord));
  ASSERT_TRUE(store.Put("small", RecordBytesOfSize(kRecord)).ok());
  auto too_big = store.Put("big", RecordBytesOfSize(2 * kRecord + 2));
  EXPECT_EQ(too_big.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(too_big.message(), HasSubstr("max_bytes"));
  EXPECT_TRUE(*store.Contains("small")) << "a refused record must not evict anything";
  ASSERT_TRUE(store.Put("exact", RecordBytesOfSize(2 * kRecord)).ok());
  EXPECT_TRUE(*store.Contains("exact"));
  EXPECT_FALSE(*store.Contains("small"));
}

TEST(SlotStoreMemory, RecordAtAndPastMaxRecordBytes) {
  MemoryStoreOptions o = Bounded(1 << 20);
  o.max_record_bytes = kRecord;
  MemorySlotStore store(o);
  EXPECT_TRUE(store.Put("at", RecordBytesOfSize(kRecord)).ok());
  auto past = store.Put("past", RecordBytesOfSize(kRecord + 2));
  EXPECT_EQ(past.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(past.message(), HasSubstr("max_record_bytes"));
}

TEST(SlotStoreMemory, RejectsBadInput) {
  MemorySlotStore store(Bounded(1 << 20));
  EXPECT_EQ(store.Put("../x", RecordBytesOfSize(kRecord)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Put("x", "not a record").code(), absl::StatusCode::kInvalidArgument);
  std::string corrupt = RecordBytesOfSize(kRecord);
  corrupt[500] ^= 1;
  EXPECT_EQ(store.Put("x", corrupt).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Put("x", RecordBytesOfSize(kRecord), absl::Seconds(-1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Get("a/b").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Stats().entries, 0);
}

TEST(SlotStoreMemory, TtlExpiry) {
  // Presence is only asserted while the TTL has surely not passed, so a stalled CI machine
  // cannot make this flaky; absence after sleeping past the TTL always holds.
  MemoryStoreOptions o = Bounded(1 << 20);
  o.default_ttl = absl::Milliseconds(400);
  MemorySlotStore store(o);
  const absl::Time put_at = absl::Now();
  ASSERT_TRUE(store.Put("default", RecordBytesOfSize(kRecord)).ok());
  ASSERT_TRUE(store.Put("short", RecordBytesOfSize(kRecord), absl::Milliseconds(150)).ok());
  ASSERT_TRUE(store.Put("forever", RecordBytesOfSize(kRecord), absl::InfiniteDuration()).ok());
  const bool early = store.Get("short").ok();
  if (absl::Now() - put_at < absl::Milliseconds(140)) {
    EXPECT_TRUE(early);
  }
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(store.Get("short").status().code(), absl::StatusCode::kNotFound);
  const bool mid = store.Get("default").ok();
  if (absl::Now() - put_at < absl::Milliseconds(390)) {
    EXPECT_TRUE(mid);
  }
  absl::SleepFor(absl::Milliseconds(250));
  EXPECT_FALSE(*store.Contains("default"));
  EXPECT_EQ(store.Get("default").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store.Get("forever").ok());
  EXPECT_EQ(store.Stats().expirations, 2);
  EXPECT_EQ(store.Stats().entries, 1);
}

TEST(SlotStoreMemory, HeldRecordOutlivesEviction) {
  MemorySlotStore store(Bounded(kRecord));
  const std::string bytes = RecordBytesOfSize(kRecord, 3);
  ASSERT_TRUE(store.Put("a", bytes).ok());
  auto held = store.Get("a");
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(store.Put("b", RecordBytesOfSize(kRecord, 4)).ok());  // evicts a
  EXPECT_FALSE(*store.Contains("a"));
  EXPECT_EQ(**held, bytes);  // the reader's copy is intact
}

TEST(SlotStoreMemory, ReplacingAnIdKeepsAccountingRight) {
  MemorySlotStore store(Bounded(1 << 20));
  ASSERT_TRUE(store.Put("a", RecordBytesOfSize(kRecord)).ok());
  ASSERT_TRUE(store.Put("a", RecordBytesOfSize(2 * kRecord)).ok());
  EXPECT_EQ(store.Stats().entries, 1);
  EXPECT_EQ(store.Stats().bytes, static_cast<int64_t>(2 * kRecord));
}

TEST(SlotStoreMemory, OpenedFromUri) {
  auto store = OpenSlotStore("memory://?max_bytes=2000&ttl=0");
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Put("a", RecordBytesOfSize(kRecord)).ok());
  ASSERT_TRUE((*store)->Put("b", RecordBytesOfSize(kRecord)).ok());
  ASSERT_TRUE((*store)->Put("c", RecordBytesOfSize(kRecord)).ok());
  EXPECT_EQ((*store)->Stats().evictions, 1);
  EXPECT_EQ((*store)->Describe(), "memory://?max_bytes=2000");
}

// --- tiered ---------------------------------------------------------------------------------

TEST(SlotStoreTiered, BackendHitIsKeptLocally) {
  auto backend = std::make_unique<MemorySlotStore>(Bounded(1 << 20));
  MemorySlotStore* back = backend.get();
  TieredSlotStore store(Bounded(10 * kRecord), std::move(backend));
  ASSERT_TRUE(back->Put("a", RecordBytesOfSize(kRecord)).ok());  // written by another process
  ASSERT_TRUE(store.Get("a").ok());
  EXPECT_EQ(back->Stats().hits, 1);
  ASSERT_TRUE(store.Get("a").ok());
  ASSERT_TRUE(store.Get("a").ok());
  EXPECT_EQ(back->Stats().hits, 1) << "later reads must be served locally";
  EXPECT_EQ(store.local().Stats().hits, 2);
  EXPECT_EQ(store.Stats().hits, 3);
  EXPECT_EQ(store.Get("zz").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store.Stats().misses, 1);
}

TEST(SlotStoreTiered, PutWritesThroughAndDeleteRemovesBoth) {
  auto backend = std::make_unique<MemorySlotStore>(Bounded(1 << 20));
  MemorySlotStore* back = backend.get();
  TieredSlotStore store(Bounded(10 * kRecord), std::move(backend));
  ASSERT_TRUE(store.Put("a", RecordBytesOfSize(kRecord)).ok());
  EXPECT_TRUE(*back->Contains("a"));
  EXPECT_TRUE(*store.local().Contains("a"));
  ASSERT_TRUE(store.Delete("a").ok());
  EXPECT_FALSE(*back->Contains("a"));
  EXPECT_FALSE(*store.local().Contains("a"));
  EXPECT_FALSE(*store.Contains("a"));
}

TEST(SlotStoreTiered, RecordTooBigForLocalTierStillStored) {
  auto backend = std::make_unique<MemorySlotStore>(Bounded(1 << 20));
  TieredSlotStore store(Bounded(kRecord), std::move(backend));
  ASSERT_TRUE(store.Put("big", RecordBytesOfSize(4 * kRecord)).ok());
  EXPECT_FALSE(*store.local().Contains("big"));
  EXPECT_TRUE(store.Get("big").ok());
}

TEST(SlotStoreTiered, LocalTierBoundedAndEvicts) {
  auto backend = std::make_unique<MemorySlotStore>(Bounded(1 << 20));
  TieredSlotStore store(Bounded(2 * kRecord), std::move(backend));
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(store.Put(id, RecordBytesOfSize(kRecord)).ok());
  EXPECT_EQ(store.local().Stats().entries, 2);
  EXPECT_EQ(store.Stats().evictions, 1);
  EXPECT_TRUE(store.Get("a").ok()) << "evicted locally, still in the backend";
}

TEST(SlotStoreTiered, LocalCopyHonoursPutTtl) {
  auto backend = std::make_unique<MemorySlotStore>(Bounded(1 << 20));
  TieredSlotStore store(Bounded(10 * kRecord), std::move(backend));
  const absl::Time put_at = absl::Now();
  ASSERT_TRUE(store.Put("a", RecordBytesOfSize(kRecord), absl::Milliseconds(150)).ok());
  const bool early = *store.local().Contains("a");
  if (absl::Now() - put_at < absl::Milliseconds(140)) {
    EXPECT_TRUE(early);
  }
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(*store.local().Contains("a"));
  EXPECT_EQ(store.Get("a").status().code(), absl::StatusCode::kNotFound);
}

TEST(SlotStoreTiered, OverFileStoreFromUri) {
  const std::string dir = icae::testing::MakeTempDir("icae-tiered");
  auto store = OpenSlotStore("tiered://?local_max_bytes=4K&backend=" +
                             UrlEncode("file://" + dir + "?max_bytes=1M"));
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Put("a", RecordBytesOfSize(kRecord)).ok());
  EXPECT_TRUE(icae::testing::PathExists(dir + "/a.slot"));
  EXPECT_TRUE((*store)->Get("a").ok());
  std::string out;
  icae::testing::RunCommand("rm -rf '" + dir + "'", &out);
}

}  // namespace
}  // namespace icae::slot_store
