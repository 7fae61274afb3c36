/*
 * The SMTP session state machine, end to end over a socketpair against a
 * real store: replies, their order and codes, and what reaches the
 * mailbox, byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rm_error.h"
#include "fuzz/harness_session.h"

static struct harness H;

static int
setup(void **state)
{
    (void)state;
    return harness_init(&H, 0) == 0 ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    harness_cleanup(&H);
    return 0;
}

static char *
talk(const char *in, int trusted)
{
    struct buf out;

    buf_init(&out, 1 << 20);
    assert_int_equal(harness_converse(&H, in, strlen(in), trusted, &out), 0);
    if (out.data == NULL)
        buf_append(&out, "", 0);
    return buf_take(&out, NULL);
}

/* The n-th reply line (0-based) that starts a new reply. */
static int
has_line(const char *out, const char *prefix)
{
    const char *p = out;

    while (p && *p) {
        if (strncmp(p, prefix, strlen(prefix)) == 0)
            return 1;
        p = strstr(p, "\r\n");
        if (p)
            p += 2;
    }
    return 0;
}

static int
count_lines(const char *out, const char *prefix)
{
    int n = 0;
    const char *p = out;

    while (p && *p) {
        if (strncmp(p, prefix, strlen(prefix)) == 0)
            n++;
        p = strstr(p, "\r\n");
        if (p)
            p += 2;
    }
    return n;
}

static void
test_ehlo_capabilities(void **state)
{
    char *o = talk("EHLO client.example\r\nQUIT\r\n", 1);

    (void)state;
    assert_true(has_line(o, "220 mx.test.example ESMTP"));
    assert_true(has_line(o, "250-PIPELINING"));
    assert_true(has_line(o, "250-SIZE 26214400"));
    assert_true(has_line(o, "250-8BITMIME"));
    assert_true(has_line(o, "250-ENHANCEDSTATUSCODES"));
    assert_true(has_line(o, "250-SMTPUTF8"));
    assert_true(has_line(o, "250-CHUNKING"));
    assert_true(has_line(o, "250 DSN"));
    assert_false(has_line(o, "250-STARTTLS"));
    assert_true(has_line(o, "221 2.0.0"));
    free(o);
}

struct collect {
    struct buf b;
};

static int
collect_chunk(void *arg, const char *p, size_t len)
{
    struct collect *c = arg;

    return buf_append(&c->b, p, len);
}

static int
last_uid_cb(void *arg, const struct store_mail *m)
{
    *(uint32_t *)arg = m->uid;
    return 0;
}

static void
test_message_byte_exact(void **state)
{
    const char *body = "Subject: dots\r\n"
                       "\r\n"
                       ".leading dot\r\n"
                       "..two\r\n"
                       "...\r\n"
                       "8bit \xc3\xa9\r\n"
                       "last";
    /* What the client sends: dot-stuffed, CRLF.CRLF at the end. */
    const char *wire = "EHLO c\r\nMAIL FROM:<bob@example.org>\r\n"
                       "RCPT TO:<alice@localhost>\r\nDATA\r\n"
                       "Subject: dots\r\n"
                       "\r\n"
                       "..leading dot\r\n"
                       "...two\r\n"
                       "....\r\n"
                       "8bit \xc3\xa9\r\n"
                       "last\r\n.\r\nQUIT\r\n";
    char *o = talk(wire, 0);
    struct collect c;
    uint32_t uid = 0;
    const char *p;

    (void)state;
    assert_true(has_line(o, "250 2.0.0 Ok: queued as "));
    assert_int_equal(harness_deliver(&H), 0);
    assert_int_equal(
        store_mailbox_list(H.n.store, "alice@localhost", last_uid_cb, &uid), 0);
    buf_init(&c.b, 1 << 20);
    assert_int_equal(store_mailbox_read(H.n.store, "alice@localhost", uid,
                                        collect_chunk, &c),
                     0);
    assert_non_null(c.b.data);
    assert_true(strncmp(c.b.data, "Return-Path: <bob@example.org>\r\n", 32) ==
                0);
    assert_non_null(strstr(c.b.data, "Delivered-To: alice@localhost\r\n"));
    p = strstr(c.b.data, "Received: from c ([192.0.2.1])");
    assert_non_null(p);
    assert_non_null(strstr(p, " with ESMTP id "));
    /* After our trace headers comes exactly what was sent, unstuffed. */
    p = strstr(c.b.data, "Subject: dots\r\n");
    assert_non_null(p);
    assert_int_equal(strlen(p), strlen(body) + 2);
    assert_memory_equal(p, body, strlen(body));
    assert_memory_equal(p + strlen(body), "\r\n", 2);
    buf_cleanup(&c.b);
    free(o);
}

static void
test_pipelining_order(void **state)
{
    char *o = talk("EHLO c\r\n"
                   "MAIL FROM:<a@example.org>\r\n"
                   "RCPT TO:<alice@localhost>\r\n"
                   "RCPT TO:<nobody@localhost>\r\n"
                   "RCPT TO:<Postmaster@LOCALHOST>\r\n"
                   "DATA\r\n"
                   "Subject: p\r\n\r\nx\r\n.\r\n"
                   "NOOP\r\nQUIT\r\n",
                   1);
    const char *order[] = {"250 2.1.0",    "250 2.1.5", "550 5.1.1",
                           "250 2.1.5",    "354 ",      "250 2.0.0 Ok: queued",
                           "250 2.0.0 Ok", "221 2.0.0"};
    const char *p = strstr(o, "250 DSN\r\n");

    (void)state;
    assert_non_null(p);
    p += 9;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        assert_true(strncmp(p, order[i], strlen(order[i])) == 0);
        p = strstr(p, "\r\n") + 2;
    }
    free(o);
}

static void
test_sequence_errors(void **state)
{
    char *o = talk("MAIL FROM:<a@b.example>\r\n"
                   "HELO c\r\n"
                   "RCPT TO:<alice@localhost>\r\n"
                   "DATA\r\n"
                   "FROB\r\n"
                   "QUIT\r\n",
                   1);

    (void)state;
    assert_true(has_line(o, "503 5.5.1 Error: send HELO/EHLO first"));
    assert_true(has_line(o, "503 5.5.1 Error: need MAIL command"));
    assert_true(has_line(o, "503 5.5.1 Error: need RCPT command"));
    assert_true(has_line(o, "500 5.5.2"));
    free(o);
}

static void
test_too_many_errors(void **state)
{
    char *o = talk("EHLO c\r\nX1\r\nX2\r\nX3\r\nX4\r\nX5\r\nX6\r\nX7\r\n"
                   "X8\r\nX9\r\nX10\r\nX11\r\nNOOP\r\n",
                   1);

    (void)state;
    assert_int_equal(count_lines(o, "500 5.5.2"), 10);
    assert_true(has_line(o, "421 4.7.0"));
    assert_false(has_line(o, "250 2.0.0 Ok"));
    free(o);
}

static void
test_relay_policy(void **state)
{
    const char *in = "EHLO c\r\nMAIL FROM:<a@b.example>\r\n"
                     "RCPT TO:<x@elsewhere.example>\r\nQUIT\r\n";
    char *untrusted = talk(in, 0);
    char *trusted = talk(in, 1);

    (void)state;
    assert_true(has_line(untrusted, "554 5.7.1"));
    assert_true(has_line(trusted, "250 2.1.5"));
    free(untrusted);
    free(trusted);
}

static void
test_smuggling_never_ends_data(void **state)
{
    /* "\n.\r\n" and "\r\n.\n" must not end DATA; the smuggled MAIL must
       never run as a command. */
    char *o = talk("EHLO c\r\nMAIL FROM:<a@b.example>\r\n"
                   "RCPT TO:<alice@localhost>\r\nDATA\r\n"
                   "Subject: s\r\n\r\nx\n.\r\n"
                   "MAIL FROM:<evil@x.example>\r\n"
                   "RCPT TO:<alice@localhost>\r\nDATA\r\n"
                   "evil\r\n.\n"
                   "end\r\n.\r\nQUIT\r\n",
                   0);

    (void)state;
    assert_true(has_line(o, "550 5.6.0"));
    assert_int_equal(count_lines(o, "250 2.1.0"), 1);
    assert_int_equal(count_lines(o, "354 "), 1);
    assert_false(has_line(o, "250 2.0.0 Ok: queued"));
    free(o);
}

static void
test_bdat(void **state)
{
    char *o = talk("EHLO c\r\nMAIL FROM:<a@b.example>\r\n"
                   "RCPT TO:<alice@localhost>\r\n"
                   "BDAT 12\r\nSubject: b\r\n"
                   "BDAT 8 LAST\r\n\r\nbody\r\n"
                   "BDAT 3\r\nxyz"
                   "QUIT\r\n",
                   0);

    (void)state;
    assert_true(has_line(o, "250 2.0.0 12 bytes received"));
    assert_true(has_line(o, "250 2.0.0 Ok: queued as "));
    /* A chunk outside a transaction is read and dropped, not run. */
    assert_true(has_line(o, "503 5.5.1"));
    assert_true(has_line(o, "221 2.0.0"));
    free(o);
}

static void
test_too_many_recipients(void **state)
{
    struct buf in;
    char *o;

    (void)state;
    H.cfg.max_recipients = 3;
    buf_init(&in, 1 << 16);
    buf_appendf(&in, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
    for (int i = 0; i < 5; i++)
        buf_appendf(&in, "RCPT TO:<r%d@remote.example>\r\n", i);
    buf_appendf(&in, "QUIT\r\n");
    o = talk(in.data, 1);
    assert_int_equal(count_lines(o, "250 2.1.5"), 3);
    assert_int_equal(count_lines(o, "452 4.5.3"), 2);
    H.cfg.max_recipients = 1000;
    buf_cleanup(&in);
    free(o);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ehlo_capabilities),
        cmocka_unit_test(test_message_byte_exact),
        cmocka_unit_test(test_pipelining_order),
        cmocka_unit_test(test_sequence_errors),
        cmocka_unit_test(test_too_many_errors),
        cmocka_unit_test(test_relay_policy),
        cmocka_unit_test(test_smuggling_never_ends_data),
        cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_too_many_recipients),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
