"""A raw SMTP client for tests: exact bytes out, parsed replies in.

smtplib hides too much (it dot-stuffs, rewrites line endings, retries EHLO);
the attacks in this suite need to put exact bytes on the wire and count
every reply line the server sends back.
"""
import re
import socket
import time

ENH_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


class SMTPClosed(Exception):
    """The server closed the connection while a reply was expected."""


class Reply:
    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines  # text after "NNN-" / "NNN " of each line
        self.raw = raw

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enh(self):
        """Enhanced status code of the first line (RFC 2034), or None."""
        m = ENH_RE.match(self.lines[0]) if self.lines else None
        return m.group(0).strip() if m else None

    def all_enh(self):
        out = []
        for ln in self.lines:
            m = ENH_RE.match(ln)
            out.append(m.group(0).strip() if m else None)
        return out

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.lines)


class Conn:
    """One SMTP connection with an explicit reply reader."""

    def __init__(self, port, host="127.0.0.1", source=None, timeout=15.0,
                 greet=True):
        self.timeout = timeout
        src = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=src)
        self.buf = b""
        self.greeting = self.reply() if greet else None

    # -- low level ---------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self, timeout=None):
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SMTPClosed("connection closed by server; pending %r"
                             % self.buf)
        self.buf += chunk

    def readline(self, timeout=None):
        while b"\r\n" not in self.buf:
            self._fill(timeout)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self, timeout=None):
        lines = []
        raw = []
        code = None
        while True:
            ln = self.readline(timeout)
            raw.append(ln)
            s = ln.decode("utf-8", "replace")
            if len(s) < 3 or not s[:3].isdigit() or (len(s) > 3 and
                                                     s[3] not in " -"):
                raise AssertionError("malformed reply line %r" % ln)
            c = int(s[:3])
            if code is None:
                code = c
            elif c != code:
                raise AssertionError("reply code changed inside a multiline "
                                     "reply: %r" % raw)
            lines.append(s[4:])
            if len(s) == 3 or s[3] == " ":
                return Reply(code, lines, raw)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply(timeout)

    def ehlo(self, name="client.test.example"):
        r = self.cmd("EHLO " + name)
        assert r.code == 250, r
        return r

    def pending(self, wait=0.3):
        """Bytes the server sent that nobody asked for (after `wait` s)."""
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                self._fill(left)
            except socket.timeout:
                break
            except (SMTPClosed, OSError):
                break
        out, self.buf = self.buf, b""
        return out

    def wait_closed(self, timeout=10.0):
        """True when the server closes the connection within `timeout`.
        Any bytes received meanwhile are kept in self.buf."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self._fill(max(0.05, end - time.monotonic()))
            except SMTPClosed:
                return True
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- message helpers ---------------------------------------------------
_seq = [0]


def unique_id(tag="t"):
    _seq[0] += 1
    return "%s.%d.%d.%d@client.test.example" % (tag, time.time_ns(),
                                                _seq[0], id(_seq))


def make_message(msgid=None, subject="test", body=b"Hello.\r\n",
                 mail_from="sender@client.test.example",
                 to="alice@localhost", extra_headers=b""):
    """An RFC 5322 message with CRLF line ends. Returns (bytes, msgid)."""
    if msgid is None:
        msgid = unique_id()
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(subject, str):
        subject = subject.encode("utf-8")
    hdr = (b"From: <" + mail_from.encode("utf-8") + b">\r\n"
           b"To: <" + to.encode("utf-8") + b">\r\n"
           b"Subject: " + subject + b"\r\n"
           b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
           b"Message-ID: <" + msgid.encode("utf-8") + b">\r\n" +
           extra_headers + b"\r\n")
    return hdr + body, msgid


def dot_stuff(msg):
    """RFC 5321 §4.5.2 transparency, plus the end-of-data marker.
    `msg` must end with CRLF."""
    assert msg.endswith(b"\r\n")
    lines = msg.split(b"\r\n")[:-1]
    out = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n"
                   for ln in lines)
    return out + b".\r\n"


TRACE = {b"return-path": "Return-Path", b"delivered-to": "Delivered-To",
         b"received": "Received"}


def split_trace(raw):
    """Split the header fields the node adds at delivery from the message.

    Returns (dict name -> list of field bytes, rest bytes). Only fields at
    the very top whose names are Return-Path, Delivered-To or Received are
    taken, and only the first of each kind, so that Received fields the
    client sent itself stay in the rest."""
    added = {}
    pos = 0
    while True:
        end = raw.find(b"\r\n", pos)
        if end < 0:
            break
        # unfold continuation lines
        fend = end
        while raw[fend + 2:fend + 3] in (b" ", b"\t"):
            nxt = raw.find(b"\r\n", fend + 2)
            if nxt < 0:
                break
            fend = nxt
        field = raw[pos:fend]
        name = field.split(b":", 1)[0].strip().lower()
        if name not in TRACE or TRACE[name] in added:
            break
        added[TRACE[name]] = [field]
        pos = fend + 2
    return added, raw[pos:]


def send_mail(port, mail_from, rcpts, msg, ehlo=True, mail_params="",
              source=None, conn=None):
    """Send one message with DATA. Returns (final Reply or None, [rcpt
    replies], mail Reply). Raises on a protocol surprise."""
    own = conn is None
    c = conn or Conn(port, source=source)
    try:
        if own and ehlo:
            c.ehlo()
        elif own:
            assert c.cmd("HELO client.test.example").code == 250
        mp = (" " + mail_params) if mail_params else ""
        mr = c.cmd("MAIL FROM:<%s>%s" % (mail_from, mp))
        if mr.code != 250:
            return None, [], mr
        rr = [c.cmd("RCPT TO:<%s>" % r) for r in rcpts]
        if not any(r.code == 250 for r in rr):
            c.cmd("RSET")
            return None, rr, mr
        d = c.cmd("DATA")
        assert d.code == 354, d
        c.send(dot_stuff(msg))
        final = c.reply()
        return final, rr, mr
    finally:
        if own:
            try:
                c.cmd("QUIT", timeout=5)
            except Exception:
                pass
            c.close()
