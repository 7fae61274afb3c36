/*
 * store.c: the environment (open, schema check, map size), queue ids,
 * statistics and the helpers every other store file uses.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include <lmdb.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "store/store_int.h"

#define STORE_DEF_MAP ((size_t)64 << 20)
#define STORE_DEF_MAP_MAX ((size_t)64 << 30)
#define STORE_DEF_BATCH 256
#define STORE_MAXDBS 16

int64_t
store__now(void)
{
    return (int64_t)time(NULL);
}

int
store__err_map(int rc)
{
    if (rc == 0 || (rc < 0 && rc > RM_E_BASE - 1000))
        return rc; /* 0, or already an RM code */
    switch (rc) {
    case MDB_NOTFOUND:
        return RM_E_NOTFOUND;
    case MDB_KEYEXIST:
        return RM_E_EXISTS;
    case MDB_MAP_FULL:
        return RM_E_FULL;
    case ENOSPC:
    case EDQUOT:
        return RM_E_FULL;
    case ENOMEM:
        return -ENOMEM;
    default:
        return RM_E_STORE;
    }
}

int
store__err(int rc, const char *what)
{
    int e = store__err_map(rc);

    if (e != RM_E_STORE || rc == RM_E_STORE)
        return e;
    log_err("event=store.lmdb_error op=%s err=%d msg=\"%s\"", what, rc,
            mdb_strerror(rc));
    return RM_E_STORE;
}

int
store__rd_begin(struct store *st, struct MDB_txn **txn)
{
    int rc;

    uv_rwlock_rdlock(&st->env_lock);
    if (st->env == NULL) {
        /* A reopen after a fatal LMDB error failed; the writer retries. */
        uv_rwlock_rdunlock(&st->env_lock);
        return RM_E_STORE;
    }
    rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);
    if (rc != 0) {
        uv_rwlock_rdunlock(&st->env_lock);
        return store__err(rc, "read_begin");
    }
    return 0;
}

void
store__rd_end(struct store *st, struct MDB_txn *txn)
{
    mdb_txn_abort(txn);
    uv_rwlock_rdunlock(&st->env_lock);
}

static int
store_mkdir(const char *dir)
{
    struct stat sb;

    if (mkdir(dir, 0700) == 0)
        return 0;
    if (errno != EEXIST)
        return -errno;
    if (stat(dir, &sb) != 0)
        return -errno;
    if (!S_ISDIR(sb.st_mode))
        return -ENOTDIR;
    return 0;
}

/* Record the schema version in a new store; refuse one we do not know. */
static int
store_schema_check(struct store *st, MDB_txn *txn)
{
    static const char key[] = "schema";
    MDB_val k = {sizeof(key) - 1, (void *)key}, v;
    uint8_t b[4];
    uint32_t ver;
    int rc;

    rc = mdb_get(txn, st->db.meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        ver = STORE_SCHEMA_VERSION;
        for (int i = 0; i < 4; i++)
            b[i] = (uint8_t)(ver >> (8 * i));
        v.mv_size = sizeof(b);
        v.mv_data = b;
        return mdb_put(txn, st->db.meta, &k, &v, 0);
    }
    if (rc != 0)
        return rc;
    if (v.mv_size != 4)
        return RM_E_CORRUPT;
    memcpy(b, v.mv_data, 4);
    ver = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
          (uint32_t)b[3] << 24;
    if (ver != STORE_SCHEMA_VERSION) {
        log_err("event=store.schema_mismatch dir=%s found=%u supported=%d",
                st->dir, ver, STORE_SCHEMA_VERSION);
        return RM_E_SCHEMA;
    }
    return 0;
}

/* Seed the qid clock from the newest stored message, so that a clock
   stepped back across a restart cannot reissue a live queue id. */
static int
store_qid_seed(struct store *st, MDB_txn *txn)
{
    MDB_cursor *c;
    MDB_val k, v;
    char hex[STORE_QID_LEN + 1];
    int rc;

    rc = mdb_cursor_open(txn, st->db.msgs, &c);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == STORE_QID_LEN) {
        memcpy(hex, k.mv_data, STORE_QID_LEN);
        hex[STORE_QID_LEN] = '\0';
        if (store__qid_valid(hex))
            st->qid_last = strtoull(hex, NULL, 16);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int
store__env_open(struct store *st)
{
    static const struct {
        const char *name;
        size_t off;
    } dbs[] = {
        {"meta", offsetof(struct store__dbs, meta)},
        {"bodies", offsetof(struct store__dbs, bodies)},
        {"msgs", offsetof(struct store__dbs, msgs)},
        {"queue", offsetof(struct store__dbs, queue)},
        {"due", offsetof(struct store__dbs, due)},
        {"mbox", offsetof(struct store__dbs, mbox)},
        {"mail", offsetof(struct store__dbs, mail)},
        {"users", offsetof(struct store__dbs, users)},
        {"hist", offsetof(struct store__dbs, hist)},
        {"mesh", offsetof(struct store__dbs, mesh)},
    };
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_envinfo info;
    unsigned flags = MDB_NOTLS;
    int rc;

    rc = mdb_env_create(&env);
    if (rc != 0)
        return store__err(rc, "env_create");
    rc = mdb_env_set_maxdbs(env, STORE_MAXDBS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(env, st->map_size);
    if (rc != 0)
        goto fail;
    if (st->opts.nosync)
        flags |= MDB_NOSYNC;
    rc = mdb_env_open(env, st->dir, flags, 0600);
    if (rc != 0)
        goto fail;
    /* The file may remember a larger map than we asked for. */
    if (mdb_env_info(env, &info) == 0 && info.me_mapsize > st->map_size)
        st->map_size = info.me_mapsize;

    rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc != 0)
        goto fail;
    for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
        MDB_dbi dbi;

        rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, &dbi);
        if (rc != 0)
            goto fail;
        *(unsigned *)((char *)&st->db + dbs[i].off) = dbi;
    }
    rc = store_schema_check(st, txn);
    if (rc == 0)
        rc = store_qid_seed(st, txn);
    if (rc != 0)
        goto fail;
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0)
        goto fail;
    st->env = env;
    return 0;

fail:
    if (txn)
        mdb_txn_abort(txn);
    mdb_env_close(env);
    if (rc == RM_E_SCHEMA || rc == RM_E_CORRUPT)
        return rc;
    if (rc > 0)
        return -rc; /* system error from mdb_env_open etc. */
    return store__err(rc, "env_open");
}

int
store__schema_write(const char *dir, uint32_t version)
{
    static const char key[] = "schema";
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {sizeof(key) - 1, (void *)key}, v;
    uint8_t b[4];
    int rc;

    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(version >> (8 * i));
    v.mv_size = sizeof(b);
    v.mv_data = b;
    rc = mdb_env_create(&env);
    if (rc != 0)
        return store__err(rc, "schema_write");
    rc = mdb_env_set_maxdbs(env, STORE_MAXDBS);
    if (rc == 0)
        rc = mdb_env_open(env, dir, MDB_NOTLS, 0600);
    if (rc == 0)
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &dbi);
        if (rc == 0)
            rc = mdb_put(txn, dbi, &k, &v, 0);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return store__err(rc, "schema_write");
}

void
store__env_close(struct store *st)
{
    if (st->env) {
        mdb_env_close(st->env);
        st->env = NULL;
    }
}

int
store_open(struct store **out, const char *dir, const struct store_opts *opts,
           uv_loop_t *loop)
{
    struct store *st;
    int rc;

    *out = NULL;
    if (dir == NULL || loop == NULL)
        return RM_E_INVAL;
    rc = store_mkdir(dir);
    if (rc != 0) {
        log_err("event=store.open_failed dir=%s err=\"%s\"", dir,
                strerror(-rc));
        return rc;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    st->dir = strdup(dir);
    if (st->dir == NULL) {
        free(st);
        return -ENOMEM;
    }
    if (opts)
        st->opts = *opts;
    if (st->opts.map_size == 0)
        st->opts.map_size = STORE_DEF_MAP;
    if (st->opts.map_size_max == 0)
        st->opts.map_size_max = STORE_DEF_MAP_MAX;
    if (st->opts.map_size_max < st->opts.map_size)
        st->opts.map_size_max = st->opts.map_size;
    if (st->opts.batch_max == 0)
        st->opts.batch_max = STORE_DEF_BATCH;
    st->map_size = st->opts.map_size;
    st->loop = loop;
    buf_init(&st->enc, STORE__REC_MAX);
    st->pend_tail = &st->pend_head;
    st->done_tail = &st->done_head;

    uv_rwlock_init(&st->env_lock);
    uv_mutex_init(&st->mu);
    uv_mutex_init(&st->qid_mu);
    uv_cond_init(&st->cv);

    rc = store__env_open(st);
    if (rc == 0) {
        rc = uv_async_init(loop, &st->async, store__async_cb);
        if (rc == 0) {
            st->async.data = st;
            rc = store__writer_start(st);
            if (rc != 0) {
                /* The handle is live: the store must be freed from its
                   close callback, the loop runs it. */
                store__env_close(st);
                st->closing = 1;
                store__free_on_close(st);
                log_err("event=store.open_failed dir=%s err=\"%s\"", dir,
                        uv_strerror(rc));
                return rc;
            }
            *out = st;
            log_info("event=store.open dir=%s map_size=%zu", dir, st->map_size);
            return 0;
        }
        store__env_close(st);
    }
    log_err("event=store.open_failed dir=%s err=\"%s\"", dir,
            rc <= RM_E_BASE ? rm_strerror(rc) : strerror(-rc));
    uv_cond_destroy(&st->cv);
    uv_mutex_destroy(&st->qid_mu);
    uv_mutex_destroy(&st->mu);
    uv_rwlock_destroy(&st->env_lock);
    buf_cleanup(&st->enc);
    free(st->dir);
    free(st);
    return rc;
}

void
store_qid_new(struct store *st, char out[STORE_QID_LEN + 1])
{
    struct timeval tv;
    uint64_t v;

    gettimeofday(&tv, NULL);
    v = ((uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec) << 8;
    uv_mutex_lock(&st->qid_mu);
    /* More than 256 ids in one microsecond, or a clock stepped back:
       keep counting up, which stays unique and ordered. */
    if (v <= st->qid_last)
        v = st->qid_last + 1;
    st->qid_last = v;
    uv_mutex_unlock(&st->qid_mu);
    snprintf(out, STORE_QID_LEN + 1, "%016llX", (unsigned long long)v);
}

static uint64_t
store_db_entries(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_stat s;

    if (mdb_stat(txn, dbi, &s) != 0)
        return 0;
    return s.ms_entries;
}

int
store_stats(struct store *st, struct store_stats *out)
{
    MDB_txn *txn;
    MDB_envinfo info;
    MDB_stat es;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    if (mdb_env_info(st->env, &info) == 0 && mdb_env_stat(st->env, &es) == 0) {
        out->map_size = info.me_mapsize;
        out->used_bytes = (uint64_t)(info.me_last_pgno + 1) * es.ms_psize;
    }
    out->messages = store_db_entries(txn, st->db.msgs);
    out->queue_entries = store_db_entries(txn, st->db.queue);
    out->mailboxes = store_db_entries(txn, st->db.mbox);
    out->users = store_db_entries(txn, st->db.users);
    store__rd_end(st, txn);

    uv_mutex_lock(&st->mu);
    out->commits = st->commits;
    out->commit_reqs = st->commit_reqs;
    out->full_errors = st->full_errors;
    uv_mutex_unlock(&st->mu);
    return 0;
}

const char *
store_qstate_name(enum store_qstate s)
{
    switch (s) {
    case STORE_Q_QUEUED:
        return "queued";
    case STORE_Q_HOLD:
        return "hold";
    case STORE_Q_DEFERRED:
        return "deferred";
    case STORE_Q_DELIVERED:
        return "delivered";
    case STORE_Q_BOUNCED:
        return "bounced";
    }
    return "unknown";
}
