#include "common/slot_store/local_redis_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/slot_store/absl_compat.h"
#include "common/util/status_macros.h"

namespace icae::slot_store {

bool IsExecutable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

std::string FindRedisProgram(const char* env_var, const std::string& name, const std::string& beside) {
  if (const char* env = std::getenv(env_var); env != nullptr && env[0] != '\0') {
    return IsExecutable(env) ? env : "";
  }
  if (const size_t slash = beside.rfind('/'); slash != std::string::npos) {
    const std::string sibling = beside.substr(0, slash + 1) + name;
    if (IsExecutable(sibling)) return sibling;
  }
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
      std::string candidate = absl::StrCat(dir, "/", name);
      if (IsExecutable(candidate)) return candidate;
    }
  }
  const std::string usr = "/usr/bin/" + name;
  return IsExecutable(usr) ? usr : "";
}

absl::StatusOr<std::string> MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = absl::StrCat(tmp != nullptr && tmp[0] != '\0' ? tmp : "/tmp", "/", prefix, ".XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  return tmpl;
}

namespace {

// A port that was free a moment ago.
absl::StatusOr<int> PickFreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  struct sockaddr_in addr {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("binding a loopback port: ", std::strerror(err)));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool Pings(int port) {
  struct timeval tv = {0, 200'000};
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, tv);
  bool ok = false;
  if (c != nullptr && c->err == 0) {
    redisSetTimeout(c, tv);
    auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
    ok = r != nullptr;  // any reply, NOAUTH included (servers started with --requirepass)
    if (r != nullptr) freeReplyObject(r);
  }
  if (c != nullptr) redisFree(c);
  return ok;
}

std::string TailOfFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return "";
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return text.size() > 600 ? text.substr(text.size() - 600) : text;
}

}  // namespace

std::string LocalRedisServer::FindRedisServer() {
  return FindRedisProgram("ICAE_REDIS_SERVER", "redis-server");
}

LocalRedisServer::LocalRedisServer(LocalRedisOptions options, std::string dir)
    : options_(std::move(options)), dir_(std::move(dir)) {}

absl::StatusOr<std::unique_ptr<LocalRedisServer>> LocalRedisServer::Start(
    const LocalRedisOptions& options) {
  LocalRedisOptions opt = options;
  if (opt.binary.empty()) opt.binary = FindRedisServer();
  if (opt.binary.empty() || !IsExecutable(opt.binary)) {
    return absl::NotFoundError(
        "redis-server not found (install the redis-server package, or set ICAE_REDIS_SERVER)");
  }
  ASSIGN_OR_RETURN(std::string dir, MakeTempDir("icae-redis"));
  std::unique_ptr<LocalRedisServer> server(new LocalRedisServer(std::move(opt), dir));
  absl::Status last;
  for (int attempt = 0; attempt < 5; ++attempt) {
    absl::StatusOr<int> port = PickFreePort();
    if (!port.ok()) return port.status();
    if (server->options_.cluster) {
      absl::StatusOr<int> bus = PickFreePort();
      if (!bus.ok()) return bus.status();
      if (*bus == *port) continue;
      server->bus_port_ = *bus;
    }
    last = server->Spawn(*port);
    if (last.ok()) return server;
  }
  return last;
}

absl::Status LocalRedisServer::Spawn(int port) {
  const std::string log = dir_ + "/redis.log";
  std::vector<std::string> args = {options_.binary,
                                   "--port", std::to_string(port),
                                   "--bind", "127.0.0.1",
                                   "--dir", dir_,
                                   "--save", "",
                                   "--appendonly", "no",
                                   "--daemonize", "no",
                                   "--logfile", log,
                                   "--loglevel", "warning",
                                   "--maxmemory-policy", options_.maxmemory_policy};
  if (!options_.maxmemory.empty()) {
    args.push_back("--maxmemory");
    args.push_back(options_.maxmemory);
  }
  if (options_.cluster) {
    for (const char* a : {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"}) {
      args.push_back(a);
    }
    args.push_back("--cluster-port");
    args.push_back(std::to_string(bus_port_));
    args.push_back("--cluster-node-timeout");
    args.push_back(std::to_string(absl::ToInt64Milliseconds(options_.cluster_node_timeout)));
  }
  for (const auto& a : options_.extra_args) args.push_back(a);
  // Everything the child needs is built before fork: only async-signal-safe calls after it.
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  pid_ = pid;
  port_ = port;
  const absl::Time deadline = absl::Now() + options_.start_timeout;
  while (absl::Now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::UnavailableError(absl::StrCat("redis-server exited at start-up on port ",
                                                 port, ": ", TailOfFile(log)));
    }
    if (Pings(port)) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(10));
  }
  Kill();
  return absl::DeadlineExceededError(absl::StrCat("redis-server did not answer within ",
                                                  absl::FormatDuration(options_.start_timeout)));
}

std::string LocalRedisServer::Uri(std::string_view params) const {
  return absl::StrCat("redis://127.0.0.1:", port_, "/0", params.empty() ? "" : "?", ToAbsl(params));
}

namespace {
std::string ReplyText(const redisReply* r) {
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      return std::to_string(r->integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY: {
      std::string out;
      for (size_t i = 0; i < r->elements; ++i) {
        if (i > 0) out += "\n";
        out += ReplyText(r->element[i]);
      }
      return out;
    }
    default:
      return std::string(r->str, r->len);
  }
}
}  // namespace

absl::StatusOr<std::string> LocalRedisServer::Call(const std::vector<std::string>& argv) const {
  struct timeval tv = {5, 0};
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
  if (c == nullptr || c->err != 0) {
    std::string err = c != nullptr ? c->errstr : "out of memory";
    if (c != nullptr) redisFree(c);
    return absl::UnavailableError(absl::StrCat("connecting to local redis: ", err));
  }
  redisSetTimeout(c, tv);
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  for (const auto& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data()));
  absl::StatusOr<std::string> out;
  if (r == nullptr) {
    out = absl::UnavailableError(absl::StrCat("local redis: ", c->errstr));
  } else if (r->type == REDIS_REPLY_ERROR) {
    out = absl::InternalError(std::string(r->str, r->len));
  } else {
    out = ReplyText(r);
  }
  if (r != nullptr) freeReplyObject(r);
  redisFree(c);
  return out;
}

void LocalRedisServer::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

absl::Status LocalRedisServer::Restart() {
  Kill();
  return Spawn(port_);
}

void LocalRedisServer::Pause() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void LocalRedisServer::Resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

LocalRedisServer::~LocalRedisServer() {
  Kill();
  // The folder holds only what redis wrote (its log; no dumps with --save "").
  if (DIR* d = ::opendir(dir_.c_str())) {
    while (struct dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
        ::unlink((dir_ + "/" + e->d_name).c_str());
      }
    }
    ::closedir(d);
  }
  ::rmdir(dir_.c_str());
}

}  // namespace icae::slot_store
