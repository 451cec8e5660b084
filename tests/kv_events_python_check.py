"""Cross-implementation check of kvmesh's KV event codec against Python msgpack.

Builds messages the way vLLM's msgspec structs serialize them (array_like + tag, and the map form
with a "type" key, omit_defaults), feeds them to kvmesh_kv_event_tool, and checks the decoded
JSON; then asks the tool to encode batches and checks the frames field by field against vLLM's
array_like layout. Usage: kv_events_python_check.py <path to kvmesh_kv_event_tool>
"""
import json
import math
import struct
import subprocess
import sys

import msgpack

TOOL = sys.argv[1]
MASK = (1 << 64) - 1
failures = []


def vllm_int_hash(h):
    """vLLM's maybe_convert_block_hash for bytes, and the uint64 bit pattern for ints."""
    if isinstance(h, bytes):
        return int.from_bytes(h, "big") & MASK
    return h & MASK


def container(frames):
    out = struct.pack(">I", len(frames))
    for f in frames:
        out += struct.pack(">I", len(f)) + f
    return out


def uncontainer(data):
    (n,) = struct.unpack_from(">I", data, 0)
    at, frames = 4, []
    for _ in range(n):
        (ln,) = struct.unpack_from(">I", data, at)
        frames.append(data[at + 4: at + 4 + ln])
        at += 4 + ln
    assert at == len(data), "trailing bytes in tool output"
    return frames


def run_tool(mode, stdin):
    p = subprocess.run([TOOL, mode], input=stdin, capture_output=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"{mode} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return p.stdout


def decode(frames):
    return json.loads(run_tool("decode", container(frames)))


def check(name, cond, detail=""):
    if not cond:
        failures.append(f"{name}: {detail}")
        print(f"FAIL {name}: {detail}")
    else:
        print(f"ok   {name}")


# --- vLLM-style producers -------------------------------------------------------------------

def stored_array(hashes, parent, tokens, bs, lora_id=None, medium=None, lora_name=None,
                 n_fields=7, extra=()):
    """array_like BlockStored; n_fields = how many declared fields are present (4..7)."""
    fields = [hashes, parent, tokens, bs, lora_id, medium, lora_name][:n_fields]
    return ["BlockStored", *fields, *extra]


def stored_map(hashes, parent, tokens, bs, lora_id=None, medium=None, lora_name=None, **extra):
    d = {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent,
         "token_ids": tokens, "block_size": bs, "lora_id": lora_id, "medium": medium,
         "lora_name": lora_name}
    d.update(extra)
    return d


def expected_stored(hashes, parent, tokens, bs, lora_id=None, medium=None, lora_name=None):
    return {"type": "BlockStored", "block_hashes": [vllm_int_hash(h) for h in hashes],
            "parent_block_hash": None if parent is None else vllm_int_hash(parent),
            "token_ids": tokens, "block_size": bs, "lora_id": lora_id,
            "medium": (medium or "GPU").upper(), "lora_name": lora_name}


def expected_removed(hashes, medium=None):
    return {"type": "BlockRemoved", "block_hashes": [vllm_int_hash(h) for h in hashes],
            "medium": (medium or "GPU").upper()}


sha_a = bytes(range(1, 33))
sha_b = bytes(range(100, 132))
s1 = ([11, 2**64 - 1, -5], None, list(range(6)), 2, None, "GPU", None)
s2 = ([sha_a, sha_b], sha_a, [7, 8, 2**32 - 1, 0], 2, 3, "CPU", "adapter-x")
cases = []

# 1. Old vLLM (array_like, no medium/lora_name fields, batch without dp rank).
cases.append(("array_like_v0_9", msgpack.packb(
    [1712.5, [stored_array(*s1[:5], n_fields=5), ["BlockRemoved", [1, 2]], ["AllBlocksCleared"]]]),
    {"ts": 1712.5, "dp_rank": None,
     "events": [expected_stored(*s1[:5]), expected_removed([1, 2]), {"type": "AllBlocksCleared"}]}))

# 2. array_like with every field, bytes hashes, dp rank, and newer trailing fields we ignore.
cases.append(("array_like_full_with_extras", msgpack.packb(
    [1712.75, [stored_array(*s2, extra=[[["mm", 1]], 0, "full_attention", None]),
               ["BlockRemoved", [sha_a], "DISK", 0]], 2], use_bin_type=True),
    {"ts": 1712.75, "dp_rank": 2,
     "events": [expected_stored(*s2), expected_removed([sha_a], "DISK")]}))

# 3. Newest vLLM: map form (no array_like), omit_defaults drops data_parallel_rank=None.
cases.append(("map_form", msgpack.packb(
    {"ts": 99.0, "events": [stored_map(*s1, group_idx=1, kv_cache_spec_kind="full"),
                            {"type": "BlockRemoved", "block_hashes": [sha_b], "medium": None},
                            {"type": "AllBlocksCleared"}]}, use_bin_type=True),
    {"ts": 99.0, "dp_rank": None,
     "events": [expected_stored(*s1), expected_removed([sha_b]), {"type": "AllBlocksCleared"}]}))

# 4. Map form with dp rank, keys in a different order, tag last, unknown key.
ev = stored_map(*s2, future_field={"nested": [1, 2, 3]})
ev = dict(reversed(list(ev.items())))
cases.append(("map_form_reordered", msgpack.packb(
    {"data_parallel_rank": 0, "unknown": "x", "events": [ev], "ts": 5}, use_bin_type=True),
    {"ts": 5.0, "dp_rank": 0, "events": [expected_stored(*s2)]}))

# 5. float32 timestamp (msgpack use_single_float) and int64 negative hashes.
cases.append(("float32_ts_negative_hashes", msgpack.packb(
    [0.5, [["BlockRemoved", [-1, -(2**63)], "cpu"]]], use_single_float=True),
    {"ts": 0.5, "dp_rank": None, "events": [expected_removed([-1, -(2**63)], "cpu")]}))

for i, (name, payload, want) in enumerate(cases):
    topic = b"kv-events" if i % 2 else b""
    seq = [0, 1, 2**40 + 7, 2**63, 2**64 - 2][i]
    got = decode([topic, seq.to_bytes(8, "big"), payload])
    ok = got.get("ok") and got["topic"] == topic.decode() and got["seq"] == seq
    if ok:
        gb = got["batch"]
        ok = (math.isclose(gb["ts"], want["ts"]) and gb["dp_rank"] == want["dp_rank"]
              and gb["events"] == want["events"])
    check(f"decode {name}", ok, f"got {got}, want {want}")

# Errors the decoder must report (and not crash on).
good = msgpack.packb([1.0, [["AllBlocksCleared"]]])
err_cases = [
    ("unknown_tag", [b"", bytes(8), msgpack.packb([1.0, [["BlockEvicted", [1]]]])],
     "INVALID_ARGUMENT", "unknown event tag"),
    ("unknown_medium", [b"", bytes(8), msgpack.packb([1.0, [["BlockRemoved", [1], "HBM"]]])],
     "INVALID_ARGUMENT", "unknown medium"),
    ("truncated", [b"", bytes(8), good[:-3]], "DATA_LOSS", "byte offset"),
    ("two_frames", [b"", good], "INVALID_ARGUMENT", "got 2"),
    ("short_seq", [b"", bytes(4), good], "INVALID_ARGUMENT", "8 bytes"),
    ("huge_array", [b"", bytes(8), b"\x92\x01\xdd\xff\xff\xff\xff"], "DATA_LOSS", "declares"),
    ("string_hash", [b"", bytes(8), msgpack.packb([1.0, [["BlockRemoved", ["abc"]]]])],
     "INVALID_ARGUMENT", "block hash"),
]
for name, frames, code, text in err_cases:
    got = decode(frames)
    check(f"reject {name}", not got["ok"] and got["code"] == code and text in got["error"],
          f"got {got}")

# --- kvmesh encoder -> Python msgpack, checked against vLLM's array_like layout ---------------
VLLM_STORED = ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
               "medium", "lora_name"]
VLLM_REMOVED = ["block_hashes", "medium"]

batches = [
    {"ts": 1712345678.125, "dp_rank": 3, "events": [
        {"type": "BlockStored", "block_hashes": [1, 2**64 - 1, 2**63], "parent_block_hash": 77,
         "token_ids": [1, 2, 3, 4, 5, 6], "block_size": 2, "lora_id": 9, "medium": "CPU",
         "lora_name": "l9"},
        {"type": "BlockStored", "block_hashes": [5], "parent_block_hash": None,
         "token_ids": [], "block_size": 16, "lora_id": None, "medium": "GPU",
         "lora_name": None},
        {"type": "BlockRemoved", "block_hashes": [2**64 - 1], "medium": "DISK"},
        {"type": "AllBlocksCleared"}]},
    {"ts": 0.0, "dp_rank": None, "events": []},
]
for i, b in enumerate(batches):
    seq = [0, 2**64 - 1][i]
    frames = uncontainer(run_tool("encode", json.dumps(
        {"topic": "t%d" % i, "seq": seq, "batch": b}).encode()))
    check(f"encode#{i} frame count", len(frames) == 3, f"{len(frames)} frames")
    check(f"encode#{i} topic", frames[0] == b"t%d" % i, repr(frames[0]))
    check(f"encode#{i} seq big-endian", frames[1] == seq.to_bytes(8, "big"), frames[1].hex())
    obj = msgpack.unpackb(frames[2], raw=False, strict_map_key=False)
    want_len = 3 if b["dp_rank"] is not None else 2  # omit_defaults drops a None dp rank
    check(f"encode#{i} batch layout", isinstance(obj, list) and len(obj) == want_len
          and isinstance(obj[0], float) and obj[0] == b["ts"], repr(obj)[:200])
    if want_len == 3:
        check(f"encode#{i} dp_rank", obj[2] == b["dp_rank"], repr(obj[2]))
    check(f"encode#{i} event count", len(obj[1]) == len(b["events"]), repr(obj[1])[:200])
    for j, (wire, e) in enumerate(zip(obj[1], b["events"])):
        names = {"BlockStored": VLLM_STORED, "BlockRemoved": VLLM_REMOVED,
                 "AllBlocksCleared": []}[e["type"]]
        ok = wire[0] == e["type"] and len(wire) == 1 + len(names)
        for k, field in enumerate(names):
            ok = ok and wire[1 + k] == e[field]
        check(f"encode#{i} event {j} {e['type']}", ok, f"wire {wire}, want {e}")
    # And our own decoder reads our encoding back identically.
    back = decode(frames)
    check(f"encode#{i} round trip", back["ok"] and back["batch"] == b, f"{back}")

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("all KV event cross-implementation checks passed")
