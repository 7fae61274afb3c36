/*
 * recon: range-based set reconciliation (see recon.h for the protocol,
 * the wire format and the contract).
 *
 * The decoder checks the whole structure of a message (bound order, items
 * sorted and inside their range, sizes) and the encoder runs the same
 * check, so a step only has to deal with well-formed input. A step walks
 * the caller's set once per range to count and fingerprint it, and a
 * second time to split it, answer ITEMS or apply DIFF: no state is kept
 * between rounds, so every range is answered from the snapshot alone.
 *
 * libsodium is included for BLAKE2b only (the codecs of mrec.c do the
 * same for Ed25519); no key material lives here.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>

#include "common/mpack_check.h"
#include "common/mpack_decode.h"
#include "common/rm_error.h"
#include "mesh/frame.h"
#include "mesh/recon.h"

#define RECON_ITEM_HASH 32 /* per-item hash, summed mod 2^256 */
#define RECON_WIRE_RANGES_MAX (2 * RECON_RANGES_MAX + 1)

/* Worst-case encoding: a range is at most 1 (array) + 34 (bound) + 1
 * (mode) + 18 (fp, or the list / bitmap headers) bytes, an item 2 + 48;
 * bitmaps answer at most RECON_ITEMS_MAX items of the peer. */
_Static_assert(5 + RECON_WIRE_RANGES_MAX * 54 +
                       RECON_ITEMS_MAX * (2 + RECON_KEY_MAX + RECON_HASH) +
                       RECON_ITEMS_MAX / 8 + RECON_RANGES_MAX <=
                   RECON_MSG_ENC_MAX,
               "encoding bound");
_Static_assert(RECON_MSG_ENC_MAX <= FRAME_MSG_MAX - 1024, "fits a frame");
/* One range can always be answered in an empty message (progress). */
_Static_assert(RECON_BRANCH_MAX + 1 <= RECON_RANGES_MAX, "branch bound");
_Static_assert(RECON_BRANCH_MAX *RECON_THRESHOLD_MAX <= RECON_ITEMS_MAX &&
                   RECON_DIFF_RANGE_MAX <= RECON_ITEMS_MAX,
               "items bound");

static const uint8_t recon_pers_item[crypto_generichash_blake2b_PERSONALBYTES] =
    "rm-recon-item-v1";
static const uint8_t recon_pers_fp[crypto_generichash_blake2b_PERSONALBYTES] =
    "rm-recon-fp-v1";

/* ---- keys and bounds ---------------------------------------------------- */

static int
recon_keycmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n > 0 ? memcmp(a, b, n) : 0;

    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Key against a bound: <0, 0, >0 (every key is below infinity). */
static int
recon_key_bound(const struct recon_item *it, const struct recon_bound *b)
{
    if (b->inf)
        return -1;
    return recon_keycmp(it->key, it->key_len, b->key, b->len);
}

static int
recon_bound_cmp(const struct recon_bound *a, const struct recon_bound *b)
{
    if (a->inf || b->inf)
        return (int)a->inf - (int)b->inf;
    return recon_keycmp(a->key, a->len, b->key, b->len);
}

/* The shortest bound s with a < s <= b (a < b): b's prefix one byte past
 * their common prefix. */
static void
recon_separator(const struct recon_item *a, const struct recon_item *b,
                struct recon_bound *s)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    size_t l = 0;

    while (l < n && a->key[l] == b->key[l])
        l++;
    memset(s, 0, sizeof(*s));
    s->len = (uint8_t)(l + 1);
    memcpy(s->key, b->key, l + 1);
}

static int
recon_item_ok(const struct recon_item *it)
{
    return it->key_len >= 1 && it->key_len <= RECON_KEY_MAX;
}

/* ---- fingerprints ------------------------------------------------------- */

struct recon_acc {
    uint8_t sum[RECON_ITEM_HASH]; /* little endian, mod 2^256 */
    uint64_t count;
};

static void
recon_acc_add(struct recon_acc *a, const struct recon_item *it)
{
    uint8_t in[1 + RECON_KEY_MAX + RECON_HASH], h[RECON_ITEM_HASH];
    unsigned carry = 0;

    in[0] = it->key_len;
    memcpy(in + 1, it->key, it->key_len);
    memcpy(in + 1 + it->key_len, it->hash, RECON_HASH);
    crypto_generichash_blake2b_salt_personal(h, sizeof(h), in,
                                             1u + it->key_len + RECON_HASH,
                                             NULL, 0, NULL, recon_pers_item);
    for (size_t i = 0; i < RECON_ITEM_HASH; i++) {
        carry += (unsigned)a->sum[i] + h[i];
        a->sum[i] = (uint8_t)carry;
        carry >>= 8;
    }
    a->count++;
}

static void
recon_acc_final(const struct recon_acc *a, uint8_t fp[RECON_FP])
{
    uint8_t in[RECON_ITEM_HASH + 8];

    memcpy(in, a->sum, RECON_ITEM_HASH);
    for (int i = 0; i < 8; i++)
        in[RECON_ITEM_HASH + i] = (uint8_t)(a->count >> (8 * i));
    crypto_generichash_blake2b_salt_personal(fp, RECON_FP, in, sizeof(in), NULL,
                                             0, NULL, recon_pers_fp);
}

/* ---- walking the caller's set ------------------------------------------- */

struct recon_walk {
    struct recon *r;
    const struct recon_bound *hi;
    struct recon_item it, prev;
    int valid; /* it is an item of the range */
};

static int
recon_walk_got(struct recon_walk *w, int rc, int check_order)
{
    if (rc < 0)
        return rc;
    if (rc == 0) {
        w->valid = 0;
        return 0;
    }
    if (rc != 1 || !recon_item_ok(&w->it))
        return RM_E_INVAL;
    if (check_order && recon_keycmp(w->prev.key, w->prev.key_len, w->it.key,
                                    w->it.key_len) >= 0)
        return RM_E_INVAL;
    w->valid = recon_key_bound(&w->it, w->hi) < 0;
    return 0;
}

/* Position at the first item of [lo, hi). */
static int
recon_walk_start(struct recon_walk *w, struct recon *r,
                 const struct recon_bound *lo, const struct recon_bound *hi)
{
    int rc;

    memset(w, 0, sizeof(*w));
    w->r = r;
    w->hi = hi;
    rc =
        recon_walk_got(w, r->src.seek(r->src.arg, lo->key, lo->len, &w->it), 0);
    if (rc == 0 && w->valid && recon_key_bound(&w->it, lo) < 0)
        return RM_E_INVAL; /* the cursor went below the key asked */
    return rc;
}

static int
recon_walk_next(struct recon_walk *w)
{
    w->prev = w->it;
    return recon_walk_got(w, w->r->src.next(w->r->src.arg, &w->it), 1);
}

/* Count and fingerprint [lo, hi). */
static int
recon_range_fp(struct recon *r, const struct recon_bound *lo,
               const struct recon_bound *hi, struct recon_acc *acc)
{
    struct recon_walk w;
    int rc;

    memset(acc, 0, sizeof(*acc));
    for (rc = recon_walk_start(&w, r, lo, hi); rc == 0 && w.valid;
         rc = recon_walk_next(&w))
        recon_acc_add(acc, &w.it);
    return rc;
}

/* ---- message building --------------------------------------------------- */

void
recon_msg_init(struct recon_msg *m)
{
    memset(m, 0, sizeof(*m));
}

void
recon_msg_cleanup(struct recon_msg *m)
{
    if (m == NULL)
        return;
    free(m->ranges);
    free(m->items);
    free(m->bits);
    memset(m, 0, sizeof(*m));
}

static void
recon_msg_reset(struct recon_msg *m)
{
    m->n_ranges = 0;
    m->n_items = 0;
    m->n_bits = 0;
}

/* Room for n more elements of size sz in *p (capacity *cap). */
static int
recon_grow(void **p, size_t *cap, size_t used, size_t n, size_t sz)
{
    size_t want = *cap;
    void *q;

    if (n <= *cap - used)
        return 0;
    if (want == 0)
        want = 16;
    while (want - used < n)
        want *= 2;
    q = realloc(*p, want * sz);
    if (q == NULL)
        return -ENOMEM;
    *p = q;
    *cap = want;
    return 0;
}

static int
recon_msg_range(struct recon_msg *m, struct recon_range **out)
{
    int rc = recon_grow((void **)&m->ranges, &m->cap_ranges, m->n_ranges, 1,
                        sizeof(*m->ranges));

    if (rc != 0)
        return rc;
    *out = &m->ranges[m->n_ranges++];
    memset(*out, 0, sizeof(**out));
    (*out)->item_off = m->n_items;
    (*out)->bits_off = m->n_bits;
    return 0;
}

static int
recon_msg_item(struct recon_msg *m, struct recon_range *rg,
               const struct recon_item *it)
{
    int rc = recon_grow((void **)&m->items, &m->cap_items, m->n_items, 1,
                        sizeof(*m->items));

    if (rc != 0)
        return rc;
    m->items[m->n_items++] = *it;
    rg->n_items++;
    return 0;
}

/* ---- structure check (encoder and decoder) ------------------------------ */

static int
recon_msg_check(const struct recon_msg *m)
{
    struct recon_bound lo = {0};
    size_t nonskip = 0, items = 0;

    if (m->n_ranges > RECON_WIRE_RANGES_MAX || m->n_items > RECON_ITEMS_MAX)
        return RM_E_PROTO;
    for (size_t i = 0; i < m->n_ranges; i++) {
        const struct recon_range *rg = &m->ranges[i];

        if (lo.inf || recon_bound_cmp(&lo, &rg->upper) >= 0)
            return RM_E_PROTO;
        if (!rg->upper.inf &&
            (rg->upper.len < 1 || rg->upper.len > RECON_KEY_MAX))
            return RM_E_PROTO;
        if (rg->upper.inf && rg->upper.len != 0)
            return RM_E_PROTO;
        switch (rg->mode) {
        case RECON_SKIP:
        case RECON_FPRINT:
            if (rg->n_items != 0 || rg->n_bits != 0)
                return RM_E_PROTO;
            break;
        case RECON_ITEMS:
            if (rg->n_bits != 0)
                return RM_E_PROTO;
            break;
        case RECON_DIFF:
            if (rg->n_bits > RECON_ITEMS_MAX / 8 || rg->bits_off > m->n_bits ||
                rg->n_bits > m->n_bits - rg->bits_off)
                return RM_E_PROTO;
            break;
        default:
            return RM_E_PROTO;
        }
        if (rg->mode != RECON_SKIP)
            nonskip++;
        if (rg->item_off != items || rg->n_items > m->n_items - items)
            return RM_E_PROTO;
        for (size_t j = 0; j < rg->n_items; j++) {
            const struct recon_item *it = &m->items[items + j];

            if (!recon_item_ok(it) ||
                recon_keycmp(it->key, it->key_len, lo.key, lo.len) < 0 ||
                recon_key_bound(it, &rg->upper) >= 0)
                return RM_E_PROTO;
            if (j > 0 && recon_keycmp(it[-1].key, it[-1].key_len, it->key,
                                      it->key_len) >= 0)
                return RM_E_PROTO;
        }
        items += rg->n_items;
        lo = rg->upper;
    }
    if (nonskip > RECON_RANGES_MAX || items != m->n_items)
        return RM_E_PROTO;
    return 0;
}

/* ---- encoding ----------------------------------------------------------- */

struct recon_w {
    struct buf *b;
    size_t len, max;
    int err;
};

static int
recon_w_write(void *data, const char *s, size_t n)
{
    struct recon_w *w = data;
    int r;

    if (w->err != 0)
        return -1;
    if (n > w->max - w->len)
        r = RM_E_TOOBIG;
    else
        r = buf_append(w->b, s, n);
    if (r != 0) {
        w->err = r;
        return -1;
    }
    w->len += n;
    return 0;
}

static void
recon_pk_item(msgpack_packer *pk, const struct recon_item *it)
{
    msgpack_pack_bin(pk, (size_t)it->key_len + RECON_HASH);
    msgpack_pack_bin_body(pk, it->key, it->key_len);
    msgpack_pack_bin_body(pk, it->hash, RECON_HASH);
}

int
recon_msg_encode(struct buf *out, const struct recon_msg *m)
{
    static const uint8_t none[1] = {0};
    struct recon_w w = {.b = out, .max = RECON_MSG_ENC_MAX};
    size_t start;
    msgpack_packer pk;

    if (out == NULL || m == NULL)
        return RM_E_INVAL;
    if (recon_msg_check(m) != 0)
        return RM_E_INVAL;
    start = out->len;
    msgpack_packer_init(&pk, &w, recon_w_write);
    msgpack_pack_array(&pk, m->n_ranges);
    for (size_t i = 0; i < m->n_ranges; i++) {
        const struct recon_range *rg = &m->ranges[i];
        static const unsigned n_el[] = {2, 3, 3, 4};

        msgpack_pack_array(&pk, n_el[rg->mode]);
        if (rg->upper.inf)
            msgpack_pack_nil(&pk);
        else
            msgpack_pack_bin_with_body(&pk, rg->upper.key, rg->upper.len);
        msgpack_pack_unsigned_int(&pk, (unsigned)rg->mode);
        switch (rg->mode) {
        case RECON_SKIP:
            break;
        case RECON_FPRINT:
            msgpack_pack_bin_with_body(&pk, rg->fp, RECON_FP);
            break;
        case RECON_ITEMS:
        case RECON_DIFF:
            msgpack_pack_array(&pk, rg->n_items);
            for (size_t j = 0; j < rg->n_items; j++)
                recon_pk_item(&pk, &m->items[rg->item_off + j]);
            if (rg->mode == RECON_DIFF)
                msgpack_pack_bin_with_body(
                    &pk, rg->n_bits > 0 ? m->bits + rg->bits_off : none,
                    rg->n_bits);
            break;
        }
    }
    if (w.err != 0) {
        buf_truncate(out, start);
        return w.err;
    }
    return 0;
}

/* ---- decoding ----------------------------------------------------------- */

static int
recon_obj_bound(const msgpack_object *o, struct recon_bound *b)
{
    memset(b, 0, sizeof(*b));
    if (o->type == MSGPACK_OBJECT_NIL) {
        b->inf = 1;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size < 1 ||
        o->via.bin.size > RECON_KEY_MAX)
        return RM_E_PROTO;
    b->len = (uint8_t)o->via.bin.size;
    memcpy(b->key, o->via.bin.ptr, o->via.bin.size);
    return 0;
}

static int
recon_obj_items(const msgpack_object *o, struct recon_msg *m,
                struct recon_range *rg)
{
    if (o->type != MSGPACK_OBJECT_ARRAY ||
        o->via.array.size > RECON_ITEMS_MAX - m->n_items)
        return RM_E_PROTO;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        struct recon_item it;
        size_t kl;
        int rc;

        if (e->type != MSGPACK_OBJECT_BIN || e->via.bin.size <= RECON_HASH ||
            e->via.bin.size > RECON_HASH + RECON_KEY_MAX)
            return RM_E_PROTO;
        kl = e->via.bin.size - RECON_HASH;
        memset(&it, 0, sizeof(it));
        it.key_len = (uint8_t)kl;
        memcpy(it.key, e->via.bin.ptr, kl);
        memcpy(it.hash, e->via.bin.ptr + kl, RECON_HASH);
        if ((rc = recon_msg_item(m, rg, &it)) != 0)
            return rc;
    }
    return 0;
}

static int
recon_obj_msg(const msgpack_object *o, struct recon_msg *m)
{
    if (o->type != MSGPACK_OBJECT_ARRAY ||
        o->via.array.size > RECON_WIRE_RANGES_MAX)
        return RM_E_PROTO;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *a = &o->via.array.ptr[i], *el;
        struct recon_range *rg;
        int rc;

        if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size < 2)
            return RM_E_PROTO;
        el = a->via.array.ptr;
        if (el[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            el[1].via.u64 > RECON_DIFF)
            return RM_E_PROTO;
        if ((rc = recon_msg_range(m, &rg)) != 0)
            return rc;
        if ((rc = recon_obj_bound(&el[0], &rg->upper)) != 0)
            return rc;
        rg->mode = (enum recon_mode)el[1].via.u64;
        switch (rg->mode) {
        case RECON_SKIP:
            break;
        case RECON_FPRINT:
            if (a->via.array.size < 3 || el[2].type != MSGPACK_OBJECT_BIN ||
                el[2].via.bin.size != RECON_FP)
                return RM_E_PROTO;
            memcpy(rg->fp, el[2].via.bin.ptr, RECON_FP);
            break;
        case RECON_ITEMS:
        case RECON_DIFF:
            if (a->via.array.size < (rg->mode == RECON_DIFF ? 4u : 3u))
                return RM_E_PROTO;
            if ((rc = recon_obj_items(&el[2], m, rg)) != 0)
                return rc;
            if (rg->mode == RECON_ITEMS)
                break;
            if (el[3].type != MSGPACK_OBJECT_BIN ||
                el[3].via.bin.size > RECON_ITEMS_MAX / 8)
                return RM_E_PROTO;
            rc = recon_grow((void **)&m->bits, &m->cap_bits, m->n_bits,
                            el[3].via.bin.size, 1);
            if (rc != 0)
                return rc;
            if (el[3].via.bin.size > 0)
                memcpy(m->bits + m->n_bits, el[3].via.bin.ptr,
                       el[3].via.bin.size);
            rg->n_bits = el[3].via.bin.size;
            m->n_bits += el[3].via.bin.size;
            break;
        }
    }
    return recon_msg_check(m);
}

static int
recon_obj_fn(const msgpack_object *o, void *arg)
{
    return recon_obj_msg(o, arg);
}

int
recon_msg_decode(const void *p, size_t len, struct recon_msg *m)
{
    int r;

    if (m == NULL || (p == NULL && len != 0))
        return RM_E_INVAL;
    recon_msg_reset(m);
    if (len == 0 || len > RECON_MSG_ENC_MAX)
        return RM_E_PROTO;
    r = mpack_decode(p, len, recon_obj_fn, m, NULL, 0);
    if (r != 0)
        recon_msg_reset(m);
    return r;
}

/* ---- sessions ----------------------------------------------------------- */

void
recon_config_default(struct recon_config *cfg)
{
    cfg->branch = RECON_BRANCH_DEFAULT;
    cfg->items_max = RECON_THRESHOLD_DEFAULT;
    cfg->diff_max = RECON_DIFF_MAX_DEFAULT;
}

int
recon_init(struct recon *r, const struct recon_config *cfg,
           const struct recon_source *src)
{
    struct recon_config def;

    if (r == NULL || src == NULL || src->seek == NULL || src->next == NULL)
        return RM_E_INVAL;
    if (cfg == NULL) {
        recon_config_default(&def);
        cfg = &def;
    }
    if (cfg->branch < 2 || cfg->branch > RECON_BRANCH_MAX ||
        cfg->items_max < 1 || cfg->items_max > RECON_THRESHOLD_MAX ||
        cfg->diff_max < 1)
        return RM_E_INVAL;
    if (sodium_init() < 0)
        return -ENOMEM;
    memset(r, 0, sizeof(*r));
    r->cfg = *cfg;
    r->src = *src;
    recon_msg_init(&r->in);
    recon_msg_init(&r->out);
    return 0;
}

void
recon_cleanup(struct recon *r)
{
    if (r == NULL)
        return;
    recon_msg_cleanup(&r->in);
    recon_msg_cleanup(&r->out);
    free(r->have);
    free(r->need);
    memset(r, 0, sizeof(*r));
}

unsigned
recon_rounds(const struct recon *r)
{
    return r->rounds;
}

static int
recon_note(struct recon *r, int have, const struct recon_item *it)
{
    struct recon_item **a = have ? &r->have : &r->need;
    size_t *n = have ? &r->n_have : &r->n_need;
    size_t *cap = have ? &r->cap_have : &r->cap_need;
    int rc;

    if (*n >= r->cfg.diff_max)
        return RM_E_TOOBIG;
    rc = recon_grow((void **)a, cap, *n, 1, sizeof(**a));
    if (rc != 0)
        return rc;
    (*a)[(*n)++] = *it;
    r->sorted = 0;
    return 0;
}

static int
recon_item_cmp(const void *a, const void *b)
{
    const struct recon_item *x = a, *y = b;
    int c = recon_keycmp(x->key, x->key_len, y->key, y->key_len);

    return c != 0 ? c : memcmp(x->hash, y->hash, RECON_HASH);
}

static void
recon_uniq(struct recon_item *a, size_t *n)
{
    size_t k = 0;

    if (*n == 0)
        return;
    qsort(a, *n, sizeof(*a), recon_item_cmp);
    for (size_t i = 1; i < *n; i++) {
        if (recon_item_cmp(&a[k], &a[i]) != 0)
            a[++k] = a[i];
    }
    *n = k + 1;
}

static void
recon_sort(struct recon *r)
{
    if (r->sorted)
        return;
    recon_uniq(r->have, &r->n_have);
    recon_uniq(r->need, &r->n_need);
    r->sorted = 1;
}

void
recon_have_get(struct recon *r, const struct recon_item **items, size_t *n)
{
    recon_sort(r);
    *items = r->have;
    *n = r->n_have;
}

void
recon_need_get(struct recon *r, const struct recon_item **items, size_t *n)
{
    recon_sort(r);
    *items = r->need;
    *n = r->n_need;
}

/* The answer being built: where the last range ended, and the budget. */
struct recon_ans {
    struct recon_msg *m;
    struct recon_bound end; /* upper bound of the last range emitted */
    size_t nonskip;
};

/* A new range [lo, hi) of mode in the answer, a SKIP before it if there is
 * a gap. */
static int
recon_emit(struct recon_ans *a, const struct recon_bound *lo,
           const struct recon_bound *hi, enum recon_mode mode,
           struct recon_range **out)
{
    struct recon_range *rg;
    int rc;

    if (recon_bound_cmp(&a->end, lo) != 0) {
        if ((rc = recon_msg_range(a->m, &rg)) != 0)
            return rc;
        rg->upper = *lo;
        rg->mode = RECON_SKIP;
    }
    if ((rc = recon_msg_range(a->m, &rg)) != 0)
        return rc;
    rg->upper = *hi;
    rg->mode = mode;
    a->end = *hi;
    a->nonskip++;
    *out = rg;
    return 0;
}

static int
recon_emit_fp(struct recon_ans *a, const struct recon_bound *lo,
              const struct recon_bound *hi, const struct recon_acc *acc)
{
    struct recon_range *rg;
    int rc = recon_emit(a, lo, hi, RECON_FPRINT, &rg);

    if (rc == 0)
        recon_acc_final(acc, rg->fp);
    return rc;
}

/* My items of [lo, hi) as one ITEMS range. */
static int
recon_emit_items(struct recon *r, struct recon_ans *a,
                 const struct recon_bound *lo, const struct recon_bound *hi,
                 uint64_t count)
{
    struct recon_range *rg;
    struct recon_walk w;
    uint64_t n = 0;
    int rc = recon_emit(a, lo, hi, RECON_ITEMS, &rg);

    for (rc = rc != 0 ? rc : recon_walk_start(&w, r, lo, hi);
         rc == 0 && w.valid; rc = recon_walk_next(&w)) {
        if (++n > count)
            return RM_E_AGAIN;
        /* rg may move when the range array grows: items do not. */
        rc = recon_msg_item(a->m, &a->m->ranges[a->m->n_ranges - 1], &w.it);
        if (rc != 0)
            return rc;
    }
    if (rc == 0 && n != count)
        rc = RM_E_AGAIN;
    return rc;
}

/*
 * Split [lo, hi) into k sub-ranges of about equal counts, each sent as a
 * fingerprint, even a small one: most sub-ranges are equal, and an FP
 * (about 22 bytes) costs less than one item (35 with 16-byte keys); a
 * small sub-range that differs costs one round more (ITEMS, then DIFF).
 */
static int
recon_emit_split(struct recon *r, struct recon_ans *a,
                 const struct recon_bound *lo, const struct recon_bound *hi,
                 uint64_t count, unsigned k)
{
    struct recon_walk w;
    struct recon_bound cur = *lo, next;
    int rc = recon_walk_start(&w, r, lo, hi);

    for (unsigned j = 0; j < k && rc == 0; j++) {
        uint64_t size = count / k + (j < count % k ? 1 : 0);
        struct recon_range *rg = NULL;
        struct recon_acc acc;
        size_t ri;

        memset(&acc, 0, sizeof(acc));
        /* The upper bound is known only after the walk: emit with hi,
         * fix it below. */
        rc = recon_emit(a, &cur, hi, RECON_FPRINT, &rg);
        if (rc != 0)
            break;
        ri = a->m->n_ranges - 1;
        for (uint64_t i = 0; i < size && rc == 0; i++) {
            if (!w.valid)
                return RM_E_AGAIN;
            recon_acc_add(&acc, &w.it);
            rc = recon_walk_next(&w);
        }
        if (rc != 0)
            break;
        if (j + 1 < k) {
            if (!w.valid)
                return RM_E_AGAIN;
            recon_separator(&w.prev, &w.it, &next);
        } else {
            if (w.valid)
                return RM_E_AGAIN;
            next = *hi;
        }
        a->m->ranges[ri].upper = next;
        a->end = next;
        recon_acc_final(&acc, a->m->ranges[ri].fp);
        cur = next;
    }
    return rc;
}

static int
recon_bit(const struct recon_msg *m, const struct recon_range *rg, size_t i)
{
    return (m->bits[rg->bits_off + i / 8] >> (i % 8)) & 1;
}

/* Answer the peer's ITEMS for [lo, hi) with DIFF, noting both ways. */
static int
recon_emit_diff(struct recon *r, struct recon_ans *a,
                const struct recon_bound *lo, const struct recon_bound *hi,
                const struct recon_range *in)
{
    const struct recon_item *th =
        in->n_items > 0 ? &r->in.items[in->item_off] : NULL;
    size_t n = in->n_items, i = 0, nb = (n + 7) / 8, ri;
    struct recon_range *rg;
    struct recon_walk w;
    uint8_t *bits;
    int rc = recon_emit(a, lo, hi, RECON_DIFF, &rg);

    if (rc != 0)
        return rc;
    ri = a->m->n_ranges - 1;
    rc = recon_grow((void **)&a->m->bits, &a->m->cap_bits, a->m->n_bits, nb, 1);
    if (rc != 0)
        return rc;
    /* nb may be 0 with no bitmap array yet: never offset a null pointer. */
    bits = nb > 0 ? a->m->bits + a->m->n_bits : NULL;
    if (nb > 0)
        memset(bits, 0, nb);
    a->m->ranges[ri].n_bits = nb;
    a->m->n_bits += nb;
    for (rc = recon_walk_start(&w, r, lo, hi); rc == 0;) {
        int c;

        if (!w.valid && i == n)
            break;
        if (!w.valid)
            c = 1;
        else if (i == n)
            c = -1;
        else
            c = recon_keycmp(w.it.key, w.it.key_len, th[i].key, th[i].key_len);
        if (c == 0 && memcmp(w.it.hash, th[i].hash, RECON_HASH) == 0) {
            i++;
            rc = recon_walk_next(&w);
            continue;
        }
        if (c <= 0) { /* mine, not theirs (or another version) */
            rc = recon_note(r, 1, &w.it);
            if (rc == 0)
                rc = recon_msg_item(a->m, &a->m->ranges[ri], &w.it);
        }
        if (rc == 0 && c >= 0) { /* theirs, not mine */
            rc = recon_note(r, 0, &th[i]);
            bits[i / 8] |= (uint8_t)(1u << (i % 8));
            i++;
        }
        if (rc == 0 && c <= 0)
            rc = recon_walk_next(&w);
    }
    return rc;
}

/* Take the peer's DIFF for [lo, hi): its items I lack, and a bitmap over
 * my ITEMS list of the range (walked again). */
static int
recon_take_diff(struct recon *r, const struct recon_bound *lo,
                const struct recon_bound *hi, const struct recon_range *in)
{
    struct recon_walk w;
    size_t i = 0;
    int rc = 0;

    for (size_t j = 0; j < in->n_items && rc == 0; j++)
        rc = recon_note(r, 0, &r->in.items[in->item_off + j]);
    for (rc = rc != 0 ? rc : recon_walk_start(&w, r, lo, hi);
         rc == 0 && w.valid; rc = recon_walk_next(&w), i++) {
        if (i / 8 >= in->n_bits)
            return RM_E_PROTO;
        if (recon_bit(&r->in, in, i) && (rc = recon_note(r, 1, &w.it)) != 0)
            return rc;
    }
    if (rc != 0)
        return rc;
    if (in->n_bits != (i + 7) / 8)
        return RM_E_PROTO;
    for (; i < in->n_bits * 8; i++) {
        if (recon_bit(&r->in, in, i))
            return RM_E_PROTO;
    }
    return 0;
}

/*
 * Answer one FP or ITEMS range [lo, hi). *cut is set when the answer does
 * not fit the message: the rest of the key space from lo then goes as one
 * FP range.
 */
static int
recon_answer(struct recon *r, struct recon_ans *a, const struct recon_bound *lo,
             const struct recon_bound *hi, const struct recon_range *in,
             int *cut)
{
    static const struct recon_bound inf = {.inf = 1};
    struct recon_acc acc;
    uint8_t fp[RECON_FP];
    uint64_t c;
    size_t k, items;
    enum recon_mode mode;
    int rc = recon_range_fp(r, lo, hi, &acc);

    if (rc != 0)
        return rc;
    c = acc.count;
    if (in->mode == RECON_FPRINT) {
        recon_acc_final(&acc, fp);
        if (sodium_memcmp(fp, in->fp, RECON_FP) == 0)
            return 0;
    }
    if (in->mode == RECON_FPRINT && c <= r->cfg.items_max) {
        mode = RECON_ITEMS;
        k = 1;
        items = (size_t)c;
    } else if (in->mode == RECON_ITEMS && c <= RECON_DIFF_RANGE_MAX) {
        mode = RECON_DIFF;
        k = 1;
        items = (size_t)c;
    } else {
        mode = RECON_FPRINT;
        k = c < r->cfg.branch ? (size_t)c : r->cfg.branch;
        items = 0;
    }
    if (a->nonskip + k + 1 > RECON_RANGES_MAX ||
        a->m->n_items + items > RECON_ITEMS_MAX) {
        *cut = 1;
        rc = recon_range_fp(r, lo, &inf, &acc);
        return rc != 0 ? rc : recon_emit_fp(a, lo, &inf, &acc);
    }
    switch (mode) {
    case RECON_ITEMS:
        return recon_emit_items(r, a, lo, hi, c);
    case RECON_DIFF:
        return recon_emit_diff(r, a, lo, hi, in);
    case RECON_FPRINT:
        return recon_emit_split(r, a, lo, hi, c, (unsigned)k);
    case RECON_SKIP:
        break;
    }
    return RM_E_INVAL;
}

static int
recon_fail(struct recon *r, int rc)
{
    if (rc != 0)
        r->failed = 1;
    return rc;
}

int
recon_initiate(struct recon *r, struct buf *out)
{
    static const struct recon_bound lo = {0}, inf = {.inf = 1};
    struct recon_ans a = {.m = &r->out};
    struct recon_acc acc;
    int rc;

    if (r == NULL || out == NULL || r->failed || r->done || r->rounds != 0)
        return RM_E_INVAL;
    recon_msg_reset(&r->out);
    rc = recon_range_fp(r, &lo, &inf, &acc);
    if (rc == 0 && acc.count <= r->cfg.items_max)
        rc = recon_emit_items(r, &a, &lo, &inf, acc.count);
    else if (rc == 0)
        rc = recon_emit_fp(&a, &lo, &inf, &acc);
    if (rc == 0)
        rc = recon_msg_encode(out, &r->out);
    if (rc == 0)
        r->rounds++;
    return recon_fail(r, rc);
}

int
recon_step(struct recon *r, const void *msg, size_t len, struct buf *out,
           int *done)
{
    struct recon_bound lo = {0};
    struct recon_ans a = {.m = &r->out};
    int rc, asks = 0, cut = 0;

    if (r == NULL || out == NULL || done == NULL || r->failed || r->done)
        return RM_E_INVAL;
    *done = 0;
    rc = recon_msg_decode(msg, len, &r->in);
    if (rc != 0)
        return recon_fail(r, rc);
    r->rounds++;
    recon_msg_reset(&r->out);
    for (size_t i = 0; i < r->in.n_ranges && rc == 0 && !cut; i++) {
        const struct recon_range *in = &r->in.ranges[i];

        switch (in->mode) {
        case RECON_SKIP:
            break;
        case RECON_DIFF:
            rc = recon_take_diff(r, &lo, &in->upper, in);
            break;
        case RECON_FPRINT:
        case RECON_ITEMS:
            asks = 1;
            rc = recon_answer(r, &a, &lo, &in->upper, in, &cut);
            break;
        }
        lo = in->upper;
    }
    if (rc != 0)
        return recon_fail(r, rc);
    if (!asks) {
        *done = 1;
        r->done = 1;
        return 0;
    }
    rc = recon_msg_encode(out, &r->out);
    if (rc != 0)
        return recon_fail(r, rc);
    r->rounds++;
    *done = 1;
    for (size_t i = 0; i < r->out.n_ranges; i++) {
        if (r->out.ranges[i].mode == RECON_FPRINT ||
            r->out.ranges[i].mode == RECON_ITEMS)
            *done = 0;
    }
    r->done = *done;
    return 0;
}
