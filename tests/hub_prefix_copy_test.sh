#!/usr/bin/env bash
# The hub acts on a replicate decision with real agents (docs/placement.md, "Acting on replicate
# decisions"): three kvmesh-test-apiserver processes (the hub, members a in us-east and b in
# eu-west), kvmesh-operator with --hub.enabled, and three real kvmesh-agent processes named by
# kvmesh.dev/member-agents: a0 for a; b1 (idle) and b0 (prefix caching off) for b. Requests that
# share one long document go to a0 and to b0, so the document is hot in both regions but cached
# only in a. The hub decides to replicate its root a -> b and copies it: a0 exports the blocks,
# b1 pulls them over UCX (tcp). Then:
#   - status.clusters[b].lastPrefixCopy says ok, with the blocks and bytes, and the operator's
#     kvmesh_hub_prefix_copies_total counts it;
#   - b1 serves the document from the copied blocks (cached_tokens) with a0's exact greedy tokens;
#   - the copy is not repeated once b holds the root (over several passes and copy intervals).
# Servers and agents bind 127.0.0.1 on free ports and are stopped by pid.
set -euo pipefail
source "$(dirname "$0")/member_clusters_lib.sh"
OPERATOR=$BIN/operator/manager/kvmesh-operator
AGENT=$BIN/agent/kvmesh-agent
[ -x "$OPERATOR" ] || fail "$OPERATOR not built"
[ -x "$AGENT" ] || fail "$AGENT not built"
mc_on_fail() {
  echo "--- operator log"; grep -v ' INFO ' "$WORK/operator.log" | tail -20 2>/dev/null || true
  grep 'prefix cop' "$WORK/operator.log" | tail -5 || true
  for n in a0 b0 b1; do echo "--- agent $n"; tail -8 "$WORK/$n.log" 2>/dev/null || true; done
  echo "--- status.clusters"; cat "$WORK/status.json" 2>/dev/null || true
}

start_clusters "--controllers=false" hub a b
K hub apply -f "$SRC/crds/inferencegraph.yaml" >/dev/null || fail "apply CRD"
apply_member_secrets hub a b

start_agent() {  # start_agent NAME FLAGS...: an aggregated builtin:tiny agent; sets URL[NAME]
  local name=$1; shift
  KVMESH_CACHE_DIR="$WORK/cache" "$AGENT" --role aggregated --model builtin:tiny --host 127.0.0.1 --port 0 \
    --ready-file "$WORK/$name.ready" --engine.kv-cache-mib 16 --transfer.ucx-tls tcp "$@" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
}
declare -A URL=()
start_agent a0
start_agent b1
start_agent b0 --engine.enable-prefix-caching=false
for n in a0 b1 b0; do
  for _ in $(seq 1200); do [ -s "$WORK/$n.ready" ] && break; kill -0 "${PID[$n]}" || break; sleep 0.1; done
  [ -s "$WORK/$n.ready" ] || fail "agent $n did not become ready"
  URL[$n]=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$WORK/$n.ready")
done

"$OPERATOR" --kubeconfig "$WORK/hub.kc" --host 127.0.0.1 --port 0 --ready-file "$WORK/operator.ready" \
  --hub.enabled --hub.interval 1s --hub.member-timeout 2s --hub.copy-interval 3s \
  >"$WORK/operator.log" 2>&1 &
PID[operator]=$!
wait_ready "$WORK/operator.ready" "${PID[operator]}" "operator"
operator_port=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$WORK/operator.ready")

cat >"$WORK/graph.yaml" <<YAML
apiVersion: kvmesh.dev/v1alpha1
kind: InferenceGraph
metadata:
  name: chat
  namespace: default
  annotations:
    kvmesh.dev/member-agents: "a=${URL[a0]},b=${URL[b1]},b=${URL[b0]}"
spec:
  prefill: {replicas: 2, gpusPerWorker: 1}
  decode: {replicas: 6, gpusPerWorker: 1}
  placement:
    policy: cache-locality
    clusters:
      - {name: a, kubeconfigSecret: member-a, region: us-east, gpuCapacity: 8}
      - {name: b, kubeconfigSecret: member-b, region: eu-west, gpuCapacity: 8}
    links:
      - {from: a, to: b, bandwidthGbps: 100, latencyMs: 40}
    # A copy pays when it arrives sooner than b would compute the document once. These agents
    # prefill the tiny model on the CPU at ~1,500 tokens/s (not the default 20,000 of a GPU
    # replica): 608 tokens take ~0.4 s there, the copy ~40 ms.
    model: {prefillTokensPerS: 1500}
YAML
K hub apply -f "$WORK/graph.yaml" >/dev/null || fail "apply graph"

echo "== traffic on one document from both regions until the hub has copied it into b"
"$PY" - "$WORK" "$operator_port" "${URL[a0]}" "${URL[b0]}" "${URL[b1]}" <<'PY' || fail "prefix copy check"
import json, subprocess, sys, time, urllib.request

work, port, a0, b0, b1 = sys.argv[1:6]
words = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
DOC = "Document: " + " ".join(words[(i * 11) % 26] for i in range(150))

def post(url, prompt):
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 6, "temperature": 0, "ignore_eos": True,
            "return_token_ids": True}
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))

def status_b():
    out = subprocess.run(["kubectl", "--kubeconfig", f"{work}/hub.kc", "get", "inferencegraph", "chat", "-o", "json"],
                         capture_output=True, check=True).stdout
    clusters = {c["name"]: c for c in json.loads(out).get("status", {}).get("clusters", [])}
    json.dump(clusters, open(f"{work}/status.json", "w"), indent=1)
    return clusters.get("b", {})

def metric(url, name, labels):
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total

copy, i = None, 0
deadline = time.time() + 90
while time.time() < deadline:
    for url in (a0, b0):
        post(url, f"{DOC} Question {i}: what does it say?")
    i += 1
    b = status_b()
    copy = b.get("lastPrefixCopy")
    if copy and copy.get("result") == "ok":
        break
    time.sleep(0.3)
assert copy and copy["result"] == "ok", ("no successful copy", copy)
assert copy["source"] == "a" and copy["root"].startswith("root:"), copy
assert copy["importedBlocks"] > 0 and copy["bytes"] > 0, copy
print(f"hub copied {copy['root']} a -> b after {i} request pairs: {copy['importedBlocks']} blocks, "
      f"{copy['bytes']} bytes")
hub = f"http://127.0.0.1:{port}"
assert metric(hub, "kvmesh_hub_prefix_copies_total", {"cluster": "b", "result": "ok"}) == 1
assert metric(hub, "kvmesh_hub_prefix_copy_bytes_total", {"cluster": "b"}) == copy["bytes"]
assert metric(a0, "kvmesh_agent_kv_prefix_copies_total", {"side": "export", "result": "ok"}) >= 1
assert metric(b1, "kvmesh_agent_kv_prefix_copies_total", {"side": "import", "result": "ok"}) == 1
assert metric(b1, "kvmesh_agent_kv_transfer_bytes_total", {"direction": "in"}) >= copy["bytes"]

# b1 never saw a request: it serves the document from the copied blocks, with a0's tokens.
prompt = f"{DOC} Question final: what does it say?"
want, got = post(a0, prompt), post(b1, prompt)
cached = got["usage"]["prompt_tokens_details"]["cached_tokens"]
assert cached >= (copy["importedBlocks"] - 1) * 16, (cached, copy)
assert got["choices"][0]["token_ids"] == want["choices"][0]["token_ids"], (got, want)
print(f"b1 served the document with {cached} cached tokens and a0's exact tokens")

# b holds the root now: no further copy over several passes and copy intervals (3 s).
first_time = copy["time"]
end = time.time() + 8
while time.time() < end:
    for url in (a0, b0):
        post(url, f"{DOC} Question {i}: what does it say?")
    i += 1
    time.sleep(0.3)
b = status_b()
assert b["lastPrefixCopy"]["time"] == first_time, b["lastPrefixCopy"]
assert metric(hub, "kvmesh_hub_prefix_copies_total", {"cluster": "b"}) == 1
print("no second copy once b holds the root")
PY
echo "PASS: hub_prefix_copy_test"
