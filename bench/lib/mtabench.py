"""Shared pieces for relaymesh benchmarks against Postfix (Python 3 standard
library only): cleanup on any exit, ports, a private Postfix instance,
smtp-sink with its message counter, smtp-source runs, process CPU.

The same approach as bench/smtp-ingest (which keeps its own copies); used
by bench/smtp-relay.  Nothing here changes the system except what
PrivatePostfix.setup() documents (alternate_config_directories in
/etc/postfix/main.cf, undone at exit).
"""
import atexit
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

LOOPBACK = "127.0.0.1"
LOG_PREFIX = "[bench]"


def log(*a):
    print(LOG_PREFIX, *a, file=sys.stderr, flush=True)


def die(msg):
    log("ERROR:", msg)
    sys.exit(1)


# ---------------------------------------------------------------- cleanup

class Cleanup:
    """Stack of undo actions, run once on any exit (normal, error, signal)."""

    def __init__(self):
        self.actions = []
        self.done = False

    def push(self, name, fn):
        self.actions.append((name, fn))

    def run(self):
        if self.done:
            return
        self.done = True
        while self.actions:
            name, fn = self.actions.pop()
            try:
                fn()
            except Exception as e:  # keep cleaning up
                log("cleanup %s: %s" % (name, e))


CLEANUP = Cleanup()


def install_cleanup():
    """Run CLEANUP at exit and turn SIGINT/SIGTERM/SIGHUP into an exit."""
    atexit.register(CLEANUP.run)

    def _on_signal(sig, _frm):
        log("signal %d: stopping" % sig)
        raise SystemExit(128 + sig)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)


def kill_proc(p, name, grace=5.0, sig=signal.SIGTERM):
    """Stop a child we started (by its pid), escalating to SIGKILL."""
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log("%s did not stop in %.0fs, SIGKILL" % (name, grace))
        p.kill()
        p.wait(timeout=5)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- helpers

def free_port():
    """A free high TCP port on loopback (bind to 0, read it, release)."""
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout, proc=None, name="server"):
    """Wait until LOOPBACK:port accepts and greets with 220; None when it
    does, else why not."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return "%s exited with status %s" % (name, proc.returncode)
        try:
            with socket.create_connection((LOOPBACK, port), timeout=2) as s:
                s.settimeout(5)
                g = s.recv(512)
                if g.startswith(b"220"):
                    try:
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                    except OSError:
                        pass
                    return None
                last = "greeting %r" % g[:80]
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    return "%s: port %d not ready after %.0fs (%s)" % (name, port, timeout, last)


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, **kw)


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return "(%s)" % e


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def read_from(path, offset):
    """Text of path from byte offset on ('' if missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def fs_info(path):
    """(fstype, device, mount point, options) of the filesystem holding path."""
    path = os.path.realpath(path)
    best = ("?", "?", "/", "?")
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts = line.split()[:4]
            mnt = mnt.replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) \
                    and len(mnt) >= len(best[2]):
                best = (fstype, dev, mnt, opts)
    return best


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < new_soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def find_key(obj, key):
    """First value of `key` anywhere in a JSON object tree."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            r = find_key(v, key)
            if r is not None:
                return r
    elif isinstance(obj, list):
        for v in obj:
            r = find_key(v, key)
            if r is not None:
                return r
    return None


def children_of(pid):
    """Pids whose parent is pid (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        if ppid == pid:
            out.append(int(d))
    return out


def proc_cpu(pid):
    """(own utime+stime, reaped children's cutime+cstime) of pid, seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        v = [int(x) for x in st[st.rindex(")") + 2:].split()[11:15]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1]) / hz, (v[2] + v[3]) / hz


def tree_cpu(pid):
    """CPU seconds used so far by pid, its live children and the children it
    has reaped.  A difference of two readings is the CPU the tree used in
    between (children that are still alive counted in full)."""
    own, reaped = proc_cpu(pid)
    return own + reaped + sum(sum(proc_cpu(c)) for c in children_of(pid))


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a list; None if empty."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def fmt(v, spec="%.0f", na="n/a"):
    return na if v is None else spec % v


# ---------------------------------------------------------------- Postfix

class PrivatePostfix:
    """A private Postfix instance in ROOT: its own main.cf/master.cf, queue,
    data dir and log file (maillog_file through postlogd), smtpd on
    LOOPBACK:port, nothing chrooted.  `main_cf` lines are appended to the
    base configuration (later settings win in main.cf)."""

    SYS_CF = "/etc/postfix/main.cf"

    def __init__(self, root, port, main_cf="", title="bench"):
        self.root = root
        self.port = port
        self.extra = main_cf
        self.title = title
        self.conf = os.path.join(root, "etc")
        self.queue = os.path.join(root, "queue")
        self.data = os.path.join(root, "data")
        self.logdir = os.path.join(root, "log")
        self.maillog = os.path.join(self.logdir, "maillog")
        self.started = False

    def postconf(self, *args):
        return run(["postconf"] + list(args))

    def param(self, name):
        """Effective value of a parameter of this instance."""
        return self.postconf("-c", self.conf, "-x", "-h", name).stdout.strip()

    def _system_allow(self):
        """Let `postfix -c DIR` accept our config dir: list it in the system
        main.cf's alternate_config_directories (created from the packaged
        template if absent); our entry is removed again at exit, as are
        entries of earlier bench runs whose dirs are gone."""
        if not os.path.exists(self.SYS_CF):
            for src in ("/usr/share/postfix/main.cf.dist",
                        "/etc/postfix/main.cf.proto"):
                if os.path.exists(src):
                    shutil.copyfile(src, self.SYS_CF)
                    log("created %s from %s" % (self.SYS_CF, src))
                    break
            else:
                die("no %s and no template to create it from" % self.SYS_CF)
        cur = self.postconf("-c", "/etc/postfix", "-h",
                            "alternate_config_directories").stdout.strip()
        entries = [e for e in re.split(r"[\s,]+", cur) if e]
        keep = [e for e in entries
                if not ("/relaymesh-bench." in e and not os.path.isdir(e))]
        if self.conf not in keep:
            keep.append(self.conf)
        if keep != entries:
            r = self.postconf("-c", "/etc/postfix", "-e",
                              "alternate_config_directories = " + ", ".join(keep))
            if r.returncode != 0:
                die("postconf: " + r.stdout)

        def undo():
            cur = self.postconf("-c", "/etc/postfix", "-h",
                                "alternate_config_directories").stdout.strip()
            ents = [e for e in re.split(r"[\s,]+", cur) if e and e != self.conf]
            if ents:
                self.postconf("-c", "/etc/postfix", "-e",
                              "alternate_config_directories = " + ", ".join(ents))
            else:
                self.postconf("-c", "/etc/postfix", "-X",
                              "alternate_config_directories")
        CLEANUP.push("postfix alternate_config_directories", undo)

    def setup(self):
        for d in (self.conf, self.queue, self.data, self.logdir):
            os.makedirs(d, exist_ok=True)
        shutil.chown(self.data, "postfix", "postfix")
        d = {k: self.postconf("-dh", k).stdout.strip() for k in
             ("command_directory", "daemon_directory", "shlib_directory",
              "meta_directory", "mail_owner", "setgid_group")}
        main_cf = """\
# Private Postfix instance for relaymesh's bench/{title}.  Nothing here trades
# durability for speed: queue files are fsync'd as in a default install.
compatibility_level = 3.7
queue_directory = {queue}
data_directory = {data}
command_directory = {command_directory}
daemon_directory = {daemon_directory}
shlib_directory = {shlib_directory}
meta_directory = {meta_directory}
mail_owner = {mail_owner}
setgid_group = {setgid_group}
maillog_file = {maillog}
maillog_file_prefixes = {root}
syslog_name = postfix-bench
myhostname = bench.test
mydomain = bench.test
myorigin = bench.test
mydestination = bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains =
local_recipient_maps =
local_transport = discard:
alias_maps =
alias_database =
biff = no
smtpd_banner = $myhostname ESMTP bench
""".format(queue=self.queue, data=self.data, maillog=self.maillog,
           root=self.root, title=self.title, **d)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(main_cf + self.extra)
        # master.cf: the packaged one, smtpd on our loopback port, nothing
        # chrooted (the temp queue dir has no chroot environment).
        out = []
        with open("/etc/postfix/master.cf") as f:
            for line in f:
                fields = line.split()
                if line[:1] not in ("#", " ", "\t", "\n") and len(fields) >= 8:
                    if fields[0] == "smtp" and fields[1] == "inet":
                        fields[0] = "%s:%d" % (LOOPBACK, self.port)
                    fields[4] = "n"
                    line = " ".join(fields) + "\n"
                out.append(line)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.writelines(out)
        self._system_allow()
        r = self.postconf("-c", self.conf, "-n")
        if r.returncode != 0 or "warning" in r.stdout:
            log("postconf -n: " + r.stdout.strip()[-1000:])

    def start(self):
        cmd = "postfix -c %s start" % self.conf
        # Postfix shows its errors only on a tty (or in its log).
        r = run(["script", "-qc", cmd, "/dev/null"])
        self.started = True
        CLEANUP.push("postfix stop", self.stop)
        err = wait_port(self.port, 30, name="postfix")
        if r.returncode != 0 or err:
            die("postfix start failed (rc %d): %s\n%s\nmaillog:\n%s"
                % (r.returncode, err or "", r.stdout, tail(self.maillog)))

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def cpu(self):
        """CPU seconds of master and its children so far (tree_cpu)."""
        pid = self.master_pid()
        return tree_cpu(pid) if pid else 0.0

    def stop(self):
        if not self.started:
            return
        self.started = False
        pid = self.master_pid()
        run(["postfix", "-c", self.conf, "stop"])
        deadline = time.monotonic() + 15
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        if pid:
            log("postfix master %d still running, postfix abort" % pid)
            run(["postfix", "-c", self.conf, "abort"])

    def queued(self):
        """Files still in the queue (incoming, active, deferred, hold, maildrop)."""
        n = 0
        for q in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _dp, _dn, files in os.walk(os.path.join(self.queue, q)):
                n += len(files)
        return n

    def log_offset(self):
        return file_size(self.maillog)

    def log_counts(self, offset=0):
        c = {"sent": 0, "deferred": 0, "bounced": 0}
        for line in read_from(self.maillog, offset).splitlines():
            for k in c:
                if " status=%s " % k in line:
                    c[k] += 1
        return c

    def sent_delays(self, offset=0):
        """delay= (seconds, arrival to delivery) and delays=a/b/c/d of every
        status=sent line in the log from offset on."""
        out = []
        for line in read_from(self.maillog, offset).splitlines():
            if " status=sent " not in line:
                continue
            m = re.search(r" delay=([\d.]+), delays=([\d.]+)/([\d.]+)/"
                          r"([\d.]+)/([\d.]+),", line)
            if m:
                out.append(tuple(float(x) for x in m.groups()))
        return out

    def wait_drained(self, expect_sent, offset=0, timeout=120):
        """Wait until the queue is empty and the log (from offset) shows
        expect_sent deliveries; return (ok, counts)."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.log_counts(offset)
            q = self.queued()
            if q == 0 and c["sent"] >= expect_sent:
                return c["sent"] == expect_sent and not c["deferred"] \
                    and not c["bounced"], c
            if time.monotonic() > deadline:
                return False, c
            time.sleep(0.2)


# ---------------------------------------------------------------- sink

class Sink:
    """Postfix's smtp-sink on LOOPBACK:port: stores nothing, counts the
    messages it received (-c: a counter line per session end, QUIT and
    final dot).  `args` are extra options."""

    def __init__(self, root, port, name="smtp-sink", args=(), backlog=1024):
        self.port = port
        self.name = name
        self.args = list(args)
        self.backlog = backlog
        self.out = os.path.join(root, name + ".out")
        self.p = None

    def start(self):
        cmd = ["smtp-sink", "-c"] + self.args
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += ["%s:%d" % (LOOPBACK, self.port), str(self.backlog)]
        self.cmd = cmd
        self.f = open(self.out, "wb")
        self.p = subprocess.Popen(cmd, stdout=self.f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        CLEANUP.push(self.name, lambda: kill_proc(self.p, self.name))
        err = wait_port(self.port, 10, self.p, self.name)
        if err:
            die("%s: %s\n%s" % (self.name, err, tail(self.out)))

    def messages(self):
        """Messages the sink has seen end with '.' (its -c counter)."""
        try:
            with open(self.out, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 512))
                data = f.read()
        except OSError:
            return 0
        m = re.findall(rb"mesg=(\d+)", data)
        return int(m[-1]) if m else 0

    def wait_count(self, expect, timeout=10, settle=1.0):
        """Wait for expect messages, then `settle` s more for extras (a
        duplicate delivery would show up as more than expected).  Returns
        (exactly expect?, count)."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.messages()
            if n >= expect or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if n >= expect and settle:
            time.sleep(settle)
            n = self.messages()
        return n == expect, n


# ---------------------------------------------------------------- load

def smtp_source_cmd(port, rcpt, sessions, count, size, sender, helo,
                    reuse=False):
    cmd = ["smtp-source", "-4", "-s", str(sessions), "-l", str(size),
           "-m", str(count), "-f", sender, "-M", helo, "-t", rcpt]
    if reuse:
        cmd.append("-d")
    cmd.append("%s:%d" % (LOOPBACK, port))
    return cmd


def start_smtp_source(cmd, logpath):
    """Start smtp-source in the background (output appended to logpath)."""
    lf = open(logpath, "ab")
    lf.write(("$ %s\n" % " ".join(cmd)).encode())
    lf.flush()
    p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    lf.close()
    CLEANUP.push("smtp-source", lambda: kill_proc(p, "smtp-source", 2))
    return p
