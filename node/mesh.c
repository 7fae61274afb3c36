/*
 * mesh.c: the node's mesh service (see mesh.h).
 *
 * Data: one struct mesh_peer per member ever learnt of (its latest
 * membership chain, its latest node record, a revocation if any, our
 * outgoing connection to it, dial backoff, what `mesh peers` shows), and
 * one struct mesh_link per open connection (outgoing to a peer, incoming
 * from a peer, or a join in either direction).
 *
 * Frames (type: body):
 *   swim    a SWIM message (mrec_swim_*), from the link's peer only
 *   pp      push/pull: every member's state, incarnation and record
 *           version; the receiver sends what the sender lacks (cert +
 *           node frames) and, when asked, its own pp on the same link
 *   cert    a member's membership chain       (flooded when newer)
 *   node    a member's signed node record     (flooded when newer)
 *   rev     a signed revocation               (flooded when new)
 *   renew   "issue me a fresh certificate" -> answered with a cert frame
 *   admit   the joiner's first certificate chain (join links only)
 *   ka      keepalive (mesh_conn.c), ignored
 *   xfer, xdat, xack, xres
 *           mail for a member's domains (mesh_xfer.c, mesh/mxfer.h)
 */
#include <errno.h>
#include <netinet/in.h>
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
#include "mesh/mcodec.h"
#include "mesh/mrec.h"
#include "mesh/swim.h"
#include "node/ctl_codec.h"
#include "node/mesh.h"
#include "node/mesh_conn.h"
#include "node/mesh_int.h"
#include "node/mesh_repl.h"
#include "node/mesh_xfer.h"
#include "node/node.h"

#ifndef RM_VERSION
#define RM_VERSION "0"
#endif

#define MESH_QUEUE_MAX 32       /* frames held for a peer being dialed */
#define MESH_BACKOFF_MIN 250    /* ms */
#define MESH_JOIN_TIMEOUT 15000 /* ms for `mesh join` */
#define MESH_INVITES_MAX 1024
#define MESH_RENEW_EVERY 5000 /* ms between renewal requests */
#define MESH_FRAME_BODY_MAX (FRAME_MSG_MAX - 64)
#define MESH_PEERS_MAX SWIM_MEMBERS_MAX
#define MESH_HANDSHAKES_MAX 64 /* inbound connections not yet verified */
#define MESH_SKEW 300          /* seconds of clock skew tolerated */

enum mesh_link_kind {
    LINK_OUT,       /* we dialed a member */
    LINK_IN,        /* a member dialed us */
    LINK_JOIN_OUT,  /* we are joining through this link */
    LINK_JOIN_IN,   /* a joiner dialed us */
    LINK_IN_UNKNOWN /* accepted, handshake not done */
};

struct mesh_peer;

struct mesh_link {
    struct mesh_link *prev, *next;
    struct mesh *m;
    struct mesh_conn *c;
    enum mesh_link_kind kind;
    struct mesh_peer *p; /* OUT, IN */
    /* JOIN_IN: the joiner, admitted once the invite is taken */
    uint8_t join_pk[MREC_PK];
    char join_name[MREC_NAME_MAX];
    uint8_t join_id[MREC_INVITE_ID];
    int join_taking;
    int counted; /* in m->handshakes_in */
    uint64_t id; /* names the link to mesh_xfer.c (never reused) */
};

struct mesh_qframe {
    char type[8];
    uint8_t *body;
    size_t len;
};

struct mesh_peer {
    struct mesh_peer *next;
    uint8_t pk[MREC_PK]; /* Ed25519 */
    uint8_t xpk[32];     /* its X25519 form: the Noise static key */
    char name[MREC_NAME_MAX];
    char fp[NODE_ID_FP_LEN];
    int has_chain;
    struct mrec_chain chain;
    struct buf chain_raw; /* encoded chain, for floods */
    struct mrec_node *rec;
    struct buf rec_raw;
    int revoked;
    struct buf rev_raw;
    uint8_t rev_by[MREC_PK]; /* who signed the revocation */
    int in_swim;
    int reconcile; /* push/pull with it as soon as SWIM returns */
    /* our outgoing connection */
    struct mesh_link *out;
    uint64_t dial_at, backoff;
    unsigned addr_next;
    unsigned n_hint; /* addresses from an invite, until a record comes */
    char hint[MREC_ADDRS_MAX][MREC_ADDR_MAX];
    struct mesh_qframe q[MESH_QUEUE_MAX];
    unsigned nq;
    /* shown by `mesh peers` */
    enum swim_state state;
    uint32_t incarnation;
    int64_t last_contact_ms; /* unix ms, 0 never */
    double rtt_ms;           /* < 0: never measured */
    uint32_t ping_seq;
    uint64_t ping_at_ns;
    int64_t state_since_ms;
};

struct mesh_invite {
    uint8_t id[MREC_INVITE_ID];
    int64_t expires;
    char name[MREC_NAME_MAX];
    int taken; /* being admitted or used */
};

struct mesh_pending {
    void *arg;
    mesh_ctl_cb cb;
    char cmd[16];
};

struct mesh {
    struct node *n;
    uv_loop_t *loop;
    const struct node_config *cfg;
    uint8_t *x_sk; /* X25519 static private key, sodium_malloc */
    struct swim_profile prof;
    uint64_t pp_interval_ms;
    /* membership (member = 1 once created or joined) */
    int member;
    uint8_t mesh_id[MREC_MESHID];
    uint8_t root_pk[MREC_PK];
    struct mrec_chain chain; /* ours */
    uint64_t record_version;
    struct buf self_rec_raw;
    struct swim *swim;
    struct mesh_peer *peers;
    struct mesh_link *links;
    struct mesh_invite inv[MESH_INVITES_MAX];
    unsigned ninv;
    /* handles */
    uv_tcp_t listeners[NODE_CONFIG_LISTEN_MAX];
    unsigned nlisteners;
    uv_timer_t swim_timer;
    uv_timer_t house_timer;
    uv_timer_t join_timer; /* starts a join outside the control call */
    int nhandles;          /* still to close */
    int closing;
    uint64_t next_pp;
    uint64_t next_renew;
    /* one pending control command at a time per kind */
    struct mesh_pending join, create;
    struct mrec_invite join_tok;
    uint64_t join_deadline;
    unsigned join_addr;
    char join_err[256];
    struct mesh_pending invite;
    char invite_text[MCODEC_TOKEN_MAX];
    uint8_t invite_id[MREC_INVITE_ID]; /* of the invite being saved */
    struct mesh_pending remove;
    char remove_name[MREC_NAME_MAX];
    /* counters */
    int store_pending; /* store callbacks that take m or a link */
    unsigned npeers;
    unsigned handshakes_in; /* LINK_IN_UNKNOWN links */
    int renew_asked;        /* we sent "renew": our next chain may come */
    uint64_t refuse_log_at, refuse_suppressed;
    char refuse_last[64];
    uint64_t refused, frames_in, frames_out, rx_invalid;
    uint64_t next_rand;
    uint64_t link_ids;
    struct mesh_xfer *xfer; /* mail between members (mesh_xfer.c) */
    struct mesh_repl *repl; /* queue replication (mesh_repl.c) */
};

static void mesh_link_established(struct mesh_conn *c);
static void mesh_link_frame(struct mesh_conn *c, const struct frame_msg *fm);
static void mesh_link_closed(struct mesh_conn *c, int reason, const char *why);
static int mesh_link_verify(struct mesh_conn *c, const uint8_t rs[32],
                            const uint8_t *cred, size_t len, char *why,
                            size_t whysz);
static void mesh_swim_rearm(struct mesh *m);
static void mesh_maybe_free(struct mesh *m);
static void mesh_link_uncount(struct mesh_link *l);
static int mesh_self_addrs(struct mesh *m,
                           char addrs[MREC_ADDRS_MAX][MREC_ADDR_MAX],
                           unsigned *n);
static void mesh_send_pp(struct mesh *m, struct mesh_link *l, int want_reply);
static int mesh_peer_send(struct mesh *m, struct mesh_peer *p, const char *type,
                          const void *body, size_t len);
static void mesh_join_try(struct mesh *m);
static void mesh_join_finish(struct mesh *m, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void mesh_link_drained(struct mesh_conn *c);

static const struct mesh_conn_cbs mesh_cbs = {
    .verify = mesh_link_verify,
    .established = mesh_link_established,
    .frame = mesh_link_frame,
    .closed = mesh_link_closed,
    .drained = mesh_link_drained,
};

/* ---- small helpers ------------------------------------------------- */

static int64_t
mesh_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
mesh_wall_s(void)
{
    return (int64_t)time(NULL);
}

static uint32_t
mesh_rand32(struct mesh *m)
{
    (void)m;
    return randombytes_random();
}

static uint64_t
mesh_jitter(uint64_t ms)
{
    /* +-25% */
    uint64_t span = ms / 2 + 1;

    return ms - ms / 4 + randombytes_uniform((uint32_t)span);
}

static void
mesh_fp(const uint8_t pk[MREC_PK], char out[NODE_ID_FP_LEN])
{
    node_identity_fingerprint(pk, out);
}

static void
mesh_hex(const uint8_t *p, size_t n, char *out)
{
    sodium_bin2hex(out, n * 2 + 1, p, n);
}

/* A chain is valid until its earliest-expiring certificate. */
static int64_t
mesh_chain_expires(const struct mrec_chain *ch)
{
    int64_t e = INT64_MAX;

    for (unsigned i = 0; i < ch->n; i++)
        if (ch->c[i].expires < e)
            e = ch->c[i].expires;
    return ch->n ? e : 0;
}

/* The addresses peers dial: [mesh] advertise, else [mesh] listen. */
static const struct node_listen *
mesh_advertised(const struct node_config *cfg, size_t *n)
{
    *n = cfg->nmesh_advertise ? cfg->nmesh_advertise : cfg->nmesh_listen;
    return cfg->nmesh_advertise ? cfg->mesh_advertise : cfg->mesh_listen;
}

/* Is X25519 key rs the Noise form of Ed25519 key pk? */
static int
mesh_key_matches(const uint8_t pk[MREC_PK], const uint8_t rs[32])
{
    uint8_t x[32];

    return crypto_sign_ed25519_pk_to_curve25519(x, pk) == 0 &&
           sodium_memcmp(x, rs, 32) == 0;
}

static int
mesh_is_revoked_cb(void *arg, const uint8_t pk[32])
{
    struct mesh *m = arg;

    for (struct mesh_peer *p = m->peers; p; p = p->next)
        if (p->revoked && memcmp(p->pk, pk, MREC_PK) == 0)
            return 1;
    return 0;
}

static struct mesh_peer *
mesh_peer_by_pk(struct mesh *m, const uint8_t pk[MREC_PK])
{
    for (struct mesh_peer *p = m->peers; p; p = p->next)
        if (memcmp(p->pk, pk, MREC_PK) == 0)
            return p;
    return NULL;
}

/* The member (not revoked) called name. */
static struct mesh_peer *
mesh_peer_by_name(struct mesh *m, const char *name)
{
    for (struct mesh_peer *p = m->peers; p; p = p->next)
        if (!p->revoked && p->has_chain && strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

static int
mesh_is_self(struct mesh *m, const uint8_t pk[MREC_PK])
{
    return memcmp(pk, m->n->id.pk, MREC_PK) == 0;
}

static struct mesh_peer *
mesh_peer_get(struct mesh *m, const uint8_t pk[MREC_PK])
{
    struct mesh_peer *p = mesh_peer_by_pk(m, pk);

    if (p != NULL)
        return p;
    if (m->npeers >= MESH_PEERS_MAX) {
        log_warn("event=mesh.peers_full max=%u", MESH_PEERS_MAX);
        return NULL;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return NULL;
    m->npeers++;
    memcpy(p->pk, pk, MREC_PK);
    if (crypto_sign_ed25519_pk_to_curve25519(p->xpk, pk) != 0) {
        free(p);
        return NULL;
    }
    mesh_fp(pk, p->fp);
    buf_init(&p->chain_raw, 64 * 1024);
    buf_init(&p->rec_raw, FRAME_MSG_MAX);
    buf_init(&p->rev_raw, 4096);
    p->rtt_ms = -1;
    p->state = SWIM_ALIVE;
    p->backoff = MESH_BACKOFF_MIN;
    p->next = m->peers;
    m->peers = p;
    return p;
}

static void
mesh_peer_qclear(struct mesh_peer *p)
{
    for (unsigned i = 0; i < p->nq; i++)
        free(p->q[i].body);
    p->nq = 0;
}

static void
mesh_peer_free(struct mesh_peer *p)
{
    mesh_peer_qclear(p);
    buf_cleanup(&p->chain_raw);
    buf_cleanup(&p->rec_raw);
    buf_cleanup(&p->rev_raw);
    if (p->rec != NULL)
        mrec_node_free(p->rec);
    free(p);
}

/* ---- persistence ----------------------------------------------------- */

static void
mesh_store_cb(void *arg, int status)
{
    const char *what = arg;

    if (status != 0)
        log_err("event=mesh.store_failed what=%s error=\"%s\"", what,
                rm_strerror(status));
}

static void
mesh_key(char *out, const char *prefix, const uint8_t *id, size_t idlen,
         size_t *klen)
{
    size_t n = strlen(prefix);

    memcpy(out, prefix, n);
    memcpy(out + n, id, idlen);
    *klen = n + idlen;
}

static int
mesh_put(struct mesh *m, const char *prefix, const uint8_t *id, size_t idlen,
         const void *val, size_t vlen, const char *what, store_done_cb cb,
         void *arg)
{
    char key[64];
    size_t klen;
    struct store_mesh_write w;

    mesh_key(key, prefix, id, idlen, &klen);
    w = (struct store_mesh_write){STORE_MESH_PUT, key, klen, val, vlen};
    return store_mesh_apply(m->n->store, &w, 1, cb ? cb : mesh_store_cb,
                            cb ? arg : (void *)what);
}

static int
mesh_save_self(struct mesh *m, store_done_cb cb, void *arg)
{
    struct mcodec_self s;
    struct buf b;
    int r;

    memcpy(s.mesh_id, m->mesh_id, MREC_MESHID);
    memcpy(s.root_pk, m->root_pk, MREC_PK);
    s.chain = m->chain;
    s.record_version = m->record_version;
    buf_init(&b, 64 * 1024);
    r = mcodec_self_encode(&b, &s);
    if (r == 0) {
        struct store_mesh_write w = {STORE_MESH_PUT, "self", 4, b.data, b.len};

        r = store_mesh_apply(m->n->store, &w, 1, cb ? cb : mesh_store_cb,
                             cb ? arg : (void *)"self");
    }
    buf_cleanup(&b);
    return r;
}

/* ---- members --------------------------------------------------------- */

static const char *
mesh_state_name(const struct mesh_peer *p)
{
    return p->revoked ? "revoked" : swim_state_name(p->state);
}

/* Add p to SWIM once we know who it is (chain) and where (record). */
static void
mesh_peer_swim_add(struct mesh *m, struct mesh_peer *p, uint32_t inc)
{
    int r;

    if (m->swim == NULL || p->in_swim || p->revoked || !p->has_chain ||
        p->rec == NULL || mesh_is_self(m, p->pk))
        return;
    r = swim_add_member(m->swim, p->name, inc, uv_now(m->loop));
    if (r != 0 && r != RM_E_EXISTS) {
        log_warn("event=mesh.member_add_failed peer=%s error=\"%s\"", p->name,
                 rm_strerror(r));
        return;
    }
    p->in_swim = 1;
    p->state_since_ms = mesh_wall_ms();
    log_info("event=mesh.member_added peer=%s fingerprint=%s", p->name, p->fp);
    mesh_swim_rearm(m);
}

/* A chain for someone: keep it if valid and newer than ours. 1 when
   taken, 0 when not newer, <0 when invalid. */
static int
mesh_take_chain(struct mesh *m, const struct mrec_chain *ch, char *why,
                size_t whysz)
{
    struct mesh_peer *p;
    int r;

    r = mrec_chain_verify(ch, m->mesh_id, m->root_pk, mesh_wall_s(),
                          mesh_is_revoked_cb, m, why, whysz);
    if (r != 0)
        return r;
    if (mesh_is_self(m, ch->c[0].node_pk)) {
        /* Only a renewal we asked for, for our own name, no longer than
           this node's configured lifetime: a member cannot hand us a
           chain through itself and then revoke itself to cut us off. */
        if (!m->renew_asked || strcmp(ch->c[0].name, m->cfg->mesh_name) != 0 ||
            ch->c[0].expires - ch->c[0].issued >
                (int64_t)m->cfg->mesh_lifetime + MESH_SKEW ||
            mesh_chain_expires(ch) <= mesh_chain_expires(&m->chain))
            return 0;
        m->renew_asked = 0;
        m->chain = *ch;
        mesh_save_self(m, NULL, NULL);
        log_info("event=mesh.membership_renewed expires=%" PRId64
                 " issuer_depth=%u",
                 ch->c[0].expires, ch->n);
        return 1;
    }
    if (strcmp(ch->c[0].name, m->cfg->mesh_name) == 0) {
        snprintf(why, whysz, "another key claims this node's name %s",
                 ch->c[0].name);
        return RM_E_PERM;
    }
    if ((p = mesh_peer_get(m, ch->c[0].node_pk)) == NULL)
        return -ENOMEM;
    if (p->revoked)
        return RM_E_PERM;
    if (p->has_chain && mesh_chain_expires(ch) <= mesh_chain_expires(&p->chain))
        return 0;
    if (p->has_chain && strcmp(p->name, ch->c[0].name) != 0) {
        snprintf(why, whysz, "a certificate renames %s to %s", p->name,
                 ch->c[0].name);
        return RM_E_PERM;
    }
    {
        struct mesh_peer *same = mesh_peer_by_name(m, ch->c[0].name);

        if (same != NULL && same != p) {
            snprintf(why, whysz, "name %s is taken by another node",
                     ch->c[0].name);
            return RM_E_PERM;
        }
    }
    buf_reset(&p->chain_raw);
    if ((r = mrec_chain_encode(&p->chain_raw, ch)) != 0)
        return r;
    p->chain = *ch;
    p->has_chain = 1;
    snprintf(p->name, sizeof(p->name), "%s", ch->c[0].name);
    mesh_put(m, "cert/", p->pk, MREC_PK, p->chain_raw.data, p->chain_raw.len,
             "cert", NULL, NULL);
    mesh_peer_swim_add(m, p, 0);
    return 1;
}

/* A node record: keep it if signed by a member and newer. */
static int
mesh_take_record(struct mesh *m, struct mrec_node *rec, const void *raw,
                 size_t rawlen, char *why, size_t whysz)
{
    struct mesh_peer *p;
    int r;

    if (memcmp(rec->mesh_id, m->mesh_id, MREC_MESHID) != 0) {
        snprintf(why, whysz, "record of another mesh");
        return RM_E_PERM;
    }
    if (mrec_node_verify(rec) != 0) {
        snprintf(why, whysz, "bad signature on %s's record", rec->name);
        return RM_E_PERM;
    }
    if (mesh_is_self(m, rec->node_pk))
        return 0;
    p = mesh_peer_by_pk(m, rec->node_pk);
    if (p == NULL || !p->has_chain || p->revoked) {
        snprintf(why, whysz, "record of %s, not a member known here",
                 rec->name);
        return RM_E_PERM;
    }
    if (strcmp(rec->name, p->name) != 0) {
        snprintf(why, whysz, "record names %s, certificate says %s", rec->name,
                 p->name);
        return RM_E_PERM;
    }
    if (p->rec != NULL && rec->version <= p->rec->version)
        return 0;
    buf_reset(&p->rec_raw);
    if ((r = buf_append(&p->rec_raw, raw, rawlen)) != 0)
        return r;
    if (p->rec != NULL)
        mrec_node_free(p->rec);
    p->rec = rec;
    p->addr_next = 0;
    mesh_put(m, "node/", p->pk, MREC_PK, p->rec_raw.data, p->rec_raw.len,
             "node", NULL, NULL);
    log_info("event=mesh.record peer=%s version=%" PRIu64
             " domains=%u users=%u egress=%s",
             p->name, rec->version, rec->n_domains, rec->n_users,
             rec->egress ? "yes" : "no");
    mesh_peer_swim_add(m, p, 0);
    return 1;
}

static void mesh_link_close_peer(struct mesh *m, struct mesh_peer *p,
                                 const char *why);
static void mesh_recheck_links(struct mesh *m, int full);

/* A revocation: keep it if signed by a member (or the root). */
static int
mesh_take_revoke(struct mesh *m, const struct mrec_revoke *rv, const void *raw,
                 size_t rawlen, char *why, size_t whysz)
{
    struct mesh_peer *p, *by;

    if (memcmp(rv->mesh_id, m->mesh_id, MREC_MESHID) != 0) {
        snprintf(why, whysz, "revocation from another mesh");
        return RM_E_PERM;
    }
    if (mrec_revoke_verify_sig(rv) != 0) {
        snprintf(why, whysz, "bad signature on the revocation of %s", rv->name);
        return RM_E_PERM;
    }
    if (memcmp(rv->node_pk, m->root_pk, MREC_PK) == 0) {
        snprintf(why, whysz,
                 "a revocation of the mesh's first node (every "
                 "membership chains to it)");
        return RM_E_PERM;
    }
    by = mesh_peer_by_pk(m, rv->by_pk);
    if (!mesh_is_self(m, rv->by_pk) &&
        memcmp(rv->by_pk, m->root_pk, MREC_PK) != 0 &&
        (by == NULL || by->revoked || !by->has_chain)) {
        snprintf(why, whysz, "revocation of %s by a non-member", rv->name);
        return RM_E_PERM;
    }
    if (mesh_is_self(m, rv->node_pk)) {
        /* We were removed: stop talking to the mesh. */
        log_err("event=mesh.revoked_self by=%s msg=\"this node was removed "
                "from the mesh; it needs a new invite to rejoin\"",
                by ? by->name : "?");
        m->member = 0;
        for (struct mesh_peer *q = m->peers; q; q = q->next)
            mesh_link_close_peer(m, q, "this node was removed");
        return 1;
    }
    if ((p = mesh_peer_get(m, rv->node_pk)) == NULL)
        return -ENOMEM;
    if (p->revoked)
        return 0;
    p->revoked = 1;
    if (p->name[0] == '\0')
        snprintf(p->name, sizeof(p->name), "%s", rv->name);
    buf_reset(&p->rev_raw);
    buf_append(&p->rev_raw, raw, rawlen);
    memcpy(p->rev_by, rv->by_pk, MREC_PK);
    mesh_put(m, "rev/", p->pk, MREC_PK, raw, rawlen, "rev", NULL, NULL);
    log_warn("event=mesh.revoked peer=%s fingerprint=%s by=%s", p->name, p->fp,
             mesh_is_self(m, rv->by_pk) ? "this node" : (by ? by->name : "?"));
    if (m->swim != NULL && p->in_swim) {
        /* Declare it dead so that nobody probes it; our layer keeps it
           revoked whatever SWIM hears. */
        struct swim_msg sm;
        uint32_t inc = 0;

        swim_member_get(m->swim, p->name, NULL, &inc);
        memset(&sm, 0, sizeof(sm));
        sm.type = SWIM_MSG_GOSSIP;
        snprintf(sm.from, sizeof(sm.from), "%s", m->cfg->mesh_name);
        sm.n_updates = 1;
        snprintf(sm.updates[0].name, SWIM_NAME_MAX, "%s", p->name);
        snprintf(sm.updates[0].from, SWIM_NAME_MAX, "%s", m->cfg->mesh_name);
        sm.updates[0].incarnation = inc;
        sm.updates[0].state = SWIM_DEAD;
        swim_receive(m->swim, &sm, uv_now(m->loop));
        mesh_swim_rearm(m);
    }
    mesh_link_close_peer(m, p, "revoked");
    mesh_recheck_links(m, 1);
    return 1;
}

/* ---- sending ----------------------------------------------------------- */

/* A member news is sent to: known, not removed, and alive or suspect
   (a dead one only while our connection to it is up). */
static int
mesh_floodable(const struct mesh_peer *p)
{
    if (p->revoked || !p->has_chain || p->rec == NULL)
        return 0;
    return (p->state != SWIM_DEAD && p->state != SWIM_LEFT) ||
           (p->out != NULL && mesh_conn_is_up(p->out->c));
}

static void
mesh_flood(struct mesh *m, const char *type, const void *body, size_t len,
           const struct mesh_peer *except)
{
    for (struct mesh_peer *p = m->peers; p; p = p->next)
        if (p != except && mesh_floodable(p))
            mesh_peer_send(m, p, type, body, len);
}

static void mesh_send_rev(struct mesh *m, struct mesh_link *l,
                          struct mesh_peer *to, const struct mesh_peer *p);

/* The revocation of p to every member but except (and p itself). */
static void
mesh_flood_rev(struct mesh *m, const struct mesh_peer *p,
               const struct mesh_peer *except)
{
    if (p == NULL || !p->rev_raw.len)
        return;
    for (struct mesh_peer *q = m->peers; q; q = q->next)
        if (q != except && q != p && mesh_floodable(q))
            mesh_send_rev(m, NULL, q, p);
}

static int
mesh_link_send(struct mesh_link *l, const char *type, const void *body,
               size_t len)
{
    int r = mesh_conn_send(l->c, type, body, len);

    if (r == 0)
        l->m->frames_out++;
    return r;
}

static int mesh_dial(struct mesh *m, struct mesh_peer *p);

static int
mesh_peer_send(struct mesh *m, struct mesh_peer *p, const char *type,
               const void *body, size_t len)
{
    struct mesh_qframe *q;

    if (p->revoked || m->closing || !m->member)
        return RM_E_CLOSED;
    if (p->out != NULL && mesh_conn_is_up(p->out->c))
        return mesh_link_send(p->out, type, body, len);
    if (p->out == NULL && uv_now(m->loop) >= p->dial_at)
        mesh_dial(m, p);
    if (p->out == NULL || p->nq >= MESH_QUEUE_MAX)
        return RM_E_AGAIN; /* dropped, as a datagram would be */
    q = &p->q[p->nq];
    if ((q->body = malloc(len)) == NULL)
        return -ENOMEM;
    memcpy(q->body, body, len);
    q->len = len;
    snprintf(q->type, sizeof(q->type), "%s", type);
    p->nq++;
    return 0;
}

/* ---- SWIM glue ------------------------------------------------------- */

static void
mesh_swim_send(void *ctx, const char *to, const struct swim_msg *msg)
{
    struct mesh *m = ctx;
    struct mesh_peer *p = mesh_peer_by_name(m, to);
    struct buf b;

    if (p == NULL)
        return;
    buf_init(&b, 64 * 1024);
    if (mrec_swim_encode(&b, msg) == 0) {
        if (msg->type == SWIM_MSG_PING && strcmp(msg->target, to) == 0) {
            p->ping_seq = msg->seq;
            p->ping_at_ns = uv_hrtime();
        }
        mesh_peer_send(m, p, "swim", b.data, b.len);
    }
    buf_cleanup(&b);
}

static void
mesh_swim_state(void *ctx, const char *name, enum swim_state old,
                enum swim_state st, uint32_t inc)
{
    struct mesh *m = ctx;
    struct mesh_peer *p;

    if (strcmp(name, m->cfg->mesh_name) == 0) {
        if (old == st)
            log_info("event=mesh.refute incarnation=%" PRIu32, inc);
        return;
    }
    if ((p = mesh_peer_by_name(m, name)) == NULL)
        return;
    p->incarnation = inc;
    if (old != st || p->state != st) {
        if (p->state != st)
            p->state_since_ms = mesh_wall_ms();
        p->state = st;
        log_msg(st == SWIM_ALIVE ? LOG_INFO : LOG_WARN,
                "event=mesh.member_state peer=%s state=%s was=%s "
                "incarnation=%" PRIu32,
                name, swim_state_name(st), swim_state_name(old), inc);
    }
    if (st == SWIM_ALIVE && old == SWIM_DEAD)
        p->reconcile = 1; /* heard from again: push/pull once out of SWIM */
}

static uint32_t
mesh_swim_random(void *ctx)
{
    return mesh_rand32(ctx);
}

static void
mesh_swim_timer_cb(uv_timer_t *t)
{
    struct mesh *m = t->data;

    if (m->swim == NULL || m->closing)
        return;
    swim_tick(m->swim, uv_now(m->loop));
    mesh_swim_rearm(m);
}

static void
mesh_swim_rearm(struct mesh *m)
{
    uint64_t now = uv_now(m->loop), next;

    if (m->swim == NULL || m->closing)
        return;
    /* Work the SWIM callbacks could not do (they must not re-enter it). */
    for (struct mesh_peer *p = m->peers; p; p = p->next)
        if (p->reconcile) {
            p->reconcile = 0;
            if (p->out != NULL && mesh_conn_is_up(p->out->c))
                mesh_send_pp(m, p->out, 1);
        }
    next = swim_next_deadline(m->swim);
    uv_timer_start(&m->swim_timer, mesh_swim_timer_cb,
                   next > now ? next - now : 0, 0);
}

static int
mesh_swim_start(struct mesh *m)
{
    struct swim_callbacks cb = {
        .send = mesh_swim_send,
        .state_change = mesh_swim_state,
        .random = mesh_swim_random,
        .ctx = m,
    };
    int r;

    if (m->swim != NULL)
        return 0;
    r = swim_new(m->cfg->mesh_name, &m->prof, &cb, uv_now(m->loop), &m->swim);
    if (r != 0)
        return r;
    for (struct mesh_peer *p = m->peers; p; p = p->next)
        mesh_peer_swim_add(m, p, 0);
    mesh_swim_rearm(m);
    return 0;
}

/* ---- own record and certificate -------------------------------------- */

static int
mesh_user_cb(void *arg, const struct store_user *u)
{
    struct buf *b = arg;

    return buf_append(b, u->address, strlen(u->address) + 1);
}

/* Build, sign and publish this node's record (a new version). */
static int
mesh_publish_record(struct mesh *m)
{
    const struct node_config *cfg = m->cfg;
    struct mrec_node rec;
    struct buf users, out;
    char **uv = NULL, *dv[NODE_CONFIG_DOMAINS_MAX];
    size_t nu = 0;
    int64_t now = mesh_wall_ms();
    int r;

    if (!m->member)
        return 0;
    memset(&rec, 0, sizeof(rec));
    memcpy(rec.mesh_id, m->mesh_id, MREC_MESHID);
    snprintf(rec.name, sizeof(rec.name), "%s", cfg->mesh_name);
    m->record_version = (uint64_t)now > m->record_version
                            ? (uint64_t)now
                            : m->record_version + 1;
    rec.version = m->record_version;
    snprintf(rec.software, sizeof(rec.software), "relaymesh %s", RM_VERSION);
    rec.egress = cfg->mesh_egress;
    mesh_self_addrs(m, rec.addrs, &rec.n_addrs);
    for (size_t i = 0; i < cfg->ndomains && i < MREC_DOMAINS_MAX; i++)
        dv[rec.n_domains++] = cfg->domains[i];
    rec.domains = dv;
    buf_init(&users, 64u << 20);
    if (m->n->store != NULL)
        store_user_list(m->n->store, mesh_user_cb, &users);
    for (size_t off = 0; off < users.len; off += strlen(users.data + off) + 1)
        nu++;
    if (nu > MREC_USERS_MAX)
        nu = MREC_USERS_MAX;
    if (nu > 0 && (uv = calloc(nu, sizeof(*uv))) == NULL) {
        buf_cleanup(&users);
        return -ENOMEM;
    }
    {
        size_t i = 0;

        for (size_t off = 0; off < users.len && i < nu;
             off += strlen(users.data + off) + 1)
            uv[i++] = users.data + off;
    }
    rec.users = uv;
    rec.n_users = (unsigned)nu;
    buf_init(&out, FRAME_MSG_MAX);
    r = mrec_node_sign(&rec, m->n->id.sk);
    if (r == 0)
        r = mrec_node_encode(&out, &rec);
    if (r == 0) {
        buf_reset(&m->self_rec_raw);
        r = buf_append(&m->self_rec_raw, out.data, out.len);
    }
    if (r == 0) {
        mesh_save_self(m, NULL, NULL);
        mesh_flood(m, "node", out.data, out.len, NULL);
        log_info("event=mesh.record_published version=%" PRIu64
                 " domains=%u users=%u",
                 rec.version, rec.n_domains, rec.n_users);
    } else {
        log_err("event=mesh.record_failed error=\"%s\" msg=\"the node record "
                "is too large (too many users or domains?)\"",
                rm_strerror(r));
    }
    free(uv);
    buf_cleanup(&users);
    buf_cleanup(&out);
    return r;
}

void
mesh_users_changed(struct mesh *m)
{
    if (m != NULL && !m->closing)
        mesh_publish_record(m);
}

static void
mesh_chain_flood_self(struct mesh *m)
{
    struct buf b;

    buf_init(&b, 64 * 1024);
    if (mrec_chain_encode(&b, &m->chain) == 0)
        mesh_flood(m, "cert", b.data, b.len, NULL);
    buf_cleanup(&b);
}

/* Issue a certificate for pk/name under our own chain. */
static int
mesh_issue(struct mesh *m, const uint8_t pk[MREC_PK], const char *name,
           struct mrec_chain *out)
{
    struct mrec_cert c;
    int64_t now = mesh_wall_s();

    if (m->chain.n >= MREC_CHAIN_MAX)
        return RM_E_TOOBIG;
    memset(&c, 0, sizeof(c));
    memcpy(c.mesh_id, m->mesh_id, MREC_MESHID);
    memcpy(c.node_pk, pk, MREC_PK);
    snprintf(c.name, sizeof(c.name), "%s", name);
    c.issued = now;
    c.expires = now + (int64_t)m->cfg->mesh_lifetime;
    if (mrec_cert_sign(&c, m->n->id.sk) != 0)
        return RM_E_INVAL;
    out->n = m->chain.n + 1;
    out->c[0] = c;
    memcpy(&out->c[1], m->chain.c, m->chain.n * sizeof(m->chain.c[0]));
    return 0;
}

/* ---- links ------------------------------------------------------------ */

static struct mesh_link *
mesh_link_new(struct mesh *m, enum mesh_link_kind kind, struct mesh_peer *p)
{
    struct mesh_link *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->m = m;
    l->kind = kind;
    l->p = p;
    l->id = ++m->link_ids;
    l->next = m->links;
    if (m->links)
        m->links->prev = l;
    m->links = l;
    return l;
}

static void
mesh_link_unlink(struct mesh_link *l)
{
    struct mesh *m = l->m;

    if (l->prev)
        l->prev->next = l->next;
    else
        m->links = l->next;
    if (l->next)
        l->next->prev = l->prev;
    free(l);
}

static void
mesh_link_close_peer(struct mesh *m, struct mesh_peer *p, const char *why)
{
    for (struct mesh_link *l = m->links; l; l = l->next)
        if (l->p == p && l->c != NULL) {
            log_info("event=mesh.disconnect peer=%s reason=\"%s\"", p->name,
                     why);
            mesh_conn_close(l->c, RM_E_PERM);
        }
}

/* Connected members whose chain no longer holds lose their connections:
   membership is checked for as long as a connection lasts, not only at
   its handshake. full: verify every chain again (after a revocation: a
   revoked issuer); otherwise only the expiry, the one thing that changes
   with time alone (signatures were checked when each chain was taken). */
static void
mesh_recheck_links(struct mesh *m, int full)
{
    int64_t now = mesh_wall_s();

    for (struct mesh_peer *p = m->peers; p; p = p->next) {
        char why[200] = "";

        if (!p->has_chain || p->revoked)
            continue;
        if (full) {
            if (mrec_chain_verify(&p->chain, m->mesh_id, m->root_pk, now,
                                  mesh_is_revoked_cb, m, why, sizeof(why)) == 0)
                continue;
        } else {
            if (mesh_chain_expires(&p->chain) > now)
                continue;
            snprintf(why, sizeof(why), "membership of %s expired", p->name);
        }
        for (struct mesh_link *l = m->links; l; l = l->next)
            if (l->p == p && l->c != NULL) {
                log_warn("event=mesh.disconnect peer=%s reason=\"%s\"", p->name,
                         why);
                mesh_conn_close(l->c, RM_E_PERM);
            }
    }
}

static int
mesh_cred_member(struct mesh *m, struct buf *b)
{
    return mcodec_cred_member_encode(b, &m->chain);
}

static void
mesh_conn_opts(struct mesh *m, struct mesh_conn_opts *o, const struct buf *cred)
{
    memset(o, 0, sizeof(*o));
    o->s_priv = m->x_sk;
    o->cred = (const uint8_t *)cred->data;
    o->cred_len = cred->len;
    o->hs_timeout_ms = 2 * m->prof.probe_interval_ms;
    o->ka_interval_ms = m->prof.probe_interval_ms;
    o->idle_timeout_ms =
        (uint64_t)m->prof.probe_interval_ms * (m->prof.suspicion_mult + 1);
}

static int
mesh_parse_addr(const char *text, struct sockaddr_storage *ss)
{
    char host[MREC_ADDR_MAX];
    const char *colon;
    unsigned long port;
    char *end;

    if (text[0] == '[') {
        const char *rb = strchr(text, ']');

        if (rb == NULL || rb[1] != ':' ||
            (size_t)(rb - text - 1) >= sizeof(host))
            return RM_E_INVAL;
        memcpy(host, text + 1, (size_t)(rb - text - 1));
        host[rb - text - 1] = '\0';
        colon = rb + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL || (size_t)(colon - text) >= sizeof(host))
            return RM_E_INVAL;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
    }
    port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port == 0 || port > 65535)
        return RM_E_INVAL;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return RM_E_INVAL;
}

static int
mesh_dial(struct mesh *m, struct mesh_peer *p)
{
    struct sockaddr_storage ss;
    struct mesh_conn_opts o;
    struct mesh_link *l;
    struct buf cred;
    const char *addr;
    int r;

    if (p->out != NULL || p->revoked || m->closing || !m->member)
        return RM_E_AGAIN;
    if (p->rec != NULL && p->rec->n_addrs > 0)
        addr = p->rec->addrs[p->addr_next++ % p->rec->n_addrs];
    else if (p->n_hint > 0)
        addr = p->hint[p->addr_next++ % p->n_hint];
    else
        return RM_E_AGAIN;
    if (mesh_parse_addr(addr, &ss) != 0) {
        p->dial_at = uv_now(m->loop) + 60000;
        return RM_E_INVAL;
    }
    if ((l = mesh_link_new(m, LINK_OUT, p)) == NULL)
        return -ENOMEM;
    buf_init(&cred, MESH_CONN_CRED_MAX);
    r = mesh_cred_member(m, &cred);
    if (r == 0) {
        mesh_conn_opts(m, &o, &cred);
        r = mesh_conn_connect(m->loop, (struct sockaddr *)&ss, &o, &mesh_cbs, l,
                              &l->c);
    }
    buf_cleanup(&cred);
    if (r != 0) {
        mesh_link_unlink(l);
        p->dial_at = uv_now(m->loop) + mesh_jitter(p->backoff);
        return r;
    }
    p->out = l;
    log_debug("event=mesh.dial peer=%s addr=%s", p->name, addr);
    return 0;
}

/* Verify a member's chain presented in a handshake against rs. */
static int
mesh_verify_member(struct mesh *m, const struct mrec_chain *ch,
                   const uint8_t rs[32], char *why, size_t whysz)
{
    int r;

    if (ch->n == 0)
        return RM_E_PERM;
    if (!mesh_key_matches(ch->c[0].node_pk, rs)) {
        snprintf(why, whysz,
                 "certificate is not for the key it connects "
                 "with");
        return RM_E_PERM;
    }
    r = mrec_chain_verify(ch, m->mesh_id, m->root_pk, mesh_wall_s(),
                          mesh_is_revoked_cb, m, why, whysz);
    if (r != 0)
        return RM_E_PERM;
    return 0;
}

static int
mesh_invite_find(struct mesh *m, const uint8_t id[MREC_INVITE_ID])
{
    for (unsigned i = 0; i < m->ninv; i++)
        if (sodium_memcmp(m->inv[i].id, id, MREC_INVITE_ID) == 0)
            return (int)i;
    return -1;
}

static int
mesh_verify_joiner(struct mesh *m, struct mesh_link *l,
                   const struct mcodec_cred *cr, const uint8_t rs[32],
                   char *why, size_t whysz)
{
    struct mrec_invite tok;
    const char *name;
    int i;

    if (mrec_invite_from_text(cr->token, &tok, why, whysz) != 0)
        return RM_E_PERM;
    if (!mesh_is_self(m, tok.inviter_pk) ||
        memcmp(tok.mesh_id, m->mesh_id, MREC_MESHID) != 0 ||
        mrec_invite_verify_sig(&tok) != 0) {
        snprintf(why, whysz,
                 "invite token not issued by this node (forged "
                 "or for another node)");
        return RM_E_PERM;
    }
    if (tok.expires <= mesh_wall_s()) {
        snprintf(why, whysz, "invite token expired");
        return RM_E_PERM;
    }
    if ((i = mesh_invite_find(m, tok.id)) < 0 || m->inv[i].taken) {
        snprintf(why, whysz, "invite token already used (or revoked)");
        return RM_E_PERM;
    }
    if (!mesh_key_matches(cr->pk, rs)) {
        snprintf(why, whysz, "joiner key does not match its handshake");
        return RM_E_PERM;
    }
    if (mesh_is_revoked_cb(m, cr->pk)) {
        snprintf(why, whysz, "a removed node cannot rejoin with this key");
        return RM_E_PERM;
    }
    name = tok.name[0] ? tok.name : cr->name;
    if (name[0] == '\0' || strcmp(name, m->cfg->mesh_name) == 0) {
        snprintf(why, whysz, "node name \"%s\" is taken by this node", name);
        return RM_E_PERM;
    }
    {
        struct mesh_peer *same = mesh_peer_by_name(m, name);

        if (same != NULL && memcmp(same->pk, cr->pk, MREC_PK) != 0) {
            snprintf(why, whysz, "node name \"%s\" is taken", name);
            return RM_E_PERM;
        }
        for (struct mesh_link *o = m->links; o; o = o->next)
            if (o != l && o->kind == LINK_JOIN_IN &&
                strcmp(o->join_name, name) == 0) {
                snprintf(why, whysz,
                         "node name \"%s\" is being admitted "
                         "for another node",
                         name);
                return RM_E_PERM;
            }
    }
    m->inv[i].taken = 1;
    l->kind = LINK_JOIN_IN;
    memcpy(l->join_pk, cr->pk, MREC_PK);
    memcpy(l->join_id, tok.id, MREC_INVITE_ID);
    snprintf(l->join_name, sizeof(l->join_name), "%s", name);
    return 0;
}

static int
mesh_link_verify(struct mesh_conn *c, const uint8_t rs[32], const uint8_t *cred,
                 size_t len, char *why, size_t whysz)
{
    struct mesh_link *l = mesh_conn_user(c);
    struct mesh *m = l->m;
    struct mcodec_cred *cr;
    int r = RM_E_PERM;

    mesh_link_uncount(l);
    if ((cr = malloc(sizeof(*cr))) == NULL)
        return -ENOMEM;
    if (mcodec_cred_decode(cred, len, cr) != 0) {
        snprintf(why, whysz, "malformed credential");
        r = RM_E_PROTO;
        goto out;
    }
    switch (l->kind) {
    case LINK_OUT:
        if (!m->member || cr->kind != MCODEC_CRED_MEMBER)
            break;
        if ((r = mesh_verify_member(m, &cr->chain, rs, why, whysz)) != 0)
            break;
        if (memcmp(cr->chain.c[0].node_pk, l->p->pk, MREC_PK) != 0) {
            snprintf(why, whysz, "answered by another node than %s",
                     l->p->name);
            r = RM_E_PERM;
            break;
        }
        mesh_take_chain(m, &cr->chain, why, whysz);
        r = 0;
        break;
    case LINK_JOIN_OUT:
        /* The inviter: the key the token names, and a valid member. */
        r = RM_E_PERM;
        if (cr->kind != MCODEC_CRED_MEMBER ||
            memcmp(cr->chain.c[0].node_pk, m->join_tok.inviter_pk, MREC_PK) !=
                0) {
            snprintf(why, whysz,
                     "the node at that address is not the one "
                     "that made the token");
            break;
        }
        if (!mesh_key_matches(cr->chain.c[0].node_pk, rs))
            break;
        r = mrec_chain_verify(&cr->chain, m->join_tok.mesh_id,
                              m->join_tok.root_pk, mesh_wall_s(), NULL, NULL,
                              why, whysz);
        if (r != 0)
            r = RM_E_PERM;
        break;
    case LINK_IN:
    case LINK_JOIN_IN:
        break; /* verified once, when accepted */
    case LINK_IN_UNKNOWN:
        if (!m->member) {
            snprintf(why, whysz, "this node is not in a mesh");
            break;
        }
        if (cr->kind == MCODEC_CRED_JOIN) {
            r = mesh_verify_joiner(m, l, cr, rs, why, whysz);
            break;
        }
        if ((r = mesh_verify_member(m, &cr->chain, rs, why, whysz)) != 0)
            break;
        if (mesh_take_chain(m, &cr->chain, why, whysz) < 0) {
            r = RM_E_PERM;
            break;
        }
        l->p = mesh_peer_by_pk(m, cr->chain.c[0].node_pk);
        if (l->p == NULL || l->p->revoked) {
            r = RM_E_PERM;
            break;
        }
        l->kind = LINK_IN;
        r = 0;
        break;
    default:
        break;
    }
out:
    if (r != 0) {
        uint64_t now = uv_now(m->loop);

        m->refused++;
        /* A removed node keeps knocking: one line a second at most
           for the same reason. */
        if (now >= m->refuse_log_at ||
            strncmp(why, m->refuse_last, sizeof(m->refuse_last) - 1) != 0) {
            snprintf(m->refuse_last, sizeof(m->refuse_last), "%s", why);
            log_warn("event=mesh.refused peer_addr=%s direction=%s "
                     "reason=\"%s\" suppressed=%" PRIu64,
                     mesh_conn_peer(c), mesh_conn_initiator(c) ? "out" : "in",
                     why[0] ? why : "not a member", m->refuse_suppressed);
            m->refuse_suppressed = 0;
            m->refuse_log_at = now + 1000;
        } else {
            m->refuse_suppressed++;
        }
    }
    sodium_memzero(cr, sizeof(*cr));
    free(cr);
    return r;
}

/* Send what a newly connected peer may lack: revocations, our chain and
   record, then our state. */
static void
mesh_link_greet(struct mesh *m, struct mesh_link *l)
{
    struct buf b;

    buf_init(&b, 64 * 1024);
    if (mrec_chain_encode(&b, &m->chain) == 0)
        mesh_link_send(l, "cert", b.data, b.len);
    buf_cleanup(&b);
    if (m->self_rec_raw.len)
        mesh_link_send(l, "node", m->self_rec_raw.data, m->self_rec_raw.len);
    mesh_send_pp(m, l, 1); /* revocations first, then the state */
}

static void
mesh_admit_stored(void *arg, int status)
{
    struct mesh_link *l = arg;
    struct mesh *m = l->m;
    struct mrec_chain ch;
    struct buf b;
    char why[160] = "";
    int i = mesh_invite_find(m, l->join_id), r;

    if (i >= 0) /* used (or lost to another taker): gone either way */
        m->inv[i] = m->inv[--m->ninv];
    l->join_taking = 0;
    m->store_pending--;
    if (l->c == NULL || m->closing) { /* the link closed meanwhile */
        if (l->c != NULL)
            mesh_conn_close(l->c, RM_E_CLOSED);
        else
            mesh_link_unlink(l);
        mesh_maybe_free(m);
        return;
    }
    if (status != 0) {
        log_warn("event=mesh.join_refused peer_addr=%s name=%s reason=\"invite "
                 "already used\"",
                 mesh_conn_peer(l->c), l->join_name);
        mesh_conn_close(l->c, RM_E_PERM);
        return;
    }
    {
        struct mesh_peer *same = mesh_peer_by_name(m, l->join_name);

        if ((same != NULL && memcmp(same->pk, l->join_pk, MREC_PK) != 0) ||
            strcmp(l->join_name, m->cfg->mesh_name) == 0) {
            log_warn("event=mesh.join_refused name=%s reason=\"name taken "
                     "meanwhile\"",
                     l->join_name);
            mesh_conn_close(l->c, RM_E_EXISTS);
            return;
        }
    }
    if ((r = mesh_issue(m, l->join_pk, l->join_name, &ch)) != 0) {
        log_err("event=mesh.join_failed name=%s error=\"%s\"", l->join_name,
                rm_strerror(r));
        mesh_conn_close(l->c, r);
        return;
    }
    buf_init(&b, 64 * 1024);
    if (mcodec_cred_member_encode(&b, &ch) == 0)
        mesh_link_send(l, "admit", b.data, b.len);
    buf_reset(&b);
    if (mesh_take_chain(m, &ch, why, sizeof(why)) == 1 &&
        mrec_chain_encode(&b, &ch) == 0)
        mesh_flood(m, "cert", b.data, b.len, NULL);
    buf_cleanup(&b);
    log_info("event=mesh.admitted peer=%s peer_addr=%s fingerprint_pk=%s",
             l->join_name, mesh_conn_peer(l->c),
             mesh_peer_by_pk(m, l->join_pk) ? mesh_peer_by_pk(m, l->join_pk)->fp
                                            : "?");
}

static void
mesh_link_established(struct mesh_conn *c)
{
    struct mesh_link *l = mesh_conn_user(c);
    struct mesh *m = l->m;
    struct mesh_peer *p = l->p;

    switch (l->kind) {
    case LINK_OUT:
        p->backoff = MESH_BACKOFF_MIN;
        log_info("event=mesh.connected peer=%s peer_addr=%s direction=out",
                 p->name, mesh_conn_peer(c));
        mesh_link_greet(m, l);
        for (unsigned i = 0; i < p->nq; i++)
            mesh_link_send(l, p->q[i].type, p->q[i].body, p->q[i].len);
        mesh_peer_qclear(p);
        /* Mail held for its domains can go now, not at its next try. */
        if (p->rec != NULL && p->rec->n_domains > 0 && m->n->queue != NULL)
            node_queue_mesh_ready(m->n->queue);
        if (m->repl != NULL)
            mesh_repl_link_up(m->repl, l->id, p->pk);
        break;
    case LINK_IN:
        log_info("event=mesh.connected peer=%s peer_addr=%s direction=in",
                 p->name, mesh_conn_peer(c));
        /* Heard from: dial back now if our own link is down. */
        if (p->out == NULL) {
            p->backoff = MESH_BACKOFF_MIN;
            p->dial_at = 0;
            mesh_dial(m, p);
        }
        break;
    case LINK_JOIN_IN: {
        uint8_t key[5 + MREC_INVITE_ID];
        struct store_mesh_write w = {STORE_MESH_TAKE, key, sizeof(key), NULL,
                                     0};
        memcpy(key, "inv/", 4);
        memcpy(key + 4, l->join_id, MREC_INVITE_ID);
        w.klen = 4 + MREC_INVITE_ID;
        l->join_taking = 1;
        if (store_mesh_apply(m->n->store, &w, 1, mesh_admit_stored, l) != 0) {
            l->join_taking = 0;
            mesh_conn_close(c, RM_E_STORE);
        } else {
            m->store_pending++;
        }
        break;
    }
    case LINK_JOIN_OUT:
        log_info("event=mesh.join_connected inviter=%s peer_addr=%s",
                 m->join_tok.inviter_name, mesh_conn_peer(c));
        break;
    case LINK_IN_UNKNOWN:
        mesh_conn_close(c, RM_E_PERM); /* verify sets the kind */
        break;
    }
}

static void
mesh_link_closed(struct mesh_conn *c, int reason, const char *why)
{
    struct mesh_link *l = mesh_conn_user(c);
    struct mesh *m;
    struct mesh_peer *p;

    if (l == NULL)
        return;
    m = l->m;
    p = l->p;
    l->c = NULL;
    mesh_link_uncount(l);
    if (m->xfer != NULL)
        mesh_xfer_link_closed(m->xfer, l->id);
    if (l->kind == LINK_JOIN_IN && !l->join_taking) {
        int i = mesh_invite_find(m, l->join_id);

        if (i >= 0)
            m->inv[i].taken = 0; /* never consumed: usable again */
    }
    if (l->kind == LINK_OUT && p != NULL && p->out == l) {
        p->out = NULL;
        mesh_peer_qclear(p);
        if (!m->closing) {
            uint64_t max = 2 * (uint64_t)m->prof.probe_interval_ms;

            p->dial_at = uv_now(m->loop) + mesh_jitter(p->backoff);
            p->backoff = p->backoff * 2 > max ? max : p->backoff * 2;
        }
        log_debug("event=mesh.link_closed peer=%s reason=\"%s\"", p->name,
                  why && why[0] ? why : rm_strerror(reason));
    } else if (l->kind == LINK_JOIN_OUT && !m->closing && m->join.cb &&
               !m->member) {
        if (reason == RM_E_CLOSED || reason == UV_ECONNRESET)
            snprintf(m->join_err, sizeof(m->join_err),
                     "%s refused the token (already used, expired, "
                     "cancelled, or this node was removed from the mesh; "
                     "its log says which); ask for a new invite",
                     m->join_tok.inviter_name);
        else
            snprintf(m->join_err, sizeof(m->join_err),
                     "could not join through %s: %s", m->join_tok.inviter_name,
                     why && why[0] ? why : rm_strerror(reason));
        mesh_join_try(m);
    }
    if (l->join_taking)
        return; /* mesh_admit_stored frees it */
    mesh_link_unlink(l);
    mesh_maybe_free(m);
}

/* ---- frames ----------------------------------------------------------- */

/* The revocation of p, after its signer's chain, on link l or (l NULL)
   to peer `to`. */
static void
mesh_send_rev(struct mesh *m, struct mesh_link *l, struct mesh_peer *to,
              const struct mesh_peer *p)
{
    struct buf b;
    const struct mesh_peer *by = NULL;

    buf_init(&b, 64 * 1024);
    if (mesh_is_self(m, p->rev_by))
        mrec_chain_encode(&b, &m->chain);
    else if ((by = mesh_peer_by_pk(m, p->rev_by)) != NULL && by->chain_raw.len)
        buf_append(&b, by->chain_raw.data, by->chain_raw.len);
    if (b.len > 0) {
        if (l != NULL)
            mesh_link_send(l, "cert", b.data, b.len);
        else
            mesh_peer_send(m, to, "cert", b.data, b.len);
    }
    if (l != NULL)
        mesh_link_send(l, "rev", p->rev_raw.data, p->rev_raw.len);
    else
        mesh_peer_send(m, to, "rev", p->rev_raw.data, p->rev_raw.len);
    buf_cleanup(&b);
}

static void
mesh_send_pp(struct mesh *m, struct mesh_link *l, int want_reply)
{
    struct mrec_pp_entry *e;
    unsigned n, k = 0;
    struct buf b;

    if (m->swim == NULL)
        return;
    /* Every revocation rides with a push/pull request, each after its
       signer's chain (a receiver may not know the signer yet). */
    if (want_reply)
        for (struct mesh_peer *p = m->peers; p; p = p->next)
            if (p->revoked && p->rev_raw.len)
                mesh_send_rev(m, l, NULL, p);
    n = swim_member_count(m->swim);
    if ((e = calloc(n, sizeof(*e))) == NULL)
        return;
    for (unsigned i = 0; i < n; i++) {
        const char *name;
        struct mesh_peer *p;

        if (swim_member_at(m->swim, i, &name, &e[k].state, &e[k].incarnation) !=
            0)
            break;
        snprintf(e[k].name, sizeof(e[k].name), "%s", name);
        if (i == 0) {
            e[k].record_version = m->record_version;
        } else {
            p = mesh_peer_by_name(m, name);
            if (p == NULL)
                continue;
            e[k].record_version = p->rec ? p->rec->version : 0;
        }
        k++;
    }
    buf_init(&b, FRAME_MSG_MAX);
    if (mrec_pp_encode(&b, want_reply, e, k) == 0)
        mesh_link_send(l, "pp", b.data, b.len);
    buf_cleanup(&b);
    free(e);
}

static void
mesh_send_member_state(struct mesh *m, struct mesh_link *l,
                       const struct mesh_peer *p)
{
    if (p->chain_raw.len)
        mesh_link_send(l, "cert", p->chain_raw.data, p->chain_raw.len);
    if (p->rec_raw.len)
        mesh_link_send(l, "node", p->rec_raw.data, p->rec_raw.len);
}

static void
mesh_on_pp(struct mesh *m, struct mesh_link *l, const msgpack_object *body)
{
    struct mrec_pp_entry *e;
    struct swim_msg sm;
    size_t n = 0;
    int want = 0;

    if ((e = calloc(SWIM_MEMBERS_MAX, sizeof(*e))) == NULL)
        return;
    if (mrec_pp_decode_obj(body, &want, e, SWIM_MEMBERS_MAX, &n) != 0) {
        m->rx_invalid++;
        log_warn("event=mesh.bad_frame type=pp peer=%s", l->p->name);
        free(e);
        return;
    }
    /* What they lack or hold older: send it on this link, ours too. */
    {
        size_t i;

        for (i = 0; i < n; i++)
            if (strcmp(e[i].name, m->cfg->mesh_name) == 0)
                break;
        if (i == n || e[i].record_version < m->record_version) {
            struct buf b;

            buf_init(&b, 64 * 1024);
            if (mrec_chain_encode(&b, &m->chain) == 0)
                mesh_link_send(l, "cert", b.data, b.len);
            buf_cleanup(&b);
            if (m->self_rec_raw.len)
                mesh_link_send(l, "node", m->self_rec_raw.data,
                               m->self_rec_raw.len);
        }
    }
    for (struct mesh_peer *p = m->peers; p; p = p->next) {
        size_t i;

        if (p->revoked || !p->has_chain || p == l->p)
            continue;
        for (i = 0; i < n; i++)
            if (strcmp(e[i].name, p->name) == 0)
                break;
        if (i == n || (p->rec && e[i].record_version < p->rec->version))
            mesh_send_member_state(m, l, p);
    }
    /* Merge their view into SWIM (memberlist's mergeState: a remote
       "dead" is taken as a suspicion, so a stale view cannot kill). */
    memset(&sm, 0, sizeof(sm));
    sm.type = SWIM_MSG_GOSSIP;
    snprintf(sm.from, sizeof(sm.from), "%s", l->p->name);
    for (size_t i = 0; i < n; i++) {
        struct swim_update *u;

        if (strcmp(e[i].name, m->cfg->mesh_name) != 0 &&
            mesh_peer_by_name(m, e[i].name) == NULL)
            continue; /* unknown: its cert and record come first */
        u = &sm.updates[sm.n_updates++];
        snprintf(u->name, sizeof(u->name), "%s", e[i].name);
        snprintf(u->from, sizeof(u->from), "%s", l->p->name);
        u->incarnation = e[i].incarnation;
        u->state = e[i].state == SWIM_DEAD ? SWIM_SUSPECT : e[i].state;
        if (sm.n_updates == SWIM_PIGGYBACK_MAX || i + 1 == n) {
            swim_receive(m->swim, &sm, uv_now(m->loop));
            sm.n_updates = 0;
        }
    }
    if (sm.n_updates)
        swim_receive(m->swim, &sm, uv_now(m->loop));
    mesh_swim_rearm(m);
    if (want)
        mesh_send_pp(m, l, 0);
    free(e);
}

static void
mesh_on_swim(struct mesh *m, struct mesh_link *l, const msgpack_object *body)
{
    struct swim_msg sm;
    unsigned k = 0;

    if (mrec_swim_decode_obj(body, &sm) != 0 ||
        strcmp(sm.from, l->p->name) != 0) {
        m->rx_invalid++;
        log_warn("event=mesh.bad_frame type=swim peer=%s", l->p->name);
        return;
    }
    /* Updates about members we cannot verify, or revoked ones, are
       dropped: membership is decided by certificates, not by gossip. */
    for (unsigned i = 0; i < sm.n_updates; i++) {
        const char *nm = sm.updates[i].name;

        if (strcmp(nm, m->cfg->mesh_name) != 0 &&
            mesh_peer_by_name(m, nm) == NULL)
            continue;
        sm.updates[k++] = sm.updates[i];
    }
    sm.n_updates = k;
    if (sm.type == SWIM_MSG_ACK && sm.seq == l->p->ping_seq &&
        l->p->ping_at_ns != 0) {
        l->p->rtt_ms = (double)(uv_hrtime() - l->p->ping_at_ns) / 1e6;
        l->p->ping_at_ns = 0;
    }
    swim_receive(m->swim, &sm, uv_now(m->loop));
    mesh_swim_rearm(m);
}

static void
mesh_on_cert(struct mesh *m, struct mesh_link *l, const msgpack_object *body)
{
    struct mrec_chain ch;
    char why[200] = "";
    int r;

    if (mrec_chain_decode_obj(body, &ch) != 0) {
        m->rx_invalid++;
        log_warn("event=mesh.bad_frame type=cert peer=%s", l->p->name);
        return;
    }
    r = mesh_take_chain(m, &ch, why, sizeof(why));
    if (r < 0) {
        log_warn("event=mesh.cert_refused from=%s about=%s reason=\"%s\"",
                 l->p->name, ch.c[0].name, why);
        return;
    }
    if (r == 1) {
        struct mesh_peer *p = mesh_peer_by_pk(m, ch.c[0].node_pk);

        if (p != NULL)
            mesh_flood(m, "cert", p->chain_raw.data, p->chain_raw.len, l->p);
        else
            mesh_chain_flood_self(m);
    }
}

static void
mesh_on_node(struct mesh *m, struct mesh_link *l, const msgpack_object *body)
{
    struct mrec_node *rec = NULL;
    struct buf raw;
    char why[200] = "";
    int r;

    if (mrec_node_decode_obj(body, &rec) != 0) {
        m->rx_invalid++;
        log_warn("event=mesh.bad_frame type=node peer=%s", l->p->name);
        return;
    }
    buf_init(&raw, FRAME_MSG_MAX);
    if (mrec_node_encode(&raw, rec) != 0) {
        mrec_node_free(rec);
        buf_cleanup(&raw);
        return;
    }
    r = mesh_take_record(m, rec, raw.data, raw.len, why, sizeof(why));
    if (r < 0)
        log_warn("event=mesh.record_refused from=%s reason=\"%s\"", l->p->name,
                 why);
    if (r == 1)
        mesh_flood(m, "node", raw.data, raw.len, l->p);
    else
        mrec_node_free(rec);
    buf_cleanup(&raw);
}

static void
mesh_on_rev(struct mesh *m, struct mesh_link *l, const msgpack_object *body)
{
    struct mrec_revoke rv;
    struct buf raw;
    char why[200] = "";
    int r;

    if (mrec_revoke_decode_obj(body, &rv) != 0) {
        m->rx_invalid++;
        return;
    }
    buf_init(&raw, 4096);
    if (mrec_revoke_encode(&raw, &rv) == 0) {
        struct mesh_peer *from = l->p;

        r = mesh_take_revoke(m, &rv, raw.data, raw.len, why, sizeof(why));
        if (r < 0)
            log_warn("event=mesh.revoke_refused reason=\"%s\"", why);
        else if (r == 1 && m->member)
            mesh_flood_rev(m, mesh_peer_by_pk(m, rv.node_pk), from);
    }
    buf_cleanup(&raw);
}

static void
mesh_on_renew(struct mesh *m, struct mesh_link *l)
{
    struct mrec_chain ch;
    struct buf b;
    char why[160];

    if (mrec_chain_verify(&l->p->chain, m->mesh_id, m->root_pk, mesh_wall_s(),
                          mesh_is_revoked_cb, m, why, sizeof(why)) != 0) {
        log_warn("event=mesh.renew_refused peer=%s reason=\"%s\"", l->p->name,
                 why);
        mesh_conn_close(l->c, RM_E_PERM);
        return;
    }
    if (mesh_issue(m, l->p->pk, l->p->name, &ch) != 0)
        return;
    buf_init(&b, 64 * 1024);
    if (mrec_chain_encode(&b, &ch) == 0) {
        mesh_link_send(l, "cert", b.data, b.len);
        mesh_take_chain(m, &ch, why, sizeof(why));
    }
    buf_cleanup(&b);
    log_info("event=mesh.renewed_for peer=%s", l->p->name);
}

static void mesh_join_admitted(struct mesh *m, struct mesh_link *l,
                               const msgpack_object *body);

static int
mesh_type_is(const struct frame_msg *fm, const char *t)
{
    size_t n = strlen(t);

    return fm->type_is_str && fm->type_len == n && memcmp(fm->type, t, n) == 0;
}

static void
mesh_link_drained(struct mesh_conn *c)
{
    struct mesh_link *l = mesh_conn_user(c);

    if (l != NULL && l->m->repl != NULL && !l->m->closing)
        mesh_repl_drained(l->m->repl, l->id);
}

static void
mesh_link_frame(struct mesh_conn *c, const struct frame_msg *fm)
{
    struct mesh_link *l = mesh_conn_user(c);
    struct mesh *m = l->m;

    m->frames_in++;
    if (mesh_type_is(fm, "ka"))
        goto contact;
    if (l->kind == LINK_JOIN_OUT) {
        if (mesh_type_is(fm, "admit"))
            mesh_join_admitted(m, l, fm->body);
        return;
    }
    if ((l->kind != LINK_OUT && l->kind != LINK_IN) || l->p == NULL ||
        l->p->revoked || !m->member)
        return;
    if (mesh_type_is(fm, "swim") && m->swim != NULL)
        mesh_on_swim(m, l, fm->body);
    else if (mesh_type_is(fm, "pp") && m->swim != NULL)
        mesh_on_pp(m, l, fm->body);
    else if (mesh_type_is(fm, "cert"))
        mesh_on_cert(m, l, fm->body);
    else if (mesh_type_is(fm, "node"))
        mesh_on_node(m, l, fm->body);
    else if (mesh_type_is(fm, "rev"))
        mesh_on_rev(m, l, fm->body);
    else if (mesh_type_is(fm, "renew"))
        mesh_on_renew(m, l);
    else if (fm->type_is_str && m->xfer != NULL &&
             mesh_xfer_frame(m->xfer, l->id, l->p->name, fm->type, fm->type_len,
                             fm->body) != 0)
        ; /* mail */
    else if (fm->type_is_str && m->repl != NULL &&
             mesh_repl_frame(m->repl, l->id, l->p->pk, fm->type, fm->type_len,
                             fm->body) != 0)
        ; /* replication */
    else
        log_debug("event=mesh.frame_ignored peer=%s type=%.*s", l->p->name,
                  (int)fm->type_len, fm->type_is_str ? fm->type : "?");
contact:
    if (l->p != NULL)
        l->p->last_contact_ms = mesh_wall_ms();
}

/* ---- listener ---------------------------------------------------------- */

static void
mesh_reject_closed(uv_handle_t *h)
{
    free(h);
}

/* Take the pending connection off the listener and close it (libuv stops
   watching a listener whose callback accepted nothing). */
static void
mesh_reject(uv_stream_t *srv)
{
    uv_tcp_t *t = malloc(sizeof(*t));

    if (t == NULL)
        return;
    uv_tcp_init(srv->loop, t);
    if (uv_accept(srv, (uv_stream_t *)t) != 0) {
        uv_close((uv_handle_t *)t, mesh_reject_closed);
        return;
    }
    uv_close((uv_handle_t *)t, mesh_reject_closed);
}

static void
mesh_link_uncount(struct mesh_link *l)
{
    if (l->counted) {
        l->counted = 0;
        l->m->handshakes_in--;
    }
}

static void
mesh_accept_cb(uv_stream_t *srv, int status)
{
    struct mesh *m = srv->data;
    struct mesh_conn_opts o;
    struct mesh_link *l;
    struct buf cred;
    int r;

    if (status != 0)
        return;
    if (m->closing || m->handshakes_in >= MESH_HANDSHAKES_MAX) {
        if (!m->closing)
            log_warn("event=mesh.busy handshakes=%u msg=\"too many "
                     "connections not yet verified; one refused\"",
                     m->handshakes_in);
        mesh_reject(srv);
        return;
    }
    if ((l = mesh_link_new(m, LINK_IN_UNKNOWN, NULL)) == NULL) {
        mesh_reject(srv);
        return;
    }
    l->counted = 1;
    m->handshakes_in++;
    buf_init(&cred, MESH_CONN_CRED_MAX);
    if (m->member)
        mesh_cred_member(m, &cred);
    mesh_conn_opts(m, &o, &cred);
    r = mesh_conn_accept(srv, &o, &mesh_cbs, l, &l->c);
    buf_cleanup(&cred);
    if (r != 0) {
        mesh_link_uncount(l);
        mesh_link_unlink(l);
        mesh_reject(srv);
        return;
    }
}

static int
mesh_listen(struct mesh *m, char *err, size_t errsz)
{
    const struct node_config *cfg = m->cfg;

    for (size_t i = 0; i < cfg->nmesh_listen; i++) {
        uv_tcp_t *t = &m->listeners[m->nlisteners];
        int r;

        uv_tcp_init(m->loop, t);
        t->data = m;
        m->nlisteners++;
        r = uv_tcp_bind(t, (const struct sockaddr *)&cfg->mesh_listen[i].addr,
                        0);
        if (r == 0)
            r = uv_listen((uv_stream_t *)t, 128, mesh_accept_cb);
        if (r != 0) {
            snprintf(err, errsz, "cannot listen for the mesh on %s: %s",
                     cfg->mesh_listen[i].text, uv_strerror(r));
            return r;
        }
        log_info("event=listen service=mesh addr=%s", cfg->mesh_listen[i].text);
    }
    return 0;
}

/* ---- housekeeping --------------------------------------------------- */

static void
mesh_house_cb(uv_timer_t *t)
{
    struct mesh *m = t->data;
    uint64_t now = uv_now(m->loop);
    int64_t wall = mesh_wall_s();

    if (m->closing)
        return;
    if (m->xfer != NULL)
        mesh_xfer_tick(m->xfer);
    if (m->repl != NULL)
        mesh_repl_tick(m->repl);
    if (m->join.cb != NULL && !m->member && now >= m->join_deadline)
        mesh_join_finish(m, RM_E_AGAIN, "%s",
                         m->join_err[0] ? m->join_err
                                        : "no answer from the inviting node");
    /* Expired invites are forgotten. */
    for (unsigned i = 0; i < m->ninv;) {
        if (m->inv[i].expires <= wall && !m->inv[i].taken) {
            char key[4 + MREC_INVITE_ID];
            size_t klen;

            mesh_key(key, "inv/", m->inv[i].id, MREC_INVITE_ID, &klen);
            struct store_mesh_write w = {STORE_MESH_DEL, key, klen, NULL, 0};
            store_mesh_apply(m->n->store, &w, 1, mesh_store_cb,
                             (void *)"invite_expire");
            m->inv[i] = m->inv[--m->ninv];
            continue;
        }
        i++;
    }
    if (!m->member || m->swim == NULL)
        return;
    mesh_recheck_links(m, 0);
    /* Dead (and never connected) members are still dialed, at the
       backoff's pace: that is how a healed link is found. */
    for (struct mesh_peer *p = m->peers; p; p = p->next) {
        if (p->revoked || !p->has_chain || p->out != NULL || now < p->dial_at ||
            (p->rec == NULL && p->n_hint == 0))
            continue;
        mesh_dial(m, p);
    }
    /* Periodic push/pull with a random connected member. */
    if (now >= m->next_pp) {
        struct mesh_link *pick = NULL;
        unsigned seen = 0;

        for (struct mesh_peer *p = m->peers; p; p = p->next)
            if (p->out != NULL && mesh_conn_is_up(p->out->c) &&
                randombytes_uniform(++seen) == 0)
                pick = p->out;
        if (pick != NULL)
            mesh_send_pp(m, pick, 1);
        m->next_pp = now + mesh_jitter(m->pp_interval_ms);
    }
    /* Renew our membership at half-life. */
    {
        const struct mrec_cert *c = &m->chain.c[0];
        int64_t eff = mesh_chain_expires(&m->chain);

        if (wall >= c->issued + (eff - c->issued) / 2 && now >= m->next_renew) {
            /* Ask again before it is too late: an answer may not extend
               the chain yet (the issuer's own certificate renews on its
               own clock), so retry within a quarter of what is left. */
            uint64_t left_ms = eff > wall ? (uint64_t)(eff - wall) * 1000 : 0;

            m->next_renew = now + (left_ms / 4 < MESH_RENEW_EVERY
                                       ? (left_ms / 4 > 250 ? left_ms / 4 : 250)
                                       : MESH_RENEW_EVERY);
            if (m->chain.n == 1) {
                struct mrec_chain ch;

                m->chain.n = 0; /* issue under nothing: self-signed */
                if (mesh_issue(m, m->n->id.pk, m->cfg->mesh_name, &ch) == 0) {
                    m->chain = ch;
                    memcpy(m->root_pk, m->n->id.pk, MREC_PK);
                    mesh_save_self(m, NULL, NULL);
                    mesh_chain_flood_self(m);
                    log_info("event=mesh.membership_renewed expires=%" PRId64
                             " root=yes",
                             ch.c[0].expires);
                } else {
                    m->chain.n = 1;
                }
            } else {
                struct mesh_peer *best = NULL;

                for (struct mesh_peer *p = m->peers; p; p = p->next)
                    if (p->out && mesh_conn_is_up(p->out->c) && p->has_chain &&
                        p->chain.n < MREC_CHAIN_MAX &&
                        (best == NULL || p->chain.n < best->chain.n))
                        best = p;
                if (best != NULL) {
                    m->renew_asked = 1;
                    mesh_link_send(best->out, "renew", "\xc0", 1);
                }
            }
        }
    }
}

/* ---- join ------------------------------------------------------------- */

/* A store callback that holds m: 1 when the node is closing (m may be
   freed now; do nothing more). */
static int
mesh_store_returned(struct mesh *m)
{
    m->store_pending--;
    if (!m->closing)
        return 0;
    mesh_maybe_free(m);
    return 1;
}

static void
mesh_pending_done(struct mesh_pending *pd, int status, const char *err,
                  struct ctl_enc *data)
{
    mesh_ctl_cb cb = pd->cb;
    void *arg = pd->arg;

    pd->cb = NULL;
    pd->arg = NULL;
    if (cb != NULL)
        cb(arg, status, err, data);
}

static void
mesh_join_finish(struct mesh *m, int status, const char *fmt, ...)
{
    char err[300] = "";
    struct ctl_enc e;
    va_list ap;

    if (fmt != NULL) {
        va_start(ap, fmt);
        vsnprintf(err, sizeof(err), fmt, ap);
        va_end(ap);
    }
    for (struct mesh_link *l = m->links; l; l = l->next)
        if (l->kind == LINK_JOIN_OUT && l->c != NULL)
            mesh_conn_close(l->c, 0);
    ctl_enc_init(&e, 0);
    if (status == 0) {
        char id[MREC_MESHID * 2 + 1];

        mesh_hex(m->mesh_id, MREC_MESHID, id);
        ctl_enc_map(&e, 4);
        ctl_enc_kstr(&e, "mesh", id);
        ctl_enc_kstr(&e, "name", m->cfg->mesh_name);
        ctl_enc_kstr(&e, "inviter", m->join_tok.inviter_name);
        ctl_enc_ki64(&e, "expires", m->chain.c[0].expires);
        log_info("event=mesh.joined mesh=%s inviter=%s", id,
                 m->join_tok.inviter_name);
    } else {
        log_warn("event=mesh.join_failed reason=\"%s\"", err);
    }
    mesh_pending_done(&m->join, status, err, &e);
    ctl_enc_cleanup(&e);
}

static void
mesh_join_try(struct mesh *m)
{
    struct sockaddr_storage ss;
    struct mesh_conn_opts o;
    struct mesh_link *l;
    struct buf cred;
    int r;

    while (m->join_addr < m->join_tok.n_addrs) {
        const char *a = m->join_tok.addrs[m->join_addr++];

        if (mesh_parse_addr(a, &ss) != 0)
            continue;
        if ((l = mesh_link_new(m, LINK_JOIN_OUT, NULL)) == NULL)
            break;
        buf_init(&cred, MESH_CONN_CRED_MAX);
        r = mcodec_cred_join_encode(&cred, m->invite_text, m->n->id.pk,
                                    m->cfg->mesh_name);
        if (r == 0) {
            mesh_conn_opts(m, &o, &cred);
            o.hs_timeout_ms = 5000;
            r = mesh_conn_connect(m->loop, (struct sockaddr *)&ss, &o,
                                  &mesh_cbs, l, &l->c);
        }
        buf_cleanup(&cred);
        if (r == 0) {
            log_info("event=mesh.join_dial inviter=%s addr=%s",
                     m->join_tok.inviter_name, a);
            return;
        }
        mesh_link_unlink(l);
    }
    mesh_join_finish(m, RM_E_AGAIN, "%s",
                     m->join_err[0] ? m->join_err
                                    : "cannot reach the inviting node at any "
                                      "address in the token");
}

static void
mesh_join_saved(void *arg, int status)
{
    struct mesh *m = arg;

    if (mesh_store_returned(m))
        return;

    if (status != 0) {
        m->member = 0;
        mesh_join_finish(m, status, "cannot save the membership: %s",
                         rm_strerror(status));
        return;
    }
    mesh_join_finish(m, 0, NULL);
    if (m->closing)
        return;
    if (mesh_swim_start(m) != 0) {
        log_err("event=mesh.swim_failed");
        return;
    }
    mesh_publish_record(m);
    {
        struct mesh_peer *p = mesh_peer_by_pk(m, m->join_tok.inviter_pk);

        if (p != NULL)
            mesh_dial(m, p); /* as a member now: greet, push/pull */
    }
}

static void
mesh_join_admitted(struct mesh *m, struct mesh_link *l,
                   const msgpack_object *body)
{
    struct mcodec_cred *cr;
    char why[200] = "";
    int r;

    (void)l;
    if (m->join.cb == NULL || m->member)
        return;
    if ((cr = malloc(sizeof(*cr))) == NULL)
        return;
    r = RM_E_PROTO;
    if (mcodec_cred_decode_obj(body, cr) == 0 &&
        cr->kind == MCODEC_CRED_MEMBER &&
        memcmp(cr->chain.c[0].node_pk, m->n->id.pk, MREC_PK) == 0)
        r = mrec_chain_verify(&cr->chain, m->join_tok.mesh_id,
                              m->join_tok.root_pk, mesh_wall_s(), NULL, NULL,
                              why, sizeof(why));
    if (r != 0) {
        mesh_join_finish(m, RM_E_PROTO,
                         "the inviter's admission is invalid: %s",
                         why[0] ? why : rm_strerror(r));
        free(cr);
        return;
    }
    memcpy(m->mesh_id, m->join_tok.mesh_id, MREC_MESHID);
    memcpy(m->root_pk, m->join_tok.root_pk, MREC_PK);
    m->chain = cr->chain;
    free(cr);
    m->member = 1;
    /* The inviter: its chain is the tail of ours; its record comes
       when we dial it, at the token's addresses. */
    {
        /* Rebuild the inviter's whole chain from ours. */
        struct mrec_chain ic;

        ic.n = m->chain.n - 1;
        memcpy(ic.c, &m->chain.c[1], ic.n * sizeof(ic.c[0]));
        mesh_take_chain(m, &ic, why, sizeof(why));
    }
    {
        struct mesh_peer *p = mesh_peer_by_pk(m, m->join_tok.inviter_pk);

        if (p != NULL) {
            p->n_hint = m->join_tok.n_addrs;
            memcpy(p->hint, m->join_tok.addrs, sizeof(p->hint));
            /* Kept until its record comes, across restarts too. */
            mesh_put(m, "hint/", p->pk, MREC_PK, m->invite_text,
                     strlen(m->invite_text), "hint", NULL, NULL);
        }
    }
    if ((r = mesh_save_self(m, mesh_join_saved, m)) == 0)
        m->store_pending++;
    else {
        m->member = 0;
        mesh_join_finish(m, r, "cannot save the membership: %s",
                         rm_strerror(r));
    }
}

/* ---- control commands ------------------------------------------------- */

static void
mesh_create_saved(void *arg, int status)
{
    struct mesh *m = arg;
    struct ctl_enc e;
    char id[MREC_MESHID * 2 + 1];

    if (mesh_store_returned(m))
        return;

    ctl_enc_init(&e, 0);
    if (status != 0) {
        m->member = 0;
        mesh_pending_done(&m->create, status, "cannot save the new mesh", &e);
        ctl_enc_cleanup(&e);
        return;
    }
    mesh_hex(m->mesh_id, MREC_MESHID, id);
    log_info("event=mesh.created mesh=%s name=%s", id, m->cfg->mesh_name);
    ctl_enc_map(&e, 3);
    ctl_enc_kstr(&e, "mesh", id);
    ctl_enc_kstr(&e, "name", m->cfg->mesh_name);
    ctl_enc_ki64(&e, "expires", m->chain.c[0].expires);
    mesh_pending_done(&m->create, 0, NULL, &e);
    ctl_enc_cleanup(&e);
    if (!m->closing && mesh_swim_start(m) == 0)
        mesh_publish_record(m);
}

static int
mesh_cmd_create(struct mesh *m, char *err, size_t errsz, mesh_ctl_cb cb,
                void *arg)
{
    struct mrec_chain ch;
    int r;

    if (m->member) {
        char id[MREC_MESHID * 2 + 1];

        mesh_hex(m->mesh_id, MREC_MESHID, id);
        snprintf(err, errsz, "this node is already in mesh %s", id);
        return RM_E_EXISTS;
    }
    if (m->join.cb != NULL || m->create.cb != NULL) {
        snprintf(err, errsz, "a create or join is already in progress");
        return RM_E_AGAIN;
    }
    randombytes_buf(m->mesh_id, MREC_MESHID);
    memcpy(m->root_pk, m->n->id.pk, MREC_PK);
    m->chain.n = 0;
    if ((r = mesh_issue(m, m->n->id.pk, m->cfg->mesh_name, &ch)) != 0) {
        snprintf(err, errsz, "cannot sign the certificate: %s", rm_strerror(r));
        return r;
    }
    m->chain = ch;
    m->member = 1;
    m->create.cb = cb;
    m->create.arg = arg;
    if ((r = mesh_save_self(m, mesh_create_saved, m)) == 0)
        m->store_pending++;
    else {
        m->member = 0;
        m->create.cb = NULL;
        snprintf(err, errsz, "cannot save the new mesh: %s", rm_strerror(r));
        return r;
    }
    return 1;
}

static int
mesh_self_addrs(struct mesh *m, char addrs[MREC_ADDRS_MAX][MREC_ADDR_MAX],
                unsigned *n)
{
    size_t nl;
    const struct node_listen *l = mesh_advertised(m->cfg, &nl);

    *n = 0;
    for (size_t i = 0; i < nl && i < MREC_ADDRS_MAX; i++)
        snprintf(addrs[(*n)++], MREC_ADDR_MAX, "%.127s", l[i].text);
    return *n ? 0 : RM_E_CONFIG;
}

static void
mesh_invite_saved(void *arg, int status)
{
    struct mesh *m = arg;
    struct ctl_enc e;

    if (mesh_store_returned(m))
        return;

    ctl_enc_init(&e, 0);
    if (status == 0) {
        ctl_enc_map(&e, 1);
        ctl_enc_kstr(&e, "token", m->invite_text);
    } else {
        int i = mesh_invite_find(m, m->invite_id);

        if (i >= 0)
            m->inv[i] = m->inv[--m->ninv];
    }
    mesh_pending_done(&m->invite, status,
                      status ? "cannot save the invite" : NULL, &e);
    ctl_enc_cleanup(&e);
}

static int
mesh_cmd_invite(struct mesh *m, const struct ctl_obj *args, char *err,
                size_t errsz, mesh_ctl_cb cb, void *arg)
{
    struct mrec_invite tok;
    struct mesh_invite *iv;
    uint64_t secs = 3600;
    char name[MREC_NAME_MAX] = "";
    struct buf b;
    int r;

    if (!m->member) {
        snprintf(err, errsz,
                 "this node is not in a mesh; run `relaymesh mesh "
                 "create` first, or join one");
        return RM_E_PERM;
    }
    if (m->invite.cb != NULL) {
        snprintf(err, errsz, "another invite is being made; try again");
        return RM_E_AGAIN;
    }
    if (ctl_obj_get(args, "expires") != NULL &&
        (ctl_obj_get_u64(args, "expires", &secs) != 0 || secs == 0 ||
         secs > 30 * 86400)) {
        snprintf(err, errsz, "--expires must be between 1s and 30d");
        return RM_E_INVAL;
    }
    r = ctl_obj_get_str(args, "name", name, sizeof(name));
    if (r != 0 && r != RM_E_NOTFOUND) {
        snprintf(err, errsz, "--name is too long (at most 63 characters)");
        return RM_E_INVAL;
    }
    if (name[0] && (strspn(name, "abcdefghijklmnopqrstuvwxyz"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") !=
                        strlen(name) ||
                    mesh_peer_by_name(m, name) != NULL ||
                    strcmp(name, m->cfg->mesh_name) == 0)) {
        snprintf(err, errsz,
                 "\"%s\" is not a free node name (letters, "
                 "digits, '.', '-', '_'; not used in the mesh)",
                 name);
        return RM_E_INVAL;
    }
    if (m->ninv >= MESH_INVITES_MAX) {
        snprintf(err, errsz,
                 "%u invites are pending; wait for some to "
                 "expire",
                 MESH_INVITES_MAX);
        return RM_E_TOOBIG;
    }
    memset(&tok, 0, sizeof(tok));
    memcpy(tok.mesh_id, m->mesh_id, MREC_MESHID);
    memcpy(tok.root_pk, m->root_pk, MREC_PK);
    snprintf(tok.inviter_name, sizeof(tok.inviter_name), "%s",
             m->cfg->mesh_name);
    if (mesh_self_addrs(m, tok.addrs, &tok.n_addrs) != 0) {
        snprintf(err, errsz,
                 "this node has no mesh address ([mesh] listen "
                 "or advertise)");
        return RM_E_CONFIG;
    }
    randombytes_buf(tok.id, MREC_INVITE_ID);
    snprintf(tok.name, sizeof(tok.name), "%s", name);
    tok.expires = mesh_wall_s() + (int64_t)secs;
    if (mrec_invite_sign(&tok, m->n->id.sk) != 0 ||
        mrec_invite_to_text(&tok, m->invite_text, sizeof(m->invite_text)) !=
            0) {
        snprintf(err, errsz, "cannot make the token");
        return RM_E_INVAL;
    }
    iv = &m->inv[m->ninv++];
    memcpy(iv->id, tok.id, MREC_INVITE_ID);
    memcpy(m->invite_id, tok.id, MREC_INVITE_ID);
    iv->expires = tok.expires;
    snprintf(iv->name, sizeof(iv->name), "%s", name);
    iv->taken = 0;
    buf_init(&b, 4096);
    r = mcodec_invite_encode(&b, tok.expires, name);
    if (r == 0)
        r = mesh_put(m, "inv/", tok.id, MREC_INVITE_ID, b.data, b.len, NULL,
                     mesh_invite_saved, m);
    if (r == 0)
        m->store_pending++;
    buf_cleanup(&b);
    if (r != 0) {
        m->ninv--;
        snprintf(err, errsz, "cannot save the invite: %s", rm_strerror(r));
        return r;
    }
    m->invite.cb = cb;
    m->invite.arg = arg;
    log_info("event=mesh.invite expires=%" PRId64 " name=%s", tok.expires,
             name[0] ? name : "-");
    return 1;
}

static void
mesh_join_timer_cb(uv_timer_t *t)
{
    struct mesh *m = t->data;

    if (!m->closing && m->join.cb != NULL)
        mesh_join_try(m);
}

static int
mesh_cmd_join(struct mesh *m, const struct ctl_obj *args, char *err,
              size_t errsz, mesh_ctl_cb cb, void *arg)
{
    char why[200] = "";

    if (m->member) {
        snprintf(err, errsz, "this node is already in a mesh");
        return RM_E_EXISTS;
    }
    if (m->join.cb != NULL || m->create.cb != NULL) {
        snprintf(err, errsz, "a create or join is already in progress");
        return RM_E_AGAIN;
    }
    if (m->nlisteners == 0) {
        snprintf(err, errsz,
                 "this node has no mesh listener; set [mesh] "
                 "listen");
        return RM_E_CONFIG;
    }
    if (ctl_obj_get_str(args, "token", m->invite_text,
                        sizeof(m->invite_text)) != 0) {
        snprintf(err, errsz, "missing or over-long token");
        return RM_E_INVAL;
    }
    if (mrec_invite_from_text(m->invite_text, &m->join_tok, why, sizeof(why)) !=
        0) {
        snprintf(err, errsz, "%s", why[0] ? why : "not an invite token");
        return RM_E_INVAL;
    }
    if (mrec_invite_verify_sig(&m->join_tok) != 0) {
        snprintf(err, errsz,
                 "the token's signature is invalid (damaged or "
                 "forged); ask for a new invite");
        return RM_E_PERM;
    }
    if (m->join_tok.expires <= mesh_wall_s()) {
        snprintf(err, errsz, "the token expired; ask for a new invite");
        return RM_E_PERM;
    }
    if (m->join_tok.name[0] &&
        strcmp(m->join_tok.name, m->cfg->mesh_name) != 0) {
        snprintf(err, errsz,
                 "the token is for a node named \"%s\"; set "
                 "[mesh] name = %s in this node's config",
                 m->join_tok.name, m->join_tok.name);
        return RM_E_PERM;
    }
    m->join.cb = cb;
    m->join.arg = arg;
    m->join_addr = 0;
    m->join_err[0] = '\0';
    m->join_deadline = uv_now(m->loop) + MESH_JOIN_TIMEOUT;
    uv_timer_start(&m->join_timer, mesh_join_timer_cb, 0, 0);
    return 1;
}

static void
mesh_remove_saved(void *arg, int status)
{
    struct mesh *m = arg;
    struct ctl_enc e;

    if (mesh_store_returned(m))
        return;

    ctl_enc_init(&e, 0);
    if (status == 0) {
        ctl_enc_map(&e, 1);
        ctl_enc_kstr(&e, "removed", m->remove_name);
    }
    mesh_pending_done(&m->remove, status,
                      status ? "cannot save the revocation" : NULL, &e);
    ctl_enc_cleanup(&e);
}

static int
mesh_cmd_remove(struct mesh *m, const struct ctl_obj *args, char *err,
                size_t errsz, mesh_ctl_cb cb, void *arg)
{
    char node[NODE_ID_FP_LEN + MREC_NAME_MAX];
    struct mesh_peer *p = NULL;
    struct mrec_revoke rv;
    struct buf b;
    char why[200];
    int r;

    if (!m->member) {
        snprintf(err, errsz, "this node is not in a mesh");
        return RM_E_PERM;
    }
    if (m->remove.cb != NULL) {
        snprintf(err, errsz, "another remove is in progress; try again");
        return RM_E_AGAIN;
    }
    if (ctl_obj_get_str(args, "node", node, sizeof(node)) != 0) {
        snprintf(err, errsz, "missing node name or fingerprint");
        return RM_E_INVAL;
    }
    for (struct mesh_peer *q = m->peers; q; q = q->next)
        if (q->has_chain &&
            (strcmp(q->name, node) == 0 || strcasecmp(q->fp, node) == 0)) {
            if (q->revoked && p == NULL)
                p = q;
            else if (!q->revoked)
                p = q;
        }
    if (strcmp(node, m->cfg->mesh_name) == 0) {
        snprintf(err, errsz,
                 "a node cannot remove itself; run `mesh remove "
                 "%s` on another member",
                 node);
        return RM_E_INVAL;
    }
    if (p == NULL) {
        snprintf(err, errsz, "no member %s; see `relaymesh mesh peers`", node);
        return RM_E_NOTFOUND;
    }
    if (p->revoked) {
        snprintf(err, errsz, "%s is already removed", p->name);
        return RM_E_EXISTS;
    }
    if (memcmp(p->pk, m->root_pk, MREC_PK) == 0) {
        snprintf(err, errsz,
                 "%s is the mesh's first node: every membership "
                 "chains to it, so it cannot be removed",
                 p->name);
        return RM_E_PERM;
    }
    memset(&rv, 0, sizeof(rv));
    memcpy(rv.mesh_id, m->mesh_id, MREC_MESHID);
    memcpy(rv.node_pk, p->pk, MREC_PK);
    snprintf(rv.name, sizeof(rv.name), "%s", p->name);
    rv.when = mesh_wall_s();
    if (mrec_revoke_sign(&rv, m->n->id.sk) != 0) {
        snprintf(err, errsz, "cannot sign the revocation");
        return RM_E_INVAL;
    }
    snprintf(m->remove_name, sizeof(m->remove_name), "%s", p->name);
    buf_init(&b, 4096);
    r = mrec_revoke_encode(&b, &rv);
    if (r == 0) {
        r = mesh_take_revoke(m, &rv, b.data, b.len, why, sizeof(why));
        r = r < 0 ? r : 0;
        if (r == 0)
            mesh_flood_rev(m, p, p);
    }
    if (r == 0) {
        struct store_mesh_write w;
        char key[4 + MREC_PK];
        size_t klen;

        mesh_key(key, "rev/", rv.node_pk, MREC_PK, &klen);
        w = (struct store_mesh_write){STORE_MESH_PUT, key, klen, b.data, b.len};
        r = store_mesh_apply(m->n->store, &w, 1, mesh_remove_saved, m);
        if (r == 0)
            m->store_pending++;
    }
    buf_cleanup(&b);
    if (r != 0) {
        snprintf(err, errsz, "cannot revoke %s: %s", m->remove_name,
                 rm_strerror(r));
        return r;
    }
    m->remove.cb = cb;
    m->remove.arg = arg;
    return 1;
}

static void
mesh_enc_peer(struct mesh *m, struct ctl_enc *e, const struct mesh_peer *p)
{
    const struct mrec_node *rec = p->rec;

    ctl_enc_map(e, 13);
    ctl_enc_kstr(e, "name", p->name);
    ctl_enc_kbool(e, "self", 0);
    ctl_enc_kstr(e, "state", mesh_state_name(p));
    ctl_enc_kstr(e, "fingerprint", p->fp);
    ctl_enc_str(e, "addresses");
    ctl_enc_array(e, rec ? rec->n_addrs : 0);
    for (unsigned i = 0; rec && i < rec->n_addrs; i++)
        ctl_enc_str(e, rec->addrs[i]);
    ctl_enc_ku64(e, "incarnation", p->incarnation);
    ctl_enc_str(e, "last_contact");
    if (p->last_contact_ms)
        ctl_enc_double(e, (double)p->last_contact_ms / 1000.0);
    else
        ctl_enc_nil(e);
    ctl_enc_str(e, "rtt_ms");
    if (p->rtt_ms >= 0)
        ctl_enc_double(e, p->rtt_ms);
    else
        ctl_enc_nil(e);
    ctl_enc_str(e, "domains");
    ctl_enc_array(e, rec ? rec->n_domains : 0);
    for (unsigned i = 0; rec && i < rec->n_domains; i++)
        ctl_enc_str(e, rec->domains[i]);
    ctl_enc_ku64(e, "users", rec ? rec->n_users : 0);
    ctl_enc_kbool(e, "egress", rec ? rec->egress : 0);
    ctl_enc_kstr(e, "version", rec ? rec->software : "");
    ctl_enc_str(e, "state_since");
    if (p->state_since_ms)
        ctl_enc_double(e, (double)p->state_since_ms / 1000.0);
    else
        ctl_enc_nil(e);
    (void)m;
}

static void
mesh_enc_self(struct mesh *m, struct ctl_enc *e)
{
    const struct node_config *cfg = m->cfg;
    size_t nl;
    const struct node_listen *l = mesh_advertised(cfg, &nl);
    uint32_t inc = 0;

    if (m->swim != NULL)
        swim_member_get(m->swim, cfg->mesh_name, NULL, &inc);
    ctl_enc_map(e, 13);
    ctl_enc_kstr(e, "name", cfg->mesh_name);
    ctl_enc_kbool(e, "self", 1);
    ctl_enc_kstr(e, "state", "alive");
    ctl_enc_kstr(e, "fingerprint", m->n->id.fingerprint);
    ctl_enc_str(e, "addresses");
    ctl_enc_array(e, nl);
    for (size_t i = 0; i < nl; i++)
        ctl_enc_str(e, l[i].text);
    ctl_enc_ku64(e, "incarnation", inc);
    ctl_enc_str(e, "last_contact");
    ctl_enc_nil(e);
    ctl_enc_str(e, "rtt_ms");
    ctl_enc_nil(e);
    ctl_enc_str(e, "domains");
    ctl_enc_array(e, cfg->ndomains);
    for (size_t i = 0; i < cfg->ndomains; i++)
        ctl_enc_str(e, cfg->domains[i]);
    ctl_enc_ku64(e, "users", 0);
    ctl_enc_kbool(e, "egress", cfg->mesh_egress);
    ctl_enc_kstr(e, "version", "relaymesh " RM_VERSION);
    ctl_enc_str(e, "state_since");
    ctl_enc_nil(e);
}

static void
mesh_enc_peers(struct mesh *m, struct ctl_enc *e)
{
    size_t n = 1;

    for (struct mesh_peer *p = m->peers; p; p = p->next)
        n += p->has_chain;
    ctl_enc_array(e, n);
    mesh_enc_self(m, e);
    for (struct mesh_peer *p = m->peers; p; p = p->next)
        if (p->has_chain)
            mesh_enc_peer(m, e, p);
}

void
mesh_status_enc(struct mesh *m, struct ctl_enc *e)
{
    unsigned cnt[5] = {0};
    char id[MREC_MESHID * 2 + 1] = "";

    if (m == NULL) {
        ctl_enc_nil(e);
        return;
    }
    for (struct mesh_peer *p = m->peers; p; p = p->next)
        if (p->has_chain)
            cnt[p->revoked ? 4 : (unsigned)p->state]++;
    if (m->member)
        mesh_hex(m->mesh_id, MREC_MESHID, id);
    ctl_enc_map(e, 16);
    ctl_enc_str(e, "replication");
    mesh_repl_status_enc(m->repl, e);
    ctl_enc_kbool(e, "member", m->member);
    ctl_enc_ku64(e, "health", m->swim ? swim_awareness(m->swim) : 0);
    ctl_enc_kstr(e, "mesh", id);
    ctl_enc_kstr(e, "name", m->cfg->mesh_name);
    ctl_enc_kstr(e, "profile",
                 m->cfg->mesh_profile == NODE_MESH_WAN ? "wan" : "lan");
    ctl_enc_ki64(e, "expires", m->member ? m->chain.c[0].expires : 0);
    ctl_enc_ku64(e, "chain", m->member ? m->chain.n : 0);
    ctl_enc_kbool(e, "root",
                  m->member && memcmp(m->root_pk, m->n->id.pk, MREC_PK) == 0);
    ctl_enc_ku64(e, "alive", cnt[SWIM_ALIVE]);
    ctl_enc_ku64(e, "suspect", cnt[SWIM_SUSPECT]);
    ctl_enc_ku64(e, "dead", cnt[SWIM_DEAD]);
    ctl_enc_ku64(e, "left", cnt[SWIM_LEFT]);
    ctl_enc_ku64(e, "revoked", cnt[4]);
    ctl_enc_ku64(e, "refused", m->refused);
    ctl_enc_ku64(e, "invites", m->ninv);
}

int
mesh_ctl(struct mesh *m, const char *cmd, const struct ctl_obj *args,
         struct ctl_enc *data, char *err, size_t errsz, mesh_ctl_cb cb,
         void *arg)
{
    if (m == NULL || m->closing) {
        snprintf(err, errsz, "the mesh service is not running");
        return RM_E_CLOSED;
    }
    if (strcmp(cmd, "mesh.create") == 0)
        return mesh_cmd_create(m, err, errsz, cb, arg);
    if (strcmp(cmd, "mesh.invite") == 0)
        return mesh_cmd_invite(m, args, err, errsz, cb, arg);
    if (strcmp(cmd, "mesh.join") == 0)
        return mesh_cmd_join(m, args, err, errsz, cb, arg);
    if (strcmp(cmd, "mesh.remove") == 0)
        return mesh_cmd_remove(m, args, err, errsz, cb, arg);
    if (strcmp(cmd, "mesh.peers") == 0) {
        ctl_enc_map(data, 2);
        ctl_enc_kbool(data, "member", m->member);
        ctl_enc_str(data, "peers");
        mesh_enc_peers(m, data);
        return 0;
    }
    if (strcmp(cmd, "mesh.status") == 0) {
        ctl_enc_map(data, 2);
        ctl_enc_str(data, "mesh");
        mesh_status_enc(m, data);
        ctl_enc_str(data, "peers");
        mesh_enc_peers(m, data);
        return 0;
    }
    snprintf(err, errsz, "unknown mesh command %s", cmd);
    return RM_E_INVAL;
}

void
mesh_ctl_cancel(struct mesh *m, void *arg)
{
    struct mesh_pending *pds[] = {&m->join, &m->create, &m->invite, &m->remove};

    if (m == NULL)
        return;
    for (size_t i = 0; i < sizeof(pds) / sizeof(pds[0]); i++)
        if (pds[i]->arg == arg) {
            pds[i]->cb = NULL;
            pds[i]->arg = NULL;
        }
}

/* ---- start and stop --------------------------------------------------- */

static int
mesh_load_cb(void *arg, const void *key, size_t klen, const void *val,
             size_t vlen)
{
    struct mesh *m = arg;
    char why[200] = "";

    if (klen == 4 && memcmp(key, "self", 4) == 0)
        return 0;
    if (klen == 5 + MREC_PK && memcmp(key, "cert/", 5) == 0) {
        struct mrec_chain ch;

        if (mrec_chain_decode_bytes(val, vlen, &ch) == 0) {
            struct mesh_peer *p = mesh_peer_get(m, ch.c[0].node_pk);

            if (p != NULL) {
                p->chain = ch;
                p->has_chain = 1;
                snprintf(p->name, sizeof(p->name), "%s", ch.c[0].name);
                buf_append(&p->chain_raw, val, vlen);
            }
        }
    } else if (klen == 5 + MREC_PK && memcmp(key, "node/", 5) == 0) {
        struct mrec_node *rec;

        if (mrec_node_decode_bytes(val, vlen, &rec) == 0) {
            struct mesh_peer *p = mesh_peer_by_pk(m, rec->node_pk);

            if (p != NULL && p->rec == NULL) {
                p->rec = rec;
                buf_append(&p->rec_raw, val, vlen);
            } else {
                mrec_node_free(rec);
            }
        }
    } else if (klen == 4 + MREC_PK && memcmp(key, "rev/", 4) == 0) {
        struct mrec_revoke rv;

        if (mrec_revoke_decode_bytes(val, vlen, &rv) == 0) {
            struct mesh_peer *p = mesh_peer_get(m, rv.node_pk);

            if (p != NULL) {
                p->revoked = 1;
                if (p->name[0] == '\0')
                    snprintf(p->name, sizeof(p->name), "%s", rv.name);
                buf_append(&p->rev_raw, val, vlen);
                memcpy(p->rev_by, rv.by_pk, MREC_PK);
            }
        }
    } else if (klen == 5 + MREC_PK && memcmp(key, "hint/", 5) == 0) {
        struct mrec_invite tok;
        char text[MCODEC_TOKEN_MAX];
        struct mesh_peer *p = mesh_peer_by_pk(m, (const uint8_t *)key + 5);

        if (p != NULL && vlen < sizeof(text)) {
            memcpy(text, val, vlen);
            text[vlen] = '\0';
            if (mrec_invite_from_text(text, &tok, why, sizeof(why)) == 0) {
                p->n_hint = tok.n_addrs;
                memcpy(p->hint, tok.addrs, sizeof(p->hint));
            }
        }
    } else if (klen == 4 + MREC_INVITE_ID && memcmp(key, "inv/", 4) == 0) {
        struct mesh_invite *iv;

        if (m->ninv < MESH_INVITES_MAX) {
            iv = &m->inv[m->ninv];
            memcpy(iv->id, (const uint8_t *)key + 4, MREC_INVITE_ID);
            if (mcodec_invite_decode(val, vlen, &iv->expires, iv->name) == 0)
                m->ninv++;
        }
    } else if (klen > 3 && memcmp(key, MESH_XFER_DEDUP_PREFIX, 3) == 0) {
        /* mesh_xfer.c's dedup records: not membership state */
    } else if (klen > 3 && mesh_repl_owns_key(key, klen)) {
        /* mesh_repl.c's replica table */
    } else {
        log_warn("event=mesh.load_unknown_key len=%zu", klen);
    }
    (void)why;
    return 0;
}

static int
mesh_self_cb(void *arg, const void *key, size_t klen, const void *val,
             size_t vlen)
{
    struct mesh *m = arg;
    struct mcodec_self s;

    (void)key;
    (void)klen;
    if (mcodec_self_decode(val, vlen, &s) != 0)
        return RM_E_CORRUPT;
    memcpy(m->mesh_id, s.mesh_id, MREC_MESHID);
    memcpy(m->root_pk, s.root_pk, MREC_PK);
    m->chain = s.chain;
    m->record_version = s.record_version;
    m->member = 1;
    return 0;
}

int
mesh_new(struct node *n, struct mesh **out, char *err, size_t errsz)
{
    struct mesh *m;
    int r;

    if ((m = calloc(1, sizeof(*m))) == NULL)
        return -ENOMEM;
    m->n = n;
    m->loop = n->loop;
    m->cfg = n->cfg;
    m->prof = m->cfg->mesh_profile == NODE_MESH_WAN ? swim_profile_wan
                                                    : swim_profile_lan;
    m->pp_interval_ms =
        m->cfg->mesh_push_pull_interval
            ? (uint64_t)m->cfg->mesh_push_pull_interval * 1000
            : (m->cfg->mesh_profile == NODE_MESH_WAN ? 60000 : 30000);
    buf_init(&m->self_rec_raw, FRAME_MSG_MAX);
    if ((m->x_sk = sodium_malloc(32)) == NULL ||
        crypto_sign_ed25519_sk_to_curve25519(m->x_sk, n->id.sk) != 0) {
        if (m->x_sk)
            sodium_free(m->x_sk);
        buf_cleanup(&m->self_rec_raw);
        free(m);
        return -ENOMEM;
    }
    uv_timer_init(m->loop, &m->swim_timer);
    uv_timer_init(m->loop, &m->house_timer);
    uv_timer_init(m->loop, &m->join_timer);
    m->swim_timer.data = m->house_timer.data = m->join_timer.data = m;
    *out = m;

    r = store_mesh_get(n->store, "self", 4, mesh_self_cb, m);
    if (r != 0 && r != RM_E_NOTFOUND) {
        snprintf(err, errsz, "cannot read the mesh membership: %s",
                 rm_strerror(r));
        return r;
    }
    if ((r = store_mesh_each(n->store, NULL, 0, mesh_load_cb, m)) != 0) {
        snprintf(err, errsz, "cannot read the mesh state: %s", rm_strerror(r));
        return r;
    }
    if (m->cfg->nmesh_advertise == 0) {
        for (size_t i = 0; i < m->cfg->nmesh_listen; i++) {
            const struct sockaddr_storage *a = &m->cfg->mesh_listen[i].addr;
            int any = (a->ss_family == AF_INET &&
                       ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
                           htonl(INADDR_ANY)) ||
                      (a->ss_family == AF_INET6 &&
                       IN6_IS_ADDR_UNSPECIFIED(
                           &((const struct sockaddr_in6 *)a)->sin6_addr));

            if (any) {
                snprintf(err, errsz,
                         "[mesh] listen = %s is not an address peers can "
                         "dial; set [mesh] advertise = the address:port "
                         "the other nodes reach this one at",
                         m->cfg->mesh_listen[i].text);
                return RM_E_CONFIG;
            }
        }
    }
    if ((r = mesh_listen(m, err, errsz)) != 0)
        return r;
    if ((r = mesh_xfer_new(m, &m->xfer)) != 0) {
        snprintf(err, errsz, "cannot start mail transfer: %s", rm_strerror(r));
        return r;
    }
    if ((r = mesh_repl_new(m, &m->repl)) != 0) {
        snprintf(err, errsz, "cannot start replication: %s", rm_strerror(r));
        return r;
    }
    uv_timer_start(&m->house_timer, mesh_house_cb, 1000, 1000);
    m->next_pp = uv_now(m->loop) + m->pp_interval_ms;
    if (m->member) {
        char id[MREC_MESHID * 2 + 1];

        if (m->chain.c[0].expires <= mesh_wall_s())
            log_err("event=mesh.membership_expired msg=\"this node's "
                    "membership expired; peers will refuse it; it needs a "
                    "new invite\"");
        if ((r = mesh_swim_start(m)) != 0) {
            snprintf(err, errsz, "cannot start membership: %s", rm_strerror(r));
            return r;
        }
        mesh_publish_record(m);
        mesh_hex(m->mesh_id, MREC_MESHID, id);
        log_info("event=mesh.start mesh=%s name=%s peers=%u", id,
                 m->cfg->mesh_name, swim_member_count(m->swim) - 1);
    }
    return 0;
}

/* Free m once closing and nothing refers to it any more: handles
   closed, connections gone, store callbacks run. */
static void
mesh_maybe_free(struct mesh *m)
{
    if (!m->closing || m->nhandles > 0 || m->links != NULL ||
        m->store_pending > 0)
        return;
    while (m->peers) {
        struct mesh_peer *p = m->peers;

        m->peers = p->next;
        mesh_peer_free(p);
    }
    if (m->swim)
        swim_free(m->swim);
    mesh_xfer_free(m->xfer);
    mesh_repl_free(m->repl);
    sodium_free(m->x_sk);
    buf_cleanup(&m->self_rec_raw);
    free(m);
}

static void
mesh_handle_closed(uv_handle_t *h)
{
    struct mesh *m = h->data;

    m->nhandles--;
    mesh_maybe_free(m);
}

void
mesh_close(struct mesh *m)
{
    struct ctl_enc e;

    if (m == NULL || m->closing)
        return;
    m->closing = 1;
    ctl_enc_init(&e, 0);
    ctl_enc_nil(&e);
    mesh_pending_done(&m->join, RM_E_CLOSED, "the node is shutting down", &e);
    mesh_pending_done(&m->create, RM_E_CLOSED, "the node is shutting down", &e);
    mesh_pending_done(&m->invite, RM_E_CLOSED, "the node is shutting down", &e);
    mesh_pending_done(&m->remove, RM_E_CLOSED, "the node is shutting down", &e);
    ctl_enc_cleanup(&e);
    if (m->xfer != NULL)
        mesh_xfer_stop(m->xfer);
    if (m->repl != NULL)
        mesh_repl_stop(m->repl);
    for (struct mesh_link *l = m->links; l; l = l->next) {
        l->p = NULL;
        if (l->c != NULL)
            mesh_conn_close(l->c, 0);
    }
    for (struct mesh_peer *p = m->peers; p; p = p->next)
        p->out = NULL;
    uv_timer_stop(&m->swim_timer);
    uv_timer_stop(&m->house_timer);
    uv_timer_stop(&m->join_timer);
    m->nhandles = 3 + (int)m->nlisteners;
    uv_close((uv_handle_t *)&m->swim_timer, mesh_handle_closed);
    uv_close((uv_handle_t *)&m->house_timer, mesh_handle_closed);
    uv_close((uv_handle_t *)&m->join_timer, mesh_handle_closed);
    for (unsigned i = 0; i < m->nlisteners; i++)
        uv_close((uv_handle_t *)&m->listeners[i], mesh_handle_closed);
}

/* ---- routing and the transfer module's view ---------------------------- */

int
mesh_route(struct mesh *m, const char *addr, size_t len, struct mesh_home *home)
{
    const char *at;
    size_t dlen;
    char a[STORE_ADDR_MAX], canon[STORE_ADDR_MAX];

    if (m == NULL || addr == NULL || !m->member || m->closing ||
        len >= sizeof(a))
        return 0;
    memcpy(a, addr, len);
    a[len] = '\0';
    if ((at = strrchr(a, '@')) == NULL || at == a || at[1] == '\0')
        return 0;
    dlen = strlen(at + 1);
    if (node_config_local_domain(m->cfg, at + 1, dlen))
        return 0;
    for (struct mesh_peer *p = m->peers; p; p = p->next) {
        unsigned i;

        if (p->revoked || !p->has_chain || p->rec == NULL ||
            p->state == SWIM_LEFT)
            continue;
        for (i = 0; i < p->rec->n_domains; i++)
            if (strlen(p->rec->domains[i]) == dlen &&
                strncasecmp(p->rec->domains[i], at + 1, dlen) == 0)
                break;
        if (i == p->rec->n_domains)
            continue;
        memset(home, 0, sizeof(*home));
        memcpy(home->pk, p->pk, sizeof(home->pk));
        snprintf(home->name, sizeof(home->name), "%s", p->name);
        snprintf(home->fp, sizeof(home->fp), "%s", p->fp);
        home->reachable = p->out != NULL && mesh_conn_is_up(p->out->c);
        if ((size_t)(at - a) == 10 && strncasecmp(a, "postmaster", 10) == 0)
            home->user_known = 1;
        else if (store_addr_canon(a, canon, sizeof(canon)) == 0)
            for (i = 0; i < p->rec->n_users && !home->user_known; i++)
                home->user_known = strcmp(p->rec->users[i], canon) == 0;
        return 1;
    }
    return 0;
}

int
mesh_egress_route(struct mesh *m, struct mesh_home *home)
{
    struct mesh_peer *best = NULL;
    int best_rank = 0;

    if (m == NULL || !m->member || m->closing || m->cfg->mesh_egress)
        return 0;
    for (struct mesh_peer *p = m->peers; p; p = p->next) {
        int rank;

        if (p->revoked || !p->has_chain || p->rec == NULL || !p->rec->egress ||
            p->state == SWIM_LEFT || mesh_is_self(m, p->pk))
            continue;
        /* 3: alive and connected; 2: alive or suspect; 1: known. */
        rank = p->state == SWIM_ALIVE || p->state == SWIM_SUSPECT ? 2 : 1;
        if (rank == 2 && p->out != NULL && mesh_conn_is_up(p->out->c))
            rank = 3;
        if (rank > best_rank) {
            best = p;
            best_rank = rank;
        }
    }
    memset(home, 0, sizeof(*home));
    home->user_known = 1;
    if (best == NULL) {
        snprintf(home->name, sizeof(home->name), "(none)");
        return 1;
    }
    memcpy(home->pk, best->pk, sizeof(home->pk));
    snprintf(home->name, sizeof(home->name), "%s", best->name);
    snprintf(home->fp, sizeof(home->fp), "%s", best->fp);
    home->reachable = best_rank == 3;
    return 1;
}

int
mesh_users_each(struct mesh *m, mesh_users_cb cb, void *arg)
{
    if (m == NULL)
        return 0;
    for (struct mesh_peer *p = m->peers; p; p = p->next) {
        if (p->revoked || !p->has_chain || p->rec == NULL ||
            p->state == SWIM_LEFT || mesh_is_self(m, p->pk))
            continue;
        for (unsigned i = 0; i < p->rec->n_users; i++) {
            int rc = cb(arg, p->rec->users[i], p->name);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

struct node *
mesh__node(struct mesh *m)
{
    return m->n;
}

int
mesh_reach(struct mesh *m, const uint8_t pk[32])
{
    return m != NULL && mesh__out_link(m, pk) != 0;
}

struct mesh_xfer *
mesh__xfer(struct mesh *m)
{
    return m->xfer;
}

int
mesh__peer_egress(struct mesh *m, const char *name)
{
    struct mesh_peer *p = mesh_peer_by_name(m, name);

    return p != NULL && p->rec != NULL && p->rec->egress;
}

void
mesh__peer_name(struct mesh *m, const uint8_t pk[32], char *out, size_t outsz)
{
    struct mesh_peer *p = mesh_peer_by_pk(m, pk);

    if (p != NULL)
        snprintf(out, outsz, "%s", p->name);
}

uint64_t
mesh__out_link(struct mesh *m, const uint8_t pk[32])
{
    struct mesh_peer *p = mesh_peer_by_pk(m, pk);

    if (p == NULL || p->revoked || m->closing || !m->member)
        return 0;
    if (p->out != NULL && mesh_conn_is_up(p->out->c))
        return p->out->id;
    if (p->out == NULL && uv_now(m->loop) >= p->dial_at)
        mesh_dial(m, p);
    return 0;
}

static struct mesh_link *
mesh_link_by_id(struct mesh *m, uint64_t id)
{
    for (struct mesh_link *l = m->links; l; l = l->next)
        if (l->id == id)
            return l->c != NULL ? l : NULL;
    return NULL;
}

int
mesh__link_send(struct mesh *m, uint64_t link, const char *type,
                const void *body, size_t len)
{
    struct mesh_link *l = mesh_link_by_id(m, link);

    if (l == NULL || !mesh_conn_is_up(l->c))
        return RM_E_CLOSED;
    return mesh_link_send(l, type, body, len);
}

int
mesh__link_queued(struct mesh *m, uint64_t link, size_t *queued)
{
    struct mesh_link *l = mesh_link_by_id(m, link);

    if (l == NULL || !mesh_conn_is_up(l->c))
        return RM_E_CLOSED;
    *queued = mesh_conn_queued(l->c);
    return 0;
}

void
mesh__link_drop(struct mesh *m, uint64_t link, int bad)
{
    struct mesh_link *l = mesh_link_by_id(m, link);

    if (bad)
        m->rx_invalid++;
    if (l != NULL)
        mesh_conn_close(l->c, RM_E_PROTO);
}

void
mesh__hold(struct mesh *m)
{
    m->store_pending++;
}

void
mesh__release(struct mesh *m)
{
    m->store_pending--;
    mesh_maybe_free(m);
}

struct mesh_repl *
mesh__repl(struct mesh *m)
{
    return m != NULL ? m->repl : NULL;
}

int
mesh__member_state(struct mesh *m, const uint8_t pk[32], int64_t *since_ms)
{
    struct mesh_peer *p = mesh_peer_by_pk(m, pk);

    if (p == NULL || !p->in_swim)
        return -1;
    if (since_ms != NULL)
        *since_ms = p->state_since_ms;
    return p->revoked ? SWIM_LEFT : (int)p->state;
}

unsigned
mesh__live_members(struct mesh *m, uint8_t (*out)[32], unsigned max)
{
    unsigned n = 0;

    if (!m->member)
        return 0;
    for (struct mesh_peer *p = m->peers; p && n < max; p = p->next) {
        if (mesh_is_self(m, p->pk) || p->revoked || !p->in_swim ||
            (p->state != SWIM_ALIVE && p->state != SWIM_SUSPECT))
            continue;
        memcpy(out[n++], p->pk, 32);
    }
    return n;
}

int
mesh__is_member(struct mesh *m)
{
    return m != NULL && m->member;
}
