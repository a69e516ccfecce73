// Store URIs (--slot_store, `icae` flags): ParseStoreUri, then every query parameter read the
// ways the backends read them. No store is opened: that would connect or touch the disk.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/slot_store/store_uri.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace ss = icae::slot_store;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // Percent-encoding round-trips any bytes.
  auto decoded = ss::UrlDecode(ss::UrlEncode(text));
  FUZZ_CHECK(decoded.ok() && *decoded == text);
  (void)ss::UrlDecode(text);
  (void)ss::ParseByteSize(text);

  auto uri = ss::ParseStoreUri(text);
  if (!uri.ok()) return 0;
  FUZZ_CHECK(uri->port >= -1 && uri->port <= 65535);
  if (uri->endpoints.empty()) {
    FUZZ_CHECK(uri->host.empty() && uri->port == -1);
  } else {
    FUZZ_CHECK(uri->host == uri->endpoints[0].host && uri->port == uri->endpoints[0].port);
  }
  // Each parameter as each type (separate readers: a name is taken once per reader).
  for (const auto& [name, value] : uri->params) {
    ss::UriParams as_bytes(*uri), as_int(*uri), as_duration(*uri), as_string(*uri);
    (void)as_bytes.TakeBytes(name, 0, 1);
    (void)as_int.TakeInt(name, 0, -1000, 1000);
    (void)as_duration.TakeDuration(name, absl::ZeroDuration());
    FUZZ_CHECK(as_string.TakeString(name, "") == value);
    (void)as_string.Finish();
  }
  ss::UriParams none(*uri);
  FUZZ_CHECK(none.Finish().ok() == uri->params.empty());
  return 0;
}
