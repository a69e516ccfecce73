// The decoder's continuous-batching scheduler and the encoder's batching core, in-process on
// the tiny ICAE test model (float32): concurrent sequences give exactly what one-at-a-time
// Generate gives; queue bounds, cancellation and deadlines leave within a step. Also slot
// identity (context validation, addresses, records) on the same model.
#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <condition_variable>
#include <future>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/icae/prompt.h"
#include "common/model/prefix_cache.h"
#include "common/server/metrics.h"
#include "common/server/model_bundle.h"
#include "common/server/slot_identity.h"
#include "common/slot_store/slot_id.h"
#include "common/slot_store/slot_store.h"
#include "decoder_service/decoder_core.h"
#include "decoder_service/decoder_service.h"
#include "decoder_service/step_threads.h"
#include "encoder_service/encoder_core.h"
#include "tests/test_util.h"
#include "tests/testing/reference.h"
#include "tests/testing/requests.h"
#include "tests/testing/status.h"

namespace icae {
namespace {

class CollectingSink final : public decoder::GenerationSink {
 public:
  void Send(icae::v1::GenerateResponse msg) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (int64_t id : msg.token_ids()) ids.push_back(id);
    text += msg.text();
    if (msg.has_final()) {
      final = msg.final();
      done = true;
      cv_.notify_all();
    }
  }
  void Fail(const absl::Status& st) override {
    std::lock_guard<std::mutex> lock(mu_);
    status = st;
    done = true;
    cv_.notify_all();
  }
  bool WaitDone(absl::Duration d) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(absl::ToInt64Milliseconds(d)), [&] { return done; });
  }
  size_t NumIds() {
    std::lock_guard<std::mutex> lock(mu_);
    return ids.size();
  }
  std::vector<int64_t> ids;
  std::string text;
  icae::v1::GenerateFinal final;
  absl::Status status;
  bool done = false;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::TestDataDir() + "/icae-golden";
    ICAE_REQUIRE_TESTDATA(dir + "/icae_adapter.safetensors");
    server::ModelBundleOptions o;
    o.model_dir = dir + "/model";
    o.adapter_path = dir + "/icae_adapter.safetensors";
    o.dtype = "float32";
    auto b = server::ModelBundle::Load(o);
    ASSERT_TRUE(b.ok()) << b.status();
    bundle_ = std::move(*b);
    auto s = slot_store::OpenSlotStore("memory://?max_bytes=64M");
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  std::unique_ptr<decoder::DecoderCore> MakeDecoder(decoder::DecoderOptions o) {
    return std::make_unique<decoder::DecoderCore>(*bundle_, *store_, o, metrics_);
  }

  // Encodes through an EncoderCore; the slot ID, or the error.
  absl::StatusOr<std::string> Encode(const std::vector<int64_t>& ids) {
    encoder::EncoderCore enc(*bundle_, *store_, {}, metrics_);
    auto job = enc.Prepare(testing::IdsRequest(ids), "");
    if (!job.ok()) return job.status();
    std::promise<absl::StatusOr<icae::v1::EncodeResponse>> p;
    enc.Submit(std::move(*job), [&](absl::StatusOr<icae::v1::EncodeResponse> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    if (!r.ok()) return r.status();
    return r->slot_id();
  }

  // The reference: single-sequence generation on the same input (tests/testing/reference.h).
  absl::StatusOr<std::vector<int64_t>> Reference(const std::string& slot_id, const std::vector<int64_t>& prompt,
                                                 int64_t n) {
    return Reference(std::vector<std::string>{slot_id}, prompt, n);
  }
  absl::StatusOr<std::vector<int64_t>> Reference(const std::vector<std::string>& slot_ids,
                                                 const std::vector<int64_t>& prompt, int64_t n) {
    std::vector<CompressedContext> memories;
    for (const auto& slot_id : slot_ids) {
      ASSIGN_OR_RETURN(CompressedContext slots, testing::SlotsFromStore(*bundle_, *store_, slot_id));
      memories.push_back(std::move(slots));
    }
    ASSIGN_OR_RETURN(testing::ReferenceOutput out, testing::ReferenceGenerate(*bundle_, memories, prompt, n));
    return out.ids;
  }

  icae::v1::GenerateRequest Request(const std::string& slot_id, const std::vector<int64_t>& prompt, int64_t n) {
    return testing::SlotRequest(std::vector<std::string>{slot_id}, prompt, n);
  }
  icae::v1::GenerateRequest Request(const std::vector<std::string>& slot_ids, const std::vector<int64_t>& prompt,
                                    int64_t n) {
    return testing::SlotRequest(slot_ids, prompt, n);
  }

  // Submits without waiting. A request the core refuses (Prepare or Submit) ends its sink with
  // that status at once.
  std::shared_ptr<CollectingSink> Start(decoder::DecoderCore& core, const icae::v1::GenerateRequest& req,
                                        const std::string& tenant = "") {
    auto sink = std::make_shared<CollectingSink>();
    auto seq = core.Prepare(req, tenant);
    const absl::Status st = seq.ok() ? core.Submit(std::move(*seq), sink, std::make_shared<std::atomic<bool>>(false),
                                                   absl::InfiniteFuture())
                                     : seq.status();
    if (!st.ok()) sink->Fail(st);
    return sink;
  }
  // Submits and waits; the test fails unless the generation finishes OK.
  std::shared_ptr<CollectingSink> Run(decoder::DecoderCore& core, const icae::v1::GenerateRequest& req,
                                      const std::string& tenant = "") {
    auto sink = Start(core, req, tenant);
    EXPECT_TRUE(sink->WaitDone(absl::Seconds(30)));
    EXPECT_TRUE(sink->status.ok()) << sink->status;
    return sink;
  }
  // Runs the requests (slots[i], prompts[i], 9 new tokens) concurrently, at most 3 at a time, on
  // decoders with each prefill chunk and the prefix cache off and on: every greedy answer is the
  // reference's.
  void ExpectConcurrentRunsMatchTheReference(const std::vector<std::vector<std::string>>& slots,
                                             const std::vector<std::vector<int64_t>>& prompts,
                                             const std::vector<int64_t>& chunks) {
    for (int64_t cache_bytes : {int64_t{0}, int64_t{64} << 20}) {
      for (int64_t chunk : chunks) {
        decoder::DecoderOptions o;
        o.prefill_chunk = chunk;
        o.prefix_cache_bytes = cache_bytes;
        o.max_batch = 3;
        auto core = MakeDecoder(o);
        std::vector<std::shared_ptr<CollectingSink>> sinks;
        for (size_t i = 0; i < slots.size(); ++i) sinks.push_back(Start(*core, Request(slots[i], prompts[i], 9)));
        for (size_t i = 0; i < sinks.size(); ++i) {
          ASSERT_TRUE(sinks[i]->WaitDone(absl::Seconds(30)));
          ASSERT_TRUE(sinks[i]->status.ok()) << sinks[i]->status;
          EXPECT_THAT(Reference(slots[i], prompts[i], 9), testing::IsOkAndHolds(sinks[i]->ids))
              << "sequence " << i << " chunk " << chunk << " prefix cache " << cache_bytes;
        }
      }
    }
  }
  // Scheduler steps that ran more than one sequence: only batching produces them.
  uint64_t BatchedSteps() {
    const auto h = metrics_.AddHistogram("icae_batch_size", "", {})->Collect().histogram;
    return h.sample_count - (h.bucket.empty() ? 0 : h.bucket[0].cumulative_count);  // bucket 0: le="1"
  }
  double CounterValue(const std::string& name) { return metrics_.AddCounter(name, "")->Value(); }
  // Scheduler steps so far (one batch-size observation per forward).

  server::MetricsRegistry metrics_;
  std::unique_ptr<server::ModelBundle> bundle_;
  std::unique_ptr<slot_store::SlotStore> store_;
};

TEST_F(SchedulerTest, ConcurrentSequencesMatchOneAtATimeGeneration) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode({1, 415, 2936, 9060, 285, 1142, 461, 10575, 754, 272, 17898, 3914, 28723}));
  ASSERT_OK_AND_ASSIGN(const std::string b, Encode({1, 851, 349, 264, 1269, 2757, 684, 264, 2485, 302, 9060, 28723, 661, 2368}));
  const std::vector<std::vector<int64_t>> prompts = {{}, {1824, 349, 378, 28804}, {}, {5801, 28804}};
  const std::vector<std::string> slots = {a, a, b, b};
  const std::vector<int64_t> lengths = {12, 20, 7, 16};  // sequences leave at different steps
  // Decode steps on the threads auto mode measures (it alternates one and all while it probes),
  // and always on one: the same greedy streams.
  for (int64_t step_threads : {0, 1}) {
  SCOPED_TRACE(absl::StrCat("decode_step_threads ", step_threads));
  decoder::DecoderOptions o;
  o.max_batch = 3;  // the fourth joins when the first leaves
  o.decode_step_threads = step_threads;
  auto core = MakeDecoder(o);
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto seq = core->Prepare(Request(slots[i], prompts[i], lengths[i]), "");
    ASSERT_TRUE(seq.ok()) << seq.status();
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(core->Submit(std::move(*seq), sinks.back(), std::make_shared<std::atomic<bool>>(false),
                             absl::InfiniteFuture()).ok());
  }
  for (size_t i = 0; i < sinks.size(); ++i) {
    ASSERT_TRUE(sinks[i]->WaitDone(absl::Seconds(30)));
    ASSERT_TRUE(sinks[i]->status.ok()) << sinks[i]->status;
    EXPECT_EQ(sinks[i]->final.finish_reason(), icae::v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(sinks[i]->final.usage().completion_tokens(), lengths[i]);
    EXPECT_THAT(Reference(slots[i], prompts[i], lengths[i]), testing::IsOkAndHolds(sinks[i]->ids)) << "sequence " << i;
  }
  EXPECT_EQ(core->Running(), 0);
  }
  // They ran together: steps with more than one sequence (submitted within microseconds of each
  // other, all four overlap the 20-token one).
  EXPECT_GT(BatchedSteps(), 0u);
  // The scheduler's own cost is observed once per step that ran sequences.
  const auto steps = metrics_.AddHistogram("icae_batch_size", "", {})->Collect().histogram;
  const auto loop = metrics_.AddHistogram("icae_scheduler_loop_seconds", "", {})->Collect().histogram;
  EXPECT_EQ(loop.sample_count, steps.sample_count);
  EXPECT_GT(loop.sample_sum, 0.0);
}

TEST_F(SchedulerTest, QueueBoundAtAndPast) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode({1, 415, 2936, 9060, 285}));
  decoder::DecoderOptions o;
  o.max_batch = 1;
  o.max_queue = 1;
  o.max_new_tokens = 3000;
  auto core = MakeDecoder(o);
  std::vector<std::shared_ptr<std::atomic<bool>>> flags;
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  std::vector<absl::Status> results;
  for (int i = 0; i < 3; ++i) {
    auto seq = core->Prepare(Request(a, {}, 3000), "");
    ASSERT_TRUE(seq.ok());
    flags.push_back(std::make_shared<std::atomic<bool>>(false));
    sinks.push_back(std::make_shared<CollectingSink>());
    results.push_back(core->Submit(std::move(*seq), sinks.back(), flags.back(), absl::InfiniteFuture()));
    if (i == 0) {
      // Wait until the first one runs, so the queue holds exactly the second.
      for (int k = 0; k < 500 && core->Running() == 0; ++k) absl::SleepFor(absl::Milliseconds(2));
    }
  }
  EXPECT_TRUE(results[0].ok());
  EXPECT_TRUE(results[1].ok());  // at the bound
  EXPECT_EQ(results[2].code(), absl::StatusCode::kResourceExhausted) << results[2];
  for (auto& f : flags) f->store(true);
  EXPECT_TRUE(sinks[0]->WaitDone(absl::Seconds(10)));
  EXPECT_TRUE(sinks[1]->WaitDone(absl::Seconds(10)));
  EXPECT_EQ(sinks[0]->status.code(), absl::StatusCode::kCancelled);
}

// --kv_cache_bytes: a sequence joins the batch only when its KV reservation (input positions
// + max_new_tokens) fits beside the running ones'; else it waits in the queue, and past the
// queue bound it is RESOURCE_EXHAUSTED. One that alone needs more than the bound ends with
// RESOURCE_EXHAUSTED from the fetch stage.
TEST_F(SchedulerTest, KvCacheBoundAtAndPast) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode({1, 415, 2936, 9060, 285, 1142, 461, 10575}));
  const int64_t per_position = bundle_->model().NewCache(1).bytes();
  ASSERT_GT(per_position, 0);
  constexpr int64_t kNew = 12;
  decoder::DecoderOptions o;
  o.kv_cache_bytes = 1;
  // What one request reserves, from the refusal at a 1-byte bound: whole positions, more than
  // max_new_tokens of them (the input comes first).
  int64_t need = 0;
  {
    auto core = MakeDecoder(o);
    auto sink = Start(*core, Request(a, {}, kNew));
    ASSERT_TRUE(sink->WaitDone(absl::Seconds(30)));
    ASSERT_EQ(sink->status.code(), absl::StatusCode::kResourceExhausted) << sink->status;
    const std::string msg(sink->status.message());
    const size_t at = msg.find("needs ");
    ASSERT_NE(at, std::string::npos) << msg;
    need = std::stoll(msg.substr(at + 6));
    EXPECT_NE(msg.find("--kv_cache_bytes=1"), std::string::npos) << msg;
    EXPECT_EQ(need % per_position, 0) << msg;
    EXPECT_GT(need / per_position, kNew) << msg;
    EXPECT_TRUE(sink->ids.empty());
  }
  // One byte under: refused; at the bound: served.
  o.kv_cache_bytes = need - 1;
  {
    auto core = MakeDecoder(o);
    auto sink = Start(*core, Request(a, {}, kNew));
    ASSERT_TRUE(sink->WaitDone(absl::Seconds(30)));
    EXPECT_EQ(sink->status.code(), absl::StatusCode::kResourceExhausted) << sink->status;
  }
  o.kv_cache_bytes = need;
  ASSERT_OK_AND_ASSIGN(const std::vector<int64_t> want, Reference(a, {}, kNew));
  {
    // Room for one: two requests both finish, one after the other (no step ran both).
    auto core = MakeDecoder(o);
    const uint64_t batched = BatchedSteps();
    auto first = Start(*core, Request(a, {}, kNew));
    auto second = Start(*core, Request(a, {}, kNew));
    for (auto* sink : {&first, &second}) {
      ASSERT_TRUE((*sink)->WaitDone(absl::Seconds(30)));
      ASSERT_TRUE((*sink)->status.ok()) << (*sink)->status;
      EXPECT_EQ((*sink)->ids, want);
    }
    EXPECT_EQ(BatchedSteps(), batched);
    // Released when the scheduler drops the finished sequence, just after its last message.
    auto* reserved = metrics_.AddGauge("icae_kv_cache_reserved_bytes", "");
    for (int k = 0; k < 2500 && reserved->Value() != 0; ++k) absl::SleepFor(absl::Milliseconds(2));
    EXPECT_EQ(reserved->Value(), 0);
  }
  {
    // Room for two: the same two requests share steps.
    o.kv_cache_bytes = 2 * need;
    auto core = MakeDecoder(o);
    const uint64_t batched = BatchedSteps();
    auto first = Start(*core, Request(a, {}, kNew));
    auto second = Start(*core, Request(a, {}, kNew));
    ASSERT_TRUE(first->WaitDone(absl::Seconds(30)) && second->WaitDone(absl::Seconds(30)));
    EXPECT_TRUE(first->status.ok() && second->status.ok()) << first->status << " " << second->status;
    EXPECT_EQ(second->ids, want);
    EXPECT_GT(BatchedSteps(), batched);
  }
  {
    // Waiting for KV counts against the queue bound: room for one running sequence and one in
    // the queue; a third is RESOURCE_EXHAUSTED.
    const int64_t long_new = 2000;
    o.max_new_tokens = long_new;
    o.max_queue = 1;
    const int64_t positions = need / per_position - kNew;  // the input's
    o.kv_cache_bytes = (positions + long_new) * per_position;
    auto core = MakeDecoder(o);
    std::vector<std::shared_ptr<std::atomic<bool>>> flags;
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    std::vector<absl::Status> results;
    for (int i = 0; i < 3; ++i) {
      auto seq = core->Prepare(Request(a, {}, long_new), "");
      ASSERT_TRUE(seq.ok()) << seq.status();
      flags.push_back(std::make_shared<std::atomic<bool>>(false));
      sinks.push_back(std::make_shared<CollectingSink>());
      results.push_back(core->Submit(std::move(*seq), sinks.back(), flags.back(), absl::InfiniteFuture()));
      if (i == 0) {
        for (int k = 0; k < 2500 && core->Running() == 0; ++k) absl::SleepFor(absl::Milliseconds(2));
        ASSERT_EQ(core->Running(), 1);
      }
    }
    EXPECT_TRUE(results[0].ok()) << results[0];
    EXPECT_TRUE(results[1].ok()) << results[1];  // waits for KV, in the queue (at its bound)
    EXPECT_EQ(results[2].code(), absl::StatusCode::kResourceExhausted) << results[2];
    // The second never joined the first while it ran.
    for (int k = 0; k < 50; ++k) {
      EXPECT_EQ(core->Running(), 1);
      absl::SleepFor(absl::Milliseconds(2));
    }
    EXPECT_EQ(metrics_.AddGauge("icae_kv_cache_reserved_bytes", "")->Value(), static_cast<double>(o.kv_cache_bytes));
    // A queued request whose client gives up leaves the queue within a step, while the one
    // it waited for still runs; its place is free again.
    flags[1]->store(true);
    EXPECT_TRUE(sinks[1]->WaitDone(absl::Seconds(10)));
    EXPECT_EQ(sinks[1]->status.code(), absl::StatusCode::kCancelled) << sinks[1]->status;
    EXPECT_FALSE(sinks[0]->WaitDone(absl::ZeroDuration()));
    EXPECT_EQ(core->Running(), 1);
    auto seq = core->Prepare(Request(a, {}, long_new), "");
    ASSERT_TRUE(seq.ok()) << seq.status();
    auto fourth = std::make_shared<CollectingSink>();
    auto fourth_flag = std::make_shared<std::atomic<bool>>(false);
    EXPECT_TRUE(core->Submit(std::move(*seq), fourth, fourth_flag, absl::InfiniteFuture()).ok());
    flags[0]->store(true);
    fourth_flag->store(true);
    EXPECT_TRUE(sinks[0]->WaitDone(absl::Seconds(10)));
    EXPECT_TRUE(fourth->WaitDone(absl::Seconds(10)));
    EXPECT_EQ(sinks[0]->status.code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(fourth->status.code(), absl::StatusCode::kCancelled);
  }
}

TEST_F(SchedulerTest, CancelAndDeadlineLeaveWithinAStep) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode({1, 415, 2936, 9060, 285}));
  decoder::DecoderOptions o;
  o.max_new_tokens = 3000;
  auto core = MakeDecoder(o);
  auto flag = std::make_shared<std::atomic<bool>>(false);
  auto sink = std::make_shared<CollectingSink>();
  auto seq = core->Prepare(Request(a, {}, 3000), "");
  ASSERT_TRUE(seq.ok());
  ASSERT_TRUE(core->Submit(std::move(*seq), sink, flag, absl::InfiniteFuture()).ok());
  for (int k = 0; k < 1000 && sink->NumIds() < 3; ++k) absl::SleepFor(absl::Milliseconds(2));
  flag->store(true);
  ASSERT_TRUE(sink->WaitDone(absl::Seconds(5)));
  EXPECT_EQ(sink->status.code(), absl::StatusCode::kCancelled);
  for (int k = 0; k < 500 && core->Running() > 0; ++k) absl::SleepFor(absl::Milliseconds(2));
  EXPECT_EQ(core->Running(), 0);

  auto sink2 = std::make_shared<CollectingSink>();
  auto seq2 = core->Prepare(Request(a, {}, 3000), "");
  ASSERT_TRUE(seq2.ok());
  ASSERT_TRUE(core->Submit(std::move(*seq2), sink2, std::make_shared<std::atomic<bool>>(false),
                           absl::Now() + absl::Milliseconds(100)).ok());
  ASSERT_TRUE(sink2->WaitDone(absl::Seconds(5)));
  EXPECT_EQ(sink2->status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(SchedulerTest, StopSequenceAndStopTokenEndTheStream) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode({1, 415, 2936, 9060, 285, 1142, 461}));
  auto core = MakeDecoder({});
  auto full = Run(*core, Request(a, {}, 32));
  ASSERT_EQ(full->ids.size(), 32u);
  // Stop on the 5th token id.
  auto req = Request(a, {}, 32);
  req.mutable_stopping()->add_stop_token_ids(full->ids[4]);
  auto st = Run(*core, req);
  EXPECT_EQ(st->final.finish_reason(), icae::v1::FINISH_REASON_STOP_TOKEN);
  EXPECT_EQ(st->final.stop_token_id(), full->ids[4]);
  // Stop on a piece of the text from its middle: the stream ends before the piece's first
  // occurrence, with the text up to it.
  ASSERT_GE(full->text.size(), 6u) << "32 greedy tokens decode to too little text to cut a stop "
                                      "sequence from: '" << full->text << "'";
  const std::string stop = full->text.substr(full->text.size() / 2, 3);
  auto req2 = Request(a, {}, 32);
  req2.mutable_stopping()->add_stop_sequences(stop);
  auto ss = Run(*core, req2);
  EXPECT_EQ(ss->final.finish_reason(), icae::v1::FINISH_REASON_STOP_SEQUENCE);
  EXPECT_EQ(ss->final.stop_sequence(), stop);
  EXPECT_EQ(ss->text, full->text.substr(0, full->text.find(stop)));
  EXPECT_LT(ss->ids.size(), full->ids.size());
}

const std::vector<int64_t> kContextA = {1, 415, 2936, 9060, 285, 1142, 461, 10575, 754, 272, 17898, 3914, 28723};
const std::vector<int64_t> kContextB = {1, 851, 349, 264, 1269, 2757, 684, 264, 2485, 302, 9060, 28723, 661, 2368};

TEST_F(SchedulerTest, PrefixCacheGivesTheSameGreedyOutputAndComposes) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode(kContextA));
  ASSERT_OK_AND_ASSIGN(const std::string b, Encode(kContextB));
  auto core = MakeDecoder({});
  const int64_t lead = LeadPositions(bundle_->adapter(), PromptMode::kInstruct);
  const std::vector<int64_t> p1 = {1824, 349, 378, 28804}, p2 = {5801, 28804};

  auto first = Run(*core, Request(a, p1, 10));  // computes [A] and caches it
  EXPECT_EQ(first->final.usage().cached_prefix_tokens(), 0);
  EXPECT_THAT(Reference(a, p1, 10), testing::IsOkAndHolds(first->ids));
  const int64_t slots_a = first->final.usage().slot_count();
  EXPECT_EQ(CounterValue("icae_prefix_cache_misses_total"), 1);

  auto repeat = Run(*core, Request(a, p2, 10));
  EXPECT_EQ(repeat->final.usage().cached_prefix_tokens(), lead + slots_a);
  EXPECT_THAT(Reference(a, p2, 10), testing::IsOkAndHolds(repeat->ids));
  EXPECT_EQ(CounterValue("icae_prefix_cache_hits_total"), 1);

  // Composition: [A, B] starts from the cached [A] and extends it; then [A, B] is cached.
  auto ab = Run(*core, Request({a, b}, p1, 10));
  EXPECT_EQ(ab->final.usage().cached_prefix_tokens(), lead + slots_a);
  EXPECT_THAT(Reference({a, b}, p1, 10), testing::IsOkAndHolds(ab->ids));
  auto ab2 = Run(*core, Request({a, b}, p2, 10));
  EXPECT_EQ(ab2->final.usage().cached_prefix_tokens(), ab->final.usage().slot_count() + lead);
  EXPECT_THAT(Reference({a, b}, p2, 10), testing::IsOkAndHolds(ab2->ids));
  // [B, A] is another prefix.
  auto ba = Run(*core, Request({b, a}, p1, 10));
  EXPECT_EQ(ba->final.usage().cached_prefix_tokens(), 0);
  EXPECT_THAT(Reference({b, a}, p1, 10), testing::IsOkAndHolds(ba->ids));

  // Autoencode has no template lead: its own entries, [slots] then [AE].
  auto ae = Run(*core, Request(a, {}, 10));
  EXPECT_EQ(ae->final.usage().cached_prefix_tokens(), 0);
  auto ae2 = Run(*core, Request(a, {}, 10));
  EXPECT_EQ(ae2->final.usage().cached_prefix_tokens(), slots_a);
  EXPECT_THAT(Reference(a, {}, 10), testing::IsOkAndHolds(ae2->ids));

  // Another tenant never sees this tenant's entries.
  ASSERT_TRUE(store_->Put(server::TenantStoreKey("t2", a), *store_->Get(server::TenantStoreKey("", a)).value()).ok());
  auto other = Run(*core, Request(a, p2, 10), "t2");
  EXPECT_EQ(other->final.usage().cached_prefix_tokens(), 0);
  EXPECT_EQ(other->ids, repeat->ids);
  EXPECT_GT(metrics_.AddGauge("icae_prefix_cache_bytes", "")->Value(), 0);
}

TEST_F(SchedulerTest, PrefixCacheConcurrentUsersOfOneEntryAndOff) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode(kContextA));
  const std::vector<std::vector<int64_t>> prompts = {{1824, 349, 378, 28804}, {5801, 28804}, {}, {349, 28804}};
  decoder::DecoderOptions o;
  o.max_batch = 4;
  auto core = MakeDecoder(o);
  Run(*core, Request(a, {2936}, 2));  // caches the instruct [A] prefix
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const auto& p : prompts) sinks.push_back(Start(*core, Request(a, p, 12)));
  for (size_t i = 0; i < sinks.size(); ++i) {
    ASSERT_TRUE(sinks[i]->WaitDone(absl::Seconds(30)));
    ASSERT_TRUE(sinks[i]->status.ok()) << sinks[i]->status;
    EXPECT_THAT(Reference(a, prompts[i], 12), testing::IsOkAndHolds(sinks[i]->ids)) << "sequence " << i;
    if (!prompts[i].empty()) {
      EXPECT_GT(sinks[i]->final.usage().cached_prefix_tokens(), 0) << "sequence " << i;
    }
  }
  // --prefix_cache_bytes 0: nothing cached, the same output.
  o.prefix_cache_bytes = 0;
  auto off = MakeDecoder(o);
  for (int k = 0; k < 2; ++k) {
    auto r = Run(*off, Request(a, prompts[0], 12));
    EXPECT_EQ(r->final.usage().cached_prefix_tokens(), 0);
    EXPECT_EQ(r->ids, sinks[0]->ids);
  }
}

// Holds the scheduler thread in its first Send until released (the scheduler calls sinks on
// its own thread), so that requests submitted meanwhile are admitted in one step.
class GateSink final : public decoder::GenerationSink {
 public:
  void Send(icae::v1::GenerateResponse) override {
    std::unique_lock<std::mutex> lock(mu_);
    entered_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  void Fail(const absl::Status&) override {}
  void WaitEntered() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return entered_; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false, open_ = false;
};

TEST_F(SchedulerTest, PrefixCacheComputesANewPrefixOnceForConcurrentRequests) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode(kContextA));
  ASSERT_OK_AND_ASSIGN(const std::string b, Encode(kContextB));
  const std::vector<std::vector<int64_t>> prompts = {{1824, 349, 378, 28804}, {5801, 28804}, {349, 28804}};
  for (int64_t chunk : {0, 2}) {
    decoder::DecoderOptions o;
    o.max_batch = 4;
    o.prefill_chunk = chunk;
    auto core = MakeDecoder(o);
    auto gate = std::make_shared<GateSink>();
    auto held = core->Prepare(Request(b, {}, 2), "");
    ASSERT_TRUE(held.ok());
    ASSERT_TRUE(core->Submit(std::move(*held), gate, std::make_shared<std::atomic<bool>>(false),
                             absl::InfiniteFuture()).ok());
    gate->WaitEntered();
    const double misses = CounterValue("icae_prefix_cache_misses_total");
    const double hits = CounterValue("icae_prefix_cache_hits_total");
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (const auto& p : prompts) sinks.push_back(Start(*core, Request(a, p, 8)));
    absl::SleepFor(absl::Milliseconds(300));  // the fetch stage reads their slots meanwhile
    gate->Open();
    for (size_t i = 0; i < sinks.size(); ++i) {
      ASSERT_TRUE(sinks[i]->WaitDone(absl::Seconds(30)));
      ASSERT_TRUE(sinks[i]->status.ok()) << sinks[i]->status;
      EXPECT_THAT(Reference(a, prompts[i], 8), testing::IsOkAndHolds(sinks[i]->ids)) << "sequence " << i;
    }
    // Admitted in one step: the first computes [A], the others wait for it and reuse it.
    EXPECT_EQ(CounterValue("icae_prefix_cache_misses_total") - misses, 1) << "chunk " << chunk;
    EXPECT_EQ(CounterValue("icae_prefix_cache_hits_total") - hits, 2) << "chunk " << chunk;
  }
}

// Five requests over two contexts: one or two slot sets, instruct prompts of several lengths and
// autoencoding, shared prefixes whole and extended.
std::vector<std::vector<std::string>> MixedSlotSets(const std::string& a, const std::string& b) {
  return {{a}, {a, b}, {b}, {a}, {a, b}};
}
const std::vector<std::vector<int64_t>> kMixedPrompts = {
    {1824, 349, 378, 28804}, {5801, 28804}, {}, {349, 1824, 349, 378, 2936, 9060, 28804}, {}};

TEST_F(SchedulerTest, ChunkedPrefillMatchesUnchunked) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode(kContextA));
  ASSERT_OK_AND_ASSIGN(const std::string b, Encode(kContextB));
  const std::vector<std::vector<std::string>> slots = MixedSlotSets(a, b);
  const std::vector<std::vector<int64_t>>& prompts = kMixedPrompts;
  ASSERT_NO_FATAL_FAILURE(ExpectConcurrentRunsMatchTheReference(slots, prompts, {1, 3, 7}));
}

// Slots at their spans' centres (IcaeConfig::MemoryPositions::kSpread): the decoder gives every
// row its position, across prefill chunks, a shared slot prefix (whole or extended) and decode
// steps, as the in-process reference does.
TEST_F(SchedulerTest, SpreadMemoryPositionsMatchTheReference) {
  const std::string dir = testing::TestDataDir() + "/icae-golden";
  ModelLoadOptions lo;
  lo.dtype = torch::kFloat32;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Transformer> model, Transformer::Load(dir + "/model", lo));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tokenizer> tok, Tokenizer::LoadFromModelDir(dir + "/model"));
  IcaeAdapter spread = bundle_->adapter();
  spread.config.memory_positions = IcaeConfig::MemoryPositions::kSpread;
  std::unique_ptr<server::ModelBundle> sequential = std::move(bundle_);
  ASSERT_OK_AND_ASSIGN(bundle_, server::ModelBundle::FromParts(std::move(model), spread, std::move(tok),
                                                               sequential->model_fingerprint(),
                                                               std::string(64, 'e')));
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode(kContextA));
  ASSERT_OK_AND_ASSIGN(const std::string b, Encode(kContextB));
  const std::vector<std::vector<std::string>> slots = MixedSlotSets(a, b);
  const std::vector<std::vector<int64_t>>& prompts = kMixedPrompts;
  ASSERT_NO_FATAL_FAILURE(ExpectConcurrentRunsMatchTheReference(slots, prompts, {3, 512}));
  // The layout is seen: the same slots decoded at sequential positions give other ids.
  int differ = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    std::vector<CompressedContext> memories;
    for (const auto& id : slots[i]) {
      ASSERT_OK_AND_ASSIGN(CompressedContext c, testing::SlotsFromStore(*bundle_, *store_, id));
      memories.push_back(std::move(c));
    }
    ASSERT_OK_AND_ASSIGN(testing::ReferenceOutput at_rows, testing::ReferenceGenerate(*sequential, memories, prompts[i], 9));
    ASSERT_OK_AND_ASSIGN(std::vector<int64_t> spread_ids, Reference(slots[i], prompts[i], 9));
    differ += at_rows.ids != spread_ids;
  }
  EXPECT_GT(differ, 0);
}

TEST_F(SchedulerTest, PrefillChunkBoundAtAndPast) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode(kContextA));
  ASSERT_OK_AND_ASSIGN(const std::string b, Encode(kContextB));
  const std::vector<int64_t> prompt = {1824, 349, 378, 28804};
  decoder::DecoderOptions o;
  o.prefix_cache_bytes = 0;
  o.prefill_chunk = 0;
  auto whole = MakeDecoder(o);
  auto r = Run(*whole, Request(a, prompt, 3));
  const int64_t positions = r->final.usage().slot_count() + r->final.usage().prompt_tokens();
  server::Histogram* chunks = metrics_.AddHistogram("icae_prefill_chunk_positions", "", {});
  // Prefill chunks of one request while another stream is decoding.
  auto chunks_while_decoding = [&](int64_t chunk) {
    o.prefill_chunk = chunk;
    auto core = MakeDecoder(o);
    auto running = Start(*core, Request(b, {}, 1000));
    for (int k = 0; k < 5000 && running->NumIds() < 1; ++k) absl::SleepFor(absl::Milliseconds(1));
    const uint64_t before = chunks->Collect().histogram.sample_count;
    auto out = Run(*core, Request(a, prompt, 3));
    const int64_t n = static_cast<int64_t>(chunks->Collect().histogram.sample_count - before);
    EXPECT_LT(running->NumIds(), 1000u) << "the other stream must still be decoding";
    EXPECT_EQ(out->ids, r->ids) << "chunk " << chunk;
    core->CancelAll();
    EXPECT_TRUE(running->WaitDone(absl::Seconds(10)));
    return n;
  };
  EXPECT_EQ(chunks_while_decoding(positions), 1);      // at the bound: one step
  EXPECT_EQ(chunks_while_decoding(positions - 1), 2);  // past it: split
  EXPECT_EQ(chunks_while_decoding(0), 1);              // off
  EXPECT_EQ(chunks_while_decoding(4), (positions + 3) / 4);
  // Alone, nothing to interleave with: one step whatever the chunk.
  o.prefill_chunk = 1;
  auto alone = MakeDecoder(o);
  const uint64_t before = chunks->Collect().histogram.sample_count;
  EXPECT_EQ(Run(*alone, Request(a, prompt, 3))->ids, r->ids);
  EXPECT_EQ(chunks->Collect().histogram.sample_count - before, 1u);
}

// A sink that notes how many tokens another stream had when its own first token came.
class FirstTokenProbe final : public decoder::GenerationSink {
 public:
  explicit FirstTokenProbe(std::shared_ptr<CollectingSink> other, std::shared_ptr<CollectingSink> own)
      : other_(std::move(other)), own_(std::move(own)) {}
  void Send(icae::v1::GenerateResponse msg) override {
    if (other_at_first_ < 0) other_at_first_ = static_cast<int64_t>(other_->NumIds());
    own_->Send(std::move(msg));
  }
  void Fail(const absl::Status& st) override { own_->Fail(st); }
  std::atomic<int64_t> other_at_first_{-1};

 private:
  std::shared_ptr<CollectingSink> other_, own_;
};

TEST_F(SchedulerTest, ChunkedPrefillInterleavesWithRunningDecodes) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode(kContextA));
  ASSERT_OK_AND_ASSIGN(const std::string b, Encode(kContextB));
  decoder::DecoderOptions o;
  o.prefill_chunk = 4;
  o.prefix_cache_bytes = 0;
  auto core = MakeDecoder(o);
  auto running = Start(*core, Request(a, {}, 60));
  for (int k = 0; k < 2000 && running->NumIds() < 2; ++k) absl::SleepFor(absl::Milliseconds(1));
  const std::vector<int64_t> prompt = {349, 1824, 349, 378, 2936, 9060, 28804, 5801, 28804, 349, 1824};
  auto own = std::make_shared<CollectingSink>();
  auto probe = std::make_shared<FirstTokenProbe>(running, own);
  const int64_t before = static_cast<int64_t>(running->NumIds());
  auto seq = core->Prepare(Request(b, prompt, 8), "");
  ASSERT_TRUE(seq.ok()) << seq.status();
  ASSERT_TRUE(core->Submit(std::move(*seq), probe, std::make_shared<std::atomic<bool>>(false),
                           absl::InfiniteFuture()).ok());
  ASSERT_TRUE(own->WaitDone(absl::Seconds(30)));
  ASSERT_TRUE(running->WaitDone(absl::Seconds(30)));
  ASSERT_TRUE(own->status.ok()) << own->status;
  const int64_t chunks = (own->final.usage().slot_count() + own->final.usage().prompt_tokens() + 3) / 4;
  EXPECT_GE(chunks, 4);
  // The running stream got a token in every step of the new sequence's prefill.
  EXPECT_GE(probe->other_at_first_ - before, chunks - 1);
  EXPECT_THAT(Reference(b, prompt, 8), testing::IsOkAndHolds(own->ids));
  EXPECT_THAT(Reference(a, {}, 60), testing::IsOkAndHolds(running->ids));
}

TEST_F(SchedulerTest, PrepareDoesNoStoreIoAndTheFetchStageKeepsTheStatusCodes) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode(kContextA));
  auto core = MakeDecoder({});
  auto fails_with = [&](const icae::v1::GenerateRequest& req) {
    const auto before = store_->Stats();
    auto seq = core->Prepare(req, "");
    EXPECT_TRUE(seq.ok()) << seq.status();
    // The caller's thread (gRPC's) never touched the store.
    EXPECT_EQ(store_->Stats().hits, before.hits);
    EXPECT_EQ(store_->Stats().misses, before.misses);
    auto sink = std::make_shared<CollectingSink>();
    EXPECT_TRUE(core->Submit(std::move(*seq), sink, std::make_shared<std::atomic<bool>>(false),
                             absl::InfiniteFuture()).ok());
    EXPECT_TRUE(sink->WaitDone(absl::Seconds(30)));
    EXPECT_TRUE(sink->ids.empty());
    return sink->status.code();
  };
  EXPECT_EQ(fails_with(Request(std::string(64, 'a'), {}, 4)), absl::StatusCode::kNotFound);
  decoder::DecoderOptions o;
  o.max_new_tokens = 100000;
  auto big = MakeDecoder(o);
  core.swap(big);
  EXPECT_EQ(fails_with(Request(a, {}, 99999)), absl::StatusCode::kInvalidArgument);  // past the positions
  // Request validation stays on the caller's thread.
  EXPECT_EQ(core->Prepare(Request("not-an-id", {}, 4), "").status().code(), absl::StatusCode::kInvalidArgument);
}

// Found by fuzz/service_request_fuzz.cc: a prompt in autoencode mode passed Prepare and was
// refused only after the slot reads, so with an evicted slot the client got NOT_FOUND, encoded
// again, and was refused then. Prepare refuses it before any queueing or store read.
TEST_F(SchedulerTest, PrepareRefusesAPromptInAutoencodeMode) {
  ASSERT_OK_AND_ASSIGN(const std::string a, Encode(kContextA));
  auto core = MakeDecoder({});
  const auto before = store_->Stats();
  for (const std::string& slot : {a, std::string(64, 'a')}) {  // stored, and unknown
    auto ae_with_prompt = Request(slot, {2936}, 4);
    ae_with_prompt.set_mode(icae::v1::MODE_AUTOENCODE);
    auto seq = core->Prepare(ae_with_prompt, "");
    EXPECT_EQ(seq.status().code(), absl::StatusCode::kInvalidArgument) << slot;
    EXPECT_THAT(std::string(seq.status().message()), ::testing::HasSubstr("autoencode mode takes no prompt"));
  }
  EXPECT_EQ(store_->Stats().hits, before.hits);
  EXPECT_EQ(store_->Stats().misses, before.misses);
  // The same slots without the prompt, and unspecified mode with one (instruct), still pass.
  auto ae = Request(a, {}, 4);
  ae.set_mode(icae::v1::MODE_AUTOENCODE);
  EXPECT_TRUE(core->Prepare(ae, "").ok());
  EXPECT_TRUE(core->Prepare(Request(a, {2936}, 4), "").ok());
}

TEST_F(SchedulerTest, PrefixKVCacheEvictsUnpinnedLruAtAndPastTheBound) {
  c10::InferenceMode guard;
  const Transformer& model = bundle_->model();
  const int64_t entry = model.NewCache(16).bytes();
  PrefixKVCache cache(2 * entry);
  EXPECT_TRUE(cache.Insert("a", model.NewCache(16)));
  EXPECT_TRUE(cache.Insert("b", model.NewCache(16)));
  EXPECT_EQ(cache.bytes(), 2 * entry);  // at the bound
  EXPECT_EQ(cache.evictions(), 0);
  auto pin_a = cache.Lookup("a");  // a is now the most recently used, and pinned
  ASSERT_NE(pin_a, nullptr);
  EXPECT_TRUE(cache.Insert("c", model.NewCache(16)));  // past it: b goes
  EXPECT_EQ(cache.Lookup("b"), nullptr);
  EXPECT_EQ(cache.bytes(), 2 * entry);
  EXPECT_EQ(cache.evictions(), 1);
  auto pin_c = cache.Lookup("c");
  EXPECT_FALSE(cache.Insert("d", model.NewCache(16)));  // everything pinned: not stored
  EXPECT_EQ(cache.entries(), 2);
  pin_c.reset();
  EXPECT_TRUE(cache.Insert("d", model.NewCache(16)));  // c is unpinned; a stays pinned
  EXPECT_NE(cache.Lookup("a"), nullptr);
  EXPECT_EQ(cache.Lookup("c"), nullptr);
  EXPECT_EQ(cache.bytes(), 2 * entry);
  EXPECT_FALSE(cache.Insert("big", model.NewCache(48)));  // larger than the bound
  EXPECT_TRUE(cache.Insert("a", model.NewCache(16)));     // already there
  EXPECT_EQ(cache.entries(), 2);

  PrefixKVCache off(0);
  EXPECT_FALSE(off.Insert("a", model.NewCache(16)));
  EXPECT_EQ(off.Lookup("a"), nullptr);
}

TEST_F(SchedulerTest, CopyKVPrefixCopiesThePositions) {
  c10::InferenceMode guard;
  const Transformer& model = bundle_->model();
  const ModelConfig& c = model.config();
  KVCache src = model.NewCache(8);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    src.Write(l, torch::randn({c.num_key_value_heads, 6, c.head_dim}), torch::randn({c.num_key_value_heads, 6, c.head_dim}));
  }
  src.Advance(6);
  KVCache dst = CopyKVPrefix(c, src, 4, 32);
  EXPECT_EQ(dst.length(), 4);
  EXPECT_GE(dst.capacity(), 32);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    EXPECT_TRUE(torch::equal(dst.Keys(l, 0), src.Keys(l, 0).narrow(1, 0, 4)));
    EXPECT_TRUE(torch::equal(dst.Values(l, 0), src.Values(l, 0).narrow(1, 0, 4)));
  }
  // The copy is its own memory: writing past it leaves the source alone.
  dst.Write(0, torch::zeros({c.num_key_value_heads, 1, c.head_dim}), torch::zeros({c.num_key_value_heads, 1, c.head_dim}));
  EXPECT_FALSE(torch::equal(src.Keys(0, 0).narrow(1, 4, 1), torch::zeros({c.num_key_value_heads, 1, c.head_dim})));
}

}  // namespace
}  // namespace icae

namespace icae {
namespace {

TEST_F(SchedulerTest, EncoderQueueBoundAtAndPast) {
  encoder::EncoderOptions o;
  o.max_queue = 1;
  o.max_batch = 4;
  o.batch_wait = absl::Milliseconds(300);  // the first job waits in the queue for company
  encoder::EncoderCore enc(*bundle_, *store_, o, metrics_);
  auto submit = [&](int64_t first_id) {
    icae::v1::EncodeRequest req;
    for (int64_t id : {first_id, int64_t{415}, int64_t{2936}}) req.mutable_token_ids()->add_ids(id);
    auto job = enc.Prepare(req, "");
    EXPECT_TRUE(job.ok());
    auto p = std::make_shared<std::promise<absl::StatusOr<icae::v1::EncodeResponse>>>();
    auto f = p->get_future();
    enc.Submit(std::move(*job), [p](absl::StatusOr<icae::v1::EncodeResponse> r) { p->set_value(std::move(r)); });
    return f;
  };
  auto at_bound = submit(1);
  auto past = submit(2);
  auto past_result = past.get();
  EXPECT_EQ(past_result.status().code(), absl::StatusCode::kResourceExhausted) << past_result.status();
  auto ok = at_bound.get();
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_FALSE(ok->cached());
  enc.StartDraining();
  EXPECT_EQ(submit(3).get().status().code(), absl::StatusCode::kUnavailable);
}

// Slot identity (common/server/slot_identity): the one context validator, addresses per
// tenant, and a record round trip that refuses another model's record or a corrupt one.
TEST_F(SchedulerTest, SlotIdentityValidatesContextsAndRecords) {
  using server::ContextInput;
  const std::string text = "The quick brown fox.";
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> ids, server::ContextIds(*bundle_, ContextInput{&text, {}}, 64));
  EXPECT_EQ(ids.front(), 1);  // BOS
  EXPECT_THAT(server::ContextIds(*bundle_, ContextInput{nullptr, ids}, 64), testing::IsOkAndHolds(ids));
  const std::string empty, bad_utf8 = "ok \xff";
  const std::vector<int64_t> out_of_vocab = {1, bundle_->base_vocab_size()};
  struct Case {
    ContextInput in;
    int64_t bound;
    std::string says;
  } cases[] = {
      {ContextInput{&empty, {}}, 64, "empty context"},
      {ContextInput{nullptr, {}}, 64, "empty context"},
      {ContextInput{&bad_utf8, {}}, 64, "not valid UTF-8"},
      {ContextInput{nullptr, out_of_vocab}, 64, "at position 1 is outside the vocabulary"},
      {ContextInput{nullptr, ids}, static_cast<int64_t>(ids.size()) - 1, "--max_context_tokens"},
      {ContextInput{&text, {}}, static_cast<int64_t>(ids.size()) - 1, "--max_context_tokens"},
  };
  for (const Case& c : cases) {
    auto r = server::ContextIds(*bundle_, c.in, c.bound);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_NE(r.status().message().find(c.says), absl::string_view::npos) << r.status();
  }
  EXPECT_TRUE(server::ContextIds(*bundle_, ContextInput{nullptr, ids}, static_cast<int64_t>(ids.size())).ok());

  // Same context: the same ID for every tenant, a store key of its own per tenant.
  const server::SlotAddress a = server::AddressOf(*bundle_, "", ids);
  const server::SlotAddress b = server::AddressOf(*bundle_, "bob", ids);
  EXPECT_EQ(a.slot_id.size(), 64u);
  EXPECT_EQ(a.store_key, a.slot_id);
  EXPECT_NE(b.slot_id, a.slot_id);  // the tenant is part of the content address
  EXPECT_EQ(b.store_key, server::TenantStoreKey("bob", b.slot_id));
  EXPECT_TRUE(slot_store::ValidateSlotId(b.store_key).ok());

  // Record round trip; another model's record and a truncated payload are refused.
  ASSERT_OK_AND_ASSIGN(CompressedContext c, testing::CompressText(*bundle_, text));
  const torch::Tensor& slots = c.slots;
  EXPECT_EQ(c.num_tokens, static_cast<int64_t>(ids.size()));
  slot_store::SlotRecord rec = server::MakeSlotRecord(*bundle_, c);
  ASSERT_OK_AND_ASSIGN(torch::Tensor back, server::SlotsFromRecord(*bundle_, {rec.header, rec.payload}));
  EXPECT_TRUE(torch::equal(back, slots));
  slot_store::SlotRecord other = rec;
  other.header.model_fingerprint = std::string(64, '0');
  EXPECT_EQ(server::SlotsFromRecord(*bundle_, {other.header, other.payload}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  slot_store::SlotRecord cut = rec;
  cut.payload.resize(cut.payload.size() - 4);
  EXPECT_EQ(server::SlotsFromRecord(*bundle_, {cut.header, cut.payload}).status().code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace icae

namespace icae {
namespace {

using decoder::StepThreads;

// Records `steps` probe steps of `batch` sequences, each taking what `cost(threads)` says.
template <typename Cost>
void Probe(StepThreads& st, int64_t batch, int steps, Cost cost) {
  for (int i = 0; i < steps; ++i) {
    const int t = st.Choose(batch);
    st.Record(batch, t, cost(t));
  }
}

TEST(StepThreadsTest, FixedCountAndOneThreadNeverProbe) {
  StepThreads fixed(4, 2);
  for (int64_t b : {1, 3, 8, 100}) EXPECT_EQ(fixed.Choose(b), 2);
  StepThreads capped(2, 16);  // at most the process's threads
  EXPECT_EQ(capped.Choose(1), 2);
  StepThreads single(1, 0);
  Probe(single, 4, 40, [](int t) { return t == 1 ? 1.0 : 0.1; });
  EXPECT_EQ(single.Choose(4), 1);
}

TEST(StepThreadsTest, AutoAlternatesThenKeepsTheFasterPerBatchClass) {
  StepThreads st(2, 0);
  // Probing alternates all threads and one, starting with all.
  std::vector<int> seen;
  for (int i = 0; i < 2 * StepThreads::kSamples; ++i) {
    const int t = st.Choose(1);
    seen.push_back(t);
    st.Record(1, t, t == 1 ? 3e-4 : 6e-4);  // one thread is faster for single sequences
  }
  EXPECT_EQ(seen[0], 2);
  EXPECT_EQ(seen[1], 1);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), StepThreads::kSamples);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(st.Choose(1), 1);
  // Batches of 8-15 are a class of their own, where the split wins; 2 and 3 share one.
  Probe(st, 8, 2 * StepThreads::kSamples, [](int t) { return t == 1 ? 2e-3 : 1e-3; });
  EXPECT_EQ(st.Choose(8), 2);
  EXPECT_EQ(st.Choose(15), 2);
  EXPECT_EQ(st.Choose(1), 1);
  Probe(st, 2, 2 * StepThreads::kSamples, [](int t) { return t == 1 ? 1e-3 : 2e-3; });
  EXPECT_EQ(st.Choose(3), 1);
}

TEST(StepThreadsTest, MedianIgnoresOutliersAndTheChoiceIsMeasuredAgain) {
  StepThreads st(2, 0);
  int step = 0;
  // All threads are faster except for two preempted steps that took 100x as long.
  Probe(st, 4, 2 * StepThreads::kSamples, [&](int t) { return t == 1 ? 2e-3 : (++step <= 2 ? 1e-1 : 1e-3); });
  EXPECT_EQ(st.Choose(4), 2);
  // After kReprobeSteps steps of the class it probes again; the load changed: one thread wins.
  for (int64_t i = 0; i < StepThreads::kReprobeSteps; ++i) st.Record(4, st.Choose(4), 1e-3);
  Probe(st, 4, 2 * StepThreads::kSamples, [](int t) { return t == 1 ? 1e-3 : 3e-3; });
  EXPECT_EQ(st.Choose(4), 1);
}

// The service's writer thread (decoder::StreamWriter): streams are written in the order they
// were queued; after a batch of one stream it polls (the next token of a lone stream is queued
// without waking it), after a batch of several it sleeps and the next Enqueue wakes it.
class CountingStream : public decoder::StreamWriter::Stream {
 public:
  CountingStream(int id, std::vector<int>* order, std::mutex* mu) : id_(id), order_(order), mu_(mu) {}
  void WritePending() override {
    std::unique_lock<std::mutex> lock(*mu_);
    entered_ = true;
    gate_cv_.wait(lock, [&] { return open_; });
    order_->push_back(id_);
  }
  // Holds the writer inside WritePending until Open; entered() tells that it is there.
  void Close() {
    std::lock_guard<std::mutex> lock(*mu_);
    open_ = false;
    entered_ = false;
  }
  bool entered() {
    std::lock_guard<std::mutex> lock(*mu_);
    return entered_;
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(*mu_);
      open_ = true;
    }
    gate_cv_.notify_all();
  }

 private:
  int id_;
  std::vector<int>* order_;
  std::mutex* mu_;
  std::condition_variable gate_cv_;
  bool open_ = true;
  bool entered_ = false;
};

// Waits (up to 10 s) until pred() holds.
template <typename P>
bool Eventually(P pred) {
  for (int i = 0; i < 10000 && !pred(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return pred();
}

TEST(StreamWriterTest, PollsAfterOneStreamSleepsAfterSeveralAndKeepsTheOrder) {
  std::mutex mu;
  std::vector<int> order;
  auto count = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return order.size();
  };
  auto a = std::make_shared<CountingStream>(1, &order, &mu);
  auto b = std::make_shared<CountingStream>(2, &order, &mu);
  auto c = std::make_shared<CountingStream>(3, &order, &mu);
  // A poll much longer than the test: a batch of one never lets the thread sleep.
  decoder::StreamWriter writer(absl::Seconds(60));
  ASSERT_TRUE(Eventually([&] { return writer.sleeping(); }));  // nothing written yet: asleep
  writer.Enqueue(a);
  ASSERT_TRUE(Eventually([&] { return count() == 1; }));
  EXPECT_EQ(writer.wakeups(), 1);
  writer.Enqueue(a);  // a lone stream's next token: the thread is polling, no wake-up
  ASSERT_TRUE(Eventually([&] { return count() == 2; }));
  EXPECT_EQ(writer.wakeups(), 1);
  EXPECT_FALSE(writer.sleeping());

  // Held inside a's write, the thread finds b and c queued together: a batch of two.
  a->Close();
  writer.Enqueue(a);
  ASSERT_TRUE(Eventually([&] { return a->entered(); }));
  writer.Enqueue(b);
  writer.Enqueue(c);
  a->Open();
  ASSERT_TRUE(Eventually([&] { return count() == 5; }));
  ASSERT_TRUE(Eventually([&] { return writer.sleeping(); }));  // after several: asleep at once
  const int64_t before = writer.wakeups();
  writer.Enqueue(c);
  ASSERT_TRUE(Eventually([&] { return count() == 6; }));
  EXPECT_EQ(writer.wakeups(), before + 1);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(order, (std::vector<int>{1, 1, 1, 2, 3, 3}));
}

}  // namespace
}  // namespace icae
