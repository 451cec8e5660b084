#!/usr/bin/env bash
# Disaggregated prefill/decode across two kvmesh-agent processes == one aggregated agent, with the
# KV blocks moved by UCX over tcp and over shared memory (tests/agent_disagg_check.py).
set -euo pipefail
: "${KVMESH_BINARY_DIR:?}" "${KVMESH_SOURCE_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export KVMESH_CACHE_DIR="$tmp/cache"
cd "$KVMESH_SOURCE_DIR/tests"
for tls in tcp shm; do
  "$PY" agent_disagg_check.py "$tls"
done
