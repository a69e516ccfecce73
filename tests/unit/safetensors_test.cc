// Safetensors reading: round trips and every kind of broken file gives a clear error naming
// the file and the problem (never a crash or an out-of-bounds read).
#include <gtest/gtest.h>

#include <fstream>

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

TEST_F(ModelFolderTest, CorruptConfigIsNamed) {
  MakeModel(false, false);
  Write("config.json", "{\"model_type\": \"llama\"");
  auto m = Transformer::Load(dir_);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("config.json"), std::string::npos);
}

}  // namespace
}  // namespace icae
