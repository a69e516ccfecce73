#include "common/train/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <sstream>

namespace icae::train {

double Bleu4(const std::vector<int64_t>& hyp, const std::vector<int64_t>& ref) {
  if (hyp.empty() || ref.empty()) return hyp == ref ? 1.0 : 0.0;
  double log_sum = 0;
  for (size_t n = 1; n <= 4; ++n) {
    if (hyp.size() < n) return ref.size() < n && hyp == ref ? 1.0 : 0.0;
    std::map<std::vector<int64_t>, int64_t> ref_counts;
    for (size_t i = 0; i + n <= ref.size(); ++i) {
      ++ref_counts[std::vector<int64_t>(ref.begin() + i, ref.begin() + i + n)];
    }
    int64_t match = 0, total = 0;
    std::map<std::vector<int64_t>, int64_t> used;
    for (size_t i = 0; i + n <= hyp.size(); ++i) {
      std::vector<int64_t> g(hyp.begin() + i, hyp.begin() + i + n);
      ++total;
      auto it = ref_counts.find(g);
      if (it != ref_counts.end() && used[g] < it->second) {
        ++used[g];
        ++match;
      }
    }
    if (match == 0) return 0.0;
    log_sum += std::log(static_cast<double>(match) / static_cast<double>(total));
  }
  const double c = static_cast<double>(hyp.size()), r = static_cast<double>(ref.size());
  const double bp = c >= r ? 1.0 : std::exp(1.0 - r / c);
  return bp * std::exp(log_sum / 4.0);
}

double TokenAccuracy(const std::vector<int64_t>& hyp, const std::vector<int64_t>& ref) {
  if (ref.empty()) return hyp.empty() ? 1.0 : 0.0;
  int64_t ok = 0;
  for (size_t i = 0; i < ref.size() && i < hyp.size(); ++i) ok += hyp[i] == ref[i];
  return static_cast<double>(ok) / static_cast<double>(ref.size());
}

std::string NormalizeAnswer(const std::string& s) {
  std::string out;
  bool space = false;
  for (unsigned char ch : s) {
    if (std::ispunct(ch)) continue;
    if (std::isspace(ch)) {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(static_cast<char>(std::tolower(ch)));
  }
  return out;
}

bool AnswerExactMatch(const std::string& pred, const std::string& gold) {
  return NormalizeAnswer(pred) == NormalizeAnswer(gold);
}

double AnswerF1(const std::string& pred, const std::string& gold) {
  auto words = [](const std::string& s) {
    std::vector<std::string> w;
    std::istringstream in(NormalizeAnswer(s));
    for (std::string x; in >> x;) w.push_back(x);
    return w;
  };
  auto p = words(pred), g = words(gold);
  if (p.empty() || g.empty()) return p == g ? 1.0 : 0.0;
  std::map<std::string, int64_t> gc;
  for (const auto& x : g) ++gc[x];
  int64_t common = 0;
  for (const auto& x : p) {
    auto it = gc.find(x);
    if (it != gc.end() && it->second > 0) {
      --it->second;
      ++common;
    }
  }
  if (common == 0) return 0.0;
  const double prec = static_cast<double>(common) / p.size(), rec = static_cast<double>(common) / g.size();
  return 2 * prec * rec / (prec + rec);
}

}  // namespace icae::train
