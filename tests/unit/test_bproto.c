/*
 * Unit tests for bridge/proto.c, the MAPI bridge's wire codec.
 *
 * Round trips: every request and response kind is encoded, decoded and
 * encoded again; the two encodings must be identical (the encoder is
 * canonical and writes every field, so equal bytes mean equal values),
 * plus spot checks of decoded fields. Malformed input, generically over
 * every encoded message: truncated at every byte, every value replaced by
 * a float (never valid), every key duplicated, removed or set to nil
 * (refused exactly when the key is required: the tables below are the
 * spec of which keys are optional), an unknown key added to every map
 * (ignored). Then the bounds one by one (at the bound: accepted; one
 * past: refused), the text rules, the envelope, the largest messages,
 * encoder misuse, and allocation failure (each allocation in turn, via
 * the linker's --wrap).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "bridge/proto.h"
#include "common/rm_error.h"
#include "mesh/frame.h"

_Static_assert(BPROTO_MSG_MAX == FRAME_MSG_MAX,
               "a bridge message is one frame message");

/* ---- allocation failure injection (linked with --wrap) ------------------ */

void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_realloc(void *p, size_t n);

static int fail_countdown; /* k > 0: the k-th allocation from now fails */

void *
__wrap_malloc(size_t n)
{
    if (fail_countdown > 0 && --fail_countdown == 0)
        return NULL;
    return __real_malloc(n);
}

void *
__wrap_realloc(void *p, size_t n)
{
    if (fail_countdown > 0 && --fail_countdown == 0)
        return NULL;
    return __real_realloc(p, n);
}

/* ---- fixtures ----------------------------------------------------------- */

static const struct bproto_addr from_addr = {"Alice Ämter",
                                             "alice@example.org"};
static const struct bproto_addr to_addrs[] = {
    {"Ärger Müller", "mueller@example.org"},
    {"", "bob@example.net"},
};
static const struct bproto_addr cc_addrs[] = {{"Zoë 😀", "zoe@example.com"}};
static const struct bproto_addr bcc_addrs[] = {{"Hidden", "h@example.com"}};
static const uint8_t bin6[] = {0x00, 0x01, 0x02, 0xff, 0xfe, 'x'};
static const struct bproto_att_in atts_in[] = {
    {"report.pdf", "application/pdf", 0, bin6, sizeof(bin6)},
    {"big.iso", "", 42, NULL, 0},
    {"empty.txt", "text/plain", 0, NULL, 0},
};
static const struct bproto_folder folders3[] = {
    {"inbox", "Inbox", BPROTO_ROLE_INBOX, 12, 3, 1041},
    {"sent", "Sent Items", BPROTO_ROLE_SENT, 4, 0, 7},
    {"f/Projekte", "Projekte", BPROTO_ROLE_NONE, 0, 0, 0},
};
static const uint64_t ids3[] = {3, 5, UINT64_C(0x0000000100000008)};
static const struct bproto_att_info atts_info[] = {
    {0, "report.pdf", "application/pdf", 123456},
    {2, "Übersicht.xlsx", "application/octet-stream", 0},
};
static const struct bproto_addr matches2[] = {
    {"Alice Ämter", "alice@example.org"},
    {"Alicia Keys", "alicia@example.org"},
};
static const struct bproto_change changes3[] = {
    {9, BPROTO_CHANGE_NEW, 0},
    {5, BPROTO_CHANGE_CHANGED, BPROTO_FLAG_READ | BPROTO_FLAG_FLAGGED},
    {3, BPROTO_CHANGE_DELETED, 0},
};

static void
fill_compose(struct bproto_compose *m)
{
    memset(m, 0, sizeof(*m));
    m->from = &from_addr;
    m->to = to_addrs;
    m->n_to = 2;
    m->cc = cc_addrs;
    m->n_cc = 1;
    m->bcc = bcc_addrs;
    m->n_bcc = 1;
    m->subject = "Grüße aus Köln 😀";
    m->body = "Hallo,\r\n\r\nanbei der Bericht.\r\n";
    m->atts = atts_in;
    m->n_atts = 3;
    m->flags = BPROTO_FLAG_RECEIPT;
}

/* A representative request of each kind. */
static void
fill_req(enum bproto_op op, struct bproto_req *q)
{
    memset(q, 0, sizeof(*q));
    q->op = op;
    q->id = 1000 + (uint64_t)op;
    switch (op) {
    case BPROTO_OP_LOGON:
        q->a.logon.version = BPROTO_VERSION;
        q->a.logon.user = "alice@example.org";
        q->a.logon.password = "s3cret ü";
        q->a.logon.client = "relaymesh-mapi/0.1 (x64)";
        break;
    case BPROTO_OP_LOGOFF:
    case BPROTO_OP_PING:
    case BPROTO_OP_FOLDERS:
        break;
    case BPROTO_OP_FIND:
        q->a.find.folder = "inbox";
        q->a.find.after = 77;
        q->a.find.unread_only = 1;
        q->a.find.limit = 10;
        break;
    case BPROTO_OP_READ:
        q->a.read.folder = "inbox";
        q->a.read.id = 5;
        q->a.read.peek = 1;
        q->a.read.body = 1;
        q->a.read.headers = 1;
        break;
    case BPROTO_OP_FETCH_ATTACHMENT:
    case BPROTO_OP_FETCH_BODY:
        q->a.fetch.folder = "inbox";
        q->a.fetch.id = 5;
        q->a.fetch.index = op == BPROTO_OP_FETCH_ATTACHMENT ? 2 : 0;
        q->a.fetch.offset = 524288;
        q->a.fetch.max = 65536;
        break;
    case BPROTO_OP_UPLOAD:
        q->a.upload.upload = 0;
        q->a.upload.offset = 0;
        q->a.upload.data = bin6;
        q->a.upload.len = sizeof(bin6);
        break;
    case BPROTO_OP_SAVE:
        q->a.save.folder = "drafts";
        q->a.save.id = 9;
        fill_compose(&q->a.save.m);
        break;
    case BPROTO_OP_DELETE:
        q->a.del.folder = "inbox";
        q->a.del.id = 5;
        break;
    case BPROTO_OP_MARK:
        q->a.mark.folder = "inbox";
        q->a.mark.id = 5;
        q->a.mark.read = 1;
        break;
    case BPROTO_OP_SEND:
        fill_compose(&q->a.send);
        break;
    case BPROTO_OP_RESOLVE:
        q->a.resolve.name = "ali";
        q->a.resolve.partial = 1;
        break;
    case BPROTO_OP_CHANGES:
        q->a.changes.folder = "inbox";
        q->a.changes.since = 100;
        q->a.changes.limit = 50;
        break;
    case BPROTO_OP_COUNT:
    default:
        fail();
    }
}

static void
fill_message(struct bproto_message *m)
{
    memset(m, 0, sizeof(*m));
    m->id = 5;
    m->flags = BPROTO_FLAG_READ | BPROTO_FLAG_ATTACH | 0x10000;
    m->from = from_addr;
    m->to = to_addrs;
    m->n_to = 2;
    m->cc = cc_addrs;
    m->n_cc = 1;
    m->subject = "Grüße aus Köln 😀";
    m->date = 1767225600;
    m->received = -5;
    m->message_id = "<20260101.abc@example.org>";
    m->size = 4711;
    m->headers = "From: Alice <alice@example.org>\r\nSubject: x\r\n";
    m->body = "Hallo,\r\nWelt\r\n";
    m->body_size = 9000;
    m->atts = atts_info;
    m->n_atts = 2;
}

/* A representative successful response of each kind. */
static void
fill_res(enum bproto_op op, struct bproto_res *s)
{
    memset(s, 0, sizeof(*s));
    s->op = op;
    s->ok = 1;
    s->id = 2000 + (uint64_t)op;
    switch (op) {
    case BPROTO_OP_LOGON:
        s->r.logon.version = 1;
        s->r.logon.user = "alice@example.org";
        s->r.logon.name = "Alice Ämter";
        s->r.logon.node = "branch-1";
        s->r.logon.max_message = 26214400;
        s->r.logon.folders = folders3;
        s->r.logon.n_folders = 3;
        break;
    case BPROTO_OP_LOGOFF:
    case BPROTO_OP_PING:
    case BPROTO_OP_DELETE:
    case BPROTO_OP_MARK:
        break;
    case BPROTO_OP_FOLDERS:
        s->r.folders.folders = folders3;
        s->r.folders.n_folders = 3;
        break;
    case BPROTO_OP_FIND:
        s->r.find.ids = ids3;
        s->r.find.n_ids = 3;
        s->r.find.more = 1;
        break;
    case BPROTO_OP_READ:
        fill_message(&s->r.read);
        break;
    case BPROTO_OP_FETCH_ATTACHMENT:
    case BPROTO_OP_FETCH_BODY:
        s->r.chunk.data = bin6;
        s->r.chunk.len = sizeof(bin6);
        s->r.chunk.total = 100;
        s->r.chunk.offset = 94;
        s->r.chunk.last = 1;
        break;
    case BPROTO_OP_UPLOAD:
        s->r.upload.upload = 42;
        s->r.upload.size = 6;
        break;
    case BPROTO_OP_SAVE:
        s->r.save.id = 9;
        break;
    case BPROTO_OP_SEND:
        s->r.send.message_id = "<abc@example.org>";
        s->r.send.id = 12;
        break;
    case BPROTO_OP_RESOLVE:
        s->r.resolve.matches = matches2;
        s->r.resolve.n = 2;
        s->r.resolve.more = 1;
        break;
    case BPROTO_OP_CHANGES:
        s->r.changes.changes = changes3;
        s->r.changes.n = 3;
        s->r.changes.next = 104;
        break;
    case BPROTO_OP_COUNT:
    default:
        fail();
    }
}

/* ---- helpers ------------------------------------------------------------ */

static void
enc_req(const struct bproto_req *q, struct buf *b)
{
    buf_init(b, BPROTO_MSG_MAX);
    assert_int_equal(bproto_req_encode(b, q), 0);
}

static void
enc_res(const struct bproto_res *s, struct buf *b)
{
    buf_init(b, BPROTO_MSG_MAX);
    assert_int_equal(bproto_res_encode(b, s), 0);
}

/*
 * Decode bytes as a request (op == BPROTO_OP_COUNT) or as a response to
 * op; on success check that the decoded value re-encodes to canonical
 * bytes that decode and re-encode identically, and, when want is given,
 * that those bytes are want. Returns the decoder's code.
 */
static int
check_bytes(const void *p, size_t len, enum bproto_op op,
            const struct buf *want)
{
    struct bproto_req q, q2;
    struct bproto_res s, s2;
    struct buf e1, e2;
    int r;

    buf_init(&e1, BPROTO_MSG_MAX);
    buf_init(&e2, BPROTO_MSG_MAX);
    if (op == BPROTO_OP_COUNT) {
        r = bproto_req_decode(p, len, &q);
        if (r == 0) {
            assert_int_equal(bproto_req_encode(&e1, &q), 0);
            assert_int_equal(bproto_req_decode(e1.data, e1.len, &q2), 0);
            assert_int_equal(bproto_req_encode(&e2, &q2), 0);
            bproto_req_cleanup(&q2);
        } else {
            assert_null(q.mem);
            assert_true(q.why[0] != '\0');
        }
        bproto_req_cleanup(&q);
    } else {
        r = bproto_res_decode(p, len, op, &s);
        if (r == 0) {
            assert_int_equal(bproto_res_encode(&e1, &s), 0);
            assert_int_equal(bproto_res_decode(e1.data, e1.len, op, &s2), 0);
            assert_int_equal(bproto_res_encode(&e2, &s2), 0);
            bproto_res_cleanup(&s2);
        } else {
            assert_null(s.mem);
            assert_true(s.why[0] != '\0');
        }
        bproto_res_cleanup(&s);
    }
    if (r == 0) {
        assert_int_equal(e1.len, e2.len);
        assert_memory_equal(e1.data, e2.data, e1.len);
        if (want != NULL) {
            assert_int_equal(e1.len, want->len);
            assert_memory_equal(e1.data, want->data, e1.len);
        }
    }
    buf_cleanup(&e1);
    buf_cleanup(&e2);
    return r;
}

/* ---- msgpack trees: unpack, mutate by path, repack ---------------------- */

struct tree {
    msgpack_zone zone;
    msgpack_object root;
};

static void
tree_load(struct tree *t, const struct buf *b)
{
    size_t off = 0;

    assert_true(msgpack_zone_init(&t->zone, 4096));
    assert_int_equal(msgpack_unpack(b->data, b->len, &off, &t->zone, &t->root),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, b->len);
}

static void
tree_free(struct tree *t)
{
    msgpack_zone_destroy(&t->zone);
}

static int
pk_write(void *data, const char *p, size_t n)
{
    return buf_append(data, p, n) == 0 ? 0 : -1;
}

static void
tree_pack(const msgpack_object *o, struct buf *out)
{
    msgpack_packer pk;

    buf_init(out, 8u << 20);
    msgpack_packer_init(&pk, out, pk_write);
    assert_int_equal(msgpack_pack_object(&pk, *o), 0);
}

/* Every map pair below o, with its path ("a.to[].name"). */
struct pair_ref {
    msgpack_object *map;
    uint32_t i;
    char path[128];
};

struct walk {
    msgpack_object *nodes[4096]; /* every value but the root */
    size_t n_nodes;
    struct pair_ref pairs[2048];
    size_t n_pairs;
    msgpack_object *maps[1024];
    size_t n_maps;
};

static void
walk(struct walk *w, msgpack_object *o, const char *path, int root)
{
    char sub[128];

    if (!root) {
        assert_true(w->n_nodes < 4096);
        w->nodes[w->n_nodes++] = o;
    }
    if (o->type == MSGPACK_OBJECT_MAP) {
        assert_true(w->n_maps < 1024);
        w->maps[w->n_maps++] = o;
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            msgpack_object *k = &o->via.map.ptr[i].key;
            struct pair_ref *pr;

            assert_int_equal(k->type, MSGPACK_OBJECT_STR);
            snprintf(sub, sizeof(sub), "%s%s%.*s", path, root ? "" : ".",
                     (int)k->via.str.size, k->via.str.ptr);
            assert_true(w->n_pairs < 2048);
            pr = &w->pairs[w->n_pairs++];
            pr->map = o;
            pr->i = i;
            snprintf(pr->path, sizeof(pr->path), "%s", sub);
            walk(w, &o->via.map.ptr[i].val, sub, 0);
        }
    } else if (o->type == MSGPACK_OBJECT_ARRAY) {
        snprintf(sub, sizeof(sub), "%s[]", path);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            walk(w, &o->via.array.ptr[i], sub, 0);
    }
}

/* Paths of optional keys per kind (every other key is required). */
static const char *const opt_compose[] = {
    "a.from", "a.to",          "a.cc",          "a.bcc",   "a.subject",
    "a.body", "a.body_upload", "a.attachments", "a.flags", NULL,
};

static int
in_list(const char *const *list, const char *path)
{
    for (; list != NULL && *list != NULL; list++) {
        if (strcmp(*list, path) == 0)
            return 1;
    }
    return 0;
}

static int
req_key_optional(enum bproto_op op, const char *path)
{
    static const char *const logon[] = {"a.client", NULL};
    static const char *const find[] = {"a.after", "a.unread_only", NULL};
    static const char *const read[] = {"a.peek", "a.envelope_only", "a.body",
                                       "a.headers", NULL};
    static const char *const upload[] = {"a.upload", NULL};
    static const char *const resolve[] = {"a.partial", NULL};

    switch (op) {
    case BPROTO_OP_LOGON:
        return in_list(logon, path);
    case BPROTO_OP_FIND:
        return in_list(find, path);
    case BPROTO_OP_READ:
        return in_list(read, path);
    case BPROTO_OP_UPLOAD:
        return in_list(upload, path);
    case BPROTO_OP_SAVE:
        return strcmp(path, "a.id") == 0 || in_list(opt_compose, path);
    case BPROTO_OP_SEND:
        return in_list(opt_compose, path);
    case BPROTO_OP_RESOLVE:
        return in_list(resolve, path);
    case BPROTO_OP_LOGOFF:
    case BPROTO_OP_PING:
    case BPROTO_OP_FOLDERS:
    case BPROTO_OP_FETCH_ATTACHMENT:
    case BPROTO_OP_FETCH_BODY:
    case BPROTO_OP_DELETE:
    case BPROTO_OP_MARK:
    case BPROTO_OP_CHANGES:
    case BPROTO_OP_COUNT:
    default:
        return 0;
    }
}

static int
res_key_optional(enum bproto_op op, const char *path)
{
    static const char *const logon[] = {"r.folders", "r.folders[].change",
                                        NULL};
    static const char *const folders[] = {"r.folders", "r.folders[].change",
                                          NULL};
    static const char *const find[] = {"r.ids", NULL};
    static const char *const read[] = {
        "r.to", "r.cc", "r.bcc", "r.headers", "r.body", "r.attachments", NULL};
    static const char *const send[] = {"r.id", NULL};
    static const char *const resolve[] = {"r.matches", "r.more", NULL};
    static const char *const changes[] = {"r.changes", "r.changes[].flags",
                                          "r.more", NULL};

    switch (op) {
    case BPROTO_OP_LOGON:
        return in_list(logon, path);
    case BPROTO_OP_FOLDERS:
        return in_list(folders, path);
    case BPROTO_OP_FIND:
        return in_list(find, path);
    case BPROTO_OP_READ:
        return in_list(read, path);
    case BPROTO_OP_SEND:
        return in_list(send, path);
    case BPROTO_OP_RESOLVE:
        return in_list(resolve, path);
    case BPROTO_OP_CHANGES:
        return in_list(changes, path);
    case BPROTO_OP_LOGOFF:
    case BPROTO_OP_PING:
    case BPROTO_OP_FETCH_ATTACHMENT:
    case BPROTO_OP_FETCH_BODY:
    case BPROTO_OP_UPLOAD:
    case BPROTO_OP_SAVE:
    case BPROTO_OP_DELETE:
    case BPROTO_OP_MARK:
    case BPROTO_OP_COUNT:
    default:
        return 0;
    }
}

/*
 * Every generic mutation of one valid encoding b (a request when op is
 * BPROTO_OP_COUNT, else a response to op; opt says which keys are
 * optional).
 */
static void
mutate_all(const struct buf *b, enum bproto_op op,
           int (*opt)(enum bproto_op, const char *), enum bproto_op kind)
{
    static struct walk w;
    struct tree t;
    struct buf m;

    tree_load(&t, b);
    memset(&w, 0, sizeof(w));
    walk(&w, &t.root, "", 1);

    /* Truncated at every byte. */
    for (size_t n = 0; n < b->len; n++)
        assert_int_equal(check_bytes(b->data, n, op, NULL), RM_E_PROTO);
    /* One trailing byte. */
    {
        struct buf x;

        buf_init(&x, BPROTO_MSG_MAX + 1);
        assert_int_equal(buf_append(&x, b->data, b->len), 0);
        assert_int_equal(buf_append(&x, "\xc0", 1), 0);
        assert_int_equal(check_bytes(x.data, x.len, op, NULL), RM_E_PROTO);
        buf_cleanup(&x);
    }
    /* Any value replaced by a float. */
    for (size_t i = 0; i < w.n_nodes; i++) {
        msgpack_object saved = *w.nodes[i];

        w.nodes[i]->type = MSGPACK_OBJECT_FLOAT64;
        w.nodes[i]->via.f64 = 1.5;
        tree_pack(&t.root, &m);
        *w.nodes[i] = saved;
        assert_int_equal(check_bytes(m.data, m.len, op, NULL), RM_E_PROTO);
        buf_cleanup(&m);
    }
    for (size_t i = 0; i < w.n_pairs; i++) {
        struct pair_ref *pr = &w.pairs[i];
        msgpack_object_kv *kv = pr->map->via.map.ptr, saved = kv[pr->i];
        uint32_t size = pr->map->via.map.size;
        msgpack_object_kv *dup;
        int optional = opt(kind, pr->path);
        int r;

        /* Removed: refused exactly when required. */
        kv[pr->i] = kv[size - 1];
        pr->map->via.map.size = size - 1;
        tree_pack(&t.root, &m);
        pr->map->via.map.size = size;
        kv[size - 1] = kv[pr->i];
        kv[pr->i] = saved;
        r = check_bytes(m.data, m.len, op, NULL);
        buf_cleanup(&m);
        if (r != (optional ? 0 : RM_E_PROTO))
            fail_msg("remove %s (op %s): %d", pr->path, bproto_op_name(kind),
                     r);
        /* Set to nil: the same. */
        kv[pr->i].val.type = MSGPACK_OBJECT_NIL;
        tree_pack(&t.root, &m);
        kv[pr->i] = saved;
        r = check_bytes(m.data, m.len, op, NULL);
        buf_cleanup(&m);
        if (r != (optional ? 0 : RM_E_PROTO))
            fail_msg("nil %s (op %s): %d", pr->path, bproto_op_name(kind), r);
        /* Given twice: refused. */
        dup = malloc((size + 1) * sizeof(*dup));
        assert_non_null(dup);
        memcpy(dup, kv, size * sizeof(*dup));
        dup[size] = saved;
        pr->map->via.map.ptr = dup;
        pr->map->via.map.size = size + 1;
        tree_pack(&t.root, &m);
        pr->map->via.map.ptr = kv;
        pr->map->via.map.size = size;
        free(dup);
        r = check_bytes(m.data, m.len, op, NULL);
        buf_cleanup(&m);
        if (r != RM_E_PROTO)
            fail_msg("twice %s (op %s): %d", pr->path, bproto_op_name(kind), r);
    }
    /* An unknown key in any map: ignored (same canonical bytes). */
    for (size_t i = 0; i < w.n_maps; i++) {
        msgpack_object *mo = w.maps[i];
        msgpack_object_kv *kv = mo->via.map.ptr, *more;
        uint32_t size = mo->via.map.size;
        msgpack_object inner[2];

        more = malloc((size + 1) * sizeof(*more));
        assert_non_null(more);
        if (size > 0)
            memcpy(more, kv, size * sizeof(*more));
        inner[0].type = MSGPACK_OBJECT_FLOAT64;
        inner[0].via.f64 = 2.5;
        inner[1].type = MSGPACK_OBJECT_STR;
        inner[1].via.str.ptr = "\xff not text";
        inner[1].via.str.size = 10;
        more[size].key.type = MSGPACK_OBJECT_STR;
        more[size].key.via.str.ptr = "x-future";
        more[size].key.via.str.size = 8;
        more[size].val.type = MSGPACK_OBJECT_ARRAY;
        more[size].val.via.array.ptr = inner;
        more[size].val.via.array.size = 2;
        mo->via.map.ptr = more;
        mo->via.map.size = size + 1;
        tree_pack(&t.root, &m);
        mo->via.map.ptr = kv;
        mo->via.map.size = size;
        free(more);
        assert_int_equal(check_bytes(m.data, m.len, op, b), 0);
        buf_cleanup(&m);
    }
    /* A non-string key in any map: refused. */
    for (size_t i = 0; i < w.n_maps; i++) {
        msgpack_object *mo = w.maps[i];
        msgpack_object_kv *kv = mo->via.map.ptr, *more;
        uint32_t size = mo->via.map.size;

        more = malloc((size + 1) * sizeof(*more));
        assert_non_null(more);
        if (size > 0)
            memcpy(more, kv, size * sizeof(*more));
        more[size].key.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        more[size].key.via.u64 = 1;
        more[size].val.type = MSGPACK_OBJECT_NIL;
        mo->via.map.ptr = more;
        mo->via.map.size = size + 1;
        tree_pack(&t.root, &m);
        mo->via.map.ptr = kv;
        mo->via.map.size = size;
        free(more);
        assert_int_equal(check_bytes(m.data, m.len, op, NULL), RM_E_PROTO);
        buf_cleanup(&m);
    }
    tree_free(&t);
}

/* Find the value at path ("a.to[0].name"; no index means the key's
 * value) in t. */
static msgpack_object *
tree_at(struct tree *t, const char *path)
{
    msgpack_object *o = &t->root;
    const char *p = path;

    while (*p != '\0') {
        size_t n = strcspn(p, ".[");
        uint32_t i;

        assert_int_equal(o->type, MSGPACK_OBJECT_MAP);
        for (i = 0; i < o->via.map.size; i++) {
            msgpack_object *k = &o->via.map.ptr[i].key;

            if (k->via.str.size == n && memcmp(k->via.str.ptr, p, n) == 0)
                break;
        }
        if (i == o->via.map.size)
            fail_msg("no key %.*s in %s", (int)n, p, path);
        o = &o->via.map.ptr[i].val;
        p += n;
        while (*p == '[') {
            unsigned long idx = strtoul(p + 1, NULL, 10);

            assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
            assert_true(idx < o->via.array.size);
            o = &o->via.array.ptr[idx];
            p = strchr(p, ']') + 1;
        }
        if (*p == '.')
            p++;
    }
    return o;
}

/* Decode base with the value at path replaced by v. */
static int
try_with(const struct buf *base, enum bproto_op op, const char *path,
         msgpack_object v)
{
    struct tree t;
    struct buf m;
    msgpack_object *at;
    int r;

    tree_load(&t, base);
    at = tree_at(&t, path);
    *at = v;
    tree_pack(&t.root, &m);
    r = check_bytes(m.data, m.len, op, NULL);
    buf_cleanup(&m);
    tree_free(&t);
    return r;
}

static msgpack_object
o_uint(uint64_t u)
{
    msgpack_object o;

    o.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    o.via.u64 = u;
    return o;
}

static msgpack_object
o_neg(int64_t i)
{
    msgpack_object o;

    o.type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
    o.via.i64 = i;
    return o;
}

static msgpack_object
o_bool(int b)
{
    msgpack_object o;

    o.type = MSGPACK_OBJECT_BOOLEAN;
    o.via.boolean = b != 0;
    return o;
}

/* A str or bin of n bytes of c (static storage, enough for any bound). */
static char big[2u << 20];

static msgpack_object
o_strn(const char *p, size_t n)
{
    msgpack_object o;

    o.type = MSGPACK_OBJECT_STR;
    o.via.str.ptr = p;
    o.via.str.size = (uint32_t)n;
    return o;
}

static msgpack_object
o_fill(char c, size_t n)
{
    assert_true(n <= sizeof(big));
    memset(big, c, n);
    return o_strn(big, n);
}

static msgpack_object
o_bin(size_t n)
{
    msgpack_object o;

    assert_true(n <= sizeof(big));
    memset(big, 0x5a, n);
    o.type = MSGPACK_OBJECT_BIN;
    o.via.bin.ptr = big;
    o.via.bin.size = (uint32_t)n;
    return o;
}

/* An array of n copies of el (elements in *store, freed by the caller). */
static msgpack_object
o_copies(const msgpack_object *el, size_t n, msgpack_object **store)
{
    msgpack_object o;

    *store = malloc((n ? n : 1) * sizeof(**store));
    assert_non_null(*store);
    for (size_t i = 0; i < n; i++)
        (*store)[i] = *el;
    o.type = MSGPACK_OBJECT_ARRAY;
    o.via.array.ptr = *store;
    o.via.array.size = (uint32_t)n;
    return o;
}

/* ---- tests -------------------------------------------------------------- */

static void
test_names(void **state)
{
    enum bproto_op op;

    (void)state;
    for (int i = 0; i < BPROTO_OP_COUNT; i++) {
        const char *n = bproto_op_name((enum bproto_op)i);

        assert_non_null(n);
        assert_true(strlen(n) <= BPROTO_OP_MAX);
        assert_int_equal(bproto_op_parse(n, strlen(n), &op), 0);
        assert_int_equal(op, i);
    }
    assert_null(bproto_op_name(BPROTO_OP_COUNT));
    assert_int_equal(bproto_op_parse("logo", 4, &op), RM_E_NOTFOUND);
    assert_int_equal(bproto_op_parse("logonx", 6, &op), RM_E_NOTFOUND);
    assert_string_equal(bproto_op_name(BPROTO_OP_FETCH_ATTACHMENT),
                        "fetch_attachment");
    for (int i = 0; i < BPROTO_E_COUNT; i++) {
        assert_non_null(bproto_errcode_name((enum bproto_errcode)i));
        for (int j = 0; j < i; j++)
            assert_string_not_equal(
                bproto_errcode_name((enum bproto_errcode)i),
                bproto_errcode_name((enum bproto_errcode)j));
    }
    assert_string_equal(bproto_errcode_name(BPROTO_E_AMBIGUOUS_RECIPIENT),
                        "ambiguous_recipient");
    assert_null(bproto_errcode_name(BPROTO_E_COUNT));
    assert_string_equal(bproto_role_name(BPROTO_ROLE_NONE), "");
    assert_string_equal(bproto_role_name(BPROTO_ROLE_DRAFTS), "drafts");
    assert_null(bproto_role_name(BPROTO_ROLE_COUNT));
    assert_string_equal(bproto_change_name(BPROTO_CHANGE_DELETED), "deleted");
    assert_null(bproto_change_name(BPROTO_CHANGE_COUNT));
}

static void
test_req_roundtrip(void **state)
{
    (void)state;
    for (int i = 0; i < BPROTO_OP_COUNT; i++) {
        struct bproto_req q, d;
        struct buf b;

        fill_req((enum bproto_op)i, &q);
        enc_req(&q, &b);
        assert_int_equal(check_bytes(b.data, b.len, BPROTO_OP_COUNT, &b), 0);
        assert_int_equal(bproto_req_decode(b.data, b.len, &d), 0);
        assert_int_equal(d.id, q.id);
        assert_int_equal(d.op, q.op);
        assert_int_equal(d.has_id, 1);
        bproto_req_cleanup(&d);
        buf_cleanup(&b);
    }
}

/* Decoded values, field by field, for the richer kinds. */
static void
test_req_fields(void **state)
{
    struct bproto_req q, d;
    const struct bproto_compose *m;
    struct buf b;

    (void)state;
    fill_req(BPROTO_OP_LOGON, &q);
    enc_req(&q, &b);
    assert_int_equal(bproto_req_decode(b.data, b.len, &d), 0);
    assert_int_equal(d.a.logon.version, 1);
    assert_string_equal(d.a.logon.user, "alice@example.org");
    assert_string_equal(d.a.logon.password, "s3cret ü");
    assert_string_equal(d.a.logon.client, "relaymesh-mapi/0.1 (x64)");
    bproto_req_cleanup(&d);
    assert_null(d.mem);
    buf_cleanup(&b);

    fill_req(BPROTO_OP_SAVE, &q);
    enc_req(&q, &b);
    assert_int_equal(bproto_req_decode(b.data, b.len, &d), 0);
    /* The decoded struct owns its memory: the input may go now. */
    memset(b.data, 0, b.len);
    buf_cleanup(&b);
    assert_string_equal(d.a.save.folder, "drafts");
    assert_int_equal(d.a.save.id, 9);
    m = &d.a.save.m;
    assert_non_null(m->from);
    assert_string_equal(m->from->name, "Alice Ämter");
    assert_string_equal(m->from->address, "alice@example.org");
    assert_int_equal(m->n_to, 2);
    assert_string_equal(m->to[0].name, "Ärger Müller");
    assert_string_equal(m->to[1].name, "");
    assert_string_equal(m->to[1].address, "bob@example.net");
    assert_int_equal(m->n_cc, 1);
    assert_string_equal(m->cc[0].name, "Zoë 😀");
    assert_int_equal(m->n_bcc, 1);
    assert_string_equal(m->subject, "Grüße aus Köln 😀");
    assert_string_equal(m->body, "Hallo,\r\n\r\nanbei der Bericht.\r\n");
    assert_int_equal(m->body_upload, 0);
    assert_int_equal(m->n_atts, 3);
    assert_string_equal(m->atts[0].name, "report.pdf");
    assert_string_equal(m->atts[0].type, "application/pdf");
    assert_int_equal(m->atts[0].len, sizeof(bin6));
    assert_memory_equal(m->atts[0].data, bin6, sizeof(bin6));
    assert_int_equal(m->atts[1].upload, 42);
    assert_null(m->atts[1].data);
    assert_int_equal(m->atts[2].len, 0);
    assert_int_equal(m->atts[2].upload, 0);
    assert_int_equal(m->flags, BPROTO_FLAG_RECEIPT);
    bproto_req_cleanup(&d);

    /* The minimal message: no from, no lists, body by upload. */
    memset(&q, 0, sizeof(q));
    q.op = BPROTO_OP_SEND;
    q.a.send.body_upload = 7;
    enc_req(&q, &b);
    assert_int_equal(bproto_req_decode(b.data, b.len, &d), 0);
    assert_null(d.a.send.from);
    assert_int_equal(d.a.send.n_to + d.a.send.n_cc + d.a.send.n_bcc, 0);
    assert_null(d.a.send.to);
    assert_string_equal(d.a.send.subject, "");
    assert_null(d.a.send.body);
    assert_int_equal(d.a.send.body_upload, 7);
    assert_int_equal(d.a.send.n_atts, 0);
    bproto_req_cleanup(&d);
    buf_cleanup(&b);

    fill_req(BPROTO_OP_FETCH_ATTACHMENT, &q);
    enc_req(&q, &b);
    assert_int_equal(bproto_req_decode(b.data, b.len, &d), 0);
    assert_int_equal(d.a.fetch.index, 2);
    assert_int_equal(d.a.fetch.offset, 524288);
    assert_int_equal(d.a.fetch.max, 65536);
    bproto_req_cleanup(&d);
    buf_cleanup(&b);
}

static void
test_res_roundtrip(void **state)
{
    (void)state;
    for (int i = 0; i < BPROTO_OP_COUNT; i++) {
        struct bproto_res s, d;
        struct buf b;

        fill_res((enum bproto_op)i, &s);
        enc_res(&s, &b);
        assert_int_equal(check_bytes(b.data, b.len, s.op, &b), 0);
        assert_int_equal(bproto_res_decode(b.data, b.len, s.op, &d), 0);
        assert_int_equal(d.id, s.id);
        assert_int_equal(d.ok, 1);
        assert_int_equal(d.op, s.op);
        bproto_res_cleanup(&d);
        buf_cleanup(&b);
    }
}

static void
test_res_fields(void **state)
{
    struct bproto_res s, d;
    const struct bproto_message *m;
    struct buf b;

    (void)state;
    fill_res(BPROTO_OP_READ, &s);
    enc_res(&s, &b);
    assert_int_equal(bproto_res_decode(b.data, b.len, BPROTO_OP_READ, &d), 0);
    buf_cleanup(&b);
    m = &d.r.read;
    assert_int_equal(m->id, 5);
    assert_int_equal(m->flags, BPROTO_FLAG_READ | BPROTO_FLAG_ATTACH | 0x10000);
    assert_string_equal(m->from.address, "alice@example.org");
    assert_int_equal(m->n_to, 2);
    assert_int_equal(m->n_cc, 1);
    assert_int_equal(m->n_bcc, 0);
    assert_string_equal(m->subject, "Grüße aus Köln 😀");
    assert_int_equal(m->date, 1767225600);
    assert_int_equal(m->received, -5);
    assert_string_equal(m->message_id, "<20260101.abc@example.org>");
    assert_int_equal(m->size, 4711);
    assert_non_null(m->headers);
    assert_string_equal(m->body, "Hallo,\r\nWelt\r\n");
    assert_int_equal(m->body_size, 9000);
    assert_int_equal(m->n_atts, 2);
    assert_int_equal(m->atts[1].index, 2);
    assert_string_equal(m->atts[1].name, "Übersicht.xlsx");
    assert_int_equal(m->atts[0].size, 123456);
    bproto_res_cleanup(&d);

    /* Envelope only: no headers, no body. */
    fill_res(BPROTO_OP_READ, &s);
    s.r.read.headers = NULL;
    s.r.read.body = NULL;
    enc_res(&s, &b);
    assert_int_equal(bproto_res_decode(b.data, b.len, BPROTO_OP_READ, &d), 0);
    assert_null(d.r.read.headers);
    assert_null(d.r.read.body);
    assert_int_equal(d.r.read.body_size, 9000);
    bproto_res_cleanup(&d);
    buf_cleanup(&b);

    fill_res(BPROTO_OP_LOGON, &s);
    enc_res(&s, &b);
    assert_int_equal(bproto_res_decode(b.data, b.len, BPROTO_OP_LOGON, &d), 0);
    assert_int_equal(d.r.logon.n_folders, 3);
    assert_string_equal(d.r.logon.folders[1].name, "Sent Items");
    assert_int_equal(d.r.logon.folders[1].role, BPROTO_ROLE_SENT);
    assert_int_equal(d.r.logon.folders[0].unread, 3);
    assert_int_equal(d.r.logon.folders[0].change, 1041);
    assert_int_equal(d.r.logon.max_message, 26214400);
    bproto_res_cleanup(&d);
    buf_cleanup(&b);

    fill_res(BPROTO_OP_FETCH_BODY, &s);
    enc_res(&s, &b);
    assert_int_equal(bproto_res_decode(b.data, b.len, BPROTO_OP_FETCH_BODY, &d),
                     0);
    assert_int_equal(d.r.chunk.len, 6);
    assert_memory_equal(d.r.chunk.data, bin6, 6);
    assert_int_equal(d.r.chunk.last, 1);
    bproto_res_cleanup(&d);
    buf_cleanup(&b);

    /* Resolve: unknown, resolved and ambiguous differ by the count. */
    fill_res(BPROTO_OP_RESOLVE, &s);
    s.r.resolve.n = 0;
    s.r.resolve.more = 0;
    enc_res(&s, &b);
    assert_int_equal(bproto_res_decode(b.data, b.len, BPROTO_OP_RESOLVE, &d),
                     0);
    assert_int_equal(d.r.resolve.n, 0);
    bproto_res_cleanup(&d);
    buf_cleanup(&b);

    fill_res(BPROTO_OP_CHANGES, &s);
    enc_res(&s, &b);
    assert_int_equal(bproto_res_decode(b.data, b.len, BPROTO_OP_CHANGES, &d),
                     0);
    assert_int_equal(d.r.changes.n, 3);
    assert_int_equal(d.r.changes.changes[1].kind, BPROTO_CHANGE_CHANGED);
    assert_int_equal(d.r.changes.changes[1].flags,
                     BPROTO_FLAG_READ | BPROTO_FLAG_FLAGGED);
    assert_int_equal(d.r.changes.next, 104);
    bproto_res_cleanup(&d);
    buf_cleanup(&b);
}

static void
test_error_response(void **state)
{
    struct bproto_res d;
    struct buf b;

    (void)state;
    for (int i = 0; i < BPROTO_E_COUNT; i++) {
        buf_init(&b, BPROTO_MSG_MAX);
        assert_int_equal(bproto_res_encode_err(&b, 77, (enum bproto_errcode)i,
                                               "Recipient Ü not found"),
                         0);
        /* A failure decodes whatever op was asked. */
        assert_int_equal(bproto_res_decode(b.data, b.len, BPROTO_OP_SEND, &d),
                         0);
        assert_int_equal(d.ok, 0);
        assert_int_equal(d.id, 77);
        assert_int_equal(d.err.code, i);
        assert_string_equal(d.err.msg, "Recipient Ü not found");
        bproto_res_cleanup(&d);
        assert_int_equal(check_bytes(b.data, b.len, BPROTO_OP_PING, &b), 0);
        buf_cleanup(&b);
    }
    buf_init(&b, BPROTO_MSG_MAX);
    assert_int_equal(bproto_res_encode_err(&b, 1, BPROTO_E_COUNT, "x"),
                     RM_E_INVAL);
    assert_int_equal(bproto_res_encode_err(&b, 1, BPROTO_E_FAILURE, NULL), 0);
    assert_int_equal(bproto_res_decode(b.data, b.len, BPROTO_OP_PING, &d), 0);
    assert_string_equal(d.err.msg, "");
    bproto_res_cleanup(&d);
    mutate_all(&b, BPROTO_OP_SEND, res_key_optional, BPROTO_OP_SEND);
    buf_cleanup(&b);
}

static void
test_mutations(void **state)
{
    (void)state;
    for (int i = 0; i < BPROTO_OP_COUNT; i++) {
        struct bproto_req q;
        struct bproto_res s;
        struct buf b;

        fill_req((enum bproto_op)i, &q);
        enc_req(&q, &b);
        mutate_all(&b, BPROTO_OP_COUNT, req_key_optional, q.op);
        buf_cleanup(&b);
        fill_res((enum bproto_op)i, &s);
        enc_res(&s, &b);
        mutate_all(&b, s.op, res_key_optional, s.op);
        buf_cleanup(&b);
    }
    /* The second forms: body by upload, and an empty compose. */
    {
        struct bproto_req q;
        struct buf b;

        fill_req(BPROTO_OP_SEND, &q);
        q.a.send.body = NULL;
        q.a.send.body_upload = 3;
        enc_req(&q, &b);
        mutate_all(&b, BPROTO_OP_COUNT, req_key_optional, q.op);
        buf_cleanup(&b);
    }
}

static void
test_defaults(void **state)
{
    struct bproto_req d;
    struct bproto_res s;
    /* {"id": 1, "op": "read", "a": {"folder": "inbox", "id": 2}} */
    static const char read_min[] = "\x83\xa2id\x01\xa2op\xa4read\xa1\x61\x82"
                                   "\xa6\x66older\xa5inbox\xa2id\x02";
    /* {"id":1,"op":"find","a":{"folder":"x","after":nil,"limit":1}} */
    static const char find_nil[] = "\x83\xa2id\x01\xa2op\xa4\x66ind\xa1\x61\x83"
                                   "\xa6\x66older\xa1x\xa5\x61\x66ter\xc0"
                                   "\xa5limit\x01";
    /* {"id": 3, "ok": true, "r": {"exact": false}} (resolve) */
    static const char resolve_min[] = "\x83\xa2id\x03\xa2ok\xc3\xa1r\x81"
                                      "\xa5\x65xact\xc2";

    (void)state;
    assert_int_equal(bproto_req_decode(read_min, sizeof(read_min) - 1, &d), 0);
    assert_int_equal(d.op, BPROTO_OP_READ);
    assert_int_equal(d.a.read.id, 2);
    assert_int_equal(d.a.read.peek, 0);
    assert_int_equal(d.a.read.envelope_only, 0);
    assert_int_equal(d.a.read.body, 1);
    assert_int_equal(d.a.read.headers, 0);
    bproto_req_cleanup(&d);
    assert_int_equal(bproto_req_decode(find_nil, sizeof(find_nil) - 1, &d), 0);
    assert_int_equal(d.a.find.after, 0);
    assert_int_equal(d.a.find.unread_only, 0);
    assert_int_equal(d.a.find.limit, 1);
    bproto_req_cleanup(&d);
    assert_int_equal(bproto_res_decode(resolve_min, sizeof(resolve_min) - 1,
                                       BPROTO_OP_RESOLVE, &s),
                     0);
    assert_int_equal(s.r.resolve.n, 0);
    assert_null(s.r.resolve.matches);
    assert_int_equal(s.r.resolve.exact, 0);
    assert_int_equal(s.r.resolve.more, 0);
    bproto_res_cleanup(&s);
}

static void
test_envelope(void **state)
{
    struct bproto_req d;
    struct bproto_res s;
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    uint64_t id;
    /* {"id": 9, "op": "props", "a": {}} */
    static const char unknown_op[] =
        "\x83\xa2id\x09\xa2op\xa5props\xa1\x61\x80";
    /* {"op": "ping", "a": {}} */
    static const char no_id[] = "\x82\xa2op\xa4ping\xa1\x61\x80";
    /* {"id": 7, "op": "delete", "a": {"id": 1}} */
    static const char bad_args[] = "\x83\xa2id\x07\xa2op\xa6\x64\x65lete\xa1"
                                   "\x61\x81\xa2id\x01";
    /* {"id": 7, "op": "ping"} */
    static const char no_args[] = "\x82\xa2id\x07\xa2op\xa4ping";
    /* {"id": -1, "op": "ping", "a": {}} */
    static const char neg_id[] = "\x83\xa2id\xff\xa2op\xa4ping\xa1\x61\x80";
    /* {"id": 5, "ok": true} */
    static const char ok_no_r[] = "\x82\xa2id\x05\xa2ok\xc3";
    /* {"id": 5, "ok": false, "r": {}} */
    static const char err_no_err[] = "\x83\xa2id\x05\xa2ok\xc2\xa1r\x80";
    /* {"id": 5, "ok": false, "err": {"code": "quota_exceeded", "msg": ""}} */
    static const char err_new[] = "\x83\xa2id\x05\xa2ok\xc2\xa3\x65rr\x82"
                                  "\xa4\x63ode\xaequota_exceeded\xa3msg\xa0";
    struct buf b;

    (void)state;
    assert_int_equal(bproto_req_decode(unknown_op, sizeof(unknown_op) - 1, &d),
                     RM_E_NOTFOUND);
    assert_int_equal(d.has_id, 1);
    assert_int_equal(d.id, 9);
    assert_null(d.mem);
    bproto_req_cleanup(&d);
    assert_int_equal(bproto_req_decode(no_id, sizeof(no_id) - 1, &d),
                     RM_E_PROTO);
    assert_int_equal(d.has_id, 0);
    assert_int_equal(bproto_req_decode(neg_id, sizeof(neg_id) - 1, &d),
                     RM_E_PROTO);
    assert_int_equal(d.has_id, 0);
    assert_int_equal(bproto_req_decode(bad_args, sizeof(bad_args) - 1, &d),
                     RM_E_PROTO);
    assert_int_equal(d.has_id, 1);
    assert_int_equal(d.id, 7);
    assert_string_equal(d.why, "a.folder: missing");
    /* The node answers with the reason. */
    buf_init(&b, BPROTO_MSG_MAX);
    assert_int_equal(
        bproto_res_encode_err(&b, d.id, BPROTO_E_BAD_REQUEST, d.why), 0);
    buf_cleanup(&b);
    assert_int_equal(bproto_req_decode(no_args, sizeof(no_args) - 1, &d),
                     RM_E_PROTO);
    assert_int_equal(d.has_id, 1);
    /* Not a map, empty, too long, garbage. */
    assert_int_equal(bproto_req_decode("\x93\x01\x02\x03", 4, &d), RM_E_PROTO);
    assert_int_equal(bproto_req_decode("", 0, &d), RM_E_PROTO);
    assert_int_equal(bproto_req_decode(big, BPROTO_MSG_MAX + 1, &d),
                     RM_E_TOOBIG);
    assert_int_equal(bproto_req_decode("\xc1", 1, &d), RM_E_PROTO);
    assert_int_equal(bproto_req_decode(NULL, 4, &d), RM_E_INVAL);
    assert_int_equal(bproto_req_decode(no_id, 4, NULL), RM_E_INVAL);

    assert_int_equal(
        bproto_res_decode(ok_no_r, sizeof(ok_no_r) - 1, BPROTO_OP_PING, &s),
        RM_E_PROTO);
    assert_int_equal(bproto_res_decode(err_no_err, sizeof(err_no_err) - 1,
                                       BPROTO_OP_PING, &s),
                     RM_E_PROTO);
    /* An error code from a newer node is a failure. */
    assert_int_equal(
        bproto_res_decode(err_new, sizeof(err_new) - 1, BPROTO_OP_SEND, &s), 0);
    assert_int_equal(s.ok, 0);
    assert_int_equal(s.err.code, BPROTO_E_FAILURE);
    bproto_res_cleanup(&s);
    assert_int_equal(
        bproto_res_decode(ok_no_r, sizeof(ok_no_r) - 1, BPROTO_OP_COUNT, &s),
        RM_E_INVAL);

    /* The id of a value already unpacked; the _obj decoder on it. */
    assert_true(msgpack_zone_init(&z, 1024));
    assert_int_equal(msgpack_unpack(err_new, sizeof(err_new) - 1, &off, &z, &o),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(bproto_res_id(&o, &id), 0);
    assert_int_equal(id, 5);
    assert_int_equal(bproto_res_decode_obj(&o, BPROTO_OP_READ, &s), 0);
    assert_int_equal(s.id, 5);
    msgpack_zone_destroy(&z);
    bproto_res_cleanup(&s);
    off = 0;
    assert_true(msgpack_zone_init(&z, 1024));
    assert_int_equal(msgpack_unpack(no_id, sizeof(no_id) - 1, &off, &z, &o),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(bproto_res_id(&o, &id), RM_E_PROTO);
    assert_int_equal(bproto_req_decode_obj(&o, &d), RM_E_PROTO);
    msgpack_zone_destroy(&z);
}

static void
test_text(void **state)
{
    static const struct {
        const char *s;
        size_t n;
        int ok;
    } cases[] = {
        {"", 0, 1},
        {"plain", 5, 1},
        {"Grüße", 7, 1},
        {"\xe2\x82\xac", 3, 1},     /* U+20AC */
        {"\xf0\x9f\x98\x80", 4, 1}, /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 4, 1}, /* U+10FFFF */
        {"a\0b", 3, 0},             /* NUL */
        {"\xc3", 1, 0},             /* truncated */
        {"\xe2\x82", 2, 0},         /* truncated */
        {"\xc0\xaf", 2, 0},         /* overlong "/" */
        {"\xe0\x80\xaf", 3, 0},     /* overlong */
        {"\xed\xa0\x80", 3, 0},     /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 4, 0}, /* U+110000 */
        {"\x80", 1, 0},             /* lone continuation */
        {"\xff", 1, 0},
        {"\xc3\x28", 2, 0}, /* bad continuation */
    };
    struct bproto_req q;
    struct buf b;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(bproto_text_valid(cases[i].s, cases[i].n),
                         cases[i].ok);
    /* Over the wire: every bad case is refused in a string field. */
    fill_req(BPROTO_OP_RESOLVE, &q);
    enc_req(&q, &b);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].n == 0)
            continue;
        assert_int_equal(try_with(&b, BPROTO_OP_COUNT, "a.name",
                                  o_strn(cases[i].s, cases[i].n)),
                         cases[i].ok ? 0 : RM_E_PROTO);
    }
    buf_cleanup(&b);
    /* And the encoder refuses them. */
    q.a.resolve.name = "\xc0\xaf";
    buf_init(&b, BPROTO_MSG_MAX);
    assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
    assert_int_equal(b.len, 0);
    buf_cleanup(&b);
}

/* At the bound accepted, one past refused: the value at path of the
 * encoding of q (a request) or s (a response). */
static void
bound_str(const struct buf *b, enum bproto_op op, const char *path, size_t min,
          size_t max)
{
    assert_int_equal(try_with(b, op, path, o_fill('a', max)), 0);
    assert_int_equal(try_with(b, op, path, o_fill('a', max + 1)), RM_E_PROTO);
    if (min > 0)
        assert_int_equal(try_with(b, op, path, o_fill('a', min - 1)),
                         RM_E_PROTO);
    else
        assert_int_equal(try_with(b, op, path, o_fill('a', 0)), 0);
}

static void
bound_uint(const struct buf *b, enum bproto_op op, const char *path,
           uint64_t min, uint64_t max)
{
    assert_int_equal(try_with(b, op, path, o_uint(max)), 0);
    if (max < UINT64_MAX)
        assert_int_equal(try_with(b, op, path, o_uint(max + 1)), RM_E_PROTO);
    assert_int_equal(try_with(b, op, path, o_uint(min)), 0);
    if (min > 0)
        assert_int_equal(try_with(b, op, path, o_uint(min - 1)), RM_E_PROTO);
    assert_int_equal(try_with(b, op, path, o_neg(-1)), RM_E_PROTO);
}

static void
bound_list(const struct buf *b, enum bproto_op op, const char *path, size_t max)
{
    struct tree t;
    msgpack_object *store, el;

    tree_load(&t, b);
    el = tree_at(&t, path)->via.array.ptr[0];
    assert_int_equal(try_with(b, op, path, o_copies(&el, max, &store)), 0);
    free(store);
    assert_int_equal(try_with(b, op, path, o_copies(&el, max + 1, &store)),
                     RM_E_PROTO);
    free(store);
    tree_free(&t);
}

static void
test_req_bounds(void **state)
{
    const enum bproto_op Q = BPROTO_OP_COUNT;
    struct bproto_req q;
    struct buf b;
    struct tree t;
    msgpack_object *store, el;

    (void)state;
    fill_req(BPROTO_OP_LOGON, &q);
    enc_req(&q, &b);
    bound_str(&b, Q, "a.user", 1, BPROTO_ADDRESS_MAX);
    bound_str(&b, Q, "a.password", 0, BPROTO_PASSWORD_MAX);
    bound_str(&b, Q, "a.client", 0, BPROTO_CLIENT_MAX);
    bound_uint(&b, Q, "a.v", 1, UINT32_MAX);
    assert_int_equal(try_with(&b, Q, "op", o_fill('a', BPROTO_OP_MAX + 1)),
                     RM_E_PROTO);
    assert_int_equal(try_with(&b, Q, "op", o_strn("logon", 5)), 0);
    assert_int_equal(try_with(&b, Q, "a.password", o_bool(1)), RM_E_PROTO);
    buf_cleanup(&b);

    fill_req(BPROTO_OP_FIND, &q);
    enc_req(&q, &b);
    bound_str(&b, Q, "a.folder", 1, BPROTO_FOLDER_ID_MAX);
    bound_uint(&b, Q, "a.limit", 1, BPROTO_FIND_MAX);
    bound_uint(&b, Q, "a.after", 1, UINT64_MAX);
    buf_cleanup(&b);

    fill_req(BPROTO_OP_READ, &q);
    enc_req(&q, &b);
    bound_uint(&b, Q, "a.id", 1, UINT64_MAX);
    assert_int_equal(try_with(&b, Q, "a.peek", o_uint(1)), RM_E_PROTO);
    buf_cleanup(&b);

    fill_req(BPROTO_OP_FETCH_ATTACHMENT, &q);
    enc_req(&q, &b);
    bound_uint(&b, Q, "a.max", 1, BPROTO_CHUNK_MAX);
    bound_uint(&b, Q, "a.offset", 0, BPROTO_MESSAGE_MAX);
    bound_uint(&b, Q, "a.index", 0, UINT32_MAX);
    buf_cleanup(&b);

    fill_req(BPROTO_OP_UPLOAD, &q);
    enc_req(&q, &b);
    assert_int_equal(try_with(&b, Q, "a.data", o_bin(BPROTO_CHUNK_MAX)), 0);
    assert_int_equal(try_with(&b, Q, "a.data", o_bin(BPROTO_CHUNK_MAX + 1)),
                     RM_E_PROTO);
    assert_int_equal(try_with(&b, Q, "a.data", o_fill('a', 3)), RM_E_PROTO);
    bound_uint(&b, Q, "a.offset", 0, BPROTO_MESSAGE_MAX);
    buf_cleanup(&b);

    fill_req(BPROTO_OP_SEND, &q);
    enc_req(&q, &b);
    bound_str(&b, Q, "a.subject", 0, BPROTO_SUBJECT_MAX);
    bound_str(&b, Q, "a.to[0].name", 0, BPROTO_NAME_MAX);
    bound_str(&b, Q, "a.to[0].address", 0, BPROTO_ADDRESS_MAX);
    bound_str(&b, Q, "a.from.address", 0, BPROTO_ADDRESS_MAX);
    bound_str(&b, Q, "a.attachments[0].name", 0, BPROTO_FILENAME_MAX);
    bound_str(&b, Q, "a.attachments[0].type", 0, BPROTO_MIME_MAX);
    bound_uint(&b, Q, "a.flags", 0, BPROTO_COUNT_MAX);
    bound_uint(&b, Q, "a.attachments[1].upload", 1, UINT64_MAX);
    /* Recipients: to + cc + bcc together. to has 2, cc 1, bcc 1. */
    tree_load(&t, &b);
    el = tree_at(&t, "a.to")->via.array.ptr[0];
    assert_int_equal(
        try_with(&b, Q, "a.to", o_copies(&el, BPROTO_RCPTS_MAX - 2, &store)),
        0);
    free(store);
    assert_int_equal(
        try_with(&b, Q, "a.to", o_copies(&el, BPROTO_RCPTS_MAX - 1, &store)),
        RM_E_PROTO);
    free(store);
    assert_int_equal(
        try_with(&b, Q, "a.bcc", o_copies(&el, BPROTO_RCPTS_MAX - 3, &store)),
        0);
    free(store);
    assert_int_equal(
        try_with(&b, Q, "a.bcc", o_copies(&el, BPROTO_RCPTS_MAX - 2, &store)),
        RM_E_PROTO);
    free(store);
    /* An attachment with both data and upload, or neither. */
    el = *tree_at(&t, "a.attachments[1].upload");
    assert_int_equal(try_with(&b, Q, "a.attachments[0].data", el), RM_E_PROTO);
    tree_free(&t);
    /* Inline text and data together: the body has 30 bytes, attachment 0
     * 6, attachment 2 none. */
    {
        size_t room = BPROTO_INLINE_MAX - strlen(q.a.send.body);

        assert_int_equal(try_with(&b, Q, "a.attachments[0].data", o_bin(room)),
                         0);
        assert_int_equal(
            try_with(&b, Q, "a.attachments[0].data", o_bin(room + 1)),
            RM_E_PROTO);
        assert_int_equal(
            try_with(&b, Q, "a.body", o_fill('b', BPROTO_INLINE_MAX - 6)), 0);
        assert_int_equal(
            try_with(&b, Q, "a.body", o_fill('b', BPROTO_INLINE_MAX - 5)),
            RM_E_PROTO);
    }
    buf_cleanup(&b);
    /* Too many attachments (each an upload: no inline data). */
    {
        struct bproto_att_in many[BPROTO_ATTS_MAX + 1];

        fill_req(BPROTO_OP_SEND, &q);
        for (int i = 0; i <= BPROTO_ATTS_MAX; i++)
            many[i] = atts_in[1];
        q.a.send.atts = many;
        q.a.send.n_atts = BPROTO_ATTS_MAX;
        enc_req(&q, &b);
        bound_list(&b, Q, "a.attachments", BPROTO_ATTS_MAX);
        buf_cleanup(&b);
        q.a.send.n_atts = BPROTO_ATTS_MAX + 1;
        buf_init(&b, BPROTO_MSG_MAX);
        assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
        buf_cleanup(&b);
    }
    /* body and body_upload together. */
    fill_req(BPROTO_OP_SEND, &q);
    q.a.send.body_upload = 5;
    buf_init(&b, BPROTO_MSG_MAX);
    assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
    q.a.send.body = NULL;
    assert_int_equal(bproto_req_encode(&b, &q), 0);
    buf_cleanup(&b);
    fill_req(BPROTO_OP_SEND, &q);
    enc_req(&q, &b);
    /* Make a body_upload appear beside body: rename "subject". */
    tree_load(&t, &b);
    {
        msgpack_object *a = tree_at(&t, "a");
        struct buf m;

        for (uint32_t i = 0; i < a->via.map.size; i++) {
            msgpack_object *k = &a->via.map.ptr[i].key;

            if (k->via.str.size == 7 &&
                memcmp(k->via.str.ptr, "subject", 7) == 0) {
                k->via.str.ptr = "body_upload";
                k->via.str.size = 11;
                a->via.map.ptr[i].val = o_uint(5);
            }
        }
        tree_pack(&t.root, &m);
        assert_int_equal(check_bytes(m.data, m.len, Q, NULL), RM_E_PROTO);
        buf_cleanup(&m);
    }
    tree_free(&t);
    buf_cleanup(&b);

    fill_req(BPROTO_OP_RESOLVE, &q);
    enc_req(&q, &b);
    bound_str(&b, Q, "a.name", 1, BPROTO_NAME_MAX);
    buf_cleanup(&b);

    fill_req(BPROTO_OP_CHANGES, &q);
    enc_req(&q, &b);
    bound_uint(&b, Q, "a.limit", 1, BPROTO_CHANGES_MAX);
    bound_uint(&b, Q, "a.since", 0, UINT64_MAX);
    buf_cleanup(&b);
}

static void
test_res_bounds(void **state)
{
    struct bproto_res s;
    struct buf b;

    (void)state;
    fill_res(BPROTO_OP_LOGON, &s);
    enc_res(&s, &b);
    bound_str(&b, BPROTO_OP_LOGON, "r.user", 1, BPROTO_ADDRESS_MAX);
    bound_str(&b, BPROTO_OP_LOGON, "r.node", 0, BPROTO_NODE_MAX);
    bound_uint(&b, BPROTO_OP_LOGON, "r.max_message", 0, BPROTO_MESSAGE_MAX);
    bound_list(&b, BPROTO_OP_LOGON, "r.folders", BPROTO_FOLDERS_MAX);
    bound_str(&b, BPROTO_OP_LOGON, "r.folders[0].id", 1, BPROTO_FOLDER_ID_MAX);
    bound_str(&b, BPROTO_OP_LOGON, "r.folders[0].name", 0,
              BPROTO_FOLDER_NAME_MAX);
    /* unread <= total (12). */
    assert_int_equal(
        try_with(&b, BPROTO_OP_LOGON, "r.folders[0].unread", o_uint(12)), 0);
    assert_int_equal(
        try_with(&b, BPROTO_OP_LOGON, "r.folders[0].unread", o_uint(13)),
        RM_E_PROTO);
    /* A role from a newer node: no special role. */
    {
        struct tree t;
        struct buf m;
        struct bproto_res d;

        tree_load(&t, &b);
        *tree_at(&t, "r.folders[0].role") = o_strn("archive", 7);
        tree_pack(&t.root, &m);
        assert_int_equal(bproto_res_decode(m.data, m.len, BPROTO_OP_LOGON, &d),
                         0);
        assert_int_equal(d.r.logon.folders[0].role, BPROTO_ROLE_NONE);
        bproto_res_cleanup(&d);
        buf_cleanup(&m);
        tree_free(&t);
    }
    assert_int_equal(
        try_with(&b, BPROTO_OP_LOGON, "r.folders[0].role", o_fill('r', 33)),
        RM_E_PROTO);
    buf_cleanup(&b);

    fill_res(BPROTO_OP_FIND, &s);
    enc_res(&s, &b);
    bound_list(&b, BPROTO_OP_FIND, "r.ids", BPROTO_FIND_MAX);
    bound_uint(&b, BPROTO_OP_FIND, "r.ids[0]", 1, UINT64_MAX);
    buf_cleanup(&b);

    fill_res(BPROTO_OP_READ, &s);
    enc_res(&s, &b);
    bound_str(&b, BPROTO_OP_READ, "r.subject", 0, BPROTO_SUBJECT_MAX);
    bound_str(&b, BPROTO_OP_READ, "r.message_id", 0, BPROTO_MSGID_MAX);
    bound_str(&b, BPROTO_OP_READ, "r.headers", 0, BPROTO_HEADERS_MAX);
    bound_str(&b, BPROTO_OP_READ, "r.from.name", 0, BPROTO_NAME_MAX);
    bound_list(&b, BPROTO_OP_READ, "r.attachments", BPROTO_ATTS_MAX);
    bound_uint(&b, BPROTO_OP_READ, "r.size", 0, BPROTO_MESSAGE_MAX);
    bound_uint(&b, BPROTO_OP_READ, "r.attachments[0].size", 0,
               BPROTO_MESSAGE_MAX);
    bound_uint(&b, BPROTO_OP_READ, "r.id", 1, UINT64_MAX);
    assert_int_equal(try_with(&b, BPROTO_OP_READ, "r.date", o_neg(INT64_MIN)),
                     0);
    assert_int_equal(try_with(&b, BPROTO_OP_READ, "r.date", o_uint(UINT64_MAX)),
                     RM_E_PROTO);
    /* body_size must cover the body sent (14 bytes). */
    assert_int_equal(try_with(&b, BPROTO_OP_READ, "r.body_size", o_uint(14)),
                     0);
    assert_int_equal(try_with(&b, BPROTO_OP_READ, "r.body_size", o_uint(13)),
                     RM_E_PROTO);
    assert_int_equal(try_with(&b, BPROTO_OP_READ, "r.body",
                              o_fill('b', BPROTO_INLINE_MAX + 1)),
                     RM_E_PROTO);
    buf_cleanup(&b);
    s.r.read.body_size = BPROTO_INLINE_MAX;
    enc_res(&s, &b);
    assert_int_equal(
        try_with(&b, BPROTO_OP_READ, "r.body", o_fill('b', BPROTO_INLINE_MAX)),
        0);
    bound_list(&b, BPROTO_OP_READ, "r.to", BPROTO_RCPTS_MAX - 1);
    buf_cleanup(&b);

    /* Chunks: offset + len <= total, last exactly at the end. */
    fill_res(BPROTO_OP_FETCH_ATTACHMENT, &s);
    enc_res(&s, &b);
    assert_int_equal(
        try_with(&b, BPROTO_OP_FETCH_ATTACHMENT, "r.total", o_uint(101)),
        RM_E_PROTO); /* not the end, yet last */
    assert_int_equal(
        try_with(&b, BPROTO_OP_FETCH_ATTACHMENT, "r.offset", o_uint(95)),
        RM_E_PROTO); /* past total */
    assert_int_equal(
        try_with(&b, BPROTO_OP_FETCH_ATTACHMENT, "r.last", o_bool(0)),
        RM_E_PROTO);
    assert_int_equal(try_with(&b, BPROTO_OP_FETCH_ATTACHMENT, "r.data",
                              o_bin(BPROTO_CHUNK_MAX + 1)),
                     RM_E_PROTO);
    buf_cleanup(&b);
    s.r.chunk.last = 0;
    s.r.chunk.offset = 0;
    s.r.chunk.total = BPROTO_MESSAGE_MAX;
    enc_res(&s, &b);
    assert_int_equal(try_with(&b, BPROTO_OP_FETCH_ATTACHMENT, "r.data",
                              o_bin(BPROTO_CHUNK_MAX)),
                     0);
    assert_int_equal(try_with(&b, BPROTO_OP_FETCH_ATTACHMENT, "r.total",
                              o_uint(BPROTO_MESSAGE_MAX + 1)),
                     RM_E_PROTO);
    assert_int_equal(
        try_with(&b, BPROTO_OP_FETCH_ATTACHMENT, "r.total", o_uint(7)), 0);
    buf_cleanup(&b);

    fill_res(BPROTO_OP_RESOLVE, &s);
    enc_res(&s, &b);
    bound_list(&b, BPROTO_OP_RESOLVE, "r.matches", BPROTO_MATCHES_MAX);
    buf_cleanup(&b);

    fill_res(BPROTO_OP_CHANGES, &s);
    enc_res(&s, &b);
    bound_list(&b, BPROTO_OP_CHANGES, "r.changes", BPROTO_CHANGES_MAX);
    assert_int_equal(try_with(&b, BPROTO_OP_CHANGES, "r.changes[0].kind",
                              o_strn("moved", 5)),
                     RM_E_PROTO);
    buf_cleanup(&b);

    fill_res(BPROTO_OP_SEND, &s);
    enc_res(&s, &b);
    bound_str(&b, BPROTO_OP_SEND, "r.message_id", 1, BPROTO_MSGID_MAX);
    buf_cleanup(&b);

    buf_init(&b, BPROTO_MSG_MAX);
    assert_int_equal(bproto_res_encode_err(&b, 1, BPROTO_E_FAILURE, "x"), 0);
    bound_str(&b, BPROTO_OP_PING, "err.msg", 0, BPROTO_ERRMSG_MAX);
    bound_str(&b, BPROTO_OP_PING, "err.code", 1, BPROTO_ERRCODE_MAX);
    buf_cleanup(&b);
}

/* The largest value of each big kind fits one frame message. */
static void
test_largest(void **state)
{
    static struct bproto_addr rc[BPROTO_RCPTS_MAX];
    static struct bproto_att_info ai[BPROTO_ATTS_MAX];
    static struct bproto_att_in an[BPROTO_ATTS_MAX];
    static struct bproto_folder fo[BPROTO_FOLDERS_MAX];
    static char name[BPROTO_NAME_MAX + 1], addr[BPROTO_ADDRESS_MAX + 1];
    static char fname[BPROTO_FILENAME_MAX + 1], mime[BPROTO_MIME_MAX + 1];
    static char subj[BPROTO_SUBJECT_MAX + 1], mid[BPROTO_MSGID_MAX + 1];
    static char fid[BPROTO_FOLDER_ID_MAX + 1];
    static char fname2[BPROTO_FOLDER_NAME_MAX + 1];
    char *hdr = malloc(BPROTO_HEADERS_MAX + 1);
    char *body = malloc(BPROTO_INLINE_MAX + 1);
    struct bproto_res s;
    struct bproto_req q;
    struct buf b;

    (void)state;
    assert_non_null(hdr);
    assert_non_null(body);
    memset(name, 'n', BPROTO_NAME_MAX);
    memset(addr, 'a', BPROTO_ADDRESS_MAX);
    memset(fname, 'f', BPROTO_FILENAME_MAX);
    memset(mime, 'm', BPROTO_MIME_MAX);
    memset(subj, 's', BPROTO_SUBJECT_MAX);
    memset(mid, 'i', BPROTO_MSGID_MAX);
    memset(fid, 'd', BPROTO_FOLDER_ID_MAX);
    memset(fname2, 'e', BPROTO_FOLDER_NAME_MAX);
    memset(hdr, 'h', BPROTO_HEADERS_MAX);
    hdr[BPROTO_HEADERS_MAX] = '\0';
    memset(body, 'b', BPROTO_INLINE_MAX);
    body[BPROTO_INLINE_MAX] = '\0';
    for (int i = 0; i < BPROTO_RCPTS_MAX; i++) {
        rc[i].name = name;
        rc[i].address = addr;
    }
    for (int i = 0; i < BPROTO_ATTS_MAX; i++) {
        ai[i].index = UINT32_MAX;
        ai[i].name = fname;
        ai[i].type = mime;
        ai[i].size = BPROTO_MESSAGE_MAX;
        an[i].name = fname;
        an[i].type = mime;
        an[i].upload = UINT64_MAX;
    }
    for (int i = 0; i < BPROTO_FOLDERS_MAX; i++) {
        fo[i].id = fid;
        fo[i].name = fname2;
        fo[i].role = BPROTO_ROLE_DELETED;
        fo[i].total = fo[i].unread = UINT32_MAX;
        fo[i].change = UINT64_MAX;
    }

    memset(&s, 0, sizeof(s));
    s.ok = 1;
    s.id = UINT64_MAX;
    s.op = BPROTO_OP_READ;
    s.r.read.id = UINT64_MAX;
    s.r.read.flags = UINT32_MAX;
    s.r.read.from = rc[0];
    s.r.read.to = rc;
    s.r.read.n_to = BPROTO_RCPTS_MAX;
    s.r.read.subject = subj;
    s.r.read.date = INT64_MIN;
    s.r.read.received = INT64_MIN;
    s.r.read.message_id = mid;
    s.r.read.size = BPROTO_MESSAGE_MAX;
    s.r.read.headers = hdr;
    s.r.read.body = body;
    s.r.read.body_size = BPROTO_MESSAGE_MAX;
    s.r.read.atts = ai;
    s.r.read.n_atts = BPROTO_ATTS_MAX;
    enc_res(&s, &b);
    print_message("largest read result: %zu bytes\n", b.len);
    assert_true(b.len <= BPROTO_MSG_MAX);
    assert_int_equal(check_bytes(b.data, b.len, BPROTO_OP_READ, &b), 0);
    buf_cleanup(&b);

    memset(&q, 0, sizeof(q));
    q.id = UINT64_MAX;
    q.op = BPROTO_OP_SAVE;
    q.a.save.folder = fid;
    q.a.save.id = UINT64_MAX;
    q.a.save.m.from = &rc[0];
    q.a.save.m.to = rc;
    q.a.save.m.n_to = BPROTO_RCPTS_MAX;
    q.a.save.m.subject = subj;
    q.a.save.m.body = body;
    q.a.save.m.atts = an;
    q.a.save.m.n_atts = BPROTO_ATTS_MAX;
    q.a.save.m.flags = UINT32_MAX;
    enc_req(&q, &b);
    print_message("largest save request: %zu bytes\n", b.len);
    assert_true(b.len <= BPROTO_MSG_MAX);
    assert_int_equal(check_bytes(b.data, b.len, BPROTO_OP_COUNT, &b), 0);
    buf_cleanup(&b);

    memset(&s, 0, sizeof(s));
    s.ok = 1;
    s.id = UINT64_MAX;
    s.op = BPROTO_OP_LOGON;
    s.r.logon.version = UINT32_MAX;
    s.r.logon.user = addr;
    s.r.logon.name = name;
    s.r.logon.node = fid;
    s.r.logon.max_message = BPROTO_MESSAGE_MAX;
    s.r.logon.folders = fo;
    s.r.logon.n_folders = BPROTO_FOLDERS_MAX;
    enc_res(&s, &b);
    print_message("largest logon result: %zu bytes\n", b.len);
    assert_true(b.len <= BPROTO_MSG_MAX);
    assert_int_equal(check_bytes(b.data, b.len, BPROTO_OP_LOGON, &b), 0);
    buf_cleanup(&b);
    free(hdr);
    free(body);
}

static void
test_encoder_errors(void **state)
{
    struct bproto_req q;
    struct bproto_res s;
    struct buf b;

    (void)state;
    buf_init(&b, BPROTO_MSG_MAX);
    assert_int_equal(buf_append(&b, "keep", 4), 0);
    fill_req(BPROTO_OP_SEND, &q);
    q.a.send.to = NULL; /* a count without an array */
    assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
    fill_req(BPROTO_OP_SEND, &q);
    q.a.send.n_to = BPROTO_RCPTS_MAX;
    assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
    fill_req(BPROTO_OP_SEND, &q);
    q.a.send.n_atts = 2;
    q.a.send.atts = atts_in + 1; /* fine */
    assert_int_equal(bproto_req_encode(&b, &q), 0);
    b.len = 4;
    b.data[4] = '\0';
    {
        struct bproto_att_in bad = {"x", "", 5, bin6, 6}; /* both */

        q.a.send.atts = &bad;
        q.a.send.n_atts = 1;
        assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
        bad.upload = 0;
        bad.data = NULL; /* length without data */
        assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
    }
    fill_req(BPROTO_OP_FIND, &q);
    q.a.find.limit = 0;
    assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
    fill_req(BPROTO_OP_FIND, &q);
    q.a.find.folder = "";
    assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
    fill_req(BPROTO_OP_READ, &q);
    q.a.read.id = 0;
    assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
    fill_req(BPROTO_OP_LOGON, &q);
    q.a.logon.user = NULL; /* "" but required non-empty */
    assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
    q.op = BPROTO_OP_COUNT;
    assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);
    fill_res(BPROTO_OP_FETCH_BODY, &s);
    s.r.chunk.last = 0; /* at the end, yet not last */
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    fill_res(BPROTO_OP_FETCH_BODY, &s);
    s.r.chunk.offset = 95;
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    fill_res(BPROTO_OP_READ, &s);
    s.r.read.body_size = 3;
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    fill_res(BPROTO_OP_LOGON, &s);
    {
        struct bproto_folder f = folders3[0];

        f.unread = f.total + 1;
        s.r.logon.folders = &f;
        s.r.logon.n_folders = 1;
        assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
        f = folders3[0];
        f.role = BPROTO_ROLE_COUNT;
        assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    }
    fill_res(BPROTO_OP_CHANGES, &s);
    {
        struct bproto_change c = {1, BPROTO_CHANGE_COUNT, 0};

        s.r.changes.changes = &c;
        s.r.changes.n = 1;
        assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    }
    /* Lists past their bounds. */
    fill_res(BPROTO_OP_FOLDERS, &s);
    s.r.folders.n_folders = BPROTO_FOLDERS_MAX + 1;
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    fill_res(BPROTO_OP_FIND, &s);
    s.r.find.n_ids = BPROTO_FIND_MAX + 1;
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    fill_res(BPROTO_OP_RESOLVE, &s);
    s.r.resolve.n = BPROTO_MATCHES_MAX + 1;
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    fill_res(BPROTO_OP_CHANGES, &s);
    s.r.changes.n = BPROTO_CHANGES_MAX + 1;
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    fill_res(BPROTO_OP_READ, &s);
    s.r.read.n_bcc = BPROTO_RCPTS_MAX;
    s.r.read.bcc = to_addrs;
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    fill_res(BPROTO_OP_READ, &s);
    s.r.read.n_atts = BPROTO_ATTS_MAX + 1;
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    fill_res(BPROTO_OP_FIND, &s);
    {
        const uint64_t zero[] = {4, 0};

        s.r.find.ids = zero;
        s.r.find.n_ids = 2;
        assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    }
    fill_res(BPROTO_OP_SAVE, &s);
    s.r.save.id = 0;
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    fill_res(BPROTO_OP_PING, &s);
    s.op = BPROTO_OP_COUNT;
    assert_int_equal(bproto_res_encode(&b, &s), RM_E_INVAL);
    assert_int_equal(bproto_res_encode(NULL, &s), RM_E_INVAL);
    assert_int_equal(bproto_req_encode(&b, NULL), RM_E_INVAL);
    /* Nothing was appended by any failure. */
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "keep", 5);
    buf_cleanup(&b);

    /* Out of room: RM_E_TOOBIG, out untouched. */
    fill_req(BPROTO_OP_SEND, &q);
    buf_init(&b, 64);
    assert_int_equal(buf_append(&b, "keep", 4), 0);
    assert_int_equal(bproto_req_encode(&b, &q), RM_E_TOOBIG);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "keep", 5);
    buf_cleanup(&b);
}

/* The encoder refuses one byte past every string bound (and takes the
 * bound itself). setup runs after fill_req / fill_res. */
static void
test_encoder_bounds(void **state)
{
    char *s = malloc(BPROTO_INLINE_MAX + 2);
    struct bproto_addr a = to_addrs[0];
    struct bproto_att_in at = atts_in[1];
    struct bproto_folder f = folders3[0];
    struct bproto_att_info ai = atts_info[0];
    struct bproto_req q;
    struct bproto_res r;
    struct buf b;

    (void)state;
    assert_non_null(s);
    buf_init(&b, BPROTO_MSG_MAX);
#define LONG(n) (memset(s, 'x', (n)), s[(n)] = '\0', s)
#define REQ(op, setup, field, max)                                             \
    do {                                                                       \
        fill_req(op, &q);                                                      \
        buf_reset(&b);                                                         \
        setup;                                                                 \
        field = LONG(max);                                                     \
        assert_int_equal(bproto_req_encode(&b, &q), 0);                        \
        field = LONG((max) + 1);                                               \
        assert_int_equal(bproto_req_encode(&b, &q), RM_E_INVAL);               \
        a = to_addrs[0];                                                       \
        at = atts_in[1];                                                       \
    } while (0)
#define RES(op, setup, field, max)                                             \
    do {                                                                       \
        fill_res(op, &r);                                                      \
        buf_reset(&b);                                                         \
        setup;                                                                 \
        field = LONG(max);                                                     \
        assert_int_equal(bproto_res_encode(&b, &r), 0);                        \
        field = LONG((max) + 1);                                               \
        assert_int_equal(bproto_res_encode(&b, &r), RM_E_INVAL);               \
        a = to_addrs[0];                                                       \
        f = folders3[0];                                                       \
        ai = atts_info[0];                                                     \
    } while (0)
    REQ(BPROTO_OP_LOGON, (void)0, q.a.logon.user, BPROTO_ADDRESS_MAX);
    REQ(BPROTO_OP_LOGON, (void)0, q.a.logon.password, BPROTO_PASSWORD_MAX);
    REQ(BPROTO_OP_LOGON, (void)0, q.a.logon.client, BPROTO_CLIENT_MAX);
    REQ(BPROTO_OP_FIND, (void)0, q.a.find.folder, BPROTO_FOLDER_ID_MAX);
    REQ(BPROTO_OP_RESOLVE, (void)0, q.a.resolve.name, BPROTO_NAME_MAX);
    REQ(BPROTO_OP_SEND, (void)0, q.a.send.subject, BPROTO_SUBJECT_MAX);
    /* The body shares the inline budget with attachment 0 (6 bytes). */
    REQ(BPROTO_OP_SEND, (void)0, q.a.send.body, BPROTO_INLINE_MAX - 6);
    REQ(BPROTO_OP_SEND, (q.a.send.to = &a, q.a.send.n_to = 1), a.name,
        BPROTO_NAME_MAX);
    REQ(BPROTO_OP_SEND, (q.a.send.to = &a, q.a.send.n_to = 1), a.address,
        BPROTO_ADDRESS_MAX);
    REQ(BPROTO_OP_SEND, (q.a.send.atts = &at, q.a.send.n_atts = 1), at.name,
        BPROTO_FILENAME_MAX);
    REQ(BPROTO_OP_SEND, (q.a.send.atts = &at, q.a.send.n_atts = 1), at.type,
        BPROTO_MIME_MAX);
    RES(BPROTO_OP_LOGON, (void)0, r.r.logon.user, BPROTO_ADDRESS_MAX);
    RES(BPROTO_OP_LOGON, (void)0, r.r.logon.name, BPROTO_NAME_MAX);
    RES(BPROTO_OP_LOGON, (void)0, r.r.logon.node, BPROTO_NODE_MAX);
    RES(BPROTO_OP_FOLDERS,
        (r.r.folders.folders = &f, r.r.folders.n_folders = 1), f.id,
        BPROTO_FOLDER_ID_MAX);
    RES(BPROTO_OP_FOLDERS,
        (r.r.folders.folders = &f, r.r.folders.n_folders = 1), f.name,
        BPROTO_FOLDER_NAME_MAX);
    RES(BPROTO_OP_READ, (void)0, r.r.read.subject, BPROTO_SUBJECT_MAX);
    RES(BPROTO_OP_READ, (void)0, r.r.read.message_id, BPROTO_MSGID_MAX);
    RES(BPROTO_OP_READ, (void)0, r.r.read.headers, BPROTO_HEADERS_MAX);
    RES(BPROTO_OP_READ, r.r.read.body_size = BPROTO_MESSAGE_MAX, r.r.read.body,
        BPROTO_INLINE_MAX);
    RES(BPROTO_OP_READ, (void)0, r.r.read.from.name, BPROTO_NAME_MAX);
    RES(BPROTO_OP_READ, (r.r.read.atts = &ai, r.r.read.n_atts = 1), ai.name,
        BPROTO_FILENAME_MAX);
    RES(BPROTO_OP_READ, (r.r.read.atts = &ai, r.r.read.n_atts = 1), ai.type,
        BPROTO_MIME_MAX);
    RES(BPROTO_OP_SEND, (void)0, r.r.send.message_id, BPROTO_MSGID_MAX);
    RES(BPROTO_OP_RESOLVE, (r.r.resolve.matches = &a, r.r.resolve.n = 1),
        a.name, BPROTO_NAME_MAX);
    fill_res(BPROTO_OP_PING, &r);
    r.ok = 0;
    r.err.msg = LONG(BPROTO_ERRMSG_MAX);
    assert_int_equal(bproto_res_encode(&b, &r), 0);
    r.err.msg = LONG(BPROTO_ERRMSG_MAX + 1);
    assert_int_equal(bproto_res_encode(&b, &r), RM_E_INVAL);
#undef LONG
#undef REQ
#undef RES
    buf_cleanup(&b);
    free(s);
}

static void
test_enomem(void **state)
{
    static struct bproto_addr rc[200];
    char *body = malloc(100000);
    struct buf enc[5];
    int kinds[5][2] = {{1, BPROTO_OP_SAVE},
                       {0, BPROTO_OP_READ},
                       {0, BPROTO_OP_LOGON},
                       {1, BPROTO_OP_LOGON},
                       {0, BPROTO_OP_READ}};

    (void)state;
    assert_non_null(body);
    for (int k = 0; k < 5; k++) {
        struct bproto_req q;
        struct bproto_res s;

        if (kinds[k][0]) {
            fill_req((enum bproto_op)kinds[k][1], &q);
            enc_req(&q, &enc[k]);
            continue;
        }
        fill_res((enum bproto_op)kinds[k][1], &s);
        if (k == 4) {
            /* Large: a body in a block of its own, recipients over
             * several blocks. */
            memset(body, 'b', 99999);
            body[99999] = '\0';
            for (int i = 0; i < 200; i++)
                rc[i] = to_addrs[i % 2];
            s.r.read.body = body;
            s.r.read.body_size = 99999;
            s.r.read.to = rc;
            s.r.read.n_to = 200;
        }
        enc_res(&s, &enc[k]);
    }
    free(body);
    for (int k = 0; k < 5; k++) {
        int injected;
        int n_alloc = 0;

        for (int n = 1;; n++) {
            struct bproto_req q;
            struct bproto_res s;
            struct buf out;
            int r;

            fail_countdown = n;
            if (kinds[k][0])
                r = bproto_req_decode(enc[k].data, enc[k].len, &q);
            else
                r = bproto_res_decode(enc[k].data, enc[k].len,
                                      (enum bproto_op)kinds[k][1], &s);
            injected = fail_countdown == 0;
            fail_countdown = 0;
            if (!injected) {
                assert_int_equal(r, 0);
            } else {
                assert_int_equal(r, -ENOMEM);
                assert_null(kinds[k][0] ? (void *)q.mem : (void *)s.mem);
            }
            /* Encoding what decoded, with its buffer growth failing. */
            if (r == 0) {
                for (int m = 1;; m++) {
                    int r2;

                    buf_init(&out, BPROTO_MSG_MAX);
                    fail_countdown = m;
                    r2 = kinds[k][0] ? bproto_req_encode(&out, &q)
                                     : bproto_res_encode(&out, &s);
                    injected = fail_countdown == 0;
                    fail_countdown = 0;
                    if (!injected) {
                        assert_int_equal(r2, 0);
                        assert_int_equal(out.len, enc[k].len);
                        buf_cleanup(&out);
                        break;
                    }
                    assert_int_equal(r2, -ENOMEM);
                    assert_int_equal(out.len, 0);
                    buf_cleanup(&out);
                }
            }
            if (kinds[k][0])
                bproto_req_cleanup(&q);
            else
                bproto_res_cleanup(&s);
            n_alloc = n - 1;
            if (r == 0)
                break;
        }
        /* The large one spans several arena blocks. */
        assert_true(k < 4 || n_alloc > 3);
        buf_cleanup(&enc[k]);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_req_roundtrip),
        cmocka_unit_test(test_req_fields),
        cmocka_unit_test(test_res_roundtrip),
        cmocka_unit_test(test_res_fields),
        cmocka_unit_test(test_error_response),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_envelope),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_req_bounds),
        cmocka_unit_test(test_res_bounds),
        cmocka_unit_test(test_largest),
        cmocka_unit_test(test_encoder_errors),
        cmocka_unit_test(test_encoder_bounds),
        cmocka_unit_test(test_enomem),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
