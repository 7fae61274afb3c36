/*
 * Unit tests for node/smtpc_reply.c: the SMTP client's reply parser
 * (multi-line replies, enhanced status codes, EHLO keywords, limits).
 * Linked only with rm_parse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/rm_error.h"
#include "node/smtp_client.h"

/* Feed a whole reply given as CRLF-separated lines; returns the last
   result of smtpc_reply_line. */
static int
feed(struct smtpc_reply_parser *p, const char *s)
{
    int r = RM_E_INVAL;

    while (*s) {
        const char *e = strstr(s, "\r\n");
        size_t n = e ? (size_t)(e - s) : strlen(s);
        r = smtpc_reply_line(p, s, n);
        if (r != 0)
            return r;
        s += n + (e ? 2 : 0);
    }
    return r;
}

static void
test_single_line(void **state)
{
    struct smtpc_reply_parser p;
    struct smtpc_reply r;

    (void)state;
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(feed(&p, "250 2.1.0 Ok\r\n"), 1);
    assert_int_equal(r.code, 250);
    assert_string_equal(r.enh, "2.1.0");
    assert_string_equal(r.text, "Ok");

    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(feed(&p, "220 mx.example.test ESMTP\r\n"), 1);
    assert_int_equal(r.code, 220);
    assert_string_equal(r.enh, "");
    assert_string_equal(r.text, "mx.example.test ESMTP");

    /* a bare code ends a reply too */
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(smtpc_reply_line(&p, "354", 3), 1);
    assert_int_equal(r.code, 354);
    assert_string_equal(r.text, "");
}

static void
test_multi_line(void **state)
{
    struct smtpc_reply_parser p;
    struct smtpc_reply r;

    (void)state;
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(smtpc_reply_line(&p, "550-5.7.1 first", 15), 0);
    assert_int_equal(smtpc_reply_line(&p, "550-5.7.1 second", 16), 0);
    assert_int_equal(smtpc_reply_line(&p, "550 third", 9), 1);
    assert_int_equal(r.code, 550);
    assert_string_equal(r.enh, "5.7.1");
    assert_string_equal(r.text, "first; second; third");
    assert_int_equal(p.lines, 3);
}

static void
test_malformed(void **state)
{
    struct smtpc_reply_parser p;
    struct smtpc_reply r;
    const char *bad[] = {"199 x", "600 x", "25", "250xok",
                         "2a0 x", "260 x", "",   "abc"};

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        smtpc_reply_parser_init(&p, &r, 0);
        assert_int_equal(smtpc_reply_line(&p, bad[i], strlen(bad[i])),
                         RM_E_PROTO);
    }
    /* §4.2.1: every line of a reply has the same code */
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(smtpc_reply_line(&p, "250-a", 5), 0);
    assert_int_equal(smtpc_reply_line(&p, "251 b", 5), RM_E_PROTO);
}

static void
test_enhanced(void **state)
{
    struct smtpc_reply_parser p;
    struct smtpc_reply r;

    (void)state;
    /* another class than the code: text, not a status code */
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(feed(&p, "250 4.1.1 odd\r\n"), 1);
    assert_string_equal(r.enh, "");
    assert_string_equal(r.text, "4.1.1 odd");
    /* detail of four digits */
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(feed(&p, "550 5.1.1000 x\r\n"), 1);
    assert_string_equal(r.enh, "");
    /* three-digit subject and detail, at the end of the line */
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(feed(&p, "451 4.123.456\r\n"), 1);
    assert_string_equal(r.enh, "4.123.456");
    assert_string_equal(r.text, "");
    /* not followed by a space */
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(feed(&p, "250 2.0.0x\r\n"), 1);
    assert_string_equal(r.enh, "");
    /* 3xx has no enhanced code (RFC 3463 classes 2, 4, 5) */
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(feed(&p, "354 3.0.0 go\r\n"), 1);
    assert_string_equal(r.enh, "");
}

static void
test_ehlo(void **state)
{
    struct smtpc_reply_parser p;
    struct smtpc_reply r;

    (void)state;
    smtpc_reply_parser_init(&p, &r, 1);
    assert_int_equal(feed(&p, "250-mx.example.test Hello\r\n"
                              "250-PIPELINING\r\n"
                              "250-SIZE 10240000\r\n"
                              "250-8bitmime\r\n"
                              "250-SMTPUTF8\r\n"
                              "250-STARTTLS\r\n"
                              "250-DSN\r\n"
                              "250-ENHANCEDSTATUSCODES\r\n"
                              "250-X-UNKNOWN foo\r\n"
                              "250 AUTH LOGIN PLAIN\r\n"),
                     1);
    assert_int_equal(p.ext, SMTPC_EXT_PIPELINING | SMTPC_EXT_SIZE |
                                SMTPC_EXT_8BITMIME | SMTPC_EXT_SMTPUTF8 |
                                SMTPC_EXT_STARTTLS | SMTPC_EXT_DSN |
                                SMTPC_EXT_ENHANCED | SMTPC_EXT_AUTH_PLAIN);
    assert_int_equal(p.size_max, 10240000);

    /* the greeting line is no keyword; AUTH= form; SIZE without number */
    smtpc_reply_parser_init(&p, &r, 1);
    assert_int_equal(feed(&p, "250-PIPELINING\r\n250-AUTH=LOGIN PLAIN\r\n"
                              "250 SIZE\r\n"),
                     1);
    assert_int_equal(p.ext, SMTPC_EXT_AUTH_PLAIN | SMTPC_EXT_SIZE);
    assert_int_equal(p.size_max, 0);

    /* AUTH without PLAIN; PLAINX is not PLAIN */
    smtpc_reply_parser_init(&p, &r, 1);
    assert_int_equal(feed(&p, "250-x\r\n250 AUTH LOGIN PLAINX\r\n"), 1);
    assert_int_equal(p.ext, 0);

    /* a refused EHLO yields no keywords */
    smtpc_reply_parser_init(&p, &r, 1);
    assert_int_equal(feed(&p, "502-5.5.2 no\r\n502 PIPELINING\r\n"), 1);
    assert_int_equal(p.ext, 0);
    assert_string_equal(r.enh, "5.5.2");
}

static void
test_size_overflow(void **state)
{
    struct smtpc_reply_parser p;
    struct smtpc_reply r;

    (void)state;
    smtpc_reply_parser_init(&p, &r, 1);
    assert_int_equal(feed(&p, "250-x\r\n250 SIZE 18446744073709551615\r\n"), 1);
    assert_true(p.size_max == UINT64_MAX);
    smtpc_reply_parser_init(&p, &r, 1);
    assert_int_equal(feed(&p, "250-x\r\n250 SIZE 18446744073709551616\r\n"), 1);
    assert_true(p.size_max == 0); /* unrepresentable: no fixed limit */
    assert_true(p.ext & SMTPC_EXT_SIZE);
    smtpc_reply_parser_init(&p, &r, 1);
    assert_int_equal(feed(&p, "250-x\r\n250 SIZE 99999999999999999999999\r\n"),
                     1);
    assert_true(p.size_max == 0);
    smtpc_reply_parser_init(&p, &r, 1);
    assert_int_equal(feed(&p, "250-x\r\n250 SIZE 12ab\r\n"), 1);
    assert_true(p.size_max == 0);
}

static void
test_limits(void **state)
{
    struct smtpc_reply_parser p;
    struct smtpc_reply r;
    char line[SMTPC_REPLY_LINE_MAX + 8];

    (void)state;
    /* a line of exactly the maximum (CRLF included) passes */
    memset(line, 'x', sizeof(line));
    memcpy(line, "250 ", 4);
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(smtpc_reply_line(&p, line, SMTPC_REPLY_LINE_MAX - 2), 1);
    assert_int_equal(strlen(r.text), sizeof(r.text) - 1); /* cut to fit */
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(smtpc_reply_line(&p, line, SMTPC_REPLY_LINE_MAX - 1),
                     RM_E_PROTO);

    smtpc_reply_parser_init(&p, &r, 0);
    for (unsigned i = 0; i < SMTPC_REPLY_LINES_MAX; i++)
        assert_int_equal(smtpc_reply_line(&p, "250-x", 5), 0);
    assert_int_equal(smtpc_reply_line(&p, "250 x", 5), RM_E_PROTO);
}

static void
test_control_bytes(void **state)
{
    struct smtpc_reply_parser p;
    struct smtpc_reply r;

    (void)state;
    smtpc_reply_parser_init(&p, &r, 0);
    assert_int_equal(smtpc_reply_line(&p, "550 a\0b\x01\x7f", 9), 1);
    assert_string_equal(r.text, "a?b??");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_line),
        cmocka_unit_test(test_multi_line),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_enhanced),
        cmocka_unit_test(test_ehlo),
        cmocka_unit_test(test_size_overflow),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_control_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
