// icae eval [--model DIR --adapter FILE] --heldout-text F [--instructions F.jsonl]
//           [--lengths 64,128,256,512] [--passages 16] [--ppl-context 512] [--ppl-next 64]
//           [--ppl-windows 16] [--max-instructions 100] [--json]
// Autoencoding (BLEU-4, exact match, token accuracy per passage length), continuation
// perplexity (full context vs slots vs nothing) and instruction accuracy on held-out data.
// Without --model, the embedded default model and its adapter are evaluated.
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <iostream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "common/tokenizer/tokenizer.h"
#include "common/train/evaluate.h"
#include "common/train/metrics.h"
#include "common/train/text_data.h"
#include "common/util/mapped_file.h"
#include "common/util/paths.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/icae_inputs.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

int Eval(const std::vector<std::string>& argv) {
  const std::string cmd = "eval";
  std::set<std::string> flags = {"model", "adapter", "heldout-text", "instructions", "lengths",
                                 "passages", "ppl-context", "ppl-next", "ppl-windows",
                                 "max-instructions", "max-answer-tokens"};
  flags.insert(RuntimeFlagNames().begin(), RuntimeFlagNames().end());
  auto args = Args::Parse(argv, flags, {"json", "no-ppl"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("heldout-text") || !args->positional().empty()) {
    return Fail(cmd, "usage: icae eval [--model DIR --adapter FILE] --heldout-text F "
                     "[--instructions F.jsonl] [--lengths 64,128,256,512] [--passages 16] "
                     "[--ppl-context 512 --ppl-next 64 --ppl-windows 16] [--json]", 2);
  }
  if (auto st = ConfigureRuntimeFromArgs(*args); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  auto lengths = ParseLengthList(args->Get("lengths", "64,128,256,512"));
  if (!lengths.ok()) return Fail(cmd, std::string(lengths.status().message()), 2);
  NumericFlags num(*args);
  const int64_t passages = num.Int("passages", 16), ppl_ctx = num.Int("ppl-context", 512);
  const int64_t ppl_next = num.Int("ppl-next", 64), ppl_windows = num.Int("ppl-windows", 16);
  const int64_t max_instr = num.Int("max-instructions", 100), max_answer = num.Int("max-answer-tokens", 64);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  c10::InferenceMode guard;
  auto loaded = LoadIcaeFromArgs(*args, /*need_adapter=*/true);
  if (!loaded.ok()) return Fail(cmd, std::string(loaded.status().message()));
  const Transformer& model = *loaded->model;
  const IcaeAdapter& adapter = *loaded->adapter;
  auto stream = train::TokenizeTextFile(*loaded->tokenizer, args->Get("heldout-text"));
  if (!stream.ok()) return Fail(cmd, std::string(stream.status().message()));
  const auto t0 = std::chrono::steady_clock::now();

  nlohmann::json j;
  j["model"] = args->Get("model", "default");
  j["mem_size"] = adapter.config.mem_size;
  j["compression_rate"] = adapter.config.mean_compression_rate;
  std::string table = absl::StrFormat("%-28s %8s %8s %8s %8s %8s %8s\n", "autoencoding (held-out)",
                                      "slots", "BLEU-4", "exact", "tok-acc", "tf-acc", "prefix");
  for (int64_t L : *lengths) {
    auto r = train::EvalAutoencode(model, adapter, *stream, L, passages);
    if (!r.ok()) return Fail(cmd, std::string(r.status().message()));
    table += absl::StrFormat("  %4d tokens x %-12d %8d %8.4f %8.4f %8.4f %8.4f %8.1f\n", L, r->passages,
                             r->slots, r->bleu4, r->exact_match, r->token_accuracy,
                             r->teacher_forced_accuracy, r->greedy_correct_prefix);
    j["autoencode"].push_back({{"length", L}, {"passages", r->passages}, {"slots", r->slots},
                               {"bleu4", r->bleu4}, {"exact_match", r->exact_match},
                               {"token_accuracy", r->token_accuracy},
                               {"teacher_forced_accuracy", r->teacher_forced_accuracy},
                               {"greedy_correct_prefix", r->greedy_correct_prefix}});
  }
  if (!args->Has("no-ppl")) {
    auto c = train::EvalContinuation(model, adapter, *stream, ppl_ctx, ppl_next, ppl_windows);
    if (!c.ok()) return Fail(cmd, std::string(c.status().message()));
    table += absl::StrFormat(
        "continuation perplexity of the next %d tokens after %d (x%d windows):\n"
        "  full context %.3f   slots %.3f (%+.1f%%)   no context %.3f\n",
        c->next_tokens, c->context_length, c->windows, c->ppl_full, c->ppl_slots,
        100.0 * (c->ppl_slots / c->ppl_full - 1.0), c->ppl_none);
    j["continuation"] = {{"context_length", c->context_length}, {"next_tokens", c->next_tokens},
                         {"windows", c->windows}, {"ppl_full", c->ppl_full},
                         {"ppl_slots", c->ppl_slots}, {"ppl_none", c->ppl_none}};
  }
  if (args->Has("instructions")) {
    auto ex = train::LoadInstructionJsonl(args->Get("instructions"));
    if (!ex.ok()) return Fail(cmd, std::string(ex.status().message()));
    if (static_cast<int64_t>(ex->size()) > max_instr) ex->resize(max_instr);
    auto r = train::EvalInstructions(model, adapter, *loaded->tokenizer, *ex, max_answer);
    if (!r.ok()) return Fail(cmd, std::string(r.status().message()));
    table += absl::StrFormat("instructions (held-out, %d): exact %.4f  token-F1 %.4f\n",
                             r->examples, r->exact_match, r->f1);
    nlohmann::json per;
    for (const auto& [task, v] : r->per_task_exact) {
      table += absl::StrFormat("  %-18s n=%-4d exact %.4f\n", task, v.first, v.second);
      per[task] = {{"n", v.first}, {"exact_match", v.second}};
    }
    j["instructions"] = {{"examples", r->examples}, {"exact_match", r->exact_match},
                         {"f1", r->f1}, {"per_task", per}};
  }
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (args->Has("json")) {
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << table;
  }
  return 0;
}

// icae compare [--model DIR] --reference-file F --hypothesis-file H: how faithfully H (e.g. an
// autoencode reconstruction) reproduces F, on the model's token ids (BOS excluded): token
// accuracy (position-exact), BLEU-4, exact match. One line, `key=value` pairs.
int Compare(const std::vector<std::string>& argv) {
  const std::string cmd = "compare";
  auto args = Args::Parse(argv, {"model", "reference-file", "hypothesis-file"}, {});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("reference-file") || !args->Has("hypothesis-file") || !args->positional().empty()) {
    return Fail(cmd, "usage: icae compare [--model DIR] --reference-file F --hypothesis-file H", 2);
  }
  const std::string dir = args->Get("model", DefaultModelDir());
  auto tok = Tokenizer::LoadFromModelDir(dir);
  if (!tok.ok()) return Fail(cmd, std::string(tok.status().message()));
  std::vector<std::vector<int64_t>> ids;
  for (const char* f : {"reference-file", "hypothesis-file"}) {
    auto text = ReadFileToString(args->Get(f));
    if (!text.ok()) return Fail(cmd, std::string(text.status().message()));
    // Trailing newlines are the file's, not the text's.
    while (!text->empty() && (text->back() == '\n' || text->back() == '\r')) text->pop_back();
    auto v = (*tok)->Encode(*text, /*add_bos=*/false);
    ids.emplace_back(v.begin(), v.end());
  }
  std::cout << absl::StrFormat("reference_tokens=%d reconstructed_tokens=%d token_accuracy=%.4f "
                               "bleu4=%.4f exact=%d\n",
                               ids[0].size(), ids[1].size(), train::TokenAccuracy(ids[1], ids[0]),
                               train::Bleu4(ids[1], ids[0]), ids[0] == ids[1] ? 1 : 0);
  return 0;
}

ICAE_REGISTER_COMMAND("compare",
                      "token accuracy and BLEU-4 of a text (e.g. a reconstruction) against a reference",
                      Compare);

ICAE_REGISTER_COMMAND("eval", "evaluate an ICAE adapter: autoencoding, continuation ppl, instructions",
                      Eval);

}  // namespace
}  // namespace icae::tools
