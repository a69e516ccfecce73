// A careless or hostile client against the real encoder_service and decoder_service on
// loopback (API keys on, so slot IDs are tenant-scoped): forged non-finite records, a FIFO in
// the file store, log injection, a vanished store folder, malformed slot IDs, invalid UTF-8
// and undecodable bodies, idle metrics connections, every request bound at and past it. Each
// answer must be the status code the proto promises, and both services stay healthy.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <atomic>
#include <cmath>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/server/slot_identity.h"
#include "common/slot_store/slot_record.h"
#include "tests/integration/services_harness.h"
#include "tests/test_util.h"
#include "tests/testing/status.h"

namespace icae {
namespace {

constexpr char kKey[] = "hostile-key-1";
constexpr char kTenant[] = "mallory";
// Bounds set by flag, away from their defaults, so the test shows they are configurable.
constexpr int64_t kMaxStopSequences = 5;
constexpr int64_t kMaxStopSequenceBytes = 100;
constexpr int64_t kMaxStopTokenIds = 20;
constexpr int64_t kMaxRequestIdBytes = 64;

std::string Context(int n) {
  return absl::StrCat("Context number ", n, " for the hostile client: slot caches, replicas and ",
                      "memory tokens in a frozen decoder.");
}

class HostileClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!testing::PathExists(GoldenDir() + "/icae_adapter.safetensors")) return;
    dir_ = new std::string(testing::MakeTempDir("icae-hostile"));
    std::ofstream(*dir_ + "/keys") << kKey << " " << kTenant << "\n";
    const std::string store = "file://" + *dir_ + "/slots";
    const std::string keys = "--api_keys_file=" + *dir_ + "/keys";
    const std::string request_id = absl::StrCat("--max_request_id_bytes=", kMaxRequestIdBytes);
    auto e = StartService("encoder_service", *dir_, store, {keys, request_id});
    // Not ASSERT: a fatal failure here makes googletest skip every test of the suite, and ctest
    // reports skipped tests as skipped, not failed. SetUp fails each test with the error.
    if (!e.ok()) return void(setup_error_ = new std::string(e.status().ToString()));
    encoder_ = new Service(std::move(*e));
    auto d = StartService("decoder_service", *dir_, store,
                          {keys, request_id, absl::StrCat("--max_stop_sequences=", kMaxStopSequences),
                           absl::StrCat("--max_stop_sequence_bytes=", kMaxStopSequenceBytes),
                           absl::StrCat("--max_stop_token_ids=", kMaxStopTokenIds)});
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
  void TearDown() override {
    if (encoder_ == nullptr) return;
    EXPECT_EQ(encoder_->Health(), "SERVING");
    EXPECT_EQ(decoder_->Health(), "SERVING");
  }

  static grpc::Status Encode(const icae::v1::EncodeRequest& req, icae::v1::EncodeResponse* resp) {
    return RunEncode(encoder_->channel, req, resp, kKey);
  }
  static std::string EncodeText(const std::string& text, bool* cached = nullptr) {
    icae::v1::EncodeResponse resp;
    grpc::Status st = Encode(TextRequest(text), &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    if (cached != nullptr) *cached = resp.cached();
    return resp.slot_id();
  }
  static GenResult Generate(const icae::v1::GenerateRequest& req,
                            absl::Duration timeout = absl::Seconds(60)) {
    return RunGenerate(decoder_->channel, req, kKey, timeout);
  }
  // Where the file store keeps a slot of our tenant.
  static std::string SlotPath(const std::string& slot_id) {
    return *dir_ + "/slots/" + server::TenantStoreKey(kTenant, slot_id) + ".slot";
  }
  // Rewrites a stored record with NaN in its payload and a correct checksum: what a forger
  // (or a broken encoder elsewhere) leaves behind.
  static void PlantNonFinite(const std::string& slot_id) {
    const std::string path = SlotPath(slot_id);
    std::string file = ReadFile(path);
    ASSERT_GT(file.size(), 16u);
    auto rec = slot_store::ParseSlotRecord(std::string_view(file).substr(16));
    ASSERT_TRUE(rec.ok()) << rec.status();
    ASSERT_EQ(rec->header.dtype, slot_store::SlotDType::kFloat32);
    const float nan = std::nanf("");
    for (size_t i = 0; i + 4 <= rec->payload.size(); i += 4) std::memcpy(&rec->payload[i], &nan, 4);
    auto bytes = slot_store::EncodeSlotRecord(*rec);
    ASSERT_TRUE(bytes.ok());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << file.substr(0, 16) << *bytes;
  }

  static std::string* dir_;
  static Service* encoder_;
  static Service* decoder_;
  static std::string* setup_error_;  // why SetUpTestSuite could not start the services
};
std::string* HostileClientTest::dir_ = nullptr;
Service* HostileClientTest::encoder_ = nullptr;
Service* HostileClientTest::decoder_ = nullptr;
std::string* HostileClientTest::setup_error_ = nullptr;

// Finding 1: a NaN record with a valid checksum is DATA_LOSS (never streamed), dropped from
// every tier (the decoder's local LRU included: the next call is NOT_FOUND), and re-encoding
// computes it again (cached=false) instead of trusting the bad record.
TEST_F(HostileClientTest, NonFiniteRecordIsDataLossNeverCached) {
  const std::string slot = EncodeText(Context(1));
  ASSERT_TRUE(Generate(SlotRequest(slot, 4)).status.ok());  // now in the decoder's local LRU too
  PlantNonFinite(slot);
  bool cached = true;
  EXPECT_EQ(EncodeText(Context(1), &cached), slot);
  EXPECT_FALSE(cached) << "a non-finite record was answered cached=true";
  EXPECT_TRUE(Generate(SlotRequest(slot, 4)).status.ok());

  // A fresh slot, forged before the decoder ever saw it.
  const std::string fresh = EncodeText(Context(2));
  PlantNonFinite(fresh);
  GenResult r = Generate(SlotRequest(fresh, 4));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DATA_LOSS) << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("non-finite"), std::string::npos) << r.status.error_message();
  EXPECT_EQ(r.messages, 0);
  EXPECT_EQ(Generate(SlotRequest(fresh, 4)).status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(EncodeText(Context(2), &cached), fresh);
  EXPECT_FALSE(cached);
  EXPECT_TRUE(Generate(SlotRequest(fresh, 4)).status.ok());
}

// Finding 2: a FIFO in place of a record neither blocks Generate nor the encoder's batch
// thread; it is answered DATA_LOSS / recomputed, and replaced by a real record.
TEST_F(HostileClientTest, FifoInTheStoreNeverBlocks) {
  const std::string slot = EncodeText(Context(3));
  const std::string path = SlotPath(slot);
  ASSERT_EQ(::unlink(path.c_str()), 0);
  ASSERT_EQ(::mkfifo(path.c_str(), 0644), 0);
  absl::Time t0 = absl::Now();
  GenResult r = Generate(SlotRequest(slot, 4), absl::Seconds(10));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DATA_LOSS) << r.status.error_message();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));

  ASSERT_EQ(::mkfifo(path.c_str(), 0644), 0);
  t0 = absl::Now();
  bool cached = true;
  EXPECT_EQ(EncodeText(Context(3), &cached), slot);
  EXPECT_FALSE(cached);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  struct stat st;
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_TRUE(Generate(SlotRequest(slot, 4)).status.ok());
}

// Finding 3: a request_id forging a log line is accepted, but reaches the logs escaped.
TEST_F(HostileClientTest, RequestIdCannotForgeLogLines) {
  const std::string forged = "x\nE1129 00:00:00.000000 1 forged.cc:1] FORGED-LINE";
  icae::v1::EncodeRequest er = TextRequest(Context(4));
  er.set_request_id(forged);
  icae::v1::EncodeResponse resp;
  ASSERT_TRUE(Encode(er, &resp).ok());
  icae::v1::GenerateRequest gr = SlotRequest(resp.slot_id(), 2);
  gr.set_request_id(forged);
  GenResult g = Generate(gr);
  ASSERT_TRUE(g.status.ok());
  EXPECT_EQ(g.final.request_id(), forged);  // echoed to the caller as sent
  gr.add_slot_ids("no\nslot");              // rejected: its status is logged too
  EXPECT_EQ(Generate(gr).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  for (const Service* s : {encoder_, decoder_}) {
    const std::string log = ReadFile(s->log);
    EXPECT_EQ(log.find("\nE1129 00:00:00.000000 1 forged.cc:1]"), std::string::npos) << s->log;
    EXPECT_NE(log.find("x\\nE1129"), std::string::npos) << s->log;
  }
}

// Finding 5: slot IDs are checked against the API format, naming the field and the client's
// own length (not the tenant-prefixed store key's).
TEST_F(HostileClientTest, MalformedSlotIdsAreInvalidArgument) {
  const std::string good = EncodeText(Context(5));
  struct Case {
    std::string id, says;
  };
  const std::vector<Case> cases = {
      {"abc", "got 3 bytes"},
      {std::string(64, 'z'), "byte 0"},
      {std::string(64, 'A'), "byte 0"},
      {std::string(128, 'a'), "got 128 bytes"},
      {"", "got 0 bytes"},
      {"../../etc/passwd", "got 16 bytes"},
      {std::string(63, 'a') + "\xff", "byte 63"},
  };
  for (const Case& c : cases) {
    icae::v1::GenerateRequest r = SlotRequest(good, 2);
    r.add_slot_ids(c.id);
    GenResult g = Generate(r);
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.says;
    EXPECT_NE(g.status.error_message().find("slot_ids[1]"), std::string::npos) << g.status.error_message();
    EXPECT_NE(g.status.error_message().find(c.says), std::string::npos) << g.status.error_message();
  }
  // Well-formed but unknown: NOT_FOUND, as before.
  EXPECT_EQ(Generate(SlotRequest(std::string(64, '0'), 2)).status.error_code(), grpc::StatusCode::NOT_FOUND);
}

// Finding 6: malformed UTF-8 in the client text fields is INVALID_ARGUMENT naming the field
// and offset; an undecodable body is answered by gRPC itself (UNIMPLEMENTED, no message), as
// the proto documents.
TEST_F(HostileClientTest, InvalidUtf8AndUndecodableBodies) {
  const std::string good = EncodeText(Context(6));
  icae::v1::EncodeRequest er = TextRequest(Context(6));
  er.set_request_id("ok\xc3(");
  icae::v1::EncodeResponse resp;
  grpc::Status st = Encode(er, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("request_id is not valid UTF-8 (byte offset 2)"), std::string::npos)
      << st.error_message();
  {
    icae::v1::GenerateRequest r = SlotRequest(good, 2);
    r.set_request_id("\xff");
    GenResult g = Generate(r);
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(g.status.error_message().find("request_id is not valid UTF-8 (byte offset 0)"), std::string::npos)
        << g.status.error_message();
  }
  {
    icae::v1::GenerateRequest r = SlotRequest(good, 2);
    r.mutable_stopping()->add_stop_sequences("fine");
    r.mutable_stopping()->add_stop_sequences("ab\xed\xa0\x80");  // a UTF-16 surrogate
    GenResult g = Generate(r);
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(g.status.error_message().find("stopping.stop_sequences[1] is not valid UTF-8 (byte offset 2)"),
              std::string::npos)
        << g.status.error_message();
  }
  {
    icae::v1::GenerateRequest r = SlotRequest(good, 2, "prompt \xc0\xaf");  // overlong '/'
    GenResult g = Generate(r);
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(g.status.error_message().find("byte offset 7"), std::string::npos) << g.status.error_message();
  }
  // Bytes that are no message at all (a field with wire type 7 does not exist).
  for (const char* method : {"/icae.v1.Encoder/Encode", "/icae.v1.Decoder/Generate"}) {
    for (const std::string& body : {std::string("\xff\xff\xff\xff\x0f", 5), std::string("\x0f", 1)}) {
      grpc::GenericStub stub(std::string(method).find("Encoder") != std::string::npos ? encoder_->channel
                                                                                        : decoder_->channel);
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", absl::StrCat("Bearer ", kKey));
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      grpc::Slice slice(body);
      grpc::ByteBuffer request(&slice, 1), response;
      std::promise<grpc::Status> done;
      stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                     [&](grpc::Status s) { done.set_value(std::move(s)); });
      grpc::Status s = done.get_future().get();
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << method << ": " << s.error_message();
      EXPECT_EQ(s.error_message(), "") << method;
    }
  }
}

// Finding 8 and the bytes-first rule: every bound a client can hit, at it and past it, with
// the configurable ones reported by ModelInfo.
TEST_F(HostileClientTest, EveryBoundAtAndPastIt) {
  const std::string good = EncodeText(Context(7));
  auto stub = icae::v1::Decoder::NewStub(decoder_->channel);
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", absl::StrCat("Bearer ", kKey));
  icae::v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.max_prompt_tokens(), kMaxPrompt);
  EXPECT_EQ(info.max_slot_ids(), kMaxSlotIds);
  EXPECT_EQ(info.max_stop_sequences(), kMaxStopSequences);
  EXPECT_EQ(info.max_stop_sequence_bytes(), kMaxStopSequenceBytes);
  EXPECT_EQ(info.max_stop_token_ids(), kMaxStopTokenIds);
  EXPECT_EQ(info.max_request_id_bytes(), kMaxRequestIdBytes);
  {
    auto enc = icae::v1::Encoder::NewStub(encoder_->channel);
    grpc::ClientContext ectx;
    ectx.AddMetadata("authorization", absl::StrCat("Bearer ", kKey));
    icae::v1::ModelInfo einfo;
    ASSERT_TRUE(enc->GetModelInfo(&ectx, {}, &einfo).ok());
    EXPECT_EQ(einfo.max_request_id_bytes(), kMaxRequestIdBytes);
  }

  struct Case {
    std::string name;
    icae::v1::GenerateRequest req;
    grpc::StatusCode code;
    std::string says = "";
  };
  std::vector<Case> cases;
  auto base = [&] { return SlotRequest(good, 2); };
  for (double p : {1.0, 10.0, 10.5, 0.99, static_cast<double>(NAN)}) {
    auto r = base();
    r.mutable_sampling()->set_repetition_penalty(p);
    const bool ok = p >= 1 && p <= 10;
    cases.push_back({absl::StrCat("repetition_penalty ", p), r,
                     ok ? grpc::StatusCode::OK : grpc::StatusCode::INVALID_ARGUMENT, ok ? "" : "[1, 10]"});
  }
  for (double t : {100.0, 100.5, static_cast<double>(NAN)}) {
    auto r = base();
    r.mutable_sampling()->set_temperature(t);
    cases.push_back({absl::StrCat("temperature ", t), r,
                     t == 100.0 ? grpc::StatusCode::OK : grpc::StatusCode::INVALID_ARGUMENT});
  }
  for (int64_t n : {kMaxStopSequences, kMaxStopSequences + 1}) {
    auto r = base();
    for (int64_t i = 0; i < n; ++i) r.mutable_stopping()->add_stop_sequences(absl::StrCat("#stop", i, "#"));
    cases.push_back({absl::StrCat(n, " stop sequences"), r,
                     n <= kMaxStopSequences ? grpc::StatusCode::OK : grpc::StatusCode::INVALID_ARGUMENT});
  }
  for (int64_t n : {kMaxStopSequenceBytes, kMaxStopSequenceBytes + 1}) {
    auto r = base();
    r.mutable_stopping()->add_stop_sequences(std::string(n, '#'));
    cases.push_back({absl::StrCat("stop sequence of ", n, " bytes"), r,
                     n <= kMaxStopSequenceBytes ? grpc::StatusCode::OK : grpc::StatusCode::INVALID_ARGUMENT});
  }
  for (int64_t n : {kMaxStopTokenIds, kMaxStopTokenIds + 1}) {
    auto r = base();
    for (int64_t i = 0; i < n; ++i) r.mutable_stopping()->add_stop_token_ids(31000 + i);
    cases.push_back({absl::StrCat(n, " stop token ids"), r,
                     n <= kMaxStopTokenIds ? grpc::StatusCode::OK : grpc::StatusCode::INVALID_ARGUMENT});
  }
  for (int64_t n : {kMaxRequestIdBytes, kMaxRequestIdBytes + 1}) {
    auto r = base();
    r.set_request_id(std::string(n, 'r'));
    cases.push_back({absl::StrCat("request_id of ", n, " bytes"), r,
                     n <= kMaxRequestIdBytes ? grpc::StatusCode::OK : grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    // Bytes first: past 16 bytes per allowed token the prompt is refused on its size alone;
    // at that size it is tokenized (and is over the token bound, said in tokens).
    auto r = base();
    r.set_prompt_text(std::string(16 * kMaxPrompt, 'q'));
    cases.push_back({"prompt at the byte bound", r, grpc::StatusCode::INVALID_ARGUMENT, " tokens is over"});
    r.set_prompt_text(std::string(16 * kMaxPrompt + 1, 'q'));
    cases.push_back({"prompt past the byte bound", r, grpc::StatusCode::INVALID_ARGUMENT, "bytes is over"});
    icae::v1::GenerateRequest c;
    c.set_context_text(std::string(16 * kMaxContext + 1, 'c'));
    cases.push_back({"raw context past the byte bound", c, grpc::StatusCode::INVALID_ARGUMENT, "bytes is over"});
  }
  for (const Case& c : cases) {
    GenResult g = Generate(c.req);
    EXPECT_EQ(g.status.error_code(), c.code) << c.name << ": " << g.status.error_message();
    EXPECT_NE(g.status.error_message().find(c.says), std::string::npos) << c.name << ": " << g.status.error_message();
  }
  icae::v1::EncodeResponse resp;
  for (int64_t n : {kMaxRequestIdBytes, kMaxRequestIdBytes + 1}) {
    icae::v1::EncodeRequest r = TextRequest(Context(7));
    r.set_request_id(std::string(n, 'r'));
    EXPECT_EQ(Encode(r, &resp).error_code(),
              n <= kMaxRequestIdBytes ? grpc::StatusCode::OK : grpc::StatusCode::INVALID_ARGUMENT);
  }
  grpc::Status st = Encode(TextRequest(std::string(16 * kMaxContext + 1, 'c')), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("bytes is over"), std::string::npos) << st.error_message();
}

// Finding 7: idle connections to the metrics port do not delay a scrape.
TEST_F(HostileClientTest, IdleMetricsConnectionsDoNotBlindTheScrape) {
  const auto colon = decoder_->metrics.rfind(':');
  const int port = std::stoi(decoder_->metrics.substr(colon + 1));
  std::vector<int> idle;
  for (int i = 0; i < 5; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    idle.push_back(fd);
  }
  absl::SleepFor(absl::Milliseconds(100));
  const absl::Time t0 = absl::Now();
  EXPECT_THAT(decoder_->Sample("icae_requests_running"), testing::IsOkAndHolds(::testing::Ge(0)));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5)) << "one connection at a time would take 5 x 2 s";
  for (int fd : idle) ::close(fd);
}

// Finding 4, last because it breaks the store: the folder gone is UNAVAILABLE on both
// services (never NOT_FOUND, which sends clients to re-encode), without the server's path;
// once it is back, everything works again.
TEST_F(HostileClientTest, StoreFolderGoneIsUnavailable) {
  const std::string slot = EncodeText(Context(8));
  std::string out;
  ASSERT_EQ(testing::RunCommand("rm -rf '" + *dir_ + "/slots'", &out), 0);
  icae::v1::EncodeResponse resp;
  grpc::Status st = Encode(TextRequest(Context(9)), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_EQ(st.error_message().find(*dir_), std::string::npos) << st.error_message();
  // The decoder's local LRU may still hold `slot`; a slot it never saw needs the store.
  GenResult g = Generate(SlotRequest(std::string(64, '1'), 2));
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::UNAVAILABLE) << g.status.error_message();
  EXPECT_EQ(g.status.error_message().find(*dir_), std::string::npos) << g.status.error_message();
  EXPECT_EQ(g.status.error_message().find("encode the context again"), std::string::npos);
  ASSERT_EQ(::mkdir((*dir_ + "/slots").c_str(), 0755), 0);
  const std::string again = EncodeText(Context(9));
  ASSERT_EQ(again.size(), 64u);
  EXPECT_TRUE(Generate(SlotRequest(again, 2)).status.ok());
  EXPECT_FALSE(slot.empty());
}

}  // namespace
}  // namespace icae
