"""Migration (router issue, "Tests"): a decode worker killed with SIGKILL mid-stream; the client's
stream completes with exactly the greedy tokens of an undisturbed run.

1. Reference: a fresh aggregated agent, called directly, greedy (temperature 0, ignore_eos),
   max_tokens 40, return_token_ids.
2. Two aggregated agents with --engine.debug-step-delay 30ms behind a router (disaggregation off,
   max_migrations 2). The same request streams through the router; once the client holds 8
   tokens, the agent serving it (kvmesh_agent_requests_in_flight 1) gets kill -9. The stream must
   go on and end normally: token ids and text equal to the reference (no token lost or repeated),
   finish_reason length, usage.completion_tokens 40, no error event, one [DONE]; the router
   counts kvmesh_router_migrations_total{result="ok"} == 1.
3. max_migrations 0: the same kill ends the client's stream with an error event and then [DONE],
   within a bounded time (no hang); the router is still healthy afterwards."""
import json
import time

import router_e2e_util as u

PROMPT = ("In the old harbour town the fishermen mend their nets at dawn, and the children run "
          "along the pier counting the boats that come back with the tide.")
MAX_TOKENS = 40
KILL_AFTER = 8


def body(stream):
    b = {"model": u.MODEL, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0,
         "ignore_eos": True, "return_token_ids": True}
    if stream:
        b.update({"stream": True, "stream_options": {"include_usage": True}})
    return b


def serving_agent(agents):
    busy = [a for a in agents if a.alive() and a.metric("kvmesh_agent_requests_in_flight") >= 1]
    return busy[0] if len(busy) == 1 else None


def stream_and_kill(router, agents, label):
    """Streams body(True) through the router; kills the serving agent after KILL_AFTER tokens.
    Returns (result dict, killed agent, tokens the client held at the kill)."""
    s = u.SseStream(router.port, "/v1/completions", body(True), timeout=60)
    out = {"status": s.status, "token_ids": [], "text": "", "finish": None, "usage": None,
           "errors": [], "done": False, "after_done": 0, "events": []}
    killed, held_at_kill = None, None
    if s.status != 200:
        out["body"] = u.parse_json(s.body)
        return out, None, None
    t0 = time.time()
    try:
        for ev in s.events():
            out["events"].append(ev)
            if out["done"]:
                out["after_done"] += 1
                continue
            if ev == "[DONE]":
                out["done"] = True
                continue
            obj = json.loads(ev)
            if "error" in obj:
                out["errors"].append(obj)
                continue
            if obj.get("usage"):
                out["usage"] = obj["usage"]
            for ch in obj.get("choices", []):
                out["text"] += ch.get("text") or ""
                out["token_ids"].extend(ch.get("token_ids") or [])
                if ch.get("finish_reason"):
                    out["finish"] = ch["finish_reason"]
            if killed is None and len(out["token_ids"]) >= KILL_AFTER:
                deadline = time.time() + 5
                while killed is None and time.time() < deadline:
                    killed = serving_agent(agents)
                if killed is None:
                    print(f"{label}: could not tell which agent serves the stream", flush=True)
                    break
                held_at_kill = len(out["token_ids"])
                killed.kill9()
                print(f"{label}: killed {killed.name} (pid {killed.pid}) after {held_at_kill} tokens, "
                      f"{time.time() - t0:.2f} s into the stream", flush=True)
    except (OSError, ValueError) as e:
        out["exception"] = repr(e)
    finally:
        s.close()
    out["elapsed_s"] = round(time.time() - t0, 2)
    return out, killed, held_at_kill


def show(out):
    return json.dumps({k: v for k, v in out.items() if k != "events"})[:2000]


def main():
    wd = u.workdir("kvmesh-migration-")

    # 1. Reference on a fresh agent, directly.
    ref_agent = u.start_agent("reference", wd)
    status, ref = ref_agent.post("/v1/completions", body(False))
    ref_agent.stop()
    if not u.check(status == 200, f"reference request: {status}"):
        print(ref)
        u.finish()
    ref_ids = ref["choices"][0]["token_ids"]
    ref_text = ref["choices"][0]["text"]
    u.check(len(ref_ids) == MAX_TOKENS, f"reference has {len(ref_ids)} tokens")

    # 2. Migration on.
    agents = u.start_agents(2, wd, "--engine.debug-step-delay", "30ms", prefix="decode")
    router = u.start_router(wd, [(a, "aggregated") for a in agents], "--disaggregation.mode", "off",
                            "--limits.max-migrations", "2", "--workers.breaker-failures", "1")
    u.wait_router_ready(router)
    out, killed, held = stream_and_kill(router, agents, "migration")
    u.check(killed is not None, "an agent was serving the stream and was killed mid-stream")
    u.check(held is not None and held < MAX_TOKENS, f"the kill came mid-stream ({held} of {MAX_TOKENS} tokens held)")
    u.check(out["status"] == 200, f"stream status {out['status']}")
    u.check(not out["errors"], f"no error event in the migrated stream: {out['errors']}")
    u.check(out["done"] and out["after_done"] == 0, f"stream ended with exactly one [DONE] ({show(out)})")
    u.check(out["token_ids"] == ref_ids,
            f"migrated stream tokens == reference tokens\n     got  {out['token_ids']}\n     want {ref_ids}")
    u.check(out["text"] == ref_text, f"migrated stream text == reference text ({out['text']!r} vs {ref_text!r})")
    u.check(out["finish"] == "length", f"finish_reason {out['finish']}")
    u.check(out["usage"] is not None and out["usage"].get("completion_tokens") == MAX_TOKENS,
            f"usage.completion_tokens {MAX_TOKENS}: {out['usage']}")
    migrations = router.metric("kvmesh_router_migrations_total", {"result": "ok"}, default=-1.0)
    u.check(migrations == 1, f'kvmesh_router_migrations_total{{result="ok"}} == 1 (got {migrations})')
    survivor = [a for a in agents if a is not killed]
    if survivor:
        u.wait_until(lambda: survivor[0].metric("kvmesh_agent_requests_in_flight") == 0, 10,
                     "surviving agent idle")
    # The router keeps serving on the survivor.
    status, r = router.post("/v1/completions", body(False))
    u.check(status == 200 and r["choices"][0]["token_ids"] == ref_ids,
            f"router serves the same request normally after the loss: {status}")
    router.stop()

    # 3. Migration off: error event, then [DONE], no hang.
    agents2 = survivor + [u.start_agent("decode-extra", wd, "--engine.debug-step-delay", "30ms")]
    router2 = u.start_router(wd, [(a, "aggregated") for a in agents2], "--disaggregation.mode", "off",
                             "--limits.max-migrations", "0", name="router-nomig")
    u.wait_router_ready(router2)
    out2, killed2, held2 = stream_and_kill(router2, agents2, "no-migration")
    u.check(killed2 is not None and held2 is not None and held2 < MAX_TOKENS,
            f"max_migrations 0: serving agent killed mid-stream ({held2} tokens held)")
    u.check(out2["status"] == 200 and out2["elapsed_s"] < 30, f"max_migrations 0: stream ended in {out2['elapsed_s']} s")
    u.check(len(out2["errors"]) >= 1, f"max_migrations 0: an error event ({show(out2)})")
    evs = out2["events"]
    err_idx = next((i for i, e in enumerate(evs) if e.startswith("{") and '"error"' in e), None)
    u.check(out2["done"] and err_idx is not None and evs[-1] == "[DONE]" and err_idx < len(evs) - 1,
            f"max_migrations 0: the error event is followed by [DONE] (last events {evs[-3:]})")
    u.check(len(out2["token_ids"]) < MAX_TOKENS and out2["token_ids"] == ref_ids[:len(out2["token_ids"])],
            f"max_migrations 0: the tokens sent before the loss are a prefix of the reference ({len(out2['token_ids'])})")
    m2 = router2.metric("kvmesh_router_migrations_total", {"result": "ok"}, default=0.0)
    u.check(m2 == 0, f'max_migrations 0: no successful migration counted ({m2})')
    status, _ = router2.get("/health")
    u.check(status == 200 and router2.alive(), "router healthy after the lost stream")
    u.finish()


if __name__ == "__main__":
    main()
