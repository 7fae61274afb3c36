/*
 * Unit tests for node/smtp_parse.c: line tokenizer, command parser, ESMTP
 * parameter helpers, the DATA / BDAT machine. Linked only with rm_parse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "node/smtp_parse.h"

/* A string literal with its length (it may hold NUL bytes). */
#define S(lit) (lit), (sizeof(lit) - 1)

static struct smtp_slice
sl(const char *s)
{
    struct smtp_slice v = {s, strlen(s)};
    return v;
}

/* ---- 1. lines ------------------------------------------------------- */

static void
test_line_basic(void **state)
{
    struct smtp_line_state ls;
    struct smtp_slice line;
    size_t used;
    const char in[] = "HELO a\r\nNOOP\r\nQU";

    (void)state;
    smtp_line_init(&ls, 512);
    assert_int_equal(smtp_line_next(&ls, in, sizeof(in) - 1, &line, &used),
                     SMTP_TOK_LINE);
    assert_ptr_equal(line.p, in);
    assert_int_equal(line.len, 6);
    assert_int_equal(used, 8);
    assert_int_equal(smtp_line_next(&ls, in + 8, sizeof(in) - 9, &line, &used),
                     SMTP_TOK_LINE);
    assert_memory_equal(line.p, "NOOP", 4);
    assert_int_equal(line.len, 4);
    assert_int_equal(used, 6);
    assert_int_equal(smtp_line_next(&ls, in + 14, 2, &line, &used),
                     SMTP_TOK_AGAIN);
    assert_int_equal(used, 0);
    assert_int_equal(smtp_line_next(&ls, in, 0, &line, &used), SMTP_TOK_AGAIN);
    assert_int_equal(used, 0);
}

static void
test_line_barelf_and_cr(void **state)
{
    struct smtp_line_state ls;
    struct smtp_slice line;
    size_t used;

    (void)state;
    smtp_line_init(&ls, 512);
    /* §2.3.8: LF alone never ends a line */
    assert_int_equal(smtp_line_next(&ls, S("NOOP\nQUIT\r\n"), &line, &used),
                     SMTP_TOK_BARELF);
    assert_int_equal(used, 5);
    assert_int_equal(smtp_line_next(&ls, S("\n"), &line, &used),
                     SMTP_TOK_BARELF);
    assert_int_equal(used, 1);
    /* a CR inside the line is part of it (the parser refuses it) */
    assert_int_equal(smtp_line_next(&ls, S("NO\rOP\r\n"), &line, &used),
                     SMTP_TOK_LINE);
    assert_int_equal(line.len, 5);
    assert_int_equal(used, 7);
    assert_int_equal(smtp_line_next(&ls, S("NOOP\r\r\n"), &line, &used),
                     SMTP_TOK_LINE);
    assert_int_equal(line.len, 5);
    /* an empty line is a line */
    assert_int_equal(smtp_line_next(&ls, S("\r\n"), &line, &used),
                     SMTP_TOK_LINE);
    assert_int_equal(line.len, 0);
    assert_int_equal(used, 2);
}

static void
test_line_limit(void **state)
{
    struct smtp_line_state ls;
    struct smtp_slice line;
    size_t used;
    char buf[1200];

    (void)state;
    smtp_line_init(&ls, 512);
    /* §4.5.3.1.4: 512 with the CRLF is accepted ... */
    memset(buf, 'a', 510);
    memcpy(buf + 510, "\r\n", 2);
    assert_int_equal(smtp_line_next(&ls, buf, 512, &line, &used),
                     SMTP_TOK_LINE);
    assert_int_equal(line.len, 510);
    assert_int_equal(used, 512);
    /* ... 513 is not, whole in one buffer */
    memset(buf, 'a', 511);
    memcpy(buf + 511, "\r\nNOOP\r\n", 8);
    assert_int_equal(smtp_line_next(&ls, buf, 519, &line, &used),
                     SMTP_TOK_TOOLONG);
    assert_int_equal(used, 513);
    assert_int_equal(ls.discarding, 0);
    assert_int_equal(smtp_line_next(&ls, buf + 513, 6, &line, &used),
                     SMTP_TOK_LINE);
    assert_int_equal(line.len, 4);

    /* 511 bytes ending in CR: still fits if LF comes next */
    memset(buf, 'a', 510);
    buf[510] = '\r';
    assert_int_equal(smtp_line_next(&ls, buf, 511, &line, &used),
                     SMTP_TOK_AGAIN);
    assert_int_equal(used, 0);
    buf[511] = '\n';
    assert_int_equal(smtp_line_next(&ls, buf, 512, &line, &used),
                     SMTP_TOK_LINE);
    assert_int_equal(line.len, 510);

    /* 512 bytes and no LF: can never fit, discard */
    memset(buf, 'a', 511);
    buf[511] = '\r';
    assert_int_equal(smtp_line_next(&ls, buf, 512, &line, &used),
                     SMTP_TOK_AGAIN);
    assert_int_equal(used, 512);
    assert_int_equal(ls.discarding, 1);
    assert_int_equal(smtp_line_next(&ls, S("more"), &line, &used),
                     SMTP_TOK_AGAIN);
    assert_int_equal(used, 4);
    /* TOOLONG is reported once, when its LF comes (bare or not) */
    assert_int_equal(smtp_line_next(&ls, S("xyz\nNOOP\r\n"), &line, &used),
                     SMTP_TOK_TOOLONG);
    assert_int_equal(used, 4);
    assert_int_equal(ls.discarding, 0);
    assert_int_equal(smtp_line_next(&ls, S("NOOP\r\n"), &line, &used),
                     SMTP_TOK_LINE);
}

/* Run the tokenizer like a session does: a buffer, input appended in
   pieces of `chunk` bytes; record the events. */
static size_t
line_events(const char *in, size_t len, size_t max, size_t chunk, char *ev,
            size_t evmax)
{
    struct smtp_line_state ls;
    char buf[2048];
    size_t have = 0, off = 0, evlen = 0;

    smtp_line_init(&ls, max);
    while (off < len) {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
        assert_true(have + n <= sizeof(buf));
        memcpy(buf + have, in + off, n);
        have += n;
        off += n;
        for (;;) {
            struct smtp_slice line;
            size_t used;
            enum smtp_tok t = smtp_line_next(&ls, buf, have, &line, &used);
            assert_true(used <= have);
            if (t == SMTP_TOK_LINE) {
                int w = snprintf(ev + evlen, evmax - evlen, "L[%.*s]",
                                 (int)line.len, line.p);
                evlen += (size_t)w;
            } else if (t == SMTP_TOK_TOOLONG) {
                evlen += (size_t)snprintf(ev + evlen, evmax - evlen, "T");
            } else if (t == SMTP_TOK_BARELF) {
                evlen += (size_t)snprintf(ev + evlen, evmax - evlen, "B");
            }
            memmove(buf, buf + used, have - used);
            have -= used;
            if (t == SMTP_TOK_AGAIN)
                break;
        }
    }
    assert_true(evlen < evmax);
    return evlen;
}

static void
test_line_resume(void **state)
{
    static const char in[] =
        "EHLO client.example\r\nMAIL FROM:<a@b>\r\nbare\nRCPT TO:<c@d>\r\n"
        "0123456789012345678901234567890123456789\r\n"
        "0123456789012345678901234567890123456789\nNOOP\r\n"
        "012345678901234567890123456789\r\nQUIT\r\n";
    char ref[4096], got[4096];
    size_t rn, gn;

    (void)state;
    for (size_t max = 8; max <= 64; max += 7) {
        rn = line_events(in, sizeof(in) - 1, max, 0, ref, sizeof(ref));
        for (size_t chunk = 1; chunk <= 13; chunk++) {
            gn = line_events(in, sizeof(in) - 1, max, chunk, got, sizeof(got));
            assert_int_equal(gn, rn);
            assert_memory_equal(got, ref, rn);
        }
    }
    rn = line_events(in, sizeof(in) - 1, 40, 1, ref, sizeof(ref));
    ref[rn] = '\0';
    assert_string_equal(ref, "L[EHLO client.example]L[MAIL FROM:<a@b>]B"
                             "L[RCPT TO:<c@d>]TTL[NOOP]"
                             "L[012345678901234567890123456789]L[QUIT]");
}

/* ---- 2. commands ---------------------------------------------------- */

static void
test_cmd_verbs(void **state)
{
    static const struct {
        const char *line;
        enum smtp_verb verb;
        const char *arg;
    } t[] = {
        {"HELO example.com", SMTP_V_HELO, "example.com"},
        {"ehlo example.com", SMTP_V_EHLO, "example.com"},
        {"EhLo  x  ", SMTP_V_EHLO, " x"},
        {"DATA", SMTP_V_DATA, ""},
        {"data ", SMTP_V_DATA, ""},
        {"BDAT 10 LAST", SMTP_V_BDAT, "10 LAST"},
        {"RSET", SMTP_V_RSET, ""},
        {"NOOP hello", SMTP_V_NOOP, "hello"},
        {"VRFY user", SMTP_V_VRFY, "user"},
        {"EXPN list", SMTP_V_EXPN, "list"},
        {"HELP", SMTP_V_HELP, ""},
        {"quit", SMTP_V_QUIT, ""},
        {"StartTLS", SMTP_V_STARTTLS, ""},
        {"AUTH PLAIN AGFAAGI=", SMTP_V_AUTH, "PLAIN AGFAAGI="},
        {"XYZZY plugh", SMTP_V_UNKNOWN, "plugh"},
        {"", SMTP_V_UNKNOWN, ""},
        {"QUITX", SMTP_V_UNKNOWN, ""},
        {"QUI", SMTP_V_UNKNOWN, ""},
        {" QUIT", SMTP_V_UNKNOWN, "QUIT"},
        {"H\xc3\xa9LO x", SMTP_V_UNKNOWN, "x"},
    };
    struct smtp_cmd cmd;

    (void)state;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        assert_int_equal(smtp_cmd_parse(t[i].line, strlen(t[i].line), 0, &cmd),
                         SMTP_PERR_OK);
        assert_int_equal(cmd.verb, t[i].verb);
        assert_int_equal(cmd.arg.len, strlen(t[i].arg));
        assert_memory_equal(cmd.arg.p, t[i].arg, cmd.arg.len);
    }
    assert_string_equal(smtp_verb_name(SMTP_V_STARTTLS), "STARTTLS");
    assert_string_equal(smtp_verb_name(SMTP_V_MAIL), "MAIL");
    assert_string_equal(smtp_verb_name(SMTP_V__COUNT), "UNKNOWN");
    for (int e = SMTP_PERR_OK; e <= SMTP_PERR_UTF8; e++)
        assert_non_null(smtp_perr_text((enum smtp_perr)e));
}

static void
test_cmd_control_bytes(void **state)
{
    struct smtp_cmd cmd;

    (void)state;
    assert_int_equal(smtp_cmd_parse(S("NOOP \0x"), 0, &cmd), SMTP_PERR_SYNTAX);
    assert_int_equal(cmd.verb, SMTP_V_NOOP);
    assert_int_equal(smtp_cmd_parse(S("NOOP\0x"), 0, &cmd), SMTP_PERR_SYNTAX);
    assert_int_equal(cmd.verb, SMTP_V_UNKNOWN);
    assert_int_equal(smtp_cmd_parse(S("NOOP\t"), 0, &cmd), SMTP_PERR_SYNTAX);
    assert_int_equal(smtp_cmd_parse(S("NO\rOP"), 0, &cmd), SMTP_PERR_SYNTAX);
    assert_int_equal(smtp_cmd_parse(S("HELO a\x7f"), 0, &cmd),
                     SMTP_PERR_SYNTAX);
    assert_int_equal(smtp_cmd_parse(S("MAIL FROM:<a@b.c>\0"), 1, &cmd),
                     SMTP_PERR_SYNTAX);
    assert_int_equal(smtp_cmd_parse(S("RCPT TO:<a\0b@c.d>"), 1, &cmd),
                     SMTP_PERR_SYNTAX);
    assert_int_equal(smtp_cmd_parse(S("RCPT TO:<a@b.c>\tX=1"), 1, &cmd),
                     SMTP_PERR_SYNTAX);
}

struct path_case {
    const char *line;
    int utf8_ok;
    enum smtp_perr err;
    const char *path; /* expected path when OK */
    int null_path;
    size_t nparams;
};

static const struct path_case path_cases[] = {
    /* valid */
    {"MAIL FROM:<a@b.c>", 0, SMTP_PERR_OK, "a@b.c", 0, 0},
    {"mail from:<a@b.c>", 0, SMTP_PERR_OK, "a@b.c", 0, 0},
    {"MAIL FROM: <a@b.c>", 0, SMTP_PERR_OK, "a@b.c", 0, 0},
    {"MAIL FROM:<a@b.c>   ", 0, SMTP_PERR_OK, "a@b.c", 0, 0},
    {"MAIL FROM:<>", 0, SMTP_PERR_OK, "", 1, 0},
    {"MAIL FROM: <>", 0, SMTP_PERR_OK, "", 1, 0},
    {"MAIL FROM:<> SIZE=100 BODY=8BITMIME", 0, SMTP_PERR_OK, "", 1, 2},
    {"MAIL FROM:<a@b.c> SIZE=1 BODY=8BITMIME SMTPUTF8 RET=HDRS "
     "ENVID=QQ314159 AUTH=<>",
     0, SMTP_PERR_OK, "a@b.c", 0, 6},
    {"MAIL FROM:<a@b.c> BODY=7BIT  SIZE=2", 0, SMTP_PERR_OK, "a@b.c", 0, 2},
    {"MAIL FROM:<a.b-c+d/e=f?g^h_i`j{k|l}m~n!o#p$q%r&s'*@x-y.z9>", 0,
     SMTP_PERR_OK, "a.b-c+d/e=f?g^h_i`j{k|l}m~n!o#p$q%r&s'*@x-y.z9", 0, 0},
    {"RCPT TO:<\"john doe\"@example.com>", 0, SMTP_PERR_OK,
     "\"john doe\"@example.com", 0, 0},
    {"RCPT TO:<\"a\\\"b>c\"@x.y>", 0, SMTP_PERR_OK, "\"a\\\"b>c\"@x.y", 0, 0},
    {"RCPT TO:<\"\"@x.y>", 0, SMTP_PERR_OK, "\"\"@x.y", 0, 0},
    /* fuzz find (harness): '<' is qtextSMTP, fine in a quoted local part */
    {"RCPT TO:<\"a<b\"@x.y>", 0, SMTP_PERR_OK, "\"a<b\"@x.y", 0, 0},
    {"RCPT TO:<a@[1.2.3.4]>", 0, SMTP_PERR_OK, "a@[1.2.3.4]", 0, 0},
    {"RCPT TO:<a@[255.0.10.255]>", 0, SMTP_PERR_OK, "a@[255.0.10.255]", 0, 0},
    {"RCPT TO:<a@[IPv6:2001:db8::1]>", 0, SMTP_PERR_OK, "a@[IPv6:2001:db8::1]",
     0, 0},
    {"RCPT TO:<a@[ipv6:::1]>", 0, SMTP_PERR_OK, "a@[ipv6:::1]", 0, 0},
    {"RCPT TO:<a@[IPv6:::]>", 0, SMTP_PERR_OK, "a@[IPv6:::]", 0, 0},
    {"RCPT TO:<a@[IPv6:1:2:3:4:5:6:7:8]>", 0, SMTP_PERR_OK,
     "a@[IPv6:1:2:3:4:5:6:7:8]", 0, 0},
    {"RCPT TO:<a@[IPv6:1:2:3:4:5:6:7::]>", 0, SMTP_PERR_OK,
     "a@[IPv6:1:2:3:4:5:6:7::]", 0, 0},
    {"RCPT TO:<a@[IPv6:::ffff:1.2.3.4]>", 0, SMTP_PERR_OK,
     "a@[IPv6:::ffff:1.2.3.4]", 0, 0},
    {"RCPT TO:<a@[IPv6:1:2:3:4:5:6:1.2.3.4]>", 0, SMTP_PERR_OK,
     "a@[IPv6:1:2:3:4:5:6:1.2.3.4]", 0, 0},
    {"RCPT TO:<a@[x-tag:some!thing]>", 0, SMTP_PERR_OK, "a@[x-tag:some!thing]",
     0, 0},
    {"RCPT TO:<@a.b,@c.d:u@e.f>", 0, SMTP_PERR_OK, "u@e.f", 0, 0},
    {"RCPT TO:<@a.b:u@e.f> NOTIFY=NEVER", 0, SMTP_PERR_OK, "u@e.f", 0, 1},
    {"RCPT TO:<Postmaster>", 0, SMTP_PERR_OK, "Postmaster", 0, 0},
    {"RCPT TO:<postMASTER>", 0, SMTP_PERR_OK, "postMASTER", 0, 0},
    {"RCPT TO:<u@e.f> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40e.f", 0,
     SMTP_PERR_OK, "u@e.f", 0, 2},
    {"rcpt to:<u@e.f>", 0, SMTP_PERR_OK, "u@e.f", 0, 0},
    {"MAIL FROM:<a@b.c> X-FOO", 0, SMTP_PERR_OK, "a@b.c", 0, 1},
    /* UTF-8 (RFC 6531 §3.3) */
    {"RCPT TO:<\xc3\xbc@b\xc3\xbc.de>", 1, SMTP_PERR_OK,
     "\xc3\xbc@b\xc3\xbc.de", 0, 0},
    {"RCPT TO:<\"\xe2\x82\xac x\"@b.de>", 1, SMTP_PERR_OK,
     "\"\xe2\x82\xac x\"@b.de", 0, 0},
    {"RCPT TO:<\xf0\x9f\x98\x80@x.y>", 1, SMTP_PERR_OK, "\xf0\x9f\x98\x80@x.y",
     0, 0},
    {"RCPT TO:<\xc3\xbc@b.de>", 0, SMTP_PERR_UTF8, NULL, 0, 0},
    {"RCPT TO:<u@b\xc3\xbc.de>", 0, SMTP_PERR_UTF8, NULL, 0, 0},
    {"RCPT TO:<\"\xc3\xbc\"@b.de>", 0, SMTP_PERR_UTF8, NULL, 0, 0},
    {"RCPT TO:<\xc3(@b.de>", 1, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<\xc0\xaf@b.de>", 1, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<\xed\xa0\x80@b.de>", 1, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<\xf4\x90\x80\x80@b.de>", 1, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<\xe2\x82@b.de>", 1, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<\xc3\xbc@b.de> X=\xc3\xbc", 1, SMTP_PERR_OK, "\xc3\xbc@b.de", 0,
     1},
    {"RCPT TO:<u@b.de> X=\xc3\xbc", 0, SMTP_PERR_PARAM, NULL, 0, 0},
    {"RCPT TO:<u@b.de> X=\xc3", 1, SMTP_PERR_PARAM, NULL, 0, 0},
    /* invalid */
    {"MAIL", 0, SMTP_PERR_SYNTAX, NULL, 0, 0},
    {"MAIL FROM", 0, SMTP_PERR_SYNTAX, NULL, 0, 0},
    {"MAIL FROM <a@b.c>", 0, SMTP_PERR_SYNTAX, NULL, 0, 0},
    {"MAIL TO:<a@b.c>", 0, SMTP_PERR_SYNTAX, NULL, 0, 0},
    {"RCPT FROM:<a@b.c>", 0, SMTP_PERR_SYNTAX, NULL, 0, 0},
    {"MAIL  FROM:<a@b.c>", 0, SMTP_PERR_SYNTAX, NULL, 0, 0},
    {"MAIL FROM:  <a@b.c>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:a@b.c", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@b.c", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@b.c>x", 0, SMTP_PERR_SYNTAX, NULL, 0, 0},
    {"MAIL FROM:<<a@b.c>>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@-b.c>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@b-.c>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@b..c>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@b.c..>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@.>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@.b.c>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@b_c.d>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<.a@b.c>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a.@b.c>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a..b@c>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<@b.c>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a b@c.d>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a(b)@c.d>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@b@c.d>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<Postmaster>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<\"Postmaster\">", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<user>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<@a.b,u@e.f>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<@a.b,:u@e.f>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<@:u@e.f>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<\"abc@e.f>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<\"a\\\x01\"@e.f>", 0, SMTP_PERR_SYNTAX, NULL, 0, 0},
    {"RCPT TO:<a@[1.2.3.256]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[1.2.3]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[1.2.3.4.5]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[01234.2.3.4]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[1.2.3.4>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[IPv6:1:2:3:4:5:6:7]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[IPv6:1:2:3:4:5:6:7:8:9]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[IPv6:1:2:3:4:5:6:7:8::]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[IPv6:1::2::3]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[IPv6:12345::]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[IPv6:1:]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[IPv6::1]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[IPv6:g::1]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[IPv6:1:2:3:4:5:6:7:1.2.3.4]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[x-tag:]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[x-:y]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"RCPT TO:<a@[x:a\\b]>", 0, SMTP_PERR_PATH, NULL, 0, 0},
    {"MAIL FROM:<a@b.c> SIZE=", 0, SMTP_PERR_PARAM, NULL, 0, 0},
    {"MAIL FROM:<a@b.c> =1", 0, SMTP_PERR_PARAM, NULL, 0, 0},
    {"MAIL FROM:<a@b.c> -X=1", 0, SMTP_PERR_PARAM, NULL, 0, 0},
    {"MAIL FROM:<a@b.c> X_Y=1", 0, SMTP_PERR_PARAM, NULL, 0, 0},
    {"MAIL FROM:<a@b.c> X=a=b", 0, SMTP_PERR_PARAM, NULL, 0, 0},
    {"MAIL FROM:<a@b.c> SIZE=1 size=2", 0, SMTP_PERR_PARAM_DUP, NULL, 0, 0},
    {"MAIL FROM:<a@b.c> BODY=7BIT BODY", 0, SMTP_PERR_PARAM_DUP, NULL, 0, 0},
    {"MAIL FROM:<a@b.c> 1=2 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16", 0,
     SMTP_PERR_OK, "a@b.c", 0, 16},
    {"MAIL FROM:<a@b.c> 1=2 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", 0,
     SMTP_PERR_TOOMANY, NULL, 0, 0},
};

static void
test_cmd_paths(void **state)
{
    struct smtp_cmd cmd;

    (void)state;
    for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
        const struct path_case *c = &path_cases[i];
        const char *line = c->line;
        size_t len = strlen(line);
        enum smtp_perr e = smtp_cmd_parse(line, len, c->utf8_ok, &cmd);

        if (e != c->err) {
            print_error("case %zu \"%s\": got %d want %d\n", i, line, e,
                        c->err);
            fail();
        }
        if (e != SMTP_PERR_OK)
            continue;
        assert_int_equal(cmd.path.len, strlen(c->path));
        if (cmd.path.len > 0) {
            assert_memory_equal(cmd.path.p, c->path, cmd.path.len);
            assert_true(cmd.path.p >= line &&
                        cmd.path.p + cmd.path.len <= line + len);
        }
        assert_int_equal(cmd.null_path, c->null_path);
        assert_int_equal(cmd.nparams, c->nparams);
        assert_int_equal(cmd.path_utf8,
                         memchr(c->path, 0xc3, strlen(c->path)) != NULL ||
                             memchr(c->path, 0xe2, strlen(c->path)) != NULL ||
                             memchr(c->path, 0xf0, strlen(c->path)) != NULL);
    }
}

static void
test_cmd_params_slices(void **state)
{
    static const char line[] =
        "MAIL FROM:<a@b.c> SIZE=1000 body=8BITMIME SMTPUTF8 AUTH=<>";
    struct smtp_cmd cmd;

    (void)state;
    assert_int_equal(smtp_cmd_parse(line, sizeof(line) - 1, 1, &cmd),
                     SMTP_PERR_OK);
    assert_int_equal(cmd.verb, SMTP_V_MAIL);
    assert_int_equal(cmd.nparams, 4);
    assert_true(smtp_slice_eq(cmd.params[0].key, "SIZE"));
    assert_true(smtp_slice_eq(cmd.params[0].value, "1000"));
    assert_true(smtp_slice_eq(cmd.params[1].key, "BODY"));
    assert_memory_equal(cmd.params[1].key.p, "body", 4);
    assert_true(smtp_slice_eq(cmd.params[1].value, "8bitmime"));
    assert_true(smtp_slice_eq(cmd.params[2].key, "SMTPUTF8"));
    assert_null(cmd.params[2].value.p);
    assert_int_equal(cmd.params[2].value.len, 0);
    assert_true(smtp_slice_eq(cmd.params[3].value, "<>"));
    assert_int_equal(cmd.path_utf8, 0);
}

/* Build "RCPT TO:<" local "@" domain ">" with the given lengths. */
static size_t
make_rcpt(char *buf, size_t local, size_t domain)
{
    size_t n = 0;

    memcpy(buf, "RCPT TO:<", 9);
    n = 9;
    memset(buf + n, 'l', local);
    n += local;
    buf[n++] = '@';
    for (size_t i = 0; i < domain; i++) {
        /* labels of 9 letters and a dot; never a dot first or last */
        buf[n++] = (i % 10 == 9 && i + 1 < domain) ? '.' : 'd';
    }
    buf[n++] = '>';
    return n;
}

static void
test_cmd_path_limits(void **state)
{
    struct smtp_cmd cmd;
    char buf[1024];
    size_t n;

    (void)state;
    /* §4.5.3.1.1: local-part 64 */
    n = make_rcpt(buf, 64, 10);
    assert_int_equal(smtp_cmd_parse(buf, n, 0, &cmd), SMTP_PERR_OK);
    n = make_rcpt(buf, 65, 10);
    assert_int_equal(smtp_cmd_parse(buf, n, 0, &cmd), SMTP_PERR_PATH_TOOLONG);
    /* §4.5.3.1.3: "<" 254 ">" = 256 */
    n = make_rcpt(buf, 64, 189);
    assert_int_equal(smtp_cmd_parse(buf, n, 0, &cmd), SMTP_PERR_OK);
    assert_int_equal(cmd.path.len, 254);
    n = make_rcpt(buf, 64, 190);
    assert_int_equal(smtp_cmd_parse(buf, n, 0, &cmd), SMTP_PERR_PATH_TOOLONG);
    n = make_rcpt(buf, 1, 253);
    assert_int_equal(smtp_cmd_parse(buf, n, 0, &cmd), SMTP_PERR_PATH_TOOLONG);
    /* §4.5.3.1.2: domain 255 (also beyond the path limit) */
    n = make_rcpt(buf, 1, 256);
    assert_int_equal(smtp_cmd_parse(buf, n, 0, &cmd), SMTP_PERR_PATH_TOOLONG);
    /* a source route does not count against the path we keep */
    memcpy(buf, "RCPT TO:<@", 10);
    n = 10;
    memset(buf + n, 'r', 100);
    n += 100;
    buf[n++] = ':';
    memset(buf + n, 'l', 64);
    n += 64;
    buf[n++] = '@';
    memset(buf + n, 'd', 189);
    n += 189;
    buf[n++] = '>';
    assert_int_equal(smtp_cmd_parse(buf, n, 0, &cmd), SMTP_PERR_OK);
    assert_int_equal(cmd.path.len, 254);
    /* a bad address is PATH even when it is long too */
    n = make_rcpt(buf, 70, 10);
    buf[10] = ' ';
    assert_int_equal(smtp_cmd_parse(buf, n, 0, &cmd), SMTP_PERR_PATH);
}

/* ---- parameter helpers ---------------------------------------------- */

static void
test_param_size(void **state)
{
    uint64_t v = 7;

    (void)state;
    assert_int_equal(smtp_param_size(sl("0"), &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(smtp_param_size(sl("10240000"), &v), 0);
    assert_int_equal(v, 10240000);
    assert_int_equal(smtp_param_size(sl("18446744073709551615"), &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(smtp_param_size(sl("00000000000000000001"), &v), 0);
    assert_int_equal(v, 1);
    v = 7;
    assert_int_equal(smtp_param_size(sl("18446744073709551616"), &v), -1);
    assert_int_equal(smtp_param_size(sl("99999999999999999999"), &v), -1);
    assert_int_equal(smtp_param_size(sl("000000000000000000001"), &v), -1);
    assert_int_equal(smtp_param_size(sl(""), &v), -1);
    assert_int_equal(smtp_param_size(sl("12a"), &v), -1);
    assert_int_equal(smtp_param_size(sl("-1"), &v), -1);
    assert_int_equal(smtp_param_size(sl(" 1"), &v), -1);
    assert_int_equal(v, 7);
}

static void
test_param_xtext(void **state)
{
    (void)state;
    assert_int_equal(smtp_param_xtext_ok(sl("QQ314159")), 0);
    assert_int_equal(smtp_param_xtext_ok(sl("a+2Bb")), 0);
    assert_int_equal(smtp_param_xtext_ok(sl("+2B+3D")), 0);
    assert_int_equal(smtp_param_xtext_ok(sl("!~;<>")), 0);
    assert_int_equal(smtp_param_xtext_ok(sl("a+2b")), -1);
    assert_int_equal(smtp_param_xtext_ok(sl("a+2")), -1);
    assert_int_equal(smtp_param_xtext_ok(sl("a+")), -1);
    assert_int_equal(smtp_param_xtext_ok(sl("+G0")), -1);
    assert_int_equal(smtp_param_xtext_ok(sl("a=b")), -1);
    assert_int_equal(smtp_param_xtext_ok(sl("a b")), -1);
    assert_int_equal(smtp_param_xtext_ok(sl("a\x7f")), -1);
    assert_int_equal(smtp_param_xtext_ok(sl("\xc3\xbc")), -1);
    assert_int_equal(smtp_param_xtext_ok(sl("")), -1);

    assert_int_equal(smtp_param_orcpt_ok(sl("rfc822;a+40b.c")), 0);
    assert_int_equal(smtp_param_orcpt_ok(sl("utf-8;x")), 0);
    assert_int_equal(smtp_param_orcpt_ok(sl("rfc822;")), -1);
    assert_int_equal(smtp_param_orcpt_ok(sl(";x")), -1);
    assert_int_equal(smtp_param_orcpt_ok(sl("rfc822")), -1);
    assert_int_equal(smtp_param_orcpt_ok(sl("rfc822;a+4")), -1);
    assert_int_equal(smtp_param_orcpt_ok(sl("rf c;x")), -1);
}

static void
test_param_notify(void **state)
{
    unsigned v = 99;

    (void)state;
    assert_int_equal(smtp_param_notify(sl("NEVER"), &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(smtp_param_notify(sl("SUCCESS"), &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(smtp_param_notify(sl("success,failure,delay"), &v), 0);
    assert_int_equal(v, 14);
    assert_int_equal(smtp_param_notify(sl("DELAY,FAILURE"), &v), 0);
    assert_int_equal(v, 12);
    assert_int_equal(smtp_param_notify(sl("SUCCESS,SUCCESS"), &v), 0);
    assert_int_equal(v, 2);
    v = 99;
    assert_int_equal(smtp_param_notify(sl("NEVER,SUCCESS"), &v), -1);
    assert_int_equal(smtp_param_notify(sl("FAILURE,NEVER"), &v), -1);
    assert_int_equal(smtp_param_notify(sl(""), &v), -1);
    assert_int_equal(smtp_param_notify(sl("SUCCESS,"), &v), -1);
    assert_int_equal(smtp_param_notify(sl(",SUCCESS"), &v), -1);
    assert_int_equal(smtp_param_notify(sl("SUCCESS,,DELAY"), &v), -1);
    assert_int_equal(smtp_param_notify(sl("BOGUS"), &v), -1);
    assert_int_equal(smtp_param_notify(sl("SUCCESS FAILURE"), &v), -1);
    assert_int_equal(v, 99);
}

static void
test_bdat_arg(void **state)
{
    uint64_t n = 0;
    int last = -1;
    struct smtp_cmd cmd;

    (void)state;
    assert_int_equal(smtp_bdat_arg(sl("100"), &n, &last), 0);
    assert_int_equal(n, 100);
    assert_int_equal(last, 0);
    assert_int_equal(smtp_bdat_arg(sl("0 LAST"), &n, &last), 0);
    assert_int_equal(n, 0);
    assert_int_equal(last, 1);
    assert_int_equal(smtp_bdat_arg(sl("007 last"), &n, &last), 0);
    assert_int_equal(n, 7);
    assert_int_equal(last, 1);
    assert_int_equal(smtp_bdat_arg(sl("18446744073709551615 LAST"), &n, &last),
                     0);
    assert_true(n == UINT64_MAX);
    n = 5;
    last = -1;
    assert_int_equal(smtp_bdat_arg(sl("18446744073709551616"), &n, &last), -1);
    assert_int_equal(smtp_bdat_arg(sl(""), &n, &last), -1);
    assert_int_equal(smtp_bdat_arg(sl("x"), &n, &last), -1);
    assert_int_equal(smtp_bdat_arg(sl("-1"), &n, &last), -1);
    assert_int_equal(smtp_bdat_arg(sl("+1"), &n, &last), -1);
    assert_int_equal(smtp_bdat_arg(sl("1 "), &n, &last), -1);
    assert_int_equal(smtp_bdat_arg(sl("1  LAST"), &n, &last), -1);
    assert_int_equal(smtp_bdat_arg(sl("1 LASTX"), &n, &last), -1);
    assert_int_equal(smtp_bdat_arg(sl("1 FIRST"), &n, &last), -1);
    assert_int_equal(smtp_bdat_arg(sl(" 1"), &n, &last), -1);
    assert_int_equal(n, 5);
    assert_int_equal(last, -1);
    /* through the parser: trailing spaces go */
    assert_int_equal(smtp_cmd_parse(S("BDAT 42 LAST  "), 0, &cmd),
                     SMTP_PERR_OK);
    assert_int_equal(smtp_bdat_arg(cmd.arg, &n, &last), 0);
    assert_int_equal(n, 42);
    assert_int_equal(last, 1);
}

static void
test_slice_eq(void **state)
{
    struct smtp_slice s = {"Hello", 5};
    struct smtp_slice e = {NULL, 0};

    (void)state;
    assert_true(smtp_slice_eq(s, "HELLO"));
    assert_true(smtp_slice_eq(s, "hello"));
    assert_false(smtp_slice_eq(s, "hell"));
    assert_false(smtp_slice_eq(s, "hello!"));
    assert_true(smtp_slice_eq(e, ""));
    assert_false(smtp_slice_eq(e, "x"));
}

/* ---- 3. DATA -------------------------------------------------------- */

struct sink {
    char buf[16384];
    size_t len;
    int calls;
    int fail_at; /* fail this call and every later one (1-based), 0 never */
    int fail_rc;
};

static int
sink_out(void *arg, const char *p, size_t len)
{
    struct sink *s = arg;

    s->calls++;
    assert_true(len > 0);
    if (s->fail_at != 0 && s->calls >= s->fail_at)
        return s->fail_rc;
    assert_true(s->len + len <= sizeof(s->buf));
    memcpy(s->buf + s->len, p, len);
    s->len += len;
    return 0;
}

struct run {
    enum smtp_data_res res;
    size_t used;
    struct sink sink;
    struct smtp_data_state ds;
};

/* The limits a test sets; 0 keeps the default. */
struct cfg {
    size_t max_line;
    size_t max_header;
    uint64_t max_size;
    unsigned max_received;
    int normalise;
    int fail_at;
};

static void
cfg_apply(const struct cfg *c, struct run *r)
{
    memset(r, 0, sizeof(*r));
    r->ds.max_line = c->max_line;
    r->ds.max_header = c->max_header;
    r->ds.max_size = c->max_size;
    r->ds.max_received = c->max_received;
    r->ds.normalise = c->normalise;
    r->sink.fail_at = c->fail_at;
    r->sink.fail_rc = -28;
    smtp_data_init(&r->ds);
}

/* Feed in pieces of `chunk` bytes (0: all at once) until END. */
static void
data_feed(const struct cfg *c, const char *in, size_t len, size_t chunk,
          struct run *r)
{
    size_t off = 0;

    cfg_apply(c, r);
    r->res = SMTP_DATA_AGAIN;
    while (off < len) {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
        size_t used = 12345;
        r->res = smtp_data_feed(&r->ds, in + off, n, &used, sink_out, &r->sink);
        assert_true(used <= n);
        off += used;
        if (r->res == SMTP_DATA_END)
            break;
        assert_int_equal(r->res, SMTP_DATA_AGAIN);
        assert_int_equal(used, n);
    }
    r->used = off;
}

static void
bdat_feed(const struct cfg *c, const char *in, size_t len, size_t chunk,
          struct run *r)
{
    size_t off = 0;

    cfg_apply(c, r);
    r->res = SMTP_DATA_AGAIN;
    while (off < len) {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
        r->res = smtp_bdat_feed(&r->ds, in + off, n, sink_out, &r->sink);
        off += n;
    }
    r->res = smtp_bdat_end(&r->ds, sink_out, &r->sink);
    r->used = off;
}

static void
assert_same_run(const struct run *a, const struct run *b)
{
    assert_int_equal(a->res, b->res);
    assert_int_equal(a->used, b->used);
    assert_int_equal(a->sink.len, b->sink.len);
    assert_memory_equal(a->sink.buf, b->sink.buf, a->sink.len);
    assert_int_equal(a->ds.error, b->ds.error);
    assert_int_equal(a->ds.cb_error, b->ds.cb_error);
    assert_true(a->ds.size == b->ds.size);
    assert_int_equal(a->ds.received, b->ds.received);
    assert_int_equal(a->ds.in_header, b->ds.in_header);
    assert_int_equal(a->ds.saw_8bit, b->ds.saw_8bit);
    assert_string_equal(a->ds.from, b->ds.from);
    assert_string_equal(a->ds.subject, b->ds.subject);
    assert_string_equal(a->ds.msgid, b->ds.msgid);
    assert_string_equal(a->ds.date, b->ds.date);
}

/* The result must not depend on how the stream is cut. */
static void
check_chunking(const struct cfg *c, const char *in, size_t len, int bdat)
{
    static struct run whole, part;
    static const size_t chunks[] = {1, 2, 3, 5, 7, 64};

    if (bdat)
        bdat_feed(c, in, len, 0, &whole);
    else
        data_feed(c, in, len, 0, &whole);
    for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
        if (bdat)
            bdat_feed(c, in, len, chunks[k], &part);
        else
            data_feed(c, in, len, chunks[k], &part);
        assert_same_run(&whole, &part);
    }
}

static const struct cfg dflt = {0};

static void
expect_data(const struct cfg *c, const char *in, size_t len,
            enum smtp_data_res res, size_t used, enum smtp_data_err err,
            const char *out, size_t outlen)
{
    static struct run r;

    data_feed(c, in, len, 0, &r);
    assert_int_equal(r.res, res);
    assert_int_equal(r.used, used);
    assert_int_equal(r.ds.error, err);
    if (out != NULL) {
        assert_int_equal(r.sink.len, outlen);
        assert_memory_equal(r.sink.buf, out, outlen);
        if (err == SMTP_DERR_NONE)
            assert_true(r.ds.size == outlen);
    }
    check_chunking(c, in, len, 0);
}

static void
test_data_unstuff(void **state)
{
    static const char in[] = "Subject: x\r\n"
                             "\r\n"
                             "..\r\n"
                             ".x\r\n"
                             "...\r\n"
                             "a.\r\n"
                             " .\r\n"
                             "line\r\n"
                             "\r\n"
                             ".\r\n"
                             "QUIT\r\n";
    static const char out[] = "Subject: x\r\n"
                              "\r\n"
                              ".\r\n"
                              "x\r\n"
                              "..\r\n"
                              "a.\r\n"
                              " .\r\n"
                              "line\r\n"
                              "\r\n";

    (void)state;
    expect_data(&dflt, S(in), SMTP_DATA_END, sizeof(in) - 1 - 6, SMTP_DERR_NONE,
                S(out));
}

/* Dot-stuff msg (CRLF lines) the way a client does (§4.5.2). */
static size_t
stuff(const char *msg, size_t len, char *out)
{
    size_t n = 0;
    int bol = 1;

    for (size_t i = 0; i < len; i++) {
        if (bol && msg[i] == '.')
            out[n++] = '.';
        out[n++] = msg[i];
        bol = msg[i] == '\n';
    }
    memcpy(out + n, ".\r\n", 3);
    return n + 3;
}

static void
test_data_roundtrip(void **state)
{
    static const char *const msgs[] = {
        "",
        "\r\n",
        ".\r\n",
        "..\r\n",
        "\r\n.\r\n\r\n",
        "From: a\r\n\r\n.\r\n..\r\n.x\r\n. \r\n",
        "a\r\n.\r\nb\r\n",
        ".\r\n.\r\n.\r\n",
        "x\r\n\r\n\r\n\r\n",
    };
    static char wire[4096];
    static struct run r;

    (void)state;
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        size_t len = strlen(msgs[i]);
        size_t wlen = stuff(msgs[i], len, wire);
        data_feed(&dflt, wire, wlen, 0, &r);
        assert_int_equal(r.res, SMTP_DATA_END);
        assert_int_equal(r.used, wlen);
        assert_int_equal(r.ds.error, SMTP_DERR_NONE);
        assert_int_equal(r.sink.len, len);
        assert_memory_equal(r.sink.buf, msgs[i], len);
        assert_true(r.ds.size == len);
        check_chunking(&dflt, wire, wlen, 0);
    }
}

static void
test_data_end(void **state)
{
    static struct run r;
    size_t used = 99;

    (void)state;
    /* ".\r\n" as the first line: an empty message */
    expect_data(&dflt, S(".\r\n"), SMTP_DATA_END, 3, SMTP_DERR_NONE, S(""));
    expect_data(&dflt, S(".\r\nMAIL FROM:<>\r\n"), SMTP_DATA_END, 3,
                SMTP_DERR_NONE, S(""));
    expect_data(&dflt, S("a\r\n.\r\nQUIT\r\n"), SMTP_DATA_END, 6,
                SMTP_DERR_NONE, S("a\r\n"));
    /* not the end: stuffed, or more on the line */
    expect_data(&dflt, S("a\r\n..\r\n"), SMTP_DATA_AGAIN, 7, SMTP_DERR_NONE,
                S("a\r\n.\r\n"));
    expect_data(&dflt, S("a\r\n. \r\n"), SMTP_DATA_AGAIN, 7, SMTP_DERR_NONE,
                S("a\r\n \r\n"));
    expect_data(&dflt, S("a\r\n.\r"), SMTP_DATA_AGAIN, 5, SMTP_DERR_NONE,
                S("a\r\n"));
    /* after END nothing more is taken */
    data_feed(&dflt, S("x\r\n.\r\n"), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_END);
    assert_int_equal(
        smtp_data_feed(&r.ds, S("more\r\n.\r\n"), &used, sink_out, &r.sink),
        SMTP_DATA_END);
    assert_int_equal(used, 0);
    /* out may be NULL */
    cfg_apply(&dflt, &r);
    assert_int_equal(
        smtp_data_feed(&r.ds, S("abc\r\n.\r\n"), &used, NULL, NULL),
        SMTP_DATA_END);
    assert_int_equal(used, 8);
    assert_true(r.ds.size == 5);
}

/*
 * SMTP smuggling: none of these may end the data, whatever the mode; the
 * real CRLF.CRLF after them does.
 */
static void
test_data_smuggling(void **state)
{
    static const struct {
        const char *mid;
        enum smtp_data_err err; /* strict mode */
        const char *norm;       /* normalised output of "a" mid "b\r\n" */
    } t[] = {
        {"\n.\n", SMTP_DERR_BARE_LF, "a\r\n\r\nb\r\n"},
        {"\r.\r", SMTP_DERR_BARE_CR, "a\r\n\r\nb\r\n"},
        {"\r\n.\n", SMTP_DERR_BARE_LF, "a\r\n\r\nb\r\n"},
        {"\n.\r\n", SMTP_DERR_BARE_LF, "a\r\n\r\nb\r\n"},
        {"\r.\r\n", SMTP_DERR_BARE_CR, "a\r\n\r\nb\r\n"},
        {"\r\n.\r", SMTP_DERR_BARE_CR, "a\r\n\r\nb\r\n"},
        {"\r\n.\r\r\n", SMTP_DERR_BARE_CR, "a\r\n\r\n\r\nb\r\n"},
        {"\r\r\n.\n", SMTP_DERR_BARE_CR, "a\r\n\r\n\r\nb\r\n"},
        {"\n\r\n.\n", SMTP_DERR_BARE_LF, "a\r\n\r\n\r\nb\r\n"},
        {"\r\n.\n\r\n", SMTP_DERR_BARE_LF, "a\r\n\r\n\r\nb\r\n"},
        {"\n\n.\r\n", SMTP_DERR_BARE_LF, "a\r\n\r\n\r\nb\r\n"},
        {"\r\n\n.\n", SMTP_DERR_BARE_LF, "a\r\n\r\n\r\nb\r\n"},
        {"\n", SMTP_DERR_BARE_LF, "a\r\nb\r\n"},
        {"\r", SMTP_DERR_BARE_CR, "a\r\nb\r\n"},
        {"\r\n.\r.\r", SMTP_DERR_BARE_CR, "a\r\n\r\n\r\nb\r\n"},
    };
    static char in[256], tail[256], expect[512];
    static struct run r;
    struct cfg norm = {0};

    (void)state;
    norm.normalise = 1;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        /* the injected transaction must stay inside the message */
        int n =
            snprintf(in, sizeof(in),
                     "a%sMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\n", t[i].mid);
        size_t nolen = (size_t)n;

        /* strict: out stops right before the bad byte */
        size_t strict = strncmp(t[i].mid, "\r\n", 2) == 0 ? 3 : 1;

        data_feed(&dflt, in, nolen, 0, &r);
        assert_int_equal(r.res, SMTP_DATA_AGAIN);
        assert_int_equal(r.used, nolen);
        assert_int_equal(r.ds.error, t[i].err);
        assert_int_equal(r.sink.len, strict);
        assert_memory_equal(r.sink.buf, "a\r\n", strict);

        memcpy(in + nolen, "\r\n.\r\nQUIT\r\n", 11);
        expect_data(&dflt, in, nolen + 11, SMTP_DATA_END, nolen + 5, t[i].err,
                    "a\r\n", strict);
        data_feed(&norm, in, nolen + 11, 0, &r);
        assert_int_equal(r.res, SMTP_DATA_END);
        assert_int_equal(r.used, nolen + 5);
        assert_int_equal(r.ds.error, SMTP_DERR_NONE);
        check_chunking(&norm, in, nolen + 11, 0);

        /* normalised output, exactly */
        n = snprintf(in, sizeof(in), "a%sb\r\n.\r\n", t[i].mid);
        snprintf(tail, sizeof(tail), "%s", t[i].norm);
        data_feed(&norm, in, (size_t)n, 0, &r);
        assert_int_equal(r.res, SMTP_DATA_END);
        assert_int_equal(r.used, (size_t)n);
        assert_int_equal(r.ds.error, SMTP_DERR_NONE);
        snprintf(expect, sizeof(expect), "%s", tail);
        if (r.sink.len != strlen(expect) ||
            memcmp(r.sink.buf, expect, r.sink.len) != 0) {
            print_error("case %zu: got \"%.*s\"\n", i, (int)r.sink.len,
                        r.sink.buf);
            fail();
        }
        assert_true(r.ds.size == r.sink.len);
        check_chunking(&norm, in, (size_t)n, 0);
    }
    /* a bare LF before ".\r\n" at the very start */
    expect_data(&dflt, S("\n.\r\nx\r\n.\r\n"), SMTP_DATA_END, 10,
                SMTP_DERR_BARE_LF, S(""));
    /* ".\r\n" right after a non-terminating "." line ends it */
    expect_data(&dflt, S("a\n.\r\n.\r\nX"), SMTP_DATA_END, 8, SMTP_DERR_BARE_LF,
                S("a"));
}

static void
test_data_out_error(void **state)
{
    static struct run r;
    struct cfg c = {0};

    (void)state;
    c.fail_at = 1;
    data_feed(&c, S("abc\r\ndef\r\n.\r\nNOOP\r\n"), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_END);
    assert_int_equal(r.used, 13);
    assert_int_equal(r.ds.error, SMTP_DERR_NONE);
    assert_int_equal(r.ds.cb_error, -28);
    assert_false(smtp_data_ok(&r.ds));
    /* byte by byte: out is called once, then never again */
    data_feed(&c, S("abc\r\ndef\r\n.\r\nNOOP\r\n"), 1, &r);
    assert_int_equal(r.res, SMTP_DATA_END);
    assert_int_equal(r.used, 13);
    assert_int_equal(r.sink.calls, 1);
    assert_int_equal(r.ds.cb_error, -28);

    data_feed(&dflt, S("abc\r\n.\r\n"), 0, &r);
    assert_true(smtp_data_ok(&r.ds));
}

static void
fill(char *p, char c, size_t n)
{
    memset(p, c, n);
}

static void
test_data_limit_line(void **state)
{
    static char in[2100];
    size_t n;

    (void)state;
    /* §4.5.3.1.6: 1000 with the CRLF */
    fill(in, 'x', 998);
    memcpy(in + 998, "\r\n.\r\n", 5);
    n = 1003;
    expect_data(&dflt, in, n, SMTP_DATA_END, n, SMTP_DERR_NONE, NULL, 0);
    fill(in, 'x', 999);
    memcpy(in + 999, "\r\n.\r\n", 5);
    n = 1004;
    expect_data(&dflt, in, n, SMTP_DATA_END, n, SMTP_DERR_LINE_TOOLONG, NULL,
                0);
    /* the stuffing dot does not count */
    in[0] = '.';
    fill(in + 1, 'x', 998);
    memcpy(in + 999, "\r\n.\r\n", 5);
    expect_data(&dflt, in, 1004, SMTP_DATA_END, 1004, SMTP_DERR_NONE, NULL, 0);
    /* small limit: bytes before the bad one reach out */
    {
        struct cfg c = {0};
        c.max_line = 6;
        expect_data(&c, S("abcd\r\nabcd\r\n.\r\n"), SMTP_DATA_END, 15,
                    SMTP_DERR_NONE, S("abcd\r\nabcd\r\n"));
        expect_data(&c, S("abcd\r\nabcde\r\n.\r\n"), SMTP_DATA_END, 16,
                    SMTP_DERR_LINE_TOOLONG, S("abcd\r\nabcd"));
        /* normalised line ends count as CRLF */
        c.normalise = 1;
        expect_data(&c, S("abcd\nab\r\n.\r\n"), SMTP_DATA_END, 12,
                    SMTP_DERR_NONE, S("abcd\r\nab\r\n"));
    }
}

static void
test_data_limit_header(void **state)
{
    struct cfg c = {0};

    (void)state;
    /* "Subject: x\r\n" is 12; the empty line and the body do not count */
    c.max_header = 12;
    expect_data(&c, S("Subject: x\r\n\r\nbody body body\r\n.\r\n"),
                SMTP_DATA_END, 33, SMTP_DERR_NONE, NULL, 0);
    c.max_header = 11;
    expect_data(&c, S("Subject: x\r\n\r\nbody\r\n.\r\n"), SMTP_DATA_END, 23,
                SMTP_DERR_HDR_TOOBIG, S("Subject: x"));
    /* no empty line: everything is header */
    c.max_header = 21;
    expect_data(&c, S("Subject: x\r\nX: 12345\r\n.\r\n"), SMTP_DATA_END, 25,
                SMTP_DERR_HDR_TOOBIG, NULL, 0);
    c.max_header = 22;
    expect_data(&c, S("Subject: x\r\nX: 12345\r\n.\r\n"), SMTP_DATA_END, 25,
                SMTP_DERR_NONE, NULL, 0);
}

static void
test_data_limit_size(void **state)
{
    struct cfg c = {0};

    (void)state;
    c.max_size = 4;
    expect_data(&c, S("ab\r\n.\r\n"), SMTP_DATA_END, 7, SMTP_DERR_NONE,
                S("ab\r\n"));
    /* the stuffing dot is not counted */
    expect_data(&c, S("..a\r\n.\r\n"), SMTP_DATA_END, 8, SMTP_DERR_NONE,
                S(".a\r\n"));
    c.max_size = 3;
    expect_data(&c, S("ab\r\n.\r\n"), SMTP_DATA_END, 7, SMTP_DERR_TOOBIG,
                S("ab"));
    c.max_size = 4;
    expect_data(&c, S("abc\r\n.\r\n"), SMTP_DATA_END, 8, SMTP_DERR_TOOBIG,
                S("abc"));
    /* size keeps counting after the error, for the log */
    {
        static struct run r;
        data_feed(&c, S("abc\r\ndefg\r\n.\r\n"), 0, &r);
        assert_true(r.ds.size == 11);
    }
}

static void
test_data_received(void **state)
{
    static const char in[] = "Received: from a\r\n"
                             "received : from b\r\n"
                             "X-Received: not this\r\n"
                             " Received: nor this\r\n"
                             "RECEIVED:from c\r\n"
                             "\r\n"
                             "Received: body, not counted\r\n"
                             ".\r\n";
    static struct run r;
    struct cfg c = {0};

    (void)state;
    c.max_received = 3;
    expect_data(&c, S(in), SMTP_DATA_END, sizeof(in) - 1, SMTP_DERR_NONE, NULL,
                0);
    data_feed(&c, S(in), 0, &r);
    assert_int_equal(r.ds.received, 3);
    c.max_received = 2;
    expect_data(&c, S(in), SMTP_DATA_END, sizeof(in) - 1, SMTP_DERR_LOOP, NULL,
                0);
    /* default is 100 */
    data_feed(&dflt, S(in), 0, &r);
    assert_int_equal(r.ds.max_received, 100);
    assert_int_equal(r.ds.error, SMTP_DERR_NONE);
}

static void
test_data_8bit(void **state)
{
    static struct run r;

    (void)state;
    data_feed(&dflt, S("Subject: \xc3\xa9t\xc3\xa9\r\n\r\n.\r\n"), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_END);
    assert_int_equal(r.ds.error, SMTP_DERR_NONE);
    assert_int_equal(r.ds.saw_8bit, 1);
    assert_string_equal(r.ds.subject, "\xc3\xa9t\xc3\xa9");
    data_feed(&dflt, S("Subject: x\r\n\r\n.\r\n"), 0, &r);
    assert_int_equal(r.ds.saw_8bit, 0);
}

static void
test_data_headers(void **state)
{
    static const char in[] = "Received: from x\r\n"
                             "From:   Alice <a@b.c>  \r\n"
                             "subject: hello\r\n"
                             "   world  \r\n"
                             "\tagain  and\tagain\r\n"
                             "Message-ID: <1@x>\r\n"
                             "DATE: Mon, 1 Jan 2024\r\n"
                             " 00:00:00 +0000\r\n"
                             "Subject: second\r\n"
                             "X-Other: y\r\n"
                             "\r\n"
                             "From: body\r\n"
                             "Date: body\r\n"
                             ".\r\n";
    static struct run r;

    (void)state;
    data_feed(&dflt, S(in), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_END);
    assert_int_equal(r.ds.error, SMTP_DERR_NONE);
    assert_string_equal(r.ds.from, "Alice <a@b.c>");
    assert_string_equal(r.ds.subject, "hello world again  and again");
    assert_string_equal(r.ds.msgid, "<1@x>");
    assert_string_equal(r.ds.date, "Mon, 1 Jan 2024 00:00:00 +0000");
    assert_int_equal(r.ds.in_header, 0);
    assert_int_equal(r.ds.received, 1);
    check_chunking(&dflt, S(in), 0);

    /* absent, empty, first wins, folded empty start, control bytes */
    data_feed(&dflt,
              S("Subject:\r\nSubject: two\r\nFrom:\r\n  x\r\n"
                "Date: a\x01"
                "b\r\n\r\n.\r\n"),
              0, &r);
    assert_string_equal(r.ds.subject, "");
    assert_string_equal(r.ds.from, "x");
    assert_string_equal(r.ds.msgid, "");
    assert_string_equal(r.ds.date, "a?b");

    /* a dot-stuffed header line is a header line */
    data_feed(&dflt, S("..Subject: x\r\n.Subject: y\r\n\r\n.\r\n"), 0, &r);
    assert_string_equal(r.ds.subject, "y");
}

static void
test_data_header_truncate(void **state)
{
    static char in[700];
    static struct run r;
    char want[SMTP_HDR_VALUE_MAX];
    size_t n;

    (void)state;
    memcpy(in, "Subject: ", 9);
    fill(in + 9, 'x', 300);
    memcpy(in + 309, "\r\n\r\n.\r\n", 7);
    data_feed(&dflt, in, 316, 0, &r);
    fill(want, 'x', SMTP_HDR_VALUE_MAX - 1);
    want[SMTP_HDR_VALUE_MAX - 1] = '\0';
    assert_string_equal(r.ds.subject, want);

    /* exactly full */
    memcpy(in + 9 + 255, "\r\n\r\n.\r\n", 7);
    data_feed(&dflt, in, 9 + 255 + 7, 0, &r);
    assert_string_equal(r.ds.subject, want);

    /* never cut inside a UTF-8 character, never end in a space */
    n = 9;
    fill(in + n, 'x', 254);
    n += 254;
    memcpy(in + n, "\xc3\xa9yyy\r\n\r\n.\r\n", 12);
    n += 12;
    data_feed(&dflt, in, n, 0, &r);
    want[254] = '\0';
    assert_string_equal(r.ds.subject, want);
    n = 9;
    fill(in + n, 'x', 254);
    n += 254;
    memcpy(in + n, " yyy\r\n\r\n.\r\n", 11);
    n += 11;
    data_feed(&dflt, in, n, 0, &r);
    assert_string_equal(r.ds.subject, want);
    check_chunking(&dflt, in, n, 0);
}

static void
test_data_init_limits(void **state)
{
    struct smtp_data_state ds;

    (void)state;
    memset(&ds, 0, sizeof(ds));
    smtp_data_init(&ds);
    assert_int_equal(ds.max_line, 1000);
    assert_int_equal(ds.max_header, 102400);
    assert_true(ds.max_size == UINT64_MAX);
    assert_int_equal(ds.max_received, 100);
    assert_int_equal(ds.in_header, 1);
    ds.max_line = 77;
    ds.max_size = 5;
    ds.normalise = 1;
    ds.error = SMTP_DERR_LOOP;
    ds.size = 9;
    smtp_data_init(&ds);
    assert_int_equal(ds.max_line, 77);
    assert_true(ds.max_size == 5);
    assert_int_equal(ds.normalise, 1);
    assert_int_equal(ds.error, SMTP_DERR_NONE);
    assert_true(ds.size == 0);
}

/* ---- BDAT ----------------------------------------------------------- */

static void
test_bdat(void **state)
{
    static const char msg[] = "Subject: x\r\n\r\n..\r\n.\r\nbody\r\n";
    static struct run r;
    struct cfg c = {0};

    (void)state;
    /* no unstuffing, no terminator: bytes pass unchanged */
    bdat_feed(&dflt, S(msg), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_END);
    assert_int_equal(r.ds.error, SMTP_DERR_NONE);
    assert_int_equal(r.sink.len, sizeof(msg) - 1);
    assert_memory_equal(r.sink.buf, msg, sizeof(msg) - 1);
    assert_true(r.ds.size == sizeof(msg) - 1);
    assert_string_equal(r.ds.subject, "x");
    check_chunking(&dflt, S(msg), 1);

    /* CR at the end of one chunk, LF at the start of the next */
    cfg_apply(&dflt, &r);
    assert_int_equal(
        smtp_bdat_feed(&r.ds, S("Subject: y\r"), sink_out, &r.sink),
        SMTP_DATA_AGAIN);
    assert_int_equal(r.sink.len, 10);
    assert_int_equal(smtp_bdat_feed(&r.ds, S("\nA"), sink_out, &r.sink),
                     SMTP_DATA_AGAIN);
    assert_int_equal(smtp_bdat_end(&r.ds, sink_out, &r.sink), SMTP_DATA_END);
    assert_int_equal(r.sink.len, 13);
    assert_memory_equal(r.sink.buf, "Subject: y\r\nA", 13);

    /* bare CR / LF */
    cfg_apply(&dflt, &r);
    assert_int_equal(smtp_bdat_feed(&r.ds, S("a\rb"), sink_out, &r.sink),
                     SMTP_DATA_ERROR);
    assert_int_equal(r.ds.error, SMTP_DERR_BARE_CR);
    assert_int_equal(smtp_bdat_feed(&r.ds, S("c\r\n"), sink_out, &r.sink),
                     SMTP_DATA_ERROR);
    assert_int_equal(r.sink.len, 1);
    bdat_feed(&dflt, S("a\nb"), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_ERROR);
    assert_int_equal(r.ds.error, SMTP_DERR_BARE_LF);
    /* a CR ending the last chunk is bare */
    bdat_feed(&dflt, S("abc\r"), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_ERROR);
    assert_int_equal(r.ds.error, SMTP_DERR_BARE_CR);
    assert_int_equal(r.sink.len, 3);

    /* normalise */
    c.normalise = 1;
    bdat_feed(&c, S("a\rb\nc\r"), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_END);
    assert_int_equal(r.sink.len, 9);
    assert_memory_equal(r.sink.buf, "a\r\nb\r\nc\r\n", 9);
    check_chunking(&c, S("a\rb\nc\r"), 1);

    /* the limits apply */
    c.normalise = 0;
    c.max_size = 4;
    bdat_feed(&c, S("ab\r\n"), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_END);
    bdat_feed(&c, S("abc\r\n"), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_ERROR);
    assert_int_equal(r.ds.error, SMTP_DERR_TOOBIG);
    c.max_size = 0;
    c.max_line = 5;
    bdat_feed(&c, S("abc\r\n"), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_END);
    bdat_feed(&c, S("abcd\r\n"), 0, &r);
    assert_int_equal(r.ds.error, SMTP_DERR_LINE_TOOLONG);
    c.max_line = 0;
    c.max_received = 1;
    bdat_feed(&c, S("Received: a\r\nReceived: b\r\n\r\n"), 0, &r);
    assert_int_equal(r.ds.error, SMTP_DERR_LOOP);
    /* out failing */
    c.max_received = 0;
    c.fail_at = 1;
    bdat_feed(&c, S("abc\r\n"), 0, &r);
    assert_int_equal(r.res, SMTP_DATA_ERROR);
    assert_int_equal(r.ds.cb_error, -28);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_basic),
        cmocka_unit_test(test_line_barelf_and_cr),
        cmocka_unit_test(test_line_limit),
        cmocka_unit_test(test_line_resume),
        cmocka_unit_test(test_cmd_verbs),
        cmocka_unit_test(test_cmd_control_bytes),
        cmocka_unit_test(test_cmd_paths),
        cmocka_unit_test(test_cmd_params_slices),
        cmocka_unit_test(test_cmd_path_limits),
        cmocka_unit_test(test_param_size),
        cmocka_unit_test(test_param_xtext),
        cmocka_unit_test(test_param_notify),
        cmocka_unit_test(test_bdat_arg),
        cmocka_unit_test(test_slice_eq),
        cmocka_unit_test(test_data_unstuff),
        cmocka_unit_test(test_data_roundtrip),
        cmocka_unit_test(test_data_end),
        cmocka_unit_test(test_data_smuggling),
        cmocka_unit_test(test_data_out_error),
        cmocka_unit_test(test_data_limit_line),
        cmocka_unit_test(test_data_limit_header),
        cmocka_unit_test(test_data_limit_size),
        cmocka_unit_test(test_data_received),
        cmocka_unit_test(test_data_8bit),
        cmocka_unit_test(test_data_headers),
        cmocka_unit_test(test_data_header_truncate),
        cmocka_unit_test(test_data_init_limits),
        cmocka_unit_test(test_bdat),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
