// Model configuration read from a HuggingFace `config.json` (model_type llama or mistral).
#ifndef ICAE_COMMON_MODEL_CONFIG_H_
#define ICAE_COMMON_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace icae {

struct ModelConfig {
  std::string model_type;  // "llama" or "mistral"
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // GQA; defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  // Mistral's sliding attention window (keys older than this many positions are not seen);
  // 0 = full attention.
  int64_t sliding_window = 0;
  // Extra stop token for generation (llama2.c models end a story with BOS); -1 = none.
  int64_t extra_stop_token_id = -1;

  int64_t q_width() const { return num_attention_heads * head_dim; }
  int64_t kv_width() const { return num_key_value_heads * head_dim; }
};

// Parses the JSON text of a config.json. `source` names the file in errors.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source = "config.json");
// Reads <dir>/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);
// Serialises to HuggingFace config.json text (used by the converters and trainers).
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_CONFIG_H_
