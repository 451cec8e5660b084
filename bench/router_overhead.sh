#!/usr/bin/env bash
# Router overhead: the same open-loop workload (Poisson arrivals at a fixed rate) sent to one
# aggregated agent directly and through kvmesh-router in front of that agent, alternating, in one
# run. Prints one JSON line per pass and a summary of the latency the router adds (p50/p99 of TTFT
# and E2E). Usage: bench/router_overhead.sh [BUILD_DIR] ; env RATE (10), REQUESTS (200), PASSES (2),
# INPUT_LEN (64), OUTPUT_LEN (8).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-build}"
rate="${RATE:-10}" requests="${REQUESTS:-200}" passes="${PASSES:-2}"
in_len="${INPUT_LEN:-64}" out_len="${OUTPUT_LEN:-8}"
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
wait_file() { for _ in $(seq 1 600); do [[ -s "$1" ]] && return 0; sleep 0.2; done; echo "timeout waiting for $1" >&2; exit 1; }
json_field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

export OPENBLAS_NUM_THREADS=1 KVMESH_CPU_THREADS=1
"./$bin/agent/kvmesh-agent" --port 0 --ready-file "$tmp/agent.ready" >"$tmp/agent.log" 2>&1 &
pids+=($!)
wait_file "$tmp/agent.ready"
agent="$(json_field "$tmp/agent.ready" http)"
"./$bin/router/kvmesh-router" --port 0 --ready-file "$tmp/router.ready" --workers.urls "$agent" \
  --disaggregation.mode off >"$tmp/router.log" 2>&1 &
pids+=($!)
wait_file "$tmp/router.ready"
router="$(json_field "$tmp/router.ready" http)"
for _ in $(seq 1 100); do curl -sf "$router/ready" >/dev/null && break; sleep 0.1; done

run() {  # name url seed
  "./$bin/cli/kvmesh" bench --url "$2" --rate "$rate" --requests "$requests" --input-len "$in_len" \
    --output-len "$out_len" --seed "$3" --json "$tmp/$1.json" >/dev/null
  /usr/bin/python3 - "$tmp/$1.json" "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
pick = lambda m: {k: s[m][k] for k in ("p50", "p99")}
print(json.dumps({"pass": sys.argv[2], "ok": s["requests_ok"], "failed": s["requests_failed"],
                  "ttft_ms": pick("ttft_ms"), "e2e_ms": pick("e2e_ms")}))
PY
}
for i in $(seq 1 "$passes"); do
  run "direct$i" "$agent" "$i"
  run "router$i" "$router" "$i"
done
/usr/bin/python3 - "$tmp" "$passes" <<'PY'
import json, sys, statistics
tmp, passes = sys.argv[1], int(sys.argv[2])
def load(n): return json.load(open(f"{tmp}/{n}.json"))["summary"]
out = {}
for metric in ("ttft_ms", "e2e_ms"):
    for q in ("p50", "p99"):
        d = [load(f"direct{i}")[metric][q] for i in range(1, passes + 1)]
        r = [load(f"router{i}")[metric][q] for i in range(1, passes + 1)]
        m = metric[:-3]
        out[f"{m}_{q}_direct_ms"] = round(statistics.median(d), 3)
        out[f"{m}_{q}_router_ms"] = round(statistics.median(r), 3)
        out[f"{m}_{q}_added_ms"] = round(statistics.median(r) - statistics.median(d), 3)
print(json.dumps({"router_overhead": out}))
PY
