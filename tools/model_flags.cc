#include "tools/model_flags.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/util/device.h"
#include "common/util/runtime.h"
#include "common/util/status_macros.h"

namespace icae::tools {

const std::set<std::string>& RuntimeFlagNames() {
  static const std::set<std::string> names = {"threads", "dtype", "device"};
  return names;
}

const std::set<std::string>& SamplingFlagNames() {
  static const std::set<std::string> names = {"max-new-tokens", "temperature", "top-p", "top-k",
                                              "seed", "repetition-penalty", "stop-id"};
  return names;
}

absl::Status ConfigureRuntimeFromArgs(const Args& args) {
  ASSIGN_OR_RETURN(int64_t threads, args.GetInt("threads", 0));
  if (threads < 0) return absl::InvalidArgumentError("--threads must be >= 0 (0 = all cores)");
  RuntimeOptions ro;
  ro.threads = static_cast<int>(threads);
  ConfigureRuntime(ro);
  return DeviceFromArgs(args).status();
}

absl::StatusOr<torch::Device> DeviceFromArgs(const Args& args) {
  return ResolveDevice(args.Get("device", "cpu"));
}

absl::StatusOr<torch::Dtype> DtypeFromArgs(const Args& args, const std::string& def) {
  return ParseDtype(args.Get("dtype", def));
}

absl::StatusOr<WeightsFormat> WeightsFormatFromArgs(const Args& args) {
  auto f = ParseWeightsFormat(args.Get("weights", "bf16"));
  if (!f.ok()) return absl::InvalidArgumentError(absl::StrCat("--weights: ", f.status().message()));
  return *f;
}

absl::StatusOr<GenerateOptions> GenerateOptionsFromArgs(const Args& args) {
  GenerateOptions o;
  ASSIGN_OR_RETURN(o.max_new_tokens, args.GetInt("max-new-tokens", 256));
  ASSIGN_OR_RETURN(o.sampling.temperature, args.GetDouble("temperature", 0.0));
  ASSIGN_OR_RETURN(o.sampling.top_p, args.GetDouble("top-p", 1.0));
  ASSIGN_OR_RETURN(o.sampling.top_k, args.GetInt("top-k", 0));
  ASSIGN_OR_RETURN(int64_t seed, args.GetInt("seed", 0));
  o.sampling.seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(o.sampling.repetition_penalty, args.GetDouble("repetition-penalty", 1.0));
  for (const auto& s : args.GetAll("stop-id")) {
    ASSIGN_OR_RETURN(auto ids, ParseIdList(s));
    o.stop_token_ids.insert(o.stop_token_ids.end(), ids.begin(), ids.end());
  }
  RETURN_IF_ERROR(ValidateSamplingParams(o.sampling));
  if (o.max_new_tokens < 0) return absl::InvalidArgumentError("--max-new-tokens must be >= 0");
  return o;
}

int Fail(const std::string& cmd, const std::string& message, int code) {
  std::cerr << "icae " << cmd << ": " << message << "\n";
  return code;
}

}  // namespace icae::tools
