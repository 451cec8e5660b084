// BuildDesired on the examples/ graphs: golden properties of every object (owner references,
// labels, GPU limits, args from the spec, probes, security context), and the router's files
// checked with the router's own parsers (ParseWorkerFile, RouterConfig loading).
#include "operator/controller/desired_state.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/config.h"
#include "router/router_config.h"
#include "router/worker_registry.h"

namespace kvmesh::controller {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string SourceDir() {
  const char* d = std::getenv("KVMESH_SOURCE_DIR");
  return d != nullptr ? d : ".";
}

OwnedGraph LoadExample(const std::string& file, const std::string& ns = "serving") {
  auto g = graph::LoadInferenceGraphFile(SourceDir() + "/examples/" + file);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  OwnedGraph og;
  og.graph = *g;
  og.meta.name = og.graph.name;
  og.meta.namespace_ = og.graph.namespace_.empty() ? ns : og.graph.namespace_;
  og.meta.uid = "uid-" + og.graph.name;
  og.meta.generation = 3;
  return og;
}

std::vector<std::string> InferenceGraphExamples() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(SourceDir() + "/examples")) {
    if (e.path().extension() != ".yaml") continue;
    std::ifstream in(e.path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find("kind: InferenceGraph") != std::string::npos) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

const json* Find(const DesiredObjects& objs, const std::string& resource, const std::string& name) {
  for (const auto& d : objs) {
    if (d.resource == resource && d.object["metadata"]["name"] == name) return &d.object;
  }
  return nullptr;
}

std::vector<std::string> Args(const json& deployment) {
  return deployment["spec"]["template"]["spec"]["containers"][0]["args"].get<std::vector<std::string>>();
}

// The value after `flag` in args ("" when absent).
std::string Flag(const std::vector<std::string>& args, const std::string& flag) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == flag) return args[i + 1];
  }
  return "";
}

std::vector<WorkerPod> SomeWorkers() {
  return {{"g-decode-abc", "127.0.0.12", "decode"},
          {"g-prefill-xyz", "127.0.0.11", "prefill"},
          {"g-decode-aaa", "127.0.0.13", "decode"}};
}

TEST(DesiredStateTest, ExamplesAreFound) {
  auto ex = InferenceGraphExamples();
  EXPECT_GE(ex.size(), 3u);
  EXPECT_NE(std::find(ex.begin(), ex.end(), "kubernetes-llama.yaml"), ex.end());
}

TEST(DesiredStateTest, EveryObjectIsOwnedLabelledAndNamespaced) {
  OperatorSettings s;
  for (const std::string& file : InferenceGraphExamples()) {
    SCOPED_TRACE(file);
    OwnedGraph og = LoadExample(file);
    DesiredObjects objs = BuildDesired(og, s, SomeWorkers());
    ASSERT_GE(objs.size(), 6u);
    for (const DesiredObject& d : objs) {
      SCOPED_TRACE(d.Key());
      const json& md = d.object["metadata"];
      EXPECT_TRUE(d.object.contains("apiVersion"));
      EXPECT_TRUE(d.object.contains("kind"));
      EXPECT_EQ(md["namespace"], og.meta.namespace_);
      EXPECT_EQ(md["name"].get<std::string>().rfind(og.meta.name + "-", 0), 0u);
      ASSERT_EQ(md["ownerReferences"].size(), 1u);
      const json& ref = md["ownerReferences"][0];
      EXPECT_EQ(ref["apiVersion"], "kvmesh.dev/v1alpha1");
      EXPECT_EQ(ref["kind"], "InferenceGraph");
      EXPECT_EQ(ref["name"], og.meta.name);
      EXPECT_EQ(ref["uid"], og.meta.uid);
      EXPECT_EQ(ref["controller"], true);
      EXPECT_EQ(ref["blockOwnerDeletion"], true);
      EXPECT_EQ(md["labels"]["app.kubernetes.io/name"], "kvmesh");
      EXPECT_EQ(md["labels"]["app.kubernetes.io/instance"], og.meta.name);
      EXPECT_EQ(md["labels"]["app.kubernetes.io/managed-by"], "kvmesh-operator");
      EXPECT_EQ(md["labels"]["kvmesh.dev/graph"], og.meta.name);
      const std::string component = md["labels"]["app.kubernetes.io/component"];
      EXPECT_TRUE(component == "prefill" || component == "decode" || component == "router") << component;
    }
  }
}

TEST(DesiredStateTest, WorkerPodsAreHardenedProbedAndBindTheirPodIp) {
  OperatorSettings s;
  for (const std::string& file : InferenceGraphExamples()) {
    SCOPED_TRACE(file);
    OwnedGraph og = LoadExample(file);
    DesiredObjects objs = BuildDesired(og, s, {});
    for (const DesiredObject& d : objs) {
      if (d.resource != "deployments") continue;
      SCOPED_TRACE(d.Key());
      const json& spec = d.object["spec"];
      const json& pod = spec["template"]["spec"];
      // The selector matches the template's labels (the API server rejects it otherwise).
      for (const auto& [k, v] : spec["selector"]["matchLabels"].items()) {
        EXPECT_EQ(spec["template"]["metadata"]["labels"][k], v);
      }
      EXPECT_EQ(pod["automountServiceAccountToken"], false);
      EXPECT_EQ(pod["securityContext"]["runAsNonRoot"], true);
      EXPECT_EQ(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
      EXPECT_GT(pod["terminationGracePeriodSeconds"].get<int>(), 30);  // > the agent's 30 s drain
      const json& c = pod["containers"][0];
      EXPECT_EQ(c["securityContext"]["allowPrivilegeEscalation"], false);
      EXPECT_EQ(c["securityContext"]["capabilities"]["drop"], json::array({"ALL"}));
      EXPECT_EQ(c["securityContext"]["readOnlyRootFilesystem"], true);
      EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"], "/ready");
      EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"], "/health");
      EXPECT_EQ(c["startupProbe"]["httpGet"]["path"], "/health");
      EXPECT_GE(c["startupProbe"]["failureThreshold"].get<int>() * c["startupProbe"]["periodSeconds"].get<int>(), 600);
      EXPECT_EQ(c["env"][0], json::parse(R"({"name":"POD_IP","valueFrom":{"fieldRef":{"fieldPath":"status.podIP"}}})"));
      std::vector<std::string> args = Args(d.object);
      EXPECT_EQ(Flag(args, "--host"), "$(POD_IP)");
      EXPECT_EQ(pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
                   ["podAffinityTerm"]["topologyKey"],
                og.graph.spec.placement.topology_key);
      EXPECT_EQ(pod["topologySpreadConstraints"][0]["topologyKey"], og.graph.spec.placement.topology_key);
      EXPECT_EQ(pod["topologySpreadConstraints"][0]["whenUnsatisfiable"], "ScheduleAnyway");
    }
  }
}

TEST(DesiredStateTest, GpuGraphFromKubernetesExample) {
  OperatorSettings s;
  OwnedGraph og = LoadExample("kubernetes-llama.yaml");
  ASSERT_EQ(og.meta.name, "llama-8b");
  DesiredObjects objs = BuildDesired(og, s, {});
  const json* prefill = Find(objs, "deployments", "llama-8b-prefill");
  const json* decode = Find(objs, "deployments", "llama-8b-decode");
  const json* router = Find(objs, "deployments", "llama-8b-router");
  ASSERT_TRUE(prefill && decode && router);
  EXPECT_EQ((*prefill)["spec"]["replicas"], 2);
  EXPECT_EQ((*decode)["spec"]["replicas"], 4);
  EXPECT_EQ((*router)["spec"]["replicas"], 2);
  for (const json* d : {prefill, decode}) {
    const json& c = (*d)["spec"]["template"]["spec"]["containers"][0];
    EXPECT_EQ(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    EXPECT_EQ(c["resources"]["requests"]["cpu"], "8");
    EXPECT_EQ(c["resources"]["requests"]["memory"], "64Gi");
    EXPECT_EQ(c["resources"]["limits"]["cpu"], "16");
    EXPECT_EQ(c["resources"]["limits"]["memory"], "96Gi");
    EXPECT_EQ(c["securityContext"]["capabilities"]["add"], json::array({"IPC_LOCK"}));
    EXPECT_EQ((*d)["spec"]["template"]["spec"]["tolerations"][0]["key"], "nvidia.com/gpu");
    std::vector<std::string> args = Args(*d);
    EXPECT_EQ(Flag(args, "--model"), "/models/meta-llama/Llama-3.1-8B-Instruct");
    EXPECT_EQ(Flag(args, "--served-model-name"), "llama-3.1-8b-instruct");
    EXPECT_EQ(Flag(args, "--engine.block-size"), "16");
    EXPECT_EQ(Flag(args, "--engine.kv-cache-mib"), "40960");
    EXPECT_EQ(Flag(args, "--transfer.ucx-tls"), "rc,cuda_copy,cuda_ipc");
    EXPECT_EQ(Flag(args, "--transfer.timeout"), "5s");
    EXPECT_EQ(Flag(args, "--transfer.on-failure"), "recompute");
    EXPECT_EQ(Flag(args, "--events.endpoint"), "tcp://$(POD_IP):5557");
    bool pvc = false;
    for (const json& v : (*d)["spec"]["template"]["spec"]["volumes"]) {
      if (v.contains("persistentVolumeClaim")) {
        pvc = true;
        EXPECT_EQ(v["persistentVolumeClaim"]["claimName"], "model-store");
        EXPECT_EQ(v["persistentVolumeClaim"]["readOnly"], true);
      }
    }
    EXPECT_TRUE(pvc);
  }
  EXPECT_EQ(Flag(Args(*prefill), "--role"), "prefill");
  EXPECT_EQ(Flag(Args(*decode), "--role"), "decode");
  // extraArgs come last, as given.
  std::vector<std::string> dargs = Args(*decode);
  ASSERT_GE(dargs.size(), 2u);
  EXPECT_EQ(dargs[dargs.size() - 2], "--engine.max-num-seqs");
  EXPECT_EQ(dargs.back(), "128");
  // The router never gets GPUs or extra capabilities.
  const json& rc = (*router)["spec"]["template"]["spec"]["containers"][0];
  EXPECT_FALSE(rc.contains("resources") && rc["resources"].contains("limits") &&
               rc["resources"]["limits"].contains("nvidia.com/gpu"));
  EXPECT_FALSE(rc["securityContext"]["capabilities"].contains("add"));
  // PDBs for both pools (replicas > 1), maxUnavailable 1.
  const json* pdb_p = Find(objs, "poddisruptionbudgets", "llama-8b-prefill");
  const json* pdb_d = Find(objs, "poddisruptionbudgets", "llama-8b-decode");
  ASSERT_TRUE(pdb_p && pdb_d);
  EXPECT_EQ((*pdb_d)["spec"]["maxUnavailable"], 1);
  EXPECT_EQ((*pdb_d)["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"], "decode");
  // Services: router ClusterIP on 8000, headless worker services.
  const json* svc = Find(objs, "services", "llama-8b-router");
  ASSERT_TRUE(svc);
  EXPECT_EQ((*svc)["spec"]["type"], "ClusterIP");
  EXPECT_EQ((*svc)["spec"]["ports"][0]["port"], 8000);
  EXPECT_EQ((*Find(objs, "services", "llama-8b-decode"))["spec"]["clusterIP"], "None");
  EXPECT_EQ((*Find(objs, "services", "llama-8b-prefill"))["spec"]["clusterIP"], "None");
}

TEST(DesiredStateTest, CpuGraphsHaveNoGpuNoPdbAtOneReplica) {
  OperatorSettings s;
  OwnedGraph og = LoadExample("local-tiny.yaml");
  DesiredObjects objs = BuildDesired(og, s, {});
  const json* decode = Find(objs, "deployments", "local-tiny-decode");
  ASSERT_TRUE(decode);
  const json& c = (*decode)["spec"]["template"]["spec"]["containers"][0];
  EXPECT_FALSE(c.contains("resources"));
  EXPECT_FALSE(c["securityContext"]["capabilities"].contains("add"));
  EXPECT_FALSE((*decode)["spec"]["template"]["spec"].contains("tolerations"));
  EXPECT_EQ(Flag(Args(*decode), "--model"), "builtin:tiny");
  EXPECT_EQ(Flag(Args(*decode), "--cache-dir"), "/var/cache/kvmesh");
  EXPECT_EQ(Find(objs, "poddisruptionbudgets", "local-tiny-decode"), nullptr);
  EXPECT_EQ(Find(objs, "poddisruptionbudgets", "local-tiny-prefill"), nullptr);
  EXPECT_NE(Find(objs, "deployments", "local-tiny-prefill"), nullptr);
}

TEST(DesiredStateTest, DisaggregationOffHasNoPrefillPoolAndAggregatedDecode) {
  OperatorSettings s;
  OwnedGraph og = LoadExample("local-aggregated.yaml");
  DesiredObjects objs = BuildDesired(og, s, SomeWorkers());
  EXPECT_EQ(Find(objs, "deployments", "local-aggregated-prefill"), nullptr);
  EXPECT_EQ(Find(objs, "services", "local-aggregated-prefill"), nullptr);
  const json* decode = Find(objs, "deployments", "local-aggregated-decode");
  ASSERT_TRUE(decode);
  EXPECT_EQ(Flag(Args(*decode), "--role"), "aggregated");
  EXPECT_EQ((*decode)["spec"]["template"]["metadata"]["labels"]["kvmesh.dev/role"], "aggregated");
  EXPECT_NE(Find(objs, "poddisruptionbudgets", "local-aggregated-decode"), nullptr);  // 2 replicas
  // A leftover prefill pod is not routed to.
  const json* cm = Find(objs, "configmaps", "local-aggregated-router");
  ASSERT_TRUE(cm);
  auto workers = router::ParseWorkerFile((*cm)["data"]["workers.yaml"].get<std::string>());
  ASSERT_TRUE(workers.ok()) << workers.status().ToString();
  EXPECT_EQ(workers->size(), 2u);
  std::string router_yaml = (*cm)["data"]["router.yaml"];
  EXPECT_NE(router_yaml.find("mode: \"off\""), std::string::npos) << router_yaml;
}

TEST(DesiredStateTest, WorkersFileParsesWithTheRoutersParserAndIsSorted) {
  OperatorSettings s;
  OwnedGraph og = LoadExample("local-tiny.yaml");
  std::vector<WorkerPod> w = SomeWorkers();
  DesiredObjects a = BuildDesired(og, s, w);
  std::mt19937 rng(7);
  std::shuffle(w.begin(), w.end(), rng);
  DesiredObjects b = BuildDesired(og, s, w);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].object.dump(), b[i].object.dump()) << a[i].Key();

  const json* cm = Find(a, "configmaps", "local-tiny-router");
  ASSERT_TRUE(cm);
  auto workers = router::ParseWorkerFile((*cm)["data"]["workers.yaml"].get<std::string>());
  ASSERT_TRUE(workers.ok()) << workers.status().ToString();
  ASSERT_EQ(workers->size(), 3u);
  // Sorted by role then pod name: decode-aaa, decode-abc, prefill-xyz.
  EXPECT_EQ((*workers)[0].url, "http://127.0.0.13:8100");
  EXPECT_EQ((*workers)[0].role, router::WorkerRole::kDecode);
  EXPECT_EQ((*workers)[0].name, "g-decode-aaa");
  EXPECT_EQ((*workers)[1].url, "http://127.0.0.12:8100");
  EXPECT_EQ((*workers)[2].url, "http://127.0.0.11:8100");
  EXPECT_EQ((*workers)[2].role, router::WorkerRole::kPrefill);

  auto empty = router::ParseWorkerFile(WorkersFileYaml({}, s));
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->empty());
  auto v6 = router::ParseWorkerFile(WorkersFileYaml({{"p", "fd00::5", "decode"}}, s));
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ((*v6)[0].url, "http://[fd00::5]:8100");
}

TEST(DesiredStateTest, RouterConfigLoadsWithTheRoutersConfigLoader) {
  OperatorSettings s;
  OwnedGraph og = LoadExample("kubernetes-llama.yaml");
  const std::string text = RouterConfigYaml(og.graph, s);
  char tmpl[] = "/tmp/kvmesh-router-yaml-XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  // The router pod's real args (paths are flags), with the config file here and a pod IP.
  DesiredObjects objs = BuildDesired(og, s, {});
  const json* router_dep = Find(objs, "deployments", "llama-8b-router");
  ASSERT_TRUE(router_dep);
  std::vector<std::string> argv_s = {"kvmesh-router"};
  for (std::string a : Args(*router_dep)) {
    if (a == "/etc/kvmesh/router.yaml") a = tmpl;
    if (a == "$(POD_IP)") a = "127.0.0.5";
    argv_s.push_back(a);
  }
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  auto cfg = LoadConfig<router::RouterConfig>(std::span<char* const>(argv.data() + 1, argv.size() - 1),
                                              MapEnvLookup({}), "KVMESH_ROUTER");
  std::remove(tmpl);
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString() << "\n" << text;
  EXPECT_EQ(cfg->model, "/models/meta-llama/Llama-3.1-8B-Instruct");
  EXPECT_EQ(cfg->served_model_name, "llama-3.1-8b-instruct");
  EXPECT_EQ(cfg->block_size, 16u);
  EXPECT_EQ(cfg->routing.mode, "kv");
  EXPECT_EQ(cfg->routing.kv_cost, "kvmesh");
  EXPECT_EQ(cfg->disaggregation.mode, "conditional");
  EXPECT_EQ(cfg->disaggregation.min_remote_prefill_tokens, 512u);
  EXPECT_EQ(cfg->disaggregation.max_prefill_queue, 8u);
  EXPECT_EQ(cfg->workers.file, "/etc/kvmesh/workers.yaml");
  EXPECT_EQ(cfg->workers.file_poll_interval, std::chrono::milliseconds(1000));
  EXPECT_EQ(cfg->drain_timeout, std::chrono::milliseconds(30000));
}

TEST(DesiredStateTest, RouterRollsOnConfigChangeButNotOnWorkerChange) {
  OperatorSettings s;
  OwnedGraph og = LoadExample("local-tiny.yaml");
  auto hash = [&](const OwnedGraph& g, const std::vector<WorkerPod>& w) {
    DesiredObjects objs = BuildDesired(g, s, w);
    return (*Find(objs, "deployments", g.meta.name + "-router"))["spec"]["template"];
  };
  json base = hash(og, {});
  EXPECT_EQ(base, hash(og, SomeWorkers()));
  OwnedGraph changed = og;
  changed.graph.spec.router.routing_mode = "round_robin";
  json other = hash(changed, {});
  EXPECT_NE(base["metadata"]["annotations"]["kvmesh.dev/config-hash"],
            other["metadata"]["annotations"]["kvmesh.dev/config-hash"]);
  // The router mounts the ConfigMap and reads its config from it.
  const json& pod = base["spec"];
  EXPECT_EQ(pod["volumes"].back()["configMap"]["name"], "local-tiny-router");
  EXPECT_EQ(Flag(pod["containers"][0]["args"].get<std::vector<std::string>>(), "--config"), "/etc/kvmesh/router.yaml");
}

TEST(DesiredStateTest, ApiKeysSecretIsMountedAndPassed) {
  OperatorSettings s;
  s.router_api_keys_secret = "router-keys";
  OwnedGraph og = LoadExample("local-tiny.yaml");
  DesiredObjects objs = BuildDesired(og, s, {});
  const json* r = Find(objs, "deployments", "local-tiny-router");
  ASSERT_TRUE(r);
  auto args = Args(*r);
  EXPECT_EQ(Flag(args, "--auth.api-keys-file"), "/etc/kvmesh-auth/api-keys");
  EXPECT_EQ((*r)["spec"]["template"]["spec"]["volumes"].back()["secret"]["secretName"], "router-keys");
}

TEST(DesiredStateTest, PdbsFollowReplicas) {
  OperatorSettings s;
  OwnedGraph og = LoadExample("local-tiny.yaml");
  og.graph.spec.decode.replicas = 3;
  DesiredObjects three = BuildDesired(og, s, {});
  EXPECT_NE(Find(three, "poddisruptionbudgets", "local-tiny-decode"), nullptr);
  og.graph.spec.decode.replicas = 1;
  DesiredObjects one = BuildDesired(og, s, {});
  EXPECT_EQ(Find(one, "poddisruptionbudgets", "local-tiny-decode"), nullptr);
  // AllChildKeys names every kind/name BuildDesired may produce.
  og.graph.spec.decode.replicas = 2;
  og.graph.spec.prefill.replicas = 2;
  auto keys = AllChildKeys("local-tiny");
  for (const DesiredObject& d : BuildDesired(og, s, {})) {
    EXPECT_NE(std::find(keys.begin(), keys.end(),
                        std::make_pair(d.resource, d.object["metadata"]["name"].get<std::string>())),
              keys.end())
        << d.Key();
  }
}

TEST(DesiredStateTest, ReadyWorkerPodsFiltersAndSorts) {
  auto pod = [](const std::string& name, const std::string& role, const std::string& ip, bool ready,
                bool deleting = false) {
    json p = {{"metadata", {{"name", name}, {"labels", {{"kvmesh.dev/role", role}}}}},
              {"status", {{"podIP", ip}, {"conditions", json::array({{{"type", "Ready"}, {"status", ready ? "True" : "False"}}})}}}};
    if (deleting) p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z";
    return p;
  };
  std::vector<json> pods = {pod("d-2", "decode", "10.0.0.2", true), pod("d-1", "decode", "10.0.0.1", true),
                            pod("p-1", "prefill", "10.0.0.3", false), pod("p-2", "prefill", "", true),
                            pod("p-3", "prefill", "10.0.0.4", true, true), pod("r-1", "router", "10.0.0.9", true),
                            pod("a-1", "aggregated", "10.0.0.5", true)};
  auto w = ReadyWorkerPods(pods);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].name, "a-1");
  EXPECT_EQ(w[1].name, "d-1");
  EXPECT_EQ(w[2].name, "d-2");
}

TEST(DesiredStateTest, ReadOwnedGraphKeepsMetadataAndNamesBadField) {
  json obj = json::parse(graph::InferenceGraphToJson(graph::DefaultLocalGraph()));
  obj["metadata"]["uid"] = "u-1";
  obj["metadata"]["resourceVersion"] = "42";
  obj["metadata"]["generation"] = 7;
  obj["metadata"]["namespace"] = "ns1";
  obj["metadata"]["finalizers"] = json::array({"kvmesh.dev/drain"});
  obj["metadata"]["managedFields"] = json::array({json::object()});
  obj["status"] = {{"phase", "Ready"}};
  auto og = ReadOwnedGraph(obj);
  ASSERT_TRUE(og.ok()) << og.status().ToString();
  EXPECT_EQ(og->meta.uid, "u-1");
  EXPECT_EQ(og->meta.resource_version, "42");
  EXPECT_EQ(og->meta.generation, 7);
  EXPECT_EQ(og->meta.finalizers, std::vector<std::string>{"kvmesh.dev/drain"});
  obj["spec"]["decode"]["replicas"] = -1;
  auto bad = ReadOwnedGraph(obj);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("spec.decode.replicas"), std::string::npos) << bad.status().message();
  auto meta = ReadGraphMeta(obj);
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->uid, "u-1");
}

TEST(DesiredStateTest, EndpointAndHash) {
  GraphMeta m;
  m.name = "g";
  m.namespace_ = "team";
  EXPECT_EQ(RouterEndpoint(m, OperatorSettings{}), "http://g-router.team.svc:8000");
  EXPECT_EQ(Fnv1aHex(""), "cbf29ce484222325");
  EXPECT_EQ(Fnv1aHex("a"), "af63dc4c8601ec8c");
}

}  // namespace
}  // namespace kvmesh::controller
