# Sourced by the tests that run a real Prometheus server (prometheus_scrape_test.sh,
# planner_prometheus_test.sh, ...). Provides:
#   TMP                      a fresh temp dir (removed on exit)
#   fail MSG                 print FAIL and exit 1
#   free_port                a free 127.0.0.1 port
#   prom_track PID           stop PID (TERM, then wait) on exit
#   start_exporter BIN [ARGS...]   start an exporter that writes its port to a file;
#                            sets EXPORTER_PID and EXPORTER_PORT
#   prom_stop PID            stop a tracked PID now (TERM, wait) and forget it
#   start_prometheus [--lifecycle] TARGET [LABELS_YAML] [JOB]   a real Prometheus scraping TARGET
#                            (host:port; "" = no target yet) every 1 s; sets PROM_PID and PROM_PORT
#                            (3 attempts on a port race). --lifecycle: --web.enable-lifecycle, so
#                            prom_set_target can change the target later
#   prom_set_target TARGET   rewrite the scrape config with TARGET and reload it (POST /-/reload)
# Env: PROMETHEUS (default /usr/bin/prometheus), KVMESH_PYTHON3. The caller sets `set -euo pipefail`
# and may define prom_on_fail (more diagnostics when the test fails).

PROMETHEUS="${PROMETHEUS:-/usr/bin/prometheus}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
[[ -x "$PROMETHEUS" ]] || { echo "FAIL: prometheus not found at $PROMETHEUS"; exit 1; }

TMP="$(mktemp -d /tmp/kvmesh_prom_XXXXXX)"
_PROM_LIB_PIDS=""
_prom_lib_cleanup() {
  local rc=$?
  local pid
  for pid in $_PROM_LIB_PIDS; do kill "$pid" 2>/dev/null || true; done
  for pid in $_PROM_LIB_PIDS; do wait "$pid" 2>/dev/null || true; done
  if [[ $rc -ne 0 && -f "$TMP/prometheus.log" ]]; then
    echo "---- prometheus log (tail) ----"; tail -n 30 "$TMP/prometheus.log"
  fi
  if [[ $rc -ne 0 ]] && declare -F prom_on_fail >/dev/null; then prom_on_fail; fi
  rm -rf "$TMP"
  exit $rc
}
trap _prom_lib_cleanup EXIT INT TERM

fail() { echo "FAIL: $*"; exit 1; }
prom_track() { _PROM_LIB_PIDS="$_PROM_LIB_PIDS $1"; }
prom_stop() {
  kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
  _PROM_LIB_PIDS="$(echo " $_PROM_LIB_PIDS " | sed "s/ $1 / /")"
}
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_exporter() {
  local bin="$1"; shift
  [[ -x "$bin" ]] || fail "not built: $bin"
  rm -f "$TMP/exporter.port"
  "$bin" --port-file "$TMP/exporter.port" "$@" >"$TMP/exporter.out" 2>"$TMP/exporter.err" &
  EXPORTER_PID=$!
  prom_track "$EXPORTER_PID"
  local _
  for _ in $(seq 1 100); do
    [[ -s "$TMP/exporter.port" ]] && break
    kill -0 "$EXPORTER_PID" 2>/dev/null || { cat "$TMP/exporter.err"; fail "exporter exited early"; }
    sleep 0.1
  done
  [[ -s "$TMP/exporter.port" ]] || fail "exporter did not report its port"
  EXPORTER_PORT="$(cat "$TMP/exporter.port")"
  echo "exporter on 127.0.0.1:$EXPORTER_PORT (pid $EXPORTER_PID)"
}

# Writes $TMP/prometheus.yml: one job scraping TARGET ("" = none) every 1 s, with LABELS.
_prom_write_config() {
  local target="$1" labels="$2" job="$3"
  {
    echo "global:"
    echo "  scrape_interval: 1s"
    echo "  evaluation_interval: 1s"
    echo "scrape_configs:"
    echo "  - job_name: $job"
    echo "    scrape_interval: 1s"
    echo "    scrape_timeout: 1s"
    echo "    static_configs:"
    if [[ -n "$target" ]]; then echo "      - targets: [\"$target\"]"; else echo "      - targets: []"; fi
    if [[ -n "$labels" ]]; then
      echo "        labels:"
      echo "$labels" | sed 's/^/          /'
    fi
  } >"$TMP/prometheus.yml"
}

start_prometheus() {
  local lifecycle=()
  if [[ "${1:-}" == --lifecycle ]]; then lifecycle=(--web.enable-lifecycle); shift; fi
  local target="$1"
  _PROM_LABELS="${2:-}" _PROM_JOB="${3:-kvmesh}"
  _prom_write_config "$target" "$_PROM_LABELS" "$_PROM_JOB"
  PROM_PORT=""
  PROM_PID=""
  local attempt ready _
  for attempt in 1 2 3; do
    PROM_PORT="$(free_port)"
    "$PROMETHEUS" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" "${lifecycle[@]}" \
      --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
    PROM_PID=$!
    ready=0
    for _ in $(seq 1 100); do
      if curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1; then ready=1; break; fi
      kill -0 "$PROM_PID" 2>/dev/null || break
      sleep 0.2
    done
    if [[ $ready -eq 1 ]]; then prom_track "$PROM_PID"; break; fi
    kill "$PROM_PID" 2>/dev/null || true; wait "$PROM_PID" 2>/dev/null || true; PROM_PID=""
    echo "prometheus did not come up on port $PROM_PORT (attempt $attempt)"
  done
  [[ -n "$PROM_PID" ]] || fail "prometheus did not start"
  echo "prometheus on 127.0.0.1:$PROM_PORT (pid $PROM_PID)"
}

# Needs start_prometheus --lifecycle.
prom_set_target() {
  _prom_write_config "$1" "$_PROM_LABELS" "$_PROM_JOB"
  curl -sf -X POST "http://127.0.0.1:$PROM_PORT/-/reload" >/dev/null || fail "prometheus config reload"
}
