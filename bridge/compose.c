/*
 * compose.c: the bridge's send and save. The node composes the message
 * itself (node/mime_compose.c) from the request's fields and uploads.
 *
 * send: recipients are checked as SMTP's RCPT is for an authenticated
 * user (a local domain's user must exist; other domains are relayed), the
 * From must be the user (or one of [auth] sender_aliases), then the
 * message is stored like a submission (one write, fsync) and handed to
 * the queue manager; a copy is filed in the user's Sent folder. The
 * answer comes after both writes; a message that was accepted is never
 * reported as failed (a Sent copy that cannot be written is logged and
 * answered without an id).
 *
 * save: the message (Bcc kept, recipients not checked: it is a draft) is
 * filed in Drafts, replacing the draft named by id in the same write.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "bridge/server_int.h"
#include "common/log.h"
#include "common/rm_error.h"
#include "node/mesh_repl.h"
#include "node/mime_compose.h"
#include "node/mime_parse.h"

struct bsend {
    struct store_msg sm;
    struct store_rcpt *rcpts;
    size_t nrcpts;
    char (*mbox)[STORE_ADDR_MAX]; /* canonical mailbox of a local one */
    size_t trace_len;             /* Received: before the message */
    char date[MIME_COMPOSE_DATE_SIZE];
    uint32_t sent_uidvalidity;
    struct mesh_repl_wait *rwait; /* [mesh] ack_replicas (mesh_repl.h) */
    int waiting;                  /* rwait started: acks awaited */
};

/* Same words as SMTP's 451 4.4.3 (smtp_session.c). */
#define BS_UNREPLICATED                                                        \
    "not enough mesh replicas reachable to hold the message (451 4.4.3); "     \
    "nothing was sent, try again later"

void
bs_send_free(struct bsess *s)
{
    struct bsend *x = s->send;

    if (x == NULL)
        return;
    /* Not yet started, or the client went: the message is withdrawn. */
    mesh_repl_wait_cancel(x->rwait);
    free(x->rcpts);
    free(x->mbox);
    free(x);
    s->send = NULL;
}

/* Uploads named by the request are used up, whatever happened. */
static void
bs_drop_uploads(struct bsess *s, const struct bproto_compose *m)
{
    struct bupload *u;

    if (m->body_upload && (u = bs_upload_get(s, m->body_upload)) != NULL)
        bs_upload_drop(s, u);
    for (unsigned i = 0; i < m->n_atts; i++)
        if (m->atts[i].upload &&
            (u = bs_upload_get(s, m->atts[i].upload)) != NULL)
            bs_upload_drop(s, u);
}

/* A file name mime_compose takes: at most its bound, cut at a character. */
static void
bs_filename(const char *in, char *out, size_t outsz)
{
    size_t n = strlen(in);

    if (n == 0) {
        snprintf(out, outsz, "attachment");
        return;
    }
    n = mime_parse_utf8_cut(in, n, MIME_COMPOSE_FILENAME_MAX);
    if (n >= outsz)
        n = outsz - 1;
    memcpy(out, in, n);
    out[n] = '\0';
    /* Control characters have no place in a file name. */
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '_';
}

struct bs_parts {
    struct mime_compose_msg m;
    struct mime_compose_addr *addrs; /* to, cc, bcc */
    struct mime_compose_attach *att;
    char (*names)[MIME_COMPOSE_FILENAME_MAX + 1];
    unsigned char random[MIME_COMPOSE_RANDOM_LEN];
};

static void
bs_parts_free(struct bs_parts *p)
{
    free(p->addrs);
    free(p->att);
    free(p->names);
}

/* Fill p from the request (uploads resolved). 0, or answered (-1). */
static int
bs_parts_fill(struct bsess *s, const struct bproto_compose *c, int draft,
              struct bs_parts *p)
{
    const struct bproto_addr *lists[3] = {c->to, c->cc, c->bcc};
    unsigned counts[3] = {c->n_to, c->n_cc, c->n_bcc};
    size_t nout[3] = {0, 0, 0};
    unsigned total = c->n_to + c->n_cc + c->n_bcc, k = 0;

    memset(p, 0, sizeof(*p));
    p->addrs = calloc(total ? total : 1, sizeof(*p->addrs));
    p->att = calloc(c->n_atts ? c->n_atts : 1, sizeof(*p->att));
    p->names = calloc(c->n_atts ? c->n_atts : 1, sizeof(*p->names));
    if (p->addrs == NULL || p->att == NULL || p->names == NULL) {
        bs_fail(s, BPROTO_E_TRY_LATER, "out of memory");
        return -1;
    }
    for (int l = 0; l < 3; l++) {
        for (unsigned i = 0; i < counts[l]; i++) {
            const struct bproto_addr *a = &lists[l][i];

            if (a->address[0] == '\0') {
                if (draft)
                    continue; /* a name alone: kept by the client */
                bs_fail(s, BPROTO_E_UNKNOWN_RECIPIENT,
                        "recipient \"%.100s\" has no address: resolve it "
                        "first",
                        a->name);
                return -1;
            }
            p->addrs[k + nout[l]].name = a->name;
            p->addrs[k + nout[l]].addr = a->address;
            nout[l]++;
        }
        if (l == 0)
            p->m.to = p->addrs + k, p->m.nto = nout[0];
        else if (l == 1)
            p->m.cc = p->addrs + k, p->m.ncc = nout[1];
        else
            p->m.bcc = p->addrs + k, p->m.nbcc = nout[2];
        k += (unsigned)nout[l];
    }
    p->m.from.name =
        c->from && c->from->address[0] != '\0' ? c->from->name : "";
    p->m.from.addr =
        c->from && c->from->address[0] != '\0' ? c->from->address : s->user;
    p->m.subject = c->subject;
    if (c->body_upload) {
        struct bupload *u = bs_upload_get(s, c->body_upload);

        if (u == NULL) {
            bs_fail(s, BPROTO_E_BAD_REQUEST,
                    "a.body_upload: no upload %" PRIu64, c->body_upload);
            return -1;
        }
        if (!bproto_text_valid(u->data.data, u->data.len)) {
            bs_fail(s, BPROTO_E_BAD_REQUEST,
                    "a.body_upload: the body is not UTF-8 text");
            return -1;
        }
        p->m.text = u->data.data;
        p->m.text_len = u->data.len;
    } else if (c->body != NULL) {
        p->m.text = c->body;
        p->m.text_len = strlen(c->body);
    }
    for (unsigned i = 0; i < c->n_atts; i++) {
        const struct bproto_att_in *a = &c->atts[i];

        bs_filename(a->name, p->names[i], sizeof(p->names[i]));
        p->att[i].filename = p->names[i];
        p->att[i].type = a->type[0] && strlen(a->type) <= MIME_COMPOSE_TYPE_MAX
                             ? a->type
                             : NULL;
        if (a->upload) {
            struct bupload *u = bs_upload_get(s, a->upload);

            if (u == NULL) {
                bs_fail(s, BPROTO_E_BAD_REQUEST,
                        "a.attachments[%u].upload: no upload %" PRIu64, i,
                        a->upload);
                return -1;
            }
            p->att[i].data = u->data.data;
            p->att[i].len = u->data.len;
        } else {
            p->att[i].data = a->data;
            p->att[i].len = a->len;
        }
    }
    p->m.attach = p->att;
    p->m.nattach = c->n_atts;
    p->m.keep_bcc = draft;
    p->m.date = (int64_t)time(NULL);
    p->m.msgid_domain = s->b->cfg->hostname;
    randombytes_buf(p->random, sizeof(p->random));
    p->m.random = p->random;
    p->m.receipt = (c->flags & BPROTO_FLAG_RECEIPT) != 0;
    p->m.max_size = s->b->cfg->max_message_size;
    return 0;
}

/* Compose into s->msg (after what it holds). 0, or answered (-1). */
static int
bs_compose(struct bsess *s, struct bs_parts *p)
{
    int r;

    r = mime_compose(&p->m, &s->msg, s->msgid);
    if (r == RM_E_TOOBIG) {
        bs_fail(s, BPROTO_E_TOO_BIG,
                "the message is larger than this node takes (%" PRIu64
                " bytes)",
                s->b->cfg->max_message_size);
        return -1;
    }
    if (r == RM_E_INVAL) {
        bs_fail(s, BPROTO_E_BAD_REQUEST,
                "the message cannot be composed: an address, name, subject "
                "or file name is not valid");
        return -1;
    }
    if (r != 0) {
        bs_fail(s, BPROTO_E_TRY_LATER, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- save --------------------------------------------------------------- */

static void
bs_save_done(void *arg, int status)
{
    struct bsess *s = arg;
    char mbox[STORE_ADDR_MAX + 16];
    struct store_mailbox_stat st;
    struct bproto_res res;

    if (status == RM_E_NOTFOUND) {
        bs_fail(s, BPROTO_E_INVALID_MESSAGE, "the draft to replace is gone");
    } else if (status == RM_E_FULL) {
        bs_fail(s, BPROTO_E_DISK_FULL, "the node's store is full");
    } else if (status != 0) {
        log_err("event=bridge.save_failed sid=%" PRIu64 " err=\"%s\"", s->sid,
                rm_strerror(status));
        bs_fail(s, BPROTO_E_TRY_LATER, "the draft could not be stored: %s",
                rm_strerror(status));
    } else {
        bs_mailbox(s, BF_DRAFTS, mbox, sizeof(mbox));
        memset(&res, 0, sizeof(res));
        res.ok = 1;
        if (store_mailbox_stat(s->b->n->store, mbox, &st) == 0)
            res.r.save.id = bs_wire_id(st.uidvalidity, s->uid);
        s->b->st.saved++;
        log_info("event=bridge.saved sid=%" PRIu64 " user=%s uid=%u size=%zu",
                 s->sid, s->user, s->uid, s->msg.len);
        if (res.r.save.id != 0)
            bs_reply(s, &res);
        else
            bs_fail(s, BPROTO_E_FAILURE,
                    "the draft was stored but its "
                    "folder cannot be read");
    }
    buf_cleanup(&s->msg);
    bs_done(s);
}

int
bs_op_save(struct bsess *s, const struct bproto_req *q)
{
    const struct bproto_save_args *a = &q->a.save;
    char mbox[STORE_ADDR_MAX + 16];
    struct bs_parts p;
    enum bfolder f;
    uint32_t replace = 0;
    int r, rc = 0;

    if (bs_folder(s, a->folder, &f) != 0)
        goto out;
    if (f != BF_DRAFTS) {
        bs_fail(s, BPROTO_E_ACCESS_DENIED, "messages are saved in Drafts only");
        goto out;
    }
    bs_mailbox(s, f, mbox, sizeof(mbox));
    if (a->id != 0 && bs_msgid(s, mbox, a->id, &replace) != 0) {
        bs_fail(s, BPROTO_E_INVALID_MESSAGE, "no draft %" PRIx64, a->id);
        goto out;
    }
    if (bs_parts_fill(s, &a->m, 1, &p) != 0) {
        bs_parts_free(&p);
        goto out;
    }
    buf_cleanup(&s->msg);
    buf_init(&s->msg, s->b->cfg->max_message_size + 4096);
    r = bs_compose(s, &p);
    bs_parts_free(&p);
    if (r != 0)
        goto out;
    memset(&s->file, 0, sizeof(s->file));
    store_qid_new(s->b->n->store, s->file.qid);
    /* The mailbox name must outlive the call: kept in the session. */
    snprintf(s->mbox_file, sizeof(s->mbox_file), "%s", mbox);
    s->file.mailbox = s->mbox_file;
    s->file.flags = STORE_FLAG_DRAFT | STORE_FLAG_SEEN;
    s->file.replace_uid = replace;
    s->file.mail_from = s->user;
    s->file.hdr_from = s->user;
    s->file.hdr_subject = a->m.subject;
    s->file.hdr_msgid = s->msgid;
    s->file.data = s->msg.data;
    s->file.len = s->msg.len;
    if (s->cache.folder == BF_DRAFTS)
        bs_cache_clear(&s->cache);
    r = store_mailbox_file(s->b->n->store, &s->file, &s->uid, bs_save_done, s);
    if (r != 0) {
        buf_cleanup(&s->msg);
        bs_fail(s, BPROTO_E_TRY_LATER, "the draft could not be stored: %s",
                rm_strerror(r));
        goto out;
    }
    rc = 1;
out:
    bs_drop_uploads(s, &a->m);
    return rc;
}

/* ---- send --------------------------------------------------------------- */

static void
bs_sent_filed(void *arg, int status)
{
    struct bsess *s = arg;
    struct bsend *x = s->send;
    char mbox[STORE_ADDR_MAX + 16];
    struct store_mailbox_stat st;
    struct bproto_res res;

    memset(&res, 0, sizeof(res));
    res.ok = 1;
    res.r.send.message_id = s->msgid;
    if (status == 0) {
        bs_mailbox(s, BF_SENT, mbox, sizeof(mbox));
        if (store_mailbox_stat(s->b->n->store, mbox, &st) == 0)
            res.r.send.id = bs_wire_id(st.uidvalidity, s->uid);
    } else {
        log_warn("event=bridge.sent_copy_failed sid=%" PRIu64 " user=%s "
                 "qid=%s err=\"%s\" msg=\"the message was sent; its copy in "
                 "Sent could not be written\"",
                 s->sid, s->user, x->sm.qid, rm_strerror(status));
    }
    bs_reply(s, &res);
    bs_send_free(s);
    buf_cleanup(&s->msg);
    bs_done(s);
}

/* The message is ours: stats, hand it on (replicated: its replicas
   acknowledged it already), then its copy in Sent and the answer. */
static void
bs_send_handoff(struct bsess *s, int replicated)
{
    struct bsend *x = s->send;
    struct node *n = s->b->n;
    uint32_t local[64];
    size_t nl = 0;
    int remote = 0, r;

    n->stats.messages_accepted++;
    n->stats.recipients_accepted += x->nrcpts;
    s->b->st.sent++;
    log_info("event=bridge.sent sid=%" PRIu64 " user=%s qid=%s msgid=%s "
             "rcpts=%zu size=%zu",
             s->sid, s->user, x->sm.qid, s->msgid, x->nrcpts, x->sm.len);
    for (size_t i = 0; i < x->nrcpts; i++) {
        if (x->rcpts[i].route != STORE_ROUTE_LOCAL) {
            remote = 1;
            continue;
        }
        local[nl++] = (uint32_t)i;
        if (nl == sizeof(local) / sizeof(local[0])) {
            if (n->queue)
                node_queue_local(n->queue, x->sm.qid, local, nl);
            nl = 0;
        }
    }
    if (nl && n->queue)
        node_queue_local(n->queue, x->sm.qid, local, nl);
    if (remote && n->queue && replicated)
        node_queue_outbound(n->queue, x->sm.qid);
    else if (remote && n->queue)
        node_queue_remote(n->queue, x->sm.qid);
    /* The copy in Sent: the message as composed, without the trace. */
    memset(&s->file, 0, sizeof(s->file));
    store_qid_new(n->store, s->file.qid);
    bs_mailbox(s, BF_SENT, s->mbox_file, sizeof(s->mbox_file));
    s->file.mailbox = s->mbox_file;
    s->file.flags = STORE_FLAG_SEEN;
    s->file.mail_from = s->user;
    s->file.hdr_from = x->sm.hdr_from;
    s->file.hdr_subject = x->sm.hdr_subject;
    s->file.hdr_msgid = s->msgid;
    s->file.hdr_date = x->date;
    s->file.data = s->msg.data + x->trace_len;
    s->file.len = s->msg.len - x->trace_len;
    r = store_mailbox_file(n->store, &s->file, &s->uid, bs_sent_filed, s);
    if (r != 0)
        bs_sent_filed(s, r);
}

static void
bs_send_end(struct bsess *s)
{
    bs_send_free(s);
    buf_cleanup(&s->msg);
    bs_done(s);
}

/* [mesh] ack_replicas decided. Never called once the connection went
   (bs_send_abandon() cancelled it). */
static void
bs_send_replicated(void *arg, int status)
{
    struct bsess *s = arg;
    struct bsend *x = s->send;

    x->rwait = NULL;
    x->waiting = 0;
    if (status == 0) {
        bs_send_handoff(s, 1);
        return;
    }
    s->b->n->stats.messages_rejected++;
    log_warn("event=bridge.send_unreplicated sid=%" PRIu64 " user=%s qid=%s "
             "why=\"%s\"",
             s->sid, s->user, x->sm.qid,
             status == RM_E_AGAIN
                 ? "not enough replicas acknowledged in time; withdrawn"
                 : rm_strerror(status));
    bs_fail(s, BPROTO_E_TRY_LATER, BS_UNREPLICATED);
    bs_send_end(s);
}

static void
bs_send_accepted(void *arg, int status)
{
    struct bsess *s = arg;
    struct bsend *x = s->send;
    struct mesh_repl_wait *w = x->rwait;

    if (status != 0) {
        if (status == RM_E_FULL)
            bs_fail(s, BPROTO_E_DISK_FULL,
                    "the node's store is full; try "
                    "again later");
        else
            bs_fail(s, BPROTO_E_TRY_LATER,
                    "the message could not be "
                    "stored: %s",
                    rm_strerror(status));
        log_err("event=bridge.send_failed sid=%" PRIu64 " qid=%s err=\"%s\"",
                s->sid, x->sm.qid, rm_strerror(status));
        bs_send_end(s);
        return;
    }
    if (w == NULL) {
        bs_send_handoff(s, 0);
        return;
    }
    if (s->c == NULL || s->closing) {
        /* The client went before it could hear of it: nothing is kept. */
        x->rwait = NULL;
        log_info("event=bridge.withdraw sid=%" PRIu64 " qid=%s why=\"client "
                 "gone before the replicas answered\"",
                 s->sid, x->sm.qid);
        mesh_repl_wait_start(w, x->sm.qid, NULL, NULL);
        mesh_repl_wait_cancel(w);
        bs_send_end(s);
        return;
    }
    x->waiting = 1;
    mesh_repl_wait_start(w, x->sm.qid, bs_send_replicated, s);
}

int
bs_send_abandon(struct bsess *s)
{
    struct bsend *x = s->send;

    if (x == NULL || !x->waiting)
        return 0;
    log_info("event=bridge.withdraw sid=%" PRIu64 " qid=%s why=\"client "
             "gone before the replicas answered\"",
             s->sid, x->sm.qid);
    bs_send_free(s); /* cancels the wait: the message is withdrawn */
    buf_cleanup(&s->msg);
    return 1;
}

/* [mesh] ack_replicas: a message that will be replicated needs a wait
   before it is stored. 0, or answered (-1): nothing is stored. */
static int
bs_send_prepare(struct bsess *s, struct bsend *x)
{
    char why[160];
    int remote = 0;

    for (size_t i = 0; i < x->nrcpts; i++)
        remote |= x->rcpts[i].route == STORE_ROUTE_REMOTE;
    if (s->b->cfg->mesh_ack_replicas == 0 || !remote)
        return 0;
    if (mesh_repl_wait_new(s->b->n->mesh, &x->rwait, why, sizeof(why)) == 0)
        return 0;
    s->b->n->stats.messages_rejected++;
    log_warn("event=bridge.send_unreplicated sid=%" PRIu64 " user=%s "
             "need=%u why=\"%s\"",
             s->sid, s->user, s->b->cfg->mesh_ack_replicas, why);
    bs_fail(s, BPROTO_E_TRY_LATER, BS_UNREPLICATED);
    return -1;
}

static int
bs_user_exists_cb(void *arg, const struct store_user *u)
{
    (void)arg;
    (void)u;
    return 0;
}

/* One recipient to a queue entry, checked as RCPT TO from an
   authenticated user. 0, or answered (-1). */
static int
bs_rcpt(struct bsess *s, const char *addr, struct store_rcpt *r,
        char mbox[STORE_ADDR_MAX])
{
    const struct node_config *cfg = s->b->cfg;
    const char *at = strrchr(addr, '@');
    int rc;

    memset(r, 0, sizeof(*r));
    r->addr = addr;
    if (at == NULL || at == addr || at[1] == '\0' ||
        store_addr_canon(addr, mbox, STORE_ADDR_MAX) != 0) {
        bs_fail(s, BPROTO_E_UNKNOWN_RECIPIENT, "<%.254s> is not an address",
                addr);
        return -1;
    }
    if (!node_config_local_domain(cfg, at + 1, strlen(at + 1))) {
        r->route = STORE_ROUTE_REMOTE;
        return 0;
    }
    r->route = STORE_ROUTE_LOCAL;
    if ((size_t)(at - addr) == 10 && strncasecmp(addr, "postmaster", 10) == 0) {
        snprintf(mbox, STORE_ADDR_MAX, "%s", cfg->postmaster);
    } else {
        rc = store_user_get(s->b->n->store, mbox, bs_user_exists_cb, NULL);
        if (rc == RM_E_NOTFOUND) {
            bs_fail(s, BPROTO_E_UNKNOWN_RECIPIENT,
                    "<%s>: no such user here (550 5.1.1)", addr);
            return -1;
        }
        if (rc != 0) {
            bs_fail(s, BPROTO_E_TRY_LATER, "user lookup failed: %s",
                    rm_strerror(rc));
            return -1;
        }
    }
    r->mailbox = mbox;
    return 0;
}

int
bs_op_send(struct bsess *s, const struct bproto_req *q)
{
    const struct bproto_compose *c = &q->a.send;
    const struct node_config *cfg = s->b->cfg;
    struct bs_parts p;
    struct bsend *x = NULL;
    size_t total = (size_t)c->n_to + c->n_cc + c->n_bcc, k = 0;
    char date[MIME_COMPOSE_DATE_SIZE];
    int r, rc = 0;

    memset(&p, 0, sizeof(p));
    if (total == 0) {
        bs_fail(s, BPROTO_E_BAD_REQUEST, "the message has no recipient");
        goto out;
    }
    if (total > cfg->max_recipients) {
        bs_fail(s, BPROTO_E_TOO_MANY_RECIPIENTS,
                "at most %zu recipients per message", cfg->max_recipients);
        goto out;
    }
    if (c->from != NULL && c->from->address[0] != '\0' &&
        !node_config_sender_ok(cfg, s->user, c->from->address)) {
        bs_fail(s, BPROTO_E_ACCESS_DENIED, "%s may not send as <%.254s>",
                s->user, c->from->address);
        goto out;
    }
    if ((x = calloc(1, sizeof(*x))) == NULL ||
        (x->rcpts = calloc(total, sizeof(*x->rcpts))) == NULL ||
        (x->mbox = calloc(total, sizeof(*x->mbox))) == NULL) {
        bs_fail(s, BPROTO_E_TRY_LATER, "out of memory");
        goto out;
    }
    for (int l = 0; l < 3; l++) {
        const struct bproto_addr *list = l == 0   ? c->to
                                         : l == 1 ? c->cc
                                                  : c->bcc;
        unsigned cnt = l == 0 ? c->n_to : l == 1 ? c->n_cc : c->n_bcc;

        for (unsigned i = 0; i < cnt; i++) {
            int dup = 0;

            if (list[i].address[0] == '\0') {
                bs_fail(s, BPROTO_E_UNKNOWN_RECIPIENT,
                        "recipient \"%.100s\" has no address: resolve it "
                        "first",
                        list[i].name);
                goto out;
            }
            if (bs_rcpt(s, list[i].address, &x->rcpts[k], x->mbox[k]) != 0)
                goto out;
            /* The same mailbox twice is delivered once. */
            for (size_t j = 0; j < k && !dup; j++)
                dup = strcmp(x->mbox[j], x->mbox[k]) == 0;
            if (!dup)
                k++;
        }
    }
    x->nrcpts = k;
    if (bs_parts_fill(s, c, 0, &p) != 0)
        goto out;
    buf_cleanup(&s->msg);
    buf_init(&s->msg, cfg->max_message_size + 8192);
    store_qid_new(s->b->n->store, x->sm.qid);
    if (mime_compose_date((int64_t)time(NULL), date) != 0)
        date[0] = '\0';
    r = buf_appendf(&s->msg,
                    "Received: from [%s] (relaymesh MAPI bridge)\r\n\tby %s "
                    "(relaymesh) id %s\r\n\t(Authenticated sender: %s);\r\n"
                    "\t%s\r\n",
                    s->peer_ip, cfg->hostname, x->sm.qid, s->user, date);
    if (r != 0) {
        buf_cleanup(&s->msg);
        bs_fail(s, BPROTO_E_TRY_LATER, "out of memory");
        goto out;
    }
    x->trace_len = s->msg.len;
    if (bs_compose(s, &p) != 0) {
        buf_cleanup(&s->msg);
        goto out;
    }
    snprintf(x->date, sizeof(x->date), "%s", date);
    x->sm.mail_from = s->user;
    x->sm.ret = STORE_RET_UNSPEC;
    x->sm.body_type = STORE_BODY_8BITMIME;
    x->sm.arrival = (int64_t)time(NULL);
    x->sm.client = "MAPI bridge";
    x->sm.hdr_from = s->user;
    x->sm.hdr_subject = c->subject;
    x->sm.hdr_msgid = s->msgid;
    x->sm.hdr_date = x->date;
    x->sm.rcpts = x->rcpts;
    x->sm.nrcpts = x->nrcpts;
    x->sm.data = s->msg.data;
    x->sm.len = s->msg.len;
    if (bs_send_prepare(s, x) != 0) {
        buf_cleanup(&s->msg);
        goto out;
    }
    s->send = x;
    r = store_msg_accept(s->b->n->store, &x->sm, bs_send_accepted, s);
    if (r != 0) {
        s->send = NULL;
        buf_cleanup(&s->msg);
        bs_fail(s, BPROTO_E_TRY_LATER, "the message could not be stored: %s",
                rm_strerror(r));
        goto out;
    }
    x = NULL;
    rc = 1;
out:
    bs_parts_free(&p);
    if (x != NULL) {
        mesh_repl_wait_cancel(x->rwait);
        free(x->rcpts);
        free(x->mbox);
        free(x);
    }
    bs_drop_uploads(s, c);
    return rc;
}
