#include "common/slot_store/redis_store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace icae::slot_store {

namespace {

RedisNodeOptions NodeOptions(const RedisStoreOptions& o) {
  RedisNodeOptions n = internal::NodeOptionsFor(o, o.host, o.port);
  n.db = o.db;
  return n;
}

}  // namespace

RedisSlotStore::RedisSlotStore(const RedisStoreOptions& options)
    : RedisRecordStore(options), options_(options), pool_(NodeOptions(options)) {}

RedisSlotStore::~RedisSlotStore() = default;

absl::StatusOr<std::unique_ptr<RedisSlotStore>> RedisSlotStore::Create(
    const RedisStoreOptions& options) {
  if (options.host.empty()) return absl::InvalidArgumentError("redis store needs a host");
  if (options.port < 1 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("redis port must be 1..65535, got ", options.port));
  }
  if (options.db < 0) return absl::InvalidArgumentError("redis db must be >= 0");
  RETURN_IF_ERROR(internal::ValidateRedisClientOptions(options));
  return std::unique_ptr<RedisSlotStore>(new RedisSlotStore(options));
}

absl::StatusOr<std::unique_ptr<RedisSlotStore>> RedisSlotStore::FromUri(const StoreUri& uri) {
  RedisStoreOptions opt;
  if (uri.host.empty()) {
    return absl::InvalidArgumentError("redis:// needs a host: redis://host:port/db");
  }
  if (uri.endpoints.size() > 1) {
    return absl::InvalidArgumentError(
        "redis:// takes one host:port; for several nodes use redis-cluster://h1:p1,h2:p2");
  }
  opt.host = uri.host;
  if (uri.port != -1) opt.port = uri.port;
  if (!uri.path.empty() && uri.path != "/") {
    if (!absl::SimpleAtoi(absl::string_view(uri.path).substr(1), &opt.db) || opt.db < 0 ||
        uri.path.find_first_not_of("0123456789", 1) != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("redis:// path must be a database number, e.g. /0, got '", uri.path, "'"));
    }
  }
  UriParams params(uri);
  RETURN_IF_ERROR(internal::TakeRedisClientOptions(uri, &params, &opt));
  RETURN_IF_ERROR(params.Finish());
  return Create(opt);
}

absl::StatusOr<RedisReply> RedisSlotStore::RunOnKey(const RedisCommand& command, Access) {
  return pool_.Run(command, absl::Now() + options_.timeout, options_.timeout);
}

std::string RedisSlotStore::Describe() const {
  return absl::StrCat("redis://", options_.host, ":", options_.port, "/", options_.db);
}

}  // namespace icae::slot_store
