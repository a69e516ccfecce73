#include "common/util/device.h"

#include <torch/cuda.h>

#include <cctype>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace icae {

absl::StatusOr<torch::Device> ParseDevice(const std::string& name) {
  auto bad = [&]() {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown device '", name, "' (--device takes cpu, cuda or cuda:N)"));
  };
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name == "cuda") return torch::Device(torch::kCUDA, 0);
  const std::string prefix = "cuda:";
  if (name.rfind(prefix, 0) != 0) return bad();
  const std::string index = name.substr(prefix.size());
  // Digits only: SimpleAtoi would also take "+1" or " 1".
  if (index.empty() || index.size() > 3) return bad();
  for (char ch : index) {
    if (!std::isdigit(static_cast<unsigned char>(ch))) return bad();
  }
  int n = 0;
  if (!absl::SimpleAtoi(index, &n) || n > 127) return bad();  // c10 device indices are int8
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(n));
}

absl::Status CheckDeviceAvailable(const torch::Device& device) {
  if (device.is_cpu()) return absl::OkStatus();
  if (!device.is_cuda()) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported device '", device.str(), "'"));
  }
  // at::hasCUDA: whether the LibTorch this binary runs on was built with CUDA (Debian's is not).
  if (!at::hasCUDA()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device ", device.str(), ": this build's LibTorch has no CUDA support (build against a "
        "CUDA LibTorch, see README \"GPU build\"), use --device cpu"));
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("--device ", device.str(), ": no CUDA device available (driver or "
                     "CUDA_VISIBLE_DEVICES)"));
  }
  const int64_t index = device.has_index() ? device.index() : 0;
  if (index >= count) {
    return absl::FailedPreconditionError(absl::StrCat("--device ", device.str(), ": CUDA device ", index,
                                                      " not available (", count, " device",
                                                      count == 1 ? "" : "s", ": cuda:0..cuda:",
                                                      count - 1, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<torch::Device> ResolveDevice(const std::string& name) {
  auto d = ParseDevice(name);
  if (!d.ok()) return d.status();
  if (auto st = CheckDeviceAvailable(*d); !st.ok()) return st;
  return *d;
}

void SynchronizeDevice(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

}  // namespace icae
