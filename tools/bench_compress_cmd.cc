// icae bench compress: context tokens/s of ICAE compression on a random-weights Mistral-shaped
// model (~246M) with a random adapter (r 64, mem 128), batched (all segments in one pass) vs
// one segment per pass, with the FLOP roofline (FLOPs / measured GEMM rate) beside it.
// --device cuda[:N] runs it on a GPU; --peak-tflops then sets the roofline from the data
// sheet's dense rate (the measured GEMM rate is still printed).
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "common/icae/compressor.h"
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

int BenchCompress(const std::vector<std::string>& argv) {
  const std::string cmd = "bench compress";
  const std::set<std::string> flags = {"threads", "dtype", "device", "lengths", "layers", "hidden",
                                       "heads", "kv-heads", "intermediate", "lora-r", "mem-size", "reps",
                                       "peak-tflops"};
  std::vector<std::string> argv2 = argv;
  auto probe = Args::Parse(argv, flags, {"json"});
  if (!probe.ok()) return Fail(cmd, std::string(probe.status().message()), 2);
  if (!probe->Has("threads")) argv2.push_back("--threads=2");
  auto args = *Args::Parse(argv2, flags, {"json"});
  // --json: a JSON list of {"context_tokens", "tok_s", "roofline_fraction", …} on stdout (the
  // table goes to stderr).
  const bool json = args.Has("json");
  FILE* out = json ? stderr : stdout;
  nlohmann::json rows = nlohmann::json::array();
  if (auto st = ConfigureRuntimeFromArgs(args); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  const torch::Device device = *DeviceFromArgs(args);  // checked just above
  auto dtype = DtypeFromArgs(args, "bfloat16");
  if (!dtype.ok()) return Fail(cmd, std::string(dtype.status().message()), 2);
  auto lengths = ParseIdList(args.Get("lengths", "512,2048,5120"));
  if (!lengths.ok()) return Fail(cmd, std::string(lengths.status().message()), 2);
  ModelConfig c;
  c.model_type = "mistral";
  NumericFlags num(args);
  c.hidden_size = num.Int("hidden", 1024);
  c.num_hidden_layers = num.Int("layers", 16);
  c.num_attention_heads = num.Int("heads", 16);
  c.num_key_value_heads = num.Int("kv-heads", 4);
  c.intermediate_size = num.Int("intermediate", 2816);
  c.vocab_size = 32000;
  c.max_position_embeddings = 8192;
  c.rms_norm_eps = 1e-5;
  const int64_t r = num.Int("lora-r", 64), S = num.Int("mem-size", 128);
  const int64_t reps = std::max<int64_t>(1, num.Int("reps", 2));
  const double peak_flops = num.Double("peak-tflops", 0) * 1e12;
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  if (c.num_attention_heads < 1 || c.num_key_value_heads < 1 || c.num_attention_heads % c.num_key_value_heads != 0 ||
      c.hidden_size < 1 || c.hidden_size % c.num_attention_heads != 0 || c.num_hidden_layers < 1 ||
      c.intermediate_size < 1 || r < 1 || S < 1 || peak_flops < 0) {
    return Fail(cmd, "--hidden must be a positive multiple of --heads, --heads of --kv-heads; --layers, "
                     "--intermediate, --lora-r, --mem-size >= 1; --peak-tflops >= 0", 2);
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;

  c10::InferenceMode guard;
  Transformer model(c, RandomWeights(c, *dtype, 1, device));
  IcaeAdapter adapter = RandomIcaeAdapter(c, S, r, *dtype, 2, device);
  adapter.config.max_context_tokens = 1 << 20;

  // GEMM rate on the MLP shape of a 640-row segment.
  auto x = torch::randn({640, c.hidden_size}).to(device, *dtype);
  auto w = torch::randn({2 * c.intermediate_size, c.hidden_size}).to(device, *dtype);
  torch::linear(x, w);
  SynchronizeDevice(device);
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    double t0 = Now();
    torch::linear(x, w);
    SynchronizeDevice(device);
    best = std::min(best, Now() - t0);
  }
  const double measured_gemm = 2.0 * 640 * c.hidden_size * 2 * c.intermediate_size / best;
  // The roofline's rate: the data sheet's peak where given, else the measured GEMM rate.
  const double gemm = peak_flops > 0 ? peak_flops : measured_gemm;
  const int64_t body = model.NumParameters() - 2 * c.vocab_size * c.hidden_size;
  std::fprintf(out, "model %.1fM params, %s, LoRA r=%lld, mem_size=%lld, device=%s, threads=%d, GEMM rate %.1f GFLOP/s%s\n",
              model.NumParameters() / 1e6, args.Get("dtype", "bfloat16").c_str(), (long long)r,
              (long long)S, device.str().c_str(), at::get_num_threads(), measured_gemm / 1e9,
              peak_flops > 0 ? " (roofline: --peak-tflops)" : "");
  std::fprintf(out, "%8s %9s %13s %13s %13s %9s\n", "context", "segments", "batched tok/s",
              "1-at-a-time", "roofline", "batched%");
  for (int64_t L : *lengths) {
    torch::manual_seed(L);
    auto t = torch::randint(3, c.vocab_size, {L}, torch::kInt64);
    std::vector<int64_t> ids(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + L);
    Segmentation seg = SegmentContext(L, S, 4);
    double flops = 0;
    for (auto [b, e] : seg.spans) {
      const double T = static_cast<double>(e - b + S);
      flops += 2.0 * body * T;                                             // weights
      flops += 2.0 * c.num_hidden_layers * c.q_width() * T * T;           // QKᵀ and PV (causal half ×2)
      flops += 2.0 * c.num_hidden_layers * T * r * (2 * c.hidden_size + c.q_width() + c.kv_width());  // LoRA
    }
    const double roofline = L / (flops / gemm);
    double tps[2];
    for (int mode = 0; mode < 2; ++mode) {
      CompressorOptions o;
      o.max_segments_per_batch = mode == 0 ? 64 : 1;
      Compressor comp(model, adapter, o);
      std::vector<double> times;
      for (int64_t rep = 0; rep < reps; ++rep) {
        double t0 = Now();
        auto out = comp.Compress({ids});
        if (!out.ok()) return Fail(cmd, std::string(out.status().message()));
        SynchronizeDevice(device);
        times.push_back(Now() - t0);
      }
      std::sort(times.begin(), times.end());
      tps[mode] = L / times[0];
    }
    std::fprintf(out, "%8lld %9lld %13.1f %13.1f %13.1f %8.1f%%\n", (long long)L,
                (long long)seg.num_segments, tps[0], tps[1], roofline, 100.0 * tps[0] / roofline);
    rows.push_back({{"context_tokens", L},
                    {"segments", seg.num_segments},
                    {"tok_s", tps[0]},
                    {"one_at_a_time_tok_s", tps[1]},
                    {"roofline_tok_s", roofline},
                    {"roofline_fraction", tps[0] / roofline}});
  }
  if (json) std::printf("%s\n", rows.dump().c_str());
  return 0;
}

ICAE_REGISTER_COMMAND("bench compress", "ICAE compression tokens/s, batched vs one-at-a-time, vs roofline",
                      BenchCompress);

}  // namespace
}  // namespace icae::tools
