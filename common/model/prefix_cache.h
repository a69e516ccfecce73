// Read-only KV prefixes shared across sequences: the keys/values of an input prefix that many
// requests repeat (for ICAE, the decoder positions that depend only on slot IDs and the mode),
// computed once and reused. LRU by bytes; an entry handed out by Lookup/Insert is pinned (its
// shared_ptr is held) and is never evicted while pinned. Keys are opaque to this class.
#ifndef ICAE_COMMON_MODEL_PREFIX_CACHE_H_
#define ICAE_COMMON_MODEL_PREFIX_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/model/config.h"
#include "common/model/kv_cache.h"

namespace icae {

// A new cache holding a copy of src's positions [0, n), with room for `capacity` positions
// (at least n): how an entry is made from the sequence that computed it. Sequences that start
// from an entry do not copy it: they extend it (KVCache::Extending), and an entry stays pinned
// while any of them runs.
KVCache CopyKVPrefix(const ModelConfig& config, const KVCache& src, int64_t n, int64_t capacity);

class PrefixKVCache {
 public:
  // max_bytes = 0 disables the cache (Lookup finds nothing, Insert keeps nothing).
  explicit PrefixKVCache(int64_t max_bytes) : max_bytes_(max_bytes) {}

  // The entry for key (most recently used from now on), or null.
  std::shared_ptr<const KVCache> Lookup(const std::string& key);
  // Whether key is cached (no recency change, no pin).
  bool Contains(const std::string& key) const;
  // Stores kv under key unless already there, evicting least recently used unpinned entries
  // to stay within max_bytes. An entry that cannot fit (larger than the bound, or everything
  // else pinned) is not stored. Returns whether the key is cached afterwards.
  bool Insert(const std::string& key, KVCache kv);

  int64_t max_bytes() const { return max_bytes_; }
  int64_t bytes() const;
  int64_t entries() const;
  int64_t evictions() const;

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const KVCache> kv;
    int64_t bytes;
  };
  const int64_t max_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  int64_t bytes_ = 0, evictions_ = 0;
};

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_PREFIX_CACHE_H_
