"""Latency probe for bench/smtp-ingest (Python 3 standard library only).

One extra SMTP client that runs beside the load generator: it sends a
5 KiB message, waits for the reply to the final dot, sleeps INTERVAL and
sends the next, until told to stop.  For every accepted message it records
the time from sending the "\\r\\n.\\r\\n" that ends DATA to reading the
complete 250 reply: the acknowledgement latency a sender sees, which for a
durable server includes its fsync (or group commit).

To keep the probe from adding much load, its pause after each message is
at least INTERVAL and at least what keeps its message rate near SHARE of the
load's (estimated as SESSIONS concurrent sessions whose transactions take
as long as the probe's own): pause >= t_txn * (1 / (SHARE * SESSIONS) - 1).
With SHARE 0.05 that is about 5% extra messages at 1 session and less at
more sessions.  MAX_RATE (messages/s, optional) caps it further: the probe
starts a message at most every 1/MAX_RATE seconds.

mode "new"   : a new TCP connection (EHLO .. QUIT) per message, like
               smtp-source without -d;
mode "reuse" : one connection, one transaction after another, like -d.

Run alone for a quick look:
    python3 bench/lib/smtpprobe.py 127.0.0.1 2525 user@localhost [new|reuse] [seconds]
"""
import os
import socket
import sys
import threading
import time

BODY_LEN = 5120


def make_body(length=BODY_LEN):
    """Payload of `length` bytes in 80-column CRLF lines, no leading dots."""
    line = b"X" * 78 + b"\r\n"
    out = bytearray()
    while len(out) + len(line) <= length:
        out += line
    rest = length - len(out)
    if rest >= 3:
        out += b"Y" * (rest - 2) + b"\r\n"
    elif rest:
        out += b"Y" * rest
    return bytes(out)


class SmtpError(Exception):
    pass


class _Conn:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def reply(self):
        """Read one (possibly multi-line) reply; return (code, text)."""
        code, lines = self.reply_lines()
        return code, b"\n".join(lines).decode("latin-1")

    def reply_lines(self):
        """Read one (possibly multi-line) reply; return (code, [lines])."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                data = self.sock.recv(65536)
                if not data:
                    raise SmtpError("connection closed by server")
                self.buf += data
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError:
            raise SmtpError("bad reply %r" % lines[-1][:80])
        return code, lines

    def cmd(self, line, want):
        self.sock.sendall(line)
        code, text = self.reply()
        if code // 100 != want:
            raise SmtpError("%s -> %s" % (line.strip().decode(), text[:120]))
        return code

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Probe(threading.Thread):
    def __init__(self, host, port, rcpt, mode="new", interval=0.01,
                 sender="probe@bench.client", helo="bench.client",
                 timeout=60.0, sessions=None, share=0.05, max_rate=None):
        super().__init__(daemon=True)
        self.host, self.port, self.rcpt = host, port, rcpt
        self.mode, self.interval = mode, interval
        # pause factor on the transaction time (0: fixed interval only)
        self.factor = max(0.0, 1.0 / (share * sessions) - 1) if sessions else 0.0
        self._txn = None           # EWMA of whole-transaction time
        self.cycle = 1.0 / max_rate if max_rate else 0.0
        self.sender, self.helo, self.timeout = sender, helo, timeout
        self.samples = []          # seconds, one per accepted message
        self.sent_ok = 0           # messages that got 250 to the dot
        self.errors = []           # text of failures (transactions lost)
        self._stop_ev = threading.Event()
        self._body = make_body()
        self._seq = 0

    def stop(self):
        self._stop_ev.set()

    def _open(self):
        c = _Conn(self.host, self.port, self.timeout)
        code, text = c.reply()
        if code != 220:
            c.close()
            raise SmtpError("greeting: " + text[:120])
        c.cmd(b"EHLO " + self.helo.encode() + b"\r\n", 2)
        return c

    def _transaction(self, c):
        self._seq += 1
        c.cmd(b"MAIL FROM:<" + self.sender.encode() + b">\r\n", 2)
        c.cmd(b"RCPT TO:<" + self.rcpt.encode() + b">\r\n", 2)
        c.cmd(b"DATA\r\n", 3)
        hdr = ("From: <%s>\r\nTo: <%s>\r\nSubject: latency probe %d\r\n"
               "Message-ID: <probe.%d.%d.%d@bench.client>\r\n\r\n"
               % (self.sender, self.rcpt, self._seq, os.getpid(),
                  id(self), self._seq)).encode()
        msg = hdr + self._body
        if msg.endswith(b"\r\n"):
            msg = msg[:-2]
        c.sock.sendall(msg)
        t0 = time.perf_counter()
        c.sock.sendall(b"\r\n.\r\n")
        code, text = c.reply()
        t1 = time.perf_counter()
        if code != 250:
            raise SmtpError("end of data -> " + text[:120])
        self.samples.append(t1 - t0)
        self.sent_ok += 1

    def run(self):
        c = None
        while not self._stop_ev.is_set():
            t_begin = time.perf_counter()
            try:
                if c is None:
                    c = self._open()
                self._transaction(c)
                if self.mode == "new":
                    try:
                        c.cmd(b"QUIT\r\n", 2)
                    except (OSError, SmtpError):
                        pass
                    c.close()
                    c = None
            except (OSError, SmtpError) as e:
                self.errors.append(str(e))
                if c is not None:
                    c.close()
                    c = None
                if len(self.errors) > 50:
                    break
                self._stop_ev.wait(0.1)
                continue
            t = time.perf_counter() - t_begin
            self._txn = t if self._txn is None else 0.7 * self._txn + 0.3 * t
            self._stop_ev.wait(max(self.interval, self._txn * self.factor,
                                   self.cycle - t))
        if c is not None:
            try:
                c.cmd(b"QUIT\r\n", 2)
            except (OSError, SmtpError):
                pass
            c.close()


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a list; None if empty."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


if __name__ == "__main__":
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    mode = sys.argv[4] if len(sys.argv) > 4 else "new"
    secs = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0
    p = Probe(host, port, rcpt, mode)
    p.start()
    time.sleep(secs)
    p.stop()
    p.join()
    ms = [s * 1000 for s in p.samples]
    print("accepted %d, errors %d, p50 %s ms, p99 %s ms"
          % (p.sent_ok, len(p.errors),
             percentile(ms, 50) and "%.2f" % percentile(ms, 50),
             percentile(ms, 99) and "%.2f" % percentile(ms, 99)))
    for e in p.errors[:5]:
        print("error:", e)
    sys.exit(1 if p.errors else 0)
