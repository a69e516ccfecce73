#include "encoder_service/encoder_core.h"

#include <c10/core/InferenceMode.h>
#include <glog/logging.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "common/server/log_safe.h"
#include "common/server/status.h"
#include "common/server/slot_identity.h"
#include "common/util/status_macros.h"

namespace icae::encoder {
namespace {

CompressorOptions MakeCompressorOptions(const EncoderOptions& o) {
  CompressorOptions c;
  c.max_context_tokens = o.max_context_tokens;
  c.max_segments_per_batch = o.max_segments_per_pass;
  return c;
}

}  // namespace

EncoderCore::EncoderCore(const server::ModelBundle& bundle, slot_store::SlotStore& store,
                         EncoderOptions options, server::MetricsRegistry& m)
    : bundle_(bundle),
      store_(store),
      options_(options),
      compressor_(bundle.model(), bundle.adapter(), MakeCompressorOptions(options)) {
  max_context_tokens_ = compressor_.max_context_tokens();
  waiting_ = m.AddGauge("icae_encoder_requests_waiting", "Encode requests queued for a batch");
  running_gauge_ = m.AddGauge("icae_encoder_requests_running", "Encode requests being computed");
  encoded_tokens_ = m.AddCounter("icae_encoded_tokens_total", "Context tokens compressed into slots");
  cache_hits_ = m.AddCounter("icae_slot_cache_hits_total", "Encode requests whose slots were already stored",
                             {{"service", "encoder"}});
  cache_misses_ = m.AddCounter("icae_slot_cache_misses_total", "Encode requests that had to compute slots",
                               {{"service", "encoder"}});
  batch_size_ = m.AddHistogram("icae_encoder_batch_size", "Distinct contexts per compression pass",
                               {1, 2, 4, 8, 16, 32, 64});
  queue_time_ = m.AddHistogram("icae_encoder_queue_time_seconds", "Time an Encode request waited for its batch",
                               server::LatencyBuckets());
  compress_time_ = m.AddHistogram("icae_encoder_compress_seconds", "Duration of one compression pass",
                                  server::LatencyBuckets());
  thread_ = std::thread([this] { Loop(); });
}

EncoderCore::~EncoderCore() { Stop(); }

absl::StatusOr<EncodeJob> EncoderCore::Prepare(const icae::v1::EncodeRequest& r,
                                               const std::string& tenant) const {
  return PrepareEncodeJob(bundle_, options_, max_context_tokens_, r, tenant);
}

void EncoderCore::Submit(EncodeJob job, EncodeCallback done) {
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_ || stop_) {
      refused = absl::UnavailableError("encoder is shutting down");
    } else if (static_cast<int64_t>(queue_.size()) >= options_.max_queue) {
      refused = absl::ResourceExhaustedError(
          absl::StrCat("encode queue is full (", options_.max_queue, " waiting, --max_queue)"));
    } else {
      queue_.push_back(Pending{std::move(job), std::move(done), absl::Now()});
      waiting_->Set(static_cast<double>(queue_.size()));
    }
  }
  // Answer outside the lock: the callback finishes the RPC.
  if (!refused.ok()) {
    done(refused);
    return;
  }
  cv_.notify_all();
}

void EncoderCore::StartDraining() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

int64_t EncoderCore::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size()) + running_;
}

void EncoderCore::CancelAll() {
  std::deque<Pending> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(queue_);
    waiting_->Set(0);
  }
  // Answer outside the lock: the callbacks finish the RPCs.
  for (auto& p : left) p.done(absl::CancelledError("cancelled before encoding: the grace period is over"));
}

void EncoderCore::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EncoderCore::Loop() {
  c10::InferenceMode guard;
  while (true) {
    std::vector<Pending> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) {
        std::deque<Pending> left = std::move(queue_);
        queue_.clear();
        waiting_->Set(0);
        lock.unlock();
        for (auto& p : left) p.done(absl::UnavailableError("encoder stopped"));
        return;
      }
      // Wait a little for company unless the batch is already full.
      absl::Time until = queue_.front().enqueued + options_.batch_wait;
      while (!stop_ && static_cast<int64_t>(queue_.size()) < options_.max_batch && absl::Now() < until) {
        cv_.wait_for(lock, std::chrono::microseconds(absl::ToInt64Microseconds(until - absl::Now())));
      }
      while (!queue_.empty() && static_cast<int64_t>(batch.size()) < options_.max_batch) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      running_ = static_cast<int64_t>(batch.size());
      waiting_->Set(static_cast<double>(queue_.size()));
      running_gauge_->Set(static_cast<double>(running_));
    }
    RunBatch(batch);
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = 0;
      running_gauge_->Set(0);
    }
  }
}

void EncoderCore::RunBatch(std::vector<Pending>& batch) {
  const absl::Time now = absl::Now();
  // Callers that went away (cancel, deadline) are answered now and not computed.
  std::vector<Pending> live;
  for (auto& p : batch) {
    if (p.job.is_cancelled && p.job.is_cancelled()) {
      p.done(absl::CancelledError("the caller went away before its context was encoded"));
    } else {
      live.push_back(std::move(p));
    }
  }
  batch = std::move(live);
  // Distinct contexts (per tenant) → the jobs that asked for them.
  struct Group {
    std::string slot_id, store_key;
    const EncodeJob* job;
    std::vector<size_t> members;
    bool want_slots = false;
    absl::StatusOr<icae::v1::EncodeResponse> result = absl::UnknownError("not computed");
  };
  std::map<std::string, Group> groups;
  for (size_t i = 0; i < batch.size(); ++i) {
    queue_time_->Observe(absl::ToDoubleSeconds(now - batch[i].enqueued));
    const EncodeJob& j = batch[i].job;
    server::SlotAddress address = server::AddressOf(bundle_, j.tenant, j.ids);
    Group& g = groups[address.store_key];
    if (g.members.empty()) {
      g.slot_id = std::move(address.slot_id);
      g.store_key = std::move(address.store_key);
      g.job = &j;
    }
    g.members.push_back(i);
    g.want_slots |= j.return_slots;
  }
  // Already stored? Those are cache hits; the rest are compressed together. A hit is a record
  // that passes the full validation (Get verifies it; the fingerprints must be ours), not a
  // name in the store: a corrupt or non-finite record must never be answered `cached`, it is
  // computed again and the Put overwrites it.
  std::vector<Group*> todo;
  for (auto& [key, g] : groups) {
    absl::StatusOr<icae::v1::EncodeResponse> hit = absl::NotFoundError("");
    auto rec = store_.Get(key);
    if (rec.ok()) {
      auto view = slot_store::ParseSlotRecordView(**rec);
      if (view.ok() && slot_store::CheckSlotRecordFingerprints(view->header, bundle_.model_fingerprint(),
                                                               bundle_.adapter_fingerprint()).ok()) {
        icae::v1::EncodeResponse r;
        r.set_slot_id(g.slot_id);
        r.set_token_count(static_cast<int64_t>(view->header.token_count));
        r.set_slot_count(static_cast<int64_t>(view->header.n_slots));
        r.set_segment_count(view->header.segment_count);
        r.set_cached(true);
        if (g.want_slots) {
          r.mutable_slots()->set_data(std::string(view->payload));
          r.mutable_slots()->set_dtype(server::ToProtoDType(view->header.dtype));
          r.mutable_slots()->add_shape(static_cast<int64_t>(view->header.n_slots));
          r.mutable_slots()->add_shape(static_cast<int64_t>(view->header.hidden_size));
        }
        hit = std::move(r);
      }
    } else if (rec.status().code() == absl::StatusCode::kUnavailable) {
      hit = rec.status();
    }
    if (hit.ok() || hit.status().code() == absl::StatusCode::kUnavailable) {
      if (hit.ok()) cache_hits_->Increment(static_cast<double>(g.members.size()));
      g.result = std::move(hit);
    } else {
      cache_misses_->Increment(static_cast<double>(g.members.size()));
      todo.push_back(&g);
    }
  }
  if (!todo.empty()) {
    std::vector<std::vector<int64_t>> contexts;
    for (Group* g : todo) contexts.push_back(g->job->ids);
    batch_size_->Observe(static_cast<double>(contexts.size()));
    const absl::Time t0 = absl::Now();
    auto out = compressor_.Compress(contexts);
    compress_time_->Observe(absl::ToDoubleSeconds(absl::Now() - t0));
    for (size_t k = 0; k < todo.size(); ++k) {
      Group& g = *todo[k];
      if (!out.ok()) {
        g.result = out.status();
        continue;
      }
      const CompressedContext& c = (*out)[k];
      slot_store::SlotRecord record = server::MakeSlotRecord(bundle_, c);
      absl::Status put = store_.PutRecord(g.store_key, record);
      if (!put.ok()) {
        // The store refusing our own record (e.g. non-finite slots from a broken model) is
        // the server's fault, not the client's input.
        if (absl::IsInvalidArgument(put)) put = absl::InternalError(absl::StrCat("encoded record refused: ", put.message()));
        g.result = put;
        continue;
      }
      encoded_tokens_->Increment(static_cast<double>(c.num_tokens));
      icae::v1::EncodeResponse r;
      r.set_slot_id(g.slot_id);
      r.set_token_count(c.num_tokens);
      r.set_slot_count(c.slots.size(0));
      r.set_segment_count(c.num_segments);
      r.set_cached(false);
      if (g.want_slots) {
        r.mutable_slots()->set_data(std::move(record.payload));
        r.mutable_slots()->set_dtype(server::ToProtoDType(record.header.dtype));
        r.mutable_slots()->add_shape(c.slots.size(0));
        r.mutable_slots()->add_shape(c.slots.size(1));
      }
      g.result = std::move(r);
    }
  }
  for (auto& [key, g] : groups) {
    for (size_t n = 0; n < g.members.size(); ++n) {
      Pending& p = batch[g.members[n]];
      if (!g.result.ok()) {
        LOG(WARNING) << "encode request_id=" << server::LogSafe(p.job.request_id)
                     << " tenant=" << server::LogSafe(p.job.tenant)
                     << " failed: " << server::LogSafe(g.result.status().ToString(), server::kMaxStatusMessageBytes);
        p.done(g.result.status());
        continue;
      }
      icae::v1::EncodeResponse r = *g.result;
      // The second request for a context computed in this batch finds it computed: cached.
      if (n > 0) r.set_cached(true);
      if (!p.job.return_slots) r.clear_slots();
      LOG(INFO) << "encode request_id=" << server::LogSafe(p.job.request_id) << " slot_id=" << r.slot_id()
              << " tokens=" << r.token_count() << " cached=" << r.cached();
      p.done(std::move(r));
    }
  }
}

icae::v1::ModelInfo EncoderCore::Info() const {
  return server::BaseModelInfo(bundle_, max_context_tokens_, options_.max_request_id_bytes);
}

}  // namespace icae::encoder
