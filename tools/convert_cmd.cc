// icae convert llama2c --checkpoint X.bin --tokenizer TOK.bin --out DIR
#include <sys/stat.h>

#include <iostream>

#include "common/model/llama2c.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/mapped_file.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

int ConvertLlama2c(const std::vector<std::string>& argv) {
  const std::string cmd = "convert llama2c";
  auto args = Args::Parse(argv, {"checkpoint", "tokenizer", "out"}, {});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("checkpoint") || !args->Has("tokenizer") || !args->Has("out")) {
    return Fail(cmd, "usage: icae convert llama2c --checkpoint X.bin --tokenizer TOK.bin --out DIR", 2);
  }
  // Check the tokenizer first so a bad one leaves no half-made folder behind.
  auto tok = Tokenizer::Load(args->Get("tokenizer"));
  if (!tok.ok()) return Fail(cmd, std::string(tok.status().message()));
  auto tok_bytes = ReadFileToString(args->Get("tokenizer"));
  if (!tok_bytes.ok()) return Fail(cmd, std::string(tok_bytes.status().message()));
  const std::string out = args->Get("out");
  ::mkdir(out.c_str(), 0755);
  auto st = ConvertLlama2cCheckpoint(args->Get("checkpoint"), out);
  if (!st.ok()) return Fail(cmd, std::string(st.message()));
  st = WriteFileAtomically(out + "/tokenizer.bin", *tok_bytes);
  if (!st.ok()) return Fail(cmd, std::string(st.message()));
  std::cout << "wrote " << out << "/{config.json,model.safetensors,tokenizer.bin}\n";
  return 0;
}

ICAE_REGISTER_COMMAND("convert llama2c", "llama2.c checkpoint + tokenizer -> HF model folder",
                      ConvertLlama2c);

}  // namespace
}  // namespace icae::tools
