/*
 * Fuzz the reconciliation messages and a responder (mesh/recon.c). The
 * first input byte picks the target:
 *   bit 0 clear: the decoder. What decodes re-encodes, decodes again to
 *     the same message and encodes again to the same bytes; a failure
 *     leaves the message empty and is RM_E_PROTO (or -ENOMEM).
 *   bit 0 set: a responder over a small fixed set (64 items, keys of 1 to
 *     4 bytes) takes the rest of the input as the peer's message, with
 *     branch 2 + (byte >> 1) % 15 and items_max 1 + (byte >> 5). Its
 *     answer must decode and stay under RECON_MSG_ENC_MAX; then the
 *     session goes on against a second handle over a slightly different
 *     set, at most FUZZ_MSGS messages (a peer that never sent what the
 *     fuzzed message claims may refuse with RM_E_PROTO; nothing may crash
 *     and every step must end).
 * Invariants are checked with abort().
 * The seed corpus (corpus/fuzz_recon/) was made by running sessions over
 * these sets and recording every message, for both targets.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "mesh/recon.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

#define FUZZ_SET 64
#define FUZZ_MSGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fset {
    struct recon_item v[FUZZ_SET];
    size_t n, pos;
};

static int
fset_seek(void *arg, const uint8_t *key, size_t keylen, struct recon_item *out)
{
    struct fset *s = arg;

    for (s->pos = 0; s->pos < s->n; s->pos++) {
        const struct recon_item *it = &s->v[s->pos];
        size_t n = it->key_len < keylen ? it->key_len : keylen;
        int c = n > 0 ? memcmp(it->key, key, n) : 0;

        if (c > 0 || (c == 0 && it->key_len >= keylen))
            break;
    }
    if (s->pos >= s->n)
        return 0;
    *out = s->v[s->pos];
    return 1;
}

static int
fset_next(void *arg, struct recon_item *out)
{
    struct fset *s = arg;

    if (s->pos >= s->n || ++s->pos >= s->n)
        return 0;
    *out = s->v[s->pos];
    return 1;
}

/* Item i: key (4i, 0, 1, ..) of 1 + i % 4 bytes; the peer's variant drops
 * every seventh item and changes the hash of every eleventh. */
static void
fset_make(struct fset *s, int peer)
{
    memset(s, 0, sizeof(*s));
    for (unsigned i = 0; i < FUZZ_SET; i++) {
        struct recon_item *it = &s->v[s->n];

        if (peer && i % 7 == 3)
            continue;
        it->key_len = (uint8_t)(1 + i % 4);
        it->key[0] = (uint8_t)(4 * i);
        for (unsigned j = 1; j < it->key_len; j++)
            it->key[j] = (uint8_t)(j - 1);
        memset(it->hash, (int)i, RECON_HASH);
        if (peer && i % 11 == 5)
            it->hash[0] ^= 0xff;
        s->n++;
    }
}

static void
fuzz_decode(const uint8_t *p, size_t n)
{
    struct recon_msg m, d;
    struct buf b1, b2;
    int r;

    recon_msg_init(&m);
    recon_msg_init(&d);
    r = recon_msg_decode(p, n, &m);
    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0) {
        CHECK(m.n_ranges == 0 && m.n_items == 0 && m.n_bits == 0);
        goto out;
    }
    buf_init(&b1, RECON_MSG_ENC_MAX);
    buf_init(&b2, RECON_MSG_ENC_MAX);
    CHECK(recon_msg_encode(&b1, &m) == 0);
    CHECK(b1.len <= RECON_MSG_ENC_MAX);
    CHECK(recon_msg_decode(b1.data, b1.len, &d) == 0);
    CHECK(d.n_ranges == m.n_ranges && d.n_items == m.n_items &&
          d.n_bits == m.n_bits);
    for (size_t i = 0; i < m.n_ranges; i++) {
        const struct recon_range *x = &m.ranges[i], *y = &d.ranges[i];

        CHECK(x->mode == y->mode && x->n_items == y->n_items &&
              x->n_bits == y->n_bits && x->upper.inf == y->upper.inf &&
              x->upper.len == y->upper.len);
        CHECK(memcmp(x->upper.key, y->upper.key, x->upper.len) == 0);
        CHECK(x->mode != RECON_FPRINT || memcmp(x->fp, y->fp, RECON_FP) == 0);
    }
    for (size_t i = 0; i < m.n_items; i++)
        CHECK(memcmp(&m.items[i], &d.items[i], sizeof(m.items[i])) == 0);
    CHECK(m.n_bits == 0 || memcmp(m.bits, d.bits, m.n_bits) == 0);
    CHECK(recon_msg_encode(&b2, &d) == 0);
    CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
    buf_cleanup(&b1);
    buf_cleanup(&b2);
out:
    recon_msg_cleanup(&m);
    recon_msg_cleanup(&d);
}

static void
fuzz_respond(uint8_t sel, const uint8_t *p, size_t n)
{
    static struct fset mine, peer;
    struct recon_source s0 = {fset_seek, fset_next, &mine};
    struct recon_source s1 = {fset_seek, fset_next, &peer};
    struct recon_config cfg;
    struct recon r[2];
    struct recon_msg chk;
    struct buf in, out;
    int turn = 0, done = 0, rc;

    fset_make(&mine, 0);
    fset_make(&peer, 1);
    recon_config_default(&cfg);
    cfg.branch = 2u + (sel >> 1) % 15u;
    cfg.items_max = 1u + (sel >> 5);
    CHECK(recon_init(&r[0], &cfg, &s0) == 0);
    CHECK(recon_init(&r[1], &cfg, &s1) == 0);
    recon_msg_init(&chk);
    buf_init(&in, RECON_MSG_ENC_MAX);
    buf_init(&out, RECON_MSG_ENC_MAX);
    CHECK(buf_append(&in, p, n) == 0);
    for (int msgs = 0; msgs < FUZZ_MSGS && !done; msgs++) {
        buf_reset(&out);
        rc = recon_step(&r[turn], in.data, in.len, &out, &done);
        CHECK(rc == 0 || rc == RM_E_PROTO || rc == -ENOMEM);
        if (rc != 0) {
            CHECK(out.len == 0);
            break;
        }
        CHECK(out.len <= RECON_MSG_ENC_MAX);
        if (out.len == 0) {
            CHECK(done);
            break;
        }
        CHECK(recon_msg_decode(out.data, out.len, &chk) == 0);
        buf_reset(&in);
        CHECK(buf_append(&in, out.data, out.len) == 0);
        turn = 1 - turn;
    }
    recon_msg_cleanup(&chk);
    recon_cleanup(&r[0]);
    recon_cleanup(&r[1]);
    buf_cleanup(&in);
    buf_cleanup(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size - 1 > RECON_MSG_ENC_MAX)
        return 0;
    if ((data[0] & 1) == 0)
        fuzz_decode(data + 1, size - 1);
    else
        fuzz_respond(data[0], data + 1, size - 1);
    return 0;
}
