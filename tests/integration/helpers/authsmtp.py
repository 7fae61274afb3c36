"""SMTP AUTH (RFC 4954) and STARTTLS (RFC 3207) on top of helpers.smtp.Conn.

The node's certificate is self-signed: these helpers never verify it (what
is tested here is the SMTP behaviour around TLS, not the PKI).
"""
import base64
import email
import ssl
import time

from helpers.smtp import Conn, dot_stuff

PASSWORD = "s3cret-pw"  # the password conftest gives every user


def b64(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def plain_ir(user, password=PASSWORD, authzid=""):
    """The base64 PLAIN message (RFC 4616): authzid NUL authcid NUL passwd."""
    return b64("%s\0%s\0%s" % (authzid, user, password))


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def starttls(c, ehlo=True):
    """STARTTLS on an open Conn, then (by default) EHLO again. Returns the
    EHLO reply over TLS (or the 220 when ehlo=False)."""
    r = c.cmd("STARTTLS")
    assert r.code == 220, r
    assert c.buf == b"", "bytes after the STARTTLS reply: %r" % c.buf
    c.sock = tls_context().wrap_socket(c.sock)
    return c.ehlo() if ehlo else r


def smtps_conn(port, **kw):
    """A Conn on the implicit-TLS (RFC 8314) listener, greeting read."""
    c = Conn(port, greet=False, **kw)
    c.sock = tls_context().wrap_socket(c.sock)
    c.greeting = c.reply()
    return c


def ehlo_keywords(reply):
    """The EHLO keywords (upper case) of a 250 EHLO reply, greeting line
    left out: {"AUTH": "PLAIN LOGIN", "STARTTLS": "", ...}."""
    out = {}
    for ln in reply.lines[1:]:
        kw, _, rest = ln.partition(" ")
        out[kw.upper()] = rest
    return out


def auth_plain(c, user, password=PASSWORD, authzid="", timeout=None):
    """AUTH PLAIN with an initial response; returns the final Reply."""
    return c.cmd("AUTH PLAIN " + plain_ir(user, password, authzid),
                 timeout=timeout)


def login(c, user, password=PASSWORD):
    """AUTH PLAIN that must succeed."""
    r = auth_plain(c, user, password)
    assert (r.code, r.enh) == (235, "2.7.0"), r
    return r


def timed(fn, *args, **kw):
    """(result, seconds) of fn(*args, **kw)."""
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return r, time.monotonic() - t0


def submit(c, mail_from, rcpts, msg):
    """One transaction on an open (authenticated) Conn. Returns (mail
    reply, [rcpt replies], final reply or None)."""
    mr = c.cmd("MAIL FROM:<%s>" % mail_from)
    if mr.code != 250:
        return mr, [], None
    rr = [c.cmd("RCPT TO:<%s>" % r) for r in rcpts]
    if not any(r.code == 250 for r in rr):
        assert c.cmd("RSET").code == 250
        return mr, rr, None
    d = c.cmd("DATA")
    assert d.code == 354, d
    c.send(dot_stuff(msg))
    return mr, rr, c.reply()


def header_fields(raw):
    """The parsed header of a stored message (email.message.Message)."""
    return email.message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] +
                                    b"\r\n\r\n")


def unfold(field):
    """A header field as one line (RFC 5322 §2.2.3)."""
    if isinstance(field, bytes):
        field = field.decode("utf-8", "replace")
    return " ".join(field.replace("\r\n", "\n").replace("\n", " ").split())
