// The transformer against the shared references: llama2.c's own logits and greedy ids for
// stories260K (after `icae convert llama2c`), and HuggingFace Mistral logits for the tiny GQA
// model of icae-golden. ICAE_TEST_DEVICE=cuda runs them on a GPU (tests/testing/device.h).
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/model/safetensors.h"
#include "common/model/transformer.h"
#include "common/util/mapped_file.h"
#include "tests/test_util.h"
#include "tests/testing/device.h"

namespace icae {
namespace {

using json = nlohmann::json;
using ::icae::testing::IcaeBinary;
using ::icae::testing::MakeTempDir;
using ::icae::testing::RunCommand;
using ::icae::testing::SharedDir;
using ::icae::testing::TestDataDir;
using ::icae::testing::TestLoadOptions;
using ::icae::testing::Tol;

json ReadJson(const std::string& path) {
  auto text = ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return json::parse(*text);
}

std::vector<int64_t> Ids(const json& j) { return j.get<std::vector<int64_t>>(); }

class Stories260kTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ICAE_REQUIRE_TESTDATA(TestDataDir() + "/stories260K_golden.json");
    const std::string src = SharedDir() + "/models/stories260K";
    ICAE_REQUIRE_TESTDATA(src + "/stories260K.bin");
    dir_ = MakeTempDir("icae-stories");
    std::string out, err;
    int rc = RunCommand(IcaeBinary() + " convert llama2c --checkpoint " + src +
                            "/stories260K.bin --tokenizer " + src + "/tok512.bin --out " + dir_,
                        &out, &err);
    ASSERT_EQ(rc, 0) << err;
  }
  std::string dir_;
};

TEST_F(Stories260kTest, LastLogitsAndGreedyIdsMatchLlama2c) {
  c10::InferenceMode guard;
  auto model = Transformer::Load(dir_, TestLoadOptions());
  ASSERT_TRUE(model.ok()) << model.status();
  json golden = ReadJson(TestDataDir() + "/stories260K_golden.json");
  ASSERT_GE(golden["cases"].size(), 1u);
  for (const auto& c : golden["cases"]) {
    SCOPED_TRACE(c["prompt"].get<std::string>());
    std::vector<int64_t> prompt = Ids(c["prompt_ids"]);
    KVCache cache = (*model)->NewCache();
    std::vector<SequenceInput> batch(1);
    batch[0].ids = torch::tensor(prompt, torch::kInt64);
    batch[0].cache = &cache;
    auto logits = (*model)->Forward(batch);
    ASSERT_TRUE(logits.ok()) << logits.status();
    auto expected = c["last_logits"].get<std::vector<float>>();
    ASSERT_EQ(logits->size(1), static_cast<int64_t>(expected.size()));
    float max_diff = (logits->squeeze(0).cpu() - torch::tensor(expected)).abs().max().item<float>();
    EXPECT_LT(max_diff, Tol(1e-4f));
    // 64 greedy steps fed back without stopping, as the reference did.
    std::vector<int64_t> got;
    auto next = logits->argmax(-1).item<int64_t>();
    for (size_t step = 0; step < c["greedy_ids"].size(); ++step) {
      got.push_back(next);
      batch[0] = SequenceInput();
      batch[0].ids = torch::tensor({next}, torch::kInt64);
      batch[0].cache = &cache;
      auto l = (*model)->Forward(batch);
      ASSERT_TRUE(l.ok()) << l.status();
      next = l->argmax(-1).item<int64_t>();
    }
    EXPECT_EQ(got, Ids(c["greedy_ids"]));
  }
}

TEST_F(Stories260kTest, RunCommandPrintsReferenceGreedyIds) {
  json golden = ReadJson(TestDataDir() + "/stories260K_golden.json");
  const auto& c = golden["cases"][0];
  std::vector<int64_t> expected = Ids(c["greedy_ids"]);
  int64_t stop = c["stop_index"].get<int64_t>();
  if (stop >= 0) expected.resize(stop);  // run stops at BOS, as llama2.c does
  std::string out, err;
  int rc = RunCommand(IcaeBinary() + " run --model " + dir_ + " --prompt '" +
                          c["prompt"].get<std::string>() + "' --max-new-tokens " +
                          std::to_string(c["greedy_ids"].size()) + " --print-ids --threads 1" +
                          ::icae::testing::DeviceFlag(),
                      &out, &err);
  ASSERT_EQ(rc, 0) << err;
  std::string want;
  for (size_t i = 0; i < expected.size(); ++i) want += (i ? " " : "") + std::to_string(expected[i]);
  EXPECT_EQ(out, want + "\n");
}

TEST_F(Stories260kTest, BadInputGivesClearErrors) {
  std::string out, err;
  // Ids outside the vocabulary (512).
  int rc = RunCommand(IcaeBinary() + " run --model " + dir_ + " --ids '1 600' --threads 1", &out, &err);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("600"), std::string::npos) << err;
  // A truncated llama2.c checkpoint: refused, and nothing is written.
  const std::string src = SharedDir() + "/models/stories260K";
  auto bytes = ReadFileToString(src + "/stories260K.bin");
  ASSERT_TRUE(bytes.ok());
  const std::string tmp = MakeTempDir("icae-trunc");
  ASSERT_TRUE(WriteFileAtomically(tmp + "/short.bin", bytes->substr(0, bytes->size() - 100)).ok());
  rc = RunCommand(IcaeBinary() + " convert llama2c --checkpoint " + tmp + "/short.bin --tokenizer " +
                      src + "/tok512.bin --out " + tmp + "/out", &out, &err);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("short.bin"), std::string::npos) << err;
  EXPECT_NE(err.find("bytes"), std::string::npos) << err;
  EXPECT_FALSE(::icae::testing::PathExists(tmp + "/out/model.safetensors"));
  // A model folder with a corrupt safetensors file.
  ASSERT_TRUE(WriteFileAtomically(tmp + "/out/config.json", *ReadFileToString(dir_ + "/config.json")).ok());
  ASSERT_TRUE(WriteFileAtomically(tmp + "/out/model.safetensors", std::string(12, '\xff')).ok());
  rc = RunCommand(IcaeBinary() + " run --model " + tmp + "/out --ids '1' --threads 1", &out, &err);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("model.safetensors"), std::string::npos) << err;
}

TEST(MistralGoldenTest, BaseCaseLogitsMatchHuggingFace) {
  const std::string dir = TestDataDir() + "/icae-golden";
  ICAE_REQUIRE_TESTDATA(dir + "/cases.json");
  c10::InferenceMode guard;
  auto model = Transformer::Load(dir + "/model", TestLoadOptions());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config().num_key_value_heads, 2);
  auto expected = SafetensorsFile::Open(dir + "/expected.safetensors");
  ASSERT_TRUE(expected.ok()) << expected.status();
  json cases = ReadJson(dir + "/cases.json");
  ASSERT_GE(cases["base_cases"].size(), 1u);
  for (const auto& c : cases["base_cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    std::vector<SequenceInput> batch(1);
    batch[0].ids = torch::tensor(Ids(c["input_ids"]), torch::kInt64);
    batch[0].num_outputs = -1;
    auto forward = (*model)->Forward(batch);
    ASSERT_TRUE(forward.ok()) << forward.status();
    auto logits = forward->cpu();
    auto want = (*expected)->Load(name + ".logits", torch::kFloat32);
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_EQ(logits.sizes(), want->sizes());
    float rel = ((logits - *want).abs().max() / want->abs().max()).item<float>();
    EXPECT_LT(rel, Tol(1e-4f));
    EXPECT_TRUE(torch::equal(logits.argmax(-1), want->argmax(-1)));
    // Final-norm hidden states (HF hidden_states[-1]).
    batch[0].cache = nullptr;
    auto hidden = (*model)->Forward(batch, ForwardOptions{nullptr, ForwardOutput::kHidden});
    ASSERT_TRUE(hidden.ok());
    auto want_h = (*expected)->Load(name + ".hidden_states", torch::kFloat32);
    ASSERT_TRUE(want_h.ok());
    EXPECT_LT((hidden->cpu() - (*want_h)[2]).abs().max().item<float>(), Tol(1e-5f));
  }
}

}  // namespace
}  // namespace icae
