/*
 * mpack_decode: one msgpack value from the network, checked and unpacked.
 *
 * The shared first step of every byte decoder (mesh records, the bridge
 * protocol, reconciliation messages, the mesh service's values): the bytes
 * pass mpack_check() (bounded claims, bounded nesting), are unpacked by
 * msgpack-c into a private zone, and the single value is handed to fn;
 * the zone is freed when fn returns, so fn copies what it keeps. Length
 * limits are the caller's (checked before calling). Portable C: the
 * Windows DLL builds it too.
 */
#ifndef RM_MPACK_DECODE_H
#define RM_MPACK_DECODE_H

#include <stddef.h>

#include <msgpack.h>

typedef int (*mpack_obj_fn)(const msgpack_object *o, void *arg);

/*
 * fn's result, or: RM_E_INVAL (p NULL with len > 0), RM_E_PROTO (empty,
 * not exactly one well-formed value: trailing bytes, truncated, bad
 * claims or nesting), -ENOMEM. why (NULL, or whysz bytes) gets a short
 * reason when this function fails.
 */
int mpack_decode(const void *p, size_t len, mpack_obj_fn fn, void *arg,
                 char *why, size_t whysz);

#endif
