#include "agent/agent_config.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/config.h"

namespace kvmesh::agent {
namespace {

StatusOr<AgentConfig> Load(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return LoadConfig<AgentConfig>(std::span<char* const>(argv.data(), argv.size()), MapEnvLookup(env),
                                 "KVMESH_AGENT");
}

TEST(AgentConfigTest, DefaultsAreValid) {
  auto c = Load({});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->parsed_role(), AgentRole::kAggregated);
  EXPECT_EQ(c->transfer.failure_policy(), TransferFailurePolicy::kRecompute);
  const engine::EngineOptions o = c->ToEngineOptions();
  EXPECT_EQ(o.block_size, 16);
  EXPECT_EQ(o.kv_cache_bytes, 256ll << 20);
}

TEST(AgentConfigTest, FlagsEnvAndNestedKeys) {
  auto c = Load({"--role", "decode", "--transfer.on-failure=fail", "--transfer.lease-ttl", "1.5s",
                 "--engine.block-size", "32"},
                {{"KVMESH_AGENT_TRANSFER_UCX_TLS", "tcp"}, {"KVMESH_AGENT_ROLE", "prefill"}});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->parsed_role(), AgentRole::kDecode);  // flag beats env
  EXPECT_EQ(c->transfer.failure_policy(), TransferFailurePolicy::kFail);
  EXPECT_EQ(c->transfer.lease_ttl, std::chrono::milliseconds(1500));
  EXPECT_EQ(c->transfer.ucx_tls, "tcp");
  EXPECT_EQ(c->ToEngineOptions().block_size, 32);
}

TEST(AgentConfigTest, BadValuesNameTheField) {
  struct Case {
    std::vector<std::string> args;
    std::string field;
  };
  const std::vector<Case> cases = {
      {{"--role", "router"}, "role"},
      {{"--transfer.on-failure", "retry"}, "transfer.on_failure"},
      {{"--engine.block-size", "0"}, "engine.block_size"},
      {{"--limits.max-body-bytes", "10"}, "limits.max_body_bytes"},
      {{"--limits.max-waiting", "0"}, "limits.max_waiting"},
      {{"--port", "70000"}, "port"},
      {{"--transfer.lease-ttl", "0"}, "transfer.lease_ttl"},
      {{"--http-threads", "0"}, "http_threads"},
  };
  for (const Case& c : cases) {
    auto r = Load(c.args);
    ASSERT_FALSE(r.ok()) << c.field;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.field), std::string::npos) << r.status().message();
  }
}

TEST(AgentConfigTest, YamlDocument) {
  auto c = ParseConfigText<AgentConfig>(
      "role: prefill\ntransfer:\n  lease_ttl: 2s\nevents:\n  topic: pool-a\n", "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->parsed_role(), AgentRole::kPrefill);
  EXPECT_EQ(c->transfer.lease_ttl, std::chrono::milliseconds(2000));
  EXPECT_EQ(c->events.topic, "pool-a");
  auto bad = ParseConfigText<AgentConfig>("role: [1, 2]\n", "agent.yaml");
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace kvmesh::agent
