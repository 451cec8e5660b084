#!/usr/bin/env bash
# The hub controller end to end (docs/placement.md, "The hub controller"): four
# kvmesh-test-apiserver processes, one the hub (CRD + the members' kubeconfig Secrets), three the
# member clusters a (us-east), b (eu-west), c (ap-south). kvmesh-operator runs against the hub with
# --hub.enabled, a 1 s interval and a 3 s grace period. The real kubectl:
#   1. applies one InferenceGraph (spread, 3 prefill + 3 decode, 6 GPUs per cluster) to the hub and
#      sees 1 prefill + 1 decode + 1 router in every member, and status.clusters on the hub with
#      every member reachable and healthy;
#      1b. a real kvmesh-agent named by kvmesh.dev/member-agents for b: requests sent straight to
#      it show up as b's measured request rate (kvmesh_hub_cluster_request_rate) and b's heat is
#      fresh (the hub read the agent's inventory with its demand and roots);
#   2. sees no write request reach any member over several passes of the unchanged world;
#   3. scales the graph to 6 decode replicas: the loop writes the new shares on the graph change;
#   4. member c is killed (by pid): status says c unreachable while its share is held, then, after
#      the grace period, c unhealthy with a share of 0 and a + b running all the replicas;
#   5. deletes the graph: a and b lose the hub's objects at once; c, unreachable for longer than the
#      grace period already, is given up (kvmesh_hub_members_abandoned_total) and the finalizer
#      kvmesh.dev/hub-members goes, so the graph is gone. (The unit tests cover a member that
#      holds the finalizer inside its grace period.)
# Servers bind 127.0.0.1 on free ports and are stopped by pid.
set -euo pipefail
source "$(dirname "$0")/member_clusters_lib.sh"
OPERATOR=$BIN/operator/manager/kvmesh-operator
[ -x "$OPERATOR" ] || fail "$OPERATOR not built"
mc_on_fail() {
  echo "--- operator log"; tail -30 "$WORK/operator.log" 2>/dev/null || true
  echo "--- status.clusters"; cat "$WORK/status.json" 2>/dev/null || true
}

start_clusters "--controllers=false" hub a b c
K hub apply -f "$SRC/crds/inferencegraph.yaml" >/dev/null || fail "apply CRD"
apply_member_secrets hub a b c

"$OPERATOR" --kubeconfig "$WORK/hub.kc" --host 127.0.0.1 --port 0 --ready-file "$WORK/operator.ready" \
  --hub.enabled --hub.interval 1s --hub.unhealthy-after 3s --hub.member-timeout 1s \
  >"$WORK/operator.log" 2>&1 &
PID[operator]=$!
wait_ready "$WORK/operator.ready" "${PID[operator]}" "operator"

chat_graph_yaml 6 >"$WORK/graph.yaml"
K hub apply -f "$WORK/graph.yaml" >/dev/null || fail "apply graph"

# "name=replicas ..." of graph chat's Deployments in cluster $1 (sorted; "" when none).
deployments() {
  K "$1" get deployments -l kvmesh.dev/graph=chat \
    -o jsonpath='{range .items[*]}{.metadata.name}={.spec.replicas}{"\n"}{end}' | sort | tr '\n' ' ' | sed 's/ $//'
}
# Runs the Python assertion $1 on the graph's status.clusters (as `c`, a dict by name).
status_ok() {
  K hub get inferencegraph chat -o json >"$WORK/graph.json" 2>/dev/null || return 1
  "$PY" - "$WORK/graph.json" "$1" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))
c = {x["name"]: x for x in g.get("status", {}).get("clusters", [])}
json.dump(c, open(sys.argv[1].replace("graph.json", "status.json"), "w"), indent=1)
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $end ] || fail "timed out after ${limit}s waiting for: $what"
    sleep 0.2
  done
}
all_spread() {
  for n in a b c; do [ "$(deployments "$n")" = "chat-decode=1 chat-prefill=1 chat-router=1" ] || return 1; done
}

echo "== 1. the hub places the graph into every member and reports status.clusters"
wait_for 20 "1/1/1 in every member" all_spread
wait_for 10 "status.clusters reachable and healthy" status_ok \
  'len(c) == 3 and all(x["reachable"] and x["healthy"] and x["decode"]["replicas"] == 1 and "error" not in x for x in c.values()) and c["b"]["region"] == "eu-west"'
for n in a b c; do echo "$n: $(deployments "$n")"; done

echo "== 1b. heat from a real kvmesh-agent (kvmesh.dev/member-agents) for member b"
AGENT=$BIN/agent/kvmesh-agent
[ -x "$AGENT" ] || fail "$AGENT not built"
KVMESH_CACHE_DIR="$WORK/cache" "$AGENT" --role aggregated --model builtin:tiny --host 127.0.0.1 --port 0 \
  --ready-file "$WORK/agent.ready" --engine.kv-cache-mib 8 >"$WORK/agent.log" 2>&1 &
PID[agent]=$!
for _ in $(seq 600); do [ -s "$WORK/agent.ready" ] && break; kill -0 "${PID[agent]}" || break; sleep 0.1; done
[ -s "$WORK/agent.ready" ] || { tail -20 "$WORK/agent.log"; fail "the agent did not become ready"; }
agent_url=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$WORK/agent.ready")
K hub annotate inferencegraph chat "kvmesh.dev/member-agents=b=$agent_url" >/dev/null || fail "annotate graph"
wait_for 10 "b's heat read from its agent" status_ok \
  'c["b"]["heat"] in ("warming", "fresh") and "heatError" not in c["b"] and c["a"]["heat"] == "none"'
operator_port=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$WORK/operator.ready")
# b's request rate on the operator's /metrics: NaN until a pass measures one.
b_rate() {
  curl -fsS "http://127.0.0.1:$operator_port/metrics" |
    sed -n 's/^kvmesh_hub_cluster_request_rate{graph="default\/chat",cluster="b"} //p'
}
# Requests straight to the agent (no router), until the hub has measured a rate above 0.
rate=""
for i in $(seq 50); do
  curl -fsS "$agent_url/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"model\":\"tiny\",\"prompt\":\"You are a helpful assistant for the hub test. Question $i?\",\"max_tokens\":2}" \
    >/dev/null || fail "completion through the agent"
  rate=$(b_rate)
  "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)' "${rate:-nan}" && break
  sleep 0.2
done
"$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)' "${rate:-nan}" \
  || fail "the hub measured no request rate for b from its agent (last: '${rate}')"
echo "b: $rate requests/s measured from its agent"
wait_for 5 "b fresh, a and c without heat" status_ok \
  'c["b"]["heat"] == "fresh" and "heatError" not in c["b"] and c["a"]["heat"] == "none" and c["c"]["heat"] == "none"'

echo "== 2. unchanged: no write reaches a member"
# Let the pass that records "unchanged" in status go by, then count over three more passes.
wait_for 10 "a pass that found every member unchanged" status_ok 'all(x["applied"] == 0 and x["unchanged"] > 0 for x in c.values())'
before="$(write_requests a) $(write_requests b) $(write_requests c)"
sleep 3.5
after="$(write_requests a) $(write_requests b) $(write_requests c)"
[ "$before" = "$after" ] || fail "member write requests went from $before to $after"
grep -q 'kvmesh_hub_sync_total{cluster="a",result="ok"}' <(curl -fsS "http://127.0.0.1:$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$WORK/operator.ready")/metrics") \
  || fail "operator /metrics lacks kvmesh_hub_sync_total"

echo "== 3. a spec change is placed at once"
K hub patch inferencegraph chat --type merge -p '{"spec":{"decode":{"replicas":6}}}' >/dev/null || fail "patch graph"
wait_for 10 "6 decode replicas over the members" status_ok 'sum(x["decode"]["replicas"] for x in c.values()) == 6'
for n in a b c; do
  got=$(deployments "$n")
  echo "$n: $got"
  [[ "$got" == *"chat-decode=2"* ]] || fail "cluster $n after scaling: '$got'"
done

echo "== 4. member c dies: share held, then moved after the grace period"
stop_cluster c
killed_at=$SECONDS
wait_for 5 "c reported unreachable, share held" status_ok \
  'not c["c"]["reachable"] and c["c"]["healthy"] and c["c"]["decode"]["replicas"] == 2 and "unreachableSince" in c["c"]'
[ $((SECONDS - killed_at)) -lt 3 ] || echo "note: first unreachable report came $((SECONDS - killed_at))s after the kill"
wait_for 15 "c unhealthy and its share moved" status_ok \
  'not c["c"]["healthy"] and c["c"]["decode"]["replicas"] == 0 and c["a"]["decode"]["replicas"] + c["b"]["decode"]["replicas"] == 6 and c["a"]["prefill"]["replicas"] + c["b"]["prefill"]["replicas"] == 3'
a=$(deployments a); b=$(deployments b)
echo "a: $a"; echo "b: $b"
"$PY" - "$a" "$b" <<'PY' || fail "a + b do not run all replicas: a='$a' b='$b'"
import sys
tot = {}
for s in sys.argv[1:]:
    for kv in s.split():
        k, v = kv.split("=")
        tot[k] = tot.get(k, 0) + int(v)
assert tot.get("chat-decode") == 6 and tot.get("chat-prefill") == 3, tot
PY

echo "== 5. kubectl delete: a and b are cleaned at once; c, unreachable past its grace period, is given up"
K hub get inferencegraph chat -o jsonpath='{.metadata.finalizers}' | grep -q 'kvmesh.dev/hub-members' \
  || fail "the graph lacks the hub finalizer"
K hub delete inferencegraph chat --wait=false >/dev/null || fail "delete graph"
deleted_at=$SECONDS
no_hub_objects() {
  [ -z "$(K "$1" get deploy,svc,cm -l kvmesh.dev/member-cluster -o name)" ]
}
wait_for 10 "a and b without the graph's objects" eval 'no_hub_objects a && no_hub_objects b'
graph_gone() { ! K hub get inferencegraph chat >/dev/null 2>&1; }
wait_for 15 "the graph gone once c is given up" graph_gone
echo "graph gone $((SECONDS - deleted_at))s after the delete"
port=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$WORK/operator.ready")
metrics=$(curl -fsS "http://127.0.0.1:$port/metrics") || fail "operator /metrics"
grep -q 'kvmesh_hub_members_abandoned_total{cluster="c"} 1' <<<"$metrics" \
  || fail "operator /metrics lacks kvmesh_hub_members_abandoned_total{cluster=\"c\"} 1"
echo "PASS"
