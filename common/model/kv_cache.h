// Per-sequence key/value cache. Keys are stored after RoPE. Capacity grows geometrically so
// appending one decode step is a copy into preallocated memory, not a reallocation.
//
// A cache may extend a shared, read-only base (a cached prompt prefix, see prefix_cache.h):
// its first positions are the base's, held by reference and never copied, and only the
// positions after them live in the cache's own buffers. Decode attention reads the two parts
// as segments; tensor-op attention (prefill) asks for one contiguous tensor.
#ifndef ICAE_COMMON_MODEL_KV_CACHE_H_
#define ICAE_COMMON_MODEL_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "common/model/config.h"

namespace icae {

class KVCache {
 public:
  KVCache(const ModelConfig& config, torch::TensorOptions options, int64_t initial_capacity = 0);

  // A cache whose positions [0, base_len) are base's (base_len <= base->length()), shared:
  // holding base keeps it alive (and pinned in its prefix cache) while this cache lives. Room
  // for `capacity` positions in all (at least base_len).
  static KVCache Extending(std::shared_ptr<const KVCache> base, int64_t base_len, int64_t capacity);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // Positions read from a shared base (0 without one).
  int64_t shared_length() const { return base_len_; }
  // Bytes held by this cache's own buffers (a shared base is counted by its owner).
  int64_t bytes() const;
  // Ensures room for `n` more positions.
  void Reserve(int64_t n);
  // Writes k, v ([n_kv, n, head_dim]) of `layer` at positions [length, length + n). The length
  // advances once per step through Advance(), after every layer has written.
  void Write(int64_t layer, const torch::Tensor& k, const torch::Tensor& v);
  // `next_position`: the RoPE position the next row takes when its step gives none
  // (SequenceInput::positions): the last written row's + 1. Without it, the rows' positions
  // are taken to be their cache indices.
  void Advance(int64_t n) { Advance(n, next_position_ + n); }
  void Advance(int64_t n, int64_t next_position) {
    length_ += n;
    next_position_ = next_position;
  }
  // Equal to length() unless rows were written at explicit positions (e.g. ICAE's spread
  // slots). A cache extending part of a base (Extending with base_len < base->length()) takes
  // base_len: its next rows must give their positions.
  int64_t next_position() const { return next_position_; }
  // Keys/values of `layer` for positions [0, length + pending): [n_kv, len, head_dim]. A view
  // of the cache's buffer; with a shared base, a new tensor joining base and own positions.
  torch::Tensor Keys(int64_t layer, int64_t pending) const;
  torch::Tensor Values(int64_t layer, int64_t pending) const;
  // The same positions as views, in order, never copied: the shared base's part (if any),
  // then this cache's own.
  struct Segment {
    torch::Tensor keys, values;  // [n_kv, len_i, head_dim]
  };
  std::vector<Segment> Segments(int64_t layer, int64_t pending) const;

  // The same runs as raw pointers, for kernels that must not pay a tensor op per sequence in a
  // decode step: element [h][i][d] of a run is at keys/values + h·head_stride + i·row_stride + d
  // (elements of the cache's dtype). Valid until the next Reserve. Appended to *out.
  struct Span {
    const void* keys;
    const void* values;
    int64_t length, head_stride, row_stride;
  };
  void Spans(int64_t layer, int64_t pending, std::vector<Span>* out) const;
  // Writes `layer`'s k and v of the next own position (length(), before Advance) from
  // [n_kv, head_dim] rows at k and v (head strides in elements, head_dim contiguous, the
  // cache's dtype). Room must have been reserved.
  void WriteOne(int64_t layer, const void* k, int64_t k_head_stride, const void* v, int64_t v_head_stride);

 private:
  int64_t own_length() const { return length_ - base_len_; }

  int64_t layers_, kv_heads_, head_dim_;
  torch::TensorOptions options_;
  int64_t length_ = 0;    // base_len_ + own positions
  int64_t next_position_ = 0;
  int64_t capacity_ = 0;  // base_len_ + own buffer positions
  std::vector<torch::Tensor> k_, v_;  // per layer [n_kv, own capacity, head_dim]
  std::shared_ptr<const KVCache> base_;
  int64_t base_len_ = 0;
};

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_KV_CACHE_H_
