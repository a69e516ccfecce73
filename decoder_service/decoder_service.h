// icae.v1.Decoder over gRPC (callback API). Generate is a ServerWriteReactor whose stream state
// (GenerateStream) is shared with the scheduler: the scheduler pushes messages, a writer
// thread starts each write and the reactor the next one when it completes (coalescing chunks
// that pile up behind a slow client), and
// OnCancel flags the sequence so the scheduler drops it within one step.
#ifndef ICAE_DECODER_SERVICE_DECODER_SERVICE_H_
#define ICAE_DECODER_SERVICE_DECODER_SERVICE_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/time/time.h"
#include "common/server/auth.h"
#include "common/server/metrics.h"
#include "common/server/rpc_common.h"
#include "decoder_service/decoder_core.h"
#include "icae/v1/icae.grpc.pb.h"

namespace icae::decoder {

// One thread that performs the streams' gRPC writes, so that the scheduler thread only queues
// messages: a write costs ~60-100 µs of serialisation and transport on the calling thread,
// which at 8 streams was most of the scheduler's own time per step. Streams are written in
// the order they were queued; a stream's messages keep their order (one queue per stream).
// After its last write the thread keeps polling for a while (kPoll) before it sleeps, so that
// the scheduler queues the next token without waking it: each wake-up (and each sleep) was a
// system call, and system calls are slow in this VM.
class StreamWriter {
 public:
  // Longer than a decode step of one stream, so that a steady stream never sleeps.
  static constexpr absl::Duration kPoll = absl::Microseconds(500);

  // What the thread writes: a stream's queued messages (GenerateStream).
  class Stream {
   public:
    virtual ~Stream() = default;
    virtual void WritePending() = 0;
  };

  explicit StreamWriter(absl::Duration poll = kPoll);
  ~StreamWriter();  // stops and joins; queued writes are dropped (the server is shutting down)
  void Enqueue(std::shared_ptr<Stream> stream);
  // Times Enqueue had to wake the thread, and whether it sleeps now (tests).
  int64_t wakeups() const { return wakeups_.load(); }
  bool sleeping();

 private:
  void Run();
  const absl::Duration poll_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Stream>> queue_;
  bool stop_ = false;
  bool sleeping_ = false;              // waiting on cv_ (guarded by mu_)
  std::atomic<bool> has_work_{false};  // queue_ non-empty, polled without the lock
  std::atomic<int64_t> wakeups_{0};
  std::thread thread_;  // last: starts after the rest is constructed
};

class DecoderServiceImpl final : public icae::v1::Decoder::CallbackService {
 public:
  // The core arrives after the model has loaded (SetCore); until then calls are UNAVAILABLE.
  DecoderServiceImpl(const server::ApiKeyAuthenticator& auth, server::MetricsRegistry& metrics);
  void SetCore(DecoderCore* core) { rpc_.SetCore(core); }

  grpc::ServerWriteReactor<icae::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const icae::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const icae::v1::GetModelInfoRequest* request,
                                         icae::v1::ModelInfo* response) override;

  // Validate → core: the stream's first status (OK = the sequence is queued).
  absl::Status StartGeneration(grpc::CallbackServerContext* ctx, const icae::v1::GenerateRequest& request,
                               std::shared_ptr<GenerationSink> sink,
                               std::shared_ptr<std::atomic<bool>> cancelled);
  void Count(const char* method, const absl::Status& st) { rpc_.Count(method, st); }
  StreamWriter& writer() { return writer_; }

 private:
  server::RpcCommon<DecoderCore> rpc_;
  StreamWriter writer_;
};

}  // namespace icae::decoder

#endif  // ICAE_DECODER_SERVICE_DECODER_SERVICE_H_
