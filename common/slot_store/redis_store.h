// redis://[:password@]host:port[/db] — records as Redis strings under `prefix + id`, shared by
// any number of hosts. Works against a Redis configured with maxmemory-policy allkeys-lru (an
// evicted record is a miss, NOT_FOUND) and with values of many MB.
//
// Connections: a pool of up to `pool_size` blocking hiredis connections, made on first use.
// Every operation has one deadline, now + timeout: waiting for a free connection, connecting
// and the command's socket reads/writes all share it, so a dead or hung Redis answers
// UNAVAILABLE within about `timeout`. A connection that fails is dropped (and with it the idle
// ones, which point at the same dead server); an operation that failed on a reused connection is
// retried once on a fresh one, so a restarted Redis costs no error. After a failed connect,
// operations fail fast (UNAVAILABLE) for `reconnect_backoff`, then try again: the store recovers
// by itself once Redis is back.
#ifndef ICAE_COMMON_SLOT_STORE_REDIS_STORE_H_
#define ICAE_COMMON_SLOT_STORE_REDIS_STORE_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/slot_store/slot_store.h"
#include "common/slot_store/store_uri.h"

struct redisContext;

namespace icae::slot_store {

struct RedisStoreOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  std::string password;  // AUTH when not empty (`user` too for Redis 6 ACLs)
  std::string user;
  absl::Duration default_ttl = absl::ZeroDuration();  // zero: no expiry
  absl::Duration timeout = absl::Seconds(1);          // per operation, see above
  int pool_size = 8;
  std::string key_prefix = "icae:slot:";
  uint64_t max_record_bytes = kDefaultMaxRecordBytes;
  absl::Duration reconnect_backoff = absl::Milliseconds(200);
};

class RedisSlotStore final : public SlotStore {
 public:
  // Does not connect.
  static absl::StatusOr<std::unique_ptr<RedisSlotStore>> Create(const RedisStoreOptions& options);
  // redis://[[user]:password@]host:port[/db]?ttl=&timeout_ms=&pool=&prefix=&max_record_bytes=
  //        &backoff_ms=
  static absl::StatusOr<std::unique_ptr<RedisSlotStore>> FromUri(const StoreUri& uri);
  ~RedisSlotStore() override;

  absl::Status Put(std::string_view id, std::string_view record,
                   absl::Duration ttl = absl::ZeroDuration()) override;
  absl::StatusOr<RecordBytes> Get(std::string_view id) override;
  absl::StatusOr<bool> Contains(std::string_view id) override;
  absl::Status Delete(std::string_view id) override;
  // entries and bytes are -1: only Redis knows them, and Stats() must not block on the network.
  SlotStoreStats Stats() const override;
  std::string Describe() const override;

  const RedisStoreOptions& options() const { return options_; }

 private:
  struct Conn;
  struct Reply;
  explicit RedisSlotStore(const RedisStoreOptions& options);

  // Runs one command (argv) before `deadline`, with the pool and retry policy described above.
  absl::StatusOr<Reply> Run(const std::vector<std::string_view>& argv);
  absl::StatusOr<std::unique_ptr<Conn>> Acquire(absl::Time deadline, bool fresh_only);
  absl::StatusOr<std::unique_ptr<Conn>> Connect(absl::Time deadline);
  void Release(std::unique_ptr<Conn> conn, bool healthy);
  std::string Key(std::string_view id) const { return options_.key_prefix + std::string(id); }

  const RedisStoreOptions options_;
  // std::mutex, not absl::Mutex: see memory_store.h (TSan and the distro's abseil).
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Conn>> idle_;  // mu_
  int open_ = 0;                             // connections idle or in use; mu_
  absl::Time down_until_ = absl::InfinitePast();  // fail fast before this; mu_
  std::string last_error_;                        // why Redis was marked down; mu_
  bool down_ = false;                             // for logging transitions only; mu_
  SlotStoreStats stats_;                          // mu_
};

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_REDIS_STORE_H_
