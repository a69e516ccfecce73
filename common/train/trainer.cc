#include "common/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model/safetensors.h"
#include "common/util/mapped_file.h"
#include "common/util/status_macros.h"

namespace icae::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string FormatDuration(double s) {
  if (s < 0 || !std::isfinite(s)) return "?";
  const int64_t t = static_cast<int64_t>(s);
  if (t >= 3600) return absl::StrFormat("%dh%02dm", t / 3600, (t % 3600) / 60);
  if (t >= 60) return absl::StrFormat("%dm%02ds", t / 60, t % 60);
  return absl::StrFormat("%ds", t);
}

absl::Status SaveCheckpoint(const std::string& dir, const NamedTensors& params,
                            torch::optim::AdamW& opt, int64_t step, int64_t tokens) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  NamedTensors fp32;
  for (const auto& [name, t] : params) fp32.emplace_back(name, t.detach().to(torch::kFloat32));
  RETURN_IF_ERROR(WriteSafetensors(dir + "/params.safetensors", fp32));
  try {
    torch::serialize::OutputArchive archive;
    opt.save(archive);
    archive.save_to(dir + "/optimizer.pt.tmp");
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("saving the optimiser state: ", e.what()));
  }
  fs::rename(dir + "/optimizer.pt.tmp", dir + "/optimizer.pt", ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot write ", dir, "/optimizer.pt"));
  nlohmann::json j;
  j["step"] = step;
  j["tokens"] = tokens;
  return WriteFileAtomically(dir + "/state.json", j.dump(2) + "\n");
}

absl::Status LoadCheckpoint(const std::string& dir, const NamedTensors& params,
                            torch::optim::AdamW& opt, int64_t* step, int64_t* tokens) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(dir + "/state.json"));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.contains("step")) {
    return absl::DataLossError(absl::StrCat(dir, "/state.json is not a checkpoint state"));
  }
  *step = j["step"].get<int64_t>();
  *tokens = j.value("tokens", int64_t{0});
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(dir + "/params.safetensors"));
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : params) {
    if (!file->Has(name)) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, ": checkpoint lacks '", name, "' (different model or stage?)"));
    }
    ASSIGN_OR_RETURN(torch::Tensor v, file->Load(name, torch::kFloat32));
    if (v.sizes() != t.sizes()) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, ": '", name, "' has shape ", c10::str(v.sizes()), ", this run needs ",
          c10::str(t.sizes())));
    }
    t.copy_(v);
  }
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(dir + "/optimizer.pt");
    opt.load(archive);
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(dir, "/optimizer.pt: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// LibTorch 2.4 named the autocast switches by device type and deprecated the per-device names
// that 1.13 has; each build uses its own.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool AutocastEnabled(at::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
void SetAutocastEnabled(at::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
at::ScalarType AutocastDtype(at::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
void SetAutocastDtype(at::DeviceType d, at::ScalarType t) { at::autocast::set_autocast_dtype(d, t); }
#else
bool AutocastEnabled(at::DeviceType d) {
  return d == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
void SetAutocastEnabled(at::DeviceType d, bool on) {
  if (d == at::kCUDA) {
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_cpu_enabled(on);
  }
}
at::ScalarType AutocastDtype(at::DeviceType d) {
  return d == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void SetAutocastDtype(at::DeviceType d, at::ScalarType t) {
  if (d == at::kCUDA) {
    at::autocast::set_autocast_gpu_dtype(t);
  } else {
    at::autocast::set_autocast_cpu_dtype(t);
  }
}
#endif

}  // namespace

Bf16Autocast::Bf16Autocast(bool enabled) : enabled_(enabled) {
  prev_enabled_ = AutocastEnabled(at::kCPU);
  prev_dtype_ = AutocastDtype(at::kCPU);
  // Only where CUDA exists: a CPU-only process keeps exactly the CPU autocast state it had.
  cuda_ = enabled_ && at::hasCUDA();
  if (cuda_) {
    prev_cuda_enabled_ = AutocastEnabled(at::kCUDA);
    prev_cuda_dtype_ = AutocastDtype(at::kCUDA);
  }
  if (enabled_) {
    SetAutocastEnabled(at::kCPU, true);
    SetAutocastDtype(at::kCPU, at::kBFloat16);
  }
  if (cuda_) {
    SetAutocastEnabled(at::kCUDA, true);
    SetAutocastDtype(at::kCUDA, at::kBFloat16);
  }
}

Bf16Autocast::~Bf16Autocast() {
  if (!enabled_) return;
  SetAutocastEnabled(at::kCPU, prev_enabled_);
  SetAutocastDtype(at::kCPU, prev_dtype_);
  if (cuda_) {
    SetAutocastEnabled(at::kCUDA, prev_cuda_enabled_);
    SetAutocastDtype(at::kCUDA, prev_cuda_dtype_);
  }
  // Autocast caches bf16 copies of leaf weights; they are stale once the weights change.
  at::autocast::clear_cache();
}

double LearningRate(const TrainOptions& o, int64_t step) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) {
    return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  const double span = std::max<int64_t>(1, o.steps - o.warmup_steps);
  const double p = std::min(1.0, static_cast<double>(step - o.warmup_steps) / span);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * p));
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine);
}

absl::StatusOr<TrainResult> RunTraining(const TrainOptions& o, const NamedTensors& params,
                                        const MicroBatchFn& micro_batch, const EvalFn& eval) {
  if (params.empty()) return absl::InvalidArgumentError("nothing to train");
  if (o.steps <= 0 || o.grad_accum <= 0) {
    return absl::InvalidArgumentError("--steps and --grad-accum must be positive");
  }
  if (o.out_dir.empty()) return absl::InvalidArgumentError("an output directory is required");
  std::vector<torch::Tensor> tensors;
  for (const auto& [name, t] : params) {
    if (t.scalar_type() != torch::kFloat32) {
      return absl::InvalidArgumentError(
          absl::StrCat("trainable tensor '", name, "' must be float32 (master weights)"));
    }
    t.set_requires_grad(true);
    tensors.push_back(t);
  }
  // Decay only matrices (not norms), as usual for transformers.
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& t : tensors) (t.dim() >= 2 ? decay : no_decay).push_back(t);
  auto opts = torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(opts).weight_decay(o.weight_decay)));
  if (!no_decay.empty()) {
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                      torch::optim::AdamWOptions(opts).weight_decay(0.0)));
  }
  torch::optim::AdamW opt(groups, opts);

  const std::string ckpt = o.out_dir + "/checkpoint";
  TrainResult result;
  int64_t step = 0, total_tokens = 0;
  if (o.resume) {
    if (!fs::exists(ckpt + "/state.json")) {
      return absl::NotFoundError(absl::StrCat("--resume: no checkpoint in ", ckpt));
    }
    RETURN_IF_ERROR(LoadCheckpoint(ckpt, params, opt, &step, &total_tokens));
    if (!o.quiet) std::cerr << "resumed from " << ckpt << " at step " << step << "\n";
  }
  result.start_step = step;
  const auto t0 = Clock::now();
  int64_t run_tokens = 0;
  double loss_window = 0;
  int64_t window_steps = 0;
  auto seconds = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  auto run_eval = [&](int64_t at_step) -> absl::Status {
    if (!eval) return absl::OkStatus();
    torch::NoGradGuard ng;
    absl::StatusOr<double> h;
    {
      Bf16Autocast ac(o.bf16_autocast);
      h = eval();
    }
    if (!h.ok()) return h.status();
    result.heldout.emplace_back(at_step, *h);
    if (!o.quiet) {
      std::cerr << absl::StrFormat("step %d heldout_loss %.4f ppl %.2f\n", at_step, *h,
                                   std::exp(*h));
    }
    return absl::OkStatus();
  };

  while (step < o.steps) {
    const double lr = LearningRate(o, step);
    for (auto& g : opt.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    }
    opt.zero_grad();
    // Each micro-batch's summed loss is back-propagated at once (freeing its graph); the
    // gradients are divided by the step's total target-token count afterwards.
    int64_t step_tokens = 0;
    double step_loss = 0;
    for (int64_t m = 0; m < o.grad_accum; ++m) {
      absl::StatusOr<LossSum> ls;
      {
        Bf16Autocast ac(o.bf16_autocast);
        ls = micro_batch(step, m);
      }
      if (!ls.ok()) return ls.status();
      if (ls->tokens <= 0) continue;
      ls->sum.backward();
      step_tokens += ls->tokens;
      step_loss += ls->sum.item<double>();
    }
    if (step_tokens == 0) return absl::InvalidArgumentError("a training step had no target tokens");
    {
      torch::NoGradGuard ng;
      for (auto& t : tensors) {
        if (t.grad().defined()) t.grad().div_(static_cast<double>(step_tokens));
      }
    }
    if (o.clip_norm > 0) torch::nn::utils::clip_grad_norm_(tensors, o.clip_norm);
    opt.step();
    const double loss = step_loss / static_cast<double>(step_tokens);
    if (!std::isfinite(loss)) {
      return absl::InternalError(absl::StrCat("loss is not finite at step ", step,
                                              " (lower --lr?)"));
    }
    result.losses.push_back(loss);
    run_tokens += step_tokens;
    total_tokens += step_tokens;
    loss_window += loss;
    ++window_steps;
    ++step;
    const double el = seconds();
    result.tokens_per_second = run_tokens / std::max(1e-9, el);
    if (!o.quiet && (step % std::max<int64_t>(1, o.log_every) == 0 || step == o.steps)) {
      const double per_step = el / static_cast<double>(step - result.start_step);
      std::cerr << absl::StrFormat(
          "step %d/%d loss %.4f lr %.2e tok/s %.0f elapsed %s eta %s\n", step, o.steps,
          loss_window / window_steps, lr, result.tokens_per_second, FormatDuration(el),
          FormatDuration(per_step * static_cast<double>(o.steps - step)));
      loss_window = 0;
      window_steps = 0;
    }
    const bool out_of_time = (o.max_seconds > 0 && el >= o.max_seconds) ||
                             (o.stop_after_steps > 0 && step - result.start_step >= o.stop_after_steps);
    if (o.eval_every > 0 && step % o.eval_every == 0 && step < o.steps) {
      RETURN_IF_ERROR(run_eval(step));
    }
    if ((o.save_every > 0 && step % o.save_every == 0) || step == o.steps || out_of_time) {
      RETURN_IF_ERROR(SaveCheckpoint(ckpt, params, opt, step, total_tokens));
    }
    if (out_of_time && step < o.steps) {
      result.stopped_early = true;
      if (!o.quiet) std::cerr << "stopping early at step " << step << "; checkpoint saved\n";
      break;
    }
  }
  result.steps_done = step;
  if (step > result.start_step || o.eval_every > 0) RETURN_IF_ERROR(run_eval(step));
  return result;
}

}  // namespace icae::train
