// Matrix-vector products for decode steps on CPU. A one-row bf16 product is memory-bound:
// LibTorch 1.13's oneDNN path streams weights at ~22 GB/s here, well under the machine's
// bandwidth, and it is most of a decode step. This kernel reads each weight once (widened to
// float32 for AVX-512 FMAs with up to 8 input rows), split over threads by output rows. A
// row's result does not depend on how many rows are multiplied with it.
#ifndef ICAE_COMMON_MODEL_CPU_GEMV_H_
#define ICAE_COMMON_MODEL_CPU_GEMV_H_

#include <torch/torch.h>

namespace icae {

// True when this CPU (and build) can run the bf16 GEMV kernel.
bool CpuBf16GemvAvailable();

// y = x · wᵀ for few-row x ([m, k], m <= 8; more rows go to torch::linear) and w [n, k], both bf16, contiguous, on CPU.
// Falls back to torch::linear when the kernel does not apply (other dtypes/devices, many
// rows, autograd recording).
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_CPU_GEMV_H_
