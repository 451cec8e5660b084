#include "router/router_config.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/config.h"

namespace kvmesh::router {
namespace {

StatusOr<RouterConfig> Load(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return LoadConfig<RouterConfig>(std::span<char* const>(argv.data(), argv.size()), MapEnvLookup(env),
                                  "KVMESH_ROUTER");
}

TEST(RouterConfigTest, DefaultsAreValid) {
  auto c = Load({});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->host, "127.0.0.1");
  EXPECT_EQ(c->routing.mode, "kv");
  EXPECT_EQ(c->disaggregation.mode, "conditional");
  EXPECT_EQ(c->limits.max_attempts, 3u);
  EXPECT_TRUE(c->Validate().ok());
}

TEST(RouterConfigTest, FlagsEnvAndNestedKeys) {
  auto c = Load({"--workers.urls", "http://127.0.0.1:8101=prefill,http://127.0.0.1:8102=decode",
                 "--routing.mode", "round_robin", "--limits.request-timeout", "2.5s",
                 "--disaggregation.min-remote-prefill-tokens", "0"},
                {{"KVMESH_ROUTER_ROUTING_MODE", "random"}, {"KVMESH_ROUTER_BLOCK_SIZE", "32"}});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->routing.mode, "round_robin");  // flag beats env
  EXPECT_EQ(c->block_size, 32u);
  ASSERT_EQ(c->workers.urls.size(), 2u);
  EXPECT_EQ(c->workers.urls[1], "http://127.0.0.1:8102=decode");
  EXPECT_EQ(c->limits.request_timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ(c->disaggregation.min_remote_prefill_tokens, 0u);
}

TEST(RouterConfigTest, BadValuesNameTheField) {
  struct Case {
    std::vector<std::string> args;
    std::string field;
  };
  const std::vector<Case> cases = {
      {{"--routing.mode", "fastest"}, "routing.mode"},
      {{"--routing.kv-cost", "vllm"}, "routing.kv_cost"},
      {{"--routing.temperature", "-1"}, "routing.temperature"},
      {{"--disaggregation.mode", "sometimes"}, "disaggregation.mode"},
      {{"--disaggregation.max-prefill-queue", "0"}, "disaggregation.max_prefill_queue"},
      {{"--workers.urls", "ftp://x:1"}, "workers.urls[0]"},
      {{"--workers.urls", "http://127.0.0.1:1,http://127.0.0.1:2=router"}, "workers.urls[1]"},
      {{"--workers.breaker-failures", "0"}, "workers.breaker_failures"},
      {{"--workers.max-inflight-per-worker", "0"}, "workers.max_inflight_per_worker"},
      {{"--limits.max-body-bytes", "10"}, "limits.max_body_bytes"},
      {{"--limits.max-attempts", "0"}, "limits.max_attempts"},
      {{"--limits.max-migrations", "100"}, "limits.max_migrations"},
      {{"--block-size", "0"}, "block_size"},
      {{"--http-threads", "0"}, "http_threads"},
      {{"--host", "not-an-ip"}, "host"},
  };
  for (const Case& c : cases) {
    auto r = Load(c.args);
    ASSERT_FALSE(r.ok()) << c.field;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(r.status().message().find(c.field), std::string::npos)
        << "want " << c.field << " in: " << r.status().message();
  }
}

TEST(RouterConfigTest, NonLoopbackHostNeedsApiKeys) {
  auto open = Load({"--host", "0.0.0.0"});
  ASSERT_FALSE(open.ok());
  EXPECT_NE(open.status().message().find("host"), std::string::npos);
  EXPECT_NE(open.status().message().find("auth.api_keys_file"), std::string::npos) << open.status().message();
  EXPECT_TRUE(Load({"--host", "0.0.0.0", "--auth.api-keys-file", "/etc/keys"}).ok());
  EXPECT_TRUE(Load({"--host", "127.0.0.2"}).ok());
  EXPECT_TRUE(Load({"--host", "::1"}).ok());
  EXPECT_FALSE(Load({"--host", "::"}).ok());
}

TEST(RouterConfigTest, SecretsAreRedacted) {
  auto c = Load({"--auth.admin-key", "adm-secret", "--auth.salt-secret", "salty"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const std::string rendered = RenderConfigJson(*c);
  EXPECT_EQ(rendered.find("adm-secret"), std::string::npos) << rendered;
  EXPECT_EQ(rendered.find("salty"), std::string::npos) << rendered;
}

}  // namespace
}  // namespace kvmesh::router
