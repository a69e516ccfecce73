// Intra-op threads for the scheduler's decode steps.
//
// A decode step of a small model is a few hundred microseconds of work split into ~20 parallel
// regions. In the service it shares the cores with the threads that stream its tokens (the
// writer thread, gRPC, and on one host the clients): whenever one of them takes the core of an
// OpenMP worker, the step waits at the region's join until it is back. Measured on 2 cores with
// the default model through the services: one stream's forward took 0.65 ms on 2 threads and
// 0.31 ms on 1 (0.27 ms on 2 threads with nothing else running). A large model's step is long
// enough that the split wins anyway. Which one wins depends on the model, the batch, the host
// and its load, so in auto mode the scheduler measures it: per batch-size class (1, 2-3, 4-7,
// 8-15, ...) it times decode steps on one thread and on all, alternating, takes the faster by
// the median, uses it, and measures again every kReprobeSteps steps of that class.
//
// Only decode-only steps adapt (and are timed): their products run on our own kernels, which
// give the same bits for any split of the threads (tests/unit/model_test.cc), so greedy output
// does not depend on the choice. Steps that prefill a short prompt (beside them or alone) with
// no more rows than the packed kernel takes adapt the same way, timed apart from decode steps by
// their row count; larger prefills keep every thread.
#ifndef ICAE_DECODER_SERVICE_STEP_THREADS_H_
#define ICAE_DECODER_SERVICE_STEP_THREADS_H_

#include <cstdint>
#include <vector>

namespace icae::decoder {

class StepThreads {
 public:
  static constexpr int kSamples = 8;             // steps timed per candidate in a probe
  static constexpr int64_t kReprobeSteps = 4096;  // steps of a class between probes

  // max_threads: the process's intra-op threads. fixed > 0: every decode step uses
  // min(fixed, max_threads), nothing is measured; 0: auto.
  StepThreads(int max_threads, int fixed);

  // Threads for a decode step of `batch` sequences.
  int Choose(int64_t batch);
  // The step just run with Choose(batch)'s threads took `seconds`.
  void Record(int64_t batch, int threads, double seconds);

  // Sets the calling thread's OpenMP team size for its next parallel regions (LibTorch's
  // at::parallel_for and oneDNN read it per thread); a no-op in builds without OpenMP.
  static void Apply(int threads);

 private:
  struct Class {
    std::vector<double> samples[2];  // [0]: one thread, [1]: all
    int choice = -1;                 // -1: probing
    int64_t since_probe = 0;
    int next = 1;  // the candidate the next probing step uses
  };
  Class& ClassOf(int64_t batch);

  int max_threads_, fixed_;
  std::vector<Class> classes_;
};

}  // namespace icae::decoder

#endif  // ICAE_DECODER_SERVICE_STEP_THREADS_H_
