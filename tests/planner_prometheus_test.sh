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
PROMETHEUS="${PROMETHEUS:-/usr/bin/prometheus}"
WAIT_S="${KVMESH_SCRAPE_WAIT_S:-60}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
for b in "$EXPORTER" "$CHECK"; do [[ -x "$b" ]] || { echo "FAIL: not built: $b"; exit 1; }; done
[[ -x "$PROMETHEUS" ]] || { echo "FAIL: prometheus not found at $PROMETHEUS"; exit 1; }

TMP="$(mktemp -d /tmp/kvmesh_planner_prom_XXXXXX)"
EXPORTER_PID=""
PROM_PID=""
cleanup() {
  local rc=$?
  for pid in $EXPORTER_PID $PROM_PID; do kill "$pid" 2>/dev/null || true; done
  for pid in $EXPORTER_PID $PROM_PID; do wait "$pid" 2>/dev/null || true; done
  if [[ $rc -ne 0 && -f "$TMP/prometheus.log" ]]; then
    echo "---- prometheus log (tail) ----"; tail -n 30 "$TMP/prometheus.log"
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*"; exit 1; }
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# ---- exporter ----
"$EXPORTER" --port-file "$TMP/exporter.port" >"$TMP/exporter.out" 2>"$TMP/exporter.err" &
EXPORTER_PID=$!
for _ in $(seq 1 100); do
  [[ -s "$TMP/exporter.port" ]] && break
  kill -0 "$EXPORTER_PID" 2>/dev/null || { cat "$TMP/exporter.err"; fail "exporter exited early"; }
  sleep 0.1
done
[[ -s "$TMP/exporter.port" ]] || fail "exporter did not report its port"
EXPORTER_PORT="$(cat "$TMP/exporter.port")"
echo "exporter on 127.0.0.1:$EXPORTER_PORT (pid $EXPORTER_PID)"

# ---- prometheus ----
cat >"$TMP/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: kvmesh-router
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["127.0.0.1:$EXPORTER_PORT"]
        labels:
          namespace: test
YAML
PROM_PORT=""
for attempt in 1 2 3; do
  PROM_PORT="$(free_port)"
  "$PROMETHEUS" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
  PROM_PID=$!
  ready=0
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$PROM_PID" 2>/dev/null || break
    sleep 0.2
  done
  [[ $ready -eq 1 ]] && break
  kill "$PROM_PID" 2>/dev/null || true; wait "$PROM_PID" 2>/dev/null || true; PROM_PID=""
  echo "prometheus did not come up on port $PROM_PORT (attempt $attempt)"
done
[[ -n "$PROM_PID" ]] || fail "prometheus did not start"
echo "prometheus on 127.0.0.1:$PROM_PORT (pid $PROM_PID)"

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
