// KubeClient against a scripted API server over real HTTP on loopback.
#include "operator/kube/kube_client.h"

#include <gtest/gtest.h>

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

ListOptions Selector(const std::string& s) {
  ListOptions o;
  o.label_selector = s;
  return o;
}
ListOptions Limit(int64_t n) {
  ListOptions o;
  o.limit = n;
  return o;
}
WatchOptions From(const std::string& rv) {
  WatchOptions o;
  o.resource_version = rv;
  return o;
}

class KubeClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.Start().ok());
    client_ = MakeClient();
  }
  std::unique_ptr<KubeClient> MakeClient(KubeClientOptions options = Fast()) {
    KubeConfig config;
    config.server = server_.url();
    config.token = "secret-token";
    auto c = CreateKubeClient(config, options);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return std::move(c).value();
  }
  static KubeClientOptions Fast() {
    KubeClientOptions o;
    o.timeout = milliseconds(3000);
    o.initial_backoff = milliseconds(5);
    o.max_backoff = milliseconds(20);
    o.max_retries = 3;
    return o;
  }

  ScriptedApiServer server_{{kCms}};
  std::unique_ptr<KubeClient> client_;
};

TEST_F(KubeClientTest, CreateGetListUpdateDelete) {
  auto created = client_->Create(ConfigMaps(), "default", ConfigMap("a"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_FALSE((*created)["metadata"]["resourceVersion"].get<std::string>().empty());
  EXPECT_EQ(server_.last_authorization(), "Bearer secret-token");

  auto got = client_->Get(ConfigMaps(), "default", "a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)["data"]["k"], "v");

  ASSERT_TRUE(client_->Create(ConfigMaps(), "default", ConfigMap("b", "x", {{"app", "kv"}})).ok());
  auto list = client_->List(ConfigMaps(), "default");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->items.size(), 2u);
  EXPECT_EQ(list->resource_version, server_.current_rv());
  auto selected = client_->List(ConfigMaps(), "default", Selector("app=kv"));
  ASSERT_TRUE(selected.ok());
  ASSERT_EQ(selected->items.size(), 1u);
  EXPECT_EQ(selected->items[0]["metadata"]["name"], "b");

  json update = *got;
  update["data"]["k"] = "v2";
  auto updated = client_->Update(ConfigMaps(), update);
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();
  EXPECT_EQ((*updated)["data"]["k"], "v2");

  auto patched = client_->Patch(ConfigMaps(), "default", "a", PatchType::kMerge, {{"data", {{"p", "1"}}}});
  ASSERT_TRUE(patched.ok()) << patched.status().ToString();
  EXPECT_EQ((*patched)["data"]["p"], "1");
  EXPECT_EQ((*patched)["data"]["k"], "v2");

  EXPECT_TRUE(client_->Delete(ConfigMaps(), "default", "a").ok());
  EXPECT_TRUE(IsNotFound(client_->Delete(ConfigMaps(), "default", "a")));
  EXPECT_GE(client_->writes(), 5u);
  EXPECT_GE(client_->reads(), 3u);
}

TEST_F(KubeClientTest, ErrorsMapToCodesAndKeepHttpStatusAndReason) {
  auto missing = client_->Get(ConfigMaps(), "default", "nope");
  ASSERT_TRUE(IsNotFound(missing.status()));
  EXPECT_EQ(GetApiError(missing.status()).http_status, 404);
  EXPECT_EQ(GetApiError(missing.status()).reason, "NotFound");

  auto first = client_->Create(ConfigMaps(), "default", ConfigMap("a"));
  ASSERT_TRUE(first.ok());
  auto dup = client_->Create(ConfigMaps(), "default", ConfigMap("a"));
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(GetApiError(dup.status()).reason, "AlreadyExists");

  // Someone else writes; our copy is stale -> 409 Conflict -> kAborted.
  ASSERT_TRUE(client_->Update(ConfigMaps(), *first).ok());
  auto stale = client_->Update(ConfigMaps(), *first);
  EXPECT_TRUE(IsConflict(stale.status())) << stale.status().ToString();
  EXPECT_EQ(GetApiError(stale.status()).http_status, 409);
  EXPECT_EQ(GetApiError(stale.status()).reason, "Conflict");

  auto unsupported = client_->Patch(ConfigMaps(), "default", "a", PatchType::kJson, json::array());
  EXPECT_EQ(unsupported.status().code(), StatusCode::kUnimplemented);  // 415

  server_.FailNext(1, 422, -1, "Invalid");
  auto invalid = client_->Get(ConfigMaps(), "default", "a");
  EXPECT_EQ(invalid.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(GetApiError(Status::Ok()).http_status, 0);
}

TEST_F(KubeClientTest, RetriesServerErrorsThenSucceeds) {
  ASSERT_TRUE(client_->Create(ConfigMaps(), "default", ConfigMap("a")).ok());
  int before = server_.total_requests();
  server_.FailNext(2, 500);
  auto got = client_->Get(ConfigMaps(), "default", "a");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(server_.total_requests() - before, 3);
}

TEST_F(KubeClientTest, GivesUpAfterMaxRetriesWithUnavailable) {
  int before = server_.total_requests();
  server_.FailNext(100, 503, -1, "ServiceUnavailable");
  auto got = client_->Get(ConfigMaps(), "default", "a");
  EXPECT_EQ(got.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(GetApiError(got.status()).http_status, 503);
  EXPECT_EQ(server_.total_requests() - before, 4);  // 1 + max_retries
  server_.FailNext(0, 200);
}

TEST_F(KubeClientTest, PostIsRetriedOn429HonouringRetryAfterButNotOn500) {
  int before = server_.total_requests();
  server_.FailNext(1, 429, 1, "TooManyRequests");
  auto start = std::chrono::steady_clock::now();
  auto created = client_->Create(ConfigMaps(), "default", ConfigMap("a"));
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_GE(elapsed, milliseconds(950));  // Retry-After: 1, not the 5 ms backoff
  EXPECT_EQ(server_.total_requests() - before, 2);

  before = server_.total_requests();
  server_.FailNext(1, 500);
  auto failed = client_->Create(ConfigMaps(), "default", ConfigMap("b"));
  EXPECT_EQ(failed.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(server_.total_requests() - before, 1);  // a POST may have been applied: no retry
}

TEST_F(KubeClientTest, ListFollowsContinueTokens) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(client_->Create(ConfigMaps(), "default", ConfigMap("cm" + std::to_string(i))).ok());
  }
  int before = server_.list_requests();
  auto list = client_->List(ConfigMaps(), "default", Limit(2));
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->items.size(), 5u);
  EXPECT_EQ(server_.list_requests() - before, 3);
}

TEST_F(KubeClientTest, ConnectionRefusedIsUnavailableWithoutHttpStatus) {
  KubeConfig config;
  config.server = "http://127.0.0.1:1";
  KubeClientOptions o = Fast();
  o.max_retries = 1;
  auto c = CreateKubeClient(config, o);
  ASSERT_TRUE(c.ok());
  auto got = (*c)->Get(ConfigMaps(), "default", "a");
  EXPECT_EQ(got.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(GetApiError(got.status()).http_status, 0);
}

// Runs a watch on a thread and collects its events.
struct WatchRun {
  std::mutex mu;
  std::vector<WatchEvent> events;
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
  Status result;
  std::thread thread;
  size_t stop_after = 0;  // on_event returns false after this many events (0 = never)

  void Start(KubeClient* client, const std::string& rv) {
    thread = std::thread([this, client, rv] {
      Status s = client->Watch(ConfigMaps(), "default", From(rv),
                               [this](const WatchEvent& e) {
                                 std::lock_guard<std::mutex> lock(mu);
                                 events.push_back(e);
                                 return stop_after == 0 || events.size() < stop_after;
                               },
                               &stop);
      std::lock_guard<std::mutex> lock(mu);
      result = s;
      done = true;
    });
  }
  size_t Count() {
    std::lock_guard<std::mutex> lock(mu);
    return events.size();
  }
  bool WaitFor(const std::function<bool()>& pred, milliseconds timeout = milliseconds(5000)) {
    return test_util::WaitFor(pred, timeout);
  }
  ~WatchRun() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
};

TEST_F(KubeClientTest, WatchStreamsEventsInOrderAndEndsWithTheServer) {
  ASSERT_TRUE(client_->Create(ConfigMaps(), "default", ConfigMap("before")).ok());
  std::string rv = server_.current_rv();
  WatchRun w;
  w.Start(client_.get(), rv);
  ASSERT_TRUE(w.WaitFor([&] { return server_.open_watches() == 1; }));
  server_.Put(kCms, ConfigMap("a"));
  server_.Put(kCms, ConfigMap("a", "v2"));
  server_.Remove(kCms, "a");
  ASSERT_TRUE(w.WaitFor([&] { return w.Count() == 3; })) << w.Count();
  {
    std::lock_guard<std::mutex> lock(w.mu);
    EXPECT_EQ(w.events[0].type, "ADDED");
    EXPECT_EQ(w.events[1].type, "MODIFIED");
    EXPECT_EQ(w.events[1].object["data"]["k"], "v2");
    EXPECT_EQ(w.events[2].type, "DELETED");
  }
  EXPECT_EQ(server_.watch_versions().back(), rv);
  server_.EndWatches();
  ASSERT_TRUE(w.WaitFor([&] { return w.done.load(); }));
  std::lock_guard<std::mutex> lock(w.mu);
  EXPECT_TRUE(w.result.ok()) << w.result.ToString();
}

TEST_F(KubeClientTest, WatchReplaysHistoryAfterTheGivenVersion) {
  std::string rv = server_.current_rv();
  server_.Put(kCms, ConfigMap("x"));
  server_.Put(kCms, ConfigMap("y"));
  WatchRun w;
  w.stop_after = 2;
  w.Start(client_.get(), rv);
  ASSERT_TRUE(w.WaitFor([&] { return w.done.load(); }));
  std::lock_guard<std::mutex> lock(w.mu);
  EXPECT_TRUE(w.result.ok());
  ASSERT_EQ(w.events.size(), 2u);
  EXPECT_EQ(w.events[0].object["metadata"]["name"], "x");
  EXPECT_EQ(w.events[1].object["metadata"]["name"], "y");
}

TEST_F(KubeClientTest, WatchStopsWithinAFractionOfASecond) {
  WatchRun w;
  w.Start(client_.get(), server_.current_rv());
  ASSERT_TRUE(w.WaitFor([&] { return server_.open_watches() == 1; }));
  auto start = std::chrono::steady_clock::now();
  w.stop = true;
  ASSERT_TRUE(w.WaitFor([&] { return w.done.load(); }, milliseconds(2000)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1000));
  std::lock_guard<std::mutex> lock(w.mu);
  EXPECT_EQ(w.result.code(), StatusCode::kCancelled);
}

TEST_F(KubeClientTest, WatchFromExpiredVersionIsGoneOverHttpOrInStream) {
  std::string old_rv = server_.current_rv();
  server_.Put(kCms, ConfigMap("a"));
  server_.Compact();
  auto s = client_->Watch(ConfigMaps(), "default", From(old_rv),
                          [](const WatchEvent&) { return true; });
  EXPECT_TRUE(IsGone(s)) << s.ToString();
  EXPECT_EQ(GetApiError(s).http_status, 410);

  server_.set_gone_mode(ScriptedApiServer::GoneMode::kInStream);
  std::vector<WatchEvent> events;
  s = client_->Watch(ConfigMaps(), "default", From(old_rv),
                     [&](const WatchEvent& e) {
                       events.push_back(e);
                       return true;
                     });
  EXPECT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, "ERROR");
  EXPECT_EQ(events[0].object["code"], 410);
}

TEST_F(KubeClientTest, ManyThreadsShareOneClient) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        std::string name = "t" + std::to_string(t) + "-" + std::to_string(i);
        if (client_->Create(ConfigMaps(), "default", ConfigMap(name)).ok() &&
            client_->Get(ConfigMaps(), "default", name).ok()) {
          ++ok;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 80);
  auto list = client_->List(ConfigMaps(), "default");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->items.size(), 80u);
}

}  // namespace
}  // namespace kvmesh::kube
