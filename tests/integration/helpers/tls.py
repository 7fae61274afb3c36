"""TLS helpers for the integration tests: client contexts, STARTTLS on a
raw helpers.smtp.Conn, implicit-TLS connections, certificates made with
the openssl command line tool, and the certificate a listener presents."""
import hashlib
import select
import socket
import ssl
import subprocess
import time

from helpers.smtp import Conn


def client_ctx(cafile=None, maximum=None, minimum=None):
    """A client context. Without `cafile` nothing is verified; with it the
    peer must present a certificate that chains to `cafile` and matches
    the server_hostname given when wrapping."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        ctx.maximum_version = maximum
    if minimum is not None:
        ctx.minimum_version = minimum
    return ctx


def wrap(conn, ctx=None, server_hostname=None, **kw):
    """Replace the plaintext socket of a Conn by a TLS one (handshake
    done). Bytes the server sent before the handshake would be a protocol
    violation (RFC 3207 §4.2 response injection): refuse them."""
    assert conn.buf == b"", "plaintext after 220: %r" % conn.buf
    ctx = ctx or client_ctx()
    conn.sock.settimeout(conn.timeout)
    conn.sock = ctx.wrap_socket(conn.sock, server_hostname=server_hostname,
                                **kw)
    return conn


def starttls(conn, ctx=None, server_hostname=None, **kw):
    """STARTTLS on an open Conn: expects 220, then handshakes."""
    r = conn.cmd("STARTTLS")
    assert r.code == 220, r
    return wrap(conn, ctx, server_hostname, **kw)


def tls_connect(port, ctx=None, server_hostname=None, host="127.0.0.1",
                source=None, timeout=15.0, **kw):
    """An implicit TLS (RFC 8314) Conn; its greeting read over TLS."""
    c = Conn(port, host=host, source=source, timeout=timeout, greet=False)
    try:
        wrap(c, ctx, server_hostname, **kw)
        c.greeting = c.reply()
    except BaseException:
        c.close()
        raise
    return c


def peer_cert_der(port, starttls_smtp=True, cafile=None, server_hostname=None,
                  timeout=10.0):
    """DER of the certificate a listener presents to a new connection."""
    if starttls_smtp:
        with Conn(port, timeout=timeout) as c:
            c.ehlo()
            starttls(c, client_ctx(cafile), server_hostname)
            der = c.sock.getpeercert(binary_form=True)
            c.cmd("QUIT")
            return der
    with tls_connect(port, client_ctx(cafile), server_hostname,
                     timeout=timeout) as c:
        der = c.sock.getpeercert(binary_form=True)
        c.cmd("QUIT")
        return der


def pem_to_der(pem):
    if isinstance(pem, bytes):
        pem = pem.decode("ascii")
    return ssl.PEM_cert_to_DER_cert(pem)


def file_der(path):
    with open(path, "rb") as f:
        return pem_to_der(f.read())


def sha256_colon(der):
    """The sha256 fingerprint as relaymesh prints it: AA:BB:..."""
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


def make_cert(cert_path, key_path, cn, days=2, san=None, key="ec"):
    """A self-signed certificate and its key written by `openssl req`.
    key: "ec" (P-256) or "rsa" (2048 bits)."""
    cmd = ["openssl", "req", "-x509", "-nodes", "-subj", "/CN=" + cn,
           "-days", str(days), "-keyout", str(key_path), "-out",
           str(cert_path)]
    if key == "ec":
        cmd += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    else:
        cmd += ["-newkey", "rsa:2048"]
    cmd += ["-addext", "subjectAltName=DNS:" + (san or cn)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=30)


def cert_text(path):
    """`openssl x509 -text` of a PEM file."""
    return subprocess.run(["openssl", "x509", "-noout", "-text", "-in",
                           str(path)], check=True, stdout=subprocess.PIPE,
                          timeout=30).stdout.decode("utf-8", "replace")


def pump(sock, out, done, timeout=30.0, hold_reads=0.0):
    """Write `out` and read until done(bytes read so far) is true, both at
    once on one non-blocking (TLS) socket, so that neither side stalls on
    a full buffer. For the first `hold_reads` seconds nothing is read (a
    client that writes a whole batch before it looks at replies).
    Returns the bytes read."""
    sock.setblocking(False)
    got = b""
    sent = 0
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        while not done(got):
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError("pump: no end after %.0f s; %d of %d "
                                   "bytes sent; got %d bytes ending %r"
                                   % (timeout, sent, len(out), len(got),
                                      got[-200:]))
            reading = now - t0 >= hold_reads
            wr = [sock] if sent < len(out) else []
            # an SSLSocket may hold decrypted bytes select() cannot see
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
            if not (reading and pending):
                select.select([sock] if reading else [], wr, [], 0.05)
            if sent < len(out):
                try:
                    sent += sock.send(out[sent:sent + 65536])
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError,
                        BlockingIOError):
                    pass
            if not reading:
                continue
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("pump: closed by peer; got %d "
                                          "bytes ending %r"
                                          % (len(got), got[-200:]))
                got += chunk
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError,
                    BlockingIOError, socket.timeout):
                pass
    finally:
        sock.setblocking(True)
    return got
