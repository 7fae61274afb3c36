"""Many sessions at once, slow clients, session limits, graceful SIGTERM."""
import resource
import selectors
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import SLOW
from helpers.smtp import Conn, SMTPClosed, dot_stuff, make_message, send_mail

SENDER = "s@client.test.example"


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        want = n if hard == resource.RLIM_INFINITY else min(n, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@pytest.mark.slow
def test_thousand_idle_connections(node):
    count = 1000
    if raise_nofile(count + 200) < count + 100:
        pytest.skip("RLIMIT_NOFILE too low")
    socks = []
    sel = selectors.DefaultSelector()
    try:
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", node.port),
                                         timeout=10 * SLOW)
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, [b""])
        greeted = 0
        deadline = time.monotonic() + 30 * SLOW
        while greeted < count and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                data = key.fileobj.recv(512)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                key.data[0] += data
                if key.data[0].endswith(b"\r\n"):
                    assert key.data[0].startswith(b"220 "), key.data[0]
                    greeted += 1
                    sel.unregister(key.fileobj)
        assert greeted == count, "%d of %d greeted" % (greeted, count)
        st = node.status()
        assert st["sessions_current"] >= count, st
        # a new session is served normally meanwhile
        msg, mid = make_message(subject="among 1000")
        t0 = time.monotonic()
        final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], msg)
        assert final.code == 250
        assert time.monotonic() - t0 < 5 * SLOW
        box = node.wait_mailbox("alice@localhost", 1)
        assert [m["message_id"].strip("<>") for m in box] == [mid]
    finally:
        sel.close()
        for s in socks:
            s.close()
    # the sessions go away when the clients do
    deadline = time.monotonic() + 10 * SLOW
    while node.status()["sessions_current"] > 0:
        assert time.monotonic() < deadline, node.status()
        time.sleep(0.1)


def test_slow_client_does_not_block_others(node):
    slow_done = {}

    def slow():
        try:
            slow_inner()
        except Exception as e:  # reported by the assertion below
            slow_done["error"] = repr(e)

    def slow_inner():
        with Conn(node.port, timeout=30 * SLOW) as c:
            c.ehlo()
            for b in b"MAIL FROM:<slow@x.example>\r\n":
                c.send(bytes([b]))
                time.sleep(0.2)
            slow_done["mail"] = c.reply()
            c.send(b"RCPT TO:<bob@localhost>\r\nDATA\r\n")
            slow_done["rcpt"], slow_done["data"] = c.replies(2)
            msg, mid = make_message(subject="slow")
            for i in range(0, len(msg), 40):   # the message dribbles in too
                c.send(msg[i:i + 40])
                time.sleep(0.05)
            c.send(b".\r\n")
            slow_done["final"] = c.reply()

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    time.sleep(0.3)
    times = []
    for i in range(5):
        msg, mid = make_message(subject="fast %d" % i)
        t0 = time.monotonic()
        final, _, _ = send_mail(node.port, SENDER, ["alice@localhost"], msg)
        times.append(time.monotonic() - t0)
        assert final.code == 250
    assert t.is_alive(), "the slow client finished too early to prove anything"
    assert max(times) < 2 * SLOW, times
    t.join(60 * SLOW)
    assert [slow_done.get(k).code if slow_done.get(k) else None
            for k in ("mail", "rcpt", "data", "final")] == \
        [250, 250, 354, 250], slow_done
    assert len(node.wait_mailbox("alice@localhost", 5)) == 5
    assert len(node.wait_mailbox("bob@localhost", 1)) == 1


def test_max_sessions(node_factory):
    n = node_factory(conf={"limits.max_sessions": 5}, users=())
    conns = [Conn(n.port) for _ in range(5)]
    try:
        for c in conns:
            assert c.greeting.code == 220
        sixth = Conn(n.port)
        assert sixth.greeting.code == 421, sixth.greeting
        assert sixth.greeting.enh and sixth.greeting.enh.startswith("4."), \
            sixth.greeting
        assert sixth.wait_closed(5)
        sixth.close()
        # the five are still fine
        for c in conns:
            assert c.cmd("NOOP").code == 250
        # one leaves: a new one gets in
        conns.pop().cmd("QUIT")
        deadline = time.monotonic() + 5 * SLOW
        while True:
            c = Conn(n.port)
            if c.greeting.code == 220:
                conns.append(c)
                break
            c.close()
            assert time.monotonic() < deadline, "slot never freed"
            time.sleep(0.1)
        assert conns[-1].cmd("NOOP").code == 250
    finally:
        for c in conns:
            c.close()


def test_parallel_senders(node):
    errors = []
    done = []

    def run(tid):
        try:
            with Conn(node.port, timeout=30 * SLOW) as c:
                c.ehlo()
                for i in range(5):
                    msg, mid = make_message(subject="par %d.%d" % (tid, i))
                    final, _, _ = send_mail(node.port, SENDER,
                                            ["alice@localhost"], msg, conn=c)
                    assert final.code == 250, final
                    done.append(mid)
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60 * SLOW)
    assert not errors, errors[:3]
    box = node.wait_mailbox("alice@localhost", 100)
    assert sorted(m["message_id"].strip("<>") for m in box) == sorted(done)


def test_sigterm_idle_session_exits_zero(node_factory):
    n = node_factory(conf={"limits.timeout_shutdown": 3}, users=())
    c = Conn(n.port)
    c.ehlo()
    t0 = time.monotonic()
    n.proc.send_signal(signal.SIGTERM)
    try:
        rc = n.proc.wait(3 + 5 * SLOW)
    except subprocess.TimeoutExpired:
        pytest.fail("node still running %.1f s after SIGTERM"
                    % (time.monotonic() - t0))
    n.exit_codes.append(rc)
    assert rc == 0, n.stderr()
    # the idle client was told (421) or at least disconnected
    tail = c.buf
    assert c.wait_closed(2)
    tail = c.buf
    assert tail == b"" or tail.startswith(b"421"), tail
    c.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", n.port), timeout=2).close()


def test_sigterm_drains_transaction_in_flight(node_factory):
    n = node_factory(conf={"limits.timeout_shutdown": 10},
                     users=("alice@localhost",))
    msg, mid = make_message(subject="in flight")
    c = Conn(n.port)
    c.ehlo()
    assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
    assert c.cmd("RCPT TO:<alice@localhost>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(msg[:30])
    n.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # no new sessions while draining
    try:
        s = socket.create_connection(("127.0.0.1", n.port), timeout=2)
        s.settimeout(2 * SLOW)
        try:
            data = s.recv(100)
        except OSError:
            data = b""
        s.close()
        assert not data.startswith(b"220"), data
    except OSError:
        pass
    final = None
    try:
        c.send(dot_stuff(msg)[30:])
        final = c.reply()
    except (SMTPClosed, OSError):
        pass
    c.close()
    rc = n.proc.wait(10 + 5 * SLOW)
    n.exit_codes.append(rc)
    assert rc == 0, n.stderr()
    n.start()
    ids = [m["message_id"].strip("<>") for m in n.mailbox("alice@localhost")]
    if final is not None and final.code == 250:
        n.wait_queue_empty()
        ids = [m["message_id"].strip("<>")
               for m in n.mailbox("alice@localhost")]
        assert ids == [mid]
    else:
        assert ids == []


def test_reply_backpressure_many_pipelined_commands(node):
    """A client that writes 5,000 EHLO commands before reading a reply: the
    server must neither buffer without bound nor lose or reorder replies."""
    # EHLO: a big multi-line reply, and not a "junk" command that a
    # NOOP/RSET budget would cut short
    count = 5000
    with Conn(node.port, timeout=60 * SLOW) as c:
        c.ehlo()
        blob = b"".join(b"EHLO c%d.test.example\r\n" % i
                        for i in range(count)) + b"QUIT\r\n"
        codes = []

        def reader():
            try:
                while True:
                    r = c.reply()
                    codes.append(r.code)
                    if r.code in (221, 421):
                        return
            except Exception as e:
                codes.append(repr(e))

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        time.sleep(0.5)   # let the server's output fill up first
        try:
            c.send(blob)
        except OSError:
            pass
        t.join(60 * SLOW)
        assert not t.is_alive(), "replies stopped after %d" % len(codes)
    print("backpressure: %d replies, last %r" % (len(codes), codes[-2:]))
    if codes[-1] == 421:
        # a junk-command budget is fine, as long as it ends cleanly
        assert all(x == 250 for x in codes[:-1]), codes[-5:]
    else:
        assert codes.count(250) == count and codes[-1] == 221, (
            len(codes), codes[-3:])
    with Conn(node.port) as c2:
        assert c2.cmd("NOOP").code == 250


@pytest.mark.slow
def test_sigterm_under_load_exits_zero_and_keeps_everything(node_factory):
    n = node_factory(conf={"limits.timeout_shutdown": 5})
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def run(tid):
        i = 0
        try:
            with Conn(n.port, timeout=10 * SLOW) as c:
                c.ehlo()
                while not stop.is_set():
                    i += 1
                    msg, mid = make_message(subject="term %d.%d" % (tid, i))
                    final, _, _ = send_mail(n.port, SENDER,
                                            ["alice@localhost"], msg, conn=c)
                    if final is None or final.code != 250:
                        return
                    with lock:
                        acked.append(mid)
        except Exception:
            return

    threads = [threading.Thread(target=run, args=(t,), daemon=True)
               for t in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    n.proc.send_signal(signal.SIGTERM)
    try:
        rc = n.proc.wait(5 + 10 * SLOW)
    except subprocess.TimeoutExpired:
        n.proc.kill()
        n.proc.wait()
        n.exit_codes.append("hung")
        pytest.fail("no exit %.0f s after SIGTERM under load"
                    % (time.monotonic() - t0))
    stop.set()
    for t in threads:
        t.join(10 * SLOW)
    n.exit_codes.append(rc)
    assert rc == 0, n.stderr()
    assert acked
    n.start()
    n.wait_queue_empty()
    ids = [m["message_id"].strip("<>") for m in n.mailbox("alice@localhost")]
    assert len(ids) == len(set(ids)), "duplicates after SIGTERM"
    missing = set(acked) - set(ids)
    assert not missing, "%d of %d acknowledged messages lost" % (
        len(missing), len(acked))


def test_sigterm_gives_up_on_a_stuck_session_after_timeout_shutdown(
        node_factory):
    n = node_factory(conf={"limits.timeout_shutdown": 2}, users=())
    c = Conn(n.port)
    c.ehlo()
    assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
    assert c.cmd("RCPT TO:<x@remote.example.net>").code == 250
    assert c.cmd("DATA").code == 354
    stop = threading.Event()

    def trickle():  # keeps the session busy, never ends the message
        while not stop.is_set():
            try:
                c.send(b"z")
            except OSError:
                return
            time.sleep(0.2)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    t0 = time.monotonic()
    n.proc.send_signal(signal.SIGTERM)
    try:
        rc = n.proc.wait(2 + 5 * SLOW)
    except subprocess.TimeoutExpired:
        rc = None
    took = time.monotonic() - t0
    stop.set()
    t.join(5)
    c.close()
    if rc is None:
        n.proc.kill()
        n.proc.wait()
        n.exit_codes.append("hung")
        pytest.fail("node still running %.1f s after SIGTERM with "
                    "timeout_shutdown = 2" % took)
    n.exit_codes.append(rc)
    assert rc == 0, n.stderr()
    assert took >= 1.0, "the session in flight was not given its time"
    n.start()
    assert n.queue() == [], "half a message was queued"
