/*
 * Unit tests for mesh/recon.c: range-based set reconciliation. Two
 * in-memory sorted sets (16-byte random keys, 16-byte hashes) behind the
 * cursor interface; a session is run to its end and both sides' "have" and
 * "need" lists must equal the true set differences exactly: identical
 * sets (one round trip), empty against full both ways, 10,000 items with
 * 1, 10, 100 and 1,000 differences spread at random or clustered in one
 * key run, one changed hash, every hash changed (answers cut at the
 * message bounds), other branch factors and thresholds. The codec: round
 * trips, and malformed messages refused with RM_E_PROTO (and a session
 * fed one fails). Prints, per scenario, the messages, the bytes exchanged
 * and their ratio to the bytes of the differing items, and to 5 KiB
 * entries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <msgpack.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "mesh/recon.h"

#define KEYLEN 16
#define N 10000
#define ENTRY 5120 /* a queue entry of 5 KiB, for the second ratio */
#define MAX_MSGS 200

/* ---- an in-memory sorted set behind the cursor -------------------------- */

struct mset {
    struct recon_item *v;
    size_t n, pos;
};

static int
item_cmp(const void *a, const void *b)
{
    const struct recon_item *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);

    if (c != 0)
        return c;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    return memcmp(x->hash, y->hash, RECON_HASH);
}

static int
mset_seek(void *arg, const uint8_t *key, size_t keylen, struct recon_item *out)
{
    struct mset *s = arg;
    size_t lo = 0, hi = s->n;
    struct recon_item k;

    memset(&k, 0, sizeof(k));
    k.key_len = (uint8_t)keylen;
    memcpy(k.key, key, keylen);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        struct recon_item t = s->v[mid];

        memset(t.hash, 0, RECON_HASH); /* compare keys only */
        if (item_cmp(&t, &k) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    s->pos = lo;
    if (lo >= s->n)
        return 0;
    *out = s->v[lo];
    return 1;
}

static int
mset_next(void *arg, struct recon_item *out)
{
    struct mset *s = arg;

    if (s->pos >= s->n || ++s->pos >= s->n)
        return 0;
    *out = s->v[s->pos];
    return 1;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng(void)
{
    uint64_t x = rng_state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void
rand_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng() >> 24);
}

static void
mset_init(struct mset *s, size_t cap)
{
    s->v = calloc(cap > 0 ? cap : 1, sizeof(*s->v));
    assert_non_null(s->v);
    s->n = 0;
    s->pos = 0;
}

static void
mset_sort(struct mset *s)
{
    qsort(s->v, s->n, sizeof(*s->v), item_cmp);
}

/* n random items (random keys never collide at 16 bytes). */
static void
mset_random(struct mset *s, size_t n)
{
    mset_init(s, n);
    for (size_t i = 0; i < n; i++) {
        s->v[i].key_len = KEYLEN;
        rand_bytes(s->v[i].key, KEYLEN);
        rand_bytes(s->v[i].hash, RECON_HASH);
    }
    s->n = n;
    mset_sort(s);
}

static void
mset_copy(struct mset *d, const struct mset *s)
{
    mset_init(d, s->n);
    memcpy(d->v, s->v, s->n * sizeof(*s->v));
    d->n = s->n;
}

static void
mset_free(struct mset *s)
{
    free(s->v);
    s->v = NULL;
}

/* Items of a not in b (key and hash). */
static void
mset_minus(const struct mset *a, const struct mset *b, struct mset *out)
{
    size_t j = 0;

    mset_init(out, a->n);
    for (size_t i = 0; i < a->n; i++) {
        while (j < b->n && item_cmp(&b->v[j], &a->v[i]) < 0)
            j++;
        if (j < b->n && item_cmp(&b->v[j], &a->v[i]) == 0)
            continue;
        out->v[out->n++] = a->v[i];
    }
}

static void
assert_list(struct recon *r, int have, const struct mset *want)
{
    const struct recon_item *v;
    size_t n;

    if (have)
        recon_have_get(r, &v, &n);
    else
        recon_need_get(r, &v, &n);
    assert_int_equal(n, want->n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(item_cmp(&v[i], &want->v[i]), 0);
}

/* ---- running a session --------------------------------------------------- */

struct stats {
    unsigned msgs;
    size_t bytes, bytes_ab, bytes_ba;
    size_t diff_keys; /* distinct keys in the symmetric difference */
    double ms;
};

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
run_session(struct mset *a, struct mset *b, const struct recon_config *cfg,
            struct stats *st)
{
    struct recon_source sa = {mset_seek, mset_next, a};
    struct recon_source sb = {mset_seek, mset_next, b};
    struct recon ra, rb, *side[2] = {&ra, &rb};
    struct buf m, ans;
    struct mset amb, bma;
    int done = 0, turn = 1;
    double t0 = now_ms();

    memset(st, 0, sizeof(*st));
    assert_int_equal(recon_init(&ra, cfg, &sa), 0);
    assert_int_equal(recon_init(&rb, cfg, &sb), 0);
    buf_init(&m, RECON_MSG_ENC_MAX);
    buf_init(&ans, RECON_MSG_ENC_MAX);
    assert_int_equal(recon_initiate(&ra, &m), 0);
    st->msgs = 1;
    st->bytes_ab = m.len;
    while (!done) {
        buf_reset(&ans);
        assert_int_equal(recon_step(side[turn], m.data, m.len, &ans, &done), 0);
        if (ans.len > 0) {
            assert_true(ans.len <= RECON_MSG_ENC_MAX);
            st->msgs++;
            if (turn == 1)
                st->bytes_ba += ans.len;
            else
                st->bytes_ab += ans.len;
        }
        if (done) {
            if (ans.len > 0) {
                /* The last answer asks nothing: the other side takes it
                 * and is done too, with nothing to send. */
                int done2 = 0;
                struct buf none;

                buf_init(&none, RECON_MSG_ENC_MAX);
                assert_int_equal(recon_step(side[1 - turn], ans.data, ans.len,
                                            &none, &done2),
                                 0);
                assert_int_equal(done2, 1);
                assert_int_equal(none.len, 0);
                buf_cleanup(&none);
            }
            break;
        }
        assert_true(ans.len > 0);
        assert_true(st->msgs < MAX_MSGS);
        buf_reset(&m);
        assert_int_equal(buf_append(&m, ans.data, ans.len), 0);
        turn = 1 - turn;
    }
    st->ms = now_ms() - t0;
    st->bytes = st->bytes_ab + st->bytes_ba;
    assert_int_equal(recon_rounds(&ra) + recon_rounds(&rb), 2 * st->msgs);

    mset_minus(a, b, &amb);
    mset_minus(b, a, &bma);
    assert_list(&ra, 1, &amb);
    assert_list(&ra, 0, &bma);
    assert_list(&rb, 1, &bma);
    assert_list(&rb, 0, &amb);
    /* Distinct keys: a changed key is on both lists but one entry. */
    st->diff_keys = amb.n + bma.n;
    for (size_t i = 0, j = 0; i < amb.n; i++) {
        while (j < bma.n && memcmp(bma.v[j].key, amb.v[i].key, KEYLEN) < 0)
            j++;
        if (j < bma.n && memcmp(bma.v[j].key, amb.v[i].key, KEYLEN) == 0)
            st->diff_keys--;
    }
    mset_free(&amb);
    mset_free(&bma);
    recon_cleanup(&ra);
    recon_cleanup(&rb);
    buf_cleanup(&m);
    buf_cleanup(&ans);
}

static void
report(const char *name, const struct recon_config *cfg, size_t na, size_t nb,
       const struct stats *st)
{
    double item_bytes = (double)st->diff_keys * (KEYLEN + RECON_HASH);
    double entry_bytes = (double)st->diff_keys * ENTRY;

    printf("recon %-22s b=%-2u T=%-2u |A|=%-5zu |B|=%-5zu diff=%-5zu "
           "msgs=%-3u bytes=%-7zu (a->b %zu, b->a %zu) ",
           name, cfg->branch, cfg->items_max, na, nb, st->diff_keys, st->msgs,
           st->bytes, st->bytes_ab, st->bytes_ba);
    if (st->diff_keys > 0)
        printf("ratio_items=%.2f ratio_5k=%.3f", st->bytes / item_bytes,
               (st->bytes + entry_bytes) / entry_bytes);
    else
        printf("ratio_items=- ratio_5k=-");
    printf(" time=%.1fms\n", st->ms);
}

enum change { DEL_A, DEL_B, MOD, MIX };

/*
 * A base set of n items; d of them (clustered: a run of consecutive keys)
 * removed from A, removed from B or given another hash in B.
 */
static void
make_pair(size_t n, size_t d, int clustered, enum change ch, struct mset *a,
          struct mset *b)
{
    struct mset base;
    uint8_t *mark = calloc(n > 0 ? n : 1, 1);
    size_t start = n > d ? (size_t)(rng() % (n - d + 1)) : 0;

    assert_non_null(mark);
    mset_random(&base, n);
    for (size_t k = 0; k < d; k++) {
        size_t i;

        if (clustered) {
            i = start + k;
        } else {
            do
                i = (size_t)(rng() % n);
            while (mark[i]);
        }
        mark[i] = ch == MIX ? (uint8_t)(1 + rng() % 3) : (uint8_t)(1 + ch);
    }
    mset_init(a, n);
    mset_init(b, n);
    for (size_t i = 0; i < n; i++) {
        if (mark[i] != 1 + DEL_A)
            a->v[a->n++] = base.v[i];
        if (mark[i] != 1 + DEL_B) {
            b->v[b->n] = base.v[i];
            if (mark[i] == 1 + MOD)
                b->v[b->n].hash[0] ^= 0x5a;
            b->n++;
        }
    }
    mset_free(&base);
    free(mark);
}

static void
scenario(const char *name, size_t n, size_t d, int clustered, enum change ch,
         const struct recon_config *cfg, struct stats *st)
{
    struct recon_config def;
    struct mset a, b;

    if (cfg == NULL) {
        recon_config_default(&def);
        cfg = &def;
    }
    make_pair(n, d, clustered, ch, &a, &b);
    run_session(&a, &b, cfg, st);
    report(name, cfg, a.n, b.n, st);
    mset_free(&a);
    mset_free(&b);
}

/* ---- sessions ------------------------------------------------------------ */

static void
test_identical(void **state)
{
    struct stats st;

    scenario("identical", N, 0, 0, MIX, NULL, &st);
    assert_int_equal(st.msgs, 2); /* one round trip */
    assert_true(st.bytes <= 32);
    assert_int_equal(st.diff_keys, 0);
}

static void
test_empty(void **state)
{
    struct recon_config cfg;
    struct stats st;
    struct mset e, f;

    recon_config_default(&cfg);
    mset_init(&e, 0);
    mset_random(&f, N);
    run_session(&e, &f, &cfg, &st);
    report("empty vs 10000", &cfg, e.n, f.n, &st);
    assert_int_equal(st.diff_keys, N);
    run_session(&f, &e, &cfg, &st);
    report("10000 vs empty", &cfg, f.n, e.n, &st);
    run_session(&e, &e, &cfg, &st);
    report("empty vs empty", &cfg, 0, 0, &st);
    assert_int_equal(st.msgs, 2);
    mset_free(&e);
    mset_free(&f);
}

static void
test_spread(void **state)
{
    static const size_t ds[] = {1, 10, 100, 1000};
    struct stats st;
    char name[32];

    for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++) {
        snprintf(name, sizeof(name), "spread %zu", ds[i]);
        scenario(name, N, ds[i], 0, MIX, NULL, &st);
        assert_int_equal(st.diff_keys, ds[i]);
    }
}

static void
test_clustered(void **state)
{
    static const size_t ds[] = {1, 10, 100, 1000};
    struct stats st;
    char name[32];

    for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++) {
        snprintf(name, sizeof(name), "clustered %zu", ds[i]);
        scenario(name, N, ds[i], 1, MIX, NULL, &st);
        assert_int_equal(st.diff_keys, ds[i]);
    }
}

/* One key with another hash: on both lists of both sides. */
static void
test_changed_hash(void **state)
{
    struct recon_config cfg;
    struct stats st;
    struct mset a, b;
    size_t k = N / 3;

    recon_config_default(&cfg);
    mset_random(&a, N);
    mset_copy(&b, &a);
    b.v[k].hash[RECON_HASH - 1] ^= 1;
    run_session(&a, &b, &cfg, &st);
    report("changed hash", &cfg, a.n, b.n, &st);
    assert_int_equal(st.diff_keys, 1);
    mset_free(&a);
    mset_free(&b);
}

/* Every hash changed: answers hit the message bounds and are cut. */
static void
test_all_changed(void **state)
{
    struct stats st;

    scenario("all changed", N, N, 1, MOD, NULL, &st);
    assert_int_equal(st.diff_keys, N);
    scenario("1000 del A", N, 1000, 0, DEL_A, NULL, &st);
    scenario("1000 del B", N, 1000, 0, DEL_B, NULL, &st);
}

static void
test_configs(void **state)
{
    static const unsigned bt[][2] = {{2, 1},   {4, 2},  {16, 1}, {16, 8},
                                     {16, 16}, {32, 4}, {64, 64}};
    struct recon_config cfg;
    struct stats st;

    recon_config_default(&cfg);
    for (size_t i = 0; i < sizeof(bt) / sizeof(bt[0]); i++) {
        cfg.branch = bt[i][0];
        cfg.items_max = bt[i][1];
        scenario("spread 1 (cfg)", N, 1, 0, MIX, &cfg, &st);
        scenario("spread 100 (cfg)", N, 100, 0, MIX, &cfg, &st);
        scenario("small 3 vs 5", 5, 2, 0, DEL_A, &cfg, &st);
    }
}

/* Fingerprint of the whole set: one cursor walk, O(n). */
static void
test_walk_cost(void **state)
{
    struct mset s;
    struct recon_source src = {mset_seek, mset_next, &s};
    struct recon r;
    struct buf m;
    double t0, t;

    mset_random(&s, 100000);
    assert_int_equal(recon_init(&r, NULL, &src), 0);
    buf_init(&m, RECON_MSG_ENC_MAX);
    t0 = now_ms();
    assert_int_equal(recon_initiate(&r, &m), 0);
    t = now_ms() - t0;
    printf("recon fingerprint of 100000 items (one walk): %.1f ms, "
           "%.0f ns/item\n",
           t, t * 1e6 / 100000);
    buf_cleanup(&m);
    recon_cleanup(&r);
    mset_free(&s);
}

/* ---- codec --------------------------------------------------------------- */

static void
test_codec_roundtrip(void **state)
{
    struct recon_msg m, d;
    struct recon_range *rg;
    struct buf b1, b2;

    recon_msg_init(&m);
    recon_msg_init(&d);
    buf_init(&b1, RECON_MSG_ENC_MAX);
    buf_init(&b2, RECON_MSG_ENC_MAX);
    m.ranges = calloc(4, sizeof(*m.ranges));
    m.items = calloc(4, sizeof(*m.items));
    m.bits = calloc(4, 1);
    assert_non_null(m.ranges);
    assert_non_null(m.items);
    assert_non_null(m.bits);
    m.cap_ranges = m.cap_items = m.cap_bits = 4;
    rg = &m.ranges[0];
    rg->upper.len = 1;
    rg->upper.key[0] = 0x10;
    rg->mode = RECON_SKIP;
    rg = &m.ranges[1];
    rg->upper.len = 2;
    memcpy(rg->upper.key, "\x20\x01", 2);
    rg->mode = RECON_FPRINT;
    memset(rg->fp, 0xab, RECON_FP);
    rg = &m.ranges[2];
    rg->upper.len = 1;
    rg->upper.key[0] = 0x30;
    rg->mode = RECON_ITEMS;
    rg->n_items = 2;
    m.items[0].key_len = 1;
    m.items[0].key[0] = 0x21;
    m.items[1].key_len = 32;
    memset(m.items[1].key, 0x22, 32);
    rg = &m.ranges[3];
    rg->upper.inf = 1;
    rg->mode = RECON_DIFF;
    rg->item_off = 2;
    rg->n_items = 1;
    m.items[2].key_len = 3;
    memcpy(m.items[2].key, "\x40\x41\x42", 3);
    rg->n_bits = 1;
    m.bits[0] = 0x05;
    m.n_ranges = 4;
    m.n_items = 3;
    m.n_bits = 1;
    assert_int_equal(recon_msg_encode(&b1, &m), 0);
    assert_int_equal(recon_msg_decode(b1.data, b1.len, &d), 0);
    assert_int_equal(d.n_ranges, 4);
    assert_int_equal(d.n_items, 3);
    assert_int_equal(d.ranges[3].upper.inf, 1);
    assert_int_equal(d.ranges[1].mode, RECON_FPRINT);
    assert_memory_equal(d.ranges[1].fp, m.ranges[1].fp, RECON_FP);
    assert_int_equal(item_cmp(&d.items[1], &m.items[1]), 0);
    assert_int_equal(d.bits[d.ranges[3].bits_off], 0x05);
    assert_int_equal(recon_msg_encode(&b2, &d), 0);
    assert_int_equal(b1.len, b2.len);
    assert_memory_equal(b1.data, b2.data, b1.len);

    /* The encoder refuses what the decoder would: bounds out of order. */
    m.ranges[1].upper.key[0] = 0x01;
    buf_reset(&b2);
    assert_int_equal(recon_msg_encode(&b2, &m), RM_E_INVAL);
    assert_int_equal(b2.len, 0);

    recon_msg_cleanup(&m);
    recon_msg_cleanup(&d);
    buf_cleanup(&b1);
    buf_cleanup(&b2);
}

/* Pack a message with msgpack-c directly, as a hostile peer might. */
struct raw {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void
raw_init(struct raw *r)
{
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
}

static int
raw_decode(struct raw *r)
{
    struct recon_msg m;
    int rc;

    recon_msg_init(&m);
    rc = recon_msg_decode(r->sb.data, r->sb.size, &m);
    if (rc != 0)
        assert_int_equal(m.n_ranges, 0);
    recon_msg_cleanup(&m);
    msgpack_sbuffer_destroy(&r->sb);
    return rc;
}

static void
raw_item(msgpack_packer *pk, uint8_t k, size_t keylen)
{
    uint8_t b[RECON_KEY_MAX + RECON_HASH + 1];

    memset(b, k, sizeof(b));
    msgpack_pack_bin_with_body(pk, b, keylen + RECON_HASH);
}

static void
test_codec_malformed(void **state)
{
    struct raw r;
    uint8_t key[RECON_KEY_MAX + 1] = {0};

    /* Good: [] and [[nil, 0]]. */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 0);
    assert_int_equal(raw_decode(&r), 0);
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 2);
    msgpack_pack_nil(&r.pk);
    msgpack_pack_uint8(&r.pk, 0);
    assert_int_equal(raw_decode(&r), 0);
    /* Trailing elements of a range are ignored. */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 3);
    msgpack_pack_nil(&r.pk);
    msgpack_pack_uint8(&r.pk, 0);
    msgpack_pack_str_with_body(&r.pk, "x", 1);
    assert_int_equal(raw_decode(&r), 0);

    /* Not an array. */
    raw_init(&r);
    msgpack_pack_map(&r.pk, 0);
    assert_int_equal(raw_decode(&r), RM_E_PROTO);
    /* Unknown mode. */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 2);
    msgpack_pack_nil(&r.pk);
    msgpack_pack_uint8(&r.pk, 4);
    assert_int_equal(raw_decode(&r), RM_E_PROTO);
    /* Empty bound, 33-byte bound, string bound. */
    for (int k = 0; k < 3; k++) {
        raw_init(&r);
        msgpack_pack_array(&r.pk, 1);
        msgpack_pack_array(&r.pk, 2);
        if (k == 2)
            msgpack_pack_str_with_body(&r.pk, "a", 1);
        else
            msgpack_pack_bin_with_body(&r.pk, key, k == 0 ? 0 : 33);
        msgpack_pack_uint8(&r.pk, 0);
        assert_int_equal(raw_decode(&r), RM_E_PROTO);
    }
    /* Bounds not increasing; infinity not last. */
    for (int k = 0; k < 2; k++) {
        raw_init(&r);
        msgpack_pack_array(&r.pk, 2);
        msgpack_pack_array(&r.pk, 2);
        if (k == 0)
            msgpack_pack_bin_with_body(&r.pk, "\x05", 1);
        else
            msgpack_pack_nil(&r.pk);
        msgpack_pack_uint8(&r.pk, 0);
        msgpack_pack_array(&r.pk, 2);
        msgpack_pack_bin_with_body(&r.pk, "\x05", 1);
        msgpack_pack_uint8(&r.pk, 0);
        assert_int_equal(raw_decode(&r), RM_E_PROTO);
    }
    /* FP missing, of the wrong size. */
    for (int k = 0; k < 2; k++) {
        raw_init(&r);
        msgpack_pack_array(&r.pk, 1);
        msgpack_pack_array(&r.pk, 2 + k);
        msgpack_pack_nil(&r.pk);
        msgpack_pack_uint8(&r.pk, 1);
        if (k == 1)
            msgpack_pack_bin_with_body(&r.pk, key, RECON_FP - 1);
        assert_int_equal(raw_decode(&r), RM_E_PROTO);
    }
    /* Items: too short, too long, out of order, outside the range. */
    for (int k = 0; k < 4; k++) {
        raw_init(&r);
        msgpack_pack_array(&r.pk, 1);
        msgpack_pack_array(&r.pk, 3);
        if (k == 3)
            msgpack_pack_bin_with_body(&r.pk, "\x02", 1);
        else
            msgpack_pack_nil(&r.pk);
        msgpack_pack_uint8(&r.pk, 2);
        msgpack_pack_array(&r.pk, 2);
        raw_item(&r.pk, 3, k == 0 ? 0 : k == 1 ? 33 : 1);
        raw_item(&r.pk, k == 2 ? 1 : 4, 1);
        assert_int_equal(raw_decode(&r), RM_E_PROTO);
    }
    /* DIFF without its bitmap. */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 3);
    msgpack_pack_nil(&r.pk);
    msgpack_pack_uint8(&r.pk, 3);
    msgpack_pack_array(&r.pk, 0);
    assert_int_equal(raw_decode(&r), RM_E_PROTO);
    /* Too many ranges. */
    raw_init(&r);
    msgpack_pack_array(&r.pk, RECON_RANGES_MAX + 1);
    for (unsigned i = 0; i <= RECON_RANGES_MAX; i++) {
        uint8_t k2[2] = {(uint8_t)(1 + i / 256), (uint8_t)i};

        msgpack_pack_array(&r.pk, 3);
        msgpack_pack_bin_with_body(&r.pk, k2, 2);
        msgpack_pack_uint8(&r.pk, 1);
        msgpack_pack_bin_with_body(&r.pk, key, RECON_FP);
    }
    assert_int_equal(raw_decode(&r), RM_E_PROTO);
    /* Truncated, trailing bytes, garbage. */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    assert_int_equal(raw_decode(&r), RM_E_PROTO);
    raw_init(&r);
    msgpack_pack_array(&r.pk, 0);
    msgpack_pack_array(&r.pk, 0);
    assert_int_equal(raw_decode(&r), RM_E_PROTO);
    raw_init(&r);
    assert_int_equal(raw_decode(&r), RM_E_PROTO);
}

/* A DIFF whose bitmap does not fit my items: the session fails. */
static void
test_step_bad_diff(void **state)
{
    struct mset s;
    struct recon_source src = {mset_seek, mset_next, &s};
    struct recon r;
    struct raw raw;
    struct buf out;
    int done = 7;

    mset_random(&s, 3);
    assert_int_equal(recon_init(&r, NULL, &src), 0);
    buf_init(&out, RECON_MSG_ENC_MAX);
    raw_init(&raw);
    msgpack_pack_array(&raw.pk, 1);
    msgpack_pack_array(&raw.pk, 4);
    msgpack_pack_nil(&raw.pk);
    msgpack_pack_uint8(&raw.pk, 3);
    msgpack_pack_array(&raw.pk, 0);
    msgpack_pack_bin_with_body(&raw.pk, "\x0f", 1); /* 4 bits, 3 items */
    assert_int_equal(recon_step(&r, raw.sb.data, raw.sb.size, &out, &done),
                     RM_E_PROTO);
    assert_int_equal(out.len, 0);
    /* After an error, only cleanup. */
    assert_int_equal(recon_step(&r, raw.sb.data, raw.sb.size, &out, &done),
                     RM_E_INVAL);
    msgpack_sbuffer_destroy(&raw.sb);
    recon_cleanup(&r);
    buf_cleanup(&out);
    mset_free(&s);
}

static void
test_misuse(void **state)
{
    struct mset s;
    struct recon_source src = {mset_seek, mset_next, &s}, bad = {0};
    struct recon_config cfg;
    struct recon r;

    mset_init(&s, 1);
    recon_config_default(&cfg);
    assert_int_equal(recon_init(&r, NULL, &bad), RM_E_INVAL);
    cfg.branch = 1;
    assert_int_equal(recon_init(&r, &cfg, &src), RM_E_INVAL);
    cfg.branch = RECON_BRANCH_MAX + 1;
    assert_int_equal(recon_init(&r, &cfg, &src), RM_E_INVAL);
    recon_config_default(&cfg);
    cfg.items_max = 0;
    assert_int_equal(recon_init(&r, &cfg, &src), RM_E_INVAL);
    cfg.items_max = RECON_THRESHOLD_MAX + 1;
    assert_int_equal(recon_init(&r, &cfg, &src), RM_E_INVAL);
    recon_cleanup(NULL);
    mset_free(&s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identical),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_spread),
        cmocka_unit_test(test_clustered),
        cmocka_unit_test(test_changed_hash),
        cmocka_unit_test(test_all_changed),
        cmocka_unit_test(test_configs),
        cmocka_unit_test(test_walk_cost),
        cmocka_unit_test(test_codec_roundtrip),
        cmocka_unit_test(test_codec_malformed),
        cmocka_unit_test(test_step_bad_diff),
        cmocka_unit_test(test_misuse),
    };

    setvbuf(stdout, NULL, _IOLBF, 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
