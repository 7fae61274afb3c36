/*
 * mxfer: the wire messages that carry mail between mesh nodes (the
 * transfer of one message to its recipients' home node; node/mesh_xfer.c
 * drives them). Each is the body of one mesh frame (mesh/frame.h), a
 * msgpack map:
 *
 *   "xfer"  begin   {"x": transfer id, "m": mesh message id,
 *                    "f": MAIL FROM, "e": ENVID (optional), "r": RET,
 *                    "b": BODY, "u": SMTPUTF8 (bool), "z": size in bytes,
 *                    "t": [{"a": address, "o": ORCPT (optional),
 *                           "n": NOTIFY bits}, ...]}
 *   "xdat"  data    {"x": transfer id, "o": offset, "d": bin (1 ..
 *                    MXFER_CHUNK_MAX bytes)}; the piece that reaches
 *                    "z" is the last
 *   "xack"  ack     {"x": transfer id, "o": bytes received}
 *   "xres"  result  {"x": transfer id, "t": [{"c": outcome, "s":
 *                    enhanced status, "d": text}, ...]} one per
 *                    recipient, in the order of "t" in begin
 *
 * The transfer id is the sender's, unique on its connection. The mesh
 * message id is stable across retries (the origin's fingerprint and its
 * queue id): the home node deduplicates by it.
 *
 * Decoders check the whole structure, every bound and every required key,
 * and refuse anything else with RM_E_PROTO; unknown keys are ignored.
 * A *_decode_obj works on a value already checked and unpacked (a
 * frame's body), a *_decode on bytes. Pure C, no I/O.
 */
#ifndef RM_MESH_MXFER_H
#define RM_MESH_MXFER_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "common/buf.h"

#define MXFER_ID_MAX 96               /* mesh message id, NUL included */
#define MXFER_ADDR_MAX 512            /* an address, NUL included */
#define MXFER_ORCPT_MAX 512           /* ORCPT (RFC 3461 xtext), NUL included */
#define MXFER_ENVID_MAX 128           /* ENVID, NUL included */
#define MXFER_RCPTS_MAX 100           /* recipients per transfer (a job's) */
#define MXFER_STATUS_MAX 16           /* "5.1.1", NUL included */
#define MXFER_DIAG_MAX 512            /* result text, NUL included */
#define MXFER_CHUNK_MAX (256u * 1024) /* data bytes per xdat frame */
#define MXFER_SIZE_MAX ((uint64_t)1 << 32) /* refused above (4 GiB) */

/* Outcomes, as store_outcome's numbers. */
enum mxfer_outcome {
    MXFER_DELIVERED = 0,
    MXFER_BOUNCED = 1,
    MXFER_DEFERRED = 2,
};

struct mxfer_rcpt {
    char addr[MXFER_ADDR_MAX];
    char orcpt[MXFER_ORCPT_MAX]; /* "" when none */
    unsigned notify;             /* STORE_NOTIFY_* keyword bits (0..15) */
};

struct mxfer_begin {
    uint64_t x;
    char id[MXFER_ID_MAX];
    char mail_from[MXFER_ADDR_MAX]; /* "" = null sender */
    char envid[MXFER_ENVID_MAX];    /* "" when none */
    unsigned ret;                   /* 0..2 (store_ret) */
    unsigned body;                  /* 0..2 (store_body) */
    int smtputf8;
    uint64_t size;
    unsigned nrcpts; /* 1 .. MXFER_RCPTS_MAX */
    struct mxfer_rcpt rcpts[MXFER_RCPTS_MAX];
};

struct mxfer_data {
    uint64_t x;
    uint64_t off;
    const uint8_t *data; /* borrowed from the decoded value */
    size_t len;          /* 1 .. MXFER_CHUNK_MAX */
};

struct mxfer_ack {
    uint64_t x;
    uint64_t off;
};

struct mxfer_result {
    enum mxfer_outcome outcome;
    char status[MXFER_STATUS_MAX]; /* "d.d.d" */
    char diag[MXFER_DIAG_MAX];
};

struct mxfer_res {
    uint64_t x;
    unsigned n; /* 1 .. MXFER_RCPTS_MAX */
    struct mxfer_result r[MXFER_RCPTS_MAX];
};

/* Encoders append one value to out: 0, RM_E_INVAL (a field out of its
 * bounds), RM_E_TOOBIG (out is full; nothing appended). */
int mxfer_begin_encode(struct buf *out, const struct mxfer_begin *b);
int mxfer_data_encode(struct buf *out, uint64_t x, uint64_t off,
                      const void *data, size_t len);
int mxfer_ack_encode(struct buf *out, const struct mxfer_ack *a);
int mxfer_res_encode(struct buf *out, const struct mxfer_res *r);

/* Decoders: 0, RM_E_PROTO, -ENOMEM (bytes only). The data decoder's
 * out->data points into o (or, for bytes, is not available: use the
 * object form). */
int mxfer_begin_decode_obj(const msgpack_object *o, struct mxfer_begin *out);
int mxfer_data_decode_obj(const msgpack_object *o, struct mxfer_data *out);
int mxfer_ack_decode_obj(const msgpack_object *o, struct mxfer_ack *out);
int mxfer_res_decode_obj(const msgpack_object *o, struct mxfer_res *out);

int mxfer_begin_decode(const void *p, size_t len, struct mxfer_begin *out);
/* Bytes form of the data decoder: out->data is NULL afterwards (the
 * unpacked value is gone), out->len kept. */
int mxfer_data_decode(const void *p, size_t len, struct mxfer_data *out);
int mxfer_ack_decode(const void *p, size_t len, struct mxfer_ack *out);
int mxfer_res_decode(const void *p, size_t len, struct mxfer_res *out);

#endif
