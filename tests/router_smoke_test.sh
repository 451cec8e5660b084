#!/usr/bin/env bash
# kvmesh-router in front of a prefill and a decode agent (tests/router_smoke_check.py).
set -euo pipefail
: "${KVMESH_BINARY_DIR:?}" "${KVMESH_SOURCE_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export KVMESH_CACHE_DIR="$tmp/cache"
export OPENBLAS_NUM_THREADS=1
cd "$KVMESH_SOURCE_DIR/tests"
"$PY" router_smoke_check.py
