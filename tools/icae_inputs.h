// Shared by `icae compress` and `icae run`: loading model + adapter + tokenizer, and reading
// a context from --text/--text-file/--ids style flags.
#ifndef ICAE_TOOLS_ICAE_INPUTS_H_
#define ICAE_TOOLS_ICAE_INPUTS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/icae/adapter.h"
#include "common/model/transformer.h"
#include "common/tokenizer/tokenizer.h"
#include "tools/args.h"

namespace icae::tools {

struct LoadedIcae {
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<IcaeAdapter> adapter;  // null when no adapter was asked for
};

// --model DIR [--adapter FILE] [--dtype]; `need_adapter` makes --adapter mandatory.
// `max_packed_weight_bytes` (ModelLoadOptions): 0 for commands that never decode (compress),
// so they do not build a weight copy only decode steps read.
absl::StatusOr<LoadedIcae> LoadIcaeFromArgs(
    const Args& args, bool need_adapter, const std::string& default_dtype = "float32",
    int64_t max_packed_weight_bytes = ModelLoadOptions::kDefaultMaxPackedWeightBytes);

// Reads ids from exactly one of --<text_flag> T, --<file_flag> F, --<ids_flag> "1 2 3".
// Text gets BOS (as the reference tokenizes contexts); ids are taken as given.
absl::StatusOr<std::vector<int64_t>> ReadIdsFromArgs(const Args& args, const Tokenizer& tok,
                                                     const std::string& text_flag,
                                                     const std::string& file_flag,
                                                     const std::string& ids_flag, bool add_bos);

}  // namespace icae::tools

#endif  // ICAE_TOOLS_ICAE_INPUTS_H_
