"""Restarts, signals, listeners and the control socket."""
import json
import os
import random
import signal
import socket
import struct
import time

import pytest

from conftest import SLOW, free_port
from helpers.smtp import Conn, make_message, send_mail, split_trace

SENDER = "s@client.test.example"


def test_state_survives_restart(node):
    msgs = []
    for i in range(3):
        m, mid = make_message(subject="keep %d" % i)
        assert send_mail(node.port, SENDER, ["alice@localhost"], m)[0].code \
            == 250
        msgs.append(m)
    m, _ = make_message(to="far@remote.example.net")
    assert send_mail(node.port, SENDER, ["far@remote.example.net"], m)[0] \
        .code == 250
    box = node.wait_mailbox("alice@localhost", 3)
    q = node.queue()
    assert len(q) == 1
    node.cli_ok("queue", "hold", q[0]["id"])
    before = {e["uid"]: node.cat("alice@localhost", e["uid"]) for e in box}

    node.restart()
    box2 = node.mailbox("alice@localhost")
    assert [e["uid"] for e in box2] == sorted(before)
    for e in box2:
        assert node.cat("alice@localhost", e["uid"]) == before[e["uid"]]
    q2 = node.queue()
    assert [(e["id"], e["state"]) for e in q2] == [(q[0]["id"], "hold")]
    assert sorted(u["address"] for u in node.cli_json("user", "list")) == \
        ["alice@localhost", "bob@localhost"]
    # UIDs keep growing after a restart (IMAP UID rules, RFC 3501 §2.3.1.1)
    m, mid = make_message(subject="after restart")
    assert send_mail(node.port, SENDER, ["alice@localhost"], m)[0].code == 250
    box3 = node.wait_mailbox("alice@localhost", 4)
    new = [e for e in box3 if e["message_id"].strip("<>") == mid]
    assert new and new[0]["uid"] > max(before), box3
    # queue ids stay unique too
    m, _ = make_message(to="far2@remote.example.net")
    assert send_mail(node.port, SENDER, ["far2@remote.example.net"], m)[0] \
        .code == 250
    ids = [e["id"] for e in node.queue()]
    assert len(ids) == len(set(ids)) == 2


def test_sighup_does_not_stop_the_node(node):
    node.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert node.running(), node.stderr()
    with Conn(node.port) as c:
        assert c.cmd("NOOP").code == 250
    assert node.status()["pid"] == node.pid


def test_sigterm_without_sessions_is_quick(node):
    t0 = time.monotonic()
    node.stop()
    assert time.monotonic() - t0 < 3 * SLOW


def test_second_node_on_same_datadir_refused(node, tmp_path):
    import subprocess
    from conftest import BIN
    other = tmp_path / "other.conf"
    port = free_port()
    other.write_text(open(node.conf).read().replace(
        "127.0.0.1:%d" % node.port, "127.0.0.1:%d" % port))
    p = subprocess.Popen([BIN, "serve", "-c", str(other)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        rc = p.wait(10 * SLOW)
    except subprocess.TimeoutExpired:
        p.terminate()
        p.wait()
        pytest.fail("a second node ran on the same data dir")
    assert rc != 0
    assert p.stderr.read().strip()
    # the first node is undisturbed
    assert node.status()["pid"] == node.pid
    with Conn(node.port) as c:
        assert c.cmd("NOOP").code == 250


def test_port_in_use_fails_cleanly(node_factory, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        n = node_factory(users=(), start=False)
        n.settings["smtp"]["listen"] = "127.0.0.1:%d" % s.getsockname()[1]
        n.write_conf()
        with pytest.raises(AssertionError) as e:
            n.start(timeout=5)
        assert "exited" in str(e.value), e.value
    finally:
        s.close()


def test_several_listeners_and_ipv6(node_factory):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no ::1")
    p2 = free_port()
    s6 = socket.socket(socket.AF_INET6)
    s6.bind(("::1", 0))
    p6 = s6.getsockname()[1]
    s6.close()
    n = node_factory(start=False, users=("alice@localhost",))
    n.settings["smtp"]["listen"] = "127.0.0.1:%d, 127.0.0.1:%d, [::1]:%d" % (
        n.port, p2, p6)
    n.settings["smtp"]["mynetworks"] = "::1/128"
    n.write_conf()
    n.start()
    st = n.status()
    assert len(st["listeners"]) == 3, st["listeners"]
    for port in (n.port, p2):
        with Conn(port) as c:
            assert c.greeting.code == 220
    # over IPv6 ::1 is trusted: relaying allowed; over IPv4 it is not
    with Conn(p6, host="::1") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<x@remote.example.net>").code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        assert c.cmd("RSET").code == 250
    with Conn(p2) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<x@remote.example.net>").code == 554
    m, mid = make_message()
    c = Conn(p6, host="::1")
    c.ehlo()
    final, _, _ = send_mail(p6, SENDER, ["alice@localhost"], m, conn=c)
    c.close()
    assert final.code == 250
    box = n.wait_mailbox("alice@localhost", 1)
    added, rest = split_trace(n.cat("alice@localhost", box[0]["uid"]))
    assert b"::1" in added["Received"][0], added
    assert rest == m


def control_socket(node):
    p = os.path.join(node.datadir, "control.sock")
    assert os.path.exists(p), os.listdir(node.datadir)
    return p


@pytest.mark.parametrize("payload", [
    b"",
    b"\x00",
    b"garbage that is not msgpack\n" * 10,
    b"\xff" * 4096,
    struct.pack(">I", 0xFFFFFFFF) + b"\x81\xa3cmd\xa6status",
    struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",
    b"\x93\x01\x02",
    b"\xdd\xff\xff\xff\xff",          # array32 of 4 billion
    b"\xdf\xff\xff\xff\xff",          # map32 of 4 billion
    b"\xdb\xff\xff\xff\xff",          # str32 of 4 GiB
    b"\x91" * 100000,                 # deep nesting
    bytes(random.Random(7).getrandbits(8) for _ in range(65536)),
], ids=lambda p: "len%d" % len(p))
def test_control_socket_garbage(node, payload):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5 * SLOW)
    s.connect(control_socket(node))
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
    finally:
        s.close()
    assert node.running(), node.stderr()
    assert node.status()["pid"] == node.pid


def test_control_socket_many_idle_clients(node):
    socks = []
    try:
        for _ in range(50):
            s = socket.socket(socket.AF_UNIX)
            s.connect(control_socket(node))
            socks.append(s)
        t0 = time.monotonic()
        assert node.status()["pid"] == node.pid
        assert time.monotonic() - t0 < 5 * SLOW
    finally:
        for s in socks:
            s.close()
