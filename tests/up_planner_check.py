"""The SLA planner inside `kvmesh up` (docs/planner.md, docs/kvmesh-up.md): the decode pool of an
aggregated graph (builtin:tiny, replicas 1, minReplicas 1, maxReplicas 3, spec.sla.itlMs 200)
grows under a rising load and shrinks again when it falls, and no request is dropped.

The performance profile given to `--planner-profile` says one replica sustains 10 output tokens/s
within the ITL target (at concurrency 1 or 2; the planner never extrapolates past the table, so
that is the capacity whatever the observed/expected correction). Phases, with the planner deciding
every 2 s and scaling down only to the highest recommendation of the last 8 s:
  A  6 s, one client, a short request every ~0.7 s      (~10 tokens/s: 1 replica)
  B 24 s, four clients back to back, max_tokens 24       (far above 30 tokens/s: 3 replicas)
  C 30 s, like A                                          (back to 1, agents drained)
Checked: decode reaches >= 2 agents during B (up.json), is back to 1 by the end of C, a drained
agent's process is gone, every request (streaming) got HTTP 200, a finish_reason and [DONE].
Prints `UP_PLANNER_RESULT {...}`."""
import json
import os
import threading
import time

import router_e2e_util as u

GRAPH = """apiVersion: kvmesh.dev/v1alpha1
kind: InferenceGraph
metadata:
  name: planner-e2e
spec:
  model:
    source: builtin:tiny
  kvCache:
    blockSize: 16
    deviceMiB: 64
  disaggregation:
    mode: "off"
  sla:
    itlMs: 200
  prefill:
    replicas: 0
  decode:
    replicas: 1
    minReplicas: 1
    maxReplicas: 3
"""

PROFILE = {
    "prefill": [{"isl": 64, "prefill_tokens_per_s": 1000, "ttft_s": 0.1}],
    "decode": [{"concurrency": 1, "context": 64, "itl_s": 0.1, "tokens_per_s": 10},
               {"concurrency": 2, "context": 64, "itl_s": 0.2, "tokens_per_s": 10}],
}


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def main():
    wd = u.workdir("kvmesh-up-planner-")
    graph = os.path.join(wd, "graph.yaml")
    with open(graph, "w") as f:
        f.write(GRAPH)
    profile = os.path.join(wd, "profile.json")
    with open(profile, "w") as f:
        json.dump(PROFILE, f)
    up, url = u.start_up(wd, graph, "--planner-profile", profile, "--planner-interval", "2",
                         "--planner-scale-down-window", "8")
    port = int(url.rsplit(":", 1)[1])
    up_json = os.path.join(wd, "run", "up.json")

    results, lock = [], threading.Lock()
    timeline = []  # (t, decode agents in up.json)
    pids = {}      # decode agent -> pid, as up.json showed them
    t0 = time.time()

    def request(i, max_tokens):
        body = {"model": "tiny", "prompt": f"Request {i}: tell me about the weather in city {i % 7}",
                "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        try:
            r = u.collect_stream(port, "/v1/completions", body, timeout=60)
        except OSError as e:
            r = {"status": f"error {e!r}", "done": False, "finish": None, "errors": []}
        r["t"] = time.time() - t0
        with lock:
            results.append(r)

    def client(stop_at, max_tokens, pause, start):
        i = start
        while time.time() - t0 < stop_at:
            request(i, max_tokens)
            i += 1
            if pause:
                time.sleep(pause)

    def watch(stop):
        while not stop.is_set():
            try:
                children = json.load(open(up_json)).get("children", {})
                for k, v in children.items():
                    if k.startswith("decode-") and v.get("pid"):
                        pids[k] = v["pid"]
                timeline.append((round(time.time() - t0, 1),
                                 sorted(k for k in children if k.startswith("decode-"))))
            except (ValueError, OSError):
                pass
            time.sleep(0.5)

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    # A (0-6 s) + C (30-60 s): one light client throughout; B (6-30 s): four heavy ones.
    light = threading.Thread(target=client, args=(60, 6, 0.7, 0))
    light.start()
    time.sleep(6)
    heavy = [threading.Thread(target=client, args=(30, 24, 0, 10000 * (k + 1))) for k in range(4)]
    for h in heavy:
        h.start()
    for h in heavy:
        h.join()
    peak = max((len(d) for t, d in timeline), default=0)
    u.check(peak >= 2, f"decode pool grew under load: peak {peak} agents (timeline tail "
                       f"{[x for x in timeline if x[0] <= 31][-3:]})")
    light.join()
    # The last drain may still be finishing.
    u.wait_until(lambda: timeline and len(timeline[-1][1]) == 1, 20, "decode pool back to 1 agent")
    stop.set()
    watcher.join()
    final = timeline[-1][1] if timeline else []
    u.check(len(final) == 1, f"decode pool shrank back: {final}")
    gone = [k for k in pids if k not in final]
    alive = [k for k in gone if pid_alive(pids[k])]
    u.check(gone and not alive, f"drained agents' processes are gone: {gone}, still running {alive}")
    log = open(up.log_path, errors="replace").read()
    drained = [line for line in log.splitlines() if "planner: draining" in line]
    u.check(len(drained) >= 1, f"agents were drained ({len(drained)} drain lines)")
    bad = [r for r in results if r["status"] != 200 or not r["done"] or r["finish"] is None or r["errors"]]
    u.check(not bad, f"no request dropped: {len(results)} requests, {len(bad)} failed "
                     f"{[(r.get('t'), r['status'], r.get('errors')) for r in bad[:3]]}")
    decisions = [line.split("[kvmesh up] ", 1)[-1] for line in log.splitlines() if "planner:" in line]
    print("UP_PLANNER_RESULT " + json.dumps({"requests": len(results), "failed": len(bad),
                                             "peak_decode": peak, "final_decode": len(final),
                                             "planner_lines": decisions[:12]}), flush=True)
    u.finish()


if __name__ == "__main__":
    main()
