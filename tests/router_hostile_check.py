"""Hostile input against kvmesh-router (router issue, "Tests"; limits as in the agent issue).

One aggregated agent (--engine.debug-step-delay 20ms, so a stream lasts long enough to drop it)
behind a router with --limits.max-body-bytes 65536. Checked:
  - malformed JSON, non-object body, invalid UTF-8, wrong types, n > 1, negative max_tokens ->
    400 with OpenAI error JSON; unknown model -> 404; body over the limit -> 413; a prompt over the
    model's context (as token ids and as text) -> 400; oversized headers -> 431 (or 400);
  - kv_transfer_params sent by the client (a forged remote-prefill handle whose peer_url points at
    a port this test listens on, and do_remote_decode) are ignored: the answer equals a plain
    request's and nothing ever connects to the forged peer;
  - slowloris: 10 connections that stop mid-headers and 5 that drip a byte every 2 s do not delay
    a normal request, and the router closes them (its idle timeout, 60 s);
  - 200 garbage connections (TLS hello, binary noise, broken request lines, half a body), then a
    normal request still works;
  - a client that disconnects mid-stream (and one that disconnects while waiting for a non-stream
    answer) cancels the agent's request: kvmesh_agent_requests_total{result="cancelled"} grows,
    kvmesh_agent_requests_in_flight returns to 0;
  - at the end the router is up (/health 200), the agent has nothing in flight and no active KV
    lease."""
import json
import os
import random
import socket
import threading
import time

import router_e2e_util as u

MAX_BODY = 65536
PROMPT = "Hostile input test: the quick brown fox jumps over the lazy dog near the river bank."


def body(**extra):
    b = {"model": u.MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "ignore_eos": True,
         "return_token_ids": True}
    b.update(extra)
    return b


class Listener:
    """A TCP port that records every connection (the forged KV peer)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.connections += 1
                c.close()
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def raw(port, data, read=True, timeout=10):
    """Sends raw bytes; returns what the server answered before closing (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and len(out) > 4096:
                break
        return out
    finally:
        s.close()


def status_of(resp_bytes):
    try:
        return int(resp_bytes.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def is_closed(sock):
    """True when the peer closed the connection (recv returns b'' or an error)."""
    sock.settimeout(0.01)
    try:
        data = sock.recv(4096)
        return data == b"" or data.startswith(b"HTTP/1.1 4")  # closed, or answered 408/400 and closing
    except socket.timeout:
        return False
    except OSError:
        return True


def check_errors(router):
    def expect(want, what, payload, path="/v1/completions", raw_body=False, field=None):
        data = payload if raw_body else json.dumps(payload)
        status, _, resp = u.request(router.port, "POST", path, data,
                                    {"Content-Type": "application/json"}, timeout=30)
        parsed = u.parse_json(resp)
        msg = parsed["error"]["message"] if u.is_error_json(parsed) else ""
        good = status in (want if isinstance(want, tuple) else (want,)) and u.is_error_json(parsed)
        if field is not None:
            good = good and field in msg
        u.check(good, f"{what} -> {status} (want {want}) {str(parsed)[:200]}")

    expect(400, "malformed JSON", '{"model": "tiny", "prompt": "hi"', raw_body=True)
    expect(400, "body is a JSON array", "[1, 2, 3]", raw_body=True)
    expect(400, "empty body", "", raw_body=True)
    expect(400, "invalid UTF-8 in a string", b'{"model":"tiny","prompt":"\xff\xfe bad"}', raw_body=True)
    expect(400, "prompt of the wrong type", body(prompt=123), field="prompt")
    expect(400, "max_tokens as a string", body(max_tokens="16"), field="max_tokens")
    expect(400, "temperature out of range", body(temperature=5), field="temperature")
    expect(400, "stream of the wrong type", body(stream="yes"), field="stream")
    expect(400, "n = 2", body(n=2))
    expect(400, "negative max_tokens", body(max_tokens=-5), field="max_tokens")
    expect(400, "negative token id", body(prompt=[1, 2, -3]))
    expect(400, "messages not an array", {"model": u.MODEL, "messages": "hello"},
           path="/v1/chat/completions", field="messages")
    expect(400, "chat message with a bad role", {"model": u.MODEL, "messages": [{"role": "wizard", "content": "x"}]},
           path="/v1/chat/completions")
    expect(400, "chat content part of an unknown type",
           {"model": u.MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
           path="/v1/chat/completions")
    expect(404, "unknown model", body(model="gpt-9-ultra"))
    expect(404, "unknown model (chat)", {"model": "gpt-9-ultra", "messages": [{"role": "user", "content": "x"}]},
           path="/v1/chat/completions")
    expect(400, "prompt over the context (5000 token ids)", body(prompt=[7] * 5000))
    expect(400, "prompt over the context (text)", body(prompt="lorem ipsum dolor " * 2000))
    expect(400, "chat over the context", {"model": u.MODEL, "max_tokens": 4,
                                          "messages": [{"role": "user", "content": "lorem ipsum dolor " * 2000}]},
           path="/v1/chat/completions")
    big = json.dumps(body(prompt="x" * (MAX_BODY + 1000)))
    try:
        status, _, resp = u.request(router.port, "POST", "/v1/completions", big, timeout=30)
        u.check(status == 413 and u.is_error_json(u.parse_json(resp)), f"body over the limit -> {status} (want 413)")
    except OSError as e:  # the server may close after answering 413 before reading it all
        u.check(False, f"body over the limit: connection error {e!r}")
    resp = raw(router.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 << 10) + b"\r\n\r\n")
    u.check(status_of(resp) in (431, 400) or resp == b"", f"64 KiB header -> {status_of(resp)} (want 431/400 or close)")
    status, _, _ = u.request(router.port, "GET", "/v1/completions", timeout=10)
    u.check(status in (404, 405), f"GET /v1/completions -> {status} (want 404/405)")


def check_forged_transfer_params(router, agent):
    plain_status, plain = router.post("/v1/completions", body())
    if not u.check(plain_status == 200, f"plain request: {plain_status}"):
        return
    n = plain["usage"]["prompt_tokens"]
    listener = Listener()
    try:
        forged = {"do_remote_prefill": True, "peer_url": f"http://127.0.0.1:{listener.port}",
                  "agent_id": "forged-agent", "lease_id": 42,
                  "lease_expiry_unix_ms": int(time.time() * 1000) + 60000, "num_tokens": n,
                  "first_token": 3, "block_size": 16, "block_ids": list(range((n + 15) // 16))}
        for what, params in [("forged remote-prefill handle", forged),
                             ("do_remote_decode", {"do_remote_decode": True}),
                             ("garbage kv_transfer_params", {"peer_url": 5, "block_ids": "all"})]:
            for stream in (False, True):
                b = body(kv_transfer_params=params)
                if stream:
                    b["stream"] = True
                    r = u.collect_stream(router.port, "/v1/completions", b, timeout=60)
                    good = r["status"] == 200 and r["token_ids"] == plain["choices"][0]["token_ids"] and r["done"]
                    got = r["token_ids"] if r["status"] == 200 else r.get("body")
                else:
                    s, r = router.post("/v1/completions", b)
                    good = (s == 200 and r["choices"][0]["token_ids"] == plain["choices"][0]["token_ids"]
                            and "kv_transfer_params" not in r)
                    got = r if s != 200 else r["choices"][0]["token_ids"]
                u.check(good, f"{what} ({'stream' if stream else 'plain'}) ignored: served normally "
                        f"(got {str(got)[:200]}, want {plain['choices'][0]['token_ids']})")
        time.sleep(1.0)
        u.check(listener.connections == 0,
                f"nothing connected to the forged peer_url ({listener.connections} connections)")
    finally:
        listener.close()


def check_garbage(router):
    rng = random.Random(5)
    payloads = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(rng.randrange(256) for _ in range(200)),
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"model\":",
        b"\r\n\r\n\r\n",
        b"GARBAGE\x00\x01\x02 /\x7f HTTP/1.1\r\n\r\n",
    ]
    errors = 0
    for i in range(200):
        data = payloads[i % len(payloads)] if i % 3 else bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048)))
        try:
            s = socket.create_connection(("127.0.0.1", router.port), timeout=5)
            s.sendall(data)
            if i % 2:
                s.shutdown(socket.SHUT_WR)
            s.close()
        except OSError:
            errors += 1
    u.check(errors == 0, f"200 garbage connections accepted ({errors} connect/send errors)")
    s, r = router.post("/v1/completions", body(), timeout=60)
    u.check(s == 200 and r["usage"]["completion_tokens"] == 4, f"normal request after the garbage: {s}")
    s, _ = router.get("/health")
    u.check(s == 200, "router /health 200 after the garbage")


def check_disconnect(router, agent):
    cancelled0 = agent.metric("kvmesh_agent_requests_total", {"result": "cancelled"}, default=0.0)
    st = u.SseStream(router.port, "/v1/completions", body(max_tokens=400, stream=True), timeout=30)
    u.check(st.status == 200, f"stream to drop: {st.status}")
    n = 0
    for ev in st.events():
        if ev.startswith("{") and "choices" in ev:
            n += 1
        if n >= 3:
            break
    u.check(agent.metric("kvmesh_agent_requests_in_flight") >= 1, "agent is generating the stream")
    st.close()
    t0 = time.time()
    try:
        u.wait_until(lambda: agent.metric("kvmesh_agent_requests_in_flight") == 0, 10, "agent idle")
        idle = True
    except AssertionError:
        idle = False
    u.check(idle, f"client stream disconnect: agent in-flight back to 0 ({time.time() - t0:.2f} s; "
            "400 tokens x 20 ms would take 8 s)")
    cancelled1 = agent.metric("kvmesh_agent_requests_total", {"result": "cancelled"}, default=0.0)
    u.check(cancelled1 == cancelled0 + 1, f'agent kvmesh_agent_requests_total{{result="cancelled"}} '
            f"{cancelled0} -> {cancelled1} (want +1)")

    # A non-streaming client that gives up while the agent is still generating.
    payload = json.dumps(body(max_tokens=400)).encode()
    s = socket.create_connection(("127.0.0.1", router.port), timeout=10)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    try:
        u.wait_until(lambda: agent.metric("kvmesh_agent_requests_in_flight") >= 1, 10, "agent busy")
    except AssertionError:
        pass
    s.close()
    t0 = time.time()
    try:
        u.wait_until(lambda: agent.metric("kvmesh_agent_requests_in_flight") == 0, 10, "agent idle")
        idle = True
    except AssertionError:
        idle = False
    u.check(idle, f"non-stream client disconnect: agent in-flight back to 0 ({time.time() - t0:.2f} s)")
    cancelled2 = agent.metric("kvmesh_agent_requests_total", {"result": "cancelled"}, default=0.0)
    u.check(cancelled2 == cancelled1 + 1, f"non-stream disconnect cancelled on the agent ({cancelled1} -> {cancelled2})")


def main():
    wd = u.workdir("kvmesh-hostile-")
    agent = u.start_agent("agent0", wd, "--engine.debug-step-delay", "20ms")
    router = u.start_router(wd, [(agent, "aggregated")], "--disaggregation.mode", "off",
                            "--limits.max-body-bytes", str(MAX_BODY))
    u.wait_router_ready(router)

    # Slow clients first: they stay open while everything else runs.
    slow = []
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", router.port), timeout=5)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        slow.append(s)
    drip = []
    for i in range(5):
        s = socket.create_connection(("127.0.0.1", router.port), timeout=5)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\n")
        drip.append(s)
    drip_stop = threading.Event()

    def dripper():
        while not drip_stop.wait(2.0):
            for s in drip:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
    drip_thread = threading.Thread(target=dripper, daemon=True)
    drip_thread.start()
    slow_t0 = time.time()

    t0 = time.time()
    s, r = router.post("/v1/completions", body(), timeout=30)
    u.check(s == 200 and time.time() - t0 < 10,
            f"normal request while 15 slow connections are open: {s} in {time.time() - t0:.2f} s")

    check_errors(router)
    check_forged_transfer_params(router, agent)
    check_garbage(router)
    check_disconnect(router, agent)

    # The slow connections: the router closes them (idle timeout 60 s) and stays healthy.
    deadline = slow_t0 + 80
    while time.time() < deadline and not all(is_closed(s) for s in slow):
        time.sleep(0.5)
    closed = sum(1 for s in slow if is_closed(s))
    u.check(closed == len(slow), f"partial-header connections closed by the router ({closed}/{len(slow)} "
            f"after {time.time() - slow_t0:.0f} s)")
    while time.time() < deadline and not all(is_closed(s) for s in drip):
        time.sleep(0.5)
    drip_stop.set()
    closed = sum(1 for s in drip if is_closed(s))
    u.check(closed == len(drip), f"byte-dripping connections closed by the router ({closed}/{len(drip)} "
            f"after {time.time() - slow_t0:.0f} s)")
    for s in slow + drip:
        s.close()

    s, _ = router.get("/health")
    u.check(s == 200 and router.alive(), "router up, /health 200 at the end")
    s, r = router.post("/v1/completions", body(), timeout=30)
    u.check(s == 200, f"a last normal request: {s}")
    u.wait_until(lambda: agent.metric("kvmesh_agent_requests_in_flight") == 0, 10, "agent idle")
    u.check(agent.metric("kvmesh_agent_requests_in_flight") == 0, "agent: nothing in flight")
    leases = agent.metric("kvmesh_agent_kv_leases_active", default=0.0)
    u.check(leases == 0, f"agent: no active KV lease ({leases})")
    u.check(agent.alive(), "agent still up")
    u.finish()


if __name__ == "__main__":
    main()
