"""Hostile and odd input: floods, garbage, disconnects, edge syntax.
The node must answer each with a clear reply, keep no partial state and
never crash (teardown checks the exit code and sanitizer output)."""
import os
import random
import socket
import stat
import time

import pytest

from conftest import SLOW
from helpers.smtp import Conn, SMTPClosed, dot_stuff, make_message, \
    send_mail, split_trace

SENDER = "s@client.test.example"


def test_ehlo_helo_need_argument(node):
    with Conn(node.port) as c:
        for cmd in ("EHLO", "HELO", "EHLO ", "HELO "):
            r = c.cmd(cmd)
            assert r.code == 501, (cmd, r)
            assert r.enh and r.enh.startswith("5.5."), r
        assert c.cmd("EHLO client.test.example").code == 250


def test_second_ehlo_resets_transaction(node):
    # RFC 5321 §4.1.4: EHLO in a session clears the transaction
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        c.ehlo("again.test.example")
        assert c.cmd("DATA").code == 503
        assert c.cmd("RCPT TO:<alice@localhost>").code == 503


def test_data_with_argument_is_501(node):
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        r = c.cmd("DATA now")
        assert r.code == 501, r
        assert c.cmd("RSET").code == 250


def test_address_length_limits(node):
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        # local part over 64 octets (§4.5.3.1.1)
        r = c.cmd("RCPT TO:<%s@localhost>" % ("a" * 65))
        assert 500 <= r.code < 600, r
        # path over 256 octets (§4.5.3.1.3)
        r = c.cmd("RCPT TO:<a@%s.example.org>" % ".".join(["d" * 60] * 5))
        assert 500 <= r.code < 600, r
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250


def test_nul_and_control_bytes_in_commands(node):
    with Conn(node.port) as c:
        c.ehlo()
        for bad in (b"NOOP\x00\r\n", b"MAIL FROM:<a\x00b@x.example>\r\n",
                    b"\x00\x00\x00\r\n", b"\xff\xfe\xfd\r\n",
                    b"MAIL FROM:<a@x.example>\x00 SIZE=10\r\n"):
            c.send(bad)
            r = c.reply()
            assert 500 <= r.code < 600, (bad, r)
        assert c.cmd("RSET").code == 250
        assert c.cmd("NOOP").code == 250


def test_bare_lf_in_command_does_not_split_commands(node):
    # "NOOP\nRSET\r\n" is one malformed line or two commands, but never
    # three replies; then the session is in sync.
    with Conn(node.port) as c:
        c.ehlo()
        c.send(b"NOOP\nNOOP\r\n")
        first = c.reply()
        extra = c.pending(0.3)
        r = c.cmd("QUIT")
        assert r.code == 221, (first, extra, r)


def test_garbage_flood_ends_with_421(node_factory):
    n = node_factory(conf={"limits.max_errors": 5}, users=())
    rnd = random.Random(42)
    blob = bytes(rnd.getrandbits(8) for _ in range(256 * 1024))
    with Conn(n.port) as c:
        c.ehlo()
        try:
            c.send(blob)
        except OSError:
            pass  # the server may hang up while we are still writing
        got = b""
        t0 = time.monotonic()
        closed = c.wait_closed(10 * SLOW)
        assert closed, "no hang-up after a garbage flood"
        lines = c.buf.split(b"\r\n")
        assert any(ln.startswith(b"421") for ln in lines), c.buf[-500:]
        codes = [ln[:3] for ln in lines if ln[:3].isdigit()]
        assert len(codes) <= 5 + 1 + 2, codes  # no reply storm
    with Conn(n.port) as c:
        assert c.cmd("NOOP").code == 250


def test_line_flood_without_crlf(node):
    # 1 MB without a line end: one "too long" reply (or 421), no growth
    with Conn(node.port) as c:
        c.ehlo()
        try:
            c.send(b"X" * (1 << 20))
            c.send(b"\r\n")
        except OSError:
            pass
        try:
            r = c.reply(timeout=10 * SLOW)
        except SMTPClosed:
            r = None
        if r is not None:
            assert r.code in (500, 421), r
            if r.code == 500:
                assert c.cmd("NOOP").code == 250
    with Conn(node.port) as c:
        assert c.cmd("NOOP").code == 250


def test_disconnect_mid_data_stores_nothing(node):
    for cut in (b"", b"Subject: x\r\n", b"Subject: x\r\n\r\nbody\r\n.",
                b"Subject: x\r\n\r\nbody\r\n.\r"):
        c = Conn(node.port)
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(cut)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                          b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        c.close()
    for size in (0, 10):
        c = Conn(node.port)
        c.ehlo()
        c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<alice@localhost>\r\n"
               b"BDAT 100 LAST\r\n" % SENDER.encode() + b"z" * size)
        c.close()
    time.sleep(0.5)
    assert node.mailbox("alice@localhost") == []
    assert node.queue() == []
    st = node.status()
    assert st["messages_accepted"] == 0, st


def test_rset_between_bdat_chunks(node):
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        c.send(b"BDAT 12\r\nSubject: x\r\n")
        assert c.reply().code == 250
        assert c.cmd("RSET").code == 250
        c.send(b"BDAT 4 LAST\r\nabc\n")
        assert c.reply().code == 503
        msg, mid = make_message()
        c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<alice@localhost>\r\n"
               b"BDAT %d LAST\r\n" % (SENDER.encode(), len(msg)) + msg)
        assert [r.code for r in c.replies(3)] == [250, 250, 250]
    box = node.wait_mailbox("alice@localhost", 1)
    assert len(box) == 1
    assert split_trace(node.cat("alice@localhost", box[0]["uid"]))[1] == msg


def test_bdat_chunk_dribbled_byte_by_byte(node):
    msg, mid = make_message(body=b"dribble\r\n")
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        c.send(b"BDAT %d LAST\r\n" % len(msg))
        for i in range(0, len(msg), 7):
            c.send(msg[i:i + 7])
            time.sleep(0.002)
        r = c.reply()
        assert r.code == 250, r
    box = node.wait_mailbox("alice@localhost", 1)
    assert split_trace(node.cat("alice@localhost", box[0]["uid"]))[1] == msg


def test_bdat_absurd_size(node):
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        for size in ("99999999999999999999999", "18446744073709551616",
                     "-5", "0x10", "1e3"):
            r = c.cmd("BDAT %s LAST" % size)
            assert r.code in (501, 552, 554), (size, r)
        # a legal but absurd size: the server may consume the chunk (RFC
        # 3030 §2) or refuse it; it must not block anyone else
        c.send(b"BDAT 18446744073709551615 LAST\r\n" + b"q" * 100000)
        with Conn(node.port) as other:
            assert other.cmd("NOOP").code == 250
    with Conn(node.port) as c:
        assert c.cmd("NOOP").code == 250
    time.sleep(0.2)
    assert node.mailbox("alice@localhost") == []


def test_bdat_chunk_bigger_than_max_message_size(node_factory):
    n = node_factory(conf={"limits.max_message_size": 1 << 20},
                     users=("alice@localhost",))
    chunk = b"Subject: huge\r\n\r\n" + (b"h" * 98 + b"\r\n") * 30000  # 3 MB
    with Conn(n.port, timeout=60 * SLOW) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        r = c.reply()
        assert (r.code, r.enh) == (552, "5.3.4"), r
        assert c.cmd("NOOP").code == 250
    assert n.mailbox("alice@localhost") == []


def test_duplicate_recipient_delivered_once(node):
    msg, mid = make_message()
    final, rr, _ = send_mail(node.port, SENDER,
                             ["alice@localhost", "alice@localhost",
                              "alice@LOCALHOST"], msg)
    assert final.code == 250
    assert all(r.code == 250 for r in rr), rr
    node.wait_queue_empty()
    time.sleep(0.2)
    assert len(node.mailbox("alice@localhost")) == 1


def test_received_in_body_is_not_counted(node_factory):
    n = node_factory(conf={"limits.max_received": 10},
                     users=("alice@localhost",))
    body = b"".join(b"Received: from x%d by y; Sat, 28 Nov 2026 11:00:00 "
                    b"+0000\r\n" % i for i in range(30))
    msg, mid = make_message(body=body)
    final, _, _ = send_mail(n.port, SENDER, ["alice@localhost"], msg)
    assert final.code == 250, final


def test_received_count_is_case_insensitive_and_folded(node_factory):
    n = node_factory(conf={"limits.max_received": 10},
                     users=("alice@localhost",))
    hdrs = b"".join(b"%s: from x%d\r\n\tby y%d; Sat, 28 Nov 2026 11:00:00 "
                    b"+0000\r\n" % (name, i, i)
                    for i, name in enumerate([b"RECEIVED", b"received",
                                              b"Received"] * 4))
    msg = hdrs + make_message()[0]
    final, _, _ = send_mail(n.port, SENDER, ["alice@localhost"], msg)
    assert (final.code, final.enh) == (554, "5.4.6"), final


def test_received_header_has_client_ip(node):
    msg, mid = make_message()
    assert send_mail(node.port, SENDER, ["alice@localhost"], msg)[0].code \
        == 250
    box = node.wait_mailbox("alice@localhost", 1)
    added, _ = split_trace(node.cat("alice@localhost", box[0]["uid"]))
    rec = added["Received"][0]
    assert b"client.test.example" in rec, rec
    assert b"127.0.0.1" in rec, rec


def test_quit_discards_pipelined_rest(node):
    with Conn(node.port) as c:
        c.ehlo()
        c.send(b"NOOP\r\nQUIT\r\nNOOP\r\nMAIL FROM:<a@b.example>\r\n")
        rs = c.replies(2)
        assert [r.code for r in rs] == [250, 221]
        assert c.wait_closed(5)
        assert c.buf == b"", c.buf


def test_datadir_and_control_socket_are_private(node):
    st = os.stat(node.datadir)
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0, oct(st.st_mode)
    for name in os.listdir(node.datadir):
        p = os.path.join(node.datadir, name)
        m = stat.S_IMODE(os.lstat(p).st_mode)
        assert m & 0o077 == 0, (name, oct(m))


@pytest.mark.parametrize("ehlo", [b"EHLO evil\nX-Injected: yes\r\n",
                                  b"EHLO evil\rX-Injected: yes\r\n",
                                  b"EHLO evil\x00X-Injected: yes\r\n"],
                         ids=["lf", "cr", "nul"])
def test_no_header_injection_through_ehlo(node, ehlo):
    """The EHLO name lands in the Received field: a bare CR/LF in it must
    never become a header line of the stored message."""
    msg, mid = make_message()
    with Conn(node.port) as c:
        c.send(ehlo)
        r = c.reply()
        extra = c.pending(0.2)
        if r.code != 250:
            assert 500 <= r.code < 600, r
            c.ehlo()
        else:
            # a second reply would mean the tail ran as a command
            pass
        final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], msg,
                                conn=c)
        assert final.code == 250
    box = node.wait_mailbox("alice@localhost", 1)
    raw = node.cat("alice@localhost", box[0]["uid"])
    added, rest = split_trace(raw)
    assert rest == msg
    head = raw[:len(raw) - len(rest)]
    assert b"\nX-Injected" not in head and b"\rX-Injected" not in head, head
    assert b"\x00" not in head, head
    assert head.replace(b"\r\n", b"").count(b"\n") == 0, head
    assert head.replace(b"\r\n", b"").count(b"\r") == 0, head


@pytest.mark.parametrize("sender", [b"a@b.example>\nX-Injected: yes",
                                    b"a@b.example\nX-Injected: yes"],
                         ids=["after", "inside"])
def test_no_header_injection_through_mail_from(node, sender):
    with Conn(node.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<" + sender + b">\r\n")
        r = c.reply()
        c.pending(0.2)
        c.cmd("RSET")
    msg, mid = make_message()
    assert send_mail(node.port, SENDER, ["alice@localhost"], msg)[0].code \
        == 250
    for m in node.wait_mailbox("alice@localhost", 1):
        raw = node.cat("alice@localhost", m["uid"])
        assert b"X-Injected" not in raw.split(b"\r\n\r\n", 1)[0]


def test_bdat_message_without_final_crlf(node):
    msg = (b"Subject: no final newline\r\n"
           b"Message-ID: <nofinal@client.test.example>\r\n\r\nlast line")
    with Conn(node.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<alice@localhost>\r\n"
               b"BDAT %d LAST\r\n" % (SENDER.encode(), len(msg)) + msg)
        rs = c.replies(3)
    assert [r.code for r in rs[:2]] == [250, 250]
    if rs[2].code != 250:
        assert 500 <= rs[2].code < 600, rs[2]
        return
    box = node.wait_mailbox("alice@localhost", 1)
    rest = split_trace(node.cat("alice@localhost", box[0]["uid"]))[1]
    # byte-exact, or completed with the CRLF RFC 5322 requires
    assert rest in (msg, msg + b"\r\n"), rest


def dribble(c, data, delay, budget):
    """Send one byte every `delay` s; stop at `budget` s or when the
    server says something. Returns what the server sent."""
    end = time.monotonic() + budget
    for b in data:
        if time.monotonic() > end:
            break
        try:
            c.send(bytes([b]))
        except OSError:
            break
        got = c.pending(delay)
        if got:
            return got
    return c.pending(0.5)


def test_slowloris_command_line_is_cut(node_factory):
    """timeout_command bounds a whole command, not the gap between two
    bytes: a client trickling one byte at a time must not hold a session
    forever (DESIGN: "too slow" sessions end with 421)."""
    n = node_factory(conf={"limits.timeout_command": 2}, users=())
    with Conn(n.port) as c:
        c.ehlo()
        got = dribble(c, b"NOOP " + b"x" * 200 + b"\r\n", 0.5, 7)
        assert got.startswith(b"421 4.4.2"), got


def test_slowloris_data_is_cut(node_factory):
    n = node_factory(conf={"limits.timeout_data": 2,
                           "limits.timeout_command": 2},
                     users=("alice@localhost",))
    with Conn(n.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        assert c.cmd("DATA").code == 354
        got = dribble(c, b"Subject: slow\r\n\r\n" + b"y" * 400, 0.5,
                      7)
        assert got.startswith(b"421 4.4.2"), got
    assert n.mailbox("alice@localhost") == []


@pytest.mark.parametrize("how", ["data", "bdat"])
def test_client_vanishes_while_commit_pending(node, how):
    """The client hangs up (RST) right after the end of the message, while
    the group commit is in flight: the commit callback must not touch a
    freed session. Either outcome for the message is fine, not a crash,
    and nothing appears twice."""
    sent = []
    for i in range(40):
        msg, mid = make_message(subject="vanish %d" % i)
        c = Conn(node.port)
        c.ehlo()
        head = (b"MAIL FROM:<%s>\r\nRCPT TO:<alice@localhost>\r\n"
                % SENDER.encode())
        if how == "data":
            c.send(head + b"DATA\r\n")
            rs = c.replies(3)
            assert rs[-1].code == 354
            c.send(dot_stuff(msg))
        else:
            c.send(head + b"BDAT %d LAST\r\n" % len(msg) + msg)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                          b"\x01\x00\x00\x00\x00\x00\x00\x00")
        if i % 2:
            time.sleep(0.001)
        c.close()
        sent.append(mid)
    time.sleep(0.5)
    node.wait_queue_empty()
    ids = [m["message_id"].strip("<>") for m in node.mailbox("alice@localhost")]
    assert len(ids) == len(set(ids))
    assert set(ids) <= set(sent)
    assert node.status()["sessions_current"] == 0
    with Conn(node.port) as c:
        assert c.cmd("NOOP").code == 250
