#include "common/model/prefix_cache.h"

#include <algorithm>
#include <utility>

namespace icae {

KVCache CopyKVPrefix(const ModelConfig& config, const KVCache& src, int64_t n, int64_t capacity) {
  n = std::min(n, src.length());
  KVCache dst(config, src.Keys(0, 0).options(), std::max(n, capacity));
  if (n <= 0) return dst;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    dst.Write(l, src.Keys(l, 0).narrow(1, 0, n), src.Values(l, 0).narrow(1, 0, n));
  }
  dst.Advance(n, n == src.length() ? src.next_position() : n);
  return dst;
}

std::shared_ptr<const KVCache> PrefixKVCache::Lookup(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->kv;
}

bool PrefixKVCache::Contains(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_.count(key) > 0;
}

bool PrefixKVCache::Insert(const std::string& key, KVCache kv) {
  std::lock_guard<std::mutex> lock(mu_);
  if (index_.count(key) > 0) return true;
  const int64_t need = kv.bytes();
  if (need > max_bytes_) return false;
  // Oldest first; a pinned entry (held by a sequence) is skipped, never freed under it.
  for (auto it = lru_.end(); bytes_ + need > max_bytes_ && it != lru_.begin();) {
    --it;
    if (it->kv.use_count() > 1) continue;
    bytes_ -= it->bytes;
    ++evictions_;
    index_.erase(it->key);
    it = lru_.erase(it);
  }
  if (bytes_ + need > max_bytes_) return false;
  lru_.push_front(Entry{key, std::make_shared<const KVCache>(std::move(kv)), need});
  index_[key] = lru_.begin();
  bytes_ += need;
  return true;
}

int64_t PrefixKVCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

int64_t PrefixKVCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(lru_.size());
}

int64_t PrefixKVCache::evictions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return evictions_;
}

}  // namespace icae
