#include "tests/testing/requests.h"

namespace icae::testing {

icae::v1::EncodeRequest TextRequest(const std::string& text) {
  icae::v1::EncodeRequest r;
  r.set_text(text);
  return r;
}

icae::v1::EncodeRequest IdsRequest(const std::vector<int64_t>& ids) {
  icae::v1::EncodeRequest r;
  for (int64_t id : ids) r.mutable_token_ids()->add_ids(id);
  return r;
}

icae::v1::GenerateRequest SlotRequest(const std::string& slot_id, int64_t max_new,
                                      const std::string& prompt_text) {
  icae::v1::GenerateRequest r = SlotRequest(std::vector<std::string>{slot_id}, {}, max_new);
  if (!prompt_text.empty()) r.set_prompt_text(prompt_text);
  return r;
}

icae::v1::GenerateRequest SlotRequest(const std::vector<std::string>& slot_ids,
                                      const std::vector<int64_t>& prompt_ids, int64_t max_new) {
  icae::v1::GenerateRequest r;
  for (const auto& id : slot_ids) r.add_slot_ids(id);
  for (int64_t id : prompt_ids) r.mutable_prompt_ids()->add_ids(id);
  r.mutable_stopping()->set_max_new_tokens(max_new);
  r.mutable_stopping()->set_ignore_eos(true);
  return r;
}

}  // namespace icae::testing
