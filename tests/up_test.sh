#!/usr/bin/env bash
# `kvmesh up` end to end (tests/up_check.py, Debian python3, stdlib only): the default graph
# (builtin:tiny, 1 prefill + 1 decode + router) on free loopback ports; a chat request through the
# router; kill -9 of the decode agent -> reported, restarted, a later request succeeds; SIGTERM ->
# every child gone and exit 0; a graph with a typo -> exit 2 naming the field.
set -euo pipefail
: "${KVMESH_SOURCE_DIR:?}" "${KVMESH_BINARY_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
KVMESH="$KVMESH_BINARY_DIR/cli/kvmesh"
for b in "$KVMESH" "$KVMESH_BINARY_DIR/agent/kvmesh-agent"; do
  [[ -x "$b" ]] || { echo "missing $b (build targets kvmesh, kvmesh-agent)" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export KVMESH_CACHE_DIR="$tmp/cache"
"$PY" "$KVMESH_SOURCE_DIR/tests/up_check.py" "$KVMESH" "$tmp"
