// icae train lm|pretrain|finetune — training on LibTorch autograd (common/train).
//   lm        a base causal LM from scratch (the embedded default model's base)
//   pretrain  an ICAE adapter (LoRA + memory_token_embed, base frozen): autoencoding mixed
//             with continuation at --lm-ratio, random windows over a text corpus
//   finetune  an ICAE adapter on instruction JSONL {"input","prompt","answer"}, loss on the
//             answer only, the instruct template
// pretrain and finetune take --train-base: the base model's weights train too and the stage
// writes a new model folder beside the adapter (a small base trained from scratch does not
// read slots unless it learns to; a large pretrained base is kept frozen, as in the paper).
// --base-lm-ratio then mixes plain LM windows into every batch so the base stays a language
// model without slots.
// All stages: --steps --batch-size --grad-accum --lr --warmup --min-lr-ratio --weight-decay
// --clip --seed --save-every --eval-every --log-every --max-minutes --stop-after --resume --fp32
// --threads --device.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/icae/adapter.h"
#include "common/model/config.h"
#include "common/model/cpu_gemv.h"
#include "common/model/safetensors.h"
#include "common/model/transformer.h"
#include "common/tokenizer/tokenizer.h"
#include "common/train/evaluate.h"
#include "common/train/objectives.h"
#include "common/train/text_data.h"
#include "common/train/trainer.h"
#include "common/util/mapped_file.h"
#include "common/util/status_macros.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

namespace fs = std::filesystem;
using train::IcaeExample;
using train::IcaeObjective;

const std::set<std::string>& LoopFlags() {
  static const std::set<std::string> f = {
      "out", "steps", "batch-size", "grad-accum", "lr", "warmup", "min-lr-ratio",
      "weight-decay", "clip", "seed", "save-every", "eval-every", "log-every", "max-minutes",
      "stop-after", "threads", "dtype", "device"};
  return f;
}

absl::StatusOr<train::TrainOptions> LoopOptions(const Args& a, int64_t def_steps, double def_lr) {
  train::TrainOptions o;
  o.out_dir = a.Get("out");
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out DIR is required");
  ASSIGN_OR_RETURN(o.steps, a.GetInt("steps", def_steps));
  ASSIGN_OR_RETURN(o.grad_accum, a.GetInt("grad-accum", 1));
  ASSIGN_OR_RETURN(o.lr, a.GetDouble("lr", def_lr));
  ASSIGN_OR_RETURN(o.warmup_steps, a.GetInt("warmup", std::min<int64_t>(100, o.steps / 10)));
  ASSIGN_OR_RETURN(o.min_lr_ratio, a.GetDouble("min-lr-ratio", 0.1));
  ASSIGN_OR_RETURN(o.weight_decay, a.GetDouble("weight-decay", 0.1));
  ASSIGN_OR_RETURN(o.clip_norm, a.GetDouble("clip", 1.0));
  ASSIGN_OR_RETURN(int64_t seed, a.GetInt("seed", 1));
  o.seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(o.save_every, a.GetInt("save-every", 100));
  ASSIGN_OR_RETURN(o.eval_every, a.GetInt("eval-every", 100));
  ASSIGN_OR_RETURN(o.log_every, a.GetInt("log-every", 10));
  ASSIGN_OR_RETURN(double minutes, a.GetDouble("max-minutes", 0));
  o.max_seconds = minutes * 60.0;
  // Stops after N steps of this run (the schedule still spans --steps): replays a run that
  // a time limit cut short, step for step.
  ASSIGN_OR_RETURN(o.stop_after_steps, a.GetInt("stop-after", 0));
  o.resume = a.Has("resume");
  // bf16 autocast only where bf16 products are fast: on a CPU without AVX-512 BF16, LibTorch
  // 1.13 multiplies bf16 matrices in a reference loop (the default model's first 25 steps had
  // not finished after 10 minutes on an AVX2 EPYC), while float32 ones go to OpenBLAS.
  ASSIGN_OR_RETURN(torch::Device device, DeviceFromArgs(a));
  o.bf16_autocast = !a.Has("fp32") && (!device.is_cpu() || CpuBf16GemvAvailable());
  if (!a.Has("fp32") && !o.bf16_autocast) {
    std::cerr << "train: no fast bf16 products on this CPU (no AVX-512 BF16): training in float32\n";
  }
  o.quiet = a.Has("quiet");
  return o;
}

// Appends one JSON line per run (losses, held-out curve, speed) to <out>/train_log.jsonl.
void AppendRunLog(const std::string& out_dir, const std::string& stage,
                  const train::TrainOptions& o, const train::TrainResult& r) {
  nlohmann::json j;
  j["stage"] = stage;
  j["start_step"] = r.start_step;
  j["steps_done"] = r.steps_done;
  j["steps_planned"] = o.steps;
  j["tokens_per_second"] = r.tokens_per_second;
  j["bf16_autocast"] = o.bf16_autocast;
  j["losses"] = r.losses;
  j["heldout"] = r.heldout;
  std::ofstream(out_dir + "/train_log.jsonl", std::ios::app) << j.dump() << "\n";
}

std::vector<int64_t> ToInt64(const std::vector<int32_t>& v) {
  return std::vector<int64_t>(v.begin(), v.end());
}

// The stage's last stdout line: steps, last training loss, last held-out loss, speed.
void PrintSummary(const train::TrainResult& r, const char* heldout_label) {
  std::cout << "steps=" << r.steps_done << " final_loss="
            << (r.losses.empty() ? 0.0 : r.losses.back()) << " " << heldout_label << "="
            << (r.heldout.empty() ? 0.0 : r.heldout.back().second)
            << " tokens_per_second=" << r.tokens_per_second
            << (r.stopped_early ? " (stopped at the time limit; --resume continues)" : "")
            << "\n";
}

// Writes a model folder in the HF layout: bf16 weights (small; the loader converts at load),
// config.json and a copy of the tokenizer.
absl::Status SaveModelDir(const Transformer& model, const std::string& tokenizer_file,
                          const std::string& out_dir) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& [n, t] : model.NamedWeights()) {
    named.emplace_back(n, t.detach().to(torch::kBFloat16).contiguous());
  }
  RETURN_IF_ERROR(
      WriteSafetensors(out_dir + "/model.safetensors", named, {{"format", "pt"}}));
  RETURN_IF_ERROR(WriteFileAtomically(out_dir + "/config.json", ModelConfigToJson(model.config())));
  std::error_code ec;
  const std::string dst = out_dir + "/" + fs::path(tokenizer_file).filename().string();
  if (fs::equivalent(tokenizer_file, dst, ec)) return absl::OkStatus();
  fs::copy_file(tokenizer_file, dst, fs::copy_options::overwrite_existing, ec);
  if (ec) return absl::InternalError("cannot copy the tokenizer: " + ec.message());
  return absl::OkStatus();
}

// ---------------------------------------------------------------- train lm

int TrainLm(const std::vector<std::string>& argv) {
  const std::string cmd = "train lm";
  std::set<std::string> flags = {"tokenizer", "train-text", "heldout-text", "hidden", "layers",
                                 "heads", "kv-heads", "intermediate", "max-position", "seq-len",
                                 "eval-windows", "copy-ratio"};
  flags.insert(LoopFlags().begin(), LoopFlags().end());
  auto args = Args::Parse(argv, flags, {"resume", "fp32", "quiet"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("tokenizer") || !args->Has("train-text") || !args->Has("out")) {
    return Fail(cmd, "usage: icae train lm --tokenizer tokenizer.model --train-text F "
                     "[--heldout-text F] --out DIR [--hidden 256 --layers 4 --heads 4 "
                     "--intermediate 704 --seq-len 512 --batch-size 8 --steps N …]", 2);
  }
  if (auto st = ConfigureRuntimeFromArgs(*args); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  auto opts = LoopOptions(*args, 1000, 1e-3);
  if (!opts.ok()) return Fail(cmd, std::string(opts.status().message()), 2);
  auto tok = Tokenizer::Load(args->Get("tokenizer"));
  if (!tok.ok()) return Fail(cmd, std::string(tok.status().message()));
  ModelConfig c;
  c.model_type = "llama";
  NumericFlags num(*args);
  auto geti = [&](const char* f, int64_t d) { return num.Int(f, d); };
  for (const char* f : {"hidden", "layers", "heads", "kv-heads", "intermediate", "max-position",
                        "seq-len", "batch-size", "eval-windows"}) {
    if (auto v = args->GetInt(f, 1); !v.ok() || *v <= 0) {
      return Fail(cmd, absl::StrCat("--", f, " must be a positive integer"), 2);
    }
  }
  c.hidden_size = geti("hidden", 256);
  c.num_hidden_layers = geti("layers", 4);
  c.num_attention_heads = geti("heads", 4);
  c.num_key_value_heads = geti("kv-heads", c.num_attention_heads);
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.intermediate_size = geti("intermediate", 704);
  c.max_position_embeddings = geti("max-position", 1024);
  c.vocab_size = (*tok)->vocab_size();
  c.tie_word_embeddings = true;
  c.bos_token_id = (*tok)->bos_id();
  c.eos_token_id = (*tok)->eos_id();
  c.rms_norm_eps = 1e-5;
  if (c.hidden_size % c.num_attention_heads != 0 || c.num_attention_heads % c.num_key_value_heads != 0) {
    return Fail(cmd, "--hidden must be a multiple of --heads, --heads a multiple of --kv-heads", 2);
  }
  const int64_t seq_len = geti("seq-len", 512), batch = geti("batch-size", 8);
  const int64_t eval_windows = geti("eval-windows", 16);
  // Share of sequences that are a window followed by its repetition: small LMs learn in-context
  // copying (induction heads) from these quickly, and ICAE's frozen decoder needs it to read
  // anything back from memory slots.
  const double copy_ratio = num.Double("copy-ratio", 0.0);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);

  auto stream = train::TokenizeTextFile(**tok, args->Get("train-text"));
  if (!stream.ok()) return Fail(cmd, std::string(stream.status().message()));
  std::vector<int32_t> heldout;
  if (args->Has("heldout-text")) {
    auto h = train::TokenizeTextFile(**tok, args->Get("heldout-text"));
    if (!h.ok()) return Fail(cmd, std::string(h.status().message()));
    heldout = std::move(*h);
  }
  std::cerr << "train lm: " << stream->size() << " training tokens, " << heldout.size()
            << " held-out tokens\n";

  auto device = DeviceFromArgs(*args);  // checked by ConfigureRuntimeFromArgs
  Transformer model(c, RandomWeights(c, torch::kFloat32, opts->seed, *device));
  std::cerr << "model: " << model.NumParameters() << " parameters, vocab " << c.vocab_size << "\n";
  const int64_t bos = c.bos_token_id;
  auto micro = [&](int64_t step, int64_t m) -> absl::StatusOr<train::LossSum> {
    auto rng = train::StepRng(opts->seed, step, m);
    std::vector<std::vector<int64_t>> seqs;
    std::uniform_real_distribution<double> u(0, 1);
    for (int64_t b = 0; b < batch; ++b) {
      std::vector<int64_t> w;
      if (copy_ratio > 0 && u(rng) < copy_ratio) {
        w = train::RandomWindow(*stream, (seq_len - 1) / 2, rng);
        const std::vector<int64_t> first(w);
        w.insert(w.end(), first.begin(), first.end());
      } else {
        w = train::RandomWindow(*stream, seq_len - 1, rng);
      }
      w.insert(w.begin(), bos);
      seqs.push_back(std::move(w));
    }
    return train::LmLossSum(model, seqs);
  };
  train::EvalFn eval;
  if (!heldout.empty()) {
    eval = [&]() -> absl::StatusOr<double> {
      double sum = 0;
      int64_t n = 0;
      for (int64_t k = 0; k < eval_windows; ++k) {
        auto w = train::SpacedWindow(heldout, seq_len - 1, k, eval_windows);
        w.insert(w.begin(), bos);
        ASSIGN_OR_RETURN(auto ls, train::LmLossSum(model, {w}));
        sum += ls.sum.item<double>();
        n += ls.tokens;
      }
      return sum / static_cast<double>(n);
    };
  }
  std::error_code ec;
  fs::create_directories(opts->out_dir, ec);
  auto result = train::RunTraining(*opts, train::ModelParameters(model), micro, eval);
  if (!result.ok()) return Fail(cmd, std::string(result.status().message()));
  AppendRunLog(opts->out_dir, "lm", *opts, *result);
  if (auto st = SaveModelDir(model, args->Get("tokenizer"), opts->out_dir); !st.ok()) {
    return Fail(cmd, std::string(st.message()));
  }
  PrintSummary(*result, "heldout_loss");
  return 0;
}

// ---------------------------------------------------------------- ICAE stages

struct IcaeSetup {
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string tokenizer_file;
  bool train_base = false;      // --train-base
  double base_lm_ratio = 0;     // --base-lm-ratio (only with --train-base)
};

// Exit code 2 for flags that do not fit together, 1 for everything else.
int UsageCode(const absl::Status& st) {
  return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<IcaeSetup> LoadBase(const Args& a) {
  IcaeSetup s;
  ASSIGN_OR_RETURN(torch::Dtype dtype, DtypeFromArgs(a, "float32"));
  s.train_base = a.Has("train-base");
  ASSIGN_OR_RETURN(s.base_lm_ratio, a.GetDouble("base-lm-ratio", 0.0));
  if (s.base_lm_ratio < 0 || s.base_lm_ratio >= 1) {
    return absl::InvalidArgumentError("--base-lm-ratio must be in [0, 1)");
  }
  if (s.base_lm_ratio > 0 && !s.train_base) {
    return absl::InvalidArgumentError("--base-lm-ratio needs --train-base");
  }
  if (s.train_base && dtype != torch::kFloat32) {
    return absl::InvalidArgumentError("--train-base trains float32 master weights: drop --dtype");
  }
  ModelLoadOptions lo;
  lo.dtype = dtype;  // a bf16 frozen base works too (autocast casts the fp32 adapter)
  lo.weights_in_place = false;  // trained weights are written, and the trainer reads the stacked layout
  ASSIGN_OR_RETURN(lo.device, DeviceFromArgs(a));
  const std::string dir = a.Get("model");
  if (dir.empty()) return absl::InvalidArgumentError("--model DIR is required");
  ASSIGN_OR_RETURN(s.model, Transformer::Load(dir, lo));
  ASSIGN_OR_RETURN(s.tokenizer, Tokenizer::LoadFromModelDir(dir));
  for (const char* name : {"tokenizer.model", "tokenizer.bin"}) {
    if (fs::exists(dir + "/" + name)) {
      s.tokenizer_file = dir + "/" + name;
      break;
    }
  }
  return s;
}

// The stage's trainable tensors: the adapter's, plus the base model's with --train-base.
train::NamedTensors TrainableParameters(IcaeSetup& s, IcaeAdapter& adapter) {
  train::NamedTensors p = train::AdapterParameters(adapter);
  if (s.train_base) {
    for (auto& nt : train::ModelParameters(*s.model)) p.push_back(nt);
  }
  return p;
}

// With --train-base: `examples` plus plain LM windows drawn at --base-lm-ratio (each in place
// of an ICAE example, `len` ids), in one loss sum.
absl::StatusOr<train::LossSum> StageLoss(const IcaeSetup& s, const IcaeAdapter& adapter,
                                         const std::vector<IcaeExample>& examples,
                                         const std::vector<std::vector<int64_t>>& lm_windows) {
  train::LossSum total;
  if (!examples.empty()) {
    ASSIGN_OR_RETURN(total, train::IcaeLossSum(*s.model, adapter, examples));
  }
  if (!lm_windows.empty()) {
    ASSIGN_OR_RETURN(auto lm, train::LmLossSum(*s.model, lm_windows));
    total.sum = total.sum.defined() ? total.sum + lm.sum : lm.sum;
    total.tokens += lm.tokens;
  }
  return total;
}

// Saves what the stage trained: the adapter, and the base model folder with --train-base.
absl::Status SaveStage(const IcaeSetup& s, const IcaeAdapter& adapter, const std::string& out_dir) {
  RETURN_IF_ERROR(train::SaveTrainedAdapter(adapter, out_dir + "/icae_adapter.safetensors"));
  if (!s.train_base) return absl::OkStatus();
  if (s.tokenizer_file.empty()) return absl::FailedPreconditionError("the base has no tokenizer file");
  return SaveModelDir(*s.model, s.tokenizer_file, out_dir);
}

// One learning-curve point: step, held-out AE loss (teacher forcing), greedy BLEU-4 of
// reconstructions of `len` (one segment) and 4·len tokens, continuation perplexity of 64
// tokens after `len` with the full context, its slots and none. Writes the header (with the
// lengths in the column names) when the file is new.
absl::Status AppendCurvePoint(const std::string& path, int64_t step, double ae_loss,
                              const Transformer& model, const IcaeAdapter& adapter,
                              const std::vector<int32_t>& heldout, int64_t len, int64_t passages) {
  ASSIGN_OR_RETURN(auto ae1, train::EvalAutoencode(model, adapter, heldout, len, passages));
  ASSIGN_OR_RETURN(auto ae4, train::EvalAutoencode(model, adapter, heldout, 4 * len, passages));
  ASSIGN_OR_RETURN(auto cont, train::EvalContinuation(model, adapter, heldout, len, 64, passages));
  const bool fresh = !fs::exists(path);
  std::ofstream out(path, std::ios::app);
  if (fresh) {
    out << "step,ae_loss,bleu4_" << len << ",bleu4_" << 4 * len
        << ",ppl_full,ppl_slots,ppl_none\n";
  }
  out << step << "," << ae_loss << "," << ae1.bleu4 << "," << ae4.bleu4 << "," << cont.ppl_full
      << "," << cont.ppl_slots << "," << cont.ppl_none << "\n";
  if (!out) return absl::InternalError("cannot append to " + path);
  std::cerr << "curve step=" << step << " ae_loss=" << ae_loss << " bleu4_" << len << "="
            << ae1.bleu4 << " bleu4_" << 4 * len << "=" << ae4.bleu4
            << " ppl full/slots/none=" << cont.ppl_full << "/" << cont.ppl_slots << "/"
            << cont.ppl_none << "\n";
  return absl::OkStatus();
}

// A context length per draw: from a --lengths-style list when one was given (repeat a value
// to weight it), else uniformly from [lo, hi].
struct LengthDraw {
  std::vector<int64_t> list;
  int64_t lo = 0, hi = 0;
  int64_t Longest() const { return list.empty() ? hi : *std::max_element(list.begin(), list.end()); }
  int64_t operator()(std::mt19937_64& r) const {
    if (list.empty()) return std::uniform_int_distribution<int64_t>(lo, hi)(r);
    return list[std::uniform_int_distribution<size_t>(0, list.size() - 1)(r)];
  }
};

// Autoencoding example: a random window of `len` ids (BOS included).
IcaeExample AeExample(const std::vector<int32_t>& stream, int64_t len, int64_t bos, int64_t eos,
                      std::mt19937_64& rng) {
  IcaeExample e;
  e.objective = IcaeObjective::kAutoencode;
  auto w = train::RandomWindow(stream, len - 1, rng);
  e.context.push_back(bos);
  e.context.insert(e.context.end(), w.begin(), w.end());
  e.target = w;
  e.target.push_back(eos);
  return e;
}

// --ae-input-noise P: each decoder input id of an autoencoding example is, with probability P,
// replaced by an id drawn from a random place of the stream (labels unchanged). Greedy
// reconstruction feeds the decoder its own, sometimes wrong, tokens; trained only on true
// prefixes it loses its place in the slots after the first mistake.
void AddInputNoise(IcaeExample& e, const std::vector<int32_t>& stream, double p, std::mt19937_64& rng) {
  if (p <= 0 || e.target.size() < 2) return;
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_int_distribution<size_t> at(0, stream.size() - 1);
  e.target_input.assign(e.target.begin(), e.target.end() - 1);
  for (auto& id : e.target_input) {
    if (u(rng) < p) id = stream[at(rng)];
  }
}

// --ae-self-feed P (scheduled sampling): one teacher-forced pass without gradient predicts
// every target id of the batch's autoencoding examples; each decoder input is then, with
// probability P, the model's own prediction of that id instead of the true one (labels
// unchanged). Unlike random noise, the wrong inputs are the ones greedy decoding makes.
absl::Status SelfFeed(const Transformer& model, const IcaeAdapter& adapter, double p,
                      std::vector<IcaeExample>& examples, std::mt19937_64& rng) {
  if (p <= 0) return absl::OkStatus();
  std::vector<IcaeExample*> ae;
  std::vector<IcaeExample> batch;
  for (auto& e : examples) {
    if (e.objective != IcaeObjective::kAutoencode || e.target.size() < 2) continue;
    ae.push_back(&e);
    batch.push_back(e);
  }
  if (ae.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(auto predicted, train::IcaePredictions(model, adapter, batch));
  std::uniform_real_distribution<double> u(0, 1);
  for (size_t i = 0; i < ae.size(); ++i) {
    IcaeExample& e = *ae[i];
    if (e.target_input.empty()) e.target_input.assign(e.target.begin(), e.target.end() - 1);
    for (size_t k = 0; k < e.target_input.size(); ++k) {
      if (u(rng) < p) e.target_input[k] = predicted[i][k];
    }
  }
  return absl::OkStatus();
}

// Continuation example: a random window of `len` context ids (BOS included) and the
// `cont_len` ids that follow it as the target.
IcaeExample ContinueExample(const std::vector<int32_t>& stream, int64_t len, int64_t cont_len,
                            int64_t bos, std::mt19937_64& rng) {
  IcaeExample e;
  e.objective = IcaeObjective::kContinue;
  auto w = train::RandomWindow(stream, len - 1 + cont_len, rng);
  e.context.push_back(bos);
  e.context.insert(e.context.end(), w.begin(), w.begin() + (len - 1));
  e.target.assign(w.begin() + (len - 1), w.end());
  return e;
}

int TrainPretrain(const std::vector<std::string>& argv) {
  const std::string cmd = "train pretrain";
  std::set<std::string> flags = {"model", "train-text", "heldout-text", "mem-size", "rate",
                                 "lora-r", "lora-alpha", "min-len", "max-len", "lm-ratio",
                                 "cont-len", "eval-len", "eval-windows", "base-lm-ratio",
                                 "init-adapter", "lengths", "curve-csv", "curve-passages",
                                 "memory-positions",
                                 "ae-input-noise", "ae-self-feed"};
  flags.insert(LoopFlags().begin(), LoopFlags().end());
  auto args = Args::Parse(argv, flags, {"resume", "fp32", "quiet", "no-lm-token", "train-base"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("model") || !args->Has("train-text") || !args->Has("out")) {
    return Fail(cmd, "usage: icae train pretrain --model DIR --train-text F [--heldout-text F] "
                     "--out DIR [--mem-size 32 --rate 4 --lora-r 64 --lora-alpha 64 "
                     "--min-len 32 --max-len 256 | --lengths 128,256,512] [--lm-ratio 0.5 "
                     "--cont-len 64 --init-adapter FILE --train-base --base-lm-ratio 0.25 --ae-input-noise 0.1 --ae-self-feed 0.1 --memory-positions spread …]", 2);
  }
  if (auto st = ConfigureRuntimeFromArgs(*args); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  auto opts = LoopOptions(*args, 1000, 1e-3);
  if (!opts.ok()) return Fail(cmd, std::string(opts.status().message()), 2);
  auto setup = LoadBase(*args);
  if (!setup.ok()) return Fail(cmd, std::string(setup.status().message()), UsageCode(setup.status()));
  const Transformer& model = *setup->model;
  const Tokenizer& tok = *setup->tokenizer;
  NumericFlags num(*args);
  auto geti = [&](const char* f, int64_t d) { return num.Int(f, d); };
  IcaeConfig ic;
  ic.mem_size = geti("mem-size", 32);
  ic.mean_compression_rate = geti("rate", 4);
  ic.lora_r = geti("lora-r", 64);
  ic.lora_alpha = num.Double("lora-alpha", 64);
  ic.base_vocab_size = model.config().vocab_size;
  ic.pad_token_id = ic.base_vocab_size;
  ic.ae_token_id = ic.base_vocab_size + ic.mem_size + 1;
  ic.lm_token_id = ic.ae_token_id + 1;
  ic.ft_token_id = ic.ae_token_id + 2;
  ic.continue_with_lm_token = !args->Has("no-lm-token");
  // --memory-positions sequential|spread (IcaeConfig::memory_positions); with --init-adapter it
  // replaces the adapter's own, so a trained adapter can continue under the other layout.
  if (args->Has("memory-positions")) {
    const std::string m = args->Get("memory-positions");
    if (m != "sequential" && m != "spread") {
      return Fail(cmd, "--memory-positions must be sequential or spread, not '" + m + "'", 2);
    }
  }
  auto memory_positions = [&](IcaeConfig::MemoryPositions given) {
    if (!args->Has("memory-positions")) return given;
    return args->Get("memory-positions") == "spread" ? IcaeConfig::MemoryPositions::kSpread
                                                     : IcaeConfig::MemoryPositions::kSequential;
  };
  ic.memory_positions = memory_positions(ic.memory_positions);
  const int64_t min_len = geti("min-len", 32), max_len = geti("max-len", 256);
  const int64_t cont_len = geti("cont-len", 64), batch = geti("batch-size", 8);
  const int64_t eval_len = geti("eval-len", 128), eval_windows = geti("eval-windows", 16);
  const double lm_ratio = num.Double("lm-ratio", 0.5);
  const double ae_noise = num.Double("ae-input-noise", 0.0);
  const double ae_self_feed = num.Double("ae-self-feed", 0.0);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  // --lengths L1,L2,…: context lengths drawn from this list (repeat a value to weight it)
  // instead of uniformly from [--min-len, --max-len]; e.g. whole 128-token segments, 1 to 4 of
  // them, keep the slot ↔ token layout of every segment the same.
  auto lengths = ParseLengthList(args->Get("lengths"));
  if (!lengths.ok()) return Fail(cmd, std::string(lengths.status().message()), 2);
  const LengthDraw len{*lengths, min_len, max_len};
  const int64_t longest = len.Longest();
  ic.max_context_tokens = std::max<int64_t>(4096, longest);
  // Our tokenizer's own instruct template: BOS "[INST]" … " [/INST]".
  ic.instruct_prefix_ids = {tok.bos_id()};
  for (int32_t id : tok.Encode("[INST]", false)) ic.instruct_prefix_ids.push_back(id);
  ic.instruct_suffix_ids.clear();
  for (int32_t id : tok.Encode(" [/INST]", false)) ic.instruct_suffix_ids.push_back(id);
  if (min_len < 2 || max_len < min_len || cont_len < 1 || batch < 1 || lm_ratio < 0 || lm_ratio > 1) {
    return Fail(cmd, "need 2 <= --min-len <= --max-len, --cont-len >= 1, 0 <= --lm-ratio <= 1", 2);
  }
  if (ae_noise < 0 || ae_noise >= 1) return Fail(cmd, "--ae-input-noise must be in [0, 1)", 2);
  if (ae_self_feed < 0 || ae_self_feed >= 1) return Fail(cmd, "--ae-self-feed must be in [0, 1)", 2);
  auto stream = train::TokenizeTextFile(tok, args->Get("train-text"));
  if (!stream.ok()) return Fail(cmd, std::string(stream.status().message()));
  std::vector<int32_t> heldout;
  if (args->Has("heldout-text")) {
    auto h = train::TokenizeTextFile(tok, args->Get("heldout-text"));
    if (!h.ok()) return Fail(cmd, std::string(h.status().message()));
    heldout = std::move(*h);
  }
  // --init-adapter FILE: start from a trained adapter (its config wins over the flags above)
  // instead of a fresh one; a new schedule on new data then continues an earlier model.
  IcaeAdapter adapter;
  if (args->Has("init-adapter")) {
    auto loaded = LoadIcaeAdapter(args->Get("init-adapter"), model.config(), torch::kFloat32, model.device());
    if (!loaded.ok()) return Fail(cmd, std::string(loaded.status().message()));
    adapter = std::move(*loaded);
    adapter.config.max_context_tokens =
        std::max(adapter.config.max_context_tokens, ic.max_context_tokens);
    adapter.config.memory_positions = memory_positions(adapter.config.memory_positions);
  } else {
    adapter = train::NewIcaeAdapter(model, ic, opts->seed);
  }
  const int64_t bos = tok.bos_id(), eos = tok.eos_id();
  auto micro = [&](int64_t step, int64_t m) -> absl::StatusOr<train::LossSum> {
    auto rng = train::StepRng(opts->seed, step, m);
    std::uniform_real_distribution<double> u(0, 1);
    std::vector<IcaeExample> ex;
    std::vector<std::vector<int64_t>> plain;
    for (int64_t b = 0; b < batch; ++b) {
      if (setup->base_lm_ratio > 0 && u(rng) < setup->base_lm_ratio) {
        auto w = train::RandomWindow(*stream, longest + cont_len - 1, rng);
        w.insert(w.begin(), bos);
        plain.push_back(std::move(w));
        continue;
      }
      const bool lm = u(rng) < lm_ratio;
      const int64_t L = len(rng);
      if (!lm) {
        ex.push_back(AeExample(*stream, L, bos, eos, rng));
        AddInputNoise(ex.back(), *stream, ae_noise, rng);
        continue;
      }
      ex.push_back(ContinueExample(*stream, L, cont_len, bos, rng));
    }
    RETURN_IF_ERROR(SelfFeed(model, adapter, ae_self_feed, ex, rng));
    return StageLoss(*setup, adapter, ex, plain);
  };
  // --curve-csv FILE: every held-out evaluation also measures what the learning curve is
  // judged by (BLEU-4 of --eval-len and 4x --eval-len reconstructions, continuation
  // perplexities after --eval-len) on
  // --curve-passages passages and appends one CSV line.
  const std::string curve_csv = args->Get("curve-csv");
  const int64_t curve_passages = geti("curve-passages", 8);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  if (!curve_csv.empty() && (heldout.empty() || curve_passages < 1)) {
    return Fail(cmd, "--curve-csv needs --heldout-text and --curve-passages >= 1", 2);
  }
  // The eval runs after the step the last micro-batch belonged to.
  int64_t last_step = 0;
  train::MicroBatchFn counted = [&](int64_t step, int64_t m) {
    last_step = step;
    return micro(step, m);
  };
  train::EvalFn eval;
  if (!heldout.empty()) {
    // Held-out autoencoding loss on fixed windows of --eval-len ids.
    eval = [&]() -> absl::StatusOr<double> {
      std::vector<IcaeExample> ex;
      for (int64_t k = 0; k < eval_windows; ++k) {
        IcaeExample e;
        auto w = train::SpacedWindow(heldout, eval_len - 1, k, eval_windows);
        e.context.push_back(bos);
        e.context.insert(e.context.end(), w.begin(), w.end());
        e.target = w;
        e.target.push_back(eos);
        ex.push_back(std::move(e));
      }
      ASSIGN_OR_RETURN(auto ls, train::IcaeLossSum(model, adapter, ex));
      const double ae_loss = ls.sum.item<double>() / static_cast<double>(ls.tokens);
      if (!curve_csv.empty()) {
        RETURN_IF_ERROR(AppendCurvePoint(curve_csv, last_step + 1, ae_loss, model, adapter,
                                         heldout, eval_len, curve_passages));
      }
      return ae_loss;
    };
  }
  std::error_code ec;
  fs::create_directories(opts->out_dir, ec);
  auto result = train::RunTraining(*opts, TrainableParameters(*setup, adapter), counted, eval);
  if (!result.ok()) return Fail(cmd, std::string(result.status().message()));
  AppendRunLog(opts->out_dir, "pretrain", *opts, *result);
  if (auto st = SaveStage(*setup, adapter, opts->out_dir); !st.ok()) {
    return Fail(cmd, std::string(st.message()));
  }
  PrintSummary(*result, "heldout_ae_loss");
  return 0;
}

absl::StatusOr<std::vector<IcaeExample>> InstructExamples(
    const std::vector<train::InstructionExample>& raw, const Tokenizer& tok, int64_t max_ctx) {
  std::vector<IcaeExample> out;
  for (const auto& r : raw) {
    IcaeExample e;
    e.objective = IcaeObjective::kInstruct;
    e.context = ToInt64(tok.Encode(r.input, /*add_bos=*/true));
    if (static_cast<int64_t>(e.context.size()) > max_ctx) e.context.resize(max_ctx);
    e.prompt = ToInt64(tok.Encode(r.prompt, false));
    e.target = ToInt64(tok.Encode(r.answer, false));
    e.target.push_back(tok.eos_id());
    out.push_back(std::move(e));
  }
  return out;
}

int TrainFinetune(const std::vector<std::string>& argv) {
  const std::string cmd = "train finetune";
  std::set<std::string> flags = {"model", "adapter", "train-jsonl", "heldout-jsonl",
                                 "train-text", "ae-ratio", "ae-min-len", "ae-max-len",
                                 "ae-lengths", "eval-examples", "base-lm-ratio", "cont-ratio", "cont-len"};
  flags.insert(LoopFlags().begin(), LoopFlags().end());
  auto args = Args::Parse(argv, flags, {"resume", "fp32", "quiet", "train-base"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("model") || !args->Has("adapter") || !args->Has("train-jsonl") || !args->Has("out")) {
    return Fail(cmd, "usage: icae train finetune --model DIR --adapter PRETRAINED.safetensors "
                     "--train-jsonl F [--heldout-jsonl F] [--train-text F --ae-ratio 0.25 --cont-ratio 0.1] "
                     "--out DIR …", 2);
  }
  if (auto st = ConfigureRuntimeFromArgs(*args); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  auto opts = LoopOptions(*args, 500, 5e-4);
  if (!opts.ok()) return Fail(cmd, std::string(opts.status().message()), 2);
  auto setup = LoadBase(*args);
  if (!setup.ok()) return Fail(cmd, std::string(setup.status().message()), UsageCode(setup.status()));
  const Transformer& model = *setup->model;
  const Tokenizer& tok = *setup->tokenizer;
  // Master weights in float32 whatever the base dtype.
  auto loaded = LoadIcaeAdapter(args->Get("adapter"), model.config(), torch::kFloat32, model.device());
  if (!loaded.ok()) return Fail(cmd, std::string(loaded.status().message()));
  IcaeAdapter adapter = std::move(*loaded);
  NumericFlags num(*args);
  auto geti = [&](const char* f, int64_t d) { return num.Int(f, d); };
  const int64_t batch = geti("batch-size", 8), eval_n = geti("eval-examples", 32);
  const int64_t ae_min = geti("ae-min-len", 32), ae_max = geti("ae-max-len", 256);
  const double ae_ratio = num.Double("ae-ratio", 0.0);
  // --cont-ratio: continuation examples ([slots][LM] → the next --cont-len ids), so that a
  // base trained on instructions (--train-base) keeps continuing text from its slots.
  const double cont_ratio = num.Double("cont-ratio", 0.0);
  const int64_t cont_len = geti("cont-len", 64);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  if (ae_ratio < 0 || cont_ratio < 0 || ae_ratio + cont_ratio > 1 || cont_len < 1) {
    return Fail(cmd, "need --ae-ratio, --cont-ratio >= 0 with a sum <= 1, --cont-len >= 1", 2);
  }
  if (ae_min < 2 || ae_max < ae_min) return Fail(cmd, "need 2 <= --ae-min-len <= --ae-max-len", 2);
  // --ae-lengths L1,L2,…: the autoencoding and continuation contexts' lengths drawn from this
  // list (as pretraining's --lengths) instead of uniformly from [--ae-min-len, --ae-max-len];
  // whole 128-token segments keep every segment's slot ↔ token layout the one pretraining saw.
  auto ae_lengths = ParseLengthList(args->Get("ae-lengths"), "ae-lengths");
  if (!ae_lengths.ok()) return Fail(cmd, std::string(ae_lengths.status().message()), 2);
  const LengthDraw len{*ae_lengths, ae_min, ae_max};
  const int64_t ae_longest = len.Longest();
  auto raw = train::LoadInstructionJsonl(args->Get("train-jsonl"));
  if (!raw.ok()) return Fail(cmd, std::string(raw.status().message()));
  auto train_ex = InstructExamples(*raw, tok, adapter.config.max_context_tokens);
  if (!train_ex.ok()) return Fail(cmd, std::string(train_ex.status().message()));
  std::vector<IcaeExample> held;
  if (args->Has("heldout-jsonl")) {
    auto hr = train::LoadInstructionJsonl(args->Get("heldout-jsonl"));
    if (!hr.ok()) return Fail(cmd, std::string(hr.status().message()));
    if (static_cast<int64_t>(hr->size()) > eval_n) hr->resize(eval_n);
    auto h = InstructExamples(*hr, tok, adapter.config.max_context_tokens);
    if (!h.ok()) return Fail(cmd, std::string(h.status().message()));
    held = std::move(*h);
  }
  std::vector<int32_t> stream;
  if (ae_ratio > 0 || cont_ratio > 0 || setup->base_lm_ratio > 0) {
    if (!args->Has("train-text")) {
      return Fail(cmd, "--ae-ratio, --cont-ratio and --base-lm-ratio need --train-text", 2);
    }
    auto s = train::TokenizeTextFile(tok, args->Get("train-text"));
    if (!s.ok()) return Fail(cmd, std::string(s.status().message()));
    stream = std::move(*s);
  }
  std::cerr << "train finetune: " << train_ex->size() << " training examples, " << held.size()
            << " held-out\n";
  const int64_t bos = tok.bos_id(), eos = tok.eos_id();
  auto micro = [&](int64_t step, int64_t m) -> absl::StatusOr<train::LossSum> {
    auto rng = train::StepRng(opts->seed, step, m);
    std::uniform_real_distribution<double> u(0, 1);
    std::uniform_int_distribution<size_t> pick(0, train_ex->size() - 1);
    std::vector<IcaeExample> ex;
    std::vector<std::vector<int64_t>> plain;
    for (int64_t b = 0; b < batch; ++b) {
      if (setup->base_lm_ratio > 0 && u(rng) < setup->base_lm_ratio) {
        auto w = train::RandomWindow(stream, ae_longest - 1, rng);
        w.insert(w.begin(), bos);
        plain.push_back(std::move(w));
        continue;
      }
      const double r = u(rng);
      if (r < ae_ratio) {
        ex.push_back(AeExample(stream, len(rng), bos, eos, rng));
      } else if (r < ae_ratio + cont_ratio) {
        ex.push_back(ContinueExample(stream, len(rng), cont_len, bos, rng));
      } else {
        ex.push_back((*train_ex)[pick(rng)]);
      }
    }
    return StageLoss(*setup, adapter, ex, plain);
  };
  train::EvalFn eval;
  if (!held.empty()) {
    eval = [&]() -> absl::StatusOr<double> {
      ASSIGN_OR_RETURN(auto ls, train::IcaeLossSum(model, adapter, held));
      return ls.sum.item<double>() / static_cast<double>(ls.tokens);
    };
  }
  std::error_code ec;
  fs::create_directories(opts->out_dir, ec);
  auto result = train::RunTraining(*opts, TrainableParameters(*setup, adapter), micro, eval);
  if (!result.ok()) return Fail(cmd, std::string(result.status().message()));
  AppendRunLog(opts->out_dir, "finetune", *opts, *result);
  if (auto st = SaveStage(*setup, adapter, opts->out_dir); !st.ok()) {
    return Fail(cmd, std::string(st.message()));
  }
  PrintSummary(*result, "heldout_answer_loss");
  return 0;
}

ICAE_REGISTER_COMMAND("train lm", "train a small causal LM from scratch (bf16 autocast, resumable)",
                      TrainLm);
ICAE_REGISTER_COMMAND("train pretrain",
                      "ICAE adapter pretraining: autoencoding + continuation, base frozen",
                      TrainPretrain);
ICAE_REGISTER_COMMAND("train finetune", "ICAE adapter fine-tuning on instruction JSONL",
                      TrainFinetune);

}  // namespace
}  // namespace icae::tools
