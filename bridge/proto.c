/*
 * proto.c: the MAPI bridge's wire codec (see proto.h for the contract and
 * bridge/README.md for the message table).
 *
 * Each message kind has a pack function (struct to msgpack, checking every
 * rule as it goes) and an unpack function (msgpack_object to struct,
 * checking the same rules), side by side, so the two cannot drift apart:
 * whatever decodes re-encodes, to the same canonical bytes.
 *
 * Packing goes through a writer bounded by out->max and BPROTO_MSG_MAX; a
 * rule broken while packing marks the encoder failed (RM_E_INVAL), later
 * writes are dropped and the partial output is taken back.
 *
 * Decoded strings, bins and arrays are copied into a small arena owned by
 * the decoded struct (a chain of heap blocks), wiped and freed by
 * _cleanup(): the logon password lives there.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "bridge/proto.h"
#include "common/mpack_check.h"
#include "common/mpack_decode.h"
#include "common/rm_error.h"

static const char *const bp_op_names[] = {
    "logon",
    "logoff",
    "ping",
    "folders",
    "find",
    "read",
    "fetch_attachment",
    "fetch_body",
    "upload",
    "save",
    "delete",
    "mark",
    "send",
    "resolve",
    "changes",
};
_Static_assert(sizeof(bp_op_names) / sizeof(bp_op_names[0]) == BPROTO_OP_COUNT,
               "one name per op");

static const char *const bp_err_names[] = {
    "failure",
    "bad_request",
    "unsupported",
    "unsupported_version",
    "login_failure",
    "not_logged_in",
    "unknown_recipient",
    "ambiguous_recipient",
    "too_many_recipients",
    "no_messages",
    "invalid_message",
    "attachment_not_found",
    "folder_not_found",
    "too_big",
    "disk_full",
    "access_denied",
    "try_later",
    "resync",
};
_Static_assert(sizeof(bp_err_names) / sizeof(bp_err_names[0]) == BPROTO_E_COUNT,
               "one name per error code");

static const char *const bp_role_names[] = {
    "", "inbox", "outbox", "sent", "drafts", "deleted", "junk",
};
_Static_assert(sizeof(bp_role_names) / sizeof(bp_role_names[0]) ==
                   BPROTO_ROLE_COUNT,
               "one name per role");

static const char *const bp_change_names[] = {"new", "changed", "deleted"};
_Static_assert(sizeof(bp_change_names) / sizeof(bp_change_names[0]) ==
                   BPROTO_CHANGE_COUNT,
               "one name per change kind");

/* Enumerated strings (roles, change kinds) are at most this long. */
#define BP_ENUM_MAX 32

/* Every bound keeps its message under BPROTO_MSG_MAX (README.md works out
 * the largest read result: about 800 KiB); spot checks here. */
_Static_assert(BPROTO_INLINE_MAX + BPROTO_HEADERS_MAX +
                       BPROTO_RCPTS_MAX *
                           (BPROTO_NAME_MAX + BPROTO_ADDRESS_MAX + 32) +
                       BPROTO_ATTS_MAX *
                           (BPROTO_FILENAME_MAX + BPROTO_MIME_MAX + 48) +
                       BPROTO_SUBJECT_MAX + BPROTO_MSGID_MAX + 4096 <
                   BPROTO_MSG_MAX,
               "a read result fits one message");
_Static_assert(BPROTO_CHUNK_MAX + 1024 < BPROTO_MSG_MAX, "a chunk fits");

const char *
bproto_op_name(enum bproto_op op)
{
    if ((unsigned)op >= BPROTO_OP_COUNT)
        return NULL;
    return bp_op_names[op];
}

const char *
bproto_errcode_name(enum bproto_errcode code)
{
    if ((unsigned)code >= BPROTO_E_COUNT)
        return NULL;
    return bp_err_names[code];
}

const char *
bproto_role_name(enum bproto_role role)
{
    if ((unsigned)role >= BPROTO_ROLE_COUNT)
        return NULL;
    return bp_role_names[role];
}

const char *
bproto_change_name(enum bproto_change_kind kind)
{
    if ((unsigned)kind >= BPROTO_CHANGE_COUNT)
        return NULL;
    return bp_change_names[kind];
}

/* Index of s (len bytes) in names[0 .. n), or -1. */
static int
bp_lookup(const char *const *names, unsigned n, const char *s, size_t len)
{
    for (unsigned i = 0; i < n; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return (int)i;
    }
    return -1;
}

int
bproto_op_parse(const char *s, size_t len, enum bproto_op *out)
{
    int i;

    if (s == NULL || out == NULL)
        return RM_E_NOTFOUND;
    i = bp_lookup(bp_op_names, BPROTO_OP_COUNT, s, len);
    if (i < 0)
        return RM_E_NOTFOUND;
    *out = (enum bproto_op)i;
    return 0;
}

int
bproto_text_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    if (s == NULL)
        return len == 0;
    while (i < len) {
        unsigned c = p[i];
        uint32_t cp, min;
        size_t n;

        if (c >= 0x01 && c <= 0x7f) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return 0; /* NUL, a continuation byte, 0xc0/0xc1, > 0xf4 */
        }
        if (len - i - 1 < n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            unsigned b = p[i + k];

            if ((b & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (b & 0x3f);
        }
        /* Overlong forms, UTF-16 surrogates, past U+10FFFF (RFC 3629 3). */
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* ---- arena -------------------------------------------------------------- */

#define BP_BLOCK 4096

struct bproto_mem {
    struct bproto_mem *next;
    size_t cap, used;
    max_align_t data[]; /* cap bytes */
};

static void
bp_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;

    while (n-- > 0)
        *v++ = 0;
}

static void
bp_mem_free(struct bproto_mem *m)
{
    while (m != NULL) {
        struct bproto_mem *next = m->next;

        bp_wipe(m->data, m->used);
        free(m);
        m = next;
    }
}

/* n bytes, aligned for any type, zeroed; NULL when out of memory. */
static void *
bp_alloc(struct bproto_mem **m, size_t n)
{
    const size_t align = _Alignof(max_align_t);
    struct bproto_mem *b;
    size_t cap;
    void *p;

    if (n > BPROTO_MSG_MAX * (size_t)4)
        return NULL; /* never asked for: every input is bounded */
    n = (n + align - 1) / align * align;
    if (n == 0)
        n = align;
    if (*m != NULL && (*m)->cap - (*m)->used >= n) {
        p = (char *)(*m)->data + (*m)->used;
        (*m)->used += n;
        memset(p, 0, n);
        return p;
    }
    cap = n > BP_BLOCK ? n : BP_BLOCK;
    b = malloc(sizeof(*b) + cap);
    if (b == NULL)
        return NULL;
    b->cap = cap;
    b->used = n;
    if (*m != NULL && n > BP_BLOCK) {
        /* A large piece gets a block of its own; the current block stays
         * in front for the small ones that follow. */
        b->next = (*m)->next;
        (*m)->next = b;
    } else {
        b->next = *m;
        *m = b;
    }
    memset(b->data, 0, n);
    return b->data;
}

/* ---- encoding ----------------------------------------------------------- */

struct bp_enc {
    struct buf *b;
    size_t start;
    int err; /* first error: RM_E_INVAL, RM_E_TOOBIG, -ENOMEM */
    msgpack_packer pk;
};

static int
bp_write(void *data, const char *s, size_t n)
{
    struct bp_enc *e = data;
    int r;

    if (e->err != 0)
        return -1;
    if (n > BPROTO_MSG_MAX - (e->b->len - e->start)) {
        e->err = RM_E_TOOBIG;
        return -1;
    }
    r = buf_append(e->b, s, n);
    if (r != 0) {
        e->err = r;
        return -1;
    }
    return 0;
}

static void
bp_enc_init(struct bp_enc *e, struct buf *out)
{
    e->b = out;
    e->start = out->len;
    e->err = 0;
    msgpack_packer_init(&e->pk, e, bp_write);
}

/* Finish: on error take back what was appended. */
static int
bp_enc_end(struct bp_enc *e)
{
    if (e->err != 0) {
        e->b->len = e->start;
        if (e->b->data != NULL)
            e->b->data[e->start] = '\0';
    }
    return e->err;
}

static void
bp_bad(struct bp_enc *e)
{
    if (e->err == 0)
        e->err = RM_E_INVAL;
}

/* strlen, looking at no more than max bytes. */
static size_t
bp_strnlen(const char *s, size_t max)
{
    size_t n = 0;

    while (n < max && s[n] != '\0')
        n++;
    return n;
}

static void
e_map(struct bp_enc *e, size_t n)
{
    msgpack_pack_map(&e->pk, n);
}

static void
e_arr(struct bp_enc *e, size_t n)
{
    msgpack_pack_array(&e->pk, n);
}

static void
e_key(struct bp_enc *e, const char *k)
{
    if (k != NULL)
        msgpack_pack_str_with_body(&e->pk, k, strlen(k));
}

/* Text: NULL is "", min .. max bytes of UTF-8 without NUL. */
static void
e_str(struct bp_enc *e, const char *k, const char *s, size_t min, size_t max)
{
    size_t n;

    if (s == NULL)
        s = "";
    n = bp_strnlen(s, max + 1);
    if (n < min || n > max || !bproto_text_valid(s, n)) {
        bp_bad(e);
        return;
    }
    e_key(e, k);
    msgpack_pack_str_with_body(&e->pk, s, n);
}

static void
e_u64(struct bp_enc *e, const char *k, uint64_t v, uint64_t min, uint64_t max)
{
    if (v < min || v > max) {
        bp_bad(e);
        return;
    }
    e_key(e, k);
    msgpack_pack_uint64(&e->pk, v);
}

static void
e_i64(struct bp_enc *e, const char *k, int64_t v)
{
    e_key(e, k);
    msgpack_pack_int64(&e->pk, v);
}

static void
e_bool(struct bp_enc *e, const char *k, int v)
{
    e_key(e, k);
    if (v)
        msgpack_pack_true(&e->pk);
    else
        msgpack_pack_false(&e->pk);
}

static void
e_bin(struct bp_enc *e, const char *k, const uint8_t *p, size_t len, size_t max)
{
    if (len > max || (p == NULL && len != 0)) {
        bp_bad(e);
        return;
    }
    e_key(e, k);
    msgpack_pack_bin_with_body(&e->pk, p, len);
}

static void
e_addr(struct bp_enc *e, const char *k, const struct bproto_addr *a)
{
    e_key(e, k);
    e_map(e, 2);
    e_str(e, "name", a->name, 0, BPROTO_NAME_MAX);
    e_str(e, "address", a->address, 0, BPROTO_ADDRESS_MAX);
}

static void
e_addrs(struct bp_enc *e, const char *k, unsigned n,
        const struct bproto_addr *a)
{
    if (n > 0 && a == NULL) {
        bp_bad(e);
        return;
    }
    e_key(e, k);
    e_arr(e, n);
    for (unsigned i = 0; i < n && e->err == 0; i++)
        e_addr(e, NULL, &a[i]);
}

/* ---- decoding ----------------------------------------------------------- */

struct bp_dec {
    struct bproto_mem *mem;
    char *why;        /* BPROTO_WHY_MAX bytes */
    const char *path; /* "a", "r", "err" or the list being read */
};

static int
bp_fail(struct bp_dec *d, const char *key, const char *what)
{
    if (d->why[0] == '\0')
        snprintf(d->why, BPROTO_WHY_MAX, "%s.%s: %s", d->path, key, what);
    return RM_E_PROTO;
}

static int
bp_nomem(struct bp_dec *d)
{
    if (d->why[0] == '\0')
        snprintf(d->why, BPROTO_WHY_MAX, "out of memory");
    return -ENOMEM;
}

struct bp_key {
    const char *name;
    int required;
};

/*
 * o must be a map with string keys; vals[i] gets the value of keys[i], or
 * NULL when it is absent or nil (then a required key is refused). Keys not
 * listed are skipped; a listed key given twice is refused.
 */
static int
bp_fields(struct bp_dec *d, const char *what, const msgpack_object *o,
          const struct bp_key *keys, unsigned n, const msgpack_object **vals)
{
    uint32_t seen = 0;

    if (o == NULL || o->type != MSGPACK_OBJECT_MAP)
        return bp_fail(d, what, "not a map");
    for (unsigned j = 0; j < n; j++)
        vals[j] = NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (k->type != MSGPACK_OBJECT_STR)
            return bp_fail(d, what, "key is not a string");
        for (unsigned j = 0; j < n; j++) {
            if (strlen(keys[j].name) != k->via.str.size ||
                memcmp(keys[j].name, k->via.str.ptr, k->via.str.size) != 0)
                continue;
            if (seen & (UINT32_C(1) << j))
                return bp_fail(d, keys[j].name, "given twice");
            seen |= UINT32_C(1) << j;
            if (v->type != MSGPACK_OBJECT_NIL)
                vals[j] = v;
            break;
        }
    }
    for (unsigned j = 0; j < n; j++) {
        if (keys[j].required && vals[j] == NULL)
            return bp_fail(d, keys[j].name, "missing");
    }
    return 0;
}

static int
d_u64(struct bp_dec *d, const char *k, const msgpack_object *v, uint64_t min,
      uint64_t max, uint64_t *out)
{
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return bp_fail(d, k, "not an unsigned integer");
    if (v->via.u64 < min || v->via.u64 > max)
        return bp_fail(d, k, "out of range");
    *out = v->via.u64;
    return 0;
}

static int
d_u32(struct bp_dec *d, const char *k, const msgpack_object *v, uint32_t min,
      uint32_t max, uint32_t *out)
{
    uint64_t u;
    int r = d_u64(d, k, v, min, max, &u);

    if (r == 0)
        *out = (uint32_t)u;
    return r;
}

static int
d_i64(struct bp_dec *d, const char *k, const msgpack_object *v, int64_t *out)
{
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        v->via.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)v->via.u64;
        return 0;
    }
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = v->via.i64;
        return 0;
    }
    return bp_fail(d, k, "not an integer");
}

static int
d_bool(struct bp_dec *d, const char *k, const msgpack_object *v, int *out)
{
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return bp_fail(d, k, "not a boolean");
    *out = v->via.boolean ? 1 : 0;
    return 0;
}

/* Text under the rules, copied (NUL-terminated) into the arena. */
static int
d_str(struct bp_dec *d, const char *k, const msgpack_object *v, size_t min,
      size_t max, const char **out)
{
    char *s;

    if (v->type != MSGPACK_OBJECT_STR)
        return bp_fail(d, k, "not a string");
    if (v->via.str.size < min)
        return bp_fail(d, k, "empty");
    if (v->via.str.size > max)
        return bp_fail(d, k, "too long");
    if (!bproto_text_valid(v->via.str.ptr, v->via.str.size))
        return bp_fail(d, k, "not UTF-8 text");
    s = bp_alloc(&d->mem, (size_t)v->via.str.size + 1);
    if (s == NULL)
        return bp_nomem(d);
    if (v->via.str.size > 0)
        memcpy(s, v->via.str.ptr, v->via.str.size);
    s[v->via.str.size] = '\0';
    *out = s;
    return 0;
}

/* Optional text: absent stays absent (NULL). */
static int
d_str_opt(struct bp_dec *d, const char *k, const msgpack_object *v, size_t max,
          const char **out)
{
    *out = NULL;
    return v == NULL ? 0 : d_str(d, k, v, 0, max, out);
}

/* Text with a default of "" when absent. */
static int
d_str_def(struct bp_dec *d, const char *k, const msgpack_object *v, size_t max,
          const char **out)
{
    *out = "";
    return v == NULL ? 0 : d_str(d, k, v, 0, max, out);
}

static int
d_bin(struct bp_dec *d, const char *k, const msgpack_object *v, size_t max,
      const uint8_t **p, size_t *len)
{
    uint8_t *b;

    if (v->type != MSGPACK_OBJECT_BIN)
        return bp_fail(d, k, "not binary");
    if (v->via.bin.size > max)
        return bp_fail(d, k, "too long");
    *p = NULL;
    *len = 0;
    if (v->via.bin.size == 0)
        return 0;
    b = bp_alloc(&d->mem, v->via.bin.size);
    if (b == NULL)
        return bp_nomem(d);
    memcpy(b, v->via.bin.ptr, v->via.bin.size);
    *p = b;
    *len = v->via.bin.size;
    return 0;
}

/* A list of at most max elements of elsize bytes each: *elems zeroed in
 * the arena (NULL when empty); v NULL (absent) is empty. */
static int
d_list(struct bp_dec *d, const char *k, const msgpack_object *v, size_t max,
       size_t elsize, void **elems, unsigned *n)
{
    *elems = NULL;
    *n = 0;
    if (v == NULL)
        return 0;
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return bp_fail(d, k, "not a list");
    if (v->via.array.size > max)
        return bp_fail(d, k, "too many elements");
    if (v->via.array.size == 0)
        return 0;
    *elems = bp_alloc(&d->mem, v->via.array.size * elsize);
    if (*elems == NULL)
        return bp_nomem(d);
    *n = v->via.array.size;
    return 0;
}

static const struct bp_key bp_addr_keys[] = {{"name", 1}, {"address", 1}};

static int
d_addr(struct bp_dec *d, const char *k, const msgpack_object *v,
       struct bproto_addr *a)
{
    const msgpack_object *f[2];
    int r;

    if ((r = bp_fields(d, k, v, bp_addr_keys, 2, f)) != 0 ||
        (r = d_str(d, "name", f[0], 0, BPROTO_NAME_MAX, &a->name)) != 0 ||
        (r = d_str(d, "address", f[1], 0, BPROTO_ADDRESS_MAX, &a->address)) !=
            0)
        return r;
    return 0;
}

static int
d_addrs(struct bp_dec *d, const char *k, const msgpack_object *v, size_t max,
        const struct bproto_addr **out, unsigned *n)
{
    struct bproto_addr *a;
    int r;

    if ((r = d_list(d, k, v, max, sizeof(*a), (void **)&a, n)) != 0)
        return r;
    for (unsigned i = 0; i < *n; i++) {
        if ((r = d_addr(d, k, &v->via.array.ptr[i], &a[i])) != 0)
            return r;
    }
    *out = a;
    return 0;
}

/* Check, unpack into a private zone, hand the value to fn. */
static int
bp_unpack(const void *p, size_t len, char *why,
          int (*fn)(const msgpack_object *, void *), void *arg)
{
    if (p == NULL && len != 0)
        return RM_E_INVAL;
    if (len > BPROTO_MSG_MAX) {
        snprintf(why, BPROTO_WHY_MAX, "message too long");
        return RM_E_TOOBIG;
    }
    return mpack_decode(p, len, fn, arg, why, BPROTO_WHY_MAX);
}

/* ---- the message to send or save ---------------------------------------- */

static void
e_compose(struct bp_enc *e, const struct bproto_compose *m, size_t extra)
{
    size_t inl = 0, n;

    if (m->n_to > BPROTO_RCPTS_MAX || m->n_cc > BPROTO_RCPTS_MAX ||
        m->n_bcc > BPROTO_RCPTS_MAX ||
        (size_t)m->n_to + m->n_cc + m->n_bcc > BPROTO_RCPTS_MAX ||
        m->n_atts > BPROTO_ATTS_MAX || (m->n_atts > 0 && m->atts == NULL) ||
        (m->body != NULL && m->body_upload != 0)) {
        bp_bad(e);
        return;
    }
    if (m->body != NULL)
        inl = bp_strnlen(m->body, BPROTO_INLINE_MAX + 1);
    for (unsigned i = 0; i < m->n_atts; i++) {
        if (m->atts[i].upload == 0)
            inl += m->atts[i].len > BPROTO_INLINE_MAX ? BPROTO_INLINE_MAX + 1
                                                      : m->atts[i].len;
    }
    if (inl > BPROTO_INLINE_MAX) {
        bp_bad(e);
        return;
    }
    n = extra + 6 + (m->from != NULL) + (m->body != NULL) +
        (m->body_upload != 0);
    e_map(e, n);
    if (m->from != NULL)
        e_addr(e, "from", m->from);
    e_addrs(e, "to", m->n_to, m->to);
    e_addrs(e, "cc", m->n_cc, m->cc);
    e_addrs(e, "bcc", m->n_bcc, m->bcc);
    e_str(e, "subject", m->subject, 0, BPROTO_SUBJECT_MAX);
    if (m->body != NULL)
        e_str(e, "body", m->body, 0, BPROTO_INLINE_MAX);
    if (m->body_upload != 0)
        e_u64(e, "body_upload", m->body_upload, 1, UINT64_MAX);
    e_key(e, "attachments");
    e_arr(e, m->n_atts);
    for (unsigned i = 0; i < m->n_atts && e->err == 0; i++) {
        const struct bproto_att_in *a = &m->atts[i];

        e_map(e, 3);
        e_str(e, "name", a->name, 0, BPROTO_FILENAME_MAX);
        e_str(e, "type", a->type, 0, BPROTO_MIME_MAX);
        if (a->upload != 0) {
            if (a->data != NULL || a->len != 0)
                bp_bad(e);
            e_u64(e, "upload", a->upload, 1, UINT64_MAX);
        } else {
            e_bin(e, "data", a->data, a->len, BPROTO_INLINE_MAX);
        }
    }
    e_u64(e, "flags", m->flags, 0, BPROTO_COUNT_MAX);
    /* The caller writes its extra keys after these. */
}

static const struct bp_key bp_compose_keys[] = {
    {"from", 0},        {"to", 0},          {"cc", 0},
    {"bcc", 0},         {"subject", 0},     {"body", 0},
    {"body_upload", 0}, {"attachments", 0}, {"flags", 0},
};

static const struct bp_key bp_att_in_keys[] = {
    {"name", 1}, {"type", 1}, {"data", 0}, {"upload", 0}};

static int
d_compose(struct bp_dec *d, const msgpack_object *o, struct bproto_compose *m)
{
    const msgpack_object *f[9];
    struct bproto_att_in *atts;
    size_t inl = 0;
    int r;

    if ((r = bp_fields(d, d->path, o, bp_compose_keys, 9, f)) != 0)
        return r;
    if (f[0] != NULL) {
        struct bproto_addr *from = bp_alloc(&d->mem, sizeof(*from));

        if (from == NULL)
            return bp_nomem(d);
        if ((r = d_addr(d, "from", f[0], from)) != 0)
            return r;
        m->from = from;
    }
    if ((r = d_addrs(d, "to", f[1], BPROTO_RCPTS_MAX, &m->to, &m->n_to)) != 0 ||
        (r = d_addrs(d, "cc", f[2], BPROTO_RCPTS_MAX, &m->cc, &m->n_cc)) != 0 ||
        (r = d_addrs(d, "bcc", f[3], BPROTO_RCPTS_MAX, &m->bcc, &m->n_bcc)) !=
            0)
        return r;
    if ((size_t)m->n_to + m->n_cc + m->n_bcc > BPROTO_RCPTS_MAX)
        return bp_fail(d, "to", "too many recipients");
    if ((r = d_str_def(d, "subject", f[4], BPROTO_SUBJECT_MAX, &m->subject)) !=
            0 ||
        (r = d_str_opt(d, "body", f[5], BPROTO_INLINE_MAX, &m->body)) != 0)
        return r;
    if (m->body != NULL)
        inl = strlen(m->body);
    if (f[6] != NULL) {
        if (m->body != NULL)
            return bp_fail(d, "body_upload", "given with body");
        if ((r = d_u64(d, "body_upload", f[6], 1, UINT64_MAX,
                       &m->body_upload)) != 0)
            return r;
    }
    if ((r = d_list(d, "attachments", f[7], BPROTO_ATTS_MAX, sizeof(*atts),
                    (void **)&atts, &m->n_atts)) != 0)
        return r;
    for (unsigned i = 0; i < m->n_atts; i++) {
        const msgpack_object *g[4];
        struct bproto_att_in *a = &atts[i];

        if ((r = bp_fields(d, "attachments", &f[7]->via.array.ptr[i],
                           bp_att_in_keys, 4, g)) != 0 ||
            (r = d_str(d, "name", g[0], 0, BPROTO_FILENAME_MAX, &a->name)) !=
                0 ||
            (r = d_str(d, "type", g[1], 0, BPROTO_MIME_MAX, &a->type)) != 0)
            return r;
        if ((g[2] == NULL) == (g[3] == NULL))
            return bp_fail(d, "attachments", "need data or upload, not both");
        if (g[2] != NULL) {
            if ((r = d_bin(d, "data", g[2], BPROTO_INLINE_MAX, &a->data,
                           &a->len)) != 0)
                return r;
            inl += a->len;
            if (inl > BPROTO_INLINE_MAX)
                return bp_fail(d, "attachments", "too much inline data");
        } else if ((r = d_u64(d, "upload", g[3], 1, UINT64_MAX, &a->upload)) !=
                   0) {
            return r;
        }
    }
    m->atts = atts;
    if (f[8] != NULL) {
        if ((r = d_u32(d, "flags", f[8], 0, BPROTO_COUNT_MAX, &m->flags)) != 0)
            return r;
    }
    return 0;
}

/* ---- requests ----------------------------------------------------------- */

static void
e_req_args(struct bp_enc *e, const struct bproto_req *q)
{
    switch (q->op) {
    case BPROTO_OP_LOGON: {
        const struct bproto_logon_args *a = &q->a.logon;

        e_map(e, 3 + (a->client != NULL));
        e_u64(e, "v", a->version, 1, UINT32_MAX);
        e_str(e, "user", a->user, 1, BPROTO_ADDRESS_MAX);
        e_str(e, "password", a->password, 0, BPROTO_PASSWORD_MAX);
        if (a->client != NULL)
            e_str(e, "client", a->client, 0, BPROTO_CLIENT_MAX);
        break;
    }
    case BPROTO_OP_LOGOFF:
    case BPROTO_OP_PING:
    case BPROTO_OP_FOLDERS:
        e_map(e, 0);
        break;
    case BPROTO_OP_FIND: {
        const struct bproto_find_args *a = &q->a.find;

        e_map(e, 3 + (a->after != 0));
        e_str(e, "folder", a->folder, 1, BPROTO_FOLDER_ID_MAX);
        if (a->after != 0)
            e_u64(e, "after", a->after, 1, UINT64_MAX);
        e_bool(e, "unread_only", a->unread_only);
        e_u64(e, "limit", a->limit, 1, BPROTO_FIND_MAX);
        break;
    }
    case BPROTO_OP_READ: {
        const struct bproto_read_args *a = &q->a.read;

        e_map(e, 6);
        e_str(e, "folder", a->folder, 1, BPROTO_FOLDER_ID_MAX);
        e_u64(e, "id", a->id, 1, UINT64_MAX);
        e_bool(e, "peek", a->peek);
        e_bool(e, "envelope_only", a->envelope_only);
        e_bool(e, "body", a->body);
        e_bool(e, "headers", a->headers);
        break;
    }
    case BPROTO_OP_FETCH_ATTACHMENT:
    case BPROTO_OP_FETCH_BODY: {
        const struct bproto_fetch_args *a = &q->a.fetch;
        int att = q->op == BPROTO_OP_FETCH_ATTACHMENT;

        e_map(e, 4 + att);
        e_str(e, "folder", a->folder, 1, BPROTO_FOLDER_ID_MAX);
        e_u64(e, "id", a->id, 1, UINT64_MAX);
        if (att)
            e_u64(e, "index", a->index, 0, UINT32_MAX);
        e_u64(e, "offset", a->offset, 0, BPROTO_MESSAGE_MAX);
        e_u64(e, "max", a->max, 1, BPROTO_CHUNK_MAX);
        break;
    }
    case BPROTO_OP_UPLOAD: {
        const struct bproto_upload_args *a = &q->a.upload;

        e_map(e, 3);
        e_u64(e, "upload", a->upload, 0, UINT64_MAX);
        e_u64(e, "offset", a->offset, 0, BPROTO_MESSAGE_MAX);
        e_bin(e, "data", a->data, a->len, BPROTO_CHUNK_MAX);
        break;
    }
    case BPROTO_OP_SAVE: {
        const struct bproto_save_args *a = &q->a.save;

        e_compose(e, &a->m, 1 + (a->id != 0));
        e_str(e, "folder", a->folder, 1, BPROTO_FOLDER_ID_MAX);
        if (a->id != 0)
            e_u64(e, "id", a->id, 1, UINT64_MAX);
        break;
    }
    case BPROTO_OP_DELETE:
        e_map(e, 2);
        e_str(e, "folder", q->a.del.folder, 1, BPROTO_FOLDER_ID_MAX);
        e_u64(e, "id", q->a.del.id, 1, UINT64_MAX);
        break;
    case BPROTO_OP_MARK:
        e_map(e, 3);
        e_str(e, "folder", q->a.mark.folder, 1, BPROTO_FOLDER_ID_MAX);
        e_u64(e, "id", q->a.mark.id, 1, UINT64_MAX);
        e_bool(e, "read", q->a.mark.read);
        break;
    case BPROTO_OP_SEND:
        e_compose(e, &q->a.send, 0);
        break;
    case BPROTO_OP_RESOLVE:
        e_map(e, 2);
        e_str(e, "name", q->a.resolve.name, 1, BPROTO_NAME_MAX);
        e_bool(e, "partial", q->a.resolve.partial);
        break;
    case BPROTO_OP_CHANGES:
        e_map(e, 3);
        e_str(e, "folder", q->a.changes.folder, 1, BPROTO_FOLDER_ID_MAX);
        e_u64(e, "since", q->a.changes.since, 0, UINT64_MAX);
        e_u64(e, "limit", q->a.changes.limit, 1, BPROTO_CHANGES_MAX);
        break;
    case BPROTO_OP_COUNT:
    default:
        bp_bad(e);
        break;
    }
}

int
bproto_req_encode(struct buf *out, const struct bproto_req *q)
{
    struct bp_enc e;
    const char *op;

    if (out == NULL || q == NULL || (op = bproto_op_name(q->op)) == NULL)
        return RM_E_INVAL;
    bp_enc_init(&e, out);
    e_map(&e, 3);
    e_u64(&e, "id", q->id, 0, UINT64_MAX);
    e_str(&e, "op", op, 1, BPROTO_OP_MAX);
    e_key(&e, "a");
    e_req_args(&e, q);
    return bp_enc_end(&e);
}

static const struct bp_key bp_logon_keys[] = {
    {"v", 1}, {"user", 1}, {"password", 1}, {"client", 0}};
static const struct bp_key bp_find_keys[] = {
    {"folder", 1}, {"after", 0}, {"unread_only", 0}, {"limit", 1}};
static const struct bp_key bp_read_keys[] = {
    {"folder", 1},        {"id", 1},   {"peek", 0},
    {"envelope_only", 0}, {"body", 0}, {"headers", 0}};
static const struct bp_key bp_fetch_keys[] = {
    {"folder", 1}, {"id", 1}, {"offset", 1}, {"max", 1}, {"index", 1}};
static const struct bp_key bp_upload_keys[] = {
    {"upload", 0}, {"offset", 1}, {"data", 1}};
static const struct bp_key bp_ref_keys[] = {
    {"folder", 1}, {"id", 0}, {"read", 1}};
static const struct bp_key bp_resolve_keys[] = {{"name", 1}, {"partial", 0}};
static const struct bp_key bp_changes_keys[] = {
    {"folder", 1}, {"since", 1}, {"limit", 1}};

/* folder and a required id (>= 1). */
static int
d_folder_id(struct bp_dec *d, const msgpack_object *fv,
            const msgpack_object *iv, const char **folder, uint64_t *id)
{
    int r;

    if ((r = d_str(d, "folder", fv, 1, BPROTO_FOLDER_ID_MAX, folder)) != 0)
        return r;
    if (iv == NULL)
        return bp_fail(d, "id", "missing");
    return d_u64(d, "id", iv, 1, UINT64_MAX, id);
}

static int
d_req_args(struct bp_dec *d, const msgpack_object *o, struct bproto_req *q)
{
    const msgpack_object *f[6];
    int r;

    switch (q->op) {
    case BPROTO_OP_LOGON: {
        struct bproto_logon_args *a = &q->a.logon;

        if ((r = bp_fields(d, "a", o, bp_logon_keys, 4, f)) != 0 ||
            (r = d_u32(d, "v", f[0], 1, UINT32_MAX, &a->version)) != 0 ||
            (r = d_str(d, "user", f[1], 1, BPROTO_ADDRESS_MAX, &a->user)) !=
                0 ||
            (r = d_str(d, "password", f[2], 0, BPROTO_PASSWORD_MAX,
                       &a->password)) != 0 ||
            (r = d_str_opt(d, "client", f[3], BPROTO_CLIENT_MAX, &a->client)) !=
                0)
            return r;
        return 0;
    }
    case BPROTO_OP_LOGOFF:
    case BPROTO_OP_PING:
    case BPROTO_OP_FOLDERS:
        return bp_fields(d, "a", o, NULL, 0, f);
    case BPROTO_OP_FIND: {
        struct bproto_find_args *a = &q->a.find;

        if ((r = bp_fields(d, "a", o, bp_find_keys, 4, f)) != 0 ||
            (r = d_str(d, "folder", f[0], 1, BPROTO_FOLDER_ID_MAX,
                       &a->folder)) != 0 ||
            (f[1] != NULL &&
             (r = d_u64(d, "after", f[1], 1, UINT64_MAX, &a->after)) != 0) ||
            (f[2] != NULL &&
             (r = d_bool(d, "unread_only", f[2], &a->unread_only)) != 0) ||
            (r = d_u32(d, "limit", f[3], 1, BPROTO_FIND_MAX, &a->limit)) != 0)
            return r;
        return 0;
    }
    case BPROTO_OP_READ: {
        struct bproto_read_args *a = &q->a.read;

        a->body = 1;
        if ((r = bp_fields(d, "a", o, bp_read_keys, 6, f)) != 0 ||
            (r = d_folder_id(d, f[0], f[1], &a->folder, &a->id)) != 0 ||
            (f[2] != NULL && (r = d_bool(d, "peek", f[2], &a->peek)) != 0) ||
            (f[3] != NULL &&
             (r = d_bool(d, "envelope_only", f[3], &a->envelope_only)) != 0) ||
            (f[4] != NULL && (r = d_bool(d, "body", f[4], &a->body)) != 0) ||
            (f[5] != NULL &&
             (r = d_bool(d, "headers", f[5], &a->headers)) != 0))
            return r;
        return 0;
    }
    case BPROTO_OP_FETCH_ATTACHMENT:
    case BPROTO_OP_FETCH_BODY: {
        struct bproto_fetch_args *a = &q->a.fetch;
        /* fetch_body has no index: ask for one key fewer. */
        unsigned nk = q->op == BPROTO_OP_FETCH_ATTACHMENT ? 5 : 4;

        if ((r = bp_fields(d, "a", o, bp_fetch_keys, nk, f)) != 0 ||
            (r = d_folder_id(d, f[0], f[1], &a->folder, &a->id)) != 0 ||
            (r = d_u64(d, "offset", f[2], 0, BPROTO_MESSAGE_MAX, &a->offset)) !=
                0 ||
            (r = d_u32(d, "max", f[3], 1, BPROTO_CHUNK_MAX, &a->max)) != 0 ||
            (nk == 5 &&
             (r = d_u32(d, "index", f[4], 0, UINT32_MAX, &a->index)) != 0))
            return r;
        return 0;
    }
    case BPROTO_OP_UPLOAD: {
        struct bproto_upload_args *a = &q->a.upload;

        if ((r = bp_fields(d, "a", o, bp_upload_keys, 3, f)) != 0 ||
            (f[0] != NULL &&
             (r = d_u64(d, "upload", f[0], 0, UINT64_MAX, &a->upload)) != 0) ||
            (r = d_u64(d, "offset", f[1], 0, BPROTO_MESSAGE_MAX, &a->offset)) !=
                0 ||
            (r = d_bin(d, "data", f[2], BPROTO_CHUNK_MAX, &a->data, &a->len)) !=
                0)
            return r;
        return 0;
    }
    case BPROTO_OP_SAVE: {
        struct bproto_save_args *a = &q->a.save;

        if ((r = bp_fields(d, "a", o, bp_ref_keys, 2, f)) != 0 ||
            (r = d_str(d, "folder", f[0], 1, BPROTO_FOLDER_ID_MAX,
                       &a->folder)) != 0 ||
            (f[1] != NULL &&
             (r = d_u64(d, "id", f[1], 1, UINT64_MAX, &a->id)) != 0))
            return r;
        return d_compose(d, o, &a->m);
    }
    case BPROTO_OP_DELETE:
        if ((r = bp_fields(d, "a", o, bp_ref_keys, 2, f)) != 0)
            return r;
        return d_folder_id(d, f[0], f[1], &q->a.del.folder, &q->a.del.id);
    case BPROTO_OP_MARK:
        if ((r = bp_fields(d, "a", o, bp_ref_keys, 3, f)) != 0 ||
            (r = d_folder_id(d, f[0], f[1], &q->a.mark.folder,
                             &q->a.mark.id)) != 0)
            return r;
        return d_bool(d, "read", f[2], &q->a.mark.read);
    case BPROTO_OP_SEND:
        return d_compose(d, o, &q->a.send);
    case BPROTO_OP_RESOLVE:
        if ((r = bp_fields(d, "a", o, bp_resolve_keys, 2, f)) != 0 ||
            (r = d_str(d, "name", f[0], 1, BPROTO_NAME_MAX,
                       &q->a.resolve.name)) != 0 ||
            (f[1] != NULL &&
             (r = d_bool(d, "partial", f[1], &q->a.resolve.partial)) != 0))
            return r;
        return 0;
    case BPROTO_OP_CHANGES:
        if ((r = bp_fields(d, "a", o, bp_changes_keys, 3, f)) != 0 ||
            (r = d_str(d, "folder", f[0], 1, BPROTO_FOLDER_ID_MAX,
                       &q->a.changes.folder)) != 0 ||
            (r = d_u64(d, "since", f[1], 0, UINT64_MAX, &q->a.changes.since)) !=
                0 ||
            (r = d_u32(d, "limit", f[2], 1, BPROTO_CHANGES_MAX,
                       &q->a.changes.limit)) != 0)
            return r;
        return 0;
    case BPROTO_OP_COUNT:
    default:
        return bp_fail(d, "op", "unknown");
    }
}

static const struct bp_key bp_req_keys[] = {{"id", 0}, {"op", 0}, {"a", 0}};

int
bproto_req_decode_obj(const msgpack_object *o, struct bproto_req *out)
{
    struct bp_dec d;
    const msgpack_object *f[3];
    int r;

    if (out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    if (o == NULL)
        return RM_E_INVAL;
    d.mem = NULL;
    d.why = out->why;
    d.path = "request";
    /* The envelope first, leniently, to learn the id even when the rest
     * is wrong: the node answers such a request by its id. */
    if ((r = bp_fields(&d, "request", o, bp_req_keys, 3, f)) != 0)
        return r;
    if (f[0] != NULL && d_u64(&d, "id", f[0], 0, UINT64_MAX, &out->id) != 0)
        return RM_E_PROTO;
    if (f[0] == NULL)
        return bp_fail(&d, "id", "missing");
    out->has_id = 1;
    if (f[1] == NULL)
        return bp_fail(&d, "op", "missing");
    if (f[1]->type != MSGPACK_OBJECT_STR || f[1]->via.str.size > BPROTO_OP_MAX)
        return bp_fail(&d, "op", "not an op name");
    if (f[2] == NULL)
        return bp_fail(&d, "a", "missing");
    if (f[2]->type != MSGPACK_OBJECT_MAP)
        return bp_fail(&d, "a", "not a map");
    if (bproto_op_parse(f[1]->via.str.ptr, f[1]->via.str.size, &out->op) != 0) {
        bp_fail(&d, "op", "unknown");
        return RM_E_NOTFOUND;
    }
    d.path = "a";
    r = d_req_args(&d, f[2], out);
    if (r != 0) {
        bp_mem_free(d.mem);
        memset(&out->a, 0, sizeof(out->a));
        return r;
    }
    out->mem = d.mem;
    return 0;
}

static int
bp_req_fn(const msgpack_object *o, void *arg)
{
    return bproto_req_decode_obj(o, arg);
}

int
bproto_req_decode(const void *p, size_t len, struct bproto_req *out)
{
    if (out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    return bp_unpack(p, len, out->why, bp_req_fn, out);
}

void
bproto_req_cleanup(struct bproto_req *q)
{
    if (q == NULL)
        return;
    bp_mem_free(q->mem);
    q->mem = NULL;
    memset(&q->a, 0, sizeof(q->a));
}

/* ---- responses ---------------------------------------------------------- */

static void
e_folders(struct bp_enc *e, const char *k, unsigned n,
          const struct bproto_folder *fo)
{
    if (n > BPROTO_FOLDERS_MAX || (n > 0 && fo == NULL)) {
        bp_bad(e);
        return;
    }
    e_key(e, k);
    e_arr(e, n);
    for (unsigned i = 0; i < n && e->err == 0; i++) {
        const char *role = bproto_role_name(fo[i].role);

        if (role == NULL || fo[i].unread > fo[i].total) {
            bp_bad(e);
            return;
        }
        e_map(e, 6);
        e_str(e, "id", fo[i].id, 1, BPROTO_FOLDER_ID_MAX);
        e_str(e, "name", fo[i].name, 0, BPROTO_FOLDER_NAME_MAX);
        e_str(e, "role", role, 0, BP_ENUM_MAX);
        e_u64(e, "total", fo[i].total, 0, BPROTO_COUNT_MAX);
        e_u64(e, "unread", fo[i].unread, 0, BPROTO_COUNT_MAX);
        e_u64(e, "change", fo[i].change, 0, UINT64_MAX);
    }
}

static const struct bp_key bp_folder_keys[] = {{"id", 1},     {"name", 1},
                                               {"role", 1},   {"total", 1},
                                               {"unread", 1}, {"change", 0}};

static int
d_folders(struct bp_dec *d, const msgpack_object *v,
          const struct bproto_folder **out, unsigned *n)
{
    struct bproto_folder *fo;
    int r;

    if ((r = d_list(d, "folders", v, BPROTO_FOLDERS_MAX, sizeof(*fo),
                    (void **)&fo, n)) != 0)
        return r;
    for (unsigned i = 0; i < *n; i++) {
        const msgpack_object *f[6];
        const char *role;
        int ri;

        if ((r = bp_fields(d, "folders", &v->via.array.ptr[i], bp_folder_keys,
                           6, f)) != 0 ||
            (r = d_str(d, "id", f[0], 1, BPROTO_FOLDER_ID_MAX, &fo[i].id)) !=
                0 ||
            (r = d_str(d, "name", f[1], 0, BPROTO_FOLDER_NAME_MAX,
                       &fo[i].name)) != 0 ||
            (r = d_str(d, "role", f[2], 0, BP_ENUM_MAX, &role)) != 0 ||
            (r = d_u32(d, "total", f[3], 0, BPROTO_COUNT_MAX, &fo[i].total)) !=
                0 ||
            (r = d_u32(d, "unread", f[4], 0, fo[i].total, &fo[i].unread)) !=
                0 ||
            (f[5] != NULL &&
             (r = d_u64(d, "change", f[5], 0, UINT64_MAX, &fo[i].change)) != 0))
            return r;
        /* A role from a newer node is a folder without a special role. */
        ri = bp_lookup(bp_role_names, BPROTO_ROLE_COUNT, role, strlen(role));
        fo[i].role = ri < 0 ? BPROTO_ROLE_NONE : (enum bproto_role)ri;
    }
    *out = fo;
    return 0;
}

static void
e_message(struct bp_enc *e, const struct bproto_message *m)
{
    if (m->n_to > BPROTO_RCPTS_MAX || m->n_cc > BPROTO_RCPTS_MAX ||
        m->n_bcc > BPROTO_RCPTS_MAX ||
        (size_t)m->n_to + m->n_cc + m->n_bcc > BPROTO_RCPTS_MAX ||
        m->n_atts > BPROTO_ATTS_MAX || (m->n_atts > 0 && m->atts == NULL) ||
        (m->body != NULL &&
         bp_strnlen(m->body, BPROTO_INLINE_MAX + 1) > m->body_size)) {
        bp_bad(e);
        return;
    }
    e_map(e, 13 + (m->headers != NULL) + (m->body != NULL));
    e_u64(e, "id", m->id, 1, UINT64_MAX);
    e_u64(e, "flags", m->flags, 0, BPROTO_COUNT_MAX);
    e_addr(e, "from", &m->from);
    e_addrs(e, "to", m->n_to, m->to);
    e_addrs(e, "cc", m->n_cc, m->cc);
    e_addrs(e, "bcc", m->n_bcc, m->bcc);
    e_str(e, "subject", m->subject, 0, BPROTO_SUBJECT_MAX);
    e_i64(e, "date", m->date);
    e_i64(e, "received", m->received);
    e_str(e, "message_id", m->message_id, 0, BPROTO_MSGID_MAX);
    e_u64(e, "size", m->size, 0, BPROTO_MESSAGE_MAX);
    if (m->headers != NULL)
        e_str(e, "headers", m->headers, 0, BPROTO_HEADERS_MAX);
    if (m->body != NULL)
        e_str(e, "body", m->body, 0, BPROTO_INLINE_MAX);
    e_u64(e, "body_size", m->body_size, 0, BPROTO_MESSAGE_MAX);
    e_key(e, "attachments");
    e_arr(e, m->n_atts);
    for (unsigned i = 0; i < m->n_atts && e->err == 0; i++) {
        e_map(e, 4);
        e_u64(e, "index", m->atts[i].index, 0, UINT32_MAX);
        e_str(e, "name", m->atts[i].name, 0, BPROTO_FILENAME_MAX);
        e_str(e, "type", m->atts[i].type, 0, BPROTO_MIME_MAX);
        e_u64(e, "size", m->atts[i].size, 0, BPROTO_MESSAGE_MAX);
    }
}

static const struct bp_key bp_message_keys[] = {
    {"id", 1},       {"flags", 1},      {"from", 1},       {"to", 0},
    {"cc", 0},       {"bcc", 0},        {"subject", 1},    {"date", 1},
    {"received", 1}, {"message_id", 1}, {"size", 1},       {"headers", 0},
    {"body", 0},     {"body_size", 1},  {"attachments", 0}};
static const struct bp_key bp_att_info_keys[] = {
    {"index", 1}, {"name", 1}, {"type", 1}, {"size", 1}};

static int
d_message(struct bp_dec *d, const msgpack_object *o, struct bproto_message *m)
{
    const msgpack_object *f[15];
    struct bproto_att_info *atts;
    int r;

    if ((r = bp_fields(d, "r", o, bp_message_keys, 15, f)) != 0 ||
        (r = d_u64(d, "id", f[0], 1, UINT64_MAX, &m->id)) != 0 ||
        (r = d_u32(d, "flags", f[1], 0, BPROTO_COUNT_MAX, &m->flags)) != 0 ||
        (r = d_addr(d, "from", f[2], &m->from)) != 0 ||
        (r = d_addrs(d, "to", f[3], BPROTO_RCPTS_MAX, &m->to, &m->n_to)) != 0 ||
        (r = d_addrs(d, "cc", f[4], BPROTO_RCPTS_MAX, &m->cc, &m->n_cc)) != 0 ||
        (r = d_addrs(d, "bcc", f[5], BPROTO_RCPTS_MAX, &m->bcc, &m->n_bcc)) !=
            0)
        return r;
    if ((size_t)m->n_to + m->n_cc + m->n_bcc > BPROTO_RCPTS_MAX)
        return bp_fail(d, "to", "too many recipients");
    if ((r = d_str(d, "subject", f[6], 0, BPROTO_SUBJECT_MAX, &m->subject)) !=
            0 ||
        (r = d_i64(d, "date", f[7], &m->date)) != 0 ||
        (r = d_i64(d, "received", f[8], &m->received)) != 0 ||
        (r = d_str(d, "message_id", f[9], 0, BPROTO_MSGID_MAX,
                   &m->message_id)) != 0 ||
        (r = d_u64(d, "size", f[10], 0, BPROTO_MESSAGE_MAX, &m->size)) != 0 ||
        (r = d_str_opt(d, "headers", f[11], BPROTO_HEADERS_MAX, &m->headers)) !=
            0 ||
        (r = d_str_opt(d, "body", f[12], BPROTO_INLINE_MAX, &m->body)) != 0 ||
        (r = d_u64(d, "body_size", f[13], 0, BPROTO_MESSAGE_MAX,
                   &m->body_size)) != 0)
        return r;
    if (m->body != NULL && strlen(m->body) > m->body_size)
        return bp_fail(d, "body_size", "less than the body sent");
    if ((r = d_list(d, "attachments", f[14], BPROTO_ATTS_MAX, sizeof(*atts),
                    (void **)&atts, &m->n_atts)) != 0)
        return r;
    for (unsigned i = 0; i < m->n_atts; i++) {
        const msgpack_object *g[4];

        if ((r = bp_fields(d, "attachments", &f[14]->via.array.ptr[i],
                           bp_att_info_keys, 4, g)) != 0 ||
            (r = d_u32(d, "index", g[0], 0, UINT32_MAX, &atts[i].index)) != 0 ||
            (r = d_str(d, "name", g[1], 0, BPROTO_FILENAME_MAX,
                       &atts[i].name)) != 0 ||
            (r = d_str(d, "type", g[2], 0, BPROTO_MIME_MAX, &atts[i].type)) !=
                0 ||
            (r = d_u64(d, "size", g[3], 0, BPROTO_MESSAGE_MAX,
                       &atts[i].size)) != 0)
            return r;
    }
    m->atts = atts;
    return 0;
}

static void
e_res_result(struct bp_enc *e, const struct bproto_res *s)
{
    switch (s->op) {
    case BPROTO_OP_LOGON: {
        const struct bproto_logon_res *l = &s->r.logon;

        e_map(e, 6);
        e_u64(e, "v", l->version, 1, UINT32_MAX);
        e_str(e, "user", l->user, 1, BPROTO_ADDRESS_MAX);
        e_str(e, "name", l->name, 0, BPROTO_NAME_MAX);
        e_str(e, "node", l->node, 0, BPROTO_NODE_MAX);
        e_u64(e, "max_message", l->max_message, 0, BPROTO_MESSAGE_MAX);
        e_folders(e, "folders", l->n_folders, l->folders);
        break;
    }
    case BPROTO_OP_LOGOFF:
    case BPROTO_OP_PING:
    case BPROTO_OP_DELETE:
    case BPROTO_OP_MARK:
        e_map(e, 0);
        break;
    case BPROTO_OP_FOLDERS:
        e_map(e, 1);
        e_folders(e, "folders", s->r.folders.n_folders, s->r.folders.folders);
        break;
    case BPROTO_OP_FIND: {
        const struct bproto_find_res *f = &s->r.find;

        if (f->n_ids > BPROTO_FIND_MAX || (f->n_ids > 0 && f->ids == NULL)) {
            bp_bad(e);
            break;
        }
        e_map(e, 2);
        e_key(e, "ids");
        e_arr(e, f->n_ids);
        for (unsigned i = 0; i < f->n_ids; i++)
            e_u64(e, NULL, f->ids[i], 1, UINT64_MAX);
        e_bool(e, "more", f->more);
        break;
    }
    case BPROTO_OP_READ:
        e_message(e, &s->r.read);
        break;
    case BPROTO_OP_FETCH_ATTACHMENT:
    case BPROTO_OP_FETCH_BODY: {
        const struct bproto_chunk *c = &s->r.chunk;

        if (c->total > BPROTO_MESSAGE_MAX || c->offset > c->total ||
            c->len > c->total - c->offset ||
            !c->last != (c->offset + c->len != c->total)) {
            bp_bad(e);
            break;
        }
        e_map(e, 4);
        e_bin(e, "data", c->data, c->len, BPROTO_CHUNK_MAX);
        e_u64(e, "total", c->total, 0, BPROTO_MESSAGE_MAX);
        e_u64(e, "offset", c->offset, 0, BPROTO_MESSAGE_MAX);
        e_bool(e, "last", c->last);
        break;
    }
    case BPROTO_OP_UPLOAD:
        e_map(e, 2);
        e_u64(e, "upload", s->r.upload.upload, 1, UINT64_MAX);
        e_u64(e, "size", s->r.upload.size, 0, BPROTO_MESSAGE_MAX);
        break;
    case BPROTO_OP_SAVE:
        e_map(e, 1);
        e_u64(e, "id", s->r.save.id, 1, UINT64_MAX);
        break;
    case BPROTO_OP_SEND:
        e_map(e, 1 + (s->r.send.id != 0));
        e_str(e, "message_id", s->r.send.message_id, 1, BPROTO_MSGID_MAX);
        if (s->r.send.id != 0)
            e_u64(e, "id", s->r.send.id, 1, UINT64_MAX);
        break;
    case BPROTO_OP_RESOLVE: {
        const struct bproto_resolve_res *v = &s->r.resolve;

        if (v->n > BPROTO_MATCHES_MAX) {
            bp_bad(e);
            break;
        }
        e_map(e, 3);
        e_addrs(e, "matches", v->n, v->matches);
        e_bool(e, "exact", v->exact);
        e_bool(e, "more", v->more);
        break;
    }
    case BPROTO_OP_CHANGES: {
        const struct bproto_changes_res *c = &s->r.changes;

        if (c->n > BPROTO_CHANGES_MAX || (c->n > 0 && c->changes == NULL)) {
            bp_bad(e);
            break;
        }
        e_map(e, 3);
        e_key(e, "changes");
        e_arr(e, c->n);
        for (unsigned i = 0; i < c->n && e->err == 0; i++) {
            const char *kind = bproto_change_name(c->changes[i].kind);

            if (kind == NULL) {
                bp_bad(e);
                break;
            }
            e_map(e, 3);
            e_u64(e, "id", c->changes[i].id, 1, UINT64_MAX);
            e_str(e, "kind", kind, 1, BP_ENUM_MAX);
            e_u64(e, "flags", c->changes[i].flags, 0, BPROTO_COUNT_MAX);
        }
        e_u64(e, "next", c->next, 0, UINT64_MAX);
        e_bool(e, "more", c->more);
        break;
    }
    case BPROTO_OP_COUNT:
    default:
        bp_bad(e);
        break;
    }
}

int
bproto_res_encode(struct buf *out, const struct bproto_res *s)
{
    struct bp_enc e;

    if (out == NULL || s == NULL)
        return RM_E_INVAL;
    if (s->ok ? bproto_op_name(s->op) == NULL
              : bproto_errcode_name(s->err.code) == NULL)
        return RM_E_INVAL;
    bp_enc_init(&e, out);
    e_map(&e, 3);
    e_u64(&e, "id", s->id, 0, UINT64_MAX);
    e_bool(&e, "ok", s->ok);
    if (s->ok) {
        e_key(&e, "r");
        e_res_result(&e, s);
    } else {
        e_key(&e, "err");
        e_map(&e, 2);
        e_str(&e, "code", bproto_errcode_name(s->err.code), 1,
              BPROTO_ERRCODE_MAX);
        e_str(&e, "msg", s->err.msg, 0, BPROTO_ERRMSG_MAX);
    }
    return bp_enc_end(&e);
}

int
bproto_res_encode_err(struct buf *out, uint64_t id, enum bproto_errcode code,
                      const char *msg)
{
    struct bproto_res s;

    memset(&s, 0, sizeof(s));
    s.id = id;
    s.ok = 0;
    s.err.code = code;
    s.err.msg = msg;
    return bproto_res_encode(out, &s);
}

static const struct bp_key bp_logon_res_keys[] = {
    {"v", 1},    {"user", 1},        {"name", 1},
    {"node", 1}, {"max_message", 1}, {"folders", 0}};
static const struct bp_key bp_find_res_keys[] = {{"ids", 0}, {"more", 1}};
static const struct bp_key bp_chunk_keys[] = {
    {"data", 1}, {"total", 1}, {"offset", 1}, {"last", 1}};
static const struct bp_key bp_upload_res_keys[] = {{"upload", 1}, {"size", 1}};
static const struct bp_key bp_send_res_keys[] = {{"message_id", 1}, {"id", 0}};
static const struct bp_key bp_resolve_res_keys[] = {
    {"matches", 0}, {"exact", 1}, {"more", 0}};
static const struct bp_key bp_changes_res_keys[] = {
    {"changes", 0}, {"next", 1}, {"more", 0}};
static const struct bp_key bp_change_keys[] = {
    {"id", 1}, {"kind", 1}, {"flags", 0}};

static int
d_res_result(struct bp_dec *d, const msgpack_object *o, struct bproto_res *s)
{
    const msgpack_object *f[6];
    int r;

    switch (s->op) {
    case BPROTO_OP_LOGON: {
        struct bproto_logon_res *l = &s->r.logon;

        if ((r = bp_fields(d, "r", o, bp_logon_res_keys, 6, f)) != 0 ||
            (r = d_u32(d, "v", f[0], 1, UINT32_MAX, &l->version)) != 0 ||
            (r = d_str(d, "user", f[1], 1, BPROTO_ADDRESS_MAX, &l->user)) !=
                0 ||
            (r = d_str(d, "name", f[2], 0, BPROTO_NAME_MAX, &l->name)) != 0 ||
            (r = d_str(d, "node", f[3], 0, BPROTO_NODE_MAX, &l->node)) != 0 ||
            (r = d_u64(d, "max_message", f[4], 0, BPROTO_MESSAGE_MAX,
                       &l->max_message)) != 0 ||
            (r = d_folders(d, f[5], &l->folders, &l->n_folders)) != 0)
            return r;
        return 0;
    }
    case BPROTO_OP_LOGOFF:
    case BPROTO_OP_PING:
    case BPROTO_OP_DELETE:
    case BPROTO_OP_MARK:
        return bp_fields(d, "r", o, NULL, 0, f);
    case BPROTO_OP_FOLDERS: {
        static const struct bp_key k[] = {{"folders", 0}};

        if ((r = bp_fields(d, "r", o, k, 1, f)) != 0)
            return r;
        return d_folders(d, f[0], &s->r.folders.folders,
                         &s->r.folders.n_folders);
    }
    case BPROTO_OP_FIND: {
        struct bproto_find_res *fr = &s->r.find;
        uint64_t *ids;

        if ((r = bp_fields(d, "r", o, bp_find_res_keys, 2, f)) != 0 ||
            (r = d_list(d, "ids", f[0], BPROTO_FIND_MAX, sizeof(*ids),
                        (void **)&ids, &fr->n_ids)) != 0)
            return r;
        for (unsigned i = 0; i < fr->n_ids; i++) {
            if ((r = d_u64(d, "ids", &f[0]->via.array.ptr[i], 1, UINT64_MAX,
                           &ids[i])) != 0)
                return r;
        }
        fr->ids = ids;
        return d_bool(d, "more", f[1], &fr->more);
    }
    case BPROTO_OP_READ:
        return d_message(d, o, &s->r.read);
    case BPROTO_OP_FETCH_ATTACHMENT:
    case BPROTO_OP_FETCH_BODY: {
        struct bproto_chunk *c = &s->r.chunk;

        if ((r = bp_fields(d, "r", o, bp_chunk_keys, 4, f)) != 0 ||
            (r = d_bin(d, "data", f[0], BPROTO_CHUNK_MAX, &c->data, &c->len)) !=
                0 ||
            (r = d_u64(d, "total", f[1], 0, BPROTO_MESSAGE_MAX, &c->total)) !=
                0 ||
            (r = d_u64(d, "offset", f[2], 0, c->total, &c->offset)) != 0 ||
            (r = d_bool(d, "last", f[3], &c->last)) != 0)
            return r;
        if (c->len > c->total - c->offset)
            return bp_fail(d, "data", "past total");
        if (!c->last != (c->offset + c->len != c->total))
            return bp_fail(d, "last", "does not match offset and total");
        return 0;
    }
    case BPROTO_OP_UPLOAD:
        if ((r = bp_fields(d, "r", o, bp_upload_res_keys, 2, f)) != 0 ||
            (r = d_u64(d, "upload", f[0], 1, UINT64_MAX,
                       &s->r.upload.upload)) != 0 ||
            (r = d_u64(d, "size", f[1], 0, BPROTO_MESSAGE_MAX,
                       &s->r.upload.size)) != 0)
            return r;
        return 0;
    case BPROTO_OP_SAVE: {
        static const struct bp_key k[] = {{"id", 1}};

        if ((r = bp_fields(d, "r", o, k, 1, f)) != 0)
            return r;
        return d_u64(d, "id", f[0], 1, UINT64_MAX, &s->r.save.id);
    }
    case BPROTO_OP_SEND:
        if ((r = bp_fields(d, "r", o, bp_send_res_keys, 2, f)) != 0 ||
            (r = d_str(d, "message_id", f[0], 1, BPROTO_MSGID_MAX,
                       &s->r.send.message_id)) != 0 ||
            (f[1] != NULL &&
             (r = d_u64(d, "id", f[1], 1, UINT64_MAX, &s->r.send.id)) != 0))
            return r;
        return 0;
    case BPROTO_OP_RESOLVE: {
        struct bproto_resolve_res *v = &s->r.resolve;

        if ((r = bp_fields(d, "r", o, bp_resolve_res_keys, 3, f)) != 0 ||
            (r = d_addrs(d, "matches", f[0], BPROTO_MATCHES_MAX, &v->matches,
                         &v->n)) != 0 ||
            (r = d_bool(d, "exact", f[1], &v->exact)) != 0 ||
            (f[2] != NULL && (r = d_bool(d, "more", f[2], &v->more)) != 0))
            return r;
        return 0;
    }
    case BPROTO_OP_CHANGES: {
        struct bproto_changes_res *c = &s->r.changes;
        struct bproto_change *ch;

        if ((r = bp_fields(d, "r", o, bp_changes_res_keys, 3, f)) != 0 ||
            (r = d_list(d, "changes", f[0], BPROTO_CHANGES_MAX, sizeof(*ch),
                        (void **)&ch, &c->n)) != 0)
            return r;
        for (unsigned i = 0; i < c->n; i++) {
            const msgpack_object *g[3];
            int ki;

            if ((r = bp_fields(d, "changes", &f[0]->via.array.ptr[i],
                               bp_change_keys, 3, g)) != 0 ||
                (r = d_u64(d, "id", g[0], 1, UINT64_MAX, &ch[i].id)) != 0)
                return r;
            if (g[1]->type != MSGPACK_OBJECT_STR ||
                (ki = bp_lookup(bp_change_names, BPROTO_CHANGE_COUNT,
                                g[1]->via.str.ptr, g[1]->via.str.size)) < 0)
                return bp_fail(d, "kind", "unknown");
            ch[i].kind = (enum bproto_change_kind)ki;
            if (g[2] != NULL &&
                (r = d_u32(d, "flags", g[2], 0, BPROTO_COUNT_MAX,
                           &ch[i].flags)) != 0)
                return r;
        }
        c->changes = ch;
        if ((r = d_u64(d, "next", f[1], 0, UINT64_MAX, &c->next)) != 0 ||
            (f[2] != NULL && (r = d_bool(d, "more", f[2], &c->more)) != 0))
            return r;
        return 0;
    }
    case BPROTO_OP_COUNT:
    default:
        return bp_fail(d, "op", "unknown");
    }
}

static const struct bp_key bp_res_keys[] = {
    {"id", 1}, {"ok", 1}, {"r", 0}, {"err", 0}};
static const struct bp_key bp_err_keys[] = {{"code", 1}, {"msg", 1}};

static int
d_res(struct bp_dec *d, const msgpack_object *o, struct bproto_res *s)
{
    const msgpack_object *f[4], *g[2];
    const char *code;
    int r, ci;

    if ((r = bp_fields(d, "response", o, bp_res_keys, 4, f)) != 0 ||
        (r = d_u64(d, "id", f[0], 0, UINT64_MAX, &s->id)) != 0 ||
        (r = d_bool(d, "ok", f[1], &s->ok)) != 0)
        return r;
    if (s->ok) {
        if (f[2] == NULL)
            return bp_fail(d, "r", "missing");
        d->path = "r";
        return d_res_result(d, f[2], s);
    }
    if (f[3] == NULL)
        return bp_fail(d, "err", "missing");
    d->path = "err";
    if ((r = bp_fields(d, "err", f[3], bp_err_keys, 2, g)) != 0 ||
        (r = d_str(d, "code", g[0], 1, BPROTO_ERRCODE_MAX, &code)) != 0 ||
        (r = d_str(d, "msg", g[1], 0, BPROTO_ERRMSG_MAX, &s->err.msg)) != 0)
        return r;
    /* A code from a newer node is a failure like any other. */
    ci = bp_lookup(bp_err_names, BPROTO_E_COUNT, code, strlen(code));
    s->err.code = ci < 0 ? BPROTO_E_FAILURE : (enum bproto_errcode)ci;
    return 0;
}

int
bproto_res_decode_obj(const msgpack_object *o, enum bproto_op op,
                      struct bproto_res *out)
{
    struct bp_dec d;
    int r;

    if (out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    if (o == NULL || bproto_op_name(op) == NULL)
        return RM_E_INVAL;
    out->op = op;
    d.mem = NULL;
    d.why = out->why;
    d.path = "response";
    r = d_res(&d, o, out);
    if (r != 0) {
        bp_mem_free(d.mem);
        memset(&out->r, 0, sizeof(out->r));
        memset(&out->err, 0, sizeof(out->err));
        return r;
    }
    out->mem = d.mem;
    return 0;
}

struct bp_res_arg {
    enum bproto_op op;
    struct bproto_res *out;
};

static int
bp_res_fn(const msgpack_object *o, void *arg)
{
    struct bp_res_arg *a = arg;

    return bproto_res_decode_obj(o, a->op, a->out);
}

int
bproto_res_decode(const void *p, size_t len, enum bproto_op op,
                  struct bproto_res *out)
{
    struct bp_res_arg a = {op, out};

    if (out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    if (bproto_op_name(op) == NULL)
        return RM_E_INVAL;
    out->op = op;
    return bp_unpack(p, len, out->why, bp_res_fn, &a);
}

int
bproto_res_id(const msgpack_object *o, uint64_t *id)
{
    static const struct bp_key k[] = {{"id", 1}};
    char why[BPROTO_WHY_MAX] = "";
    struct bp_dec d = {NULL, why, "response"};
    const msgpack_object *f[1];
    int r;

    if (o == NULL || id == NULL)
        return RM_E_INVAL;
    if ((r = bp_fields(&d, "response", o, k, 1, f)) != 0)
        return r;
    return d_u64(&d, "id", f[0], 0, UINT64_MAX, id);
}

void
bproto_res_cleanup(struct bproto_res *s)
{
    if (s == NULL)
        return;
    bp_mem_free(s->mem);
    s->mem = NULL;
    memset(&s->r, 0, sizeof(s->r));
    memset(&s->err, 0, sizeof(s->err));
}
