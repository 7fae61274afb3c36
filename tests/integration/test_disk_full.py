"""A full disk: the node answers 452 4.3.1, keeps what it has accepted,
does not crash, and recovers by itself when space comes back."""
import errno
import os
import subprocess
import time

import pytest

from conftest import SLOW
from helpers.smtp import Conn, SMTPClosed, dot_stuff, make_message

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0,
                                 reason="needs root to mount a tmpfs")]

TMPFS_SIZE = "24m"
LEAVE = 384 * 1024


def fill(path, leave):
    """Fill the file system holding `path` until `leave` bytes remain."""
    st = os.statvfs(os.path.dirname(path))
    want = st.f_bavail * st.f_frsize - leave
    block = b"\0" * (1 << 20)
    written = 0
    with open(path, "wb") as f:
        while written < want:
            n = min(len(block), want - written)
            try:
                f.write(block[:n])
                f.flush()
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
            written += n
    return written


def try_send(c, msg):
    """One transaction. Returns (stage, Reply): stage is where it ended."""
    r = c.cmd("MAIL FROM:<s@client.test.example>")
    if r.code != 250:
        return "mail", r
    r = c.cmd("RCPT TO:<alice@localhost>")
    if r.code != 250:
        c.cmd("RSET")
        return "rcpt", r
    r = c.cmd("DATA")
    if r.code != 354:
        c.cmd("RSET")
        return "data", r
    c.send(dot_stuff(msg))
    return "end", c.reply(timeout=30 * SLOW)


def mailbox_ids(n):
    return {m["message_id"].strip("<>") for m in n.mailbox("alice@localhost")}


def queued_subjects(n):
    out = set()
    for e in n.queue():
        show = n.cli_json("queue", "show", e["id"])
        out.add(show.get("subject"))
    return out


@pytest.mark.parametrize("leave", [LEAVE, 0], ids=["little-left", "none-left"])
def test_disk_full_452_and_recovery(node_factory, tmp_path, leave):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700"
                    % TMPFS_SIZE, "tmpfs", str(mnt)], check=True)
    n = None
    try:
        n = node_factory(datadir=str(mnt / "data"), users=("alice@localhost",))
        # warm the store up a little so that start-up allocations are done
        warm, warm_id = make_message(subject="warm")
        with Conn(n.port) as c:
            c.ehlo()
            assert try_send(c, warm)[1].code == 250
        acked = [warm_id]
        subjects = {warm_id: "warm"}
        n.wait_mailbox("alice@localhost", 1)

        filler = str(mnt / "filler")
        fill(filler, leave)

        full = None
        body = (b"f" * 76 + b"\r\n") * 200   # ~15 KB
        with Conn(n.port, timeout=30 * SLOW) as c:
            c.ehlo()
            for i in range(300):
                msg, mid = make_message(subject="full %d" % i,
                                        body=body)
                stage, r = try_send(c, msg)
                if r.code == 250:
                    acked.append(mid)
                    subjects[mid] = "full %d" % i
                    continue
                full = (stage, r)
                break
            assert full is not None, "never refused with a full disk"
            stage, r = full
            print("disk full after %d messages: %s %r" % (len(acked), stage, r))
            assert (r.code, r.enh) == (452, "4.3.1"), full
            # still answering on the same session and on new ones
            assert c.cmd("NOOP").code == 250
        with Conn(n.port) as c:
            c.ehlo()
            assert c.cmd("NOOP").code == 250
        assert n.running(), n.stderr()
        st = n.status()
        assert st["pid"] == n.pid

        # nothing acknowledged is lost, even while the disk is full
        time.sleep(0.5)
        have = mailbox_ids(n)
        missing = [m for m in acked if m not in have]
        if missing:
            queued = queued_subjects(n)
            lost = [m for m in missing if subjects[m] not in queued]
            assert not lost, ("%d acknowledged messages neither in the "
                              "mailbox nor queued" % len(lost), lost[:5])

        # space comes back: sending works again and everything is delivered
        os.unlink(filler)
        again, again_id = make_message(subject="after")
        deadline = time.monotonic() + 15 * SLOW
        while True:
            with Conn(n.port) as c:
                c.ehlo()
                stage, r = try_send(c, again)
            if r.code == 250:
                break
            assert r.code == 452 and time.monotonic() < deadline, \
                ("no recovery after freeing space", stage, r)
            time.sleep(0.5)
        acked.append(again_id)
        deadline = time.monotonic() + 40 * SLOW
        while time.monotonic() < deadline:
            have = mailbox_ids(n)
            if all(m in have for m in acked):
                break
            time.sleep(0.25)
        missing = [m for m in acked if m not in have]
        assert not missing, ("%d of %d acknowledged messages not delivered "
                             "after space came back; queue: %r"
                             % (len(missing), len(acked), n.queue()[:5]))
        ids = [m["message_id"] for m in n.mailbox("alice@localhost")]
        assert len(ids) == len(set(ids)), "duplicates after disk full"
        assert n.running()
    finally:
        try:
            if n is not None:
                n.stop()
        finally:
            r = subprocess.run(["umount", str(mnt)])
            if r.returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)])


def test_map_full_452(node_factory):
    """The LMDB map reaching map_size_max is a full disk too."""
    # 64 MiB is the store's initial map size: the smallest real ceiling
    n = node_factory(conf={"store.map_size_max": "64m"},
                     users=("alice@localhost",))
    body = (b"m" * 76 + b"\r\n") * 13000   # ~1 MB
    acked = []
    full = None
    with Conn(n.port, timeout=30 * SLOW) as c:
        c.ehlo()
        for i in range(200):
            msg, mid = make_message(subject="map %d" % i, body=body)
            stage, r = try_send(c, msg)
            if r.code == 250:
                acked.append(mid)
                continue
            full = (stage, r)
            break
        assert full is not None, "never refused with a full map"
        assert (full[1].code, full[1].enh) == (452, "4.3.1"), full
        assert c.cmd("NOOP").code == 250
    assert acked
    assert n.status()["store_full"] >= 1
    n.wait_queue_empty(timeout=20)
    have = mailbox_ids(n)
    assert [m for m in acked if m not in have] == []
