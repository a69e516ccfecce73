#include "common/slot_store/local_redis_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/slot_store/absl_compat.h"
#include "common/slot_store/redis_hash_slot.h"
#include "common/util/status_macros.h"

namespace icae::slot_store {
namespace {

std::string ReadFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return "";
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return text;
}

// One line of CLUSTER NODES: "<id> <ip:port@bus> <flags> <master id|-> <ping> <pong> <epoch>
// <link> <slot ranges...>".
struct NodeLine {
  std::string id;
  int port = 0;
  bool master = false, failed = false, myself = false;
  std::string master_id;
  std::vector<std::pair<int, int>> slots;  // ranges served (importing/migrating marks skipped)
};

std::vector<NodeLine> ParseClusterNodes(const std::string& text) {
  std::vector<NodeLine> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 8) continue;
    NodeLine n;
    n.id = std::string(f[0]);
    absl::string_view addr = f[1].substr(0, f[1].find('@'));
    if (size_t colon = addr.rfind(':'); colon != absl::string_view::npos) {
      (void)absl::SimpleAtoi(addr.substr(colon + 1), &n.port);
    }
    n.master = absl::StrContains(f[2], "master");
    n.failed = absl::StrContains(f[2], "fail");
    n.myself = absl::StrContains(f[2], "myself");
    n.master_id = std::string(f[3]);
    for (size_t i = 8; i < f.size(); ++i) {
      if (absl::StartsWith(f[i], "[")) continue;
      int a = 0, b = 0;
      const size_t dash = f[i].find('-');
      if (dash == absl::string_view::npos) {
        if (absl::SimpleAtoi(f[i], &a)) n.slots.push_back({a, a});
      } else if (absl::SimpleAtoi(f[i].substr(0, dash), &a) &&
                 absl::SimpleAtoi(f[i].substr(dash + 1), &b)) {
        n.slots.push_back({a, b});
      }
    }
    out.push_back(std::move(n));
  }
  return out;
}

}  // namespace

std::string LocalRedisCluster::FindRedisCli() {
  return FindRedisProgram("ICAE_REDIS_CLI", "redis-cli", LocalRedisServer::FindRedisServer());
}

LocalRedisCluster::LocalRedisCluster(LocalRedisClusterOptions options, std::string dir)
    : options_(std::move(options)), dir_(std::move(dir)) {}

LocalRedisCluster::~LocalRedisCluster() {
  nodes_.clear();  // kills every node
  ::unlink((dir_ + "/cli.out").c_str());
  ::rmdir(dir_.c_str());
}

absl::StatusOr<std::unique_ptr<LocalRedisCluster>> LocalRedisCluster::Start(
    const LocalRedisClusterOptions& options) {
  LocalRedisClusterOptions opt = options;
  if (opt.masters < 3) {
    // redis-cli --cluster create refuses fewer: a failover needs a majority of masters.
    return absl::InvalidArgumentError("a redis cluster needs at least 3 masters");
  }
  if (opt.replicas_per_master < 0) return absl::InvalidArgumentError("replicas must be >= 0");
  if (opt.redis_cli.empty()) opt.redis_cli = FindRedisCli();
  if (LocalRedisServer::FindRedisServer().empty() && opt.node.binary.empty()) {
    return absl::NotFoundError(
        "redis-server not found (install the redis-server package, or set ICAE_REDIS_SERVER)");
  }
  if (opt.redis_cli.empty() || !IsExecutable(opt.redis_cli)) {
    return absl::NotFoundError(
        "redis-cli not found (install the redis-tools package, or set ICAE_REDIS_CLI)");
  }
  ASSIGN_OR_RETURN(std::string dir, MakeTempDir("icae-redis-cluster"));
  std::unique_ptr<LocalRedisCluster> cluster(new LocalRedisCluster(opt, dir));
  LocalRedisOptions node = opt.node;
  node.cluster = true;
  node.cluster_node_timeout = opt.node_timeout;
  // A replica promotes itself however long it has been cut off from its master: a cache
  // prefers serving (possibly a little stale) records to refusing the slots.
  node.extra_args.push_back("--cluster-replica-validity-factor");
  node.extra_args.push_back("0");
  // Redis waits 5 s by default before a diskless full sync, for more replicas to join it:
  // here each master has its replicas at once, and the wait is most of the start-up time.
  node.extra_args.push_back("--repl-diskless-sync-delay");
  node.extra_args.push_back("0");
  const int total = opt.masters * (1 + opt.replicas_per_master);
  std::vector<std::string> create = {"--cluster", "create"};
  for (int i = 0; i < total; ++i) {
    auto server = LocalRedisServer::Start(node);
    if (!server.ok()) return server.status();
    create.push_back(absl::StrCat("127.0.0.1:", (*server)->port()));
    cluster->nodes_.push_back(*std::move(server));
  }
  create.push_back("--cluster-replicas");
  create.push_back(std::to_string(opt.replicas_per_master));
  create.push_back("--cluster-yes");
  const absl::Time deadline = absl::Now() + opt.form_timeout;
  std::string out;
  if (absl::Status s = cluster->RunCli(create, &out, opt.form_timeout); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("redis-cli --cluster create: ", s.message()));
  }
  if (absl::Status s = cluster->WaitHealthy(deadline - absl::Now()); !s.ok()) return s;
  return cluster;
}

std::string LocalRedisCluster::Uri(std::string_view params) const {
  std::vector<std::string> hosts;
  for (const auto& n : nodes_) hosts.push_back(absl::StrCat("127.0.0.1:", n->port()));
  return absl::StrCat("redis-cluster://", absl::StrJoin(hosts, ","), params.empty() ? "" : "?",
                      ToAbsl(params));
}

absl::Status LocalRedisCluster::RunCli(const std::vector<std::string>& args, std::string* out,
                                       absl::Duration timeout) const {
  const std::string log = dir_ + "/cli.out";
  std::vector<std::string> all = {options_.redis_cli};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  while (true) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return absl::InternalError("waitpid failed");
    if (absl::Now() >= deadline) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      *out = ReadFile(log);
      return absl::DeadlineExceededError(absl::StrCat(
          "redis-cli did not finish within ", absl::FormatDuration(timeout), ": ",
          out->size() > 600 ? out->substr(out->size() - 600) : *out));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  *out = ReadFile(log);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(
        "redis-cli exited with status ", WIFEXITED(status) ? WEXITSTATUS(status) : -1, ": ",
        out->size() > 600 ? out->substr(out->size() - 600) : *out));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> LocalRedisCluster::NodeId(int i) const {
  return nodes_[i]->Call({"CLUSTER", "MYID"});
}

absl::StatusOr<int> LocalRedisCluster::MasterOf(int slot) const {
  absl::Status last = absl::UnavailableError("no live node");
  for (int i = 0; i < size(); ++i) {
    if (!Alive(i)) continue;
    auto text = nodes_[i]->Call({"CLUSTER", "NODES"});
    if (!text.ok()) {
      last = text.status();
      continue;
    }
    for (const NodeLine& n : ParseClusterNodes(*text)) {
      if (!n.master || n.failed) continue;
      for (auto [a, b] : n.slots) {
        if (slot < a || slot > b) continue;
        for (int j = 0; j < size(); ++j) {
          if (nodes_[j]->port() == n.port) return j;
        }
      }
    }
    return absl::NotFoundError(absl::StrCat("no master serves slot ", slot));
  }
  return last;
}

absl::StatusOr<int> LocalRedisCluster::ReplicaOf(int master) const {
  auto id = NodeId(master);
  if (!id.ok()) return id.status();
  auto text = nodes_[master]->Call({"CLUSTER", "NODES"});
  if (!text.ok()) return text.status();
  for (const NodeLine& n : ParseClusterNodes(*text)) {
    if (n.master || n.failed || n.master_id != *id) continue;
    for (int j = 0; j < size(); ++j) {
      if (nodes_[j]->port() == n.port && Alive(j)) return j;
    }
  }
  return absl::NotFoundError(absl::StrCat("node ", master, " has no live replica"));
}

absl::Status LocalRedisCluster::WaitHealthy(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  std::string why = "not checked";
  while (true) {
    why.clear();
    std::vector<int> reference;
    for (int i = 0; i < size() && why.empty(); ++i) {
      if (!Alive(i)) continue;
      auto info = nodes_[i]->Call({"CLUSTER", "INFO"});
      if (!info.ok() || !absl::StrContains(*info, "cluster_state:ok")) {
        why = absl::StrCat("node ", i, " is not cluster_state:ok");
        break;
      }
      auto text = nodes_[i]->Call({"CLUSTER", "NODES"});
      if (!text.ok()) {
        why = std::string(text.status().message());
        break;
      }
      std::vector<int> owner(kRedisClusterSlots, -1);
      for (const NodeLine& n : ParseClusterNodes(*text)) {
        if (n.myself && !n.master) {
          auto repl = nodes_[i]->Call({"INFO", "replication"});
          if (!repl.ok() || !absl::StrContains(*repl, "master_link_status:up")) {
            why = absl::StrCat("replica ", i, " is not in sync with its master");
          }
        }
        if (!n.master || n.failed) continue;
        for (auto [a, b] : n.slots) {
          for (int s = a; s <= b && s < kRedisClusterSlots; ++s) owner[s] = n.port;
        }
      }
      for (int s = 0; s < kRedisClusterSlots && why.empty(); ++s) {
        if (owner[s] < 0) why = absl::StrCat("node ", i, " knows no master of slot ", s);
      }
      if (why.empty() && !reference.empty() && owner != reference) {
        why = absl::StrCat("node ", i, " disagrees about the slot map");
      }
      if (reference.empty()) reference = std::move(owner);
    }
    if (why.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("redis cluster not healthy within ",
                                                      absl::FormatDuration(timeout), ": ", why));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

}  // namespace icae::slot_store
