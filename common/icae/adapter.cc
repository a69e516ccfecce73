#include "common/icae/adapter.h"

#include "absl/strings/str_cat.h"
#include "common/icae/icae_config.h"
#include "common/model/safetensors.h"
#include "common/util/device.h"
#include "common/util/mapped_file.h"
#include "common/util/status_macros.h"

namespace icae {
namespace {

std::string DirOf(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

std::string LoraTensorName(int64_t layer, const std::string& proj, char ab) {
  return absl::StrCat("icae.base_model.model.model.layers.", layer, ".self_attn.", proj,
                      ".lora_", std::string(1, ab), ".default.weight");
}

torch::Tensor IcaeAdapter::SpecialEmbedding(int64_t id) const {
  return memory_embed[id - config.first_memory_id()];
}

absl::StatusOr<IcaeAdapter> LoadIcaeAdapter(const std::string& path, const ModelConfig& base,
                                            torch::Dtype dtype, torch::Device device) {
  RETURN_IF_ERROR(CheckDeviceAvailable(device));
  IcaeAdapter a;
  a.path = path;
  const std::string cfg_path = DirOf(path) + "/icae_config.json";
  if (auto text = ReadFileToString(cfg_path); text.ok()) {
    ASSIGN_OR_RETURN(a.config, ParseIcaeConfig(*text, cfg_path));
  } else {
    a.config = IcaeConfig();  // the released checkpoint's values
  }
  const IcaeConfig& c = a.config;
  if (c.base_vocab_size != base.vocab_size) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": adapter is for a base vocabulary of ", c.base_vocab_size,
        " tokens, the model has ", base.vocab_size));
  }
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  auto load = [&](const std::string& name,
                  const std::vector<int64_t>& shape) -> absl::StatusOr<torch::Tensor> {
    ASSIGN_OR_RETURN(TensorInfo info, file->Info(name));
    if (info.shape != shape) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": tensor '", name, "' has shape ", ShapeString(info.shape), ", expected ",
          ShapeString(shape), " (hidden ", base.hidden_size, ", r ", c.lora_r, ", mem_size ",
          c.mem_size, ")"));
    }
    ASSIGN_OR_RETURN(torch::Tensor t, file->Load(name, torch::kFloat32));
    if (FirstNonFiniteElement(t) >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "' contains NaN or Inf"));
    }
    return t.to(dtype).to(device);
  };
  ASSIGN_OR_RETURN(a.memory_embed, load("memory_token_embed.weight", {c.mem_size + 3, base.hidden_size}));
  const bool q = std::find(c.lora_target_modules.begin(), c.lora_target_modules.end(), "q_proj") !=
                 c.lora_target_modules.end();
  const bool v = std::find(c.lora_target_modules.begin(), c.lora_target_modules.end(), "v_proj") !=
                 c.lora_target_modules.end();
  for (int64_t i = 0; i < base.num_hidden_layers; ++i) {
    LoraLayer L;
    if (q) {
      ASSIGN_OR_RETURN(L.q_a, load(LoraTensorName(i, "q_proj", 'A'), {c.lora_r, base.hidden_size}));
      ASSIGN_OR_RETURN(L.q_b, load(LoraTensorName(i, "q_proj", 'B'), {base.q_width(), c.lora_r}));
    }
    if (v) {
      ASSIGN_OR_RETURN(L.v_a, load(LoraTensorName(i, "v_proj", 'A'), {c.lora_r, base.hidden_size}));
      ASSIGN_OR_RETURN(L.v_b, load(LoraTensorName(i, "v_proj", 'B'), {base.kv_width(), c.lora_r}));
    }
    a.lora.layers.push_back(std::move(L));
  }
  // An adapter for a deeper model would have layers this base lacks.
  if (file->Has(LoraTensorName(base.num_hidden_layers, q ? "q_proj" : "v_proj", 'A'))) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": adapter has more layers than the base model (", base.num_hidden_layers, ")"));
  }
  a.lora.scaling = c.lora_scaling();
  return a;
}

IcaeAdapter RandomIcaeAdapter(const ModelConfig& base, int64_t mem_size, int64_t r, torch::Dtype dtype,
                              uint64_t seed, torch::Device device) {
  IcaeAdapter a;
  a.config.mem_size = mem_size;
  a.config.lora_r = r;
  a.config.lora_alpha = 32;
  a.config.base_vocab_size = base.vocab_size;
  a.config.pad_token_id = base.vocab_size;
  a.config.ae_token_id = base.vocab_size + mem_size + 1;
  a.config.lm_token_id = a.config.ae_token_id + 1;
  a.config.ft_token_id = a.config.ae_token_id + 2;
  torch::manual_seed(seed);
  auto randn = [&](std::vector<int64_t> shape) {
    return (torch::randn(shape, torch::TensorOptions().device(device)) * 0.02).to(dtype);
  };
  for (int64_t i = 0; i < base.num_hidden_layers; ++i) {
    LoraLayer L;
    L.q_a = randn({r, base.hidden_size});
    L.q_b = randn({base.q_width(), r});
    L.v_a = randn({r, base.hidden_size});
    L.v_b = randn({base.kv_width(), r});
    a.lora.layers.push_back(std::move(L));
  }
  a.lora.scaling = a.config.lora_scaling();
  a.memory_embed = randn({mem_size + 3, base.hidden_size});
  return a;
}

absl::Status SaveIcaeAdapter(const IcaeAdapter& a, const std::string& path) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t i = 0; i < a.lora.layers.size(); ++i) {
    const auto& L = a.lora.layers[i];
    if (L.q_a.defined()) {
      out.emplace_back(LoraTensorName(i, "q_proj", 'A'), L.q_a.to(torch::kBFloat16));
      out.emplace_back(LoraTensorName(i, "q_proj", 'B'), L.q_b.to(torch::kBFloat16));
    }
    if (L.v_a.defined()) {
      out.emplace_back(LoraTensorName(i, "v_proj", 'A'), L.v_a.to(torch::kBFloat16));
      out.emplace_back(LoraTensorName(i, "v_proj", 'B'), L.v_b.to(torch::kBFloat16));
    }
  }
  out.emplace_back("memory_token_embed.weight", a.memory_embed.to(torch::kFloat32));
  RETURN_IF_ERROR(WriteSafetensors(path, out, {{"format", "pt"}}));
  return WriteFileAtomically(DirOf(path) + "/icae_config.json", IcaeConfigToJson(a.config));
}

}  // namespace icae
