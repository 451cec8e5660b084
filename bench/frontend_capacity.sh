#!/usr/bin/env bash
# Frontend capacity: CLIENTS concurrent streaming clients (kvmesh bench --concurrency) through one
# kvmesh-router in front of AGENTS aggregated agents (builtin:tiny, slowed with
# --engine.debug-step-delay so every stream stays open for seconds). Samples the router's RSS and
# thread count every 100 ms and prints one JSON object: requests ok/failed, the bench's peak in
# flight, the router's idle and peak RSS and threads. Usage: bench/frontend_capacity.sh [BUILD_DIR];
# env CLIENTS (2000), AGENTS (4), STEP_DELAY (200ms), OUTPUT_LEN (16).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-build}"
clients="${CLIENTS:-2000}" agents="${AGENTS:-4}" delay="${STEP_DELAY:-200ms}" out_len="${OUTPUT_LEN:-16}"
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
wait_file() { for _ in $(seq 1 900); do [[ -s "$1" ]] && return 0; sleep 0.2; done; echo "timeout waiting for $1" >&2; exit 1; }
json_field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
ulimit -n "$(ulimit -Hn)"

export OPENBLAS_NUM_THREADS=1 KVMESH_CPU_THREADS=1
per_agent=$(( (clients + agents - 1) / agents + 16 ))
urls=()
for i in $(seq 1 "$agents"); do
  "./$bin/agent/kvmesh-agent" --port 0 --ready-file "$tmp/a$i.ready" --engine.debug-step-delay "$delay" \
    --engine.max-num-seqs 256 --limits.max-waiting "$per_agent" >"$tmp/a$i.log" 2>&1 &
  pids+=($!)
done
for i in $(seq 1 "$agents"); do wait_file "$tmp/a$i.ready"; urls+=("$(json_field "$tmp/a$i.ready" http)"); done
"./$bin/router/kvmesh-router" --port 0 --ready-file "$tmp/router.ready" \
  --workers.urls "$(IFS=,; echo "${urls[*]}")" --workers.max-inflight-per-worker "$per_agent" \
  --disaggregation.mode off --routing.mode least_loaded >"$tmp/router.log" 2>&1 &
router_pid=$!
pids+=($router_pid)
wait_file "$tmp/router.ready"
router="$(json_field "$tmp/router.ready" http)"
for _ in $(seq 1 100); do curl -sf "$router/ready" >/dev/null && break; sleep 0.1; done
idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$router_pid/status")

( max_t=0; max_r=0
  while kill -0 "$router_pid" 2>/dev/null && [[ ! -f "$tmp/stop" ]]; do
    t=$(awk '/Threads/ {print $2}' "/proc/$router_pid/status"); r=$(awk '/VmRSS/ {print $2}' "/proc/$router_pid/status")
    (( t > max_t )) && max_t=$t; (( r > max_r )) && max_r=$r
    echo "$max_t $max_r" > "$tmp/sample"; sleep 0.1
  done ) &
sampler=$!
"./$bin/cli/kvmesh" bench --url "$router" --concurrency "$clients" --requests "$clients" --input-len 16 \
  --output-len "$out_len" --request-timeout 300s --json "$tmp/bench.json" >"$tmp/bench.log" 2>&1 || true
touch "$tmp/stop"; wait "$sampler" 2>/dev/null || true
read -r max_threads max_rss < "$tmp/sample"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$router_pid/status")
/usr/bin/python3 - "$tmp/bench.json" "$idle_rss" "$max_rss" "$hwm" "$max_threads" "$clients" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
idle, peak, hwm, threads, clients = (int(x) for x in sys.argv[2:])
print(json.dumps({"frontend_capacity": {
    "clients": clients, "requests_ok": s["requests_ok"], "requests_failed": s["requests_failed"],
    "errors": s.get("errors"), "bench_peak_in_flight": s.get("peak_in_flight"),
    "router_idle_rss_mib": round(idle / 1024, 1), "router_peak_rss_mib": round(max(peak, hwm) / 1024, 1),
    "router_peak_threads": threads, "ttft_p50_ms": s["ttft_ms"]["p50"], "e2e_p99_ms": s["e2e_ms"]["p99"],
    "duration_s": s["duration_s"]}}))
PY
