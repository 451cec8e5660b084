# Sourced by the router end-to-end test wrappers (tests/router_*_test.sh): a temp dir, a pid file
# the Python side (tests/router_e2e_util.py) records every process it starts in, and a cleanup
# that stops whatever the Python side could not (it was killed): by pid, only if it is still a
# kvmesh process; SIGTERM first (kvmesh up then stops its own children), SIGKILL after 15 s.
: "${KVMESH_BINARY_DIR:?}" "${KVMESH_SOURCE_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
tmp="$(mktemp -d)"
export KVMESH_E2E_PIDFILE="$tmp/pids"

e2e_stop_leftovers() {
  if [[ -f "$tmp/pids" ]]; then
    local left=() p
    while read -r p; do
      if [[ -r /proc/$p/cmdline ]] && tr '\0' ' ' < "/proc/$p/cmdline" | grep -q kvmesh; then
        kill -TERM "$p" 2>/dev/null && left+=("$p")
      fi
    done < "$tmp/pids"
    for _ in $(seq 1 150); do
      local alive=0
      for p in "${left[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [[ $alive -eq 0 ]] && break
      sleep 0.1
    done
    for p in "${left[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  fi
  rm -rf "$tmp"
}

# Runs tests/<check.py> with a private model cache and TMPDIR, cleaning up on exit.
e2e_run_check() {
  trap e2e_stop_leftovers EXIT
  export KVMESH_CACHE_DIR="$tmp/cache" TMPDIR="$tmp"
  cd "$KVMESH_SOURCE_DIR/tests"
  timeout -s TERM 280 "$PY" "$1"
}
