// Test fixtures (tests only) for the operator's code that talks to a Kubernetes API: the project's
// test API server (tests/kube) started in-process on 127.0.0.1 with a free port, and the
// operator's real KubeClient to it over real HTTP.
//   StartTestCluster         one server + one client (the placement tests run several);
//   InstallInferenceGraphCrd creates the real CRD from $KVMESH_SOURCE_DIR/crds/ (schema, defaults);
//   GraphClusterTest         a gtest fixture: one cluster with the CRD installed (reconciler_test,
//                            planner_loop_test).
// Invariants: a TestCluster's client is destroyed before its server (member order), and the server
// stops in its destructor, so a test never leaves a listening port behind. Header-only; a test that
// includes it links kvmesh_test_apiserver.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "common/status.h"
#include "operator/kube/kube_client.h"
#include "tests/kube/kube_util.h"
#include "tests/kube/test_apiserver.h"

namespace kvmesh::controller::testing {

inline std::string SourceDir() {
  const char* d = std::getenv("KVMESH_SOURCE_DIR");
  return d != nullptr ? d : ".";
}

struct TestClusterOptions {
  testapi::TestApiServerConfig server;  // 127.0.0.1, a free port; server.token is also the client's
  kube::KubeClientOptions client;
};

struct TestCluster {
  std::unique_ptr<testapi::TestApiServer> server;
  std::unique_ptr<kube::KubeClient> client;  // after server: destroyed first
};

// Errors: the server's (bind, config) or the client's (config).
inline StatusOr<TestCluster> StartTestCluster(const TestClusterOptions& options) {
  auto s = testapi::TestApiServer::Start(options.server);
  if (!s.ok()) return s.status();
  TestCluster cluster;
  cluster.server = std::move(*s);
  kube::KubeConfig config;
  config.server = cluster.server->url();
  config.token = options.server.token;
  auto c = kube::CreateKubeClient(config, options.client);
  if (!c.ok()) return c.status();
  cluster.client = std::move(*c);
  return cluster;
}

// Creates the InferenceGraph CRD. Errors: NotFound (no crds/inferencegraph.yaml under
// SourceDir()), InvalidArgument (not YAML), or the API server's answer to the create.
inline Status InstallInferenceGraphCrd(kube::KubeClient& client) {
  const std::string path = SourceDir() + "/crds/inferencegraph.yaml";
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot open " + path + " (set KVMESH_SOURCE_DIR)");
  std::stringstream text;
  text << in.rdbuf();
  auto crd = testapi::YamlToJson(text.str());
  if (!crd.ok()) return InvalidArgumentError(path + ": " + crd.error().message);
  auto created = client.Create({"apiextensions.k8s.io", "v1", "customresourcedefinitions", false}, "", crd.value());
  return created.ok() ? Status::Ok() : created.status();
}

// One cluster with the CRD installed, its Deployment controller every 20 ms (pods appear), and a
// client with a 5 s timeout, 5..20 ms backoff and `client_max_retries` retries.
class GraphClusterTest : public ::testing::Test {
 protected:
  explicit GraphClusterTest(int client_max_retries) : client_max_retries_(client_max_retries) {}

  void SetUp() override {
    TestClusterOptions o;
    o.server.controller_interval = std::chrono::milliseconds(20);
    o.client.timeout = std::chrono::milliseconds(5000);
    o.client.initial_backoff = std::chrono::milliseconds(5);
    o.client.max_backoff = std::chrono::milliseconds(20);
    o.client.max_retries = client_max_retries_;
    auto c = StartTestCluster(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    server_ = std::move(c->server);
    client_ = std::move(c->client);
    Status crd = InstallInferenceGraphCrd(*client_);
    ASSERT_TRUE(crd.ok()) << crd.ToString();
  }

  const int client_max_retries_;
  std::unique_ptr<testapi::TestApiServer> server_;
  std::unique_ptr<kube::KubeClient> client_;  // after server_: destroyed first
};

}  // namespace kvmesh::controller::testing
