#include "decoder_service/decoder_service.h"

#include <glog/logging.h>

#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/server/log_safe.h"
#include "common/server/status.h"

namespace icae::decoder {

using icae::v1::GenerateResponse;

// Stream state shared by the reactor (gRPC threads), the scheduler (Send/Fail) and the
// service's writer thread (StartWrite of a message the scheduler queued).
// States: kStreaming → (final written | Fail | cancel) → kFinished; Finish is called exactly
// once, and never while a write is in flight. Reactor calls are made outside the lock.
class GenerateStream final : public GenerationSink,
                             public StreamWriter::Stream,
                             public std::enable_shared_from_this<GenerateStream> {
 public:
  GenerateStream(grpc::ServerWriteReactor<GenerateResponse>* reactor, DecoderServiceImpl* svc)
      : reactor_(reactor), svc_(svc) {}

  // On the scheduler thread: queues the message and leaves the write (gRPC serialisation and
  // transport, ~60-100 µs a message measured here) to the writer thread, so a step costs the
  // scheduler only this append.
  void Send(GenerateResponse msg) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (state_ != State::kStreaming) return;
    // Coalesce with a chunk that is still waiting (the client reads slower than we generate).
    if (!pending_.empty() && !pending_.back().has_final()) {
      GenerateResponse& last = pending_.back();
      for (int64_t id : msg.token_ids()) last.add_token_ids(id);
      last.mutable_text()->append(msg.text());
      if (msg.has_final()) *last.mutable_final() = std::move(*msg.mutable_final());
    } else {
      pending_.push_back(std::move(msg));
    }
    if (writing_ || queued_) return;  // OnWriteDone or the writer thread takes it from here
    queued_ = true;
    lock.unlock();
    svc_->writer().Enqueue(shared_from_this());
  }

  // On the writer thread.
  void WritePending() override {
    std::unique_lock<std::mutex> lock(mu_);
    queued_ = false;
    if (state_ == State::kFinished) return;
    WriteNextLocked(lock);
  }

  void Fail(const absl::Status& status) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (state_ != State::kStreaming) return;
    state_ = State::kFailing;
    error_ = status;
    pending_.clear();
    if (!writing_) FinishLocked(lock, server::ToGrpcStatus(status), status);
  }

  void OnWriteDone(bool ok) {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      // The client is gone; the scheduler learns it through the cancelled flag.
      cancelled_->store(true);
      if (state_ != State::kFinished) {
        FinishLocked(lock, grpc::Status(grpc::StatusCode::CANCELLED, "write failed"), absl::CancelledError());
      }
      return;
    }
    if (state_ == State::kFailing) {
      FinishLocked(lock, server::ToGrpcStatus(error_), error_);
      return;
    }
    if (current_.has_final()) {
      FinishLocked(lock, grpc::Status::OK, absl::OkStatus());
      return;
    }
    WriteNextLocked(lock);
  }

  void OnCancel() {
    cancelled_->store(true);
    std::unique_lock<std::mutex> lock(mu_);
    if (state_ == State::kFinished) return;
    state_ = State::kFailing;
    error_ = absl::CancelledError("cancelled");
    pending_.clear();
    if (!writing_) FinishLocked(lock, grpc::Status::CANCELLED, error_);
  }

  const std::shared_ptr<std::atomic<bool>>& cancelled() const { return cancelled_; }

 private:
  enum class State { kStreaming, kFailing, kFinished };

  void WriteNextLocked(std::unique_lock<std::mutex>& lock) {
    if (writing_ || pending_.empty() || state_ == State::kFinished) return;
    current_ = std::move(pending_.front());
    pending_.pop_front();
    writing_ = true;
    auto* r = reactor_;
    lock.unlock();
    r->StartWrite(&current_);
  }

  void FinishLocked(std::unique_lock<std::mutex>& lock, grpc::Status status, const absl::Status& st) {
    state_ = State::kFinished;
    auto* r = reactor_;
    lock.unlock();
    svc_->Count("Generate", st);
    r->Finish(std::move(status));
  }

  std::mutex mu_;
  grpc::ServerWriteReactor<GenerateResponse>* reactor_;
  DecoderServiceImpl* svc_;
  State state_ = State::kStreaming;
  bool writing_ = false;
  bool queued_ = false;  // waiting for the writer thread
  std::deque<GenerateResponse> pending_;
  GenerateResponse current_;  // the message being written (must outlive StartWrite)
  absl::Status error_;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
};

namespace {

class GenerateReactor final : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  GenerateReactor(DecoderServiceImpl* svc, grpc::CallbackServerContext* ctx,
                  const icae::v1::GenerateRequest* request)
      : stream_(std::make_shared<GenerateStream>(this, svc)) {
    absl::Status st = svc->StartGeneration(ctx, *request, stream_, stream_->cancelled());
    if (!st.ok()) {
      LOG(INFO) << "generate request_id=" << server::LogSafe(request->request_id())
                << " rejected: " << server::LogSafe(st.ToString(), server::kMaxStatusMessageBytes);
      stream_->Fail(st);
    }
  }
  void OnWriteDone(bool ok) override { stream_->OnWriteDone(ok); }
  void OnCancel() override { stream_->OnCancel(); }
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<GenerateStream> stream_;
};

}  // namespace

StreamWriter::StreamWriter(absl::Duration poll) : poll_(poll), thread_([this] { Run(); }) {}

bool StreamWriter::sleeping() {
  std::lock_guard<std::mutex> lock(mu_);
  return sleeping_;
}

StreamWriter::~StreamWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    has_work_.store(true);
  }
  cv_.notify_all();
  thread_.join();
}

void StreamWriter::Enqueue(std::shared_ptr<Stream> stream) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(stream));
    has_work_.store(true);
    wake = sleeping_;
  }
  if (wake) {
    wakeups_.fetch_add(1);
    cv_.notify_one();
  }
}

void StreamWriter::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  size_t last_batch = 0;
  while (true) {
    if (queue_.empty() && !stop_ && last_batch == 1) {
      // After a batch of one stream only (one stream decoding: the other cores are idle), poll,
      // yielding the core to any thread that is ready to run, then sleep. Under load polling
      // cost more than it saved: a thread that never sleeps sent the gRPC threads to the
      // model's core, and 8-stream steps took 20% longer.
      lock.unlock();
      const absl::Time until = absl::Now() + poll_;
      while (!has_work_.load() && absl::Now() < until) std::this_thread::yield();
      lock.lock();
    }
    if (queue_.empty() && !stop_) {
      sleeping_ = true;
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      sleeping_ = false;
    }
    if (stop_) return;
    std::deque<std::shared_ptr<Stream>> batch;
    batch.swap(queue_);
    has_work_.store(false);
    last_batch = batch.size();
    lock.unlock();
    for (auto& s : batch) s->WritePending();
    batch.clear();  // a finished stream's last reference may go here, outside the lock
    lock.lock();
  }
}

DecoderServiceImpl::DecoderServiceImpl(const server::ApiKeyAuthenticator& auth,
                                       server::MetricsRegistry& metrics)
    : rpc_("decoder", auth, metrics) {}

absl::Status DecoderServiceImpl::StartGeneration(grpc::CallbackServerContext* ctx,
                                                 const icae::v1::GenerateRequest& request,
                                                 std::shared_ptr<GenerationSink> sink,
                                                 std::shared_ptr<std::atomic<bool>> cancelled) {
  auto tenant = rpc_.auth().Authenticate(ctx->client_metadata());
  if (!tenant.ok()) return tenant.status();
  auto core = rpc_.core();
  if (!core.ok()) return core.status();
  auto seq = (*core)->Prepare(request, *tenant);
  if (!seq.ok()) return seq.status();
  absl::Time deadline = absl::InfiniteFuture();
  if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
    deadline = absl::FromChrono(ctx->deadline());
  }
  return (*core)->Submit(std::move(*seq), std::move(sink), std::move(cancelled), deadline);
}

grpc::ServerWriteReactor<icae::v1::GenerateResponse>* DecoderServiceImpl::Generate(
    grpc::CallbackServerContext* ctx, const icae::v1::GenerateRequest* request) {
  return new GenerateReactor(this, ctx, request);
}

grpc::ServerUnaryReactor* DecoderServiceImpl::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                           const icae::v1::GetModelInfoRequest*,
                                                           icae::v1::ModelInfo* response) {
  return rpc_.GetModelInfo(ctx, response);
}

}  // namespace icae::decoder
