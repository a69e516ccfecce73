// redis-cluster:// without a cluster: hash slots (CRC16, hash tags), URI parsing and bounds.
#include <string>

#include "common/slot_store/redis_cluster_store.h"
#include "common/slot_store/redis_hash_slot.h"
#include "common/slot_store/slot_store.h"
#include "common/slot_store/store_uri.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace icae::slot_store {
namespace {

using ::testing::HasSubstr;

TEST(SlotStoreRedisClusterUnit, Crc16AndHashSlots) {
  // The check value of CRC-16/XMODEM, and the example of the Redis Cluster specification.
  EXPECT_EQ(Crc16Xmodem("123456789"), 0x31C3);
  EXPECT_EQ(Crc16Xmodem(""), 0);
  EXPECT_EQ(RedisHashSlot("123456789"), 0x31C3 % 16384);
  // Slots Redis itself reports (CLUSTER KEYSLOT; the integration test checks many more).
  EXPECT_EQ(RedisHashSlot("foo"), 12182);
  EXPECT_EQ(RedisHashSlot("bar"), 5061);
  // Hash tags: only the first {...} with something inside counts.
  EXPECT_EQ(RedisHashSlot("{user1000}.following"), RedisHashSlot("user1000"));
  EXPECT_EQ(RedisHashSlot("{user1000}.followers"), RedisHashSlot("user1000"));
  EXPECT_EQ(RedisHashSlot("foo{}{bar}"), RedisHashSlot("foo{}{bar}")) << "empty tag: whole key";
  EXPECT_NE(RedisHashSlot("foo{}{bar}"), RedisHashSlot("bar"));
  EXPECT_EQ(RedisHashSlot("foo{{bar}}zap"), RedisHashSlot("{bar"));
  EXPECT_EQ(RedisHashSlot("foo{bar}{zap}"), RedisHashSlot("bar"));
  EXPECT_EQ(RedisHashSlot("no{close"), Crc16Xmodem("no{close") % 16384);
}

TEST(SlotStoreRedisClusterUnit, UriParsesSeedsAndParameters) {
  auto uri = ParseStoreUri("redis-cluster://:pw@10.0.0.1:7000,10.0.0.2,[::1]:7002/?wait_replicas=1");
  ASSERT_TRUE(uri.ok()) << uri.status();
  ASSERT_EQ(uri->endpoints.size(), 3u);
  EXPECT_EQ(uri->endpoints[1].host, "10.0.0.2");
  EXPECT_EQ(uri->endpoints[1].port, -1);
  EXPECT_EQ(uri->endpoints[2].host, "::1");
  EXPECT_EQ(uri->endpoints[2].port, 7002);
  auto store = RedisClusterSlotStore::FromUri(*uri);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->options().password, "pw");
  EXPECT_EQ((*store)->options().wait_replicas, 1);
  EXPECT_EQ((*store)->options().max_redirects, 5);
  EXPECT_EQ((*store)->Describe(),
            "redis-cluster://10.0.0.1:7000,10.0.0.2:6379,[::1]:7002?wait_replicas=1");
  EXPECT_THAT((*store)->Describe(), ::testing::Not(HasSubstr("pw")));
  // The bounds themselves are accepted.
  for (const char* ok : {"redis-cluster://h:1?wait_replicas=64&max_redirects=100",
                         "redis-cluster://h:1?wait_replicas=0&max_redirects=0",
                         "redis-cluster://h:1/0?pool=1"}) {
    EXPECT_TRUE(OpenSlotStore(ok).ok()) << ok;
  }
}

TEST(SlotStoreRedisClusterUnit, BadUrisAreClearErrors) {
  struct Case {
    const char* uri;
    const char* says;
  } cases[] = {
      {"redis-cluster://", "needs at least one node"},
      {"redis-cluster://?wait_replicas=1", "needs at least one node"},
      {"redis-cluster://h1:7000,,h2:7001", "empty host"},
      {"redis-cluster://h1:7000,:7001", "empty host"},
      {"redis-cluster://h1:70000", "port must be 1..65535"},
      {"redis-cluster://h1:7000,h2:x", "port must be 1..65535"},
      {"redis-cluster://h1:7000/3", "no databases"},
      {"redis-cluster://h1:7000?wait_replicas=65", "wait_replicas must be an integer in [0, 64]"},
      {"redis-cluster://h1:7000?wait_replicas=-1", "wait_replicas"},
      {"redis-cluster://h1:7000?wait_replicas=two", "wait_replicas"},
      {"redis-cluster://h1:7000?max_redirects=101", "max_redirects must be an integer in [0, 100]"},
      {"redis-cluster://h1:7000?pool=0", "pool"},
      {"redis-cluster://h1:7000?waitreplicas=1", "unknown parameter 'waitreplicas'"},
      {"redis://h1:7000,h2:7001/0", "redis-cluster://"},
  };
  for (const Case& c : cases) {
    auto store = OpenSlotStore(c.uri);
    ASSERT_FALSE(store.ok()) << c.uri;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << c.uri;
    EXPECT_THAT(store.status().message(), HasSubstr(c.says)) << c.uri;
  }
}

}  // namespace
}  // namespace icae::slot_store
