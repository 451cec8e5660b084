// Integration: the informer and leader election against the project's test Kubernetes API server
// (tests/kube, the kvmesh-test-apiserver binary, run as a child process on a free port and stopped
// by pid), using its /_test/* failure knobs over HTTP.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/http_client.h"
#include "operator/kube/informer.h"
#include "operator/kube/kube_client.h"
#include "operator/kube/leader_election.h"

namespace kvmesh::kube {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

bool WaitFor(const std::function<bool()>& pred, milliseconds timeout = milliseconds(10000)) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return pred();
}

json ConfigMap(const std::string& name, const std::string& value) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"data", {{"k", value}}}};
}

class KubeApiServerIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string server = KVMESH_TEST_APISERVER_BIN;  // set by CMake
    ASSERT_TRUE(std::filesystem::exists(server)) << server;
    dir_ = std::filesystem::temp_directory_path() /
           ("kvmesh-kube-itest-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    std::string ready = (dir_ / "ready.json").string();
    std::string log = (dir_ / "server.log").string();
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      FILE* f = std::freopen(log.c_str(), "w", stderr);
      (void)f;
      execl(server.c_str(), server.c_str(), "--port", "0", "--ready-file", ready.c_str(), "--token",
            "itest-token", "--controllers=false", static_cast<char*>(nullptr));
      _exit(127);
    }
    ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(ready) && std::filesystem::file_size(ready) > 0; }))
        << "server did not start; see " << log;
    std::this_thread::sleep_for(milliseconds(20));
    std::ifstream in(ready);
    json j = json::parse(in);
    url_ = j["url"].get<std::string>();
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<KubeClient> Client(const std::string& agent = "kvmesh-itest") {
    KubeConfig config;
    config.server = url_;
    config.token = "itest-token";
    KubeClientOptions o;
    o.max_retries = 0;
    o.timeout = milliseconds(3000);
    o.user_agent = agent;
    return std::move(CreateKubeClient(config, o)).value();
  }
  // Calls a /_test/ knob of the server (plain HTTP, outside the API).
  void Knob(const std::string& path_query) {
    http::HttpClient http;
    auto r = http.Post(url_ + path_query, "");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, 200) << r->body;
  }

  std::filesystem::path dir_;
  pid_t pid_ = -1;
  std::string url_;
};

TEST_F(KubeApiServerIntegrationTest, InformerSurvivesDroppedWatchAndExpiredHistory) {
  auto writer = Client();
  ASSERT_TRUE(writer->Create(ConfigMaps(), "default", ConfigMap("keep", "v")).ok());
  ASSERT_TRUE(writer->Create(ConfigMaps(), "default", ConfigMap("change", "v")).ok());
  ASSERT_TRUE(writer->Create(ConfigMaps(), "default", ConfigMap("drop", "v")).ok());

  auto reader = Client("kvmesh-itest-informer");
  InformerOptions o;
  o.resource = ConfigMaps();
  o.ns = "default";
  o.min_backoff = milliseconds(50);
  o.max_backoff = milliseconds(200);
  Informer informer(reader.get(), o);
  std::mutex mu;
  std::vector<std::string> calls;
  InformerHandlers h;
  h.on_add = [&](const json& x) {
    std::lock_guard<std::mutex> l(mu);
    calls.push_back("add " + Informer::KeyOf(x));
  };
  h.on_update = [&](const json&, const json& x) {
    std::lock_guard<std::mutex> l(mu);
    calls.push_back("update " + Informer::KeyOf(x));
  };
  h.on_delete = [&](const json& x) {
    std::lock_guard<std::mutex> l(mu);
    calls.push_back("delete " + Informer::KeyOf(x));
  };
  informer.AddHandlers(h);
  ASSERT_TRUE(informer.Start().ok());
  ASSERT_TRUE(informer.WaitForSync(milliseconds(10000)));
  ASSERT_EQ(informer.List().size(), 3u);

  // The watch is open once an event arrives through it.
  ASSERT_TRUE(writer->Create(ConfigMaps(), "default", ConfigMap("pre", "v")).ok());
  ASSERT_TRUE(WaitFor([&] { return informer.Get("default/pre").has_value(); }));
  // A dropped stream: the informer re-watches from where it was and misses nothing.
  Knob("/_test/drop-watches");
  ASSERT_TRUE(WaitFor([&] { return informer.watch_restarts() >= 1; }));
  ASSERT_TRUE(writer->Create(ConfigMaps(), "default", ConfigMap("after-drop", "v")).ok());
  ASSERT_TRUE(WaitFor([&] { return informer.Get("default/after-drop").has_value(); }));
  EXPECT_EQ(informer.relists(), 0u);

  {
    std::lock_guard<std::mutex> l(mu);
    calls.clear();
  }
  auto got = writer->Get(ConfigMaps(), "default", "change");
  ASSERT_TRUE(got.ok());
  json change = *got;
  // The informer's next GETs (watch, list) fail for a while: it is blind while things change
  // and history expires; then its watch from the old version gets 410 and it must relist.
  Knob("/_test/fail-next?status=500&method=GET&count=6&path=/api/v1/namespaces/default/configmaps");
  Knob("/_test/drop-watches");
  change["data"]["k"] = "v2";
  ASSERT_TRUE(writer->Update(ConfigMaps(), change).ok());
  ASSERT_TRUE(writer->Delete(ConfigMaps(), "default", "drop").ok());
  Knob("/_test/expire-history");
  ASSERT_TRUE(WaitFor([&] { return informer.relists() == 1; }));
  ASSERT_TRUE(WaitFor([&] { return !informer.Get("default/drop").has_value() &&
                                   informer.Get("default/change").value_or(json::object()).value("data", json::object()).value("k", "") == "v2"; }));
  EXPECT_EQ(informer.ListKeys(),
            (std::vector<std::string>{"default/after-drop", "default/change", "default/keep", "default/pre"}));
  // The relist's diff produced exactly the two changes made while blind. The informer updates
  // its cache before it calls the handlers, so wait for the calls themselves, and stop it before
  // reading them: no handler runs after Stop() (a handler blocked on `mu` while this thread held
  // it and joined the informer in Stop() was a deadlock).
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> l(mu);
    return calls.size() >= 2;
  }));
  informer.Stop();
  std::lock_guard<std::mutex> l(mu);
  std::sort(calls.begin(), calls.end());
  EXPECT_EQ(calls, (std::vector<std::string>{"delete default/drop", "update default/change"}));
}

TEST_F(KubeApiServerIntegrationTest, SecondElectorTakesOverWhenTheLeaderStopsRenewing) {
  struct Cand {
    std::unique_ptr<KubeClient> client;
    std::unique_ptr<LeaderElector> elector;
  };
  auto make = [&](const std::string& id) {
    Cand c;
    c.client = Client("elector-" + id);
    LeaderElectionConfig le;
    le.lease_namespace = "default";
    le.lease_name = "kvmesh-operator-itest";
    le.identity = id;
    le.lease_duration = milliseconds(1000);
    le.renew_deadline = milliseconds(600);
    le.retry_period = milliseconds(100);
    le.release_on_stop = false;  // stopping = the process died: nobody releases the lease
    c.elector = std::make_unique<LeaderElector>(c.client.get(), le);
    return c;
  };
  Cand a = make("a");
  ASSERT_TRUE(a.elector->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return a.elector->IsLeader(); }));
  Cand b = make("b");
  ASSERT_TRUE(b.elector->Start().ok());
  std::this_thread::sleep_for(milliseconds(500));
  ASSERT_FALSE(b.elector->IsLeader());
  auto killed = std::chrono::steady_clock::now();
  a.elector->Stop();  // a's renewals end
  ASSERT_TRUE(WaitFor([&] { return b.elector->IsLeader(); }, milliseconds(5000)));
  auto took = std::chrono::steady_clock::now() - killed;
  EXPECT_LT(took, milliseconds(1000 + 220 + 500));  // lease duration + jittered retry + slack
  auto lease = b.client->Get(Leases(), "default", "kvmesh-operator-itest");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ((*lease)["spec"]["holderIdentity"], "b");
  EXPECT_EQ((*lease)["spec"]["leaseTransitions"], 1);
  b.elector->Stop();
}

}  // namespace
}  // namespace kvmesh::kube
