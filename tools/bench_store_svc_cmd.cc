// `icae bench store`: put/get latency and throughput of a slot store backend for record sizes
// a decoder actually moves (64 KiB .. 8 MiB), with an in-process memcpy of the same sizes as
// the bound no store can beat.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/slot_store/local_redis_cluster.h"
#include "common/slot_store/local_redis_server.h"
#include "common/slot_store/slot_record.h"
#include "common/slot_store/slot_store.h"
#include "common/slot_store/store_uri.h"
#include "common/util/runtime.h"
#include "tools/args.h"
#include "tools/command.h"

namespace icae::tools {
namespace {

using slot_store::LocalRedisCluster;
using slot_store::LocalRedisServer;
using slot_store::SlotStore;

constexpr char kUsage[] =
    "usage: icae bench store --uri URI [--sizes 64K,1M,8M] [--iters 200] [--warmup 5]\n"
    "  URI: any slot store URI (memory://, file:///dir, redis://host:port/db, tiered://...).\n"
    "  The word redis-local anywhere in it starts a private redis-server on a free loopback\n"
    "  port and stands for its URI, e.g. --uri redis-local or\n"
    "  --uri 'tiered://?local_max_bytes=64M&backend=redis-local'. Likewise redis-cluster-local\n"
    "  starts a private 3-master + 3-replica Redis Cluster and stands for its\n"
    "  redis-cluster:// URI, e.g. --uri 'redis-cluster-local?wait_replicas=1'.\n"
    "  Sizes are payload bytes (slot vectors); each record adds a 140-byte header.\n"
    "  Prints p50/p99 per call in ms and MB/s (10^6 bytes/s, from the mean) for Put and Get,\n"
    "  and for memcpy of the same bytes into a warm buffer.\n";

constexpr int kDistinctIds = 8;  // per size, cycled: keeps a bounded store's working set small

struct Timing {
  double p50_ms = 0, p99_ms = 0, mb_per_s = 0;
};

Timing Summarize(std::vector<double> ms, size_t bytes) {
  std::sort(ms.begin(), ms.end());
  Timing t;
  const size_t n = ms.size();
  t.p50_ms = ms[(n - 1) / 2];
  t.p99_ms = ms[std::min(n - 1, static_cast<size_t>(0.99 * static_cast<double>(n)))];
  double total = 0;
  for (double v : ms) total += v;
  t.mb_per_s = static_cast<double>(bytes) * static_cast<double>(n) / (total / 1e3) / 1e6;
  return t;
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A record shaped like real slots where the size allows (bf16, hidden 4096 -> 8 KiB per slot,
// 128 slots per segment), else one long slot.
absl::StatusOr<std::string> MakeRecord(uint64_t payload_bytes) {
  slot_store::SlotRecord r;
  r.header.model_fingerprint = std::string(64, '0');
  r.header.adapter_fingerprint = std::string(64, '1');
  r.header.dtype = slot_store::SlotDType::kBFloat16;
  r.header.rate = 4;
  if (payload_bytes % 8192 == 0 && payload_bytes > 0) {
    const uint64_t slots = payload_bytes / 8192;
    r.header.hidden_size = 4096;
    r.header.n_slots = slots;
    r.header.mem_size = static_cast<uint32_t>(slots % 128 == 0 ? 128 : slots);
    r.header.segment_count = static_cast<uint32_t>(slots / r.header.mem_size);
  } else {
    r.header.hidden_size = payload_bytes / 2;
    r.header.n_slots = r.header.mem_size = r.header.segment_count = 1;
  }
  r.header.token_count = r.header.n_slots * 4;
  r.payload.resize(payload_bytes);
  uint32_t x = 12345;
  for (char& c : r.payload) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  // Clear one exponent bit of every bf16 element (its high byte): random bytes hold NaN and
  // infinity, and every store refuses records with non-finite values.
  for (size_t i = 1; i < r.payload.size(); i += 2) r.payload[i] &= static_cast<char>(0xbf);
  return slot_store::EncodeSlotRecord(r);
}

std::string HumanSize(uint64_t bytes) {
  if (bytes % (1 << 20) == 0) return absl::StrCat(bytes >> 20, "MiB");
  if (bytes % (1 << 10) == 0) return absl::StrCat(bytes >> 10, "KiB");
  return absl::StrCat(bytes, "B");
}

int BenchStoreMain(const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv, {"uri", "sizes", "iters", "warmup"}, {"help"});
  if (!args.ok() || !args->positional().empty()) {
    if (!args.ok()) std::cerr << "icae: " << args.status().message() << "\n";
    std::cerr << kUsage;
    return 2;
  }
  if (args->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  std::string uri = args->Get("uri");
  auto iters = args->GetInt("iters", 200);
  auto warmup = args->GetInt("warmup", 5);
  if (uri.empty() || !iters.ok() || !warmup.ok() || *iters < 1 || *warmup < 0) {
    std::cerr << "icae bench store: --uri is required; --iters >= 1, --warmup >= 0\n" << kUsage;
    return 2;
  }
  std::vector<uint64_t> sizes;
  for (absl::string_view s : absl::StrSplit(args->Get("sizes", "64K,1M,8M"), ',', absl::SkipEmpty())) {
    auto v = slot_store::ParseByteSize(std::string(s));
    if (!v.ok() || *v < 2 || *v % 2 != 0) {
      std::cerr << "icae bench store: --sizes takes even byte counts like 64K,1M,8M\n";
      return 2;
    }
    sizes.push_back(*v);
  }

  // The allocator set-up the services use: without it every multi-MB buffer is a fresh mmap
  // and page faults dominate the figures.
  ConfigureRuntime(RuntimeOptions{});

  // Inside a tiered:// query a backend URI must be percent-encoded.
  const bool nested = uri.rfind("tiered://", 0) == 0;
  std::unique_ptr<LocalRedisCluster> cluster;
  const std::string kClusterLocal = "redis-cluster-local";
  if (size_t at = uri.find(kClusterLocal); at != std::string::npos) {
    auto started = LocalRedisCluster::Start();
    if (!started.ok()) {
      std::cerr << "icae bench store: starting a redis cluster: " << started.status().message()
                << "\n";
      return 1;
    }
    cluster = *std::move(started);
    const std::string real = nested ? slot_store::UrlEncode(cluster->Uri()) : cluster->Uri();
    uri.replace(at, kClusterLocal.size(), real);
  }
  std::unique_ptr<LocalRedisServer> redis;
  const std::string kLocal = "redis-local";
  if (size_t at = uri.find(kLocal); at != std::string::npos) {
    auto started = LocalRedisServer::Start();
    if (!started.ok()) {
      std::cerr << "icae bench store: starting redis-server: " << started.status().message()
                << "\n";
      return 1;
    }
    redis = *std::move(started);
    const std::string real = nested ? slot_store::UrlEncode(redis->Uri()) : redis->Uri();
    uri.replace(at, kLocal.size(), real);
  }
  auto store = slot_store::OpenSlotStore(uri);
  if (!store.ok()) {
    std::cerr << "icae bench store: " << store.status().message() << "\n";
    return 2;
  }
  std::cout << "store: " << (*store)->Describe();
  if (redis) std::cout << "  (private redis-server " << redis->pid() << ")";
  if (cluster) std::cout << "  (private redis cluster of " << cluster->size() << " nodes)";
  std::cout << "\niters: " << *iters << " per size and op; MB/s = 10^6 bytes/s from the mean\n\n";
  std::cout << absl::StrFormat("%-7s | %9s %9s %9s | %9s %9s %9s | %9s %9s %9s\n", "payload",
                               "put p50", "put p99", "put MB/s", "get p50", "get p99",
                               "get MB/s", "cpy p50", "cpy p99", "cpy MB/s");
  std::cout << std::string(7 + 3 * 33 + 1, '-') << "\n";

  int failures = 0;
  bool shared_reads = false;
  for (uint64_t payload : sizes) {
    auto record = MakeRecord(payload);
    if (!record.ok()) {
      std::cerr << "icae bench store: " << record.status().message() << "\n";
      return 1;
    }
    std::vector<std::string> ids;
    const int n_ids = static_cast<int>(std::min<int64_t>(kDistinctIds, *iters));
    for (int i = 0; i < n_ids; ++i) ids.push_back(absl::StrCat("bench-", payload, "-", i));
    auto put = [&](int i) { return (*store)->Put(ids[i % n_ids], *record); };
    auto get = [&](int i) -> absl::Status {
      auto got = (*store)->Get(ids[i % n_ids]);
      if (!got.ok()) return got.status();
      if ((*got)->size() != record->size()) return absl::InternalError("wrong size read back");
      return absl::OkStatus();
    };
    absl::Status err;
    for (int i = 0; i < *warmup && err.ok(); ++i) {
      err = put(i);
      if (err.ok()) err = get(i);
    }
    std::vector<double> put_ms, get_ms, cpy_ms;
    for (int i = 0; i < *iters && err.ok(); ++i) {
      const double t0 = NowMs();
      err = put(i);
      put_ms.push_back(NowMs() - t0);
    }
    // Read back what was just written, in the same order.
    for (int i = 0; i < *iters && err.ok(); ++i) {
      const double t0 = NowMs();
      err = get(i);
      get_ms.push_back(NowMs() - t0);
    }
    if (!err.ok()) {
      std::cerr << "icae bench store: " << HumanSize(payload) << ": " << err.message() << "\n";
      ++failures;
      continue;
    }
    std::string dst(record->size(), '\0');  // warm destination: measures copying, not faults
    for (int i = 0; i < *warmup + *iters; ++i) {
      const double t0 = NowMs();
      std::memcpy(dst.data(), record->data(), record->size());
      asm volatile("" : : "r"(dst.data()) : "memory");  // keep the copy
      if (i >= *warmup) cpy_ms.push_back(NowMs() - t0);
    }
    const size_t bytes = record->size();
    const Timing p = Summarize(put_ms, bytes), g = Summarize(get_ms, bytes),
                 c = Summarize(cpy_ms, bytes);
    std::cout << absl::StrFormat(
        "%-7s | %9.3f %9.3f %9.0f | %9.3f %9.3f %9.0f | %9.3f %9.3f %9.0f\n", HumanSize(payload),
        p.p50_ms, p.p99_ms, p.mb_per_s, g.p50_ms, g.p99_ms, g.mb_per_s, c.p50_ms, c.p99_ms,
        c.mb_per_s);
    shared_reads = shared_reads || g.p50_ms < c.p50_ms;
    for (const auto& id : ids) (void)(*store)->Delete(id);
  }
  if (shared_reads) {
    std::cout << "\nget below memcpy: an in-process tier hands out its cached bytes (shared, no "
                 "copy); the reader pays for a copy only if it makes one.\n";
  }
  const auto stats = (*store)->Stats();
  std::cout << absl::StrFormat("\nstats: hits %d, misses %d, evictions %d, corrupt %d\n",
                               stats.hits, stats.misses, stats.evictions, stats.corrupt);
  return failures == 0 ? 0 : 1;
}

}  // namespace

ICAE_REGISTER_COMMAND("bench store",
                      "put/get latency and MB/s of a slot store URI (vs memcpy)",
                      BenchStoreMain);

}  // namespace icae::tools
