// TestApiServer: a Kubernetes API server for tests (no real kube-apiserver exists here). Serves the
// subset of the Kubernetes REST API that kvmesh-operator and the real kubectl use, over plain HTTP
// on 127.0.0.1: discovery (/version, /api, /apis, group/version resource lists), OpenAPI v3 built
// from the CRD schemas, CRUD + list/watch on built-in kinds and CRD-defined kinds, patches and
// server-side apply, Table output for `kubectl get`, finalizers, garbage collection, a minimal
// Deployment controller, and /_test/* knobs to inject failures (410 Gone, dropped watches, 429/5xx).
//
// Semantics live in ApiStore (api_store.h); this layer maps HTTP to it. See docs/test-cluster.md.
// Invariants: every error is a meta/v1 Status with the matching HTTP code; handlers never block
// (a watch is a chunked stream fed by the store); Stop() closes every watch.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/http_server.h"
#include "common/status.h"
#include "tests/kube/api_store.h"

namespace kvmesh::testapi {

struct TestApiServerConfig {
  std::string host = "127.0.0.1";
  uint32_t port = 0;  // 0 = a free port
  std::string token;  // non-empty: every API request needs "Authorization: Bearer <token>"
  bool controllers = true;  // run the Deployment controller (GC always runs)
  uint32_t history = 1000;  // watch events kept; older versions get 410
  std::chrono::milliseconds bookmark_interval{1000};
  std::string gone_mode = "http";  // http: 410 status | event: in-stream ERROR event
  std::chrono::milliseconds watch_timeout{1800000};  // when the client sends no timeoutSeconds
  std::chrono::milliseconds controller_interval{100};
  uint32_t threads = 4;
  std::string ready_file;      // JSON {"url","port","pid"} written once serving
  std::string kubeconfig_out;  // kubeconfig for kubectl written once serving

  template <class V> void Visit(V& v) {
    v("host", host, "address to bind (tests: 127.0.0.1)");
    v("port", port, "port; 0 = pick a free one");
    v("token", token, "bearer token required on API requests; empty = no auth", kConfigSecret);
    v("controllers", controllers, "run the built-in Deployment -> ReplicaSet -> Pod controller");
    v("history", history, "watch events kept in history; a watch from an older version gets 410");
    v("bookmark_interval", bookmark_interval, "how often watches with allowWatchBookmarks get a BOOKMARK");
    v("gone_mode", gone_mode, "too-old watch version: http (410 status) | event (in-stream ERROR event)");
    v("watch_timeout", watch_timeout, "watch length when the client gives no timeoutSeconds");
    v("controller_interval", controller_interval, "period of the GC and Deployment controller loop");
    v("threads", threads, "HTTP io threads");
    v("ready_file", ready_file, "write {\"url\",\"port\",\"pid\"} here once serving");
    v("kubeconfig_out", kubeconfig_out, "write a kubeconfig for kubectl here once serving");
  }
  Status Validate() const;
};

class TestApiServer {
 public:
  // Starts serving. Errors: InvalidArgument (config), Unavailable (bind), Internal (files).
  static StatusOr<std::unique_ptr<TestApiServer>> Start(TestApiServerConfig config);
  ~TestApiServer();
  TestApiServer(const TestApiServer&) = delete;
  TestApiServer& operator=(const TestApiServer&) = delete;

  void Stop();
  uint16_t port() const { return server_->port(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port()); }
  ApiStore& store() { return *store_; }
  // Writes a kubeconfig (current context -> this server, namespace default, the token if any).
  Status WriteKubeconfig(const std::string& path) const;

 private:
  struct FailRule {
    int status = 500;
    std::string path_prefix;  // "" = any API path
    std::string method;       // "" = any
    int remaining = 1;
  };
  explicit TestApiServer(TestApiServerConfig config);
  void Handle(const http::HttpRequest& req, std::shared_ptr<http::Responder> responder);
  void HandleResource(const http::HttpRequest& req, std::shared_ptr<http::Responder> responder);
  http::HttpResponse HandleTestKnob(const http::HttpRequest& req);
  http::HttpResponse Discovery(const http::HttpRequest& req);
  http::HttpResponse OpenApi(const http::HttpRequest& req);
  void Count(const std::string& key);
  void ControllerLoop();

  TestApiServerConfig config_;
  std::unique_ptr<ApiStore> store_;
  std::unique_ptr<http::HttpServer> server_;
  std::mutex mu_;  // guards fail_rules_, counts_
  std::vector<FailRule> fail_rules_;
  std::map<std::string, uint64_t> counts_;
  std::atomic<bool> stopping_{false};
  std::thread loop_;
};

// Table (meta.k8s.io/v1) for `kubectl get`: columns from the CRD's additionalPrinterColumns, or
// per built-in kind, or Name/Age. `objects` are full objects of type t.
Json ToTable(const ResourceType& t, const std::vector<Json>& objects, const std::string& resource_version);

}  // namespace kvmesh::testapi
