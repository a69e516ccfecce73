#include "common/slot_store/redis_connection.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/slot_store/absl_compat.h"
#include "common/util/status_macros.h"
#include "glog/logging.h"

namespace icae::slot_store {

RedisReply::RedisReply(void* reply) : r_(static_cast<redisReply*>(reply)) {}

void RedisReply::Free::operator()(redisReply* r) const { freeReplyObject(r); }

bool RedisReply::is_error() const { return r_ && r_->type == REDIS_REPLY_ERROR; }

std::string_view RedisReply::text() const {
  if (!r_ || (r_->type != REDIS_REPLY_STRING && r_->type != REDIS_REPLY_STATUS &&
              r_->type != REDIS_REPLY_ERROR)) {
    return {};
  }
  return {r_->str, r_->len};
}

absl::Status RedisErrorStatus(const RedisReply& reply, std::string_view what) {
  const absl::string_view msg = ToAbsl(reply.text());
  std::string text = absl::StrCat("redis ", ToAbsl(what), ": ", msg.substr(0, 200));
  if (absl::StartsWith(msg, "OOM")) return absl::ResourceExhaustedError(text);
  for (absl::string_view busy : {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"}) {
    if (absl::StartsWith(msg, busy)) return absl::UnavailableError(text);
  }
  for (absl::string_view auth : {"NOAUTH", "WRONGPASS", "NOPERM", "ERR invalid password"}) {
    if (absl::StartsWith(msg, auth)) return absl::FailedPreconditionError(text);
  }
  return absl::InternalError(text);
}

namespace {

struct timeval TimeoutTimeval(absl::Duration d) {
  d = std::max(d, absl::Milliseconds(1));
  struct timeval tv;
  tv.tv_sec = static_cast<time_t>(absl::ToInt64Seconds(d));
  tv.tv_usec = static_cast<suseconds_t>(absl::ToInt64Microseconds(d % absl::Seconds(1)));
  return tv;
}

// hiredis writes with write(2), so a peer that went away would raise SIGPIPE and kill the
// process; like gRPC servers do, ignore it (write then fails with EPIPE, which we handle).
// Only the default disposition is replaced: a handler someone installed is kept.
void IgnoreSigpipeOnce() {
  static const bool done = [] {
    struct sigaction old;
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL &&
        !(old.sa_flags & SA_SIGINFO)) {
      signal(SIGPIPE, SIG_IGN);
    }
    return true;
  }();
  (void)done;
}

void ToArgv(const RedisCommand& command, std::vector<const char*>* ptrs,
            std::vector<size_t>* lens) {
  ptrs->clear();
  lens->clear();
  for (auto a : command) {
    ptrs->push_back(a.data());
    lens->push_back(a.size());
  }
}

}  // namespace

struct RedisConnectionPool::Conn {
  explicit Conn(redisContext* c) : ctx(c) {}
  ~Conn() { redisFree(ctx); }
  redisContext* ctx;
  bool reused = false;  // came from the idle pool (may have died since)
};

RedisConnectionPool::RedisConnectionPool(const RedisNodeOptions& options) : options_(options) {
  IgnoreSigpipeOnce();
}

RedisConnectionPool::~RedisConnectionPool() = default;

std::string RedisConnectionPool::address() const {
  return absl::StrCat(options_.host, ":", options_.port);
}

absl::StatusOr<std::unique_ptr<RedisConnectionPool::Conn>> RedisConnectionPool::Connect(
    absl::Time deadline) {
  const struct timeval tv = TimeoutTimeval(deadline - absl::Now());
  redisContext* raw = redisConnectWithTimeout(options_.host.c_str(), options_.port, tv);
  if (raw == nullptr) return absl::ResourceExhaustedError("cannot allocate a redis context");
  auto conn = std::make_unique<Conn>(raw);
  if (raw->err != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", options_.name, ": ", raw->errstr));
  }
  redisSetTimeout(raw, tv);
  redisEnableKeepAlive(raw);
  auto setup = [&](const RedisCommand& argv, const char* what) -> absl::Status {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    ToArgv(argv, &ptrs, &lens);
    RedisReply reply(redisCommandArgv(raw, static_cast<int>(argv.size()), ptrs.data(), lens.data()));
    if (!reply.get()) {
      return absl::UnavailableError(
          absl::StrCat(options_.name, " failed during ", what, ": ", raw->errstr));
    }
    if (reply.is_error()) return RedisErrorStatus(reply, what);
    return absl::OkStatus();
  };
  if (!options_.password.empty()) {
    if (options_.user.empty()) {
      RETURN_IF_ERROR(setup({"AUTH", options_.password}, "AUTH"));
    } else {
      RETURN_IF_ERROR(setup({"AUTH", options_.user, options_.password}, "AUTH"));
    }
  }
  if (options_.db != 0) {
    const std::string db = std::to_string(options_.db);
    RETURN_IF_ERROR(setup({"SELECT", db}, "SELECT"));
  }
  return conn;
}

absl::StatusOr<std::unique_ptr<RedisConnectionPool::Conn>> RedisConnectionPool::Acquire(
    absl::Time deadline, bool fresh_only, absl::Duration budget) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (!fresh_only && !idle_.empty()) {
      std::unique_ptr<Conn> conn = std::move(idle_.back());
      idle_.pop_back();
      conn->reused = true;
      return conn;
    }
    if (fresh_only && !idle_.empty() && open_ >= options_.pool_size) {
      // Make room for the fresh connection; the idle ones are suspect anyway.
      std::unique_ptr<Conn> drop = std::move(idle_.back());
      idle_.pop_back();
      --open_;
      lock.unlock();
      drop.reset();
      lock.lock();
      continue;
    }
    if (open_ < options_.pool_size) {
      const absl::Time now = absl::Now();
      if (now < down_until_) {
        return absl::UnavailableError(absl::StrCat(
            last_error_, " (retrying in ", absl::FormatDuration(down_until_ - now), ")"));
      }
      ++open_;
      lock.unlock();
      absl::StatusOr<std::unique_ptr<Conn>> conn = Connect(deadline);
      lock.lock();
      if (!conn.ok()) {
        --open_;
        cv_.notify_one();
        if (absl::IsUnavailable(conn.status())) {
          down_until_ = absl::Now() + options_.reconnect_backoff;
          last_error_ = std::string(conn.status().message());
          if (!down_) LOG(WARNING) << "slot store: redis at " << address() << ": " << last_error_;
          down_ = true;
        }
        return conn.status();
      }
      if (down_) LOG(INFO) << "slot store: redis at " << address() << " is reachable again";
      down_ = false;
      return conn;
    }
    if (cv_.wait_until(lock, absl::ToChronoTime(deadline)) == std::cv_status::timeout) {
      return absl::UnavailableError(absl::StrCat("all ", options_.pool_size, " connections to ",
                                                 options_.name, " stayed busy for ",
                                                 absl::FormatDuration(budget)));
    }
  }
}

void RedisConnectionPool::Release(std::unique_ptr<Conn> conn, bool healthy) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (healthy) {
      idle_.push_back(std::move(conn));
    } else {
      --open_;
    }
    cv_.notify_one();
  }
  // `conn` (when unhealthy) closes here, outside the lock.
}

absl::StatusOr<RedisReply> RedisConnectionPool::Run(const RedisCommand& command,
                                                    absl::Time deadline, absl::Duration budget) {
  ASSIGN_OR_RETURN(std::vector<RedisReply> replies, RunPipeline({command}, deadline, budget));
  return std::move(replies[0]);
}

absl::StatusOr<std::vector<RedisReply>> RedisConnectionPool::RunPipeline(
    const std::vector<RedisCommand>& commands, absl::Time deadline, absl::Duration budget) {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  bool fresh_only = false;
  while (true) {
    ASSIGN_OR_RETURN(std::unique_ptr<Conn> conn, Acquire(deadline, fresh_only, budget));
    // The commands get what is left of the operation's budget.
    redisSetTimeout(conn->ctx, TimeoutTimeval(deadline - absl::Now()));
    for (const RedisCommand& c : commands) {
      ToArgv(c, &ptrs, &lens);
      if (redisAppendCommandArgv(conn->ctx, static_cast<int>(c.size()), ptrs.data(),
                                 lens.data()) != REDIS_OK) {
        Release(std::move(conn), false);
        return absl::ResourceExhaustedError("cannot buffer a redis command");
      }
    }
    std::vector<RedisReply> replies;
    replies.reserve(commands.size());
    errno = 0;
    while (replies.size() < commands.size()) {
      void* raw = nullptr;
      if (redisGetReply(conn->ctx, &raw) != REDIS_OK || raw == nullptr) break;
      replies.emplace_back(raw);
    }
    const int saved_errno = errno;
    if (replies.size() == commands.size()) {
      Release(std::move(conn), true);
      return replies;
    }
    const bool timed_out = conn->ctx->err == REDIS_ERR_IO &&
                           (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK);
    const std::string error = conn->ctx->errstr;
    const bool reused = conn->reused;
    Release(std::move(conn), false);
    if (!timed_out) {
      // The server went away: the idle connections point at it too.
      std::vector<std::unique_ptr<Conn>> stale;
      {
        std::lock_guard<std::mutex> lock(mu_);
        stale.swap(idle_);
        open_ -= static_cast<int>(stale.size());
        cv_.notify_all();
      }
      if (reused && !fresh_only && absl::Now() < deadline) {
        fresh_only = true;  // one retry, on a new connection
        continue;
      }
    }
    LOG_EVERY_N(WARNING, 100) << "slot store: redis at " << address()
                              << (timed_out ? " timed out" : " failed: ")
                              << (timed_out ? "" : error);
    return absl::UnavailableError(absl::StrCat(
        options_.name, " ",
        timed_out ? absl::StrCat("did not answer within ", absl::FormatDuration(budget))
                  : absl::StrCat("failed: ", error)));
  }
}

}  // namespace icae::slot_store
