"""[mesh] ack_replicas, end to end: three `relaymesh serve` nodes in
network namespaces (helpers/netns.py), node 1 answering 250 to Internet
mail only once 2 replicas ([mesh] replicas = 2) hold it, and an SMTP
sink on a fourth host (every node's smarthost). A replica cut off makes
node 1 answer 451 4.4.3 after ack_timeout and withdraw the message: no
queue entry, a tombstone at every replica (after the heal), nothing at
the sink. A client that hangs up while it waits gets the same
withdrawal, and the node stays up.
"""
import json
import math
import os
import smtplib
import subprocess
import time

import pytest

from conftest import BIN, SANITIZER_RE, SLOW
from helpers import netns
from test_mesh import all_alive, join, wait_for
from test_mesh_replication import SINK, SINK_SCRIPT, ReplNode, sink_ids
from test_mesh_routing import message

pytestmark = pytest.mark.slow

# Short, but long enough for two acks on a slow (sanitizer) build, and
# for a link that went with a cut to be dialed again (backoff up to two
# probe intervals) and repaired by anti-entropy.
ACK_TIMEOUT = max(4, int(math.ceil(4 * SLOW)))
REFUSED = "4.4.3 Not enough mesh replicas reachable"

# One message over a raw socket; the client hangs up HOLD seconds after
# the final dot, before any reply can have come (node 1 waits for acks).
HANGUP_SCRIPT = r"""
import socket, sys, time
msg, hold = sys.argv[1], float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", 2525), timeout=30)
f = s.makefile("rb")
def reply():
    while True:
        line = f.readline()
        if not line or line[3:4] != b"-":
            return line
reply()
for cmd in (b"EHLO client.test", b"MAIL FROM:<sender@n1.example>",
            b"RCPT TO:<gone@internet.test>", b"DATA"):
    s.sendall(cmd + b"\r\n")
    reply()
s.sendall(("From: <sender@n1.example>\r\nMessage-ID: <%s>\r\n"
           "Subject: hangup\r\n\r\nhi\r\n.\r\n" % msg).encode())
time.sleep(hold)
s.close()
print("closed")
"""


class AckNode(ReplNode):
    grace = "1h"  # no takeover of node 1's mail while a peer is cut off

    def write_conf(self):
        ReplNode.write_conf(self)
        with open(self.conf, "a") as f:
            f.write("ack_replicas = 2\nack_timeout = %ds\n" % ACK_TIMEOUT)

    def send_one(self, msg):
        """(code, text, seconds) for one message over SMTP."""
        t0 = time.time()
        (code, text), = self.send([msg])
        return code, text, time.time() - t0

    def entries(self):
        r = self.cli("queue", "list", "--json")
        assert r.returncode == 0, r.stderr.decode()
        doc = json.loads(r.stdout)
        return doc if isinstance(doc, list) else doc.get("entries", [])

    def live(self):
        rp = self.repl()
        return rp.get("records", 0) - rp.get("tombstones", 0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    netns.require_netns()
    if BIN is None:
        pytest.skip("RELAYMESH_BIN not set")
    net = netns.Net(4)
    net.up()
    base = str(tmp_path_factory.mktemp("ack"))
    nodes = {i: AckNode(net, i, base) for i in (1, 2, 3)}
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


def links_out(node, peers):
    """node has dialed each of peers (its copies go on those links)."""
    lines = node.logtext().splitlines()
    return all(any(("event=mesh.connected peer=n%d " % j).encode() in ln and
                   b"direction=out" in ln for ln in lines) for j in peers)


def heal_and_settle(net, nodes, i):
    net.heal(i)
    wait_for(lambda: all_alive(nodes, [1, 2, 3]), 60 * SLOW,
             "node %d back" % i)


def assert_withdrawn_everywhere(nodes, sink, mid):
    """No node queues it, every replica holds only tombstones, and the
    sink never sees it."""
    for i in (1, 2, 3):
        assert nodes[i].queue_len() == 0, (i, nodes[i].entries())
    wait_for(lambda: nodes[2].live() == 0 and nodes[3].live() == 0,
             90 * SLOW, "the replicas hold tombstones only")
    time.sleep(2 * SLOW)
    assert "<%s>" % mid not in sink_ids(sink)


def test_250_once_both_replicas_hold_it(cluster):
    net, nodes, sink = cluster
    wait_for(lambda: links_out(nodes[1], [2, 3]), 30 * SLOW,
             "node 1's links to its replicas")
    code, text, took = nodes[1].send_one(
        message("sender@n1.example", ["far@internet.test"], "ack-ok@test"))
    print("ack: 250 after %.3f s" % took)
    assert code == 250, text
    rp = nodes[1].repl()
    assert rp.get("ack_waits") == 1 and rp.get("ack_ok") == 1, rp
    assert rp.get("ack_timeouts") == 0 and rp.get("ack_waiting") == 0, rp
    # Both replicas acknowledged before the 250: they hold it now.
    assert nodes[2].live() == 1 and nodes[3].live() == 1
    (e,) = nodes[1].entries()
    assert sorted(e["replicas"].split(",")) == ["n2", "n3"], e
    # Deferred (no sink yet); delivered once the sink is up.
    sink["proc"] = net.run(SINK, [netns.PYTHON, "-c", SINK_SCRIPT,
                                  sink["file"]])
    wait_for(lambda: nodes[1].queue_len() == 0, 60 * SLOW, "delivered")
    wait_for(lambda: nodes[2].live() == 0 and nodes[3].live() == 0,
             30 * SLOW, "tombstones at the replicas")
    assert sink_ids(sink) == ["<ack-ok@test>"]


def test_451_when_a_replica_is_cut_off_and_nothing_is_kept(cluster):
    net, nodes, sink = cluster
    t2 = nodes[2].repl().get("tombstones", 0)
    net.isolate(3)
    # Sent at once: node 3 is not yet suspected, so it is chosen as a
    # replica and its ack never comes.
    code, text, took = nodes[1].send_one(
        message("sender@n1.example", ["far@internet.test"], "ack-cut@test"))
    print("ack: %d after %.3f s (ack_timeout %d s)" % (code, took,
                                                       ACK_TIMEOUT))
    assert code == 451 and REFUSED in text, (code, text)
    assert took >= ACK_TIMEOUT * 0.9, took
    assert took < ACK_TIMEOUT + 10 * SLOW, took
    rp = nodes[1].repl()
    assert rp.get("ack_timeouts") == 1 and rp.get("ack_waiting") == 0, rp
    assert nodes[1].queue_len() == 0
    # Node 2 stored it and acked; the withdrawal made it a tombstone.
    wait_for(lambda: nodes[2].repl().get("tombstones", 0) == t2 + 1,
             30 * SLOW, "the tombstone at node 2")
    heal_and_settle(net, nodes, 3)
    assert_withdrawn_everywhere(nodes, sink, "ack-cut@test")
    # Node 3 learnt of it by repair (a tombstone, never the message).
    wait_for(lambda: nodes[3].repl().get("tombstones", 0) ==
             nodes[2].repl().get("tombstones", 0), 60 * SLOW,
             "the tombstone at node 3")
    assert "event=repl.ack_withdrawn" in nodes[1].logtext().decode()


def test_451_at_once_when_a_replica_is_known_dead(cluster):
    """Fewer live peers than ack_replicas: refused before anything is
    stored, without waiting."""
    net, nodes, sink = cluster
    refused0 = nodes[1].repl().get("ack_refused", 0)
    net.isolate(3)
    try:
        wait_for(lambda: nodes[1].states().get("n3") == "dead", 60 * SLOW,
                 "node 3 declared dead")
        code, text, took = nodes[1].send_one(
            message("sender@n1.example", ["far@internet.test"],
                    "ack-dead@test"))
        print("ack: %d at once after %.3f s" % (code, took))
        assert code == 451 and REFUSED in text, (code, text)
        assert took < ACK_TIMEOUT, took
        assert nodes[1].repl().get("ack_refused") == refused0 + 1
        assert nodes[1].queue_len() == 0
    finally:
        heal_and_settle(net, nodes, 3)
    assert "<ack-dead@test>" not in sink_ids(sink)


def test_client_hangs_up_while_waiting(cluster):
    net, nodes, sink = cluster
    net.isolate(3)
    try:
        r = net.call(1, [netns.PYTHON, "-c", HANGUP_SCRIPT, "ack-gone@test",
                         str(0.5 * SLOW)], timeout=60 * SLOW)
        assert r.returncode == 0, r.stderr.decode()
        wait_for(lambda: nodes[1].repl().get("ack_cancelled", 0) == 1,
                 30 * SLOW, "the wait cancelled")
        wait_for(lambda: nodes[1].repl().get("ack_waiting", 1) == 0,
                 30 * SLOW, "the withdrawal done")
        assert nodes[1].proc.poll() is None, nodes[1].tail()
        assert nodes[1].queue_len() == 0
        # Gone right after the dot: most likely while the message is
        # still being committed, which ends the same way.
        r = net.call(1, [netns.PYTHON, "-c", HANGUP_SCRIPT, "ack-gone2@test",
                         "0"], timeout=60 * SLOW)
        assert r.returncode == 0, r.stderr.decode()
        wait_for(lambda: nodes[1].repl().get("ack_cancelled", 0) == 2,
                 30 * SLOW, "the second wait cancelled")
        wait_for(lambda: nodes[1].repl().get("ack_waiting", 1) == 0,
                 30 * SLOW, "the second withdrawal done")
        assert nodes[1].queue_len() == 0
        # Still serving.
        assert nodes[1].cli("status").returncode == 0
    finally:
        heal_and_settle(net, nodes, 3)
    assert_withdrawn_everywhere(nodes, sink, "ack-gone@test")
    assert "<ack-gone2@test>" not in sink_ids(sink)
    log = nodes[1].logtext().decode()
    assert "event=repl.ack_cancelled" in log
    assert "event=smtp.withdraw" in log


def bridge_to(net, nodes, i):
    """A bridge session to node i from inside its namespace, logged on
    as a new user of it."""
    from test_bridge import PIPE, Bridge
    if not PIPE:
        pytest.skip("BRIDGE_PIPE_BIN not set")
    pytest.importorskip("msgpack")
    user = "mapi@n%d.example" % i
    r = subprocess.run([BIN, "-c", nodes[i].conf, "user", "add", user],
                       input=b"pw-12345\n", capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    fp = nodes[i].status()["identity"]["fingerprint"]
    b = Bridge.__new__(Bridge)
    b.p = net.run(i, [PIPE, "127.0.0.1:4751", fp], stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    b.next_id = 0
    b.logon(user=user, password="pw-12345")
    return b


def bridge_send(b):
    t0 = time.time()
    r = b.call("send", to=[{"name": "", "address": "far@internet.test"}],
               cc=[], subject="bridge", body="hi\r\n", attachments=[])
    return r, time.time() - t0


def test_bridge_send_obeys_ack_replicas(cluster):
    net, nodes, sink = cluster
    b = bridge_to(net, nodes, 1)
    try:
        r, took = bridge_send(b)
        assert r["ok"], r
        print("ack: bridge send ok after %.3f s" % took)
        mid = r["r"]["message_id"]
        wait_for(lambda: mid in sink_ids(sink) or
                 "<%s>" % mid in sink_ids(sink),
                 60 * SLOW, "the bridge's message at the sink")
        at_sink = len(sink_ids(sink))
        timeouts = nodes[1].repl().get("ack_timeouts", 0)
        net.isolate(3)
        try:
            r, took = bridge_send(b)
            print("ack: bridge send refused after %.3f s" % took)
            assert not r["ok"], r
            assert r["err"]["code"] == "try_later", r
            assert "451 4.4.3" in r["err"]["msg"], r
            assert took >= ACK_TIMEOUT * 0.9, took
            assert nodes[1].repl().get("ack_timeouts") == timeouts + 1
            assert nodes[1].queue_len() == 0
        finally:
            heal_and_settle(net, nodes, 3)
    finally:
        b.close()
    assert_withdrawn_everywhere(nodes, sink, "-")
    assert len(sink_ids(sink)) == at_sink


def test_ack_replicas_above_replicas_is_a_config_error(tmp_path):
    if BIN is None:
        pytest.skip("RELAYMESH_BIN not set")
    conf = tmp_path / "bad.conf"
    conf.write_text("[node]\ndatadir = %s\n[mesh]\nreplicas = 1\n"
                    "ack_replicas = 2\n" % (tmp_path / "data"))
    r = subprocess.run([BIN, "serve", "-c", str(conf), "--check"],
                       capture_output=True, timeout=30 * SLOW)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "mesh.ack_replicas (2) is larger than mesh.replicas (1)" in err, \
        err
    assert str(conf) in err


def test_a_node_outside_a_mesh_refuses_mail_it_would_replicate(
        node_factory):
    """ack_replicas > 0 and no mesh: no peer can ever hold a copy, so mail
    for other domains gets 451 4.4.3 at once (nothing stored); mail for
    this node's own mailboxes is not replicated and is accepted."""
    nd = node_factory(conf={"mesh.ack_replicas": 1},
                      users=["alice@localhost"])
    with smtplib.SMTP("127.0.0.1", nd.port, timeout=30 * SLOW) as s:
        s.ehlo("client.test")
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail("alice@localhost", ["joe@far.test"],
                       b"Subject: x\r\n\r\nhi\r\n")
        assert ei.value.smtp_code == 451
        assert REFUSED in ei.value.smtp_error.decode()
        s.rset()
        assert s.sendmail("bob@outside.test", ["alice@localhost"],
                          b"Subject: y\r\n\r\nhi\r\n") == {}
    # The bridge's send goes the same way.
    from test_bridge import PIPE, Bridge
    if not PIPE:
        return
    pytest.importorskip("msgpack")
    b = Bridge(nd)
    try:
        b.logon()
        r = b.call("send", to=[{"name": "", "address": "joe@far.test"}],
                   cc=[], subject="x", body="hi\r\n", attachments=[])
        assert not r["ok"] and r["err"]["code"] == "try_later", r
        assert "451 4.4.3" in r["err"]["msg"], r
        b.ok("send", to=[{"name": "", "address": "alice@localhost"}], cc=[],
             subject="y", body="hi\r\n", attachments=[])
    finally:
        b.close()
    logs = nd.stdout() + nd.stderr()
    assert "event=smtp.reject_unreplicated" in logs
    assert "this node is not in a mesh" in logs
    assert "event=bridge.send_unreplicated" in logs
