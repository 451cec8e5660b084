"""Shared helpers of the router end-to-end tests (tests/router_*_check.py): start kvmesh-agent and
kvmesh-router processes on free loopback ports, talk HTTP and SSE to them, read Prometheus
metrics, and stop everything this process started by pid, also when the test fails or is
interrupted (atexit + SIGTERM/SIGINT handlers).

Checks are soft: check() prints ok/FAIL per assertion and finish() exits 1 if any failed, so one
run reports every broken behaviour, not only the first."""
import atexit
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("KVMESH_BINARY_DIR", "build")
AGENT = os.environ.get("KVMESH_E2E_AGENT_BIN", os.path.join(BIN, "agent", "kvmesh-agent"))
ROUTER = os.path.join(BIN, "router", "kvmesh-router")
KVMESH = os.path.join(BIN, "cli", "kvmesh")
MODEL = "tiny"

FAILURES = []
_PROCS = []  # every Proc this test started, stopped by pid at exit
_PROCS_LOCK = threading.Lock()


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return bool(cond)


def finish():
    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) failed:", flush=True)
        for f in FAILURES:
            print("  - " + f, flush=True)
        sys.exit(1)
    print("\nall checks passed", flush=True)


def workdir(prefix="kvmesh-router-e2e-"):
    return tempfile.mkdtemp(prefix=prefix)


def wait_until(pred, timeout=10.0, what="condition", interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return True
        except (OSError, KeyError, ValueError, http.client.HTTPException):
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A child process that writes a ready file {http, port, pid, ...} once it serves."""

    def __init__(self, name, wd, argv, ready_file=None, env=None, wait=True, ready_timeout=120,
                 stop_timeout=20):
        self.name = name
        self.stop_timeout = stop_timeout
        self.wd = wd
        self.ready_file = ready_file or os.path.join(wd, name + ".ready.json")
        self.log_path = os.path.join(wd, name + ".log")
        self.log = open(self.log_path, "w")
        e = dict(os.environ)
        e.update(env or {})
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=e,
                                     start_new_session=True)
        with _PROCS_LOCK:
            _PROCS.append(self)
            pidfile = os.environ.get("KVMESH_E2E_PIDFILE")
            if pidfile:  # the shell wrapper's EXIT trap kills these if Python itself is killed
                with open(pidfile, "a") as f:
                    f.write(f"{self.proc.pid}\n")
        self.info = None
        self.url = None
        self.port = None
        if wait:
            self.wait_ready(ready_timeout)

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while True:
            if os.path.exists(self.ready_file):
                try:
                    self.info = json.load(open(self.ready_file))
                    break
                except ValueError:
                    pass  # being written
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before ready:\n"
                                   f"{' '.join(self.argv)}\n{self.tail()}")
            if time.time() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.tail()}")
            time.sleep(0.05)
        self.port = int(self.info["port"])
        self.url = self.info.get("http") or f"http://127.0.0.1:{self.port}"
        self.url = self.url.rstrip("/")
        return self

    @property
    def pid(self):
        return self.proc.pid

    def tail(self, n=40):
        try:
            self.log.flush()
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout=None):
        timeout = self.stop_timeout if timeout is None else timeout
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        try:
            self.log.close()
        except OSError:
            pass
        return self.proc.returncode

    # HTTP on this process ------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=120):
        return request(self.port, method, path, body, headers, timeout)

    def post(self, path, body, headers=None, timeout=120):
        """(status, parsed JSON or raw text)."""
        status, _, data = self.request("POST", path, body, headers, timeout)
        return status, parse_json(data)

    def get(self, path, headers=None, timeout=30):
        status, _, data = self.request("GET", path, None, headers, timeout)
        return status, data.decode("utf-8", errors="replace")

    def metrics_text(self, headers=None):
        status, text = self.get("/metrics", headers)
        if status != 200:
            raise KeyError(f"/metrics of {self.name}: HTTP {status}")
        return text

    def metric(self, name, labels=None, default=None, headers=None):
        return metric_value(self.metrics_text(headers), name, labels, default, self.name)


def _stop_all():
    with _PROCS_LOCK:
        procs = list(reversed(_PROCS))
    for p in procs:
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            print(f"cleanup of {p.name} (pid {p.pid}): {e!r}", file=sys.stderr)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


atexit.register(_stop_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def agent_env(threads=1):
    return {"OPENBLAS_NUM_THREADS": str(threads), "KVMESH_CPU_THREADS": str(threads)}


def start_agent(name, wd, *flags, role="aggregated", env=None, wait=True):
    argv = [AGENT, "--role", role, "--model", "builtin:" + MODEL, "--host", "127.0.0.1",
            "--port", "0", "--ready-file", os.path.join(wd, name + ".ready.json"),
            "--drain-timeout", "2s", *flags]
    e = agent_env()
    e.update(env or {})
    return Proc(name, wd, argv, env=e, wait=wait)


def start_agents(n, wd, *flags, prefix="agent", role="aggregated", env=None):
    """n agents; the first alone (it creates the builtin model in the cache dir), the rest in
    parallel."""
    first = start_agent(f"{prefix}0", wd, *flags, role=role, env=env)
    rest = [start_agent(f"{prefix}{i}", wd, *flags, role=role, env=env, wait=False)
            for i in range(1, n)]
    for a in rest:
        a.wait_ready()
    return [first] + rest


def start_router(wd, workers, *flags, name="router", env=None):
    """workers: list of (Proc or URL, role)."""
    urls = ",".join(f"{w.url if isinstance(w, Proc) else w}={role}" for w, role in workers)
    if not os.path.exists(ROUTER):
        raise SystemExit(f"{ROUTER} not built (ninja kvmesh-router)")
    argv = [ROUTER, "--host", "127.0.0.1", "--port", "0", "--model", "builtin:" + MODEL,
            "--ready-file", os.path.join(wd, name + ".ready.json"), "--drain-timeout", "2s",
            "--workers.urls", urls, "--workers.health-interval", "200ms", *flags]
    return Proc(name, wd, argv, env=env)


def wait_router_ready(router, timeout=30):
    """/ready 200 (a decode-capable worker is ready)."""
    wait_until(lambda: router.get("/ready")[0] == 200, timeout, f"{router.name} /ready 200")


# ---------------------------------------------------------------------------------------------
# HTTP


def parse_json(data):
    try:
        return json.loads(data) if data else None
    except ValueError:
        return data.decode("utf-8", errors="replace")


def request(port, method, path, body=None, headers=None, timeout=120):
    """(status, lower-cased headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {}
        if body is not None:
            h["Content-Type"] = "application/json"
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def is_error_json(parsed):
    return (isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)
            and isinstance(parsed["error"].get("message"), str) and "type" in parsed["error"])


def metric_value(text, name, labels=None, default=None, who="target"):
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if labels:
            lab = head[len(name):]
            if not all(f'{k}="{v}"' in lab for k, v in labels.items()):
                continue
        total += float(value)
        found = True
    if not found:
        if default is not None:
            return default
        raise KeyError(f"{name}{labels or ''} not in /metrics of {who}")
    return total


class SseStream:
    """A streaming POST read event by event (http.client handles the chunked encoding). Each
    event is the text after 'data: '. close() drops the connection (a client disconnect)."""

    def __init__(self, port, path, body, headers=None, timeout=120):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        h.update(headers or {})
        self.conn.request("POST", path, body=json.dumps(body), headers=h)
        self.sock = self.conn.sock  # http.client hands it to the response; close() needs it
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.raw_events = []
        if self.status != 200:
            self.body = self.resp.read()

    def events(self):
        """Yields the data payloads; stops at EOF. '[DONE]' is yielded too."""
        data_lines = []
        while True:
            line = self.resp.readline()
            if not line:
                if data_lines:
                    ev = "\n".join(data_lines)
                    self.raw_events.append(ev)
                    yield ev
                return
            line = line.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data_lines:
                    ev = "\n".join(data_lines)
                    data_lines = []
                    self.raw_events.append(ev)
                    yield ev
                continue
            if line.startswith("data:"):
                data_lines.append(line[5:].lstrip(" "))

    def close(self):
        """Drops the connection at once (shutdown both ways), as a client that goes away."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.resp.close()
        self.conn.close()


def collect_stream(port, path, body, headers=None, timeout=120, on_event=None):
    """Runs a streaming request to the end. Returns a dict: status, text, token_ids, finish,
    usage, errors (error payloads seen), done (saw [DONE]), chunks, ttft (s), e2e (s)."""
    t0 = time.time()
    s = SseStream(port, path, body, headers, timeout)
    out = {"status": s.status, "text": "", "token_ids": [], "finish": None, "usage": None,
           "errors": [], "done": False, "chunks": 0, "ttft": None, "e2e": None, "after_done": 0,
           "headers": s.headers}
    if s.status != 200:
        out["body"] = parse_json(s.body)
        s.close()
        return out
    try:
        for ev in s.events():
            if out["done"]:
                out["after_done"] += 1
                continue
            if ev == "[DONE]":
                out["done"] = True
                continue
            obj = json.loads(ev)
            out["chunks"] += 1
            if "error" in obj:
                out["errors"].append(obj)
                continue
            if obj.get("usage"):
                out["usage"] = obj["usage"]
            for ch in obj.get("choices", []):
                piece = ch.get("text")
                if piece is None:
                    piece = (ch.get("delta") or {}).get("content") or ""
                ids = ch.get("token_ids") or []
                if (piece or ids) and out["ttft"] is None:
                    out["ttft"] = time.time() - t0
                out["text"] += piece
                out["token_ids"].extend(ids)
                if ch.get("finish_reason"):
                    out["finish"] = ch["finish_reason"]
            if on_event is not None:
                on_event(out)
    finally:
        s.close()
    out["e2e"] = time.time() - t0
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# A whole graph for clients in other languages (tests/router_openai_test.sh):
#   router_e2e_util.py serve WORKDIR ENDPOINT_FILE
# starts `kvmesh up --port 0 --run-dir WORKDIR/run` (the default graph: 1 prefill + 1 decode +
# router), writes the router's base URL to ENDPOINT_FILE once /ready is 200, and runs until
# SIGTERM, then stops what it started.


def _up_endpoint(run_dir, log_text):
    """The router's base URL once `kvmesh up` published it: run_dir/router.ready (written last,
    after the agents'), else up.json's endpoint, else the "endpoint: URL/v1" line it prints.
    Never an agent's URL (their ready files and log lines appear first)."""
    ready = os.path.join(run_dir, "router.ready")
    up_json = os.path.join(run_dir, "up.json")
    try:
        if os.path.isfile(ready):
            info = json.load(open(ready))
            if info.get("http"):
                return info["http"].rstrip("/")
            if info.get("port"):
                return f"http://127.0.0.1:{int(info['port'])}"
        if os.path.isfile(up_json):
            ep = json.load(open(up_json)).get("endpoint")
            if ep:
                return ep.rstrip("/").removesuffix("/v1")
    except (ValueError, OSError):
        pass  # being written
    m = re.search(r"endpoint: (http://127\.0\.0\.1:\d+)/v1", log_text)
    return m.group(1) if m else None


def start_up(wd, *flags, timeout=150):
    """`kvmesh up`; returns (Proc, base URL) once the router's /ready is 200."""
    run_dir = os.path.join(wd, "run")
    argv = [KVMESH, "up", "--port", "0", "--run-dir", run_dir, "--grace", "5", *flags]
    p = Proc("kvmesh-up", wd, argv, env=agent_env(), wait=False, stop_timeout=30)
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = open(p.log_path, errors="replace").read()
        if not p.alive():
            raise RuntimeError(f"kvmesh up exited with {p.proc.returncode}:\n{p.tail()}")
        url = _up_endpoint(run_dir, text)
        if url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            try:
                if request(port, "GET", "/ready", timeout=5)[0] == 200:
                    p.url, p.port = url, port
                    return p, url
            except OSError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"kvmesh up: router not ready after {timeout} s:\n{p.tail()}")


def _serve(wd, endpoint_file):
    _, url = start_up(wd)
    print(f"kvmesh up serving at {url}", flush=True)
    with open(endpoint_file + ".tmp", "w") as f:
        f.write(url + "\n")
    os.rename(endpoint_file + ".tmp", endpoint_file)
    while True:
        time.sleep(1)
        with _PROCS_LOCK:
            dead = [p for p in _PROCS if not p.alive()]
        if dead:
            raise SystemExit(f"{dead[0].name} exited with {dead[0].proc.returncode}:\n{dead[0].tail()}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        _serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: router_e2e_util.py serve WORKDIR ENDPOINT_FILE")
