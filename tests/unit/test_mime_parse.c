/*
 * Unit tests for node/mime_parse.c: the envelope (From, To, Cc, Bcc in
 * every form RFC 5322 and its obsolete syntax allow, the recipient and
 * name bounds), RFC 2047 subjects in several charsets, dates, the
 * Message-ID, the header block, the choice and decoding of the body text
 * (transfer encodings, charsets, replacement of bad octets), the
 * attachments (RFC 2231 / RFC 2047 names, types, sizes, data by range),
 * the bounds, damaged input, and a round trip through node/mime_compose.
 * Every expected value is exact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "node/mime_compose.h"
#include "node/mime_parse.h"

#define BUF_MAX (64 * 1024 * 1024)

static void
parse_ok(const char *s, struct mime_parse_msg *m)
{
    assert_int_equal(mime_parse(s, strlen(s), m), 0);
}

/* Attachment i decoded whole, through the ranged reader. */
static void
att_all(const struct mime_parse_msg *m, unsigned i, struct buf *out)
{
    buf_init(out, BUF_MAX);
    assert_int_equal(mime_parse_att_read(m, i, 0, BUF_MAX, out), 0);
    assert_int_equal(out->len, m->atts[i].size);
}

static int
utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t k;

        if (p[i] == 0)
            return 0;
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        k = mime_compose_utf8_len(p + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* ---- envelope ------------------------------------------------------- */

static const char SIMPLE[] = "Return-Path: <alice@example.org>\r\n"
                             "From: Alice Example <alice@example.org>\r\n"
                             "To: bob@example.net\r\n"
                             "Subject: Lunch\r\n"
                             "Date: Mon, 2 Jan 2006 15:04:05 -0700\r\n"
                             "Message-ID: <1234@example.org>\r\n"
                             "\r\n"
                             "See you at noon.\r\n";

static void
test_simple(void **state)
{
    struct mime_parse_msg m;

    (void)state;
    parse_ok(SIMPLE, &m);
    assert_string_equal(m.from.name, "Alice Example");
    assert_string_equal(m.from.address, "alice@example.org");
    assert_int_equal(m.n_to, 1);
    assert_string_equal(m.to[0].name, "");
    assert_string_equal(m.to[0].address, "bob@example.net");
    assert_int_equal(m.n_cc, 0);
    assert_int_equal(m.n_bcc, 0);
    assert_string_equal(m.subject, "Lunch");
    assert_int_equal(m.date, 1136239445);
    assert_string_equal(m.message_id, "<1234@example.org>");
    assert_int_equal(m.hdr_off, 0);
    assert_int_equal(m.hdr_len, strstr(SIMPLE, "\r\n\r\n") + 2 - SIMPLE);
    assert_string_equal(m.body, "See you at noon.\r\n");
    assert_int_equal(m.body_len, 18);
    assert_int_equal(m.n_atts, 0);
    assert_int_equal(m.flags, 0);
    assert_string_equal(m.why, "");
    assert_ptr_equal(m.in, (const unsigned char *)SIMPLE);
    mime_parse_cleanup(&m);
    mime_parse_cleanup(&m); /* idempotent */
}

static void
test_bare_lf(void **state)
{
    const char *s = "From: a@b.c\nSubject: one\n two\nCc: x@y.z\n\nline 1\n"
                    "line 2\n";
    struct mime_parse_msg m;

    (void)state;
    parse_ok(s, &m);
    assert_string_equal(m.from.address, "a@b.c");
    /* Folding: the line end goes, the white space stays (RFC 5322
       §2.2.3). */
    assert_string_equal(m.subject, "one two");
    assert_int_equal(m.n_cc, 1);
    assert_string_equal(m.cc[0].address, "x@y.z");
    assert_int_equal(m.hdr_len, strstr(s, "\n\n") + 1 - s);
    assert_string_equal(m.body, "line 1\nline 2\n");
    mime_parse_cleanup(&m);
}

static void
test_addresses(void **state)
{
    const char *s =
        "From: \"Doe, \\\"J\\\"\" <john@example.com> (the boss)\r\n"
        "To: plain@example.com, Mary Smith <mary@x.test>,\r\n"
        "  undisclosed-recipients:;, Friends: a@x.test, \"B b\" <b@x.test>;"
        ",\r\n"
        "  c@x.test (Cee Comment), <d@x.test>, John Q. Public"
        " <jqp@x.test>,\r\n"
        "  <@relay1,@relay2:route@x.test>, john . doe @ example . com,\r\n"
        "  =?utf-8?q?J=C3=B6rg?= <joerg@x.test>, \"=?iso-8859-1?q?Ren=E9?=\""
        " <rene@x.test>, Mailer Daemon, root, \"quoted local\"@x.test,"
        " ,, <>\r\n"
        "Cc: =?utf-8?b?5bGx55Sw?= =?utf-8?b?5aSq6YOO?= <yamada@x.test>\r\n"
        "Bcc: hidden@x.test\r\n"
        "\r\n";
    struct mime_parse_msg m;

    (void)state;
    parse_ok(s, &m);
    assert_string_equal(m.from.name, "Doe, \"J\"");
    assert_string_equal(m.from.address, "john@example.com");
    assert_int_equal(m.n_to, 15);
    assert_string_equal(m.to[0].name, "");
    assert_string_equal(m.to[0].address, "plain@example.com");
    assert_string_equal(m.to[1].name, "Mary Smith");
    assert_string_equal(m.to[1].address, "mary@x.test");
    /* The empty group gives nothing; the members of a group count. */
    assert_string_equal(m.to[2].address, "a@x.test");
    assert_string_equal(m.to[3].name, "B b");
    assert_string_equal(m.to[3].address, "b@x.test");
    /* An addr-spec with a comment: the comment is the name. */
    assert_string_equal(m.to[4].name, "Cee Comment");
    assert_string_equal(m.to[4].address, "c@x.test");
    assert_string_equal(m.to[5].name, "");
    assert_string_equal(m.to[5].address, "d@x.test");
    assert_string_equal(m.to[6].name, "John Q. Public");
    assert_string_equal(m.to[6].address, "jqp@x.test");
    /* Obsolete route (RFC 5322 §4.4) dropped; obsolete spacing. */
    assert_string_equal(m.to[7].address, "route@x.test");
    assert_string_equal(m.to[8].address, "john.doe@example.com");
    assert_string_equal(m.to[9].name, "J\xc3\xb6rg");
    assert_string_equal(m.to[9].address, "joerg@x.test");
    /* An encoded-word inside quotes, decoded as most readers do. */
    assert_string_equal(m.to[10].name, "Ren\xc3\xa9");
    assert_string_equal(m.to[10].address, "rene@x.test");
    /* Words without '@' or '<': a name alone; one word: an address. */
    assert_string_equal(m.to[11].name, "Mailer Daemon");
    assert_string_equal(m.to[11].address, "");
    assert_string_equal(m.to[12].name, "");
    assert_string_equal(m.to[12].address, "root");
    assert_string_equal(m.to[13].address, "\"quoted local\"@x.test");
    /* ",," is nothing; "<>" is a mailbox with neither. */
    assert_string_equal(m.to[14].name, "");
    assert_string_equal(m.to[14].address, "");
    assert_int_equal(m.n_cc, 1);
    /* Adjacent encoded-words: the space between them goes. */
    assert_string_equal(m.cc[0].name, "\xe5\xb1\xb1\xe7\x94\xb0"
                                      "\xe5\xa4\xaa\xe9\x83\x8e");
    assert_string_equal(m.cc[0].address, "yamada@x.test");
    assert_int_equal(m.n_bcc, 1);
    assert_string_equal(m.bcc[0].address, "hidden@x.test");
    mime_parse_cleanup(&m);
}

static void
test_address_bounds(void **state)
{
    struct buf b;
    struct mime_parse_msg m;
    char local[300];

    (void)state;
    buf_init(&b, BUF_MAX);
    /* An address of 255 octets has no use: "" but the name stays. One
       of 254 is kept. */
    memset(local, 'a', sizeof(local));
    assert_int_equal(
        buf_appendf(&b, "From: Long <%.*s@x.test>\r\n", 248, local), 0);
    assert_int_equal(buf_appendf(&b, "To: Ok <%.*s@x.test>\r\n", 247, local),
                     0);
    /* A name of 300 octets: 2-octet characters, cut at 256 between
       them (RFC 3629: never inside one). */
    assert_int_equal(buf_append(&b, "Cc: \"x", 6), 0);
    for (int i = 0; i < 150; i++)
        assert_int_equal(buf_append(&b, "\xc3\xa9", 2), 0);
    assert_int_equal(buf_appendf(&b, "\" <c@x.test>\r\n\r\n"), 0);
    assert_int_equal(mime_parse(b.data, b.len, &m), 0);
    assert_string_equal(m.from.name, "Long");
    assert_string_equal(m.from.address, "");
    assert_int_equal(strlen(m.to[0].address), 254);
    assert_int_equal(strlen(m.cc[0].name), 255);
    assert_true(utf8_ok(m.cc[0].name, 255));
    assert_string_equal(m.cc[0].address, "c@x.test");
    mime_parse_cleanup(&m);

    /* 300 recipients over To, Cc and Bcc: 256 kept, in that order. */
    buf_reset(&b);
    assert_int_equal(buf_appendf(&b, "To: "), 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(buf_appendf(&b, "%sr%d@x.test", i ? ",\r\n " : "", i),
                         0);
    assert_int_equal(buf_appendf(&b, "\r\nCc: "), 0);
    for (int i = 200; i < 250; i++)
        assert_int_equal(
            buf_appendf(&b, "%sr%d@x.test", i > 200 ? ", " : "", i), 0);
    assert_int_equal(buf_appendf(&b, "\r\nBcc: "), 0);
    for (int i = 250; i < 300; i++)
        assert_int_equal(
            buf_appendf(&b, "%sr%d@x.test", i > 250 ? ", " : "", i), 0);
    assert_int_equal(buf_appendf(&b, "\r\n\r\nhi\r\n"), 0);
    assert_int_equal(mime_parse(b.data, b.len, &m), 0);
    assert_int_equal(m.n_to, 200);
    assert_int_equal(m.n_cc, 50);
    assert_int_equal(m.n_bcc, 6);
    assert_string_equal(m.bcc[5].address, "r255@x.test");
    assert_true(m.flags & MIME_PARSE_F_RCPTS_CUT);
    assert_string_equal(m.why, "too many recipients");
    mime_parse_cleanup(&m);
    buf_cleanup(&b);
}

static void
test_subject(void **state)
{
    static const struct {
        const char *raw, *want;
    } cases[] = {
        {"plain text", "plain text"},
        {"=?UTF-8?B?SMOpbGxv?=", "H\xc3\xa9llo"},
        {"=?utf-8?q?caf=C3=A9_au_lait?=", "caf\xc3\xa9 au lait"},
        /* Space between encoded-words dropped, kept beside text. */
        {"=?utf-8?q?a?= =?utf-8?q?b?=  c =?utf-8?q?d?=", "ab  c d"},
        /* A character split over two words still reads whole. */
        {"=?utf-8?B?w6k=?= =?utf-8?B?4oK=?= =?utf-8?B?rA==?=",
         "\xc3\xa9\xe2\x82\xac"},
        {"=?iso-8859-1?q?Gr=FC=DFe?=", "Gr\xc3\xbc\xc3\x9f"
                                       "e"},
        {"=?windows-1252?Q?=80_5?=", "\xe2\x82\xac 5"},
        {"=?koi8-r?b?8NLJ18XU?=", "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5"
                                  "\xd1\x82"},
        {"=?iso-2022-jp?B?GyRCJUYlOSVIGyhC?=",
         "\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88"},
        /* RFC 2231 §5: a language after the charset. */
        {"=?utf-8*en?q?hi?=", "hi"},
        /* Unknown charset: read as UTF-8, a bad octet U+FFFD. */
        {"=?x-unknown?q?caf=E9?=", "caf\xef\xbf\xbd"},
        /* Octets invalid in the charset: U+FFFD, never an error. */
        {"=?utf-8?q?a=FFb?=", "a\xef\xbf\xbd"
                              "b"},
        /* Not an encoded-word: left as it is. */
        {"=?utf-8?x?abc?= =?bad", "=?utf-8?x?abc?= =?bad"},
        /* Inside a word, as most readers take it. */
        {"Re:=?utf-8?q?x?=", "Re:x"},
        /* Raw 8-bit: UTF-8 when valid, else Latin-1. */
        {"Gr\xc3\xbc\xc3\x9f"
         "e",
         "Gr\xc3\xbc\xc3\x9f"
         "e"},
        {"Gr\xfc\xdf"
         "e",
         "Gr\xc3\xbc\xc3\x9f"
         "e"},
        /* Decoded CR LF becomes SP; NUL goes. */
        {"=?utf-8?q?a=0D=0Ab=00c?=", "a  bc"},
    };
    struct mime_parse_msg m;
    struct buf b;

    (void)state;
    buf_init(&b, BUF_MAX);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        buf_reset(&b);
        assert_int_equal(
            buf_appendf(&b, "Subject: %s\r\n\r\nbody\r\n", cases[i].raw), 0);
        assert_int_equal(mime_parse(b.data, b.len, &m), 0);
        if (strcmp(m.subject, cases[i].want) != 0)
            fail_msg("case %zu: \"%s\" gave \"%s\"", i, cases[i].raw,
                     m.subject);
        mime_parse_cleanup(&m);
    }

    /* Past 4096 octets: cut at a character boundary. */
    buf_reset(&b);
    assert_int_equal(buf_appendf(&b, "Subject: a"), 0);
    for (int i = 0; i < 3000; i++)
        assert_int_equal(buf_append(&b, "\xe2\x82\xac", 3), 0);
    assert_int_equal(buf_appendf(&b, "\r\n\r\n"), 0);
    assert_int_equal(mime_parse(b.data, b.len, &m), 0);
    assert_int_equal(strlen(m.subject), 4096);
    assert_true(utf8_ok(m.subject, 4096));
    mime_parse_cleanup(&m);

    /* No Subject: "". */
    parse_ok("From: a@b\r\n\r\nx", &m);
    assert_string_equal(m.subject, "");
    mime_parse_cleanup(&m);
    buf_cleanup(&b);
}

static void
test_date(void **state)
{
    static const struct {
        const char *s;
        int64_t t;
    } ok[] = {
        {"Mon, 2 Jan 2006 15:04:05 -0700", 1136239445},
        {"2 Jan 06 15:04 EST", 1136232240},
        {"Thu, 01 Jan 1970 00:00:01 +0000", 1},
        {"Tue, 29 Feb 2000 23:59:59 +0000", 951868799},
        {"Sun, 31 Dec 2023 23:00:00 +0100", 1704060000},
        {"1 Jan 99 00:00:00 GMT", 915148800},
        {"Wed, 15 Nov 2023 22:13:20 Z", 1700086400},
        /* Comments, folding white space, no day name, a military zone
           (RFC 5322 §4.3: -0000), a three-digit year (+1900). */
        {"(sent) 14 Nov 2023 (x) 22:13:20 (y) +0000 (UTC)", 1700000000},
        {"14 Nov 2023 22:13:20 A", 1700000000},
        {"14 Nov 123 22:13:20 +0000", 1700000000},
        {"Tue Nov 14 22:13:20 2023", 1700000000},
        {"14 November 2023 10:13:20 PM +0000", 1700000000},
        {"14 Nov 2023", 1699920000},
    };
    static const char *const bad[] = {"",
                                      "garbage",
                                      "32 Jan 2020 00:00:00 +0000",
                                      "29 Feb 2023 00:00 +0000",
                                      "1 Jan 2020 25:00:00 +0000",
                                      "1 Foo 2020 10:00",
                                      "1 Jan 2020 10:",
                                      "1 Jan 2020 10:00 +0099"};
    int64_t t;

    (void)state;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        t = -1;
        if (mime_parse_date(ok[i].s, strlen(ok[i].s), &t) != 0 || t != ok[i].t)
            fail_msg("\"%s\": %lld, want %lld", ok[i].s, (long long)t,
                     (long long)ok[i].t);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = 42;
        if (mime_parse_date(bad[i], strlen(bad[i]), &t) != RM_E_INVAL ||
            t != 42)
            fail_msg("\"%s\" was taken", bad[i]);
    }
}

static void
test_date_and_msgid_fields(void **state)
{
    struct mime_parse_msg m;
    struct buf b;

    (void)state;
    parse_ok("Date: not a date\r\nMessage-ID: junk  <a@b> (c)\r\n\r\n", &m);
    assert_int_equal(m.date, 0);
    assert_string_equal(m.why, "the Date cannot be read");
    assert_string_equal(m.message_id, "<a@b>");
    mime_parse_cleanup(&m);

    parse_ok("Message-ID:\r\n  bare-id@host\r\n\r\n", &m);
    assert_int_equal(m.date, 0);
    assert_string_equal(m.message_id, "bare-id@host");
    mime_parse_cleanup(&m);

    /* Past 998 octets: "". */
    buf_init(&b, BUF_MAX);
    assert_int_equal(buf_appendf(&b, "Message-ID: <"), 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_append(&b, "x", 1), 0);
    assert_int_equal(buf_appendf(&b, "@h>\r\n\r\n"), 0);
    assert_int_equal(mime_parse(b.data, b.len, &m), 0);
    assert_string_equal(m.message_id, "");
    mime_parse_cleanup(&m);
    buf_cleanup(&b);
}

static void
test_header_block(void **state)
{
    const char *s = "From sender@x Mon Jan  2 15:04:05 2006\n"
                    "Subject: caf\xe9\n"
                    "X-Long: 0123456789\n"
                    "\n"
                    "body\n";
    struct mime_parse_msg m;
    struct buf b;

    (void)state;
    parse_ok(s, &m);
    /* The mbox "From " line is not part of the header. */
    assert_int_equal(m.hdr_off, strchr(s, '\n') + 1 - s);
    assert_int_equal(m.hdr_len,
                     strlen("Subject: caf\xe9\nX-Long: 0123456789\n"));
    assert_string_equal(m.subject, "caf\xc3\xa9");
    buf_init(&b, BUF_MAX);
    assert_int_equal(mime_parse_headers_text(&m, 1000, &b), 0);
    assert_string_equal(b.data, "Subject: caf\xc3\xa9\nX-Long: 0123456789\n");
    /* Cut: at the last line end that fits. */
    buf_reset(&b);
    assert_int_equal(mime_parse_headers_text(&m, 20, &b), 0);
    assert_string_equal(b.data, "Subject: caf\xc3\xa9\n");
    /* No line end fits: at a character boundary. */
    buf_reset(&b);
    assert_int_equal(mime_parse_headers_text(&m, 13, &b), 0);
    assert_int_equal(b.len, 12);
    assert_memory_equal(b.data, "Subject: caf", 12);
    buf_cleanup(&b);
    /* Past out->max: RM_E_TOOBIG, out as it was. */
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "ab", 2), 0);
    assert_int_equal(mime_parse_headers_text(&m, 1000, &b), RM_E_TOOBIG);
    assert_int_equal(b.len, 2);
    buf_cleanup(&b);
    mime_parse_cleanup(&m);
}

/* ---- body ----------------------------------------------------------- */

static void
test_body_choice(void **state)
{
    /* alternative: html first, the text/plain is chosen. */
    const char *alt = "Content-Type: multipart/alternative; boundary=b1\r\n"
                      "\r\n"
                      "--b1\r\n"
                      "Content-Type: text/html; charset=utf-8\r\n"
                      "\r\n"
                      "<p>hi</p>\r\n"
                      "--b1\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n"
                      "\r\n"
                      "hi\r\n"
                      "--b1--\r\n";
    /* Only html (inside related with an image): html, and the image is
       an attachment. */
    const char *html = "Content-Type: multipart/related; boundary=\"r r\"\r\n"
                       "\r\n"
                       "--r r\r\n"
                       "Content-Type: text/html\r\n"
                       "\r\n"
                       "<b>x</b>\r\n"
                       "--r r\r\n"
                       "Content-Type: image/PNG\r\n"
                       "Content-ID: <img1>\r\n"
                       "Content-Transfer-Encoding: base64\r\n"
                       "\r\n"
                       "iVBORw0K\r\n"
                       "--r r--\r\n";
    /* Text that is an attachment is not the body; nested alternative
       in mixed. */
    const char *mixed =
        "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
        "\r\n"
        "preamble text\r\n"
        "--outer\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Disposition: attachment\r\n"
        "\r\n"
        "attached text\r\n"
        "--outer\r\n"
        "Content-Type: text/plain; name=notes.txt\r\n"
        "\r\n"
        "named text\r\n"
        "--outer\r\n"
        "Content-Type: multipart/alternative; boundary=\"outer-inner\"\r\n"
        "\r\n"
        "--outer-inner\r\n"
        "Content-Type: text/plain; charset=\"ISO-8859-1\"\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "Gr=FC=DFe, soft=\r\n"
        " break\r\n"
        "--outer-inner\r\n"
        "Content-Type: text/html\r\n"
        "\r\n"
        "<p>html</p>\r\n"
        "--outer-inner--\r\n"
        "--outer--\r\n"
        "epilogue\r\n";
    struct mime_parse_msg m;
    struct buf b;

    (void)state;
    parse_ok(alt, &m);
    assert_string_equal(m.body, "hi");
    assert_int_equal(m.flags & MIME_PARSE_F_HTML, 0);
    assert_int_equal(m.n_atts, 0);
    mime_parse_cleanup(&m);

    parse_ok(html, &m);
    assert_string_equal(m.body, "<b>x</b>");
    assert_true(m.flags & MIME_PARSE_F_HTML);
    assert_int_equal(m.n_atts, 1);
    assert_int_equal(m.atts[0].index, 0);
    assert_string_equal(m.atts[0].name, "");
    assert_string_equal(m.atts[0].type, "image/png");
    assert_int_equal(m.atts[0].size, 6);
    att_all(&m, 0, &b);
    assert_memory_equal(b.data, "\x89PNG\r\n", 6);
    buf_cleanup(&b);
    mime_parse_cleanup(&m);

    parse_ok(mixed, &m);
    assert_string_equal(m.body, "Gr\xc3\xbc\xc3\x9f"
                                "e, soft break");
    assert_int_equal(m.n_atts, 2);
    assert_string_equal(m.atts[0].name, "");
    assert_string_equal(m.atts[0].type, "text/plain");
    assert_int_equal(m.atts[0].size, 13);
    assert_string_equal(m.atts[1].name, "notes.txt");
    att_all(&m, 1, &b);
    assert_memory_equal(b.data, "named text", 10);
    assert_int_equal(b.len, 10);
    buf_cleanup(&b);
    assert_int_equal(m.flags, 0);
    mime_parse_cleanup(&m);
}

static void
test_body_decoding(void **state)
{
    static const struct {
        const char *hdrs, *body, *want;
    } cases[] = {
        {"Content-Transfer-Encoding: base64\r\n", "aGVs\r\nbG8K\r\n",
         "hello\n"},
        /* Padding inside: concatenated encodings; junk ignored. */
        {"Content-Transfer-Encoding: BASE64\r\n", "YQ==Yg==\r\n!!Yw", "abc"},
        {"Content-Transfer-Encoding: quoted-printable\r\n",
         "a=3Db=3d c=\r\nd =  \r\ne=x=\r\n", "a=b= cd e=x"},
        {"Content-Type: text/plain; charset=windows-1252\r\n", "\x80 \x93q\x94",
         "\xe2\x82\xac \xe2\x80\x9cq\xe2\x80\x9d"},
        {"Content-Type: text/plain; charset=utf-16le\r\n"
         "Content-Transfer-Encoding: base64\r\n",
         "aABpAAAAIQA=", "hi!"},
        /* Invalid UTF-8: one U+FFFD per maximal ill-formed subpart; NUL
           dropped. */
        {"Content-Type: text/plain; charset=utf-8\r\n",
         "a\xe2\x82"
         "b\xff\xc0\xaf"
         "c\x00"
         "d\xf0\x9f\x98",
         "a\xef\xbf\xbd"
         "b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
         "cd\xef\xbf\xbd"},
        /* An unknown charset: UTF-8, else U+FFFD. */
        {"Content-Type: text/plain; charset=x-nonesuch\r\n", "\xc3\xa9\xe9",
         "\xc3\xa9\xef\xbf\xbd"},
        /* Octets invalid in a known charset. */
        {"Content-Type: text/plain; charset=shift_jis\r\n",
         "\x83\x65\x83\x58\x83\x67\xff",
         "\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88"
         "\xef\xbf\xbd"},
        /* Soft line breaks with bare LF line ends. */
        {"Content-Transfer-Encoding: quoted-printable\r\n", "ab=\ncd=\n\nef",
         "abcd\nef"},
        /* An unknown transfer encoding: as it is. */
        {"Content-Transfer-Encoding: x-uuencode\r\n", "raw=41", "raw=41"},
    };
    struct mime_parse_msg m;
    struct buf b;

    (void)state;
    buf_init(&b, BUF_MAX);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* Case 5 holds a NUL: 13 octets. */
        size_t blen = i == 5 ? 13 : strlen(cases[i].body);

        buf_reset(&b);
        assert_int_equal(buf_appendf(&b, "%s\r\n", cases[i].hdrs), 0);
        assert_int_equal(buf_append(&b, cases[i].body, blen), 0);
        assert_int_equal(mime_parse(b.data, b.len, &m), 0);
        if (strcmp(m.body, cases[i].want) != 0 ||
            m.body_len != strlen(cases[i].want))
            fail_msg("case %zu gave \"%s\"", i, m.body);
        mime_parse_cleanup(&m);
    }
    buf_cleanup(&b);
}

static void
test_body_read(void **state)
{
    struct mime_parse_msg m;
    struct buf b;

    (void)state;
    parse_ok("\r\n0123456789", &m);
    buf_init(&b, BUF_MAX);
    assert_int_equal(mime_parse_body_read(&m, 3, 4, &b), 0);
    assert_string_equal(b.data, "3456");
    assert_int_equal(mime_parse_body_read(&m, 8, 100, &b), 0);
    assert_string_equal(b.data, "345689");
    assert_int_equal(mime_parse_body_read(&m, 10, 100, &b), 0);
    assert_int_equal(mime_parse_body_read(&m, 1000, 100, &b), 0);
    assert_int_equal(b.len, 6);
    buf_cleanup(&b);
    buf_init(&b, 3);
    assert_int_equal(mime_parse_body_read(&m, 0, 100, &b), RM_E_TOOBIG);
    assert_int_equal(b.len, 0);
    buf_cleanup(&b);
    /* A start with an empty line: no header fields. */
    assert_true(m.flags & MIME_PARSE_F_NO_HEADERS);
    assert_int_equal(m.hdr_len, 0);
    mime_parse_cleanup(&m);

    assert_int_equal(mime_parse_utf8_cut("a\xc3\xa9z", 4, 2), 1);
    assert_int_equal(mime_parse_utf8_cut("a\xc3\xa9z", 4, 3), 3);
    assert_int_equal(mime_parse_utf8_cut("a\xc3\xa9z", 4, 9), 4);
    assert_int_equal(mime_parse_utf8_cut("\xe2\x82\xac", 3, 2), 0);
}

/* ---- attachments ---------------------------------------------------- */

static const char ATTS[] =
    "From: a@b\r\n"
    "Content-Type: multipart/mixed; boundary=\"==B==\"\r\n"
    "\r\n"
    "--==B==\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "The text.\r\n"
    "--==B==\r\n"
    "Content-Type: Application/PDF\r\n"
    "Content-Disposition: attachment;\r\n"
    " filename*0*=utf-8''%E2%82%AC%20Rech;\r\n"
    " filename*1*=nung%20M%C3%A4rz;\r\n"
    " filename*2=\".pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0xLjQK\r\n"
    "AAECAwQF/w==\r\n"
    "--==B==\r\n"
    "Content-Type: application/octet-stream;\r\n"
    " name=\"=?iso-8859-1?Q?r=E9sum=E9?= =?utf-8?B?LnR4dA==?=\"\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "x=00y=\r\n"
    "z\r\n"
    "--==B==\r\n"
    "Content-Type: text/csv\r\n"
    "Content-Disposition: inline; filename*=iso-8859-1'fr'caf%E9.csv\r\n"
    "\r\n"
    "a,b\r\n"
    "--==B==\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "Subject: inner\r\n"
    "\r\n"
    "Inner body.\r\n"
    "--==B==\r\n"
    "Content-Type: message/rfc822; name=\"fwd.eml\"\r\n"
    "\r\n"
    "X: y\r\n"
    "--==B==\r\n"
    "Content-Type: image/jpeg\r\n"
    "Content-Disposition: inline\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "/9j/\r\n"
    "--==B==\r\n"
    "Content-Type: application/x-thing; name=plain name.bin; x=1\r\n"
    "\r\n"
    "data\r\n"
    "--==B==--\r\n";

static void
test_attachments(void **state)
{
    static const struct {
        const char *name, *type;
        const char *data;
        size_t size;
    } want[] = {
        {"\xe2\x82\xac Rechnung M\xc3\xa4rz.pdf", "application/pdf",
         "%PDF-1.4\n\x00\x01\x02\x03\x04\x05\xff", 16},
        {"r\xc3\xa9sum\xc3\xa9.txt", "application/octet-stream", "x\x00yz", 4},
        {"caf\xc3\xa9.csv", "text/csv", "a,b", 3},
        {"message.eml", "message/rfc822", "Subject: inner\r\n\r\nInner body.",
         29},
        {"fwd.eml", "message/rfc822", "X: y", 4},
        {"", "image/jpeg", "\xff\xd8\xff", 3},
        {"plain name.bin", "application/x-thing", "data", 4},
    };
    struct mime_parse_msg m;
    struct buf b;

    (void)state;
    parse_ok(ATTS, &m);
    assert_string_equal(m.body, "The text.");
    assert_int_equal(m.n_atts, 7);
    for (unsigned i = 0; i < 7; i++) {
        assert_int_equal(m.atts[i].index, i);
        assert_string_equal(m.atts[i].name, want[i].name);
        assert_string_equal(m.atts[i].type, want[i].type);
        assert_int_equal(m.atts[i].size, want[i].size);
        att_all(&m, i, &b);
        assert_memory_equal(b.data, want[i].data, want[i].size);
        buf_cleanup(&b);
    }

    /* Ranges of the decoded data. */
    buf_init(&b, BUF_MAX);
    assert_int_equal(mime_parse_att_read(&m, 0, 5, 6, &b), 0);
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data, "1.4\n\x00\x01", 6);
    assert_int_equal(mime_parse_att_read(&m, 0, 14, 100, &b), 0);
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.data + 6, "\x05\xff", 2);
    assert_int_equal(mime_parse_att_read(&m, 0, 16, 100, &b), 0);
    assert_int_equal(mime_parse_att_read(&m, 0, 0, 0, &b), 0);
    assert_int_equal(b.len, 8);
    assert_int_equal(mime_parse_att_read(&m, 7, 0, 10, &b), RM_E_NOTFOUND);
    buf_cleanup(&b);
    /* Past out->max: RM_E_TOOBIG and out as it was. */
    buf_init(&b, 5);
    assert_int_equal(buf_append(&b, "ab", 2), 0);
    assert_int_equal(mime_parse_att_read(&m, 0, 0, 100, &b), RM_E_TOOBIG);
    assert_int_equal(b.len, 2);
    buf_cleanup(&b);
    mime_parse_cleanup(&m);
}

static int
sink_stop_after_one(void *arg, const void *data, size_t len)
{
    size_t *calls = arg;

    (void)data;
    (void)len;
    return ++*calls == 1 ? 0 : 77;
}

static int
sink_count(void *arg, const void *data, size_t len)
{
    size_t *total = arg;

    (void)data;
    assert_true(len > 0 && len <= 4096);
    *total += len;
    return 0;
}

static void
test_attachment_sink(void **state)
{
    struct buf msg, b;
    struct mime_parse_msg m;
    size_t n = 0;
    unsigned char *data;

    (void)state;
    /* 100 000 octets of base64 (no line breaks at all: an overlong
       line) decoded in pieces of at most 4 KiB. */
    data = malloc(100000);
    assert_non_null(data);
    for (size_t i = 0; i < 100000; i++)
        data[i] = (unsigned char)(i * 7 + (i >> 8));
    buf_init(&msg, BUF_MAX);
    assert_int_equal(buf_appendf(&msg,
                                 "Content-Type: application/octet-stream\r\n"
                                 "Content-Transfer-Encoding: base64\r\n\r\n"),
                     0);
    {
        static const char t[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

        for (size_t i = 0; i < 100000; i += 3) {
            unsigned v = (unsigned)data[i] << 16;
            char q[4];

            if (i + 1 < 100000)
                v |= (unsigned)data[i + 1] << 8;
            if (i + 2 < 100000)
                v |= data[i + 2];
            q[0] = t[(v >> 18) & 63];
            q[1] = t[(v >> 12) & 63];
            q[2] = i + 1 < 100000 ? t[(v >> 6) & 63] : '=';
            q[3] = i + 2 < 100000 ? t[v & 63] : '=';
            assert_int_equal(buf_append(&msg, q, 4), 0);
        }
    }
    assert_int_equal(mime_parse(msg.data, msg.len, &m), 0);
    assert_string_equal(m.body, "");
    assert_int_equal(m.n_atts, 1);
    assert_int_equal(m.atts[0].size, 100000);
    att_all(&m, 0, &b);
    assert_memory_equal(b.data, data, 100000);
    buf_cleanup(&b);
    buf_init(&b, BUF_MAX);
    assert_int_equal(mime_parse_att_read(&m, 0, 54321, 9999, &b), 0);
    assert_int_equal(b.len, 9999);
    assert_memory_equal(b.data, data + 54321, 9999);
    buf_cleanup(&b);
    assert_int_equal(
        mime_parse_att_decode(&m, 0, 0, UINT64_MAX, sink_count, &n), 0);
    assert_int_equal(n, 100000);
    n = 0;
    assert_int_equal(
        mime_parse_att_decode(&m, 0, 0, UINT64_MAX, sink_stop_after_one, &n),
        77);
    assert_int_equal(n, 2);
    mime_parse_cleanup(&m);

    /* Regression (fuzz): one octet from a short quantum, then whole
       quanta that fill the decoder's 4 KiB block to the last octet,
       then a short quantum again wrote past the block. */
    buf_reset(&msg);
    assert_int_equal(buf_appendf(&msg, "Content-Type: image/gif\r\n"
                                       "Content-Transfer-Encoding: base64\r\n"
                                       "\r\nQQ=="),
                     0);
    for (int i = 0; i < 1365; i++)
        assert_int_equal(buf_append(&msg, "AAAA", 4), 0);
    assert_int_equal(buf_append(&msg, "QQ==", 4), 0);
    assert_int_equal(mime_parse(msg.data, msg.len, &m), 0);
    assert_int_equal(m.atts[0].size, 4097);
    att_all(&m, 0, &b);
    assert_int_equal(b.data[0], 'A');
    assert_int_equal(b.data[4096], 'A');
    for (size_t i = 1; i < 4096; i++)
        assert_int_equal(b.data[i], 0);
    buf_cleanup(&b);
    mime_parse_cleanup(&m);
    buf_cleanup(&msg);
    free(data);
}

static void
test_attachments_cap(void **state)
{
    struct buf b;
    struct mime_parse_msg m;

    (void)state;
    buf_init(&b, BUF_MAX);
    assert_int_equal(buf_appendf(&b, "Content-Type: multipart/mixed;"
                                     " boundary=x\r\n\r\n"),
                     0);
    for (int i = 0; i < 105; i++)
        assert_int_equal(buf_appendf(&b,
                                     "--x\r\nContent-Type: image/gif;"
                                     " name=\"f%d.gif\"\r\n\r\nGIF\r\n",
                                     i),
                         0);
    /* The body comes after them and is still found. */
    assert_int_equal(buf_appendf(&b, "--x\r\n\r\nlast\r\n--x--\r\n"), 0);
    assert_int_equal(mime_parse(b.data, b.len, &m), 0);
    assert_int_equal(m.n_atts, 100);
    assert_string_equal(m.atts[99].name, "f99.gif");
    assert_true(m.flags & MIME_PARSE_F_ATTS_CUT);
    assert_string_equal(m.body, "last");
    mime_parse_cleanup(&m);
    buf_cleanup(&b);
}

/* ---- damaged input -------------------------------------------------- */

static void
test_robust(void **state)
{
    struct mime_parse_msg m;
    struct buf b;

    (void)state;
    /* Nothing to read: an error with a reason; cleanup harmless. */
    assert_int_equal(mime_parse("", 0, &m), RM_E_INVAL);
    assert_string_equal(m.why, "empty message: there is nothing to read");
    mime_parse_cleanup(&m);
    assert_int_equal(mime_parse(NULL, 5, &m), RM_E_INVAL);

    /* No header at all: the whole input is the body. */
    parse_ok("just some text\r\nand more", &m);
    assert_true(m.flags & MIME_PARSE_F_NO_HEADERS);
    assert_string_equal(m.body, "just some text\r\nand more");
    assert_string_equal(m.from.address, "");
    assert_int_equal(m.hdr_len, 0);
    mime_parse_cleanup(&m);

    /* Headers only, no empty line, no body. */
    parse_ok("Subject: s\r\nFrom: f@g", &m);
    assert_string_equal(m.subject, "s");
    assert_string_equal(m.from.address, "f@g");
    assert_string_equal(m.body, "");
    assert_int_equal(m.hdr_len, 21);
    mime_parse_cleanup(&m);

    /* A header line that is no field ends the header (no empty line);
       8-bit garbage in a field name's place. */
    parse_ok("Subject: s\r\n\xff\xfe garbage\r\nmore\r\n", &m);
    assert_string_equal(m.subject, "s");
    assert_string_equal(m.body, "\xef\xbf\xbd\xef\xbf\xbd garbage\r\nmore\r\n");
    mime_parse_cleanup(&m);

    /* The close delimiter missing: the last part runs to the end. */
    parse_ok("Content-Type: multipart/mixed; boundary=q\r\n\r\n"
             "--q\r\n\r\nfirst\r\n--q\r\nContent-Type: image/gif\r\n\r\nGIF89a",
             &m);
    assert_string_equal(m.body, "first");
    assert_int_equal(m.n_atts, 1);
    assert_int_equal(m.atts[0].size, 6);
    assert_true(m.flags & MIME_PARSE_F_UNCLOSED);
    assert_string_equal(m.why, "a multipart lacks its close delimiter");
    mime_parse_cleanup(&m);

    /* A delimiter counts only at the start of a line (RFC 2046
       §5.1.1); transport padding after it is allowed. */
    parse_ok("Content-Type: multipart/mixed; boundary=q\r\n\r\n"
             "--q \t\r\n\r\nsee --q\r\nstill --q--\r\n--q--\r\n",
             &m);
    assert_string_equal(m.body, "see --q\r\nstill --q--");
    assert_int_equal(m.flags, 0);
    mime_parse_cleanup(&m);

    /* A multipart without a boundary, or whose boundary never occurs:
       its body is read as text. */
    parse_ok("Content-Type: multipart/mixed\r\n\r\nno parts here\r\n", &m);
    assert_string_equal(m.body, "no parts here\r\n");
    assert_string_equal(m.why, "a multipart has no boundary");
    mime_parse_cleanup(&m);
    parse_ok("Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
             "--zzz\r\n--zz x\r\n",
             &m);
    assert_string_equal(m.body, "--zzz\r\n--zz x\r\n");
    assert_string_equal(m.why, "a multipart boundary never occurs");
    mime_parse_cleanup(&m);

    /* An invalid Content-Type is text/plain (RFC 2045 §5.2). */
    parse_ok("Content-Type: text\r\n\r\nbody", &m);
    assert_string_equal(m.body, "body");
    assert_int_equal(m.n_atts, 0);
    mime_parse_cleanup(&m);

    /* A type past 255 octets: application/octet-stream. */
    buf_init(&b, BUF_MAX);
    assert_int_equal(buf_appendf(&b, "Content-Type: text/"), 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(buf_append(&b, "x", 1), 0);
    assert_int_equal(buf_appendf(&b, "\r\n\r\nbody"), 0);
    assert_int_equal(mime_parse(b.data, b.len, &m), 0);
    assert_string_equal(m.body, "");
    assert_int_equal(m.n_atts, 1);
    assert_string_equal(m.atts[0].type, "application/octet-stream");
    mime_parse_cleanup(&m);

    /* Nesting 40 deep: past 32 the multipart is one leaf. */
    buf_reset(&b);
    for (int i = 0; i < 40; i++)
        assert_int_equal(
            buf_appendf(&b,
                        "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n"
                        "\r\n--b%d\r\n",
                        i, i),
            0);
    assert_int_equal(buf_appendf(&b, "\r\ndeep\r\n"), 0);
    assert_int_equal(mime_parse(b.data, b.len, &m), 0);
    assert_true(m.flags & MIME_PARSE_F_DEPTH_CUT);
    assert_int_equal(m.n_atts, 1);
    assert_string_equal(m.atts[0].type, "multipart/mixed");
    assert_string_equal(m.body, "");
    mime_parse_cleanup(&m);

    /* A 1 MiB line and a folded header of 10 000 lines. */
    buf_reset(&b);
    assert_int_equal(buf_appendf(&b, "X-Fold: a"), 0);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(buf_appendf(&b, "\r\n b"), 0);
    assert_int_equal(buf_appendf(&b, "\r\nSubject: after\r\n\r\n"), 0);
    for (int i = 0; i < 1024 * 1024; i++)
        assert_int_equal(buf_append(&b, "y", 1), 0);
    assert_int_equal(mime_parse(b.data, b.len, &m), 0);
    assert_string_equal(m.subject, "after");
    assert_int_equal(m.body_len, 1024 * 1024);
    mime_parse_cleanup(&m);
    buf_cleanup(&b);

    /* Bare CR and LF mixes, a NUL in a header. */
    assert_int_equal(mime_parse("Subject: a\0b\r\n\r\nx\ry", 19, &m), 0);
    assert_string_equal(m.subject, "ab");
    assert_string_equal(m.body, "x\ry");
    mime_parse_cleanup(&m);

    /* Regression (fuzz): a NUL in a display name looped for ever. */
    {
        static const char nul[] = "From: Al\0ice\xff <a@b>\r\n\r\n";

        assert_int_equal(mime_parse(nul, sizeof(nul) - 1, &m), 0);
    }
    /* Not UTF-8, so Latin-1; the NUL dropped. */
    assert_string_equal(m.from.name, "Alice\xc3\xbf");
    assert_string_equal(m.from.address, "a@b");
    mime_parse_cleanup(&m);
}

/* ---- round trip ----------------------------------------------------- */

static void
test_round_trip(void **state)
{
    static const unsigned char rnd[MIME_COMPOSE_RANDOM_LEN] = {
        1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
        17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    static const struct mime_compose_addr to[] = {
        {"Zo\xc3\xab Saldana", "zoe@example.net"}, {NULL, "plain@example.net"}};
    static const struct mime_compose_addr cc[] = {
        {"\xe5\xb1\xb1\xe7\x94\xb0 \xe5\xa4\xaa\xe9\x83\x8e", "yamada@x.jp"}};
    const char *subject =
        "Gr\xc3\xbc\xc3\x9f"
        "e aus M\xc3\xbcnchen \xe2\x80\x93 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"
        " and a long tail that must fold over more than one header line";
    const char *text = "Hall\xc3\xb6 Zo\xc3\xab,\n\nthe figures: 5 \xe2\x82\xac"
                       ".\nA line with = and trailing space \n"
                       "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\n";
    const char *want_body =
        "Hall\xc3\xb6 Zo\xc3\xab,\r\n\r\nthe figures: 5 \xe2\x82\xac"
        ".\r\nA line with = and trailing space \r\n"
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\r\n";
    struct mime_compose_attach att[2];
    struct mime_compose_msg cm;
    unsigned char bin1[3000], bin2[777];
    char msgid[MIME_COMPOSE_MSGID_SIZE];
    struct mime_parse_msg m;
    struct buf out, b;

    (void)state;
    for (size_t i = 0; i < sizeof(bin1); i++)
        bin1[i] = (unsigned char)i;
    for (size_t i = 0; i < sizeof(bin2); i++)
        bin2[i] = (unsigned char)(i * 131 + 7);
    att[0].filename = "data.bin";
    att[0].type = NULL;
    att[0].data = bin1;
    att[0].len = sizeof(bin1);
    att[1].filename =
        "\xc3\x9c"
        "berweisung M\xc3\xa4rz 2024 \xe2\x80\x93 se\xc3\xb1or \xe6\x97\xa5"
        "\xe6\x9c\xac with a long name to need RFC 2231 sections.pdf";
    att[1].type = NULL;
    att[1].data = bin2;
    att[1].len = sizeof(bin2);
    memset(&cm, 0, sizeof(cm));
    cm.from.name = "J\xc3\xb6rg M\xc3\xbcller";
    cm.from.addr = "joerg@example.org";
    cm.to = to;
    cm.nto = 2;
    cm.cc = cc;
    cm.ncc = 1;
    cm.subject = subject;
    cm.text = text;
    cm.text_len = strlen(text);
    cm.attach = att;
    cm.nattach = 2;
    cm.date = 1700000000;
    cm.msgid_domain = "node.example";
    cm.random = rnd;
    buf_init(&out, BUF_MAX);
    assert_int_equal(mime_compose(&cm, &out, msgid), 0);

    assert_int_equal(mime_parse(out.data, out.len, &m), 0);
    assert_string_equal(m.why, "");
    assert_int_equal(m.flags, 0);
    assert_string_equal(m.from.name, cm.from.name);
    assert_string_equal(m.from.address, cm.from.addr);
    assert_int_equal(m.n_to, 2);
    assert_string_equal(m.to[0].name, to[0].name);
    assert_string_equal(m.to[0].address, to[0].addr);
    assert_string_equal(m.to[1].name, "");
    assert_string_equal(m.to[1].address, to[1].addr);
    assert_int_equal(m.n_cc, 1);
    assert_string_equal(m.cc[0].name, cc[0].name);
    assert_string_equal(m.cc[0].address, cc[0].addr);
    assert_int_equal(m.n_bcc, 0);
    assert_string_equal(m.subject, subject);
    assert_int_equal(m.date, 1700000000);
    assert_string_equal(m.message_id, msgid);
    assert_string_equal(m.body, want_body);
    assert_int_equal(m.n_atts, 2);
    assert_string_equal(m.atts[0].name, "data.bin");
    assert_string_equal(m.atts[0].type, "application/octet-stream");
    assert_int_equal(m.atts[0].size, sizeof(bin1));
    att_all(&m, 0, &b);
    assert_memory_equal(b.data, bin1, sizeof(bin1));
    buf_cleanup(&b);
    assert_string_equal(m.atts[1].name, att[1].filename);
    assert_string_equal(m.atts[1].type, "application/pdf");
    assert_int_equal(m.atts[1].size, sizeof(bin2));
    att_all(&m, 1, &b);
    assert_memory_equal(b.data, bin2, sizeof(bin2));
    buf_cleanup(&b);
    mime_parse_cleanup(&m);
    buf_cleanup(&out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_bare_lf),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_address_bounds),
        cmocka_unit_test(test_subject),
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_date_and_msgid_fields),
        cmocka_unit_test(test_header_block),
        cmocka_unit_test(test_body_choice),
        cmocka_unit_test(test_body_decoding),
        cmocka_unit_test(test_body_read),
        cmocka_unit_test(test_attachments),
        cmocka_unit_test(test_attachment_sink),
        cmocka_unit_test(test_attachments_cap),
        cmocka_unit_test(test_robust),
        cmocka_unit_test(test_round_trip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
