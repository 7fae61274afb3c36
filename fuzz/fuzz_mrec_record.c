/*
 * Fuzz the decoders of the mesh's signed records (mesh/mrec.c). The first
 * input byte picks the decoder (modulo 6), the rest is its input:
 *   0 certificate, 1 certificate chain, 2 node record, 3 revocation,
 *   4 invite (msgpack), 5 invite token text ("rmi1." + base64url).
 * Invariants are checked with abort():
 *   - a decoder returns 0 or RM_E_PROTO (-ENOMEM aside); on failure its
 *     output is zeroed (a node record: *out is NULL);
 *   - what decodes re-encodes, the encoding decodes again to equal fields,
 *     and encoding those gives the same bytes (canonical form);
 *   - signature checks return 0 or RM_E_PERM; chain verification returns
 *     0 or RM_E_PERM with a reason.
 * The seed corpus (corpus/fuzz_mrec_record/) was made by the encoders:
 * signed certificates, chains of 1 to 3, node records with and without
 * lists, a revocation, invites as bytes and as text.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "mesh/mrec.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

#define BUFMAX (2 * 1024 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
zeroed(const void *p, size_t n)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < n; i++) {
        if (b[i] != 0)
            return 0;
    }
    return 1;
}

static void
check_rc(int r)
{
    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
}

/* b2 = encoding of what b1 decodes to; both must be equal. */
static void
check_same(const struct buf *b1, const struct buf *b2)
{
    CHECK(b1->len == b2->len);
    CHECK(memcmp(b1->data, b2->data, b1->len) == 0);
}

static void
fuzz_cert(const uint8_t *p, size_t n)
{
    struct mrec_cert c, d;
    struct buf b1, b2;
    int r = mrec_cert_decode_bytes(p, n, &c);

    check_rc(r);
    if (r != 0) {
        CHECK(zeroed(&c, sizeof(c)));
        return;
    }
    r = mrec_cert_verify_sig(&c);
    CHECK(r == 0 || r == RM_E_PERM);
    buf_init(&b1, BUFMAX);
    buf_init(&b2, BUFMAX);
    CHECK(mrec_cert_encode(&b1, &c) == 0);
    CHECK(mrec_cert_decode_bytes(b1.data, b1.len, &d) == 0);
    CHECK(memcmp(&c, &d, sizeof(c)) == 0);
    CHECK(mrec_cert_encode(&b2, &d) == 0);
    check_same(&b1, &b2);
    buf_cleanup(&b1);
    buf_cleanup(&b2);
}

static int
fuzz_revoked(void *arg, const uint8_t pk[MREC_PK])
{
    (void)arg;
    return pk[0] & 1;
}

static void
fuzz_chain(const uint8_t *p, size_t n)
{
    struct mrec_chain *c = malloc(sizeof(*c)), *d = malloc(sizeof(*d));
    char err[MREC_ERR_MAX];
    struct buf b1, b2;
    int r;

    CHECK(c != NULL && d != NULL);
    r = mrec_chain_decode_bytes(p, n, c);
    check_rc(r);
    if (r != 0) {
        CHECK(zeroed(c, sizeof(*c)));
        goto out;
    }
    CHECK(c->n >= 1 && c->n <= MREC_CHAIN_MAX);
    r = mrec_chain_verify(c, c->c[0].mesh_id, c->c[c->n - 1].node_pk,
                          c->c[0].issued, (c->n & 1) ? fuzz_revoked : NULL,
                          NULL, err, sizeof(err));
    CHECK(r == 0 || r == RM_E_PERM);
    CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    CHECK((r == 0) == (err[0] == '\0'));
    buf_init(&b1, BUFMAX);
    buf_init(&b2, BUFMAX);
    CHECK(mrec_chain_encode(&b1, c) == 0);
    CHECK(mrec_chain_decode_bytes(b1.data, b1.len, d) == 0);
    CHECK(memcmp(c, d, sizeof(*c)) == 0);
    CHECK(mrec_chain_encode(&b2, d) == 0);
    check_same(&b1, &b2);
    buf_cleanup(&b1);
    buf_cleanup(&b2);
out:
    free(c);
    free(d);
}

static void
node_equal(const struct mrec_node *a, const struct mrec_node *b)
{
    CHECK(memcmp(a->mesh_id, b->mesh_id, MREC_MESHID) == 0);
    CHECK(memcmp(a->node_pk, b->node_pk, MREC_PK) == 0);
    CHECK(memcmp(a->name, b->name, MREC_NAME_MAX) == 0);
    CHECK(a->version == b->version);
    CHECK(memcmp(a->software, b->software, MREC_SOFTWARE_MAX) == 0);
    CHECK(a->egress == b->egress && (a->egress == 0 || a->egress == 1));
    CHECK(a->n_addrs == b->n_addrs && a->n_addrs <= MREC_ADDRS_MAX);
    CHECK(memcmp(a->addrs, b->addrs, sizeof(a->addrs)) == 0);
    CHECK(a->n_domains == b->n_domains && a->n_domains <= MREC_DOMAINS_MAX);
    CHECK((a->domains == NULL) == (a->n_domains == 0));
    for (unsigned i = 0; i < a->n_domains; i++) {
        CHECK(mrec_domain_valid(a->domains[i]));
        CHECK(strcmp(a->domains[i], b->domains[i]) == 0);
    }
    CHECK(a->n_users == b->n_users && a->n_users <= MREC_USERS_MAX);
    CHECK((a->users == NULL) == (a->n_users == 0));
    for (unsigned i = 0; i < a->n_users; i++) {
        CHECK(mrec_user_valid(a->users[i]));
        CHECK(strcmp(a->users[i], b->users[i]) == 0);
    }
    CHECK(memcmp(a->sig, b->sig, MREC_SIG) == 0);
}

static void
fuzz_node(const uint8_t *p, size_t n)
{
    struct mrec_node *a = NULL, *d = NULL;
    struct buf b1, b2;
    int r = mrec_node_decode_bytes(p, n, &a);

    check_rc(r);
    if (r != 0) {
        CHECK(a == NULL);
        return;
    }
    CHECK(mrec_name_valid(a->name));
    CHECK(mrec_node_check(a) == 0);
    r = mrec_node_verify(a);
    CHECK(r == 0 || r == RM_E_PERM);
    buf_init(&b1, BUFMAX);
    buf_init(&b2, BUFMAX);
    CHECK(mrec_node_encode(&b1, a) == 0);
    CHECK(b1.len <= MREC_NODE_ENC_MAX);
    CHECK(mrec_node_decode_bytes(b1.data, b1.len, &d) == 0);
    node_equal(a, d);
    CHECK(mrec_node_encode(&b2, d) == 0);
    check_same(&b1, &b2);
    buf_cleanup(&b1);
    buf_cleanup(&b2);
    mrec_node_free(a);
    mrec_node_free(d);
}

static void
fuzz_revoke(const uint8_t *p, size_t n)
{
    struct mrec_revoke v, d;
    struct buf b1, b2;
    int r = mrec_revoke_decode_bytes(p, n, &v);

    check_rc(r);
    if (r != 0) {
        CHECK(zeroed(&v, sizeof(v)));
        return;
    }
    r = mrec_revoke_verify_sig(&v);
    CHECK(r == 0 || r == RM_E_PERM);
    buf_init(&b1, BUFMAX);
    buf_init(&b2, BUFMAX);
    CHECK(mrec_revoke_encode(&b1, &v) == 0);
    CHECK(mrec_revoke_decode_bytes(b1.data, b1.len, &d) == 0);
    CHECK(memcmp(&v, &d, sizeof(v)) == 0);
    CHECK(mrec_revoke_encode(&b2, &d) == 0);
    check_same(&b1, &b2);
    buf_cleanup(&b1);
    buf_cleanup(&b2);
}

/* A decoded invite: re-encodes, as bytes and as text, to equal fields. */
static void
invite_again(const struct mrec_invite *iv)
{
    struct mrec_invite d;
    struct buf b1, b2;
    char text[MREC_INVITE_TEXT_MAX], err[MREC_ERR_MAX];
    int r = mrec_invite_verify_sig(iv);

    CHECK(r == 0 || r == RM_E_PERM);
    CHECK(iv->n_addrs >= 1 && iv->n_addrs <= MREC_ADDRS_MAX);
    buf_init(&b1, BUFMAX);
    buf_init(&b2, BUFMAX);
    CHECK(mrec_invite_encode(&b1, iv) == 0);
    CHECK(b1.len <= MREC_INVITE_ENC_MAX);
    CHECK(mrec_invite_decode_bytes(b1.data, b1.len, &d) == 0);
    CHECK(memcmp(iv, &d, sizeof(d)) == 0);
    CHECK(mrec_invite_encode(&b2, &d) == 0);
    check_same(&b1, &b2);
    CHECK(mrec_invite_to_text(iv, text, sizeof(text)) == 0);
    CHECK(mrec_invite_from_text(text, &d, err, sizeof(err)) == 0);
    CHECK(memcmp(iv, &d, sizeof(d)) == 0);
    buf_cleanup(&b1);
    buf_cleanup(&b2);
}

static void
fuzz_invite(const uint8_t *p, size_t n)
{
    struct mrec_invite iv;
    int r = mrec_invite_decode_bytes(p, n, &iv);

    check_rc(r);
    if (r != 0) {
        CHECK(zeroed(&iv, sizeof(iv)));
        return;
    }
    invite_again(&iv);
}

static void
fuzz_invite_text(const uint8_t *p, size_t n)
{
    struct mrec_invite iv;
    char err[MREC_ERR_MAX];
    char *text = malloc(n + 1);
    int r;

    CHECK(text != NULL);
    if (n > 0)
        memcpy(text, p, n);
    text[n] = '\0';
    err[0] = 'x';
    r = mrec_invite_from_text(text, &iv, err, sizeof(err));
    check_rc(r);
    if (r != 0) {
        CHECK(zeroed(&iv, sizeof(iv)));
        CHECK(r != RM_E_PROTO ||
              (err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL));
    } else {
        CHECK(err[0] == '\0');
        invite_again(&iv);
    }
    free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 6) {
    case 0:
        fuzz_cert(data + 1, size - 1);
        break;
    case 1:
        fuzz_chain(data + 1, size - 1);
        break;
    case 2:
        fuzz_node(data + 1, size - 1);
        break;
    case 3:
        fuzz_revoke(data + 1, size - 1);
        break;
    case 4:
        fuzz_invite(data + 1, size - 1);
        break;
    default:
        fuzz_invite_text(data + 1, size - 1);
        break;
    }
    return 0;
}
