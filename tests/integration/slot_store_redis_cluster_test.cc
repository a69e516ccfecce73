// redis-cluster:// against a real Redis Cluster the test forms on loopback (3 masters + 3
// replicas, redis-cli --cluster create), with a short node timeout so failovers take seconds.
#include <atomic>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/slot_store/local_redis_cluster.h"
#include "common/slot_store/redis_cluster_store.h"
#include "common/slot_store/redis_hash_slot.h"
#include "common/slot_store/slot_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/slot_store_testing.h"

namespace icae::slot_store {
namespace {

using ::icae::slot_store::testing::RecordBytesOfSize;
using ::testing::HasSubstr;

constexpr absl::Duration kNodeTimeout = absl::Milliseconds(500);

class SlotStoreRedisCluster : public ::testing::Test {
 protected:
  void StartCluster() {
    LocalRedisClusterOptions options;
    options.node_timeout = kNodeTimeout;
    ICAE_START_REDIS_CLUSTER_OR_SKIP(cluster_, options);
  }
  std::unique_ptr<RedisClusterSlotStore> Open(std::string_view params) {
    auto uri = ParseStoreUri(cluster_->Uri(params));
    EXPECT_TRUE(uri.ok()) << uri.status();
    auto store = RedisClusterSlotStore::FromUri(*uri);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  std::string Id(int slot) const { return *cluster_->NodeId(slot); }
  // Moves hash slot `slot` from master `from` to master `to` the way redis-cli does, one step
  // at a time, so a test can act between the steps.
  void BeginMigration(int slot, int from, int to) {
    const std::string s = std::to_string(slot);
    ASSERT_TRUE(cluster_->node(to).Call({"CLUSTER", "SETSLOT", s, "IMPORTING", Id(from)}).ok());
    ASSERT_TRUE(cluster_->node(from).Call({"CLUSTER", "SETSLOT", s, "MIGRATING", Id(to)}).ok());
  }
  void MigrateKey(int from, int to, const std::string& key) {
    auto r = cluster_->node(from).Call({"MIGRATE", "127.0.0.1",
                                        std::to_string(cluster_->node(to).port()), key, "0",
                                        "5000"});
    ASSERT_TRUE(r.ok()) << r.status();
  }
  void FinishMigration(int slot, int to) {
    const std::string s = std::to_string(slot);
    for (int i = 0; i < cluster_->size(); ++i) {
      // Replicas refuse SETSLOT; masters all learn the new owner at once.
      if (cluster_->node(i).pid() <= 0) continue;
      (void)cluster_->node(i).Call({"CLUSTER", "SETSLOT", s, "NODE", Id(to)});
    }
  }
  std::unique_ptr<LocalRedisCluster> cluster_;
};

TEST_F(SlotStoreRedisCluster, RecordsLiveOnTheMasterOfTheirHashSlot) {
  StartCluster();
  auto store = Open("timeout_ms=2000");
  ASSERT_NE(store, nullptr);
  std::map<int, int> per_master;
  for (int i = 0; i < 60; ++i) {
    const std::string id = absl::StrCat("ctx", i);
    const std::string key = "icae:slot:" + id;
    ASSERT_TRUE(store->Put(id, RecordBytesOfSize(1000, i)).ok()) << id;
    // Our CRC16 routing agrees with Redis's own.
    const int slot = RedisHashSlot(key);
    EXPECT_EQ(*cluster_->node(0).Call({"CLUSTER", "KEYSLOT", key}), std::to_string(slot));
    auto master = cluster_->MasterOf(slot);
    ASSERT_TRUE(master.ok()) << master.status();
    EXPECT_EQ(*cluster_->node(*master).Call({"EXISTS", key}), "1") << key;
    ++per_master[*master];
    auto got = store->Get(id);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(**got, RecordBytesOfSize(1000, i));
  }
  EXPECT_EQ(per_master.size(), 3u) << "60 keys spread over all three masters";
  const auto c = store->counters();
  EXPECT_EQ(c.nodes, 6) << "a pool per seed (the masters are among them), no more";
  EXPECT_EQ(c.moved, 0);
  EXPECT_GE(c.map_refreshes, 1);
  // A hash tag in the prefix keeps every record of the store on one slot.
  auto tagged = Open("prefix=%7Btenant7%7D:");
  ASSERT_TRUE(tagged->Put("a", RecordBytesOfSize(1000)).ok());
  ASSERT_TRUE(tagged->Put("b", RecordBytesOfSize(1000)).ok());
  EXPECT_EQ(*cluster_->node(0).Call({"CLUSTER", "KEYSLOT", "{tenant7}:a"}),
            std::to_string(RedisHashSlot("tenant7")));
  EXPECT_TRUE(tagged->Get("b").ok());
}

// MOVED updates the route, ASK is followed once with ASKING, and max_redirects bounds both:
// at the bound the operation succeeds, past it the caller gets UNAVAILABLE.
TEST_F(SlotStoreRedisCluster, MovedAndAskAreFollowedUpToMaxRedirects) {
  StartCluster();
  // Every record of these stores shares one hash slot (a hash tag in the prefix).
  const std::string prefix = "{mig}:";
  const int slot = RedisHashSlot("mig");
  auto one = Open("prefix=%7Bmig%7D:&max_redirects=1&timeout_ms=2000");
  auto none = Open("prefix=%7Bmig%7D:&max_redirects=0&timeout_ms=2000");
  ASSERT_TRUE(one && none);
  ASSERT_TRUE(one->Put("moved", RecordBytesOfSize(1000, 1)).ok());
  ASSERT_TRUE(one->Put("stays", RecordBytesOfSize(1000, 2)).ok());
  ASSERT_TRUE(none->Contains("moved").ok());  // both stores know the map now
  const int from = *cluster_->MasterOf(slot);
  const int to = *cluster_->MasterOf((slot + kRedisClusterSlots / 2) % kRedisClusterSlots) == from
                     ? *cluster_->MasterOf((slot + kRedisClusterSlots / 4) % kRedisClusterSlots)
                     : *cluster_->MasterOf((slot + kRedisClusterSlots / 2) % kRedisClusterSlots);
  ASSERT_NE(from, to);

  // Half-way through a migration: "moved" is on the target, "stays" still on the source.
  BeginMigration(slot, from, to);
  MigrateKey(from, to, prefix + "moved");
  auto got = one->Get("moved");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(**got, RecordBytesOfSize(1000, 1));
  EXPECT_EQ(one->counters().ask, 1);
  EXPECT_TRUE(one->Get("stays").ok());
  EXPECT_EQ(one->counters().ask, 1) << "a key still on the source needs no redirect";
  // A new key in a migrating slot is written on the target (ASK, then ASKING SET).
  ASSERT_TRUE(one->Put("new", RecordBytesOfSize(1000, 3)).ok());
  EXPECT_EQ(one->counters().ask, 2);
  auto past = none->Get("moved");
  EXPECT_EQ(past.status().code(), absl::StatusCode::kUnavailable) << past.status();
  EXPECT_THAT(past.status().message(), HasSubstr("max_redirects=0"));

  // Finished: the slot belongs to the target; a store with the old map gets MOVED once.
  MigrateKey(from, to, prefix + "stays");
  FinishMigration(slot, to);
  const int64_t moved_before = one->counters().moved;
  EXPECT_TRUE(one->Get("stays").ok());
  EXPECT_EQ(one->counters().moved, moved_before + 1);
  EXPECT_TRUE(one->Get("new").ok());
  EXPECT_TRUE(one->Get("moved").ok());
  EXPECT_EQ(one->counters().moved, moved_before + 1) << "the route was updated by the MOVED";
  auto stale = none->Get("stays");
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kUnavailable) << stale.status();
  EXPECT_THAT(stale.status().message(), HasSubstr("MOVED"));
  // Its next operation reads the new map (refresh after the MOVED) and needs no redirect.
  absl::SleepFor(absl::Milliseconds(250));  // past backoff_ms (200): the refresh is allowed
  auto fresh = none->Get("stays");
  EXPECT_TRUE(fresh.ok()) << fresh.status();
}

TEST_F(SlotStoreRedisCluster, WaitReplicasAtAndPastTheReplicaCount) {
  StartCluster();
  auto at = Open("wait_replicas=1&timeout_ms=1000");
  // WAIT gets the timeout less a margin of at most 100 ms for its answer to come back; at 300
  // ms that margin was 75 ms, which a loaded machine once exceeded (a socket timeout instead
  // of WAIT's count).
  auto past = Open("wait_replicas=2&timeout_ms=800");
  ASSERT_TRUE(at && past);
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(at->Put(absl::StrCat("w", i), RecordBytesOfSize(1000)).ok()) << i;
  }
  EXPECT_TRUE(at->Delete("w0").ok());
  const absl::Time start = absl::Now();
  absl::Status s = past->Put("w1", RecordBytesOfSize(1000));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("1 of wait_replicas=2"));
  EXPECT_LT(took, absl::Milliseconds(800 + 400));
  EXPECT_TRUE(past->Get("w1").ok()) << "reads do not wait";
}

TEST_F(SlotStoreRedisCluster, PoolOfOnePerNodeServesManyThreads) {
  StartCluster();
  auto store = Open("timeout_ms=3000&pool=1");
  ASSERT_NE(store, nullptr);
  std::vector<std::string> bytes;
  for (int i = 0; i < 30; ++i) {
    bytes.push_back(RecordBytesOfSize(2000, i));
    ASSERT_TRUE(store->Put(absl::StrCat("p", i), bytes.back()).ok());
  }
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 60; ++i) {
        const int k = (i * 7 + t) % 30;
        auto got = store->Get(absl::StrCat("p", k));
        if (!got.ok() || **got != bytes[k]) bad.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  for (int i = 0; i < cluster_->size(); ++i) {
    const std::string role = *cluster_->node(i).Call({"ROLE"});
    if (role.rfind("master", 0) != 0) continue;
    // One pooled connection plus the one Call() itself opens (replicas are not counted).
    const std::string clients = *cluster_->node(i).Call({"INFO", "clients"});
    EXPECT_NE(clients.find("connected_clients:2"), std::string::npos) << i << clients;
  }
}

TEST_F(SlotStoreRedisCluster, NotAClusterOrNothingListeningIsAClearError) {
  std::unique_ptr<LocalRedisServer> plain;
  ICAE_START_REDIS_OR_SKIP(plain, LocalRedisOptions{});
  auto store = OpenSlotStore(absl::StrCat("redis-cluster://127.0.0.1:", plain->port()));
  ASSERT_TRUE(store.ok()) << store.status();
  auto got = (*store)->Get("x");
  EXPECT_FALSE(got.ok());
  EXPECT_THAT(got.status().message(), HasSubstr("cluster support disabled"));
  const int port = plain->port();
  plain->Kill();
  auto dead = OpenSlotStore(absl::StrCat("redis-cluster://127.0.0.1:", port, "?timeout_ms=1000"));
  ASSERT_TRUE(dead.ok()) << "opening must not need the cluster";
  const absl::Time start = absl::Now();
  auto s = (*dead)->Put("x", RecordBytesOfSize(1000));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("slot map"));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr(absl::StrCat(port))));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
}

// A load loop runs while a master is killed: its replica is promoted after about the node
// timeout, the store finds it with one map refresh, callers see only UNAVAILABLE meanwhile,
// and every write acknowledged with wait_replicas=1 before the kill is still there.
TEST_F(SlotStoreRedisCluster, MasterKilledDuringLoadReplicaTakesOver) {
  StartCluster();
  auto store = Open("wait_replicas=1&timeout_ms=500&backoff_ms=100");
  ASSERT_NE(store, nullptr);
  constexpr int kIds = 150;
  std::vector<std::string> bytes;
  for (int i = 0; i < kIds; ++i) {
    bytes.push_back(RecordBytesOfSize(1000, i));
    ASSERT_TRUE(store->Put(absl::StrCat("k", i), bytes.back()).ok()) << i;
  }
  const int victim_slot = RedisHashSlot("icae:slot:k0");
  const int victim = *cluster_->MasterOf(victim_slot);
  auto replica = cluster_->ReplicaOf(victim);
  ASSERT_TRUE(replica.ok()) << replica.status();

  std::atomic<bool> stop{false};
  std::atomic<int> ops{0}, unavailable{0};
  std::mutex wrong_mu;
  std::vector<std::string> wrong;  // answers other than OK or UNAVAILABLE, or wrong bytes
  std::thread load([&] {
    for (int n = 0; !stop.load(); ++n) {
      const int i = n % kIds;
      auto got = store->Get(absl::StrCat("k", i));
      ops.fetch_add(1);
      if (got.ok() && **got == bytes[i]) continue;
      if (!got.ok() && absl::IsUnavailable(got.status())) {
        unavailable.fetch_add(1);
        absl::SleepFor(absl::Milliseconds(1));  // failing fast: do not spin the CPUs
        continue;
      }
      std::lock_guard<std::mutex> lock(wrong_mu);
      wrong.push_back(absl::StrCat("k", i, ": ", got.ok() ? "wrong bytes" : got.status().ToString()));
    }
  });
  absl::SleepFor(absl::Milliseconds(200));
  const absl::Time killed = absl::Now();
  cluster_->node(victim).Kill();
  // The cluster's own failover: the replica says it is a master.
  absl::Time promoted = absl::InfiniteFuture();
  while (absl::Now() - killed < absl::Seconds(20)) {
    auto role = cluster_->node(*replica).Call({"ROLE"});
    if (role.ok() && role->rfind("master", 0) == 0) {
      promoted = absl::Now();
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_NE(promoted, absl::InfiniteFuture()) << "no failover within 20 s";
  // The store follows within one operation timeout plus one map refresh (back-off 100 ms).
  absl::Time recovered = absl::InfiniteFuture();
  while (absl::Now() - promoted < absl::Seconds(10)) {
    if (store->Get("k0").ok()) {
      recovered = absl::Now();
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  stop.store(true);
  load.join();
  ASSERT_NE(recovered, absl::InfiniteFuture());
  std::cerr << "failover: promoted " << absl::FormatDuration(promoted - killed)
            << " after the kill, store recovered " << absl::FormatDuration(recovered - promoted)
            << " later; " << ops.load() << " ops, " << unavailable.load() << " UNAVAILABLE\n";
  EXPECT_LT(recovered - promoted, absl::Milliseconds(500 + 100) + absl::Seconds(1));
  EXPECT_TRUE(wrong.empty()) << wrong.size() << " wrong answers, first: " << wrong[0];
  EXPECT_GT(unavailable.load(), 0) << "the kill was seen";
  // The other masters may still answer CLUSTERDOWN for a moment, until they have all heard of
  // the promotion (cluster gossip, not the store): wait for the whole cluster, then read.
  ASSERT_TRUE(cluster_->WaitHealthy(absl::Seconds(10)).ok());
  for (int i = 0; i < kIds; ++i) {
    auto got = store->Get(absl::StrCat("k", i));
    ASSERT_TRUE(got.ok()) << "acknowledged record k" << i << " lost: " << got.status();
    EXPECT_EQ(**got, bytes[i]);
  }
}

// redis-cli --cluster reshard moves slots (MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE) while
// two threads read and write: the store follows MOVED and ASK and no error reaches them.
TEST_F(SlotStoreRedisCluster, ReshardDuringLoadIsInvisibleToCallers) {
  StartCluster();
  auto store = Open("timeout_ms=3000&wait_replicas=1");
  ASSERT_NE(store, nullptr);
  constexpr int kIds = 1000;
  std::vector<std::string> bytes;
  for (int i = 0; i < kIds; ++i) bytes.push_back(RecordBytesOfSize(600, i));
  for (int i = 0; i < kIds; ++i) {
    ASSERT_TRUE(store->Put(absl::StrCat("r", i), bytes[i]).ok()) << i;
  }
  const int from = *cluster_->MasterOf(0);
  const int to = *cluster_->MasterOf(kRedisClusterSlots - 1);
  ASSERT_NE(from, to);
  std::atomic<bool> stop{false};
  std::atomic<int> ops{0};
  std::mutex errors_mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int n = t; !stop.load(); n += 7) {
        const int i = n % kIds;
        const std::string id = absl::StrCat("r", i);
        absl::Status s;
        if (n % 3 == 0) {
          s = store->Put(id, bytes[i]);
        } else {
          auto got = store->Get(id);
          s = got.ok() ? (**got == bytes[i] ? absl::OkStatus() : absl::DataLossError("wrong"))
                       : got.status();
        }
        ops.fetch_add(1);
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(errors_mu);
          errors.push_back(absl::StrCat(id, ": ", s.ToString()));
        }
      }
    });
  }
  std::string out;
  absl::Status reshard = cluster_->RunCli(
      {"--cluster", "reshard", absl::StrCat("127.0.0.1:", cluster_->node(from).port()),
       "--cluster-from", Id(from), "--cluster-to", Id(to), "--cluster-slots", "400",
       "--cluster-yes"},
      &out, absl::Seconds(60));
  stop.store(true);
  for (auto& th : threads) th.join();
  ASSERT_TRUE(reshard.ok()) << reshard;
  EXPECT_EQ(*cluster_->MasterOf(0), to) << "slot 0 moved";
  const auto c = store->counters();
  std::cerr << "reshard of 400 slots under " << ops.load() << " ops: " << c.moved << " MOVED, "
            << c.ask << " ASK, " << c.map_refreshes << " map refreshes\n";
  EXPECT_TRUE(errors.empty()) << errors.size() << " errors, first: " << errors[0];
  EXPECT_GT(c.moved + c.ask, 0) << "the load touched moved slots";
  for (int i = 0; i < kIds; ++i) {
    auto got = store->Get(absl::StrCat("r", i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
  }
}

}  // namespace
}  // namespace icae::slot_store
