// Transformer behaviour that the references do not pin down: batching, the KV cache,
// embeddings input, config validation and bad ids.
#include <c10/core/InferenceMode.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common/model/config.h"
#include "common/model/cpu_fused.h"
#include "common/model/cpu_gemv.h"
#include "common/model/generate.h"
#include "common/model/prefix_cache.h"
#include "common/model/sampler.h"
#include "common/model/stop.h"
#include "common/model/transformer.h"
#include "tests/unit/train_testing.h"

namespace icae {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.model_type = "mistral";
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 48;
  c.vocab_size = 50;
  c.max_position_embeddings = 256;
  c.rope_theta = 10000;
  c.rms_norm_eps = 1e-5;
  return c;
}

class ModelTest : public ::testing::Test {
 protected:
  ModelTest() : model_(SmallConfig(), RandomWeights(SmallConfig(), torch::kFloat32, 7)) {}
  torch::Tensor RandomIds(int64_t n, int64_t seed) {
    torch::manual_seed(seed);
    return torch::randint(0, 50, {n}, torch::kInt64);
  }
  c10::InferenceMode guard_;
  Transformer model_;
};

TEST_F(ModelTest, BatchOfDifferentLengthsEqualsEachAlone) {
  std::vector<torch::Tensor> ids = {RandomIds(5, 1), RandomIds(17, 2), RandomIds(1, 3)};
  std::vector<torch::Tensor> alone;
  for (const auto& t : ids) {
    std::vector<SequenceInput> b(1);
    b[0].ids = t;
    b[0].num_outputs = -1;
    alone.push_back(*model_.Forward(b));
  }
  std::vector<SequenceInput> batch(3);
  for (int i = 0; i < 3; ++i) {
    batch[i].ids = ids[i];
    batch[i].num_outputs = -1;
  }
  auto packed = model_.Forward(batch);
  ASSERT_TRUE(packed.ok()) << packed.status();
  auto expected = torch::cat(alone, 0);
  ASSERT_EQ(packed->sizes(), expected.sizes());
  EXPECT_LT((*packed - expected).abs().max().item<float>(), 1e-5f);
}

TEST_F(ModelTest, IncrementalDecodingWithCacheEqualsFullForward) {
  auto ids = RandomIds(12, 4);
  std::vector<SequenceInput> full(1);
  full[0].ids = ids;
  full[0].num_outputs = -1;
  auto expected = *model_.Forward(full);
  // Prefill 7 tokens, then 5 single steps, in a batch with another sequence at another length.
  KVCache cache = model_.NewCache(), other = model_.NewCache();
  std::vector<SequenceInput> b(2);
  b[0].ids = ids.narrow(0, 0, 7);
  b[0].cache = &cache;
  b[0].num_outputs = -1;
  b[1].ids = RandomIds(3, 5);
  b[1].cache = &other;
  auto first = model_.Forward(b);
  ASSERT_TRUE(first.ok());
  std::vector<torch::Tensor> got = {first->narrow(0, 0, 7)};
  for (int64_t i = 7; i < 12; ++i) {
    b[0] = SequenceInput();
    b[0].ids = ids.narrow(0, i, 1);
    b[0].cache = &cache;
    b[1] = SequenceInput();
    b[1].ids = RandomIds(1, 100 + i);
    b[1].cache = &other;
    auto step = model_.Forward(b);
    ASSERT_TRUE(step.ok());
    got.push_back(step->narrow(0, 0, 1));
  }
  EXPECT_EQ(cache.length(), 12);
  EXPECT_EQ(other.length(), 8);
  EXPECT_LT((torch::cat(got, 0) - expected).abs().max().item<float>(), 1e-5f);
}

TEST_F(ModelTest, EmbeddingsInputEqualsIdsInput) {
  auto ids = RandomIds(9, 6);
  std::vector<SequenceInput> a(1), b(1);
  a[0].ids = ids;
  b[0].embeds = *model_.Embed(ids);
  EXPECT_TRUE(torch::allclose(*model_.Forward(a), *model_.Forward(b)));
}

TEST_F(ModelTest, ExplicitPositionsChangeTheResultAndDefaultIsCacheLength) {
  auto ids = RandomIds(4, 8);
  std::vector<SequenceInput> a(1), b(1), c(1);
  a[0].ids = ids;
  b[0].ids = ids;
  b[0].positions = torch::arange(0, 4, torch::kInt64);
  c[0].ids = ids;
  // RoPE is relative: a constant shift changes nothing, different gaps do.
  c[0].positions = torch::tensor({0, 5, 6, 20}, torch::kInt64);
  auto la = *model_.Forward(a), lb = *model_.Forward(b), lc = *model_.Forward(c);
  EXPECT_TRUE(torch::equal(la, lb));
  EXPECT_FALSE(torch::allclose(la, lc));
}

TEST_F(ModelTest, IdsOutsideTheVocabularyAreRejected) {
  std::vector<SequenceInput> b(1);
  b[0].ids = torch::tensor({1, 50}, torch::kInt64);
  auto r = model_.Forward(b);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("50"), std::string::npos);
  b[0].ids = torch::tensor({-1}, torch::kInt64);
  EXPECT_FALSE(model_.Forward(b).ok());
}

TEST_F(ModelTest, BFloat16IsCloseToFloat32) {
  Transformer bf(SmallConfig(), RandomWeights(SmallConfig(), torch::kBFloat16, 7));
  auto ids = RandomIds(10, 9);
  std::vector<SequenceInput> b(1);
  b[0].ids = ids;
  auto l32 = *model_.Forward(b);
  auto l16 = *bf.Forward(b);
  EXPECT_LT((l32 - l16).abs().max().item<float>(), 0.05f);
}

TEST_F(ModelTest, GenerateGreedyIsDeterministicAndSamplingFollowsTheSeed) {
  SequenceInput in;
  in.ids = RandomIds(4, 10);
  GenerateOptions o;
  o.max_new_tokens = 10;
  o.ignore_eos = true;
  auto g1 = Generate(model_, in, o), g2 = Generate(model_, in, o);
  ASSERT_TRUE(g1.ok());
  EXPECT_EQ(g1->ids.size(), 10u);
  EXPECT_EQ(g1->ids, g2->ids);
  EXPECT_EQ(g1->finish_reason, FinishReason::kLength);
  o.sampling.temperature = 1.5;
  o.sampling.seed = 42;
  auto s1 = Generate(model_, in, o), s2 = Generate(model_, in, o);
  EXPECT_EQ(s1->ids, s2->ids);
  o.sampling.seed = 43;
  auto s3 = Generate(model_, in, o);
  EXPECT_NE(s1->ids, s3->ids);
  // The callback can stop generation.
  int calls = 0;
  auto stopped = Generate(model_, in, o, [&](int64_t) { return ++calls < 3; });
  EXPECT_EQ(stopped->ids.size(), 3u);
  EXPECT_EQ(stopped->finish_reason, FinishReason::kCaller);
  // Over the context bound.
  o.max_new_tokens = 1000;
  EXPECT_EQ(Generate(model_, in, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ModelTest, GenerateStopsOnStopTextThroughTheStopDecision) {
  SequenceInput in;
  in.ids = RandomIds(4, 10);
  GenerateOptions o;
  o.max_new_tokens = 8;
  o.ignore_eos = true;
  auto full = Generate(model_, in, o);
  ASSERT_TRUE(full.ok());
  // Text of id i is "<i>" so that the 4th id's text is a stop sequence.
  o.token_text = [](int64_t id) { return id < 0 ? std::string() : "<" + std::to_string(id) + ">"; };
  std::string shown;
  o.on_text = [&](const std::string& t) { shown += t; };
  o.stop_sequences = {"<" + std::to_string(full->ids[3]) + ">"};
  auto stopped = Generate(model_, in, o);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->finish_reason, FinishReason::kStopSequence);
  EXPECT_EQ(stopped->stop_sequence, o.stop_sequences[0]);
  const auto first = std::find(full->ids.begin(), full->ids.end(), full->ids[3]) - full->ids.begin();
  EXPECT_EQ(stopped->ids.size(), static_cast<size_t>(first + 1));
  std::string expected;
  for (int64_t i = 0; i < first; ++i) expected += "<" + std::to_string(full->ids[i]) + ">";
  EXPECT_EQ(shown, expected);
  // A stop id ends before the id is output.
  GenerateOptions ids_only;
  ids_only.max_new_tokens = 8;
  ids_only.ignore_eos = true;
  ids_only.stop_token_ids = {full->ids[2]};
  auto by_id = Generate(model_, in, ids_only);
  EXPECT_EQ(by_id->finish_reason, FinishReason::kStopToken);
  EXPECT_EQ(by_id->ids.size(), static_cast<size_t>(std::find(full->ids.begin(), full->ids.end(), full->ids[2]) -
                                                   full->ids.begin()));
}

TEST(StopDecisionTest, EosStopIdsTextAndLength) {
  ModelConfig c;
  c.eos_token_id = 2;
  StopDecision eos(c, StopCriteria{5, {7}, {}, false});
  EXPECT_FALSE(eos.EndsBefore(3));
  EXPECT_TRUE(eos.EndsBefore(2));
  EXPECT_EQ(eos.finish_reason(), FinishReason::kEos);
  StopDecision ignore(c, StopCriteria{5, {7}, {}, true});
  EXPECT_FALSE(ignore.EndsBefore(2));
  EXPECT_TRUE(ignore.EndsBefore(7));
  EXPECT_EQ(ignore.finish_reason(), FinishReason::kStopToken);
  EXPECT_EQ(ignore.stop_token_id(), 7);
  // Length, at the bound: done after exactly max_new_tokens outputs.
  StopDecision len(c, StopCriteria{2, {}, {}, false});
  EXPECT_EQ(len.Output("a"), "a");
  EXPECT_FALSE(len.done());
  EXPECT_EQ(len.Output("b"), "b");
  EXPECT_TRUE(len.done());
  EXPECT_EQ(len.finish_reason(), FinishReason::kLength);
  EXPECT_EQ(len.Finish("c"), "c");
  // Stop text across deltas: the text before it, nothing after.
  StopDecision text(c, StopCriteria{10, {}, {"END"}, false});
  std::string out = text.Output("abcE");
  out += text.Output("N");
  EXPECT_FALSE(text.done());
  out += text.Output("Dxyz");
  EXPECT_TRUE(text.done());
  EXPECT_EQ(text.finish_reason(), FinishReason::kStopSequence);
  EXPECT_EQ(out, "abc");
  EXPECT_EQ(text.Finish("more"), "");
  // A stop completed by the detokenizer's held-back tail turns a length finish into a stop.
  StopDecision tail(c, StopCriteria{1, {}, {"xy"}, false});
  std::string shown = tail.Output("ax");
  shown += tail.Finish("yz");
  EXPECT_EQ(shown, "a");
  EXPECT_EQ(tail.finish_reason(), FinishReason::kStopSequence);
  EXPECT_EQ(tail.stop_sequence(), "xy");
}

TEST(SamplerTest, TopKOneIsGreedyAndBadParamsAreRejected) {
  std::vector<float> logits = {0.1f, 3.0f, 2.9f, -1.0f};
  SamplingParams p;
  p.temperature = 1.0;
  p.top_k = 1;
  Sampler s(p);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.Next(logits.data(), 4, {}), 1);
  p.top_k = 0;
  p.top_p = 0.0;
  EXPECT_FALSE(ValidateSamplingParams(p).ok());
  p.top_p = 1.0;
  p.temperature = -1;
  EXPECT_FALSE(ValidateSamplingParams(p).ok());
  // Repetition penalty moves greedy away from a seen id.
  SamplingParams g;
  g.repetition_penalty = 2.0;
  Sampler sg(g);
  EXPECT_EQ(sg.Next(logits.data(), 4, {1}), 2);
}

TEST(ConfigTest, ParsesMistralAndRejectsBadConfigs) {
  auto c = ParseModelConfig(R"({"model_type":"mistral","hidden_size":64,"num_hidden_layers":2,
      "num_attention_heads":8,"num_key_value_heads":2,"intermediate_size":160,"vocab_size":32000,
      "rope_theta":1e6,"rms_norm_eps":1e-5,"max_position_embeddings":4096,"sliding_window":null})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->kv_width(), 16);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  auto missing = ParseModelConfig(R"({"model_type":"llama","hidden_size":64})", "x/config.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("x/config.json"), std::string::npos);
  EXPECT_NE(missing.status().message().find("num_hidden_layers"), std::string::npos);
  auto unknown = ParseModelConfig(R"({"model_type":"gpt2","hidden_size":64})");
  EXPECT_NE(unknown.status().message().find("gpt2"), std::string::npos);
  EXPECT_FALSE(ParseModelConfig("not json").ok());
  EXPECT_FALSE(ParseModelConfig(R"({"model_type":"llama","hidden_size":64,"num_hidden_layers":2,
      "num_attention_heads":8,"num_key_value_heads":3,"intermediate_size":160,"vocab_size":10})").ok());
  // Round trip through our own writer.
  auto again = ParseModelConfig(ModelConfigToJson(*c));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->num_key_value_heads, 2);
}

}  // namespace
}  // namespace icae

namespace icae {
namespace {

// Both kernels: the dot-product one on the weight as stored (up to 8 rows) and the panel one
// on its packed copy (up to kMaxPackedRows).
// The packed one with each of its instructions (vdpbf16ps, FMA on widened weights).
struct GemvCase {
  const char* name;
  bool packed;
  int64_t max_rows;
  PackedBf16Kernel kernel;
};
const GemvCase kGemvCases[] = {{"unpacked", false, 8, PackedBf16Kernel::kAuto},
                               {"packed dot", true, kMaxPackedRows, PackedBf16Kernel::kDot},
                               {"packed fma", true, kMaxPackedRows, PackedBf16Kernel::kFma},
                               {"packed amx", true, kMaxPackedRows, PackedBf16Kernel::kAmx}};

// Sets the packed kernel's instruction for a scope (where this CPU has no AMX, the "packed amx"
// case runs the kernel kAuto picks: AmxKernelRunsWhereAvailable says which).
class KernelScope {
 public:
  explicit KernelScope(PackedBf16Kernel k) { SetPackedBf16Kernel(k); }
  ~KernelScope() { SetPackedBf16Kernel(PackedBf16Kernel::kAuto); }
};

TEST(CpuGemvTest, MatchesTorchLinearInBFloat16) {
  c10::InferenceMode guard;
  torch::manual_seed(11);
  for (const GemvCase& c : kGemvCases) {
    KernelScope kernel(c.kernel);
    for (int64_t k : {32, 100, 1024}) {
      for (int64_t m : {1, 3, 8, 9, 17, 32, 33}) {
        auto w = torch::randn({37, k}).to(torch::kBFloat16);
        auto x = torch::randn({m, k}).to(torch::kBFloat16);
        const PackedBf16Weight p = c.packed ? PackedBf16Weight::Pack(w) : PackedBf16Weight();
        auto ours = Linear(x, w, &p).to(torch::kFloat32);
        auto ref = torch::linear(x.to(torch::kFloat32), w.to(torch::kFloat32));
        // bf16 output rounding (8 bits of mantissa) bounds the difference.
        EXPECT_LT(((ours - ref).abs() / (ref.abs() + 1)).max().item<float>(), 1e-2f)
            << c.name << " k=" << k << " m=" << m << " kernel=" << CpuBf16GemvAvailable();
      }
    }
  }
}

// The kernels round their float32 sums to bf16 exactly as LibTorch does (nearest even, NaN →
// 0x7FC0): with w = diag(1 + 2^-8) every sum is one exact product, so each output must equal
// at::BFloat16(x · w) bit for bit, ties included.
TEST(CpuGemvTest, RoundsLikeLibTorch) {
  c10::InferenceMode guard;
  torch::manual_seed(14);
  for (const GemvCase& c : kGemvCases) {
    KernelScope kernel(c.kernel);
    for (int64_t k : {40, 256}) {
      auto w = (torch::eye(k) * (1 + std::ldexp(1.0, -8))).to(torch::kBFloat16);
      const PackedBf16Weight p = c.packed ? PackedBf16Weight::Pack(w) : PackedBf16Weight();
      auto x = torch::randn({3, k}).to(torch::kBFloat16);
      auto y = Linear(x, w, &p);
      auto xf = x.to(torch::kFloat32);
      const float wd = w[0][0].item<float>();
      for (int64_t j = 0; j < 3; ++j) {
        for (int64_t i = 0; i < k; ++i) {
          const at::BFloat16 want(xf[j][i].item<float>() * wd);
          ASSERT_EQ(y[j][i].item<at::BFloat16>().x, want.x) << c.name << " k=" << k << " row " << j << " col " << i;
        }
      }
      x[1][0] = std::numeric_limits<float>::quiet_NaN();
      auto yn = Linear(x, w, &p);
      EXPECT_EQ(yn[1][1].item<at::BFloat16>().x, at::BFloat16(std::nanf("")).x) << c.name;
      EXPECT_EQ(yn[0][1].item<at::BFloat16>().x, y[0][1].item<at::BFloat16>().x) << c.name;
    }
  }
}

// A sequence's product is the same bits whether it is alone or one of the rows of a decode
// step (continuous batching must not change a greedy stream), and whatever the thread split.
TEST(CpuGemvTest, RowsAreBitIdenticalWhateverTheBatch) {
  if (!CpuPackedBf16Available()) GTEST_SKIP() << "neither AVX-512 BF16 nor AVX2 + FMA on this CPU: no kernel is used";
  c10::InferenceMode guard;
  torch::manual_seed(13);
  const int threads = at::get_num_threads();
  for (const GemvCase& c : kGemvCases) {
    // Without AVX-512 BF16 only packed weights have a kernel (the AVX2 one); the unpacked
    // weight goes to torch::linear, which promises nothing about batches.
    if (!c.packed && !CpuBf16GemvAvailable()) continue;
    KernelScope kernel(c.kernel);
    for (int64_t k : {16, 45, 256, 1000}) {
      auto w = torch::randn({300, k}).to(torch::kBFloat16);
      const PackedBf16Weight p = c.packed ? PackedBf16Weight::Pack(w) : PackedBf16Weight();
      auto x = torch::randn({c.max_rows, k}).to(torch::kBFloat16);
      auto all = Linear(x, w, &p);
      for (int64_t m = 1; m <= c.max_rows; ++m) {
        auto part = Linear(x.narrow(0, 0, m), w, &p);
        for (int64_t j = 0; j < m; ++j) {
          EXPECT_TRUE(torch::equal(part[j], all[j])) << c.name << " k=" << k << " m=" << m << " row " << j;
          EXPECT_TRUE(torch::equal(Linear(x.narrow(0, j, 1), w, &p)[0], all[j]))
              << c.name << " k=" << k << " row " << j;
        }
      }
      at::set_num_threads(1);
      EXPECT_TRUE(torch::equal(Linear(x, w, &p), all)) << c.name << " k=" << k << " on one thread";
      at::set_num_threads(threads);
    }
  }
}

// The packed kernel's instructions differ in rounding only: the same products within bf16
// output rounding of each other.
TEST(CpuGemvTest, PackedKernelsAgree) {
  if (!CpuBf16GemvAvailable()) GTEST_SKIP() << "no AVX-512 BF16 on this CPU: the dot and AMX variants do not run";
  c10::InferenceMode guard;
  torch::manual_seed(15);
  auto w = torch::randn({300, 1000}).to(torch::kBFloat16);
  const PackedBf16Weight p = PackedBf16Weight::Pack(w);
  auto x = torch::randn({9, 1000}).to(torch::kBFloat16);
  torch::Tensor fma;
  {
    KernelScope k(PackedBf16Kernel::kFma);
    EXPECT_EQ(PackedBf16KernelInUse(), PackedBf16Kernel::kFma);
    fma = Linear(x, w, &p).to(torch::kFloat32);
  }
  for (PackedBf16Kernel kernel : {PackedBf16Kernel::kDot, PackedBf16Kernel::kAmx}) {
    KernelScope k(kernel);
    if (kernel == PackedBf16Kernel::kDot || CpuAmxAvailable()) {
      EXPECT_EQ(PackedBf16KernelInUse(), kernel);
    }
    auto other = Linear(x, w, &p).to(torch::kFloat32);
    EXPECT_LT(((other - fma).abs() / (fma.abs() + 1)).max().item<float>(), 1e-2f) << PackedBf16KernelName(kernel);
  }
}

// The FMA variant's arithmetic, which the AVX-512 and the AVX2 kernels share: per output one
// float32 chain over the input pairs in order, w[2i]·x[2i] then w[2i+1]·x[2i+1], each a fused
// multiply-add, the sum rounded once to bf16. Bit for bit, so a CPU with either kernel gives
// a stream the same tokens.
TEST(CpuGemvTest, FmaKernelIsItsScalarChainBitForBit) {
  if (!CpuPackedBf16Available()) GTEST_SKIP() << "neither AVX-512 BF16 nor AVX2 + FMA on this CPU: nothing packs";
  c10::InferenceMode guard;
  torch::manual_seed(16);
  KernelScope kernel(PackedBf16Kernel::kFma);
  for (int64_t k : {7, 64, 333}) {
    for (int64_t m : {1, 2, 5, 8, 13, 32}) {
      auto w = torch::randn({75, k}).to(torch::kBFloat16);
      auto x = torch::randn({m, k}).to(torch::kBFloat16);
      const PackedBf16Weight p = PackedBf16Weight::Pack(w);
      auto y = Linear(x, w, &p);
      auto wf = w.to(torch::kFloat32).contiguous(), xf = x.to(torch::kFloat32).contiguous();
      const float* wd = wf.data_ptr<float>();
      const float* xd = xf.data_ptr<float>();
      for (int64_t j = 0; j < m; ++j) {
        for (int64_t r = 0; r < 75; ++r) {
          float acc = 0.0f;
          for (int64_t i = 0; i < k; ++i) acc = std::fma(wd[r * k + i], xd[j * k + i], acc);
          ASSERT_EQ(y[j][r].item<at::BFloat16>().x, at::BFloat16(acc).x) << "k=" << k << " m=" << m << " row " << j
                                                                          << " out " << r;
        }
      }
    }
  }
}

// Where the CPU has AMX, kAuto uses it, and the "packed amx" cases above ran tdpbf16ps, not a
// fallback: AMX (like vdpbf16ps) reads bf16 subnormal inputs as zero, where the FMA kernel
// multiplies them (2^-130 · 2^100 = 2^-30).
TEST(CpuGemvTest, AmxKernelRunsWhereAvailable) {
  if (!CpuAmxAvailable()) GTEST_SKIP() << "no AMX-BF16 on this CPU (or kernel permission refused): kernel not used";
  c10::InferenceMode guard;
  EXPECT_EQ(PackedBf16KernelInUse(), PackedBf16Kernel::kAmx);
  auto w = torch::full({32, 64}, std::ldexp(1.0, 100)).to(torch::kBFloat16);
  const PackedBf16Weight p = PackedBf16Weight::Pack(w);
  auto x = torch::zeros({2, 64}, torch::kBFloat16);
  x[1][5] = std::ldexp(1.0, -130);
  ASSERT_EQ(x[1][5].item<float>(), std::ldexp(1.0f, -130)) << "bf16 keeps subnormals";
  EXPECT_EQ(Linear(x, w, &p)[1][7].item<float>(), 0.0f);
  KernelScope k(PackedBf16Kernel::kFma);
  EXPECT_EQ(Linear(x, w, &p)[1][7].item<float>(), std::ldexp(1.0f, -30));
}

// What packs: bf16 2-D CPU weights; the copy is the weight rounded up to 32 rows; nothing else
// (float32, 1-D) gets a packed copy, and a model packs all its products or none, within its
// byte bound (at the bound: packed; one byte under: not).
TEST(CpuGemvTest, PackingAndTheModelsByteBound) {
  if (!CpuPackedBf16Available()) GTEST_SKIP() << "neither AVX-512 BF16 nor AVX2 + FMA on this CPU: nothing packs";
  c10::InferenceMode guard;
  auto w = torch::randn({37, 64}).to(torch::kBFloat16);
  EXPECT_EQ(PackedBf16Weight::PackedBytes(w), 64 * 64 * 2);
  EXPECT_EQ(PackedBf16Weight::Pack(w).bytes(), 64 * 64 * 2);
  EXPECT_FALSE(PackedBf16Weight::Pack(w.to(torch::kFloat32)).defined());
  EXPECT_EQ(PackedBf16Weight::PackedBytes(w.to(torch::kFloat32)), 0);
  EXPECT_FALSE(PackedBf16Weight::Pack(torch::randn({64}).to(torch::kBFloat16)).defined());

  ModelConfig c = ::icae::testing::TinyConfig();
  ModelWeights weights = RandomWeights(c, torch::kBFloat16, 5);
  Transformer all(c, weights);
  const int64_t bytes = all.packed_weight_bytes();
  EXPECT_GT(bytes, 0);
  EXPECT_EQ(Transformer(c, weights, bytes).packed_weight_bytes(), bytes);
  EXPECT_EQ(Transformer(c, weights, bytes - 1).packed_weight_bytes(), 0);
  EXPECT_EQ(Transformer(c, weights, 0).packed_weight_bytes(), 0);
  EXPECT_EQ(Transformer(c, RandomWeights(c, torch::kFloat32, 5)).packed_weight_bytes(), 0);
}

// n sequences prefill a 3-id prompt each, then take one decode step together; returns that
// step's logits [n, vocab] (sequence i's ids differ by i).
torch::Tensor PromptThenOneDecodeStep(const Transformer& m, int64_t n) {
  std::vector<KVCache> caches;
  std::vector<SequenceInput> b(n);
  for (int64_t i = 0; i < n; ++i) caches.push_back(m.NewCache(16));
  for (int64_t i = 0; i < n; ++i) {
    b[i].ids = torch::tensor({int64_t(3 + i), int64_t(7 + i), int64_t(1 + i)}, torch::kInt64);
    b[i].cache = &caches[i];
  }
  EXPECT_TRUE(m.Forward(b).ok());
  for (int64_t i = 0; i < n; ++i) {
    b[i] = SequenceInput();
    b[i].ids = torch::tensor({int64_t(5 + i)}, torch::kInt64);
    b[i].cache = &caches[i];
  }
  return *m.Forward(b);
}

// Packed or not, a decode step of several sequences gives each sequence the logits it gets
// alone (the packed kernel is used for every product of the model, lm_head included), and the
// packed model's logits stay close to the unpacked one's.
TEST(CpuGemvTest, PackedModelDecodesLikeTheUnpackedOne) {
  if (!CpuPackedBf16Available()) GTEST_SKIP() << "neither AVX-512 BF16 nor AVX2 + FMA on this CPU: nothing packs";
  c10::InferenceMode guard;
  ModelConfig c = ::icae::testing::TinyConfig();
  ModelWeights weights = RandomWeights(c, torch::kBFloat16, 6);
  Transformer packed(c, weights), plain(c, weights, 0);
  ASSERT_GT(packed.packed_weight_bytes(), 0);
  auto step = PromptThenOneDecodeStep;
  auto eight = step(packed, 8), one = step(packed, 1), ref = step(plain, 8);
  EXPECT_TRUE(torch::equal(eight[0], one[0]));
  EXPECT_LT((eight - ref).abs().max().item<float>(), 0.05f * (ref.abs().max().item<float>() + 1));
}

}  // namespace
}  // namespace icae

namespace icae {
namespace {

// Int8 decode weights (QuantizedInt8Weight): q8_0-style blocks of 32 inputs, one scale each.

// The bf16 scale as quantization picks it: the smallest bf16 >= amax / 127.
float Int8Scale(float amax) {
  const float d = amax / 127.0f;
  uint32_t u;
  std::memcpy(&u, &d, 4);
  if ((u & 0xFFFFu) != 0) u += 0x10000u;
  u &= 0xFFFF0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

// Every dequantized weight lies within half its block's scale of the weight (the scale being
// max|w| / 127 rounded up to bf16), zero blocks stay zero, and the copy has the documented size;
// a bf16 weight quantizes like the same values in float32.
TEST(Int8GemvTest, QuantizationRoundTripIsWithinHalfAScale) {
  c10::InferenceMode guard;
  torch::manual_seed(21);
  for (int64_t k : {32, 45, 100, 1024}) {
    // Rows of very different magnitudes, one row of zeros, one outlier per row.
    auto w = torch::randn({37, k}) * torch::exp(torch::randn({37, 1}) * 2);
    w[5].zero_();
    w.select(1, k / 2).mul_(30);
    const QuantizedInt8Weight q = QuantizedInt8Weight::Quantize(w);
    ASSERT_TRUE(q.defined());
    EXPECT_EQ(q.bytes(), QuantizedInt8Weight::QuantizedBytes(w));
    EXPECT_EQ(q.bytes(), 2 * ((k + 31) / 32) * (32 * 32 + 64)) << k;  // 2 panels of 32 rows
    auto deq = q.Dequantize();
    ASSERT_EQ(deq.sizes(), w.sizes());
    EXPECT_EQ(deq[5].abs().max().item<float>(), 0.0f);
    for (int64_t r = 0; r < 37; ++r) {
      for (int64_t b = 0; b * 32 < k; ++b) {
        const int64_t len = std::min<int64_t>(32, k - b * 32);
        auto wb = w[r].narrow(0, b * 32, len), db = deq[r].narrow(0, b * 32, len);
        const float d = Int8Scale(wb.abs().max().item<float>());
        const float err = (wb - db).abs().max().item<float>();
        // w / d is rounded to float before q is: 127 · 2^-24 of d on top of the half step.
        ASSERT_LE(err, d * (0.5f + 1e-5f)) << "k=" << k << " row " << r << " block " << b;
      }
    }
    const QuantizedInt8Weight qb = QuantizedInt8Weight::Quantize(w.to(torch::kBFloat16));
    EXPECT_TRUE(torch::equal(qb.Dequantize(), QuantizedInt8Weight::Quantize(w.to(torch::kBFloat16).to(torch::kFloat32)).Dequantize()));
  }
  EXPECT_FALSE(QuantizedInt8Weight::Quantize(torch::randn({64})).defined());
  EXPECT_EQ(QuantizedInt8Weight::QuantizedBytes(torch::randn({64})), 0);
}

// The AVX-512 VNNI kernel gives the portable kernel's bits: both add the same exact integer
// dot products per block with the same fma, in the same order.
TEST(Int8GemvTest, AvxKernelEqualsThePortableOneBitForBit) {
  if (!CpuInt8GemvAvxAvailable()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU: only the portable kernel runs";
  c10::InferenceMode guard;
  torch::manual_seed(22);
  for (int64_t n : {37, 300}) {
    for (int64_t k : {32, 45, 256, 1000}) {
      const QuantizedInt8Weight q = QuantizedInt8Weight::Quantize(torch::randn({n, k}));
      for (int64_t m : {1, 2, 3, 4, 5, 8, 13, 32}) {
        auto x = torch::randn({m, k}) * torch::exp(torch::randn({1, k}));
        std::vector<float> ref(m * n), avx(m * n);
        Int8GemmForTest(q, x.data_ptr<float>(), m, ref.data(), /*avx=*/false);
        Int8GemmForTest(q, x.data_ptr<float>(), m, avx.data(), /*avx=*/true);
        ASSERT_EQ(std::memcmp(ref.data(), avx.data(), ref.size() * 4), 0) << "n=" << n << " k=" << k << " m=" << m;
      }
    }
  }
}

// Against torch::linear on the dequantized weight the only difference is the inputs'
// quantization (per row and 32-block, scale d = max|x| / 127, error <= d / 2 per input), so
// |ours - ref| <= Σ_i |w_i| · d_block(i) / 2, plus float rounding; and the result stays close
// to the product with the original weight.
TEST(Int8GemvTest, LinearIsWithinTheActivationQuantizationBound) {
  c10::InferenceMode guard;
  torch::manual_seed(23);
  for (int64_t k : {32, 100, 1024}) {
    for (int64_t m : {1, 3, 8, 17, 32}) {
      auto w = torch::randn({70, k}) * 0.05;
      auto x = torch::randn({m, k});
      const QuantizedInt8Weight q = QuantizedInt8Weight::Quantize(w);
      auto ours = Linear(x, w, nullptr, &q);
      ASSERT_EQ(ours.scalar_type(), torch::kFloat32);
      auto deq = q.Dequantize();
      auto ref = torch::linear(x.to(torch::kFloat64), deq.to(torch::kFloat64));
      const int64_t kb = (k + 31) / 32;
      auto xp = torch::constant_pad_nd(x, {0, kb * 32 - k}).view({m, kb, 32});
      auto dx = (xp.abs().amax(-1, true) / 127.0).expand({m, kb, 32}).reshape({m, kb * 32}).narrow(1, 0, k);
      auto bound = torch::linear((dx / 2).to(torch::kFloat64), deq.abs().to(torch::kFloat64)) +
                   1e-5 * torch::linear(x.abs().to(torch::kFloat64), deq.abs().to(torch::kFloat64)) + 1e-6;
      EXPECT_TRUE(((ours.to(torch::kFloat64) - ref).abs() <= bound).all().item<bool>()) << "k=" << k << " m=" << m;
      auto orig = torch::linear(x, w);
      EXPECT_LT(((ours - orig).abs().max() / orig.abs().max()).item<float>(), 0.02f) << "k=" << k << " m=" << m;
      // bf16 inputs give bf16 outputs, the float32 result rounded.
      auto xb = x.to(torch::kBFloat16);
      EXPECT_TRUE(torch::equal(Linear(xb, w, nullptr, &q), Linear(xb.to(torch::kFloat32), w, nullptr, &q).to(torch::kBFloat16)));
    }
  }
  // More rows than a decode step: the AVX-512 kernel takes them all (row by row the same
  // result), the portable one leaves them to torch::linear on w itself.
  auto w = torch::randn({20, 64});
  const QuantizedInt8Weight q = QuantizedInt8Weight::Quantize(w);
  auto x = torch::randn({kMaxPackedRows + 1, 64});
  auto y = Linear(x, w, nullptr, &q);
  if (CpuInt8GemvAvxAvailable()) {
    EXPECT_TRUE(torch::equal(y, torch::cat({Linear(x.narrow(0, 0, kMaxPackedRows), w, nullptr, &q),
                                            Linear(x.narrow(0, kMaxPackedRows, 1), w, nullptr, &q)})));
    EXPECT_FALSE(torch::equal(y, torch::linear(x, w)));
  } else {
    EXPECT_TRUE(torch::equal(y, torch::linear(x, w)));
  }
}

// A row's int8 product is the same bits alone, in any batch of up to kMaxPackedRows rows, and on
// one thread (both kernels: continuous batching must not change a greedy stream).
TEST(Int8GemvTest, RowsAreBitIdenticalWhateverTheBatch) {
  c10::InferenceMode guard;
  torch::manual_seed(24);
  const int threads = at::get_num_threads();
  for (int64_t k : {16, 45, 256, 1000}) {
    auto w = torch::randn({300, k}).to(torch::kBFloat16);
    const QuantizedInt8Weight q = QuantizedInt8Weight::Quantize(w);
    auto x = torch::randn({kMaxPackedRows, k}).to(torch::kBFloat16);
    auto all = Linear(x, w, nullptr, &q);
    for (int64_t m = 1; m <= kMaxPackedRows; ++m) {
      auto part = Linear(x.narrow(0, 0, m), w, nullptr, &q);
      for (int64_t j = 0; j < m; ++j) {
        ASSERT_TRUE(torch::equal(part[j], all[j])) << "k=" << k << " m=" << m << " row " << j;
      }
      ASSERT_TRUE(torch::equal(Linear(x.narrow(0, m - 1, 1), w, nullptr, &q)[0], all[m - 1])) << "k=" << k << " row " << m - 1;
    }
    at::set_num_threads(1);
    EXPECT_TRUE(torch::equal(Linear(x, w, nullptr, &q), all)) << "k=" << k << " on one thread";
    at::set_num_threads(threads);
    // A prefill-sized product (AVX-512 kernel: any number of rows, in chunks of 32): each row
    // is still the row alone.
    if (CpuInt8GemvAvxAvailable()) {
      auto big = torch::cat({x, torch::randn({45, k}).to(torch::kBFloat16), x});
      auto ybig = Linear(big, w, nullptr, &q);
      EXPECT_TRUE(torch::equal(ybig.narrow(0, 0, kMaxPackedRows), all)) << "k=" << k;
      EXPECT_TRUE(torch::equal(ybig.narrow(0, kMaxPackedRows + 45, kMaxPackedRows), all)) << "k=" << k;
    }
  }
}

TEST(Int8GemvTest, WeightsFormatNames) {
  EXPECT_EQ(*ParseWeightsFormat("bf16"), WeightsFormat::kBf16);
  EXPECT_EQ(*ParseWeightsFormat("int8"), WeightsFormat::kInt8);
  auto bad = ParseWeightsFormat("q8_0");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("bf16 or int8"), std::string::npos);
  EXPECT_STREQ(WeightsFormatName(WeightsFormat::kInt8), "int8");
}

// A model with int8 weights: every product of its decode steps (lm_head included) runs on the
// int8 copies, a sequence's logits do not depend on its batch, they stay close to the bf16
// model's, and the encoder's hidden states (full_precision_weights) are the bf16 model's bits.
TEST(Int8GemvTest, Int8ModelDecodesCloseToBf16AndTheEncoderIsUnchanged) {
  c10::InferenceMode guard;
  ModelConfig c = ::icae::testing::TinyConfig();
  c.hidden_size = 96;
  c.head_dim = 24;
  c.intermediate_size = 160;
  c.vocab_size = 70;
  ModelWeights weights = RandomWeights(c, torch::kBFloat16, 8);
  Transformer q8(c, weights, ModelLoadOptions::kDefaultMaxPackedWeightBytes, WeightsFormat::kInt8);
  Transformer bf(c, weights);
  ASSERT_EQ(q8.weights_format(), WeightsFormat::kInt8);
  EXPECT_EQ(bf.weights_format(), WeightsFormat::kBf16);
  EXPECT_EQ(bf.int8_weight_bytes(), 0);
  // 2 layers · (qkv 96 + 2·48 rows, o 96, gate/up 320, down 96 over 160 inputs) + lm_head 70.
  EXPECT_EQ(q8.int8_weight_bytes(), 1088 * (2 * (6 * 3 + 3 * 3 + 10 * 3 + 3 * 5) + 3 * 3));
  auto step = PromptThenOneDecodeStep;
  auto eight = step(q8, 8), one = step(q8, 1), ref = step(bf, 8);
  EXPECT_TRUE(torch::equal(eight[0], one[0]));
  EXPECT_FALSE(torch::equal(eight, ref));  // the int8 copies are used
  EXPECT_LT((eight - ref).abs().max().item<float>(), 0.05f * (ref.abs().max().item<float>() + 1));

  std::vector<SequenceInput> enc(1);
  enc[0].embeds = torch::randn({5, c.hidden_size}).to(torch::kBFloat16);
  enc[0].num_outputs = 3;
  ForwardOptions fo;
  fo.output = ForwardOutput::kHidden;
  fo.full_precision_weights = true;
  auto encoded = q8.Forward(enc, fo), reference = bf.Forward(enc, fo);
  ASSERT_TRUE(encoded.ok() && reference.ok());
  EXPECT_TRUE(torch::equal(*encoded, *reference));
  fo.full_precision_weights = false;
  EXPECT_FALSE(torch::equal(*q8.Forward(enc, fo), *reference));
}

}  // namespace
}  // namespace icae

namespace icae {
namespace {

TEST(CpuFusedTest, RmsNormAndRopeMatchTensorOps) {
  c10::InferenceMode guard;
  torch::manual_seed(12);
  auto x = torch::randn({3, 64}).to(torch::kBFloat16);
  auto w = (1 + 0.1 * torch::randn({64})).to(torch::kBFloat16);
  auto xf = x.to(torch::kFloat32);
  auto ref = w * (xf * torch::rsqrt(xf.pow(2).mean(-1, true) + 1e-5)).to(torch::kBFloat16);
  auto ours = FusedRmsNorm(x, w, 1e-5);
  EXPECT_LT((ours.to(torch::kFloat32) - ref.to(torch::kFloat32)).abs().max().item<float>(), 0.02f);
  // Split across threads, every row has the bits it has alone.
  auto many = torch::randn({2048, 64}).to(torch::kBFloat16);
  auto all = FusedRmsNorm(many, w, 1e-5);
  for (int64_t r : {0, 1, 1023, 1024, 2047}) {
    EXPECT_TRUE(torch::equal(all[r], FusedRmsNorm(many.narrow(0, r, 1), w, 1e-5)[0])) << "row " << r;
  }
  // RoPE on a strided view, as inside the qkv buffer.
  auto qkv = torch::randn({3, 2 * 16}).to(torch::kBFloat16);
  auto q3 = qkv.narrow(1, 0, 16).reshape({3, 2, 8});
  auto pos = torch::tensor({0, 7, 300}, torch::kInt64);
  auto inv = 1.0 / torch::pow(10000.0, torch::arange(0, 8, 2).to(torch::kFloat32) / 8);
  auto angle = pos.to(torch::kFloat32).unsqueeze(1) * inv.unsqueeze(0);
  auto emb = torch::cat({angle, angle}, -1);
  auto cos = emb.cos().unsqueeze(1), sin = emb.sin().unsqueeze(1);
  auto qf = q3.to(torch::kFloat32);
  auto rot = torch::cat({-qf.narrow(-1, 4, 4), qf.narrow(-1, 0, 4)}, -1);
  auto want = qf * cos + rot * sin;
  auto other = qkv.narrow(1, 16, 16).clone();
  FusedRope(q3, pos, inv);
  EXPECT_LT((q3.to(torch::kFloat32) - want).abs().max().item<float>(), 0.05f);
  EXPECT_TRUE(torch::equal(qkv.narrow(1, 16, 16), other));  // the rest of the buffer untouched
}

}  // namespace
}  // namespace icae

namespace icae {
namespace {

// A shape the fused bf16 kernels take (head_dim a multiple of 32).
ModelConfig FusedKernelConfig() {
  ModelConfig c;
  c.model_type = "mistral";
  c.hidden_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  c.intermediate_size = 96;
  c.vocab_size = 64;
  c.max_position_embeddings = 256;
  return c;
}

// The fused prefill softmax against the tensor ops it replaces (scores · scale plus a 0/-inf
// bias, softmax in float32, rounded to bf16): causal rows after a cached past, with and without
// a sliding window, row lengths around the kernel's blocks of 16. Masked keys are exactly 0.
TEST(CpuFusedTest, MaskedSoftmaxMatchesBiasedSoftmax) {
  c10::InferenceMode guard;
  if (!CpuBf16GemvAvailable()) GTEST_SKIP() << "no AVX-512 BF16 on this CPU: the fused softmax does not run";
  torch::manual_seed(10);
  struct Case { int64_t n, past, window; };
  for (Case cs : {Case{1, 0, 0}, Case{5, 0, 0}, Case{17, 0, 0}, Case{16, 15, 0}, Case{3, 40, 0}, Case{33, 7, 9},
                  Case{20, 0, 4}}) {
    const int64_t len = cs.past + cs.n, B = 2, group = 3;
    auto raw = (4 * torch::randn({B, group * cs.n, len})).to(torch::kBFloat16);
    auto qi = torch::arange(cs.past, len).repeat({group}).unsqueeze(1);  // row r: query past + r % n
    auto kj = torch::arange(0, len).unsqueeze(0);
    auto masked = kj > qi;
    if (cs.window > 0) masked = masked.logical_or(qi - kj >= cs.window);
    auto ref = torch::softmax((raw.to(torch::kFloat32) * 0.125).masked_fill(masked, -INFINITY), -1)
                   .to(torch::kBFloat16);
    auto ours = raw.clone();
    ASSERT_TRUE(FusedMaskedSoftmax(ours, cs.n, cs.past, cs.window, 0.125));
    const std::string what = "n " + std::to_string(cs.n) + " past " + std::to_string(cs.past) + " window " +
                             std::to_string(cs.window);
    EXPECT_TRUE(torch::equal(ours.masked_select(masked.expand_as(ours)),
                             torch::zeros({masked.expand_as(ours).sum().item<int64_t>()}, torch::kBFloat16)))
        << what;
    // Within one bf16 rounding step of the tensor ops (probabilities ≤ 1: 2⁻⁸).
    EXPECT_LE((ours.to(torch::kFloat32) - ref.to(torch::kFloat32)).abs().max().item<float>(), 1.0f / 256) << what;
    EXPECT_LT((ours.to(torch::kFloat32).sum(-1) - 1).abs().max().item<float>(), 0.02f) << what;
  }
  // Shapes it does not take are refused and left as they were.
  auto wrong = torch::zeros({1, 4, 9}, torch::kBFloat16);
  EXPECT_FALSE(FusedMaskedSoftmax(wrong, 4, 0, 0, 1.0));  // 9 keys for 4 queries with no past
  EXPECT_TRUE(torch::equal(wrong, torch::zeros({1, 4, 9}, torch::kBFloat16)));
  auto f32 = torch::zeros({1, 4, 4});
  EXPECT_FALSE(FusedMaskedSoftmax(f32, 4, 0, 0, 1.0));
}

// The fused MLP activation on the two halves of a stacked gate/up product (rows strided),
// lengths around the kernel's blocks of 16: within one bf16 step of silu in float32, rounded to
// bf16, times u (LibTorch's own bf16 silu is a step off that here: silu(-1.40625) = -0.275391
// against float32's -0.276787 → bf16 -0.277344), within two of LibTorch's bf16 ops; NaN stays
// NaN; what it does not take is refused.
TEST(CpuFusedTest, SiluMulMatchesTensorOps) {
  c10::InferenceMode guard;
  if (!CpuPackedBf16Available()) {
    GTEST_SKIP() << "neither AVX-512 BF16 nor AVX2 + FMA on this CPU: the fused SiLU·mul does not run";
  }
  torch::manual_seed(11);
  for (int64_t inter : {1, 15, 16, 33, 704}) {
    auto gu = (6 * torch::randn({7, 2 * inter})).to(torch::kBFloat16);
    auto g = gu.narrow(1, 0, inter), u = gu.narrow(1, inter, inter);
    auto ours = FusedSiluMul(g, u);
    ASSERT_TRUE(ours.defined()) << inter;
    ASSERT_TRUE(ours.is_contiguous());
    auto y = ours.to(torch::kFloat32);
    auto exact = (torch::silu(g.to(torch::kFloat32)).to(torch::kBFloat16).to(torch::kFloat32) * u.to(torch::kFloat32))
                     .to(torch::kBFloat16).to(torch::kFloat32);
    auto lib = (torch::silu(g) * u).to(torch::kFloat32);
    // A bf16 step of the larger of the two results.
    auto step = [&](const torch::Tensor& ref) { return torch::maximum(ref.abs(), y.abs()) / 128 + 1e-30; };
    EXPECT_TRUE(((y - exact).abs() <= step(exact)).all().item<bool>()) << "intermediate " << inter;
    EXPECT_TRUE(((y - lib).abs() <= 2 * step(lib)).all().item<bool>()) << "intermediate " << inter;
  }
  auto g = torch::tensor({0.0f, -90.0f, 90.0f, NAN, -1e-3f}).to(torch::kBFloat16).unsqueeze(0);
  auto u = torch::ones_like(g);
  auto y = FusedSiluMul(g, u).to(torch::kFloat32)[0];
  EXPECT_EQ(y[0].item<float>(), 0.0f);
  EXPECT_LE(std::abs(y[1].item<float>()), 1e-30f);  // silu(-90) = -90·e^-90
  EXPECT_EQ(y[2].item<float>(), 90.0f);
  EXPECT_TRUE(std::isnan(y[3].item<float>()));
  EXPECT_NEAR(y[4].item<float>(), -5e-4f, 1e-5f);
  EXPECT_FALSE(FusedSiluMul(g.to(torch::kFloat32), u.to(torch::kFloat32)).defined());
  EXPECT_FALSE(FusedSiluMul(g, torch::ones({1, 4}, torch::kBFloat16)).defined());
}

// The fused decode attention against softmax(q·Kᵀ/√d)·V in float32, for lengths around the
// kernel's blocks of 16 keys, with the keys given whole or split into runs (a shared prefix and
// a sequence's own part): within bf16 rounding of the reference, and the same bits however the
// positions are split.
TEST(CpuFusedTest, DecodeAttentionMatchesSoftmaxAndIgnoresHowKeysAreSplit) {
  c10::InferenceMode guard;
  if (!CpuPackedBf16Available()) {
    GTEST_SKIP() << "neither AVX-512 BF16 nor AVX2 + FMA on this CPU: the fused decode attention does not run";
  }
  torch::manual_seed(9);
  const int64_t heads = 4, kv_heads = 2;
  // 40: a head_dim only the AVX2 kernel takes (the AVX-512 one needs a multiple of 32).
  for (int64_t hd : {64, 40}) {
    const double scale = std::sqrt(static_cast<double>(hd));
    for (int64_t len : {1, 15, 16, 17, 33, 200}) {
      auto q = torch::randn({1, heads, hd}).to(torch::kBFloat16);
      auto k = torch::randn({kv_heads, len, hd}).to(torch::kBFloat16);
      auto v = torch::randn({kv_heads, len, hd}).to(torch::kBFloat16);
      auto span = [&](int64_t b, int64_t e) {
        KVCache::Span sp;
        sp.keys = k.data_ptr<at::BFloat16>() + b * hd;
        sp.values = v.data_ptr<at::BFloat16>() + b * hd;
        sp.length = e - b;
        sp.head_stride = len * hd;
        sp.row_stride = hd;
        return sp;
      };
      auto whole = FusedDecodeAttention(q, {{span(0, len)}}, kv_heads, scale);
      if (hd % 32 != 0 && CpuBf16GemvAvailable()) {
        EXPECT_FALSE(whole.defined()) << "the AVX-512 kernel takes head_dim a multiple of 32";
        continue;
      }
      ASSERT_TRUE(whole.defined()) << "hd " << hd;
      // Reference in float32: query head h reads kv head h / 2.
      auto kf = k.to(torch::kFloat32).repeat_interleave(heads / kv_heads, 0);
      auto vf = v.to(torch::kFloat32).repeat_interleave(heads / kv_heads, 0);
      auto qf = q.to(torch::kFloat32)[0].unsqueeze(1);                         // [heads, 1, hd]
      auto p = torch::softmax(torch::bmm(qf, kf.transpose(1, 2)) / scale, -1);  // [heads, 1, len]
      auto ref = torch::bmm(p, vf).reshape({1, heads * hd});
      EXPECT_LT((whole.to(torch::kFloat32) - ref).abs().max().item<float>(), 2e-2f) << "hd " << hd << " len " << len;
      for (int64_t cut : {int64_t{1}, int64_t{7}, len / 2, len - 1}) {
        if (cut <= 0 || cut >= len) continue;
        auto split = FusedDecodeAttention(q, {{span(0, cut), span(cut, len)}}, kv_heads, scale);
        EXPECT_TRUE(torch::equal(split, whole)) << "hd " << hd << " len " << len << " cut " << cut;
      }
    }
  }
}

// bf16 decode steps of several sequences: the fused kernels (inference mode) against the plain
// tensor ops (autograd mode, which never takes the fused path).
TEST(CpuFusedTest, BatchedDecodeStepsMatchTensorOps) {
  const ModelConfig c = FusedKernelConfig();
  Transformer model(c, RandomWeights(c, torch::kBFloat16, 21));
  auto run = [&](bool inference) {
    std::unique_ptr<c10::InferenceMode> guard;
    if (inference) guard = std::make_unique<c10::InferenceMode>();
    torch::manual_seed(4);
    std::vector<KVCache> caches;
    for (int i = 0; i < 3; ++i) caches.push_back(model.NewCache());
    std::vector<SequenceInput> b(3);
    for (int i = 0; i < 3; ++i) {
      b[i].ids = torch::randint(0, 64, {5 + 7 * i}, torch::kInt64);
      b[i].cache = &caches[i];
    }
    std::vector<torch::Tensor> logits = {*model.Forward(b)};
    for (int step = 0; step < 4; ++step) {
      for (int i = 0; i < 3; ++i) {
        b[i] = SequenceInput();
        b[i].ids = torch::tensor({(step * 3 + i) % 64}, torch::kInt64);
        b[i].cache = &caches[i];
      }
      logits.push_back(*model.Forward(b));
    }
    return torch::stack(logits).clone();
  };
  auto fused = run(true), plain = run(false);
  EXPECT_LT((fused - plain).abs().max().item<float>(), 0.1f);
  EXPECT_GT(plain.abs().max().item<float>(), 0.1f);
}

}  // namespace
}  // namespace icae

namespace icae {
namespace {

// A cache extending a shared prefix reads it in place (no copy, the entry pinned while used)
// and gives the same logits, bit for bit, as a cache holding a copy of it — on the fused bf16
// decode kernel (segments) and on the tensor-op path (float32, prefill), with two sequences
// sharing one entry in a batch.
// A cache holding `ids`, prefilled by one Forward of one sequence.
KVCache Prefilled(const Transformer& model, const torch::Tensor& ids) {
  KVCache cache = model.NewCache();
  std::vector<SequenceInput> b(1);
  b[0].ids = ids;
  b[0].cache = &cache;
  EXPECT_TRUE(model.Forward(b).ok());
  return cache;
}

TEST(SharedPrefixTest, ExtendingAPrefixEqualsCopyingIt) {
  c10::InferenceMode guard;
  const ModelConfig c = FusedKernelConfig();
  for (auto dtype : {torch::kBFloat16, torch::kFloat32}) {
    Transformer model(c, RandomWeights(c, dtype, 22));
    torch::manual_seed(5);
    KVCache computed = Prefilled(model, torch::randint(0, 64, {19}, torch::kInt64));
    PrefixKVCache entries(int64_t{1} << 30);
    ASSERT_TRUE(entries.Insert("p", CopyKVPrefix(c, computed, 19, 19)));
    std::shared_ptr<const KVCache> entry = entries.Lookup("p");
    ASSERT_NE(entry, nullptr);

    auto run = [&](bool shared) {
      std::vector<KVCache> caches;
      for (int i = 0; i < 2; ++i) {
        caches.push_back(shared ? KVCache::Extending(entry, 19, 40) : CopyKVPrefix(c, *entry, 19, 40));
      }
      if (shared) {
        EXPECT_EQ(caches[0].shared_length(), 19);
        EXPECT_EQ(caches[0].bytes() + entry->bytes(), CopyKVPrefix(c, *entry, 19, 40).bytes());
        // In place: the first segment is the entry's own memory.
        auto segs = caches[1].Segments(0, 0);
        EXPECT_EQ(segs.size(), 1u);
        EXPECT_EQ(segs[0].keys.data_ptr(), entry->Segments(0, 0)[0].keys.data_ptr());
      }
      std::vector<SequenceInput> batch(2);
      for (int i = 0; i < 2; ++i) {
        batch[i].ids = torch::randint(0, 64, {3 + 4 * i}, torch::kInt64);
        batch[i].cache = &caches[i];
      }
      std::vector<torch::Tensor> logits = {*model.Forward(batch)};
      for (int step = 0; step < 5; ++step) {
        for (int i = 0; i < 2; ++i) {
          batch[i] = SequenceInput();
          batch[i].ids = torch::tensor({(step * 5 + i) % 64}, torch::kInt64);
          batch[i].cache = &caches[i];
        }
        logits.push_back(*model.Forward(batch));
      }
      if (shared) {
        EXPECT_GE(entry.use_count(), 3);  // the test's handle + the two caches: pinned
        EXPECT_EQ(caches[0].length(), 19 + 3 + 5);
      }
      return torch::stack(logits).clone();
    };
    torch::manual_seed(6);
    auto copied = run(false);
    torch::manual_seed(6);
    auto shared = run(true);
    EXPECT_TRUE(torch::equal(copied, shared)) << c10::toString(dtype) << " max diff "
                                              << (copied - shared).abs().max().item<float>();
    EXPECT_EQ(entry.use_count(), 2);  // the caches are gone: only the test and the cache hold it
  }
}

// The decoder runs a step of at most kMaxPackedRows rows (a short prompt's prefill beside the
// running sequences' decode rows) on as many threads as it times fastest, so such a step must
// give the same bits on one thread as on all: its products run on the packed kernel, and its
// attention, norms and softmax split by rows. (Checked to fail when a product splits its sums
// by thread.)
TEST(SharedPrefixTest, SmallMixedStepIsBitIdenticalOnOneThreadAndAll) {
  if (!CpuPackedBf16Available()) GTEST_SKIP() << "neither AVX-512 BF16 nor AVX2 + FMA on this CPU: nothing packs";
  const int default_threads = at::get_num_threads();
  const int threads = std::max(2, default_threads);  // a team of two even on one core
  c10::InferenceMode guard;
  // The default model's widths: large enough that the products split across threads (a
  // smaller model's step runs on the calling thread whatever the team, see ParallelGrain).
  ModelConfig c = FusedKernelConfig();
  c.hidden_size = 256;
  c.intermediate_size = 704;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.vocab_size = 512;
  Transformer model(c, RandomWeights(c, torch::kBFloat16, 23));
  torch::manual_seed(7);
  KVCache computed = Prefilled(model, torch::randint(0, 64, {19}, torch::kInt64));
  auto entry = std::make_shared<const KVCache>(CopyKVPrefix(c, computed, 19, 19));
  const auto prompt = torch::randint(0, 64, {kMaxPackedRows - 3}, torch::kInt64);
  const auto earlier = torch::randint(0, 64, {3, 5}, torch::kInt64);
  auto run = [&](int step_threads) {
    // Three running sequences (5 positions each, prefilled on all threads), then one step:
    // their decode rows and a new sequence's prompt after the shared prefix.
    at::set_num_threads(threads);
    std::vector<KVCache> caches;
    for (int i = 0; i < 3; ++i) caches.push_back(model.NewCache(16));
    caches.push_back(KVCache::Extending(entry, 19, 19 + prompt.size(0) + 4));
    std::vector<SequenceInput> batch(3);
    for (int i = 0; i < 3; ++i) {
      batch[i].ids = earlier[i];
      batch[i].cache = &caches[i];
    }
    EXPECT_TRUE(model.Forward(batch).ok());
    batch.resize(4);
    for (int i = 0; i < 3; ++i) {
      batch[i] = SequenceInput();
      batch[i].ids = torch::tensor({(7 * i + 3) % 64}, torch::kInt64);
      batch[i].cache = &caches[i];
    }
    batch[3].ids = prompt;
    batch[3].cache = &caches[3];
    at::set_num_threads(step_threads);
    auto logits = model.Forward(batch);
    at::set_num_threads(threads);
    EXPECT_TRUE(logits.ok());
    return logits.ok() ? logits->clone() : torch::Tensor();
  };
  const torch::Tensor all = run(threads), one = run(1);
  at::set_num_threads(default_threads);
  ASSERT_TRUE(all.defined() && one.defined());
  EXPECT_TRUE(torch::equal(all, one)) << "max diff " << (all - one).abs().max().item<float>();
}

// A decode row (one new token after a cache) takes the fused decode kernel whatever else its
// step holds: beside another sequence's prefill chunk, before or after it in the batch, its
// logits have the same bits as in a decode-only step. (Through the tensor ops, as the decode
// rows of a mixed step went before, they differ in the last bits: scores rounded to bf16.)
TEST(SharedPrefixTest, DecodeRowsHaveTheSameBitsBesideAPrefill) {
  c10::InferenceMode guard;
  const ModelConfig c = FusedKernelConfig();
  Transformer model(c, RandomWeights(c, torch::kBFloat16, 24));
  torch::manual_seed(8);
  KVCache computed = Prefilled(model, torch::randint(0, 64, {19}, torch::kInt64));
  auto entry = std::make_shared<const KVCache>(CopyKVPrefix(c, computed, 19, 19));
  const auto earlier = torch::randint(0, 64, {3, 6}, torch::kInt64);
  const auto prompt = torch::randint(0, 64, {9}, torch::kInt64);
  // where: -1 no prefill, 0 the prefill chunk first in the batch, 3 after the decode rows.
  auto run = [&](int where) {
    std::vector<KVCache> caches;
    for (int i = 0; i < 3; ++i) caches.push_back(KVCache::Extending(entry, 19, 40));
    caches.push_back(KVCache::Extending(entry, 19, 40));
    std::vector<SequenceInput> batch(3);
    for (int i = 0; i < 3; ++i) {
      batch[i].ids = earlier[i];
      batch[i].cache = &caches[i];
    }
    EXPECT_TRUE(model.Forward(batch).ok());
    std::vector<SequenceInput> step;
    for (int i = 0; i < 3; ++i) {
      SequenceInput in;
      in.ids = torch::tensor({(5 * i + 2) % 64}, torch::kInt64);
      in.cache = &caches[i];
      step.push_back(std::move(in));
    }
    if (where >= 0) {
      SequenceInput in;
      in.ids = prompt;
      in.cache = &caches[3];
      step.insert(step.begin() + where, std::move(in));
    }
    auto logits = model.Forward(step);
    EXPECT_TRUE(logits.ok());
    if (!logits.ok()) return torch::Tensor();
    if (where == 0) return logits->narrow(0, 1, 3).clone();
    return logits->narrow(0, 0, 3).clone();
  };
  const torch::Tensor alone = run(-1), before = run(0), after = run(3);
  ASSERT_TRUE(alone.defined() && before.defined() && after.defined());
  EXPECT_TRUE(torch::equal(alone, after)) << "max diff " << (alone - after).abs().max().item<float>();
  EXPECT_TRUE(torch::equal(alone, before)) << "max diff " << (alone - before).abs().max().item<float>();
  EXPECT_GT(alone.abs().max().item<float>(), 0.1f);
}

}  // namespace
}  // namespace icae
