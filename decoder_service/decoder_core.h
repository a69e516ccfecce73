// The decoder's core (no gRPC). Prepare() validates a request into a Sequence on the caller's
// thread (no I/O: the gRPC callback thread never waits on the store); Submit() puts it in the
// bounded admission queue. A fetch thread then reads its slots from the store, checks the
// records and assembles the decoder input (errors end the stream with the same status codes).
// ONE scheduler thread owns the model and runs continuous batching, each step in three phases
// as vLLM's scheduler does:
//   Schedule()  drops cancelled/expired sequences and returns a plan: every decoding sequence
//               (one new token each) and prefill chunks of the waiting/prefilling ones, at
//               most --prefill_chunk positions each while others decode and
//               --max_prefill_tokens per step, with the prefix-cache entries they start from;
//   Execute()   one packed Forward over the plan;
//   Update()    samples, applies the stop decision, streams, and marks finished sequences,
//               which leave at once (their KV with them).
// A long prefill thus runs across steps, interleaved with the running streams' decode steps.
// The KV of the slot-only prefix of an input (the mode's template lead + the slots, in order)
// is kept in a prefix cache keyed by tenant, lead and slot IDs: a later request with the same
// slots (or more slots after them) starts from it and prefills only the rest.
#ifndef ICAE_DECODER_SERVICE_DECODER_CORE_H_
#define ICAE_DECODER_SERVICE_DECODER_CORE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/icae/prompt.h"
#include "common/model/kv_cache.h"
#include "common/model/prefix_cache.h"
#include "common/model/sampler.h"
#include "common/model/stop.h"
#include "common/server/metrics.h"
#include "common/server/model_bundle.h"
#include "common/server/serving_core.h"
#include "common/tokenizer/tokenizer.h"
#include "common/slot_store/slot_store.h"
#include "decoder_service/sequence.h"
#include "icae/v1/icae.pb.h"

namespace icae::decoder {

class DecoderCore final : public server::ServingCore {
 public:
  DecoderCore(const server::ModelBundle& bundle, slot_store::SlotStore& store,
              DecoderOptions options, server::MetricsRegistry& metrics);
  ~DecoderCore() override;  // Stop()

  // Validates a request (no I/O; PrepareSequence). Errors: INVALID_ARGUMENT. The slot reads
  // come later, in the fetch stage, and end the stream with NOT_FOUND, FAILED_PRECONDITION,
  // DATA_LOSS, UNAVAILABLE or INVALID_ARGUMENT (see the proto).
  absl::StatusOr<std::unique_ptr<Sequence>> Prepare(const icae::v1::GenerateRequest& request,
                                                    const std::string& tenant) const;
  // Queues a prepared sequence. `cancelled` is polled every step (set it from OnCancel);
  // `deadline` ends it with DEADLINE_EXCEEDED. RESOURCE_EXHAUSTED when the queue is full,
  // UNAVAILABLE when draining.
  absl::Status Submit(std::unique_ptr<Sequence> seq, std::shared_ptr<GenerationSink> sink,
                      std::shared_ptr<std::atomic<bool>> cancelled, absl::Time deadline);

  // server::ServingCore.
  void StartDraining() override;
  int64_t InFlight() const override;  // waiting + running
  void CancelAll() override;          // every sequence ends now with FINISH_REASON_CANCELLED
  void Stop() override;
  icae::v1::ModelInfo Info() const override;

  int64_t Running() const;

 private:
  // A prefill step for one sequence: input positions [start, start + length).
  struct PrefillChunk {
    Sequence* seq = nullptr;
    int64_t start = 0, length = 0;
    // The cached prefix the sequence starts from (first chunk only); holding it pins it.
    std::shared_ptr<const KVCache> prefix;
  };
  struct StepPlan {
    std::vector<Sequence*> decode;
    std::vector<PrefillChunk> prefill;
  };

  // Store reads, record checks, prefix keys and input assembly for s.
  absl::Status Fetch(Sequence* s) const;
  void FetchLoop();
  int64_t WaitingLocked() const;  // fetch queue + being fetched + admission queue
  void Loop();
  StepPlan Schedule(std::vector<std::unique_ptr<Sequence>>& running);
  // Whether s's client cancelled or its deadline passed; LeaveIfGone then ends its stream
  // with CANCELLED / DEADLINE_EXCEEDED and marks it finished.
  static bool Gone(const Sequence& s, absl::Time now);
  static bool LeaveIfGone(Sequence& s, absl::Time now);
  // [decode rows, then prefill rows] float32 logits on the CPU.
  absl::StatusOr<torch::Tensor> Execute(const StepPlan& plan);
  void Update(const StepPlan& plan, const torch::Tensor& logits);
  // One sampled token for s: stop decision, streaming, finish.
  void Advance(Sequence& s, const float* logits_row, int64_t limit);
  // The final message once s's stop decision is done.
  void FinishOnStop(Sequence& s);
  // The longest cached slot prefix of s (sets s.cached_prefix_*), or null.
  std::shared_ptr<const KVCache> FindPrefix(Sequence& s);
  // Whether s's prefill computes its full slot prefix for the prefix cache (not yet offered).
  bool ComputesPrefix(const Sequence& s) const;
  // Offers s's slot prefix to the prefix cache once it is prefilled.
  void OfferPrefix(Sequence& s);
  void Finish(Sequence& s, icae::v1::FinishReason reason, const std::string& stop_text,
              int64_t stop_id, std::string tail_text);

  const server::ModelBundle& bundle_;
  slot_store::SlotStore& store_;
  DecoderOptions options_;
  int64_t max_context_tokens_;
  int64_t kv_bytes_per_position_;  // of the model's KV cache
  int64_t kv_reserved_ = 0;        // the running sequences' kv_reserved (scheduler thread)
  PrefixKVCache prefix_cache_;  // used by the scheduler thread only
  absl::Duration last_forward_;  // the current step's forward pass (scheduler thread)

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Sequence>> fetch_queue_;  // submitted, slots not yet read
  int64_t fetching_ = 0;
  std::deque<std::unique_ptr<Sequence>> queue_;        // ready for admission
  int64_t running_ = 0;
  bool draining_ = false, stop_ = false, cancel_all_ = false;
  std::thread thread_, fetch_thread_;

  struct Metrics {
    server::Gauge *running, *waiting, *kv_bytes, *kv_reserved;
    server::Histogram *ttft, *itl, *e2e, *queue_time, *batch_size, *step_time, *prefill_time, *prefill_chunk;
    server::Histogram* loop_time;  // per sequence, per step, outside the forward
    server::Counter *prompt_tokens, *generation_tokens, *slot_hits, *slot_misses;
    server::Counter *prefix_hits, *prefix_misses;
    server::Gauge* prefix_bytes;
    server::Gauge* step_threads;
    server::MetricsRegistry* registry;
  } m_;
};

}  // namespace icae::decoder

#endif  // ICAE_DECODER_SERVICE_DECODER_CORE_H_
