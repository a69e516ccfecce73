// The optimisation loop shared by `icae train lm|pretrain|finetune`: AdamW, linear warm-up +
// cosine decay, gradient accumulation, global-norm clipping, bf16 autocast on CPU with fp32
// master weights, checkpoint + resume, progress lines and a periodic held-out loss.
//
// Losses are sums over target tokens; the loop divides by the number of target tokens of the
// whole step (all micro-batches), so a step's gradient does not depend on how its examples
// are split into micro-batches or packed into one batch.
#ifndef ICAE_COMMON_TRAIN_TRAINER_H_
#define ICAE_COMMON_TRAIN_TRAINER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace icae::train {

struct TrainOptions {
  int64_t steps = 1000;
  int64_t grad_accum = 1;       // micro-batches per optimiser step
  double lr = 1e-3;
  double min_lr_ratio = 0.1;    // cosine decays to lr · min_lr_ratio
  int64_t warmup_steps = 50;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double clip_norm = 1.0;       // <= 0: no clipping
  bool bf16_autocast = true;
  uint64_t seed = 1;
  std::string out_dir;          // checkpoint lives in <out_dir>/checkpoint
  int64_t save_every = 100;     // steps; 0 = only at the end
  int64_t eval_every = 100;     // steps; 0 = never (the end still evaluates)
  int64_t log_every = 10;
  bool resume = false;          // continue from <out_dir>/checkpoint
  double max_seconds = 0;       // > 0: stop (and save) after this much wall time
  int64_t stop_after_steps = 0;  // > 0: stop (and save) after this many steps of this run
  bool quiet = false;           // no progress lines (tests)
};

// Sum of the token losses of one micro-batch and how many target tokens it has.
struct LossSum {
  torch::Tensor sum;  // scalar, float32, with grad
  int64_t tokens = 0;
};

// Builds and evaluates micro-batch `micro` of optimiser step `step` (both from 0).
using MicroBatchFn = std::function<absl::StatusOr<LossSum>(int64_t step, int64_t micro)>;
// Mean held-out loss per token (called under no-grad).
using EvalFn = std::function<absl::StatusOr<double>()>;

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct TrainResult {
  int64_t steps_done = 0;       // optimiser steps completed in total (resume included)
  int64_t start_step = 0;       // where this run started
  std::vector<double> losses;   // training loss per step of this run
  std::vector<std::pair<int64_t, double>> heldout;  // (step, held-out loss)
  double tokens_per_second = 0;
  bool stopped_early = false;   // max_seconds reached
};

// Trains `params` (leaf tensors, requires_grad set here). Saves a checkpoint every
// save_every steps and at the end. Every error (a bad batch, a checkpoint that does not
// match) is returned, never thrown.
absl::StatusOr<TrainResult> RunTraining(const TrainOptions& options, const NamedTensors& params,
                                        const MicroBatchFn& micro_batch, const EvalFn& eval);

// Learning rate at `step` (warm-up, then cosine to lr · min_lr_ratio at `steps`).
double LearningRate(const TrainOptions& options, int64_t step);

// Sets CPU autocast to bf16 for its lifetime (restores the previous state), and CUDA autocast
// too where this LibTorch has CUDA (fp32 master weights, bf16 products on either device).
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool enabled);
  ~Bf16Autocast();
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool enabled_;
  bool prev_enabled_;
  at::ScalarType prev_dtype_;
  bool cuda_ = false;
  bool prev_cuda_enabled_ = false;
  at::ScalarType prev_cuda_dtype_ = at::kHalf;
};

}  // namespace icae::train

#endif  // ICAE_COMMON_TRAIN_TRAINER_H_
