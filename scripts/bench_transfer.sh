#!/usr/bin/env bash
# KV transfer read bandwidth: kvmesh's UcxTransport (kvmesh_transfer_transfer_bench, two
# processes) against ucx_perftest ucp_get, same sizes, same UCX_TLS, same error-handling mode,
# run back to back. Prints one JSON object: per (transport, size) both bandwidths and their ratio.
#
#   scripts/bench_transfer.sh [BUILD_DIR]        (default: build)
#   env: SIZES_MIB="1 16 64"  BLOCK_KIB=256  TRANSPORTS="tcp posix,sysv,cma,self"
#        ITERS=N (default: ~1 GiB per size, >= 5)  PERFTEST_TEST=ucp_get (or ucp_put_bw, ...)
#        WINDOW=1: transfers in flight in our bench = ucx_perftest -O (max outstanding operations)
#        ALLOC=transport (default, as kvmesh-agent) | user (malloc'ed region + RegisterLocal)
set -euo pipefail

BUILD_DIR=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
BENCH="$BUILD_DIR/agent/transfer/kvmesh_transfer_transfer_bench"
SIZES_MIB=${SIZES_MIB:-"1 16 64"}
BLOCK_KIB=${BLOCK_KIB:-256}
TRANSPORTS=${TRANSPORTS:-"tcp posix,sysv,cma,self"}
PERFTEST_TEST=${PERFTEST_TEST:-ucp_get}
WINDOW=${WINDOW:-1}
ALLOC=${ALLOC:-transport}  # transport: regions from KvTransport::AllocateLocal, as the agent; user: malloc + RegisterLocal
PY=${KVMESH_PYTHON3:-/usr/bin/python3}

[[ -x "$BENCH" ]] || { echo "missing $BENCH (ninja -C $BUILD_DIR kvmesh_transfer_transfer_bench)" >&2; exit 1; }
command -v ucx_perftest >/dev/null || { echo "ucx_perftest not found (apt-get install ucx-utils)" >&2; exit 1; }

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

iters_for() {  # ~1 GiB per size, at least 5
  if [[ -n "${ITERS:-}" ]]; then echo "$ITERS"; return; fi
  local n=$(( 1024 / $1 ))
  (( n < 5 )) && n=5
  echo "$n"
}

# Our transport runs shared memory with posix/sysv error handling on (see docs/kv-transfer.md);
# ucx_perftest -e uses the same peer error-handling mode.
export UCX_POSIX_ERROR_HANDLING=y UCX_SYSV_ERROR_HANDLING=y UCX_WARN_UNUSED_ENV_VARS=n

TMP=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

perftest_mib_s() {  # tls bytes iters -> MiB/s (ucx_perftest "MB/s" is 2^20 bytes/s), overall
  local tls=$1 bytes=$2 iters=$3 port devs=()
  port=$(free_port)
  [[ "$tls" == tcp ]] && devs=(UCX_NET_DEVICES=lo)
  env UCX_TLS="$tls" "${devs[@]}" ucx_perftest -p "$port" -e >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  local out="" tries=0
  # The server needs a moment to listen; the client fails fast when it is not there yet.
  while (( tries < 50 )); do
    if out=$(env UCX_TLS="$tls" "${devs[@]}" ucx_perftest 127.0.0.1 -p "$port" -e -t "$PERFTEST_TEST" \
             -s "$bytes" -n "$iters" -w 2 -O "$WINDOW" -f 2>"$TMP/client.err"); then
      break
    fi
    tries=$((tries + 1))
    sleep 0.1
  done
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  # -f prints one row: iters p50 avg_lat overall_lat bw_avg bw_overall rate_avg rate_overall
  echo "$out" | awk 'NF == 8 && $1 ~ /^[0-9]+$/ {print $6}' | tail -1
}

LINES="$TMP/lines.jsonl"
: >"$LINES"
for tls in $TRANSPORTS; do
  for mib in $SIZES_MIB; do
    bytes=$(( mib << 20 ))
    iters=$(iters_for "$mib")
    devflag=()
    [[ "$tls" == tcp ]] && devflag=(--net_devices=lo)
    ours=$("$BENCH" --tls="$tls" "${devflag[@]}" --sizes_mib="$mib" --block_kib="$BLOCK_KIB" \
             --iters="$iters" --window="$WINDOW" --alloc="$ALLOC" 2>"$TMP/bench.err" | tail -1) || { cat "$TMP/bench.err" >&2; exit 1; }
    theirs=$(perftest_mib_s "$tls" "$bytes" "$iters")
    [[ -n "$theirs" ]] || { echo "ucx_perftest failed for $tls $mib MiB:" >&2; cat "$TMP/client.err" >&2; exit 1; }
    echo "{\"tls\":\"$tls\",\"size_mib\":$mib,\"iters\":$iters,\"kvmesh\":$ours,\"perftest_mib_s\":$theirs}" >>"$LINES"
  done
done

"$PY" - "$LINES" "$PERFTEST_TEST" "$WINDOW" "$ALLOC" <<'PYEOF'
import json, sys
rows = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    ours = r["kvmesh"]["bandwidth_mib_s"]
    theirs = float(r["perftest_mib_s"])
    rows.append({"tls": r["tls"], "size_mib": r["size_mib"], "iters": r["iters"],
                 "block_kib": r["kvmesh"]["block_bytes"] // 1024,
                 "kvmesh_mib_s": round(ours, 1), "perftest_mib_s": round(theirs, 1),
                 "ratio": round(ours / theirs, 3) if theirs > 0 else None,
                 "verified": r["kvmesh"]["verified"]})
print(json.dumps({"benchmark": "kv_transfer_read", "perftest_test": sys.argv[2],
                  "window": int(sys.argv[3]), "alloc": sys.argv[4], "results": rows}, indent=1))
PYEOF
