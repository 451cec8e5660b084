#!/usr/bin/env bash
# `kvmesh generate` end to end on builtin:tiny created in a fresh cache dir: the model is created on
# first use, the second run of the same prompt reuses the first run's prefix blocks (cached_tokens
# > 0) and produces the same greedy tokens, a seeded sampled run is reproducible, --parallel 8
# batches requests, stop strings end the run, and bad input fails with a clear message and exit code.
set -euo pipefail
: "${KVMESH_BINARY_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
KVMESH="$KVMESH_BINARY_DIR/cli/kvmesh"
[[ -x "$KVMESH" ]] || { echo "missing $KVMESH"; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export KVMESH_CACHE_DIR="$tmp/cache"
prompt="The quick brown fox jumps over the lazy dog, and then the dog sleeps in the sun all day."

"$KVMESH" generate --model builtin:tiny --prompt "$prompt" --max-tokens 20 --ignore-eos --json \
  >"$tmp/greedy.out" 2>"$tmp/greedy.err" || { cat "$tmp/greedy.err"; exit 1; }
[[ -f "$KVMESH_CACHE_DIR/tiny-v1/config.json" ]] || { echo "FAIL: builtin:tiny not created"; exit 1; }

"$KVMESH" generate --model builtin:tiny --prompt "$prompt" --max-tokens 20 --ignore-eos --json \
  --temperature 0.8 --top-p 0.9 --seed 5 --repeat 2 >"$tmp/sampled.out" 2>/dev/null
"$KVMESH" generate --model builtin:tiny --prompt "$prompt" --max-tokens 12 --ignore-eos --json \
  --parallel 8 --repeat 1 >"$tmp/parallel.out" 2>/dev/null

"$PY" - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
def runs(name):
    lines = [json.loads(l) for l in open(f"{d}/{name}.out") if l.strip()]
    return [l for l in lines if "run" in l], lines[-1]["engine_stats"]
g, gs = runs("greedy")
assert len(g) == 2, g
assert g[0]["cached_tokens"] == 0, g[0]
assert g[1]["cached_tokens"] > 0 and g[1]["cached_tokens"] % 16 == 0, g[1]
assert g[1]["cached_tokens"] < g[1]["prompt_tokens"], g[1]
assert g[0]["text"] == g[1]["text"] and g[0]["text"], (g[0]["text"], g[1]["text"])
assert g[0]["completion_tokens"] == 20 and g[0]["finish_reason"] == "length", g[0]
assert gs["cached_prompt_tokens"] == g[1]["cached_tokens"], gs
assert gs["kv_blocks_used"] == 0, gs
s, _ = runs("sampled")
assert s[0]["text"] == s[1]["text"], "seeded sampling is not reproducible"
assert s[0]["text"] != g[0]["text"], "temperature 0.8 produced the greedy text"
p, ps = runs("parallel")
assert p[0]["requests"] == 8 and p[0]["completion_tokens"] == 96, p[0]
assert ps["steps"] < 8 * 12, f"8 requests were not batched: {ps['steps']} steps"
# The stop string: a piece of the greedy text.
text = g[0]["text"]
stop = text[len(text) // 2: len(text) // 2 + 2]
open(f"{d}/stop.txt", "w").write(stop)
open(f"{d}/expect.txt", "w").write(text[: text.find(stop)])
PY

"$KVMESH" generate --model builtin:tiny --prompt "$prompt" --max-tokens 20 --ignore-eos --json \
  --repeat 1 --stop "$(cat "$tmp/stop.txt")" >"$tmp/stop.out" 2>/dev/null
"$PY" - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
r = json.loads(open(f"{d}/stop.out").readline())
assert r["finish_reason"] == "stop", r
assert r["text"] == open(f"{d}/expect.txt").read(), (r["text"], open(f"{d}/expect.txt").read())
PY

# Bad input: a clear message, a non-zero exit, nothing on stdout.
expect_fail() {  # CODE PATTERN ARGS...
  local code="$1" pattern="$2"; shift 2
  set +e
  "$KVMESH" generate "$@" >"$tmp/bad.out" 2>"$tmp/bad.err"
  local rc=$?
  set -e
  [[ $rc -eq $code ]] || { echo "FAIL: generate $* exited $rc, want $code"; cat "$tmp/bad.err"; exit 1; }
  grep -q -- "$pattern" "$tmp/bad.err" || { echo "FAIL: '$pattern' not in:"; cat "$tmp/bad.err"; exit 1; }
}
expect_fail 1 "NOT_FOUND" --model "$tmp/no-such-model"
mkdir -p "$tmp/broken" && cp "$KVMESH_CACHE_DIR/tiny-v1/"*.json "$tmp/broken/"
head -c 1000 "$KVMESH_CACHE_DIR/tiny-v1/model.safetensors" >"$tmp/broken/model.safetensors"
expect_fail 1 "model.safetensors" --model "$tmp/broken"
expect_fail 1 "unknown builtin\|preset" --model builtin:huge
expect_fail 2 "bad value" --temperature -1
expect_fail 2 "bad value" --top-p nan
expect_fail 2 "unknown flag" --frobnicate 1
echo "generate_test: ok"
