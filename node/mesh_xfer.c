/*
 * mesh_xfer.c: mail between mesh nodes (see mesh_xfer.h).
 *
 * Objects: struct mx_out, one message being sent (waiting its turn on
 * its link, or active: begin sent, data flowing inside the window,
 * then waiting for the result); struct mx_in, one message being
 * received (data arriving, then checked and committed). Both name their
 * link by number (mesh_int.h) and go when it closes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>
#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/rm_error.h"
#include "mesh/frame.h"
#include "node/mesh.h"
#include "node/mesh_int.h"
#include "node/mesh_repl.h"
#include "node/mesh_xfer.h"
#include "node/node.h"
#include "node/smtp_parse.h"
#include "store/store.h"

#define MX_KEY_LEN (sizeof(MESH_XFER_DEDUP_PREFIX) - 1 + 32)
#define MX_RECEIVED_MAX 512
#define MX_COMMIT_TRIES 3
#define MX_SWEEP_BATCH 1024

struct mx_out {
    struct mx_out *next;
    uint64_t h; /* handle; the wire's transfer id */
    uint64_t link;
    char home[MESH_NAME_MAX];
    struct mxfer_begin *b;
    const char *data;
    size_t len, sent, acked;
    int active;
    uint64_t deadline; /* uv_now ms */
    mesh_xfer_cb cb;
    void *arg;
};

struct mx_in {
    struct mx_in *next;
    struct mesh_xfer *x;
    uint64_t link, xid;
    char peer[MESH_NAME_MAX];
    struct mxfer_begin *b;
    struct buf data;
    int committing;
    int orphan; /* its link went during the commit: no answer */
    int tries;
    uint64_t deadline;
    /* the commit */
    char qid[STORE_QID_LEN + 1];
    struct buf msg; /* Received: + data */
    struct smtp_data_state *ds;
    struct store_msg sm;
    struct store_rcpt rcpts[MXFER_RCPTS_MAX];
    char mailbox[MXFER_RCPTS_MAX][STORE_ADDR_MAX];
    uint32_t map[MXFER_RCPTS_MAX]; /* stored rcpt index -> begin index */
    struct store_mesh_write w[MXFER_RCPTS_MAX];
    uint8_t keys[MXFER_RCPTS_MAX][MX_KEY_LEN];
    uint8_t expiry[8];
    size_t nremote; /* Internet recipients relayed for a member */
    struct mxfer_res res;
};

struct mesh_xfer {
    struct mesh *m;
    struct node *n;
    struct mx_out *outs;
    struct mx_in *ins;
    uint64_t next_h;
    int stopping;
    int64_t next_sweep; /* unix s */
    int sweeping;
    uint64_t sent, received, dups, bad;
};

static int64_t
mx_wall(void)
{
    return (int64_t)time(NULL);
}

/* ---- sending ----------------------------------------------------------- */

static void mx_pump(struct mesh_xfer *x);

static struct mx_out *
mx_out_find(struct mesh_xfer *x, uint64_t link, uint64_t h)
{
    for (struct mx_out *o = x->outs; o; o = o->next)
        if (o->h == h && o->link == link)
            return o;
    return NULL;
}

static void
mx_out_unlink(struct mesh_xfer *x, struct mx_out *o)
{
    for (struct mx_out **pp = &x->outs; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            o->next = NULL;
            return;
        }
}

static void
mx_out_free(struct mx_out *o)
{
    free(o->b);
    free(o);
}

/* Finish o (already unlinked): its callback, then its memory. */
static void
mx_out_done(struct mx_out *o, int status, const char *why,
            const struct mxfer_res *res)
{
    if (o->cb != NULL)
        o->cb(o->arg, status, why, res);
    mx_out_free(o);
}

/* Fail every transfer on link (or all with link 0 and all = 1). */
static void
mx_out_fail_link(struct mesh_xfer *x, uint64_t link, int status,
                 const char *why)
{
    struct mx_out *list = NULL, **tail = &list, *o;

    for (struct mx_out **pp = &x->outs; *pp;) {
        o = *pp;
        if (o->link == link) {
            *pp = o->next;
            o->next = NULL;
            *tail = o;
            tail = &o->next;
        } else {
            pp = &o->next;
        }
    }
    /* Callbacks may send again: the list is ours now. */
    while ((o = list) != NULL) {
        list = o->next;
        log_info("event=mesh.xfer_failed qid=%.*s home=%s reason=\"%s\"",
                 STORE_QID_LEN, strrchr(o->b->id, '/') + 1, o->home, why);
        mx_out_done(o, status, why, NULL);
    }
}

/* Send what the window allows for one active transfer. 0, or the
   link's error (the caller fails the link). */
static int
mx_out_feed(struct mesh_xfer *x, struct mx_out *o)
{
    struct buf b;
    int r = 0;

    buf_init(&b, FRAME_MSG_MAX);
    while (o->sent < o->len && o->sent - o->acked < MESH_XFER_WINDOW) {
        size_t n = o->len - o->sent;

        if (n > MXFER_CHUNK_MAX)
            n = MXFER_CHUNK_MAX;
        buf_reset(&b);
        r = mxfer_data_encode(&b, o->h, o->sent, o->data + o->sent, n);
        if (r == 0)
            r = mesh__link_send(x->m, o->link, "xdat", b.data, b.len);
        if (r != 0)
            break;
        o->sent += n;
    }
    buf_cleanup(&b);
    return r;
}

/* Start waiting transfers where their link has room; feed active ones. */
static void
mx_pump(struct mesh_xfer *x)
{
    if (x->stopping)
        return;
    for (struct mx_out *o = x->outs; o; o = o->next) {
        int r = 0;

        if (!o->active) {
            unsigned busy = 0;
            struct buf b;

            for (struct mx_out *q = x->outs; q; q = q->next)
                busy += q->active && q->link == o->link;
            if (busy >= MESH_XFER_LINK_MAX)
                continue;
            buf_init(&b, FRAME_MSG_MAX);
            r = mxfer_begin_encode(&b, o->b);
            if (r == 0)
                r = mesh__link_send(x->m, o->link, "xfer", b.data, b.len);
            buf_cleanup(&b);
            if (r == 0) {
                o->active = 1;
                o->deadline =
                    uv_now(mesh__node(x->m)->loop) + MESH_XFER_TIMEOUT_MS;
                x->sent++;
            }
        }
        if (r == 0 && o->active)
            r = mx_out_feed(x, o);
        if (r != 0) {
            /* The link is failing: its closed callback (never from
               inside this call) fails what it carries. */
            log_warn("event=mesh.xfer_send_failed home=%s err=\"%s\"", o->home,
                     rm_strerror(r));
            mesh__link_drop(x->m, o->link, 0);
            break;
        }
    }
}

int
mesh_xfer_send(struct mesh *m, const uint8_t home_pk[32], const char *qid,
               const struct mxfer_begin *b, const char *data, size_t len,
               mesh_xfer_cb cb, void *arg, uint64_t *handle)
{
    struct mesh_xfer *x = m != NULL ? mesh__xfer(m) : NULL;
    struct mx_out *o, **pp;
    uint64_t link;
    int n;

    if (x == NULL || x->stopping)
        return RM_E_CLOSED;
    if (b == NULL || qid == NULL || b->nrcpts == 0 ||
        b->nrcpts > MXFER_RCPTS_MAX || (len > 0 && data == NULL))
        return RM_E_INVAL;
    if ((link = mesh__out_link(m, home_pk)) == 0)
        return RM_E_AGAIN;
    if ((o = calloc(1, sizeof(*o))) == NULL ||
        (o->b = malloc(sizeof(*o->b))) == NULL) {
        free(o);
        return -ENOMEM;
    }
    memcpy(o->b, b, sizeof(*b));
    o->h = ++x->next_h;
    o->b->x = o->h;
    o->b->size = len;
    /* Mail a replica took over keeps the mesh id it was accepted with,
       so that the home node's dedup records still match. */
    if (mesh_repl_mid(m, qid, o->b->id, sizeof(o->b->id)) == 1)
        n = (int)strlen(o->b->id);
    else
        n = snprintf(o->b->id, sizeof(o->b->id), "%s/%s",
                     mesh__node(m)->id.fingerprint, qid);
    if (n < 0 || (size_t)n >= sizeof(o->b->id)) {
        mx_out_free(o);
        return RM_E_INVAL;
    }
    o->link = link;
    o->data = data;
    o->len = len;
    o->cb = cb;
    o->arg = arg;
    snprintf(o->home, sizeof(o->home), "?");
    mesh__peer_name(m, home_pk, o->home, sizeof(o->home));
    for (pp = &x->outs; *pp; pp = &(*pp)->next)
        ;
    *pp = o; /* FIFO: turns in order */
    *handle = o->h;
    mx_pump(x);
    return 0;
}

void
mesh_xfer_cancel(struct mesh *m, uint64_t handle)
{
    struct mesh_xfer *x = m != NULL ? mesh__xfer(m) : NULL;

    if (x == NULL)
        return;
    for (struct mx_out *o = x->outs; o; o = o->next)
        if (o->h == handle) {
            mx_out_unlink(x, o);
            mx_out_free(o);
            mx_pump(x);
            return;
        }
}

static void
mx_on_ack(struct mesh_xfer *x, uint64_t link, const msgpack_object *body)
{
    struct mxfer_ack a;
    struct mx_out *o;

    if (mxfer_ack_decode_obj(body, &a) != 0) {
        x->bad++;
        log_warn("event=mesh.bad_frame type=xack reason=\"malformed\"");
        mesh__link_drop(x->m, link, 1);
        return;
    }
    if ((o = mx_out_find(x, link, a.x)) == NULL || !o->active)
        return; /* finished meanwhile */
    if (a.off > o->sent) {
        x->bad++;
        log_warn("event=mesh.bad_frame type=xack reason=\"acknowledges "
                 "unsent data\"");
        mesh__link_drop(x->m, link, 1);
        return;
    }
    if (a.off > o->acked)
        o->acked = a.off;
    o->deadline = uv_now(mesh__node(x->m)->loop) + MESH_XFER_TIMEOUT_MS;
    mx_pump(x);
}

static void
mx_on_res(struct mesh_xfer *x, uint64_t link, const msgpack_object *body)
{
    struct mxfer_res *rs = malloc(sizeof(*rs));
    struct mx_out *o;

    if (rs == NULL)
        return; /* the timeout will tell */
    if (mxfer_res_decode_obj(body, rs) != 0) {
        x->bad++;
        log_warn("event=mesh.bad_frame type=xres reason=\"malformed\"");
        free(rs);
        mesh__link_drop(x->m, link, 1);
        return;
    }
    if ((o = mx_out_find(x, link, rs->x)) == NULL || !o->active) {
        free(rs);
        return;
    }
    mx_out_unlink(x, o);
    if (rs->n != o->b->nrcpts) {
        x->bad++;
        log_warn("event=mesh.bad_frame type=xres reason=\"%u results for %u "
                 "recipients\"",
                 rs->n, o->b->nrcpts);
        mx_out_done(o, RM_E_PROTO, "the home node's answer was malformed",
                    NULL);
        free(rs);
        mesh__link_drop(x->m, link, 1);
        return;
    }
    mx_out_done(o, 0, NULL, rs);
    free(rs);
    mx_pump(x);
}

/* ---- receiving --------------------------------------------------------- */

static struct mx_in *
mx_in_find(struct mesh_xfer *x, uint64_t link, uint64_t xid)
{
    for (struct mx_in *i = x->ins; i; i = i->next)
        if (i->link == link && i->xid == xid && !i->orphan)
            return i;
    return NULL;
}

static void
mx_in_free(struct mx_in *in)
{
    struct mesh_xfer *x = in->x;

    for (struct mx_in **pp = &x->ins; *pp; pp = &(*pp)->next)
        if (*pp == in) {
            *pp = in->next;
            break;
        }
    buf_cleanup(&in->data);
    buf_cleanup(&in->msg);
    free(in->ds);
    free(in->b);
    free(in);
}

static void mx_result(struct mxfer_result *r, enum mxfer_outcome oc,
                      const char *status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
mx_result(struct mxfer_result *r, enum mxfer_outcome oc, const char *status,
          const char *fmt, ...)
{
    va_list ap;

    r->outcome = oc;
    snprintf(r->status, sizeof(r->status), "%s", status);
    va_start(ap, fmt);
    vsnprintf(r->diag, sizeof(r->diag), fmt, ap);
    va_end(ap);
}

static void
mx_in_answer(struct mx_in *in)
{
    struct buf b;
    int r;

    if (in->orphan)
        return;
    in->res.x = in->xid;
    in->res.n = in->b->nrcpts;
    buf_init(&b, FRAME_MSG_MAX);
    r = mxfer_res_encode(&b, &in->res);
    if (r == 0)
        r = mesh__link_send(in->x->m, in->link, "xres", b.data, b.len);
    if (r != 0)
        log_warn("event=mesh.xfer_answer_failed peer=%s id=%s err=\"%s\"",
                 in->peer, in->b->id, rm_strerror(r));
    buf_cleanup(&b);
}

/* The dedup key of (mesh message id, canonical recipient). */
static void
mx_dedup_key(const char *id, const char *canon, uint8_t out[MX_KEY_LEN])
{
    crypto_generichash_state st;
    size_t pl = sizeof(MESH_XFER_DEDUP_PREFIX) - 1;

    memcpy(out, MESH_XFER_DEDUP_PREFIX, pl);
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)id, strlen(id) + 1);
    crypto_generichash_update(&st, (const uint8_t *)canon, strlen(canon));
    crypto_generichash_final(&st, out + pl, 32);
}

static int
mx_found_cb(void *arg, const void *key, size_t klen, const void *val,
            size_t vlen)
{
    (void)key;
    (void)klen;
    (void)val;
    (void)vlen;
    *(int *)arg = 1;
    return 0;
}

static int
mx_user_cb(void *arg, const struct store_user *u)
{
    (void)u;
    *(int *)arg = 1;
    return 0;
}

static void mx_in_commit_done(void *arg, int status);

/* Check the recipients, leave out those stored before, and store the
   rest (or answer at once when none is left). */
/* 1 when another member hosts addr's domain: not ours to take. */
static int
mx_mesh_domain(struct mesh_xfer *x, const char *addr)
{
    struct mesh_home home;

    return mesh_route(x->m, addr, strlen(addr), &home) == 1;
}

static void
mx_in_process(struct mx_in *in)
{
    struct mesh_xfer *x = in->x;
    struct node *n = x->n;
    const struct node_config *cfg = n->cfg;
    const struct mxfer_begin *b = in->b;
    size_t ns = 0;
    int64_t exp;
    int rc;

    memset(&in->res, 0, sizeof(in->res));
    in->nremote = 0;
    for (unsigned i = 0; i < b->nrcpts; i++) {
        struct mxfer_result *res = &in->res.r[i];
        const char *addr = b->rcpts[i].addr;
        const char *at = strrchr(addr, '@');
        char canon[STORE_ADDR_MAX];
        const char *mailbox;
        int found = 0, dup = 0, remote = 0;

        if (at == NULL || store_addr_canon(addr, canon, sizeof(canon)) != 0) {
            mx_result(res, MXFER_BOUNCED, "5.1.3",
                      "<%s>: Recipient address rejected: bad address syntax",
                      addr);
            continue;
        }
        /* Not ours and not the Internet mail of a member without egress
           (which sends it here for that; with egress it delivers its own):
           a domain we no longer host, or another member's. */
        if (!node_config_local_domain(cfg, at + 1, strlen(at + 1)) &&
            (mx_mesh_domain(x, addr) || mesh__peer_egress(x->m, in->peer))) {
            mx_result(res, MXFER_BOUNCED, "5.1.1",
                      "<%s>: Recipient address rejected: domain not hosted "
                      "by %s",
                      addr, cfg->mesh_name);
            continue;
        }
        if (!node_config_local_domain(cfg, at + 1, strlen(at + 1))) {
            /* Internet mail of a member without egress: ours to deliver
               (the sender chose us by our record's egress flag). */
            if (!cfg->mesh_egress) {
                mx_result(res, MXFER_DEFERRED, "4.4.1",
                          "%s does not deliver to the Internet "
                          "([mesh] egress = no)",
                          cfg->mesh_name);
                continue;
            }
            remote = 1;
            mailbox = canon;
        } else if ((size_t)(at - addr) == 10 &&
                   strncasecmp(addr, "postmaster", 10) == 0) {
            mailbox = cfg->postmaster;
        } else {
            rc = store_user_get(n->store, canon, mx_user_cb, &found);
            if (rc != 0 && rc != RM_E_NOTFOUND) {
                mx_result(res, MXFER_DEFERRED, "4.3.0",
                          "temporary lookup failure at %s", cfg->mesh_name);
                continue;
            }
            if (!found) {
                mx_result(res, MXFER_BOUNCED, "5.1.1",
                          "<%s>: Recipient address rejected: User unknown "
                          "in local recipient table of %s",
                          addr, cfg->mesh_name);
                continue;
            }
            mailbox = canon;
        }
        mx_dedup_key(b->id, canon, in->keys[ns]);
        rc = store_mesh_get(n->store, in->keys[ns], MX_KEY_LEN, mx_found_cb,
                            &dup);
        if (rc != 0 && rc != RM_E_NOTFOUND) {
            mx_result(res, MXFER_DEFERRED, "4.3.0",
                      "temporary lookup failure at %s", cfg->mesh_name);
            continue;
        }
        for (size_t k = 0; k < ns && !dup; k++)
            dup = strcmp(in->mailbox[k], mailbox) == 0;
        if (dup) {
            x->dups++;
            mx_result(res, MXFER_DELIVERED, "2.0.0", "already delivered at %s",
                      cfg->mesh_name);
            continue;
        }
        snprintf(in->mailbox[ns], sizeof(in->mailbox[ns]), "%s", mailbox);
        in->rcpts[ns] = (struct store_rcpt){
            .addr = addr,
            .mailbox = remote ? NULL : in->mailbox[ns],
            .orcpt = b->rcpts[i].orcpt[0] ? b->rcpts[i].orcpt : NULL,
            .notify = b->rcpts[i].notify,
            .route = remote ? STORE_ROUTE_REMOTE : STORE_ROUTE_LOCAL,
        };
        in->nremote += remote;
        in->w[ns] = (struct store_mesh_write){STORE_MESH_NEW, in->keys[ns],
                                              MX_KEY_LEN, in->expiry, 8};
        in->map[ns] = i;
        res->outcome = MXFER_DEFERRED; /* until the commit says */
        ns++;
    }
    if (ns == 0) {
        mx_in_answer(in);
        mx_in_free(in);
        return;
    }
    exp = mx_wall() + (int64_t)cfg->mesh_tombstone_lifetime;
    for (int k = 0; k < 8; k++)
        in->expiry[k] = (uint8_t)((uint64_t)exp >> (56 - 8 * k));
    store_qid_new(n->store, in->qid);
    buf_reset(&in->msg);
    {
        char date[64];
        struct tm tm;
        time_t t = time(NULL);

        localtime_r(&t, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
        rc = buf_appendf(&in->msg,
                         "Received: from %s by %s with RMESH id %s;\r\n"
                         "\t%s\r\n",
                         in->peer, cfg->mesh_name, in->qid, date);
    }
    if (rc == 0 && in->data.len > 0)
        rc = buf_append(&in->msg, in->data.data, in->data.len);
    if (rc != 0) {
        for (size_t k = 0; k < ns; k++)
            mx_result(&in->res.r[in->map[k]], MXFER_DEFERRED, "4.3.0",
                      "out of memory at %s", cfg->mesh_name);
        mx_in_answer(in);
        mx_in_free(in);
        return;
    }
    /* The header summary for mailbox listings, as SMTP makes it. */
    if (in->ds == NULL && (in->ds = calloc(1, sizeof(*in->ds))) != NULL) {
        smtp_data_init(in->ds);
        in->ds->normalise = 1;
        if (in->data.len > 0)
            smtp_bdat_feed(in->ds, in->data.data, in->data.len, NULL, NULL);
    }
    memset(&in->sm, 0, sizeof(in->sm));
    memcpy(in->sm.qid, in->qid, sizeof(in->sm.qid));
    in->sm.mail_from = b->mail_from;
    in->sm.envid = b->envid[0] ? b->envid : NULL;
    in->sm.ret = (enum store_ret)b->ret;
    in->sm.body_type = (enum store_body)b->body;
    in->sm.smtputf8 = b->smtputf8;
    in->sm.arrival = mx_wall();
    in->sm.client = in->peer;
    if (in->ds != NULL) {
        in->sm.hdr_from = in->ds->from;
        in->sm.hdr_subject = in->ds->subject;
        in->sm.hdr_msgid = in->ds->msgid;
        in->sm.hdr_date = in->ds->date;
    }
    in->sm.rcpts = in->rcpts;
    in->sm.nrcpts = ns;
    in->sm.data = in->msg.data;
    in->sm.len = in->msg.len;
    in->sm.mesh_new = in->w;
    in->sm.nmesh_new = ns;
    rc = store_msg_accept(n->store, &in->sm, mx_in_commit_done, in);
    if (rc != 0) {
        mx_in_commit_done(in, rc);
        return;
    }
    mesh__hold(x->m);
    in->committing = 1;
}

static void
mx_in_commit_done(void *arg, int status)
{
    struct mx_in *in = arg;
    struct mesh_xfer *x = in->x;
    struct mesh *m = x->m;
    const struct node_config *cfg = x->n->cfg;
    int held = in->committing;

    in->committing = 0;
    if (status == RM_E_EXISTS && ++in->tries < MX_COMMIT_TRIES &&
        !x->stopping) {
        /* Another transfer of the same message stored some recipient
           meanwhile: check again. */
        mx_in_process(in);
        if (held)
            mesh__release(m);
        return;
    }
    if (status == 0) {
        uint32_t idx[MXFER_RCPTS_MAX];
        size_t nl = 0;

        for (size_t k = 0; k < in->sm.nrcpts; k++) {
            if (in->rcpts[k].route == STORE_ROUTE_LOCAL)
                idx[nl++] = (uint32_t)k;
            mx_result(&in->res.r[in->map[k]], MXFER_DELIVERED, "2.0.0",
                      "stored at %s as %s", cfg->mesh_name, in->qid);
        }
        x->received++;
        log_info("event=mesh.xfer_accept qid=%s id=%s from=%s rcpts=%zu "
                 "internet=%zu size=%zu",
                 in->qid, in->b->id, in->peer, in->sm.nrcpts, in->nremote,
                 in->msg.len);
        if (!x->stopping && x->n->queue != NULL && nl > 0)
            node_queue_local(x->n->queue, in->qid, idx, nl);
        if (!x->stopping && x->n->queue != NULL && in->nremote > 0)
            node_queue_remote(x->n->queue, in->qid);
    } else {
        log_err("event=mesh.xfer_store_failed id=%s from=%s err=\"%s\"",
                in->b->id, in->peer, rm_strerror(status));
        for (size_t k = 0; k < in->sm.nrcpts; k++)
            mx_result(&in->res.r[in->map[k]], MXFER_DEFERRED,
                      status == RM_E_FULL ? "4.3.1" : "4.3.0",
                      "%s could not store the message: %s", cfg->mesh_name,
                      rm_strerror(status));
    }
    mx_in_answer(in);
    mx_in_free(in);
    if (held)
        mesh__release(m); /* may free m and x: the last thing */
}

static void
mx_in_ack(struct mesh_xfer *x, struct mx_in *in)
{
    struct mxfer_ack a = {in->xid, in->data.len};
    struct buf b;

    buf_init(&b, 64);
    if (mxfer_ack_encode(&b, &a) == 0)
        mesh__link_send(x->m, in->link, "xack", b.data, b.len);
    buf_cleanup(&b);
}

static void
mx_drop(struct mesh_xfer *x, uint64_t link, const char *peer, const char *type,
        const char *why)
{
    x->bad++;
    log_warn("event=mesh.bad_frame type=%s peer=%s reason=\"%s\" "
             "action=disconnect",
             type, peer, why);
    mesh__link_drop(x->m, link, 1);
}

static void
mx_on_begin(struct mesh_xfer *x, uint64_t link, const char *peer,
            const msgpack_object *body)
{
    const struct node_config *cfg = x->n->cfg;
    struct mx_in *in;
    unsigned busy = 0;

    if (x->stopping)
        return;
    if ((in = calloc(1, sizeof(*in))) == NULL ||
        (in->b = malloc(sizeof(*in->b))) == NULL) {
        free(in);
        return; /* the sender times out and tries again */
    }
    if (mxfer_begin_decode_obj(body, in->b) != 0) {
        free(in->b);
        free(in);
        mx_drop(x, link, peer, "xfer", "malformed");
        return;
    }
    for (struct mx_in *i = x->ins; i; i = i->next)
        if (i->link == link && !i->orphan) {
            busy++;
            if (i->xid == in->b->x) {
                free(in->b);
                free(in);
                mx_drop(x, link, peer, "xfer", "transfer id in use");
                return;
            }
        }
    if (busy >= MESH_XFER_IN_MAX) {
        free(in->b);
        free(in);
        mx_drop(x, link, peer, "xfer", "too many transfers at once");
        return;
    }
    in->x = x;
    in->link = link;
    in->xid = in->b->x;
    snprintf(in->peer, sizeof(in->peer), "%s", peer);
    in->deadline = uv_now(x->n->loop) + MESH_XFER_TIMEOUT_MS;
    buf_init(&in->data, (size_t)in->b->size);
    buf_init(&in->msg, (size_t)in->b->size + MX_RECEIVED_MAX);
    in->next = x->ins;
    x->ins = in;
    if (in->b->size > cfg->max_message_size ||
        (in->b->size > 0 && buf_reserve(&in->data, in->b->size) != 0)) {
        for (unsigned i = 0; i < in->b->nrcpts; i++)
            mx_result(&in->res.r[i], MXFER_BOUNCED, "5.3.4",
                      "message size %" PRIu64 " exceeds the limit of %s "
                      "(%" PRIu64 " bytes)",
                      in->b->size, cfg->mesh_name, cfg->max_message_size);
        log_info("event=mesh.xfer_too_big id=%s from=%s size=%" PRIu64,
                 in->b->id, peer, in->b->size);
        mx_in_answer(in);
        mx_in_free(in);
        return;
    }
    log_info("event=mesh.xfer_begin id=%s from=%s size=%" PRIu64 " rcpts=%u",
             in->b->id, peer, in->b->size, in->b->nrcpts);
    if (in->b->size == 0)
        mx_in_process(in);
}

static void
mx_on_data(struct mesh_xfer *x, uint64_t link, const char *peer,
           const msgpack_object *body)
{
    struct mxfer_data d;
    struct mx_in *in;

    if (mxfer_data_decode_obj(body, &d) != 0) {
        mx_drop(x, link, peer, "xdat", "malformed");
        return;
    }
    if ((in = mx_in_find(x, link, d.x)) == NULL)
        return; /* answered already (too big, say): the rest is moot */
    if (in->committing || d.off != in->data.len ||
        d.len > in->b->size - in->data.len) {
        mx_drop(x, link, peer, "xdat",
                in->committing || d.off != in->data.len
                    ? "data out of order"
                    : "more data than the transfer announced");
        return;
    }
    if (buf_append(&in->data, d.data, d.len) != 0) {
        mx_drop(x, link, peer, "xdat", "cannot buffer the data");
        return;
    }
    in->deadline = uv_now(x->n->loop) + MESH_XFER_TIMEOUT_MS;
    mx_in_ack(x, in);
    if (in->data.len == in->b->size)
        mx_in_process(in);
}

int
mesh_xfer_frame(struct mesh_xfer *x, uint64_t link, const char *peer,
                const char *type, size_t tlen, const msgpack_object *body)
{
    if (tlen != 4 || type[0] != 'x')
        return 0;
    if (memcmp(type, "xfer", 4) == 0)
        mx_on_begin(x, link, peer, body);
    else if (memcmp(type, "xdat", 4) == 0)
        mx_on_data(x, link, peer, body);
    else if (memcmp(type, "xack", 4) == 0)
        mx_on_ack(x, link, body);
    else if (memcmp(type, "xres", 4) == 0)
        mx_on_res(x, link, body);
    else
        return 0;
    return 1;
}

void
mesh_xfer_link_closed(struct mesh_xfer *x, uint64_t link)
{
    for (struct mx_in *i = x->ins, *nx; i; i = nx) {
        nx = i->next;
        if (i->link != link)
            continue;
        if (i->committing)
            i->orphan = 1; /* freed by its commit callback */
        else
            mx_in_free(i);
    }
    mx_out_fail_link(x, link, RM_E_CLOSED, "connection to the home node lost");
    mx_pump(x);
}

/* ---- dedup sweep ------------------------------------------------------- */

struct mx_sweep {
    int64_t now;
    size_t n;
    uint8_t keys[MX_SWEEP_BATCH][MX_KEY_LEN];
};

static int
mx_sweep_cb(void *arg, const void *key, size_t klen, const void *val,
            size_t vlen)
{
    struct mx_sweep *sw = arg;
    const uint8_t *v = val;
    uint64_t exp = 0;

    if (klen != MX_KEY_LEN || vlen != 8)
        return 0;
    for (int k = 0; k < 8; k++)
        exp = exp << 8 | v[k];
    if ((int64_t)exp > sw->now)
        return 0;
    memcpy(sw->keys[sw->n++], key, MX_KEY_LEN);
    return sw->n == MX_SWEEP_BATCH ? 1 : 0;
}

static void
mx_sweep_done(void *arg, int status)
{
    struct mesh_xfer *x = arg;
    struct mesh *m = x->m;

    x->sweeping = 0;
    if (status != 0)
        log_err("event=mesh.dedup_sweep_failed err=\"%s\"",
                rm_strerror(status));
    mesh__release(m);
}

static void
mx_sweep(struct mesh_xfer *x)
{
    struct mx_sweep *sw = calloc(1, sizeof(*sw));
    struct store_mesh_write *w;
    int rc;

    if (sw == NULL)
        return;
    sw->now = mx_wall();
    rc = store_mesh_each(x->n->store, MESH_XFER_DEDUP_PREFIX,
                         sizeof(MESH_XFER_DEDUP_PREFIX) - 1, mx_sweep_cb, sw);
    if (rc < 0 || sw->n == 0 || (w = calloc(sw->n, sizeof(*w))) == NULL) {
        free(sw);
        return;
    }
    for (size_t i = 0; i < sw->n; i++)
        w[i] = (struct store_mesh_write){STORE_MESH_DEL, sw->keys[i],
                                         MX_KEY_LEN, NULL, 0};
    if (store_mesh_apply(x->n->store, w, sw->n, mx_sweep_done, x) == 0) {
        x->sweeping = 1;
        mesh__hold(x->m);
        log_info("event=mesh.dedup_sweep removed=%zu", sw->n);
        if (sw->n == MX_SWEEP_BATCH)
            x->next_sweep = sw->now + 1; /* more next time */
    }
    free(w);
    free(sw);
}

void
mesh_xfer_tick(struct mesh_xfer *x)
{
    uint64_t now = uv_now(x->n->loop);

    if (x->stopping)
        return;
    for (struct mx_in *i = x->ins, *nx; i; i = nx) {
        nx = i->next;
        if (!i->committing && now > i->deadline) {
            log_warn("event=mesh.xfer_timeout direction=in id=%s from=%s",
                     i->b->id, i->peer);
            mx_in_free(i);
        }
    }
    for (struct mx_out *o = x->outs; o; o = o->next)
        if (o->active && now > o->deadline) {
            /* One stalled transfer means the link is no good: fail what
               it carries, the entries are tried again. */
            mesh__link_drop(x->m, o->link, 0);
            break;
        }
    if (!x->sweeping && mx_wall() >= x->next_sweep) {
        x->next_sweep = mx_wall() + MESH_XFER_SWEEP_S;
        mx_sweep(x);
    }
}

/* ---- life -------------------------------------------------------------- */

int
mesh_xfer_new(struct mesh *m, struct mesh_xfer **out)
{
    struct mesh_xfer *x = calloc(1, sizeof(*x));

    if (x == NULL)
        return -ENOMEM;
    x->m = m;
    x->n = mesh__node(m);
    x->next_sweep = mx_wall() + 60;
    *out = x;
    return 0;
}

void
mesh_xfer_stop(struct mesh_xfer *x)
{
    x->stopping = 1;
    while (x->outs != NULL) {
        struct mx_out *o = x->outs;

        x->outs = o->next;
        mx_out_free(o);
    }
    for (struct mx_in *i = x->ins, *nx; i; i = nx) {
        nx = i->next;
        if (i->committing)
            i->orphan = 1;
        else
            mx_in_free(i);
    }
}

void
mesh_xfer_free(struct mesh_xfer *x)
{
    if (x == NULL)
        return;
    mesh_xfer_stop(x);
    free(x);
}
