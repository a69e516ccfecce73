// Streams generated text while holding back what could still turn into a stop sequence. The
// one implementation for the decoder service and local generation (through StopDecision).
#ifndef ICAE_COMMON_UTIL_STOP_TEXT_FILTER_H_
#define ICAE_COMMON_UTIL_STOP_TEXT_FILTER_H_

#include <cstddef>
#include <string>
#include <vector>

namespace icae {

class StopTextFilter {
 public:
  explicit StopTextFilter(std::vector<std::string> stops);
  // Returns text safe to emit. When a stop sequence appears, returns the text before it, sets
  // *matched to the sequence and drops the rest; later calls return "".
  std::string Push(const std::string& delta, std::string* matched);
  // What is held back (call at the end when no stop sequence matched).
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  size_t hold_ = 0;  // longest stop sequence - 1 bytes may be a stop's unfinished prefix
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace icae

#endif  // ICAE_COMMON_UTIL_STOP_TEXT_FILTER_H_
