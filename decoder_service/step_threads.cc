#include "decoder_service/step_threads.h"

#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <ATen/Parallel.h>

namespace icae::decoder {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

StepThreads::StepThreads(int max_threads, int fixed)
    : max_threads_(std::max(1, max_threads)), fixed_(std::max(0, fixed)) {}

StepThreads::Class& StepThreads::ClassOf(int64_t batch) {
  size_t c = 0;  // the bit width of batch: 1 → 1, 2-3 → 2, 4-7 → 3, ...
  for (uint64_t b = static_cast<uint64_t>(std::max<int64_t>(1, batch)); b != 0; b >>= 1) ++c;
  if (classes_.size() <= c) classes_.resize(c + 1);
  return classes_[c];
}

int StepThreads::Choose(int64_t batch) {
  if (fixed_ > 0) return std::min(fixed_, max_threads_);
  if (max_threads_ == 1) return 1;
  Class& k = ClassOf(batch);
  if (k.choice >= 0) return k.choice == 0 ? 1 : max_threads_;
  return k.next == 0 ? 1 : max_threads_;
}

void StepThreads::Record(int64_t batch, int threads, double seconds) {
  if (fixed_ > 0 || max_threads_ == 1) return;
  Class& k = ClassOf(batch);
  if (k.choice >= 0) {
    if (++k.since_probe >= kReprobeSteps) {  // measure again: the load may have changed
      k.choice = -1;
      k.since_probe = 0;
      k.samples[0].clear();
      k.samples[1].clear();
      k.next = 1;
    }
    return;
  }
  const int which = threads == 1 ? 0 : 1;
  if (static_cast<int>(k.samples[which].size()) < kSamples) k.samples[which].push_back(seconds);
  if (static_cast<int>(k.samples[0].size()) >= kSamples && static_cast<int>(k.samples[1].size()) >= kSamples) {
    k.choice = Median(k.samples[0]) <= Median(k.samples[1]) ? 0 : 1;
    k.since_probe = 0;
    return;
  }
  k.next = 1 - which;  // alternate, so both see the same stretch of load
}

void StepThreads::Apply(int threads) {
#ifdef _OPENMP
  at::get_num_threads();  // LibTorch's per-thread initialisation first, so it does not undo this
  omp_set_num_threads(std::max(1, threads));
#else
  (void)threads;
#endif
}

}  // namespace icae::decoder
