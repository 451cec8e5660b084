#include "tests/kube/test_apiserver.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace kvmesh::testapi {
namespace {

using http::HttpRequest;
using http::HttpResponse;

HttpResponse JsonOut(int code, const Json& body) {
  HttpResponse r;
  r.status = code;
  r.content_type = "application/json";
  r.body = body.dump();
  return r;
}

HttpResponse ErrorOut(const ApiError& e) {
  HttpResponse r = JsonOut(e.code, e.ToStatus());
  if (e.retry_after_seconds > 0) r.headers.emplace_back("Retry-After", std::to_string(e.retry_after_seconds));
  return r;
}

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < path.size()) {
    std::size_t slash = path.find('/', start);
    std::string seg = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!seg.empty()) out.push_back(UrlDecode(seg));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return out;
}

std::string ReasonFor(int code) {
  switch (code) {
    case 400: return "BadRequest";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "NotFound";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 422: return "Invalid";
    case 429: return "TooManyRequests";
    case 503: return "ServiceUnavailable";
    case 504: return "Timeout";
    default: return "InternalError";
  }
}

Json ResourceEntry(const ResourceType& t) {
  Json e = {{"name", t.resource}, {"singularName", t.singular}, {"namespaced", t.namespaced}, {"kind", t.kind},
            {"verbs", {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}}};
  if (!t.short_names.empty()) e["shortNames"] = t.short_names;
  if (!t.categories.empty()) e["categories"] = t.categories;
  return e;
}

std::string ReverseGroup(const std::string& group) {
  if (group.empty()) return "io.k8s.api.core";
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = group.find('.', start);
    parts.push_back(group.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (parts.size() == 1) return "io.k8s.api." + group;
  std::string out;
  for (std::size_t i = parts.size(); i-- > 0;) out += (out.empty() ? "" : ".") + parts[i];
  return out;
}

}  // namespace

Status TestApiServerConfig::Validate() const {
  if (port > 65535) return InvalidArgumentError("port: " + std::to_string(port) + " is not a port");
  if (gone_mode != "http" && gone_mode != "event") {
    return InvalidArgumentError("gone_mode: \"" + gone_mode + "\" must be http or event");
  }
  if (history == 0) return InvalidArgumentError("history: must be at least 1");
  if (threads == 0) return InvalidArgumentError("threads: must be at least 1");
  return Status::Ok();
}

TestApiServer::TestApiServer(TestApiServerConfig config) : config_(std::move(config)) {
  ApiStore::Options so;
  so.history_limit = config_.history;
  so.bookmark_interval = config_.bookmark_interval;
  so.gone_as_event = config_.gone_mode == "event";
  store_ = std::make_unique<ApiStore>(so);
  http::HttpServerOptions ho;
  ho.host = config_.host;
  ho.port = static_cast<uint16_t>(config_.port);
  ho.num_threads = static_cast<int>(config_.threads);
  ho.max_request_body_bytes = 16u << 20;
  ho.max_header_bytes = 64u << 10;
  ho.idle_timeout = std::chrono::milliseconds(300000);
  ho.server_name = "kvmesh-test-apiserver";
  server_ = std::make_unique<http::HttpServer>(ho);
}

StatusOr<std::unique_ptr<TestApiServer>> TestApiServer::Start(TestApiServerConfig config) {
  KVMESH_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<TestApiServer> s(new TestApiServer(std::move(config)));
  auto async = [p = s.get()](const HttpRequest& req, std::shared_ptr<http::Responder> r) { p->Handle(req, std::move(r)); };
  for (const char* m : {"GET", "POST", "PUT", "PATCH", "DELETE"}) {
    for (const char* prefix : {"/api/", "/apis/", "/_test/", "/openapi/"}) s->server_->RoutePrefixAsync(m, prefix, async);
    for (const char* path : {"/api", "/apis", "/version", "/healthz", "/readyz", "/livez"}) s->server_->RouteAsync(m, path, async);
  }
  KVMESH_RETURN_IF_ERROR(s->server_->Start());
  s->loop_ = std::thread([p = s.get()] { p->ControllerLoop(); });
  if (!s->config_.kubeconfig_out.empty()) KVMESH_RETURN_IF_ERROR(s->WriteKubeconfig(s->config_.kubeconfig_out));
  if (!s->config_.ready_file.empty()) {
    Json ready = {{"url", s->url()}, {"port", s->port()}, {"pid", static_cast<int64_t>(getpid())}};
    const std::string tmp = s->config_.ready_file + ".tmp";
    {
      std::ofstream out(tmp);
      out << ready.dump() << "\n";
      if (!out) return InternalError("cannot write ready file " + tmp);
    }
    std::error_code ec;
    std::filesystem::rename(tmp, s->config_.ready_file, ec);
    if (ec) return InternalError("cannot rename ready file to " + s->config_.ready_file + ": " + ec.message());
  }
  return s;
}

TestApiServer::~TestApiServer() { Stop(); }

void TestApiServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (loop_.joinable()) loop_.join();
  store_->DropWatches();
  server_->Stop(std::chrono::milliseconds(200));
}

Status TestApiServer::WriteKubeconfig(const std::string& path) const {
  std::ofstream out(path);
  out << "apiVersion: v1\nkind: Config\nclusters:\n- name: kvmesh-test\n  cluster:\n    server: " << url()
      << "\ncontexts:\n- name: kvmesh-test\n  context:\n    cluster: kvmesh-test\n    user: kvmesh-test\n"
         "    namespace: default\ncurrent-context: kvmesh-test\nusers:\n- name: kvmesh-test\n  user:";
  if (config_.token.empty()) out << " {}\n";
  else out << "\n    token: " << config_.token << "\n";
  if (!out) return InternalError("cannot write kubeconfig " + path);
  return Status::Ok();
}

void TestApiServer::ControllerLoop() {
  auto next_controllers = std::chrono::steady_clock::now();
  while (!stopping_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    store_->TickWatches();
    if (std::chrono::steady_clock::now() >= next_controllers) {
      next_controllers = std::chrono::steady_clock::now() + config_.controller_interval;
      store_->RunControllers(config_.controllers);
    }
  }
}

void TestApiServer::Count(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[key];
}

void TestApiServer::Handle(const HttpRequest& req, std::shared_ptr<http::Responder> responder) {
  if (req.path.rfind("/_test/", 0) == 0) {
    responder->Respond(HandleTestKnob(req));
    return;
  }
  if (req.path == "/healthz" || req.path == "/readyz" || req.path == "/livez") {
    responder->Respond(HttpResponse{200, "text/plain", {}, "ok"});
    return;
  }
  if (!config_.token.empty() && req.Header("authorization") != "Bearer " + config_.token) {
    responder->Respond(ErrorOut({401, "Unauthorized", "Unauthorized", {}}));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = fail_rules_.begin(); it != fail_rules_.end(); ++it) {
      if ((it->method.empty() || it->method == req.method) && req.path.rfind(it->path_prefix, 0) == 0) {
        ApiError e{it->status, ReasonFor(it->status), "injected failure (/_test/fail-next)", {}};
        if (it->status == 429) e.retry_after_seconds = 1;
        if (--it->remaining <= 0) fail_rules_.erase(it);
        responder->Respond(ErrorOut(e));
        return;
      }
    }
  }
  if (req.path == "/version") {
    responder->Respond(JsonOut(200, {{"major", "1"}, {"minor", "32"}, {"gitVersion", "v1.32.0-kvmesh-test"},
                                     {"gitCommit", "0000000"}, {"gitTreeState", "clean"},
                                     {"buildDate", "2026-01-01T00:00:00Z"}, {"goVersion", "go1.23"},
                                     {"compiler", "gc"}, {"platform", "linux/amd64"}}));
    return;
  }
  if (req.path.rfind("/openapi/", 0) == 0) {
    responder->Respond(OpenApi(req));
    return;
  }
  std::vector<std::string> segs = SplitPath(req.path);
  const bool core = !segs.empty() && segs[0] == "api";
  const std::size_t gv_len = core ? 2 : 3;
  if (segs.size() <= gv_len) {
    responder->Respond(Discovery(req));
    return;
  }
  HandleResource(req, std::move(responder));
}

HttpResponse TestApiServer::Discovery(const HttpRequest& req) {
  std::vector<std::string> segs = SplitPath(req.path);
  std::vector<ResourceType> types = store_->Types();
  if (req.method != "GET") return ErrorOut({405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}});
  if (segs.size() == 1 && segs[0] == "api") {
    return JsonOut(200, {{"kind", "APIVersions"}, {"versions", {"v1"}},
                         {"serverAddressByClientCIDRs", {{{"clientCIDR", "0.0.0.0/0"}, {"serverAddress", "127.0.0.1:" + std::to_string(port())}}}}});
  }
  // group -> versions in registration order
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;
  for (const ResourceType& t : types) {
    if (t.group.empty()) continue;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == t.group; });
    if (it == groups.end()) {
      groups.push_back({t.group, {}});
      it = groups.end() - 1;
    }
    if (std::find(it->second.begin(), it->second.end(), t.version) == it->second.end()) it->second.push_back(t.version);
  }
  auto group_json = [](const std::string& name, const std::vector<std::string>& versions) {
    Json vs = Json::array();
    for (const std::string& v : versions) vs.push_back({{"groupVersion", name + "/" + v}, {"version", v}});
    return Json{{"name", name}, {"versions", vs}, {"preferredVersion", vs[0]}};
  };
  if (segs.size() == 1) {
    Json gl = Json::array();
    for (const auto& [g, vs] : groups) gl.push_back(group_json(g, vs));
    return JsonOut(200, {{"kind", "APIGroupList"}, {"apiVersion", "v1"}, {"groups", gl}});
  }
  const std::string group = segs[0] == "api" ? "" : segs[1];
  if (segs[0] == "apis" && segs.size() == 2) {
    for (const auto& [g, vs] : groups) {
      if (g == group) {
        Json j = group_json(g, vs);
        j["kind"] = "APIGroup";
        j["apiVersion"] = "v1";
        return JsonOut(200, j);
      }
    }
    return ErrorOut(NotFoundError("", "groups", group));
  }
  const std::string version = segs[0] == "api" ? segs[1] : segs[2];
  Json resources = Json::array();
  for (const ResourceType& t : types) {
    if (t.group != group || t.version != version) continue;
    resources.push_back(ResourceEntry(t));
    if (t.has_status) {
      resources.push_back({{"name", t.resource + "/status"}, {"singularName", ""}, {"namespaced", t.namespaced},
                           {"kind", t.kind}, {"verbs", {"get", "patch", "update"}}});
    }
    if (t.has_scale) {
      resources.push_back({{"name", t.resource + "/scale"}, {"singularName", ""}, {"namespaced", t.namespaced},
                           {"group", "autoscaling"}, {"version", "v1"}, {"kind", "Scale"},
                           {"verbs", {"get", "patch", "update"}}});
    }
  }
  if (resources.empty()) return ErrorOut(NotFoundError(group, "groupversions", version));
  return JsonOut(200, {{"kind", "APIResourceList"}, {"apiVersion", "v1"},
                       {"groupVersion", group.empty() ? version : group + "/" + version}, {"resources", resources}});
}

HttpResponse TestApiServer::OpenApi(const HttpRequest& req) {
  std::vector<ResourceType> types = store_->Types();
  std::vector<std::string> segs = SplitPath(req.path);  // openapi v3 [api v1 | apis g v]
  if (segs.size() < 2 || segs[1] != "v3") return ErrorOut(NotFoundError("", "openapi", req.path));
  const std::string hash = std::to_string(store_->CurrentResourceVersion());
  if (segs.size() == 2) {
    Json paths = Json::object();
    for (const ResourceType& t : types) {
      const std::string key = t.group.empty() ? "api/" + t.version : "apis/" + t.group + "/" + t.version;
      paths[key] = {{"serverRelativeURL", "/openapi/v3/" + key + "?hash=" + hash}};
    }
    return JsonOut(200, {{"paths", paths}});
  }
  std::string group, version;
  if (segs[2] == "api" && segs.size() == 4) {
    version = segs[3];
  } else if (segs[2] == "apis" && segs.size() == 5) {
    group = segs[3];
    version = segs[4];
  } else {
    return ErrorOut(NotFoundError("", "openapi", req.path));
  }
  Json schemas = Json::object();
  Json paths = Json::object();
  for (const ResourceType& t : types) {
    if (t.group != group || t.version != version) continue;
    // kubectl looks for a PATCH operation of the kind that takes `fieldValidation`, then leaves
    // validation to the server (?fieldValidation=Strict).
    const Json gvk = {{"group", t.group}, {"version", t.version}, {"kind", t.kind}};
    const std::string base = (t.group.empty() ? "/api/" : "/apis/" + t.group + "/") + t.version +
                             (t.namespaced ? "/namespaces/{namespace}/" : "/") + t.resource + "/{name}";
    Json params = Json::array();
    for (const char* p : {"dryRun", "fieldManager", "fieldValidation", "force"}) {
      params.push_back({{"name", p}, {"in", "query"}, {"schema", {{"type", "string"}}}});
    }
    const std::string ref = "#/components/schemas/" + ReverseGroup(t.group) + "." + t.version + "." + t.kind;
    Json op = {{"x-kubernetes-group-version-kind", gvk}, {"x-kubernetes-action", "patch"},
               {"operationId", "patch" + t.kind}, {"parameters", params},
               {"responses", {{"200", {{"description", "OK"},
                                       {"content", {{"application/json", {{"schema", {{"$ref", ref}}}}}}}}}}}};
    paths[base] = {{"patch", op}};
    Json s;
    if (t.custom && t.schema && t.schema->is_object()) {
      s = *t.schema;
      s["properties"]["apiVersion"] = {{"type", "string"}};
      s["properties"]["kind"] = {{"type", "string"}};
      s["properties"]["metadata"] = {{"$ref", "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}};
    } else {
      s = {{"type", "object"}, {"x-kubernetes-preserve-unknown-fields", true},
           {"properties", {{"apiVersion", {{"type", "string"}}}, {"kind", {{"type", "string"}}},
                           {"metadata", {{"$ref", "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}}}}}};
    }
    s["x-kubernetes-group-version-kind"] = Json::array({{{"group", t.group}, {"version", t.version}, {"kind", t.kind}}});
    schemas[ReverseGroup(t.group) + "." + t.version + "." + t.kind] = s;
  }
  schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"] = {{"type", "object"}, {"x-kubernetes-preserve-unknown-fields", true}};
  return JsonOut(200, {{"openapi", "3.0.0"},
                       {"info", {{"title", "Kubernetes (kvmesh test API server)"}, {"version", "v1.32.0"}}},
                       {"paths", paths},
                       {"components", {{"schemas", schemas}}}});
}

HttpResponse TestApiServer::HandleTestKnob(const HttpRequest& req) {
  auto q = ParseQuery(req.query);
  if (req.path == "/_test/expire-history") {
    store_->ExpireHistory();
    return JsonOut(200, store_->Stats());
  }
  if (req.path == "/_test/drop-watches") {
    return JsonOut(200, {{"dropped", store_->DropWatches()}});
  }
  if (req.path == "/_test/fail-next") {
    FailRule rule;
    rule.status = q.count("status") ? std::atoi(q["status"].c_str()) : 500;
    rule.path_prefix = q.count("path") ? q["path"] : "";
    rule.method = q.count("method") ? q["method"] : "";
    rule.remaining = q.count("count") ? std::max(1, std::atoi(q["count"].c_str())) : 1;
    if (rule.status < 400 || rule.status > 599) return ErrorOut(BadRequestError("status must be 4xx or 5xx"));
    std::lock_guard<std::mutex> lock(mu_);
    fail_rules_.push_back(rule);
    return JsonOut(200, {{"rules", fail_rules_.size()}});
  }
  if (req.path == "/_test/config") {
    if (q.count("gone_mode")) store_->SetGoneAsEvent(q["gone_mode"] == "event");
    if (q.count("history")) store_->SetHistoryLimit(static_cast<std::size_t>(std::atoll(q["history"].c_str())));
    return JsonOut(200, store_->Stats());
  }
  if (req.path == "/_test/stats") {
    Json s = store_->Stats();
    std::lock_guard<std::mutex> lock(mu_);
    s["requests"] = counts_;
    uint64_t writes = 0;
    for (const auto& [k, n] : counts_) {
      if (k.rfind("create ", 0) == 0 || k.rfind("update ", 0) == 0 || k.rfind("patch ", 0) == 0 ||
          k.rfind("delete ", 0) == 0) {
        writes += n;
      }
    }
    s["write_requests"] = writes;
    return JsonOut(200, s);
  }
  if (req.path == "/_test/reset-stats") {
    std::lock_guard<std::mutex> lock(mu_);
    counts_.clear();
    return JsonOut(200, Json::object());
  }
  return ErrorOut(NotFoundError("", "_test", req.path));
}

void TestApiServer::HandleResource(const HttpRequest& req, std::shared_ptr<http::Responder> responder) {
  std::vector<std::string> segs = SplitPath(req.path);
  const bool core = segs[0] == "api";
  const std::string group = core ? "" : segs[1];
  const std::string version = core ? segs[1] : segs[2];
  std::vector<std::string> rest(segs.begin() + (core ? 2 : 3), segs.end());
  std::string ns;
  if (rest.size() >= 3 && rest[0] == "namespaces") {
    auto t = store_->FindType(group, version, rest[2]);
    if (t && t->namespaced) {
      ns = rest[1];
      rest.erase(rest.begin(), rest.begin() + 2);
    }
  }
  const std::string resource = rest[0];
  const std::string name = rest.size() > 1 ? rest[1] : "";
  const std::string sub = rest.size() > 2 ? rest[2] : "";
  std::optional<ResourceType> type = store_->FindType(group, version, resource);
  if (!type || rest.size() > 3) {
    responder->Respond(ErrorOut({404, "NotFound", "the server could not find the requested resource", {}}));
    return;
  }
  const ResourceType& t = *type;
  if (!sub.empty() && !(sub == "status" && t.has_status) && !(sub == "scale" && t.has_scale)) {
    responder->Respond(ErrorOut({404, "NotFound", "the server could not find the requested resource", {}}));
    return;
  }
  auto q = ParseQuery(req.query);
  const bool table = req.Header("accept").find("as=Table") != std::string::npos;
  WriteOptions wo;
  wo.dry_run = q.count("dryRun") > 0 && q["dryRun"] == "All";
  wo.field_manager = q.count("fieldManager") ? q["fieldManager"] : "";
  if (wo.field_manager.empty()) {
    std::string ua = req.Header("user-agent");
    wo.field_manager = ua.substr(0, ua.find('/'));
  }
  wo.force = q.count("force") && q["force"] == "true";
  wo.field_validation = q.count("fieldValidation") ? q["fieldValidation"] : "";
  auto respond = [&](int ok_code, const auto& result) {
    if (!result.ok()) {
      responder->Respond(ErrorOut(result.error()));
      return;
    }
    HttpResponse r;
    if constexpr (std::is_same_v<std::decay_t<decltype(result.value())>, WriteResult>) {
      r = JsonOut(result.value().created ? 201 : ok_code, result.value().object);
      for (const std::string& w : result.value().warnings) r.headers.emplace_back("Warning", "299 - \"" + w + "\"");
    } else {
      r = JsonOut(ok_code, result.value());
    }
    responder->Respond(std::move(r));
  };
  const std::string verb_ns = t.namespaced ? ns : "";
  if (req.method == "GET" && name.empty()) {
    const bool watch = q.count("watch") && (q["watch"] == "1" || q["watch"] == "true");
    if (watch) {
      Count("watch " + t.resource);
      WatchRequest wr;
      wr.namespace_ = verb_ns;
      wr.label_selector = q["labelSelector"];
      wr.field_selector = q["fieldSelector"];
      wr.resource_version = q["resourceVersion"];
      wr.bookmarks = q["allowWatchBookmarks"] == "true" || q["allowWatchBookmarks"] == "1";
      auto timeout = config_.watch_timeout;
      if (q.count("timeoutSeconds") && std::atoll(q["timeoutSeconds"].c_str()) > 0) {
        timeout = std::chrono::seconds(std::atoll(q["timeoutSeconds"].c_str()));
      }
      wr.deadline = std::chrono::steady_clock::now() + timeout;
      if (table) wr.render = [t](const Json& o) { return ToTable(t, {o}, o["metadata"].value("resourceVersion", "")); };
      auto r = store_->Watch(t, wr, [&]() -> std::optional<WatchSink> {
        auto writer = responder->StartStream(http::StreamWriter::Mode::kChunked, "application/json");
        if (!writer) return std::nullopt;
        return WatchSink{[writer](const std::string& line) { return writer->Send(line); },
                         [writer] { writer->Close(); }, [writer] { return !writer->IsClosed(); }};
      });
      if (!r.ok()) responder->Respond(ErrorOut(r.error()));
      return;
    }
    Count("list " + t.resource);
    ListOptions lo;
    lo.label_selector = q["labelSelector"];
    lo.field_selector = q["fieldSelector"];
    lo.limit = std::atoll(q["limit"].c_str());
    lo.continue_token = q["continue"];
    auto r = store_->List(t, verb_ns, lo);
    if (r.ok() && table) {
      std::vector<Json> items(r.value()["items"].begin(), r.value()["items"].end());
      Json tab = ToTable(t, items, r.value()["metadata"].value("resourceVersion", ""));
      if (r.value()["metadata"].contains("continue")) tab["metadata"]["continue"] = r.value()["metadata"]["continue"];
      responder->Respond(JsonOut(200, tab));
      return;
    }
    respond(200, r);
    return;
  }
  auto scale_of = [&](const Json& obj) {
    std::string selector;
    auto& sel = obj["spec"]["selector"];
    if (sel.is_object() && sel.contains("matchLabels")) {
      for (const auto& [k, v] : sel["matchLabels"].items()) selector += (selector.empty() ? "" : ",") + k + "=" + v.get<std::string>();
    }
    return Json{{"kind", "Scale"}, {"apiVersion", "autoscaling/v1"},
                {"metadata", {{"name", obj["metadata"]["name"]}, {"namespace", obj["metadata"].value("namespace", "")},
                              {"uid", obj["metadata"]["uid"]}, {"resourceVersion", obj["metadata"]["resourceVersion"]},
                              {"creationTimestamp", obj["metadata"]["creationTimestamp"]}}},
                {"spec", {{"replicas", obj["spec"].value("replicas", 1)}}},
                {"status", {{"replicas", obj.contains("status") ? obj["status"].value("replicas", 0) : 0}, {"selector", selector}}}};
  };
  if (req.method == "GET") {
    Count("get " + t.resource);
    auto r = store_->Get(t, verb_ns, name);
    if (r.ok() && sub == "scale") {
      responder->Respond(JsonOut(200, scale_of(r.value())));
      return;
    }
    if (r.ok() && table) {
      responder->Respond(JsonOut(200, ToTable(t, {r.value()}, r.value()["metadata"].value("resourceVersion", ""))));
      return;
    }
    respond(200, r);
    return;
  }
  if (req.method == "POST") {
    Count("create " + t.resource);
    if (!name.empty()) {
      responder->Respond(ErrorOut({405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}}));
      return;
    }
    auto body = ParseBody(req.body, req.Header("content-type"));
    if (!body.ok()) {
      responder->Respond(ErrorOut(body.error()));
      return;
    }
    respond(201, store_->Create(t, verb_ns, body.value(), wo));
    return;
  }
  if (name.empty() && req.method == "DELETE") {
    Count("deletecollection " + t.resource);
    ListOptions lo;
    lo.label_selector = q["labelSelector"];
    lo.field_selector = q["fieldSelector"];
    auto list = store_->List(t, verb_ns, lo);
    if (!list.ok()) {
      responder->Respond(ErrorOut(list.error()));
      return;
    }
    for (const Json& o : list.value()["items"]) {
      (void)store_->Delete(t, o["metadata"].value("namespace", ""), o["metadata"].value("name", ""), {}, wo);
    }
    responder->Respond(JsonOut(200, list.value()));
    return;
  }
  if (name.empty()) {
    responder->Respond(ErrorOut({405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}}));
    return;
  }
  if (sub == "scale" && (req.method == "PUT" || req.method == "PATCH")) {
    Count(std::string(req.method == "PUT" ? "update " : "patch ") + t.resource + "/scale");
    auto cur = store_->Get(t, verb_ns, name);
    if (!cur.ok()) {
      responder->Respond(ErrorOut(cur.error()));
      return;
    }
    Json scale = scale_of(cur.value());
    auto body = ParseBody(req.body, req.Header("content-type"));
    if (!body.ok()) {
      responder->Respond(ErrorOut(body.error()));
      return;
    }
    if (req.method == "PUT") {
      scale = body.value();
    } else if (req.Header("content-type").find("json-patch") != std::string::npos) {
      try {
        scale = scale.patch(body.value());
      } catch (const std::exception& e) {
        responder->Respond(ErrorOut({422, "Invalid", e.what(), {}}));
        return;
      }
    } else {
      scale.merge_patch(body.value());
    }
    Json obj = cur.value();
    obj["spec"]["replicas"] = scale["spec"].value("replicas", 1);
    if (scale.contains("metadata") && scale["metadata"].contains("resourceVersion")) {
      obj["metadata"]["resourceVersion"] = scale["metadata"]["resourceVersion"];
    }
    auto r = store_->Update(t, verb_ns, name, obj, "", wo);
    if (r.ok()) {
      responder->Respond(JsonOut(200, scale_of(r.value().object)));
    } else {
      responder->Respond(ErrorOut(r.error()));
    }
    return;
  }
  if (req.method == "PUT") {
    Count("update " + t.resource + (sub.empty() ? "" : "/" + sub));
    auto body = ParseBody(req.body, req.Header("content-type"));
    if (!body.ok()) {
      responder->Respond(ErrorOut(body.error()));
      return;
    }
    respond(200, store_->Update(t, verb_ns, name, body.value(), sub, wo));
    return;
  }
  if (req.method == "PATCH") {
    Count("patch " + t.resource + (sub.empty() ? "" : "/" + sub));
    respond(200, store_->Patch(t, verb_ns, name, req.Header("content-type"), req.body, sub, wo));
    return;
  }
  if (req.method == "DELETE") {
    Count("delete " + t.resource);
    DeleteOptions del;
    del.propagation_policy = q["propagationPolicy"];
    if (!req.body.empty()) {
      Json b = Json::parse(req.body, nullptr, false);
      if (b.is_discarded() || !b.is_object()) {
        responder->Respond(ErrorOut(BadRequestError("DeleteOptions body is not a JSON object")));
        return;
      }
      if (b.contains("propagationPolicy") && b["propagationPolicy"].is_string()) del.propagation_policy = b["propagationPolicy"];
      if (b.contains("orphanDependents") && b["orphanDependents"].is_boolean() && b["orphanDependents"].get<bool>()) del.propagation_policy = "Orphan";
      if (b.contains("preconditions") && b["preconditions"].is_object()) {
        del.precondition_uid = b["preconditions"].value("uid", "");
        del.precondition_resource_version = b["preconditions"].value("resourceVersion", "");
      }
      if (b.contains("dryRun") && b["dryRun"].is_array() && !b["dryRun"].empty()) wo.dry_run = true;
    }
    respond(200, store_->Delete(t, verb_ns, name, del, wo));
    return;
  }
  responder->Respond(ErrorOut({405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}}));
}

}  // namespace kvmesh::testapi
