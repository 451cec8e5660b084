#!/usr/bin/env bash
# Multi-cluster placement end to end (docs/placement.md): three kvmesh-test-apiserver processes
# are the member clusters a (us-east), b (eu-west), c (ap-south); a is also the hub that holds
# their kubeconfig Secrets. kvmesh-placement places one InferenceGraph (3 prefill + 3 decode
# workers, 1 GPU each, 4 GPUs per cluster) and writes the pools through each member's API server:
#   1. policy spread: the REAL kubectl sees 1 prefill + 1 decode + 1 router in every cluster, no
#      ownerReferences, the member label and the fabric-domain pod affinity;
#   2. policy cache-locality with eu-west demand and its hot prefix cached in b: kubectl sees
#      exactly the tool's placement, b has the most, c (no demand) lost its pools;
#   3. the same again: zero writes;
#   4. b stops (killed by pid): spread again reports b unreachable (exit 2), still writes a and c.
# Servers bind 127.0.0.1 on free ports and are stopped by pid.
set -euo pipefail
source "$(dirname "$0")/member_clusters_lib.sh"
TOOL=$BIN/operator/placement/kvmesh-placement
[ -x "$TOOL" ] || fail "$TOOL not built"

start_clusters "--controller-interval 50ms" a b c

echo "== hub (a) holds the members' kubeconfig Secrets"
apply_member_secrets a a b c

{ chat_graph_yaml 4; cat <<'YAML'; } >"$WORK/graph.yaml"
    links:
      - {from: a, to: b, bandwidthGbps: 100, latencyMs: 40}
      - {from: a, to: c, bandwidthGbps: 10, latencyMs: 90}
      - {from: b, to: c, bandwidthGbps: 10, latencyMs: 80}
YAML
# Demand from eu-west and us-east only; eu-west's system prompt is cached in b, a document read
# from both regions is cached in a.
cat >"$WORK/heat.json" <<'JSON'
{"demand": [{"region": "eu-west", "rate": 8, "isl": 3000, "osl": 150},
            {"region": "us-east", "rate": 2, "isl": 3000, "osl": 150}],
 "prefixes": [{"root": "sys-eu", "tokens": 2048, "bytes": 671088640, "cached": {"b": 671088640},
               "rate": {"eu-west": 6}},
              {"root": "doc-us", "tokens": 4096, "bytes": 1342177280, "cached": {"a": 1342177280},
               "rate": {"us-east": 1, "eu-west": 1}}],
 "model": {"prefillTokensPerS": 10000}}
JSON

# Deployments of graph chat in cluster $1 as "name=replicas ..." (sorted), checking every one is
# the hub's (member label = $1, no ownerReferences) and prefill/decode carry the fabric affinity.
deployments() {
  K "$1" get deployments -l kvmesh.dev/graph=chat -o json >"$WORK/deploy-$1.json" || fail "kubectl get deployments in $1"
  "$PY" - "$1" "$WORK/deploy-$1.json" <<'PY'
import json, sys
cluster, path = sys.argv[1], sys.argv[2]
out = []
for d in json.load(open(path))["items"]:
    m = d["metadata"]
    assert "ownerReferences" not in m, f"{m['name']} has ownerReferences"
    assert m["labels"].get("kvmesh.dev/member-cluster") == cluster, f"{m['name']} member label {m['labels']}"
    assert m.get("annotations", {}).get("kvmesh.dev/hub-graph") == "default/chat", m.get("annotations")
    comp = m["labels"]["app.kubernetes.io/component"]
    if comp in ("prefill", "decode"):
        aff = d["spec"]["template"]["spec"]["affinity"]["podAffinity"]
        term = aff["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        assert term["topologyKey"] == "kvmesh.dev/fabric-domain", term
        peer = "decode" if comp == "prefill" else "prefill"
        assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == peer, term
    out.append(f"{m['name']}={d['spec']['replicas']}")
print(" ".join(sorted(out)))
PY
}
# What the tool's placement JSON ($2) says cluster $1 should run, in the same form.
expected() {
  "$PY" - "$1" "$2" <<'PY'
import json, sys
cluster, path = sys.argv[1], sys.argv[2]
for c in json.load(open(path))["placement"]["clusters"]:
    if c["name"] != cluster:
        continue
    if c["decodeReplicas"] == 0:
        print("")
    else:
        print(f"chat-decode={c['decodeReplicas']} chat-prefill={c['prefillReplicas']} chat-router=1")
PY
}
count_objects() {  # configmaps + services of graph chat in cluster $1
  K "$1" get configmaps,services -l kvmesh.dev/graph=chat -o name | wc -l
}

echo "== 1. spread"
"$TOOL" --graph "$WORK/graph.yaml" --hub-kubeconfig "$WORK/a.kc" >"$WORK/spread.json" || fail "tool spread: $(cat "$WORK/spread.json")"
for n in a b c; do
  got=$(deployments "$n") || fail "deployments $n"
  echo "$n: $got"
  [ "$got" = "chat-decode=1 chat-prefill=1 chat-router=1" ] || fail "spread: cluster $n has '$got'"
  [ "$(count_objects "$n")" -ge 3 ] || fail "spread: cluster $n lacks its ConfigMap/Services"
done

echo "== 2. cache-locality"
"$TOOL" --graph "$WORK/graph.yaml" --policy cache-locality --heat "$WORK/heat.json" \
  --hub-kubeconfig "$WORK/a.kc" >"$WORK/cl.json" || fail "tool cache-locality: $(cat "$WORK/cl.json")"
for n in a b c; do
  got=$(deployments "$n") || fail "deployments $n"
  want=$(expected "$n" "$WORK/cl.json")
  echo "$n: '$got' (placement: '$want')"
  [ "$got" = "$want" ] || fail "cache-locality: cluster $n has '$got', placement says '$want'"
done
"$PY" - "$WORK/cl.json" <<'PY' || fail "cache-locality placement: $(cat "$WORK/cl.json")"
import json, sys
r = json.load(open(sys.argv[1]))
c = {x["name"]: x for x in r["placement"]["clusters"]}
assert c["b"]["decodeReplicas"] > c["a"]["decodeReplicas"], c   # demand and heat are in eu-west
assert c["c"]["decodeReplicas"] == 0 and c["c"]["prefillReplicas"] == 0, c  # no demand in ap-south
assert sum(x["decodeReplicas"] for x in c.values()) == 3 and sum(x["prefillReplicas"] for x in c.values()) == 3
acts = {(p["root"], p["action"], p["target"]) for p in r["placement"]["prefixes"]}
assert ("doc-us", "replicate", "b") in acts, acts  # over the 100 Gbps a<->b link
m = {x["name"]: x for x in r["members"]}
assert m["c"]["deleted"] > 0 and all(x["error"] == "" for x in m.values()), m
PY
[ "$(count_objects c)" -eq 0 ] || fail "cluster c still has ConfigMaps/Services: $(K c get configmaps,services -l kvmesh.dev/graph=chat -o name)"

echo "== 3. unchanged: zero writes"
before="$(write_requests a) $(write_requests b) $(write_requests c)"
"$TOOL" --graph "$WORK/graph.yaml" --policy cache-locality --heat "$WORK/heat.json" \
  --hub-kubeconfig "$WORK/a.kc" >"$WORK/cl2.json" || fail "tool rerun"
"$PY" -c 'import json,sys; m=json.load(open(sys.argv[1]))["members"]; assert all(x["applied"]==0 and x["deleted"]==0 for x in m), m' \
  "$WORK/cl2.json" || fail "second sync wrote: $(cat "$WORK/cl2.json")"
after="$(write_requests a) $(write_requests b) $(write_requests c)"
[ "$before" = "$after" ] || fail "write requests per cluster went from $before to $after"

echo "== 4. member b unreachable"
stop_cluster b
rc=0
"$TOOL" --graph "$WORK/graph.yaml" --hub-kubeconfig "$WORK/a.kc" >"$WORK/down.json" || rc=$?
[ "$rc" -eq 2 ] || fail "tool exit $rc with b down, want 2: $(cat "$WORK/down.json")"
"$PY" - "$WORK/down.json" <<'PY' || fail "status with b down: $(cat "$WORK/down.json")"
import json, sys
m = {x["name"]: x for x in json.load(open(sys.argv[1]))["members"]}
assert not m["b"]["reachable"] and m["b"]["error"], m["b"]
assert m["a"]["reachable"] and m["a"]["error"] == "" and m["c"]["error"] == "", m
PY
for n in a c; do
  got=$(deployments "$n") || fail "deployments $n"
  [ "$got" = "chat-decode=1 chat-prefill=1 chat-router=1" ] || fail "spread with b down: cluster $n has '$got'"
done
echo "PASS"
