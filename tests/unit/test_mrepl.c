/*
 * test_mrepl: the replication codec (mesh/mrepl.c): records and messages
 * round trip, malformed input is refused, the rendezvous choice is
 * deterministic and stable, and versions and claims order as documented.
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
#include "mesh/mrepl.h"

static struct mrepl_rec *
rec_new(void)
{
    struct mrepl_rec *r = calloc(1, sizeof(*r));

    assert_non_null(r);
    memset(r->origin, 0xab, MREPL_PK);
    strcpy(r->qid, "0001A2B3C4D5E6F7");
    strcpy(r->mid, "AAAA-BBBB/0001A2B3C4D5E6F7");
    r->seq = 7;
    strcpy(r->mail_from, "a@example.org");
    r->ret = 1;
    r->body = 1;
    r->arrival = 1700000000;
    r->size = 1234;
    r->nreplicas = 2;
    memset(r->replicas[0], 1, MREPL_PK);
    memset(r->replicas[1], 2, MREPL_PK);
    r->nrcpts = 2;
    strcpy(r->rcpts[0].addr, "x@internet.test");
    r->rcpts[0].notify = 4;
    r->rcpts[0].idx = 0;
    strcpy(r->rcpts[1].addr, "y@internet.test");
    strcpy(r->rcpts[1].orcpt, "rfc822;y@internet.test");
    r->rcpts[1].idx = 3;
    r->rcpts[1].st = MREPL_R_DELIVERED;
    return r;
}

static void
test_rec_roundtrip(void **state)
{
    struct mrepl_rec *a = rec_new(), *b = calloc(1, sizeof(*b));
    struct buf o, o2;

    (void)state;
    a->has_owner = 1;
    a->epoch = 3;
    memset(a->owner, 2, MREPL_PK);
    strcpy(a->envid, "ENV1");
    buf_init(&o, 1 << 20);
    buf_init(&o2, 1 << 20);
    assert_int_equal(mrepl_rec_encode(&o, a), 0);
    assert_int_equal(mrepl_rec_decode(o.data, o.len, b), 0);
    assert_string_equal(b->qid, a->qid);
    assert_string_equal(b->mid, a->mid);
    assert_string_equal(b->envid, "ENV1");
    assert_int_equal(b->epoch, 3);
    assert_true(b->has_owner);
    assert_int_equal(b->nrcpts, 2);
    assert_int_equal(b->rcpts[1].idx, 3);
    assert_int_equal(b->rcpts[1].st, MREPL_R_DELIVERED);
    assert_string_equal(b->rcpts[1].orcpt, "rfc822;y@internet.test");
    assert_int_equal(b->nreplicas, 2);
    /* Deterministic: the same record encodes to the same bytes. */
    assert_int_equal(mrepl_rec_encode(&o2, b), 0);
    assert_int_equal(o.len, o2.len);
    assert_memory_equal(o.data, o2.data, o.len);
    buf_cleanup(&o);
    buf_cleanup(&o2);
    free(a);
    free(b);
}

static void
test_rec_invalid(void **state)
{
    struct mrepl_rec *a = rec_new(), *b = calloc(1, sizeof(*b));
    struct buf o;

    (void)state;
    buf_init(&o, 1 << 20);
    strcpy(a->qid, "not-a-qid");
    assert_int_equal(mrepl_rec_encode(&o, a), RM_E_INVAL);
    free(a);
    a = rec_new();
    a->nrcpts = 0;
    assert_int_equal(mrepl_rec_encode(&o, a), RM_E_INVAL);
    assert_int_equal(o.len, 0);
    /* Garbage, truncation, a missing key. */
    assert_int_equal(mrepl_rec_decode("\x81\xa1q\x01", 4, b), RM_E_PROTO);
    free(a);
    a = rec_new();
    assert_int_equal(mrepl_rec_encode(&o, a), 0);
    for (size_t cut = 1; cut < o.len; cut += 7)
        assert_int_not_equal(mrepl_rec_decode(o.data, cut, b), 0);
    buf_cleanup(&o);
    free(a);
    free(b);
}

static void
test_put_ack_sum(void **state)
{
    struct mrepl_rec *a = rec_new();
    struct mrepl_put *p = calloc(1, sizeof(*p));
    struct mrepl_ack ak = {.seq = 9}, ak2;
    struct mrepl_sum s = {.n = 5, .seq = 77, .want = 1}, s2;
    struct mrepl_recmsg rm;
    struct buf o;
    char body[100];

    (void)state;
    memset(body, 'x', sizeof(body));
    buf_init(&o, 1 << 20);
    assert_int_equal(mrepl_put_encode(&o, a, 0, body, sizeof(body)), 0);
    assert_int_equal(mrepl_put_decode(o.data, o.len, p), 0);
    assert_true(p->has_data);
    assert_int_equal(p->len, sizeof(body));
    buf_truncate(&o, 0);
    /* A piece past the size is refused by the encoder. */
    assert_int_equal(mrepl_put_encode(&o, a, a->size - 10, body, 100),
                     RM_E_INVAL);
    assert_int_equal(mrepl_put_encode(&o, a, 0, NULL, 0), 0);
    assert_int_equal(mrepl_put_decode(o.data, o.len, p), 0);
    assert_false(p->has_data);
    buf_truncate(&o, 0);
    memset(ak.key, 'k', MREPL_KEY_LEN);
    assert_int_equal(mrepl_ack_encode(&o, &ak), 0);
    assert_int_equal(mrepl_ack_decode(o.data, o.len, &ak2), 0);
    assert_int_equal(ak2.seq, 9);
    assert_memory_equal(ak2.key, ak.key, MREPL_KEY_LEN);
    buf_truncate(&o, 0);
    memset(s.origin, 3, MREPL_PK);
    memset(s.digest, 4, MREPL_DIGEST);
    assert_int_equal(mrepl_sum_encode(&o, &s), 0);
    assert_int_equal(mrepl_sum_decode(o.data, o.len, &s2), 0);
    assert_int_equal(s2.n, 5);
    assert_int_equal(s2.seq, 77);
    assert_true(s2.want);
    assert_memory_equal(s2.digest, s.digest, MREPL_DIGEST);
    /* One byte short: refused. */
    assert_int_not_equal(mrepl_sum_decode(o.data, o.len - 1, &s2), 0);
    buf_truncate(&o, 0);
    assert_int_equal(mrepl_recmsg_encode(&o, s.origin, "\x91\x00", 2), 0);
    assert_int_equal(mrepl_recmsg_decode(o.data, o.len, &rm), 0);
    assert_int_equal(rm.len, 2);
    assert_int_equal(mrepl_recmsg_encode(&o, s.origin, "", 0), RM_E_INVAL);
    buf_cleanup(&o);
    free(a);
    free(p);
}

static void
test_rendezvous(void **state)
{
    uint8_t c[10][MREPL_PK];
    unsigned out[3], out2[3], hits[10] = {0};
    char id[64];

    (void)state;
    for (int i = 0; i < 10; i++)
        memset(c[i], i + 1, MREPL_PK);
    assert_int_equal(
        mrepl_rendezvous("m/1", (const uint8_t(*)[32])c, 10, 2, out), 2);
    assert_int_not_equal(out[0], out[1]);
    assert_int_equal(
        mrepl_rendezvous("m/1", (const uint8_t(*)[32])c, 10, 2, out2), 2);
    assert_memory_equal(out, out2, 2 * sizeof(unsigned));
    /* Fewer candidates than replicas. */
    assert_int_equal(
        mrepl_rendezvous("m/1", (const uint8_t(*)[32])c, 1, 2, out), 1);
    assert_int_equal(out[0], 0);
    assert_int_equal(
        mrepl_rendezvous("m/1", (const uint8_t(*)[32])c, 0, 2, out), 0);
    /* Removing a candidate that was not chosen changes nothing; spread. */
    for (int k = 0; k < 1000; k++) {
        uint8_t d[9][MREPL_PK];
        unsigned o3[2], n = 0, drop;
        snprintf(id, sizeof(id), "node/%04d", k);
        mrepl_rendezvous(id, (const uint8_t(*)[32])c, 10, 3, out);
        hits[out[0]]++;
        drop = out[2] == 9 ? 8 : 9;
        if (out[0] == drop || out[1] == drop)
            continue;
        for (unsigned i = 0; i < 10; i++)
            if (i != drop)
                memcpy(d[n++], c[i], MREPL_PK);
        mrepl_rendezvous(id, (const uint8_t(*)[32])d, 9, 2, o3);
        assert_memory_equal(d[o3[0]], c[out[0]], MREPL_PK);
        assert_memory_equal(d[o3[1]], c[out[1]], MREPL_PK);
    }
    for (int i = 0; i < 10; i++)
        assert_true(hits[i] > 50); /* about 100 each */
}

static void
test_order(void **state)
{
    struct mrepl_rec *a = rec_new(), *b = rec_new();
    uint8_t lo[MREPL_PK], hi[MREPL_PK];

    (void)state;
    memset(lo, 1, MREPL_PK);
    memset(hi, 2, MREPL_PK);
    assert_int_equal(mrepl_rec_cmp(a, b), 0);
    b->seq = 8;
    assert_true(mrepl_rec_cmp(a, b) < 0);
    /* A claim beats a higher seq without one. */
    a->has_owner = 1;
    a->epoch = 1;
    memcpy(a->owner, lo, MREPL_PK);
    assert_true(mrepl_rec_cmp(a, b) > 0);
    /* Higher epoch wins; at the same epoch, the higher owner key. */
    b->has_owner = 1;
    b->epoch = 1;
    memcpy(b->owner, hi, MREPL_PK);
    assert_true(mrepl_rec_cmp(a, b) < 0);
    a->epoch = 2;
    assert_true(mrepl_rec_cmp(a, b) > 0);
    assert_true(mrepl_claim_cmp(1, hi, 1, lo) > 0);
    assert_true(mrepl_claim_cmp(1, hi, 2, lo) < 0);
    assert_int_equal(mrepl_claim_cmp(2, lo, 2, lo), 0);
    /* A tombstone beats everything. */
    b->tomb = 1;
    b->epoch = 0;
    assert_true(mrepl_rec_cmp(a, b) < 0);
    assert_true(mrepl_rec_cmp(b, a) > 0);
    free(a);
    free(b);
}

static void
test_digest(void **state)
{
    uint8_t h1[16], h2[16], d1[16] = {0}, d2[16] = {0};

    (void)state;
    mrepl_hash("one", 3, h1);
    mrepl_hash("two", 3, h2);
    mrepl_digest_add(d1, h1);
    mrepl_digest_add(d1, h2);
    mrepl_digest_add(d2, h2);
    mrepl_digest_add(d2, h1);
    assert_memory_equal(d1, d2, 16); /* order does not matter */
    mrepl_digest_add(d2, h1);
    assert_memory_not_equal(d1, d2, 16);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rec_roundtrip),
        cmocka_unit_test(test_rec_invalid),
        cmocka_unit_test(test_put_ack_sum),
        cmocka_unit_test(test_rendezvous),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_digest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
