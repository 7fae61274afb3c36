"""Throwaway N-host test networks made of Linux network namespaces.

The Python equivalent of a `meshnet.sh`-style tool, standard library only
(it drives `ip` and `nft`), for mesh tests and benches that need real
addresses, partitions, packet loss and a look at what crosses the wire:

    net = Net(3)                   # hosts 1..3, prefix "rmt<pid>", 10.78.0.0/24
    net.up()
    p = net.run(1, ["relaymesh", "-c", conf, "serve"])   # a Popen in host 1
    net.addr(2)                    # "10.78.0.2"
    net.isolate(3); net.heal(3)    # cut host 3 off from everyone, undo
    net.part(1, 2); net.heal(1, 2) # cut the pair 1 <-> 2 only, undo
    net.loss(1, 20)                # drop 20 % of what host 1 sends
    net.clear(1)                   # remove every fault involving host 1
    with net.capture() as cap:     # every frame crossing the bridge
        ...
    assert b"secret" not in cap.payload
    net.down()                     # idempotent

Layout: one "hub" namespace `<prefix>-hub` holding a bridge `br0`, and one
namespace `<prefix>-<i>` per host, linked to the bridge by a veth pair
(`eth0` in the host, `v<i>` in the hub), address `<subnet>.<i>/24` on
`eth0`, loopback up. Nothing is created in the caller's namespace, so the
host machine's interfaces and routes are never touched; the addresses
exist only inside these namespaces and no packet leaves the machine.

Faults are nftables rules in a table `inet fault` of each host (chains
`out` on the output hook, `in` on the input hook). They only match traffic
on `eth0`, so a host's loopback (a node's control or RPC port on
127.0.0.1) is never affected. The harness keeps the fault state of every
host and rewrites that host's two chains in one atomic `nft -f` batch
on each change.

Cleanup: `down()` stops every process started with `run()` (SIGTERM,
then SIGKILL), kills whatever else still runs inside the namespaces and
deletes them. Every Net that is up is also downed at interpreter exit
(atexit) and on SIGTERM/SIGHUP (when those still have their default
action), and `up()` first removes namespaces left behind by earlier runs:
those with its own prefix, and those of the default form `rmt<pid>...`
whose process no longer exists (a test run killed with SIGKILL).

Needs root, iproute2 and nftables (Debian: `nftables`); `netns_available()`
says whether this machine can do it, `require_netns()` skips a pytest test
with the reason when it cannot, `net_fixture()` makes a fixture.
"""
import atexit
import itertools
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

__all__ = ["Net", "Capture", "NetnsError", "netns_available",
           "netns_unavailable_reason", "require_netns", "net_fixture"]

IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"
TC = shutil.which("tc") or "/usr/sbin/tc"
PYTHON = sys.executable or "/usr/bin/python3"

DEFAULT_FAMILY = "rmt"          # default prefixes: rmt<pid>[x<k>]
_DEFAULT_RE = re.compile(r"^%s(\d+)(?:x\d+)?-" % DEFAULT_FAMILY)


class NetnsError(RuntimeError):
    pass


def _run(argv, input=None, check=True, timeout=30):
    r = subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    if check and r.returncode != 0:
        raise NetnsError("%s: exit %d: %s" % (
            " ".join(argv), r.returncode,
            r.stderr.decode("utf-8", "replace").strip()[:500]))
    return r


def _list_netns():
    """Names of the named network namespaces (`ip netns list`)."""
    r = _run([IP, "netns", "list"], check=False)
    if r.returncode != 0:
        return []
    return [ln.split()[0] for ln in r.stdout.decode().splitlines()
            if ln.strip()]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_pids(name):
    r = _run([IP, "netns", "pids", name], check=False)
    if r.returncode != 0:
        return []
    return [int(x) for x in r.stdout.split() if x.isdigit()]


def _delete_netns(name):
    """Kill what still runs inside namespace `name` (processes a test
    started there), then delete it. Quiet if it does not exist."""
    for _ in range(3):
        pids = [p for p in _netns_pids(name) if p != os.getpid()]
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    _run([IP, "netns", "del", name], check=False)


# ------------------------------------------------------------ exit cleanup

_LIVE = {}                      # id(net) -> net, every Net that is up
_LIVE_LOCK = threading.Lock()
_HOOKS_INSTALLED = False
_PREFIX_COUNTER = itertools.count()


def _down_all():
    with _LIVE_LOCK:
        nets = list(_LIVE.values())
    for net in nets:
        try:
            net.down()
        except Exception as e:  # keep cleaning up
            print("netns: cleanup of %s: %s" % (net.prefix, e),
                  file=sys.stderr)


def _on_fatal_signal(sig, _frame):
    _down_all()
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)


def _install_hooks():
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_down_all)
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGHUP):
            try:
                if signal.getsignal(s) == signal.SIG_DFL:
                    signal.signal(s, _on_fatal_signal)
            except (ValueError, OSError):
                pass


def cleanup_stale(prefix=None):
    """Delete namespaces left by earlier runs: every one whose name starts
    with `prefix` + "-", and every `rmt<pid>...-` one whose pid is gone.
    Returns the names deleted."""
    gone = []
    for name in _list_netns():
        stale = prefix is not None and name.startswith(prefix + "-")
        m = _DEFAULT_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            stale = True
        if stale:
            _delete_netns(name)
            gone.append(name)
    return gone


# ------------------------------------------------------------ availability

_AVAIL = None


def netns_unavailable_reason():
    """None when this machine can build Net networks, else why not (not
    root, no `ip`/`nft`, or `ip netns add` / nft inside a namespace fails).
    The probe (a namespace made and deleted) runs once per process."""
    global _AVAIL
    if _AVAIL is not None:
        return _AVAIL or None
    reason = ""
    if os.geteuid() != 0:
        reason = "network namespace tests need root"
    elif not os.path.exists(IP):
        reason = "no `ip` (iproute2)"
    elif not os.path.exists(NFT):
        reason = "no `nft` (Debian package nftables; scripts/deps.sh test)"
    else:
        name = "%sprobe%d-0" % (DEFAULT_FAMILY, os.getpid())
        try:
            r = _run([IP, "netns", "add", name], check=False)
            if r.returncode != 0:
                reason = "`ip netns add` fails: %s" % r.stderr.decode(
                    "utf-8", "replace").strip()
            else:
                r = _run([IP, "netns", "exec", name, NFT, "add", "table",
                          "inet", "probe"], check=False)
                if r.returncode != 0:
                    reason = "nft inside a namespace fails: %s" % \
                        r.stderr.decode("utf-8", "replace").strip()
        except (OSError, subprocess.SubprocessError) as e:
            reason = "`ip netns` fails: %s" % e
        finally:
            _run([IP, "netns", "del", name], check=False)
    _AVAIL = reason
    return reason or None


def netns_available():
    """True when Net can be used here (root, `ip netns` and nft work)."""
    return netns_unavailable_reason() is None


def require_netns():
    """Skip the calling pytest test, with the reason, when Net cannot work
    here."""
    reason = netns_unavailable_reason()
    if reason:
        import pytest
        pytest.skip(reason)


def net_fixture(n=2, scope="function", name=None, **net_kw):
    """A pytest fixture that yields a Net of `n` hosts that is up, and
    downs it afterwards; tests using it are skipped when namespaces are not
    available. In a test module:  `net3 = netns.net_fixture(3)`."""
    import pytest

    def fix():
        require_netns()
        net = Net(n, **net_kw)
        net.up()
        try:
            yield net
        finally:
            net.down()
    return pytest.fixture(fix, scope=scope, name=name)


# ------------------------------------------------------------ the network

class Net:
    """Hosts 1..n in network namespaces on one bridge (see module doc)."""

    def __init__(self, n, prefix=None, subnet="10.78.0"):
        if not 1 <= n <= 250:
            raise ValueError("1 <= n <= 250")
        if prefix is None:
            k = next(_PREFIX_COUNTER)
            prefix = "%s%d" % (DEFAULT_FAMILY, os.getpid()) + \
                ("x%d" % k if k else "")
        if not re.fullmatch(r"[A-Za-z0-9_.]{1,40}", prefix):
            raise ValueError("bad prefix %r" % prefix)
        if not re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}", subnet):
            raise ValueError("subnet is the first three octets, e.g. 10.78.0")
        self.n = n
        self.prefix = prefix
        self.subnet = subnet
        self.hub = prefix + "-hub"
        self.procs = []
        self.is_up = False
        self._faults = {}
        self._lock = threading.Lock()

    # -- names -----------------------------------------------------------
    def ns(self, i):
        """Namespace name of host i (or of the hub, i = "hub")."""
        if i == "hub":
            return self.hub
        self._check(i)
        return "%s-%d" % (self.prefix, i)

    def namespaces(self):
        return [self.hub] + [self.ns(i) for i in self.hosts()]

    def hosts(self):
        return range(1, self.n + 1)

    def addr(self, i):
        self._check(i)
        return "%s.%d" % (self.subnet, i)

    def _check(self, i):
        if not isinstance(i, int) or not 1 <= i <= self.n:
            raise ValueError("no host %r in a net of %d" % (i, self.n))

    # -- lifecycle ---------------------------------------------------------
    def up(self):
        if self.is_up:
            return self
        _install_hooks()
        cleanup_stale(self.prefix)
        with _LIVE_LOCK:
            _LIVE[id(self)] = self
        self.is_up = True
        try:
            hub = self.hub
            _run([IP, "netns", "add", hub])
            _run([IP, "-n", hub, "link", "set", "lo", "up"])
            _run([IP, "-n", hub, "link", "add", "br0", "type", "bridge"])
            _run([IP, "-n", hub, "link", "set", "br0", "up"])
            for i in self.hosts():
                ns = self.ns(i)
                _run([IP, "netns", "add", ns])
                _run([IP, "-n", ns, "link", "set", "lo", "up"])
                _run([IP, "-n", hub, "link", "add", "v%d" % i, "type", "veth",
                      "peer", "name", "eth0", "netns", ns])
                _run([IP, "-n", hub, "link", "set", "v%d" % i, "master",
                      "br0", "up"])
                _run([IP, "-n", ns, "addr", "add", "%s/24" % self.addr(i),
                      "dev", "eth0"])
                _run([IP, "-n", ns, "link", "set", "eth0", "up"])
                self._faults[i] = {"isolate": False, "part": set(),
                                   "loss_out": 0, "loss_in": 0}
                self._nft(i, "add table inet fault\n"
                          "add chain inet fault out { type filter hook output"
                          " priority 0; policy accept; }\n"
                          "add chain inet fault in { type filter hook input"
                          " priority 0; policy accept; }\n")
        except BaseException:
            self.down()
            raise
        return self

    def down(self):
        """Stop the processes started here, delete every namespace.
        Safe to call more than once."""
        with self._lock:
            procs, self.procs = self.procs, []
        for p in procs:
            if p.poll() is None:
                try:
                    p.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        for p in procs:
            try:
                p.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for name in self.namespaces():
            _delete_netns(name)
        self.is_up = False
        self._faults = {}
        with _LIVE_LOCK:
            _LIVE.pop(id(self), None)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    # -- running things inside ----------------------------------------------
    def _argv(self, i, argv):
        if isinstance(argv, str):
            raise TypeError("argv must be a list")
        return [IP, "netns", "exec", self.ns(i)] + [str(a) for a in argv]

    def run(self, i, argv, **popen_kwargs):
        """Start argv inside host i (or "hub"); a subprocess.Popen whose pid
        is the program itself (`ip netns exec` execs it). Stopped by
        down() if still running."""
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self._argv(i, argv), **popen_kwargs)
        with self._lock:
            self.procs = [q for q in self.procs if q.poll() is None]
            self.procs.append(p)
        return p

    def check_output(self, i, argv, timeout=30, **kw):
        """stdout (bytes) of argv run inside host i; CalledProcessError on
        failure."""
        return subprocess.check_output(self._argv(i, argv), timeout=timeout,
                                       **kw)

    def call(self, i, argv, timeout=30, **kw):
        """subprocess.run of argv inside host i (output captured)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.run(self._argv(i, argv), timeout=timeout, **kw)

    # -- faults ------------------------------------------------------------
    def _nft(self, i, script):
        _run([IP, "netns", "exec", self.ns(i), NFT, "-f", "-"],
             input=script.encode())

    def _apply(self, i):
        f = self._faults[i]
        lines = ["flush chain inet fault out", "flush chain inet fault in"]
        if f["isolate"]:
            lines += ['add rule inet fault out oifname "eth0" drop',
                      'add rule inet fault in iifname "eth0" drop']
        for j in sorted(f["part"]):
            a = self.addr(j)
            lines += ['add rule inet fault out oifname "eth0" ip daddr %s '
                      'drop' % a,
                      'add rule inet fault in iifname "eth0" ip saddr %s '
                      'drop' % a]
        # percentages with two decimals: numgen mod 10000 < pct * 100
        for chain, dev, key in (("out", "oifname", "loss_out"),
                                ("in", "iifname", "loss_in")):
            v = f[key]
            if v:
                match = "" if v >= 10000 else \
                    "numgen random mod 10000 < %d " % v
                lines.append('add rule inet fault %s %s "eth0" %sdrop'
                             % (chain, dev, match))
        self._nft(i, "\n".join(lines) + "\n")

    def _need_up(self):
        if not self.is_up:
            raise NetnsError("net %s is not up" % self.prefix)

    def isolate(self, i):
        """Cut host i off from every other host (both directions)."""
        self._need_up()
        self._faults[i]["isolate"] = True
        self._apply(i)

    def part(self, a, b):
        """Cut hosts a and b off from each other (both directions; rules
        on both hosts); other pairs are not affected."""
        self._need_up()
        if a == b:
            raise ValueError("part a host from itself")
        self._check(b)
        self._faults[a]["part"].add(b)
        self._faults[b]["part"].add(a)
        self._apply(a)
        self._apply(b)

    def heal(self, a, b=None):
        """heal(a, b): undo part(a, b). heal(a): undo isolate(a) and every
        part() involving a. Loss is left alone (see loss(), clear())."""
        self._need_up()
        others = [b] if b is not None else \
            [j for j in self.hosts() if a in self._faults[j]["part"]]
        if b is None:
            self._faults[a]["isolate"] = False
        for j in others:
            self._check(j)
            self._faults[a]["part"].discard(j)
            self._faults[j]["part"].discard(a)
            self._apply(j)
        self._apply(a)

    def loss(self, i, pct, outbound=True, inbound=False):
        """Drop pct % (0..100, two decimals) of what host i sends on eth0
        (outbound), and/or of what it receives (inbound), at random
        (nft numgen). pct 0 removes the loss."""
        self._need_up()
        if not 0 <= pct <= 100:
            raise ValueError("pct in 0..100")
        v = int(round(pct * 100))
        if outbound:
            self._faults[i]["loss_out"] = v
        if inbound:
            self._faults[i]["loss_in"] = v
        self._apply(i)

    def rate(self, i, mbit):
        """Limit what host i sends on eth0 to mbit Mbit/s (a token bucket,
        tc tbf: a slow WAN link); None removes the limit."""
        self._need_up()
        ns = self.ns(i)
        if mbit is None:
            _run([IP, "netns", "exec", ns, TC, "qdisc", "del", "dev", "eth0",
                  "root"], check=False)
            return
        _run([IP, "netns", "exec", ns, TC, "qdisc", "replace", "dev", "eth0",
              "root", "tbf", "rate", "%dmbit" % mbit, "burst", "64kb",
              "latency", "2s"])

    def clear(self, i):
        """Remove every fault involving host i: its isolation, its loss and
        every part() with it (on both sides)."""
        self._need_up()
        f = self._faults[i]
        f["isolate"] = False
        f["loss_out"] = f["loss_in"] = 0
        for j in sorted(f["part"]):
            self._faults[j]["part"].discard(i)
            self._apply(j)
        f["part"].clear()
        self._apply(i)

    def clear_all(self):
        for i in self.hosts():
            self._faults[i] = {"isolate": False, "part": set(),
                               "loss_out": 0, "loss_in": 0}
            self._apply(i)

    def rules(self, i):
        """The fault table of host i as `nft list` prints it."""
        return self.check_output(i, [NFT, "list", "table", "inet",
                                     "fault"]).decode()

    # -- capture -----------------------------------------------------------
    def capture(self, target="bridge"):
        """A context manager that records the frames crossing the bridge
        (target "bridge" or None: every host's link) or host i's link only
        (target i), with an AF_PACKET socket in the hub namespace. After
        the block: `cap.payload` (TCP streams reassembled and UDP
        payloads), `cap.raw` (whole frames), `cap.frames`."""
        self._need_up()
        if target in (None, "bridge"):
            ifname = ""
        else:
            self._check(target)
            ifname = "v%d" % target
        return Capture(self, ifname)


# ------------------------------------------------------------ capture

_CAPTURE_SRC = r"""
import os, select, signal, socket, struct, sys
ifname, path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
try:
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)   # SO_RCVBUFFORCE
except OSError:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
if ifname:
    s.bind((ifname, 3))
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
out = open(path, "wb")
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    try:
        r, _, _ = select.select([s], [], [], 0.05)
    except InterruptedError:
        continue
    if r:
        data, a = s.recvfrom(1 << 18)
        name = a[0].encode()
        out.write(struct.pack("!BBI", len(name), a[2], len(data)) + name + data)
    elif stop:
        break
out.close()
"""

PACKET_OUTGOING = 4


class Capture:
    """Frames seen by an AF_PACKET socket in the hub namespace. Use as a
    context manager (Net.capture()); results are there after the block."""

    def __init__(self, net, ifname):
        self.net = net
        self.ifname = ifname
        self.frames = []        # (ifname, pkttype, frame bytes)
        self.proc = None
        self._file = None

    def __enter__(self):
        fd, self._file = tempfile.mkstemp(prefix="netns-cap.")
        os.close(fd)
        self.proc = self.net.run("hub", [PYTHON, "-c", _CAPTURE_SRC,
                                         self.ifname, self._file],
                                 stdout=subprocess.PIPE)
        line = b""
        r, _, _ = select.select([self.proc.stdout], [], [], 10)
        if r:
            line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.proc.kill()
            self.proc.wait()
            os.unlink(self._file)
            raise NetnsError("capture helper did not start")
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        time.sleep(0.05)        # let the last frames reach the socket
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()
        try:
            with open(self._file, "rb") as f:
                data = f.read()
        finally:
            os.unlink(self._file)
        off = 0
        while off + 6 <= len(data):
            nlen, ptype, flen = struct.unpack_from("!BBI", data, off)
            off += 6
            name = data[off:off + nlen].decode()
            off += nlen
            frame = data[off:off + flen]
            off += flen
            if not self.ifname and (name == "br0" or
                                    ptype == PACKET_OUTGOING):
                continue        # each bridged frame once: as it arrives
            self.frames.append((name, ptype, frame))

    @property
    def raw(self):
        """Every captured frame, concatenated."""
        return b"".join(f for _, _, f in self.frames)

    def streams(self):
        """{(proto, src, sport, dst, dport): payload bytes}: TCP payload
        reassembled by sequence number (retransmissions once), UDP
        datagrams concatenated; in order of first appearance."""
        flows = {}
        for _, _, frame in self.frames:
            pk = _parse(frame)
            if pk is None:
                continue
            key, seq, data = pk
            if not data:
                continue
            flows.setdefault(key, []).append((seq, data))
        out = {}
        for key, segs in flows.items():
            if key[0] != "tcp":
                out[key] = b"".join(d for _, d in segs)
                continue
            base = segs[0][0]

            def rel(s):
                d = (s - base) & 0xffffffff
                return d - (1 << 32) if d >= 1 << 31 else d
            rel_segs = sorted(((rel(s), d) for s, d in segs),
                              key=lambda x: x[0])
            buf, end = [], None
            for r, d in rel_segs:
                if end is None:
                    end = r
                if r + len(d) <= end:
                    continue
                if r < end:
                    d = d[end - r:]
                    r = end
                buf.append(d)
                end = r + len(d)
            out[key] = b"".join(buf)
        return out

    @property
    def payload(self):
        """All transport payload seen (streams(), concatenated)."""
        return b"".join(self.streams().values())


def _parse(frame):
    """(flow key, tcp seq or None, payload) of an Ethernet frame with IPv4
    or IPv6 and TCP or UDP, else None."""
    if len(frame) < 14:
        return None
    et = struct.unpack_from("!H", frame, 12)[0]
    off = 14
    while et in (0x8100, 0x88a8) and len(frame) >= off + 4:
        et = struct.unpack_from("!H", frame, off + 2)[0]
        off += 4
    if et == 0x0800:
        if len(frame) < off + 20:
            return None
        ihl = (frame[off] & 0x0f) * 4
        total = struct.unpack_from("!H", frame, off + 2)[0]
        proto = frame[off + 9]
        src = ".".join(str(b) for b in frame[off + 12:off + 16])
        dst = ".".join(str(b) for b in frame[off + 16:off + 20])
        end = off + total if total else len(frame)
        end = min(end, len(frame))
        off += ihl
    elif et == 0x86dd:
        if len(frame) < off + 40:
            return None
        plen = struct.unpack_from("!H", frame, off + 4)[0]
        proto = frame[off + 6]
        src = frame[off + 8:off + 24].hex()
        dst = frame[off + 24:off + 40].hex()
        off += 40
        end = min(off + plen if plen else len(frame), len(frame))
    else:
        return None
    if proto == 6 and end >= off + 20:
        sport, dport, seq = struct.unpack_from("!HHI", frame, off)
        doff = (frame[off + 12] >> 4) * 4
        return ("tcp", src, sport, dst, dport), seq, frame[off + doff:end]
    if proto == 17 and end >= off + 8:
        sport, dport = struct.unpack_from("!HH", frame, off)
        return ("udp", src, sport, dst, dport), None, frame[off + 8:end]
    return None
