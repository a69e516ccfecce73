// What every Redis-backed store shares: a pool of blocking hiredis connections to one Redis
// node with the operation deadline, retry-once and reconnect back-off policy, and the mapping
// of Redis error replies to absl::Status. redis:// uses one pool; redis-cluster:// one per node.
//
// Deadline: waiting for a free connection, connecting and the commands' socket reads/writes
// all share one deadline, so a dead or hung node answers UNAVAILABLE by then. A connection that
// fails is dropped (and with it the idle ones, which point at the same dead server); commands
// that failed on a reused connection are sent once more on a fresh one, so a restarted node
// costs no error. After a failed connect, the pool fails fast (UNAVAILABLE) for
// `reconnect_backoff`, then tries again: it recovers by itself once the node is back.
#ifndef ICAE_COMMON_SLOT_STORE_REDIS_CONNECTION_H_
#define ICAE_COMMON_SLOT_STORE_REDIS_CONNECTION_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct redisContext;
struct redisReply;

namespace icae::slot_store {

// One reply from Redis, owned (freed with freeReplyObject).
class RedisReply {
 public:
  RedisReply() = default;
  explicit RedisReply(void* reply);
  const redisReply* get() const { return r_.get(); }
  const redisReply* operator->() const { return r_.get(); }
  void reset() { r_.reset(); }
  bool is_error() const;
  // The text of a string, status or error reply (empty for other types).
  std::string_view text() const;

 private:
  struct Free {
    void operator()(redisReply* r) const;
  };
  std::unique_ptr<redisReply, Free> r_;
};

using RedisCommand = std::vector<std::string_view>;

// An error reply as a status: OOM → RESOURCE_EXHAUSTED; LOADING, BUSY, MASTERDOWN, TRYAGAIN,
// CLUSTERDOWN → UNAVAILABLE; auth failures → FAILED_PRECONDITION; anything else INTERNAL.
absl::Status RedisErrorStatus(const RedisReply& reply, std::string_view what);

struct RedisNodeOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;            // SELECT when not 0 (a cluster has only database 0)
  std::string user;      // AUTH user password when both are set (Redis 6 ACLs)
  std::string password;  // AUTH when not empty
  int pool_size = 8;
  absl::Duration reconnect_backoff = absl::Milliseconds(200);
  // How the node is named in status messages (which reach clients); its address only goes
  // to the log.
  std::string name = "the redis slot store";
};

class RedisConnectionPool {
 public:
  explicit RedisConnectionPool(const RedisNodeOptions& options);
  ~RedisConnectionPool();
  RedisConnectionPool(const RedisConnectionPool&) = delete;
  RedisConnectionPool& operator=(const RedisConnectionPool&) = delete;

  // Sends the commands pipelined on one connection before `deadline` and returns one reply
  // each, in order (error replies included: the caller reads them). UNAVAILABLE when the node
  // cannot be reached or does not answer in time; `budget` is only named in that message.
  absl::StatusOr<std::vector<RedisReply>> RunPipeline(const std::vector<RedisCommand>& commands,
                                                      absl::Time deadline,
                                                      absl::Duration budget);
  absl::StatusOr<RedisReply> Run(const RedisCommand& command, absl::Time deadline,
                                 absl::Duration budget);

  const RedisNodeOptions& options() const { return options_; }
  std::string address() const;  // host:port, for logs

 private:
  struct Conn;
  absl::StatusOr<std::unique_ptr<Conn>> Acquire(absl::Time deadline, bool fresh_only,
                                                absl::Duration budget);
  absl::StatusOr<std::unique_ptr<Conn>> Connect(absl::Time deadline);
  void Release(std::unique_ptr<Conn> conn, bool healthy);

  const RedisNodeOptions options_;
  // std::mutex, not absl::Mutex: see memory_store.h (TSan and the distro's abseil).
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Conn>> idle_;       // mu_
  int open_ = 0;                                  // connections idle or in use; mu_
  absl::Time down_until_ = absl::InfinitePast();  // fail fast before this; mu_
  std::string last_error_;                        // why the node was marked down; mu_
  bool down_ = false;                             // for logging transitions only; mu_
};

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_REDIS_CONNECTION_H_
