// `icae tokenize` and `icae detokenize`: text <-> token ids with a model's tokenizer, for
// checking what the services see.
#include <sys/stat.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tokenizer/tokenizer.h"
#include "tools/args.h"
#include "tools/command.h"

namespace icae::tools {
namespace {

constexpr char kTokenizeUsage[] =
    "usage: icae tokenize --tokenizer FILE|MODEL_DIR [--no-bos] [--] TEXT\n"
    "  Prints the token ids of TEXT on one line, separated by spaces. TEXT may be empty or\n"
    "  contain newlines; put -- before it if it begins with --.\n";
constexpr char kDetokenizeUsage[] =
    "usage: icae detokenize --tokenizer FILE|MODEL_DIR [--raw] [--] IDS...\n"
    "  Prints the text of the token ids (spaces or commas between them), then a newline\n"
    "  unless --raw.\n";

int UsageError(const std::string& message, const char* usage) {
  if (!message.empty()) std::cerr << "icae: " << message << "\n";
  std::cerr << usage;
  return 2;
}

// A tokenizer file, or a model folder holding tokenizer.model / tokenizer.bin.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerArg(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return Tokenizer::LoadFromModelDir(path);
  }
  return Tokenizer::Load(path);
}

int TokenizeMain(const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv, {"tokenizer"}, {"no-bos", "help"});
  if (!args.ok()) return UsageError(std::string(args.status().message()), kTokenizeUsage);
  if (args->Has("help")) {
    std::cout << kTokenizeUsage;
    return 0;
  }
  if (!args->Has("tokenizer")) return UsageError("--tokenizer is required", kTokenizeUsage);
  if (args->positional().size() != 1) {
    return UsageError(absl::StrCat("expected exactly one TEXT argument, got ",
                                   args->positional().size()),
                      kTokenizeUsage);
  }
  auto tok = LoadTokenizerArg(args->Get("tokenizer"));
  if (!tok.ok()) {
    std::cerr << "icae tokenize: " << tok.status().message() << "\n";
    return 1;
  }
  const std::vector<int32_t> ids = (*tok)->Encode(args->positional()[0], !args->Has("no-bos"));
  std::cout << absl::StrJoin(ids, " ") << "\n";
  return 0;
}

int DetokenizeMain(const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv, {"tokenizer"}, {"raw", "help"});
  if (!args.ok()) return UsageError(std::string(args.status().message()), kDetokenizeUsage);
  if (args->Has("help")) {
    std::cout << kDetokenizeUsage;
    return 0;
  }
  if (!args->Has("tokenizer")) return UsageError("--tokenizer is required", kDetokenizeUsage);
  if (args->positional().empty()) return UsageError("no token ids given", kDetokenizeUsage);
  auto parsed = ParseIdList(absl::StrJoin(args->positional(), " "));
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()), kDetokenizeUsage);
  auto tok = LoadTokenizerArg(args->Get("tokenizer"));
  if (!tok.ok()) {
    std::cerr << "icae detokenize: " << tok.status().message() << "\n";
    return 1;
  }
  std::vector<int32_t> ids;
  ids.reserve(parsed->size());
  for (int64_t id : *parsed) {
    if (id < 0 || id >= (*tok)->vocab_size()) {
      std::cerr << "icae detokenize: token id " << id << " is out of range [0, "
                << (*tok)->vocab_size() << ")\n";
      return 1;
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  auto text = (*tok)->Decode(ids);
  if (!text.ok()) {
    std::cerr << "icae detokenize: " << text.status().message() << "\n";
    return 1;
  }
  std::cout << *text;
  if (!args->Has("raw")) std::cout << "\n";
  return 0;
}

}  // namespace

ICAE_REGISTER_COMMAND("tokenize", "text -> token ids with a model's tokenizer", TokenizeMain);
ICAE_REGISTER_COMMAND("detokenize", "token ids -> text with a model's tokenizer",
                      DetokenizeMain);

}  // namespace icae::tools
