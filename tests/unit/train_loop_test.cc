// The optimisation loop: loss goes down, checkpoint → resume continues identically, the
// schedule, and gradient accumulation = one big batch.
#include <filesystem>

#include <gtest/gtest.h>

#include "common/train/objectives.h"
#include "common/train/text_data.h"
#include "common/train/trainer.h"
#include "tests/test_util.h"
#include "tests/unit/train_testing.h"

namespace icae::train {
namespace {

using ::icae::testing::MakeTempDir;
using ::icae::testing::PatternStream;
using ::icae::testing::TinyConfig;

struct LmRun {
  std::unique_ptr<Transformer> model;
  std::vector<int32_t> stream;
};

LmRun NewLm(uint64_t seed) {
  LmRun r;
  ModelConfig c = TinyConfig();
  r.model = std::make_unique<Transformer>(c, RandomWeights(c, torch::kFloat32, seed));
  r.stream = PatternStream(4000, c.vocab_size);
  return r;
}

MicroBatchFn LmBatches(LmRun& r, uint64_t seed, int64_t batch, int64_t len) {
  return [&r, seed, batch, len](int64_t step, int64_t m) -> absl::StatusOr<LossSum> {
    auto rng = StepRng(seed, step, m);
    std::vector<std::vector<int64_t>> seqs;
    for (int64_t b = 0; b < batch; ++b) seqs.push_back(RandomWindow(r.stream, len, rng));
    return LmLossSum(*r.model, seqs);
  };
}

TrainOptions Quick(const std::string& dir, int64_t steps) {
  TrainOptions o;
  o.steps = steps;
  o.lr = 1e-2;
  o.warmup_steps = 3;
  o.out_dir = dir;
  o.save_every = 0;
  o.eval_every = 0;
  o.quiet = true;
  o.seed = 7;
  return o;
}

TEST(TrainLoopTest, LmLossDecreasesWithBf16Autocast) {
  LmRun r = NewLm(1);
  const std::string dir = MakeTempDir("train_loop");
  TrainOptions o = Quick(dir, 40);
  o.bf16_autocast = true;
  auto res = RunTraining(o, ModelParameters(*r.model), LmBatches(r, 7, 4, 33), nullptr);
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_EQ(res->losses.size(), 40u);
  EXPECT_GT(res->losses.front(), 3.5);  // ~ln(48) at the start
  double last = 0;
  for (int i = 35; i < 40; ++i) last += res->losses[i] / 5;
  EXPECT_LT(last, 0.6 * res->losses.front()) << "loss did not decrease enough";
  EXPECT_TRUE(std::filesystem::exists(dir + "/checkpoint/params.safetensors"));
  std::filesystem::remove_all(dir);
}

TEST(TrainLoopTest, CheckpointResumeContinuesIdentically) {
  const std::string full_dir = MakeTempDir("train_full"), split_dir = MakeTempDir("train_split");
  // Uninterrupted: 16 steps.
  LmRun a = NewLm(3);
  TrainOptions o = Quick(full_dir, 16);
  o.bf16_autocast = false;
  o.grad_accum = 2;
  auto full = RunTraining(o, ModelParameters(*a.model), LmBatches(a, 7, 2, 17), nullptr);
  ASSERT_TRUE(full.ok()) << full.status();
  // Interrupted after 7 steps, then resumed in a fresh process state (new model object with
  // different random weights: everything must come from the checkpoint).
  LmRun b = NewLm(3);
  o.out_dir = split_dir;
  o.stop_after_steps = 7;
  auto first = RunTraining(o, ModelParameters(*b.model), LmBatches(b, 7, 2, 17), nullptr);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->stopped_early);
  EXPECT_EQ(first->steps_done, 7);
  LmRun c = NewLm(99);
  o.stop_after_steps = 0;
  o.resume = true;
  auto second = RunTraining(o, ModelParameters(*c.model), LmBatches(c, 7, 2, 17), nullptr);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->start_step, 7);
  ASSERT_EQ(second->losses.size(), 9u);
  for (size_t i = 0; i < 9; ++i) {
    EXPECT_NEAR(second->losses[i], full->losses[7 + i], 1e-5) << "step " << 7 + i;
  }
  auto pa = ModelParameters(*a.model), pc = ModelParameters(*c.model);
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::allclose(pa[i].second, pc[i].second, 1e-5, 1e-6)) << pa[i].first;
  }
  std::filesystem::remove_all(full_dir);
  std::filesystem::remove_all(split_dir);
}

TEST(TrainLoopTest, ResumeWithoutCheckpointIsNotFound) {
  LmRun r = NewLm(1);
  const std::string dir = MakeTempDir("train_nockpt");
  TrainOptions o = Quick(dir, 2);
  o.resume = true;
  auto res = RunTraining(o, ModelParameters(*r.model), LmBatches(r, 7, 1, 9), nullptr);
  EXPECT_EQ(res.status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(TrainLoopTest, WarmupThenCosine) {
  TrainOptions o;
  o.steps = 110;
  o.warmup_steps = 10;
  o.lr = 1.0;
  o.min_lr_ratio = 0.1;
  EXPECT_NEAR(LearningRate(o, 0), 0.1, 1e-12);
  EXPECT_NEAR(LearningRate(o, 9), 1.0, 1e-12);
  EXPECT_NEAR(LearningRate(o, 10), 1.0, 1e-12);
  EXPECT_NEAR(LearningRate(o, 60), 0.55, 1e-12);
  EXPECT_NEAR(LearningRate(o, 110), 0.1, 1e-12);
}

TEST(TrainLoopTest, LmBatchGradientEqualsSumOfSingles) {
  ModelConfig c = TinyConfig();
  Transformer model(c, RandomWeights(c, torch::kFloat32, 5));
  auto params = ModelParameters(model);
  for (auto& [n, t] : params) t.set_requires_grad(true);
  auto stream = PatternStream(500, c.vocab_size);
  std::vector<std::vector<int64_t>> seqs;
  for (int64_t k = 0; k < 4; ++k) seqs.push_back(SpacedWindow(stream, 9 + 5 * k, k, 4));
  auto grads = [&](const std::vector<std::vector<int64_t>>& batch) {
    for (auto& [n, t] : params) t.mutable_grad() = torch::Tensor();
    auto ls = LmLossSum(model, batch);
    EXPECT_TRUE(ls.ok());
    ls->sum.backward();
    std::vector<torch::Tensor> g;
    for (auto& [n, t] : params) g.push_back(t.grad().clone());
    return g;
  };
  auto together = grads(seqs);
  std::vector<torch::Tensor> summed;
  for (const auto& s : seqs) {
    auto g = grads({s});
    if (summed.empty()) {
      summed = g;
    } else {
      for (size_t i = 0; i < g.size(); ++i) summed[i] += g[i];
    }
  }
  for (size_t i = 0; i < summed.size(); ++i) {
    EXPECT_TRUE(torch::allclose(together[i], summed[i], 1e-4, 1e-6)) << params[i].first;
  }
}

}  // namespace
}  // namespace icae::train
