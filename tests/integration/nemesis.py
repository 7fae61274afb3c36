"""The mesh nemesis: five `relaymesh serve` nodes in network namespaces
(helpers/netns.py), each the home of its own domain (n1.test .. n5.test,
a few users each), every node's [delivery] smarthost an SMTP sink on a
sixth host, [mesh] replicas = 2 and a short takeover grace. Messages go to
random nodes for random recipients (mesh users anywhere, sometimes several,
sometimes an Internet address at the sink) while a scheduler partitions
pairs of hosts, isolates nodes, drops 20-40 % of a node's packets and
kills nodes with -9 and starts them again on the same data (never more
than two down at once). Then every fault is cleared, every node runs, and
the mesh must drain: every accepted message in each of its mailboxes
exactly once, at the sink at least once, every queue empty, and no node
still holding a live replica record.

Everything random comes from the seed alone (random.Random): the fault
events in order, their targets and planned times, and every message's
accepting node and recipients. Timing varies from run to run (a kill and
restart takes as long as it takes), so the interleaving with the mail does
too; the same seed replays the same nemesis.

Used by test_mesh_nemesis.py (a short run) and bench/mesh-nemesis/run.py
(the long one). Needs root (namespaces, nftables) and RELAYMESH_BIN.
"""
import collections
import ctypes
import json
import os
import queue
import random
import re
import smtplib
import threading
import time

from conftest import BIN, SLOW, SANITIZER_RE
from helpers import netns
from test_mesh import MeshNode, all_alive, join, wait_for
from test_mesh_replication import SINK_SCRIPT
from test_mesh_routing import _items

NODES = 5
SINK = NODES + 1
USERS = 3                       # u1..u3 at every node's domain
SENDER = "nemesis@sender.test"  # bounces, if any, go to the sink
MAX_DOWN = 2                    # never more than two nodes killed at once

KINDS = ("part", "isolate", "loss", "kill")
KIND_WEIGHTS = (3, 2, 2, 3)


def domain(i):
    return "n%d.test" % i


def users(i):
    return ["u%d@%s" % (k, domain(i)) for k in range(1, USERS + 1)]


def msgid(seed, k):
    return "nem-%d-%d@nemesis.test" % (seed, k)


# ------------------------------------------------------------------- plan

def plan_messages(seed, n, duration):
    """[(k, planned send time, accepting node, [recipients])], from the
    seed alone."""
    rng = random.Random("%d:messages" % seed)
    out = []
    for k in range(n):
        node = rng.randint(1, NODES)
        nmesh = rng.choices((0, 1, 2, 3), weights=(1, 6, 2, 1))[0]
        rcpts = []
        while len(rcpts) < nmesh:
            u = "u%d@%s" % (rng.randint(1, USERS),
                            domain(rng.randint(1, NODES)))
            if u not in rcpts:
                rcpts.append(u)
        if nmesh == 0 or rng.random() < 0.25:
            rcpts.append("x%d@internet.test" % k)
        out.append((k, duration * k / max(1, n), node, rcpts))
    return out


def plan_faults(seed, duration):
    """[(start, end, kind, args)] sorted by start, from the seed alone.
    Constraints are kept on the planned times: at most MAX_DOWN nodes
    killed at once, one fault of a kind per host (or pair) at a time, and
    every fault over by `duration`."""
    rng = random.Random("%d:faults" % seed)
    events = []
    t = rng.uniform(1, 4)

    def busy(kind, args, t):
        return any(e[2] == kind and e[3] == args and e[0] <= t < e[1]
                   for e in events)

    while t < duration - 5:
        kind = rng.choices(KINDS, weights=KIND_WEIGHTS)[0]
        if kind == "kill":
            length = rng.uniform(3, 15)
        else:
            length = rng.uniform(5, 20)
        end = min(t + length, duration)
        args = None
        for _ in range(10):
            if kind == "part":
                # Mostly node-node; now and then a node cut from the sink
                # only (it cannot deliver but stays alive in the mesh).
                a = rng.randint(1, NODES)
                b = SINK if rng.random() < 0.15 else rng.randint(1, NODES)
                if a == b:
                    continue
                cand = (min(a, b), max(a, b))
            elif kind == "loss":
                cand = (rng.randint(1, NODES), rng.randint(20, 40))
            else:
                cand = (rng.randint(1, NODES),)
            host_busy = any(e[2] == kind and e[3][0] == cand[0] and
                            e[0] <= t < e[1] for e in events) \
                if kind in ("loss", "isolate", "kill") else \
                busy(kind, cand, t)
            if kind == "kill":
                down = sum(1 for e in events if e[2] == "kill" and
                           e[0] <= t < e[1])
                if down >= MAX_DOWN:
                    host_busy = True
            if not host_busy:
                args = cand
                break
        if args is not None:
            events.append((t, end, kind, args))
        t += rng.uniform(1.5, 5)
    return sorted(events)


def timeline(faults):
    """The fault plan as ordered actions [(time, "start"|"end", index)]."""
    acts = []
    for idx, (s, e, _, _) in enumerate(faults):
        acts.append((s, 0, "start", idx))
        acts.append((e, 1, "end", idx))
    acts.sort()
    return [(t, what, idx) for t, _, what, idx in acts]


# ------------------------------------------------------------------ nodes

class NemesisNode(MeshNode):
    grace = "5s"

    def __init__(self, net, i, base):
        MeshNode.__init__(self, net, i, base)
        self.domains = [domain(i)]

    def write_conf(self):
        MeshNode.write_conf(self)
        with open(self.conf) as f:
            text = f.read()
        text = text.replace("log_level = debug", "log_level = info")
        text = text.replace("[delivery]\n",
                            "[delivery]\nsmarthost = [%s]:2525\n"
                            % self.net.addr(SINK))
        text = text.replace("retry_first = 1h", "retry_first = 2s\n"
                            "retry_max = 4s")
        text += "replicas = 2\ntakeover_grace = %s\negress = yes\n" % \
            self.grace
        with open(self.conf, "w") as f:
            f.write(text)

    def user_add(self, addr):
        import subprocess
        r = subprocess.run([BIN, "-c", self.conf, "user", "add", addr],
                           input=b"pw-12345\n", capture_output=True,
                           timeout=60 * SLOW)
        assert r.returncode == 0, r.stderr.decode()

    def json_cli(self, *args):
        r = self.cli(*(list(args) + ["--json"]))
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def queue_len(self):
        doc = self.json_cli("queue", "list")
        if doc is None:
            return -1
        return len(doc if isinstance(doc, list) else doc.get("entries", []))

    def repl(self):
        st = self.json_cli("status") or {}
        return (st.get("mesh") or {}).get("replication") or {}

    def mailbox_ids(self, addr):
        doc = self.json_cli("mailbox", "list", addr)
        if doc is None:
            raise AssertionError("%s: mailbox list %s failed" % (self.name,
                                                                 addr))
        return [m.get("message_id", "").strip("<>")
                for m in _items(doc, "uid")]


# --------------------------------------------------- SMTP from a namespace

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _enter_netns(name):
    """Move the calling thread (only) into network namespace `name`."""
    fd = os.open("/run/netns/%s" % name, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns %s: %s" % (name, os.strerror(e)))
    finally:
        os.close(fd)


class Sender(threading.Thread):
    """One thread per node, living in that node's namespace, so that it
    reaches the node's SMTP listener on 127.0.0.1 (a host's loopback is
    never faulted). Each job is one message on a new connection; the
    answer is recorded, never retried (a new attempt would be a new
    message: a lost 250 does not mean the message was not stored)."""

    def __init__(self, net, i, results):
        threading.Thread.__init__(self, daemon=True, name="sender-%d" % i)
        self.ns = net.ns(i)
        self.jobs = queue.Queue()
        self.results = results

    def run(self):
        _enter_netns(self.ns)
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fn, arg, done = job
            try:
                done.put(fn(arg))
            except Exception as e:  # noqa: BLE001 - reported
                done.put(e)

    def call(self, fn, arg, timeout=120):
        done = queue.Queue()
        self.jobs.put((fn, arg, done))
        r = done.get(timeout=timeout)
        if isinstance(r, Exception):
            raise r
        return r


def smtp_send(m):
    """(code, accepted recipients, text) for one message."""
    k, rcpts, data = m
    try:
        s = smtplib.SMTP("127.0.0.1", 2525, timeout=30 * SLOW)
    except OSError as e:
        return (0, [], "connect: %s" % e)
    try:
        s.ehlo("client.test")
        refused = s.sendmail(SENDER, rcpts, data.encode())
        ok = [r for r in rcpts if r not in refused]
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass
        return (250, ok, "")
    except smtplib.SMTPRecipientsRefused as e:
        codes = sorted({v[0] for v in e.recipients.values()})
        return (codes[0] if codes else 0, [], "rcpts refused %s" % codes)
    except smtplib.SMTPResponseException as e:
        return (e.smtp_code, [], str(e))
    except (smtplib.SMTPException, OSError) as e:
        return (0, [], "%s: %s" % (type(e).__name__, e))
    finally:
        try:
            s.close()
        except OSError:
            pass


def smtp_rcpt_ok(rcpts):
    try:
        s = smtplib.SMTP("127.0.0.1", 2525, timeout=30 * SLOW)
    except OSError:
        return False
    try:
        s.ehlo("client.test")
        s.mail(SENDER)
        ok = all(s.rcpt(r)[0] == 250 for r in rcpts)
        s.quit()
        return ok
    except (smtplib.SMTPException, OSError):
        return False


def body(seed, k, rcpts, rng_size):
    text = ("From: <%s>\r\nTo: %s\r\nSubject: nemesis %d/%d\r\n"
            "Message-ID: <%s>\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
            "\r\nmessage %d of seed %d\r\n"
            % (SENDER, ", ".join("<%s>" % r for r in rcpts), seed, k,
               msgid(seed, k), k, seed))
    line = "x" * 76 + "\r\n"
    return text + line * (rng_size // len(line))


# ------------------------------------------------------------------- run

class Nemesis:
    """One run. `run()` returns the figures (a dict); `problems` lists what
    failed the checks (empty: all good)."""

    def __init__(self, seed, messages, duration, base, log=print,
                 drain_timeout=None, grace="5s", faults=True):
        self.seed = seed
        self.n_msgs = messages
        self.duration = duration
        self.base = base
        self.log = log
        self.drain_timeout = drain_timeout or 240 * SLOW
        self.grace = grace
        self.msgs = plan_messages(seed, messages, duration)
        self.faults = plan_faults(seed, duration) if faults else []
        self.net = None
        self.nodes = {}
        self.sink = None
        self.sink_file = os.path.join(base, "sink.txt")
        self.senders = {}
        self.results = {}       # k -> (code, accepted rcpts, text)
        self.killed = set()     # nodes down on purpose
        self.crashes = []       # nodes that exited on their own
        self.injected = collections.Counter()
        self.problems = []
        self.figures = {}

    # -- set-up ------------------------------------------------------------
    def setup(self):
        if BIN is None:
            raise RuntimeError("RELAYMESH_BIN not set")
        self.net = netns.Net(SINK)
        self.net.up()
        NemesisNode.grace = self.grace
        self.nodes = {i: NemesisNode(self.net, i, self.base)
                      for i in range(1, NODES + 1)}
        self.sink = self.net.run(SINK, [netns.PYTHON, "-c", SINK_SCRIPT,
                                        self.sink_file])
        for nd in self.nodes.values():
            nd.start()
        self.nodes[1].ok("mesh", "create")
        for i in range(2, NODES + 1):
            join(self.nodes, 1, i)
        wait_for(lambda: all_alive(self.nodes, range(1, NODES + 1)),
                 30 * SLOW, "%d nodes alive" % NODES)
        for i, nd in self.nodes.items():
            for u in users(i):
                nd.user_add(u)
        for i in self.nodes:
            s = Sender(self.net, i, self.results)
            s.start()
            self.senders[i] = s
        # Every node knows every office's users (their records spread).
        everyone = [u for i in self.nodes for u in users(i)]
        for i in self.nodes:
            wait_for(lambda: self.senders[i].call(smtp_rcpt_ok, everyone),
                     30 * SLOW, "every user known at n%d" % i, step=0.5)

    # -- faults --------------------------------------------------------------
    def _start_fault(self, kind, args):
        net = self.net
        if kind == "part":
            net.part(*args)
        elif kind == "isolate":
            net.isolate(args[0])
        elif kind == "loss":
            net.loss(args[0], args[1])
        elif kind == "kill":
            nd = self.nodes[args[0]]
            if nd.proc is not None and nd.proc.poll() is not None:
                self._crashed(nd)
            if nd.proc is not None:
                nd.kill9()
            self.killed.add(args[0])
        self.injected[kind] += 1

    def _end_fault(self, kind, args, active):
        net = self.net
        if kind == "part":
            net.heal(*args)
        elif kind == "isolate":
            i = args[0]
            net.heal(i)     # also heals parts with i: put back live ones
            for (s, e, k2, a2) in active:
                if k2 == "part" and i in a2:
                    net.part(*a2)
        elif kind == "loss":
            net.loss(args[0], 0)
        elif kind == "kill":
            self._restart(args[0])

    def _restart(self, i):
        nd = self.nodes[i]
        try:
            nd.start()
        except AssertionError as e:
            self.crashes.append("n%d did not restart: %s" % (i, e))
            nd.proc = None
        self.killed.discard(i)

    def _crashed(self, nd):
        self.crashes.append("%s exited by itself (rc %s): %s" % (
            nd.name, nd.proc.returncode, nd.tail(1500)))
        nd.proc = None

    def _check_procs(self):
        for i, nd in self.nodes.items():
            if i in self.killed or nd.proc is None:
                continue
            if nd.proc.poll() is not None:
                self._crashed(nd)

    def fault_phase(self):
        """Faults and mail at once; returns when both are done."""
        t0 = time.monotonic()
        acts = timeline(self.faults)
        active = set()

        def mail():
            rng = random.Random("%d:sizes" % self.seed)
            pending = []
            for k, at, node, rcpts in self.msgs:
                size = rng.choice((0, 0, 0, 2000, 20000))
                delay = t0 + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                done = queue.Queue()
                data = body(self.seed, k, rcpts, size)
                self.senders[node].jobs.put((smtp_send, (k, rcpts, data),
                                             done))
                pending.append((k, node, done))
            for k, node, done in pending:
                r = done.get(timeout=600)
                if isinstance(r, Exception):
                    r = (0, [], str(r))
                self.results[k] = r

        mt = threading.Thread(target=mail, daemon=True)
        mt.start()
        for at, what, idx in acts:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._check_procs()
            s, e, kind, args = self.faults[idx]
            f = self.faults[idx]
            if what == "start":
                self.log("nemesis: t=%5.1f %s %s" % (
                    time.monotonic() - t0, kind, args))
                self._start_fault(kind, args)
                active.add(f)
            else:
                active.discard(f)
                self.log("nemesis: t=%5.1f end %s %s" % (
                    time.monotonic() - t0, kind, args))
                self._end_fault(kind, args, active)
        mt.join()
        self.figures["fault_seconds"] = time.monotonic() - t0

    # -- heal and drain ------------------------------------------------------
    def heal(self):
        self.net.clear_all()
        self._check_procs()
        for i, nd in self.nodes.items():
            if nd.proc is None:
                self._restart(i)
        t0 = time.monotonic()
        wait_for(lambda: all_alive(self.nodes, range(1, NODES + 1)),
                 60 * SLOW, "every node alive after the heal")
        return t0

    def drained(self):
        for nd in self.nodes.values():
            if nd.queue_len() != 0:
                return False
            r = nd.repl()
            if r.get("records", -1) != r.get("tombstones", -2):
                return False
            if any(p.get("unacked", 0) for p in r.get("lag", [])):
                return False
        return True

    def sink_ids(self):
        if not os.path.exists(self.sink_file):
            return []
        with open(self.sink_file, "rb") as f:
            return [ln.strip().decode().strip("<>") for ln in f
                    if ln.strip()]

    def drain(self, t_heal):
        try:
            wait_for(self.drained, self.drain_timeout, "queues to drain",
                     step=1.0)
            self.figures["drain_seconds"] = time.monotonic() - t_heal
        except AssertionError:
            self.figures["drain_seconds"] = None
            detail = []
            for nd in self.nodes.values():
                r = nd.repl()
                detail.append("%s: queue=%d records=%s tombstones=%s "
                              "unacked=%s" % (
                                  nd.name, nd.queue_len(), r.get("records"),
                                  r.get("tombstones"),
                                  [p.get("unacked") for p in r.get("lag",
                                                                   [])]))
            self.problems.append("did not drain in %.0f s: %s" % (
                self.drain_timeout, "; ".join(detail)))
        # Internet delivery of the last entries can trail the queue by the
        # sink's own write; give late copies (duplicates) a moment too.
        time.sleep(2 * SLOW)

    # -- checks ------------------------------------------------------------
    def check(self):
        f = self.figures
        boxes = {}
        for i, nd in self.nodes.items():
            for u in users(i):
                boxes[u] = collections.Counter(nd.mailbox_ids(u))
        sink = collections.Counter(self.sink_ids())
        pat = re.compile(r"^nem-%d-(\d+)@nemesis\.test$" % self.seed)
        accepted = refused = 0
        rcpt_ok = delivered = 0
        lost = []
        dup_mailbox = 0
        dup_internet = 0
        codes = collections.Counter()
        for k, _, node, rcpts in self.msgs:
            code, ok, text = self.results.get(k, (0, [], "not sent"))
            codes[code] += 1
            if code != 250:
                refused += 1
                continue
            accepted += 1
            mid = msgid(self.seed, k)
            for r in ok:
                rcpt_ok += 1
                if r.endswith("@internet.test"):
                    n = sink[mid]
                    dup_internet += max(0, n - 1)
                else:
                    n = boxes.get(r, {}).get(mid, 0)
                if n >= 1:
                    delivered += 1
                else:
                    lost.append("%s -> %s (accepted at n%d)" % (mid, r,
                                                                node))
        # Duplicates in any mailbox, of accepted mail or not (a message
        # stored before a kill -9 ate its 250 must still be there once).
        unconfirmed = 0
        for u, c in boxes.items():
            for mid, n in c.items():
                if n > 1:
                    dup_mailbox += n - 1
                    self.problems.append("duplicate in %s: %s x%d" % (
                        u, mid, n))
                m = pat.match(mid)
                if m and self.results.get(int(m.group(1)),
                                          (0,))[0] != 250:
                    unconfirmed += 1
        others = sum(n for mid, n in sink.items() if not pat.match(mid))
        if lost:
            self.problems.append("lost %d: %s" % (len(lost),
                                                  "; ".join(lost[:20])))
        if dup_mailbox:
            self.problems.append("mailbox duplicates: %d" % dup_mailbox)
        for c in self.crashes:
            self.problems.append("crash: %s" % c)
        reports = []
        for nd in self.nodes.values():
            if os.path.exists(nd.log) and SANITIZER_RE.search(nd.logtext()):
                reports.append(nd.name)
        if reports:
            self.problems.append("sanitizer reports in %s" % reports)
        repl = {nd.name: nd.repl() for nd in self.nodes.values()}
        f.update(seed=self.seed, messages=self.n_msgs, accepted=accepted,
                 refused=refused, recipients=rcpt_ok, delivered=delivered,
                 lost=len(lost), dup_mailbox=dup_mailbox,
                 dup_internet=dup_internet, unconfirmed_delivered=unconfirmed,
                 sink_other=others, crashes=len(self.crashes),
                 codes=dict(codes),
                 faults=dict(self.injected),
                 takeovers=sum(r.get("takeovers", 0) for r in repl.values()),
                 stood_down=sum(r.get("stood_down", 0) for r in repl.values()),
                 records=sum(r.get("records", 0) for r in repl.values()),
                 tombstones=sum(r.get("tombstones", 0)
                                for r in repl.values()),
                 live_records=sum(r.get("records", 0) - r.get("tombstones", 0)
                                  for r in repl.values()),
                 queued=sum(max(0, nd.queue_len())
                            for nd in self.nodes.values()))
        if f["live_records"]:
            self.problems.append("live replica records left: %d" %
                                 f["live_records"])
        if f["queued"]:
            self.problems.append("queue entries left: %d" % f["queued"])
        return f

    # -- all of it -----------------------------------------------------------
    def run(self):
        self.log("nemesis: seed=%d messages=%d duration=%ds faults=%d "
                 "(replay: NEMESIS_SEED=%d)" % (
                     self.seed, self.n_msgs, self.duration,
                     len(self.faults), self.seed))
        t0 = time.monotonic()
        self.setup()
        self.figures["setup_seconds"] = time.monotonic() - t0
        self.fault_phase()
        t_heal = self.heal()
        self.drain(t_heal)
        self.check()
        self.figures["total_seconds"] = time.monotonic() - t0
        return self.figures

    def teardown(self):
        for s in self.senders.values():
            s.jobs.put(None)
        if self.sink is not None and self.sink.poll() is None:
            self.sink.kill()
            self.sink.wait()
        for nd in self.nodes.values():
            try:
                if nd.proc is not None and nd.proc.poll() is None:
                    nd.stop()
                elif nd.proc is not None:
                    self.problems.append("%s exited (rc %s) before the end"
                                         % (nd.name, nd.proc.returncode))
            except Exception as e:  # noqa: BLE001 - report, clean up rest
                self.problems.append(str(e))
        if self.net is not None:
            self.net.down()


def format_figures(f):
    rows = [
        ("seed", f.get("seed")),
        ("messages planned", f.get("messages")),
        ("accepted (250)", f.get("accepted")),
        ("refused / not answered", f.get("refused")),
        ("answer codes", " ".join("%s:%d" % kv for kv in
                                  sorted(f.get("codes", {}).items()))),
        ("recipients accepted", f.get("recipients")),
        ("recipients delivered", f.get("delivered")),
        ("lost", f.get("lost")),
        ("duplicates in mailboxes", f.get("dup_mailbox")),
        ("duplicates at the sink", f.get("dup_internet")),
        ("unacknowledged but delivered", f.get("unconfirmed_delivered")),
        ("other mail at the sink (DSNs)", f.get("sink_other")),
        ("faults injected", " ".join("%s=%d" % kv for kv in
                                     sorted(f.get("faults", {}).items()))),
        ("takeovers / stood down", "%s / %s" % (f.get("takeovers"),
                                                f.get("stood_down"))),
        ("replica records / tombstones", "%s / %s" % (f.get("records"),
                                                     f.get("tombstones"))),
        ("live replica records left", f.get("live_records")),
        ("queue entries left", f.get("queued")),
        ("node crashes", f.get("crashes")),
        ("set-up s", "%.1f" % f.get("setup_seconds", 0)),
        ("fault phase s", "%.1f" % f.get("fault_seconds", 0)),
        ("drain after heal s", "%.1f" % f["drain_seconds"]
         if f.get("drain_seconds") is not None else "did not drain"),
        ("total s", "%.1f" % f.get("total_seconds", 0)),
    ]
    w = max(len(r[0]) for r in rows)
    return "\n".join("%-*s  %s" % (w, a, b) for a, b in rows)


def summary_line(f):
    return "nemesis lost=%s dup_mailbox=%s dup_internet=%s seed=%s" % (
        f.get("lost"), f.get("dup_mailbox"), f.get("dup_internet"),
        f.get("seed"))


def seed_from(value):
    """The seed: `value` (an int or a string of one) if given, else a new
    random one (always printed by the run)."""
    if value not in (None, ""):
        return int(value)
    return random.SystemRandom().randrange(1, 2 ** 31)
