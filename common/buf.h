/*
 * Bounded growable byte buffer (after curl's dynbuf): every buffer that
 * holds network input has a maximum, and appending past it fails with
 * RM_E_TOOBIG instead of growing.
 *
 * Ownership: buf_init() on caller storage, buf_cleanup() frees the bytes.
 * data is NUL-terminated after every successful append (the NUL is not
 * counted in len) so text can be used as a C string.
 * Not thread-safe.
 */
#ifndef RM_BUF_H
#define RM_BUF_H

#include <stddef.h>

struct buf {
    char *data; /* NULL until the first append */
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
    size_t max; /* maximum len; appends past it fail */
};

void buf_init(struct buf *b, size_t max);
void buf_cleanup(struct buf *b);
/* Forget the contents, keep the allocation. */
void buf_reset(struct buf *b);
/* Cut the contents back to len bytes (<= b->len): undoes a partial
   append. */
void buf_truncate(struct buf *b, size_t len);
/* 0, RM_E_TOOBIG (nothing appended) or -ENOMEM. */
int buf_append(struct buf *b, const void *data, size_t len);
int buf_appendf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Ensure room for len more bytes; same errors as buf_append. */
int buf_reserve(struct buf *b, size_t len);
/* Move the contents out: caller owns *out (free()); b is reset empty. */
char *buf_take(struct buf *b, size_t *len);

#endif
