// The device the conformance tests run on: ICAE_TEST_DEVICE (cpu, cuda, cuda:N; default cpu),
// so the same golden cases check a CUDA build on a GPU machine (scripts/gpu-check.sh).
// Results are brought back to the CPU before they are compared with the references.
#ifndef ICAE_TESTS_TESTING_DEVICE_H_
#define ICAE_TESTS_TESTING_DEVICE_H_

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "common/model/transformer.h"
#include "common/util/device.h"

namespace icae::testing {

inline std::string TestDeviceName() {
  const char* e = std::getenv("ICAE_TEST_DEVICE");
  return e != nullptr && *e != '\0' ? e : "cpu";
}

// The device, or a test failure naming why it cannot be used (then the CPU).
inline torch::Device TestDevice() {
  auto d = ResolveDevice(TestDeviceName());
  if (!d.ok()) {
    ADD_FAILURE() << "ICAE_TEST_DEVICE=" << TestDeviceName() << ": " << d.status();
    return torch::kCPU;
  }
  return *d;
}

inline ModelLoadOptions TestLoadOptions(torch::Dtype dtype = torch::kFloat32) {
  ModelLoadOptions o;
  o.dtype = dtype;
  o.device = TestDevice();
  return o;
}

// A CPU tolerance, widened ten times on another device: float32 products there sum in another
// order (and another library), which moves the last bits, not the result.
inline float Tol(float cpu_tolerance) {
  return TestDevice().is_cpu() ? cpu_tolerance : 10 * cpu_tolerance;
}

// " --device D" for `icae` command lines.
inline std::string DeviceFlag() { return " --device " + TestDeviceName(); }

}  // namespace icae::testing

#endif  // ICAE_TESTS_TESTING_DEVICE_H_
