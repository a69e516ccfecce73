// `icae train` end to end through the CLI on a tiny model: the stages chain through their
// output folders, and --train-base writes a new base beside the adapter.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

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

TEST_F(TrainCliTest, InitAdapterContinuesATrainedAdapterOnAWholeSegmentLengthList) {
  const std::string lm = TinyLm();
  std::string err;
  ASSERT_EQ(Icae(PretrainArgs(lm, dir_ + "/pt") + " --train-base", &err), 0) << err;
  // A learning rate that moves nothing: the continued adapter is the one it started from.
  ASSERT_EQ(Icae("train pretrain --model " + dir_ + "/pt --init-adapter " + dir_ +
                     "/pt/icae_adapter.safetensors --train-text " + text_ + " --heldout-text " +
                     text_ + " --out " + dir_ + "/pt2 --lengths 16,32 --cont-len 8 "
                     "--batch-size 4 --steps 2 --lr 1e-12 --warmup 0 --save-every 0 "
                     "--eval-every 1 --eval-len 16 --curve-csv " + dir_ + "/curve.csv --curve-passages 1 "
                     "--quiet --threads 1",
                 &err),
            0)
      << err;
  auto model = Transformer::Load(dir_ + "/pt");
  ASSERT_TRUE(model.ok()) << model.status();
  auto a = LoadIcaeAdapter(dir_ + "/pt/icae_adapter.safetensors", (*model)->config(), torch::kFloat32);
  auto b = LoadIcaeAdapter(dir_ + "/pt2/icae_adapter.safetensors", (*model)->config(), torch::kFloat32);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->config.mem_size, 4);
  EXPECT_EQ(b->config.mem_size, 4);
  EXPECT_LT((a->memory_embed - b->memory_embed).abs().max().item<double>(), 1e-4);
  EXPECT_GT(a->memory_embed.abs().max().item<double>(), 1e-3);
  // One learning-curve line per evaluation (steps 1, 2) under one header.
  std::ifstream curve(dir_ + "/curve.csv");
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(curve, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "step,ae_loss,bleu4_16,bleu4_64,ppl_full,ppl_slots,ppl_none");
  EXPECT_EQ(lines[1].substr(0, 2), "1,");
  EXPECT_EQ(lines[2].substr(0, 2), "2,");
}

// Noisy and self-fed teacher forcing: probabilities in [0, 1) run (the largest below 1, with
// both at once), 1 and negatives are usage errors naming the flag.
TEST_F(TrainCliTest, InputNoiseAndSelfFeedTrainWithinTheirBounds) {
  const std::string lm = TinyLm();
  std::string err;
  ASSERT_EQ(Icae(PretrainArgs(lm, dir_ + "/ok") + " --ae-input-noise 0.2 --ae-self-feed 0.99", &err), 0)
      << err;
  EXPECT_TRUE(fs::exists(dir_ + "/ok/icae_adapter.safetensors"));
  for (const char* flag : {"--ae-input-noise", "--ae-self-feed"}) {
    for (const char* value : {"1", "-0.1"}) {
      EXPECT_EQ(Icae(PretrainArgs(lm, dir_ + "/bad") + " " + flag + " " + value, &err), 2) << flag << value;
      EXPECT_NE(err.find(std::string(flag) + " must be in [0, 1)"), std::string::npos) << err;
    }
  }
  EXPECT_FALSE(fs::exists(dir_ + "/bad/icae_adapter.safetensors"));
}

TEST_F(TrainCliTest, LengthListAndCurveFlagsThatDoNotFitAreUsageErrors) {
  const std::string lm = TinyLm();
  std::string err;
  EXPECT_EQ(Icae(PretrainArgs(lm, dir_ + "/a") + " --lengths 16,1", &err), 2);
  EXPECT_NE(err.find("--lengths: '1'"), std::string::npos) << err;
  EXPECT_EQ(Icae(PretrainArgs(lm, dir_ + "/b") + " --lengths 16,x", &err), 2);
  EXPECT_EQ(Icae(PretrainArgs(lm, dir_ + "/c") + " --curve-csv " + dir_ + "/c.csv", &err), 2);
  EXPECT_NE(err.find("--curve-csv needs --heldout-text"), std::string::npos) << err;
  EXPECT_EQ(Icae(PretrainArgs(lm, dir_ + "/d") + " --init-adapter " + dir_ + "/missing", &err), 1);
  EXPECT_FALSE(fs::exists(dir_ + "/a/icae_adapter.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ + "/c.csv"));
}

TEST_F(TrainCliTest, FinetuneMixesContinuationAndRejectsRatiosOverOne) {
  const std::string lm = TinyLm();
  std::string err;
  ASSERT_EQ(Icae(PretrainArgs(lm, dir_ + "/pt"), &err), 0) << err;
  const std::string ft = "train finetune --model " + lm + " --adapter " + dir_ +
                         "/pt/icae_adapter.safetensors --train-jsonl " + dir_ +
                         "/ft.jsonl --train-text " + text_ + " --ae-min-len 8 --ae-max-len 16 "
                         "--cont-len 8 --batch-size 4 --steps 2 --save-every 0 --eval-every 0 "
                         "--quiet --threads 1 --out " + dir_;
  EXPECT_EQ(Icae(ft + "/ft --ae-ratio 0.25 --cont-ratio 0.5", &err), 0) << err;
  EXPECT_TRUE(fs::exists(dir_ + "/ft/icae_adapter.safetensors"));
  EXPECT_EQ(Icae(ft + "/bad --ae-ratio 0.6 --cont-ratio 0.5", &err), 2);
  EXPECT_NE(err.find("sum <= 1"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir_ + "/bad/icae_adapter.safetensors"));
  // Whole-segment lengths from a list, as pretraining's --lengths; a bad list writes nothing.
  EXPECT_EQ(Icae(ft + "/seg --ae-ratio 0.5 --cont-ratio 0.25 --ae-lengths 8,8,16", &err), 0) << err;
  EXPECT_TRUE(fs::exists(dir_ + "/seg/icae_adapter.safetensors"));
  EXPECT_EQ(Icae(ft + "/bad2 --ae-ratio 0.5 --ae-lengths 8,1", &err), 2);
  EXPECT_NE(err.find("--ae-lengths: '1'"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir_ + "/bad2/icae_adapter.safetensors"));
}

TEST_F(TrainCliTest, CompareScoresAReconstructionAgainstItsReference) {
  std::string out, err;
  std::ofstream(dir_ + "/ref.txt") << "The king walked into the garden with a lantern.\n";
  std::ofstream(dir_ + "/same.txt") << "The king walked into the garden with a lantern.";
  std::ofstream(dir_ + "/other.txt") << "A queen sat by the river.";
  const std::string cmp = IcaeBinary() + " compare --reference-file " + dir_ + "/ref.txt";
  ASSERT_EQ(RunCommand(cmp + " --hypothesis-file " + dir_ + "/same.txt", &out, &err), 0) << err;
  EXPECT_NE(out.find("token_accuracy=1.0000 bleu4=1.0000 exact=1"), std::string::npos) << out;
  ASSERT_EQ(RunCommand(cmp + " --hypothesis-file " + dir_ + "/other.txt", &out, &err), 0) << err;
  EXPECT_NE(out.find("bleu4=0.0000 exact=0"), std::string::npos) << out;
  EXPECT_EQ(RunCommand(cmp + " --hypothesis-file " + dir_ + "/missing.txt", &out, &err), 1);
  EXPECT_EQ(RunCommand(IcaeBinary() + " compare --reference-file " + dir_ + "/ref.txt", &out, &err), 2);
}

}  // namespace
}  // namespace icae
