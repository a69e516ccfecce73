// A private redis-server child process on a free loopback port, for tests and `icae bench
// store --uri redis-local`: its own temp folder, no persistence (--save "" --appendonly no),
// killed with the object (and, through PR_SET_PDEATHSIG, if the starting thread dies).
#ifndef ICAE_COMMON_SLOT_STORE_LOCAL_REDIS_SERVER_H_
#define ICAE_COMMON_SLOT_STORE_LOCAL_REDIS_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace icae::slot_store {

struct LocalRedisOptions {
  std::string binary;          // "" = FindRedisServer()
  std::string maxmemory;       // e.g. "64mb"; "" = no limit
  std::string maxmemory_policy = "allkeys-lru";
  std::vector<std::string> extra_args;  // more "--name value" arguments
  // Cluster mode (--cluster-enabled yes): the cluster bus gets a second free port, kept across
  // Restart() together with nodes.conf, so a restarted node rejoins its cluster.
  bool cluster = false;
  absl::Duration cluster_node_timeout = absl::Seconds(1);
  absl::Duration start_timeout = absl::Seconds(10);
};

// Helpers shared by LocalRedisServer and LocalRedisCluster.
bool IsExecutable(const std::string& path);
// A Redis program: $env_var if set (it must be executable), else `name` in the folder of
// `beside` (a path; "" = none), else on $PATH, else /usr/bin/<name>; "" if none.
std::string FindRedisProgram(const char* env_var, const std::string& name, const std::string& beside = "");
// A new folder $TMPDIR/<prefix>.XXXXXX (/tmp without TMPDIR).
absl::StatusOr<std::string> MakeTempDir(const std::string& prefix);

class LocalRedisServer {
 public:
  // $ICAE_REDIS_SERVER, else redis-server on $PATH, else /usr/bin/redis-server; "" if none.
  static std::string FindRedisServer();

  // Picks a free port (binds port 0 on 127.0.0.1, then hands it to redis; retried with a new
  // port if another process takes it in between) and waits until the server answers PING.
  // NOT_FOUND when no redis-server binary exists.
  static absl::StatusOr<std::unique_ptr<LocalRedisServer>> Start(
      const LocalRedisOptions& options = {});
  ~LocalRedisServer();
  LocalRedisServer(const LocalRedisServer&) = delete;
  LocalRedisServer& operator=(const LocalRedisServer&) = delete;

  int port() const { return port_; }
  int bus_port() const { return bus_port_; }  // 0 unless options.cluster
  pid_t pid() const { return pid_; }
  // "redis://127.0.0.1:<port>/0" plus "?<params>" when params is not empty.
  std::string Uri(std::string_view params = "") const;

  // Runs one command on a fresh connection (for tests: CONFIG SET, planting bad values, DBSIZE).
  // Returns the reply as text: strings and status replies as they are, integers in decimal,
  // nil as "(nil)", arrays as their elements joined by '\n'. Error replies and I/O failures
  // are errors.
  absl::StatusOr<std::string> Call(const std::vector<std::string>& argv) const;

  // SIGKILL and reap: a crash, as a client sees it.
  void Kill();
  // Starts a fresh server on the same port after Kill().
  absl::Status Restart();
  // SIGSTOP / SIGCONT: a hung server (connections accepted, nothing answered).
  void Pause();
  void Resume();

 private:
  LocalRedisServer(LocalRedisOptions options, std::string dir);
  absl::Status Spawn(int port);

  LocalRedisOptions options_;
  std::string dir_;
  int port_ = 0;
  int bus_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_LOCAL_REDIS_SERVER_H_
