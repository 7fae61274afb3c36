"""Fixtures for the relaymesh integration suite.

Every test starts real `relaymesh serve` processes on loopback with an
ephemeral port and a config of its own under tmp_path, and talks to them
with real clients. At teardown every node is stopped with SIGTERM; a node
that does not exit 0, or that logged a sanitizer report, fails the test.
"""
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

BIN = os.environ.get("RELAYMESH_BIN")
SRC = os.environ.get("RELAYMESH_SRC")

SANITIZER_RE = re.compile(
    rb"(AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
    rb"ThreadSanitizer|runtime error:|SUMMARY: \w+Sanitizer)")


def _detect_slow():
    """Sanitizer builds run 2-3x slower: scale timeouts."""
    if os.environ.get("RELAYMESH_TIMEOUT_SCALE"):
        return float(os.environ["RELAYMESH_TIMEOUT_SCALE"])
    try:
        with open(BIN, "rb") as f:
            data = f.read()
        if b"__asan_init" in data or b"__ubsan_handle" in data:
            return 3.0
    except (OSError, TypeError):
        pass
    return 1.0


SLOW = _detect_slow() if BIN else 1.0


def pytest_configure(config):
    config.addinivalue_line("markers",
                            "slow: takes several seconds (still runs in CI)")
    config.addinivalue_line("markers", "root: needs root (mount)")


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_ports(n, host="127.0.0.1"):
    """`n` distinct free ports (all held open until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _single_port(value):
    """The port of a one-address listener value "127.0.0.1:N", else None."""
    m = re.fullmatch(r"\s*(?:\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):(\d+)\s*",
                     value or "")
    return int(m.group(1)) if m else None


DEFAULTS = {
    "node": {
        "hostname": "mx.test.example",
        "log_level": "debug",
    },
    "smtp": {
        "domains": "localhost, example.org",
        "mynetworks": "127.0.0.0/8, ::1/128",
        "postmaster": "postmaster@localhost",
        "bare_lf": "reject",
    },
    "limits": {
        "max_command_line": "512",
        "max_text_line": "1000",
        "max_recipients": "1000",
        "max_message_size": "26214400",
        "max_header_size": "102400",
        "max_errors": "10",
        "max_received": "50",
        "max_sessions": "10000",
        "timeout_command": "300",
        "timeout_data": "600",
        "timeout_shutdown": "30",
    },
    "store": {
        "map_size_max": "0",
    },
    # Hermetic: no test may send a DNS query off the machine. Nothing
    # listens on 127.0.0.1:9, so mail for other domains is deferred
    # (tests of delivery start their own DNS server and override this).
    "dns": {
        "server": "127.0.0.1@9",
    },
    "delivery": {
        "retry_first": "1h",
    },
}


class NodeError(AssertionError):
    pass


class Node:
    """One `relaymesh serve` process and its files."""

    def __init__(self, base, name, datadir=None, conf=None, users=()):
        self.dir = os.path.join(str(base), name)
        os.makedirs(self.dir, exist_ok=True)
        self.datadir = datadir or os.path.join(self.dir, "data")
        # three listeners on every node: relay/MX (smtp.listen), submission
        # (RFC 6409) and implicit TLS (RFC 8314). A test that sets
        # smtp.submission or smtp.smtps itself gets the port of that value
        # (or None when it is empty or lists several addresses).
        (self.port, self.submission_port, self.smtps_port,
         self.mesh_port, self.bridge_port) = free_ports(5)
        self.conf = os.path.join(self.dir, "relaymesh.conf")
        self.settings = {s: dict(v) for s, v in DEFAULTS.items()}
        self.settings["node"]["datadir"] = self.datadir
        self.settings["smtp"]["listen"] = "127.0.0.1:%d" % self.port
        self.settings["smtp"]["submission"] = \
            "127.0.0.1:%d" % self.submission_port
        self.settings["smtp"]["smtps"] = "127.0.0.1:%d" % self.smtps_port
        # Each node its own mesh port (the default 4750 is shared).
        self.settings.setdefault("mesh", {})["listen"] = \
            "127.0.0.1:%d" % self.mesh_port
        # and its own MAPI bridge port (the default 4751 is shared too)
        self.settings.setdefault("bridge", {})["listen"] = \
            "127.0.0.1:%d" % self.bridge_port
        for key, value in (conf or {}).items():
            section, k = key.split(".", 1)
            self.settings.setdefault(section, {})[k] = str(value)
        conf_keys = set(conf or {})
        if "smtp.submission" in conf_keys:
            self.submission_port = _single_port(
                self.settings["smtp"]["submission"])
        if "smtp.smtps" in conf_keys:
            self.smtps_port = _single_port(self.settings["smtp"]["smtps"])
        lim = self.settings["limits"]
        if "limits.max_header_size" not in (conf or {}) and \
                int(lim["max_header_size"]) > int(lim["max_message_size"]):
            lim["max_header_size"] = str(int(lim["max_message_size"]) // 2)
        self.write_conf()
        self.proc = None
        self.starts = 0
        self.logs = []  # (stdout path, stderr path) per start
        self.exit_codes = []
        self.users = list(users)

    def write_conf(self):
        with open(self.conf, "w") as f:
            for section, kv in self.settings.items():
                f.write("[%s]\n" % section)
                for k, v in kv.items():
                    f.write("%s = %s\n" % (k, v))
                f.write("\n")

    # -- lifecycle -----------------------------------------------------
    def start(self, timeout=10.0):
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        out = os.path.join(self.dir, "stdout.%d" % self.starts)
        err = os.path.join(self.dir, "stderr.%d" % self.starts)
        self.logs.append((out, err))
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        with open(out, "wb") as fo, open(err, "wb") as fe:
            self.proc = subprocess.Popen([BIN, "serve", "-c", self.conf],
                                         stdin=subprocess.DEVNULL,
                                         stdout=fo, stderr=fe, env=env,
                                         cwd=self.dir)
        deadline = time.monotonic() + timeout * SLOW
        while True:
            rc = self.proc.poll()
            if rc is not None:
                # the test fails here; teardown need not report it again
                self.exit_codes.append("startfail")
                raise NodeError("relaymesh serve exited %d during start-up:"
                                "\n%s" % (rc, self.stderr()))
            if self._accepts():
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise NodeError("relaymesh did not accept on port %d within "
                                "%.0f s:\n%s" % (self.port, timeout * SLOW,
                                                 self.stderr()))
            time.sleep(0.05)
        return self

    def _accepts(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port),
                                         timeout=1.0)
        except OSError:
            return False
        try:
            s.settimeout(5 * SLOW)
            data = s.recv(512)
            ok = data.startswith(b"220")
            try:
                s.sendall(b"QUIT\r\n")
                s.recv(512)
            except OSError:
                pass
            return ok
        except OSError:
            return False
        finally:
            s.close()

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=None):
        """SIGTERM, wait, and insist on exit status 0."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        if timeout is None:
            timeout = float(self.settings["limits"]["timeout_shutdown"]) + 10
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.exit_codes.append("hung")
            raise NodeError("relaymesh did not exit within %.0f s of SIGTERM"
                            "\n%s" % (timeout * SLOW, self.stderr()))
        self.exit_codes.append(rc)
        if rc != 0:
            raise NodeError("relaymesh exited %d after SIGTERM:\n%s"
                            % (rc, self.stderr()))
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.exit_codes.append("killed")

    def restart(self, timeout=10.0):
        if self.running():
            self.stop()
        return self.start(timeout)

    # -- logs ------------------------------------------------------------
    def stderr(self, which=None, limit=20000):
        paths = [e for _, e in self.logs] if which is None else \
            [self.logs[which][1]]
        text = b""
        for p in paths:
            try:
                with open(p, "rb") as f:
                    text += f.read()
            except OSError:
                pass
        if limit and len(text) > limit:
            text = b"...\n" + text[-limit:]
        return text.decode("utf-8", "replace")

    def stdout(self, which=-1):
        with open(self.logs[which][0], "rb") as f:
            return f.read().decode("utf-8", "replace")

    def sanitizer_reports(self):
        out = []
        for _, e in self.logs:
            try:
                with open(e, "rb") as f:
                    for ln in f:
                        if SANITIZER_RE.search(ln):
                            out.append(ln.decode("utf-8", "replace").rstrip())
            except OSError:
                pass
        return out

    # -- CLI -------------------------------------------------------------
    def cli(self, *args, input=None, timeout=30.0, use_datadir=False):
        """Run `relaymesh -c CONF ARGS...` (or -d DATADIR)."""
        sel = ["-d", self.datadir] if use_datadir else ["-c", self.conf]
        if isinstance(input, str):
            input = input.encode("utf-8")
        return subprocess.run([BIN] + sel + [str(a) for a in args],
                              input=input, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout * SLOW)

    def cli_ok(self, *args, **kw):
        r = self.cli(*args, **kw)
        if r.returncode != 0:
            raise NodeError("relaymesh %s exited %d\nstdout: %r\nstderr: %r"
                            % (" ".join(map(str, args)), r.returncode,
                               r.stdout[:2000], r.stderr[:2000]))
        return r

    def cli_json(self, *args):
        r = self.cli_ok(*(list(args) + ["--json"]))
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise NodeError("relaymesh %s --json printed invalid JSON (%s): "
                            "%r" % (" ".join(args), e, r.stdout[:2000]))

    def add_user(self, address, password="s3cret-pw"):
        self.cli_ok("user", "add", address, input=password + "\n")

    def mailbox(self, address):
        return self.cli_json("mailbox", "list", address)

    def cat(self, address, uid):
        return self.cli_ok("mailbox", "cat", address, str(uid)).stdout

    def queue(self):
        return self.cli_json("queue", "list")

    def status(self):
        return self.cli_json("status")

    def wait_queue_empty(self, timeout=20.0):
        deadline = time.monotonic() + timeout * SLOW
        q = None
        while time.monotonic() < deadline:
            q = self.queue()
            if not q:
                return
            time.sleep(0.1)
        raise NodeError("queue not empty after %.0f s: %r"
                        % (timeout * SLOW, q[:20]))

    def wait_mailbox(self, address, count, timeout=15.0):
        """Wait until `address` holds at least `count` messages."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            box = self.mailbox(address)
            if len(box) >= count or time.monotonic() > deadline:
                return box
            time.sleep(0.05)


@pytest.fixture(scope="session")
def _user_templates(tmp_path_factory):
    """Data dirs that already hold a set of users, made once per session:
    adding a user costs an argon2id hash (~0.2 s), copying a stopped
    node's store costs nothing."""
    cache = {}

    def get(users):
        key = tuple(users)
        if key not in cache:
            base = tmp_path_factory.mktemp("template")
            n = Node(base, "tmpl")
            n.start()
            try:
                for u in users:
                    n.add_user(u)
            finally:
                n.stop()
            if n.sanitizer_reports():
                raise NodeError("template node: " + n.stderr())
            cache[key] = n.datadir
        return cache[key]

    return get


def _copy_store(src, dst):
    os.makedirs(dst, mode=0o700)
    for name in os.listdir(src):
        p = os.path.join(src, name)
        # every node makes its own key pair (node.key) at first start
        if name in ("lock.mdb", "node.key") or \
                not stat.S_ISREG(os.lstat(p).st_mode):
            continue
        shutil.copy2(p, os.path.join(dst, name))


@pytest.fixture
def node_factory(tmp_path, request, _user_templates):
    """node_factory(conf={"limits.max_errors": 3}, users=["alice@localhost"])
    starts a node and returns it; every node is stopped and checked at
    teardown."""
    if not BIN:
        pytest.skip("RELAYMESH_BIN not set")
    if not os.access(BIN, os.X_OK):
        pytest.fail("RELAYMESH_BIN=%s is not an executable" % BIN)
    nodes = []

    def make(conf=None, users=("alice@localhost", "bob@localhost"),
             name=None, datadir=None, start=True):
        n = Node(tmp_path, name or "node%d" % len(nodes), datadir=datadir,
                 conf=conf, users=users)
        nodes.append(n)
        fresh = not os.path.exists(n.datadir)
        if users and fresh and os.environ.get("RELAYMESH_NO_TEMPLATE") != "1":
            _copy_store(_user_templates(users), n.datadir)
            users = ()
        if start:
            n.start()
            for u in users:
                n.add_user(u)
        return n

    yield make

    problems = []
    for n in nodes:
        try:
            n.stop()
        except NodeError as e:
            problems.append(str(e))
        reports = n.sanitizer_reports()
        if reports:
            problems.append("%s logged sanitizer reports:\n%s\n%s"
                            % (n.dir, "\n".join(reports[:20]), n.stderr()))
        bad = [c for c in n.exit_codes
               if c not in (0, "killed", "startfail")]
        if bad and not problems:
            problems.append("%s exit codes %r\n%s" % (n.dir, n.exit_codes,
                                                      n.stderr()))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def node(node_factory):
    """A default node with users alice@localhost and bob@localhost."""
    return node_factory()
