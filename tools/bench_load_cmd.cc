// icae bench load: how long a model folder takes to be ready to generate, and what memory it
// costs — resident, anonymous (private copies), proportional (PSS: pages shared with other
// processes that map the same files count once across them) — beside the size of its files.
//
//   icae bench load --model DIR [--adapter FILE] [--dtype bf16] [--owned] [--hold SECONDS]
//                   [--decode-tokens 16]   (then decode tokens/s on those pages)
//   icae bench load --write-random DIR --shape 246m|7b [--tokenizer FILE]
//       a random bf16 folder with an adapter in the released layout (and a copy of the given
//       tokenizer: then `icae up --model DIR --adapter DIR/icae_adapter.safetensors` serves it)
//
// --owned loads with copies (weights_in_place = false) for a side-by-side comparison; --hold
// keeps the process alive and prints the memory again at the end (start two at once to see
// PSS split between them).
#include <c10/core/InferenceMode.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/icae/adapter.h"
#include "common/model/safetensors.h"
#include "common/model/transformer.h"
#include "common/util/mapped_file.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

namespace fs = std::filesystem;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// kB values of the named fields in a /proc file of "Name:   123 kB" lines.
std::map<std::string, int64_t> ProcKb(const std::string& path) {
  std::map<std::string, int64_t> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::istringstream rest(line.substr(colon + 1));
    int64_t kb = 0;
    if (rest >> kb) out[line.substr(0, colon)] = kb;
  }
  return out;
}

void PrintMemory(const char* when) {
  auto status = ProcKb("/proc/self/status");
  auto rollup = ProcKb("/proc/self/smaps_rollup");
  auto gb = [](int64_t kb) { return kb / 1048576.0; };
  std::printf("  %-10s RSS %6.2f GB (peak %6.2f)   anonymous %6.2f GB   file-backed %6.2f GB   PSS %6.2f GB\n",
              when, gb(status["VmRSS"]), gb(status["VmHWM"]), gb(status["RssAnon"]),
              gb(status["RssFile"]), gb(rollup["Pss"]));
}

ModelConfig ShapeConfig(const std::string& shape, bool* ok) {
  ModelConfig c;
  c.model_type = "mistral";
  c.num_key_value_heads = shape == "7b" ? 8 : 4;
  c.hidden_size = shape == "7b" ? 4096 : 1024;
  c.num_hidden_layers = shape == "7b" ? 32 : 16;
  c.num_attention_heads = shape == "7b" ? 32 : 16;
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.intermediate_size = shape == "7b" ? 14336 : 2816;
  c.vocab_size = 32000;
  c.tie_word_embeddings = false;
  *ok = shape == "7b" || shape == "246m";
  return c;
}

// One shard per layer (and one for the embeddings, final norm and head) so that writing holds
// one layer in memory, with the index that names every tensor's shard.
int WriteRandom(const std::string& cmd, const std::string& dir, const std::string& shape,
                const std::string& tokenizer) {
  bool ok = false;
  ModelConfig c = ShapeConfig(shape, &ok);
  if (!ok) return Fail(cmd, "--shape must be 246m or 7b", 2);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Fail(cmd, absl::StrCat(dir, ": ", ec.message()));
  torch::manual_seed(1);
  auto randn = [](std::vector<int64_t> s) { return (torch::randn(s) * 0.02).to(torch::kBFloat16); };
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  std::string index = "{\"weight_map\":{";
  bool first = true;
  auto shard = [&](const std::string& file, const std::vector<std::pair<std::string, torch::Tensor>>& ts) {
    for (const auto& [n, t] : ts) {
      index += absl::StrCat(first ? "" : ",", "\"", n, "\":\"", file, "\"");
      first = false;
    }
    // A shard already there with these tensors and shapes is kept: running again completes an
    // interrupted write (or adds the adapter and tokenizer) without rewriting gigabytes.
    if (auto old = SafetensorsFile::Open(dir + "/" + file); old.ok() && (*old)->Names().size() == ts.size()) {
      bool same = true;
      for (const auto& [n, t] : ts) {
        auto info = (*old)->Info(n);
        same = same && info.ok() && info->shape == t.sizes().vec() && info->dtype == "BF16";
      }
      if (same) return absl::OkStatus();
    }
    return WriteSafetensors(dir + "/" + file, ts);
  };
  const int64_t shards = c.num_hidden_layers + 1;
  auto name = [&](int64_t i) { return absl::StrCat("model-", i + 1, "-of-", shards, ".safetensors"); };
  auto st = shard(name(0), {{"model.embed_tokens.weight", randn({c.vocab_size, H})},
                            {"model.norm.weight", torch::ones({H}, torch::kBFloat16)},
                            {"lm_head.weight", randn({c.vocab_size, H})}});
  for (int64_t l = 0; l < c.num_hidden_layers && st.ok(); ++l) {
    auto p = [&](const char* rest) { return absl::StrCat("model.layers.", l, ".", rest); };
    st = shard(name(l + 1), {{p("input_layernorm.weight"), torch::ones({H}, torch::kBFloat16)},
                             {p("post_attention_layernorm.weight"), torch::ones({H}, torch::kBFloat16)},
                             {p("self_attn.q_proj.weight"), randn({c.q_width(), H})},
                             {p("self_attn.k_proj.weight"), randn({c.kv_width(), H})},
                             {p("self_attn.v_proj.weight"), randn({c.kv_width(), H})},
                             {p("self_attn.o_proj.weight"), randn({H, c.q_width()})},
                             {p("mlp.gate_proj.weight"), randn({I, H})},
                             {p("mlp.up_proj.weight"), randn({I, H})},
                             {p("mlp.down_proj.weight"), randn({H, I})}});
  }
  if (st.ok()) st = WriteFileAtomically(dir + "/model.safetensors.index.json", index + "}}");
  if (st.ok()) st = WriteFileAtomically(dir + "/config.json", ModelConfigToJson(c));
  // An adapter in the released layout (mem 128, r 512 on the 7B shape) so the services can
  // serve the folder; with --tokenizer (a 32000-piece SentencePiece model) they can.
  if (st.ok()) {
    st = SaveIcaeAdapter(RandomIcaeAdapter(c, 128, shape == "7b" ? 512 : 64, torch::kBFloat16, 2),
                         dir + "/icae_adapter.safetensors");
  }
  if (st.ok() && !tokenizer.empty()) {
    fs::copy_file(tokenizer, dir + "/tokenizer.model", fs::copy_options::overwrite_existing, ec);
    if (ec) st = absl::InvalidArgumentError(absl::StrCat("--tokenizer ", tokenizer, ": ", ec.message()));
  }
  if (!st.ok()) return Fail(cmd, std::string(st.message()));
  std::printf("wrote a random %s model (bf16, %lld shards) to %s\n", shape.c_str(), (long long)shards,
              dir.c_str());
  return 0;
}

int BenchLoad(const std::vector<std::string>& argv) {
  const std::string cmd = "bench load";
  std::set<std::string> value_flags = {"model", "adapter", "hold", "write-random", "shape", "tokenizer",
                                       "decode-tokens"};
  value_flags.insert(RuntimeFlagNames().begin(), RuntimeFlagNames().end());
  auto args = Args::Parse(argv, value_flags, {"owned"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  const std::string usage =
      "usage: icae bench load --model DIR [--adapter FILE] [--dtype D] [--owned] [--hold SECONDS] "
      "[--decode-tokens 16]\n"
      "   or: icae bench load --write-random DIR --shape 246m|7b [--tokenizer tokenizer.model]";
  if (args->Has("write-random")) {
    return WriteRandom(cmd, args->Get("write-random"), args->Get("shape"), args->Get("tokenizer"));
  }
  if (!args->Has("model")) return Fail(cmd, usage, 2);
  NumericFlags num(*args);
  const double hold_seconds = num.Double("hold", 0);
  const int64_t num_decode = num.Int("decode-tokens", 16);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  if (auto st = ConfigureRuntimeFromArgs(*args); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  auto dtype = ParseDtype(args->Get("dtype", "bfloat16"));
  if (!dtype.ok()) return Fail(cmd, std::string(dtype.status().message()), 2);

  c10::InferenceMode guard;
  const std::string dir = args->Get("model");
  PrintMemory("start");
  const double t0 = Now();
  ModelLoadOptions lo;
  lo.dtype = *dtype;
  lo.weights_in_place = !args->Has("owned");
  lo.device = *DeviceFromArgs(*args);  // checked by ConfigureRuntimeFromArgs
  auto model = Transformer::Load(dir, lo);
  if (!model.ok()) return Fail(cmd, std::string(model.status().message()));
  const double t_model = Now();
  std::optional<IcaeAdapter> adapter;
  if (args->Has("adapter")) {
    auto a = LoadIcaeAdapter(args->Get("adapter"), (*model)->config(), *dtype, lo.device);
    if (!a.ok()) return Fail(cmd, std::string(a.status().message()));
    adapter = std::move(*a);
  }
  const double t_adapter = Now();
  // Ready to generate: one decode step has run.
  KVCache cache = (*model)->NewCache(8);
  std::vector<SequenceInput> b(1);
  b[0].ids = torch::tensor({1}, torch::kInt64);
  b[0].cache = &cache;
  auto logits = (*model)->Forward(b);
  if (!logits.ok()) return Fail(cmd, std::string(logits.status().message()));
  const double t_ready = Now();

  int64_t file_bytes = 0;
  for (const auto& f : (*model)->weight_files()) file_bytes += static_cast<int64_t>(fs::file_size(f));
  std::printf("%s: %.2f GB of weight files, %.0fM parameters, %s, %s\n", dir.c_str(), file_bytes / 1e9,
              (*model)->NumParameters() / 1e6, args->Get("dtype", "bfloat16").c_str(),
              lo.weights_in_place ? "in place where the file's dtype allows" : "owned copies (--owned)");
  std::printf("  model %.2f s, adapter %.2f s, ready to generate (one decode step) %.2f s\n",
              t_model - t0, t_adapter - t_model, t_ready - t0);
  PrintMemory("ready");
  // Decode speed on these pages (mapped file pages vs owned copies: same kernels, other pages).
  const int64_t steps = num_decode;
  if (steps > 0) {
    int64_t next = logits->argmax(-1).item<int64_t>();
    KVCache c2 = (*model)->NewCache(steps + 1);
    const double d0 = Now();
    for (int64_t i = 0; i < steps; ++i) {
      b[0] = SequenceInput();
      b[0].ids = torch::tensor({next}, torch::kInt64);
      b[0].cache = &c2;
      auto l = (*model)->Forward(b);
      if (!l.ok()) return Fail(cmd, std::string(l.status().message()));
      next = l->argmax(-1).item<int64_t>();
    }
    std::printf("  decode %lld tokens at batch 1: %.2f tokens/s\n", (long long)steps, steps / (Now() - d0));
  }
  if (hold_seconds > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(hold_seconds));
    PrintMemory("after hold");
  }
  return 0;
}

ICAE_REGISTER_COMMAND("bench load", "model load time to first token, RSS, anonymous memory and PSS",
                      BenchLoad);

}  // namespace
}  // namespace icae::tools
