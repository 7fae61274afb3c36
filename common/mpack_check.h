/*
 * mpack_check: is a byte string exactly one well-formed msgpack value?
 *
 * Walked before msgpack-c unpacks anything from the network (the control
 * socket, mesh frames): every container must claim no more elements than
 * bytes are left and nest at most MPACK_DEPTH_MAX deep, so that a few
 * hostile bytes cannot make the unpacker allocate gigabytes or recurse
 * without bound. No allocation; does not include msgpack.h.
 */
#ifndef RM_MPACK_CHECK_H
#define RM_MPACK_CHECK_H

#include <stddef.h>

#define MPACK_DEPTH_MAX 32 /* nesting of arrays and maps */

/* 0, or RM_E_PROTO with what is wrong in err (err may be NULL). */
int mpack_check(const void *p, size_t len, char *err, size_t errsz);

#endif
