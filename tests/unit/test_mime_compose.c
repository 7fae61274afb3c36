/*
 * Unit tests for node/mime_compose.c: a golden message, RFC 2047
 * encoded-words (length, UTF-8 boundaries, round trip), folding,
 * quoting of display names, Bcc, body transfer encodings and line-end
 * normalisation, multipart/mixed with base64 attachments and RFC 2231
 * file names, the boundary check, header injection and every other
 * refusal (out left as it was), limits, and the small helpers.
 * The composer is deterministic (the caller gives date and random bytes),
 * so the golden test compares bytes.
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

#define OUT_MAX (16 * 1024 * 1024)
#define T_DATE INT64_C(1700000000) /* Tue, 14 Nov 2023 22:13:20 +0000 */

static const unsigned char RND[MIME_COMPOSE_RANDOM_LEN] = {
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa,
    0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
    0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10};
#define BND "=_rm_0123456789abcdeffedcba9876543210"

static struct mime_compose_addr one_to[] = {{NULL, "bob@example.net"}};

static void
msg_init(struct mime_compose_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->from.name = "Alice";
    m->from.addr = "alice@example.org";
    m->to = one_to;
    m->nto = 1;
    m->subject = "hello";
    m->text = "Hi Bob.\n";
    m->text_len = strlen(m->text);
    m->date = T_DATE;
    m->msgid_domain = "node.example";
    m->random = RND;
}

/* Every line ends CRLF, none passes 998; header lines (up to the first
   empty line) pass 78 only when allowed. Returns the header length. */
static size_t
check_lines(const struct buf *b, int hdr_soft)
{
    size_t i = 0, hdr_end = 0;
    int in_hdr = 1;

    assert_true(b->len >= 2);
    assert_memory_equal(b->data + b->len - 2, "\r\n", 2);
    while (i < b->len) {
        const char *eol = memmem(b->data + i, b->len - i, "\r\n", 2);
        size_t n;

        assert_non_null(eol);
        n = (size_t)(eol - (b->data + i));
        assert_null(memchr(b->data + i, '\n', n));
        assert_null(memchr(b->data + i, '\r', n));
        assert_true(n <= 998);
        if (in_hdr && n == 0) {
            in_hdr = 0;
            hdr_end = i;
        }
        if (in_hdr && hdr_soft)
            assert_true(n <= 78);
        for (size_t k = 0; k < n; k++)
            assert_true((unsigned char)b->data[i + k] < 0x80);
        i += n + 2;
    }
    return hdr_end;
}

/* The message with folding undone (RFC 5322 §2.2.3); caller frees. */
static char *
unfold(const struct buf *b)
{
    char *u = strdup(b->data);

    assert_non_null(u);
    for (char *p; (p = strstr(u, "\r\n ")) != NULL;)
        memmove(p, p + 2, strlen(p + 2) + 1);
    return u;
}

static int
b64val(char c)
{
    const char *a =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = strchr(a, c);

    return c != '\0' && p != NULL ? (int)(p - a) : -1;
}

/* Decodes base64 (line breaks skipped) into out; returns its length. */
static size_t
b64dec(const char *s, size_t len, unsigned char *out)
{
    unsigned v = 0;
    int bits = 0;
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        int d = b64val(s[i]);

        if (s[i] == '=' || s[i] == '\r' || s[i] == '\n')
            continue;
        assert_true(d >= 0);
        v = (v << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(v >> bits);
        }
    }
    return n;
}

/* Decodes every "=?utf-8?B?...?=" of a header field (name given, up to
   the next unfolded line), checking each is <= 75 characters and holds
   whole UTF-8 sequences; the concatenation goes to out. */
static size_t
decode_ews(const struct buf *b, const char *field, char *out)
{
    const char *p = strstr(b->data, field);
    size_t n = 0;
    int words = 0;

    assert_non_null(p);
    for (;;) {
        const char *ew = strstr(p, "=?utf-8?B?");
        const char *end, *next_field;
        unsigned char tmp[64];
        size_t k;

        next_field = p + strlen(field);
        while ((next_field = strstr(next_field, "\r\n")) != NULL &&
               next_field[2] == ' ')
            next_field += 2;
        if (ew == NULL || (next_field != NULL && ew > next_field))
            break;
        end = strstr(ew + 10, "?=");
        assert_non_null(end);
        assert_true(end + 2 - ew <= 75);
        k = b64dec(ew + 10, (size_t)(end - ew - 10), tmp);
        /* Whole sequences: the word starts with a lead octet, and a
           lead octet near the end has its continuation octets. */
        assert_true(k > 0 && (tmp[0] & 0xC0) != 0x80);
        for (size_t j = 0; j < k;) {
            size_t l =
                tmp[j] < 0x80 ? 1 : mime_compose_utf8_len(tmp + j, k - j);

            assert_true(l > 0);
            j += l;
        }
        memcpy(out + n, tmp, k);
        n += k;
        words++;
        p = end + 2;
    }
    assert_true(words > 0);
    out[n] = '\0';
    return n;
}

static void
test_golden(void **state)
{
    static const char want[] =
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        "From: Alice <alice@example.org>\r\n"
        "To: bob@example.net\r\n"
        "Subject: hello\r\n"
        "Message-ID: <00112233445566778899aabbccddeeff@node.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        "Hi Bob.\r\n";
    struct mime_compose_msg m;
    char id[MIME_COMPOSE_MSGID_SIZE];
    struct buf b;

    (void)state;
    msg_init(&m);
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, id), 0);
    assert_string_equal(b.data, want);
    assert_string_equal(id, "<00112233445566778899aabbccddeeff@node.example>");
    check_lines(&b, 1);
    buf_cleanup(&b);
}

static void
test_encoded_words(void **state)
{
    /* 1-, 2-, 3- and 4-octet sequences mixed, long enough for several
       words, and a display name of the same. */
    static const char *subjects[] = {
        "a\xc3\xa9\xe6\x97\xa5\xf0\x9f\x8e\x89",
        "Gr\xc3\xbc\xc3\x9f"
        "e \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x8e\x89\xf0\x9f\x9a"
        "\x80 \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 "
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa"
        "\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8"
        "\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xf0\x9f\x8e\x89\xf0\x9f"
        "\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89 end",
        "tab\there",
        "  leading and trailing  ",
        "=?utf-8?B?aGk=?= is text, not an encoded-word",
    };
    char dec[8192];

    (void)state;
    for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
        struct mime_compose_msg m;
        /* HTAB is allowed in a subject (encoded), not in a name. */
        int name_ok = strchr(subjects[i], '\t') == NULL;
        struct mime_compose_addr to = {name_ok ? subjects[i] : "x\xc3\xa9",
                                       "bob@example.net"};
        struct buf b;

        msg_init(&m);
        m.subject = subjects[i];
        m.to = &to;
        buf_init(&b, OUT_MAX);
        assert_int_equal(mime_compose(&m, &b, NULL), 0);
        check_lines(&b, 1);
        decode_ews(&b, "\r\nSubject:", dec);
        assert_string_equal(dec, subjects[i]);
        decode_ews(&b, "\r\nTo:", dec);
        assert_string_equal(dec, name_ok ? subjects[i] : "x\xc3\xa9");
        buf_cleanup(&b);
    }
}

static void
test_fold_ascii(void **state)
{
    struct mime_compose_msg m;
    struct mime_compose_addr to[30];
    char subj[600], addrs[30][32], *unfolded;
    size_t n = 0;
    struct buf b;

    (void)state;
    for (int i = 0; i < 50; i++)
        n += (size_t)snprintf(subj + n, sizeof(subj) - n, "%sword%d",
                              i ? " " : "", i);
    for (int i = 0; i < 30; i++) {
        snprintf(addrs[i], sizeof(addrs[i]), "user%d@example.com", i);
        to[i].name = i % 2 ? "Some Name" : NULL;
        to[i].addr = addrs[i];
    }
    msg_init(&m);
    m.subject = subj;
    m.to = to;
    m.nto = 30;
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    check_lines(&b, 1);
    /* Unfolding (RFC 5322 §2.2.3: remove CRLF before WSP) gives the
       subject back. */
    unfolded = unfold(&b);
    assert_non_null(strstr(unfolded, subj));
    assert_non_null(strstr(unfolded, "To: user0@example.com, Some Name "
                                     "<user1@example.com>, user2@"));
    free(unfolded);
    buf_cleanup(&b);
}

static void
test_phrase_quoting(void **state)
{
    static struct mime_compose_addr to[] = {
        {"John Smith", "a@example.com"},
        {"Doe, John", "b@example.com"},
        {"Say \"hi\" \\o/", "c@example.com"},
        {"J. R. R.", "d@example.com"},
        {"", "e@example.com"},
        {"Evil <x@evil.example>", "f@example.com"},
    };
    struct mime_compose_msg m;
    struct buf b;
    char *u;

    (void)state;
    msg_init(&m);
    m.to = to;
    m.nto = sizeof(to) / sizeof(to[0]);
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    check_lines(&b, 1);
    u = unfold(&b);
    buf_reset(&b);
    assert_int_equal(buf_append(&b, u, strlen(u)), 0);
    free(u);
    assert_non_null(strstr(b.data, "To: John Smith <a@example.com>,"));
    assert_non_null(strstr(b.data, "\"Doe, John\" <b@example.com>,"));
    assert_non_null(
        strstr(b.data, "\"Say \\\"hi\\\" \\\\o/\" <c@example.com>,"));
    assert_non_null(strstr(b.data, "\"J. R. R.\" <d@example.com>,"));
    assert_non_null(strstr(b.data, " e@example.com,"));
    assert_non_null(strstr(b.data, "\"Evil <x@evil.example>\""));
    buf_cleanup(&b);
}

static void
test_bcc(void **state)
{
    static struct mime_compose_addr bcc[] = {{"Secret", "hidden@example.com"}};
    static struct mime_compose_addr cc[] = {{NULL, "cc@example.com"}};
    struct mime_compose_msg m;
    struct buf b;

    (void)state;
    msg_init(&m);
    m.bcc = bcc;
    m.nbcc = 1;
    m.cc = cc;
    m.ncc = 1;
    m.receipt = 1;
    m.in_reply_to = "<x@y>";
    m.references = "<a@b>  <c@d>\t<x@y>";
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    assert_null(strstr(b.data, "hidden"));
    assert_null(strstr(b.data, "Bcc"));
    assert_non_null(strstr(b.data, "\r\nCc: cc@example.com\r\n"));
    assert_non_null(strstr(b.data, "\r\nIn-Reply-To: <x@y>\r\n"));
    assert_non_null(strstr(b.data, "\r\nReferences: <a@b> <c@d> <x@y>\r\n"));
    assert_non_null(strstr(
        b.data, "\r\nDisposition-Notification-To: Alice <alice@example.org>"
                "\r\n"));
    buf_reset(&b);
    m.keep_bcc = 1;
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    assert_non_null(strstr(b.data, "\r\nBcc: Secret <hidden@example.com>\r\n"));
    buf_cleanup(&b);
}

static const char *
body_of(const struct buf *b)
{
    const char *p = strstr(b->data, "\r\n\r\n");

    assert_non_null(p);
    return p + 4;
}

static void
test_body_7bit_and_line_ends(void **state)
{
    struct mime_compose_msg m;
    struct buf b;

    (void)state;
    msg_init(&m);
    m.text = "one\r\ntwo\nthree\rfour";
    m.text_len = strlen(m.text);
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    assert_non_null(strstr(b.data, "Content-Transfer-Encoding: 7bit\r\n"));
    assert_string_equal(body_of(&b), "one\r\ntwo\r\nthree\r\nfour\r\n");
    buf_reset(&b);
    m.text = NULL;
    m.text_len = 0;
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    assert_string_equal(body_of(&b), "");
    check_lines(&b, 1);
    buf_cleanup(&b);
}

static void
test_body_qp(void **state)
{
    char text[400];
    struct mime_compose_msg m;
    struct buf b;
    const char *p;

    (void)state;
    /* A long line of mostly ASCII with a few escapes, a trailing space,
       '=' and a NUL. */
    memset(text, 'a', sizeof(text));
    memcpy(text,
           "Gr\xc3\xb6\xc3\x9f"
           "e = 5 ",
           12);
    text[100] = '\0';
    text[200] = ' ';
    text[201] = '\n';
    msg_init(&m);
    m.text = text;
    m.text_len = sizeof(text);
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    check_lines(&b, 1);
    assert_non_null(
        strstr(b.data, "Content-Transfer-Encoding: quoted-printable\r\n"));
    p = body_of(&b);
    assert_memory_equal(p, "Gr=C3=B6=C3=9Fe =3D 5 ", 22);
    assert_non_null(strstr(p, "=00"));
    assert_non_null(strstr(p, "=20\r\n")); /* trailing space, line 1 */
    /* Encoded lines are at most 76 characters (RFC 2045 §6.7 (5)). */
    for (const char *l = p; *l;) {
        const char *e = strstr(l, "\r\n");

        assert_non_null(e);
        assert_true(e - l <= 76);
        l = e + 2;
    }
    buf_cleanup(&b);
}

static void
test_body_base64(void **state)
{
    char text[3 * 200 + 1];
    unsigned char dec[sizeof(text)];
    struct mime_compose_msg m;
    struct buf b;
    const char *p;

    (void)state;
    for (int i = 0; i < 200; i++)
        memcpy(text + 3 * i, "\xe6\x97\xa5", 3);
    text[600] = '\0';
    msg_init(&m);
    m.text = text;
    m.text_len = 600;
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    check_lines(&b, 1);
    assert_non_null(strstr(b.data, "Content-Transfer-Encoding: base64\r\n"));
    p = body_of(&b);
    assert_int_equal(b64dec(p, strlen(p), dec), 600);
    assert_memory_equal(dec, text, 600);
    buf_cleanup(&b);
}

static void
test_attachments(void **state)
{
    unsigned char every[256 * 3];
    unsigned char *dec = malloc(sizeof(every));
    struct mime_compose_attach att[] = {
        {"every.bin", NULL, every, sizeof(every)},
        {"\xc3\x9c"
         "bersicht.pdf",
         NULL, "x", 1},
        {"report.DOCX", NULL, "", 0},
        {"data", "Application/X-Thing", "y", 1},
    };
    struct mime_compose_msg m;
    struct buf b;
    const char *p, *e;
    char want[128];

    (void)state;
    for (size_t i = 0; i < sizeof(every); i++)
        every[i] = (unsigned char)i;
    msg_init(&m);
    m.attach = att;
    m.nattach = 4;
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    check_lines(&b, 1);
    assert_non_null(strstr(b.data, "Content-Type: multipart/mixed;\r\n"
                                   " boundary=\"" BND "\"\r\n"));
    assert_non_null(strstr(b.data, "\r\n--" BND "\r\n"
                                   "Content-Type: text/plain; charset=utf-8\r\n"
                                   "Content-Transfer-Encoding: 7bit\r\n\r\n"
                                   "Hi Bob.\r\n\r\n--" BND "\r\n"));
    assert_non_null(strstr(b.data,
                           "Content-Type: application/octet-stream;\r\n"
                           " name=\"every.bin\"\r\n"
                           "Content-Disposition: attachment;\r\n"
                           " filename=\"every.bin\"\r\n"
                           "Content-Transfer-Encoding: base64\r\n\r\n"));
    /* The attachment decodes byte for byte; its lines are 76. */
    p = strstr(b.data, "filename=\"every.bin\"");
    p = strstr(p, "\r\n\r\n") + 4;
    e = strstr(p, "\r\n--" BND);
    assert_int_equal(b64dec(p, (size_t)(e - p), dec), sizeof(every));
    assert_memory_equal(dec, every, sizeof(every));
    assert_memory_equal(p + 76, "\r\n", 2);
    /* RFC 2231 and RFC 2047 forms of a non-ASCII name. */
    assert_non_null(strstr(b.data, "Content-Type: application/pdf;\r\n"
                                   " name=\"=?utf-8?B?w5xiZXJzaWNodC5wZGY=?=\""
                                   "\r\nContent-Disposition: attachment;\r\n"
                                   " filename*=utf-8''%C3%9Cbersicht.pdf\r\n"));
    snprintf(want, sizeof(want), "Content-Type: %s;\r\n name=\"report.DOCX\"",
             mime_compose_guess_type("x.docx"));
    assert_non_null(strstr(b.data, want));
    assert_non_null(strstr(b.data, "Content-Type: Application/X-Thing;\r\n"));
    assert_non_null(strstr(b.data, "\r\n--" BND "--\r\n"));
    assert_int_equal(
        strcmp(b.data + b.len - strlen(BND) - 6, "--" BND "--\r\n"), 0);
    free(dec);
    buf_cleanup(&b);
}

static void
test_rfc2231_continuations(void **state)
{
    char name[MIME_COMPOSE_FILENAME_MAX + 1];
    struct mime_compose_attach att = {name, NULL, "z", 1};
    struct mime_compose_msg m;
    struct buf b;

    (void)state;
    /* 85 three-octet characters: the longest name, 765 escape chars. */
    for (int i = 0; i < 85; i++)
        memcpy(name + 3 * i, "\xe5\x86\x99", 3);
    name[255] = '\0';
    msg_init(&m);
    m.attach = &att;
    m.nattach = 1;
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    check_lines(&b, 1);
    assert_non_null(strstr(b.data, " filename*0*=utf-8''%E5%86%99"));
    assert_non_null(strstr(b.data, ";\r\n filename*1*=%"));
    /* No section cuts an escape: each value is a run of %XX. */
    for (const char *p = strstr(b.data, "filename*"); p != NULL;
         p = strstr(p + 1, "\r\n filename*")) {
        const char *v = strchr(p, '=') + 1;
        size_t len = strcspn(v, ";\r");

        if (strncmp(v, "utf-8''", 7) == 0) {
            v += 7;
            len -= 7;
        }
        assert_int_equal(len % 3, 0);
        for (size_t i = 0; i < len; i += 3)
            assert_int_equal(v[i], '%');
    }
    buf_cleanup(&b);
}

static void
test_boundary_in_text(void **state)
{
    static const char text[] = "before\n--" BND "\nafter\n";
    struct mime_compose_attach att = {"a.txt", NULL, "A", 1};
    struct mime_compose_msg m;
    struct buf b;

    (void)state;
    msg_init(&m);
    m.text = text;
    m.text_len = strlen(text);
    m.attach = &att;
    m.nattach = 1;
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    /* The text goes quoted-printable, where "=_" cannot occur. */
    assert_non_null(strstr(b.data, "--=3D_rm_"));
    assert_non_null(strstr(b.data, "quoted-printable"));
    buf_cleanup(&b);
}

/* Refused, and out keeps what it held. */
static void
expect_err(const struct mime_compose_msg *m, int err)
{
    struct buf b;

    buf_init(&b, OUT_MAX);
    assert_int_equal(buf_append(&b, "KEEP", 4), 0);
    assert_int_equal(mime_compose(m, &b, NULL), err);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "KEEP");
    buf_cleanup(&b);
}

#define BAD(stmt)                                                              \
    do {                                                                       \
        struct mime_compose_msg m;                                             \
        msg_init(&m);                                                          \
        stmt;                                                                  \
        expect_err(&m, RM_E_INVAL);                                            \
    } while (0)

static void
test_injection_and_inval(void **state)
{
    static const char *bad_addrs[] = {"",
                                      "plain",
                                      "@example.com",
                                      "a@",
                                      "a b@example.com",
                                      "bob@example.com>\r\nBcc: <v@example.com",
                                      "a@b\r\n",
                                      "a@b, c@d",
                                      "<a@b>",
                                      "@relay:a@b",
                                      "b\xc3\xb6"
                                      "b@example.com",
                                      "a@b SIZE=10",
                                      "a@-bad-.com"};
    struct mime_compose_addr a;
    struct mime_compose_attach att = {"ok.bin", NULL, "x", 1};

    (void)state;
    BAD(m.subject = "hi\r\nBcc: victim@example.com");
    BAD(m.subject = "hi\nX: 1");
    BAD(m.subject = "hi\rX: 1");
    BAD(m.subject = "nul\x01");
    BAD(m.subject = "bad utf-8 \xc3");
    BAD(m.subject = "overlong \xc0\xaf");
    BAD(m.subject = "surrogate \xed\xa0\x80");
    BAD(m.from.name = "Alice\r\nBcc: v@example.com");
    BAD(m.from.name = "tab\tin name");
    BAD(m.from.addr = NULL);
    for (size_t i = 0; i < sizeof(bad_addrs) / sizeof(bad_addrs[0]); i++) {
        a.name = NULL;
        a.addr = bad_addrs[i];
        BAD((m.to = &a, m.nto = 1));
        BAD((m.bcc = &a, m.nbcc = 1));
    }
    BAD((m.to = NULL, m.nto = 1));
    BAD(m.date = 0);
    BAD(m.random = NULL);
    BAD(m.msgid_domain = "bad domain");
    BAD(m.msgid_domain = "x>y");
    BAD(m.msgid_domain = NULL);
    BAD((m.text = NULL, m.text_len = 3));
    BAD((m.text = "\xff", m.text_len = 1));
    BAD(m.in_reply_to = "<a@b>\r\nX-Evil: 1");
    BAD(m.in_reply_to = "a@b");
    BAD(m.in_reply_to = "<>");
    BAD(m.in_reply_to = "");
    BAD(m.references = "<a@b> <c d>");
    BAD(m.references = "<a@b");
    BAD((att.filename = "a\r\nContent-Type: text/html", m.attach = &att,
         m.nattach = 1));
    BAD((att.filename = "", m.attach = &att, m.nattach = 1));
    BAD((att.filename = NULL, m.attach = &att, m.nattach = 1));
    att.filename = "ok.bin";
    BAD((att.type = "text/plain\r\nX: 1", m.attach = &att, m.nattach = 1));
    BAD((att.type = "text", m.attach = &att, m.nattach = 1));
    BAD((att.type = "text/", m.attach = &att, m.nattach = 1));
    BAD((att.type = "/plain", m.attach = &att, m.nattach = 1));
    BAD((att.type = "text/pl ain", m.attach = &att, m.nattach = 1));
    BAD((att.type = "message/rfc822", m.attach = &att, m.nattach = 1));
    BAD((att.type = "Multipart/mixed", m.attach = &att, m.nattach = 1));
    att.type = NULL;
    BAD((att.data = NULL, m.attach = &att, m.nattach = 1));
    BAD((m.attach = NULL, m.nattach = 1));
    BAD(m.nattach = MIME_COMPOSE_ATTACH_MAX + 1);
}

static void
test_good_addrs(void **state)
{
    static const char *good[] = {"a@b", "\"quoted local\"@example.com",
                                 "x@[192.0.2.1]",
                                 "first.last+tag@sub.ex-ample.org"};
    struct mime_compose_addr a;
    struct mime_compose_msg m;
    struct buf b;

    (void)state;
    buf_init(&b, OUT_MAX);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        msg_init(&m);
        a.name = "N";
        a.addr = good[i];
        m.to = &a;
        buf_reset(&b);
        assert_int_equal(mime_compose(&m, &b, NULL), 0);
        assert_non_null(strstr(b.data, good[i]));
    }
    buf_cleanup(&b);
}

static void
test_limits(void **state)
{
    static struct mime_compose_addr many[MIME_COMPOSE_RCPTS_MAX + 1];
    unsigned char *big = calloc(1, 3000);
    struct mime_compose_attach att = {"big.bin", NULL, big, 3000};
    struct mime_compose_msg m;
    struct buf b;

    (void)state;
    for (size_t i = 0; i <= MIME_COMPOSE_RCPTS_MAX; i++)
        many[i].addr = "r@example.com";
    msg_init(&m);
    m.to = many;
    m.nto = MIME_COMPOSE_RCPTS_MAX;
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    check_lines(&b, 1);
    buf_cleanup(&b);
    m.nto = MIME_COMPOSE_RCPTS_MAX + 1;
    expect_err(&m, RM_E_INVAL);
    m.nto = MIME_COMPOSE_RCPTS_MAX / 2 + 1;
    m.bcc = many;
    m.nbcc = MIME_COMPOSE_RCPTS_MAX / 2;
    expect_err(&m, RM_E_INVAL);

    msg_init(&m);
    m.attach = &att;
    m.nattach = 1;
    m.max_size = 2000; /* refused before encoding */
    expect_err(&m, RM_E_TOOBIG);
    m.max_size = 4100; /* refused after: headers push it over */
    expect_err(&m, RM_E_TOOBIG);
    m.max_size = 10000;
    buf_init(&b, OUT_MAX);
    assert_int_equal(mime_compose(&m, &b, NULL), 0);
    assert_true(b.len <= 10000);
    buf_cleanup(&b);
    /* The buffer's own maximum. */
    m.max_size = 0;
    buf_init(&b, 1000);
    assert_int_equal(buf_append(&b, "KEEP", 4), 0);
    assert_int_equal(mime_compose(&m, &b, NULL), RM_E_TOOBIG);
    assert_string_equal(b.data, "KEEP");
    buf_cleanup(&b);
    free(big);
}

static void
test_helpers(void **state)
{
    char d[MIME_COMPOSE_DATE_SIZE];

    (void)state;
    assert_int_equal(mime_compose_date(T_DATE, d), 0);
    assert_string_equal(d, "Tue, 14 Nov 2023 22:13:20 +0000");
    assert_int_equal(mime_compose_date(-1, d), RM_E_INVAL);
    assert_int_equal(mime_compose_date(INT64_C(253402300800), d), RM_E_INVAL);
    assert_string_equal(mime_compose_guess_type("A.PNG"), "image/png");
    assert_string_equal(mime_compose_guess_type("a.tar.gz"),
                        "application/gzip");
    assert_string_equal(mime_compose_guess_type("noext"),
                        "application/octet-stream");
    assert_string_equal(mime_compose_guess_type("dot."),
                        "application/octet-stream");
    assert_string_equal(mime_compose_guess_type(NULL),
                        "application/octet-stream");
    assert_int_equal(
        mime_compose_utf8_len((const unsigned char *)"\xc3\xa9", 2), 2);
    assert_int_equal(
        mime_compose_utf8_len((const unsigned char *)"\xf0\x9f\x8e\x89", 4), 4);
    assert_int_equal(
        mime_compose_utf8_len((const unsigned char *)"\xf0\x9f\x8e", 3), 0);
    assert_int_equal(mime_compose_utf8_len((const unsigned char *)"\x80", 1),
                     0);
    assert_int_equal(
        mime_compose_utf8_len((const unsigned char *)"\xf4\x90\x80\x80", 4), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_encoded_words),
        cmocka_unit_test(test_fold_ascii),
        cmocka_unit_test(test_phrase_quoting),
        cmocka_unit_test(test_bcc),
        cmocka_unit_test(test_body_7bit_and_line_ends),
        cmocka_unit_test(test_body_qp),
        cmocka_unit_test(test_body_base64),
        cmocka_unit_test(test_attachments),
        cmocka_unit_test(test_rfc2231_continuations),
        cmocka_unit_test(test_boundary_in_text),
        cmocka_unit_test(test_injection_and_inval),
        cmocka_unit_test(test_good_addrs),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_helpers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
