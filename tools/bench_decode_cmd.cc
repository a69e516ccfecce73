// icae bench decode: prefill and decode speed of a random-weights Mistral-shaped model
// (default ~246M parameters: hidden 1024, 16 layers, 16 heads, 4 KV heads, intermediate 2816,
// vocab 32000, untied), with the memory-bandwidth and GEMM-rate bounds printed beside.
// --device cuda[:N] runs it on a GPU; --bandwidth-gbs and --peak-tflops then give the bounds
// from the data sheet (HBM bandwidth, dense tensor-core rate) instead of measured ones.
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <optional>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <numeric>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "common/model/cpu_gemv.h"
#include "common/model/prefix_cache.h"
#include "common/model/transformer.h"
#include "common/util/device.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Read bandwidth: every thread sums its share of a buffer much larger than the caches; where
// a bf16 GEMV kernel exists (AVX-512 BF16, or the packed AVX2 one), a 512 MiB matrix-vector
// product (a stream of wide loads) is also timed and the better figure kept — the scalar loop
// alone underestimates it.
double MeasureReadBandwidth() {
  double gemv_best = 0;
  if (CpuPackedBf16Available()) {
    auto w = torch::zeros({1 << 17, 2048}, torch::kBFloat16);
    auto x = torch::zeros({1, 2048}, torch::kBFloat16);
    // Without AVX-512 BF16 only the packed copy has a kernel (the AVX2 one): stream that.
    const PackedBf16Weight packed = CpuBf16GemvAvailable() ? PackedBf16Weight() : PackedBf16Weight::Pack(w);
    Linear(x, w, &packed);
    for (int rep = 0; rep < 4; ++rep) {
      double t0 = Now();
      Linear(x, w, &packed);
      gemv_best = std::max(gemv_best, w.numel() * 2.0 / (Now() - t0));
    }
  }
  const int64_t n = (512ll << 20) / 8;
  auto buf = torch::ones({n}, torch::kInt64);
  const int64_t* p = buf.data_ptr<int64_t>();
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    double t0 = Now();
    std::atomic<int64_t> total{0};
    at::parallel_for(0, n, 1 << 16, [&](int64_t b, int64_t e) {
      int64_t s = 0;
      for (int64_t i = b; i < e; ++i) s += p[i];
      total += s;
    });
    double dt = Now() - t0;
    if (total.load() != n) std::cerr << "bandwidth check failed\n";
    best = std::max(best, n * 8.0 / dt);
  }
  return std::max(best, gemv_best);
}

// Device memory bandwidth (not CPU): a 1 GiB copy reads and writes every byte once.
double MeasureDeviceBandwidth(const torch::Device& device) {
  auto src = torch::zeros({1ll << 29}, torch::TensorOptions(torch::kBFloat16).device(device));
  auto dst = torch::empty_like(src);
  dst.copy_(src);
  SynchronizeDevice(device);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    double t0 = Now();
    dst.copy_(src);
    SynchronizeDevice(device);
    best = std::max(best, 2.0 * src.nbytes() / (Now() - t0));
  }
  return best;
}

double MeasureGemmRate(torch::Dtype dtype, int64_t m, int64_t k, int64_t n, const torch::Device& device) {
  auto x = torch::randn({m, k}).to(device, dtype), w = torch::randn({n, k}).to(device, dtype);
  // The model's own product path (Linear: the packed kernel where it takes prefill rows).
  const PackedBf16Weight packed = PackedBf16Weight::Pack(w);
  Linear(x, w, &packed);
  SynchronizeDevice(device);
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    double t0 = Now();
    Linear(x, w, &packed);
    SynchronizeDevice(device);
    best = std::min(best, Now() - t0);
  }
  return 2.0 * m * k * n / best;
}

int BenchDecode(const std::vector<std::string>& argv) {
  const std::string cmd = "bench decode";
  const std::set<std::string> flags = {"threads", "dtype", "device", "prompt-tokens", "decode-tokens",
                                       "hidden", "layers", "heads", "kv-heads", "intermediate", "vocab",
                                       "reps", "layout", "bandwidth-gbs", "peak-tflops",
                                       "max-packed-weight-bytes", "weights", "mixed-chunk-tokens"};
  auto args = Args::Parse(argv, flags, {"json"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  std::vector<std::string> argv2 = argv;
  if (!args->Has("threads")) argv2.push_back("--threads=2");
  auto args2 = *Args::Parse(argv2, flags, {"json"});
  if (auto st = ConfigureRuntimeFromArgs(args2); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  const torch::Device device = *DeviceFromArgs(args2);  // checked just above
  ModelConfig c;
  c.model_type = "mistral";
  NumericFlags num(*args);
  c.hidden_size = num.Int("hidden", 1024);
  c.num_hidden_layers = num.Int("layers", 16);
  c.num_attention_heads = num.Int("heads", 16);
  c.num_key_value_heads = num.Int("kv-heads", 4);
  c.intermediate_size = num.Int("intermediate", 2816);
  c.vocab_size = num.Int("vocab", 32000);
  const int64_t prompt = num.Int("prompt-tokens", 512);
  const int64_t decode = num.Int("decode-tokens", 128);
  const int64_t reps = std::max<int64_t>(1, num.Int("reps", 3));
  // Prompt positions of the admitted request in the mixed-step measurement (0: skipped).
  const int64_t mixed_chunk = num.Int("mixed-chunk-tokens", 24);
  const double given_bw = num.Double("bandwidth-gbs", 0) * 1e9;
  const double peak_flops = num.Double("peak-tflops", 0) * 1e12;
  // Packed weight copies for few-row products (0: the unpacked kernel, for a side-by-side).
  const int64_t max_packed =
      num.Int("max-packed-weight-bytes", ModelLoadOptions::kDefaultMaxPackedWeightBytes);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  // --weights int8: decode steps (and prefill chunks of up to kMaxPackedRows) on int8 copies.
  auto weights_format = WeightsFormatFromArgs(*args);
  if (!weights_format.ok()) return Fail(cmd, std::string(weights_format.status().message()), 2);
  if (*weights_format == WeightsFormat::kInt8 && !device.is_cpu()) {
    return Fail(cmd, "--weights int8 runs on the CPU only", 2);
  }
  if (given_bw < 0 || peak_flops < 0) return Fail(cmd, "--bandwidth-gbs and --peak-tflops must be >= 0", 2);
  if (mixed_chunk < 0) return Fail(cmd, "--mixed-chunk-tokens must be >= 0 (0 skips the mixed step)", 2);
  if (c.hidden_size < 1 || c.num_hidden_layers < 1 || c.num_attention_heads < 1 || c.num_key_value_heads < 1 ||
      c.num_attention_heads % c.num_key_value_heads != 0 || c.hidden_size % c.num_attention_heads != 0 ||
      c.intermediate_size < 1 || c.vocab_size < 2 || prompt < 1 || decode < 1) {
    return Fail(cmd, "the shape flags must be positive (--hidden a multiple of --heads, --heads of --kv-heads), "
                     "--prompt-tokens and --decode-tokens >= 1", 2);
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.max_position_embeddings = 4096;
  c.rope_theta = 10000;
  c.rms_norm_eps = 1e-5;
  std::vector<std::string> dtypes;
  // --json: one JSON object on stdout (the tables go to stderr); bf16 only unless --dtype says.
  const bool json = args->Has("json");
  FILE* out = json ? stderr : stdout;
  nlohmann::json runs = nlohmann::json::array();
  std::string which = args->Get("dtype", json ? "bfloat16" : "both");
  if (which == "both") {
    dtypes = {"bfloat16", "float32"};
  } else {
    dtypes = {which};
  }
  c10::InferenceMode guard;
  const double bw = given_bw > 0 ? given_bw : device.is_cpu() ? MeasureReadBandwidth() : MeasureDeviceBandwidth(device);
  std::fprintf(out, "device=%s threads=%d  %s bandwidth %.1f GB/s\n", device.str().c_str(), at::get_num_threads(),
               given_bw > 0 ? "given (--bandwidth-gbs)" : device.is_cpu() ? "measured read" : "measured copy",
               bw / 1e9);
  // --layout: q/k/v and gate/up stacked into one product each (weights converted or built in
  // memory), separate products (weights used in place from a mapped file), or both side by side.
  const std::string layout = args->Get("layout", "stacked");
  std::vector<std::string> layouts;
  if (layout == "both") layouts = {"stacked", "separate"};
  else if (layout == "stacked" || layout == "separate") layouts = {layout};
  else return Fail(cmd, "--layout must be stacked, separate or both", 2);
  for (const auto& dname : dtypes) for (const auto& lay : layouts) {
    auto dtype = ParseDtype(dname);
    if (!dtype.ok()) return Fail(cmd, std::string(dtype.status().message()), 2);
    ModelWeights weights = RandomWeights(c, *dtype, 1, device);
    if (lay == "separate") weights = SeparateProjections(weights, c);
    Transformer model(c, std::move(weights), max_packed, *weights_format);
    const int64_t params = model.NumParameters();
    const int64_t esize = c10::elementSize(*dtype);
    const double measured_gemm = MeasureGemmRate(*dtype, 512, c.hidden_size, c.intermediate_size, device);
    // The prefill bound: the data sheet's peak where given, else the measured GEMM rate.
    const double gemm = peak_flops > 0 ? peak_flops : measured_gemm;
    // FLOPs per prompt token: 2 per weight outside the embedding table + attention.
    const int64_t body = params - 2 * c.vocab_size * c.hidden_size;
    const double attn_flops = 4.0 * c.num_hidden_layers * c.q_width() * (prompt / 2.0);
    const double flops_per_token = 2.0 * body + attn_flops;
    torch::manual_seed(3);
    auto ids = torch::randint(0, c.vocab_size, {prompt}, torch::kInt64);
    std::vector<double> prefill_times, decode_times;
    for (int64_t r = 0; r < reps; ++r) {
      KVCache cache = model.NewCache(prompt + decode);
      std::vector<SequenceInput> b(1);
      b[0].ids = ids;
      b[0].cache = &cache;
      double t0 = Now();
      auto logits = model.Forward(b);
      SynchronizeDevice(device);
      prefill_times.push_back(Now() - t0);
      if (!logits.ok()) return Fail(cmd, std::string(logits.status().message()));
      int64_t next = logits->argmax(-1).item<int64_t>();
      t0 = Now();
      for (int64_t i = 0; i < decode; ++i) {
        b[0] = SequenceInput();
        b[0].ids = torch::tensor({next}, torch::kInt64);
        b[0].cache = &cache;
        auto l = model.Forward(b);
        next = l->argmax(-1).item<int64_t>();
      }
      decode_times.push_back(Now() - t0);
    }
    const std::vector<double> decode_in_order = decode_times;
    std::sort(prefill_times.begin(), prefill_times.end());
    std::sort(decode_times.begin(), decode_times.end());
    const double prefill_tps = prompt / prefill_times[prefill_times.size() / 2];
    const double decode_tps = decode / decode_times[decode_times.size() / 2];
    // Bytes read per decode token: every weight except the embedding table (one row), plus the
    // KV cache at the mean decode length.
    const double kv_bytes = 2.0 * c.num_hidden_layers * c.kv_width() * (prompt + decode / 2.0) * esize;
    // With int8 weights: the int8 copies' bytes (scales included) instead of the weights'.
    const double weight_bytes = model.int8_weight_bytes() > 0
                                    ? double(model.int8_weight_bytes())
                                    : (params - c.vocab_size * c.hidden_size) * double(esize);
    const double bytes_per_token = weight_bytes + kv_bytes;
    std::fprintf(out, "\n%s %s  model %.1fM params (%d layers, hidden %lld, vocab %lld)%s\n", dname.c_str(),
                lay.c_str(), params / 1e6, int(c.num_hidden_layers), (long long)c.hidden_size,
                (long long)c.vocab_size,
                (std::string(model.packed_weight_bytes() > 0 ? "  packed" : "") +
                 (model.int8_weight_bytes() > 0 ? "  int8 weights" : "")).c_str());
    std::fprintf(out, "  GEMM rate (512x%lldx%lld)       %8.1f GFLOP/s measured%s\n", (long long)c.hidden_size,
                (long long)c.intermediate_size, measured_gemm / 1e9,
                peak_flops > 0 ? absl::StrFormat(", peak %.1f TFLOP/s given", peak_flops / 1e12).c_str() : "");
    std::fprintf(out, "  prefill %4lld tokens            %8.1f tokens/s   bound %8.1f (FLOPs / %s)  %5.1f%%\n",
                (long long)prompt, prefill_tps, gemm / flops_per_token, peak_flops > 0 ? "peak" : "GEMM rate",
                100.0 * prefill_tps / (gemm / flops_per_token));
    std::fprintf(out, "  decode  %4lld tokens, batch 1   %8.1f tokens/s   bound %8.1f (%.0f MB/token / %.1f GB/s)  %5.1f%%\n",
                (long long)decode, decode_tps, bw / bytes_per_token, bytes_per_token / 1e6, bw / 1e9,
                100.0 * decode_tps / (bw / bytes_per_token));
    nlohmann::json run = {{"dtype", dname},
                          {"layout", lay},
                          {"params", params},
                          {"packed_weight_bytes", model.packed_weight_bytes()},
                          {"weights", WeightsFormatName(model.weights_format())},
                          {"int8_weight_bytes", model.int8_weight_bytes()},
                          {"prefill_tokens", prompt},
                          {"decode_tokens", decode},
                          {"gemm_gflops", measured_gemm / 1e9},
                          {"peak_tflops", peak_flops / 1e12},
                          {"prefill_tok_s", prefill_tps},
                          {"prefill_bound_tok_s", gemm / flops_per_token},
                          {"decode_tok_s", decode_tps},
                          {"decode_bound_tok_s", bw / bytes_per_token},
                          {"decode_mb_per_token", bytes_per_token / 1e6}};
    // Every repetition's decode rate (in run order): how stable decode is.
    nlohmann::json each = nlohmann::json::array();
    for (double t : decode_in_order) each.push_back(decode / t);
    run["decode_tok_s_each"] = each;
    // Continuous-batching shape: B sequences advance one token each per Forward, over the same
    // positions as batch 1 (prompt .. prompt + decode) and the same number of repetitions, the
    // median reported. Each repetition starts from copies of one prefilled prompt, so the
    // timed steps are decode steps only.
    KVCache prefilled = model.NewCache(prompt);
    std::vector<SequenceInput> pb(1);
    pb[0].ids = ids;
    pb[0].cache = &prefilled;
    auto first = model.Forward(pb);
    if (!first.ok()) return Fail(cmd, std::string(first.status().message()));
    const torch::Tensor first_next = first->argmax(-1);
    for (int64_t B : {4, 8}) {
      std::vector<double> times;
      for (int64_t r = 0; r < reps; ++r) {
        std::vector<KVCache> caches;
        for (int64_t i = 0; i < B; ++i) caches.push_back(CopyKVPrefix(c, prefilled, prompt, prompt + decode));
        std::vector<SequenceInput> b(B);
        torch::Tensor next = first_next.expand({B}).contiguous();
        SynchronizeDevice(device);
        const double t0 = Now();
        for (int64_t step = 0; step < decode; ++step) {
          for (int64_t i = 0; i < B; ++i) {
            b[i] = SequenceInput();
            b[i].ids = next.narrow(0, i, 1);
            b[i].cache = &caches[i];
          }
          next = model.Forward(b)->argmax(-1);
        }
        SynchronizeDevice(device);
        times.push_back(Now() - t0);
      }
      nlohmann::json each_b = nlohmann::json::array();
      for (double t : times) each_b.push_back(B * decode / t);
      std::sort(times.begin(), times.end());
      const double tps = B * decode / times[times.size() / 2];
      std::fprintf(out, "  decode  batch %2lld (aggregate)   %8.1f tokens/s   %.2fx batch 1  (median of %lld)\n",
                  (long long)B, tps, tps / decode_tps, (long long)reps);
      run["batch" + std::to_string(B) + "_tok_s"] = tps;
      run["batch" + std::to_string(B) + "_tok_s_each"] = each_b;
    }
    // A continuous-batching step that admits a request: 7 sequences' decode rows beside a new
    // sequence's --mixed-chunk-tokens prompt positions after a cached prefix (the services'
    // step when a request whose slots are in the prefix cache arrives), against a decode-only
    // step of 8. Forward time per step, the median over reps × decode steps.
    if (mixed_chunk > 0) {
      std::vector<double> mixed, plain;
      const auto chunk_ids = torch::randint(0, c.vocab_size, {mixed_chunk}, torch::kInt64);
      for (int64_t r = 0; r < reps; ++r) {
        std::vector<KVCache> caches;
        for (int64_t i = 0; i < 8; ++i) caches.push_back(CopyKVPrefix(c, prefilled, prompt, prompt + 2 * decode));
        torch::Tensor next = first_next.expand({8}).contiguous();
        for (int64_t step = 0; step < decode; ++step) {
          for (bool with_chunk : {false, true}) {
            std::optional<KVCache> fresh;  // the admitted sequence's cache: the prefix copied
            if (with_chunk) fresh.emplace(CopyKVPrefix(c, prefilled, prompt, prompt + mixed_chunk));
            std::vector<SequenceInput> b(8);
            for (int64_t i = 0; i < 8; ++i) {
              b[i].ids = next.narrow(0, i, 1);
              b[i].cache = &caches[i];
            }
            if (with_chunk) {
              b[7] = SequenceInput();
              b[7].ids = chunk_ids;
              b[7].cache = &*fresh;
            }
            SynchronizeDevice(device);
            const double t0 = Now();
            auto l = model.Forward(b);
            SynchronizeDevice(device);
            (with_chunk ? mixed : plain).push_back(Now() - t0);
            if (!l.ok()) return Fail(cmd, std::string(l.status().message()));
            if (!with_chunk) next = l->argmax(-1);
          }
        }
      }
      std::sort(mixed.begin(), mixed.end());
      std::sort(plain.begin(), plain.end());
      const double tm = mixed[mixed.size() / 2], tp = plain[plain.size() / 2];
      std::fprintf(out, "  step: 7 decode rows + %lld-token prompt %8.1f us   decode-only batch 8 %8.1f us  (%.2fx)\n",
                   (long long)mixed_chunk, tm * 1e6, tp * 1e6, tm / tp);
      run["mixed_step_us"] = tm * 1e6;
      run["decode8_step_us"] = tp * 1e6;
    }
    runs.push_back(std::move(run));
  }
  if (json) {
    // The first run's figures at the top level, every run under "runs".
    nlohmann::json j = runs.at(0);
    j["read_gbps"] = bw / 1e9;
    j["bandwidth_given"] = given_bw > 0;
    j["device"] = device.str();
    j["threads"] = at::get_num_threads();
    j["runs"] = runs;
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

ICAE_REGISTER_COMMAND("bench decode", "prefill/decode tokens/s of a random Mistral-shaped model",
                      BenchDecode);

}  // namespace
}  // namespace icae::tools
