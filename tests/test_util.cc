#include "tests/test_util.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace icae::testing {

std::string TestDataDir() {
  const char* env = std::getenv("ICAE_TESTDATA");
  if (env != nullptr && env[0] != '\0') return env;
  return std::string(ICAE_SOURCE_DIR) + "/../shared/testdata";
}

std::string SharedDir() { return TestDataDir() + "/.."; }

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && tmp[0] ? tmp : "/tmp") + "/" + prefix + ".XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

std::string IcaeBinary() { return std::string(ICAE_BINARY_DIR) + "/tools/icae"; }

int RunCommand(const std::string& command, std::string* out, std::string* err) {
  std::string err_dir, err_file;
  std::string cmd = command;
  if (err != nullptr) {
    err_dir = MakeTempDir("icae-cmd");
    err_file = err_dir + "/stderr";
    cmd += " 2>" + err_file;
  }
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string result;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) result.append(buf, n);
  int status = ::pclose(p);
  if (out != nullptr) *out = result;
  if (err != nullptr) {
    std::ifstream in(err_file);
    std::stringstream ss;
    ss << in.rdbuf();
    *err = ss.str();
    std::remove(err_file.c_str());
    ::rmdir(err_dir.c_str());
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace icae::testing
