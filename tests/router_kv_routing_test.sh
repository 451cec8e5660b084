#!/usr/bin/env bash
# KV-aware routing vs round robin on a shared-prefix workload: 4 aggregated agents + router, run
# once per mode on fresh processes; kv must reach a clearly higher cached-token ratio and a lower
# mean TTFT (tests/router_kv_routing_check.py, docs/testing-router.md).
set -euo pipefail
: "${KVMESH_BINARY_DIR:?}" "${KVMESH_SOURCE_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
tmp="$(mktemp -d)"
export KVMESH_E2E_PIDFILE="$tmp/pids"
cleanup() {
  # What the Python side started and could not stop (it was killed): by pid, if still a kvmesh.
  # SIGTERM first (kvmesh up stops its own children then), SIGKILL after 15 s.
  if [[ -f "$tmp/pids" ]]; then
    local left=()
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
trap cleanup EXIT
export KVMESH_CACHE_DIR="$tmp/cache" TMPDIR="$tmp"
cd "$KVMESH_SOURCE_DIR/tests"
timeout -s TERM 280 "$PY" router_kv_routing_check.py
