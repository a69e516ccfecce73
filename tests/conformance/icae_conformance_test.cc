// Every case of icae-golden: slots within 1e-5 (fp32), decoder inputs, last logits within
// 1e-4, greedy ids identical, for compress, autoencode and instruct; batched = unbatched.
// ICAE_TEST_DEVICE=cuda runs the same cases on a GPU (tolerances x10, tests/testing/device.h).
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/icae/adapter.h"
#include "common/icae/compressor.h"
#include "common/icae/prompt.h"
#include "common/model/safetensors.h"
#include "common/model/transformer.h"
#include "common/util/mapped_file.h"
#include "tests/test_util.h"
#include "tests/testing/device.h"

namespace icae {
namespace {

using json = nlohmann::json;
using ::icae::testing::Tol;

class IcaeGoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::icae::testing::TestDataDir() + "/icae-golden";
    ICAE_REQUIRE_TESTDATA(dir_ + "/cases.json");
    auto m = Transformer::Load(dir_ + "/model", ::icae::testing::TestLoadOptions());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    auto a = LoadIcaeAdapter(dir_ + "/icae_adapter.safetensors", model_->config(), torch::kFloat32,
                             model_->device());
    ASSERT_TRUE(a.ok()) << a.status();
    adapter_ = std::make_unique<IcaeAdapter>(std::move(*a));
    auto e = SafetensorsFile::Open(dir_ + "/expected.safetensors");
    ASSERT_TRUE(e.ok()) << e.status();
    expected_ = std::move(*e);
    cases_ = json::parse(*ReadFileToString(dir_ + "/cases.json"));
    ASSERT_GE(cases_["cases"].size(), 1u);
  }
  torch::Tensor Expected(const std::string& name) {
    auto t = expected_->Load(name, torch::kFloat32);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : torch::Tensor();
  }
  std::vector<int64_t> ExpectedIds(const std::string& name) {
    auto t = expected_->LoadAsStored(name);
    EXPECT_TRUE(t.ok()) << t.status();
    auto c = t->to(torch::kInt64).contiguous();
    return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  }
  void CheckDecode(const std::string& name, PromptMode mode, const torch::Tensor& slots,
                   const std::vector<int64_t>& prompt) {
    SCOPED_TRACE(name);
    auto input = AssembleDecoderInput(*model_, *adapter_, mode, {slots}, prompt);
    ASSERT_TRUE(input.ok()) << input.status();
    auto want_in = Expected(name + ".decoder_inputs_embeds");
    ASSERT_EQ(input->sizes(), want_in.sizes());
    EXPECT_LT((input->cpu() - want_in).abs().max().item<float>(), Tol(1e-5f));
    std::vector<SequenceInput> b(1);
    b[0].embeds = *input;
    auto logits = model_->Forward(b);
    ASSERT_TRUE(logits.ok());
    auto want_logits = Expected(name + ".last_logits");
    EXPECT_LT((logits->squeeze(0).cpu() - want_logits).abs().max().item<float>(), Tol(1e-4f));
    GenerateOptions go;
    go.max_new_tokens = cases_["greedy_max_new_tokens"].get<int64_t>();
    SequenceInput in;
    in.embeds = *input;
    auto gen = Generate(*model_, in, IcaeDecodeOptions(*adapter_, go));
    ASSERT_TRUE(gen.ok()) << gen.status();
    EXPECT_EQ(gen->ids, ExpectedIds(name + ".greedy_ids"));
  }

  c10::InferenceMode guard_;
  std::string dir_;
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<IcaeAdapter> adapter_;
  std::unique_ptr<SafetensorsFile> expected_;
  json cases_;
};

TEST_F(IcaeGoldenTest, SegmentationMatchesReference) {
  for (const auto& c : cases_["cases"]) {
    Segmentation s = SegmentContext(c["length"].get<int64_t>(), 8, 4);
    EXPECT_EQ(s.num_segments, c["num_segments"].get<int64_t>());
    EXPECT_EQ(s.segment_length, c["segment_length"].get<int64_t>());
    std::vector<std::vector<int64_t>> spans;
    for (auto [b, e] : s.spans) spans.push_back({b, e});
    EXPECT_EQ(spans, c["segments"].get<std::vector<std::vector<int64_t>>>());
  }
}

TEST_F(IcaeGoldenTest, CompressAutoencodeAndInstructMatchReference) {
  Compressor compressor(*model_, *adapter_);
  for (const auto& c : cases_["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    auto ids = c["input_ids"].get<std::vector<int64_t>>();
    EXPECT_EQ(ids, ExpectedIds(name + ".input_ids"));
    auto out = compressor.Compress({ids});
    ASSERT_TRUE(out.ok()) << out.status();
    const auto& slots = (*out)[0].slots;
    auto want = Expected(name + ".compress.slots");
    ASSERT_EQ(slots.sizes(), want.sizes());
    EXPECT_LT((slots.cpu() - want).abs().max().item<float>(), Tol(1e-5f));
    EXPECT_EQ((*out)[0].num_segments, c["num_segments"].get<int64_t>());
    // Negative check: with the adapter off the slots differ, and match that reference.
    auto off = compressor.Compress({ids}, /*with_lora=*/false);
    ASSERT_TRUE(off.ok());
    auto want_off = Expected(name + ".compress.slots_lora_disabled");
    EXPECT_LT(((*off)[0].slots.cpu() - want_off).abs().max().item<float>(), Tol(1e-5f));
    EXPECT_GT((want_off - want).abs().max().item<float>(), 1e-3f);

    CheckDecode(name + ".ae", PromptMode::kAutoencode, slots, {});
    auto prompt = c["ft"]["prompt_ids"].get<std::vector<int64_t>>();
    EXPECT_EQ(prompt, ExpectedIds(name + ".ft.prompt_ids"));
    CheckDecode(name + ".ft", PromptMode::kInstruct, slots, prompt);
  }
}

TEST_F(IcaeGoldenTest, BatchedCompressionEqualsOneAtATime) {
  std::vector<std::vector<int64_t>> all;
  for (const auto& c : cases_["cases"]) all.push_back(c["input_ids"].get<std::vector<int64_t>>());
  for (int64_t per_batch : {1, 3, 64}) {
    CompressorOptions o;
    o.max_segments_per_batch = per_batch;
    Compressor compressor(*model_, *adapter_, o);
    auto batched = compressor.Compress(all);
    ASSERT_TRUE(batched.ok()) << batched.status();
    ASSERT_EQ(batched->size(), all.size());
    for (size_t i = 0; i < all.size(); ++i) {
      auto alone = compressor.Compress({all[i]});
      ASSERT_TRUE(alone.ok());
      EXPECT_LT(((*batched)[i].slots - (*alone)[0].slots).abs().max().item<float>(), 1e-5f)
          << "case " << i << " per_batch " << per_batch;
    }
  }
}

TEST_F(IcaeGoldenTest, SeveralSlotSetsConcatenateInOrder) {
  Compressor compressor(*model_, *adapter_);
  auto out = compressor.Compress({cases_["cases"][0]["input_ids"].get<std::vector<int64_t>>(),
                                  cases_["cases"][1]["input_ids"].get<std::vector<int64_t>>()});
  ASSERT_TRUE(out.ok());
  auto two = AssembleDecoderInput(*model_, *adapter_, PromptMode::kAutoencode,
                                  {(*out)[0].slots, (*out)[1].slots}, {});
  ASSERT_TRUE(two.ok());
  auto joined = AssembleDecoderInput(*model_, *adapter_, PromptMode::kAutoencode,
                                     {torch::cat({(*out)[0].slots, (*out)[1].slots}, 0)}, {});
  EXPECT_TRUE(torch::equal(*two, *joined));
  EXPECT_EQ(two->size(0), (*out)[0].slots.size(0) + (*out)[1].slots.size(0) + 1);
}

std::string Join(const std::vector<int64_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s;
}

TEST_F(IcaeGoldenTest, CommandLineCompressAndRunMatchReference) {
  using ::icae::testing::IcaeBinary;
  using ::icae::testing::RunCommand;
  const auto& c = cases_["cases"][3];  // two segments
  const std::string name = c["name"];
  const std::string base = IcaeBinary() + " run --model " + dir_ + "/model --adapter " + dir_ +
                           "/icae_adapter.safetensors --max-new-tokens 12 --print-ids --threads 1" +
                           ::icae::testing::DeviceFlag();
  const std::string ids = Join(c["input_ids"].get<std::vector<int64_t>>());
  std::string out, err;
  ASSERT_EQ(RunCommand(base + " --mode autoencode --context-ids '" + ids + "'", &out, &err), 0) << err;
  EXPECT_EQ(out, Join(ExpectedIds(name + ".ae.greedy_ids")) + "\n");
  ASSERT_EQ(RunCommand(base + " --mode instruct --context-ids '" + ids + "' --prompt '" +
                           c["ft"]["prompt_text"].get<std::string>() + "'", &out, &err), 0) << err;
  EXPECT_EQ(out, Join(ExpectedIds(name + ".ft.greedy_ids")) + "\n");
  // compress → slot file → run from the slots.
  const std::string slots = ::icae::testing::MakeTempDir("icae-slots") + "/s.safetensors";
  ASSERT_EQ(RunCommand(IcaeBinary() + " compress --model " + dir_ + "/model --adapter " + dir_ +
                           "/icae_adapter.safetensors --ids '" + ids + "' --out " + slots +
                           ::icae::testing::DeviceFlag(), &out, &err), 0) << err;
  EXPECT_NE(out.find("slots=16 segments=2"), std::string::npos) << out;
  auto f = SafetensorsFile::Open(slots);
  ASSERT_TRUE(f.ok());
  EXPECT_LT((*(*f)->Load("slots", torch::kFloat32) - Expected(name + ".compress.slots")).abs().max().item<float>(), 1e-5f);
  ASSERT_EQ(RunCommand(base + " --mode autoencode --slots " + slots, &out, &err), 0) << err;
  EXPECT_EQ(out, Join(ExpectedIds(name + ".ae.greedy_ids")) + "\n");
  // Bad input through the command line: ids beyond the vocabulary, unknown mode.
  EXPECT_EQ(RunCommand(base + " --mode autoencode --context-ids '1 2 99999'", &out, &err), 1);
  EXPECT_NE(err.find("99999"), std::string::npos) << err;
  EXPECT_EQ(RunCommand(base + " --mode sing --context-ids '1 2'", &out, &err), 2);
  EXPECT_NE(err.find("unknown mode"), std::string::npos) << err;
}

}  // namespace
}  // namespace icae
