#!/usr/bin/env bash
# Operator scale: GRAPHS InferenceGraphs (examples/local-tiny.yaml as g0000, g0001, ... in namespace
# default) are created in the test API server (tests/kube) BEFORE kvmesh-operator starts, so the
# operator reconciles them from scratch. No kubelet runs: pods never turn ready and every graph
# settles in Pending/Progressing, which is a steady state too (the operator must stop writing).
#
# Measures: seconds from operator start to steady state (every graph has status.observedGeneration
# == metadata.generation, the operator's write counters unchanged for QUIET_S seconds, queue depth
# 0), reconciles and API requests per graph (operator metrics and the server's /_test/stats), then
# WINDOW_S seconds of steady state with --resync-period RESYNC (every graph re-reconciled several
# times): writes in that window, target 0. Prints one JSON object; exits 1 if steady writes != 0.
#
# The operator reconciles from its informer caches, so a resync of an unchanged graph makes no API
# request: steady_api_reads counts the operator's reads in the window (target 0 too). Keep
# WINDOW_S > RESYNC so that every graph is resynced in the window (e.g. RESYNC=30s WINDOW_S=35:
# the convergence phase is not disturbed by resyncs, and the window still resyncs every graph).
#
# Usage: bench/operator_scale.sh [BUILD_DIR] ; env GRAPHS (1000), WORKERS (4), RESYNC (2s),
# WINDOW_S (10), QUIET_S (3), TIMEOUT_S (900), EXAMPLE (examples/local-tiny.yaml), API_ARGS (extra
# kvmesh-test-apiserver flags, e.g. --controller-interval 1s).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-build}"
export GRAPHS="${GRAPHS:-1000}" WORKERS="${WORKERS:-4}" RESYNC="${RESYNC:-2s}"
export WINDOW_S="${WINDOW_S:-10}" QUIET_S="${QUIET_S:-3}" TIMEOUT_S="${TIMEOUT_S:-900}"
example="${EXAMPLE:-examples/local-tiny.yaml}"
tmp="$(mktemp -d)"
export HOME="$tmp"   # kubectl's discovery cache
pids=()
cleanup() {
  # Operator first (it may block on requests to the API server), then the API server; KILL after 10 s.
  local i p
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p="${pids[$i]}"
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_file() { for _ in $(seq 1 600); do [[ -s "$1" ]] && return 0; sleep 0.2; done; echo "timeout waiting for $1" >&2; exit 1; }
json_field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
kc() { kubectl --kubeconfig "$tmp/kubeconfig" --request-timeout=30s "$@"; }

"./$bin/tests/kube/kvmesh-test-apiserver" --port 0 --ready-file "$tmp/api.ready" \
  --kubeconfig-out "$tmp/kubeconfig" --history 100000 ${API_ARGS:-} >"$tmp/api.log" 2>&1 &
pids+=($!)
wait_file "$tmp/api.ready"
export API_URL="$(json_field "$tmp/api.ready" url)"

kc apply -f crds/inferencegraph.yaml >/dev/null
kc wait --for=condition=Established --timeout=30s crd/inferencegraphs.kvmesh.dev >/dev/null
kc create --dry-run=client -o json -f "$example" >"$tmp/graph.json"

# Create the graphs on one keep-alive connection, then clear the server's request counters so that
# /_test/stats counts the operator (and this script's polling, subtracted below) only.
/usr/bin/python3 - "$tmp/graph.json" <<'PY'
import http.client, json, os, sys, urllib.parse
u = urllib.parse.urlparse(os.environ["API_URL"])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
g = json.load(open(sys.argv[1]))
g["metadata"] = {"namespace": "default"}
for i in range(int(os.environ["GRAPHS"])):
    g["metadata"]["name"] = f"g{i:04d}"
    c.request("POST", "/apis/kvmesh.dev/v1alpha1/namespaces/default/inferencegraphs",
              body=json.dumps(g), headers={"Content-Type": "application/json"})
    r = c.getresponse(); body = r.read()
    if r.status != 201: sys.exit(f"create g{i:04d}: {r.status} {body[:300]!r}")
c.request("POST", "/_test/reset-stats"); c.getresponse().read()
PY

# Degraded grace far away: the PoolUnavailable transition after 5 min is a real status change, not
# what this benchmark measures.
"./$bin/operator/manager/kvmesh-operator" --kubeconfig "$tmp/kubeconfig" --host 127.0.0.1 --port 0 \
  --ready-file "$tmp/op.ready" --workers "$WORKERS" --resync-period "$RESYNC" --degraded-grace 24h \
  >"$tmp/op.log" 2>&1 &
op_pid=$!
pids+=("$op_pid")
start_ns="$(date +%s%N)"
export START_NS="$start_ns"
wait_file "$tmp/op.ready"
export OP_URL="$(json_field "$tmp/op.ready" http)"

rc=0
/usr/bin/python3 - <<'PY' || rc=$?
import http.client, json, os, re, sys, time, urllib.parse
API, OP = os.environ["API_URL"], os.environ["OP_URL"]
N, WINDOW, QUIET = int(os.environ["GRAPHS"]), float(os.environ["WINDOW_S"]), float(os.environ["QUIET_S"])
start = int(os.environ["START_NS"]) / 1e9
deadline = start + float(os.environ["TIMEOUT_S"])
mine = {}  # this script's own API requests ("verb resource" -> n), subtracted from server stats

def conn(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60)
api, op = conn(API), conn(OP)

def get(c, path):
    c.request("GET", path); r = c.getresponse(); body = r.read()
    if r.status != 200: sys.exit(f"GET {path}: {r.status} {body[:300]!r}")
    return body

def metrics():
    m = {}
    for line in get(op, "/metrics").decode().splitlines():
        mm = re.match(r'^(kvmesh_operator_[a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$', line)
        if mm: m[mm.group(1) + (mm.group(2) or "")] = float(mm.group(3))
    return m

def total(m, name):
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))

def val(m, name, label):
    return sum(v for k, v in m.items() if k.startswith(name + "{") and label in k)

def stats():
    return json.loads(get(api, "/_test/stats"))

def unobserved():
    mine["list inferencegraphs"] = mine.get("list inferencegraphs", 0) + 1
    items = json.loads(get(api, "/apis/kvmesh.dev/v1alpha1/namespaces/default/inferencegraphs"))["items"]
    bad = [g for g in items
           if (g.get("status") or {}).get("observedGeneration") != g["metadata"].get("generation")]
    return len(items), len(bad)

W = "kvmesh_operator_writes_total"
last_w, last_change = None, time.time()
while True:
    now = time.time()
    if now > deadline: sys.exit("timeout waiting for steady state")
    m = metrics()
    w = total(m, W)
    if w != last_w: last_w, last_change = w, now
    quiet = now - last_change >= QUIET and m.get("kvmesh_operator_queue_depth", 1) == 0 \
        and m.get("kvmesh_operator_graphs", 0) == N
    if quiet:
        n, bad = unobserved()
        if n == N and bad == 0: break
    time.sleep(0.25)
steady_at = last_change  # the last write the operator made before going quiet
detected_at = time.time()
m0, s0 = metrics(), stats()

# Steady window: every graph is re-reconciled (resync) and nothing may be written.
time.sleep(WINDOW)
m1, s1 = metrics(), stats()

def sub(a, b): return {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b) if a.get(k, 0) - b.get(k, 0)}
server_req = {k: v - mine.get(k, 0) for k, v in s0["requests"].items()}
server_req = {k: v for k, v in server_req.items() if v}
reads = val(m0, "kvmesh_operator_api_requests_total", 'kind="read"')
writes = val(m0, "kvmesh_operator_api_requests_total", 'kind="write"')
rec = lambda m: {k.split('"')[1]: int(v) for k, v in m.items() if k.startswith("kvmesh_operator_reconcile_total{")}
wr = lambda m: {k.split('"')[1]: int(v) for k, v in m.items() if k.startswith(W + "{")}
win_rec = sub(rec(m1), rec(m0))
steady_op_writes = int(total(m1, W) - total(m0, W))
steady_op_write_requests = int(val(m1, "kvmesh_operator_api_requests_total", 'kind="write"') - writes)
steady_server_writes = s1["writes"] - s0["writes"]
out = {
    "graphs": N, "workers": int(os.environ["WORKERS"]), "resync": os.environ["RESYNC"],
    "seconds_to_steady": round(steady_at - start, 2),
    "seconds_to_detect": round(detected_at - start, 2),
    "reconciles": rec(m0),
    "reconciles_per_graph": round(sum(rec(m0).values()) / N, 2),
    "operator_writes": wr(m0),
    "api_reads": int(reads), "api_writes": int(writes),
    "reads_per_graph": round(reads / N, 2), "writes_per_graph": round(writes / N, 2),
    "reads_per_reconcile": round(reads / max(1, sum(rec(m0).values())), 2),
    "server": {"write_requests": s0["write_requests"], "writes": s0["writes"],
               "requests_by_operator": dict(sorted(server_req.items())),
               "requests_per_graph": round(sum(server_req.values()) / N, 2),
               "bench_polls_subtracted": mine},
    "steady_window_s": WINDOW,
    "steady_reconciles": win_rec,
    "steady_reconciles_per_graph": round(sum(win_rec.values()) / N, 2),
    "steady_api_reads": int(val(m1, "kvmesh_operator_api_requests_total", 'kind="read"') - reads),
    "steady_operator_writes": steady_op_writes,
    "steady_operator_write_requests": steady_op_write_requests,
    "steady_server_write_requests": s1["write_requests"] - s0["write_requests"],
    "steady_server_writes": steady_server_writes,
    "steady_writes": max(steady_op_writes, steady_op_write_requests, steady_server_writes),
}
print(json.dumps(out))
sys.exit(1 if out["steady_writes"] != 0 else 0)
PY
if [[ $rc -ne 0 ]]; then
  echo "--- operator log (tail)" >&2; tail -n 20 "$tmp/op.log" >&2
  echo "--- api server log (tail)" >&2; tail -n 20 "$tmp/api.log" >&2
fi
exit "$rc"
