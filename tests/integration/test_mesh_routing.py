"""Mail between offices over the mesh, end to end: three `relaymesh serve`
nodes in network namespaces (helpers/netns.py), A, B and C hosting
a.test, b.test and c.test, joined by invite (test_mesh.py's MeshNode and
helpers). Mail for b.test accepted at A or C goes to B over the mesh and
into B's mailboxes exactly once: through RCPT checks against B's node
record, a branch outage (store and forward), a crash of B in the middle
of a transfer, and a user B no longer has (a bounce from the origin).

The tests run in order and build on each other, as test_mesh.py's do.
"""
import json
import os
import subprocess
import time

import pytest

from conftest import BIN, SLOW, SANITIZER_RE
from helpers import netns
from test_mesh import MeshNode, all_alive, join, wait_for

pytestmark = pytest.mark.slow

B_USERS = ["u%d@b.test" % k for k in range(1, 6)]
DOMAINS = {1: "a.test", 2: "b.test", 3: "c.test"}

# Run inside a host's namespace: an SMTP client on the node's 127.0.0.1.
# stdin: {"op": "rcpt"|"send", ...}; stdout: JSON results.
SMTP_SCRIPT = r"""
import json, smtplib, sys
req = json.load(sys.stdin)
s = smtplib.SMTP("127.0.0.1", 2525, timeout=120)
s.ehlo("client.test")
out = []
if req["op"] == "rcpt":
    s.mail(req["from"])
    for r in req["rcpts"]:
        code, msg = s.rcpt(r)
        out.append([code, msg.decode("utf-8", "replace")])
    s.rset()
else:
    for m in req["msgs"]:
        try:
            refused = s.sendmail(m["from"], m["to"], m["data"].encode())
            out.append([250, sorted(refused)])
        except smtplib.SMTPException as e:
            out.append([getattr(e, "smtp_code", 0), str(e)])
            s.rset()
s.quit()
print(json.dumps(out))
"""


class OfficeNode(MeshNode):
    """A MeshNode hosting one office domain, with a short delivery retry
    so that nothing here waits on the normal backoff by accident (the
    mesh kick is what has to bring mail back promptly)."""

    def __init__(self, net, i, base):
        MeshNode.__init__(self, net, i, base)
        self.domains = [DOMAINS[i]]

    def write_conf(self):
        MeshNode.write_conf(self)
        with open(self.conf) as f:
            text = f.read()
        # retry_first stays long (1h): held mail must come back through
        # the mesh kick, not the timer.
        text = text.replace("log_level = debug", "log_level = info")
        with open(self.conf, "w") as f:
            f.write(text)

    def user_add(self, addr):
        r = subprocess.run([BIN, "-c", self.conf, "user", "add", addr],
                           input=b"pw-12345\n", capture_output=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr.decode()

    def user_del(self, addr):
        self.ok("user", "del", addr)

    def smtp(self, req, timeout=300):
        r = self.net.call(self.i, [netns.PYTHON, "-c", SMTP_SCRIPT],
                          input=json.dumps(req).encode(), timeout=timeout)
        assert r.returncode == 0, (r.stderr.decode(), self.tail())
        return json.loads(r.stdout)

    def rcpt(self, rcpts, sender="someone@outside.test"):
        return self.smtp({"op": "rcpt", "from": sender, "rcpts": rcpts})

    def send(self, msgs):
        return self.smtp({"op": "send", "msgs": msgs})

    def json_cli(self, *args):
        r = self.cli(*(list(args) + ["--json"]))
        assert r.returncode == 0, (args, r.stderr.decode())
        return json.loads(r.stdout)

    def queue(self):
        return _items(self.json_cli("queue", "list"), "recipient")

    def mail(self, addr):
        r = self.cli("mailbox", "list", addr, "--json")
        if r.returncode != 0:
            return []
        return _items(json.loads(r.stdout), "uid")


def _items(doc, key):
    """The dicts holding key anywhere in a --json document."""
    found = []

    def walk(v):
        if isinstance(v, dict):
            if key in v:
                found.append(v)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(doc)
    return found


def message(sender, to, msgid, subject="hello", body="hi\r\n", size=0):
    text = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s>\r\n"
            "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\n%s"
            % (sender, ", ".join(to), subject, msgid, body))
    if size:
        line = "x" * 76 + "\r\n"
        text += line * (size // len(line))
    return {"from": sender, "to": to, "data": text}


def msgids(node, users):
    ids = []
    for u in users:
        ids += [m.get("message_id", "") for m in node.mail(u)]
    return ids


@pytest.fixture(scope="module")
def offices(tmp_path_factory):
    netns.require_netns()
    if BIN is None:
        pytest.skip("RELAYMESH_BIN not set")
    net = netns.Net(3)
    net.up()
    base = str(tmp_path_factory.mktemp("offices"))
    nodes = {i: OfficeNode(net, i, base) for i in (1, 2, 3)}
    try:
        for nd in nodes.values():
            nd.start()
        nodes[1].ok("mesh", "create")
        join(nodes, 1, 2)
        join(nodes, 1, 3)
        wait_for(lambda: all_alive(nodes, [1, 2, 3]), 30 * SLOW,
                 "three offices alive")
        for u in B_USERS:
            nodes[2].user_add(u)
        nodes[1].user_add("sender@a.test")
        nodes[3].user_add("sender@c.test")
        yield net, nodes
    finally:
        reports = []
        for nd in nodes.values():
            try:
                if nd.proc is not None:
                    nd.stop()
            except Exception as e:  # report, then clean up the rest
                reports.append(str(e))
            if os.path.exists(nd.log) and SANITIZER_RE.search(nd.logtext()):
                reports.append("%s: sanitizer report:\n%s" % (nd.name,
                                                              nd.tail(8000)))
        net.down()
        assert not reports, "\n".join(reports)


def test_rcpt_checks_the_home_nodes_users(offices):
    net, nodes = offices
    for i in (1, 3):
        # The users spread with B's node record.
        wait_for(lambda: nodes[i].rcpt([B_USERS[-1]])[0][0] == 250,
                 30 * SLOW, "B's users known at %s" % nodes[i].name)
        res = nodes[i].rcpt(["nobody@b.test", "u1@b.test", "u2@B.Test",
                             "postmaster@b.test"])
        assert res[0][0] == 550, res
        assert "5.1.1" in res[0][1] and "User unknown in the mesh" in res[0][1]
        assert [r[0] for r in res[1:]] == [250, 250, 250], res
    # At the home node itself the usual local check answers.
    res = nodes[2].rcpt(["nobody@b.test", "u1@b.test"])
    assert res[0][0] == 550 and res[1][0] == 250, res


def test_bridge_resolves_the_other_offices_users(offices):
    """A mail program at office A finds B's users by name: the bridge's
    directory is this node's users plus those the other offices'
    records announce."""
    pytest.importorskip("msgpack")
    from test_bridge import Bridge
    net, nodes = offices
    st = json.loads(nodes[1].ok("status", "--json"))
    b = Bridge(nodes[1], fp=st["identity"]["fingerprint"],
               prefix=net._argv(1, []), port=4751)
    try:
        b.ok("logon", v=1, user="sender@a.test", password="pw-12345",
             client="test_mesh_routing")
        r = b.ok("resolve", name="u3@b.test")
        assert r["exact"] and [m["address"] for m in r["matches"]] == \
            ["u3@b.test"], r
        r = b.ok("resolve", name="u2")
        assert r["exact"] and [m["address"] for m in r["matches"]] == \
            ["u2@b.test"], r
        r = b.ok("resolve", name="@b.test", partial=True)
        assert not r["exact"]
        assert sorted(m["address"] for m in r["matches"]) == B_USERS, r
        r = b.ok("resolve", name="sender", partial=True)
        assert r["exact"] and sorted(m["address"] for m in r["matches"]) \
            == ["sender@a.test", "sender@c.test"], r
        assert b.ok("resolve", name="nobody@b.test").get("matches", []) == []
    finally:
        b.close()


def test_branch_outage_is_stored_and_forwarded_exactly_once(offices):
    net, nodes = offices
    n_msgs = 200
    before = set(msgids(nodes[2], B_USERS))
    net.isolate(2)
    try:
        batches = {1: [], 3: []}
        want = []
        for k in range(n_msgs):
            origin = 1 if k % 2 == 0 else 3
            mid = "outage-%d@%s" % (k, DOMAINS[origin])
            want.append(mid)
            batches[origin].append(message(
                "sender@%s" % DOMAINS[origin], [B_USERS[k % len(B_USERS)]],
                mid, subject="outage %d" % k))
        for origin, msgs in batches.items():
            res = nodes[origin].send(msgs)
            assert all(r[0] == 250 and r[1] == [] for r in res), res
        # Held at the origins, with a status an administrator can read.
        wait_for(lambda: any("4.4.1 home node n2 of b.test unreachable; "
                             "held for store and forward" in e["last_error"]
                             for e in nodes[1].queue()),
                 30 * SLOW, "mail held at A")
        held = nodes[1].queue()
        assert held and all(e["recipient"].endswith("@b.test")
                            for e in held)
        print("held at A: %s" % held[0]["last_error"])
    finally:
        net.heal(2)
    t0 = time.time()

    def all_there():
        ids = [m for m in msgids(nodes[2], B_USERS) if m not in before]
        return len(set(ids) & {"<%s>" % m for m in want}) == n_msgs
    wait_for(all_there, 120 * SLOW, "all 200 messages at B", step=0.25)
    t_all = time.time() - t0
    wait_for(lambda: not nodes[1].queue() and not nodes[3].queue(),
             30 * SLOW, "A's and C's queues drained")
    ids = [m for m in msgids(nodes[2], B_USERS) if m not in before]
    dups = {m for m in ids if ids.count(m) > 1}
    assert not dups, "delivered more than once: %s" % sorted(dups)[:10]
    assert len(ids) == n_msgs
    print("heal -> last of %d messages in B's mailboxes: %.2f s"
          % (n_msgs, t_all))


def test_unknown_user_at_the_home_node_bounces_to_the_sender(offices):
    net, nodes = offices
    gone = "gone@b.test"
    nodes[2].user_add(gone)
    wait_for(lambda: nodes[1].rcpt([gone])[0][0] == 250, 30 * SLOW,
             "gone@b.test known at A")
    # A keeps the record that names the user while B, cut off, drops it.
    net.isolate(2)
    try:
        nodes[2].user_del(gone)
        res = nodes[1].send([message("sender@a.test", [gone],
                                     "gone-1@a.test", subject="to gone")])
        assert res[0][0] == 250, res
    finally:
        net.heal(2)

    def bounced():
        for m in nodes[1].mail("sender@a.test"):
            text = nodes[1].ok("mailbox", "cat", "sender@a.test",
                               str(m["uid"]))
            if gone in text and "5.1.1" in text and "gone-1@a.test" in text:
                return text
        return None
    text = wait_for(bounced, 60 * SLOW, "a bounce at sender@a.test")
    assert "failed" in text.lower()
    wait_for(lambda: not nodes[1].queue(), 30 * SLOW, "A's queue drained")
    assert "<gone-1@a.test>" not in msgids(nodes[2], B_USERS)


def test_crash_in_the_middle_of_a_transfer_leaves_one_copy(offices):
    net, nodes = offices
    b = nodes[2]
    mid = "big-1@a.test"
    begins = b.logtext().count(b"event=mesh.xfer_begin")
    accepts = b.logtext().count(b"event=mesh.xfer_accept")
    # A slow path to B so that the crash falls inside the transfer.
    net.loss(2, 30, outbound=True, inbound=True)
    try:
        res = nodes[1].send([message("sender@a.test", ["u1@b.test"], mid,
                                     subject="big", size=20 << 20)])
        assert res[0][0] == 250, res
        wait_for(lambda: b.logtext().count(b"event=mesh.xfer_begin") >
                 begins, 60 * SLOW, "the transfer to start at B", step=0.02)
        b.kill9()
    finally:
        net.clear(2)
    crashed = b.logtext()
    stored = crashed.count(b"event=mesh.xfer_accept") > accepts
    b.start()
    wait_for(lambda: "<%s>" % mid in msgids(b, ["u1@b.test"]), 120 * SLOW,
             "the big message at B")
    wait_for(lambda: not nodes[1].queue(), 60 * SLOW, "A's queue drained")
    assert msgids(b, ["u1@b.test"]).count("<%s>" % mid) == 1
    print("crash during transfer: the message was %s at B before the crash"
          % ("stored" if stored else "not yet stored"))
