#!/usr/bin/python3
"""Open N idle SMTP connections and hold them (bench/smtp-ingest helper).

    idle_conns.py HOST PORT N [--timeout SECONDS]

Connects N TCP sockets to HOST:PORT (at most 256 connects in flight),
reads the 220 greeting on each and then sends nothing more.  When every
connection has its greeting (or has failed), it prints one line

    ready open=<n with greeting> failed=<n> 

on stdout and holds the connections until stdin reaches EOF or it is
killed.  It raises its own RLIMIT_NOFILE as far as the hard limit allows.
Only loopback addresses are accepted.
"""
import argparse
import errno
import ipaddress
import resource
import selectors
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    if not ipaddress.ip_address(a.host).is_loopback:
        sys.exit("idle_conns: refusing non-loopback address %s" % a.host)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 64
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
        except (ValueError, OSError):
            pass

    sel = selectors.DefaultSelector()
    pending = 0          # connects or greetings outstanding
    started = 0
    open_ok = []
    failed = 0
    errors = {}
    deadline = time.monotonic() + a.timeout
    bufs = {}

    def start_one():
        nonlocal started, pending, failed
        started += 1
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:
            failed += 1
            errors[e.strerror] = errors.get(e.strerror, 0) + 1
            return
        s.setblocking(False)
        rc = s.connect_ex((a.host, a.port))
        if rc not in (0, errno.EINPROGRESS):
            failed += 1
            errors[errno.errorcode.get(rc, str(rc))] = errors.get(errno.errorcode.get(rc, str(rc)), 0) + 1
            s.close()
            return
        bufs[s] = b""
        sel.register(s, selectors.EVENT_READ)
        pending += 1

    while (started < a.n or pending) and time.monotonic() < deadline:
        while started < a.n and pending < 256:
            start_one()
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError as e:
                data = None
                errors[e.strerror] = errors.get(e.strerror, 0) + 1
            if not data:
                sel.unregister(s)
                s.close()
                del bufs[s]
                pending -= 1
                failed += 1
                continue
            bufs[s] += data
            b = bufs[s]
            # greeting complete: a line "220 ..." (not "220-")
            if b.endswith(b"\r\n"):
                last = b.rstrip(b"\r\n").split(b"\r\n")[-1]
                if last[3:4] != b"-":
                    sel.unregister(s)
                    pending -= 1
                    del bufs[s]
                    if last.startswith(b"220"):
                        open_ok.append(s)
                    else:
                        failed += 1
                        k = last[:40].decode("latin-1")
                        errors[k] = errors.get(k, 0) + 1
                        s.close()
    failed += pending + (a.n - started)
    msg = "ready open=%d failed=%d" % (len(open_ok), failed)
    if errors:
        msg += " errors=" + ";".join("%s:%d" % kv for kv in sorted(errors.items()))
    print(msg, flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    for s in open_ok:
        s.close()


if __name__ == "__main__":
    main()
