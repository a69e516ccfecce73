// Request builders the service tests share (one home for how a test asks for an encoding or a
// greedy generation of an exact length).
#ifndef ICAE_TESTS_TESTING_REQUESTS_H_
#define ICAE_TESTS_TESTING_REQUESTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "icae/v1/icae.pb.h"

namespace icae::testing {

// Encode a text context.
icae::v1::EncodeRequest TextRequest(const std::string& text);
// Encode a context given as token ids.
icae::v1::EncodeRequest IdsRequest(const std::vector<int64_t>& ids);

// Greedy generation of exactly `max_new` tokens (EOS ignored) from one slot ID, with an
// optional text prompt: what the in-process reference generation (reference.h) produces.
icae::v1::GenerateRequest SlotRequest(const std::string& slot_id, int64_t max_new,
                                      const std::string& prompt_text = "");
// The same from several slot IDs and a prompt given as token ids.
icae::v1::GenerateRequest SlotRequest(const std::vector<std::string>& slot_ids,
                                      const std::vector<int64_t>& prompt_ids, int64_t max_new);

}  // namespace icae::testing

#endif  // ICAE_TESTS_TESTING_REQUESTS_H_
