"""KV transfer failures between kvmesh-agent processes (UCX over tcp):
 1. a lease nobody claims expires and frees its blocks on the prefill agent;
 2. kill -9 of the prefill agent while the decode agent is pulling: with on_failure=recompute the
    request completes with exactly the aggregated tokens; with on_failure=fail it fails cleanly
    (503, OpenAI error JSON); either way the decode agent is alive and holds no block afterwards;
 3. forged or stale handles (block ids changed or out of range, unknown lease, other instance,
    unreachable peer, malformed fields) never move a byte: malformed ones are 400 at once, the rest
    are rejected by the lease claim or the handshake and the request is recomputed; no leak."""
import sys
import threading
import time

from agent_harness import Agent, wait_until, workdir

FLAGS = ["--transfer.ucx-tls", "tcp", "--engine.kv-cache-mib", "32"]
PROMPT = ("A long prompt so that the transfer has several blocks to move: " +
          " ".join(f"token{i}" for i in range(120)))


def body(prompt=PROMPT, **extra):
    b = {"model": "tiny", "prompt": prompt, "max_tokens": 6, "temperature": 0, "ignore_eos": True,
         "return_token_ids": True}
    b.update(extra)
    return b


def failures(agent, reason):
    try:
        return agent.metric("kvmesh_agent_kv_transfer_failures_total", {"reason": reason})
    except KeyError:
        return 0


tmp = workdir()
agents = []


def start(name, *flags):
    a = Agent(name, tmp, *FLAGS, *flags)
    agents.append(a)
    return a


try:
    A = start("aggregated", "--role", "aggregated")
    s, ref = A.post("/v1/completions", body())
    assert s == 200, ref
    want = ref["choices"][0]["token_ids"]

    # 1. Lease expiry.
    P = start("prefill-ttl", "--role", "prefill", "--transfer.lease-ttl", "700ms")
    s, pre = P.post("/v1/completions", body(max_tokens=1, kv_transfer_params={"do_remote_decode": True}))
    assert s == 200, pre
    assert P.blocks_used() > 0 and P.metric("kvmesh_agent_kv_leases_active") == 1
    wait_until(lambda: P.metric("kvmesh_agent_kv_lease_expiries_total") == 1, 10, "lease expiry")
    wait_until(lambda: P.blocks_used() == 0, 5, "expired lease frees its blocks")
    assert P.metric("kvmesh_agent_kv_leases_active") == 0
    # The decode side, handed the expired handle, recomputes (the claim is refused).
    D = start("decode", "--role", "decode")
    s, dec = D.post("/v1/completions", body(kv_transfer_params=pre["kv_transfer_params"]))
    assert s == 200 and dec["choices"][0]["token_ids"] == want, (s, dec)
    assert failures(D, "lease") + failures(D, "expired") == 1
    P.stop()
    agents.remove(P)

    # 2. kill -9 of the prefill agent during the pull (the decode side waits 1.5 s between the
    #    claim and its reads, so the kill lands while the pull is in progress).
    for policy, expect_ok in (("recompute", True), ("fail", False)):
        P = start(f"prefill-kill-{policy}", "--role", "prefill")
        Dk = start(f"decode-{policy}", "--role", "decode", "--transfer.on-failure", policy,
                   "--transfer.debug-pull-delay", "1500ms")
        s, pre = P.post("/v1/completions", body(max_tokens=1, kv_transfer_params={"do_remote_decode": True}))
        assert s == 200, pre
        result = {}
        t = threading.Thread(target=lambda: result.update(
            r=Dk.post("/v1/completions", body(kv_transfer_params=pre["kv_transfer_params"]))))
        t.start()
        # Wait until the claim reached the prefill agent (the lease was extended), then kill it.
        time.sleep(0.6)
        P.kill9()
        agents.remove(P)
        t.join(60)
        assert not t.is_alive(), "decode request hangs after the prefill agent died"
        s, r = result["r"]
        if expect_ok:
            assert s == 200 and r["choices"][0]["token_ids"] == want, (s, r)
        else:
            assert s == 503 and "KV import failed" in r["error"]["message"], (s, r)
        assert failures(Dk, "transport") + failures(Dk, "timeout") == 1, Dk.tail()
        assert Dk.alive()
        wait_until(lambda: Dk.blocks_used() == 0, 10, f"decode ({policy}) holds no block after the failure")
        # The decode agent still serves (new peers work after the failure).
        s, r = Dk.post("/v1/completions", body("after the failure"))
        assert s == 200, r
        Dk.stop()
        agents.remove(Dk)

    # 3. Forged and stale handles against a live prefill agent.
    P = start("prefill", "--role", "prefill", "--transfer.lease-ttl", "3s")
    s, pre = P.post("/v1/completions", body(max_tokens=1, kv_transfer_params={"do_remote_decode": True}))
    assert s == 200, pre
    good = pre["kv_transfer_params"]
    assert len(good["block_ids"]) >= 3, good
    forged = []
    f = dict(good); f["block_ids"] = list(good["block_ids"]); f["block_ids"][1] = f["block_ids"][1] + 7
    forged.append(("changed block id", f, "lease"))
    f = dict(good); f["block_ids"] = [4000000000] + list(good["block_ids"][1:])
    forged.append(("block id outside the region", f, "lease"))
    f = dict(good); f["lease_id"] = good["lease_id"] ^ 0x5555
    forged.append(("unknown lease", f, "lease"))
    f = dict(good); f["agent_id"] = "someone-else"
    forged.append(("other instance", f, "layout"))
    f = dict(good); f["peer_url"] = "http://127.0.0.1:1"
    forged.append(("unreachable peer", f, "handshake"))
    for what, params, reason in forged:
        before = failures(D, reason)
        s, r = D.post("/v1/completions", body(kv_transfer_params=params))
        assert s == 200 and r["choices"][0]["token_ids"] == want, (what, s, r)
        assert failures(D, reason) == before + 1, (what, reason, D.tail())
    malformed = [
        ("block_ids not a list", dict(good, block_ids="1,2,3")),
        ("negative first token", dict(good, first_token=-5)),
        ("token count differs from the prompt", dict(good, num_tokens=good["num_tokens"] + 16,
                                                     block_ids=good["block_ids"] + [good["block_ids"][-1]])),
        ("too few block ids", dict(good, block_ids=good["block_ids"][:-1])),
        ("huge block size", dict(good, block_size=1 << 40)),
    ]
    for what, params in malformed:
        s, r = D.post("/v1/completions", body(kv_transfer_params=params))
        assert s == 400 and r["error"]["type"] == "invalid_request_error", (what, s, r)
    # The genuine handle still works after all that, and the lease is released.
    s, dec = D.post("/v1/completions", body(kv_transfer_params=good))
    assert s == 200 and dec["choices"][0]["token_ids"] == want, dec
    wait_until(lambda: P.blocks_used() == 0, 10, "prefill holds no block")
    wait_until(lambda: D.blocks_used() == 0, 10, "decode holds no block")
    assert P.alive() and D.alive()

    # 4. Graceful shutdown: SIGTERM while a stream is running lets it finish (drain), refuses new
    #    connections, releases the prefill agent's leases, exits 0.
    s, pre = P.post("/v1/completions", body(max_tokens=1, kv_transfer_params={"do_remote_decode": True}))
    assert s == 200 and P.metric("kvmesh_agent_kv_leases_active") == 1
    import json as _json
    import urllib.request as _rq
    req = _rq.Request(A.url + "/v1/completions", data=_json.dumps(
        body(max_tokens=300, stream=True)).encode(), headers={"Content-Type": "application/json"})
    events = []
    with _rq.urlopen(req, timeout=120) as r:
        for line in r:
            if line.startswith(b"data: "):
                events.append(line[6:].strip())
                if len(events) == 1:
                    A.proc.send_signal(15)
                    P.proc.send_signal(15)
    assert events[-1] == b"[DONE]", events[-3:]
    last = _json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "length", last
    assert len(events) >= 300, len(events)  # every token arrived although SIGTERM came first
    assert A.proc.wait(30) == 0 and P.proc.wait(30) == 0
    assert "released KV leases at shutdown" in P.tail(50), P.tail()
    agents.remove(A)
    agents.remove(P)
    print("agent_transfer_failure_check: lease expiry, kill -9 mid-pull (recompute and fail), "
          f"{len(forged)} forged and {len(malformed)} malformed handles, graceful drain: OK")
    for a in list(agents):
        assert a.stop() == 0, f"{a.name} exit code"
        agents.remove(a)
except BaseException:
    for a in agents:
        print(f"--- {a.name} log ---\n{a.tail()}", file=sys.stderr)
    raise
finally:
    for a in agents:
        a.stop()
