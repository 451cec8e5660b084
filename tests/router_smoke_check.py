"""Router smoke test: 1 prefill + 1 decode agent (builtin:tiny) behind kvmesh-router, plus one
aggregated agent as the reference. Completions (stream and not) and chat through the router;
greedy tokens equal the aggregated agent's; remote prefill really happened (router and prefill
agent counters); the router's /metrics passes promtool; malformed JSON 400, unknown model 404,
body over the limit 413; SIGTERM -> exit 0."""
import json
import shutil
import subprocess
import sys

from router_harness import Agent, Router, stream_text, workdir

FLAGS = ["--engine.kv-cache-mib", "32"]
PROMPTS = [
    "The quick brown fox jumps over the lazy dog. " * 6 + "Then it",
    "System: you are a helpful assistant who answers in one word. " * 4 + "Question: what is red?",
    "Short prompt",
]

tmp = workdir()
procs = []
ok = False
try:
    A = Agent("aggregated", tmp, "--role", "aggregated", *FLAGS)
    procs.append(A)
    P = Agent("prefill", tmp, "--role", "prefill", *FLAGS)
    procs.append(P)
    D = Agent("decode", tmp, "--role", "decode", *FLAGS)
    procs.append(D)
    # Remote prefill from the first token on, so every prompt takes the P/D path.
    R = Router("router", tmp, [P, D], "--disaggregation.min-remote-prefill-tokens", "1",
               "--limits.max-body-bytes", "65536")
    procs.append(R)

    assert R.get("/health")[0] == 200
    s, text = R.get("/ready")
    assert s == 200, (s, text)
    s, text = R.get("/v1/models")
    assert s == 200 and json.loads(text)["data"][0]["id"] == "tiny", (s, text)

    def body(prompt, **extra):
        b = {"model": "tiny", "prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True,
             "return_token_ids": True}
        b.update(extra)
        return b

    for i, prompt in enumerate(PROMPTS):
        s, ref = A.post("/v1/completions", body(prompt))
        assert s == 200, (s, ref)
        s, got, _ = R.post("/v1/completions", body(prompt))
        assert s == 200, (s, got)
        assert got["choices"][0]["token_ids"] == ref["choices"][0]["token_ids"], (i, got, ref)
        assert got["choices"][0]["text"] == ref["choices"][0]["text"], (i, got, ref)
        assert got["prompt_token_ids"] == ref["prompt_token_ids"], i
        assert got["usage"]["prompt_tokens"] == ref["usage"]["prompt_tokens"], (got["usage"], ref["usage"])
        assert got["usage"]["completion_tokens"] == 12, got["usage"]
        assert got["choices"][0]["finish_reason"] == "length", got
        # Streaming: same tokens and text, one stream, usage at the end.
        s, events, done = R.stream("/v1/completions", body(prompt, stream_options={"include_usage": True}))
        assert s == 200 and done, (s, events[-3:])
        text, ids, finish, usage = stream_text(events)
        assert ids == ref["choices"][0]["token_ids"], (i, ids, ref["choices"][0]["token_ids"])
        assert text == ref["choices"][0]["text"], (i, text)
        assert finish == "length" and usage["completion_tokens"] == 12, (finish, usage)
        # Without return_token_ids the client gets no token ids.
        s, plain, _ = R.post("/v1/completions", body(prompt, return_token_ids=False))
        assert s == 200 and "token_ids" not in plain["choices"][0], plain
        assert plain["choices"][0]["text"] == ref["choices"][0]["text"]

    # A client-sent kv_transfer_params / cache_salt is ignored (the router derives its own).
    s, got, _ = R.post("/v1/completions", body(PROMPTS[0], kv_transfer_params={"do_remote_prefill": True,
                                                                               "lease_id": 1},
                                               cache_salt="evil"))
    assert s == 200, (s, got)

    # Chat, stream and not, equal to the aggregated agent's chat.
    chat = {"model": "tiny", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Name three colors."}],
            "max_tokens": 10, "temperature": 0, "ignore_eos": True}
    s, ref = A.post("/v1/chat/completions", chat)
    assert s == 200, (s, ref)
    s, got, _ = R.post("/v1/chat/completions", chat)
    assert s == 200, (s, got)
    assert got["object"] == "chat.completion", got
    assert got["choices"][0]["message"]["content"] == ref["choices"][0]["message"]["content"], (got, ref)
    s, events, done = R.stream("/v1/chat/completions", chat)
    assert s == 200 and done, events[-2:]
    text, _, finish, _ = stream_text(events)
    assert text == ref["choices"][0]["message"]["content"], (text, ref)
    assert events[0]["object"] == "chat.completion.chunk"

    # Remote prefill really happened.
    assert R.metric("kvmesh_router_prefills_total", {"where": "remote"}) > 0, R.tail()
    assert P.metric("kvmesh_agent_kv_leases_created_total") > 0
    assert R.metric("kvmesh_router_requests_total", {"endpoint": "completions", "result": "ok"}) >= 10
    assert R.metric("kvmesh_router_time_to_first_token_seconds_count") > 0

    # Errors.
    s, err, _ = R.post("/v1/completions", "{not json")
    assert s == 400 and err["error"]["type"] == "invalid_request_error", (s, err)
    s, err, _ = R.post("/v1/completions", body("hi", model="nope"))
    assert s == 404, (s, err)
    s, err, _ = R.post("/v1/completions", body("x" * 70000))
    assert s == 413, (s, err)
    s, err, _ = R.post("/v1/completions", body("hi", max_tokens=-1))
    assert s == 400, (s, err)
    assert R.alive()

    # Admin endpoints (no keys configured: open on loopback).
    s, text = R.get("/admin/workers")
    assert s == 200, (s, text)
    roles = sorted(w["role"] for w in json.loads(text)["workers"])
    assert roles == ["decode", "prefill"], roles
    s, text = R.get("/debug/index")
    assert s == 200 and "index" in json.loads(text), text

    # promtool on the router's exposition.
    promtool = shutil.which("promtool")
    _, metrics_text = R.get("/metrics")
    if promtool:
        r = subprocess.run([promtool, "check", "metrics"], input=metrics_text.encode(), capture_output=True)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    else:
        print("promtool not found: skipped the exposition check", file=sys.stderr)

    rc = R.stop()
    procs.remove(R)
    assert rc == 0, f"router exit code {rc}:\n{R.tail()}"
    ok = True
    print("router smoke: ok")
finally:
    for p in reversed(procs):
        p.stop()
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("logs kept in", tmp, file=sys.stderr)
