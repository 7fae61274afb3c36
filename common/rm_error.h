/*
 * relaymesh error vocabulary.
 *
 * 0 is success; negative values are errors. System errors are -errno;
 * relaymesh's own errors live at RM_E_BASE and below. Numbers are never
 * renumbered or reused: append new codes at the end.
 */
#ifndef RM_ERROR_H
#define RM_ERROR_H

#define RM_OK 0
#define RM_E_BASE (-20000)

enum rm_err {
    RM_E_NOTFOUND = RM_E_BASE - 1, /* no such key / user / message */
    RM_E_EXISTS = RM_E_BASE - 2,   /* already exists */
    RM_E_INVAL = RM_E_BASE - 3,    /* invalid argument or input */
    RM_E_TOOBIG = RM_E_BASE - 4,   /* past a configured limit */
    RM_E_FULL = RM_E_BASE - 5,     /* store cannot grow: disk or map full */
    RM_E_CORRUPT = RM_E_BASE - 6,  /* stored record fails to decode */
    RM_E_SCHEMA = RM_E_BASE - 7,   /* store schema version unsupported */
    RM_E_PROTO = RM_E_BASE - 8,    /* peer broke the wire protocol */
    RM_E_STORE = RM_E_BASE - 9,    /* other LMDB failure (see log) */
    RM_E_CLOSED = RM_E_BASE - 10,  /* handle is closing / closed */
    RM_E_CONFIG = RM_E_BASE - 11,  /* configuration error */
    RM_E_AGAIN = RM_E_BASE - 12,   /* try again later (temporary) */
    RM_E_PERM = RM_E_BASE - 13,    /* not permitted */
    RM_E_LAST = RM_E_BASE - 14
};

/* Human-readable text for an error code; never NULL, static storage. */
const char *rm_strerror(int err);

#endif
