#include "common/server/model_bundle.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/slot_store/fingerprint.h"
#include "common/util/device.h"
#include "common/util/status_macros.h"

namespace icae::server {
namespace {

bool FileExists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

absl::StatusOr<slot_store::SlotDType> ToSlotDType(torch::Dtype d) {
  switch (d) {
    case torch::kFloat32: return slot_store::SlotDType::kFloat32;
    case torch::kBFloat16: return slot_store::SlotDType::kBFloat16;
    case torch::kFloat16: return slot_store::SlotDType::kFloat16;
    default: return absl::InvalidArgumentError("unsupported slot dtype");
  }
}

}  // namespace

int64_t FirstInvalidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return static_cast<int64_t>(i);
    if (i + len > n) return static_cast<int64_t>(i);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return static_cast<int64_t>(i);
    }
    i += len;
  }
  return -1;
}

absl::StatusOr<std::unique_ptr<ModelBundle>> ModelBundle::Load(const ModelBundleOptions& o) {
  auto b = std::unique_ptr<ModelBundle>(new ModelBundle());
  ModelLoadOptions lo;
  ASSIGN_OR_RETURN(lo.dtype, ParseDtype(o.dtype));
  ASSIGN_OR_RETURN(lo.device, ResolveDevice(o.device));
  ASSIGN_OR_RETURN(b->slot_dtype_, ToSlotDType(lo.dtype));
  lo.max_packed_weight_bytes = o.max_packed_weight_bytes;
  lo.weights = o.weights;
  ASSIGN_OR_RETURN(b->model_, Transformer::Load(o.model_dir, lo));
  ASSIGN_OR_RETURN(b->tokenizer_, Tokenizer::LoadFromModelDir(o.model_dir));
  ASSIGN_OR_RETURN(IcaeAdapter a, LoadIcaeAdapter(o.adapter_path, b->model_->config(), lo.dtype, lo.device));
  b->adapter_ = std::make_unique<IcaeAdapter>(std::move(a));
  std::vector<std::string> model_files = b->model_->weight_files();
  model_files.push_back(o.model_dir + "/config.json");
  ASSIGN_OR_RETURN(b->model_fingerprint_, slot_store::FingerprintFiles(model_files));
  std::vector<std::string> adapter_files = {o.adapter_path};
  std::string dir = o.adapter_path.substr(0, o.adapter_path.find_last_of('/') + 1);
  if (FileExists(dir + "icae_config.json")) adapter_files.push_back(dir + "icae_config.json");
  ASSIGN_OR_RETURN(b->adapter_fingerprint_, slot_store::FingerprintFiles(adapter_files));
  return b;
}

absl::StatusOr<std::unique_ptr<ModelBundle>> ModelBundle::FromParts(
    std::unique_ptr<Transformer> model, IcaeAdapter adapter, std::unique_ptr<Tokenizer> tokenizer,
    std::string model_fingerprint, std::string adapter_fingerprint) {
  const ModelConfig& c = model->config();
  if (adapter.config.base_vocab_size != c.vocab_size ||
      adapter.memory_embed.dim() != 2 || adapter.memory_embed.size(1) != c.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adapter (base vocabulary ", adapter.config.base_vocab_size, ") does not fit the model (",
        c.vocab_size, " ids, hidden size ", c.hidden_size, ")"));
  }
  auto b = std::unique_ptr<ModelBundle>(new ModelBundle());
  ASSIGN_OR_RETURN(b->slot_dtype_, ToSlotDType(model->dtype()));
  b->model_ = std::move(model);
  b->adapter_ = std::make_unique<IcaeAdapter>(std::move(adapter));
  b->tokenizer_ = std::move(tokenizer);
  b->model_fingerprint_ = std::move(model_fingerprint);
  b->adapter_fingerprint_ = std::move(adapter_fingerprint);
  return b;
}

absl::StatusOr<std::vector<int64_t>> ModelBundle::Tokenize(std::string_view text, bool add_bos) const {
  int64_t bad = FirstInvalidUtf8(text);
  if (bad >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8 (byte offset ", bad, ")"));
  }
  std::vector<int64_t> ids;
  for (int32_t id : tokenizer_->Encode(text, add_bos)) ids.push_back(id);
  return ids;
}

absl::StatusOr<std::vector<int64_t>> ModelBundle::TokenizeBounded(std::string_view text, bool add_bos,
                                                                 int64_t max_tokens, std::string_view what,
                                                                 std::string_view bound_flag) const {
  if (static_cast<int64_t>(text.size()) > kMaxBytesPerToken * max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), " of ", text.size(),
                                                   " bytes is over the bound of ", max_tokens, " tokens (",
                                                   std::string(bound_flag), "; at most ", kMaxBytesPerToken,
                                                   " bytes per token)"));
  }
  int64_t bad = FirstInvalidUtf8(text);
  if (bad >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), " is not valid UTF-8 (byte offset ", bad, ")"));
  }
  std::vector<int64_t> ids;
  for (int32_t id : tokenizer_->Encode(text, add_bos)) ids.push_back(id);
  if (static_cast<int64_t>(ids.size()) > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), " of ", ids.size(),
                                                   " tokens is over the bound of ", max_tokens, " (",
                                                   std::string(bound_flag), ")"));
  }
  return ids;
}

absl::Status CheckClientText(std::string_view value, std::string_view field, size_t max_bytes) {
  if (value.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), " is ", value.size(),
                                                   " bytes, over the bound of ", max_bytes));
  }
  if (int64_t bad = FirstInvalidUtf8(value); bad >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), " is not valid UTF-8 (byte offset ", bad, ")"));
  }
  return absl::OkStatus();
}

absl::Status ModelBundle::CheckIds(const std::vector<int64_t>& ids, std::string_view what) const {
  const int64_t v = base_vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= v) {
      return absl::InvalidArgumentError(absl::StrCat(std::string(what), " id ", ids[i], " at position ", i,
                                                     " is outside the vocabulary [0, ", v, ")"));
    }
  }
  return absl::OkStatus();
}

icae::v1::DType ToProtoDType(slot_store::SlotDType d) {
  switch (d) {
    case slot_store::SlotDType::kFloat32: return icae::v1::DTYPE_FLOAT32;
    case slot_store::SlotDType::kBFloat16: return icae::v1::DTYPE_BFLOAT16;
    case slot_store::SlotDType::kFloat16: return icae::v1::DTYPE_FLOAT16;
    default: return icae::v1::DTYPE_UNSPECIFIED;
  }
}

icae::v1::ModelInfo BaseModelInfo(const ModelBundle& bundle, int64_t max_context_tokens,
                                  int64_t max_request_id_bytes) {
  icae::v1::ModelInfo info;
  const auto& c = bundle.model().config();
  const auto& a = bundle.adapter().config;
  info.set_model_fingerprint(bundle.model_fingerprint());
  info.set_adapter_fingerprint(bundle.adapter_fingerprint());
  info.set_model_type(c.model_type);
  info.set_hidden_size(c.hidden_size);
  info.set_num_layers(c.num_hidden_layers);
  info.set_base_vocab_size(a.base_vocab_size);
  info.set_mem_size(a.mem_size);
  info.set_rate(a.mean_compression_rate);
  info.set_max_context_tokens(max_context_tokens);
  info.set_dtype(ToProtoDType(bundle.slot_dtype()));
  info.set_max_position_embeddings(c.max_position_embeddings);
  info.set_max_request_id_bytes(max_request_id_bytes);
  return info;
}

}  // namespace icae::server
