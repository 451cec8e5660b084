"""Checks of `kvmesh up` (run by tests/up_test.sh): argv[1] = the kvmesh binary, argv[2] = a
scratch dir. Starts `kvmesh up --port 0 --run-dir D`, talks to what it started, kills one of its
children, stops it with SIGTERM, and verifies exit codes, pids and messages."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

KVMESH, TMP = sys.argv[1], sys.argv[2]
BIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(KVMESH)))
# The router is part of every build; a missing binary is a failure, not a reason to skip.
HAS_ROUTER = True
assert os.access(os.path.join(BIN_DIR, "router", "kvmesh-router"), os.X_OK), f"no kvmesh-router under {BIN_DIR}/router"


def log(msg):
    print(f"[up_check] {msg}", flush=True)


def pid_alive(pid):
    """True while pid runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


class Up:
    def __init__(self, run_dir, *args):
        self.run_dir = run_dir
        self.log_path = os.path.join(TMP, "up.log")
        self.log = open(self.log_path, "w")
        extra = [] if HAS_ROUTER else ["--no-router"]
        self.proc = subprocess.Popen([KVMESH, "up", "--port", "0", "--run-dir", run_dir,
                                      "--grace", "5", *extra, *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def text(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def wait_for(self, what, pred, timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"kvmesh up exited ({self.proc.returncode}) while waiting for {what}:\n"
                                     + self.text()[-4000:])
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n" + self.text()[-4000:])

    def up_json(self):
        with open(os.path.join(self.run_dir, "up.json")) as f:
            return json.load(f)


def post(url, body, timeout=120):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError) as e:
        return 0, str(e)


def chat(base):
    return post(base + "/v1/chat/completions", {
        "model": "tiny", "messages": [{"role": "user", "content": "Hello there, how are you?"}],
        "max_tokens": 8, "temperature": 0})


def check_chat(status, body):
    assert status == 200, (status, body)
    assert body["usage"]["completion_tokens"] > 0, body
    assert body["choices"][0]["message"]["content"] is not None, body


def main():
    log(f"router binary present: {HAS_ROUTER}")
    # --- a bad graph: exit 2, the field path in the message, nothing started ---
    bad = os.path.join(TMP, "bad.yaml")
    with open(bad, "w") as f:
        f.write("apiVersion: kvmesh.dev/v1alpha1\nkind: InferenceGraph\nmetadata: {name: bad}\n"
                "spec:\n  decode:\n    replicsa: 2\n")
    r = subprocess.run([KVMESH, "up", bad, "--port", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "spec.decode.replicsa: unknown field" in r.stderr and "(line 6)" in r.stderr, r.stderr
    r = subprocess.run([KVMESH, "up", "--bogus"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown flag --bogus" in r.stderr, r.stderr
    r = subprocess.run([KVMESH, "up", "--print-config"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [p["name"] for p in plan["processes"]] == ["prefill-0", "decode-0", "router"], plan
    assert plan["processes"][1]["env"]["OPENBLAS_NUM_THREADS"] == "1" or "OPENBLAS_NUM_THREADS" in os.environ
    log("bad graph / bad flag / --print-config: ok")

    # --- an agent that dies while starting: reported with its last lines, exit 1, temp dir gone ---
    broken = os.path.join(TMP, "broken.yaml")
    with open(broken, "w") as f:
        f.write("apiVersion: kvmesh.dev/v1alpha1\nkind: InferenceGraph\nmetadata: {name: broken}\n"
                "spec:\n  disaggregation: {mode: \"off\"}\n  prefill: {replicas: 0}\n"
                "  decode: {extraArgs: [--no-such-flag]}\n")
    scratch = os.path.join(TMP, "tmpdir")
    os.makedirs(scratch)
    r = subprocess.run([KVMESH, "up", broken, "--port", "0", "--no-router"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, TMPDIR=scratch))
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "decode-0 (pid" in r.stderr and "exited with code 2 while starting" in r.stderr, r.stderr
    assert "no-such-flag" in r.stderr, r.stderr  # the agent's own complaint, quoted from its last lines
    assert os.listdir(scratch) == [], os.listdir(scratch)
    log("agent failing at start-up: reported, exit 1, temp run dir removed: ok")

    # --- the default graph ---
    run_dir = os.path.join(TMP, "run")
    up = Up(run_dir)
    final = os.path.join(run_dir, "router.ready" if HAS_ROUTER else "up.json")
    up.wait_for("ready", lambda: os.path.exists(final) and os.path.exists(os.path.join(run_dir, "up.json")))
    info = up.up_json()
    children = info["children"]
    assert children["prefill-0"]["role"] == "prefill" and children["decode-0"]["role"] == "decode", children
    for name, c in children.items():
        assert c["pid"] > 0 and pid_alive(c["pid"]), (name, c)
    with open(os.path.join(run_dir, "workers.yaml")) as f:
        workers = f.read()
    for name in ("prefill-0", "decode-0"):
        assert children[name]["url"] in workers, workers
    if HAS_ROUTER:
        with open(final) as f:
            base = json.load(f)["http"]
        assert info["endpoint"] == base + "/v1", info
        up.wait_for("ready banner", lambda: "curl -s " + base + "/v1/chat/completions" in up.text(), 30)
    else:
        base = children["decode-0"]["url"]
    check_chat(*chat(base))
    log(f"first chat through {base}: ok")
    # Output of the children is prefixed.
    assert "[decode-0] " in up.text() and "[prefill-0] " in up.text(), up.text()[-2000:]

    # --- kill -9 the decode agent: reported, restarted, back in workers.yaml, requests work ---
    old = children["decode-0"]
    os.kill(old["pid"], signal.SIGKILL)
    up.wait_for("crash report", lambda: f"decode-0 (pid {old['pid']}) killed by signal 9" in up.text(), 30)
    up.wait_for("decode-0 back", lambda: "decode-0 ready again at" in up.text(), 120)
    new = up.up_json()["children"]["decode-0"]
    assert new["pid"] != old["pid"] and pid_alive(new["pid"]), (old, new)
    with open(os.path.join(run_dir, "workers.yaml")) as f:
        workers = f.read()
    assert new["url"] in workers, workers
    if new["url"] != old["url"]:
        assert old["url"] not in workers, workers
    if not HAS_ROUTER:
        base = new["url"]
    deadline = time.time() + 60
    while True:  # the router notices the new workers file and the worker's /ready within seconds
        status, body = chat(base)
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.25)
    check_chat(status, body)
    log("decode agent killed, restarted, served again: ok")

    # --- SIGTERM: everything stops, exit 0 ---
    pids = [c["pid"] for c in up.up_json()["children"].values()]
    up.proc.send_signal(signal.SIGTERM)
    rc = up.proc.wait(timeout=60)
    assert rc == 0, (rc, up.text()[-3000:])
    deadline = time.time() + 5
    while any(pid_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    alive = [p for p in pids if pid_alive(p)]
    assert not alive, f"children still running after kvmesh up exited: {alive}"
    text = up.text()
    assert "received SIGTERM" in text and "stopped" in text, text[-2000:]
    if HAS_ROUTER:
        assert text.index("stopping router") < text.index("stopping agents"), text[-2000:]
    assert os.path.isdir(run_dir)  # --run-dir is kept
    log("SIGTERM: every child gone, exit 0: ok")
    log("all checks passed")


if __name__ == "__main__":
    try:
        main()
    finally:
        # Leave nothing behind if a check failed midway: stop what up.json still lists, by pid.
        path = os.path.join(TMP, "run", "up.json")
        if os.path.exists(path):
            try:
                with open(path) as f:
                    info = json.load(f)
                for c in info.get("children", {}).values():
                    if c.get("pid", 0) > 0 and pid_alive(c["pid"]):
                        os.kill(c["pid"], signal.SIGKILL)
                if pid_alive(info.get("pid", 0)):
                    os.kill(info["pid"], signal.SIGKILL)
            except (OSError, ValueError):
                pass
