#include "common/util/paths.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

namespace icae {
namespace {

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

std::string DefaultModelDir() {
  if (const char* env = std::getenv("ICAE_DEFAULT_MODEL_DIR"); env != nullptr && env[0] != '\0') {
    return env;
  }
#ifdef ICAE_SOURCE_DIR_FOR_DEFAULTS
  std::string in_tree = std::string(ICAE_SOURCE_DIR_FOR_DEFAULTS) + "/models/default";
  if (IsDir(in_tree)) return in_tree;
#endif
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = '\0';
    std::string exe(buf);
    std::string dir = exe.substr(0, exe.rfind('/'));
    std::string installed = dir + "/../share/icae/models/default";
    if (IsDir(installed)) return installed;
  }
#ifdef ICAE_SOURCE_DIR_FOR_DEFAULTS
  return std::string(ICAE_SOURCE_DIR_FOR_DEFAULTS) + "/models/default";
#else
  return "models/default";
#endif
}

std::string DefaultAdapterPath() { return DefaultModelDir() + "/icae_adapter.safetensors"; }

}  // namespace icae
