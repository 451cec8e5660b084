"""Helpers for multi-process router tests: start kvmesh-router on a free loopback port, wait for its
ready file, talk HTTP to it (plain, streaming SSE, with an API key), read its metrics, stop it by pid.
Agents come from agent_harness.Agent."""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

from agent_harness import Agent, wait_until, workdir  # noqa: F401  (re-exported for tests)

BIN = os.environ.get("KVMESH_BINARY_DIR", "build")
ROUTER = os.environ.get("KVMESH_ROUTER_BIN", os.path.join(BIN, "router", "kvmesh-router"))


class Router:
    """kvmesh-router as a child process. `workers` is a list of "URL[=ROLE]" strings (or Agents,
    whose role is read from their ready file); extra flags follow."""

    def __init__(self, name, workdir, workers=(), *flags, env=None, api_key=None, wait_ready=True):
        self.name = name
        self.api_key = api_key
        self.ready_file = os.path.join(workdir, name + ".ready.json")
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "w")
        urls = []
        for w in workers:
            if isinstance(w, Agent):
                urls.append(f'{w.url}={w.info.get("role", "aggregated")}')
            else:
                urls.append(w)
        args = [ROUTER, "--port", "0", "--ready-file", self.ready_file]
        if urls:
            args += ["--workers.urls", ",".join(urls)]
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen([*args, *flags], stdout=self.log, stderr=subprocess.STDOUT, env=e)
        self.info = None
        self.url = None
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while not os.path.exists(self.ready_file):
            if self.proc.poll() is not None:
                raise RuntimeError(f"router {self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if time.time() > deadline:
                raise RuntimeError(f"router {self.name} not ready after {timeout} s:\n{self.tail()}")
            time.sleep(0.05)
        self.info = json.load(open(self.ready_file))
        self.url = self.info["http"]
        return self

    def tail(self, n=40):
        self.log.flush()
        with open(self.log_path) as f:
            return "".join(f.readlines()[-n:])

    def alive(self):
        return self.proc.poll() is None

    def _headers(self, api_key, extra=None):
        h = {"Content-Type": "application/json"}
        key = self.api_key if api_key is None else api_key
        if key:
            h["Authorization"] = "Bearer " + key
        h.update(extra or {})
        return h

    def post(self, path, body, timeout=120, api_key=None, headers=None):
        """(status, parsed JSON or text, response headers)."""
        data = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else (
            body.encode() if isinstance(body, str) else body)
        req = urllib.request.Request(self.url + path, data=data, headers=self._headers(api_key, headers))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null"), dict(r.headers)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw), dict(e.headers)
            except ValueError:
                return e.code, raw.decode(errors="replace"), dict(e.headers)

    def stream(self, path, body, timeout=120, api_key=None, on_event=None):
        """POST with stream: true; returns (status, [parsed data events], saw_done). on_event(i, ev)
        is called per event (e.g. to kill a worker mid-stream)."""
        body = dict(body, stream=True)
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers=self._headers(api_key))
        events, done = [], False
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                for raw in r:
                    line = raw.decode().rstrip("\r\n")
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        done = True
                        break
                    ev = json.loads(data)
                    if on_event:
                        on_event(len(events), ev)
                    events.append(ev)
                return r.status, events, done
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, [json.loads(raw)], False
            except ValueError:
                return e.code, [raw.decode(errors="replace")], False

    def get(self, path, timeout=30, api_key=None):
        req = urllib.request.Request(self.url + path, headers=self._headers(api_key))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def metric(self, name, labels=None):
        """Sum of the samples of `name` whose labels include `labels`; KeyError if none."""
        _, text = self.get("/metrics")
        return metric_from_text(text, name, labels, self.name)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode


def metric_from_text(text, name, labels=None, who="?"):
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if labels and not all(f'{k}="{v}"' in head[len(name):] for k, v in labels.items()):
            continue
        total += float(value)
        found = True
    if not found:
        raise KeyError(f"{name}{labels or ''} not in /metrics of {who}")
    return total


def stream_text(events):
    """Concatenated text and token ids of completion or chat stream events."""
    text, ids, finish, usage = "", [], None, None
    for ev in events:
        if "error" in ev:
            raise AssertionError(f"error event in stream: {ev}")
        if ev.get("usage"):
            usage = ev["usage"]
        for c in ev.get("choices", []):
            text += c.get("text") or (c.get("delta") or {}).get("content") or ""
            ids += c.get("token_ids") or []
            finish = c.get("finish_reason") or finish
    return text, ids, finish, usage
