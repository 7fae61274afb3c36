"""Message content: dot-stuffing, smuggling, bare CR/LF, BDAT, 8-bit,
SMTPUTF8. Everything accepted must come back byte for byte."""
import random
import re
import time

import pytest

from helpers.smtp import Conn, dot_stuff, make_message, send_mail, split_trace

SENDER = "s@client.test.example"


def only_message(node, user, wait_for=1):
    box = node.wait_mailbox(user, wait_for)
    assert len(box) == wait_for, box
    return box


def delivered_body(node, user, uid):
    raw = node.cat(user, uid)
    added, rest = split_trace(raw)
    assert set(added) == {"Return-Path", "Delivered-To", "Received"}, raw[:500]
    return added, rest


def test_dot_stuffing_round_trip(node):
    body = (b".\r\n"
            b"..\r\n"
            b"...\r\n"
            b".leading dot\r\n"
            b"..two leading dots\r\n"
            b" .space then dot\r\n"
            b"trailing spaces   \r\n"
            b"\ttab\r\n"
            b"\r\n"
            b"\r\n"
            b"a line with a . in it\r\n"
            b"From the start of a line\r\n"
            b".")
    body += b"\r\n"  # last line is a single dot
    msg, mid = make_message(body=body, subject="dots")
    final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], msg)
    assert final.code == 250, final
    box = only_message(node, "alice@localhost")
    added, rest = delivered_body(node, "alice@localhost", box[0]["uid"])
    assert rest == msg


def test_empty_body_round_trip(node):
    msg, mid = make_message(body=b"")
    final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], msg)
    assert final.code == 250, final
    box = only_message(node, "alice@localhost")
    assert delivered_body(node, "alice@localhost", box[0]["uid"])[1] == msg


def test_mailbox_cat_is_exact_with_many_sizes(node):
    # sizes around common buffer and chunk boundaries
    sent = {}
    with Conn(node.port) as c:
        c.ehlo()
        for size in (1, 4095, 4096, 4097, 65535, 65536, 65537, 300000):
            line = b"0123456789abcdef" * 4 + b"\r\n"   # 66 octets
            body = (line * (size // len(line) + 1))[:size]
            body = body.rstrip(b"\r") + b"\r\n" if not body.endswith(
                b"\r\n") else body
            if body.endswith(b"\n") and not body.endswith(b"\r\n"):
                body = body[:-1] + b"\r\n"
            msg, mid = make_message(body=body, subject="size %d" % size)
            final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"],
                                    msg, conn=c)
            assert final.code == 250, (size, final)
            sent[mid] = msg
    box = node.wait_mailbox("alice@localhost", len(sent))
    assert len(box) == len(sent)
    for m in box:
        rest = delivered_body(node, "alice@localhost", m["uid"])[1]
        assert rest == sent[m["message_id"].strip("<>")], m


SMUGGLE = (b"MAIL FROM:<evil@attacker.example>\r\n"
           b"RCPT TO:<bob@localhost>\r\n"
           b"DATA\r\n"
           b"From: <ceo@localhost>\r\n"
           b"Subject: smuggled\r\n"
           b"\r\n"
           b"pay the invoice\r\n")
# (no ".\r\n" of its own: the test sends the one real end of data)

ENDINGS = [b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\n.\n", b"\r\n.\r",
           b"\r\n\x00.\r\n"]


@pytest.mark.parametrize("ending", ENDINGS, ids=lambda e: repr(e)[2:-1])
@pytest.mark.parametrize("mode", ["reject", "normalise"])
def test_smuggling_never_ends_data(node_factory, ending, mode):
    n = node_factory(conf={"smtp.bare_lf": mode})
    hdr, mid = make_message(body=b"")
    data = hdr + b"innocent text" + ending + SMUGGLE + b"more\r\n"
    with Conn(n.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(data)
        # nothing may answer before the real end of data
        assert c.pending(0.3) == b"", "server replied inside DATA"
        c.send(b".\r\n")
        r = c.reply()
        # exactly one reply to the whole thing, then the session is sane
        r2 = c.cmd("NOOP")
        assert r2.code == 250, (r, r2)
        assert c.pending(0.1) == b""
    if mode == "reject" and ending != b"\r\n\x00.\r\n":
        assert r.code in (550, 554), r
        assert r.enh and r.enh.startswith("5."), r
    n.wait_queue_empty()
    assert n.mailbox("bob@localhost") == [], "smuggled message delivered"
    alice = n.mailbox("alice@localhost")
    assert len(alice) == (1 if r.code == 250 else 0), (r, alice)
    if r.code == 250:
        raw = n.cat("alice@localhost", alice[0]["uid"])
        assert b"pay the invoice" in raw
        assert alice[0]["message_id"].strip("<>") == mid


def test_bare_lf_rejected(node):
    msg, mid = make_message(body=b"line one\nline two\r\n")
    with Conn(node.port) as c:
        c.ehlo()
        final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], msg,
                                conn=c)
        assert final.code in (550, 554), final
        assert final.enh and final.enh.startswith("5."), final
        # a clean message right after is fine
        ok, okid = make_message()
        final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], ok,
                                conn=c)
        assert final.code == 250
    box = only_message(node, "alice@localhost")
    assert box[0]["message_id"].strip("<>") == okid


def test_bare_cr_rejected(node):
    msg, mid = make_message(body=b"line one\rline two\r\n")
    final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], msg)
    assert final.code in (550, 554), final
    time.sleep(0.2)
    assert node.mailbox("alice@localhost") == []


def test_bare_lf_in_headers_rejected(node):
    msg = (b"From: <a@client.test.example>\nSubject: x\r\n"
           b"Message-ID: <barelfhdr@client.test.example>\r\n\r\nbody\r\n")
    final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], msg)
    assert final.code in (550, 554), final
    time.sleep(0.2)
    assert node.mailbox("alice@localhost") == []


def test_bare_lf_normalised(node_factory):
    n = node_factory(conf={"smtp.bare_lf": "normalise"},
                     users=("alice@localhost",))
    msg, mid = make_message(body=b"line one\nline two\r\nthree\n")
    # the client's own end-of-data comes after a CRLF
    msg += b"\r\n"
    final, _, _ = send_mail(n.port, SENDER, ["alice@localhost"], msg)
    assert final.code == 250, final
    box = only_message(n, "alice@localhost")
    rest = delivered_body(n, "alice@localhost", box[0]["uid"])[1]
    expected = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert rest == expected
    assert b"\r\n" in rest and b"\n" not in rest.replace(b"\r\n", b"")


def bdat_session(node, chunks, extra=b""):
    """MAIL, RCPT, then the BDAT chunks pipelined in one write."""
    with Conn(node.port) as c:
        c.ehlo()
        blob = (b"MAIL FROM:<%s>\r\nRCPT TO:<alice@localhost>\r\n"
                % SENDER.encode())
        for i, ch in enumerate(chunks):
            last = b" LAST" if i == len(chunks) - 1 else b""
            blob += b"BDAT %d%s\r\n" % (len(ch), last) + ch
        c.send(blob + extra)
        rs = c.replies(2 + len(chunks))
        return rs


def test_bdat_single_chunk_exact(node):
    msg, mid = make_message(body=b".not stuffed\r\n..\r\n.\r\nend\r\n")
    rs = bdat_session(node, [msg])
    assert [r.code for r in rs] == [250, 250, 250], rs
    box = only_message(node, "alice@localhost")
    assert delivered_body(node, "alice@localhost", box[0]["uid"])[1] == msg


def test_bdat_many_chunks_split_anywhere(node):
    msg, mid = make_message(body=b"".join(b"line %d with text\r\n" % i
                                          for i in range(200)) +
                            b".\r\n\r\n.\r\nQUIT\r\n")
    # split inside CRLF, inside "\r\n.\r\n", and at odd sizes
    cut = [1, 2, 5, 100, msg.index(b"\r\n.\r\n") + 1,
           msg.index(b"\r\n.\r\n") + 3, len(msg) - 1]
    chunks = []
    prev = 0
    for c in sorted(set(cut)):
        chunks.append(msg[prev:c])
        prev = c
    chunks.append(msg[prev:])
    rs = bdat_session(node, chunks)
    assert all(r.code == 250 for r in rs), rs
    box = only_message(node, "alice@localhost")
    assert delivered_body(node, "alice@localhost", box[0]["uid"])[1] == msg


def test_bdat_zero_last(node):
    msg, mid = make_message(subject="bdat0")
    rs = bdat_session(node, [msg[:50], msg[50:], b""])
    assert [r.code for r in rs] == [250] * 5, rs
    box = only_message(node, "alice@localhost")
    assert delivered_body(node, "alice@localhost", box[0]["uid"])[1] == msg


def test_bdat_pipelined_with_next_transaction(node):
    m1, id1 = make_message(subject="first")
    m2, id2 = make_message(subject="second")
    with Conn(node.port) as c:
        c.ehlo()
        blob = b""
        for m in (m1, m2):
            blob += (b"MAIL FROM:<%s>\r\nRCPT TO:<alice@localhost>\r\n"
                     b"BDAT %d LAST\r\n" % (SENDER.encode(), len(m)) + m)
        c.send(blob + b"QUIT\r\n")
        rs = c.replies(7)
        assert [r.code for r in rs] == [250] * 6 + [221], rs
    box = only_message(node, "alice@localhost", 2)
    got = {m["message_id"].strip("<>"): m["uid"] for m in box}
    assert delivered_body(node, "alice@localhost", got[id1])[1] == m1
    assert delivered_body(node, "alice@localhost", got[id2])[1] == m2


def test_bdat_then_data_is_503(node):
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        c.send(b"BDAT 10\r\n0123456789")
        assert c.reply().code == 250
        r = c.cmd("DATA")
        assert (r.code, r.enh) == (503, "5.5.1"), r
        assert c.cmd("RSET").code == 250
        assert c.cmd("NOOP").code == 250
    time.sleep(0.2)
    assert node.mailbox("alice@localhost") == []


def test_bdat_sequence_and_syntax_errors(node):
    with Conn(node.port) as c:
        c.ehlo()
        # BDAT before MAIL: the chunk is read and discarded, then 503
        c.send(b"BDAT 5\r\nhello")
        r = c.reply()
        assert r.code == 503, r
        assert c.cmd("NOOP").code == 250
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        for bad in ("BDAT", "BDAT x", "BDAT -1", "BDAT 5 FIRST"):
            r = c.cmd(bad)
            assert r.code in (501, 500, 555), (bad, r)
        assert c.cmd("RSET").code == 250


def test_data_after_rcpt_with_no_valid_rcpt(node):
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<nobody@localhost>").code == 550
        r = c.cmd("DATA")
        assert r.code in (503, 554), r


def test_8bitmime_body_exact(node):
    body = (b"caf\xc3\xa9 na\xc3\xafve \xe2\x82\xac\r\n"
            b"latin-1: \xe9\xe8\xff\r\n"
            + bytes(range(0x80, 0x100)).replace(b"\r", b"") + b"\r\n")
    msg, mid = make_message(
        body=body, extra_headers=b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n")
    final, _, mr = send_mail(node.port, SENDER, ["alice@localhost"], msg,
                             mail_params="BODY=8BITMIME")
    assert mr.code == 250, mr
    assert final.code == 250, final
    box = only_message(node, "alice@localhost")
    assert delivered_body(node, "alice@localhost", box[0]["uid"])[1] == msg


def test_8bit_body_via_bdat_exact(node):
    msg, mid = make_message(body=b"\x00\x01 binary-ish \xff\xfe\r\n\xc3\xa9\r\n")
    with Conn(node.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<%s> BODY=8BITMIME\r\nRCPT TO:<alice@localhost>\r\n"
               b"BDAT %d LAST\r\n" % (SENDER.encode(), len(msg)) + msg)
        rs = c.replies(3)
    assert [r.code for r in rs] == [250, 250, 250], rs
    box = only_message(node, "alice@localhost")
    assert delivered_body(node, "alice@localhost", box[0]["uid"])[1] == msg


def test_body_param_values(node):
    with Conn(node.port) as c:
        c.ehlo()
        for v in ("7BIT", "8BITMIME", "8bitmime"):
            assert c.cmd("MAIL FROM:<%s> BODY=%s" % (SENDER, v)).code == 250
            assert c.cmd("RSET").code == 250
        r = c.cmd("MAIL FROM:<%s> BODY=9BIT" % SENDER)
        assert r.code in (501, 555), r


def test_smtputf8_sender_to_local_user(node):
    sender = "ü@example.org"
    msg, mid = make_message(subject="grüße".encode("utf-8"),
                            mail_from=sender,
                            body="Grüße, ünïcødé\r\n".encode("utf-8"))
    with Conn(node.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s> SMTPUTF8" % sender)
        assert r.code == 250, r
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg))
        r = c.reply()
        assert r.code == 250, r
    box = only_message(node, "alice@localhost")
    raw = node.cat("alice@localhost", box[0]["uid"])
    added, rest = split_trace(raw)
    assert rest == msg
    assert added["Return-Path"] == ["Return-Path: <ü@example.org>".encode()]
    assert re.search(rb"\bwith UTF8SMTP\b", added["Received"][0]), added
    assert box[0]["from"] and "example.org" in box[0]["from"]


def test_smtputf8_with_bdat_and_8bitmime(node):
    msg, mid = make_message(subject="bdat utf8", body="ok ✓\r\n".encode())
    with Conn(node.port) as c:
        c.ehlo()
        c.send("MAIL FROM:<δοκιμή@example.org> SMTPUTF8 BODY=8BITMIME\r\n"
               "RCPT TO:<alice@localhost>\r\n".encode()
               + b"BDAT %d LAST\r\n" % len(msg) + msg)
        rs = c.replies(3)
    assert [r.code for r in rs] == [250, 250, 250], rs
    box = only_message(node, "alice@localhost")
    assert delivered_body(node, "alice@localhost", box[0]["uid"])[1] == msg


def test_utf8_address_without_smtputf8_refused(node):
    with Conn(node.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<ü@example.org>")
        assert r.code in (553, 501, 550, 555), r
        assert r.enh in ("5.6.7", "5.5.2", "5.5.4", "5.1.7", "5.1.3"), r
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        r = c.cmd("RCPT TO:<ü@localhost>")
        assert r.code in (553, 501, 550, 555), r
        assert r.enh and r.enh.startswith("5."), r
        assert c.cmd("NOOP").code == 250


def test_smtputf8_after_helo_refused(node):
    # HELO sessions have no extensions (RFC 5321 §2.2.1)
    with Conn(node.port) as c:
        assert c.cmd("HELO client.test.example").code == 250
        r = c.cmd("MAIL FROM:<ü@example.org> SMTPUTF8")
        assert 500 <= r.code < 600, r


def test_invalid_utf8_address_refused(node):
    with Conn(node.port) as c:
        c.ehlo()
        r = c.cmd(b"MAIL FROM:<\xff\xfe@example.org> SMTPUTF8")
        assert 500 <= r.code < 600, r
        assert c.cmd("NOOP").code == 250


@pytest.mark.parametrize("mode", ["data", "bdat"])
def test_large_message_round_trip(node, mode):
    """20 MB, under the 25 MiB default limit: stored in chunks, read back
    through the control socket, byte for byte."""
    rnd = random.Random(5)
    line_pool = [bytes(rnd.choice(b"abcdefghij .,;:-_0123456789")
                       for _ in range(rnd.randint(0, 120))) + b"\r\n"
                 for _ in range(512)]
    body = b"".join(rnd.choice(line_pool) for _ in range(330000))
    msg, mid = make_message(body=body, subject="large " + mode)
    assert 18 << 20 < len(msg) < 25 << 20, len(msg)
    with Conn(node.port, timeout=120) as c:
        c.ehlo()
        if mode == "data":
            final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"],
                                    msg, conn=c,
                                    mail_params="SIZE=%d" % len(msg))
        else:
            assert c.cmd("MAIL FROM:<%s> SIZE=%d" % (SENDER, len(msg))) \
                .code == 250
            assert c.cmd("RCPT TO:<alice@localhost>").code == 250
            step = 1 << 20
            blob = b""
            for i in range(0, len(msg), step):
                part = msg[i:i + step]
                last = b" LAST" if i + step >= len(msg) else b""
                blob += b"BDAT %d%s\r\n" % (len(part), last) + part
            c.send(blob)
            rs = c.replies((len(msg) + step - 1) // step)
            assert all(r.code == 250 for r in rs), rs
            final = rs[-1]
        assert final.code == 250, final
    box = only_message(node, "alice@localhost")
    assert box[0]["size"] >= len(msg)
    r = node.cli("mailbox", "cat", "alice@localhost", str(box[0]["uid"]),
                 timeout=120)
    assert r.returncode == 0, r.stderr
    assert split_trace(r.stdout)[1] == msg
