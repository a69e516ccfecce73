// The decoder's continuous-batching scheduler and the encoder's batching core, in-process on
// the tiny ICAE test model (float32): concurrent sequences give exactly what one-at-a-time
// Generate gives; queue bounds, cancellation and deadlines leave within a step.
#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <condition_variable>
#include <future>
#include <mutex>

#include "common/icae/prompt.h"
#include "common/model/generate.h"
#include "common/server/metrics.h"
#include "common/server/model_bundle.h"
#include "common/slot_store/slot_store.h"
#include "decoder_service/decoder_core.h"
#include "encoder_service/encoder_core.h"
#include "tests/test_util.h"

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

  std::string Encode(const std::vector<int64_t>& ids) {
    encoder::EncoderCore enc(*bundle_, *store_, {}, metrics_);
    icae::v1::EncodeRequest req;
    for (int64_t id : ids) req.mutable_token_ids()->add_ids(id);
    auto job = enc.Prepare(req, "");
    EXPECT_TRUE(job.ok()) << job.status();
    std::promise<absl::StatusOr<icae::v1::EncodeResponse>> p;
    enc.Submit(std::move(*job), [&](absl::StatusOr<icae::v1::EncodeResponse> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->slot_id() : "";
  }

  // The reference: single-sequence Generate on the same input.
  std::vector<int64_t> Reference(const std::string& slot_id, const std::vector<int64_t>& prompt, int64_t n) {
    c10::InferenceMode guard;
    auto rec = store_->GetRecord(slot_id);
    EXPECT_TRUE(rec.ok());
    slot_store::SlotRecordView view{rec->header, rec->payload};
    auto slots = bundle_->SlotsFromRecord(view);
    EXPECT_TRUE(slots.ok());
    auto input = AssembleDecoderInput(bundle_->model(), bundle_->adapter(),
                                      prompt.empty() ? PromptMode::kAutoencode : PromptMode::kInstruct,
                                      {*slots}, prompt);
    EXPECT_TRUE(input.ok()) << input.status();
    SequenceInput in;
    in.embeds = *input;
    GenerateOptions go;
    go.max_new_tokens = n;
    go.ignore_eos = true;
    auto r = Generate(bundle_->model(), in, IcaeDecodeOptions(bundle_->adapter(), go));
    EXPECT_TRUE(r.ok()) << r.status();
    return r->ids;
  }

  icae::v1::GenerateRequest Request(const std::string& slot_id, const std::vector<int64_t>& prompt, int64_t n) {
    icae::v1::GenerateRequest req;
    req.add_slot_ids(slot_id);
    for (int64_t id : prompt) req.mutable_prompt_ids()->add_ids(id);
    req.mutable_stopping()->set_max_new_tokens(n);
    req.mutable_stopping()->set_ignore_eos(true);
    return req;
  }

  server::MetricsRegistry metrics_;
  std::unique_ptr<server::ModelBundle> bundle_;
  std::unique_ptr<slot_store::SlotStore> store_;
};

TEST_F(SchedulerTest, ConcurrentSequencesMatchOneAtATimeGeneration) {
  const std::string a = Encode({1, 415, 2936, 9060, 285, 1142, 461, 10575, 754, 272, 17898, 3914, 28723});
  const std::string b = Encode({1, 851, 349, 264, 1269, 2757, 684, 264, 2485, 302, 9060, 28723, 661, 2368});
  const std::vector<std::vector<int64_t>> prompts = {{}, {1824, 349, 378, 28804}, {}, {5801, 28804}};
  const std::vector<std::string> slots = {a, a, b, b};
  const std::vector<int64_t> lengths = {12, 20, 7, 16};  // sequences leave at different steps
  decoder::DecoderOptions o;
  o.max_batch = 3;  // the fourth joins when the first leaves
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
    EXPECT_EQ(sinks[i]->ids, Reference(slots[i], prompts[i], lengths[i])) << "sequence " << i;
  }
  EXPECT_EQ(core->Running(), 0);
}

TEST_F(SchedulerTest, QueueBoundAtAndPast) {
  const std::string a = Encode({1, 415, 2936, 9060, 285});
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

TEST_F(SchedulerTest, CancelAndDeadlineLeaveWithinAStep) {
  const std::string a = Encode({1, 415, 2936, 9060, 285});
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
  const std::string a = Encode({1, 415, 2936, 9060, 285, 1142, 461});
  auto core = MakeDecoder({});
  auto run = [&](icae::v1::GenerateRequest req) {
    auto sink = std::make_shared<CollectingSink>();
    auto seq = core->Prepare(req, "");
    EXPECT_TRUE(seq.ok()) << seq.status();
    EXPECT_TRUE(core->Submit(std::move(*seq), sink, std::make_shared<std::atomic<bool>>(false),
                             absl::InfiniteFuture()).ok());
    EXPECT_TRUE(sink->WaitDone(absl::Seconds(30)));
    return sink;
  };
  auto full = run(Request(a, {}, 16));
  ASSERT_EQ(full->ids.size(), 16u);
  // Stop on the 5th token id.
  auto req = Request(a, {}, 16);
  req.mutable_stopping()->add_stop_token_ids(full->ids[4]);
  auto st = run(req);
  EXPECT_EQ(st->final.finish_reason(), icae::v1::FINISH_REASON_STOP_TOKEN);
  EXPECT_EQ(st->final.stop_token_id(), full->ids[4]);
  // Stop on a piece of the text.
  if (full->text.size() >= 6) {
    const std::string stop = full->text.substr(full->text.size() / 2, 3);
    auto req2 = Request(a, {}, 16);
    req2.mutable_stopping()->add_stop_sequences(stop);
    auto ss = run(req2);
    EXPECT_EQ(ss->final.finish_reason(), icae::v1::FINISH_REASON_STOP_SEQUENCE);
    EXPECT_EQ(ss->final.stop_sequence(), stop);
    EXPECT_EQ(ss->text, full->text.substr(0, full->text.find(stop)));
  }
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

}  // namespace
}  // namespace icae
