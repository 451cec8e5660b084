"""Black-box check of kvmesh-agent's HTTP contract (run by agent_api_test.sh).

Starts real agents (builtin:tiny, free loopback ports, --ready-file), then checks over HTTP:
/health, /ready, /metrics, /v1/models, /v1/kv/inventory; /v1/completions and /v1/chat/completions
streamed and not (OpenAI shapes, SSE ending with [DONE], include_usage chunk, greedy stream ==
non-stream text); prefix-cache reuse (cached_tokens > 0 on a repeated prompt); token-array prompts
with return_token_ids; errors with the right status and OpenAI error JSON (413, 400 for malformed
JSON / NaN / wrong types / negative values / a prompt longer than the context, 404 unknown model);
503 + Retry-After over --limits.max-waiting; a client that disconnects mid-stream frees its KV
blocks; the agent is alive after all of it and exits 0 on SIGTERM.

Usage: agent_api_check.py AGENT_BINARY WORKDIR.  Python stdlib only.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

AGENT = sys.argv[1]
WORK = sys.argv[2]
MODEL = "tiny"
BLOCK = 16
FAILURES = []
LONG_TEXT = ("The quick brown fox jumps over the lazy dog while the patient cat watches from the "
             "warm windowsill, counting birds that fly south before the long winter arrives. ")


def check(cond, what):
    if cond:
        print(f"ok   {what}")
    else:
        print(f"FAIL {what}")
        FAILURES.append(what)
    return cond


class Agent:
    def __init__(self, name, extra):
        self.name = name
        self.ready_file = os.path.join(WORK, f"{name}.ready.json")
        self.log_path = os.path.join(WORK, f"{name}.log")
        self.log = open(self.log_path, "w")
        args = [AGENT, "--role", "aggregated", "--model", "builtin:" + MODEL, "--host", "127.0.0.1",
                "--port", "0", "--ready-file", self.ready_file, "--engine.kv-cache-mib", "64",
                "--drain-timeout", "5s"] + extra
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while not os.path.exists(self.ready_file):
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited with {self.proc.returncode} before ready; log:\n"
                                 + open(self.log_path).read()[-4000:])
            if time.time() > deadline:
                self.proc.kill()
                raise SystemExit(f"{name} not ready within 120 s; log:\n" + open(self.log_path).read()[-4000:])
            time.sleep(0.05)
        self.info = json.load(open(self.ready_file))
        self.port = int(self.info["port"])

    def stop(self):
        """SIGTERM by pid; returns the exit code (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def request(agent, method, path, body=None, headers=None, timeout=60):
    """Returns (status, headers dict lower-cased, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=timeout)
    try:
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def post_json(agent, path, body, **kw):
    status, headers, data = request(agent, "POST", path, body, **kw)
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    return status, headers, data, parsed


def sse_events(data):
    """The data: payloads of an SSE body, in order."""
    events = []
    for block in data.decode("utf-8").split("\n\n"):
        lines = [l[len("data:"):].lstrip(" ") for l in block.split("\n") if l.startswith("data:")]
        if lines:
            events.append("\n".join(lines))
    return events


def is_error_json(parsed):
    return (isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)
            and isinstance(parsed["error"].get("message"), str) and "type" in parsed["error"])


def check_usage(u, what):
    ok = (isinstance(u, dict) and isinstance(u.get("prompt_tokens"), int)
          and isinstance(u.get("completion_tokens"), int)
          and u.get("total_tokens") == u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)
          and isinstance(u.get("prompt_tokens_details", {}).get("cached_tokens"), int))
    return check(ok, f"{what}: usage shape {u}")


def blocks_used_metric(agent):
    _, _, text = request(agent, "GET", "/metrics")
    m = re.search(rb'^kvmesh_agent_kv_blocks_used\{[^}]*medium="GPU"[^}]*\} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else None


def inventory_used(agent):
    status, _, data = request(agent, "GET", "/v1/kv/inventory")
    if status != 200:
        return None
    inv = json.loads(data)
    for t in inv.get("tiers", []):
        if t.get("medium") == "GPU":
            return t.get("num_blocks_used")
    return None


# ---- checks -----------------------------------------------------------------------------------

def check_ready_file(a):
    info = a.info
    check(info.get("http") == f"http://127.0.0.1:{a.port}", f"ready file http = {info.get('http')}")
    check(info.get("role") == "aggregated" and info.get("model") == MODEL and info.get("agent_id"),
          f"ready file role/model/agent_id: {info}")
    for k in ("events_endpoint", "replay_endpoint"):
        check(str(info.get(k, "")).startswith("tcp://127.0.0.1:") and not str(info.get(k)).endswith(":0"),
              f"ready file {k} is a bound port: {info.get(k)}")
    check(info.get("topic") == "kv-events", "ready file topic")


def check_probes(a):
    for path in ("/health", "/ready"):
        status, _, _ = request(a, "GET", path)
        check(status == 200, f"GET {path} -> {status}")
    status, headers, data = request(a, "GET", "/metrics")
    check(status == 200 and b"kvmesh_agent_" in data and headers.get("content-type", "").startswith("text/plain"),
          f"GET /metrics -> {status}, {headers.get('content-type')}")
    status, _, data = request(a, "GET", "/v1/models")
    models = json.loads(data) if status == 200 else {}
    check(status == 200 and models.get("object") == "list"
          and [m.get("id") for m in models.get("data", [])] == [MODEL]
          and all(m.get("object") == "model" and isinstance(m.get("created"), int) and "owned_by" in m
                  for m in models["data"]),
          f"GET /v1/models -> {status} {models}")
    status, _, data = request(a, "GET", "/v1/kv/inventory")
    inv = json.loads(data) if status == 200 else {}
    tiers = inv.get("tiers", [])
    check(status == 200 and inv.get("block_size") == BLOCK and isinstance(inv.get("seq"), int)
          and inv.get("agent_id") == a.info.get("agent_id")
          and any(t.get("medium") == "GPU" and t.get("num_blocks_total", 0) > 0
                  and isinstance(t.get("hashes"), list) for t in tiers),
          f"GET /v1/kv/inventory shape: seq={inv.get('seq')} tiers={[(t.get('medium'), t.get('num_blocks_total')) for t in tiers]}")


def check_completions(a):
    prompt = LONG_TEXT * 2
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    status, _, _, r1 = post_json(a, "/v1/completions", body)
    ok = (status == 200 and isinstance(r1, dict) and r1.get("object") == "text_completion"
          and str(r1.get("id", "")).startswith("cmpl-") and r1.get("model") == MODEL
          and isinstance(r1.get("created"), int) and len(r1.get("choices", [])) == 1)
    check(ok, f"completion 200 and shape: {status} {str(r1)[:300]}")
    if not ok:
        return
    c = r1["choices"][0]
    check(c.get("index") == 0 and isinstance(c.get("text"), str) and "logprobs" in c
          and c.get("logprobs") is None and c.get("finish_reason") == "length",
          f"completion choice: {c}")
    check_usage(r1.get("usage"), "completion")
    check(r1["usage"]["completion_tokens"] == 12, f"completion_tokens == max_tokens with ignore_eos: {r1['usage']}")

    # The same prompt again: its full blocks come from the prefix cache.
    status, _, _, r2 = post_json(a, "/v1/completions", body)
    cached = (r2 or {}).get("usage", {}).get("prompt_tokens_details", {}).get("cached_tokens", 0)
    check(status == 200 and cached > 0 and cached % BLOCK == 0 and cached <= r2["usage"]["prompt_tokens"],
          f"repeated prompt: cached_tokens={cached} of {r2 and r2.get('usage')}")
    check(r2 and r2["choices"][0]["text"] == c["text"], "greedy: repeated prompt gives the same text")

    # Streamed, same prompt: the concatenated text equals the non-streamed one.
    sbody = dict(body, stream=True, stream_options={"include_usage": True})
    status, headers, data = request(a, "POST", "/v1/completions", sbody)
    check(status == 200 and headers.get("content-type", "").startswith("text/event-stream"),
          f"stream 200 text/event-stream: {status} {headers.get('content-type')}")
    events = sse_events(data)
    check(events and events[-1] == "[DONE]", f"stream ends with data: [DONE] (last {events[-1:]})")
    chunks = [json.loads(e) for e in events[:-1]]
    check(all(ch.get("object") == "text_completion" and ch.get("id") == chunks[0].get("id") for ch in chunks),
          "stream chunks: object text_completion, one id")
    text_chunks = [ch for ch in chunks if ch.get("choices")]
    usage_chunks = [ch for ch in chunks if ch.get("choices") == []]
    text = "".join(ch["choices"][0].get("text", "") for ch in text_chunks)
    check(text == c["text"], f"stream text == non-stream text ({text!r} vs {c['text']!r})")
    finishes = [ch["choices"][0].get("finish_reason") for ch in text_chunks]
    check(finishes and finishes[-1] == "length" and all(f is None for f in finishes[:-1]),
          f"finish_reason only on the last content chunk: {finishes}")
    check(len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0], "one usage chunk, last before [DONE]")
    if usage_chunks:
        check_usage(usage_chunks[0].get("usage"), "stream usage chunk")
        check(usage_chunks[0]["usage"]["completion_tokens"] == 12, "stream usage completion_tokens")

    # Without include_usage: no usage chunk.
    status, _, data = request(a, "POST", "/v1/completions", dict(body, stream=True))
    events = sse_events(data)
    check(status == 200 and events[-1] == "[DONE]"
          and all(json.loads(e).get("choices") for e in events[:-1]), "stream without include_usage has no usage chunk")


def check_token_prompt(a):
    ids = list(range(5, 45))  # 40 tokens, below any vocabulary size
    for prompt in (ids, [ids]):
        status, _, _, r = post_json(a, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 5,
                                                           "ignore_eos": True, "return_token_ids": True})
        ok = status == 200 and isinstance(r, dict)
        check(ok, f"token-array prompt {'nested' if prompt is not ids else 'flat'} -> {status} {str(r)[:200]}")
        if not ok:
            continue
        check(r["usage"]["prompt_tokens"] == len(ids), f"prompt_tokens == {len(ids)}: {r['usage']}")
        check(r.get("prompt_token_ids") == ids, f"prompt_token_ids echoed: {r.get('prompt_token_ids')}")
        tids = r["choices"][0].get("token_ids")
        check(isinstance(tids, list) and len(tids) == r["usage"]["completion_tokens"] == 5,
              f"choice token_ids: {tids}")


def check_chat(a):
    msgs = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Say something"}]}]
    body = {"model": MODEL, "messages": msgs, "max_completion_tokens": 8, "temperature": 0, "ignore_eos": True}
    status, _, _, r = post_json(a, "/v1/chat/completions", body)
    ok = (status == 200 and isinstance(r, dict) and r.get("object") == "chat.completion"
          and str(r.get("id", "")).startswith("chatcmpl-") and r.get("model") == MODEL
          and len(r.get("choices", [])) == 1)
    check(ok, f"chat 200 and shape: {status} {str(r)[:300]}")
    if not ok:
        return
    c = r["choices"][0]
    check(c.get("message", {}).get("role") == "assistant" and isinstance(c["message"].get("content"), str)
          and c.get("finish_reason") == "length", f"chat choice: {c}")
    check_usage(r.get("usage"), "chat")

    status, headers, data = request(a, "POST", "/v1/chat/completions",
                                    dict(body, stream=True, stream_options={"include_usage": True}))
    events = sse_events(data)
    check(status == 200 and events and events[-1] == "[DONE]", f"chat stream ends with [DONE]: {status}")
    chunks = [json.loads(e) for e in events[:-1]]
    check(all(ch.get("object") == "chat.completion.chunk" for ch in chunks), "chat chunks: chat.completion.chunk")
    content = [ch for ch in chunks if ch.get("choices")]
    check(content and content[0]["choices"][0]["delta"].get("role") == "assistant",
          f"first chat delta has role assistant: {content[:1]}")
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in content)
    check(text == c["message"]["content"], f"chat stream text == non-stream ({text!r} vs {c['message']['content']!r})")
    check(chunks and chunks[-1].get("choices") == [] and chunks[-1].get("usage", {}).get("completion_tokens") == 8,
          f"chat include_usage chunk: {chunks[-1:]}")


def check_errors(a):
    def expect(status_want, path, body, what, field=None, raw=False):
        status, headers, data = request(a, "POST", path, body if raw else json.dumps(body),
                                        headers={"Content-Type": "application/json"})
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        msg = parsed["error"]["message"] if is_error_json(parsed) else ""
        check(status == status_want and is_error_json(parsed) and (field is None or field in msg),
              f"{what} -> {status} (want {status_want}) {data[:200]!r}")
        return headers

    cp = "/v1/completions"
    base = {"model": MODEL, "prompt": "hello"}
    expect(400, cp, '{"model": "tiny", "prompt": ', "malformed JSON", raw=True)
    expect(400, cp, '{"model":"tiny","prompt":"x","temperature":NaN}', "NaN literal", "temperature", raw=True)
    expect(400, cp, '{"model":"tiny","prompt":"x","top_p":Infinity}', "Infinity literal", raw=True)
    expect(400, cp, dict(base, temperature=-1), "negative temperature", "temperature")
    expect(400, cp, dict(base, max_tokens=-5), "negative max_tokens", "max_tokens")
    expect(400, cp, dict(base, max_tokens="abc"), "string max_tokens", "max_tokens")
    expect(400, cp, dict(base, stream="yes"), "string stream", "stream")
    expect(400, cp, dict(base, prompt=[1, -2]), "negative token id", "prompt")
    expect(400, cp, dict(base, n=2), "n=2", "n")
    expect(400, cp, dict(base, stream_options={"include_usage": True}), "stream_options without stream", "stream_options")
    expect(400, cp, {"model": MODEL}, "missing prompt", "prompt")
    expect(400, "/v1/chat/completions", {"model": MODEL, "messages": []}, "empty messages", "messages")
    expect(400, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": 3}]},
           "wrong content type", "messages[0].content")
    expect(404, cp, dict(base, model="no-such-model"), "unknown model")
    expect(404, "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
           "unknown model (chat)")
    # Longer than any context of builtin:tiny, still under the 1 MiB body limit.
    expect(400, cp, dict(base, prompt=[7] * 100000), "prompt longer than the context")

    # Oversized body: 2 MiB > --limits.max-body-bytes (1 MiB default).
    big = json.dumps(dict(base, prompt="a" * (2 << 20)))
    status = None
    try:
        s, _, data = request(a, "POST", cp, big, headers={"Content-Type": "application/json"})
        status = s
        parsed = json.loads(data) if data else None
    except (ConnectionError, OSError) as e:
        parsed = None
        print(f"     (oversized body: {e!r})")
    check(status == 413 and is_error_json(parsed), f"oversized body -> {status} (want 413)")


def read_events_raw(sock, n, timeout=30):
    """Reads from a raw socket until n 'data:' events arrived; returns the bytes read."""
    sock.settimeout(timeout)
    buf = b""
    while buf.count(b"data:") < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def open_raw_stream(a, body):
    payload = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              + b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    return s


def check_disconnect(a):
    before_metric = blocks_used_metric(a)
    before_inv = inventory_used(a)
    check(before_metric is not None, f"/metrics has kvmesh_agent_kv_blocks_used{{medium=\"GPU\"}} ({before_metric})")
    s = open_raw_stream(a, {"model": MODEL, "prompt": LONG_TEXT * 3, "max_tokens": 100000, "ignore_eos": True,
                            "stream": True})
    got = read_events_raw(s, 3)
    check(got.startswith(b"HTTP/1.1 200") and got.count(b"data:") >= 3, f"raw stream started: {got[:60]!r}")
    during = blocks_used_metric(a)
    s.close()
    deadline = time.time() + 5
    after_metric, after_inv = None, None
    while time.time() < deadline:
        after_metric, after_inv = blocks_used_metric(a), inventory_used(a)
        if after_metric == before_metric and after_inv == before_inv:
            break
        time.sleep(0.1)
    print(f"     blocks used: before={before_metric} during={during} after={after_metric}; "
          f"inventory before={before_inv} after={after_inv}")
    check(after_metric == before_metric and after_inv == before_inv,
          "blocks freed after the client disconnected mid-stream")
    status, _, _ = request(a, "GET", "/health")
    check(status == 200, "alive after the disconnect")


def check_overload(b):
    # One long stream holds the only slot (--limits.max-waiting 1) ...
    s = open_raw_stream(b, {"model": MODEL, "prompt": LONG_TEXT, "max_tokens": 100000, "ignore_eos": True,
                            "stream": True})
    got = read_events_raw(s, 1)
    check(got.startswith(b"HTTP/1.1 200"), f"overload: first stream admitted: {got[:40]!r}")
    # ... so a concurrent burst is refused with 503 + Retry-After.
    results = []

    def one():
        try:
            st, h, data = request(b, "POST", "/v1/completions",
                                  {"model": MODEL, "prompt": LONG_TEXT, "max_tokens": 2000, "ignore_eos": True},
                                  timeout=120)
            results.append((st, h.get("retry-after"), data))
        except OSError as e:
            results.append((None, None, repr(e).encode()))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.close()
    refused = [r for r in results if r[0] == 503]
    check(len(refused) >= 1, f"overload: {len(refused)} of 8 got 503 ({[r[0] for r in results]})")
    check(all(r[1] is not None and r[1].isdigit() and int(r[1]) >= 1 for r in refused),
          f"503 carries Retry-After: {[r[1] for r in refused]}")
    check(all(is_error_json(json.loads(r[2])) for r in refused), "503 body is OpenAI error JSON")
    # After the slot frees up, a request is admitted again.
    deadline = time.time() + 10
    st = None
    while time.time() < deadline:
        st, _, _ = request(b, "POST", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2})
        if st == 200:
            break
        time.sleep(0.2)
    check(st == 200, f"admitted again after the slot freed: {st}")


def main():
    a = Agent("agent-a", [])
    b = None
    try:
        check_ready_file(a)
        check_probes(a)
        check_completions(a)
        check_token_prompt(a)
        check_chat(a)
        check_errors(a)
        check_disconnect(a)
        status, _, _ = request(a, "GET", "/ready")
        check(status == 200, "agent-a still ready after everything")
        b = Agent("agent-b", ["--limits.max-waiting", "1"])
        check_overload(b)
    finally:
        rc_a = a.stop()
        check(rc_a == 0, f"agent-a exits 0 on SIGTERM (rc={rc_a})")
        if b is not None:
            rc_b = b.stop()
            check(rc_b == 0, f"agent-b exits 0 on SIGTERM (rc={rc_b})")
    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) failed:")
        for f in FAILURES:
            print("  - " + f)
        for name in ("agent-a", "agent-b"):
            p = os.path.join(WORK, f"{name}.log")
            if os.path.exists(p):
                print(f"--- last lines of {name}.log ---")
                print("".join(open(p).readlines()[-30:]))
        sys.exit(1)
    print("all agent API checks passed")


if __name__ == "__main__":
    main()
