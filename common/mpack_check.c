/*
 * mpack_check.c: the structural check of one msgpack value (see
 * mpack_check.h).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "common/mpack_check.h"
#include "common/rm_error.h"

static uint64_t
mpack_be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* mingw-w64's GCC checks "printf" formats against msvcrt's printf, which
 * lacks %zu; the C99 stdio that mingw-w64 selects in C11 mode has it, and
 * its stdio.h names the matching format (the Windows DLL builds this). */
#ifdef __MINGW_PRINTF_FORMAT
#define MPACK_PRINTF_FORMAT __MINGW_PRINTF_FORMAT
#else
#define MPACK_PRINTF_FORMAT printf
#endif

static void mpack_err(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(MPACK_PRINTF_FORMAT, 3, 4)));

static void
mpack_err(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errsz == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

int
mpack_check(const void *data, size_t len, char *err, size_t errsz)
{
    const unsigned char *p = data;
    uint64_t stack[MPACK_DEPTH_MAX + 1];
    int depth = 0;
    size_t off = 0;

    stack[0] = 1;
    while (depth >= 0) {
        uint64_t skip = 0, lenbytes = 0, children = 0;
        unsigned char c;

        if (stack[depth] == 0) {
            depth--;
            continue;
        }
        stack[depth]--;
        if (off >= len)
            goto truncated;
        c = p[off++];
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            /* fixint, nil, bool */
        } else if (c <= 0x8f) {
            children = 2 * (uint64_t)(c & 0x0f);
        } else if (c <= 0x9f) {
            children = c & 0x0f;
        } else if (c <= 0xbf) {
            skip = c & 0x1f;
        } else {
            switch (c) {
            case 0xc4:
            case 0xd9:
                lenbytes = 1;
                break;
            case 0xc5:
            case 0xda:
                lenbytes = 2;
                break;
            case 0xc6:
            case 0xdb:
                lenbytes = 4;
                break;
            case 0xc7:
                lenbytes = 1;
                skip = 1;
                break;
            case 0xc8:
                lenbytes = 2;
                skip = 1;
                break;
            case 0xc9:
                lenbytes = 4;
                skip = 1;
                break;
            case 0xca:
                skip = 4;
                break;
            case 0xcb:
                skip = 8;
                break;
            case 0xcc:
            case 0xd0:
                skip = 1;
                break;
            case 0xcd:
            case 0xd1:
                skip = 2;
                break;
            case 0xce:
            case 0xd2:
                skip = 4;
                break;
            case 0xcf:
            case 0xd3:
                skip = 8;
                break;
            case 0xd4:
                skip = 2;
                break;
            case 0xd5:
                skip = 3;
                break;
            case 0xd6:
                skip = 5;
                break;
            case 0xd7:
                skip = 9;
                break;
            case 0xd8:
                skip = 17;
                break;
            case 0xdc:
            case 0xde:
                if (len - off < 2)
                    goto truncated;
                children = mpack_be(p + off, 2) * (c == 0xde ? 2 : 1);
                off += 2;
                break;
            case 0xdd:
            case 0xdf:
                if (len - off < 4)
                    goto truncated;
                children = mpack_be(p + off, 4) * (c == 0xdf ? 2 : 1);
                off += 4;
                break;
            default: /* 0xc1: never used */
                mpack_err(err, errsz, "invalid msgpack byte 0x%02x at %zu", c,
                          off - 1);
                return RM_E_PROTO;
            }
        }
        if (lenbytes) {
            if (len - off < lenbytes)
                goto truncated;
            skip += mpack_be(p + off, (size_t)lenbytes);
            off += (size_t)lenbytes;
        }
        if (skip > len - off)
            goto truncated;
        off += (size_t)skip;
        if (children) {
            if (children > len - off)
                goto truncated;
            if (depth + 1 > MPACK_DEPTH_MAX) {
                mpack_err(err, errsz, "nested deeper than %d levels",
                          MPACK_DEPTH_MAX);
                return RM_E_PROTO;
            }
            stack[++depth] = children;
        }
    }
    if (off != len) {
        mpack_err(err, errsz, "%zu bytes after the message", len - off);
        return RM_E_PROTO;
    }
    return 0;
truncated:
    mpack_err(err, errsz, "truncated msgpack (%zu bytes)", len);
    return RM_E_PROTO;
}
