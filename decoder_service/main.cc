// decoder_service: icae.v1.Decoder over gRPC. One scheduler thread owns the model and runs
// continuous batching; gRPC threads only validate, enqueue and stream. See --helpfull.
#include <algorithm>
#include <limits>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/server/service_main.h"
#include "common/slot_store/store_uri.h"
#include "decoder_service/decoder_core.h"
#include "decoder_service/decoder_service.h"

ABSL_FLAG(int64_t, max_new_tokens, 1024, "bound on a request's max_new_tokens");
ABSL_FLAG(int64_t, default_max_new_tokens, 256,
          "max_new_tokens when a request gives 0 (capped at --max_new_tokens)");
ABSL_FLAG(int64_t, max_prompt_tokens, 2048, "bound on prompt tokens");
ABSL_FLAG(int64_t, max_slot_ids, 16, "bound on slot IDs per request");
ABSL_FLAG(int64_t, max_prefill_tokens, 2048,
          "input positions prefilled per scheduler step, over all sequences (at least one chunk); "
          "bounds how long prefills stall the running streams");
ABSL_FLAG(int64_t, prefill_chunk, 32,
          "input positions of one sequence prefilled per step while other streams are decoding; "
          "longer prefills are split across their steps, bounding how much one step delays their "
          "next tokens (0 = whole prefills)");
ABSL_FLAG(int64_t, decode_step_threads, 0,
          "intra-op threads of decode steps, and of steps prefilling at most 32 rows beside them (at "
          "most --threads): 0 = auto, per batch size the "
          "faster of one thread and all, timed while serving (a small model's step is faster on one "
          "core when the other one streams the tokens); N = always N");
ABSL_FLAG(int64_t, max_stop_sequences, 8, "bound on stop sequences per request");
ABSL_FLAG(int64_t, max_stop_sequence_bytes, 256, "bound on the bytes of one stop sequence");
ABSL_FLAG(int64_t, max_stop_token_ids, 64, "bound on stop token ids per request");
ABSL_FLAG(std::string, kv_cache_bytes, "4G",
          "KV cache of the running sequences: a request joins the batch when its input + max_new_tokens "
          "positions fit beside theirs, else it waits in the queue; one that alone needs more is "
          "RESOURCE_EXHAUSTED (bytes, or with K/M/G)");
ABSL_FLAG(std::string, prefix_cache_bytes, "256M",
          "KV of slot-only input prefixes kept for later requests with the same slots, LRU by "
          "bytes (0 = off)");
ABSL_FLAG(std::string, local_cache_bytes, "256M",
          "local in-process LRU in front of --store (0 = none)");
ABSL_FLAG(std::string, max_packed_weight_bytes, "1G",
          "decode steps run on a repacked copy of the bf16 weights (~2x faster at 8 sequences on "
          "small models) when the copy fits this many bytes (0 = never pack)");
ABSL_FLAG(std::string, weights, "bf16",
          "weights of the decode steps: bf16 (as loaded) | int8 (copies quantized at load in "
          "32-value blocks, as llama.cpp's q8_0: about half the bytes per step; CPU only). With "
          "int8 on an AVX-512 VNNI CPU every product runs on the int8 copies, so "
          "--max_packed_weight_bytes=0 saves the packed bf16 copies' memory");

namespace icae::decoder {
namespace {

class DecoderDefinition final : public server::ServiceDefinition {
 public:
  const char* Name() const override { return "icae.v1.Decoder"; }

  grpc::Service* MakeService(const server::ApiKeyAuthenticator& auth,
                             server::MetricsRegistry& metrics) override {
    service_ = std::make_unique<DecoderServiceImpl>(auth, metrics);
    return service_.get();
  }

  std::string StoreUri(const std::string& uri) const override {
    const std::string local = absl::GetFlag(FLAGS_local_cache_bytes);
    if (local.empty() || local == "0" || uri.rfind("memory:", 0) == 0 || uri.rfind("tiered:", 0) == 0) {
      return uri;
    }
    return absl::StrCat("tiered://?local_max_bytes=", local, "&backend=", slot_store::UrlEncode(uri));
  }

  absl::StatusOr<int64_t> MaxPackedWeightBytes() const override {
    auto bytes = slot_store::ParseByteSize(absl::GetFlag(FLAGS_max_packed_weight_bytes));
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--max_packed_weight_bytes: ", bytes.status().message()));
    }
    return static_cast<int64_t>(*bytes);
  }

  absl::StatusOr<WeightsFormat> DecodeWeights() const override {
    auto f = ParseWeightsFormat(absl::GetFlag(FLAGS_weights));
    if (!f.ok()) return absl::InvalidArgumentError(absl::StrCat("--weights: ", f.status().message()));
    return *f;
  }

  absl::StatusOr<std::unique_ptr<server::ServingCore>> StartCore(
      const server::ModelBundle& bundle, slot_store::SlotStore& store,
      server::MetricsRegistry& metrics) override {
    DecoderOptions o;
    o.max_batch = absl::GetFlag(FLAGS_max_batch);
    o.max_queue = absl::GetFlag(FLAGS_max_queue);
    o.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    o.default_max_new_tokens = std::min(absl::GetFlag(FLAGS_default_max_new_tokens), o.max_new_tokens);
    o.max_context_tokens = absl::GetFlag(FLAGS_max_context_tokens);
    o.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
    o.max_slot_ids = absl::GetFlag(FLAGS_max_slot_ids);
    o.max_prefill_tokens = absl::GetFlag(FLAGS_max_prefill_tokens);
    o.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
    o.max_stop_sequences = absl::GetFlag(FLAGS_max_stop_sequences);
    o.max_stop_sequence_bytes = absl::GetFlag(FLAGS_max_stop_sequence_bytes);
    o.max_stop_token_ids = absl::GetFlag(FLAGS_max_stop_token_ids);
    o.max_request_id_bytes = absl::GetFlag(FLAGS_max_request_id_bytes);
    o.decode_step_threads = absl::GetFlag(FLAGS_decode_step_threads);
    auto prefix_bytes = slot_store::ParseByteSize(absl::GetFlag(FLAGS_prefix_cache_bytes));
    if (!prefix_bytes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--prefix_cache_bytes: ", prefix_bytes.status().message()));
    }
    o.prefix_cache_bytes = static_cast<int64_t>(*prefix_bytes);
    auto kv_bytes = slot_store::ParseByteSize(absl::GetFlag(FLAGS_kv_cache_bytes));
    if (!kv_bytes.ok() || *kv_bytes < 1 || *kv_bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--kv_cache_bytes: ", kv_bytes.ok() ? "must be from 1 byte to 2^63 - 1" : kv_bytes.status().message()));
    }
    o.kv_cache_bytes = static_cast<int64_t>(*kv_bytes);
    if (o.max_request_id_bytes < 0 || o.max_stop_sequences < 0 || o.max_stop_sequence_bytes < 1 ||
        o.max_stop_token_ids < 0 || o.max_batch < 1 || o.max_queue < 0 || o.max_new_tokens < 1 ||
        o.default_max_new_tokens < 1 || o.default_max_new_tokens > o.max_new_tokens ||
        o.max_prompt_tokens < 0 || o.max_slot_ids < 1 || o.max_prefill_tokens < 1 || o.prefill_chunk < 0) {
      return absl::InvalidArgumentError("a limit flag is out of range (see --helpfull)");
    }
    if (o.decode_step_threads < 0) {
      return absl::InvalidArgumentError("--decode_step_threads must be 0 (auto) or a thread count >= 1");
    }
    auto core = std::make_unique<DecoderCore>(bundle, store, o, metrics);
    metrics.AddCallbackGauge("icae_slot_cache_bytes", "Bytes held by the local slot cache (-1 = unknown)",
                             [&store] { return static_cast<double>(store.Stats().bytes); });
    metrics.AddCallbackCounter("icae_slot_cache_evictions_total", "Records evicted from the local slot cache",
                               [&store] { return static_cast<double>(store.Stats().evictions); });
    service_->SetCore(core.get());
    return core;
  }

 private:
  std::unique_ptr<DecoderServiceImpl> service_;
};

}  // namespace
}  // namespace icae::decoder

int main(int argc, char** argv) {
  icae::decoder::DecoderDefinition decoder;
  return icae::server::ServiceMain(
      argc, argv, "icae decoder service: --model DIR --adapter FILE --store URI ...", decoder);
}
