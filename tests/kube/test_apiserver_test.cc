// Contract tests of the test Kubernetes API server through real HTTP (kvmesh HttpClient against a
// TestApiServer on a free loopback port): the rules of /work/shared/KUBERNETES-API.md.
#include "tests/kube/test_apiserver.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/http_client.h"

namespace kvmesh::testapi {
namespace {

using http::ClientRequest;
using http::HttpClient;

const char* kWidgetCrd = R"({
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "widgets.example.com"},
  "spec": {"group": "example.com", "scope": "Namespaced",
    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
    "versions": [{"name": "v1", "served": true, "storage": true,
      "subresources": {"status": {}},
      "additionalPrinterColumns": [
        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "required": ["size"], "properties": {
          "size": {"type": "integer", "minimum": 1, "maximum": 10},
          "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
          "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
          "tags": {"type": "array", "items": {"type": "string"}},
          "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
        "status": {"type": "object", "properties": {
          "observedGeneration": {"type": "integer"},
          "conditions": {"type": "array", "items": {"type": "object",
            "x-kubernetes-preserve-unknown-fields": true}}}}}}}}]}})";

class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(TestApiServerConfig{}); }
  void StartServer(TestApiServerConfig cfg) {
    cfg.port = 0;
    cfg.bookmark_interval = std::chrono::milliseconds(200);
    cfg.controller_interval = std::chrono::milliseconds(20);
    server_.reset();
    auto s = TestApiServer::Start(cfg);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
  }
  http::ClientResponse Call(const std::string& method, const std::string& path, const std::string& body = "",
                            const std::string& content_type = "application/json",
                            std::vector<std::pair<std::string, std::string>> headers = {}) {
    ClientRequest req;
    req.method = method;
    req.url = server_->url() + path;
    req.body = body;
    if (!body.empty()) req.content_type = content_type;
    req.headers = std::move(headers);
    auto r = client_.Do(req);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }
  Json J(const http::ClientResponse& r) { return Json::parse(r.body, nullptr, false); }
  void CreateWidgetCrd() {
    auto r = Call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", kWidgetCrd);
    ASSERT_EQ(r.status, 201) << r.body;
  }
  http::ClientResponse CreateWidget(const std::string& name, int size, const std::string& extra_spec = "") {
    return Call("POST", "/apis/example.com/v1/namespaces/default/widgets",
                R"({"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":")" + name +
                    R"(","labels":{"app":"w","tier":")" + (size > 5 ? "big" : "small") + R"("}},"spec":{"size":)" +
                    std::to_string(size) + extra_spec + "}}");
  }
  // Reads watch events until `n` arrived or the stream ends.
  std::vector<Json> WatchEvents(const std::string& path, std::size_t n, int* status = nullptr) {
    http::HttpClientOptions copts;
    copts.read_timeout = std::chrono::milliseconds(5000);
    HttpClient c(copts);
    std::vector<Json> events;
    std::string buf;
    ClientRequest req;
    req.url = server_->url() + path;
    auto r = c.Stream(req, [&](std::string_view data) {
      buf += data;
      std::size_t nl;
      while ((nl = buf.find('\n')) != std::string::npos) {
        events.push_back(Json::parse(buf.substr(0, nl), nullptr, false));
        buf.erase(0, nl + 1);
      }
      return events.size() < n;
    });
    if (status != nullptr) *status = r.ok() ? r->status : -1;
    if (r.ok() && r->status == 200) {
      // client-go picks the watch decoder by content type: application/octet-stream would fail.
      EXPECT_EQ(r->Header("content-type"), "application/json");
    }
    if (r.ok() && r->status != 200) events.push_back(Json::parse(r->body, nullptr, false));
    return events;
  }

  std::unique_ptr<TestApiServer> server_;
  HttpClient client_;
};

TEST_F(ApiServerTest, DiscoveryListsBuiltinsAndCrdKinds) {
  auto r = Call("GET", "/api/v1");
  ASSERT_EQ(r.status, 200);
  bool pods_status = false;
  const Json core = J(r);
  for (const Json& e : core["resources"]) pods_status = pods_status || e["name"] == "pods/status";
  EXPECT_TRUE(pods_status);
  CreateWidgetCrd();
  Json groups = J(Call("GET", "/apis"));
  bool found = false;
  for (const Json& g : groups["groups"]) found = found || g["name"] == "example.com";
  EXPECT_TRUE(found);
  Json list = J(Call("GET", "/apis/example.com/v1"));
  ASSERT_EQ(list["kind"], "APIResourceList");
  EXPECT_EQ(list["resources"][0]["name"], "widgets");
  EXPECT_EQ(list["resources"][0]["shortNames"][0], "wd");
  EXPECT_EQ(list["resources"][1]["name"], "widgets/status");
  Json crd = J(Call("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"));
  EXPECT_EQ(crd["status"]["conditions"][1]["type"], "Established");
  Json oapi = J(Call("GET", "/openapi/v3/apis/example.com/v1"));
  EXPECT_TRUE(oapi["components"]["schemas"].contains("com.example.v1.Widget"));
}

TEST_F(ApiServerTest, CrudErrorsAreStatusObjects) {
  auto nf = Call("GET", "/api/v1/namespaces/default/configmaps/nope");
  EXPECT_EQ(nf.status, 404);
  EXPECT_EQ(J(nf)["kind"], "Status");
  EXPECT_EQ(J(nf)["reason"], "NotFound");
  const std::string cm = R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"},"data":{"a":"1"}})";
  auto c = Call("POST", "/api/v1/namespaces/default/configmaps", cm);
  ASSERT_EQ(c.status, 201) << c.body;
  Json obj = J(c);
  EXPECT_FALSE(obj["metadata"]["uid"].get<std::string>().empty());
  EXPECT_FALSE(obj["metadata"]["creationTimestamp"].get<std::string>().empty());
  auto dup = Call("POST", "/api/v1/namespaces/default/configmaps", cm);
  EXPECT_EQ(dup.status, 409);
  EXPECT_EQ(J(dup)["reason"], "AlreadyExists");
  auto nons = Call("POST", "/api/v1/namespaces/missing/configmaps", cm);
  EXPECT_EQ(nons.status, 404);
  // Stale resourceVersion -> 409 Conflict; current one succeeds and changes the version.
  Json upd = obj;
  upd["data"]["a"] = "2";
  auto ok = Call("PUT", "/api/v1/namespaces/default/configmaps/c1", upd.dump());
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_NE(J(ok)["metadata"]["resourceVersion"], obj["metadata"]["resourceVersion"]);
  upd["data"]["a"] = "3";
  auto stale = Call("PUT", "/api/v1/namespaces/default/configmaps/c1", upd.dump());
  EXPECT_EQ(stale.status, 409);
  EXPECT_EQ(J(stale)["reason"], "Conflict");
  EXPECT_EQ(J(stale)["code"], 409);
  auto bad = Call("POST", "/api/v1/namespaces/default/configmaps", R"({"metadata":{"name":"Bad_Name"}})");
  EXPECT_EQ(bad.status, 422);
  EXPECT_EQ(J(bad)["reason"], "Invalid");
  auto del = Call("DELETE", "/api/v1/namespaces/default/configmaps/c1");
  EXPECT_EQ(del.status, 200);
  EXPECT_EQ(Call("GET", "/api/v1/namespaces/default/configmaps/c1").status, 404);
}

TEST_F(ApiServerTest, GenerationAndStatusSubresource) {
  CreateWidgetCrd();
  auto c = CreateWidget("w1", 3, R"(,"unknown":1)");
  ASSERT_EQ(c.status, 201) << c.body;
  Json w = J(c);
  EXPECT_EQ(w["metadata"]["generation"], 1);
  EXPECT_EQ(w["spec"]["color"], "red");             // default applied
  EXPECT_FALSE(w["spec"].contains("unknown"));       // pruned
  EXPECT_FALSE(c.Header("warning").empty());
  // Status write: generation unchanged, spec in the body ignored.
  Json st = w;
  st["status"] = {{"observedGeneration", 1}};
  st["spec"]["size"] = 9;
  auto s = Call("PUT", "/apis/example.com/v1/namespaces/default/widgets/w1/status", st.dump());
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(J(s)["metadata"]["generation"], 1);
  EXPECT_EQ(J(s)["spec"]["size"], 3);
  EXPECT_EQ(J(s)["status"]["observedGeneration"], 1);
  // Main-resource write: status ignored, spec change bumps generation.
  Json m = J(s);
  m["spec"]["size"] = 4;
  m["status"] = {{"observedGeneration", 99}};
  auto u = Call("PUT", "/apis/example.com/v1/namespaces/default/widgets/w1", m.dump());
  ASSERT_EQ(u.status, 200) << u.body;
  EXPECT_EQ(J(u)["metadata"]["generation"], 2);
  EXPECT_EQ(J(u)["status"]["observedGeneration"], 1);
  // Metadata-only change: no generation bump.
  auto p = Call("PATCH", "/apis/example.com/v1/namespaces/default/widgets/w1", R"({"metadata":{"labels":{"x":"y"}}})",
                "application/merge-patch+json");
  ASSERT_EQ(p.status, 200) << p.body;
  EXPECT_EQ(J(p)["metadata"]["generation"], 2);
  // A write that changes nothing keeps the resourceVersion.
  auto same = Call("PATCH", "/apis/example.com/v1/namespaces/default/widgets/w1", R"({"metadata":{"labels":{"x":"y"}}})",
                   "application/merge-patch+json");
  EXPECT_EQ(J(same)["metadata"]["resourceVersion"], J(p)["metadata"]["resourceVersion"]);
  // ConfigMap (no spec): any data change bumps generation.
  ASSERT_EQ(Call("POST", "/api/v1/namespaces/default/configmaps", R"({"metadata":{"name":"g"},"data":{"a":"1"}})").status, 201);
  auto cm2 = Call("PATCH", "/api/v1/namespaces/default/configmaps/g", R"({"data":{"a":"2"}})", "application/merge-patch+json");
  EXPECT_EQ(J(cm2)["metadata"]["generation"], 2);
}

TEST_F(ApiServerTest, SchemaValidationMessagesNameTheField) {
  CreateWidgetCrd();
  auto big = CreateWidget("w2", 11);
  EXPECT_EQ(big.status, 422);
  EXPECT_NE(J(big)["message"].get<std::string>().find("spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"), std::string::npos) << big.body;
  auto color = CreateWidget("w3", 2, R"(,"color":"green")");
  EXPECT_EQ(color.status, 422);
  EXPECT_NE(J(color)["message"].get<std::string>().find("spec.color: Unsupported value: \"green\""), std::string::npos) << color.body;
  auto pat = CreateWidget("w4", 2, R"(,"name":"ABC")");
  EXPECT_NE(J(pat)["message"].get<std::string>().find("spec.name in body should match"), std::string::npos) << pat.body;
  auto typ = CreateWidget("w5", 2, R"(,"tags":[1])");
  EXPECT_NE(J(typ)["message"].get<std::string>().find("spec.tags[0]: Invalid value"), std::string::npos) << typ.body;
  auto req = Call("POST", "/apis/example.com/v1/namespaces/default/widgets",
                  R"({"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w6"},"spec":{}})");
  EXPECT_EQ(req.status, 422);
  EXPECT_NE(J(req)["message"].get<std::string>().find("spec.size: Required value"), std::string::npos) << req.body;
  auto pres = CreateWidget("w7", 2, R"(,"extra":{"anything":{"goes":true}})");
  ASSERT_EQ(pres.status, 201);
  EXPECT_EQ(J(pres)["spec"]["extra"]["anything"]["goes"], true);
  auto strict = Call("POST", "/apis/example.com/v1/namespaces/default/widgets?fieldValidation=Strict",
                     R"({"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w8"},"spec":{"size":1,"bogus":1}})");
  EXPECT_EQ(strict.status, 400);
}

TEST_F(ApiServerTest, LabelFieldSelectorsAndPaging) {
  CreateWidgetCrd();
  for (int i = 1; i <= 8; ++i) ASSERT_EQ(CreateWidget("w" + std::to_string(i), i).status, 201);
  auto count = [&](const std::string& q) {
    return J(Call("GET", "/apis/example.com/v1/namespaces/default/widgets?" + q))["items"].size();
  };
  EXPECT_EQ(count("labelSelector=tier%3Dbig"), 3u);
  EXPECT_EQ(count("labelSelector=tier%3D%3Dsmall"), 5u);
  EXPECT_EQ(count("labelSelector=tier!%3Dbig"), 5u);
  EXPECT_EQ(count("labelSelector=tier+in+(big,small)"), 8u);
  EXPECT_EQ(count("labelSelector=tier+notin+(big)"), 5u);
  EXPECT_EQ(count("labelSelector=app"), 8u);
  EXPECT_EQ(count("labelSelector=!app"), 0u);
  EXPECT_EQ(count("labelSelector=app%3Dw,tier%3Dbig"), 3u);
  EXPECT_EQ(count("fieldSelector=metadata.name%3Dw3"), 1u);
  EXPECT_EQ(count("fieldSelector=metadata.name!%3Dw3"), 7u);
  EXPECT_EQ(Call("GET", "/apis/example.com/v1/widgets?labelSelector=a+in+(b").status, 400);
  // Paging with limit + continue.
  Json p1 = J(Call("GET", "/apis/example.com/v1/namespaces/default/widgets?limit=3"));
  ASSERT_EQ(p1["items"].size(), 3u);
  EXPECT_EQ(p1["metadata"]["remainingItemCount"], 5);
  std::string cont = p1["metadata"]["continue"];
  Json p2 = J(Call("GET", "/apis/example.com/v1/namespaces/default/widgets?limit=10&continue=" + cont));
  EXPECT_EQ(p2["items"].size(), 5u);
  EXPECT_FALSE(p2["metadata"].contains("continue"));
  // An expired continue token is 410.
  Call("POST", "/_test/expire-history");
  EXPECT_EQ(Call("GET", "/apis/example.com/v1/namespaces/default/widgets?limit=3&continue=" + cont).status, 410);
  // Events by involvedObject.
  Call("POST", "/api/v1/namespaces/default/events",
       R"({"metadata":{"name":"e1"},"involvedObject":{"kind":"Widget","name":"w1","uid":"u1"},"reason":"Made","message":"hi","type":"Normal"})");
  Call("POST", "/api/v1/namespaces/default/events",
       R"({"metadata":{"name":"e2"},"involvedObject":{"kind":"Widget","name":"w2","uid":"u2"},"reason":"Made","message":"hi","type":"Normal"})");
  Json ev = J(Call("GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dw1,involvedObject.kind%3DWidget"));
  ASSERT_EQ(ev["items"].size(), 1u);
  EXPECT_EQ(ev["items"][0]["metadata"]["name"], "e1");
}

TEST_F(ApiServerTest, PatchesAnd415) {
  CreateWidgetCrd();
  ASSERT_EQ(CreateWidget("p", 2).status, 201);
  const std::string url = "/apis/example.com/v1/namespaces/default/widgets/p";
  auto mp = Call("PATCH", url, R"({"spec":{"size":5,"color":null}})", "application/merge-patch+json");
  ASSERT_EQ(mp.status, 200) << mp.body;
  EXPECT_EQ(J(mp)["spec"]["size"], 5);
  EXPECT_EQ(J(mp)["spec"]["color"], "red");  // removed by the patch, defaulted again
  auto jp = Call("PATCH", url, R"([{"op":"replace","path":"/spec/size","value":6},{"op":"add","path":"/spec/tags","value":["a"]}])",
                 "application/json-patch+json");
  ASSERT_EQ(jp.status, 200) << jp.body;
  EXPECT_EQ(J(jp)["spec"]["size"], 6);
  EXPECT_EQ(J(jp)["spec"]["tags"][0], "a");
  auto badjp = Call("PATCH", url, R"([{"op":"test","path":"/spec/size","value":1}])", "application/json-patch+json");
  EXPECT_EQ(badjp.status, 422);
  auto smp = Call("PATCH", url, R"({"spec":{"size":1}})", "application/strategic-merge-patch+json");
  EXPECT_EQ(smp.status, 415);
  EXPECT_EQ(J(smp)["reason"], "UnsupportedMediaType");
  // Strategic merge on a built-in kind works (as a merge patch).
  Call("POST", "/api/v1/namespaces/default/configmaps", R"({"metadata":{"name":"s"},"data":{"a":"1"}})");
  auto smp2 = Call("PATCH", "/api/v1/namespaces/default/configmaps/s", R"({"data":{"b":"2"}})",
                   "application/strategic-merge-patch+json");
  ASSERT_EQ(smp2.status, 200);
  EXPECT_EQ(J(smp2)["data"]["a"], "1");
  EXPECT_EQ(J(smp2)["data"]["b"], "2");
  // Patch with a stale resourceVersion is a conflict.
  auto stale = Call("PATCH", url, R"({"metadata":{"resourceVersion":"1"},"spec":{"size":2}})", "application/merge-patch+json");
  EXPECT_EQ(stale.status, 409);
  // Schema still applies after a patch.
  EXPECT_EQ(Call("PATCH", url, R"({"spec":{"size":100}})", "application/merge-patch+json").status, 422);
  // Dry run changes nothing.
  auto dry = Call("PATCH", url + "?dryRun=All", R"({"spec":{"size":7}})", "application/merge-patch+json");
  EXPECT_EQ(dry.status, 200);
  EXPECT_EQ(J(dry)["spec"]["size"], 7);
  EXPECT_EQ(J(Call("GET", url))["spec"]["size"], 6);
}

TEST_F(ApiServerTest, ServerSideApplyOwnershipAndConflicts) {
  const std::string url = "/api/v1/namespaces/default/configmaps/ssa";
  const std::string apply_ct = "application/apply-patch+yaml";
  auto a1 = Call("PATCH", url + "?fieldManager=op", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\n  b: \"2\"\n", apply_ct);
  ASSERT_EQ(a1.status, 201) << a1.body;
  EXPECT_EQ(J(a1)["metadata"]["managedFields"][0]["manager"], "op");
  EXPECT_EQ(J(a1)["metadata"]["managedFields"][0]["operation"], "Apply");
  // Same apply again: no write.
  auto a2 = Call("PATCH", url + "?fieldManager=op", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\n  b: \"2\"\n", apply_ct);
  EXPECT_EQ(J(a2)["metadata"]["resourceVersion"], J(a1)["metadata"]["resourceVersion"]);
  // Another manager changing an owned field conflicts, unless forced.
  auto c = Call("PATCH", url + "?fieldManager=other", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"9\"\n", apply_ct);
  EXPECT_EQ(c.status, 409);
  EXPECT_NE(J(c)["message"].get<std::string>().find("conflict with \"op\""), std::string::npos) << c.body;
  EXPECT_NE(J(c)["message"].get<std::string>().find(".data.a"), std::string::npos);
  // Same value: shared ownership, no conflict.
  EXPECT_EQ(Call("PATCH", url + "?fieldManager=other", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  b: \"2\"\n", apply_ct).status, 200);
  auto f = Call("PATCH", url + "?fieldManager=other&force=true", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"9\"\n  b: \"2\"\n", apply_ct);
  ASSERT_EQ(f.status, 200) << f.body;
  EXPECT_EQ(J(f)["data"]["a"], "9");
  // op now applies without a: a is owned by "other" so it stays; op's own field c goes away later.
  auto a3 = Call("PATCH", url + "?fieldManager=op", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  c: \"3\"\n", apply_ct);
  ASSERT_EQ(a3.status, 200) << a3.body;
  EXPECT_EQ(J(a3)["data"]["a"], "9");
  EXPECT_EQ(J(a3)["data"]["b"], "2");  // still owned by "other"
  EXPECT_EQ(J(a3)["data"]["c"], "3");
  auto a4 = Call("PATCH", url + "?fieldManager=op", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  d: \"4\"\n", apply_ct);
  EXPECT_FALSE(J(a4)["data"].contains("c"));  // only op owned c: removed
  // Conflict with an Update manager (merge patch by "kubectl-edit").
  Call("PATCH", url + "?fieldManager=kubectl-edit", R"({"data":{"d":"5"}})", "application/merge-patch+json");
  auto c2 = Call("PATCH", url + "?fieldManager=op", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  d: \"4\"\n", apply_ct);
  EXPECT_EQ(c2.status, 409);
  // Apply without fieldManager is invalid.
  EXPECT_EQ(Call("PATCH", url, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n", apply_ct, {{"User-Agent", ""}}).status, 422);
}

TEST_F(ApiServerTest, WatchResumeAnd410AsHttpStatus) {
  CreateWidgetCrd();
  Json list = J(Call("GET", "/apis/example.com/v1/namespaces/default/widgets"));
  const std::string rv0 = list["metadata"]["resourceVersion"];
  ASSERT_EQ(CreateWidget("a", 1).status, 201);
  ASSERT_EQ(CreateWidget("b", 7).status, 201);
  Call("PATCH", "/apis/example.com/v1/namespaces/default/widgets/a", R"({"spec":{"size":2}})", "application/merge-patch+json");
  Call("DELETE", "/apis/example.com/v1/namespaces/default/widgets/b");
  auto ev = WatchEvents("/apis/example.com/v1/namespaces/default/widgets?watch=1&resourceVersion=" + rv0, 4);
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[0]["type"], "ADDED");
  EXPECT_EQ(ev[1]["type"], "ADDED");
  EXPECT_EQ(ev[2]["type"], "MODIFIED");
  EXPECT_EQ(ev[3]["type"], "DELETED");
  EXPECT_EQ(ev[3]["object"]["metadata"]["name"], "b");
  // Resume from the version of the 3rd event: only the delete.
  const std::string rv2 = ev[2]["object"]["metadata"]["resourceVersion"];
  auto resumed = WatchEvents("/apis/example.com/v1/namespaces/default/widgets?watch=1&resourceVersion=" + rv2, 1);
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0]["type"], "DELETED");
  // Label selector on a watch: an object leaving the selection is DELETED for that watcher.
  std::vector<Json> sel;
  std::thread t([&] { sel = WatchEvents("/apis/example.com/v1/namespaces/default/widgets?watch=true&labelSelector=tier%3Dsmall&resourceVersion=" + rv2, 1); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Call("PATCH", "/apis/example.com/v1/namespaces/default/widgets/a", R"({"metadata":{"labels":{"tier":"big"}}})", "application/merge-patch+json");
  t.join();
  ASSERT_EQ(sel.size(), 1u);  // b's deletion was outside the selection
  EXPECT_EQ(sel[0]["type"], "DELETED");
  EXPECT_EQ(sel[0]["object"]["metadata"]["name"], "a");
  // Expire history: the old version is 410 Gone as HTTP status.
  Call("POST", "/_test/expire-history");
  int status = 0;
  auto gone = WatchEvents("/apis/example.com/v1/namespaces/default/widgets?watch=1&resourceVersion=" + rv0, 1, &status);
  EXPECT_EQ(status, 410);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0]["code"], 410);
  // A fresh list's version works.
  Json fresh = J(Call("GET", "/apis/example.com/v1/namespaces/default/widgets"));
  std::vector<Json> after;
  std::thread t2([&] { after = WatchEvents("/apis/example.com/v1/namespaces/default/widgets?watch=1&resourceVersion=" + fresh["metadata"]["resourceVersion"].get<std::string>(), 1); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CreateWidget("c", 1);
  t2.join();
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0]["object"]["metadata"]["name"], "c");
}

TEST_F(ApiServerTest, WatchGoneAsEventBookmarksTimeoutAndDrop) {
  CreateWidgetCrd();
  Json list = J(Call("GET", "/apis/example.com/v1/namespaces/default/widgets"));
  const std::string rv0 = list["metadata"]["resourceVersion"];
  Call("POST", "/_test/expire-history");
  Call("POST", "/_test/config?gone_mode=event");
  int status = 0;
  auto ev = WatchEvents("/apis/example.com/v1/namespaces/default/widgets?watch=1&resourceVersion=" + rv0, 5, &status);
  EXPECT_EQ(status, 200);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0]["type"], "ERROR");
  EXPECT_EQ(ev[0]["object"]["code"], 410);
  // Bookmarks carry only a version; the server closes after timeoutSeconds.
  Json fresh = J(Call("GET", "/apis/example.com/v1/namespaces/default/widgets"));
  const auto start = std::chrono::steady_clock::now();
  auto bm = WatchEvents("/apis/example.com/v1/namespaces/default/widgets?watch=1&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion=" +
                            fresh["metadata"]["resourceVersion"].get<std::string>(), 100);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_GE(bm.size(), 2u);
  EXPECT_EQ(bm[0]["type"], "BOOKMARK");
  EXPECT_TRUE(bm[0]["object"]["metadata"].contains("resourceVersion"));
  EXPECT_FALSE(bm[0]["object"].contains("spec"));
  EXPECT_LT(took, std::chrono::seconds(3));
  EXPECT_GE(took, std::chrono::milliseconds(900));
  // Dropped streams end at once.
  std::vector<Json> dropped;
  bool ended = false;
  std::thread t([&] {
    dropped = WatchEvents("/apis/example.com/v1/namespaces/default/widgets?watch=1", 100);
    ended = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Json d = J(Call("POST", "/_test/drop-watches"));
  t.join();
  EXPECT_TRUE(ended);
  EXPECT_GE(d["dropped"].get<int>(), 1);
}

TEST_F(ApiServerTest, InjectedFailures) {
  Call("POST", "/_test/fail-next?status=429&path=/api/v1/namespaces/default/configmaps&count=2");
  auto r1 = Call("GET", "/api/v1/namespaces/default/configmaps");
  EXPECT_EQ(r1.status, 429);
  EXPECT_EQ(r1.Header("retry-after"), "1");
  EXPECT_EQ(J(r1)["reason"], "TooManyRequests");
  EXPECT_EQ(Call("GET", "/api/v1/namespaces/default/configmaps").status, 429);
  EXPECT_EQ(Call("GET", "/api/v1/namespaces/default/configmaps").status, 200);
  Call("POST", "/_test/fail-next?status=500&method=POST");
  EXPECT_EQ(Call("GET", "/api/v1/namespaces/default/configmaps").status, 200);
  EXPECT_EQ(Call("POST", "/api/v1/namespaces/default/configmaps", R"({"metadata":{"name":"x"}})").status, 500);
  EXPECT_EQ(Call("POST", "/api/v1/namespaces/default/configmaps", R"({"metadata":{"name":"x"}})").status, 201);
  Json stats = J(Call("GET", "/_test/stats"));
  EXPECT_EQ(stats["requests"]["create configmaps"], 1);  // the injected failure is not counted
  EXPECT_EQ(stats["requests"]["list configmaps"], 2);
}

TEST_F(ApiServerTest, BearerToken) {
  TestApiServerConfig cfg;
  cfg.token = "s3cret";
  StartServer(cfg);
  EXPECT_EQ(Call("GET", "/api/v1/namespaces").status, 401);
  EXPECT_EQ(Call("GET", "/api/v1/namespaces", "", "", {{"Authorization", "Bearer s3cret"}}).status, 200);
}

TEST_F(ApiServerTest, FinalizersAndDeletionTimestamp) {
  CreateWidgetCrd();
  auto c = Call("POST", "/apis/example.com/v1/namespaces/default/widgets",
                R"({"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"f","finalizers":["example.com/x"]},"spec":{"size":1}})");
  ASSERT_EQ(c.status, 201);
  const std::string url = "/apis/example.com/v1/namespaces/default/widgets/f";
  auto d = Call("DELETE", url);
  EXPECT_EQ(d.status, 200);
  Json obj = J(Call("GET", url));
  ASSERT_TRUE(obj["metadata"].contains("deletionTimestamp"));
  // No new finalizers once deleting.
  auto add = Call("PATCH", url, R"({"metadata":{"finalizers":["example.com/x","example.com/y"]}})", "application/merge-patch+json");
  EXPECT_EQ(add.status, 422);
  EXPECT_NE(J(add)["message"].get<std::string>().find("no new finalizers"), std::string::npos);
  // Removing the last finalizer deletes the object.
  auto rm = Call("PATCH", url, R"({"metadata":{"finalizers":null}})", "application/merge-patch+json");
  EXPECT_EQ(rm.status, 200) << rm.body;
  EXPECT_EQ(Call("GET", url).status, 404);
}

TEST_F(ApiServerTest, GarbageCollectionBackgroundForegroundOrphan) {
  auto owner = [&](const std::string& name) {
    return J(Call("POST", "/api/v1/namespaces/default/configmaps", R"({"metadata":{"name":")" + name + R"("}})"));
  };
  auto child = [&](const std::string& name, const Json& o) {
    Json c = {{"metadata", {{"name", name}, {"ownerReferences", {{{"apiVersion", "v1"}, {"kind", "ConfigMap"},
              {"name", o["metadata"]["name"]}, {"uid", o["metadata"]["uid"]}, {"controller", true}, {"blockOwnerDeletion", true}}}}}}};
    return Call("POST", "/api/v1/namespaces/default/secrets", c.dump()).status;
  };
  auto wait_gone = [&](const std::string& path, bool gone) {
    for (int i = 0; i < 100; ++i) {
      if ((Call("GET", path).status == 404) == gone) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  Json o1 = owner("o1");
  ASSERT_EQ(child("c1", o1), 201);
  Call("DELETE", "/api/v1/namespaces/default/configmaps/o1", R"({"propagationPolicy":"Background"})");
  EXPECT_TRUE(wait_gone("/api/v1/namespaces/default/secrets/c1", true));
  Json o2 = owner("o2");
  ASSERT_EQ(child("c2", o2), 201);
  Call("DELETE", "/api/v1/namespaces/default/configmaps/o2", R"({"propagationPolicy":"Orphan"})");
  EXPECT_TRUE(wait_gone("/api/v1/namespaces/default/configmaps/o2", true));
  Json c2 = J(Call("GET", "/api/v1/namespaces/default/secrets/c2"));
  EXPECT_FALSE(c2["metadata"].contains("ownerReferences")) << c2.dump();
  Json o3 = owner("o3");
  ASSERT_EQ(child("c3", o3), 201);
  Call("DELETE", "/api/v1/namespaces/default/configmaps/o3?propagationPolicy=Foreground");
  EXPECT_TRUE(wait_gone("/api/v1/namespaces/default/secrets/c3", true));
  EXPECT_TRUE(wait_gone("/api/v1/namespaces/default/configmaps/o3", true));
}

TEST_F(ApiServerTest, DeploymentControllerAndTable) {
  const std::string deploy = R"({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
    "spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},
      "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"x","command":["sleep","1"]}]}}}})";
  ASSERT_EQ(Call("POST", "/apis/apps/v1/namespaces/default/deployments", deploy).status, 201);
  auto pods = [&] { return J(Call("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb"))["items"]; };
  auto wait_for = [&](const std::function<bool()>& cond) {
    for (int i = 0; i < 200; ++i) {
      if (cond()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  ASSERT_TRUE(wait_for([&] { return pods().size() == 2; }));
  Json rs = J(Call("GET", "/apis/apps/v1/namespaces/default/replicasets"))["items"];
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0]["metadata"]["ownerReferences"][0]["kind"], "Deployment");
  EXPECT_EQ(pods()[0]["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
  // A "kubelet" marks the pods ready through /status.
  for (const Json& p : pods()) {
    Json s = p;
    s["status"] = {{"phase", "Running"}, {"conditions", {{{"type", "Ready"}, {"status", "True"}}}}};
    ASSERT_EQ(Call("PUT", "/api/v1/namespaces/default/pods/" + p["metadata"]["name"].get<std::string>() + "/status", s.dump()).status, 200);
  }
  ASSERT_TRUE(wait_for([&] {
    Json d = J(Call("GET", "/apis/apps/v1/namespaces/default/deployments/web"));
    return d["status"].value("readyReplicas", 0) == 2 && d["status"].value("availableReplicas", 0) == 2 &&
           d["status"].value("observedGeneration", 0) == 1;
  }));
  // Scale down through the scale subresource.
  auto sc = Call("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale", R"({"spec":{"replicas":1}})",
                 "application/merge-patch+json");
  ASSERT_EQ(sc.status, 200) << sc.body;
  ASSERT_TRUE(wait_for([&] { return pods().size() == 1; }));
  ASSERT_TRUE(wait_for([&] {
    Json d = J(Call("GET", "/apis/apps/v1/namespaces/default/deployments/web"));
    return d["status"].value("replicas", 0) == 1 && d["status"].value("observedGeneration", 0) == 2;
  }));
  // Table for kubectl get.
  auto tab = Call("GET", "/apis/apps/v1/namespaces/default/deployments", "", "",
                  {{"Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}});
  Json t = J(tab);
  ASSERT_EQ(t["kind"], "Table");
  EXPECT_EQ(t["columnDefinitions"][1]["name"], "Ready");
  EXPECT_EQ(t["rows"][0]["cells"][0], "web");
  EXPECT_EQ(t["rows"][0]["cells"][1], "1/1");
  // Deleting the deployment cascades to ReplicaSet and pods.
  Call("DELETE", "/apis/apps/v1/namespaces/default/deployments/web");
  ASSERT_TRUE(wait_for([&] { return pods().empty(); }));
}

TEST_F(ApiServerTest, PrinterColumnsTable) {
  CreateWidgetCrd();
  ASSERT_EQ(CreateWidget("t1", 4).status, 201);
  Call("PATCH", "/apis/example.com/v1/namespaces/default/widgets/t1/status",
       R"({"status":{"conditions":[{"type":"Ready","status":"True"}]}})", "application/merge-patch+json");
  Json t = J(Call("GET", "/apis/example.com/v1/namespaces/default/widgets/t1", "", "",
                  {{"Accept", "application/json;as=Table;v=v1;g=meta.k8s.io"}}));
  ASSERT_EQ(t["kind"], "Table") << t.dump();
  ASSERT_EQ(t["columnDefinitions"].size(), 4u);
  EXPECT_EQ(t["columnDefinitions"][1]["name"], "Size");
  EXPECT_EQ(t["rows"][0]["cells"][1], 4);
  EXPECT_EQ(t["rows"][0]["cells"][2], "True");
  EXPECT_EQ(t["rows"][0]["object"]["metadata"]["name"], "t1");
}

TEST_F(ApiServerTest, LeaseUpdatesUnderResourceVersionAndNamespaces) {
  ASSERT_EQ(Call("POST", "/api/v1/namespaces", R"({"metadata":{"name":"ops"}})").status, 201);
  auto c = Call("POST", "/apis/coordination.k8s.io/v1/namespaces/ops/leases",
                R"({"metadata":{"name":"kvmesh-operator"},"spec":{"holderIdentity":"a","leaseDurationSeconds":15,"leaseTransitions":0}})");
  ASSERT_EQ(c.status, 201) << c.body;
  Json a = J(c), b = J(c);
  a["spec"]["renewTime"] = "2026-01-01T00:00:01.000000Z";
  ASSERT_EQ(Call("PUT", "/apis/coordination.k8s.io/v1/namespaces/ops/leases/kvmesh-operator", a.dump()).status, 200);
  // A second candidate writing from the same observation loses.
  b["spec"]["holderIdentity"] = "b";
  EXPECT_EQ(Call("PUT", "/apis/coordination.k8s.io/v1/namespaces/ops/leases/kvmesh-operator", b.dump()).status, 409);
  // generateName, dry-run create stores nothing.
  auto g = Call("POST", "/api/v1/namespaces/ops/configmaps", R"({"metadata":{"generateName":"cfg-"}})");
  ASSERT_EQ(g.status, 201);
  EXPECT_EQ(J(g)["metadata"]["name"].get<std::string>().rfind("cfg-", 0), 0u);
  EXPECT_EQ(Call("POST", "/api/v1/namespaces/ops/configmaps?dryRun=All", R"({"metadata":{"name":"dry"}})").status, 201);
  EXPECT_EQ(Call("GET", "/api/v1/namespaces/ops/configmaps/dry").status, 404);
  // Deleting the namespace deletes what is in it.
  EXPECT_EQ(Call("DELETE", "/api/v1/namespaces/ops").status, 200);
  EXPECT_EQ(Call("GET", "/apis/coordination.k8s.io/v1/namespaces/ops/leases/kvmesh-operator").status, 404);
  EXPECT_EQ(Call("GET", "/api/v1/namespaces/ops").status, 404);
}

TEST(KubeUtilTest, JsonPathAndYaml) {
  Json o = Json::parse(R"({"a":{"b":[{"k":"x","v":1},{"k":"y","v":2}]}})");
  EXPECT_EQ(*EvalJsonPath(o, ".a.b[1].v"), 2);
  EXPECT_EQ(*EvalJsonPath(o, ".a.b[?(@.k==\"x\")].v"), 1);
  EXPECT_FALSE(EvalJsonPath(o, ".a.c").has_value());
  auto y = YamlToJson("a: 1\nb: \"1\"\nc: true\nd: 1.5\ne: ~\nf: [x, 2]\n");
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(y.value()["a"], 1);
  EXPECT_EQ(y.value()["b"], "1");
  EXPECT_EQ(y.value()["c"], true);
  EXPECT_EQ(y.value()["d"], 1.5);
  EXPECT_TRUE(y.value()["e"].is_null());
  EXPECT_EQ(y.value()["f"][1], 2);
}

}  // namespace
}  // namespace kvmesh::testapi
