// Where a model's tensors live: "cpu", "cuda" (device 0) or "cuda:N". One parser and one
// availability check for every tool and service, so that a wrong --device fails the same way
// everywhere, before anything is loaded or listens.
#ifndef ICAE_COMMON_UTIL_DEVICE_H_
#define ICAE_COMMON_UTIL_DEVICE_H_

#include <string>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace icae {

// Parses the spelling only (no look at the hardware): "cpu", "cuda", "cuda:N" with N a
// decimal index. INVALID_ARGUMENT naming the accepted forms otherwise.
absl::StatusOr<torch::Device> ParseDevice(const std::string& name);

// OK when tensors can be placed on `device` in this process. FAILED_PRECONDITION when this
// build's LibTorch has no CUDA support, when it finds no CUDA device, or when device N is
// beyond the devices present.
absl::Status CheckDeviceAvailable(const torch::Device& device);

// ParseDevice, then CheckDeviceAvailable.
absl::StatusOr<torch::Device> ResolveDevice(const std::string& name);

// Waits for the work queued on `device` (CUDA runs asynchronously; timing needs this). A no-op
// on CPU.
void SynchronizeDevice(const torch::Device& device);

}  // namespace icae

#endif  // ICAE_COMMON_UTIL_DEVICE_H_
