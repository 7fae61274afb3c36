"""The outbound SMTP client (node/smtp_client.c) through its driver
tests/tools/smtpc_send.c, against a scriptable aiosmtpd server
(helpers/smtpserver.py) and Postfix's smtp-sink."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import SANITIZER_RE, free_port
from helpers.smtpserver import SMTPServer

SMTPC = os.environ.get("SMTPC_BIN")
SMTP_SINK = "/usr/sbin/smtp-sink"

pytestmark = pytest.mark.skipif(not SMTPC, reason="SMTPC_BIN not set")

MSG = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: t\r\n\r\n"
       b"Hello.\r\n")


class Run:
    def __init__(self, proc_rc, out, err):
        self.rc = proc_rc
        self.out = out
        self.err = err
        self.lines = out.splitlines()

    def first(self, prefix):
        for line in self.lines:
            if line.startswith(prefix):
                return line
        return None

    def all(self, prefix):
        return [l for l in self.lines if l.startswith(prefix)]

    def results(self):
        return [dict(kv.split("=", 1) for kv in l.split()[2:])
                for l in self.all("result ")]

    def code(self, what, n=1, addr=None):
        """The reply code printed for `what` ("mail", "data", "rcpt")."""
        for l in self.all("%s %d " % (what, n)):
            parts = l.split()
            if what == "rcpt":
                if parts[2] == addr:
                    return int(parts[3])
            else:
                return int(parts[2])
        return None


def run(port, *args, msg=MSG, tmp_path=None, timeout=60, host="127.0.0.1",
        to=("b@example.test",), sender="a@example.test"):
    path = os.path.join(str(tmp_path), "msg.eml")
    with open(path, "wb") as f:
        f.write(msg)
    cmd = [SMTPC, "%s:%d" % (host, port), "--from", sender, "--file", path,
           "--debug"]
    for t in to:
        cmd += ["--to", t]
    cmd += list(args)
    p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    assert not SANITIZER_RE.search(p.stderr), err
    assert p.returncode in (0, 1), (p.returncode, out, err)
    return Run(p.returncode, out, err)


@pytest.fixture
def server():
    """server(**opts) -> a started SMTPServer, stopped at teardown."""
    started = []

    def make(**opts):
        s = SMTPServer(**opts).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


# ---- plain delivery --------------------------------------------------------

@pytest.fixture
def sink(tmp_path):
    """Postfix's smtp-sink dumping every message into tmp_path/dump."""
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.skip("smtp-sink not installed")
    # smtp-sink drops to "nobody" when run as root: a directory it can
    # reach (pytest's tmp_path sits below a 0700 directory)
    import pathlib
    import tempfile
    dump = pathlib.Path(tempfile.mkdtemp(prefix="smtpsink"))
    os.chmod(dump, 0o777)
    port = free_port()
    cmd = [SMTP_SINK]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]
    cmd += ["-d", str(dump) + "/%M.", "127.0.0.1:%d" % port, "10"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, dump
    p.send_signal(signal.SIGTERM)
    p.wait(10)
    shutil.rmtree(dump, ignore_errors=True)


def sink_messages(dump, n, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = sorted(dump.iterdir())
        if len(files) >= n:
            time.sleep(0.1)
            return [f.read_bytes() for f in sorted(dump.iterdir())]
        time.sleep(0.05)
    return [f.read_bytes() for f in sorted(dump.iterdir())]


def test_plain_delivery_smtp_sink(sink, tmp_path):
    port, dump = sink
    msg = MSG + b".leading dot\r\n..two dots\r\n.\r\nend\r\n"
    r = run(port, msg=msg, tmp_path=tmp_path,
            to=("b@example.test", "c@example.test"))
    assert r.rc == 0, r.out + r.err
    assert r.results() == [{"status": "ok", "accepted": "2", "dsn": "1"}]
    got = sink_messages(dump, 1)
    assert len(got) == 1
    assert b"X-Mail-Args: <a@example.test>" in got[0]
    assert b"X-Rcpt-Args: <b@example.test>" in got[0]
    assert b"X-Rcpt-Args: <c@example.test>" in got[0]
    # the dump has LF line ends and a blank line after the message
    assert got[0].endswith(msg.replace(b"\r\n", b"\n") + b"\n")
    assert "event=smtpc.connect" in r.err


def test_connection_refused(tmp_path):
    r = run(free_port(), tmp_path=tmp_path)
    assert r.rc == 1
    assert r.first("connect ").startswith("connect status=ECONNREFUSED")


# ---- recipients, pipelining, dot-stuffing ------------------------------------

@pytest.mark.parametrize("pipelining", [True, False])
def test_one_recipient_refused(server, tmp_path, pipelining):
    s = server(pipelining=pipelining,
               rcpt_codes={"bad@example.test": "550 5.1.1 no such user"})
    r = run(s.port, tmp_path=tmp_path,
            to=("b@example.test", "bad@example.test", "c@example.test"))
    assert r.rc == 0, r.out + r.err
    assert r.code("rcpt", addr="b@example.test") == 250
    assert r.code("rcpt", addr="bad@example.test") == 550
    assert "rcpt 1 bad@example.test 550 5.1.1 no such user" in r.lines
    assert r.code("data") == 250
    assert r.results()[0]["accepted"] == "2"
    assert len(s.messages) == 1
    assert s.messages[0].rcpt_tos == ["b@example.test", "c@example.test"]
    assert ("pipelined=%d" % int(pipelining)) in r.err


def test_pipelining_one_write(server, tmp_path):
    s = server(pipelining=True)
    r = run(s.port, tmp_path=tmp_path, to=("b@example.test",))
    assert r.rc == 0
    assert "pipelined=1" in r.err
    assert [c.split()[0] for c in s.conn_commands()] == \
        ["EHLO", "MAIL", "RCPT", "DATA"]


@pytest.mark.parametrize("tail", [b"end\r\n", b"no final newline"])
def test_dot_stuffing(server, tmp_path, tail):
    s = server()
    body = (b"Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\n"
            b"x.\r\n. space\r\n" + tail)
    r = run(s.port, msg=body, tmp_path=tmp_path)
    assert r.rc == 0, r.out + r.err
    got = s.messages[0].content
    if not tail.endswith(b"\r\n"):
        body += b"\r\n"
    assert got == body


def test_large_body(server, tmp_path):
    s = server()
    line = b"." + b"x" * 997 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * 3000  # 3 MB, many 64 KiB pieces
    r = run(s.port, msg=body, tmp_path=tmp_path)
    assert r.rc == 0, r.out + r.err
    assert s.messages[0].content == body


# ---- STARTTLS ----------------------------------------------------------------

def test_starttls_opportunistic(server, tmp_path):
    s = server(starttls=True)
    r = run(s.port, "--tls", "opportunistic", "--server-name", "sink.test",
            tmp_path=tmp_path)
    assert r.rc == 0, r.out + r.err
    assert re.search(r"^ready tls=TLSv1\.[23] ", r.out, re.M), r.out
    assert "verified=0" in r.first("ready")  # self-signed
    assert s.messages[0].tls
    cmds = [c.split()[0] for c in s.conn_commands()]
    assert cmds[:3] == ["EHLO", "STARTTLS", "EHLO"]
    assert "event=smtpc.tls" in r.err and "verified=0" in r.err


def test_starttls_opportunistic_not_offered(server, tmp_path):
    s = server(starttls=False)
    r = run(s.port, "--tls", "opportunistic", tmp_path=tmp_path)
    assert r.rc == 0
    assert r.first("ready").startswith("ready tls=none")
    assert not s.messages[0].tls


def test_starttls_required_offered(server, tmp_path):
    s = server(starttls=True)
    r = run(s.port, "--tls", "required", "--count", "2", tmp_path=tmp_path)
    assert r.rc == 0, r.out + r.err
    assert len(s.messages) == 2 and all(m.tls for m in s.messages)


def test_starttls_required_not_offered(server, tmp_path):
    s = server(starttls=False)
    r = run(s.port, "--tls", "required", tmp_path=tmp_path)
    assert r.rc == 1
    assert r.first("connect ").startswith("connect status=TLS")
    assert s.messages == []


def test_auth_needs_tls(server, tmp_path):
    s = server(starttls=False)
    r = run(s.port, "--auth", "user:secret", tmp_path=tmp_path)
    assert r.rc == 1
    assert r.first("connect ").startswith("connect status=TLS")
    assert "secret" not in r.err
    assert not any(c.startswith("AUTH") for _, c in s.commands)


def test_auth_plain_over_tls(server, tmp_path):
    s = server(starttls=True, auth_users={"user": "s3cret pw"})
    r = run(s.port, "--tls", "opportunistic", "--auth", "user:s3cret pw",
            tmp_path=tmp_path)
    assert r.rc == 0, r.out + r.err
    assert s.logins == ["user"]
    assert "s3cret" not in r.err

    r = run(s.port, "--tls", "required", "--auth", "user:wrong",
            tmp_path=tmp_path)
    assert r.rc == 1
    assert r.first("connect ").startswith("connect status=REPLY code=535")


# ---- extensions ----------------------------------------------------------------

def test_size_param_and_too_big(server, tmp_path):
    s = server(size=100000)
    r = run(s.port, tmp_path=tmp_path)
    assert r.rc == 0
    assert "SIZE=%d" % len(MSG) in s.messages[0].mail_options
    assert "size_max=100000" in r.first("ready")

    s2 = server(size=100)
    r = run(s2.port, msg=MSG + b"x" * 200 + b"\r\n", tmp_path=tmp_path)
    assert r.rc == 1
    assert r.first("send 1 ").startswith("send 1 status=TOOBIG usable=1")
    assert s2.messages == []
    assert not any(c.startswith("MAIL") for _, c in s2.commands)


def test_no_size_offered(server, tmp_path):
    s = server(size=0)
    r = run(s.port, tmp_path=tmp_path)
    assert r.rc == 0
    assert not any(o.startswith("SIZE=") for o in s.messages[0].mail_options)


def test_eightbit(server, tmp_path):
    s = server()
    r = run(s.port, msg=b"Subject: 8\r\n\r\ncaf\xc3\xa9\r\n", tmp_path=tmp_path)
    assert r.rc == 0
    assert "BODY=8BITMIME" in s.messages[0].mail_options


def test_smtputf8(server, tmp_path):
    s = server(smtputf8=True)
    r = run(s.port, tmp_path=tmp_path, to=("j\u00f6rg@example.test",))
    assert r.rc == 0, r.out + r.err
    assert "SMTPUTF8" in s.messages[0].mail_options
    assert s.messages[0].rcpt_tos == ["j\u00f6rg@example.test"]

    s2 = server(smtputf8=False)
    r = run(s2.port, tmp_path=tmp_path, to=("j\u00f6rg@example.test",))
    assert r.rc == 1
    assert r.first("send 1 ").startswith("send 1 status=NOUTF8")
    assert not any(c.startswith("MAIL") for _, c in s2.commands)

    # an ASCII message needs no SMTPUTF8 and goes without it
    r = run(s2.port, tmp_path=tmp_path)
    assert r.rc == 0
    assert "SMTPUTF8" not in s2.messages[0].mail_options


DSN_ARGS = ("--notify", "SUCCESS,FAILURE", "--orcpt", "rfc822;orig@example.test",
            "--ret", "HDRS", "--envid", "env123")


def test_dsn_params_when_offered(server, tmp_path):
    s = server(dsn=True)
    r = run(s.port, *DSN_ARGS, tmp_path=tmp_path)
    assert r.rc == 0, r.out + r.err
    assert r.results()[0]["dsn"] == "1"
    m = s.messages[0]
    assert "RET=HDRS" in m.mail_options
    assert "ENVID=ENV123" in m.mail_options  # aiosmtpd upper-cases
    assert "NOTIFY=SUCCESS,FAILURE" in m.rcpt_options[0]
    assert "ORCPT=RFC822;ORIG@EXAMPLE.TEST" in m.rcpt_options[0]

    s = server(dsn=True)
    r = run(s.port, "--notify", "NEVER", tmp_path=tmp_path)
    assert r.rc == 0
    assert s.messages[0].rcpt_options[0] == ["NOTIFY=NEVER"]


def test_dsn_params_not_offered(server, tmp_path):
    s = server(dsn=False)
    r = run(s.port, *DSN_ARGS, tmp_path=tmp_path)
    assert r.rc == 0, r.out + r.err
    assert r.results()[0]["dsn"] == "0"
    m = s.messages[0]
    assert not any(o.split("=")[0] in ("RET", "ENVID") for o in m.mail_options)
    assert m.rcpt_options[0] == []


# ---- refusals ------------------------------------------------------------------

@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("step,code", [
    ("mail", "451 4.3.0 try later"), ("mail", "550 5.7.1 go away"),
    ("rcpt", "450 4.2.0 busy"), ("rcpt", "550 5.1.1 unknown"),
    ("data", "451 4.3.0 no data now"), ("data", "554 5.6.0 no data"),
    ("dot", "452 4.3.1 full"), ("dot", "550 5.7.1 spam")])
def test_refusals(server, tmp_path, pipelining, step, code):
    opts = {"pipelining": pipelining}
    if step == "rcpt":
        opts["rcpt_codes"] = {"b@example.test": code}
    else:
        opts[step + "_code"] = code
    s = server(**opts)
    r = run(s.port, "--count", "2", tmp_path=tmp_path)
    assert r.rc == 1
    res = r.results()
    assert len(res) == 2, r.out + r.err  # the connection stays usable
    assert all(x["status"] == "ok" for x in res)
    num = int(code.split()[0])
    enh = code.split()[1]
    if step == "mail":
        assert r.code("mail") == num
        assert "mail 1 %s" % code in r.lines
        assert res[0]["accepted"] == "0"
    elif step == "rcpt":
        assert r.code("rcpt", addr="b@example.test") == num
        assert res[0]["accepted"] == "0"
    else:
        assert r.code("data") == num
        assert r.first("data 1 ").split()[3] == enh
    if step in ("mail", "rcpt"):
        # lock-step never sends DATA; pipelined DATA got a 503
        assert r.code("data") in ((503,) if pipelining else (0,))
    cmds = [c.split()[0] for c in s.conn_commands()]
    # the second transaction starts with RSET when the first broke off
    if step in ("mail", "rcpt", "data"):
        assert "RSET" in cmds
    else:
        assert "RSET" not in cmds
    assert s.connections == 1


def raw_server(greeting):
    """A one-shot server that sends `greeting` bytes, then reads until the
    client goes. Returns (port, thread, listening socket)."""
    import threading
    port = free_port()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1)

    def serve():
        c, _ = ls.accept()
        c.settimeout(10)
        try:
            c.sendall(greeting)
            while c.recv(4096):
                pass
        except OSError:
            pass
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return port, t, ls


def test_greeting_refused(tmp_path):
    port, t, ls = raw_server(b"554 5.3.2 no service\r\n")
    r = run(port, tmp_path=tmp_path)
    t.join(5)
    ls.close()
    assert r.rc == 1
    assert r.first("connect ") == 'connect status=REPLY code=554 text="no service"'


@pytest.mark.parametrize("greeting", [
    b"220 " + b"x" * 5000 + b"\r\n",                   # line > 4 KiB
    b"".join(b"220-line\r\n" for _ in range(150)) + b"220 end\r\n",
    b"220-a\r\n250 b\r\n",                             # code changes
    b"hello\r\n"])
def test_bad_replies(tmp_path, greeting):
    port, t, ls = raw_server(greeting)
    r = run(port, tmp_path=tmp_path)
    t.join(5)
    ls.close()
    assert r.rc == 1
    assert r.first("connect ").startswith("connect status=PROTO"), r.out


def test_helo_fallback(server, tmp_path):
    s = server(ehlo_code="502 5.5.2 Error: command not recognized")
    r = run(s.port, tmp_path=tmp_path)
    assert r.rc == 0, r.out + r.err
    assert "ext=0x0 " in r.first("ready")
    cmds = [c.split()[0] for c in s.conn_commands()]
    assert cmds[:2] == ["EHLO", "HELO"]
    assert s.messages[0].mail_options == []


# ---- broken connections --------------------------------------------------------

@pytest.mark.parametrize("step", ["mail", "rcpt", "data"])
def test_server_closes(server, tmp_path, step):
    s = server(close_in=step)
    r = run(s.port, msg=MSG * 2000, tmp_path=tmp_path)
    assert r.rc == 1
    res = r.results()
    assert res[0]["status"] in ("CLOSED", "REPLY", "ECONNRESET", "EPIPE"), \
        r.out
    if step == "data":
        assert res[0]["status"] in ("CLOSED", "ECONNRESET", "EPIPE")
    assert s.messages == []


@pytest.mark.parametrize("step,expect", [
    ("greeting", "connect"), ("ehlo", "connect"), ("mail", "result"),
    ("data", "result"), ("dot", "result")])
def test_stall_timeout(server, tmp_path, step, expect):
    s = server(stall_in=step)
    t0 = time.time()
    # 300 s * 0.004 -> 2 s (greeting, MAIL); 120 s -> 1 s (DATA); 600 -> 3
    r = run(s.port, "--timeout-scale", "0.004", tmp_path=tmp_path)
    took = time.time() - t0
    assert r.rc == 1
    if expect == "connect":
        assert r.first("connect ").startswith("connect status=TIMEOUT")
    else:
        assert r.results()[0]["status"] == "TIMEOUT", r.out
    assert took < 15
    assert "event=smtpc.timeout" in r.err


# ---- reuse -----------------------------------------------------------------------

def test_connection_reuse(server, tmp_path):
    s = server()
    r = run(s.port, "--count", "3", tmp_path=tmp_path,
            to=("b@example.test", "c@example.test"))
    assert r.rc == 0, r.out + r.err
    assert [x["status"] for x in r.results()] == ["ok"] * 3
    assert len(s.messages) == 3
    assert len({m.conn for m in s.messages}) == 1
    assert s.connections == 1
    assert "RSET" not in [c.split()[0] for c in s.conn_commands()]


def test_connection_reuse_smtp_sink(sink, tmp_path):
    port, dump = sink
    r = run(port, "--count", "3", tmp_path=tmp_path)
    assert r.rc == 0, r.out + r.err
    assert len(sink_messages(dump, 3)) == 3
    assert r.err.count("event=smtpc.connect") == 1
