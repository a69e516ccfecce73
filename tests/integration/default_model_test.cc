// The embedded default model (models/default): it loads, reconstructs held-out passages as
// well as its EVAL table says (same passages, same arithmetic as `icae eval`), and the CLI
// uses it when no --model/--adapter is given.
#include <c10/core/InferenceMode.h>
#include <algorithm>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/icae/adapter.h"
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
