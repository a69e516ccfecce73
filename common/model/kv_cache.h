// Per-sequence key/value cache. Keys are stored after RoPE. Capacity grows geometrically so
// appending one decode step is a copy into preallocated memory, not a reallocation.
#ifndef ICAE_COMMON_MODEL_KV_CACHE_H_
#define ICAE_COMMON_MODEL_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "common/model/config.h"

namespace icae {

class KVCache {
 public:
  KVCache(const ModelConfig& config, torch::TensorOptions options, int64_t initial_capacity = 0);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // Bytes held by the cache buffers.
  int64_t bytes() const;
  // Ensures room for `n` more positions.
  void Reserve(int64_t n);
  // Writes k, v ([n_kv, n, head_dim]) of `layer` at positions [length, length + n). The length
  // advances once per step through Advance(), after every layer has written.
  void Write(int64_t layer, const torch::Tensor& k, const torch::Tensor& v);
  void Advance(int64_t n) { length_ += n; }
  // Keys/values of `layer` for positions [0, length + pending): [n_kv, len, head_dim].
  torch::Tensor Keys(int64_t layer, int64_t pending) const;
  torch::Tensor Values(int64_t layer, int64_t pending) const;
  // Forgets everything from position `n` on.
  void Truncate(int64_t n);

 private:
  int64_t layers_, kv_heads_, head_dim_;
  torch::TensorOptions options_;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
  std::vector<torch::Tensor> k_, v_;  // per layer [n_kv, capacity, head_dim]
};

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_KV_CACHE_H_
