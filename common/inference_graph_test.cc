#include "common/inference_graph.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace kvmesh::graph {
namespace {

constexpr char kHeader[] =
    "apiVersion: kvmesh.dev/v1alpha1\n"
    "kind: InferenceGraph\n"
    "metadata:\n"
    "  name: g1\n";

StatusOr<InferenceGraph> ParseSpec(const std::string& spec_body) {
  return ParseInferenceGraphYaml(std::string(kHeader) + "spec:\n" + spec_body);
}

::testing::AssertionResult FailsWith(const StatusOr<InferenceGraph>& g, const std::string& needle) {
  if (g.ok()) return ::testing::AssertionFailure() << "parsed OK, expected error containing: " << needle;
  if (g.status().code() != StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "code " << g.status().ToString();
  }
  if (g.status().message().find(needle) == std::string::npos) {
    return ::testing::AssertionFailure() << "message '" << g.status().message() << "' lacks '" << needle << "'";
  }
  return ::testing::AssertionSuccess();
}

TEST(InferenceGraphTest, EmptySpecGetsDefaults) {
  auto g = ParseInferenceGraphYaml(std::string(kHeader) + "spec: {}\n");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->name, "g1");
  EXPECT_EQ(g->namespace_, "");
  EXPECT_EQ(g->spec.model.source, "builtin:tiny");
  EXPECT_EQ(g->spec.kv_cache.block_size, 16u);
  EXPECT_EQ(g->spec.kv_cache.device_mib, 256u);
  EXPECT_EQ(g->spec.router.routing_mode, "kv");
  EXPECT_EQ(g->spec.router.kv_cost, "kvmesh");
  EXPECT_EQ(g->spec.disaggregation.mode, "conditional");
  EXPECT_EQ(g->spec.disaggregation.transfer_timeout, "10s");
  EXPECT_EQ(g->spec.prefill.replicas, 1);
  EXPECT_EQ(g->spec.decode.replicas, 1);
  EXPECT_EQ(g->spec.placement.policy, "single");
  EXPECT_EQ(g->spec.placement.topology_key, "kubernetes.io/hostname");
  EXPECT_EQ(g->ServedModelName(), "tiny");
}

TEST(InferenceGraphTest, ParsesEveryField) {
  auto g = ParseInferenceGraphYaml(R"(apiVersion: kvmesh.dev/v1alpha1
kind: InferenceGraph
metadata:
  name: llama
  namespace: serving
  generation: 7
  labels: {team: ml, tier: prod}
  uid: ignored-by-us
spec:
  model: {name: llama-8b, source: pvc://models/llama-3.1-8b}
  kvCache: {blockSize: 32, deviceMiB: 40960, hostMiB: 65536, diskMiB: 0}
  router: {replicas: 2, routingMode: least_loaded, kvCost: dynamo, overlapWeight: 1.5, temperature: 0.25}
  disaggregation:
    mode: always
    minRemotePrefillTokens: 128
    maxPrefillQueue: 4
    transferTimeout: 2500ms
    onFailure: fail
    transport: rc,cuda_copy
  prefill:
    replicas: 2
    gpusPerWorker: 1
    requests: {cpu: "8", memory: 64Gi}
    limits: {cpu: 16, memory: 96Gi}
    extraArgs: [--engine.max-num-seqs, "32"]
  decode: {replicas: 3, minReplicas: 1, maxReplicas: 6, gpusPerWorker: 2}
  sla: {ttftMs: 500, itlMs: 40.5}
  placement:
    policy: cache-locality
    topologyKey: topology.kubernetes.io/zone
    clusters:
      - {name: east, kubeconfigSecret: east-kc, region: us-east-1, gpuCapacity: 16}
      - {name: west, kubeconfigSecret: west-kc, region: us-west-2, gpuCapacity: 8}
    links:
      - {from: east, to: west, bandwidthGbps: 100, latencyMs: 35}
    model: {prefillTokensPerS: 1500, replicationWindowS: 60}
status:
  observedGeneration: 3
)");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->namespace_, "serving");
  EXPECT_EQ(g->generation, 7);
  EXPECT_EQ(g->labels.at("tier"), "prod");
  EXPECT_EQ(g->ServedModelName(), "llama-8b");
  EXPECT_EQ(g->spec.kv_cache.block_size, 32u);
  EXPECT_EQ(g->spec.kv_cache.host_mib, 65536u);
  EXPECT_EQ(g->spec.router.replicas, 2u);
  EXPECT_DOUBLE_EQ(g->spec.router.overlap_weight, 1.5);
  EXPECT_EQ(g->spec.disaggregation.transfer_timeout, "2500ms");
  EXPECT_EQ(g->spec.disaggregation.transport, "rc,cuda_copy");
  EXPECT_EQ(g->spec.prefill.requests.cpu, "8");
  EXPECT_EQ(g->spec.prefill.limits.cpu, "16");
  ASSERT_EQ(g->spec.prefill.extra_args.size(), 2u);
  EXPECT_EQ(g->spec.prefill.extra_args[1], "32");
  EXPECT_EQ(g->spec.decode.max_replicas, 6);
  EXPECT_DOUBLE_EQ(g->spec.sla.itl_ms, 40.5);
  ASSERT_EQ(g->spec.placement.clusters.size(), 2u);
  EXPECT_EQ(g->spec.placement.clusters[1].gpu_capacity, 8);
  ASSERT_EQ(g->spec.placement.links.size(), 1u);
  EXPECT_DOUBLE_EQ(g->spec.placement.links[0].latency_ms, 35);
  EXPECT_DOUBLE_EQ(g->spec.placement.model.prefill_tokens_per_s, 1500);
  EXPECT_DOUBLE_EQ(g->spec.placement.model.decode_tokens_per_s, 0);  // absent: the default
  EXPECT_DOUBLE_EQ(g->spec.placement.model.replication_window_s, 60);
}

TEST(InferenceGraphTest, UnknownSpecKeyNamesPathKnownKeysAndLine) {
  auto g = ParseSpec("  decode:\n    replicsa: 2\n");
  ASSERT_TRUE(FailsWith(g, "spec.decode.replicsa: unknown field; known: replicas, minReplicas"));
  EXPECT_TRUE(FailsWith(g, "(line 7)"));
  EXPECT_TRUE(FailsWith(ParseSpec("  kvcache: {}\n"), "spec.kvcache: unknown field"));
  EXPECT_TRUE(FailsWith(ParseSpec("  placement:\n    clusters:\n      - {name: a, gpus: 1}\n"),
                        "spec.placement.clusters[0].gpus: unknown field"));
  EXPECT_TRUE(FailsWith(ParseInferenceGraphYaml(std::string(kHeader) + "spec: {}\nspecs: {}\n"),
                        "specs: unknown top-level field"));
}

TEST(InferenceGraphTest, WrongTypes) {
  EXPECT_TRUE(FailsWith(ParseSpec("  decode: {replicas: two}\n"), "spec.decode.replicas: expected an integer, got \"two\""));
  EXPECT_TRUE(FailsWith(ParseSpec("  decode: {replicas: \"2\"}\n"), "spec.decode.replicas: expected an integer"));
  EXPECT_TRUE(FailsWith(ParseSpec("  decode: {replicas: 1.5}\n"), "spec.decode.replicas: expected an integer"));
  EXPECT_TRUE(FailsWith(ParseSpec("  decode: [1]\n"), "spec.decode: expected a mapping, got a list"));
  EXPECT_TRUE(FailsWith(ParseSpec("  model: {source: [a, b]}\n"), "spec.model.source: expected a string, got a list"));
  EXPECT_TRUE(FailsWith(ParseSpec("  router: {overlapWeight: heavy}\n"), "spec.router.overlapWeight: expected a finite number"));
  EXPECT_TRUE(FailsWith(ParseSpec("  kvCache: {blockSize: -1}\n"), "spec.kvCache.blockSize: must be in [0, 4294967295], got -1"));
  EXPECT_TRUE(FailsWith(ParseSpec("  prefill: {extraArgs: --x}\n"), "spec.prefill.extraArgs: expected a list of strings"));
  EXPECT_TRUE(FailsWith(ParseSpec("  placement: {clusters: {a: 1}}\n"), "spec.placement.clusters: expected a list"));
}

TEST(InferenceGraphTest, ValidateRangesAndEnumsWithLine) {
  auto g = ParseSpec("  decode:\n    replicas: -1\n");
  EXPECT_TRUE(FailsWith(g, "spec.decode.replicas: must be in [0, 1024], got -1 (line 7)"));
  EXPECT_TRUE(FailsWith(ParseSpec("  decode: {replicas: 0}\n"), "spec.decode.replicas: must be >= 1"));
  EXPECT_TRUE(FailsWith(ParseSpec("  router: {routingMode: fastest}\n"),
                        "spec.router.routingMode: must be one of kv, round_robin, random, least_loaded, got \"fastest\""));
  EXPECT_TRUE(FailsWith(ParseSpec("  router: {kvCost: magic}\n"), "spec.router.kvCost: must be one of"));
  EXPECT_TRUE(FailsWith(ParseSpec("  router: {temperature: -0.5}\n"), "spec.router.temperature: must be a finite number >= 0"));
  EXPECT_TRUE(FailsWith(ParseSpec("  kvCache: {blockSize: 0}\n"), "spec.kvCache.blockSize: must be in [1, 1024], got 0"));
  EXPECT_TRUE(FailsWith(ParseSpec("  disaggregation: {mode: sometimes}\n"), "spec.disaggregation.mode: must be one of off"));
  EXPECT_TRUE(FailsWith(ParseSpec("  disaggregation: {transferTimeout: soon}\n"), "spec.disaggregation.transferTimeout"));
  EXPECT_TRUE(FailsWith(ParseSpec("  disaggregation: {transferTimeout: 0.5ms}\n"), "whole number of milliseconds"));
  EXPECT_TRUE(FailsWith(ParseSpec("  disaggregation: {onFailure: retry}\n"), "spec.disaggregation.onFailure"));
  EXPECT_TRUE(FailsWith(ParseSpec("  disaggregation: {mode: \"off\"}\n"),
                        "spec.prefill.replicas: must be 0 when spec.disaggregation.mode is off"));
  EXPECT_TRUE(FailsWith(ParseSpec("  disaggregation: {mode: always}\n  prefill: {replicas: 0}\n"),
                        "spec.prefill.replicas: must be >= 1 when spec.disaggregation.mode is always"));
  EXPECT_TRUE(FailsWith(ParseSpec("  decode: {replicas: 2, minReplicas: 3}\n"), "spec.decode.minReplicas"));
  EXPECT_TRUE(FailsWith(ParseSpec("  decode: {replicas: 2, maxReplicas: 1}\n"), "spec.decode.maxReplicas"));
  EXPECT_TRUE(FailsWith(ParseSpec("  decode: {requests: {memory: lots}}\n"), "spec.decode.requests.memory"));
  EXPECT_TRUE(FailsWith(ParseSpec("  model: {source: \"pvc://\"}\n"), "spec.model.source: must be pvc://CLAIM/PATH"));
  EXPECT_TRUE(FailsWith(ParseSpec("  placement: {policy: everywhere}\n"), "spec.placement.policy"));
  EXPECT_TRUE(FailsWith(ParseSpec("  placement:\n    clusters: [{name: a}, {name: a}]\n"),
                        "spec.placement.clusters[1].name: duplicate cluster"));
  EXPECT_TRUE(FailsWith(ParseSpec("  placement:\n    clusters: [{name: a}, {name: b}]\n    links: [{from: a, to: c}]\n"),
                        "spec.placement.links[0].to: names no cluster"));
  EXPECT_TRUE(FailsWith(ParseSpec("  placement:\n    model: {prefillTokensPerS: -1}\n"),
                        "spec.placement.model.prefillTokensPerS"));
  EXPECT_TRUE(FailsWith(ParseSpec("  placement:\n    model: {prefillTokens: 5}\n"),
                        "spec.placement.model.prefillTokens: unknown field"));
  EXPECT_TRUE(FailsWith(ParseInferenceGraphYaml("apiVersion: kvmesh.dev/v1alpha1\nkind: InferenceGraph\n"
                                                "metadata: {name: Bad_Name}\nspec: {}\n"),
                        "metadata.name: must be a DNS label"));
}

TEST(InferenceGraphTest, HeaderAndSyntaxErrors) {
  EXPECT_TRUE(FailsWith(ParseInferenceGraphYaml("apiVersion: v1\nkind: InferenceGraph\nspec: {}\n"),
                        "apiVersion: must be kvmesh.dev/v1alpha1, got \"v1\" (line 1)"));
  EXPECT_TRUE(FailsWith(ParseInferenceGraphYaml("apiVersion: kvmesh.dev/v1alpha1\nkind: Deployment\nspec: {}\n"),
                        "kind: must be InferenceGraph"));
  EXPECT_TRUE(FailsWith(ParseInferenceGraphYaml("apiVersion: kvmesh.dev/v1alpha1\nkind: InferenceGraph\n"),
                        "spec: missing"));
  EXPECT_TRUE(FailsWith(ParseInferenceGraphYaml(std::string(kHeader) + "spec: {decode: [\n"), "YAML syntax error at line"));
  EXPECT_TRUE(FailsWith(ParseInferenceGraphYaml(""), "empty document"));
  EXPECT_TRUE(FailsWith(ParseInferenceGraphYaml(std::string(kHeader) + "spec: {}\n---\n" + kHeader + "spec: {}\n"),
                        "expected one YAML document, got 2"));
  EXPECT_TRUE(FailsWith(ParseInferenceGraphYaml("- a\n- b\n"), "expected a mapping with apiVersion"));
}

TEST(InferenceGraphTest, JsonRoundTrip) {
  InferenceGraph g = DefaultLocalGraph();
  g.namespace_ = "ns1";
  g.generation = 4;
  g.labels["app"] = "kvmesh";
  g.spec.model.source = "/models/x/";
  g.spec.router.temperature = 0.125;
  g.spec.prefill.extra_args = {"--a", "b c"};
  g.spec.decode.requests.memory = "8Gi";
  g.spec.sla.ttft_ms = 250;
  g.spec.placement.policy = "spread";
  g.spec.placement.clusters = {{"east", "kc-east", "r1", 4}, {"west", "kc-west", "r2", 2}};
  g.spec.placement.links = {{"east", "west", 25, 12.5}};
  g.spec.placement.model.decode_tokens_per_s = 3000;
  ASSERT_TRUE(g.Validate().ok()) << g.Validate().ToString();
  std::string json = InferenceGraphToJson(g);
  auto back = InferenceGraphFromJson(json);
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << json;
  EXPECT_EQ(InferenceGraphToJson(*back), json);
  EXPECT_EQ(back->namespace_, "ns1");
  EXPECT_EQ(back->generation, 4);
  EXPECT_EQ(back->spec.prefill.extra_args[1], "b c");
  EXPECT_DOUBLE_EQ(back->spec.router.temperature, 0.125);
  EXPECT_EQ(back->spec.placement.links[0].to, "west");
  EXPECT_DOUBLE_EQ(back->spec.placement.model.decode_tokens_per_s, 3000);
  EXPECT_EQ(back->ServedModelName(), "x");
  // The JSON is also valid YAML input.
  auto via_yaml = ParseInferenceGraphYaml(json);
  ASSERT_TRUE(via_yaml.ok()) << via_yaml.status().ToString();
  EXPECT_EQ(InferenceGraphToJson(*via_yaml), json);
}

TEST(InferenceGraphTest, JsonIsTypeStrictAndIgnoresServerFields) {
  auto ok = InferenceGraphFromJson(R"({"apiVersion":"kvmesh.dev/v1alpha1","kind":"InferenceGraph",
    "metadata":{"name":"a","uid":"123","resourceVersion":"9","generation":2},
    "spec":{"decode":{"replicas":2}},"status":{"conditions":[]}})");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->spec.decode.replicas, 2);
  EXPECT_EQ(ok->generation, 2);
  EXPECT_TRUE(FailsWith(InferenceGraphFromJson(R"({"apiVersion":"kvmesh.dev/v1alpha1","kind":"InferenceGraph",
    "metadata":{"name":"a"},"spec":{"decode":{"replicas":"2"}}})"), "spec.decode.replicas: expected an integer"));
  EXPECT_TRUE(FailsWith(InferenceGraphFromJson(R"({"apiVersion":"kvmesh.dev/v1alpha1","kind":"InferenceGraph",
    "metadata":{"name":"a"},"spec":{"decod":{}}})"), "spec.decod: unknown field"));
  EXPECT_TRUE(FailsWith(InferenceGraphFromJson("{not json"), "InferenceGraph JSON"));
}

TEST(InferenceGraphTest, DefaultLocalGraph) {
  InferenceGraph g = DefaultLocalGraph();
  EXPECT_TRUE(g.Validate().ok());
  EXPECT_EQ(g.spec.model.source, "builtin:tiny");
  EXPECT_EQ(g.spec.prefill.replicas, 1);
  EXPECT_EQ(g.spec.decode.replicas, 1);
  EXPECT_EQ(g.spec.router.replicas, 1u);
  EXPECT_EQ(g.spec.disaggregation.mode, "conditional");
  EXPECT_EQ(g.ServedModelName(), "tiny");
}

TEST(InferenceGraphTest, ServedModelName) {
  InferenceGraph g;
  g.spec.model.source = "builtin:small";
  EXPECT_EQ(g.ServedModelName(), "small");
  g.spec.model.source = "pvc://models/meta/llama-3.1-8b";
  EXPECT_EQ(g.ServedModelName(), "llama-3.1-8b");
  g.spec.model.name = "served";
  EXPECT_EQ(g.ServedModelName(), "served");
}

TEST(InferenceGraphTest, LoadFileNamesPathOnError) {
  std::string path = ::testing::TempDir() + "/ig_test_bad.yaml";
  {
    std::ofstream out(path);
    out << kHeader << "spec:\n  decode: {replicas: x}\n";
  }
  auto g = LoadInferenceGraphFile(path);
  EXPECT_TRUE(FailsWith(g, path + ": spec.decode.replicas: expected an integer"));
  std::remove(path.c_str());
  auto missing = LoadInferenceGraphFile(path);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}


// Every graph in examples/ parses and validates; local-tiny.yaml is the embedded default.
TEST(InferenceGraphTest, ExamplesParse) {
  const char* src = std::getenv("KVMESH_SOURCE_DIR");
  std::filesystem::path dir = std::filesystem::path(src != nullptr ? src : ".") / "examples";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "no examples/ at " << dir;
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    auto g = LoadInferenceGraphFile(e.path().string());
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    ++n;
  }
  EXPECT_GE(n, 4);
  auto tiny = LoadInferenceGraphFile((dir / "local-tiny.yaml").string());
  ASSERT_TRUE(tiny.ok()) << tiny.status().ToString();
  EXPECT_EQ(InferenceGraphToJson(*tiny), InferenceGraphToJson(DefaultLocalGraph()));
  auto k8s = LoadInferenceGraphFile((dir / "kubernetes-llama.yaml").string());
  ASSERT_TRUE(k8s.ok());
  EXPECT_EQ(k8s->spec.placement.clusters.size(), 2u);
  EXPECT_EQ(k8s->spec.decode.gpus_per_worker, 1);
}

}  // namespace
}  // namespace kvmesh::graph
