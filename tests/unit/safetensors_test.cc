// Safetensors reading: round trips and every kind of broken file gives a clear error naming
// the file and the problem (never a crash or an out-of-bounds read).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

#include "common/model/safetensors.h"
#include "common/model/transformer.h"
#include "common/util/mapped_file.h"
#include "tests/test_util.h"

namespace icae {
namespace {

std::string Header(const std::string& json) {
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& bytes) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  void ExpectError(const std::string& bytes, const std::string& fragment) {
    std::string path = Write("bad.safetensors", bytes);
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << "accepted: " << fragment;
    EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status();
    EXPECT_NE(f.status().message().find(fragment), std::string::npos) << f.status();
  }
  std::string dir_ = ::icae::testing::MakeTempDir("icae-st");
};

TEST_F(SafetensorsTest, RoundTripAllDtypes) {
  auto a = torch::randn({3, 5});
  auto b = torch::randn({7}).to(torch::kBFloat16);
  auto c = torch::randn({2, 2}).to(torch::kFloat16);
  auto d = torch::arange(0, 6, torch::kInt64);
  std::string path = dir_ + "/rt.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"a", a}, {"b", b}, {"c", c}, {"d", d}}, {{"k", "v"}}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(torch::equal(*(*f)->LoadAsStored("a"), a));
  EXPECT_TRUE(torch::equal(*(*f)->LoadAsStored("b"), b));
  EXPECT_TRUE(torch::equal(*(*f)->LoadAsStored("c"), c));
  EXPECT_TRUE(torch::equal(*(*f)->LoadAsStored("d"), d));
  EXPECT_TRUE(torch::equal(*(*f)->Load("b", torch::kFloat32), b.to(torch::kFloat32)));
  EXPECT_EQ((*f)->metadata().at("k"), "v");
  EXPECT_EQ((*f)->Load("zzz", torch::kFloat32).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, TruncatedFile) { ExpectError("abc", "shorter than the 8-byte"); }

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  std::string h = Header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})");
  h[0] = static_cast<char>(0xff);
  h[3] = static_cast<char>(0x7f);
  ExpectError(h + "abcd", "beyond the end of the file");
}

TEST_F(SafetensorsTest, NotJson) { ExpectError(Header("{{{{") + "1234", "not a JSON object"); }

TEST_F(SafetensorsTest, OffsetsOutOfRange) {
  ExpectError(Header(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})") + "1234",
              "outside the data section");
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  ExpectError(Header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})") +
                  std::string(12, 'x'),
              "overlap");
}

TEST_F(SafetensorsTest, UnknownDtype) {
  ExpectError(Header(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})") + "12345678",
              "unknown dtype 'Q4'");
}

TEST_F(SafetensorsTest, SizeDisagreesWithShape) {
  ExpectError(Header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})") + "12345678",
              "expected 12");
}

TEST_F(SafetensorsTest, ReversedOffsets) {
  ExpectError(Header(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})") + "12345678",
              "data_offsets");
}

// Found by fuzz/safetensors_header_fuzz.cc: with a zero elsewhere in the shape the byte count
// stays 0, and a dimension of 2^64-1 became a negative int64 tensor size.
TEST_F(SafetensorsTest, DimensionBeyondInt64IsRefused) {
  ExpectError(Header(R"({"a":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}})"),
              "dimension 18446744073709551615 is too large");
  ExpectError(Header(R"({"a":{"dtype":"U8","shape":[9223372036854775808,0],"data_offsets":[0,0]}})"),
              "is too large");
}

// Model folders: a tensor whose shape differs from the config, and a missing tensor.
class ModelFolderTest : public SafetensorsTest {
 protected:
  void MakeModel(bool drop_tensor, bool wrong_shape) {
    ModelConfig c;
    c.model_type = "llama";
    c.hidden_size = 16;
    c.num_hidden_layers = 1;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 2;
    c.head_dim = 8;
    c.intermediate_size = 24;
    c.vocab_size = 20;
    Transformer m(c, RandomWeights(c, torch::kFloat32, 1));
    auto named = m.NamedWeights();
    std::vector<std::pair<std::string, torch::Tensor>> keep;
    for (auto& [n, t] : named) {
      if (drop_tensor && n == "model.layers.0.mlp.up_proj.weight") continue;
      if (wrong_shape && n == "model.layers.0.self_attn.k_proj.weight") t = torch::zeros({4, 16});
      keep.emplace_back(n, t);
    }
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", keep).ok());
    Write("config.json", ModelConfigToJson(c));
  }
};

TEST_F(ModelFolderTest, LoadsAWellFormedFolder) {
  MakeModel(false, false);
  auto m = Transformer::Load(dir_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_GT((*m)->NumParameters(), 0);
}

TEST_F(ModelFolderTest, MissingTensorIsNamed) {
  MakeModel(true, false);
  auto m = Transformer::Load(dir_);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("mlp.up_proj.weight"), std::string::npos) << m.status();
}

TEST_F(ModelFolderTest, ShapeDifferentFromConfigIsNamed) {
  MakeModel(false, true);
  auto m = Transformer::Load(dir_);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("k_proj.weight"), std::string::npos) << m.status();
  EXPECT_NE(m.status().message().find("[4, 16]"), std::string::npos) << m.status();
}

TEST_F(ModelFolderTest, ShardedFolderLoads) {
  MakeModel(false, false);
  auto single = SafetensorsFile::Open(dir_ + "/model.safetensors");
  ASSERT_TRUE(single.ok());
  std::vector<std::pair<std::string, torch::Tensor>> s1, s2;
  std::string map;
  int i = 0;
  for (const auto& n : (*single)->Names()) {
    auto t = *(*single)->LoadAsStored(n);
    const bool second = (i++ % 2) == 1;
    const char* shard = second ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
    (second ? s2 : s1).emplace_back(n, t);
    map += std::string(map.empty() ? "" : ",") + "\"" + n + "\":\"" + shard + "\"";
  }
  ASSERT_TRUE(WriteSafetensors(dir_ + "/model-00001-of-00002.safetensors", s1).ok());
  ASSERT_TRUE(WriteSafetensors(dir_ + "/model-00002-of-00002.safetensors", s2).ok());
  Write("model.safetensors.index.json", "{\"weight_map\":{" + map + "}}");
  std::remove((dir_ + "/model.safetensors").c_str());
  auto m = Transformer::Load(dir_);
  ASSERT_TRUE(m.ok()) << m.status();
}

// The address range of this process's mapping of `path` (from /proc/self/maps), or {0, 0}.
std::pair<uintptr_t, uintptr_t> MappingOf(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.size() < path.size() || line.compare(line.size() - path.size(), path.size(), path) != 0) continue;
    uintptr_t b = 0, e = 0;
    std::sscanf(line.c_str(), "%lx-%lx", &b, &e);
    return {b, e};
  }
  return {0, 0};
}

TEST_F(ModelFolderTest, WeightsInTheFileDtypeAreViewsOfTheMappingAndGiveTheSameResults) {
  MakeModel(false, false);  // float32 file
  ModelLoadOptions owned_opts;
  owned_opts.weights_in_place = false;
  auto owned = Transformer::Load(dir_, owned_opts);
  auto mapped = Transformer::Load(dir_);  // float32 compute dtype: in place by default
  ASSERT_TRUE(owned.ok() && mapped.ok());
  const auto& Lo = (*owned)->weights().layers[0];
  const auto& Lm = (*mapped)->weights().layers[0];
  // Owned: stacked copies. In place, written q, k, v, o, gate, up, down (our writer's order):
  // stacked views inside the file's mapping.
  EXPECT_TRUE(Lo.wqkv.defined() && Lo.w_gate_up.defined());
  ASSERT_TRUE(Lm.wqkv.defined() && !Lm.wq.defined() && Lm.w_gate_up.defined() && !Lm.w_gate.defined());
  auto [b, e] = MappingOf(dir_ + "/model.safetensors");
  ASSERT_NE(b, 0u) << "the weights file is not mapped while the model lives";
  for (const torch::Tensor* t : {&Lm.wqkv, &Lm.wo, &Lm.w_gate_up, &Lm.w_down,
                                 &(*mapped)->weights().embed_tokens}) {
    const auto p = reinterpret_cast<uintptr_t>(t->data_ptr());
    EXPECT_TRUE(p >= b && p < e) << "a weight was copied out of the mapping";
  }
  const auto po = reinterpret_cast<uintptr_t>(Lo.wo.data_ptr());
  EXPECT_FALSE(po >= b && po < e) << "weights_in_place=false must copy";
  EXPECT_EQ((*owned)->NumParameters(), (*mapped)->NumParameters());
  // Saving splits either layout into the same HF tensors.
  auto no = (*owned)->NamedWeights(), nm = (*mapped)->NamedWeights();
  ASSERT_EQ(no.size(), nm.size());
  for (size_t i = 0; i < no.size(); ++i) {
    EXPECT_EQ(no[i].first, nm[i].first);
    EXPECT_TRUE(torch::equal(no[i].second, nm[i].second)) << no[i].first;
  }
  // Same logits for prefill and for a decode step.
  c10::InferenceMode guard;
  for (int64_t n : {5, 1}) {
    auto ids = torch::arange(1, 1 + n, torch::kInt64);
    std::vector<SequenceInput> a(1), c(1);
    a[0].ids = c[0].ids = ids;
    auto la = (*owned)->Forward(a), lc = (*mapped)->Forward(c);
    ASSERT_TRUE(la.ok() && lc.ok());
    EXPECT_LT((*la - *lc).abs().max().item<float>(), 1e-5f) << "n=" << n;
  }
  // The mapping outlives the folder's files: a model keeps working after they are replaced.
  std::remove((dir_ + "/model.safetensors").c_str());
  std::vector<SequenceInput> d(1);
  d[0].ids = torch::tensor({3, 4}, torch::kInt64);
  EXPECT_TRUE((*mapped)->Forward(d).ok());
}

TEST_F(ModelFolderTest, MappedWeightsNotBackToBackStaySeparateProducts) {
  MakeModel(false, false);
  // Rewrite in name order (k, o, q, v and down, gate, up: as many writers store them): q/k/v
  // are not adjacent any more, gate/up still are.
  auto f = SafetensorsFile::Open(dir_ + "/model.safetensors");
  ASSERT_TRUE(f.ok());
  std::vector<std::pair<std::string, torch::Tensor>> all;
  for (const auto& n : (*f)->Names()) all.emplace_back(n, *(*f)->LoadAsStored(n));  // sorted
  f->reset();
  ASSERT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", all).ok());
  ModelLoadOptions owned_opts;
  owned_opts.weights_in_place = false;
  auto owned = Transformer::Load(dir_, owned_opts);
  auto m = Transformer::Load(dir_);
  ASSERT_TRUE(m.ok() && owned.ok());
  const auto& L = (*m)->weights().layers[0];
  EXPECT_TRUE(!L.wqkv.defined() && L.wq.defined() && L.wk.defined() && L.wv.defined());
  EXPECT_TRUE(L.w_gate_up.defined() && !L.w_gate.defined());
  auto [b, e] = MappingOf(dir_ + "/model.safetensors");
  for (const torch::Tensor* t : {&L.wq, &L.wk, &L.wv, &L.w_gate_up}) {
    const auto p = reinterpret_cast<uintptr_t>(t->data_ptr());
    EXPECT_TRUE(p >= b && p < e) << "a weight was copied out of the mapping";
  }
  c10::InferenceMode guard;
  std::vector<SequenceInput> a(1), c(1);
  a[0].ids = c[0].ids = torch::arange(1, 7, torch::kInt64);
  auto la = (*owned)->Forward(a), lc = (*m)->Forward(c);
  ASSERT_TRUE(la.ok() && lc.ok());
  EXPECT_LT((*la - *lc).abs().max().item<float>(), 1e-5f);
}

TEST_F(ModelFolderTest, OtherDtypesAreConvertedOnceAndStacked) {
  MakeModel(false, false);  // float32 file, bf16 compute
  ModelLoadOptions o;
  o.dtype = torch::kBFloat16;
  auto m = Transformer::Load(dir_, o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->weights().layers[0].wqkv.defined());
  EXPECT_EQ((*m)->weights().layers[0].wqkv.scalar_type(), torch::kBFloat16);
}

TEST_F(ModelFolderTest, NanInAMappedWeightIsNamed) {
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    MakeModel(false, false);
    auto f = SafetensorsFile::Open(dir_ + "/model.safetensors");
    ASSERT_TRUE(f.ok());
    std::vector<std::pair<std::string, torch::Tensor>> all;
    for (const auto& n : (*f)->Names()) {
      auto t = (*(*f)->LoadAsStored(n)).to(dtype);
      if (n == "model.layers.0.mlp.down_proj.weight") t.view(-1)[t.numel() - 1] = std::nanf("");
      all.emplace_back(n, t);
    }
    f->reset();
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", all).ok());
    ModelLoadOptions o;
    o.dtype = dtype;  // the file's dtype: checked in place
    auto m = Transformer::Load(dir_, o);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find("down_proj.weight' contains NaN or Inf"), std::string::npos)
        << m.status();
  }
}

TEST(FiniteScanTest, FindsTheFirstNonFiniteElementInEveryFormatAndChunk) {
  // More than one parallel chunk (1M elements), non-finite values near both ends.
  const int64_t n = (1 << 20) * 3 + 17;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
    auto t = torch::zeros({n}, dtype);
    EXPECT_EQ(FirstNonFiniteElement(t), -1);
    t[n - 1] = std::numeric_limits<float>::infinity();
    EXPECT_EQ(FirstNonFiniteElement(t), n - 1);
    t[(1 << 20) + 5] = std::nanf("");
    EXPECT_EQ(FirstNonFiniteElement(t), (1 << 20) + 5);
    t[3] = -std::numeric_limits<float>::infinity();
    EXPECT_EQ(FirstNonFiniteElement(t), 3);
    // The largest finite value is finite.
    auto big = torch::full({70}, dtype == torch::kFloat16 ? 65504.0 : 3e38, dtype);
    EXPECT_EQ(FirstNonFiniteElement(big), -1);
  }
  // Non-contiguous or other dtypes take the tensor path.
  auto d = torch::zeros({4, 4}, torch::kFloat64);
  d[2][1] = std::nan("");
  EXPECT_EQ(FirstNonFiniteElement(d.t()), 6);  // flattened order of the transposed view
}

TEST_F(ModelFolderTest, CorruptConfigIsNamed) {
  MakeModel(false, false);
  Write("config.json", "{\"model_type\": \"llama\"");
  auto m = Transformer::Load(dir_);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("config.json"), std::string::npos);
}

}  // namespace
}  // namespace icae
