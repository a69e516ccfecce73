#include "tests/testing/reference.h"

#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "common/icae/compressor.h"
#include "common/icae/prompt.h"
#include "common/model/generate.h"
#include "common/server/slot_identity.h"
#include "common/util/status_macros.h"

namespace icae::testing {

absl::StatusOr<CompressedContext> SlotsFromStore(const server::ModelBundle& bundle,
                                             slot_store::SlotStore& store, const std::string& key) {
  ASSIGN_OR_RETURN(slot_store::SlotRecord rec, store.GetRecord(key));
  slot_store::SlotRecordView view{rec.header, rec.payload};
  c10::InferenceMode guard;
  ASSIGN_OR_RETURN(torch::Tensor slots, server::SlotsFromRecord(bundle, view));
  // The view borrows rec's payload: hand back a tensor that owns its data.
  CompressedContext c;
  c.slots = slots.clone();
  c.num_segments = slots.size(0) / bundle.adapter().config.mem_size;
  c.num_tokens = static_cast<int64_t>(rec.header.token_count);
  return c;
}

absl::StatusOr<CompressedContext> CompressText(const server::ModelBundle& bundle, const std::string& text) {
  c10::InferenceMode guard;
  ASSIGN_OR_RETURN(std::vector<int64_t> ids, bundle.Tokenize(text, /*add_bos=*/true));
  ASSIGN_OR_RETURN(auto compressed, Compressor(bundle.model(), bundle.adapter()).Compress({ids}));
  if (compressed.size() != 1) {
    return absl::InternalError(absl::StrCat("compressed ", compressed.size(), " contexts, not 1"));
  }
  return compressed[0];
}

absl::StatusOr<ReferenceOutput> ReferenceGenerate(const server::ModelBundle& bundle,
                                                  const std::vector<CompressedContext>& memories,
                                                  const std::vector<int64_t>& prompt_ids,
                                                  int64_t max_new) {
  c10::InferenceMode guard;
  ASSIGN_OR_RETURN(SequenceInput in,
                   SlotDecoderInput(bundle.model(), bundle.adapter(),
                                    prompt_ids.empty() ? PromptMode::kAutoencode : PromptMode::kInstruct,
                                    memories, prompt_ids));
  GenerateOptions go;
  go.max_new_tokens = max_new;
  go.ignore_eos = true;
  ASSIGN_OR_RETURN(auto generated, Generate(bundle.model(), in, IcaeDecodeOptions(bundle.adapter(), go)));
  ReferenceOutput out;
  out.ids = generated.ids;
  std::vector<int32_t> ids32(out.ids.begin(), out.ids.end());
  ASSIGN_OR_RETURN(out.text, bundle.tokenizer().Decode(ids32));
  return out;
}

}  // namespace icae::testing
