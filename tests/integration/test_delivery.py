"""Outbound delivery: a real node, a real DNS server (unbound) serving test
zones, real receiving servers on loopback (aiosmtpd, scriptable, and
Postfix's smtp-sink). Nothing leaves the machine.

Receivers listen on distinct loopback addresses (127.0.0.10, .11, ...) on
one port, which the node is told with `[delivery] port`, so that MX
records can point at them.
"""
import email
import email.policy
import os
import shutil
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import SLOW
from helpers.dnsserver import DNSServer
from helpers.smtpserver import SMTPServer

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def free_port_on(*hosts):
    """A TCP port free on every one of hosts."""
    for _ in range(100):
        s = socket.socket()
        s.bind((hosts[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for h in hosts[1:]:
            t = socket.socket()
            try:
                t.bind((h, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise AssertionError("no common free port")


MX1, MX2, MX3 = "127.0.0.10", "127.0.0.11", "127.0.0.12"

ZONE = [
    # MX preference: mx1 (10) before mx2 (20)
    "pref.test. 300 IN MX 20 mx2.pref.test.",
    "pref.test. 300 IN MX 10 mx1.pref.test.",
    "mx1.pref.test. 300 IN A %s" % MX1,
    "mx2.pref.test. 300 IN A %s" % MX2,
    # implicit MX: no MX record, an A record
    "implicit.test. 300 IN A %s" % MX3,
    # null MX (RFC 7505)
    "nullmx.test. 300 IN MX 0 .",
    # everything else at mx3
    "dest.test. 300 IN MX 10 mx.dest.test.",
    "mx.dest.test. 300 IN A %s" % MX3,
    "other.test. 300 IN MX 10 mx.other.test.",
    "mx.other.test. 300 IN CNAME mx.dest.test.",
]


@pytest.fixture
def env(tmp_path, node_factory):
    """DNS + a port for receivers + a node configured to use them."""
    dns = DNSServer(tmp_path, ZONE)
    dns.start()
    port = free_port_on(MX1, MX2, MX3)
    servers = []

    def server(host=MX3, **opts):
        s = SMTPServer(host=host, port=port, **opts)
        s.start()
        servers.append(s)
        return s

    def node(**conf):
        c = {"dns.server": dns.server, "delivery.port": port,
             "delivery.retry_first": "1h", "delivery.tls": "none",
             "smtp.domains": "localhost"}
        c.update(conf)
        return node_factory(conf=c)

    class Env:
        pass

    e = Env()
    e.dns, e.port, e.server, e.node = dns, port, server, node
    yield e
    for s in servers:
        try:
            s.stop()
        except Exception:
            pass
    dns.stop()


def send(node, rcpts, mail_from="alice@localhost", body=None, subject="t",
         mail_options=(), rcpt_options=()):
    msg = body or ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n"
                   "Message-ID: <%s@test>\r\n\r\nhello\r\n.leading dot\r\n"
                   % (mail_from, rcpts[0], subject, time.monotonic_ns()))
    with smtplib.SMTP("127.0.0.1", node.port, timeout=30) as s:
        s.ehlo("client.test")
        refused = s.sendmail(mail_from, rcpts, msg.encode("utf-8"),
                             mail_options=list(mail_options),
                             rcpt_options=list(rcpt_options))
        assert not refused
    return msg


def wait_for(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s" % what)


def entries(node):
    return node.queue()


def dsns(node, address="alice@localhost"):
    """The reports in a local mailbox, parsed with Python's email package."""
    out = []
    r = node.cli("mailbox", "list", address, "--json")
    if r.returncode != 0:
        return out  # no mailbox yet
    import json
    for m in json.loads(r.stdout):
        raw = node.cli_ok("mailbox", "cat", address, str(m["uid"])).stdout
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if msg.get_content_type() == "multipart/report":
            out.append(msg)
    return out


def report_fields(msg):
    """(per-message fields, [per-recipient fields]) of a DSN."""
    parts = list(msg.iter_parts())
    assert parts[0].get_content_type() == "text/plain"
    ds = parts[1]
    assert ds.get_content_type() == "message/delivery-status"
    blocks = ds.get_payload()
    return blocks[0], blocks[1:]


# ---- routing --------------------------------------------------------------

def test_mx_preference_order(env):
    mx1 = env.server(MX1)
    mx2 = env.server(MX2)
    n = env.node()
    send(n, ["u@pref.test"])
    wait_for(lambda: mx1.messages, what="delivery to mx1")
    n.wait_queue_empty()
    assert not mx2.messages, "the higher preference must be tried first"
    m = mx1.messages[0]
    assert m.mail_from == "alice@localhost"
    assert m.rcpt_tos == ["u@pref.test"]
    # the body arrives intact: dot-stuffing undone, our Received on top
    assert b"\r\n.leading dot\r\n" in m.content
    assert m.content.startswith(b"Received: from client.test")


def test_mx_fallback_to_second(env):
    # nothing listens on mx1: connection refused, mx2 takes it
    mx2 = env.server(MX2)
    n = env.node()
    send(n, ["u@pref.test"])
    wait_for(lambda: mx2.messages, what="delivery to mx2")
    n.wait_queue_empty()
    log = n.stderr()
    assert "relay=mx2.pref.test[127.0.0.11]" in log


def test_mx_fallback_on_4xx_greeting(env):
    mx1 = env.server(MX1, ehlo_code="421 4.3.2 busy, try later")
    mx2 = env.server(MX2)
    n = env.node()
    send(n, ["u@pref.test"])
    wait_for(lambda: mx2.messages, what="delivery to mx2")
    assert not mx1.messages


def test_implicit_mx_and_cname(env):
    srv = env.server(MX3)
    n = env.node()
    send(n, ["a@implicit.test"])
    send(n, ["b@other.test"])  # MX target is a CNAME
    wait_for(lambda: len(srv.messages) == 2, what="two deliveries")
    got = sorted(r for m in srv.messages for r in m.rcpt_tos)
    assert got == ["a@implicit.test", "b@other.test"]
    n.wait_queue_empty()


def test_null_mx_bounces_at_once(env):
    n = env.node()
    send(n, ["x@nullmx.test"])
    reports = wait_for(lambda: dsns(n), what="a bounce")
    n.wait_queue_empty()
    msg = reports[0]
    top, rcpts = report_fields(msg)
    assert rcpts[0]["Final-Recipient"].lower() == "rfc822; x@nullmx.test"
    assert rcpts[0]["Action"] == "failed"
    assert rcpts[0]["Status"] == "5.1.10"
    assert msg["To"] and "alice@localhost" in msg["To"]
    assert msg["Auto-Submitted"] == "auto-replied"


def test_smtp_sink_receiver(env):
    """Postfix's smtp-sink as the receiving MTA, with connection reuse."""
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.skip("smtp-sink not installed")
    proc = subprocess.Popen([SMTP_SINK, "-u", "root", "-c",
                             "%s:%d" % (MX3, env.port), "100"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        n = env.node()
        for i in range(5):
            send(n, ["r%d@dest.test" % i, "s%d@dest.test" % i])
        n.wait_queue_empty(timeout=30)
        st = n.status()
        assert st["delivery"]["delivered"] == 10
    finally:
        proc.terminate()
        proc.wait()


# ---- failures, retries, bounces --------------------------------------------

def test_temporary_failure_then_success(env):
    srv = env.server(MX3, rcpt_codes={"u@dest.test":
                                      "451 4.3.0 greylisted, come back"})
    n = env.node(**{"delivery.retry_first": "1s"})
    send(n, ["u@dest.test"])
    # deferred, with the reason and a history line
    e = wait_for(lambda: [x for x in entries(n)
                          if x["state"] == "deferred"], what="deferral")[0]
    assert "451 4.3.0 greylisted" in e["last_error"]
    show = n.cli_json("queue", "show", e["id"].split(".")[0])
    hist = [h for r in show["recipients"] for h in r.get("history", [])] \
        if isinstance(show, dict) and "recipients" in show else \
        [h for r in show for h in r.get("history", [])]
    assert any("greylisted" in h for h in hist)
    srv.opts["rcpt_codes"] = {}
    wait_for(lambda: srv.messages, timeout=30, what="delivery after retry")
    n.wait_queue_empty()
    assert not dsns(n), "a delivered message must not be bounced"


def test_permanent_failure_dsn(env):
    srv = env.server(MX3, rcpt_codes={
        "nobody@dest.test": "550 5.1.1 <nobody@dest.test>: no such user"})
    n = env.node()
    send(n, ["nobody@dest.test", "fine@dest.test"],
         rcpt_options=["NOTIFY=FAILURE,DELAY"])
    wait_for(lambda: srv.messages, what="delivery of the good recipient")
    reports = wait_for(lambda: dsns(n), what="a bounce")
    n.wait_queue_empty()
    assert srv.messages[0].rcpt_tos == ["fine@dest.test"]
    msg = reports[0]
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    top, rcpts = report_fields(msg)
    assert top["Reporting-MTA"] == "dns; mx.test.example"
    assert len(rcpts) == 1, "only the failed recipient is reported"
    r = rcpts[0]
    assert r["Final-Recipient"].lower() == "rfc822; nobody@dest.test"
    assert r["Action"] == "failed"
    assert r["Status"] == "5.1.1"
    assert "mx.dest.test" in r["Remote-MTA"]
    assert "550" in r["Diagnostic-Code"] and "no such user" in \
        r["Diagnostic-Code"]
    # the original's headers, not its body (RET not given)
    orig = list(msg.iter_parts())[2]
    assert orig.get_content_type() == "text/rfc822-headers"
    text = orig.get_content() if hasattr(orig, "get_content") else \
        orig.get_payload()
    text = text if isinstance(text, str) else str(text)
    assert "Subject: t" in text and "leading dot" not in text


def test_ret_full_and_envid(env):
    env.server(MX3, rcpt_codes={"x@dest.test": "554 5.7.1 rejected"})
    n = env.node()
    send(n, ["x@dest.test"], mail_options=["RET=FULL", "ENVID=env-42"])
    msg = wait_for(lambda: dsns(n), what="a bounce")[0]
    top, rcpts = report_fields(msg)
    assert top["Original-Envelope-Id"] == "env-42"
    orig = list(msg.iter_parts())[2]
    assert orig.get_content_type() == "message/rfc822"
    assert "leading dot" in orig.as_string()


def test_data_5xx_bounces_everyone_accepted(env):
    env.server(MX3, dot_code="552 5.3.4 message too big for me")
    n = env.node()
    send(n, ["a@dest.test", "b@dest.test"])
    msg = wait_for(lambda: dsns(n), what="a bounce")[0]
    _, rcpts = report_fields(msg)
    assert sorted(r["Final-Recipient"].lower() for r in rcpts) == \
        ["rfc822; a@dest.test", "rfc822; b@dest.test"]
    assert all(r["Status"] == "5.3.4" for r in rcpts)
    n.wait_queue_empty()


def test_queue_lifetime_expiry(env):
    env.server(MX3, rcpt_codes={"u@dest.test": "450 4.2.0 mailbox busy"})
    n = env.node(**{"delivery.retry_first": "1s",
                    "delivery.retry_max": "1s",
                    "delivery.queue_lifetime": "3s"})
    t0 = time.monotonic()
    send(n, ["u@dest.test"])
    msg = wait_for(lambda: dsns(n), timeout=30, what="expiry bounce")[0]
    assert time.monotonic() - t0 >= 1.5  # arrival is kept in seconds
    _, rcpts = report_fields(msg)
    assert rcpts[0]["Action"] == "failed"
    assert rcpts[0]["Status"].startswith("4.")
    assert "lifetime" in rcpts[0]["Diagnostic-Code"]
    n.wait_queue_empty()


def test_delay_notice_once(env):
    env.server(MX3, rcpt_codes={"u@dest.test": "450 4.2.0 mailbox busy"})
    n = env.node(**{"delivery.retry_first": "1s",
                    "delivery.retry_max": "1s",
                    "delivery.delay_notice": "1s"})
    send(n, ["u@dest.test"])
    msg = wait_for(lambda: dsns(n), timeout=30, what="delay notice")[0]
    _, rcpts = report_fields(msg)
    assert rcpts[0]["Action"] == "delayed"
    assert rcpts[0]["Status"] == "4.2.0"
    assert msg["Subject"].startswith("Delayed Mail")
    # more attempts, no second notice
    wait_for(lambda: [e for e in entries(n) if e["attempts"] >= 4],
             timeout=30, what="more attempts")
    assert len(dsns(n)) == 1


def test_null_sender_never_bounced(env):
    env.server(MX3, rcpt_codes={"u@dest.test": "550 5.1.1 no such user"})
    n = env.node()
    send(n, ["u@dest.test"], mail_from="")
    # the failed bounce goes to the postmaster, once
    reports = wait_for(lambda: dsns(n, "postmaster@localhost"),
                       what="a report to the postmaster")
    n.wait_queue_empty()
    time.sleep(0.5)
    assert len(dsns(n, "postmaster@localhost")) == 1
    assert len(reports) == 1
    assert "double_bounce=1" in n.stderr()


def test_restart_with_deferred_queue(env):
    n = env.node(**{"delivery.retry_first": "2s"})
    for i in range(3):
        send(n, ["u%d@dest.test" % i])
    # nobody listens yet: all deferred
    wait_for(lambda: len([e for e in entries(n)
                          if e["state"] == "deferred"]) == 3,
             timeout=30, what="three deferrals")
    n.stop()
    srv = env.server(MX3)
    n.start()
    wait_for(lambda: len(srv.messages) == 3, timeout=30,
             what="the deferred mail after restart")
    n.wait_queue_empty()


def test_queue_retry_now(env):
    n = env.node()  # retry_first 1h
    send(n, ["u@dest.test"])
    wait_for(lambda: [e for e in entries(n) if e["state"] == "deferred"],
             what="deferral")
    srv = env.server(MX3)
    n.cli_ok("queue", "retry", "--all")
    wait_for(lambda: srv.messages, what="delivery after queue retry")
    n.wait_queue_empty()


def test_smtputf8_to_server_without_it(env):
    env.server(MX3, smtputf8=False)
    n = env.node()
    with smtplib.SMTP("127.0.0.1", n.port, timeout=30) as s:
        s.ehlo("client.test")
        s.sendmail("alice@localhost", ["üser@dest.test"],
                   "Subject: ü\r\n\r\nhi\r\n".encode("utf-8"),
                   mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    msg = wait_for(lambda: [m for m in n.mailbox("alice@localhost")],
                   what="a bounce")
    raw = n.cli_ok("mailbox", "cat", "alice@localhost",
                   str(msg[0]["uid"])).stdout
    raw = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    assert "5.6.7" in raw
    assert "SMTPUTF8" in raw
    n.wait_queue_empty()


def test_size_too_small_bounces(env):
    env.server(MX3, size=1000)
    n = env.node()
    send(n, ["u@dest.test"], body="Subject: big\r\n\r\n" +
         ("x" * 70 + "\r\n") * 30)
    msg = wait_for(lambda: dsns(n), what="a bounce")[0]
    _, rcpts = report_fields(msg)
    assert rcpts[0]["Status"] == "5.3.4"


def test_dsn_passed_on_and_relayed(env):
    with_dsn = env.server(MX3, dsn=True)
    n = env.node()
    send(n, ["a@dest.test"], rcpt_options=["NOTIFY=SUCCESS,FAILURE",
                                           "ORCPT=rfc822;a@dest.test"],
         mail_options=["ENVID=abc", "RET=HDRS"])
    wait_for(lambda: with_dsn.messages, what="delivery")
    m = with_dsn.messages[0]
    # (aiosmtpd records parameters upper-cased)
    ropts = [o.upper() for o in m.rcpt_options[0]]
    mopts = [o.upper() for o in m.mail_options]
    assert "NOTIFY=SUCCESS,FAILURE" in ropts, ropts
    assert "ORCPT=RFC822;A@DEST.TEST" in ropts, ropts
    assert "ENVID=ABC" in mopts and "RET=HDRS" in mopts, mopts
    n.wait_queue_empty()
    time.sleep(0.3)
    assert not dsns(n), "the remote server reports success itself"
    with_dsn.stop()
    no_dsn = env.server(MX3, dsn=False)
    send(n, ["b@dest.test"], rcpt_options=["NOTIFY=SUCCESS"])
    msg = wait_for(lambda: dsns(n), what="a relayed report")[0]
    _, rcpts = report_fields(msg)
    assert rcpts[0]["Action"] == "relayed"
    assert rcpts[0]["Status"].startswith("2.")
    assert not any("NOTIFY" in o for o in no_dsn.messages[0].rcpt_options[0])


def test_tls_required_but_not_offered(env):
    env.server(MX3)  # no STARTTLS
    n = env.node(**{"delivery.tls_policy": "dest.test=required"})
    send(n, ["u@dest.test"])
    e = wait_for(lambda: [x for x in entries(n) if x["state"] == "deferred"],
                 what="deferral")[0]
    assert "TLS" in e["last_error"]


def test_opportunistic_starttls(env):
    srv = env.server(MX3, starttls=True)
    n = env.node(**{"delivery.tls": "opportunistic"})
    send(n, ["u@dest.test"])
    wait_for(lambda: srv.messages, what="delivery")
    assert srv.messages[0].tls


def test_smarthost_with_auth(env):
    srv = env.server(MX2, starttls=True, auth_users={"relayuser": "pw1"})
    n = env.node(**{"delivery.smarthost": "[%s]:%d" % (MX2, env.port),
                    "delivery.smarthost_user": "relayuser",
                    "delivery.smarthost_password": "pw1"})
    send(n, ["someone@anywhere.example"])
    wait_for(lambda: srv.messages, what="delivery via the smarthost")
    assert srv.logins == ["relayuser"]
    assert srv.messages[0].tls


def test_several_recipients_one_transaction_and_reuse(env):
    srv = env.server(MX3)
    n = env.node()
    send(n, ["a@dest.test", "b@dest.test", "c@other.test"])
    wait_for(lambda: sum(len(m.rcpt_tos) for m in srv.messages) == 3,
             what="three recipients")
    # dest.test's two recipients in one transaction
    assert sorted(len(m.rcpt_tos) for m in srv.messages) == [1, 2]


class SlowServer:
    """A minimal SMTP server that counts concurrent sessions and takes
    `delay` seconds to answer the end of data."""

    def __init__(self, host, port, delay=0.3):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(100)
        self.delay = delay
        self.now = self.max = self.msgs = 0
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)
        f = c.makefile("rb")
        try:
            c.sendall(b"220 slow ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    break
                cmd = line[:4].upper()
                if cmd == b"EHLO":
                    c.sendall(b"250-slow\r\n250 8BITMIME\r\n")
                elif cmd == b"DATA":
                    c.sendall(b"354 go\r\n")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    time.sleep(self.delay)
                    with self.lock:
                        self.msgs += 1
                    c.sendall(b"250 2.0.0 ok\r\n")
                elif cmd == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    break
                else:
                    c.sendall(b"250 ok\r\n")
        finally:
            with self.lock:
                self.now -= 1
            c.close()

    def close(self):
        self.stopping = True
        self.sock.close()


def test_per_destination_concurrency_limit(env):
    slow = SlowServer(MX3, env.port, delay=0.3)
    try:
        n = env.node(**{"delivery.concurrency_per_destination": "2"})
        for i in range(10):
            send(n, ["u%d@dest.test" % i])
        wait_for(lambda: slow.msgs == 10, timeout=60, what="ten deliveries")
        assert slow.max <= 2, "at most 2 connections to one destination"
        assert slow.max == 2, "the limit should be used"
        n.wait_queue_empty()
    finally:
        slow.close()


def test_delay_notice_then_final_bounce(env):
    env.server(MX3, rcpt_codes={"u@dest.test": "450 4.2.0 mailbox busy"})
    n = env.node(**{"delivery.retry_first": "1s",
                    "delivery.retry_max": "1s",
                    "delivery.delay_notice": "1s",
                    "delivery.queue_lifetime": "4s"})
    send(n, ["u@dest.test"])
    reports = wait_for(lambda: [m for m in dsns(n)
                                if report_fields(m)[1][0]["Action"] ==
                                "failed"],
                       timeout=30, what="the final bounce")
    actions = sorted(report_fields(m)[1][0]["Action"] for m in dsns(n))
    assert actions == ["delayed", "failed"], actions
    assert len(reports) == 1
    n.wait_queue_empty()


def test_wrong_smarthost_password_defers(env):
    srv = env.server(MX2, starttls=True, auth_users={"relayuser": "right"})
    n = env.node(**{"delivery.smarthost": "[%s]:%d" % (MX2, env.port),
                    "delivery.smarthost_user": "relayuser",
                    "delivery.smarthost_password": "wrong"})
    send(n, ["someone@anywhere.example"])
    e = wait_for(lambda: [x for x in entries(n) if x["state"] == "deferred"],
                 what="deferral")[0]
    assert "535" in e["last_error"] or "auth" in e["last_error"].lower()
    assert not srv.messages
    time.sleep(0.5)
    assert not dsns(n), "a login problem at the smarthost must not bounce"


def test_failed_bounce_goes_to_postmaster(env):
    # both the recipient and the (remote) sender are refused
    env.server(MX3, rcpt_codes={"x@dest.test": "550 5.1.1 no such user",
                                "bob@dest.test": "550 5.1.1 no bob here"})
    n = env.node()
    send(n, ["x@dest.test"], mail_from="bob@dest.test")
    reports = wait_for(lambda: dsns(n, "postmaster@localhost"),
                       timeout=30, what="a double bounce")
    n.wait_queue_empty()
    time.sleep(0.5)
    assert len(dsns(n, "postmaster@localhost")) == 1
    _, rcpts = report_fields(reports[0])
    assert rcpts[0]["Final-Recipient"].lower() == "rfc822; bob@dest.test"


def test_idle_session_kept_for_the_next_message(env):
    """Like Postfix's connection cache: a session with nothing to send waits
    briefly for more mail to its destination, then says QUIT."""
    srv = env.server(MX3)
    n = env.node()
    send(n, ["a@dest.test"])
    wait_for(lambda: len(srv.messages) == 1, what="first delivery")
    send(n, ["b@dest.test"])
    wait_for(lambda: len(srv.messages) == 2, what="second delivery")
    assert srv.connections == 1, srv.commands
    time.sleep(3)  # past the 2 s it waits: the session is closed
    send(n, ["c@dest.test"])
    wait_for(lambda: len(srv.messages) == 3, what="third delivery")
    assert srv.connections == 2, srv.commands
