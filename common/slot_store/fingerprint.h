// Fingerprints of model and adapter weights: cheap at start-up, different whenever the weights
// differ. They go into slot IDs and SlotRecord headers so slots never cross models.
#ifndef ICAE_COMMON_SLOT_STORE_FINGERPRINT_H_
#define ICAE_COMMON_SLOT_STORE_FINGERPRINT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace icae::slot_store {

struct FingerprintOptions {
  // Blocks sampled from a safetensors file's data section, evenly spaced (first and last
  // included). Why sample at all: two fine-tunes of one architecture (e.g. the pretrained and
  // the fine-tuned ICAE adapters) have byte-identical headers and sizes, so header + size alone
  // would give them the same fingerprint. 64 x 4 KiB reads cost well under a millisecond.
  int sample_blocks = 64;
  size_t sample_block_bytes = 4096;
  // Safetensors caps its JSON header at 100 MB; a larger declared length means "not safetensors".
  uint64_t max_header_bytes = 100'000'000;
};

// SHA-256 (64 lowercase hex chars) over the files' identities. Per file: for safetensors
// (u64 LE header length N, then N bytes of JSON starting with '{'): the file size, the header
// JSON and the sampled data blocks; for any other file: the size and the whole content. The
// per-file digests are sorted before being combined, so the result depends on the set of files,
// not on their order, folder or names. NOT_FOUND for a missing file; InvalidArgument for an
// empty list.
absl::StatusOr<std::string> FingerprintFiles(const std::vector<std::string>& paths,
                                             const FingerprintOptions& options = {});

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_FINGERPRINT_H_
