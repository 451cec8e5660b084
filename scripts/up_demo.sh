#!/usr/bin/env bash
# The main job: `kvmesh up` with the embedded default graph (built-in tiny model, 1 prefill agent +
# 1 decode agent + the router, all on the CPU, loopback ports), then one sample chat request
# through the router's OpenAI endpoint, printed, then a clean stop.
# Usage: scripts/up_demo.sh [BUILD_DIR] (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-build}"
run_dir="$(mktemp -d "${TMPDIR:-/tmp}/kvmesh-demo-XXXXXX")"
log="$run_dir/up.log"

"./$bin/cli/kvmesh" up --port "${KVMESH_DEMO_PORT:-0}" --run-dir "$run_dir/up" >"$log" 2>&1 &
up_pid=$!
cleanup() {
  if kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  rm -rf "$run_dir"
}
trap cleanup EXIT

echo "== kvmesh up (log: the [name]-prefixed lines of every child)"
for _ in $(seq 1 600); do
  [ -f "$run_dir/up/up.json" ] && break
  if ! kill -0 "$up_pid" 2>/dev/null; then
    echo "kvmesh up exited before it was ready:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.5
done
[ -f "$run_dir/up/up.json" ] || { echo "kvmesh up: not ready after 300 s" >&2; tail -50 "$log" >&2; exit 1; }
sed -n '/ready. OpenAI-compatible endpoint/,/^$/p' "$log"
port="$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$run_dir/up/router.ready")"

# A system prompt long enough (> disaggregation.minRemotePrefillTokens = 64 tokens) that the first
# request's prefill goes to the prefill agent and its KV moves to the decode agent.
body='{"model": "tiny", "max_tokens": 32, "messages": [
  {"role": "system", "content": "You are the kvmesh demo assistant. kvmesh serves large language models with disaggregated prefill and decode and KV-cache locality: a router sends each request to the worker that already holds its prompt prefix, a prefill worker computes the prompt, and a decode worker pulls the KV blocks and generates."},
  {"role": "user", "content": "Explain KV-cache-aware routing in one paragraph."}]'
echo "== sample request: POST http://127.0.0.1:$port/v1/chat/completions (streamed; the built-in model has random weights, so the text is gibberish by design)"
curl -sS --fail-with-body -N "http://127.0.0.1:$port/v1/chat/completions" \
  -H 'Content-Type: application/json' -d "$body"', "stream": true, "stream_options": {"include_usage": true}}' |
  /usr/bin/python3 -c '
import json, sys
events = 0
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("data: "):
        continue
    data = line[6:]
    if data == "[DONE]":
        print("\n[DONE] after %d events" % events)
        break
    events += 1
    chunk = json.loads(data)
    for c in chunk.get("choices", []):
        sys.stdout.write(c.get("delta", {}).get("content") or "")
        sys.stdout.flush()
    if chunk.get("usage"):
        print("\nusage:", json.dumps(chunk["usage"]))
'
echo "== the same prompt again, not streamed: its prefix is now cached on the decode agent (cached_tokens)"
curl -sS --fail-with-body "http://127.0.0.1:$port/v1/chat/completions" \
  -H 'Content-Type: application/json' -d "$body"'}'
echo
echo "== router metrics (routing decisions, remote vs local prefill)"
curl -sS "http://127.0.0.1:$port/metrics" | grep -E '^kvmesh_router_(routing_decisions_total|prefills_total|requests_total)' || true
echo "== stopping (SIGTERM to kvmesh up: router first, then the agents)"
