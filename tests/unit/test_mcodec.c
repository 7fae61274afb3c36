/*
 * Unit tests for mesh/mcodec.c: the handshake credentials (member chain,
 * joiner token), the stored membership and pending invites round-trip;
 * malformed input is RM_E_PROTO. With RM_MCODEC_SEED_DIR set, the encoded
 * values are also written there (the fuzz_mcodec seed corpus).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "common/rm_error.h"
#include "mesh/mcodec.h"

static void
seed(const char *name, int kind, const struct buf *b)
{
    const char *dir = getenv("RM_MCODEC_SEED_DIR");
    char path[512];
    FILE *f;
    unsigned char k = (unsigned char)kind;

    if (dir == NULL)
        return;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_non_null(f = fopen(path, "wb"));
    fwrite(&k, 1, 1, f);
    fwrite(b->data, 1, b->len, f);
    fclose(f);
}

static void
make_chain(struct mrec_chain *ch, uint8_t mesh_id[MREC_MESHID])
{
    unsigned char pk[32], sk[64], pk2[32], sk2[64];

    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(pk2, sk2);
    memset(ch, 0, sizeof(*ch));
    randombytes_buf(mesh_id, MREC_MESHID);
    ch->n = 2;
    memcpy(ch->c[1].mesh_id, mesh_id, MREC_MESHID);
    memcpy(ch->c[1].node_pk, pk, 32);
    strcpy(ch->c[1].name, "root");
    ch->c[1].issued = 1000;
    ch->c[1].expires = 2000;
    assert_int_equal(mrec_cert_sign(&ch->c[1], sk), 0);
    memcpy(ch->c[0].mesh_id, mesh_id, MREC_MESHID);
    memcpy(ch->c[0].node_pk, pk2, 32);
    strcpy(ch->c[0].name, "branch-2");
    ch->c[0].issued = 1000;
    ch->c[0].expires = 1500;
    assert_int_equal(mrec_cert_sign(&ch->c[0], sk), 0);
}

static void
test_cred(void **state)
{
    struct mcodec_cred c;
    struct mrec_chain ch;
    uint8_t id[MREC_MESHID], pk[MREC_PK];
    struct buf b;

    (void)state;
    make_chain(&ch, id);
    buf_init(&b, 1 << 20);
    assert_int_equal(mcodec_cred_member_encode(&b, &ch), 0);
    seed("cred_member", 0, &b);
    assert_int_equal(mcodec_cred_decode(b.data, b.len, &c), 0);
    assert_int_equal(c.kind, MCODEC_CRED_MEMBER);
    assert_int_equal(c.chain.n, 2);
    assert_memory_equal(&c.chain.c[0], &ch.c[0], sizeof(ch.c[0]));
    /* Truncated anywhere: refused. */
    for (size_t n = 0; n < b.len; n++)
        assert_int_equal(mcodec_cred_decode(b.data, n, &c), RM_E_PROTO);

    buf_reset(&b);
    randombytes_buf(pk, sizeof(pk));
    assert_int_equal(mcodec_cred_join_encode(&b, "rmi1.abcdef", pk, "branch-7"),
                     0);
    seed("cred_join", 0, &b);
    assert_int_equal(mcodec_cred_decode(b.data, b.len, &c), 0);
    assert_int_equal(c.kind, MCODEC_CRED_JOIN);
    assert_string_equal(c.token, "rmi1.abcdef");
    assert_string_equal(c.name, "branch-7");
    assert_memory_equal(c.pk, pk, sizeof(pk));
    /* A joiner's name must be a node name. */
    buf_reset(&b);
    assert_int_equal(mcodec_cred_join_encode(&b, "rmi1.x", pk, "bad name"),
                     RM_E_INVAL);
    /* Neither a member nor a joiner: {"z": 1}; and a bare integer. */
    assert_int_equal(mcodec_cred_decode("\x81\xa1z\x01", 4, &c), RM_E_PROTO);
    assert_int_equal(mcodec_cred_decode("\x01", 1, &c), RM_E_PROTO);
    /* Joiner fields with a wrong-size key. */
    assert_int_equal(
        mcodec_cred_decode("\x83\xa1j\xa1t\xa1k\xc4\x01\x00\xa1n\xa1n", 15, &c),
        RM_E_PROTO);
    buf_cleanup(&b);
}

static void
test_self_and_invite(void **state)
{
    struct mcodec_self s, t;
    uint8_t id[MREC_MESHID];
    char name[MREC_NAME_MAX];
    int64_t e;
    struct buf b;

    (void)state;
    memset(&s, 0, sizeof(s));
    make_chain(&s.chain, id);
    memcpy(s.mesh_id, id, sizeof(id));
    memcpy(s.root_pk, s.chain.c[1].node_pk, MREC_PK);
    s.record_version = UINT64_C(1795941404935);
    buf_init(&b, 1 << 20);
    assert_int_equal(mcodec_self_encode(&b, &s), 0);
    seed("self", 1, &b);
    assert_int_equal(mcodec_self_decode(b.data, b.len, &t), 0);
    assert_memory_equal(t.mesh_id, s.mesh_id, MREC_MESHID);
    assert_memory_equal(t.root_pk, s.root_pk, MREC_PK);
    assert_int_equal(t.record_version, s.record_version);
    assert_int_equal(t.chain.n, 2);
    assert_int_equal(mcodec_self_decode(b.data, b.len - 1, &t), RM_E_PROTO);

    buf_reset(&b);
    assert_int_equal(mcodec_invite_encode(&b, 1795941404, "branch-9"), 0);
    seed("invite", 2, &b);
    assert_int_equal(mcodec_invite_decode(b.data, b.len, &e, name), 0);
    assert_int_equal(e, 1795941404);
    assert_string_equal(name, "branch-9");
    buf_reset(&b);
    assert_int_equal(mcodec_invite_encode(&b, -5, ""), 0);
    assert_int_equal(mcodec_invite_decode(b.data, b.len, &e, name), 0);
    assert_int_equal(e, -5);
    assert_string_equal(name, "");
    /* A missing key. */
    assert_int_equal(mcodec_invite_decode("\x81\xa1n\xa0", 4, &e, name),
                     RM_E_PROTO);
    buf_cleanup(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cred),
        cmocka_unit_test(test_self_and_invite),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
