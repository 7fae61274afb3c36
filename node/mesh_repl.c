/*
 * mesh_repl.c: queue replication, anti-entropy and takeover (see
 * mesh_repl.h for the design, mesh/mrepl.h for the wire).
 *
 * Mesh table keys (store_mesh_*), in LMDB key order:
 *   "rp/" + key           the replica record (mrepl_rec_encode())
 *   "rb/" + key + be32 i  piece i of the message (MESH_REPL_BODY_CHUNK)
 *   "rt/" + key           taken over: the queue id it was moved to
 *   "ra/" + qid           a taken-over queue id: key, then for each of its
 *                         recipients the record's recipient position
 *                         (be32), then the original mesh id
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/rm_error.h"
#include "mesh/mrepl.h"
#include "mesh/recon.h"
#include "mesh/swim.h"
#include "node/ctl_codec.h"
#include "node/mesh.h"
#include "node/mesh_conn.h"
#include "node/mesh_int.h"
#include "node/mesh_repl.h"
#include "node/node.h"
#include "node/node_config.h"
#include "store/store.h"

#define MR_PEERS_MAX 64
#define MR_LAG_MAX 4096
#define MR_SCAN_MAX 512 /* records looked at per scan for takeover */
#define MR_KEY_PFX 3
#define MR_TKEY (MR_KEY_PFX + MREPL_KEY_LEN) /* "rp/" + key */

struct mr_asm {
    struct mr_asm *next;
    uint8_t key[MREPL_KEY_LEN];
    struct mrepl_rec *rec;
    struct buf data;
    uint64_t link;
};

struct mr_items {
    struct recon_item *v;
    size_t n, cap, pos;
};

struct mr_sess {
    struct mr_sess *next;
    uint8_t peer[MREPL_PK];
    uint8_t origin[MREPL_PK];
    uint64_t link;
    struct mr_items items;
    struct recon rc;
    uint64_t started_ms;
    uint64_t bytes;
};

struct mr_peer {
    uint8_t pk[MREPL_PK];
    int synced;          /* reconciled with since our link last came up */
    uint64_t unsynced_s; /* monotonic s since when not (0: since start) */
    uint64_t next_sum_s; /* monotonic seconds */
};

/* A record version submitted to the store writer and not committed yet.
   Every read-modify-write of a record (an outcome, a peer's version, a
   claim) starts from the last version written, not from the store: two
   updates in flight at once (two delivery jobs of one message finishing
   together, an outcome and a peer's version) would otherwise each start
   from the same stored version and the second would undo the first. The
   writer is FIFO, so the store holds this version once the last write in
   flight for the key has committed. */
struct mr_pend {
    struct mr_pend *next;
    uint8_t key[MREPL_KEY_LEN];
    unsigned inflight;
    struct mrepl_rec *rec;
};

/* An rput with the message sent to a replica and not yet acknowledged.
   The entries of one record (one per replica it went to) share accept_ns
   and want, and count the acks of their siblings, so that the last ack
   can say how long the record took to be durable on all its replicas
   without a second table. */
struct mr_lag {
    uint8_t peer[MREPL_PK];
    uint8_t key[MREPL_KEY_LEN];
    int64_t sent_ms;
    uint64_t accept_ns; /* uv_hrtime() when the queue handed it over */
    uint8_t want;       /* replicas chosen for the record */
    uint8_t acked;      /* of them, acknowledged so far */
};

/* [mesh] ack_replicas: one SMTP (or bridge) reply held until enough
   replicas acknowledged the message, or its withdrawal committed. */
enum mr_wait_state {
    MR_W_NEW,         /* made before the message's commit; no qid yet */
    MR_W_COPYING,     /* record saved or being saved; acks counted */
    MR_W_WITHDRAWING, /* not enough acks: the withdrawal is with the store */
    MR_W_DONE,        /* decided; its timer is closing */
    MR_W__COUNT
};

static const char *const mr_wait_names[MR_W__COUNT] = {
    [MR_W_NEW] = "new",
    [MR_W_COPYING] = "copying",
    [MR_W_WITHDRAWING] = "withdrawing",
    [MR_W_DONE] = "done",
};

struct mesh_repl_wait {
    struct mesh_repl_wait *next;
    struct mesh_repl *r;
    enum mr_wait_state st;
    uv_timer_t timer; /* ack_timeout; the wait is freed in its close_cb */
    char qid[STORE_QID_LEN + 1];
    uint8_t key[MREPL_KEY_LEN];
    struct mrepl_rec *rec; /* as saved and sent; its tombstone withdraws */
    int has_rec;
    uint8_t acked[MREPL_REPLICAS_MAX][MREPL_PK];
    unsigned nacked, need;
    uint64_t started_ms;
    const char *why;      /* why it was withdrawn (static text) */
    mesh_repl_wait_cb cb; /* NULL once cancelled */
    void *arg;
};

/* A message going to a replica faster than its link takes it: the rest
   of its chunks follow as the link's write queue drains (mesh_conn's
   drained callback), so that a large message, or a repair of many,
   never fills the queue past MESH_CONN_WQ_MAX (which closes the link
   and starts the repair over). The jobs of one link go in order, one at
   a time; what does not fit under MR_OUT_BYTES_MAX is left to
   anti-entropy. */
struct mr_out {
    struct mr_out *next;
    uint64_t link;
    struct mrepl_rec *rec;
    struct buf body; /* the whole message */
    size_t off;      /* sent so far */
    int ae;          /* an anti-entropy repair (counted as such) */
};

#define MR_OUT_BYTES_MAX (64u << 20)
#define MR_OUT_MAX 256

struct mesh_repl {
    struct mesh *m;
    struct node *n;
    int stopping;
    uint64_t last_seq;
    uint64_t start_s;
    struct mr_asm *asms;
    unsigned nasm;
    struct mr_sess *sess;
    struct mr_out *out, **out_tail; /* messages being sent as links drain */
    size_t out_bytes;
    unsigned nout;
    struct mr_peer peers[MR_PEERS_MAX];
    unsigned npeers;
    struct mr_lag lag[MR_LAG_MAX];
    unsigned nlag;
    uint8_t busy[64][MREPL_KEY_LEN]; /* records being claimed */
    unsigned nbusy;
    uint64_t next_scan_s;
    uint64_t next_repair_s;
    struct mr_pend *pend;         /* versions being written */
    struct mrepl_rec *scratch;    /* decoding a frame */
    struct mesh_repl_wait *waits; /* [mesh] ack_replicas: replies held */
    unsigned nwaits;
    /* counters */
    uint64_t puts_out, bytes_out, acks_in, takeovers, stood_down;
    uint64_t ack_waits, ack_ok, ack_timeouts, ack_cancelled, ack_refused;
    uint64_t ae_sessions, ae_rounds, ae_bytes, ae_repaired;
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t
mr_mono_s(struct mesh_repl *r)
{
    return uv_now(r->n->loop) / 1000;
}

static int64_t
mr_wall_ms(void)
{
    uv_timeval64_t tv;

    uv_gettimeofday(&tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Seq: wall-clock microseconds, strictly increasing here, so that a
   restarted node keeps counting upwards without storing a counter. */
static uint64_t
mr_seq(struct mesh_repl *r)
{
    uv_timeval64_t tv;
    uint64_t now;

    uv_gettimeofday(&tv);
    now = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
    r->last_seq = now > r->last_seq ? now : r->last_seq + 1;
    return r->last_seq;
}

static const uint8_t *
mr_self(struct mesh_repl *r)
{
    return r->n->id.pk;
}

static int
mr_is_self(struct mesh_repl *r, const uint8_t pk[MREPL_PK])
{
    return memcmp(pk, mr_self(r), MREPL_PK) == 0;
}

static void
mr_tkey(char *out, const char *pfx, const uint8_t key[MREPL_KEY_LEN])
{
    memcpy(out, pfx, MR_KEY_PFX);
    memcpy(out + MR_KEY_PFX, key, MREPL_KEY_LEN);
}

static void
mr_name(struct mesh_repl *r, const uint8_t pk[MREPL_PK], char *out, size_t sz)
{
    if (mr_is_self(r, pk)) {
        snprintf(out, sz, "%s", r->n->cfg->mesh_name);
        return;
    }
    snprintf(out, sz, "?");
    mesh__peer_name(r->m, pk, out, sz);
}

static struct mr_peer *
mr_peer(struct mesh_repl *r, const uint8_t pk[MREPL_PK])
{
    for (unsigned i = 0; i < r->npeers; i++)
        if (memcmp(r->peers[i].pk, pk, MREPL_PK) == 0)
            return &r->peers[i];
    if (r->npeers == MR_PEERS_MAX)
        return NULL;
    memset(&r->peers[r->npeers], 0, sizeof(r->peers[0]));
    memcpy(r->peers[r->npeers].pk, pk, MREPL_PK);
    return &r->peers[r->npeers++];
}

static int
mr_busy_has(struct mesh_repl *r, const uint8_t key[MREPL_KEY_LEN])
{
    for (unsigned i = 0; i < r->nbusy; i++)
        if (memcmp(r->busy[i], key, MREPL_KEY_LEN) == 0)
            return 1;
    return 0;
}

static void
mr_busy_del(struct mesh_repl *r, const uint8_t key[MREPL_KEY_LEN])
{
    for (unsigned i = 0; i < r->nbusy; i++)
        if (memcmp(r->busy[i], key, MREPL_KEY_LEN) == 0) {
            memmove(r->busy[i], r->busy[r->nbusy - 1], MREPL_KEY_LEN);
            r->nbusy--;
            return;
        }
}

/* ---- store access ----------------------------------------------------------
 */

struct mr_get {
    struct mrepl_rec *rec;
    int r;
};

static int
mr_get_cb(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct mr_get *g = arg;

    (void)key;
    (void)klen;
    g->r = mrepl_rec_decode(val, vlen, g->rec);
    return 0;
}

/* The stored record of key: 0, RM_E_NOTFOUND, RM_E_CORRUPT. */
static int
mr_load(struct mesh_repl *r, const uint8_t key[MREPL_KEY_LEN],
        struct mrepl_rec *rec)
{
    char tk[MR_TKEY];
    struct mr_get g = {rec, 0};
    int rc;

    mr_tkey(tk, "rp/", key);
    rc = store_mesh_get(r->n->store, tk, sizeof(tk), mr_get_cb, &g);
    if (rc != 0)
        return rc;
    return g.r == 0 ? 0 : RM_E_CORRUPT;
}

static struct mr_pend *
mr_pend_find(struct mesh_repl *r, const uint8_t key[MREPL_KEY_LEN])
{
    for (struct mr_pend *p = r->pend; p; p = p->next)
        if (memcmp(p->key, key, MREPL_KEY_LEN) == 0)
            return p;
    return NULL;
}

/* The current version of key: the last one written, committed or not
   (struct mr_pend). Same returns as mr_load(). */
static int
mr_load_cur(struct mesh_repl *r, const uint8_t key[MREPL_KEY_LEN],
            struct mrepl_rec *rec)
{
    struct mr_pend *p = mr_pend_find(r, key);

    if (p != NULL) {
        memcpy(rec, p->rec, sizeof(*rec));
        return 0;
    }
    return mr_load(r, key, rec);
}

static void
mr_pend_put(struct mesh_repl *r, struct mr_pend *p)
{
    struct mr_pend **pp;

    if (p == NULL || --p->inflight > 0)
        return;
    for (pp = &r->pend; *pp != p; pp = &(*pp)->next)
        ;
    *pp = p->next;
    free(p->rec);
    free(p);
}

/* Recipient outcomes that other has and rec lacks go into rec; 1 when
   rec changed. A recipient only ever goes from pending to delivered or
   bounced, so versions merged this way converge whatever the order. */
static int
mr_merge_states(struct mrepl_rec *rec, const struct mrepl_rec *other)
{
    int changed = 0;

    for (unsigned i = 0; i < rec->nrcpts && i < other->nrcpts; i++)
        if (rec->rcpts[i].st == MREPL_R_PENDING &&
            other->rcpts[i].st != MREPL_R_PENDING) {
            rec->rcpts[i].st = other->rcpts[i].st;
            changed = 1;
        }
    return changed;
}

static unsigned
mr_pending(const struct mrepl_rec *rec)
{
    unsigned n = 0;

    for (unsigned i = 0; i < rec->nrcpts; i++)
        n += rec->rcpts[i].st == MREPL_R_PENDING;
    return n;
}

/* rec changed here: a new version, a tombstone when no recipient is left. */
static void
mr_new_version(struct mesh_repl *r, struct mrepl_rec *rec)
{
    rec->seq = mr_seq(r) > rec->seq ? r->last_seq : rec->seq + 1;
    if (!rec->tomb && mr_pending(rec) == 0) {
        rec->tomb = 1;
        rec->tomb_at = (int64_t)(mr_wall_ms() / 1000);
    }
}

struct mr_op {
    struct mesh_repl *r;
    void (*done)(struct mr_op *op, int status);
    uint8_t key[MREPL_KEY_LEN];
    uint8_t peer[MREPL_PK];
    uint64_t link;
    uint64_t seq;
    struct mr_pend *pend; /* the version this op writes, until committed */
    int flood;            /* after the write: tell the others (a merge) */
    char qid[STORE_QID_LEN + 1];
    struct mrepl_rec *rec; /* owned */
    struct buf body;
    /* store_msg_accept's arguments, kept until its callback */
    struct store_msg sm;
    struct store_rcpt *rcpts;
    struct store_mesh_write mw[2];
    char ra_key[3 + STORE_QID_LEN];
    char rt_key[MR_TKEY];
    struct buf ra_val;
    uint64_t accept_ns; /* uv_hrtime() at mesh_repl_accepted() */
};

static void
mr_op_free(struct mr_op *op)
{
    if (op == NULL)
        return;
    free(op->rec);
    free(op->rcpts);
    buf_cleanup(&op->body);
    buf_cleanup(&op->ra_val);
    free(op);
}

static struct mr_op *
mr_op_new(struct mesh_repl *r)
{
    struct mr_op *op = calloc(1, sizeof(*op));

    if (op == NULL)
        return NULL;
    op->r = r;
    op->rec = malloc(sizeof(*op->rec));
    buf_init(&op->body, (size_t)MREPL_SIZE_MAX);
    buf_init(&op->ra_val, 64 * 1024);
    if (op->rec == NULL) {
        mr_op_free(op);
        return NULL;
    }
    return op;
}

static void
mr_op_cb(void *arg, int status)
{
    struct mr_op *op = arg;
    struct mesh *m = op->r->m;

    mr_pend_put(op->r, op->pend);
    op->pend = NULL;
    if (op->done != NULL && !op->r->stopping)
        op->done(op, status);
    mr_op_free(op);
    mesh__release(m);
}

/* Write rec (and, when given, its message in pieces; when a tombstone,
   remove the pieces) in one transaction; op->done follows. */
static int
mr_save(struct mesh_repl *r, struct mr_op *op, const struct mrepl_rec *rec,
        const void *data, size_t len, size_t old_size)
{
    struct store_mesh_write *w;
    char(*keys)[MR_TKEY + 4];
    struct buf enc;
    size_t nch = data != NULL
                     ? (len + MESH_REPL_BODY_CHUNK - 1) / MESH_REPL_BODY_CHUNK
                     : 0;
    size_t ndel =
        rec->tomb ? (old_size + MESH_REPL_BODY_CHUNK - 1) / MESH_REPL_BODY_CHUNK
                  : 0;
    size_t nw = 1 + nch + ndel, k = 0;
    uint8_t key[MREPL_KEY_LEN];
    struct mr_pend *p;
    int rc;

    mrepl_key(rec->origin, rec->qid, key);
    if ((p = mr_pend_find(r, key)) == NULL) {
        if ((p = calloc(1, sizeof(*p))) == NULL ||
            (p->rec = malloc(sizeof(*p->rec))) == NULL) {
            free(p);
            return -ENOMEM;
        }
        memcpy(p->key, key, MREPL_KEY_LEN);
        p->next = r->pend;
        r->pend = p;
    }
    p->inflight++;
    w = calloc(nw, sizeof(*w));
    keys = calloc(nw, sizeof(*keys));
    buf_init(&enc, 1 << 20);
    if (w == NULL || keys == NULL) {
        free(w);
        free(keys);
        mr_pend_put(r, p);
        return -ENOMEM;
    }
    if ((rc = mrepl_rec_encode(&enc, rec)) != 0)
        goto out;
    mr_tkey(keys[0], "rp/", key);
    w[k++] = (struct store_mesh_write){STORE_MESH_PUT, keys[0], MR_TKEY,
                                       enc.data, enc.len};
    for (size_t i = 0; i < nch + ndel; i++) {
        uint32_t ci = (uint32_t)(i < nch ? i : i - nch);
        size_t off = (size_t)ci * MESH_REPL_BODY_CHUNK;

        mr_tkey(keys[k], "rb/", key);
        keys[k][MR_TKEY] = (char)(ci >> 24);
        keys[k][MR_TKEY + 1] = (char)(ci >> 16);
        keys[k][MR_TKEY + 2] = (char)(ci >> 8);
        keys[k][MR_TKEY + 3] = (char)ci;
        if (i < nch)
            w[k] = (struct store_mesh_write){
                STORE_MESH_PUT, keys[k], MR_TKEY + 4, (const char *)data + off,
                len - off < MESH_REPL_BODY_CHUNK ? len - off
                                                 : MESH_REPL_BODY_CHUNK};
        else
            w[k] = (struct store_mesh_write){STORE_MESH_DEL, keys[k],
                                             MR_TKEY + 4, NULL, 0};
        k++;
    }
    rc = store_mesh_apply(r->n->store, w, k, mr_op_cb, op);
    if (rc == 0) {
        memcpy(p->rec, rec, sizeof(*rec));
        op->pend = p;
        mesh__hold(r->m);
    }
out:
    if (rc != 0)
        mr_pend_put(r, p);
    buf_cleanup(&enc);
    free(w);
    free(keys);
    return rc;
}

/* ---- sending --------------------------------------------------------------
 */

static uint64_t
mr_link_to(struct mesh_repl *r, const uint8_t pk[MREPL_PK])
{
    return mesh__out_link(r->m, pk);
}

static void
mr_lag_add(struct mesh_repl *r, const uint8_t peer[MREPL_PK],
           const uint8_t key[MREPL_KEY_LEN], uint64_t accept_ns, unsigned want)
{
    /* Full: the oldest goes. Its record then never reaches `want` acks
       here, so repl.durable is missed for it rather than logged early. */
    if (r->nlag == MR_LAG_MAX) {
        memmove(&r->lag[0], &r->lag[1], (MR_LAG_MAX - 1) * sizeof(r->lag[0]));
        r->nlag--;
    }
    memcpy(r->lag[r->nlag].peer, peer, MREPL_PK);
    memcpy(r->lag[r->nlag].key, key, MREPL_KEY_LEN);
    r->lag[r->nlag].sent_ms = mr_wall_ms();
    r->lag[r->nlag].accept_ns = accept_ns;
    r->lag[r->nlag].want = (uint8_t)want;
    r->lag[r->nlag].acked = 0;
    r->nlag++;
}

/* peer acknowledged the record key. When that was the last of the
   replicas it was sent to, and it went to all it was meant for, the record
   is durable on them all: log how long that took from its acceptance. */
static void
mr_lag_del(struct mesh_repl *r, const uint8_t peer[MREPL_PK],
           const uint8_t key[MREPL_KEY_LEN])
{
    struct mr_lag done;
    unsigned i, acked, left = 0;

    for (i = 0; i < r->nlag; i++)
        if (memcmp(r->lag[i].peer, peer, MREPL_PK) == 0 &&
            memcmp(r->lag[i].key, key, MREPL_KEY_LEN) == 0)
            break;
    if (i == r->nlag)
        return; /* not ours, or pushed out of the table */
    done = r->lag[i];
    memmove(&r->lag[i], &r->lag[i + 1], (r->nlag - i - 1) * sizeof(r->lag[0]));
    r->nlag--;
    acked = done.acked + 1u;
    for (i = 0; i < r->nlag; i++)
        if (memcmp(r->lag[i].key, key, MREPL_KEY_LEN) == 0) {
            r->lag[i].acked = (uint8_t)acked;
            left++;
        }
    if (left == 0 && acked == done.want) {
        /* The key ends with the queue id (mrepl_key()). */
        log_info("event=repl.durable qid=%.*s replicas=%u ms=%.3f",
                 MREPL_QID_LEN, (const char *)key + MREPL_KEY_ORIGIN, acked,
                 (double)(uv_hrtime() - done.accept_ns) / 1e6);
    }
}

/* The chunks of rec's message from *off on, while the link takes them
   (its write queue under MESH_CONN_WQ_LOW): 0 when all went, RM_E_AGAIN
   when the rest must wait for the link to drain, RM_E_CLOSED, or an
   encoding error. */
static int
mr_send_chunks(struct mesh_repl *r, uint64_t link, const struct mrepl_rec *rec,
               const char *data, size_t len, size_t *off, int ae,
               uint64_t *bytes)
{
    struct buf b;
    size_t queued;
    int rc = 0;

    buf_init(&b, 2u << 20);
    while (*off < len && rc == 0) {
        size_t n = len - *off < MREPL_CHUNK_MAX ? len - *off : MREPL_CHUNK_MAX;

        if ((rc = mesh__link_queued(r->m, link, &queued)) != 0)
            break;
        if (queued >= MESH_CONN_WQ_LOW) {
            rc = RM_E_AGAIN;
            break;
        }
        buf_truncate(&b, 0);
        if ((rc = mrepl_put_encode(&b, rec, *off, data + *off, n)) == 0)
            rc = mesh__link_send(r->m, link, "rput", b.data, b.len);
        if (rc == 0) {
            r->bytes_out += b.len;
            if (ae)
                r->ae_bytes += b.len;
            if (bytes != NULL)
                *bytes += b.len;
            *off += n;
        }
    }
    buf_cleanup(&b);
    return rc;
}

static int
mr_out_has(const struct mesh_repl *r, uint64_t link)
{
    for (const struct mr_out *o = r->out; o; o = o->next)
        if (o->link == link)
            return 1;
    return 0;
}

static void
mr_out_free(struct mesh_repl *r, struct mr_out *o)
{
    r->out_bytes -= o->body.len;
    r->nout--;
    buf_cleanup(&o->body);
    free(o->rec);
    free(o);
}

static void
mr_out_unlink(struct mesh_repl *r, struct mr_out *o)
{
    struct mr_out **pp = &r->out;

    while (*pp != o)
        pp = &(*pp)->next;
    *pp = o->next;
    if (r->out_tail == &o->next)
        r->out_tail = pp;
}

/* Keep the rest of rec's message (sent up to off) for the pump. */
static int
mr_out_add(struct mesh_repl *r, uint64_t link, const struct mrepl_rec *rec,
           const char *data, size_t len, size_t off, int ae)
{
    struct mr_out *o;

    if (r->nout >= MR_OUT_MAX || r->out_bytes + len > MR_OUT_BYTES_MAX)
        return RM_E_AGAIN;
    if ((o = calloc(1, sizeof(*o))) == NULL ||
        (o->rec = malloc(sizeof(*o->rec))) == NULL) {
        free(o);
        return -ENOMEM;
    }
    buf_init(&o->body, len);
    if (buf_append(&o->body, data, len) != 0) {
        buf_cleanup(&o->body);
        free(o->rec);
        free(o);
        return -ENOMEM;
    }
    *o->rec = *rec;
    o->link = link;
    o->off = off;
    o->ae = ae;
    if (r->out_tail == NULL)
        r->out_tail = &r->out;
    *r->out_tail = o;
    r->out_tail = &o->next;
    r->out_bytes += len;
    r->nout++;
    return 0;
}

/* Send what waits for link, in order, while it takes it. A link that
   went drops its jobs: anti-entropy repairs them at the next contact. */
static void
mr_out_pump(struct mesh_repl *r, uint64_t link)
{
    struct mr_out *o, *nx;
    int rc = 0;

    for (o = r->out; o; o = nx) {
        nx = o->next;
        if (o->link != link)
            continue;
        if (rc == 0)
            rc = mr_send_chunks(r, link, o->rec, o->body.data, o->body.len,
                                &o->off, o->ae, NULL);
        if (rc == RM_E_AGAIN)
            return;
        if (rc == 0)
            r->puts_out++;
        else
            log_info("event=repl.deferred qid=%s why=\"link lost while "
                     "sending (%s); anti-entropy will repair\"",
                     o->rec->qid, rm_strerror(rc));
        mr_out_unlink(r, o);
        mr_out_free(r, o);
    }
}

void
mesh_repl_drained(struct mesh_repl *r, uint64_t link)
{
    if (r != NULL && !r->stopping)
        mr_out_pump(r, link);
}

/* Pump every link with jobs: a drained callback can be missed when the
   queue was already low; a link that went is found here too. */
static void
mr_out_tick(struct mesh_repl *r)
{
    uint64_t done[16];
    unsigned nd = 0;

    for (struct mr_out *o = r->out; o && nd < 16;) {
        uint64_t link = o->link;
        unsigned i;

        for (i = 0; i < nd && done[i] != link; i++)
            ;
        if (i == nd) {
            done[nd++] = link;
            mr_out_pump(r, link);
            o = r->out; /* the list changed: start over, skipping done */
            continue;
        }
        o = o->next;
    }
}

static void
mr_lag_clear(struct mesh_repl *r, const uint8_t peer[MREPL_PK])
{
    unsigned k = 0;

    for (unsigned i = 0; i < r->nlag; i++)
        if (memcmp(r->lag[i].peer, peer, MREPL_PK) != 0)
            r->lag[k++] = r->lag[i];
    r->nlag = k;
}

/* Send rec (with the message when data is given) on link: at once as
   far as the link takes it, the rest as it drains. 0 when sent or on
   its way; RM_E_AGAIN when too much is waiting already (anti-entropy
   sends it later), RM_E_CLOSED, or an encoding error. bytes, when
   given, counts what went now (an anti-entropy repair). */
static int
mr_send_put(struct mesh_repl *r, uint64_t link, const struct mrepl_rec *rec,
            const char *data, size_t len, uint64_t *bytes)
{
    struct buf b;
    size_t off = 0;
    int rc;

    if (data == NULL || len == 0) {
        buf_init(&b, 2u << 20);
        if ((rc = mrepl_put_encode(&b, rec, 0, NULL, 0)) == 0)
            rc = mesh__link_send(r->m, link, "rput", b.data, b.len);
        if (rc == 0) {
            r->bytes_out += b.len;
            if (bytes != NULL)
                *bytes += b.len;
            r->puts_out++;
        }
        buf_cleanup(&b);
        return rc;
    }
    if (mr_out_has(r, link))
        return mr_out_add(r, link, rec, data, len, 0, bytes != NULL);
    rc = mr_send_chunks(r, link, rec, data, len, &off, 0, bytes);
    if (rc == RM_E_AGAIN)
        return mr_out_add(r, link, rec, data, len, off, bytes != NULL);
    if (rc == 0)
        r->puts_out++;
    return rc;
}

/* Tell every node concerned with rec (its origin, replicas, owner; not
   us) of its new version, without the message. */
static void
mr_flood(struct mesh_repl *r, const struct mrepl_rec *rec)
{
    uint8_t to[MREPL_REPLICAS_MAX + 2][MREPL_PK];
    unsigned n = 0;

    memcpy(to[n++], rec->origin, MREPL_PK);
    for (unsigned i = 0; i < rec->nreplicas; i++)
        memcpy(to[n++], rec->replicas[i], MREPL_PK);
    if (rec->has_owner)
        memcpy(to[n++], rec->owner, MREPL_PK);
    for (unsigned i = 0; i < n; i++) {
        int dup = mr_is_self(r, to[i]);
        uint64_t link;
        for (unsigned j = 0; j < i && !dup; j++)
            dup = memcmp(to[i], to[j], MREPL_PK) == 0;
        if (dup)
            continue;
        if ((link = mr_link_to(r, to[i])) != 0)
            mr_send_put(r, link, rec, NULL, 0, NULL);
        /* Unreachable now: anti-entropy carries it later. */
    }
}

/* ---- origin: a new message ------------------------------------------------
 */

struct mr_collect {
    struct mrepl_rec *rec;
    int first;
    int truncated;
};

static int
mr_collect_cb(void *arg, const struct store_qentry *e)
{
    struct mr_collect *c = arg;
    struct mrepl_rec *rec = c->rec;
    struct mrepl_rcpt *rc;

    if (e->route != STORE_ROUTE_REMOTE || e->state == STORE_Q_DELIVERED ||
        e->state == STORE_Q_BOUNCED)
        return 0;
    if (c->first) {
        c->first = 0;
        snprintf(rec->mail_from, sizeof(rec->mail_from), "%s", e->mail_from);
        snprintf(rec->envid, sizeof(rec->envid), "%s", e->envid);
        rec->ret = (unsigned)e->ret;
        rec->body = (unsigned)e->body_type;
        rec->smtputf8 = e->smtputf8;
        rec->arrival = e->arrival;
        rec->size = e->size;
    }
    if (rec->nrcpts == MREPL_RCPTS_MAX) {
        c->truncated = 1;
        return 0;
    }
    rc = &rec->rcpts[rec->nrcpts++];
    memset(rc, 0, sizeof(*rc));
    snprintf(rc->addr, sizeof(rc->addr), "%s", e->addr);
    snprintf(rc->orcpt, sizeof(rc->orcpt), "%s", e->orcpt);
    rc->notify = e->notify & 0x0f;
    rc->idx = e->key.rcpt;
    rc->st = MREPL_R_PENDING;
    return 0;
}

static int
mr_read_cb(void *arg, const char *data, size_t len)
{
    return buf_append(arg, data, len) == 0 ? 0 : -ENOMEM;
}

static int
mr_nop_cb(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)arg;
    (void)key;
    (void)klen;
    (void)val;
    (void)vlen;
    return 0;
}

static int
mr_exists(struct mesh_repl *r, const void *key, size_t klen)
{
    return store_mesh_get(r->n->store, key, klen, mr_nop_cb, NULL) == 0;
}

static struct mesh_repl_wait *mr_wait_find(struct mesh_repl *r,
                                           const uint8_t key[MREPL_KEY_LEN]);
static void mr_wait_saved(struct mesh_repl_wait *w, int status);
static void mr_wait_ack(struct mesh_repl *r, const uint8_t peer[MREPL_PK],
                        const struct mrepl_ack *a);

static void
mr_new_saved(struct mr_op *op, int status)
{
    struct mesh_repl *r = op->r;
    struct mesh_repl_wait *w;
    uint8_t key[MREPL_KEY_LEN];
    char name[64];

    mrepl_key(op->rec->origin, op->rec->qid, key);
    w = mr_wait_find(r, key);
    if (status != 0) {
        log_err("event=repl.save_failed qid=%s err=\"%s\"", op->qid,
                rm_strerror(status));
        if (w != NULL)
            mr_wait_saved(w, status);
        return;
    }
    if (w != NULL)
        mr_wait_saved(w, 0);
    /* Withdrawn before its record was even on disk (the store was slower
       than ack_timeout): the tombstone follows, the message must not. */
    if (w != NULL && w->st != MR_W_COPYING)
        return;
    for (unsigned i = 0; i < op->rec->nreplicas; i++) {
        uint64_t link = mr_link_to(r, op->rec->replicas[i]);

        mr_name(r, op->rec->replicas[i], name, sizeof(name));
        if (link == 0) {
            log_info("event=repl.deferred qid=%s replica=%s "
                     "why=\"no link; anti-entropy will repair\"",
                     op->qid, name);
            continue;
        }
        if (mr_send_put(r, link, op->rec, op->body.data, op->body.len, NULL) !=
            0) {
            log_info("event=repl.deferred qid=%s replica=%s size=%zu "
                     "why=\"too much waiting for the link; anti-entropy "
                     "will retry\"",
                     op->qid, name, op->body.len);
            continue;
        }
        mr_lag_add(r, op->rec->replicas[i], key, op->accept_ns,
                   op->rec->nreplicas);
    }
}

/* Build qid's replica record (its remote recipients, the replicas chosen
   now) and save it; the copies go out after the commit. 0 and, when
   copy is given, the record as saved; RM_E_NOTFOUND when there is
   nothing to replicate; other errors (nothing saved). */
static int
mr_accept(struct mesh_repl *r, const char *qid, struct mrepl_rec *copy)
{
    uint8_t cands[MR_PEERS_MAX][MREPL_PK];
    unsigned idx[MREPL_REPLICAS_MAX], nc, nr;
    struct mr_collect c;
    struct mr_op *op;
    char ak[3 + STORE_QID_LEN];
    int rc;

    memcpy(ak, "ra/", 3);
    memcpy(ak + 3, qid, STORE_QID_LEN);
    if (mr_exists(r, ak, sizeof(ak)))
        return RM_E_NOTFOUND; /* taken over: replicated under its origin's
                                 key */
    if ((op = mr_op_new(r)) == NULL)
        return -ENOMEM;
    /* Called from the commit callback, in the loop turn that queues the
       250: the clock of repl.durable starts with the client's reply. */
    op->accept_ns = uv_hrtime();
    memset(op->rec, 0, sizeof(*op->rec));
    c.rec = op->rec;
    c.first = 1;
    c.truncated = 0;
    rc = store_queue_get(r->n->store, qid, mr_collect_cb, &c);
    if (rc != 0 || op->rec->nrcpts == 0) {
        mr_op_free(op);
        return rc != 0 ? rc : RM_E_NOTFOUND;
    }
    if (c.truncated)
        log_warn("event=repl.truncated qid=%s kept=%u", qid, MREPL_RCPTS_MAX);
    memcpy(op->rec->origin, mr_self(r), MREPL_PK);
    snprintf(op->rec->qid, sizeof(op->rec->qid), "%s", qid);
    snprintf(op->rec->mid, sizeof(op->rec->mid), "%s/%s", r->n->id.fingerprint,
             qid);
    op->rec->seq = mr_seq(r);
    nc = mesh__live_members(r->m, cands, MR_PEERS_MAX);
    nr = mrepl_rendezvous(op->rec->mid, (const uint8_t(*)[MREPL_PK])cands, nc,
                          r->n->cfg->mesh_replicas, idx);
    for (unsigned i = 0; i < nr; i++)
        memcpy(op->rec->replicas[i], cands[idx[i]], MREPL_PK);
    op->rec->nreplicas = nr;
    snprintf(op->qid, sizeof(op->qid), "%s", qid);
    if ((rc = store_msg_read(r->n->store, qid, mr_read_cb, &op->body)) != 0) {
        mr_op_free(op);
        return rc;
    }
    op->done = mr_new_saved;
    if (copy != NULL)
        memcpy(copy, op->rec, sizeof(*copy));
    /* The origin keeps the record, not a second copy of the message. */
    rc = mr_save(r, op, op->rec, NULL, 0, 0);
    if (rc != 0) {
        log_err("event=repl.save_failed qid=%s err=\"%s\"", qid,
                rm_strerror(rc));
        mr_op_free(op);
        return rc;
    }
    log_debug("event=repl.new qid=%s replicas=%u rcpts=%u", qid, nr,
              op->rec->nrcpts);
    return 0;
}

void
mesh_repl_accepted(struct mesh *m, const char *qid)
{
    struct mesh_repl *r = mesh__repl(m);

    if (r == NULL || r->stopping || !mesh__is_member(m) ||
        r->n->cfg->mesh_replicas == 0)
        return;
    mr_accept(r, qid, NULL);
}

/* ---- outcomes ---------------------------------------------------------------
 */

struct mr_alias {
    uint8_t key[MREPL_KEY_LEN];
    uint32_t pos[MREPL_RCPTS_MAX];
    unsigned n;
    char mid[MREPL_ID_MAX];
    int found;
};

static int
mr_alias_cb(void *arg, const void *key, size_t klen, const void *val,
            size_t vlen)
{
    struct mr_alias *a = arg;
    const uint8_t *p = val;
    uint32_t n;

    (void)key;
    (void)klen;
    if (vlen < MREPL_KEY_LEN + 4)
        return 0;
    memcpy(a->key, p, MREPL_KEY_LEN);
    p += MREPL_KEY_LEN;
    n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
        p[3];
    p += 4;
    if (n > MREPL_RCPTS_MAX || vlen < MREPL_KEY_LEN + 4 + 4 * (size_t)n)
        return 0;
    for (uint32_t i = 0; i < n; i++, p += 4)
        a->pos[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                    (uint32_t)p[2] << 8 | p[3];
    a->n = n;
    vlen -= MREPL_KEY_LEN + 4 + 4 * (size_t)n;
    if (vlen >= sizeof(a->mid))
        return 0;
    memcpy(a->mid, p, vlen);
    a->mid[vlen] = '\0';
    a->found = 1;
    return 0;
}

static int
mr_alias_get(struct mesh_repl *r, const char *qid, struct mr_alias *a)
{
    char ak[3 + STORE_QID_LEN];

    memset(a, 0, sizeof(*a));
    memcpy(ak, "ra/", 3);
    memcpy(ak + 3, qid, STORE_QID_LEN);
    store_mesh_get(r->n->store, ak, sizeof(ak), mr_alias_cb, a);
    return a->found;
}

int
mesh_repl_mid(struct mesh *m, const char *qid, char *out, size_t outsz)
{
    struct mesh_repl *r = mesh__repl(m);
    struct mr_alias a;

    if (r == NULL || !mr_alias_get(r, qid, &a) || strlen(a.mid) >= outsz)
        return 0;
    memcpy(out, a.mid, strlen(a.mid) + 1);
    return 1;
}

static void
mr_update_saved(struct mr_op *op, int status)
{
    if (status != 0) {
        log_err("event=repl.save_failed qid=%s err=\"%s\"", op->rec->qid,
                rm_strerror(status));
        return;
    }
    mr_flood(op->r, op->rec);
}

static void
mr_results_one(struct mesh_repl *r, const struct store_qresult *res, size_t n)
{
    struct mr_alias a;
    struct mr_op *op;
    uint8_t key[MREPL_KEY_LEN];
    int changed = 0, taken;
    size_t old_size;

    taken = mr_alias_get(r, res[0].key.qid, &a);
    if (taken)
        memcpy(key, a.key, MREPL_KEY_LEN);
    else
        mrepl_key(mr_self(r), res[0].key.qid, key);
    if ((op = mr_op_new(r)) == NULL)
        return;
    if (mr_load_cur(r, key, op->rec) != 0 || op->rec->tomb) {
        mr_op_free(op);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        enum mrepl_rcpt_state st;
        struct mrepl_rcpt *rc = NULL;

        if (res[i].outcome == STORE_OUT_DEFERRED)
            continue;
        st = res[i].outcome == STORE_OUT_DELIVERED ? MREPL_R_DELIVERED
                                                   : MREPL_R_BOUNCED;
        if (taken) {
            if (res[i].key.rcpt < a.n &&
                a.pos[res[i].key.rcpt] < op->rec->nrcpts)
                rc = &op->rec->rcpts[a.pos[res[i].key.rcpt]];
        } else {
            for (unsigned j = 0; j < op->rec->nrcpts; j++)
                if (op->rec->rcpts[j].idx == res[i].key.rcpt)
                    rc = &op->rec->rcpts[j];
        }
        if (rc != NULL && rc->st == MREPL_R_PENDING) {
            rc->st = st;
            changed = 1;
        }
    }
    /* Nothing new, unless a merged version left no recipient pending
       without making it a tombstone (then this node closes it). */
    if (!changed && mr_pending(op->rec) > 0) {
        mr_op_free(op);
        return;
    }
    old_size = op->rec->size;
    mr_new_version(r, op->rec);
    op->done = mr_update_saved;
    if (mr_save(r, op, op->rec, NULL, 0, old_size) != 0)
        mr_op_free(op);
}

void
mesh_repl_results(struct mesh *m, const struct store_qresult *res, size_t n)
{
    struct mesh_repl *r = mesh__repl(m);
    size_t i = 0;

    if (r == NULL || r->stopping || !mesh__is_member(m))
        return;
    while (i < n) {
        size_t j = i + 1;
        while (j < n && strcmp(res[j].key.qid, res[i].key.qid) == 0)
            j++;
        mr_results_one(r, res + i, j - i);
        i = j;
    }
}

/* ---- receiving --------------------------------------------------------------
 */

static void
mr_send_ack(struct mesh_repl *r, uint64_t link, const struct mrepl_rec *rec)
{
    struct mrepl_ack a;
    struct buf b;

    mrepl_key(rec->origin, rec->qid, a.key);
    a.seq = rec->seq;
    buf_init(&b, 256);
    if (mrepl_ack_encode(&b, &a) == 0)
        mesh__link_send(r->m, link, "rack", b.data, b.len);
    buf_cleanup(&b);
}

static void
mr_replica_saved(struct mr_op *op, int status)
{
    if (status != 0) {
        log_err("event=repl.store_failed qid=%s err=\"%s\"", op->rec->qid,
                rm_strerror(status));
        return;
    }
    if (op->link != 0)
        mr_send_ack(op->r, op->link, op->rec);
    if (op->flood)
        mr_flood(op->r, op->rec);
}

/* Our queue entries for qid are another node's now. */
struct mr_drop {
    struct mesh_repl *r;
    char qid[STORE_QID_LEN + 1];
    char why[48];
};

static void
mr_drop_done(void *arg, int status)
{
    struct mr_drop *d = arg;
    struct mesh *m = d->r->m;

    if (status == 0) {
        d->r->stood_down++;
        log_warn("event=repl.stand_down qid=%s why=\"%s\"", d->qid, d->why);
    }
    free(d);
    mesh__release(m);
}

static void
mr_drop_queue(struct mesh_repl *r, const char *qid, const char *why)
{
    struct mr_drop *d = calloc(1, sizeof(*d));
    struct store_qkey k;

    if (d == NULL)
        return;
    d->r = r;
    snprintf(d->qid, sizeof(d->qid), "%s", qid);
    snprintf(d->why, sizeof(d->why), "%s", why);
    memcpy(k.qid, d->qid, sizeof(k.qid));
    k.rcpt = UINT32_MAX;
    if (store_queue_delete(r->n->store, &k, mr_drop_done, d) != 0) {
        free(d);
        return;
    }
    mesh__hold(r->m);
}

struct mr_rt {
    char qid[STORE_QID_LEN + 1];
    int found;
};

static int
mr_rt_cb(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct mr_rt *t = arg;

    (void)key;
    (void)klen;
    if (vlen == STORE_QID_LEN) {
        memcpy(t->qid, val, STORE_QID_LEN);
        t->qid[STORE_QID_LEN] = '\0';
        t->found = 1;
    }
    return 0;
}

/* A version of a record came from a peer (link; with the message when
   data is given). Keep it when newer, and act on what it says. */
static void
mr_take(struct mesh_repl *r, uint64_t link, const struct mrepl_rec *in,
        const void *data, size_t len)
{
    struct mr_op *op;
    struct mrepl_rec *old;
    uint8_t key[MREPL_KEY_LEN];
    int have, cmp, own = mr_is_self(r, in->origin);
    size_t old_size = 0;

    if ((op = mr_op_new(r)) == NULL)
        return;
    old = malloc(sizeof(*old));
    if (old == NULL) {
        mr_op_free(op);
        return;
    }
    mrepl_key(in->origin, in->qid, key);
    have = mr_load_cur(r, key, old) == 0;
    cmp = have ? mrepl_rec_cmp(in, old) : 1;
    if (have)
        old_size = old->size;
    if (cmp <= 0) {
        /* Not newer (a resend, or we hold a later version): still durable
           here, so acknowledge. It may still know of outcomes we lack
           (two nodes updated the record at once): then ours, with them,
           is a new version the others must hear of. */
        if (data != NULL && link != 0)
            mr_send_ack(r, link, in);
        if (have && !old->tomb && mr_merge_states(old, in)) {
            memcpy(op->rec, old, sizeof(*old));
            mr_new_version(r, op->rec);
            op->done = mr_update_saved;
            free(old);
            if (mr_save(r, op, op->rec, NULL, 0, old_size) != 0)
                mr_op_free(op);
            return;
        }
        free(old);
        mr_op_free(op);
        return;
    }
    if (!have && !own && !in->tomb && data == NULL) {
        /* A state change of a record we never had: the message comes with
           the repair. */
        free(old);
        mr_op_free(op);
        return;
    }
    /* A claim or tombstone by someone else for mail this node delivers:
       stand down. */
    if (own && (in->tomb || (in->has_owner && !mr_is_self(r, in->owner))) &&
        !(in->has_owner && mr_is_self(r, in->owner)))
        mr_drop_queue(r, in->qid,
                      in->tomb ? "delivered elsewhere"
                               : "claimed by a replica");
    if (!own && have && old->has_owner && mr_is_self(r, old->owner) &&
        (!in->has_owner || !mr_is_self(r, in->owner))) {
        char tk[MR_TKEY];
        struct mr_rt t = {"", 0};
        mr_tkey(tk, "rt/", key);
        store_mesh_get(r->n->store, tk, sizeof(tk), mr_rt_cb, &t);
        if (t.found)
            mr_drop_queue(r, t.qid, "a higher claim won");
    }
    memcpy(op->rec, in, sizeof(*in));
    op->link = data != NULL ? link : 0;
    if (have && !in->tomb && mr_merge_states(op->rec, old)) {
        /* Keep what we know of delivered recipients too. That makes a
           version nobody else has: a newer one (else it would compare
           equal to the one that came, and the two would never converge),
           a tombstone when nothing is left, and sent to the others. */
        mr_new_version(r, op->rec);
        op->flood = 1;
        if (op->rec->tomb) {
            data = NULL;
            len = 0;
        }
    }
    free(old);
    op->done = mr_replica_saved;
    if (mr_save(r, op, op->rec, own ? NULL : data, own ? 0 : len,
                old_size > op->rec->size ? old_size : op->rec->size) != 0)
        mr_op_free(op);
}

static void
mr_asm_free(struct mr_asm *a)
{
    free(a->rec);
    buf_cleanup(&a->data);
    free(a);
}

static void
mr_on_put(struct mesh_repl *r, uint64_t link, const msgpack_object *body)
{
    struct mrepl_put *p = (struct mrepl_put *)r->scratch;
    struct mr_asm **pp, *a;
    uint8_t key[MREPL_KEY_LEN];

    if (mrepl_put_decode_obj(body, p) != 0) {
        log_warn("event=repl.bad_frame type=rput");
        mesh__link_drop(r->m, link, 1);
        return;
    }
    if (!p->has_data) {
        mr_take(r, link, &p->rec, NULL, 0);
        return;
    }
    if (p->rec.size > r->n->cfg->max_message_size + (64u << 10)) {
        log_warn("event=repl.too_big qid=%s size=%" PRIu64, p->rec.qid,
                 p->rec.size);
        return;
    }
    mrepl_key(p->rec.origin, p->rec.qid, key);
    for (pp = &r->asms; *pp; pp = &(*pp)->next)
        if (memcmp((*pp)->key, key, MREPL_KEY_LEN) == 0 && (*pp)->link == link)
            break;
    a = *pp;
    if (p->off == 0) {
        if (a != NULL) {
            *pp = a->next;
            mr_asm_free(a);
            r->nasm--;
        }
        if (p->len == p->rec.size) {
            mr_take(r, link, &p->rec, p->data, p->len);
            return;
        }
        if (r->nasm >= MESH_REPL_ASM_MAX)
            return; /* anti-entropy repairs it */
        if ((a = calloc(1, sizeof(*a))) == NULL ||
            (a->rec = malloc(sizeof(*a->rec))) == NULL) {
            free(a);
            return;
        }
        memcpy(a->key, key, MREPL_KEY_LEN);
        memcpy(a->rec, &p->rec, sizeof(p->rec));
        a->link = link;
        buf_init(&a->data, p->rec.size);
        a->next = r->asms;
        r->asms = a;
        r->nasm++;
    } else if (a == NULL || p->off != a->data.len) {
        return; /* out of order: dropped, repaired later */
    }
    if (buf_append(&a->data, p->data, p->len) != 0)
        return;
    if (a->data.len == a->rec->size) {
        for (pp = &r->asms; *pp != a; pp = &(*pp)->next)
            ;
        *pp = a->next;
        r->nasm--;
        mr_take(r, link, a->rec, a->data.data, a->data.len);
        mr_asm_free(a);
    }
}

static void
mr_on_ack(struct mesh_repl *r, uint64_t link, const uint8_t peer[MREPL_PK],
          const msgpack_object *body)
{
    struct mrepl_ack a;

    if (mrepl_ack_decode_obj(body, &a) != 0) {
        mesh__link_drop(r->m, link, 1);
        return;
    }
    r->acks_in++;
    mr_lag_del(r, peer, a.key);
    mr_wait_ack(r, peer, &a);
}

/* ---- [mesh] ack_replicas ---------------------------------------------------
 *
 * A wait is made before the message's commit (mesh_repl_wait_new: can the
 * mesh hold it at all?), started from the commit callback (the record is
 * saved and sent as for any message) and decided by the acks or by its
 * timer. Not enough acks: the message is withdrawn in one store
 * transaction (queue entries and message removed, record turned into a
 * tombstone), the tombstone goes to the replicas like a delivery's, and
 * only then does the caller hear of it. A wait holds the mesh (its store
 * callbacks and timer outlive no one) until its timer is closed.
 */

static void
mr_wait_enter(struct mesh_repl_wait *w, enum mr_wait_state next)
{
    log_debug("event=repl.ack_state qid=%s from=%s to=%s",
              w->qid[0] ? w->qid : "-", mr_wait_names[w->st],
              mr_wait_names[next]);
    w->st = next;
}

static struct mesh_repl_wait *
mr_wait_find(struct mesh_repl *r, const uint8_t key[MREPL_KEY_LEN])
{
    for (struct mesh_repl_wait *w = r->waits; w; w = w->next)
        if (w->st != MR_W_NEW && memcmp(w->key, key, MREPL_KEY_LEN) == 0)
            return w;
    return NULL;
}

static void
mr_wait_closed(uv_handle_t *h)
{
    struct mesh_repl_wait *w = h->data;
    struct mesh *m = w->r->m;

    free(w->rec);
    free(w);
    mesh__release(m);
}

/* Decided: out of the list, timer closed, the caller told (unless it
   cancelled). */
static void
mr_wait_finish(struct mesh_repl_wait *w, int status)
{
    struct mesh_repl *r = w->r;
    mesh_repl_wait_cb cb = w->cb;
    void *arg = w->arg;

    for (struct mesh_repl_wait **pp = &r->waits; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            r->nwaits--;
            break;
        }
    mr_wait_enter(w, MR_W_DONE);
    w->cb = NULL;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, mr_wait_closed);
    if (cb != NULL)
        cb(arg, status);
}

static void
mr_wait_withdrawn(void *arg, int status)
{
    struct mesh_repl_wait *w = arg;
    struct mesh_repl *r = w->r;

    if (status != 0) {
        log_err("event=repl.ack_withdraw_failed qid=%s err=\"%s\" "
                "hint=\"the message stays queued; remove it with: relaymesh "
                "queue delete %s\"",
                w->qid, rm_strerror(status), w->qid);
        mr_wait_finish(w, status);
        return;
    }
    log_warn("event=repl.ack_withdrawn qid=%s acked=%u need=%u why=\"%s\"",
             w->qid, w->nacked, w->need, w->why);
    /* Every replica learns of it as of a delivery: now, or by repair. */
    if (w->has_rec && !r->stopping)
        mr_flood(r, w->rec);
    mr_wait_finish(w, RM_E_AGAIN);
}

/* Not enough acks: remove the message and tombstone its record in one
   transaction. */
static void
mr_wait_withdraw(struct mesh_repl_wait *w, const char *why)
{
    struct mesh_repl *r = w->r;
    struct store_mesh_write mw;
    char tk[MR_TKEY];
    struct buf enc;
    int rc;

    uv_timer_stop(&w->timer);
    mr_wait_enter(w, MR_W_WITHDRAWING);
    w->why = why;
    buf_init(&enc, 1 << 20);
    mr_tkey(tk, "rp/", w->key);
    if (w->has_rec) {
        w->rec->tomb = 1;
        w->rec->tomb_at = (int64_t)(mr_wall_ms() / 1000);
        w->rec->seq = mr_seq(r);
        if ((rc = mrepl_rec_encode(&enc, w->rec)) != 0) {
            buf_cleanup(&enc);
            mr_wait_withdrawn(w, rc);
            return;
        }
        mw = (struct store_mesh_write){STORE_MESH_PUT, tk, sizeof(tk), enc.data,
                                       enc.len};
    } else {
        /* No record was saved: nothing for a replica to drop. */
        mw = (struct store_mesh_write){STORE_MESH_DEL, tk, sizeof(tk), NULL, 0};
    }
    rc =
        store_queue_withdraw(r->n->store, w->qid, &mw, 1, mr_wait_withdrawn, w);
    buf_cleanup(&enc);
    if (rc != 0)
        mr_wait_withdrawn(w, rc);
}

static void
mr_wait_timer_cb(uv_timer_t *t)
{
    struct mesh_repl_wait *w = t->data;
    struct mesh_repl *r = w->r;

    if (w->st != MR_W_COPYING)
        return;
    r->ack_timeouts++;
    log_warn(
        "event=repl.ack_timeout qid=%s acked=%u need=%u waited_ms=%" PRIu64,
        w->qid, w->nacked, w->need, uv_now(r->n->loop) - w->started_ms);
    mr_wait_withdraw(w, "not enough replicas acknowledged in time");
}

/* The record's own commit (mr_new_saved). */
static void
mr_wait_saved(struct mesh_repl_wait *w, int status)
{
    if (status != 0 && w->st == MR_W_COPYING)
        mr_wait_withdraw(w, "the replica record could not be saved");
}

static void
mr_wait_ack(struct mesh_repl *r, const uint8_t peer[MREPL_PK],
            const struct mrepl_ack *a)
{
    struct mesh_repl_wait *w = mr_wait_find(r, a->key);
    int replica = 0;

    if (w == NULL || w->st != MR_W_COPYING || !w->has_rec ||
        a->seq < w->rec->seq)
        return;
    for (unsigned i = 0; i < w->rec->nreplicas && !replica; i++)
        replica = memcmp(w->rec->replicas[i], peer, MREPL_PK) == 0;
    for (unsigned i = 0; i < w->nacked && replica; i++)
        if (memcmp(w->acked[i], peer, MREPL_PK) == 0)
            return; /* a resend's ack */
    if (!replica || w->nacked == MREPL_REPLICAS_MAX)
        return;
    memcpy(w->acked[w->nacked++], peer, MREPL_PK);
    if (w->nacked < w->need)
        return;
    r->ack_ok++;
    log_info("event=repl.ack_ok qid=%s acked=%u need=%u waited_ms=%" PRIu64,
             w->qid, w->nacked, w->need, uv_now(r->n->loop) - w->started_ms);
    mr_wait_finish(w, 0);
}

int
mesh_repl_wait_new(struct mesh *m, struct mesh_repl_wait **out, char *why,
                   size_t whysz)
{
    struct mesh_repl *r = mesh__repl(m);
    uint8_t live[MR_PEERS_MAX][MREPL_PK];
    struct mesh_repl_wait *w;
    unsigned need, nlive;

    *out = NULL;
    if (r == NULL || r->stopping || !mesh__is_member(m)) {
        snprintf(why, whysz,
                 "this node is not in a mesh, so no peer can "
                 "hold a copy");
        if (r != NULL)
            r->ack_refused++;
        return RM_E_AGAIN;
    }
    need = r->n->cfg->mesh_ack_replicas;
    nlive = mesh__live_members(m, live, MR_PEERS_MAX);
    if (nlive < need) {
        snprintf(why, whysz, "%u of the %u peers needed are reachable", nlive,
                 need);
        r->ack_refused++;
        return RM_E_AGAIN;
    }
    if (r->nwaits >= MESH_REPL_WAITS_MAX) {
        snprintf(why, whysz, "%u messages already wait for their replicas",
                 r->nwaits);
        r->ack_refused++;
        return RM_E_AGAIN;
    }
    if ((w = calloc(1, sizeof(*w))) == NULL ||
        (w->rec = malloc(sizeof(*w->rec))) == NULL) {
        free(w);
        snprintf(why, whysz, "out of memory");
        return -ENOMEM;
    }
    w->r = r;
    w->need = need;
    w->st = MR_W_NEW;
    uv_timer_init(r->n->loop, &w->timer);
    w->timer.data = w;
    w->next = r->waits;
    r->waits = w;
    r->nwaits++;
    mesh__hold(m);
    *out = w;
    return 0;
}

void
mesh_repl_wait_start(struct mesh_repl_wait *w, const char *qid,
                     mesh_repl_wait_cb cb, void *arg)
{
    struct mesh_repl *r = w->r;
    int rc;

    snprintf(w->qid, sizeof(w->qid), "%s", qid);
    mrepl_key(mr_self(r), qid, w->key);
    w->cb = cb;
    w->arg = arg;
    w->started_ms = uv_now(r->n->loop);
    r->ack_waits++;
    mr_wait_enter(w, MR_W_COPYING);
    if (r->stopping || !mesh__is_member(r->m)) {
        mr_wait_withdraw(w, "the node is leaving the mesh");
        return;
    }
    rc = mr_accept(r, qid, w->rec);
    if (rc != 0) {
        log_err("event=repl.ack_no_record qid=%s err=\"%s\"", qid,
                rm_strerror(rc));
        mr_wait_withdraw(w, "the replica record could not be made");
        return;
    }
    w->has_rec = 1;
    if (w->rec->nreplicas < w->need) {
        mr_wait_withdraw(w, "fewer live peers than ack_replicas");
        return;
    }
    log_info("event=repl.ack_wait qid=%s need=%u replicas=%u timeout_s=%u", qid,
             w->need, w->rec->nreplicas, r->n->cfg->mesh_ack_timeout);
    uv_timer_start(&w->timer, mr_wait_timer_cb,
                   (uint64_t)r->n->cfg->mesh_ack_timeout * 1000, 0);
}

void
mesh_repl_wait_cancel(struct mesh_repl_wait *w)
{
    if (w == NULL)
        return;
    switch (w->st) {
    case MR_W_NEW:
        w->cb = NULL;
        mr_wait_finish(w, RM_E_CLOSED);
        break;
    case MR_W_COPYING:
        w->cb = NULL;
        w->r->ack_cancelled++;
        log_info("event=repl.ack_cancelled qid=%s acked=%u need=%u", w->qid,
                 w->nacked, w->need);
        mr_wait_withdraw(w, "the client went before the replicas answered");
        break;
    case MR_W_WITHDRAWING:
        w->cb = NULL;
        break;
    case MR_W_DONE:
    case MR_W__COUNT:
        break;
    }
}

int
mesh_repl_wait_pending(struct mesh *m, const char *qid)
{
    struct mesh_repl *r = mesh__repl(m);

    if (r == NULL)
        return 0;
    for (struct mesh_repl_wait *w = r->waits; w; w = w->next)
        if (w->st != MR_W_NEW && strcmp(w->qid, qid) == 0)
            return 1;
    return 0;
}

/* The node stops: waits still counting acks are decided now. */
static void
mr_wait_stop_all(struct mesh_repl *r)
{
    for (struct mesh_repl_wait *w = r->waits, *nx; w; w = nx) {
        nx = w->next;
        if (w->st == MR_W_COPYING)
            mr_wait_withdraw(w, "the node is shutting down");
    }
}

/* ---- anti-entropy
 * ------------------------------------------------------------ */

struct mr_walk {
    struct mesh_repl *r;
    const uint8_t *origin;
    const uint8_t *peer; /* our own records: only those peer holds */
    struct mr_items *items;
    uint64_t n, seq;
    uint8_t digest[MREPL_DIGEST];
    struct mrepl_rec *rec;
};

static int
mr_walk_cb(void *arg, const void *key, size_t klen, const void *val,
           size_t vlen)
{
    struct mr_walk *w = arg;
    struct recon_item it;

    if (klen != MR_TKEY)
        return 0;
    if (mrepl_rec_decode(val, vlen, w->rec) != 0)
        return 0;
    if (memcmp(w->rec->origin, w->origin, MREPL_PK) != 0)
        return 0;
    if (w->peer != NULL) {
        int in = 0;
        for (unsigned i = 0; i < w->rec->nreplicas && !in; i++)
            in = memcmp(w->rec->replicas[i], w->peer, MREPL_PK) == 0;
        if (!in)
            return 0;
    }
    memset(&it, 0, sizeof(it));
    it.key_len = MREPL_KEY_LEN;
    memcpy(it.key, (const uint8_t *)key + MR_KEY_PFX, MREPL_KEY_LEN);
    mrepl_hash(val, vlen, it.hash);
    mrepl_digest_add(w->digest, it.hash);
    w->n++;
    if (w->rec->seq > w->seq)
        w->seq = w->rec->seq;
    if (w->items != NULL) {
        if (w->items->n == w->items->cap) {
            size_t nc = w->items->cap ? w->items->cap * 2 : 256;
            struct recon_item *v = realloc(w->items->v, nc * sizeof(*v));
            if (v == NULL)
                return -ENOMEM;
            w->items->v = v;
            w->items->cap = nc;
        }
        w->items->v[w->items->n++] = it;
    }
    return 0;
}

/* The set of origin's records to reconcile with peer: our own that peer
   holds (origin is us), or every record of origin we hold. */
static int
mr_set(struct mesh_repl *r, const uint8_t origin[MREPL_PK],
       const uint8_t peer[MREPL_PK], struct mr_items *items,
       struct mrepl_sum *sum)
{
    char pfx[MR_KEY_PFX + MREPL_KEY_ORIGIN];
    struct mr_walk w;
    int rc;

    memset(&w, 0, sizeof(w));
    w.r = r;
    w.origin = origin;
    w.peer = mr_is_self(r, origin) ? peer : NULL;
    w.items = items;
    if ((w.rec = malloc(sizeof(*w.rec))) == NULL)
        return -ENOMEM;
    memcpy(pfx, "rp/", MR_KEY_PFX);
    memcpy(pfx + MR_KEY_PFX, origin, MREPL_KEY_ORIGIN);
    rc = store_mesh_each(r->n->store, pfx, sizeof(pfx), mr_walk_cb, &w);
    free(w.rec);
    if (rc != 0 && rc != RM_E_NOTFOUND)
        return rc;
    memset(sum, 0, sizeof(*sum));
    memcpy(sum->origin, origin, MREPL_PK);
    sum->n = w.n;
    sum->seq = w.seq;
    memcpy(sum->digest, w.digest, MREPL_DIGEST);
    return 0;
}

static int
mr_item_cmp(const struct recon_item *a, const uint8_t *key, size_t klen)
{
    size_t n = a->key_len < klen ? a->key_len : klen;
    int c = memcmp(a->key, key, n);

    if (c != 0)
        return c;
    return a->key_len < klen ? -1 : a->key_len > klen ? 1 : 0;
}

static int
mr_seek(void *arg, const uint8_t *key, size_t keylen, struct recon_item *out)
{
    struct mr_items *s = arg;
    size_t lo = 0, hi = s->n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (mr_item_cmp(&s->v[mid], key, keylen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    s->pos = lo;
    if (lo >= s->n)
        return 0;
    *out = s->v[s->pos++];
    return 1;
}

static int
mr_next(void *arg, struct recon_item *out)
{
    struct mr_items *s = arg;

    if (s->pos >= s->n)
        return 0;
    *out = s->v[s->pos++];
    return 1;
}

static void
mr_sess_free(struct mesh_repl *r, struct mr_sess *s)
{
    struct mr_sess **pp;

    for (pp = &r->sess; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    recon_cleanup(&s->rc);
    free(s->items.v);
    free(s);
}

static struct mr_sess *
mr_sess_find(struct mesh_repl *r, const uint8_t peer[MREPL_PK],
             const uint8_t origin[MREPL_PK])
{
    for (struct mr_sess *s = r->sess; s; s = s->next)
        if (memcmp(s->peer, peer, MREPL_PK) == 0 &&
            memcmp(s->origin, origin, MREPL_PK) == 0)
            return s;
    return NULL;
}

static struct mr_sess *
mr_sess_new(struct mesh_repl *r, uint64_t link, const uint8_t peer[MREPL_PK],
            const uint8_t origin[MREPL_PK])
{
    struct mr_sess *s = calloc(1, sizeof(*s));
    struct recon_source src;
    struct mrepl_sum sum;

    if (s == NULL)
        return NULL;
    memcpy(s->peer, peer, MREPL_PK);
    memcpy(s->origin, origin, MREPL_PK);
    s->link = link;
    s->started_ms = uv_now(r->n->loop);
    src.seek = mr_seek;
    src.next = mr_next;
    src.arg = &s->items;
    if (mr_set(r, origin, peer, &s->items, &sum) != 0 ||
        recon_init(&s->rc, NULL, &src) != 0) {
        free(s->items.v);
        free(s);
        return NULL;
    }
    s->next = r->sess;
    r->sess = s;
    r->ae_sessions++;
    return s;
}

static void
mr_send_rrec(struct mesh_repl *r, struct mr_sess *s, const struct buf *msg)
{
    struct buf b;

    buf_init(&b, MREPL_RECON_MAX + 256);
    if (mrepl_recmsg_encode(&b, s->origin, msg->data, msg->len) == 0 &&
        mesh__link_send(r->m, s->link, "rrec", b.data, b.len) == 0) {
        s->bytes += b.len;
        r->ae_bytes += b.len;
    }
    buf_cleanup(&b);
}

static void
mr_peer_synced(struct mesh_repl *r, const uint8_t peer[MREPL_PK])
{
    struct mr_peer *p = mr_peer(r, peer);

    if (p != NULL && !p->synced) {
        p->synced = 1;
        p->unsynced_s = 0;
        if (r->n->queue != NULL)
            node_queue_kick(r->n->queue);
    }
}

static void mr_send_sum(struct mesh_repl *r, uint64_t link,
                        const struct mrepl_sum *s);

/* The session is over: send the peer the versions it lacks. */
static void
mr_sess_done(struct mesh_repl *r, struct mr_sess *s)
{
    const struct recon_item *have, *need;
    size_t nh, nn;
    struct mrepl_rec *rec = malloc(sizeof(*rec));
    struct buf body;
    int own = mr_is_self(r, s->origin);
    char name[64];
    uint64_t sent = 0;

    recon_have_get(&s->rc, &have, &nh);
    recon_need_get(&s->rc, &need, &nn);
    buf_init(&body, (size_t)MREPL_SIZE_MAX);
    for (size_t i = 0; rec != NULL && i < nh; i++) {
        if (mr_load_cur(r, have[i].key, rec) != 0)
            continue;
        /* A replica's version only matters to the origin when it says
           more than the origin's would: a claim or a tombstone. */
        if (!own && !rec->tomb && !rec->has_owner)
            continue;
        buf_truncate(&body, 0);
        if (!rec->tomb) {
            /* The origin sends the message from its queue; a replica
               sends only its version (a claim, states): the origin has
               the message. */
            if (own &&
                store_msg_read(r->n->store, rec->qid, mr_read_cb, &body) != 0)
                buf_truncate(&body, 0);
        }
        if (mr_send_put(r, s->link, rec, body.len ? body.data : NULL, body.len,
                        &sent) == 0)
            r->ae_repaired++;
    }
    s->bytes += sent;
    r->ae_bytes += sent;
    r->ae_rounds += recon_rounds(&s->rc);
    mr_name(r, s->peer, name, sizeof(name));
    log_info("event=repl.antientropy peer=%s origin_self=%d sent=%zu "
             "wanted=%zu rounds=%u bytes=%" PRIu64 " ms=%" PRIu64,
             name, own, nh, nn, recon_rounds(&s->rc), s->bytes,
             uv_now(r->n->loop) - s->started_ms);
    if (own && nn == 0)
        mr_peer_synced(r, s->peer);
    else if (!own) {
        /* After our versions, on the same link: the origin takes this as
           "you have all I had to say" (see mr_on_sum). */
        struct mrepl_sum sum;
        if (mr_set(r, s->origin, s->peer, NULL, &sum) == 0) {
            sum.want = 0;
            mr_send_sum(r, s->link, &sum);
        }
    }
    buf_cleanup(&body);
    free(rec);
    mr_sess_free(r, s);
}

static void
mr_on_rrec(struct mesh_repl *r, uint64_t link, const uint8_t peer[MREPL_PK],
           const msgpack_object *body)
{
    struct mrepl_recmsg rm;
    struct mr_sess *s;
    struct buf out;
    int done = 0, rc;

    if (mrepl_recmsg_decode_obj(body, &rm) != 0) {
        mesh__link_drop(r->m, link, 1);
        return;
    }
    /* Only ever about records one of us is the origin of. */
    if (!mr_is_self(r, rm.origin) && memcmp(rm.origin, peer, MREPL_PK) != 0)
        return;
    s = mr_sess_find(r, peer, rm.origin);
    if (s == NULL && (s = mr_sess_new(r, link, peer, rm.origin)) == NULL)
        return;
    s->link = link;
    s->bytes += rm.len;
    buf_init(&out, MREPL_RECON_MAX);
    rc = recon_step(&s->rc, rm.msg, rm.len, &out, &done);
    if (rc != 0 || recon_rounds(&s->rc) > 64) {
        log_warn("event=repl.recon_failed err=\"%s\"", rm_strerror(rc));
        mr_sess_free(r, s);
        buf_cleanup(&out);
        return;
    }
    if (out.len > 0)
        mr_send_rrec(r, s, &out);
    buf_cleanup(&out);
    if (done)
        mr_sess_done(r, s);
}

static void
mr_send_sum(struct mesh_repl *r, uint64_t link, const struct mrepl_sum *s)
{
    struct buf b;

    buf_init(&b, 256);
    if (mrepl_sum_encode(&b, s) == 0 &&
        mesh__link_send(r->m, link, "rsum", b.data, b.len) == 0)
        r->ae_bytes += b.len;
    buf_cleanup(&b);
}

static void
mr_barrier_done(struct mr_op *op, int status)
{
    (void)status;
    mr_peer_synced(op->r, op->peer);
}

static void
mr_barrier(struct mesh_repl *r, const uint8_t peer[MREPL_PK])
{
    static const char key[] = "rs/barrier";
    struct store_mesh_write w = {STORE_MESH_DEL, key, sizeof(key) - 1, NULL, 0};
    struct mr_op *op = mr_op_new(r);

    if (op == NULL)
        return;
    memcpy(op->peer, peer, MREPL_PK);
    op->done = mr_barrier_done;
    if (store_mesh_apply(r->n->store, &w, 1, mr_op_cb, op) != 0) {
        mr_op_free(op);
        return;
    }
    mesh__hold(r->m);
}

static void
mr_on_sum(struct mesh_repl *r, uint64_t link, const uint8_t peer[MREPL_PK],
          const msgpack_object *body)
{
    struct mrepl_sum in, mine;
    struct mr_sess *s;
    struct buf out;

    if (mrepl_sum_decode_obj(body, &in) != 0) {
        mesh__link_drop(r->m, link, 1);
        return;
    }
    r->ae_bytes += 64;
    if (mr_is_self(r, in.origin)) {
        /* The answer to ours: equal, or everything the peer had to tell
           us has come before it on this link. Its effects (claims
           recorded, queue entries removed) are store writes already
           submitted: a barrier after them, and only then may outbound
           take the entries. */
        if (!in.want)
            mr_barrier(r, peer);
        /* The same set as ours: every copy sent there is held there, the
           ones whose acknowledgement never came too (a copy sent, the
           link lost, the record repaired later as a tombstone, which is
           not acknowledged). Else they would count as lag for good. */
        if (mr_set(r, in.origin, peer, NULL, &mine) == 0 && mine.n == in.n &&
            mine.seq == in.seq &&
            memcmp(mine.digest, in.digest, MREPL_DIGEST) == 0)
            mr_lag_clear(r, peer);
        return;
    }
    if (memcmp(in.origin, peer, MREPL_PK) != 0)
        return;
    if (mr_set(r, in.origin, peer, NULL, &mine) != 0)
        return;
    if (mine.n == in.n && mine.seq == in.seq &&
        memcmp(mine.digest, in.digest, MREPL_DIGEST) == 0) {
        mine.want = 0;
        mr_send_sum(r, link, &mine);
        return;
    }
    /* They differ: reconcile (we start; the origin answers). */
    if (mr_sess_find(r, peer, in.origin) != NULL)
        return;
    if ((s = mr_sess_new(r, link, peer, in.origin)) == NULL)
        return;
    buf_init(&out, MREPL_RECON_MAX);
    if (recon_initiate(&s->rc, &out) == 0)
        mr_send_rrec(r, s, &out);
    else
        mr_sess_free(r, s);
    buf_cleanup(&out);
}

/* Our summary of the records peer should hold for us. */
static void
mr_sum_to(struct mesh_repl *r, uint64_t link, const uint8_t peer[MREPL_PK])
{
    struct mrepl_sum s;

    if (mr_set(r, mr_self(r), peer, NULL, &s) != 0)
        return;
    s.want = 1;
    mr_send_sum(r, link, &s);
}

void
mesh_repl_link_up(struct mesh_repl *r, uint64_t link, const uint8_t peer[32])
{
    struct mr_peer *p;

    if (r == NULL || r->stopping || !mesh__is_member(r->m))
        return;
    if ((p = mr_peer(r, peer)) != NULL) {
        p->next_sum_s = mr_mono_s(r) + MESH_REPL_SUM_S;
        /* A new contact (after a partition, say): whatever the peer did
           meanwhile (a takeover claim) reaches us with the repair that
           starts now; until then our entries it holds wait. */
        if (p->synced) {
            p->synced = 0;
            p->unsynced_s = mr_mono_s(r);
        } else if (p->unsynced_s == 0) {
            p->unsynced_s = mr_mono_s(r);
        }
    }
    mr_sum_to(r, link, peer);
}

/* ---- takeover -------------------------------------------------------------
 */

static int
mr_dead_long(struct mesh_repl *r, const uint8_t pk[MREPL_PK])
{
    int64_t since = 0;
    int st = mesh__member_state(r->m, pk, &since);

    if (st != SWIM_DEAD && st != SWIM_LEFT)
        return 0;
    return mr_wall_ms() - since >=
           (int64_t)r->n->cfg->mesh_takeover_grace * 1000;
}

static void
mr_claim_moved(void *arg, int status)
{
    struct mr_op *op = arg;
    struct mesh_repl *r = op->r;
    struct mesh *m = r->m;
    uint8_t key[MREPL_KEY_LEN];

    mrepl_key(op->rec->origin, op->rec->qid, key);
    if (!r->stopping && (status == 0 || status == RM_E_EXISTS)) {
        struct mr_op *sv = mr_op_new(r);
        if (sv != NULL) {
            /* Outcomes recorded since the scan read the record stay. */
            if (mr_load_cur(r, key, sv->rec) == 0)
                mr_merge_states(op->rec, sv->rec);
            memcpy(sv->rec, op->rec, sizeof(*op->rec));
            sv->done = mr_update_saved;
            if (mr_save(r, sv, sv->rec, NULL, 0, 0) != 0)
                mr_op_free(sv);
        }
        if (status == 0) {
            r->takeovers++;
            log_warn("event=repl.takeover qid=%s origin_qid=%s mid=%s "
                     "epoch=%" PRIu64 " rcpts=%zu",
                     op->qid, op->rec->qid, op->rec->mid, op->rec->epoch,
                     op->sm.nrcpts);
            node_queue_remote(r->n->queue, op->qid);
        }
    } else if (!r->stopping) {
        log_err("event=repl.takeover_failed origin_qid=%s err=\"%s\"",
                op->rec->qid, rm_strerror(status));
    }
    mr_busy_del(r, key);
    mr_op_free(op);
    mesh__release(m);
}

static int
mr_body_cb(void *arg, const void *key, size_t klen, const void *val,
           size_t vlen)
{
    (void)key;
    (void)klen;
    return buf_append(arg, val, vlen) == 0 ? 0 : -ENOMEM;
}

static void
mr_claim(struct mesh_repl *r, const struct mrepl_rec *rec)
{
    struct mr_op *op;
    uint8_t key[MREPL_KEY_LEN];
    char pfx[MR_TKEY];
    unsigned np = 0;
    uint8_t hdr[4];
    int rc;

    mrepl_key(rec->origin, rec->qid, key);
    if (mr_busy_has(r, key) || r->nbusy == 64 || r->n->queue == NULL)
        return;
    if ((op = mr_op_new(r)) == NULL)
        return;
    memcpy(op->rec, rec, sizeof(*rec));
    mr_tkey(pfx, "rb/", key);
    if (store_mesh_each(r->n->store, pfx, sizeof(pfx), mr_body_cb, &op->body) !=
            0 ||
        op->body.len != rec->size) {
        log_warn("event=repl.takeover_no_body origin_qid=%s have=%zu "
                 "size=%" PRIu64,
                 rec->qid, op->body.len, rec->size);
        mr_op_free(op);
        return;
    }
    op->rec->epoch = rec->has_owner ? rec->epoch + 1 : 1;
    op->rec->has_owner = 1;
    memcpy(op->rec->owner, mr_self(r), MREPL_PK);
    op->rec->seq = mr_seq(r) > rec->seq ? r->last_seq : rec->seq + 1;
    op->rcpts = calloc(rec->nrcpts, sizeof(*op->rcpts));
    if (op->rcpts == NULL) {
        mr_op_free(op);
        return;
    }
    store_qid_new(r->n->store, op->qid);
    buf_append(&op->ra_val, key, MREPL_KEY_LEN);
    buf_append(&op->ra_val, "\0\0\0\0", 4); /* count, set below */
    for (unsigned i = 0; i < rec->nrcpts; i++) {
        const struct mrepl_rcpt *c = &rec->rcpts[i];
        uint8_t be[4] = {(uint8_t)(i >> 24), (uint8_t)(i >> 16),
                         (uint8_t)(i >> 8), (uint8_t)i};
        if (c->st != MREPL_R_PENDING)
            continue;
        op->rcpts[np].addr = c->addr;
        op->rcpts[np].orcpt = c->orcpt[0] ? c->orcpt : NULL;
        op->rcpts[np].notify = c->notify;
        op->rcpts[np].route = STORE_ROUTE_REMOTE;
        buf_append(&op->ra_val, be, 4);
        np++;
    }
    hdr[0] = (uint8_t)(np >> 24);
    hdr[1] = (uint8_t)(np >> 16);
    hdr[2] = (uint8_t)(np >> 8);
    hdr[3] = (uint8_t)np;
    memcpy(op->ra_val.data + MREPL_KEY_LEN, hdr, 4);
    buf_append(&op->ra_val, rec->mid, strlen(rec->mid));
    memcpy(op->ra_key, "ra/", 3);
    memcpy(op->ra_key + 3, op->qid, STORE_QID_LEN);
    mr_tkey(op->rt_key, "rt/", key);
    op->mw[0] = (struct store_mesh_write){STORE_MESH_NEW, op->rt_key, MR_TKEY,
                                          op->qid, STORE_QID_LEN};
    op->mw[1] = (struct store_mesh_write){STORE_MESH_NEW, op->ra_key,
                                          sizeof(op->ra_key), op->ra_val.data,
                                          op->ra_val.len};
    memcpy(op->sm.qid, op->qid, sizeof(op->sm.qid));
    op->sm.mail_from = op->rec->mail_from;
    op->sm.envid = op->rec->envid[0] ? op->rec->envid : NULL;
    op->sm.ret = (enum store_ret)op->rec->ret;
    op->sm.body_type = (enum store_body)op->rec->body;
    op->sm.smtputf8 = op->rec->smtputf8;
    op->sm.arrival = op->rec->arrival;
    op->sm.client = "mesh takeover";
    op->sm.rcpts = op->rcpts;
    op->sm.nrcpts = np;
    op->sm.data = op->body.data;
    op->sm.len = op->body.len;
    op->sm.mesh_new = op->mw;
    op->sm.nmesh_new = 2;
    /* Fix the recipient pointers: they must point into op->rec. */
    for (unsigned i = 0, j = 0; i < op->rec->nrcpts; i++) {
        if (op->rec->rcpts[i].st != MREPL_R_PENDING)
            continue;
        op->rcpts[j].addr = op->rec->rcpts[i].addr;
        op->rcpts[j].orcpt =
            op->rec->rcpts[i].orcpt[0] ? op->rec->rcpts[i].orcpt : NULL;
        j++;
    }
    if (np == 0) {
        mr_op_free(op);
        return;
    }
    rc = store_msg_accept(r->n->store, &op->sm, mr_claim_moved, op);
    if (rc != 0) {
        mr_op_free(op);
        return;
    }
    mesh__hold(r->m);
    memcpy(r->busy[r->nbusy++], key, MREPL_KEY_LEN);
}

/* ---- repair: outcomes the queue has and the record lacks
 * ---------------------------------------------------------------------
 * An outcome is written to the queue first (store_queue_results: the entry
 * goes) and to the record after, in a second transaction; a node killed
 * between the two (or stopped: outbound reports nothing while closing)
 * keeps a live record of mail it no longer has, and every replica with
 * it, for good, and would deliver it again when a replica took it over.
 * So the node that delivers a record's mail (its owner, else its origin)
 * compares its live records with its queue after start and every
 * MR_REPAIR_S: a pending recipient without a queue entry has had its
 * outcome recorded (delivered, or bounced: the record needs only "not
 * pending"), or was deleted by the administrator. */

#define MR_REPAIR_S 60

struct mr_qseen {
    uint32_t idx[MREPL_RCPTS_MAX];
    unsigned n;
};

static int
mr_qseen_cb(void *arg, const struct store_qentry *e)
{
    struct mr_qseen *q = arg;

    if (q->n < MREPL_RCPTS_MAX)
        q->idx[q->n++] = e->key.rcpt;
    return 0;
}

static int
mr_qseen_has(const struct mr_qseen *q, uint32_t idx)
{
    for (unsigned i = 0; i < q->n; i++)
        if (q->idx[i] == idx)
            return 1;
    return 0;
}

static void
mr_repair(struct mesh_repl *r, const uint8_t key[MREPL_KEY_LEN])
{
    struct mr_op *op = mr_op_new(r);
    struct mr_alias *a = NULL;
    struct mr_qseen *q = NULL;
    char qid[STORE_QID_LEN + 1];
    unsigned fixed = 0;
    int rc;

    if (op == NULL || mr_busy_has(r, key))
        goto out;
    if (mr_load_cur(r, key, op->rec) != 0 || op->rec->tomb ||
        !mr_is_self(r, op->rec->has_owner ? op->rec->owner : op->rec->origin))
        goto out;
    if ((q = calloc(1, sizeof(*q))) == NULL ||
        (a = calloc(1, sizeof(*a))) == NULL)
        goto out;
    if (op->rec->has_owner) {
        /* Taken over here: its queue id and positions are the alias's. */
        char tk[MR_TKEY];
        struct mr_rt t = {"", 0};
        mr_tkey(tk, "rt/", key);
        store_mesh_get(r->n->store, tk, sizeof(tk), mr_rt_cb, &t);
        if (!t.found || !mr_alias_get(r, t.qid, a))
            goto out;
        snprintf(qid, sizeof(qid), "%s", t.qid);
    } else {
        snprintf(qid, sizeof(qid), "%s", op->rec->qid);
    }
    rc = store_queue_get(r->n->store, qid, mr_qseen_cb, q);
    if (rc != 0 && rc != RM_E_NOTFOUND)
        goto out;
    for (unsigned j = 0; j < op->rec->nrcpts; j++) {
        struct mrepl_rcpt *c = &op->rec->rcpts[j];
        int queued = 0;

        if (c->st != MREPL_R_PENDING)
            continue;
        if (op->rec->has_owner) {
            for (unsigned i = 0; i < a->n && !queued; i++)
                queued = a->pos[i] == j && mr_qseen_has(q, i);
        } else {
            queued = mr_qseen_has(q, c->idx);
        }
        if (!queued) {
            c->st = MREPL_R_DELIVERED;
            fixed++;
        }
    }
    if (fixed == 0)
        goto out;
    log_warn("event=repl.repaired qid=%s mid=%s rcpts=%u why=\"outcome "
             "in the queue, not in the record\"",
             qid, op->rec->mid, fixed);
    mr_new_version(r, op->rec);
    op->done = mr_update_saved;
    if (mr_save(r, op, op->rec, NULL, 0, op->rec->size) == 0)
        op = NULL;
out:
    free(q);
    free(a);
    mr_op_free(op);
}

struct mr_scan {
    struct mesh_repl *r;
    uint8_t (*mine)[MREPL_KEY_LEN]; /* to repair, NULL when not due */
    size_t nmine;
    uint8_t (*keys)[MREPL_KEY_LEN];
    size_t nkeys;
    uint8_t (*gone)[MREPL_KEY_LEN];
    size_t ngone;
    struct mrepl_rec *rec;
    int64_t now;
};

static int
mr_scan_cb(void *arg, const void *key, size_t klen, const void *val,
           size_t vlen)
{
    struct mr_scan *s = arg;
    struct mesh_repl *r = s->r;
    const struct mrepl_rec *rec = s->rec;
    const uint8_t *resp;
    int pending = 0;

    if (klen != MR_TKEY || mrepl_rec_decode(val, vlen, s->rec) != 0)
        return 0;
    if (rec->tomb) {
        if (rec->tomb_at + (int64_t)r->n->cfg->mesh_tombstone_lifetime <=
                s->now &&
            s->ngone < MR_SCAN_MAX)
            memcpy(s->gone[s->ngone++], (const uint8_t *)key + MR_KEY_PFX,
                   MREPL_KEY_LEN);
        return 0;
    }
    for (unsigned i = 0; i < rec->nrcpts; i++)
        pending += rec->rcpts[i].st == MREPL_R_PENDING;
    resp = rec->has_owner ? rec->owner : rec->origin;
    if (mr_is_self(r, resp) && s->mine != NULL && s->nmine < MR_SCAN_MAX)
        memcpy(s->mine[s->nmine++], (const uint8_t *)key + MR_KEY_PFX,
               MREPL_KEY_LEN);
    if (pending == 0 || mr_is_self(r, resp) || !mr_dead_long(r, resp))
        return 0;
    /* The first replica in rendezvous order that is alive claims it. */
    for (unsigned i = 0; i < rec->nreplicas; i++) {
        int st;
        if (mr_is_self(r, rec->replicas[i])) {
            if (s->nkeys < MR_SCAN_MAX)
                memcpy(s->keys[s->nkeys++], (const uint8_t *)key + MR_KEY_PFX,
                       MREPL_KEY_LEN);
            break;
        }
        if (memcmp(rec->replicas[i], resp, MREPL_PK) == 0)
            continue;
        st = mesh__member_state(r->m, rec->replicas[i], NULL);
        if (st == SWIM_ALIVE || st == SWIM_SUSPECT)
            break; /* it will */
    }
    return 0;
}

static void
mr_scan(struct mesh_repl *r)
{
    struct mr_scan s;

    memset(&s, 0, sizeof(s));
    s.r = r;
    s.now = mr_wall_ms() / 1000;
    s.keys = calloc(MR_SCAN_MAX, MREPL_KEY_LEN);
    s.gone = calloc(MR_SCAN_MAX, MREPL_KEY_LEN);
    s.rec = malloc(sizeof(*s.rec));
    if (s.keys == NULL || s.gone == NULL || s.rec == NULL)
        goto out;
    if (mr_mono_s(r) >= r->next_repair_s) {
        r->next_repair_s = mr_mono_s(r) + MR_REPAIR_S;
        s.mine = calloc(MR_SCAN_MAX, MREPL_KEY_LEN);
    }
    store_mesh_each(r->n->store, "rp/", MR_KEY_PFX, mr_scan_cb, &s);
    for (size_t i = 0; i < s.nmine; i++)
        mr_repair(r, s.mine[i]);
    for (size_t i = 0; i < s.nkeys; i++)
        if (mr_load_cur(r, s.keys[i], s.rec) == 0 && !s.rec->tomb &&
            mr_pending(s.rec) > 0)
            mr_claim(r, s.rec);
    for (size_t i = 0; i < s.ngone; i++) {
        char tk[MR_TKEY], rt[MR_TKEY];
        struct store_mesh_write w[2] = {{STORE_MESH_DEL, tk, MR_TKEY, NULL, 0},
                                        {STORE_MESH_DEL, rt, MR_TKEY, NULL, 0}};
        mr_tkey(tk, "rp/", s.gone[i]);
        mr_tkey(rt, "rt/", s.gone[i]);
        store_mesh_apply(r->n->store, w, 2, NULL, NULL);
    }
    if (s.ngone > 0)
        log_info("event=repl.tombstones_collected count=%zu", s.ngone);
out:
    free(s.mine);
    free(s.keys);
    free(s.gone);
    free(s.rec);
}

/* ---- gate for a returning origin
 * ------------------------------------------------ */

#define MR_GATE_MIN_S 60

static uint64_t
mr_gate_cap_s(const struct mesh_repl *r)
{
    uint64_t g = r->n->cfg->mesh_takeover_grace;

    return g > MR_GATE_MIN_S ? g : MR_GATE_MIN_S;
}

/* 1 when whatever the replica with key pk may have done with our mail
   (a takeover claim) has reached us: we reconciled with it since our
   link to it last came up; or it is dead to us (not in the first 10 s
   after start, when member states are still stale); or it has gone
   unreconciled for the grace (at least a minute): a replica that never
   completes its repair must not hold the mail back for ever, and as
   replicas take over only from a dead origin, waiting delays mail but
   never sends it twice. */
static int
mr_replica_clear(struct mesh_repl *r, const uint8_t pk[MREPL_PK], uint64_t now)
{
    struct mr_peer *p = mr_peer(r, pk);
    int st = mesh__member_state(r->m, pk, NULL);
    uint64_t since = r->start_s;

    if (p != NULL && p->synced)
        return 1;
    if (st != SWIM_ALIVE && st != SWIM_SUSPECT)
        return now - r->start_s >= 10;
    if (p != NULL && p->unsynced_s > since)
        since = p->unsynced_s;
    return now - since >= mr_gate_cap_s(r);
}

int
mesh_repl_may_deliver(struct mesh *m, const char *qid)
{
    struct mesh_repl *r = mesh__repl(m);
    struct mrepl_rec *rec;
    uint8_t key[MREPL_KEY_LEN];
    uint64_t now;
    int ok = 1;

    /* Held for ack_replicas: not the sender's yet, nor ours to send. */
    if (mesh_repl_wait_pending(m, qid))
        return 0;
    if (r == NULL || r->stopping || !mesh__is_member(m))
        return 1;
    if ((rec = malloc(sizeof(*rec))) == NULL)
        return 1;
    now = mr_mono_s(r);
    mrepl_key(mr_self(r), qid, key);
    if (mr_load(r, key, rec) == 0 && !rec->tomb && rec->nreplicas > 0) {
        ok = 0;
        for (unsigned i = 0; i < rec->nreplicas && !ok; i++)
            ok = mr_replica_clear(r, rec->replicas[i], now);
        if (rec->has_owner && !mr_is_self(r, rec->owner))
            ok = 0;
    }
    free(rec);
    return ok;
}

/* ---- frames, ticks, life
 * --------------------------------------------------------- */

static int
mr_type_is(const char *t, size_t tlen, const char *s)
{
    return tlen == strlen(s) && memcmp(t, s, tlen) == 0;
}

int
mesh_repl_frame(struct mesh_repl *r, uint64_t link, const uint8_t peer[32],
                const char *type, size_t tlen, const msgpack_object *body)
{
    if (r == NULL || r->stopping)
        return 0;
    if (mr_type_is(type, tlen, "rput"))
        mr_on_put(r, link, body);
    else if (mr_type_is(type, tlen, "rack"))
        mr_on_ack(r, link, peer, body);
    else if (mr_type_is(type, tlen, "rsum"))
        mr_on_sum(r, link, peer, body);
    else if (mr_type_is(type, tlen, "rrec"))
        mr_on_rrec(r, link, peer, body);
    else
        return 0;
    return 1;
}

void
mesh_repl_tick(struct mesh_repl *r)
{
    uint64_t now = mr_mono_s(r);
    uint8_t live[MR_PEERS_MAX][MREPL_PK];
    unsigned n;

    if (r == NULL || r->stopping || !mesh__is_member(r->m))
        return;
    mr_out_tick(r);
    /* Sessions that stalled (a link went) are forgotten. */
    for (struct mr_sess *s = r->sess, *nx; s; s = nx) {
        nx = s->next;
        if (uv_now(r->n->loop) - s->started_ms > 60000)
            mr_sess_free(r, s);
    }
    n = mesh__live_members(r->m, live, MR_PEERS_MAX);
    for (unsigned i = 0; i < n; i++) {
        struct mr_peer *p = mr_peer(r, live[i]);
        uint64_t link;
        if (p == NULL || now < p->next_sum_s)
            continue;
        if ((link = mr_link_to(r, live[i])) == 0)
            continue;
        p->next_sum_s = now + MESH_REPL_SUM_S;
        mr_sum_to(r, link, live[i]);
    }
    if (now >= r->next_scan_s) {
        r->next_scan_s = now + MESH_REPL_SCAN_S;
        mr_scan(r);
    }
}

struct mr_count {
    uint64_t n, tomb;
    struct mrepl_rec *rec;
};

static int
mr_count_cb(void *arg, const void *key, size_t klen, const void *val,
            size_t vlen)
{
    struct mr_count *c = arg;

    (void)key;
    (void)klen;
    if (mrepl_rec_decode(val, vlen, c->rec) == 0) {
        c->n++;
        c->tomb += c->rec->tomb != 0;
    }
    return 0;
}

void
mesh_repl_status_enc(struct mesh_repl *r, struct ctl_enc *e)
{
    unsigned n = 0;
    int64_t now = mr_wall_ms();

    if (r == NULL) {
        ctl_enc_nil(e);
        return;
    }
    struct mr_count tally = {0, 0, NULL};
    for (unsigned i = 0; i < r->npeers; i++)
        n++;
    if ((tally.rec = malloc(sizeof(*tally.rec))) != NULL)
        store_mesh_each(r->n->store, "rp/", MR_KEY_PFX, mr_count_cb, &tally);
    free(tally.rec);
    ctl_enc_map(e, 17);
    ctl_enc_ku64(e, "antientropy_rounds", r->ae_rounds);
    ctl_enc_ku64(e, "records", tally.n);
    ctl_enc_ku64(e, "tombstones", tally.tomb);
    ctl_enc_ku64(e, "sent", r->puts_out);
    ctl_enc_ku64(e, "acks", r->acks_in);
    ctl_enc_ku64(e, "takeovers", r->takeovers);
    ctl_enc_ku64(e, "stood_down", r->stood_down);
    ctl_enc_ku64(e, "antientropy_sessions", r->ae_sessions);
    ctl_enc_ku64(e, "antientropy_bytes", r->ae_bytes);
    ctl_enc_ku64(e, "antientropy_repaired", r->ae_repaired);
    ctl_enc_ku64(e, "ack_waits", r->ack_waits);
    ctl_enc_ku64(e, "ack_waiting", r->nwaits);
    ctl_enc_ku64(e, "ack_ok", r->ack_ok);
    ctl_enc_ku64(e, "ack_timeouts", r->ack_timeouts);
    ctl_enc_ku64(e, "ack_cancelled", r->ack_cancelled);
    ctl_enc_ku64(e, "ack_refused", r->ack_refused);
    ctl_enc_str(e, "lag");
    ctl_enc_array(e, n);
    for (unsigned i = 0; i < r->npeers; i++) {
        char name[64];
        uint64_t cnt = 0;
        int64_t oldest = 0;
        for (unsigned j = 0; j < r->nlag; j++)
            if (memcmp(r->lag[j].peer, r->peers[i].pk, MREPL_PK) == 0) {
                cnt++;
                if (oldest == 0 || r->lag[j].sent_ms < oldest)
                    oldest = r->lag[j].sent_ms;
            }
        mr_name(r, r->peers[i].pk, name, sizeof(name));
        ctl_enc_map(e, 4);
        ctl_enc_kstr(e, "peer", name);
        ctl_enc_ku64(e, "unacked", cnt);
        ctl_enc_ku64(e, "oldest_ms", oldest ? (uint64_t)(now - oldest) : 0);
        ctl_enc_kbool(e, "synced", r->peers[i].synced);
    }
}

int
mesh_repl_describe(struct mesh *m, const char *qid, char *replicas, size_t rsz,
                   char *owner, size_t osz)
{
    struct mesh_repl *r = mesh__repl(m);
    struct mrepl_rec *rec;
    struct mr_alias a;
    uint8_t key[MREPL_KEY_LEN];
    size_t off = 0;
    int ok = 0;

    if (r == NULL || (rec = malloc(sizeof(*rec))) == NULL)
        return 0;
    if (mr_alias_get(r, qid, &a))
        memcpy(key, a.key, MREPL_KEY_LEN);
    else
        mrepl_key(mr_self(r), qid, key);
    if (mr_load(r, key, rec) == 0) {
        ok = 1;
        replicas[0] = '\0';
        for (unsigned i = 0; i < rec->nreplicas && off < rsz; i++) {
            char name[64];
            int w;
            mr_name(r, rec->replicas[i], name, sizeof(name));
            w = snprintf(replicas + off, rsz - off, "%s%s", i ? "," : "", name);
            if (w < 0)
                break;
            off += (size_t)w;
        }
        mr_name(r, rec->has_owner ? rec->owner : rec->origin, owner, osz);
    }
    free(rec);
    return ok;
}

int
mesh_repl_owns_key(const void *key, size_t klen)
{
    return klen > 3 &&
           (memcmp(key, "rp/", 3) == 0 || memcmp(key, "rb/", 3) == 0 ||
            memcmp(key, "rs/", 3) == 0 || memcmp(key, "rt/", 3) == 0 ||
            memcmp(key, "ra/", 3) == 0);
}

int
mesh_repl_new(struct mesh *m, struct mesh_repl **out)
{
    struct mesh_repl *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return -ENOMEM;
    r->scratch = malloc(sizeof(struct mrepl_put));
    if (r->scratch == NULL) {
        free(r);
        return -ENOMEM;
    }
    r->m = m;
    r->n = mesh__node(m);
    r->start_s = mr_mono_s(r);
    *out = r;
    return 0;
}

void
mesh_repl_stop(struct mesh_repl *r)
{
    if (r == NULL)
        return;
    mr_wait_stop_all(r);
    r->stopping = 1;
}

void
mesh_repl_free(struct mesh_repl *r)
{
    if (r == NULL)
        return;
    while (r->asms) {
        struct mr_asm *a = r->asms;
        r->asms = a->next;
        mr_asm_free(a);
    }
    while (r->sess)
        mr_sess_free(r, r->sess);
    while (r->out) {
        struct mr_out *o = r->out;
        r->out = o->next;
        mr_out_free(r, o);
    }
    while (r->pend) {
        struct mr_pend *p = r->pend;
        r->pend = p->next;
        free(p->rec);
        free(p);
    }
    free(r->scratch);
    free(r);
}
