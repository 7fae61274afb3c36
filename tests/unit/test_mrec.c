/*
 * Unit tests for mesh/mrec.c: the mesh's wire records. Round trips of
 * every record (bytes and already-unpacked objects, canonical
 * re-encoding); signatures (every field tampered with, the signature
 * itself, a wrong key, every bit of the encoding flipped); certificate
 * chains (1 to 8 long; expired, revoked, wrong mesh, wrong root, broken
 * link, too long, issued in the future, bad signature, at each link);
 * node records (caller-owned lists, 50,000 users, the size bound); decoding
 * of truncated, wrong-typed, oversized and duplicated input (RM_E_PROTO)
 * and of unknown keys (ignored); invite tokens (text round trip,
 * whitespace, damage, wrong prefix); SWIM messages and push/pull state
 * (round trips, every bound).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>
#include <sodium.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "mesh/mrec.h"

#define NOW 1735689600 /* 2025-01-01T00:00:00Z */
#define DAY 86400
#define BUFMAX (4 * 1024 * 1024)

struct kp {
    uint8_t pk[MREC_PK];
    uint8_t sk[MREC_SK];
};

static const uint8_t mesh_a[MREC_MESHID] = "mesh-a-012345678";
static const uint8_t mesh_b[MREC_MESHID] = "mesh-b-012345678";

static void
kp_make(struct kp *k, uint8_t seedbyte)
{
    uint8_t seed[crypto_sign_SEEDBYTES];

    memset(seed, seedbyte, sizeof(seed));
    crypto_sign_seed_keypair(k->pk, k->sk, seed);
}

/* ---- helpers: raw msgpack -------------------------------------------- */

static void
pk_key(msgpack_packer *pk, const char *k)
{
    msgpack_pack_str_with_body(pk, k, strlen(k));
}

static void
pk_text(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Unpack sb into z / o (the caller destroys z). */
static void
unpack(const char *data, size_t len, msgpack_zone *z, msgpack_object *o)
{
    size_t off = 0;

    assert_true(msgpack_zone_init(z, 2048));
    assert_int_equal(msgpack_unpack(data, len, &off, z, o),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
}

/* Every proper prefix of a valid encoding fails with RM_E_PROTO. */
typedef int (*dec_fn)(const void *p, size_t len);

static void
check_prefixes(const struct buf *b, dec_fn dec)
{
    assert_int_equal(dec(b->data, b->len), 0);
    for (size_t i = 0; i < b->len; i++)
        assert_int_equal(dec(b->data, i), RM_E_PROTO);
}

/* ---- text rules ------------------------------------------------------ */

static void
test_text_rules(void **state)
{
    char n64[65];

    (void)state;
    assert_true(mrec_name_valid("a"));
    assert_true(mrec_name_valid("node-1.example_x"));
    memset(n64, 'a', 63);
    n64[63] = '\0';
    assert_true(mrec_name_valid(n64));
    n64[63] = 'a';
    n64[64] = '\0';
    assert_false(mrec_name_valid(n64));
    assert_false(mrec_name_valid(""));
    assert_false(mrec_name_valid("a b"));
    assert_false(mrec_name_valid("caf\xc3\xa9"));
    assert_false(mrec_name_valid("a/b"));
    assert_false(mrec_name_valid(NULL));

    assert_true(mrec_addr_valid("mx.example.org:25"));
    assert_true(mrec_addr_valid("192.0.2.1:65535"));
    assert_true(mrec_addr_valid("[2001:db8::1]:7946"));
    assert_true(mrec_addr_valid("[::ffff:192.0.2.1]:1"));
    assert_false(mrec_addr_valid("mx.example.org"));
    assert_false(mrec_addr_valid("mx.example.org:"));
    assert_false(mrec_addr_valid("mx.example.org:0"));
    assert_false(mrec_addr_valid("mx.example.org:65536"));
    assert_false(mrec_addr_valid("mx.example.org:123456"));
    assert_false(mrec_addr_valid(":25"));
    assert_false(mrec_addr_valid("2001:db8::1:25"));
    assert_false(mrec_addr_valid("[]:25"));
    assert_false(mrec_addr_valid("[zz::1]:25"));
    assert_false(mrec_addr_valid("[::1]"));
    assert_false(mrec_addr_valid("a b:25"));
    assert_false(mrec_addr_valid("host:2x"));

    assert_true(mrec_domain_valid("example.org"));
    assert_true(mrec_domain_valid("xn--bcher-kva.example"));
    assert_true(mrec_domain_valid("b\xc3\xbc"
                                  "cher.example"));
    assert_true(mrec_domain_valid("localhost"));
    assert_false(mrec_domain_valid("Example.org"));
    assert_false(mrec_domain_valid(""));
    assert_false(mrec_domain_valid(".example.org"));
    assert_false(mrec_domain_valid("example.org."));
    assert_false(mrec_domain_valid("example..org"));
    assert_false(mrec_domain_valid("exa mple.org"));
    assert_false(mrec_domain_valid("ex@mple.org"));

    assert_true(mrec_user_valid("alice@example.org"));
    assert_true(mrec_user_valid("\"a@b\"@example.org"));
    assert_true(mrec_user_valid("Alice.Smith+tag@example.org"));
    assert_false(mrec_user_valid("alice"));
    assert_false(mrec_user_valid("@example.org"));
    assert_false(mrec_user_valid("alice@"));
    assert_false(mrec_user_valid("alice@Example.org"));
    assert_false(mrec_user_valid("al ice@example.org"));
    {
        char u[300];

        memset(u, 'l', 65);
        strcpy(u + 65, "@example.org");
        assert_false(mrec_user_valid(u)); /* local part of 65 */
        memset(u, 'l', 64);
        strcpy(u + 64, "@example.org");
        assert_true(mrec_user_valid(u));
        memset(u, 'l', 64);
        u[64] = '@';
        memset(u + 65, 'd', 189);
        u[254] = '\0';
        assert_true(mrec_user_valid(u)); /* 254 bytes */
        u[254] = 'd';
        u[255] = '\0';
        assert_false(mrec_user_valid(u));
    }
}

/* ---- certificates ---------------------------------------------------- */

static void
cert_make(struct mrec_cert *c, const uint8_t mesh[MREC_MESHID],
          const struct kp *node, const char *name, int64_t issued,
          int64_t expires, const struct kp *issuer)
{
    memset(c, 0, sizeof(*c));
    memcpy(c->mesh_id, mesh, MREC_MESHID);
    memcpy(c->node_pk, node->pk, MREC_PK);
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->issued = issued;
    c->expires = expires;
    assert_int_equal(mrec_cert_sign(c, issuer->sk), 0);
    assert_memory_equal(c->issuer_pk, issuer->pk, MREC_PK);
}

static int
dec_cert(const void *p, size_t len)
{
    struct mrec_cert c;

    return mrec_cert_decode_bytes(p, len, &c);
}

static void
test_cert_roundtrip(void **state)
{
    struct kp root, node;
    struct mrec_cert c, d;
    struct buf b, b2;
    msgpack_zone z;
    msgpack_object o;

    (void)state;
    kp_make(&root, 1);
    kp_make(&node, 2);
    cert_make(&c, mesh_a, &node, "node-2", NOW - DAY, NOW + 365 * DAY, &root);
    assert_int_equal(mrec_cert_verify_sig(&c), 0);
    buf_init(&b, BUFMAX);
    buf_init(&b2, BUFMAX);
    assert_int_equal(mrec_cert_encode(&b, &c), 0);
    assert_int_equal(mrec_cert_decode_bytes(b.data, b.len, &d), 0);
    assert_memory_equal(&c, &d, sizeof(c));
    assert_int_equal(mrec_cert_verify_sig(&d), 0);
    /* canonical: the same bytes again */
    assert_int_equal(mrec_cert_encode(&b2, &d), 0);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    /* the object path */
    unpack(b.data, b.len, &z, &o);
    memset(&d, 0xff, sizeof(d));
    assert_int_equal(mrec_cert_decode_obj(&o, &d), 0);
    assert_memory_equal(&c, &d, sizeof(c));
    msgpack_zone_destroy(&z);
    /* negative times survive */
    cert_make(&c, mesh_a, &node, "n", -5, INT64_MIN, &root);
    buf_reset(&b);
    assert_int_equal(mrec_cert_encode(&b, &c), 0);
    assert_int_equal(mrec_cert_decode_bytes(b.data, b.len, &d), 0);
    assert_memory_equal(&c, &d, sizeof(c));
    check_prefixes(&b, dec_cert);
    /* encoding appends */
    buf_reset(&b);
    assert_int_equal(buf_append(&b, "xy", 2), 0);
    assert_int_equal(mrec_cert_encode(&b, &c), 0);
    assert_int_equal(mrec_cert_decode_bytes(b.data + 2, b.len - 2, &d), 0);
    /* nothing appended on error */
    buf_reset(&b2);
    b2.max = 10;
    assert_int_equal(mrec_cert_encode(&b2, &c), RM_E_TOOBIG);
    assert_int_equal(b2.len, 0);
    /* misuse */
    memcpy(d.name, "bad name", 9);
    assert_int_equal(mrec_cert_encode(&b, &d), RM_E_INVAL);
    assert_int_equal(mrec_cert_sign(&d, root.sk), RM_E_INVAL);
    assert_int_equal(mrec_cert_verify_sig(&d), RM_E_PERM);
    memset(d.name, 'a', sizeof(d.name)); /* not terminated */
    assert_int_equal(mrec_cert_encode(&b, &d), RM_E_INVAL);
    assert_int_equal(mrec_cert_encode(NULL, &c), RM_E_INVAL);
    assert_int_equal(mrec_cert_encode(&b, NULL), RM_E_INVAL);
    assert_int_equal(mrec_cert_decode_bytes(b.data, b.len, NULL), RM_E_INVAL);
    assert_int_equal(mrec_cert_decode_bytes(NULL, 0, &d), RM_E_PROTO);
    assert_int_equal(mrec_cert_decode_obj(NULL, &d), RM_E_INVAL);
    buf_cleanup(&b);
    buf_cleanup(&b2);
}

static void
test_cert_tamper(void **state)
{
    struct kp root, node, other;
    struct mrec_cert c, t;
    struct buf b;
    unsigned bad = 0;

    (void)state;
    kp_make(&root, 1);
    kp_make(&node, 2);
    kp_make(&other, 3);
    cert_make(&c, mesh_a, &node, "node-2", NOW, NOW + DAY, &root);
    t = c;
    t.mesh_id[3] ^= 1;
    assert_int_equal(mrec_cert_verify_sig(&t), RM_E_PERM);
    t = c;
    t.node_pk[0] ^= 1;
    assert_int_equal(mrec_cert_verify_sig(&t), RM_E_PERM);
    t = c;
    t.name[5] = '3';
    assert_int_equal(mrec_cert_verify_sig(&t), RM_E_PERM);
    t = c;
    t.issued++;
    assert_int_equal(mrec_cert_verify_sig(&t), RM_E_PERM);
    t = c;
    t.expires--;
    assert_int_equal(mrec_cert_verify_sig(&t), RM_E_PERM);
    t = c;
    t.issuer_pk[31] ^= 0x80;
    assert_int_equal(mrec_cert_verify_sig(&t), RM_E_PERM);
    t = c;
    t.sig[10] ^= 4;
    assert_int_equal(mrec_cert_verify_sig(&t), RM_E_PERM);
    /* signed by another key, claiming the root */
    t = c;
    assert_int_equal(mrec_cert_sign(&t, other.sk), 0);
    memcpy(t.issuer_pk, root.pk, MREC_PK);
    assert_int_equal(mrec_cert_verify_sig(&t), RM_E_PERM);
    /* bytes after the name's NUL are not part of the record */
    t = c;
    t.name[40] = 'x';
    assert_int_equal(mrec_cert_verify_sig(&t), 0);
    /* every bit of the encoding: a flip never yields a valid cert */
    buf_init(&b, BUFMAX);
    assert_int_equal(mrec_cert_encode(&b, &c), 0);
    for (size_t i = 0; i < b.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b.data[i] ^= (char)(1 << bit);
            if (mrec_cert_decode_bytes(b.data, b.len, &t) == 0 &&
                mrec_cert_verify_sig(&t) == 0)
                bad++;
            b.data[i] ^= (char)(1 << bit);
        }
    }
    assert_int_equal(bad, 0);
    buf_cleanup(&b);
}

/* ---- chains ---------------------------------------------------------- */

/* keys[0] is the root; chain of n: c[0] is keys[n-1]'s, c[n-1] the
 * root's. Each cert is signed by the next key down. */
struct world {
    struct kp k[MREC_CHAIN_MAX + 1];
    char names[MREC_CHAIN_MAX + 1][MREC_NAME_MAX];
};

static void
world_make(struct world *w)
{
    for (unsigned i = 0; i <= MREC_CHAIN_MAX; i++) {
        kp_make(&w->k[i], (uint8_t)(0x40 + i));
        snprintf(w->names[i], sizeof(w->names[i]), "n%u", i);
    }
}

static void
chain_make(const struct world *w, unsigned n, struct mrec_chain *ch)
{
    memset(ch, 0, sizeof(*ch));
    ch->n = n;
    for (unsigned i = 0; i < n; i++) {
        unsigned key = n - 1 - i; /* c[i] belongs to key n-1-i */
        unsigned issuer = key == 0 ? 0 : key - 1;

        cert_make(&ch->c[i], mesh_a, &w->k[key], w->names[key], NOW - DAY,
                  NOW + 30 * DAY, &w->k[issuer]);
    }
}

/* Re-sign c[i] after a change, with its issuer's key. */
static void
chain_resign(const struct world *w, struct mrec_chain *ch, unsigned i)
{
    unsigned key = ch->n - 1 - i;

    assert_int_equal(mrec_cert_sign(&ch->c[i], w->k[key == 0 ? 0 : key - 1].sk),
                     0);
}

struct revoked {
    const uint8_t *pk;
    unsigned calls;
};

static int
is_revoked(void *arg, const uint8_t pk[MREC_PK])
{
    struct revoked *r = arg;

    r->calls++;
    return r->pk != NULL && memcmp(pk, r->pk, MREC_PK) == 0;
}

static void
expect_perm(const struct mrec_chain *ch, const uint8_t *mesh,
            const uint8_t *root, int64_t now, struct revoked *rv,
            const char *want)
{
    char err[MREC_ERR_MAX];
    int r = mrec_chain_verify(ch, mesh, root, now, rv ? is_revoked : NULL, rv,
                              err, sizeof(err));

    assert_int_equal(r, RM_E_PERM);
    if (strstr(err, want) == NULL)
        fail_msg("err \"%s\" lacks \"%s\"", err, want);
}

static void
test_chain_valid(void **state)
{
    struct world w;
    struct mrec_chain ch, d;
    struct revoked rv = {0};
    char err[MREC_ERR_MAX];
    struct buf b;
    msgpack_zone z;
    msgpack_object o;

    (void)state;
    world_make(&w);
    buf_init(&b, BUFMAX);
    for (unsigned n = 1; n <= MREC_CHAIN_MAX; n++) {
        chain_make(&w, n, &ch);
        strcpy(err, "x");
        rv.calls = 0;
        assert_int_equal(mrec_chain_verify(&ch, mesh_a, w.k[0].pk, NOW,
                                           is_revoked, &rv, err, sizeof(err)),
                         0);
        assert_string_equal(err, "");
        assert_int_equal(rv.calls, n);
        assert_int_equal(
            mrec_chain_verify(&ch, mesh_a, w.k[0].pk, NOW, NULL, NULL, NULL, 0),
            0);
        buf_reset(&b);
        assert_int_equal(mrec_chain_encode(&b, &ch), 0);
        assert_int_equal(mrec_chain_decode_bytes(b.data, b.len, &d), 0);
        assert_memory_equal(&ch, &d, sizeof(ch));
        unpack(b.data, b.len, &z, &o);
        assert_int_equal(mrec_chain_decode_obj(&o, &d), 0);
        assert_memory_equal(&ch, &d, sizeof(ch));
        msgpack_zone_destroy(&z);
    }
    /* boundaries of time: issued up to 300 s ahead, valid until expires */
    chain_make(&w, 2, &ch);
    ch.c[0].issued = NOW + MREC_CLOCK_SKEW;
    chain_resign(&w, &ch, 0);
    assert_int_equal(
        mrec_chain_verify(&ch, mesh_a, w.k[0].pk, NOW, NULL, NULL, NULL, 0), 0);
    assert_int_equal(mrec_chain_verify(&ch, mesh_a, w.k[0].pk,
                                       NOW + 30 * DAY - 1, NULL, NULL, NULL, 0),
                     0);
    assert_int_equal(
        mrec_chain_verify(NULL, mesh_a, w.k[0].pk, NOW, NULL, NULL, NULL, 0),
        RM_E_INVAL);
    assert_int_equal(
        mrec_chain_verify(&ch, NULL, w.k[0].pk, NOW, NULL, NULL, NULL, 0),
        RM_E_INVAL);
    assert_int_equal(
        mrec_chain_verify(&ch, mesh_a, NULL, NOW, NULL, NULL, NULL, 0),
        RM_E_INVAL);
    buf_cleanup(&b);
}

static void
test_chain_expired(void **state)
{
    struct world w;
    struct mrec_chain ch;
    char want[128];

    (void)state;
    world_make(&w);
    for (unsigned i = 0; i < 3; i++) {
        chain_make(&w, 3, &ch);
        ch.c[i].expires = NOW;
        chain_resign(&w, &ch, i);
        snprintf(want, sizeof(want),
                 "certificate of %s expired at 2025-01-01T00:00:00Z",
                 ch.c[i].name);
        expect_perm(&ch, mesh_a, w.k[0].pk, NOW, NULL, want);
        assert_int_equal(mrec_chain_verify(&ch, mesh_a, w.k[0].pk, NOW - 1,
                                           NULL, NULL, NULL, 0),
                         0);
    }
    /* the date format across eras */
    chain_make(&w, 1, &ch);
    ch.c[0].expires = 951782400 + 3661; /* 2000-02-29T01:01:01Z */
    chain_resign(&w, &ch, 0);
    expect_perm(&ch, mesh_a, w.k[0].pk, NOW, NULL,
                "certificate of n0 expired at 2000-02-29T01:01:01Z");
    ch.c[0].expires = -1;
    chain_resign(&w, &ch, 0);
    expect_perm(&ch, mesh_a, w.k[0].pk, NOW, NULL,
                "expired at 1969-12-31T23:59:59Z");
    ch.c[0].expires = INT64_MIN;
    chain_resign(&w, &ch, 0);
    expect_perm(&ch, mesh_a, w.k[0].pk, NOW, NULL, "expired at ");
}

static void
test_chain_revoked(void **state)
{
    struct world w;
    struct mrec_chain ch;
    struct revoked rv;
    char want[128];

    (void)state;
    world_make(&w);
    chain_make(&w, 3, &ch);
    for (unsigned i = 0; i < 3; i++) {
        rv.pk = ch.c[i].node_pk;
        rv.calls = 0;
        snprintf(want, sizeof(want), "%s is revoked", ch.c[i].name);
        expect_perm(&ch, mesh_a, w.k[0].pk, NOW, &rv, want);
    }
    rv.pk = w.k[7].pk; /* not in the chain */
    assert_int_equal(mrec_chain_verify(&ch, mesh_a, w.k[0].pk, NOW, is_revoked,
                                       &rv, NULL, 0),
                     0);
}

static void
test_chain_wrong_mesh_root_link(void **state)
{
    struct world w;
    struct mrec_chain ch, two;
    struct kp stranger;
    char want[128];

    (void)state;
    world_make(&w);
    kp_make(&stranger, 0x77);
    chain_make(&w, 3, &ch);
    expect_perm(&ch, mesh_b, w.k[0].pk, NOW, NULL,
                "certificate of n2 is not of this mesh");
    /* one link of another mesh, properly signed */
    for (unsigned i = 0; i < 3; i++) {
        chain_make(&w, 3, &two);
        memcpy(two.c[i].mesh_id, mesh_b, MREC_MESHID);
        chain_resign(&w, &two, i);
        snprintf(want, sizeof(want), "certificate of %s is not of this mesh",
                 two.c[i].name);
        expect_perm(&two, mesh_a, w.k[0].pk, NOW, NULL, want);
    }
    /* another root */
    expect_perm(&ch, mesh_a, stranger.pk, NOW, NULL,
                "chain does not end at the mesh's first node");
    /* the root's cert left off: the last is not self-signed */
    two = ch;
    two.n = 2;
    expect_perm(&two, mesh_a, w.k[0].pk, NOW, NULL,
                "chain does not end at the mesh's first node");
    expect_perm(&two, mesh_a, w.k[1].pk, NOW, NULL,
                "chain does not end at the mesh's first node");
    /* a self-signed stranger claiming the mesh */
    memset(&two, 0, sizeof(two));
    two.n = 1;
    cert_make(&two.c[0], mesh_a, &stranger, "evil", NOW, NOW + DAY, &stranger);
    expect_perm(&two, mesh_a, w.k[0].pk, NOW, NULL,
                "chain does not end at the mesh's first node");
    /* broken link: c[1] replaced by an unrelated member's cert */
    two = ch;
    cert_make(&two.c[1], mesh_a, &stranger, "other", NOW, NOW + DAY, &w.k[0]);
    expect_perm(&two, mesh_a, w.k[0].pk, NOW, NULL,
                "issuer mismatch: n2's certificate is not signed by other");
    /* links out of order */
    two = ch;
    two.c[0] = ch.c[1];
    two.c[1] = ch.c[0];
    expect_perm(&two, mesh_a, w.k[0].pk, NOW, NULL, "issuer mismatch");
    /* a bad signature, at each link */
    for (unsigned i = 0; i < 3; i++) {
        two = ch;
        two.c[i].expires += 1;
        snprintf(want, sizeof(want), "bad signature on %s's certificate",
                 two.c[i].name);
        expect_perm(&two, mesh_a, w.k[0].pk, NOW, NULL, want);
    }
}

static void
test_chain_length_and_future(void **state)
{
    struct world w;
    struct mrec_chain ch;
    struct buf b;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    (void)state;
    world_make(&w);
    chain_make(&w, MREC_CHAIN_MAX, &ch);
    assert_int_equal(
        mrec_chain_verify(&ch, mesh_a, w.k[0].pk, NOW, NULL, NULL, NULL, 0), 0);
    ch.n = MREC_CHAIN_MAX + 1;
    expect_perm(&ch, mesh_a, w.k[0].pk, NOW, NULL, "chain too long");
    buf_init(&b, BUFMAX);
    assert_int_equal(mrec_chain_encode(&b, &ch), RM_E_INVAL);
    ch.n = 0;
    expect_perm(&ch, mesh_a, w.k[0].pk, NOW, NULL, "empty");
    assert_int_equal(mrec_chain_encode(&b, &ch), RM_E_INVAL);
    /* nine certificates on the wire */
    chain_make(&w, MREC_CHAIN_MAX, &ch);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, MREC_CHAIN_MAX + 1);
    for (unsigned i = 0; i <= MREC_CHAIN_MAX; i++) {
        buf_reset(&b);
        assert_int_equal(mrec_cert_encode(&b, &ch.c[i % MREC_CHAIN_MAX]), 0);
        msgpack_sbuffer_write(&sb, b.data, b.len);
    }
    assert_int_equal(mrec_chain_decode_bytes(sb.data, sb.size, &ch),
                     RM_E_PROTO);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_array(&pk, 0);
    assert_int_equal(mrec_chain_decode_bytes(sb.data, sb.size, &ch),
                     RM_E_PROTO);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_nil(&pk);
    assert_int_equal(mrec_chain_decode_bytes(sb.data, sb.size, &ch),
                     RM_E_PROTO);
    msgpack_sbuffer_destroy(&sb);
    /* issued in the future, at each link */
    for (unsigned i = 0; i < 3; i++) {
        char want[128];

        chain_make(&w, 3, &ch);
        ch.c[i].issued = NOW + MREC_CLOCK_SKEW + 1;
        chain_resign(&w, &ch, i);
        snprintf(want, sizeof(want),
                 "certificate of %s is not valid before 2025-01-01T00:05:01Z",
                 ch.c[i].name);
        expect_perm(&ch, mesh_a, w.k[0].pk, NOW, NULL, want);
        assert_int_equal(mrec_chain_verify(&ch, mesh_a, w.k[0].pk, NOW + 1,
                                           NULL, NULL, NULL, 0),
                         0);
    }
    /* no overflow at the end of time */
    chain_make(&w, 1, &ch);
    ch.c[0].issued = INT64_MAX;
    ch.c[0].expires = INT64_MAX;
    chain_resign(&w, &ch, 0);
    assert_int_equal(mrec_chain_verify(&ch, mesh_a, w.k[0].pk, INT64_MAX - 10,
                                       NULL, NULL, NULL, 0),
                     0);
    buf_cleanup(&b);
}

/* ---- node records ---------------------------------------------------- */

static char *node_domains[] = {"example.org", "mail.example.net"};
static char *node_users[] = {"alice@example.org", "bob@example.org",
                             "postmaster@mail.example.net"};

static void
node_fill(struct mrec_node *n)
{
    memset(n, 0, sizeof(*n));
    memcpy(n->mesh_id, mesh_a, MREC_MESHID);
    snprintf(n->name, sizeof(n->name), "node-7");
    n->version = 42;
    snprintf(n->software, sizeof(n->software), "relaymesh 0.1.0");
    n->egress = 1;
    n->n_addrs = 2;
    snprintf(n->addrs[0], MREC_ADDR_MAX, "198.51.100.7:7946");
    snprintf(n->addrs[1], MREC_ADDR_MAX, "[2001:db8::7]:7946");
    n->n_domains = 2;
    n->domains = node_domains;
    n->n_users = 3;
    n->users = node_users;
}

static void
node_equal(const struct mrec_node *a, const struct mrec_node *b)
{
    assert_memory_equal(a->mesh_id, b->mesh_id, MREC_MESHID);
    assert_memory_equal(a->node_pk, b->node_pk, MREC_PK);
    assert_string_equal(a->name, b->name);
    assert_true(a->version == b->version);
    assert_string_equal(a->software, b->software);
    assert_int_equal(!!a->egress, !!b->egress);
    assert_int_equal(a->n_addrs, b->n_addrs);
    for (unsigned i = 0; i < a->n_addrs; i++)
        assert_string_equal(a->addrs[i], b->addrs[i]);
    assert_int_equal(a->n_domains, b->n_domains);
    for (unsigned i = 0; i < a->n_domains; i++)
        assert_string_equal(a->domains[i], b->domains[i]);
    assert_int_equal(a->n_users, b->n_users);
    for (unsigned i = 0; i < a->n_users; i++)
        assert_string_equal(a->users[i], b->users[i]);
    assert_memory_equal(a->sig, b->sig, MREC_SIG);
}

static int
dec_node(const void *p, size_t len)
{
    struct mrec_node *n = NULL;
    int r = mrec_node_decode_bytes(p, len, &n);

    assert_true((r == 0) == (n != NULL));
    mrec_node_free(n);
    return r;
}

static void
test_node_roundtrip(void **state)
{
    struct kp k, other;
    struct mrec_node n, t, *d = NULL;
    struct buf b, b2;
    msgpack_zone z;
    msgpack_object o;
    char *dom[1] = {"example.org"};
    char *users[1] = {"x@example.org"};

    (void)state;
    kp_make(&k, 9);
    kp_make(&other, 10);
    node_fill(&n);
    assert_int_equal(mrec_node_check(&n), 0);
    assert_int_equal(mrec_node_sign(&n, k.sk), 0);
    assert_memory_equal(n.node_pk, k.pk, MREC_PK);
    assert_int_equal(mrec_node_verify(&n), 0);
    buf_init(&b, BUFMAX);
    buf_init(&b2, BUFMAX);
    assert_int_equal(mrec_node_encode(&b, &n), 0);
    assert_int_equal(mrec_node_decode_bytes(b.data, b.len, &d), 0);
    node_equal(&n, d);
    assert_int_equal(mrec_node_verify(d), 0);
    assert_int_equal(mrec_node_encode(&b2, d), 0);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    mrec_node_free(d);
    unpack(b.data, b.len, &z, &o);
    assert_int_equal(mrec_node_decode_obj(&o, &d), 0);
    msgpack_zone_destroy(&z); /* the record owns its strings */
    node_equal(&n, d);
    assert_int_equal(mrec_node_verify(d), 0);
    mrec_node_free(d);
    check_prefixes(&b, dec_node);

    /* tampering */
    t = n;
    t.mesh_id[0] ^= 1;
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.node_pk[5] ^= 1;
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.name[0] = 'm';
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.version++;
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.software[0] = 'R';
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.egress = 0;
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.egress = 7; /* any true is true */
    assert_int_equal(mrec_node_verify(&t), 0);
    t = n;
    t.addrs[1][3] = '2';
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.n_addrs = 1;
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.domains = dom;
    t.n_domains = 1;
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.users = users;
    t.n_users = 1;
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.sig[63] ^= 1;
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    memcpy(t.node_pk, other.pk, MREC_PK);
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    /* signed by another key than the one it names */
    t = n;
    assert_int_equal(mrec_node_sign(&t, other.sk), 0);
    memcpy(t.node_pk, k.pk, MREC_PK);
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);

    /* empty lists */
    t = n;
    t.n_addrs = 0;
    t.n_domains = 0;
    t.domains = NULL;
    t.n_users = 0;
    t.users = NULL;
    t.software[0] = '\0';
    t.egress = 0;
    assert_int_equal(mrec_node_sign(&t, k.sk), 0);
    buf_reset(&b);
    assert_int_equal(mrec_node_encode(&b, &t), 0);
    assert_int_equal(mrec_node_decode_bytes(b.data, b.len, &d), 0);
    node_equal(&t, d);
    assert_null(d->domains);
    assert_null(d->users);
    assert_int_equal(mrec_node_verify(d), 0);
    mrec_node_free(d);

    /* misuse: the encoder refuses what breaks the rules */
    t = n;
    t.domains = NULL;
    assert_int_equal(mrec_node_encode(&b, &t), RM_E_INVAL);
    assert_int_equal(mrec_node_sign(&t, k.sk), RM_E_INVAL);
    assert_int_equal(mrec_node_verify(&t), RM_E_PERM);
    t = n;
    t.n_addrs = MREC_ADDRS_MAX + 1;
    assert_int_equal(mrec_node_check(&t), RM_E_INVAL);
    t = n;
    dom[0] = "Example.org";
    t.domains = dom;
    t.n_domains = 1;
    assert_int_equal(mrec_node_check(&t), RM_E_INVAL);
    t = n;
    users[0] = "nobody";
    t.users = users;
    t.n_users = 1;
    assert_int_equal(mrec_node_check(&t), RM_E_INVAL);
    t = n;
    t.software[0] = '\n';
    assert_int_equal(mrec_node_check(&t), RM_E_INVAL);
    t = n;
    t.n_domains = MREC_DOMAINS_MAX + 1;
    assert_int_equal(mrec_node_check(&t), RM_E_INVAL);
    t = n;
    t.n_users = MREC_USERS_MAX + 1;
    assert_int_equal(mrec_node_check(&t), RM_E_INVAL);
    assert_int_equal(mrec_node_check(NULL), RM_E_INVAL);
    assert_int_equal(mrec_node_sign(&n, NULL), RM_E_INVAL);
    assert_int_equal(mrec_node_decode_bytes(b.data, b.len, NULL), RM_E_INVAL);
    mrec_node_free(NULL);
    buf_cleanup(&b);
    buf_cleanup(&b2);
}

/* Many users: 50,000 short ones fit; long ones pass the size bound. */
static void
test_node_many_users(void **state)
{
    struct kp k;
    struct mrec_node n, *d = NULL;
    struct buf b;
    char **users = calloc(MREC_USERS_MAX, sizeof(char *));
    char *pool = malloc((size_t)MREC_USERS_MAX * 32);
    char *doms[MREC_DOMAINS_MAX];
    char dpool[MREC_DOMAINS_MAX][16];

    (void)state;
    assert_non_null(users);
    assert_non_null(pool);
    kp_make(&k, 11);
    for (unsigned i = 0; i < MREC_USERS_MAX; i++) {
        users[i] = pool + (size_t)i * 32;
        snprintf(users[i], 32, "u%u@ex.org", i);
    }
    for (unsigned i = 0; i < MREC_DOMAINS_MAX; i++) {
        doms[i] = dpool[i];
        snprintf(dpool[i], sizeof(dpool[i]), "d%u.org", i);
    }
    node_fill(&n);
    n.users = users;
    n.n_users = MREC_USERS_MAX;
    n.domains = doms;
    n.n_domains = MREC_DOMAINS_MAX;
    assert_int_equal(mrec_node_sign(&n, k.sk), 0);
    buf_init(&b, BUFMAX);
    assert_int_equal(mrec_node_encode(&b, &n), 0);
    assert_true(b.len <= MREC_NODE_ENC_MAX);
    assert_int_equal(mrec_node_decode_bytes(b.data, b.len, &d), 0);
    node_equal(&n, d);
    assert_int_equal(mrec_node_verify(d), 0);
    mrec_node_free(d);
    /* too big: 50,000 addresses of 30 bytes */
    for (unsigned i = 0; i < MREC_USERS_MAX; i++)
        snprintf(users[i], 32, "user-%08u@example.org", i);
    assert_int_equal(mrec_node_check(&n), RM_E_TOOBIG);
    assert_int_equal(mrec_node_sign(&n, k.sk), RM_E_TOOBIG);
    buf_reset(&b);
    assert_int_equal(mrec_node_encode(&b, &n), RM_E_TOOBIG);
    assert_int_equal(b.len, 0);
    assert_int_equal(mrec_node_verify(&n), RM_E_PERM);
    buf_cleanup(&b);
    free(users);
    free(pool);
}

/* A node map written by hand, with one thing wrong. */
struct rawopt {
    const char *skip;     /* key left out */
    const char *dup;      /* key written twice */
    const char *nil;      /* key whose value is nil */
    int extra;            /* unknown keys added */
    unsigned n_users;     /* generated users instead of the record's */
    unsigned n_domains;   /* generated domains instead */
    unsigned n_addrs;     /* generated addresses instead */
    const char *name;     /* instead of the record's */
    const char *user;     /* one user instead of the record's */
    int user_nul;         /* one user with a NUL inside */
    size_t mesh_len;      /* mesh id of another length */
    int version_negative; /* version -1 */
};

static void
raw_value(msgpack_packer *pk, const struct mrec_node *n, const char *k,
          const struct rawopt *o)
{
    static const uint8_t zeros[64];
    char tmp[64];

    if (o->nil != NULL && strcmp(k, o->nil) == 0) {
        msgpack_pack_nil(pk);
    } else if (strcmp(k, "m") == 0) {
        if (o->mesh_len)
            msgpack_pack_bin_with_body(pk, zeros, o->mesh_len);
        else
            msgpack_pack_bin_with_body(pk, n->mesh_id, MREC_MESHID);
    } else if (strcmp(k, "k") == 0) {
        msgpack_pack_bin_with_body(pk, n->node_pk, MREC_PK);
    } else if (strcmp(k, "n") == 0) {
        pk_text(pk, o->name ? o->name : n->name);
    } else if (strcmp(k, "v") == 0) {
        if (o->version_negative)
            msgpack_pack_int64(pk, -1);
        else
            msgpack_pack_uint64(pk, n->version);
    } else if (strcmp(k, "sw") == 0) {
        pk_text(pk, n->software);
    } else if (strcmp(k, "eg") == 0) {
        msgpack_pack_true(pk);
    } else if (strcmp(k, "a") == 0) {
        unsigned na = o->n_addrs ? o->n_addrs : n->n_addrs;

        msgpack_pack_array(pk, na);
        for (unsigned i = 0; i < na; i++)
            pk_text(pk, o->n_addrs ? "h:1" : n->addrs[i]);
    } else if (strcmp(k, "d") == 0) {
        unsigned nd = o->n_domains ? o->n_domains : n->n_domains;

        msgpack_pack_array(pk, nd);
        for (unsigned i = 0; i < nd; i++) {
            snprintf(tmp, sizeof(tmp), "d%u.org", i);
            pk_text(pk, o->n_domains ? tmp : n->domains[i]);
        }
    } else if (strcmp(k, "u") == 0) {
        unsigned nu = o->user ? 1 : o->n_users ? o->n_users : n->n_users;

        if (o->user_nul) {
            msgpack_pack_array(pk, 1);
            msgpack_pack_str_with_body(pk, "a\0b@x.org", 9);
            return;
        }
        msgpack_pack_array(pk, nu);
        for (unsigned i = 0; i < nu; i++) {
            snprintf(tmp, sizeof(tmp), "u%u@x.org", i);
            pk_text(pk, o->user ? o->user : o->n_users ? tmp : n->users[i]);
        }
    } else if (strcmp(k, "s") == 0) {
        msgpack_pack_bin_with_body(pk, n->sig, MREC_SIG);
    }
}

static void
raw_node(msgpack_sbuffer *sb, const struct mrec_node *n, const struct rawopt *o)
{
    static const char *const keys[] = {"m",  "k", "n", "v", "sw",
                                       "eg", "a", "d", "u", "s"};
    msgpack_packer pk;
    unsigned cnt = 0;

    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    for (unsigned i = 0; i < 10; i++) {
        if (o->skip == NULL || strcmp(keys[i], o->skip) != 0)
            cnt++;
        if (o->dup != NULL && strcmp(keys[i], o->dup) == 0)
            cnt++;
    }
    if (o->extra)
        cnt += 2;
    msgpack_pack_map(&pk, cnt);
    if (o->extra) {
        pk_key(&pk, "zz");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_double(&pk, 1.5);
        msgpack_pack_map(&pk, 0);
    }
    for (unsigned i = 0; i < 10; i++) {
        if (o->skip != NULL && strcmp(keys[i], o->skip) == 0)
            continue;
        pk_key(&pk, keys[i]);
        raw_value(&pk, n, keys[i], o);
        if (o->dup != NULL && strcmp(keys[i], o->dup) == 0) {
            pk_key(&pk, keys[i]);
            raw_value(&pk, n, keys[i], o);
        }
    }
    if (o->extra) {
        pk_key(&pk, "future");
        pk_text(&pk, "ignored");
    }
}

static int
raw_decode(const struct mrec_node *n, const struct rawopt *o)
{
    msgpack_sbuffer sb;
    struct mrec_node *d = NULL;
    int r;

    msgpack_sbuffer_init(&sb);
    raw_node(&sb, n, o);
    r = mrec_node_decode_bytes(sb.data, sb.size, &d);
    if (r == 0) {
        r = mrec_node_verify(d) == 0 ? 0 : 1;
        if (r == 0)
            node_equal(n, d);
    } else {
        assert_null(d);
    }
    mrec_node_free(d);
    msgpack_sbuffer_destroy(&sb);
    return r;
}

static void
test_node_decode_bad(void **state)
{
    static const char *const keys[] = {"m",  "k", "n", "v", "sw",
                                       "eg", "a", "d", "u", "s"};
    struct kp k;
    struct mrec_node n;
    char longname[80];
    char longuser[300];

    (void)state;
    kp_make(&k, 12);
    node_fill(&n);
    assert_int_equal(mrec_node_sign(&n, k.sk), 0);
    /* as written by the encoder: fine; unknown keys: ignored */
    assert_int_equal(raw_decode(&n, &(struct rawopt){0}), 0);
    assert_int_equal(raw_decode(&n, &(struct rawopt){.extra = 1}), 0);
    for (unsigned i = 0; i < 10; i++) {
        assert_int_equal(raw_decode(&n, &(struct rawopt){.skip = keys[i]}),
                         RM_E_PROTO);
        assert_int_equal(raw_decode(&n, &(struct rawopt){.dup = keys[i]}),
                         RM_E_PROTO);
        assert_int_equal(raw_decode(&n, &(struct rawopt){.nil = keys[i]}),
                         RM_E_PROTO);
    }
    assert_int_equal(raw_decode(&n, &(struct rawopt){.mesh_len = 15}),
                     RM_E_PROTO);
    assert_int_equal(raw_decode(&n, &(struct rawopt){.mesh_len = 17}),
                     RM_E_PROTO);
    assert_int_equal(raw_decode(&n, &(struct rawopt){.version_negative = 1}),
                     RM_E_PROTO);
    memset(longname, 'a', 64);
    longname[64] = '\0';
    assert_int_equal(raw_decode(&n, &(struct rawopt){.name = longname}),
                     RM_E_PROTO);
    assert_int_equal(raw_decode(&n, &(struct rawopt){.name = ""}), RM_E_PROTO);
    assert_int_equal(raw_decode(&n, &(struct rawopt){.name = "a b"}),
                     RM_E_PROTO);
    assert_int_equal(
        raw_decode(&n, &(struct rawopt){.n_users = MREC_USERS_MAX + 1}),
        RM_E_PROTO);
    assert_int_equal(
        raw_decode(&n, &(struct rawopt){.n_domains = MREC_DOMAINS_MAX + 1}),
        RM_E_PROTO);
    assert_int_equal(
        raw_decode(&n, &(struct rawopt){.n_addrs = MREC_ADDRS_MAX + 1}),
        RM_E_PROTO);
    memset(longuser, 'l', 64);
    longuser[64] = '@';
    memset(longuser + 65, 'd', 190);
    longuser[255] = '\0';
    assert_int_equal(raw_decode(&n, &(struct rawopt){.user = longuser}),
                     RM_E_PROTO);
    assert_int_equal(raw_decode(&n, &(struct rawopt){.user = "a@B.org"}),
                     RM_E_PROTO);
    assert_int_equal(raw_decode(&n, &(struct rawopt){.user_nul = 1}),
                     RM_E_PROTO);
    /* the right counts with other content decode (and fail the sig) */
    assert_int_equal(
        raw_decode(&n, &(struct rawopt){.n_users = MREC_USERS_MAX - 1}), 1);

    /* not a map at all; garbage; trailing bytes */
    assert_int_equal(dec_node("\x90", 1), RM_E_PROTO);
    assert_int_equal(dec_node("\xc0", 1), RM_E_PROTO);
    assert_int_equal(dec_node("\x80", 1), RM_E_PROTO);
    assert_int_equal(dec_node("\xc1", 1), RM_E_PROTO);
    assert_int_equal(dec_node("\xdf\xff\xff\xff\xff", 5), RM_E_PROTO);
    assert_int_equal(dec_node("\x80\x80", 2), RM_E_PROTO);
    /* a map with a non-string key */
    assert_int_equal(dec_node("\x81\x01\x02", 3), RM_E_PROTO);
}

/* ---- revocations ----------------------------------------------------- */

static int
dec_revoke(const void *p, size_t len)
{
    struct mrec_revoke r;

    return mrec_revoke_decode_bytes(p, len, &r);
}

static void
test_revoke(void **state)
{
    struct kp by, victim, other;
    struct mrec_revoke r, d, t;
    struct buf b, b2;
    msgpack_zone z;
    msgpack_object o;

    (void)state;
    kp_make(&by, 20);
    kp_make(&victim, 21);
    kp_make(&other, 22);
    memset(&r, 0, sizeof(r));
    memcpy(r.mesh_id, mesh_a, MREC_MESHID);
    memcpy(r.node_pk, victim.pk, MREC_PK);
    snprintf(r.name, sizeof(r.name), "lost-laptop");
    r.when = NOW;
    assert_int_equal(mrec_revoke_sign(&r, by.sk), 0);
    assert_memory_equal(r.by_pk, by.pk, MREC_PK);
    assert_int_equal(mrec_revoke_verify_sig(&r), 0);
    buf_init(&b, BUFMAX);
    buf_init(&b2, BUFMAX);
    assert_int_equal(mrec_revoke_encode(&b, &r), 0);
    assert_int_equal(mrec_revoke_decode_bytes(b.data, b.len, &d), 0);
    assert_memory_equal(&r, &d, sizeof(r));
    assert_int_equal(mrec_revoke_verify_sig(&d), 0);
    assert_int_equal(mrec_revoke_encode(&b2, &d), 0);
    assert_memory_equal(b.data, b2.data, b.len);
    unpack(b.data, b.len, &z, &o);
    assert_int_equal(mrec_revoke_decode_obj(&o, &d), 0);
    assert_memory_equal(&r, &d, sizeof(r));
    msgpack_zone_destroy(&z);
    check_prefixes(&b, dec_revoke);
    t = r;
    t.mesh_id[15] ^= 1;
    assert_int_equal(mrec_revoke_verify_sig(&t), RM_E_PERM);
    t = r;
    t.node_pk[1] ^= 1;
    assert_int_equal(mrec_revoke_verify_sig(&t), RM_E_PERM);
    t = r;
    t.name[0] = 'L';
    assert_int_equal(mrec_revoke_verify_sig(&t), RM_E_PERM);
    t = r;
    t.when = NOW + 1;
    assert_int_equal(mrec_revoke_verify_sig(&t), RM_E_PERM);
    t = r;
    memcpy(t.by_pk, other.pk, MREC_PK);
    assert_int_equal(mrec_revoke_verify_sig(&t), RM_E_PERM);
    t = r;
    t.sig[0] ^= 1;
    assert_int_equal(mrec_revoke_verify_sig(&t), RM_E_PERM);
    t = r;
    assert_int_equal(mrec_revoke_sign(&t, other.sk), 0);
    memcpy(t.by_pk, by.pk, MREC_PK);
    assert_int_equal(mrec_revoke_verify_sig(&t), RM_E_PERM);
    t = r;
    t.name[0] = '\0';
    assert_int_equal(mrec_revoke_sign(&t, by.sk), RM_E_INVAL);
    assert_int_equal(mrec_revoke_encode(&b, &t), RM_E_INVAL);
    assert_int_equal(mrec_revoke_verify_sig(&t), RM_E_PERM);
    /* a cert is not a revocation */
    {
        struct mrec_cert c;

        cert_make(&c, mesh_a, &victim, "x", NOW, NOW + 1, &by);
        buf_reset(&b);
        assert_int_equal(mrec_cert_encode(&b, &c), 0);
        assert_int_equal(mrec_revoke_decode_bytes(b.data, b.len, &d),
                         RM_E_PROTO);
    }
    buf_cleanup(&b);
    buf_cleanup(&b2);
}

/* ---- invites --------------------------------------------------------- */

static void
invite_fill(struct mrec_invite *iv, const struct kp *root)
{
    memset(iv, 0, sizeof(*iv));
    memcpy(iv->mesh_id, mesh_a, MREC_MESHID);
    memcpy(iv->root_pk, root->pk, MREC_PK);
    snprintf(iv->inviter_name, MREC_NAME_MAX, "hub");
    iv->n_addrs = 2;
    snprintf(iv->addrs[0], MREC_ADDR_MAX, "hub.example.org:7946");
    snprintf(iv->addrs[1], MREC_ADDR_MAX, "[2001:db8::1]:7946");
    memset(iv->id, 0xa5, MREC_INVITE_ID);
    snprintf(iv->name, MREC_NAME_MAX, "branch-office");
    iv->expires = NOW + DAY;
}

static int
dec_invite(const void *p, size_t len)
{
    struct mrec_invite iv;

    return mrec_invite_decode_bytes(p, len, &iv);
}

static void
test_invite(void **state)
{
    struct kp root, inviter, other;
    struct mrec_invite iv, d, t;
    char text[MREC_INVITE_TEXT_MAX], text2[MREC_INVITE_TEXT_MAX + 16];
    char err[MREC_ERR_MAX];
    struct buf b;
    size_t len;

    (void)state;
    kp_make(&root, 30);
    kp_make(&inviter, 31);
    kp_make(&other, 32);
    invite_fill(&iv, &root);
    assert_int_equal(mrec_invite_sign(&iv, inviter.sk), 0);
    assert_memory_equal(iv.inviter_pk, inviter.pk, MREC_PK);
    assert_int_equal(mrec_invite_verify_sig(&iv), 0);
    assert_int_equal(mrec_invite_to_text(&iv, text, sizeof(text)), 0);
    assert_memory_equal(text, "rmi1.", 5);
    assert_null(strpbrk(text + 5, "+/=\n "));
    assert_int_equal(mrec_invite_from_text(text, &d, err, sizeof(err)), 0);
    assert_memory_equal(&iv, &d, sizeof(iv));
    assert_int_equal(mrec_invite_verify_sig(&d), 0);
    /* whitespace around and inside */
    len = strlen(text);
    snprintf(text2, sizeof(text2), " \t\r\n%.*s\n%s \r\n", 20, text, text + 20);
    assert_int_equal(mrec_invite_from_text(text2, &d, err, sizeof(err)), 0);
    assert_memory_equal(&iv, &d, sizeof(iv));
    /* wrong prefix */
    text[3] = '2';
    assert_int_equal(mrec_invite_from_text(text, &d, err, sizeof(err)),
                     RM_E_PROTO);
    assert_string_equal(err, "not a relaymesh invite token");
    text[3] = '1';
    assert_int_equal(mrec_invite_from_text("hello", &d, err, sizeof(err)),
                     RM_E_PROTO);
    assert_string_equal(err, "not a relaymesh invite token");
    assert_int_equal(mrec_invite_from_text("", &d, err, sizeof(err)),
                     RM_E_PROTO);
    assert_string_equal(err, "not a relaymesh invite token");
    /* damaged: truncated anywhere, a bad character, nothing after the
     * prefix */
    for (size_t i = 5; i < len; i++) {
        snprintf(text2, sizeof(text2), "%.*s", (int)i, text);
        assert_int_equal(mrec_invite_from_text(text2, &d, err, sizeof(err)),
                         RM_E_PROTO);
        assert_string_equal(err, "token is damaged (copy it again whole)");
    }
    snprintf(text2, sizeof(text2), "%s", text);
    text2[len / 2] = '*';
    assert_int_equal(mrec_invite_from_text(text2, &d, err, sizeof(err)),
                     RM_E_PROTO);
    assert_string_equal(err, "token is damaged (copy it again whole)");
    /* a changed character decodes as a changed invite at best */
    for (size_t i = 5; i < len; i++) {
        snprintf(text2, sizeof(text2), "%s", text);
        text2[i] = text2[i] == 'A' ? 'B' : 'A';
        if (mrec_invite_from_text(text2, &d, NULL, 0) == 0)
            assert_int_equal(mrec_invite_verify_sig(&d), RM_E_PERM);
    }
    /* too long */
    {
        char *huge = malloc(20000);

        assert_non_null(huge);
        memcpy(huge, "rmi1.", 5);
        memset(huge + 5, 'A', 19994);
        huge[19999] = '\0';
        assert_int_equal(mrec_invite_from_text(huge, &d, err, sizeof(err)),
                         RM_E_PROTO);
        assert_string_equal(err, "token is too long");
        huge[4000] = '\0';
        assert_int_equal(mrec_invite_from_text(huge, &d, err, sizeof(err)),
                         RM_E_PROTO);
        assert_string_equal(err, "token is too long");
        free(huge);
    }
    /* tampering */
    t = iv;
    t.root_pk[0] ^= 1;
    assert_int_equal(mrec_invite_verify_sig(&t), RM_E_PERM);
    t = iv;
    t.id[0] ^= 1;
    assert_int_equal(mrec_invite_verify_sig(&t), RM_E_PERM);
    t = iv;
    t.expires++;
    assert_int_equal(mrec_invite_verify_sig(&t), RM_E_PERM);
    t = iv;
    t.name[0] = '\0';
    assert_int_equal(mrec_invite_verify_sig(&t), RM_E_PERM);
    t = iv;
    t.addrs[0][0] = 'x';
    assert_int_equal(mrec_invite_verify_sig(&t), RM_E_PERM);
    t = iv;
    t.inviter_name[0] = 'H';
    assert_int_equal(mrec_invite_verify_sig(&t), RM_E_PERM);
    t = iv;
    memcpy(t.inviter_pk, other.pk, MREC_PK);
    assert_int_equal(mrec_invite_verify_sig(&t), RM_E_PERM);
    /* the joiner keeps its own name */
    t = iv;
    memset(t.name, 0, sizeof(t.name));
    assert_int_equal(mrec_invite_sign(&t, inviter.sk), 0);
    assert_int_equal(mrec_invite_to_text(&t, text, sizeof(text)), 0);
    assert_int_equal(mrec_invite_from_text(text, &d, NULL, 0), 0);
    assert_memory_equal(&t, &d, sizeof(t));
    /* an invite needs an address */
    t.n_addrs = 0;
    assert_int_equal(mrec_invite_sign(&t, inviter.sk), RM_E_INVAL);
    assert_int_equal(mrec_invite_to_text(&t, text, sizeof(text)), RM_E_INVAL);
    /* the largest invite fits the text bound */
    t = iv;
    memset(t.inviter_name, 'i', 63);
    memset(t.name, 'n', 63);
    t.n_addrs = MREC_ADDRS_MAX;
    for (unsigned i = 0; i < MREC_ADDRS_MAX; i++) {
        memset(t.addrs[i], 'h', 121);
        snprintf(t.addrs[i] + 121, 7, ":65535");
        assert_true(mrec_addr_valid(t.addrs[i]));
    }
    t.expires = INT64_MIN;
    assert_int_equal(mrec_invite_sign(&t, inviter.sk), 0);
    assert_int_equal(mrec_invite_to_text(&t, text, sizeof(text)), 0);
    assert_true(strlen(text) < MREC_INVITE_TEXT_MAX);
    assert_int_equal(mrec_invite_from_text(text, &d, NULL, 0), 0);
    assert_memory_equal(&t, &d, sizeof(t));
    assert_int_equal(mrec_invite_verify_sig(&d), 0);
    assert_int_equal(mrec_invite_to_text(&t, text, strlen(text)), RM_E_TOOBIG);
    /* bytes */
    buf_init(&b, BUFMAX);
    assert_int_equal(mrec_invite_encode(&b, &iv), 0);
    check_prefixes(&b, dec_invite);
    buf_cleanup(&b);
    assert_int_equal(mrec_invite_from_text(NULL, &d, NULL, 0), RM_E_INVAL);
}

/* ---- SWIM messages --------------------------------------------------- */

static void
swim_fill(struct swim_msg *m, enum swim_msg_type type, unsigned nup)
{
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->seq = 0xfffffffe;
    snprintf(m->from, SWIM_NAME_MAX, "node-a");
    if (type == SWIM_MSG_PING || type == SWIM_MSG_PING_REQ)
        snprintf(m->target, SWIM_NAME_MAX, "node-b");
    m->n_updates = nup;
    for (unsigned i = 0; i < nup; i++) {
        snprintf(m->updates[i].name, SWIM_NAME_MAX, "member-%u", i);
        snprintf(m->updates[i].from, SWIM_NAME_MAX, "from-%u", i);
        m->updates[i].incarnation = i == 0 ? UINT32_MAX : i;
        m->updates[i].state = (enum swim_state)(i % 4);
    }
}

static int
dec_swim(const void *p, size_t len)
{
    struct swim_msg m;

    return mrec_swim_decode_bytes(p, len, &m);
}

/* The message as an array written by hand: [type, seq, from, target,
 * [[name, from, inc, state]]] with the given values. */
static int
raw_swim(uint64_t type, uint64_t seq, const char *from, const char *target,
         unsigned nup, uint64_t inc, uint64_t st, int extra)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct swim_msg m;
    int r;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, extra ? 6 : 5);
    msgpack_pack_uint64(&pk, type);
    msgpack_pack_uint64(&pk, seq);
    pk_text(&pk, from);
    pk_text(&pk, target);
    msgpack_pack_array(&pk, nup);
    for (unsigned i = 0; i < nup; i++) {
        msgpack_pack_array(&pk, extra ? 5 : 4);
        pk_text(&pk, "m");
        pk_text(&pk, "f");
        msgpack_pack_uint64(&pk, inc);
        msgpack_pack_uint64(&pk, st);
        if (extra)
            msgpack_pack_nil(&pk);
    }
    if (extra)
        pk_text(&pk, "later");
    r = mrec_swim_decode_bytes(sb.data, sb.size, &m);
    msgpack_sbuffer_destroy(&sb);
    return r;
}

static void
test_swim(void **state)
{
    struct swim_msg m, d;
    struct buf b, b2;
    msgpack_zone z;
    msgpack_object o;
    char n63[64];

    (void)state;
    buf_init(&b, BUFMAX);
    buf_init(&b2, BUFMAX);
    for (int type = SWIM_MSG_PING; type <= SWIM_MSG_GOSSIP; type++) {
        for (unsigned nup = 0; nup <= SWIM_PIGGYBACK_MAX; nup += 4) {
            swim_fill(&m, (enum swim_msg_type)type, nup);
            buf_reset(&b);
            assert_int_equal(mrec_swim_encode(&b, &m), 0);
            memset(&d, 0xee, sizeof(d));
            assert_int_equal(mrec_swim_decode_bytes(b.data, b.len, &d), 0);
            assert_memory_equal(&m, &d, sizeof(m));
            buf_reset(&b2);
            assert_int_equal(mrec_swim_encode(&b2, &d), 0);
            assert_memory_equal(b.data, b2.data, b.len);
            unpack(b.data, b.len, &z, &o);
            assert_int_equal(mrec_swim_decode_obj(&o, &d), 0);
            assert_memory_equal(&m, &d, sizeof(m));
            msgpack_zone_destroy(&z);
        }
    }
    check_prefixes(&b, dec_swim);
    /* any NUL-free name of 1..63 bytes (swim.h's rule) */
    swim_fill(&m, SWIM_MSG_ACK, 1);
    memset(n63, 'x', 63);
    n63[63] = '\0';
    n63[5] = ' ';
    memcpy(m.from, n63, 64);
    buf_reset(&b);
    assert_int_equal(mrec_swim_encode(&b, &m), 0);
    assert_int_equal(mrec_swim_decode_bytes(b.data, b.len, &d), 0);
    assert_memory_equal(&m, &d, sizeof(m));
    /* the encoder refuses what swim_receive() would */
    swim_fill(&m, SWIM_MSG_ACK, 1);
    m.type = (enum swim_msg_type)5;
    assert_int_equal(mrec_swim_encode(&b, &m), RM_E_INVAL);
    swim_fill(&m, SWIM_MSG_ACK, 1);
    m.updates[0].state = (enum swim_state)4;
    assert_int_equal(mrec_swim_encode(&b, &m), RM_E_INVAL);
    swim_fill(&m, SWIM_MSG_ACK, 1);
    m.n_updates = SWIM_PIGGYBACK_MAX + 1;
    assert_int_equal(mrec_swim_encode(&b, &m), RM_E_INVAL);
    swim_fill(&m, SWIM_MSG_PING, 0);
    m.target[0] = '\0';
    assert_int_equal(mrec_swim_encode(&b, &m), RM_E_INVAL);
    swim_fill(&m, SWIM_MSG_ACK, 0);
    m.from[0] = '\0';
    assert_int_equal(mrec_swim_encode(&b, &m), RM_E_INVAL);
    swim_fill(&m, SWIM_MSG_ACK, 0);
    memset(m.from, 'a', SWIM_NAME_MAX);
    assert_int_equal(mrec_swim_encode(&b, &m), RM_E_INVAL);
    swim_fill(&m, SWIM_MSG_ACK, 1);
    m.updates[0].from[0] = '\0';
    assert_int_equal(mrec_swim_encode(&b, &m), RM_E_INVAL);
    assert_int_equal(mrec_swim_encode(NULL, &m), RM_E_INVAL);
    assert_int_equal(mrec_swim_encode(&b, NULL), RM_E_INVAL);

    /* the decoder, by hand */
    assert_int_equal(raw_swim(0, 1, "a", "b", 1, 1, 0, 0), 0);
    assert_int_equal(raw_swim(0, 1, "a", "b", 1, 1, 0, 1), 0); /* extras */
    assert_int_equal(raw_swim(4, 1, "a", "", 0, 1, 0, 0), 0);
    assert_int_equal(raw_swim(5, 1, "a", "b", 1, 1, 0, 0), RM_E_PROTO);
    assert_int_equal(raw_swim(0, 1, "a", "b", 1, 1, 4, 0), RM_E_PROTO);
    assert_int_equal(
        raw_swim(0, (uint64_t)UINT32_MAX + 1, "a", "b", 0, 1, 0, 0),
        RM_E_PROTO);
    assert_int_equal(
        raw_swim(0, 1, "a", "b", 1, (uint64_t)UINT32_MAX + 1, 0, 0),
        RM_E_PROTO);
    assert_int_equal(raw_swim(0, 1, "a", "b", SWIM_PIGGYBACK_MAX + 1, 1, 0, 0),
                     RM_E_PROTO);
    assert_int_equal(raw_swim(0, 1, "a", "", 0, 1, 0, 0), RM_E_PROTO);
    assert_int_equal(raw_swim(2, 1, "a", "", 0, 1, 0, 0), RM_E_PROTO);
    assert_int_equal(raw_swim(1, 1, "", "", 0, 1, 0, 0), RM_E_PROTO);
    memset(n63, 'x', 63);
    n63[63] = '\0';
    assert_int_equal(raw_swim(1, 1, n63, "", 0, 1, 0, 0), 0);
    {
        char n64[65];

        memset(n64, 'x', 64);
        n64[64] = '\0';
        assert_int_equal(raw_swim(1, 1, n64, "", 0, 1, 0, 0), RM_E_PROTO);
        assert_int_equal(raw_swim(0, 1, "a", n64, 0, 1, 0, 0), RM_E_PROTO);
    }
    {
        /* a NUL inside a name */
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 5);
        msgpack_pack_uint8(&pk, 1);
        msgpack_pack_uint8(&pk, 1);
        msgpack_pack_str_with_body(&pk, "a\0b", 3);
        pk_text(&pk, "");
        msgpack_pack_array(&pk, 0);
        assert_int_equal(mrec_swim_decode_bytes(sb.data, sb.size, &d),
                         RM_E_PROTO);
        msgpack_sbuffer_destroy(&sb);
    }
    /* wrong shapes */
    assert_int_equal(dec_swim("\x94\x00\x00\xa1\x61\xa1\x62", 7), RM_E_PROTO);
    assert_int_equal(dec_swim("\x80", 1), RM_E_PROTO);
    assert_int_equal(dec_swim("\x95\xff\x00\xa1\x61\xa0\x90", 7), RM_E_PROTO);
    assert_int_equal(dec_swim("\x95\x01\x00\xa1\x61\xa0\x90", 7), 0);
    assert_int_equal(dec_swim("\x95\x01\x00\xa1\x61\xa0\x91\x90", 8),
                     RM_E_PROTO);
    assert_int_equal(dec_swim("\x95\x01\x00\xa1\x61\xa0\xc0", 7), RM_E_PROTO);
    assert_int_equal(dec_swim("\x95\x01\x00\xc4\x01\x61\xa0\x90", 8),
                     RM_E_PROTO); /* bin, not str */
    assert_int_equal(mrec_swim_decode_bytes("\x95", 1, NULL), RM_E_INVAL);
    buf_cleanup(&b);
    buf_cleanup(&b2);
}

/* ---- push/pull ------------------------------------------------------- */

static int
dec_pp(const void *p, size_t len)
{
    struct mrec_pp_entry e[8];
    int want;
    size_t n;

    return mrec_pp_decode_bytes(p, len, &want, e, 8, &n);
}

static void
test_pp(void **state)
{
    struct mrec_pp_entry *e = calloc(SWIM_MEMBERS_MAX + 1, sizeof(*e));
    struct mrec_pp_entry *d = calloc(SWIM_MEMBERS_MAX + 1, sizeof(*d));
    struct buf b, b2;
    msgpack_zone z;
    msgpack_object o;
    int want;
    size_t n;

    (void)state;
    assert_non_null(e);
    assert_non_null(d);
    for (unsigned i = 0; i <= SWIM_MEMBERS_MAX; i++) {
        snprintf(e[i].name, MREC_NAME_MAX, "member-%u", i);
        e[i].incarnation = i * 7919u;
        e[i].state = (enum swim_state)(i % 4);
        e[i].record_version = i == 1 ? UINT64_MAX : (uint64_t)i << 33;
    }
    buf_init(&b, BUFMAX);
    buf_init(&b2, BUFMAX);
    /* empty, small, full */
    assert_int_equal(mrec_pp_encode(&b, 1, NULL, 0), 0);
    assert_int_equal(mrec_pp_decode_bytes(b.data, b.len, &want, NULL, 0, &n),
                     0);
    assert_int_equal(want, 1);
    assert_int_equal(n, 0);
    buf_reset(&b);
    assert_int_equal(mrec_pp_encode(&b, 0, e, 3), 0);
    want = 7;
    assert_int_equal(mrec_pp_decode_bytes(b.data, b.len, &want, d, 3, &n), 0);
    assert_int_equal(want, 0);
    assert_int_equal(n, 3);
    assert_memory_equal(e, d, 3 * sizeof(*e));
    check_prefixes(&b, dec_pp);
    /* more entries than the caller has room for */
    assert_int_equal(mrec_pp_decode_bytes(b.data, b.len, &want, d, 2, &n),
                     RM_E_PROTO);
    assert_int_equal(n, 0);
    buf_reset(&b);
    assert_int_equal(mrec_pp_encode(&b, 1, e, SWIM_MEMBERS_MAX), 0);
    assert_int_equal(
        mrec_pp_decode_bytes(b.data, b.len, &want, d, SWIM_MEMBERS_MAX + 1, &n),
        0);
    assert_int_equal(n, SWIM_MEMBERS_MAX);
    assert_int_equal(want, 1);
    assert_memory_equal(e, d, SWIM_MEMBERS_MAX * sizeof(*e));
    assert_int_equal(mrec_pp_encode(&b2, 1, d, n), 0);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    unpack(b.data, b.len, &z, &o);
    assert_int_equal(mrec_pp_decode_obj(&o, &want, d, SWIM_MEMBERS_MAX, &n), 0);
    assert_int_equal(n, SWIM_MEMBERS_MAX);
    msgpack_zone_destroy(&z);
    /* too many */
    buf_reset(&b);
    assert_int_equal(mrec_pp_encode(&b, 1, e, SWIM_MEMBERS_MAX + 1),
                     RM_E_INVAL);
    {
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 2);
        pk_key(&pk, "r");
        msgpack_pack_false(&pk);
        pk_key(&pk, "e");
        msgpack_pack_array(&pk, SWIM_MEMBERS_MAX + 1);
        for (unsigned i = 0; i <= SWIM_MEMBERS_MAX; i++) {
            msgpack_pack_array(&pk, 4);
            pk_text(&pk, e[i].name);
            msgpack_pack_uint32(&pk, 1);
            msgpack_pack_uint32(&pk, 0);
            msgpack_pack_uint64(&pk, 1);
        }
        assert_int_equal(mrec_pp_decode_bytes(sb.data, sb.size, &want, d,
                                              SWIM_MEMBERS_MAX + 1, &n),
                         RM_E_PROTO);
        /* bad state, bad incarnation, missing want_reply */
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_map(&pk, 2);
        pk_key(&pk, "r");
        msgpack_pack_true(&pk);
        pk_key(&pk, "e");
        msgpack_pack_array(&pk, 1);
        msgpack_pack_array(&pk, 4);
        pk_text(&pk, "x");
        msgpack_pack_uint32(&pk, 1);
        msgpack_pack_uint32(&pk, 4);
        msgpack_pack_uint64(&pk, 1);
        assert_int_equal(
            mrec_pp_decode_bytes(sb.data, sb.size, &want, d, 8, &n),
            RM_E_PROTO);
        assert_int_equal(want, 0);
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_map(&pk, 2);
        pk_key(&pk, "r");
        msgpack_pack_true(&pk);
        pk_key(&pk, "e");
        msgpack_pack_array(&pk, 1);
        msgpack_pack_array(&pk, 4);
        pk_text(&pk, "x");
        msgpack_pack_uint64(&pk, (uint64_t)UINT32_MAX + 1);
        msgpack_pack_uint32(&pk, 0);
        msgpack_pack_uint64(&pk, 1);
        assert_int_equal(
            mrec_pp_decode_bytes(sb.data, sb.size, &want, d, 8, &n),
            RM_E_PROTO);
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_map(&pk, 1);
        pk_key(&pk, "e");
        msgpack_pack_array(&pk, 0);
        assert_int_equal(
            mrec_pp_decode_bytes(sb.data, sb.size, &want, d, 8, &n),
            RM_E_PROTO);
        msgpack_sbuffer_destroy(&sb);
    }
    /* the encoder's checks */
    e[0].state = (enum swim_state)9;
    assert_int_equal(mrec_pp_encode(&b, 1, e, 1), RM_E_INVAL);
    e[0].state = SWIM_ALIVE;
    e[0].name[0] = '\0';
    assert_int_equal(mrec_pp_encode(&b, 1, e, 1), RM_E_INVAL);
    assert_int_equal(mrec_pp_encode(&b, 1, NULL, 1), RM_E_INVAL);
    assert_int_equal(mrec_pp_decode_bytes(b.data, b.len, NULL, d, 1, &n),
                     RM_E_INVAL);
    assert_int_equal(mrec_pp_decode_bytes(b.data, b.len, &want, NULL, 1, &n),
                     RM_E_INVAL);
    buf_cleanup(&b);
    buf_cleanup(&b2);
    free(e);
    free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_rules),
        cmocka_unit_test(test_cert_roundtrip),
        cmocka_unit_test(test_cert_tamper),
        cmocka_unit_test(test_chain_valid),
        cmocka_unit_test(test_chain_expired),
        cmocka_unit_test(test_chain_revoked),
        cmocka_unit_test(test_chain_wrong_mesh_root_link),
        cmocka_unit_test(test_chain_length_and_future),
        cmocka_unit_test(test_node_roundtrip),
        cmocka_unit_test(test_node_many_users),
        cmocka_unit_test(test_node_decode_bad),
        cmocka_unit_test(test_revoke),
        cmocka_unit_test(test_invite),
        cmocka_unit_test(test_swim),
        cmocka_unit_test(test_pp),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
