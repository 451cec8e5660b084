"""End-to-end check of a running kvmesh-agent's KV events, replay and inventory.

A consumer rebuilds the agent's set of cached block hashes from its ZMQ event stream (vLLM wire
format), the way a KV-aware router does, and compares it with GET /v1/kv/inventory:

  A  live subscriber that DELIBERATELY drops a range of received batches, detects the gap by seq
     and recovers it through the replay socket (DEALER; protocol in kv/kv_event_zmq.h).
  B  the negative control: drops the same batches and never replays. Its set must differ from
     the inventory, otherwise the comparison would not catch a lost event and the test fails.
  C  a late subscriber: starts mid-traffic from an inventory snapshot (seq S) and applies only
     events with seq > S (replaying what it missed between the snapshot and its first message).

Traffic: ~40 sequential completions over token-id prompts with shared prefixes (4 families) and
unique tails, against a KV cache small enough that blocks get evicted (BlockRemoved).

Usage: agent_events_check.py --ready-file PATH --pid PID [--timeout S]
Exit 0 when every check passes; 1 with a list of failures otherwise.
"""
import argparse
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request

import msgpack
import zmq

MASK = (1 << 64) - 1
END_SEQ = MASK  # replay end marker: seq -1
BLOCK = 16

failures = []


def check(name, cond, detail=""):
    if cond:
        print(f"ok   {name}", flush=True)
    else:
        failures.append(f"{name}: {detail}")
        print(f"FAIL {name}: {detail}", flush=True)
    return cond


# --- wire decoding (same knowledge as tests/kv_events_python_check.py) ------------------------

def to_hash(h):
    """uint64 block hash from an int (int64 keeps its bit pattern) or bytes (low 64 bits, BE)."""
    if isinstance(h, (bytes, bytearray)):
        return int.from_bytes(h, "big") & MASK
    return int(h) & MASK


def medium_name(m):
    if m is None:
        return "GPU"
    if isinstance(m, (bytes, bytearray)):
        m = m.decode()
    return m.upper()


def decode_event(ev):
    """-> (kind, hashes, medium) from the array_like+tag form or the map form."""
    if isinstance(ev, dict):
        kind = ev.get("type")
        hashes = ev.get("block_hashes") or []
        medium = ev.get("medium")
    else:
        kind = ev[0]
        if kind == "BlockStored":
            hashes = ev[1]
            medium = ev[6] if len(ev) > 6 else None
        elif kind == "BlockRemoved":
            hashes = ev[1]
            medium = ev[2] if len(ev) > 2 else None
        else:
            hashes, medium = [], None
    if kind not in ("BlockStored", "BlockRemoved", "AllBlocksCleared"):
        raise ValueError(f"unknown event tag {kind!r}")
    return kind, [to_hash(h) for h in hashes], medium_name(medium)


def decode_batch(payload):
    obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    if isinstance(obj, dict):
        return obj["ts"], [decode_event(e) for e in obj["events"]]
    return obj[0], [decode_event(e) for e in obj[1]]


class KvState:
    """The set of cached hashes per medium, rebuilt by applying batches in seq order."""

    def __init__(self, name):
        self.name = name
        self.media = {}
        self.next_seq = None  # next seq to apply; None = take the first one seen
        self.applied = 0

    def load_snapshot(self, inv):
        self.media = {t["medium"].upper(): {to_hash(h) for h in t["hashes"]} for t in inv["tiers"]}
        self.next_seq = inv["seq"] + 1

    def apply(self, seq, events):
        assert self.next_seq is None or seq == self.next_seq, (self.name, seq, self.next_seq)
        for kind, hashes, medium in events:
            s = self.media.setdefault(medium, set())
            if kind == "BlockStored":
                s.update(hashes)
            elif kind == "BlockRemoved":
                s.difference_update(hashes)
            else:
                for m in self.media.values():
                    m.clear()
        self.next_seq = seq + 1
        self.applied += 1

    def hashes(self):
        return {m: s for m, s in self.media.items() if s}


# --- agent I/O ---------------------------------------------------------------------------------

def http_json(base, path, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def replay(ctx, endpoint, from_seq, timeout_ms=5000):
    """[(seq, payload)] for seq >= from_seq from the agent's replay ROUTER."""
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send_multipart([b"", struct.pack(">Q", from_seq)])
        out = []
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0 or not s.poll(left):
                raise TimeoutError(f"replay from {from_seq}: no end marker within {timeout_ms} ms")
            frames = s.recv_multipart()
            if len(frames) != 3:
                raise ValueError(f"replay reply with {len(frames)} frames")
            (seq,) = struct.unpack(">Q", frames[1])
            if seq == END_SEQ:
                return out
            out.append((seq, frames[2]))
    finally:
        s.close()


class Subscriber:
    def __init__(self, ctx, endpoint, topic):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.sock.connect(endpoint)
        self.topic = topic.encode()
        self.last_seq = None
        self.order_ok = True

    def drain(self, timeout_ms=0):
        """Messages now queued (waiting up to timeout_ms for the first) as [(seq, payload)]."""
        out = []
        wait = timeout_ms
        while self.sock.poll(wait):
            frames = self.sock.recv_multipart()
            wait = 0
            if len(frames) != 3 or frames[0] != self.topic or len(frames[1]) != 8:
                raise ValueError(f"bad message shape: {[f[:16] for f in frames]}")
            (seq,) = struct.unpack(">Q", frames[1])
            if self.last_seq is not None and seq <= self.last_seq:
                self.order_ok = False
            self.last_seq = seq
            out.append((seq, frames[2]))
        return out

    def close(self):
        self.sock.close()


def catch_up(ctx, state, replay_ep, upto_seq, stats):
    """Replays [state.next_seq, upto_seq) into state; True when complete."""
    if state.next_seq is None or state.next_seq >= upto_seq:
        return True
    got = replay(ctx, replay_ep, state.next_seq)
    stats["replays"] += 1
    if not got or got[0][0] != state.next_seq:
        print(f"{state.name}: replay from {state.next_seq} starts at "
              f"{got[0][0] if got else None}: outside the window, resync needed")
        return False
    for seq, payload in got:
        if seq >= upto_seq:
            break
        state.apply(seq, decode_batch(payload)[1])
        stats["replayed_batches"] += 1
    return state.next_seq >= upto_seq


def feed(ctx, state, replay_ep, msgs, stats, drop=False, recover=True):
    """Applies live messages to `state`: skips old seqs, recovers gaps by replay (or, with
    recover=False, jumps over them), and with drop=True discards the messages instead."""
    for seq, payload in msgs:
        if drop:
            stats["dropped"] += 1
            continue
        if state.next_seq is not None and seq < state.next_seq:
            continue  # already applied (replayed, or covered by the snapshot)
        if state.next_seq is not None and seq > state.next_seq:
            stats["gaps"] += 1
            if recover:
                if not catch_up(ctx, state, replay_ep, seq, stats):
                    raise RuntimeError(f"{state.name}: could not recover seqs "
                                       f"[{state.next_seq}, {seq})")
            else:
                state.next_seq = seq
        ts, events = decode_batch(payload)
        for kind, _, _ in events:
            stats[kind] = stats.get(kind, 0) + 1
        state.apply(seq, events)


def quiesce(subs, quiet_s=0.5, limit_s=30):
    """Drains every subscriber until none got a message for quiet_s. -> per-sub message lists."""
    got = [[] for _ in subs]
    deadline = time.monotonic() + limit_s
    last = time.monotonic()
    while time.monotonic() - last < quiet_s:
        if time.monotonic() > deadline:
            raise TimeoutError("events never went quiet")
        any_new = False
        for i, s in enumerate(subs):
            m = s.drain(50)
            if m:
                got[i].extend(m)
                any_new = True
        if any_new:
            last = time.monotonic()
    return got


def fmt_diff(a, b):
    out = []
    for m in sorted(set(a) | set(b)):
        x, y = a.get(m, set()), b.get(m, set())
        if x != y:
            out.append(f"{m}: {len(x - y)} only in events, {len(y - x)} only in inventory")
    return "; ".join(out) or "equal"


def prompts(n):
    """n token-id prompts: 4 families sharing a 3-block prefix, each with a unique 1-block tail
    plus 5 tokens. Token ids stay in the tiny model's vocabulary (1024)."""
    fams = [[(97 * f + 13 * i) % 1000 + 1 for i in range(3 * BLOCK)] for f in range(4)]
    out = []
    for k in range(n):
        tail = [(31 * k + 7 * i + 500) % 1000 + 1 for i in range(BLOCK + 5)]
        tail[0] = k + 1  # distinct first token: every tail block is a new hash
        out.append(fams[k % 4] + tail)
    return out


def alive(pid):
    """Running and not a zombie (the shell has not waited for it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()

    deadline = time.monotonic() + args.timeout
    while not os.path.exists(args.ready_file):
        if not alive(args.pid):
            print("agent exited before it was ready")
            return 1
        if time.monotonic() > deadline:
            print(f"agent not ready within {args.timeout} s")
            return 1
        time.sleep(0.05)
    with open(args.ready_file) as f:
        ready = json.load(f)
    print("ready:", json.dumps(ready))
    base, topic = ready["http"], ready["topic"]
    events_ep, replay_ep = ready["events_endpoint"], ready["replay_endpoint"]
    check("ready file names endpoints", events_ep.startswith("tcp://127.0.0.1:")
          and replay_ep.startswith("tcp://127.0.0.1:") and base.startswith("http://127.0.0.1:"),
          json.dumps(ready))

    ctx = zmq.Context()
    sub_a = Subscriber(ctx, events_ep, topic)
    sub_b = Subscriber(ctx, events_ep, topic)
    time.sleep(0.3)  # let the SUB subscriptions reach the PUB (slow joiner); A replays anyway

    _, inv0 = http_json(base, "/v1/kv/inventory")
    check("inventory shape", inv0.get("block_size") == BLOCK and isinstance(inv0.get("seq"), int)
          and isinstance(inv0.get("tiers"), list) and inv0["tiers"], json.dumps(inv0)[:300])
    print(f"inventory at start: seq {inv0['seq']}, tiers "
          f"{[(t['medium'], t['num_blocks_total'], t['num_blocks_used']) for t in inv0['tiers']]}")

    # A and B start from seq 0 (a fresh agent: every batch it ever published is in the replay
    # ring), so events published during warm-up, before the SUBs connected, are recovered too.
    a, b = KvState("A"), KvState("B")
    a.next_seq = 0
    stats_a = {"replays": 0, "replayed_batches": 0, "dropped": 0, "gaps": 0}
    stats_b = {"replays": 0, "replayed_batches": 0, "dropped": 0, "gaps": 0}
    b_started = False
    c, sub_c, stats_c = None, None, {"replays": 0, "replayed_batches": 0, "dropped": 0, "gaps": 0}
    n = args.requests
    drop_lo, drop_hi = n // 2, n // 2 + 8  # completions whose events A and B drop
    late_at = 3 * n // 4
    cached_tokens_seen = 0
    ps = prompts(n)
    for k, p in enumerate(ps):
        if k == late_at:
            sub_c = Subscriber(ctx, events_ep, topic)
            time.sleep(0.3)
            _, snap = http_json(base, "/v1/kv/inventory")
            c = KvState("C")
            c.load_snapshot(snap)
            print(f"late subscriber C starts from inventory seq {snap['seq']}")
        status, resp = http_json(base, "/v1/completions", {
            "model": ready.get("model", "tiny"), "prompt": p, "max_tokens": 4,
            "temperature": 0, "ignore_eos": True})
        if not check(f"completion {k}", status == 200 and resp["choices"][0]["text"] is not None,
                     f"{status} {json.dumps(resp)[:200]}"):
            return 1
        cached_tokens_seen += (resp.get("usage", {}).get("prompt_tokens_details") or {}).get(
            "cached_tokens", 0) or 0
        dropping = drop_lo <= k < drop_hi
        ma, mb = sub_a.drain(), sub_b.drain()
        feed(ctx, a, replay_ep, ma, stats_a, drop=dropping)
        if not b_started and mb:
            # B has no replay: it starts at its first message (it must not see a gap before the
            # drop window for the control to be meaningful).
            b.next_seq = mb[0][0]
            b_started = True
        feed(ctx, b, replay_ep, mb, stats_b, drop=dropping, recover=False)
        if sub_c is not None:
            feed(ctx, c, replay_ep, sub_c.drain(), stats_c)

    subs = [sub_a, sub_b] + ([sub_c] if sub_c else [])
    rest = quiesce(subs)
    feed(ctx, a, replay_ep, rest[0], stats_a)
    feed(ctx, b, replay_ep, rest[1], stats_b, recover=False)
    if sub_c:
        feed(ctx, c, replay_ep, rest[2], stats_c)
    _, inv = http_json(base, "/v1/kv/inventory")
    # Events published before the snapshot but not received (a dropped tail) show as S >= next.
    catch_up(ctx, a, replay_ep, inv["seq"] + 1, stats_a)
    if c:
        catch_up(ctx, c, replay_ep, inv["seq"] + 1, stats_c)
    truth = {t["medium"].upper(): {to_hash(h) for h in t["hashes"]} for t in inv["tiers"]}
    truth = {m: s for m, s in truth.items() if s}
    print(f"final inventory: seq {inv['seq']}, "
          f"{ {m: len(s) for m, s in truth.items()} } hashes; A stats {stats_a}; "
          f"B stats {stats_b}; C stats {stats_c}")

    check("live stream seqs strictly increase", all(s.order_ok for s in subs))
    check("events include BlockStored", stats_a.get("BlockStored", 0) > 0, str(stats_a))
    check("blocks were evicted (BlockRemoved)", stats_a.get("BlockRemoved", 0) > 0,
          f"{stats_a}: raise the request count or lower --engine.kv-cache-mib")
    for t in inv["tiers"]:
        check(f"inventory {t['medium']} within capacity",
              len(t["hashes"]) <= t["num_blocks_total"] and len(set(t["hashes"])) == len(t["hashes"]),
              f"{len(t['hashes'])} hashes, {t['num_blocks_total']} blocks")
    check("prefix cache hits reported", cached_tokens_seen > 0, "no cached_tokens in any usage")
    check("A dropped batches", stats_a["dropped"] > 0, str(stats_a))
    check("A detected the gap and replayed it",
          stats_a["gaps"] + stats_a["replays"] > 0 and stats_a["replayed_batches"] >= stats_a["dropped"],
          str(stats_a))
    check("A (drops + replay) == inventory", a.hashes() == truth, fmt_diff(a.hashes(), truth))
    check("A applied up to the inventory seq", a.next_seq >= inv["seq"] + 1,
          f"next {a.next_seq}, S {inv['seq']}")
    check("B dropped batches", stats_b["dropped"] > 0, str(stats_b))
    check("B (drops, no replay) != inventory: the comparison detects lost events",
          b.hashes() != truth, "dropping batches left the rebuilt set unchanged")
    if c:
        check("C (late: snapshot + seq > S) == inventory", c.hashes() == truth,
              fmt_diff(c.hashes(), truth))
    else:
        check("late subscriber ran", False, "fewer requests than the late start")

    for s in subs:
        s.close()
    ctx.term()
    if failures:
        print(f"{len(failures)} check(s) failed:\n  " + "\n  ".join(failures))
        return 1
    print("all agent KV event checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
