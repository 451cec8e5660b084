#!/usr/bin/env python3
"""Prefix copy vs recompute on the CPU backend (docs/kv-transfer.md, "Prefix copies"): what the
placement hub's copy of a hot prefix buys a cluster that does not hold it. Three agents: S holds
a document's KV (it served it once), T receives a copy (POST /v1/kv/export on S, then
/v1/kv/import on T: the KV moves over UCX), C stays cold. Prints one JSON object.

  KVMESH_BINARY_DIR=build python3 bench/prefix_copy.py [--model builtin:tiny] [--tls tcp] [--runs 5]

Per run a fresh document of ~--doc-tokens tokens (no prefix shared between runs). Medians over
the runs, measured from the client:
  copy_s            export + import round trips (the import answers once T holds the blocks)
  pull_s            the pull alone, as T reports it ("seconds": handshake/claim + UCX read + commit)
  ttft_cold         streamed request (document + a question) to C: the whole prompt computed
  ttft_after_copy   the same request to T after the copy: only the question is computed
  ttft_source_warm  the same request to S (it held the document already): the best case
"""
import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from agent_harness import Agent, stream_ttft, workdir  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="builtin:tiny")
ap.add_argument("--tls", default="tcp")
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--doc-tokens", type=int, default=2048)
args = ap.parse_args()
tls = {"tcp": "tcp", "shm": "posix,sysv,cma,self"}.get(args.tls, args.tls)
flags = ["--model", args.model, "--transfer.ucx-tls", tls, "--engine.kv-cache-mib", "512",
         "--engine.max-num-batched-tokens", "2048"]
words = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def ttft(agent, prompt):
    return stream_ttft(agent.url + "/v1/completions", {"model": agent.served, "prompt": prompt, "max_tokens": 4,
                                                       "temperature": 0, "ignore_eos": True})


tmp = workdir()
agents = []
try:
    S = Agent("source", tmp, "--role", "aggregated", *flags)
    agents.append(S)
    T = Agent("target", tmp, "--role", "aggregated", *flags)
    agents.append(T)
    C = Agent("cold", tmp, "--role", "aggregated", *flags)
    agents.append(C)
    _, models = S.get("/v1/models")
    for a in agents:
        a.served = json.loads(models)["data"][0]["id"]
    rng = random.Random(11)
    rows = []
    copied = set()  # roots of the earlier runs' documents
    for run in range(args.runs):
        # ~4 tokens per word with the byte-level tokenizer of the built-in models.
        doc = f"Document {run}: " + " ".join(rng.choice(words) for _ in range(int(args.doc_tokens / 4)))
        s, r = S.post("/v1/completions", {"model": S.served, "prompt": doc, "max_tokens": 1})
        assert s == 200, r
        doc_tokens = r["usage"]["prompt_tokens"]
        roots = [x for x in S.inventory()["roots"]
                 if len(x["blocks"]) >= doc_tokens // 16 - 1 and x["root"] not in copied]
        assert len(roots) == 1, roots
        chain = roots[0]["blocks"]
        copied.add(roots[0]["root"])
        t0 = time.perf_counter()
        s, exp = S.post("/v1/kv/export", {"hashes": chain})
        assert s == 200, exp
        s, imp = T.post("/v1/kv/import", {"kv_transfer_params": exp["kv_transfer_params"], "hashes": exp["hashes"]})
        copy_s = time.perf_counter() - t0
        assert s == 200 and imp["imported_blocks"] == len(chain), imp
        prompt = doc + " Question: what is the third word?"
        rows.append({
            "doc_tokens": doc_tokens,
            "blocks": len(chain),
            "bytes": imp["bytes"],
            "copy_s": copy_s,
            "pull_s": imp["seconds"],
            "ttft_cold": ttft(C, prompt),
            "ttft_after_copy": ttft(T, prompt),
            "ttft_source_warm": ttft(S, prompt),
        })
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["copy_plus_ttft_vs_cold"] = (med["copy_s"] + med["ttft_after_copy"]) / med["ttft_cold"]
    med["pull_gbit_per_s"] = med["bytes"] * 8 / med["pull_s"] / 1e9
    print(json.dumps({"bench": "prefix_copy", "model": args.model, "tls": args.tls, "runs": args.runs,
                      "median": {k: round(v, 4) for k, v in med.items()}, "runs_detail": rows}))
    for a in agents:
        a.stop()
    agents = []
finally:
    for a in agents:
        a.stop()
