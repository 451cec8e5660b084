#!/usr/bin/env bash
# KV transfer failure handling between agents: lease expiry, kill -9 of the prefill agent mid-pull,
# forged and malformed handles (tests/agent_transfer_failure_check.py).
set -euo pipefail
: "${KVMESH_BINARY_DIR:?}" "${KVMESH_SOURCE_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export KVMESH_CACHE_DIR="$tmp/cache"
cd "$KVMESH_SOURCE_DIR/tests"
"$PY" agent_transfer_failure_check.py
