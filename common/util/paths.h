// Where the embedded default model lives, so every tool and service works on a fresh clone
// without --model/--adapter.
#ifndef ICAE_COMMON_UTIL_PATHS_H_
#define ICAE_COMMON_UTIL_PATHS_H_

#include <string>

namespace icae {

// $ICAE_DEFAULT_MODEL_DIR if set; else <source tree>/models/default (the build knows it);
// else <dir of the executable>/../share/icae/models/default (an installed layout).
std::string DefaultModelDir();
// <DefaultModelDir()>/icae_adapter.safetensors.
std::string DefaultAdapterPath();

}  // namespace icae

#endif  // ICAE_COMMON_UTIL_PATHS_H_
