/*
 * ctl_server: the node's control socket (a Unix socket, mode 0600) that
 * the relaymesh CLI talks to. Wire format in ctl_codec.h.
 *
 * A connection reads frames into a bounded reader and answers them in
 * order, one at a time: commands that only read the store answer at once;
 * commands that write (user, queue changes) are asynchronous, and the
 * connection stops reading until their callback has run. A connection is
 * freed only in its close_cb, and it is not closed while an operation is
 * in flight: when the client goes away meanwhile, the operation's callback
 * sees `eof` and closes the handle instead of answering.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/rm_error.h"
#include "bridge/server.h"
#include "node/ctl_codec.h"
#include "node/auth_cache.h"
#include "node/mesh.h"
#include "node/mesh_repl.h"
#include "node/node.h"
#include "node/outbound.h"
#include "node/smtp_session.h"
#include "node/tls.h"

#define CTL_CONN_MAX 64          /* concurrent CLI connections */
#define CTL_CAT_CHUNK (8u << 20) /* mailbox.cat bytes per response */
#define CTL_PASSWORD_MAX 1024
#define CTL_PENDING 1 /* handler: the answer comes later */
/* queue.list older_than ceiling: 100 years, far past any queue lifetime
   and far from int64 overflow when subtracted from now. */
#define CTL_AGE_MAX (100 * 366 * 86400LL)

struct ctl_conn;

struct ctl_server {
    struct node *n;
    uv_pipe_t listener;
    struct ctl_conn *conns; /* doubly linked */
    size_t nconns;
    uint64_t next_id;
    int closing;
    int listener_closed;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

enum ctl_op {
    CTL_OP_NONE = 0,
    CTL_OP_USER_ADD,
    CTL_OP_USER_PASSWD,
    CTL_OP_USER_DEL,
    CTL_OP_QUEUE_DELETE,
    CTL_OP_QUEUE_HOLD,
    CTL_OP_QUEUE_RELEASE,
    CTL_OP_QUEUE_RETRY, /* op_key.qid "" = every waiting entry */
    CTL_OP_MESH         /* a mesh command; node/mesh.c answers */
};

struct ctl_conn {
    uv_pipe_t pipe;
    struct ctl_server *srv;
    struct ctl_conn *prev, *next;
    uint64_t id;
    struct ctl_reader rd;
    int reading;
    int busy;      /* an asynchronous operation is in flight */
    int eof;       /* peer gone, or server closing: close once idle */
    int peer_gone; /* nobody to answer any more */
    unsigned nwrites;
    char err[256]; /* error text of the request being answered */
    /* The operation in flight (copied out of the request). */
    enum ctl_op op;
    uv_work_t work;
    char op_addr[STORE_ADDR_MAX];
    char op_id[STORE_QID_LEN + 16];
    char *op_pw;
    size_t op_pwlen;
    int op_rc;
    char op_hash[STORE_PWHASH_MAX];
    struct store_qkey op_key;
    uint32_t *op_rcpts; /* queue.delete: the recipients removed */
    size_t op_nrcpts;
    uint32_t op_held;    /* queue.retry: matching entries on hold */
    uint32_t op_waiting; /* ... and the others (queued, deferred) */
};

struct ctl_wreq {
    uv_write_t req;
    struct ctl_conn *c;
    char *data;
};

typedef int (*ctl_handler_fn)(struct ctl_conn *c, const struct ctl_obj *args,
                              struct ctl_enc *e);

struct ctl_cmd {
    const char *name;
    ctl_handler_fn fn;
};

static void ctl_conn_process(struct ctl_conn *c);
static void ctl_conn_maybe_close(struct ctl_conn *c);
static void ctl_conn_send(struct ctl_conn *c, struct ctl_enc *e);

/* ---- helpers ---------------------------------------------------------- */

static int ctl_fail(struct ctl_conn *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
ctl_fail(struct ctl_conn *c, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    return code;
}

static void
ctl_wipe(void *p, size_t len)
{
    if (p != NULL)
        explicit_bzero(p, len);
}

static void
ctl_op_clear(struct ctl_conn *c)
{
    if (c->op_pw != NULL) {
        ctl_wipe(c->op_pw, c->op_pwlen);
        free(c->op_pw);
        c->op_pw = NULL;
    }
    c->op_pwlen = 0;
    ctl_wipe(c->op_hash, sizeof(c->op_hash));
    free(c->op_rcpts);
    c->op_rcpts = NULL;
    c->op_nrcpts = 0;
    c->op = CTL_OP_NONE;
}

/* A string argument, required. */
static int
ctl_arg_str(struct ctl_conn *c, const struct ctl_obj *args, const char *key,
            char *out, size_t outsz)
{
    int r = ctl_obj_get_str(args, key, out, outsz);

    switch (r) {
    case 0:
        return 0;
    case RM_E_NOTFOUND:
        return ctl_fail(c, RM_E_INVAL, "missing argument \"%s\"", key);
    case RM_E_TOOBIG:
        return ctl_fail(c, RM_E_INVAL, "argument \"%s\" is too long", key);
    default:
        return ctl_fail(c, RM_E_INVAL, "argument \"%s\" must be a string", key);
    }
}

/* "address" argument in canonical form. */
static int
ctl_arg_addr(struct ctl_conn *c, const struct ctl_obj *args, char *out,
             size_t outsz)
{
    char raw[STORE_ADDR_MAX];
    int r = ctl_arg_str(c, args, "address", raw, sizeof(raw));

    if (r != 0)
        return r;
    if (store_addr_canon(raw, out, outsz) != 0 || strchr(raw, ' ') != NULL)
        return ctl_fail(c, RM_E_INVAL,
                        "\"%.200s\" is not an address like user@domain", raw);
    return 0;
}

/* "id" argument: "QID" (every recipient) or "QID.N" (one). */
static int
ctl_arg_qkey(struct ctl_conn *c, const struct ctl_obj *args,
             struct store_qkey *key)
{
    char raw[64];
    const char *dot;
    int r = ctl_arg_str(c, args, "id", raw, sizeof(raw));

    if (r != 0)
        return r;
    dot = strchr(raw, '.');
    if ((dot ? (size_t)(dot - raw) : strlen(raw)) != STORE_QID_LEN)
        goto bad;
    for (size_t i = 0; i < STORE_QID_LEN; i++) {
        char ch = raw[i];
        if (ch >= 'a' && ch <= 'f')
            ch = (char)(ch - 'a' + 'A');
        if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F')))
            goto bad;
        key->qid[i] = ch;
    }
    key->qid[STORE_QID_LEN] = '\0';
    key->rcpt = UINT32_MAX;
    if (dot != NULL) {
        char *end;
        unsigned long v;
        errno = 0;
        if (dot[1] < '0' || dot[1] > '9')
            goto bad;
        v = strtoul(dot + 1, &end, 10);
        if (*end != '\0' || errno != 0 || v >= UINT32_MAX)
            goto bad;
        key->rcpt = (uint32_t)v;
    }
    return 0;
bad:
    return ctl_fail(c, RM_E_INVAL,
                    "\"%.60s\" is not a queue id (16 hex digits, optionally "
                    "followed by .N for one recipient)",
                    raw);
}

static int
ctl_need_store(struct ctl_conn *c)
{
    if (c->srv->n->store == NULL || c->srv->closing)
        return ctl_fail(c, RM_E_CLOSED, "the node is shutting down");
    return 0;
}

static const char *
ctl_route_name(enum store_route r)
{
    switch (r) {
    case STORE_ROUTE_LOCAL:
        return "local";
    case STORE_ROUTE_REMOTE:
        return "remote";
    }
    return "?";
}

static const char *
ctl_ret_name(enum store_ret r)
{
    switch (r) {
    case STORE_RET_UNSPEC:
        return "";
    case STORE_RET_FULL:
        return "FULL";
    case STORE_RET_HDRS:
        return "HDRS";
    }
    return "";
}

static const char *
ctl_body_name(enum store_body b)
{
    switch (b) {
    case STORE_BODY_7BIT:
        return "7BIT";
    case STORE_BODY_8BITMIME:
        return "8BITMIME";
    case STORE_BODY_BINARYMIME:
        return "BINARYMIME";
    }
    return "";
}

static void
ctl_qkey_text(const struct store_qkey *k, char *out, size_t outsz)
{
    if (k->rcpt == UINT32_MAX)
        snprintf(out, outsz, "%s", k->qid);
    else
        snprintf(out, outsz, "%s.%" PRIu32, k->qid, k->rcpt);
}

/* ---- read-only commands ---------------------------------------------- */

/* The certificate in use: a map, or nil when TLS is off. */
static void
ctl_enc_tls(struct ctl_enc *e, const struct node *n)
{
    const struct tls_cert_info *ti;

    if (n->tls == NULL) {
        ctl_enc_nil(e);
        return;
    }
    ti = tls_server_info(n->tls);
    ctl_enc_map(e, 6);
    ctl_enc_kstr(e, "file", ti->file);
    ctl_enc_kstr(e, "subject", ti->subject);
    ctl_enc_kstr(e, "not_after", ti->not_after);
    ctl_enc_ki64(e, "not_after_ts", ti->not_after_ts);
    ctl_enc_kstr(e, "sha256", ti->sha256);
    ctl_enc_kbool(e, "self_signed", ti->self_signed);
}

static int
ctl_cmd_status(struct ctl_conn *c, const struct ctl_obj *args,
               struct ctl_enc *e)
{
    struct node *n = c->srv->n;
    const struct node_config *cfg = n->cfg;
    struct store_stats ss;
    struct outbound_stats ob;
    int have_stats = 0;
    int64_t now = (int64_t)time(NULL);

    memset(&ss, 0, sizeof(ss));
    if (n->store != NULL && store_stats(n->store, &ss) == 0)
        have_stats = 1;
    node_queue_outbound_stats(n->queue, &ob);
    ctl_enc_ok(e);
    ctl_enc_map(e, 32);
    ctl_enc_kstr(e, "version", RM_VERSION);
    ctl_enc_kstr(e, "hostname", cfg->hostname);
    ctl_enc_ku64(e, "pid", (uint64_t)getpid());
    ctl_enc_ki64(e, "uptime", now > n->started ? now - n->started : 0);
    ctl_enc_kstr(e, "datadir", cfg->datadir);
    ctl_enc_str(e, "listeners");
    ctl_enc_array(e, cfg->nlisten);
    for (size_t i = 0; i < cfg->nlisten; i++)
        ctl_enc_str(e, cfg->listen[i].text);
    ctl_enc_str(e, "submission");
    ctl_enc_array(e, cfg->nsubmission);
    for (size_t i = 0; i < cfg->nsubmission; i++)
        ctl_enc_str(e, cfg->submission[i].text);
    ctl_enc_str(e, "smtps");
    ctl_enc_array(e, cfg->nsmtps);
    for (size_t i = 0; i < cfg->nsmtps; i++)
        ctl_enc_str(e, cfg->smtps[i].text);
    ctl_enc_str(e, "tls");
    ctl_enc_tls(e, n);
    ctl_enc_str(e, "domains");
    ctl_enc_array(e, cfg->ndomains);
    for (size_t i = 0; i < cfg->ndomains; i++)
        ctl_enc_str(e, cfg->domains[i]);
    ctl_enc_ku64(e, "sessions_current", n->stats.sessions_current);
    ctl_enc_ku64(e, "sessions_total", n->stats.sessions_total);
    ctl_enc_ku64(e, "messages_accepted", n->stats.messages_accepted);
    ctl_enc_ku64(e, "recipients_accepted", n->stats.recipients_accepted);
    ctl_enc_ku64(e, "messages_rejected", n->stats.messages_rejected);
    ctl_enc_ku64(e, "delivered_local", n->stats.delivered_local);
    ctl_enc_ku64(e, "store_full", n->stats.store_full);
    ctl_enc_ku64(e, "queue_entries", ss.queue_entries);
    ctl_enc_str(e, "store");
    if (have_stats) {
        ctl_enc_map(e, 7);
        ctl_enc_ku64(e, "map_size", ss.map_size);
        ctl_enc_ku64(e, "used_bytes", ss.used_bytes);
        ctl_enc_ku64(e, "messages", ss.messages);
        ctl_enc_ku64(e, "mailboxes", ss.mailboxes);
        ctl_enc_ku64(e, "users", ss.users);
        ctl_enc_ku64(e, "commits", ss.commits);
        ctl_enc_ku64(e, "commit_reqs", ss.commit_reqs);
    } else {
        ctl_enc_nil(e);
    }
    ctl_enc_ku64(e, "sessions_refused", n->stats.sessions_refused);
    ctl_enc_ku64(e, "rcpt_rejected", n->stats.rcpt_rejected);
    ctl_enc_ku64(e, "protocol_errors", n->stats.protocol_errors);
    ctl_enc_ku64(e, "tls_sessions", n->stats.tls_sessions);
    ctl_enc_ku64(e, "tls_failures", n->stats.tls_failures);
    ctl_enc_ku64(e, "auth_ok", n->stats.auth_ok);
    ctl_enc_ku64(e, "auth_failed", n->stats.auth_failed);
    ctl_enc_ku64(e, "ratelimited", n->stats.ratelimited);
    ctl_enc_str(e, "identity");
    ctl_enc_map(e, 3);
    ctl_enc_kstr(e, "fingerprint", n->id.fingerprint);
    ctl_enc_kstr(e, "public_key", n->id.pk_b64);
    ctl_enc_kstr(e, "file", n->id.path);
    ctl_enc_str(e, "delivery");
    ctl_enc_map(e, 7);
    ctl_enc_ku64(e, "delivered", ob.delivered);
    ctl_enc_ku64(e, "deferred", ob.deferred);
    ctl_enc_ku64(e, "bounced", ob.bounced);
    ctl_enc_ku64(e, "reports", ob.reports);
    ctl_enc_ku64(e, "connections", ob.connections);
    ctl_enc_ku64(e, "active", ob.active);
    ctl_enc_ku64(e, "connections_now", ob.conns_now);
    ctl_enc_kbool(e, "draining", n->draining);
    ctl_enc_str(e, "mesh");
    mesh_status_enc(n->mesh, e);
    ctl_enc_str(e, "bridge");
    bridge_status_enc(n->bridge, e);
    return 0;
}

/* ---- TLS ---------------------------------------------------------------- */

static int
ctl_cmd_tls_reload(struct ctl_conn *c, const struct ctl_obj *args,
                   struct ctl_enc *e)
{
    struct node *n = c->srv->n;
    char err[256];

    (void)args;
    if (node_tls_reload(n, err, sizeof(err)) != 0)
        return ctl_fail(c, RM_E_CONFIG,
                        "%s; the certificate in use is unchanged", err);
    ctl_enc_ok(e);
    ctl_enc_tls(e, n);
    return 0;
}

/* Messages per mailbox.list answer: well inside the frame limit even
   with the longest header fields. */
#define CTL_MAIL_PAGE_MAX 1000
/* A list callback's "page is full" (not an error). */
#define CTL_PAGE_FULL 1

struct ctl_list {
    struct ctl_enc items;
    size_t n;
    size_t limit; /* mailbox.list page size; 0 = no limit */
    /* filters (queue.list) */
    int state;          /* -1 = any */
    int route;          /* -1 = any */
    char domain[256];   /* recipient domain, any case; "" = any */
    int64_t arrived_by; /* arrival <= this; INT64_MAX = any */
    struct mesh *mesh;  /* queue.list: for replica records */
    /* queue.list: the replica record of the last queue id seen */
    char repl_qid[STORE_QID_LEN + 1];
    char replicas[512];
    char owner[80];
};

static int
ctl_user_item(void *arg, const struct store_user *u)
{
    struct ctl_list *l = arg;

    ctl_enc_map(&l->items, 2);
    ctl_enc_kstr(&l->items, "address", u->address);
    ctl_enc_ki64(&l->items, "created", u->created);
    l->n++;
    return l->items.err;
}

static int
ctl_send_list(struct ctl_conn *c, struct ctl_list *l, struct ctl_enc *e)
{
    ctl_enc_ok(e);
    ctl_enc_splice(e, &l->items, l->n);
    ctl_enc_cleanup(&l->items);
    return 0;
}

static int
ctl_cmd_user_list(struct ctl_conn *c, const struct ctl_obj *args,
                  struct ctl_enc *e)
{
    struct ctl_list l;
    int r;

    if ((r = ctl_need_store(c)) != 0)
        return r;
    memset(&l, 0, sizeof(l));
    ctl_enc_init(&l.items, 0);
    r = store_user_list(c->srv->n->store, ctl_user_item, &l);
    if (r != 0 && r != RM_E_NOTFOUND) {
        ctl_enc_cleanup(&l.items);
        return ctl_fail(c, r, "cannot list users: %s", rm_strerror(r));
    }
    return ctl_send_list(c, &l, e);
}

static int
ctl_mail_item(void *arg, const struct store_mail *m)
{
    static const struct {
        unsigned bit;
        const char *name;
    } flags[] = {{STORE_FLAG_SEEN, "\\Seen"},
                 {STORE_FLAG_ANSWERED, "\\Answered"},
                 {STORE_FLAG_FLAGGED, "\\Flagged"},
                 {STORE_FLAG_DELETED, "\\Deleted"},
                 {STORE_FLAG_DRAFT, "\\Draft"}};
    struct ctl_list *l = arg;
    struct ctl_enc *e = &l->items;
    size_t nf = 0;

    ctl_enc_map(e, 9);
    ctl_enc_ku64(e, "uid", m->uid);
    ctl_enc_ki64(e, "internaldate", m->internaldate);
    ctl_enc_kstr(e, "date", m->hdr_date);
    ctl_enc_kstr(e, "from", m->hdr_from);
    ctl_enc_kstr(e, "subject", m->hdr_subject);
    ctl_enc_kstr(e, "message_id", m->hdr_msgid);
    ctl_enc_ku64(e, "size", m->size);
    ctl_enc_str(e, "flags");
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        nf += (m->flags & flags[i].bit) != 0;
    ctl_enc_array(e, nf);
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (m->flags & flags[i].bit)
            ctl_enc_str(e, flags[i].name);
    }
    ctl_enc_kstr(e, "queue_id", m->qid);
    l->n++;
    if (e->err == 0 && l->limit && l->n >= l->limit)
        return CTL_PAGE_FULL;
    return e->err;
}

static int
ctl_user_exists_cb(void *arg, const struct store_user *u)
{
    (void)arg;
    (void)u;
    return 0;
}

/*
 * mailbox.list {address, after?, limit?}: the messages with UID > after
 * (default 0), at most limit of them (default and ceiling
 * CTL_MAIL_PAGE_MAX). A page shorter than limit is the last one.
 */
static int
ctl_cmd_mailbox_list(struct ctl_conn *c, const struct ctl_obj *args,
                     struct ctl_enc *e)
{
    char addr[STORE_ADDR_MAX];
    struct ctl_list l;
    uint64_t after = 0, limit = CTL_MAIL_PAGE_MAX;
    int r;

    if ((r = ctl_need_store(c)) != 0 ||
        (r = ctl_arg_addr(c, args, addr, sizeof(addr))) != 0)
        return r;
    r = ctl_obj_get_u64(args, "after", &after);
    if ((r != 0 && r != RM_E_NOTFOUND) || after > UINT32_MAX)
        return ctl_fail(c, RM_E_INVAL,
                        "argument \"after\" must be a UID (0 to %" PRIu32 ")",
                        UINT32_MAX);
    r = ctl_obj_get_u64(args, "limit", &limit);
    if ((r != 0 && r != RM_E_NOTFOUND) || limit == 0 ||
        limit > CTL_MAIL_PAGE_MAX)
        return ctl_fail(c, RM_E_INVAL, "argument \"limit\" must be 1 to %d",
                        CTL_MAIL_PAGE_MAX);
    memset(&l, 0, sizeof(l));
    l.limit = (size_t)limit;
    ctl_enc_init(&l.items, 0);
    r = store_mailbox_list_after(c->srv->n->store, addr, (uint32_t)after,
                                 ctl_mail_item, &l);
    if (r == CTL_PAGE_FULL)
        r = 0;
    if (r == RM_E_NOTFOUND) {
        /* A user who has had no mail yet: an empty mailbox; so are the
           user's bridge folders ("USER/sent", "USER/drafts") before the
           first message is filed there. */
        char user[STORE_ADDR_MAX];
        const char *at = strrchr(addr, '@');
        const char *slash = at ? strchr(at, '/') : NULL;

        snprintf(user, sizeof(user), "%.*s",
                 slash && (strcmp(slash, "/sent") == 0 ||
                           strcmp(slash, "/drafts") == 0)
                     ? (int)(slash - addr)
                     : (int)strlen(addr),
                 addr);
        if (store_user_get(c->srv->n->store, user, ctl_user_exists_cb, NULL) ==
            0)
            r = 0;
    }
    if (r != 0) {
        ctl_enc_cleanup(&l.items);
        if (r == RM_E_NOTFOUND)
            return ctl_fail(c, r, "no mailbox and no user %s", addr);
        if (r == RM_E_TOOBIG)
            return ctl_fail(c, r,
                            "mailbox %s is too large to list in one "
                            "response",
                            addr);
        return ctl_fail(c, r, "cannot list mailbox %s: %s", addr,
                        rm_strerror(r));
    }
    return ctl_send_list(c, &l, e);
}

struct ctl_cat {
    uint64_t offset; /* first byte wanted */
    uint64_t pos;    /* bytes seen so far */
    struct buf out;
};

static int
ctl_cat_chunk(void *arg, const char *data, size_t len)
{
    struct ctl_cat *k = arg;
    uint64_t start = k->pos, end = k->pos + len;

    k->pos = end;
    if (end <= k->offset || k->out.len >= CTL_CAT_CHUNK)
        return 0;
    if (start < k->offset) {
        data += k->offset - start;
        len -= (size_t)(k->offset - start);
    }
    if (len > CTL_CAT_CHUNK - k->out.len)
        len = CTL_CAT_CHUNK - k->out.len;
    return buf_append(&k->out, data, len);
}

static int
ctl_cmd_mailbox_cat(struct ctl_conn *c, const struct ctl_obj *args,
                    struct ctl_enc *e)
{
    char addr[STORE_ADDR_MAX];
    struct ctl_cat k;
    uint64_t uid;
    int r;

    if ((r = ctl_need_store(c)) != 0 ||
        (r = ctl_arg_addr(c, args, addr, sizeof(addr))) != 0)
        return r;
    if (ctl_obj_get_u64(args, "uid", &uid) != 0 || uid == 0 || uid > UINT32_MAX)
        return ctl_fail(c, RM_E_INVAL,
                        "argument \"uid\" must be a number "
                        "from 1 to 4294967295");
    memset(&k, 0, sizeof(k));
    r = ctl_obj_get_u64(args, "offset", &k.offset);
    if (r == RM_E_INVAL)
        return ctl_fail(c, r, "argument \"offset\" must be a number");
    buf_init(&k.out, CTL_CAT_CHUNK);
    r = store_mailbox_read(c->srv->n->store, addr, (uint32_t)uid, ctl_cat_chunk,
                           &k);
    if (r != 0) {
        buf_cleanup(&k.out);
        if (r == RM_E_NOTFOUND)
            return ctl_fail(c, r, "no message with UID %" PRIu64 " in %s", uid,
                            addr);
        return ctl_fail(c, r, "cannot read UID %" PRIu64 " of %s: %s", uid,
                        addr, rm_strerror(r));
    }
    ctl_enc_ok(e);
    ctl_enc_map(e, 3);
    ctl_enc_ku64(e, "size", k.pos);
    ctl_enc_ku64(e, "offset", k.offset);
    ctl_enc_str(e, "data");
    ctl_enc_bin(e, k.out.data ? k.out.data : "", k.out.len);
    buf_cleanup(&k.out);
    return 0;
}

static int
ctl_queue_item(void *arg, const struct store_qentry *q)
{
    struct ctl_list *l = arg;
    struct ctl_enc *e = &l->items;

    if (l->state >= 0 && (int)q->state != l->state)
        return 0;
    if (l->route >= 0 && (int)q->route != l->route)
        return 0;
    if (q->arrival > l->arrived_by)
        return 0;
    if (l->domain[0] != '\0') {
        const char *at = strrchr(q->addr, '@');
        if (at == NULL || strcasecmp(at + 1, l->domain) != 0)
            return 0;
    }
    if (strcmp(l->repl_qid, q->key.qid) != 0) {
        snprintf(l->repl_qid, sizeof(l->repl_qid), "%s", q->key.qid);
        if (q->route != STORE_ROUTE_REMOTE ||
            !mesh_repl_describe(l->mesh, q->key.qid, l->replicas,
                                sizeof(l->replicas), l->owner,
                                sizeof(l->owner)))
            l->replicas[0] = l->owner[0] = '\0';
    }
    ctl_enc_map(e, 13);
    ctl_enc_kstr(e, "id", q->key.qid);
    ctl_enc_ku64(e, "rcpt", q->key.rcpt);
    ctl_enc_kstr(e, "replicas", l->replicas);
    ctl_enc_kstr(e, "owner", l->owner);
    ctl_enc_kstr(e, "recipient", q->addr);
    ctl_enc_kstr(e, "sender", q->mail_from);
    ctl_enc_kstr(e, "state", store_qstate_name(q->state));
    ctl_enc_kstr(e, "route", ctl_route_name(q->route));
    ctl_enc_ku64(e, "attempts", q->attempts);
    ctl_enc_ki64(e, "next_try", q->next_try);
    ctl_enc_ki64(e, "arrival", q->arrival);
    ctl_enc_ku64(e, "size", q->size);
    ctl_enc_kstr(e, "last_error", q->last_error);
    l->n++;
    return e->err;
}

/*
 * queue.list filters beyond state and route: "domain" (the recipient's
 * domain, compared without regard to case; "destination" to the user) and
 * "older_than" (seconds since arrival, at least).
 */
static int
ctl_queue_filters(struct ctl_conn *c, const struct ctl_obj *args,
                  struct ctl_list *l)
{
    uint64_t age;
    int r;

    r = ctl_obj_get_str(args, "domain", l->domain, sizeof(l->domain));
    if (r == RM_E_TOOBIG)
        return ctl_fail(c, RM_E_INVAL,
                        "argument \"domain\" is longer than a domain name");
    if (r != 0 && r != RM_E_NOTFOUND)
        return ctl_fail(c, RM_E_INVAL, "argument \"domain\" must be a string");
    if (r == 0 && (l->domain[0] == '\0' || strpbrk(l->domain, "@ \t") != NULL))
        return ctl_fail(c, RM_E_INVAL,
                        "\"%.200s\" is not a domain like example.com",
                        l->domain);
    r = ctl_obj_get_u64(args, "older_than", &age);
    if (r == RM_E_NOTFOUND)
        return 0;
    if (r != 0 || age > (uint64_t)CTL_AGE_MAX)
        return ctl_fail(c, RM_E_INVAL,
                        "argument \"older_than\" must be seconds (0 to "
                        "%lld)",
                        CTL_AGE_MAX);
    l->arrived_by = (int64_t)time(NULL) - (int64_t)age;
    return 0;
}

static int
ctl_cmd_queue_list(struct ctl_conn *c, const struct ctl_obj *args,
                   struct ctl_enc *e)
{
    char state[32], route[32];
    struct ctl_list l;
    int r;

    if ((r = ctl_need_store(c)) != 0)
        return r;
    memset(&l, 0, sizeof(l));
    l.state = l.route = -1;
    l.arrived_by = INT64_MAX;
    l.mesh = c->srv->n->mesh;
    if ((r = ctl_queue_filters(c, args, &l)) != 0)
        return r;
    r = ctl_obj_get_str(args, "state", state, sizeof(state));
    if (r == 0) {
        for (int s = STORE_Q_QUEUED; s <= STORE_Q_BOUNCED; s++) {
            if (strcmp(state, store_qstate_name((enum store_qstate)s)) == 0)
                l.state = s;
        }
        if (l.state < 0)
            return ctl_fail(c, RM_E_INVAL,
                            "unknown state \"%.32s\" (queued, hold, "
                            "deferred)",
                            state);
    } else if (r != RM_E_NOTFOUND) {
        return ctl_fail(c, RM_E_INVAL,
                        "argument \"state\" must be a "
                        "short string");
    }
    r = ctl_obj_get_str(args, "route", route, sizeof(route));
    if (r == 0) {
        if (strcmp(route, "local") == 0)
            l.route = STORE_ROUTE_LOCAL;
        else if (strcmp(route, "remote") == 0)
            l.route = STORE_ROUTE_REMOTE;
        else
            return ctl_fail(c, RM_E_INVAL,
                            "unknown route \"%.32s\" (local, remote)", route);
    } else if (r != RM_E_NOTFOUND) {
        return ctl_fail(c, RM_E_INVAL,
                        "argument \"route\" must be a "
                        "short string");
    }
    ctl_enc_init(&l.items, 0);
    r = store_queue_list(c->srv->n->store, ctl_queue_item, &l);
    if (r != 0 && r != RM_E_NOTFOUND) {
        ctl_enc_cleanup(&l.items);
        if (r == RM_E_TOOBIG)
            return ctl_fail(c, r,
                            "the queue is too large to list in one "
                            "response; filter with --state, --route, "
                            "--domain or --older-than");
        return ctl_fail(c, r, "cannot list the queue: %s", rm_strerror(r));
    }
    return ctl_send_list(c, &l, e);
}

/*
 * queue.show collects the message's fields and one map per recipient
 * inside store_queue_get(), and adds each recipient's history afterwards:
 * store reads are not nested (each holds a read transaction), so each
 * recipient map is kept apart, ending in the key "history" whose value
 * (an array of lines) is written once the entries have been read.
 */
struct ctl_show_rcpt {
    uint32_t rcpt;
    struct ctl_enc enc; /* the map, up to and including "history" */
};

struct ctl_show {
    struct ctl_enc head; /* the message's fields */
    struct ctl_show_rcpt *r;
    size_t n, cap;
    int err;
    struct mesh *mesh; /* for the replica record */
};

static int
ctl_hist_line(void *arg, const char *line)
{
    struct ctl_list *l = arg;

    ctl_enc_str(&l->items, line);
    l->n++;
    return l->items.err;
}

static int
ctl_show_item(void *arg, const struct store_qentry *q)
{
    static const struct {
        unsigned bit;
        const char *name;
    } notify[] = {{STORE_NOTIFY_NEVER, "NEVER"},
                  {STORE_NOTIFY_SUCCESS, "SUCCESS"},
                  {STORE_NOTIFY_FAILURE, "FAILURE"},
                  {STORE_NOTIFY_DELAY, "DELAY"}};
    struct ctl_show *s = arg;
    struct ctl_enc *e;
    size_t nn = 0;

    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 8;
        struct ctl_show_rcpt *nr = realloc(s->r, nc * sizeof(*nr));
        if (nr == NULL)
            return s->err = -ENOMEM;
        s->r = nr;
        s->cap = nc;
    }
    s->r[s->n].rcpt = q->key.rcpt;
    e = &s->r[s->n].enc;
    ctl_enc_init(e, 0);
    if (s->n == 0) {
        char reps[512] = "", owner[80] = "";
        mesh_repl_describe(s->mesh, q->key.qid, reps, sizeof(reps), owner,
                           sizeof(owner));
        ctl_enc_kstr(&s->head, "replicas", reps);
        ctl_enc_kstr(&s->head, "owner", owner);
        ctl_enc_kstr(&s->head, "id", q->key.qid);
        ctl_enc_kstr(&s->head, "sender", q->mail_from);
        ctl_enc_ki64(&s->head, "arrival", q->arrival);
        ctl_enc_ku64(&s->head, "size", q->size);
        ctl_enc_kstr(&s->head, "envid", q->envid);
        ctl_enc_kstr(&s->head, "ret", ctl_ret_name(q->ret));
        ctl_enc_kstr(&s->head, "body", ctl_body_name(q->body_type));
        ctl_enc_kbool(&s->head, "smtputf8", q->smtputf8);
        ctl_enc_kstr(&s->head, "client", q->client);
        ctl_enc_kstr(&s->head, "subject", q->hdr_subject);
    }
    ctl_enc_map(e, 11);
    ctl_enc_ku64(e, "rcpt", q->key.rcpt);
    ctl_enc_kstr(e, "recipient", q->addr);
    ctl_enc_kstr(e, "mailbox", q->mailbox);
    ctl_enc_kstr(e, "state", store_qstate_name(q->state));
    ctl_enc_kstr(e, "route", ctl_route_name(q->route));
    ctl_enc_ku64(e, "attempts", q->attempts);
    ctl_enc_ki64(e, "next_try", q->next_try);
    ctl_enc_kstr(e, "last_error", q->last_error);
    ctl_enc_kstr(e, "orcpt", q->orcpt);
    ctl_enc_str(e, "notify");
    for (size_t i = 0; i < sizeof(notify) / sizeof(notify[0]); i++)
        nn += (q->notify & notify[i].bit) != 0;
    ctl_enc_array(e, nn);
    for (size_t i = 0; i < sizeof(notify) / sizeof(notify[0]); i++) {
        if (q->notify & notify[i].bit)
            ctl_enc_str(e, notify[i].name);
    }
    ctl_enc_str(e, "history"); /* the value follows in ctl_show_finish() */
    s->n++;
    return e->err ? e->err : s->head.err;
}

/* The answer: head, then each recipient with its history. */
static int
ctl_show_finish(struct ctl_conn *c, struct ctl_show *s, const char *qid,
                struct ctl_enc *e)
{
    struct ctl_list h;
    int r = 0;

    ctl_enc_ok(e);
    ctl_enc_map(e, 13);
    ctl_enc_append(e, &s->head);
    ctl_enc_str(e, "recipients");
    ctl_enc_array(e, s->n);
    for (size_t i = 0; i < s->n && r == 0; i++) {
        struct store_qkey key;
        memcpy(key.qid, qid, sizeof(key.qid));
        key.rcpt = s->r[i].rcpt;
        memset(&h, 0, sizeof(h));
        ctl_enc_init(&h.items, 0);
        r = store_queue_history(c->srv->n->store, &key, ctl_hist_line, &h);
        if (r == RM_E_NOTFOUND)
            r = 0; /* delivered meanwhile, or never tried */
        ctl_enc_append(e, &s->r[i].enc);
        ctl_enc_splice(e, &h.items, h.n);
        ctl_enc_cleanup(&h.items);
    }
    if (r != 0)
        return ctl_fail(c, r, "cannot read the history of %s: %s", qid,
                        rm_strerror(r));
    return 0;
}

static int
ctl_cmd_queue_show(struct ctl_conn *c, const struct ctl_obj *args,
                   struct ctl_enc *e)
{
    struct store_qkey key;
    struct ctl_show s;
    int r, finished = 0;

    if ((r = ctl_need_store(c)) != 0 || (r = ctl_arg_qkey(c, args, &key)))
        return r;
    memset(&s, 0, sizeof(s));
    s.mesh = c->srv->n->mesh;
    ctl_enc_init(&s.head, 0);
    r = store_queue_get(c->srv->n->store, key.qid, ctl_show_item, &s);
    if (r == 0 && s.err != 0)
        r = s.err;
    if (r == 0 && s.n == 0)
        r = RM_E_NOTFOUND;
    if (r == 0) {
        finished = 1;
        r = ctl_show_finish(c, &s, key.qid, e);
    }
    ctl_enc_cleanup(&s.head);
    for (size_t i = 0; i < s.n; i++)
        ctl_enc_cleanup(&s.r[i].enc);
    free(s.r);
    if (finished)
        return r; /* 0, or ctl_fail() has said why */
    if (r == RM_E_NOTFOUND)
        return ctl_fail(c, r, "no message %s in the queue", key.qid);
    if (r != 0)
        return ctl_fail(c, r, "cannot read queue entry %s: %s", key.qid,
                        rm_strerror(r));
    return 0;
}

/* ---- writing commands -------------------------------------------------- */

/* The asynchronous operation finished (on the loop thread). */
static void ctl_delete_replicated(struct ctl_conn *c);

static void
ctl_op_done(struct ctl_conn *c, int status)
{
    struct node *n = c->srv->n;
    struct ctl_enc e;
    const char *what = "";
    char id[STORE_QID_LEN + 16];

    if (c->op == CTL_OP_QUEUE_RETRY && c->op_key.qid[0] == '\0')
        snprintf(id, sizeof(id), "all");
    else
        ctl_qkey_text(&c->op_key, id, sizeof(id));
    switch (c->op) {
    case CTL_OP_USER_ADD:
        what = "user.add";
        if (status == RM_E_EXISTS)
            ctl_fail(c, status,
                     "user %s already exists; change the "
                     "password with `user passwd`",
                     c->op_addr);
        break;
    case CTL_OP_USER_PASSWD:
        auth_cache_forget(n->auth, c->op_addr);
        what = "user.passwd";
        if (status == RM_E_NOTFOUND)
            ctl_fail(c, status, "no user %s", c->op_addr);
        break;
    case CTL_OP_USER_DEL:
        auth_cache_forget(n->auth, c->op_addr);
        what = "user.del";
        if (status == RM_E_NOTFOUND)
            ctl_fail(c, status, "no user %s", c->op_addr);
        break;
    case CTL_OP_QUEUE_DELETE:
        what = "queue.delete";
        if (status == 0)
            ctl_delete_replicated(c);
        break;
    case CTL_OP_QUEUE_HOLD:
        what = "queue.hold";
        break;
    case CTL_OP_QUEUE_RELEASE:
        what = "queue.release";
        if (status == 0 && n->queue != NULL && !c->srv->closing)
            node_queue_kick(n->queue);
        break;
    case CTL_OP_QUEUE_RETRY:
        what = "queue.retry";
        if (status == 0 && n->queue != NULL && !c->srv->closing)
            node_queue_kick(n->queue);
        break;
    case CTL_OP_NONE:
    case CTL_OP_MESH:
        break;
    }
    if (status == 0 && (c->op == CTL_OP_USER_ADD || c->op == CTL_OP_USER_DEL))
        mesh_users_changed(n->mesh);
    if (status == RM_E_NOTFOUND && c->op >= CTL_OP_QUEUE_DELETE)
        ctl_fail(c, status, "no queue entry %s", id);
    else if (status == RM_E_CLOSED)
        ctl_fail(c, status, "the node is shutting down; nothing was changed");
    else if (status == RM_E_FULL)
        ctl_fail(c, status,
                 "the store is full (disk or map_size_max); "
                 "free space and try again");
    else if (status != 0 && status != RM_E_NOTFOUND && status != RM_E_EXISTS)
        ctl_fail(c, status, "%s failed: %s", what, rm_strerror(status));
    if (status == 0)
        log_info("event=ctl.%s conn=%" PRIu64 " target=%s", what, c->id,
                 c->op >= CTL_OP_QUEUE_DELETE ? id : c->op_addr);
    else
        log_warn("event=ctl.%s conn=%" PRIu64 " target=%s error=%d", what,
                 c->id, c->op >= CTL_OP_QUEUE_DELETE ? id : c->op_addr, status);

    ctl_enc_init(&e, 1);
    if (status == 0 && c->op == CTL_OP_QUEUE_RETRY &&
        c->op_key.qid[0] == '\0') {
        ctl_enc_ok(&e);
        ctl_enc_map(&e, 1);
        ctl_enc_kbool(&e, "all", 1);
    } else if (status == 0 && c->op == CTL_OP_QUEUE_RETRY) {
        ctl_enc_ok(&e);
        ctl_enc_map(&e, 3);
        ctl_enc_kstr(&e, "id", id);
        ctl_enc_ku64(&e, "waiting", c->op_waiting);
        ctl_enc_ku64(&e, "held", c->op_held);
    } else if (status == 0) {
        ctl_enc_ok(&e);
        ctl_enc_map(&e, 1);
        if (c->op >= CTL_OP_QUEUE_DELETE)
            ctl_enc_kstr(&e, "id", id);
        else
            ctl_enc_kstr(&e, "address", c->op_addr);
    } else {
        ctl_enc_error(&e, status, c->err);
    }
    ctl_op_clear(c);
    c->busy = 0;
    /* Answer even while the node closes: the client is waiting. */
    if (!c->peer_gone)
        ctl_conn_send(c, &e);
    ctl_enc_cleanup(&e);
}

/* store_done_cb */
static void ctl_store_cb(void *arg, int status);

static int
ctl_submit(struct ctl_conn *c)
{
    struct store *st = c->srv->n->store;

    switch (c->op) {
    case CTL_OP_USER_ADD:
        return store_user_add(st, c->op_addr, c->op_hash, ctl_store_cb, c);
    case CTL_OP_USER_PASSWD:
        return store_user_passwd(st, c->op_addr, c->op_hash, ctl_store_cb, c);
    case CTL_OP_USER_DEL:
        return store_user_del(st, c->op_addr, ctl_store_cb, c);
    case CTL_OP_QUEUE_DELETE:
        return store_queue_delete(st, &c->op_key, ctl_store_cb, c);
    case CTL_OP_QUEUE_HOLD:
        return store_queue_hold(st, &c->op_key, ctl_store_cb, c);
    case CTL_OP_QUEUE_RELEASE:
        return store_queue_release(st, &c->op_key, ctl_store_cb, c);
    case CTL_OP_QUEUE_RETRY:
        return store_queue_retry(st, c->op_key.qid[0] ? &c->op_key : NULL,
                                 ctl_store_cb, c);
    case CTL_OP_NONE:
    case CTL_OP_MESH:
        break;
    }
    return RM_E_INVAL;
}

/* Continue a connection after its operation: answer what is buffered, or
   close it if the client has gone. */
static void
ctl_conn_continue(struct ctl_conn *c)
{
    if (c->eof)
        ctl_conn_maybe_close(c);
    else
        ctl_conn_process(c);
}

static void
ctl_store_cb(void *arg, int status)
{
    struct ctl_conn *c = arg;

    ctl_op_done(c, status);
    ctl_conn_continue(c);
}

static void
ctl_hash_work(uv_work_t *req)
{
    struct ctl_conn *c = req->data;

    /* Thread pool: touches only the operation's own fields. */
    c->op_rc = store_pw_hash(c->op_pw, c->op_pwlen, c->op_hash);
}

static void
ctl_hash_after(uv_work_t *req, int status)
{
    struct ctl_conn *c = req->data;
    int r;

    ctl_wipe(c->op_pw, c->op_pwlen);
    if (status != 0 || c->srv->closing || c->srv->n->store == NULL) {
        ctl_fail(c, RM_E_CLOSED, "the node is shutting down");
        ctl_op_done(c, RM_E_CLOSED);
    } else if (c->op_rc != 0) {
        ctl_op_done(c, c->op_rc);
    } else if ((r = ctl_submit(c)) != 0) {
        ctl_op_done(c, r);
    } else {
        return; /* ctl_store_cb follows */
    }
    ctl_conn_continue(c);
}

static int
ctl_user_exists(struct ctl_conn *c, const char *addr)
{
    return store_user_get(c->srv->n->store, addr, ctl_user_exists_cb, NULL) ==
           0;
}

static int
ctl_user_pw(struct ctl_conn *c, const struct ctl_obj *args, enum ctl_op op)
{
    const struct node_config *cfg = c->srv->n->cfg;
    const char *at, *pw;
    size_t pwlen;
    int r;

    if ((r = ctl_need_store(c)) != 0 ||
        (r = ctl_arg_addr(c, args, c->op_addr, sizeof(c->op_addr))) != 0)
        return r;
    at = strrchr(c->op_addr, '@');
    if (op == CTL_OP_USER_ADD &&
        !node_config_local_domain(cfg, at + 1, strlen(at + 1)))
        return ctl_fail(c, RM_E_INVAL,
                        "%s is not in a local domain of this node (%s%s); "
                        "add the domain to smtp.domains",
                        c->op_addr, cfg->domains[0],
                        cfg->ndomains > 1 ? ", ..." : "");
    if (ctl_obj_type(ctl_obj_get(args, "password")) != CTL_T_STR ||
        ctl_obj_bytes(ctl_obj_get(args, "password"), &pw, &pwlen) != 0)
        return ctl_fail(c, RM_E_INVAL, "missing argument \"password\"");
    if (pwlen == 0)
        return ctl_fail(c, RM_E_INVAL, "the password is empty");
    if (pwlen > CTL_PASSWORD_MAX || memchr(pw, '\0', pwlen) != NULL)
        return ctl_fail(c, RM_E_INVAL,
                        "the password is longer than %d "
                        "bytes or contains NUL",
                        CTL_PASSWORD_MAX);
    /* Fail fast, before a slow hash; the store checks again. */
    if (op == CTL_OP_USER_ADD && ctl_user_exists(c, c->op_addr))
        return ctl_fail(c, RM_E_EXISTS,
                        "user %s already exists; change the password with "
                        "`user passwd`",
                        c->op_addr);
    if (op == CTL_OP_USER_PASSWD && !ctl_user_exists(c, c->op_addr))
        return ctl_fail(c, RM_E_NOTFOUND, "no user %s", c->op_addr);
    if ((c->op_pw = malloc(pwlen + 1)) == NULL)
        return ctl_fail(c, -ENOMEM, "out of memory");
    memcpy(c->op_pw, pw, pwlen);
    c->op_pw[pwlen] = '\0';
    c->op_pwlen = pwlen;
    c->op = op;
    c->work.data = c;
    r = uv_queue_work(c->srv->n->loop, &c->work, ctl_hash_work, ctl_hash_after);
    if (r != 0) {
        ctl_op_clear(c);
        return ctl_fail(c, r, "cannot start hashing: %s", uv_strerror(r));
    }
    c->busy = 1;
    return CTL_PENDING;
}

static int
ctl_cmd_user_add(struct ctl_conn *c, const struct ctl_obj *args,
                 struct ctl_enc *e)
{
    return ctl_user_pw(c, args, CTL_OP_USER_ADD);
}

static int
ctl_cmd_user_passwd(struct ctl_conn *c, const struct ctl_obj *args,
                    struct ctl_enc *e)
{
    return ctl_user_pw(c, args, CTL_OP_USER_PASSWD);
}

/* Start an operation that is one store write. */
static int
ctl_start(struct ctl_conn *c, enum ctl_op op)
{
    int r;

    c->op = op;
    if (op == CTL_OP_USER_PASSWD || op == CTL_OP_USER_DEL)
        auth_cache_forget(c->srv->n->auth, c->op_addr); /* and at done */
    if ((r = ctl_submit(c)) != 0) {
        c->op = CTL_OP_NONE;
        return ctl_fail(c, r, "cannot submit the change: %s", rm_strerror(r));
    }
    c->busy = 1;
    return CTL_PENDING;
}

static int
ctl_cmd_user_del(struct ctl_conn *c, const struct ctl_obj *args,
                 struct ctl_enc *e)
{
    int r;

    if ((r = ctl_need_store(c)) != 0 ||
        (r = ctl_arg_addr(c, args, c->op_addr, sizeof(c->op_addr))) != 0)
        return r;
    return ctl_start(c, CTL_OP_USER_DEL);
}

static int
ctl_queue_op(struct ctl_conn *c, const struct ctl_obj *args, enum ctl_op op)
{
    int r;

    if ((r = ctl_need_store(c)) != 0 ||
        (r = ctl_arg_qkey(c, args, &c->op_key)) != 0)
        return r;
    return ctl_start(c, op);
}

struct ctl_delete_scan {
    uint32_t rcpt; /* UINT32_MAX = every recipient */
    uint32_t *out;
    size_t n, cap;
};

static int
ctl_delete_scan(void *arg, const struct store_qentry *q)
{
    struct ctl_delete_scan *k = arg;

    if (k->rcpt != UINT32_MAX && q->key.rcpt != k->rcpt)
        return 0;
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 16;
        uint32_t *p = realloc(k->out, cap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        k->out = p;
        k->cap = cap;
    }
    k->out[k->n++] = q->key.rcpt;
    return 0;
}

/* The administrator removed these recipients: the mesh's replicas of the
   message must not deliver them after a takeover either. Their replica
   record marks them done (as a bounce would, without a report), and a
   record with nothing pending becomes a tombstone sent to the replicas. */
static void
ctl_delete_replicated(struct ctl_conn *c)
{
    struct store_qresult *res;

    if (c->op_nrcpts == 0 || c->srv->n->mesh == NULL ||
        (res = calloc(c->op_nrcpts, sizeof(*res))) == NULL)
        return;
    for (size_t i = 0; i < c->op_nrcpts; i++) {
        res[i].key = c->op_key;
        res[i].key.rcpt = c->op_rcpts[i];
        res[i].outcome = STORE_OUT_BOUNCED;
    }
    mesh_repl_results(c->srv->n->mesh, res, c->op_nrcpts);
    free(res);
}

static int
ctl_cmd_queue_delete(struct ctl_conn *c, const struct ctl_obj *args,
                     struct ctl_enc *e)
{
    struct ctl_delete_scan k;
    int r;

    if ((r = ctl_need_store(c)) != 0 ||
        (r = ctl_arg_qkey(c, args, &c->op_key)) != 0)
        return r;
    /* The recipients first, for the replicas (a read; the delete is the
       write that decides). */
    memset(&k, 0, sizeof(k));
    k.rcpt = c->op_key.rcpt;
    r = store_queue_get(c->srv->n->store, c->op_key.qid, ctl_delete_scan, &k);
    if (r != 0 && r != RM_E_NOTFOUND) {
        free(k.out);
        return ctl_fail(c, r, "cannot read queue entry %s: %s", c->op_key.qid,
                        rm_strerror(r));
    }
    free(c->op_rcpts);
    c->op_rcpts = k.out;
    c->op_nrcpts = k.n;
    return ctl_start(c, CTL_OP_QUEUE_DELETE);
}

static int
ctl_cmd_queue_hold(struct ctl_conn *c, const struct ctl_obj *args,
                   struct ctl_enc *e)
{
    return ctl_queue_op(c, args, CTL_OP_QUEUE_HOLD);
}

static int
ctl_cmd_queue_release(struct ctl_conn *c, const struct ctl_obj *args,
                      struct ctl_enc *e)
{
    return ctl_queue_op(c, args, CTL_OP_QUEUE_RELEASE);
}

struct ctl_retry_scan {
    uint32_t rcpt; /* UINT32_MAX = every recipient */
    size_t match, held;
};

static int
ctl_retry_scan(void *arg, const struct store_qentry *q)
{
    struct ctl_retry_scan *k = arg;

    if (k->rcpt != UINT32_MAX && q->key.rcpt != k->rcpt)
        return 0;
    k->match++;
    k->held += q->state == STORE_Q_HOLD;
    return 0;
}

/*
 * queue.retry {"id": ID[.N]} or {"all": true}: waiting entries (queued,
 * deferred) are due now, like `postqueue -i` / `postqueue -f`. Held
 * entries stay held (`queue release` is for them); the answer counts them
 * so that the CLI does not claim they were scheduled.
 */
static int
ctl_cmd_queue_retry(struct ctl_conn *c, const struct ctl_obj *args,
                    struct ctl_enc *e)
{
    const struct ctl_obj *all = ctl_obj_get(args, "all");
    struct ctl_retry_scan k;
    char id[STORE_QID_LEN + 16];
    int r, v = 0;

    if ((r = ctl_need_store(c)) != 0)
        return r;
    memset(&c->op_key, 0, sizeof(c->op_key));
    c->op_held = c->op_waiting = 0;
    if (all != NULL) {
        if (ctl_obj_bool(all, &v) != 0 || !v)
            return ctl_fail(c, RM_E_INVAL, "argument \"all\" must be true");
        if (ctl_obj_get(args, "id") != NULL)
            return ctl_fail(c, RM_E_INVAL, "give \"id\" or \"all\", not both");
        return ctl_start(c, CTL_OP_QUEUE_RETRY);
    }
    if (ctl_obj_get(args, "id") == NULL)
        return ctl_fail(c, RM_E_INVAL,
                        "missing argument \"id\" (or \"all\": true)");
    if ((r = ctl_arg_qkey(c, args, &c->op_key)) != 0)
        return r;
    /* A read first: the store's answer cannot tell "nothing waiting" from
       "all held". It may change before the write; the write decides. */
    memset(&k, 0, sizeof(k));
    k.rcpt = c->op_key.rcpt;
    r = store_queue_get(c->srv->n->store, c->op_key.qid, ctl_retry_scan, &k);
    ctl_qkey_text(&c->op_key, id, sizeof(id));
    if (r == RM_E_NOTFOUND || (r == 0 && k.match == 0))
        return ctl_fail(c, RM_E_NOTFOUND, "no queue entry %s", id);
    if (r != 0)
        return ctl_fail(c, r, "cannot read queue entry %s: %s", id,
                        rm_strerror(r));
    c->op_held = (uint32_t)k.held; /* recipients of one qid: u32 */
    c->op_waiting = (uint32_t)(k.match - k.held);
    return ctl_start(c, CTL_OP_QUEUE_RETRY);
}

/* ---- mesh ------------------------------------------------------------- */

static void ctl_conn_continue(struct ctl_conn *c);

static void
ctl_mesh_cb(void *arg, int status, const char *err, struct ctl_enc *data)
{
    struct ctl_conn *c = arg;
    struct ctl_enc e;

    ctl_enc_init(&e, 1);
    if (status == 0) {
        ctl_enc_ok(&e);
        ctl_enc_append(&e, data);
    } else {
        ctl_enc_error(&e, status, err && err[0] ? err : rm_strerror(status));
    }
    c->op = CTL_OP_NONE;
    c->busy = 0;
    if (!c->peer_gone)
        ctl_conn_send(c, &e);
    ctl_enc_cleanup(&e);
    ctl_conn_continue(c);
}

static int
ctl_mesh(struct ctl_conn *c, const char *cmd, const struct ctl_obj *args,
         struct ctl_enc *e)
{
    struct ctl_enc data;
    int r;

    if (c->srv->n->mesh == NULL)
        return ctl_fail(c, RM_E_CLOSED, "the mesh service is not running");
    ctl_enc_init(&data, 0);
    r = mesh_ctl(c->srv->n->mesh, cmd, args, &data, c->err, sizeof(c->err),
                 ctl_mesh_cb, c);
    if (r == 1) {
        c->op = CTL_OP_MESH;
        c->busy = 1;
        ctl_enc_cleanup(&data);
        log_info("event=ctl.%s conn=%" PRIu64, cmd, c->id);
        return CTL_PENDING;
    }
    if (r == 0) {
        ctl_enc_ok(e);
        ctl_enc_append(e, &data);
    } else {
        log_warn("event=ctl.%s conn=%" PRIu64 " error=\"%s\"", cmd, c->id,
                 c->err);
    }
    ctl_enc_cleanup(&data);
    return r;
}

#define CTL_MESH_CMD(fn, name)                                                 \
    static int fn(struct ctl_conn *c, const struct ctl_obj *args,              \
                  struct ctl_enc *e)                                           \
    {                                                                          \
        return ctl_mesh(c, name, args, e);                                     \
    }
CTL_MESH_CMD(ctl_cmd_mesh_create, "mesh.create")
CTL_MESH_CMD(ctl_cmd_mesh_invite, "mesh.invite")
CTL_MESH_CMD(ctl_cmd_mesh_join, "mesh.join")
CTL_MESH_CMD(ctl_cmd_mesh_remove, "mesh.remove")
CTL_MESH_CMD(ctl_cmd_mesh_peers, "mesh.peers")
CTL_MESH_CMD(ctl_cmd_mesh_status, "mesh.status")

static const struct ctl_cmd ctl_cmds[] = {
    {"status", ctl_cmd_status},
    {"user.add", ctl_cmd_user_add},
    {"user.del", ctl_cmd_user_del},
    {"user.passwd", ctl_cmd_user_passwd},
    {"user.list", ctl_cmd_user_list},
    {"mailbox.list", ctl_cmd_mailbox_list},
    {"mailbox.cat", ctl_cmd_mailbox_cat},
    {"queue.list", ctl_cmd_queue_list},
    {"queue.show", ctl_cmd_queue_show},
    {"queue.delete", ctl_cmd_queue_delete},
    {"queue.hold", ctl_cmd_queue_hold},
    {"queue.release", ctl_cmd_queue_release},
    {"queue.retry", ctl_cmd_queue_retry},
    {"tls.reload", ctl_cmd_tls_reload},
    {"mesh.create", ctl_cmd_mesh_create},
    {"mesh.invite", ctl_cmd_mesh_invite},
    {"mesh.join", ctl_cmd_mesh_join},
    {"mesh.remove", ctl_cmd_mesh_remove},
    {"mesh.peers", ctl_cmd_mesh_peers},
    {"mesh.status", ctl_cmd_mesh_status},
};

/* ---- connections ------------------------------------------------------- */

static void
ctl_server_maybe_free(struct ctl_server *s)
{
    if (s->closing && s->listener_closed && s->nconns == 0)
        free(s);
}

static void
ctl_conn_close_cb(uv_handle_t *h)
{
    struct ctl_conn *c = h->data;
    struct ctl_server *s = c->srv;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    s->nconns--;
    ctl_reader_cleanup(&c->rd);
    ctl_op_clear(c);
    log_debug("event=ctl.close conn=%" PRIu64, c->id);
    free(c);
    ctl_server_maybe_free(s);
}

static void
ctl_conn_maybe_close(struct ctl_conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->pipe))
        return;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = 0;
    }
    /* Never while an operation is in flight: its callback uses c. Let the
       last answer go out first. */
    if (c->eof && !c->busy && c->nwrites == 0)
        uv_close((uv_handle_t *)&c->pipe, ctl_conn_close_cb);
}

static void
ctl_write_cb(uv_write_t *req, int status)
{
    struct ctl_wreq *w = (struct ctl_wreq *)req;
    struct ctl_conn *c = w->c;

    free(w->data);
    free(w);
    c->nwrites--;
    if (status < 0)
        c->eof = c->peer_gone = 1;
    if (c->eof)
        ctl_conn_maybe_close(c);
}

static void
ctl_conn_send(struct ctl_conn *c, struct ctl_enc *e)
{
    struct ctl_wreq *w;
    const char *data;
    size_t len;
    uv_buf_t b;
    int r;

    r = ctl_enc_finish(e, &data, &len);
    if (r != 0) {
        ctl_enc_cleanup(e);
        ctl_enc_init(e, 1);
        ctl_enc_error(e, r,
                      r == RM_E_TOOBIG
                          ? "the answer is larger than a control frame "
                            "(16 MiB); narrow the request"
                          : rm_strerror(r));
        if (ctl_enc_finish(e, &data, &len) != 0) {
            c->eof = 1;
            return;
        }
    }
    if ((w = malloc(sizeof(*w))) == NULL) {
        c->eof = 1;
        return;
    }
    w->c = c;
    w->data = buf_take(&e->buf, &len);
    b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, ctl_write_cb) != 0) {
        free(w->data);
        free(w);
        c->eof = 1;
        return;
    }
    c->nwrites++;
}

static void
ctl_conn_request(struct ctl_conn *c, const char *p, size_t len)
{
    struct ctl_request req;
    const struct ctl_cmd *cmd = NULL;
    struct ctl_enc e;
    int r;

    c->err[0] = '\0';
    ctl_enc_init(&e, 1);
    r = ctl_request_decode(&req, p, len, c->err, sizeof(c->err));
    if (r != 0) {
        char tmp[300];
        snprintf(tmp, sizeof(tmp), "bad request: %s", c->err);
        log_warn("event=ctl.bad_request conn=%" PRIu64 " error=%d", c->id, r);
        ctl_enc_error(&e, r, tmp);
        ctl_conn_send(c, &e);
        ctl_enc_cleanup(&e);
        return;
    }
    for (size_t i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++) {
        if (strcmp(ctl_cmds[i].name, req.cmd) == 0)
            cmd = &ctl_cmds[i];
    }
    log_debug("event=ctl.request conn=%" PRIu64 " cmd=%s", c->id, req.cmd);
    if (cmd == NULL)
        r = ctl_fail(c, RM_E_INVAL, "unknown command \"%s\"", req.cmd);
    else
        r = cmd->fn(c, req.args, &e);
    /* Handlers copy what an operation needs: the frame may go now. */
    ctl_request_cleanup(&req);
    if (r == CTL_PENDING) {
        ctl_enc_cleanup(&e);
        return;
    }
    if (r != 0) {
        ctl_enc_cleanup(&e);
        ctl_enc_init(&e, 1);
        ctl_enc_error(&e, r, c->err[0] ? c->err : rm_strerror(r));
    }
    ctl_conn_send(c, &e);
    ctl_enc_cleanup(&e);
}

static void ctl_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void ctl_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

static void
ctl_conn_process(struct ctl_conn *c)
{
    while (!c->busy && !c->eof) {
        const char *p;
        size_t len;
        int r = ctl_reader_frame(&c->rd, &p, &len);
        if (r == 0)
            break;
        if (r < 0) {
            struct ctl_enc e;
            ctl_enc_init(&e, 1);
            ctl_enc_error(&e, RM_E_TOOBIG,
                          "request larger than a control frame (16 MiB)");
            ctl_conn_send(c, &e);
            ctl_enc_cleanup(&e);
            log_warn("event=ctl.frame_too_big conn=%" PRIu64, c->id);
            c->eof = 1; /* the stream cannot be resynchronised */
            break;
        }
        ctl_conn_request(c, p, len);
        ctl_reader_consume(&c->rd);
    }
    if (c->eof) {
        ctl_conn_maybe_close(c);
        return;
    }
    if (c->busy && c->reading) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = 0;
    } else if (!c->busy && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->pipe, ctl_alloc_cb, ctl_read_cb) ==
            0)
            c->reading = 1;
        else {
            c->eof = 1;
            ctl_conn_maybe_close(c);
        }
    }
}

static void
ctl_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct ctl_conn *c = h->data;
    char *p = NULL;
    size_t n = 0;

    if (ctl_reader_space(&c->rd, &p, &n) != 0) {
        p = NULL;
        n = 0; /* read_cb gets UV_ENOBUFS */
    }
    *b = uv_buf_init(p, (unsigned)(n > UINT32_MAX ? UINT32_MAX : n));
}

static void
ctl_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct ctl_conn *c = st->data;

    if (nread > 0)
        ctl_reader_commit(&c->rd, (size_t)nread);
    else if (nread == UV_ENOBUFS)
        ; /* the reader's verdict (frame too big, no memory) follows */
    else if (nread < 0)
        c->eof = c->peer_gone = 1;
    if (nread == UV_ENOBUFS) {
        const char *p;
        size_t len;
        if (ctl_reader_frame(&c->rd, &p, &len) >= 0)
            c->eof = 1; /* out of memory */
    }
    ctl_conn_process(c);
}

static void
ctl_on_connection(uv_stream_t *server, int status)
{
    struct ctl_server *s = server->data;
    struct ctl_conn *c;

    if (status < 0) {
        log_warn("event=ctl.accept_failed error=%s", uv_strerror(status));
        return;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return;
    c->srv = s;
    c->id = ++s->next_id;
    ctl_reader_init(&c->rd, CTL_FRAME_MAX);
    uv_pipe_init(s->n->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0 ||
        s->nconns > CTL_CONN_MAX) {
        if (s->nconns > CTL_CONN_MAX)
            log_warn("event=ctl.too_many_connections max=%d", CTL_CONN_MAX);
        c->eof = 1;
        ctl_conn_maybe_close(c);
        return;
    }
    log_debug("event=ctl.accept conn=%" PRIu64, c->id);
    ctl_conn_process(c);
}

/* ---- the server ---------------------------------------------------------- */

static void
ctl_listener_close_cb(uv_handle_t *h)
{
    struct ctl_server *s = h->data;

    s->listener_closed = 1;
    ctl_server_maybe_free(s);
}

/* A socket file at path: answer -EADDRINUSE if a node answers on it,
   remove it if nothing does. */
static int
ctl_check_stale(const char *path, const char *datadir)
{
    struct sockaddr_un sun;
    struct stat sb;
    int fd, r;

    if (lstat(path, &sb) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(sb.st_mode)) {
        log_err("event=ctl.not_a_socket path=%s", path);
        return -EEXIST;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -errno;
    r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    close(fd);
    if (r == 0) {
        log_err("event=ctl.in_use path=%s datadir=%s msg=\"another node is "
                "running on this data dir\"",
                path, datadir);
        fprintf(stderr, "relaymesh: another node is running on %s\n", datadir);
        return -EADDRINUSE;
    }
    if (errno != ECONNREFUSED && errno != ENOENT)
        return -errno;
    log_info("event=ctl.stale_socket path=%s", path);
    if (unlink(path) != 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int
ctl_server_new(struct node *n, struct ctl_server **out)
{
    const char *path = n->cfg->control_socket;
    struct ctl_server *s;
    mode_t old;
    int r, bound;

    if (path == NULL || strlen(path) >= sizeof(s->path))
        return -ENAMETOOLONG;
    if ((r = ctl_check_stale(path, n->cfg->datadir)) != 0)
        return r;
    if ((s = calloc(1, sizeof(*s))) == NULL)
        return -ENOMEM;
    s->n = n;
    strcpy(s->path, path);
    uv_pipe_init(n->loop, &s->listener, 0);
    s->listener.data = s;
    /* Owner-only from birth: no window where another user may connect. */
    old = umask(0177);
    r = uv_pipe_bind(&s->listener, path);
    umask(old);
    bound = r == 0;
    if (r == 0 && chmod(path, 0600) != 0)
        r = -errno;
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->listener, 16, ctl_on_connection);
    if (r != 0) {
        if (bound)
            unlink(path);
        log_err("event=ctl.listen_failed path=%s error=%s", path,
                uv_strerror(r));
        s->closing = 1;
        uv_close((uv_handle_t *)&s->listener, ctl_listener_close_cb);
        return r;
    }
    log_info("event=ctl.listen path=%s", path);
    *out = s;
    return 0;
}

void
ctl_server_close(struct ctl_server *s)
{
    struct ctl_conn *c, *next;

    if (s == NULL || s->closing)
        return;
    s->closing = 1;
    unlink(s->path);
    uv_close((uv_handle_t *)&s->listener, ctl_listener_close_cb);
    for (c = s->conns; c != NULL; c = next) {
        next = c->next; /* c may be closed below, not freed yet */
        c->eof = 1;
        ctl_conn_maybe_close(c);
    }
}
