// KubeClient over cpprestsdk (see kube_client.h for the contract).
//
// One http_client for plain requests and one for watch streams (their timeouts differ) per
// KubeClient; both share cpprestsdk's process-wide asio thread pool. Every request waits for its
// pplx task from the calling thread; a watch reads the chunked body through the response's
// producer/consumer buffer one wake-up at a time and polls `stop` every 100 ms. Before a Watch
// returns, its request has completed or been cancelled (connection closed) and its last read has
// finished, so no cpprestsdk callback outlives the call that started it.
#include <cpprest/http_client.h>
#include <cpprest/producerconsumerstream.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "common/log.h"
#include "operator/kube/kube_client.h"

namespace kvmesh::kube {

std::string ResourceRef::Path(const std::string& ns, const std::string& name) const {
  std::string p = group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
  if (namespaced && !ns.empty()) p += "/namespaces/" + ns;
  p += "/" + resource;
  if (!name.empty()) p += "/" + name;
  return p;
}

ResourceRef InferenceGraphs() { return {"kvmesh.dev", "v1alpha1", "inferencegraphs", true}; }
ResourceRef Deployments() { return {"apps", "v1", "deployments", true}; }
ResourceRef Services() { return {"", "v1", "services", true}; }
ResourceRef ConfigMaps() { return {"", "v1", "configmaps", true}; }
ResourceRef Pods() { return {"", "v1", "pods", true}; }
ResourceRef PodDisruptionBudgets() { return {"policy", "v1", "poddisruptionbudgets", true}; }
ResourceRef Leases() { return {"coordination.k8s.io", "v1", "leases", true}; }
ResourceRef Events() { return {"", "v1", "events", true}; }
ResourceRef Secrets() { return {"", "v1", "secrets", true}; }

namespace {

constexpr char kComponent[] = "kube";
constexpr char kApiTag[] = " [http=";

// The message suffix that carries the HTTP status and reason: " [http=409 reason=Conflict]".
std::string ApiTag(int http_status, const std::string& reason) {
  return std::string(kApiTag) + std::to_string(http_status) + " reason=" + reason + "]";
}

Status ErrorForHttp(int code, const std::string& reason, const std::string& message) {
  std::string m = message + ApiTag(code, reason);
  switch (code) {
    case 400: case 422: return InvalidArgumentError(m);
    case 401: return UnauthenticatedError(m);
    case 403: return PermissionDeniedError(m);
    case 404: return NotFoundError(m);
    case 409: return reason == "AlreadyExists" ? AlreadyExistsError(m) : AbortedError(m);
    case 410: return OutOfRangeError(m);
    case 415: return UnimplementedError(m);
    case 429: return UnavailableError(m);
    default: break;
  }
  if (code >= 500) return UnavailableError(m);
  return InternalError(m);
}

std::string UrlEncode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

void AddQuery(std::string* q, const std::string& key, const std::string& value) {
  if (value.empty()) return;
  q->append(q->empty() ? "?" : "&");
  q->append(key).append("=").append(UrlEncode(value));
}

// Waits for a pplx task from a plain thread with a poll on `stop`; returns false if stopped first.
// The task's result (or exception) is captured in a shared state, so an abandoned wait is safe.
template <typename T>
class TaskWaiter {
 public:
  explicit TaskWaiter(pplx::task<T> task) : state_(std::make_shared<State>()) {
    auto state = state_;
    task.then([state](pplx::task<T> t) {
      std::lock_guard<std::mutex> lock(state->mu);
      try {
        state->value = t.get();
      } catch (...) {
        state->error = std::current_exception();
      }
      state->done = true;
      state->cv.notify_all();
    });
  }
  // True when done; false if `stop` became true or `deadline` passed first.
  bool Wait(const std::atomic<bool>* stop, std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(state_->mu);
    while (!state_->done) {
      if (stop != nullptr && stop->load()) return false;
      auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return false;
      state_->cv.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(100)));
    }
    return true;
  }
  // Precondition: Wait returned true. Rethrows the task's exception.
  T Get() {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->error) std::rethrow_exception(state_->error);
    return state_->value;
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    T value{};
    std::exception_ptr error;
  };
  std::shared_ptr<State> state_;
};

struct RawResponse {
  int status = 0;
  std::string body;
  int retry_after_seconds = -1;
};

std::string ReasonOf(const nlohmann::json& body) {
  if (body.is_object() && body.contains("reason") && body["reason"].is_string()) {
    return body["reason"].get<std::string>();
  }
  return "";
}

// The Status error for a non-2xx response: message and reason from the Status body if present.
Status ResponseError(const std::string& what, const RawResponse& r) {
  std::string message = r.body.substr(0, 512);
  std::string reason;
  try {
    auto j = nlohmann::json::parse(r.body);
    if (j.is_object() && j.value("kind", "") == "Status") {
      if (j.contains("message") && j["message"].is_string()) message = j["message"];
      reason = ReasonOf(j);
    }
  } catch (const std::exception&) {
  }
  return ErrorForHttp(r.status, reason.empty() ? "Unknown" : reason, what + ": " + message);
}

bool IsRetryable(int status) { return status == 429 || status >= 500; }

class CppRestKubeClient : public KubeClient {
 public:
  CppRestKubeClient(const KubeConfig& config, const KubeClientOptions& options,
                    web::http::client::http_client_config request_config,
                    web::http::client::http_client_config watch_config)
      : config_(config),
        options_(options),
        client_(config.server, request_config),
        watch_client_(config.server, watch_config) {}

  ~CppRestKubeClient() override = default;

  StatusOr<nlohmann::json> Get(const ResourceRef& r, const std::string& ns,
                               const std::string& name) override {
    return JsonCall("GET", r.Path(ns, name), "", "");
  }

  StatusOr<ListResult> List(const ResourceRef& r, const std::string& ns,
                            const ListOptions& options) override {
    ListResult result;
    std::string cont;
    for (;;) {
      std::string q;
      AddQuery(&q, "labelSelector", options.label_selector);
      AddQuery(&q, "fieldSelector", options.field_selector);
      AddQuery(&q, "resourceVersion", options.resource_version);
      if (options.limit > 0) AddQuery(&q, "limit", std::to_string(options.limit));
      AddQuery(&q, "continue", cont);
      KVMESH_ASSIGN_OR_RETURN(nlohmann::json page, JsonCall("GET", r.Path(ns) + q, "", ""));
      if (!page.contains("items") || !page["items"].is_array()) {
        if (page.contains("items") && page["items"].is_null()) {
          page["items"] = nlohmann::json::array();
        } else {
          return InternalError("LIST " + r.Path(ns) + ": response has no items array");
        }
      }
      for (auto& item : page["items"]) result.items.push_back(std::move(item));
      const auto& meta = page.contains("metadata") ? page["metadata"] : nlohmann::json::object();
      result.resource_version = meta.value("resourceVersion", "");
      cont = meta.value("continue", "");
      if (cont.empty() || options.limit <= 0) break;
    }
    return result;
  }

  StatusOr<nlohmann::json> Create(const ResourceRef& r, const std::string& ns,
                                  const nlohmann::json& object) override {
    return JsonCall("POST", r.Path(ns), object.dump(), "application/json");
  }

  StatusOr<nlohmann::json> Update(const ResourceRef& r, const nlohmann::json& object) override {
    KVMESH_ASSIGN_OR_RETURN(std::string path, ObjectPath(r, object));
    return JsonCall("PUT", path, object.dump(), "application/json");
  }

  StatusOr<nlohmann::json> UpdateStatus(const ResourceRef& r, const nlohmann::json& object) override {
    KVMESH_ASSIGN_OR_RETURN(std::string path, ObjectPath(r, object));
    return JsonCall("PUT", path + "/status", object.dump(), "application/json");
  }

  StatusOr<nlohmann::json> Patch(const ResourceRef& r, const std::string& ns, const std::string& name,
                                 PatchType type, const nlohmann::json& patch,
                                 const PatchOptions& options) override {
    std::string path = r.Path(ns, name);
    if (options.status) path += "/status";
    std::string content_type;
    std::string q;
    switch (type) {
      case PatchType::kMerge: content_type = "application/merge-patch+json"; break;
      case PatchType::kJson: content_type = "application/json-patch+json"; break;
      case PatchType::kApply:
        content_type = "application/apply-patch+yaml";
        if (options.field_manager.empty()) {
          return InvalidArgumentError("server-side apply needs a field manager");
        }
        AddQuery(&q, "fieldManager", options.field_manager);
        if (options.force) AddQuery(&q, "force", "true");
        break;
    }
    return JsonCall("PATCH", path + q, patch.dump(), content_type);
  }

  Status Delete(const ResourceRef& r, const std::string& ns, const std::string& name,
                const std::string& propagation) override {
    nlohmann::json options = {{"kind", "DeleteOptions"}, {"apiVersion", "v1"}};
    if (!propagation.empty()) options["propagationPolicy"] = propagation;
    auto result = JsonCall("DELETE", r.Path(ns, name), options.dump(), "application/json");
    return result.status();
  }

  Status Watch(const ResourceRef& r, const std::string& ns, const WatchOptions& options,
               const std::function<bool(const WatchEvent&)>& on_event,
               const std::atomic<bool>* stop) override;

  uint64_t reads() const override { return reads_.load(); }
  uint64_t writes() const override { return writes_.load(); }

 private:
  static StatusOr<std::string> ObjectPath(const ResourceRef& r, const nlohmann::json& object) {
    const auto meta = object.value("metadata", nlohmann::json::object());
    std::string name = meta.value("name", "");
    if (name.empty()) return InvalidArgumentError("object has no metadata.name");
    return r.Path(meta.value("namespace", ""), name);
  }

  web::http::http_request MakeRequest(const std::string& method, const std::string& path_query,
                                      const std::string& body, const std::string& content_type) const {
    web::http::http_request req(method);
    req.set_request_uri(path_query);
    req.headers().add("Accept", "application/json");
    req.headers().add("User-Agent", options_.user_agent);
    if (!config_.token.empty()) req.headers().add("Authorization", "Bearer " + config_.token);
    if (!content_type.empty()) req.set_body(body, content_type);
    return req;
  }

  // One HTTP exchange, whole body read. Non-OK only for transport failures.
  StatusOr<RawResponse> Exchange(const std::string& method, const std::string& path_query,
                                 const std::string& body, const std::string& content_type) {
    (method == "GET" ? reads_ : writes_).fetch_add(1);
    const std::string what = method + " " + path_query;
    try {
      auto req = MakeRequest(method, path_query, body, content_type);
      web::http::http_response resp = client_.request(req).get();
      RawResponse r;
      r.status = resp.status_code();
      r.body = resp.extract_utf8string(true).get();
      auto it = resp.headers().find("Retry-After");
      if (it != resp.headers().end()) {
        try {
          r.retry_after_seconds = std::stoi(it->second);
        } catch (const std::exception&) {
        }
      }
      return r;
    } catch (const web::http::http_exception& e) {
      if (e.error_code() == std::errc::timed_out) {
        return DeadlineExceededError(what + ": timed out after " +
                                     std::to_string(options_.timeout.count()) + " ms" + ApiTag(0, "Timeout"));
      }
      return UnavailableError(what + ": " + e.what() + ApiTag(0, "ConnectionFailed"));
    } catch (const std::exception& e) {
      return UnavailableError(what + ": " + e.what() + ApiTag(0, "ConnectionFailed"));
    }
  }

  std::chrono::milliseconds Backoff(int attempt) {
    auto b = options_.initial_backoff * (1LL << std::min(attempt, 20));
    b = std::min<std::chrono::milliseconds>(b, options_.max_backoff);
    std::uniform_int_distribution<int64_t> jitter(0, b.count() / 4 + 1);
    std::lock_guard<std::mutex> lock(rng_mu_);
    return b + std::chrono::milliseconds(jitter(rng_));
  }

  // Request + retries + JSON decoding + error mapping.
  StatusOr<nlohmann::json> JsonCall(const std::string& method, const std::string& path_query,
                                    const std::string& body, const std::string& content_type) {
    const bool idempotent = method != "POST";
    const std::string what = method + " " + path_query;
    for (int attempt = 0;; ++attempt) {
      auto r = Exchange(method, path_query, body, content_type);
      const bool last = attempt >= options_.max_retries;
      if (!r.ok()) {
        // Connection failures: retried on idempotent calls; timeouts are not retried.
        if (!last && idempotent && r.status().code() == StatusCode::kUnavailable) {
          std::this_thread::sleep_for(Backoff(attempt));
          continue;
        }
        return r.status();
      }
      if (r->status >= 200 && r->status < 300) {
        if (r->body.empty()) return nlohmann::json::object();
        try {
          return nlohmann::json::parse(r->body);
        } catch (const std::exception& e) {
          return InternalError(what + ": response is not JSON: " + e.what());
        }
      }
      if (!last && IsRetryable(r->status) && (idempotent || r->status == 429)) {
        auto delay = Backoff(attempt);
        if (r->retry_after_seconds >= 0) {
          delay = std::chrono::seconds(std::min(r->retry_after_seconds, 60));
        }
        KVMESH_LOG_DEBUG(kComponent, "retrying", {"request", what}, {"status", r->status},
                         {"delay_ms", static_cast<long long>(delay.count())});
        std::this_thread::sleep_for(delay);
        continue;
      }
      return ResponseError(what, *r);
    }
  }

  const KubeConfig config_;
  const KubeClientOptions options_;
  web::http::client::http_client client_;
  web::http::client::http_client watch_client_;
  std::atomic<uint64_t> reads_{0};
  std::atomic<uint64_t> writes_{0};
  std::mutex rng_mu_;
  std::mt19937_64 rng_{std::random_device{}()};
};

Status CppRestKubeClient::Watch(const ResourceRef& r, const std::string& ns,
                                const WatchOptions& options,
                                const std::function<bool(const WatchEvent&)>& on_event,
                                const std::atomic<bool>* stop) {
  std::string q;
  AddQuery(&q, "watch", "1");
  AddQuery(&q, "resourceVersion", options.resource_version);
  if (options.allow_bookmarks) AddQuery(&q, "allowWatchBookmarks", "true");
  AddQuery(&q, "labelSelector", options.label_selector);
  AddQuery(&q, "fieldSelector", options.field_selector);
  if (options.timeout_seconds > 0) AddQuery(&q, "timeoutSeconds", std::to_string(options.timeout_seconds));
  const std::string path_query = r.Path(ns) + q;
  const std::string what = "WATCH " + path_query;
  reads_.fetch_add(1);

  // The client's own bound: the server's timeout plus a minute, then the stream is ended here.
  // (No server timeout requested: 30 minutes.)
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::seconds(options.timeout_seconds > 0 ? options.timeout_seconds + 60 : 1800);
  pplx::cancellation_token_source cts;
  // Cancels the request (cpprestsdk closes the connection) and waits for a pending wait to end.
  auto cancel_and_drain = [&cts](auto& waiter) {
    cts.cancel();
    waiter.Wait(nullptr, std::chrono::steady_clock::now() + std::chrono::seconds(5));
  };

  web::http::http_response resp;
  {
    TaskWaiter<web::http::http_response> waiter(
        watch_client_.request(MakeRequest("GET", path_query, "", ""), cts.get_token()));
    if (!waiter.Wait(stop, deadline)) {
      cancel_and_drain(waiter);
      if (stop != nullptr && stop->load()) return CancelledError(what + ": stopped");
      return DeadlineExceededError(what + ": no response" + ApiTag(0, "Timeout"));
    }
    try {
      resp = waiter.Get();
    } catch (const std::exception& e) {
      return UnavailableError(what + ": " + e.what() + ApiTag(0, "ConnectionFailed"));
    }
  }
  if (resp.status_code() < 200 || resp.status_code() >= 300) {
    RawResponse raw;
    raw.status = resp.status_code();
    try {
      raw.body = resp.extract_utf8string(true).get();
    } catch (const std::exception&) {
    }
    return ResponseError(what, raw);
  }

  auto body = resp.body().streambuf();
  // Every way out of the loop below closes the body and waits (bounded) until cpprestsdk has
  // finished closing it. Its close continuations run on cpprestsdk's thread pool and hold the
  // buffer; returning earlier leaves them in flight, and a process that exits then leaks them
  // (LeakSanitizer caught it in CI: KubeClientTest.WatchReplaysHistoryAfterTheGivenVersion,
  // rare, under load). cpprestsdk does the same after any failed request, which no caller can
  // wait for: the sanitizer build suppresses those exit-time leaks (cmake/lsan-suppressions.txt).
  struct BodyCloser {
    pplx::cancellation_token_source& cts;
    decltype(body)& buf;
    ~BodyCloser() {
      cts.cancel();  // a no-op once the server ended the stream
      try {
        TaskWaiter<bool> closed(buf.close().then([] { return true; }));
        closed.Wait(nullptr, std::chrono::steady_clock::now() + std::chrono::seconds(2));
      } catch (const std::exception&) {  // close() on a broken stream: nothing left to wait for
      }
    }
  } closer{cts, body};
  std::string pending;  // bytes after the last newline
  constexpr size_t kChunk = 64 * 1024;
  std::vector<uint8_t> buf(kChunk);
  for (;;) {
    // Wait for at least one byte (a wake-up per arriving chunk), then take what else is there.
    auto one = std::make_shared<uint8_t>(0);
    TaskWaiter<size_t> waiter(body.getn(one.get(), 1).then([one](size_t n) { return n; }));
    if (!waiter.Wait(stop, deadline)) {
      cancel_and_drain(waiter);
      if (stop != nullptr && stop->load()) return CancelledError(what + ": stopped");
      return Status::Ok();  // client-side deadline: like a server timeout, the stream ends
    }
    size_t n = 0;
    try {
      n = waiter.Get();
    } catch (const std::exception& e) {
      return UnavailableError(what + ": stream broken: " + e.what() + ApiTag(0, "ConnectionFailed"));
    }
    if (n == 0) return Status::Ok();  // the server ended the stream
    pending.push_back(static_cast<char>(*one));
    try {
      size_t avail = body.in_avail();
      while (avail > 0) {
        size_t got = body.getn(buf.data(), std::min(avail, kChunk)).get();  // available: no wait
        if (got == 0 || got == static_cast<size_t>(-1)) break;
        pending.append(reinterpret_cast<const char*>(buf.data()), got);
        avail = body.in_avail();
      }
    } catch (const std::exception& e) {
      return UnavailableError(what + ": stream broken: " + e.what() + ApiTag(0, "ConnectionFailed"));
    }
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view line(pending.data() + start, nl - start);
      if (line.empty() || line == "\r") continue;
      WatchEvent event;
      try {
        auto j = nlohmann::json::parse(line);
        event.type = j.value("type", "");
        if (j.contains("object")) event.object = std::move(j["object"]);
      } catch (const std::exception& e) {
        return InternalError(what + ": bad event line: " + e.what());  // closer cancels
      }
      if (!on_event(event)) return Status::Ok();  // closer cancels
    }
    pending.erase(0, start);
  }
}

}  // namespace

ApiError GetApiError(const Status& status) {
  ApiError e;
  const std::string& m = status.message();
  size_t pos = m.rfind(kApiTag);
  if (pos == std::string::npos) return e;
  pos += sizeof(kApiTag) - 1;
  size_t sp = m.find(" reason=", pos);
  size_t end = m.find(']', pos);
  if (sp == std::string::npos || end == std::string::npos || sp > end) return e;
  try {
    e.http_status = std::stoi(m.substr(pos, sp - pos));
  } catch (const std::exception&) {
    return ApiError{};
  }
  e.reason = m.substr(sp + 8, end - sp - 8);
  return e;
}

namespace {

// Applies CA, client certificate and key from PEM text to an asio SSL context. Throws on bad PEM.
void ApplyTls(const KubeConfig& config, boost::asio::ssl::context& ctx) {
  if (!config.ca_data.empty()) {
    ctx.add_certificate_authority(boost::asio::buffer(config.ca_data.data(), config.ca_data.size()));
  }
  if (!config.ca_file.empty()) ctx.load_verify_file(config.ca_file);
  if (!config.client_cert_data.empty()) {
    ctx.use_certificate_chain(
        boost::asio::buffer(config.client_cert_data.data(), config.client_cert_data.size()));
  }
  if (!config.client_key_data.empty()) {
    ctx.use_private_key(boost::asio::buffer(config.client_key_data.data(), config.client_key_data.size()),
                        boost::asio::ssl::context::pem);
  }
}

}  // namespace

StatusOr<std::unique_ptr<KubeClient>> CreateKubeClient(const KubeConfig& config,
                                                       const KubeClientOptions& options) {
  if (config.server.rfind("http://", 0) != 0 && config.server.rfind("https://", 0) != 0) {
    return InvalidArgumentError("kube client: server must be http(s)://host:port, got '" +
                                config.server + "'");
  }
  if (options.max_retries < 0 || options.timeout.count() <= 0) {
    return InvalidArgumentError("kube client: max_retries must be >= 0 and timeout > 0");
  }
  const bool tls = config.server.rfind("https://", 0) == 0;
  if (tls) {
    // Check the PEM material now, so a bad kubeconfig fails at start-up and not per request.
    try {
      boost::asio::ssl::context probe(boost::asio::ssl::context::sslv23_client);
      ApplyTls(config, probe);
    } catch (const std::exception& e) {
      return InvalidArgumentError(std::string("kube client: bad TLS material (CA, client "
                                              "certificate or key): ") + e.what());
    }
  }
  auto make_config = [&](std::chrono::milliseconds timeout) {
    web::http::client::http_client_config c;
    c.set_timeout(timeout);
    c.set_validate_certificates(!config.insecure_skip_tls_verify);
    if (tls) {
      KubeConfig copy = config;
      c.set_ssl_context_callback([copy](boost::asio::ssl::context& ctx) {
        try {
          ApplyTls(copy, ctx);
        } catch (const std::exception& e) {
          KVMESH_LOG_ERROR(kComponent, "TLS setup failed", {"error", e.what()});
        }
      });
    }
    return c;
  };
  try {
    return std::unique_ptr<KubeClient>(std::make_unique<CppRestKubeClient>(
        config, options, make_config(options.timeout), make_config(std::chrono::hours(1))));
  } catch (const std::exception& e) {
    return InvalidArgumentError("kube client: server '" + config.server + "': " + e.what());
  }
}

}  // namespace kvmesh::kube
