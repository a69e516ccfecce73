// Conversion of a llama2.c checkpoint (legacy "version 0" format) to a HF-layout model folder.
#ifndef ICAE_COMMON_MODEL_LLAMA2C_H_
#define ICAE_COMMON_MODEL_LLAMA2C_H_

#include <string>

#include "absl/status/status.h"

namespace icae {

// Writes <out_dir>/config.json and <out_dir>/model.safetensors (F32). llama2.c rotates
// adjacent pairs and HF rotates halves, so wq/wk rows are permuted as HF's Llama conversion
// does. The out_dir must exist.
absl::Status ConvertLlama2cCheckpoint(const std::string& checkpoint, const std::string& out_dir);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_LLAMA2C_H_
