#!/usr/bin/env bash
# The REAL kubectl against kvmesh-test-apiserver: apply a CRD and a custom resource, get with
# printer columns, -o yaml, describe, patch --type merge, apply --server-side, wait, the
# Deployment controller (get deploy,pods), delete. Also the kvmesh CRD + example graphs when
# crds/inferencegraph.yaml exists.
set -euo pipefail
SRC=${KVMESH_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${KVMESH_BINARY_DIR:-$SRC/build}
SERVER=$BIN/tests/kube/kvmesh-test-apiserver
command -v kubectl >/dev/null || { echo "SKIP: kubectl not installed"; exit 0; }
[ -x "$SERVER" ] || { echo "FAIL: $SERVER not built"; exit 1; }

WORK=$(mktemp -d)
export HOME=$WORK/home
mkdir -p "$HOME"
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- server log"; tail -20 "$WORK/server.log" || true; exit 1; }

"$SERVER" --port 0 --ready-file "$WORK/ready" --kubeconfig-out "$WORK/kubeconfig" \
  --bookmark-interval 500ms >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do [ -s "$WORK/ready" ] && break; sleep 0.1; done
[ -s "$WORK/ready" ] || fail "server did not become ready"
K() { kubectl --kubeconfig "$WORK/kubeconfig" --request-timeout=10s "$@"; }

echo "== apply CRD"
K apply -f "$SRC/tests/kube/testdata/widget-crd.yaml" || fail "apply crd"
K wait --for=condition=Established crd/widgets.example.com --timeout=20s || fail "crd established"
echo "== apply custom resource"
K apply -f "$SRC/tests/kube/testdata/widget.yaml" || fail "apply widget"
out=$(K get widgets) || fail "get widgets"
echo "$out"
echo "$out" | head -1 | grep -q "SIZE.*COLOR.*READY.*AGE" || fail "printer columns missing: $out"
echo "$out" | grep -q "gizmo *3 *red" || fail "row missing: $out"
K get wd gizmo -o yaml | grep -q "color: red" || fail "-o yaml lacks the defaulted color"
echo "== invalid resource is rejected with the field path"
if err=$(K apply -f - 2>&1 <<'YAML'
apiVersion: example.com/v1
kind: Widget
metadata: {name: broken}
spec: {size: 99}
YAML
); then fail "size 99 accepted"; fi
echo "$err" | grep -q "spec.size" || fail "error does not name spec.size: $err"
echo "== patch --type merge + status + wait"
K patch widget gizmo --type merge -p '{"spec":{"color":"blue"}}' || fail "patch merge"
[ "$(K get widget gizmo -o jsonpath='{.spec.color}')" = blue ] || fail "patch not applied"
K patch widget gizmo --subresource=status --type merge \
  -p '{"status":{"conditions":[{"type":"Ready","status":"True"}]}}' || fail "patch status"
K wait --for=condition=Ready widget/gizmo --timeout=20s || fail "wait Ready"
K get widgets | grep -q "gizmo *3 *blue *True" || fail "Ready column: $(K get widgets)"
echo "== events + describe"
K create -f - <<YAML || fail "create event"
apiVersion: v1
kind: Event
metadata: {name: gizmo.1}
involvedObject: {apiVersion: example.com/v1, kind: Widget, name: gizmo, namespace: default, uid: $(K get widget gizmo -o jsonpath='{.metadata.uid}')}
reason: Polished
message: the gizmo was polished
type: Normal
YAML
desc=$(K describe widget gizmo) || fail "describe"
echo "$desc" | grep -q "Size: *3" || fail "describe lacks spec: $desc"
echo "$desc" | grep -q "Polished" || fail "describe lacks the event: $desc"
echo "== server-side apply"
K apply --server-side --field-manager=tester -f - <<'YAML' || fail "server-side apply"
apiVersion: example.com/v1
kind: Widget
metadata: {name: ssa}
spec: {size: 5}
YAML
K get widget ssa -o jsonpath='{.metadata.managedFields[0].manager}' | grep -q tester || fail "managedFields"
K apply --server-side --dry-run=server --field-manager=tester -f - <<'YAML' || fail "dry-run apply"
apiVersion: example.com/v1
kind: Widget
metadata: {name: ssa}
spec: {size: 6}
YAML
[ "$(K get widget ssa -o jsonpath='{.spec.size}')" = 5 ] || fail "dry run changed the object"
echo "== deployment controller"
K apply -f - <<'YAML' || fail "apply deployment"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: busybox, command: [sleep, "1000"]}]
YAML
for _ in $(seq 50); do [ "$(K get pods -l app=web -o name | wc -l)" = 2 ] && break; sleep 0.2; done
out=$(K get deploy,pods) || fail "get deploy,pods"
echo "$out"
echo "$out" | grep -q "deployment.apps/web *0/2" || fail "deployment row: $out"
[ "$(echo "$out" | grep -c '^pod/web-')" = 2 ] || fail "2 pods expected: $out"
K scale deploy web --replicas=1 || fail "scale"
for _ in $(seq 50); do [ "$(K get pods -l app=web -o name | wc -l)" = 1 ] && break; sleep 0.2; done
[ "$(K get pods -l app=web -o name | wc -l)" = 1 ] || fail "scale down"
echo "== client-side re-apply (3-way merge patches)"
sed 's/size: 3/size: 6/' "$SRC/tests/kube/testdata/widget.yaml" | K apply -f - || fail "re-apply widget"
[ "$(K get widget gizmo -o jsonpath='{.spec.size}')" = 6 ] || fail "re-apply did not change size"
[ "$(K get widget gizmo -o jsonpath='{.spec.color}')" = blue ] || fail "re-apply dropped a field it does not manage"
K apply -f - <<'YAML' || fail "re-apply deployment"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, rev: "2"}}
    spec:
      containers: [{name: c, image: busybox, command: [sleep, "2000"]}]
YAML
for _ in $(seq 50); do [ "$(K get pods -l rev=2 -o name | wc -l)" = 1 ] && break; sleep 0.2; done
[ "$(K get pods -l rev=2 -o name | wc -l)" = 1 ] || fail "new template did not roll out: $(K get rs,pods)"
[ "$(K get rs -o name | wc -l)" = 2 ] || fail "expected old + new ReplicaSet: $(K get rs)"
echo "== delete"
K delete widget gizmo ssa || fail "delete widgets"
[ -z "$(K get widgets -o name)" ] || fail "widgets left"
K delete deploy web || fail "delete deploy"
for _ in $(seq 50); do [ -z "$(K get pods -o name)" ] && break; sleep 0.2; done
[ -z "$(K get pods -o name)" ] || fail "pods not garbage-collected"

if [ -f "$SRC/crds/inferencegraph.yaml" ]; then
  echo "== kvmesh CRD + example graphs"
  K apply -f "$SRC/crds/inferencegraph.yaml" || fail "apply kvmesh crd"
  K wait --for=condition=Established crd/inferencegraphs.kvmesh.dev --timeout=20s || fail "kvmesh crd established"
  graphs=$(grep -l "kind: InferenceGraph" "$SRC"/examples/*.yaml 2>/dev/null || true)
  for ns in $(grep -h "^  namespace:" $graphs /dev/null | awk '{print $2}' | sort -u); do
    printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$ns" | K apply -f - || fail "create namespace $ns"
  done
  for f in $graphs; do
    K apply -f "$f" || fail "apply $f"
  done
  if [ -n "$graphs" ]; then
    out=$(K get ig -A) || fail "get ig"
    echo "$out"
    [ "$(echo "$out" | tail -n +2 | wc -l)" -ge "$(echo "$graphs" | wc -w)" ] || fail "graphs missing: $out"
    K describe ig -A >/dev/null || fail "describe ig"
    K delete ig -A --all || fail "delete ig"
    [ -z "$(K get ig -A -o name)" ] || fail "graphs left"
  fi
fi
echo "PASS"
