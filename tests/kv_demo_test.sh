#!/usr/bin/env bash
# The KV-core demo (README main job) end to end: a slice of the Mooncake trace through G1/G2/G3.
# Checks that every tier serves hits, every served block verifies byte for byte, the counts add up,
# a restart reloads the disk tier (more G3 hits), corrupted disk blocks are dropped and never served,
# and the default temp disk directory is removed at exit.
set -euo pipefail
: "${KVMESH_BINARY_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
KVMESH="$KVMESH_BINARY_DIR/cli/kvmesh"
[[ -x "$KVMESH" ]] || { echo "missing $KVMESH"; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
trace="$(bash "${KVMESH_SOURCE_DIR:?}/scripts/shared_dir.sh")/data/traces/mooncake_conversation_trace.jsonl"
flags=(--trace "$trace" --max-requests 1500 --g1-blocks 2048 --g2-blocks 8192 --g3-blocks 32768 --g3-min-hits 1 --json)

run() {  # run NAME ARGS... -> $tmp/NAME.json
  local name="$1"; shift
  "$KVMESH" kv-demo "${flags[@]}" "$@" >"$tmp/$name.json" 2>"$tmp/$name.err" || {
    echo "FAIL: kv-demo $name exited $?"; cat "$tmp/$name.err"; exit 1; }
}

run first --disk-dir "$tmp/g3"
run restart --disk-dir "$tmp/g3"
# Corrupt one payload byte in every block file, then run again on the same directory.
"$PY" - "$tmp/g3" <<'PY'
import os, sys
d = sys.argv[1]
n = 0
for f in os.listdir(d):
    if f.endswith(".kvb"):
        p = os.path.join(d, f)
        with open(p, "r+b") as fh:
            fh.seek(48 + 17)  # past the 48-byte header
            b = fh.read(1)
            fh.seek(48 + 17)
            fh.write(bytes([b[0] ^ 0x5A]))
        n += 1
assert n > 0, "no block files to corrupt"
print(f"corrupted {n} block files")
PY
run corrupt --disk-dir "$tmp/g3"
TMPDIR="$tmp/tmpdir"; mkdir -p "$TMPDIR"; export TMPDIR
run default_dir
unset TMPDIR

"$PY" - "$tmp" <<'PY'
import json, os, sys
t = sys.argv[1]
runs = {n: json.load(open(os.path.join(t, n + ".json"))) for n in ("first", "restart", "corrupt", "default_dir")}
def check(cond, msg):
    if not cond:
        print("FAIL:", msg); sys.exit(1)
for name, j in runs.items():
    check(j["verify_mismatches"] == 0, f"{name}: {j['verify_mismatches']} blocks served with wrong bytes")
    hits = j["hit_blocks"]
    check(hits["g1"] + j["onboarded_blocks"] + j["recomputed_blocks"] == j["blocks"],
          f"{name}: hits + recomputed != blocks ({hits}, {j['recomputed_blocks']}, {j['blocks']})")
    check(hits["g2"] + hits["g3"] == j["onboarded_blocks"], f"{name}: g2+g3 hits != onboarded")
    ev = j["events"]["by_medium"]
    check(ev["GPU"]["stored"] >= ev["GPU"]["removed"], f"{name}: more GPU removals than stores")
a, b, c = runs["first"], runs["restart"], runs["corrupt"]
for tier in ("g1", "g2", "g3"):
    check(a["hit_blocks"][tier] > 0, f"first run: no {tier} hits")
check(a["disk"]["blocks_written"] > 0, "first run wrote no disk blocks")
check(a["events"]["by_medium"]["DISK"]["stored"] == a["disk"]["blocks_written"],
      "DISK BlockStored events != blocks written")
check(b["hit_blocks"]["g3"] > a["hit_blocks"]["g3"],
      f"restart did not reuse the reloaded disk tier ({b['hit_blocks']['g3']} <= {a['hit_blocks']['g3']})")
check(b["events"]["by_medium"]["DISK"]["stored"] >= a["disk"]["blocks_written"],
      "restart did not announce the reloaded disk blocks")
check(c["disk"]["blocks_dropped_corrupt"] > 0, "corrupted disk blocks were not detected")
check(c["hit_blocks"]["g3"] < b["hit_blocks"]["g3"], "corrupted blocks still served from G3")
left = os.listdir(os.path.join(t, "tmpdir"))
check(left == [], f"default temp disk dir not removed: {left}")
print(f"kv-demo: ok (g3 hits first={a['hit_blocks']['g3']} restart={b['hit_blocks']['g3']} "
      f"corrupt={c['hit_blocks']['g3']}, dropped corrupt={c['disk']['blocks_dropped_corrupt']})")
PY
