// Matrix-vector products for decode steps on CPU. A one-row bf16 product is memory-bound:
// LibTorch 1.13's oneDNN path streams weights at ~22 GB/s here, well under the machine's
// bandwidth, and it is most of a decode step. This kernel reads each weight once with
// AVX-512 BF16 dot products, split over threads by output rows.
#ifndef ICAE_COMMON_MODEL_CPU_GEMV_H_
#define ICAE_COMMON_MODEL_CPU_GEMV_H_

#include <torch/torch.h>

namespace icae {

// True when this CPU (and build) can run the bf16 GEMV kernel.
bool CpuBf16GemvAvailable();

// y = x · wᵀ for few-row x ([m, k], m <= 2; more rows go to torch::linear) and w [n, k], both bf16, contiguous, on CPU.
// Falls back to torch::linear when the kernel does not apply (other dtypes/devices, many
// rows, autograd recording).
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_CPU_GEMV_H_
