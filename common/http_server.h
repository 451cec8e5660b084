// HttpServer: a small HTTP/1.1 server on Boost.Beast for kvmesh's APIs (OpenAI-compatible
// endpoints, /metrics, health checks, admin calls).
//
// Model: one io_context run by `num_threads` threads; every connection is a session whose socket
// operations are serialized on its own strand. Routes are (method, exact path) or (method, path
// prefix; longest prefix wins) and must be registered before Start(). A plain handler runs on an
// io thread and returns an HttpResponse; a streaming handler gets a StreamWriter that any thread
// may Send() to (each Send is written to the socket at once, chunked transfer encoding, optional
// SSE framing) until Close().
//
// Invariants: no exception escapes a handler into the server (caught -> 500 JSON error); error
// responses carry an OpenAI-style body {"error":{"message","type","code"}}; a request body over
// max_request_body_bytes is answered 413 and the connection closed; a malformed request 400; an
// unknown path 404; a known path with another method 405 (with Allow). After Stop() returns no
// io thread runs and every StreamWriter is closed, so the server may be destroyed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvmesh::http {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as received: "/v1/models?x=1"
  std::string path;    // target before '?'
  std::string query;   // target after '?', without it; empty if none
  // Header names are lower-cased; a repeated header keeps its last value.
  std::map<std::string, std::string> headers;
  std::string body;
  std::string remote_address;  // "127.0.0.1:54321"

  // The header's value, or "" if absent. `name` is matched case-insensitively.
  std::string Header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  std::string body;
};

// {"error":{"message":<message>,"type":<type>,"code":<code>}} with content type application/json.
HttpResponse JsonErrorResponse(int status, std::string_view message, std::string_view type,
                               std::string_view code);
// Error response for a non-OK status: HTTP code from HttpStatusFor(), type from the HTTP code
// ("invalid_request_error", "not_found_error", "rate_limit_error", "server_error", ...), code the
// lower-cased status code name ("invalid_argument"). retry_after_seconds > 0 adds Retry-After.
HttpResponse ErrorResponseFor(const Status& status, int retry_after_seconds = 0);
HttpResponse JsonResponse(int status, std::string body);

class HttpSession;  // internal

// Handle given to a streaming handler. Thread-safe: Send/Close/IsClosed may be called from any
// thread. Sends are queued in order and each is written to the socket as soon as the previous
// write finished (no batching). Once closed (Close(), client disconnect, or server stop) every
// Send returns false.
class StreamWriter {
 public:
  enum class Mode { kChunked, kSse };

  // Chunked mode: writes `bytes` as one chunk. SSE mode: writes one event
  // ("data: <line>\n" per line of `data`, then "\n"). Returns false if the stream is closed.
  bool Send(std::string_view data);
  // SSE mode: an event with an `event:` field (and an `id:` field when id is non-empty).
  bool SendEvent(std::string_view event, std::string_view data, std::string_view id = {});
  // Ends the response (terminating chunk). Idempotent.
  void Close();
  bool IsClosed() const;
  // Called once, on an io thread, if the stream ends without Close(): the client disconnected or
  // the server force-closed the connection at Stop(). Must not block. If the stream is already
  // closed that way, `callback` runs immediately on the caller's thread.
  void SetOnDisconnect(std::function<void()> callback);

  // Internal (used by the server).
  StreamWriter(std::weak_ptr<HttpSession> session, Mode mode);
  bool EnqueueRaw(std::string bytes, bool last);
  void MarkDisconnected();
  void MarkClosedByServer();

 private:
  mutable std::mutex mu_;
  std::weak_ptr<HttpSession> session_;
  const Mode mode_;
  bool closed_ = false;
  bool disconnected_ = false;
  std::function<void()> on_disconnect_;
};

// Handle given to an asynchronous handler. Thread-safe. Exactly one of Respond / StartStream takes
// effect (later calls return false / nullptr). If the handler drops its last reference without
// responding, the client gets a 500.
class Responder {
 public:
  // Sends a complete response (keep-alive as usual). False if a response was already started or
  // the connection is gone.
  bool Respond(HttpResponse response);
  // Starts a 200 streaming response (headers as for RouteStream routes) and returns its writer;
  // nullptr if a response was already started or the connection is gone. In chunked mode a
  // non-empty content_type replaces application/octet-stream (e.g. "application/json" for a
  // Kubernetes watch).
  std::shared_ptr<StreamWriter> StartStream(StreamWriter::Mode mode, std::string content_type = {});
  // Called once, on an io thread, if the connection ends before the response was written (for a
  // stream: before the writer's Close()), e.g. the client went away. Must not block. Runs at once
  // on the caller's thread if that already happened.
  void SetOnDisconnect(std::function<void()> callback);
  bool IsDisconnected() const;

  // Internal (used by the server).
  explicit Responder(std::weak_ptr<HttpSession> session);
  ~Responder();
  void MarkDisconnected();

 private:
  mutable std::mutex mu_;
  std::weak_ptr<HttpSession> session_;
  bool responded_ = false;
  bool disconnected_ = false;
  std::function<void()> on_disconnect_;
};

using Handler = std::function<HttpResponse(const HttpRequest&)>;
using StreamHandler = std::function<void(const HttpRequest&, std::shared_ptr<StreamWriter>)>;
// Runs on an io thread and must return quickly; it answers later, from any thread, through the
// Responder (a plain response or a stream). While it has not answered, the connection counts as
// in flight for Stop(grace), and a client disconnect is reported through the Responder.
using AsyncHandler = std::function<void(const HttpRequest&, std::shared_ptr<Responder>)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";  // address to bind; "0.0.0.0" for all interfaces
  uint16_t port = 0;               // 0 = pick a free port (see HttpServer::port())
  int num_threads = 2;             // io threads; a blocking plain handler occupies one
  std::size_t max_request_body_bytes = 1 << 20;  // larger -> 413
  std::size_t max_header_bytes = 16 << 10;       // larger -> 431
  // A connection that sends no complete request for this long (idle keep-alive included) is
  // closed. Does not apply while a handler runs or a stream is open.
  std::chrono::milliseconds idle_timeout{60000};
  std::string server_name = "kvmesh";

  // Returns InvalidArgument naming the bad field.
  Status Validate() const;
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();  // Stop(0) if still running.
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Registration; only before Start(). `method` is e.g. "GET".
  void Route(std::string method, std::string path, Handler handler);
  void RoutePrefix(std::string method, std::string prefix, Handler handler);
  void RouteStream(std::string method, std::string path, StreamWriter::Mode mode,
                   StreamHandler handler);
  void RouteAsync(std::string method, std::string path, AsyncHandler handler);
  void RoutePrefixAsync(std::string method, std::string prefix, AsyncHandler handler);

  // Binds, listens and starts the io threads. Returns InvalidArgument for bad options,
  // Unavailable "bind <host>:<port>: <reason>" if the address cannot be bound, FailedPrecondition
  // if already started.
  Status Start();
  // The bound port (useful with port 0); 0 before Start().
  uint16_t port() const { return bound_port_.load(); }

  // Closes the listening socket; new connections are refused. Idempotent; blocks until done.
  void StopAccepting();
  // Graceful stop: StopAccepting(), close idle keep-alive connections, let in-flight requests and
  // open streams finish until `grace` has passed, then close the remaining connections (their
  // StreamWriters report a disconnect), stop the io threads. Idempotent; blocks until done.
  void Stop(std::chrono::milliseconds grace);

  // Connections accepted since Start() (each keep-alive connection counts once).
  uint64_t accepted_connections() const { return accepted_connections_.load(); }
  // Connections currently open.
  std::size_t open_connections() const;

 private:
  friend class HttpSession;
  struct RouteEntry {
    Handler handler;
    StreamHandler stream_handler;
    AsyncHandler async_handler;
    StreamWriter::Mode mode = StreamWriter::Mode::kChunked;
  };
  struct Impl;

  // Finds the route; returns nullptr and sets *status_out (404/405) and *allow_out otherwise.
  const RouteEntry* FindRoute(const std::string& method, const std::string& path,
                              int* status_out, std::string* allow_out) const;
  void Register(std::shared_ptr<HttpSession> session);
  void Unregister(HttpSession* session);

  const HttpServerOptions options_;
  std::map<std::string, std::map<std::string, RouteEntry>> exact_routes_;   // path -> method
  std::map<std::string, std::map<std::string, RouteEntry>> prefix_routes_;  // prefix -> method
  std::atomic<uint16_t> bound_port_{0};
  std::atomic<uint64_t> accepted_connections_{0};
  std::atomic<bool> stopping_{false};
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvmesh::http
