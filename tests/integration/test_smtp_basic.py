"""RFC 5321 basics: greeting, EHLO, commands, codes, pipelining, trace."""
import os
import re
import subprocess

from helpers.smtp import Conn, dot_stuff, make_message, send_mail, split_trace
from conftest import SLOW

EXTENSIONS = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
              "CHUNKING", "DSN"]


def ext_keywords(reply):
    return {ln.split()[0].upper(): ln for ln in reply.lines[1:] if ln}


def test_greeting_names_host(node):
    with Conn(node.port) as c:
        assert c.greeting.code == 220
        assert c.greeting.lines[0].startswith("mx.test.example"), c.greeting


def test_ehlo_lists_extensions(node):
    with Conn(node.port) as c:
        r = c.cmd("EHLO client.test.example")
        assert r.code == 250
        assert r.lines[0].startswith("mx.test.example"), r
        kw = ext_keywords(r)
        for ext in EXTENSIONS:
            assert ext in kw, "EHLO lacks %s: %r" % (ext, r)
        assert kw.get("SIZE") == "SIZE 26214400", r
        # the relay listener offers STARTTLS (RFC 3207); AUTH is offered
        # without TLS only to auth.plaintext_networks (default: loopback,
        # which 127.0.0.1 is); see test_tls.py / test_auth.py
        assert kw.get("STARTTLS") == "STARTTLS", r
        assert kw.get("AUTH") == "AUTH PLAIN LOGIN", r
        # the multiline form: every line but the last uses "250-"
        assert all(x.startswith(b"250-") for x in r.raw[:-1]), r.raw
        assert r.raw[-1].startswith(b"250 ")


def test_ehlo_size_follows_config(node_factory):
    n = node_factory(conf={"limits.max_message_size": "65536"}, users=())
    with Conn(n.port) as c:
        kw = ext_keywords(c.ehlo())
        assert kw.get("SIZE") == "SIZE 65536"


def test_helo_then_transaction_received_says_smtp(node):
    msg, mid = make_message(subject="helo")
    with Conn(node.port) as c:
        r = c.cmd("HELO client.test.example")
        assert r.code == 250
        final, rr, mr = send_mail(node.port, "s@client.test.example",
                                  ["alice@localhost"], msg, conn=c)
        assert final.code == 250, final
    box = node.wait_mailbox("alice@localhost", 1)
    raw = node.cat("alice@localhost", box[0]["uid"])
    added, rest = split_trace(raw)
    rec = added["Received"][0]
    assert re.search(rb"\bwith SMTP\b", rec), rec
    assert rest == msg


def test_enhanced_status_codes_on_every_reply(node):
    with Conn(node.port) as c:
        c.ehlo()
        r = c.cmd("NOOP")
        assert (r.code, r.enh) == (250, "2.0.0"), r
        r = c.cmd("MAIL FROM:<s@client.test.example>")
        assert (r.code, r.enh) == (250, "2.1.0"), r
        r = c.cmd("RCPT TO:<alice@localhost>")
        assert (r.code, r.enh) == (250, "2.1.5"), r
        r = c.cmd("RSET")
        assert (r.code, r.enh) == (250, "2.0.0"), r
        r = c.cmd("VRFY alice@localhost")
        assert r.code == 252 and r.enh and r.enh.startswith("2."), r
        r = c.cmd("FOOBAR")
        assert r.enh and r.enh.startswith("5."), r
        r = c.cmd("RCPT TO:<alice@localhost>")
        assert r.enh and r.enh.startswith("5."), r
        r = c.cmd("MAIL FROM:<s@client.test.example>")
        r = c.cmd("RCPT TO:<alice@localhost>")
        r = c.cmd("DATA")
        assert r.code == 354
        msg, _ = make_message()
        c.send(dot_stuff(msg))
        r = c.reply()
        assert r.code == 250 and re.fullmatch(r"2\.\d\.\d", r.enh or ""), r
        r = c.cmd("QUIT")
        assert (r.code, r.enh) == (221, "2.0.0"), r
        assert c.wait_closed(5)


def test_vrfy_252(node):
    with Conn(node.port) as c:
        c.ehlo()
        for arg in ("alice@localhost", "nobody@localhost", "alice"):
            r = c.cmd("VRFY " + arg)
            assert r.code == 252, r
            assert r.enh and r.enh.startswith("2."), r


def test_expn_help_noop(node):
    with Conn(node.port) as c:
        c.ehlo()
        r = c.cmd("EXPN staff")
        assert r.code in (502, 252), r
        assert r.enh, r
        r = c.cmd("HELP")
        assert r.code == 214, r
        r = c.cmd("NOOP")
        assert r.code == 250
        r = c.cmd("NOOP ignored argument")
        assert r.code == 250, r


def test_bad_sequence_503(node):
    with Conn(node.port) as c:
        c.ehlo()
        r = c.cmd("RCPT TO:<alice@localhost>")
        assert (r.code, r.enh) == (503, "5.5.1"), r
        r = c.cmd("DATA")
        assert (r.code, r.enh) == (503, "5.5.1"), r
        assert c.cmd("MAIL FROM:<s@client.test.example>").code == 250
        r = c.cmd("DATA")
        assert (r.code, r.enh) == (503, "5.5.1"), r
        r = c.cmd("MAIL FROM:<s@client.test.example>")
        assert (r.code, r.enh) == (503, "5.5.1"), r  # nested MAIL
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        # the transaction survived the errors
        r = c.cmd("DATA")
        assert r.code == 354
        msg, mid = make_message()
        c.send(dot_stuff(msg))
        assert c.reply().code == 250
    box = node.wait_mailbox("alice@localhost", 1)
    assert len(box) == 1


def test_unknown_command_500(node):
    with Conn(node.port) as c:
        c.ehlo()
        r = c.cmd("FROBNICATE now")
        assert (r.code, r.enh) == (500, "5.5.2"), r
        r = c.cmd("")
        assert r.code in (500, 501), r
        assert c.cmd("NOOP").code == 250


def test_syntax_errors_are_5xx_and_session_goes_on(node):
    with Conn(node.port) as c:
        c.ehlo()
        for bad in ("MAIL FROM:", "MAIL FROM:<unterminated",
                    "MAIL TO:<a@b.example>", "MAIL FROM:<a@b.example> FOO=BAR",
                    "MAIL FROM:<a@b@c>"):
            r = c.cmd(bad)
            assert 500 <= r.code < 600, (bad, r)
            assert r.enh and r.enh.startswith("5."), (bad, r)
        assert c.cmd("NOOP").code == 250


def test_rset_clears_transaction(node):
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@client.test.example>").code == 250
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        assert c.cmd("RSET").code == 250
        assert c.cmd("DATA").code == 503
        assert c.cmd("RCPT TO:<alice@localhost>").code == 503


def test_commands_are_case_insensitive(node):
    msg, mid = make_message()
    with Conn(node.port) as c:
        assert c.cmd("ehlo client.test.example").code == 250
        assert c.cmd("mail from:<s@client.test.example>").code == 250
        assert c.cmd("rcpt to:<alice@localhost>").code == 250
        assert c.cmd("data").code == 354
        c.send(dot_stuff(msg))
        assert c.reply().code == 250
        assert c.cmd("quit").code == 221


def test_null_sender_and_trace_headers(node):
    msg, mid = make_message(subject="bounce-like")
    final, rr, mr = send_mail(node.port, "", ["alice@localhost"], msg)
    assert final.code == 250, final
    box = node.wait_mailbox("alice@localhost", 1)
    assert len(box) == 1
    raw = node.cat("alice@localhost", box[0]["uid"])
    added, rest = split_trace(raw)
    assert added["Return-Path"] == [b"Return-Path: <>"], added
    assert rest == msg


def test_received_header_names_queue_id(node):
    msg, mid = make_message(subject="trace")
    final, rr, mr = send_mail(node.port, "sender@client.test.example",
                              ["alice@localhost"], msg)
    assert final.code == 250
    box = node.wait_mailbox("alice@localhost", 1)
    entry = box[0]
    qid = str(entry["queue_id"])
    assert qid
    raw = node.cat("alice@localhost", entry["uid"])
    added, rest = split_trace(raw)
    assert set(added) == {"Return-Path", "Delivered-To", "Received"}, raw[:600]
    assert added["Return-Path"] == [b"Return-Path: <sender@client.test.example>"]
    assert added["Delivered-To"][0].split(b":", 1)[1].strip() == \
        b"alice@localhost"
    rec = added["Received"][0]
    assert rec.startswith(b"Received: from "), rec
    assert re.search(rb"\bby mx\.test\.example\b", rec), rec
    assert re.search(rb"\bwith ESMTP\b", rec), rec
    assert re.search(rb"\bid " + re.escape(qid.encode()) + rb"\b", rec), \
        (qid, rec)
    assert b";" in rec  # date-time at the end (RFC 5322 §3.6.7)
    assert rest == msg
    # exactly one Received field added: the message had none
    assert raw.count(b"\r\nReceived:") + raw.startswith(b"Received:") == 1
    assert entry["subject"] == "trace"
    assert entry["message_id"].strip("<>") == mid
    assert entry["size"] >= len(msg)


def test_pipelined_transaction_single_write(node):
    msg1, mid1 = make_message(subject="p1")
    msg2, mid2 = make_message(subject="p2", to="bob@localhost")
    with Conn(node.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<s@client.test.example>\r\n"
               b"RCPT TO:<alice@localhost>\r\n"
               b"RCPT TO:<nosuchuser@localhost>\r\n"
               b"RCPT TO:<bob@localhost>\r\n"
               b"DATA\r\n")
        rs = c.replies(5)
        assert [r.code for r in rs] == [250, 250, 550, 250, 354], rs
        assert rs[2].enh == "5.1.1", rs[2]
        # message, a whole second transaction and QUIT in one write
        c.send(dot_stuff(msg1) +
               b"RSET\r\nMAIL FROM:<s2@client.test.example>\r\n"
               b"RCPT TO:<bob@localhost>\r\nNOOP\r\nDATA\r\n")
        rs = c.replies(6)
        assert [r.code for r in rs] == [250, 250, 250, 250, 250, 354], rs
        c.send(dot_stuff(msg2) + b"QUIT\r\n")
        rs = c.replies(2)
        assert [r.code for r in rs] == [250, 221], rs
        assert c.wait_closed(5)
        assert c.buf == b""
    a = node.wait_mailbox("alice@localhost", 1)
    b = node.wait_mailbox("bob@localhost", 2)
    assert sorted(x["message_id"].strip("<>") for x in a) == [mid1]
    assert sorted(x["message_id"].strip("<>") for x in b) == sorted([mid1,
                                                                     mid2])


def test_pipelined_many_transactions(node):
    n = 20
    msgs = [make_message(subject="pp%d" % i) for i in range(n)]
    with Conn(node.port) as c:
        c.ehlo()
        # RFC 2920: DATA ends a group; the client waits for 354 each time
        for m, _ in msgs:
            c.send(b"MAIL FROM:<s@client.test.example>\r\n"
                   b"RCPT TO:<alice@localhost>\r\nDATA\r\n")
            rs = c.replies(3)
            assert [r.code for r in rs] == [250, 250, 354], rs
            c.send(dot_stuff(m))
            assert c.reply().code == 250
    box = node.wait_mailbox("alice@localhost", n)
    assert sorted(x["message_id"].strip("<>") for x in box) == \
        sorted(mid for _, mid in msgs)


def test_smtplib_sendmail(node):
    import smtplib
    msg, mid = make_message(subject="via smtplib")
    with smtplib.SMTP("127.0.0.1", node.port, timeout=15 * SLOW) as s:
        s.ehlo("client.test.example")
        assert s.has_extn("pipelining")
        refused = s.sendmail("s@client.test.example", ["alice@localhost"], msg)
        assert refused == {}
    box = node.wait_mailbox("alice@localhost", 1)
    assert box[0]["message_id"].strip("<>") == mid
    assert box[0]["subject"] == "via smtplib"


def run_swaks(*args):
    return subprocess.run(["swaks", "--timeout", str(int(15 * SLOW))]
                          + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=60 * SLOW)


def test_swaks_pipeline(node):
    r = run_swaks("--server", "127.0.0.1:%d" % node.port,
                  "--to", "alice@localhost", "--from", "s@client.test.example",
                  "--pipeline", "--helo", "client.test.example")
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert "PIPELINING" in out
    box = node.wait_mailbox("alice@localhost", 1)
    assert len(box) == 1


def test_swaks_data_with_dots(node, tmp_path):
    msg, mid = make_message(subject="swaks data",
                            body=b".leading dot\r\n..two dots\r\n.\r\nend\r\n")
    p = tmp_path / "msg.eml"
    p.write_bytes(msg)
    r = run_swaks("--server", "127.0.0.1:%d" % node.port,
                  "--to", "alice@localhost,bob@localhost",
                  "--from", "s@client.test.example",
                  "--data", "@%s" % p)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    for user in ("alice@localhost", "bob@localhost"):
        box = node.wait_mailbox(user, 1)
        assert len(box) == 1
        raw = node.cat(user, box[0]["uid"])
        added, rest = split_trace(raw)
        # swaks ends the data with CRLF.CRLF even after a final CRLF
        assert rest in (msg, msg + b"\r\n"), (rest, msg)


def test_swaks_unknown_user_fails(node):
    r = run_swaks("--server", "127.0.0.1:%d" % node.port,
                  "--to", "nobody@localhost", "--from", "s@client.test.example")
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode != 0, out
    assert "550" in out and "5.1.1" in out, out
