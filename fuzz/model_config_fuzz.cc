// config.json (ParseModelConfig): a model folder's architecture, read before any weight.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/model/config.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = icae::ParseModelConfig(text, "config.json");
  if (!config.ok()) return 0;
  // A config we accept is one we can write back and read again.
  auto again = icae::ParseModelConfig(icae::ModelConfigToJson(*config), "round trip");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->hidden_size == config->hidden_size);
  FUZZ_CHECK(again->vocab_size == config->vocab_size);
  FUZZ_CHECK(again->num_hidden_layers == config->num_hidden_layers);
  return 0;
}
