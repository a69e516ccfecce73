#include "common/server/metrics_http.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/exposer.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <map>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

// Debian 12's civetweb (under prometheus-cpp's Exposer) starts its threads with a fixed 100 KiB
// stack. glibc carves the static TLS of every loaded library out of each thread's stack, and
// in a service process LibTorch + OpenBLAS + glog alone need more than 100 KiB of it, so
// pthread_create fails (EINVAL) and the exposer cannot start. This definition takes precedence
// over libc's for the whole process (the executable exports it) and only raises a requested
// size below kMinThreadStack; a larger one is passed on unchanged.
extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  constexpr size_t kMinThreadStack = 1 << 20;
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn libc = reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return libc(attr, std::max(size, kMinThreadStack));
}

namespace icae::server {
namespace {

bool WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Parses `{a="x",b="y\"z"}` (exposition escapes) into name -> unescaped value; "" = no labels.
absl::StatusOr<std::map<std::string, std::string>> ParseLabels(absl::string_view text) {
  std::map<std::string, std::string> labels;
  if (text.empty()) return labels;
  auto bad = [&] { return absl::InvalidArgumentError(absl::StrCat("bad label set '", text, "'")); };
  if (text.front() != '{' || text.back() != '}') return bad();
  size_t i = 1;
  const size_t end = text.size() - 1;
  while (i < end) {
    const size_t eq = text.find('=', i);
    if (eq == absl::string_view::npos || eq + 1 >= end || text[eq + 1] != '"') return bad();
    std::string name(text.substr(i, eq - i));
    std::string value;
    size_t j = eq + 2;
    for (; j < end && text[j] != '"'; ++j) {
      if (text[j] == '\\' && j + 1 < end) {
        ++j;
        value += text[j] == 'n' ? '\n' : text[j];
      } else {
        value += text[j];
      }
    }
    if (j >= end) return bad();
    labels[name] = value;
    i = j + 1;
    if (i < end) {
      if (text[i] != ',') return bad();
      ++i;
    }
  }
  return labels;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& host, int port, const MetricsRegistry* registry,
    const MetricsHttpOptions& options) {
  if (options.max_connections < 1 || options.io_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("metrics listener needs max_connections >= 1 and a positive timeout");
  }
  const std::string h = host == "localhost" ? "127.0.0.1" : host;
  in_addr probe{};
  if (::inet_pton(AF_INET, h.c_str(), &probe) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("metrics host '", host, "' is not an IPv4 address"));
  }
  const std::string timeout_ms = absl::StrCat(absl::ToInt64Milliseconds(options.io_timeout));
  std::vector<std::string> civetweb_options = {
      "listening_ports", absl::StrCat(h, ":", port),
      "num_threads", absl::StrCat(options.max_connections),
      // Bounds a client that sends its request slowly, or not at all, and one that does not
      // read the answer.
      "request_timeout_ms", timeout_ms,
      // One request per connection: a kept-alive idle connection would hold a worker.
      "enable_keep_alive", "no",
      "max_request_size", "8192",
  };
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(civetweb_options);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics listener on ", host, ":", port, ": ", e.what()));
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty() || ports[0] <= 0) {
    return absl::UnavailableError(absl::StrCat("metrics listener on ", host, ":", port, ": no port"));
  }
  for (const auto& c : registry->Collectables()) exposer->RegisterCollectable(c);
  return std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer(std::move(exposer), ports[0]));
}

MetricsHttpServer::MetricsHttpServer(std::unique_ptr<prometheus::Exposer> exposer, int port)
    : exposer_(std::move(exposer)), port_(port) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() { exposer_.reset(); }

absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  std::string h = host == "localhost" ? "127.0.0.1" : host;
  ::inet_pton(AF_INET, h.c_str(), &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("connect ", host, ":", port, ": ", std::strerror(errno)));
  }
  std::string req = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: ", host, "\r\nConnection: close\r\n\r\n");
  WriteAll(fd, req);
  std::string resp;
  char buf[4096];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) break;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t hdr_end = resp.find("\r\n\r\n");
  if (hdr_end == std::string::npos) return absl::UnavailableError("short HTTP response");
  if (resp.compare(0, 12, "HTTP/1.1 200") != 0) {
    return absl::NotFoundError(resp.substr(0, resp.find("\r\n")));
  }
  return resp.substr(hdr_end + 4);
}

absl::StatusOr<double> FindSample(const std::string& exposition, const std::string& name,
                                  const std::string& labels_text) {
  auto want = ParseLabels(labels_text);
  if (!want.ok()) return want.status();
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (line.substr(0, name.size()) != name || line.size() <= name.size()) continue;
    line.remove_prefix(name.size());
    if (line[0] != ' ' && line[0] != '{') continue;  // another name with this prefix
    const size_t space = line[0] == '{' ? line.find("} ") + 1 : 0;
    if (space == 0 && line[0] == '{') continue;
    auto labels = ParseLabels(line.substr(0, space));
    if (!labels.ok() || *labels != *want) continue;
    absl::string_view rest = line.substr(space + 1);
    std::string value(rest.substr(0, rest.find(' ')));  // a timestamp may follow
    if (value == "+Inf") return HUGE_VAL;
    double v = 0;
    if (absl::SimpleAtod(value, &v)) return v;
  }
  return absl::NotFoundError(absl::StrCat("no sample ", name, labels_text));
}

}  // namespace icae::server
