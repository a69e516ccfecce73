#include "common/train/instructions.h"

#include <cctype>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace icae::train {
namespace {

std::vector<std::string> Words(const std::string& s) {
  std::vector<std::string> w;
  std::istringstream in(s);
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

// A word stripped of surrounding punctuation, for "which word" questions.
std::string Bare(const std::string& w) {
  size_t b = 0, e = w.size();
  while (b < e && std::ispunct(static_cast<unsigned char>(w[b]))) ++b;
  while (e > b && std::ispunct(static_cast<unsigned char>(w[e - 1]))) --e;
  return w.substr(b, e - b);
}

bool IsAlphaWord(const std::string& w) {
  // "unk" is wikitext's <unk> placeholder, not a word of the text.
  if (w.size() < 3 || w == "unk") return false;
  for (unsigned char c : w) {
    if (!std::isalpha(c)) return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> SplitSentences(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    auto w = Words(cur);
    if (!w.empty()) out.push_back(absl::StrJoin(w, " "));
    cur.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i] == '\n' || text[i] == '\t' || text[i] == '\r' ? ' ' : text[i];
    cur.push_back(c);
    if ((c == '.' || c == '!' || c == '?') && i + 2 < text.size() &&
        std::isspace(static_cast<unsigned char>(text[i + 1]))) {
      size_t j = i + 1;
      while (j < text.size() && std::isspace(static_cast<unsigned char>(text[j]))) ++j;
      if (j < text.size() && (std::isupper(static_cast<unsigned char>(text[j])) || text[j] == '"')) {
        flush();
      }
    }
  }
  flush();
  return out;
}

std::string InstructionToJsonLine(const InstructionExample& e) {
  nlohmann::json j;
  j["input"] = e.input;
  j["prompt"] = e.prompt;
  j["answer"] = e.answer;
  j["task"] = e.task;
  return j.dump();
}

absl::StatusOr<std::vector<InstructionExample>> GenerateInstructions(
    const std::string& text, const InstructionGenOptions& o) {
  auto sentences = SplitSentences(text);
  // Keep sentences of a sensible size (titles, stage directions and run-ons are skipped).
  std::vector<std::string> s;
  for (auto& x : sentences) {
    const size_t n = Words(x).size();
    if (n >= 3 && n <= 40) s.push_back(x);
  }
  if (s.size() < 20) return absl::InvalidArgumentError("not enough sentences in the text");
  std::set<std::string> vocab_set;
  for (const auto& x : s) {
    for (const auto& w : Words(x)) {
      auto b = Bare(w);
      if (IsAlphaWord(b)) vocab_set.insert(b);
    }
  }
  std::vector<std::string> vocab(vocab_set.begin(), vocab_set.end());
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<size_t> start(0, s.size() - 1);
  std::vector<InstructionExample> out;
  int64_t attempts = 0;
  while (static_cast<int64_t>(out.size()) < o.count) {
    if (++attempts > o.count * 50) {
      return absl::InternalError("could not generate enough examples from this text");
    }
    // A passage: consecutive sentences until min_words is reached (max_words is a bound).
    std::vector<std::string> passage;
    int64_t words = 0;
    for (size_t i = start(rng); i < s.size() && words < o.min_words; ++i) {
      const int64_t n = static_cast<int64_t>(Words(s[i]).size());
      if (words + n > o.max_words) break;
      passage.push_back(s[i]);
      words += n;
    }
    if (words < o.min_words || passage.size() < 2) continue;
    InstructionExample e;
    e.input = absl::StrJoin(passage, " ");
    std::vector<std::string> all = Words(e.input);
    const int task = static_cast<int>(rng() % 6);
    switch (task) {
      case 0:
        e.prompt = "Repeat the first sentence of the text.";
        e.answer = passage.front();
        break;
      case 1:
        e.prompt = "Repeat the last sentence of the text.";
        e.answer = passage.back();
        break;
      case 2: {  // continue after a quoted phrase
        if (all.size() < 12) continue;
        size_t p = rng() % (all.size() - 8);
        std::vector<std::string> phrase(all.begin() + p, all.begin() + p + 3);
        std::vector<std::string> next(all.begin() + p + 3, all.begin() + p + 8);
        e.prompt = absl::StrCat("Continue the text after \"", absl::StrJoin(phrase, " "),
                                "\" with the next five words.");
        e.answer = absl::StrJoin(next, " ");
        break;
      }
      case 3: {  // which of two words occurs
        std::set<std::string> present;
        for (const auto& w : all) present.insert(Bare(w));
        std::vector<std::string> cand;
        for (const auto& w : all) {
          if (IsAlphaWord(Bare(w))) cand.push_back(Bare(w));
        }
        if (cand.empty() || vocab.empty()) continue;
        std::string yes = cand[rng() % cand.size()], no;
        for (int k = 0; k < 20 && no.empty(); ++k) {
          const std::string& w = vocab[rng() % vocab.size()];
          if (!present.count(w)) no = w;
        }
        if (no.empty()) continue;
        const bool first = rng() % 2 == 0;
        e.prompt = absl::StrCat("Which of these words occurs in the text: ", first ? yes : no,
                                " or ", first ? no : yes, "?");
        e.answer = yes;
        break;
      }
      case 4:
        e.prompt = "How many sentences does the text have?";
        e.answer = std::to_string(passage.size());
        break;
      case 5: {  // the word after a word that occurs once
        std::map<std::string, int> count;
        for (const auto& w : all) ++count[w];
        std::vector<size_t> idx;
        for (size_t i = 0; i + 1 < all.size(); ++i) {
          if (count[all[i]] == 1 && IsAlphaWord(all[i])) idx.push_back(i);
        }
        if (idx.empty()) continue;
        size_t i = idx[rng() % idx.size()];
        e.prompt = absl::StrCat("Which word follows \"", all[i], "\" in the text?");
        e.answer = all[i + 1];
        break;
      }
    }
    static const char* kTasks[] = {"first_sentence", "last_sentence", "continue_phrase",
                                   "which_word", "count_sentences", "next_word"};
    e.task = kTasks[task];
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace icae::train
