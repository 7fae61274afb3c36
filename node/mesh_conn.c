/*
 * mesh_conn.c: one mesh connection (see mesh_conn.h).
 *
 * States: CONNECTING -> HS (handshake messages) -> UP (frames) -> CLOSING.
 * The handshake buffer, the Noise states and the ciphers live in
 * sodium_malloc memory (guarded, wiped on free).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "mesh/noise.h"
#include "node/mesh_conn.h"

#define MESH_PROLOGUE "relaymesh-mesh-v1"
#define MESH_HS_HDR 2
#define MESH_RDBUF (64 * 1024)

enum mesh_conn_state {
    MC_CONNECTING,
    MC_HS,
    MC_UP,
    MC_CLOSING,
};

/* Secrets: in sodium_malloc memory. */
struct mesh_conn_keys {
    struct noise_handshake hs;
    struct noise_cipher tx, rx;
    uint8_t s_priv[32];
    uint8_t hsbuf[MESH_HS_HDR + NOISE_MSG_MAX]; /* one handshake message */
    uint8_t payload[NOISE_MSG_MAX];
};

struct mesh_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    uv_shutdown_t sreq;
    int draining; /* mesh_conn_close_flush(): closes when written */
    enum mesh_conn_state state;
    int initiator;
    int nclose;  /* handles still to close */
    int reading; /* read started */
    struct mesh_conn_cbs cb;
    void *user;
    struct mesh_conn_keys *k;
    size_t hslen; /* bytes of the current handshake message held */
    uint8_t *cred;
    size_t cred_len;
    struct frame_tx ftx;
    struct frame_rx frx;
    int frames_init;
    uint64_t hs_timeout, ka_interval, idle_timeout;
    uint64_t started, last_rx, last_tx;
    uint64_t bytes_in, bytes_out;
    int close_reason;
    char close_why[160];
    char peer[64];
    char rdbuf[MESH_RDBUF];
};

struct mesh_wreq {
    uv_write_t req;
    struct mesh_conn *c;
    size_t len;
    char data[];
};

static void mesh_conn_timer_cb(uv_timer_t *t);
static void mesh_conn_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void mesh_conn_fail(struct mesh_conn *c, int reason, const char *fmt,
                           ...) __attribute__((format(printf, 3, 4)));

static void
mesh_conn_fail(struct mesh_conn *c, int reason, const char *fmt, ...)
{
    va_list ap;

    if (c->state == MC_CLOSING)
        return;
    va_start(ap, fmt);
    vsnprintf(c->close_why, sizeof(c->close_why), fmt, ap);
    va_end(ap);
    mesh_conn_close(c, reason);
}

static void
mesh_conn_free(struct mesh_conn *c)
{
    if (c->frames_init) {
        frame_tx_cleanup(&c->ftx);
        frame_rx_cleanup(&c->frx);
    }
    if (c->k != NULL) {
        noise_handshake_cleanup(&c->k->hs);
        noise_cipher_cleanup(&c->k->tx);
        noise_cipher_cleanup(&c->k->rx);
        sodium_free(c->k);
    }
    free(c->cred);
    free(c);
}

static void
mesh_conn_close_cb(uv_handle_t *h)
{
    struct mesh_conn *c = h->data;

    if (--c->nclose > 0)
        return;
    if (c->cb.closed != NULL)
        c->cb.closed(c, c->close_reason, c->close_why);
    mesh_conn_free(c);
}

void
mesh_conn_close(struct mesh_conn *c, int reason)
{
    if (c == NULL || c->state == MC_CLOSING)
        return;
    c->state = MC_CLOSING;
    c->close_reason = reason;
    /* Wipe the keys now: nothing more is sent or read. */
    if (c->k != NULL) {
        noise_handshake_cleanup(&c->k->hs);
        noise_cipher_cleanup(&c->k->tx);
        noise_cipher_cleanup(&c->k->rx);
    }
    uv_timer_stop(&c->timer);
    c->nclose = 2;
    uv_close((uv_handle_t *)&c->tcp, mesh_conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, mesh_conn_close_cb);
}

static void
mesh_conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    (void)status;
    /* Also after UV_ECANCELED: then the connection is closing already and
       this does nothing (it is freed only after its handles closed). */
    mesh_conn_close(req->data, 0);
}

void
mesh_conn_close_flush(struct mesh_conn *c)
{
    if (c == NULL || c->state == MC_CLOSING || c->draining)
        return;
    c->draining = 1;
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, mesh_conn_shutdown_cb) !=
        0)
        mesh_conn_close(c, 0);
}

static int
mesh_conn_new(uv_loop_t *loop, const struct mesh_conn_opts *o,
              const struct mesh_conn_cbs *cb, void *user, int initiator,
              struct mesh_conn **out)
{
    struct mesh_conn *c;
    int r;

    if (o == NULL || o->s_priv == NULL || cb == NULL ||
        o->cred_len > MESH_CONN_CRED_MAX || (o->cred_len && o->cred == NULL))
        return RM_E_INVAL;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return -ENOMEM;
    if ((c->k = sodium_malloc(sizeof(*c->k))) == NULL) {
        free(c);
        return -ENOMEM;
    }
    memset(c->k, 0, sizeof(*c->k));
    if (o->cred_len) {
        if ((c->cred = malloc(o->cred_len)) == NULL) {
            mesh_conn_free(c);
            return -ENOMEM;
        }
        memcpy(c->cred, o->cred, o->cred_len);
        c->cred_len = o->cred_len;
    }
    memcpy(c->k->s_priv, o->s_priv, 32);
    c->cb = *cb;
    c->user = user;
    c->initiator = initiator;
    c->hs_timeout = o->hs_timeout_ms ? o->hs_timeout_ms : 5000;
    c->ka_interval = o->ka_interval_ms ? o->ka_interval_ms : 1000;
    c->idle_timeout = o->idle_timeout_ms ? o->idle_timeout_ms : 5000;
    c->started = c->last_rx = c->last_tx = uv_now(loop);
    if ((r = uv_tcp_init(loop, &c->tcp)) != 0) {
        mesh_conn_free(c);
        return r;
    }
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    {
        struct noise_handshake_opts ho = {
            .pattern = NOISE_PATTERN_XX,
            .role = initiator ? NOISE_INITIATOR : NOISE_RESPONDER,
            .prologue = o->prologue ? (const uint8_t *)o->prologue
                                    : (const uint8_t *)MESH_PROLOGUE,
            .prologue_len =
                o->prologue ? strlen(o->prologue) : sizeof(MESH_PROLOGUE) - 1,
            .s_priv = c->k->s_priv,
        };
        r = noise_handshake_init(&c->k->hs, &ho);
    }
    c->state = initiator ? MC_CONNECTING : MC_HS;
    *out = c;
    if (r != 0) {
        /* The handles exist: close them; the owner gets no callback. */
        c->cb.closed = NULL;
        mesh_conn_close(c, r);
        return r;
    }
    uv_timer_start(&c->timer, mesh_conn_timer_cb, 100, 100);
    return 0;
}

static void
mesh_conn_write_cb(uv_write_t *req, int status)
{
    struct mesh_wreq *w = (struct mesh_wreq *)req;

    if (status != 0 && status != UV_ECANCELED)
        mesh_conn_fail(w->c, status, "write: %s", uv_strerror(status));
    free(w);
}

/* Queue len bytes for writing (copied). */
static int
mesh_conn_write(struct mesh_conn *c, const void *data, size_t len)
{
    struct mesh_wreq *w;
    uv_buf_t b;
    int r;

    if (c->state == MC_CLOSING || c->draining)
        return RM_E_CLOSED;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) + len >
        MESH_CONN_WQ_MAX) {
        mesh_conn_fail(c, RM_E_TOOBIG, "peer does not read (%u bytes queued)",
                       MESH_CONN_WQ_MAX);
        return RM_E_TOOBIG;
    }
    if ((w = malloc(sizeof(*w) + len)) == NULL)
        return -ENOMEM;
    w->c = c;
    w->len = len;
    memcpy(w->data, data, len);
    b = uv_buf_init(w->data, (unsigned)len);
    if ((r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1,
                      mesh_conn_write_cb)) != 0) {
        free(w);
        mesh_conn_fail(c, r, "write: %s", uv_strerror(r));
        return r;
    }
    c->bytes_out += len;
    c->last_tx = uv_now(c->tcp.loop);
    return 0;
}

/* Write the next handshake message (with payload). */
static int
mesh_conn_hs_write(struct mesh_conn *c, const uint8_t *payload, size_t plen)
{
    struct mesh_conn_keys *k = c->k;
    size_t n;
    int r;

    r = noise_handshake_write(&k->hs, payload, plen, k->hsbuf + MESH_HS_HDR,
                              NOISE_MSG_MAX, &n);
    if (r != 0)
        return r;
    k->hsbuf[0] = (uint8_t)(n >> 8);
    k->hsbuf[1] = (uint8_t)n;
    return mesh_conn_write(c, k->hsbuf, MESH_HS_HDR + n);
}

static int
mesh_conn_split(struct mesh_conn *c)
{
    int r;

    if ((r = noise_handshake_split(&c->k->hs, &c->k->tx, &c->k->rx)) != 0)
        return r;
    if ((r = frame_tx_init(&c->ftx, &c->k->tx, NULL)) != 0)
        return r;
    if ((r = frame_rx_init(&c->frx, &c->k->rx, NULL)) != 0) {
        frame_tx_cleanup(&c->ftx);
        return r;
    }
    c->frames_init = 1;
    c->state = MC_UP;
    if (c->cb.established != NULL)
        c->cb.established(c);
    return 0;
}

/* A whole handshake message is in hsbuf (hslen bytes incl. header). */
static void
mesh_conn_hs_msg(struct mesh_conn *c)
{
    struct mesh_conn_keys *k = c->k;
    size_t plen = 0;
    uint8_t rs[32];
    char why[160] = "";
    int r;

    r = noise_handshake_read(&k->hs, k->hsbuf + MESH_HS_HDR,
                             c->hslen - MESH_HS_HDR, k->payload,
                             sizeof(k->payload), &plen);
    c->hslen = 0;
    if (r != 0) {
        mesh_conn_fail(c, RM_E_PROTO, "bad handshake message (%s)",
                       rm_strerror(r));
        return;
    }
    /* Message 2 (initiator) or 3 (responder) proves the peer's key. */
    if (noise_handshake_remote_static(&k->hs, rs) == 0) {
        r = c->cb.verify(c, rs, k->payload, plen, why, sizeof(why));
        sodium_memzero(k->payload, plen);
        if (r != 0) {
            mesh_conn_fail(c, r, "%s", why[0] ? why : "refused");
            return;
        }
        if (c->state == MC_CLOSING)
            return;
    }
    switch (noise_handshake_action(&k->hs)) {
    case NOISE_ACTION_WRITE:
        /* Responder after message 1: send ours with the credential.
           Initiator after message 2: message 3 with the credential. */
        if ((r = mesh_conn_hs_write(c, c->cred, c->cred_len)) != 0) {
            mesh_conn_fail(c, r, "handshake write: %s", rm_strerror(r));
            return;
        }
        if (noise_handshake_action(&k->hs) == NOISE_ACTION_SPLIT &&
            (r = mesh_conn_split(c)) != 0)
            mesh_conn_fail(c, r, "split: %s", rm_strerror(r));
        return;
    case NOISE_ACTION_SPLIT:
        if ((r = mesh_conn_split(c)) != 0)
            mesh_conn_fail(c, r, "split: %s", rm_strerror(r));
        return;
    case NOISE_ACTION_READ:
        return;
    case NOISE_ACTION_DONE:
    case NOISE_ACTION_FAILED:
        mesh_conn_fail(c, RM_E_PROTO, "handshake failed");
        return;
    }
}

/* Handshake bytes: assemble length-prefixed messages. */
static size_t
mesh_conn_hs_input(struct mesh_conn *c, const uint8_t *p, size_t n)
{
    struct mesh_conn_keys *k = c->k;
    size_t used = 0;

    while (used < n && c->state == MC_HS) {
        size_t want;

        if (c->hslen < MESH_HS_HDR) {
            want = MESH_HS_HDR - c->hslen;
        } else {
            size_t mlen = ((size_t)k->hsbuf[0] << 8) | k->hsbuf[1];

            if (mlen == 0) {
                mesh_conn_fail(c, RM_E_PROTO, "empty handshake message");
                return used;
            }
            want = MESH_HS_HDR + mlen - c->hslen;
        }
        if (want > n - used)
            want = n - used;
        memcpy(k->hsbuf + c->hslen, p + used, want);
        c->hslen += want;
        used += want;
        if (c->hslen >= MESH_HS_HDR &&
            c->hslen ==
                MESH_HS_HDR + (((size_t)k->hsbuf[0] << 8) | k->hsbuf[1]))
            mesh_conn_hs_msg(c);
    }
    return used;
}

static void
mesh_conn_frames_input(struct mesh_conn *c, const uint8_t *p, size_t n)
{
    while (c->state == MC_UP) {
        struct frame_msg m;
        size_t room = frame_rx_room(&c->frx), take = n < room ? n : room;
        int r;

        if (take > 0) {
            if ((r = frame_rx_feed(&c->frx, p, take)) != 0) {
                mesh_conn_fail(c, r, "frame input: %s", rm_strerror(r));
                return;
            }
            p += take;
            n -= take;
        }
        while (c->state == MC_UP && (r = frame_rx_next(&c->frx, &m)) == 1)
            c->cb.frame(c, &m);
        if (c->state != MC_UP)
            return;
        if (r < 0) {
            mesh_conn_fail(c, r, "bad frame (%s)", rm_strerror(r));
            return;
        }
        if (n == 0)
            return;
    }
}

static void
mesh_conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct mesh_conn *c = h->data;

    (void)hint;
    *b = uv_buf_init(c->rdbuf, sizeof(c->rdbuf));
}

static void
mesh_conn_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct mesh_conn *c = s->data;
    const uint8_t *p = (const uint8_t *)b->base;
    size_t len, used = 0;

    if (n == 0)
        return;
    if (n < 0) {
        mesh_conn_fail(c, n == UV_EOF ? RM_E_CLOSED : (int)n, "%s",
                       n == UV_EOF ? "closed by peer" : uv_strerror((int)n));
        return;
    }
    len = (size_t)n;
    c->bytes_in += len;
    c->last_rx = uv_now(c->tcp.loop);
    if (c->state == MC_HS)
        used = mesh_conn_hs_input(c, p, len);
    if (c->state == MC_UP && used < len)
        mesh_conn_frames_input(c, p + used, len - used);
}

static void
mesh_conn_peer_name(struct mesh_conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        uv_ip4_name(a, host, sizeof(host));
        port = ntohs(a->sin_port);
        snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, host, sizeof(host));
        port = ntohs(a->sin6_port);
        snprintf(c->peer, sizeof(c->peer), "[%s]:%u", host, port);
    }
}

static void
mesh_conn_start_reading(struct mesh_conn *c)
{
    int r;

    uv_tcp_nodelay(&c->tcp, 1);
    if ((r = uv_read_start((uv_stream_t *)&c->tcp, mesh_conn_alloc_cb,
                           mesh_conn_read_cb)) != 0) {
        mesh_conn_fail(c, r, "read: %s", uv_strerror(r));
        return;
    }
    c->reading = 1;
}

static void
mesh_conn_connect_cb(uv_connect_t *req, int status)
{
    struct mesh_conn *c = req->data;
    int r;

    if (c->state == MC_CLOSING)
        return;
    if (status != 0) {
        mesh_conn_fail(c, status, "connect: %s", uv_strerror(status));
        return;
    }
    mesh_conn_peer_name(c);
    c->state = MC_HS;
    mesh_conn_start_reading(c);
    if (c->state != MC_HS)
        return;
    /* Message 1: e, no payload. */
    if ((r = mesh_conn_hs_write(c, NULL, 0)) != 0)
        mesh_conn_fail(c, r, "handshake write: %s", rm_strerror(r));
}

int
mesh_conn_connect(uv_loop_t *loop, const struct sockaddr *addr,
                  const struct mesh_conn_opts *o,
                  const struct mesh_conn_cbs *cb, void *user,
                  struct mesh_conn **out)
{
    struct mesh_conn *c;
    int r;

    if ((r = mesh_conn_new(loop, o, cb, user, 1, &c)) != 0)
        return r;
    c->creq.data = c;
    if ((r = uv_tcp_connect(&c->creq, &c->tcp, addr, mesh_conn_connect_cb)) !=
        0) {
        c->cb.closed = NULL;
        mesh_conn_close(c, r);
        return r;
    }
    *out = c;
    return 0;
}

int
mesh_conn_accept(uv_stream_t *listener, const struct mesh_conn_opts *o,
                 const struct mesh_conn_cbs *cb, void *user,
                 struct mesh_conn **out)
{
    struct mesh_conn *c;
    int r;

    if ((r = mesh_conn_new(listener->loop, o, cb, user, 0, &c)) != 0)
        return r;
    if ((r = uv_accept(listener, (uv_stream_t *)&c->tcp)) != 0) {
        c->cb.closed = NULL;
        mesh_conn_close(c, r);
        return r;
    }
    mesh_conn_peer_name(c);
    mesh_conn_start_reading(c);
    if (c->state == MC_CLOSING) {
        *out = NULL; /* closed callback follows */
        return 0;
    }
    *out = c;
    return 0;
}

static void
mesh_conn_timer_cb(uv_timer_t *t)
{
    struct mesh_conn *c = t->data;
    uint64_t now = uv_now(t->loop);

    if (c->state == MC_CONNECTING || c->state == MC_HS) {
        if (now - c->started >= c->hs_timeout)
            mesh_conn_fail(c, RM_E_AGAIN, "%s timed out after %llu ms",
                           c->state == MC_CONNECTING ? "connect" : "handshake",
                           (unsigned long long)c->hs_timeout);
        return;
    }
    if (c->state != MC_UP)
        return;
    if (now - c->last_rx >= c->idle_timeout) {
        mesh_conn_fail(c, RM_E_AGAIN, "nothing received for %llu ms",
                       (unsigned long long)(now - c->last_rx));
        return;
    }
    if (now - c->last_tx >= c->ka_interval)
        mesh_conn_send(c, "ka", "\xc0", 1); /* nil body */
}

int
mesh_conn_send(struct mesh_conn *c, const char *type, const void *body,
               size_t len)
{
    struct buf out;
    int r;

    if (c == NULL || c->state == MC_CLOSING)
        return RM_E_CLOSED;
    if (c->state != MC_UP)
        return RM_E_AGAIN;
    buf_init(&out, FRAME_MSG_MAX + FRAME_MSG_MAX / 8);
    r = frame_encode(&c->ftx, type, strlen(type), body, len, &out);
    if (r == 0)
        r = mesh_conn_write(c, out.data, out.len);
    else if (r != RM_E_TOOBIG && r != RM_E_INVAL)
        mesh_conn_fail(c, r, "frame encode: %s", rm_strerror(r));
    buf_cleanup(&out);
    return r;
}

void *
mesh_conn_user(const struct mesh_conn *c)
{
    return c->user;
}

void
mesh_conn_set_user(struct mesh_conn *c, void *user)
{
    c->user = user;
}

int
mesh_conn_is_up(const struct mesh_conn *c)
{
    return c != NULL && c->state == MC_UP;
}

int
mesh_conn_initiator(const struct mesh_conn *c)
{
    return c->initiator;
}

const char *
mesh_conn_peer(const struct mesh_conn *c)
{
    return c->peer[0] ? c->peer : "?";
}

uint64_t
mesh_conn_bytes_in(const struct mesh_conn *c)
{
    return c->bytes_in;
}

uint64_t
mesh_conn_bytes_out(const struct mesh_conn *c)
{
    return c->bytes_out;
}

size_t
mesh_conn_queued(const struct mesh_conn *c)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}
