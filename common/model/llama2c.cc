#include "common/model/llama2c.h"

#include <cstring>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/model/config.h"
#include "common/model/safetensors.h"
#include "common/util/mapped_file.h"
#include "common/util/status_macros.h"

namespace icae {
namespace {

// Meta (adjacent pairs) → HF (halves) row order, per head block.
torch::Tensor PermuteForHf(const torch::Tensor& w, int64_t heads, int64_t head_dim, int64_t dim) {
  return w.view({heads, head_dim / 2, 2, dim}).transpose(1, 2).reshape({heads * head_dim, dim})
      .contiguous();
}

}  // namespace

absl::Status ConvertLlama2cCheckpoint(const std::string& checkpoint, const std::string& out_dir) {
  ASSIGN_OR_RETURN(auto file, MappedFile::Open(checkpoint));
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(checkpoint, ": invalid llama2.c checkpoint: ", what));
  };
  if (file->size() < 28) return bad("shorter than the 28-byte header");
  int32_t h[7];
  std::memcpy(h, file->data(), sizeof h);
  const int64_t dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kv_heads = h[4],
                seq_len = h[6];
  const bool shared = h[5] > 0;
  const int64_t vocab = shared ? h[5] : -static_cast<int64_t>(h[5]);
  if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kv_heads <= 0 || vocab <= 0 ||
      seq_len <= 0 || dim > (1 << 16) || hidden > (1 << 18) || layers > 1024 || vocab > (1 << 22) ||
      seq_len > (1 << 22) || dim % heads != 0 || heads % kv_heads != 0 || (dim / heads) % 2 != 0) {
    return bad(absl::StrCat("implausible header dim=", dim, " hidden_dim=", hidden, " n_layers=",
                            layers, " n_heads=", heads, " n_kv_heads=", kv_heads, " vocab_size=",
                            h[5], " seq_len=", seq_len));
  }
  const int64_t hd = dim / heads, kv_dim = kv_heads * hd;
  struct Part {
    const char* name;
    std::vector<int64_t> shape;
  };
  std::vector<Part> parts = {
      {"tok", {vocab, dim}},          {"rms_att", {layers, dim}}, {"wq", {layers, dim, dim}},
      {"wk", {layers, kv_dim, dim}},  {"wv", {layers, kv_dim, dim}},
      {"wo", {layers, dim, dim}},     {"rms_ffn", {layers, dim}},
      {"w1", {layers, hidden, dim}},  {"w2", {layers, dim, hidden}},
      {"w3", {layers, hidden, dim}},  {"rms_final", {dim}},
      {"freq_real", {seq_len, hd / 2}}, {"freq_imag", {seq_len, hd / 2}},
  };
  if (!shared) parts.push_back({"wcls", {vocab, dim}});
  int64_t floats = 0;
  for (const auto& p : parts) {
    int64_t n = 1;
    for (auto d : p.shape) n *= d;
    floats += n;
  }
  const uint64_t expected = 28 + static_cast<uint64_t>(floats) * 4;
  if (file->size() != expected) {
    return bad(absl::StrCat("file is ", file->size(), " bytes; the header implies ", expected));
  }
  std::map<std::string, torch::Tensor> t;
  const uint8_t* p = file->data() + 28;
  for (const auto& part : parts) {
    auto x = torch::empty(part.shape, torch::kFloat32);
    std::memcpy(x.data_ptr(), p, x.numel() * 4);
    p += x.numel() * 4;
    t[part.name] = x;
  }
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = dim;
  c.intermediate_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = hd;
  c.vocab_size = vocab;
  c.max_position_embeddings = seq_len;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = shared;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  c.extra_stop_token_id = 1;  // llama2.c stories end with BOS
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", t["tok"]);
  for (int64_t i = 0; i < layers; ++i) {
    auto L = [&](const std::string& rest) { return absl::StrCat("model.layers.", i, ".", rest); };
    out.emplace_back(L("input_layernorm.weight"), t["rms_att"][i]);
    out.emplace_back(L("self_attn.q_proj.weight"), PermuteForHf(t["wq"][i], heads, hd, dim));
    out.emplace_back(L("self_attn.k_proj.weight"), PermuteForHf(t["wk"][i], kv_heads, hd, dim));
    out.emplace_back(L("self_attn.v_proj.weight"), t["wv"][i]);
    out.emplace_back(L("self_attn.o_proj.weight"), t["wo"][i]);
    out.emplace_back(L("post_attention_layernorm.weight"), t["rms_ffn"][i]);
    out.emplace_back(L("mlp.gate_proj.weight"), t["w1"][i]);
    out.emplace_back(L("mlp.down_proj.weight"), t["w2"][i]);
    out.emplace_back(L("mlp.up_proj.weight"), t["w3"][i]);
  }
  out.emplace_back("model.norm.weight", t["rms_final"]);
  if (!shared) out.emplace_back("lm_head.weight", t["wcls"]);
  RETURN_IF_ERROR(WriteSafetensors(out_dir + "/model.safetensors", out,
                                   {{"format", "pt"}, {"source", "llama2.c"}}));
  return WriteFileAtomically(out_dir + "/config.json", ModelConfigToJson(c));
}

}  // namespace icae
