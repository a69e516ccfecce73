// redis://[:password@]host:port[/db] — records as Redis strings under `prefix + id`, shared by
// any number of hosts. Works against a Redis configured with maxmemory-policy allkeys-lru (an
// evicted record is a miss, NOT_FOUND) and with values of many MB.
//
// Connections, deadlines, retry-once and reconnect back-off: one RedisConnectionPool of up to
// `pool_size` connections (redis_connection.h), made on first use. Records: RedisRecordStore
// (redis_record_store.h), shared with redis-cluster://.
#ifndef ICAE_COMMON_SLOT_STORE_REDIS_STORE_H_
#define ICAE_COMMON_SLOT_STORE_REDIS_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "common/slot_store/redis_connection.h"
#include "common/slot_store/redis_record_store.h"
#include "common/slot_store/slot_store.h"
#include "common/slot_store/store_uri.h"

namespace icae::slot_store {

struct RedisStoreOptions : RedisClientOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
};

class RedisSlotStore final : public internal::RedisRecordStore {
 public:
  // Does not connect.
  static absl::StatusOr<std::unique_ptr<RedisSlotStore>> Create(const RedisStoreOptions& options);
  // redis://[[user]:password@]host:port[/db]?ttl=&timeout_ms=&pool=&prefix=&max_record_bytes=
  //        &backoff_ms=
  static absl::StatusOr<std::unique_ptr<RedisSlotStore>> FromUri(const StoreUri& uri);
  ~RedisSlotStore() override;

  std::string Describe() const override;

  const RedisStoreOptions& options() const { return options_; }

 private:
  explicit RedisSlotStore(const RedisStoreOptions& options);
  absl::StatusOr<RedisReply> RunOnKey(const RedisCommand& command, Access access) override;

  const RedisStoreOptions options_;
  RedisConnectionPool pool_;
};

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_REDIS_STORE_H_
