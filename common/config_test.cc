#include "common/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvmesh {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct KvCacheSection {
  uint32_t block_size = 16;
  std::chrono::milliseconds lease_ttl{30000};
  template <class V>
  void Visit(V& v) {
    v("block_size", block_size, "tokens per KV block");
    v("lease_ttl", lease_ttl, "prefill lease lifetime");
  }
  Status Validate() const {
    if (block_size == 0) return InvalidArgumentError("block_size must be > 0, got 0");
    return Status::Ok();
  }
};

struct TestConfig {
  std::string listen = "127.0.0.1:8000";
  bool verbose = false;
  int32_t workers = 4;
  int64_t offset = -1;
  uint64_t max_bytes = 1024;
  double overlap_weight = 1.0;
  std::vector<std::string> models = {"tiny"};
  std::string api_key;
  KvCacheSection kv_cache;
  template <class V>
  void Visit(V& v) {
    v("listen", listen, "address to serve on");
    v("verbose", verbose, "log more");
    v("workers", workers, "worker threads");
    v("offset", offset, "an int64");
    v("max_bytes", max_bytes, "a uint64");
    v("overlap_weight", overlap_weight, "router overlap weight");
    v("models", models, "served models");
    v("api_key", api_key, "bearer token", kConfigSecret);
    v("kv_cache", kv_cache, "KV cache");
  }
  Status Validate() const {
    if (workers <= 0) return InvalidArgumentError("workers must be > 0, got " + std::to_string(workers));
    return Status::Ok();
  }
};

// Owns argv storage for a test.
class Args {
 public:
  Args(std::initializer_list<std::string> a) : strings_(a) {
    for (auto& s : strings_) ptrs_.push_back(s.data());
  }
  std::span<char* const> span() const { return ptrs_; }

 private:
  std::vector<std::string> strings_;
  std::vector<char*> ptrs_;
};

EnvLookup NoEnv() { return MapEnvLookup({}); }

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string path = testing::TempDir() + "kvmesh_config_test_" + name;
  std::ofstream(path) << text;
  return path;
}

StatusOr<TestConfig> Load(const Args& args, EnvLookup env = NoEnv()) {
  return LoadConfig<TestConfig>(args.span(), env, "KVMESH_TEST");
}

void ExpectError(const Status& st, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  for (const auto& p : parts) EXPECT_THAT(st.message(), HasSubstr(p));
}

TEST(Config, DefaultsWhenNothingIsGiven) {
  auto c = Load(Args{});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen, "127.0.0.1:8000");
  EXPECT_EQ(c->kv_cache.block_size, 16u);
  EXPECT_EQ(c->kv_cache.lease_ttl, std::chrono::seconds(30));
  EXPECT_THAT(c->models, ElementsAre("tiny"));
}

TEST(Config, YamlFileSetsEveryType) {
  auto path = WriteTemp("all.yaml", R"(
listen: 0.0.0.0:9000
verbose: true
workers: 8
offset: -9223372036854775808
max_bytes: 18446744073709551615
overlap_weight: 0.25
models: [a, b]
kv_cache:
  block_size: 32
  lease_ttl: 1.5s
)");
  auto c = Load(Args{"--config", path});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen, "0.0.0.0:9000");
  EXPECT_TRUE(c->verbose);
  EXPECT_EQ(c->workers, 8);
  EXPECT_EQ(c->offset, INT64_MIN);
  EXPECT_EQ(c->max_bytes, UINT64_MAX);
  EXPECT_DOUBLE_EQ(c->overlap_weight, 0.25);
  EXPECT_THAT(c->models, ElementsAre("a", "b"));
  EXPECT_EQ(c->kv_cache.block_size, 32u);
  EXPECT_EQ(c->kv_cache.lease_ttl, std::chrono::milliseconds(1500));
}

TEST(Config, JsonFile) {
  auto path = WriteTemp("c.json", R"({"workers": 2, "kv_cache": {"block_size": 64}, "models": []})");
  auto c = Load(Args{"--config=" + path});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->workers, 2);
  EXPECT_EQ(c->kv_cache.block_size, 64u);
  EXPECT_TRUE(c->models.empty());
}

TEST(Config, PrecedenceDefaultsFileEnvFlags) {
  auto path = WriteTemp("prec.yaml", "workers: 2\nlisten: file\nkv_cache: {block_size: 32}\n");
  auto env = MapEnvLookup({{"KVMESH_TEST_LISTEN", "env"}, {"KVMESH_TEST_KV_CACHE_BLOCK_SIZE", "64"}});
  auto c = Load(Args{"--config", path, "--kv-cache.block-size", "128"}, env);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->workers, 2);                   // file over default
  EXPECT_EQ(c->listen, "env");                // env over file
  EXPECT_EQ(c->kv_cache.block_size, 128u);    // flag over env over file
  EXPECT_EQ(c->overlap_weight, 1.0);          // default
}

TEST(Config, ConfigPathFromEnv) {
  auto path = WriteTemp("envpath.yaml", "workers: 3\n");
  auto c = Load(Args{}, MapEnvLookup({{"KVMESH_TEST_CONFIG", path}}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->workers, 3);
}

TEST(Config, FlagSpellings) {
  auto c = Load(Args{"--kv_cache.block_size=8", "--verbose", "--models", "x,y,z", "--offset", "-5",
                     "--kv-cache.lease-ttl", "250ms"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->kv_cache.block_size, 8u);
  EXPECT_TRUE(c->verbose);
  EXPECT_THAT(c->models, ElementsAre("x", "y", "z"));
  EXPECT_EQ(c->offset, -5);
  EXPECT_EQ(c->kv_cache.lease_ttl, std::chrono::milliseconds(250));
  auto d = Load(Args{"--verbose=true", "--no-verbose"});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->verbose);
}

TEST(Config, PositionalArgumentsAndHelp) {
  auto r = LoadConfigWithArgs<TestConfig>(Args{"graph.yaml", "--workers", "2", "--", "--not-a-flag"}.span(),
                                          NoEnv(), "KVMESH_TEST");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(r->positional, ElementsAre("graph.yaml", "--not-a-flag"));
  EXPECT_EQ(r->config.workers, 2);
  auto h = LoadConfigWithArgs<TestConfig>(Args{"--help", "--workers", "0"}.span(), NoEnv(), "KVMESH_TEST");
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->help_requested);
  ExpectError(Load(Args{"extra"}).status(), {"unexpected argument 'extra'"});
}

TEST(Config, UnknownKeyInFileNamesPathAndLine) {
  auto path = WriteTemp("unknown.yaml", "workers: 2\nkv_cache:\n  blok_size: 3\n");
  ExpectError(Load(Args{"--config", path}).status(), {path + ":3:3", "unknown key 'kv_cache.blok_size'"});
}

TEST(Config, WrongTypeNamesKeyAndValue) {
  ExpectError(ParseConfigText<TestConfig>("workers: lots\n", "t.yaml").status(),
              {"t.yaml:1:10", "key 'workers'", "expected int32", "'lots'"});
  ExpectError(ParseConfigText<TestConfig>("verbose: maybe\n", "t.yaml").status(),
              {"key 'verbose'", "expected bool", "'maybe'"});
  ExpectError(ParseConfigText<TestConfig>("models: abc\n", "t.yaml").status(),
              {"key 'models'", "expected a list of strings"});
  ExpectError(ParseConfigText<TestConfig>("kv_cache: 5\n", "t.yaml").status(),
              {"key 'kv_cache' must be a mapping"});
  ExpectError(ParseConfigText<TestConfig>("listen: [1, 2]\n", "t.yaml").status(),
              {"key 'listen'", "expected string, got a sequence"});
  ExpectError(ParseConfigText<TestConfig>("overlap_weight: 1.0x\n", "t.yaml").status(),
              {"key 'overlap_weight'", "'1.0x'"});
  ExpectError(ParseConfigText<TestConfig>("kv_cache: {lease_ttl: 10}\n", "t.yaml").status(),
              {"key 'kv_cache.lease_ttl'", "duration", "'10'"});
  ExpectError(ParseConfigText<TestConfig>("kv_cache: {lease_ttl: 1.5us}\n", "t.yaml").status(),
              {"whole number"});
  ExpectError(ParseConfigText<TestConfig>("workers:\n", "t.yaml").status(),
              {"key 'workers'", "got null"});
}

TEST(Config, OutOfRangeIntegers) {
  ExpectError(ParseConfigText<TestConfig>("workers: 2147483648\n", "t.yaml").status(),
              {"key 'workers'", "2147483648", "out of range for int32"});
  ExpectError(ParseConfigText<TestConfig>("kv_cache: {block_size: -1}\n", "t.yaml").status(),
              {"key 'kv_cache.block_size'", "-1", "out of range for uint32"});
  ExpectError(ParseConfigText<TestConfig>("max_bytes: 18446744073709551616\n", "t.yaml").status(),
              {"out of range for uint64"});
  ExpectError(Load(Args{"--kv-cache.block-size=4294967296"}).status(),
              {"flag --kv-cache.block-size", "out of range for uint32"});
}

TEST(Config, UnknownFlagAndMissingValue) {
  ExpectError(Load(Args{"--wokers", "3"}).status(), {"unknown flag --wokers"});
  ExpectError(Load(Args{"-w"}).status(), {"unknown flag -w"});
  ExpectError(Load(Args{"--workers"}).status(), {"flag --workers needs a value"});
  ExpectError(Load(Args{"--workers", "--verbose"}).status(), {"flag --workers needs a value"});
  ExpectError(Load(Args{"--config"}).status(), {"flag --config needs a value"});
  ExpectError(Load(Args{"--no-workers"}).status(), {"unknown flag --no-workers"});
  ExpectError(Load(Args{"--workers=abc"}).status(), {"flag --workers", "expected int32", "'abc'"});
}

TEST(Config, BadEnvValueNamesVariable) {
  ExpectError(Load(Args{}, MapEnvLookup({{"KVMESH_TEST_WORKERS", "many"}})).status(),
              {"env KVMESH_TEST_WORKERS", "'many'"});
}

TEST(Config, MalformedYamlHasLineAndColumn) {
  auto path = WriteTemp("bad.yaml", "workers: 2\nlisten: [unclosed\n");
  auto st = Load(Args{"--config", path}).status();
  ExpectError(st, {path + ":", "invalid YAML"});
  ExpectError(ParseConfigText<TestConfig>("a: b: c\n", "x.yaml").status(), {"x.yaml:1:", "invalid YAML"});
  ExpectError(ParseConfigText<TestConfig>("- 1\n- 2\n", "x.yaml").status(), {"must be a mapping"});
}

TEST(Config, MalformedJsonHasLineAndColumn) {
  ExpectError(ParseConfigText<TestConfig>("{\n  \"workers\": 2,\n}\n", "c.json").status(),
              {"c.json", "invalid JSON", "line 3, column 1"});
}

TEST(Config, UnreadableFile) {
  ExpectError(Load(Args{"--config", "/nonexistent/kvmesh.yaml"}).status(),
              {"cannot read config file '/nonexistent/kvmesh.yaml'"});
}

TEST(Config, ValidateFailuresNameTheField) {
  ExpectError(Load(Args{"--workers", "0"}).status(), {"workers must be > 0, got 0"});
  // Nested Validate() runs too and is prefixed with the section's key.
  ExpectError(Load(Args{"--kv-cache.block-size", "0"}).status(), {"kv_cache: block_size must be > 0"});
}

TEST(Config, EmptyFileMeansDefaults) {
  auto c = ParseConfigText<TestConfig>("", "empty.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->workers, 4);
}

TEST(Config, RenderJsonIsNestedAndRedactsSecrets) {
  TestConfig c;
  c.api_key = "hunter2";
  c.kv_cache.lease_ttl = std::chrono::milliseconds(250);
  auto j = nlohmann::json::parse(RenderConfigJson(c));
  EXPECT_EQ(j["kv_cache"]["block_size"], 16);
  EXPECT_EQ(j["kv_cache"]["lease_ttl"], "250ms");
  EXPECT_EQ(j["api_key"], "<redacted>");
  EXPECT_EQ(j["models"], nlohmann::json::array({"tiny"}));
  EXPECT_EQ(RenderConfigJson(c).find("hunter2"), std::string::npos);
  // The rendered JSON loads back to the same config (secrets aside).
  c.api_key.clear();
  auto back = ParseConfigText<TestConfig>(RenderConfigJson(c, 2), "rendered.json");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(RenderConfigJson(*back), RenderConfigJson(c));
}

TEST(Config, HelpListsFlagEnvAndDefault) {
  std::string help = RenderConfigHelp<TestConfig>("KVMESH_TEST");
  EXPECT_THAT(help, HasSubstr("--kv-cache.block-size <uint32>  tokens per KV block (default 16) "
                              "[env KVMESH_TEST_KV_CACHE_BLOCK_SIZE]"));
  EXPECT_THAT(help, HasSubstr("--config PATH"));
  EXPECT_THAT(help, HasSubstr("[env KVMESH_TEST_CONFIG]"));
}

struct DuplicateKeys {
  int32_t a = 0;
  int32_t b = 0;
  template <class V>
  void Visit(V& v) {
    v("a", a, "");
    v("a", b, "");
  }
};
struct ReservedKey {
  std::string config;
  template <class V>
  void Visit(V& v) {
    v("config", config, "");
  }
};

TEST(Config, BadDeclarationsAreInternalErrors) {
  auto d = LoadConfig<DuplicateKeys>(Args{}.span(), NoEnv(), "X");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kInternal);
  auto r = LoadConfig<ReservedKey>(Args{}.span(), NoEnv(), "X");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

struct RepeatableList {
  std::vector<std::string> links = {"default"};
  std::vector<std::string> tags = {"t"};
  template <class V>
  void Visit(V& v) {
    v("link", links, "a link", kConfigRepeatable);
    v("tags", tags, "tags");
  }
};

TEST(Config, RepeatableListFlagsAppend) {
  auto r = LoadConfig<RepeatableList>(Args{"--link", "a", "--tags", "x", "--link=b,c", "--tags", "y"}.span(),
                                      MapEnvLookup({{"X_LINK", "env"}}), "X");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(r->links, ElementsAre("a", "b", "c"));  // the flag replaces env, then appends
  EXPECT_THAT(r->tags, ElementsAre("y"));             // not repeatable: last wins
  auto e = LoadConfig<RepeatableList>(Args{}.span(), MapEnvLookup({{"X_LINK", "env"}}), "X");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(e->links, ElementsAre("env"));
  EXPECT_THAT(RenderConfigHelp<RepeatableList>("X"), HasSubstr("a link (default [\"default\"]) (repeatable)"));
}

}  // namespace
}  // namespace kvmesh
