// The one stop decision of a generation, used by Generate and the decoder's scheduler alike:
// EOS (unless ignored) and stop ids end it before the id is output; a stop sequence in the
// output text ends it at the text before it; max_new_tokens ends it after that many ids.
#ifndef ICAE_COMMON_MODEL_STOP_H_
#define ICAE_COMMON_MODEL_STOP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/model/config.h"
#include "common/util/stop_text_filter.h"

namespace icae {

enum class FinishReason { kEos, kLength, kStopToken, kStopSequence, kCaller };

const char* FinishReasonName(FinishReason r);

struct StopCriteria {
  int64_t max_new_tokens = 256;
  std::vector<int64_t> stop_token_ids;   // besides EOS (and the config's extra stop id)
  std::vector<std::string> stop_sequences;
  bool ignore_eos = false;
};

class StopDecision {
 public:
  StopDecision(const ModelConfig& config, StopCriteria criteria);

  // A sampled id, before it is output: true when it ends the generation (EOS unless ignored,
  // a stop id); the id is then not part of the output.
  bool EndsBefore(int64_t id);
  // The id was output and added `text` to the output text ("" when text is not followed).
  // Returns the text safe to stream now. done() afterwards when a stop sequence appeared (the
  // text before it was returned) or max_new_tokens ids are out.
  std::string Output(const std::string& text);
  // Once done: the rest of the text to stream, given what the detokenizer still held back. A
  // stop sequence completed by it ends the text there (a length finish becomes a stop-sequence
  // one).
  std::string Finish(const std::string& held_back);

  bool done() const { return done_; }
  FinishReason finish_reason() const { return reason_; }
  const std::string& stop_sequence() const { return matched_; }
  int64_t stop_token_id() const { return stop_id_; }
  int64_t generated() const { return generated_; }

 private:
  const ModelConfig& config_;
  StopCriteria criteria_;
  StopTextFilter text_;
  bool done_ = false;
  FinishReason reason_ = FinishReason::kLength;
  std::string matched_;
  int64_t stop_id_ = 0;
  int64_t generated_ = 0;
};

}  // namespace icae

#endif  // ICAE_COMMON_MODEL_STOP_H_
