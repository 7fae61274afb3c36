"""The MAPI bridge on a live node ([bridge] listen), spoken directly:
tests/tools/bridge_pipe runs the channel (Noise handshake, the node's key
pinned, frames) and this file speaks the protocol of bridge/README.md in
msgpack. The Windows DLL's own tests (test_mapi_wine.py) go through the
same service under Wine."""
import email
import email.policy
import hashlib
import os
import struct
import subprocess
import time

import pytest

from conftest import SLOW

msgpack = pytest.importorskip("msgpack")

PIPE = os.environ.get("BRIDGE_PIPE_BIN")
PASSWORD = "s3cret-pw"
ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"


def fingerprint(node):
    return node.status()["identity"]["fingerprint"]


class Bridge:
    """One channel to a node's bridge (one session)."""

    def __init__(self, node, fp=None, hangup=False, prefix=(), port=None):
        """prefix: argv to run the channel under (a namespace's `ip netns
        exec NS`); port: the bridge port when node has no bridge_port."""
        if not PIPE:
            pytest.skip("BRIDGE_PIPE_BIN not set")
        self.p = subprocess.Popen(
            list(prefix) +
            [PIPE, "127.0.0.1:%d" % (port or node.bridge_port),
             fp or fingerprint(node)]
            + (["--hangup"] if hangup else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.next_id = 0

    def raw(self, body):
        """Send one request body (bytes); the response as a dict, or None
        when the channel ended."""
        self.p.stdin.write(struct.pack(">I", len(body)) + body)
        self.p.stdin.flush()
        h = self.p.stdout.read(4)
        if len(h) < 4:
            return None
        n = struct.unpack(">I", h)[0]
        return msgpack.unpackb(self.p.stdout.read(n), raw=False)

    def call(self, op, **a):
        self.next_id += 1
        r = self.raw(msgpack.packb({"id": self.next_id, "op": op, "a": a},
                                   use_bin_type=True))
        assert r is not None, "the node closed the channel on %s" % op
        assert r["id"] == self.next_id, r
        return r

    def ok(self, op, **a):
        r = self.call(op, **a)
        assert r["ok"], (op, r)
        return r.get("r", {})

    def err(self, op, **a):
        r = self.call(op, **a)
        assert not r["ok"], (op, r)
        return r["err"]["code"]

    def logon(self, user=ALICE, password=PASSWORD):
        return self.ok("logon", v=1, user=user, password=password,
                       client="test_bridge")

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            return self.p.wait(10 * SLOW)
        finally:
            self.p.stdout.close()
            self.p.stderr.close()


@pytest.fixture
def bnode(node_factory):
    return node_factory(users=(ALICE, BOB, CAROL, "alicia@localhost"),
                        conf={"auth.fail_delay": 0})


@pytest.fixture
def bridge(bnode):
    made = []

    def make(**kw):
        b = Bridge(bnode, **kw)
        made.append(b)
        return b
    yield make
    for b in made:
        b.close()


def test_status_and_banner_show_the_bridge(bnode):
    st = bnode.status()
    assert st["bridge"]["listen"] == "127.0.0.1:%d" % bnode.bridge_port
    assert st["bridge"]["fingerprint"] == st["identity"]["fingerprint"]
    out = bnode.cli_ok("status").stdout.decode()
    assert "bridge      127.0.0.1:%d" % bnode.bridge_port in out
    assert ("bridge     127.0.0.1:%d" % bnode.bridge_port).encode() in \
        open(bnode.logs[-1][0], "rb").read()


def test_wrong_fingerprint_is_refused_by_the_client(bnode):
    b = Bridge(bnode, fp="AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA")
    b.p.stdin.close()
    assert b.p.wait(10 * SLOW) == 2
    assert b"does not match the fingerprint" in b.p.stderr.read()
    b.p.stdout.close()
    b.p.stderr.close()


def test_logon(bridge, bnode):
    b = bridge()
    # ping works before logon; nothing else does
    assert b.ok("ping") == {}
    assert b.err("folders") == "not_logged_in"
    assert b.err("logon", v=1, user=ALICE, password="wrong") == \
        "login_failure"
    assert b.err("logon", v=1, user="nobody@localhost",
                 password=PASSWORD) == "login_failure"
    r = b.logon(user="alice@LOCALHOST")
    assert r["v"] == 1
    assert r["user"] == ALICE
    assert r["node"] == "mx.test.example"
    assert r["max_message"] == 26214400
    roles = {f["role"]: f for f in r["folders"]}
    assert set(roles) == {"inbox", "sent", "drafts"}
    assert roles["inbox"]["total"] == 0
    assert b.err("logon", v=1, user=ALICE, password=PASSWORD) == \
        "bad_request"
    st = bnode.status()["bridge"]
    assert st["logons"] == 1 and st["logon_failures"] == 2
    # logoff answers, then the node ends the channel
    assert b.ok("logoff") == {}
    assert b.raw(msgpack.packb({"id": 99, "op": "ping", "a": {}})) is None


def test_failed_logons_lock_out_the_address(node_factory):
    n = node_factory(conf={"auth.fail_delay": 0, "auth.max_failures_ip": 3})
    b = Bridge(n)
    for _ in range(3):
        assert b.err("logon", v=1, user=ALICE, password="x") == \
            "login_failure"
    b.close()
    b = Bridge(n)
    # the address is over its limit: refused before any password check
    assert b.err("logon", v=1, user=ALICE, password=PASSWORD) == "try_later"
    b.close()
    assert "kind=auth_failures_ip service=bridge" in n.stderr(limit=0)


def _attachments():
    small = bytes(range(256)) * 4
    big = os.urandom(700 * 1024)  # past the inline limit: uploaded
    return small, big


def _send(b, to, subject, body, atts=(), cc=(), **extra):
    return b.ok("send", to=[{"name": "", "address": a} for a in to],
                cc=[{"name": "", "address": a} for a in cc],
                subject=subject, body=body, attachments=list(atts), **extra)


def test_send_read_fetch_mark_delete(bridge, bnode):
    small, big = _attachments()
    a = bridge()
    a.logon()
    # the large one goes up in two chunks first
    up = a.ok("upload", upload=0, offset=0, data=big[:400 * 1024])
    up = a.ok("upload", upload=up["upload"], offset=400 * 1024,
              data=big[400 * 1024:])
    assert up["size"] == len(big)
    subject = "Grüße – Ελληνικά 日本語"
    body = "Bonjour Bob,\r\nvoilà le rapport: 5 €.\r\n"
    r = _send(a, [BOB], subject, body, cc=[CAROL], atts=[
        {"name": "table.bin", "type": "application/octet-stream",
         "data": small},
        {"name": "résumé.pdf", "type": "", "upload": up["upload"]}])
    assert r["message_id"].startswith("<") and r["id"] > 0
    # an upload is used up by the send that names it
    assert a.err("upload", upload=up["upload"], offset=len(big),
                 data=b"x") == "bad_request"

    box = bnode.wait_mailbox(BOB, 1)
    raw = bnode.cat(BOB, box[0]["uid"])
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert m["Subject"] == subject
    assert m["From"].addresses[0].addr_spec == ALICE
    assert m["Cc"].addresses[0].addr_spec == CAROL
    assert m["Message-ID"] == r["message_id"]
    assert m["Date"] is not None
    assert b"(Authenticated sender: alice@localhost)" in raw
    parts = [p for p in m.iter_attachments()]
    assert [p.get_filename() for p in parts] == ["table.bin", "résumé.pdf"]
    assert parts[0].get_content() == small
    assert parts[1].get_content() == big
    assert m.get_body(("plain",)).get_content().replace("\r\n", "\n") == \
        body.replace("\r\n", "\n")
    assert len(bnode.wait_mailbox(CAROL, 1)) == 1
    # the sender's copy, in Sent
    sent = bnode.mailbox("alice@localhost/Sent")
    assert len(sent) == 1 and sent[0]["subject"] == subject

    b = bridge()
    r = b.logon(user=BOB)
    inbox = {f["role"]: f for f in r["folders"]}["inbox"]
    assert (inbox["total"], inbox["unread"]) == (1, 1)
    ids = b.ok("find", folder="inbox", limit=10)["ids"]
    assert len(ids) == 1
    assert b.ok("find", folder="inbox", limit=10, after=ids[0]).get(
        "ids", []) == []
    msg = b.ok("read", folder="inbox", id=ids[0], peek=True)
    assert msg["subject"] == subject
    assert msg["flags"] & 1 == 0  # peek: still unread
    assert msg["flags"] & 64  # has attachments
    assert msg["from"]["address"] == ALICE
    assert [x["address"] for x in msg["to"]] == [BOB]
    assert [x["address"] for x in msg["cc"]] == [CAROL]
    assert msg["body"].replace("\r\n", "\n") == body.replace("\r\n", "\n")
    atts = msg["attachments"]
    assert [(x["name"], x["size"]) for x in atts] == \
        [("table.bin", len(small)), ("résumé.pdf", len(big))]
    assert atts[1]["type"] == "application/pdf"
    # chunked fetch, byte-exact
    got, off = b"", 0
    while True:
        c = b.ok("fetch_attachment", folder="inbox", id=ids[0], index=1,
                 offset=off, max=300 * 1024)
        got += c.get("data", b"")
        off += len(c.get("data", b""))
        assert c["total"] == len(big)
        if c["last"]:
            break
    assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
    assert b.err("fetch_attachment", folder="inbox", id=ids[0], index=2,
                 offset=0, max=10) == "attachment_not_found"
    c = b.ok("fetch_body", folder="inbox", id=ids[0], offset=0, max=10)
    assert c["data"] == body.encode()[:10] and not c["last"]
    # envelope only: no body
    env = b.ok("read", folder="inbox", id=ids[0], envelope_only=True,
               peek=True)
    assert "body" not in env and env["subject"] == subject
    # headers on request
    h = b.ok("read", folder="inbox", id=ids[0], headers=True, peek=True)
    assert "Message-ID:" in h["headers"]
    # a read without peek marks it read
    assert b.ok("read", folder="inbox", id=ids[0])["flags"] & 1
    assert b.ok("find", folder="inbox", limit=10, unread_only=True).get(
        "ids", []) == []
    assert b.ok("mark", folder="inbox", id=ids[0], read=False) == {}
    assert b.ok("find", folder="inbox", limit=10,
                unread_only=True)["ids"] == ids
    assert b.ok("delete", folder="inbox", id=ids[0]) == {}
    assert b.ok("find", folder="inbox", limit=10).get("ids", []) == []
    assert b.err("delete", folder="inbox", id=ids[0]) == "invalid_message"
    assert b.err("read", folder="inbox", id=ids[0]) == "invalid_message"
    assert b.err("find", folder="nope", limit=1) == "folder_not_found"


def test_send_refusals(bridge, node_factory):
    n = node_factory(users=(ALICE, BOB),
                     conf={"limits.max_message_size": "200000",
                           "auth.fail_delay": 0})
    a = Bridge(n)
    try:
        a.logon()
        assert a.err("send", to=[{"name": "", "address": "ghost@localhost"}],
                     subject="x", body="x") == "unknown_recipient"
        assert a.err("send", to=[{"name": "Bob", "address": ""}],
                     subject="x", body="x") == "unknown_recipient"
        assert a.err("send", to=[{"name": "", "address": BOB}],
                     **{"from": {"name": "", "address": "boss@localhost"}},
                     subject="x", body="x") == "access_denied"
        assert a.err("send", subject="x", body="x") == "bad_request"
        big = os.urandom(190 * 1024)
        assert a.err("send", to=[{"name": "", "address": BOB}],
                     subject="big", body="x",
                     attachments=[{"name": "a.bin", "type": "",
                                   "data": big}]) == "too_big"
        # uploads stop at the node's limit too
        up = a.ok("upload", upload=0, offset=0, data=b"x" * 150000)
        assert a.err("upload", upload=up["upload"], offset=150000,
                     data=b"x" * 60000) == "too_big"
        # nothing was delivered or queued by any of these
        assert n.mailbox(BOB) == []
        assert n.queue() == []
        # and the session still works
        _send(a, [BOB], "small", "fine")
        assert len(n.wait_mailbox(BOB, 1)) == 1
    finally:
        a.close()


def test_save_draft_and_replace(bridge, bnode):
    a = bridge()
    a.logon()
    r1 = a.ok("save", folder="drafts", to=[{"name": "Bob", "address": BOB}],
              bcc=[{"name": "", "address": CAROL}], subject="draft 1",
              body="first")
    r2 = a.ok("save", folder="drafts", id=r1["id"], subject="draft 2",
              body="second", to=[{"name": "", "address": BOB}])
    assert r2["id"] != r1["id"]
    ids = a.ok("find", folder="drafts", limit=10)["ids"]
    assert ids == [r2["id"]]
    d = a.ok("read", folder="drafts", id=r2["id"])
    assert d["subject"] == "draft 2" and d["flags"] & 8
    assert a.err("save", folder="drafts", id=r1["id"], subject="x") == \
        "invalid_message"
    assert a.err("save", folder="inbox", subject="x") == "access_denied"
    drafts = bnode.mailbox("alice@localhost/Drafts")
    assert [m["subject"] for m in drafts] == ["draft 2"]
    assert bnode.mailbox(BOB) == []  # a draft is never sent


def test_resolve(bridge):
    a = bridge()
    a.logon()
    r = a.ok("resolve", name=BOB)
    assert r["exact"] and [m["address"] for m in r["matches"]] == [BOB]
    r = a.ok("resolve", name="bob")
    assert r["exact"] and [m["address"] for m in r["matches"]] == [BOB]
    r = a.ok("resolve", name="SMTP:carol@localhost")
    assert [m["address"] for m in r["matches"]] == [CAROL]
    r = a.ok("resolve", name="ali", partial=True)
    assert not r["exact"]
    assert sorted(m["address"] for m in r["matches"]) == \
        ["alice@localhost", "alicia@localhost"]
    r = a.ok("resolve", name="ali")
    assert r.get("matches", []) == []
    assert a.ok("resolve", name="nobody", partial=True).get(
        "matches", []) == []


def test_bad_requests(bridge, bnode):
    b = bridge()
    # an unknown op with a readable id: unsupported, the channel lives on
    r = b.raw(msgpack.packb({"id": 7, "op": "teleport", "a": {}}))
    assert r["id"] == 7 and r["err"]["code"] == "unsupported"
    r = b.raw(msgpack.packb({"id": 8, "op": "find", "a": {"folder": 3, "limit": 1}}))
    assert r["err"]["code"] == "bad_request" and "folder" in r["err"]["msg"]
    b.logon()
    assert b.err("changes", folder="inbox", since=0, limit=1) == \
        "unsupported"
    # no readable id: the node ends the channel
    assert b.raw(msgpack.packb([1, 2, 3])) is None
    assert b.close() == 1
    # and goes on serving others
    c = bridge()
    c.logon(user=BOB)
    assert c.ok("ping") == {}


def _logon_body(i, password):
    return msgpack.packb({"id": i, "op": "logon",
                          "a": {"v": 1, "user": ALICE, "password": password}})


def test_hanging_up_during_the_check_still_counts(node_factory):
    """A client that sends a wrong password and leaves before the answer
    is counted like any failure: leaving is no way to guess for free."""
    n = node_factory(conf={"auth.fail_delay": 0, "auth.max_failures_ip": 3})
    for i in range(3):
        b = Bridge(n, hangup=True)
        b.p.stdin.write(struct.pack(">I", len(_logon_body(1, "x"))) +
                        _logon_body(1, "x"))
        b.p.stdin.close()
        assert b.p.wait(10 * SLOW) == 0
        b.p.stdout.close()
        b.p.stderr.close()
        # one at a time (checks in flight are bounded on their own)
        deadline = time.time() + 10 * SLOW
        while n.status()["bridge"]["logon_failures"] < i + 1 and \
                time.time() < deadline:
            time.sleep(0.05)
        assert n.status()["bridge"]["logon_failures"] == i + 1
    b = Bridge(n)
    assert b.err("logon", v=1, user=ALICE, password=PASSWORD) == "try_later"
    b.close()


def test_parallel_logons_do_not_pass_the_limits(node_factory):
    """Guesses sent at once on many channels are bounded by the failure
    limit plus the few checks allowed in flight."""
    n = node_factory(conf={"auth.fail_delay": 0, "auth.max_failures_ip": 3,
                           "auth.max_failures_user": 3})
    chans = [Bridge(n) for _ in range(12)]
    for i, b in enumerate(chans):
        body = _logon_body(i + 1, "wrong-%d" % i)
        b.p.stdin.write(struct.pack(">I", len(body)) + body)
        b.p.stdin.flush()
    codes = []
    for b in chans:
        h = b.p.stdout.read(4)
        if len(h) == 4:
            r = msgpack.unpackb(b.p.stdout.read(struct.unpack(">I", h)[0]))
            codes.append(r["err"]["code"])
        else:
            codes.append("closed")
        b.close()
    checked = codes.count("login_failure")
    assert checked <= 3 + 4, codes  # the limit + BRIDGE_LOGONS_PER_IP
    assert codes.count("try_later") >= 12 - 7, codes


def test_read_a_message_with_a_huge_header_block(bnode, bridge):
    """A header block past 64 KiB (what read sends of it) is cut, not an
    error."""
    import smtplib
    filler = "".join("X-Filler-%04d: %s\r\n" % (i, "y" * 60)
                     for i in range(1200))
    msg = ("From: <%s>\r\nTo: <%s>\r\nSubject: long head\r\n%s\r\nbody\r\n"
           % (ALICE, BOB, filler))
    with smtplib.SMTP("127.0.0.1", bnode.port) as s:
        s.sendmail(ALICE, [BOB], msg.encode())
    bnode.wait_mailbox(BOB, 1)
    b = bridge()
    b.logon(user=BOB)
    ids = b.ok("find", folder="inbox", limit=1)["ids"]
    m = b.ok("read", folder="inbox", id=ids[0], headers=True)
    assert 60000 < len(m["headers"].encode()) <= 65536
    assert m["subject"] == "long head"
