// icae_config.json (ParseIcaeConfig): the adapter's memory size, rate, LoRA and special ids.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/icae/icae_config.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = icae::ParseIcaeConfig(text, "icae_config.json");
  if (!config.ok()) return 0;
  // Accepted configs survive a write and a read, and their special ids follow the memory
  // tokens as getao computes them.
  auto again = icae::ParseIcaeConfig(icae::IcaeConfigToJson(*config), "round trip");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->mem_size == config->mem_size);
  FUZZ_CHECK(again->ae_token_id == config->base_vocab_size + config->mem_size + 1);
  FUZZ_CHECK(config->mem_size > 0 && config->lora_r > 0);
  return 0;
}
