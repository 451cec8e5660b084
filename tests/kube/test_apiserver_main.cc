// kvmesh-test-apiserver: the test Kubernetes API server as a process (see docs/test-cluster.md).
#include <cstdio>
#include <memory>

#include "common/service_runner.h"
#include "tests/kube/test_apiserver.h"

namespace {

// RunService's shape (Start / Shutdown) around TestApiServer (which starts in Start()).
class Service {
 public:
  explicit Service(kvmesh::testapi::TestApiServerConfig config) : config_(std::move(config)) {}
  kvmesh::Status Start() {
    auto server = kvmesh::testapi::TestApiServer::Start(config_);
    if (!server.ok()) return server.status();
    server_ = std::move(server).value();
    std::fprintf(stderr, "kvmesh-test-apiserver: serving on %s\n", server_->url().c_str());
    return kvmesh::Status::Ok();
  }
  void Shutdown() {
    if (server_) server_->Stop();
  }

 private:
  kvmesh::testapi::TestApiServerConfig config_;
  std::unique_ptr<kvmesh::testapi::TestApiServer> server_;
};

}  // namespace

int main(int argc, char** argv) {
  return kvmesh::RunService<kvmesh::testapi::TestApiServerConfig>(
      {.binary = "kvmesh-test-apiserver", .component = "test-apiserver", .env_prefix = "KVMESH_TEST_APISERVER"},
      argc, argv, [](const kvmesh::testapi::TestApiServerConfig& config) {
        return kvmesh::StatusOr<std::unique_ptr<Service>>(std::make_unique<Service>(config));
      });
}
