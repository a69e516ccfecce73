// Device placement that a CPU-only machine can check: --device parsing, the refusal of CUDA on
// a LibTorch or machine without it, the CPU kernels never taking a tensor of another device,
// and an explicit "cpu" giving the very same numbers as the default.
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <string>

#include "common/model/cpu_fused.h"
#include "common/model/cpu_gemv.h"
#include "common/model/transformer.h"
#include "common/util/device.h"
#include "common/util/paths.h"
#include "tests/test_util.h"

namespace icae {
namespace {

TEST(DeviceTest, ParsesCpuCudaAndCudaN) {
  auto cpu = ParseDevice("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(cpu->is_cpu());
  auto cuda = ParseDevice("cuda");
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  EXPECT_TRUE(cuda->is_cuda());
  EXPECT_EQ(cuda->index(), 0);
  auto cuda1 = ParseDevice("cuda:1");
  ASSERT_TRUE(cuda1.ok()) << cuda1.status();
  EXPECT_TRUE(cuda1->is_cuda());
  EXPECT_EQ(cuda1->index(), 1);
  auto cuda12 = ParseDevice("cuda:12");
  ASSERT_TRUE(cuda12.ok()) << cuda12.status();
  EXPECT_EQ(cuda12->index(), 12);
}

TEST(DeviceTest, RejectsEverythingElseNamingTheForms) {
  for (const std::string bad : {"", "gpu", "CPU", "Cuda", "cuda:", "cuda:-1", "cuda:+1", "cuda: 1",
                                "cuda:1a", "cuda:x", "cuda:1000", "cuda:128", "cpu:0", "mps", "cuda0",
                                " cpu", "cpu "}) {
    auto d = ParseDevice(bad);
    ASSERT_FALSE(d.ok()) << "'" << bad << "' parsed as " << d->str();
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(d.status().message().find("cpu, cuda or cuda:N"), std::string::npos) << d.status();
    EXPECT_NE(d.status().message().find("'" + bad + "'"), std::string::npos) << d.status();
  }
}

TEST(DeviceTest, CpuIsAlwaysAvailable) {
  EXPECT_TRUE(CheckDeviceAvailable(torch::Device(torch::kCPU)).ok());
  auto d = ResolveDevice("cpu");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->is_cpu());
}

// On Debian's CPU LibTorch this is the "no CUDA support" answer; on a CUDA build it checks the
// index bound instead (a device one past the last is refused by number).
TEST(DeviceTest, CudaIsRefusedClearlyWhereItCannotRun) {
  if (!at::hasCUDA()) {
    for (const std::string name : {"cuda", "cuda:0", "cuda:1"}) {
      auto d = ResolveDevice(name);
      ASSERT_FALSE(d.ok()) << name;
      EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_NE(d.status().message().find("this build's LibTorch has no CUDA support"), std::string::npos)
          << d.status();
    }
    return;
  }
  const int64_t n = static_cast<int64_t>(torch::cuda::device_count());
  auto past = ResolveDevice("cuda:" + std::to_string(n));
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string want = n == 0 ? "no CUDA device available" : "CUDA device " + std::to_string(n) + " not available";
  EXPECT_NE(past.status().message().find(want), std::string::npos) << past.status();
}

TEST(DeviceTest, LoadingOntoAnUnusableDeviceIsAnErrorNotACrash) {
  if (at::hasCUDA() && torch::cuda::device_count() > 0) GTEST_SKIP() << "this machine has CUDA";
  ModelLoadOptions lo;
  lo.device = torch::Device(torch::kCUDA, 0);
  auto m = Transformer::Load(DefaultModelDir(), lo);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(m.status().message().find("CUDA"), std::string::npos) << m.status();
}

// The hand-written kernels read data_ptr(): handed a tensor that does not live in CPU memory
// they would crash. Meta tensors (shapes only, no memory) stand in for CUDA ones here: every
// dispatch point must send them to the plain LibTorch op.
TEST(DeviceTest, CpuKernelsAreNeverChosenForOtherDevices) {
  c10::InferenceMode guard;
  const auto meta = torch::TensorOptions(torch::kBFloat16).device(torch::kMeta);
  auto x = torch::empty({1, 64}, meta), w = torch::empty({32, 64}, meta);
  EXPECT_FALSE(UseFusedCpuOps(x));
  auto y = Linear(x, w);  // the bf16 GEMV's shape, dtype and mode: only the device differs
  EXPECT_EQ(y.device().type(), torch::kMeta);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 32}));
  auto q = torch::empty({1, 4, 64}, meta);
  // The decode attention reads raw KV spans: it must refuse before touching one.
  std::vector<std::vector<KVCache::Span>> spans(1);
  spans[0].push_back(KVCache::Span{nullptr, nullptr, 5, 5 * 64, 64});
  EXPECT_FALSE(FusedDecodeAttention(q, spans, 2, 8.0).defined());
  // The same shapes on the CPU do take the kernels where this CPU has them.
  auto xc = torch::zeros({1, 64}, torch::kBFloat16);
  EXPECT_TRUE(UseFusedCpuOps(xc));
}

TEST(DeviceTest, ExplicitCpuGivesTheDefaultsNumbersBitForBit) {
  const std::string dir = DefaultModelDir();
  if (!::icae::testing::PathExists(dir + "/model.safetensors")) GTEST_SKIP() << "no default model in " << dir;
  c10::InferenceMode guard;
  for (torch::Dtype dt : {torch::kFloat32, torch::kBFloat16}) {
    ModelLoadOptions def;
    def.dtype = dt;
    ModelLoadOptions cpu = def;
    cpu.device = *ParseDevice("cpu");
    auto a = Transformer::Load(dir, def);
    auto b = Transformer::Load(dir, cpu);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_TRUE((*b)->device().is_cpu());
    // Prefill of 9 tokens, then two decode steps (the fused kernels' path in bf16).
    KVCache ca = (*a)->NewCache(16), cb = (*b)->NewCache(16);
    auto ids = torch::tensor(std::vector<int64_t>{1, 50, 60, 70, 80, 90, 100, 110, 120}, torch::kInt64);
    for (int step = 0; step < 3; ++step) {
      std::vector<SequenceInput> ba(1), bb(1);
      ba[0].ids = bb[0].ids = step == 0 ? ids : torch::tensor(std::vector<int64_t>{7 + step}, torch::kInt64);
      ba[0].cache = &ca;
      bb[0].cache = &cb;
      auto la = (*a)->Forward(ba), lb = (*b)->Forward(bb);
      ASSERT_TRUE(la.ok() && lb.ok());
      EXPECT_TRUE(torch::equal(*la, *lb)) << "dtype " << dt << " step " << step;
    }
  }
  // Random weights drawn for the CPU by name are the default draw.
  ModelConfig c = (*Transformer::Load(dir))->config();
  c.num_hidden_layers = 1;
  auto w1 = RandomWeights(c, torch::kFloat32, 5), w2 = RandomWeights(c, torch::kFloat32, 5, *ParseDevice("cpu"));
  EXPECT_TRUE(torch::equal(w1.layers[0].wqkv, w2.layers[0].wqkv));
  EXPECT_TRUE(torch::equal(w1.embed_tokens, w2.embed_tokens));
}

}  // namespace
}  // namespace icae
