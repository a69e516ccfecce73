#include "common/model/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <utility>

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

KVCache KVCache::Extending(std::shared_ptr<const KVCache> base, int64_t base_len, int64_t capacity) {
  KVCache c = *base;  // shape and options
  base_len = std::clamp<int64_t>(base_len, 0, base->length());
  for (int64_t l = 0; l < c.layers_; ++l) c.k_[l] = c.v_[l] = torch::Tensor();
  c.base_ = std::move(base);
  c.base_len_ = c.length_ = c.capacity_ = base_len;
  c.next_position_ = base_len == c.base_->length() ? c.base_->next_position() : base_len;
  c.Reserve(std::max<int64_t>(capacity - base_len, 1));
  return c;
}

int64_t KVCache::bytes() const {
  return 2 * layers_ * kv_heads_ * (capacity_ - base_len_) * head_dim_ *
         static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options_.dtype())));
}

void KVCache::Reserve(int64_t n) {
  const int64_t need = own_length() + n, own_capacity = capacity_ - base_len_;
  if (need <= own_capacity) return;
  const int64_t cap = std::max<int64_t>({need, own_capacity * 2, 16});
  for (int64_t l = 0; l < layers_; ++l) {
    auto nk = torch::empty({kv_heads_, cap, head_dim_}, options_);
    auto nv = torch::empty({kv_heads_, cap, head_dim_}, options_);
    if (own_length() > 0) {
      nk.narrow(1, 0, own_length()).copy_(k_[l].narrow(1, 0, own_length()));
      nv.narrow(1, 0, own_length()).copy_(v_[l].narrow(1, 0, own_length()));
    }
    k_[l] = nk;
    v_[l] = nv;
  }
  capacity_ = base_len_ + cap;
}

void KVCache::Write(int64_t layer, const torch::Tensor& k, const torch::Tensor& v) {
  int64_t n = k.size(1);
  k_[layer].narrow(1, own_length(), n).copy_(k);
  v_[layer].narrow(1, own_length(), n).copy_(v);
}

std::vector<KVCache::Segment> KVCache::Segments(int64_t layer, int64_t pending) const {
  std::vector<Segment> out;
  if (base_ != nullptr && base_len_ > 0) {
    // The base's own segments, cut at base_len (a base may itself extend another).
    int64_t left = base_len_;
    for (Segment s : base_->Segments(layer, 0)) {
      if (left == 0) break;
      const int64_t n = std::min<int64_t>(left, s.keys.size(1));
      out.push_back({s.keys.narrow(1, 0, n), s.values.narrow(1, 0, n)});
      left -= n;
    }
  }
  const int64_t own = own_length() + pending;
  if (own > 0 || out.empty()) {
    out.push_back({k_[layer].narrow(1, 0, own), v_[layer].narrow(1, 0, own)});
  }
  return out;
}

void KVCache::Spans(int64_t layer, int64_t pending, std::vector<Span>* out) const {
  const size_t first = out->size();
  if (base_ != nullptr && base_len_ > 0) {
    base_->Spans(layer, 0, out);
    // Cut the base's runs at base_len (a base may itself extend another).
    int64_t left = base_len_;
    size_t i = first;
    for (; i < out->size() && left > 0; ++i) {
      (*out)[i].length = std::min((*out)[i].length, left);
      left -= (*out)[i].length;
    }
    out->resize(i);
  }
  const int64_t own = own_length() + pending;
  if (own > 0 || out->size() == first) {
    const torch::Tensor &k = k_[layer], &v = v_[layer];
    out->push_back({k.data_ptr(), v.data_ptr(), own, k.stride(0), k.stride(1)});
  }
}

void KVCache::WriteOne(int64_t layer, const void* k, int64_t k_head_stride, const void* v, int64_t v_head_stride) {
  const torch::Tensor &kd = k_[layer], &vd = v_[layer];
  const int64_t es = static_cast<int64_t>(kd.element_size());
  const int64_t row = own_length();
  auto* kb = static_cast<char*>(kd.data_ptr());
  auto* vb = static_cast<char*>(vd.data_ptr());
  const auto* ks = static_cast<const char*>(k);
  const auto* vs = static_cast<const char*>(v);
  for (int64_t h = 0; h < kv_heads_; ++h) {
    std::memcpy(kb + (h * kd.stride(0) + row * kd.stride(1)) * es, ks + h * k_head_stride * es, head_dim_ * es);
    std::memcpy(vb + (h * vd.stride(0) + row * vd.stride(1)) * es, vs + h * v_head_stride * es, head_dim_ * es);
  }
}

torch::Tensor KVCache::Keys(int64_t layer, int64_t pending) const {
  if (base_len_ == 0) return k_[layer].narrow(1, 0, length_ + pending);
  std::vector<torch::Tensor> parts;
  for (const Segment& s : Segments(layer, pending)) parts.push_back(s.keys);
  return parts.size() == 1 ? parts[0] : torch::cat(parts, 1);
}

torch::Tensor KVCache::Values(int64_t layer, int64_t pending) const {
  if (base_len_ == 0) return v_[layer].narrow(1, 0, length_ + pending);
  std::vector<torch::Tensor> parts;
  for (const Segment& s : Segments(layer, pending)) parts.push_back(s.values);
  return parts.size() == 1 ? parts[0] : torch::cat(parts, 1);
}

}  // namespace icae
