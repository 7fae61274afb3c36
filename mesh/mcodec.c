/*
 * mcodec.c: the mesh service's small msgpack values (see mcodec.h).
 */
#include <errno.h>
#include <string.h>

#include <msgpack.h>

#include "common/mpack_check.h"
#include "common/mpack_decode.h"
#include "common/rm_error.h"
#include "mesh/mcodec.h"

/* ---- writing ----------------------------------------------------------- */

static int
mc_write(void *data, const char *p, size_t len)
{
    struct buf *b = data;

    return buf_append(b, p, len) == 0 ? 0 : -1;
}

static int
mc_key(msgpack_packer *pk, const char *k)
{
    size_t n = strlen(k);

    return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, k, n);
}

static int
mc_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);

    return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, s, n);
}

static int
mc_bin(msgpack_packer *pk, const uint8_t *p, size_t n)
{
    return msgpack_pack_bin(pk, n) | msgpack_pack_bin_body(pk, p, n);
}

/* Append the chain's encoding (from mrec) as a raw value. */
static int
mc_chain(struct buf *out, const struct mrec_chain *ch)
{
    return mrec_chain_encode(out, ch);
}

/* Undo a partial append. */
static int
mc_fail(struct buf *out, size_t start, int r)
{
    buf_truncate(out, start);
    return r ? r : RM_E_TOOBIG;
}

int
mcodec_cred_member_encode(struct buf *out, const struct mrec_chain *ch)
{
    size_t start = out->len;
    msgpack_packer pk;
    int r;

    msgpack_packer_init(&pk, out, mc_write);
    if ((msgpack_pack_map(&pk, 1) | mc_key(&pk, "c")) != 0)
        return mc_fail(out, start, 0);
    if ((r = mc_chain(out, ch)) != 0)
        return mc_fail(out, start, r);
    return 0;
}

int
mcodec_cred_join_encode(struct buf *out, const char *token,
                        const uint8_t pk[MREC_PK], const char *name)
{
    size_t start = out->len;
    msgpack_packer p;
    int r = 0;

    if (token == NULL || strlen(token) >= MCODEC_TOKEN_MAX ||
        !mrec_name_valid(name))
        return RM_E_INVAL;
    msgpack_packer_init(&p, out, mc_write);
    r |= msgpack_pack_map(&p, 3);
    r |= mc_key(&p, "j") | mc_str(&p, token);
    r |= mc_key(&p, "k") | mc_bin(&p, pk, MREC_PK);
    r |= mc_key(&p, "n") | mc_str(&p, name);
    if (r != 0)
        return mc_fail(out, start, 0);
    return 0;
}

int
mcodec_self_encode(struct buf *out, const struct mcodec_self *s)
{
    size_t start = out->len;
    msgpack_packer p;
    int r;

    msgpack_packer_init(&p, out, mc_write);
    r = msgpack_pack_map(&p, 4);
    r |= mc_key(&p, "m") | mc_bin(&p, s->mesh_id, MREC_MESHID);
    r |= mc_key(&p, "r") | mc_bin(&p, s->root_pk, MREC_PK);
    r |= mc_key(&p, "v") | msgpack_pack_uint64(&p, s->record_version);
    r |= mc_key(&p, "c");
    if (r != 0)
        return mc_fail(out, start, 0);
    if ((r = mc_chain(out, &s->chain)) != 0)
        return mc_fail(out, start, r);
    return 0;
}

int
mcodec_invite_encode(struct buf *out, int64_t expires, const char *name)
{
    size_t start = out->len;
    msgpack_packer p;
    int r = 0;

    if (name == NULL || strlen(name) >= MREC_NAME_MAX)
        return RM_E_INVAL;
    msgpack_packer_init(&p, out, mc_write);
    r |= msgpack_pack_map(&p, 2);
    r |= mc_key(&p, "e") | msgpack_pack_int64(&p, expires);
    r |= mc_key(&p, "n") | mc_str(&p, name);
    if (r != 0)
        return mc_fail(out, start, 0);
    return 0;
}

/* ---- reading ----------------------------------------------------------- */

/* Unpack bytes (checked first) and run fn on the value. */
static int
mc_decode(const void *p, size_t len, mpack_obj_fn fn, void *arg)
{
    if (p == NULL || len == 0 || len > FRAME_MSG_MAX)
        return RM_E_PROTO;
    return mpack_decode(p, len, fn, arg, NULL, 0);
}

static int
mc_cred_obj(const msgpack_object *o, void *arg)
{
    struct mcodec_cred *c = arg;
    unsigned seen = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    memset(c, 0, sizeof(*c));
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "c")) {
            if ((seen & 1) || mrec_chain_decode_obj(v, &c->chain) != 0)
                return RM_E_PROTO;
            seen |= 1;
        } else if (mpack_key_is(k, "j")) {
            if ((seen & 2) || mpack_get_str(v, c->token, sizeof(c->token)) != 0)
                return RM_E_PROTO;
            seen |= 2;
        } else if (mpack_key_is(k, "k")) {
            if ((seen & 4) || mpack_get_bin(v, c->pk, MREC_PK) != 0)
                return RM_E_PROTO;
            seen |= 4;
        } else if (mpack_key_is(k, "n")) {
            if ((seen & 8) || mpack_get_str(v, c->name, sizeof(c->name)) != 0 ||
                !mrec_name_valid(c->name))
                return RM_E_PROTO;
            seen |= 8;
        }
    }
    if (seen == 1) {
        c->kind = MCODEC_CRED_MEMBER;
        return 0;
    }
    if (seen == (2 | 4 | 8)) {
        c->kind = MCODEC_CRED_JOIN;
        return 0;
    }
    return RM_E_PROTO;
}

int
mcodec_cred_decode(const void *p, size_t len, struct mcodec_cred *out)
{
    return mc_decode(p, len, mc_cred_obj, out);
}

int
mcodec_cred_decode_obj(const msgpack_object *o, struct mcodec_cred *out)
{
    if (o == NULL)
        return RM_E_PROTO;
    return mc_cred_obj(o, out);
}

static int
mc_self_obj(const msgpack_object *o, void *arg)
{
    struct mcodec_self *s = arg;
    unsigned seen = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    memset(s, 0, sizeof(*s));
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "m")) {
            if (mpack_get_bin(v, s->mesh_id, MREC_MESHID) != 0)
                return RM_E_PROTO;
            seen |= 1;
        } else if (mpack_key_is(k, "r")) {
            if (mpack_get_bin(v, s->root_pk, MREC_PK) != 0)
                return RM_E_PROTO;
            seen |= 2;
        } else if (mpack_key_is(k, "c")) {
            if (mrec_chain_decode_obj(v, &s->chain) != 0)
                return RM_E_PROTO;
            seen |= 4;
        } else if (mpack_key_is(k, "v")) {
            if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return RM_E_PROTO;
            s->record_version = v->via.u64;
            seen |= 8;
        }
    }
    return seen == 15 ? 0 : RM_E_PROTO;
}

int
mcodec_self_decode(const void *p, size_t len, struct mcodec_self *out)
{
    return mc_decode(p, len, mc_self_obj, out);
}

struct mc_inv {
    int64_t *expires;
    char *name;
};

static int
mc_inv_obj(const msgpack_object *o, void *arg)
{
    struct mc_inv *iv = arg;
    unsigned seen = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mpack_key_is(k, "e")) {
            if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                v->via.u64 <= INT64_MAX)
                *iv->expires = (int64_t)v->via.u64;
            else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                *iv->expires = v->via.i64;
            else
                return RM_E_PROTO;
            seen |= 1;
        } else if (mpack_key_is(k, "n")) {
            if (mpack_get_str(v, iv->name, MREC_NAME_MAX) != 0)
                return RM_E_PROTO;
            seen |= 2;
        }
    }
    return seen == 3 ? 0 : RM_E_PROTO;
}

int
mcodec_invite_decode(const void *p, size_t len, int64_t *expires,
                     char name[MREC_NAME_MAX])
{
    struct mc_inv iv = {expires, name};

    return mc_decode(p, len, mc_inv_obj, &iv);
}
