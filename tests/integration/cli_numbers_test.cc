// Every numeric flag of every `icae` subcommand, given a value that is not a number, is answered
// with exit code 2 and a message naming the flag — never an abort. Each row gives the command
// with whatever it needs to reach its number checks; the checks run before any slow work.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/util/paths.h"
#include "tests/test_util.h"

namespace icae {
namespace {

namespace fs = std::filesystem;
using ::icae::testing::IcaeBinary;
using ::icae::testing::RunCommand;

struct Row {
  std::string command;               // subcommand and the arguments it needs
  std::vector<std::string> numbers;  // its numeric flags
};

TEST(CliNumbersTest, EveryNumericFlagRejectsANonNumberByName) {
  const std::string model = DefaultModelDir();
  if (!fs::exists(model + "/model.safetensors")) GTEST_SKIP() << "no default model in " << model;
  const std::string dir = ::icae::testing::MakeTempDir("icae-cli-numbers");
  const std::string text = dir + "/t.txt", jsonl = dir + "/i.jsonl";
  std::ofstream(text) << "a few words of text to read\n";
  std::ofstream(jsonl) << "{\"input\": \"a b\", \"prompt\": \"c\", \"answer\": \"d\"}\n";
  const std::string m = " --model " + model;
  const std::string adapter = " --adapter " + DefaultAdapterPath();
  const std::vector<Row> rows = {
      {"bench decode", {"hidden", "layers", "heads", "kv-heads", "intermediate", "vocab",
                        "prompt-tokens", "decode-tokens", "reps", "threads", "bandwidth-gbs", "peak-tflops"}},
      {"bench compress", {"hidden", "layers", "heads", "kv-heads", "intermediate", "lora-r", "mem-size", "reps",
                          "threads", "peak-tflops"}},
      {"bench load" + m, {"hold", "decode-tokens", "threads"}},
      {"bench tokenize", {"kb", "iters"}},
      {"compress" + m + adapter + " --text hello --out " + dir + "/s.safetensors", {"max-context-tokens", "threads"}},
      {"run" + m + adapter + " --context hello --mode autoencode",
       {"max-context-tokens", "max-new-tokens", "temperature", "top-p", "top-k", "seed", "threads"}},
      {"eval" + m + adapter + " --heldout-text " + text,
       {"passages", "ppl-context", "ppl-next", "ppl-windows", "max-instructions", "max-answer-tokens"}},
      {"data instructions --text " + text + " --out " + dir + "/o.jsonl",
       {"count", "seed", "min-words", "max-words"}},
      {"train lm --tokenizer " + model + "/tokenizer.model --train-text " + text + " --out " + dir + "/lm",
       {"hidden", "layers", "heads", "kv-heads", "intermediate", "max-position", "seq-len", "batch-size",
        "eval-windows", "copy-ratio", "steps", "lr"}},
      {"train pretrain" + m + " --train-text " + text + " --out " + dir + "/pt",
       {"mem-size", "rate", "lora-r", "lora-alpha", "min-len", "max-len", "cont-len", "batch-size",
        "eval-len", "eval-windows", "lm-ratio", "curve-passages", "ae-input-noise", "ae-self-feed", "steps", "lr"}},
      {"train finetune" + m + adapter + " --train-jsonl " + jsonl + " --out " + dir + "/ft",
       {"batch-size", "eval-examples", "ae-min-len", "ae-max-len", "ae-ratio", "cont-ratio", "cont-len", "steps"}},
#ifdef ICAE_TEST_SERVICES
      {"bench serve --encoder 127.0.0.1:1 --decoder 127.0.0.1:1",
       {"context-tokens", "max-new-tokens", "requests", "prompt-tokens", "seed", "questions-per-slot",
        "question-contexts", "interference-streams", "interference-context-tokens", "interference-new-tokens"}},
      {"bench store --uri memory://", {"iters", "warmup"}},
      {"generate --server 127.0.0.1:1 --slot " + std::string(64, 'a'),
       {"timeout", "temperature", "top-p", "top-k", "repetition-penalty", "max-new-tokens", "seed"}},
      {"up", {"startup-timeout", "max-batch", "max-context-tokens", "threads"}},
      {"ask --encoder 127.0.0.1:1 --decoder 127.0.0.1:1 --text hi", {"retries", "backoff-ms", "max-new-tokens"}},
#endif
  };
  int checked = 0;
  for (const Row& row : rows) {
    for (const std::string& flag : row.numbers) {
      std::string out, err;
      const std::string cmd = IcaeBinary() + " " + row.command + " --" + flag + " 12abc";
      const int rc = RunCommand(cmd, &out, &err);
      EXPECT_EQ(rc, 2) << cmd << "\n" << err;
      EXPECT_NE(err.find("--" + flag), std::string::npos) << cmd << "\nstderr: " << err;
      ++checked;
    }
  }
  EXPECT_GT(checked, 90);
  fs::remove_all(dir);
}

// `bench decode --json` prints one JSON object (the figures a dashboard or a regression check
// reads) and `bench compress --json` a list with one entry per context length; the tables go to
// stderr so stdout parses.
TEST(CliNumbersTest, BenchJsonIsParsableAndComplete) {
  const std::string tiny = " --hidden 64 --layers 2 --intermediate 128 --reps 2 --threads 1";
  std::string out, err;
  ASSERT_EQ(RunCommand(IcaeBinary() + " bench decode --json --heads 4 --kv-heads 2 --vocab 256 "
                       "--prompt-tokens 16 --decode-tokens 8" + tiny, &out, &err), 0) << err;
  const nlohmann::json d = nlohmann::json::parse(out);
  for (const char* key : {"prefill_tok_s", "decode_tok_s", "decode_bound_tok_s", "read_gbps", "batch8_tok_s"}) {
    ASSERT_TRUE(d.contains(key)) << key << " missing in " << out;
    EXPECT_GT(d[key].get<double>(), 0) << key;
  }
  EXPECT_EQ(d["dtype"], "bfloat16");
  EXPECT_EQ(d["decode_tok_s_each"].size(), 2u);
  // Batched decode is repeated like batch 1 (the median reported), not a single run.
  EXPECT_EQ(d["batch8_tok_s_each"].size(), 2u);
  EXPECT_EQ(d["batch4_tok_s_each"].size(), 2u);
  EXPECT_NE(err.find("decode"), std::string::npos) << "the table should still reach stderr";
  ASSERT_EQ(RunCommand(IcaeBinary() + " bench compress --json --lora-r 4 --mem-size 8 --lengths 32,64" + tiny,
                       &out, &err), 0) << err;
  const nlohmann::json c = nlohmann::json::parse(out);
  ASSERT_TRUE(c.is_array());
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0]["context_tokens"], 32);
  EXPECT_EQ(c[1]["context_tokens"], 64);
  for (const auto& row : c) {
    EXPECT_GT(row["tok_s"].get<double>(), 0);
    EXPECT_GT(row["roofline_fraction"].get<double>(), 0);
  }
}

#ifdef ICAE_TEST_SERVICES
// The decoder's --max_packed_weight_bytes is a byte size like the cache bounds: junk is a
// usage error (exit 2, the flag named) before any model loads.
TEST(CliNumbersTest, DecoderRejectsABadPackedWeightBound) {
  std::string bin = IcaeBinary();
  bin = bin.substr(0, bin.rfind("/tools/")) + "/decoder_service/decoder_service";
  std::string out, err;
  const int rc = RunCommand(bin + " --store=memory:// --metrics_port=-1 --max_packed_weight_bytes=12abc", &out, &err);
  EXPECT_EQ(rc, 2) << err;
  EXPECT_NE(err.find("--max_packed_weight_bytes"), std::string::npos) << err;
}
#endif

// --weights bf16|int8 (decode weights): anything else is a usage error (exit 2) naming the flag
// and the two formats, on every command that takes it, before any model loads; `bench decode
// --weights int8 --json` reports the format and the int8 copies' bytes.
TEST(CliNumbersTest, WeightsFlagTakesBf16OrInt8) {
  const std::string model = DefaultModelDir();
  std::vector<std::string> commands = {
      IcaeBinary() + " bench decode --layers 1 --hidden 64 --heads 2 --kv-heads 1 --intermediate 64 --vocab 64",
      IcaeBinary() + " run --model " + model + " --prompt hi"};
#ifdef ICAE_TEST_SERVICES
  std::string bin = IcaeBinary();
  bin = bin.substr(0, bin.rfind("/tools/")) + "/decoder_service/decoder_service";
  commands.push_back(bin + " --store=memory:// --metrics_port=-1");
#endif
  for (const std::string& c : commands) {
    std::string out, err;
    const bool service = c.find("decoder_service") != std::string::npos;
    const std::string cmd = c + (service ? " --weights=q4_0" : " --weights q4_0");
    EXPECT_EQ(RunCommand(cmd, &out, &err), 2) << cmd << "\n" << err;
    EXPECT_NE(err.find("--weights"), std::string::npos) << cmd << "\n" << err;
    EXPECT_NE(err.find("bf16 or int8"), std::string::npos) << cmd << "\n" << err;
  }
  std::string out, err;
  const std::string bench = IcaeBinary() + " bench decode --json --hidden 64 --layers 2 --heads 4 --kv-heads 2 "
                            "--intermediate 128 --vocab 256 --prompt-tokens 16 --decode-tokens 8 --reps 1 --threads 1";
  ASSERT_EQ(RunCommand(bench + " --weights int8", &out, &err), 0) << err;
  const nlohmann::json q = nlohmann::json::parse(out);
  EXPECT_EQ(q["weights"], "int8");
  // 2 layers · (qkv 128 rows, o 64, gate/up 256, down 64 over 128 inputs) + lm_head 256 rows,
  // 1088 bytes per 32 × 32 block.
  EXPECT_EQ(q["int8_weight_bytes"], 1088 * (2 * (4 * 2 + 2 * 2 + 8 * 2 + 2 * 4) + 8 * 2));
  EXPECT_GT(q["decode_tok_s"].get<double>(), 0);
  ASSERT_EQ(RunCommand(bench, &out, &err), 0) << err;
  const nlohmann::json b = nlohmann::json::parse(out);
  EXPECT_EQ(b["weights"], "bf16");
  EXPECT_EQ(b["int8_weight_bytes"], 0);
  // Fewer bytes per decode token with int8 weights.
  EXPECT_LT(q["decode_mb_per_token"].get<double>(), b["decode_mb_per_token"].get<double>());
}

#ifdef ICAE_TEST_SERVICES
// `icae ask` retries UNAVAILABLE with back-off (here: nothing listens), --retries times, then
// reports the status; its bounds are checked at and past them.
TEST(CliNumbersTest, AskRetriesUnavailableThenFails) {
  std::string out, err;
  const std::string ask = IcaeBinary() + " ask --encoder 127.0.0.1:1 --decoder 127.0.0.1:1 --text hi --verbose";
  const int rc = RunCommand(ask + " --retries 2 --backoff-ms 1 --timeout 2", &out, &err);
  EXPECT_NE(rc, 0) << err;
  EXPECT_NE(err.find("UNAVAILABLE"), std::string::npos) << err;
  size_t retries = 0;
  for (size_t at = err.find("retrying"); at != std::string::npos; at = err.find("retrying", at + 1)) ++retries;
  EXPECT_EQ(retries, 2u) << err;
  // At the bounds: 100 retries without a pause, and the longest pause with no retry.
  EXPECT_EQ(RunCommand(ask + " --retries 100 --backoff-ms 0 --timeout 2", &out, &err), 1) << err;
  retries = 0;
  for (size_t at = err.find("retrying"); at != std::string::npos; at = err.find("retrying", at + 1)) ++retries;
  EXPECT_EQ(retries, 100u);
  EXPECT_EQ(RunCommand(ask + " --retries 0 --backoff-ms 60000 --timeout 2", &out, &err), 1) << err;
  EXPECT_EQ(RunCommand(ask + " --retries 101", &out, &err), 2) << err;
  EXPECT_EQ(RunCommand(ask + " --backoff-ms 60001", &out, &err), 2) << err;
  EXPECT_EQ(RunCommand(ask + " --retries -1", &out, &err), 2) << err;
}
#endif

}  // namespace
}  // namespace icae
