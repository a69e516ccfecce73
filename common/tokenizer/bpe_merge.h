// The merge loop shared by both tokenizers: repeatedly merge the adjacent pair whose merged
// piece has the highest score, leftmost pair on a tie, until no adjacent pair forms a piece.
// This is what SentencePiece's bpe_model.cc and llama2.c's encode() compute; doing it with a
// heap of candidate pairs over a linked list (as SentencePiece does) makes it O(n log n)
// instead of llama2.c's O(n^2) rescans, which matters for 100 KB contexts.
#ifndef ICAE_COMMON_TOKENIZER_BPE_MERGE_H_
#define ICAE_COMMON_TOKENIZER_BPE_MERGE_H_

#include <algorithm>
#include <cstdint>
#include <vector>

namespace icae::tokenizer_internal {

// Links of one symbol in the sequence being merged. Symbols keep their original index, so
// "leftmost" is "smallest index" throughout.
struct BpeLink {
  int32_t prev = -1;
  int32_t next = -1;
  uint32_t version = 0;  // bumped whenever the symbol changes, to spot stale candidates
  bool alive = true;
  bool frozen = false;  // never merged (SentencePiece user-defined symbols)
};

// A pair that may be merged, as found when its two symbols became adjacent.
struct BpeCandidate {
  float score;
  int32_t left;
  int32_t right;
  int32_t merged;
  uint32_t left_version;
  uint32_t right_version;
};

// Runs the merges over links[0..n). The callbacks see symbol indices:
//   bool try_pair(int32_t left, int32_t right, float* score, int32_t* merged)
//     -> whether left+right forms a mergeable piece; sets its score and id.
//   void apply(int32_t left, int32_t right, int32_t merged)
//     -> replace the left symbol by the merged piece (the right one disappears).
// `heap` is scratch space (cleared here), passed in so callers can reuse it.
template <typename TryPair, typename Apply>
void RunBpeMerges(std::vector<BpeLink>& links, TryPair try_pair, Apply apply,
                  std::vector<BpeCandidate>* heap) {
  // std heap functions keep the "largest" on top: best score, then smallest left index.
  auto worse = [](const BpeCandidate& a, const BpeCandidate& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  heap->clear();
  auto maybe_push = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0 || links[left].frozen || links[right].frozen) return;
    BpeCandidate c;
    if (!try_pair(left, right, &c.score, &c.merged)) return;
    c.left = left;
    c.right = right;
    c.left_version = links[left].version;
    c.right_version = links[right].version;
    heap->push_back(c);
    std::push_heap(heap->begin(), heap->end(), worse);
  };

  for (size_t i = 1; i < links.size(); ++i) {
    if (links[i].prev == static_cast<int32_t>(i) - 1) {
      maybe_push(static_cast<int32_t>(i) - 1, static_cast<int32_t>(i));
    }
  }
  while (!heap->empty()) {
    std::pop_heap(heap->begin(), heap->end(), worse);
    const BpeCandidate top = heap->back();
    heap->pop_back();
    BpeLink& l = links[top.left];
    BpeLink& r = links[top.right];
    // Stale: one side was merged into something else since this pair was found.
    if (!l.alive || !r.alive || l.version != top.left_version ||
        r.version != top.right_version || l.next != top.right) {
      continue;
    }
    apply(top.left, top.right, top.merged);
    l.next = r.next;
    if (r.next >= 0) links[r.next].prev = top.left;
    r.alive = false;
    ++l.version;
    maybe_push(l.prev, top.left);
    maybe_push(top.left, l.next);
  }
}

}  // namespace icae::tokenizer_internal

#endif  // ICAE_COMMON_TOKENIZER_BPE_MERGE_H_
