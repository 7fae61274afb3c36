/*
 * server.c: the bridge's listener, its sessions and the requests that need
 * no composing or parsing (logon, folders, find, mark, delete, upload,
 * resolve). See server.h for the service, bridge/README.md for the
 * protocol.
 *
 * A session's life:
 *   accepted -> handshake (mesh_conn) -> anonymous -> logon checked on
 *   the thread pool -> logged on -> ... -> closed by logoff, the client,
 *   an idle timeout, a broken request or the node's shutdown.
 * The session is freed once its connection and timer have closed and no
 * request or argon2id check is in flight (the store and the thread pool
 * always call back).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "bridge/server_int.h"
#include "common/log.h"
#include "common/rm_error.h"
#include "node/auth_cache.h"
#include "node/ctl_codec.h"
#include "node/mesh.h"
#include "node/mesh_conn.h"
#include "node/mime_parse.h"
#include "node/ratelimit.h"

#define BRIDGE_HS_TIMEOUT_MS 10000
#define BRIDGE_KA_INTERVAL_MS 60000
#define BRIDGE_LOGON_TIMEOUT_MS 60000 /* from accept to a successful logon */

static const struct {
    const char *id, *name, *suffix;
    enum bproto_role role;
} bfolders[BF_COUNT] = {
    [BF_INBOX] = {"inbox", "Inbox", "", BPROTO_ROLE_INBOX},
    [BF_SENT] = {"sent", "Sent", "/sent", BPROTO_ROLE_SENT},
    [BF_DRAFTS] = {"drafts", "Drafts", "/drafts", BPROTO_ROLE_DRAFTS},
};

static void bs_pump(struct bsess *s);
static void bs_maybe_free(struct bsess *s);

/* ---- small helpers ------------------------------------------------------ */

const char *
bs_folder_id(enum bfolder f)
{
    return bfolders[f].id;
}

void
bs_mailbox(const struct bsess *s, enum bfolder f, char *out, size_t outsz)
{
    snprintf(out, outsz, "%s%s", s->user, bfolders[f].suffix);
}

int
bs_folder(struct bsess *s, const char *id, enum bfolder *out)
{
    for (int f = 0; f < BF_COUNT; f++)
        if (strcmp(id, bfolders[f].id) == 0) {
            *out = (enum bfolder)f;
            return 0;
        }
    bs_fail(s, BPROTO_E_FOLDER_NOT_FOUND, "no folder \"%.64s\"", id);
    return -1;
}

uint64_t
bs_wire_id(uint32_t uidvalidity, uint32_t uid)
{
    return (uint64_t)uidvalidity << 32 | uid;
}

int
bs_msgid(struct bsess *s, const char *mailbox, uint64_t id, uint32_t *uid)
{
    struct store_mailbox_stat st;

    if (store_mailbox_stat(s->b->n->store, mailbox, &st) != 0 ||
        (uint32_t)(id >> 32) != st.uidvalidity || (uint32_t)id == 0)
        return -1;
    *uid = (uint32_t)id;
    return 0;
}

unsigned
bs_flags_to_wire(unsigned sf, enum bfolder f)
{
    unsigned w = 0;

    if (sf & STORE_FLAG_SEEN)
        w |= BPROTO_FLAG_READ;
    if (sf & STORE_FLAG_ANSWERED)
        w |= BPROTO_FLAG_ANSWERED;
    if (sf & STORE_FLAG_FLAGGED)
        w |= BPROTO_FLAG_FLAGGED;
    if (sf & STORE_FLAG_DRAFT)
        w |= BPROTO_FLAG_DRAFT;
    if (f == BF_SENT)
        w |= BPROTO_FLAG_SENT;
    return w;
}

static const char *
bs_op_name(const struct bsess *s)
{
    return s->qlen ? bproto_op_name(s->q[s->qhead].q.op) : "-";
}

/* ---- answers ------------------------------------------------------------ */

static void
bs_send_body(struct bsess *s, const struct buf *b)
{
    int r;

    if (s->c == NULL)
        return;
    r = mesh_conn_send(s->c, BPROTO_T_RES, b->data, b->len);
    if (r != 0 && r != RM_E_CLOSED)
        log_warn("event=bridge.send_failed sid=%" PRIu64 " err=\"%s\"", s->sid,
                 rm_strerror(r));
}

void
bs_reply(struct bsess *s, struct bproto_res *res)
{
    struct buf b;
    int r;

    res->id = s->q[s->qhead].q.id;
    res->op = s->q[s->qhead].q.op;
    buf_init(&b, BPROTO_MSG_MAX);
    r = bproto_res_encode(&b, res);
    if (r != 0) {
        /* Ours is wrong (a bound the node's data passes): say so. */
        log_err("event=bridge.encode_failed sid=%" PRIu64
                " op=%s err=\"%s\" ok=%d",
                s->sid, bs_op_name(s), rm_strerror(r), res->ok);
        buf_reset(&b);
        r = bproto_res_encode_err(&b, res->id, BPROTO_E_FAILURE,
                                  "the answer could not be encoded");
    }
    if (r == 0)
        bs_send_body(s, &b);
    buf_cleanup(&b);
}

void
bs_fail(struct bsess *s, enum bproto_errcode code, const char *fmt, ...)
{
    char msg[BPROTO_ERRMSG_MAX / 2];
    struct buf b;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!bproto_text_valid(msg, strlen(msg)))
        snprintf(msg, sizeof(msg), "%s", bproto_errcode_name(code));
    log_info("event=bridge.refused sid=%" PRIu64 " user=%s op=%s code=%s "
             "msg=\"%s\"",
             s->sid, s->logged_on ? s->user : "-", bs_op_name(s),
             bproto_errcode_name(code), msg);
    buf_init(&b, BPROTO_MSG_MAX);
    if (bproto_res_encode_err(&b, s->q[s->qhead].q.id, code, msg) == 0)
        bs_send_body(s, &b);
    buf_cleanup(&b);
}

static void
bs_ok_empty(struct bsess *s)
{
    struct bproto_res res;

    memset(&res, 0, sizeof(res));
    res.ok = 1;
    bs_reply(s, &res);
}

/* The store's answer to a write as a protocol error; 0 when it is 0. */
static int
bs_store_fail(struct bsess *s, int status, const char *what)
{
    if (status == 0)
        return 0;
    if (status == RM_E_NOTFOUND)
        bs_fail(s, BPROTO_E_INVALID_MESSAGE, "no such message");
    else if (status == RM_E_FULL)
        bs_fail(s, BPROTO_E_DISK_FULL, "the node's store is full");
    else {
        log_err("event=bridge.store_failed sid=%" PRIu64 " what=%s err=\"%s\"",
                s->sid, what, rm_strerror(status));
        bs_fail(s, BPROTO_E_TRY_LATER, "the node could not %s: %s", what,
                rm_strerror(status));
    }
    return -1;
}

/* ---- sessions ----------------------------------------------------------- */

void
bs_cache_clear(struct bcache *c)
{
    if (c->parsed)
        mime_parse_cleanup(&c->p);
    c->parsed = 0;
    c->id = 0;
    c->att_index = -1;
    buf_cleanup(&c->raw);
    buf_cleanup(&c->att);
}

struct bupload *
bs_upload_get(struct bsess *s, uint64_t handle)
{
    for (struct bupload *u = s->uploads; u; u = u->next)
        if (u->handle == handle)
            return u;
    return NULL;
}

void
bs_upload_drop(struct bsess *s, struct bupload *u)
{
    for (struct bupload **pp = &s->uploads; *pp; pp = &(*pp)->next)
        if (*pp == u) {
            *pp = u->next;
            s->upload_bytes -= u->data.len;
            buf_cleanup(&u->data);
            free(u);
            s->nuploads--;
            return;
        }
}

static void
bs_handle_closed(uv_handle_t *h)
{
    struct bsess *s = h->data;

    s->nhandles--;
    bs_maybe_free(s);
}

static void
bridge_maybe_free(struct bridge *b)
{
    if (!b->closing || b->nhandles > 0 || b->sessions != NULL)
        return;
    buf_cleanup(&b->cred);
    sodium_free(b->x_sk);
    free(b);
}

static void
bs_maybe_free(struct bsess *s)
{
    struct bridge *b = s->b;

    if (s->c != NULL || s->busy || s->work_pending)
        return;
    if (s->nhandles > 0) {
        if (!uv_is_closing((uv_handle_t *)&s->timer))
            uv_close((uv_handle_t *)&s->timer, bs_handle_closed);
        return;
    }
    while (s->qlen > 0) {
        bproto_req_cleanup(&s->q[s->qhead].q);
        s->qhead = (s->qhead + 1) % BRIDGE_QUEUE_MAX;
        s->qlen--;
    }
    while (s->uploads)
        bs_upload_drop(s, s->uploads);
    bs_cache_clear(&s->cache);
    bs_send_free(s);
    buf_cleanup(&s->msg);
    if (s->prev)
        s->prev->next = s->next;
    else
        b->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    b->nsessions--;
    sodium_memzero(s, sizeof(*s));
    free(s);
    bridge_maybe_free(b);
}

static void
bs_close(struct bsess *s, int flush)
{
    s->closing = 1;
    if (s->c == NULL)
        return;
    if (flush)
        mesh_conn_close_flush(s->c);
    else
        mesh_conn_close(s->c, 0);
}

/* ---- logon -------------------------------------------------------------- */

struct bauth_work {
    uv_work_t req;
    struct bsess *s;
    char hash[STORE_PWHASH_MAX];
    char pass[BPROTO_PASSWORD_MAX + 1];
    size_t passlen;
    int skip; /* locked out or unknown: the dummy check, then fail */
    int ok;
    uint64_t gen;
};

static char bs_dummy_hash[STORE_PWHASH_MAX];
static uv_once_t bs_dummy_once = UV_ONCE_INIT;

/* A hash nothing matches: an unknown user costs what a known one does. */
static void
bs_dummy_init(void)
{
    unsigned char pw[32];

    randombytes_buf(pw, sizeof(pw));
    if (store_pw_hash((const char *)pw, sizeof(pw), bs_dummy_hash) != 0)
        bs_dummy_hash[0] = '\0';
    sodium_memzero(pw, sizeof(pw));
}

static void
bs_auth_work_cb(uv_work_t *req)
{
    struct bauth_work *w = req->data;

    uv_once(&bs_dummy_once, bs_dummy_init);
    if (!w->skip && w->hash[0] != '\0') {
        w->ok = store_pw_verify(w->hash, w->pass, w->passlen) == 0;
    } else {
        if (bs_dummy_hash[0] != '\0')
            (void)store_pw_verify(bs_dummy_hash, w->pass, w->passlen);
        w->ok = 0;
    }
}

static int
bs_user_hash_cb(void *arg, const struct store_user *u)
{
    struct bauth_work *w = arg;

    snprintf(w->hash, sizeof(w->hash), "%s", u->pwhash);
    return 0;
}

static void
bs_rl_key(char *key, size_t keysz, char kind, const char *v)
{
    /* The same keys as SMTP AUTH: failures count together. */
    snprintf(key, keysz, "%c:%.320s", kind, v);
}

static void bs_folder_fill(struct bsess *s, enum bfolder f,
                           struct bproto_folder *out);

static void
bs_logon_answer(struct bsess *s)
{
    struct bproto_res res;
    struct bproto_folder fl[BF_COUNT];

    if (s->logon_fail) {
        bs_fail(s, BPROTO_E_LOGIN_FAILURE, "wrong user or password");
        if (s->logon_close)
            bs_close(s, 1);
        return;
    }
    memset(&res, 0, sizeof(res));
    res.ok = 1;
    res.r.logon.version = s->logon_version;
    res.r.logon.user = s->user;
    res.r.logon.name = "";
    res.r.logon.node = s->b->cfg->hostname;
    res.r.logon.max_message = s->b->cfg->max_message_size;
    for (int f = 0; f < BF_COUNT; f++)
        bs_folder_fill(s, (enum bfolder)f, &fl[f]);
    res.r.logon.n_folders = BF_COUNT;
    res.r.logon.folders = fl;
    bs_reply(s, &res);
}

static void
bs_timer_cb(uv_timer_t *t)
{
    struct bsess *s = t->data;

    if (!s->closing)
        bs_logon_answer(s);
    bs_done(s);
}

/* Logon checks in flight per address and per user: parallel guesses must
   not get past the failure limits, which count only finished checks. */
#define BRIDGE_LOGONS_PER_IP 4
#define BRIDGE_LOGONS_PER_USER 2

static void
bs_logon_release(struct bsess *s)
{
    struct ratelimit *rl = s->b->n->rl;
    char key[RL_KEY_MAX];

    if (rl && s->hold_ip) {
        bs_rl_key(key, sizeof(key), 'L', s->peer_ip);
        rl_release(rl, key);
    }
    if (rl && s->hold_user) {
        bs_rl_key(key, sizeof(key), 'M', s->hold_key);
        rl_release(rl, key);
    }
    s->hold_ip = s->hold_user = 0;
}

static void
bs_auth_after_cb(uv_work_t *req, int status)
{
    struct bauth_work *w = req->data;
    struct bsess *s = w->s;
    const struct node_config *cfg = s->b->cfg;
    struct node *n = s->b->n;
    uint64_t now = uv_now(s->b->loop), delay;
    char key[RL_KEY_MAX];
    unsigned nip = 0, nuser = 0, cnt;
    int ok = status == 0 && w->ok;

    s->work_pending = 0;
    bs_logon_release(s);
    if (ok && n->auth)
        auth_cache_put(n->auth, s->user, w->pass, w->passlen, now, w->gen);
    sodium_memzero(w, sizeof(*w));
    free(w);
    s->logon_fail = !ok;
    if (!ok) {
        /* Counted first, also when the client has gone: hanging up during
           the check must not be a way to guess for free. */
        s->b->st.logon_failures++;
        n->stats.auth_failed++;
        if (n->rl) {
            bs_rl_key(key, sizeof(key), 'a', s->peer_ip);
            nip = rl_add(n->rl, key, now, cfg->auth_fail_window);
            bs_rl_key(key, sizeof(key), 'u', s->user);
            nuser = rl_add(n->rl, key, now, cfg->auth_fail_window);
        }
        log_warn("event=bridge.logon_failed sid=%" PRIu64
                 " addr=%s user=\"%.100s\" failures_ip=%u failures_user=%u",
                 s->sid, s->peer_ip, s->user, nip, nuser);
        if (nip >= cfg->auth_max_fail_ip) {
            n->stats.ratelimited++;
            log_warn("event=ratelimit kind=auth_failures_ip service=bridge "
                     "addr=%s limit=%u window=%us",
                     s->peer_ip, cfg->auth_max_fail_ip, cfg->auth_fail_window);
            s->logon_close = 1;
        }
        s->user[0] = '\0';
    }
    if (s->c == NULL || s->closing) {
        bs_done(s); /* nobody to answer, or the node is stopping */
        return;
    }
    if (ok) {
        s->logged_on = 1;
        s->b->st.logons++;
        log_info("event=bridge.logon sid=%" PRIu64 " addr=%s user=%s "
                 "client=\"%s\" cached=0",
                 s->sid, s->peer_ip, s->user, s->client);
        bs_logon_answer(s);
        bs_done(s);
        return;
    }
    /* Each failure counted doubles the wait, as for SMTP AUTH. */
    cnt = nip > nuser ? nip : nuser;
    delay = cfg->auth_fail_delay;
    for (unsigned i = 1; i < cnt && delay < cfg->auth_fail_delay_max; i++)
        delay *= 2;
    if (delay > cfg->auth_fail_delay_max)
        delay = cfg->auth_fail_delay_max;
    if (delay == 0) {
        bs_logon_answer(s);
        bs_done(s);
        return;
    }
    uv_timer_start(&s->timer, bs_timer_cb, delay * 1000, 0);
}

static int
bs_op_logon(struct bsess *s, const struct bproto_req *q)
{
    const struct bproto_logon_args *a = &q->a.logon;
    struct node *n = s->b->n;
    const struct node_config *cfg = s->b->cfg;
    struct bauth_work *w;
    char key[RL_KEY_MAX];
    size_t plen = strlen(a->password);
    int r;

    if (s->logged_on) {
        bs_fail(s, BPROTO_E_BAD_REQUEST, "already logged on as %s", s->user);
        return 0;
    }
    if (a->version < 1) {
        bs_fail(s, BPROTO_E_VERSION, "this node speaks version %d",
                BPROTO_VERSION);
        return 0;
    }
    s->logon_version =
        a->version < BPROTO_VERSION ? a->version : BPROTO_VERSION;
    snprintf(s->client, sizeof(s->client), "%s", a->client ? a->client : "");
    if (n->rl) {
        bs_rl_key(key, sizeof(key), 'a', s->peer_ip);
        if (rl_count(n->rl, key, uv_now(s->b->loop), cfg->auth_fail_window) >=
            cfg->auth_max_fail_ip) {
            n->stats.ratelimited++;
            log_warn("event=ratelimit kind=auth_failures_ip service=bridge "
                     "addr=%s limit=%u",
                     s->peer_ip, cfg->auth_max_fail_ip);
            bs_fail(s, BPROTO_E_TRY_LATER,
                    "too many failed logons from %s; try again later",
                    s->peer_ip);
            bs_close(s, 1);
            return 0;
        }
    }
    if ((w = calloc(1, sizeof(*w))) == NULL) {
        bs_fail(s, BPROTO_E_TRY_LATER, "out of memory");
        return 0;
    }
    w->s = s;
    w->req.data = w;
    if (store_addr_canon(a->user, s->user, sizeof(s->user)) != 0) {
        snprintf(s->user, sizeof(s->user), "%.253s", a->user);
        w->skip = 1;
    }
    memcpy(w->pass, a->password, plen);
    w->passlen = plen;
    /* Checks in flight count against the limits too (see above). */
    if (n->rl) {
        uint64_t now = uv_now(s->b->loop);

        bs_rl_key(key, sizeof(key), 'L', s->peer_ip);
        s->hold_ip = rl_hold(n->rl, key, now, BRIDGE_LOGONS_PER_IP);
        snprintf(s->hold_key, sizeof(s->hold_key), "%s", s->user);
        bs_rl_key(key, sizeof(key), 'M', s->hold_key);
        s->hold_user =
            s->hold_ip && rl_hold(n->rl, key, now, BRIDGE_LOGONS_PER_USER);
        if (!s->hold_ip || !s->hold_user) {
            bs_logon_release(s);
            sodium_memzero(w, sizeof(*w));
            free(w);
            s->user[0] = '\0';
            n->stats.ratelimited++;
            log_warn("event=ratelimit kind=logons_in_flight service=bridge "
                     "addr=%s msg=\"logons from this address or for this "
                     "user are already being checked\"",
                     s->peer_ip);
            bs_fail(s, BPROTO_E_TRY_LATER,
                    "other logons are being checked; try again in a moment");
            return 0;
        }
    }
    bs_rl_key(key, sizeof(key), 'u', s->user);
    if (n->rl && rl_count(n->rl, key, uv_now(s->b->loop),
                          cfg->auth_fail_window) >= cfg->auth_max_fail_user) {
        w->skip = 1; /* locked: the same work and answer as a bad password */
        log_warn("event=ratelimit kind=auth_failures_user service=bridge "
                 "user=\"%.100s\" limit=%u",
                 s->user, cfg->auth_max_fail_user);
    } else if (!w->skip && n->auth &&
               auth_cache_check(n->auth, s->user, w->pass, w->passlen,
                                uv_now(s->b->loop))) {
        sodium_memzero(w, sizeof(*w));
        free(w);
        bs_logon_release(s);
        s->logged_on = 1;
        s->logon_fail = 0;
        s->b->st.logons++;
        log_info("event=bridge.logon sid=%" PRIu64 " addr=%s user=%s "
                 "client=\"%s\" cached=1",
                 s->sid, s->peer_ip, s->user, s->client);
        bs_logon_answer(s);
        return 0;
    } else if (!w->skip) {
        r = store_user_get(n->store, s->user, bs_user_hash_cb, w);
        if (r != 0 && r != RM_E_NOTFOUND)
            log_err("event=bridge.user_lookup_failed sid=%" PRIu64
                    " err=\"%s\"",
                    s->sid, rm_strerror(r));
    }
    w->gen = n->auth ? auth_cache_gen(n->auth) : 0;
    if (uv_queue_work(s->b->loop, &w->req, bs_auth_work_cb, bs_auth_after_cb) !=
        0) {
        sodium_memzero(w, sizeof(*w));
        free(w);
        bs_logon_release(s);
        bs_fail(s, BPROTO_E_TRY_LATER, "cannot check the password now");
        return 0;
    }
    s->work_pending = 1;
    return 1;
}

/* ---- folders and find --------------------------------------------------- */

struct bs_count {
    uint32_t total, unread;
};

static int
bs_count_cb(void *arg, const struct store_mail *m)
{
    struct bs_count *c = arg;

    c->total++;
    if (!(m->flags & STORE_FLAG_SEEN))
        c->unread++;
    return 0;
}

static void
bs_folder_fill(struct bsess *s, enum bfolder f, struct bproto_folder *out)
{
    char mbox[STORE_ADDR_MAX + 16];
    struct bs_count c = {0, 0};

    bs_mailbox(s, f, mbox, sizeof(mbox));
    (void)store_mailbox_list(s->b->n->store, mbox, bs_count_cb, &c);
    memset(out, 0, sizeof(*out));
    out->id = bfolders[f].id;
    out->name = bfolders[f].name;
    out->role = bfolders[f].role;
    out->total = c.total;
    out->unread = c.unread;
}

static void
bs_op_folders(struct bsess *s)
{
    struct bproto_res res;
    struct bproto_folder fl[BF_COUNT];

    memset(&res, 0, sizeof(res));
    res.ok = 1;
    for (int f = 0; f < BF_COUNT; f++)
        bs_folder_fill(s, (enum bfolder)f, &fl[f]);
    res.r.folders.n_folders = BF_COUNT;
    res.r.folders.folders = fl;
    bs_reply(s, &res);
}

struct bs_find {
    uint32_t uidvalidity;
    int unread_only;
    uint32_t limit;
    unsigned n;
    uint64_t *ids;
    int more;
};

static int
bs_find_cb(void *arg, const struct store_mail *m)
{
    struct bs_find *f = arg;

    if (f->unread_only && (m->flags & STORE_FLAG_SEEN))
        return 0;
    if (f->n == f->limit) {
        f->more = 1;
        return 1;
    }
    f->ids[f->n++] = bs_wire_id(f->uidvalidity, m->uid);
    return 0;
}

static void
bs_op_find(struct bsess *s, const struct bproto_req *q)
{
    const struct bproto_find_args *a = &q->a.find;
    char mbox[STORE_ADDR_MAX + 16];
    struct store_mailbox_stat st;
    struct bproto_res res;
    struct bs_find f;
    enum bfolder fo;
    uint32_t after = 0;
    int r;

    if (bs_folder(s, a->folder, &fo) != 0)
        return;
    memset(&res, 0, sizeof(res));
    res.ok = 1;
    bs_mailbox(s, fo, mbox, sizeof(mbox));
    r = store_mailbox_stat(s->b->n->store, mbox, &st);
    if (r == RM_E_NOTFOUND) {
        bs_reply(s, &res); /* never had mail: nothing */
        return;
    }
    if (r != 0) {
        bs_store_fail(s, r, "list the folder");
        return;
    }
    /* An id from another UIDVALIDITY says nothing about this folder: from
       the start. */
    if (a->after != 0 && (uint32_t)(a->after >> 32) == st.uidvalidity)
        after = (uint32_t)a->after;
    memset(&f, 0, sizeof(f));
    f.uidvalidity = st.uidvalidity;
    f.unread_only = a->unread_only;
    f.limit = a->limit;
    if ((f.ids = calloc(a->limit, sizeof(*f.ids))) == NULL) {
        bs_fail(s, BPROTO_E_TRY_LATER, "out of memory");
        return;
    }
    r = store_mailbox_list_after(s->b->n->store, mbox, after, bs_find_cb, &f);
    if (r != 0 && r != 1 && r != RM_E_NOTFOUND) {
        free(f.ids);
        bs_store_fail(s, r, "list the folder");
        return;
    }
    res.r.find.n_ids = f.n;
    res.r.find.ids = f.n ? f.ids : NULL;
    res.r.find.more = f.more;
    bs_reply(s, &res);
    free(f.ids);
}

/* ---- mark and delete ---------------------------------------------------- */

static void
bs_write_done_cb(void *arg, int status)
{
    struct bsess *s = arg;

    if (bs_store_fail(s, status, "change the message") == 0)
        bs_ok_empty(s);
    bs_done(s);
}

static int
bs_op_mark_delete(struct bsess *s, const struct bproto_req *q)
{
    const char *folder =
        q->op == BPROTO_OP_MARK ? q->a.mark.folder : q->a.del.folder;
    uint64_t id = q->op == BPROTO_OP_MARK ? q->a.mark.id : q->a.del.id;
    char mbox[STORE_ADDR_MAX + 16];
    enum bfolder f;
    uint32_t uid;
    int r;

    if (bs_folder(s, folder, &f) != 0)
        return 0;
    bs_mailbox(s, f, mbox, sizeof(mbox));
    if (bs_msgid(s, mbox, id, &uid) != 0) {
        bs_fail(s, BPROTO_E_INVALID_MESSAGE, "no message %" PRIx64 " in %s", id,
                bfolders[f].name);
        return 0;
    }
    if (s->cache.id == id && s->cache.folder == f)
        bs_cache_clear(&s->cache);
    if (q->op == BPROTO_OP_MARK)
        r = store_mailbox_flags(s->b->n->store, mbox, uid, STORE_FLAG_SEEN,
                                q->a.mark.read ? 1 : -1, bs_write_done_cb, s);
    else
        r = store_mailbox_expunge(s->b->n->store, mbox, uid, bs_write_done_cb,
                                  s);
    if (r != 0) {
        bs_store_fail(s, r, "change the message");
        return 0;
    }
    if (q->op == BPROTO_OP_DELETE)
        log_info("event=bridge.delete sid=%" PRIu64 " user=%s folder=%s "
                 "uid=%u",
                 s->sid, s->user, bfolders[f].id, uid);
    return 1;
}

/* ---- upload ------------------------------------------------------------- */

static void
bs_op_upload(struct bsess *s, const struct bproto_req *q)
{
    const struct bproto_upload_args *a = &q->a.upload;
    uint64_t max = s->b->cfg->max_message_size;
    struct bproto_res res;
    struct bupload *u;

    if (a->upload == 0) {
        if (a->offset != 0) {
            bs_fail(s, BPROTO_E_BAD_REQUEST,
                    "a.offset: a new upload starts "
                    "at 0");
            return;
        }
        if (s->nuploads >= BRIDGE_UPLOADS_MAX) {
            bs_fail(s, BPROTO_E_TOO_BIG, "at most %d uploads at once",
                    BRIDGE_UPLOADS_MAX);
            return;
        }
        if ((u = calloc(1, sizeof(*u))) == NULL) {
            bs_fail(s, BPROTO_E_TRY_LATER, "out of memory");
            return;
        }
        buf_init(&u->data, max);
        u->handle = ++s->next_upload;
        u->next = s->uploads;
        s->uploads = u;
        s->nuploads++;
    } else if ((u = bs_upload_get(s, a->upload)) == NULL) {
        bs_fail(s, BPROTO_E_BAD_REQUEST, "a.upload: no upload %" PRIu64,
                a->upload);
        return;
    }
    if (a->len > max || s->upload_bytes + a->len > max) {
        bs_fail(s, BPROTO_E_TOO_BIG,
                "uploads of a session hold at most %" PRIu64 " bytes", max);
        bs_upload_drop(s, u);
        return;
    }
    if (a->offset != u->data.len) {
        bs_fail(s, BPROTO_E_BAD_REQUEST,
                "a.offset: %" PRIu64 " bytes are uploaded, not %" PRIu64,
                (uint64_t)u->data.len, a->offset);
        return;
    }
    if (a->len > 0 && buf_append(&u->data, a->data, a->len) != 0) {
        bs_fail(s, BPROTO_E_TOO_BIG,
                "the upload passes the node's limit of %" PRIu64 " bytes", max);
        bs_upload_drop(s, u);
        return;
    }
    s->upload_bytes += a->len;
    memset(&res, 0, sizeof(res));
    res.ok = 1;
    res.r.upload.upload = u->handle;
    res.r.upload.size = u->data.len;
    bs_reply(s, &res);
}

/* ---- resolve ------------------------------------------------------------ */

struct bs_resolve {
    const char *name; /* as typed */
    char canon[STORE_ADDR_MAX];
    int partial;
    unsigned nexact, npart;
    struct bproto_addr exact[BPROTO_MATCHES_MAX], part[BPROTO_MATCHES_MAX];
    char *strs[2 * BPROTO_MATCHES_MAX];
    unsigned nstrs;
    int more_exact, more_part;
};

static int
bs_ci_contains(const char *hay, const char *needle)
{
    size_t n = strlen(needle);

    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return 1;
    return n == 0;
}

/* One entry of the directory: this node's users, then the other
   offices' (an address announced twice counts once). */
static int
bs_resolve_addr(struct bs_resolve *r, const char *addr)
{
    const char *at = strrchr(addr, '@');
    size_t lp = at ? (size_t)(at - addr) : strlen(addr);
    int exact, part;
    char *copy;

    exact = strcmp(addr, r->canon) == 0 ||
            (strlen(r->name) == lp && strncasecmp(addr, r->name, lp) == 0);
    part = !exact && r->partial && bs_ci_contains(addr, r->name);
    if (!exact && !part)
        return 0;
    for (unsigned i = 0; i < r->nstrs; i++)
        if (strcmp(r->strs[i], addr) == 0)
            return 0;
    if (exact ? r->nexact == BPROTO_MATCHES_MAX
              : r->npart == BPROTO_MATCHES_MAX) {
        *(exact ? &r->more_exact : &r->more_part) = 1;
        return 0;
    }
    if ((copy = strdup(addr)) == NULL)
        return -ENOMEM;
    r->strs[r->nstrs++] = copy;
    if (exact)
        r->exact[r->nexact++] = (struct bproto_addr){"", copy};
    else
        r->part[r->npart++] = (struct bproto_addr){"", copy};
    return 0;
}

static int
bs_resolve_cb(void *arg, const struct store_user *u)
{
    return bs_resolve_addr(arg, u->address);
}

static int
bs_resolve_mesh_cb(void *arg, const char *addr, const char *node)
{
    (void)node;
    return bs_resolve_addr(arg, addr);
}

static void
bs_op_resolve(struct bsess *s, const struct bproto_req *q)
{
    struct bs_resolve *r = calloc(1, sizeof(*r));
    struct bproto_res res;
    int rc;

    if (r == NULL) {
        bs_fail(s, BPROTO_E_TRY_LATER, "out of memory");
        return;
    }
    r->name = q->a.resolve.name;
    r->partial = q->a.resolve.partial;
    if (strncasecmp(r->name, "smtp:", 5) == 0)
        r->name += 5;
    if (store_addr_canon(r->name, r->canon, sizeof(r->canon)) != 0)
        r->canon[0] = '\0';
    rc = store_user_list(s->b->n->store, bs_resolve_cb, r);
    if (rc == 0 || rc == RM_E_NOTFOUND) {
        int mrc = mesh_users_each(s->b->n->mesh, bs_resolve_mesh_cb, r);
        if (mrc != 0)
            rc = mrc;
    }
    memset(&res, 0, sizeof(res));
    res.ok = 1;
    if (rc != 0 && rc != RM_E_NOTFOUND) {
        bs_store_fail(s, rc, "read the user directory");
    } else {
        if (r->nexact > 0) {
            res.r.resolve.n = r->nexact;
            res.r.resolve.matches = r->exact;
            res.r.resolve.exact = 1;
            res.r.resolve.more = r->more_exact;
        } else {
            res.r.resolve.n = r->npart;
            res.r.resolve.matches = r->npart ? r->part : NULL;
            res.r.resolve.more = r->more_part;
        }
        log_info("event=bridge.resolve sid=%" PRIu64 " user=%s matches=%u "
                 "exact=%d",
                 s->sid, s->user, res.r.resolve.n, res.r.resolve.exact);
        bs_reply(s, &res);
    }
    for (unsigned i = 0; i < r->nstrs; i++)
        free(r->strs[i]);
    free(r);
}

/* ---- dispatch ----------------------------------------------------------- */

/* Run one request: 1 when it went asynchronous. */
static int
bs_run(struct bsess *s, const struct bproto_req *q)
{
    if (q->op == BPROTO_OP_PING) {
        bs_ok_empty(s);
        return 0;
    }
    if (q->op == BPROTO_OP_LOGON)
        return bs_op_logon(s, q);
    if (!s->logged_on) {
        bs_fail(s, BPROTO_E_NOT_LOGGED_IN, "log on first");
        return 0;
    }
    switch (q->op) {
    case BPROTO_OP_LOGOFF:
        log_info("event=bridge.logoff sid=%" PRIu64 " user=%s", s->sid,
                 s->user);
        bs_ok_empty(s);
        bs_close(s, 1);
        return 0;
    case BPROTO_OP_FOLDERS:
        bs_op_folders(s);
        return 0;
    case BPROTO_OP_FIND:
        bs_op_find(s, q);
        return 0;
    case BPROTO_OP_READ:
        return bs_op_read(s, q);
    case BPROTO_OP_FETCH_ATTACHMENT:
    case BPROTO_OP_FETCH_BODY:
        return bs_op_fetch(s, q);
    case BPROTO_OP_UPLOAD:
        bs_op_upload(s, q);
        return 0;
    case BPROTO_OP_SAVE:
        return bs_op_save(s, q);
    case BPROTO_OP_DELETE:
    case BPROTO_OP_MARK:
        return bs_op_mark_delete(s, q);
    case BPROTO_OP_SEND:
        return bs_op_send(s, q);
    case BPROTO_OP_RESOLVE:
        bs_op_resolve(s, q);
        return 0;
    case BPROTO_OP_CHANGES:
        bs_fail(s, BPROTO_E_UNSUPPORTED,
                "change feeds come with the Extended MAPI service; list the "
                "folder with find");
        return 0;
    case BPROTO_OP_PING:
    case BPROTO_OP_LOGON:
    case BPROTO_OP_COUNT:
        break;
    }
    bs_fail(s, BPROTO_E_UNSUPPORTED, "unknown operation");
    return 0;
}

static void
bs_pop(struct bsess *s)
{
    bproto_req_cleanup(&s->q[s->qhead].q);
    s->qhead = (s->qhead + 1) % BRIDGE_QUEUE_MAX;
    s->qlen--;
}

void
bs_done(struct bsess *s)
{
    s->busy = 0;
    bs_pop(s);
    if (s->c == NULL) {
        bs_maybe_free(s);
        return;
    }
    bs_pump(s);
}

static void
bs_pump(struct bsess *s)
{
    while (!s->busy && s->qlen > 0 && s->c != NULL && !s->closing) {
        struct bqent *e = &s->q[s->qhead];

        if (e->bad) {
            bs_fail(s, e->code, "%s", e->why);
        } else if (bs_run(s, &e->q)) {
            s->busy = 1;
            return;
        }
        bs_pop(s);
    }
}

/* ---- the connection ----------------------------------------------------- */

static int
bs_verify(struct mesh_conn *c, const uint8_t rs[32], const uint8_t *cred,
          size_t len, char *why, size_t whysz)
{
    (void)c;
    (void)rs;
    (void)cred;
    (void)why;
    (void)whysz;
    /* Anyone may open a channel: the user proves who they are with the
       logon request, inside it. A payload is not expected (ignored). */
    (void)len;
    return 0;
}

static void
bs_established(struct mesh_conn *c)
{
    struct bsess *s = mesh_conn_user(c);

    log_info("event=bridge.connected sid=%" PRIu64 " addr=%s", s->sid,
             s->peer_ip);
}

static void
bs_frame(struct mesh_conn *c, const struct frame_msg *m)
{
    struct bsess *s = mesh_conn_user(c);
    struct bqent *e;
    int r;

    if (s->closing)
        return;
    if (!m->type_is_str || m->type_len != strlen(BPROTO_T_REQ) ||
        memcmp(m->type, BPROTO_T_REQ, m->type_len) != 0) {
        if (m->type_is_str && m->type_len == 2 && memcmp(m->type, "ka", 2) == 0)
            return; /* keepalive */
        log_warn("event=bridge.bad_frame sid=%" PRIu64 " addr=%s "
                 "msg=\"not a request frame; closing\"",
                 s->sid, s->peer_ip);
        bs_close(s, 0);
        return;
    }
    if (!s->logged_on && s->qlen >= 2) {
        /* Before logon a client has nothing to pipeline: an anonymous
           peer does not get to park megabytes of requests. */
        log_warn("event=bridge.overrun sid=%" PRIu64 " addr=%s "
                 "msg=\"requests piled up before logon; closing\"",
                 s->sid, s->peer_ip);
        bs_close(s, 0);
        return;
    }
    if (s->qlen == BRIDGE_QUEUE_MAX) {
        log_warn("event=bridge.overrun sid=%" PRIu64 " addr=%s "
                 "msg=\"%d requests unanswered: the client does not read; "
                 "closing\"",
                 s->sid, s->peer_ip, BRIDGE_QUEUE_MAX);
        bs_close(s, 0);
        return;
    }
    e = &s->q[(s->qhead + s->qlen) % BRIDGE_QUEUE_MAX];
    memset(e, 0, sizeof(*e));
    r = bproto_req_decode_obj(m->body, &e->q);
    if (r != 0) {
        if (!e->q.has_id) {
            log_warn("event=bridge.bad_request sid=%" PRIu64 " addr=%s "
                     "why=\"%s\" msg=\"no request id; closing\"",
                     s->sid, s->peer_ip, e->q.why);
            bproto_req_cleanup(&e->q);
            bs_close(s, 0);
            return;
        }
        e->bad = 1;
        e->code =
            r == RM_E_NOTFOUND ? BPROTO_E_UNSUPPORTED : BPROTO_E_BAD_REQUEST;
        if (r == RM_E_NOTFOUND || r == -ENOMEM)
            snprintf(e->why, sizeof(e->why), "%s",
                     r == RM_E_NOTFOUND ? "unknown operation"
                                        : "out of memory");
        else
            memcpy(e->why, e->q.why, sizeof(e->why));
        if (r == -ENOMEM)
            e->code = BPROTO_E_TRY_LATER;
    }
    s->qlen++;
    bs_pump(s);
}

static void
bs_closed(struct mesh_conn *c, int reason, const char *why)
{
    struct bsess *s = mesh_conn_user(c);

    log_info("event=bridge.closed sid=%" PRIu64 " addr=%s user=%s "
             "reason=\"%s\"",
             s->sid, s->peer_ip, s->logged_on ? s->user : "-",
             reason == 0 ? "closed"
                         : (why && *why ? why : rm_strerror(reason)));
    s->c = NULL;
    s->closing = 1;
    if (s->busy && bs_send_abandon(s)) {
        s->busy = 0;
        bs_pop(s);
    }
    if (uv_is_active((uv_handle_t *)&s->timer)) {
        /* A failed logon's delayed answer: nobody to give it to. */
        uv_timer_stop(&s->timer);
        if (s->busy) {
            s->busy = 0;
            bs_pop(s);
        }
    }
    bs_maybe_free(s);
}

static const struct mesh_conn_cbs bs_cbs = {
    .verify = bs_verify,
    .established = bs_established,
    .frame = bs_frame,
    .closed = bs_closed,
};

static void
bs_reject_closed(uv_handle_t *h)
{
    free(h);
}

/* Take a connection off the listener and close it at once. */
static void
bs_reject(uv_stream_t *srv)
{
    uv_tcp_t *t = malloc(sizeof(*t));

    if (t == NULL)
        return;
    uv_tcp_init(srv->loop, t);
    (void)uv_accept(srv, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, bs_reject_closed);
}

static void
bridge_accept_cb(uv_stream_t *srv, int status)
{
    struct bridge *b = srv->data;
    struct mesh_conn_opts o;
    struct bsess *s;
    const char *peer, *colon;
    int r;

    if (status != 0)
        return;
    if (b->closing || b->nsessions >= b->cfg->bridge_max_sessions) {
        if (!b->closing) {
            b->st.refused++;
            log_warn("event=bridge.busy sessions=%u msg=\"[bridge] "
                     "max_sessions reached; a connection was refused\"",
                     b->nsessions);
        }
        bs_reject(srv);
        return;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        bs_reject(srv);
        return;
    }
    s->b = b;
    s->sid = ++b->next_sid;
    s->cache.att_index = -1;
    memset(&o, 0, sizeof(o));
    o.s_priv = b->x_sk;
    o.cred = (const uint8_t *)b->cred.data;
    o.cred_len = b->cred.len;
    o.hs_timeout_ms = BRIDGE_HS_TIMEOUT_MS;
    o.ka_interval_ms = BRIDGE_KA_INTERVAL_MS;
    o.idle_timeout_ms = (uint64_t)b->cfg->bridge_idle_timeout * 1000;
    o.prologue = BRIDGE_PROLOGUE;
    r = mesh_conn_accept(srv, &o, &bs_cbs, s, &s->c);
    if (r != 0) {
        free(s);
        bs_reject(srv);
        return;
    }
    uv_timer_init(b->loop, &s->timer);
    s->timer.data = s;
    s->nhandles = 1;
    s->started = uv_now(b->loop);
    s->next = b->sessions;
    if (b->sessions)
        b->sessions->prev = s;
    b->sessions = s;
    b->nsessions++;
    b->st.sessions++;
    if (s->c == NULL)
        return; /* closed already: its closed callback frees it */
    /* "ADDR:PORT" or "[V6]:PORT": the address alone, as SMTP keys it. */
    peer = mesh_conn_peer(s->c);
    colon = strrchr(peer, ':');
    if (peer[0] == '[' && colon != NULL && colon > peer && colon[-1] == ']')
        snprintf(s->peer_ip, sizeof(s->peer_ip), "%.*s",
                 (int)(colon - peer - 2), peer + 1);
    else
        snprintf(s->peer_ip, sizeof(s->peer_ip), "%.*s",
                 colon ? (int)(colon - peer) : (int)strlen(peer), peer);
}

/* ---- the service -------------------------------------------------------- */

/* Sessions that have not logged on within BRIDGE_LOGON_TIMEOUT_MS are
   closed: anonymous peers do not get to hold the session slots. */
static void
bridge_sweep_cb(uv_timer_t *t)
{
    struct bridge *b = t->data;
    uint64_t now = uv_now(b->loop);

    for (struct bsess *s = b->sessions; s; s = s->next)
        if (!s->logged_on && !s->closing && !s->busy && s->c != NULL &&
            now - s->started >= BRIDGE_LOGON_TIMEOUT_MS) {
            log_info("event=bridge.logon_timeout sid=%" PRIu64 " addr=%s "
                     "msg=\"no logon within %d s; closing\"",
                     s->sid, s->peer_ip, BRIDGE_LOGON_TIMEOUT_MS / 1000);
            bs_close(s, 0);
        }
}

static void
bridge_listener_closed(uv_handle_t *h)
{
    struct bridge *b = h->data;

    b->nhandles--;
    bridge_maybe_free(b);
}

int
bridge_new(struct node *n, struct bridge **out, char *err, size_t errsz)
{
    const struct node_config *cfg = n->cfg;
    struct bridge *b;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    *out = NULL;
    if (cfg->nbridge_listen == 0)
        return 0;
    if ((b = calloc(1, sizeof(*b))) == NULL) {
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    b->n = n;
    b->loop = n->loop;
    b->cfg = cfg;
    if ((b->x_sk = sodium_malloc(32)) == NULL ||
        crypto_sign_ed25519_sk_to_curve25519(b->x_sk, n->id.sk) != 0) {
        if (b->x_sk)
            sodium_free(b->x_sk);
        free(b);
        snprintf(err, errsz, "cannot derive the bridge key from the node key");
        return RM_E_INVAL;
    }
    /* The node's handshake payload: {"pk": Ed25519 key, "node": name}. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "pk", 2);
    msgpack_pack_bin_with_body(&pk, n->id.pk, NODE_ID_PK_LEN);
    msgpack_pack_str_with_body(&pk, "node", 4);
    msgpack_pack_str_with_body(&pk, cfg->hostname, strlen(cfg->hostname));
    buf_init(&b->cred, MESH_CONN_CRED_MAX);
    if (buf_append(&b->cred, sb.data, sb.size) != 0) {
        msgpack_sbuffer_destroy(&sb);
        b->closing = 1;
        bridge_maybe_free(b);
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    msgpack_sbuffer_destroy(&sb);
    *out = b;
    uv_timer_init(b->loop, &b->sweep);
    b->sweep.data = b;
    uv_timer_start(&b->sweep, bridge_sweep_cb, 5000, 5000);
    uv_unref((uv_handle_t *)&b->sweep);
    b->has_sweep = 1;
    for (size_t i = 0; i < cfg->nbridge_listen; i++) {
        uv_tcp_t *t = &b->listeners[b->nlisteners];
        int r;

        uv_tcp_init(b->loop, t);
        t->data = b;
        b->nlisteners++;
        r = uv_tcp_bind(t, (const struct sockaddr *)&cfg->bridge_listen[i].addr,
                        0);
        if (r == 0)
            r = uv_listen((uv_stream_t *)t, 128, bridge_accept_cb);
        if (r != 0) {
            snprintf(err, errsz,
                     "cannot listen for the MAPI bridge on %s: %s (change "
                     "[bridge] listen, or leave it empty for no bridge)",
                     cfg->bridge_listen[i].text, uv_strerror(r));
            return r;
        }
        log_info("event=listen service=bridge addr=%s",
                 cfg->bridge_listen[i].text);
    }
    return 0;
}

void
bridge_close(struct bridge *b)
{
    if (b == NULL || b->closing)
        return;
    b->closing = 1;
    for (struct bsess *s = b->sessions; s; s = s->next)
        bs_close(s, 0);
    b->nhandles = (int)b->nlisteners + b->has_sweep;
    if (b->has_sweep)
        uv_close((uv_handle_t *)&b->sweep, bridge_listener_closed);
    for (unsigned i = 0; i < b->nlisteners; i++)
        uv_close((uv_handle_t *)&b->listeners[i], bridge_listener_closed);
    bridge_maybe_free(b);
}

size_t
bridge_listeners(const struct bridge *b, const char **out, size_t max)
{
    size_t n = 0;

    if (b == NULL)
        return 0;
    for (size_t i = 0; i < b->cfg->nbridge_listen && n < max; i++)
        out[n++] = b->cfg->bridge_listen[i].text;
    return n;
}

void
bridge_status_enc(const struct bridge *b, struct ctl_enc *e)
{
    if (b == NULL) {
        ctl_enc_nil(e);
        return;
    }
    ctl_enc_map(e, 9);
    ctl_enc_ku64(e, "listeners", b->cfg->nbridge_listen);
    ctl_enc_kstr(e, "fingerprint", b->n->id.fingerprint);
    ctl_enc_kstr(e, "listen",
                 b->cfg->nbridge_listen ? b->cfg->bridge_listen[0].text : "");
    ctl_enc_ku64(e, "sessions", b->nsessions);
    ctl_enc_ku64(e, "sessions_total", b->st.sessions);
    ctl_enc_ku64(e, "refused", b->st.refused);
    ctl_enc_ku64(e, "logons", b->st.logons);
    ctl_enc_ku64(e, "logon_failures", b->st.logon_failures);
    ctl_enc_ku64(e, "sent", b->st.sent);
}
