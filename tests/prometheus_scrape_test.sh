#!/usr/bin/env bash
# Integration: a real Prometheus server scrapes kvmesh's /metrics (served by HttpServer from the
# default MetricsRegistry) and the values it stores are the ones the exporter set.
# Env: KVMESH_BINARY_DIR (build dir). Optional: PROMETHEUS (default /usr/bin/prometheus),
# PROMTOOL (default /usr/bin/promtool), KVMESH_SCRAPE_WAIT_S (default 60).
set -euo pipefail

BIN="${KVMESH_BINARY_DIR:?KVMESH_BINARY_DIR must point at the build dir}/tests/kvmesh_test_metrics_exporter"
PROMTOOL="${PROMTOOL:-/usr/bin/promtool}"
WAIT_S="${KVMESH_SCRAPE_WAIT_S:-60}"
source "$(dirname "$0")/prometheus_lib.sh"

# ---- exporter ----
start_exporter "$BIN"

# The exposition itself: content type, and promtool's parser/linter if available.
curl -sf -D "$TMP/headers" -o "$TMP/metrics.txt" "http://127.0.0.1:$EXPORTER_PORT/metrics" \
  || fail "GET /metrics failed"
grep -qi '^content-type: text/plain; version=0.0.4' "$TMP/headers" || { cat "$TMP/headers"; fail "wrong content type"; }
if [[ -x "$PROMTOOL" ]]; then
  "$PROMTOOL" check metrics <"$TMP/metrics.txt" || { cat "$TMP/metrics.txt"; fail "promtool check metrics"; }
fi

# ---- prometheus ----
start_prometheus "127.0.0.1:$EXPORTER_PORT"

# query EXPR -> prints the value of the single result, or nothing if there is none yet.
query() {
  curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" |
    "$PY" -c '
import json, sys
d = json.load(sys.stdin)
r = d.get("data", {}).get("result", [])
if d.get("status") == "success" and len(r) == 1:
    print(r[0]["value"][1])
elif len(r) > 1:
    print("MULTIPLE:%d" % len(r))
' || true
}

# Wait (bounded) until the last series of the histogram has been scraped.
deadline=$((SECONDS + WAIT_S))
until [[ -n "$(query 'kvmesh_test_latency_seconds_count')" && "$(query 'up{job="kvmesh"}')" == "1" ]]; do
  (( SECONDS < deadline )) || fail "series did not appear within ${WAIT_S}s (up=$(query 'up{job="kvmesh"}'))"
  sleep 0.5
done

failures=0
expect() {  # expect EXPR WANT
  local got
  got="$(query "$1")"
  if "$PY" -c 'import sys; g, w = sys.argv[1], float(sys.argv[2]); sys.exit(0 if g and abs(float(g) - w) <= 1e-9 * max(1.0, abs(w)) else 1)' "$got" "$2" 2>/dev/null; then
    echo "ok   $1 = $got"
  else
    echo "FAIL $1 = '${got}', want $2"
    failures=$((failures + 1))
  fi
}
expect 'up{job="kvmesh"}' 1
expect 'kvmesh_test_requests_total' 42
expect 'kvmesh_test_queue_depth{pool="a"}' 3
expect 'kvmesh_test_queue_depth{pool="b"}' 7.5
expect 'count(kvmesh_test_queue_depth)' 2
expect 'kvmesh_test_latency_seconds_count' 4
expect 'kvmesh_test_latency_seconds_sum' 2.55
expect 'kvmesh_test_latency_seconds_bucket{le="0.1"}' 1
expect 'kvmesh_test_latency_seconds_bucket{le="0.5"}' 3
expect 'kvmesh_test_latency_seconds_bucket{le="+Inf"}' 4
# Buckets 0.1:1, 0.5:3 -> the median (rank 2) interpolates to 0.1 + 0.4 * (2-1)/(3-1) = 0.3.
expect 'histogram_quantile(0.5, kvmesh_test_latency_seconds_bucket)' 0.3

[[ $failures -eq 0 ]] || fail "$failures check(s) failed"
echo "PASS"
