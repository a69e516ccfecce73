// In-process reference computations on a loaded ModelBundle: what the services must reproduce
// exactly (same model, same dtype). Errors come back as statuses, for the test to assert on.
#ifndef ICAE_TESTS_TESTING_REFERENCE_H_
#define ICAE_TESTS_TESTING_REFERENCE_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/icae/compressor.h"
#include "common/server/model_bundle.h"
#include "common/slot_store/slot_store.h"

namespace icae::testing {

// The slots of a stored record (checked against the bundle's fingerprints) and the context
// tokens they stand for, by store key.
absl::StatusOr<CompressedContext> SlotsFromStore(const server::ModelBundle& bundle,
                                             slot_store::SlotStore& store, const std::string& key);

// The slots the encoder computes for `text` (tokenized with BOS).
absl::StatusOr<CompressedContext> CompressText(const server::ModelBundle& bundle, const std::string& text);

struct ReferenceOutput {
  std::vector<int64_t> ids;
  std::string text;  // the ids decoded
};

// Greedy single-sequence generation of exactly `max_new` tokens (EOS ignored) over the slots of
// `memories`, autoencoding when `prompt_ids` is empty and instruct-style otherwise — what
// testing::SlotRequest asks the decoder for.
absl::StatusOr<ReferenceOutput> ReferenceGenerate(const server::ModelBundle& bundle,
                                                  const std::vector<CompressedContext>& memories,
                                                  const std::vector<int64_t>& prompt_ids,
                                                  int64_t max_new);

}  // namespace icae::testing

#endif  // ICAE_TESTS_TESTING_REFERENCE_H_
