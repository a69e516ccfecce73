// The embedded default model (models/default): it loads, reconstructs held-out passages as
// well as its EVAL table says (same passages, same arithmetic as `icae eval`), and the CLI
// uses it when no --model/--adapter is given.
#include <c10/core/InferenceMode.h>
#include <algorithm>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/icae/adapter.h"
#include "common/model/generate.h"
#include "common/model/transformer.h"
#include "common/tokenizer/tokenizer.h"
#include "common/train/evaluate.h"
#include "common/train/text_data.h"
#include "common/util/paths.h"
#include "tests/test_util.h"

namespace icae {
namespace {

using ::icae::testing::SharedDir;

// Removes WikiText's literal "<unk>" markers as split2 does (sed 's/ <unk>//g; s/<unk>//g').
std::string StripUnk(std::string text) {
  for (const std::string marker : {" <unk>", "<unk>"}) {
    for (size_t at = text.find(marker); at != std::string::npos; at = text.find(marker, at)) {
      text.erase(at, marker.size());
    }
  }
  return text;
}

// The held-out split ("split2") of scripts/train-default-model.sh: the last 5% of the lines of
// each corpus, the small corpora first, then gutenberg/*.txt in C-locale order (wc -l
// arithmetic: k = newlines * 95 / 100, held-out = lines k+1 …).
std::string HeldOutText(const std::string& corpora) {
  std::vector<std::string> files;
  for (const char* name : {"tinyshakespeare", "wikitext2-valid", "wikitext2-test",
                           "tinystories_sample"}) {
    files.push_back(corpora + "/" + name + ".txt");
  }
  std::vector<std::string> books;
  for (const auto& e : std::filesystem::directory_iterator(corpora + "/gutenberg")) {
    if (e.path().extension() == ".txt") books.push_back(e.path().string());
  }
  std::sort(books.begin(), books.end());
  files.insert(files.end(), books.begin(), books.end());
  std::string out;
  for (const std::string& path : files) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    int64_t newlines = 0;
    for (char c : text) newlines += c == '\n';
    const int64_t k = newlines * 95 / 100;
    size_t pos = 0;
    for (int64_t i = 0; i < k && pos != std::string::npos; ++i) {
      pos = text.find('\n', pos);
      if (pos != std::string::npos) ++pos;
    }
    if (pos != std::string::npos) out += StripUnk(text.substr(pos));
  }
  return out;
}

class DefaultModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = DefaultModelDir();
    if (!std::filesystem::exists(dir_ + "/model.safetensors") ||
        !std::filesystem::exists(DefaultAdapterPath())) {
      GTEST_SKIP() << "no default model in " << dir_
                   << " (train it with scripts/train-default-model.sh)";
    }
  }
  std::string dir_;
};

TEST_F(DefaultModelTest, ReconstructsHeldOutPassagesAsReported) {
  const std::string corpora = SharedDir() + "/corpora";
  ICAE_REQUIRE_TESTDATA(corpora + "/tinyshakespeare.txt");
  ICAE_REQUIRE_TESTDATA(corpora + "/gutenberg");
  std::ifstream ej(dir_ + "/eval.json");
  ASSERT_TRUE(ej) << "models/default/eval.json is missing (icae eval --json writes it)";
  auto j = nlohmann::json::parse(ej, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  double reported = -1;
  int64_t passages = 0;
  for (const auto& r : j["autoencode"]) {
    if (r["length"] == 128) {
      reported = r["bleu4"].get<double>();
      passages = r["passages"].get<int64_t>();
    }
  }
  ASSERT_GE(reported, 0) << "eval.json has no 128-token autoencoding row";

  c10::InferenceMode guard;
  auto model = Transformer::Load(dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  auto tok = Tokenizer::LoadFromModelDir(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto adapter = LoadIcaeAdapter(DefaultAdapterPath(), (*model)->config(), torch::kFloat32);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->config.mem_size * adapter->config.mean_compression_rate, 128);

  const std::string tmp = ::icae::testing::MakeTempDir("default_model");
  const std::string held = tmp + "/heldout.txt";
  std::ofstream(held) << HeldOutText(corpora);
  auto stream = train::TokenizeTextFile(**tok, held);
  ASSERT_TRUE(stream.ok()) << stream.status();
  auto r = train::EvalAutoencode(**model, *adapter, *stream, 128, passages);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->bleu4, reported - 0.03) << "reported BLEU-4 " << reported;
  // The exposure-bias pair: a greedy correct prefix is made of position-aligned matches, and
  // teacher forcing is a fraction.
  EXPECT_GE(r->teacher_forced_accuracy, 0.0);
  EXPECT_LE(r->teacher_forced_accuracy, 1.0);
  EXPECT_GE(r->greedy_correct_prefix, 0.0);
  EXPECT_LE(r->greedy_correct_prefix, r->token_accuracy * 127 + 1e-9);
  std::filesystem::remove_all(tmp);
}

// Perplexity of `ids` in windows of `window` positions (BOS first), fed in chunks of
// kMaxPackedRows positions through the cache: decode-sized products, so a model with int8
// weights runs every product of every position on its int8 copies.
double ChunkedPerplexity(const Transformer& model, const std::vector<int32_t>& ids, int64_t window,
                         int64_t windows) {
  double nll = 0;
  int64_t count = 0;
  for (int64_t w = 0; w < windows; ++w) {
    std::vector<int64_t> win = {model.config().bos_token_id};
    for (int64_t i = 0; i + 1 < window; ++i) win.push_back(ids.at(w * (window - 1) + i));
    KVCache cache = model.NewCache(window);
    for (int64_t start = 0; start + 1 < window; start += kMaxPackedRows) {
      const int64_t n = std::min<int64_t>(kMaxPackedRows, window - 1 - start);
      std::vector<SequenceInput> b(1);
      b[0].ids = torch::tensor(std::vector<int64_t>(win.begin() + start, win.begin() + start + n), torch::kInt64);
      b[0].cache = &cache;
      b[0].num_outputs = -1;
      auto logits = model.Forward(b);
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (!logits.ok()) return -1;
      auto logp = torch::log_softmax(*logits, -1);
      auto next = torch::tensor(std::vector<int64_t>(win.begin() + start + 1, win.begin() + start + n + 1), torch::kInt64);
      nll -= logp.gather(1, next.unsqueeze(1)).sum().item<double>();
      count += n;
    }
  }
  return std::exp(nll / count);
}

// int8 decode weights (ModelLoadOptions::weights): held-out perplexity within 1% of the bf16
// model's, measured the way decode steps run (every product on the int8 copies); a short
// prompt's greedy continuations are printed side by side.
TEST_F(DefaultModelTest, Int8DecodeWeightsKeepHeldOutPerplexityWithinOnePercent) {
  const std::string corpora = SharedDir() + "/corpora";
  ICAE_REQUIRE_TESTDATA(corpora + "/tinyshakespeare.txt");
  ICAE_REQUIRE_TESTDATA(corpora + "/gutenberg");
  c10::InferenceMode guard;
  ModelLoadOptions lo;
  lo.dtype = torch::kBFloat16;
  auto bf = Transformer::Load(dir_, lo);
  ASSERT_TRUE(bf.ok()) << bf.status();
  lo.weights = WeightsFormat::kInt8;
  auto q8 = Transformer::Load(dir_, lo);
  ASSERT_TRUE(q8.ok()) << q8.status();
  ASSERT_EQ((*q8)->weights_format(), WeightsFormat::kInt8);
  EXPECT_GT((*q8)->int8_weight_bytes(), 0);
  auto tok = Tokenizer::LoadFromModelDir(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status();

  const std::string tmp = ::icae::testing::MakeTempDir("default_model_int8");
  const std::string held = tmp + "/heldout.txt";
  std::ofstream(held) << HeldOutText(corpora);
  auto stream = train::TokenizeTextFile(**tok, held);
  ASSERT_TRUE(stream.ok()) << stream.status();
  constexpr int64_t kWindow = 257, kWindows = 16;  // 4096 predicted tokens
  ASSERT_GE(static_cast<int64_t>(stream->size()), kWindows * kWindow);
  const double ppl_bf16 = ChunkedPerplexity(**bf, *stream, kWindow, kWindows);
  const double ppl_int8 = ChunkedPerplexity(**q8, *stream, kWindow, kWindows);
  std::cout << "held-out perplexity (" << kWindows * (kWindow - 1) << " tokens): bf16 " << ppl_bf16
            << ", int8 " << ppl_int8 << " (" << 100.0 * (ppl_int8 / ppl_bf16 - 1) << "%)\n";
  EXPECT_GT(ppl_bf16, 1.0);
  EXPECT_LT(std::abs(ppl_int8 / ppl_bf16 - 1), 0.01);

  const std::string prompt = "The king walked into the garden, and";
  GenerateOptions go;
  go.max_new_tokens = 40;
  go.ignore_eos = true;
  std::vector<int64_t> ids;
  for (int32_t id : (*tok)->Encode(prompt, /*add_bos=*/true)) ids.push_back(id);
  std::string texts[2];
  for (int i = 0; i < 2; ++i) {
    SequenceInput in;
    in.ids = torch::tensor(ids, torch::kInt64);
    auto r = Generate(i == 0 ? **bf : **q8, in, go);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->ids.size(), 40u);
    std::vector<int32_t> out(r->ids.begin(), r->ids.end());
    auto text = (*tok)->Decode(out);
    ASSERT_TRUE(text.ok()) << text.status();
    texts[i] = *text;
  }
  std::cout << "greedy, prompt \"" << prompt << "\"\n  bf16: " << texts[0] << "\n  int8: " << texts[1] << "\n";
  std::filesystem::remove_all(tmp);
}

TEST_F(DefaultModelTest, CliAutoencodesWithoutModelFlags) {
  const std::string tmp = ::icae::testing::MakeTempDir("default_cli");
  const std::string ctx = tmp + "/ctx.txt";
  std::ofstream(ctx) << "The king walked into the garden, and the queen followed him with a "
                        "lantern in her hand.";
  std::string out, err;
  const int rc = ::icae::testing::RunCommand(
      ::icae::testing::IcaeBinary() + " run --context-file " + ctx +
          " --mode autoencode --max-new-tokens 48 --threads 1",
      &out, &err);
  EXPECT_EQ(rc, 0) << err;
  EXPECT_FALSE(out.empty());
  std::filesystem::remove_all(tmp);
}

}  // namespace
}  // namespace icae
