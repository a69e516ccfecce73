// The services' request validation: an EncodeRequest or a GenerateRequest as a client sends it
// (first input byte even: Encode, odd: Generate; the rest is the serialized message), through
// the cores' Prepare (PrepareEncodeJob / PrepareSequence) on a tiny random model built in
// memory. A refused request must be INVALID_ARGUMENT; an accepted one must hold every bound the
// rest of the service relies on, and a generation request's sequence then goes through what
// the decoder does with it next: the input assembly (slots or the raw context, the mode's
// template, the prompt) and a few sampled steps with its sampler, stop decision and
// detokenizer.
#include <c10/core/InferenceMode.h>
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/icae/adapter.h"
#include "common/icae/prompt.h"
#include "common/model/sampler.h"
#include "common/model/stop.h"
#include "common/model/transformer.h"
#include "common/server/model_bundle.h"
#include "common/server/slot_identity.h"
#include "common/slot_store/slot_id.h"
#include "common/tokenizer/tokenizer.h"
#include "decoder_service/sequence.h"
#include "encoder_service/encode_job.h"
#include "fuzz/fuzz_check.h"
#include "icae/v1/icae.pb.h"

namespace {

using icae::server::ModelBundle;

// A llama2.c tokenizer.bin in memory: <unk> <s> </s>, the 256 byte pieces, every printable
// ASCII character and a few merges, so text tokenizes into merged pieces, single characters
// and byte fallback alike.
std::string TinyTokenizerBytes() {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    pieces.push_back(hex);
  }
  for (char c = 0x20; c < 0x7f; ++c) pieces.push_back(std::string(1, c));
  for (const char* m : {" t", "th", "he", " the", "in", "an", " a", "on", "er", " s", "en", "at",
                        "\xc3\xa9", "\xe2\x96\x81"}) {
    pieces.push_back(m);
  }
  std::string out;
  auto put_i32 = [&](int32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  auto put_f32 = [&](float v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  put_i32(16);  // max token length
  for (size_t i = 0; i < pieces.size(); ++i) {
    // Merges score higher the later they come; the rest score 0.
    put_f32(i >= 3 + 256 + 95 ? static_cast<float>(i) : 0.0f);
    put_i32(static_cast<int32_t>(pieces[i].size()));
    out += pieces[i];
  }
  return out;
}

const ModelBundle& TinyBundle() {
  static const ModelBundle* bundle = [] {
    auto tok = icae::Tokenizer::FromBytes(TinyTokenizerBytes(), "tiny tokenizer.bin");
    FUZZ_CHECK(tok.ok());
    icae::ModelConfig c;
    c.model_type = "llama";
    c.hidden_size = 32;
    c.num_hidden_layers = 1;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 8;
    c.intermediate_size = 64;
    c.vocab_size = (*tok)->vocab_size();
    c.max_position_embeddings = 512;
    c.tie_word_embeddings = true;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    auto model = std::make_unique<icae::Transformer>(c, icae::RandomWeights(c, torch::kFloat32, 1));
    icae::IcaeAdapter adapter = icae::RandomIcaeAdapter(c, /*mem_size=*/4, /*r=*/4, torch::kFloat32, 2);
    // Small, so that fuzzed contexts reach the bound.
    adapter.config.max_context_tokens = 64;
    // The instruct template in this vocabulary (the default is Mistral's ids).
    adapter.config.instruct_prefix_ids = {1, 360, 361};
    adapter.config.instruct_suffix_ids = {362, 363};
    auto b = ModelBundle::FromParts(std::move(model), std::move(adapter), std::move(*tok),
                                    "tiny-model", "tiny-adapter");
    FUZZ_CHECK(b.ok());
    return b->release();
  }();
  return *bundle;
}

// Bounds small enough for fuzzed inputs to cross each of them.
icae::encoder::EncoderOptions EncodeBounds() {
  icae::encoder::EncoderOptions o;
  o.max_request_id_bytes = 32;
  return o;
}
icae::decoder::DecoderOptions GenerateBounds() {
  icae::decoder::DecoderOptions o;
  o.max_new_tokens = 64;
  o.default_max_new_tokens = 16;
  o.max_prompt_tokens = 48;
  o.max_slot_ids = 4;
  o.max_stop_sequences = 4;
  o.max_stop_sequence_bytes = 16;
  o.max_stop_token_ids = 8;
  o.max_request_id_bytes = 32;
  return o;
}

bool InVocab(const ModelBundle& b, const std::vector<int64_t>& ids) {
  for (int64_t id : ids) {
    if (id < 0 || id >= b.base_vocab_size()) return false;
  }
  return true;
}

void CheckRefusal(const absl::Status& st) {
  FUZZ_CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  FUZZ_CHECK(!st.message().empty());
}

void CheckClientText(const std::string& s, int64_t max_bytes) {
  FUZZ_CHECK(static_cast<int64_t>(s.size()) <= max_bytes);
  FUZZ_CHECK(icae::server::FirstInvalidUtf8(s) < 0);
}

void FuzzEncode(const uint8_t* data, size_t size) {
  icae::v1::EncodeRequest r;
  if (!r.ParseFromArray(data, static_cast<int>(size))) return;
  const ModelBundle& b = TinyBundle();
  const auto o = EncodeBounds();
  const int64_t max_context = b.adapter().config.max_context_tokens;
  auto job = icae::encoder::PrepareEncodeJob(b, o, max_context, r, "tenant");
  if (!job.ok()) {
    CheckRefusal(job.status());
    return;
  }
  CheckClientText(job->request_id, o.max_request_id_bytes);
  FUZZ_CHECK(job->request_id == r.request_id());
  FUZZ_CHECK(job->tenant == "tenant");
  FUZZ_CHECK(!job->ids.empty() && static_cast<int64_t>(job->ids.size()) <= max_context);
  FUZZ_CHECK(InVocab(b, job->ids));
  if (r.context_case() == icae::v1::EncodeRequest::kTokenIds) {
    FUZZ_CHECK(std::equal(job->ids.begin(), job->ids.end(), r.token_ids().ids().begin(),
                          r.token_ids().ids().end()));
  } else {
    auto ids = b.Tokenize(r.text(), /*add_bos=*/true);
    FUZZ_CHECK(ids.ok() && *ids == job->ids);
  }
  // The slot ID the encoder answers with is one the decoder's validation accepts.
  const auto address = icae::server::AddressOf(b, job->tenant, job->ids);
  FUZZ_CHECK(icae::slot_store::ValidateApiSlotId(address.slot_id, "slot_id").ok());
}

void FuzzGenerate(const uint8_t* data, size_t size) {
  icae::v1::GenerateRequest r;
  if (!r.ParseFromArray(data, static_cast<int>(size))) return;
  const ModelBundle& b = TinyBundle();
  const auto o = GenerateBounds();
  const int64_t max_context = b.adapter().config.max_context_tokens;
  auto prepared = icae::decoder::PrepareSequence(b, o, max_context, r, "tenant");
  if (!prepared.ok()) {
    CheckRefusal(prepared.status());
    return;
  }
  icae::decoder::Sequence& s = **prepared;
  CheckClientText(s.request_id, o.max_request_id_bytes);
  // Sampling within the documented ranges.
  FUZZ_CHECK(s.sampling.temperature >= 0 && s.sampling.temperature <= icae::decoder::kMaxTemperature);
  FUZZ_CHECK(s.sampling.repetition_penalty >= 1 &&
             s.sampling.repetition_penalty <= icae::decoder::kMaxRepetitionPenalty);
  FUZZ_CHECK(icae::ValidateSamplingParams(s.sampling).ok());
  // Stopping.
  FUZZ_CHECK(s.max_new_tokens >= 1 && s.max_new_tokens <= o.max_new_tokens);
  FUZZ_CHECK(static_cast<int64_t>(s.stop_sequences.size()) <= o.max_stop_sequences);
  for (const auto& seq : s.stop_sequences) {
    FUZZ_CHECK(!seq.empty());
    CheckClientText(seq, o.max_stop_sequence_bytes);
  }
  FUZZ_CHECK(static_cast<int64_t>(s.stop_token_ids.size()) <= o.max_stop_token_ids);
  FUZZ_CHECK(InVocab(b, s.stop_token_ids));
  // Prompt and memories: exactly one of slot IDs (each in the API's format) or a context.
  FUZZ_CHECK(static_cast<int64_t>(s.prompt.size()) <= o.max_prompt_tokens);
  FUZZ_CHECK(InVocab(b, s.prompt));
  if (r.prompt_case() == icae::v1::GenerateRequest::kPromptIds) {
    FUZZ_CHECK(std::equal(s.prompt.begin(), s.prompt.end(), r.prompt_ids().ids().begin(),
                          r.prompt_ids().ids().end()));
  }
  FUZZ_CHECK(s.slot_ids.empty() != s.context_ids.empty());
  FUZZ_CHECK(static_cast<int64_t>(s.slot_ids.size()) <= o.max_slot_ids);
  for (const auto& id : s.slot_ids) FUZZ_CHECK(icae::slot_store::ValidateApiSlotId(id, "id").ok());
  FUZZ_CHECK(static_cast<int64_t>(s.context_ids.size()) <= max_context);
  FUZZ_CHECK(InVocab(b, s.context_ids));

  // What the fetch stage builds from it: the decoder input (stand-in slots of the right shape
  // for each slot ID, or the raw context's embeddings).
  c10::InferenceMode guard;
  const icae::Transformer& model = b.model();
  const int64_t hidden = model.config().hidden_size;
  std::vector<torch::Tensor> memories;
  int64_t memory_positions = 0;
  for (size_t i = 0; i < s.slot_ids.size(); ++i) {
    memories.push_back(torch::zeros({b.adapter().config.mem_size, hidden}, model.dtype()));
    memory_positions += b.adapter().config.mem_size;
  }
  if (!s.context_ids.empty()) {
    auto mem = icae::ContextAsMemory(model, s.context_ids);
    FUZZ_CHECK(mem.ok());
    FUZZ_CHECK(mem->dim() == 2 && mem->size(0) == static_cast<int64_t>(s.context_ids.size()));
    memory_positions += mem->size(0);
    memories.push_back(std::move(*mem));
  }
  auto input = icae::AssembleDecoderInput(model, b.adapter(), s.mode, memories, s.prompt);
  if (!input.ok()) std::fprintf(stderr, "AssembleDecoderInput: %s\n", input.status().ToString().c_str());
  FUZZ_CHECK(input.ok());
  FUZZ_CHECK(input->dim() == 2 && input->size(1) == hidden);
  FUZZ_CHECK(input->size(0) >= memory_positions + static_cast<int64_t>(s.prompt.size()));

  // A few steps of what the scheduler does per token, on arbitrary logits over the base
  // vocabulary: sample, stop decision, streamed text.
  icae::Sampler sampler(s.sampling);
  icae::IncrementalDecoder detok(b.tokenizer());
  icae::StopDecision stop(model.config(), icae::StopCriteria{s.max_new_tokens, s.stop_token_ids,
                                                             s.stop_sequences, s.ignore_eos});
  const int64_t vocab = b.base_vocab_size();
  std::vector<float> logits(static_cast<size_t>(vocab));
  std::vector<int64_t> history;
  for (int step = 0; step < 8 && !stop.done(); ++step) {
    for (int64_t v = 0; v < vocab; ++v) {
      logits[static_cast<size_t>(v)] = static_cast<float>((v * 7919 + step * 104729) % 997) / 97.0f;
    }
    const int64_t next = sampler.Next(logits.data(), vocab, history);
    FUZZ_CHECK(next >= 0 && next < vocab);
    if (stop.EndsBefore(next)) break;
    history.push_back(next);
    stop.Output(detok.Push(static_cast<int32_t>(next)));
  }
  stop.Finish(detok.Flush());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // One intra-op thread: the tiny model needs no more, and fuzzing runs one input at a time.
  torch::set_num_threads(1);
  TinyBundle();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] % 2 == 0) {
    FuzzEncode(data + 1, size - 1);
  } else {
    FuzzGenerate(data + 1, size - 1);
  }
  return 0;
}
