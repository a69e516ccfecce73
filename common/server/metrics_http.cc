#include "common/server/metrics_http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace icae::server {
namespace {

constexpr size_t kMaxRequestBytes = 8192;

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

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& host, int port, const MetricsRegistry* registry,
    const MetricsHttpOptions& options) {
  if (options.max_connections < 1 || options.io_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("metrics listener needs max_connections >= 1 and a positive timeout");
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  std::string h = host == "localhost" ? "127.0.0.1" : host;
  if (::inet_pton(AF_INET, h.c_str(), &addr.sin_addr) != 1) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("metrics host '", host, "' is not an IPv4 address"));
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 16) != 0) {
    std::string err = std::strerror(errno);
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("metrics listener on ", host, ":", port, ": ", err));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::unique_ptr<MetricsHttpServer> s(
      new MetricsHttpServer(fd, ntohs(addr.sin_port), registry, options));
  return s;
}

MetricsHttpServer::MetricsHttpServer(int fd, int port, const MetricsRegistry* registry,
                                     MetricsHttpOptions options)
    : listen_fd_(fd), port_(port), registry_(registry), options_(options) {
  if (::pipe2(wake_pipe_, O_CLOEXEC) != 0) wake_pipe_[0] = wake_pipe_[1] = -1;
  thread_ = std::thread([this] { Loop(); });
}

MetricsHttpServer::~MetricsHttpServer() {
  Stop();
  ::close(listen_fd_);
  if (wake_pipe_[0] >= 0) ::close(wake_pipe_[0]);
  if (wake_pipe_[1] >= 0) ::close(wake_pipe_[1]);
}

void MetricsHttpServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (wake_pipe_[1] >= 0) {
    char c = 0;
    (void)!::write(wake_pipe_[1], &c, 1);
  }
  if (thread_.joinable()) thread_.join();
  // Connection threads see the wake pipe too and end at once.
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [&] { return active_ == 0; });
}

void MetricsHttpServer::Loop() {
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    int n = ::poll(fds, wake_pipe_[0] >= 0 ? 2 : 1, 500);
    if (n <= 0) continue;
    if (fds[0].revents & POLLIN) {
      int conn = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      // Bounds a client that stops reading the answer.
      const int64_t ms = absl::ToInt64Milliseconds(options_.io_timeout);
      timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
      ::setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      bool full = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        full = active_ >= options_.max_connections;
        if (!full) ++active_;
      }
      if (full) {
        static const char kBusy[] =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        (void)!::send(conn, kBusy, sizeof(kBusy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        ::close(conn);
        continue;
      }
      std::thread([this, conn] {
        Serve(conn);
        ::close(conn);
        std::lock_guard<std::mutex> lock(mu_);
        if (--active_ == 0) idle_.notify_all();
      }).detach();
    }
  }
}

void MetricsHttpServer::Serve(int conn) {
  std::string req;
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(absl::ToInt64Milliseconds(options_.io_timeout));
  char buf[2048];
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < kMaxRequestBytes) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0) return;
    pollfd p[2] = {{conn, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(p, wake_pipe_[0] >= 0 ? 2 : 1, left) <= 0 || stopping_.load()) return;
    ssize_t n = ::recv(conn, buf, sizeof(buf), 0);
    if (n <= 0) return;
    req.append(buf, static_cast<size_t>(n));
  }
  std::string line = req.substr(0, req.find("\r\n"));
  std::vector<std::string> parts = absl::StrSplit(line, ' ');
  std::string status = "200 OK", body, type = "text/plain; charset=utf-8";
  if (parts.size() != 3 || parts[2].rfind("HTTP/1.", 0) != 0) {
    status = "400 Bad Request";
    body = "bad request\n";
  } else if (parts[0] != "GET" && parts[0] != "HEAD") {
    status = "405 Method Not Allowed";
    body = "only GET\n";
  } else {
    std::string path = parts[1].substr(0, parts[1].find('?'));
    if (path == "/metrics") {
      body = registry_->Render();
      type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (path == "/healthz") {
      body = "ok\n";
    } else {
      status = "404 Not Found";
      body = "not found (try /metrics)\n";
    }
  }
  std::string resp = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                                   "\r\nContent-Length: ", body.size(),
                                   "\r\nConnection: close\r\n\r\n");
  if (parts.empty() || parts[0] != "HEAD") resp += body;
  WriteAll(conn, resp);
}

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
  const std::string prefix = name + labels_text + " ";
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (line.substr(0, prefix.size()) == prefix) {
      double v = 0;
      std::string value(line.substr(prefix.size()));
      if (value == "+Inf") return HUGE_VAL;
      if (absl::SimpleAtod(value, &v)) return v;
    }
  }
  return absl::NotFoundError(absl::StrCat("no sample ", name, labels_text));
}

}  // namespace icae::server
