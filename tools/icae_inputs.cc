#include "tools/icae_inputs.h"

#include "absl/strings/str_cat.h"
#include "common/util/mapped_file.h"
#include "common/util/paths.h"
#include "common/util/status_macros.h"
#include "tools/model_flags.h"

namespace icae::tools {

absl::StatusOr<LoadedIcae> LoadIcaeFromArgs(const Args& args, bool need_adapter,
                                            const std::string& default_dtype,
                                            int64_t max_packed_weight_bytes) {
  // Without --model, the embedded default model (and its adapter) are used.
  const std::string dir = args.Get("model", DefaultModelDir());
  std::string adapter_path = args.Get("adapter");
  if (adapter_path.empty() && need_adapter) {
    if (args.Has("model")) return absl::InvalidArgumentError("--adapter FILE is required with --model");
    adapter_path = DefaultAdapterPath();
  }
  ASSIGN_OR_RETURN(torch::Dtype dtype, DtypeFromArgs(args, default_dtype));
  ASSIGN_OR_RETURN(torch::Device device, DeviceFromArgs(args));
  LoadedIcae out;
  ModelLoadOptions lo;
  lo.dtype = dtype;
  lo.device = device;
  lo.max_packed_weight_bytes = max_packed_weight_bytes;
  // --weights (icae run): the decoder side's weights; the Compressor keeps the loaded ones.
  ASSIGN_OR_RETURN(lo.weights, WeightsFormatFromArgs(args));
  ASSIGN_OR_RETURN(out.model, Transformer::Load(dir, lo));
  ASSIGN_OR_RETURN(out.tokenizer, Tokenizer::LoadFromModelDir(dir));
  if (!adapter_path.empty()) {
    ASSIGN_OR_RETURN(IcaeAdapter a, LoadIcaeAdapter(adapter_path, out.model->config(), dtype, device));
    out.adapter = std::make_unique<IcaeAdapter>(std::move(a));
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> ReadIdsFromArgs(const Args& args, const Tokenizer& tok,
                                                     const std::string& text_flag,
                                                     const std::string& file_flag,
                                                     const std::string& ids_flag, bool add_bos) {
  int given = args.Has(text_flag) + args.Has(file_flag) + args.Has(ids_flag);
  if (given != 1) {
    return absl::InvalidArgumentError(absl::StrCat("give exactly one of --", text_flag, ", --",
                                                   file_flag, ", --", ids_flag));
  }
  if (args.Has(ids_flag)) return ParseIdList(args.Get(ids_flag));
  std::string text;
  if (args.Has(text_flag)) {
    text = args.Get(text_flag);
  } else {
    ASSIGN_OR_RETURN(text, ReadFileToString(args.Get(file_flag)));
  }
  std::vector<int64_t> ids;
  for (int32_t id : tok.Encode(text, add_bos)) ids.push_back(id);
  return ids;
}

}  // namespace icae::tools
