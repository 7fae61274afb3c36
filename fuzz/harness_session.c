#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "fuzz/harness_session.h"
#include "node/smtp_session.h"

struct harness_done {
    int done;
    int status;
};

static void
harness_done_cb(void *arg, int status)
{
    struct harness_done *d = arg;

    d->done = 1;
    d->status = status;
}

static int
harness_wait(struct harness *h, struct harness_done *d)
{
    while (!d->done)
        uv_run(&h->loop, UV_RUN_ONCE);
    return d->status;
}

int
harness_init(struct harness *h, int nosync)
{
    struct store_opts so = {0};
    struct harness_done d = {0};
    char err[256];
    int r;

    memset(h, 0, sizeof(*h));
    log_set_level(LOG_ERR);
    snprintf(h->dir, sizeof(h->dir), "/tmp/relaymesh-harness-XXXXXX");
    if (mkdtemp(h->dir) == NULL)
        return -errno;
    r = node_config_load(&h->cfg, NULL, err, sizeof(err));
    if (r != 0)
        return r;
    free(h->cfg.hostname);
    h->cfg.hostname = strdup("mx.test.example");
    h->cfg.max_errors = 10;
    uv_loop_init(&h->loop);
    so.nosync = nosync;
    r = store_open(&h->n.store, h->dir, &so, &h->loop);
    if (r != 0)
        return r;
    h->n.loop = &h->loop;
    h->n.cfg = &h->cfg;
    h->n.started = 1;
    /* Any string will do as a hash: the session only checks presence. */
    r = store_user_add(h->n.store, "alice@localhost",
                       "$argon2id$v=19$m=65536,t=2,p=1$x$y", harness_done_cb,
                       &d);
    if (r != 0)
        return r;
    r = harness_wait(h, &d);
    return r == RM_E_EXISTS ? 0 : r;
}

struct harness_writer {
    int fd;
    const char *p;
    size_t len;
};

static void *
harness_write_thread(void *arg)
{
    struct harness_writer *w = arg;
    size_t off = 0;

    while (off < w->len) {
        ssize_t n = write(w->fd, w->p + off, w->len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(w->fd, SHUT_WR);
    return NULL;
}

struct harness_sess {
    int gone;
};

static void
harness_gone(void *arg, struct smtp_session *s)
{
    struct harness_sess *hs = arg;

    (void)s;
    hs->gone = 1;
}

static void *
harness_read_thread(void *arg)
{
    void **a = arg;
    int fd = *(int *)a[0];
    struct buf *out = a[1];
    char tmp[4096];
    ssize_t n;

    while ((n = read(fd, tmp, sizeof(tmp))) > 0) {
        if (out)
            buf_append(out, tmp, (size_t)n); /* past max: dropped */
    }
    return NULL;
}

int
harness_converse(struct harness *h, const char *input, size_t len, int trusted,
                 struct buf *out)
{
    int sv[2];
    struct smtp_session *s;
    struct harness_sess hs = {0};
    struct harness_writer w;
    pthread_t wt, rt;
    void *rargs[2];
    uv_stream_t *st;
    struct sockaddr_in peer;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return -errno;
    if (smtp_session_new(&h->n, harness_gone, &hs, &s) != 0) {
        close(sv[0]);
        close(sv[1]);
        return -ENOMEM;
    }
    memset(&peer, 0, sizeof(peer));
    peer.sin_family = AF_INET;
    /* 127.0.0.1 is in the default mynetworks; 192.0.2.1 (TEST-NET-1,
       never routed) is not. No traffic goes anywhere: it is a label. */
    peer.sin_addr.s_addr = htonl(trusted ? 0x7f000001 : 0xc0000201);
    smtp_session_set_peer(s, (struct sockaddr *)&peer);
    st = smtp_session_stream(s, 1);
    uv_pipe_init(&h->loop, (uv_pipe_t *)st, 0);
    uv_pipe_open((uv_pipe_t *)st, sv[0]);
    w.fd = sv[1];
    w.p = input;
    w.len = len;
    rargs[0] = &sv[1];
    rargs[1] = out;
    pthread_create(&wt, NULL, harness_write_thread, &w);
    pthread_create(&rt, NULL, harness_read_thread, rargs);
    smtp_session_start(s);
    while (!hs.gone)
        uv_run(&h->loop, UV_RUN_ONCE);
    pthread_join(wt, NULL);
    pthread_join(rt, NULL);
    close(sv[1]);
    return 0;
}

struct harness_keys {
    struct store_qkey *k;
    size_t n, cap;
};

static int
harness_key_cb(void *arg, const struct store_qentry *e)
{
    struct harness_keys *ks = arg;

    if (e->route != STORE_ROUTE_LOCAL)
        return 0;
    if (ks->n == ks->cap) {
        size_t nc = ks->cap ? ks->cap * 2 : 16;
        struct store_qkey *p = realloc(ks->k, nc * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        ks->k = p;
        ks->cap = nc;
    }
    ks->k[ks->n++] = e->key;
    return 0;
}

int
harness_deliver(struct harness *h)
{
    struct harness_keys ks = {0};
    struct harness_done d = {0};
    int r = store_queue_list(h->n.store, harness_key_cb, &ks);

    if (r == 0 && ks.n) {
        r = store_queue_deliver_local(h->n.store, ks.k, ks.n, harness_done_cb,
                                      &d);
        if (r == 0)
            r = harness_wait(h, &d);
    }
    free(ks.k);
    return r;
}

void
harness_cleanup(struct harness *h)
{
    char cmd[300];

    store_close(h->n.store);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    uv_loop_close(&h->loop);
    node_config_cleanup(&h->cfg);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
    if (system(cmd) != 0) {
        /* a leftover temp dir is harmless */
    }
}
