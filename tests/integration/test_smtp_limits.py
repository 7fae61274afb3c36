"""RFC 5321 §4.5.3 limits and session budgets: each limit answered with a
clear reply, never a crash or a silent cut."""
import re
import time

from helpers.smtp import Conn, dot_stuff, make_message, send_mail, split_trace
from conftest import SLOW

SMALL = 65536  # the smallest max_message_size the config accepts


def test_mail_size_param_over_limit(node_factory):
    n = node_factory(conf={"limits.max_message_size": SMALL},
                     users=("alice@localhost",))
    with Conn(n.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<s@client.test.example> SIZE=%d" % (SMALL + 1))
        assert (r.code, r.enh) == (552, "5.3.4"), r
        r = c.cmd("MAIL FROM:<s@client.test.example> SIZE=99999999999999999999")
        assert r.code in (552, 501, 555), r
        r = c.cmd("MAIL FROM:<s@client.test.example> SIZE=%d" % SMALL)
        assert r.code == 250, r
        assert c.cmd("RSET").code == 250
        r = c.cmd("MAIL FROM:<s@client.test.example> SIZE=abc")
        assert r.code in (501, 555), r


def test_data_over_size_limit(node_factory):
    n = node_factory(conf={"limits.max_message_size": SMALL},
                     users=("alice@localhost",))
    body = (b"x" * 98 + b"\r\n") * 700  # ~70 KB
    big, _ = make_message(body=body, subject="big")
    ok, okid = make_message(subject="small")
    with Conn(n.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(big))
        r = c.reply()
        assert (r.code, r.enh) == (552, "5.3.4"), r
        assert c.pending(0.2) == b""
        # the session goes on and a normal message passes
        final, _, _ = send_mail(n.port, "s@client.test.example",
                                ["alice@localhost"], ok, conn=c)
        assert final.code == 250, final
    box = n.wait_mailbox("alice@localhost", 1)
    time.sleep(0.2)
    box = n.mailbox("alice@localhost")
    assert [m["message_id"].strip("<>") for m in box] == [okid]


def test_bdat_over_size_limit(node_factory):
    n = node_factory(conf={"limits.max_message_size": SMALL},
                     users=("alice@localhost",))
    with Conn(n.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        chunk = (b"y" * 78 + b"\r\n") * 500  # 40 KB of short lines
        first = b"Subject: big bdat\r\n\r\n" + chunk
        c.send(b"BDAT %d\r\n" % len(first) + first)
        r1 = c.reply()
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        r2 = c.reply()
        # refused on the chunk that crosses the limit, or at LAST
        assert (r1.code == 250 and r1.enh.startswith("2.")) or \
            (r1.code, r1.enh) == (552, "5.3.4"), r1
        if r1.code == 250:
            assert (r2.code, r2.enh) == (552, "5.3.4"), (r1, r2)
        else:
            assert r2.code == 503, r2  # RFC 3030 §2: transaction is over
        assert c.cmd("RSET").code == 250
        assert c.cmd("NOOP").code == 250
    assert n.mailbox("alice@localhost") == []


def test_max_recipients(node_factory):
    # 100 is the smallest max_recipients the config accepts; remote
    # recipients from a trusted network are all acceptable.
    n = node_factory(conf={"limits.max_recipients": 100}, users=())
    with Conn(n.port) as c:
        c.ehlo()
        blob = b"MAIL FROM:<s@client.test.example>\r\n" + b"".join(
            b"RCPT TO:<r%d@remote.example.net>\r\n" % i for i in range(102))
        c.send(blob)
        rs = c.replies(103)
        assert rs[0].code == 250
        assert all(r.code == 250 for r in rs[1:101]), \
            [r for r in rs[1:101] if r.code != 250][:3]
        assert (rs[101].code, rs[101].enh) == (452, "4.5.3"), rs[101]
        assert rs[102].code == 452, rs[102]
        assert c.cmd("RSET").code == 250
    assert n.queue() == []


def test_command_line_too_long(node):
    with Conn(node.port) as c:
        c.ehlo()
        # exactly 512 octets with CRLF is legal (§4.5.3.1.4)
        r = c.cmd("NOOP " + "a" * (512 - 2 - 5))
        assert r.code == 250, r
        r = c.cmd("NOOP " + "a" * 600)
        assert r.code == 500 and r.enh and r.enh.startswith("5.5."), r
        assert re.search(r"too long|longer than", r.text.lower()), r
        assert c.cmd("NOOP").code == 250
        # a very long line: still one clear reply, session goes on
        c.send(b"MAIL FROM:<" + b"b" * 200000 + b"@x.example>\r\n")
        r = c.reply()
        assert r.code == 500, r
        assert c.pending(0.3) == b""
        msg, mid = make_message()
        final, _, _ = send_mail(node.port, "s@client.test.example",
                                ["alice@localhost"], msg, conn=c)
        assert final.code == 250
    box = node.wait_mailbox("alice@localhost", 1)
    assert len(box) == 1


def test_text_line_too_long(node):
    boundary = b"z" * 998 + b"\r\n"          # 1000 octets with CRLF: legal
    too_long = b"z" * 1100 + b"\r\n"
    okmsg, okid = make_message(body=b"start\r\n" + boundary + b"end\r\n")
    bad, badid = make_message(body=b"start\r\n" + too_long + b"end\r\n")
    with Conn(node.port) as c:
        c.ehlo()
        final, _, _ = send_mail(node.port, "s@client.test.example",
                                ["alice@localhost"], bad, conn=c)
        assert 500 <= final.code < 600, final
        assert final.enh and final.enh.startswith("5."), final
        assert c.pending(0.2) == b""
        final, _, _ = send_mail(node.port, "s@client.test.example",
                                ["alice@localhost"], okmsg, conn=c)
        assert final.code == 250, final
    box = node.wait_mailbox("alice@localhost", 1)
    time.sleep(0.2)
    box = node.mailbox("alice@localhost")
    assert [m["message_id"].strip("<>") for m in box] == [okid]
    raw = node.cat("alice@localhost", box[0]["uid"])
    assert split_trace(raw)[1] == okmsg


def test_header_section_too_large(node_factory):
    n = node_factory(conf={"limits.max_header_size": 1024},
                     users=("alice@localhost",))
    many = b"".join(b"X-Filler-%03d: %s\r\n" % (i, b"h" * 60)
                    for i in range(40))  # ~3 KB of header fields
    bad, badid = make_message(extra_headers=many)
    # a big body under a small header section is fine
    ok, okid = make_message(body=(b"b" * 70 + b"\r\n") * 100)
    with Conn(n.port) as c:
        c.ehlo()
        final, _, _ = send_mail(n.port, "s@client.test.example",
                                ["alice@localhost"], bad, conn=c)
        assert final.code in (552, 554), final
        assert final.enh and final.enh.startswith("5."), final
        final, _, _ = send_mail(n.port, "s@client.test.example",
                                ["alice@localhost"], ok, conn=c)
        assert final.code == 250, final
    box = n.wait_mailbox("alice@localhost", 1)
    assert [m["message_id"].strip("<>") for m in box] == [okid]


def test_too_many_errors_421(node_factory):
    n = node_factory(conf={"limits.max_errors": 3}, users=())
    with Conn(n.port) as c:
        c.ehlo()
        codes = []
        for i in range(6):
            try:
                r = c.cmd("BOGUS%d" % i)
            except Exception:
                break
            codes.append((r.code, r.enh))
            if r.code == 421:
                break
        assert codes[-1] == (421, "4.7.0"), codes
        assert 2 <= len(codes) - 1 <= 3, codes  # the limit is honoured
        assert c.wait_closed(5 * SLOW)


def test_idle_timeout_421(node_factory):
    n = node_factory(conf={"limits.timeout_command": 2}, users=())
    with Conn(n.port) as c:
        c.ehlo()
        t0 = time.monotonic()
        r = c.reply(timeout=10 * SLOW)
        took = time.monotonic() - t0
        assert (r.code, r.enh) == (421, "4.4.2"), r
        assert 1.5 <= took <= 6 * SLOW, took
        assert c.wait_closed(5)
    # the node is fine afterwards
    with Conn(n.port) as c:
        assert c.cmd("NOOP").code == 250


def test_data_timeout_421_and_nothing_stored(node_factory):
    n = node_factory(conf={"limits.timeout_data": 2,
                           "limits.timeout_command": 60},
                     users=("alice@localhost",))
    with Conn(n.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: half\r\n\r\nhalf a message\r\n")
        r = c.reply(timeout=10 * SLOW)
        assert r.code == 421 and r.enh and r.enh.startswith("4.4."), r
        assert c.wait_closed(5)
    time.sleep(0.2)
    assert n.mailbox("alice@localhost") == []
    assert n.queue() == []


def received_headers(k):
    return b"".join(b"Received: from relay%d.example.net by relay%d.example"
                    b".net with ESMTP id x%d; Sat, 28 Nov 2026 11:00:%02d "
                    b"+0000\r\n" % (i, i + 1, i, i) for i in range(k))


def test_loop_detection(node_factory):
    n = node_factory(conf={"limits.max_received": 10},
                     users=("alice@localhost",))
    over = received_headers(11) + make_message()[0]
    at_limit_body, okid = make_message()
    at_limit = received_headers(10) + at_limit_body
    with Conn(n.port) as c:
        c.ehlo()
        final, _, _ = send_mail(n.port, "s@client.test.example",
                                ["alice@localhost"], over, conn=c)
        assert (final.code, final.enh) == (554, "5.4.6"), final
        final, _, _ = send_mail(n.port, "s@client.test.example",
                                ["alice@localhost"], at_limit, conn=c)
        assert final.code == 250, final
    box = n.wait_mailbox("alice@localhost", 1)
    assert [m["message_id"].strip("<>") for m in box] == [okid]
    raw = n.cat("alice@localhost", box[0]["uid"])
    added, rest = split_trace(raw)
    assert rest == at_limit


def test_loop_detection_bdat(node_factory):
    n = node_factory(conf={"limits.max_received": 10},
                     users=("alice@localhost",))
    over = received_headers(11) + make_message()[0]
    with Conn(n.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<s@client.test.example>\r\n"
               b"RCPT TO:<alice@localhost>\r\n"
               b"BDAT %d LAST\r\n" % len(over) + over)
        rs = c.replies(3)
        assert [r.code for r in rs[:2]] == [250, 250]
        assert (rs[2].code, rs[2].enh) == (554, "5.4.6"), rs[2]
    assert n.mailbox("alice@localhost") == []
