// Metrics and the instruction-data generator.
#include <gtest/gtest.h>

#include "common/train/instructions.h"
#include "common/train/metrics.h"

namespace icae::train {
namespace {

TEST(TrainMetricsTest, Bleu4) {
  std::vector<int64_t> ref{1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_DOUBLE_EQ(Bleu4(ref, ref), 1.0);
  EXPECT_DOUBLE_EQ(Bleu4({9, 9, 9, 9, 9}, ref), 0.0);
  EXPECT_DOUBLE_EQ(Bleu4({}, ref), 0.0);
  // One wrong token in the middle: p1 = 7/8, p2 = 5/7, p3 = 3/6, p4 = 2/5 (no brevity penalty).
  std::vector<int64_t> hyp{1, 2, 3, 4, 0, 6, 7, 8};
  EXPECT_NEAR(Bleu4(hyp, ref), std::pow(7.0 / 8 * 5.0 / 7 * 3.0 / 6 * 1.0 / 5, 0.25), 1e-12);
  // A prefix: perfect precisions, brevity penalty exp(1 - 8/6).
  std::vector<int64_t> prefix{1, 2, 3, 4, 5, 6};
  EXPECT_NEAR(Bleu4(prefix, ref), std::exp(1.0 - 8.0 / 6.0), 1e-12);
}

TEST(TrainMetricsTest, TokenAccuracyAndAnswers) {
  EXPECT_DOUBLE_EQ(TokenAccuracy({1, 2, 9}, {1, 2, 3, 4}), 0.5);
  EXPECT_TRUE(AnswerExactMatch(" The cat.", "the  cat"));
  EXPECT_FALSE(AnswerExactMatch("the dog", "the cat"));
  EXPECT_DOUBLE_EQ(AnswerF1("the cat sat", "the cat"), 0.8);
  EXPECT_DOUBLE_EQ(AnswerF1("", "x"), 0.0);
}

TEST(TrainMetricsTest, SplitSentences) {
  auto s = SplitSentences("Hello there. How are\nyou? Fine! e.g. this stays. \"Quoted\" too.");
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[1], "How are you?");
  EXPECT_EQ(s[2], "Fine! e.g. this stays.");  // no capital after "!"
  EXPECT_EQ(s[3], "\"Quoted\" too.");
}

std::string SampleText() {
  std::string t;
  const char* words[] = {"river", "stone", "light", "garden", "window", "horse", "winter",
                         "bread", "candle", "forest", "silver", "morning"};
  for (int i = 0; i < 300; ++i) {
    t += "The " + std::string(words[i % 12]) + " was near the " + words[(i * 5 + 3) % 12] +
         " and " + words[(i * 7 + 1) % 12] + " number " + std::to_string(i) + ". ";
    if (i % 9 == 0) t += "\n";
  }
  return t;
}

TEST(TrainMetricsTest, InstructionsAreReproducibleAndDerivable) {
  InstructionGenOptions o;
  o.count = 200;
  o.seed = 5;
  o.min_words = 20;
  o.max_words = 60;
  auto a = GenerateInstructions(SampleText(), o);
  auto b = GenerateInstructions(SampleText(), o);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(a->size(), 200u);
  std::set<std::string> tasks;
  for (size_t i = 0; i < a->size(); ++i) {
    const auto& e = (*a)[i];
    EXPECT_EQ(InstructionToJsonLine(e), InstructionToJsonLine((*b)[i]));
    tasks.insert(e.task);
    if (e.task == "first_sentence") EXPECT_EQ(e.input.rfind(e.answer, 0), 0u);
    if (e.task == "last_sentence" || e.task == "continue_phrase" || e.task == "which_word") {
      EXPECT_NE(e.input.find(e.answer), std::string::npos) << e.prompt;
    }
    if (e.task == "count_sentences") {
      EXPECT_EQ(std::to_string(SplitSentences(e.input).size()), e.answer);
    }
  }
  EXPECT_EQ(tasks.size(), 6u);
  o.seed = 6;
  auto c = GenerateInstructions(SampleText(), o);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(InstructionToJsonLine((*a)[0]) + InstructionToJsonLine((*a)[1]),
            InstructionToJsonLine((*c)[0]) + InstructionToJsonLine((*c)[1]));
}

}  // namespace
}  // namespace icae::train
