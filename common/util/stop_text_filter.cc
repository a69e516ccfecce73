#include "common/util/stop_text_filter.h"

#include <algorithm>
#include <utility>

namespace icae {

StopTextFilter::StopTextFilter(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (s.empty()) continue;
    hold_ = std::max(hold_, s.size() - 1);
    stops_.push_back(std::move(s));
  }
}

std::string StopTextFilter::Push(const std::string& delta, std::string* matched) {
  if (stopped_) return "";
  pending_ += delta;
  // Earliest match wins, so the text before it is exactly what precedes the first stop.
  size_t best = std::string::npos;
  const std::string* best_stop = nullptr;
  for (const auto& s : stops_) {
    size_t pos = pending_.find(s);
    if (pos != std::string::npos && pos < best) {
      best = pos;
      best_stop = &s;
    }
  }
  if (best_stop != nullptr) {
    stopped_ = true;
    if (matched) *matched = *best_stop;
    std::string out = pending_.substr(0, best);
    pending_.clear();
    return out;
  }
  if (pending_.size() <= hold_) return "";
  // Keep the last hold_ bytes, but never cut inside a UTF-8 character.
  size_t cut = pending_.size() - hold_;
  while (cut > 0 && (static_cast<unsigned char>(pending_[cut]) & 0xC0) == 0x80) --cut;
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string StopTextFilter::Flush() {
  if (stopped_) return "";
  return std::exchange(pending_, "");
}

}  // namespace icae
