// The stop-sequence filter lives in common/util (local generation uses it too); this name is
// kept for the server code and tests that include it from here.
#ifndef ICAE_COMMON_SERVER_STOP_FILTER_H_
#define ICAE_COMMON_SERVER_STOP_FILTER_H_

#include "common/util/stop_text_filter.h"

namespace icae::server {
using ::icae::StopTextFilter;
}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_STOP_FILTER_H_
