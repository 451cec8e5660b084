"""KV-aware routing beats round robin on a shared-prefix workload (router issue, "Tests").

Four aggregated kvmesh-agents (builtin:tiny, one CPU thread each) behind kvmesh-router. The
workload: 16 prefix groups of ~320 tokens; each request is its group's prefix + a unique
suffix; 96 requests (6 per group) in a seeded random order at concurrency 4, streamed,
max_tokens 2. It runs once per routing mode on fresh agents and a fresh router (every cache
starts cold):
  kv (default cost), round_robin, and kv with --routing.kv-cost dynamo (printed, not asserted),
  and, as the reference for what routing could reach, the client itself sending each group to one
  agent without a router (printed, not asserted).
Measured per run: cached-token ratio = sum(cached_tokens) / sum(prompt_tokens) from the usage of
every answer, mean and p50 TTFT, how the requests spread over the agents.
Asserted: kv's ratio >= round_robin's + MARGIN, kv's mean and median TTFT < round_robin's (a
96-request run on a shared 2-core machine gets a few scheduling outliers that can decide the mean:
with the earlier cost a CI run saw kv mean 64.3 vs 63.4 ms while kv's median was 45 vs 63 ms; the
current cost measured means of 84-96 vs 131-194 ms), every request answered 200, kv does not
pile all traffic onto one agent (max share < 0.75). When the first run of each mode is
inconclusive (a loaded machine), kv and round robin run once more on new prompts and the checks use
both runs pooled (main()). ctest runs this test alone (RUN_SERIAL).
Prints one JSON line `KV_ROUTING_RESULT {...}` with all numbers (for docs/benchmarks.md)."""
import concurrent.futures
import json
import os
import random
import statistics
import time

import router_e2e_util as u

N_AGENTS = 4
N_GROUPS = 16
N_REQUESTS = 96
CONCURRENCY = int(os.environ.get("KVMESH_E2E_CONCURRENCY", "4"))  # override: exploration only
MAX_TOKENS = 2
# Expected from the workload's shape: each group's 6 requests find its prefix cold on ~3.3 of the
# 4 agents under round robin (ratio ~0.4, +-0.03 between runs) and on 1 with perfect affinity
# (0.76). kv (kvmesh cost) measured 0.71-0.74 vs round robin 0.39-0.45 (6 runs, one beside two
# busy loops; docs/testing-router.md). The margin is a third of the smallest gap seen, and above
# what Dynamo's cost reached over round robin in the same runs (+0.02-0.06), so a cost that
# spreads like Dynamo's fails it.
MARGIN = 0.10

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def workload(seed):
    rng = random.Random(seed)
    prefixes = [f"Group {g} system prompt: " + " ".join(rng.choice(WORDS) for _ in range(70))
                for g in range(N_GROUPS)]
    reqs = []
    for i in range(N_REQUESTS):
        g = i % N_GROUPS
        suffix = f" Request {i}: " + " ".join(rng.choice(WORDS) for _ in range(4)) + "?"
        reqs.append(prefixes[g] + suffix)
    rng.shuffle(reqs)
    return reqs


def run_mode(label, router_flags, prompts):
    """router_flags None = no router: the client sends each group to one agent (group % 4), the
    best a router can do for the cache on this workload (printed as a reference, not asserted)."""
    wd = u.workdir(f"kvmesh-kvroute-{label}-")
    agents = u.start_agents(N_AGENTS, wd, "--engine.kv-cache-mib", "64", prefix=f"{label}-agent")
    router = None
    if router_flags is not None:
        router = u.start_router(wd, [(a, "aggregated") for a in agents], "--disaggregation.mode",
                                "off", *router_flags, name=f"router-{label}")
        u.wait_router_ready(router)
        # The registry probes every worker once before the router serves; two more health rounds
        # (200 ms) so that no agent is still unprobed when the clock starts.
        time.sleep(0.5)

    def one(prompt):
        body = {"model": u.MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        port = router.port if router else agents[int(prompt.split()[1]) % N_AGENTS].port
        return u.collect_stream(port, "/v1/completions", body, timeout=120)

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(one, prompts))
    wall = time.time() - t0
    bad = [r for r in results if r["status"] != 200 or r["usage"] is None or not r["done"]]
    ok = [r for r in results if r not in bad]
    prompt_tokens = sum(r["usage"]["prompt_tokens"] for r in ok)
    cached = sum(r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in ok)
    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
    per_agent = [int(a.metric("kvmesh_agent_requests_total", default=0.0)) for a in agents]
    out = {
        "requests": len(results), "failed": len(bad),
        "_ttfts": ttfts,
        "cached_token_ratio": round(cached / prompt_tokens, 4) if prompt_tokens else 0.0,
        "prompt_tokens": prompt_tokens, "cached_tokens": cached,
        "ttft_mean_ms": round(1000 * statistics.mean(ttfts), 2) if ttfts else None,
        "ttft_p50_ms": round(1000 * statistics.median(ttfts), 2) if ttfts else None,
        "wall_s": round(wall, 2), "requests_per_agent": per_agent,
    }
    if bad:
        out["first_failure"] = {k: bad[0].get(k) for k in ("status", "body", "errors", "done", "usage")}
    print(f"{label}: {json.dumps(public(out))}", flush=True)
    if router:
        router.stop()
    for a in agents:
        a.stop()
    return out


def public(r):
    return {k: v for k, v in r.items() if not k.startswith("_")}


def pooled(runs):
    """One result from several runs of a mode: token sums, every TTFT, every request."""
    prompt = sum(r["prompt_tokens"] for r in runs)
    cached = sum(r["cached_tokens"] for r in runs)
    ttfts = [t for r in runs for t in r["_ttfts"]]
    return {
        "requests": sum(r["requests"] for r in runs), "failed": sum(r["failed"] for r in runs),
        "_ttfts": ttfts,
        "cached_token_ratio": round(cached / prompt, 4) if prompt else 0.0,
        "prompt_tokens": prompt, "cached_tokens": cached,
        "ttft_mean_ms": round(1000 * statistics.mean(ttfts), 2) if ttfts else None,
        "ttft_p50_ms": round(1000 * statistics.median(ttfts), 2) if ttfts else None,
        "requests_per_agent": [sum(x) for x in zip(*(r["requests_per_agent"] for r in runs))],
        "runs": len(runs),
    }


def ttft_lower(kv, rr, key):
    return kv[key] is not None and rr[key] is not None and kv[key] < rr[key]


def kv_wins(kv, rr):
    return (kv["cached_token_ratio"] >= rr["cached_token_ratio"] + MARGIN
            and ttft_lower(kv, rr, "ttft_mean_ms") and ttft_lower(kv, rr, "ttft_p50_ms"))


def main():
    res = {}
    # Each run gets its own prompts (same shape, another seed): nothing from an earlier run can
    # be cached, even by accident.
    res["kv"] = run_mode("kv", ["--routing.mode", "kv"], workload(1))
    res["round_robin"] = run_mode("rr", ["--routing.mode", "round_robin"], workload(2))
    res["kv_dynamo"] = run_mode("dyn", ["--routing.mode", "kv", "--routing.kv-cost", "dynamo"],
                                workload(3))
    res["group_affinity_no_router"] = run_mode("affinity", None, workload(4))
    if not kv_wins(res["kv"], res["round_robin"]):
        # One 96-request run per mode is a small sample, and the two runs happen at different
        # moments of a shared machine (a CI run saw kv 0.478 vs 0.421 while ctest ran the
        # 60-second hostile-client test beside it; quiet runs give 0.58-0.68). Inconclusive ->
        # one more run of each on new prompts, and the checks below use both runs pooled. A
        # policy that is really no better than round robin still fails: it has to win on 192
        # requests.
        print("first round inconclusive: a second run of kv and round_robin, pooled", flush=True)
        res["kv"] = pooled([res["kv"], run_mode("kv2", ["--routing.mode", "kv"], workload(5))])
        res["round_robin"] = pooled([res["round_robin"],
                                     run_mode("rr2", ["--routing.mode", "round_robin"], workload(6))])
    res = {k: public(v) for k, v in res.items()}
    print("KV_ROUTING_RESULT " + json.dumps(res), flush=True)

    kv, rr = res["kv"], res["round_robin"]
    for name, r in res.items():
        if name == "group_affinity_no_router":
            continue
        u.check(r["failed"] == 0, f"{name}: all {r['requests']} requests answered 200 with usage "
                f"({r['failed']} failed{'; first: ' + json.dumps(r.get('first_failure')) if r['failed'] else ''})")
    u.check(kv["cached_token_ratio"] >= rr["cached_token_ratio"] + MARGIN,
            f"kv cached-token ratio {kv['cached_token_ratio']} >= round_robin "
            f"{rr['cached_token_ratio']} + {MARGIN}")
    u.check(ttft_lower(kv, rr, "ttft_mean_ms"),
            f"kv mean TTFT {kv['ttft_mean_ms']} ms < round_robin {rr['ttft_mean_ms']} ms")
    u.check(ttft_lower(kv, rr, "ttft_p50_ms"),
            f"kv median TTFT {kv['ttft_p50_ms']} ms < round_robin {rr['ttft_p50_ms']} ms")
    share = max(kv["requests_per_agent"]) / max(1, sum(kv["requests_per_agent"]))
    u.check(share < 0.75, f"kv spreads the groups: busiest agent got {share:.2f} of the requests "
            f"{kv['requests_per_agent']}")
    rr_share = max(rr["requests_per_agent"]) / max(1, sum(rr["requests_per_agent"]))
    u.check(rr_share <= 0.30, f"round_robin spreads evenly: busiest agent {rr_share:.2f} "
            f"{rr['requests_per_agent']}")
    u.finish()


if __name__ == "__main__":
    main()
