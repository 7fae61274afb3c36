#!/usr/bin/env python3
"""bench/mesh-replication: replication and membership on the namespace LAN
(tests/integration/helpers/netns.py; root or CAP_NET_ADMIN). Three parts,
each on fresh nodes, on one network of max(4, --sizes) hosts:

  durable       --messages Internet messages sent at --rate per second to
                node 1 of three ([mesh] replicas = 2), with an SMTP sink up
                on host 4: per message, the time from the SMTP 250 to the
                moment the origin holds the second replica's "rack" (each
                replica answers after its durable LMDB commit), from the
                node's `event=repl.durable ... ms=` log lines. p50, p99,
                max, count.
  convergence   for each N in --sizes: N nodes (LAN profile) joined by
                invite; (a) join: the N-th node's `mesh join` returns ->
                every other member lists it alive; (b) dead: kill -9 of one
                member -> every survivor lists it dead. Table N | join_s |
                dead_s.
  antientropy   node 2 accepts --entries messages while the sink is down,
                node 3 is cut off until nodes 2 and 3 see each other dead,
                node 2 delivers everything, the partition heals: time for
                node 3 to catch up, rounds, bytes.

The last line is always antientropy_overhead=<bytes sent / bytes of the
entries> (n/a with --skip-antientropy). See bench/README.md.

    sudo RELAYMESH_BIN=build/relaymesh bench/mesh-replication/run.py \\
        --entries 10000 --messages 500 --sizes 5,10,20
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "bench", "lib"))

from helpers import netns  # noqa: E402
import test_mesh_replication as T  # noqa: E402
from test_mesh import MeshNode, all_alive, join, wait_for  # noqa: E402
from test_mesh_routing import message  # noqa: E402
from mtabench import percentile, fmt  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------ durable on R

# Run inside the origin's namespace: one SMTP session, one message every
# 1/rate s (paced from the start, not from the last reply, so a slow reply
# does not lower the rate). stdout: [[code, qid, wall time of the 250], ...]
PACED_SCRIPT = r"""
import json, re, smtplib, sys, time
req = json.load(sys.stdin)
s = smtplib.SMTP("127.0.0.1", 2525, timeout=120)
s.ehlo("client.test")
out = []
t0 = time.monotonic()
for k, m in enumerate(req["msgs"]):
    d = t0 + k / req["rate"] - time.monotonic()
    if d > 0:
        time.sleep(d)
    s.mail(m["from"])
    for r in m["to"]:
        s.rcpt(r)
    code, resp = s.data(m["data"].encode())
    t = time.time()
    q = re.search(rb"queued as (\S+)", resp)
    out.append([code, q.group(1).decode() if q else None, t])
s.quit()
print(json.dumps(out))
"""

DEFERRED_RE = re.compile(r"event=repl\.deferred qid=(\S+)")
DURABLE_RE = re.compile(r"^(\S+) \S+ event=repl\.durable qid=(\S+) "
                        r"replicas=(\d+) ms=([0-9.]+)")


def log_time(ts):
    """Wall time of a node log timestamp (2026-01-01T00:00:00.123Z)."""
    import calendar
    sec, frac = ts.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(sec, "%Y-%m-%dT%H:%M:%S")) + \
        int(frac) / 1000.0


def durable_part(net, base, args, problems):
    T.SINK = 4
    T.ReplNode.grace = "1h"
    nodes = {i: T.ReplNode(net, i, os.path.join(base, "durable"))
             for i in (1, 2, 3)}
    sink = None
    try:
        for nd in nodes.values():
            nd.start()
        nodes[1].ok("mesh", "create")
        join(nodes, 1, 2)
        join(nodes, 1, 3)
        wait_for(lambda: all_alive(nodes, [1, 2, 3]), 60, "alive")
        sink = net.run(T.SINK, [netns.PYTHON, "-c", T.SINK_SCRIPT,
                                os.path.join(base, "durable", "sink.txt")])
        n, w = args.messages, args.warmup
        msgs = [message("s@n1.example", ["d%d@internet.test" % k],
                        "dur-%d@bench" % k, size=args.size)
                for k in range(w + n)]
        log("durable: %d + %d warm-up messages at %g/s to n1"
            % (n, w, args.rate))
        r = net.call(1, [netns.PYTHON, "-c", PACED_SCRIPT],
                     input=json.dumps({"msgs": msgs, "rate": args.rate})
                     .encode(), timeout=(w + n) / args.rate + 600)
        if r.returncode != 0:
            raise RuntimeError("sender: %s" % r.stderr.decode()[-2000:])
        sent = json.loads(r.stdout)[w:]
        bad = [x for x in sent if x[0] != 250 or not x[1]]
        if bad:
            problems.append("durable: %d messages not accepted: %s"
                            % (len(bad), bad[:3]))
        qids = {x[1]: x[2] for x in sent if x[0] == 250 and x[1]}

        deferred = set()

        def logged():
            got = {}
            with open(nodes[1].log, errors="replace") as f:
                for ln in f:
                    m = DURABLE_RE.match(ln)
                    if m and m.group(2) in qids:
                        got[m.group(2)] = (float(m.group(4)),
                                           int(m.group(3)),
                                           log_time(m.group(1)))
                    m = DEFERRED_RE.search(ln)
                    if m and m.group(1) in qids:
                        deferred.add(m.group(1))
            return got
        # A message whose rput could not go to a replica (no link) is
        # repaired by anti-entropy, which has no rack: never logged.
        try:
            wait_for(lambda: len(set(logged()) | deferred) >= len(qids),
                     60, "repl.durable for every message", step=0.5)
        except AssertionError as e:
            problems.append("durable: %s" % e)
        got = logged()
        acks = nodes[1].repl().get("acks", 0)
        ms = [v[0] for v in got.values()]
        # Cross-check on another clock: the log line's timestamp (ms,
        # written after the ack) minus the client's wall time of the 250.
        skew = [(v[2] - qids[q]) * 1000 for q, v in got.items()]
        short = [q for q, v in got.items() if v[1] != 2]
        if short:
            problems.append("durable: %d lines with replicas != 2"
                            % len(short))
        res = {"messages": n, "rate": args.rate, "count": len(ms),
               "acks": acks,
               "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
               "max_ms": max(ms) if ms else None,
               "min_ms": min(ms) if ms else None,
               "client_p50_ms": percentile(skew, 50),
               "client_p99_ms": percentile(skew, 99)}
        res["deferred"] = len(deferred)
        lost = set(qids) - set(got) - deferred
        if lost:
            problems.append("durable: %d of %d messages neither logged "
                            "durable on 2 replicas nor deferred (acks=%d): %s"
                            % (len(lost), n, acks, sorted(lost)[:5]))
        return res
    finally:
        if sink is not None:
            sink.kill()
            sink.wait()
        for nd in nodes.values():
            if nd.proc is not None and nd.proc.poll() is None:
                nd.stop()


# ------------------------------------------------------------ convergence

class ConvNode(MeshNode):
    def write_conf(self):
        MeshNode.write_conf(self)
        with open(self.conf) as f:
            text = f.read()
        text = text.replace("log_level = debug", "log_level = info")
        text += "profile = lan\n"
        with open(self.conf, "w") as f:
            f.write(text)

    def view(self):
        """{peer: (state, state_since wall seconds or None)}; None when the
        CLI failed."""
        r = self.cli("mesh", "peers", "--json", timeout=10)
        if r.returncode != 0:
            return None
        return {p["name"]: (p["state"], p.get("state_since"))
                for p in json.loads(r.stdout)["peers"] if not p["self"]}


def converge(nodes, observers, member, state, t0, timeout, poll):
    """Poll each observer until it lists member in state; per observer the
    time from t0 (wall) to the change, taken from the peer's state_since
    (the node's own clock, ms; negative when the observer had it before
    t0), else the poll's return. Observers that got there are not polled again.
    Returns ({observer: seconds}, polls)."""
    pending, got, polls = set(observers), {}, 0
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        for i in sorted(pending):
            v = nodes[i].view()
            polls += 1
            now = time.time()
            if v is None or v.get(member, (None,))[0] != state:
                continue
            since = v[member][1]
            got[i] = (since if since is not None else now) - t0
            pending.discard(i)
        if pending:
            time.sleep(poll)
    return got, polls


def conv_size(net, base, n, args, problems):
    nodes = {i: ConvNode(net, i, os.path.join(base, "conv%d" % n))
             for i in range(1, n + 1)}
    row = {"n": n}
    try:
        for nd in nodes.values():
            nd.start()
        nodes[1].ok("mesh", "create")
        for i in range(2, n):
            join(nodes, 1, i)
        wait_for(lambda: all_alive(nodes, range(1, n)), 120,
                 "%d nodes alive" % (n - 1), step=0.5)
        time.sleep(args.settle)
        # (a) the N-th node joins.
        tok = nodes[1].ok("mesh", "invite").strip()
        t_call = time.time()
        out = nodes[n].ok("mesh", "join", tok)
        t0 = time.time()
        assert "joined mesh" in out, out
        got, polls = converge(nodes, range(1, n), "n%d" % n, "alive", t0,
                              args.timeout, args.poll_ms / 1000.0)
        row["join_cmd_s"] = t0 - t_call
        row["join_call_s"] = (max(got.values()) + t0 - t_call) if got \
            else None
        row["join_polls"] = polls
        row["join_first_s"] = min(got.values()) if got else None
        if len(got) < n - 1:
            problems.append("N=%d: n%d alive in %d of %d views after %d s"
                            % (n, n, len(got), n - 1, args.timeout))
            row["join_s"] = None
        else:
            row["join_s"] = max(got.values())
        wait_for(lambda: all_alive(nodes, range(1, n + 1)), 120,
                 "%d nodes alive" % n, step=0.5)
        time.sleep(args.settle)
        # (b) one member (n2: neither the creator nor the newcomer) dies.
        victim = 2
        nodes[victim].kill9()
        t0 = time.time()
        survivors = [i for i in range(1, n + 1) if i != victim]
        got, polls = converge(nodes, survivors, "n%d" % victim, "dead", t0,
                              args.timeout, args.poll_ms / 1000.0)
        row["dead_polls"] = polls
        row["dead_first_s"] = min(got.values()) if got else None
        if len(got) < len(survivors):
            problems.append("N=%d: n%d dead in %d of %d views after %d s"
                            % (n, victim, len(got), len(survivors),
                               args.timeout))
            row["dead_s"] = None
        else:
            row["dead_s"] = max(got.values())
        exited = [i for i in survivors if nodes[i].proc.poll() is not None]
        if exited:
            problems.append("N=%d: nodes exited: %s" % (n, exited))
        return row
    finally:
        for nd in nodes.values():
            if nd.proc is not None and nd.proc.poll() is None:
                try:
                    nd.stop()
                except AssertionError as e:
                    problems.append("N=%d: %s" % (n, e))


# ------------------------------------------------------------ anti-entropy

def antientropy_part(net, base, args, problems):
    T.SINK = 4
    T.ReplNode.grace = "1h"  # no takeover during the partition
    nodes = {i: T.ReplNode(net, i, os.path.join(base, "antientropy"))
             for i in (1, 2, 3)}
    sink = {"proc": None,
            "file": os.path.join(base, "antientropy", "sink.txt")}
    try:
        for nd in nodes.values():
            nd.start()
        nodes[1].ok("mesh", "create")
        join(nodes, 1, 2)
        join(nodes, 1, 3)
        wait_for(lambda: all_alive(nodes, [1, 2, 3]), 60, "alive")
        n, size = args.entries, 0
        t0 = time.time()
        for k0 in range(0, n, 500):
            msgs = [message("s@n2.example", ["d%d@internet.test" % k],
                            "b-%d@bench" % k, size=args.size)
                    for k in range(k0, min(n, k0 + 500))]
            size += sum(len(m["data"]) for m in msgs)
            res = nodes[2].send(msgs)
            assert all(r[0] == 250 for r in res), res
        wait_for(lambda: nodes[2].repl().get("acks", 0) >= 2 * n, 600,
                 "replicas acknowledged")
        print("replicated: entries=%d seconds=%.1f" % (n, time.time() - t0))
        net.isolate(3)
        if not args.short_partition:
            # Until the mesh has noticed: a partition shorter than failure
            # detection leaves the links up, node 2's tombstone updates
            # wait in TCP and arrive by retransmission after the heal, and
            # anti-entropy has nothing to do (0 rounds, 0 bytes).
            wait_for(lambda: nodes[2].states().get("n3") == "dead" and
                     nodes[3].states().get("n2") == "dead", 120,
                     "n3 and n2 dead to each other")
        sink["proc"] = net.run(T.SINK, [netns.PYTHON, "-c", T.SINK_SCRIPT,
                                        sink["file"]])
        wait_for(lambda: nodes[2].queue_len() == 0, 1800, "delivered")
        r2, r3 = nodes[2].repl(), nodes[3].repl()
        t0 = time.time()
        net.heal(3)
        wait_for(lambda: nodes[3].repl().get("tombstones", 0) >= n, 1800,
                 "caught up", step=0.05)
        took = time.time() - t0
        since = nodes[2].peers().get("n3", {}).get("state_since")
        q2, q3 = nodes[2].repl(), nodes[3].repl()
        sent = (q2["antientropy_bytes"] - r2["antientropy_bytes"] +
                q3["antientropy_bytes"] - r3["antientropy_bytes"])
        rounds = (q2.get("antientropy_rounds", 0) -
                  r2.get("antientropy_rounds", 0))
        print("antientropy: differing=%d seconds=%.2f rounds=%d "
              "bytes_sent=%d entries_bytes=%d" % (n, took, rounds, sent,
                                                  size))
        if not args.short_partition:
            print("  (partition held until n2 and n3 saw each other dead; "
                  "n2 saw n3 alive again %s s after the heal)"
                  % fmt(since - t0 if since else None, "%.2f"))
        if rounds == 0 or sent == 0:
            problems.append("antientropy: node 3 caught up without "
                            "anti-entropy (rounds=%d bytes=%d): the figure "
                            "is not anti-entropy's" % (rounds, sent))
        return sent / size
    finally:
        if sink["proc"] is not None:
            sink["proc"].kill()
        for nd in nodes.values():
            if nd.proc is not None and nd.proc.poll() is None:
                nd.stop()


# ------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=10000,
                    help="anti-entropy: differing entries (10000)")
    ap.add_argument("--size", type=int, default=4000,
                    help="message body bytes (4000)")
    ap.add_argument("--messages", type=int, default=500,
                    help="durable: messages (500)")
    ap.add_argument("--warmup", type=int, default=10,
                    help="durable: messages sent first, not counted (10)")
    ap.add_argument("--rate", type=float, default=50.0,
                    help="durable: messages per second (50)")
    ap.add_argument("--sizes", default="5,10,20",
                    help="convergence: mesh sizes (5,10,20)")
    ap.add_argument("--poll-ms", type=float, default=50,
                    help="convergence: pause between polling rounds (50)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="convergence: quiet seconds before each fault (3)")
    ap.add_argument("--timeout", type=float, default=120,
                    help="convergence: wait for each change (120 s)")
    ap.add_argument("--short-partition", action="store_true",
                    help="anti-entropy: heal as soon as node 2 delivered, "
                    "without waiting for the mesh to see node 3 dead")
    ap.add_argument("--skip-durable", action="store_true")
    ap.add_argument("--skip-convergence", action="store_true")
    ap.add_argument("--skip-antientropy", action="store_true")
    ap.add_argument("--keep", action="store_true",
                    help="keep the run directory (configs, datadirs, logs)")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    if T.BIN is None:
        sys.exit("set RELAYMESH_BIN")
    sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    if args.skip_convergence:
        sizes = []
    if any(s < 3 for s in sizes):
        sys.exit("--sizes: at least 3 nodes")
    netns.require_netns()
    net = netns.Net(max([4] + sizes))
    net.up()
    base = tempfile.mkdtemp(prefix="mesh-repl-bench.")
    problems, out = [], {}
    overhead = None
    try:
        if not args.skip_durable:
            d = durable_part(net, base, args, problems)
            out["durable"] = d
            print("durable on R=2 (250 -> second rack at the origin), "
                  "%d messages at %g/s, 3 nodes:" % (d["messages"],
                                                      d["rate"]))
            print("  p50_ms=%s p99_ms=%s max_ms=%s min_ms=%s count=%d "
                  "deferred=%d"
                  % (fmt(d["p50_ms"], "%.2f"), fmt(d["p99_ms"], "%.2f"),
                     fmt(d["max_ms"], "%.2f"), fmt(d["min_ms"], "%.2f"),
                     d["count"], d["deferred"]))
            print("  check (log line ts - client's 250, ms resolution): "
                  "p50_ms=%s p99_ms=%s"
                  % (fmt(d["client_p50_ms"], "%.1f"),
                     fmt(d["client_p99_ms"], "%.1f")))
            sys.stdout.flush()
        rows = []
        for n in sizes:
            log("convergence: %d nodes" % n)
            rows.append(conv_size(net, base, n, args, problems))
        if rows:
            out["convergence"] = rows
            print("membership convergence, LAN profile (seconds; last "
                  "observer, first observer in brackets):")
            print("  %4s | %-16s | %-16s | %-11s | %s"
                  % ("N", "join_s", "dead_s", "join_cmd_s",
                     "join_from_call_s"))
            for r in rows:
                print("  %4d | %-16s | %-16s | %-11s | %s" % (
                    r["n"],
                    "%s (%s)" % (fmt(r["join_s"], "%.3f"),
                                 fmt(r["join_first_s"], "%.3f")),
                    "%s (%s)" % (fmt(r["dead_s"], "%.3f"),
                                 fmt(r["dead_first_s"], "%.3f")),
                    fmt(r["join_cmd_s"], "%.3f"),
                    fmt(r["join_call_s"], "%.3f")))
            sys.stdout.flush()
        if not args.skip_antientropy:
            overhead = antientropy_part(net, base, args, problems)
            out["antientropy_overhead"] = overhead
        for p in problems:
            print("PROBLEM: %s" % p)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
        print("antientropy_overhead=%s" % fmt(overhead, "%.4f"))
    finally:
        net.down()
        if args.keep:
            log("kept %s" % base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
