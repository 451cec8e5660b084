"""Tenants (router issue, "Tests"): two tenants sending the same prompt never share KV blocks; a
tenant does hit its own cache; a client-sent cache_salt is ignored; API keys and the admin key
are enforced.

One aggregated agent behind a router with --auth.api-keys-file (keys for tenants A and B) and
--auth.admin-key. Requests are sequential and greedy, so cached_tokens is exact:
  A sends P                          -> cached 0 (cold)
  A sends P again                    -> cached > 0 (A's own cache)
  B sends P with cache_salt "x"      -> cached 0 (A's blocks carry A's salt; the client salt is
                                        ignored, so it cannot be used to reach anyone's blocks)
  B sends P (no salt), then with another cache_salt -> cached > 0 both times (B's own salt, the
                                        client's never mattered)
  A sends P with cache_salt "x"      -> cached > 0 (still A's cache)
  a prompt only B has sent is cold for A; the same for chat.
Also: missing / wrong / malformed key -> 401 with OpenAI error JSON; /admin/workers and
/debug/index without a key or with a tenant key -> 401/403, with the admin key -> 200."""
import os

import router_e2e_util as u

PROMPT = ("Tenant isolation check: the quarterly report lists revenue by region, headcount by "
          "department, and the open positions for the next hiring round in every office.")
KEY_A = "sk-tenant-a-0123456789"
KEY_B = "sk-tenant-b-9876543210"
ADMIN = "sk-admin-5555"


def body(**extra):
    b = {"model": u.MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "ignore_eos": True,
         "return_token_ids": True}
    b.update(extra)
    return b


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def cached(resp):
    return resp["usage"]["prompt_tokens_details"]["cached_tokens"]


def main():
    wd = u.workdir("kvmesh-tenants-")
    keys = os.path.join(wd, "api_keys.txt")
    with open(keys, "w") as f:
        f.write("# key tenant\n")
        f.write(f"{KEY_A} tenant-a\n{KEY_B} tenant-b\n")
    agent = u.start_agent("agent0", wd)
    router = u.start_router(wd, [(agent, "aggregated")], "--disaggregation.mode", "off",
                            "--auth.api-keys-file", keys, "--auth.admin-key", ADMIN)
    u.wait_router_ready(router)

    def post(key, b, path="/v1/completions"):
        return router.post(path, b, headers=bearer(key) if key else None)

    s, a1 = post(KEY_A, body())
    u.check(s == 200, f"A first P: {s} {a1 if s != 200 else ''}")
    if s != 200:
        u.finish()
    u.check(cached(a1) == 0, f"A first P: cached_tokens {cached(a1)} == 0 (cold)")
    prompt_tokens = a1["usage"]["prompt_tokens"]
    s, a2 = post(KEY_A, body())
    u.check(s == 200 and cached(a2) > 0,
            f"A second P: cached_tokens {cached(a2) if s == 200 else s} > 0 (own cache; prompt {prompt_tokens} tokens)")
    s, b1 = post(KEY_B, body(cache_salt="x"))
    u.check(s == 200 and cached(b1) == 0,
            f'B first P with client cache_salt "x": cached_tokens {cached(b1) if s == 200 else s} == 0 (no sharing with A)')
    if s == 200:
        u.check(b1["choices"][0]["token_ids"] == a1["choices"][0]["token_ids"], "B gets the same greedy answer")
    s, b2 = post(KEY_B, body())
    u.check(s == 200 and cached(b2) > 0,
            f"B second P (no client salt): cached_tokens {cached(b2) if s == 200 else s} > 0 "
            "(B's own cache; the client salt of B's first request was ignored)")
    s, b3 = post(KEY_B, body(cache_salt="something-else"))
    u.check(s == 200 and cached(b3) > 0,
            f"B with another client cache_salt still hits B's cache: {cached(b3) if s == 200 else s}")
    s, a3 = post(KEY_A, body(cache_salt="x"))
    u.check(s == 200 and cached(a3) > 0,
            f'A with client cache_salt "x" still hits its own cache: {cached(a3) if s == 200 else s}')

    # A prompt only B has sent is cold for A, and the other way round.
    p2 = PROMPT.replace("quarterly", "annual")
    s, x = post(KEY_B, body(prompt=p2))
    s2, y = post(KEY_A, body(prompt=p2))
    u.check(s == 200 and s2 == 200 and cached(y) == 0,
            f"A sending a prompt only B sent: cached_tokens {cached(y) if s2 == 200 else s2} == 0")

    # Chat goes through the same salting.
    chat = {"model": u.MODEL, "max_tokens": 2, "temperature": 0,
            "messages": [{"role": "user", "content": PROMPT}]}
    s, c1 = post(KEY_A, chat, "/v1/chat/completions")
    s, c2 = post(KEY_A, chat, "/v1/chat/completions")
    s3, c3 = post(KEY_B, chat, "/v1/chat/completions")
    u.check(s == 200 and s3 == 200 and cached(c2) > 0 and cached(c3) == 0,
            f"chat: A again cached {cached(c2) if s == 200 else s} > 0, B cached "
            f"{cached(c3) if s3 == 200 else s3} == 0")

    # Authentication.
    for what, headers in [("no Authorization", None), ("wrong key", bearer("sk-nope")),
                          ("not Bearer", {"Authorization": f"Basic {KEY_A}"}),
                          ("empty Bearer", {"Authorization": "Bearer "})]:
        s, r = router.post("/v1/completions", body(), headers=headers)
        u.check(s == 401 and u.is_error_json(r), f"{what} -> {s} (want 401 + OpenAI error JSON): {r}")
    s, r = router.post("/v1/chat/completions", chat, headers=None)
    u.check(s == 401 and u.is_error_json(r), f"chat without key -> {s}")
    s, _ = router.get("/v1/models")
    u.check(s == 401, f"/v1/models without key -> {s} (want 401)")
    s, text = router.get("/v1/models", headers=bearer(KEY_B))
    u.check(s == 200 and u.MODEL in text, f"/v1/models with B's key -> {s}")

    for path in ("/admin/workers", "/debug/index"):
        s, _ = router.get(path)
        u.check(s in (401, 403), f"{path} without key -> {s} (want 401/403)")
        s, _ = router.get(path, headers=bearer(KEY_A))
        u.check(s in (401, 403), f"{path} with a tenant key -> {s} (want 401/403: admin key is set)")
        s, text = router.get(path, headers=bearer(ADMIN))
        u.check(s == 200, f"{path} with the admin key -> {s}")
    s, _ = router.get("/health")
    u.check(s == 200, "/health needs no key")

    # Nothing is in flight or leased on the agent afterwards.
    u.check(agent.metric("kvmesh_agent_requests_in_flight") == 0, "agent: no request in flight")
    u.finish()


if __name__ == "__main__":
    main()
