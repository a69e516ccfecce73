// Safetensors reading (memory-mapped, every offset checked) and writing.
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end)}, "__metadata__": {...}}, then the data section.
#ifndef ICAE_COMMON_MODEL_SAFETENSORS_H_
#define ICAE_COMMON_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/util/mapped_file.h"

namespace icae {

struct TensorInfo {
  std::string dtype;            // "F32", "F16", "BF16", "I64", ...
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file
  size_t nbytes = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates the whole header: JSON shape, dtypes, offsets in range, sizes
  // consistent with shapes, no overlaps. Errors name the file and the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  bool Has(const std::string& name) const { return tensors_.count(name) > 0; }
  absl::StatusOr<TensorInfo> Info(const std::string& name) const;
  // Copies the tensor out of the file, converted to `dtype` (CPU, contiguous, owned).
  absl::StatusOr<torch::Tensor> Load(const std::string& name, torch::Dtype dtype) const;
  // Copies in the stored dtype.
  absl::StatusOr<torch::Tensor> LoadAsStored(const std::string& name) const;
  // A view of the mapped data when the stored dtype is `dtype` and the data is aligned for it
  // (read-only: the mapping is PROT_READ; the tensor keeps the mapping alive, so pages are the
  // page cache's, shared by every process that maps the file); otherwise Load(name, dtype).
  absl::StatusOr<torch::Tensor> LoadInPlace(const std::string& name, torch::Dtype dtype) const;
  std::vector<std::string> Names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_->path(); }

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// The weights of a model folder: model.safetensors, or the shards listed by
// model.safetensors.index.json.
class WeightSource {
 public:
  static absl::StatusOr<std::unique_ptr<WeightSource>> Open(const std::string& model_dir);
  bool Has(const std::string& name) const { return where_.count(name) > 0; }
  absl::StatusOr<TensorInfo> Info(const std::string& name) const;
  // Loads `name` converted to dtype; checks the shape when `expected_shape` is non-empty.
  // in_place: a read-only view of the mapping where possible (SafetensorsFile::LoadInPlace).
  absl::StatusOr<torch::Tensor> Load(const std::string& name, torch::Dtype dtype,
                                     const std::vector<int64_t>& expected_shape = {},
                                     bool in_place = false) const;
  std::vector<std::string> Names() const;
  // Files the weights come from (for fingerprints).
  std::vector<std::string> Files() const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
};

// Maps a safetensors dtype string to a torch dtype (InvalidArgument for unknown ones).
absl::StatusOr<torch::Dtype> SafetensorsDtype(const std::string& dtype);
absl::StatusOr<std::string> SafetensorsDtypeName(torch::Dtype dtype);

// Writes tensors (any CPU dtype listed above) in the given order, atomically.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

std::string ShapeString(const std::vector<int64_t>& shape);

// Index (in flattened order) of the first NaN or infinity of t, or -1. Float32/bf16/f16 CPU
// tensors are scanned where they lie, in parallel chunks, with no allocation (a weight may be a
// view of a multi-GB mapping); other tensors go through torch::isfinite.
int64_t FirstNonFiniteElement(const torch::Tensor& t);

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_SAFETENSORS_H_
