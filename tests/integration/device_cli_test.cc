// --device on the command line and the services (issue 17): every command that loads or builds
// a model takes it; a spelling that is not a device, or CUDA where this build or machine has
// none, is exit code 2 with a message saying which, before any work (never an abort); and
// --device cpu changes no number, token or byte of the output.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/util/paths.h"
#include "tests/test_util.h"

namespace icae {
namespace {

namespace fs = std::filesystem;
using ::icae::testing::IcaeBinary;
using ::icae::testing::RunCommand;

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class DeviceCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = DefaultModelDir();
    if (!fs::exists(model_ + "/model.safetensors")) GTEST_SKIP() << "no default model in " << model_;
    dir_ = ::icae::testing::MakeTempDir("icae-device-cli");
    std::ofstream(dir_ + "/t.txt") << "a few words of text to read, and a few more after them\n";
    std::ofstream(dir_ + "/i.jsonl") << "{\"input\": \"a b\", \"prompt\": \"c\", \"answer\": \"d\"}\n";
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  // Every command that takes --device, with what it needs to reach its flag checks.
  std::vector<std::string> Commands() const {
    const std::string m = " --model " + model_, a = " --adapter " + DefaultAdapterPath();
    return {
        "run" + m + " --ids \"1 2 3\" --max-new-tokens 2",
        "run" + m + a + " --context hello --mode autoencode --max-new-tokens 2",
        "compress" + m + a + " --text hello --out " + dir_ + "/s.safetensors",
        "eval" + m + a + " --heldout-text " + dir_ + "/t.txt",
        "train lm --tokenizer " + model_ + "/tokenizer.model --train-text " + dir_ + "/t.txt --out " + dir_ + "/lm",
        "train pretrain" + m + " --train-text " + dir_ + "/t.txt --out " + dir_ + "/pt",
        "train finetune" + m + a + " --train-jsonl " + dir_ + "/i.jsonl --out " + dir_ + "/ft",
        "bench decode --layers 1 --hidden 64 --heads 2 --kv-heads 1 --intermediate 64 --vocab 64",
        "bench compress --layers 1 --hidden 64 --intermediate 64 --lengths 16",
        "bench load" + m,
    };
  }
  std::string model_, dir_;
};

TEST_F(DeviceCliTest, ASpellingThatIsNoDeviceIsExitCode2) {
  for (const std::string& c : Commands()) {
    for (const std::string bad : {"gpu", "cuda:x", "cuda:-1"}) {
      std::string out, err;
      const std::string cmd = IcaeBinary() + " " + c + " --device " + bad;
      EXPECT_EQ(RunCommand(cmd, &out, &err), 2) << cmd << "\n" << err;
      EXPECT_NE(err.find("unknown device '" + bad + "'"), std::string::npos) << cmd << "\nstderr: " << err;
      EXPECT_NE(err.find("cpu, cuda or cuda:N"), std::string::npos) << err;
    }
  }
}

TEST_F(DeviceCliTest, CudaOnACpuLibTorchIsExitCode2SayingSo) {
  if (at::hasCUDA()) GTEST_SKIP() << "this LibTorch has CUDA";
  for (const std::string& c : Commands()) {
    for (const std::string cuda : {"cuda", "cuda:1"}) {
      std::string out, err;
      const std::string cmd = IcaeBinary() + " " + c + " --device " + cuda;
      EXPECT_EQ(RunCommand(cmd, &out, &err), 2) << cmd << "\n" << err;
      EXPECT_NE(err.find("this build's LibTorch has no CUDA support"), std::string::npos)
          << cmd << "\nstderr: " << err;
      EXPECT_TRUE(out.empty()) << cmd << " wrote before failing: " << out;
    }
  }
  EXPECT_FALSE(fs::exists(dir_ + "/s.safetensors"));
}

TEST_F(DeviceCliTest, DeviceCpuChangesNothing) {
  const std::string m = " --model " + model_, a = " --adapter " + DefaultAdapterPath();
  const std::vector<std::string> runs = {
      "run" + m + " --ids \"1 40 41 42\" --max-new-tokens 12 --print-ids --threads 1",
      "run" + m + " --ids \"1 40 41 42\" --max-new-tokens 12 --print-ids --dtype float32 --threads 1",
      "run" + m + a + " --context-ids \"1 40 41 42 43 44 45 46 47\" --mode autoencode --max-new-tokens 12 "
                      "--print-ids --threads 1",
      "run" + m + " --ids \"1 40 41 42\" --max-new-tokens 12 --temperature 0.8 --seed 5 --print-ids --threads 1",
  };
  for (const std::string& r : runs) {
    std::string plain, cpu;
    ASSERT_EQ(RunCommand(IcaeBinary() + " " + r, &plain), 0) << r;
    ASSERT_EQ(RunCommand(IcaeBinary() + " " + r + " --device cpu", &cpu), 0) << r;
    EXPECT_FALSE(plain.empty());
    EXPECT_EQ(plain, cpu) << r;
  }
  const std::string compress = IcaeBinary() + " compress" + m + a + " --ids \"1 40 41 42 43 44 45 46 47\" --threads 1";
  std::string out;
  ASSERT_EQ(RunCommand(compress + " --out " + dir_ + "/plain.safetensors", &out), 0);
  ASSERT_EQ(RunCommand(compress + " --device cpu --out " + dir_ + "/cpu.safetensors", &out), 0);
  const std::string plain = ReadAll(dir_ + "/plain.safetensors");
  EXPECT_GT(plain.size(), 1000u);
  EXPECT_EQ(plain, ReadAll(dir_ + "/cpu.safetensors"));
}

#ifdef ICAE_TEST_SERVICES
// The services refuse a device they cannot use at start-up, as a bad flag: exit 2, before
// they listen (no port file).
TEST_F(DeviceCliTest, ServicesRefuseAnUnusableDeviceBeforeListening) {
  for (const std::string svc : {"encoder_service", "decoder_service"}) {
    const std::string bin = std::string(ICAE_BINARY_DIR) + "/" + svc + "/" + svc;
    std::vector<std::pair<std::string, std::string>> cases = {{"junk", "unknown device 'junk'"}};
    if (!at::hasCUDA()) cases.push_back({"cuda:0", "this build's LibTorch has no CUDA support"});
    for (const auto& [device, message] : cases) {
      const std::string port_file = dir_ + "/" + svc + ".port";
      std::string out, err;
      const std::string cmd = bin + " --device=" + device + " --metrics_port=-1 --store=memory:// --port_file=" + port_file;
      EXPECT_EQ(RunCommand(cmd, &out, &err), 2) << cmd << "\n" << err;
      EXPECT_NE(err.find(message), std::string::npos) << cmd << "\nstderr: " << err;
      EXPECT_FALSE(fs::exists(port_file)) << cmd;
    }
  }
}
#endif

}  // namespace
}  // namespace icae
