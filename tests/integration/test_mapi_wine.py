"""relaymesh-mapi.dll (the Simple MAPI provider) under Wine, against a live
node.

win32/tests/mapi_test.exe runs one case per process (see its header): it
loads the DLL directly ("direct") or goes through Wine's mapi32.dll after
regsvr32 made the DLL the default mail client ("mapi32"), makes the calls a
Windows program makes, checks what the DLL promises and prints what it got.
This file starts a node per test (node_factory; the DLL talks to the
node's bridge listener, pinned to the key fingerprint `status` shows),
runs the program and checks the node side: what was delivered, parsed with
Python's email package, byte for byte.

Needs: RELAYMESH_BIN (the node), RELAYMESH_WIN32_DIR (the OUTDIR of
scripts/win-build.sh; its x64 and x86 builds), wine64. Skipped otherwise.
One Wine prefix is made per pytest session (wineboot -i under the session's
tmp dir) and shared by the tests.
"""
import email
import email.policy
import email.utils
import hashlib
import json
import os
import random
import re
import shutil
import smtplib
import subprocess
import time
from email.message import EmailMessage

import pytest

from conftest import free_port
from helpers.wine import (WineError, WinePrefix, find_wine, find_wine32,
                          winpath)

BIN = os.environ.get("RELAYMESH_BIN")
WIN32_DIR = os.environ.get("RELAYMESH_WIN32_DIR")
PASSWORD = "s3cret-pw"
USERS = ("alice@localhost", "bob@localhost", "carol@localhost",
         "alicia@localhost")
SIMPLE_MAPI = ("MAPIAddress", "MAPIDeleteMail", "MAPIDetails",
               "MAPIFindNext", "MAPIFreeBuffer", "MAPILogoff", "MAPILogon",
               "MAPIReadMail", "MAPIResolveName", "MAPISaveMail",
               "MAPISendDocuments", "MAPISendMail", "MAPISendMailW")
OBJDUMP = "x86_64-w64-mingw32-objdump"

# MAPI codes (mapi.h)
SUCCESS = 0
MAPI_E_USER_ABORT = 1
MAPI_E_FAILURE = 2
MAPI_E_LOGIN_FAILURE = 3

# The texts mapi_test.c sends (the same literals as there).
ANSI_SUBJECT = "Grüße aus Köln – Preis 5 €, café"
ANSI_BODY = ("Hallo Bob,\r\n\r\nder Kaffee im Café kostet 5 € – "
             "übrigens günstig.\r\nGrüße, Alice\r\n")
ANSI_FILE2 = "Daten-ü.bin"
W_SUBJECT = "Γειά σου 世界 \U0001F30D ü"
W_BODY = ("Καλημέρα — 日本語のテキスト \U0001F600\r\n"
          "zweite Zeile é€\r\n")
W_FILENAME = "報告-été-\U0001F4CE.txt"
W_TONAME = "Böb"

# What the tests deliver by SMTP for the reading side (cp1252 only: the
# ANSI API returns text in the ANSI code page).
READ_SUBJECT = "Grüße vom Café – 5 €"
READ_BODY = ("Hallo Bob,\n\nanbei die Notizen und das Bild.\n"
             "Schöne Grüße – Carol\n")


def _arch_file(arch, *names):
    """The first of OUTDIR/ARCH/NAME for names, or None."""
    for n in names:
        p = os.path.join(WIN32_DIR or "", arch, n)
        if os.path.isfile(p):
            return p
    return None


def _dll(arch="x64"):
    return _arch_file(arch, "relaymesh-mapi.dll")


def _exe(arch="x64"):
    return _arch_file(arch, os.path.join("tests", "mapi_test.exe"),
                      "mapi_test.exe")


def _why_not_runnable():
    if not BIN:
        return "RELAYMESH_BIN not set"
    wine64, server = find_wine()
    if not wine64 or not server:
        return "wine64 not installed (apt-get install wine64)"
    if not WIN32_DIR:
        return "RELAYMESH_WIN32_DIR not set (the OUTDIR of scripts/win-build.sh)"
    if not _dll("x64"):
        return "no x64/relaymesh-mapi.dll in RELAYMESH_WIN32_DIR=%s" % WIN32_DIR
    if not _exe("x64"):
        return "no x64/tests/mapi_test.exe in RELAYMESH_WIN32_DIR=%s" % \
            WIN32_DIR
    return None


# ---- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="session")
def wine(tmp_path_factory):
    reason = _why_not_runnable()
    if reason:
        pytest.skip(reason)
    prefix = WinePrefix(tmp_path_factory.mktemp("wineprefix"))
    try:
        prefix.boot()
    except (WineError, subprocess.TimeoutExpired) as e:
        prefix.kill()
        pytest.fail("cannot make a Wine prefix: %s" % e)
    yield prefix
    prefix.kill()


def _node(node_factory, conf=None):
    n = node_factory(conf=conf, users=USERS)
    if not getattr(n, "bridge_port", None):
        pytest.skip("conftest gives nodes no bridge port")
    return n


@pytest.fixture
def mnode(node_factory):
    """A node with alice, bob, carol and alicia."""
    return _node(node_factory)


class Output:
    """mapi_test.exe's lines: each a dict of its key=value pairs, the
    leading bare word under "_"."""

    def __init__(self, proc):
        self.rc = proc.returncode
        self.text = proc.stdout
        self.stderr = proc.stderr
        self.lines = []
        for line in self.text.splitlines():
            d = {}
            for tok in line.split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    d[k] = v
                elif "_" not in d:
                    d["_"] = tok
            self.lines.append(d)

    def all(self, kind, **match):
        return [d for d in self.lines if d.get("_") == kind and
                all(d.get(k) == v for k, v in match.items())]

    def one(self, kind, **match):
        found = self.all(kind, **match)
        assert len(found) == 1, (kind, match, self.text)
        return found[0]

    def value(self, key):
        """The last value printed for key."""
        found = [d[key] for d in self.lines if key in d]
        assert found, "no %s= in:\n%s" % (key, self.text)
        return found[-1]

    def calls(self, name):
        return [d for d in self.lines if d.get("call") == name]

    def rc_of(self, name):
        c = [d for d in self.calls(name) if "rc" in d]
        assert c, "no call %s in:\n%s" % (name, self.text)
        return int(c[-1]["rc"])

    def fails(self):
        return [ln for ln in self.text.splitlines() if ln.startswith("FAIL")]


def unx(value):
    """Text printed as "x"+hex of UTF-8 ("-": NULL)."""
    if value is None or value == "-":
        return None
    assert value.startswith("x"), value
    return bytes.fromhex(value[1:]).decode("utf-8")


def bare(addr):
    return addr[5:] if addr and addr.lower().startswith("smtp:") else addr


def norm(text):
    """Line ends as LF, no trailing newlines (composers may add one)."""
    return text.replace("\r\n", "\n").rstrip("\n")


def node_fingerprint(node):
    """The key fingerprint the DLL pins (`relaymesh status`)."""
    st = node.status()
    for fp in (st.get("fingerprint"), st.get("bridge", {}).get("fingerprint"),
               st.get("identity", {}).get("fingerprint")):
        if fp:
            return fp
    raise AssertionError("status shows no fingerprint: %r" % st)


class Mapi:
    """Runs mapi_test.exe for one node."""

    def __init__(self, wine, node, arch="x64", loader=None):
        self.wine = wine
        self.node = node
        self.arch = arch
        self.loader = loader
        self.dll = _dll(arch)
        self.exe = _exe(arch)
        self.fingerprint = node_fingerprint(node)

    def env(self, user="alice@localhost", password=PASSWORD, **extra):
        env = {
            "RELAYMESH_MAPI_NODE": "127.0.0.1:%d" % self.node.bridge_port,
            "RELAYMESH_MAPI_FINGERPRINT": self.fingerprint,
            "RELAYMESH_MAPI_USER": user,
            "RELAYMESH_MAPI_PASSWORD": password,
            "RELAYMESH_MAPI_TIMEOUT_MS": "20000",
        }
        env.update(extra)
        return env

    def mode(self, mode):
        return "direct:" + winpath(self.dll) if mode == "direct" else mode

    def run(self, mode, case, *args, env=None, timeout=180, **opts):
        argv = [self.exe, self.mode(mode), case]
        for k, v in opts.items():
            argv.append("--%s=%s" % (k.replace("_", "-"), v))
        argv += [winpath(a) if os.path.isabs(str(a)) else a for a in args]
        t0 = time.monotonic()
        proc = self.wine.run(argv, env=env if env is not None else self.env(),
                             timeout=timeout, loader=self.loader)
        out = Output(proc)
        out.seconds = time.monotonic() - t0
        return out

    def ok(self, mode, case, *args, **kw):
        """Run a case that must pass."""
        out = self.run(mode, case, *args, **kw)
        assert out.rc != 99, "mapi_test crashed:\n%s" % out.text
        assert out.rc == 0, "mapi_test %s %s exited %d:\n%s\n%s" % (
            mode, case, out.rc, "\n".join(out.fails()), out.text[-8000:])
        return out


@pytest.fixture
def mapi(wine, mnode):
    return Mapi(wine, mnode)


@pytest.fixture
def mapi32(wine):
    """The DLL registered (regsvr32) as the default mail client."""
    wine.register_mail_client(_dll("x64"))
    return "mapi32"


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def rand_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def addrs(msg, header):
    h = msg[header]
    return sorted(a.addr_spec for a in h.addresses) if h is not None else []


def attachments(msg):
    return [(p.get_filename(), p.get_payload(decode=True))
            for p in msg.iter_attachments()]


def body_text(msg):
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None, msg
    return part.get_content()


def fetch(node, box, timeout=15.0, count=1):
    """The raw messages of a mailbox, once it holds at least count."""
    entries = node.wait_mailbox(box, count, timeout=timeout)
    assert len(entries) >= count, (box, entries)
    return [node.cat(box, e["uid"]) for e in entries]


def check_envelope(msg):
    """Date and Message-ID are there and well-formed."""
    assert msg["Date"] is not None and msg["Date"].datetime is not None, \
        msg["Date"]
    mid = msg["Message-ID"]
    assert mid is not None and re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>",
                                            str(mid).strip()), mid


def smtp_deliver(node, msg, rcpts, sender="carol@localhost"):
    with smtplib.SMTP("127.0.0.1", node.port, timeout=30) as s:
        s.send_message(msg, from_addr=sender, to_addrs=list(rcpts))


def read_fixture_messages(node, tmp_path):
    """Two messages for bob by SMTP: one with a cp1252 subject and body and
    two attachments (one binary, larger than one fetch chunk), then a plain
    one. Returns the attachments [(name, bytes)]."""
    files = [("notes.txt", b"line one\r\nline two\r\n"),
             ("bild-ä.bin", rand_bytes(600_000, 7))]
    m = EmailMessage()
    m["From"] = "Carol <carol@localhost>"
    m["To"] = "Bob <bob@localhost>"
    m["Cc"] = "alicia@localhost"
    m["Subject"] = READ_SUBJECT
    m["Date"] = email.utils.formatdate(localtime=False)
    m["Message-ID"] = email.utils.make_msgid(domain="localhost")
    m.set_content(READ_BODY)
    m.add_attachment(files[0][1], maintype="text", subtype="plain",
                     filename=files[0][0])
    m.add_attachment(files[1][1], maintype="application",
                     subtype="octet-stream", filename=files[1][0])
    smtp_deliver(node, m, ["bob@localhost"])
    node.wait_mailbox("bob@localhost", 1)
    m2 = EmailMessage()
    m2["From"] = "carol@localhost"
    m2["To"] = "bob@localhost"
    m2["Subject"] = "second message"
    m2.set_content("just text\n")
    smtp_deliver(node, m2, ["bob@localhost"])
    node.wait_mailbox("bob@localhost", 2)
    return files


def box(node, name):
    """A mailbox's entries; [] when it does not exist (yet): a user's Sent
    and Drafts folders are made by their first message."""
    r = node.cli("mailbox", "list", name, "--json")
    if r.returncode != 0 and b"no mailbox" in r.stderr:
        return []
    assert r.returncode == 0, (name, r.stderr)
    return json.loads(r.stdout)


def assert_nothing_delivered(node, boxes=("bob@localhost",
                                          "alice@localhost/Sent"),
                             settle=1.0):
    time.sleep(settle)
    node.wait_queue_empty()
    for name in boxes:
        assert box(node, name) == [], name


# ---- build checks -----------------------------------------------------------

def _exports(dll):
    out = subprocess.run([OBJDUMP, "-p", dll], stdout=subprocess.PIPE,
                         check=True).stdout.decode("utf-8", "replace")
    names, table = [], False
    for line in out.splitlines():
        if "[Ordinal/Name Pointer] Table" in line:
            table = True
            continue
        if table:
            m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s*$", line)
            if not m:
                break
            names.append(m.group(1))
    return names


@pytest.mark.parametrize("arch", ["x64", "x86"])
def test_dll_exports_simple_mapi_undecorated(arch):
    if not WIN32_DIR:
        pytest.skip("RELAYMESH_WIN32_DIR not set")
    if shutil.which(OBJDUMP) is None:
        pytest.skip(OBJDUMP + " not installed")
    dll = _dll(arch)
    if dll is None:
        pytest.skip("no %s/relaymesh-mapi.dll in %s" % (arch, WIN32_DIR))
    names = _exports(dll)
    missing = [n for n in SIMPLE_MAPI + ("RelaymeshFaultInject",
                                         "DllRegisterServer",
                                         "DllUnregisterServer")
               if n not in names]
    assert not missing, "%s lacks %s; it exports %s" % (
        dll, missing, [n for n in names if n.startswith(("MAPI", "Dll",
                                                          "Relaymesh"))])
    decorated = [n for n in names if "@" in n or
                 any(n.startswith("_" + m) for m in SIMPLE_MAPI)]
    assert not decorated, decorated


def test_x86_dll_runs_under_32bit_wine(request, tmp_path):
    """The x86 DLL sends a message (needs Debian's wine32, which this
    machine lacks: then only its exports are checked, above)."""
    loader = find_wine32()
    if loader is None:
        pytest.skip("32-bit Wine (package wine32) is not installed: the x86 "
                    "DLL cannot run here; its exports are checked by "
                    "test_dll_exports_simple_mapi_undecorated[x86]")
    if not _dll("x86") or not _exe("x86"):
        pytest.skip("no x86 build in %s" % WIN32_DIR)
    wine = request.getfixturevalue("wine")
    mnode = request.getfixturevalue("mnode")
    m = Mapi(wine, mnode, arch="x86", loader=loader)
    f1 = write(tmp_path / "notiz.txt", b"x86\r\n")
    f2 = write(tmp_path / "blob.bin", rand_bytes(1000, 3))
    m.ok("direct", "send_ansi", f1, f2)
    msg = parse(fetch(mnode, "bob@localhost")[0])
    assert msg["Subject"] == ANSI_SUBJECT


# ---- registration -----------------------------------------------------------

def test_regsvr32_registers_default_mail_client(wine):
    dll = _dll("x64")
    wine.register_mail_client(dll)   # checks Clients\Mail and DLLPath
    wine.unregister_mail_client(dll)
    assert wine.reg_query(r"HKLM\Software\Clients\Mail\relaymesh",
                          "DLLPath") is None
    assert wine.reg_query(r"HKLM\Software\Clients\Mail", "") != "relaymesh"
    wine.register_mail_client(dll)


# ---- sending ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["direct", "mapi32"])
def test_send_ansi(request, mapi, mode, tmp_path):
    if mode == "mapi32":
        request.getfixturevalue("mapi32")
    node = mapi.node
    text = b"Notiz\r\nzweite Zeile\r\n"
    blob = rand_bytes(700_000, 1)   # past one request: uploaded in chunks
    f1 = write(tmp_path / "notiz.txt", text)
    f2 = write(tmp_path / "blob.bin", blob)
    out = mapi.ok(mode, "send_ansi", f1, f2)
    sent = out.one("sent")
    assert unx(sent["subject"]) == ANSI_SUBJECT
    assert unx(sent["body"]) == ANSI_BODY

    msg = parse(fetch(node, "bob@localhost")[0])
    assert addrs(msg, "From") == ["alice@localhost"]
    assert addrs(msg, "To") == ["bob@localhost", "carol@localhost"]
    assert addrs(msg, "Cc") == ["alicia@localhost"]
    assert msg["Bcc"] is None
    assert msg["Subject"] == ANSI_SUBJECT
    check_envelope(msg)
    assert norm(body_text(msg)) == norm(ANSI_BODY)
    assert attachments(msg) == [("notiz.txt", text), (ANSI_FILE2, blob)]
    # every recipient got the same message
    for rcpt in ("carol@localhost", "alicia@localhost"):
        other = parse(fetch(node, rcpt)[0])
        assert other["Message-ID"] == msg["Message-ID"]
    # the sender's copy in Sent
    copy = parse(fetch(node, "alice@localhost/Sent")[0])
    assert copy["Message-ID"] == msg["Message-ID"]
    assert copy["Subject"] == ANSI_SUBJECT
    assert attachments(copy) == [("notiz.txt", text), (ANSI_FILE2, blob)]
    assert len(node.mailbox("bob@localhost")) == 1


@pytest.mark.parametrize("mode", ["direct", "mapi32"])
def test_send_unicode(request, mapi, mode, tmp_path):
    if mode == "mapi32":
        request.getfixturevalue("mapi32")
    node = mapi.node
    data = "ünïcødé 文件 \U0001F4CE\n".encode("utf-8") + bytes(range(256))
    f = write(tmp_path / "u.txt", data)
    out = mapi.ok(mode, "send_unicode", f)
    sent = out.one("sent")
    assert unx(sent["subject"]) == W_SUBJECT
    assert unx(sent["file"]) == W_FILENAME

    msg = parse(fetch(node, "bob@localhost")[0])
    assert addrs(msg, "From") == ["alice@localhost"]
    assert addrs(msg, "To") == ["bob@localhost"]
    assert msg["To"].addresses[0].display_name == W_TONAME
    assert msg["Subject"] == W_SUBJECT
    check_envelope(msg)
    assert norm(body_text(msg)) == norm(W_BODY)
    assert attachments(msg) == [(W_FILENAME, data)]
    copy = parse(fetch(node, "alice@localhost/Sent")[0])
    assert copy["Message-ID"] == msg["Message-ID"]


def test_send_documents_saves_a_draft(mapi, tmp_path):
    node = mapi.node
    t = b"Bericht\r\n"
    b = rand_bytes(5000, 5)
    f1 = write(tmp_path / "r.txt", t)
    f2 = write(tmp_path / "d.bin", b)
    mapi.ok("direct", "send_documents", f1, f2)
    msg = parse(fetch(node, "alice@localhost/Drafts")[0])
    assert attachments(msg) == [("Bericht-ä.txt", t), ("data.bin", b)]
    # win32/README.md: empty subject and text, no recipients
    assert addrs(msg, "To") == [] and addrs(msg, "Cc") == []
    assert not msg["Subject"]
    assert_nothing_delivered(node)


def test_save_and_replace_draft(mapi, tmp_path):
    node = mapi.node
    data = rand_bytes(3000, 9)
    f = write(tmp_path / "anhang.bin", data)
    out = mapi.ok("direct", "save", f)
    saved = out.all("saved")
    assert len(saved) == 2 and all(s["id"] not in ("", "-") for s in saved)
    drafts = node.mailbox("alice@localhost/Drafts")
    assert len(drafts) == 1, drafts   # replaced, not added
    msg = parse(node.cat("alice@localhost/Drafts", drafts[0]["uid"]))
    assert msg["Subject"] == "Entwurf 2 – €"
    assert addrs(msg, "To") == ["bob@localhost"]
    assert norm(body_text(msg)) == "second draft"
    assert attachments(msg) == [("anhang.bin", data)]
    draft = out.one("msg", tag="draft")
    assert unx(draft["subject"]) == "Entwurf 2 – €"
    assert_nothing_delivered(node)


def test_config_from_registry(mapi, tmp_path):
    """No environment: node, fingerprint and user come from
    HKCU\\Software\\relaymesh; MAPILogon's password is used."""
    key = r"HKCU\Software\relaymesh"
    wine = mapi.wine
    values = {"Node": "127.0.0.1:%d" % mapi.node.bridge_port,
              "Fingerprint": mapi.fingerprint, "User": "alice@localhost"}
    try:
        for name, data in values.items():
            wine.run(["reg", "add", key, "/v", name, "/t", "REG_SZ", "/d",
                      data, "/f"], check=True)
        f1 = write(tmp_path / "notiz.txt", b"reg\r\n")
        f2 = write(tmp_path / "blob.bin", rand_bytes(100, 4))
        mapi.ok("direct", "send_ansi", f1, f2, env={}, password=PASSWORD)
    finally:
        wine.run(["reg", "delete", key, "/f"])
    msg = parse(fetch(mapi.node, "bob@localhost")[0])
    assert addrs(msg, "From") == ["alice@localhost"]
    assert msg["Subject"] == ANSI_SUBJECT


# ---- reading ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["direct", "mapi32"])
def test_read(request, mapi, mode, tmp_path):
    if mode == "mapi32":
        request.getfixturevalue("mapi32")
    node = mapi.node
    files = read_fixture_messages(node, tmp_path)
    out = mapi.ok(mode, "read", profile="bob@localhost", password=PASSWORD)

    assert out.one("find", tag="all")["count"] == "2"
    assert out.one("find", tag="unread")["count"] == "2"
    assert out.one("find", tag="unread_after_read")["count"] == "1"
    full = out.one("msg", tag="full")
    assert unx(full["subject"]) == READ_SUBJECT
    assert norm(unx(full["body"])) == norm(READ_BODY)
    assert re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d", unx(full["date"])), \
        full["date"]
    idx = out.lines.index(full)
    orig = out.lines[idx + 1]
    assert orig["_"] == "orig", out.text
    assert bare(unx(orig["addr"])) == "carol@localhost"
    assert unx(orig["name"]) == "Carol"
    recips = []
    for d in out.lines[idx + 2:]:
        if d.get("_") != "recip":
            break
        recips.append((d["class"], bare(unx(d["addr"]))))
    assert sorted(recips) == [("1", "bob@localhost"),
                              ("2", "alicia@localhost")], out.text
    for tag in ("peek", "full"):
        got = [(unx(d["name"]), int(d["size"]), d["sha256"])
               for d in out.all("file", tag=tag)]
        want = [(n, len(b), hashlib.sha256(b).hexdigest()) for n, b in files]
        assert got == want, (tag, out.text)
    # win32/README.md: MAPI_ENVELOPE_ONLY lists no attachments;
    # MAPI_SUPPRESS_ATTACH lists them by name without files;
    # MAPI_BODY_AS_FILE puts the text in a file listed first.
    env = out.one("msg", tag="envelope")
    assert env["unread"] == "1" and env["body"] in ("-", "x")
    assert env["nfiles"] == "0"
    supp = out.one("msg", tag="suppress")
    assert norm(unx(supp["body"])) == norm(READ_BODY)
    assert [(unx(d["name"]), d["has_path"])
            for d in out.all("file", tag="suppress")] == \
        [(n, "0") for n, _ in files]
    baf = out.one("msg", tag="body_as_file")
    assert baf["body"] in ("-", "x") and baf["nfiles"] == "3"
    body_file = out.all("file", tag="body_as_file")
    assert body_file[0]["has_path"] == "1"
    raw = bytes.fromhex(body_file[0]["content"][1:])
    assert norm(raw.decode("cp1252")) == norm(READ_BODY), raw
    assert [unx(d["name"]) for d in body_file[1:]] == [n for n, _ in files]
    assert out.rc_of("MAPIFindNext/type-ipm") == SUCCESS
    assert out.rc_of("MAPIFindNext/type-other") == 16   # NO_MESSAGES
    assert out.one("msg", tag="envelope3")["unread"] == "0"
    other = out.one("msg", tag="other1")
    assert unx(other["subject"]) == "second message"
    assert norm(unx(other["body"])) == "just text"
    assert other["nfiles"] == "0"
    assert out.value("heap_valid") == "1"


def test_free_through_mapi32(wine, mnode, mapi32):
    """Buffers the DLL hands out through mapi32 are freed by Wine's
    mapi32 MAPIFreeBuffer (it forwards MAPIFreeBuffer only to extended
    providers): no crash, a valid heap, no growth."""
    m = EmailMessage()
    m["From"] = "carol@localhost"
    m["To"] = "bob@localhost"
    m["Subject"] = "free me"
    m.set_content(("0123456789abcdef" * 8 + "\n") * 64)   # ~8 KiB
    smtp_deliver(mnode, m, ["bob@localhost"])
    mnode.wait_mailbox("bob@localhost", 1)
    out = Mapi(wine, mnode).ok("mapi32", "free_through_mapi32",
                               profile="bob@localhost", password=PASSWORD)
    assert out.value("provider_loaded") == "1"
    assert out.value("heap_valid") == "1"


def test_delete(mapi):
    node = mapi.node
    for subject in ("keep me", "delete me"):
        m = EmailMessage()
        m["From"] = "carol@localhost"
        m["To"] = "bob@localhost"
        m["Subject"] = subject
        m.set_content(subject + "\n")
        smtp_deliver(node, m, ["bob@localhost"])
    node.wait_mailbox("bob@localhost", 2)
    out = mapi.ok("direct", "delete", profile="bob@localhost",
                  password=PASSWORD, subject="delete me")
    assert out.rc_of("MAPIDeleteMail/again") == 17   # INVALID_MESSAGE
    left = node.mailbox("bob@localhost")
    assert [e["subject"] for e in left] == ["keep me"]


# ---- names ------------------------------------------------------------------

def test_resolve(mapi):
    # win32/README.md "Simple MAPI behaviour": MAPIDetails shows no dialog
    # and succeeds for a recipient the node knows; MAPIAddress with nothing
    # given is the user choosing nobody (MAPI_E_USER_ABORT) and resolves
    # the recipients it is given.
    out = mapi.ok("direct", "resolve", expect_details=SUCCESS,
                  expect_address=MAPI_E_USER_ABORT)
    assert out.rc_of("MAPIResolveName/bob@localhost") == SUCCESS
    assert out.rc_of("MAPIResolveName/carol") == SUCCESS
    assert out.rc_of("MAPIResolveName/ali") == 21        # AMBIGUOUS
    assert out.rc_of("MAPIResolveName/nobody-here-xyz") == 14   # UNKNOWN
    resolved = [bare(unx(d["addr"])) for d in out.all("resolved")]
    assert resolved == ["bob@localhost", "carol@localhost"]
    # entry ids are "RMEID:" + the address
    assert [int(d["eid_size"]) for d in out.all("resolved")] == \
        [len("RMEID:" + a) for a in resolved]
    assert out.rc_of("MAPIAddress/given") == SUCCESS
    picked = out.one("address_picked")
    assert bare(unx(picked["addr"])) == "carol@localhost"
    assert picked["class"] == "2"


# ---- failures ---------------------------------------------------------------

def test_wrong_password(mapi):
    out = mapi.ok("direct", "wrong_password", profile="alice@localhost",
                  password="not-the-password",
                  env=mapi.env(password="not-the-password"))
    assert out.rc_of("MAPILogon") == MAPI_E_LOGIN_FAILURE
    assert_nothing_delivered(mapi.node)


def test_node_down(mapi):
    port = free_port()
    out = mapi.ok("direct", "node_down",
                  env=mapi.env(RELAYMESH_MAPI_NODE="127.0.0.1:%d" % port))
    assert out.rc_of("MAPILogon") == MAPI_E_FAILURE
    for d in out.all("elapsed"):
        assert int(d["ms"]) < 5000, d
    assert out.seconds < 30


def test_wrong_fingerprint_is_refused(mapi):
    fp = mapi.fingerprint
    # the same shape, another key: flip the first character
    other = ("B" if fp[0] != "B" else "C") + fp[1:]
    out = mapi.ok("direct", "wrong_fingerprint",
                  env=mapi.env(RELAYMESH_MAPI_FINGERPRINT=other))
    assert out.rc_of("MAPILogon") != SUCCESS
    assert_nothing_delivered(mapi.node)


def test_oversized_attachment(wine, node_factory, tmp_path):
    node = _node(node_factory, conf={"limits.max_message_size": "200000"})
    m = Mapi(wine, node)
    big1 = write(tmp_path / "big1.bin", rand_bytes(300_000, 11))
    big2 = write(tmp_path / "big2.bin", rand_bytes(1_200_000, 12))
    out = m.ok("direct", "oversized", big1, big2)
    rcs = [int(c["rc"]) for c in out.calls("MAPISendMail/oversized")]
    assert rcs == [28, 28], out.text   # MAPI_E_ATTACHMENT_TOO_LARGE
    time.sleep(1.0)
    node.wait_queue_empty()
    inbox = node.mailbox("bob@localhost")
    assert [e["subject"] for e in inbox] == ["after oversized"], inbox
    assert len(box(node, "alice@localhost/Sent")) == 1


def test_invalid_arguments(mapi, tmp_path):
    f = write(tmp_path / "a.txt", b"attachment\r\n")
    out = mapi.ok("direct", "invalid_args", f)
    assert len([d for d in out.lines if "call" in d]) > 30
    # the codes win32/README.md documents
    want = {
        "MAPILogon/bad-flags": 2, "MAPISendMail/bad-flags": 2,
        "MAPIFindNext/bad-flags": 2, "MAPIReadMail/bad-flags": 2,
        "MAPISendMail/huge-recip-count": 10,
        "MAPISendMail/max-recip-count": 10,
        "MAPISendMail/huge-file-count": 9,
        "MAPISendMail/missing-file": 11,
        "MAPISendMail/bad-recip-class": 15,
        "MAPISendMail/long-subject": 18,
        "MAPIFindNext/bogus-seed": 17,
        "MAPISendDocuments/null-paths": 1,
    }
    got = {k: out.rc_of(k) for k in want}
    assert got == want
    assert_nothing_delivered(mapi.node, boxes=("bob@localhost",
                                               "alice@localhost/Sent",
                                               "alice@localhost/Drafts"))


def test_no_user_interface(mapi):
    """win32/README.md "No user interface": MAPI_DIALOG, MAPISendDocuments
    without files, MAPIResolveName with MAPI_DIALOG."""
    node = mapi.node
    mapi.ok("direct", "no_ui")
    inbox = fetch(node, "bob@localhost")
    assert len(inbox) == 1
    assert parse(inbox[0])["Subject"] == "sent with MAPI_DIALOG"
    assert box(node, "alice@localhost/Drafts") == []


def test_logon_ui_without_credentials(mapi):
    env = mapi.env()
    del env["RELAYMESH_MAPI_USER"], env["RELAYMESH_MAPI_PASSWORD"]
    mapi.ok("direct", "logon_ui", env=env, profile="alice@localhost")


@pytest.mark.slow
def test_fault_injection(mapi, tmp_path):
    f = write(tmp_path / "a.bin", rand_bytes(2000, 13))
    out = mapi.ok("direct", "fault_injection", f, timeout=1800)
    summary = out.one("fault_injection")
    tested = int(summary["tested"])
    print("fault injection: %d allocations tested, %s rounds failed, %.0f s"
          % (tested, summary["failed_rounds"], out.seconds))
    assert tested > 0
    assert int(summary["failed_rounds"]) > 0
