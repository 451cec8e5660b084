// ScriptedApiServer (tests only): a small fake of the Kubernetes API *server* on common/http_server,
// for the kube client, informer and leader election unit tests. It serves a fixed set of
// collections (e.g. "/api/v1/namespaces/default/configmaps") with the shapes of
// KUBERNETES-API.md: list (label selector k=v), watch (chunked JSON lines from a resourceVersion,
// bookmarks on request), get, create (409 AlreadyExists), update and /status (409 Conflict on a
// stale resourceVersion), merge patch, delete; Status bodies for errors. Scripting knobs: end the
// open watches, compact history (older watches get 410 as HTTP status or in-stream ERROR), fail
// the next N requests with a status (+ Retry-After), fail every request of one User-Agent.
// It records the resourceVersion of every watch request. Header-only: linked into tests only.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/http_server.h"

namespace kvmesh::kube::testing {

inline std::string PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

inline std::map<std::string, std::string> ParseQuery(const std::string& q) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start < q.size()) {
    size_t amp = q.find('&', start);
    std::string part = q.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
    size_t eq = part.find('=');
    if (eq == std::string::npos) {
      out[PercentDecode(part)] = "";
    } else {
      out[PercentDecode(part.substr(0, eq))] = PercentDecode(part.substr(eq + 1));
    }
    if (amp == std::string::npos) break;
    start = amp + 1;
  }
  return out;
}

inline http::HttpResponse StatusResponse(int code, const std::string& reason, const std::string& message) {
  nlohmann::json j = {{"kind", "Status"}, {"apiVersion", "v1"}, {"metadata", nlohmann::json::object()},
                      {"status", code < 400 ? "Success" : "Failure"}, {"message", message},
                      {"reason", reason}, {"code", code}};
  return http::JsonResponse(code, j.dump());
}

class ScriptedApiServer {
 public:
  enum class GoneMode { kHttp, kInStream };

  explicit ScriptedApiServer(std::vector<std::string> collections)
      : collections_(std::move(collections)) {
    http::HttpServerOptions o;
    o.num_threads = 4;
    server_ = std::make_unique<http::HttpServer>(o);
    for (const auto& c : collections_) {
      server_->RouteAsync("GET", c, [this, c](const http::HttpRequest& req,
                                              std::shared_ptr<http::Responder> r) {
        if (auto f = Injected(req)) {
          r->Respond(*f);
          return;
        }
        auto q = ParseQuery(req.query);
        if (q.count("watch") > 0 && q["watch"] != "0" && q["watch"] != "false") {
          StartWatch(c, q, std::move(r));
        } else {
          r->Respond(ListCollection(c, q));
        }
      });
      server_->Route("POST", c, [this, c](const http::HttpRequest& req) {
        if (auto f = Injected(req)) return *f;
        return CreateObject(c, req.body);
      });
      for (const char* m : {"GET", "PUT", "PATCH", "DELETE"}) {
        std::string method = m;
        server_->RoutePrefix(method, c + "/", [this, c, method](const http::HttpRequest& req) {
          if (auto f = Injected(req)) return *f;
          return ItemRequest(c, method, req);
        });
      }
    }
  }
  ~ScriptedApiServer() { Stop(); }

  Status Start() { return server_->Start(); }
  void Stop() {
    EndWatches();
    server_->Stop(std::chrono::milliseconds(0));
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }

  // Creates or replaces an object directly (as another client would), emitting a watch event.
  nlohmann::json Put(const std::string& coll, nlohmann::json obj) {
    std::lock_guard<std::mutex> lock(mu_);
    std::string name = obj["metadata"]["name"];
    bool existed = store_[coll].count(name) > 0;
    obj["metadata"]["resourceVersion"] = NextRvLocked();
    store_[coll][name] = obj;
    EmitLocked(coll, existed ? "MODIFIED" : "ADDED", obj);
    return obj;
  }
  void Remove(const std::string& coll, const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = store_[coll].find(name);
    if (it == store_[coll].end()) return;
    nlohmann::json obj = it->second;
    store_[coll].erase(it);
    obj["metadata"]["resourceVersion"] = NextRvLocked();
    EmitLocked(coll, "DELETED", obj);
  }
  std::string current_rv() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::to_string(rv_);
  }
  // Forgets history: a watch from any version older than the current one gets 410.
  void Compact() {
    std::lock_guard<std::mutex> lock(mu_);
    compacted_ = rv_;
    history_.clear();
  }
  void set_gone_mode(GoneMode m) {
    std::lock_guard<std::mutex> lock(mu_);
    gone_mode_ = m;
  }
  // Closes every open watch stream (as a server timeout would).
  void EndWatches() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& w : watchers_) w.writer->Close();
    watchers_.clear();
  }
  // Sends an in-stream ERROR 410 to every open watch and closes it.
  void ExpireWatches() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& w : watchers_) {
      w.writer->Send(nlohmann::json{{"type", "ERROR"}, {"object", GoneStatus()}}.dump() + "\n");
      w.writer->Close();
    }
    watchers_.clear();
  }
  // Sends a BOOKMARK at the current version to every open watch that asked for bookmarks.
  void SendBookmarks() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& w : watchers_) {
      if (!w.bookmarks) continue;
      nlohmann::json obj = {{"kind", "ConfigMap"}, {"apiVersion", "v1"},
                            {"metadata", {{"resourceVersion", std::to_string(rv_)}}}};
      w.writer->Send(nlohmann::json{{"type", "BOOKMARK"}, {"object", obj}}.dump() + "\n");
    }
  }
  // The next `n` requests (any method) get `status` with a Status body and optional Retry-After.
  void FailNext(int n, int status, int retry_after_seconds = -1, std::string reason = "InternalError") {
    std::lock_guard<std::mutex> lock(mu_);
    fail_count_ = n;
    fail_status_ = status;
    fail_retry_after_ = retry_after_seconds;
    fail_reason_ = std::move(reason);
  }
  // Every request whose User-Agent is `agent` gets 503 ("" = none).
  void BlockAgent(const std::string& agent) {
    std::lock_guard<std::mutex> lock(mu_);
    blocked_agent_ = agent;
  }
  std::vector<std::string> watch_versions() {
    std::lock_guard<std::mutex> lock(mu_);
    return watch_versions_;
  }
  int list_requests() const { return list_requests_.load(); }
  int total_requests() const { return total_requests_.load(); }
  size_t open_watches() {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (auto& w : watchers_) n += w.writer->IsClosed() ? 0 : 1;
    return n;
  }
  std::string last_authorization() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_authorization_;
  }
  std::optional<nlohmann::json> Object(const std::string& coll, const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = store_[coll].find(name);
    if (it == store_[coll].end()) return std::nullopt;
    return it->second;
  }

 private:
  struct Watcher {
    std::string coll;
    std::map<std::string, std::string> selector;
    bool bookmarks = false;
    std::shared_ptr<http::StreamWriter> writer;
  };
  struct Event {
    int64_t rv;
    std::string coll;
    std::string type;
    nlohmann::json obj;
  };

  static nlohmann::json GoneStatus() {
    return {{"kind", "Status"}, {"apiVersion", "v1"}, {"metadata", nlohmann::json::object()},
            {"status", "Failure"}, {"message", "too old resource version"}, {"reason", "Expired"},
            {"code", 410}};
  }

  std::optional<http::HttpResponse> Injected(const http::HttpRequest& req) {
    total_requests_.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu_);
    last_authorization_ = req.Header("authorization");
    if (!blocked_agent_.empty() && req.Header("user-agent") == blocked_agent_) {
      return StatusResponse(503, "ServiceUnavailable", "blocked for this test");
    }
    if (fail_count_ <= 0) return std::nullopt;
    --fail_count_;
    auto r = StatusResponse(fail_status_, fail_reason_, "injected failure");
    if (fail_retry_after_ >= 0) r.headers.emplace_back("Retry-After", std::to_string(fail_retry_after_));
    return r;
  }

  std::string NextRvLocked() { return std::to_string(++rv_); }

  static std::map<std::string, std::string> ParseSelector(const std::string& s) {
    std::map<std::string, std::string> out;
    size_t start = 0;
    while (start < s.size()) {
      size_t comma = s.find(',', start);
      std::string part = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      size_t eq = part.find('=');
      if (eq != std::string::npos) out[part.substr(0, eq)] = part.substr(eq + 1);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return out;
  }
  static bool Matches(const nlohmann::json& obj, const std::map<std::string, std::string>& sel) {
    for (const auto& [k, v] : sel) {
      const auto& meta = obj["metadata"];
      if (!meta.contains("labels") || !meta["labels"].contains(k) || meta["labels"][k] != v) return false;
    }
    return true;
  }

  void EmitLocked(const std::string& coll, const std::string& type, const nlohmann::json& obj) {
    history_.push_back({rv_, coll, type, obj});
    std::string line = nlohmann::json{{"type", type}, {"object", obj}}.dump() + "\n";
    for (auto it = watchers_.begin(); it != watchers_.end();) {
      if (it->writer->IsClosed()) {
        it = watchers_.erase(it);
        continue;
      }
      if (it->coll == coll && Matches(obj, it->selector)) it->writer->Send(line);
      ++it;
    }
  }

  http::HttpResponse ListCollection(const std::string& coll, std::map<std::string, std::string>& q) {
    list_requests_.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu_);
    auto sel = ParseSelector(q["labelSelector"]);
    nlohmann::json items = nlohmann::json::array();
    for (const auto& [name, obj] : store_[coll]) {
      if (Matches(obj, sel)) items.push_back(obj);
    }
    // Paging: `limit` items per page, `continue` = the index to resume from.
    size_t from = q.count("continue") > 0 && !q["continue"].empty() ? std::stoul(q["continue"]) : 0;
    size_t limit = q.count("limit") > 0 ? std::stoul(q["limit"]) : 0;
    nlohmann::json meta = {{"resourceVersion", std::to_string(rv_)}};
    nlohmann::json page = nlohmann::json::array();
    for (size_t i = from; i < items.size() && (limit == 0 || page.size() < limit); ++i) page.push_back(items[i]);
    if (limit > 0 && from + page.size() < items.size()) meta["continue"] = std::to_string(from + page.size());
    return http::JsonResponse(200, nlohmann::json{{"kind", "List"}, {"apiVersion", "v1"},
                                                  {"metadata", meta}, {"items", page}}.dump());
  }

  void StartWatch(const std::string& coll, std::map<std::string, std::string>& q,
                  std::shared_ptr<http::Responder> r) {
    std::lock_guard<std::mutex> lock(mu_);
    std::string rv_text = q["resourceVersion"];
    watch_versions_.push_back(rv_text);
    int64_t from = rv_text.empty() ? rv_ : std::stoll(rv_text);
    if (from < compacted_) {
      if (gone_mode_ == GoneMode::kHttp) {
        r->Respond(StatusResponse(410, "Expired", "too old resource version: " + rv_text));
        return;
      }
      auto w = r->StartStream(http::StreamWriter::Mode::kChunked);
      if (w == nullptr) return;
      w->Send(nlohmann::json{{"type", "ERROR"}, {"object", GoneStatus()}}.dump() + "\n");
      w->Close();
      return;
    }
    auto w = r->StartStream(http::StreamWriter::Mode::kChunked);
    if (w == nullptr) return;
    Watcher watcher{coll, ParseSelector(q["labelSelector"]), q["allowWatchBookmarks"] == "true", w};
    for (const auto& e : history_) {
      if (e.rv > from && e.coll == coll && Matches(e.obj, watcher.selector)) {
        w->Send(nlohmann::json{{"type", e.type}, {"object", e.obj}}.dump() + "\n");
      }
    }
    watchers_.push_back(std::move(watcher));
  }

  http::HttpResponse CreateObject(const std::string& coll, const std::string& body) {
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(body);
    } catch (const std::exception& e) {
      return StatusResponse(400, "BadRequest", e.what());
    }
    std::lock_guard<std::mutex> lock(mu_);
    std::string name = obj["metadata"].value("name", "");
    if (name.empty()) return StatusResponse(422, "Invalid", "metadata.name: Required value");
    if (store_[coll].count(name) > 0) return StatusResponse(409, "AlreadyExists", name + " already exists");
    obj["metadata"]["resourceVersion"] = NextRvLocked();
    obj["metadata"]["uid"] = "uid-" + name + "-" + std::to_string(rv_);
    store_[coll][name] = obj;
    EmitLocked(coll, "ADDED", obj);
    return http::JsonResponse(201, obj.dump());
  }

  http::HttpResponse ItemRequest(const std::string& coll, const std::string& method,
                                 const http::HttpRequest& req) {
    std::string rest = req.path.substr(coll.size() + 1);
    bool status = false;
    if (rest.size() > 7 && rest.compare(rest.size() - 7, 7, "/status") == 0) {
      status = true;
      rest.resize(rest.size() - 7);
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = store_[coll].find(rest);
    if (it == store_[coll].end()) return StatusResponse(404, "NotFound", rest + " not found");
    if (method == "GET") return http::JsonResponse(200, it->second.dump());
    if (method == "DELETE") {
      nlohmann::json obj = it->second;
      store_[coll].erase(it);
      obj["metadata"]["resourceVersion"] = NextRvLocked();
      EmitLocked(coll, "DELETED", obj);
      return StatusResponse(200, "", "deleted");
    }
    nlohmann::json body;
    try {
      body = nlohmann::json::parse(req.body);
    } catch (const std::exception& e) {
      return StatusResponse(400, "BadRequest", e.what());
    }
    nlohmann::json obj = it->second;
    if (method == "PUT") {
      std::string sent_rv = body["metadata"].value("resourceVersion", "");
      if (sent_rv != obj["metadata"].value("resourceVersion", "")) {
        return StatusResponse(409, "Conflict", "the object has been modified; please apply your "
                                               "changes to the latest version and try again");
      }
      if (status) {
        obj["status"] = body.value("status", nlohmann::json::object());
      } else {
        nlohmann::json keep_status = obj.value("status", nlohmann::json());
        obj = body;
        if (!keep_status.is_null()) obj["status"] = keep_status;
      }
    } else {  // PATCH: merge patch only
      if (req.Header("content-type") != "application/merge-patch+json") {
        return StatusResponse(415, "UnsupportedMediaType", "only merge patch here");
      }
      obj.merge_patch(body);
    }
    obj["metadata"]["resourceVersion"] = NextRvLocked();
    it->second = obj;
    EmitLocked(coll, "MODIFIED", obj);
    return http::JsonResponse(200, obj.dump());
  }

  const std::vector<std::string> collections_;
  std::unique_ptr<http::HttpServer> server_;
  std::mutex mu_;
  int64_t rv_ = 100;
  int64_t compacted_ = 0;
  GoneMode gone_mode_ = GoneMode::kHttp;
  std::map<std::string, std::map<std::string, nlohmann::json>> store_;
  std::vector<Event> history_;
  std::vector<Watcher> watchers_;
  std::vector<std::string> watch_versions_;
  int fail_count_ = 0;
  int fail_status_ = 500;
  int fail_retry_after_ = -1;
  std::string fail_reason_;
  std::string blocked_agent_;
  std::string last_authorization_;
  std::atomic<int> list_requests_{0};
  std::atomic<int> total_requests_{0};
};

}  // namespace kvmesh::kube::testing
