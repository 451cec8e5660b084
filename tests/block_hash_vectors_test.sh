#!/usr/bin/env bash
# Block-hash vectors computed independently (Python + python3-xxhash, no kvmesh code) must match
# `kvmesh hash` on every case; see tests/block_hash_vectors.py. Also checks the CLI's error paths.
set -euo pipefail
: "${KVMESH_SOURCE_DIR:?}" "${KVMESH_BINARY_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
KVMESH="$KVMESH_BINARY_DIR/cli/kvmesh"
[[ -x "$KVMESH" ]] || { echo "missing $KVMESH (build the 'kvmesh' target)"; exit 1; }

"$PY" "$KVMESH_SOURCE_DIR/tests/block_hash_vectors.py" check --kvmesh "$KVMESH"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# A file holding {"tokens": [...]} hashes like the same array on the command line.
echo '{"tokens": [1,2,3,4,5,6,7,8,9]}' > "$tmp/obj.json"
a="$("$KVMESH" hash --block-size 4 --file "$tmp/obj.json")"
b="$("$KVMESH" hash --block-size=4 --tokens '[1,2,3,4,5,6,7,8,9]')"
[[ "$a" == "$b" ]] || { echo "file object and --tokens differ: $a vs $b"; exit 1; }

# Every bad input: exit 2, nothing on stdout, a message on stderr naming the problem.
expect_usage_error() {
  local want="$1"; shift
  local rc=0
  "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
  if [[ $rc -ne 2 || -s "$tmp/out" ]] || ! grep -qi -- "$want" "$tmp/err"; then
    echo "FAIL: '$*' -> rc=$rc stdout=$(cat "$tmp/out") stderr=$(cat "$tmp/err") (wanted rc 2, '$want')"
    exit 1
  fi
}
expect_usage_error "json"          "$KVMESH" hash --tokens '[1,2'
expect_usage_error "negative"      "$KVMESH" hash --tokens '[1,-2]'
expect_usage_error "4294967295"    "$KVMESH" hash --tokens '[4294967296]'
expect_usage_error "not an integer" "$KVMESH" hash --tokens '[1.5]'
expect_usage_error "not an integer" "$KVMESH" hash --tokens '["7"]'
expect_usage_error "array"         "$KVMESH" hash --tokens '{"x":1}'
expect_usage_error "block size"    "$KVMESH" hash --block-size 0 --tokens '[1]'
expect_usage_error "block size"    "$KVMESH" hash --block-size abc --tokens '[1]'
expect_usage_error "unknown flag"  "$KVMESH" hash --bogus
expect_usage_error "needs a value" "$KVMESH" hash --block-size
expect_usage_error "$tmp/nope"     "$KVMESH" hash --file "$tmp/nope"
expect_usage_error "only one"      "$KVMESH" hash --file "$tmp/obj.json" --tokens '[1]'
"$KVMESH" hash --help | grep -q -- "--block-size" || { echo "FAIL: --help"; exit 1; }
echo "block hash vectors and CLI error paths: OK"
