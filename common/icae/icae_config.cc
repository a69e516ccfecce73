#include "common/icae/icae_config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace icae {

using json = nlohmann::json;

absl::StatusOr<IcaeConfig> ParseIcaeConfig(const std::string& text, const std::string& source) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  IcaeConfig c;
  auto get_int = [&](const char* key, int64_t* out) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": '", key, "' must be an integer"));
    }
    *out = j[key].get<int64_t>();
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(get_int("mem_size", &c.mem_size));
  RETURN_IF_ERROR(get_int("mean_compression_rate", &c.mean_compression_rate));
  RETURN_IF_ERROR(get_int("lora_r", &c.lora_r));
  RETURN_IF_ERROR(get_int("base_vocab_size", &c.base_vocab_size));
  // Bounded before the special ids are computed from them: hostile values must not overflow
  // (token ids are int32 in the tokenizers, so vocabulary + memory tokens must fit one).
  constexpr int64_t kMaxIds = int64_t{1} << 30;
  if (c.base_vocab_size <= 0 || c.base_vocab_size > kMaxIds || c.mem_size <= 0 ||
      c.mem_size > kMaxIds) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": base_vocab_size and mem_size must be in [1, ", kMaxIds, "]"));
  }
  // Special ids default to getao's arithmetic for the given vocab and mem_size.
  c.pad_token_id = c.base_vocab_size;
  c.ae_token_id = c.base_vocab_size + c.mem_size + 1;
  c.lm_token_id = c.ae_token_id + 1;
  c.ft_token_id = c.ae_token_id + 2;
  RETURN_IF_ERROR(get_int("pad_token_id", &c.pad_token_id));
  RETURN_IF_ERROR(get_int("ae_token_id", &c.ae_token_id));
  RETURN_IF_ERROR(get_int("lm_token_id", &c.lm_token_id));
  RETURN_IF_ERROR(get_int("ft_token_id", &c.ft_token_id));
  RETURN_IF_ERROR(get_int("max_context_tokens", &c.max_context_tokens));
  if (j.contains("lora_alpha")) {
    if (!j["lora_alpha"].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": 'lora_alpha' must be a number"));
    }
    c.lora_alpha = j["lora_alpha"].get<double>();
  }
  if (j.contains("lora_target_modules")) {
    if (!j["lora_target_modules"].is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": 'lora_target_modules' must be a list"));
    }
    c.lora_target_modules.clear();
    for (const auto& m : j["lora_target_modules"]) {
      if (!m.is_string() || (m != "q_proj" && m != "v_proj")) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": unsupported LoRA target ", m.dump(), " (q_proj, v_proj)"));
      }
      c.lora_target_modules.push_back(m.get<std::string>());
    }
  }
  if (j.contains("continue_with_lm_token") && j["continue_with_lm_token"].is_boolean()) {
    c.continue_with_lm_token = j["continue_with_lm_token"].get<bool>();
  }
  if (j.contains("memory_positions")) {
    const json& m = j["memory_positions"];
    if (m == "sequential") {
      c.memory_positions = IcaeConfig::MemoryPositions::kSequential;
    } else if (m == "spread") {
      c.memory_positions = IcaeConfig::MemoryPositions::kSpread;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": 'memory_positions' must be \"sequential\" or \"spread\", not ", m.dump()));
    }
  }
  for (const char* key : {"instruct_prefix_ids", "instruct_suffix_ids"}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_array()) return absl::InvalidArgumentError(absl::StrCat(source, ": '", key, "' must be a list"));
    std::vector<int64_t> ids;
    for (const auto& v : j[key]) {
      if (!v.is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": '", key, "' must hold integers"));
      }
      ids.push_back(v.get<int64_t>());
    }
    (std::string(key) == "instruct_prefix_ids" ? c.instruct_prefix_ids : c.instruct_suffix_ids) = ids;
  }
  // The template's ids, given or default (Mistral's), must be in the base vocabulary: a
  // smaller vocabulary without its own template would otherwise load and then fail every
  // instruct request, and IcaeConfigToJson would write a config this parser refuses.
  for (const char* key : {"instruct_prefix_ids", "instruct_suffix_ids"}) {
    const auto& ids =
        std::string(key) == "instruct_prefix_ids" ? c.instruct_prefix_ids : c.instruct_suffix_ids;
    for (int64_t id : ids) {
      if (id < 0 || id >= c.base_vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": '", key, "'", j.contains(key) ? "" : " (the default, Mistral's)",
            " holds id ", id, ", outside the vocabulary [0, ", c.base_vocab_size, ")"));
      }
    }
  }
  if (c.mem_size <= 0 || c.mean_compression_rate <= 0 || c.lora_r <= 0 || c.base_vocab_size <= 0 ||
      c.max_context_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": mem_size, mean_compression_rate, lora_r, base_vocab_size and max_context_tokens must be positive"));
  }
  const int64_t first_special = c.base_vocab_size + c.mem_size + 1;
  if (c.ae_token_id != first_special || c.lm_token_id != first_special + 1 ||
      c.ft_token_id != first_special + 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": special ids must follow the memory tokens: AE=", first_special, ", LM=",
        first_special + 1, ", FT=", first_special + 2, " for base_vocab_size ", c.base_vocab_size,
        " and mem_size ", c.mem_size));
  }
  return c;
}

std::string IcaeConfigToJson(const IcaeConfig& c) {
  json j;
  j["mem_size"] = c.mem_size;
  j["mean_compression_rate"] = c.mean_compression_rate;
  j["lora_r"] = c.lora_r;
  j["lora_alpha"] = c.lora_alpha;
  j["lora_target_modules"] = c.lora_target_modules;
  j["base_vocab_size"] = c.base_vocab_size;
  j["pad_token_id"] = c.pad_token_id;
  j["ae_token_id"] = c.ae_token_id;
  j["lm_token_id"] = c.lm_token_id;
  j["ft_token_id"] = c.ft_token_id;
  j["max_context_tokens"] = c.max_context_tokens;
  j["continue_with_lm_token"] = c.continue_with_lm_token;
  j["instruct_prefix_ids"] = c.instruct_prefix_ids;
  j["instruct_suffix_ids"] = c.instruct_suffix_ids;
  j["memory_positions"] =
      c.memory_positions == IcaeConfig::MemoryPositions::kSpread ? "spread" : "sequential";
  return j.dump(2) + "\n";
}

}  // namespace icae
