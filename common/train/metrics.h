// Evaluation metrics on token ids and text.
#ifndef ICAE_COMMON_TRAIN_METRICS_H_
#define ICAE_COMMON_TRAIN_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace icae::train {

// Sentence BLEU-4 of `hyp` against one reference: geometric mean of clipped 1..4-gram
// precisions times the brevity penalty, no smoothing (0 when some order has no match or the
// hypothesis is shorter than 4 tokens while the reference is not).
double Bleu4(const std::vector<int64_t>& hyp, const std::vector<int64_t>& ref);

// Fraction of reference positions i with hyp[i] == ref[i] (positions missing from hyp count
// as wrong).
double TokenAccuracy(const std::vector<int64_t>& hyp, const std::vector<int64_t>& ref);

// SQuAD-style answer normalisation: lower case, punctuation dropped, whitespace collapsed.
std::string NormalizeAnswer(const std::string& s);
// Exact match of normalised answers.
bool AnswerExactMatch(const std::string& pred, const std::string& gold);
// Bag-of-words F1 of normalised answers.
double AnswerF1(const std::string& pred, const std::string& gold);

}  // namespace icae::train

#endif  // ICAE_COMMON_TRAIN_METRICS_H_
