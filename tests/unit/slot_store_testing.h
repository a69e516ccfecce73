// Helpers shared by the slot store tests: records of an exact size, a private redis-server.
#ifndef ICAE_TESTS_UNIT_SLOT_STORE_TESTING_H_
#define ICAE_TESTS_UNIT_SLOT_STORE_TESTING_H_

#include <cstdlib>
#include <memory>
#include <string>

#include "common/slot_store/local_redis_cluster.h"
#include "common/slot_store/local_redis_server.h"
#include "common/slot_store/slot_record.h"
#include "gtest/gtest.h"

namespace icae::slot_store::testing {

inline const std::string kModelFp(64, 'a');
inline const std::string kAdapterFp(64, 'b');

// A valid record whose payload is `payload_bytes` (even) bytes of a pattern seeded by `seed`
// (finite bf16 values).
inline SlotRecord MakeRecord(size_t payload_bytes, int seed = 1) {
  SlotRecord r;
  r.header.model_fingerprint = kModelFp;
  r.header.adapter_fingerprint = kAdapterFp;
  r.header.dtype = SlotDType::kBFloat16;
  r.header.mem_size = 1;
  r.header.rate = 4;
  r.header.segment_count = 1;
  r.header.n_slots = 1;
  r.header.hidden_size = payload_bytes / 2;
  r.header.token_count = 4;
  r.header.created_unix_micros = 1'700'000'000'000'000;
  r.payload.resize(payload_bytes);
  uint32_t x = 2654435761u * static_cast<uint32_t>(seed + 1);
  for (char& c : r.payload) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  // Clear one exponent bit of every bf16 element (high byte): a record with NaN or infinity
  // is invalid, and random bytes would hold some.
  for (size_t i = 1; i < r.payload.size(); i += 2) r.payload[i] &= static_cast<char>(0xbf);
  return r;
}

// Encoded record of exactly `total_bytes` bytes (>= kSlotRecordOverheadBytes + 2, even).
inline std::string RecordBytesOfSize(size_t total_bytes, int seed = 1) {
  auto bytes = EncodeSlotRecord(MakeRecord(total_bytes - kSlotRecordOverheadBytes, seed));
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::string();
}

inline bool RedisRequired() {
  const char* v = std::getenv("ICAE_REQUIRE_REDIS");
  return v != nullptr && std::string(v) == "1";
}

}  // namespace icae::slot_store::testing

// In a test or SetUp(): starts `var` (a std::unique_ptr<LocalRedisServer>). No redis-server
// installed: skips the test, or fails it when ICAE_REQUIRE_REDIS=1 (CI). Installed but unable
// to start: always a failure.
#define ICAE_START_REDIS_OR_SKIP(var, options)                                                \
  do {                                                                                        \
    if (::icae::slot_store::LocalRedisServer::FindRedisServer().empty()) {                    \
      if (::icae::slot_store::testing::RedisRequired()) {                                     \
        FAIL() << "ICAE_REQUIRE_REDIS=1 but redis-server is not installed (apt-get install "  \
                  "redis-server, or set ICAE_REDIS_SERVER to its path)";                      \
      }                                                                                       \
      GTEST_SKIP() << "redis-server not installed; set ICAE_REQUIRE_REDIS=1 to make this a "  \
                      "failure";                                                              \
    }                                                                                         \
    auto icae_redis_ = ::icae::slot_store::LocalRedisServer::Start(options);                  \
    ASSERT_TRUE(icae_redis_.ok()) << "starting redis-server: " << icae_redis_.status();       \
    var = *std::move(icae_redis_);                                                            \
  } while (0)

// The same for `var`, a std::unique_ptr<LocalRedisCluster> started with `options` (needs
// redis-server and redis-cli, from the redis-server and redis-tools packages).
#define ICAE_START_REDIS_CLUSTER_OR_SKIP(var, options)                                        \
  do {                                                                                        \
    if (::icae::slot_store::LocalRedisServer::FindRedisServer().empty() ||                    \
        ::icae::slot_store::LocalRedisCluster::FindRedisCli().empty()) {                      \
      if (::icae::slot_store::testing::RedisRequired()) {                                     \
        FAIL() << "ICAE_REQUIRE_REDIS=1 but redis-server or redis-cli is not installed "      \
                  "(apt-get install redis-server redis-tools, or set ICAE_REDIS_SERVER and "  \
                  "ICAE_REDIS_CLI)";                                                          \
      }                                                                                       \
      GTEST_SKIP() << "redis-server or redis-cli not installed; set ICAE_REQUIRE_REDIS=1 to " \
                      "make this a failure";                                                  \
    }                                                                                         \
    auto icae_cluster_ = ::icae::slot_store::LocalRedisCluster::Start(options);               \
    ASSERT_TRUE(icae_cluster_.ok()) << "starting a redis cluster: " << icae_cluster_.status(); \
    var = *std::move(icae_cluster_);                                                          \
  } while (0)

#endif  // ICAE_TESTS_UNIT_SLOT_STORE_TESTING_H_
