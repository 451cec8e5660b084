// Informer against a scripted API server over real HTTP: list+watch, re-watch, 410 recovery.
#include "operator/kube/informer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include "common/wait_for_testutil.h"
#include "operator/kube/scripted_api_server_testutil.h"

namespace kvmesh::kube {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using testing::ScriptedApiServer;

const char kCms[] = "/api/v1/namespaces/default/configmaps";

json ConfigMap(const std::string& name, const std::string& value = "v",
               json labels = json::object()) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", "default"}, {"labels", labels}}},
          {"data", {{"k", value}}}};
}

using test_util::WaitFor;

// Records handler calls as "add ns/x", "update ns/x v->v2", "delete ns/x", and checks that the
// cache already reflects each change when its handler runs.
struct Recorder {
  std::mutex mu;
  std::vector<std::string> calls;
  Informer* informer = nullptr;
  bool cache_consistent = true;

  InformerHandlers Handlers() {
    InformerHandlers h;
    h.on_add = [this](const json& o) {
      std::string key = Informer::KeyOf(o);
      if (!informer->Get(key)) cache_consistent = false;
      Push("add " + key);
    };
    h.on_update = [this](const json& a, const json& b) {
      std::string key = Informer::KeyOf(b);
      auto cached = informer->Get(key);
      if (!cached || (*cached)["metadata"]["resourceVersion"] != b["metadata"]["resourceVersion"]) {
        cache_consistent = false;
      }
      Push("update " + key + " " + a["data"]["k"].get<std::string>() + "->" +
           b["data"]["k"].get<std::string>());
    };
    h.on_delete = [this](const json& o) {
      std::string key = Informer::KeyOf(o);
      if (informer->Get(key)) cache_consistent = false;
      Push("delete " + key);
    };
    return h;
  }
  void Push(std::string s) {
    std::lock_guard<std::mutex> lock(mu);
    calls.push_back(std::move(s));
  }
  std::vector<std::string> Calls() {
    std::lock_guard<std::mutex> lock(mu);
    return calls;
  }
  bool Has(const std::string& s) {
    auto c = Calls();
    return std::find(c.begin(), c.end(), s) != c.end();
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu);
    calls.clear();
  }
};

class InformerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.Start().ok());
    KubeConfig config;
    config.server = server_.url();
    KubeClientOptions o;
    o.max_retries = 0;
    o.timeout = milliseconds(3000);
    auto c = CreateKubeClient(config, o);
    ASSERT_TRUE(c.ok());
    client_ = std::move(c).value();
  }
  std::unique_ptr<Informer> Make(const std::string& selector = "") {
    InformerOptions o;
    o.resource = ConfigMaps();
    o.ns = "default";
    o.label_selector = selector;
    o.min_backoff = milliseconds(20);
    o.max_backoff = milliseconds(100);
    auto inf = std::make_unique<Informer>(client_.get(), o);
    recorder_.informer = inf.get();
    inf->AddHandlers(recorder_.Handlers());
    return inf;
  }

  ScriptedApiServer server_{{kCms}};
  std::unique_ptr<KubeClient> client_;
  Recorder recorder_;
};

TEST_F(InformerTest, ListsThenWatchesAndKeepsTheCache) {
  server_.Put(kCms, ConfigMap("a"));
  server_.Put(kCms, ConfigMap("b"));
  auto inf = Make();
  ASSERT_TRUE(inf->Start().ok());
  ASSERT_TRUE(inf->WaitForSync(milliseconds(5000)));
  EXPECT_EQ(inf->List().size(), 2u);
  EXPECT_TRUE(recorder_.Has("add default/a"));
  ASSERT_TRUE(WaitFor([&] { return server_.open_watches() == 1; }));
  EXPECT_EQ(server_.watch_versions().front(), server_.current_rv());  // from the list's version

  server_.Put(kCms, ConfigMap("a", "v2"));
  server_.Put(kCms, ConfigMap("c"));
  server_.Remove(kCms, "b");
  ASSERT_TRUE(WaitFor([&] { return recorder_.Has("delete default/b"); }));
  EXPECT_TRUE(recorder_.Has("update default/a v->v2"));
  EXPECT_TRUE(recorder_.Has("add default/c"));
  EXPECT_EQ(inf->ListKeys(), (std::vector<std::string>{"default/a", "default/c"}));
  EXPECT_EQ((*inf->Get("default/a"))["data"]["k"], "v2");
  EXPECT_FALSE(inf->Get("default/b").has_value());
  EXPECT_EQ(inf->last_resource_version(), server_.current_rv());
  EXPECT_TRUE(recorder_.cache_consistent);
  EXPECT_EQ(inf->relists(), 0u);
}

TEST_F(InformerTest, LabelSelectorFiltersListAndWatch) {
  server_.Put(kCms, ConfigMap("yes", "v", {{"app", "kvmesh"}}));
  server_.Put(kCms, ConfigMap("no"));
  auto inf = Make("app=kvmesh");
  ASSERT_TRUE(inf->Start().ok());
  ASSERT_TRUE(inf->WaitForSync(milliseconds(5000)));
  ASSERT_TRUE(WaitFor([&] { return server_.open_watches() == 1; }));
  server_.Put(kCms, ConfigMap("no2"));
  server_.Put(kCms, ConfigMap("yes2", "v", {{"app", "kvmesh"}}));
  ASSERT_TRUE(WaitFor([&] { return inf->Get("default/yes2").has_value(); }));
  EXPECT_EQ(inf->ListKeys(), (std::vector<std::string>{"default/yes", "default/yes2"}));
}

TEST_F(InformerTest, RewatchesFromTheLastVersionSeenIncludingBookmarks) {
  auto inf = Make();
  ASSERT_TRUE(inf->Start().ok());
  ASSERT_TRUE(inf->WaitForSync(milliseconds(5000)));
  ASSERT_TRUE(WaitFor([&] { return server_.open_watches() == 1; }));
  server_.Put(kCms, ConfigMap("a"));
  ASSERT_TRUE(WaitFor([&] { return inf->Get("default/a").has_value(); }));
  std::string after_a = server_.current_rv();
  server_.EndWatches();  // like a server-side timeout
  ASSERT_TRUE(WaitFor([&] { return server_.watch_versions().size() == 2 && server_.open_watches() == 1; }));
  EXPECT_EQ(server_.watch_versions()[1], after_a);
  EXPECT_EQ(inf->watch_restarts(), 1u);

  // Another collection moves the version; a bookmark carries it, and the next watch starts there.
  server_.Put("/api/v1/namespaces/default/configmaps-unwatched", ConfigMap("elsewhere"));
  server_.SendBookmarks();
  std::string bookmark_rv = server_.current_rv();
  ASSERT_NE(bookmark_rv, after_a);
  ASSERT_TRUE(WaitFor([&] { return inf->last_resource_version() == bookmark_rv; }));
  server_.EndWatches();
  ASSERT_TRUE(WaitFor([&] { return server_.watch_versions().size() == 3; }));
  EXPECT_EQ(server_.watch_versions()[2], bookmark_rv);
  EXPECT_EQ(inf->relists(), 0u);  // no LIST for a plain stream end
  EXPECT_EQ(server_.list_requests(), 1);
}

// The core 410 rule: relist, diff, watch from the NEW version, never the expired one again.
void ExpectRelistOn410(ScriptedApiServer& server, Informer& inf, Recorder& recorder, bool in_stream) {
  server.Put(kCms, ConfigMap("keep"));
  server.Put(kCms, ConfigMap("change"));
  server.Put(kCms, ConfigMap("drop"));
  ASSERT_TRUE(inf.Start().ok());
  ASSERT_TRUE(inf.WaitForSync(milliseconds(5000)));
  ASSERT_TRUE(WaitFor([&] { return server.open_watches() == 1; }));
  ASSERT_TRUE(WaitFor([&] { return inf.List().size() == 3; }));
  recorder.Clear();

  // While the informer is blind (its stream ended, its requests failing), things change and
  // history is compacted; then the server answers again.
  server.set_gone_mode(in_stream ? ScriptedApiServer::GoneMode::kInStream : ScriptedApiServer::GoneMode::kHttp);
  std::string expired = inf.last_resource_version();
  server.FailNext(1000000, 500);
  server.EndWatches();
  server.Put(kCms, ConfigMap("change", "v2"));
  server.Remove(kCms, "drop");
  server.Put(kCms, ConfigMap("new"));
  server.Compact();
  std::this_thread::sleep_for(milliseconds(50));
  server.FailNext(0, 500);

  ASSERT_TRUE(WaitFor([&] { return inf.relists() == 1 && server.open_watches() == 1; }))
      << "relists=" << inf.relists();
  std::string fresh = server.current_rv();
  ASSERT_TRUE(WaitFor([&] { return inf.last_resource_version() == fresh; }));
  // Synthesized handler calls for what changed while blind; nothing for the unchanged object.
  ASSERT_TRUE(WaitFor([&] { return recorder.Calls().size() == 3; }));
  auto calls = recorder.Calls();
  std::sort(calls.begin(), calls.end());
  EXPECT_EQ(calls, (std::vector<std::string>{"add default/new", "delete default/drop",
                                             "update default/change v->v2"}));
  EXPECT_TRUE(recorder.cache_consistent);
  EXPECT_EQ(inf.ListKeys(), (std::vector<std::string>{"default/change", "default/keep", "default/new"}));

  // Let it run a while: the expired version was watched from exactly twice (the first watch,
  // and the attempt that got the 410), never again; the current watch is from the fresh list.
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(server.watch_versions(), (std::vector<std::string>{expired, expired, fresh}));
  EXPECT_EQ(server.list_requests(), 2);
  EXPECT_EQ(inf.relists(), 1u);
}

TEST_F(InformerTest, HttpGoneRelistsDiffsAndNeverRewatchesTheExpiredVersion) {
  auto inf = Make();
  ExpectRelistOn410(server_, *inf, recorder_, false);
}

TEST_F(InformerTest, InStreamGoneRelistsDiffsAndNeverRewatchesTheExpiredVersion) {
  auto inf = Make();
  ExpectRelistOn410(server_, *inf, recorder_, true);
}

// An in-stream ERROR 410 on a live stream (the server expired it mid-stream).
TEST_F(InformerTest, LiveStreamExpiredMidStreamRelists) {
  auto inf = Make();
  ASSERT_TRUE(inf->Start().ok());
  ASSERT_TRUE(inf->WaitForSync(milliseconds(5000)));
  ASSERT_TRUE(WaitFor([&] { return server_.open_watches() == 1; }));
  std::string expired = inf->last_resource_version();
  server_.Put(kCms, ConfigMap("x"));  // this event reaches the informer...
  ASSERT_TRUE(WaitFor([&] { return inf->Get("default/x").has_value(); }));
  std::string seen = inf->last_resource_version();
  server_.FailNext(1000000, 500);  // keep the relist from racing the next change
  server_.Compact();
  server_.ExpireWatches();  // ...then the server says the stream's version is gone
  server_.Put(kCms, ConfigMap("y"));
  std::this_thread::sleep_for(milliseconds(50));
  server_.FailNext(0, 500);
  ASSERT_TRUE(WaitFor([&] { return inf->relists() == 1 && server_.open_watches() == 1; }));
  std::string fresh = server_.current_rv();
  ASSERT_NE(fresh, seen);
  EXPECT_EQ(server_.watch_versions(), (std::vector<std::string>{expired, fresh}));
  EXPECT_TRUE(inf->Get("default/y").has_value());
}

TEST_F(InformerTest, BacksOffAndRetriesOnErrors) {
  server_.Put(kCms, ConfigMap("a"));
  server_.FailNext(3, 500);
  auto inf = Make();
  ASSERT_TRUE(inf->Start().ok());
  ASSERT_TRUE(inf->WaitForSync(milliseconds(5000)));
  EXPECT_TRUE(inf->Get("default/a").has_value());
  EXPECT_EQ(server_.list_requests(), 1);  // the three failures were answered before listing
  EXPECT_GE(server_.total_requests(), 4);
}

TEST_F(InformerTest, StopReturnsQuicklyWhileWatching) {
  auto inf = Make();
  ASSERT_TRUE(inf->Start().ok());
  ASSERT_TRUE(inf->WaitForSync(milliseconds(5000)));
  ASSERT_TRUE(WaitFor([&] { return server_.open_watches() == 1; }));
  auto start = std::chrono::steady_clock::now();
  inf->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1000));
  EXPECT_TRUE(inf->HasSynced());
}

}  // namespace
}  // namespace kvmesh::kube
