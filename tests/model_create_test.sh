#!/usr/bin/env bash
# `kvmesh model create --preset tiny DIR` end to end: the files exist, a second run is idempotent
# (same bytes, exit 0), a folder holding something else is refused and left alone, and the output is
# read back by an independent reader (/usr/bin/python3's json + struct): safetensors header names,
# dtypes, shapes and contiguous offsets; config.json fields; tokenizer.json is a BPE tokenizer.
set -euo pipefail
: "${KVMESH_BINARY_DIR:?}"
PY="${KVMESH_PYTHON3:-/usr/bin/python3}"
KVMESH="$KVMESH_BINARY_DIR/cli/kvmesh"
[[ -x "$KVMESH" ]] || { echo "missing $KVMESH"; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dir="$tmp/models/tiny"

"$KVMESH" model create --preset tiny "$dir" >"$tmp/out1" 2>"$tmp/err1" || {
  echo "FAIL: first create exited $?"; cat "$tmp/err1"; exit 1; }
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
  [[ -s "$dir/$f" ]] || { echo "FAIL: missing $dir/$f"; exit 1; }
done
(cd "$dir" && sha256sum ./* >"$tmp/sums1")
# No temp folder is left next to the target.
leftover="$(find "$tmp/models" -mindepth 1 -maxdepth 1 -name '.*' | wc -l)"
[[ "$leftover" == 0 ]] || { echo "FAIL: temp folders left in $tmp/models"; ls -la "$tmp/models"; exit 1; }

# Idempotent: a second run succeeds and changes nothing.
"$KVMESH" model create --preset tiny "$dir" >/dev/null 2>"$tmp/err2" || {
  echo "FAIL: second create exited $?"; cat "$tmp/err2"; exit 1; }
(cd "$dir" && sha256sum ./* >"$tmp/sums2")
cmp "$tmp/sums1" "$tmp/sums2" || { echo "FAIL: second run changed the files"; exit 1; }

# Deterministic: a fresh folder gets byte-identical files.
"$KVMESH" model create --preset tiny "$tmp/again" >/dev/null 2>&1
(cd "$tmp/again" && sha256sum ./* >"$tmp/sums3")
cmp "$tmp/sums1" "$tmp/sums3" || { echo "FAIL: output is not deterministic"; exit 1; }

# A non-empty folder holding something else is refused and left as it was.
mkdir -p "$tmp/other" && echo keep >"$tmp/other/notes.txt"
if "$KVMESH" model create --preset tiny "$tmp/other" >/dev/null 2>"$tmp/err3"; then
  echo "FAIL: create overwrote a non-empty folder"; exit 1
fi
grep -q "refusing to overwrite" "$tmp/err3" || { echo "FAIL: unexpected error"; cat "$tmp/err3"; exit 1; }
[[ "$(ls "$tmp/other")" == "notes.txt" ]] || { echo "FAIL: other folder was modified"; exit 1; }
# A different preset on a folder holding tiny is refused too.
if "$KVMESH" model create --preset small "$dir" >/dev/null 2>&1; then
  echo "FAIL: small over tiny succeeded"; exit 1
fi
# Usage errors exit 2.
set +e
"$KVMESH" model create --preset huge "$tmp/x" >/dev/null 2>&1; rc=$?
set -e
[[ $rc == 2 ]] || { echo "FAIL: unknown preset exited $rc, want 2"; exit 1; }

"$PY" - "$dir" <<'PY'
import json, os, struct, sys
d = sys.argv[1]
def check(cond, msg):
    if not cond:
        print("FAIL:", msg); sys.exit(1)

with open(os.path.join(d, "model.safetensors"), "rb") as f:
    blob = f.read()
(n,) = struct.unpack("<Q", blob[:8])
check(n % 8 == 0, f"header length {n} not a multiple of 8")
header = json.loads(blob[8:8 + n].decode("utf-8"))
data_len = len(blob) - 8 - n
meta = header.pop("__metadata__", {})
check(meta.get("format") == "pt", f"metadata {meta}")
cfg = json.load(open(os.path.join(d, "config.json")))
h, L, nh, nkv, inter, vocab = (cfg[k] for k in ("hidden_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "intermediate_size", "vocab_size"))
check((h, L, nh, nkv, inter, vocab) == (256, 4, 8, 4, 768, 1024), f"config dims {cfg}")
check(cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama", "architecture")
check(cfg["tie_word_embeddings"] is True and cfg["torch_dtype"] == "float32", "tied / dtype")
check(cfg["rope_scaling"]["rope_type"] == "llama3" and cfg["rope_scaling"]["factor"] == 8.0, "rope")
check(cfg["rope_theta"] == 500000.0 and cfg["max_position_embeddings"] == 4096, "rope theta / max pos")
hd = h // nh
want = {"model.embed_tokens.weight": [vocab, h], "model.norm.weight": [h]}
for i in range(L):
    p = f"model.layers.{i}."
    want.update({p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
                 p + "self_attn.q_proj.weight": [nh * hd, h], p + "self_attn.k_proj.weight": [nkv * hd, h],
                 p + "self_attn.v_proj.weight": [nkv * hd, h], p + "self_attn.o_proj.weight": [h, nh * hd],
                 p + "mlp.gate_proj.weight": [inter, h], p + "mlp.up_proj.weight": [inter, h],
                 p + "mlp.down_proj.weight": [h, inter]})
check(set(header) == set(want), f"tensor names differ: {sorted(set(header) ^ set(want))[:5]}")
spans = []
for name, t in header.items():
    check(t["dtype"] == "F32", f"{name} dtype {t['dtype']}")
    check(t["shape"] == want[name], f"{name} shape {t['shape']} != {want[name]}")
    b, e = t["data_offsets"]
    numel = 1
    for s in t["shape"]:
        numel *= s
    check(e - b == numel * 4, f"{name} offsets {b},{e} vs numel {numel}")
    spans.append((b, e, name))
spans.sort()
pos = 0
for b, e, name in spans:
    check(b == pos, f"{name} starts at {b}, expected {pos} (offsets not contiguous)")
    pos = e
check(pos == data_len, f"data section {data_len} bytes, tensors cover {pos}")
# Norm weights are 1.0; o_proj has std 1/sqrt(256).
nb, ne = header["model.layers.0.input_layernorm.weight"]["data_offsets"]
norm = struct.unpack(f"<{h}f", blob[8 + n + nb: 8 + n + ne])
check(all(x == 1.0 for x in norm), "input_layernorm weights are not 1.0")
qb, qe = header["model.layers.0.self_attn.o_proj.weight"]["data_offsets"]
q = struct.unpack(f"<{(qe - qb) // 4}f", blob[8 + n + qb: 8 + n + qe])
mean = sum(q) / len(q)
std = (sum((x - mean) ** 2 for x in q) / len(q)) ** 0.5
check(abs(mean) < 0.01 and 0.05 < std < 0.075, f"o_proj mean {mean} std {std}")

tok = json.load(open(os.path.join(d, "tokenizer.json")))
check(tok["model"]["type"] == "BPE", f"tokenizer model type {tok['model'].get('type')}")
check(len(tok["model"]["vocab"]) + len([t for t in tok.get("added_tokens", [])
      if t["content"] not in tok["model"]["vocab"]]) <= vocab, "tokenizer larger than vocab")
specials = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
gen = json.load(open(os.path.join(d, "generation_config.json")))
check(specials.get("<|begin_of_text|>") == cfg["bos_token_id"] == gen["bos_token_id"], "bos id")
check(cfg["eos_token_id"] == gen["eos_token_id"] ==
      [specials["<|end_of_text|>"], specials["<|eot_id|>"]], "eos ids")
json.load(open(os.path.join(d, "tokenizer_config.json")))
print(f"ok: {len(header)} tensors, {len(blob)} bytes, vocab {vocab}")
PY
echo "model_create_test: ok"
