// common/server: metrics registry and exposition (prometheus-cpp), the /metrics listener, API
// keys and tenant store keys, the stop-sequence filter, status mapping, UTF-8 checks, a model
// bundle from parts in memory.
#include <arpa/inet.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/server/auth.h"
#include "common/icae/compressor.h"
#include "common/server/log_safe.h"
#include "common/server/metrics.h"
#include "common/server/metrics_http.h"
#include "common/server/model_bundle.h"
#include "common/server/slot_identity.h"
#include "common/server/status.h"
#include "common/server/stop_filter.h"
#include "common/slot_store/slot_record.h"
#include "common/util/paths.h"
#include "tests/test_util.h"

namespace icae::server {
namespace {

TEST(MetricsTest, RendersCountersGaugesHistograms) {
  MetricsRegistry r;
  r.AddCounter("icae_x_total", "x")->Increment(2);
  r.AddCounter("icae_y_total", "y", {{"code", "OK"}})->Increment();
  r.AddCounter("icae_y_total", "y", {{"code", "OK"}})->Increment();  // same series
  r.AddGauge("icae_g", "g")->Set(-1.5);
  auto* h = r.AddHistogram("icae_h_seconds", "h", {0.1, 1});
  h->Observe(0.05);
  h->Observe(0.5);
  h->Observe(5);
  r.AddCallbackGauge("icae_cb", "cb", [] { return 7.0; });
  double evictions = 3;
  r.AddCallbackCounter("icae_cb_total", "cb counter", [&] { return evictions; });
  std::string text = r.Render();
  EXPECT_NE(text.find("# HELP icae_x_total x\n# TYPE icae_x_total counter\nicae_x_total 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("icae_y_total{code=\"OK\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("icae_g -1.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("icae_h_seconds_bucket{le=\"0.1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("icae_h_seconds_bucket{le=\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("icae_h_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("icae_h_seconds_count 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE icae_cb gauge\nicae_cb 7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE icae_cb_total counter\nicae_cb_total 3\n"), std::string::npos) << text;
  EXPECT_EQ(*FindSample(text, "icae_g"), -1.5);
  EXPECT_EQ(*FindSample(text, "icae_y_total", "{code=\"OK\"}"), 2);
  EXPECT_DOUBLE_EQ(*FindSample(text, "icae_h_seconds_sum"), 5.55);
  EXPECT_EQ(FindSample(text, "icae_nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FindSample(text, "icae_y_total").status().code(), absl::StatusCode::kNotFound);  // labelled
  EXPECT_EQ(FindSample(text, "icae_y_total", "{code=OK}").status().code(), absl::StatusCode::kInvalidArgument);
  evictions = 4;  // read at scrape time
  EXPECT_EQ(*FindSample(r.Render(), "icae_cb_total"), 4);
}

TEST(MetricsTest, FindSampleIgnoresLabelOrder) {
  MetricsRegistry r;
  r.AddCounter("icae_requests_total", "r", {{"method", "Encode"}, {"code", "OK"}})->Increment(3);
  r.AddCounter("icae_requests_total", "r", {{"method", "Encode"}, {"code", "NOT_FOUND"}})->Increment();
  const std::string text = r.Render();
  EXPECT_EQ(*FindSample(text, "icae_requests_total", "{method=\"Encode\",code=\"OK\"}"), 3) << text;
  EXPECT_EQ(*FindSample(text, "icae_requests_total", "{code=\"NOT_FOUND\",method=\"Encode\"}"), 1) << text;
  EXPECT_FALSE(FindSample(text, "icae_requests_total", "{method=\"Encode\"}").ok());
  EXPECT_FALSE(FindSample(text, "icae_requests", "{method=\"Encode\",code=\"OK\"}").ok());
}

TEST(MetricsTest, CounterIgnoresNegativeAndEscapesLabels) {
  MetricsRegistry r;
  auto* c = r.AddCounter("icae_c_total", "c", {{"v", "a\"b\\c\nd"}});
  c->Increment(-5);
  EXPECT_EQ(c->Value(), 0);
  const std::string text = r.Render();
  EXPECT_NE(text.find("icae_c_total{v=\"a\\\"b\\\\c\\nd\"} 0"), std::string::npos) << text;
  EXPECT_EQ(*FindSample(text, "icae_c_total", "{v=\"a\\\"b\\\\c\\nd\"}"), 0);
}

TEST(MetricsDeathTest, ANameKeepsOneTypeAndKind) {
  MetricsRegistry r;
  r.AddCounter("icae_x_total", "x");
  EXPECT_DEATH(r.AddGauge("icae_x_total", "x"), "two types");
  EXPECT_DEATH(r.AddCallbackCounter("icae_x_total", "x", [] { return 1.0; }), "two types");
  EXPECT_DEATH(r.AddCounter("icae-bad", "x"), "bad metric name");
  EXPECT_DEATH(r.AddCounter("icae_ok_total", "x", {{"bad-label", "v"}}), "bad label name");
}

TEST(MetricsHttpTest, ServesMetrics404Otherwise) {
  MetricsRegistry r;
  r.AddGauge("icae_up", "up")->Set(1);
  r.AddCallbackGauge("icae_cb", "cb", [] { return 7.0; });
  auto s = MetricsHttpServer::Start("127.0.0.1", 0, &r);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_GT((*s)->port(), 0);
  auto body = HttpGet("127.0.0.1", (*s)->port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*FindSample(*body, "icae_up"), 1) << *body;
  EXPECT_EQ(*FindSample(*body, "icae_cb"), 7) << *body;
  EXPECT_FALSE(HttpGet("127.0.0.1", (*s)->port(), "/other").ok());
  // The port is taken: a second listener on it fails with a status, not an exception.
  auto again = MetricsHttpServer::Start("127.0.0.1", (*s)->port(), &r);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(MetricsHttpServer::Start("no-such-host", 0, &r).status().code(), absl::StatusCode::kInvalidArgument);
  (*s)->Stop();
}

// A connected socket that sends nothing (what a slow or hostile client holds open).
int IdleConnection(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

// Idle connections below max_connections do not delay a scrape; with every worker held by
// one, the scrape waits in the listen queue only until the first idle one times out.
TEST(MetricsHttpTest, IdleConnectionsDoNotDelayAScrape) {
  MetricsRegistry r;
  r.AddGauge("icae_up", "up")->Set(1);
  MetricsHttpOptions o;
  o.max_connections = 6;
  o.io_timeout = absl::Milliseconds(1500);
  auto s = MetricsHttpServer::Start("127.0.0.1", 0, &r, o);
  ASSERT_TRUE(s.ok()) << s.status();
  const int port = (*s)->port();
  std::vector<int> idle;
  for (int i = 0; i < 5; ++i) idle.push_back(IdleConnection(port));
  absl::SleepFor(absl::Milliseconds(100));  // all five accepted and waiting
  absl::Time t0 = absl::Now();
  auto body = HttpGet("127.0.0.1", port, "/metrics");  // the 6th connection: at the limit
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*FindSample(*body, "icae_up"), 1);
  EXPECT_LT(absl::Now() - t0, absl::Milliseconds(1000)) << "served while five connections idle";
  for (int i = 0; i < 6; ++i) idle.push_back(IdleConnection(port));  // every worker held
  absl::SleepFor(absl::Milliseconds(100));
  t0 = absl::Now();
  body = HttpGet("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_LT(absl::Now() - t0, absl::Milliseconds(1500 + 1500)) << "an idle connection holds a worker at most io_timeout";
  for (int fd : idle) ::close(fd);
  EXPECT_FALSE(MetricsHttpServer::Start("127.0.0.1", 0, &r, MetricsHttpOptions{0}).ok());
}

// Stop does not wait for an idle connection's timeout.
TEST(MetricsHttpTest, StopEndsIdleConnectionsEarly) {
  MetricsRegistry r;
  MetricsHttpOptions o;
  o.io_timeout = absl::Seconds(30);
  auto s = MetricsHttpServer::Start("127.0.0.1", 0, &r, o);
  ASSERT_TRUE(s.ok()) << s.status();
  int fd = IdleConnection((*s)->port());
  absl::SleepFor(absl::Milliseconds(100));
  const absl::Time t0 = absl::Now();
  (*s)->Stop();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));  // civetweb checks for stop every ~2 s
  ::close(fd);
}

TEST(AuthTest, KeysMapToTenants) {
  auto a = ApiKeyAuthenticator::FromText("# comment\nkey-aaaaaaaa alice\n\nkey-bbbbbbbb bob # x\n", "keys");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*(*a)->AuthenticateHeader("Bearer key-aaaaaaaa", true), "alice");
  EXPECT_EQ(*(*a)->AuthenticateHeader("Bearer key-bbbbbbbb", true), "bob");
  EXPECT_EQ((*a)->AuthenticateHeader("", false).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*a)->AuthenticateHeader("Bearer nope-nope-nope", true).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*a)->AuthenticateHeader("key-aaaaaaaa", true).status().code(), absl::StatusCode::kUnauthenticated);
  ApiKeyAuthenticator none;
  EXPECT_EQ(*none.AuthenticateHeader("", false), "");
}

TEST(AuthTest, RejectsBadKeyFiles) {
  EXPECT_FALSE(ApiKeyAuthenticator::FromText("", "k").ok());
  EXPECT_FALSE(ApiKeyAuthenticator::FromText("short alice", "k").ok());
  EXPECT_FALSE(ApiKeyAuthenticator::FromText("key-aaaaaaaa", "k").ok());
  EXPECT_FALSE(ApiKeyAuthenticator::FromText("key-aaaaaaaa a/b", "k").ok());
  EXPECT_FALSE(ApiKeyAuthenticator::FromText("key-aaaaaaaa a\nkey-aaaaaaaa b", "k").ok());
}

TEST(SlotIdentityTest, TenantStoreKeysDifferAndStayValid) {
  const std::string id(64, 'a');
  EXPECT_EQ(TenantStoreKey("", id), id);
  EXPECT_NE(TenantStoreKey("alice", id), TenantStoreKey("bob", id));
  EXPECT_LE(TenantStoreKey("alice", id).size(), 128u);
}

// A tiny random model of 260 ids, an adapter made for `adapter_vocab` ids, and a llama2.c
// tokenizer of <unk>, <s>, </s>, the 256 byte pieces and " a".
absl::StatusOr<std::unique_ptr<ModelBundle>> TinyBundle(int64_t adapter_vocab) {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.intermediate_size = 32;
  c.vocab_size = 260;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = true;
  auto model = std::make_unique<Transformer>(c, RandomWeights(c, torch::kFloat32, 1));
  ModelConfig for_adapter = c;
  for_adapter.vocab_size = adapter_vocab;
  IcaeAdapter adapter = RandomIcaeAdapter(for_adapter, 4, 2, torch::kFloat32, 2);
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) pieces.push_back(absl::StrFormat("<0x%02X>", b));
  pieces.push_back(" a");
  std::string bin;
  auto put = [&](int32_t v) { bin.append(reinterpret_cast<const char*>(&v), 4); };
  put(6);  // max token length
  for (const std::string& piece : pieces) {
    put(0);  // score 0.0f has the same bytes
    put(static_cast<int32_t>(piece.size()));
    bin += piece;
  }
  auto tok = Tokenizer::FromBytes(bin, "tokenizer.bin");
  if (!tok.ok()) return tok.status();
  return ModelBundle::FromParts(std::move(model), std::move(adapter), std::move(*tok), "m", "a");
}

TEST(ModelBundleTest, FromPartsChecksTheAdapterAgainstTheModel) {
  auto bad = TinyBundle(300);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_NE(bad.status().message().find("adapter (base vocabulary 300)"), std::string::npos)
      << bad.status();
  auto b = TinyBundle(260);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->base_vocab_size(), 260);
  EXPECT_EQ((*b)->slot_dtype(), slot_store::SlotDType::kFloat32);
  EXPECT_EQ((*b)->model_fingerprint(), "m");
  EXPECT_EQ((*b)->adapter_fingerprint(), "a");
  EXPECT_TRUE((*b)->CheckIds({0, 259}, "prompt").ok());
  EXPECT_EQ((*b)->CheckIds({260}, "prompt").code(), absl::StatusCode::kInvalidArgument);
  // Text goes through the given tokenizer: BOS, then ids in the model's vocabulary that
  // decode back to the text.
  auto ids = (*b)->Tokenize("a a", /*add_bos=*/true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_GE(ids->size(), 2u);
  EXPECT_EQ(ids->front(), 1);
  EXPECT_TRUE((*b)->CheckIds(*ids, "text").ok());
  const std::vector<int32_t> ids32(ids->begin(), ids->end());
  auto text = (*b)->tokenizer().Decode(ids32);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "a a");
}

TEST(StopFilterTest, HoldsBackPossibleStopsAndCutsAtFirstMatch) {
  StopTextFilter f({"END", "xy"});
  std::string m, out;
  out += f.Push("hello E", &m);
  EXPECT_EQ(out, "hello");  // " E" may begin "END"... and 2 bytes are held
  out += f.Push("N", &m);
  out += f.Push("D tail", &m);
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(m, "END");
  EXPECT_EQ(out, "hello ");
  EXPECT_EQ(f.Push("more", &m), "");
}

TEST(StopFilterTest, NoStopsPassesThroughAndFlushes) {
  StopTextFilter f({});
  std::string m;
  EXPECT_EQ(f.Push("abc", &m), "abc");
  EXPECT_EQ(f.Flush(), "");
  StopTextFilter g({"zz"});
  EXPECT_EQ(g.Push("ab", &m), "a");
  EXPECT_EQ(g.Flush(), "b");
}

TEST(StopFilterTest, NeverSplitsUtf8WhenHolding) {
  StopTextFilter f({"abc"});
  std::string m;
  std::string out = f.Push("x\xC3\xA9", &m);  // "xé": hold 2 bytes, but é is 2 bytes
  EXPECT_EQ(out, "x");
  EXPECT_EQ(f.Flush(), "\xC3\xA9");
}

TEST(StatusTest, MapsCodesAndCapsMessages) {
  auto g = ToGrpcStatus(absl::NotFoundError("gone"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.error_message(), "gone");
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError(std::string(5000, 'x'))).error_message().size(),
            kMaxStatusMessageBytes);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "q")).code(),
            absl::StatusCode::kResourceExhausted);
}

// A client value cannot start a new log line, hide bytes or flood the log.
TEST(LogSafeTest, EscapesControlBytesAndCapsLength) {
  EXPECT_EQ(LogSafe("req-42_ok.x"), "req-42_ok.x");
  EXPECT_EQ(LogSafe("a\nE1129 12:00:00.000000 1 x.cc:1] forged"),
            "a\\nE1129 12:00:00.000000 1 x.cc:1] forged");
  EXPECT_EQ(LogSafe("tab\tcr\r\\ \x1b[31m\x7f\xff"), "tab\\tcr\\r\\\\ \\x1b[31m\\x7f\\xff");
  EXPECT_EQ(LogSafe(std::string("nul\0x", 5)), "nul\\x00x");
  EXPECT_EQ(LogSafe("h\xc3\xa9"), "h\\xc3\\xa9");  // non-ASCII is escaped too: one rule
  // At the bound: kept whole. Past it: cut, with the real length.
  const std::string at(kMaxLoggedValueBytes, 'a');
  EXPECT_EQ(LogSafe(at), at);
  EXPECT_EQ(LogSafe(at + "b"), at + "...(" + std::to_string(kMaxLoggedValueBytes + 1) + " bytes)");
  EXPECT_EQ(LogSafe(std::string(1 << 20, '\n'), 4), "\\n\\n\\n\\n...(1048576 bytes)");
  EXPECT_EQ(LogSafe(at + "\n").find('\n'), std::string::npos);
}

// Slots cross the store as bytes that do not depend on where the encoder ran: the record is
// built from a CPU copy in the model's dtype, made contiguous, so a GPU encoder and a CPU
// decoder (or the reverse) read each other's records. On a CPU machine: a bundle loaded with
// an explicit --device cpu writes byte-identical records to the default one, a view with other
// strides writes the same bytes, and a record read back and written again is unchanged.
TEST(SlotRecordDeviceTest, RecordBytesDoNotDependOnTheDevicePath) {
  ModelBundleOptions o;
  o.model_dir = DefaultModelDir();
  o.adapter_path = DefaultAdapterPath();
  if (!::icae::testing::PathExists(o.model_dir + "/model.safetensors")) GTEST_SKIP() << "no default model";
  auto by_default = ModelBundle::Load(o);
  ASSERT_TRUE(by_default.ok()) << by_default.status();
  o.device = "cpu";
  auto by_name = ModelBundle::Load(o);
  ASSERT_TRUE(by_name.ok()) << by_name.status();
  ASSERT_TRUE((*by_name)->model().device().is_cpu());
  EXPECT_EQ((*by_default)->model_fingerprint(), (*by_name)->model_fingerprint());

  c10::InferenceMode guard;
  const std::vector<int64_t> ids = {1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50};
  auto record = [&](const ModelBundle& b, const torch::Tensor& slots) {
    CompressedContext c;
    c.slots = slots;
    c.num_segments = 1;
    c.num_tokens = static_cast<int64_t>(ids.size());
    slot_store::SlotRecord r = MakeSlotRecord(b, c);
    r.header.created_unix_micros = 1;  // the one field that is meant to differ
    return *slot_store::EncodeSlotRecord(r);
  };
  auto a = Compressor((*by_default)->model(), (*by_default)->adapter()).Compress({ids});
  auto b = Compressor((*by_name)->model(), (*by_name)->adapter()).Compress({ids});
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string bytes = record(**by_default, (*a)[0].slots);
  EXPECT_EQ(bytes, record(**by_name, (*b)[0].slots));
  // The payload is exactly the slots' values, row-major, in the model dtype.
  const torch::Tensor s = (*a)[0].slots;
  EXPECT_EQ(s.scalar_type(), torch::kBFloat16);
  EXPECT_NE(bytes.find(std::string(static_cast<const char*>(s.contiguous().data_ptr()), s.nbytes())),
            std::string::npos);
  // Same values held with other strides (as a copy back from a device may be): same bytes.
  const torch::Tensor strided = s.t().contiguous().t();
  ASSERT_FALSE(strided.is_contiguous());
  EXPECT_EQ(bytes, record(**by_default, strided));
  // Slots held in another dtype are written in the model's dtype.
  EXPECT_EQ(bytes, record(**by_default, s.to(torch::kFloat32)));
  // Read back (onto the reader's device) and written again: unchanged.
  auto parsed = slot_store::ParseSlotRecord(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  slot_store::SlotRecordView view{parsed->header, parsed->payload};
  auto back = SlotsFromRecord(**by_name, view);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(torch::equal(*back, s));
  EXPECT_EQ(bytes, record(**by_name, *back));
}

TEST(SlotRecordDeviceTest, BundleRefusesADeviceItCannotUse) {
  ModelBundleOptions o;
  o.model_dir = DefaultModelDir();
  o.adapter_path = DefaultAdapterPath();
  o.device = "tpu";
  auto bad = ModelBundle::Load(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  if (at::hasCUDA()) return;
  o.device = "cuda:0";
  auto cuda = ModelBundle::Load(o);
  ASSERT_FALSE(cuda.ok());
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(cuda.status().message().find("no CUDA support"), std::string::npos) << cuda.status();
}

}  // namespace
}  // namespace icae::server
