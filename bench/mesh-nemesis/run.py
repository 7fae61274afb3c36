#!/usr/bin/python3
"""bench/mesh-nemesis: the mesh under a nemesis, long run, on the
namespace LAN (tests/integration/helpers/netns.py; root or CAP_NET_ADMIN).

Five `relaymesh serve` nodes, each the home of n<i>.test (3 users), every
node's smarthost an SMTP sink on a sixth host, [mesh] replicas = 2,
takeover_grace 5 s. --messages messages go to random nodes for random
recipients (mesh users on any node, sometimes several, sometimes an
Internet address at the sink) over --duration seconds, while a scheduler
partitions pairs of hosts, isolates nodes, drops 20-40 % of a node's
packets and kills nodes with -9 and restarts them on the same data (never
more than two down at once). Then every fault is cleared, every node runs,
and the mesh must drain. Checked: every accepted recipient delivered (a
mailbox exactly once, the sink at least once), every queue empty, no live
replica record and no unacknowledged copy left. The scenario is
tests/integration/nemesis.py, shared with test_mesh_nemesis.py (the short
run in ctest).

Everything random comes from --seed (default: a new one, printed): the
fault events, their order and targets, and every message's node and
recipients; timing varies, so replay a seed to see the same nemesis.

Printed: the figures table, and last
    nemesis lost=L dup_mailbox=D dup_internet=K seed=S
Exit status 1 when anything was lost, doubled in a mailbox, left queued or
live, or a node crashed.

    sudo RELAYMESH_BIN=build-release/relaymesh bench/mesh-nemesis/run.py \\
        --messages 1000 --duration 180
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None,
                    help="replay this seed (default: a new random one)")
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=180,
                    help="seconds of faults (and of sending)")
    ap.add_argument("--drain-timeout", type=int, default=600,
                    help="seconds to wait for the queues after the heal")
    ap.add_argument("--bin", default=None,
                    help="relaymesh binary (default: $RELAYMESH_BIN, else "
                    "build-release/relaymesh, else build/relaymesh)")
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--keep", action="store_true",
                    help="keep the run dir (configs, datadirs, node logs)")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    binp = args.bin or os.environ.get("RELAYMESH_BIN")
    if not binp:
        for cand in ("build-release/relaymesh", "build/relaymesh"):
            if os.path.exists(os.path.join(SRC, cand)):
                binp = os.path.join(SRC, cand)
                break
    if not binp or not os.path.exists(binp):
        sys.exit("no relaymesh binary: --bin or RELAYMESH_BIN")
    os.environ["RELAYMESH_BIN"] = os.path.abspath(binp)
    os.environ.setdefault("RELAYMESH_SRC", SRC)

    # After RELAYMESH_BIN is set: conftest reads it at import.
    from helpers import netns  # noqa: E402
    import nemesis  # noqa: E402

    reason = netns.netns_unavailable_reason()
    if reason:
        sys.exit("mesh-nemesis: %s" % reason)
    seed = nemesis.seed_from(args.seed)
    base = tempfile.mkdtemp(prefix="mesh-nemesis.", dir=args.workdir)
    print("mesh-nemesis: seed %d (replay: --seed %d), run dir %s" % (
        seed, seed, base), file=sys.stderr, flush=True)
    run = nemesis.Nemesis(seed, args.messages, args.duration, base,
                          log=lambda s: print(s, file=sys.stderr,
                                              flush=True),
                          drain_timeout=args.drain_timeout)
    try:
        run.run()
    finally:
        run.teardown()
    f = run.figures
    print(nemesis.format_figures(f))
    for p in run.problems:
        print("PROBLEM: %s" % p)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(dict(f, problems=run.problems), out, indent=1)
    print(nemesis.summary_line(f))
    if args.keep or run.problems:
        print("mesh-nemesis: node logs and data kept in %s" % base,
              file=sys.stderr)
    else:
        shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if run.problems else 0)


if __name__ == "__main__":
    main()
