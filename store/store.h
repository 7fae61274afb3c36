/*
 * store: relaymesh's durable state in one LMDB environment.
 *
 * Only store/ includes lmdb.h. The store keeps:
 *   - message bodies, written once and chunked, shared by all recipients
 *     (single-instance storage), reference-counted;
 *   - queue entries, one per recipient (state, attempts, next try, last
 *     error, DSN parameters), with a due-time index;
 *   - mailboxes per user with IMAP-style UIDs, UIDVALIDITY and flags;
 *   - users with argon2id password hashes;
 *   - the schema version.
 *
 * Threads. Every write runs on the store's single writer thread, which
 * batches concurrent requests into one write transaction and one fsync
 * (group commit). Write requests are submitted from the loop thread; their
 * callbacks run on the loop thread (through a uv_async) after the
 * transaction has committed durably, or failed. Read functions
 * (store_*_get, store_*_list, store_*_read) open a read-only transaction
 * and may be called from any thread, including the loop thread; they never
 * wait for the writer.
 *
 * Callbacks of the iterating read functions get borrowed pointers that are
 * valid only during that callback. Returning non-zero from an iteration
 * callback stops the iteration and that value is returned.
 *
 * Errors: 0 or a negative code from common/rm_error.h. RM_E_FULL means the
 * disk (ENOSPC) or the configured map limit is exhausted: nothing of the
 * failed request was written; earlier commits are intact; the same request
 * may succeed later when space returns. If a function that takes a
 * callback returns an error, the callback is never called.
 */
#ifndef RM_STORE_H
#define RM_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct store;

#define STORE_SCHEMA_VERSION 1
/* Queue ids: 16 upper-case hex digits, time-ordered, unique per store. */
#define STORE_QID_LEN 16
#define STORE_ADDR_MAX 512 /* longest address we keep (> RFC 5321 256) */

struct store_opts {
    size_t map_size;     /* initial map size in bytes; 0 = 64 MiB */
    size_t map_size_max; /* ceiling for growth; 0 = 64 GiB */
    unsigned batch_max;  /* requests per write transaction; 0 = 256 */
    int nosync;          /* 1 = no fsync (benchmarks of the store only) */
};

/*
 * Open (creating if needed) the store in directory dir (created 0700 if
 * missing; files created 0600). Starts the writer thread; its completion
 * callbacks are run on loop. Errors: -errno, RM_E_SCHEMA, RM_E_STORE.
 */
int store_open(struct store **out, const char *dir,
               const struct store_opts *opts, uv_loop_t *loop);

/*
 * Stop the writer thread after it has finished every request already
 * submitted, close the environment and close the store's uv_async handle.
 * Callbacks of finished requests that have not run yet are run from
 * store_close() itself, before it returns. The store's memory is freed
 * in the handle's close callback: run the loop once more after
 * store_close() for the loop to close clean. Call on the loop thread.
 */
void store_close(struct store *st);

/* Fill out with a new queue id (STORE_QID_LEN chars + NUL). Thread-safe. */
void store_qid_new(struct store *st, char out[STORE_QID_LEN + 1]);

/* ---- messages and queue ------------------------------------------- */

enum store_ret { STORE_RET_UNSPEC = 0, STORE_RET_FULL = 1, STORE_RET_HDRS = 2 };

enum store_body {
    STORE_BODY_7BIT = 0,
    STORE_BODY_8BITMIME = 1,
    STORE_BODY_BINARYMIME = 2
};

/* DSN NOTIFY (RFC 3461 §4.1) bits; 0 = not given. */
#define STORE_NOTIFY_NEVER 0x01
#define STORE_NOTIFY_SUCCESS 0x02
#define STORE_NOTIFY_FAILURE 0x04
#define STORE_NOTIFY_DELAY 0x08
/* Not a DSN keyword: kept in the same field, set once a delay notice for
   the entry has been sent, so that it is sent once. */
#define STORE_NOTIFY_DELAY_SENT 0x100

enum store_route {
    STORE_ROUTE_LOCAL = 0, /* into a mailbox of this node */
    STORE_ROUTE_REMOTE = 1 /* outbound (Internet or mesh), later issue */
};

enum store_qstate {
    STORE_Q_QUEUED = 0,    /* waiting for its next try */
    STORE_Q_HOLD = 1,      /* held by the administrator */
    STORE_Q_DEFERRED = 2,  /* tried, failed temporarily */
    STORE_Q_DELIVERED = 3, /* terminal (only in history / tombstones) */
    STORE_Q_BOUNCED = 4    /* terminal */
};
const char *store_qstate_name(enum store_qstate s);

struct store_rcpt {
    const char *addr;    /* forward path as accepted, without <> */
    const char *mailbox; /* local: mailbox owner (canonical, lower-case
                            domain); remote: NULL */
    const char *orcpt;   /* DSN ORCPT value as given (xtext), or NULL */
    unsigned notify;     /* STORE_NOTIFY_* bits */
    enum store_route route;
};

struct store_msg {
    char qid[STORE_QID_LEN + 1]; /* from store_qid_new() */
    const char *mail_from;       /* reverse path without <>; "" = null */
    const char *envid;           /* DSN ENVID or NULL */
    enum store_ret ret;
    enum store_body body_type;
    int smtputf8;
    int64_t arrival;    /* unix seconds */
    const char *client; /* "helo [addr]" for logs/queue show */
    /* Header summary for mailbox listings; any may be NULL. */
    const char *hdr_from;
    const char *hdr_subject;
    const char *hdr_msgid;
    const char *hdr_date;
    const struct store_rcpt *rcpts;
    size_t nrcpts;
    /* The message as it will be delivered: trace header(s) already
       prepended, dot-unstuffed, CRLF line ends. */
    const char *data;
    size_t len;
    /* Optional, store_msg_accept only: records written into the mesh
       table in the same transaction (the mesh's dedup keys), each with
       op STORE_MESH_NEW: if one of the keys is already there the whole
       request fails with RM_E_EXISTS and nothing of it is written. */
    const struct store_mesh_write *mesh_new;
    size_t nmesh_new;
};

typedef void (*store_done_cb)(void *arg, int status);
typedef int (*store_chunk_cb)(void *arg, const char *data, size_t len);

struct store_mesh_write;

/*
 * Durably store a message and one queue entry per recipient (state
 * QUEUED, next try = arrival), and m->mesh_new's keys (see above). cb runs on
 * the loop thread after the commit (status 0) or failure. The caller keeps *m
 * and everything it points to valid and unchanged until cb has run. Errors
 * (immediate): -ENOMEM, RM_E_CLOSED, RM_E_INVAL. Errors (in cb): RM_E_FULL,
 * RM_E_EXISTS (qid reused, or a mesh_new key present), RM_E_STORE.
 */
int store_msg_accept(struct store *st, const struct store_msg *m,
                     store_done_cb cb, void *arg);

/* A queue entry's key: queue id and recipient index within it. */
struct store_qkey {
    char qid[STORE_QID_LEN + 1];
    uint32_t rcpt;
};

/* A queue entry as read back; all pointers borrowed (see top). */
struct store_qentry {
    struct store_qkey key;
    enum store_qstate state;
    enum store_route route;
    const char *addr;
    const char *mailbox; /* "" when remote */
    const char *orcpt;   /* "" when none */
    unsigned notify;
    uint32_t attempts;
    int64_t next_try;       /* unix seconds */
    const char *last_error; /* "" when none */
    /* From the message: */
    const char *mail_from;
    const char *envid; /* "" when none */
    enum store_ret ret;
    enum store_body body_type;
    int smtputf8;
    int64_t arrival;
    uint64_t size;
    const char *client;
    const char *hdr_subject;
};

/*
 * Deliver queue entries (route LOCAL) into their mailboxes, in one
 * transaction per batch: for each key, append a mailbox entry (new UID,
 * flags none, prefix "Return-Path: <mail_from>\r\nDelivered-To: addr\r\n"
 * before the shared body) and remove the queue entry and its due-index
 * row; drop the body when no reference is left. Keys whose entry no
 * longer exists are skipped silently: delivery is idempotent, a repeated
 * request never doubles a message. Entries in state HOLD are skipped too
 * (they stay queued). The keys are copied: the caller's array may go as
 * soon as the call returns.
 * cb status: 0, RM_E_FULL, RM_E_STORE, RM_E_INVAL (a key names a REMOTE
 * entry: nothing of the request is applied).
 */
int store_queue_deliver_local(struct store *st, const struct store_qkey *keys,
                              size_t nkeys, store_done_cb cb, void *arg);

/* Administrative queue changes; key.rcpt == UINT32_MAX means every
   recipient of key.qid. cb status: 0, RM_E_NOTFOUND, RM_E_FULL, ... */
int store_queue_delete(struct store *st, const struct store_qkey *key,
                       store_done_cb cb, void *arg);
/*
 * Withdraw a message its sender was never told we took: remove every
 * queue entry of qid (and the message, when nothing else refers to it)
 * and apply the mesh writes w (as store_mesh_apply(); the mesh code's
 * record of the withdrawal) in one transaction, all or nothing. Entries
 * already gone are no error. w is copied at submission. cb status: 0,
 * RM_E_NOTFOUND (a STORE_MESH_TAKE key absent), RM_E_EXISTS, RM_E_FULL,
 * RM_E_STORE. Immediate errors: RM_E_INVAL, RM_E_TOOBIG, RM_E_CLOSED,
 * -ENOMEM.
 */
int store_queue_withdraw(struct store *st, const char *qid,
                         const struct store_mesh_write *w, size_t n,
                         store_done_cb cb, void *arg);
int store_queue_hold(struct store *st, const struct store_qkey *key,
                     store_done_cb cb, void *arg);
/* Release held entries: state QUEUED, next try now. */
int store_queue_release(struct store *st, const struct store_qkey *key,
                        store_done_cb cb, void *arg);
/* Record a failed attempt: attempts+1, last_error, state DEFERRED,
   next_try as given (the due index follows). A HOLD entry records the
   attempt and stays held. */
int store_queue_defer(struct store *st, const struct store_qkey *key,
                      int64_t next_try, const char *error, store_done_cb cb,
                      void *arg);

/* The outcome of a delivery attempt for one entry. */
enum store_outcome {
    STORE_OUT_DELIVERED = 0, /* remove the entry (and its history) */
    STORE_OUT_BOUNCED = 1,   /* remove the entry; the report says why */
    STORE_OUT_DEFERRED = 2   /* attempts+1, last_error, next_try; a held
                                entry records it and stays held */
};

struct store_qresult {
    struct store_qkey key;
    enum store_outcome outcome;
    int64_t next_try;    /* DEFERRED */
    const char *error;   /* DEFERRED: the new last_error (NULL: keep) */
    const char *history; /* DEFERRED: a line for the entry's history */
    unsigned set_notify; /* DEFERRED: bits to OR into notify (e.g.
                            STORE_NOTIFY_DELAY_SENT) */
};

/*
 * Record the outcomes of delivery attempts in one transaction, together
 * with report (a delivery status notification to queue, or NULL): the
 * report is queued if and only if the outcomes are recorded, so a crash
 * can neither lose a bounce nor send it twice. Entries that no longer
 * exist (deleted meanwhile) are skipped. Everything is copied but
 * report, which the caller keeps valid until cb.
 * cb status: 0, RM_E_FULL, RM_E_STORE, RM_E_EXISTS (report qid reused).
 */
int store_queue_results(struct store *st, const struct store_qresult *r,
                        size_t n, const struct store_msg *report,
                        store_done_cb cb, void *arg);

/* Try waiting (queued / deferred) entries now: key.rcpt UINT32_MAX = all
   recipients of key.qid; key NULL = every waiting entry in the queue.
   cb status: 0, RM_E_NOTFOUND. */
int store_queue_retry(struct store *st, const struct store_qkey *key,
                      store_done_cb cb, void *arg);

typedef int (*store_line_cb)(void *arg, const char *line);
/* The delivery history of one entry, oldest first. */
int store_queue_history(struct store *st, const struct store_qkey *key,
                        store_line_cb cb, void *arg);

typedef int (*store_qentry_cb)(void *arg, const struct store_qentry *e);

/* Every queue entry, in queue-id order. */
int store_queue_list(struct store *st, store_qentry_cb cb, void *arg);
/* The entries of one queue id (all recipients). RM_E_NOTFOUND if none. */
int store_queue_get(struct store *st, const char *qid, store_qentry_cb cb,
                    void *arg);
/* Entries whose next try is <= now and state is QUEUED or DEFERRED, in
   due-time order, at most max of them (0 = no limit); uses the due index
   only. */
int store_queue_due(struct store *st, int64_t now, size_t max,
                    store_qentry_cb cb, void *arg);
/* As store_queue_due (no limit: cb returns non-zero to stop), and
   *next = the next_try of the first waiting entry that is not due yet
   (INT64_MAX if none), so that the caller knows when to look again. */
int store_queue_due_scan(struct store *st, int64_t now, store_qentry_cb cb,
                         void *arg, int64_t *next);
/* Earliest next_try among waiting entries; RM_E_NOTFOUND if none. */
int store_queue_next_due(struct store *st, int64_t *out);

/* The stored message of qid (trace headers included, as it will be
   delivered), in one or more pieces in order. RM_E_NOTFOUND. */
int store_msg_read(struct store *st, const char *qid, store_chunk_cb cb,
                   void *arg);

/* ---- mailboxes ----------------------------------------------------- */

#define STORE_FLAG_SEEN 0x01
#define STORE_FLAG_ANSWERED 0x02
#define STORE_FLAG_FLAGGED 0x04
#define STORE_FLAG_DELETED 0x08
#define STORE_FLAG_DRAFT 0x10

struct store_mail {
    uint32_t uid;
    unsigned flags;       /* STORE_FLAG_* */
    int64_t internaldate; /* delivery time, unix seconds */
    uint64_t size;        /* prefix + body bytes */
    const char *qid;      /* queue id it arrived with */
    const char *mail_from;
    const char *hdr_from, *hdr_subject, *hdr_msgid, *hdr_date; /* "" if none */
};

typedef int (*store_mail_cb)(void *arg, const struct store_mail *m);

/* RM_E_NOTFOUND if the mailbox has never received mail. */
struct store_mailbox_stat {
    uint32_t uidvalidity;
    uint32_t uidnext;
    uint32_t count;
    uint64_t bytes;
};
int store_mailbox_stat(struct store *st, const char *mailbox,
                       struct store_mailbox_stat *out);

typedef int (*store_mailbox_cb)(void *arg, const char *mailbox,
                                const struct store_mailbox_stat *s);
/* Every mailbox that exists, in name order. */
int store_mailbox_each(struct store *st, store_mailbox_cb cb, void *arg);

/* The messages of a mailbox in UID order. RM_E_NOTFOUND if no mailbox. */
int store_mailbox_list(struct store *st, const char *mailbox, store_mail_cb cb,
                       void *arg);
/* The same, from the first UID above after (paging: cb returns non-zero to
   stop, and that value is returned). */
int store_mailbox_list_after(struct store *st, const char *mailbox,
                             uint32_t after, store_mail_cb cb, void *arg);

/*
 * The raw message (prefix headers, then the body) of one UID, handed to
 * cb in one or more pieces in order. RM_E_NOTFOUND if no such UID.
 */
int store_mailbox_read(struct store *st, const char *mailbox, uint32_t uid,
                       store_chunk_cb cb, void *arg);

/* Set (op=1), clear (op=-1) or replace (op=0) flags of one message. */
int store_mailbox_flags(struct store *st, const char *mailbox, uint32_t uid,
                        unsigned flags, int op, store_done_cb cb, void *arg);
/*
 * File a message straight into a mailbox, not through the queue: the
 * bridge's copy of a sent message (Sent) and saved drafts (Drafts). The
 * body is stored under f->qid (from store_qid_new()) with one reference,
 * appended with f->flags, and, when f->replace_uid is not 0, that message
 * of the same mailbox is removed in the same transaction (a draft saved
 * again). *uid gets the new UID before cb runs. The caller keeps *f, what
 * it points to, and *uid valid until cb. cb status: 0, RM_E_NOTFOUND
 * (replace_uid is not there: nothing was written), RM_E_EXISTS (qid
 * reused), RM_E_FULL, RM_E_STORE. Immediate: RM_E_INVAL, RM_E_CLOSED,
 * -ENOMEM.
 */
struct store_file {
    char qid[STORE_QID_LEN + 1];
    const char *mailbox;
    unsigned flags;        /* STORE_FLAG_* */
    uint32_t replace_uid;  /* 0: none */
    const char *mail_from; /* NULL: "" */
    const char *hdr_from, *hdr_subject, *hdr_msgid, *hdr_date; /* or NULL */
    const char *data;
    size_t len;
};
int store_mailbox_file(struct store *st, const struct store_file *f,
                       uint32_t *uid, store_done_cb cb, void *arg);
/* Remove one message; the body goes when no reference is left. */
int store_mailbox_expunge(struct store *st, const char *mailbox, uint32_t uid,
                          store_done_cb cb, void *arg);

/* ---- users ----------------------------------------------------------- */

#define STORE_PWHASH_MAX 128 /* crypto_pwhash_STRBYTES */

struct store_user {
    const char *address; /* canonical: local part as given, domain lower */
    const char *pwhash;  /* argon2id encoded string ("$argon2id$...") */
    int64_t created;
};

typedef int (*store_user_cb)(void *arg, const struct store_user *u);

/*
 * Hash password with argon2id (libsodium crypto_pwhash_str, interactive
 * limits) into out. Slow on purpose (~0.1 s, 64 MiB): call it off the
 * loop thread (uv_queue_work) in the server. 0 or -ENOMEM.
 */
int store_pw_hash(const char *password, size_t len, char out[STORE_PWHASH_MAX]);
/* 0 if password matches hash, RM_E_PERM if not. Slow like the above. */
int store_pw_verify(const char *hash, const char *password, size_t len);

/* Add a user with a precomputed hash. cb status: 0, RM_E_EXISTS, ... */
int store_user_add(struct store *st, const char *address, const char *pwhash,
                   store_done_cb cb, void *arg);
/* Replace the hash. cb status: 0, RM_E_NOTFOUND, ... */
int store_user_passwd(struct store *st, const char *address, const char *pwhash,
                      store_done_cb cb, void *arg);
/* Remove the user (the mailbox stays). cb status: 0, RM_E_NOTFOUND. */
int store_user_del(struct store *st, const char *address, store_done_cb cb,
                   void *arg);
/* Lookup is exact on the canonical address. RM_E_NOTFOUND if none. */
int store_user_get(struct store *st, const char *address, store_user_cb cb,
                   void *arg);
int store_user_list(struct store *st, store_user_cb cb, void *arg);

/* ---- mesh state -------------------------------------------------------- */

/*
 * A small key-value table the mesh code owns (membership, certificates,
 * node records, revocations, pending invites): keys of 1 ..
 * STORE_MESH_KEY_MAX bytes, opaque values up to STORE_MESH_VAL_MAX bytes.
 * Writes come in batches applied in one transaction, all or nothing:
 *   STORE_MESH_PUT   insert or replace
 *   STORE_MESH_DEL   delete if present
 *   STORE_MESH_TAKE  delete; the batch fails with RM_E_NOTFOUND if absent
 *                    (single-use tokens: exactly one taker wins)
 *   STORE_MESH_NEW   insert; the batch fails with RM_E_EXISTS if present
 * Keys and values are copied at submission. cb status: 0, RM_E_NOTFOUND,
 * RM_E_EXISTS, RM_E_FULL, RM_E_STORE.
 */
#define STORE_MESH_KEY_MAX 128
#define STORE_MESH_VAL_MAX (2u << 20)

enum store_mesh_op {
    STORE_MESH_PUT,
    STORE_MESH_DEL,
    STORE_MESH_TAKE,
    STORE_MESH_NEW,
};

struct store_mesh_write {
    enum store_mesh_op op;
    const void *key;
    size_t klen;
    const void *val; /* PUT, NEW */
    size_t vlen;
};

int store_mesh_apply(struct store *st, const struct store_mesh_write *w,
                     size_t n, store_done_cb cb, void *arg);

/* Value and key are borrowed for the call. A non-zero return stops a
 * walk and is returned. */
typedef int (*store_mesh_cb)(void *arg, const void *key, size_t klen,
                             const void *val, size_t vlen);
/* One key: RM_E_NOTFOUND if absent. */
int store_mesh_get(struct store *st, const void *key, size_t klen,
                   store_mesh_cb cb, void *arg);
/* Every key starting with prefix (plen may be 0), in key order. */
int store_mesh_each(struct store *st, const void *prefix, size_t plen,
                    store_mesh_cb cb, void *arg);

/* ---- whole store ----------------------------------------------------- */

struct store_stats {
    uint64_t map_size;   /* current map size, bytes */
    uint64_t used_bytes; /* pages in use * page size */
    uint64_t messages;   /* bodies stored */
    uint64_t queue_entries;
    uint64_t mailboxes;
    uint64_t users;
    uint64_t commits;     /* write transactions committed since open */
    uint64_t commit_reqs; /* requests they carried */
    uint64_t full_errors; /* requests failed with RM_E_FULL */
};
int store_stats(struct store *st, struct store_stats *out);

/*
 * Canonical mailbox/user key for an address: domain part lower-cased,
 * local part kept as given except that "postmaster" (any case) is
 * lower-cased (RFC 5321 §4.5.1). 0 or RM_E_INVAL (no '@', too long).
 */
int store_addr_canon(const char *addr, char *out, size_t outsz);

#endif
