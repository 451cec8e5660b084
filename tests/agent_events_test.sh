#!/usr/bin/env bash
# End-to-end test of a real kvmesh-agent's KV events: a subscriber rebuilds the agent's cached
# block set from the ZMQ stream, deliberately drops a range of batches, recovers them through the
# replay socket and must match GET /v1/kv/inventory; a control that does not replay must not
# match; a late subscriber starts from an inventory snapshot. Then SIGTERM must exit 0.
# Details: tests/agent_events_check.py.
set -euo pipefail
: "${KVMESH_SOURCE_DIR:?}" "${KVMESH_BINARY_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
AGENT="$KVMESH_BINARY_DIR/agent/kvmesh-agent"
if [[ ! -x "$AGENT" ]]; then
  echo "missing $AGENT (build target kvmesh-agent)" >&2
  exit 1
fi
"$PY" -c 'import zmq, msgpack' || {
  echo "$PY lacks python3-zmq / python3-msgpack" >&2
  exit 1
}

WORK="$(mktemp -d)"
PID=""
# Running and not a zombie (an exited child stays a zombie until `wait`).
alive() {
  local st
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  st="${st##*) }"
  [[ "${st:0:1}" != Z ]]
}
cleanup() {
  if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# 2 MiB of KV for builtin:tiny (64 KiB per 16-token block) = 32 blocks: 40 prompts of 4+ blocks
# each with unique tails must evict.
"$AGENT" --role aggregated --model builtin:tiny --host 127.0.0.1 --port 0 \
  --ready-file "$WORK/ready.json" --agent-id events-test \
  --engine.block-size 16 --engine.kv-cache-mib 2 \
  --events.endpoint tcp://127.0.0.1:0 --events.replay-endpoint tcp://127.0.0.1:0 \
  --events.topic kv-events --drain-timeout 10s >"$WORK/agent.log" 2>&1 &
PID=$!

rc=0
"$PY" "$KVMESH_SOURCE_DIR/tests/agent_events_check.py" --ready-file "$WORK/ready.json" \
  --pid "$PID" --timeout 120 || rc=$?

# Graceful shutdown: SIGTERM -> drain -> exit 0 (bounded wait, then the trap kills it).
if alive "$PID"; then
  kill -TERM "$PID"
  for _ in $(seq 1 300); do
    alive "$PID" || break
    sleep 0.1
  done
  if alive "$PID"; then
    echo "FAIL agent still running 30 s after SIGTERM" >&2
    rc=1
  else
    agent_rc=0
    wait "$PID" || agent_rc=$?
    PID=""
    if [[ $agent_rc -ne 0 ]]; then
      echo "FAIL agent exited $agent_rc after SIGTERM" >&2
      rc=1
    else
      echo "ok   agent exited 0 after SIGTERM"
    fi
  fi
else
  echo "FAIL agent died during the test" >&2
  rc=1
fi

if [[ $rc -ne 0 ]]; then
  echo "--- agent log (last 60 lines) ---" >&2
  tail -n 60 "$WORK/agent.log" >&2 || true
fi
exit "$rc"
