"""The namespace network harness itself (helpers/netns.py): hosts reach
each other, every fault blocks what it should and only that, heal and
clear undo it, capture sees plaintext, and nothing is left behind (down,
exit, SIGTERM, SIGKILL). Root only: skipped with the reason elsewhere.
Needs neither relaymesh nor RELAYMESH_BIN."""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import netns

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
PORT = 7000

ECHO_SERVER = r"""
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
print("ready", flush=True)
def echo(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"""

TCP_CLIENT = r"""
import socket, sys
host, port, msg, t = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
try:
    s = socket.create_connection((host, port), timeout=t)
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        d = s.recv(65536)
        if not d:
            break
        got += d
    sys.exit(0 if got == msg else 3)
except OSError as e:
    print(e)
    sys.exit(1)
"""

PING = r"""
import os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
ident = os.getpid() & 0xffff
pkt = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"netns-ping"
pkt = pkt[:2] + struct.pack("!H", csum(pkt)) + pkt[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(float(sys.argv[2]))
s.sendto(pkt, (sys.argv[1], 0))
deadline = time.monotonic() + float(sys.argv[2])
try:
    while time.monotonic() < deadline:
        d, a = s.recvfrom(2048)
        icmp = d[(d[0] & 15) * 4:]
        if a[0] == sys.argv[1] and icmp[0] == 0 and \
                struct.unpack("!H", icmp[4:6])[0] == ident:
            sys.exit(0)
except socket.timeout:
    pass
sys.exit(1)
"""

UDP_COUNT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
n = 0
s.settimeout(5)
try:
    s.recv(100); n = 1
    s.settimeout(0.5)
    while True:
        s.recv(100); n += 1
except socket.timeout:
    pass
print(n, flush=True)
"""

UDP_SEND = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    try:
        s.sendto(b"x" * 20, (sys.argv[1], int(sys.argv[2])))
    except PermissionError:     # dropped by the output hook
        pass
    if i % 50 == 49:
        time.sleep(0.002)
"""

net3 = netns.net_fixture(3, scope="module")


@pytest.fixture(scope="module")
def net(net3):
    """Three hosts, each with a TCP echo server on ADDR:7000."""
    for i in net3.hosts():
        p = net3.run(i, [PY, "-c", ECHO_SERVER, net3.addr(i), PORT],
                     stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"ready"
    return net3


@pytest.fixture(autouse=True)
def _no_faults(request):
    yield
    if "net" in request.fixturenames:
        request.getfixturevalue("net").clear_all()


def tcp(net, a, b, msg="hello", timeout=0.5):
    """True when host a can open a TCP connection to host b's echo server
    and get msg back."""
    r = net.call(a, [PY, "-c", TCP_CLIENT, net.addr(b), PORT, msg, timeout])
    return r.returncode == 0


def ping(net, a, b, timeout=0.5):
    return net.call(a, [PY, "-c", PING, net.addr(b), timeout]).returncode == 0


def test_hosts_reach_each_other(net):
    for a, b in ((1, 2), (2, 1), (1, 3), (3, 2)):
        assert ping(net, a, b), "ping %d -> %d" % (a, b)
        assert tcp(net, a, b), "tcp %d -> %d" % (a, b)
    assert net.addr(2) == "10.78.0.2"
    assert net.check_output(1, ["ip", "-4", "-o", "addr", "show", "eth0"]) \
        .split()[3] == b"10.78.0.1/24"


def test_loopback_unaffected_by_faults(net):
    net.isolate(1)
    net.loss(1, 100, inbound=True)
    assert tcp(net, 1, 1)               # its own address: over lo
    r = net.call(1, [PY, "-c", "import socket; s = socket.socket(); "
                     "s.bind(('127.0.0.1', 0)); s.listen(); "
                     "socket.create_connection(s.getsockname(), timeout=1)"])
    assert r.returncode == 0, r.stderr


def test_isolate_blocks_and_heal_restores(net):
    net.isolate(1)
    assert not tcp(net, 1, 2)
    assert not tcp(net, 2, 1)
    assert not ping(net, 3, 1)
    assert tcp(net, 2, 3), "isolating 1 must not cut 2 <-> 3"
    net.heal(1)
    assert tcp(net, 1, 2) and tcp(net, 2, 1) and ping(net, 3, 1)


def test_loss_100_blocks(net):
    net.loss(1, 100)
    assert not tcp(net, 1, 2)
    assert not tcp(net, 2, 1)           # 1's SYN-ACK is dropped
    assert tcp(net, 2, 3)
    net.loss(1, 0)
    assert tcp(net, 1, 2)
    net.loss(2, 100, outbound=False, inbound=True)
    assert not tcp(net, 1, 2)
    net.clear(2)
    assert tcp(net, 1, 2)


def test_loss_is_random_at_the_given_rate(net):
    net.loss(1, 30)
    rx = net.run(2, [PY, "-c", UDP_COUNT, net.addr(2), 7001],
                 stdout=subprocess.PIPE)
    assert rx.stdout.readline().strip() == b"ready"
    net.check_output(1, [PY, "-c", UDP_SEND, net.addr(2), 7001, 2000])
    got = int(rx.stdout.readline())
    rx.wait(5)
    # binomial(2000, 0.7): mean 1400, sd 20
    assert 1250 < got < 1550, got


def test_part_blocks_only_that_pair(net):
    net.part(1, 2)
    assert not tcp(net, 1, 2)
    assert not tcp(net, 2, 1)
    assert tcp(net, 1, 3) and tcp(net, 3, 1)
    assert tcp(net, 2, 3) and tcp(net, 3, 2)
    net.heal(1, 2)
    assert tcp(net, 1, 2) and tcp(net, 2, 1)


def test_clear_removes_parts_on_both_sides(net):
    net.part(1, 3)
    net.isolate(3)
    net.clear(3)
    assert tcp(net, 1, 3) and tcp(net, 3, 1)
    assert "drop" not in net.rules(1) and "drop" not in net.rules(3)


def test_capture_sees_plaintext(net):
    secret = "plaintext-%d-correct-horse" % os.getpid()
    big = "B" * 100000 + "-end-of-big-%d" % os.getpid()
    with net.capture() as cap:
        assert tcp(net, 1, 2, secret)
        assert tcp(net, 3, 1, big)
    assert secret.encode() in cap.payload
    assert big.encode() in cap.payload  # reassembled across segments
    assert b"never-sent-%d" % os.getpid() not in cap.payload
    keys = list(cap.streams())
    assert ("tcp", net.addr(1), keys[0][2], net.addr(2), PORT) in keys
    # one host's link only: 1 <-> 2 is not on host 3's link
    with net.capture(3) as cap3:
        assert tcp(net, 1, 2, secret + "-again")
        assert tcp(net, 3, 2, "via-three")
    assert (secret + "-again").encode() not in cap3.payload
    assert b"via-three" in cap3.payload


def test_down_removes_every_namespace():
    netns.require_netns()
    net = netns.Net(2, prefix="rmtdown%d" % os.getpid(), subnet="10.78.9")
    net.up()
    names = net.namespaces()
    assert set(names) <= set(netns._list_netns())
    p = net.run(1, ["sleep", "60"])
    net.down()
    assert p.poll() is not None
    assert not [n for n in netns._list_netns() if n.startswith(net.prefix)]
    net.down()                                  # idempotent


def test_up_removes_stale_namespaces_of_its_prefix():
    netns.require_netns()
    prefix = "rmtstale%d" % os.getpid()
    for name in (prefix + "-hub", prefix + "-1", prefix + "-7"):
        subprocess.run(["ip", "netns", "add", name], check=True)
    net = netns.Net(1, prefix=prefix)
    try:
        net.up()
        assert sorted(n for n in netns._list_netns()
                      if n.startswith(prefix)) == [prefix + "-1",
                                                   prefix + "-hub"]
    finally:
        net.down()
    assert not [n for n in netns._list_netns() if n.startswith(prefix)]


CHILD = r"""
import os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from helpers import netns
net = netns.Net(2)                 # default prefix rmt<pid>
net.up()
p = net.run(1, ["sleep", "60"])
print(net.prefix, p.pid, flush=True)
if sys.argv[2] == "exit":
    sys.exit(0)                    # no down(): atexit must do it
time.sleep(60)
"""


def _dead(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.parametrize("how", ["exit", "sigterm", "sigkill"])
def test_nothing_left_behind_by_a_dying_run(how):
    netns.require_netns()
    child = subprocess.Popen([PY, "-c", CHILD, HERE, how],
                             stdout=subprocess.PIPE)
    prefix, pid = child.stdout.readline().split()
    prefix, pid = prefix.decode(), int(pid)
    if how == "sigterm":
        child.send_signal(signal.SIGTERM)
    elif how == "sigkill":
        child.kill()
    child.wait(10)
    if how == "sigkill":
        # left behind; the next up() anywhere removes it (its pid is gone)
        assert [n for n in netns._list_netns() if n.startswith(prefix)]
        with netns.Net(1, subnet="10.78.8"):
            pass
    assert not [n for n in netns._list_netns() if n.startswith(prefix)]
    deadline = time.monotonic() + 3
    while not _dead(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _dead(pid), "process started inside the net still runs"


def test_availability_probe():
    reason = netns.netns_unavailable_reason()
    assert netns.netns_available() == (reason is None)
    assert reason is None or isinstance(reason, str)
