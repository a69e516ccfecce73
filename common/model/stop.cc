#include "common/model/stop.h"

#include <algorithm>
#include <utility>

namespace icae {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kLength: return "length";
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kStopSequence: return "stop_sequence";
    case FinishReason::kCaller: return "stopped";
  }
  return "unknown";
}

StopDecision::StopDecision(const ModelConfig& config, StopCriteria criteria)
    : config_(config), criteria_(std::move(criteria)), text_(criteria_.stop_sequences) {
  done_ = criteria_.max_new_tokens <= 0;
}

bool StopDecision::EndsBefore(int64_t id) {
  if (!criteria_.ignore_eos && (id == config_.eos_token_id || id == config_.extra_stop_token_id)) {
    done_ = true;
    reason_ = FinishReason::kEos;
    return true;
  }
  const auto& ids = criteria_.stop_token_ids;
  if (std::find(ids.begin(), ids.end(), id) != ids.end()) {
    done_ = true;
    reason_ = FinishReason::kStopToken;
    stop_id_ = id;
    return true;
  }
  return false;
}

std::string StopDecision::Output(const std::string& text) {
  ++generated_;
  std::string out = text_.Push(text, &matched_);
  if (text_.stopped()) {
    done_ = true;
    reason_ = FinishReason::kStopSequence;
  } else if (generated_ >= criteria_.max_new_tokens) {
    done_ = true;
    reason_ = FinishReason::kLength;
  }
  return out;
}

std::string StopDecision::Finish(const std::string& held_back) {
  if (reason_ == FinishReason::kStopSequence) return "";
  std::string matched;
  std::string out = text_.Push(held_back, &matched);
  if (text_.stopped()) {
    if (reason_ == FinishReason::kLength) {
      reason_ = FinishReason::kStopSequence;
      matched_ = matched;
    }
    return out;
  }
  return out + text_.Flush();
}

}  // namespace icae
