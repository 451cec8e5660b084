#!/usr/bin/python3
"""Independent reference for kvmesh block hashing (docs/block-hashing.md).

Computes block hashes with python3-xxhash and struct packing only -- no kvmesh code -- and
compares them with `kvmesh hash`. Run through tests/block_hash_vectors_test.sh, or directly:

  /usr/bin/python3 tests/block_hash_vectors.py check --kvmesh BUILD/cli/kvmesh
  /usr/bin/python3 tests/block_hash_vectors.py vector --block-size 4 --tokens 1,2,3,4,5,6,7,8,9
"""
import argparse
import json
import random
import struct
import subprocess
import sys

import xxhash

MASK64 = (1 << 64) - 1
BASE_SEED = 1337


def seed_for_lora(lora):
    if not lora:
        return BASE_SEED
    return (BASE_SEED + xxhash.xxh3_64_intdigest(lora.encode("utf-8"), seed=0)) & MASK64


def reference_hashes(tokens, block_size, salt="", lora="", seed=None):
    """Returns (local, sequence) for every full block, per the scheme in ARCHITECTURE.md."""
    if seed is None:
        seed = seed_for_lora(lora)
    local, sequence = [], []
    for i in range(len(tokens) // block_size):
        block = tokens[i * block_size:(i + 1) * block_size]
        data = struct.pack("<%dI" % len(block), *block)
        if i == 0 and salt:
            data += salt.encode("utf-8")
        h = xxhash.xxh3_64_intdigest(data, seed=seed)
        local.append(h)
        if i == 0:
            sequence.append(h)
        else:
            sequence.append(xxhash.xxh3_64_intdigest(struct.pack("<QQ", sequence[-1], h), seed=seed))
    return local, sequence


def run_kvmesh(binary, tokens, block_size, salt, lora, via):
    args = [binary, "hash", "--block-size", str(block_size)]
    if salt:
        args += ["--salt", salt]
    if lora:
        args += ["--lora", lora]
    stdin = None
    if via == "flag":
        args += ["--tokens", json.dumps(tokens)]
    else:
        stdin = json.dumps(tokens)
    p = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise AssertionError("kvmesh hash exited %d: %s" % (p.returncode, p.stderr.strip()))
    return json.loads(p.stdout)


def make_cases():
    rng = random.Random(20261129)
    cases = []
    lengths = [0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 64, 127, 128, 129, 255, 256, 300, 1000, 2048, 4099]
    for bs in (1, 2, 16, 64, 128):
        for n in lengths:
            if bs == 1 and n > 300:
                continue  # keep the command line short; long inputs are covered by larger blocks
            for salt, lora in (("", ""), ("tenant-a", ""), ("", "sql-adapter"), ("s\u00e9l \u2603", "lora/x")):
                gen = rng.choice(("small", "full", "high"))
                if gen == "small":
                    toks = [rng.randrange(0, 50000) for _ in range(n)]
                elif gen == "full":
                    toks = [rng.randrange(0, 1 << 32) for _ in range(n)]
                else:  # ids near 2^32-1 exercise the top byte of the little-endian packing
                    toks = [(1 << 32) - 1 - rng.randrange(0, 4) for _ in range(n)]
                cases.append(dict(tokens=toks, block_size=bs, salt=salt, lora=lora))
    return cases


def check(binary):
    cases = make_cases()
    failures = 0
    nonempty = 0
    negative_checked = 0
    for idx, c in enumerate(cases):
        via = "stdin" if idx % 2 else "flag"
        if via == "flag" and len(c["tokens"]) > 2000:
            via = "stdin"
        got = run_kvmesh(binary, c["tokens"], c["block_size"], c["salt"], c["lora"], via)
        local, seq = reference_hashes(c["tokens"], c["block_size"], c["salt"], c["lora"])
        want = dict(block_size=c["block_size"], num_tokens=len(c["tokens"]), num_blocks=len(seq),
                    local_hashes=local, sequence_hashes=seq,
                    sequence_hashes_hex=["%016x" % h for h in seq])
        for k, v in want.items():
            if got.get(k) != v:
                failures += 1
                print("MISMATCH case %d (block_size=%d n=%d salt=%r lora=%r) field %s:\n  want %s\n  got  %s"
                      % (idx, c["block_size"], len(c["tokens"]), c["salt"], c["lora"], k,
                         str(v)[:200], str(got.get(k))[:200]))
                break
        if seq:
            nonempty += 1
            # Negative controls: a wrong seed, a dropped salt/LoRA, or a big-endian packing must
            # NOT reproduce kvmesh's output, so the comparison above cannot pass vacuously.
            _, wrong = reference_hashes(c["tokens"], c["block_size"], c["salt"], c["lora"],
                                        seed=seed_for_lora(c["lora"]) + 1)
            if wrong == got["sequence_hashes"]:
                failures += 1
                print("NEGATIVE CONTROL matched with a wrong seed in case %d" % idx)
            if c["salt"] or c["lora"]:
                _, plain = reference_hashes(c["tokens"], c["block_size"])
                if plain == got["sequence_hashes"]:
                    failures += 1
                    print("NEGATIVE CONTROL: salt/LoRA had no effect in case %d" % idx)
            negative_checked += 1
    # Anchor the Python library itself to published XXH3 values (xxhash's sanity test vectors).
    if xxhash.xxh3_64_intdigest(b"") != 0x2D06800538D394C2:
        failures += 1
        print("python xxhash does not reproduce XXH3_64bits('') = 0x2D06800538D394C2")
    if nonempty < 100 or negative_checked < 100:
        failures += 1
        print("too few non-empty cases (%d); the comparison would be weak" % nonempty)
    print("%d cases (%d with >= 1 block, negative controls on each), %d failures"
          % (len(cases), nonempty, failures))
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare `kvmesh hash` with this reference on many cases")
    c.add_argument("--kvmesh", required=True, help="path to the kvmesh binary")
    v = sub.add_parser("vector", help="print reference hashes for one input (for fixed test vectors)")
    v.add_argument("--block-size", type=int, default=16)
    v.add_argument("--tokens", required=True, help="comma-separated token ids, or range:N for 0..N-1")
    v.add_argument("--salt", default="")
    v.add_argument("--lora", default="")
    a = ap.parse_args()
    if a.cmd == "check":
        return check(a.kvmesh)
    if a.tokens.startswith("range:"):
        toks = list(range(int(a.tokens[6:])))
    else:
        toks = [int(t) for t in a.tokens.split(",") if t]
    local, seq = reference_hashes(toks, a.block_size, a.salt, a.lora)
    print(json.dumps(dict(seed=seed_for_lora(a.lora), local=["0x%016x" % h for h in local],
                          sequence=["0x%016x" % h for h in seq])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
