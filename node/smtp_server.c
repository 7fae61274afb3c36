/*
 * smtp_server: the SMTP listeners and the set of live sessions.
 *
 * Binds every configured address before privileges are dropped, accepts
 * up to max_sessions concurrent sessions (past that: 421 and close, at
 * almost no cost), and drains them on shutdown.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "node/node.h"
#include "node/smtp_session.h"

#define SMTP_BACKLOG 1024

struct smtp_listener {
    uv_tcp_t tcp;
    struct smtp_server *srv;
    enum smtp_kind kind;
    char text[64];
};

/* A refused connection: one short write, then close. */
struct smtp_refusal {
    uv_tcp_t tcp;
    uv_write_t req;
    char msg[160];
};

struct smtp_sess_link {
    struct smtp_sess_link *prev, *next;
    struct smtp_session *s;
};

struct smtp_server {
    struct node *n;
    struct smtp_listener *ls;
    size_t nls;
    size_t open_handles;
    int closing;
    int draining;
    struct smtp_sess_link head; /* circular list of live sessions */
    void (*drained_cb)(void *);
    void *drained_arg;
};

static void
smtp_server_maybe_drained(struct smtp_server *srv)
{
    if (srv->draining && srv->head.next == &srv->head && srv->drained_cb) {
        void (*cb)(void *) = srv->drained_cb;
        srv->drained_cb = NULL;
        cb(srv->drained_arg);
    }
}

static void
smtp_refusal_close_cb(uv_handle_t *h)
{
    free(h->data);
}

static void
smtp_refusal_write_cb(uv_write_t *req, int status)
{
    struct smtp_refusal *r = req->data;

    (void)status;
    uv_close((uv_handle_t *)&r->tcp, smtp_refusal_close_cb);
}

static void
smtp_refuse(struct smtp_server *srv, uv_stream_t *lst)
{
    struct smtp_refusal *r = calloc(1, sizeof(*r));
    struct smtp_listener *l = lst->data;
    uv_buf_t b;

    if (r == NULL)
        return;
    r->tcp.data = r;
    r->req.data = r;
    uv_tcp_init(srv->n->loop, &r->tcp);
    if (uv_accept(lst, (uv_stream_t *)&r->tcp) != 0 ||
        l->kind == SMTP_KIND_SMTPS) {
        /* Implicit TLS: no plaintext reply is understood; just close. */
        uv_close((uv_handle_t *)&r->tcp, smtp_refusal_close_cb);
        return;
    }
    snprintf(r->msg, sizeof(r->msg),
             "421 4.3.2 %s Error: too many connections, try again later\r\n",
             srv->n->cfg->hostname);
    b = uv_buf_init(r->msg, (unsigned)strlen(r->msg));
    if (uv_write(&r->req, (uv_stream_t *)&r->tcp, &b, 1,
                 smtp_refusal_write_cb) != 0)
        uv_close((uv_handle_t *)&r->tcp, smtp_refusal_close_cb);
}

struct smtp_link_ctx {
    struct smtp_sess_link link;
    struct smtp_server *srv;
};

static void
smtp_link_gone(void *arg, struct smtp_session *s)
{
    struct smtp_link_ctx *lc = arg;
    struct smtp_server *srv = lc->srv;

    (void)s;
    lc->link.prev->next = lc->link.next;
    lc->link.next->prev = lc->link.prev;
    srv->n->stats.sessions_current--;
    free(lc);
    smtp_server_maybe_drained(srv);
}

static void
smtp_unstarted_close_cb(uv_handle_t *h)
{
    smtp_session_discard(h->data);
}

static void
smtp_on_connection(uv_stream_t *lst, int status)
{
    struct smtp_listener *l = lst->data;
    struct smtp_server *srv = l->srv;
    struct node *n = srv->n;
    struct smtp_link_ctx *lc;
    struct smtp_session *s;
    struct sockaddr_storage peer;
    int plen = sizeof(peer);
    uv_stream_t *st;

    if (status < 0) {
        log_warn("event=smtp.accept_failed listener=%s err=\"%s\"", l->text,
                 uv_strerror(status));
        return;
    }
    if (srv->draining)
        return;
    if (n->stats.sessions_current >= n->cfg->max_sessions) {
        n->stats.sessions_refused++;
        log_warn("event=smtp.refused reason=max_sessions limit=%u",
                 n->cfg->max_sessions);
        smtp_refuse(srv, lst);
        return;
    }
    lc = calloc(1, sizeof(*lc));
    if (lc == NULL) {
        smtp_refuse(srv, lst);
        return;
    }
    lc->srv = srv;
    n->stats.sessions_total++;
    if (smtp_session_new(n, smtp_link_gone, lc, &s) != 0) {
        free(lc);
        smtp_refuse(srv, lst);
        return;
    }
    smtp_session_set_kind(s, l->kind);
    lc->link.s = s;
    lc->link.next = srv->head.next;
    lc->link.prev = &srv->head;
    srv->head.next->prev = &lc->link;
    srv->head.next = &lc->link;
    n->stats.sessions_current++;

    st = smtp_session_stream(s, 0);
    uv_tcp_init(n->loop, (uv_tcp_t *)st);
    st->data = s;
    if (uv_accept(lst, st) != 0) {
        /* Nothing to talk to: the session was never started. */
        uv_close((uv_handle_t *)st, smtp_unstarted_close_cb);
        return;
    }
    if (uv_tcp_getpeername((uv_tcp_t *)st, (struct sockaddr *)&peer, &plen) ==
        0)
        smtp_session_set_peer(s, (struct sockaddr *)&peer);
    uv_tcp_nodelay((uv_tcp_t *)st, 1);
    smtp_session_start(s);
}

static int
smtp_listener_text(const struct sockaddr *sa, char *out, size_t outsz)
{
    char ip[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(out, outsz, "%s:%u", ip, ntohs(a->sin_port));
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(out, outsz, "[%s]:%u", ip, ntohs(a->sin6_port));
    }
    return 0;
}

static void
smtp_listener_close_cb(uv_handle_t *h)
{
    struct smtp_listener *l = h->data;
    struct smtp_server *srv = l->srv;

    if (--srv->open_handles == 0 && srv->closing) {
        free(srv->ls);
        free(srv);
    }
}

const char *
smtp_kind_name(enum smtp_kind kind)
{
    switch (kind) {
    case SMTP_KIND_RELAY:
        return "smtp";
    case SMTP_KIND_SUBMISSION:
        return "submission";
    case SMTP_KIND_SMTPS:
        return "smtps";
    }
    return "?";
}

static int
smtp_server_bind(struct smtp_server *srv, const struct node_listen *cl,
                 enum smtp_kind kind)
{
    struct node *n = srv->n;
    struct smtp_listener *l = &srv->ls[srv->nls];
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    int r;

    l->srv = srv;
    l->kind = kind;
    uv_tcp_init(n->loop, &l->tcp);
    l->tcp.data = l;
    srv->nls++;
    srv->open_handles++;
    r = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&cl->addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&l->tcp, SMTP_BACKLOG, smtp_on_connection);
    if (r != 0) {
        log_err("event=smtp.listen_failed kind=%s addr=%s err=\"%s\"",
                smtp_kind_name(kind), cl->text, uv_strerror(r));
        fprintf(stderr,
                "relaymesh: cannot listen on %s (%s): %s; is another mail "
                "server using that port? change [smtp] %s\n",
                cl->text, smtp_kind_name(kind), uv_strerror(r),
                kind == SMTP_KIND_RELAY ? "listen" : smtp_kind_name(kind));
        return r;
    }
    if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &blen) == 0)
        smtp_listener_text((struct sockaddr *)&bound, l->text, sizeof(l->text));
    else
        snprintf(l->text, sizeof(l->text), "%.63s", cl->text);
    log_info("event=smtp.listen kind=%s addr=%s", smtp_kind_name(kind),
             l->text);
    return 0;
}

int
smtp_server_new(struct node *n, struct smtp_server **out)
{
    const struct node_config *cfg = n->cfg;
    struct smtp_server *srv = calloc(1, sizeof(*srv));
    size_t total = cfg->nlisten + cfg->nsubmission + cfg->nsmtps;
    int r = 0;

    if (srv == NULL)
        return -ENOMEM;
    srv->n = n;
    srv->head.next = srv->head.prev = &srv->head;
    srv->ls = calloc(total ? total : 1, sizeof(*srv->ls));
    if (srv->ls == NULL) {
        free(srv);
        return -ENOMEM;
    }
    for (size_t i = 0; r == 0 && i < cfg->nlisten; i++)
        r = smtp_server_bind(srv, &cfg->listen[i], SMTP_KIND_RELAY);
    for (size_t i = 0; r == 0 && i < cfg->nsubmission; i++)
        r = smtp_server_bind(srv, &cfg->submission[i], SMTP_KIND_SUBMISSION);
    for (size_t i = 0; r == 0 && i < cfg->nsmtps; i++)
        r = smtp_server_bind(srv, &cfg->smtps[i], SMTP_KIND_SMTPS);
    if (r != 0) {
        srv->closing = 1;
        for (size_t j = 0; j < srv->nls; j++)
            uv_close((uv_handle_t *)&srv->ls[j].tcp, smtp_listener_close_cb);
        return r;
    }
    *out = srv;
    return 0;
}

int
smtp_server_start(struct smtp_server *srv)
{
    (void)srv;
    return 0;
}

void
smtp_server_drain(struct smtp_server *srv, void (*done_cb)(void *), void *arg)
{
    struct smtp_sess_link *l, *next;

    srv->draining = 1;
    srv->drained_cb = done_cb;
    srv->drained_arg = arg;
    for (size_t i = 0; i < srv->nls; i++)
        uv_close((uv_handle_t *)&srv->ls[i].tcp, smtp_listener_close_cb);
    srv->nls = 0;
    for (l = srv->head.next; l != &srv->head; l = next) {
        next = l->next;
        smtp_session_drain(l->s);
    }
    smtp_server_maybe_drained(srv);
}

void
smtp_server_abort(struct smtp_server *srv)
{
    struct smtp_sess_link *l, *next;

    for (l = srv->head.next; l != &srv->head; l = next) {
        next = l->next;
        smtp_session_abort(l->s);
    }
}

void
smtp_server_close(struct smtp_server *srv)
{
    srv->closing = 1;
    for (size_t i = 0; i < srv->nls; i++)
        uv_close((uv_handle_t *)&srv->ls[i].tcp, smtp_listener_close_cb);
    srv->nls = 0;
    if (srv->open_handles == 0) {
        free(srv->ls);
        free(srv);
    }
}

size_t
smtp_server_listeners(const struct smtp_server *srv, char (*out)[64],
                      enum smtp_kind *kinds, size_t max)
{
    size_t k = 0;

    for (size_t i = 0; i < srv->nls && k < max; i++) {
        kinds[k] = srv->ls[i].kind;
        memcpy(out[k++], srv->ls[i].text, 64);
    }
    return k;
}
