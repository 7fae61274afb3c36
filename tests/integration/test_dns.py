"""node/dns.c against a real unbound (helpers/dnsserver.py).

The lookups run in tests/tools/dnsq (DNSQ_BIN), which drives node/dns.c
on a libuv loop and prints each result: a status line, then one line per
host, best first ("pref name addr addr ...").

RFC 5321 §5.1 (MX order, equal preferences at random, implicit MX),
RFC 7505 (null MX), the bounds of dns.h (DNS_HOSTS_MAX, DNS_ADDRS_MAX),
address literals (RFC 5321 §4.1.3), and the failure statuses.
"""
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import SANITIZER_RE
from helpers.dnsserver import DNSServer

DNSQ = os.environ.get("DNSQ_BIN")

pytestmark = pytest.mark.skipif(
    not DNSQ or not os.path.exists(DNSQ),
    reason="DNSQ_BIN (tests/dnsq in the build dir) not set")

HOSTS_MAX = 16  # DNS_HOSTS_MAX
ADDRS_MAX = 8   # DNS_ADDRS_MAX

RECORDS = [
    # preference order, given out of order
    "order.test. 300 IN MX 30 mx3.order.test.",
    "order.test. 300 IN MX 10 mx1.order.test.",
    "order.test. 300 IN MX 20 mx2.order.test.",
    "mx1.order.test. 300 IN A 127.0.0.11",
    "mx2.order.test. 300 IN A 127.0.0.12",
    "mx3.order.test. 300 IN A 127.0.0.13",
    # equal preferences
    "eq.test. 300 IN MX 10 a.eq.test.",
    "eq.test. 300 IN MX 10 b.eq.test.",
    "eq.test. 300 IN MX 10 c.eq.test.",
    "eq.test. 300 IN MX 5 first.eq.test.",
    "eq.test. 300 IN MX 20 last.eq.test.",
    "a.eq.test. 300 IN A 127.0.1.1",
    "b.eq.test. 300 IN A 127.0.1.2",
    "c.eq.test. 300 IN A 127.0.1.3",
    "first.eq.test. 300 IN A 127.0.1.4",
    "last.eq.test. 300 IN A 127.0.1.5",
    # implicit MX: no MX record, the domain's own addresses
    "implicit.test. 300 IN A 127.0.2.1",
    "implicit.test. 300 IN AAAA ::1",
    "bare.test. 300 IN TXT \"no MX, no address\"",
    # null MX (RFC 7505)
    "nullmx.test. 300 IN MX 0 .",
    "mixednull.test. 300 IN MX 0 .",
    "mixednull.test. 300 IN MX 10 mx1.order.test.",
    # an MX target that is a CNAME (RFC 2181 §10.3 forbids it; followed)
    "alias.test. 300 IN MX 10 cname.alias.test.",
    "cname.alias.test. 300 IN CNAME real.alias.test.",
    "real.alias.test. 300 IN A 127.0.3.1",
    # IPv6 and IPv4
    "dual.test. 300 IN MX 10 mx.dual.test.",
    "mx.dual.test. 300 IN A 127.0.4.1",
    "mx.dual.test. 300 IN AAAA ::1",
    "mx.dual.test. 300 IN AAAA fd00::4:1",
    "v6only.test. 300 IN MX 10 mx.v6only.test.",
    "mx.v6only.test. 300 IN AAAA fd00::5:1",
    # MX hosts without an address
    "noaddr.test. 300 IN MX 10 missing.noaddr.test.",
    "noaddr.test. 300 IN MX 20 txtonly.noaddr.test.",
    "txtonly.noaddr.test. 300 IN TXT \"nothing\"",
    "partial.test. 300 IN MX 10 missing.partial.test.",
    "partial.test. 300 IN MX 20 mx.partial.test.",
    "mx.partial.test. 300 IN A 127.0.6.1",
    # an MX target that is no host name (a space in a label): skipped
    "odd.test. 300 IN MX 5 bad\\032host.odd.test.",
    "odd.test. 300 IN MX 10 mx1.order.test.",
    # the same target twice: kept once, at its best preference
    "dup.test. 300 IN MX 30 mx1.order.test.",
    "dup.test. 300 IN MX 10 mx1.order.test.",
    "dup.test. 300 IN MX 20 mx2.order.test.",
]
# more MX records than DNS_HOSTS_MAX: preferences 1..20, best 16 kept
RECORDS += ["many.test. 300 IN MX %d h%d.many.test." % (i, i)
            for i in range(1, 21)]
RECORDS += ["h%d.many.test. 300 IN A 127.0.7.%d" % (i, i) for i in range(1, 21)]
# more addresses than DNS_ADDRS_MAX in both families
RECORDS += ["wide.test. 300 IN A 127.0.8.%d" % i for i in range(1, 11)]
RECORDS += ["wide.test. 300 IN AAAA fd00::8:%d" % i for i in range(1, 11)]
RECORDS += ["wide4.test. 300 IN A 127.0.9.%d" % i for i in range(1, 11)]
RECORDS += ["wide4.test. 300 IN AAAA fd00::9:1"]


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    server = DNSServer(tmp_path_factory.mktemp("dns"), RECORDS)
    server.start()
    yield server
    server.stop()


class Result:
    def __init__(self, status, implicit, error, hosts):
        self.status = status
        self.implicit = implicit
        self.error = error
        self.hosts = hosts  # [(pref, name, [addr, ...]), ...]

    @property
    def names(self):
        return [h[1] for h in self.hosts]

    def __repr__(self):
        return "Result(%s, implicit=%d, %r, %r)" % (
            self.status, self.implicit, self.error, self.hosts)


STATUS_RE = re.compile(
    r"^status=(\w+) implicit=(\d) hosts=(\d+)(?: error=(.*))?$")


def parse(out):
    results, cur = [], None
    for line in out.splitlines():
        m = STATUS_RE.match(line)
        if m:
            cur = Result(m.group(1), int(m.group(2)), m.group(4) or "", [])
            results.append(cur)
            continue
        if line == "cancelled" or line.startswith("refused="):
            continue
        pref, name, *addrs = line.split()
        cur.hosts.append((int(pref), name, addrs))
    return results


def dnsq(server, mode, name, count=None, timeout=60, env=None, check=True):
    """Run dnsq; (results, completed process). Fails on a sanitizer report
    or a loop that does not close clean."""
    args = [DNSQ, server, mode, name] + ([str(count)] if count else [])
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                       env=e)
    assert not SANITIZER_RE.search(p.stderr.encode()), p.stderr
    if check:
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return parse(p.stdout), p


def one(server, mode, name, **kw):
    results, p = dnsq(server, mode, name, **kw)
    assert len(results) == 1, (p.stdout, p.stderr)
    return results[0]


def test_mx_preference_order(dns):
    r = one(dns.server, "mx", "order.test")
    assert r.status == "ok" and r.implicit == 0 and r.error == ""
    assert r.hosts == [(10, "mx1.order.test", ["127.0.0.11"]),
                       (20, "mx2.order.test", ["127.0.0.12"]),
                       (30, "mx3.order.test", ["127.0.0.13"])]


def test_mx_name_case_and_final_dot(dns):
    r = one(dns.server, "mx", "Order.TEST.")
    assert r.status == "ok"
    assert r.names == ["mx1.order.test", "mx2.order.test", "mx3.order.test"]


def test_equal_preferences_shuffled(dns):
    # 60 lookups on one resolver: libunbound's cache hands out the same
    # record order every time, so any variety comes from dns.c
    results, _ = dnsq(dns.server, "mx", "eq.test", count=60)
    assert len(results) == 60
    firsts = set()
    for r in results:
        assert r.status == "ok"
        assert [h[0] for h in r.hosts] == [5, 10, 10, 10, 20]
        assert r.names[0] == "first.eq.test"
        assert r.names[4] == "last.eq.test"
        assert sorted(r.names[1:4]) == ["a.eq.test", "b.eq.test", "c.eq.test"]
        firsts.add(r.names[1])
    # each of 3 hosts first at least once: fails with p ~ 3 * (2/3)^60
    assert firsts == {"a.eq.test", "b.eq.test", "c.eq.test"}


def test_equal_preferences_shuffled_across_processes(dns):
    seen = set()
    for _ in range(30):
        r = one(dns.server, "mx", "eq.test")
        seen.add(tuple(r.names[1:4]))
        if len(seen) > 1:
            break
    assert len(seen) > 1, seen


def test_implicit_mx(dns):
    r = one(dns.server, "mx", "implicit.test")
    assert r.status == "ok" and r.implicit == 1
    assert r.hosts == [(0, "implicit.test", ["::1", "127.0.2.1"])]


def test_implicit_mx_without_address_is_nohost(dns):
    r = one(dns.server, "mx", "bare.test")
    assert r.status == "nohost" and r.implicit == 1 and r.hosts == []
    assert "bare.test" in r.error


def test_null_mx(dns):
    r = one(dns.server, "mx", "nullmx.test")
    assert r.status == "nullmx" and r.hosts == []
    assert "null MX" in r.error and "nullmx.test" in r.error


def test_null_mx_among_other_records_is_ignored(dns):
    # RFC 7505 §3: a null MX must be alone; next to others "." is no host
    r = one(dns.server, "mx", "mixednull.test")
    assert r.status == "ok"
    assert r.hosts == [(10, "mx1.order.test", ["127.0.0.11"])]


def test_nxdomain(dns):
    r = one(dns.server, "mx", "nonexistent.test")
    assert r.status == "nxdomain" and r.hosts == []
    assert "nonexistent.test" in r.error


def test_mx_target_cname_followed(dns):
    r = one(dns.server, "mx", "alias.test")
    assert r.status == "ok"
    assert r.hosts == [(10, "cname.alias.test", ["127.0.3.1"])]


def test_ipv6_first_then_ipv4(dns):
    r = one(dns.server, "mx", "dual.test")
    assert r.status == "ok"
    (pref, name, addrs), = r.hosts
    assert name == "mx.dual.test"
    assert sorted(addrs[:2]) == ["::1", "fd00::4:1"]
    assert addrs[2:] == ["127.0.4.1"]


def test_ipv6_only_host(dns):
    r = one(dns.server, "mx", "v6only.test")
    assert r.status == "ok"
    assert r.hosts == [(10, "mx.v6only.test", ["fd00::5:1"])]


def test_no_host_has_an_address(dns):
    # one target does not exist, the other has records but no address
    r = one(dns.server, "mx", "noaddr.test")
    assert r.status == "nohost" and r.hosts == [] and r.implicit == 0
    assert "noaddr.test" in r.error


def test_hosts_without_address_left_out(dns):
    r = one(dns.server, "mx", "partial.test")
    assert r.status == "ok"
    assert r.hosts == [(20, "mx.partial.test", ["127.0.6.1"])]


def test_unusable_mx_target_skipped(dns):
    r = one(dns.server, "mx", "odd.test")
    assert r.status == "ok"
    assert r.hosts == [(10, "mx1.order.test", ["127.0.0.11"])]


def test_duplicate_target_kept_once_at_best_preference(dns):
    r = one(dns.server, "mx", "dup.test")
    assert r.status == "ok"
    assert [(h[0], h[1]) for h in r.hosts] == [(10, "mx1.order.test"),
                                                (20, "mx2.order.test")]


def test_at_most_hosts_max_best_kept(dns):
    r = one(dns.server, "mx", "many.test")
    assert r.status == "ok"
    assert [h[0] for h in r.hosts] == list(range(1, HOSTS_MAX + 1))
    assert all(h[2] == ["127.0.7.%d" % h[0]] for h in r.hosts)


def test_at_most_addrs_max_both_families_kept(dns):
    r = one(dns.server, "host", "wide.test")
    (_, _, addrs), = r.hosts
    assert len(addrs) == ADDRS_MAX
    v6 = [a for a in addrs if ":" in a]
    assert len(v6) == ADDRS_MAX // 2 and addrs[:len(v6)] == v6
    r = one(dns.server, "host", "wide4.test")
    (_, _, addrs), = r.hosts
    assert len(addrs) == ADDRS_MAX
    assert addrs[0] == "fd00::9:1" and all("." in a for a in addrs[1:])


@pytest.mark.parametrize("literal,addr", [
    ("[127.0.0.1]", "127.0.0.1"),
    ("[IPv6:::1]", "::1"),
    ("[ipv6:2001:db8::25]", "2001:db8::25"),
])
def test_address_literal_needs_no_lookup(literal, addr):
    # nothing listens on the server given: no query is made
    r = one("127.0.0.1@1", "mx", literal, timeout=5)
    assert r.status == "ok" and r.implicit == 0
    assert r.hosts == [(0, literal, [addr])]


@pytest.mark.parametrize("bad", [
    "[127.0.0.1", "[]", "[IPv6:127.0.0.1]", "[999.1.1.1]", "[tag:foo]",
    "", "a..b.test", "space here.test", "x" * 64 + ".test",
    ".".join(["abcdefg"] * 32) + ".test", "caf\u00e9.test", "back\\slash.test",
])
def test_bad_names_refused(bad):
    results, p = dnsq("127.0.0.1@1", "mx", bad, check=False, timeout=5)
    assert p.returncode == 2 and results == [], (p.stdout, p.stderr)
    assert "refused=" in p.stdout


def test_host_lookup(dns):
    r = one(dns.server, "host", "mx.dual.test")
    assert r.status == "ok" and r.implicit == 0
    (pref, name, addrs), = r.hosts
    assert (pref, name) == (0, "mx.dual.test")
    assert sorted(addrs[:2]) == ["::1", "fd00::4:1"]
    assert addrs[2:] == ["127.0.4.1"]


def test_host_ignores_mx(dns):
    r = one(dns.server, "host", "order.test")  # MX records only
    assert r.status == "nohost" and r.hosts == []


def test_host_unknown_is_nohost(dns):
    r = one(dns.server, "host", "nonexistent.test")
    assert r.status == "nohost" and r.hosts == []


@pytest.mark.parametrize("ip", ["192.0.2.7", "2001:db8::7", "[192.0.2.7]",
                                "[IPv6:2001:db8::7]"])
def test_host_ip_needs_no_lookup(ip):
    r = one("127.0.0.1@1", "host", ip, timeout=5)
    assert r.status == "ok"
    assert r.hosts[0][2] == [ip.strip("[]").replace("IPv6:", "")]


def test_many_lookups_at_once(dns):
    results, _ = dnsq(dns.server, "mx", "dual.test", count=500)
    assert len(results) == 500
    assert all(r.status == "ok" and r.names == ["mx.dual.test"]
               for r in results)


def test_cancel_calls_nothing_back(dns):
    for _ in range(5):
        _, p = dnsq(dns.server, "cancel", "order.test", timeout=10)
        assert p.stdout == "cancelled\n", p.stdout


@pytest.mark.parametrize("name", ["order.test", "eq.test", "[127.0.0.1]"])
def test_free_from_first_callback_cancels_the_rest(dns, name):
    # dns_free() inside a callback while other lookups are in flight (or,
    # for literals, waiting for the timer): none of them calls back
    for _ in range(3):
        results, p = dnsq(dns.server, "first", name, count=50, timeout=10)
        assert len(results) == 1 and results[0].status == "ok", p.stdout


def test_cancel_while_server_down():
    # the lookup is still retrying inside libunbound when it is cancelled
    t = time.monotonic()
    _, p = dnsq("127.0.0.1@1", "cancel", "order.test", timeout=10)
    assert p.stdout == "cancelled\n"
    assert time.monotonic() - t < 5


@pytest.mark.slow
def test_tempfail_when_server_down():
    # nothing listens: libunbound retries with back-off (376 ms doubling,
    # five tries) and gives up with SERVFAIL after about 17 s
    port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port.bind(("127.0.0.1", 0))
    server = "127.0.0.1@%d" % port.getsockname()[1]
    port.close()
    t = time.monotonic()
    r = one(server, "mx", "order.test", timeout=60)
    took = time.monotonic() - t
    assert r.status == "tempfail" and r.hosts == []
    assert "order.test" in r.error
    assert took < 30, took


def test_timeout_when_server_silent():
    # a server that never answers: the lookup's own deadline ends it
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        server = "127.0.0.1@%d" % s.getsockname()[1]
        t = time.monotonic()
        results, _ = dnsq(server, "mx", "order.test", count=3, timeout=20,
                          env={"DNSQ_TIMEOUT_MS": "1000"})
        took = time.monotonic() - t
    finally:
        s.close()
    assert [r.status for r in results] == ["tempfail"] * 3
    assert all("timed out" in r.error for r in results)
    assert took < 5, took


def test_host_tempfail_when_server_down():
    t = time.monotonic()
    r = one("127.0.0.1@1", "host", "mx.dual.test", timeout=20,
            env={"DNSQ_TIMEOUT_MS": "1500"})
    assert r.status == "tempfail" and r.hosts == []
    assert "timed out" in r.error
    assert time.monotonic() - t < 6
