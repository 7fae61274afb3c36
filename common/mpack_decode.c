/*
 * mpack_decode.c: check, unpack, hand over (see mpack_decode.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/mpack_check.h"
#include "common/mpack_decode.h"
#include "common/rm_error.h"

static int
mpack_fail(char *why, size_t whysz, int r, const char *text)
{
    if (why != NULL && whysz > 0)
        snprintf(why, whysz, "%s", text);
    return r;
}

int
mpack_decode(const void *p, size_t len, mpack_obj_fn fn, void *arg, char *why,
             size_t whysz)
{
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    int r;

    if (p == NULL && len != 0)
        return RM_E_INVAL;
    if (len == 0)
        return mpack_fail(why, whysz, RM_E_PROTO, "empty message");
    if (mpack_check(p, len, why, whysz) != 0)
        return RM_E_PROTO;
    if (!msgpack_zone_init(&z, 2048))
        return mpack_fail(why, whysz, -ENOMEM, "out of memory");
    switch (msgpack_unpack(p, len, &off, &z, &o)) {
    case MSGPACK_UNPACK_SUCCESS:
        if (off == len)
            r = fn(&o, arg);
        else
            r = mpack_fail(why, whysz, RM_E_PROTO, "bytes after the message");
        break;
    case MSGPACK_UNPACK_NOMEM_ERROR:
        r = mpack_fail(why, whysz, -ENOMEM, "out of memory");
        break;
    case MSGPACK_UNPACK_EXTRA_BYTES:
    case MSGPACK_UNPACK_CONTINUE:
    case MSGPACK_UNPACK_PARSE_ERROR:
    default:
        r = mpack_fail(why, whysz, RM_E_PROTO, "not msgpack");
        break;
    }
    msgpack_zone_destroy(&z);
    return r;
}

int
mpack_key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);

    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, s, n) == 0;
}

int
mpack_get_str(const msgpack_object *v, char *out, size_t outsz)
{
    if (v->type != MSGPACK_OBJECT_STR || v->via.str.size >= outsz ||
        memchr(v->via.str.ptr, '\0', v->via.str.size) != NULL)
        return RM_E_PROTO;
    memcpy(out, v->via.str.ptr, v->via.str.size);
    out[v->via.str.size] = '\0';
    return 0;
}

int
mpack_get_u64(const msgpack_object *v, uint64_t max, uint64_t *out)
{
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 > max)
        return RM_E_PROTO;
    *out = v->via.u64;
    return 0;
}

int
mpack_get_bin(const msgpack_object *v, void *out, size_t n)
{
    if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != n)
        return RM_E_PROTO;
    memcpy(out, v->via.bin.ptr, n);
    return 0;
}

int
mpack_get_bool(const msgpack_object *v, int *out)
{
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return RM_E_PROTO;
    *out = v->via.boolean ? 1 : 0;
    return 0;
}

int
mpack_once(unsigned *seen, unsigned bit)
{
    if (*seen & bit)
        return RM_E_PROTO;
    *seen |= bit;
    return 0;
}
