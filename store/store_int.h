/*
 * store internals: shared by the store sources and the store's unit tests.
 *
 * This header deliberately does not include lmdb.h (only store/ sources
 * do): LMDB handles appear as incomplete struct pointers and DBIs as unsigned
 * ints (MDB_dbi is an unsigned int), so the record codec can be tested
 * without LMDB.
 *
 * On-disk layout (schema 1), one LMDB environment, named databases:
 *   meta    "schema"                     -> u32 LE version
 *   bodies  qid(16) + chunk be32         -> raw bytes, <= STORE__CHUNK
 *   msgs    qid(16)                      -> msg record (refcount, envelope,
 *                                           header summary, size)
 *   queue   qid(16) + rcpt be32          -> queue record
 *   due     next_try (be64, sign bit flipped) + qid(16) + rcpt be32 -> ""
 *           (only entries in state QUEUED or DEFERRED have a due row)
 *   mbox    mailbox name                 -> mailbox record
 *   mail    mailbox name + NUL + uid be32 -> mail record
 *   users   canonical address            -> user record
 *   hist    qid(16) + rcpt be32 + seq be32 -> one line of delivery
 *           history (kept while the entry is queued, at most
 *           STORE__HIST_MAX lines, oldest dropped first)
 *   mesh    key chosen by the mesh code -> opaque value (mesh membership,
 *           certificates, node records, revocations, pending invites)
 * Records: tag byte, version byte, fixed little-endian fields, strings as
 * u32 LE length + bytes + NUL (so decoded strings point straight into the
 * map, NUL-terminated).
 */
#ifndef RM_STORE_INT_H
#define RM_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"
#include "store/store.h"

struct MDB_env;
struct MDB_txn;

/*
 * Body chunk size: a value this size plus LMDB's 16-byte page header fits
 * in 8 contiguous 4 KiB overflow pages. Short runs are easy to find in the
 * freelist; one huge overflow run per body would fragment it badly.
 */
#define STORE__CHUNK (8 * 4096 - 64)
/* Longest mailbox / user key: LMDB keys are at most 511 bytes and a mail
   key adds NUL + 4 bytes of UID. */
#define STORE__NAME_MAX 500
/* Largest encoded record (strings are addresses and header summaries). */
#define STORE__REC_MAX (1u << 20)
#define STORE__QKEY_LEN (STORE_QID_LEN + 4)
#define STORE__HISTKEY_LEN (STORE__QKEY_LEN + 4)
#define STORE__HIST_MAX 50
#define STORE__DUEKEY_LEN (8 + STORE__QKEY_LEN)
#define STORE__MAILKEY_MAX (STORE__NAME_MAX + 1 + 4)

/* ---- records --------------------------------------------------------- */

struct store__msgrec {
    uint32_t refcount; /* queue entries + mailbox entries using the body */
    uint32_t nchunks;
    uint64_t size; /* body bytes */
    int64_t arrival;
    uint8_t ret;       /* enum store_ret */
    uint8_t body_type; /* enum store_body */
    uint8_t smtputf8;
    const char *mail_from, *envid, *client;
    const char *hdr_from, *hdr_subject, *hdr_msgid, *hdr_date;
};

struct store__qrec {
    uint8_t state; /* enum store_qstate */
    uint8_t route; /* enum store_route */
    uint32_t notify;
    uint32_t attempts;
    int64_t next_try;
    const char *addr, *mailbox, *orcpt, *last_error;
};

struct store__mboxrec {
    uint32_t uidvalidity;
    uint32_t uidnext;
    uint32_t count;
    uint64_t bytes;
};

struct store__mailrec {
    uint32_t flags;
    int64_t internaldate;
    uint64_t size; /* prefix + body */
    const char *qid, *prefix, *mail_from;
    const char *hdr_from, *hdr_subject, *hdr_msgid, *hdr_date;
};

struct store__userrec {
    int64_t created;
    const char *pwhash;
};

/*
 * Encoders append to b (NULL strings are stored as ""): 0, -ENOMEM or
 * RM_E_TOOBIG. Decoders: 0 or RM_E_CORRUPT; string pointers point into
 * p and are NUL-terminated; they are never NULL.
 */
int store__rec_msg_encode(struct buf *b, const struct store__msgrec *r);
int store__rec_msg_decode(const void *p, size_t len, struct store__msgrec *r);
int store__rec_q_encode(struct buf *b, const struct store__qrec *r);
int store__rec_q_decode(const void *p, size_t len, struct store__qrec *r);
int store__rec_mbox_encode(struct buf *b, const struct store__mboxrec *r);
int store__rec_mbox_decode(const void *p, size_t len, struct store__mboxrec *r);
int store__rec_mail_encode(struct buf *b, const struct store__mailrec *r);
int store__rec_mail_decode(const void *p, size_t len, struct store__mailrec *r);
int store__rec_user_encode(struct buf *b, const struct store__userrec *r);
int store__rec_user_decode(const void *p, size_t len, struct store__userrec *r);

/* Key builders; return the key length. */
size_t store__qkey(uint8_t out[STORE__QKEY_LEN], const char *qid,
                   uint32_t rcpt);
size_t store__duekey(uint8_t out[STORE__DUEKEY_LEN], int64_t next_try,
                     const char *qid, uint32_t rcpt);
size_t store__bodykey(uint8_t out[STORE__QKEY_LEN], const char *qid,
                      uint32_t chunk);
/* 0 or RM_E_INVAL (name too long or empty). */
int store__mailkey(uint8_t out[STORE__MAILKEY_MAX], const char *mailbox,
                   uint32_t uid, size_t *len);
uint32_t store__be32_get(const uint8_t *p);
int64_t store__duekey_time(const uint8_t *p);

/* 1 if s is STORE_QID_LEN upper-case hex digits followed by NUL. */
int store__qid_valid(const char *s);

/* ---- the store handle ----------------------------------------------- */

struct store__dbs {
    unsigned meta, bodies, msgs, queue, due, mbox, mail, users, hist, mesh;
};

struct store__req;
/* Runs on the writer thread inside a nested write transaction. Returns 0,
   an RM_E_* code, or a raw LMDB / errno code (mapped by the writer). */
typedef int (*store__apply_fn)(struct store *st, struct MDB_txn *txn,
                               struct store__req *rq);

struct store__req {
    struct store__req *next;
    store__apply_fn apply;
    const char *name; /* for logs */
    store_done_cb cb;
    void *arg;
    int status;
    size_t wbytes; /* bytes the request writes, roughly (disk-full test) */
    union {
        struct {
            const struct store_msg *m;
        } accept;
        struct {
            struct store_qkey *keys; /* copy, in extra */
            size_t nkeys;
            int64_t now;
        } deliver;
        struct {
            struct store_qkey key;
            int64_t t;
            const char *error; /* copy, in extra */
        } q;
        struct {
            struct store_qresult *r; /* copy, strings in extra */
            size_t n;
            const struct store_msg *report; /* caller's, or NULL */
        } results;
        struct {
            const char *mailbox; /* copy, in extra */
            uint32_t uid;
            unsigned flags;
            int op;
        } mail;
        struct {
            const struct store_file *f; /* the caller's, until cb */
            uint32_t *uid;              /* the caller's, until cb */
        } file;
        struct {
            struct store_mesh_write *w; /* copy, keys and values in extra */
            size_t n;
            /* store_queue_withdraw: the message whose entries go too */
            char qid[STORE_QID_LEN + 1];
        } mesh;
        struct {
            const char *address; /* copy, in extra */
            const char *pwhash;  /* copy, in extra */
            int64_t now;
        } user;
    } u;
    char extra[]; /* copies of caller strings / keys */
};

struct store {
    uv_loop_t *loop;
    char *dir;
    struct store_opts opts; /* defaults filled in */

    /* Writer thread only (and open/close): */
    struct MDB_env *env;
    struct store__dbs db;
    size_t map_size;
    struct buf enc; /* record encoding scratch */

    /*
     * Read transactions hold env_lock shared; the writer takes it
     * exclusively only to resize or reopen the map, which LMDB requires
     * to happen with no transaction active in the process.
     */
    uv_rwlock_t env_lock;

    /* Request queues, under mu. */
    uv_mutex_t mu;
    uv_cond_t cv;
    struct store__req *pend_head, **pend_tail;
    size_t npend;
    struct store__req *done_head, **done_tail;
    int stop;
    uint64_t commits, commit_reqs, full_errors;

    int closing; /* loop thread only */
    uv_thread_t writer;
    uv_async_t async;

    uv_mutex_t qid_mu;
    uint64_t qid_last;
};

/* store_mesh.c */
/* A request carrying a copy of the mesh writes w (validated as
   store_mesh_apply() does): 0, RM_E_INVAL, RM_E_TOOBIG, -ENOMEM. */
int store__mesh_req(const struct store_mesh_write *w, size_t n,
                    struct store__req **out);
/* Apply rq->u.mesh's writes in txn. */
int store__mesh_apply_txn(struct store *st, struct MDB_txn *txn,
                          struct store__req *rq);

/* store_writer.c */
int store__writer_start(struct store *st);
void store__writer_stop(struct store *st);
/* Allocate a request with extra bytes of trailing storage. NULL on OOM. */
struct store__req *store__req_new(size_t extra);
/* Queue rq (from store__req_new) for the writer; on error rq is freed. */
int store__submit(struct store *st, struct store__req *rq,
                  store__apply_fn apply, const char *name, store_done_cb cb,
                  void *arg);
/* Run every finished request's callback (loop thread). */
void store__complete(struct store *st);
void store__async_cb(uv_async_t *h);
/* uv_close the async handle; the store is freed in its close callback. */
void store__free_on_close(struct store *st);

/* store.c */
int store__env_open(struct store *st);
void store__env_close(struct store *st);
/* Map an LMDB / errno / RM code to an RM code; logs what is unexpected. */
int store__err(int rc, const char *what);
/* The same without the log line (the caller logs). */
int store__err_map(int rc);
/* Read transaction (any thread): shared env_lock + MDB_RDONLY txn. */
int store__rd_begin(struct store *st, struct MDB_txn **txn);
void store__rd_end(struct store *st, struct MDB_txn *txn);
int64_t store__now(void);

/*
 * Rewrite the schema version of the (closed) store in dir: for tests and
 * future migration tools. 0 or an RM code.
 */
int store__schema_write(const char *dir, uint32_t version);

/* store_msg.c: message records and bodies, inside a write txn. */
/* 1 if m is a message store_msg_accept() takes. */
int store__msg_valid(const struct store_msg *m);
/* Write m (record, body, queue entries, due rows); the body starts with
   refs references (m->nrcpts for an accepted message). */
int store__msg_put(struct store *st, struct MDB_txn *txn,
                   const struct store_msg *m, uint32_t refs);
int store__msg_unref(struct store *st, struct MDB_txn *txn, const char *qid,
                     uint32_t n);
int store__msg_get(struct store *st, struct MDB_txn *txn, const char *qid,
                   struct store__msgrec *out);
/* Body chunks stored for qid (read txn; for tests and consistency
   checks). */
int store__body_count(struct store *st, const char *qid, uint32_t *n);

/* store_mailbox.c: append one message to a mailbox (writer). */
int store__mailbox_append(struct store *st, struct MDB_txn *txn,
                          const char *mailbox, const char *qid,
                          const struct store__msgrec *msg, const char *prefix,
                          int64_t now, unsigned flags, uint32_t *uid);

#endif
