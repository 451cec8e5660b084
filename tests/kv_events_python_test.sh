#!/usr/bin/env bash
# Cross-implementation test of the KV event wire codec: Python msgpack (Debian python3-msgpack)
# builds vLLM-style frames that kvmesh decodes, and decodes frames that kvmesh encodes.
set -euo pipefail
: "${KVMESH_SOURCE_DIR:?}" "${KVMESH_BINARY_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
TOOL="$KVMESH_BINARY_DIR/tests/kvmesh_kv_event_tool"
if [[ ! -x "$TOOL" ]]; then
  echo "missing $TOOL (build target kvmesh_kv_event_tool)" >&2
  exit 1
fi
"$PY" -c 'import msgpack' || { echo "python3-msgpack is not installed for $PY" >&2; exit 1; }
exec "$PY" "$KVMESH_SOURCE_DIR/tests/kv_events_python_check.py" "$TOOL"
