# Sourced by the multi-cluster tests (placement_multicluster_test.sh, hub_placement_test.sh): several
# kvmesh-test-apiserver processes as Kubernetes clusters, a kubeconfig for each, the real kubectl.
# Every process is started on 127.0.0.1 with a free port and stopped by pid on exit. Provides:
#   SRC BIN PY SERVER            source dir, build dir, python3, the test API server binary
#   WORK                         a fresh temp dir (removed on exit); HOME is inside it
#   PID[name]                    pids stopped (TERM, then wait) on exit; add your own processes
#   fail MSG                     print FAIL, the servers' log tails and mc_on_fail's output, exit 1
#   wait_ready FILE PID WHAT     wait (10 s) until FILE is non-empty; fail if PID exits first
#   start_clusters "ARGS" NAMES...   one server per name with ARGS (word-split) added; waits until
#                                each is ready: $WORK/NAME.kc (kubeconfig), NAME.ready, NAME.log
#   stop_cluster NAME            kill it by pid, wait, forget it
#   K NAME KUBECTL_ARGS...       the real kubectl against cluster NAME
#   apply_member_secrets HUB NAMES...   Secrets member-NAME (data.kubeconfig) on cluster HUB
#   write_requests NAME          the write requests clients sent to cluster NAME (server's count)
#   chat_graph_yaml GPUS         InferenceGraph default/chat: 3 prefill + 3 decode workers (1 GPU
#                                each), policy spread over a (us-east), b (eu-west), c (ap-south)
#                                with GPUS GPUs each; append links: to it as needed
# The caller sets `set -euo pipefail` and may define mc_on_fail (more diagnostics on failure).
# Without kubectl the test is skipped (exit 0).
SRC=${KVMESH_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BIN=${KVMESH_BINARY_DIR:-$SRC/build}
PY=${KVMESH_PYTHON3:-/usr/bin/python3}
SERVER=$BIN/tests/kube/kvmesh-test-apiserver
command -v kubectl >/dev/null || { echo "SKIP: kubectl not installed"; exit 0; }
[ -x "$SERVER" ] || { echo "FAIL: $SERVER not built"; exit 1; }

WORK=$(mktemp -d)
export HOME=$WORK/home
mkdir -p "$HOME"
declare -A PID=()
_MC_CLUSTERS=()
_mc_cleanup() {
  local name
  for name in "${!PID[@]}"; do kill "${PID[$name]}" 2>/dev/null || true; done
  for name in "${!PID[@]}"; do wait "${PID[$name]}" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap _mc_cleanup EXIT
fail() {
  echo "FAIL: $*"
  local n
  for n in "${_MC_CLUSTERS[@]}"; do echo "--- server $n log"; tail -5 "$WORK/$n.log" 2>/dev/null || true; done
  if declare -F mc_on_fail >/dev/null; then mc_on_fail; fi
  exit 1
}
wait_ready() {
  local _
  for _ in $(seq 100); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || fail "$3 exited before it was ready"
    sleep 0.1
  done
  fail "$3 did not become ready"
}
start_clusters() {
  local args=$1 n; shift
  for n in "$@"; do
    # shellcheck disable=SC2086  # ARGS are flags, split on purpose
    "$SERVER" --port 0 --ready-file "$WORK/$n.ready" --kubeconfig-out "$WORK/$n.kc" $args >"$WORK/$n.log" 2>&1 &
    PID[$n]=$!
    _MC_CLUSTERS+=("$n")
  done
  for n in "$@"; do wait_ready "$WORK/$n.ready" "${PID[$n]}" "server $n"; done
}
stop_cluster() {
  kill "${PID[$1]}"; wait "${PID[$1]}" 2>/dev/null || true; unset "PID[$1]"
}
K() { local n=$1; shift; kubectl --kubeconfig "$WORK/$n.kc" --request-timeout=10s "$@"; }
apply_member_secrets() {
  local hub=$1 n; shift
  for n in "$@"; do
    cat <<YAML
---
apiVersion: v1
kind: Secret
metadata: {name: member-$n, namespace: default}
type: Opaque
data:
  kubeconfig: $(base64 -w0 "$WORK/$n.kc")
YAML
  done >"$WORK/secrets.yaml"
  K "$hub" apply -f "$WORK/secrets.yaml" >/dev/null || fail "apply the member Secrets on $hub"
}
write_requests() {
  "$PY" -c 'import json,sys,urllib.request; u=json.load(open(sys.argv[1]))["url"]; print(json.load(urllib.request.urlopen(u+"/_test/stats"))["write_requests"])' "$WORK/$1.ready"
}
chat_graph_yaml() {
  cat <<YAML
apiVersion: kvmesh.dev/v1alpha1
kind: InferenceGraph
metadata: {name: chat, namespace: default}
spec:
  prefill: {replicas: 3, gpusPerWorker: 1}
  decode: {replicas: 3, gpusPerWorker: 1}
  placement:
    policy: spread
    clusters:
      - {name: a, kubeconfigSecret: member-a, region: us-east, gpuCapacity: $1}
      - {name: b, kubeconfigSecret: member-b, region: eu-west, gpuCapacity: $1}
      - {name: c, kubeconfigSecret: member-c, region: ap-south, gpuCapacity: $1}
YAML
}
