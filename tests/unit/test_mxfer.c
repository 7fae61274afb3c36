/*
 * Unit tests for mesh/mxfer.c: the mesh's mail transfer messages (begin,
 * data, ack, result) round-trip; every bound and every required key is
 * enforced; malformed input is RM_E_PROTO. With RM_MXFER_SEED_DIR set,
 * the encoded values are also written there (the fuzz_mxfer seed corpus:
 * first byte = which decoder).
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
#include "mesh/mxfer.h"

static void
seed(const char *name, int kind, const struct buf *b)
{
    const char *dir = getenv("RM_MXFER_SEED_DIR");
    char path[512];
    unsigned char k = (unsigned char)kind;
    FILE *f;

    if (dir == NULL)
        return;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if ((f = fopen(path, "wb")) == NULL)
        return;
    fwrite(&k, 1, 1, f);
    fwrite(b->data, 1, b->len, f);
    fclose(f);
}

static struct mxfer_begin *
sample_begin(void)
{
    struct mxfer_begin *b = calloc(1, sizeof(*b));

    assert_non_null(b);
    b->x = 7;
    snprintf(b->id, sizeof(b->id), "ABCD-EF01/0123456789ABCDEF");
    snprintf(b->mail_from, sizeof(b->mail_from), "alice@a.test");
    snprintf(b->envid, sizeof(b->envid), "env-1");
    b->ret = 1;
    b->body = 1;
    b->smtputf8 = 1;
    b->size = 12345;
    b->nrcpts = 2;
    snprintf(b->rcpts[0].addr, sizeof(b->rcpts[0].addr), "bob@b.test");
    snprintf(b->rcpts[0].orcpt, sizeof(b->rcpts[0].orcpt), "rfc822;bob@b.test");
    b->rcpts[0].notify = 0x06;
    snprintf(b->rcpts[1].addr, sizeof(b->rcpts[1].addr), "carol@b.test");
    return b;
}

static void
test_begin_roundtrip(void **state)
{
    struct mxfer_begin *a = sample_begin(), *b = calloc(1, sizeof(*b));
    struct buf out;

    (void)state;
    buf_init(&out, 1 << 20);
    assert_int_equal(mxfer_begin_encode(&out, a), 0);
    seed("begin", 0, &out);
    assert_int_equal(mxfer_begin_decode(out.data, out.len, b), 0);
    assert_int_equal(b->x, 7);
    assert_string_equal(b->id, a->id);
    assert_string_equal(b->mail_from, "alice@a.test");
    assert_string_equal(b->envid, "env-1");
    assert_int_equal(b->ret, 1);
    assert_int_equal(b->body, 1);
    assert_int_equal(b->smtputf8, 1);
    assert_int_equal(b->size, 12345);
    assert_int_equal(b->nrcpts, 2);
    assert_string_equal(b->rcpts[0].orcpt, "rfc822;bob@b.test");
    assert_int_equal(b->rcpts[0].notify, 6);
    assert_string_equal(b->rcpts[1].addr, "carol@b.test");
    assert_string_equal(b->rcpts[1].orcpt, "");

    /* No ENVID, null sender: optional and empty are fine. */
    a->envid[0] = '\0';
    a->mail_from[0] = '\0';
    buf_reset(&out);
    assert_int_equal(mxfer_begin_encode(&out, a), 0);
    seed("begin_null_sender", 0, &out);
    assert_int_equal(mxfer_begin_decode(out.data, out.len, b), 0);
    assert_string_equal(b->envid, "");
    assert_string_equal(b->mail_from, "");

    /* Bounds the encoder refuses. */
    a->nrcpts = 0;
    assert_int_equal(mxfer_begin_encode(&out, a), RM_E_INVAL);
    a->nrcpts = MXFER_RCPTS_MAX + 1;
    assert_int_equal(mxfer_begin_encode(&out, a), RM_E_INVAL);
    a->nrcpts = 2;
    a->ret = 3;
    assert_int_equal(mxfer_begin_encode(&out, a), RM_E_INVAL);
    a->ret = 0;
    a->rcpts[1].addr[0] = '\0';
    assert_int_equal(mxfer_begin_encode(&out, a), RM_E_INVAL);
    buf_cleanup(&out);
    free(a);
    free(b);
}

static void
test_begin_malformed(void **state)
{
    struct mxfer_begin *b = calloc(1, sizeof(*b));
    /* {"x":1} only: required keys missing */
    static const uint8_t missing[] = {0x81, 0xa1, 'x', 0x01};
    /* {"x":1,"m":"i","f":"","r":9,...}: r out of range */
    static const uint8_t bad_ret[] = {0x85, 0xa1, 'x',  0x01, 0xa1, 'm',
                                      0xa1, 'i',  0xa1, 'f',  0xa0, 0xa1,
                                      'r',  0x09, 0xa1, 'b',  0x00};
    struct mxfer_begin *a = sample_begin();
    struct buf out;

    (void)state;
    assert_int_equal(mxfer_begin_decode(missing, sizeof(missing), b),
                     RM_E_PROTO);
    assert_int_equal(mxfer_begin_decode(bad_ret, sizeof(bad_ret), b),
                     RM_E_PROTO);
    assert_int_equal(mxfer_begin_decode("\xc0", 1, b), RM_E_PROTO);
    assert_int_equal(mxfer_begin_decode(NULL, 0, b), RM_E_PROTO);
    /* Truncated at every length and one trailing byte. */
    buf_init(&out, 1 << 20);
    assert_int_equal(mxfer_begin_encode(&out, a), 0);
    for (size_t n = 1; n < out.len; n++)
        assert_int_equal(mxfer_begin_decode(out.data, n, b), RM_E_PROTO);
    assert_int_equal(buf_append(&out, "\x01", 1), 0);
    assert_int_equal(mxfer_begin_decode(out.data, out.len, b), RM_E_PROTO);
    buf_cleanup(&out);
    free(a);
    free(b);
}

static void
test_data_ack(void **state)
{
    static uint8_t big[MXFER_CHUNK_MAX + 1];
    struct mxfer_data d;
    struct mxfer_ack a = {9, 4096}, a2;
    struct buf out;

    (void)state;
    buf_init(&out, 2 << 20);
    assert_int_equal(mxfer_data_encode(&out, 9, 4096, "hello", 5), 0);
    seed("data", 1, &out);
    assert_int_equal(mxfer_data_decode(out.data, out.len, &d), 0);
    assert_int_equal(d.x, 9);
    assert_int_equal(d.off, 4096);
    assert_int_equal(d.len, 5);
    assert_null(d.data);
    assert_int_equal(mxfer_data_encode(&out, 9, 0, "", 0), RM_E_INVAL);
    assert_int_equal(mxfer_data_encode(&out, 9, 0, big, sizeof(big)),
                     RM_E_INVAL);
    buf_reset(&out);
    assert_int_equal(mxfer_ack_encode(&out, &a), 0);
    seed("ack", 2, &out);
    assert_int_equal(mxfer_ack_decode(out.data, out.len, &a2), 0);
    assert_int_equal(a2.x, 9);
    assert_int_equal(a2.off, 4096);
    /* An ack is no data message, and the other way round. */
    assert_int_equal(mxfer_data_decode(out.data, out.len, &d), RM_E_PROTO);
    buf_cleanup(&out);
}

static void
test_res(void **state)
{
    struct mxfer_res *r = calloc(1, sizeof(*r)), *r2 = calloc(1, sizeof(*r2));
    struct buf out;

    (void)state;
    r->x = 3;
    r->n = 2;
    r->r[0].outcome = MXFER_DELIVERED;
    snprintf(r->r[0].status, sizeof(r->r[0].status), "2.0.0");
    snprintf(r->r[0].diag, sizeof(r->r[0].diag), "stored at b as X");
    r->r[1].outcome = MXFER_BOUNCED;
    snprintf(r->r[1].status, sizeof(r->r[1].status), "5.1.1");
    snprintf(r->r[1].diag, sizeof(r->r[1].diag), "User unknown");
    buf_init(&out, 1 << 20);
    assert_int_equal(mxfer_res_encode(&out, r), 0);
    seed("res", 3, &out);
    assert_int_equal(mxfer_res_decode(out.data, out.len, r2), 0);
    assert_int_equal(r2->x, 3);
    assert_int_equal(r2->n, 2);
    assert_int_equal(r2->r[1].outcome, MXFER_BOUNCED);
    assert_string_equal(r2->r[1].status, "5.1.1");
    assert_string_equal(r2->r[0].diag, "stored at b as X");
    /* A status that is no enhanced status code. */
    snprintf(r->r[1].status, sizeof(r->r[1].status), "x.1.1");
    assert_int_equal(mxfer_res_encode(&out, r), RM_E_INVAL);
    r->r[1].outcome = (enum mxfer_outcome)7;
    snprintf(r->r[1].status, sizeof(r->r[1].status), "5.1.1");
    assert_int_equal(mxfer_res_encode(&out, r), RM_E_INVAL);
    buf_cleanup(&out);
    free(r);
    free(r2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_begin_roundtrip),
        cmocka_unit_test(test_begin_malformed),
        cmocka_unit_test(test_data_ack),
        cmocka_unit_test(test_res),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
