#include "common/model/llama2c.h"

#include <cstring>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/model/config.h"
#include "common/model/llama2c_header.h"
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
  auto header = ParseLlama2cHeader(file->data(), file->size());
  if (!header.ok()) {
    return absl::Status(header.status().code(),
                        absl::StrCat(checkpoint, ": ", header.status().message()));
  }
  const int64_t dim = header->dim, layers = header->n_layers, heads = header->n_heads,
                kv_heads = header->n_kv_heads, hd = header->head_dim();
  const bool shared = header->shared_classifier;
  const std::vector<Llama2cHeader::Part> parts = header->Parts();
  std::map<std::string, torch::Tensor> t;
  const uint8_t* p = file->data() + Llama2cHeader::kBytes;
  for (const auto& part : parts) {
    auto x = torch::empty(part.shape, torch::kFloat32);
    std::memcpy(x.data_ptr(), p, x.numel() * 4);
    p += x.numel() * 4;
    t[part.name] = x;
  }
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = dim;
  c.intermediate_size = header->hidden_dim;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = hd;
  c.vocab_size = header->vocab_size;
  c.max_position_embeddings = header->seq_len;
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
