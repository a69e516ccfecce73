// A private Redis Cluster on loopback, for tests and `icae bench store --uri
// redis-cluster-local`: `masters` × (1 + `replicas_per_master`) LocalRedisServer nodes in cluster
// mode on free ports, formed with `redis-cli --cluster create`, torn down with the object.
#ifndef ICAE_COMMON_SLOT_STORE_LOCAL_REDIS_CLUSTER_H_
#define ICAE_COMMON_SLOT_STORE_LOCAL_REDIS_CLUSTER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/slot_store/local_redis_server.h"

namespace icae::slot_store {

struct LocalRedisClusterOptions {
  int masters = 3;
  int replicas_per_master = 1;
  // How long a silent node takes to be marked failed; failover follows within about twice it.
  absl::Duration node_timeout = absl::Seconds(1);
  LocalRedisOptions node;  // per node (cluster mode and the node timeout are set from above)
  std::string redis_cli;   // "" = FindRedisCli()
  absl::Duration form_timeout = absl::Seconds(60);
};

class LocalRedisCluster {
 public:
  // $ICAE_REDIS_CLI, else redis-cli beside the redis-server binary, else on $PATH; "" if none.
  static std::string FindRedisCli();

  // Starts the nodes, forms the cluster and waits until every node reports cluster_state:ok and
  // every replica is in sync with its master. NOT_FOUND when redis-server or redis-cli is
  // missing.
  static absl::StatusOr<std::unique_ptr<LocalRedisCluster>> Start(
      const LocalRedisClusterOptions& options = {});
  ~LocalRedisCluster();
  LocalRedisCluster(const LocalRedisCluster&) = delete;
  LocalRedisCluster& operator=(const LocalRedisCluster&) = delete;

  int size() const { return static_cast<int>(nodes_.size()); }
  LocalRedisServer& node(int i) { return *nodes_[i]; }
  // "redis-cluster://127.0.0.1:<port of node 0>,..." (every node), plus "?<params>".
  std::string Uri(std::string_view params = "") const;

  // The index of the node that serves `slot` as master, as a live node sees it.
  absl::StatusOr<int> MasterOf(int slot) const;
  // The index of a live replica of master `master`, as the master sees it.
  absl::StatusOr<int> ReplicaOf(int master) const;
  absl::StatusOr<std::string> NodeId(int i) const;
  // Runs redis-cli with `args` (its output in *out) within `timeout`.
  absl::Status RunCli(const std::vector<std::string>& args, std::string* out,
                      absl::Duration timeout) const;
  // Until every live node says cluster_state:ok and agrees on who serves every slot.
  absl::Status WaitHealthy(absl::Duration timeout) const;

 private:
  LocalRedisCluster(LocalRedisClusterOptions options, std::string dir);
  bool Alive(int i) const { return nodes_[i]->pid() > 0; }

  LocalRedisClusterOptions options_;
  std::string dir_;  // redis-cli's output
  std::vector<std::unique_ptr<LocalRedisServer>> nodes_;
};

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_LOCAL_REDIS_CLUSTER_H_
