// icae data instructions --text F --out F.jsonl [--count N] [--seed S] [--min-words W]
//                        [--max-words W]
// Makes instruction data ({"input","prompt","answer","task"} per line) from held-in text;
// every answer is derivable from the input, and the same seed gives the same file.
#include <fstream>
#include <iostream>

#include "common/train/instructions.h"
#include "common/util/mapped_file.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

int DataInstructions(const std::vector<std::string>& argv) {
  const std::string cmd = "data instructions";
  auto args = Args::Parse(argv, {"text", "out", "count", "seed", "min-words", "max-words"}, {});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("text") || !args->Has("out") || !args->positional().empty()) {
    return Fail(cmd, "usage: icae data instructions --text F --out F.jsonl [--count 1000] "
                     "[--seed 1] [--min-words 30] [--max-words 80]", 2);
  }
  train::InstructionGenOptions o;
  NumericFlags num(*args);
  const int64_t count = num.Int("count", 1000), seed = num.Int("seed", 1);
  const int64_t minw = num.Int("min-words", 30), maxw = num.Int("max-words", 80);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  if (count <= 0 || minw <= 0 || maxw < minw) {
    return Fail(cmd, "need --count > 0 and 0 < --min-words <= --max-words", 2);
  }
  o.count = count;
  o.seed = static_cast<uint64_t>(seed);
  o.min_words = minw;
  o.max_words = maxw;
  auto text = ReadFileToString(args->Get("text"));
  if (!text.ok()) return Fail(cmd, std::string(text.status().message()));
  auto ex = train::GenerateInstructions(*text, o);
  if (!ex.ok()) return Fail(cmd, std::string(ex.status().message()));
  std::string out;
  for (const auto& e : *ex) out += train::InstructionToJsonLine(e) + "\n";
  if (auto st = WriteFileAtomically(args->Get("out"), out); !st.ok()) {
    return Fail(cmd, std::string(st.message()));
  }
  std::cout << "wrote " << ex->size() << " examples to " << args->Get("out") << "\n";
  return 0;
}

ICAE_REGISTER_COMMAND("data instructions",
                      "generate instruction JSONL from text (answers derivable, seeded)",
                      DataInstructions);

}  // namespace
}  // namespace icae::tools
