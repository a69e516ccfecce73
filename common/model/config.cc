#include "common/model/config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/util/mapped_file.h"
#include "common/util/status_macros.h"

namespace icae {
namespace {

using json = nlohmann::json;

absl::Status ReadInt(const json& j, const char* key, bool required, int64_t* out,
                     const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": missing required field '", key, "'"));
    }
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": field '", key, "' must be an integer"));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& j, const char* key, double* out, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": field '", key, "' must be a number"));
  }
  *out = it->get<double>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  ModelConfig c;
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": missing required field 'model_type'"));
  }
  c.model_type = mt->get<std::string>();
  if (c.model_type != "llama" && c.model_type != "mistral") {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": unsupported model_type '", c.model_type, "' (supported: llama, mistral)"));
  }
  auto act = j.find("hidden_act");
  if (act != j.end() && act->is_string() && act->get<std::string>() != "silu") {
    return absl::InvalidArgumentError(absl::StrCat(source, ": unsupported hidden_act '",
                                                   act->get<std::string>(), "' (only silu)"));
  }
  RETURN_IF_ERROR(ReadInt(j, "hidden_size", true, &c.hidden_size, source));
  RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", true, &c.num_hidden_layers, source));
  RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", true, &c.num_attention_heads, source));
  RETURN_IF_ERROR(ReadInt(j, "intermediate_size", true, &c.intermediate_size, source));
  RETURN_IF_ERROR(ReadInt(j, "vocab_size", true, &c.vocab_size, source));
  c.num_key_value_heads = c.num_attention_heads;
  RETURN_IF_ERROR(ReadInt(j, "num_key_value_heads", false, &c.num_key_value_heads, source));
  RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", false, &c.max_position_embeddings, source));
  RETURN_IF_ERROR(ReadInt(j, "bos_token_id", false, &c.bos_token_id, source));
  RETURN_IF_ERROR(ReadInt(j, "eos_token_id", false, &c.eos_token_id, source));
  RETURN_IF_ERROR(ReadInt(j, "sliding_window", false, &c.sliding_window, source));
  if (c.sliding_window < 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": sliding_window must be >= 0"));
  }
  RETURN_IF_ERROR(ReadDouble(j, "rope_theta", &c.rope_theta, source));
  RETURN_IF_ERROR(ReadDouble(j, "rms_norm_eps", &c.rms_norm_eps, source));
  auto tie = j.find("tie_word_embeddings");
  if (tie != j.end() && !tie->is_null()) {
    if (!tie->is_boolean()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": 'tie_word_embeddings' must be a boolean"));
    }
    c.tie_word_embeddings = tie->get<bool>();
  }
  auto extra = j.find("icae_extra_stop_token_id");
  if (extra != j.end() && extra->is_number_integer()) c.extra_stop_token_id = extra->get<int64_t>();

  if (c.hidden_size <= 0 || c.num_hidden_layers <= 0 || c.num_attention_heads <= 0 ||
      c.intermediate_size <= 0 || c.vocab_size <= 0 || c.num_key_value_heads <= 0 ||
      c.max_position_embeddings <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": sizes must be positive"));
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  RETURN_IF_ERROR(ReadInt(j, "head_dim", false, &c.head_dim, source));
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": head_dim must be positive and even"));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": num_attention_heads (", c.num_attention_heads,
        ") must be a multiple of num_key_value_heads (", c.num_key_value_heads, ")"));
  }
  if (!(c.rms_norm_eps > 0) || !(c.rope_theta > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": rms_norm_eps and rope_theta must be positive"));
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  std::string path = model_dir + "/config.json";
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseModelConfig(text, path);
}

std::string ModelConfigToJson(const ModelConfig& c) {
  json j;
  j["architectures"] = {c.model_type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = c.model_type;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["intermediate_size"] = c.intermediate_size;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["hidden_act"] = "silu";
  j["torch_dtype"] = "float32";
  if (c.sliding_window > 0) j["sliding_window"] = c.sliding_window;
  if (c.extra_stop_token_id >= 0) j["icae_extra_stop_token_id"] = c.extra_stop_token_id;
  return j.dump(2) + "\n";
}

}  // namespace icae
