// Flags shared by the subcommands that load a model: --model, --dtype, --device, --threads, and the
// sampling/stopping flags of `icae run`.
#ifndef ICAE_TOOLS_MODEL_FLAGS_H_
#define ICAE_TOOLS_MODEL_FLAGS_H_

#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "common/model/generate.h"
#include "common/model/transformer.h"
#include "tools/args.h"

namespace icae::tools {

// Names of the value flags parsed by the helpers below.
const std::set<std::string>& RuntimeFlagNames();   // threads, dtype, device
const std::set<std::string>& SamplingFlagNames();  // max-new-tokens, temperature, top-p, ...

// Applies --threads (default: all cores) and the allocator set-up, and checks --device (a bad
// spelling, or CUDA on a LibTorch or machine without it, is an error here, before any loading:
// callers exit 2). Call before any tensor op.
absl::Status ConfigureRuntimeFromArgs(const Args& args);
// --device (default cpu), checked against this build and machine.
absl::StatusOr<torch::Device> DeviceFromArgs(const Args& args);
// --dtype (default `def`).
absl::StatusOr<torch::Dtype> DtypeFromArgs(const Args& args, const std::string& def);
absl::StatusOr<GenerateOptions> GenerateOptionsFromArgs(const Args& args);
// --weights bf16|int8 (default bf16): the decode steps' weights (ModelLoadOptions::weights).
absl::StatusOr<WeightsFormat> WeightsFormatFromArgs(const Args& args);

// Prints "icae <cmd>: <message>" to stderr and returns `code`.
int Fail(const std::string& cmd, const std::string& message, int code = 1);

}  // namespace icae::tools

#endif  // ICAE_TOOLS_MODEL_FLAGS_H_
