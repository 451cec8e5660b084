#!/usr/bin/env bash
# kvmesh-agent's HTTP contract, black-box: probes, /v1/models, completions and chat (streamed and
# not), prefix-cache reuse, token-array prompts, OpenAI error JSON with the right statuses (400,
# 404, 413, 503 + Retry-After), a client disconnecting mid-stream, SIGTERM -> exit 0.
# The checks are in agent_api_check.py (Debian python3, stdlib only); agents use builtin:tiny
# created in a fresh cache dir and bind free loopback ports; they are stopped by pid.
set -euo pipefail
: "${KVMESH_SOURCE_DIR:?}" "${KVMESH_BINARY_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
AGENT="$KVMESH_BINARY_DIR/agent/kvmesh-agent"
[[ -x "$AGENT" ]] || { echo "missing $AGENT (build target kvmesh-agent)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export KVMESH_CACHE_DIR="$tmp/cache"
"$PY" "$KVMESH_SOURCE_DIR/tests/agent_api_check.py" "$AGENT" "$tmp"
