"""Internet mail of a node without egress ([mesh] egress = no): it goes
over the mesh to a member with egress, which delivers it; the node never
connects to the Internet itself (here: its path to the sink is cut). While
no member with egress is reachable the mail is held (4.4.1) and goes as
soon as one is. Three nodes as in test_mesh_replication.py, node 1
without egress, the SMTP sink on host 4.
"""
import json
import os

import pytest

from conftest import BIN, SLOW, SANITIZER_RE
from helpers import netns
from test_mesh import all_alive, join, wait_for
from test_mesh_replication import (ReplNode, SINK, SINK_SCRIPT, sink_ids)
from test_mesh_routing import message

pytestmark = pytest.mark.slow


class EgressNode(ReplNode):
    egress = True

    def write_conf(self):
        ReplNode.write_conf(self)
        if not self.egress:
            with open(self.conf, "a") as f:
                f.write("egress = no\n")


@pytest.fixture(scope="module")
def mesh3(tmp_path_factory):
    netns.require_netns()
    if BIN is None:
        pytest.skip("RELAYMESH_BIN not set")
    net = netns.Net(4)
    net.up()
    base = str(tmp_path_factory.mktemp("egress"))
    nodes = {i: EgressNode(net, i, base) for i in (1, 2, 3)}
    nodes[1].egress = False
    sink = {"proc": None, "file": os.path.join(base, "sink.txt")}
    try:
        for nd in nodes.values():
            nd.start()
        nodes[1].ok("mesh", "create")
        join(nodes, 1, 2)
        join(nodes, 1, 3)
        wait_for(lambda: all_alive(nodes, [1, 2, 3]), 30 * SLOW,
                 "three nodes alive")
        # Node 1 cannot reach the Internet at all: only the mesh helps.
        net.part(1, SINK)
        sink["proc"] = net.run(SINK, [netns.PYTHON, "-c", SINK_SCRIPT,
                                      sink["file"]])
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


def queue(node):
    r = node.cli("queue", "list", "--json")
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def test_internet_mail_goes_out_through_a_node_with_egress(mesh3):
    net, nodes, sink = mesh3
    n = 5
    msgs = [message("sender@n1.example", ["far%d@internet.test" % k],
                    "egress-%d@test" % k) for k in range(n)]
    res = nodes[1].send(msgs)
    assert all(r[0] == 250 for r in res), res
    want = {"<egress-%d@test>" % k for k in range(n)}
    wait_for(lambda: set(sink_ids(sink)) >= want, 60 * SLOW,
             "the sink received the mail of the node without egress")
    wait_for(lambda: nodes[1].queue_len() == 0, 30 * SLOW,
             "node 1's queue drained")
    got = [i for i in sink_ids(sink) if i in want]
    assert sorted(got) == sorted(want), got
    # Handed over the mesh, delivered by a member with egress.
    relayed = sum(nodes[i].logtext().count(b"event=mesh.xfer_accept")
                  for i in (2, 3))
    assert relayed >= 1
    assert b"internet=1" in nodes[2].logtext() + nodes[3].logtext()


def test_held_while_no_egress_node_is_reachable(mesh3):
    net, nodes, sink = mesh3
    net.part(1, 2)
    net.part(1, 3)
    try:
        wait_for(lambda: nodes[1].states().get("n2") == "dead" and
                 nodes[1].states().get("n3") == "dead", 60 * SLOW,
                 "node 1 sees no member with egress")
        res = nodes[1].send([message("sender@n1.example",
                                     ["held@internet.test"], "held-1@test")])
        assert res[0][0] == 250, res
        wait_for(lambda: any("egress node" in (e.get("last_error") or "")
                             for e in queue(nodes[1])), 30 * SLOW,
                 "the entry held with a 4.4.1 that names the egress node")
        err = [e.get("last_error") for e in queue(nodes[1])]
        assert all(e.startswith("4.4.1") for e in err), err
    finally:
        net.heal(1, 2)
        net.heal(1, 3)
    wait_for(lambda: "<held-1@test>" in sink_ids(sink), 60 * SLOW,
             "delivered once a member with egress is back")
    wait_for(lambda: nodes[1].queue_len() == 0, 30 * SLOW,
             "node 1's queue drained")
