#!/usr/bin/env bash
# The SLA planner inside kvmesh-operator (docs/planner.md "In the operator"): kvmesh-test-apiserver
# + kvmesh-operator (--planner.prometheus-url, --planner.profile, --planner.interval 2s) + a real
# Prometheus scraping kvmesh_test_planner_exporter (the router's real metric table at a steady
# 20 req/s, ISL 3000, OSL 150; labelled as the graph's router). The real kubectl applies the CRD and
# a graph with spec.sla and decode minReplicas 1 / maxReplicas 3. Load rises (the exporter starts):
# the decode Deployment goes 1 -> 3; load falls (the exporter stops): it comes back to 1, one
# replica per decision; status.plannerDecisions holds scale_up and scale_down entries with reasons;
# the operator's /metrics carry kvmesh_planner_desired_replicas. No kubelet: only Deployment
# replicas are checked, no pod runs.
# Env: KVMESH_BINARY_DIR (build dir), KVMESH_SOURCE_DIR. Optional: PROMETHEUS (/usr/bin/prometheus).
set -euo pipefail
SRC="${KVMESH_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
BIN="${KVMESH_BINARY_DIR:?KVMESH_BINARY_DIR must point at the build dir}"
APISERVER="$BIN/tests/kube/kvmesh-test-apiserver"
OPERATOR="$BIN/operator/manager/kvmesh-operator"
EXPORTER="$BIN/operator/planner/kvmesh_test_planner_exporter"
command -v kubectl >/dev/null || { echo "SKIP: kubectl not installed"; exit 0; }
source "$(dirname "$0")/prometheus_lib.sh"
for b in "$APISERVER" "$OPERATOR" "$EXPORTER"; do [[ -x "$b" ]] || fail "not built: $b"; done
export HOME="$TMP/home"
mkdir -p "$HOME"
prom_on_fail() { echo "---- operator log (tail) ----"; tail -n 40 "$TMP/operator.log" 2>/dev/null || true; }
wait_file() {  # path pid what
  for _ in $(seq 1 150); do
    [[ -s "$1" ]] && return 0
    kill -0 "$2" 2>/dev/null || fail "$3 exited early"
    sleep 0.1
  done
  fail "$3 did not become ready"
}
K() { kubectl --kubeconfig "$TMP/kubeconfig" --request-timeout=10s "$@"; }
GRAPH=planned
replicas() { K get deployment "$GRAPH-decode" -o jsonpath='{.spec.replicas}' 2>/dev/null || echo none; }
wait_replicas() {  # want timeout_s
  local deadline=$((SECONDS + $2))
  until [[ "$(replicas)" == "$1" ]]; do
    (( SECONDS < deadline )) || fail "decode replicas did not reach $1 within $2 s (now $(replicas))"
    sleep 0.5
  done
  echo "decode replicas = $1 after $((SECONDS - T0)) s"
}

# ---- API server, CRD, Prometheus (it scrapes the graph's "router", the exporter, once it runs) ----
"$APISERVER" --port 0 --ready-file "$TMP/api.ready" --kubeconfig-out "$TMP/kubeconfig" >"$TMP/api.log" 2>&1 &
API_PID=$!
prom_track "$API_PID"
wait_file "$TMP/api.ready" "$API_PID" "kvmesh-test-apiserver"
K apply -f "$SRC/crds/inferencegraph.yaml" >/dev/null || fail "kubectl apply the CRD"
K wait --for=condition=Established crd/inferencegraphs.kvmesh.dev --timeout=20s >/dev/null || fail "CRD not established"
start_prometheus --lifecycle "" "$(printf 'namespace: default\nkvmesh_dev_graph: %s' "$GRAPH")" kvmesh-router

# ---- profile: one decode replica does 800 output tok/s within ITL 50 ms at ISL 3000 ----
# 20 req/s x 150 tokens = 3000 tok/s -> 3.75 replicas -> maxReplicas 3.
cat >"$TMP/profile.json" <<'JSON'
{"prefill": [{"isl": 3000, "prefill_tokens_per_s": 100000, "ttft_s": 0.2}],
 "decode": [{"concurrency": 1, "context": 3075, "itl_s": 0.03, "tokens_per_s": 400},
            {"concurrency": 64, "context": 3075, "itl_s": 0.04, "tokens_per_s": 800}]}
JSON

"$OPERATOR" --kubeconfig "$TMP/kubeconfig" --host 127.0.0.1 --port 0 --ready-file "$TMP/op.ready" \
  --resync-period 5s --planner.interval 2s --planner.prometheus-url "http://127.0.0.1:$PROM_PORT" \
  --planner.prometheus-window 6s --planner.scale-down-window 0s --planner.profile "$TMP/profile.json" \
  >"$TMP/operator.log" 2>&1 &
OP_PID=$!
prom_track "$OP_PID"
wait_file "$TMP/op.ready" "$OP_PID" "kvmesh-operator"
OP_URL="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$TMP/op.ready")"

# ---- the graph ----
K apply -f - >/dev/null <<YAML || fail "kubectl apply the graph"
apiVersion: kvmesh.dev/v1alpha1
kind: InferenceGraph
metadata: {name: $GRAPH}
spec:
  model: {source: "builtin:tiny"}
  prefill: {replicas: 1}
  decode: {replicas: 1, minReplicas: 1, maxReplicas: 3}
  sla: {ttftMs: 2000, itlMs: 50}
YAML
T0=$SECONDS

# ---- no load yet: the planner holds decode at minReplicas 1 ----
wait_replicas 1 20
# ---- load rises: the router (exporter) starts serving 20 req/s and Prometheus scrapes it ----
start_exporter "$EXPORTER"
prom_set_target "127.0.0.1:$EXPORTER_PORT"
wait_replicas 3 25
# ---- load falls: no router traffic at all ----
prom_stop "$EXPORTER_PID"
wait_replicas 2 25
wait_replicas 1 15

K get ig "$GRAPH" -o json >"$TMP/graph.json" || fail "kubectl get ig"
"$PY" - "$TMP/graph.json" <<'PY' || fail "status.plannerDecisions"
import json, sys
g = json.load(open(sys.argv[1]))
d = g.get("status", {}).get("plannerDecisions", [])
for e in d:
    print(f'  {e["time"]} {e["pool"]} {e["from"]} -> {e["to"]}: {e["reason"]}')
assert 0 < len(d) <= 10, f"{len(d)} entries"
ups = [e for e in d if e["pool"] == "decode" and e["to"] > e["from"]]
downs = [e for e in d if e["pool"] == "decode" and e["to"] < e["from"]]
assert ups and ups[0]["from"] == 1 and ups[-1]["to"] == 3, f"no scale-up 1 -> 3 entry: {d}"
assert all(e["reason"].startswith("scale_up") for e in ups), ups
assert [(e["from"], e["to"]) for e in downs][-2:] == [(3, 2), (2, 1)], f"scale-down entries: {downs}"
assert all(e["reason"].startswith("scale_down") for e in downs), downs
assert d[-1]["to"] == 1, d[-1]
assert g["status"]["decode"]["replicas"] == 1, g["status"]["decode"]
PY
curl -sf "$OP_URL/metrics" >"$TMP/metrics.txt" || fail "operator /metrics"
grep -q "kvmesh_planner_desired_replicas{graph=\"default/$GRAPH\",pool=\"decode\"} 1" "$TMP/metrics.txt" ||
  fail "kvmesh_planner_desired_replicas: $(grep kvmesh_planner_desired "$TMP/metrics.txt")"
grep -q "kvmesh_planner_decisions_total{graph=\"default/$GRAPH\",pool=\"decode\",direction=\"up\"}" "$TMP/metrics.txt" ||
  fail "kvmesh_planner_decisions_total up missing"
echo "PASS ($((SECONDS - T0)) s from kubectl apply)"
