#include "common/slot_store/redis_store.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <chrono>
#include <climits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/slot_store/slot_id.h"
#include "common/slot_store/absl_compat.h"
#include "common/util/status_macros.h"
#include "glog/logging.h"

namespace icae::slot_store {

struct RedisSlotStore::Conn {
  explicit Conn(redisContext* c) : ctx(c) {}
  ~Conn() { redisFree(ctx); }
  redisContext* ctx;
  bool reused = false;  // came from the idle pool (may have died since)
};

struct RedisSlotStore::Reply {
  explicit Reply(void* p) : r(static_cast<redisReply*>(p)) {}
  struct Free {
    void operator()(redisReply* r) const { freeReplyObject(r); }
  };
  std::unique_ptr<redisReply, Free> r;
};

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

absl::Status ErrorReply(const redisReply* r, absl::string_view what) {
  absl::string_view msg(r->str, r->len);
  std::string text = absl::StrCat("redis ", what, ": ", msg.substr(0, 200));
  if (absl::StartsWith(msg, "OOM")) return absl::ResourceExhaustedError(text);
  for (absl::string_view busy : {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"}) {
    if (absl::StartsWith(msg, busy)) return absl::UnavailableError(text);
  }
  for (absl::string_view auth : {"NOAUTH", "WRONGPASS", "NOPERM", "ERR invalid password"}) {
    if (absl::StartsWith(msg, auth)) return absl::FailedPreconditionError(text);
  }
  return absl::InternalError(text);
}

}  // namespace

RedisSlotStore::RedisSlotStore(const RedisStoreOptions& options) : options_(options) {}

RedisSlotStore::~RedisSlotStore() = default;

absl::StatusOr<std::unique_ptr<RedisSlotStore>> RedisSlotStore::Create(
    const RedisStoreOptions& options) {
  if (options.host.empty()) return absl::InvalidArgumentError("redis store needs a host");
  if (options.port < 1 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("redis port must be 1..65535, got ", options.port));
  }
  if (options.db < 0) return absl::InvalidArgumentError("redis db must be >= 0");
  if (options.pool_size < 1) return absl::InvalidArgumentError("redis pool must be >= 1");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("redis timeout must be > 0");
  }
  if (options.max_record_bytes == 0) {
    return absl::InvalidArgumentError("redis max_record_bytes must be > 0");
  }
  IgnoreSigpipeOnce();
  return std::unique_ptr<RedisSlotStore>(new RedisSlotStore(options));
}

absl::StatusOr<std::unique_ptr<RedisSlotStore>> RedisSlotStore::FromUri(const StoreUri& uri) {
  RedisStoreOptions opt;
  if (uri.host.empty()) {
    return absl::InvalidArgumentError("redis:// needs a host: redis://host:port/db");
  }
  opt.host = uri.host;
  if (uri.port != -1) opt.port = uri.port;
  if (!uri.userinfo.empty()) {
    const size_t colon = uri.userinfo.find(':');
    if (colon == std::string::npos) {
      opt.password = uri.userinfo;  // redis://password@host, as some clients accept
    } else {
      opt.user = uri.userinfo.substr(0, colon);
      opt.password = uri.userinfo.substr(colon + 1);
    }
  }
  if (!uri.path.empty() && uri.path != "/") {
    if (!absl::SimpleAtoi(absl::string_view(uri.path).substr(1), &opt.db) || opt.db < 0 ||
        uri.path.find_first_not_of("0123456789", 1) != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("redis:// path must be a database number, e.g. /0, got '", uri.path, "'"));
    }
  }
  UriParams params(uri);
  ASSIGN_OR_RETURN(opt.default_ttl, params.TakeDuration("ttl", opt.default_ttl));
  ASSIGN_OR_RETURN(int64_t timeout_ms, params.TakeInt("timeout_ms", 1000, 1, 3'600'000));
  opt.timeout = absl::Milliseconds(timeout_ms);
  ASSIGN_OR_RETURN(int64_t pool, params.TakeInt("pool", opt.pool_size, 1, 1024));
  opt.pool_size = static_cast<int>(pool);
  opt.key_prefix = params.TakeString("prefix", opt.key_prefix);
  ASSIGN_OR_RETURN(opt.max_record_bytes,
                   params.TakeBytes("max_record_bytes", opt.max_record_bytes, 1));
  ASSIGN_OR_RETURN(int64_t backoff_ms, params.TakeInt("backoff_ms", 200, 0, 600'000));
  opt.reconnect_backoff = absl::Milliseconds(backoff_ms);
  RETURN_IF_ERROR(params.Finish());
  return Create(opt);
}

absl::StatusOr<std::unique_ptr<RedisSlotStore::Conn>> RedisSlotStore::Connect(absl::Time deadline) {
  // Status messages reach clients: they name the store, not its address (that goes to the log
  // where the store is reported down).
  const struct timeval tv = TimeoutTimeval(deadline - absl::Now());
  redisContext* raw = redisConnectWithTimeout(options_.host.c_str(), options_.port, tv);
  if (raw == nullptr) return absl::ResourceExhaustedError("cannot allocate a redis context");
  auto conn = std::make_unique<Conn>(raw);
  if (raw->err != 0) {
    return absl::UnavailableError(absl::StrCat("cannot connect to the redis slot store: ", raw->errstr));
  }
  redisSetTimeout(raw, tv);
  redisEnableKeepAlive(raw);
  auto setup = [&](std::vector<std::string_view> argv, const char* what) -> absl::Status {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (auto a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply reply(redisCommandArgv(raw, static_cast<int>(argv.size()), ptrs.data(), lens.data()));
    if (!reply.r) {
      return absl::UnavailableError(
          absl::StrCat("the redis slot store failed during ", what, ": ", raw->errstr));
    }
    if (reply.r->type == REDIS_REPLY_ERROR) return ErrorReply(reply.r.get(), what);
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

absl::StatusOr<std::unique_ptr<RedisSlotStore::Conn>> RedisSlotStore::Acquire(absl::Time deadline,
                                                                              bool fresh_only) {
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
          if (!down_) {
            LOG(WARNING) << "slot store: redis at " << options_.host << ":" << options_.port << ": "
                         << last_error_;
          }
          down_ = true;
        }
        return conn.status();
      }
      if (down_) LOG(INFO) << "slot store: redis at " << options_.host << ":" << options_.port
                           << " is reachable again";
      down_ = false;
      return conn;
    }
    if (cv_.wait_until(lock, absl::ToChronoTime(deadline)) == std::cv_status::timeout) {
      return absl::UnavailableError(
          absl::StrCat("all ", options_.pool_size, " redis connections stayed busy for ",
                       absl::FormatDuration(options_.timeout)));
    }
  }
}

void RedisSlotStore::Release(std::unique_ptr<Conn> conn, bool healthy) {
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

absl::StatusOr<RedisSlotStore::Reply> RedisSlotStore::Run(const std::vector<std::string_view>& argv) {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (auto a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  const absl::Time deadline = absl::Now() + options_.timeout;
  bool fresh_only = false;
  while (true) {
    ASSIGN_OR_RETURN(std::unique_ptr<Conn> conn, Acquire(deadline, fresh_only));
    // The command gets what is left of the operation's budget.
    redisSetTimeout(conn->ctx, TimeoutTimeval(deadline - absl::Now()));
    errno = 0;
    auto* raw = static_cast<redisReply*>(
        redisCommandArgv(conn->ctx, static_cast<int>(argv.size()), ptrs.data(), lens.data()));
    const int saved_errno = errno;
    if (raw != nullptr) {
      Release(std::move(conn), true);
      return Reply(raw);
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
    LOG_EVERY_N(WARNING, 100) << "slot store: redis at " << options_.host << ":" << options_.port
                              << (timed_out ? " timed out" : " failed: ") << (timed_out ? "" : error);
    return absl::UnavailableError(absl::StrCat(
        "the redis slot store ",
        timed_out ? absl::StrCat("did not answer within ", absl::FormatDuration(options_.timeout))
                  : absl::StrCat("failed: ", error)));
  }
}

absl::Status RedisSlotStore::Put(std::string_view id, std::string_view record,
                                 absl::Duration ttl) {
  RETURN_IF_ERROR(internal::CheckPut(id, record, ttl, options_.max_record_bytes, UINT64_MAX));
  const absl::Time now = absl::Now();
  const absl::Time expires = internal::ExpiryFor(ttl, options_.default_ttl, now);
  const std::string key = Key(id);
  std::vector<std::string_view> argv = {"SET", key, record};
  std::string ms;
  if (expires != absl::InfiniteFuture()) {
    ms = std::to_string(std::max<int64_t>(1, absl::ToInt64Milliseconds(absl::Ceil(
                                                 expires - now, absl::Milliseconds(1)))));
    argv.push_back("PX");
    argv.push_back(ms);
  }
  ASSIGN_OR_RETURN(Reply reply, Run(argv));
  if (reply.r->type == REDIS_REPLY_ERROR) return ErrorReply(reply.r.get(), "SET");
  return absl::OkStatus();
}

absl::StatusOr<RecordBytes> RedisSlotStore::Get(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  const std::string key = Key(id);
  ASSIGN_OR_RETURN(Reply reply, Run({"GET", key}));
  const redisReply* r = reply.r.get();
  if (r->type == REDIS_REPLY_NIL) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.misses;
    return absl::NotFoundError(absl::StrCat("slot ", ToAbsl(id), " not in redis"));
  }
  if (r->type == REDIS_REPLY_ERROR) return ErrorReply(r, "GET");
  if (r->type != REDIS_REPLY_STRING) {
    return absl::InternalError(absl::StrCat("redis GET ", key, ": unexpected reply type ", r->type));
  }
  if (r->len > options_.max_record_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("slot ", ToAbsl(id), " is ", r->len,
                                                     " bytes, over max_record_bytes ",
                                                     options_.max_record_bytes));
  }
  auto bytes = std::make_shared<const std::string>(r->str, r->len);
  reply.r.reset();  // free hiredis's copy before verifying ours
  if (absl::Status s = VerifySlotRecord(*bytes); !s.ok()) {
    // Remove it so the next reader gets NOT_FOUND and re-encodes; best effort.
    (void)Run({"DEL", key});
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.corrupt;
    return absl::DataLossError(
        absl::StrCat("slot ", ToAbsl(id), " in redis is corrupt (", s.message(), "); removed"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.hits;
  return RecordBytes(std::move(bytes));
}

absl::StatusOr<bool> RedisSlotStore::Contains(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  const std::string key = Key(id);
  ASSIGN_OR_RETURN(Reply reply, Run({"EXISTS", key}));
  if (reply.r->type == REDIS_REPLY_ERROR) return ErrorReply(reply.r.get(), "EXISTS");
  return reply.r->type == REDIS_REPLY_INTEGER && reply.r->integer > 0;
}

absl::Status RedisSlotStore::Delete(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  const std::string key = Key(id);
  ASSIGN_OR_RETURN(Reply reply, Run({"DEL", key}));
  if (reply.r->type == REDIS_REPLY_ERROR) return ErrorReply(reply.r.get(), "DEL");
  return absl::OkStatus();
}

SlotStoreStats RedisSlotStore::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SlotStoreStats s = stats_;
  s.entries = -1;
  s.bytes = -1;
  return s;
}

std::string RedisSlotStore::Describe() const {
  return absl::StrCat("redis://", options_.host, ":", options_.port, "/", options_.db);
}

}  // namespace icae::slot_store
