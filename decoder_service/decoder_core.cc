#include "decoder_service/decoder_core.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <glog/logging.h>

#include <algorithm>
#include <optional>
#include <random>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "common/icae/prompt.h"
#include "common/model/cpu_gemv.h"
#include "common/model/sampler.h"
#include "common/server/log_safe.h"
#include "common/server/slot_identity.h"
#include "common/slot_store/slot_id.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/status_macros.h"
#include "decoder_service/step_threads.h"

namespace icae::decoder {

namespace {

const char* FinishReasonLabel(icae::v1::FinishReason r) {
  switch (r) {
    case icae::v1::FINISH_REASON_EOS: return "eos";
    case icae::v1::FINISH_REASON_LENGTH: return "length";
    case icae::v1::FINISH_REASON_STOP_SEQUENCE: return "stop_sequence";
    case icae::v1::FINISH_REASON_STOP_TOKEN: return "stop_token";
    case icae::v1::FINISH_REASON_CANCELLED: return "cancelled";
    default: return "error";
  }
}

}  // namespace

DecoderCore::DecoderCore(const server::ModelBundle& bundle, slot_store::SlotStore& store,
                         DecoderOptions options, server::MetricsRegistry& r)
    : bundle_(bundle), store_(store), options_(options), prefix_cache_(options.prefix_cache_bytes) {
  max_context_tokens_ = options_.max_context_tokens > 0 ? options_.max_context_tokens
                                                        : bundle.adapter().config.max_context_tokens;
  m_.registry = &r;
  m_.running = r.AddGauge("icae_requests_running", "Sequences in the running batch");
  m_.waiting = r.AddGauge("icae_requests_waiting", "Requests admitted and waiting for the batch");
  m_.kv_bytes = r.AddGauge("icae_kv_cache_bytes", "Bytes of KV cache held by running sequences");
  m_.kv_reserved = r.AddGauge("icae_kv_cache_reserved_bytes",
                              "KV cache bytes reserved by running sequences (admission bound: --kv_cache_bytes)");
  kv_bytes_per_position_ = bundle.model().NewCache(1).bytes();
  m_.ttft = r.AddHistogram("icae_time_to_first_token_seconds", "Request arrival to first token",
                           server::LatencyBuckets());
  m_.itl = r.AddHistogram("icae_inter_token_latency_seconds", "Time between consecutive tokens",
                          server::LatencyBuckets());
  m_.e2e = r.AddHistogram("icae_e2e_request_latency_seconds", "Request arrival to final message",
                          server::LatencyBuckets());
  m_.queue_time = r.AddHistogram("icae_request_queue_time_seconds", "Arrival to admission into the batch",
                                 server::LatencyBuckets());
  m_.batch_size = r.AddHistogram("icae_batch_size", "Sequences per decoder step",
                                 {1, 2, 4, 8, 16, 32, 64, 128});
  m_.step_time = r.AddHistogram("icae_decode_step_seconds", "Duration of one scheduler step",
                                server::LatencyBuckets());
  m_.prefill_chunk = r.AddHistogram("icae_prefill_chunk_positions", "Input positions per prefill chunk",
                                    {16, 32, 64, 128, 256, 512, 1024, 2048, 4096});
  m_.prefill_time = r.AddHistogram("icae_prefill_seconds", "Duration of steps that prefilled new sequences",
                                   server::LatencyBuckets());
  m_.loop_time = r.AddHistogram(
      "icae_scheduler_loop_seconds",
      "Scheduler time per step outside the forward pass (planning, batch assembly, sampling, stop "
      "checks, detokenising, streaming), divided by the sequences in the step",
      {1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2});
  m_.prompt_tokens = r.AddCounter("icae_prompt_tokens_total", "Decoder input positions prefilled (slots included)");
  m_.generation_tokens = r.AddCounter("icae_generation_tokens_total", "Tokens generated");
  m_.slot_hits = r.AddCounter("icae_slot_cache_hits_total", "Slot lookups that found a record",
                              {{"service", "decoder"}});
  m_.slot_misses = r.AddCounter("icae_slot_cache_misses_total", "Slot lookups that found nothing",
                                {{"service", "decoder"}});
  m_.prefix_hits = r.AddCounter("icae_prefix_cache_hits_total",
                                "Requests that started from a cached slot-prefix KV");
  m_.prefix_misses = r.AddCounter("icae_prefix_cache_misses_total",
                                  "Requests with slots that found no cached slot-prefix KV");
  m_.prefix_bytes = r.AddGauge("icae_prefix_cache_bytes", "Bytes held by the slot-prefix KV cache");
  m_.step_threads = r.AddGauge("icae_decode_step_threads",
                               "Intra-op threads of the last decode-only step (--decode_step_threads)");
  thread_ = std::thread([this] { Loop(); });
  fetch_thread_ = std::thread([this] { FetchLoop(); });
}

DecoderCore::~DecoderCore() { Stop(); }

absl::StatusOr<std::unique_ptr<Sequence>> DecoderCore::Prepare(const icae::v1::GenerateRequest& r,
                                                               const std::string& tenant) const {
  return PrepareSequence(bundle_, options_, max_context_tokens_, r, tenant);
}

absl::Status DecoderCore::Fetch(Sequence* s) const {
  c10::InferenceMode guard;
  const std::string& tenant = s->tenant;
  const PromptMode mode = s->mode;
  std::vector<torch::Tensor> memories;
  std::vector<MemoryExtent> extents;
  for (size_t i = 0; i < s->slot_ids.size(); ++i) {
    const std::string& id = s->slot_ids[i];
    const std::string key = server::TenantStoreKey(tenant, id);
    auto rec = store_.Get(key);
    absl::Status bad = rec.status();
    if (!rec.ok() && bad.code() == absl::StatusCode::kNotFound) {
      m_.slot_misses->Increment();
      return absl::NotFoundError(
          absl::StrCat("slot_ids[", i, "]: slot ", id, " not found (unknown or evicted): encode the context again"));
    }
    absl::StatusOr<slot_store::SlotRecordView> view = absl::UnknownError("no record");
    if (rec.ok()) {
      m_.slot_hits->Increment();
      view = slot_store::ParseSlotRecordView(**rec);
      bad = view.status();
    }
    if (!bad.ok()) {
      // A corrupt record must not stay in any tier (the local LRU included): the next Get
      // then says NOT_FOUND and the client re-encodes.
      if (bad.code() == absl::StatusCode::kDataLoss) (void)store_.Delete(key);
      return absl::Status(bad.code(), absl::StrCat("slot_ids[", i, "]: ", bad.message()));
    }
    ASSIGN_OR_RETURN(torch::Tensor slots, server::SlotsFromRecord(bundle_, *view));
    // Slot IDs are content addresses, so tenant + lead + IDs name the prefix's KV exactly. The
    // lead is the same for every mode but instruct (autoencode, continue and raw share keys).
    if (i == 0) {
      s->prefix_positions = LeadPositions(bundle_.adapter(), mode);
      s->prefix_keys.push_back(absl::StrCat(tenant.size(), ":", tenant, "|",
                                            mode == PromptMode::kInstruct ? "instruct" : "plain"));
    } else {
      s->prefix_keys.push_back(s->prefix_keys.back());
    }
    absl::StrAppend(&s->prefix_keys.back(), "|", id);
    s->prefix_positions += slots.size(0);
    s->slot_count += slots.size(0);
    s->context_tokens += static_cast<int64_t>(view->header.token_count);
    extents.push_back({slots.size(0), static_cast<int64_t>(std::min<uint64_t>(view->header.token_count, uint64_t{1} << 62))});
    memories.push_back(std::move(slots));
  }
  if (!s->context_ids.empty()) {
    ASSIGN_OR_RETURN(torch::Tensor mem, ContextAsMemory(bundle_.model(), s->context_ids));
    s->slot_count = mem.size(0);
    s->context_tokens = mem.size(0);
    extents.push_back({mem.size(0), mem.size(0)});
    memories.push_back(std::move(mem));
  }
  ASSIGN_OR_RETURN(s->input, AssembleDecoderInput(bundle_.model(), bundle_.adapter(), mode, memories, s->prompt));
  ASSIGN_OR_RETURN(s->input_positions, DecoderInputPositions(bundle_.adapter(), mode, extents, s->input.size(0)));
  s->prompt_tokens = s->input.size(0) - s->slot_count;
  const int64_t positions = bundle_.model().config().max_position_embeddings;
  if (s->input.size(0) + s->max_new_tokens > positions) {
    return absl::InvalidArgumentError(absl::StrCat("input (", s->input.size(0), " positions) + max_new_tokens (",
                                                   s->max_new_tokens, ") exceeds the model's context of ", positions));
  }
  s->kv_reserved = (s->input.size(0) + s->max_new_tokens) * kv_bytes_per_position_;
  if (s->kv_reserved > options_.kv_cache_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "input (", s->input.size(0), " positions) + max_new_tokens (", s->max_new_tokens, ") needs ", s->kv_reserved,
        " bytes of KV cache, more than the decoder's --kv_cache_bytes=", options_.kv_cache_bytes));
  }
  return absl::OkStatus();
}

absl::Status DecoderCore::Submit(std::unique_ptr<Sequence> seq, std::shared_ptr<GenerationSink> sink,
                                 std::shared_ptr<std::atomic<bool>> cancelled, absl::Time deadline) {
  seq->sink = std::move(sink);
  seq->cancelled = std::move(cancelled);
  seq->deadline = deadline;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_ || stop_) return absl::UnavailableError("decoder is shutting down");
    if (WaitingLocked() >= options_.max_queue) {
      return absl::ResourceExhaustedError(
          absl::StrCat("decoder queue is full (", options_.max_queue, " waiting, --max_queue)"));
    }
    fetch_queue_.push_back(std::move(seq));
    m_.waiting->Set(static_cast<double>(WaitingLocked()));
  }
  cv_.notify_all();
  return absl::OkStatus();
}

int64_t DecoderCore::WaitingLocked() const {
  return static_cast<int64_t>(fetch_queue_.size() + queue_.size()) + fetching_;
}

void DecoderCore::FetchLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !fetch_queue_.empty(); });
    if (stop_) break;
    std::unique_ptr<Sequence> s = std::move(fetch_queue_.front());
    fetch_queue_.pop_front();
    ++fetching_;
    lock.unlock();
    // Store I/O (a Redis round trip, say) and input assembly, off the gRPC threads and off
    // the scheduler's steps.
    absl::Status st;
    if (s->cancelled && s->cancelled->load()) {
      st = absl::CancelledError("cancelled by the client");
    } else if (absl::Now() >= s->deadline) {
      st = absl::DeadlineExceededError("deadline exceeded");
    } else {
      st = Fetch(s.get());
    }
    if (!st.ok()) {
      LOG(INFO) << "generate request_id=" << server::LogSafe(s->request_id)
                << " rejected: " << server::LogSafe(st.ToString());
      s->sink->Fail(st);
    }
    lock.lock();
    --fetching_;
    // After Stop the scheduler may be gone: nothing joins its queue then.
    if (st.ok() && !stop_) queue_.push_back(std::move(s));
    m_.waiting->Set(static_cast<double>(WaitingLocked()));
    cv_.notify_all();
    if (st.ok() && s != nullptr) {
      lock.unlock();
      s->sink->Fail(absl::UnavailableError("decoder stopped"));
      lock.lock();
    }
  }
  std::deque<std::unique_ptr<Sequence>> left;
  left.swap(fetch_queue_);
  lock.unlock();
  for (auto& s : left) s->sink->Fail(absl::UnavailableError("decoder stopped"));
}

void DecoderCore::StartDraining() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

int64_t DecoderCore::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return WaitingLocked() + running_;
}

int64_t DecoderCore::Running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

void DecoderCore::CancelAll() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_all_ = true;
  }
  cv_.notify_all();
}

void DecoderCore::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (fetch_thread_.joinable()) fetch_thread_.join();
  if (thread_.joinable()) thread_.join();
}

void DecoderCore::Finish(Sequence& s, icae::v1::FinishReason reason, const std::string& stop_text,
                         int64_t stop_id, std::string tail_text) {
  const absl::Time now = absl::Now();
  icae::v1::GenerateResponse msg;
  msg.set_text(std::move(tail_text));
  auto* f = msg.mutable_final();
  f->set_finish_reason(reason);
  f->set_stop_sequence(stop_text);
  f->set_stop_token_id(stop_id);
  f->set_seed(s.sampling.seed);
  f->set_request_id(s.request_id);
  f->mutable_usage()->set_slot_count(s.slot_count);
  f->mutable_usage()->set_prompt_tokens(s.prompt_tokens);
  f->mutable_usage()->set_completion_tokens(s.generated);
  f->mutable_usage()->set_context_tokens(s.context_tokens);
  f->mutable_usage()->set_cached_prefix_tokens(s.cached_prefix_tokens);
  f->mutable_timings()->set_queue_seconds(absl::ToDoubleSeconds(s.admitted - s.arrival));
  if (s.generated > 0) {
    f->mutable_timings()->set_time_to_first_token_seconds(absl::ToDoubleSeconds(s.first_token - s.arrival));
  }
  f->mutable_timings()->set_total_seconds(absl::ToDoubleSeconds(now - s.arrival));
  m_.e2e->Observe(absl::ToDoubleSeconds(now - s.arrival));
  m_.registry->AddCounter("icae_request_success_total", "Finished generations by finish reason",
                          {{"finish_reason", FinishReasonLabel(reason)}})->Increment();
  LOG(INFO) << "generate request_id=" << server::LogSafe(s.request_id) << " finish=" << FinishReasonLabel(reason)
            << " slots=" << s.slot_count << " prompt_tokens=" << s.prompt_tokens
            << " cached_prefix_tokens=" << s.cached_prefix_tokens << " tokens=" << s.generated
            << " ttft_ms=" << (s.generated > 0 ? absl::ToDoubleMilliseconds(s.first_token - s.arrival) : 0)
            << " total_ms=" << absl::ToDoubleMilliseconds(now - s.arrival);
  s.sink->Send(std::move(msg));
  s.state = SequenceState::kFinished;
}

void DecoderCore::Loop() {
  c10::InferenceMode guard;
  // The process's intra-op threads, as this thread sees them; decode-only steps may use fewer.
  const int all_threads = at::get_num_threads();
  const int fixed_threads = static_cast<int>(std::min<int64_t>(options_.decode_step_threads, all_threads));
  StepThreads step_threads(all_threads, fixed_threads);
  StepThreads small_prefill_threads(all_threads, fixed_threads);
  int applied = all_threads;
  const Transformer& model = bundle_.model();
  const bool small_steps_on_kernels = model.packed_weight_bytes() > 0 || model.int8_weight_bytes() > 0;
  std::vector<std::unique_ptr<Sequence>> running;  // admission order
  std::vector<std::unique_ptr<Sequence>> gone;     // left the queue this step
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || cancel_all_ || !queue_.empty() || !running.empty(); });
      if (stop_ || cancel_all_) {
        for (auto& s : queue_) running.push_back(std::move(s));
        queue_.clear();
        if (cancel_all_ && !stop_) {
          for (auto& s : fetch_queue_) running.push_back(std::move(s));
          fetch_queue_.clear();
        }
        lock.unlock();
        for (auto& s : running) {
          if (s->admitted == absl::Time()) s->admitted = absl::Now();
          if (stop_) s->sink->Fail(absl::UnavailableError("decoder stopped"));
          else Finish(*s, icae::v1::FINISH_REASON_CANCELLED, "", 0, "");
        }
        running.clear();
        kv_reserved_ = 0;
        m_.kv_reserved->Set(0);
        lock.lock();
        running_ = 0;
        m_.running->Set(0);
        m_.kv_bytes->Set(0);
        m_.waiting->Set(0);
        cancel_all_ = false;
        if (stop_) return;
        continue;
      }
      // Queued requests whose client gave up or whose deadline passed leave now rather than
      // when they reach the batch: waiting for KV room can take long, and they hold places
      // in the queue. (Failed below, outside the lock.)
      const absl::Time now = absl::Now();
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (Gone(**it, now)) {
          gone.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      // Admit between steps, in arrival order, up to max_batch and while the KV reservations
      // fit kv_cache_bytes (the head waits rather than be overtaken); how much of their
      // prefill runs per step is Schedule's decision.
      while (!queue_.empty() && static_cast<int64_t>(running.size()) < options_.max_batch &&
             kv_reserved_ + queue_.front()->kv_reserved <= options_.kv_cache_bytes) {
        kv_reserved_ += queue_.front()->kv_reserved;
        running.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      m_.kv_reserved->Set(static_cast<double>(kv_reserved_));
      running_ = static_cast<int64_t>(running.size());
      m_.running->Set(static_cast<double>(running_));
      m_.waiting->Set(static_cast<double>(WaitingLocked()));
    }
    for (auto& s : gone) LeaveIfGone(*s, absl::Now());
    gone.clear();
    const absl::Time step_start = absl::Now();
    last_forward_ = absl::ZeroDuration();
    StepPlan plan = Schedule(running);
    const int64_t in_step = static_cast<int64_t>(plan.decode.size() + plan.prefill.size());
    if (!plan.decode.empty() || !plan.prefill.empty()) {
      // Decode-only steps on the threads StepThreads picks (timed from the forward to the
      // streamed tokens). A step that prefills runs on all of them unless its products all run
      // on the packed or int8 kernels (at most kMaxPackedRows rows: a short prompt beside the
      // decode rows): such a step gives the same bits on any number of threads
      // (tests/unit/model_test.cc), so its own StepThreads times it by its row count. Measured
      // on 2 cores, default model, a 16-token prompt after 130 cached positions: 0.8 ms on one
      // thread, 1.3 ms on two.
      const bool decode_only = plan.prefill.empty();
      const int64_t batch = static_cast<int64_t>(plan.decode.size());
      int64_t rows = batch;
      for (const auto& chunk : plan.prefill) rows += chunk.length;
      StepThreads* timed = decode_only ? &step_threads
                           : small_steps_on_kernels && rows <= kMaxPackedRows ? &small_prefill_threads
                                                                                : nullptr;
      const int threads = timed != nullptr ? timed->Choose(rows) : all_threads;
      if (threads != applied) {
        StepThreads::Apply(threads);
        applied = threads;
      }
      if (decode_only) m_.step_threads->Set(threads);
      const absl::Time t0 = absl::Now();
      absl::StatusOr<torch::Tensor> logits = Execute(plan);
      if (logits.ok()) {
        Update(plan, *logits);
        if (timed != nullptr) timed->Record(rows, threads, absl::ToDoubleSeconds(absl::Now() - t0));
      } else {
        LOG(ERROR) << "forward failed: " << logits.status();
        for (auto& s : running) {
          s->sink->Fail(absl::InternalError(absl::StrCat("forward failed: ", logits.status().message())));
          s->state = SequenceState::kFinished;
        }
      }
    }
    running.erase(std::remove_if(running.begin(), running.end(),
                                 [&](const std::unique_ptr<Sequence>& s) {
                                   if (s->state != SequenceState::kFinished) return false;
                                   kv_reserved_ -= s->kv_reserved;
                                   return true;
                                 }),
                  running.end());
    m_.kv_reserved->Set(static_cast<double>(kv_reserved_));
    int64_t kv_bytes = 0;
    for (const auto& s : running) kv_bytes += s->cache ? s->cache->bytes() : 0;
    m_.kv_bytes->Set(static_cast<double>(kv_bytes));
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = static_cast<int64_t>(running.size());
      m_.running->Set(static_cast<double>(running_));
    }
    if (in_step > 0) {
      m_.loop_time->Observe(absl::ToDoubleSeconds(absl::Now() - step_start - last_forward_) /
                            static_cast<double>(in_step));
    }
  }
}

bool DecoderCore::Gone(const Sequence& s, absl::Time now) {
  return (s.cancelled && s.cancelled->load()) || now >= s.deadline;
}

bool DecoderCore::LeaveIfGone(Sequence& s, absl::Time now) {
  if (!Gone(s, now)) return false;
  if (s.cancelled && s.cancelled->load()) {
    LOG(INFO) << "generate request_id=" << server::LogSafe(s.request_id) << " cancelled after " << s.generated << " tokens";
    s.sink->Fail(absl::CancelledError("cancelled by the client"));
  } else {
    LOG(INFO) << "generate request_id=" << server::LogSafe(s.request_id) << " deadline exceeded after " << s.generated << " tokens";
    s.sink->Fail(absl::DeadlineExceededError("deadline exceeded"));
  }
  s.state = SequenceState::kFinished;
  return true;
}

DecoderCore::StepPlan DecoderCore::Schedule(std::vector<std::unique_ptr<Sequence>>& running) {
  const absl::Time now = absl::Now();
  StepPlan plan;
  int64_t budget = options_.max_prefill_tokens;
  // Chunks only while streams are decoding: they are what a long prefill step would stall.
  // Alone, a prefill runs whole, since every extra step costs a pass over the weights.
  const bool chunked = options_.prefill_chunk > 0 &&
                       std::any_of(running.begin(), running.end(), [](const std::unique_ptr<Sequence>& s) {
                         return s->state == SequenceState::kDecoding;
                       });
  // Slot prefixes a prefilling sequence is computing: a waiting sequence that needs one of
  // them waits for it to reach the prefix cache instead of computing it a second time.
  std::unordered_set<std::string> computing;
  for (const auto& p : running) {
    if (p->state == SequenceState::kPrefilling && ComputesPrefix(*p)) computing.insert(p->prefix_keys.back());
  }
  for (auto& p : running) {
    Sequence& s = *p;
    // Leave: cancelled by the client, or past the deadline. Their caches go with them.
    if (LeaveIfGone(s, now)) continue;
    if (s.state == SequenceState::kDecoding) {
      plan.decode.push_back(&s);
      continue;
    }
    // Prefill, in admission order, within the step's budget of input positions.
    if (budget <= 0) continue;
    PrefillChunk chunk;
    chunk.seq = &s;
    if (s.state == SequenceState::kWaiting) {
      if (!s.prefix_looked_up &&
          std::any_of(s.prefix_keys.begin(), s.prefix_keys.end(),
                      [&](const std::string& key) { return computing.count(key) > 0; })) {
        continue;
      }
      // Looked up once; the entry stays pinned from here until the sequence finishes.
      if (!s.prefix_looked_up) s.prefix = FindPrefix(s);
      s.prefix_looked_up = true;
      if (ComputesPrefix(s)) computing.insert(s.prefix_keys.back());
      chunk.prefix = s.prefix;
      chunk.start = s.cached_prefix_tokens;
    } else {
      chunk.start = s.prefilled;
    }
    const int64_t remaining = s.input.size(0) - chunk.start;
    int64_t n = remaining;
    if (chunked) n = std::min(n, options_.prefill_chunk);
    // A sequence that computes a slot prefix for the cache prefills the prefix apart from the
    // positions after it, so that those are computed exactly as for a later request that finds
    // the prefix cached (the same rows per product, so the same kernels and sums): a greedy
    // answer does not depend on whether the cache held its slots.
    if (ComputesPrefix(s) && chunk.start < s.prefix_positions) {
      n = std::min(n, s.prefix_positions - chunk.start);
    }
    if (n > budget) {
      if (chunked) {
        n = budget;  // chunked: fill what the step has left
      } else if (!plan.prefill.empty()) {
        budget = 0;  // unchunked: whole prefills, at least one per step so none starves
        continue;
      }
    }
    budget -= n;
    chunk.length = n;
    if (s.state == SequenceState::kWaiting) {
      s.state = SequenceState::kPrefilling;
      s.admitted = now;
      m_.queue_time->Observe(absl::ToDoubleSeconds(now - s.arrival));
      m_.prompt_tokens->Increment(static_cast<double>(s.input.size(0) - s.cached_prefix_tokens));
      s.sampler = std::make_unique<Sampler>(s.sampling);
      s.detok = std::make_unique<IncrementalDecoder>(bundle_.tokenizer());
      s.stop = std::make_unique<StopDecision>(
          bundle_.model().config(), StopCriteria{s.max_new_tokens, s.stop_token_ids, s.stop_sequences, s.ignore_eos});
    }
    plan.prefill.push_back(std::move(chunk));
  }
  return plan;
}

absl::StatusOr<torch::Tensor> DecoderCore::Execute(const StepPlan& plan) {
  const Transformer& model = bundle_.model();
  // One packed batch: one id per decoding sequence, then each prefill chunk's embeddings.
  // Logits come back one row per entry, in this order.
  std::vector<SequenceInput> batch;
  for (Sequence* s : plan.decode) {
    SequenceInput in;
    in.ids = torch::tensor({s->last_token}, torch::kInt64);
    in.cache = &*s->cache;
    batch.push_back(std::move(in));
  }
  for (const PrefillChunk& c : plan.prefill) {
    Sequence& s = *c.seq;
    if (!s.cache) {
      const int64_t capacity = s.input.size(0) + s.max_new_tokens;
      if (c.prefix != nullptr) {
        // Shared, not copied: the cache reads the entry's positions in place and pins it.
        s.cache.emplace(KVCache::Extending(c.prefix, s.cached_prefix_tokens, capacity));
      } else {
        s.cache.emplace(model.NewCache(capacity));
      }
      s.prefix.reset();
    }
    m_.prefill_chunk->Observe(static_cast<double>(c.length));
    SequenceInput in;
    in.embeds = s.input.narrow(0, c.start, c.length);
    in.positions = s.input_positions.narrow(0, c.start, c.length);
    in.cache = &*s.cache;
    batch.push_back(std::move(in));
  }
  m_.batch_size->Observe(static_cast<double>(batch.size()));
  const absl::Time t0 = absl::Now();
  auto logits = model.Forward(batch);
  const absl::Time t1 = absl::Now();
  last_forward_ = t1 - t0;
  m_.step_time->Observe(absl::ToDoubleSeconds(t1 - t0));
  if (!plan.prefill.empty()) m_.prefill_time->Observe(absl::ToDoubleSeconds(t1 - t0));
  if (!logits.ok()) return logits.status();
  return logits->to(torch::kCPU, torch::kFloat32).contiguous();
}

void DecoderCore::Update(const StepPlan& plan, const torch::Tensor& rows) {
  const int64_t vocab = rows.size(1);
  const int64_t limit = std::min<int64_t>(bundle_.base_vocab_size(), vocab);
  const float* data = rows.data_ptr<float>();
  int64_t row = 0;
  for (Sequence* s : plan.decode) Advance(*s, data + (row++) * vocab, limit);
  for (const PrefillChunk& c : plan.prefill) {
    Sequence& s = *c.seq;
    const float* r = data + (row++) * vocab;
    s.prefilled = c.start + c.length;
    if (s.prefilled >= s.prefix_positions) OfferPrefix(s);
    if (s.prefilled < s.input.size(0)) continue;  // a middle chunk: its logits are not used
    s.input = torch::Tensor();                     // the cache holds what is needed now
    s.input_positions = torch::Tensor();
    s.state = SequenceState::kDecoding;
    Advance(s, r, limit);
  }
}

void DecoderCore::Advance(Sequence& s, const float* row, int64_t limit) {
  const int64_t next = s.sampler->Next(row, limit, s.history);
  if (s.stop->EndsBefore(next)) {
    FinishOnStop(s);
    return;
  }
  const absl::Time t = absl::Now();
  if (s.generated == 0) {
    s.first_token = t;
    m_.ttft->Observe(absl::ToDoubleSeconds(t - s.arrival));
  } else {
    m_.itl->Observe(absl::ToDoubleSeconds(t - s.last_token_time));
  }
  s.last_token_time = t;
  s.generated++;
  s.last_token = next;
  s.history.push_back(next);
  m_.generation_tokens->Increment();
  icae::v1::GenerateResponse chunk;
  chunk.add_token_ids(next);
  chunk.set_text(s.stop->Output(s.detok->Push(static_cast<int32_t>(next))));
  s.sink->Send(std::move(chunk));
  if (s.stop->done()) FinishOnStop(s);
}

void DecoderCore::FinishOnStop(Sequence& s) {
  std::string tail = s.stop->Finish(s.detok->Flush());
  icae::v1::FinishReason reason = icae::v1::FINISH_REASON_LENGTH;
  switch (s.stop->finish_reason()) {
    case FinishReason::kEos: reason = icae::v1::FINISH_REASON_EOS; break;
    case FinishReason::kStopToken: reason = icae::v1::FINISH_REASON_STOP_TOKEN; break;
    case FinishReason::kStopSequence: reason = icae::v1::FINISH_REASON_STOP_SEQUENCE; break;
    case FinishReason::kLength:
    case FinishReason::kCaller: break;
  }
  Finish(s, reason, s.stop->stop_sequence(), s.stop->stop_token_id(), std::move(tail));
}

std::shared_ptr<const KVCache> DecoderCore::FindPrefix(Sequence& s) {
  if (prefix_cache_.max_bytes() == 0 || s.prefix_keys.empty()) return nullptr;
  // Longest first: [A, B] reuses [A, B], else [A] and extends it.
  for (size_t k = s.prefix_keys.size(); k-- > 0;) {
    std::shared_ptr<const KVCache> entry = prefix_cache_.Lookup(s.prefix_keys[k]);
    if (entry == nullptr) continue;
    // The last input position is always computed: its logits choose the first token.
    const int64_t n = std::min(entry->length(), s.input.size(0) - 1);
    if (n <= 0) break;
    s.cached_prefix_tokens = n;
    s.cached_prefix_sets = k + 1;
    m_.prefix_hits->Increment();
    return entry;
  }
  m_.prefix_misses->Increment();
  return nullptr;
}

bool DecoderCore::ComputesPrefix(const Sequence& s) const {
  return prefix_cache_.max_bytes() > 0 && !s.prefix_keys.empty() && !s.prefix_offered &&
         s.cached_prefix_sets < s.prefix_keys.size();
}

void DecoderCore::OfferPrefix(Sequence& s) {
  if (!ComputesPrefix(s) || s.cache->length() < s.prefix_positions) return;
  s.prefix_offered = true;
  if (prefix_cache_.Contains(s.prefix_keys.back())) return;
  // Causal attention: the first prefix_positions of this sequence's KV are exactly the KV of
  // the prefix alone, so they are copied out rather than computed again.
  prefix_cache_.Insert(s.prefix_keys.back(), CopyKVPrefix(bundle_.model().config(), *s.cache,
                                                          s.prefix_positions, s.prefix_positions));
  m_.prefix_bytes->Set(static_cast<double>(prefix_cache_.bytes()));
}


icae::v1::ModelInfo DecoderCore::Info() const {
  icae::v1::ModelInfo info = server::BaseModelInfo(bundle_, max_context_tokens_, options_.max_request_id_bytes);
  info.set_max_new_tokens(options_.max_new_tokens);
  info.set_max_prompt_tokens(options_.max_prompt_tokens);
  info.set_max_slot_ids(options_.max_slot_ids);
  info.set_max_stop_sequences(options_.max_stop_sequences);
  info.set_max_stop_sequence_bytes(options_.max_stop_sequence_bytes);
  info.set_max_stop_token_ids(options_.max_stop_token_ids);
  return info;
}

}  // namespace icae::decoder
