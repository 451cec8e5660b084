#!/usr/bin/env bash
# Prefix copies between two kvmesh-agent processes (POST /v1/kv/export + /v1/kv/import, KV moved
# by UCX over tcp), with forged and malformed input and a killed exporter
# (tests/agent_prefix_copy_check.py).
set -euo pipefail
: "${KVMESH_BINARY_DIR:?}" "${KVMESH_SOURCE_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export KVMESH_CACHE_DIR="$tmp/cache"
cd "$KVMESH_SOURCE_DIR/tests"
"$PY" agent_prefix_copy_check.py
