/*
 * store_writer.c: the single writer thread and group commit.
 *
 * The loop thread queues requests under st->mu and signals st->cv. The
 * writer takes up to batch_max of them, runs each in a nested transaction
 * of one write transaction (so one failing request does not sink the
 * others), commits once (one fsync for the batch), moves the batch to the
 * done list and wakes the loop through one uv_async. The loop runs the
 * callbacks in submission order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include <lmdb.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "store/store_int.h"

struct store__req *
store__req_new(size_t extra)
{
    return calloc(1, sizeof(struct store__req) + extra);
}

int
store__submit(struct store *st, struct store__req *rq, store__apply_fn apply,
              const char *name, store_done_cb cb, void *arg)
{
    if (st->closing) {
        free(rq);
        return RM_E_CLOSED;
    }
    rq->apply = apply;
    rq->name = name;
    rq->cb = cb;
    rq->arg = arg;
    rq->next = NULL;
    uv_mutex_lock(&st->mu);
    *st->pend_tail = rq;
    st->pend_tail = &rq->next;
    st->npend++;
    uv_cond_signal(&st->cv);
    uv_mutex_unlock(&st->mu);
    return 0;
}

/* A system error (disk) rather than a verdict on one request. */
static int
store_is_io_error(int rc)
{
    return rc > 0 || rc == MDB_PANIC;
}

static int
store_grow(struct store *st)
{
    size_t ns;
    int rc;

    if (st->map_size >= st->opts.map_size_max)
        return RM_E_FULL;
    ns = st->map_size > st->opts.map_size_max / 2 ? st->opts.map_size_max
                                                  : st->map_size * 2;
    /* LMDB remaps in place: no read transaction may be live meanwhile. */
    uv_rwlock_wrlock(&st->env_lock);
    rc = mdb_env_set_mapsize(st->env, ns);
    uv_rwlock_wrunlock(&st->env_lock);
    if (rc != 0) {
        log_err("event=store.map_grow_failed from=%zu to=%zu err=\"%s\"",
                st->map_size, ns, mdb_strerror(rc));
        return RM_E_FULL;
    }
    log_info("event=store.map_grow from=%zu to=%zu", st->map_size, ns);
    st->map_size = ns;
    return 0;
}

/*
 * Close and reopen the environment after LMDB declared it unusable
 * (MDB_PANIC after a failed meta write). Committed data is intact on
 * disk; only this process's handle is poisoned.
 */
static int
store_reopen(struct store *st)
{
    int rc;

    uv_rwlock_wrlock(&st->env_lock);
    store__env_close(st);
    rc = store__env_open(st);
    uv_rwlock_wrunlock(&st->env_lock);
    if (rc != 0)
        log_err("event=store.reopen_failed dir=%s err=\"%s\"", st->dir,
                rm_strerror(rc));
    else
        log_warn("event=store.reopened dir=%s", st->dir);
    return rc;
}

/*
 * One attempt at the batch. Returns 0 when committed (each request's
 * status says whether its own part was applied), or the LMDB / errno
 * code that sank the whole transaction.
 */
static int
store_batch_try(struct store *st, struct store__req *batch, size_t n)
{
    MDB_txn *txn, *child;
    struct store__req *rq = batch;
    int can_grow = st->map_size < st->opts.map_size_max;
    int rc;

    if (st->env == NULL)
        return MDB_PANIC;
    rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++, rq = rq->next) {
        rc = mdb_txn_begin(st->env, txn, 0, &child);
        if (rc != 0) {
            mdb_txn_abort(txn);
            return rc;
        }
        rc = rq->apply(st, child, rq);
        if (rc == 0)
            rc = mdb_txn_commit(child);
        else
            mdb_txn_abort(child);
        if ((rc == MDB_MAP_FULL && can_grow) || store_is_io_error(rc) ||
            rc == MDB_TXN_FULL) {
            mdb_txn_abort(txn);
            return rc;
        }
        rq->status = store__err(rc, rq->name);
    }
    return mdb_txn_commit(txn);
}

/*
 * LMDB 0.9 reports a short write (which is how a full file system shows
 * itself to pwrite) as EIO. Tell disk full from a failing disk by what is
 * left: a failed commit leaves less free space than the batch needed,
 * and the estimate below is generous (body bytes plus B-tree pages).
 */
static int
store_disk_full(struct store *st, struct store__req *batch)
{
    struct statvfs sv;
    uint64_t need = 1u << 20, avail;

    if (statvfs(st->dir, &sv) != 0)
        return 0;
    for (struct store__req *rq = batch; rq; rq = rq->next)
        need += rq->wbytes + (64u << 10);
    avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    return avail < need;
}

static void
store_batch_run(struct store *st, struct store__req *batch, size_t n)
{
    struct store__req *rq;
    int rc, raw, reopened = 0, status;
    size_t nfull = 0;

    for (;;) {
        rc = store_batch_try(st, batch, n);
        if (rc == MDB_MAP_FULL && store_grow(st) == 0)
            continue;
        if (rc == MDB_MAP_RESIZED) {
            /* Another process grew the map; adopt its size. */
            uv_rwlock_wrlock(&st->env_lock);
            rc = mdb_env_set_mapsize(st->env, 0);
            uv_rwlock_wrunlock(&st->env_lock);
            if (rc == 0)
                continue;
        }
        if (rc == MDB_TXN_FULL && n > 1) {
            /* Too many dirty pages for one transaction: commit the batch
               in two halves instead. */
            struct store__req *second = batch;
            size_t half = n / 2;

            for (size_t i = 1; i < half; i++)
                second = second->next;
            rq = second;
            second = rq->next;
            rq->next = NULL;
            store_batch_run(st, batch, half);
            store_batch_run(st, second, n - half);
            rq->next = second;
            return;
        }
        if (rc == MDB_PANIC && !reopened) {
            reopened = 1;
            if (store_reopen(st) == 0)
                continue;
        }
        break;
    }
    raw = rc;
    if (rc == EIO && store_disk_full(st, batch))
        rc = ENOSPC;
    if (rc != 0) {
        status = store__err_map(rc);
        log_err("event=store.commit_failed err=\"%s\" lmdb=\"%s\" reqs=%zu "
                "map_size=%zu",
                rm_strerror(status), mdb_strerror(raw), n, st->map_size);
        for (rq = batch; rq; rq = rq->next)
            rq->status = status;
        /* A failed commit may leave the handle poisoned (MDB_PANIC); test
           it now so that the next batch finds a working environment. */
        if (st->env) {
            MDB_txn *t;

            if (mdb_txn_begin(st->env, NULL, 0, &t) == 0)
                mdb_txn_abort(t);
            else
                store_reopen(st);
        } else {
            store_reopen(st);
        }
    }
    for (rq = batch; rq; rq = rq->next)
        if (rq->status == RM_E_FULL)
            nfull++;
    uv_mutex_lock(&st->mu);
    if (rc == 0) {
        st->commits++;
        st->commit_reqs += n;
    }
    st->full_errors += nfull;
    uv_mutex_unlock(&st->mu);
}

static void
store_writer_main(void *arg)
{
    struct store *st = arg;
    struct store__req *batch, *last;
    size_t n;

    for (;;) {
        uv_mutex_lock(&st->mu);
        while (st->pend_head == NULL && !st->stop)
            uv_cond_wait(&st->cv, &st->mu);
        if (st->pend_head == NULL) {
            uv_mutex_unlock(&st->mu);
            break;
        }
        batch = last = st->pend_head;
        for (n = 1; n < st->opts.batch_max && last->next; n++)
            last = last->next;
        st->pend_head = last->next;
        if (st->pend_head == NULL)
            st->pend_tail = &st->pend_head;
        st->npend -= n;
        last->next = NULL;
        uv_mutex_unlock(&st->mu);

        store_batch_run(st, batch, n);

        uv_mutex_lock(&st->mu);
        *st->done_tail = batch;
        st->done_tail = &last->next;
        uv_mutex_unlock(&st->mu);
        uv_async_send(&st->async);
    }
}

void
store__complete(struct store *st)
{
    struct store__req *rq;

    /* One at a time: a callback may call store_close(), which completes
       the rest itself. */
    for (;;) {
        uv_mutex_lock(&st->mu);
        rq = st->done_head;
        if (rq) {
            st->done_head = rq->next;
            if (st->done_head == NULL)
                st->done_tail = &st->done_head;
        }
        uv_mutex_unlock(&st->mu);
        if (rq == NULL)
            break;
        if (rq->cb)
            rq->cb(rq->arg, rq->status);
        free(rq);
    }
}

void
store__async_cb(uv_async_t *h)
{
    store__complete(h->data);
}

int
store__writer_start(struct store *st)
{
    return uv_thread_create(&st->writer, store_writer_main, st);
}

void
store__writer_stop(struct store *st)
{
    uv_mutex_lock(&st->mu);
    st->stop = 1;
    uv_cond_signal(&st->cv);
    uv_mutex_unlock(&st->mu);
    uv_thread_join(&st->writer);
}

static void
store_close_cb(uv_handle_t *h)
{
    struct store *st = h->data;

    uv_cond_destroy(&st->cv);
    uv_mutex_destroy(&st->qid_mu);
    uv_mutex_destroy(&st->mu);
    uv_rwlock_destroy(&st->env_lock);
    buf_cleanup(&st->enc);
    free(st->dir);
    free(st);
}

void
store__free_on_close(struct store *st)
{
    uv_close((uv_handle_t *)&st->async, store_close_cb);
}

void
store_close(struct store *st)
{
    if (st == NULL || st->closing)
        return;
    st->closing = 1;
    store__writer_stop(st);
    store__complete(st);
    store__env_close(st);
    log_info("event=store.close dir=%s", st->dir);
    store__free_on_close(st);
}
