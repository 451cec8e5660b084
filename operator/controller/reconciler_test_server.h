// Test-only: starts the project's test Kubernetes API server (tests/kube) in-process for
// reconciler_test.cc. A separate translation unit because tests/kube's headers and
// operator/kube/kube_client.h both declare kvmesh::kube::ListOptions.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace kvmesh::controller::testing {

class TestCluster {
 public:
  // A test API server on 127.0.0.1, free port, with its Deployment controller and GC running.
  static StatusOr<std::unique_ptr<TestCluster>> Start();
  virtual ~TestCluster() = default;
  virtual std::string url() const = 0;
};

// One YAML document from a file as JSON (the test API server's YAML reader).
StatusOr<nlohmann::json> YamlFileToJson(const std::string& path);

}  // namespace kvmesh::controller::testing
