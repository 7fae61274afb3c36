/*
 * Unit tests of store/: a real LMDB environment in a fresh temporary
 * directory and a real libuv loop per test. Every test ends by closing
 * the store and asserting that the loop closes clean.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/rm_error.h"
#include "store/store.h"
#include "store/store_int.h"

/* ---- fixture --------------------------------------------------------- */

struct fx {
    uv_loop_t loop;
    struct store *st;
    char dir[64];
    char sub[96]; /* the store directory, inside dir */
    int mounted;
};

static int
rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void
fx_init(struct fx *f)
{
    memset(f, 0, sizeof(*f));
    strcpy(f->dir, "/tmp/rm_store_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->sub, sizeof(f->sub), "%s/store", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
}

static int
fx_open(struct fx *f, const struct store_opts *o)
{
    return store_open(&f->st, f->sub, o, &f->loop);
}

/* Close the store, run the loop dry, require a clean loop close. */
static void
fx_close_store(struct fx *f)
{
    if (f->st) {
        store_close(f->st);
        f->st = NULL;
    }
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
}

static void
fx_done(struct fx *f)
{
    fx_close_store(f);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    if (f->mounted)
        umount(f->dir);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

struct done {
    int n;
    int status;
    int order[512];
};

static void
done_cb(void *arg, int status)
{
    struct done *d = arg;

    d->status = status;
    d->n++;
}

/* Run the loop until d has seen n callbacks. */
static void
wait_n(struct fx *f, struct done *d, int n)
{
    while (d->n < n)
        uv_run(&f->loop, UV_RUN_ONCE);
}

/* Submit-and-wait wrappers: return the callback status. */
#define SYNC(f, call)                                                          \
    ({                                                                         \
        struct done d_ = {0};                                                  \
        int r_ = (call);                                                       \
        assert_int_equal(r_, 0);                                               \
        wait_n((f), &d_, 1);                                                   \
        d_.status;                                                             \
    })
#define DONE done_cb, &d_

/* ---- message helpers ------------------------------------------------- */

struct tmsg {
    struct store_msg m;
    struct store_rcpt r[3];
    char *body;
};

static void
tmsg_init(struct fx *f, struct tmsg *t, size_t len, int64_t arrival)
{
    memset(t, 0, sizeof(*t));
    store_qid_new(f->st, t->m.qid);
    t->body = malloc(len + 1);
    assert_non_null(t->body);
    for (size_t i = 0; i < len; i++)
        t->body[i] = (i % 80 == 78)   ? '\r'
                     : (i % 80 == 79) ? '\n'
                                      : 'a' + i % 26;
    t->r[0] = (struct store_rcpt){"Alice@Example.org", "Alice@example.org",
                                  "rfc822;Alice@Example.org",
                                  STORE_NOTIFY_FAILURE, STORE_ROUTE_LOCAL};
    t->r[1] = (struct store_rcpt){"bob@example.org", "bob@example.org", NULL, 0,
                                  STORE_ROUTE_LOCAL};
    t->r[2] = (struct store_rcpt){"carol@remote.test", NULL, NULL, 0,
                                  STORE_ROUTE_REMOTE};
    t->m.mail_from = "sender@origin.test";
    t->m.envid = "ENV1";
    t->m.ret = STORE_RET_HDRS;
    t->m.body_type = STORE_BODY_8BITMIME;
    t->m.smtputf8 = 0;
    t->m.arrival = arrival;
    t->m.client = "mx.origin.test [192.0.2.1]";
    t->m.hdr_from = "Sender <sender@origin.test>";
    t->m.hdr_subject = "Hello";
    t->m.hdr_msgid = "<1@origin.test>";
    t->m.hdr_date = "Mon, 1 Jan 2024 00:00:00 +0000";
    t->m.rcpts = t->r;
    t->m.nrcpts = 3;
    t->m.data = t->body;
    t->m.len = len;
}

static void
tmsg_free(struct tmsg *t)
{
    free(t->body);
}

/* Collects queue entries (copies what the tests look at). */
struct qcol {
    int n;
    struct {
        struct store_qkey key;
        enum store_qstate state;
        uint32_t attempts;
        int64_t next_try;
        char last_error[64];
        char mailbox[64];
        char envid[16];
        uint64_t size;
        enum store_route route;
    } e[64];
};

static int
qcol_cb(void *arg, const struct store_qentry *e)
{
    struct qcol *c = arg;

    assert_true(c->n < 64);
    c->e[c->n].key = e->key;
    c->e[c->n].state = e->state;
    c->e[c->n].attempts = e->attempts;
    c->e[c->n].next_try = e->next_try;
    c->e[c->n].size = e->size;
    c->e[c->n].route = e->route;
    snprintf(c->e[c->n].last_error, 64, "%s", e->last_error);
    snprintf(c->e[c->n].mailbox, 64, "%s", e->mailbox);
    snprintf(c->e[c->n].envid, 16, "%s", e->envid);
    c->n++;
    return 0;
}

struct rd {
    struct buf b;
    int calls;
};

static int
rd_cb(void *arg, const char *data, size_t len)
{
    struct rd *r = arg;

    r->calls++;
    assert_int_equal(buf_append(&r->b, data, len), 0);
    return 0;
}

struct mcol {
    int n;
    struct store_mail m[16];
    char subj[16][32];
};

static int
mcol_cb(void *arg, const struct store_mail *m)
{
    struct mcol *c = arg;

    c->m[c->n] = *m;
    snprintf(c->subj[c->n], 32, "%s", m->hdr_subject);
    c->m[c->n].qid = NULL; /* borrowed: do not keep */
    c->n++;
    return 0;
}

/* ---- record codec ---------------------------------------------------- */

static void
check_truncations(const struct buf *b, int (*dec)(const void *, size_t, void *),
                  void *out)
{
    uint8_t *copy;

    /* Every strict prefix is corrupt. */
    for (size_t n = 0; n < b->len; n++) {
        copy = malloc(n ? n : 1);
        memcpy(copy, b->data, n);
        assert_int_equal(dec(copy, n, out), RM_E_CORRUPT);
        free(copy);
    }
    /* A trailing byte too. */
    copy = malloc(b->len + 1);
    memcpy(copy, b->data, b->len);
    copy[b->len] = 0;
    assert_int_equal(dec(copy, b->len + 1, out), RM_E_CORRUPT);
    /* Every single-byte flip either decodes or is RM_E_CORRUPT: never a
       crash (ASan would catch an out-of-bounds read). */
    memcpy(copy, b->data, b->len);
    for (size_t i = 0; i < b->len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            int r;

            copy[i] ^= (uint8_t)(1u << bit);
            r = dec(copy, b->len, out);
            assert_true(r == 0 || r == RM_E_CORRUPT);
            copy[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Length fields set huge. */
    for (size_t i = 0; i + 4 <= b->len; i++) {
        uint8_t save[4];

        memcpy(save, copy + i, 4);
        memset(copy + i, 0xff, 4);
        assert_true(dec(copy, b->len, out) == 0 ||
                    dec(copy, b->len, out) == RM_E_CORRUPT);
        memcpy(copy + i, save, 4);
    }
    assert_int_equal(dec(NULL, 0, out), RM_E_CORRUPT);
    free(copy);
}

#define DEC(fn) ((int (*)(const void *, size_t, void *))(fn))

static void
test_rec_codec(void **state)
{
    struct buf b;
    struct store__msgrec m = {3,      2,      70000,  1700000000, 1,
                              1,      0,      "a@b",  "",         "client",
                              "From", "Subj", "<id>", "Date"},
                         m2;
    struct store__qrec
        q = {STORE_Q_DEFERRED, STORE_ROUTE_LOCAL, 4, 7, -5, "x@y", "x@y",
             "rfc822;x@y",     "451 later"},
        q2;
    struct store__mboxrec x = {1234, 5, 4, 99999}, x2;
    struct store__mailrec ml = {STORE_FLAG_SEEN,
                                17,
                                500,
                                "0123456789ABCDEF",
                                "Return-Path: <>\r\n",
                                "",
                                "F",
                                "S",
                                "M",
                                "D"},
                          ml2;
    struct store__userrec u = {42, "$argon2id$v=19$..."}, u2;

    (void)state;
    buf_init(&b, STORE__REC_MAX);

    assert_int_equal(store__rec_msg_encode(&b, &m), 0);
    assert_int_equal(store__rec_msg_decode(b.data, b.len, &m2), 0);
    assert_int_equal(m2.refcount, 3);
    assert_int_equal(m2.size, 70000);
    assert_string_equal(m2.client, "client");
    assert_string_equal(m2.hdr_date, "Date");
    check_truncations(&b, DEC(store__rec_msg_decode), &m2);

    assert_int_equal(store__rec_q_encode(&b, &q), 0);
    assert_int_equal(store__rec_q_decode(b.data, b.len, &q2), 0);
    assert_int_equal(q2.next_try, -5);
    assert_string_equal(q2.last_error, "451 later");
    check_truncations(&b, DEC(store__rec_q_decode), &q2);
    /* An out-of-range enum is corrupt. */
    b.data[2] = 9;
    assert_int_equal(store__rec_q_decode(b.data, b.len, &q2), RM_E_CORRUPT);

    assert_int_equal(store__rec_mbox_encode(&b, &x), 0);
    assert_int_equal(store__rec_mbox_decode(b.data, b.len, &x2), 0);
    assert_int_equal(x2.bytes, 99999);
    check_truncations(&b, DEC(store__rec_mbox_decode), &x2);

    assert_int_equal(store__rec_mail_encode(&b, &ml), 0);
    assert_int_equal(store__rec_mail_decode(b.data, b.len, &ml2), 0);
    assert_string_equal(ml2.prefix, "Return-Path: <>\r\n");
    assert_string_equal(ml2.qid, "0123456789ABCDEF");
    check_truncations(&b, DEC(store__rec_mail_decode), &ml2);

    assert_int_equal(store__rec_user_encode(&b, &u), 0);
    assert_int_equal(store__rec_user_decode(b.data, b.len, &u2), 0);
    assert_string_equal(u2.pwhash, "$argon2id$v=19$...");
    check_truncations(&b, DEC(store__rec_user_decode), &u2);
    /* Wrong record type. */
    assert_int_equal(store__rec_msg_decode(b.data, b.len, &m2), RM_E_CORRUPT);
    buf_cleanup(&b);
}

static void
test_keys(void **state)
{
    uint8_t a[STORE__DUEKEY_LEN], b[STORE__DUEKEY_LEN];
    uint8_t mk[STORE__MAILKEY_MAX];
    char longname[STORE__NAME_MAX + 2];
    size_t n;

    (void)state;
    store__duekey(a, -1, "0000000000000000", 0);
    store__duekey(b, 1, "0000000000000000", 0);
    assert_true(memcmp(a, b, sizeof(a)) < 0);
    assert_int_equal(store__duekey_time(a), -1);
    store__duekey(a, 1000, "0000000000000000", 0);
    store__duekey(b, 1000, "0000000000000000", 1);
    assert_true(memcmp(a, b, sizeof(a)) < 0);
    assert_int_equal(store__mailkey(mk, "a@b", 7, &n), 0);
    assert_int_equal(n, 8);
    assert_int_equal(store__be32_get(mk + 4), 7);
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(store__mailkey(mk, longname, 1, &n), RM_E_INVAL);
    assert_true(store__qid_valid("0123456789ABCDEF"));
    assert_false(store__qid_valid("0123456789abcdef"));
    assert_false(store__qid_valid("0123456789ABCDE"));
}

/* ---- addresses ------------------------------------------------------- */

static void
test_addr_canon(void **state)
{
    char out[STORE_ADDR_MAX];
    char big[STORE_ADDR_MAX + 10];

    (void)state;
    assert_int_equal(store_addr_canon("John.Doe@Example.ORG", out, sizeof(out)),
                     0);
    assert_string_equal(out, "John.Doe@example.org");
    assert_int_equal(
        store_addr_canon("PostMaster@EXAMPLE.org", out, sizeof(out)), 0);
    assert_string_equal(out, "postmaster@example.org");
    assert_int_equal(store_addr_canon("\"a@b\"@X.Y", out, sizeof(out)), 0);
    assert_string_equal(out, "\"a@b\"@x.y");
    assert_int_equal(store_addr_canon("nobody", out, sizeof(out)), RM_E_INVAL);
    assert_int_equal(store_addr_canon("@x.y", out, sizeof(out)), RM_E_INVAL);
    assert_int_equal(store_addr_canon("a@", out, sizeof(out)), RM_E_INVAL);
    assert_int_equal(store_addr_canon("a@b.c", out, 5), RM_E_INVAL);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    big[10] = '@';
    assert_int_equal(store_addr_canon(big, out, sizeof(out)), RM_E_INVAL);
}

/* ---- queue ids ------------------------------------------------------- */

#define QID_PER_THREAD 20000

struct qid_thr {
    struct store *st;
    char (*out)[STORE_QID_LEN + 1];
};

static void
qid_thread(void *arg)
{
    struct qid_thr *t = arg;

    for (int i = 0; i < QID_PER_THREAD; i++)
        store_qid_new(t->st, t->out[i]);
}

static int
qid_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void
test_qid(void **state)
{
    struct fx f;
    char(*ids)[STORE_QID_LEN + 1];
    struct qid_thr t[2];
    uv_thread_t th[2];

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    ids = calloc(2 * QID_PER_THREAD, sizeof(*ids));
    for (int i = 0; i < 2; i++) {
        t[i].st = f.st;
        t[i].out = ids + i * QID_PER_THREAD;
        assert_int_equal(uv_thread_create(&th[i], qid_thread, &t[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        uv_thread_join(&th[i]);
    /* Each thread sees strictly increasing ids. */
    for (int i = 0; i < 2; i++)
        for (int j = 1; j < QID_PER_THREAD; j++)
            assert_true(strcmp(t[i].out[j - 1], t[i].out[j]) < 0);
    for (int i = 0; i < 2 * QID_PER_THREAD; i++)
        assert_true(store__qid_valid(ids[i]));
    /* And no id twice across threads. */
    qsort(ids, 2 * QID_PER_THREAD, sizeof(*ids), qid_cmp);
    for (int i = 1; i < 2 * QID_PER_THREAD; i++)
        assert_true(strcmp(ids[i - 1], ids[i]) < 0);
    free(ids);
    fx_done(&f);
}

/* ---- accept, deliver, mailboxes ------------------------------------- */

static void
expect_read(struct fx *f, const char *mbox, uint32_t uid, const char *prefix,
            const struct tmsg *t)
{
    struct rd r = {.calls = 0};
    size_t pl = strlen(prefix);

    buf_init(&r.b, 1 << 24);
    assert_int_equal(store_mailbox_read(f->st, mbox, uid, rd_cb, &r), 0);
    assert_int_equal(r.b.len, pl + t->m.len);
    assert_memory_equal(r.b.data, prefix, pl);
    assert_memory_equal(r.b.data + pl, t->m.data, t->m.len);
    assert_true(r.calls >= 2);
    buf_cleanup(&r.b);
}

static void
test_accept_deliver(void **state)
{
    struct fx f;
    struct tmsg t;
    struct qcol c;
    struct mcol mc;
    struct store_mailbox_stat ms, ms2;
    struct store_stats ss;
    struct store_qkey keys[2];
    int64_t now = time(NULL), nd;
    uint32_t nchunks;
    struct rd r;

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    /* 100 KB: four chunks. */
    tmsg_init(&f, &t, 100000, now - 10);
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t.m, DONE)), 0);

    assert_int_equal(store__body_count(f.st, t.m.qid, &nchunks), 0);
    assert_int_equal(nchunks, (100000 + STORE__CHUNK - 1) / STORE__CHUNK);

    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_list(f.st, qcol_cb, &c), 0);
    assert_int_equal(c.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(c.e[i].key.qid, t.m.qid);
        assert_int_equal(c.e[i].key.rcpt, i);
        assert_int_equal(c.e[i].state, STORE_Q_QUEUED);
        assert_int_equal(c.e[i].next_try, now - 10);
        assert_int_equal(c.e[i].size, 100000);
        assert_string_equal(c.e[i].envid, "ENV1");
    }
    assert_string_equal(c.e[0].mailbox, "Alice@example.org");
    assert_string_equal(c.e[2].mailbox, "");
    assert_int_equal(c.e[2].route, STORE_ROUTE_REMOTE);

    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_get(f.st, t.m.qid, qcol_cb, &c), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(store_queue_get(f.st, "0000000000000001", qcol_cb, &c),
                     RM_E_NOTFOUND);
    assert_int_equal(store_queue_get(f.st, "bogus", qcol_cb, &c), RM_E_INVAL);

    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due(f.st, now - 11, 0, qcol_cb, &c), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(store_queue_due(f.st, now, 2, qcol_cb, &c), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(store_queue_next_due(f.st, &nd), 0);
    assert_int_equal(nd, now - 10);

    /* A mailbox does not exist before its first delivery. */
    assert_int_equal(store_mailbox_stat(f.st, "bob@example.org", &ms),
                     RM_E_NOTFOUND);
    assert_int_equal(store_mailbox_list(f.st, "bob@example.org", mcol_cb, &mc),
                     RM_E_NOTFOUND);

    memset(keys, 0, sizeof(keys));
    memcpy(keys[0].qid, t.m.qid, sizeof(keys[0].qid));
    memcpy(keys[1].qid, t.m.qid, sizeof(keys[1].qid));
    keys[0].rcpt = 0;
    keys[1].rcpt = 1;
    assert_int_equal(SYNC(&f, store_queue_deliver_local(f.st, keys, 2, DONE)),
                     0);

    /* The remote entry is all that is left, in the due index too. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_list(f.st, qcol_cb, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.e[0].key.rcpt, 2);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due(f.st, now, 0, qcol_cb, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.e[0].key.rcpt, 2);

    assert_int_equal(store_mailbox_stat(f.st, "Alice@example.org", &ms), 0);
    assert_int_equal(ms.count, 1);
    assert_int_equal(ms.uidnext, 2);
    assert_true(ms.uidvalidity != 0);
    expect_read(&f, "Alice@example.org", 1,
                "Return-Path: <sender@origin.test>\r\n"
                "Delivered-To: Alice@Example.org\r\n",
                &t);
    expect_read(&f, "bob@example.org", 1,
                "Return-Path: <sender@origin.test>\r\n"
                "Delivered-To: bob@example.org\r\n",
                &t);
    assert_int_equal(ms.bytes, strlen("Return-Path: <sender@origin.test>\r\n"
                                      "Delivered-To: Alice@Example.org\r\n") +
                                   100000);
    memset(&mc, 0, sizeof(mc));
    assert_int_equal(store_mailbox_list(f.st, "bob@example.org", mcol_cb, &mc),
                     0);
    assert_int_equal(mc.n, 1);
    assert_int_equal(mc.m[0].uid, 1);
    assert_int_equal(mc.m[0].flags, 0);
    assert_string_equal(mc.subj[0], "Hello");
    buf_init(&r.b, 1 << 20);
    assert_int_equal(store_mailbox_read(f.st, "bob@example.org", 2, rd_cb, &r),
                     RM_E_NOTFOUND);
    buf_cleanup(&r.b);

    /* Re-delivery is idempotent: same keys, nothing doubles. */
    assert_int_equal(SYNC(&f, store_queue_deliver_local(f.st, keys, 2, DONE)),
                     0);
    assert_int_equal(store_mailbox_stat(f.st, "Alice@example.org", &ms2), 0);
    assert_int_equal(ms2.count, 1);
    assert_int_equal(ms2.uidnext, 2);
    assert_int_equal(ms2.uidvalidity, ms.uidvalidity);
    /* A remote key is refused. */
    keys[0].rcpt = 2;
    assert_int_equal(SYNC(&f, store_queue_deliver_local(f.st, keys, 1, DONE)),
                     RM_E_INVAL);

    /* Flags. */
    assert_int_equal(
        SYNC(&f, store_mailbox_flags(f.st, "bob@example.org", 1,
                                     STORE_FLAG_SEEN | STORE_FLAG_FLAGGED, 1,
                                     DONE)),
        0);
    assert_int_equal(
        SYNC(&f, store_mailbox_flags(f.st, "bob@example.org", 1,
                                     STORE_FLAG_FLAGGED, -1, DONE)),
        0);
    memset(&mc, 0, sizeof(mc));
    assert_int_equal(store_mailbox_list(f.st, "bob@example.org", mcol_cb, &mc),
                     0);
    assert_int_equal(mc.m[0].flags, STORE_FLAG_SEEN);
    assert_int_equal(
        SYNC(&f, store_mailbox_flags(f.st, "bob@example.org", 9, 0, 0, DONE)),
        RM_E_NOTFOUND);

    /* The body lives while any reference does: remote entry, then the
       two mailbox copies. */
    keys[0].rcpt = 2;
    assert_int_equal(SYNC(&f, store_queue_delete(f.st, &keys[0], DONE)), 0);
    assert_int_equal(store__body_count(f.st, t.m.qid, &nchunks), 0);
    assert_int_equal(nchunks, 4);
    assert_int_equal(
        SYNC(&f, store_mailbox_expunge(f.st, "Alice@example.org", 1, DONE)), 0);
    assert_int_equal(store__body_count(f.st, t.m.qid, &nchunks), 0);
    assert_int_equal(nchunks, 4);
    expect_read(&f, "bob@example.org", 1,
                "Return-Path: <sender@origin.test>\r\n"
                "Delivered-To: bob@example.org\r\n",
                &t);
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_int_equal(ss.messages, 1);
    assert_int_equal(
        SYNC(&f, store_mailbox_expunge(f.st, "bob@example.org", 1, DONE)), 0);
    assert_int_equal(store__body_count(f.st, t.m.qid, &nchunks), 0);
    assert_int_equal(nchunks, 0);
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_int_equal(ss.messages, 0);
    assert_int_equal(ss.queue_entries, 0);
    assert_int_equal(ss.mailboxes, 2);
    assert_int_equal(
        SYNC(&f, store_mailbox_expunge(f.st, "bob@example.org", 1, DONE)),
        RM_E_NOTFOUND);
    /* The mailbox stays, empty, with its UIDVALIDITY and UIDNEXT. */
    assert_int_equal(store_mailbox_stat(f.st, "bob@example.org", &ms), 0);
    assert_int_equal(ms.count, 0);
    assert_int_equal(ms.bytes, 0);
    assert_int_equal(ms.uidnext, 2);
    assert_int_equal(store_queue_next_due(f.st, &nd), RM_E_NOTFOUND);

    /* The same qid again is refused (and a second message gets UID 2). */
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t.m, DONE)), 0);
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t.m, DONE)), RM_E_EXISTS);
    tmsg_free(&t);
    fx_done(&f);
}

static int
mbox_each_cb(void *arg, const char *name, const struct store_mailbox_stat *s)
{
    int *n = arg;

    (void)s;
    assert_true(strchr(name, '@') != NULL);
    (*n)++;
    return *n == 1 ? 0 : 77;
}

/* Filing a message straight into a folder: Sent copies and drafts. */
static void
test_mailbox_file(void **state)
{
    struct fx f;
    struct store_file sf;
    struct mcol mc;
    struct store_stats ss;
    struct rd r = {.calls = 0};
    uint32_t uid = 0, nchunks;
    char first[STORE_QID_LEN + 1];
    static const char msg[] = "From: a@example.org\r\nSubject: draft\r\n\r\n"
                              "body\r\n";

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    memset(&sf, 0, sizeof(sf));
    store_qid_new(f.st, sf.qid);
    sf.mailbox = "a@example.org/drafts";
    sf.flags = STORE_FLAG_DRAFT | STORE_FLAG_SEEN;
    sf.hdr_subject = "draft";
    sf.data = msg;
    sf.len = sizeof(msg) - 1;
    assert_int_equal(SYNC(&f, store_mailbox_file(f.st, &sf, &uid, DONE)), 0);
    assert_int_equal(uid, 1);
    memcpy(first, sf.qid, sizeof(first));
    /* Read back exactly, no prefix, with its flags and summary. */
    buf_init(&r.b, 1 << 20);
    assert_int_equal(store_mailbox_read(f.st, sf.mailbox, 1, rd_cb, &r), 0);
    assert_int_equal(r.b.len, sizeof(msg) - 1);
    assert_memory_equal(r.b.data, msg, sizeof(msg) - 1);
    buf_cleanup(&r.b);
    memset(&mc, 0, sizeof(mc));
    assert_int_equal(store_mailbox_list(f.st, sf.mailbox, mcol_cb, &mc), 0);
    assert_int_equal(mc.n, 1);
    assert_int_equal(mc.m[0].flags, STORE_FLAG_DRAFT | STORE_FLAG_SEEN);
    assert_string_equal(mc.subj[0], "draft");

    /* Saved again: the old one goes in the same transaction. */
    store_qid_new(f.st, sf.qid);
    sf.replace_uid = 1;
    assert_int_equal(SYNC(&f, store_mailbox_file(f.st, &sf, &uid, DONE)), 0);
    assert_int_equal(uid, 2);
    memset(&mc, 0, sizeof(mc));
    assert_int_equal(store_mailbox_list(f.st, sf.mailbox, mcol_cb, &mc), 0);
    assert_int_equal(mc.n, 1);
    assert_int_equal(mc.m[0].uid, 2);
    assert_int_equal(store__body_count(f.st, first, &nchunks), 0);
    assert_int_equal(nchunks, 0);

    /* Replacing a message that is not there writes nothing. */
    store_qid_new(f.st, sf.qid);
    sf.replace_uid = 7;
    assert_int_equal(SYNC(&f, store_mailbox_file(f.st, &sf, &uid, DONE)),
                     RM_E_NOTFOUND);
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_int_equal(ss.messages, 1);

    /* Removing the last reference removes the body. */
    assert_int_equal(SYNC(&f, store_mailbox_expunge(f.st, sf.mailbox, 2, DONE)),
                     0);
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_int_equal(ss.messages, 0);
    /* Bad arguments. */
    sf.mailbox = "";
    assert_int_equal(store_mailbox_file(f.st, &sf, &uid, done_cb, NULL),
                     RM_E_INVAL);
    fx_done(&f);
}

/* ---- queue administration ------------------------------------------ */

static void
test_queue_admin(void **state)
{
    struct fx f;
    struct tmsg t;
    struct qcol c;
    struct store_qkey k;
    int64_t now = time(NULL), nd;
    int n = 0;

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    tmsg_init(&f, &t, 300, now - 5);
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t.m, DONE)), 0);
    memcpy(k.qid, t.m.qid, sizeof(k.qid));

    /* Hold everything: nothing is due. */
    k.rcpt = UINT32_MAX;
    assert_int_equal(SYNC(&f, store_queue_hold(f.st, &k, DONE)), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due(f.st, now + 1000, 0, qcol_cb, &c), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(store_queue_next_due(f.st, &nd), RM_E_NOTFOUND);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_get(f.st, t.m.qid, qcol_cb, &c), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c.e[i].state, STORE_Q_HOLD);
    /* A held local entry is not delivered. */
    k.rcpt = 0;
    assert_int_equal(SYNC(&f, store_queue_deliver_local(f.st, &k, 1, DONE)), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_get(f.st, t.m.qid, qcol_cb, &c), 0);
    assert_int_equal(c.n, 3);

    /* Release: queued, due now. */
    k.rcpt = UINT32_MAX;
    assert_int_equal(SYNC(&f, store_queue_release(f.st, &k, DONE)), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due(f.st, time(NULL), 0, qcol_cb, &c), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.e[0].state, STORE_Q_QUEUED);
    assert_true(c.e[0].next_try >= now);

    /* Defer one: attempts, error, moved in the due index. */
    k.rcpt = 2;
    assert_int_equal(SYNC(&f, store_queue_defer(f.st, &k, now + 600,
                                                "451 4.4.1 timeout", DONE)),
                     0);
    assert_int_equal(SYNC(&f, store_queue_defer(f.st, &k, now + 300,
                                                "451 4.4.1 again", DONE)),
                     0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due(f.st, now + 100, 0, qcol_cb, &c), 0);
    assert_int_equal(c.n, 2);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due(f.st, now + 1000, 0, qcol_cb, &c), 0);
    assert_int_equal(c.n, 3);
    /* Due-time order: the deferred one comes last. */
    assert_int_equal(c.e[2].key.rcpt, 2);
    assert_int_equal(c.e[2].state, STORE_Q_DEFERRED);
    assert_int_equal(c.e[2].attempts, 2);
    assert_int_equal(c.e[2].next_try, now + 300);
    assert_string_equal(c.e[2].last_error, "451 4.4.1 again");

    /* Hold one entry, then only the other two are due. */
    k.rcpt = 0;
    assert_int_equal(SYNC(&f, store_queue_hold(f.st, &k, DONE)), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due(f.st, now + 1000, 0, qcol_cb, &c), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.e[0].key.rcpt, 1);
    /* A held entry keeps its hold through a deferral. */
    assert_int_equal(
        SYNC(&f, store_queue_defer(f.st, &k, now + 50, "4xx", DONE)), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due(f.st, now + 1000, 0, qcol_cb, &c), 0);
    assert_int_equal(c.n, 2);

    /* Delete one recipient, then the rest. */
    k.rcpt = 1;
    assert_int_equal(SYNC(&f, store_queue_delete(f.st, &k, DONE)), 0);
    assert_int_equal(SYNC(&f, store_queue_delete(f.st, &k, DONE)),
                     RM_E_NOTFOUND);
    assert_int_equal(SYNC(&f, store_queue_hold(f.st, &k, DONE)), RM_E_NOTFOUND);
    assert_int_equal(store_queue_next_due(f.st, &nd), 0);
    assert_int_equal(nd, now + 300);
    k.rcpt = UINT32_MAX;
    assert_int_equal(SYNC(&f, store_queue_delete(f.st, &k, DONE)), 0);
    assert_int_equal(store_queue_get(f.st, t.m.qid, qcol_cb, &c),
                     RM_E_NOTFOUND);
    assert_int_equal(store_queue_next_due(f.st, &nd), RM_E_NOTFOUND);
    assert_int_equal(SYNC(&f, store_queue_delete(f.st, &k, DONE)),
                     RM_E_NOTFOUND);
    {
        struct store_stats ss;
        uint32_t nchunks;

        assert_int_equal(store_stats(f.st, &ss), 0);
        assert_int_equal(ss.messages, 0);
        assert_int_equal(ss.queue_entries, 0);
        assert_int_equal(store__body_count(f.st, t.m.qid, &nchunks), 0);
        assert_int_equal(nchunks, 0);
    }

    /* Iteration stops on a non-zero callback value and returns it. */
    tmsg_free(&t);
    tmsg_init(&f, &t, 10, now);
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t.m, DONE)), 0);
    memcpy(k.qid, t.m.qid, sizeof(k.qid));
    k.rcpt = UINT32_MAX;
    assert_int_equal(
        SYNC(&f, store_queue_deliver_local(
                     f.st, (struct store_qkey[]){{.rcpt = 0}, {.rcpt = 1}}, 0,
                     DONE)),
        0);
    {
        struct store_qkey ks[2];

        memcpy(ks[0].qid, t.m.qid, sizeof(ks[0].qid));
        memcpy(ks[1].qid, t.m.qid, sizeof(ks[1].qid));
        ks[0].rcpt = 0;
        ks[1].rcpt = 1;
        assert_int_equal(SYNC(&f, store_queue_deliver_local(f.st, ks, 2, DONE)),
                         0);
    }
    assert_int_equal(store_mailbox_each(f.st, mbox_each_cb, &n), 77);
    tmsg_free(&t);
    fx_done(&f);
}

/* ---- users ----------------------------------------------------------- */

struct ucol {
    int n;
    char addr[4][64];
    char hash[4][STORE_PWHASH_MAX];
    int64_t created;
};

static int
ucol_cb(void *arg, const struct store_user *u)
{
    struct ucol *c = arg;

    snprintf(c->addr[c->n], 64, "%s", u->address);
    snprintf(c->hash[c->n], STORE_PWHASH_MAX, "%s", u->pwhash);
    c->created = u->created;
    c->n++;
    return 0;
}

/* ---- delivery outcomes ------------------------------------------------ */

struct hcol {
    int n;
    char line[8][128];
};

static int
hcol_cb(void *arg, const char *line)
{
    struct hcol *h = arg;

    if (h->n < 8)
        snprintf(h->line[h->n], 128, "%s", line);
    h->n++;
    return 0;
}

static void
test_queue_results(void **state)
{
    struct fx f;
    struct tmsg t, rep;
    struct qcol c;
    struct hcol h;
    struct rd r;
    struct store_qresult res[2];
    struct store_qkey k;
    struct store_stats ss;
    int64_t now = time(NULL), next;

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    tmsg_init(&f, &t, 70000, now - 5);
    t.r[0].route = STORE_ROUTE_REMOTE;
    t.r[0].mailbox = NULL;
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t.m, DONE)), 0);

    /* The message reads back whole, in chunks. */
    memset(&r, 0, sizeof(r));
    buf_init(&r.b, 1 << 20);
    assert_int_equal(store_msg_read(f.st, t.m.qid, rd_cb, &r), 0);
    assert_int_equal(r.b.len, 70000);
    assert_memory_equal(r.b.data, t.body, 70000);
    assert_true(r.calls >= 3);
    buf_cleanup(&r.b);

    /* Due scan: all three due, and nothing after them. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due_scan(f.st, now, qcol_cb, &c, &next), 0);
    assert_int_equal(c.n, 3);
    assert_true(next == INT64_MAX);

    /* rcpt 0 deferred twice (history kept), rcpt 2 delivered. */
    memset(res, 0, sizeof(res));
    memcpy(res[0].key.qid, t.m.qid, sizeof(res[0].key.qid));
    res[0].key.rcpt = 0;
    res[0].outcome = STORE_OUT_DEFERRED;
    res[0].next_try = now + 300;
    res[0].error = "451 4.3.0 try later";
    res[0].history = "first attempt";
    res[1] = res[0];
    res[1].key.rcpt = 2;
    res[1].outcome = STORE_OUT_DELIVERED;
    assert_int_equal(SYNC(&f, store_queue_results(f.st, res, 2, NULL, DONE)),
                     0);
    res[0].history = "second attempt";
    res[0].next_try = now + 600;
    res[0].set_notify = STORE_NOTIFY_DELAY_SENT;
    assert_int_equal(SYNC(&f, store_queue_results(f.st, res, 1, NULL, DONE)),
                     0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_get(f.st, t.m.qid, qcol_cb, &c), 0);
    assert_int_equal(c.n, 2); /* rcpt 2 is gone */
    assert_int_equal(c.e[0].state, STORE_Q_DEFERRED);
    assert_int_equal(c.e[0].attempts, 2);
    assert_int_equal(c.e[0].next_try, now + 600);
    assert_string_equal(c.e[0].last_error, "451 4.3.0 try later");
    memset(&h, 0, sizeof(h));
    k = res[0].key;
    assert_int_equal(store_queue_history(f.st, &k, hcol_cb, &h), 0);
    assert_int_equal(h.n, 2);
    assert_string_equal(h.line[0], "first attempt");
    assert_string_equal(h.line[1], "second attempt");

    /* Not due now; the scan says when. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due_scan(f.st, now, qcol_cb, &c, &next), 0);
    assert_int_equal(c.n, 1); /* rcpt 1 (local) is still due */
    assert_int_equal(next, now + 600);

    /* retry (all): due now, keeps state and attempts. */
    assert_int_equal(SYNC(&f, store_queue_retry(f.st, NULL, DONE)), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_due_scan(f.st, time(NULL), qcol_cb, &c, &next),
                     0);
    assert_int_equal(c.n, 2);
    /* retry of one qid that does not exist */
    memset(&k, 0, sizeof(k));
    memcpy(k.qid, "00000000000000AA", 17);
    k.rcpt = UINT32_MAX;
    assert_int_equal(SYNC(&f, store_queue_retry(f.st, &k, DONE)),
                     RM_E_NOTFOUND);

    /* Bounce rcpt 0 with a report in the same transaction; then the
       local one goes to its mailbox and the body is released. */
    tmsg_init(&f, &rep, 500, now);
    rep.m.mail_from = "";
    rep.m.nrcpts = 1;
    rep.r[0] = (struct store_rcpt){"sender@origin.test", "sender@origin.test",
                                   NULL, STORE_NOTIFY_NEVER, STORE_ROUTE_LOCAL};
    res[0].outcome = STORE_OUT_BOUNCED;
    assert_int_equal(SYNC(&f, store_queue_results(f.st, res, 1, &rep.m, DONE)),
                     0);
    memset(&h, 0, sizeof(h));
    k = res[0].key;
    assert_int_equal(store_queue_history(f.st, &k, hcol_cb, &h), 0);
    assert_int_equal(h.n, 0); /* history goes with the entry */
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_get(f.st, rep.m.qid, qcol_cb, &c), 0);
    assert_int_equal(c.n, 1);
    k.rcpt = 1;
    assert_int_equal(SYNC(&f, store_queue_deliver_local(f.st, &k, 1, DONE)), 0);
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_int_equal(ss.queue_entries, 1); /* the report */
    /* Results for entries that are gone are skipped, not errors. */
    assert_int_equal(SYNC(&f, store_queue_results(f.st, res, 1, NULL, DONE)),
                     0);
    /* A report that reuses a qid fails the whole transaction. */
    res[0].key.rcpt = 0;
    memcpy(res[0].key.qid, rep.m.qid, sizeof(res[0].key.qid));
    assert_int_equal(SYNC(&f, store_queue_results(f.st, res, 1, &rep.m, DONE)),
                     RM_E_EXISTS);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_get(f.st, rep.m.qid, qcol_cb, &c), 0);
    assert_int_equal(c.n, 1);
    tmsg_free(&rep);
    tmsg_free(&t);
    fx_close_store(&f);
    fx_done(&f);
}

static void
test_users(void **state)
{
    struct fx f;
    char h1[STORE_PWHASH_MAX], h2[STORE_PWHASH_MAX];
    struct ucol c;

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    /* argon2id is slow on purpose: two hashes, three verifies. */
    assert_int_equal(store_pw_hash("s3cret", 6, h1), 0);
    assert_int_equal(strncmp(h1, "$argon2id$", 10), 0);
    assert_int_equal(store_pw_verify(h1, "s3cret", 6), 0);
    assert_int_equal(store_pw_verify(h1, "s3creT", 6), RM_E_PERM);
    assert_int_equal(store_pw_verify("garbage", "s3cret", 6), RM_E_PERM);
    assert_int_equal(store_pw_hash("other", 5, h2), 0);
    assert_string_not_equal(h1, h2);

    assert_int_equal(
        SYNC(&f, store_user_add(f.st, "alice@example.org", h1, DONE)), 0);
    assert_int_equal(
        SYNC(&f, store_user_add(f.st, "alice@example.org", h2, DONE)),
        RM_E_EXISTS);
    assert_int_equal(
        SYNC(&f, store_user_add(f.st, "bob@example.org", h1, DONE)), 0);
    assert_int_equal(
        store_user_add(f.st, "carol@example.org", "plain", done_cb, NULL),
        RM_E_INVAL);
    assert_int_equal(store_user_add(f.st, "nodomain", h1, done_cb, NULL),
                     RM_E_INVAL);

    memset(&c, 0, sizeof(c));
    assert_int_equal(store_user_get(f.st, "alice@example.org", ucol_cb, &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.hash[0], h1);
    assert_true(c.created > 0);
    assert_int_equal(store_user_get(f.st, "Alice@example.org", ucol_cb, &c),
                     RM_E_NOTFOUND);

    assert_int_equal(
        SYNC(&f, store_user_passwd(f.st, "alice@example.org", h2, DONE)), 0);
    assert_int_equal(
        SYNC(&f, store_user_passwd(f.st, "zed@example.org", h2, DONE)),
        RM_E_NOTFOUND);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_user_get(f.st, "alice@example.org", ucol_cb, &c), 0);
    assert_string_equal(c.hash[0], h2);
    assert_int_equal(store_pw_verify(c.hash[0], "other", 5), 0);

    memset(&c, 0, sizeof(c));
    assert_int_equal(store_user_list(f.st, ucol_cb, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.addr[0], "alice@example.org");
    assert_string_equal(c.addr[1], "bob@example.org");

    assert_int_equal(SYNC(&f, store_user_del(f.st, "bob@example.org", DONE)),
                     0);
    assert_int_equal(SYNC(&f, store_user_del(f.st, "bob@example.org", DONE)),
                     RM_E_NOTFOUND);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_user_list(f.st, ucol_cb, &c), 0);
    assert_int_equal(c.n, 1);
    fx_done(&f);
}

/* ---- mesh table ------------------------------------------------------ */

struct kvcol {
    int n;
    char keys[8][32];
    char vals[8][32];
};

static int
kvcol_cb(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct kvcol *c = arg;

    assert_true(c->n < 8 && klen < 32 && vlen < 32);
    memcpy(c->keys[c->n], key, klen);
    c->keys[c->n][klen] = '\0';
    memcpy(c->vals[c->n], val, vlen);
    c->vals[c->n][vlen] = '\0';
    c->n++;
    return 0;
}

static void
test_mesh_table(void **state)
{
    struct fx f;
    struct kvcol c;
    struct store_mesh_write w[3] = {
        {STORE_MESH_PUT, "rec/b", 5, "B1", 2},
        {STORE_MESH_PUT, "rec/a", 5, "A1", 2},
        {STORE_MESH_NEW, "inv/1", 5, "x", 1},
    };

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    assert_int_equal(SYNC(&f, store_mesh_apply(f.st, w, 3, DONE)), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_mesh_each(f.st, "rec/", 4, kvcol_cb, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.keys[0], "rec/a");
    assert_string_equal(c.vals[1], "B1");

    /* A failing write undoes the whole batch: the PUT before it too. */
    w[0].val = "B2";
    assert_int_equal(SYNC(&f, store_mesh_apply(f.st, w, 3, DONE)), RM_E_EXISTS);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_mesh_get(f.st, "rec/b", 5, kvcol_cb, &c), 0);
    assert_string_equal(c.vals[0], "B1");

    /* TAKE: exactly one taker wins. */
    w[0] = (struct store_mesh_write){STORE_MESH_TAKE, "inv/1", 5, NULL, 0};
    assert_int_equal(SYNC(&f, store_mesh_apply(f.st, w, 1, DONE)), 0);
    assert_int_equal(SYNC(&f, store_mesh_apply(f.st, w, 1, DONE)),
                     RM_E_NOTFOUND);
    w[0].op = STORE_MESH_DEL;
    assert_int_equal(SYNC(&f, store_mesh_apply(f.st, w, 1, DONE)), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_mesh_get(f.st, "inv/1", 5, kvcol_cb, &c),
                     RM_E_NOTFOUND);
    assert_int_equal(store_mesh_each(f.st, NULL, 0, kvcol_cb, &c), 0);
    assert_int_equal(c.n, 2);

    /* Survives a reopen. */
    fx_close_store(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_mesh_each(f.st, "rec/", 4, kvcol_cb, &c), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(store_mesh_apply(f.st, w, 0, done_cb, NULL), RM_E_INVAL);
    w[0].klen = 0;
    assert_int_equal(store_mesh_apply(f.st, w, 1, done_cb, NULL), RM_E_INVAL);
    fx_done(&f);
}

/* A withdrawn message: entries, message and mesh record in one
   transaction; a failing mesh write keeps the entries. */
static void
test_queue_withdraw(void **state)
{
    struct fx f;
    struct tmsg t;
    struct qcol c;
    struct kvcol kv;
    struct store_stats ss;
    struct store_mesh_write w[2] = {
        {STORE_MESH_PUT, "rp/x", 4, "tomb", 4},
        {STORE_MESH_TAKE, "rp/none", 7, NULL, 0},
    };

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    tmsg_init(&f, &t, 300, time(NULL));
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t.m, DONE)), 0);
    /* All or nothing: the TAKE fails, the entries stay. */
    assert_int_equal(SYNC(&f, store_queue_withdraw(f.st, t.m.qid, w, 2, DONE)),
                     RM_E_NOTFOUND);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_queue_get(f.st, t.m.qid, qcol_cb, &c), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(SYNC(&f, store_queue_withdraw(f.st, t.m.qid, w, 1, DONE)),
                     0);
    assert_int_equal(store_queue_get(f.st, t.m.qid, qcol_cb, &c),
                     RM_E_NOTFOUND);
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_int_equal(ss.messages, 0);
    assert_int_equal(ss.queue_entries, 0);
    memset(&kv, 0, sizeof(kv));
    assert_int_equal(store_mesh_get(f.st, "rp/x", 4, kvcol_cb, &kv), 0);
    assert_string_equal(kv.vals[0], "tomb");
    /* Nothing left in the queue is no error: the mesh writes go. */
    w[0].val = "tom2";
    assert_int_equal(SYNC(&f, store_queue_withdraw(f.st, t.m.qid, w, 1, DONE)),
                     0);
    memset(&kv, 0, sizeof(kv));
    assert_int_equal(store_mesh_get(f.st, "rp/x", 4, kvcol_cb, &kv), 0);
    assert_string_equal(kv.vals[0], "tom2");
    assert_int_equal(store_queue_withdraw(f.st, "nope", w, 1, done_cb, NULL),
                     RM_E_INVAL);
    assert_int_equal(store_queue_withdraw(f.st, t.m.qid, w, 0, done_cb, NULL),
                     RM_E_INVAL);
    tmsg_free(&t);
    fx_done(&f);
}

/* Dedup keys written with a message: in the same transaction, and a key
   already there fails the whole request (no message, no queue entry). */
static int
qn_cb(void *arg, const struct store_qentry *e)
{
    (void)e;
    (*(int *)arg)++;
    return 0;
}

static void
test_msg_dedup_keys(void **state)
{
    struct fx f;
    struct tmsg t, t2;
    struct kvcol c;
    struct store_mesh_write w[2] = {
        {STORE_MESH_NEW, "xd/k1", 5, "e1", 2},
        {STORE_MESH_NEW, "xd/k2", 5, "e2", 2},
    };
    struct store_mesh_write bad = {STORE_MESH_PUT, "xd/k3", 5, "e3", 2};
    int n = 0;

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    tmsg_init(&f, &t, 1000, 1700000000);
    t.m.mesh_new = w;
    t.m.nmesh_new = 2;
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t.m, DONE)), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_mesh_each(f.st, "xd/", 3, kvcol_cb, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.vals[1], "e2");
    assert_int_equal(store_queue_list(f.st, qn_cb, &n), 0);
    assert_int_equal(n, 3);

    /* The same message again (a retry): one key exists, nothing new. */
    tmsg_init(&f, &t2, 500, 1700000001);
    w[0].key = "xd/k9"; /* new */
    t2.m.mesh_new = w;
    t2.m.nmesh_new = 2; /* xd/k2 exists */
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t2.m, DONE)),
                     RM_E_EXISTS);
    n = 0;
    assert_int_equal(store_queue_list(f.st, qn_cb, &n), 0);
    assert_int_equal(n, 3);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_mesh_get(f.st, "xd/k9", 5, kvcol_cb, &c),
                     RM_E_NOTFOUND);
    {
        struct rd r = {0};

        buf_init(&r.b, 1 << 20);
        assert_int_equal(store_msg_read(f.st, t2.m.qid, rd_cb, &r),
                         RM_E_NOTFOUND);
        buf_cleanup(&r.b);
    }

    /* Without the existing key it goes through. */
    t2.m.nmesh_new = 1;
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t2.m, DONE)), 0);
    assert_int_equal(store_mesh_get(f.st, "xd/k9", 5, kvcol_cb, &c), 0);

    /* Only STORE_MESH_NEW is allowed, with a key. */
    t2.m.mesh_new = &bad;
    assert_int_equal(store_msg_accept(f.st, &t2.m, done_cb, NULL), RM_E_INVAL);
    t2.m.mesh_new = NULL;
    assert_int_equal(store_msg_accept(f.st, &t2.m, done_cb, NULL), RM_E_INVAL);
    tmsg_free(&t);
    tmsg_free(&t2);
    fx_done(&f);
}

/* ---- group commit ---------------------------------------------------- */

struct ord {
    int *log;
    int *pos;
    int idx;
    int status;
};

static void
ord_cb(void *arg, int status)
{
    struct ord *o = arg;

    o->status = status;
    o->log[(*o->pos)++] = o->idx;
}

#define NGROUP 100

static void
test_group_commit(void **state)
{
    struct fx f;
    struct tmsg *t;
    struct ord o[NGROUP + 1];
    int log[NGROUP + 1], pos = 0;
    struct store_stats ss;

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    t = calloc(NGROUP, sizeof(*t));
    for (int i = 0; i < NGROUP; i++) {
        tmsg_init(&f, &t[i], 2000, time(NULL));
        o[i] = (struct ord){log, &pos, i, 1};
        assert_int_equal(store_msg_accept(f.st, &t[i].m, ord_cb, &o[i]), 0);
    }
    /* A reused qid in the same stream fails alone. */
    o[NGROUP] = (struct ord){log, &pos, NGROUP, 1};
    assert_int_equal(store_msg_accept(f.st, &t[7].m, ord_cb, &o[NGROUP]), 0);
    while (pos < NGROUP + 1)
        uv_run(&f.loop, UV_RUN_ONCE);
    for (int i = 0; i <= NGROUP; i++)
        assert_int_equal(log[i], i); /* submission order */
    for (int i = 0; i < NGROUP; i++)
        assert_int_equal(o[i].status, 0);
    assert_int_equal(o[NGROUP].status, RM_E_EXISTS);
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_int_equal(ss.commit_reqs, NGROUP + 1);
    assert_true(ss.commits < NGROUP);
    assert_int_equal(ss.messages, NGROUP);
    assert_int_equal(ss.queue_entries, 3 * NGROUP);
    print_message("group commit: %d requests in %llu commits\n", NGROUP + 1,
                  (unsigned long long)ss.commits);
    for (int i = 0; i < NGROUP; i++)
        tmsg_free(&t[i]);
    free(t);
    fx_done(&f);
}

/* Requests still queued at store_close() finish, and their callbacks run
   before store_close() returns; later submissions are refused. */
static void
test_close_pending(void **state)
{
    struct fx f;
    struct tmsg t[5];
    struct done d = {0};
    struct store_qkey k;

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    for (int i = 0; i < 5; i++) {
        tmsg_init(&f, &t[i], 5000, time(NULL));
        assert_int_equal(store_msg_accept(f.st, &t[i].m, done_cb, &d), 0);
    }
    store_close(f.st);
    assert_int_equal(d.n, 5);
    assert_int_equal(d.status, 0);
    memset(&k, 0, sizeof(k));
    memcpy(k.qid, t[0].m.qid, sizeof(k.qid));
    assert_int_equal(store_queue_hold(f.st, &k, done_cb, &d), RM_E_CLOSED);
    f.st = NULL;
    fx_close_store(&f);

    /* Everything is there after reopening. */
    assert_int_equal(fx_open(&f, NULL), 0);
    {
        struct store_stats ss;

        assert_int_equal(store_stats(f.st, &ss), 0);
        assert_int_equal(ss.messages, 5);
        assert_int_equal(ss.queue_entries, 15);
        assert_int_equal(ss.commits, 0);
    }
    /* A new qid sorts after every stored one. */
    {
        char q[STORE_QID_LEN + 1];

        store_qid_new(f.st, q);
        assert_true(strcmp(q, t[4].m.qid) > 0);
    }
    for (int i = 0; i < 5; i++)
        tmsg_free(&t[i]);
    fx_done(&f);
}

/* ---- map growth ------------------------------------------------------ */

struct reader {
    struct store *st;
    _Atomic int stop;
    int loops;
};

static int
count_cb(void *arg, const struct store_qentry *e)
{
    (void)e;
    (*(int *)arg)++;
    return 0;
}

/* Reads while the writer remaps: the rwlock must keep them safe. */
static void
reader_thread(void *arg)
{
    struct reader *r = arg;
    struct store_stats ss;
    int n;

    while (!r->stop) {
        n = 0;
        assert_int_equal(store_stats(r->st, &ss), 0);
        assert_int_equal(store_queue_list(r->st, count_cb, &n), 0);
        r->loops++;
    }
}

static void
test_map_growth(void **state)
{
    struct fx f;
    struct store_opts o = {.map_size = 256 * 1024, .nosync = 1};
    struct tmsg t[12];
    struct done d = {0};
    struct store_stats ss;
    struct reader rd;
    uv_thread_t th;

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, &o), 0);
    rd = (struct reader){f.st, 0, 0};
    assert_int_equal(uv_thread_create(&th, reader_thread, &rd), 0);
    /* 12 x 200 KB = 2.4 MB into a 256 KiB map. */
    for (int i = 0; i < 12; i++) {
        tmsg_init(&f, &t[i], 200000, time(NULL));
        assert_int_equal(store_msg_accept(f.st, &t[i].m, done_cb, &d), 0);
        if (i % 3 == 2)
            wait_n(&f, &d, i + 1);
        assert_int_equal(d.status, 0);
    }
    wait_n(&f, &d, 12);
    assert_int_equal(d.status, 0);
    rd.stop = 1;
    uv_thread_join(&th);
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_true(ss.map_size >= 2 * 1024 * 1024);
    assert_true(ss.used_bytes >= 12 * 200000);
    assert_int_equal(ss.messages, 12);
    assert_int_equal(ss.full_errors, 0);

    /* Growth stops at the ceiling: RM_E_FULL, earlier data intact. */
    fx_close_store(&f);
    o.map_size_max = ss.map_size;
    assert_int_equal(fx_open(&f, &o), 0);
    {
        struct tmsg big;

        tmsg_init(&f, &big, (size_t)ss.map_size, time(NULL));
        assert_int_equal(SYNC(&f, store_msg_accept(f.st, &big.m, DONE)),
                         RM_E_FULL);
        tmsg_free(&big);
    }
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_int_equal(ss.full_errors, 1);
    assert_int_equal(ss.messages, 12);
    /* And small work still goes through at the ceiling. */
    {
        struct store_qkey k;

        memcpy(k.qid, t[0].m.qid, sizeof(k.qid));
        k.rcpt = UINT32_MAX;
        assert_int_equal(SYNC(&f, store_queue_delete(f.st, &k, DONE)), 0);
    }
    for (int i = 0; i < 12; i++)
        tmsg_free(&t[i]);
    fx_done(&f);
}

/* ---- disk full ------------------------------------------------------- */

/* A failed assertion longjmps out of the test: unmount here so that a
   failing run leaves no tmpfs behind. */
static char enospc_mnt[64];

static int
enospc_teardown(void **state)
{
    (void)state;
    if (enospc_mnt[0]) {
        umount2(enospc_mnt, MNT_DETACH);
        rmdir(enospc_mnt);
        enospc_mnt[0] = '\0';
    }
    return 0;
}

static void
test_enospc(void **state)
{
    struct fx f;
    struct store_opts o = {.map_size = 64 << 20};
    struct tmsg t[40];
    struct store_stats ss;
    char ballast[160];
    int nok = 0, full = 0, fd;
    static char zero[64 * 1024];

    (void)state;
    if (geteuid() != 0) {
        skip();
        return;
    }
    fx_init(&f);
    if (mount("tmpfs", f.dir, "tmpfs", 0, "size=2m,mode=0700") != 0) {
        print_message("mount tmpfs failed (%s): skipped\n", strerror(errno));
        fx_done(&f);
        skip();
        return;
    }
    f.mounted = 1;
    snprintf(enospc_mnt, sizeof(enospc_mnt), "%s", f.dir);
    /* Ballast that the test frees later to give space back. */
    snprintf(ballast, sizeof(ballast), "%s/ballast", f.dir);
    fd = open(ballast, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(write(fd, zero, sizeof(zero)), sizeof(zero));
    close(fd);

    assert_int_equal(fx_open(&f, &o), 0);
    for (int i = 0; i < 40 && !full; i++) {
        int st;

        tmsg_init(&f, &t[i], 100000, time(NULL));
        st = SYNC(&f, store_msg_accept(f.st, &t[i].m, DONE));
        if (st == 0)
            nok++;
        else if (st == RM_E_FULL)
            full = 1;
        else
            fail_msg("unexpected status %d", st);
    }
    assert_true(full);
    assert_true(nok > 0);
    /* Earlier commits are intact and readable; the env still works. */
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_int_equal(ss.messages, nok);
    assert_true(ss.full_errors >= 1);
    /* Still full: fails again, cleanly. */
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t[nok].m, DONE)),
                     RM_E_FULL);

    /* Space returns: the same request now succeeds. */
    assert_int_equal(unlink(ballast), 0);
    assert_int_equal(SYNC(&f, store_msg_accept(f.st, &t[nok].m, DONE)), 0);
    {
        struct store_qkey k;

        memcpy(k.qid, t[0].m.qid, sizeof(k.qid));
        k.rcpt = 0;
        assert_int_equal(SYNC(&f, store_queue_deliver_local(f.st, &k, 1, DONE)),
                         0);
        expect_read(&f, "Alice@example.org", 1,
                    "Return-Path: <sender@origin.test>\r\n"
                    "Delivered-To: Alice@Example.org\r\n",
                    &t[0]);
    }
    fx_close_store(&f);
    /* And all of it survives a reopen. */
    assert_int_equal(fx_open(&f, &o), 0);
    assert_int_equal(store_stats(f.st, &ss), 0);
    assert_int_equal(ss.messages, nok + 1);
    {
        struct store_qkey k;

        memcpy(k.qid, t[nok].m.qid, sizeof(k.qid));
        k.rcpt = 1;
        assert_int_equal(SYNC(&f, store_queue_deliver_local(f.st, &k, 1, DONE)),
                         0);
        expect_read(&f, "bob@example.org", 1,
                    "Return-Path: <sender@origin.test>\r\n"
                    "Delivered-To: bob@example.org\r\n",
                    &t[nok]);
    }
    for (int i = 0; i <= nok; i++)
        tmsg_free(&t[i]);
    fx_done(&f);
    enospc_mnt[0] = '\0';
}

/* ---- schema ---------------------------------------------------------- */

static void
test_schema(void **state)
{
    struct fx f;
    struct stat sb;
    char p[160];

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    fx_close_store(&f);
    /* Owner-only directory and files. */
    assert_int_equal(stat(f.sub, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    snprintf(p, sizeof(p), "%s/data.mdb", f.sub);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    assert_int_equal(store__schema_write(f.sub, STORE_SCHEMA_VERSION + 1), 0);
    assert_int_equal(fx_open(&f, NULL), RM_E_SCHEMA);
    assert_null(f.st);
    assert_int_equal(store__schema_write(f.sub, STORE_SCHEMA_VERSION), 0);
    assert_int_equal(fx_open(&f, NULL), 0);
    fx_done(&f);
}

static void
test_invalid_args(void **state)
{
    struct fx f;
    struct tmsg t;
    struct done d = {0};

    (void)state;
    fx_init(&f);
    assert_int_equal(fx_open(&f, NULL), 0);
    tmsg_init(&f, &t, 10, time(NULL));
    t.m.nrcpts = 0;
    assert_int_equal(store_msg_accept(f.st, &t.m, done_cb, &d), RM_E_INVAL);
    t.m.nrcpts = 3;
    t.r[1].mailbox = NULL;
    assert_int_equal(store_msg_accept(f.st, &t.m, done_cb, &d), RM_E_INVAL);
    t.r[1].mailbox = "bob@example.org";
    t.m.qid[0] = 'x';
    assert_int_equal(store_msg_accept(f.st, &t.m, done_cb, &d), RM_E_INVAL);
    assert_int_equal(store_mailbox_expunge(f.st, "a@b", 0, done_cb, &d),
                     RM_E_INVAL);
    assert_int_equal(d.n, 0);
    tmsg_free(&t);
    fx_done(&f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rec_codec),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_addr_canon),
        cmocka_unit_test(test_qid),
        cmocka_unit_test(test_accept_deliver),
        cmocka_unit_test(test_queue_admin),
        cmocka_unit_test(test_queue_results),
        cmocka_unit_test(test_users),
        cmocka_unit_test(test_mesh_table),
        cmocka_unit_test(test_queue_withdraw),
        cmocka_unit_test(test_msg_dedup_keys),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_close_pending),
        cmocka_unit_test(test_map_growth),
        cmocka_unit_test(test_mailbox_file),
        cmocka_unit_test_teardown(test_enospc, enospc_teardown),
        cmocka_unit_test(test_schema),
        cmocka_unit_test(test_invalid_args),
    };

    log_set_level(LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
