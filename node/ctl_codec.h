/*
 * ctl_codec: the control socket's wire format, shared by the node
 * (ctl_server.c) and the CLI (ctl_client.c). The only node/ file that
 * includes msgpack.h; the others see decoded values through the opaque
 * struct ctl_obj and its accessors.
 *
 * Framing: a 4-byte big-endian payload length, then the payload: exactly
 * one msgpack map. A payload longer than CTL_FRAME_MAX is refused with
 * RM_E_TOOBIG from its header alone, before anything is allocated for it.
 *
 *   request   {"v": 1, "cmd": "queue.list", "args": {...}}
 *   response  {"v": 1, "ok": true,  "data": <any>}
 *             {"v": 1, "ok": false, "error": "text", "code": <rm error>}
 *
 * A connection carries any number of request/response pairs in order.
 * Nothing here does I/O or keeps global state. Not thread-safe per object.
 */
#ifndef RM_CTL_CODEC_H
#define RM_CTL_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/mpack_check.h"

#define CTL_PROTO_VERSION 1
#define CTL_HDR_LEN 4
#define CTL_FRAME_MAX (16u * 1024 * 1024) /* payload bytes */
#define CTL_CMD_MAX 64                    /* longest command name + NUL */
#define CTL_ERROR_MAX 512                 /* error text kept by a decoder */
#define CTL_DEPTH_MAX MPACK_DEPTH_MAX     /* nesting of arrays and maps */

/* ---- frame reader --------------------------------------------------- */

/*
 * A resumable frame reader over a bounded buffer. Bytes are written in
 * (ctl_reader_space() + ctl_reader_commit(), e.g. from a uv alloc_cb /
 * read_cb pair, or ctl_reader_feed()), complete frames are taken out at
 * the front with ctl_reader_frame() and dropped with ctl_reader_consume().
 * The buffer holds at most max(64 KiB, one whole frame).
 */
struct ctl_reader {
    char *data;
    size_t len;  /* bytes held */
    size_t cap;  /* bytes allocated */
    size_t max;  /* largest payload accepted */
    size_t flen; /* header + payload of the frame at the front, 0 unknown */
};

/* max: largest payload accepted (0 = CTL_FRAME_MAX). */
void ctl_reader_init(struct ctl_reader *r, size_t max);
void ctl_reader_cleanup(struct ctl_reader *r);
/*
 * Room to write into at *p (*n bytes, > 0). 0 = more bytes are wanted;
 * RM_E_AGAIN = a complete frame is at the front, take it first;
 * RM_E_TOOBIG = the frame at the front announces more than max; -ENOMEM.
 */
int ctl_reader_space(struct ctl_reader *r, char **p, size_t *n);
/* n bytes were written at the pointer from ctl_reader_space(). */
void ctl_reader_commit(struct ctl_reader *r, size_t n);
/*
 * Copy up to len bytes in; *taken says how many were (fewer when a whole
 * frame is waiting). Errors as ctl_reader_space() but RM_E_AGAIN.
 */
int ctl_reader_feed(struct ctl_reader *r, const void *data, size_t len,
                    size_t *taken);
/*
 * 1 and the payload (borrowed, valid until consume/cleanup) when a whole
 * frame is at the front; 0 when more bytes are needed; RM_E_TOOBIG.
 */
int ctl_reader_frame(struct ctl_reader *r, const char **payload, size_t *len);
/* Drop the frame at the front (after ctl_reader_frame() returned 1). */
void ctl_reader_consume(struct ctl_reader *r);

/* Payload length from a 4-byte header; RM_E_TOOBIG if over max. */
int ctl_frame_len(const unsigned char hdr[CTL_HDR_LEN], size_t max,
                  size_t *len);

/* ---- decoded values ----------------------------------------------- */

/* A decoded msgpack value; borrowed from the message that decoded it. */
struct ctl_obj;

enum ctl_type {
    CTL_T_NIL,
    CTL_T_BOOL,
    CTL_T_INT, /* signed or unsigned integer */
    CTL_T_FLOAT,
    CTL_T_STR,
    CTL_T_BIN,
    CTL_T_ARRAY,
    CTL_T_MAP,
    CTL_T_EXT
};

/* NULL o reads as nil everywhere below. */
enum ctl_type ctl_obj_type(const struct ctl_obj *o);
/* The value of key in map o, or NULL (absent, or o is not a map). */
const struct ctl_obj *ctl_obj_get(const struct ctl_obj *o, const char *key);
/* Elements of an array, pairs of a map, 0 otherwise. */
size_t ctl_obj_len(const struct ctl_obj *o);
/* Element i of an array (NULL when out of range or not an array). */
const struct ctl_obj *ctl_obj_at(const struct ctl_obj *o, size_t i);
/* Key and value of pair i of a map. 0 or RM_E_INVAL. */
int ctl_obj_pair(const struct ctl_obj *o, size_t i, const struct ctl_obj **key,
                 const struct ctl_obj **val);
/* Bytes of a str or bin (not NUL-terminated). 0 or RM_E_INVAL. */
int ctl_obj_bytes(const struct ctl_obj *o, const char **p, size_t *len);
/* Integers in range (a float is not an integer). 0 or RM_E_INVAL. */
int ctl_obj_i64(const struct ctl_obj *o, int64_t *v);
int ctl_obj_u64(const struct ctl_obj *o, uint64_t *v);
int ctl_obj_bool(const struct ctl_obj *o, int *v);
/* A float, or an integer converted. 0 or RM_E_INVAL. */
int ctl_obj_double(const struct ctl_obj *o, double *v);
/*
 * Copy string map[key] into out as a C string. RM_E_NOTFOUND if absent
 * (or nil), RM_E_INVAL if not a str or it contains NUL, RM_E_TOOBIG if it
 * does not fit in outsz.
 */
int ctl_obj_get_str(const struct ctl_obj *map, const char *key, char *out,
                    size_t outsz);
/* Integer map[key]: RM_E_NOTFOUND if absent, RM_E_INVAL if not one. */
int ctl_obj_get_u64(const struct ctl_obj *map, const char *key, uint64_t *out);
int ctl_obj_get_i64(const struct ctl_obj *map, const char *key, int64_t *out);
/* Bytes of str/bin map[key], borrowed, not NUL-terminated; "" and 0
   when absent or of another type. */
const char *ctl_obj_get_strn(const struct ctl_obj *map, const char *key,
                             size_t *len);

/*
 * Append o as JSON to out. Strings are escaped per RFC 8259; bytes that
 * are not valid UTF-8 become U+FFFD (the replacement character, written
 * as \ufffd); bin values are written as strings the same way. Map keys
 * that are not strings are written as their JSON text in a string. Ext
 * values become null. pretty: two-space indentation, newline at the end.
 * 0, RM_E_TOOBIG (out's maximum) or -ENOMEM.
 */
int ctl_obj_json(const struct ctl_obj *o, struct buf *out, int pretty);

/* ---- decoders ------------------------------------------------------- */

struct ctl_request {
    char cmd[CTL_CMD_MAX];      /* "queue.list" */
    const struct ctl_obj *args; /* map; an empty map when not given */
    void *priv;                 /* decoded storage (owned) */
};

struct ctl_response {
    int ok;                     /* 1: data is set; 0: error and code */
    int code;                   /* negative rm error when !ok */
    char error[CTL_ERROR_MAX];  /* when !ok; truncated */
    const struct ctl_obj *data; /* when ok; may be nil */
    void *priv;
};

/*
 * Decode one payload (without the 4-byte header). On success fill *req
 * (free with ctl_request_cleanup()); the ctl_obj pointers live until then,
 * and strings and bins point into data: keep data unchanged until then.
 * On failure return RM_E_PROTO (malformed, wrong types, wrong version,
 * trailing bytes) or -ENOMEM, write a reason into err, and leave nothing
 * to clean up.
 */
int ctl_request_decode(struct ctl_request *req, const char *data, size_t len,
                       char *err, size_t errsz);
void ctl_request_cleanup(struct ctl_request *req);
int ctl_response_decode(struct ctl_response *resp, const char *data, size_t len,
                        char *err, size_t errsz);
void ctl_response_cleanup(struct ctl_response *resp);

/* ---- encoder -------------------------------------------------------- */

/*
 * An encoder appends msgpack to a bounded buffer. Errors are sticky: the
 * first failure (-ENOMEM, RM_E_TOOBIG) is kept in err and later calls do
 * nothing, so a handler can write a whole response and check once in
 * ctl_enc_finish().
 *
 * A framed encoder starts with room for the 4-byte header; a plain one
 * (framed = 0) collects items to splice into another (ctl_enc_splice()),
 * for listings whose length is known only at the end.
 */
struct ctl_enc {
    struct buf buf;
    int framed;
    int err;
};

void ctl_enc_init(struct ctl_enc *e, int framed);
void ctl_enc_cleanup(struct ctl_enc *e);
/* {"v":1,"cmd":cmd,"args": then a map of nargs pairs follows. */
void ctl_enc_request(struct ctl_enc *e, const char *cmd, size_t nargs);
/* {"v":1,"ok":true,"data": then exactly one value follows. */
void ctl_enc_ok(struct ctl_enc *e);
/* The whole error response. */
void ctl_enc_error(struct ctl_enc *e, int code, const char *text);
void ctl_enc_map(struct ctl_enc *e, size_t npairs);
void ctl_enc_array(struct ctl_enc *e, size_t n);
void ctl_enc_nil(struct ctl_enc *e);
void ctl_enc_bool(struct ctl_enc *e, int v);
void ctl_enc_u64(struct ctl_enc *e, uint64_t v);
void ctl_enc_i64(struct ctl_enc *e, int64_t v);
void ctl_enc_double(struct ctl_enc *e, double v);
void ctl_enc_str(struct ctl_enc *e, const char *s); /* NULL writes "" */
void ctl_enc_strn(struct ctl_enc *e, const char *s, size_t len);
void ctl_enc_bin(struct ctl_enc *e, const void *p, size_t len);
/* Key + value shorthands for maps. */
void ctl_enc_kstr(struct ctl_enc *e, const char *key, const char *val);
void ctl_enc_ku64(struct ctl_enc *e, const char *key, uint64_t val);
void ctl_enc_ki64(struct ctl_enc *e, const char *key, int64_t val);
void ctl_enc_kbool(struct ctl_enc *e, const char *key, int val);
/* Write an array header of n and then the bytes of src (a plain encoder
   holding n items). src's error, if any, becomes e's. */
void ctl_enc_splice(struct ctl_enc *e, const struct ctl_enc *src, size_t n);
/* Append the bytes of src (a plain encoder) as they are. */
void ctl_enc_append(struct ctl_enc *e, const struct ctl_enc *src);
/*
 * Finish a framed encoder: fill in the header. *data / *len (borrowed
 * from e, valid until cleanup) is the frame to write. Returns the sticky
 * error, or RM_E_TOOBIG if the payload is over CTL_FRAME_MAX.
 */
int ctl_enc_finish(struct ctl_enc *e, const char **data, size_t *len);

#endif
