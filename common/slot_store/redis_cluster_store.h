// redis-cluster://[[user]:password@]host:port[,host:port...] — records as Redis strings on a
// Redis Cluster, each on the master that serves its key's hash slot (redis_hash_slot.h).
//
// The listed nodes are only seeds: the store learns the slot map from the first of them that
// answers CLUSTER SLOTS, and keeps a connection pool (redis_connection.h: up to `pool` per node,
// the same deadline, retry-once and reconnect back-off as redis://) per master it talks to.
// Every operation has one deadline, now + timeout, across redirects and map refreshes.
//   MOVED  the slot has a new owner: the store routes the slot there at once and refreshes the
//          whole map on a later operation (at most once per backoff).
//   ASK    the slot is being migrated and the key has moved already: the command is sent once to
//          the named node, prefixed with ASKING; the map is left alone.
//   A node that cannot be reached (a killed master) makes the store refresh the map (at most
//   once per backoff); once the cluster has promoted a replica, the next refresh routes its
//   slots to it. Until then operations on those slots answer UNAVAILABLE.
// More than `max_redirects` MOVED/ASK answers for one operation is UNAVAILABLE (a cluster in
// flux, or a loop). `wait_replicas=N` sends WAIT N after each SET and DEL and acknowledges the
// write only when N replicas have it (UNAVAILABLE if fewer confirm within the deadline; the
// write itself may still have landed on the master).
#ifndef ICAE_COMMON_SLOT_STORE_REDIS_CLUSTER_STORE_H_
#define ICAE_COMMON_SLOT_STORE_REDIS_CLUSTER_STORE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "common/slot_store/redis_connection.h"
#include "common/slot_store/redis_record_store.h"
#include "common/slot_store/store_uri.h"

namespace icae::slot_store {

struct RedisClusterStoreOptions : RedisClientOptions {
  std::vector<StoreEndpoint> seeds;  // port -1 means 6379
  int wait_replicas = 0;             // 0: a write is acknowledged by its master alone
  int max_redirects = 5;             // MOVED/ASK answers followed per operation
};

inline constexpr int kMaxWaitReplicas = 64;
inline constexpr int kMaxRedirectsLimit = 100;

class RedisClusterSlotStore final : public internal::RedisRecordStore {
 public:
  // Does not connect.
  static absl::StatusOr<std::unique_ptr<RedisClusterSlotStore>> Create(
      const RedisClusterStoreOptions& options);
  // redis-cluster://[[user]:password@]host:port[,host:port...][/]?wait_replicas=&max_redirects=
  //   &ttl=&timeout_ms=&pool=&prefix=&max_record_bytes=&backoff_ms=
  static absl::StatusOr<std::unique_ptr<RedisClusterSlotStore>> FromUri(const StoreUri& uri);
  ~RedisClusterSlotStore() override;

  std::string Describe() const override;
  const RedisClusterStoreOptions& options() const { return options_; }

  // What the store has seen of the cluster (for tests and logs).
  struct ClusterCounters {
    int64_t moved = 0;          // MOVED answers followed
    int64_t ask = 0;            // ASK answers followed
    int64_t map_refreshes = 0;  // successful CLUSTER SLOTS reads
    int64_t nodes = 0;          // nodes with a connection pool
  };
  ClusterCounters counters() const;

 private:
  using Pool = std::shared_ptr<RedisConnectionPool>;
  explicit RedisClusterSlotStore(const RedisClusterStoreOptions& options);

  absl::StatusOr<RedisReply> RunOnKey(const RedisCommand& command, Access access) override;
  // Reads CLUSTER SLOTS from a known node (masters first, then the seeds) unless the map is
  // fresh, or was read less than `reconnect_backoff` ago.
  absl::Status RefreshMapIfStale(absl::Time deadline);
  absl::Status RefreshMap(absl::Time deadline);
  absl::Status ParseSlots(const RedisReply& reply, const std::string& asked_host);
  Pool PoolFor(const std::string& host, int port);  // mu_ held
  Pool Owner(int slot);
  void MarkStale();

  const RedisClusterStoreOptions options_;
  std::mutex refresh_mu_;  // one map refresh at a time; taken before mu_
  mutable std::mutex mu_;
  std::vector<Pool> nodes_;                          // every node ever used; mu_
  absl::flat_hash_map<std::string, int> node_index_;  // "host:port" → nodes_; mu_
  std::vector<int> slot_owner_;                       // slot → nodes_ index, -1: unknown; mu_
  bool stale_ = true;                                 // mu_
  absl::Time last_refresh_ = absl::InfinitePast();    // last refresh attempt; mu_
  absl::Status last_refresh_status_;                  // mu_
  ClusterCounters counters_;                          // mu_
};

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_REDIS_CLUSTER_STORE_H_
