// The encoder's core (no gRPC): validated contexts are queued; one batching thread takes up to
// max_batch of them (waiting at most batch_wait for company), computes each distinct context
// once, skips those already in the store (cached), compresses the rest in one packed pass and
// writes the records. Callbacks run on the batching thread.
#ifndef ICAE_ENCODER_SERVICE_ENCODER_CORE_H_
#define ICAE_ENCODER_SERVICE_ENCODER_CORE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/server/metrics.h"
#include "common/server/model_bundle.h"
#include "common/server/serving_core.h"
#include "common/slot_store/slot_store.h"
#include "encoder_service/encode_job.h"
#include "icae/v1/icae.pb.h"

namespace icae::encoder {

using EncodeCallback = std::function<void(absl::StatusOr<icae::v1::EncodeResponse>)>;

class EncoderCore final : public server::ServingCore {
 public:
  EncoderCore(const server::ModelBundle& bundle, slot_store::SlotStore& store,
              EncoderOptions options, server::MetricsRegistry& metrics);
  ~EncoderCore() override;  // Stop()

  // Request → job: decodes text/ids and checks every bound (INVALID_ARGUMENT); see
  // PrepareEncodeJob.
  absl::StatusOr<EncodeJob> Prepare(const icae::v1::EncodeRequest& request,
                                    const std::string& tenant) const;
  // Queues the job; `done` is called exactly once (possibly right away with
  // RESOURCE_EXHAUSTED when the queue is full or UNAVAILABLE when draining).
  void Submit(EncodeJob job, EncodeCallback done);

  // server::ServingCore.
  void StartDraining() override;    // new jobs answer UNAVAILABLE; queued ones still run
  int64_t InFlight() const override;  // queued + running
  // Queued jobs answer CANCELLED at once; a compression pass already running finishes (it
  // cannot be interrupted part-way).
  void CancelAll() override;
  void Stop() override;  // drains the queue (UNAVAILABLE) and joins the thread
  icae::v1::ModelInfo Info() const override;

  int64_t max_context_tokens() const { return max_context_tokens_; }

 private:
  struct Pending {
    EncodeJob job;
    EncodeCallback done;
    absl::Time enqueued;
  };
  void Loop();
  void RunBatch(std::vector<Pending>& batch);

  const server::ModelBundle& bundle_;
  slot_store::SlotStore& store_;
  EncoderOptions options_;
  int64_t max_context_tokens_;
  Compressor compressor_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  int64_t running_ = 0;
  bool draining_ = false, stop_ = false;
  std::thread thread_;

  server::Gauge* waiting_;
  server::Gauge* running_gauge_;
  server::Counter* encoded_tokens_;
  server::Counter* cache_hits_;
  server::Counter* cache_misses_;
  server::Histogram* batch_size_;
  server::Histogram* queue_time_;
  server::Histogram* compress_time_;
};

}  // namespace icae::encoder

#endif  // ICAE_ENCODER_SERVICE_ENCODER_CORE_H_
