/*
 * mxfer.c: the mesh's mail transfer messages (see mxfer.h).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <msgpack.h>

#include "common/mpack_decode.h"
#include "common/rm_error.h"
#include "mesh/frame.h"
#include "mesh/mxfer.h"

/* ---- writing ----------------------------------------------------------- */

static int
mx_write(void *data, const char *p, size_t len)
{
    return buf_append(data, p, len) == 0 ? 0 : -1;
}

static int
mx_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);

    return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, s, n);
}

static int
mx_done(struct buf *out, size_t start, int r)
{
    if (r == 0)
        return 0;
    buf_truncate(out, start);
    return RM_E_TOOBIG;
}

/* A string field fits (NUL included) and holds no NUL. */
static int
mx_fits(const char *s, size_t max)
{
    return s != NULL && strlen(s) < max;
}

static int
mx_status_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n >= MXFER_STATUS_MAX ||
        (s[0] != '2' && s[0] != '4' && s[0] != '5'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '.'))
            return 0;
    return 1;
}

int
mxfer_begin_encode(struct buf *out, const struct mxfer_begin *b)
{
    size_t start = out->len;
    msgpack_packer pk;
    int r = 0, has_e;

    if (b->nrcpts == 0 || b->nrcpts > MXFER_RCPTS_MAX || b->ret > 2 ||
        b->body > 2 || b->size > MXFER_SIZE_MAX || b->id[0] == '\0' ||
        !mx_fits(b->id, MXFER_ID_MAX) ||
        !mx_fits(b->mail_from, MXFER_ADDR_MAX) ||
        !mx_fits(b->envid, MXFER_ENVID_MAX))
        return RM_E_INVAL;
    for (unsigned i = 0; i < b->nrcpts; i++)
        if (b->rcpts[i].addr[0] == '\0' ||
            !mx_fits(b->rcpts[i].addr, MXFER_ADDR_MAX) ||
            !mx_fits(b->rcpts[i].orcpt, MXFER_ORCPT_MAX) ||
            b->rcpts[i].notify > 15)
            return RM_E_INVAL;
    has_e = b->envid[0] != '\0';
    msgpack_packer_init(&pk, out, mx_write);
    r |= msgpack_pack_map(&pk, 8 + (has_e ? 1 : 0));
    r |= mx_str(&pk, "x") | msgpack_pack_uint64(&pk, b->x);
    r |= mx_str(&pk, "m") | mx_str(&pk, b->id);
    r |= mx_str(&pk, "f") | mx_str(&pk, b->mail_from);
    if (has_e)
        r |= mx_str(&pk, "e") | mx_str(&pk, b->envid);
    r |= mx_str(&pk, "r") | msgpack_pack_unsigned_int(&pk, b->ret);
    r |= mx_str(&pk, "b") | msgpack_pack_unsigned_int(&pk, b->body);
    r |= mx_str(&pk, "u");
    r |= b->smtputf8 ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    r |= mx_str(&pk, "z") | msgpack_pack_uint64(&pk, b->size);
    r |= mx_str(&pk, "t") | msgpack_pack_array(&pk, b->nrcpts);
    for (unsigned i = 0; i < b->nrcpts && r == 0; i++) {
        const struct mxfer_rcpt *rc = &b->rcpts[i];
        int has_o = rc->orcpt[0] != '\0';

        r |= msgpack_pack_map(&pk, 2 + (has_o ? 1 : 0));
        r |= mx_str(&pk, "a") | mx_str(&pk, rc->addr);
        if (has_o)
            r |= mx_str(&pk, "o") | mx_str(&pk, rc->orcpt);
        r |= mx_str(&pk, "n") | msgpack_pack_unsigned_int(&pk, rc->notify);
    }
    return mx_done(out, start, r);
}

int
mxfer_data_encode(struct buf *out, uint64_t x, uint64_t off, const void *data,
                  size_t len)
{
    size_t start = out->len;
    msgpack_packer pk;
    int r = 0;

    if (len == 0 || len > MXFER_CHUNK_MAX || data == NULL)
        return RM_E_INVAL;
    msgpack_packer_init(&pk, out, mx_write);
    r |= msgpack_pack_map(&pk, 3);
    r |= mx_str(&pk, "x") | msgpack_pack_uint64(&pk, x);
    r |= mx_str(&pk, "o") | msgpack_pack_uint64(&pk, off);
    r |= mx_str(&pk, "d") | msgpack_pack_bin(&pk, len);
    r |= msgpack_pack_bin_body(&pk, data, len);
    return mx_done(out, start, r);
}

int
mxfer_ack_encode(struct buf *out, const struct mxfer_ack *a)
{
    size_t start = out->len;
    msgpack_packer pk;
    int r = 0;

    msgpack_packer_init(&pk, out, mx_write);
    r |= msgpack_pack_map(&pk, 2);
    r |= mx_str(&pk, "x") | msgpack_pack_uint64(&pk, a->x);
    r |= mx_str(&pk, "o") | msgpack_pack_uint64(&pk, a->off);
    return mx_done(out, start, r);
}

int
mxfer_res_encode(struct buf *out, const struct mxfer_res *rs)
{
    size_t start = out->len;
    msgpack_packer pk;
    int r = 0;

    if (rs->n == 0 || rs->n > MXFER_RCPTS_MAX)
        return RM_E_INVAL;
    for (unsigned i = 0; i < rs->n; i++)
        if ((unsigned)rs->r[i].outcome > MXFER_DEFERRED ||
            !mx_status_ok(rs->r[i].status) ||
            !mx_fits(rs->r[i].diag, MXFER_DIAG_MAX))
            return RM_E_INVAL;
    msgpack_packer_init(&pk, out, mx_write);
    r |= msgpack_pack_map(&pk, 2);
    r |= mx_str(&pk, "x") | msgpack_pack_uint64(&pk, rs->x);
    r |= mx_str(&pk, "t") | msgpack_pack_array(&pk, rs->n);
    for (unsigned i = 0; i < rs->n && r == 0; i++) {
        r |= msgpack_pack_map(&pk, 3);
        r |= mx_str(&pk, "c") |
             msgpack_pack_unsigned_int(&pk, (unsigned)rs->r[i].outcome);
        r |= mx_str(&pk, "s") | mx_str(&pk, rs->r[i].status);
        r |= mx_str(&pk, "d") | mx_str(&pk, rs->r[i].diag);
    }
    return mx_done(out, start, r);
}

/* ---- reading ----------------------------------------------------------- */

/* Each key once: bit i of *seen for key i. */
static int
mx_rcpt_obj(const msgpack_object *o, struct mxfer_rcpt *rc)
{
    unsigned seen = 0;
    uint64_t u;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    memset(rc, 0, sizeof(*rc));
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "a")) {
            if (mpack_once(&seen, 1) ||
                mpack_get_str(v, rc->addr, sizeof(rc->addr)) ||
                rc->addr[0] == '\0')
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "o")) {
            if (mpack_once(&seen, 2) ||
                mpack_get_str(v, rc->orcpt, sizeof(rc->orcpt)))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "n")) {
            if (mpack_once(&seen, 4) || mpack_get_u64(v, 15, &u))
                return RM_E_PROTO;
            rc->notify = (unsigned)u;
        }
    }
    return (seen & 5) == 5 ? 0 : RM_E_PROTO;
}

static int
mx_begin_obj(const msgpack_object *o, void *arg)
{
    struct mxfer_begin *b = arg;
    unsigned seen = 0;
    uint64_t u;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    memset(b, 0, offsetof(struct mxfer_begin, rcpts));
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "x")) {
            if (mpack_once(&seen, 0x01) || mpack_get_u64(v, UINT64_MAX, &b->x))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "m")) {
            if (mpack_once(&seen, 0x02) ||
                mpack_get_str(v, b->id, sizeof(b->id)) || b->id[0] == '\0')
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "f")) {
            if (mpack_once(&seen, 0x04) ||
                mpack_get_str(v, b->mail_from, sizeof(b->mail_from)))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "e")) {
            if (mpack_once(&seen, 0x08) ||
                mpack_get_str(v, b->envid, sizeof(b->envid)))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "r")) {
            if (mpack_once(&seen, 0x10) || mpack_get_u64(v, 2, &u))
                return RM_E_PROTO;
            b->ret = (unsigned)u;
        } else if (mpack_key_is(k, "b")) {
            if (mpack_once(&seen, 0x20) || mpack_get_u64(v, 2, &u))
                return RM_E_PROTO;
            b->body = (unsigned)u;
        } else if (mpack_key_is(k, "u")) {
            if (mpack_once(&seen, 0x40) || v->type != MSGPACK_OBJECT_BOOLEAN)
                return RM_E_PROTO;
            b->smtputf8 = v->via.boolean ? 1 : 0;
        } else if (mpack_key_is(k, "z")) {
            if (mpack_once(&seen, 0x80) ||
                mpack_get_u64(v, MXFER_SIZE_MAX, &b->size))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "t")) {
            if (mpack_once(&seen, 0x100) || v->type != MSGPACK_OBJECT_ARRAY ||
                v->via.array.size == 0 || v->via.array.size > MXFER_RCPTS_MAX)
                return RM_E_PROTO;
            for (uint32_t j = 0; j < v->via.array.size; j++)
                if (mx_rcpt_obj(&v->via.array.ptr[j], &b->rcpts[j]) != 0)
                    return RM_E_PROTO;
            b->nrcpts = v->via.array.size;
        }
    }
    /* Everything but ENVID is required. */
    return (seen | 0x08) == 0x1ff ? 0 : RM_E_PROTO;
}

static int
mx_data_obj(const msgpack_object *o, void *arg)
{
    struct mxfer_data *d = arg;
    unsigned seen = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    memset(d, 0, sizeof(*d));
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "x")) {
            if (mpack_once(&seen, 1) || mpack_get_u64(v, UINT64_MAX, &d->x))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "o")) {
            if (mpack_once(&seen, 2) ||
                mpack_get_u64(v, MXFER_SIZE_MAX, &d->off))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "d")) {
            if (mpack_once(&seen, 4) || v->type != MSGPACK_OBJECT_BIN ||
                v->via.bin.size == 0 || v->via.bin.size > MXFER_CHUNK_MAX)
                return RM_E_PROTO;
            d->data = (const uint8_t *)v->via.bin.ptr;
            d->len = v->via.bin.size;
        }
    }
    return seen == 7 ? 0 : RM_E_PROTO;
}

static int
mx_ack_obj(const msgpack_object *o, void *arg)
{
    struct mxfer_ack *a = arg;
    unsigned seen = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    memset(a, 0, sizeof(*a));
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "x")) {
            if (mpack_once(&seen, 1) || mpack_get_u64(v, UINT64_MAX, &a->x))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "o")) {
            if (mpack_once(&seen, 2) ||
                mpack_get_u64(v, MXFER_SIZE_MAX, &a->off))
                return RM_E_PROTO;
        }
    }
    return seen == 3 ? 0 : RM_E_PROTO;
}

static int
mx_result_obj(const msgpack_object *o, struct mxfer_result *r)
{
    unsigned seen = 0;
    uint64_t u;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    memset(r, 0, sizeof(*r));
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "c")) {
            if (mpack_once(&seen, 1) || mpack_get_u64(v, MXFER_DEFERRED, &u))
                return RM_E_PROTO;
            r->outcome = (enum mxfer_outcome)u;
        } else if (mpack_key_is(k, "s")) {
            if (mpack_once(&seen, 2) ||
                mpack_get_str(v, r->status, sizeof(r->status)) ||
                !mx_status_ok(r->status))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "d")) {
            if (mpack_once(&seen, 4) ||
                mpack_get_str(v, r->diag, sizeof(r->diag)))
                return RM_E_PROTO;
        }
    }
    return seen == 7 ? 0 : RM_E_PROTO;
}

static int
mx_res_obj(const msgpack_object *o, void *arg)
{
    struct mxfer_res *rs = arg;
    unsigned seen = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    rs->x = 0;
    rs->n = 0;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "x")) {
            if (mpack_once(&seen, 1) || mpack_get_u64(v, UINT64_MAX, &rs->x))
                return RM_E_PROTO;
        } else if (mpack_key_is(k, "t")) {
            if (mpack_once(&seen, 2) || v->type != MSGPACK_OBJECT_ARRAY ||
                v->via.array.size == 0 || v->via.array.size > MXFER_RCPTS_MAX)
                return RM_E_PROTO;
            for (uint32_t j = 0; j < v->via.array.size; j++)
                if (mx_result_obj(&v->via.array.ptr[j], &rs->r[j]) != 0)
                    return RM_E_PROTO;
            rs->n = v->via.array.size;
        }
    }
    return seen == 3 ? 0 : RM_E_PROTO;
}

int
mxfer_begin_decode_obj(const msgpack_object *o, struct mxfer_begin *out)
{
    return o == NULL ? RM_E_PROTO : mx_begin_obj(o, out);
}

int
mxfer_data_decode_obj(const msgpack_object *o, struct mxfer_data *out)
{
    return o == NULL ? RM_E_PROTO : mx_data_obj(o, out);
}

int
mxfer_ack_decode_obj(const msgpack_object *o, struct mxfer_ack *out)
{
    return o == NULL ? RM_E_PROTO : mx_ack_obj(o, out);
}

int
mxfer_res_decode_obj(const msgpack_object *o, struct mxfer_res *out)
{
    return o == NULL ? RM_E_PROTO : mx_res_obj(o, out);
}

static int
mx_decode(const void *p, size_t len, mpack_obj_fn fn, void *arg)
{
    if (p == NULL || len == 0 || len > FRAME_MSG_MAX)
        return RM_E_PROTO;
    return mpack_decode(p, len, fn, arg, NULL, 0);
}

int
mxfer_begin_decode(const void *p, size_t len, struct mxfer_begin *out)
{
    return mx_decode(p, len, mx_begin_obj, out);
}

int
mxfer_data_decode(const void *p, size_t len, struct mxfer_data *out)
{
    int r = mx_decode(p, len, mx_data_obj, out);

    out->data = NULL; /* the unpacked value is gone */
    return r;
}

int
mxfer_ack_decode(const void *p, size_t len, struct mxfer_ack *out)
{
    return mx_decode(p, len, mx_ack_obj, out);
}

int
mxfer_res_decode(const void *p, size_t len, struct mxfer_res *out)
{
    return mx_decode(p, len, mx_res_obj, out);
}
