// A Generate request validated into a Sequence, and what a Sequence carries through the
// decoder's scheduler. PrepareSequence needs no threads, no store and no gRPC, so the
// validation can be linked and fuzzed on its own (fuzz/service_request_fuzz.cc);
// DecoderCore::Prepare is it with the core's options and context bound.
#ifndef ICAE_DECODER_SERVICE_SEQUENCE_H_
#define ICAE_DECODER_SERVICE_SEQUENCE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/icae/prompt.h"
#include "common/model/kv_cache.h"
#include "common/model/sampler.h"
#include "common/model/stop.h"
#include "common/server/model_bundle.h"
#include "common/tokenizer/tokenizer.h"
#include "icae/v1/icae.pb.h"

namespace icae::decoder {

struct DecoderOptions {
  int64_t max_batch = 8;                // sequences decoded together
  int64_t max_queue = 64;               // submitted, not yet running; beyond: RESOURCE_EXHAUSTED
  int64_t max_new_tokens = 1024;        // bound on a request's max_new_tokens
  int64_t default_max_new_tokens = 256; // when the request says 0
  int64_t max_context_tokens = 0;       // raw-context baseline bound; 0 = the adapter's
  int64_t max_prompt_tokens = 2048;
  int64_t max_slot_ids = 16;
  int64_t max_prefill_tokens = 2048;    // prefill positions per step, all sequences (>= 1 chunk)
  int64_t max_stop_sequences = 8;       // per request
  int64_t max_stop_sequence_bytes = 256;
  int64_t max_stop_token_ids = 64;
  int64_t max_request_id_bytes = server::kMaxRequestIdBytes;
  int64_t prefix_cache_bytes = int64_t{256} << 20;  // slot-prefix KV cache; 0 = off
  // Input positions of one sequence prefilled per step while other sequences are decoding;
  // longer prefills are split across their steps (0 = whole prefills). Small, because a step
  // that carries a chunk delays every running stream's next token by the chunk's compute.
  int64_t prefill_chunk = 32;
  // KV cache of the running sequences. A sequence joins the batch only when its reservation
  // (input positions + max_new_tokens, at the model's bytes per position; a shared slot prefix
  // counted as its own) fits beside theirs; until then it waits in the queue (--max_queue), so
  // memory is bounded by this and the prefix cache, never by an out-of-memory kill. A request
  // that alone needs more ends with RESOURCE_EXHAUSTED.
  int64_t kv_cache_bytes = int64_t{4} << 30;
  // Intra-op threads of decode-only steps: 0 = auto (per batch size, the faster of one thread
  // and all, measured as the service runs: decoder_service/step_threads.h), N = always N
  // (at most the process's threads).
  int64_t decode_step_threads = 0;
};

// Where a sequence's output goes. Called on the scheduler thread; must not block.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // A chunk (token ids + text delta), or the last message when msg.has_final().
  virtual void Send(icae::v1::GenerateResponse msg) = 0;
  // Ends the stream with an error status (nothing is sent after).
  virtual void Fail(const absl::Status& status) = 0;
};

//   kWaiting → kPrefilling (one or more chunks) → kDecoding → kFinished; cancellation,
//   deadlines and errors go to kFinished from any state.
enum class SequenceState { kWaiting, kPrefilling, kDecoding, kFinished };

// One request from preparation to its last token.
struct Sequence {
  // Set by Prepare.
  std::string request_id, tenant;
  PromptMode mode = PromptMode::kAutoencode;
  std::vector<std::string> slot_ids;
  std::vector<int64_t> prompt, context_ids;  // context_ids: the raw-context baseline
  SamplingParams sampling;
  int64_t max_new_tokens = 0;
  std::vector<std::string> stop_sequences;
  std::vector<int64_t> stop_token_ids;
  bool ignore_eos = false;
  absl::Time arrival;
  // Set by Fetch.
  torch::Tensor input;            // [T, hidden] decoder input embeddings
  torch::Tensor input_positions;  // [T] their RoPE positions (DecoderInputPositions)
  int64_t slot_count = 0, context_tokens = 0, prompt_tokens = 0;
  // Slot-prefix cache keys, one per slot set: prefix_keys[k] names the input's positions up to
  // the end of slot set k (the lead + sets 0..k). prefix_positions = where the last one ends.
  std::vector<std::string> prefix_keys;
  int64_t prefix_positions = 0;
  int64_t kv_reserved = 0;  // bytes of KV cache admission counts for it (DecoderOptions::kv_cache_bytes)
  // Set by Submit.
  std::shared_ptr<GenerationSink> sink;
  std::shared_ptr<std::atomic<bool>> cancelled;
  absl::Time deadline = absl::InfiniteFuture();
  // Scheduler state.
  SequenceState state = SequenceState::kWaiting;
  int64_t prefilled = 0;  // input positions in the cache
  std::optional<KVCache> cache;
  int64_t cached_prefix_tokens = 0;  // positions taken from the prefix cache
  size_t cached_prefix_sets = 0;     // slot sets those positions cover
  bool prefix_looked_up = false, prefix_offered = false;
  std::shared_ptr<const KVCache> prefix;  // the entry to start from (its cache then holds it)
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<IncrementalDecoder> detok;
  std::unique_ptr<StopDecision> stop;
  std::vector<int64_t> history;
  int64_t generated = 0;
  int64_t last_token = -1;
  absl::Time admitted, first_token, last_token_time;
};

// Sampling ranges (stated in the proto): beyond them the distribution is degenerate anyway.
inline constexpr double kMaxTemperature = 100;
inline constexpr double kMaxRepetitionPenalty = 10;

// Validates a request into a Sequence (the fields "Set by Prepare"; no I/O). Errors:
// INVALID_ARGUMENT naming the field. `max_context_tokens` bounds a raw context (the
// uncompressed baseline): DecoderOptions::max_context_tokens, else the adapter's.
absl::StatusOr<std::unique_ptr<Sequence>> PrepareSequence(const server::ModelBundle& bundle,
                                                          const DecoderOptions& options,
                                                          int64_t max_context_tokens,
                                                          const icae::v1::GenerateRequest& request,
                                                          const std::string& tenant);

}  // namespace icae::decoder

#endif  // ICAE_DECODER_SERVICE_SEQUENCE_H_
