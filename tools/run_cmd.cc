// icae run: local generation, streamed to stdout.
//   plain:  icae run --model DIR (--prompt TEXT | --ids "1 2 3") [sampling flags] [--print-ids]
//   ICAE:   icae run --model DIR --adapter FILE (--context T | --context-file F | --context-ids "…"
//           | --slots SLOTS.safetensors…) --mode autoencode|instruct|continue|raw
//           [--prompt P | --prompt-ids "…"] [--baseline] [--stop TEXT…] [sampling flags]
//   --weights bf16|int8: the decoder's weights (int8: quantized at load; compression keeps bf16)
// ICAE mode compresses the context (or reads slot files), assembles the decoder input for the
// mode and decodes with the adapter off; --baseline puts the context tokens in place of slots.
#include <c10/core/InferenceMode.h>

#include <iostream>

#include "absl/strings/numbers.h"
#include "common/icae/compressor.h"
#include "common/icae/prompt.h"
#include "common/model/generate.h"
#include "common/model/safetensors.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/icae_inputs.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

int Run(const std::vector<std::string>& argv) {
  const std::string cmd = "run";
  std::set<std::string> value_flags = {"model", "prompt", "ids", "adapter", "context",
                                       "context-file", "context-ids", "mode", "prompt-ids",
                                       "slots", "stop", "max-context-tokens", "weights"};
  value_flags.insert(RuntimeFlagNames().begin(), RuntimeFlagNames().end());
  value_flags.insert(SamplingFlagNames().begin(), SamplingFlagNames().end());
  auto args = Args::Parse(argv, value_flags, {"print-ids", "verbose", "baseline"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  // ICAE mode when an adapter, a mode or a context is named; plain generation otherwise.
  const bool icae_mode = args->Has("adapter") || args->Has("mode") || args->Has("context") ||
                         args->Has("context-file") || args->Has("context-ids") || args->Has("slots");
  const std::string usage =
      "usage: icae run --model DIR (--prompt TEXT | --ids \"1 2 3\") [--max-new-tokens N] "
      "[--temperature T] [--top-p P] [--top-k K] [--seed S] [--print-ids] [--weights bf16|int8]\n"
      "   or: icae run --model DIR --adapter FILE (--context T | --context-file F | "
      "--context-ids \"…\" | --slots FILE…) --mode autoencode|instruct|continue|raw "
      "[--prompt P | --prompt-ids \"…\"] [--baseline] [--stop TEXT] …";
  if (!args->positional().empty()) return Fail(cmd, usage, 2);
  if (!icae_mode && args->Has("prompt") == args->Has("ids")) return Fail(cmd, usage, 2);
  if (auto st = ConfigureRuntimeFromArgs(*args); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  NumericFlags num(*args);
  const int64_t max_context_tokens = num.Int("max-context-tokens", 0);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  auto gen = GenerateOptionsFromArgs(*args);
  if (!gen.ok()) return Fail(cmd, std::string(gen.status().message()), 2);
  if (auto w = WeightsFormatFromArgs(*args); !w.ok()) return Fail(cmd, std::string(w.status().message()), 2);

  c10::InferenceMode guard;
  auto loaded = LoadIcaeFromArgs(*args, icae_mode);
  if (!loaded.ok()) return Fail(cmd, std::string(loaded.status().message()));
  const Transformer& model = *loaded->model;
  const Tokenizer& tok = *loaded->tokenizer;

  SequenceInput in;
  GenerateOptions options = *gen;
  if (!icae_mode) {
    std::vector<int64_t> ids;
    if (args->Has("ids")) {
      auto parsed = ParseIdList(args->Get("ids"));
      if (!parsed.ok()) return Fail(cmd, std::string(parsed.status().message()), 2);
      ids = *parsed;
    } else {
      for (int32_t id : tok.Encode(args->Get("prompt"), /*add_bos=*/true)) ids.push_back(id);
    }
    if (ids.empty()) return Fail(cmd, "empty prompt", 2);
    in.ids = torch::tensor(ids, torch::kInt64);
  } else {
    const IcaeAdapter& adapter = *loaded->adapter;
    auto mode = ParsePromptMode(args->Get("mode", "autoencode"));
    if (!mode.ok()) return Fail(cmd, std::string(mode.status().message()), 2);
    std::vector<torch::Tensor> memories;
    std::vector<MemoryExtent> extents;
    for (const auto& path : args->GetAll("slots")) {
      auto f = SafetensorsFile::Open(path);
      if (!f.ok()) return Fail(cmd, std::string(f.status().message()));
      auto slots = (*f)->Load("slots", model.dtype());
      if (!slots.ok()) return Fail(cmd, std::string(slots.status().message()));
      // The context tokens they stand for (icae compress writes them); 0 when absent, which
      // only the sequential layout accepts.
      int64_t tokens = 0;
      auto it = (*f)->metadata().find("num_tokens");
      if (it != (*f)->metadata().end() && !absl::SimpleAtoi(it->second, &tokens)) tokens = 0;
      memories.push_back(*slots);
      extents.push_back({slots->size(0), tokens});
    }
    if (args->Has("context") || args->Has("context-file") || args->Has("context-ids")) {
      auto ids = ReadIdsFromArgs(*args, tok, "context", "context-file", "context-ids", true);
      if (!ids.ok()) return Fail(cmd, std::string(ids.status().message()), 2);
      if (args->Has("baseline")) {
        auto mem = ContextAsMemory(model, *ids);
        if (!mem.ok()) return Fail(cmd, std::string(mem.status().message()));
        memories.push_back(*mem);
        extents.push_back({mem->size(0), mem->size(0)});
      } else {
        CompressorOptions co;
        co.max_context_tokens = max_context_tokens;
        auto out = Compressor(model, adapter, co).Compress({*ids});
        if (!out.ok()) return Fail(cmd, std::string(out.status().message()));
        memories.push_back((*out)[0].slots);
        extents.push_back({(*out)[0].slots.size(0), (*out)[0].num_tokens});
        if (args->Has("verbose")) {
          std::cerr << "compressed " << (*out)[0].num_tokens << " tokens into "
                    << (*out)[0].slots.size(0) << " slots (" << (*out)[0].num_segments
                    << " segments)\n";
        }
      }
    }
    if (memories.empty()) return Fail(cmd, "give a context (--context/--context-file/--context-ids) or --slots", 2);
    std::vector<int64_t> prompt;
    if (args->Has("prompt-ids")) {
      auto p = ParseIdList(args->Get("prompt-ids"));
      if (!p.ok()) return Fail(cmd, std::string(p.status().message()), 2);
      prompt = *p;
    } else if (args->Has("prompt")) {
      for (int32_t id : tok.Encode(args->Get("prompt"), /*add_bos=*/false)) prompt.push_back(id);
    }
    auto input = AssembleDecoderInput(model, adapter, *mode, memories, prompt);
    if (!input.ok()) return Fail(cmd, std::string(input.status().message()), 2);
    in.embeds = *input;
    auto positions = DecoderInputPositions(adapter, *mode, extents, in.embeds.size(0));
    if (!positions.ok()) return Fail(cmd, std::string(positions.status().message()), 2);
    in.positions = *positions;
    options = IcaeDecodeOptions(adapter, options);
  }

  const bool print_ids = args->Has("print-ids");
  IncrementalDecoder decoder(tok);
  // Stop text goes through Generate's stop decision, as in the decoder service.
  options.stop_sequences = args->GetAll("stop");
  options.token_text = [&](int64_t id) {
    return id < 0 ? decoder.Flush() : decoder.Push(static_cast<int32_t>(id));
  };
  if (!print_ids) options.on_text = [](const std::string& text) { std::cout << text << std::flush; };
  bool first = true;
  auto result = Generate(model, in, options, [&](int64_t id) {
    if (print_ids) std::cout << (first ? "" : " ") << id << std::flush;
    first = false;
    return true;
  });
  if (!result.ok()) return Fail(cmd, std::string(result.status().message()));
  std::cout << "\n";
  if (args->Has("verbose")) {
    std::cerr << "prompt_tokens=" << result->prefix_tokens << " generated=" << result->ids.size()
              << " finish=" << FinishReasonName(result->finish_reason)
              << " ttft_ms=" << result->prefill_seconds * 1e3
              << " total_ms=" << result->total_seconds * 1e3 << "\n";
  }
  return 0;
}

ICAE_REGISTER_COMMAND("run", "generate locally (plain, or compressed context with an ICAE adapter)", Run);

}  // namespace
}  // namespace icae::tools
