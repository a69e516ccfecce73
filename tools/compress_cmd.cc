// icae compress --model DIR --adapter FILE (--text T | --text-file F | --ids "…") --out SLOTS.safetensors
#include <c10/core/InferenceMode.h>

#include <iostream>

#include "common/icae/compressor.h"
#include "common/model/safetensors.h"
#include "tools/command.h"
#include "tools/icae_inputs.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

int Compress(const std::vector<std::string>& argv) {
  const std::string cmd = "compress";
  std::set<std::string> flags = {"model", "adapter", "text", "text-file", "ids", "out",
                                 "max-context-tokens"};
  flags.insert(RuntimeFlagNames().begin(), RuntimeFlagNames().end());
  auto args = Args::Parse(argv, flags, {});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("out") || !args->positional().empty()) {
    return Fail(cmd, "usage: icae compress --model DIR --adapter FILE (--text T | --text-file F | "
                     "--ids \"…\") --out SLOTS.safetensors", 2);
  }
  if (auto st = ConfigureRuntimeFromArgs(*args); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  NumericFlags num(*args);
  const int64_t max_context_tokens = num.Int("max-context-tokens", 0);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  c10::InferenceMode guard;
  auto loaded = LoadIcaeFromArgs(*args, /*need_adapter=*/true, "float32", /*max_packed_weight_bytes=*/0);
  if (!loaded.ok()) return Fail(cmd, std::string(loaded.status().message()));
  auto ids = ReadIdsFromArgs(*args, *loaded->tokenizer, "text", "text-file", "ids", true);
  if (!ids.ok()) return Fail(cmd, std::string(ids.status().message()), 2);
  CompressorOptions co;
  co.max_context_tokens = max_context_tokens;
  Compressor compressor(*loaded->model, *loaded->adapter, co);
  auto out = compressor.Compress({*ids});
  if (!out.ok()) return Fail(cmd, std::string(out.status().message()));
  const auto& r = (*out)[0];
  auto st = WriteSafetensors(args->Get("out"), {{"slots", r.slots.to(torch::kFloat32)}},
                             {{"num_segments", std::to_string(r.num_segments)},
                              {"num_tokens", std::to_string(r.num_tokens)}});
  if (!st.ok()) return Fail(cmd, std::string(st.message()));
  std::cout << "slots=" << r.slots.size(0) << " segments=" << r.num_segments
            << " tokens=" << r.num_tokens << " hidden=" << r.slots.size(1) << "\n";
  return 0;
}

ICAE_REGISTER_COMMAND("compress", "compress a context into memory slots (safetensors)", Compress);

}  // namespace
}  // namespace icae::tools
