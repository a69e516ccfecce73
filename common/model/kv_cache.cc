#include "common/model/kv_cache.h"

#include <algorithm>

namespace icae {

KVCache::KVCache(const ModelConfig& config, torch::TensorOptions options, int64_t initial_capacity)
    : layers_(config.num_hidden_layers),
      kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      options_(options),
      k_(config.num_hidden_layers),
      v_(config.num_hidden_layers) {
  if (initial_capacity > 0) Reserve(initial_capacity);
}

int64_t KVCache::bytes() const {
  return 2 * layers_ * kv_heads_ * capacity_ * head_dim_ *
         static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options_.dtype())));
}

void KVCache::Reserve(int64_t n) {
  int64_t need = length_ + n;
  if (need <= capacity_) return;
  int64_t cap = std::max<int64_t>({need, capacity_ * 2, 16});
  for (int64_t l = 0; l < layers_; ++l) {
    auto nk = torch::empty({kv_heads_, cap, head_dim_}, options_);
    auto nv = torch::empty({kv_heads_, cap, head_dim_}, options_);
    if (length_ > 0) {
      nk.narrow(1, 0, length_).copy_(k_[l].narrow(1, 0, length_));
      nv.narrow(1, 0, length_).copy_(v_[l].narrow(1, 0, length_));
    }
    k_[l] = nk;
    v_[l] = nv;
  }
  capacity_ = cap;
}

void KVCache::Write(int64_t layer, const torch::Tensor& k, const torch::Tensor& v) {
  int64_t n = k.size(1);
  k_[layer].narrow(1, length_, n).copy_(k);
  v_[layer].narrow(1, length_, n).copy_(v);
}

torch::Tensor KVCache::Keys(int64_t layer, int64_t pending) const {
  return k_[layer].narrow(1, 0, length_ + pending);
}

torch::Tensor KVCache::Values(int64_t layer, int64_t pending) const {
  return v_[layer].narrow(1, 0, length_ + pending);
}

void KVCache::Truncate(int64_t n) { length_ = std::min(length_, std::max<int64_t>(n, 0)); }

}  // namespace icae
