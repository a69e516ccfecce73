#include "decoder_service/sequence.h"

#include <c10/core/InferenceMode.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "common/server/slot_identity.h"
#include "common/slot_store/slot_id.h"
#include "common/util/status_macros.h"

namespace icae::decoder {

absl::StatusOr<std::unique_ptr<Sequence>> PrepareSequence(const server::ModelBundle& bundle,
                                                          const DecoderOptions& options,
                                                          int64_t max_context_tokens,
                                                          const icae::v1::GenerateRequest& r,
                                                          const std::string& tenant) {
  c10::InferenceMode guard;
  auto s = std::make_unique<Sequence>();
  s->arrival = absl::Now();
  RETURN_IF_ERROR(server::CheckClientText(r.request_id(), "request_id",
                                          static_cast<size_t>(options.max_request_id_bytes)));
  s->request_id = r.request_id();

  // Sampling.
  const auto& sp = r.sampling();
  s->sampling.temperature = sp.temperature();
  s->sampling.top_p = sp.top_p() == 0 ? 1.0 : sp.top_p();
  s->sampling.top_k = sp.top_k();
  s->sampling.repetition_penalty = sp.repetition_penalty() == 0 ? 1.0 : sp.repetition_penalty();
  if (!(s->sampling.temperature >= 0 && s->sampling.temperature <= kMaxTemperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be in [0, ", kMaxTemperature, "], got ", sp.temperature()));
  }
  if (!(s->sampling.repetition_penalty >= 1 && s->sampling.repetition_penalty <= kMaxRepetitionPenalty)) {
    return absl::InvalidArgumentError(absl::StrCat("repetition_penalty must be in [1, ", kMaxRepetitionPenalty,
                                                   "] (0 = 1), got ", sp.repetition_penalty()));
  }
  RETURN_IF_ERROR(ValidateSamplingParams(s->sampling));
  s->sampling.seed = sp.has_seed() ? sp.seed() : std::random_device{}() * 0x100000001ull + std::random_device{}();

  // Stopping.
  const auto& st = r.stopping();
  s->max_new_tokens = st.max_new_tokens() == 0 ? options.default_max_new_tokens : st.max_new_tokens();
  if (s->max_new_tokens < 1 || s->max_new_tokens > options.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be in [1, ", options.max_new_tokens,
                                                   "] (--max_new_tokens), got ", st.max_new_tokens()));
  }
  if (st.stop_sequences_size() > options.max_stop_sequences) {
    return absl::InvalidArgumentError(absl::StrCat(st.stop_sequences_size(), " stop sequences is over the bound of ",
                                                   options.max_stop_sequences, " (--max_stop_sequences)"));
  }
  for (int i = 0; i < st.stop_sequences_size(); ++i) {
    const std::string& seq = st.stop_sequences(i);
    const std::string field = absl::StrCat("stopping.stop_sequences[", i, "]");
    if (seq.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
    RETURN_IF_ERROR(server::CheckClientText(seq, field, static_cast<size_t>(options.max_stop_sequence_bytes)));
    s->stop_sequences.push_back(seq);
  }
  if (st.stop_token_ids_size() > options.max_stop_token_ids) {
    return absl::InvalidArgumentError(absl::StrCat(st.stop_token_ids_size(), " stop token ids is over the bound of ",
                                                   options.max_stop_token_ids, " (--max_stop_token_ids)"));
  }
  s->stop_token_ids.assign(st.stop_token_ids().begin(), st.stop_token_ids().end());
  RETURN_IF_ERROR(bundle.CheckIds(s->stop_token_ids, "stop token"));
  s->ignore_eos = st.ignore_eos();

  // Prompt.
  std::vector<int64_t> prompt;
  if (r.prompt_case() == icae::v1::GenerateRequest::kPromptText) {
    ASSIGN_OR_RETURN(prompt, bundle.TokenizeBounded(r.prompt_text(), /*add_bos=*/false, options.max_prompt_tokens,
                                                     "prompt", "--max_prompt_tokens"));
  } else if (r.prompt_case() == icae::v1::GenerateRequest::kPromptIds) {
    prompt.assign(r.prompt_ids().ids().begin(), r.prompt_ids().ids().end());
    RETURN_IF_ERROR(bundle.CheckIds(prompt, "prompt"));
  }
  if (static_cast<int64_t>(prompt.size()) > options.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt.size(), " tokens is over the bound of ",
                                                   options.max_prompt_tokens, " (--max_prompt_tokens)"));
  }
  PromptMode mode;
  switch (r.mode()) {
    case icae::v1::MODE_UNSPECIFIED: mode = prompt.empty() ? PromptMode::kAutoencode : PromptMode::kInstruct; break;
    case icae::v1::MODE_AUTOENCODE: mode = PromptMode::kAutoencode; break;
    case icae::v1::MODE_INSTRUCT: mode = PromptMode::kInstruct; break;
    case icae::v1::MODE_CONTINUE: mode = PromptMode::kContinue; break;
    case icae::v1::MODE_RAW: mode = PromptMode::kRaw; break;
    default: return absl::InvalidArgumentError(absl::StrCat("unknown mode ", r.mode()));
  }
  // Here, not only when the input is assembled after the slot reads: a request that can never
  // succeed must not queue, read the store, or answer NOT_FOUND for an evicted slot first (the
  // client would re-encode only to be refused).
  if (mode == PromptMode::kAutoencode && !prompt.empty()) {
    return absl::InvalidArgumentError("autoencode mode takes no prompt");
  }

  // Memories: slots from the store (read by Fetch), or the raw context (uncompressed baseline).
  const bool has_context = r.context_case() != icae::v1::GenerateRequest::CONTEXT_NOT_SET;
  if (has_context == (r.slot_ids_size() > 0)) {
    return absl::InvalidArgumentError("give slot_ids or a raw context (exactly one)");
  }
  if (r.slot_ids_size() > options.max_slot_ids) {
    return absl::InvalidArgumentError(absl::StrCat(r.slot_ids_size(), " slot ids is over the bound of ",
                                                   options.max_slot_ids, " (--max_slot_ids)"));
  }
  // Every ID in the API's format before the store is asked anything.
  for (int i = 0; i < r.slot_ids_size(); ++i) {
    RETURN_IF_ERROR(slot_store::ValidateApiSlotId(r.slot_ids(i), absl::StrCat("slot_ids[", i, "]")));
  }
  s->tenant = tenant;
  s->mode = mode;
  s->prompt = std::move(prompt);
  s->slot_ids.assign(r.slot_ids().begin(), r.slot_ids().end());
  if (has_context) {
    server::ContextInput context;
    if (r.context_case() == icae::v1::GenerateRequest::kContextText) {
      context.text = &r.context_text();
    } else {
      context.ids = absl::MakeConstSpan(r.context_ids().ids().data(), r.context_ids().ids().size());
    }
    ASSIGN_OR_RETURN(s->context_ids, server::ContextIds(bundle, context, max_context_tokens));
  }
  return s;
}

}  // namespace icae::decoder
