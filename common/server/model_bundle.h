// What both services load at start-up: base model, ICAE adapter, tokenizer, their fingerprints.
// Also the input checks both services apply (UTF-8, vocabulary, bounds), so the encoder and
// decoder answer bad input the same way. What a slot is (ID, store key, record) is in
// slot_identity.h.
// Part of icae_server_model (LibTorch), kept apart from icae_server (no LibTorch).
#ifndef ICAE_COMMON_SERVER_MODEL_BUNDLE_H_
#define ICAE_COMMON_SERVER_MODEL_BUNDLE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/icae/adapter.h"
#include "common/icae/compressor.h"
#include "common/model/transformer.h"
#include "icae/v1/icae.pb.h"
#include "common/slot_store/slot_record.h"
#include "common/tokenizer/tokenizer.h"

namespace icae::server {

struct ModelBundleOptions {
  std::string model_dir;     // HF layout folder
  std::string adapter_path;  // icae_adapter.safetensors
  std::string dtype = "bfloat16";
  std::string device = "cpu";  // cpu | cuda | cuda:N (common/util/device.h)
  int64_t max_packed_weight_bytes = 0;  // ModelLoadOptions::max_packed_weight_bytes
  WeightsFormat weights = WeightsFormat::kBf16;  // ModelLoadOptions::weights (decoder only)
};

class ModelBundle {
 public:
  static absl::StatusOr<std::unique_ptr<ModelBundle>> Load(const ModelBundleOptions& options);
  // A bundle of parts already in memory (tests, fuzz targets: a tiny random model needs no
  // files); the caller names the fingerprints. The slot dtype is the model's. INVALID_ARGUMENT
  // when the adapter was not made for this model (base vocabulary, hidden size).
  static absl::StatusOr<std::unique_ptr<ModelBundle>> FromParts(
      std::unique_ptr<Transformer> model, IcaeAdapter adapter, std::unique_ptr<Tokenizer> tokenizer,
      std::string model_fingerprint, std::string adapter_fingerprint);

  const Transformer& model() const { return *model_; }
  const IcaeAdapter& adapter() const { return *adapter_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::string& model_fingerprint() const { return model_fingerprint_; }
  const std::string& adapter_fingerprint() const { return adapter_fingerprint_; }
  slot_store::SlotDType slot_dtype() const { return slot_dtype_; }
  int64_t base_vocab_size() const { return adapter_->config.base_vocab_size; }

  // Text → ids. INVALID_ARGUMENT naming the byte offset when `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int64_t>> Tokenize(std::string_view text, bool add_bos) const;
  // The same for client text bounded to `max_tokens`: bytes first (more than
  // kMaxBytesPerToken * max_tokens bytes cannot fit, INVALID_ARGUMENT naming `what` without
  // spending time on the tokenizer), then UTF-8, then the exact bound on the ids.
  absl::StatusOr<std::vector<int64_t>> TokenizeBounded(std::string_view text, bool add_bos,
                                                       int64_t max_tokens,
                                                       std::string_view what,
                                                       std::string_view bound_flag) const;
  // INVALID_ARGUMENT naming the first id outside [0, base_vocab_size).
  absl::Status CheckIds(const std::vector<int64_t>& ids, std::string_view what) const;

 private:
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<IcaeAdapter> adapter_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string model_fingerprint_, adapter_fingerprint_;
  slot_store::SlotDType slot_dtype_ = slot_store::SlotDType::kUnspecified;
};

// Offset of the first malformed UTF-8 byte, or -1 when `s` is valid (shortest form, no
// surrogates, <= U+10FFFF).
int64_t FirstInvalidUtf8(std::string_view s);

// No token of the supported vocabularies spans this many bytes of text, so text longer than
// this many bytes per allowed token is refused before tokenizing.
inline constexpr int64_t kMaxBytesPerToken = 16;

// Default bound on the bytes of a request_id (both services; --max_request_id_bytes).
inline constexpr int64_t kMaxRequestIdBytes = 128;

// A client-supplied text field that the API carries as `bytes` (so that gRPC does not refuse
// the whole message before we can name the field): at most `max_bytes` bytes and valid UTF-8.
// INVALID_ARGUMENT naming `field`, the size and bound, or the offset of the first bad byte.
absl::Status CheckClientText(std::string_view value, std::string_view field, size_t max_bytes);

// The slot dtype as the API names it.
icae::v1::DType ToProtoDType(slot_store::SlotDType d);

// GetModelInfo's answer common to both services (the decoder adds its own bounds).
icae::v1::ModelInfo BaseModelInfo(const ModelBundle& bundle, int64_t max_context_tokens,
                                  int64_t max_request_id_bytes);

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_MODEL_BUNDLE_H_
