#include "operator/controller/reconciler_test_server.h"

#include <fstream>
#include <sstream>

#include "tests/kube/kube_util.h"
#include "tests/kube/test_apiserver.h"

namespace kvmesh::controller::testing {
namespace {

class Cluster : public TestCluster {
 public:
  explicit Cluster(std::unique_ptr<testapi::TestApiServer> s) : server_(std::move(s)) {}
  ~Cluster() override { server_->Stop(); }
  std::string url() const override { return server_->url(); }

 private:
  std::unique_ptr<testapi::TestApiServer> server_;
};

}  // namespace

StatusOr<std::unique_ptr<TestCluster>> TestCluster::Start() {
  testapi::TestApiServerConfig config;
  config.controller_interval = std::chrono::milliseconds(20);
  auto s = testapi::TestApiServer::Start(config);
  if (!s.ok()) return s.status();
  return std::unique_ptr<TestCluster>(new Cluster(std::move(*s)));
}

StatusOr<nlohmann::json> YamlFileToJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = testapi::YamlToJson(ss.str());
  if (!j.ok()) return InvalidArgumentError(path + ": " + j.error().message);
  return j.value();
}

}  // namespace kvmesh::controller::testing
