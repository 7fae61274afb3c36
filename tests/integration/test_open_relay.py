"""Open relay hardening: an untrusted, unauthenticated client (127.0.0.2,
with smtp.mynetworks = 127.0.0.1/32) must not get mail relayed to another
domain through any address form; an authenticated client relays, but only
to the real remote destination. Local delivery keeps working.
"""
import pytest

from helpers.authsmtp import login, starttls, submit
from helpers.smtp import Conn

SENDER = "s@client.test.example"
UNTRUSTED = "127.0.0.2"

# (RCPT path as sent, why it is a relay attempt)
RELAY_FORMS = [
    ("<a@remote.example>", "plain remote"),
    ("<a%remote.example@localhost>", "percent hack"),
    ("<remote.example!a@localhost>", "bang path"),
    ("<@localhost:a@remote.example>", "source route"),
    ("<@localhost,@x.example:a@remote.example>", "source route, two hops"),
    ("<\"a@remote.example\"@localhost>", "quoted local part"),
    ("<a@[127.0.0.1]>", "IPv4 literal"),
    ("<a@[IPv6:::1]>", "IPv6 literal"),
    ("<a@remote.example.>", "trailing dot"),
    ("<a@REMOTE.Example>", "mixed case remote"),
    ("<A%B@LOCALHOST>", "percent hack, upper case local domain"),
    ("<a%remote.example@LocalHost.>", "percent hack, trailing dot"),
    ("<remote.example!a@LOCALHOST>", "bang path, upper case"),
]


@pytest.fixture
def untrusted(node_factory):
    return node_factory(conf={"smtp.mynetworks": "127.0.0.1/32",
                              "limits.max_errors": 1000},
                        users=("alice@localhost",))


def remote_entries(node):
    return [e for e in node.queue() if e["route"] == "remote"]


def message(to):
    return (b"From: <" + SENDER.encode() + b">\r\nTo: " + to.encode() +
            b"\r\nSubject: relay test\r\n\r\nHello.\r\n")


@pytest.mark.parametrize("rcpt,why", RELAY_FORMS,
                         ids=[w for _, w in RELAY_FORMS])
def test_relay_form_refused_from_untrusted(untrusted, rcpt, why):
    with Conn(untrusted.port, source=UNTRUSTED) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        r = c.cmd("RCPT TO:%s" % rcpt)
        assert r.code in (550, 551, 553, 554) and r.enh == "5.7.1", \
            (why, rcpt, r)
        # with a good local recipient next to it, the message goes to
        # alice only
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(message("alice@localhost") + b".\r\n")
        assert c.reply().code == 250
    box = untrusted.wait_mailbox("alice@localhost", 1)
    assert len(box) == 1, box
    assert remote_entries(untrusted) == [], (why, untrusted.queue())


def test_relay_forms_refused_on_submission_without_auth(untrusted):
    with Conn(untrusted.submission_port, source=UNTRUSTED) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s>" % SENDER)
        assert (r.code, r.enh) == (530, "5.7.0"), r
        for rcpt, why in RELAY_FORMS:
            r = c.cmd("RCPT TO:%s" % rcpt)
            assert r.code == 503, (why, r)
    assert untrusted.queue() == []


def test_relay_refused_in_bdat_transaction(untrusted):
    """The same check for a CHUNKING (RFC 3030) transaction."""
    with Conn(untrusted.port, source=UNTRUSTED) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        r = c.cmd("RCPT TO:<a@remote.example>")
        assert r.enh == "5.7.1", r
        body = message("a@remote.example")
        r = c.cmd(b"BDAT %d LAST\r\n" % len(body) + body)
        assert r.code >= 500, r
    assert untrusted.queue() == []


@pytest.mark.parametrize("rcpt", ["alice@localhost", "alice@LOCALHOST",
                                  "alice@LocalHost"])
def test_local_delivery_from_untrusted(untrusted, rcpt):
    with Conn(untrusted.port, source=UNTRUSTED) as c:
        c.ehlo()
        mr, rr, final = submit(c, SENDER, [rcpt], message(rcpt))
        assert [r.code for r in rr] == [250], (rcpt, rr)
        assert final is not None and final.code == 250, final
    assert len(untrusted.wait_mailbox("alice@localhost", 1)) == 1
    assert untrusted.queue() == []


@pytest.mark.parametrize("rcpt", ["alice@localhost.", "alice@LOCALHOST."])
def test_local_delivery_trailing_dot_from_untrusted(untrusted, rcpt):
    """Spec: local domains ignore one trailing dot; user@LOCALHOST. is
    local delivery, not relay."""
    with Conn(untrusted.port, source=UNTRUSTED) as c:
        c.ehlo()
        mr, rr, final = submit(c, SENDER, [rcpt], message(rcpt))
        assert [r.code for r in rr] == [250], (rcpt, rr)
        assert final is not None and final.code == 250, final
    assert len(untrusted.wait_mailbox("alice@localhost", 1)) == 1
    assert untrusted.queue() == []


@pytest.mark.parametrize("rcpt", [
    "<@remote.example:alice@localhost>",
    "<@remote.example,@x.example:alice@localhost>"])
def test_source_route_to_local_user_is_local(untrusted, rcpt):
    """RFC 5321 §4.1.1.3 / Appendix C: the route is dropped, the mailbox
    is ours."""
    with Conn(untrusted.port, source=UNTRUSTED) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        r = c.cmd("RCPT TO:%s" % rcpt)
        assert r.code == 250, r
        assert c.cmd("DATA").code == 354
        c.send(message("alice@localhost") + b".\r\n")
        assert c.reply().code == 250
    assert len(untrusted.wait_mailbox("alice@localhost", 1)) == 1
    assert untrusted.queue() == []


# -- authenticated ------------------------------------------------------------

# rcpt as sent -> the recipient it must be queued for (None: refused, never
# a relay: these name a local domain).
AUTH_FORMS = [
    ("<a@remote.example>", "a@remote.example"),
    ("<@localhost:a@remote.example>", "a@remote.example"),
    ("<@localhost,@x.example:b@remote.example>", "b@remote.example"),
    ("<c@REMOTE.Example>", "c@REMOTE.Example"),
    ("<d@[127.0.0.1]>", "d@[127.0.0.1]"),
    ("<e@[IPv6:::1]>", "e@[IPv6:::1]"),
    ("<a%remote.example@localhost>", None),
    ("<remote.example!a@localhost>", None),
    ("<\"a@remote.example\"@localhost>", None),
    ("<A%B@LOCALHOST>", None),
]


def test_authenticated_relays_only_to_real_destination(untrusted):
    with Conn(untrusted.port, source=UNTRUSTED) as c:
        c.ehlo()
        starttls(c)
        login(c, "alice@localhost")
        assert c.cmd("MAIL FROM:<alice@localhost>").code == 250
        expected = []
        for rcpt, dest in AUTH_FORMS:
            r = c.cmd("RCPT TO:%s" % rcpt)
            if dest is None:
                # a local domain with a relay trick in the local part: no
                # such local user, and above all no relay
                assert r.code >= 500, (rcpt, r)
            else:
                assert r.code == 250, (rcpt, r)
                expected.append(dest)
        assert c.cmd("DATA").code == 354
        c.send(b"From: <alice@localhost>\r\nSubject: out\r\n\r\nHi.\r\n"
               b".\r\n")
        assert c.reply().code == 250
    q = untrusted.queue()
    got = sorted(e["recipient"] for e in q if e["route"] == "remote")
    assert got == sorted(expected), q
    assert not [e for e in q if e["route"] != "remote"], q
    for e in q:
        assert "%" not in e["recipient"] and "!" not in e["recipient"], e
        assert not e["recipient"].startswith("@"), e
        assert e["sender"] == "alice@localhost", e

