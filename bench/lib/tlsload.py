#!/usr/bin/python3
"""TLS + AUTH load client for bench/smtp-ingest (Python 3 standard library).

smtp-source cannot do STARTTLS or AUTH, so the TLS case uses this client.
Each session, on a NEW TCP connection per message:

    <- 220 greeting
    EHLO            (STARTTLS must be offered)
    STARTTLS        -> 220, then a full TLS handshake (no session resumption)
    EHLO            (over TLS; AUTH PLAIN must be offered)
    AUTH PLAIN <base64 \\0user\\0password>        -> 235
    MAIL FROM / RCPT TO / DATA -> 354, a 5 KiB message, "\\r\\n.\\r\\n" -> 250
    QUIT            -> 221

one command at a time (no pipelining), like smtp-source without -P.  The
latency of a message is the time from sending "\\r\\n.\\r\\n" to reading the
complete reply to it, recorded for EVERY message (no probe needed); the
session time is from connect() to the reply to QUIT.

To keep a Python client from being the bottleneck it runs PROCS worker
processes (default: one per CPU), each with SESSIONS/PROCS threads; blocking
ssl sockets release the GIL during handshakes and I/O.  The sessions take
messages from one shared counter, so exactly COUNT messages are attempted.

The server certificate is verified against --cafile with the host name
--servername (default: no verification only with --no-verify).

Output: one JSON object on stdout:
  {"ok": messages that got 250 to the dot, "attempted", "errors": [..],
   "secs": wall time from the start barrier to the last session's end,
   "lat": [seconds per message], "sess": [seconds per session],
   "cpu": client user+sys CPU seconds,
   "tls": {"TLSv1.3 TLS_AES_128_GCM_SHA256": sessions, ...},
   "first_error": ...}
Exit status 0 if all COUNT messages got their 250, 1 otherwise.

    python3 bench/lib/tlsload.py 127.0.0.1 2525 --user user@localhost \\
        --password-env PW --cafile cert.pem --servername bench.test \\
        -s 50 -m 1000 --rcpt user@localhost
"""
import argparse
import base64
import json
import multiprocessing as mp
import os
import queue
import resource
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smtpprobe import SmtpError, _Conn, make_body  # noqa: E402

MAX_ERRORS = 20        # per process, kept as text


class Session(_Conn):
    """smtpprobe's connection; replies as lists of lines, exact codes."""

    def reply(self):
        return self.reply_lines()

    def cmd(self, line, want, what=None):
        self.sock.sendall(line)
        code, lines = self.reply()
        if code != want:
            raise SmtpError("%s -> %s" % (what or line.strip().decode(),
                                          b" | ".join(lines)[:160].decode("latin-1")))
        return lines


def ehlo_has(lines, keyword, arg=None):
    for ln in lines[1:]:
        words = ln[4:].decode("latin-1").upper().split()
        if words and words[0] == keyword and (arg is None or arg in words[1:]):
            return True
    return False


def one_message(o, ctx, auth_line, msg):
    """One session: returns (latency seconds, session seconds,
    "version cipher")."""
    t_conn = time.perf_counter()
    s = Session(o.host, o.port, o.timeout)
    try:
        code, lines = s.reply()
        if code != 220:
            raise SmtpError("greeting: %r" % lines[-1][:100])
        ehlo = b"EHLO " + o.helo.encode() + b"\r\n"
        lines = s.cmd(ehlo, 250)
        if not ehlo_has(lines, "STARTTLS"):
            raise SmtpError("STARTTLS not offered in EHLO")
        s.cmd(b"STARTTLS\r\n", 220)
        if s.buf:
            raise SmtpError("data after the 220 to STARTTLS: %r" % s.buf[:60])
        s.sock = ctx.wrap_socket(s.sock, server_hostname=o.servername)
        tls = "%s %s" % (s.sock.version(), s.sock.cipher()[0])
        lines = s.cmd(ehlo, 250, "EHLO (TLS)")
        if auth_line is not None:
            if not ehlo_has(lines, "AUTH", "PLAIN"):
                raise SmtpError("AUTH PLAIN not offered after STARTTLS")
            s.cmd(auth_line, 235, "AUTH PLAIN")
        s.cmd(b"MAIL FROM:<" + o.mail_from.encode() + b">\r\n", 250)
        s.cmd(b"RCPT TO:<" + o.rcpt.encode() + b">\r\n", 250)
        s.cmd(b"DATA\r\n", 354)
        s.sock.sendall(msg)
        t0 = time.perf_counter()
        s.sock.sendall(b"\r\n.\r\n")
        code, lines = s.reply()
        t1 = time.perf_counter()
        if code != 250:
            raise SmtpError("end of data -> %r" % b" | ".join(lines)[:160])
        try:
            s.cmd(b"QUIT\r\n", 221)
        except (OSError, SmtpError):
            pass        # the message is accepted; QUIT trouble is not counted
        return t1 - t0, time.perf_counter() - t_conn, tls
    finally:
        s.close()


def worker(o, nthreads, counter, stop, start_ev, ready_q, out_q, wid):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if o.no_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=o.cafile)
    pw = os.environ.get(o.password_env, "") if o.password_env else o.password
    auth_line = None if o.no_auth else b"AUTH PLAIN " + base64.b64encode(
        b"\0" + o.user.encode() + b"\0" + pw.encode()) + b"\r\n"
    body = make_body(o.size)
    lat, sess, tls, errors = [], [], {}, []
    nerr = [0]
    lock = threading.Lock()

    def take():
        with counter.get_lock():
            if counter.value >= o.count or stop.value:
                return None
            counter.value += 1
            return counter.value

    def run():
        while True:
            seq = take()
            if seq is None:
                return
            hdr = ("From: <%s>\r\nTo: <%s>\r\nSubject: tls bench %d\r\n"
                   "Message-ID: <tlsload.%d.%d@%s>\r\n\r\n"
                   % (o.mail_from, o.rcpt, seq, os.getpid(), seq, o.helo)).encode()
            msg = hdr + body
            if msg.endswith(b"\r\n"):
                msg = msg[:-2]
            try:
                dt, st, t = one_message(o, ctx, auth_line, msg)
            except Exception as e:     # OSError (ssl too), SmtpError, ...
                with lock:
                    nerr[0] += 1
                    if len(errors) < MAX_ERRORS:
                        errors.append("%s: %s" % (type(e).__name__, e))
                if o.stop_on_error:
                    stop.value = 1
                continue
            with lock:
                lat.append(dt)
                sess.append(st)
                tls[t] = tls.get(t, 0) + 1

    ready_q.put(wid)
    start_ev.wait()
    ths = [threading.Thread(target=run, daemon=True) for _ in range(nthreads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out_q.put({"lat": lat, "sess": sess, "tls": tls, "errors": errors,
               "nerr": nerr[0], "cpu": ru.ru_utime + ru.ru_stime})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("-s", "--sessions", type=int, default=50)
    ap.add_argument("-m", "--count", type=int, default=100)
    ap.add_argument("--procs", type=int, default=0,
                    help="worker processes (default: CPUs, at most sessions)")
    ap.add_argument("--size", type=int, default=5120, help="body bytes")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", default="")
    ap.add_argument("--password-env", metavar="VAR",
                    help="read the password from this environment variable")
    ap.add_argument("--mail-from", help="default: --user")
    ap.add_argument("--rcpt", required=True)
    ap.add_argument("--helo", default="bench.client")
    ap.add_argument("--cafile")
    ap.add_argument("--servername", default="bench.test")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--no-auth", action="store_true",
                    help="skip AUTH (STARTTLS only; --user is then only the "
                         "default MAIL FROM)")
    ap.add_argument("--stop-on-error", action="store_true",
                    help="attempt no new message after the first failure")
    o = ap.parse_args()
    o.mail_from = o.mail_from or o.user
    if not o.no_verify and not o.cafile:
        ap.error("--cafile is required unless --no-verify")
    procs = o.procs or os.cpu_count() or 1
    procs = max(1, min(procs, o.sessions))
    per = [o.sessions // procs + (1 if i < o.sessions % procs else 0)
           for i in range(procs)]
    ctxm = mp.get_context("fork")
    counter = ctxm.Value("q", 0)      # messages started
    stop = ctxm.Value("i", 0)         # --stop-on-error tripped
    start_ev = ctxm.Event()
    ready_q, out_q = ctxm.Queue(), ctxm.Queue()
    ps = [ctxm.Process(target=worker, args=(o, n, counter, stop, start_ev,
                                             ready_q, out_q, i), daemon=True)
          for i, n in enumerate(per)]
    for p in ps:
        p.start()
    for _ in ps:
        ready_q.get(timeout=60)
    t0 = time.monotonic()
    start_ev.set()
    # Collect before join (queue feeder threads); a worker that died
    # without reporting must not hang us.
    results = []
    while len(results) < len(ps):
        try:
            results.append(out_q.get(timeout=1.0))
        except queue.Empty:
            dead = [p for p in ps if p.exitcode not in (None, 0)]
            if dead:
                json.dump({"ok": 0, "attempted": counter.value, "nerr": 1,
                           "errors": ["worker process exited with status %s"
                                      % dead[0].exitcode], "lat": [],
                           "sess": []}, sys.stdout)
                sys.stdout.write("\n")
                for p in ps:
                    p.terminate()
                return 1
    t1 = time.monotonic()
    for p in ps:
        p.join()
    lat, sess, tls, errors, nerr, cpu = [], [], {}, [], 0, 0.0
    for r in results:
        lat += r["lat"]
        sess += r["sess"]
        for k, v in r["tls"].items():
            tls[k] = tls.get(k, 0) + v
        errors += r["errors"]
        nerr += r["nerr"]
        cpu += r["cpu"]
    out = {"ok": len(lat), "attempted": counter.value,
           "nerr": nerr, "errors": errors[:MAX_ERRORS], "secs": t1 - t0,
           "cpu": cpu, "procs": procs, "sessions": o.sessions, "tls": tls,
           "body_bytes": len(make_body(o.size)), "lat": lat, "sess": sess}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0 if nerr == 0 and len(lat) == o.count else 1


if __name__ == "__main__":
    sys.exit(main())
