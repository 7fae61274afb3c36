"""SMTP AUTH (RFC 4954, PLAIN RFC 4616, LOGIN), submission (RFC 6409),
failed-login throttling, sender policy and the headers added to
authenticated submissions."""
import base64
import email.utils
import re
import smtplib
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import SLOW
from helpers.authsmtp import (PASSWORD, auth_plain, b64, ehlo_keywords,
                              header_fields, login, plain_ir, smtps_conn,
                              starttls, submit, timed, tls_context, unfold)
from helpers.smtp import Conn, split_trace

ALICE = "alice@localhost"
BOB = "bob@localhost"


def simple_message(to=BOB, frm=ALICE, subject="auth test", extra=b""):
    return (b"From: <" + frm.encode() + b">\r\n"
            b"To: <" + to.encode() + b">\r\n"
            b"Subject: " + subject.encode() + b"\r\n" + extra +
            b"\r\nHello.\r\n")


@pytest.fixture
def fast(node_factory):
    """A node that answers failed logins at once (auth.fail_delay = 0)."""
    return node_factory(conf={"auth.fail_delay": 0})


def assert_535(r):
    assert (r.code, r.enh) == (535, "5.7.8"), r


def assert_not_authenticated(c):
    """On a submission session: MAIL still needs AUTH."""
    r = c.cmd("MAIL FROM:<%s>" % ALICE)
    assert (r.code, r.enh) == (530, "5.7.0"), r


def assert_authenticated(c, sender=ALICE):
    r = c.cmd("MAIL FROM:<%s>" % sender)
    assert r.code == 250, r
    assert c.cmd("RSET").code == 250


# -- mechanisms ---------------------------------------------------------------

def test_ehlo_advertises_auth_plain_login(node):
    for port in (node.port, node.submission_port):
        with Conn(port) as c:
            kw = ehlo_keywords(c.ehlo())
            assert "AUTH" in kw, (port, kw)
            assert set(kw["AUTH"].upper().split()) == {"PLAIN", "LOGIN"}, kw
            assert "STARTTLS" in kw, kw


def test_auth_plain_initial_response(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        assert_not_authenticated(c)
        r = auth_plain(c, ALICE)
        assert (r.code, r.enh) == (235, "2.7.0"), r
        assert_authenticated(c)


def test_auth_plain_continuation(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        r = c.cmd("AUTH PLAIN")
        # RFC 4954 §4: an empty challenge is "334 " (with the space).
        assert r.code == 334 and r.lines == [""], r
        assert r.raw == [b"334 "], r.raw
        r = c.cmd(plain_ir(ALICE))
        assert (r.code, r.enh) == (235, "2.7.0"), r
        assert_authenticated(c)


def test_auth_plain_authzid_equal_to_authcid(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        r = auth_plain(c, BOB, authzid=BOB)
        assert (r.code, r.enh) == (235, "2.7.0"), r
        assert_authenticated(c, BOB)


def test_auth_login_challenges(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        r = c.cmd("AUTH LOGIN")
        assert r.code == 334, r
        assert base64.b64decode(r.lines[0]) == b"Username:", r
        r = c.cmd(b64(BOB))
        assert r.code == 334, r
        assert base64.b64decode(r.lines[0]) == b"Password:", r
        r = c.cmd(b64(PASSWORD))
        assert (r.code, r.enh) == (235, "2.7.0"), r
        assert_authenticated(c, BOB)


def test_auth_login_initial_response(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        r = c.cmd("AUTH LOGIN " + b64(ALICE))
        assert r.code == 334, r
        assert base64.b64decode(r.lines[0]) == b"Password:", r
        r = c.cmd(b64(PASSWORD))
        assert (r.code, r.enh) == (235, "2.7.0"), r
        assert_authenticated(c)


def test_smtplib_login_over_starttls_on_submission(node):
    s = smtplib.SMTP("127.0.0.1", node.submission_port, timeout=15 * SLOW)
    try:
        s.ehlo("client.test.example")
        assert s.has_extn("starttls")
        code, _ = s.starttls(context=tls_context())
        assert code == 220
        s.ehlo("client.test.example")
        assert not s.has_extn("starttls")  # not offered twice
        assert "PLAIN" in s.esmtp_features.get("auth", "").upper()
        code, text = s.login(ALICE, PASSWORD)
        assert code == 235 and text.startswith(b"2.7.0"), (code, text)
        refused = s.sendmail(ALICE, [BOB], simple_message(subject="smtplib"))
        assert refused == {}
    finally:
        s.quit()
    box = node.wait_mailbox(BOB, 1)
    assert len(box) == 1, box


def test_smtps_requires_auth_then_accepts(node):
    with smtps_conn(node.smtps_port) as c:
        assert c.greeting.code == 220, c.greeting
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw, kw
        assert "AUTH" in kw, kw
        r = c.cmd("MAIL FROM:<%s>" % ALICE)
        assert (r.code, r.enh) == (530, "5.7.0"), r
        login(c, ALICE)
        mr, rr, final = submit(c, ALICE, [BOB], simple_message())
        assert final is not None and final.code == 250, (mr, rr, final)
    raw = node.cat(BOB, node.wait_mailbox(BOB, 1)[0]["uid"])
    rec = unfold(split_trace(raw)[0]["Received"][0])
    assert " with ESMTPSA " in rec, rec


# -- protocol errors ---------------------------------------------------------

def test_auth_cancel(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        assert c.cmd("AUTH PLAIN").code == 334
        r = c.cmd("*")
        assert (r.code, r.enh) == (501, "5.0.0"), r
        assert c.cmd("AUTH LOGIN").code == 334
        assert c.cmd(b64(ALICE)).code == 334
        r = c.cmd("*")
        assert (r.code, r.enh) == (501, "5.0.0"), r
        assert_not_authenticated(c)
        # the session goes on normally after a cancel
        login(c, ALICE)
        assert_authenticated(c)


def test_auth_bad_base64(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        r = c.cmd("AUTH PLAIN !!!!not-base64")
        assert (r.code, r.enh) == (501, "5.5.2"), r
        assert c.cmd("AUTH PLAIN").code == 334
        r = c.cmd("%%%%")
        assert (r.code, r.enh) == (501, "5.5.2"), r
        assert c.cmd("AUTH LOGIN").code == 334
        r = c.cmd("abc")  # not a multiple of 4
        assert (r.code, r.enh) == (501, "5.5.2"), r
        assert_not_authenticated(c)
        login(c, ALICE)


def test_auth_unknown_mechanism(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        for mech in ("CRAM-MD5", "XOAUTH2 " + b64("user=x"), "GSSAPI",
                     "PLAINX"):
            r = c.cmd("AUTH " + mech)
            assert (r.code, r.enh) == (504, "5.5.4"), (mech, r)
        assert_not_authenticated(c)


def test_auth_twice(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        login(c, ALICE)
        r = auth_plain(c, BOB)
        assert (r.code, r.enh) == (503, "5.5.1"), r
        # still alice, not bob
        r = c.cmd("MAIL FROM:<%s>" % BOB)
        assert (r.code, r.enh) == (553, "5.7.1"), r
        assert_authenticated(c, ALICE)


def test_auth_before_ehlo(node):
    with Conn(node.submission_port) as c:
        r = auth_plain(c, ALICE)
        assert (r.code, r.enh) == (503, "5.5.1"), r
        # HELO is not enough either: AUTH is an ESMTP extension
        assert c.cmd("HELO client.test.example").code == 250
        r = auth_plain(c, ALICE)
        assert (r.code, r.enh) == (503, "5.5.1"), r
        c.ehlo()
        login(c, ALICE)


def test_auth_plain_other_authzid_refused(fast):
    with Conn(fast.submission_port) as c:
        c.ehlo()
        # alice's own password, asking to act as bob: no proxy logins
        r = auth_plain(c, ALICE, authzid=BOB)
        assert_535(r)
        assert_not_authenticated(c)
        r = c.cmd("MAIL FROM:<%s>" % BOB)
        assert r.code == 530, r


def test_mail_in_transaction_refuses_auth(node):
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@client.test.example>").code == 250
        r = auth_plain(c, ALICE)
        assert (r.code, r.enh) == (503, "5.5.1"), r


def test_pipelined_auth_then_mail(node):
    """Commands pipelined behind AUTH wait for its outcome."""
    with Conn(node.submission_port) as c:
        c.ehlo()
        c.send("AUTH PLAIN " + plain_ir(ALICE) + "\r\nMAIL FROM:<%s>\r\n"
               % ALICE)
        r1, r2 = c.replies(2)
        assert r1.code == 235, r1
        assert r2.code == 250, r2


def test_pipelined_failed_auth_then_mail(fast):
    with Conn(fast.submission_port) as c:
        c.ehlo()
        c.send("AUTH PLAIN " + plain_ir(ALICE, "wrong") +
               "\r\nMAIL FROM:<%s>\r\n" % ALICE)
        r1, r2 = c.replies(2)
        assert_535(r1)
        assert (r2.code, r2.enh) == (530, "5.7.0"), r2


def test_starttls_forgets_authentication(node):
    """RFC 3207 section 4.2: after the handshake the server MUST discard
    any knowledge obtained from the client that did not come from the TLS
    negotiation: a login made in plaintext (maybe by a man in the middle,
    with his own credentials) must not carry over into the TLS session."""
    with Conn(node.submission_port) as c:
        c.ehlo()
        login(c, BOB)
        starttls(c)
        assert_not_authenticated(c)
        r = auth_plain(c, ALICE)
        assert (r.code, r.enh) == (235, "2.7.0"), r
        assert_authenticated(c, ALICE)


def test_client_gone_during_failure_delay(node_factory):
    """A client that hangs up while its 535 is held back: the node frees
    the session and goes on (teardown checks a clean exit)."""
    n = node_factory(conf={"auth.fail_delay": 2})
    for _ in range(3):
        c = Conn(n.submission_port)
        c.ehlo()
        c.send("AUTH PLAIN " + plain_ir(ALICE, "wrong") + "\r\n")
        c.close()
    time.sleep(0.3)
    with Conn(n.submission_port) as c:
        c.ehlo()
        login(c, BOB)
    deadline = time.monotonic() + 10 * SLOW
    while n.status()["sessions_current"] != 0:
        assert time.monotonic() < deadline, n.status()
        time.sleep(0.1)
    assert n.running()

# -- failures: same answer, delays, lockouts ---------------------------------

def test_wrong_password_and_unknown_user_indistinguishable(node_factory):
    n = node_factory(conf={"auth.fail_delay": 1, "auth.fail_delay_max": 1})
    with Conn(n.submission_port, timeout=20 * SLOW) as c:
        # The first password check of a process maps argon2id's 64 MiB for
        # the first time: warm up so that the timings compare checks, not
        # page faults.
        c.ehlo()
        auth_plain(c, "warmup@localhost", "not-the-password")
    with Conn(n.submission_port, timeout=20 * SLOW) as c:
        c.ehlo()
        wrong, t_wrong = timed(auth_plain, c, ALICE, "not-the-password")
        unknown, t_unknown = timed(auth_plain, c, "nobody@localhost",
                                   "not-the-password")
        bad_domain, t_bad_domain = timed(auth_plain, c,
                                         "alice@nowhere.example", PASSWORD)
    for r in (wrong, unknown, bad_domain):
        assert_535(r)
    assert wrong.raw == unknown.raw == bad_domain.raw, \
        (wrong, unknown, bad_domain)
    for t in (t_wrong, t_unknown, t_bad_domain):
        assert t >= 0.9, (t_wrong, t_unknown, t_bad_domain)
    assert abs(t_wrong - t_unknown) < 0.5 * SLOW, (t_wrong, t_unknown)
    assert abs(t_wrong - t_bad_domain) < 0.5 * SLOW, (t_wrong, t_bad_domain)


def test_failure_delay_doubles_up_to_max(node_factory):
    """1 s, 2 s, then capped at fail_delay_max = 2 s. The count is per
    client address, not per connection: reconnecting does not reset it."""
    n = node_factory(conf={"auth.fail_delay": 1, "auth.fail_delay_max": 2})
    times = []
    with Conn(n.submission_port, timeout=20 * SLOW) as c:
        c.ehlo()
        r, t = timed(auth_plain, c, "nobody@localhost", "wrong")
        assert_535(r)
        times.append(t)
    with Conn(n.submission_port, timeout=20 * SLOW) as c:
        c.ehlo()
        for _ in range(2):
            r, t = timed(auth_plain, c, ALICE, "wrong")
            assert_535(r)
            times.append(t)
        # a right password is answered at once (no delay on success)
        r, t_ok = timed(auth_plain, c, ALICE)
        assert r.code == 235, r
    d1, d2, d3 = times
    assert 0.9 <= d1 < 1.8 * SLOW, times
    assert d2 >= 1.9 and d2 - d1 >= 0.6, times          # doubled
    assert 1.9 <= d3 < 3.5 * SLOW, times                # capped at 2 s, not 4
    assert t_ok < 0.9 * SLOW, (times, t_ok)


def test_max_failures_ip_locks_out_address(node_factory):
    n = node_factory(conf={"auth.fail_delay": 0, "auth.max_failures_ip": 3,
                           "auth.plaintext_networks": "127.0.0.0/8"})
    with Conn(n.submission_port) as c:
        c.ehlo()
        for i in range(3):
            assert_535(auth_plain(c, ALICE, "wrong-%d" % i))
        # the limit is reached: this connection gets 421 and is closed,
        # either at once or at its next AUTH
        data = c.pending(0.5)
        if not data:
            c.send("AUTH PLAIN " + plain_ir(ALICE) + "\r\n")
            assert c.wait_closed(5 * SLOW)
            data = c.buf
        assert data.startswith(b"421 4.7.0 "), data
        assert b"235" not in data, data
    # the next connection from that address: AUTH -> 421 and close, even
    # with the right password
    with Conn(n.submission_port) as c:
        c.ehlo()
        r = auth_plain(c, ALICE)
        assert (r.code, r.enh) == (421, "4.7.0"), r
        assert c.wait_closed(5 * SLOW)
    # another address is not locked out
    with Conn(n.submission_port, source="127.0.0.2") as c:
        c.ehlo()
        login(c, ALICE)
        assert_authenticated(c)
    log = n.stderr(limit=0)
    assert "kind=auth_failures_ip" in log


def test_max_failures_user_locks_out_login(node_factory):
    n = node_factory(conf={"auth.fail_delay": 0, "auth.max_failures_user": 3,
                           "auth.max_failures_ip": 100,
                           "auth.plaintext_networks": "127.0.0.0/8"})
    with Conn(n.submission_port) as c:
        c.ehlo()
        for i in range(3):
            assert_535(auth_plain(c, ALICE, "wrong-%d" % i))
        # the right password is refused now, with the same answer
        r = auth_plain(c, ALICE)
        assert_535(r)
        assert_not_authenticated(c)
        # another user logs in from the same address
        login(c, BOB)
        assert_authenticated(c, BOB)
    # from another address too, the locked login stays locked
    with Conn(n.submission_port, source="127.0.0.2") as c:
        c.ehlo()
        assert_535(auth_plain(c, ALICE))
        assert_535(_auth_login(c, ALICE, PASSWORD))
        assert_not_authenticated(c)


def _auth_login(c, user, password):
    r = c.cmd("AUTH LOGIN " + b64(user))
    assert r.code == 334, r
    return c.cmd(b64(password))


# -- TLS requirement ---------------------------------------------------------

@pytest.fixture
def untrusted(node_factory):
    """127.0.0.2 is neither in mynetworks nor in auth.plaintext_networks."""
    return node_factory(conf={"smtp.mynetworks": "127.0.0.1/32",
                              "auth.fail_delay": 0})


@pytest.mark.parametrize("listener", ["port", "submission_port"])
def test_auth_needs_tls_off_loopback(untrusted, listener):
    port = getattr(untrusted, listener)
    with Conn(port, source="127.0.0.2") as c:
        kw = ehlo_keywords(c.ehlo())
        assert "AUTH" not in kw, kw
        assert "STARTTLS" in kw, kw
        for cmd in ("AUTH PLAIN " + plain_ir(ALICE), "AUTH LOGIN",
                    "AUTH PLAIN"):
            r = c.cmd(cmd)
            assert (r.code, r.enh) == (538, "5.7.11"), (cmd, r)
        kw = ehlo_keywords(starttls(c))
        assert "AUTH" in kw, kw
        assert set(kw["AUTH"].upper().split()) == {"PLAIN", "LOGIN"}, kw
        login(c, ALICE)
        assert_authenticated(c)


def test_auth_in_plaintext_from_loopback(untrusted):
    with Conn(untrusted.port, source="127.0.0.1") as c:
        kw = ehlo_keywords(c.ehlo())
        assert "AUTH" in kw, kw
        login(c, ALICE)
        assert_authenticated(c)


# -- submission --------------------------------------------------------------

def test_submission_requires_auth(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        for sender in (ALICE, "x@client.test.example", ""):
            r = c.cmd("MAIL FROM:<%s>" % sender)
            assert (r.code, r.enh) == (530, "5.7.0"), (sender, r)
        r = c.cmd("RCPT TO:<%s>" % BOB)
        assert r.code == 503, r
    assert node.queue() == []


def test_authenticated_submission_relays_remote(node_factory):
    # 127.0.0.2 is untrusted: only the login allows the relay
    n = node_factory(conf={"smtp.mynetworks": "127.0.0.1/32"})
    with Conn(n.submission_port, source="127.0.0.2") as c:
        c.ehlo()
        starttls(c)
        r = c.cmd("MAIL FROM:<%s>" % ALICE)
        assert (r.code, r.enh) == (530, "5.7.0"), r
        login(c, ALICE)
        mr, rr, final = submit(c, ALICE, ["someone@example.net"],
                               simple_message(to="someone@example.net"))
        assert mr.code == 250, mr
        assert [x.code for x in rr] == [250], rr
        assert final is not None and final.code == 250, final
    q = n.queue()
    remote = [e for e in q if e["route"] == "remote"]
    assert len(remote) == 1, q
    assert remote[0]["recipient"] == "someone@example.net", remote
    assert remote[0]["sender"] == ALICE, remote


def test_sender_policy_own(fast):
    with Conn(fast.submission_port) as c:
        c.ehlo()
        login(c, ALICE)
        for sender in (BOB, "alice@example.org", "alice@localhost.example",
                       "alicex@localhost", "someone@example.net"):
            r = c.cmd("MAIL FROM:<%s>" % sender)
            assert (r.code, r.enh) == (553, "5.7.1"), (sender, r)
        for sender in (ALICE, "ALICE@LOCALHOST", "Alice@LocalHost", ""):
            r = c.cmd("MAIL FROM:<%s>" % sender)
            assert r.code == 250, (sender, r)
            assert c.cmd("RSET").code == 250
        # the refused MAIL left no transaction behind; a real one works
        mr, rr, final = submit(c, ALICE, [BOB], simple_message())
        assert final is not None and final.code == 250, (mr, rr, final)
    assert len(fast.wait_mailbox(BOB, 1)) == 1


def test_sender_aliases(node_factory):
    n = node_factory(conf={"auth.sender_aliases":
                           "sales@localhost=alice@localhost"})
    with Conn(n.submission_port) as c:
        c.ehlo()
        login(c, ALICE)
        for sender in ("sales@localhost", "SALES@localhost", ALICE):
            r = c.cmd("MAIL FROM:<%s>" % sender)
            assert r.code == 250, (sender, r)
            assert c.cmd("RSET").code == 250
        r = c.cmd("MAIL FROM:<support@localhost>")
        assert (r.code, r.enh) == (553, "5.7.1"), r
    with Conn(n.submission_port) as c:
        c.ehlo()
        login(c, BOB)
        r = c.cmd("MAIL FROM:<sales@localhost>")
        assert (r.code, r.enh) == (553, "5.7.1"), r
        assert_authenticated(c, BOB)


def test_sender_policy_any(node_factory):
    n = node_factory(conf={"auth.sender_policy": "any"})
    with Conn(n.submission_port) as c:
        c.ehlo()
        login(c, ALICE)
        for sender in (BOB, "someone@example.net", "", ALICE):
            r = c.cmd("MAIL FROM:<%s>" % sender)
            assert r.code == 250, (sender, r)
            assert c.cmd("RSET").code == 250


# -- headers ------------------------------------------------------------------

def _deliver_submitted(node, msg, tls=False, port=None):
    with Conn(port or node.submission_port) as c:
        c.ehlo()
        if tls:
            starttls(c)
        login(c, ALICE)
        mr, rr, final = submit(c, ALICE, [BOB], msg)
        assert final is not None and final.code == 250, (mr, rr, final)
    box = node.wait_mailbox(BOB, 1)
    assert box, "nothing delivered"
    return node.cat(BOB, box[-1]["uid"])


def test_message_id_and_date_added_when_missing(node):
    before = datetime.now(timezone.utc)
    raw = _deliver_submitted(node, simple_message())
    h = header_fields(raw)
    ids = h.get_all("Message-ID") or []
    dates = h.get_all("Date") or []
    assert len(ids) == 1, raw
    assert len(dates) == 1, raw
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", ids[0].strip()), ids
    d = email.utils.parsedate_to_datetime(dates[0].strip())
    assert d.tzinfo is not None, dates
    assert before - timedelta(minutes=5) <= d <= \
        datetime.now(timezone.utc) + timedelta(minutes=5), (dates, before)
    # the listing shows the added Message-ID
    box = node.mailbox(BOB)
    assert box[-1]["message_id"].strip() == ids[0].strip(), box


def test_message_id_unique_per_message(node):
    with Conn(node.submission_port) as c:
        c.ehlo()
        login(c, ALICE)
        for i in range(2):
            mr, rr, final = submit(c, ALICE, [BOB],
                                   simple_message(subject="m%d" % i))
            assert final.code == 250, final
    box = node.wait_mailbox(BOB, 2)
    ids = [header_fields(node.cat(BOB, m["uid"]))["Message-ID"] for m in box]
    assert len(set(ids)) == 2, ids


@pytest.mark.parametrize("names", [(b"Message-ID", b"Date"),
                                   (b"message-id", b"DATE")])
def test_message_id_and_date_kept_when_present(node, names):
    mid = "<given.%d@client.test.example>" % time.time_ns()
    date = "Sat, 28 Nov 2026 12:00:00 +0000"
    extra = (names[0] + b": " + mid.encode() + b"\r\n" +
             names[1] + b": " + date.encode() + b"\r\n")
    raw = _deliver_submitted(node, simple_message(extra=extra))
    h = header_fields(raw)
    assert h.get_all("Message-ID") == [mid], raw
    assert h.get_all("Date") == [date], raw


def test_received_esmtpsa_over_tls(node):
    raw = _deliver_submitted(node, simple_message(), tls=True)
    rec = unfold(split_trace(raw)[0]["Received"][0])
    assert " with ESMTPSA " in rec, rec
    assert re.search(r"\(using TLSv1\.[23] with cipher \S+ \(\d+ bits\)\)",
                     rec), rec
    assert "(Authenticated sender: alice@localhost)" in rec, rec


def test_received_esmtpa_without_tls(node):
    raw = _deliver_submitted(node, simple_message(), port=node.port)
    rec = unfold(split_trace(raw)[0]["Received"][0])
    assert " with ESMTPA " in rec, rec
    assert "using TLS" not in rec, rec
    assert "(Authenticated sender: alice@localhost)" in rec, rec


def test_received_no_auth_marker_when_not_authenticated(node):
    with Conn(node.port) as c:
        c.ehlo()
        mr, rr, final = submit(c, "x@client.test.example", [BOB],
                               simple_message(frm="x@client.test.example"))
        assert final.code == 250, final
    raw = node.cat(BOB, node.wait_mailbox(BOB, 1)[0]["uid"])
    rec = unfold(split_trace(raw)[0]["Received"][0])
    assert " with ESMTP " in rec, rec
    assert "Authenticated" not in rec, rec


# -- counters and logs --------------------------------------------------------

def test_status_counts_auth(fast):
    st = fast.status()
    for key in ("auth_ok", "auth_failed"):
        assert key in st, sorted(st)
    ok0, failed0 = st["auth_ok"], st["auth_failed"]
    with Conn(fast.submission_port) as c:
        c.ehlo()
        assert_535(auth_plain(c, ALICE, "wrong"))
        assert_535(auth_plain(c, "nobody@localhost", "wrong"))
        assert_535(auth_plain(c, ALICE, authzid=BOB))
        login(c, ALICE)
    with Conn(fast.submission_port) as c:
        c.ehlo()
        login(c, BOB)
        # refused and cancelled exchanges are not counted as logins
        assert c.cmd("AUTH PLAIN").code == 503
    with Conn(fast.submission_port) as c:
        c.ehlo()
        assert c.cmd("AUTH PLAIN").code == 334
        assert c.cmd("*").code == 501
    st = fast.status()
    assert st["auth_ok"] - ok0 == 2, st
    assert st["auth_failed"] - failed0 == 3, st


def test_password_never_logged(node_factory):
    n = node_factory(conf={"auth.fail_delay": 0})
    secret = "Sup3r-Secret-Pw-%d" % time.time_ns()
    n.add_user("carol@localhost", secret)
    wrong = "Wr0ng-Guess-%d" % time.time_ns()
    with Conn(n.submission_port) as c:
        c.ehlo()
        assert_535(auth_plain(c, "carol@localhost", wrong))
        assert c.cmd("AUTH LOGIN " + b64("carol@localhost")).code == 334
        assert_535(c.cmd(b64(wrong)))
        assert c.cmd("AUTH PLAIN").code == 334
        r = c.cmd(plain_ir("carol@localhost", secret))
        assert r.code == 235, r
    with Conn(n.submission_port) as c:
        c.ehlo()
        assert c.cmd("AUTH LOGIN").code == 334
        assert c.cmd(b64("carol@localhost")).code == 334
        assert c.cmd(b64(secret)).code == 235
    log = n.stderr(limit=0)
    assert "carol@localhost" in log  # the log is there, and verbose
    for needle in (secret, wrong, b64(secret), b64(wrong),
                   plain_ir("carol@localhost", secret),
                   plain_ir("carol@localhost", wrong)):
        assert needle not in log, "%r found in the node's log" % needle


# -- verified-login cache ([auth] cache_ttl) ---------------------------------

def _auth_lines(node):
    return [l for l in node.stderr().splitlines() if "event=smtp.auth " in l]


def test_auth_cache_skips_the_hash_and_forgets_on_password_change(
        node_factory):
    """A second login with the same password is answered from the cache
    (cached=1 in the log); a wrong password is never; `user passwd` makes
    the old password fail at once and the new one work."""
    n = node_factory(conf={"auth.fail_delay": 0, "auth.cache_ttl": 300})
    for expect_cached in ("cached=0", "cached=1"):
        with Conn(n.port) as c:
            c.ehlo()
            assert auth_plain(c, ALICE).code == 235
        assert _auth_lines(n)[-1].endswith(expect_cached), _auth_lines(n)
    with Conn(n.port) as c:
        c.ehlo()
        assert_535(auth_plain(c, ALICE, password="not-" + PASSWORD))
    n.cli_ok("user", "passwd", ALICE, input="brand-new-pw\n")
    with Conn(n.port) as c:
        c.ehlo()
        assert_535(auth_plain(c, ALICE))
    with Conn(n.port) as c:
        c.ehlo()
        assert auth_plain(c, ALICE, password="brand-new-pw").code == 235
    n.cli_ok("user", "del", ALICE)
    with Conn(n.port) as c:
        c.ehlo()
        assert_535(auth_plain(c, ALICE, password="brand-new-pw"))


def test_auth_cache_off(node_factory):
    n = node_factory(conf={"auth.fail_delay": 0, "auth.cache_ttl": 0})
    for _ in range(2):
        with Conn(n.port) as c:
            c.ehlo()
            assert auth_plain(c, ALICE).code == 235
    assert all(l.endswith("cached=0") for l in _auth_lines(n)), _auth_lines(n)
