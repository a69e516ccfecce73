#include "common/slot_store/redis_cluster_store.h"

#include <hiredis/hiredis.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/slot_store/absl_compat.h"
#include "common/slot_store/redis_hash_slot.h"
#include "common/util/status_macros.h"
#include "glog/logging.h"

namespace icae::slot_store {
namespace {

constexpr int kDefaultPort = 6379;

struct Redirect {
  bool ask = false;
  int slot = -1;
  std::string host;  // empty: the node that answered
  int port = 0;
};

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381" (the host may be empty: same host as
// the node that answered; IPv6 hosts hold colons, so the port follows the last one).
bool ParseRedirect(std::string_view text, Redirect* out) {
  std::vector<absl::string_view> parts = absl::StrSplit(ToAbsl(text), ' ');
  if (parts.size() != 3 || (parts[0] != "MOVED" && parts[0] != "ASK")) return false;
  out->ask = parts[0] == "ASK";
  const size_t colon = parts[2].rfind(':');
  if (colon == absl::string_view::npos) return false;
  if (!absl::SimpleAtoi(parts[1], &out->slot) || out->slot < 0 ||
      out->slot >= kRedisClusterSlots) {
    return false;
  }
  if (!absl::SimpleAtoi(parts[2].substr(colon + 1), &out->port) || out->port < 1 ||
      out->port > 65535) {
    return false;
  }
  out->host = std::string(parts[2].substr(0, colon));
  return true;
}

std::string EndpointText(const StoreEndpoint& e) {
  const int port = e.port == -1 ? kDefaultPort : e.port;
  if (e.host.find(':') != std::string::npos) return absl::StrCat("[", e.host, "]:", port);
  return absl::StrCat(e.host, ":", port);
}

}  // namespace

RedisClusterSlotStore::RedisClusterSlotStore(const RedisClusterStoreOptions& options)
    : RedisRecordStore(options), options_(options), slot_owner_(kRedisClusterSlots, -1) {}

RedisClusterSlotStore::~RedisClusterSlotStore() = default;

absl::StatusOr<std::unique_ptr<RedisClusterSlotStore>> RedisClusterSlotStore::Create(
    const RedisClusterStoreOptions& options) {
  if (options.seeds.empty()) {
    return absl::InvalidArgumentError("redis-cluster store needs at least one host:port");
  }
  for (const StoreEndpoint& e : options.seeds) {
    if (e.host.empty()) return absl::InvalidArgumentError("redis-cluster seed without a host");
    if (e.port != -1 && (e.port < 1 || e.port > 65535)) {
      return absl::InvalidArgumentError(
          absl::StrCat("redis-cluster port must be 1..65535, got ", e.port));
    }
  }
  if (options.wait_replicas < 0 || options.wait_replicas > kMaxWaitReplicas) {
    return absl::InvalidArgumentError(absl::StrCat("redis-cluster wait_replicas must be 0..",
                                                   kMaxWaitReplicas, ", got ",
                                                   options.wait_replicas));
  }
  if (options.max_redirects < 0 || options.max_redirects > kMaxRedirectsLimit) {
    return absl::InvalidArgumentError(absl::StrCat("redis-cluster max_redirects must be 0..",
                                                   kMaxRedirectsLimit, ", got ",
                                                   options.max_redirects));
  }
  RETURN_IF_ERROR(internal::ValidateRedisClientOptions(options));
  return std::unique_ptr<RedisClusterSlotStore>(new RedisClusterSlotStore(options));
}

absl::StatusOr<std::unique_ptr<RedisClusterSlotStore>> RedisClusterSlotStore::FromUri(
    const StoreUri& uri) {
  RedisClusterStoreOptions opt;
  if (uri.endpoints.empty()) {
    return absl::InvalidArgumentError(
        "redis-cluster:// needs at least one node: redis-cluster://host:port[,host:port...]");
  }
  opt.seeds = uri.endpoints;
  // A cluster has database 0 only; accept the spellings of "no database".
  if (!uri.path.empty() && uri.path != "/" && uri.path != "/0") {
    return absl::InvalidArgumentError(absl::StrCat(
        "redis-cluster:// has no databases (only /0), got path '", uri.path, "'"));
  }
  UriParams params(uri);
  RETURN_IF_ERROR(internal::TakeRedisClientOptions(uri, &params, &opt));
  ASSIGN_OR_RETURN(int64_t wait, params.TakeInt("wait_replicas", 0, 0, kMaxWaitReplicas));
  opt.wait_replicas = static_cast<int>(wait);
  ASSIGN_OR_RETURN(int64_t redirects,
                   params.TakeInt("max_redirects", opt.max_redirects, 0, kMaxRedirectsLimit));
  opt.max_redirects = static_cast<int>(redirects);
  RETURN_IF_ERROR(params.Finish());
  return Create(opt);
}

std::string RedisClusterSlotStore::Describe() const {
  std::vector<std::string> seeds;
  for (const StoreEndpoint& e : options_.seeds) seeds.push_back(EndpointText(e));
  std::string out = absl::StrCat("redis-cluster://", absl::StrJoin(seeds, ","));
  if (options_.wait_replicas > 0) absl::StrAppend(&out, "?wait_replicas=", options_.wait_replicas);
  return out;
}

RedisClusterSlotStore::ClusterCounters RedisClusterSlotStore::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  ClusterCounters c = counters_;
  c.nodes = static_cast<int64_t>(nodes_.size());
  return c;
}

RedisClusterSlotStore::Pool RedisClusterSlotStore::PoolFor(const std::string& host, int port) {
  const std::string key = absl::StrCat(host, ":", port);
  if (auto it = node_index_.find(key); it != node_index_.end()) return nodes_[it->second];
  RedisNodeOptions node = internal::NodeOptionsFor(options_, host, port);
  node.name = "the redis cluster slot store";
  nodes_.push_back(std::make_shared<RedisConnectionPool>(node));
  node_index_[key] = static_cast<int>(nodes_.size()) - 1;
  return nodes_.back();
}

RedisClusterSlotStore::Pool RedisClusterSlotStore::Owner(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  const int i = slot_owner_[slot];
  return i < 0 ? nullptr : nodes_[i];
}

void RedisClusterSlotStore::MarkStale() {
  std::lock_guard<std::mutex> lock(mu_);
  stale_ = true;
}

absl::Status RedisClusterSlotStore::RefreshMapIfStale(absl::Time deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stale_) return absl::OkStatus();
  }
  std::lock_guard<std::mutex> refresh(refresh_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stale_) return absl::OkStatus();  // another thread just refreshed it
    const absl::Time now = absl::Now();
    if (now < last_refresh_ + options_.reconnect_backoff) {
      if (last_refresh_status_.ok()) return absl::OkStatus();
      return absl::Status(
          last_refresh_status_.code(),
          absl::StrCat(last_refresh_status_.message(), " (retrying in ",
                       absl::FormatDuration(last_refresh_ + options_.reconnect_backoff - now),
                       ")"));
    }
    last_refresh_ = now;
  }
  absl::Status s = RefreshMap(deadline);
  std::lock_guard<std::mutex> lock(mu_);
  last_refresh_status_ = s;
  return s;
}

absl::Status RedisClusterSlotStore::RefreshMap(absl::Time deadline) {
  // Candidates: the masters of the current map first (they are up to date), then every other
  // node seen, then the seeds.
  std::vector<Pool> candidates;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<bool> owner(nodes_.size(), false);
    for (int i : slot_owner_) {
      if (i >= 0) owner[i] = true;
    }
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (owner[i]) candidates.push_back(nodes_[i]);
    }
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (!owner[i]) candidates.push_back(nodes_[i]);
    }
    for (const StoreEndpoint& e : options_.seeds) {
      Pool p = PoolFor(e.host, e.port == -1 ? kDefaultPort : e.port);
      if (std::find(candidates.begin(), candidates.end(), p) == candidates.end()) {
        candidates.push_back(p);
      }
    }
  }
  absl::Status last = absl::UnavailableError("no redis cluster node to ask for the slot map");
  for (const Pool& node : candidates) {
    if (absl::Now() >= deadline) break;
    absl::StatusOr<RedisReply> reply = node->Run({"CLUSTER", "SLOTS"}, deadline, options_.timeout);
    if (!reply.ok()) {
      last = reply.status();
      continue;
    }
    if (reply->is_error()) {
      last = RedisErrorStatus(*reply, "CLUSTER SLOTS");
      // Not a cluster node, or refused: say so rather than treating it as an outage.
      if (!absl::IsUnavailable(last)) return last;
      continue;
    }
    absl::Status parsed = ParseSlots(*reply, node->options().host);
    if (parsed.ok()) return parsed;
    last = parsed;
  }
  return absl::UnavailableError(
      absl::StrCat("cannot read the redis cluster's slot map: ", last.message()));
}

absl::Status RedisClusterSlotStore::ParseSlots(const RedisReply& reply,
                                               const std::string& asked_host) {
  const redisReply* r = reply.get();
  if (r->type != REDIS_REPLY_ARRAY) {
    return absl::InternalError("CLUSTER SLOTS: unexpected reply type");
  }
  // Collect first, then swap in under the lock.
  struct Range {
    int start, end;
    std::string host;
    int port;
  };
  std::vector<Range> ranges;
  int covered = 0;
  for (size_t i = 0; i < r->elements; ++i) {
    const redisReply* e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_INTEGER ||
        e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2) {
      return absl::InternalError("CLUSTER SLOTS: malformed entry");
    }
    const long long start = e->element[0]->integer, end = e->element[1]->integer;
    const redisReply* master = e->element[2];
    if (start < 0 || end >= kRedisClusterSlots || start > end ||
        master->element[0]->type != REDIS_REPLY_STRING ||
        master->element[1]->type != REDIS_REPLY_INTEGER || master->element[1]->integer < 1 ||
        master->element[1]->integer > 65535) {
      return absl::InternalError("CLUSTER SLOTS: malformed range or node");
    }
    std::string host(master->element[0]->str, master->element[0]->len);
    if (host == "?") continue;  // the node does not know its master's address (yet)
    if (host.empty()) host = asked_host;  // "same address as the node you asked"
    ranges.push_back({static_cast<int>(start), static_cast<int>(end), std::move(host),
                      static_cast<int>(master->element[1]->integer)});
    covered += static_cast<int>(end - start + 1);
  }
  if (ranges.empty()) return absl::UnavailableError("the redis cluster serves no hash slots");
  std::lock_guard<std::mutex> lock(mu_);
  std::fill(slot_owner_.begin(), slot_owner_.end(), -1);
  for (const Range& range : ranges) {
    PoolFor(range.host, range.port);
    const int index = node_index_[absl::StrCat(range.host, ":", range.port)];
    std::fill(slot_owner_.begin() + range.start, slot_owner_.begin() + range.end + 1, index);
  }
  stale_ = covered < kRedisClusterSlots;  // a gap: ask again on a later operation
  ++counters_.map_refreshes;
  return absl::OkStatus();
}

absl::StatusOr<RedisReply> RedisClusterSlotStore::RunOnKey(const RedisCommand& command,
                                                           Access access) {
  const absl::Time deadline = absl::Now() + options_.timeout;
  const int slot = RedisHashSlot(command[1]);
  const bool wait = access == Access::kWrite && options_.wait_replicas > 0;
  const std::string wait_n = std::to_string(options_.wait_replicas);
  int redirects = 0;
  bool refreshed_after_failure = false;
  Pool ask_node;  // set while following an ASK
  std::string last_redirect;
  while (true) {
    Pool node = ask_node;
    if (!node) {
      absl::Status refreshed = RefreshMapIfStale(deadline);
      node = Owner(slot);
      if (!node) {
        if (!refreshed.ok()) return refreshed;
        MarkStale();
        return absl::UnavailableError(
            absl::StrCat("no node of the redis cluster serves hash slot ", slot));
      }
    }
    std::vector<RedisCommand> commands;
    if (ask_node) commands.push_back({"ASKING"});
    commands.push_back(command);
    std::string wait_ms;
    if (wait) {
      // WAIT gets most of what is left, so that its own answer (how many replicas confirmed)
      // still arrives before the socket deadline.
      const absl::Duration left = deadline - absl::Now();
      wait_ms = std::to_string(std::max<int64_t>(
          1, absl::ToInt64Milliseconds(left - std::min(left / 4, absl::Milliseconds(100)))));
      commands.push_back({"WAIT", wait_n, wait_ms});
    }
    absl::StatusOr<std::vector<RedisReply>> replies =
        node->RunPipeline(commands, deadline, options_.timeout);
    if (!replies.ok()) {
      MarkStale();
      // The node may be gone for good (a killed master): a fresh map may name its successor.
      if (absl::IsUnavailable(replies.status()) && !ask_node && !refreshed_after_failure &&
          absl::Now() < deadline) {
        refreshed_after_failure = true;
        if (RefreshMapIfStale(deadline).ok() && Owner(slot) != node) continue;
      }
      return replies.status();
    }
    RedisReply& reply = (*replies)[ask_node ? 1 : 0];
    if (reply.is_error()) {
      Redirect redirect;
      if (ParseRedirect(reply.text(), &redirect)) {
        last_redirect = std::string(reply.text());
        const std::string& host = redirect.host.empty() ? node->options().host : redirect.host;
        std::lock_guard<std::mutex> lock(mu_);
        Pool target = PoolFor(host, redirect.port);
        if (!redirect.ask) {
          // The new owner is known either way: route there from now on.
          slot_owner_[redirect.slot] = node_index_[absl::StrCat(host, ":", redirect.port)];
          stale_ = true;  // other slots may have moved too: refresh on a later operation
        }
        if (redirects >= options_.max_redirects) {
          return absl::UnavailableError(absl::StrCat(
              "the redis cluster redirected hash slot ", slot, " more than max_redirects=",
              options_.max_redirects, " times (last: ", last_redirect, ")"));
        }
        ++redirects;
        if (redirect.ask) {
          ++counters_.ask;
          ask_node = target;
        } else {
          ++counters_.moved;
          ask_node = nullptr;
        }
        continue;
      }
      return std::move(reply);
    }
    if (wait) {
      const RedisReply& acked = replies->back();
      if (acked.is_error()) return RedisErrorStatus(acked, "WAIT");
      if (acked->type != REDIS_REPLY_INTEGER || acked->integer < options_.wait_replicas) {
        return absl::UnavailableError(absl::StrCat(
            "the redis cluster slot store: only ",
            acked->type == REDIS_REPLY_INTEGER ? acked->integer : 0, " of wait_replicas=",
            options_.wait_replicas, " replicas confirmed the write within ",
            absl::FormatDuration(options_.timeout)));
      }
    }
    return std::move(reply);
  }
}

}  // namespace icae::slot_store
