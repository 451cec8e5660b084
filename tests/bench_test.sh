#!/usr/bin/env bash
# `kvmesh bench` end to end against one real kvmesh-agent (aggregated, builtin:tiny, free loopback
# port, ready file): a synthetic shared-prefix run (completions, token ids), a chat run, and a
# Mooncake trace replay scaled to the tiny model's context. Checks the JSON report (every request
# ok, TTFT > 0, cached-token ratio > 0 where prompts share prefixes), the SVG plot parses as XML
# with the expected parts, an unreachable URL exits 1 with a clear message, bad flags exit 2.
# The agent is stopped by pid.
set -euo pipefail
: "${KVMESH_SOURCE_DIR:?}" "${KVMESH_BINARY_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
KVMESH="$KVMESH_BINARY_DIR/cli/kvmesh"
AGENT="$KVMESH_BINARY_DIR/agent/kvmesh-agent"
[[ -x "$KVMESH" ]] || { echo "missing $KVMESH (build target kvmesh)" >&2; exit 1; }
[[ -x "$AGENT" ]] || { echo "missing $AGENT (build target kvmesh-agent)" >&2; exit 1; }

tmp="$(mktemp -d)"
agent_pid=""
cleanup() {
  if [[ -n "$agent_pid" ]] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f "$tmp/agent.log" ]] && tail -20 "$tmp/agent.log" >&2; exit 1; }

# --- usage errors (no server needed) ---------------------------------------------------------
set +e
"$KVMESH" bench --no-such-flag >"$tmp/o" 2>"$tmp/e"; rc=$?
[[ $rc -eq 2 ]] || fail "unknown flag: exit $rc, want 2"
grep -q "no-such-flag" "$tmp/e" || fail "unknown flag not named: $(cat "$tmp/e")"
"$KVMESH" bench --rate -1 >"$tmp/o" 2>"$tmp/e"; rc=$?
[[ $rc -eq 2 ]] || fail "--rate -1: exit $rc, want 2"
"$KVMESH" bench --endpoint embeddings >"$tmp/o" 2>"$tmp/e"; rc=$?
[[ $rc -eq 2 ]] || fail "--endpoint embeddings: exit $rc, want 2"
"$KVMESH" bench --shared-prefix-ratio 1.5 >"$tmp/o" 2>"$tmp/e"; rc=$?
[[ $rc -eq 2 ]] || fail "--shared-prefix-ratio 1.5: exit $rc, want 2"
"$KVMESH" bench --help >"$tmp/o" 2>"$tmp/e"; rc=$?
[[ $rc -eq 0 ]] && grep -q -- "--shared-prefix-ratio" "$tmp/o" || fail "--help: exit $rc"
# --- unreachable endpoint: a port nobody listens on ------------------------------------------
port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
"$KVMESH" bench --url "http://127.0.0.1:$port" --requests 1 >"$tmp/o" 2>"$tmp/e"; rc=$?
set -e
[[ $rc -eq 1 ]] || fail "unreachable URL: exit $rc, want 1"
grep -q "cannot reach http://127.0.0.1:$port" "$tmp/e" || fail "unclear message: $(cat "$tmp/e")"
echo "ok: usage errors exit 2, unreachable URL exits 1"

# --- one agent ----------------------------------------------------------------------------------
export KVMESH_CACHE_DIR="$tmp/cache" OPENBLAS_NUM_THREADS=1 KVMESH_CPU_THREADS=1
"$AGENT" --role aggregated --model builtin:tiny --port 0 --ready-file "$tmp/agent.ready" >"$tmp/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 1200); do
  [[ -f "$tmp/agent.ready" ]] && break
  kill -0 "$agent_pid" 2>/dev/null || fail "agent exited early"
  sleep 0.1
done
[[ -f "$tmp/agent.ready" ]] || fail "agent not ready after 120 s"
url="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$tmp/agent.ready")"
echo "agent at $url"

check() {  # check NAME JSON PYTHON-ASSERTIONS (r = the report, s = its summary)
  "$PY" - "$2" "$3" <<'PY' || fail "$1: report check failed"
import json, sys
lines = open(sys.argv[1]).read().strip().splitlines()
r = json.loads(lines[-1])
s = r["summary"]
exec(sys.argv[2])
PY
}

# 1. Synthetic shared-prefix run, JSON on stdout (last line), plot.
"$KVMESH" bench --url "$url" --requests 16 --concurrency 2 --input-len 96 --output-len 8 \
  --shared-prefix-ratio 0.5 --num-prefixes 2 --seed 3 --json - --json-requests \
  --plot "$tmp/syn.svg" >"$tmp/syn.out" 2>"$tmp/syn.err" || fail "synthetic run: $(cat "$tmp/syn.err")"
grep -q "TTFT" "$tmp/syn.out" || fail "no summary table"
check synthetic "$tmp/syn.out" '
assert s["requests_sent"] == 16 and s["requests_ok"] == 16, s
assert s["requests_failed"] == 0 and s["errors"] == {}, s
assert s["ttft_ms"]["count"] == 16 and s["ttft_ms"]["min"] > 0, s["ttft_ms"]
assert s["e2e_ms"]["p50"] >= s["ttft_ms"]["p50"], s
assert s["output_tokens"] == 16 * 8, s["output_tokens"]   # ignore_eos: every request makes max_tokens
assert s["prompt_tokens"] >= 16 * 96, s["prompt_tokens"]
assert s["cached_token_ratio"] > 0.2, s["cached_token_ratio"]   # 48 of 96 tokens shared, 2 groups
# One gap per pair of text-bearing chunks; a token whose text is held back (an incomplete UTF-8
# sequence of the byte-level tokenizer) sends no text, so there can be fewer gaps than tokens.
assert 16 * 3 <= s["itl_ms"]["count"] <= 16 * 7, s["itl_ms"]
assert s["request_throughput"] > 0 and s["output_token_throughput"] > 0
assert len(r["requests"]) == 16 and all(q["ok"] for q in r["requests"])
assert r["config"]["shared_prefix_ratio"] == 0.5
assert r["bench_peak_rss_bytes"] > 0
'
"$PY" - "$tmp/syn.svg" <<'PY' || fail "SVG does not parse"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
assert root.tag == ns + "svg", root.tag
texts = [t.text or "" for t in root.iter(ns + "text")]
assert "latency (ms)" in texts and "fraction of requests" in texts, texts
assert any(t.startswith("TTFT") for t in texts) and any(t.startswith("E2E") for t in texts), texts
assert len(list(root.iter(ns + "polyline"))) == 3  # TTFT, ITL, E2E
PY
echo "ok: synthetic shared-prefix run"

# 2. Without shared prefixes the cache hits (almost) nothing: the ratio above is the workload's.
"$KVMESH" bench --url "$url" --requests 6 --concurrency 2 --input-len 96 --output-len 4 --seed 11 \
  --json "$tmp/noshare.json" >"$tmp/noshare.out" 2>"$tmp/noshare.err" || fail "no-share run: $(cat "$tmp/noshare.err")"
check no-share "$tmp/noshare.json" '
assert s["requests_ok"] == 6, s
assert s["cached_token_ratio"] < 0.1, s["cached_token_ratio"]
'
echo "ok: unshared prompts, no cache hits"

# 3. Chat endpoint, Poisson arrivals.
"$KVMESH" bench --url "$url" --endpoint chat --requests 6 --rate 20 --input-len 20 --output-len 4 \
  --json "$tmp/chat.json" >"$tmp/chat.out" 2>"$tmp/chat.err" || fail "chat run: $(cat "$tmp/chat.err")"
check chat "$tmp/chat.json" '
assert s["requests_ok"] == 6 and s["ttft_ms"]["min"] > 0, s
'
echo "ok: chat run"

# 4. Mooncake trace replay, scaled to the tiny model (512-token blocks -> 16 tokens). The shared
# folder is found as the other tests find it (a clean clone elsewhere still reaches the data).
trace="$(bash "$KVMESH_SOURCE_DIR/scripts/shared_dir.sh")/data/traces/mooncake_conversation_trace.jsonl"
"$KVMESH" bench --url "$url" --trace "$trace" --max-requests 20 \
  --length-scale 0.03125 --time-scale 0.01 --max-output-tokens 8 --sla-ttft-ms 60000 \
  --json "$tmp/trace.json" --plot "$tmp/trace.svg" >"$tmp/trace.out" 2>"$tmp/trace.err" \
  || fail "trace run: $(cat "$tmp/trace.err")"
check trace "$tmp/trace.json" '
assert s["requests_sent"] == 20 and s["requests_ok"] == 20, s
assert s["ttft_ms"]["min"] > 0
assert s["cached_token_ratio"] > 0, s["cached_token_ratio"]   # the trace reuses hash ids
assert s["good_requests"] == 20 and s["sla_set"], s
'
"$PY" -c 'import sys, xml.etree.ElementTree as ET; ET.parse(sys.argv[1])' "$tmp/trace.svg" || fail "trace SVG"
echo "ok: trace replay"

# 5. A run where every request fails (prompt beyond the context) exits 1 and says why.
set +e
"$KVMESH" bench --url "$url" --requests 2 --input-len 5000 --output-len 1 >"$tmp/o" 2>"$tmp/e"; rc=$?
set -e
[[ $rc -eq 1 ]] || fail "all-failed run: exit $rc, want 1"
grep -q "http_400" "$tmp/o" || fail "error kind not reported: $(cat "$tmp/o")"
echo "ok: failed requests are counted by kind"

kill -TERM "$agent_pid"
wait "$agent_pid" || fail "agent exit code $?"
agent_pid=""
echo "PASS"
