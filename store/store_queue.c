/*
 * store_queue.c: queue entries and the due-time index.
 *
 * Invariant: an entry has a due row (keyed by its next_try) exactly when
 * its state is QUEUED or DEFERRED. Every change of state or next_try
 * moves the due row in the same transaction, so the queue manager finds
 * due work by reading the front of the due index only.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "store/store_int.h"

static int
store_q_waiting(uint8_t state)
{
    return state == STORE_Q_QUEUED || state == STORE_Q_DEFERRED;
}

static int
store_q_get(struct store *st, MDB_txn *txn, const char *qid, uint32_t rcpt,
            struct store__qrec *q)
{
    uint8_t kb[STORE__QKEY_LEN];
    MDB_val k = {sizeof(kb), kb}, v;
    int rc;

    store__qkey(kb, qid, rcpt);
    rc = mdb_get(txn, st->db.queue, &k, &v);
    if (rc != 0)
        return rc;
    rc = store__rec_q_decode(v.mv_data, v.mv_size, q);
    if (rc != 0)
        log_err("event=store.corrupt db=queue qid=%.16s rcpt=%u", qid, rcpt);
    return rc;
}

static int
store_q_put(struct store *st, MDB_txn *txn, const char *qid, uint32_t rcpt,
            const struct store__qrec *q)
{
    uint8_t kb[STORE__QKEY_LEN];
    MDB_val k = {sizeof(kb), kb}, v;
    int rc;

    rc = store__rec_q_encode(&st->enc, q);
    if (rc != 0)
        return rc;
    store__qkey(kb, qid, rcpt);
    v.mv_size = st->enc.len;
    v.mv_data = st->enc.data;
    return mdb_put(txn, st->db.queue, &k, &v, 0);
}

static int
store_due_put(struct store *st, MDB_txn *txn, int64_t t, const char *qid,
              uint32_t rcpt)
{
    uint8_t kb[STORE__DUEKEY_LEN];
    MDB_val k = {sizeof(kb), kb}, v = {0, NULL};

    store__duekey(kb, t, qid, rcpt);
    return mdb_put(txn, st->db.due, &k, &v, 0);
}

static int
store_due_del(struct store *st, MDB_txn *txn, int64_t t, const char *qid,
              uint32_t rcpt)
{
    uint8_t kb[STORE__DUEKEY_LEN];
    MDB_val k = {sizeof(kb), kb};
    int rc;

    store__duekey(kb, t, qid, rcpt);
    rc = mdb_del(txn, st->db.due, &k, NULL);
    if (rc == MDB_NOTFOUND) {
        log_warn("event=store.due_missing qid=%.16s rcpt=%u", qid, rcpt);
        rc = 0;
    }
    return rc;
}

static int store_hist_del(struct store *st, MDB_txn *txn, const char *qid,
                          uint32_t rcpt);

/* Remove one entry, its due row and its history; the caller drops the
   body ref. */
static int
store_q_del(struct store *st, MDB_txn *txn, const char *qid, uint32_t rcpt,
            const struct store__qrec *q)
{
    uint8_t kb[STORE__QKEY_LEN];
    MDB_val k = {sizeof(kb), kb};
    int rc = 0;

    if (store_q_waiting(q->state))
        rc = store_due_del(st, txn, q->next_try, qid, rcpt);
    if (rc == 0)
        rc = store_hist_del(st, txn, qid, rcpt);
    if (rc != 0)
        return rc;
    store__qkey(kb, qid, rcpt);
    return mdb_del(txn, st->db.queue, &k, NULL);
}

/* ---- delivery history -------------------------------------------- */

static void
store_histkey(uint8_t out[STORE__HISTKEY_LEN], const char *qid, uint32_t rcpt,
              uint32_t seq)
{
    store__qkey(out, qid, rcpt);
    out[STORE__QKEY_LEN] = (uint8_t)(seq >> 24);
    out[STORE__QKEY_LEN + 1] = (uint8_t)(seq >> 16);
    out[STORE__QKEY_LEN + 2] = (uint8_t)(seq >> 8);
    out[STORE__QKEY_LEN + 3] = (uint8_t)seq;
}

/* The history rows of one entry: first and last sequence numbers and how
   many (n = 0: none). */
static int
store_hist_range(struct store *st, MDB_txn *txn, const char *qid, uint32_t rcpt,
                 uint32_t *first, uint32_t *last, size_t *n)
{
    uint8_t kb[STORE__HISTKEY_LEN];
    MDB_cursor *c;
    MDB_val k = {sizeof(kb), kb}, v;
    int rc;

    *n = 0;
    rc = mdb_cursor_open(txn, st->db.hist, &c);
    if (rc != 0)
        return rc;
    store_histkey(kb, qid, rcpt, 0);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != STORE__HISTKEY_LEN ||
            memcmp(k.mv_data, kb, STORE__QKEY_LEN) != 0)
            break;
        *last = store__be32_get((const uint8_t *)k.mv_data + STORE__QKEY_LEN);
        if (*n == 0)
            *first = *last;
        (*n)++;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int
store_hist_add(struct store *st, MDB_txn *txn, const char *qid, uint32_t rcpt,
               const char *line)
{
    uint8_t kb[STORE__HISTKEY_LEN];
    MDB_val k = {sizeof(kb), kb}, v;
    uint32_t first = 0, last = 0;
    size_t n;
    int rc;

    rc = store_hist_range(st, txn, qid, rcpt, &first, &last, &n);
    if (rc != 0)
        return rc;
    if (n >= STORE__HIST_MAX) {
        store_histkey(kb, qid, rcpt, first);
        rc = mdb_del(txn, st->db.hist, &k, NULL);
        if (rc != 0)
            return rc;
    }
    store_histkey(kb, qid, rcpt, n ? last + 1 : 0);
    v.mv_size = strlen(line) + 1;
    v.mv_data = (void *)line;
    return mdb_put(txn, st->db.hist, &k, &v, 0);
}

static int
store_hist_del(struct store *st, MDB_txn *txn, const char *qid, uint32_t rcpt)
{
    uint8_t kb[STORE__HISTKEY_LEN];
    MDB_val k = {sizeof(kb), kb};
    uint32_t first = 0, last = 0;
    size_t n;
    int rc;

    rc = store_hist_range(st, txn, qid, rcpt, &first, &last, &n);
    for (uint32_t seq = first; rc == 0 && n > 0; seq++, n--) {
        store_histkey(kb, qid, rcpt, seq);
        rc = mdb_del(txn, st->db.hist, &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    return rc;
}

int
store_queue_history(struct store *st, const struct store_qkey *key,
                    store_line_cb cb, void *arg)
{
    uint8_t kb[STORE__HISTKEY_LEN];
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k = {sizeof(kb), kb}, v;
    int rc, cbret = 0;

    if (st == NULL || key == NULL || !store__qid_valid(key->qid))
        return RM_E_INVAL;
    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, st->db.hist, &c);
    if (rc == 0) {
        store_histkey(kb, key->qid, key->rcpt, 0);
        for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (k.mv_size != STORE__HISTKEY_LEN ||
                memcmp(k.mv_data, kb, STORE__QKEY_LEN) != 0)
                break;
            if (v.mv_size == 0 ||
                ((const char *)v.mv_data)[v.mv_size - 1] != '\0') {
                log_err("event=store.corrupt db=hist qid=%s", key->qid);
                continue;
            }
            if ((cbret = cb(arg, v.mv_data)) != 0)
                break;
        }
        mdb_cursor_close(c);
    }
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    return store__err(rc == MDB_NOTFOUND ? 0 : rc, "queue_history");
}

/* ---- local delivery -------------------------------------------------- */

static int
store_copy(char *dst, size_t dstsz, const char *src)
{
    size_t n = strlen(src);

    if (n >= dstsz)
        return RM_E_CORRUPT;
    memcpy(dst, src, n + 1);
    return 0;
}

static int
store_deliver_one(struct store *st, MDB_txn *txn, const struct store_qkey *key,
                  struct buf *prefix, int64_t now)
{
    struct store__qrec q;
    struct store__msgrec m;
    char mailbox[STORE__NAME_MAX + 1];
    uint32_t uid;
    int rc;

    rc = store_q_get(st, txn, key->qid, key->rcpt, &q);
    if (rc == MDB_NOTFOUND)
        return 0; /* already delivered (or deleted): idempotent */
    if (rc != 0)
        return rc;
    if (q.route != STORE_ROUTE_LOCAL) {
        log_err("event=store.deliver_not_local qid=%.16s rcpt=%u", key->qid,
                key->rcpt);
        return RM_E_INVAL;
    }
    if (q.state == STORE_Q_HOLD)
        return 0; /* held while the delivery was being prepared */
    rc = store_copy(mailbox, sizeof(mailbox), q.mailbox);
    if (rc != 0)
        return rc;
    rc = store__msg_get(st, txn, key->qid, &m);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? RM_E_CORRUPT : rc;

    buf_reset(prefix);
    rc = buf_appendf(prefix, "Return-Path: <%s>\r\nDelivered-To: %s\r\n",
                     m.mail_from, q.addr);
    if (rc != 0)
        return rc;
    /* The due row must go before any write: q points into the map. */
    rc = store_q_del(st, txn, key->qid, key->rcpt, &q);
    if (rc != 0)
        return rc;
    /* Re-read the message record: the deletes above may have moved it.
       The body's reference passes from the queue entry to the mailbox
       entry, so the refcount does not change. */
    rc = store__msg_get(st, txn, key->qid, &m);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? RM_E_CORRUPT : rc;
    rc = store__mailbox_append(st, txn, mailbox, key->qid, &m, prefix->data,
                               now, 0, &uid);
    if (rc == 0)
        log_info("event=store.delivered qid=%.16s rcpt=%u mailbox=%s uid=%u",
                 key->qid, key->rcpt, mailbox, uid);
    return rc;
}

static int
store_queue_apply_deliver(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    struct buf prefix;
    int rc = 0;

    buf_init(&prefix, 2 * STORE__REC_MAX);
    for (size_t i = 0; i < rq->u.deliver.nkeys && rc == 0; i++)
        rc = store_deliver_one(st, txn, &rq->u.deliver.keys[i], &prefix,
                               store__now());
    buf_cleanup(&prefix);
    return rc;
}

int
store_queue_deliver_local(struct store *st, const struct store_qkey *keys,
                          size_t nkeys, store_done_cb cb, void *arg)
{
    struct store__req *rq;

    if (st == NULL || (keys == NULL && nkeys > 0) ||
        nkeys > SIZE_MAX / sizeof(*keys) / 2)
        return RM_E_INVAL;
    if (st->closing)
        return RM_E_CLOSED;
    for (size_t i = 0; i < nkeys; i++)
        if (!store__qid_valid(keys[i].qid))
            return RM_E_INVAL;
    rq = store__req_new(nkeys * sizeof(*keys));
    if (rq == NULL)
        return -ENOMEM;
    /* Copied so that the caller's array may go before cb (safer than the
       contract asks). */
    rq->u.deliver.keys = (struct store_qkey *)(void *)rq->extra;
    if (nkeys)
        memcpy(rq->u.deliver.keys, keys, nkeys * sizeof(*keys));
    rq->u.deliver.nkeys = nkeys;
    return store__submit(st, rq, store_queue_apply_deliver,
                         "queue_deliver_local", cb, arg);
}

/* ---- administrative changes ----------------------------------------- */

enum store_qop {
    STORE_QOP_DELETE,
    STORE_QOP_HOLD,
    STORE_QOP_RELEASE,
    STORE_QOP_DEFER
};

/* The recipients the key names: one, or all of the qid (UINT32_MAX).
   Collected first so that the changes do not disturb a live cursor. */
static int
store_q_match(struct store *st, MDB_txn *txn, const struct store_qkey *key,
              uint32_t **out, size_t *nout)
{
    uint8_t kb[STORE__QKEY_LEN];
    MDB_cursor *c;
    MDB_val k = {sizeof(kb), kb}, v;
    uint32_t *a = NULL, *na;
    size_t n = 0, cap = 0;
    int rc;

    *out = NULL;
    *nout = 0;
    if (key->rcpt != UINT32_MAX) {
        store__qkey(kb, key->qid, key->rcpt);
        rc = mdb_get(txn, st->db.queue, &k, &v);
        if (rc != 0)
            return rc;
        a = malloc(sizeof(*a));
        if (a == NULL)
            return -ENOMEM;
        a[0] = key->rcpt;
        *out = a;
        *nout = 1;
        return 0;
    }
    rc = mdb_cursor_open(txn, st->db.queue, &c);
    if (rc != 0)
        return rc;
    store__qkey(kb, key->qid, 0);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != STORE__QKEY_LEN ||
            memcmp(k.mv_data, key->qid, STORE_QID_LEN) != 0)
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            na = realloc(a, cap * sizeof(*a));
            if (na == NULL) {
                rc = -ENOMEM;
                break;
            }
            a = na;
        }
        a[n++] = store__be32_get((const uint8_t *)k.mv_data + STORE_QID_LEN);
    }
    mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        free(a);
        return rc;
    }
    if (n == 0) {
        free(a);
        return MDB_NOTFOUND;
    }
    *out = a;
    *nout = n;
    return 0;
}

static int
store_q_change(struct store *st, MDB_txn *txn, enum store_qop op,
               const char *qid, uint32_t rcpt, int64_t t, const char *error)
{
    struct store__qrec q;
    int rc;

    rc = store_q_get(st, txn, qid, rcpt, &q);
    if (rc != 0)
        return rc;
    switch (op) {
    case STORE_QOP_DELETE:
        return store_q_del(st, txn, qid, rcpt, &q);
    case STORE_QOP_HOLD:
        if (!store_q_waiting(q.state))
            return 0;
        rc = store_due_del(st, txn, q.next_try, qid, rcpt);
        q.state = STORE_Q_HOLD;
        break;
    case STORE_QOP_RELEASE:
        if (q.state != STORE_Q_HOLD)
            return 0;
        q.state = STORE_Q_QUEUED;
        q.next_try = t;
        rc = store_due_put(st, txn, q.next_try, qid, rcpt);
        break;
    case STORE_QOP_DEFER:
        q.attempts++;
        q.last_error = error;
        /* An entry held while its attempt ran stays held: the attempt is
           recorded, the administrator's hold wins. */
        if (q.state != STORE_Q_HOLD) {
            rc = store_due_del(st, txn, q.next_try, qid, rcpt);
            if (rc == 0)
                rc = store_due_put(st, txn, t, qid, rcpt);
            q.state = STORE_Q_DEFERRED;
        }
        q.next_try = t;
        break;
    }
    if (rc != 0)
        return rc;
    /* Encoding copies q's strings (which point into the map) before the
       put can move them. */
    return store_q_put(st, txn, qid, rcpt, &q);
}

static int
store_q_apply(struct store *st, MDB_txn *txn, struct store__req *rq,
              enum store_qop op)
{
    uint32_t *rcpts;
    size_t n;
    int rc;

    rc = store_q_match(st, txn, &rq->u.q.key, &rcpts, &n);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = store_q_change(st, txn, op, rq->u.q.key.qid, rcpts[i], rq->u.q.t,
                            rq->u.q.error);
    free(rcpts);
    if (rc == 0 && op == STORE_QOP_DELETE)
        rc = store__msg_unref(st, txn, rq->u.q.key.qid, (uint32_t)n);
    if (rc == 0)
        log_info("event=store.queue_%s qid=%.16s rcpt=%d n=%zu", rq->name,
                 rq->u.q.key.qid,
                 rq->u.q.key.rcpt == UINT32_MAX ? -1 : (int)rq->u.q.key.rcpt,
                 n);
    return rc;
}

static int
store_q_apply_delete(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    return store_q_apply(st, txn, rq, STORE_QOP_DELETE);
}

static int
store_q_apply_hold(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    return store_q_apply(st, txn, rq, STORE_QOP_HOLD);
}

static int
store_q_apply_release(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    return store_q_apply(st, txn, rq, STORE_QOP_RELEASE);
}

static int
store_q_apply_defer(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    return store_q_apply(st, txn, rq, STORE_QOP_DEFER);
}

static int
store_q_submit(struct store *st, const struct store_qkey *key, int64_t t,
               const char *error, store__apply_fn apply, const char *name,
               store_done_cb cb, void *arg)
{
    struct store__req *rq;
    size_t elen = error ? strlen(error) : 0;

    if (st == NULL || key == NULL || !store__qid_valid(key->qid) ||
        elen > STORE__REC_MAX / 2)
        return RM_E_INVAL;
    if (st->closing)
        return RM_E_CLOSED;
    rq = store__req_new(elen + 1);
    if (rq == NULL)
        return -ENOMEM;
    rq->u.q.key = *key;
    rq->u.q.t = t;
    if (elen)
        memcpy(rq->extra, error, elen);
    rq->extra[elen] = '\0';
    rq->u.q.error = rq->extra;
    return store__submit(st, rq, apply, name, cb, arg);
}

int
store_queue_delete(struct store *st, const struct store_qkey *key,
                   store_done_cb cb, void *arg)
{
    return store_q_submit(st, key, 0, NULL, store_q_apply_delete, "delete", cb,
                          arg);
}

static int
store_q_apply_withdraw(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    struct store_qkey key;
    uint32_t *rcpts = NULL;
    size_t n = 0;
    int rc;

    memcpy(key.qid, rq->u.mesh.qid, sizeof(key.qid));
    key.rcpt = UINT32_MAX;
    rc = store_q_match(st, txn, &key, &rcpts, &n);
    if (rc == MDB_NOTFOUND)
        rc = 0; /* nothing left in the queue: the mesh writes still go */
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = store_q_change(st, txn, STORE_QOP_DELETE, key.qid, rcpts[i], 0,
                            NULL);
    free(rcpts);
    if (rc == 0 && n > 0)
        rc = store__msg_unref(st, txn, key.qid, (uint32_t)n);
    if (rc == 0)
        rc = store__mesh_apply_txn(st, txn, rq);
    if (rc == 0)
        log_info("event=store.queue_withdraw qid=%.16s n=%zu", key.qid, n);
    return rc;
}

int
store_queue_withdraw(struct store *st, const char *qid,
                     const struct store_mesh_write *w, size_t n,
                     store_done_cb cb, void *arg)
{
    struct store__req *rq;
    int rc;

    if (st == NULL || qid == NULL || !store__qid_valid(qid))
        return RM_E_INVAL;
    if ((rc = store__mesh_req(w, n, &rq)) != 0)
        return rc;
    memcpy(rq->u.mesh.qid, qid, STORE_QID_LEN);
    rq->u.mesh.qid[STORE_QID_LEN] = '\0';
    return store__submit(st, rq, store_q_apply_withdraw, "withdraw", cb, arg);
}

int
store_queue_hold(struct store *st, const struct store_qkey *key,
                 store_done_cb cb, void *arg)
{
    return store_q_submit(st, key, 0, NULL, store_q_apply_hold, "hold", cb,
                          arg);
}

int
store_queue_release(struct store *st, const struct store_qkey *key,
                    store_done_cb cb, void *arg)
{
    return store_q_submit(st, key, store__now(), NULL, store_q_apply_release,
                          "release", cb, arg);
}

int
store_queue_defer(struct store *st, const struct store_qkey *key,
                  int64_t next_try, const char *error, store_done_cb cb,
                  void *arg)
{
    return store_q_submit(st, key, next_try, error, store_q_apply_defer,
                          "defer", cb, arg);
}

/* ---- delivery outcomes ------------------------------------------- */

static int
store_result_one(struct store *st, MDB_txn *txn, const struct store_qresult *r)
{
    struct store__qrec q;
    int rc;

    rc = store_q_get(st, txn, r->key.qid, r->key.rcpt, &q);
    if (rc == MDB_NOTFOUND)
        return 0; /* deleted by the administrator meanwhile */
    if (rc != 0)
        return rc;
    switch (r->outcome) {
    case STORE_OUT_DELIVERED:
    case STORE_OUT_BOUNCED:
        rc = store_q_del(st, txn, r->key.qid, r->key.rcpt, &q);
        if (rc == 0)
            rc = store__msg_unref(st, txn, r->key.qid, 1);
        return rc;
    case STORE_OUT_DEFERRED:
        q.attempts++;
        if (r->error != NULL)
            q.last_error = r->error;
        q.notify |= r->set_notify;
        if (q.state != STORE_Q_HOLD) {
            if (store_q_waiting(q.state))
                rc =
                    store_due_del(st, txn, q.next_try, r->key.qid, r->key.rcpt);
            if (rc == 0)
                rc = store_due_put(st, txn, r->next_try, r->key.qid,
                                   r->key.rcpt);
            q.state = STORE_Q_DEFERRED;
        }
        q.next_try = r->next_try;
        if (rc == 0)
            rc = store_q_put(st, txn, r->key.qid, r->key.rcpt, &q);
        if (rc == 0 && r->history != NULL)
            rc = store_hist_add(st, txn, r->key.qid, r->key.rcpt, r->history);
        return rc;
    }
    return RM_E_INVAL;
}

static int
store_q_apply_results(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    int rc = 0;

    /* The report first: store_result_one may drop the last reference to
       a body, and the report never shares one. */
    if (rq->u.results.report != NULL)
        rc = store__msg_put(st, txn, rq->u.results.report,
                            (uint32_t)rq->u.results.report->nrcpts);
    for (size_t i = 0; i < rq->u.results.n && rc == 0; i++)
        rc = store_result_one(st, txn, &rq->u.results.r[i]);
    return rc;
}

static size_t
store_str_size(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

static const char *
store_str_copy(char **p, const char *s)
{
    char *d = *p;
    size_t n;

    if (s == NULL)
        return NULL;
    n = strlen(s) + 1;
    memcpy(d, s, n);
    *p += n;
    return d;
}

int
store_queue_results(struct store *st, const struct store_qresult *r, size_t n,
                    const struct store_msg *report, store_done_cb cb, void *arg)
{
    struct store__req *rq;
    struct store_qresult *copy;
    size_t extra;
    char *p;

    if (st == NULL || (r == NULL && n > 0) || n > (1u << 20) ||
        (report != NULL && !store__msg_valid(report)))
        return RM_E_INVAL;
    if (st->closing)
        return RM_E_CLOSED;
    extra = n * sizeof(*r);
    for (size_t i = 0; i < n; i++) {
        if (!store__qid_valid(r[i].key.qid) ||
            (unsigned)r[i].outcome > STORE_OUT_DEFERRED ||
            store_str_size(r[i].error) > STORE__REC_MAX / 4 ||
            store_str_size(r[i].history) > STORE__REC_MAX / 4)
            return RM_E_INVAL;
        extra += store_str_size(r[i].error) + store_str_size(r[i].history);
    }
    rq = store__req_new(extra);
    if (rq == NULL)
        return -ENOMEM;
    copy = (struct store_qresult *)(void *)rq->extra;
    p = rq->extra + n * sizeof(*r);
    for (size_t i = 0; i < n; i++) {
        copy[i] = r[i];
        copy[i].error = store_str_copy(&p, r[i].error);
        copy[i].history = store_str_copy(&p, r[i].history);
    }
    rq->u.results.r = copy;
    rq->u.results.n = n;
    rq->u.results.report = report;
    rq->wbytes = report ? report->len : 0;
    return store__submit(st, rq, store_q_apply_results, "queue_results", cb,
                         arg);
}

/* Move waiting entries' next try to now (`queue retry`). */
static int
store_retry_one(struct store *st, MDB_txn *txn, const char *qid, uint32_t rcpt,
                int64_t now, size_t *moved)
{
    struct store__qrec q;
    int rc;

    rc = store_q_get(st, txn, qid, rcpt, &q);
    if (rc != 0)
        return rc;
    if (!store_q_waiting(q.state) || q.next_try <= now)
        return 0;
    rc = store_due_del(st, txn, q.next_try, qid, rcpt);
    if (rc == 0)
        rc = store_due_put(st, txn, now, qid, rcpt);
    q.next_try = now;
    if (rc == 0)
        rc = store_q_put(st, txn, qid, rcpt, &q);
    if (rc == 0)
        (*moved)++;
    return rc;
}

static int
store_q_apply_retry(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    int64_t now = rq->u.q.t;
    size_t moved = 0;
    int rc;

    if (rq->u.q.key.qid[0] != '\0') {
        uint32_t *rcpts;
        size_t n;
        rc = store_q_match(st, txn, &rq->u.q.key, &rcpts, &n);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = store_retry_one(st, txn, rq->u.q.key.qid, rcpts[i], now,
                                 &moved);
        free(rcpts);
    } else {
        /* Every waiting entry that is not due yet: the due rows after
           now, collected first (the moves change the index). */
        MDB_cursor *c;
        MDB_val k, v;
        uint8_t kb[STORE__DUEKEY_LEN], *keys = NULL, *nk;
        size_t n = 0, cap = 0;

        rc = mdb_cursor_open(txn, st->db.due, &c);
        if (rc != 0)
            return rc;
        store__duekey(kb, now + 1, "0000000000000000", 0);
        k.mv_size = sizeof(kb);
        k.mv_data = kb;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (k.mv_size != STORE__DUEKEY_LEN)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                nk = realloc(keys, cap * STORE__QKEY_LEN);
                if (nk == NULL) {
                    rc = -ENOMEM;
                    break;
                }
                keys = nk;
            }
            memcpy(keys + n * STORE__QKEY_LEN, (uint8_t *)k.mv_data + 8,
                   STORE__QKEY_LEN);
            n++;
        }
        mdb_cursor_close(c);
        if (rc == MDB_NOTFOUND)
            rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
            char qid[STORE_QID_LEN + 1];
            memcpy(qid, keys + i * STORE__QKEY_LEN, STORE_QID_LEN);
            qid[STORE_QID_LEN] = '\0';
            rc = store_retry_one(
                st, txn, qid,
                store__be32_get(keys + i * STORE__QKEY_LEN + STORE_QID_LEN),
                now, &moved);
            if (rc == MDB_NOTFOUND)
                rc = 0;
        }
        free(keys);
    }
    if (rc == 0)
        log_info("event=store.queue_retry qid=%s moved=%zu",
                 rq->u.q.key.qid[0] ? rq->u.q.key.qid : "all", moved);
    return rc;
}

int
store_queue_retry(struct store *st, const struct store_qkey *key,
                  store_done_cb cb, void *arg)
{
    struct store__req *rq;

    if (st == NULL || (key != NULL && !store__qid_valid(key->qid)))
        return RM_E_INVAL;
    if (st->closing)
        return RM_E_CLOSED;
    rq = store__req_new(1);
    if (rq == NULL)
        return -ENOMEM;
    if (key != NULL)
        rq->u.q.key = *key;
    else
        memset(&rq->u.q.key, 0, sizeof(rq->u.q.key));
    rq->u.q.t = store__now();
    return store__submit(st, rq, store_q_apply_retry, "retry", cb, arg);
}

/* ---- reads ----------------------------------------------------------- */

/* Build the public view of one entry; m is the message it belongs to. */
static void
store_qentry_fill(struct store_qentry *e, const uint8_t *key,
                  const struct store__qrec *q, const struct store__msgrec *m)
{
    memset(e, 0, sizeof(*e));
    memcpy(e->key.qid, key, STORE_QID_LEN);
    e->key.qid[STORE_QID_LEN] = '\0';
    e->key.rcpt = store__be32_get(key + STORE_QID_LEN);
    e->state = (enum store_qstate)q->state;
    e->route = (enum store_route)q->route;
    e->addr = q->addr;
    e->mailbox = q->mailbox;
    e->orcpt = q->orcpt;
    e->notify = q->notify;
    e->attempts = q->attempts;
    e->next_try = q->next_try;
    e->last_error = q->last_error;
    e->mail_from = m->mail_from;
    e->envid = m->envid;
    e->ret = (enum store_ret)m->ret;
    e->body_type = (enum store_body)m->body_type;
    e->smtputf8 = m->smtputf8;
    e->arrival = m->arrival;
    e->size = m->size;
    e->client = m->client;
    e->hdr_subject = m->hdr_subject;
}

/* Decode the entry at k/v (and its message, cached across the entries of
   one qid) and hand it to cb. */
static int
store_qentry_emit(struct store *st, MDB_txn *txn, const MDB_val *k,
                  const MDB_val *v, struct store__msgrec *m, char *mqid,
                  store_qentry_cb cb, void *arg, int *cbret)
{
    struct store__qrec q;
    struct store_qentry e;
    int rc;

    if (k->mv_size != STORE__QKEY_LEN) {
        log_err("event=store.corrupt db=queue reason=key_size");
        return RM_E_CORRUPT;
    }
    rc = store__rec_q_decode(v->mv_data, v->mv_size, &q);
    if (rc != 0) {
        log_err("event=store.corrupt db=queue qid=%.16s",
                (const char *)k->mv_data);
        return rc;
    }
    if (memcmp(mqid, k->mv_data, STORE_QID_LEN) != 0) {
        char qid[STORE_QID_LEN + 1];

        memcpy(qid, k->mv_data, STORE_QID_LEN);
        qid[STORE_QID_LEN] = '\0';
        rc = store__msg_get(st, txn, qid, m);
        if (rc == MDB_NOTFOUND) {
            log_err("event=store.corrupt db=msgs qid=%s reason=missing", qid);
            return RM_E_CORRUPT;
        }
        if (rc != 0)
            return store__err(rc, "queue_read");
        memcpy(mqid, qid, STORE_QID_LEN);
    }
    store_qentry_fill(&e, k->mv_data, &q, m);
    *cbret = cb(arg, &e);
    return 0;
}

static int
store_queue_scan(struct store *st, const char *qid, store_qentry_cb cb,
                 void *arg)
{
    uint8_t kb[STORE__QKEY_LEN];
    char mqid[STORE_QID_LEN] = {0};
    struct store__msgrec m;
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    int rc, found = 0, cbret = 0;

    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, st->db.queue, &c);
    if (rc != 0) {
        store__rd_end(st, txn);
        return store__err(rc, "queue_read");
    }
    if (qid) {
        k.mv_size = store__qkey(kb, qid, 0);
        k.mv_data = kb;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (qid && (k.mv_size < STORE_QID_LEN ||
                    memcmp(k.mv_data, qid, STORE_QID_LEN) != 0))
            break;
        found = 1;
        rc = store_qentry_emit(st, txn, &k, &v, &m, mqid, cb, arg, &cbret);
        if (rc != 0 || cbret != 0)
            break;
    }
    mdb_cursor_close(c);
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (rc == 0 && qid && !found)
        return RM_E_NOTFOUND;
    return store__err(rc, "queue_read");
}

int
store_queue_list(struct store *st, store_qentry_cb cb, void *arg)
{
    return store_queue_scan(st, NULL, cb, arg);
}

int
store_queue_get(struct store *st, const char *qid, store_qentry_cb cb,
                void *arg)
{
    if (qid == NULL || !store__qid_valid(qid))
        return RM_E_INVAL;
    return store_queue_scan(st, qid, cb, arg);
}

static int store_queue_due_int(struct store *st, int64_t now, size_t max,
                               store_qentry_cb cb, void *arg, int64_t *next);

int
store_queue_due(struct store *st, int64_t now, size_t max, store_qentry_cb cb,
                void *arg)
{
    return store_queue_due_int(st, now, max, cb, arg, NULL);
}

int
store_queue_due_scan(struct store *st, int64_t now, store_qentry_cb cb,
                     void *arg, int64_t *next)
{
    *next = INT64_MAX;
    return store_queue_due_int(st, now, 0, cb, arg, next);
}

static int
store_queue_due_int(struct store *st, int64_t now, size_t max,
                    store_qentry_cb cb, void *arg, int64_t *next)
{
    char mqid[STORE_QID_LEN] = {0};
    struct store__msgrec m;
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v, qk, qv;
    size_t n = 0;
    int rc, cbret = 0;

    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, st->db.due, &c);
    if (rc != 0) {
        store__rd_end(st, txn);
        return store__err(rc, "queue_due");
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (max && n >= max)
            break;
        if (k.mv_size != STORE__DUEKEY_LEN) {
            log_err("event=store.corrupt db=due reason=key_size");
            rc = RM_E_CORRUPT;
            break;
        }
        if (store__duekey_time(k.mv_data) > now) {
            if (next != NULL)
                *next = store__duekey_time(k.mv_data);
            break;
        }
        qk.mv_size = STORE__QKEY_LEN;
        qk.mv_data = (uint8_t *)k.mv_data + 8;
        rc = mdb_get(txn, st->db.queue, &qk, &qv);
        if (rc == MDB_NOTFOUND) {
            /* A stale due row is harmless to skip; the writer logs it
               when it removes it. */
            rc = 0;
            continue;
        }
        if (rc != 0)
            break;
        rc = store_qentry_emit(st, txn, &qk, &qv, &m, mqid, cb, arg, &cbret);
        if (rc != 0 || cbret != 0)
            break;
        n++;
    }
    mdb_cursor_close(c);
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    if (rc == MDB_NOTFOUND)
        rc = 0;
    return store__err(rc, "queue_due");
}

int
store_queue_next_due(struct store *st, int64_t *out)
{
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    int rc;

    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, st->db.due, &c);
    if (rc == 0) {
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        if (rc == 0 && k.mv_size != STORE__DUEKEY_LEN)
            rc = RM_E_CORRUPT;
        else if (rc == 0)
            *out = store__duekey_time(k.mv_data);
        mdb_cursor_close(c);
    }
    store__rd_end(st, txn);
    return store__err(rc, "queue_next_due");
}
