// `icae train` end to end through the CLI on a tiny model: the stages chain through their
// output folders, and --train-base writes a new base beside the adapter.
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/icae/adapter.h"
#include "common/model/safetensors.h"
#include "common/model/transformer.h"
#include "common/util/paths.h"
#include "tests/test_util.h"

namespace icae {
namespace {

namespace fs = std::filesystem;
using ::icae::testing::IcaeBinary;
using ::icae::testing::RunCommand;

class TrainCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = DefaultModelDir() + "/tokenizer.model";
    if (!fs::exists(tokenizer_)) GTEST_SKIP() << "no tokenizer in " << DefaultModelDir();
    dir_ = ::icae::testing::MakeTempDir("train_cli");
    text_ = dir_ + "/train.txt";
    std::ofstream t(text_);
    for (int i = 0; i < 40; ++i) {
      t << "The king walked into the garden " << i << " times, and the queen followed him "
        << "with a lantern in her hand. Then they sat down by the river and talked.\n";
    }
    t.close();
    std::ofstream j(dir_ + "/ft.jsonl");
    for (int i = 0; i < 4; ++i) {
      j << R"({"input": "The king walked into the garden.", "prompt": "Who walked?", )"
        << R"("answer": "The king."})" << "\n";
    }
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Runs `icae <args>`; returns the exit code, stderr in *err.
  int Icae(const std::string& args, std::string* err) {
    std::string out;
    return RunCommand(IcaeBinary() + " " + args, &out, err);
  }

  std::string TinyLm() {
    const std::string lm = dir_ + "/lm";
    std::string err;
    EXPECT_EQ(Icae("train lm --tokenizer " + tokenizer_ + " --train-text " + text_ + " --out " +
                       lm + " --hidden 32 --layers 2 --heads 4 --intermediate 64 "
                       "--max-position 256 --seq-len 32 --batch-size 2 --steps 3 --save-every 0 "
                       "--eval-every 0 --quiet --threads 1",
                   &err),
              0)
        << err;
    return lm;
  }

  std::string PretrainArgs(const std::string& model, const std::string& out) {
    return "train pretrain --model " + model + " --train-text " + text_ + " --out " + out +
           " --mem-size 4 --rate 4 --lora-r 4 --lora-alpha 4 --min-len 8 --max-len 16 "
           "--cont-len 8 --batch-size 4 --steps 4 --save-every 0 --eval-every 0 --quiet "
           "--threads 1";
  }

  static torch::Tensor Embedding(const std::string& model_dir) {
    auto f = SafetensorsFile::Open(model_dir + "/model.safetensors");
    EXPECT_TRUE(f.ok()) << f.status();
    auto t = (*f)->Load("model.embed_tokens.weight", torch::kFloat32);
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  }

  std::string tokenizer_, dir_, text_;
};

TEST_F(TrainCliTest, PretrainWithFrozenBaseWritesOnlyTheAdapter) {
  const std::string lm = TinyLm();
  std::string err;
  ASSERT_EQ(Icae(PretrainArgs(lm, dir_ + "/pt"), &err), 0) << err;
  EXPECT_TRUE(fs::exists(dir_ + "/pt/icae_adapter.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ + "/pt/icae_config.json"));
  EXPECT_FALSE(fs::exists(dir_ + "/pt/model.safetensors"));
}

TEST_F(TrainCliTest, TrainBaseWritesANewBaseThatTheAdapterLoadsAgainst) {
  const std::string lm = TinyLm();
  std::string err;
  ASSERT_EQ(Icae(PretrainArgs(lm, dir_ + "/pt") + " --train-base --base-lm-ratio 0.25", &err), 0)
      << err;
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.model",
                        "icae_adapter.safetensors", "icae_config.json"}) {
    EXPECT_TRUE(fs::exists(dir_ + "/pt/" + f)) << f;
  }
  // The base moved (bf16 on disk, so compare with a tolerance well above rounding).
  EXPECT_GT((Embedding(dir_ + "/pt") - Embedding(lm)).abs().max().item<double>(), 1e-3);
  auto model = Transformer::Load(dir_ + "/pt");
  ASSERT_TRUE(model.ok()) << model.status();
  auto adapter = LoadIcaeAdapter(dir_ + "/pt/icae_adapter.safetensors", (*model)->config(),
                                 torch::kFloat32);
  ASSERT_TRUE(adapter.ok()) << adapter.status();

  // The next stage starts from that folder and can train the base again.
  ASSERT_EQ(Icae("train finetune --model " + dir_ + "/pt --adapter " + dir_ +
                     "/pt/icae_adapter.safetensors --train-jsonl " + dir_ +
                     "/ft.jsonl --train-text " + text_ + " --ae-ratio 0.25 --ae-min-len 8 "
                     "--ae-max-len 16 --base-lm-ratio 0.25 --train-base --out " + dir_ +
                     "/ft --batch-size 4 --steps 3 --save-every 0 --eval-every 0 --quiet "
                     "--threads 1",
                 &err),
            0)
      << err;
  EXPECT_TRUE(fs::exists(dir_ + "/ft/model.safetensors"));
  EXPECT_GT((Embedding(dir_ + "/ft") - Embedding(dir_ + "/pt")).abs().max().item<double>(), 1e-3);
}

TEST_F(TrainCliTest, TrainBaseFlagsThatDoNotFitAreUsageErrors) {
  const std::string lm = TinyLm();
  std::string err;
  EXPECT_EQ(Icae(PretrainArgs(lm, dir_ + "/a") + " --base-lm-ratio 0.25", &err), 2);
  EXPECT_NE(err.find("--base-lm-ratio needs --train-base"), std::string::npos) << err;
  EXPECT_EQ(Icae(PretrainArgs(lm, dir_ + "/b") + " --train-base --base-lm-ratio 1", &err), 2);
  EXPECT_NE(err.find("--base-lm-ratio must be in [0, 1)"), std::string::npos) << err;
  EXPECT_EQ(Icae(PretrainArgs(lm, dir_ + "/c") + " --train-base --dtype bfloat16", &err), 2);
  EXPECT_NE(err.find("float32"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir_ + "/a/icae_adapter.safetensors"));
}

}  // namespace
}  // namespace icae
