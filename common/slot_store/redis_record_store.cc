#include "common/slot_store/redis_record_store.h"

#include <hiredis/hiredis.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/slot_store/absl_compat.h"
#include "common/slot_store/slot_id.h"
#include "common/util/status_macros.h"

namespace icae::slot_store::internal {

absl::Status TakeRedisClientOptions(const StoreUri& uri, UriParams* params,
                                    RedisClientOptions* opt) {
  if (!uri.userinfo.empty()) {
    const size_t colon = uri.userinfo.find(':');
    if (colon == std::string::npos) {
      opt->password = uri.userinfo;  // redis://password@host, as some clients accept
    } else {
      opt->user = uri.userinfo.substr(0, colon);
      opt->password = uri.userinfo.substr(colon + 1);
    }
  }
  ASSIGN_OR_RETURN(opt->default_ttl, params->TakeDuration("ttl", opt->default_ttl));
  ASSIGN_OR_RETURN(int64_t timeout_ms, params->TakeInt("timeout_ms", 1000, 1, 3'600'000));
  opt->timeout = absl::Milliseconds(timeout_ms);
  ASSIGN_OR_RETURN(int64_t pool, params->TakeInt("pool", opt->pool_size, 1, 1024));
  opt->pool_size = static_cast<int>(pool);
  opt->key_prefix = params->TakeString("prefix", opt->key_prefix);
  ASSIGN_OR_RETURN(opt->max_record_bytes,
                   params->TakeBytes("max_record_bytes", opt->max_record_bytes, 1));
  ASSIGN_OR_RETURN(int64_t backoff_ms, params->TakeInt("backoff_ms", 200, 0, 600'000));
  opt->reconnect_backoff = absl::Milliseconds(backoff_ms);
  return absl::OkStatus();
}

absl::Status ValidateRedisClientOptions(const RedisClientOptions& options) {
  if (options.pool_size < 1) return absl::InvalidArgumentError("redis pool must be >= 1");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("redis timeout must be > 0");
  }
  if (options.max_record_bytes == 0) {
    return absl::InvalidArgumentError("redis max_record_bytes must be > 0");
  }
  if (options.reconnect_backoff < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("redis backoff must be >= 0");
  }
  return absl::OkStatus();
}

RedisNodeOptions NodeOptionsFor(const RedisClientOptions& client, std::string host, int port) {
  RedisNodeOptions n;
  n.host = std::move(host);
  n.port = port;
  n.user = client.user;
  n.password = client.password;
  n.pool_size = client.pool_size;
  n.reconnect_backoff = client.reconnect_backoff;
  return n;
}

RedisRecordStore::RedisRecordStore(const RedisClientOptions& options)
    : key_prefix_(options.key_prefix),
      max_record_bytes_(options.max_record_bytes),
      default_ttl_(options.default_ttl) {}

absl::Status RedisRecordStore::Put(std::string_view id, std::string_view record,
                                   absl::Duration ttl) {
  RETURN_IF_ERROR(internal::CheckPut(id, record, ttl, max_record_bytes_, UINT64_MAX));
  const absl::Time now = absl::Now();
  const absl::Time expires = internal::ExpiryFor(ttl, default_ttl_, now);
  const std::string key = Key(id);
  RedisCommand argv = {"SET", key, record};
  std::string ms;
  if (expires != absl::InfiniteFuture()) {
    ms = std::to_string(std::max<int64_t>(
        1, absl::ToInt64Milliseconds(absl::Ceil(expires - now, absl::Milliseconds(1)))));
    argv.push_back("PX");
    argv.push_back(ms);
  }
  ASSIGN_OR_RETURN(RedisReply reply, RunOnKey(argv, Access::kWrite));
  if (reply.is_error()) return RedisErrorStatus(reply, "SET");
  return absl::OkStatus();
}

absl::StatusOr<RecordBytes> RedisRecordStore::Get(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  const std::string key = Key(id);
  ASSIGN_OR_RETURN(RedisReply reply, RunOnKey({"GET", key}, Access::kRead));
  const redisReply* r = reply.get();
  if (r->type == REDIS_REPLY_NIL) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.misses;
    return absl::NotFoundError(absl::StrCat("slot ", ToAbsl(id), " not in redis"));
  }
  if (r->type == REDIS_REPLY_ERROR) return RedisErrorStatus(reply, "GET");
  if (r->type != REDIS_REPLY_STRING) {
    return absl::InternalError(absl::StrCat("redis GET ", key, ": unexpected reply type ", r->type));
  }
  if (r->len > max_record_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat("slot ", ToAbsl(id), " is ", r->len,
                                                     " bytes, over max_record_bytes ",
                                                     max_record_bytes_));
  }
  auto bytes = std::make_shared<const std::string>(r->str, r->len);
  reply.reset();  // free hiredis's copy before verifying ours
  if (absl::Status s = VerifySlotRecord(*bytes); !s.ok()) {
    // Remove it so the next reader gets NOT_FOUND and re-encodes; best effort.
    (void)RunOnKey({"DEL", key}, Access::kWrite);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.corrupt;
    return absl::DataLossError(
        absl::StrCat("slot ", ToAbsl(id), " in redis is corrupt (", s.message(), "); removed"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.hits;
  return RecordBytes(std::move(bytes));
}

absl::StatusOr<bool> RedisRecordStore::Contains(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  const std::string key = Key(id);
  ASSIGN_OR_RETURN(RedisReply reply, RunOnKey({"EXISTS", key}, Access::kRead));
  if (reply.is_error()) return RedisErrorStatus(reply, "EXISTS");
  return reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
}

absl::Status RedisRecordStore::Delete(std::string_view id) {
  RETURN_IF_ERROR(ValidateSlotId(id));
  const std::string key = Key(id);
  ASSIGN_OR_RETURN(RedisReply reply, RunOnKey({"DEL", key}, Access::kWrite));
  if (reply.is_error()) return RedisErrorStatus(reply, "DEL");
  return absl::OkStatus();
}

SlotStoreStats RedisRecordStore::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SlotStoreStats s = stats_;
  s.entries = -1;
  s.bytes = -1;
  return s;
}

}  // namespace icae::slot_store::internal
