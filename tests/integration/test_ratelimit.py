"""[limits] rate limits: connections per minute and concurrent sessions per
client address, messages per authenticated user per hour, and the
exemption of trusted (mynetworks) clients.

The node's start-up probe connects from 127.0.0.1, so the per-address
counts are exercised from 127.0.0.2 (and 127.0.0.3 as "another address"),
which start at zero.
"""
import socket
import ssl
import time

import pytest

from conftest import SLOW
from helpers.authsmtp import login, submit, tls_context
from helpers.smtp import Conn, SMTPClosed

ALICE = "alice@localhost"
BOB = "bob@localhost"
MSG = (b"From: <alice@localhost>\r\nTo: <bob@localhost>\r\n"
       b"Subject: rate\r\n\r\nHello.\r\n")


def assert_refused_421(c):
    """A Conn whose greeting must be 421 4.7.0, then a close."""
    assert (c.greeting.code, c.greeting.enh) == (421, "4.7.0"), c.greeting
    assert c.wait_closed(5 * SLOW), "still open after 421"


def quit_conn(c):
    r = c.cmd("QUIT")
    assert r.code == 221, r
    c.close()


def open_ok(port, source):
    c = Conn(port, source=source)
    assert c.greeting.code == 220, (source, c.greeting)
    return c


# -- connections per minute ---------------------------------------------------

def test_conn_rate_per_ip(node_factory):
    n = node_factory(conf={"limits.conn_rate_per_ip": 5,
                           "limits.rate_exempt_trusted": "no"})
    # five new connections a minute, on any listener, are fine (they need
    # not overlap: this limit counts connections, not sessions)
    for port in (n.port, n.port, n.submission_port, n.port,
                 n.submission_port):
        quit_conn(open_ok(port, "127.0.0.2"))
    # the sixth is answered 421 and closed, on either listener
    with Conn(n.port, source="127.0.0.2") as c:
        assert_refused_421(c)
        assert "127.0.0.2" in c.greeting.text, c.greeting
    with Conn(n.submission_port, source="127.0.0.2") as c:
        assert_refused_421(c)
    # on the implicit-TLS listener there is no 421 in clear: just a close
    s = socket.create_connection(("127.0.0.1", n.smtps_port),
                                 timeout=10 * SLOW,
                                 source_address=("127.0.0.2", 0))
    try:
        with pytest.raises((ssl.SSLError, OSError, SMTPClosed)):
            t = tls_context().wrap_socket(s)
            data = t.recv(512)
            if not data:
                raise SMTPClosed("closed")
            raise AssertionError("greeting over TLS despite the limit: %r"
                                 % data)
    finally:
        s.close()
    # other addresses are not affected
    for src in ("127.0.0.3", "127.0.0.1"):
        c = open_ok(n.port, src)
        c.ehlo()
        quit_conn(c)
    log = n.stderr(limit=0)
    assert "event=ratelimit kind=conn_rate_per_ip" in log, log[-3000:]
    assert "addr=127.0.0.2" in log
    assert n.status()["ratelimited"] >= 3, n.status()


def test_conn_rate_refused_connections_do_no_smtp(node_factory):
    """A refused client gets nothing but the 421: pipelined commands sent
    with the connection are not executed."""
    n = node_factory(conf={"limits.conn_rate_per_ip": 1,
                           "limits.rate_exempt_trusted": "no"})
    quit_conn(open_ok(n.port, "127.0.0.2"))
    c = Conn(n.port, source="127.0.0.2", greet=False)
    try:
        c.send("EHLO x\r\nMAIL FROM:<a@client.test.example>\r\n"
               "RCPT TO:<alice@localhost>\r\nDATA\r\n")
        c.greeting = c.reply()
        assert_refused_421(c)
        assert b"250" not in c.buf and b"354" not in c.buf, c.buf
    finally:
        c.close()


# -- concurrent sessions ------------------------------------------------------

def test_sessions_per_ip(node_factory):
    n = node_factory(conf={"limits.sessions_per_ip": 3,
                           "limits.rate_exempt_trusted": "no"})
    held = [open_ok(n.port, "127.0.0.2"), open_ok(n.port, "127.0.0.2"),
            open_ok(n.submission_port, "127.0.0.2")]
    try:
        for port in (n.port, n.submission_port):
            with Conn(port, source="127.0.0.2") as c:
                assert_refused_421(c)
        # the held sessions still work
        for c in held:
            c.ehlo()
        # another address is not affected
        other = open_ok(n.port, "127.0.0.3")
        quit_conn(other)
        # closing one session lets one new session in
        quit_conn(held.pop(0))
        deadline = time.monotonic() + 5 * SLOW
        while True:
            c = Conn(n.port, source="127.0.0.2")
            if c.greeting.code == 220:
                held.append(c)
                break
            c.close()
            assert time.monotonic() < deadline, \
                "no session admitted after one closed: %r" % c.greeting
            time.sleep(0.1)
        with Conn(n.port, source="127.0.0.2") as c:
            assert_refused_421(c)
    finally:
        for c in held:
            c.close()
    # the refused connections did not keep a slot: once all are closed,
    # three sessions fit again
    deadline = time.monotonic() + 5 * SLOW
    while True:
        conns = [Conn(n.port, source="127.0.0.2") for _ in range(3)]
        codes = [c.greeting.code for c in conns]
        for c in conns:
            c.close()
        if codes == [220, 220, 220]:
            break
        assert time.monotonic() < deadline, codes
        time.sleep(0.1)
    log = n.stderr(limit=0)
    assert "event=ratelimit kind=sessions_per_ip" in log, log[-3000:]


# -- trusted clients ----------------------------------------------------------

def test_rate_exempt_trusted(node_factory):
    n = node_factory(conf={"smtp.mynetworks": "127.0.0.1/32",
                           "limits.conn_rate_per_ip": 2,
                           "limits.sessions_per_ip": 1})
    # 127.0.0.1 is in mynetworks: neither limit applies
    held = []
    try:
        for _ in range(4):
            held.append(open_ok(n.port, "127.0.0.1"))
        # 127.0.0.2 is not: one session at a time
        held.append(open_ok(n.port, "127.0.0.2"))
        with Conn(n.port, source="127.0.0.2") as c:
            assert_refused_421(c)
    finally:
        for c in held:
            c.close()


def test_rate_exempt_trusted_no(node_factory):
    n = node_factory(conf={"limits.sessions_per_ip": 1,
                           "limits.rate_exempt_trusted": "no"})
    # 127.0.0.0/8 is trusted (conftest default), but not exempt now
    with open_ok(n.port, "127.0.0.2"):
        with Conn(n.port, source="127.0.0.2") as c:
            assert_refused_421(c)


# -- messages per user --------------------------------------------------------

def test_msgs_per_user_hour(node_factory):
    n = node_factory(conf={"limits.msgs_per_user_hour": 2,
                           "limits.rate_exempt_trusted": "no"})
    with Conn(n.submission_port) as c:
        c.ehlo()
        login(c, ALICE)
        for i in range(2):
            mr, rr, final = submit(c, ALICE, [BOB], MSG)
            assert final is not None and final.code == 250, (i, mr, rr, final)
        mr, rr, final = submit(c, ALICE, [BOB], MSG)
        assert (mr.code, mr.enh) == (451, "4.7.1"), mr
        assert final is None
        # the session is still usable (a temporary refusal, not a close)
        assert c.cmd("NOOP").code == 250
    # the count is per user, not per session
    with Conn(n.submission_port) as c:
        c.ehlo()
        login(c, ALICE)
        r = c.cmd("MAIL FROM:<%s>" % ALICE)
        assert (r.code, r.enh) == (451, "4.7.1"), r
    # another user is not affected
    with Conn(n.submission_port) as c:
        c.ehlo()
        login(c, BOB)
        for i in range(2):
            mr, rr, final = submit(c, BOB, [ALICE], MSG)
            assert final is not None and final.code == 250, (i, mr, rr, final)
    assert len(n.wait_mailbox(BOB, 2)) == 2
    assert len(n.wait_mailbox(ALICE, 2)) == 2
    time.sleep(0.2)
    assert len(n.mailbox(BOB)) == 2
    log = n.stderr(limit=0)
    assert "event=ratelimit kind=msgs_per_user_hour" in log
    assert "user=alice@localhost" in log


def test_msgs_per_user_hour_applies_to_trusted_clients(node_factory):
    """The spec exempts trusted clients from conn_rate_per_ip and
    sessions_per_ip only: a login's hourly message budget holds wherever
    the login comes from."""
    n = node_factory(conf={"limits.msgs_per_user_hour": 1})
    with Conn(n.submission_port, source="127.0.0.1") as c:  # trusted
        c.ehlo()
        login(c, ALICE)
        mr, rr, final = submit(c, ALICE, [BOB], MSG)
        assert final is not None and final.code == 250, (mr, rr, final)
        mr, rr, final = submit(c, ALICE, [BOB], MSG)
        assert (mr.code, mr.enh) == (451, "4.7.1"), (mr, rr, final)
