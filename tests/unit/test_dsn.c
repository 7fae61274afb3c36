/*
 * Unit tests for node/dsn.c: the multipart/report structure (RFC 6522),
 * the delivery-status fields (RFC 3464) per recipient with mixed actions,
 * ORCPT passthrough, RET=FULL and RET=HDRS, the global types (RFC 6533),
 * folding and sanitising of remote diagnostics, buffer limits, invalid
 * input, and dsn_status_from_reply(). Output is random in two places
 * (Message-ID, boundary), so the tests assert structure, not bytes.
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
#include "node/dsn.h"

#define T_ARRIVAL INT64_C(1700000000) /* Tue, 14 Nov 2023 22:13:20 */
#define T_NOW (T_ARRIVAL + 4 * 3600)
#define OUT_MAX (1024 * 1024)

static const char ORIG[] = "Received: from client.example.org\r\n"
                           "From: Alice <alice@example.org>\r\n"
                           "To: bob@example.net\r\n"
                           "Subject: hello\r\n"
                           "Message-ID: <orig-1@example.org>\r\n"
                           "\r\n"
                           "BODY-LINE-1\r\n"
                           "BODY-LINE-2\r\n";

static struct dsn_rcpt one_rcpt[] = {{.addr = "bob@example.net",
                                      .orcpt = NULL,
                                      .action = DSN_FAILED,
                                      .status = "5.1.1",
                                      .remote_mta = "mx.example.net",
                                      .diagnostic =
                                          "550 5.1.1 <bob@example.net>: no "
                                          "such user",
                                      .last_attempt = T_NOW - 60}};

static void
report_init(struct dsn_report *r, const struct dsn_rcpt *rcpts, size_t n)
{
    memset(r, 0, sizeof(*r));
    r->reporting_mta = "relay.example.com";
    r->from = "MAILER-DAEMON@relay.example.com";
    r->to = "alice@example.org";
    r->envid = NULL;
    r->arrival = T_ARRIVAL;
    r->now = T_NOW;
    r->orig = ORIG;
    r->orig_len = strlen(ORIG);
    r->rcpts = rcpts;
    r->nrcpts = n;
    r->msgid_domain = "relay.example.com";
}

/* ---- helpers: a small MIME splitter over the composed text ---------- */

struct part {
    const char *hdr; /* header section, ends before its empty line */
    size_t hdr_len;
    const char *body;
    size_t body_len;
};

struct dsn_msg {
    const char *hdr;
    size_t hdr_len;
    char boundary[128];
    struct part parts[4];
    size_t nparts;
};

static const char *
find(const char *hay, size_t len, const char *needle)
{
    return memmem(hay, len, needle, strlen(needle));
}

/* Whether the exact line (without CRLF) is in the text. */
static int
has_line(const char *text, size_t len, const char *line)
{
    size_t n = strlen(line);
    const char *p = text, *end = text + len;

    while (p < end) {
        const char *eol = find(p, (size_t)(end - p), "\r\n");
        size_t l = eol ? (size_t)(eol - p) : (size_t)(end - p);

        if (l == n && memcmp(p, line, n) == 0)
            return 1;
        if (eol == NULL)
            break;
        p = eol + 2;
    }
    return 0;
}

static int
has_line_prefix(const char *text, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    const char *p = text, *end = text + len;

    while (p < end) {
        const char *eol = find(p, (size_t)(end - p), "\r\n");

        if ((size_t)(end - p) >= n && memcmp(p, prefix, n) == 0)
            return 1;
        if (eol == NULL)
            break;
        p = eol + 2;
    }
    return 0;
}

static size_t
max_line(const char *text, size_t len)
{
    size_t best = 0;
    const char *p = text, *end = text + len;

    while (p < end) {
        const char *eol = find(p, (size_t)(end - p), "\r\n");
        size_t l = eol ? (size_t)(eol - p) : (size_t)(end - p);

        if (l > best)
            best = l;
        if (eol == NULL)
            break;
        p = eol + 2;
    }
    return best;
}

/* Every LF is preceded by CR and every CR followed by LF. */
static void
assert_crlf_only(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n')
            assert_true(i > 0 && text[i - 1] == '\r');
        if (text[i] == '\r')
            assert_true(i + 1 < len && text[i + 1] == '\n');
    }
}

static void
split_header(const char *s, size_t len, const char **hdr, size_t *hdr_len,
             const char **body, size_t *body_len)
{
    const char *e;

    if (len >= 2 && memcmp(s, "\r\n", 2) == 0) {
        *hdr = s;
        *hdr_len = 0;
        *body = s + 2;
        *body_len = len - 2;
        return;
    }
    e = find(s, len, "\r\n\r\n");
    assert_non_null(e);
    *hdr = s;
    *hdr_len = (size_t)(e - s) + 2;
    *body = e + 4;
    *body_len = len - (size_t)(*body - s);
}

static void
parse(const struct buf *b, struct dsn_msg *m)
{
    const char *ct, *q, *q2, *p, *end = b->data + b->len;
    const char *body;
    size_t body_len;
    char delim[160];

    memset(m, 0, sizeof(*m));
    assert_crlf_only(b->data, b->len);
    split_header(b->data, b->len, &m->hdr, &m->hdr_len, &body, &body_len);
    ct = find(m->hdr, m->hdr_len,
              "Content-Type: multipart/report; "
              "report-type=delivery-status;");
    assert_non_null(ct);
    q = find(ct, m->hdr_len - (size_t)(ct - m->hdr), "boundary=\"");
    assert_non_null(q);
    q += strlen("boundary=\"");
    q2 = memchr(q, '"', (size_t)(end - q));
    assert_non_null(q2);
    assert_true(q2 - q > 0 && (size_t)(q2 - q) < sizeof(m->boundary));
    memcpy(m->boundary, q, (size_t)(q2 - q));
    /* RFC 2046 §5.1.1: 1 to 70 characters. */
    assert_true(strlen(m->boundary) <= 70);

    snprintf(delim, sizeof(delim), "\r\n--%s", m->boundary);
    p = find(body, body_len, delim);
    assert_non_null(p);
    for (;;) {
        const char *start = p + strlen(delim), *next;

        if ((size_t)(end - start) >= 4 && memcmp(start, "--\r\n", 4) == 0) {
            assert_ptr_equal(start + 4, end); /* nothing after the close */
            break;
        }
        assert_memory_equal(start, "\r\n", 2);
        start += 2;
        next = find(start, (size_t)(end - start), delim);
        assert_non_null(next);
        assert_true(m->nparts < 4);
        split_header(start, (size_t)(next - start), &m->parts[m->nparts].hdr,
                     &m->parts[m->nparts].hdr_len, &m->parts[m->nparts].body,
                     &m->parts[m->nparts].body_len);
        m->nparts++;
        p = next;
    }
}

static void
compose_ok(const struct dsn_report *r, struct buf *b, struct dsn_msg *m)
{
    buf_init(b, OUT_MAX);
    assert_int_equal(dsn_compose(r, b), 0);
    assert_non_null(b->data);
    assert_int_equal(strlen(b->data), b->len);
    parse(b, m);
    assert_int_equal(m->nparts, 3);
}

/* The delivery-status body split into its blocks (per-message first). */
struct blocks {
    const char *p[8];
    size_t len[8];
    size_t n;
};

static void
split_blocks(const struct part *pt, struct blocks *bl)
{
    const char *p = pt->body, *end = pt->body + pt->body_len;

    memset(bl, 0, sizeof(*bl));
    while (p < end) {
        const char *e = find(p, (size_t)(end - p), "\r\n\r\n");
        size_t l = e ? (size_t)(e - p) + 2 : (size_t)(end - p);

        assert_true(bl->n < 8);
        bl->p[bl->n] = p;
        bl->len[bl->n] = l;
        bl->n++;
        p = e ? e + 4 : end;
    }
}

/* ---- tests ----------------------------------------------------------- */

static void
test_structure(void **state)
{
    struct dsn_report r;
    struct buf b;
    struct dsn_msg m;
    const char *mid;

    (void)state;
    report_init(&r, one_rcpt, 1);
    compose_ok(&r, &b, &m);

    assert_true(
        has_line(m.hdr, m.hdr_len, "Date: Wed, 15 Nov 2023 02:13:20 +0000"));
    assert_true(has_line(m.hdr, m.hdr_len,
                         "From: Mail Delivery System "
                         "<MAILER-DAEMON@relay.example.com>"));
    assert_true(has_line(m.hdr, m.hdr_len, "To: <alice@example.org>"));
    assert_true(has_line(m.hdr, m.hdr_len,
                         "Subject: Undelivered Mail Returned to Sender"));
    assert_true(has_line(m.hdr, m.hdr_len, "Auto-Submitted: auto-replied"));
    assert_true(has_line(m.hdr, m.hdr_len, "MIME-Version: 1.0"));
    /* All ASCII: no 8bit declared. */
    assert_null(find(m.hdr, m.hdr_len, "Content-Transfer-Encoding"));
    mid = find(m.hdr, m.hdr_len, "\r\nMessage-ID: <");
    assert_non_null(mid);
    mid += strlen("\r\nMessage-ID: <");
    for (int i = 0; i < 32; i++)
        assert_non_null(strchr("0123456789abcdef", mid[i]));
    assert_memory_equal(mid + 32, "@relay.example.com>\r\n", 21);

    /* The boundary is not in the original. */
    assert_null(find(ORIG, strlen(ORIG), m.boundary));

    assert_true(has_line(m.parts[0].hdr, m.parts[0].hdr_len,
                         "Content-Type: text/plain; charset=utf-8"));
    assert_true(has_line(m.parts[1].hdr, m.parts[1].hdr_len,
                         "Content-Type: message/delivery-status"));
    assert_true(has_line(m.parts[2].hdr, m.parts[2].hdr_len,
                         "Content-Type: text/rfc822-headers"));

    /* Part 1 names the recipient, the remote host, its reply, advice. */
    assert_non_null(find(m.parts[0].body, m.parts[0].body_len,
                         "<bob@example.net>: host mx.example.net said: 550 "
                         "5.1.1"));
    assert_non_null(
        find(m.parts[0].body, m.parts[0].body_len, "Check the address"));
    assert_non_null(
        find(m.parts[0].body, m.parts[0].body_len, "relay.example.com"));

    /* Part 2. */
    assert_true(has_line(m.parts[1].body, m.parts[1].body_len,
                         "Reporting-MTA: dns; relay.example.com"));
    assert_true(has_line(m.parts[1].body, m.parts[1].body_len,
                         "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000"));
    assert_false(has_line_prefix(m.parts[1].body, m.parts[1].body_len,
                                 "Original-Envelope-Id:"));
    assert_false(has_line_prefix(m.parts[1].body, m.parts[1].body_len,
                                 "Original-Recipient:"));
    assert_true(has_line(m.parts[1].body, m.parts[1].body_len,
                         "Diagnostic-Code: smtp; 550 5.1.1 "
                         "<bob@example.net>: no such user"));
    assert_true(has_line(m.parts[1].body, m.parts[1].body_len,
                         "Last-Attempt-Date: Wed, 15 Nov 2023 02:12:20 "
                         "+0000"));

    /* Part 3: the header section only, verbatim. */
    assert_int_equal(m.parts[2].body_len, strlen(ORIG) - 28);
    assert_memory_equal(m.parts[2].body, ORIG, strlen(ORIG) - 28);
    assert_null(find(b.data, b.len, "BODY-LINE"));

    assert_true(max_line(b.data, b.len) <= 78);
    buf_cleanup(&b);
}

static void
test_mixed_rcpts(void **state)
{
    static const struct dsn_rcpt rc[] = {
        {.addr = "u1@example.net",
         .orcpt = "rfc822;u1+2Balias@example.net",
         .action = DSN_FAILED,
         .status = "5.2.2",
         .remote_mta = "mx1.example.net",
         .diagnostic = "552 5.2.2 mailbox full",
         .last_attempt = T_NOW},
        {.addr = "u2@example.com",
         .action = DSN_DELAYED,
         .status = "4.4.1",
         .diagnostic = "connect to mx.example.com: Connection timed out"},
        {.addr = "u3@example.org",
         .orcpt = "",
         .action = DSN_DELIVERED,
         .status = "2.0.0",
         .remote_mta = "mx3.example.org",
         .diagnostic = "250 2.0.0 Ok: queued as 4Xyz"},
        {.addr = "u4@example.info",
         .action = DSN_RELAYED,
         .status = "2.0.0",
         .remote_mta = "old.example.info"},
    };
    struct dsn_report r;
    struct buf b;
    struct dsn_msg m;
    struct blocks bl;

    (void)state;
    report_init(&r, rc, 4);
    r.envid = "QQ314159";
    r.retry_until = T_ARRIVAL + 5 * 86400;
    compose_ok(&r, &b, &m);
    assert_true(has_line(m.hdr, m.hdr_len,
                         "Subject: Undelivered Mail Returned to Sender"));
    split_blocks(&m.parts[1], &bl);
    assert_int_equal(bl.n, 5);
    assert_true(has_line(bl.p[0], bl.len[0], "Original-Envelope-Id: QQ314159"));

    /* 1: failed, ORCPT passed through as given. */
    assert_true(has_line(bl.p[1], bl.len[1],
                         "Original-Recipient: rfc822;u1+2Balias@example.net"));
    assert_true(has_line(bl.p[1], bl.len[1],
                         "Final-Recipient: rfc822; u1@example.net"));
    assert_true(has_line(bl.p[1], bl.len[1], "Action: failed"));
    assert_true(has_line(bl.p[1], bl.len[1], "Status: 5.2.2"));
    assert_true(
        has_line(bl.p[1], bl.len[1], "Remote-MTA: dns; mx1.example.net"));
    assert_true(has_line(bl.p[1], bl.len[1],
                         "Diagnostic-Code: smtp; 552 5.2.2 mailbox full"));
    assert_true(has_line_prefix(bl.p[1], bl.len[1], "Last-Attempt-Date: "));
    assert_false(has_line_prefix(bl.p[1], bl.len[1], "Will-Retry-Until:"));

    /* 2: delayed, no remote, retry date. */
    assert_false(has_line_prefix(bl.p[2], bl.len[2], "Original-Recipient:"));
    assert_true(has_line(bl.p[2], bl.len[2],
                         "Final-Recipient: rfc822; u2@example.com"));
    assert_true(has_line(bl.p[2], bl.len[2], "Action: delayed"));
    assert_true(has_line(bl.p[2], bl.len[2], "Status: 4.4.1"));
    assert_false(has_line_prefix(bl.p[2], bl.len[2], "Remote-MTA:"));
    assert_false(has_line_prefix(bl.p[2], bl.len[2], "Last-Attempt-Date:"));
    assert_true(has_line(bl.p[2], bl.len[2],
                         "Will-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000"));

    /* 3: delivered; "" orcpt is absent. */
    assert_false(has_line_prefix(bl.p[3], bl.len[3], "Original-Recipient:"));
    assert_true(has_line(bl.p[3], bl.len[3], "Action: delivered"));
    assert_true(has_line(bl.p[3], bl.len[3], "Status: 2.0.0"));

    /* 4: relayed, no diagnostic. */
    assert_true(has_line(bl.p[4], bl.len[4], "Action: relayed"));
    assert_true(
        has_line(bl.p[4], bl.len[4], "Remote-MTA: dns; old.example.info"));
    assert_false(has_line_prefix(bl.p[4], bl.len[4], "Diagnostic-Code:"));
    assert_false(has_line_prefix(bl.p[4], bl.len[4], "Will-Retry-Until:"));

    /* Part 1 covers every group and every recipient. */
    assert_non_null(find(m.parts[0].body, m.parts[0].body_len,
                         "could not\r\nbe delivered"));
    assert_non_null(
        find(m.parts[0].body, m.parts[0].body_len, "THIS IS A WARNING ONLY"));
    assert_non_null(find(m.parts[0].body, m.parts[0].body_len,
                         "could not be delivered for 4.0 hours"));
    assert_non_null(
        find(m.parts[0].body, m.parts[0].body_len, "successfully delivered"));
    assert_non_null(find(m.parts[0].body, m.parts[0].body_len,
                         "does not report delivery status"));
    for (size_t i = 0; i < 4; i++) {
        char want[64];

        snprintf(want, sizeof(want), "<%s>:", rc[i].addr);
        assert_non_null(find(m.parts[0].body, m.parts[0].body_len, want));
    }
    assert_true(has_line(m.parts[2].hdr, m.parts[2].hdr_len,
                         "Content-Description: Undelivered Message Headers"));
    buf_cleanup(&b);
}

static void
test_subjects(void **state)
{
    struct dsn_rcpt rc = {
        .addr = "x@example.net", .action = DSN_DELAYED, .status = "4.4.7"};
    struct dsn_report r;
    struct buf b;
    struct dsn_msg m;

    (void)state;
    report_init(&r, &rc, 1);
    compose_ok(&r, &b, &m);
    assert_true(has_line(m.hdr, m.hdr_len,
                         "Subject: Delayed Mail (still being retried)"));
    /* No retry_until: no Will-Retry-Until. */
    assert_false(has_line_prefix(m.parts[1].body, m.parts[1].body_len,
                                 "Will-Retry-Until:"));
    buf_cleanup(&b);

    rc.action = DSN_DELIVERED;
    rc.status = "2.1.5";
    compose_ok(&r, &b, &m);
    assert_true(
        has_line(m.hdr, m.hdr_len, "Subject: Successful Mail Delivery Report"));
    assert_true(has_line(m.parts[2].hdr, m.parts[2].hdr_len,
                         "Content-Description: Message Headers"));
    buf_cleanup(&b);

    /* A failure that was temporary until the queue lifetime ran out. */
    rc.action = DSN_FAILED;
    rc.status = "4.4.7";
    compose_ok(&r, &b, &m);
    assert_true(
        has_line(m.parts[1].body, m.parts[1].body_len, "Action: failed"));
    buf_cleanup(&b);
}

static void
test_ret_full(void **state)
{
    struct dsn_report r;
    struct buf b;
    struct dsn_msg m;

    (void)state;
    report_init(&r, one_rcpt, 1);
    r.ret_full = 1;
    compose_ok(&r, &b, &m);
    assert_true(has_line(m.parts[2].hdr, m.parts[2].hdr_len,
                         "Content-Type: message/rfc822"));
    assert_true(has_line(m.parts[2].hdr, m.parts[2].hdr_len,
                         "Content-Description: Undelivered Message"));
    /* The whole original, verbatim, then the delimiter. */
    assert_int_equal(m.parts[2].body_len, strlen(ORIG));
    assert_memory_equal(m.parts[2].body, ORIG, strlen(ORIG));
    buf_cleanup(&b);

    /* An original without an empty line is all header, and one without a
       final CRLF gets one before the delimiter. */
    r.ret_full = 0;
    r.orig = "Subject: only headers\r\nX-A: 1";
    r.orig_len = strlen(r.orig);
    compose_ok(&r, &b, &m);
    assert_int_equal(m.parts[2].body_len, r.orig_len + 2);
    assert_memory_equal(m.parts[2].body, r.orig, r.orig_len);
    buf_cleanup(&b);

    /* An empty original. */
    r.orig = NULL;
    r.orig_len = 0;
    compose_ok(&r, &b, &m);
    assert_int_equal(m.parts[2].body_len, 0);
    buf_cleanup(&b);

    /* An original whose body is 8-bit: 8bit declared for it and the
       whole, but not for the notification. */
    r.ret_full = 1;
    r.orig = "Subject: x\r\n\r\ncaf\xc3\xa9\r\n";
    r.orig_len = strlen(r.orig);
    compose_ok(&r, &b, &m);
    assert_true(has_line(m.hdr, m.hdr_len, "Content-Transfer-Encoding: 8bit"));
    assert_true(has_line(m.parts[2].hdr, m.parts[2].hdr_len,
                         "Content-Transfer-Encoding: 8bit"));
    assert_false(has_line_prefix(m.parts[0].hdr, m.parts[0].hdr_len,
                                 "Content-Transfer-Encoding"));
    buf_cleanup(&b);
}

static void
test_smtputf8(void **state)
{
    static const struct dsn_rcpt rc[] = {
        {.addr = "j\xc3\xb6rg@b\xc3\xbc"
                 "cher.example",
         .orcpt = "utf-8;j\xc3\xb6rg@b\xc3\xbc"
                  "cher.example",
         .action = DSN_FAILED,
         .status = "5.1.1",
         .diagnostic = "550 5.1.1 Benutzer unbekannt: j\xc3\xb6rg"},
        {.addr = "ascii@example.net", .action = DSN_FAILED, .status = "5.1.1"}};
    static const char orig[] = "From: \xc3\xa9@example.org\r\n"
                               "Subject: \xe2\x82\xac\r\n\r\nbody\r\n";
    struct dsn_report r;
    struct buf b;
    struct dsn_msg m;
    struct blocks bl;

    (void)state;
    report_init(&r, rc, 2);
    r.smtputf8 = 1;
    r.orig = orig;
    r.orig_len = strlen(orig);
    r.to = "\xc3\xa9@example.org";
    compose_ok(&r, &b, &m);
    assert_true(has_line(m.parts[1].hdr, m.parts[1].hdr_len,
                         "Content-Type: message/global-delivery-status"));
    assert_true(has_line(m.parts[2].hdr, m.parts[2].hdr_len,
                         "Content-Type: message/global-headers"));
    assert_true(has_line(m.hdr, m.hdr_len, "Content-Transfer-Encoding: 8bit"));
    assert_true(has_line(m.hdr, m.hdr_len, "To: <\xc3\xa9@example.org>"));
    split_blocks(&m.parts[1], &bl);
    assert_int_equal(bl.n, 3);
    assert_true(has_line(bl.p[1], bl.len[1],
                         "Final-Recipient: utf-8; j\xc3\xb6rg@b\xc3\xbc"
                         "cher.example"));
    assert_true(has_line(bl.p[1], bl.len[1],
                         "Original-Recipient: utf-8;j\xc3\xb6rg@b\xc3\xbc"
                         "cher.example"));
    /* UTF-8 in the diagnostic is kept in a global DSN. */
    assert_true(has_line(bl.p[1], bl.len[1],
                         "Diagnostic-Code: smtp; 550 5.1.1 Benutzer "
                         "unbekannt: j\xc3\xb6rg"));
    assert_true(has_line(bl.p[2], bl.len[2],
                         "Final-Recipient: rfc822; ascii@example.net"));
    buf_cleanup(&b);

    r.ret_full = 1;
    compose_ok(&r, &b, &m);
    assert_true(has_line(m.parts[2].hdr, m.parts[2].hdr_len,
                         "Content-Type: message/global"));
    assert_memory_equal(m.parts[2].body, orig, strlen(orig));
    buf_cleanup(&b);
}

/* Undo RFC 5322 folding (CRLF before WSP) of one field's lines. */
static size_t
unfold(const char *p, size_t len, char *out)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\r' && i + 2 < len && p[i + 1] == '\n' &&
            (p[i + 2] == ' ' || p[i + 2] == '\t')) {
            i++;
            continue;
        }
        out[n++] = p[i];
    }
    out[n] = '\0';
    return n;
}

static void
fold_case(const char *diag, const char *want_unfolded)
{
    struct dsn_rcpt rc = {.addr = "bob@example.net",
                          .action = DSN_FAILED,
                          .status = "5.0.0",
                          .diagnostic = diag};
    struct dsn_report r;
    struct buf b;
    struct dsn_msg m;
    const char *f, *e;
    char *u;

    report_init(&r, &rc, 1);
    compose_ok(&r, &b, &m);
    assert_true(max_line(b.data, b.len) < 998);
    f = find(m.parts[1].body, m.parts[1].body_len, "Diagnostic-Code: smtp; ");
    assert_non_null(f);
    /* The field ends at the first line that is not a continuation. */
    e = f;
    for (;;) {
        e = strstr(e, "\r\n");
        assert_non_null(e);
        if (e[2] != ' ' && e[2] != '\t')
            break;
        e += 2;
    }
    u = malloc((size_t)(e - f) + 1);
    assert_non_null(u);
    unfold(f, (size_t)(e - f), u);
    assert_string_equal(u + strlen("Diagnostic-Code: smtp; "), want_unfolded);
    free(u);
    buf_cleanup(&b);
}

static void
test_fold_long_diagnostic(void **state)
{
    char *diag = malloc(2001);
    size_t n = 0;

    (void)state;
    assert_non_null(diag);
    /* 2000 bytes of words: lines within 78, unfolding gives it back. */
    while (n < 2000) {
        size_t w = 1 + (n * 7) % 13;

        for (size_t i = 0; i < w && n < 2000; i++, n++)
            diag[n] = (char)('a' + (n % 26));
        if (n < 1999)
            diag[n++] = ' ';
    }
    diag[n] = '\0';
    if (diag[n - 1] == ' ')
        diag[--n] = '\0';
    {
        struct dsn_rcpt rc = {.addr = "bob@example.net",
                              .action = DSN_FAILED,
                              .status = "5.0.0",
                              .diagnostic = diag};
        struct dsn_report r;
        struct buf b;
        struct dsn_msg m;

        report_init(&r, &rc, 1);
        compose_ok(&r, &b, &m);
        assert_true(max_line(b.data, b.len) <= 78);
        buf_cleanup(&b);
    }
    fold_case(diag, diag);

    /* One 2000-byte word: cut, never a line of 998 or more. Cutting adds
       a space on unfolding, and nothing else changes. */
    memset(diag, 'x', 2000);
    diag[2000] = '\0';
    {
        struct dsn_rcpt rc = {.addr = "bob@example.net",
                              .action = DSN_FAILED,
                              .status = "5.0.0",
                              .diagnostic = diag};
        struct dsn_report r;
        struct buf b;
        struct dsn_msg m;
        const char *f;
        size_t xs = 0;

        report_init(&r, &rc, 1);
        compose_ok(&r, &b, &m);
        assert_true(max_line(b.data, b.len) < 998);
        f = find(m.parts[1].body, m.parts[1].body_len,
                 "Diagnostic-Code: smtp; ");
        assert_non_null(f);
        for (f += 23; *f == 'x' || *f == '\r' || *f == '\n' || *f == ' '; f++)
            xs += *f == 'x';
        assert_int_equal(xs, 2000);
        buf_cleanup(&b);
    }
    free(diag);
}

/* Cuts in a long word never split a UTF-8 sequence, and a long run of
   stray continuation octets still makes progress (a bug found by a
   random test: the cut backed up to 0 and looped until RM_E_TOOBIG). */
static void
test_fold_utf8_cut(void **state)
{
    char *diag = malloc(3001);
    struct dsn_rcpt rc = {
        .addr = "bob@example.net", .action = DSN_FAILED, .status = "5.0.0"};
    struct dsn_report r;
    struct buf b;
    struct dsn_msg m;
    const char *f;

    (void)state;
    assert_non_null(diag);
    report_init(&r, &rc, 1);
    r.smtputf8 = 1;
    rc.diagnostic = diag;

    /* 1000 x U+00E9 (2 octets) then 1 octet: odd offsets everywhere. */
    for (size_t i = 0; i < 1000; i++)
        memcpy(diag + 2 * i, "\xc3\xa9", 2);
    memcpy(diag + 2000, "\xe2\x82\xac!", 4);
    diag[2004] = '\0';
    compose_ok(&r, &b, &m);
    assert_true(max_line(b.data, b.len) < 998);
    f = find(m.parts[1].body, m.parts[1].body_len, "Diagnostic-Code: smtp; ");
    assert_non_null(f);
    /* No '?': nothing was split. */
    assert_null(
        memchr(f, '?', (size_t)(m.parts[1].body + m.parts[1].body_len - f)));
    buf_cleanup(&b);

    /* 3000 continuation octets with nothing to start them. */
    memset(diag, '\x80', 3000);
    diag[3000] = '\0';
    compose_ok(&r, &b, &m);
    assert_true(max_line(b.data, b.len) < 998);
    assert_null(memchr(b.data, 0x80, b.len));
    buf_cleanup(&b);
    free(diag);
}

static void
test_diagnostic_injection(void **state)
{
    struct dsn_rcpt rc = {
        .addr = "bob@example.net",
        .action = DSN_FAILED,
        .status = "5.7.1",
        .remote_mta = "mx.example.net",
        .diagnostic = "550 5.7.1 no\r\nX-Injected: yes\r\n\r\n--fake--\r\n"
                      "Action: delivered\n\rtab\there\x01\x7f"
                      "bell\a end  \r\n"};
    struct dsn_report r;
    struct buf b;
    struct dsn_msg m;
    struct blocks bl;

    (void)state;
    report_init(&r, &rc, 1);
    compose_ok(&r, &b, &m);
    assert_false(has_line_prefix(b.data, b.len, "X-Injected"));
    assert_false(has_line_prefix(b.data, b.len, "--fake"));
    assert_false(has_line(b.data, b.len, "Action: delivered"));
    split_blocks(&m.parts[1], &bl);
    assert_int_equal(bl.n, 2);
    assert_true(has_line_prefix(bl.p[1], bl.len[1], "Diagnostic-Code: "));
    for (size_t i = 0; i < b.len; i++) {
        unsigned char c = (unsigned char)b.data[i];

        assert_true(c >= 0x20 || c == '\r' || c == '\n' || c == '\t');
        assert_true(c != 0x7f);
    }
    assert_non_null(find(m.parts[0].body, m.parts[0].body_len,
                         "refused by the recipient's policy"));
    buf_cleanup(&b);
    /* The field, unfolded: every control character became one space. */
    fold_case(rc.diagnostic, "550 5.7.1 no X-Injected: yes --fake-- Action: "
                             "delivered tab here bell end");

    /* 8-bit octets without SMTPUTF8 become '?'; a diagnostic that is
       only white space is absent. */
    rc.diagnostic = "550 caf\xc3\xa9 \xff";
    compose_ok(&r, &b, &m);
    assert_true(has_line(m.parts[1].body, m.parts[1].body_len,
                         "Diagnostic-Code: smtp; 550 caf?? ?"));
    for (size_t i = 0; i < b.len; i++)
        assert_true((unsigned char)b.data[i] < 0x80);
    buf_cleanup(&b);

    rc.diagnostic = " \r\n\t ";
    compose_ok(&r, &b, &m);
    assert_false(has_line_prefix(m.parts[1].body, m.parts[1].body_len,
                                 "Diagnostic-Code:"));
    buf_cleanup(&b);

    /* Malformed UTF-8 in a global DSN becomes '?' too. */
    rc.diagnostic = "550 \xc3\xa9 \xc0\xaf \xed\xa0\x80";
    r.smtputf8 = 1;
    compose_ok(&r, &b, &m);
    assert_true(has_line(m.parts[1].body, m.parts[1].body_len,
                         "Diagnostic-Code: smtp; 550 \xc3\xa9 ?? ???"));
    buf_cleanup(&b);
}

static void
test_toobig(void **state)
{
    struct dsn_report r;
    struct buf b;
    struct buf full;
    struct dsn_msg m;

    (void)state;
    report_init(&r, one_rcpt, 1);
    buf_init(&b, 512);
    assert_int_equal(buf_append(&b, "keep", 4), 0);
    assert_int_equal(dsn_compose(&r, &b), RM_E_TOOBIG);
    /* Left as it was. */
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "keep");
    buf_cleanup(&b);

    /* Every size short of the whole report fails cleanly. */
    compose_ok(&r, &full, &m);
    for (size_t max = 0; max < full.len; max += 97) {
        buf_init(&b, max);
        assert_int_equal(dsn_compose(&r, &b), RM_E_TOOBIG);
        assert_int_equal(b.len, 0);
        buf_cleanup(&b);
    }
    /* The same size is enough (the length is the same each time). */
    buf_init(&b, full.len);
    assert_int_equal(dsn_compose(&r, &b), 0);
    assert_int_equal(b.len, full.len);
    buf_cleanup(&b);
    buf_cleanup(&full);
}

static void
expect_inval(const struct dsn_report *r)
{
    struct buf b;

    buf_init(&b, OUT_MAX);
    assert_int_equal(dsn_compose(r, &b), RM_E_INVAL);
    assert_int_equal(b.len, 0);
    buf_cleanup(&b);
}

static void
test_inval(void **state)
{
    struct dsn_rcpt rc;
    struct dsn_report r;
    struct buf b;
    char longaddr[600];

    (void)state;
    buf_init(&b, OUT_MAX);
    assert_int_equal(dsn_compose(NULL, &b), RM_E_INVAL);
    report_init(&r, one_rcpt, 1);
    assert_int_equal(dsn_compose(&r, NULL), RM_E_INVAL);
    buf_cleanup(&b);

#define BAD(stmt)                                                              \
    do {                                                                       \
        rc = one_rcpt[0];                                                      \
        report_init(&r, &rc, 1);                                               \
        stmt;                                                                  \
        expect_inval(&r);                                                      \
    } while (0)

    BAD(r.nrcpts = 0);
    BAD(r.rcpts = NULL);
    BAD(r.reporting_mta = NULL);
    BAD(r.reporting_mta = "");
    BAD(r.reporting_mta = "host\r\nX-Bad: 1");
    BAD(r.from = NULL);
    BAD(r.from = "a@b>\r\nBcc: x@y");
    BAD(r.to = NULL);
    BAD(r.to = ""); /* the null sender gets no report */
    BAD(r.to = "a@b\nBcc: c@d");
    BAD(r.to = "a>b@c");
    BAD(r.msgid_domain = NULL);
    BAD(r.msgid_domain = "ex ample");
    BAD(r.envid = "with space");
    BAD(r.envid = "caf\xc3\xa9");
    BAD(r.now = 0);
    BAD(r.arrival = -1);
    BAD(r.retry_until = -5);
    BAD(r.orig = NULL);
    BAD(r.to = "\xc3\xa9@example.org"); /* 8-bit without SMTPUTF8 */
    BAD(r.now = INT64_C(99999999999999));
    BAD(rc.addr = NULL);
    BAD(rc.addr = "");
    BAD(rc.addr = "a@b\r\nX: y");
    BAD(rc.addr = "j\xc3\xb6rg@example.org");
    BAD((r.smtputf8 = 1, rc.addr = "bad\xc3@example.org"));
    BAD(rc.status = NULL);
    BAD(rc.status = "5.1");
    BAD(rc.status = "5.1.1x");
    BAD(rc.status = "3.1.1");
    BAD(rc.status = "5.1234.1");
    BAD(rc.status = "2.0.0"); /* failed with success class */
    BAD((rc.action = DSN_DELAYED, rc.status = "5.1.1"));
    BAD((rc.action = DSN_DELIVERED, rc.status = "4.0.0"));
    BAD((rc.action = DSN_RELAYED, rc.status = "5.0.0"));
    BAD(rc.action = (enum dsn_action)7);
    BAD(rc.orcpt = "no-semicolon");
    BAD(rc.orcpt = ";a@b");
    BAD(rc.orcpt = "rfc822;");
    BAD(rc.orcpt = "rfc822;a@b\r\nX: y");
    BAD(rc.remote_mta = "mx\texample");
    BAD(rc.last_attempt = -1);
    memset(longaddr, 'a', sizeof(longaddr) - 1);
    longaddr[sizeof(longaddr) - 1] = '\0';
    BAD(rc.addr = longaddr);
    BAD(rc.orcpt = longaddr);
#undef BAD

    /* The second recipient is checked too. */
    {
        struct dsn_rcpt two[2] = {one_rcpt[0], one_rcpt[0]};

        two[1].status = "9.9.9";
        report_init(&r, two, 2);
        expect_inval(&r);
    }
}

static void
test_status_from_reply(void **state)
{
    char out[16];

    (void)state;
    assert_string_equal(dsn_status_from_reply(550, "5.1.1", out), "5.1.1");
    assert_ptr_equal(dsn_status_from_reply(550, "5.1.1", out), out);
    assert_string_equal(dsn_status_from_reply(452, "4.2.2", out), "4.2.2");
    assert_string_equal(dsn_status_from_reply(250, "2.1.5", out), "2.1.5");
    /* A pointer into the reply text: the code ends at SP. */
    assert_string_equal(dsn_status_from_reply(550, "5.7.1 relay denied", out),
                        "5.7.1");
    assert_string_equal(dsn_status_from_reply(550, "5.123.456", out),
                        "5.123.456");
    /* Class mismatch, malformed, absent. */
    assert_string_equal(dsn_status_from_reply(550, "4.1.1", out), "5.0.0");
    assert_string_equal(dsn_status_from_reply(451, "5.1.1", out), "4.0.0");
    assert_string_equal(dsn_status_from_reply(250, "5.1.1", out), "2.0.0");
    assert_string_equal(dsn_status_from_reply(550, NULL, out), "5.0.0");
    assert_string_equal(dsn_status_from_reply(421, "", out), "4.0.0");
    assert_string_equal(dsn_status_from_reply(550, "5.1", out), "5.0.0");
    assert_string_equal(dsn_status_from_reply(550, "5.1.1.1", out), "5.0.0");
    assert_string_equal(dsn_status_from_reply(550, "5.1234.1", out), "5.0.0");
    assert_string_equal(dsn_status_from_reply(550, "5.1.1x", out), "5.0.0");
    assert_string_equal(dsn_status_from_reply(550, "x5.1.1", out), "5.0.0");
    /* Not a final reply class: reported as a permanent failure. */
    assert_string_equal(dsn_status_from_reply(354, "3.0.0", out), "5.0.0");
    assert_string_equal(dsn_status_from_reply(0, NULL, out), "5.0.0");
    assert_string_equal(dsn_status_from_reply(-250, "2.0.0", out), "5.0.0");
    assert_string_equal(dsn_status_from_reply(999, "5.0.0", out), "5.0.0");
}

static void
test_random_parts_differ(void **state)
{
    struct dsn_report r;
    struct buf b1, b2;
    struct dsn_msg m1, m2;

    (void)state;
    report_init(&r, one_rcpt, 1);
    compose_ok(&r, &b1, &m1);
    compose_ok(&r, &b2, &m2);
    assert_string_not_equal(m1.boundary, m2.boundary);
    assert_int_equal(b1.len, b2.len);
    buf_cleanup(&b1);
    buf_cleanup(&b2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_mixed_rcpts),
        cmocka_unit_test(test_subjects),
        cmocka_unit_test(test_ret_full),
        cmocka_unit_test(test_smtputf8),
        cmocka_unit_test(test_fold_long_diagnostic),
        cmocka_unit_test(test_fold_utf8_cut),
        cmocka_unit_test(test_diagnostic_injection),
        cmocka_unit_test(test_toobig),
        cmocka_unit_test(test_inval),
        cmocka_unit_test(test_status_from_reply),
        cmocka_unit_test(test_random_parts_differ),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
