"""Queue replication and takeover, end to end: three `relaymesh serve`
nodes in network namespaces (helpers/netns.py) and an SMTP sink on a
fourth host, every node's [delivery] smarthost. Node 1 accepts Internet
mail while the sink is down (deferred), copies it to its two replicas
([mesh] replicas = 2), and is killed with -9. After takeover_grace one
replica claims each entry and delivers it; the sink receives every
message, and the duplicates are counted. When node 1 comes back it
learns of the claims by anti-entropy and delivers nothing again.
"""
import json
import os
import subprocess
import time

import pytest

from conftest import BIN, SLOW, SANITIZER_RE
from helpers import netns
from test_mesh import MeshNode, all_alive, join, wait_for
from test_mesh_routing import SMTP_SCRIPT, message

pytestmark = pytest.mark.slow

SINK = 4

# A minimal SMTP sink: appends each message's Message-ID to a file.
SINK_SCRIPT = r"""
import socket, sys, threading
out = sys.argv[1]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 2525)); srv.listen(64)
lock = threading.Lock()
def serve(c):
    f = c.makefile("rb")
    c.sendall(b"220 sink ESMTP\r\n")
    data = None
    while True:
        line = f.readline()
        if not line:
            break
        if data is not None:
            if line == b".\r\n":
                mid = [l for l in data if l.lower().startswith(b"message-id:")]
                with lock, open(out, "ab") as o:
                    o.write((mid[0].split(b":", 1)[1].strip() if mid
                             else b"?") + b"\n")
                data = None
                c.sendall(b"250 2.0.0 ok\r\n")
            else:
                data.append(line)
            continue
        v = line[:4].upper()
        if v in (b"EHLO", b"HELO"):
            c.sendall(b"250-sink\r\n250 8BITMIME\r\n")
        elif v == b"DATA":
            data = []
            c.sendall(b"354 go\r\n")
        elif v == b"QUIT":
            c.sendall(b"221 bye\r\n")
            break
        else:
            c.sendall(b"250 ok\r\n")
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class ReplNode(MeshNode):
    grace = "3s"

    def write_conf(self):
        MeshNode.write_conf(self)
        with open(self.conf) as f:
            text = f.read()
        text = text.replace("log_level = debug", "log_level = info")
        text = text.replace("[delivery]\n",
                            "[delivery]\nsmarthost = [%s]:2525\n"
                            % self.net.addr(SINK))
        text = text.replace("retry_first = 1h", "retry_first = 2s\n"
                            "retry_max = 2s")
        text += "replicas = 2\ntakeover_grace = %s\n" % self.grace
        with open(self.conf, "w") as f:
            f.write(text)

    def send(self, msgs):
        r = self.net.call(self.i, [netns.PYTHON, "-c", SMTP_SCRIPT],
                          input=json.dumps({"op": "send", "msgs": msgs})
                          .encode(), timeout=300)
        assert r.returncode == 0, (r.stderr.decode(), self.tail())
        return json.loads(r.stdout)

    def status(self):
        r = self.cli("status", "--json")
        if r.returncode != 0:
            return {}
        return json.loads(r.stdout)

    def repl(self):
        st = self.status()
        return (st.get("mesh") or {}).get("replication") or {}

    def queue_len(self):
        r = self.cli("queue", "list", "--json")
        if r.returncode != 0:
            return -1
        doc = json.loads(r.stdout)
        return len(doc if isinstance(doc, list) else doc.get("entries", []))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    netns.require_netns()
    if BIN is None:
        pytest.skip("RELAYMESH_BIN not set")
    net = netns.Net(4)
    net.up()
    base = str(tmp_path_factory.mktemp("repl"))
    nodes = {i: ReplNode(net, i, base) for i in (1, 2, 3)}
    sink = {"proc": None, "file": os.path.join(base, "sink.txt")}
    try:
        for nd in nodes.values():
            nd.start()
        nodes[1].ok("mesh", "create")
        join(nodes, 1, 2)
        join(nodes, 1, 3)
        wait_for(lambda: all_alive(nodes, [1, 2, 3]), 30 * SLOW,
                 "three nodes alive")
        yield net, nodes, sink
    finally:
        reports = []
        if sink["proc"] is not None:
            sink["proc"].kill()
            sink["proc"].wait()
        for nd in nodes.values():
            try:
                if nd.proc is not None and nd.proc.poll() is None:
                    nd.stop()
            except Exception as e:
                reports.append(str(e))
            if os.path.exists(nd.log) and SANITIZER_RE.search(nd.logtext()):
                reports.append("%s: sanitizer report:\n%s" % (nd.name,
                                                              nd.tail(8000)))
        net.down()
        assert not reports, "\n".join(reports)


def sink_ids(sink):
    if not os.path.exists(sink["file"]):
        return []
    with open(sink["file"], "rb") as f:
        return [l.strip().decode() for l in f if l.strip()]


def test_replica_takes_over_when_the_accepting_node_dies(cluster):
    net, nodes, sink = cluster
    n = 30
    msgs = [message("sender@n1.example", ["dest%d@internet.test" % k],
                    "repl-%d@test" % k, size=2000 if k % 5 == 0 else 0)
            for k in range(n)]
    res = nodes[1].send(msgs)
    assert all(r[0] == 250 for r in res), res
    # Every message is durable on its two replicas.
    wait_for(lambda: nodes[1].repl().get("acks", 0) >= 2 * n, 30 * SLOW,
             "replicas acknowledged")
    assert nodes[1].queue_len() == n
    t0 = time.time()
    nodes[1].kill9()
    sink["proc"] = net.run(SINK, [netns.PYTHON, "-c", SINK_SCRIPT,
                                  sink["file"]])
    wait_for(lambda: len(set(sink_ids(sink))) >= n, 90 * SLOW,
             "the sink received every message")
    took = time.time() - t0
    time.sleep(3)
    ids = sink_ids(sink)
    want = {"<repl-%d@test>" % k for k in range(n)}
    dups = len(ids) - len(set(ids))
    takeovers = sum(nodes[i].repl().get("takeovers", 0) for i in (2, 3))
    print("takeover: messages=%d received=%d lost=%d duplicates=%d "
          "takeovers=%d seconds=%.1f" % (n, len(set(ids)),
                                         len(want - set(ids)), dups,
                                         takeovers, took))
    assert set(ids) >= want
    assert dups == 0
    assert takeovers == n
    # The replicas' queues drain.
    wait_for(lambda: nodes[2].queue_len() == 0 and nodes[3].queue_len() == 0,
             30 * SLOW, "replica queues empty")


def test_returning_origin_learns_of_the_claims_and_sends_nothing(cluster):
    net, nodes, sink = cluster
    before = sink_ids(sink)
    nodes[1].start()
    wait_for(lambda: all_alive(nodes, [1, 2, 3]), 30 * SLOW,
             "node 1 back")
    wait_for(lambda: nodes[1].queue_len() == 0, 60 * SLOW,
             "node 1 dropped the entries a replica delivered")
    time.sleep(3)
    after = sink_ids(sink)
    print("rejoin: sink before=%d after=%d stood_down=%d" % (
        len(before), len(after), nodes[1].repl().get("stood_down", 0)))
    assert after == before


def test_rejoin_after_a_long_outage_catches_up_by_anti_entropy(cluster):
    """Node 3 is cut off while every entry it holds for node 2 changes
    (delivered: tombstones); after the heal it catches up through the
    per-origin summary and range-based reconciliation, not a full copy.
    Its takeover grace is long here, so that it does not claim the mail
    of the nodes it cannot see (that is the partition race)."""
    net, nodes, sink = cluster
    n = 300
    sink["proc"].kill()
    sink["proc"].wait()
    sink["proc"] = None
    nodes[3].stop()
    nodes[3].grace = "1h"
    nodes[3].start()
    wait_for(lambda: all_alive(nodes, [1, 2, 3]), 30 * SLOW, "node 3 back")
    acks0 = nodes[2].repl().get("acks", 0)
    tomb0 = nodes[3].repl().get("tombstones", 0)
    msgs = [message("sender@n2.example", ["far%d@internet.test" % k],
                    "rejoin-%d@test" % k, size=4000) for k in range(n)]
    res = nodes[2].send(msgs)
    assert all(r[0] == 250 for r in res), res
    size = sum(len(m["data"]) for m in msgs)
    wait_for(lambda: nodes[2].repl().get("acks", 0) >= acks0 + 2 * n,
             60 * SLOW, "replicas acknowledged")
    net.isolate(3)
    sink["proc"] = net.run(SINK, [netns.PYTHON, "-c", SINK_SCRIPT,
                                  sink["file"]])
    wait_for(lambda: nodes[2].queue_len() == 0, 120 * SLOW,
             "node 2 delivered everything")
    time.sleep(2)
    assert nodes[3].repl().get("tombstones", 0) == tomb0
    b2 = nodes[2].repl().get("antientropy_bytes", 0)
    b3 = nodes[3].repl().get("antientropy_bytes", 0)
    t0 = time.time()
    net.heal(3)
    wait_for(lambda: nodes[3].repl().get("tombstones", 0) >= tomb0 + n,
             120 * SLOW, "node 3 caught up")
    took = time.time() - t0
    sent = (nodes[2].repl().get("antientropy_bytes", 0) - b2 +
            nodes[3].repl().get("antientropy_bytes", 0) - b3)
    print("rejoin: entries=%d entries_bytes=%d antientropy_bytes=%d "
          "ratio=%.3f seconds=%.1f" % (n, size, sent, sent / size, took))
    assert sent < size
    ids = sink_ids(sink)
    assert len(ids) == len(set(ids)), "duplicates at the sink"


def test_large_messages_reach_their_replicas_over_a_slow_link(cluster):
    """Three 8 MiB messages copied to two replicas over a 40 Mbit/s link:
    48 MiB to send, far more than a link may queue (16 MiB). The copies
    are paced as the link drains instead of filling its queue, which
    would close the link and start over for ever."""
    net, nodes, sink = cluster
    if sink["proc"] is not None:
        sink["proc"].kill()
        sink["proc"].wait()
        sink["proc"] = None
    wait_for(lambda: all_alive(nodes, [1, 2, 3]), 30 * SLOW, "all alive")
    acks0 = nodes[1].repl().get("acks", 0)
    log0 = len(nodes[1].logtext())
    n, size = 3, 8 << 20
    msgs = [message("sender@n1.example", ["big%d@internet.test" % k],
                    "big-%d@test" % k, size=size) for k in range(n)]
    net.rate(1, 40)
    try:
        t0 = time.time()
        res = nodes[1].send(msgs)
        assert all(r[0] == 250 for r in res), res
        wait_for(lambda: nodes[1].repl().get("acks", 0) >= acks0 + 2 * n,
                 120 * SLOW, "both replicas hold every large message")
        took = time.time() - t0
    finally:
        net.rate(1, None)
    log = nodes[1].logtext()[log0:]
    print("large: messages=%d size=%d replicas=2 seconds=%.1f" %
          (n, size, took))
    assert b"does not read" not in log, log[-3000:].decode("utf-8", "replace")
    sink["proc"] = net.run(SINK, [netns.PYTHON, "-c", SINK_SCRIPT,
                                  sink["file"]])
    wait_for(lambda: nodes[1].queue_len() == 0, 120 * SLOW,
             "node 1 delivered the large messages")


def test_queue_delete_reaches_the_replicas(cluster):
    """`relaymesh queue delete` at the origin ends the message on its
    replicas too (their record becomes a tombstone), so no replica can
    take it over and deliver what the administrator removed."""
    net, nodes, sink = cluster
    if sink["proc"] is not None:
        sink["proc"].kill()
        sink["proc"].wait()
        sink["proc"] = None
    acks0 = nodes[1].repl().get("acks", 0)
    tomb0 = {i: nodes[i].repl().get("tombstones", 0) for i in (2, 3)}
    res = nodes[1].send([message("sender@n1.example", ["gone@internet.test"],
                                 "deleted-1@test")])
    assert res[0][0] == 250, res
    wait_for(lambda: nodes[1].repl().get("acks", 0) >= acks0 + 2,
             30 * SLOW, "both replicas hold the message")
    q = json.loads(nodes[1].ok("queue", "list", "--json"))
    assert len(q) == 1, q
    nodes[1].ok("queue", "delete", q[0]["id"])
    assert nodes[1].queue_len() == 0
    wait_for(lambda: all(nodes[i].repl().get("tombstones", 0) >= tomb0[i] + 1
                         for i in (2, 3)),
             30 * SLOW, "the replicas' records are tombstones")
    sink["proc"] = net.run(SINK, [netns.PYTHON, "-c", SINK_SCRIPT,
                                  sink["file"]])


def test_origin_cut_off_learns_of_the_claims_before_it_delivers(cluster):
    """Node 1 is cut off (alive, not restarted) with Internet mail queued;
    its replicas see it dead, take the mail over and deliver it. When the
    partition heals node 1 retries at once, but it holds back mail that
    is replicated until it has reconciled with a replica since the link
    came back: it learns of the claims and sends nothing twice."""
    net, nodes, sink = cluster
    if sink["proc"] is not None:
        sink["proc"].kill()
        sink["proc"].wait()
        sink["proc"] = None
    if nodes[3].grace != ReplNode.grace:
        # The rejoin test gave node 3 a long grace: it must take over too.
        nodes[3].stop()
        nodes[3].grace = ReplNode.grace
        nodes[3].start()
    wait_for(lambda: all_alive(nodes, [1, 2, 3]), 30 * SLOW, "all alive")
    n = 10
    acks0 = nodes[1].repl().get("acks", 0)
    msgs = [message("sender@n1.example", ["cut%d@internet.test" % k],
                    "cut-%d@test" % k) for k in range(n)]
    res = nodes[1].send(msgs)
    assert all(r[0] == 250 for r in res), res
    wait_for(lambda: nodes[1].repl().get("acks", 0) >= acks0 + 2 * n,
             30 * SLOW, "replicas acknowledged")
    want = {"<cut-%d@test>" % k for k in range(n)}
    net.isolate(1)
    try:
        sink["proc"] = net.run(SINK, [netns.PYTHON, "-c", SINK_SCRIPT,
                                      sink["file"]])
        wait_for(lambda: set(sink_ids(sink)) >= want, 90 * SLOW,
                 "the replicas took over and delivered")
    finally:
        net.heal(1)
    # What an administrator does when the link is back: retry now. The
    # mail must still wait for the repair that brings the claims.
    nodes[1].ok("queue", "retry", "--all")
    wait_for(lambda: nodes[1].queue_len() == 0, 90 * SLOW,
             "node 1 stood down")
    time.sleep(3)
    got = [i for i in sink_ids(sink) if i in want]
    print("cut off: messages=%d received=%d duplicates=%d" %
          (n, len(set(got)), len(got) - len(set(got))))
    assert sorted(got) == sorted(want)
