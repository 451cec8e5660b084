#!/usr/bin/python3
"""A local kubelet for end-to-end tests: runs the Pods of a (test) Kubernetes API server as local
processes, so the operator's Deployments become real kvmesh-agent / kvmesh-router processes.

What it does (docs/test-cluster.md, "Local kubelet"):
  - Lists then watches Pods in all namespaces (resumes from the last resourceVersion; on 410 Gone it
    relists). Every pod without spec.nodeName or with spec.nodeName == --node-name is ours.
  - Gives each pod its own loopback address 127.0.0.N (N = 2..254), so pods can all listen on the same
    port as they would on their own network namespace. status.podIP / podIPs / hostIP are set.
  - Runs each container's `command` + `args` (command[0] is looked up in --bin-dir folders, then PATH;
    the image is ignored) with the container's env: `value`, and `valueFrom.fieldRef` for
    status.podIP, metadata.name, metadata.namespace, spec.nodeName. `$(VAR)` in command/args is
    expanded from that env as Kubernetes does; `$$` stays `$`.
  - Volumes: configMap (files written under the pod's folder and rewritten when the ConfigMap
    changes, by rename as the real kubelet does), emptyDir. A container's mountPath is mapped to that
    folder: every command/arg/env value that starts with the mountPath is rewritten to the folder.
  - Probes: startupProbe, readinessProbe, livenessProbe with httpGet (host = pod IP, port by number or
    by container port name), periodSeconds / failureThreshold / successThreshold / timeoutSeconds /
    initialDelaySeconds (scaled by --probe-scale for tests). Ready condition and containerStatuses
    follow; a failing liveness probe or an exited process restarts the container (restartCount,
    back-off 1 s doubling to 10 s).
  - Deletion: a pod with deletionTimestamp gets SIGTERM, then SIGKILL after its grace period
    (terminationGracePeriodSeconds, capped by --max-grace), and is then deleted with grace 0; a pod
    that simply disappears (DELETED event) is killed the same way.
  - Stops every pod it runs on SIGTERM/SIGINT. With $KVMESH_E2E_PIDFILE set it appends each process
    id to that file so a test's cleanup can stop leftovers.
Only the Python standard library is used.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

LOG_LOCK = threading.Lock()


def log(msg, **kv):
    extra = " ".join(f"{k}={v}" for k, v in kv.items())
    with LOG_LOCK:
        print(f"{time.strftime('%H:%M:%S')} local-kubelet {msg} {extra}".rstrip(), file=sys.stderr, flush=True)


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


class Api:
    """A small Kubernetes REST client (plain HTTP or HTTPS without verification, bearer token)."""

    def __init__(self, server, token=""):
        u = urllib.parse.urlparse(server)
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.token = token

    def _conn(self, timeout):
        if self.https:
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _headers(self, content_type=None):
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        if content_type:
            h["Content-Type"] = content_type
        return h

    def request(self, method, path, body=None, content_type="application/json", timeout=10):
        conn = self._conn(timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=self._headers(content_type if data else None))
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
            if resp.status >= 300:
                raise ApiError(resp.status, text)
            return json.loads(text) if text else {}
        finally:
            conn.close()

    def watch(self, path, on_event, stop):
        """Streams watch events to on_event(dict) until the server ends the stream or stop is set."""
        conn = self._conn(timeout=5)
        try:
            conn.request("GET", path, headers=self._headers())
            resp = conn.getresponse()
            if resp.status >= 300:
                raise ApiError(resp.status, resp.read().decode(errors="replace"))
            while not stop.is_set():
                try:
                    line = resp.readline()
                except TimeoutError:
                    continue  # no event within 5 s; keep waiting
                except OSError:
                    return
                if not line:
                    return
                line = line.strip()
                if line:
                    on_event(json.loads(line))
        finally:
            conn.close()


VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text, env):
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return VAR_RE.sub(sub, text)


class Container:
    def __init__(self, pod, spec):
        self.pod = pod
        self.spec = spec
        self.name = spec["name"]
        self.proc = None
        self.log = None
        self.restart_count = 0
        self.next_start = 0.0
        self.backoff = 1.0
        self.started_at = None
        self.started = False  # startup probe passed (or none)
        self.ready = False
        self.probe_state = {}  # probe kind -> [successes, failures, next_due]
        self.last_exit = None

    def port_number(self, port):
        if isinstance(port, int):
            return port
        if isinstance(port, str) and port.isdigit():
            return int(port)
        for p in self.spec.get("ports", []):
            if p.get("name") == port:
                return p["containerPort"]
        raise ValueError(f"no container port named {port!r}")


class Pod:
    def __init__(self, kubelet, obj, ip):
        self.kubelet = kubelet
        self.ns = obj["metadata"].get("namespace", "default")
        self.name = obj["metadata"]["name"]
        self.uid = obj["metadata"].get("uid", "")
        self.obj = obj
        self.ip = ip
        self.dir = os.path.join(kubelet.work_dir, f"{self.ns}_{self.name}")
        self.containers = [Container(self, c) for c in obj["spec"].get("containers", [])]
        self.volume_dirs = {}  # volume name -> folder
        self.cm_versions = {}  # volume name -> ConfigMap resourceVersion written
        self.terminating = False
        self.last_status = None
        self.created = time.time()
        self.lock = threading.Lock()  # held by tick(); terminate() takes it to stop starts

    @property
    def key(self):
        return f"{self.ns}/{self.name}"


class Kubelet:
    def __init__(self, args):
        self.api = Api(args.server, args.token)
        self.node = args.node_name
        self.bin_dirs = args.bin_dir or []
        self.work_dir = os.path.abspath(args.work_dir)
        self.probe_scale = args.probe_scale
        self.max_grace = args.max_grace
        self.pods = {}  # key -> Pod
        self.free_ips = [f"127.0.0.{n}" for n in range(2, 255)]
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self.pidfile = os.environ.get("KVMESH_E2E_PIDFILE", "")
        os.makedirs(self.work_dir, exist_ok=True)

    # ---- watch ---------------------------------------------------------------------------------
    def ours(self, obj):
        node = obj.get("spec", {}).get("nodeName", "")
        return node in ("", self.node)

    def sync_loop(self):
        rv = ""
        while not self.stop.is_set():
            try:
                if not rv:
                    lst = self.api.request("GET", "/api/v1/pods")
                    rv = lst["metadata"]["resourceVersion"]
                    seen = set()
                    for obj in lst.get("items", []):
                        if self.ours(obj):
                            seen.add(f"{obj['metadata'].get('namespace', 'default')}/{obj['metadata']['name']}")
                            self.on_pod(obj)
                    with self.lock:
                        gone = [k for k in self.pods if k not in seen]
                    for k in gone:
                        self.on_pod_gone(k)
                last = {"rv": rv}

                def on_event(ev):
                    t = ev.get("type")
                    obj = ev.get("object", {})
                    if t == "ERROR":
                        raise ApiError(obj.get("code", 500), json.dumps(obj))
                    if obj.get("metadata", {}).get("resourceVersion"):
                        last["rv"] = obj["metadata"]["resourceVersion"]
                    if t == "BOOKMARK" or not self.ours(obj):
                        return
                    key = f"{obj['metadata'].get('namespace', 'default')}/{obj['metadata']['name']}"
                    if t == "DELETED":
                        self.on_pod_gone(key)
                    else:
                        self.on_pod(obj)

                q = urllib.parse.urlencode({"watch": "1", "resourceVersion": rv,
                                            "allowWatchBookmarks": "true", "timeoutSeconds": "60"})
                try:
                    self.api.watch("/api/v1/pods?" + q, on_event, self.stop)
                finally:
                    rv = last["rv"]
            except ApiError as e:
                if e.status == 410:
                    log("watch expired, relisting")
                    rv = ""
                else:
                    log("api error", error=e)
                    time.sleep(0.5)
            except (OSError, http.client.HTTPException, ValueError) as e:
                log("watch failed", error=e)
                time.sleep(0.5)

    def on_pod(self, obj):
        key = f"{obj['metadata'].get('namespace', 'default')}/{obj['metadata']['name']}"
        with self.lock:
            pod = self.pods.get(key)
            if pod is not None and pod.uid and pod.uid != obj["metadata"].get("uid", pod.uid):
                # Same name, new pod: the old one is gone.
                self.pods.pop(key)
                threading.Thread(target=self.terminate, args=(pod, False), daemon=True).start()
                pod = None
            if pod is None:
                if obj["metadata"].get("deletionTimestamp"):
                    threading.Thread(target=self.finalize_delete, args=(obj,), daemon=True).start()
                    return
                if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    return
                if not self.free_ips:
                    log("no free pod address", pod=key)
                    return
                pod = Pod(self, obj, self.free_ips.pop(0))
                self.pods[key] = pod
                log("pod added", pod=key, ip=pod.ip)
                self.prepare(pod)
                return
            pod.obj = obj
            if obj["metadata"].get("deletionTimestamp") and not pod.terminating:
                pod.terminating = True
                threading.Thread(target=self.terminate, args=(pod, True), daemon=True).start()

    def on_pod_gone(self, key):
        with self.lock:
            pod = self.pods.pop(key, None)
        if pod is not None and not pod.terminating:
            pod.terminating = True
            threading.Thread(target=self.terminate, args=(pod, False), daemon=True).start()

    # ---- pod lifecycle -------------------------------------------------------------------------
    def prepare(self, pod):
        os.makedirs(pod.dir, exist_ok=True)
        for vol in pod.obj["spec"].get("volumes", []):
            d = os.path.join(pod.dir, "volumes", vol["name"])
            os.makedirs(d, exist_ok=True)
            pod.volume_dirs[vol["name"]] = d
        self.refresh_volumes(pod)
        self.put_status(pod)

    def refresh_volumes(self, pod):
        for vol in pod.obj["spec"].get("volumes", []):
            cm = vol.get("configMap")
            if not cm:
                continue
            try:
                obj = self.api.request("GET", f"/api/v1/namespaces/{pod.ns}/configmaps/{cm['name']}")
            except ApiError as e:
                if e.status != 404:
                    log("configmap read failed", pod=pod.key, error=e)
                continue
            rv = obj["metadata"].get("resourceVersion", "")
            if pod.cm_versions.get(vol["name"]) == rv:
                continue
            d = pod.volume_dirs[vol["name"]]
            data = obj.get("data", {})
            items = cm.get("items")
            files = {it["path"]: data.get(it["key"], "") for it in items} if items else dict(data)
            for path, text in files.items():
                target = os.path.join(d, path)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = target + ".kubelet-tmp"
                with open(tmp, "w") as f:
                    f.write(text)
                os.replace(tmp, target)
            pod.cm_versions[vol["name"]] = rv

    def container_env(self, pod, c):
        env = {}
        fields = {
            "status.podIP": pod.ip,
            "metadata.name": pod.name,
            "metadata.namespace": pod.ns,
            "spec.nodeName": self.node,
        }
        for e in c.spec.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(str(e["value"]), env)
            elif "valueFrom" in e and "fieldRef" in e["valueFrom"]:
                env[e["name"]] = fields.get(e["valueFrom"]["fieldRef"].get("fieldPath", ""), "")
        return env

    def remap(self, pod, c, text):
        for m in c.spec.get("volumeMounts", []):
            d = pod.volume_dirs.get(m["name"])
            mp = m["mountPath"].rstrip("/")
            if d and (text == mp or text.startswith(mp + "/")):
                return d + text[len(mp):]
            if d and "=" + mp in text:  # --flag=/mount/path/file
                return text.replace("=" + mp, "=" + d, 1)
        return text

    def resolve(self, exe):
        if "/" in exe:
            return exe
        for d in self.bin_dirs:
            p = os.path.join(d, exe)
            if os.access(p, os.X_OK):
                return p
        found = shutil.which(exe)
        if not found:
            raise FileNotFoundError(f"{exe} not found in --bin-dir or PATH")
        return found

    def start_container(self, pod, c):
        env = self.container_env(pod, c)
        argv = [expand(a, env) for a in c.spec.get("command", [])] + \
               [expand(a, env) for a in c.spec.get("args", [])]
        if not argv:
            log("container has no command (the image is not run)", pod=pod.key, container=c.name)
            c.next_start = time.time() + 3600
            return
        argv = [self.remap(pod, c, a) for a in argv]
        env = {k: self.remap(pod, c, v) for k, v in env.items()}
        base = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR", "LANG", "KVMESH_CACHE_DIR",
                                           "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                                           "OPENBLAS_L2_SIZE") if k in os.environ}
        base.update(env)
        try:
            argv[0] = self.resolve(argv[0])
        except FileNotFoundError as e:
            log("cannot start container", pod=pod.key, container=c.name, error=e)
            c.next_start = time.time() + c.backoff
            c.backoff = min(c.backoff * 2, 10.0)
            return
        c.log = open(os.path.join(pod.dir, f"{c.name}.log"), "ab")
        c.proc = subprocess.Popen(argv, env=base, stdout=c.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True,
                                  cwd=pod.dir)
        if self.pidfile:
            with open(self.pidfile, "a") as f:
                f.write(f"{c.proc.pid}\n")
        c.started_at = time.time()
        c.started = "startupProbe" not in c.spec
        c.ready = False
        c.probe_state = {}
        log("container started", pod=pod.key, container=c.name, pid=c.proc.pid, argv=" ".join(argv))

    def kill_container(self, c, grace):
        p = c.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        c.last_exit = p.returncode
        c.proc = None
        c.ready = False
        if c.log:
            c.log.close()
            c.log = None

    def terminate(self, pod, delete_object):
        with pod.lock:  # waits for a tick in progress; later ticks see terminating
            pod.terminating = True
        grace = pod.obj["spec"].get("terminationGracePeriodSeconds", 30)
        grace = max(0.0, min(float(grace), self.max_grace))
        threads = [threading.Thread(target=self.kill_container, args=(c, grace)) for c in pod.containers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log("pod stopped", pod=pod.key)
        with self.lock:
            if self.pods.get(pod.key) is pod:
                self.pods.pop(pod.key)
            self.free_ips.append(pod.ip)
        if delete_object:
            self.delete_object(pod.ns, pod.name, pod.uid)

    def finalize_delete(self, obj):
        md = obj["metadata"]
        self.delete_object(md.get("namespace", "default"), md["name"], md.get("uid", ""))

    def delete_object(self, ns, name, uid):
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.api.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}?gracePeriodSeconds=0", body)
        except ApiError as e:
            if e.status not in (404, 409):
                log("pod delete failed", pod=f"{ns}/{name}", error=e)

    # ---- probes and status ---------------------------------------------------------------------
    def http_probe(self, pod, c, probe):
        hg = probe.get("httpGet")
        if not hg:
            return True  # exec/tcp probes are not supported: treated as passing (documented)
        port = c.port_number(hg.get("port"))
        host = hg.get("host") or pod.ip
        timeout = max(0.2, float(probe.get("timeoutSeconds", 1)))
        try:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            conn.request("GET", hg.get("path", "/"))
            status = conn.getresponse().status
            conn.close()
            return 200 <= status < 400
        except (OSError, http.client.HTTPException):
            return False

    def run_probe(self, pod, c, kind, now):
        probe = c.spec.get(kind)
        if probe is None:
            return None
        st = c.probe_state.setdefault(kind, [0, 0, c.started_at + probe.get("initialDelaySeconds", 0) * self.probe_scale])
        if now < st[2]:
            return "pending"
        st[2] = now + max(0.2, probe.get("periodSeconds", 10) * self.probe_scale)
        if self.http_probe(pod, c, probe):
            st[0] += 1
            st[1] = 0
            return "pass" if st[0] >= probe.get("successThreshold", 1) else "pending"
        st[1] += 1
        st[0] = 0
        return "fail" if st[1] >= probe.get("failureThreshold", 3) else "pending"

    def tick(self, pod, now):
        if pod.terminating:
            return
        if pod.cm_versions or any(v.get("configMap") for v in pod.obj["spec"].get("volumes", [])):
            if now - getattr(pod, "cm_checked", 0) > 0.5:
                pod.cm_checked = now
                self.refresh_volumes(pod)
        for c in pod.containers:
            if c.proc is None or c.proc.poll() is not None:
                if c.proc is not None:
                    c.last_exit = c.proc.returncode
                    log("container exited", pod=pod.key, container=c.name, code=c.last_exit)
                    c.proc = None
                    c.ready = False
                    c.restart_count += 1
                    c.next_start = now + c.backoff
                    c.backoff = min(c.backoff * 2, 10.0)
                if now >= c.next_start:
                    self.start_container(pod, c)
                continue
            if not c.started:
                r = self.run_probe(pod, c, "startupProbe", now)
                if r == "pass":
                    c.started = True
                elif r == "fail":
                    self.restart(pod, c, "startup probe failed")
                continue
            if self.run_probe(pod, c, "livenessProbe", now) == "fail":
                self.restart(pod, c, "liveness probe failed")
                continue
            r = self.run_probe(pod, c, "readinessProbe", now)
            if r is None:
                c.ready = True
            elif r == "pass":
                c.ready = True
                c.backoff = 1.0
            elif r == "fail":
                c.ready = False
        self.put_status(pod)

    def restart(self, pod, c, why):
        log("restarting container", pod=pod.key, container=c.name, why=why)
        self.kill_container(c, 2.0)
        c.restart_count += 1
        c.next_start = time.time() + c.backoff
        c.backoff = min(c.backoff * 2, 10.0)

    def put_status(self, pod):
        ready = bool(pod.containers) and all(c.ready for c in pod.containers)
        cstat = []
        for c in pod.containers:
            s = {"name": c.name, "ready": c.ready, "restartCount": c.restart_count,
                 "image": c.spec.get("image", ""), "started": c.proc is not None and c.started}
            if c.proc is not None:
                s["state"] = {"running": {"startedAt": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(c.started_at))}}
            else:
                s["state"] = {"waiting": {"reason": "CrashLoopBackOff" if c.restart_count else "ContainerCreating"}}
            if c.last_exit is not None:
                s["lastState"] = {"terminated": {"exitCode": c.last_exit}}
            cstat.append(s)
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "True" if ready else "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
            "containerStatuses": cstat,
        }
        key = json.dumps(status, sort_keys=True)
        if key == pod.last_status:
            return
        status["startTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pod.created))
        for cond in status["conditions"]:
            cond["lastTransitionTime"] = now_rfc3339()
        try:
            self.api.request("PATCH", f"/api/v1/namespaces/{pod.ns}/pods/{pod.name}/status",
                             {"status": status}, content_type="application/merge-patch+json")
            pod.last_status = key
            if ready:
                log("pod ready", pod=pod.key, ip=pod.ip)
        except ApiError as e:
            if e.status != 404:
                log("status update failed", pod=pod.key, error=e)
        except OSError as e:
            log("status update failed", pod=pod.key, error=e)

    def probe_loop(self, interval):
        while not self.stop.wait(interval):
            with self.lock:
                pods = list(self.pods.values())
            now = time.time()
            for pod in pods:
                try:
                    with pod.lock:
                        self.tick(pod, now)
                except Exception as e:  # one bad pod must not stop the others
                    log("pod tick failed", pod=pod.key, error=repr(e))

    def shutdown(self):
        self.stop.set()
        with self.lock:
            pods = list(self.pods.values())
        threads = []
        for pod in pods:
            pod.terminating = True
            threads.append(threading.Thread(target=self.terminate, args=(pod, False)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", required=True, help="API server URL, e.g. http://127.0.0.1:6443")
    ap.add_argument("--token", default=os.environ.get("KVMESH_KUBELET_TOKEN", ""))
    ap.add_argument("--node-name", default="local")
    ap.add_argument("--bin-dir", action="append", help="folder searched for command[0] (repeatable)")
    ap.add_argument("--work-dir", required=True, help="pod folders, logs and volumes")
    ap.add_argument("--probe-interval", type=float, default=0.2)
    ap.add_argument("--probe-scale", type=float, default=0.1,
                    help="multiplies probe periods and initial delays (tests run faster)")
    ap.add_argument("--max-grace", type=float, default=20.0, help="cap on terminationGracePeriodSeconds")
    ap.add_argument("--ready-file", default="", help="written once the first pod list is synced")
    args = ap.parse_args()

    k = Kubelet(args)
    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=k.sync_loop, daemon=True).start()
    threading.Thread(target=k.probe_loop, args=(args.probe_interval,), daemon=True).start()
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "node": args.node_name, "port": 0}, f)
        os.replace(tmp, args.ready_file)
    log("started", server=args.server, node=args.node_name)
    while not stopping.wait(0.2):
        pass
    log("stopping")
    k.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
