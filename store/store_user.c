/*
 * store_user.c: users (canonical address -> argon2id hash, creation
 * time) and password hashing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>
#include <sodium.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "store/store_int.h"

_Static_assert(STORE_PWHASH_MAX == crypto_pwhash_STRBYTES,
               "STORE_PWHASH_MAX must match libsodium");

#define STORE_PWHASH_PREFIX "$argon2id$"

int
store_pw_hash(const char *password, size_t len, char out[STORE_PWHASH_MAX])
{
    /* sodium_init() is idempotent and thread-safe; it picks the fastest
       implementation and seeds the salt generator. */
    if (sodium_init() < 0)
        return -ENOMEM;
    if (crypto_pwhash_str_alg(out, password, len,
                              crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return -ENOMEM; /* the only failure libsodium reports here */
    return 0;
}

int
store_pw_verify(const char *hash, const char *password, size_t len)
{
    if (sodium_init() < 0)
        return -ENOMEM;
    if (hash == NULL || strncmp(hash, STORE_PWHASH_PREFIX,
                                sizeof(STORE_PWHASH_PREFIX) - 1) != 0)
        return RM_E_PERM;
    if (crypto_pwhash_str_verify(hash, password, len) != 0)
        return RM_E_PERM;
    return 0;
}

static int
store_user_put(struct store *st, MDB_txn *txn, struct store__req *rq,
               unsigned flags)
{
    struct store__userrec u = {rq->u.user.now, rq->u.user.pwhash};
    MDB_val k = {strlen(rq->u.user.address), (void *)rq->u.user.address}, v;
    int rc;

    rc = store__rec_user_encode(&st->enc, &u);
    if (rc != 0)
        return rc;
    v.mv_size = st->enc.len;
    v.mv_data = st->enc.data;
    return mdb_put(txn, st->db.users, &k, &v, flags);
}

static int
store_user_apply_add(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    return store_user_put(st, txn, rq, MDB_NOOVERWRITE);
}

static int
store_user_apply_passwd(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    struct store__userrec old;
    MDB_val k = {strlen(rq->u.user.address), (void *)rq->u.user.address}, v;
    int rc;

    rc = mdb_get(txn, st->db.users, &k, &v);
    if (rc != 0)
        return rc;
    /* Keep the creation time. */
    if (store__rec_user_decode(v.mv_data, v.mv_size, &old) == 0)
        rq->u.user.now = old.created;
    return store_user_put(st, txn, rq, 0);
}

static int
store_user_apply_del(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    MDB_val k = {strlen(rq->u.user.address), (void *)rq->u.user.address};

    return mdb_del(txn, st->db.users, &k, NULL);
}

static int
store_addr_ok(const char *a)
{
    size_t n;

    if (a == NULL)
        return 0;
    n = strlen(a);
    return n > 0 && n <= STORE__NAME_MAX && strchr(a, '@') != NULL;
}

static int
store_user_submit(struct store *st, const char *address, const char *pwhash,
                  store__apply_fn apply, const char *name, store_done_cb cb,
                  void *arg)
{
    struct store__req *rq;
    size_t an, hn;

    if (st == NULL || !store_addr_ok(address))
        return RM_E_INVAL;
    an = strlen(address);
    hn = pwhash ? strlen(pwhash) : 0;
    if (pwhash && (hn >= STORE_PWHASH_MAX ||
                   strncmp(pwhash, STORE_PWHASH_PREFIX,
                           sizeof(STORE_PWHASH_PREFIX) - 1) != 0))
        return RM_E_INVAL;
    if (st->closing)
        return RM_E_CLOSED;
    rq = store__req_new(an + 1 + hn + 1);
    if (rq == NULL)
        return -ENOMEM;
    memcpy(rq->extra, address, an + 1);
    rq->u.user.address = rq->extra;
    if (hn)
        memcpy(rq->extra + an + 1, pwhash, hn);
    rq->extra[an + 1 + hn] = '\0';
    rq->u.user.pwhash = rq->extra + an + 1;
    rq->u.user.now = store__now();
    return store__submit(st, rq, apply, name, cb, arg);
}

int
store_user_add(struct store *st, const char *address, const char *pwhash,
               store_done_cb cb, void *arg)
{
    if (pwhash == NULL)
        return RM_E_INVAL;
    return store_user_submit(st, address, pwhash, store_user_apply_add,
                             "user_add", cb, arg);
}

int
store_user_passwd(struct store *st, const char *address, const char *pwhash,
                  store_done_cb cb, void *arg)
{
    if (pwhash == NULL)
        return RM_E_INVAL;
    return store_user_submit(st, address, pwhash, store_user_apply_passwd,
                             "user_passwd", cb, arg);
}

int
store_user_del(struct store *st, const char *address, store_done_cb cb,
               void *arg)
{
    return store_user_submit(st, address, NULL, store_user_apply_del,
                             "user_del", cb, arg);
}

/* Hand one user to cb; the address is copied to add its NUL. */
static int
store_user_emit(const MDB_val *k, const MDB_val *v, store_user_cb cb, void *arg,
                int *cbret)
{
    char addr[STORE__NAME_MAX + 1];
    struct store__userrec r;
    struct store_user u;

    if (k->mv_size == 0 || k->mv_size > STORE__NAME_MAX ||
        store__rec_user_decode(v->mv_data, v->mv_size, &r) != 0) {
        log_err("event=store.corrupt db=users");
        return RM_E_CORRUPT;
    }
    memcpy(addr, k->mv_data, k->mv_size);
    addr[k->mv_size] = '\0';
    u.address = addr;
    u.pwhash = r.pwhash;
    u.created = r.created;
    *cbret = cb(arg, &u);
    return 0;
}

int
store_user_get(struct store *st, const char *address, store_user_cb cb,
               void *arg)
{
    MDB_txn *txn;
    MDB_val k, v;
    int rc, cbret = 0;

    if (address == NULL || address[0] == '\0' ||
        strlen(address) > STORE__NAME_MAX)
        return RM_E_INVAL;
    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    k.mv_size = strlen(address);
    k.mv_data = (void *)address;
    rc = mdb_get(txn, st->db.users, &k, &v);
    if (rc == 0)
        rc = store_user_emit(&k, &v, cb, arg, &cbret);
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    return store__err(rc, "user_get");
}

int
store_user_list(struct store *st, store_user_cb cb, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    int rc, cbret = 0;

    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, st->db.users, &c);
    if (rc != 0) {
        store__rd_end(st, txn);
        return store__err(rc, "user_list");
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        rc = store_user_emit(&k, &v, cb, arg, &cbret);
        if (rc != 0 || cbret != 0)
            break;
    }
    mdb_cursor_close(c);
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    return rc == MDB_NOTFOUND ? 0 : store__err(rc, "user_list");
}
