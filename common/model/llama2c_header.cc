#include "common/model/llama2c_header.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace icae {

std::vector<Llama2cHeader::Part> Llama2cHeader::Parts() const {
  const int64_t hd = head_dim(), kv_dim = n_kv_heads * hd;
  std::vector<Part> parts = {
      {"tok", {vocab_size, dim}},
      {"rms_att", {n_layers, dim}},
      {"wq", {n_layers, dim, dim}},
      {"wk", {n_layers, kv_dim, dim}},
      {"wv", {n_layers, kv_dim, dim}},
      {"wo", {n_layers, dim, dim}},
      {"rms_ffn", {n_layers, dim}},
      {"w1", {n_layers, hidden_dim, dim}},
      {"w2", {n_layers, dim, hidden_dim}},
      {"w3", {n_layers, hidden_dim, dim}},
      {"rms_final", {dim}},
      {"freq_real", {seq_len, hd / 2}},
      {"freq_imag", {seq_len, hd / 2}},
  };
  if (!shared_classifier) parts.push_back({"wcls", {vocab_size, dim}});
  return parts;
}

absl::StatusOr<Llama2cHeader> ParseLlama2cHeader(const uint8_t* bytes, size_t size) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("invalid llama2.c checkpoint: ", what));
  };
  if (size < Llama2cHeader::kBytes) return bad("shorter than the 28-byte header");
  int32_t h[7];
  std::memcpy(h, bytes, sizeof h);
  Llama2cHeader c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.shared_classifier = h[5] > 0;
  c.vocab_size = c.shared_classifier ? h[5] : -static_cast<int64_t>(h[5]);
  c.seq_len = h[6];
  // The bounds keep every product below (and the expected size) far from overflowing int64.
  if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 ||
      c.n_kv_heads <= 0 || c.vocab_size <= 0 || c.seq_len <= 0 || c.dim > (1 << 16) ||
      c.hidden_dim > (1 << 18) || c.n_layers > 1024 || c.vocab_size > (1 << 22) ||
      c.seq_len > (1 << 22) || c.dim % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0 ||
      c.head_dim() % 2 != 0) {
    return bad(absl::StrCat("implausible header dim=", c.dim, " hidden_dim=", c.hidden_dim,
                            " n_layers=", c.n_layers, " n_heads=", c.n_heads, " n_kv_heads=",
                            c.n_kv_heads, " vocab_size=", h[5], " seq_len=", c.seq_len));
  }
  int64_t floats = 0;
  for (const auto& p : c.Parts()) {
    int64_t n = 1;
    for (auto d : p.shape) n *= d;
    floats += n;
  }
  const uint64_t expected = Llama2cHeader::kBytes + static_cast<uint64_t>(floats) * 4;
  if (size != expected) {
    return bad(absl::StrCat("file is ", size, " bytes; the header implies ", expected));
  }
  return c;
}

}  // namespace icae
