"""A throwaway DNS server for tests: a real `unbound` on 127.0.0.1.

The suite is hermetic (no real DNS): tests that need DNS start one of
these with the records they want and point relaymesh at it
(`[dns] server = 127.0.0.1@PORT`, see `DNSServer.server`).

    with DNSServer(tmp_path, [
            "example.test. 300 IN MX 10 mx1.example.test.",
            "mx1.example.test. 300 IN A 127.0.0.10",
    ]) as dns:
        ... dns.server == "127.0.0.1@53533" ...

Records are RR strings in zone-file syntax, each served from a static
local zone: "test." by default (`zones=` names others). Every name
outside those zones gets NXDOMAIN ("." is a static zone too), so nothing
ever leaves the host. unbound answers authoritatively from its local
data: a name with records but not of the type asked is NODATA, a name
with none is NXDOMAIN, and a CNAME in local data is followed within the
local data.

`DNSServer.query(name, qtype)` asks the server directly (a small UDP
client in the standard library), for probing and for tests that want to
check their own records.
"""
import os
import random
import shutil
import socket
import struct
import subprocess
import time

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16,
          "AAAA": 28}


class DNSServerError(AssertionError):
    pass


def _free_udp_tcp_port(host="127.0.0.1"):
    """A port free for both TCP and UDP on host (unbound listens on both).
    There is a window between this check and unbound's bind: start() retries
    on another port when unbound cannot bind."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind((host, 0))
            port = t.getsockname()[1]
            try:
                u.bind((host, port))
            except OSError:
                continue
            return port
        finally:
            t.close()
            u.close()
    raise DNSServerError("no free UDP+TCP port")


def _qname_wire(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            b = label.encode("ascii")
            out += bytes([len(b)]) + b
    return out + b"\0"


def build_query(name, qtype="A", qid=None):
    """A DNS query message (RFC 1035 §4.1), recursion desired."""
    qid = random.randrange(65536) if qid is None else qid
    t = QTYPES[qtype] if isinstance(qtype, str) else int(qtype)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    return qid, header + _qname_wire(name) + struct.pack("!HH", t, 1)


def udp_query(host, port, name, qtype="A", timeout=1.0):
    """Send one query over UDP; (rcode, ancount) of the answer, or None
    when nothing came back within timeout."""
    qid, msg = build_query(name, qtype)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(msg, (host, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = s.recvfrom(65535)
            except (socket.timeout, ConnectionRefusedError):
                return None
            if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == qid:
                flags, _, ancount = struct.unpack("!HHH", data[2:8])
                return flags & 0xF, ancount
        return None
    finally:
        s.close()


def _quote(s):
    """Quote a config value; a TXT record's own double quotes go inside
    single quotes, as unbound.conf(5) allows."""
    if "\n" in s or ('"' in s and "'" in s):
        raise ValueError("cannot quote for unbound.conf: %r" % s)
    return "'%s'" % s if '"' in s else '"%s"' % s


class DNSServer:
    """One unbound process serving `records` from static local zones."""

    def __init__(self, base, records=(), zones=("test.",), name="dns"):
        self.dir = os.path.join(str(base), name)
        os.makedirs(self.dir, exist_ok=True)
        self.records = list(records)
        self.zones = [z if z.endswith(".") else z + "." for z in zones]
        self.host = "127.0.0.1"
        self.port = None
        self.proc = None
        self.conf = os.path.join(self.dir, "unbound.conf")
        self.log = os.path.join(self.dir, "unbound.log")

    @property
    def server(self):
        """The resolver address as relaymesh's [dns] server takes it."""
        return "%s@%d" % (self.host, self.port)

    def write_conf(self):
        lines = [
            "server:",
            "  interface: %s" % self.host,
            "  port: %d" % self.port,
            "  do-ip6: no",
            "  do-daemonize: no",
            '  username: ""',
            '  chroot: ""',
            "  directory: %s" % _quote(self.dir),
            "  pidfile: %s" % _quote(os.path.join(self.dir, "pid")),
            "  use-syslog: no",
            '  logfile: ""',
            "  verbosity: 1",
            "  num-threads: 1",
            "  do-not-query-localhost: no",
            "  access-control: 127.0.0.0/8 allow",
            '  module-config: "iterator"',
            # hermetic: names outside the test zones are NXDOMAIN, never
            # looked up on the internet
            '  local-zone: "." static',
        ]
        for z in self.zones:
            lines.append("  local-zone: %s static" % _quote(z))
        for rr in self.records:
            lines.append("  local-data: %s" % _quote(rr))
        lines += ["remote-control:", "  control-enable: no", ""]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines))

    def start(self, timeout=10.0):
        if not os.path.exists(UNBOUND):
            raise DNSServerError("unbound not installed (%s)" % UNBOUND)
        last = ""
        for _ in range(5):  # another process may take the port meanwhile
            self.port = _free_udp_tcp_port(self.host)
            self.write_conf()
            err = open(self.log, "ab")
            self.proc = subprocess.Popen([UNBOUND, "-d", "-c", self.conf],
                                         stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
            err.close()
            if self._wait_ready(timeout):
                return self
            last = self.stderr()
            self.stop()
            if "bind" not in last and "address already in use" not in last:
                break
        raise DNSServerError("unbound did not start:\n%s" % last)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if udp_query(self.host, self.port, self.zones[0], "SOA",
                         timeout=0.2) is not None:
                return True
            time.sleep(0.05)
        return False

    def query(self, name, qtype="A", timeout=1.0):
        """(rcode, ancount) from the server, or None on timeout."""
        return udp_query(self.host, self.port, name, qtype, timeout)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=5.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stderr(self, limit=20000):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
