#!/usr/bin/env bash
# Integration: the planner's metrics sources against real processes. A real Prometheus server
# scrapes kvmesh_test_planner_exporter (the router's real kvmesh_router_* table with a known,
# steady traffic pattern); kvmesh_test_planner_source_check then reads the load back through
# PrometheusSource (PromQL over /api/v1/query) and ScrapeSource (direct /metrics differencing),
# checks rate, ISL, OSL and the TTFT/ITL p90 against the pattern, the error paths (a bad query, a
# Prometheus that is down), and one planner decision on the measured load.
# Env: KVMESH_BINARY_DIR (build dir). Optional: PROMETHEUS (default /usr/bin/prometheus),
# KVMESH_SCRAPE_WAIT_S (default 60).
set -euo pipefail

BIN_DIR="${KVMESH_BINARY_DIR:?KVMESH_BINARY_DIR must point at the build dir}/operator/planner"
EXPORTER="$BIN_DIR/kvmesh_test_planner_exporter"
CHECK="$BIN_DIR/kvmesh_test_planner_source_check"
WAIT_S="${KVMESH_SCRAPE_WAIT_S:-60}"
source "$(dirname "$0")/prometheus_lib.sh"
[[ -x "$CHECK" ]] || fail "not built: $CHECK"

# ---- exporter ----
start_exporter "$EXPORTER"
start_prometheus "127.0.0.1:$EXPORTER_PORT" "namespace: test" kvmesh-router

# Wait (bounded) until Prometheus holds 12 s of the exporter's samples: the checker's rate()
# window is 10 s.
samples() {
  curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/query" \
    --data-urlencode 'query=count_over_time(kvmesh_router_prompt_tokens_total[12s])' |
    "$PY" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' || echo 0
}
deadline=$((SECONDS + WAIT_S))
until [[ "$(samples)" -ge 11 ]]; do
  (( SECONDS < deadline )) || fail "Prometheus did not collect 11 scrapes within ${WAIT_S}s (got $(samples))"
  sleep 1
done

DEAD_PORT="$(free_port)"  # nothing listens there
"$CHECK" --prometheus "http://127.0.0.1:$PROM_PORT" --scrape "http://127.0.0.1:$EXPORTER_PORT/metrics" \
  --dead-url "http://127.0.0.1:$DEAD_PORT" || fail "source check failed"
echo "PASS"
