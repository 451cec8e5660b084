"""The global routing tier (docs/global-routing.md): a kvmesh-router whose workers are two
clusters' kvmesh-routers (workers file `kind: router`), each in front of its own agent.

All three routers share the API keys file and the salt secret (so a tenant's blocks hash alike
in every cluster); the global router fetches the clusters' prefix summaries with the admin key
and forwards the client's key. Requests are sequential and greedy. Checked:
  1. a cold prompt goes to the nearer cluster (B: rtt_ms 0 vs A: 10);
  2. a prompt whose ~25-block prefix was served by cluster A directly goes to A through the
     global router once A's summary shows it (overlap beats the 10 ms round trip), and is
     answered from A's cache (cached_tokens > 0);
  3. a request without a key is refused by the global router (401);
  4. cluster A's router is SIGKILLed: the next request for A's prefix is answered by B (failover),
     and the global router marks A unroutable.
Prints `GLOBAL_ROUTING_RESULT {...}`."""
import json
import os

import router_e2e_util as u

KEY = "global-tier-key-1"
ADMIN = "global-tier-admin"
SALT = "shared-salt-secret"
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def bearer(key=KEY):
    return {"Authorization": f"Bearer {key}"}


def body(prompt):
    return {"model": u.MODEL, "prompt": prompt, "max_tokens": 2, "temperature": 0,
            "ignore_eos": True}


def cached(resp):
    return resp["usage"]["prompt_tokens_details"]["cached_tokens"]


def router_flags(wd, name, keys):
    return [u.ROUTER, "--host", "127.0.0.1", "--port", "0", "--model", "builtin:" + u.MODEL,
            "--ready-file", os.path.join(wd, name + ".ready.json"), "--drain-timeout", "2s",
            "--workers.health-interval", "200ms", "--disaggregation.mode", "off",
            "--auth.api-keys-file", keys, "--auth.admin-key", ADMIN, "--auth.salt-secret", SALT]


def requests_total(router):
    return router.metric("kvmesh_router_requests_total", {"result": "ok"}, default=0.0,
                         headers=bearer(ADMIN))


def main():
    wd = u.workdir("kvmesh-global-")
    keys = os.path.join(wd, "api_keys.txt")
    with open(keys, "w") as f:
        f.write(f"{KEY} tenant-a\n")
    agents = u.start_agents(2, wd, "--engine.kv-cache-mib", "64")
    clusters = {}
    for name, agent in (("A", agents[0]), ("B", agents[1])):
        argv = router_flags(wd, "cluster" + name, keys) + ["--workers.urls", agent.url + "=aggregated"]
        clusters[name] = u.Proc("cluster" + name, wd, argv)
    workers_file = os.path.join(wd, "clusters.yaml")
    with open(workers_file, "w") as f:
        f.write("workers:\n")
        f.write(f"  - url: {clusters['A'].url}\n    kind: router\n    name: cluster-a\n"
                "    rtt_ms: 10\n    region: far\n")
        f.write(f"  - url: {clusters['B'].url}\n    kind: router\n    name: cluster-b\n"
                "    rtt_ms: 0\n    region: near\n")
    argv = router_flags(wd, "global", keys) + [
        "--workers.file", workers_file, "--global.summary-interval", "200ms",
        "--global.summary-api-key", ADMIN, "--routing.rtt-block-ms", "1"]
    glob = u.Proc("global", wd, argv)
    for r in (clusters["A"], clusters["B"], glob):
        u.wait_router_ready(r)

    rng_words = lambda seed, n: " ".join(WORDS[(seed * 7 + i * 13) % len(WORDS)] for i in range(n))
    prefix_a = "Cluster A document: " + rng_words(1, 120)
    result = {}

    # 1. Cold prompt: the nearer cluster.
    a0, b0 = requests_total(clusters["A"]), requests_total(clusters["B"])
    s, r = glob.post("/v1/completions", body("Cold question: " + rng_words(2, 60)), headers=bearer())
    u.check(s == 200, f"cold request through the global router: HTTP {s} {r if s != 200 else ''}")
    a1, b1 = requests_total(clusters["A"]), requests_total(clusters["B"])
    u.check(b1 == b0 + 1 and a1 == a0, f"cold prompt went to the near cluster B (A {a0}->{a1}, B {b0}->{b1})")

    # 2. Warm cluster A directly, wait for its summary, then the same prefix via the global router.
    s, r = clusters["A"].post("/v1/completions", body(prefix_a + " First."), headers=bearer())
    u.check(s == 200, f"direct request to cluster A: HTTP {s}")
    prompt_blocks = r["usage"]["prompt_tokens"] // 16 if s == 200 else 0
    result["prefix_blocks"] = prompt_blocks

    def global_blocks():
        st, text = glob.get("/debug/index", headers=bearer(ADMIN))
        return json.loads(text)["index"]["blocks"] if st == 200 else 0
    u.wait_until(lambda: global_blocks() >= prompt_blocks, 10, "cluster A's summary in the global index")
    a2, b2 = requests_total(clusters["A"]), requests_total(clusters["B"])
    s, r = glob.post("/v1/completions", body(prefix_a + " Second."), headers=bearer())
    u.check(s == 200, f"warm request through the global router: HTTP {s} {r if s != 200 else ''}")
    a3, b3 = requests_total(clusters["A"]), requests_total(clusters["B"])
    u.check(a3 == a2 + 1 and b3 == b2,
            f"prefix held by far cluster A went to A (A {a2}->{a3}, B {b2}->{b3}; {prompt_blocks} blocks > rtt 10)")
    if s == 200:
        result["warm_cached_tokens"] = cached(r)
        u.check(cached(r) > 0, f"answered from A's cache: cached_tokens {cached(r)} > 0")

    # 2b. Cluster A's summary lists the prefix root of those two requests (the placement hub's
    # heat per root): counted twice, its common prefix the blocks both prompts share, all of them
    # held in A (they are in A's summary's block list too).
    st, text = clusters["A"].get("/v1/kv/inventory", headers=bearer(ADMIN))
    u.check(st == 200, f"cluster A's summary: HTTP {st}")
    if st == 200:
        summary = json.loads(text)
        roots = summary.get("roots", [])
        held = set(summary["tiers"][0]["hashes"])
        u.check(len(roots) == 1 and roots[0]["requests"] == 2,
                f"A's summary lists one prefix root asked for twice: {[(r['root'], r['requests']) for r in roots]}")
        if roots:
            blocks = roots[0]["blocks"]
            result["root_blocks"] = len(blocks)
            u.check(blocks[0] == roots[0]["root"] and prompt_blocks - 2 <= len(blocks) <= prompt_blocks,
                    f"the root's common prefix is the shared document: {len(blocks)} of {prompt_blocks} blocks")
            u.check(all(b in held for b in blocks), "every block of the root's prefix is held in cluster A")

    # 3. The global router authenticates too.
    s, _ = glob.post("/v1/completions", body("no key"))
    u.check(s == 401, f"request without a key: HTTP {s} == 401")

    # 4. Failover: cluster A's router dies; A's prefix is served by B.
    clusters["A"].kill9()
    s, r = glob.post("/v1/completions", body(prefix_a + " Third."), headers=bearer())
    u.check(s == 200, f"after cluster A died: HTTP {s} {r if s != 200 else ''}")
    b4 = requests_total(clusters["B"])
    u.check(b4 == b3 + 1, f"the request after A died was served by B (B {b3}->{b4})")

    def a_unroutable():
        st, text = glob.get("/admin/workers", headers=bearer(ADMIN))
        if st != 200:
            return False
        ws = {w["name"]: w for w in json.loads(text)["workers"]}
        return "cluster-a" in ws and not ws["cluster-a"]["routable"]
    u.wait_until(a_unroutable, 10, "the global router marks cluster A unroutable")
    print("GLOBAL_ROUTING_RESULT " + json.dumps(result), flush=True)
    u.finish()


if __name__ == "__main__":
    main()
