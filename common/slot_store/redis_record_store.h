// The SlotStore operations on Redis strings, for every way of reaching Redis (one node:
// redis://, a cluster: redis-cluster://): records live under `key_prefix + id`, Put is SET with
// PX when the record expires, Get checks the size bound and the record (a corrupt value is
// deleted and reported as DATA_LOSS), and hit/miss/corrupt counts are kept here. Subclasses
// only say how a command on a key reaches Redis.
#ifndef ICAE_COMMON_SLOT_STORE_REDIS_RECORD_STORE_H_
#define ICAE_COMMON_SLOT_STORE_REDIS_RECORD_STORE_H_

#include <cstdint>
#include <mutex>
#include <string>

#include "common/slot_store/redis_connection.h"
#include "common/slot_store/slot_store.h"
#include "common/slot_store/store_uri.h"

namespace icae::slot_store {

// What redis:// and redis-cluster:// share: credentials, record handling and the connection
// policy (redis_connection.h), with the same URI parameters and defaults.
struct RedisClientOptions {
  std::string password;  // AUTH when not empty (`user` too for Redis 6 ACLs)
  std::string user;
  absl::Duration default_ttl = absl::ZeroDuration();  // zero: no expiry
  absl::Duration timeout = absl::Seconds(1);          // per operation
  int pool_size = 8;                                  // connections per Redis node
  std::string key_prefix = "icae:slot:";
  uint64_t max_record_bytes = kDefaultMaxRecordBytes;
  absl::Duration reconnect_backoff = absl::Milliseconds(200);
};

namespace internal {

// Reads `[user]:password@` and ttl, timeout_ms, pool, prefix, max_record_bytes, backoff_ms
// (the caller takes its own parameters and calls params->Finish()).
absl::Status TakeRedisClientOptions(const StoreUri& uri, UriParams* params,
                                    RedisClientOptions* options);
absl::Status ValidateRedisClientOptions(const RedisClientOptions& options);
// The connection options of one node under `client`'s credentials and pool policy.
RedisNodeOptions NodeOptionsFor(const RedisClientOptions& client, std::string host, int port);

class RedisRecordStore : public SlotStore {
 public:
  absl::Status Put(std::string_view id, std::string_view record,
                   absl::Duration ttl = absl::ZeroDuration()) final;
  absl::StatusOr<RecordBytes> Get(std::string_view id) final;
  absl::StatusOr<bool> Contains(std::string_view id) final;
  absl::Status Delete(std::string_view id) final;
  // entries and bytes are -1: only Redis knows them, and Stats() must not block on the network.
  SlotStoreStats Stats() const final;

 protected:
  explicit RedisRecordStore(const RedisClientOptions& options);

  enum class Access { kRead, kWrite };
  // Runs `command`, whose argv[1] is the key, and returns Redis's reply (an error reply too:
  // the caller maps it). Non-OK only when Redis could not be asked or did not answer.
  virtual absl::StatusOr<RedisReply> RunOnKey(const RedisCommand& command, Access access) = 0;

 private:
  std::string Key(std::string_view id) const { return key_prefix_ + std::string(id); }

  const std::string key_prefix_;
  const uint64_t max_record_bytes_;
  const absl::Duration default_ttl_;
  mutable std::mutex mu_;
  SlotStoreStats stats_;  // mu_
};

}  // namespace internal
}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_REDIS_RECORD_STORE_H_
