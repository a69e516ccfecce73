// icae run --model DIR (--prompt TEXT | --ids "1 2 3") [sampling flags] [--print-ids]
// Generates locally and streams the continuation to stdout as it is produced.
#include <c10/core/InferenceMode.h>

#include <iostream>

#include "common/model/generate.h"
#include "common/model/transformer.h"
#include "common/tokenizer/tokenizer.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

int Run(const std::vector<std::string>& argv) {
  const std::string cmd = "run";
  std::set<std::string> value_flags = {"model", "prompt", "ids"};
  value_flags.insert(RuntimeFlagNames().begin(), RuntimeFlagNames().end());
  value_flags.insert(SamplingFlagNames().begin(), SamplingFlagNames().end());
  auto args = Args::Parse(argv, value_flags, {"print-ids", "verbose"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("model") || args->Has("prompt") == args->Has("ids") || !args->positional().empty()) {
    return Fail(cmd, "usage: icae run --model DIR (--prompt TEXT | --ids \"1 2 3\") "
                     "[--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S] "
                     "[--print-ids] [--dtype float32|bfloat16] [--threads N]", 2);
  }
  if (auto st = ConfigureRuntimeFromArgs(*args); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  auto dtype = DtypeFromArgs(*args, "float32");
  if (!dtype.ok()) return Fail(cmd, std::string(dtype.status().message()), 2);
  auto gen = GenerateOptionsFromArgs(*args);
  if (!gen.ok()) return Fail(cmd, std::string(gen.status().message()), 2);

  c10::InferenceMode guard;
  const std::string dir = args->Get("model");
  ModelLoadOptions lo;
  lo.dtype = *dtype;
  auto model = Transformer::Load(dir, lo);
  if (!model.ok()) return Fail(cmd, std::string(model.status().message()));
  auto tok = Tokenizer::LoadFromModelDir(dir);
  if (!tok.ok()) return Fail(cmd, std::string(tok.status().message()));

  std::vector<int64_t> ids;
  if (args->Has("ids")) {
    auto parsed = ParseIdList(args->Get("ids"));
    if (!parsed.ok()) return Fail(cmd, std::string(parsed.status().message()), 2);
    ids = *parsed;
  } else {
    for (int32_t id : (*tok)->Encode(args->Get("prompt"), /*add_bos=*/true)) ids.push_back(id);
  }
  if (ids.empty()) return Fail(cmd, "empty prompt", 2);
  SequenceInput in;
  in.ids = torch::tensor(ids, torch::kInt64);
  const bool print_ids = args->Has("print-ids");
  IncrementalDecoder decoder(**tok);
  bool first = true;
  auto result = Generate(**model, in, *gen, [&](int64_t id) {
    if (print_ids) {
      std::cout << (first ? "" : " ") << id << std::flush;
    } else {
      std::cout << decoder.Push(static_cast<int32_t>(id)) << std::flush;
    }
    first = false;
    return true;
  });
  if (!result.ok()) return Fail(cmd, std::string(result.status().message()));
  if (!print_ids) std::cout << decoder.Flush();
  std::cout << "\n";
  if (args->Has("verbose")) {
    std::cerr << "prompt_tokens=" << result->prefix_tokens << " generated=" << result->ids.size()
              << " finish=" << FinishReasonName(result->finish_reason)
              << " ttft_ms=" << result->prefill_seconds * 1e3
              << " total_ms=" << result->total_seconds * 1e3 << "\n";
  }
  return 0;
}

ICAE_REGISTER_COMMAND("run", "generate locally with a model folder, streaming to stdout", Run);

}  // namespace
}  // namespace icae::tools
