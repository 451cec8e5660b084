#include "common/http_client.h"

#include <openssl/ssl.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <limits>
#include <mutex>
#include <optional>

namespace kvmesh::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

struct Url {
  bool tls = false;
  std::string host;  // without brackets
  uint16_t port = 0;
  std::string target;
  std::string HostPort() const { return host + ":" + std::to_string(port); }
  std::string Key() const { return (tls ? "https://" : "http://") + HostPort(); }
};

StatusOr<Url> ParseUrl(std::string_view url) {
  Url u;
  std::string_view rest;
  if (url.substr(0, 7) == "http://") {
    rest = url.substr(7);
  } else if (url.substr(0, 8) == "https://") {
    u.tls = true;
    rest = url.substr(8);
  } else {
    return InvalidArgumentError("URL must start with http:// or https://, got \"" +
                                std::string(url) + "\"");
  }
  std::size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (!u.target.empty() && u.target[0] == '?') u.target = "/" + u.target;
  std::string_view port_str;
  if (!authority.empty() && authority[0] == '[') {  // [::1]:8080
    std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return InvalidArgumentError("bad IPv6 host in URL " + std::string(url));
    u.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return InvalidArgumentError("bad authority in URL " + std::string(url));
      port_str = authority.substr(close + 2);
    }
  } else {
    std::size_t colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_str = authority.substr(colon + 1);
  }
  if (u.host.empty()) return InvalidArgumentError("URL has no host: \"" + std::string(url) + "\"");
  if (port_str.empty()) {
    u.port = u.tls ? 443 : 80;
  } else {
    unsigned long p = 0;
    for (char c : port_str) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || p > 65535) {
        return InvalidArgumentError("bad port in URL \"" + std::string(url) + "\"");
      }
      p = p * 10 + static_cast<unsigned long>(c - '0');
    }
    if (p == 0 || p > 65535) return InvalidArgumentError("bad port in URL \"" + std::string(url) + "\"");
    u.port = static_cast<uint16_t>(p);
  }
  return u;
}

bool IsIpAddress(const std::string& host) {
  boost::system::error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

}  // namespace

// ---- SseParser ---------------------------------------------------------------------------------

bool SseParser::Feed(std::string_view bytes, const std::function<bool(const SseEvent&)>& on_event) {
  for (char c : bytes) {
    if (c != '\n') {
      line_.push_back(c);
      continue;
    }
    std::string line = std::move(line_);
    line_.clear();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!Line(line, on_event)) return false;
  }
  return true;
}

bool SseParser::Line(std::string_view line, const std::function<bool(const SseEvent&)>& on_event) {
  if (line.empty()) {  // end of event
    if (!has_data_ && current_.event.empty()) return true;
    SseEvent ev = std::move(current_);
    current_ = SseEvent();
    has_data_ = false;
    return on_event(ev);
  }
  if (line[0] == ':') return true;  // comment / keep-alive
  std::size_t colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (has_data_) current_.data.push_back('\n');
    current_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    current_.event = std::string(value);
  } else if (field == "id") {
    current_.id = std::string(value);
  }
  return true;
}

std::string ClientResponse::Header(std::string_view name) const {
  auto it = headers.find(Lower(name));
  return it == headers.end() ? std::string() : it->second;
}

Status HttpClientOptions::Validate() const {
  if (connect_timeout.count() <= 0) return InvalidArgumentError("connect_timeout must be > 0");
  if (read_timeout.count() <= 0) return InvalidArgumentError("read_timeout must be > 0");
  if (max_response_body_bytes == 0) return InvalidArgumentError("max_response_body_bytes must be > 0");
  return Status::Ok();
}

// ---- HttpClient --------------------------------------------------------------------------------

namespace {

struct Conn {
  std::unique_ptr<beast::tcp_stream> tcp;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *tcp; }
  template <typename F>
  auto With(F&& f) {
    return tls ? f(*tls) : f(*tcp);
  }
};

}  // namespace

struct HttpClient::Impl {
  net::io_context ioc{1};
  std::optional<net::ssl::context> ssl_ctx;
  Status ssl_status;
  std::map<std::string, std::unique_ptr<Conn>> idle;  // key: scheme://host:port
  // The connection of the call in progress (connecting included); only the calling thread (and
  // handlers it runs in ioc) touches it.
  Conn* active = nullptr;

  // Abort(): guarded by abort_mu.
  std::mutex abort_mu;
  bool in_call = false;
  bool abort_requested = false;
  uint64_t call_generation = 0;

  // Runs the async operation started just before to completion (the client is synchronous).
  void Run() {
    ioc.run();
    ioc.restart();
  }
  bool Aborted() {
    std::lock_guard<std::mutex> lock(abort_mu);
    return abort_requested;
  }
};

HttpClient::HttpClient(HttpClientOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>()) {}

HttpClient::~HttpClient() = default;

void HttpClient::CloseIdleConnections() { impl_->idle.clear(); }

void HttpClient::Abort() {
  Impl& impl = *impl_;
  uint64_t generation = 0;
  {
    std::lock_guard<std::mutex> lock(impl.abort_mu);
    if (!impl.in_call) return;
    impl.abort_requested = true;
    generation = impl.call_generation;
  }
  // The socket belongs to the calling thread: close it from a handler that thread runs (inside
  // its current or next Run()), and only if that call is still the aborted one.
  net::post(impl.ioc, [&impl, generation] {
    {
      std::lock_guard<std::mutex> lock(impl.abort_mu);
      if (!impl.in_call || impl.call_generation != generation) return;
    }
    if (impl.active != nullptr) {
      beast::error_code ec;
      impl.active->lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
      impl.active->lowest().close();
    }
  });
}

StatusOr<ClientResponse> HttpClient::Do(const ClientRequest& request) {
  return Execute(request, nullptr);
}

StatusOr<ClientResponse> HttpClient::Get(const std::string& url,
                                         std::vector<std::pair<std::string, std::string>> headers) {
  ClientRequest r;
  r.url = url;
  r.headers = std::move(headers);
  return Execute(r, nullptr);
}

StatusOr<ClientResponse> HttpClient::Post(const std::string& url, std::string body,
                                          std::string content_type,
                                          std::vector<std::pair<std::string, std::string>> headers) {
  ClientRequest r;
  r.method = "POST";
  r.url = url;
  r.body = std::move(body);
  r.content_type = std::move(content_type);
  r.headers = std::move(headers);
  return Execute(r, nullptr);
}

StatusOr<ClientResponse> HttpClient::Stream(const ClientRequest& request,
                                            const std::function<bool(std::string_view)>& on_data) {
  return Execute(request, &on_data);
}

StatusOr<ClientResponse> HttpClient::StreamSse(
    const ClientRequest& request, const std::function<bool(const SseEvent&)>& on_event) {
  SseParser parser;
  Status overflow;
  std::function<bool(std::string_view)> on_data = [&](std::string_view bytes) {
    if (!parser.Feed(bytes, on_event)) return false;
    if (parser.buffered_bytes() > options_.max_response_body_bytes) {
      overflow = ResourceExhaustedError("SSE event from " + request.url + " exceeds " +
                                        std::to_string(options_.max_response_body_bytes) + " bytes");
      return false;
    }
    return true;
  };
  StatusOr<ClientResponse> r = Execute(request, &on_data);
  if (!overflow.ok()) return overflow;
  return r;
}

StatusOr<ClientResponse> HttpClient::Execute(const ClientRequest& request,
                                             const std::function<bool(std::string_view)>* on_data) {
  Impl& impl = *impl_;
  {
    std::lock_guard<std::mutex> lock(impl.abort_mu);
    impl.in_call = true;
    impl.abort_requested = false;
    ++impl.call_generation;
  }
  StatusOr<ClientResponse> result = ExecuteCall(request, on_data);
  bool aborted = false;
  {
    std::lock_guard<std::mutex> lock(impl.abort_mu);
    aborted = impl.abort_requested;
    impl.in_call = false;
    impl.abort_requested = false;
  }
  impl.active = nullptr;
  if (aborted) {
    impl.idle.clear();  // a connection of an aborted exchange is never reused
    return CancelledError("request to " + request.url + " was aborted");
  }
  return result;
}

StatusOr<ClientResponse> HttpClient::ExecuteCall(const ClientRequest& request,
                                                 const std::function<bool(std::string_view)>* on_data) {
  KVMESH_RETURN_IF_ERROR(options_.Validate());
  KVMESH_ASSIGN_OR_RETURN(Url url, ParseUrl(request.url));
  const std::string where = url.HostPort();
  const auto read_ms = std::to_string(options_.read_timeout.count()) + "ms";
  Impl& impl = *impl_;
  if (impl.Aborted()) return CancelledError("aborted");

  if (url.tls && !impl.ssl_ctx) {
    impl.ssl_ctx.emplace(net::ssl::context::tls_client);
    boost::system::error_code ec;
    if (options_.verify_peer) {
      impl.ssl_ctx->set_verify_mode(net::ssl::verify_peer, ec);
      if (!options_.ca_file.empty()) {
        impl.ssl_ctx->load_verify_file(options_.ca_file, ec);
        if (ec) {
          impl.ssl_status = InvalidArgumentError("cannot load ca_file \"" + options_.ca_file +
                                                 "\": " + ec.message());
        }
      } else {
        impl.ssl_ctx->set_default_verify_paths(ec);
        if (ec) impl.ssl_status = UnavailableError("cannot load the system CA store: " + ec.message());
      }
    } else {
      impl.ssl_ctx->set_verify_mode(net::ssl::verify_none, ec);
    }
  }
  if (url.tls && !impl.ssl_status.ok()) return impl.ssl_status;

  bhttp::request<bhttp::string_body> req;
  req.version(11);
  req.method_string(request.method);
  req.target(url.target);
  req.set(bhttp::field::host, url.port == (url.tls ? 443 : 80) ? url.host : where);
  req.set(bhttp::field::user_agent, options_.user_agent);
  if (!request.content_type.empty()) req.set(bhttp::field::content_type, request.content_type);
  for (const auto& [k, v] : request.headers) req.set(k, v);
  req.keep_alive(options_.keep_alive);
  req.body() = request.body;
  req.prepare_payload();

  auto connect = [&]() -> StatusOr<std::unique_ptr<Conn>> {
    boost::system::error_code ec;
    tcp::resolver resolver(impl.ioc);
    auto endpoints = resolver.resolve(url.host, std::to_string(url.port), ec);
    if (ec) return UnavailableError("resolve " + where + " failed: " + ec.message());
    auto conn = std::make_unique<Conn>();
    conn->tcp = std::make_unique<beast::tcp_stream>(impl.ioc);
    impl.active = conn.get();
    if (impl.Aborted()) return CancelledError("aborted");
    conn->tcp->expires_after(options_.connect_timeout);
    conn->tcp->async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    impl.Run();
    const auto connect_ms = std::to_string(options_.connect_timeout.count()) + "ms";
    if (ec == beast::error::timeout) {
      return DeadlineExceededError("connect to " + where + " timed out after " + connect_ms);
    }
    if (ec) return UnavailableError("connect to " + where + " failed: " + ec.message());
    ++connections_opened_;
    boost::system::error_code nd;
    conn->tcp->socket().set_option(tcp::no_delay(true), nd);
    if (url.tls) {
      conn->tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(std::move(*conn->tcp),
                                                                          *impl.ssl_ctx);
      conn->tcp.reset();
      if (!IsIpAddress(url.host)) SSL_set_tlsext_host_name(conn->tls->native_handle(), url.host.c_str());
      if (options_.verify_peer) {
        conn->tls->set_verify_callback(net::ssl::host_name_verification(url.host));
      }
      conn->lowest().expires_after(options_.connect_timeout);
      conn->tls->async_handshake(net::ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
      impl.Run();
      if (ec == beast::error::timeout) {
        return DeadlineExceededError("TLS handshake with " + where + " timed out after " + connect_ms);
      }
      if (ec) return UnavailableError("TLS handshake with " + where + " failed: " + ec.message());
    }
    return conn;
  };

  auto io_error = [&](const char* what, beast::error_code ec) -> Status {
    if (ec == beast::error::timeout) {
      return DeadlineExceededError(std::string(what) + " " + where + " timed out after " + read_ms);
    }
    return UnavailableError(std::string(what) + " " + where + " failed: " + ec.message());
  };

  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<Conn> conn;
    bool reused = false;
    auto it = impl.idle.find(url.Key());
    if (it != impl.idle.end()) {
      conn = std::move(it->second);
      impl.idle.erase(it);
      reused = true;
    } else {
      KVMESH_ASSIGN_OR_RETURN(conn, connect());
    }
    impl.active = conn.get();
    if (impl.Aborted()) return CancelledError("aborted");
    // A reused connection the server has closed fails on write or before any response byte;
    // then retry once on a fresh connection.
    const bool may_retry = reused && attempt == 0;

    beast::error_code ec;
    conn->lowest().expires_after(options_.read_timeout);
    conn->With([&](auto& s) {
      bhttp::async_write(s, req, [&](beast::error_code e, std::size_t) { ec = e; });
    });
    impl.Run();
    if (ec) {
      if (may_retry && !impl.Aborted()) continue;
      return io_error("write to", ec);
    }

    ClientResponse out;
    auto fill_headers = [&](const auto& msg) {
      out.status = static_cast<int>(msg.result_int());
      for (const auto& f : msg) out.headers[Lower(std::string(f.name_string()))] = std::string(f.value());
    };

    if (on_data == nullptr) {
      bhttp::response_parser<bhttp::string_body> parser;
      parser.body_limit(options_.max_response_body_bytes);
      const Status too_large = ResourceExhaustedError(
          "response body from " + where + " exceeds the limit of " +
          std::to_string(options_.max_response_body_bytes) + " bytes");
      conn->lowest().expires_after(options_.read_timeout);
      conn->With([&](auto& s) {
        bhttp::async_read_header(s, conn->buffer, parser,
                                 [&](beast::error_code e, std::size_t) { ec = e; });
      });
      impl.Run();
      if (ec == bhttp::error::body_limit) return too_large;
      if (ec) {
        if (may_retry && !parser.got_some() && !impl.Aborted()) continue;
        return io_error("read from", ec);
      }
      // Boost 1.74's response parser skips the Content-Length vs body_limit check when the header
      // and the body are parsed in one go (eager), so check it here as well.
      if (parser.content_length() && *parser.content_length() > options_.max_response_body_bytes) {
        return too_large;
      }
      if (!parser.is_done()) {
        conn->lowest().expires_after(options_.read_timeout);
        conn->With([&](auto& s) {
          bhttp::async_read(s, conn->buffer, parser, [&](beast::error_code e, std::size_t) { ec = e; });
        });
        impl.Run();
      }
      if (ec == bhttp::error::body_limit) return too_large;
      if (ec) return io_error("read from", ec);
      fill_headers(parser.get());
      out.body = std::move(parser.get().body());
      if (options_.keep_alive && parser.get().keep_alive()) impl.idle[url.Key()] = std::move(conn);
      return out;
    }

    // Streaming.
    bhttp::response_parser<bhttp::buffer_body> parser;
    // boost::none would reject every Content-Length body in Boost 1.74; use "no limit".
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    conn->lowest().expires_after(options_.read_timeout);
    conn->With([&](auto& s) {
      bhttp::async_read_header(s, conn->buffer, parser,
                               [&](beast::error_code e, std::size_t) { ec = e; });
    });
    impl.Run();
    if (ec) {
      if (may_retry && !parser.got_some() && !impl.Aborted()) continue;
      return io_error("read from", ec);
    }
    fill_headers(parser.get());
    const bool deliver = out.status >= 200 && out.status < 300;
    char buf[16384];
    while (!parser.is_done()) {
      parser.get().body().data = buf;
      parser.get().body().size = sizeof(buf);
      conn->lowest().expires_after(options_.read_timeout);
      conn->With([&](auto& s) {
        bhttp::async_read_some(s, conn->buffer, parser,
                               [&](beast::error_code e, std::size_t) { ec = e; });
      });
      impl.Run();
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) return io_error("read from", ec);
      std::size_t n = sizeof(buf) - parser.get().body().size;
      if (n == 0) continue;
      if (deliver) {
        if (!(*on_data)(std::string_view(buf, n))) return out;  // drops the connection
      } else {
        if (out.body.size() + n > options_.max_response_body_bytes) {
          return ResourceExhaustedError("response body from " + where + " exceeds the limit of " +
                                        std::to_string(options_.max_response_body_bytes) + " bytes");
        }
        out.body.append(buf, n);
      }
    }
    if (options_.keep_alive && parser.get().keep_alive()) impl.idle[url.Key()] = std::move(conn);
    return out;
  }
}

}  // namespace kvmesh::http
