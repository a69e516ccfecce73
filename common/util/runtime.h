// Process-wide runtime set-up for LibTorch inference: thread count and allocator behaviour.
#ifndef ICAE_COMMON_UTIL_RUNTIME_H_
#define ICAE_COMMON_UTIL_RUNTIME_H_

namespace icae {

struct RuntimeOptions {
  // Intra-op threads for LibTorch; <= 0 means all cores. LibTorch 1.13 starts with one.
  int threads = 0;
  // Keep large freed buffers in the process instead of returning them to the kernel after
  // every step (glibc's default mmap/trim thresholds cost ~4x in a bf16 prefill).
  bool keep_freed_memory = true;
};

// Applies the options; call once at start-up, before the first tensor operation.
void ConfigureRuntime(const RuntimeOptions& options);

// Number of online cores.
int NumCores();

}  // namespace icae

#endif  // ICAE_COMMON_UTIL_RUNTIME_H_
