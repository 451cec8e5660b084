#!/usr/bin/env bash
# Disaggregated serving on one machine: a prefill agent and a decode agent (kvmesh-agent, CPU
# backend, built-in tiny model) on free loopback ports. One chat request goes to the prefill agent
# (first token + transfer handle), then to the decode agent, which pulls the prompt's KV blocks
# over UCX and decodes. Prints both answers and the transfer metrics, then stops the agents.
#   scripts/agent_demo.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
AGENT="$BUILD/agent/kvmesh-agent"
PY=/usr/bin/python3
[[ -x "$AGENT" ]] || { echo "missing $AGENT; build first (scripts/setup.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
for role in prefill decode; do
  "$AGENT" --role "$role" --port 0 --transfer.ucx-tls tcp --ready-file "$tmp/$role.json" >"$tmp/$role.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 600); do [[ -f "$tmp/prefill.json" && -f "$tmp/decode.json" ]] && break; sleep 0.1; done
[[ -f "$tmp/prefill.json" && -f "$tmp/decode.json" ]] || { cat "$tmp"/*.log >&2; exit 1; }
"$PY" - "$tmp" <<'PY'
import json, sys, urllib.request
tmp = sys.argv[1]
P = json.load(open(f"{tmp}/prefill.json"))["http"]
D = json.load(open(f"{tmp}/decode.json"))["http"]
def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)
body = {"model": "tiny", "messages": [{"role": "user", "content": "Explain disaggregated prefill and decode."}],
        "max_tokens": 24, "temperature": 0}
print(f"prefill agent {P}, decode agent {D}")
pre = post(P + "/v1/chat/completions", dict(body, kv_transfer_params={"do_remote_decode": True}))
h = pre["kv_transfer_params"]
print(f"prefill: first token {h['first_token']}, {h['num_tokens']} prompt tokens in blocks {h['block_ids']}, lease {h['lease_id']}")
dec = post(D + "/v1/chat/completions", dict(body, kv_transfer_params=h))
print("decode answer (random weights, so gibberish by design):", json.dumps(dec["choices"][0]["message"]["content"]))
print("usage:", json.dumps(dec["usage"]))
with urllib.request.urlopen(D + "/metrics") as r:
    for line in r.read().decode().splitlines():
        if line.startswith("kvmesh_agent_kv_transfer_bytes_total") or line.startswith("kvmesh_agent_kv_transfer_seconds_sum"):
            print(line)
PY
