"""Relay control, recipients, postmaster, DSN parameters (RFC 3461)."""
import time

import pytest

from helpers.smtp import Conn, make_message, send_mail

SENDER = "s@client.test.example"


@pytest.fixture
def untrusted(node_factory):
    """127.0.0.1 is not in mynetworks here."""
    return node_factory(conf={"smtp.mynetworks": "127.0.0.2/32"},
                        users=("alice@localhost", "carol@example.org"))


def test_local_mail_from_untrusted_source(untrusted):
    for rcpt in ("alice@localhost", "carol@example.org", "alice@LOCALHOST",
                 "carol@Example.ORG"):
        msg, mid = make_message(to=rcpt)
        final, rr, mr = send_mail(untrusted.port, SENDER, [rcpt], msg)
        assert rr[0].code == 250, (rcpt, rr)
        assert final.code == 250, (rcpt, final)
    assert len(untrusted.wait_mailbox("alice@localhost", 2)) == 2
    assert len(untrusted.wait_mailbox("carol@example.org", 2)) == 2


def test_relay_denied_from_untrusted(untrusted):
    with Conn(untrusted.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        for rcpt in ("victim@remote.example.net", "victim@localhost.example",
                     "victim@example.org.evil.example"):
            r = c.cmd("RCPT TO:<%s>" % rcpt)
            assert (r.code, r.enh) == (554, "5.7.1"), (rcpt, r)
        assert c.cmd("DATA").code in (503, 554)
    assert untrusted.queue() == []


def test_relay_denied_from_untrusted_source_address(node_factory):
    n = node_factory(conf={"smtp.mynetworks": "127.0.0.1/32"},
                     users=("alice@localhost",))
    with Conn(n.port, source="127.0.0.2") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        r = c.cmd("RCPT TO:<victim@remote.example.net>")
        assert (r.code, r.enh) == (554, "5.7.1"), r
        r = c.cmd("RCPT TO:<alice@localhost>")
        assert r.code == 250, r
    # the same node relays for 127.0.0.1
    with Conn(n.port, source="127.0.0.1") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<victim@remote.example.net>").code == 250
        assert c.cmd("RSET").code == 250


@pytest.mark.parametrize("rcpt", [
    "<@localhost:victim@remote.example.net>",      # source route
    "<victim%remote.example.net@localhost>",       # percent hack
    "<victim@remote.example.net@localhost>",
    "<\"victim@remote.example.net\"@localhost>",
    "<victim!remote.example.net@localhost>",       # bang path
    "<remote.example.net!victim@localhost>",
    "<postmaster@remote.example.net>",             # not OUR postmaster
    "<Postmaster@example.org.remote.example.net>",
    "<victim@[192.0.2.1]>",                        # address literal
    "<victim@[127.0.0.1]>",
])
def test_no_open_relay_tricks(untrusted, rcpt):
    with Conn(untrusted.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        r = c.cmd("RCPT TO:%s" % rcpt)
        assert r.code >= 500, (rcpt, r)
        assert c.cmd("RSET").code == 250
    assert untrusted.queue() == []


def test_relay_from_trusted_is_queued_remote(node):
    msg, mid = make_message(to="friend@remote.example.net", subject="out")
    final, rr, mr = send_mail(node.port, SENDER,
                              ["friend@remote.example.net", "alice@localhost"],
                              msg)
    assert [r.code for r in rr] == [250, 250], rr
    assert final.code == 250
    node.wait_mailbox("alice@localhost", 1)
    time.sleep(0.3)
    q = node.queue()
    remote = [e for e in q if e["route"] == "remote"]
    assert len(remote) == 1, q
    e = remote[0]
    assert e["state"] == "queued", e
    assert e["recipient"] == "friend@remote.example.net", e
    assert e["sender"] == SENDER, e
    assert e["size"] >= len(msg)
    assert not [x for x in q if x["route"] == "local"], q
    assert node.mailbox("bob@localhost") == []


def test_unknown_local_user_550(untrusted, node):
    for n in (untrusted, node):
        with Conn(n.port) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
            for rcpt in ("nobody@localhost", "nobody@example.org",
                         "alice.x@localhost"):
                r = c.cmd("RCPT TO:<%s>" % rcpt)
                assert (r.code, r.enh) == (550, "5.1.1"), (rcpt, r)


@pytest.mark.parametrize("rcpt", ["postmaster@localhost",
                                  "Postmaster@localhost",
                                  "POSTMASTER@localhost",
                                  "postmaster@example.org",
                                  "postmaster"])
def test_postmaster_always_accepted(untrusted, rcpt):
    msg, mid = make_message(to=rcpt, subject="to postmaster")
    final, rr, mr = send_mail(untrusted.port, SENDER, [rcpt], msg)
    assert rr[0].code == 250, (rcpt, rr)
    assert final is not None and final.code == 250, final


def test_postmaster_delivered_to_configured_mailbox(node_factory):
    n = node_factory(users=("postmaster@localhost",))
    msg, mid = make_message(to="Postmaster", subject="pm")
    final, rr, mr = send_mail(n.port, SENDER, ["Postmaster"], msg)
    assert final.code == 250
    box = n.wait_mailbox("postmaster@localhost", 1)
    assert [m["message_id"].strip("<>") for m in box] == [mid]


def test_dsn_params_stored(node):
    msg, mid = make_message(to="friend@remote.example.net",
                            subject="dsn test")
    with Conn(node.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s> RET=HDRS ENVID=QQ314159+2Babc" % SENDER)
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<friend@remote.example.net> NOTIFY=SUCCESS,FAILURE "
                  "ORCPT=rfc822;friend@remote.example.net")
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<other@remote.example.net> NOTIFY=NEVER")
        assert r.code == 250, r
        assert c.cmd("DATA").code == 354
        from helpers.smtp import dot_stuff
        c.send(dot_stuff(msg))
        assert c.reply().code == 250
    q = node.queue()
    ids = {e["id"] for e in q}
    assert len(ids) >= 1, q
    shows = [node.cli_json("queue", "show", str(i)) for i in ids]
    show = [s for s in shows if s["envid"]][0]
    assert show["ret"].upper() == "HDRS", show
    assert show["envid"] in ("QQ314159+abc", "QQ314159+2Babc"), show
    assert show["subject"] == "dsn test"
    assert show["sender"] == SENDER
    rcpts = {r["recipient"]: r for r in show["recipients"]}
    f = rcpts["friend@remote.example.net"]
    assert sorted(x.upper() for x in f["notify"]) == ["FAILURE", "SUCCESS"], f
    assert f["orcpt"].lower().endswith("friend@remote.example.net"), f
    assert f["route"] == "remote" and f["state"] == "queued", f
    o = rcpts["other@remote.example.net"]
    assert [x.upper() for x in o["notify"]] == ["NEVER"], o


@pytest.mark.parametrize("params", ["NOTIFY=BOGUS", "NOTIFY=NEVER,SUCCESS",
                                    "NOTIFY=", "ORCPT=nonsense",
                                    "NOTIFY=SUCCESS NOTIFY=FAILURE"])
def test_invalid_rcpt_dsn_params(node, params):
    with Conn(node.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        r = c.cmd("RCPT TO:<alice@localhost> %s" % params)
        assert r.code in (501, 555), (params, r)
        assert r.enh and r.enh.startswith("5."), r
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250


@pytest.mark.parametrize("params", ["RET=BOGUS", "RET=FULL RET=HDRS",
                                    "ENVID=" + "x" * 200, "ENVID=bad\x01"])
def test_invalid_mail_dsn_params(node, params):
    with Conn(node.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s> %s" % (SENDER, params))
        assert r.code in (501, 555, 500), (params, r)
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250


@pytest.mark.parametrize("rcpt", ["alice@localhost.", "alice@LocalHost",
                                  "alice@[127.0.0.1]"])
def test_local_lookalikes_never_relay(untrusted, rcpt):
    """Lookalikes of a local domain are delivered locally or refused, but
    never queued for the Internet from an untrusted client."""
    msg, mid = make_message(to=rcpt)
    final, rr, mr = send_mail(untrusted.port, SENDER, [rcpt], msg)
    assert rr[0].code == 250 or rr[0].code >= 500, rr
    time.sleep(0.2)
    assert [e for e in untrusted.queue() if e["route"] == "remote"] == []


@pytest.mark.parametrize("domain", ["localhost", "remote.example.net"],
                         ids=["harvest", "relay-probe"])
def test_refused_recipients_count_as_errors(node_factory, domain):
    """Directory harvesting and relay probing end with 421 after
    max_errors refusals."""
    n = node_factory(conf={"limits.max_errors": 5,
                           "smtp.mynetworks": "127.0.0.2/32"}, users=())
    with Conn(n.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        codes = []
        for i in range(20):
            try:
                r = c.cmd("RCPT TO:<u%d@%s>" % (i, domain))
            except Exception:
                break
            codes.append(r.code)
            if r.code == 421:
                break
        assert codes[-1] == 421, codes
        assert len(codes) <= 7, codes
        assert c.wait_closed(5)
