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
#include <stdint.h>

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

/*
 * Readers of unpacked values, shared by the map decoders: each returns 0,
 * or RM_E_PROTO when the value is not what is asked (out is then left as
 * it was, except mpack_get_str's on success only).
 */
/* 1 if key k is the string s. */
int mpack_key_is(const msgpack_object *k, const char *s);
/* A str without NUL, shorter than outsz, copied NUL-terminated. */
int mpack_get_str(const msgpack_object *v, char *out, size_t outsz);
/* A positive integer of at most max. */
int mpack_get_u64(const msgpack_object *v, uint64_t max, uint64_t *out);
/* A bin of exactly n bytes, copied. */
int mpack_get_bin(const msgpack_object *v, void *out, size_t n);
/* A boolean, as 0 or 1. */
int mpack_get_bool(const msgpack_object *v, int *out);
/* Each key once: bit of *seen for the key; RM_E_PROTO if seen before. */
int mpack_once(unsigned *seen, unsigned bit);

#endif
