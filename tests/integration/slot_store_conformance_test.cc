// The SlotStore contract, run against every backend: memory, file, redis (a private
// redis-server on a free loopback port), redis-cluster (a private 3-master + 3-replica cluster
// on loopback), and tiered over file and over redis.
#include <atomic>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/slot_store/local_redis_cluster.h"
#include "common/slot_store/local_redis_server.h"
#include "common/slot_store/slot_store.h"
#include "common/slot_store/store_uri.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tests/unit/slot_store_testing.h"

namespace icae::slot_store {
namespace {

using ::icae::slot_store::testing::RecordBytesOfSize;

enum class Needs { kNothing, kRedis, kRedisCluster };

struct Servers {
  std::string dir;
  std::unique_ptr<LocalRedisServer> redis;
  std::unique_ptr<LocalRedisCluster> cluster;
};

struct Backend {
  std::string name;
  Needs needs;
  // URI for a store bounded to about `max_bytes` where the backend has such a bound.
  std::function<std::string(const Servers& servers, uint64_t max_bytes)> uri;
};

// gtest prints parameters in test names and failures; the name is enough.
void PrintTo(const Backend& backend, std::ostream* os) { *os << backend.name; }

std::vector<Backend> Backends() {
  return {
      {"memory", Needs::kNothing,
       [](const Servers&, uint64_t max) { return absl::StrCat("memory://?max_bytes=", max); }},
      {"file", Needs::kNothing,
       [](const Servers& s, uint64_t max) {
         return absl::StrCat("file://", s.dir, "?max_bytes=", max);
       }},
      {"redis", Needs::kRedis,
       [](const Servers& s, uint64_t) { return s.redis->Uri("timeout_ms=2000&pool=8"); }},
      {"redis_cluster", Needs::kRedisCluster,
       [](const Servers& s, uint64_t) {
         return s.cluster->Uri("timeout_ms=2000&pool=8&wait_replicas=1");
       }},
      {"tiered_file", Needs::kNothing,
       [](const Servers& s, uint64_t max) {
         return absl::StrCat("tiered://?local_max_bytes=", max / 4, "&backend=",
                             UrlEncode(absl::StrCat("file://", s.dir, "?max_bytes=", max)));
       }},
      {"tiered_redis", Needs::kRedis,
       [](const Servers& s, uint64_t max) {
         return absl::StrCat("tiered://?local_max_bytes=", max / 4, "&backend=",
                             UrlEncode(s.redis->Uri("timeout_ms=2000&pool=8")));
       }},
  };
}

class SlotStoreConformance : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    servers_.dir = icae::testing::MakeTempDir("icae-conformance");
    if (GetParam().needs == Needs::kRedis) {
      ICAE_START_REDIS_OR_SKIP(servers_.redis, LocalRedisOptions{});
    }
    if (GetParam().needs == Needs::kRedisCluster) {
      LocalRedisClusterOptions options;
      options.node_timeout = absl::Milliseconds(500);
      ICAE_START_REDIS_CLUSTER_OR_SKIP(servers_.cluster, options);
    }
  }
  void TearDown() override {
    std::string out;
    icae::testing::RunCommand("rm -rf '" + servers_.dir + "'", &out);
  }
  std::unique_ptr<SlotStore> Open(uint64_t max_bytes = 64 << 20) {
    auto store = OpenSlotStore(GetParam().uri(servers_, max_bytes));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  Servers servers_;
};

TEST_P(SlotStoreConformance, Contract) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const std::string bytes = RecordBytesOfSize(5000, 42);
  EXPECT_EQ(store->Get("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(*store->Contains("missing"));
  ASSERT_TRUE(store->Put("one", bytes).ok());
  ASSERT_TRUE(store->Put("one", bytes).ok());  // same content again: fine
  EXPECT_TRUE(*store->Contains("one"));
  auto got = store->Get("one");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(**got, bytes);
  auto record = store->GetRecord("one");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->header.hidden_size, (5000 - kSlotRecordOverheadBytes) / 2);
  ASSERT_TRUE(store->Delete("one").ok());
  ASSERT_TRUE(store->Delete("one").ok());
  EXPECT_EQ(store->Get("one").status().code(), absl::StatusCode::kNotFound);
  const SlotStoreStats s = store->Stats();
  EXPECT_GE(s.hits, 1);
  EXPECT_GE(s.misses, 2);
  EXPECT_FALSE(store->Describe().empty());
}

TEST_P(SlotStoreConformance, InvalidInput) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  for (const char* id : {"", "a/b", "..", "x y"}) {
    EXPECT_EQ(store->Put(id, RecordBytesOfSize(1000)).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Get(id).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Contains(id).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Delete(id).code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(store->Put("ok", "garbage").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Put("ok", RecordBytesOfSize(1000), -absl::Seconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(*store->Contains("ok"));
}

// The one record validation runs in every tier: a record holding NaN (checksum correct) is
// refused on Put, so no tier, the local LRU of tiered:// included, ever holds or serves it.
TEST_P(SlotStoreConformance, NonFiniteRecordIsRefused) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  SlotRecord r = ::icae::slot_store::testing::MakeRecord(1000);
  r.payload[11] = static_cast<char>(0x7f);  // element 5 of bf16: exponent all ones, a NaN
  r.payload[10] = static_cast<char>(0xc0);
  auto bytes = EncodeSlotRecord(r);
  ASSERT_TRUE(bytes.ok());
  absl::Status put = store->Put("nan", *bytes);
  EXPECT_EQ(put.code(), absl::StatusCode::kInvalidArgument) << put;
  EXPECT_NE(put.message().find("non-finite"), absl::string_view::npos) << put;
  EXPECT_EQ(store->Get("nan").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(*store->Contains("nan"));
}

TEST_P(SlotStoreConformance, TtlExpiry) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const absl::Time put_at = absl::Now();
  ASSERT_TRUE(store->Put("ttl", RecordBytesOfSize(1000), absl::Milliseconds(150)).ok());
  ASSERT_TRUE(store->Put("keep", RecordBytesOfSize(1000)).ok());
  const bool early = store->Get("ttl").ok();
  // Only asserted while the TTL has surely not passed (a stalled CI box must not flake).
  if (absl::Now() - put_at < absl::Milliseconds(140)) {
    EXPECT_TRUE(early);
  }
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(store->Get("ttl").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Get("keep").ok());
}

TEST_P(SlotStoreConformance, EightThreadsThousandMixedOpsEach) {
  // 64 IDs whose content never changes (content addresses); the store is small enough to
  // evict all the time where it has a bound. Every answer must be OK or NOT_FOUND, and every
  // record read must be the whole, right record.
  constexpr int kIds = 64, kThreads = 8, kOps = 1000;
  std::vector<std::string> content(kIds);
  for (int i = 0; i < kIds; ++i) content[i] = RecordBytesOfSize(600 + 40 * (i % 16), i);
  auto store = Open(16 * 1000);
  ASSERT_NE(store, nullptr);
  std::atomic<int> errors{0}, hits{0};
  std::mutex first_error_mu;
  std::string first_error;
  auto fail = [&](const std::string& what) {
    if (errors.fetch_add(1) == 0) {
      std::lock_guard<std::mutex> lock(first_error_mu);
      first_error = what;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1234 + t);
      for (int op = 0; op < kOps; ++op) {
        const int i = static_cast<int>(rng() % kIds);
        const std::string id = absl::StrCat("id", i);
        switch (rng() % 10) {
          case 0: case 1: case 2: case 3: {
            absl::Status s = store->Put(id, content[i]);
            if (!s.ok()) fail(absl::StrCat("Put ", id, ": ", s.ToString()));
            break;
          }
          case 4: case 5: case 6: case 7: {
            auto got = store->Get(id);
            if (got.ok()) {
              if (**got != content[i]) fail(absl::StrCat("Get ", id, ": wrong bytes"));
              hits.fetch_add(1);
            } else if (!absl::IsNotFound(got.status())) {
              fail(absl::StrCat("Get ", id, ": ", got.status().ToString()));
            }
            break;
          }
          case 8: {
            auto has = store->Contains(id);
            if (!has.ok()) fail(absl::StrCat("Contains ", id, ": ", has.status().ToString()));
            break;
          }
          default: {
            absl::Status s = store->Delete(id);
            if (!s.ok()) fail(absl::StrCat("Delete ", id, ": ", s.ToString()));
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0) << "first error: " << first_error;
  EXPECT_GT(hits.load(), 0);
  const SlotStoreStats s = store->Stats();
  EXPECT_EQ(s.hits, hits.load());
  EXPECT_EQ(s.corrupt, 0);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, SlotStoreConformance, ::testing::ValuesIn(Backends()),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace icae::slot_store
