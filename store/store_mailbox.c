/*
 * store_mailbox.c: mailboxes with IMAP-style UIDs (RFC 3501 §2.3.1.1).
 *
 * A mailbox record holds UIDVALIDITY (set once, when the mailbox is
 * created by its first delivery), UIDNEXT, and the message count and
 * bytes. Each message is a mail record keyed by name + NUL + UID (so one
 * mailbox's messages are contiguous and in UID order, and "a" never
 * prefixes "ab"); its body is the shared body of its queue id.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "store/store_int.h"

static int
store_mbox_get(struct store *st, MDB_txn *txn, const char *mailbox,
               struct store__mboxrec *x)
{
    MDB_val k = {strlen(mailbox), (void *)mailbox}, v;
    int rc;

    rc = mdb_get(txn, st->db.mbox, &k, &v);
    if (rc != 0)
        return rc;
    rc = store__rec_mbox_decode(v.mv_data, v.mv_size, x);
    if (rc != 0)
        log_err("event=store.corrupt db=mbox mailbox=%s", mailbox);
    return rc;
}

static int
store_mbox_put(struct store *st, MDB_txn *txn, const char *mailbox,
               const struct store__mboxrec *x)
{
    MDB_val k = {strlen(mailbox), (void *)mailbox}, v;
    int rc;

    rc = store__rec_mbox_encode(&st->enc, x);
    if (rc != 0)
        return rc;
    v.mv_size = st->enc.len;
    v.mv_data = st->enc.data;
    return mdb_put(txn, st->db.mbox, &k, &v, 0);
}

static int
store_mail_get(struct store *st, MDB_txn *txn, const char *mailbox,
               uint32_t uid, struct store__mailrec *x)
{
    uint8_t kb[STORE__MAILKEY_MAX];
    MDB_val k = {0, kb}, v;
    int rc;

    rc = store__mailkey(kb, mailbox, uid, &k.mv_size);
    if (rc != 0)
        return rc;
    rc = mdb_get(txn, st->db.mail, &k, &v);
    if (rc != 0)
        return rc;
    rc = store__rec_mail_decode(v.mv_data, v.mv_size, x);
    if (rc != 0)
        log_err("event=store.corrupt db=mail mailbox=%s uid=%u", mailbox, uid);
    return rc;
}

static int
store_mail_put(struct store *st, MDB_txn *txn, const char *mailbox,
               uint32_t uid, const struct store__mailrec *x)
{
    uint8_t kb[STORE__MAILKEY_MAX];
    MDB_val k = {0, kb}, v;
    int rc;

    rc = store__mailkey(kb, mailbox, uid, &k.mv_size);
    if (rc == 0)
        rc = store__rec_mail_encode(&st->enc, x);
    if (rc != 0)
        return rc;
    v.mv_size = st->enc.len;
    v.mv_data = st->enc.data;
    return mdb_put(txn, st->db.mail, &k, &v, 0);
}

int
store__mailbox_append(struct store *st, MDB_txn *txn, const char *mailbox,
                      const char *qid, const struct store__msgrec *msg,
                      const char *prefix, int64_t now, unsigned flags,
                      uint32_t *uid)
{
    struct store__mboxrec mb;
    struct store__mailrec ml;
    char qidz[STORE_QID_LEN + 1];
    int rc;

    rc = store_mbox_get(st, txn, mailbox, &mb);
    if (rc == MDB_NOTFOUND) {
        /* UIDVALIDITY from the clock: a mailbox recreated after a wipe
           gets a different one, so clients drop their caches. */
        mb.uidvalidity = now > 0 ? (uint32_t)now : 1;
        if (mb.uidvalidity == 0)
            mb.uidvalidity = 1;
        mb.uidnext = 1;
        mb.count = 0;
        mb.bytes = 0;
    } else if (rc != 0) {
        return rc;
    }
    if (mb.uidnext == UINT32_MAX) {
        log_err("event=store.uid_exhausted mailbox=%s", mailbox);
        return RM_E_FULL;
    }
    memcpy(qidz, qid, STORE_QID_LEN);
    qidz[STORE_QID_LEN] = '\0';
    memset(&ml, 0, sizeof(ml));
    ml.flags = flags;
    ml.internaldate = now;
    ml.size = strlen(prefix) + msg->size;
    ml.qid = qidz;
    ml.prefix = prefix;
    ml.mail_from = msg->mail_from;
    ml.hdr_from = msg->hdr_from;
    ml.hdr_subject = msg->hdr_subject;
    ml.hdr_msgid = msg->hdr_msgid;
    ml.hdr_date = msg->hdr_date;
    *uid = mb.uidnext;
    rc = store_mail_put(st, txn, mailbox, *uid, &ml);
    if (rc != 0)
        return rc;
    mb.uidnext++;
    mb.count++;
    mb.bytes += ml.size;
    return store_mbox_put(st, txn, mailbox, &mb);
}

/* ---- writes ---------------------------------------------------------- */

static int
store_mailbox_apply_flags(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    struct store__mailrec ml;
    int rc;

    rc = store_mail_get(st, txn, rq->u.mail.mailbox, rq->u.mail.uid, &ml);
    if (rc != 0)
        return rc;
    if (rq->u.mail.op > 0)
        ml.flags |= rq->u.mail.flags;
    else if (rq->u.mail.op < 0)
        ml.flags &= ~rq->u.mail.flags;
    else
        ml.flags = rq->u.mail.flags;
    return store_mail_put(st, txn, rq->u.mail.mailbox, rq->u.mail.uid, &ml);
}

static int
store_mailbox_expunge_one(struct store *st, MDB_txn *txn, const char *mailbox,
                          uint32_t uid)
{
    struct store__mailrec ml;
    struct store__mboxrec mb;
    char qid[STORE_QID_LEN + 1];
    uint8_t kb[STORE__MAILKEY_MAX];
    MDB_val k = {0, kb};
    uint64_t size;
    int rc;

    rc = store_mail_get(st, txn, mailbox, uid, &ml);
    if (rc != 0)
        return rc;
    memcpy(qid, ml.qid, sizeof(qid));
    size = ml.size;
    rc = store_mbox_get(st, txn, mailbox, &mb);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? RM_E_CORRUPT : rc;
    rc = store__mailkey(kb, mailbox, uid, &k.mv_size);
    if (rc == 0)
        rc = mdb_del(txn, st->db.mail, &k, NULL);
    if (rc != 0)
        return rc;
    mb.count = mb.count ? mb.count - 1 : 0;
    mb.bytes = mb.bytes >= size ? mb.bytes - size : 0;
    rc = store_mbox_put(st, txn, mailbox, &mb);
    if (rc == 0)
        rc = store__msg_unref(st, txn, qid, 1);
    if (rc == MDB_NOTFOUND) {
        log_err("event=store.corrupt db=msgs qid=%s reason=missing", qid);
        rc = RM_E_CORRUPT;
    }
    return rc;
}

static int
store_mailbox_apply_expunge(struct store *st, MDB_txn *txn,
                            struct store__req *rq)
{
    return store_mailbox_expunge_one(st, txn, rq->u.mail.mailbox,
                                     rq->u.mail.uid);
}

static int
store_mailbox_apply_file(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    const struct store_file *f = rq->u.file.f;
    struct store_msg m;
    struct store__msgrec mr;
    int64_t now = store__now();
    int rc;

    if (f->replace_uid != 0) {
        rc = store_mailbox_expunge_one(st, txn, f->mailbox, f->replace_uid);
        if (rc != 0)
            return rc;
    }
    memset(&m, 0, sizeof(m));
    memcpy(m.qid, f->qid, sizeof(m.qid));
    m.mail_from = f->mail_from ? f->mail_from : "";
    m.arrival = now;
    m.client = "";
    m.body_type = STORE_BODY_8BITMIME;
    m.hdr_from = f->hdr_from;
    m.hdr_subject = f->hdr_subject;
    m.hdr_msgid = f->hdr_msgid;
    m.hdr_date = f->hdr_date;
    m.data = f->data;
    m.len = f->len;
    rc = store__msg_put(st, txn, &m, 1);
    if (rc == MDB_KEYEXIST)
        return RM_E_EXISTS;
    if (rc == 0)
        rc = store__msg_get(st, txn, f->qid, &mr);
    if (rc == 0)
        rc = store__mailbox_append(st, txn, f->mailbox, f->qid, &mr, "", now,
                                   f->flags, rq->u.file.uid);
    if (rc == 0)
        log_info("event=store.filed qid=%.16s mailbox=%s uid=%u replaced=%u",
                 f->qid, f->mailbox, *rq->u.file.uid, f->replace_uid);
    return rc;
}

int
store_mailbox_file(struct store *st, const struct store_file *f, uint32_t *uid,
                   store_done_cb cb, void *arg)
{
    struct store__req *rq;
    size_t n;

    if (st == NULL || f == NULL || uid == NULL || f->mailbox == NULL ||
        !store__qid_valid(f->qid) || (f->len > 0 && f->data == NULL) ||
        f->len / STORE__CHUNK >= UINT32_MAX ||
        (f->mail_from != NULL && strlen(f->mail_from) > STORE_ADDR_MAX))
        return RM_E_INVAL;
    n = strlen(f->mailbox);
    if (n == 0 || n > STORE__NAME_MAX)
        return RM_E_INVAL;
    if (st->closing)
        return RM_E_CLOSED;
    if ((rq = store__req_new(0)) == NULL)
        return -ENOMEM;
    *uid = 0;
    rq->u.file.f = f;
    rq->u.file.uid = uid;
    rq->wbytes = f->len;
    return store__submit(st, rq, store_mailbox_apply_file, "mailbox_file", cb,
                         arg);
}

static int
store_mailbox_submit(struct store *st, const char *mailbox, uint32_t uid,
                     unsigned flags, int op, store__apply_fn apply,
                     const char *name, store_done_cb cb, void *arg)
{
    struct store__req *rq;
    size_t n;

    if (st == NULL || mailbox == NULL)
        return RM_E_INVAL;
    n = strlen(mailbox);
    if (n == 0 || n > STORE__NAME_MAX || uid == 0)
        return RM_E_INVAL;
    if (st->closing)
        return RM_E_CLOSED;
    rq = store__req_new(n + 1);
    if (rq == NULL)
        return -ENOMEM;
    memcpy(rq->extra, mailbox, n + 1);
    rq->u.mail.mailbox = rq->extra;
    rq->u.mail.uid = uid;
    rq->u.mail.flags = flags;
    rq->u.mail.op = op;
    return store__submit(st, rq, apply, name, cb, arg);
}

int
store_mailbox_flags(struct store *st, const char *mailbox, uint32_t uid,
                    unsigned flags, int op, store_done_cb cb, void *arg)
{
    return store_mailbox_submit(st, mailbox, uid, flags, op,
                                store_mailbox_apply_flags, "mailbox_flags", cb,
                                arg);
}

int
store_mailbox_expunge(struct store *st, const char *mailbox, uint32_t uid,
                      store_done_cb cb, void *arg)
{
    return store_mailbox_submit(st, mailbox, uid, 0, 0,
                                store_mailbox_apply_expunge, "mailbox_expunge",
                                cb, arg);
}

/* ---- reads ----------------------------------------------------------- */

static int
store_name_ok(const char *mailbox)
{
    size_t n;

    if (mailbox == NULL)
        return 0;
    n = strlen(mailbox);
    return n > 0 && n <= STORE__NAME_MAX;
}

static void
store_stat_fill(struct store_mailbox_stat *out, const struct store__mboxrec *x)
{
    out->uidvalidity = x->uidvalidity;
    out->uidnext = x->uidnext;
    out->count = x->count;
    out->bytes = x->bytes;
}

int
store_mailbox_stat(struct store *st, const char *mailbox,
                   struct store_mailbox_stat *out)
{
    struct store__mboxrec x;
    MDB_txn *txn;
    int rc;

    if (!store_name_ok(mailbox))
        return RM_E_INVAL;
    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = store_mbox_get(st, txn, mailbox, &x);
    if (rc == 0)
        store_stat_fill(out, &x);
    store__rd_end(st, txn);
    return store__err(rc, "mailbox_stat");
}

int
store_mailbox_each(struct store *st, store_mailbox_cb cb, void *arg)
{
    char name[STORE__NAME_MAX + 1];
    struct store__mboxrec x;
    struct store_mailbox_stat s;
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    int rc, cbret = 0;

    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, st->db.mbox, &c);
    if (rc != 0) {
        store__rd_end(st, txn);
        return store__err(rc, "mailbox_each");
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size == 0 || k.mv_size > STORE__NAME_MAX ||
            store__rec_mbox_decode(v.mv_data, v.mv_size, &x) != 0) {
            log_err("event=store.corrupt db=mbox");
            rc = RM_E_CORRUPT;
            break;
        }
        /* Keys carry no NUL: copy to hand out a C string. */
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        store_stat_fill(&s, &x);
        cbret = cb(arg, name, &s);
        if (cbret != 0)
            break;
    }
    mdb_cursor_close(c);
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    return rc == MDB_NOTFOUND ? 0 : store__err(rc, "mailbox_each");
}

int
store_mailbox_list(struct store *st, const char *mailbox, store_mail_cb cb,
                   void *arg)
{
    return store_mailbox_list_after(st, mailbox, 0, cb, arg);
}

int
store_mailbox_list_after(struct store *st, const char *mailbox, uint32_t after,
                         store_mail_cb cb, void *arg)
{
    uint8_t kb[STORE__MAILKEY_MAX];
    struct store__mailrec x;
    struct store__mboxrec mb;
    struct store_mail m;
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k = {0, kb}, v;
    size_t plen;
    int rc, cbret = 0;

    if (!store_name_ok(mailbox))
        return RM_E_INVAL;
    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = store_mbox_get(st, txn, mailbox, &mb);
    if (rc != 0) {
        store__rd_end(st, txn);
        return store__err(rc, "mailbox_list");
    }
    rc = mdb_cursor_open(txn, st->db.mail, &c);
    if (rc != 0) {
        store__rd_end(st, txn);
        return store__err(rc, "mailbox_list");
    }
    if (after == UINT32_MAX) {
        mdb_cursor_close(c);
        store__rd_end(st, txn);
        return 0;
    }
    store__mailkey(kb, mailbox, after + 1, &k.mv_size);
    plen = k.mv_size - 4; /* name + NUL */
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != plen + 4 || memcmp(k.mv_data, mailbox, plen) != 0)
            break;
        rc = store__rec_mail_decode(v.mv_data, v.mv_size, &x);
        if (rc != 0) {
            log_err("event=store.corrupt db=mail mailbox=%s", mailbox);
            break;
        }
        memset(&m, 0, sizeof(m));
        m.uid = store__be32_get((const uint8_t *)k.mv_data + plen);
        m.flags = x.flags;
        m.internaldate = x.internaldate;
        m.size = x.size;
        m.qid = x.qid;
        m.mail_from = x.mail_from;
        m.hdr_from = x.hdr_from;
        m.hdr_subject = x.hdr_subject;
        m.hdr_msgid = x.hdr_msgid;
        m.hdr_date = x.hdr_date;
        cbret = cb(arg, &m);
        if (cbret != 0)
            break;
    }
    mdb_cursor_close(c);
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    return rc == MDB_NOTFOUND ? 0 : store__err(rc, "mailbox_list");
}

int
store_mailbox_read(struct store *st, const char *mailbox, uint32_t uid,
                   store_chunk_cb cb, void *arg)
{
    struct store__mailrec x;
    struct store__msgrec m;
    uint8_t kb[STORE__QKEY_LEN];
    MDB_txn *txn;
    MDB_val k = {sizeof(kb), kb}, v;
    uint64_t got = 0;
    int rc, cbret = 0;

    if (!store_name_ok(mailbox))
        return RM_E_INVAL;
    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = store_mail_get(st, txn, mailbox, uid, &x);
    if (rc == 0) {
        rc = store__msg_get(st, txn, x.qid, &m);
        if (rc == MDB_NOTFOUND) {
            log_err("event=store.corrupt db=msgs qid=%s reason=missing", x.qid);
            rc = RM_E_CORRUPT;
        }
    }
    if (rc == 0 && x.prefix[0] != '\0')
        cbret = cb(arg, x.prefix, strlen(x.prefix));
    for (uint32_t i = 0; rc == 0 && cbret == 0 && i < m.nchunks; i++) {
        store__bodykey(kb, x.qid, i);
        rc = mdb_get(txn, st->db.bodies, &k, &v);
        if (rc == 0 && (v.mv_size == 0 || v.mv_size > m.size - got)) {
            rc = RM_E_CORRUPT;
        } else if (rc == 0) {
            got += v.mv_size;
            cbret = cb(arg, v.mv_data, v.mv_size);
        } else if (rc == MDB_NOTFOUND) {
            rc = RM_E_CORRUPT;
        }
        if (rc == RM_E_CORRUPT)
            log_err("event=store.corrupt db=bodies qid=%s chunk=%u", x.qid, i);
    }
    if (rc == 0 && cbret == 0 && got != m.size) {
        log_err("event=store.corrupt db=bodies qid=%s reason=short", x.qid);
        rc = RM_E_CORRUPT;
    }
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    return store__err(rc, "mailbox_read");
}
