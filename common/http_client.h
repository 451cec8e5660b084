// HttpClient: a synchronous HTTP/1.1 client on Boost.Beast for kvmesh's outbound calls (router ->
// workers, agents -> control plane, health probes), with TLS and server-sent-event streaming.
//
// One client keeps at most one idle keep-alive connection per scheme://host:port and reuses it for
// the next request to that origin; a reused connection that turns out closed by the server is
// replaced once, transparently, if nothing of the response had arrived. Every socket operation has
// a timeout. An HTTP error status (4xx/5xx) is a successful call that returns the response; a
// Status error means no complete response arrived, and its message names host:port and what
// failed (connect refused, timed out, TLS handshake failed, response body too large).
//
// Not thread-safe: use one HttpClient per thread (they are cheap). The one exception is Abort(),
// which any thread may call to cancel the call in progress.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvmesh::http {

struct HttpClientOptions {
  std::chrono::milliseconds connect_timeout{5000};  // TCP connect + TLS handshake
  // Limit for each write and each read; in streaming mode, the longest gap between two pieces
  // of data.
  std::chrono::milliseconds read_timeout{30000};
  std::size_t max_response_body_bytes = 64u << 20;  // larger -> ResourceExhausted
  bool keep_alive = true;                           // reuse connections
  // TLS (https:// URLs): verify the server certificate chain and host name (SNI is always sent
  // for host names). ca_file: PEM bundle of trusted CAs; empty = the system trust store.
  bool verify_peer = true;
  std::string ca_file;
  std::string user_agent = "kvmesh";

  // Returns InvalidArgument naming the bad field.
  Status Validate() const;
};

struct ClientRequest {
  std::string method = "GET";
  std::string url;  // http://host[:port]/path?query or https://...
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string content_type;  // sets Content-Type if non-empty
};

struct ClientResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-cased names
  std::string body;  // empty for a successful (2xx) streamed response

  std::string Header(std::string_view name) const;  // "" if absent; case-insensitive
};

struct SseEvent {
  std::string event;  // "" if the event had no `event:` field
  std::string data;   // `data:` lines joined with '\n'
  std::string id;
};

// Splits text/event-stream bytes into events; feed it pieces in any split.
class SseParser {
 public:
  // Calls on_event per complete event; returns false as soon as on_event does.
  bool Feed(std::string_view bytes, const std::function<bool(const SseEvent&)>& on_event);
  std::size_t buffered_bytes() const { return line_.size() + current_.data.size(); }

 private:
  bool Line(std::string_view line, const std::function<bool(const SseEvent&)>& on_event);
  std::string line_;
  SseEvent current_;
  bool has_data_ = false;
};

class HttpClient {
 public:
  explicit HttpClient(HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends the request and reads the whole response. Errors: InvalidArgument (bad URL/options),
  // Unavailable (resolve/connect/TLS/IO failure), DeadlineExceeded (a timeout), ResourceExhausted
  // (body over max_response_body_bytes).
  StatusOr<ClientResponse> Do(const ClientRequest& request);
  StatusOr<ClientResponse> Get(const std::string& url,
                               std::vector<std::pair<std::string, std::string>> headers = {});
  StatusOr<ClientResponse> Post(const std::string& url, std::string body,
                                std::string content_type = "application/json",
                                std::vector<std::pair<std::string, std::string>> headers = {});

  // Streaming: returns once the body has ended (or on_data returned false, which drops the
  // connection). For a 2xx response on_data gets each piece of the body as soon as it arrives
  // (chunk framing removed) and the returned body is empty; any other status is read whole into
  // the returned body and on_data is not called.
  StatusOr<ClientResponse> Stream(const ClientRequest& request,
                                  const std::function<bool(std::string_view)>& on_data);
  // Streaming of text/event-stream: on_event per event; return false to stop early. An event
  // larger than max_response_body_bytes is ResourceExhausted.
  StatusOr<ClientResponse> StreamSse(const ClientRequest& request,
                                     const std::function<bool(const SseEvent&)>& on_event);

  // Thread-safe: cancels the call in progress on another thread (closes its socket, also during
  // connect); that call returns Cancelled. Without a call in progress it does nothing, and a later
  // call works as usual.
  void Abort();

  // TCP connections opened so far (a reused keep-alive connection is not counted again).
  uint64_t connections_opened() const { return connections_opened_; }
  void CloseIdleConnections();

 private:
  struct Impl;
  StatusOr<ClientResponse> Execute(const ClientRequest& request,
                                   const std::function<bool(std::string_view)>* on_data);
  StatusOr<ClientResponse> ExecuteCall(const ClientRequest& request,
                                       const std::function<bool(std::string_view)>* on_data);

  const HttpClientOptions options_;
  uint64_t connections_opened_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvmesh::http
