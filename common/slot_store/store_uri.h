// Parsing of slot store URIs (scheme://[userinfo@]host[:port][/path][?k=v&...]) and of their
// parameters, with errors that name the parameter and the accepted form.
#ifndef ICAE_COMMON_SLOT_STORE_STORE_URI_H_
#define ICAE_COMMON_SLOT_STORE_STORE_URI_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace icae::slot_store {

struct StoreEndpoint {
  std::string host;  // without brackets for IPv6 literals
  int port = -1;     // -1 when absent
};

struct StoreUri {
  std::string scheme;    // lower case, e.g. "redis"
  std::string userinfo;  // percent-decoded "user:password" (may be empty)
  std::string host;      // the first endpoint's host; without brackets for IPv6 literals
  int port = -1;         // the first endpoint's port; -1 when absent
  // Every host[:port] of a comma-separated list ("h1:7000,h2:7001", for redis-cluster://);
  // one for an ordinary URI, none when neither a host nor a port is given.
  std::vector<StoreEndpoint> endpoints;
  std::string path;      // percent-decoded, e.g. "/var/cache/icae" or "/0"
  std::map<std::string, std::string> params;  // percent-decoded query parameters
};

// InvalidArgument (quoting the URI) when it is not of the form above, a port is out of range,
// a host of a list is empty, a parameter repeats, or a percent escape is broken.
absl::StatusOr<StoreUri> ParseStoreUri(std::string_view uri);

// Percent-encodes everything except unreserved characters (RFC 3986), e.g. to nest one store
// URI inside another's query: "tiered://?backend=" + UrlEncode("redis://h:6379/0?ttl=60").
std::string UrlEncode(std::string_view text);
absl::StatusOr<std::string> UrlDecode(std::string_view text);

// Typed access to a URI's query parameters. Every Take* marks the name as known; Finish()
// rejects any parameter no one asked for, so a typo ("max_byte=") never passes silently.
class UriParams {
 public:
  explicit UriParams(const StoreUri& uri) : scheme_(uri.scheme), params_(uri.params) {}

  // Byte counts: digits with an optional K/M/G/T suffix (powers of 1024, optionally followed
  // by "iB" or "B"): "1048576", "64K", "64KiB", "1G". Must be >= min_value.
  absl::StatusOr<uint64_t> TakeBytes(const std::string& name, uint64_t def,
                                     uint64_t min_value = 0);
  absl::StatusOr<int64_t> TakeInt(const std::string& name, int64_t def, int64_t min_value,
                                  int64_t max_value);
  // Durations: plain numbers are seconds ("30", "0.5"); else abseil syntax ("500ms", "2h").
  // Must not be negative.
  absl::StatusOr<absl::Duration> TakeDuration(const std::string& name, absl::Duration def);
  std::string TakeString(const std::string& name, const std::string& def);
  bool Has(const std::string& name) const { return params_.count(name) > 0; }

  absl::Status Finish() const;

 private:
  std::string scheme_;
  std::map<std::string, std::string> params_;
  std::set<std::string> known_;
};

// Parses a byte count as TakeBytes does (also used for the bench's --sizes).
absl::StatusOr<uint64_t> ParseByteSize(std::string_view text);

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_STORE_URI_H_
