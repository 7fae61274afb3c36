"""node/mime_compose.c read back by Python's email package.

The composer (what the MAPI bridge's "send" uses) is driven through
tests/tools/mime_compose_demo (MIME_COMPOSE_BIN); each composed message
is parsed with email.policy.default and must give back exactly what went
in: decoded headers, body text, attachments byte for byte with their file
names and types, no Bcc; every line CRLF and at most 998 octets.
"""
import email
import email.header
import email.headerregistry
import email.policy
import email.utils
import os
import subprocess

import pytest

def _find_bin():
    """MIME_COMPOSE_BIN (set by ctest), else the tool in the build tree
    next to RELAYMESH_BIN."""
    if os.environ.get("MIME_COMPOSE_BIN"):
        return os.environ["MIME_COMPOSE_BIN"]
    rm = os.environ.get("RELAYMESH_BIN")
    if rm:
        cand = os.path.join(os.path.dirname(rm), "tests", "mime_compose_demo")
        if os.access(cand, os.X_OK):
            return cand
    return None


BIN = _find_bin()

pytestmark = pytest.mark.skipif(
    not BIN, reason="MIME_COMPOSE_BIN not set (run through ctest)")

RANDOM = bytes(range(100, 132))
DATE = 1764408697  # Sat, 29 Nov 2025 09:31:37 +0000


def _x(value):
    if value is None:
        return "-"
    if isinstance(value, str):
        value = value.encode("utf-8")
    return "x" + value.hex()


def compose(tmp_path, frm=("", "alice@example.org"), to=(), cc=(), bcc=(),
            subject=None, body="", attach=(), irt=None, refs=None,
            receipt=False, keep_bcc=False, max_size=None, name="msg"):
    """Runs the tool; returns (message bytes, Message-ID) or raises
    RuntimeError with the tool's error line."""
    lines = ["date %d" % DATE, "domain " + _x("node.example"),
             "random " + _x(RANDOM), "from %s %s" % (_x(frm[0]), _x(frm[1]))]
    for key, lst in (("to", to), ("cc", cc), ("bcc", bcc)):
        for n, a in lst:
            lines.append("%s %s %s" % (key, _x(n), _x(a)))
    if subject is not None:
        lines.append("subject " + _x(subject))
    lines.append("body " + _x(body))
    for fname, ctype, data in attach:
        lines.append("attach %s %s %s" % (_x(fname), _x(ctype), _x(data)))
    if irt is not None:
        lines.append("irt " + _x(irt))
    if refs is not None:
        lines.append("refs " + _x(refs))
    if receipt:
        lines.append("receipt")
    if keep_bcc:
        lines.append("keepbcc")
    if max_size is not None:
        lines.append("max %d" % max_size)
    out = tmp_path / (name + ".eml")
    r = subprocess.run([BIN, str(out)], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, timeout=60)
    if r.returncode == 2:
        raise RuntimeError(r.stdout.strip())
    assert r.returncode == 0, r.stderr
    return out.read_bytes(), r.stdout.strip()


def check_lines(raw):
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")
    assert lines[-1] == b""
    for ln in lines[:-1]:
        assert b"\r" not in ln and b"\n" not in ln, ln
        assert len(ln) <= 998, len(ln)
        assert all(b < 0x80 for b in ln), ln  # 7-bit clean
    # Header lines are folded at 78 where the content allows.
    head = raw.split(b"\r\n\r\n", 1)[0]
    for ln in head.split(b"\r\n"):
        assert len(ln) <= 78, ln


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def addrs(msg, field):
    """(display name, address) pairs decoded per RFC 2047 §6.2.

    policy.default's address parser keeps the white space between
    adjacent encoded-words of one display name (CPython gh-128110), which
    RFC 2047 §6.2 says to drop; names longer than one encoded-word (45
    octets) are written as several, so for those the RFC reading comes
    from the legacy decoder, and policy.default must differ from it only
    by that extra white space."""
    h = msg[field]
    assert h is not None, field
    raw = email.message_from_bytes(msg.as_bytes(), policy=email.policy.compat32)
    legacy = [(str(email.header.make_header(email.header.decode_header(n))),
               a) for n, a in email.utils.getaddresses([raw[field]])]
    if not hasattr(h, "addresses"):  # a field the registry does not know
        parsed = email.headerregistry.AddressHeader.value_parser(str(h))
        modern = [(a.display_name, a.addr_spec)
                  for a in parsed.all_mailboxes]
    else:
        modern = [(a.display_name, a.addr_spec) for a in h.addresses]
    assert [a for _, a in modern] == [a for _, a in legacy]
    for (m, _), (l, _) in zip(modern, legacy):
        if m != l:
            assert len(l.encode()) > 45 and m.replace(" ", "") == \
                l.replace(" ", ""), (m, l)
    return legacy


def norm(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")


def body_text(msg):
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    assert part.get_content_type() == "text/plain"
    assert part.get_content_charset() == "utf-8"
    return norm(part.get_content())


def assert_body(msg, text):
    got, want = body_text(msg), norm(text)
    # A single part ends with a line end: "abc" may come back "abc\n".
    assert got == want or (not want.endswith("\n") and got == want + "\n"), \
        (got, want)


SCRIPTS = [
    "Grüße aus Köln – Größenmaß",
    "Привет, как дела? Съешь же ещё этих мягких французских булок",
    "日本語の件名とテキスト、かなり長いものを試しています。漢字かなカナ",
    "مرحبا بالعالم — اختبار",
    "🎉 Emoji 𝄞 and astral plane 🚀 characters 👩‍👩‍👧",
    "Ελληνικά και עברית και हिन्दी",
]


@pytest.mark.parametrize("subject", SCRIPTS)
def test_non_ascii_subject_and_names(tmp_path, subject):
    frm = (subject[:20], "alice@example.org")
    to = [("Jürgen Groß", "j@example.de"), ("王小明", "wang@example.cn")]
    raw, msgid = compose(tmp_path, frm=frm, to=to, subject=subject,
                         body=subject + "\n")
    check_lines(raw)
    msg = parse(raw)
    assert msg["subject"] == subject
    assert addrs(msg, "from") == [frm]
    assert addrs(msg, "to") == to
    assert msg["message-id"] == msgid
    assert msgid == "<" + RANDOM[:16].hex() + "@node.example>"
    assert msg["mime-version"] == "1.0"
    assert msg["date"].datetime.timestamp() == DATE
    assert_body(msg, subject + "\n")
    # Encoded-words: at most 75 characters each.
    for word in raw.split(b"\r\n\r\n", 1)[0].split():
        if word.startswith(b"=?"):
            assert len(word) <= 75, word


def test_long_subject_folds(tmp_path):
    ascii_subj = " ".join("word%d" % i for i in range(60))
    raw, _ = compose(tmp_path, to=[("", "bob@example.com")],
                     subject=ascii_subj, body="hi", name="a")
    check_lines(raw)
    assert parse(raw)["subject"] == ascii_subj
    assert raw.count(b"\r\n ") > 3  # folded
    long_utf8 = "Überlänge " * 40 + "Ende"
    raw, _ = compose(tmp_path, to=[("", "bob@example.com")],
                     subject=long_utf8, body="hi", name="b")
    check_lines(raw)
    assert parse(raw)["subject"] == long_utf8
    # A word too long to fold, odd spacing, text that looks encoded.
    for i, s in enumerate(["x" * 300, "  two  spaces  ", "tab\there",
                           "=?utf-8?B?aGk=?= literal", "trailing "]):
        raw, _ = compose(tmp_path, subject=s, body="", name="c%d" % i)
        check_lines(raw)
        assert parse(raw)["subject"] == s


def test_multi_recipient_and_bcc_absent(tmp_path):
    to = [("", "r%d@example.com" % i) for i in range(40)]
    cc = [('Doe, John "JD"', "jd@example.com"), ("O'Brien (IT)", "ob@x.ie"),
          ("back\\slash", "bs@example.com"), ("a.b@c", "ab@example.com")]
    bcc = [("Hidden Person", "hidden@example.net"), ("", "h2@example.net")]
    raw, _ = compose(tmp_path, to=to, cc=cc, bcc=bcc, subject="list",
                     body="x" * 2000 + "\r\nshort\r\n")
    check_lines(raw)
    assert b"hidden" not in raw.lower() and b"h2@" not in raw
    msg = parse(raw)
    assert msg["bcc"] is None
    assert addrs(msg, "to") == to
    assert addrs(msg, "cc") == cc
    assert_body(msg, "x" * 2000 + "\r\nshort\r\n")
    # The Drafts copy keeps Bcc.
    raw, _ = compose(tmp_path, to=to[:1], bcc=bcc, keep_bcc=True, name="d")
    assert addrs(parse(raw), "bcc") == bcc


def test_attachments_byte_exact(tmp_path):
    every = bytes(range(256)) * 5
    files = [
        ("every-byte.bin", None, every, "application/octet-stream"),
        ("Bericht_Übersicht_2025.pdf", None, b"%PDF-1.4\n" + every,
         "application/pdf"),
        ("写真 " * 12 + ".png", None, b"\x89PNG\r\n\x1a\n", "image/png"),
        ("notes.TXT", "text/plain", b"line\r\nline\n", "text/plain"),
        ('quote"and\\back.dat', "application/x-custom", b"", "application/x-custom"),
        ("x" * 200 + ".zip", None, every[:7], "application/zip"),
    ]
    body = "See attached.\n--=_rm_" + RANDOM[16:].hex() + "\nnot a boundary\n"
    raw, _ = compose(tmp_path, to=[("", "bob@example.com")], subject="files",
                     body=body, attach=[(f, t, d) for f, t, d, _ in files])
    check_lines(raw)
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/mixed"
    assert_body(msg, body)
    got = list(msg.iter_attachments())
    assert len(got) == len(files)
    for part, (fname, _, data, ctype) in zip(got, files):
        assert part.get_filename() == fname
        assert part.get_content_type() == ctype
        assert part["content-transfer-encoding"] == "base64"
        assert part.get_content_disposition() == "attachment"
        assert part.get_payload(decode=True) == data
        # The name= parameter for clients that predate RFC 2231.
        assert part.get_param("name") == fname
    # Part headers fold at 78 too; base64 lines are 76 characters.
    for ln in raw.split(b"\r\n"):
        if ln[:1] in (b" ", b"C"):
            assert len(ln) <= 78, ln
    assert any(len(ln) == 76 for ln in raw.split(b"\r\n"))


def test_body_encodings(tmp_path):
    cases = {
        "empty": "",
        "ascii": "Hello,\nplain text.\n",
        "crlf_mixed": "a\r\nb\rc\nd",
        "latin": "Die Größe ist 5 € = 5 Euro; mostly ASCII text here.  "
                 "trailing space \nnext\ttab\t\n",
        "cjk": "日本語のテキスト。" * 50,
        "longline": "y" * 1500,
        "nul": "nul\x00byte and \x01 control",
    }
    for name, text in cases.items():
        raw, _ = compose(tmp_path, to=[("", "bob@example.com")],
                         subject=name, body=text, name=name)
        check_lines(raw)
        msg = parse(raw)
        assert_body(msg, text)
        cte = msg["content-transfer-encoding"]
        if name in ("empty", "ascii", "crlf_mixed"):
            assert cte == "7bit"
        elif name == "cjk":
            assert cte == "base64"
        else:
            assert cte == "quoted-printable"


def test_reply_headers_and_receipt(tmp_path):
    refs = " ".join("<ref%d.%s@host.example>" % (i, "z" * 20)
                    for i in range(12))
    raw, _ = compose(tmp_path, frm=("Älice", "alice@example.org"),
                     to=[("", "bob@example.com")], subject="Re: x",
                     irt="<orig@host.example>", refs=refs, receipt=True)
    check_lines(raw)
    msg = parse(raw)
    assert msg["in-reply-to"] == "<orig@host.example>"
    assert msg["references"].split() == refs.split()
    # An address field to RFC 8098, unstructured to Python's registry.
    assert addrs(msg, "disposition-notification-to") == \
        [("Älice", "alice@example.org")]


INJECTIONS = [
    dict(subject="hi\r\nBcc: victim@example.com"),
    dict(subject="hi\nX-Evil: 1"),
    dict(subject="hi\rX-Evil: 1"),
    dict(frm=("Alice\r\nBcc: v@example.com", "alice@example.org")),
    dict(to=[("", "bob@example.com>\r\nBcc: <v@example.com")]),
    dict(to=[("", "bob@example.com, v@example.com")]),
    dict(to=[("", "not-an-address")]),
    dict(to=[("", "b\u00f6b@example.com")]),
    dict(to=[("", "@relay.example:bob@example.com")]),
    dict(attach=[("a\r\nContent-Type: text/html", None, b"x")]),
    dict(attach=[("ok.bin", "text/plain\r\nX-Evil: 1", b"x")]),
    dict(attach=[("ok.eml", "message/rfc822", b"x")]),
    dict(irt="<a@b>\r\nX-Evil: 1"),
    dict(subject=b"bad utf-8 \xff\xfe"),
]


@pytest.mark.parametrize("case", INJECTIONS)
def test_header_injection_refused(tmp_path, case):
    kw = dict(to=[("", "bob@example.com")], subject="s", body="b")
    kw.update(case)
    with pytest.raises(RuntimeError, match="invalid"):
        compose(tmp_path, **kw)


def test_specials_are_quoted_not_injected(tmp_path):
    to = [('Evil <x@evil.example>, "', "bob@example.com"),
          ("=?utf-8?B?RXZpbA==?=", "c@example.com")]
    raw, _ = compose(tmp_path, to=to, subject="s", body="b")
    check_lines(raw)
    assert addrs(parse(raw), "to") == to


def test_max_size(tmp_path):
    with pytest.raises(RuntimeError, match="limit"):
        compose(tmp_path, attach=[("big.bin", None, b"\0" * 3000)],
                max_size=2000)
    raw, _ = compose(tmp_path, attach=[("big.bin", None, b"\0" * 3000)],
                     max_size=10000)
    assert len(raw) <= 10000
