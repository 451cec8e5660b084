"""Operator end to end (run by operator_e2e_test.sh; see docs/testing-operator.md).

Starts the test API server (tests/kube), the local kubelet (tests/local_kubelet) and
kvmesh-operator, then drives everything with the real kubectl, as a user would:
  1. kubectl apply the CRD (crds/) and examples/local-tiny.yaml;
  2. kubectl wait for condition Available; the router pod answers a completion with tokens;
  3. steady state: over a few resync periods the operator makes zero writes;
  4. kubectl patch decode replicas 1 -> 2: the Deployment, the pods, the router's workers file and
     the graph's status follow;
  5. kubectl delete: the finalizer drains, every child and every worker process goes."""
import http.client
import json
import os
import subprocess
import sys
import time

from router_e2e_util import BIN, Proc, check, finish, metric_value, wait_until, workdir

SRC = os.environ.get("KVMESH_SOURCE_DIR", os.path.join(os.path.dirname(__file__), ".."))
APISERVER = os.path.join(BIN, "tests", "kube", "kvmesh-test-apiserver")
OPERATOR = os.path.join(BIN, "operator", "manager", "kvmesh-operator")
KUBELET = os.path.join(SRC, "tests", "local_kubelet", "local_kubelet.py")
PY = os.environ.get("KVMESH_PYTHON3", "/usr/bin/python3")
GRAPH = "local-tiny"


def kubectl(kc, *args, check_rc=True, timeout=60):
    r = subprocess.run(["kubectl", "--kubeconfig", kc, "--request-timeout=10s", *args],
                       capture_output=True, text=True, timeout=timeout)
    if check_rc and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def kjson(kc, *args):
    return json.loads(kubectl(kc, "get", *args, "-o", "json").stdout)


def http_post(host, port, path, body, timeout=60):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def writes(op):
    text = op.metrics_text()
    total = 0.0
    for what in ("apply", "delete", "status", "finalizer", "event"):
        total += metric_value(text, "kvmesh_operator_writes_total", {"what": what}, default=0.0)
    return total


def main():
    wd = workdir("kvmesh-operator-e2e-")
    api = Proc("apiserver", wd, [APISERVER, "--port", "0", "--ready-file", os.path.join(wd, "apiserver.ready.json"),
                                 "--kubeconfig-out", os.path.join(wd, "kubeconfig")], ready_timeout=30)
    kc = os.path.join(wd, "kubeconfig")
    kubelet = Proc("kubelet", wd, [PY, KUBELET, "--server", api.url, "--work-dir", os.path.join(wd, "pods"),
                                   "--bin-dir", os.path.join(BIN, "agent"), "--bin-dir", os.path.join(BIN, "router"),
                                   "--ready-file", os.path.join(wd, "kubelet.ready.json")], ready_timeout=30)
    op = Proc("operator", wd, [OPERATOR, "--kubeconfig", kc, "--host", "127.0.0.1", "--port", "0",
                               "--resync-period", "1s", "--drain-timeout", "20s",
                               "--ready-file", os.path.join(wd, "operator.ready.json")], ready_timeout=30)

    # 1. CRD and graph, with the real kubectl.
    r = kubectl(kc, "apply", "-f", os.path.join(SRC, "crds", "inferencegraph.yaml"))
    check("created" in r.stdout or "configured" in r.stdout, "kubectl apply -f crds/inferencegraph.yaml")
    wait_until(lambda: kubectl(kc, "get", "ig", check_rc=False).returncode == 0, 10, "the ig resource to be served")
    r = kubectl(kc, "apply", "-f", os.path.join(SRC, "examples", "local-tiny.yaml"))
    check(f"inferencegraph.kvmesh.dev/{GRAPH}" in r.stdout, "kubectl apply -f examples/local-tiny.yaml")

    # 2. Available, and the router answers.
    r = kubectl(kc, "wait", f"ig/{GRAPH}", "--for=condition=Available", "--timeout=150s", check_rc=False, timeout=170)
    if not check(r.returncode == 0, "kubectl wait --for=condition=Available"):
        print(kubectl(kc, "get", "ig,deploy,pods", check_rc=False).stdout, kubelet.tail(), op.tail(), sep="\n")
        finish()
    table = kubectl(kc, "get", "ig", GRAPH).stdout
    print(table)
    check("Ready" in table or "Available" in table, "kubectl get ig shows the phase column")
    g = kjson(kc, "ig", GRAPH)
    st = g.get("status", {})
    check(st.get("observedGeneration") == g["metadata"]["generation"], "status.observedGeneration == generation")
    check(kubectl(kc, "describe", "ig", GRAPH, check_rc=False).returncode == 0, "kubectl describe ig")
    for d in ("prefill", "decode", "router"):
        dep = kjson(kc, "deployment", f"{GRAPH}-{d}")
        refs = dep["metadata"].get("ownerReferences", [])
        check(any(x.get("kind") == "InferenceGraph" and x.get("controller") for x in refs),
              f"deployment {GRAPH}-{d} has a controller ownerReference to the graph")
    pods = kjson(kc, "pods", "-l", "app.kubernetes.io/component=router")["items"]
    router_ip = pods[0]["status"]["podIP"]
    status, text = 0, ""

    def completion_ok():
        nonlocal status, text
        status, text = http_post(router_ip, 8000, "/v1/completions",
                                 {"model": "tiny", "prompt": "The operator runs", "max_tokens": 8})
        return status == 200
    try:
        wait_until(completion_ok, 60, "a 200 completion from the router pod", interval=0.5)
    except AssertionError:
        pass
    body = json.loads(text) if status == 200 else {}
    check(status == 200 and body.get("usage", {}).get("completion_tokens", 0) > 0,
          f"completion through the router pod at {router_ip}:8000 ({status} {text[:200]})")

    # 3. Steady state: zero writes over several resync periods.
    time.sleep(3)
    w0 = writes(op)
    time.sleep(4)
    w1 = writes(op)
    check(w1 == w0, f"steady state: no writes over 4 resync periods ({w0} -> {w1})")

    # 4. Scale decode 1 -> 2.
    kubectl(kc, "patch", "ig", GRAPH, "--type", "merge", "-p", '{"spec":{"decode":{"replicas":2}}}')
    try:
        wait_until(lambda: kjson(kc, "deployment", f"{GRAPH}-decode").get("status", {}).get("readyReplicas") == 2,
                   120, "2 ready decode replicas", interval=0.5)
        wait_until(lambda: kjson(kc, "ig", GRAPH).get("status", {}).get("decode", {}).get("readyReplicas") == 2,
                   30, "graph status decode.readyReplicas == 2", interval=0.5)
        wait_until(lambda: kjson(kc, "configmap", f"{GRAPH}-router")["data"]["workers.yaml"].count("role: decode") == 2,
                   30, "the router's workers file lists 2 decode workers", interval=0.5)
        check(True, "decode pool scaled to 2: deployment, status and router workers file follow")
    except AssertionError as e:
        check(False, str(e))

    # 5. Delete: finalizer drain, then every child and process goes.
    r = kubectl(kc, "delete", "ig", GRAPH, "--timeout=90s", check_rc=False, timeout=100)
    check(r.returncode == 0, f"kubectl delete ig {GRAPH} ({r.stdout.strip()} {r.stderr.strip()})")

    def all_gone():
        left = kubectl(kc, "get", "deploy,svc,cm,pods,pdb", "-l", f"kvmesh.dev/graph={GRAPH}", "-o", "name",
                       check_rc=False).stdout.split()
        return not left
    try:
        wait_until(all_gone, 60, "every child of the graph to be deleted", interval=0.5)
        check(True, "every child (deployments, services, configmap, pods, PDBs) deleted")
    except AssertionError as e:
        check(False, str(e))
    # Worker and router processes name their pod folder in their args (remapped volume paths).
    pod_prefix = os.path.join(wd, "pods", "default_")

    def worker_procs():
        return subprocess.run(["pgrep", "-f", pod_prefix], capture_output=True, text=True).stdout.split()
    try:
        wait_until(lambda: not worker_procs(), 30, "worker processes to exit", interval=0.5)
    except AssertionError:
        pass
    left = worker_procs()
    check(not left, f"no worker process of the graph left running ({left})")

    op_rc = op.stop()
    check(op_rc == 0, f"operator exits 0 on SIGTERM (got {op_rc})")
    kubelet.stop()
    api.stop()
    finish()


if __name__ == "__main__":
    main()
