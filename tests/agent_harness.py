"""Helpers for the multi-process agent tests: start kvmesh-agent processes on free loopback ports,
wait for their ready files, talk HTTP to them, read their metrics, stop them by pid."""
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

BIN = os.environ.get("KVMESH_BINARY_DIR", "build")
AGENT = os.path.join(BIN, "agent", "kvmesh-agent")


class Agent:
    def __init__(self, name, workdir, *flags, env=None):
        self.name = name
        self.ready_file = os.path.join(workdir, name + ".ready.json")
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "w")
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(
            [AGENT, "--port", "0", "--ready-file", self.ready_file, *flags],
            stdout=self.log, stderr=subprocess.STDOUT, env=e)
        deadline = time.time() + 120
        while not os.path.exists(self.ready_file):
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent {name} exited with {self.proc.returncode}:\n{self.tail()}")
            if time.time() > deadline:
                raise RuntimeError(f"agent {name} not ready after 120 s:\n{self.tail()}")
            time.sleep(0.05)
        self.info = json.load(open(self.ready_file))
        self.url = self.info["http"]

    def tail(self, n=30):
        self.log.flush()
        with open(self.log_path) as f:
            return "".join(f.readlines()[-n:])

    def alive(self):
        return self.proc.poll() is None

    def post(self, path, body, timeout=120):
        data = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else (
            body.encode() if isinstance(body, str) else body)
        req = urllib.request.Request(self.url + path, data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def get(self, path, timeout=30):
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                raw = r.read()
                return r.status, raw.decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def metric(self, name, labels=None):
        """Value of one sample of /metrics (sum over children whose labels include `labels`)."""
        _, text = self.get("/metrics")
        total, found = 0.0, False
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric = head.split("{")[0]
            if metric != name:
                continue
            if labels:
                lab = head[len(name):]
                if not all(f'{k}="{v}"' in lab for k, v in labels.items()):
                    continue
            total += float(value)
            found = True
        if not found:
            raise KeyError(f"{name}{labels or ''} not in /metrics of {self.name}")
        return total

    def inventory(self):
        status, text = self.get("/v1/kv/inventory")
        assert status == 200, (status, text)
        return json.loads(text)

    def blocks_used(self):
        return self.inventory()["tiers"][0]["num_blocks_used"]

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


def wait_until(pred, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stream_ttft(url, body, timeout=600):
    """Sends body as a streaming request to url; returns the seconds until the first data event."""
    req = urllib.request.Request(url, data=json.dumps(dict(body, stream=True)).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        first = None
        for line in r:
            if first is None and line.startswith(b"data: {"):
                first = time.perf_counter() - t0
        return first


def workdir():
    return tempfile.mkdtemp(prefix="kvmesh-agent-test-")
