"""Prefix copies between two kvmesh-agent processes (docs/kv-transfer.md, "Prefix copies"): a
prefix cached on agent S is exported (POST /v1/kv/export) and imported into agent T
(POST /v1/kv/import), its KV moved by UCX over tcp. T then serves a request with that prefix
from its cache (cached_tokens covers the copied blocks) with exactly the greedy tokens S gives.
Bad input changes nothing: malformed bodies, unknown prefixes, a handle paired with other hashes
(forged), an export of an agent that was killed (-9). Afterwards no agent holds a block and every
lease ended."""
import sys

from agent_harness import Agent, wait_until, workdir

FLAGS = ["--transfer.ucx-tls", "tcp", "--engine.kv-cache-mib", "64", "--transfer.lease-ttl", "3s"]
words = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
SYSTEM = "System: you are a careful assistant. " + " ".join(words[(i * 7) % 26] for i in range(120))


def body(prompt, max_tokens=8):
    return {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "return_token_ids": True}


def cached_hashes(agent):
    return set(agent.inventory()["tiers"][0]["hashes"])


tmp = workdir()
agents = []
X = None  # the agent killed with -9; its log is still printed on failure
try:
    S = Agent("source", tmp, "--role", "aggregated", *FLAGS)
    agents.append(S)
    T = Agent("target", tmp, "--role", "aggregated", *FLAGS)
    agents.append(T)
    X = Agent("doomed", tmp, "--role", "aggregated", *FLAGS)
    agents.append(X)

    # 1. The prefix is cached on S only; its chain is the hottest root of S's inventory.
    s, ref = S.post("/v1/completions", body(SYSTEM + " Question: what now?"))
    assert s == 200, (s, ref)
    roots = [r for r in S.inventory()["roots"] if r["requests"] == 1 and len(r["blocks"]) >= 10]
    assert len(roots) == 1, S.inventory()["roots"]
    chain = roots[0]["blocks"]
    block_size = S.inventory()["block_size"]
    assert set(chain) <= cached_hashes(S)
    before_t = cached_hashes(T)
    assert not set(chain) & before_t

    # 2. Bad input: clear errors, nothing pinned or cached.
    for bad, code in (("{not json", 400), ({"hashes": []}, 400), ({"hashes": ["x"]}, 400),
                      ({"hashes": [12345]}, 404)):
        s, r = S.post("/v1/kv/export", bad)
        assert s == code and "error" in r, (bad, s, r)
    assert S.blocks_used() == 0
    s, exp = S.post("/v1/kv/export", {"hashes": chain})
    assert s == 200, (s, exp)
    assert exp["num_blocks"] == len(chain) and exp["hashes"] == chain, exp
    params = exp["kv_transfer_params"]
    assert params["num_tokens"] == len(chain) * block_size and len(params["block_ids"]) == len(chain)
    assert S.blocks_used() == len(chain)  # pinned under the export's lease
    forged_hashes = chain[:-1] + [chain[-1] ^ 1]
    for bad in ({"hashes": chain}, {"kv_transfer_params": params}, {"kv_transfer_params": params, "hashes": chain[:-1]},
                {"kv_transfer_params": dict(params, block_ids=params["block_ids"][:-1]), "hashes": chain},
                {"kv_transfer_params": params, "hashes": forged_hashes}):
        s, r = T.post("/v1/kv/import", bad)
        assert s in (400, 412) and "error" in r, (s, r)
    assert "hashes differ" in r["error"]["message"], r  # the source's lease named other hashes
    assert cached_hashes(T) == before_t and T.blocks_used() == 0

    # 3. The real copy (the forged attempt above was refused before any byte moved, and released
    #    the lease: a second export gives a fresh one).
    wait_until(lambda: S.blocks_used() == 0, 10, "the forged import's lease released")
    s, exp = S.post("/v1/kv/export", {"hashes": chain})
    assert s == 200, (s, exp)
    s, imp = T.post("/v1/kv/import", {"kv_transfer_params": exp["kv_transfer_params"], "hashes": exp["hashes"]})
    assert s == 200, (s, imp)
    assert imp["imported_blocks"] == len(chain) and imp["already_cached_blocks"] == 0, imp
    assert imp["bytes"] == len(chain) * exp["block_bytes"], imp
    assert set(chain) <= cached_hashes(T)
    assert T.metric("kvmesh_agent_kv_transfer_bytes_total", {"direction": "in"}) >= imp["bytes"]
    wait_until(lambda: S.blocks_used() == 0 and T.blocks_used() == 0, 10, "no blocks held after the copy")
    # Importing again moves nothing: every block is cached already.
    s, exp2 = S.post("/v1/kv/export", {"hashes": chain})
    assert s == 200, exp2
    s, imp2 = T.post("/v1/kv/import", {"kv_transfer_params": exp2["kv_transfer_params"], "hashes": chain})
    assert s == 200 and imp2["imported_blocks"] == 0 and imp2["already_cached_blocks"] == len(chain), imp2

    # 4. T serves the prompt from the copied blocks, with S's exact tokens.
    s, got = T.post("/v1/completions", body(SYSTEM + " Question: what now?"))
    assert s == 200, (s, got)
    cached = got["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= (len(chain) - 1) * block_size, (cached, len(chain))
    assert got["choices"][0]["token_ids"] == ref["choices"][0]["token_ids"], (got, ref)
    # A different question with the same system prompt also starts from the copy.
    s, ref2 = S.post("/v1/completions", body(SYSTEM + " Question: and then?"))
    s2, got2 = T.post("/v1/completions", body(SYSTEM + " Question: and then?"))
    assert s == 200 and s2 == 200
    assert got2["choices"][0]["token_ids"] == ref2["choices"][0]["token_ids"], (got2, ref2)
    assert got2["usage"]["prompt_tokens_details"]["cached_tokens"] >= (len(chain) - 2) * block_size

    # 5. The exporter dies (-9) before the import: a clear error, nothing held on T.
    s, r = X.post("/v1/completions", body(SYSTEM + " Question: doomed?"))
    assert s == 200, r
    x_chain = [h for h in X.inventory()["roots"] if len(h["blocks"]) >= 10][0]["blocks"]
    s, xexp = X.post("/v1/kv/export", {"hashes": x_chain})
    assert s == 200, xexp
    X.kill9()
    agents.remove(X)
    s, r = T.post("/v1/kv/import", {"kv_transfer_params": xexp["kv_transfer_params"], "hashes": xexp["hashes"]})
    assert s >= 400 and "error" in r, (s, r)
    wait_until(lambda: T.blocks_used() == 0, 10, "the failed import's blocks freed")

    # 6. Counted, and no lease outlives the copies (the unused ones expire at their TTL).
    assert S.metric("kvmesh_agent_kv_prefix_copies_total", {"side": "export", "result": "ok"}) == 3
    assert S.metric("kvmesh_agent_kv_prefix_copies_total", {"side": "export", "result": "error"}) == 4
    assert T.metric("kvmesh_agent_kv_prefix_copies_total", {"side": "import", "result": "ok"}) == 2
    assert T.metric("kvmesh_agent_kv_prefix_copies_total", {"side": "import", "result": "error"}) == 6
    wait_until(lambda: S.metric("kvmesh_agent_kv_leases_active") == 0, 10, "every lease of S ended")
    for agent in (S, T):
        wait_until(lambda: agent.blocks_used() == 0, 10, f"{agent.name} holds no blocks")
    print(f"agent_prefix_copy_check: copied {len(chain)} blocks ({imp['bytes']} bytes) in "
          f"{imp['seconds'] * 1000:.1f} ms; the target served the prompt with {cached} cached tokens")
    for agent in agents:
        assert agent.stop() == 0, f"{agent.name} exit code"
    agents = []
except BaseException:
    for agent in agents + ([X] if X is not None and X not in agents else []):
        print(f"--- {agent.name} log ---\n{agent.tail()}", file=sys.stderr)
    raise
finally:
    for agent in agents:
        agent.stop()
