#!/usr/bin/env python3
"""bench/mesh-replication: anti-entropy after a partition, on the namespace
LAN (tests/integration/helpers/netns.py; root or CAP_NET_ADMIN).

Three `relaymesh serve` nodes ([mesh] replicas = 2) and an SMTP sink on a
fourth host. Node 2 accepts --entries Internet messages while the sink is
down, so both other nodes hold a replica of each. Node 3 is cut off; the
sink comes up and node 2 delivers everything (every record becomes a
tombstone that node 3 misses). Then the partition heals and node 3 catches
up by the per-origin summary and range-based reconciliation. Printed: the
time to catch up, reconciliation rounds, bytes the two nodes sent for it,
the entries' own bytes, and, last, antientropy_overhead=<bytes sent /
bytes of the entries>.

    sudo RELAYMESH_BIN=build/relaymesh bench/mesh-replication/run.py \\
        --entries 10000
"""
import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))

from helpers import netns  # noqa: E402
import test_mesh_replication as T  # noqa: E402
from test_mesh import all_alive, join, wait_for  # noqa: E402
from test_mesh_routing import message  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=10000)
    ap.add_argument("--size", type=int, default=4000)
    args = ap.parse_args()
    if T.BIN is None:
        sys.exit("set RELAYMESH_BIN")
    netns.require_netns()
    net = netns.Net(4)
    net.up()
    base = tempfile.mkdtemp(prefix="mesh-repl-bench.")
    T.ReplNode.grace = "1h"  # no takeover during the partition
    nodes = {i: T.ReplNode(net, i, base) for i in (1, 2, 3)}
    sink = {"proc": None, "file": os.path.join(base, "sink.txt")}
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
        sink["proc"] = net.run(T.SINK, [netns.PYTHON, "-c", T.SINK_SCRIPT,
                                        sink["file"]])
        wait_for(lambda: nodes[2].queue_len() == 0, 1800, "delivered")
        r2, r3 = nodes[2].repl(), nodes[3].repl()
        t0 = time.time()
        net.heal(3)
        wait_for(lambda: nodes[3].repl().get("tombstones", 0) >= n, 1800,
                 "caught up", step=0.05)
        took = time.time() - t0
        q2, q3 = nodes[2].repl(), nodes[3].repl()
        sent = (q2["antientropy_bytes"] - r2["antientropy_bytes"] +
                q3["antientropy_bytes"] - r3["antientropy_bytes"])
        rounds = (q2.get("antientropy_rounds", 0) -
                  r2.get("antientropy_rounds", 0))
        print("antientropy: differing=%d seconds=%.2f rounds=%d "
              "bytes_sent=%d entries_bytes=%d" % (n, took, rounds, sent,
                                                  size))
        print("antientropy_overhead=%.4f" % (sent / size))
    finally:
        if sink["proc"] is not None:
            sink["proc"].kill()
        for nd in nodes.values():
            if nd.proc is not None and nd.proc.poll() is None:
                nd.stop()
        net.down()


if __name__ == "__main__":
    main()
