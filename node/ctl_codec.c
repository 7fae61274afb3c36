/*
 * ctl_codec: frames, msgpack decoding with validation, encoding, JSON.
 *
 * msgpack-c's unpacker allocates an array or map's element storage from
 * the count in its header, before the elements arrive: a 5-byte input
 * claiming 2^32 elements would ask for ~100 GB. So every payload is first
 * walked by mpack_check(), which checks the structure, the nesting depth
 * and that no container claims more elements than there are bytes left;
 * only then is it handed to msgpack_unpack_next().
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "common/rm_error.h"
#include "common/mpack_check.h"
#include "node/ctl_codec.h"

#define CTL_READ_CHUNK (64 * 1024)

/* ---- frame reader --------------------------------------------------- */

void
ctl_reader_init(struct ctl_reader *r, size_t max)
{
    memset(r, 0, sizeof(*r));
    r->max = max ? max : CTL_FRAME_MAX;
}

void
ctl_reader_cleanup(struct ctl_reader *r)
{
    free(r->data);
    memset(r, 0, sizeof(*r));
}

int
ctl_frame_len(const unsigned char hdr[CTL_HDR_LEN], size_t max, size_t *len)
{
    uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
                 (uint32_t)hdr[2] << 8 | (uint32_t)hdr[3];

    if (n > max)
        return RM_E_TOOBIG;
    *len = n;
    return 0;
}

/* Learn the length of the frame at the front once its header is in. */
static int
ctl_reader_head(struct ctl_reader *r)
{
    size_t n;

    if (r->flen != 0 || r->len < CTL_HDR_LEN)
        return 0;
    if (ctl_frame_len((const unsigned char *)r->data, r->max, &n) != 0)
        return RM_E_TOOBIG;
    r->flen = CTL_HDR_LEN + n;
    return 0;
}

static int
ctl_reader_grow(struct ctl_reader *r, size_t want)
{
    char *p;

    if (want <= r->cap)
        return 0;
    if ((p = realloc(r->data, want)) == NULL)
        return -ENOMEM;
    r->data = p;
    r->cap = want;
    return 0;
}

int
ctl_reader_space(struct ctl_reader *r, char **p, size_t *n)
{
    size_t target;
    int rc;

    if ((rc = ctl_reader_head(r)) != 0)
        return rc;
    if (r->flen != 0) {
        if (r->len >= r->flen)
            return RM_E_AGAIN;
        target = r->flen; /* exactly this frame: allocation follows the
                             header, which has been checked */
    } else {
        target = r->cap > CTL_READ_CHUNK ? r->cap : CTL_READ_CHUNK;
        if (target - r->len < CTL_HDR_LEN)
            target = r->len + CTL_HDR_LEN;
    }
    if ((rc = ctl_reader_grow(r, target)) != 0)
        return rc;
    *p = r->data + r->len;
    *n = r->cap - r->len;
    if (r->flen != 0 && *n > r->flen - r->len)
        *n = r->flen - r->len;
    return 0;
}

void
ctl_reader_commit(struct ctl_reader *r, size_t n)
{
    r->len += n;
    if (r->len > r->cap)
        r->len = r->cap; /* a caller bug; never read past the buffer */
}

int
ctl_reader_feed(struct ctl_reader *r, const void *data, size_t len,
                size_t *taken)
{
    const char *src = data;
    size_t done = 0;

    while (done < len) {
        char *p;
        size_t room;
        int rc = ctl_reader_space(r, &p, &room);
        if (rc == RM_E_AGAIN)
            break;
        if (rc != 0) {
            *taken = done;
            return rc;
        }
        if (room > len - done)
            room = len - done;
        memcpy(p, src + done, room);
        ctl_reader_commit(r, room);
        done += room;
    }
    *taken = done;
    return ctl_reader_head(r);
}

int
ctl_reader_frame(struct ctl_reader *r, const char **payload, size_t *len)
{
    int rc;

    if ((rc = ctl_reader_head(r)) != 0)
        return rc;
    if (r->flen == 0 || r->len < r->flen)
        return 0;
    *payload = r->data + CTL_HDR_LEN;
    *len = r->flen - CTL_HDR_LEN;
    return 1;
}

void
ctl_reader_consume(struct ctl_reader *r)
{
    if (r->flen == 0 || r->len < r->flen)
        return;
    memmove(r->data, r->data + r->flen, r->len - r->flen);
    r->len -= r->flen;
    r->flen = 0;
    /* Give back a large frame's buffer once it is handled. */
    if (r->cap > CTL_READ_CHUNK && r->len <= CTL_READ_CHUNK) {
        char *p = realloc(r->data, CTL_READ_CHUNK);
        if (p != NULL) {
            r->data = p;
            r->cap = CTL_READ_CHUNK;
        }
    }
}

/* Validate and unpack one value into a heap msgpack_unpacked. */
static int
ctl_unpack(const char *data, size_t len, msgpack_unpacked **out, char *err,
           size_t errsz)
{
    msgpack_unpacked *u;
    msgpack_unpack_return ur;
    size_t off = 0;
    int rc;

    if ((rc = mpack_check((const unsigned char *)data, len, err, errsz)) != 0)
        return rc;
    if ((u = malloc(sizeof(*u))) == NULL) {
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    msgpack_unpacked_init(u);
    ur = msgpack_unpack_next(u, data, len, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
        msgpack_unpacked_destroy(u);
        free(u);
        if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
            snprintf(err, errsz, "out of memory");
            return -ENOMEM;
        }
        snprintf(err, errsz, "malformed msgpack");
        return RM_E_PROTO;
    }
    *out = u;
    return 0;
}

/* ---- values --------------------------------------------------------- */

#define MO(o) ((const msgpack_object *)(const void *)(o))
#define CO(o) ((const struct ctl_obj *)(const void *)(o))

static const msgpack_object ctl_nil_obj = {.type = MSGPACK_OBJECT_NIL};
static const msgpack_object ctl_empty_map = {.type = MSGPACK_OBJECT_MAP};

enum ctl_type
ctl_obj_type(const struct ctl_obj *o)
{
    if (o == NULL)
        return CTL_T_NIL;
    switch (MO(o)->type) {
    case MSGPACK_OBJECT_NIL:
        return CTL_T_NIL;
    case MSGPACK_OBJECT_BOOLEAN:
        return CTL_T_BOOL;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return CTL_T_INT;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return CTL_T_FLOAT;
    case MSGPACK_OBJECT_STR:
        return CTL_T_STR;
    case MSGPACK_OBJECT_BIN:
        return CTL_T_BIN;
    case MSGPACK_OBJECT_ARRAY:
        return CTL_T_ARRAY;
    case MSGPACK_OBJECT_MAP:
        return CTL_T_MAP;
    case MSGPACK_OBJECT_EXT:
        return CTL_T_EXT;
    }
    return CTL_T_EXT;
}

const struct ctl_obj *
ctl_obj_get(const struct ctl_obj *o, const char *key)
{
    size_t klen = strlen(key);

    if (o == NULL || MO(o)->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < MO(o)->via.map.size; i++) {
        const msgpack_object *k = &MO(o)->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0)
            return CO(&MO(o)->via.map.ptr[i].val);
    }
    return NULL;
}

size_t
ctl_obj_len(const struct ctl_obj *o)
{
    if (o == NULL)
        return 0;
    if (MO(o)->type == MSGPACK_OBJECT_ARRAY)
        return MO(o)->via.array.size;
    if (MO(o)->type == MSGPACK_OBJECT_MAP)
        return MO(o)->via.map.size;
    return 0;
}

const struct ctl_obj *
ctl_obj_at(const struct ctl_obj *o, size_t i)
{
    if (o == NULL || MO(o)->type != MSGPACK_OBJECT_ARRAY ||
        i >= MO(o)->via.array.size)
        return NULL;
    return CO(&MO(o)->via.array.ptr[i]);
}

int
ctl_obj_pair(const struct ctl_obj *o, size_t i, const struct ctl_obj **key,
             const struct ctl_obj **val)
{
    if (o == NULL || MO(o)->type != MSGPACK_OBJECT_MAP ||
        i >= MO(o)->via.map.size)
        return RM_E_INVAL;
    *key = CO(&MO(o)->via.map.ptr[i].key);
    *val = CO(&MO(o)->via.map.ptr[i].val);
    return 0;
}

int
ctl_obj_bytes(const struct ctl_obj *o, const char **p, size_t *len)
{
    if (o == NULL)
        return RM_E_INVAL;
    if (MO(o)->type == MSGPACK_OBJECT_STR) {
        *p = MO(o)->via.str.ptr;
        *len = MO(o)->via.str.size;
        return 0;
    }
    if (MO(o)->type == MSGPACK_OBJECT_BIN) {
        *p = MO(o)->via.bin.ptr;
        *len = MO(o)->via.bin.size;
        return 0;
    }
    return RM_E_INVAL;
}

int
ctl_obj_i64(const struct ctl_obj *o, int64_t *v)
{
    if (o == NULL)
        return RM_E_INVAL;
    if (MO(o)->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = MO(o)->via.i64;
        return 0;
    }
    if (MO(o)->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        MO(o)->via.u64 <= (uint64_t)INT64_MAX) {
        *v = (int64_t)MO(o)->via.u64;
        return 0;
    }
    return RM_E_INVAL;
}

int
ctl_obj_u64(const struct ctl_obj *o, uint64_t *v)
{
    if (o == NULL || MO(o)->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return RM_E_INVAL;
    *v = MO(o)->via.u64;
    return 0;
}

int
ctl_obj_bool(const struct ctl_obj *o, int *v)
{
    if (o == NULL || MO(o)->type != MSGPACK_OBJECT_BOOLEAN)
        return RM_E_INVAL;
    *v = MO(o)->via.boolean ? 1 : 0;
    return 0;
}

int
ctl_obj_double(const struct ctl_obj *o, double *v)
{
    if (o == NULL)
        return RM_E_INVAL;
    if (MO(o)->type == MSGPACK_OBJECT_FLOAT32 ||
        MO(o)->type == MSGPACK_OBJECT_FLOAT64)
        *v = MO(o)->via.f64;
    else if (MO(o)->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *v = (double)MO(o)->via.u64;
    else if (MO(o)->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *v = (double)MO(o)->via.i64;
    else
        return RM_E_INVAL;
    return 0;
}

int
ctl_obj_get_str(const struct ctl_obj *map, const char *key, char *out,
                size_t outsz)
{
    const struct ctl_obj *v = ctl_obj_get(map, key);

    if (v == NULL || MO(v)->type == MSGPACK_OBJECT_NIL)
        return RM_E_NOTFOUND;
    if (MO(v)->type != MSGPACK_OBJECT_STR ||
        memchr(MO(v)->via.str.ptr, '\0', MO(v)->via.str.size) != NULL)
        return RM_E_INVAL;
    if (MO(v)->via.str.size >= outsz)
        return RM_E_TOOBIG;
    memcpy(out, MO(v)->via.str.ptr, MO(v)->via.str.size);
    out[MO(v)->via.str.size] = '\0';
    return 0;
}

int
ctl_obj_get_u64(const struct ctl_obj *map, const char *key, uint64_t *out)
{
    const struct ctl_obj *v = ctl_obj_get(map, key);

    if (v == NULL || MO(v)->type == MSGPACK_OBJECT_NIL)
        return RM_E_NOTFOUND;
    return ctl_obj_u64(v, out);
}

int
ctl_obj_get_i64(const struct ctl_obj *map, const char *key, int64_t *out)
{
    const struct ctl_obj *v = ctl_obj_get(map, key);

    if (v == NULL || MO(v)->type == MSGPACK_OBJECT_NIL)
        return RM_E_NOTFOUND;
    return ctl_obj_i64(v, out);
}

const char *
ctl_obj_get_strn(const struct ctl_obj *map, const char *key, size_t *len)
{
    const char *p;

    if (ctl_obj_bytes(ctl_obj_get(map, key), &p, len) != 0) {
        *len = 0;
        return "";
    }
    return p;
}

/* ---- JSON ----------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if invalid. */
static size_t
ctl_utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && p[1] < 0xa0) /* overlong */
            return 0;
        if (c == 0xed && p[1] >= 0xa0) /* surrogates */
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
            (p[3] & 0xc0) != 0x80)
            return 0;
        if (c == 0xf0 && p[1] < 0x90)
            return 0;
        if (c == 0xf4 && p[1] >= 0x90)
            return 0;
        return 4;
    }
    return 0;
}

static int
ctl_json_str(struct buf *out, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run;
    int rc = buf_append(out, "\"", 1);

    while (rc == 0 && i < len) {
        unsigned char c = p[i];
        /* Copy runs of plain printable ASCII in one append. */
        for (run = i; run < len && p[run] >= 0x20 && p[run] < 0x7f &&
                      p[run] != '"' && p[run] != '\\';
             run++)
            ;
        if (run > i) {
            rc = buf_append(out, s + i, run - i);
            i = run;
            continue;
        }
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = buf_append(out, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            switch (c) {
            case '\n':
                rc = buf_append(out, "\\n", 2);
                break;
            case '\r':
                rc = buf_append(out, "\\r", 2);
                break;
            case '\t':
                rc = buf_append(out, "\\t", 2);
                break;
            default:
                rc = buf_appendf(out, "\\u%04x", c);
                break;
            }
            i++;
        } else {
            size_t n = ctl_utf8_len(p + i, len - i);
            if (n == 0) {
                rc = buf_append(out, "\\ufffd", 6);
                i++;
            } else {
                rc = buf_append(out, s + i, n);
                i += n;
            }
        }
    }
    if (rc == 0)
        rc = buf_append(out, "\"", 1);
    return rc;
}

static int
ctl_json_indent(struct buf *out, int pretty, int level)
{
    int rc;

    if (!pretty)
        return 0;
    rc = buf_append(out, "\n", 1);
    for (int i = 0; rc == 0 && i < level; i++)
        rc = buf_append(out, "  ", 2);
    return rc;
}

static int
ctl_json_value(const msgpack_object *o, struct buf *out, int pretty, int level)
{
    int rc = 0;

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
    case MSGPACK_OBJECT_EXT:
        return buf_append(out, "null", 4);
    case MSGPACK_OBJECT_BOOLEAN:
        return o->via.boolean ? buf_append(out, "true", 4)
                              : buf_append(out, "false", 5);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return buf_appendf(out, "%llu", (unsigned long long)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return buf_appendf(out, "%lld", (long long)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64))
            return buf_append(out, "null", 4);
        return buf_appendf(out, "%.17g", o->via.f64);
    case MSGPACK_OBJECT_STR:
        return ctl_json_str(out, o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return ctl_json_str(out, o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY:
        if (o->via.array.size == 0)
            return buf_append(out, "[]", 2);
        rc = buf_append(out, "[", 1);
        for (uint32_t i = 0; rc == 0 && i < o->via.array.size; i++) {
            if (i > 0)
                rc = buf_append(out, ",", 1);
            if (rc == 0)
                rc = ctl_json_indent(out, pretty, level + 1);
            if (rc == 0)
                rc = ctl_json_value(&o->via.array.ptr[i], out, pretty,
                                    level + 1);
        }
        if (rc == 0)
            rc = ctl_json_indent(out, pretty, level);
        return rc == 0 ? buf_append(out, "]", 1) : rc;
    case MSGPACK_OBJECT_MAP:
        if (o->via.map.size == 0)
            return buf_append(out, "{}", 2);
        rc = buf_append(out, "{", 1);
        for (uint32_t i = 0; rc == 0 && i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (i > 0)
                rc = buf_append(out, ",", 1);
            if (rc == 0)
                rc = ctl_json_indent(out, pretty, level + 1);
            if (rc != 0)
                break;
            if (k->type == MSGPACK_OBJECT_STR) {
                rc = ctl_json_str(out, k->via.str.ptr, k->via.str.size);
            } else {
                /* JSON keys are strings: write the key's JSON text as
                   one. */
                struct buf tmp;
                buf_init(&tmp, out->max);
                rc = ctl_json_value(k, &tmp, 0, 0);
                if (rc == 0)
                    rc = ctl_json_str(out, tmp.data ? tmp.data : "", tmp.len);
                buf_cleanup(&tmp);
            }
            if (rc == 0)
                rc = buf_append(out, pretty ? ": " : ":", pretty ? 2 : 1);
            if (rc == 0)
                rc = ctl_json_value(&o->via.map.ptr[i].val, out, pretty,
                                    level + 1);
        }
        if (rc == 0)
            rc = ctl_json_indent(out, pretty, level);
        return rc == 0 ? buf_append(out, "}", 1) : rc;
    }
    return buf_append(out, "null", 4);
}

int
ctl_obj_json(const struct ctl_obj *o, struct buf *out, int pretty)
{
    int rc = ctl_json_value(o ? MO(o) : &ctl_nil_obj, out, pretty, 0);

    if (rc == 0 && pretty)
        rc = buf_append(out, "\n", 1);
    return rc;
}

/* ---- decoders ------------------------------------------------------- */

static int
ctl_check_version(const msgpack_object *root, char *err, size_t errsz)
{
    const struct ctl_obj *v;
    uint64_t n;

    if (root->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errsz, "message is not a map");
        return RM_E_PROTO;
    }
    v = ctl_obj_get(CO(root), "v");
    if (v == NULL || ctl_obj_u64(v, &n) != 0) {
        snprintf(err, errsz, "missing or non-integer \"v\"");
        return RM_E_PROTO;
    }
    if (n != CTL_PROTO_VERSION) {
        snprintf(err, errsz, "unsupported protocol version %llu (want %d)",
                 (unsigned long long)n, CTL_PROTO_VERSION);
        return RM_E_PROTO;
    }
    return 0;
}

static void
ctl_free_unpacked(void *priv)
{
    msgpack_unpacked *u = priv;

    if (u != NULL) {
        msgpack_unpacked_destroy(u);
        free(u);
    }
}

int
ctl_request_decode(struct ctl_request *req, const char *data, size_t len,
                   char *err, size_t errsz)
{
    msgpack_unpacked *u;
    const struct ctl_obj *cmd, *args;
    const char *p;
    size_t n;
    int rc;

    memset(req, 0, sizeof(*req));
    if ((rc = ctl_unpack(data, len, &u, err, errsz)) != 0)
        return rc;
    if ((rc = ctl_check_version(&u->data, err, errsz)) != 0)
        goto fail;
    rc = RM_E_PROTO;
    cmd = ctl_obj_get(CO(&u->data), "cmd");
    if (cmd == NULL || MO(cmd)->type != MSGPACK_OBJECT_STR) {
        snprintf(err, errsz, "missing or non-string \"cmd\"");
        goto fail;
    }
    ctl_obj_bytes(cmd, &p, &n);
    if (n == 0 || n >= CTL_CMD_MAX) {
        snprintf(err, errsz, "\"cmd\" is empty or too long");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-')) {
            snprintf(err, errsz,
                     "\"cmd\" has a character other than "
                     "a-z 0-9 . _ -");
            goto fail;
        }
    }
    memcpy(req->cmd, p, n);
    req->cmd[n] = '\0';
    args = ctl_obj_get(CO(&u->data), "args");
    if (args == NULL || MO(args)->type == MSGPACK_OBJECT_NIL) {
        args = CO(&ctl_empty_map);
    } else if (MO(args)->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errsz, "\"args\" is not a map");
        goto fail;
    }
    req->args = args;
    req->priv = u;
    return 0;
fail:
    ctl_free_unpacked(u);
    memset(req, 0, sizeof(*req));
    return rc;
}

void
ctl_request_cleanup(struct ctl_request *req)
{
    ctl_free_unpacked(req->priv);
    memset(req, 0, sizeof(*req));
}

int
ctl_response_decode(struct ctl_response *resp, const char *data, size_t len,
                    char *err, size_t errsz)
{
    msgpack_unpacked *u;
    const struct ctl_obj *ok, *d;
    int64_t code;
    int rc;

    memset(resp, 0, sizeof(*resp));
    if ((rc = ctl_unpack(data, len, &u, err, errsz)) != 0)
        return rc;
    if ((rc = ctl_check_version(&u->data, err, errsz)) != 0)
        goto fail;
    rc = RM_E_PROTO;
    ok = ctl_obj_get(CO(&u->data), "ok");
    if (ctl_obj_bool(ok, &resp->ok) != 0) {
        snprintf(err, errsz, "missing or non-boolean \"ok\"");
        goto fail;
    }
    if (resp->ok) {
        d = ctl_obj_get(CO(&u->data), "data");
        resp->data = d ? d : CO(&ctl_nil_obj);
    } else {
        const char *p;
        size_t n;
        if (ctl_obj_bytes(ctl_obj_get(CO(&u->data), "error"), &p, &n) != 0 ||
            MO(ctl_obj_get(CO(&u->data), "error"))->type !=
                MSGPACK_OBJECT_STR) {
            snprintf(err, errsz, "error response without \"error\" text");
            goto fail;
        }
        if (n >= sizeof(resp->error))
            n = sizeof(resp->error) - 1;
        memcpy(resp->error, p, n);
        resp->error[n] = '\0';
        /* Text from the peer ends up on a terminal: no control bytes. */
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)resp->error[i] < 0x20 || resp->error[i] == 0x7f)
                resp->error[i] = '?';
        }
        if (ctl_obj_get_i64(CO(&u->data), "code", &code) != 0 || code >= 0 ||
            code < INT32_MIN)
            code = RM_E_PROTO;
        resp->code = (int)code;
        resp->data = CO(&ctl_nil_obj);
    }
    resp->priv = u;
    return 0;
fail:
    ctl_free_unpacked(u);
    memset(resp, 0, sizeof(*resp));
    return rc;
}

void
ctl_response_cleanup(struct ctl_response *resp)
{
    ctl_free_unpacked(resp->priv);
    memset(resp, 0, sizeof(*resp));
}

/* ---- encoder -------------------------------------------------------- */

static int
ctl_enc_write(void *data, const char *p, size_t len)
{
    struct ctl_enc *e = data;
    int rc;

    if (e->err != 0)
        return -1;
    if ((rc = buf_append(&e->buf, p, len)) != 0) {
        e->err = rc;
        return -1;
    }
    return 0;
}

#define PK(e)                                                                  \
    msgpack_packer pk;                                                         \
    msgpack_packer_init(&pk, (e), ctl_enc_write)

void
ctl_enc_init(struct ctl_enc *e, int framed)
{
    static const char zero[CTL_HDR_LEN];

    buf_init(&e->buf, framed ? CTL_HDR_LEN + CTL_FRAME_MAX : CTL_FRAME_MAX);
    e->framed = framed;
    e->err = 0;
    if (framed)
        ctl_enc_write(e, zero, sizeof(zero));
}

void
ctl_enc_cleanup(struct ctl_enc *e)
{
    buf_cleanup(&e->buf);
    e->err = 0;
}

void
ctl_enc_map(struct ctl_enc *e, size_t npairs)
{
    PK(e);
    if (npairs > UINT32_MAX) {
        e->err = e->err ? e->err : RM_E_TOOBIG;
        return;
    }
    msgpack_pack_map(&pk, npairs);
}

void
ctl_enc_array(struct ctl_enc *e, size_t n)
{
    PK(e);
    if (n > UINT32_MAX) {
        e->err = e->err ? e->err : RM_E_TOOBIG;
        return;
    }
    msgpack_pack_array(&pk, n);
}

void
ctl_enc_nil(struct ctl_enc *e)
{
    PK(e);
    msgpack_pack_nil(&pk);
}

void
ctl_enc_bool(struct ctl_enc *e, int v)
{
    PK(e);
    if (v)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
}

void
ctl_enc_u64(struct ctl_enc *e, uint64_t v)
{
    PK(e);
    msgpack_pack_uint64(&pk, v);
}

void
ctl_enc_i64(struct ctl_enc *e, int64_t v)
{
    PK(e);
    msgpack_pack_int64(&pk, v);
}

void
ctl_enc_double(struct ctl_enc *e, double v)
{
    PK(e);
    msgpack_pack_double(&pk, v);
}

void
ctl_enc_strn(struct ctl_enc *e, const char *s, size_t len)
{
    PK(e);
    if (len > UINT32_MAX) {
        e->err = e->err ? e->err : RM_E_TOOBIG;
        return;
    }
    if (msgpack_pack_str(&pk, len) == 0 && len > 0)
        msgpack_pack_str_body(&pk, s, len);
}

void
ctl_enc_str(struct ctl_enc *e, const char *s)
{
    ctl_enc_strn(e, s ? s : "", s ? strlen(s) : 0);
}

void
ctl_enc_bin(struct ctl_enc *e, const void *p, size_t len)
{
    PK(e);
    if (len > UINT32_MAX) {
        e->err = e->err ? e->err : RM_E_TOOBIG;
        return;
    }
    if (msgpack_pack_bin(&pk, len) == 0 && len > 0)
        msgpack_pack_bin_body(&pk, p, len);
}

void
ctl_enc_kstr(struct ctl_enc *e, const char *key, const char *val)
{
    ctl_enc_str(e, key);
    ctl_enc_str(e, val);
}

void
ctl_enc_ku64(struct ctl_enc *e, const char *key, uint64_t val)
{
    ctl_enc_str(e, key);
    ctl_enc_u64(e, val);
}

void
ctl_enc_ki64(struct ctl_enc *e, const char *key, int64_t val)
{
    ctl_enc_str(e, key);
    ctl_enc_i64(e, val);
}

void
ctl_enc_kbool(struct ctl_enc *e, const char *key, int val)
{
    ctl_enc_str(e, key);
    ctl_enc_bool(e, val);
}

void
ctl_enc_request(struct ctl_enc *e, const char *cmd, size_t nargs)
{
    ctl_enc_map(e, 3);
    ctl_enc_ku64(e, "v", CTL_PROTO_VERSION);
    ctl_enc_kstr(e, "cmd", cmd);
    ctl_enc_str(e, "args");
    ctl_enc_map(e, nargs);
}

void
ctl_enc_ok(struct ctl_enc *e)
{
    ctl_enc_map(e, 3);
    ctl_enc_ku64(e, "v", CTL_PROTO_VERSION);
    ctl_enc_kbool(e, "ok", 1);
    ctl_enc_str(e, "data");
}

void
ctl_enc_error(struct ctl_enc *e, int code, const char *text)
{
    ctl_enc_map(e, 4);
    ctl_enc_ku64(e, "v", CTL_PROTO_VERSION);
    ctl_enc_kbool(e, "ok", 0);
    ctl_enc_kstr(e, "error", text ? text : rm_strerror(code));
    ctl_enc_ki64(e, "code", code);
}

void
ctl_enc_splice(struct ctl_enc *e, const struct ctl_enc *src, size_t n)
{
    if (src->err != 0 && e->err == 0)
        e->err = src->err;
    ctl_enc_array(e, n);
    if (src->buf.len > 0)
        ctl_enc_write(e, src->buf.data, src->buf.len);
}

void
ctl_enc_append(struct ctl_enc *e, const struct ctl_enc *src)
{
    if (src->err != 0 && e->err == 0)
        e->err = src->err;
    if (src->buf.len > 0)
        ctl_enc_write(e, src->buf.data, src->buf.len);
}

int
ctl_enc_finish(struct ctl_enc *e, const char **data, size_t *len)
{
    size_t n;

    if (e->err != 0)
        return e->err;
    if (!e->framed || e->buf.len < CTL_HDR_LEN)
        return RM_E_INVAL;
    n = e->buf.len - CTL_HDR_LEN;
    if (n > CTL_FRAME_MAX)
        return RM_E_TOOBIG;
    e->buf.data[0] = (char)(n >> 24);
    e->buf.data[1] = (char)(n >> 16);
    e->buf.data[2] = (char)(n >> 8);
    e->buf.data[3] = (char)n;
    *data = e->buf.data;
    *len = e->buf.len;
    return 0;
}
