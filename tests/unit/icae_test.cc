// ICAE bad input: adapters that do not fit the model, NaN/Inf, bad contexts and slot shapes.
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <fstream>

#include "common/icae/adapter.h"
#include "common/icae/compressor.h"
#include "common/icae/prompt.h"
#include "common/model/prefix_cache.h"
#include "common/model/safetensors.h"
#include "common/model/transformer.h"
#include "tests/test_util.h"
#include "tests/testing/status.h"

namespace icae {
namespace {

ModelConfig Base() {
  ModelConfig c;
  c.model_type = "mistral";
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.intermediate_size = 24;
  c.vocab_size = 40;
  c.max_position_embeddings = 512;
  return c;
}

IcaeAdapter RandomAdapter(const ModelConfig& m, int64_t r, int64_t mem) {
  IcaeAdapter a;
  a.config.mem_size = mem;
  a.config.lora_r = r;
  a.config.lora_alpha = 2 * r;
  a.config.base_vocab_size = m.vocab_size;
  a.config.pad_token_id = m.vocab_size;
  a.config.ae_token_id = m.vocab_size + mem + 1;
  a.config.lm_token_id = a.config.ae_token_id + 1;
  a.config.ft_token_id = a.config.ae_token_id + 2;
  a.config.max_context_tokens = 100;
  a.config.instruct_prefix_ids = {1, 3};
  a.config.instruct_suffix_ids = {4, 5};
  for (int64_t i = 0; i < m.num_hidden_layers; ++i) {
    LoraLayer L;
    L.q_a = torch::randn({r, m.hidden_size}) * 0.1;
    L.q_b = torch::randn({m.q_width(), r}) * 0.1;
    L.v_a = torch::randn({r, m.hidden_size}) * 0.1;
    L.v_b = torch::randn({m.kv_width(), r}) * 0.1;
    a.lora.layers.push_back(L);
  }
  a.lora.scaling = a.config.lora_scaling();
  a.memory_embed = torch::randn({mem + 3, m.hidden_size}) * 0.02;
  return a;
}

class IcaeTest : public ::testing::Test {
 protected:
  IcaeTest() : model_(Base(), RandomWeights(Base(), torch::kFloat32, 3)) {
    torch::manual_seed(5);
    adapter_ = RandomAdapter(Base(), 4, 2);
  }
  std::string Save(const IcaeAdapter& a) {
    std::string path = ::icae::testing::MakeTempDir("icae-adapter") + "/adapter.safetensors";
    EXPECT_TRUE(SaveIcaeAdapter(a, path).ok());
    return path;
  }
  c10::InferenceMode guard_;
  Transformer model_;
  IcaeAdapter adapter_;
};

TEST_F(IcaeTest, SaveLoadRoundTripKeepsResults) {
  auto loaded = LoadIcaeAdapter(Save(adapter_), Base(), torch::kFloat32);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.mem_size, 2);
  // LoRA is stored in bf16 as the release does: compare against the rounded adapter.
  IcaeAdapter rounded = adapter_;
  for (auto& L : rounded.lora.layers) {
    for (auto* t : {&L.q_a, &L.q_b, &L.v_a, &L.v_b}) *t = t->to(torch::kBFloat16).to(torch::kFloat32);
  }
  std::vector<int64_t> ids = {1, 5, 7, 9, 11, 13, 2, 8, 9, 10};
  auto a = Compressor(model_, rounded).Compress({ids});
  auto b = Compressor(model_, *loaded).Compress({ids});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(((*a)[0].slots - (*b)[0].slots).abs().max().item<float>(), 1e-6f);
  EXPECT_EQ((*a)[0].num_segments, 2);  // 10 ids, 2 slots × rate 4 = 8 per segment
}

// A model loaded with int8 decode weights compresses with the weights as loaded: its slots are
// the bf16/fp32 model's bits (segments this short would otherwise run on the int8 copies).
TEST_F(IcaeTest, Int8DecodeWeightsLeaveSlotsUnchanged) {
  Transformer q8(Base(), RandomWeights(Base(), torch::kFloat32, 3),
                 ModelLoadOptions::kDefaultMaxPackedWeightBytes, WeightsFormat::kInt8);
  ASSERT_EQ(q8.weights_format(), WeightsFormat::kInt8);
  std::vector<int64_t> ids = {1, 5, 7, 9, 11, 13, 2, 8, 9, 10};
  auto a = Compressor(model_, adapter_).Compress({ids});
  auto b = Compressor(q8, adapter_).Compress({ids});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(torch::equal((*a)[0].slots, (*b)[0].slots));
}

TEST_F(IcaeTest, AdapterForAnotherModelIsRejectedNamingTheTensor) {
  ModelConfig other = Base();
  other.hidden_size = 32;
  other.head_dim = 8;
  auto r = LoadIcaeAdapter(Save(adapter_), other, torch::kFloat32);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("memory_token_embed.weight"), std::string::npos) << r.status();
}

TEST_F(IcaeTest, RankDifferentFromConfigIsRejected) {
  std::string path = Save(adapter_);
  std::string cfg = path.substr(0, path.rfind('/')) + "/icae_config.json";
  IcaeConfig c = adapter_.config;
  c.lora_r = 8;
  std::ofstream(cfg) << IcaeConfigToJson(c);
  auto r = LoadIcaeAdapter(path, Base(), torch::kFloat32);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("lora_A"), std::string::npos) << r.status();
}

TEST_F(IcaeTest, MissingTensorIsNamed) {
  IcaeAdapter a = adapter_;
  a.lora.layers[1].v_a = torch::Tensor();
  a.lora.layers[1].v_b = torch::Tensor();
  auto r = LoadIcaeAdapter(Save(a), Base(), torch::kFloat32);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("layers.1.self_attn.v_proj.lora_A"), std::string::npos) << r.status();
}

TEST_F(IcaeTest, NanInAdapterIsRejected) {
  IcaeAdapter a = adapter_;
  a.lora.layers[0].q_b[0][0] = std::numeric_limits<float>::quiet_NaN();
  auto r = LoadIcaeAdapter(Save(a), Base(), torch::kFloat32);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("NaN"), std::string::npos);
  a = adapter_;
  a.memory_embed[1][2] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(LoadIcaeAdapter(Save(a), Base(), torch::kFloat32).ok());
}

TEST_F(IcaeTest, ContextBoundsAndBadIds) {
  Compressor comp(model_, adapter_);
  EXPECT_EQ(comp.Compress({{}}).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int64_t> at(100, 7), past(101, 7);
  EXPECT_TRUE(comp.Compress({at}).ok());
  auto r = comp.Compress({past});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("exceeds the maximum of 100"), std::string::npos);
  auto bad = comp.Compress({{1, 2, 40}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("40"), std::string::npos);
}

TEST_F(IcaeTest, SlotsOfTheWrongHiddenSizeAreRejected) {
  auto r = AssembleDecoderInput(model_, adapter_, PromptMode::kAutoencode, {torch::zeros({4, 8})}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("16"), std::string::npos);
  EXPECT_FALSE(AssembleDecoderInput(model_, adapter_, PromptMode::kRaw, {torch::zeros({4, 16})}, {99}).ok());
  EXPECT_FALSE(AssembleDecoderInput(model_, adapter_, PromptMode::kAutoencode, {}, {}).ok());
}

TEST_F(IcaeTest, TemplatesPerMode) {
  auto slots = torch::randn({2, 16});
  auto ae = *AssembleDecoderInput(model_, adapter_, PromptMode::kAutoencode, {slots}, {});
  EXPECT_EQ(ae.size(0), 3);
  auto ins = *AssembleDecoderInput(model_, adapter_, PromptMode::kInstruct, {slots}, {7, 8, 9});
  EXPECT_EQ(ins.size(0), 2 + 2 + 1 + 3 + 2);
  EXPECT_TRUE(torch::equal(ins[4], adapter_.SpecialEmbedding(adapter_.config.ft_token_id)));
  auto cont = *AssembleDecoderInput(model_, adapter_, PromptMode::kContinue, {slots}, {});
  EXPECT_EQ(cont.size(0), 2);
  IcaeAdapter lm = adapter_;
  lm.config.continue_with_lm_token = true;
  EXPECT_EQ(AssembleDecoderInput(model_, lm, PromptMode::kContinue, {slots}, {})->size(0), 3);
  // Baseline: context embeddings in place of slots.
  auto mem = ContextAsMemory(model_, {1, 2, 3, 4});
  ASSERT_TRUE(mem.ok());
  EXPECT_EQ(AssembleDecoderInput(model_, adapter_, PromptMode::kAutoencode, {*mem}, {})->size(0), 5);
}

// IcaeConfig::MemoryPositions::kSpread. adapter_: 2 slots per segment, rate 4, so 10 ids are
// 2 segments of 5; a slot sits at floor((2j + 1)·5 / 4) of its segment: 1, 3.
TEST_F(IcaeTest, SpreadPositionsPerMode) {
  IcaeAdapter spread = adapter_;
  spread.config.memory_positions = IcaeConfig::MemoryPositions::kSpread;
  auto values = [](const absl::StatusOr<torch::Tensor>& t) {
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return std::vector<int64_t>{};
    return std::vector<int64_t>(t->data_ptr<int64_t>(), t->data_ptr<int64_t>() + t->numel());
  };
  const std::vector<MemoryExtent> ten{{4, 10}};
  EXPECT_EQ(values(DecoderInputPositions(spread, PromptMode::kAutoencode, ten, 5)),
            (std::vector<int64_t>{1, 3, 6, 8, 10}));
  // Instruct: lead of 2, slots, [FT], 3 prompt ids, 2 suffix ids.
  EXPECT_EQ(values(DecoderInputPositions(spread, PromptMode::kInstruct, ten, 12)),
            (std::vector<int64_t>{0, 1, 3, 5, 8, 10, 12, 13, 14, 15, 16, 17}));
  // Two sets: the second takes the positions of its own context's tokens, after the first's;
  // a baseline set (rows = its tokens) its tokens' own positions.
  EXPECT_EQ(values(DecoderInputPositions(spread, PromptMode::kRaw, {{4, 10}, {2, 3}, {3, 3}}, 11)),
            (std::vector<int64_t>{1, 3, 6, 8, 10, 12, 13, 14, 15, 16, 17}));
  // The reference layout: positions are the rows' indices, whatever the sets.
  EXPECT_EQ(values(DecoderInputPositions(adapter_, PromptMode::kInstruct, ten, 12)),
            values(torch::arange(12, torch::kInt64)));
  // Rows that are neither the set's tokens nor the slots they compress to; more rows than given.
  for (const std::vector<MemoryExtent>& bad :
       std::vector<std::vector<MemoryExtent>>{{{2, 10}}, {{4, 0}}, {{0, 4}}, {{4, int64_t{1} << 50}}}) {
    auto r = DecoderInputPositions(spread, PromptMode::kAutoencode, bad, 5);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad[0].rows << " " << bad[0].tokens;
  }
  EXPECT_FALSE(DecoderInputPositions(spread, PromptMode::kAutoencode, ten, 3).ok());
  EXPECT_EQ(values(ExtendPositions(torch::tensor(std::vector<int64_t>{1, 3, 6}), 2)),
            (std::vector<int64_t>{1, 3, 6, 7, 8}));

  // The encoder puts memory token j of each segment at that position, after the segment's
  // tokens at 0 … n-1: the slots are what one forward pass with those positions gives.
  std::vector<int64_t> ids = {1, 5, 7, 9, 11, 13, 2, 8, 9, 10};
  auto s = Compressor(model_, spread).Compress({ids});
  auto q = Compressor(model_, adapter_).Compress({ids});
  ASSERT_TRUE(s.ok() && q.ok());
  auto emb = *model_.Embed(torch::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + 5)));
  std::vector<SequenceInput> batch(1);
  batch[0].embeds = torch::cat({emb, adapter_.memory_embed.narrow(0, 0, 2)}, 0);
  batch[0].positions = torch::tensor(std::vector<int64_t>{0, 1, 2, 3, 4, 1, 3});
  batch[0].num_outputs = 2;
  ForwardOptions fo;
  fo.lora = &adapter_.lora;
  fo.output = ForwardOutput::kHidden;
  auto first = model_.Forward(batch, fo);
  ASSERT_TRUE(first.ok()) << first.status();
  // (The compressor packs both segments into one pass: the same values, other row blocks.)
  EXPECT_LT((*first - (*s)[0].slots.narrow(0, 0, 2)).abs().max().item<float>(), 1e-6f);
  EXPECT_FALSE(torch::allclose((*s)[0].slots, (*q)[0].slots));

  // Decode steps continue from the last explicit position + 1, through the KV cache and its
  // copies: the same logits as one pass over every row with ExtendPositions.
  ASSERT_OK_AND_ASSIGN(SequenceInput in, SlotDecoderInput(model_, spread, PromptMode::kAutoencode, *s, {}));
  KVCache cache = model_.NewCache(8);
  in.cache = &cache;
  std::vector<SequenceInput> step{in};
  ASSERT_TRUE(model_.Forward(step).ok());
  EXPECT_EQ(cache.length(), 5);
  EXPECT_EQ(cache.next_position(), 11);
  EXPECT_EQ(CopyKVPrefix(model_.config(), cache, 5, 8).next_position(), 11);
  EXPECT_EQ(CopyKVPrefix(model_.config(), cache, 3, 8).next_position(), 3);
  step[0] = SequenceInput();
  step[0].ids = torch::tensor(std::vector<int64_t>{7});
  step[0].cache = &cache;
  auto incremental = model_.Forward(step);
  ASSERT_TRUE(incremental.ok());
  std::vector<SequenceInput> whole(1);
  whole[0].embeds = torch::cat({in.embeds, *model_.Embed(torch::tensor(std::vector<int64_t>{7}))}, 0);
  whole[0].positions = ExtendPositions(in.positions, 1);
  auto one_pass = model_.Forward(whole);
  ASSERT_TRUE(one_pass.ok());
  EXPECT_LT((*incremental - *one_pass).abs().max().item<float>(), 1e-5f);
  EXPECT_EQ(cache.next_position(), 12);
}

TEST(IcaeConfigTest, MemoryPositionsRoundTripAndBadValues) {
  auto c = ParseIcaeConfig("{}", "icae_config.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->memory_positions, IcaeConfig::MemoryPositions::kSequential);
  auto own = ParseIcaeConfig(R"({"mem_size": 8, "base_vocab_size": 512, "memory_positions": "spread",
      "instruct_prefix_ids": [1, 5], "instruct_suffix_ids": [6, 7]})", "icae_config.json");
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(own->memory_positions, IcaeConfig::MemoryPositions::kSpread);
  auto again = ParseIcaeConfig(IcaeConfigToJson(*own), "again");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->memory_positions, IcaeConfig::MemoryPositions::kSpread);
  for (const char* text : {R"({"memory_positions": "centre"})", R"({"memory_positions": 1})"}) {
    auto bad = ParseIcaeConfig(text, "icae_config.json");
    ASSERT_FALSE(bad.ok()) << text;
    EXPECT_NE(bad.status().message().find("'memory_positions' must be \"sequential\" or \"spread\""),
              std::string::npos) << bad.status();
  }
}

TEST(IcaeConfigTest, DefaultsAreTheReleasedCheckpoint) {
  auto c = ParseIcaeConfig("{}", "icae_config.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->mem_size, 128);
  EXPECT_EQ(c->lora_r, 512);
  EXPECT_EQ(c->ae_token_id, 32129);
  EXPECT_EQ(c->ft_token_id, 32131);
  EXPECT_EQ(c->max_context_tokens, 5120);
  EXPECT_FALSE(ParseIcaeConfig(R"({"mem_size": 8, "ae_token_id": 5})", "x").ok());
}

// Found by fuzz/icae_config_fuzz.cc: a small vocabulary without its own instruct template was
// accepted with Mistral's default template ids outside it, and the config written back from
// it was then refused (explicit ids were checked, the defaults were not).
TEST(IcaeConfigTest, DefaultInstructTemplateMustFitTheVocabulary) {
  const char* text = R"({"mem_size": 8, "base_vocab_size": 512, "pad_token_id": 512,
      "ae_token_id": 521, "lm_token_id": 522, "ft_token_id": 523,
      "instruct_prefix_ids": [1, 5], "instruct_=uffix_ids": [6, 7]})";
  auto c = ParseIcaeConfig(text, "icae_config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("'instruct_suffix_ids' (the default, Mistral's) holds id 733"),
            std::string::npos) << c.status();
  // With its own template the same config loads, and what it writes reads back.
  auto own = ParseIcaeConfig(R"({"mem_size": 8, "base_vocab_size": 512,
      "instruct_prefix_ids": [1, 5], "instruct_suffix_ids": [6, 7]})", "icae_config.json");
  ASSERT_TRUE(own.ok()) << own.status();
  auto again = ParseIcaeConfig(IcaeConfigToJson(*own), "again");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->instruct_suffix_ids, (std::vector<int64_t>{6, 7}));
  EXPECT_FALSE(ParseIcaeConfig(R"({"instruct_prefix_ids": [1, 32000]})", "x").ok());
  EXPECT_FALSE(ParseIcaeConfig(R"({"instruct_prefix_ids": [1, -1]})", "x").ok());
}

// Found by fuzz/icae_config_fuzz.cc: the default special ids were computed from
// base_vocab_size + mem_size before either was bounded (signed overflow under UBSan).
TEST(IcaeConfigTest, HugeSizesAreRefusedBeforeAnyArithmetic) {
  for (const char* text : {R"({"base_vocab_size": 9223372036854775807})",
                           R"({"mem_size": 9223372036854775807})",
                           R"({"base_vocab_size": 4611686018427387904, "mem_size": 4611686018427387904})",
                           R"({"mem_size": -9223372036854775808})"}) {
    auto c = ParseIcaeConfig(text, "icae_config.json");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(c.status().message().find("must be in [1, "), std::string::npos) << c.status();
  }
}

}  // namespace
}  // namespace icae
