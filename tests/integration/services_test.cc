// The real encoder_service and decoder_service binaries on loopback (free ports, tiny ICAE
// test model, float32): round trip = in-process generation, bad input with its status code and
// a healthy server after, cancel/deadline, metrics, API keys and tenants, Redis shared by two
// encoders and two decoders, the `icae` client commands, `icae up`, graceful shutdown.
#include <gtest/gtest.h>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/server/client.h"
#include "common/server/metrics_http.h"
#include "common/server/model_bundle.h"
#include "common/slot_store/local_redis_server.h"
#include "common/slot_store/slot_store.h"
#include "icae/v1/icae.grpc.pb.h"
#include "tests/integration/services_harness.h"
#include "tests/test_util.h"
#include "tests/testing/reference.h"
#include "tests/testing/status.h"

namespace icae {
namespace {

using server::ChildProcess;
using testing::IsOkAndHolds;
using ::testing::Gt;

const char* kContext =
    "The quick brown fox jumps over the lazy dog. In-context autoencoders compress a long context "
    "into a few memory slots that a frozen decoder can read back.";

// One encoder and one decoder sharing a file store, for the whole suite.
class ServicesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!testing::PathExists(GoldenDir() + "/icae_adapter.safetensors")) return;
    dir_ = new std::string(testing::MakeTempDir("icae-services"));
    store_uri_ = new std::string("file://" + *dir_ + "/slots");
    auto e = StartService("encoder_service", *dir_, *store_uri_);
    // Not ASSERT: a fatal failure here makes googletest skip every test of the suite, and ctest
    // reports skipped tests as skipped, not failed. SetUp fails each test with the error.
    if (!e.ok()) return void(setup_error_ = new std::string(e.status().ToString()));
    encoder_ = new Service(std::move(*e));
    auto d = StartService("decoder_service", *dir_, *store_uri_);
    if (!d.ok()) return void(setup_error_ = new std::string(d.status().ToString()));
    decoder_ = new Service(std::move(*d));
  }
  static void TearDownTestSuite() {
    delete encoder_;
    delete decoder_;
    encoder_ = decoder_ = nullptr;
  }
  void SetUp() override {
    ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
    ASSERT_EQ(setup_error_, nullptr) << "starting the services: " << *setup_error_;
    ASSERT_NE(encoder_, nullptr);
    ASSERT_NE(decoder_, nullptr);
  }
  void ExpectHealthy() {
    EXPECT_EQ(encoder_->Health(), "SERVING");
    EXPECT_EQ(decoder_->Health(), "SERVING");
  }
  // The slot ID of `text`, or the encoder's error.
  absl::StatusOr<std::string> Encode(const std::string& text) {
    icae::v1::EncodeResponse resp;
    auto st = RunEncode(encoder_->channel, TextRequest(text), &resp);
    if (!st.ok()) return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
    return resp.slot_id();
  }

  static std::string* dir_;
  static std::string* store_uri_;
  static Service* encoder_;
  static Service* decoder_;
  static std::string* setup_error_;  // why SetUpTestSuite could not start the services
};
std::string* ServicesTest::dir_ = nullptr;
std::string* ServicesTest::store_uri_ = nullptr;
Service* ServicesTest::encoder_ = nullptr;
Service* ServicesTest::decoder_ = nullptr;
std::string* ServicesTest::setup_error_ = nullptr;

TEST_F(ServicesTest, RoundTripMatchesInProcessGeneration) {
  icae::v1::EncodeResponse first, again;
  ASSERT_TRUE(RunEncode(encoder_->channel, TextRequest(kContext), &first).ok());
  EXPECT_EQ(first.slot_id().size(), 64u);
  EXPECT_FALSE(first.cached());
  EXPECT_EQ(first.slot_count(), first.segment_count() * 8);
  ASSERT_TRUE(RunEncode(encoder_->channel, TextRequest(kContext), &again).ok());
  EXPECT_EQ(again.slot_id(), first.slot_id());
  EXPECT_TRUE(again.cached());

  // In-process reference: same model, same dtype.
  server::ModelBundleOptions o{GoldenDir() + "/model", GoldenDir() + "/icae_adapter.safetensors", "float32"};
  ASSERT_OK_AND_ASSIGN(auto bundle, server::ModelBundle::Load(o));
  ASSERT_OK_AND_ASSIGN(auto ids, bundle->Tokenize(kContext, true));
  EXPECT_EQ(static_cast<int64_t>(ids.size()), first.token_count());
  ASSERT_OK_AND_ASSIGN(CompressedContext slots, testing::CompressText(*bundle, kContext));
  for (const std::string prompt : {"", "What does the fox do?"}) {
    ASSERT_OK_AND_ASSIGN(auto prompt_ids, bundle->Tokenize(prompt, false));
    ASSERT_OK_AND_ASSIGN(testing::ReferenceOutput ref, testing::ReferenceGenerate(*bundle, {slots}, prompt_ids, 24));

    GenResult r = RunGenerate(decoder_->channel, SlotRequest(first.slot_id(), 24, prompt));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.ids, ref.ids) << "prompt '" << prompt << "'";
    EXPECT_EQ(r.text, ref.text);
    EXPECT_EQ(r.final.finish_reason(), icae::v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(r.final.usage().completion_tokens(), 24);
    EXPECT_EQ(r.final.usage().slot_count(), first.slot_count());
    EXPECT_EQ(r.final.usage().context_tokens(), first.token_count());
    EXPECT_GT(r.final.timings().total_seconds(), 0);
  }
  ExpectHealthy();
}

// Decoder steps that ran more than one sequence (batch size above the first bucket, le="1"):
// only continuous batching produces them.
absl::StatusOr<double> BatchedSteps(const Service& decoder) {
  ASSIGN_OR_RETURN(const std::string m, decoder.Metrics());
  ASSIGN_OR_RETURN(const double steps, server::FindSample(m, "icae_batch_size_count"));
  ASSIGN_OR_RETURN(const double single, server::FindSample(m, "icae_batch_size_bucket", "{le=\"1\"}"));
  return steps - single;
}

// Four streams sent while a long one runs are batched with it (steps with more than one
// sequence appear; a decoder that ran requests one at a time would show none) and give exactly
// what each gives alone.
// The command line of a decoder on the golden model with one more flag (its port file in dir).
std::string DecoderWithFlag(const std::string& dir, const std::string& flag) {
  return ServiceBinary("decoder_service") + " --model=" + GoldenDir() + "/model --adapter=" + GoldenDir() +
         "/icae_adapter.safetensors --dtype=float32 --threads=1 --store=memory:// --metrics_port=-1 --port_file=" +
         dir + "/port " + flag;
}

// --decode_step_threads: 0 (auto) or a count (capped at --threads: server_scheduler_test
// StepThreadsTest); below 0 it is a bad flag, named, before the decoder serves.
TEST(ServicesFlagsTest, DecodeStepThreadsBelowZeroIsABadFlag) {
  ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
  const std::string dir = testing::MakeTempDir("icae-step-threads-flag");
  for (const std::string value : {"-1", "two"}) {
    const std::string cmd = DecoderWithFlag(dir, "--decode_step_threads=" + value);
    std::string out, err;
    EXPECT_NE(testing::RunCommand(cmd, &out, &err), 0) << cmd << "\n" << err;
    EXPECT_NE(err.find("decode_step_threads"), std::string::npos) << cmd << "\nstderr: " << err;
  }
}

TEST(ServicesBatchingTest, ConcurrentStreamsAreBatchedAndMatchSingleRuns) {
  ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
  const std::string dir = testing::MakeTempDir("icae-services-batching");
  const std::string store = "file://" + dir + "/slots";
  ASSERT_OK_AND_ASSIGN(Service enc, StartService("encoder_service", dir, store));
  ASSERT_OK_AND_ASSIGN(Service dec, StartService("decoder_service", dir, store, {"--max_new_tokens=3000"}));
  icae::v1::EncodeResponse ea, eb;
  ASSERT_TRUE(RunEncode(enc.channel, TextRequest(kContext), &ea).ok());
  ASSERT_TRUE(RunEncode(enc.channel, TextRequest("A second context about slot caches and replicas."), &eb).ok());
  const std::string a = ea.slot_id(), b = eb.slot_id();
  std::vector<icae::v1::GenerateRequest> reqs = {SlotRequest(a, 20), SlotRequest(b, 30, "Why?"),
                                                 SlotRequest(a, 10, "Who?"), SlotRequest(b, 25)};
  std::vector<GenResult> single;
  for (const auto& r : reqs) single.push_back(RunGenerate(dec.channel, r));
  for (const auto& r : single) ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_OK_AND_ASSIGN(const double batched_before, BatchedSteps(dec));
  EXPECT_EQ(batched_before, 0) << "one request at a time";

  // A long stream that is still running (3000 tokens take seconds) when the four arrive.
  auto stub = icae::v1::Decoder::NewStub(dec.channel);
  grpc::ClientContext long_ctx;
  auto long_stream = stub->Generate(&long_ctx, SlotRequest(b, 3000));
  icae::v1::GenerateResponse msg;
  ASSERT_TRUE(long_stream->Read(&msg));
  std::vector<GenResult> together(reqs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < reqs.size(); ++i) {
    threads.emplace_back([&, i] { together[i] = RunGenerate(dec.channel, reqs[i]); });
  }
  for (auto& t : threads) t.join();
  EXPECT_THAT(dec.Sample("icae_requests_running"), IsOkAndHolds(1)) << "the long stream is still running";
  long_ctx.TryCancel();
  while (long_stream->Read(&msg)) {
  }
  EXPECT_EQ(long_stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].ids, single[i].ids) << "request " << i;
  }
  EXPECT_THAT(BatchedSteps(dec), IsOkAndHolds(Gt(batched_before)));
}

TEST_F(ServicesTest, BadInputTableAnswersItsCodeAndLeavesServersHealthy) {
  ASSERT_OK_AND_ASSIGN(const std::string good, Encode(kContext));
  auto slots = slot_store::OpenSlotStore(*store_uri_);
  ASSERT_TRUE(slots.ok());
  // A record of another model, and a corrupt one, planted in the shared store.
  auto good_rec = (*slots)->GetRecord(good);
  ASSERT_TRUE(good_rec.ok()) << good_rec.status();
  slot_store::SlotRecord other = *good_rec;
  other.header.model_fingerprint = std::string(64, 'f');
  const std::string other_id(64, 'b');
  ASSERT_TRUE((*slots)->PutRecord(other_id, other).ok());
  const std::string corrupt_id(64, 'c');
  ASSERT_TRUE((*slots)->PutRecord(corrupt_id, *good_rec).ok());
  {
    std::string path = *dir_ + "/slots/" + corrupt_id + ".slot";
    std::string bytes = ReadFile(path);
    ASSERT_GT(bytes.size(), 200u);
    bytes[bytes.size() - 10] ^= 0x55;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }

  struct EncodeCase {
    const char* name;
    icae::v1::EncodeRequest req;
    grpc::StatusCode code;
  };
  std::vector<EncodeCase> encode_cases;
  auto ids_req = [](int64_t n, int64_t value) {
    icae::v1::EncodeRequest r;
    for (int64_t i = 0; i < n; ++i) r.mutable_token_ids()->add_ids(value);
    return r;
  };
  encode_cases.push_back({"empty context", TextRequest(""), grpc::StatusCode::INVALID_ARGUMENT});
  encode_cases.push_back({"no context", icae::v1::EncodeRequest(), grpc::StatusCode::INVALID_ARGUMENT});
  encode_cases.push_back({"context at the bound", ids_req(kMaxContext, 100), grpc::StatusCode::OK});
  encode_cases.push_back({"context over the bound", ids_req(kMaxContext + 1, 100), grpc::StatusCode::INVALID_ARGUMENT});
  encode_cases.push_back({"malformed UTF-8", TextRequest("ab\xff\xfe"), grpc::StatusCode::INVALID_ARGUMENT});
  encode_cases.push_back({"id out of vocabulary", ids_req(3, 32000), grpc::StatusCode::INVALID_ARGUMENT});
  encode_cases.push_back({"negative id", ids_req(3, -1), grpc::StatusCode::INVALID_ARGUMENT});
  encode_cases.push_back({"oversized message", TextRequest(std::string(1100000, 'a')),
                          grpc::StatusCode::RESOURCE_EXHAUSTED});
  for (const auto& c : encode_cases) {
    icae::v1::EncodeResponse resp;
    grpc::Status st = RunEncode(encoder_->channel, c.req, &resp);
    EXPECT_EQ(st.error_code(), c.code) << c.name << ": " << st.error_message();
    EXPECT_LE(st.error_message().size(), 1024u);
  }

  struct GenCase {
    const char* name;
    icae::v1::GenerateRequest req;
    grpc::StatusCode code;
  };
  std::vector<GenCase> gen_cases;
  auto g = [&](const std::string& slot) { return SlotRequest(slot, 4); };
  gen_cases.push_back({"no slots, no context", icae::v1::GenerateRequest(), grpc::StatusCode::INVALID_ARGUMENT});
  gen_cases.push_back({"unknown slot", g(std::string(64, 'a')), grpc::StatusCode::NOT_FOUND});
  gen_cases.push_back({"malformed slot id", g("../etc/passwd"), grpc::StatusCode::INVALID_ARGUMENT});
  gen_cases.push_back({"slot of another model", g(other_id), grpc::StatusCode::FAILED_PRECONDITION});
  gen_cases.push_back({"corrupt stored record", g(corrupt_id), grpc::StatusCode::DATA_LOSS});
  {
    auto r = g(good);
    r.mutable_sampling()->set_temperature(-1);
    gen_cases.push_back({"negative temperature", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    r.mutable_sampling()->set_top_p(1.5);
    gen_cases.push_back({"top_p > 1", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    r.mutable_sampling()->set_top_k(-2);
    gen_cases.push_back({"negative top_k", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  gen_cases.push_back({"max_new_tokens at the bound", SlotRequest(good, kMaxNew), grpc::StatusCode::OK});
  gen_cases.push_back({"max_new_tokens over the bound", SlotRequest(good, kMaxNew + 1), grpc::StatusCode::INVALID_ARGUMENT});
  {
    auto r = g(good);
    for (int64_t i = 0; i < kMaxPrompt; ++i) r.mutable_prompt_ids()->add_ids(100);
    gen_cases.push_back({"prompt at the bound", r, grpc::StatusCode::OK});
    r.mutable_prompt_ids()->add_ids(100);
    gen_cases.push_back({"prompt over the bound", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    for (int i = 1; i < kMaxSlotIds; ++i) r.add_slot_ids(good);
    gen_cases.push_back({"slot ids at the bound", r, grpc::StatusCode::OK});
    r.add_slot_ids(good);
    gen_cases.push_back({"slot ids over the bound", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    r.mutable_sampling()->set_repetition_penalty(0.5);
    gen_cases.push_back({"repetition_penalty < 1", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    r.mutable_stopping()->set_max_new_tokens(-1);
    gen_cases.push_back({"negative max_new_tokens", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    r.set_prompt_text("q\xc3(");
    gen_cases.push_back({"malformed UTF-8 prompt", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    r.mutable_prompt_ids()->add_ids(40000);
    gen_cases.push_back({"prompt id out of vocabulary", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    r.set_mode(icae::v1::MODE_AUTOENCODE);
    r.set_prompt_text("autoencode takes no prompt");
    gen_cases.push_back({"prompt in autoencode mode", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    r.mutable_stopping()->add_stop_sequences("");
    gen_cases.push_back({"empty stop sequence", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    r.set_context_text("both slots and a context");
    gen_cases.push_back({"slots and context", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    icae::v1::GenerateRequest r;
    r.set_context_text("");
    gen_cases.push_back({"empty raw context", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    icae::v1::GenerateRequest r;
    for (int64_t i = 0; i <= kMaxContext; ++i) r.mutable_context_ids()->add_ids(100);
    gen_cases.push_back({"raw context over the bound", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    auto r = g(good);
    r.set_prompt_text(std::string(1100000, 'a'));
    gen_cases.push_back({"oversized message", r, grpc::StatusCode::RESOURCE_EXHAUSTED});
  }
  for (const auto& c : gen_cases) {
    GenResult r = RunGenerate(decoder_->channel, c.req);
    EXPECT_EQ(r.status.error_code(), c.code) << c.name << ": " << r.status.error_message();
    if (c.code != grpc::StatusCode::OK) {
      EXPECT_EQ(r.messages, 0) << c.name << ": no token before an error";
    }
  }
  // The corrupt record was removed: now it is simply unknown.
  EXPECT_EQ(RunGenerate(decoder_->channel, g(corrupt_id)).status.error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectHealthy();
  EXPECT_EQ(RunGenerate(decoder_->channel, g(good)).status.error_code(), grpc::StatusCode::OK);
}

TEST_F(ServicesTest, CancelMidStreamFreesTheSequence) {
  ASSERT_OK_AND_ASSIGN(const std::string slot, Encode(kContext));
  auto stub = icae::v1::Decoder::NewStub(decoder_->channel);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, SlotRequest(slot, kMaxNew));
  icae::v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // Within a step once the deadline passes; up to 10 s here so a loaded CI machine does not flake.
  for (int i = 0; i < 1000 && decoder_->Sample("icae_requests_running").value_or(-1) != 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(decoder_->Sample("icae_requests_running"), IsOkAndHolds(0)) << "decoder log:\n" << ReadFile(decoder_->log);
  ExpectHealthy();
}

TEST_F(ServicesTest, DeadlineExceededStopsTheWork) {
  ASSERT_OK_AND_ASSIGN(const std::string slot, Encode(kContext));
  // Generate RPCs the decoder has finished, whatever their code.
  auto finished = [&] {
    double n = 0;
    for (const char* code : {"OK", "CANCELLED", "DEADLINE_EXCEEDED"}) {
      n += decoder_->Sample("icae_requests_total", absl::StrCat("{method=\"Generate\",code=\"", code, "\"}")).value_or(0);
    }
    return n;
  };
  const double before = finished();
  GenResult r = RunGenerate(decoder_->channel, SlotRequest(slot, kMaxNew), "", absl::Milliseconds(1));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << r.status.error_message();
  // The client gives up before the decoder has even admitted the request, so "nothing running"
  // alone passes too early: first the decoder finishes the RPC (within a step once the deadline
  // passes; unless it never arrived), then nothing runs. Up to 10 s each for a loaded machine
  // (TSan: the request was admitted after the client's error).
  for (int i = 0; i < 1000 && finished() == before; ++i) absl::SleepFor(absl::Milliseconds(10));
  for (int i = 0; i < 1000 && decoder_->Sample("icae_requests_running").value_or(-1) != 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(decoder_->Sample("icae_requests_running"), IsOkAndHolds(0)) << "decoder log:\n" << ReadFile(decoder_->log);
  ExpectHealthy();
}

TEST_F(ServicesTest, BaselineOverRawContextStreams) {
  icae::v1::GenerateRequest r;
  r.set_context_text(kContext);
  r.set_prompt_text("What does the fox do?");
  r.mutable_stopping()->set_max_new_tokens(8);
  r.mutable_stopping()->set_ignore_eos(true);
  GenResult g = RunGenerate(decoder_->channel, r);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.ids.size(), 8u);
  EXPECT_GT(g.final.usage().slot_count(), 20);
}

// --kv_cache_bytes is a byte count of at least 1: anything else is a bad flag (exit 2, named,
// before the decoder serves). Its admission bound: server_scheduler_test KvCacheBoundAtAndPast.
TEST(ServicesFlagsTest, KvCacheBytesOutOfRangeIsABadFlag) {
  ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
  const std::string dir = testing::MakeTempDir("icae-kv-flag");
  for (const std::string value : {"0", "-1", "lots", "9223372036854775808"}) {
    const std::string cmd = DecoderWithFlag(dir, "--kv_cache_bytes=" + value);
    std::string out, err;
    EXPECT_EQ(testing::RunCommand(cmd, &out, &err), 2) << cmd << "\n" << err;
    EXPECT_NE(err.find("--kv_cache_bytes"), std::string::npos) << cmd << "\nstderr: " << err;
  }
}

TEST_F(ServicesTest, MetricsAndModelInfo) {
  ASSERT_OK_AND_ASSIGN(const std::string slot, Encode(kContext));
  ASSERT_OK_AND_ASSIGN(const std::string again, Encode(kContext));  // a slot cache hit
  EXPECT_EQ(again, slot);
  ASSERT_TRUE(RunGenerate(decoder_->channel, SlotRequest(slot, 4)).status.ok());
  ASSERT_OK_AND_ASSIGN(const std::string dm, decoder_->Metrics());
  for (const char* name : {"icae_requests_running", "icae_requests_waiting", "icae_time_to_first_token_seconds_count",
                           "icae_inter_token_latency_seconds_count", "icae_e2e_request_latency_seconds_count",
                           "icae_request_queue_time_seconds_count", "icae_batch_size_count",
                           "icae_prompt_tokens_total", "icae_generation_tokens_total", "icae_slot_cache_bytes",
                           "icae_prefix_cache_hits_total", "icae_prefix_cache_misses_total",
                           "icae_prefix_cache_bytes", "icae_scheduler_loop_seconds_count",
                           "icae_kv_cache_bytes", "icae_kv_cache_reserved_bytes"}) {
    EXPECT_TRUE(server::FindSample(dm, name).ok()) << name << "\n" << dm;
  }
  EXPECT_THAT(server::FindSample(dm, "icae_generation_tokens_total"), IsOkAndHolds(Gt(0)));
  ASSERT_OK_AND_ASSIGN(const std::string em, encoder_->Metrics());
  EXPECT_THAT(server::FindSample(em, "icae_encoded_tokens_total"), IsOkAndHolds(Gt(0))) << em;
  EXPECT_THAT(server::FindSample(em, "icae_slot_cache_hits_total", "{service=\"encoder\"}"), IsOkAndHolds(Gt(0))) << em;

  auto stub = icae::v1::Decoder::NewStub(decoder_->channel);
  grpc::ClientContext ctx;
  icae::v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.hidden_size(), 64);
  EXPECT_EQ(info.mem_size(), 8);
  EXPECT_EQ(info.max_new_tokens(), kMaxNew);
  EXPECT_EQ(info.max_context_tokens(), kMaxContext);
  EXPECT_EQ(info.max_prompt_tokens(), kMaxPrompt);
  EXPECT_EQ(info.max_slot_ids(), kMaxSlotIds);
  // Defaults of the bounds not set by flag here.
  EXPECT_EQ(info.max_stop_sequences(), 8);
  EXPECT_EQ(info.max_stop_sequence_bytes(), 256);
  EXPECT_EQ(info.max_stop_token_ids(), 64);
  EXPECT_EQ(info.max_request_id_bytes(), 128);
  EXPECT_EQ(info.model_fingerprint().size(), 64u);
}

TEST_F(ServicesTest, CliEncodeGenerateAsk) {
  std::string out, err;
  const std::string icae = testing::IcaeBinary();
  ASSERT_OK_AND_ASSIGN(const std::string encoded, Encode(kContext));  // so the CLI's encode is a cache hit
  ASSERT_EQ(testing::RunCommand(icae + " encode --server " + encoder_->address + " --text '" + kContext + "' --verbose",
                                &out, &err), 0) << err;
  const std::string slot = out.substr(0, out.find('\n'));
  EXPECT_EQ(slot, encoded);
  EXPECT_NE(err.find("cached=true"), std::string::npos) << err;

  GenResult ref = RunGenerate(decoder_->channel, SlotRequest(slot, 12));
  ASSERT_TRUE(ref.status.ok());
  ASSERT_EQ(testing::RunCommand(icae + " generate --server " + decoder_->address + " --slot " + slot +
                                " --max-new-tokens 12 --ignore-eos --verbose", &out, &err), 0) << err;
  EXPECT_EQ(out, ref.text + "\n");
  // The run above left the slots' prefix KV in the decoder's prefix cache.
  EXPECT_NE(err.find("cached_prefix_tokens=" + std::to_string(ref.final.usage().slot_count())), std::string::npos)
      << err;
  ASSERT_EQ(testing::RunCommand(icae + " ask --encoder " + encoder_->address + " --decoder " + decoder_->address +
                                " --text '" + kContext + "' --max-new-tokens 12 --ignore-eos --print-ids", &out, &err), 0) << err;
  std::string ids;
  for (int64_t id : ref.ids) ids += (ids.empty() ? "" : " ") + std::to_string(id);
  EXPECT_EQ(out, ids + "\n");
  // Errors: the status code name on stderr, exit 1.
  EXPECT_EQ(testing::RunCommand(icae + " generate --server " + decoder_->address + " --slot " + std::string(64, 'a'),
                                &out, &err), 1);
  EXPECT_NE(err.find("NOT_FOUND"), std::string::npos) << err;
}

TEST_F(ServicesTest, ConcurrentIdenticalEncodesAreComputedOnce) {
  const std::string text = "A context that eight clients send at the same moment, once each.";
  ASSERT_OK_AND_ASSIGN(const double before, encoder_->Sample("icae_encoded_tokens_total"));
  std::vector<icae::v1::EncodeResponse> resps(8);
  std::vector<grpc::Status> sts(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] { sts[i] = RunEncode(encoder_->channel, TextRequest(text), &resps[i]); });
  }
  for (auto& t : threads) t.join();
  int computed = 0;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(sts[i].ok()) << sts[i].error_message();
    EXPECT_EQ(resps[i].slot_id(), resps[0].slot_id());
    computed += resps[i].cached() ? 0 : 1;
  }
  EXPECT_EQ(computed, 1);
  EXPECT_THAT(encoder_->Sample("icae_encoded_tokens_total"), IsOkAndHolds(before + resps[0].token_count()));
}

TEST_F(ServicesTest, ConcurrentDistinctEncodesShareCompressionPasses) {
  std::vector<std::thread> threads;
  std::vector<grpc::Status> sts(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      icae::v1::EncodeResponse r;
      sts[i] = RunEncode(encoder_->channel, TextRequest(absl::StrCat("distinct context ", i, " for batching")), &r);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& st : sts) EXPECT_TRUE(st.ok()) << st.error_message();
  // Some pass compressed more than one context (8 calls arriving while passes run).
  ASSERT_OK_AND_ASSIGN(const double contexts, encoder_->Sample("icae_encoder_batch_size_sum"));
  ASSERT_OK_AND_ASSIGN(const double passes, encoder_->Sample("icae_encoder_batch_size_count"));
  EXPECT_GT(contexts, passes);
}

TEST_F(ServicesTest, EncodeCanReturnRawSlots) {
  icae::v1::EncodeRequest req = TextRequest("Return my slots, please.");
  req.set_return_slots(true);
  for (int pass = 0; pass < 2; ++pass) {  // computed, then cached
    icae::v1::EncodeResponse r;
    ASSERT_TRUE(RunEncode(encoder_->channel, req, &r).ok());
    EXPECT_EQ(r.cached(), pass == 1);
    EXPECT_EQ(r.slots().dtype(), icae::v1::DTYPE_FLOAT32);
    ASSERT_EQ(r.slots().shape_size(), 2);
    EXPECT_EQ(r.slots().shape(0), r.slot_count());
    EXPECT_EQ(r.slots().shape(1), 64);
    EXPECT_EQ(static_cast<int64_t>(r.slots().data().size()), r.slot_count() * 64 * 4);
  }
}

// TLS: the services serve TLS with --tls_cert/--tls_key; a client trusting the certificate
// works, a plaintext client does not.
TEST(ServicesTlsTest, TlsRoundTrip) {
  ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
  const std::string dir = testing::MakeTempDir("icae-services-tls");
  std::string out, err;
  ASSERT_EQ(testing::RunCommand("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                                "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " + dir +
                                "/key.pem -out " + dir + "/cert.pem 2>&1", &out, &err), 0) << out;
  const std::string store = "file://" + dir + "/slots";
  std::vector<std::string> tls = {"--tls_cert=" + dir + "/cert.pem", "--tls_key=" + dir + "/key.pem"};
  // StartService waits for health over plaintext, which a TLS server refuses: start by hand.
  const std::string port_file = dir + "/enc.port";
  std::vector<std::string> argv = {ServiceBinary("encoder_service"), "--model=" + GoldenDir() + "/model",
                                   "--adapter=" + GoldenDir() + "/icae_adapter.safetensors", "--dtype=float32",
                                   "--threads=1", "--store=" + store, "--port_file=" + port_file};
  argv.insert(argv.end(), tls.begin(), tls.end());
  auto proc = ChildProcess::Start(argv, dir + "/enc.log");
  ASSERT_TRUE(proc.ok());
  auto pf = server::ReadPortFile(port_file, absl::Seconds(60), proc->get());
  ASSERT_TRUE(pf.ok()) << pf.status();
  server::ClientOptions co;
  co.tls_ca_file = dir + "/cert.pem";
  co.tls_server_name = "localhost";
  auto ch = server::MakeChannel(pf->grpc, co);
  ASSERT_TRUE(ch.ok());
  ASSERT_TRUE(server::WaitForServing(*ch, "", absl::Seconds(60)).ok()) << ReadFile(dir + "/enc.log");
  icae::v1::EncodeResponse resp;
  EXPECT_TRUE(RunEncode(*ch, TextRequest(kContext), &resp).ok());
  auto plain = server::MakeChannel(pf->grpc, {});
  EXPECT_EQ(RunEncode(*plain, TextRequest(kContext), &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
}

// Past the grace period, running streams end with FINISH_REASON_CANCELLED and the process exits 0.
TEST(ServicesShutdownTest, PastTheGracePeriodStreamsAreCancelled) {
  ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
  const std::string dir = testing::MakeTempDir("icae-services-grace");
  const std::string store = "file://" + dir + "/slots";
  auto enc = StartService("encoder_service", dir, store);
  ASSERT_TRUE(enc.ok()) << enc.status();
  auto dec = StartService("decoder_service", dir, store, {"--max_new_tokens=3000", "--grace_period=200ms"});
  ASSERT_TRUE(dec.ok()) << dec.status();
  icae::v1::EncodeResponse e;
  ASSERT_TRUE(RunEncode(enc->channel, TextRequest(kContext), &e).ok());
  auto stub = icae::v1::Decoder::NewStub(dec->channel);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, SlotRequest(e.slot_id(), 3000));
  icae::v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  dec->proc->Signal(SIGTERM);
  icae::v1::GenerateFinal final;
  int64_t tokens = msg.token_ids_size();
  while (reader->Read(&msg)) {
    tokens += msg.token_ids_size();
    if (msg.has_final()) final = msg.final();
  }
  grpc::Status st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(final.finish_reason(), icae::v1::FINISH_REASON_CANCELLED);
  EXPECT_LT(tokens, 3000);
  auto ws = dec->proc->Wait(absl::Seconds(20));
  ASSERT_TRUE(ws.ok());
  EXPECT_TRUE(WIFEXITED(*ws) && WEXITSTATUS(*ws) == 0) << ReadFile(dec->log);
}

// API keys and tenants: a separate pair of services with a key file.
TEST(ServicesAuthTest, KeysAndTenantIsolation) {
  ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
  const std::string dir = testing::MakeTempDir("icae-services-auth");
  std::ofstream(dir + "/keys") << "alice-key-123 alice\nbob-key-4567 bob\n";
  const std::string store = "file://" + dir + "/slots";
  auto enc = StartService("encoder_service", dir, store, {"--api_keys_file=" + dir + "/keys"});
  ASSERT_TRUE(enc.ok()) << enc.status();
  auto dec = StartService("decoder_service", dir, store, {"--api_keys_file=" + dir + "/keys"});
  ASSERT_TRUE(dec.ok()) << dec.status();
  icae::v1::EncodeResponse resp;
  EXPECT_EQ(RunEncode(enc->channel, TextRequest(kContext), &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(RunEncode(enc->channel, TextRequest(kContext), &resp, "wrong-key-000").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  icae::v1::EncodeResponse a, b;
  ASSERT_TRUE(RunEncode(enc->channel, TextRequest(kContext), &a, "alice-key-123").ok());
  ASSERT_TRUE(RunEncode(enc->channel, TextRequest(kContext), &b, "bob-key-4567").ok());
  EXPECT_NE(a.slot_id(), b.slot_id());
  EXPECT_FALSE(b.cached()) << "bob must not learn that alice encoded this text";
  EXPECT_EQ(RunGenerate(dec->channel, SlotRequest(a.slot_id(), 4)).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(RunGenerate(dec->channel, SlotRequest(a.slot_id(), 4), "alice-key-123").status.error_code(),
            grpc::StatusCode::OK);
  // Bob presenting alice's slot ID: indistinguishable from an unknown one.
  EXPECT_EQ(RunGenerate(dec->channel, SlotRequest(a.slot_id(), 4), "bob-key-4567").status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(dec->Health(), "SERVING");
}

// Admission queue bound on a decoder with one running sequence and one waiting; then cancel and
// deadline on long streams.
TEST(ServicesQueueTest, QueueFullCancelAndDeadline) {
  ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
  const std::string dir = testing::MakeTempDir("icae-services-queue");
  const std::string store = "file://" + dir + "/slots";
  auto enc = StartService("encoder_service", dir, store);
  ASSERT_TRUE(enc.ok()) << enc.status();
  auto dec = StartService("decoder_service", dir, store,
                          {"--max_batch=1", "--max_queue=1", "--max_new_tokens=3000"});
  ASSERT_TRUE(dec.ok()) << dec.status();
  icae::v1::EncodeResponse e;
  ASSERT_TRUE(RunEncode(enc->channel, TextRequest(kContext), &e).ok());
  auto stub = icae::v1::Decoder::NewStub(dec->channel);
  grpc::ClientContext c1, c2;
  auto long_req = SlotRequest(e.slot_id(), 3000);
  auto r1 = stub->Generate(&c1, long_req);
  icae::v1::GenerateResponse msg;
  ASSERT_TRUE(r1->Read(&msg));  // running
  auto r2 = stub->Generate(&c2, long_req);
  for (int i = 0; i < 200 && dec->Sample("icae_requests_waiting").value_or(-1) < 1; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_THAT(dec->Sample("icae_requests_waiting"), IsOkAndHolds(1));  // at the bound: accepted
  GenResult third = RunGenerate(dec->channel, SlotRequest(e.slot_id(), 4));
  EXPECT_EQ(third.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << third.status.error_message();
  c1.TryCancel();
  c2.TryCancel();
  while (r1->Read(&msg)) {
  }
  while (r2->Read(&msg)) {
  }
  EXPECT_EQ(r1->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(r2->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // Cancelled mid-stream (3000 tokens take seconds): the sequences leave, the gauges return to 0.
  for (int i = 0; i < 200 && dec->Sample("icae_requests_running").value_or(-1) != 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_THAT(dec->Sample("icae_requests_running"), IsOkAndHolds(0));
  EXPECT_THAT(dec->Sample("icae_requests_waiting"), IsOkAndHolds(0));
  // A deadline that expires mid-stream ends the call with DEADLINE_EXCEEDED after some tokens.
  GenResult late = RunGenerate(dec->channel, long_req, "", absl::Milliseconds(300));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_GT(late.ids.size(), 0u);
  EXPECT_LT(late.ids.size(), 3000u);
  for (int i = 0; i < 200 && dec->Sample("icae_requests_running").value_or(-1) != 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_THAT(dec->Sample("icae_requests_running"), IsOkAndHolds(0));
  EXPECT_EQ(dec->Health(), "SERVING");
}

// SIGTERM while a stream runs: NOT_SERVING, the stream finishes within the grace period, exit 0.
TEST(ServicesShutdownTest, SigtermDrainsGracefully) {
  ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
  const std::string dir = testing::MakeTempDir("icae-services-drain");
  const std::string store = "file://" + dir + "/slots";
  auto enc = StartService("encoder_service", dir, store);
  ASSERT_TRUE(enc.ok()) << enc.status();
  auto dec = StartService("decoder_service", dir, store);
  ASSERT_TRUE(dec.ok()) << dec.status();
  icae::v1::EncodeResponse e;
  ASSERT_TRUE(RunEncode(enc->channel, TextRequest(kContext), &e).ok());
  auto stub = icae::v1::Decoder::NewStub(dec->channel);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, SlotRequest(e.slot_id(), kMaxNew));
  icae::v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  dec->proc->Signal(SIGTERM);
  enc->proc->Signal(SIGTERM);
  icae::v1::GenerateFinal final;
  while (reader->Read(&msg)) {
    if (msg.has_final()) final = msg.final();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(final.finish_reason(), icae::v1::FINISH_REASON_LENGTH);
  auto st = dec->proc->Wait(absl::Seconds(20));
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << ReadFile(dec->log);
  auto st2 = enc->proc->Wait(absl::Seconds(20));
  ASSERT_TRUE(st2.ok());
  EXPECT_TRUE(WIFEXITED(*st2) && WEXITSTATUS(*st2) == 0) << ReadFile(enc->log);
}

// Two encoders and two decoders sharing Redis behind round_robin channels; one encoder killed
// while clients keep encoding: they retry on the other and every slot ID stays readable.
TEST(ServicesRedisTest, ReplicasShareRedisAndSurviveAnEncoderCrash) {
  ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
  auto redis = slot_store::LocalRedisServer::Start();
  if (!redis.ok()) GTEST_SKIP() << "no redis-server: " << redis.status();
  const std::string dir = testing::MakeTempDir("icae-services-redis");
  const std::string store = (*redis)->Uri();
  std::vector<Service> encs, decs;
  for (int i = 0; i < 2; ++i) {
    auto e = StartService("encoder_service", dir, store);
    ASSERT_TRUE(e.ok()) << e.status();
    encs.push_back(std::move(*e));
    auto d = StartService("decoder_service", dir, store);
    ASSERT_TRUE(d.ok()) << d.status();
    decs.push_back(std::move(*d));
  }
  // A slot written by encoder A is served by decoder B.
  icae::v1::EncodeResponse a;
  ASSERT_TRUE(RunEncode(encs[0].channel, TextRequest(kContext), &a).ok());
  GenResult via_b = RunGenerate(decs[1].channel, SlotRequest(a.slot_id(), 6));
  ASSERT_TRUE(via_b.status.ok()) << via_b.status.error_message();
  GenResult via_a = RunGenerate(decs[0].channel, SlotRequest(a.slot_id(), 6));
  EXPECT_EQ(via_a.ids, via_b.ids);

  server::ClientOptions rr;
  rr.lb_policy = "round_robin";
  auto enc_ch = server::MakeChannel("ipv4:" + encs[0].address + "," + encs[1].address, rr);
  auto dec_ch = server::MakeChannel("ipv4:" + decs[0].address + "," + decs[1].address, rr);
  ASSERT_TRUE(enc_ch.ok() && dec_ch.ok());
  std::vector<std::string> ids;
  int retries = 0;
  for (int i = 0; i < 12; ++i) {
    if (i == 4) encs[0].proc->Signal(SIGKILL);
    icae::v1::EncodeResponse r;
    grpc::Status st;
    for (int attempt = 0; attempt < 5; ++attempt) {
      st = RunEncode(*enc_ch, TextRequest(absl::StrCat("context number ", i, " about replicas")), &r);
      if (st.ok() || st.error_code() != grpc::StatusCode::UNAVAILABLE) break;
      ++retries;
    }
    ASSERT_TRUE(st.ok()) << i << ": " << st.error_message();
    ids.push_back(r.slot_id());
  }
  for (const auto& id : ids) {
    for (int k = 0; k < 2; ++k) {  // round robin: both decoders
      GenResult g = RunGenerate(*dec_ch, SlotRequest(id, 2));
      EXPECT_TRUE(g.status.ok()) << id << ": " << g.status.error_message();
    }
  }
  EXPECT_EQ(encs[1].Health(), "SERVING");
}

// `icae up`: two address lines on stdout, SERVING services, clean stop on SIGTERM.
TEST(ServicesUpTest, UpPrintsAddressesAndStopsCleanly) {
  ICAE_REQUIRE_TESTDATA(GoldenDir() + "/icae_adapter.safetensors");
  const std::string dir = testing::MakeTempDir("icae-services-up");
  auto up = ChildProcess::Start({testing::IcaeBinary(), "up", "--model", GoldenDir() + "/model", "--adapter",
                                 GoldenDir() + "/icae_adapter.safetensors", "--dtype", "float32", "--threads", "1"},
                                dir + "/up.log");
  ASSERT_TRUE(up.ok());
  std::string encoder, decoder;
  for (int i = 0; i < 600 && (encoder.empty() || decoder.empty()); ++i) {
    for (absl::string_view line : absl::StrSplit(ReadFile(dir + "/up.log"), '\n')) {
      if (absl::StartsWith(line, "encoder=")) encoder = std::string(line.substr(8));
      if (absl::StartsWith(line, "decoder=")) decoder = std::string(line.substr(8));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_FALSE(encoder.empty() || decoder.empty()) << ReadFile(dir + "/up.log");
  auto ech = server::MakeChannel(encoder, {});
  auto dch = server::MakeChannel(decoder, {});
  EXPECT_EQ(*server::CheckHealth(*ech, "", absl::Seconds(2)), "SERVING");
  EXPECT_EQ(*server::CheckHealth(*dch, "", absl::Seconds(2)), "SERVING");
  icae::v1::EncodeResponse e;
  ASSERT_TRUE(RunEncode(*ech, TextRequest(kContext), &e).ok());
  EXPECT_TRUE(RunGenerate(*dch, SlotRequest(e.slot_id(), 4)).status.ok());
  (*up)->Signal(SIGTERM);
  auto st = (*up)->Wait(absl::Seconds(30));
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << ReadFile(dir + "/up.log");
}

}  // namespace
}  // namespace icae
