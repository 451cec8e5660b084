#!/usr/bin/env python3
"""Remote-prefill overhead on the CPU backend: TTFT of a disaggregated request (prefill agent ->
KV pull over UCX -> decode agent) vs the same prompt on one aggregated agent, for a ~2k-token prompt.
Prints one JSON object.

  KVMESH_BINARY_DIR=build python3 bench/disagg_ttft.py [--model builtin:tiny] [--tls tcp] [--runs 5]

Per run a fresh prompt (no prefix-cache hits anywhere). Measured from the client:
  aggregated_ttft   streamed request to the aggregated agent, arrival -> first token
  prefill           prefill agent answer (first token + handle): what a router streams as TTFT
  decode_first      decode agent, streamed, arrival -> first token (handshake/claim + pull + first
                    token emission; the pull is also read from the decode agent's
                    kvmesh_agent_kv_transfer_seconds histogram)
  disagg_ttft_to_decode = prefill + decode_first: when the decode side has the KV and streams
  transfer_share    = transfer seconds / disagg_ttft_to_decode
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
ap.add_argument("--prompt-tokens", type=int, default=2048)
args = ap.parse_args()
tls = {"tcp": "tcp", "shm": "posix,sysv,cma,self"}.get(args.tls, args.tls)
flags = ["--model", args.model, "--transfer.ucx-tls", tls, "--engine.kv-cache-mib", "512",
         "--engine.max-num-batched-tokens", "2048"]


def metric0(agent, name):
    try:
        return agent.metric(name)
    except KeyError:
        return 0.0


tmp = workdir()
agents = []
try:
    A = Agent("aggregated", tmp, "--role", "aggregated", *flags); agents.append(A)
    P = Agent("prefill", tmp, "--role", "prefill", *flags); agents.append(P)
    D = Agent("decode", tmp, "--role", "decode", *flags); agents.append(D)
    rng = random.Random(1)
    served = A.info["model"]
    rows = []
    for run in range(args.runs + 1):  # run 0 warms up (connections, handshake)
        ids = [rng.randrange(5, 1000) for _ in range(args.prompt_tokens)]
        body = {"model": served, "prompt": ids, "max_tokens": 2, "temperature": 0, "ignore_eos": True}
        agg = stream_ttft(A.url + "/v1/completions", body)
        before = metric0(D, "kvmesh_agent_kv_transfer_seconds_sum")
        t0 = time.perf_counter()
        s, pre = P.post("/v1/completions", dict(body, max_tokens=1, kv_transfer_params={"do_remote_decode": True}))
        prefill = time.perf_counter() - t0
        assert s == 200, pre
        dec = stream_ttft(D.url + "/v1/completions", dict(body, kv_transfer_params=pre["kv_transfer_params"]))
        transfer = metric0(D, "kvmesh_agent_kv_transfer_seconds_sum") - before
        if run == 0:
            continue
        total = prefill + dec
        rows.append({"aggregated_ttft_s": agg, "prefill_s": prefill, "decode_first_s": dec,
                     "disagg_ttft_to_decode_s": total, "transfer_s": transfer,
                     "transfer_share": transfer / total})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    block_bytes = json.loads(P.get("/v1/kv/transfer_info")[1])["layout"]["block_bytes"]
    out = {"bench": "disagg_ttft", "model": args.model, "ucx_tls": tls, "prompt_tokens": args.prompt_tokens,
           "runs": args.runs, "kv_bytes_per_request": block_bytes * ((args.prompt_tokens + 15) // 16),
           "median": med, "runs_detail": rows}
    print(json.dumps(out, indent=1))
finally:
    for a in agents:
        a.stop()
