#include "common/http_server.h"

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <exception>
#include <future>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/log.h"

namespace kvmesh::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

constexpr char kComponent[] = "http";

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string ErrorTypeForHttp(int status) {
  switch (status) {
    case 400:
    case 413:
    case 431:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 405:
      return "invalid_request_error";
    case 409:
      return "conflict_error";
    case 429:
      return "rate_limit_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string ChunkFrame(std::string_view data) {
  char hex[32];
  int n = std::snprintf(hex, sizeof(hex), "%zx\r\n", data.size());
  std::string out;
  out.reserve(static_cast<std::size_t>(n) + data.size() + 2);
  out.append(hex, static_cast<std::size_t>(n));
  out.append(data);
  out.append("\r\n");
  return out;
}

// "data: a\ndata: b\n" for "a\nb" (a trailing '\r' of each line is dropped).
void AppendSseField(std::string& out, std::string_view field, std::string_view value) {
  std::size_t start = 0;
  while (true) {
    std::size_t nl = value.find('\n', start);
    std::string_view line = value.substr(start, nl == std::string_view::npos ? nl : nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out.append(field);
    out.append(": ");
    out.append(line);
    out.push_back('\n');
    if (nl == std::string_view::npos) break;
    start = nl + 1;
  }
}

}  // namespace

// ---- small helpers -----------------------------------------------------------------------------

std::string HttpRequest::Header(std::string_view name) const {
  auto it = headers.find(Lower(name));
  return it == headers.end() ? std::string() : it->second;
}

HttpResponse JsonResponse(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(body);
  return r;
}

HttpResponse JsonErrorResponse(int status, std::string_view message, std::string_view type,
                               std::string_view code) {
  nlohmann::json j;
  j["error"]["message"] = std::string(message);
  j["error"]["type"] = std::string(type);
  j["error"]["code"] = std::string(code);
  // Replace invalid UTF-8 rather than throw.
  return JsonResponse(status, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

HttpResponse ErrorResponseFor(const Status& status, int retry_after_seconds) {
  if (status.ok()) {
    return JsonErrorResponse(500, "ErrorResponseFor called with OK status", "server_error",
                             "internal");
  }
  int http_status = HttpStatusFor(status.code());
  HttpResponse r = JsonErrorResponse(http_status, status.message(), ErrorTypeForHttp(http_status),
                                     Lower(StatusCodeName(status.code())));
  if (retry_after_seconds > 0) r.headers.emplace_back("Retry-After", std::to_string(retry_after_seconds));
  return r;
}

Status HttpServerOptions::Validate() const {
  boost::system::error_code ec;
  net::ip::make_address(host, ec);
  if (ec) return InvalidArgumentError("host must be an IP address, got \"" + host + "\"");
  if (num_threads < 1 || num_threads > 256) {
    return InvalidArgumentError("num_threads must be in [1, 256], got " + std::to_string(num_threads));
  }
  if (max_request_body_bytes == 0) return InvalidArgumentError("max_request_body_bytes must be > 0");
  if (max_header_bytes < 256) {
    return InvalidArgumentError("max_header_bytes must be >= 256, got " +
                                std::to_string(max_header_bytes));
  }
  if (idle_timeout.count() <= 0) return InvalidArgumentError("idle_timeout must be > 0");
  return Status::Ok();
}

// ---- server internals --------------------------------------------------------------------------

struct HttpServer::Impl {
  std::unique_ptr<net::io_context> ioc;
  std::optional<tcp::acceptor> acceptor;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::thread> threads;

  std::mutex mu;  // guards the fields below
  std::condition_variable cv;
  std::map<HttpSession*, std::weak_ptr<HttpSession>> sessions;
  std::vector<std::weak_ptr<StreamWriter>> writers;
  bool started = false;
  bool accepting = false;
  bool stopped = false;

  std::mutex stop_mu;  // serializes Stop()/StopAccepting()
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(HttpServer* server, tcp::socket socket)
      : server_(server), stream_(std::move(socket)) {
    boost::system::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  ~HttpSession() { server_->Unregister(this); }

  void Start() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
  }
  void PostCloseIfIdle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->state_ == State::kReading) self->CloseSocket();
    });
  }
  void PostForceClose() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->Disconnect(); });
  }
  // Runs on the strand (posted by StreamWriter).
  void QueueStreamBytes(std::string bytes, bool last) {
    if (state_ != State::kStreaming) return;
    out_.push_back(std::move(bytes));
    if (last) last_queued_ = true;
    if (!writing_) DoStreamWrite();
  }
  net::any_io_executor executor() { return stream_.get_executor(); }
  // Runs on the strand (posted by Responder).
  void AsyncRespond(HttpResponse r) {
    if (state_ != State::kAsync) return;
    beast::error_code ignored;
    stream_.socket().cancel(ignored);  // the disconnect-detecting read; its handler sees kWriting
    WriteResponse(std::move(r), keep_alive_, false);
  }
  void AsyncStartStream(const std::shared_ptr<StreamWriter>& writer, StreamWriter::Mode mode,
                        const std::string& content_type = {}) {
    if (state_ != State::kAsync) {
      writer->MarkDisconnected();
      return;
    }
    state_ = State::kStreaming;
    BeginStream(writer, mode, content_type);  // the detect read started in kAsync keeps running
  }

 private:
  enum class State { kReading, kHandling, kAsync, kWriting, kDraining, kStreaming, kClosed };

  void DoRead() {
    if (state_ == State::kClosed) return;
    if (server_->stopping_.load()) {
      GracefulClose();
      return;
    }
    state_ = State::kReading;
    parser_.emplace();
    parser_->body_limit(server_->options_.max_request_body_bytes);
    parser_->header_limit(static_cast<std::uint32_t>(server_->options_.max_header_bytes));
    stream_.expires_after(server_->options_.idle_timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        self->OnRead(ec);
                      });
  }

  void OnRead(beast::error_code ec) {
    if (state_ == State::kClosed) return;
    if (ec == bhttp::error::end_of_stream) {
      GracefulClose();
      return;
    }
    if (ec == bhttp::error::body_limit) {
      WriteError(JsonErrorResponse(
          413,
          "request body exceeds the limit of " +
              std::to_string(server_->options_.max_request_body_bytes) + " bytes",
          "invalid_request_error", "request_too_large"));
      return;
    }
    if (ec == bhttp::error::header_limit) {
      WriteError(JsonErrorResponse(431, "request header fields too large", "invalid_request_error",
                                   "header_too_large"));
      return;
    }
    if (ec && ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category()) {
      WriteError(JsonErrorResponse(400, "malformed HTTP request: " + ec.message(),
                                   "invalid_request_error", "bad_request"));
      return;
    }
    if (ec) {  // timeout, reset, cancelled by Stop()
      CloseSocket();
      return;
    }
    HandleRequest();
  }

  void HandleRequest() {
    state_ = State::kHandling;
    stream_.expires_never();
    bhttp::request<bhttp::string_body> raw = parser_->release();
    HttpRequest req;
    req.method = std::string(raw.method_string());
    req.target = std::string(raw.target());
    std::size_t q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos) req.query = req.target.substr(q + 1);
    for (const auto& field : raw) req.headers[Lower(std::string(field.name_string()))] = std::string(field.value());
    req.body = std::move(raw.body());
    req.remote_address = remote_;
    version_ = raw.version();
    keep_alive_ = raw.keep_alive();

    int status = 0;
    std::string allow;
    const HttpServer::RouteEntry* route = server_->FindRoute(req.method, req.path, &status, &allow);
    if (route == nullptr) {
      HttpResponse r = status == 405
                           ? JsonErrorResponse(405, "method " + req.method + " not allowed for " +
                                                        req.path,
                                               "invalid_request_error", "method_not_allowed")
                           : JsonErrorResponse(404, "no route for " + req.path,
                                               "not_found_error", "not_found");
      if (!allow.empty()) r.headers.emplace_back("Allow", allow);
      WriteResponse(std::move(r), keep_alive_, false);
      return;
    }
    if (route->stream_handler) {
      StartStream(*route, req);
      return;
    }
    if (route->async_handler) {
      state_ = State::kAsync;
      auto responder = std::make_shared<Responder>(weak_from_this());
      responder_ = responder;
      DoDetectRead();
      try {
        route->async_handler(req, std::move(responder));
      } catch (const std::exception& e) {
        KVMESH_LOG_ERROR(kComponent, "async handler threw", {"path", req.path}, {"what", e.what()});
      } catch (...) {
        KVMESH_LOG_ERROR(kComponent, "async handler threw", {"path", req.path});
      }
      return;  // a dropped responder answers 500 from its destructor
    }
    HttpResponse response;
    try {
      response = route->handler(req);
    } catch (const std::exception& e) {
      KVMESH_LOG_ERROR(kComponent, "handler threw", {"path", req.path}, {"what", e.what()});
      response = JsonErrorResponse(500, std::string("internal error: ") + e.what(), "server_error",
                                   "internal");
    } catch (...) {
      KVMESH_LOG_ERROR(kComponent, "handler threw", {"path", req.path});
      response = JsonErrorResponse(500, "internal error", "server_error", "internal");
    }
    WriteResponse(std::move(response), keep_alive_, false);
  }

  // Writes an error for a request that could not be parsed, then closes after draining what the
  // client still sends (so it can read the response instead of getting a reset).
  void WriteError(HttpResponse r) {
    version_ = 11;
    WriteResponse(std::move(r), false, true);
  }

  void WriteResponse(HttpResponse r, bool keep_alive, bool linger) {
    state_ = State::kWriting;
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>();
    res->version(version_);
    if (r.status < 100 || r.status > 999) {
      KVMESH_LOG_ERROR(kComponent, "handler returned an invalid HTTP status", {"status", r.status});
      r = JsonErrorResponse(500, "handler returned invalid HTTP status " + std::to_string(r.status),
                            "server_error", "internal");
    }
    res->result(static_cast<unsigned>(r.status));
    res->set(bhttp::field::server, server_->options_.server_name);
    res->set(bhttp::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) res->set(k, v);
    res->body() = std::move(r.body);
    res->keep_alive(keep_alive && !server_->stopping_.load());
    res->prepare_payload();
    stream_.expires_after(server_->options_.idle_timeout);
    bhttp::async_write(stream_, *res,
                       [self = shared_from_this(), res, linger](beast::error_code ec, std::size_t) {
                         self->OnWrite(ec, res->need_eof(), linger);
                       });
  }

  void OnWrite(beast::error_code ec, bool close, bool linger) {
    if (state_ == State::kClosed) return;
    if (ec) {
      CloseSocket();
      return;
    }
    if (linger) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      state_ = State::kDraining;
      drained_ = 0;
      DoDrain();
      return;
    }
    if (close || server_->stopping_.load()) {
      GracefulClose();
      return;
    }
    // The disconnect-detecting read of an async request was cancelled, but its handler may not
    // have run yet (the write's completion can reach the strand first); a second read on the
    // stream before then is not allowed, so the handler starts the next read.
    if (detect_pending_) {
      read_after_detect_ = true;
      return;
    }
    DoRead();
  }

  void DoDrain() {
    stream_.expires_after(std::chrono::seconds(1));
    stream_.async_read_some(net::buffer(drain_buf_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->drained_ += n;
                              if (ec || self->state_ != State::kDraining ||
                                  self->drained_ > 4 * self->server_->options_.max_request_body_bytes +
                                                       (1 << 20)) {
                                self->CloseSocket();
                                return;
                              }
                              self->DoDrain();
                            });
  }

  void StartStream(const HttpServer::RouteEntry& route, const HttpRequest& req) {
    state_ = State::kStreaming;
    auto writer = std::make_shared<StreamWriter>(weak_from_this(), route.mode);
    BeginStream(writer, route.mode);
    DoDetectRead();
    try {
      route.stream_handler(req, writer);
    } catch (const std::exception& e) {
      KVMESH_LOG_ERROR(kComponent, "stream handler threw", {"path", req.path}, {"what", e.what()});
      writer->Close();
    } catch (...) {
      KVMESH_LOG_ERROR(kComponent, "stream handler threw", {"path", req.path});
      writer->Close();
    }
  }

  void BeginStream(const std::shared_ptr<StreamWriter>& writer, StreamWriter::Mode mode,
                   const std::string& content_type = {}) {
    stream_.expires_never();
    writer_ = writer;
    {
      std::lock_guard<std::mutex> lock(server_->impl_->mu);
      auto& writers = server_->impl_->writers;
      writers.erase(std::remove_if(writers.begin(), writers.end(),
                                   [](const std::weak_ptr<StreamWriter>& w) { return w.expired(); }),
                    writers.end());
      writers.push_back(writer);
    }
    std::string head = "HTTP/1.1 200 OK\r\nServer: " + server_->options_.server_name + "\r\n";
    if (mode == StreamWriter::Mode::kSse) {
      head += "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n";
    } else {
      head += "Content-Type: " + (content_type.empty() ? std::string("application/octet-stream") : content_type) + "\r\n";
    }
    head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    QueueStreamBytes(std::move(head), false);
  }

  // While streaming, a pending read notices the client closing the connection at once.
  void DoDetectRead() {
    detect_pending_ = true;
    stream_.async_read_some(net::buffer(drain_buf_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->detect_pending_ = false;
                              if (self->read_after_detect_) {
                                self->read_after_detect_ = false;
                                if (self->state_ == State::kClosed) return;
                                // Bytes read here belonged to a pipelined request: they are
                                // gone, so close rather than parse the rest.
                                if (!ec && n > 0) {
                                  self->GracefulClose();
                                } else {
                                  self->DoRead();
                                }
                                return;
                              }
                              if (self->state_ != State::kStreaming && self->state_ != State::kAsync) {
                                return;
                              }
                              if (ec) {
                                self->Disconnect();
                                return;
                              }
                              // Bytes sent while a response is pending (pipelining) are not
                              // parsed: ignore them and close after the response.
                              if (n > 0) self->keep_alive_ = false;
                              self->DoDetectRead();
                            });
  }

  void DoStreamWrite() {
    writing_ = true;
    net::async_write(stream_, net::buffer(out_.front()),
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       self->OnStreamWrite(ec);
                     });
  }

  void OnStreamWrite(beast::error_code ec) {
    writing_ = false;
    if (state_ != State::kStreaming) return;
    if (ec) {
      Disconnect();
      return;
    }
    out_.pop_front();
    if (!out_.empty()) {
      DoStreamWrite();
    } else if (last_queued_) {
      GracefulClose();
    }
  }

  // The connection ended before the stream was closed by its handler (or Stop() forced it).
  void Disconnect() {
    if (state_ == State::kClosed) return;
    if (auto w = writer_.lock()) w->MarkDisconnected();
    if (auto r = responder_.lock()) r->MarkDisconnected();
    CloseSocket();
  }

  void GracefulClose() {
    if (state_ == State::kClosed) return;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    CloseSocket();
  }

  void CloseSocket() {
    state_ = State::kClosed;
    out_.clear();
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

  HttpServer* const server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::string remote_;
  State state_ = State::kReading;  // only the strand touches the fields below
  unsigned version_ = 11;
  bool keep_alive_ = true;
  std::weak_ptr<StreamWriter> writer_;
  std::weak_ptr<Responder> responder_;
  std::deque<std::string> out_;
  bool writing_ = false;
  bool last_queued_ = false;
  bool detect_pending_ = false;     // a DoDetectRead is outstanding
  bool read_after_detect_ = false;  // OnWrite left the next DoRead to that read's handler
  std::size_t drained_ = 0;
  char drain_buf_[4096];
};

// ---- Responder ---------------------------------------------------------------------------------

Responder::Responder(std::weak_ptr<HttpSession> session) : session_(std::move(session)) {}

Responder::~Responder() {
  if (responded_) return;
  if (auto s = session_.lock()) {
    net::post(s->executor(), [s] {
      s->AsyncRespond(JsonErrorResponse(500, "the handler did not answer", "server_error", "internal"));
    });
  }
}

bool Responder::Respond(HttpResponse response) {
  std::lock_guard<std::mutex> lock(mu_);
  if (responded_ || disconnected_) return false;
  responded_ = true;
  std::shared_ptr<HttpSession> s = session_.lock();
  if (!s) return false;
  net::post(s->executor(), [s, r = std::move(response)]() mutable { s->AsyncRespond(std::move(r)); });
  return true;
}

std::shared_ptr<StreamWriter> Responder::StartStream(StreamWriter::Mode mode,
                                                     std::string content_type) {
  std::lock_guard<std::mutex> lock(mu_);
  if (responded_ || disconnected_) return nullptr;
  responded_ = true;
  std::shared_ptr<HttpSession> s = session_.lock();
  if (!s) return nullptr;
  auto writer = std::make_shared<StreamWriter>(session_, mode);
  // Posted before the caller can Send(): the strand runs the header write first.
  net::post(s->executor(), [s, writer, mode, ct = std::move(content_type)] {
    s->AsyncStartStream(writer, mode, ct);
  });
  return writer;
}

void Responder::SetOnDisconnect(std::function<void()> callback) {
  bool run_now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (disconnected_) {
      run_now = true;
    } else {
      on_disconnect_ = std::move(callback);
    }
  }
  if (run_now && callback) callback();
}

bool Responder::IsDisconnected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return disconnected_;
}

void Responder::MarkDisconnected() {
  std::function<void()> cb;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (disconnected_) return;
    disconnected_ = true;
    cb = std::move(on_disconnect_);
  }
  if (cb) cb();
}

// ---- StreamWriter ------------------------------------------------------------------------------

StreamWriter::StreamWriter(std::weak_ptr<HttpSession> session, Mode mode)
    : session_(std::move(session)), mode_(mode) {}

bool StreamWriter::EnqueueRaw(std::string bytes, bool last) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return false;
  if (last) closed_ = true;
  std::shared_ptr<HttpSession> s = session_.lock();
  if (!s) {
    closed_ = true;
    return false;
  }
  // Posted while holding mu_: Stop() marks writers closed under mu_ before the io_context goes.
  net::post(s->executor(), [s, b = std::move(bytes), last]() mutable {
    s->QueueStreamBytes(std::move(b), last);
  });
  s.reset();
  return true;
}

bool StreamWriter::Send(std::string_view data) {
  if (mode_ == Mode::kChunked) {
    if (data.empty()) return !IsClosed();  // a zero-size chunk would end the response
    return EnqueueRaw(ChunkFrame(data), false);
  }
  std::string event;
  AppendSseField(event, "data", data);
  event.push_back('\n');
  return EnqueueRaw(ChunkFrame(event), false);
}

bool StreamWriter::SendEvent(std::string_view event_name, std::string_view data,
                             std::string_view id) {
  std::string event;
  if (!event_name.empty()) AppendSseField(event, "event", event_name);
  if (!id.empty()) AppendSseField(event, "id", id);
  AppendSseField(event, "data", data);
  event.push_back('\n');
  return EnqueueRaw(ChunkFrame(event), false);
}

void StreamWriter::Close() { EnqueueRaw("0\r\n\r\n", true); }

bool StreamWriter::IsClosed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

void StreamWriter::SetOnDisconnect(std::function<void()> callback) {
  bool run_now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (disconnected_) {
      run_now = true;
    } else {
      on_disconnect_ = std::move(callback);
    }
  }
  if (run_now && callback) callback();
}

void StreamWriter::MarkDisconnected() {
  std::function<void()> cb;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (disconnected_) return;
    bool was_closed = closed_;
    closed_ = true;
    if (was_closed) return;  // the handler had already closed it: not a disconnect
    disconnected_ = true;
    cb = std::move(on_disconnect_);
  }
  if (cb) {
    try {
      cb();
    } catch (...) {
      KVMESH_LOG_ERROR(kComponent, "on-disconnect callback threw");
    }
  }
}

void StreamWriter::MarkClosedByServer() {
  MarkDisconnected();
  std::lock_guard<std::mutex> lock(mu_);
  session_.reset();
}

// ---- HttpServer --------------------------------------------------------------------------------

HttpServer::HttpServer(HttpServerOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>()) {}

HttpServer::~HttpServer() {
  Stop(std::chrono::milliseconds(0));
  // Destroy the io_context while impl_ (the session registry) is still alive: destroying pending
  // handlers destroys sessions, which unregister themselves.
  impl_->acceptor.reset();
  impl_->ioc.reset();
}

void HttpServer::Route(std::string method, std::string path, Handler handler) {
  exact_routes_[std::move(path)][std::move(method)] = RouteEntry{std::move(handler), nullptr, {}};
}

void HttpServer::RoutePrefix(std::string method, std::string prefix, Handler handler) {
  prefix_routes_[std::move(prefix)][std::move(method)] = RouteEntry{std::move(handler), nullptr, {}};
}

void HttpServer::RouteAsync(std::string method, std::string path, AsyncHandler handler) {
  RouteEntry e;
  e.async_handler = std::move(handler);
  exact_routes_[std::move(path)][std::move(method)] = std::move(e);
}

void HttpServer::RoutePrefixAsync(std::string method, std::string prefix, AsyncHandler handler) {
  RouteEntry e;
  e.async_handler = std::move(handler);
  prefix_routes_[std::move(prefix)][std::move(method)] = std::move(e);
}

void HttpServer::RouteStream(std::string method, std::string path, StreamWriter::Mode mode,
                             StreamHandler handler) {
  exact_routes_[std::move(path)][std::move(method)] = RouteEntry{nullptr, std::move(handler), nullptr, mode};
}

const HttpServer::RouteEntry* HttpServer::FindRoute(const std::string& method,
                                                    const std::string& path, int* status_out,
                                                    std::string* allow_out) const {
  const std::map<std::string, RouteEntry>* methods = nullptr;
  auto it = exact_routes_.find(path);
  if (it != exact_routes_.end()) {
    methods = &it->second;
  } else {
    std::size_t best = 0;
    for (const auto& [prefix, m] : prefix_routes_) {
      if (path.compare(0, prefix.size(), prefix) == 0 && prefix.size() >= best) {
        best = prefix.size();
        methods = &m;
      }
    }
  }
  if (methods == nullptr) {
    *status_out = 404;
    return nullptr;
  }
  auto mit = methods->find(method);
  if (mit != methods->end()) return &mit->second;
  *status_out = 405;
  for (const auto& [m, unused] : *methods) {
    if (!allow_out->empty()) allow_out->append(", ");
    allow_out->append(m);
  }
  return nullptr;
}

Status HttpServer::Start() {
  KVMESH_RETURN_IF_ERROR(options_.Validate());
  std::lock_guard<std::mutex> stop_lock(impl_->stop_mu);
  if (impl_->started) return FailedPreconditionError("HttpServer already started");
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  impl_->ioc = std::make_unique<net::io_context>(options_.num_threads);
  impl_->acceptor.emplace(net::make_strand(*impl_->ioc));
  tcp::acceptor& acc = *impl_->acceptor;
  boost::system::error_code ec;
  tcp::endpoint ep(net::ip::make_address(options_.host, ec), options_.port);
  if (!ec) acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    impl_->acceptor.reset();
    impl_->ioc.reset();
    return UnavailableError("bind " + where + ": " + ec.message());
  }
  bound_port_ = acc.local_endpoint(ec).port();
  impl_->started = true;
  impl_->accepting = true;
  impl_->work.emplace(impl_->ioc->get_executor());

  // The accept loop runs on the acceptor's strand.
  struct Acceptor {
    HttpServer* server;
    void operator()() const {
      Impl* impl = server->impl_.get();
      impl->acceptor->async_accept(
          net::make_strand(*impl->ioc),
          [server = server](boost::system::error_code ec, tcp::socket socket) {
            Impl* impl = server->impl_.get();
            if (!impl->acceptor->is_open()) return;
            if (!ec) {
              boost::system::error_code nd;
              socket.set_option(tcp::no_delay(true), nd);
              auto session = std::make_shared<HttpSession>(server, std::move(socket));
              server->Register(session);
              server->accepted_connections_.fetch_add(1);
              session->Start();
            } else {
              KVMESH_LOG_WARN(kComponent, "accept failed", {"error", ec.message()});
            }
            Acceptor{server}();
          });
    }
  };
  net::post(impl_->acceptor->get_executor(), Acceptor{this});
  for (int i = 0; i < options_.num_threads; ++i) {
    impl_->threads.emplace_back([this] {
      for (;;) {
        try {
          impl_->ioc->run();
          return;
        } catch (const std::exception& e) {
          KVMESH_LOG_ERROR(kComponent, "io thread caught exception", {"what", e.what()});
        }
      }
    });
  }
  KVMESH_LOG_INFO(kComponent, "listening", {"host", options_.host}, {"port", int{bound_port_.load()}},
                  {"threads", options_.num_threads});
  return Status::Ok();
}

void HttpServer::Register(std::shared_ptr<HttpSession> session) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->sessions[session.get()] = session;
}

void HttpServer::Unregister(HttpSession* session) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->sessions.erase(session);
  impl_->cv.notify_all();
}

std::size_t HttpServer::open_connections() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->sessions.size();
}

void HttpServer::StopAccepting() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (!impl_->started || !impl_->accepting) return;
    impl_->accepting = false;
  }
  std::promise<void> done;
  net::post(impl_->acceptor->get_executor(), [this, &done] {
    boost::system::error_code ignored;
    impl_->acceptor->close(ignored);
    done.set_value();
  });
  done.get_future().wait();
}

void HttpServer::Stop(std::chrono::milliseconds grace) {
  std::lock_guard<std::mutex> stop_lock(impl_->stop_mu);
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (!impl_->started || impl_->stopped) return;
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  StopAccepting();
  stopping_ = true;

  auto snapshot = [this] {
    std::vector<std::shared_ptr<HttpSession>> out;
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (auto& [p, w] : impl_->sessions) {
      if (auto s = w.lock()) out.push_back(std::move(s));
    }
    return out;
  };
  for (auto& s : snapshot()) s->PostCloseIfIdle();
  {
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->cv.wait_until(lock, deadline, [this] { return impl_->sessions.empty(); });
  }
  for (auto& s : snapshot()) s->PostForceClose();
  {
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->cv.wait_for(lock, std::chrono::seconds(1), [this] { return impl_->sessions.empty(); });
  }
  std::vector<std::shared_ptr<StreamWriter>> writers;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (auto& w : impl_->writers) {
      if (auto s = w.lock()) writers.push_back(std::move(s));
    }
    impl_->writers.clear();
  }
  for (auto& w : writers) w->MarkClosedByServer();
  impl_->work.reset();
  impl_->ioc->stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopped = true;
  }
  KVMESH_LOG_INFO(kComponent, "stopped", {"port", int{bound_port_.load()}});
}

}  // namespace kvmesh::http
