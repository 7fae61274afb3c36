/*
 * store_mesh.c: the mesh's key-value table (see store.h, "mesh state").
 * The store does not interpret the values; the mesh code encodes them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "common/rm_error.h"
#include "store/store_int.h"

int
store__mesh_apply_txn(struct store *st, MDB_txn *txn, struct store__req *rq)
{
    for (size_t i = 0; i < rq->u.mesh.n; i++) {
        const struct store_mesh_write *w = &rq->u.mesh.w[i];
        MDB_val k = {w->klen, (void *)w->key};
        MDB_val v = {w->vlen, (void *)w->val};
        int rc;

        switch (w->op) {
        case STORE_MESH_PUT:
            rc = mdb_put(txn, st->db.mesh, &k, &v, 0);
            break;
        case STORE_MESH_NEW:
            rc = mdb_put(txn, st->db.mesh, &k, &v, MDB_NOOVERWRITE);
            break;
        case STORE_MESH_DEL:
            rc = mdb_del(txn, st->db.mesh, &k, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
            break;
        case STORE_MESH_TAKE:
            rc = mdb_del(txn, st->db.mesh, &k, NULL);
            break;
        default:
            rc = RM_E_INVAL;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

int
store__mesh_req(const struct store_mesh_write *w, size_t n,
                struct store__req **out)
{
    struct store__req *rq;
    struct store_mesh_write *cp;
    size_t extra, wb = 0;
    char *p;

    if (w == NULL || n == 0 || n > 1024)
        return RM_E_INVAL;
    extra = n * sizeof(*cp);
    for (size_t i = 0; i < n; i++) {
        int needs_val = w[i].op == STORE_MESH_PUT || w[i].op == STORE_MESH_NEW;

        if (w[i].key == NULL || w[i].klen == 0 ||
            w[i].klen > STORE_MESH_KEY_MAX || w[i].op > STORE_MESH_NEW ||
            (needs_val && (w[i].vlen > STORE_MESH_VAL_MAX ||
                           (w[i].vlen > 0 && w[i].val == NULL))))
            return RM_E_INVAL;
        wb += w[i].klen + (needs_val ? w[i].vlen : 0);
    }
    if (wb > 64u << 20)
        return RM_E_TOOBIG;
    rq = store__req_new(extra + wb);
    if (rq == NULL)
        return -ENOMEM;
    cp = (struct store_mesh_write *)(void *)rq->extra;
    p = rq->extra + extra;
    for (size_t i = 0; i < n; i++) {
        cp[i] = w[i];
        memcpy(p, w[i].key, w[i].klen);
        cp[i].key = p;
        p += w[i].klen;
        if (w[i].op == STORE_MESH_PUT || w[i].op == STORE_MESH_NEW) {
            if (w[i].vlen)
                memcpy(p, w[i].val, w[i].vlen);
            cp[i].val = p;
            p += w[i].vlen;
        } else {
            cp[i].val = NULL;
            cp[i].vlen = 0;
        }
    }
    rq->u.mesh.w = cp;
    rq->u.mesh.n = n;
    rq->wbytes = wb;
    *out = rq;
    return 0;
}

int
store_mesh_apply(struct store *st, const struct store_mesh_write *w, size_t n,
                 store_done_cb cb, void *arg)
{
    struct store__req *rq;
    int rc;

    if (st == NULL)
        return RM_E_INVAL;
    if ((rc = store__mesh_req(w, n, &rq)) != 0)
        return rc;
    if (st->closing) {
        free(rq);
        return RM_E_CLOSED;
    }
    return store__submit(st, rq, store__mesh_apply_txn, "mesh_apply", cb, arg);
}

int
store_mesh_get(struct store *st, const void *key, size_t klen, store_mesh_cb cb,
               void *arg)
{
    MDB_txn *txn;
    MDB_val k = {klen, (void *)key}, v;
    int rc, cbret = 0;

    if (st == NULL || key == NULL || klen == 0 || klen > STORE_MESH_KEY_MAX ||
        cb == NULL)
        return RM_E_INVAL;
    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_get(txn, st->db.mesh, &k, &v);
    if (rc == 0)
        cbret = cb(arg, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    return store__err(rc, "mesh_get");
}

int
store_mesh_each(struct store *st, const void *prefix, size_t plen,
                store_mesh_cb cb, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k = {plen, (void *)prefix}, v;
    int rc, cbret = 0;

    if (st == NULL || cb == NULL || plen > STORE_MESH_KEY_MAX ||
        (plen > 0 && prefix == NULL))
        return RM_E_INVAL;
    rc = store__rd_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, st->db.mesh, &c);
    if (rc != 0) {
        store__rd_end(st, txn);
        return store__err(rc, "mesh_each");
    }
    rc = plen ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
              : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (plen > 0 &&
            (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)) {
            rc = MDB_NOTFOUND;
            break;
        }
        cbret = cb(arg, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
        if (cbret != 0)
            break;
    }
    mdb_cursor_close(c);
    store__rd_end(st, txn);
    if (cbret != 0)
        return cbret;
    return rc == MDB_NOTFOUND ? 0 : store__err(rc, "mesh_each");
}
