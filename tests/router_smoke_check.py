"""Router smoke test: 1 prefill + 1 decode agent (builtin:tiny) behind kvmesh-router, plus one
aggregated agent as the reference. Completions (stream and not) and chat through the router;
greedy tokens equal the aggregated agent's; remote prefill really happened (router and prefill
agent counters); the router's /metrics passes promtool; malformed JSON 400, unknown model 404,
body over the limit 413; SIGTERM -> exit 0. Processes and HTTP: tests/router_e2e_util.py."""
import json
import shutil
import subprocess
import sys

import router_e2e_util as u

FLAGS = ["--engine.kv-cache-mib", "32"]
PROMPTS = [
    "The quick brown fox jumps over the lazy dog. " * 6 + "Then it",
    "System: you are a helpful assistant who answers in one word. " * 4 + "Question: what is red?",
    "Short prompt",
]


def body(prompt, **extra):
    b = {"model": u.MODEL, "prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True,
         "return_token_ids": True}
    b.update(extra)
    return b


def ok(cond, what, detail=""):
    """u.check that shows `detail` (a response, ...) only when the check fails."""
    return u.check(cond, f"{what}: {detail}" if detail and not cond else what)


def stream(proc, path, b):
    return u.collect_stream(proc.port, path, dict(b, stream=True))


def first_chunk(proc, path, b):
    """The first data event of a streaming request, parsed (None if none or not 200)."""
    s = u.SseStream(proc.port, path, dict(b, stream=True))
    try:
        if s.status != 200:
            return None
        for ev in s.events():
            return json.loads(ev) if ev != "[DONE]" else None
        return None
    finally:
        s.close()


def main():
    wd = u.workdir("kvmesh-router-smoke-")
    agg = u.start_agent("aggregated", wd, *FLAGS)  # first alone: it creates the builtin model
    pre = u.start_agent("prefill", wd, *FLAGS, role="prefill", wait=False)
    dec = u.start_agent("decode", wd, *FLAGS, role="decode", wait=False)
    pre.wait_ready()
    dec.wait_ready()
    # Remote prefill from the first token on, so every prompt takes the P/D path.
    router = u.start_router(wd, [(pre, "prefill"), (dec, "decode")],
                            "--disaggregation.min-remote-prefill-tokens", "1",
                            "--limits.max-body-bytes", "65536")
    u.wait_router_ready(router)

    u.check(router.get("/health")[0] == 200, "/health 200")
    s, text = router.get("/v1/models")
    u.check(s == 200 and json.loads(text)["data"][0]["id"] == u.MODEL, f"/v1/models lists tiny ({s})")

    for i, prompt in enumerate(PROMPTS):
        s, ref = agg.post("/v1/completions", body(prompt))
        if not ok(s == 200, f"prompt {i}: aggregated agent 200", f"{s} {ref}"):
            continue
        ref_ids, ref_text = ref["choices"][0]["token_ids"], ref["choices"][0]["text"]
        s, got = router.post("/v1/completions", body(prompt))
        if not ok(s == 200, f"prompt {i}: router 200", f"{s} {got}"):
            continue
        u.check(got["choices"][0]["token_ids"] == ref_ids, f"prompt {i}: same tokens as aggregated")
        u.check(got["choices"][0]["text"] == ref_text, f"prompt {i}: same text as aggregated")
        u.check(got["prompt_token_ids"] == ref["prompt_token_ids"], f"prompt {i}: same prompt tokens")
        ok(got["usage"]["prompt_tokens"] == ref["usage"]["prompt_tokens"],
           f"prompt {i}: same usage.prompt_tokens", f"{got['usage']} vs {ref['usage']}")
        u.check(got["usage"]["completion_tokens"] == 12, f"prompt {i}: 12 completion tokens")
        u.check(got["choices"][0]["finish_reason"] == "length", f"prompt {i}: finish_reason length")
        # Streaming: same tokens and text, one stream, usage at the end.
        st = stream(router, "/v1/completions", body(prompt, stream_options={"include_usage": True}))
        u.check(st["status"] == 200 and st["done"] and not st["errors"],
                f"prompt {i}: stream 200, [DONE], no error events ({st['status']} {st['errors']})")
        ok(st["token_ids"] == ref_ids, f"prompt {i}: same streamed tokens", f"{st['token_ids']} vs {ref_ids}")
        u.check(st["text"] == ref_text, f"prompt {i}: streamed text equal")
        ok(st["finish"] == "length" and (st["usage"] or {}).get("completion_tokens") == 12,
           f"prompt {i}: stream finish length, usage last with 12 completion tokens",
           f"{st['finish']} {st['usage']}")
        # Without return_token_ids the client gets no token ids.
        s, plain = router.post("/v1/completions", body(prompt, return_token_ids=False))
        u.check(s == 200 and "token_ids" not in plain["choices"][0]
                and plain["choices"][0]["text"] == ref_text,
                f"prompt {i}: no token_ids unless asked, same text")

    # A client-sent kv_transfer_params / cache_salt is ignored (the router derives its own).
    s, got = router.post("/v1/completions",
                         body(PROMPTS[0], kv_transfer_params={"do_remote_prefill": True, "lease_id": 1},
                              cache_salt="evil"))
    ok(s == 200, "client kv_transfer_params / cache_salt ignored", f"{s} {got}")

    # Chat, stream and not, equal to the aggregated agent's chat.
    chat = {"model": u.MODEL, "messages": [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Name three colors."}],
            "max_tokens": 10, "temperature": 0, "ignore_eos": True}
    s, ref = agg.post("/v1/chat/completions", chat)
    if ok(s == 200, "aggregated chat 200", f"{s} {ref}"):
        content = ref["choices"][0]["message"]["content"]
        s, got = router.post("/v1/chat/completions", chat)
        ok(s == 200 and got["object"] == "chat.completion"
           and got["choices"][0]["message"]["content"] == content,
           "chat through the router equals aggregated", f"{s} {got}")
        st = stream(router, "/v1/chat/completions", chat)
        ok(st["status"] == 200 and st["done"] and st["text"] == content, "streamed chat equals aggregated",
           f"{st['status']} {st['text']!r} vs {content!r}")
        chunk = first_chunk(router, "/v1/chat/completions", chat)
        ok(chunk is not None and chunk.get("object") == "chat.completion.chunk",
           "chat stream events are chat.completion.chunk", f"{chunk}")

    # Remote prefill really happened.
    u.check(router.metric("kvmesh_router_prefills_total", {"where": "remote"}, default=0) > 0,
            "router counted remote prefills")
    u.check(pre.metric("kvmesh_agent_kv_leases_created_total", default=0) > 0,
            "prefill agent created KV leases")
    u.check(router.metric("kvmesh_router_requests_total", {"endpoint": "completions", "result": "ok"},
                          default=0) >= 10, "router counted >= 10 ok completions")
    u.check(router.metric("kvmesh_router_time_to_first_token_seconds_count", default=0) > 0,
            "router observed time to first token")

    # Errors.
    s, err = router.post("/v1/completions", "{not json")
    u.check(s == 400 and u.is_error_json(err) and err["error"]["type"] == "invalid_request_error",
            f"malformed JSON -> 400 invalid_request_error ({s} {err})")
    s, err = router.post("/v1/completions", body("hi", model="nope"))
    u.check(s == 404, f"unknown model -> 404 ({s} {err})")
    s, err = router.post("/v1/completions", body("x" * 70000))
    u.check(s == 413, f"body over --limits.max-body-bytes -> 413 ({s})")
    s, err = router.post("/v1/completions", body("hi", max_tokens=-1))
    u.check(s == 400, f"max_tokens -1 -> 400 ({s} {err})")
    u.check(router.alive(), "router alive after bad requests")

    # Admin endpoints (no keys configured: open on loopback).
    s, text = router.get("/admin/workers")
    roles = sorted(w["role"] for w in json.loads(text)["workers"]) if s == 200 else None
    u.check(roles == ["decode", "prefill"], f"/admin/workers lists prefill and decode ({s} {roles})")
    s, text = router.get("/debug/index")
    u.check(s == 200 and "index" in json.loads(text), f"/debug/index ({s})")

    # promtool on the router's exposition.
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "metrics"], input=router.metrics_text().encode(),
                           capture_output=True)
        u.check(r.returncode == 0, "promtool check metrics: " + (r.stdout + r.stderr).decode())
    else:
        print("promtool not found: skipped the exposition check", file=sys.stderr)

    rc = router.stop()
    u.check(rc == 0, f"router exits 0 on SIGTERM (got {rc})")
    u.finish()


if __name__ == "__main__":
    main()
