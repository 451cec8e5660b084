"""Disaggregated == aggregated: a prefill agent and a decode agent (separate processes, KV moved by
UCX over the transport given as argv[1]: tcp or shm) produce exactly the same greedy tokens as one
aggregated agent, for 50 prompts: shared system prefixes, unique prompts, and prompts whose prefix
is already cached on the decode side (those blocks are not pulled). Afterwards no agent holds a
block, every lease was released, and no transfer failed."""
import random
import sys

from agent_harness import Agent, wait_until, workdir

TLS = {"tcp": "tcp", "shm": "posix,sysv,cma,self"}[sys.argv[1]]
FLAGS = ["--transfer.ucx-tls", TLS, "--engine.kv-cache-mib", "64"]
MAX_TOKENS = 8

words = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
rng = random.Random(7)


def sentence(n):
    return " ".join(rng.choice(words) for _ in range(n))


systems = [f"System {i}: you are a helpful assistant. " + sentence(30) for i in range(5)]
shared = [f"{systems[i % 5]} Question {i}: {sentence(6)}?" for i in range(30)]
unique = [f"Unique {i}: {sentence(10 + 3 * i)}" for i in range(15)]
decode_prefix = "Decode-side prefix: " + sentence(40)
decode_held = [f"{decode_prefix} Follow-up {i}: {sentence(5)}" for i in range(5)]
prompts = shared + unique + decode_held
assert len(prompts) == 50

tmp = workdir()
agents = []
try:
    A = Agent("aggregated", tmp, "--role", "aggregated", *FLAGS)
    agents.append(A)
    P = Agent("prefill", tmp, "--role", "prefill", *FLAGS)
    agents.append(P)
    D = Agent("decode", tmp, "--role", "decode", *FLAGS)
    agents.append(D)

    def body(prompt, **extra):
        b = {"model": "tiny", "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
             "ignore_eos": True, "return_token_ids": True}
        b.update(extra)
        return b

    # Put the decode-side prefix on D (and the same history on A, so both computed it alike).
    for agent in (A, D):
        s, r = agent.post("/v1/completions", body(decode_prefix + " warm-up"))
        assert s == 200, (agent.name, s, r)

    # Heat for the placement hub (inventory "demand" and "roots"): counted where the prefill runs.
    demand0 = {agent.name: agent.inventory()["demand"] for agent in (A, P, D)}
    prompt_tokens = 0

    mismatches = []
    for i, prompt in enumerate(prompts):
        s, ref = A.post("/v1/completions", body(prompt))
        assert s == 200, (s, ref)
        prompt_tokens += ref["usage"]["prompt_tokens"]
        s, pre = P.post("/v1/completions", body(prompt, max_tokens=1,
                                                kv_transfer_params={"do_remote_decode": True}))
        assert s == 200, (s, pre)
        params = pre["kv_transfer_params"]
        assert params["do_remote_prefill"] is True and params["num_tokens"] == ref["usage"]["prompt_tokens"], params
        assert pre["choices"][0]["token_ids"][0] == ref["choices"][0]["token_ids"][0], (i, pre, ref)
        s, dec = D.post("/v1/completions", body(prompt, kv_transfer_params=params))
        assert s == 200, (s, dec)
        want, got = ref["choices"][0]["token_ids"], dec["choices"][0]["token_ids"]
        assert len(got) == MAX_TOKENS and dec["usage"]["completion_tokens"] == MAX_TOKENS, dec
        if got != want:
            mismatches.append((i, want, got))
        assert dec["choices"][0]["text"] == ref["choices"][0]["text"] or got != want
        if prompt in decode_held:
            # The prefix blocks were already on D: they count as cached there and were not pulled.
            assert dec["usage"]["prompt_tokens_details"]["cached_tokens"] >= 48, dec["usage"]
    assert not mismatches, f"{len(mismatches)} prompts differ, first: {mismatches[0]}"

    # Each request counted once per graph: A (aggregated) and P (prefill) count the requests and
    # their prompts, D (decode of imported KV) only the tokens it generated.
    demand = {agent.name: agent.inventory()["demand"] for agent in (A, P, D)}
    delta = {n: {k: demand[n][k] - demand0[n][k] for k in demand[n]} for n in demand}
    n = len(prompts)
    assert delta["aggregated"]["requests"] == n and delta["aggregated"]["prompt_tokens"] == prompt_tokens, delta
    assert delta["aggregated"]["completion_tokens"] == n * MAX_TOKENS, delta
    assert delta["prefill"]["requests"] == n and delta["prefill"]["prompt_tokens"] == prompt_tokens, delta
    assert delta["prefill"]["completion_tokens"] == 0 and delta["prefill"]["cached_tokens"] > 0, delta
    assert delta["decode"] == {"requests": 0, "prompt_tokens": 0, "cached_tokens": 0,
                               "completion_tokens": n * MAX_TOKENS}, delta
    # Roots: each of the 5 system prompts started 6 requests on P; their common prefix covers the
    # system prompt's full blocks. D counted only its own warm-up, never the imported requests.
    p_roots = P.inventory()["roots"]
    hot = [r for r in p_roots if r["requests"] == 6]
    assert len(hot) == 5 and all(r["blocks"][0] == r["root"] and len(r["blocks"]) >= 3 for r in hot), p_roots
    assert sum(r["requests"] for r in p_roots) == n, p_roots  # 21 roots, all listed (top 32)
    d_roots = D.inventory()["roots"]
    assert sum(r["requests"] for r in d_roots) == 1 and d_roots[0]["requests"] == 1, d_roots

    # Chat completions through the same path.
    msgs = [{"role": "system", "content": systems[0]}, {"role": "user", "content": "Hello there"}]
    chat = {"model": "tiny", "messages": msgs, "max_tokens": MAX_TOKENS, "temperature": 0,
            "ignore_eos": True, "return_token_ids": True}
    s, ref = A.post("/v1/chat/completions", chat)
    assert s == 200, ref
    s, pre = P.post("/v1/chat/completions", dict(chat, max_tokens=1, kv_transfer_params={"do_remote_decode": True}))
    assert s == 200, pre
    s, dec = D.post("/v1/chat/completions", dict(chat, kv_transfer_params=pre["kv_transfer_params"]))
    assert s == 200, dec
    assert dec["choices"][0]["message"]["content"] == ref["choices"][0]["message"]["content"], (dec, ref)

    # Role checks: a prefill agent refuses plain requests, a decode agent prefill-only ones.
    s, r = P.post("/v1/completions", body("plain request"))
    assert s == 400 and "role prefill" in r["error"]["message"], (s, r)
    s, r = D.post("/v1/completions", body("x", kv_transfer_params={"do_remote_decode": True}))
    assert s == 400 and "role decode" in r["error"]["message"], (s, r)

    # Nothing leaked, nothing failed.
    assert D.metric("kvmesh_agent_kv_transfer_bytes_total", {"transport": "ucx", "direction": "in"}) > 0
    try:
        failures = D.metric("kvmesh_agent_kv_transfer_failures_total")
    except KeyError:
        failures = 0
    assert failures == 0, f"{failures} transfer failures"
    assert P.metric("kvmesh_agent_kv_leases_created_total") == 51
    wait_until(lambda: P.metric("kvmesh_agent_kv_leases_released_total") == 51, 10, "all leases released")
    for agent in (A, P, D):
        wait_until(lambda: agent.blocks_used() == 0, 10, f"{agent.name} holds no blocks")
    # The exposition of every role passes promtool's parser and linter (after real traffic).
    import shutil
    import subprocess
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    for agent in (A, P, D):
        _, text = agent.get("/metrics")
        r = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        assert r.returncode == 0, (agent.name, r.stdout.decode(), r.stderr.decode())
    print(f"agent_disagg_check[{sys.argv[1]}]: 51 disaggregated requests identical to aggregated; "
          f"decode pulled {D.metric('kvmesh_agent_kv_transfer_bytes_total'):.0f} bytes")
    for agent in agents:
        assert agent.stop() == 0, f"{agent.name} exit code"
    agents = []
except BaseException:
    for agent in agents:
        print(f"--- {agent.name} log ---\n{agent.tail()}", file=sys.stderr)
    raise
finally:
    for agent in agents:
        agent.stop()
