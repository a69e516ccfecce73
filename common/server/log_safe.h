// The one sanitiser for client-supplied values that reach a log line (request ids, slot ids,
// tenant names, status messages that quote input). glog writes them as they are, so a value
// with a newline could forge a whole log line ("E1129 ... fake error") and a megabyte value
// would flood the log.
#ifndef ICAE_COMMON_SERVER_LOG_SAFE_H_
#define ICAE_COMMON_SERVER_LOG_SAFE_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace icae::server {

// Bytes of a client-supplied value kept in a log line (longer values are cut, their length
// noted).
inline constexpr size_t kMaxLoggedValueBytes = 128;

// `value` for a log line: printable ASCII is kept, a backslash doubled, \n \r \t spelled so,
// every other byte (control characters, DEL, non-ASCII) written \xNN; at most `max_bytes`
// input bytes, then "...(N bytes)".
std::string LogSafe(std::string_view value, size_t max_bytes = kMaxLoggedValueBytes);

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_LOG_SAFE_H_
