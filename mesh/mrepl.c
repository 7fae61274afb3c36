/*
 * mrepl.c: queue replication records and messages (see mrepl.h).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>

#include "common/mpack_decode.h"
#include "common/rm_error.h"
#include "mesh/mrepl.h"

/* ---- writing ----------------------------------------------------------- */

static int
mr_write(void *data, const char *p, size_t len)
{
    return buf_append(data, p, len) == 0 ? 0 : -1;
}

static int
mr_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);

    return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, s, n);
}

static int
mr_bin(msgpack_packer *pk, const void *p, size_t n)
{
    return msgpack_pack_bin(pk, n) | msgpack_pack_bin_body(pk, p, n);
}

static int
mr_bool(msgpack_packer *pk, int v)
{
    return v ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

static int
mr_done(struct buf *out, size_t start, int r)
{
    if (r == 0)
        return 0;
    buf_truncate(out, start);
    return RM_E_TOOBIG;
}

static int
mr_fits(const char *s, size_t max)
{
    return s != NULL && strlen(s) < max;
}

static int
mr_qid_ok(const char *q)
{
    if (strlen(q) != MREPL_QID_LEN)
        return 0;
    for (size_t i = 0; i < MREPL_QID_LEN; i++)
        if (!((q[i] >= '0' && q[i] <= '9') || (q[i] >= 'A' && q[i] <= 'F')))
            return 0;
    return 1;
}

static int
mr_rec_valid(const struct mrepl_rec *r)
{
    if (!mr_qid_ok(r->qid) || r->mid[0] == '\0' ||
        !mr_fits(r->mid, MREPL_ID_MAX) ||
        !mr_fits(r->mail_from, MREPL_ADDR_MAX) ||
        !mr_fits(r->envid, MREPL_ENVID_MAX) || r->ret > 2 || r->body > 2 ||
        r->size > MREPL_SIZE_MAX || r->nreplicas > MREPL_REPLICAS_MAX ||
        r->nrcpts == 0 || r->nrcpts > MREPL_RCPTS_MAX || r->arrival < 0 ||
        r->tomb_at < 0)
        return 0;
    for (unsigned i = 0; i < r->nrcpts; i++) {
        const struct mrepl_rcpt *c = &r->rcpts[i];
        if (c->addr[0] == '\0' || !mr_fits(c->addr, MREPL_ADDR_MAX) ||
            !mr_fits(c->orcpt, MREPL_ADDR_MAX) || c->notify > 15 ||
            (unsigned)c->st > MREPL_R_BOUNCED)
            return 0;
    }
    return 1;
}

static int
mr_rec_pack(msgpack_packer *pk, const struct mrepl_rec *rc)
{
    int r = 0, has_e = rc->envid[0] != '\0';

    r |= msgpack_pack_map(pk, 14 + (has_e ? 1 : 0) + (rc->has_owner ? 2 : 0));
    r |= mr_str(pk, "o") | mr_bin(pk, rc->origin, MREPL_PK);
    r |= mr_str(pk, "q") | mr_str(pk, rc->qid);
    r |= mr_str(pk, "m") | mr_str(pk, rc->mid);
    r |= mr_str(pk, "s") | msgpack_pack_uint64(pk, rc->seq);
    r |= mr_str(pk, "tb") | mr_bool(pk, rc->tomb);
    r |= mr_str(pk, "ta") | msgpack_pack_uint64(pk, (uint64_t)rc->tomb_at);
    if (rc->has_owner) {
        r |= mr_str(pk, "c") | mr_bin(pk, rc->owner, MREPL_PK);
        r |= mr_str(pk, "ep") | msgpack_pack_uint64(pk, rc->epoch);
    }
    r |= mr_str(pk, "f") | mr_str(pk, rc->mail_from);
    if (has_e)
        r |= mr_str(pk, "e") | mr_str(pk, rc->envid);
    r |= mr_str(pk, "rt") | msgpack_pack_unsigned_int(pk, rc->ret);
    r |= mr_str(pk, "b") | msgpack_pack_unsigned_int(pk, rc->body);
    r |= mr_str(pk, "u") | mr_bool(pk, rc->smtputf8);
    r |= mr_str(pk, "a") | msgpack_pack_uint64(pk, (uint64_t)rc->arrival);
    r |= mr_str(pk, "z") | msgpack_pack_uint64(pk, rc->size);
    r |= mr_str(pk, "p") | msgpack_pack_array(pk, rc->nreplicas);
    for (unsigned i = 0; i < rc->nreplicas; i++)
        r |= mr_bin(pk, rc->replicas[i], MREPL_PK);
    r |= mr_str(pk, "t") | msgpack_pack_array(pk, rc->nrcpts);
    for (unsigned i = 0; i < rc->nrcpts && r == 0; i++) {
        const struct mrepl_rcpt *c = &rc->rcpts[i];
        int has_o = c->orcpt[0] != '\0';

        r |= msgpack_pack_map(pk, 4 + (has_o ? 1 : 0));
        r |= mr_str(pk, "a") | mr_str(pk, c->addr);
        if (has_o)
            r |= mr_str(pk, "o") | mr_str(pk, c->orcpt);
        r |= mr_str(pk, "n") | msgpack_pack_unsigned_int(pk, c->notify);
        r |= mr_str(pk, "i") | msgpack_pack_uint32(pk, c->idx);
        r |= mr_str(pk, "x") | msgpack_pack_unsigned_int(pk, (unsigned)c->st);
    }
    return r;
}

void
mrepl_key(const uint8_t origin[MREPL_PK], const char *qid,
          uint8_t key[MREPL_KEY_LEN])
{
    memcpy(key, origin, MREPL_KEY_ORIGIN);
    memcpy(key + MREPL_KEY_ORIGIN, qid, MREPL_QID_LEN);
}

int
mrepl_rec_encode(struct buf *out, const struct mrepl_rec *rc)
{
    size_t start = out->len;
    msgpack_packer pk;

    if (!mr_rec_valid(rc))
        return RM_E_INVAL;
    msgpack_packer_init(&pk, out, mr_write);
    return mr_done(out, start, mr_rec_pack(&pk, rc));
}

int
mrepl_put_encode(struct buf *out, const struct mrepl_rec *rc, uint64_t off,
                 const void *data, size_t len)
{
    size_t start = out->len;
    msgpack_packer pk;
    int r = 0;

    if (!mr_rec_valid(rc) ||
        (data != NULL &&
         (len == 0 || len > MREPL_CHUNK_MAX || off + len > rc->size)))
        return RM_E_INVAL;
    msgpack_packer_init(&pk, out, mr_write);
    r |= msgpack_pack_map(&pk, data != NULL ? 3 : 1);
    r |= mr_str(&pk, "r") | mr_rec_pack(&pk, rc);
    if (data != NULL) {
        r |= mr_str(&pk, "o") | msgpack_pack_uint64(&pk, off);
        r |= mr_str(&pk, "d") | mr_bin(&pk, data, len);
    }
    return mr_done(out, start, r);
}

int
mrepl_ack_encode(struct buf *out, const struct mrepl_ack *a)
{
    size_t start = out->len;
    msgpack_packer pk;
    int r = 0;

    msgpack_packer_init(&pk, out, mr_write);
    r |= msgpack_pack_map(&pk, 2);
    r |= mr_str(&pk, "k") | mr_bin(&pk, a->key, MREPL_KEY_LEN);
    r |= mr_str(&pk, "s") | msgpack_pack_uint64(&pk, a->seq);
    return mr_done(out, start, r);
}

int
mrepl_sum_encode(struct buf *out, const struct mrepl_sum *s)
{
    size_t start = out->len;
    msgpack_packer pk;
    int r = 0;

    msgpack_packer_init(&pk, out, mr_write);
    r |= msgpack_pack_map(&pk, 5);
    r |= mr_str(&pk, "o") | mr_bin(&pk, s->origin, MREPL_PK);
    r |= mr_str(&pk, "n") | msgpack_pack_uint64(&pk, s->n);
    r |= mr_str(&pk, "s") | msgpack_pack_uint64(&pk, s->seq);
    r |= mr_str(&pk, "h") | mr_bin(&pk, s->digest, MREPL_DIGEST);
    r |= mr_str(&pk, "w") | mr_bool(&pk, s->want);
    return mr_done(out, start, r);
}

int
mrepl_recmsg_encode(struct buf *out, const uint8_t origin[MREPL_PK],
                    const void *msg, size_t len)
{
    size_t start = out->len;
    msgpack_packer pk;
    int r = 0;

    if (msg == NULL || len == 0 || len > MREPL_RECON_MAX)
        return RM_E_INVAL;
    msgpack_packer_init(&pk, out, mr_write);
    r |= msgpack_pack_map(&pk, 2);
    r |= mr_str(&pk, "o") | mr_bin(&pk, origin, MREPL_PK);
    r |= mr_str(&pk, "m") | mr_bin(&pk, msg, len);
    return mr_done(out, start, r);
}

/* ---- reading ----------------------------------------------------------- */

static int
mr_rcpt_obj(const msgpack_object *o, struct mrepl_rcpt *c)
{
    unsigned seen = 0;
    uint64_t u;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    memset(c, 0, sizeof(*c));
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "a")) {
            if (mpack_once(&seen, 1) ||
                mpack_get_str(v, c->addr, sizeof(c->addr)) ||
                c->addr[0] == '\0')
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "o")) {
            if (mpack_once(&seen, 2) ||
                mpack_get_str(v, c->orcpt, sizeof(c->orcpt)))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "n")) {
            if (mpack_once(&seen, 4) || mpack_get_u64(v, 15, &u))
                return RM_E_PROTO;
            c->notify = (unsigned)u;
        } else if (mpack_key_is(k, "i")) {
            if (mpack_once(&seen, 8) || mpack_get_u64(v, UINT32_MAX, &u))
                return RM_E_PROTO;
            c->idx = (uint32_t)u;
        } else if (mpack_key_is(k, "x")) {
            if (mpack_once(&seen, 16) || mpack_get_u64(v, MREPL_R_BOUNCED, &u))
                return RM_E_PROTO;
            c->st = (enum mrepl_rcpt_state)u;
        }
    }
    return (seen | 2) == 31 ? 0 : RM_E_PROTO;
}

int
mrepl_rec_decode_obj(const msgpack_object *o, struct mrepl_rec *rc)
{
    unsigned seen = 0;
    uint64_t u;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    memset(rc, 0, offsetof(struct mrepl_rec, rcpts));
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "o")) {
            if (mpack_once(&seen, 0x1) ||
                mpack_get_bin(v, rc->origin, MREPL_PK))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "q")) {
            if (mpack_once(&seen, 0x2) ||
                mpack_get_str(v, rc->qid, sizeof(rc->qid)) ||
                !mr_qid_ok(rc->qid))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "m")) {
            if (mpack_once(&seen, 0x4) ||
                mpack_get_str(v, rc->mid, sizeof(rc->mid)) ||
                rc->mid[0] == '\0')
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "s")) {
            if (mpack_once(&seen, 0x8) ||
                mpack_get_u64(v, UINT64_MAX, &rc->seq))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "tb")) {
            if (mpack_once(&seen, 0x10) || mpack_get_bool(v, &rc->tomb))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "ta")) {
            if (mpack_once(&seen, 0x20) || mpack_get_u64(v, INT64_MAX, &u))
                return RM_E_PROTO;
            rc->tomb_at = (int64_t)u;
        } else if (mpack_key_is(k, "c")) {
            if (mpack_once(&seen, 0x40) ||
                mpack_get_bin(v, rc->owner, MREPL_PK))
                return RM_E_PROTO;
            rc->has_owner = 1;
        } else if (mpack_key_is(k, "ep")) {
            if (mpack_once(&seen, 0x80) ||
                mpack_get_u64(v, UINT64_MAX, &rc->epoch))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "f")) {
            if (mpack_once(&seen, 0x100) ||
                mpack_get_str(v, rc->mail_from, sizeof(rc->mail_from)))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "e")) {
            if (mpack_once(&seen, 0x200) ||
                mpack_get_str(v, rc->envid, sizeof(rc->envid)))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "rt")) {
            if (mpack_once(&seen, 0x400) || mpack_get_u64(v, 2, &u))
                return RM_E_PROTO;
            rc->ret = (unsigned)u;
        } else if (mpack_key_is(k, "b")) {
            if (mpack_once(&seen, 0x800) || mpack_get_u64(v, 2, &u))
                return RM_E_PROTO;
            rc->body = (unsigned)u;
        } else if (mpack_key_is(k, "u")) {
            if (mpack_once(&seen, 0x1000) || mpack_get_bool(v, &rc->smtputf8))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "a")) {
            if (mpack_once(&seen, 0x2000) || mpack_get_u64(v, INT64_MAX, &u))
                return RM_E_PROTO;
            rc->arrival = (int64_t)u;
        } else if (mpack_key_is(k, "z")) {
            if (mpack_once(&seen, 0x4000) ||
                mpack_get_u64(v, MREPL_SIZE_MAX, &rc->size))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "p")) {
            if (mpack_once(&seen, 0x8000) || v->type != MSGPACK_OBJECT_ARRAY ||
                v->via.array.size > MREPL_REPLICAS_MAX)
                return RM_E_PROTO;
            for (uint32_t j = 0; j < v->via.array.size; j++)
                if (mpack_get_bin(&v->via.array.ptr[j], rc->replicas[j],
                                  MREPL_PK))
                    return RM_E_PROTO;
            rc->nreplicas = v->via.array.size;
        } else if (mpack_key_is(k, "t")) {
            if (mpack_once(&seen, 0x10000) || v->type != MSGPACK_OBJECT_ARRAY ||
                v->via.array.size == 0 || v->via.array.size > MREPL_RCPTS_MAX)
                return RM_E_PROTO;
            for (uint32_t j = 0; j < v->via.array.size; j++)
                if (mr_rcpt_obj(&v->via.array.ptr[j], &rc->rcpts[j]) != 0)
                    return RM_E_PROTO;
            rc->nrcpts = v->via.array.size;
        }
    }
    /* Owner and epoch come together; ENVID is optional. */
    if (((seen & 0x40) != 0) != ((seen & 0x80) != 0))
        return RM_E_PROTO;
    return (seen | 0x2c0) == 0x1ffff ? 0 : RM_E_PROTO;
}

static int
mr_put_obj(const msgpack_object *o, void *arg)
{
    struct mrepl_put *p = arg;
    unsigned seen = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    p->has_data = 0;
    p->off = 0;
    p->data = NULL;
    p->len = 0;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "r")) {
            if (mpack_once(&seen, 1) || mrepl_rec_decode_obj(v, &p->rec))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "o")) {
            if (mpack_once(&seen, 2) ||
                mpack_get_u64(v, MREPL_SIZE_MAX, &p->off))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "d")) {
            if (mpack_once(&seen, 4) || v->type != MSGPACK_OBJECT_BIN ||
                v->via.bin.size == 0 || v->via.bin.size > MREPL_CHUNK_MAX)
                return RM_E_PROTO;
            p->data = (const uint8_t *)v->via.bin.ptr;
            p->len = v->via.bin.size;
            p->has_data = 1;
        }
    }
    if (seen != 1 && seen != 7)
        return RM_E_PROTO;
    if (p->has_data && (p->rec.tomb || p->off + p->len > p->rec.size))
        return RM_E_PROTO;
    return 0;
}

int
mrepl_put_decode_obj(const msgpack_object *o, struct mrepl_put *out)
{
    return mr_put_obj(o, out);
}

static int
mr_ack_obj(const msgpack_object *o, void *arg)
{
    struct mrepl_ack *a = arg;
    unsigned seen = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "k")) {
            if (mpack_once(&seen, 1) || mpack_get_bin(v, a->key, MREPL_KEY_LEN))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "s")) {
            if (mpack_once(&seen, 2) || mpack_get_u64(v, UINT64_MAX, &a->seq))
                return RM_E_PROTO;
        }
    }
    return seen == 3 ? 0 : RM_E_PROTO;
}

int
mrepl_ack_decode_obj(const msgpack_object *o, struct mrepl_ack *out)
{
    return mr_ack_obj(o, out);
}

static int
mr_sum_obj(const msgpack_object *o, void *arg)
{
    struct mrepl_sum *s = arg;
    unsigned seen = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "o")) {
            if (mpack_once(&seen, 1) || mpack_get_bin(v, s->origin, MREPL_PK))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "n")) {
            if (mpack_once(&seen, 2) || mpack_get_u64(v, UINT64_MAX, &s->n))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "s")) {
            if (mpack_once(&seen, 4) || mpack_get_u64(v, UINT64_MAX, &s->seq))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "h")) {
            if (mpack_once(&seen, 8) ||
                mpack_get_bin(v, s->digest, MREPL_DIGEST))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "w")) {
            if (mpack_once(&seen, 16) || mpack_get_bool(v, &s->want))
                return RM_E_PROTO;
        }
    }
    return seen == 31 ? 0 : RM_E_PROTO;
}

int
mrepl_sum_decode_obj(const msgpack_object *o, struct mrepl_sum *out)
{
    return mr_sum_obj(o, out);
}

static int
mr_recmsg_obj(const msgpack_object *o, void *arg)
{
    struct mrepl_recmsg *m = arg;
    unsigned seen = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "o")) {
            if (mpack_once(&seen, 1) || mpack_get_bin(v, m->origin, MREPL_PK))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "m")) {
            if (mpack_once(&seen, 2) || v->type != MSGPACK_OBJECT_BIN ||
                v->via.bin.size == 0 || v->via.bin.size > MREPL_RECON_MAX)
                return RM_E_PROTO;
            m->msg = (const uint8_t *)v->via.bin.ptr;
            m->len = v->via.bin.size;
        }
    }
    return seen == 3 ? 0 : RM_E_PROTO;
}

int
mrepl_recmsg_decode_obj(const msgpack_object *o, struct mrepl_recmsg *out)
{
    return mr_recmsg_obj(o, out);
}

static int
mr_rec_fn(const msgpack_object *o, void *arg)
{
    return mrepl_rec_decode_obj(o, arg);
}

int
mrepl_rec_decode(const void *p, size_t len, struct mrepl_rec *out)
{
    return mpack_decode(p, len, mr_rec_fn, out, NULL, 0);
}

int
mrepl_put_decode(const void *p, size_t len, struct mrepl_put *out)
{
    int r = mpack_decode(p, len, mr_put_obj, out, NULL, 0);

    out->data = NULL;
    return r;
}

int
mrepl_ack_decode(const void *p, size_t len, struct mrepl_ack *out)
{
    return mpack_decode(p, len, mr_ack_obj, out, NULL, 0);
}

int
mrepl_sum_decode(const void *p, size_t len, struct mrepl_sum *out)
{
    return mpack_decode(p, len, mr_sum_obj, out, NULL, 0);
}

int
mrepl_recmsg_decode(const void *p, size_t len, struct mrepl_recmsg *out)
{
    int r = mpack_decode(p, len, mr_recmsg_obj, out, NULL, 0);

    out->msg = NULL;
    return r;
}

/* ---- order, hashes, rendezvous ------------------------------------------ */

int
mrepl_claim_cmp(uint64_t ea, const uint8_t oa[MREPL_PK], uint64_t eb,
                const uint8_t ob[MREPL_PK])
{
    int c;

    if (ea != eb)
        return ea < eb ? -1 : 1;
    c = memcmp(oa, ob, MREPL_PK);
    return c < 0 ? -1 : c > 0 ? 1 : 0;
}

int
mrepl_rec_cmp(const struct mrepl_rec *a, const struct mrepl_rec *b)
{
    static const uint8_t none[MREPL_PK];
    int c;

    if (a->tomb != b->tomb)
        return a->tomb ? 1 : -1;
    c = mrepl_claim_cmp(
        a->has_owner ? a->epoch : 0, a->has_owner ? a->owner : none,
        b->has_owner ? b->epoch : 0, b->has_owner ? b->owner : none);
    if (a->has_owner != b->has_owner && c == 0)
        c = a->has_owner ? 1 : -1;
    if (c != 0)
        return c;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return 0;
}

void
mrepl_hash(const void *enc, size_t len, uint8_t out[MREPL_DIGEST])
{
    crypto_generichash(out, MREPL_DIGEST, enc, len, NULL, 0);
}

void
mrepl_digest_add(uint8_t d[MREPL_DIGEST], const uint8_t h[MREPL_DIGEST])
{
    unsigned carry = 0;

    for (size_t i = 0; i < MREPL_DIGEST; i++) {
        unsigned s = (unsigned)d[i] + h[i] + carry;
        d[i] = (uint8_t)s;
        carry = s >> 8;
    }
}

unsigned
mrepl_rendezvous(const char *id, const uint8_t (*cands)[MREPL_PK], unsigned n,
                 unsigned r, unsigned *out)
{
    uint64_t best[MREPL_REPLICAS_MAX];
    unsigned k = 0;

    if (r > MREPL_REPLICAS_MAX)
        r = MREPL_REPLICAS_MAX;
    for (unsigned i = 0; i < n; i++) {
        crypto_generichash_state st;
        uint8_t h[8];
        uint64_t w = 0;
        unsigned j;

        crypto_generichash_init(&st, NULL, 0, sizeof(h));
        crypto_generichash_update(&st, (const uint8_t *)id, strlen(id));
        crypto_generichash_update(&st, cands[i], MREPL_PK);
        crypto_generichash_final(&st, h, sizeof(h));
        for (j = 0; j < 8; j++)
            w = (w << 8) | h[j];
        /* Insertion into the top r, best first. */
        for (j = k; j > 0 && best[j - 1] < w; j--) {
            if (j < r) {
                best[j] = best[j - 1];
                out[j] = out[j - 1];
            }
        }
        if (j < r) {
            best[j] = w;
            out[j] = i;
            if (k < r)
                k++;
        }
    }
    return k;
}
