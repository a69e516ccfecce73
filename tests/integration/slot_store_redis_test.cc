// redis:// store against a real redis-server the test starts on a free loopback port.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/slot_store/local_redis_server.h"
#include "common/slot_store/memory_store.h"
#include "common/slot_store/redis_store.h"
#include "common/slot_store/slot_store.h"
#include "common/slot_store/tiered_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/slot_store_testing.h"

namespace icae::slot_store {
namespace {

using ::icae::slot_store::testing::RecordBytesOfSize;
using ::testing::HasSubstr;

class SlotStoreRedis : public ::testing::Test {
 protected:
  // Each test starts its own server (ICAE_START_REDIS_OR_SKIP in the test body, so a skip or
  // failure ends the test there): kill/restart tests must not disturb the others.
  std::unique_ptr<SlotStore> Open(std::string_view params = "timeout_ms=500") {
    auto store = OpenSlotStore(redis_->Uri(params));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  std::unique_ptr<LocalRedisServer> redis_;
};

TEST_F(SlotStoreRedis, RoundTripOfLargeValues) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  auto store = Open();
  for (size_t size : {size_t{64} << 10, size_t{1} << 20, size_t{8} << 20}) {
    const std::string id = absl::StrCat("r", size);
    const std::string bytes = RecordBytesOfSize(size, static_cast<int>(size % 97));
    ASSERT_TRUE(store->Put(id, bytes).ok()) << size;
    EXPECT_TRUE(*store->Contains(id));
    auto got = store->Get(id);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(**got, bytes);
  }
  EXPECT_EQ(*redis_->Call({"STRLEN", "icae:slot:r1048576"}), std::to_string(1 << 20));
  EXPECT_EQ(store->Get("absent").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store->Delete("r65536").ok());
  EXPECT_FALSE(*store->Contains("r65536"));
  SlotStoreStats s = store->Stats();
  EXPECT_EQ(s.hits, 3);
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.entries, -1);
}

TEST_F(SlotStoreRedis, TtlExpiry) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  auto store = Open("ttl=0.15");
  const absl::Time put_at = absl::Now();
  ASSERT_TRUE(store->Put("default", RecordBytesOfSize(1000)).ok());
  ASSERT_TRUE(store->Put("forever", RecordBytesOfSize(1000), absl::InfiniteDuration()).ok());
  ASSERT_TRUE(store->Put("explicit", RecordBytesOfSize(1000), absl::Seconds(30)).ok());
  const int64_t pttl = std::stoll(*redis_->Call({"PTTL", "icae:slot:default"}));
  if (absl::Now() - put_at < absl::Milliseconds(140)) {
    EXPECT_GT(pttl, 0);
  }
  EXPECT_LE(pttl, 150);
  EXPECT_EQ(*redis_->Call({"PTTL", "icae:slot:forever"}), "-1");
  absl::SleepFor(absl::Milliseconds(250));
  EXPECT_EQ(store->Get("default").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Get("forever").ok());
  EXPECT_TRUE(store->Get("explicit").ok());
}

TEST_F(SlotStoreRedis, CorruptValueIsDataLossAndRemoved) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  auto store = Open();
  std::string bytes = RecordBytesOfSize(4000);
  bytes[2000] ^= 4;
  ASSERT_TRUE(redis_->Call({"SET", "icae:slot:bad", bytes}).ok());
  auto got = store->Get("bad");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(got.status().message(), HasSubstr("checksum"));
  EXPECT_EQ(*redis_->Call({"EXISTS", "icae:slot:bad"}), "0");
  EXPECT_EQ(store->Get("bad").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(redis_->Call({"SET", "icae:slot:short", bytes.substr(0, 100)}).ok());
  EXPECT_EQ(store->Get("short").status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(SlotStoreRedis, AllKeysLruEvictionIsAMissNotAnError) {
  LocalRedisOptions options;
  options.maxmemory = "8mb";
  ICAE_START_REDIS_OR_SKIP(redis_, options);
  auto store = Open();
  const std::string bytes = RecordBytesOfSize(1 << 20);
  for (int i = 0; i < 24; ++i) ASSERT_TRUE(store->Put(absl::StrCat("k", i), bytes).ok()) << i;
  int found = 0, missing = 0;
  for (int i = 0; i < 24; ++i) {
    auto got = store->Get(absl::StrCat("k", i));
    if (got.ok()) {
      ++found;
    } else {
      ASSERT_EQ(got.status().code(), absl::StatusCode::kNotFound) << got.status();
      ++missing;
    }
  }
  EXPECT_GT(missing, 0);
  EXPECT_GT(found, 0);
  EXPECT_TRUE(store->Get("k23").ok()) << "the newest record survives";
}

TEST_F(SlotStoreRedis, RecordPastMaxRecordBytes) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  auto store = Open("max_record_bytes=4000");
  EXPECT_TRUE(store->Put("at", RecordBytesOfSize(4000)).ok());
  EXPECT_EQ(store->Put("past", RecordBytesOfSize(4002)).code(),
            absl::StatusCode::kResourceExhausted);
  // A value planted by a writer with a larger bound is refused on read, not allocated.
  ASSERT_TRUE(redis_->Call({"SET", "icae:slot:big", RecordBytesOfSize(8000)}).ok());
  EXPECT_EQ(store->Get("big").status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(SlotStoreRedis, KilledIsUnavailableWithinTimeoutThenRecoversByItself) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  auto store = Open("timeout_ms=300&backoff_ms=50&pool=4");
  ASSERT_TRUE(store->Put("before", RecordBytesOfSize(1000)).ok());
  ASSERT_TRUE(store->Get("before").ok());
  redis_->Kill();
  for (int i = 0; i < 3; ++i) {
    const absl::Time start = absl::Now();
    auto got = store->Get("before");
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << got.status();
    EXPECT_LT(took, absl::Milliseconds(300 + 400)) << "attempt " << i;
    EXPECT_EQ(store->Put("during", RecordBytesOfSize(1000)).code(),
              absl::StatusCode::kUnavailable);
    EXPECT_EQ(store->Contains("before").status().code(), absl::StatusCode::kUnavailable);
  }
  ASSERT_TRUE(redis_->Restart().ok());
  // No reconnect call: the store finds the server again on its own (after its short backoff).
  absl::Status last;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  do {
    last = store->Put("after", RecordBytesOfSize(1000));
    if (last.ok()) break;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < deadline);
  ASSERT_TRUE(last.ok()) << last;
  EXPECT_TRUE(store->Get("after").ok());
  // The restarted server has no persistence: the old record is a miss, as after an eviction.
  EXPECT_EQ(store->Get("before").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SlotStoreRedis, RestartBetweenCallsCostsNoError) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  auto store = Open("timeout_ms=500&pool=2");
  ASSERT_TRUE(store->Put("a", RecordBytesOfSize(1000)).ok());  // leaves a pooled connection
  ASSERT_TRUE(redis_->Restart().ok());
  // The pooled connection is dead; the store retries once on a fresh one.
  EXPECT_EQ(store->Get("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Put("b", RecordBytesOfSize(1000)).ok());
}

TEST_F(SlotStoreRedis, HungServerTimesOut) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  auto store = Open("timeout_ms=200");
  ASSERT_TRUE(store->Put("a", RecordBytesOfSize(1000)).ok());
  redis_->Pause();
  const absl::Time start = absl::Now();
  auto got = store->Get("a");
  const absl::Duration took = absl::Now() - start;
  redis_->Resume();
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr("did not answer"));
  // Clients see the store named, not the server's internal address.
  EXPECT_THAT(got.status().message(), ::testing::Not(HasSubstr(absl::StrCat(redis_->port()))));
  EXPECT_GE(took, absl::Milliseconds(150));
  EXPECT_LT(took, absl::Milliseconds(200 + 400));
  auto again = store->Get("a");
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST_F(SlotStoreRedis, NothingListeningFailsFast) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  const int port = redis_->port();
  redis_->Kill();  // a port that just had a server: nothing listens now
  auto store = OpenSlotStore(absl::StrCat("redis://127.0.0.1:", port, "/0?timeout_ms=1000"));
  ASSERT_TRUE(store.ok()) << "opening must not need the server";
  const absl::Time start = absl::Now();
  auto got = (*store)->Get("x");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(got.status().message(), HasSubstr("connect"));
  EXPECT_THAT(got.status().message(), ::testing::Not(HasSubstr(absl::StrCat(port))));
  auto again = (*store)->Get("x");  // inside the backoff: no new connect attempt
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(again.status().message(), HasSubstr("retrying in"));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
}

TEST_F(SlotStoreRedis, DatabasesAndPrefixesAreSeparate) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  auto db0 = Open("timeout_ms=500");
  auto db1 = OpenSlotStore(absl::StrCat("redis://127.0.0.1:", redis_->port(), "/1"));
  auto other_prefix = Open("prefix=tenant2:");
  ASSERT_TRUE(db1.ok());
  ASSERT_TRUE(db0->Put("a", RecordBytesOfSize(1000)).ok());
  EXPECT_FALSE(*(*db1)->Contains("a"));
  EXPECT_FALSE(*other_prefix->Contains("a"));
  EXPECT_EQ(*redis_->Call({"DBSIZE"}), "1");
}

TEST_F(SlotStoreRedis, Password) {
  LocalRedisOptions options;
  options.extra_args = {"--requirepass", "s3cret"};
  ICAE_START_REDIS_OR_SKIP(redis_, options);
  const std::string base = absl::StrCat("127.0.0.1:", redis_->port(), "/0");
  auto good = OpenSlotStore("redis://:s3cret@" + base);
  ASSERT_TRUE(good.ok());
  EXPECT_TRUE((*good)->Put("a", RecordBytesOfSize(1000)).ok());
  auto none = OpenSlotStore("redis://" + base);
  EXPECT_EQ((*none)->Get("a").status().code(), absl::StatusCode::kFailedPrecondition);
  auto wrong = OpenSlotStore("redis://:nope@" + base);
  auto s = (*wrong)->Get("a").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("nope")));
}

TEST_F(SlotStoreRedis, PoolOfOneServesManyThreads) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  auto store = Open("timeout_ms=2000&pool=1");
  const std::string bytes = RecordBytesOfSize(64 << 10);
  ASSERT_TRUE(store->Put("shared", bytes).ok());
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        auto got = store->Get("shared");
        if (!got.ok() || **got != bytes) bad.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  // One pooled connection plus the one Call() itself opens.
  const std::string clients = *redis_->Call({"INFO", "clients"});
  EXPECT_NE(clients.find("connected_clients:2"), std::string::npos) << clients;
}

TEST_F(SlotStoreRedis, TieredServesLocalCopiesWhileRedisIsDown) {
  ICAE_START_REDIS_OR_SKIP(redis_, LocalRedisOptions{});
  auto backend = Open("timeout_ms=300");
  MemoryStoreOptions local;
  local.max_bytes = 1 << 20;
  TieredSlotStore store(local, std::move(backend));
  ASSERT_TRUE(store.Put("hot", RecordBytesOfSize(1000)).ok());
  redis_->Kill();
  EXPECT_TRUE(store.Get("hot").ok());
  EXPECT_EQ(store.Get("cold").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(store.Put("new", RecordBytesOfSize(1000)).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(*store.local().Contains("new")) << "a failed write-through is not kept locally";
}

}  // namespace
}  // namespace icae::slot_store
