// Test fixtures (tests only) for the hub's multi-cluster code (member_clusters_test,
// hub_controller_test): member clusters as in-process test API servers (tests/kube) on 127.0.0.1
// with free ports, without the Deployment controller (the hub writes Deployments, nothing runs
// them), each with the operator's real KubeClient; the kubeconfig Secrets a hub holds for its
// members; and reading a Deployment's replicas back. Built on
// operator/controller/graph_cluster_testutil.h. Header-only; link kvmesh_test_apiserver.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "operator/controller/graph_cluster_testutil.h"

namespace kvmesh::placement::testing {

using controller::testing::TestCluster;

inline std::string Base64(const std::string& in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out.push_back(kAlphabet[(v >> (6 * k)) & 63]);
  }
  if (i < in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    if (i + 1 < in.size()) v |= uint8_t(in[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

// A client that gives up fast on a member that is down: 2 s timeout, one retry after 10 ms.
inline kube::KubeClientOptions FastOptions() {
  kube::KubeClientOptions o;
  o.max_retries = 1;
  o.initial_backoff = std::chrono::milliseconds(10);
  o.timeout = std::chrono::milliseconds(2000);
  return o;
}

// A member (or hub) cluster: no Deployment controller; `token` non-empty requires it of every
// request (the client sends it); `port` 0 = a free one. On failure: a test failure and an empty
// TestCluster.
inline TestCluster StartMember(const std::string& token = "", uint32_t port = 0) {
  controller::testing::TestClusterOptions o;
  o.server.controllers = false;
  o.server.token = token;
  o.server.port = port;
  o.client = FastOptions();
  auto c = controller::testing::StartTestCluster(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : TestCluster{};
}

// The kubeconfig kubectl would use for `server` (its URL, its token if any).
inline StatusOr<std::string> KubeconfigOf(const testapi::TestApiServer& server) {
  const std::string path = ::testing::TempDir() + "/member_kc_" + std::to_string(::getpid()) + "_" +
                           std::to_string(server.port());
  KVMESH_RETURN_IF_ERROR(server.WriteKubeconfig(path));
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::filesystem::remove(path);
  return text.str();
}

// A Secret `name` in namespace default with data[key] = base64(value).
inline nlohmann::json Secret(const std::string& name, const std::string& key, const std::string& value) {
  return {{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", {{"name", name}}}, {"data", {{key, Base64(value)}}}};
}

// spec.replicas of Deployment default/`name`, or -1 when it cannot be read.
inline int32_t LiveReplicas(kube::KubeClient& c, const std::string& name) {
  auto d = c.Get(kube::Deployments(), "default", name);
  if (!d.ok()) return -1;
  return (*d)["spec"].value("replicas", -1);
}

}  // namespace kvmesh::placement::testing
