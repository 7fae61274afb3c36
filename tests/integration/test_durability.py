"""250 only after durability: kill -9 under load loses nothing that was
acknowledged and delivers nothing twice."""
import collections
import random
import threading
import time

import pytest

from conftest import SLOW
from helpers.smtp import Conn, dot_stuff, make_message

THREADS = 8
ROUNDS = 3


def sender(port, rnd, tid, stop, acked, lock):
    i = 0
    while not stop.is_set():
        try:
            c = Conn(port, timeout=5 * SLOW)
        except Exception:  # refused, or closed before the greeting
            time.sleep(0.02)
            continue
        try:
            c.ehlo()
            while not stop.is_set():
                i += 1
                mid = "r%d.t%d.m%d.%d@durability.test.example" % (
                    rnd, tid, i, time.time_ns())
                rcpts = ["alice@localhost"] if i % 3 else \
                    ["alice@localhost", "bob@localhost"]
                msg, _ = make_message(msgid=mid, subject="dur %s" % mid,
                                      body=b"x" * random.randint(10, 4000)
                                      + b"\r\n")
                blob = b"MAIL FROM:<load@client.test.example>\r\n" + b"".join(
                    b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts)
                if tid % 2:
                    # BDAT in two chunks, all pipelined in one write
                    half = len(msg) // 2
                    blob += (b"BDAT %d\r\n" % half + msg[:half] +
                             b"BDAT %d LAST\r\n" % (len(msg) - half) +
                             msg[half:])
                    c.send(blob)
                    rs = c.replies(len(rcpts) + 3)
                    final = rs[-1]
                    if any(r.code != 250 for r in rs):
                        c.cmd("RSET")
                        continue
                else:
                    c.send(blob + b"DATA\r\n")
                    rs = c.replies(len(rcpts) + 2)
                    if rs[-1].code != 354:
                        c.cmd("RSET")
                        continue
                    c.send(dot_stuff(msg))
                    final = c.reply()
                if final.code == 250:
                    with lock:
                        for r in rcpts:
                            acked[r].append(mid)
        except Exception:
            pass
        finally:
            c.close()


def ids_in(node, user):
    return [m["message_id"].strip("<>") for m in node.mailbox(user)]


@pytest.mark.slow
def test_kill9_under_load_loses_nothing(node_factory):
    n = node_factory()
    acked = collections.defaultdict(list)
    for rnd in range(ROUNDS):
        stop = threading.Event()
        lock = threading.Lock()
        before = {u: len(v) for u, v in acked.items()}
        threads = [threading.Thread(target=sender,
                                    args=(n.port, rnd, t, stop, acked, lock),
                                    daemon=True)
                   for t in range(THREADS)]
        for t in threads:
            t.start()
        time.sleep(random.uniform(1.0, 3.0))
        n.kill9()
        stop.set()
        for t in threads:
            t.join(10 * SLOW)
        assert not any(t.is_alive() for t in threads)
        got = sum(len(v) for v in acked.values()) - sum(before.values())
        assert got > 0, "no message was acknowledged in round %d:\n%s" % (
            rnd, n.stderr())

        print("round %d: %d messages acknowledged before kill -9"
              % (rnd, got))
        n.start()
        n.wait_queue_empty(timeout=30)
        for user in ("alice@localhost", "bob@localhost"):
            ids = ids_in(n, user)
            counts = collections.Counter(ids)
            dups = [k for k, v in counts.items() if v > 1]
            assert not dups, "round %d: %d messages twice in %s, e.g. %s" % (
                rnd, len(dups), user, dups[:5])
            missing = set(acked[user]) - set(ids)
            assert not missing, (
                "round %d: %d of %d acknowledged messages lost for %s, "
                "e.g. %s" % (rnd, len(missing), len(acked[user]), user,
                             sorted(missing)[:5]))
    # the node still works normally after all that
    with Conn(n.port) as c:
        c.ehlo()
        assert c.cmd("NOOP").code == 250


def test_repeated_kill9_at_startup_and_during_cli(node_factory):
    n = node_factory()
    msgs = []
    for i in range(5):
        m, mid = make_message(subject="early %d" % i)
        with Conn(n.port) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<s@client.test.example>").code == 250
            assert c.cmd("RCPT TO:<alice@localhost>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(dot_stuff(m))
            assert c.reply().code == 250
        msgs.append(mid)
        # kill while the node starts, and while a CLI call is in flight
        n.kill9()
        n.start()
        import subprocess
        from conftest import BIN
        p = subprocess.Popen([BIN, "-c", n.conf, "user", "add",
                              "u%d@localhost" % i], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        p.stdin.write(b"pw\n")
        p.stdin.close()
        time.sleep(random.uniform(0.0, 0.15))
        n.kill9()
        p.wait(30 * SLOW)
        n.start()
    n.wait_queue_empty()
    ids = [m["message_id"].strip("<>") for m in n.mailbox("alice@localhost")]
    assert sorted(ids) == sorted(msgs)
    users = [u["address"] for u in n.cli_json("user", "list")]
    assert len(users) == len(set(users))
    assert {"alice@localhost", "bob@localhost"} <= set(users)
