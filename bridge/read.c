/*
 * read.c: the bridge's read, fetch_body and fetch_attachment. The stored
 * message is parsed by node/mime_parse.c; the session keeps the last one
 * (raw and parsed) so that a read followed by its fetches reads the store
 * and parses once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/server_int.h"
#include "common/log.h"
#include "common/rm_error.h"

/* Room for the delivery prefix (Return-Path, Delivered-To) beyond the
   largest message. */
#define BS_READ_SLACK (64 * 1024)

struct bs_find_one {
    uint32_t uid;
    int found;
    uint32_t flags;
    int64_t received;
    uint64_t size;
};

static int
bs_find_one_cb(void *arg, const struct store_mail *m)
{
    struct bs_find_one *f = arg;

    if (m->uid == f->uid) {
        f->found = 1;
        f->flags = m->flags;
        f->received = m->internaldate;
        f->size = m->size;
    }
    return 1; /* the first one after uid - 1 is the only candidate */
}

static int
bs_raw_cb(void *arg, const char *data, size_t len)
{
    return buf_append(arg, data, len);
}

/* Make the session's cache hold (folder, id). 0, or answered (-1). */
static int
bs_load(struct bsess *s, const char *folder, uint64_t id, enum bfolder *fout)
{
    char mbox[STORE_ADDR_MAX + 16];
    struct bcache *c = &s->cache;
    struct bs_find_one one;
    enum bfolder f;
    uint32_t uid;
    int r;

    if (bs_folder(s, folder, &f) != 0)
        return -1;
    *fout = f;
    bs_mailbox(s, f, mbox, sizeof(mbox));
    if (bs_msgid(s, mbox, id, &uid) != 0) {
        bs_fail(s, BPROTO_E_INVALID_MESSAGE, "no message %" PRIx64 " in %s", id,
                folder);
        return -1;
    }
    memset(&one, 0, sizeof(one));
    one.uid = uid;
    r = store_mailbox_list_after(s->b->n->store, mbox, uid - 1, bs_find_one_cb,
                                 &one);
    if (r != 0 && r != 1) {
        bs_fail(s, BPROTO_E_TRY_LATER, "the folder cannot be read: %s",
                rm_strerror(r));
        return -1;
    }
    if (!one.found) {
        bs_fail(s, BPROTO_E_INVALID_MESSAGE, "no message %" PRIx64 " in %s", id,
                folder);
        return -1;
    }
    if (c->id == id && c->folder == f) {
        c->flags = one.flags; /* may have changed meanwhile */
        return 0;
    }
    bs_cache_clear(c);
    /* Sized by what is stored (it may predate a lower limit). */
    buf_init(&c->raw, one.size + BS_READ_SLACK);
    r = store_mailbox_read(s->b->n->store, mbox, uid, bs_raw_cb, &c->raw);
    if (r == RM_E_NOTFOUND) {
        bs_cache_clear(c);
        bs_fail(s, BPROTO_E_INVALID_MESSAGE, "no message %" PRIx64 " in %s", id,
                folder);
        return -1;
    }
    if (r == 0 && c->raw.len == 0)
        r = RM_E_CORRUPT;
    if (r == 0)
        r = mime_parse(c->raw.data, c->raw.len, &c->p);
    if (r != 0) {
        log_err("event=bridge.read_failed sid=%" PRIu64 " mailbox=%s uid=%u "
                "err=\"%s\"",
                s->sid, mbox, uid, rm_strerror(r));
        bs_cache_clear(c);
        bs_fail(s, BPROTO_E_TRY_LATER, "the message cannot be read: %s",
                rm_strerror(r));
        return -1;
    }
    if (c->p.why[0] != '\0')
        log_info("event=bridge.mime_defect sid=%" PRIu64 " mailbox=%s uid=%u "
                 "why=\"%s\"",
                 s->sid, mbox, uid, c->p.why);
    c->parsed = 1;
    c->id = id;
    c->folder = f;
    c->flags = one.flags;
    c->received = one.received;
    return 0;
}

static struct bproto_addr *
bs_addrs(const struct mime_parse_addr *in, unsigned n, struct bproto_addr *out)
{
    for (unsigned i = 0; i < n; i++) {
        out[i].name = in[i].name;
        out[i].address = in[i].address;
    }
    return n ? out : NULL;
}

/* The answer to read, from the cache; extra flags (READ after marking). */
static void
bs_read_answer(struct bsess *s, const struct bproto_read_args *a,
               unsigned extra)
{
    const struct mime_parse_msg *p = &s->cache.p;
    struct bproto_addr *addrs;
    struct bproto_att_info *atts;
    struct bproto_message *m;
    struct bproto_res res;
    struct buf hdr;
    unsigned nr = p->n_to + p->n_cc + p->n_bcc;
    int full = !a->envelope_only;

    addrs = calloc(nr ? nr : 1, sizeof(*addrs));
    atts = calloc(p->n_atts ? p->n_atts : 1, sizeof(*atts));
    buf_init(&hdr, BPROTO_HEADERS_MAX);
    if (addrs == NULL || atts == NULL ||
        (full && a->headers &&
         mime_parse_headers_text(p, BPROTO_HEADERS_MAX, &hdr) != 0)) {
        bs_fail(s, BPROTO_E_TRY_LATER, "out of memory");
        goto out;
    }
    memset(&res, 0, sizeof(res));
    res.ok = 1;
    m = &res.r.read;
    m->id = s->cache.id;
    m->flags = bs_flags_to_wire(s->cache.flags, s->cache.folder) | extra;
    if (p->n_atts > 0)
        m->flags |= BPROTO_FLAG_ATTACH;
    m->from.name = p->from.name;
    m->from.address = p->from.address;
    m->to = bs_addrs(p->to, p->n_to, addrs);
    m->n_to = p->n_to;
    m->cc = bs_addrs(p->cc, p->n_cc, addrs + p->n_to);
    m->n_cc = p->n_cc;
    m->bcc = bs_addrs(p->bcc, p->n_bcc, addrs + p->n_to + p->n_cc);
    m->n_bcc = p->n_bcc;
    m->subject = p->subject;
    m->date = p->date;
    m->received = s->cache.received;
    m->message_id = p->message_id;
    m->size = s->cache.raw.len;
    if (full && a->headers) /* a buf stays NUL-terminated */
        m->headers = hdr.data ? hdr.data : "";
    m->body_size = p->body_len;
    if (full && a->body) {
        /* The inline part is cut at a character; the rest comes with
           fetch_body. The copy keeps it NUL-terminated. */
        size_t n = mime_parse_utf8_cut(p->body, p->body_len, BPROTO_INLINE_MAX);
        char *b = malloc(n + 1);

        if (b == NULL) {
            bs_fail(s, BPROTO_E_TRY_LATER, "out of memory");
            goto out;
        }
        memcpy(b, p->body, n);
        b[n] = '\0';
        m->body = b;
    }
    for (unsigned i = 0; i < p->n_atts; i++) {
        atts[i].index = i;
        atts[i].name = p->atts[i].name;
        atts[i].type = p->atts[i].type;
        atts[i].size = p->atts[i].size;
    }
    m->n_atts = p->n_atts;
    m->atts = p->n_atts ? atts : NULL;
    bs_reply(s, &res);
    free((void *)m->body);
out:
    buf_cleanup(&hdr);
    free(addrs);
    free(atts);
}

static void
bs_read_marked(void *arg, int status)
{
    struct bsess *s = arg;
    const struct bproto_req *q = &s->q[s->qhead].q;

    if (status != 0) {
        log_warn("event=bridge.mark_failed sid=%" PRIu64 " err=\"%s\"", s->sid,
                 rm_strerror(status));
        bs_read_answer(s, &q->a.read, 0);
    } else {
        s->cache.flags |= STORE_FLAG_SEEN;
        bs_read_answer(s, &q->a.read, 0);
    }
    bs_done(s);
}

int
bs_op_read(struct bsess *s, const struct bproto_req *q)
{
    const struct bproto_read_args *a = &q->a.read;
    char mbox[STORE_ADDR_MAX + 16];
    enum bfolder f;
    int r;

    if (bs_load(s, a->folder, a->id, &f) != 0)
        return 0;
    if (a->peek || (s->cache.flags & STORE_FLAG_SEEN)) {
        bs_read_answer(s, a, 0);
        return 0;
    }
    bs_mailbox(s, f, mbox, sizeof(mbox));
    r = store_mailbox_flags(s->b->n->store, mbox, (uint32_t)a->id,
                            STORE_FLAG_SEEN, 1, bs_read_marked, s);
    if (r != 0) {
        bs_read_answer(s, a, 0);
        return 0;
    }
    return 1;
}

int
bs_op_fetch(struct bsess *s, const struct bproto_req *q)
{
    const struct bproto_fetch_args *a = &q->a.fetch;
    const struct mime_parse_msg *p;
    struct bproto_res res;
    struct buf out;
    enum bfolder f;
    uint64_t total;
    int r;

    if (bs_load(s, a->folder, a->id, &f) != 0)
        return 0;
    p = &s->cache.p;
    memset(&res, 0, sizeof(res));
    if (q->op == BPROTO_OP_FETCH_ATTACHMENT) {
        if (a->index >= p->n_atts) {
            bs_fail(s, BPROTO_E_ATTACHMENT_NOT_FOUND,
                    "the message has %u attachments; no index %u", p->n_atts,
                    a->index);
            return 0;
        }
        total = p->atts[a->index].size;
    } else {
        total = p->body_len;
    }
    if (a->offset > total) {
        bs_fail(s, BPROTO_E_BAD_REQUEST,
                "a.offset: %" PRIu64 " is past the end (%" PRIu64 " bytes)",
                a->offset, total);
        return 0;
    }
    buf_init(&out, BPROTO_CHUNK_MAX);
    if (q->op == BPROTO_OP_FETCH_ATTACHMENT) {
        /* Decoded once per message and attachment, then served in
           slices: chunked fetches cost the size, not its square. */
        struct bcache *c = &s->cache;

        r = 0;
        if (c->att_index != (int)a->index) {
            buf_cleanup(&c->att);
            buf_init(&c->att, total + 1);
            c->att_index = -1;
            r = mime_parse_att_read(p, a->index, 0, (size_t)total, &c->att);
            if (r == 0)
                c->att_index = (int)a->index;
        }
        if (r == 0) {
            size_t n = total - a->offset < a->max ? (size_t)(total - a->offset)
                                                  : a->max;
            res.r.chunk.data =
                n ? (const uint8_t *)c->att.data + a->offset : NULL;
            res.r.chunk.len = n;
        }
    } else {
        r = mime_parse_body_read(p, a->offset, a->max, &out);
        res.r.chunk.data = out.len ? (const uint8_t *)out.data : NULL;
        res.r.chunk.len = out.len;
    }
    if (r != 0) {
        buf_cleanup(&out);
        bs_fail(s, BPROTO_E_TRY_LATER, "cannot decode: %s", rm_strerror(r));
        return 0;
    }
    res.ok = 1;
    res.r.chunk.total = total;
    res.r.chunk.offset = a->offset;
    res.r.chunk.last = a->offset + res.r.chunk.len == total;
    bs_reply(s, &res);
    buf_cleanup(&out);
    return 0;
}
