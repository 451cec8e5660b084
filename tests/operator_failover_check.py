"""Leader failover between two kvmesh-operator processes (run by operator_failover_test.sh).

Test API server only (no kubelet: pods never become ready, which does not matter here).
  1. Two operators with leader election (lease 3 s, renew deadline 2 s, retry 0.25 s): exactly one
     leads (kvmesh_operator_is_leader), the Lease names it.
  2. kubectl applies the CRD and a graph: the leader creates the children; the standby writes
     nothing.
  3. kill -9 the leader, patch decode replicas 1 -> 3 at once: the standby takes the lease within
     lease duration + retry (+1 s slack for this loaded 2-core box) and the decode Deployment gets
     3 replicas; leaseTransitions grew.
  4. Once converged the new leader's reconciles write nothing (Lease renewals aside)."""
import json
import os
import subprocess
import time

from router_e2e_util import BIN, Proc, check, finish, metric_value, wait_until, workdir

SRC = os.environ.get("KVMESH_SOURCE_DIR", os.path.join(os.path.dirname(__file__), ".."))
APISERVER = os.path.join(BIN, "tests", "kube", "kvmesh-test-apiserver")
OPERATOR = os.path.join(BIN, "operator", "manager", "kvmesh-operator")
LEASE_S, RETRY_S = 3.0, 0.25


def kubectl(kc, *args, check_rc=True):
    r = subprocess.run(["kubectl", "--kubeconfig", kc, "--request-timeout=10s", *args],
                       capture_output=True, text=True, timeout=60)
    if check_rc and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
    return r


def kjson(kc, *args):
    return json.loads(kubectl(kc, "get", *args, "-o", "json").stdout)


def is_leader(op):
    try:
        return metric_value(op.metrics_text(), "kvmesh_operator_is_leader", default=0.0) == 1.0
    except (OSError, KeyError):
        return False


def writes(op):
    text = op.metrics_text()
    return sum(metric_value(text, "kvmesh_operator_writes_total", {"what": w}, default=0.0)
               for w in ("apply", "delete", "status", "finalizer", "event"))


def main():
    wd = workdir("kvmesh-operator-failover-")
    kc = os.path.join(wd, "kubeconfig")
    api = Proc("apiserver", wd, [APISERVER, "--port", "0", "--kubeconfig-out", kc,
                                 "--ready-file", os.path.join(wd, "apiserver.ready.json")], ready_timeout=30)
    ops = []
    for name in ("op-a", "op-b"):
        ops.append(Proc(name, wd, [OPERATOR, "--kubeconfig", kc, "--host", "127.0.0.1", "--port", "0",
                                   "--leader-election.enabled", "--leader-election.identity", name,
                                   "--leader-election.lease-namespace", "default",
                                   "--leader-election.lease-duration", f"{int(LEASE_S * 1000)}ms",
                                   "--leader-election.renew-deadline", "2s",
                                   "--leader-election.retry-period", f"{int(RETRY_S * 1000)}ms",
                                   "--resync-period", "1s",
                                   "--ready-file", os.path.join(wd, name + ".ready.json")], ready_timeout=30))

    # 1. Exactly one leader.
    wait_until(lambda: any(is_leader(o) for o in ops), 15, "a leader", interval=0.1)
    time.sleep(1.0)
    leaders = [o for o in ops if is_leader(o)]
    check(len(leaders) == 1, f"exactly one leader ({[o.name for o in leaders]})")
    leader = leaders[0]
    standby = ops[1] if leader is ops[0] else ops[0]
    lease = kjson(kc, "lease", "kvmesh-operator", "-n", "default")
    check(lease["spec"].get("holderIdentity") == leader.name, f"the Lease names the leader ({lease['spec']})")
    transitions0 = lease["spec"].get("leaseTransitions", 0)

    # 2. The leader reconciles; the standby writes nothing.
    kubectl(kc, "apply", "-f", os.path.join(SRC, "crds", "inferencegraph.yaml"))
    wait_until(lambda: kubectl(kc, "get", "ig", check_rc=False).returncode == 0, 10, "ig served")
    kubectl(kc, "apply", "-f", os.path.join(SRC, "examples", "local-tiny.yaml"))
    wait_until(lambda: kubectl(kc, "get", "deploy", "local-tiny-decode", check_rc=False).returncode == 0,
               20, "the leader to create the decode Deployment", interval=0.2)
    check(True, "the leader created the graph's children")
    check(writes(standby) == 0, "the standby made no writes")

    # 3. kill -9 the leader; change the spec while nobody leads.
    leader.kill9()
    t0 = time.time()
    kubectl(kc, "patch", "ig", "local-tiny", "--type", "merge", "-p", '{"spec":{"decode":{"replicas":3}}}')
    wait_until(lambda: is_leader(standby), LEASE_S + RETRY_S + 10, "the standby to lead", interval=0.05)
    took = time.time() - t0
    check(took <= LEASE_S + RETRY_S + 1.0,
          f"takeover within lease duration + retry (+1 s slack): {took:.2f} s <= {LEASE_S + RETRY_S + 1.0:.2f} s")
    lease = kjson(kc, "lease", "kvmesh-operator", "-n", "default")
    check(lease["spec"].get("holderIdentity") == standby.name, "the Lease names the new leader")
    check(lease["spec"].get("leaseTransitions", 0) > transitions0, "leaseTransitions grew")
    try:
        wait_until(lambda: kjson(kc, "deploy", "local-tiny-decode")["spec"]["replicas"] == 3, 20,
                   "the new leader to scale decode to 3", interval=0.2)
        check(True, "the new leader converged the change made during the failover")
    except AssertionError as e:
        check(False, str(e))

    # 4. Converged: the new leader's reconciles write nothing more (Lease renewals are the only
    # writes the server still sees; they are not reconciler writes).
    time.sleep(3)
    w0 = writes(standby)
    time.sleep(3)
    w1 = writes(standby)
    check(w0 == w1, f"no reconciler writes once converged ({w0} -> {w1})")

    rc = standby.stop()
    check(rc == 0, f"the leader exits 0 on SIGTERM (got {rc})")
    lease = kjson(kc, "lease", "kvmesh-operator", "-n", "default")
    check(not lease["spec"].get("holderIdentity"), "a clean shutdown releases the Lease")
    api.stop()
    finish()


if __name__ == "__main__":
    main()
