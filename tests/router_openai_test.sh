#!/usr/bin/env bash
# The router through the official OpenAI Node.js client (tests/node/openai_e2e.mjs, `openai` npm
# package pinned in tests/node/package-lock.json): `kvmesh up` (default graph: 1 prefill + 1 decode
# agent + router, builtin:tiny) serves chat and completions, streaming and not; models.list; typed
# client errors. See docs/testing-router.md.
set -euo pipefail
source "$(dirname "$0")/router_e2e_lib.sh"
serve_pid=""
cleanup() {
  if [[ -n "$serve_pid" ]]; then kill -TERM "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
  e2e_stop_leftovers
}
trap cleanup EXIT
export KVMESH_CACHE_DIR="$tmp/cache"

command -v node >/dev/null || { echo "node (Node.js >= 18) is required"; exit 1; }
node_dir="$KVMESH_SOURCE_DIR/tests/node"
if [[ ! -d "$node_dir/node_modules/openai" ]]; then
  (cd "$node_dir" && timeout 240 npm ci --no-audit --no-fund)
fi

cd "$KVMESH_SOURCE_DIR/tests"
mkdir -p "$tmp/graph"
"$PY" router_e2e_util.py serve "$tmp/graph" "$tmp/endpoint" > "$tmp/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 1800); do
  [[ -s "$tmp/endpoint" ]] && break
  if ! kill -0 "$serve_pid" 2>/dev/null; then echo "graph failed to start:"; cat "$tmp/serve.log"; exit 1; fi
  sleep 0.1
done
[[ -s "$tmp/endpoint" ]] || { echo "graph not ready after 180 s:"; cat "$tmp/serve.log"; exit 1; }
cat "$tmp/serve.log"
url="$(cat "$tmp/endpoint")"
rc=0
KVMESH_E2E_BASE_URL="$url/v1" KVMESH_E2E_MODEL=tiny timeout 120 node "$node_dir/openai_e2e.mjs" || rc=$?
# The long chat prompt (> 64 uncached tokens) must have taken the P/D path of the default graph.
remote="$("$PY" -c 'import sys, urllib.request, router_e2e_util as u
text = urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=10).read().decode()
print(int(u.metric_value(text, "kvmesh_router_prefills_total", {"where": "remote"}, default=0)))' "$url")"
if [[ "$remote" -ge 1 ]]; then
  echo "ok   router ran $remote remote prefill(s) (kvmesh_router_prefills_total{where=\"remote\"})"
else
  echo "FAIL no remote prefill counted by the router (kvmesh_router_prefills_total{where=\"remote\"} = $remote)"
  rc=1
fi
if [[ $rc -ne 0 ]]; then
  echo "--- graph logs (tails) ---"
  for f in "$tmp"/graph/*.log; do echo "== $f"; tail -n 30 "$f"; done
fi
exit $rc
