// Tiny models and data for the training tests (a few dozen steps run in seconds).
#ifndef ICAE_TESTS_UNIT_TRAIN_TESTING_H_
#define ICAE_TESTS_UNIT_TRAIN_TESTING_H_

#include <cstdint>
#include <vector>

#include "common/model/config.h"
#include "common/model/transformer.h"

namespace icae::testing {

inline ModelConfig TinyConfig() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 64;
  c.vocab_size = 48;
  c.max_position_embeddings = 512;
  c.tie_word_embeddings = true;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  return c;
}

// A learnable stream: a short repeating phrase with some variation (ids 3..vocab-1).
inline std::vector<int32_t> PatternStream(int64_t n, int64_t vocab) {
  std::vector<int32_t> s;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t phrase = (i / 7) % 5;
    s.push_back(static_cast<int32_t>(3 + (i % 7 + 3 * phrase) % (vocab - 3)));
  }
  return s;
}

}  // namespace icae::testing

#endif  // ICAE_TESTS_UNIT_TRAIN_TESTING_H_
