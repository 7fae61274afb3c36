/*
 * store_msg.c: accepting messages (body chunks, message record, one queue
 * entry and due row per recipient) and the body reference count.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "store/store_int.h"

int
store__msg_get(struct store *st, MDB_txn *txn, const char *qid,
               struct store__msgrec *out)
{
    MDB_val k = {STORE_QID_LEN, (void *)qid}, v;
    int rc;

    rc = mdb_get(txn, st->db.msgs, &k, &v);
    if (rc != 0)
        return rc;
    rc = store__rec_msg_decode(v.mv_data, v.mv_size, out);
    if (rc != 0)
        log_err("event=store.corrupt db=msgs qid=%.16s", qid);
    return rc;
}

int
store__body_count(struct store *st, const char *qid, uint32_t *n)
{
    uint8_t kb[STORE__QKEY_LEN];
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k = {sizeof(kb), kb}, v;
    int rc;

    *n = 0;
    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, st->db.bodies, &c);
    if (rc == 0) {
        store__bodykey(kb, qid, 0);
        for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
             rc == 0 && k.mv_size == STORE__QKEY_LEN &&
             memcmp(k.mv_data, qid, STORE_QID_LEN) == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
            (*n)++;
        mdb_cursor_close(c);
    }
    store__rd_end(st, txn);
    return rc == MDB_NOTFOUND ? 0 : store__err(rc, "body_count");
}

/* Chunk keys are known from the count: no cursor walk over deletions. */
static int
store_body_del(struct store *st, MDB_txn *txn, const char *qid,
               uint32_t nchunks)
{
    uint8_t kb[STORE__QKEY_LEN];
    MDB_val k = {sizeof(kb), kb};
    int rc;

    for (uint32_t i = 0; i < nchunks; i++) {
        store__bodykey(kb, qid, i);
        rc = mdb_del(txn, st->db.bodies, &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return rc;
    }
    return 0;
}

int
store__msg_unref(struct store *st, MDB_txn *txn, const char *qid, uint32_t n)
{
    struct store__msgrec m;
    MDB_val k = {STORE_QID_LEN, (void *)qid}, v;
    int rc;

    if (n == 0)
        return 0;
    rc = store__msg_get(st, txn, qid, &m);
    if (rc != 0)
        return rc;
    if (m.refcount > n) {
        m.refcount -= n;
        rc = store__rec_msg_encode(&st->enc, &m);
        if (rc != 0)
            return rc;
        v.mv_size = st->enc.len;
        v.mv_data = st->enc.data;
        return mdb_put(txn, st->db.msgs, &k, &v, 0);
    }
    if (m.refcount < n)
        log_err("event=store.refcount_underflow qid=%.16s refcount=%u "
                "drop=%u",
                qid, m.refcount, n);
    rc = store_body_del(st, txn, qid, m.nchunks);
    if (rc == 0)
        rc = mdb_del(txn, st->db.msgs, &k, NULL);
    return rc;
}

static int
store_msg_apply_accept(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    const struct store_msg *m = rq->u.accept.m;

    /* The dedup keys first: one already there fails the request (the
       nested transaction is dropped) before anything else is written. */
    for (size_t i = 0; i < m->nmesh_new; i++) {
        const struct store_mesh_write *w = &m->mesh_new[i];
        MDB_val k = {w->klen, (void *)w->key};
        MDB_val v = {w->vlen, (void *)w->val};
        int rc = mdb_put(txn, st->db.mesh, &k, &v, MDB_NOOVERWRITE);

        if (rc != 0)
            return rc;
    }
    return store__msg_put(st, txn, m, (uint32_t)m->nrcpts);
}

int
store__msg_put(struct store *st, MDB_txn *txn, const struct store_msg *m,
               uint32_t refs)
{
    struct store__msgrec mr;
    uint8_t kb[STORE__DUEKEY_LEN];
    MDB_val k, v;
    size_t off;
    uint32_t i;
    int rc;

    memset(&mr, 0, sizeof(mr));
    mr.refcount = refs;
    mr.nchunks = (uint32_t)((m->len + STORE__CHUNK - 1) / STORE__CHUNK);
    mr.size = m->len;
    mr.arrival = m->arrival;
    mr.ret = (uint8_t)m->ret;
    mr.body_type = (uint8_t)m->body_type;
    mr.smtputf8 = m->smtputf8 ? 1 : 0;
    mr.mail_from = m->mail_from;
    mr.envid = m->envid;
    mr.client = m->client;
    mr.hdr_from = m->hdr_from;
    mr.hdr_subject = m->hdr_subject;
    mr.hdr_msgid = m->hdr_msgid;
    mr.hdr_date = m->hdr_date;
    rc = store__rec_msg_encode(&st->enc, &mr);
    if (rc != 0)
        return rc;
    k.mv_size = STORE_QID_LEN;
    k.mv_data = (void *)m->qid;
    v.mv_size = st->enc.len;
    v.mv_data = st->enc.data;
    rc = mdb_put(txn, st->db.msgs, &k, &v, MDB_NOOVERWRITE);
    if (rc != 0)
        return rc;

    for (i = 0, off = 0; off < m->len; i++, off += STORE__CHUNK) {
        k.mv_size = store__bodykey(kb, m->qid, i);
        k.mv_data = kb;
        v.mv_size = m->len - off < STORE__CHUNK ? m->len - off : STORE__CHUNK;
        v.mv_data = (void *)(m->data + off);
        rc = mdb_put(txn, st->db.bodies, &k, &v, 0);
        if (rc != 0)
            return rc;
    }

    for (i = 0; i < m->nrcpts; i++) {
        const struct store_rcpt *r = &m->rcpts[i];
        struct store__qrec q = {
            .state = STORE_Q_QUEUED,
            .route = (uint8_t)r->route,
            .notify = r->notify,
            .attempts = 0,
            .next_try = m->arrival,
            .addr = r->addr,
            .mailbox = r->route == STORE_ROUTE_LOCAL ? r->mailbox : "",
            .orcpt = r->orcpt,
            .last_error = "",
        };

        rc = store__rec_q_encode(&st->enc, &q);
        if (rc != 0)
            return rc;
        k.mv_size = store__qkey(kb, m->qid, i);
        k.mv_data = kb;
        v.mv_size = st->enc.len;
        v.mv_data = st->enc.data;
        rc = mdb_put(txn, st->db.queue, &k, &v, MDB_NOOVERWRITE);
        if (rc != 0)
            return rc;
        k.mv_size = store__duekey(kb, m->arrival, m->qid, i);
        v.mv_size = 0;
        v.mv_data = NULL;
        rc = mdb_put(txn, st->db.due, &k, &v, 0);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int
store_str_ok(const char *s, size_t max)
{
    return s != NULL && strlen(s) <= max;
}

int
store_msg_accept(struct store *st, const struct store_msg *m, store_done_cb cb,
                 void *arg)
{
    struct store__req *rq;

    if (st == NULL || m == NULL)
        return RM_E_INVAL;
    if (st->closing)
        return RM_E_CLOSED;
    if (!store__msg_valid(m))
        return RM_E_INVAL;
    if (m->nmesh_new > 0 && m->mesh_new == NULL)
        return RM_E_INVAL;
    for (size_t i = 0; i < m->nmesh_new; i++) {
        const struct store_mesh_write *w = &m->mesh_new[i];

        if (w->op != STORE_MESH_NEW || w->key == NULL || w->klen == 0 ||
            w->klen > STORE_MESH_KEY_MAX || w->vlen > STORE_MESH_VAL_MAX ||
            (w->vlen > 0 && w->val == NULL))
            return RM_E_INVAL;
    }
    rq = store__req_new(0);
    if (rq == NULL)
        return -ENOMEM;
    rq->u.accept.m = m;
    rq->wbytes = m->len;
    return store__submit(st, rq, store_msg_apply_accept, "msg_accept", cb, arg);
}

int
store__msg_valid(const struct store_msg *m)
{
    if (!store__qid_valid(m->qid) || m->nrcpts == 0 ||
        m->nrcpts >= UINT32_MAX || m->rcpts == NULL ||
        !store_str_ok(m->mail_from, STORE_ADDR_MAX) ||
        (m->len > 0 && m->data == NULL) ||
        m->len / STORE__CHUNK >= UINT32_MAX ||
        (unsigned)m->ret > STORE_RET_HDRS ||
        (unsigned)m->body_type > STORE_BODY_BINARYMIME)
        return 0;
    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct store_rcpt *r = &m->rcpts[i];

        if (!store_str_ok(r->addr, STORE_ADDR_MAX) || r->addr[0] == '\0')
            return 0;
        if (r->route == STORE_ROUTE_LOCAL &&
            (!store_str_ok(r->mailbox, STORE__NAME_MAX) ||
             r->mailbox[0] == '\0'))
            return 0;
        if (r->route != STORE_ROUTE_LOCAL && r->route != STORE_ROUTE_REMOTE)
            return 0;
    }
    return 1;
}

int
store_msg_read(struct store *st, const char *qid, store_chunk_cb cb, void *arg)
{
    struct store__msgrec m;
    uint8_t kb[STORE__QKEY_LEN];
    MDB_txn *txn;
    MDB_val k = {sizeof(kb), kb}, v;
    uint64_t got = 0;
    int rc, cbret = 0;

    if (st == NULL || qid == NULL || !store__qid_valid(qid))
        return RM_E_INVAL;
    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = store__msg_get(st, txn, qid, &m);
    for (uint32_t i = 0; rc == 0 && cbret == 0 && i < m.nchunks; i++) {
        store__bodykey(kb, qid, i);
        rc = mdb_get(txn, st->db.bodies, &k, &v);
        if (rc == 0 && (v.mv_size == 0 || v.mv_size > m.size - got))
            rc = RM_E_CORRUPT;
        else if (rc == MDB_NOTFOUND)
            rc = RM_E_CORRUPT;
        else if (rc == 0) {
            got += v.mv_size;
            cbret = cb(arg, v.mv_data, v.mv_size);
        }
        if (rc == RM_E_CORRUPT)
            log_err("event=store.corrupt db=bodies qid=%s chunk=%u", qid, i);
    }
    if (rc == 0 && cbret == 0 && got != m.size) {
        log_err("event=store.corrupt db=bodies qid=%s reason=short", qid);
        rc = RM_E_CORRUPT;
    }
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    if (rc == MDB_NOTFOUND)
        return RM_E_NOTFOUND;
    return store__err(rc, "msg_read");
}
