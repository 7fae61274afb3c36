/*
 * mpack_decode.c: check, unpack, hand over (see mpack_decode.h).
 */
#include <errno.h>
#include <stdio.h>

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
