"""The relaymesh CLI against a running node: human and --json output,
errors on stderr with a non-zero exit."""
import json
import os
import re
import subprocess
import time

import pytest

from conftest import BIN, SLOW, SRC
from helpers.smtp import Conn, make_message, send_mail, split_trace

SENDER = "s@client.test.example"


def fails_cleanly(r, *words):
    assert r.returncode != 0, r
    err = r.stderr.decode("utf-8", "replace")
    assert err.strip(), "no message on stderr"
    assert "Traceback" not in err and "Sanitizer" not in err, err
    assert r.returncode < 128, "killed by a signal: %d" % r.returncode
    for w in words:
        assert w.lower() in err.lower(), (w, err)
    return err


def test_user_add_list_del(node_factory):
    n = node_factory(users=())
    r = n.cli("user", "add", "alice@localhost", input="pw-1234\n")
    assert r.returncode == 0, r
    n.add_user("bob@example.org")
    human = n.cli_ok("user", "list").stdout.decode()
    assert "alice@localhost" in human and "bob@example.org" in human
    js = n.cli_json("user", "list")
    assert isinstance(js, list)
    assert sorted(u["address"] for u in js) == ["alice@localhost",
                                                "bob@example.org"]
    for u in js:
        assert set(u) >= {"address", "created"}, u
        assert isinstance(u["created"], int) and u["created"] > 1.6e9, u
    # duplicate
    fails_cleanly(n.cli("user", "add", "alice@localhost", input="x\n"),
                  "alice@localhost")
    # passwd
    assert n.cli("user", "passwd", "alice@localhost",
                 input="new-pw-5678\n").returncode == 0
    fails_cleanly(n.cli("user", "passwd", "nobody@localhost", input="x\n"))
    # del
    n.cli_ok("user", "del", "bob@example.org")
    assert [u["address"] for u in n.cli_json("user", "list")] == \
        ["alice@localhost"]
    fails_cleanly(n.cli("user", "del", "bob@example.org"))
    # a deleted user no longer receives mail
    with Conn(n.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        assert c.cmd("RCPT TO:<bob@example.org>").code == 550
        assert c.cmd("RCPT TO:<alice@localhost>").code == 250


@pytest.mark.parametrize("addr", ["not-an-address", "", "a@", "@localhost",
                                  "a b@localhost", "x@remote.example.net"])
def test_user_add_bad_address(node_factory, addr):
    n = node_factory(users=())
    r = n.cli("user", "add", addr, input="pw\n")
    fails_cleanly(r)
    assert n.cli_json("user", "list") == []


def test_user_add_empty_password_refused(node_factory):
    n = node_factory(users=())
    fails_cleanly(n.cli("user", "add", "alice@localhost", input=""))
    assert n.cli_json("user", "list") == []


def test_user_list_empty(node_factory):
    n = node_factory(users=())
    assert n.cli_json("user", "list") == []
    assert n.cli("user", "list").returncode == 0


def test_mailbox_list_and_cat(node):
    msgs = []
    for i in range(3):
        m, mid = make_message(subject="subject %d" % i,
                              mail_from="from%d@client.test.example" % i)
        final, _, _ = send_mail(node.port, "env%d@client.test.example" % i,
                                ["alice@localhost"], m)
        assert final.code == 250
        msgs.append((m, mid))
    box = node.wait_mailbox("alice@localhost", 3)
    assert len(box) == 3
    keys = {"uid", "internaldate", "date", "from", "subject", "message_id",
            "size", "flags", "queue_id"}
    for e in box:
        assert set(e) >= keys, e
        assert isinstance(e["uid"], int) and e["uid"] > 0
        assert isinstance(e["flags"], list)
    uids = [e["uid"] for e in box]
    assert uids == sorted(uids) and len(set(uids)) == 3
    for e, (m, mid) in zip(box, msgs):
        assert e["message_id"].strip("<>") == mid
        assert e["subject"] == "subject %d" % (box.index(e))
        raw = node.cat("alice@localhost", e["uid"])
        assert e["size"] == len(raw), (e, len(raw))
        assert split_trace(raw)[1] == m
        assert "from%d@client.test.example" % box.index(e) in e["from"]
    human = node.cli_ok("mailbox", "list", "alice@localhost").stdout.decode()
    for i in range(3):
        assert "subject %d" % i in human
    assert node.mailbox("bob@localhost") == []


def test_mailbox_cat_missing_uid_fails_cleanly(node):
    m, mid = make_message()
    assert send_mail(node.port, SENDER, ["alice@localhost"], m)[0].code == 250
    node.wait_mailbox("alice@localhost", 1)
    for uid in ("999", "0", "-1", "abc", "99999999999999999999999"):
        r = node.cli("mailbox", "cat", "alice@localhost", uid)
        fails_cleanly(r)
        assert r.stdout == b"", (uid, r.stdout)
    fails_cleanly(node.cli("mailbox", "cat", "bob@localhost", "1"))
    fails_cleanly(node.cli("mailbox", "cat", "alice@localhost"))


def test_mailbox_of_unknown_user(node):
    fails_cleanly(node.cli("mailbox", "list", "nobody@localhost"),
                  "nobody@localhost")


def queue_remote(node, n=2):
    ids = []
    for i in range(n):
        m, mid = make_message(to="r%d@remote.example.net" % i,
                              subject="remote %d" % i)
        final, _, _ = send_mail(node.port, SENDER,
                                ["r%d@remote.example.net" % i], m)
        assert final.code == 250
    q = node.queue()
    assert len(q) == n, q
    return q


def test_queue_list_show_hold_release_delete(node):
    assert node.queue() == []
    q = queue_remote(node, 2)
    keys = {"id", "rcpt", "recipient", "sender", "state", "route", "attempts",
            "next_try", "arrival", "size", "last_error"}
    for e in q:
        assert set(e) >= keys, e
        assert e["state"] == "queued" and e["route"] == "remote"
        assert e["sender"] == SENDER
    human = node.cli_ok("queue", "list").stdout.decode()
    for e in q:
        assert e["id"] in human and e["recipient"] in human
    qid = q[0]["id"]
    show = node.cli_json("queue", "show", qid)
    assert set(show) >= {"id", "sender", "arrival", "size", "envid", "ret",
                         "body", "smtputf8", "client", "subject",
                         "recipients"}, show
    assert show["id"] == qid
    assert show["subject"] in ("remote 0", "remote 1")
    assert show["client"]  # the client (HELO name and/or address)
    assert len(show["recipients"]) == 1
    rk = {"rcpt", "recipient", "state", "route", "attempts", "next_try",
          "last_error", "orcpt", "notify"}
    assert set(show["recipients"][0]) >= rk
    assert node.cli_ok("queue", "show", qid).stdout.strip()

    node.cli_ok("queue", "hold", qid)
    st = {e["id"]: e["state"] for e in node.queue()}
    assert st[qid] == "hold", st
    node.cli_ok("queue", "release", qid)
    st = {e["id"]: e["state"] for e in node.queue()}
    assert st[qid] in ("queued", "deferred"), st
    node.cli_ok("queue", "delete", qid)
    assert [e["id"] for e in node.queue()] == [q[1]["id"]]
    for verb in ("show", "delete", "hold", "release"):
        fails_cleanly(node.cli("queue", verb, qid))
        fails_cleanly(node.cli("queue", verb, "NOSUCHID"))


# Remote mail that stays in the queue: nothing answers DNS at 127.0.0.1:9,
# so the queue manager (once it delivers outbound) defers each entry after
# its first attempt and leaves it for an hour; before then the entries just
# stay "queued". 127.0.0.1 is in mynetworks, so relaying is allowed.
STUCK_CONF = {"dns.server": "127.0.0.1@9", "delivery.retry_first": "1h"}


def queue_to(node, rcpts):
    """Send one message per recipient; return the queue listing."""
    for rcpt in rcpts:
        m, _ = make_message(to=rcpt, subject="to %s" % rcpt)
        final, _, _ = send_mail(node.port, SENDER, [rcpt], m)
        assert final.code == 250, final
    q = node.queue()
    assert len(q) == len(rcpts), q
    return q


def test_queue_retry_unknown_id(node):
    qid = "0123456789ABCDEF"
    r = node.cli("queue", "retry", qid)
    assert r.returncode == 1, r
    err = fails_cleanly(r, "no queue entry %s" % qid, "relaymesh queue list")
    assert r.stdout == b"", r.stdout
    assert err.startswith("relaymesh: "), err
    r = node.cli("queue", "retry", qid + ".3")
    assert r.returncode == 1, r
    fails_cleanly(r, "no queue entry %s.3" % qid)
    r = node.cli("queue", "retry", "NOSUCHID")
    assert r.returncode == 1, r
    fails_cleanly(r, "NOSUCHID", "queue id")


def test_queue_retry_all_on_empty_queue(node):
    r = node.cli_ok("queue", "retry", "--all")
    assert r.stdout.decode() == \
        "all deferred mail scheduled for delivery now\n", r.stdout
    assert r.stderr == b""
    assert node.cli_json("queue", "retry", "--all") == {"all": True}
    assert node.queue() == []


@pytest.mark.parametrize("args", [
    ["queue", "retry"],
    ["queue", "retry", "--all", "0123456789ABCDEF"],
    ["queue", "retry", "A", "B"],
    ["queue", "list", "--all"],
    ["queue", "show", "0123456789ABCDEF", "--all"],
    ["queue", "list", "--older-than", "abc"],
    ["queue", "list", "--older-than", "2x"],
    ["queue", "list", "--older-than", "-5"],
    ["queue", "list", "--older-than", "1h30m"],
    ["queue", "list", "--older-than", ""],
    ["queue", "list", "--older-than", "99999999999999999999999"],
    ["queue", "list", "--older-than"],
    ["queue", "list", "--domain", ""],
    ["queue", "list", "--domain", "a b.example"],
    ["queue", "list", "--domain", "x@y.example"],
    ["queue", "list", "--domain"],
    ["queue", "show", "0123456789ABCDEF", "--domain", "x.example"],
    ["queue", "retry", "0123456789ABCDEF", "--older-than", "1h"],
    ["user", "list", "--older-than", "1h"],
])
def test_queue_option_usage_errors(node, args):
    r = node.cli(*args)
    assert r.returncode == 2, (args, r)
    err = fails_cleanly(r)
    assert "usage" in err or "needs a value" in err, err
    assert r.stdout == b""


def test_queue_list_filters(node_factory):
    n = node_factory(conf=STUCK_CONF)
    assert n.cli_ok("queue", "list", "--domain", "remote.example.net",
                    "--older-than", "1h").stdout.decode() == \
        "queue is empty (for destination remote.example.net, " \
        "older than 1h)\n"
    rcpts = ["r0@remote.example.net", "r1@Remote.Example.NET",
             "o0@other.example.com"]
    q = queue_to(n, rcpts)
    keys = {"id", "rcpt", "recipient", "sender", "state", "route",
            "attempts", "next_try", "arrival", "size", "last_error"}
    for e in q:
        assert set(e) >= keys, e
        assert e["route"] == "remote", e
        assert isinstance(e["arrival"], int) and e["arrival"] > 1.6e9, e
        assert isinstance(e["next_try"], int), e
        assert isinstance(e["attempts"], int), e
        assert isinstance(e["last_error"], str), e
    by_rcpt = {e["recipient"]: e["id"] for e in q}

    def listed(*args):
        return sorted(e["recipient"]
                      for e in n.cli_json("queue", "list", *args))

    remote = ["r0@remote.example.net", "r1@Remote.Example.NET"]
    assert listed("--domain", "remote.example.net") == sorted(remote)
    assert listed("--domain", "REMOTE.example.NET") == sorted(remote)
    assert listed("--domain", "@remote.example.net") == sorted(remote)
    assert listed("--domain", "other.example.com") == ["o0@other.example.com"]
    assert listed("--domain", "example.com") == []      # no suffix match
    assert listed("--domain", "example.net") == []
    assert listed("--domain", "nowhere.example") == []
    assert listed("--route", "remote", "--domain", "other.example.com") == \
        ["o0@other.example.com"]
    assert listed("--route", "local", "--domain", "other.example.com") == []
    out = n.cli_ok("queue", "list", "--domain", "nowhere.example")
    assert out.stdout.decode() == \
        "queue is empty (for destination nowhere.example)\n"

    assert listed("--older-than", "1h") == []
    assert listed("--older-than", "1d", "--domain", "other.example.com") == []
    assert listed("--older-than", "0") == sorted(rcpts)
    newest = max(e["arrival"] for e in q)
    while time.time() < newest + 2.5:
        time.sleep(0.2)
    assert listed("--older-than", "2") == sorted(rcpts)
    assert listed("--older-than", "2s") == sorted(rcpts)
    assert listed("--older-than", "1s", "--domain", "remote.example.net") == \
        sorted(remote)
    assert listed("--older-than", "30m") == []
    out = n.cli_ok("queue", "list", "--older-than", "2h").stdout.decode()
    assert out == "queue is empty (for older than 2h)\n", out

    # the human listing: a header, one row per entry, a summary
    human = n.cli_ok("queue", "list").stdout.decode()
    lines = human.rstrip("\n").split("\n")
    assert len(lines) == 1 + len(rcpts) + 1, human
    for col in ("ID", "STATE", "AGE", "TRIES", "NEXT TRY", "SIZE", "SENDER",
                "RECIPIENT", "LAST ERROR"):
        assert col in lines[0], (col, lines[0])
    for rcpt, qid in by_rcpt.items():
        row = [l for l in lines if qid in l]
        assert len(row) == 1, (qid, human)
        assert rcpt in row[0] and "<%s>" % SENDER in row[0], row[0]
        assert re.search(r"\b\d+s\b", row[0]), row[0]     # age in seconds
    assert lines[-1].startswith("queue: 3 entries"), lines[-1]
    human = n.cli_ok("queue", "list", "--domain", "other.example.com").stdout
    assert human.decode().count("\n") == 3, human
    assert by_rcpt["o0@other.example.com"] in human.decode()

    # queue show: every recipient carries its (possibly empty) history
    qid = by_rcpt["o0@other.example.com"]
    show = n.cli_json("queue", "show", qid)
    assert len(show["recipients"]) == 1
    hist = show["recipients"][0]["history"]
    assert isinstance(hist, list) and all(isinstance(h, str) for h in hist)
    text = n.cli_ok("queue", "show", qid).stdout.decode()
    assert "o0@other.example.com" in text and " ago)" in text, text

    # retry of a real entry, of one recipient, and of all
    r = n.cli_ok("queue", "retry", qid)
    assert r.stdout.decode() == "%s scheduled for delivery now\n" % qid
    js = n.cli_json("queue", "retry", qid + ".0")
    assert js == {"id": qid + ".0", "waiting": 1, "held": 0}, js
    fails_cleanly(n.cli("queue", "retry", qid + ".1"),
                  "no queue entry %s.1" % qid)
    assert n.cli_ok("queue", "retry", "--all").returncode == 0
    assert listed() == sorted(rcpts)

    # a held entry stays held, and the CLI says so
    n.cli_ok("queue", "hold", qid)
    out = n.cli_ok("queue", "retry", qid).stdout.decode()
    assert "on hold" in out and "queue release %s" % qid in out, out
    assert "scheduled for delivery now" not in out, out
    n.cli_ok("queue", "retry", "--all")
    st = {e["id"]: e["state"] for e in n.queue()}
    assert st[qid] == "hold", st
    n.cli_ok("queue", "release", qid)


def wait_entry(node, qid, pred, timeout=60.0):
    """Poll `queue list --json` until the entry of qid satisfies pred."""
    deadline = time.monotonic() + timeout * SLOW
    e = None
    while time.monotonic() < deadline:
        es = [x for x in node.queue() if x["id"] == qid]
        assert es, "entry %s left the queue" % qid
        e = es[0]
        if pred(e):
            return e
        time.sleep(0.25)
    raise AssertionError("entry %s: condition not met in %.0f s: %r"
                         % (qid, timeout * SLOW, e))


def test_queue_retry_deferred(node_factory):
    """Needs the outbound queue manager: a remote entry whose delivery
    fails (no DNS) is deferred for retry_first, with a last error and a
    history line; `queue retry` makes it due now and it is tried again."""
    n = node_factory(conf=STUCK_CONF)
    q = queue_to(n, ["d0@remote.example.net"])
    qid = q[0]["id"]
    e = wait_entry(n, qid, lambda x: x["state"] == "deferred")
    now = time.time()
    assert e["attempts"] >= 1, e
    assert e["last_error"].strip(), e
    assert e["next_try"] > now + 30 * 60, e         # retry_first = 1h
    assert n.cli_json("queue", "list", "--state", "deferred",
                      "--domain", "remote.example.net")[0]["id"] == qid

    human = n.cli_ok("queue", "list").stdout.decode()
    row = [l for l in human.split("\n") if qid in l][0]
    assert "deferred" in row and re.search(r"\bin (59m|1h)", row), row

    show = n.cli_json("queue", "show", qid)
    hist = show["recipients"][0]["history"]
    assert len(hist) >= 1 and all(h.strip() for h in hist), hist
    text = n.cli_ok("queue", "show", qid).stdout.decode()
    first = hist[0].strip()
    assert first[:40] in text, (first, text)

    # retry ID: due now, then tried again
    attempts = e["attempts"]
    r = n.cli_ok("queue", "retry", qid)
    assert r.stdout.decode() == "%s scheduled for delivery now\n" % qid
    e2 = [x for x in n.queue() if x["id"] == qid][0]
    assert e2["next_try"] <= time.time() + 1 or \
        e2["attempts"] > attempts, e2
    e2 = wait_entry(n, qid, lambda x: x["attempts"] > attempts and
                    x["state"] == "deferred")
    assert e2["next_try"] > time.time() + 30 * 60, e2
    hist2 = n.cli_json("queue", "show", qid)["recipients"][0]["history"]
    assert len(hist2) > len(hist), (hist, hist2)

    # retry --all: the same for every deferred entry
    attempts = e2["attempts"]
    n.cli_ok("queue", "retry", "--all")
    wait_entry(n, qid, lambda x: x["attempts"] > attempts and
               x["state"] == "deferred")


def test_status_json_and_counters(node):
    st0 = node.status()
    keys = {"version", "hostname", "pid", "uptime", "datadir", "listeners",
            "domains", "sessions_current", "sessions_total",
            "messages_accepted", "recipients_accepted", "messages_rejected",
            "delivered_local", "store_full", "queue_entries", "store"}
    assert set(st0) >= keys, st0
    assert st0["hostname"] == "mx.test.example"
    assert st0["pid"] == node.pid
    assert os.path.realpath(st0["datadir"]) == os.path.realpath(node.datadir)
    assert any(str(node.port) in l for l in st0["listeners"]), st0
    assert sorted(st0["domains"]) == ["example.org", "localhost"]
    assert isinstance(st0["store"], dict)

    m, mid = make_message()
    final, _, _ = send_mail(node.port, SENDER,
                            ["alice@localhost", "bob@localhost",
                             "x@remote.example.net"], m)
    assert final.code == 250
    bad, _ = make_message(body=b"bare\nlf\r\n")
    final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], bad)
    assert final.code >= 500
    node.wait_mailbox("bob@localhost", 1)
    st = node.status()
    assert st["messages_accepted"] - st0["messages_accepted"] == 1, st
    assert st["recipients_accepted"] - st0["recipients_accepted"] == 3, st
    assert st["messages_rejected"] - st0["messages_rejected"] >= 1, st
    assert st["delivered_local"] - st0["delivered_local"] == 2, st
    assert st["queue_entries"] == 1, st
    assert st["sessions_total"] >= st0["sessions_total"] + 2
    with Conn(node.port) as c:
        c.ehlo()
        assert node.status()["sessions_current"] >= 1
    human = node.cli_ok("status").stdout.decode()
    assert "mx.test.example" in human and str(node.pid) in human


def test_cli_with_datadir(node):
    js = node.cli("status", "--json", use_datadir=True)
    assert js.returncode == 0, js
    assert json.loads(js.stdout)["pid"] == node.pid
    r = node.cli("user", "list", "--json", use_datadir=True)
    assert r.returncode == 0
    assert sorted(u["address"] for u in json.loads(r.stdout)) == \
        ["alice@localhost", "bob@localhost"]


def test_cli_without_running_node(tmp_path):
    if not BIN:
        pytest.skip("no RELAYMESH_BIN")
    d = tmp_path / "empty"
    d.mkdir()
    r = subprocess.run([BIN, "-d", str(d), "status"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10 * SLOW)
    fails_cleanly(r)
    r = subprocess.run([BIN, "-d", str(tmp_path / "missing"), "queue", "list"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10 * SLOW)
    fails_cleanly(r)


@pytest.mark.parametrize("args", [["frobnicate"], ["user"], ["user", "zap"],
                                  ["queue", "show"], ["mailbox"],
                                  ["mailbox", "list"], ["status", "--bogus"]])
def test_cli_usage_errors(node, args):
    fails_cleanly(node.cli(*args))


def test_serve_bad_config_fails(tmp_path):
    if not BIN:
        pytest.skip("no RELAYMESH_BIN")
    conf = tmp_path / "bad.conf"
    conf.write_text("[node]\nhostname = x\ndatadir = %s\n[limits]\n"
                    "max_errors = lots\n" % (tmp_path / "d"))
    r = subprocess.run([BIN, "serve", "-c", str(conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10 * SLOW)
    err = fails_cleanly(r, "max_errors")
    assert re.search(r"bad\.conf:\d+|bad\.conf", err), err
    r = subprocess.run([BIN, "serve", "-c", str(conf), "--check"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10 * SLOW)
    fails_cleanly(r)
    conf.write_text("[node]\nhostname = x\n[nosuchsection]\nk = v\n")
    r = subprocess.run([BIN, "serve", "-c", str(conf), "--check"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10 * SLOW)
    fails_cleanly(r)


def test_serve_prints_listeners(node):
    out = node.stdout()
    assert "127.0.0.1:%d" % node.port in out, out
    assert "127.0.0.1:%d" % node.submission_port in out, out
    assert "127.0.0.1:%d" % node.smtps_port in out, out


def test_sample_config_is_valid_and_documents_every_key():
    """etc/relaymesh.conf.sample passes --check and names every key the
    node knows (set or commented out), so an administrator finds each one
    there."""
    if not BIN or not SRC:
        pytest.skip("no RELAYMESH_BIN / RELAYMESH_SRC")
    sample = os.path.join(SRC, "etc", "relaymesh.conf.sample")
    r = subprocess.run([BIN, "serve", "-c", sample, "--check"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10 * SLOW)
    assert r.returncode == 0, r.stderr
    text = open(sample, encoding="utf-8").read()
    section, missing = None, []
    for line in r.stdout.decode().splitlines():
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            assert "[%s]" % section in text, section
            continue
        m = re.match(r"(\w+) =", line)
        if m and not re.search(r"^;?%s =" % m.group(1), text, re.M):
            missing.append("%s.%s" % (section, m.group(1)))
    assert not missing, "keys missing from the sample: %s" % missing


def test_status_shows_listeners_and_certificate(node):
    st = node.status()
    assert st["submission"] == ["127.0.0.1:%d" % node.submission_port]
    assert st["smtps"] == ["127.0.0.1:%d" % node.smtps_port]
    tls = st["tls"]
    assert tls["self_signed"] is True
    assert tls["subject"] == "CN=mx.test.example"
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", tls["sha256"])
    assert tls["file"].endswith("/tls/selfsigned.crt")
    for k in ("tls_sessions", "tls_failures", "auth_ok", "auth_failed",
              "ratelimited"):
        assert st[k] == 0, (k, st)
    out = node.cli_ok("status").stdout.decode()
    assert "submission  127.0.0.1:%d" % node.submission_port in out, out
    assert "certificate CN=mx.test.example (self-signed)" in out, out
    assert tls["sha256"] in out, out


def test_concurrent_user_add_same_address(node_factory):
    n = node_factory(users=())
    sel = ["-c", n.conf]
    procs = [subprocess.Popen([BIN] + sel + ["user", "add", "race@localhost"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(6)]
    for p in procs:
        p.stdin.write(b"pw-race\n")
        p.stdin.close()
    rcs = [p.wait(30 * SLOW) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert rcs.count(0) == 1, rcs
    assert [u["address"] for u in n.cli_json("user", "list")] == \
        ["race@localhost"]


def test_utf8_local_user(node_factory):
    n = node_factory(users=())
    r = n.cli("user", "add", "jürgen@localhost", input="pw-ü\n")
    if r.returncode != 0:
        pytest.skip("UTF-8 local parts not supported for users: %r"
                    % r.stderr)
    m, mid = make_message(to="jürgen@localhost")
    with Conn(n.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s>" % SENDER)
        assert r.code == 250
        r = c.cmd("RCPT TO:<jürgen@localhost>")
        assert r.code >= 500, "UTF-8 RCPT without SMTPUTF8 accepted: %r" % r
        c.cmd("RSET")
        final, rr, mr = send_mail(n.port, SENDER, ["jürgen@localhost"], m,
                                  conn=c, mail_params="SMTPUTF8")
        assert final is not None and final.code == 250, (mr, rr, final)
    box = n.wait_mailbox("jürgen@localhost", 1)
    assert [x["message_id"].strip("<>") for x in box] == [mid]


WEIRD = [
    ("quotes", b'Subject: "quoted" \\back\\slash\\ and \'single\'\r\n'),
    ("control", b"Subject: ctl \x01\x02\x1b[31mred\x1b[0m \x7f end\r\n"),
    ("latin1", b"Subject: caf\xe9 \xff\xfe invalid utf-8\r\n"),
    ("utf8", "Subject: Grüße 日本 😀\r\n".encode()),
    ("encoded", b"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n"),
    ("folded", b"Subject: first part\r\n second part\r\n\tthird part\r\n"),
    ("empty", b"Subject:\r\n"),
    ("long", b"Subject: " + b"L" * 900 + b"\r\n"),
]


@pytest.mark.parametrize("name,subject", WEIRD, ids=[w[0] for w in WEIRD])
def test_listing_odd_headers(node, name, subject):
    msg = (b"From: \"Odd \\\"Sender\\\"\" <odd@client.test.example>\r\n"
           b"Message-ID: <odd." + name.encode() + b"@client.test.example>\r\n"
           + subject + b"\r\nbody\r\n")
    final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], msg)
    assert final.code == 250, final
    box = node.wait_mailbox("alice@localhost", 1)   # valid JSON or raises
    assert len(box) == 1
    assert isinstance(box[0]["subject"], (str, type(None)))
    assert split_trace(node.cat("alice@localhost", box[0]["uid"]))[1] == msg
    human = node.cli_ok("mailbox", "list", "alice@localhost").stdout
    assert b"\x1b" not in human, "terminal escape passed through to output"
    if name == "utf8":
        assert box[0]["subject"] == "Grüße 日本 😀"
    if name == "folded":
        assert "first part" in box[0]["subject"]
        assert "third part" in box[0]["subject"]


def test_message_without_headers(node):
    msg = b"just a body line\r\nand another\r\n"
    final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], msg)
    assert final.code == 250, final
    box = node.wait_mailbox("alice@localhost", 1)
    assert len(box) == 1
    raw = node.cat("alice@localhost", box[0]["uid"])
    assert split_trace(raw)[1] == msg


def test_mailbox_list_pages_through_a_large_mailbox(node):
    """`mailbox list` of a mailbox larger than one control answer (1,000
    messages a page) lists every message once, in UID order, as a table
    and as one JSON array."""
    total = 2345
    with Conn(node.port, timeout=60 * SLOW) as c:
        c.ehlo()
        sent = 0
        while sent < total:
            batch = min(200, total - sent)
            blob = b""
            for i in range(sent, sent + batch):
                m, _ = make_message(subject="page %d" % i)
                blob += (b"MAIL FROM:<%s>\r\nRCPT TO:<alice@localhost>\r\n"
                         b"BDAT %d LAST\r\n" % (SENDER.encode(), len(m))) + m
            c.send(blob)
            codes = [r.code for r in c.replies(3 * batch)]
            assert codes == [250] * (3 * batch), codes[:6]
            sent += batch
    box = node.wait_mailbox("alice@localhost", total, timeout=60 * SLOW)
    uids = [e["uid"] for e in box]
    assert len(uids) == total
    assert uids == sorted(set(uids))
    assert sorted(e["subject"] for e in box) == sorted(
        "page %d" % i for i in range(total))
    human = node.cli_ok("mailbox", "list", "alice@localhost").stdout.decode()
    lines = human.rstrip("\n").split("\n")
    assert lines[-1].startswith("%d messages" % total), lines[-1]
    assert len(lines) == total + 2      # header, rows, summary
    assert "page %d" % (total - 1) in human
