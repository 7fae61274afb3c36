"""node/mime_parse.c checked against Python's email package.

Messages are built with email.message.EmailMessage (non-ASCII headers,
attachments, nested multiparts) or written by hand in the shapes real
mailers send; tests/tools/mime_parse_demo (MIME_PARSE_BIN) prints its parse
as JSON and writes each attachment, decoded through the ranged reader, to
a file. Python's parser reads the same bytes, and the two must agree: the
subject, From / To / Cc names and addresses, the Date, the Message-ID, the
body text (the first text/plain part that is not an attachment, else the
first text/html), and each attachment's name, type, size and sha256.
"""
import email
import email.headerregistry
import email.policy
import email.utils
import hashlib
import json
import os
import subprocess
from email.message import EmailMessage
from email.parser import BytesParser

import pytest


def _find_bin():
    """MIME_PARSE_BIN (set by ctest), else the tool in the build tree next
    to RELAYMESH_BIN."""
    if os.environ.get("MIME_PARSE_BIN"):
        return os.environ["MIME_PARSE_BIN"]
    rm = os.environ.get("RELAYMESH_BIN")
    if rm:
        cand = os.path.join(os.path.dirname(rm), "tests", "mime_parse_demo")
        if os.access(cand, os.X_OK):
            return cand
    return None


BIN = _find_bin()

pytestmark = pytest.mark.skipif(
    not BIN, reason="MIME_PARSE_BIN not set (run through ctest)")


def run_demo(tmp_path, raw, chunk=None, name="msg"):
    """The demo's JSON and the decoded attachments (bytes, in order)."""
    path = tmp_path / (name + ".eml")
    path.write_bytes(raw)
    out = tmp_path / (name + ".atts")
    out.mkdir()
    cmd = [BIN, "-d", str(out)]
    if chunk is not None:
        cmd += ["-c", str(chunk)]
    cmd.append(str(path))
    p = subprocess.run(cmd, capture_output=True, timeout=120)
    assert p.returncode == 0, (p.returncode, p.stderr.decode(errors="replace"))
    res = json.loads(p.stdout.decode("utf-8"))
    datas = [(out / ("att-%d" % a["index"])).read_bytes()
             for a in res["attachments"]]
    return res, datas


def _text(s):
    """A header string from Python: raw 8-bit octets come back as
    surrogates; they are UTF-8."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _addrs(msg, field):
    h = msg[field]
    if h is None:
        return []
    return [{"name": _text(a.display_name), "address": _text(a.addr_spec)}
            for a in h.addresses]


def expected(raw):
    """What Python's parser reads, with the reader's rules for choosing
    the body and the attachments (mime_parse.h)."""
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    plain = html = None
    atts = []

    def walk(part):
        nonlocal plain, html
        ct = part.get_content_type()
        if ct in ("message/rfc822", "message/global"):
            atts.append((part, part.get_filename() or "message.eml"))
            return
        if part.get_content_maintype() == "multipart" and part.is_multipart():
            for sub in part.iter_parts():
                walk(sub)
            return
        fn = part.get_filename()
        if (part.get_content_disposition() == "attachment" or fn
                or part.get_content_maintype() != "text"):
            atts.append((part, fn or ""))
        elif ct == "text/plain" and plain is None:
            plain = part
        elif ct == "text/html" and html is None:
            html = part

    walk(msg)
    body = plain if plain is not None else html
    frm = _addrs(msg, "from")
    date = 0
    if msg["date"] is not None and msg["date"].datetime is not None:
        date = int(msg["date"].datetime.timestamp())
    exp = {
        "from": frm[0] if frm else {"name": "", "address": ""},
        "to": _addrs(msg, "to"),
        "cc": _addrs(msg, "cc"),
        "subject": _text(str(msg["subject"] or "")),
        "date": date,
        "message_id": str(msg["message-id"] or "").strip(),
        "body": body.get_content() if body is not None else "",
        "html": body is html and body is not None,
        "attachments": [],
    }
    for part, name in atts:
        if part.get_content_maintype() == "message":
            data = None  # checked apart: Python gives a Message
        else:
            data = part.get_payload(decode=True)
        exp["attachments"].append({"name": name,
                                   "type": part.get_content_type(),
                                   "data": data, "part": part})
    return exp


def check(tmp_path, raw, chunk=None, name="msg"):
    """Runs the demo and compares everything with Python's reading."""
    res, datas = run_demo(tmp_path, raw, chunk, name)
    exp = expected(raw)
    assert res["from"] == exp["from"]
    assert res["to"] == exp["to"]
    assert res["cc"] == exp["cc"]
    assert res["subject"] == exp["subject"]
    assert res["date"] == exp["date"]
    assert res["message_id"] == exp["message_id"]
    assert res["body"] == exp["body"]
    assert bool(res["flags"] & 1) == exp["html"]
    assert res["body_size"] == len(res["body"].encode("utf-8"))
    assert len(res["attachments"]) == len(exp["attachments"])
    for i, (a, e) in enumerate(zip(res["attachments"], exp["attachments"])):
        assert a["index"] == i
        assert a["name"] == e["name"]
        assert a["type"] == e["type"]
        assert a["size"] == len(datas[i])
        if e["data"] is not None:
            assert a["size"] == len(e["data"])
            assert (hashlib.sha256(datas[i]).hexdigest()
                    == hashlib.sha256(e["data"]).hexdigest())
        else:
            inner = BytesParser(policy=email.policy.default).parsebytes(
                datas[i])
            want = e["part"].get_payload(0)
            assert str(inner["subject"]) == str(want["subject"])
    # The header block: the fields up to the empty line, as text.
    hdr = raw[res["hdr_off"]:res["hdr_off"] + res["hdr_len"]]
    assert raw[res["hdr_off"] + res["hdr_len"]:].startswith(
        (b"\r\n", b"\n"))
    assert res["headers"] == hdr.decode("utf-8")
    return res, datas


def _smtp(msg):
    return msg.as_bytes(policy=email.policy.SMTP)


# ---- messages built with EmailMessage ---------------------------------

def test_non_ascii_headers_and_body(tmp_path):
    m = EmailMessage()
    m["From"] = email.headerregistry.Address("Zoë Saldaña", "zoe",
                                             "example.net")
    m["To"] = [email.headerregistry.Address("Jörg Müller", "joerg",
                                            "example.org"),
               email.headerregistry.Address("", "plain", "example.com"),
               email.headerregistry.Address("Doe, John", "jd", "x.test")]
    m["Cc"] = email.headerregistry.Address("山田", "yamada", "example.jp")
    m["Subject"] = ("Grüße aus München – 日本語のテスト, and a subject long "
                    "enough to be folded over several lines by the generator")
    m["Date"] = "Sat, 29 Nov 2025 09:31:37 +0100"
    m["Message-ID"] = "<abc.123@example.net>"
    m.set_content("Hallö Jörg,\n\nthe figures: 5 €.\n日本語\n")
    res, _ = check(tmp_path, _smtp(m))
    assert res["subject"].startswith("Grüße aus München – 日本語")
    assert res["to"][0] == {"name": "Jörg Müller",
                            "address": "joerg@example.org"}
    assert res["date"] == 1764405097
    assert res["body"] == "Hallö Jörg,\r\n\r\nthe figures: 5 €.\r\n日本語\r\n"


def test_attachments_binary_and_non_ascii_names(tmp_path):
    m = EmailMessage()
    m["From"] = "alice@example.org"
    m["To"] = "bob@example.net"
    m["Subject"] = "files"
    m.set_content("See attached.\n")
    blob = bytes((i * 37 + (i >> 7)) & 255 for i in range(300000))
    m.add_attachment(blob, maintype="application", subtype="octet-stream",
                     filename="Überweisung März 2024 – señor.bin")
    m.add_attachment(bytes(range(256)) * 3, maintype="application",
                     subtype="pdf", filename="report.pdf")
    m.add_attachment("col1;col2\nä;ö\n", subtype="csv",
                     filename="daten.csv")
    m.add_attachment(b"\x89PNG\r\n\x1a\n" + bytes(100), maintype="image",
                     subtype="png", disposition="inline")
    # Small chunks: every attachment is read in many ranges.
    res, datas = check(tmp_path, _smtp(m), chunk=4093)
    assert [a["name"] for a in res["attachments"]] == [
        "Überweisung März 2024 – señor.bin", "report.pdf", "daten.csv", ""]
    assert datas[0] == blob
    assert res["attachments"][3]["type"] == "image/png"


def test_nested_alternative_related(tmp_path):
    m = EmailMessage()
    m["From"] = "Ann <ann@example.org>"
    m["To"] = "Ben <ben@example.net>"
    m["Subject"] = "nested"
    m.set_content("plain version ✓\n")
    m.add_alternative("<html><body><p>html version ✓</p>"
                      "<img src='cid:logo'></body></html>\n", subtype="html")
    html = m.get_payload()[1]
    html.add_related(b"GIF89a" + bytes(50), maintype="image", subtype="gif",
                     cid="<logo>")
    m.add_attachment(b"%PDF-1.7\n" + bytes(range(200)), maintype="application",
                     subtype="pdf", filename="a.pdf")
    res, _ = check(tmp_path, _smtp(m))
    assert res["body"] == "plain version ✓\r\n"
    assert [a["type"] for a in res["attachments"]] == ["image/gif",
                                                       "application/pdf"]


def test_html_only(tmp_path):
    m = EmailMessage()
    m["From"] = "x@example.org"
    m["Subject"] = "html"
    m.set_content("<p>only html – ü</p>\n", subtype="html", charset="utf-8",
                  cte="quoted-printable")
    res, _ = check(tmp_path, _smtp(m))
    assert res["flags"] & 1
    assert res["body"] == "<p>only html – ü</p>\r\n"


def test_forwarded_message(tmp_path):
    inner = EmailMessage()
    inner["From"] = "orig@example.org"
    inner["Subject"] = "the original"
    inner.set_content("original text\n")
    m = EmailMessage()
    m["From"] = "fwd@example.org"
    m["Subject"] = "Fwd: the original"
    m.set_content("see below\n")
    m.add_attachment(inner)
    res, datas = check(tmp_path, _smtp(m))
    assert res["attachments"][0]["name"] == "message.eml"
    assert res["attachments"][0]["type"] == "message/rfc822"


def test_base64_latin1_body(tmp_path):
    m = EmailMessage()
    m["From"] = "x@example.org"
    m["Subject"] = "latin"
    m.set_content("Grüße, Ærøskøbing\n" * 40, charset="iso-8859-1",
                  cte="base64")
    check(tmp_path, _smtp(m))


# ---- real-world shapes, written by hand --------------------------------

OUTLOOK = (
    b"Received: from mail.example.com (mail.example.com [192.0.2.1])\r\n"
    b"\tby mx.example.net with ESMTPS id 1234\r\n"
    b"\tfor <bob@example.net>; Tue, 14 Nov 2023 23:13:21 +0100\r\n"
    b"From: =?iso-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.com>\r\n"
    b"To: \"Bob Smith\" <bob@example.net>, <carol@example.net>\r\n"
    b"CC: =?utf-8?B?0JjQstCw0L0=?= <ivan@example.ru>\r\n"
    b"Subject: =?iso-8859-1?Q?AW:_Rechnung_f=FCr_M=E4rz?=\r\n"
    b"Thread-Topic: Rechnung\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <AM0PR01MB1234.eurprd01.prod.outlook.com>\r\n"
    b"Accept-Language: de-DE, en-US\r\n"
    b"Content-Type: multipart/mixed;\r\n"
    b"\tboundary=\"_004_AM0PR01MB1234eurprd01prod_\"\r\n"
    b"MIME-Version: 1.0\r\n"
    b"\r\n"
    b"--_004_AM0PR01MB1234eurprd01prod_\r\n"
    b"Content-Type: multipart/alternative;\r\n"
    b"\tboundary=\"_000_AM0PR01MB1234eurprd01prod_\"\r\n"
    b"\r\n"
    b"--_000_AM0PR01MB1234eurprd01prod_\r\n"
    b"Content-Type: text/plain; charset=\"iso-8859-1\"\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Hallo Bob,=0A=0Aanbei die Rechnung f=FCr M=E4rz. Dies ist eine lange Ze=\r\n"
    b"ile, die weich umbrochen wird.\r\n"
    b"\r\n"
    b"Gr=FC=DFe\r\n"
    b"J=F6rg\r\n"
    b"\r\n"
    b"--_000_AM0PR01MB1234eurprd01prod_\r\n"
    b"Content-Type: text/html; charset=\"iso-8859-1\"\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<html><body><p>Hallo Bob</p></body></html>\r\n"
    b"\r\n"
    b"--_000_AM0PR01MB1234eurprd01prod_--\r\n"
    b"\r\n"
    b"--_004_AM0PR01MB1234eurprd01prod_\r\n"
    b"Content-Type: application/pdf;\r\n"
    b"\tname=\"=?utf-8?B?UmVjaG51bmcgTcOkcnogMjAyMy5wZGY=?=\"\r\n"
    b"Content-Description: =?utf-8?B?UmVjaG51bmcgTcOkcnogMjAyMy5wZGY=?=\r\n"
    b"Content-Disposition: attachment;\r\n"
    b"\tfilename=\"=?utf-8?B?UmVjaG51bmcgTcOkcnogMjAyMy5wZGY=?=\"; size=12;\r\n"
    b"\tcreation-date=\"Tue, 14 Nov 2023 22:13:00 GMT\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjcKJeLjz9MK\r\n"
    b"\r\n"
    b"--_004_AM0PR01MB1234eurprd01prod_--\r\n"
)

GMAIL = (
    b"MIME-Version: 1.0\r\n"
    b"From: Dana <dana@gmail.example>\r\n"
    b"Date: Wed, 1 Mar 2023 08:00:00 -0800\r\n"
    b"Message-ID: <CAF=abc+def@mail.gmail.example>\r\n"
    b"Subject: =?UTF-8?Q?Caf=C3=A9_=E2=98=95_tomorrow=3F?=\r\n"
    b"To: team@example.org\r\n"
    b"Content-Type: multipart/alternative; boundary=\"000000000000a1b2c3\"\r\n"
    b"\r\n"
    b"--000000000000a1b2c3\r\n"
    b"Content-Type: text/plain; charset=\"UTF-8\"\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Caf=C3=A9 at 9? =E2=98=95\r\n"
    b"\r\n"
    b"--000000000000a1b2c3\r\n"
    b"Content-Type: text/html; charset=\"UTF-8\"\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<div dir=3D\"ltr\">Caf=C3=A9 at 9? =E2=98=95</div>\r\n"
    b"\r\n"
    b"--000000000000a1b2c3--\r\n"
)

# RFC 2231 names with continuations, a list with a group and 8-bit UTF-8
# headers (RFC 6532), LF line ends, a preamble and an epilogue.
LIST = (
    "From: \"Ünïcode Sender\" <sender@example.org>\n"
    "To: Liste: a@example.org, B <b@example.org>;, c@example.org\n"
    "Subject: [liste] Prüfung\n"
    "Date: 2 Jan 06 15:04 EST\n"
    "Message-Id: <list.1@example.org>\n"
    "Content-Type: multipart/mixed; boundary=XyZ\n"
    "\n"
    "This is a multi-part message in MIME format.\n"
    "--XyZ\n"
    "Content-Type: text/plain; charset=utf-8; format=flowed\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "Grüße an alle.\n"
    "--XyZ\n"
    "Content-Type: application/vnd.oasis.opendocument.text\n"
    "Content-Disposition: attachment;\n"
    " filename*0*=utf-8''Pr%C3%BCfungsordnung%20;\n"
    " filename*1*=%E2%80%93%20Entwurf;\n"
    " filename*2=\" 2.odt\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "UEsDBBQAAAAIAA==\n"
    "--XyZ\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "Content-Disposition: attachment\n"
    "\n"
    "footer as an attachment\n"
    "--XyZ--\n"
    "epilogue\n"
).encode("utf-8")


@pytest.mark.parametrize("name,raw", [("outlook", OUTLOOK),
                                      ("gmail", GMAIL), ("list", LIST)])
def test_real_world_shapes(tmp_path, name, raw):
    res, datas = check(tmp_path, raw, name=name)
    if name == "outlook":
        assert res["from"]["name"] == "Jörg Müller"
        assert res["subject"] == "AW: Rechnung für März"
        assert res["attachments"][0]["name"] == "Rechnung März 2023.pdf"
        assert datas[0].startswith(b"%PDF-1.7")
        assert "anbei die Rechnung für März" in res["body"]
    elif name == "gmail":
        assert res["subject"] == "Café ☕ tomorrow?"
        assert res["body"] == "Café at 9? ☕\r\n"
    else:
        assert res["attachments"][0]["name"] == \
            "Prüfungsordnung – Entwurf 2.odt"
        assert [a["address"] for a in res["to"]] == [
            "a@example.org", "b@example.org", "c@example.org"]


def test_adjacent_encoded_words_in_a_name(tmp_path):
    """RFC 2047 §6.2: white space between adjacent encoded-words is
    dropped, in a display name too. (Python keeps it there, CPython
    gh-128110, so this is checked against the RFC, not against it.)"""
    raw = (b"From: =?utf-8?b?5bGx55Sw?= =?utf-8?b?5aSq6YOO?= <y@x.jp>\r\n"
           b"Subject: =?utf-8?q?a?= =?utf-8?q?b?=\r\n\r\nx\r\n")
    res, _ = run_demo(tmp_path, raw)
    assert res["from"] == {"name": "山田太郎", "address": "y@x.jp"}
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert res["subject"] == str(msg["subject"]) == "ab"


def test_broken_input(tmp_path):
    """Damaged messages parse best-effort; only an empty file is refused."""
    res, _ = run_demo(tmp_path, b"no header here\r\njust text", name="nohdr")
    assert res["body"] == "no header here\r\njust text"
    assert res["flags"] & 2
    raw = (b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\n"
           b"first\r\n--q\r\nContent-Type: image/gif\r\n\r\nGIF89a")
    res, datas = run_demo(tmp_path, raw, name="unclosed")
    assert res["body"] == "first"
    assert datas == [b"GIF89a"]
    assert res["flags"] & 0x40
    path = tmp_path / "empty.eml"
    path.write_bytes(b"")
    p = subprocess.run([BIN, str(path)], capture_output=True, timeout=60)
    assert p.returncode == 2
    assert json.loads(p.stdout)["why"].startswith("empty message")
