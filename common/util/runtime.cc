#include "common/util/runtime.h"

#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

#include <torch/torch.h>

namespace icae {

int NumCores() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

void ConfigureRuntime(const RuntimeOptions& options) {
  if (options.keep_freed_memory) {
    // Serve buffers up to 1 GiB from the heap (not fresh mmaps) and never trim the heap top:
    // activation buffers of one step are then reused by the next without page faults.
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, -1);
    mallopt(M_TOP_PAD, 64 << 20);
  }
  int threads = options.threads > 0 ? options.threads : NumCores();
  at::set_num_threads(threads);
  // float32 products go to OpenBLAS, whose own thread pool ignores at::set_num_threads and
  // spins (sched_yield) on every core between calls: bound it by the same count.
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(threads);
}

}  // namespace icae
