/*
 * smtp_client: one outbound SMTP connection. See smtp_client.h for the
 * contract.
 *
 * One explicit state machine (enum smtpc_state, smtpc_enter() logs every
 * transition and arms the state's timer). Replies are cut into lines here
 * and parsed by smtpc_reply_line() (smtpc_reply.c, pure); a complete
 * reply goes to smtpc_on_reply(), the one switch over the states.
 *
 * Memory: the connection is freed in the last close callback of its two
 * handles, never inside a callback running on its behalf. After a
 * connection-level failure while an operation is pending, that operation's
 * callback runs from the last close callback, just before the free; a
 * failure while idle only marks the connection unusable (the caller still
 * owns it and gives it back with smtpc_quit()).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/rm_error.h"
#include "node/smtp_auth.h"
#include "node/smtp_client.h"
#include "node/tls.h"
#include "store/store.h"

#define SMTPC_READ_SIZE 65536
/* A partial line never exceeds SMTPC_REPLY_LINE_MAX; one read adds at
   most SMTPC_READ_SIZE (TLS: we decrypt only up to the room left). */
#define SMTPC_IN_MAX (SMTPC_REPLY_LINE_MAX + SMTPC_READ_SIZE)
/* Body bytes per write (dot-stuffed, so a piece may be up to twice as
   long); the next piece goes when the previous one is written. */
#define SMTPC_BODY_PIECE 65536
/* Commands of one pipelined group: MAIL, up to this many RCPT, DATA. */
#define SMTPC_CMD_MAX (1024 * 1024)
/* How long QUIT waits for its 221 at most (never longer than
   timeout_greeting): a closing node must not hang on a slow server. */
#define SMTPC_QUIT_WAIT 10
/* RFC 4954 §4: AUTH PLAIN's user and password, bounded. */
#define SMTPC_AUTH_FIELD_MAX 255

enum smtpc_state {
    SMTPC_S_CONNECTING = 0,
    SMTPC_S_GREETING,
    SMTPC_S_EHLO,
    SMTPC_S_HELO,
    SMTPC_S_STARTTLS,
    SMTPC_S_TLS_HANDSHAKE,
    SMTPC_S_EHLO2,
    SMTPC_S_AUTH,
    SMTPC_S_READY, /* idle: smtpc_send() may start a transaction */
    SMTPC_S_RSET,
    SMTPC_S_MAIL,
    SMTPC_S_RCPT,
    SMTPC_S_DATA,
    SMTPC_S_BODY,
    SMTPC_S_DOT,
    SMTPC_S_QUIT,
    SMTPC_S_CLOSING
};

static const char *const smtpc_state_names[] = {
    [SMTPC_S_CONNECTING] = "connecting",
    [SMTPC_S_GREETING] = "greeting",
    [SMTPC_S_EHLO] = "ehlo",
    [SMTPC_S_HELO] = "helo",
    [SMTPC_S_STARTTLS] = "starttls",
    [SMTPC_S_TLS_HANDSHAKE] = "tls_handshake",
    [SMTPC_S_EHLO2] = "ehlo2",
    [SMTPC_S_AUTH] = "auth",
    [SMTPC_S_READY] = "ready",
    [SMTPC_S_RSET] = "rset",
    [SMTPC_S_MAIL] = "mail",
    [SMTPC_S_RCPT] = "rcpt",
    [SMTPC_S_DATA] = "data",
    [SMTPC_S_BODY] = "body",
    [SMTPC_S_DOT] = "dot",
    [SMTPC_S_QUIT] = "quit",
    [SMTPC_S_CLOSING] = "closing",
};

/* Which callback is owed. */
enum smtpc_pending { SMTPC_P_NONE = 0, SMTPC_P_READY, SMTPC_P_TXN };

struct smtpc_write {
    uv_write_t req;
    struct smtpc *c;
    size_t len;
    char data[];
};

struct smtpc {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t conn_req;
    int handles_open;
    enum smtpc_state state;
    char addr[INET6_ADDRSTRLEN + 8];

    /* opts, with copies of its strings */
    struct smtpc_opts o;
    char *helo, *server_name, *auth_user, *auth_pass, *log_id;

    enum smtpc_pending pending;
    smtpc_ready_cb ready_cb;
    smtpc_txn_cb txn_cb;
    void *ready_arg, *txn_arg;
    int status;                /* the failure owed to the pending callback */
    struct smtpc_reply fail_r; /* the reply behind it, if any */

    int closing;  /* handles closing or closed */
    int released; /* smtpc_quit() was called: free when closed */
    int in_final; /* running the last close callback */
    int connected;

    struct buf in; /* reply bytes not yet cut into lines */
    struct smtpc_reply_parser rp;
    struct smtpc_reply reply; /* the reply being read */

    struct tls_conn *tls; /* after 220 to STARTTLS */
    int tls_refused;      /* STARTTLS got a reply other than 220 */
    unsigned ext;         /* SMTPC_EXT_* of the last EHLO */
    uint64_t size_max;
    int esmtp;
    size_t wpending; /* bytes handed to uv_write, not yet written */

    /* the transaction */
    struct smtpc_txn *txn;
    struct smtpc_result res;
    int pipelined;   /* this transaction's commands went as one group */
    size_t rcpt_i;   /* next RCPT reply expected */
    int dot_only;    /* 354 without an accepted recipient: "." alone */
    int need_rset;   /* the last transaction broke off at the server */
    size_t body_off; /* bytes of txn->data sent */
    int body_bol;    /* the next body byte starts a line */
    int body_done;   /* CRLF.CRLF queued */
    unsigned ntxn;   /* transactions started, for logs */
};

static void smtpc_fail(struct smtpc *c, int status,
                       const struct smtpc_reply *r);
static void smtpc_body_next(struct smtpc *c);
static void smtpc_tls_flush(struct smtpc *c);
static void smtpc_process(struct smtpc *c);

const char *
smtpc_strerror(int err)
{
    switch (err) {
    case SMTPC_E_TIMEOUT:
        return "timed out";
    case SMTPC_E_CLOSED:
        return "connection closed by the server";
    case SMTPC_E_PROTO:
        return "SMTP protocol error";
    case SMTPC_E_TLS:
        return "TLS unavailable or failed";
    case SMTPC_E_REPLY:
        return "refused by the server";
    case SMTPC_E_TOOBIG:
        return "message larger than the server's SIZE";
    case SMTPC_E_NOUTF8:
        return "message needs SMTPUTF8, server lacks it";
    case SMTPC_E_NOMEM:
        return "out of memory";
    case SMTPC_E_NOAUTH:
        return "server offers no AUTH PLAIN";
    default:
        break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return rm_strerror(err);
}

/* ---- state ------------------------------------------------------------ */

static const char *
smtpc_id(const struct smtpc *c)
{
    return c->log_id != NULL && c->log_id[0] ? c->log_id : "-";
}

static void
smtpc_timer_cb(uv_timer_t *t)
{
    struct smtpc *c = t->data;

    log_info("event=smtpc.timeout id=%s addr=%s state=%s", smtpc_id(c), c->addr,
             smtpc_state_names[c->state]);
    smtpc_fail(c, SMTPC_E_TIMEOUT, NULL);
}

static void
smtpc_arm(struct smtpc *c, unsigned secs)
{
    if (c->closing)
        return;
    if (secs == 0) {
        uv_timer_stop(&c->timer);
        return;
    }
    uv_timer_start(&c->timer, smtpc_timer_cb, (uint64_t)secs * 1000, 0);
}

/* RFC 5321 §4.5.3.2: each wait has its own timeout. */
static unsigned
smtpc_state_timeout(const struct smtpc *c, enum smtpc_state s)
{
    switch (s) {
    case SMTPC_S_CONNECTING:
        return c->o.timeout_connect;
    case SMTPC_S_GREETING:
    case SMTPC_S_EHLO:
    case SMTPC_S_HELO:
    case SMTPC_S_STARTTLS:
    case SMTPC_S_TLS_HANDSHAKE:
    case SMTPC_S_EHLO2:
    case SMTPC_S_AUTH:
        return c->o.timeout_greeting;
    case SMTPC_S_RSET:
    case SMTPC_S_MAIL:
        return c->o.timeout_mail;
    case SMTPC_S_RCPT:
        return c->o.timeout_rcpt;
    case SMTPC_S_DATA:
        return c->o.timeout_data_init;
    case SMTPC_S_BODY:
        return c->o.timeout_data_block;
    case SMTPC_S_DOT:
        return c->o.timeout_data_done;
    case SMTPC_S_QUIT:
        return c->o.timeout_greeting < SMTPC_QUIT_WAIT ? c->o.timeout_greeting
                                                       : SMTPC_QUIT_WAIT;
    case SMTPC_S_READY:   /* idle: the caller decides how long */
    case SMTPC_S_CLOSING: /* nothing more to wait for */
        return 0;
    }
    return 0;
}

static void
smtpc_enter(struct smtpc *c, enum smtpc_state next)
{
    if (c->state != next)
        log_debug("event=smtpc.state id=%s from=%s to=%s", smtpc_id(c),
                  smtpc_state_names[c->state], smtpc_state_names[next]);
    c->state = next;
    smtpc_arm(c, smtpc_state_timeout(c, next));
}

/* ---- teardown --------------------------------------------------------- */

static void
smtpc_free(struct smtpc *c)
{
    buf_cleanup(&c->in);
    tls_conn_free(c->tls);
    free(c->helo);
    free(c->server_name);
    free(c->auth_user);
    if (c->auth_pass != NULL) {
        explicit_bzero(c->auth_pass, strlen(c->auth_pass));
        free(c->auth_pass);
    }
    free(c->log_id);
    free(c);
}

static void
smtpc_close_cb(uv_handle_t *h)
{
    struct smtpc *c = h->data;
    enum smtpc_pending p;

    if (--c->handles_open > 0)
        return;
    p = c->pending;
    c->pending = SMTPC_P_NONE;
    c->in_final = 1;
    if (p == SMTPC_P_READY && c->ready_cb != NULL) {
        c->ready_cb(c->ready_arg, c, c->status,
                    c->fail_r.code ? &c->fail_r : NULL);
        c->released = 1; /* contract: gone after a failed connect */
    } else if (p == SMTPC_P_TXN && c->txn_cb != NULL) {
        struct smtpc_txn *t = c->txn;
        c->txn = NULL;
        c->res.status = c->status;
        c->txn_cb(c->txn_arg, c, t, &c->res);
        c->released = 1;
    }
    if (c->released)
        smtpc_free(c);
    else
        c->in_final = 0; /* idle and dead: freed by smtpc_quit() */
}

static void
smtpc_close(struct smtpc *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->state = SMTPC_S_CLOSING;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->tcp, smtpc_close_cb);
    uv_close((uv_handle_t *)&c->timer, smtpc_close_cb);
}

/*
 * A connection-level failure: log once, close. The pending callback (if
 * any) gets status from the last close callback. r: the reply behind it.
 */
static void
smtpc_fail(struct smtpc *c, int status, const struct smtpc_reply *r)
{
    char q[600];

    if (c->closing)
        return;
    if (c->pending != SMTPC_P_NONE) {
        c->status = status;
        if (r != NULL)
            c->fail_r = *r;
    }
    if (c->state != SMTPC_S_QUIT)
        log_info(
            "event=smtpc.failed id=%s addr=%s state=%s status=%d "
            "err=\"%s\" reply=%d text=%s",
            smtpc_id(c), c->addr, smtpc_state_names[c->state], status,
            smtpc_strerror(status), r ? r->code : 0,
            log_quote(q, sizeof(q), r ? r->text : "", r ? strlen(r->text) : 0));
    if (c->tls != NULL && tls_conn_established(c->tls) &&
        status != SMTPC_E_CLOSED) {
        tls_conn_shutdown(c->tls);
        smtpc_tls_flush(c);
    }
    smtpc_close(c);
}

/* ---- output ----------------------------------------------------------- */

static void
smtpc_write_cb(uv_write_t *req, int status)
{
    struct smtpc_write *w = (struct smtpc_write *)req;
    struct smtpc *c = w->c;

    c->wpending -= w->len;
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        smtpc_fail(c,
                   status == UV_EPIPE || status == UV_ECONNRESET
                       ? SMTPC_E_CLOSED
                       : status,
                   NULL);
        return;
    }
    if (c->state == SMTPC_S_BODY && c->wpending == 0)
        smtpc_body_next(c);
}

/* Queue bytes exactly as they go on the wire. 0 or -1 (failed: closing). */
static int
smtpc_wire(struct smtpc *c, const char *data, size_t len)
{
    struct smtpc_write *w;
    uv_buf_t b;
    int r;

    if (c->closing || len == 0)
        return c->closing ? -1 : 0;
    if ((w = malloc(sizeof(*w) + len)) == NULL) {
        smtpc_fail(c, SMTPC_E_NOMEM, NULL);
        return -1;
    }
    w->c = c;
    w->len = len;
    memcpy(w->data, data, len);
    b = uv_buf_init(w->data, (unsigned)len);
    if ((r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1,
                      smtpc_write_cb)) != 0) {
        free(w);
        smtpc_fail(c, r, NULL);
        return -1;
    }
    c->wpending += len;
    return 0;
}

/* Ciphertext the TLS layer has for the peer (handshake, records). */
static void
smtpc_tls_flush(struct smtpc *c)
{
    struct buf ct;

    if (c->tls == NULL || tls_conn_pending(c->tls) == 0)
        return;
    buf_init(&ct, tls_conn_pending(c->tls) + 1);
    if (tls_conn_take(c->tls, &ct) != 0) {
        buf_cleanup(&ct);
        smtpc_fail(c, SMTPC_E_NOMEM, NULL);
        return;
    }
    (void)smtpc_wire(c, ct.data, ct.len);
    buf_cleanup(&ct);
}

/* Plaintext protocol bytes: through TLS once it is up. 0 or -1. */
static int
smtpc_write(struct smtpc *c, const char *data, size_t len)
{
    if (c->closing)
        return -1;
    if (c->tls == NULL)
        return smtpc_wire(c, data, len);
    if (tls_conn_write(c->tls, data, len) != TLS_OK) {
        log_info("event=smtpc.tls_error id=%s err=\"%s\"", smtpc_id(c),
                 tls_conn_error(c->tls));
        smtpc_fail(c, SMTPC_E_TLS, NULL);
        return -1;
    }
    smtpc_tls_flush(c);
    return c->closing ? -1 : 0;
}

static int smtpc_cmd(struct smtpc *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* One command line; CRLF is added. 0 or -1. */
static int
smtpc_cmd(struct smtpc *c, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 2) {
        smtpc_fail(c, RM_E_INVAL, NULL);
        return -1;
    }
    memcpy(line + n, "\r\n", 2);
    return smtpc_write(c, line, (size_t)n + 2);
}

/* ---- session setup ---------------------------------------------------- */

static void
smtpc_ready(struct smtpc *c)
{
    smtpc_enter(c, SMTPC_S_READY);
    if (c->pending == SMTPC_P_READY) {
        c->pending = SMTPC_P_NONE;
        log_debug("event=smtpc.ready id=%s addr=%s esmtp=%d ext=0x%x "
                  "size_max=%llu tls=%s",
                  smtpc_id(c), c->addr, c->esmtp, c->ext,
                  (unsigned long long)c->size_max,
                  c->tls ? tls_conn_version(c->tls) : "none");
        c->ready_cb(c->ready_arg, c, 0, NULL);
    }
}

static void
smtpc_send_ehlo(struct smtpc *c, enum smtpc_state next)
{
    if (smtpc_cmd(c, "EHLO %s", c->helo) == 0)
        smtpc_enter(c, next);
}

static void
smtpc_auth(struct smtpc *c)
{
    char plain[2 * SMTPC_AUTH_FIELD_MAX + 3];
    char b64[((sizeof(plain) + 2) / 3) * 4 + 1];
    size_t ul = strlen(c->auth_user), pl = strlen(c->auth_pass), n;
    int r;

    /* RFC 4616 §2: [authzid] NUL authcid NUL passwd */
    plain[0] = '\0';
    memcpy(plain + 1, c->auth_user, ul);
    plain[1 + ul] = '\0';
    memcpy(plain + 2 + ul, c->auth_pass, pl);
    n = 2 + ul + pl;
    r = smtp_auth_b64_encode(plain, n, b64, sizeof(b64));
    explicit_bzero(plain, sizeof(plain));
    if (r != 0) {
        smtpc_fail(c, RM_E_INVAL, NULL);
        return;
    }
    /* RFC 4954 §4: the initial response on the AUTH line. */
    r = smtpc_cmd(c, "AUTH PLAIN %s", b64);
    explicit_bzero(b64, sizeof(b64));
    if (r == 0)
        smtpc_enter(c, SMTPC_S_AUTH);
}

/* After EHLO / HELO: STARTTLS, AUTH, or ready. */
static void
smtpc_after_ehlo(struct smtpc *c)
{
    int tls_up = c->tls != NULL;

    if (!tls_up && c->o.tls != SMTPC_TLS_NONE && !c->tls_refused) {
        if (c->ext & SMTPC_EXT_STARTTLS) {
            if (smtpc_cmd(c, "STARTTLS") == 0)
                smtpc_enter(c, SMTPC_S_STARTTLS);
            return;
        }
        if (c->o.tls == SMTPC_TLS_REQUIRED) {
            smtpc_fail(c, SMTPC_E_TLS, NULL);
            return;
        }
    }
    if (c->auth_user != NULL) {
        /* Never a password in plaintext. */
        if (!tls_up) {
            smtpc_fail(c, SMTPC_E_TLS, NULL);
            return;
        }
        if (!(c->ext & SMTPC_EXT_AUTH_PLAIN)) {
            smtpc_fail(c, SMTPC_E_NOAUTH, NULL);
            return;
        }
        smtpc_auth(c);
        return;
    }
    smtpc_ready(c);
}

static void
smtpc_tls_established(struct smtpc *c)
{
    log_info("event=smtpc.tls id=%s addr=%s server_name=%s version=%s "
             "cipher=%s bits=%d verified=%d verify=\"%s\"",
             smtpc_id(c), c->addr, c->server_name[0] ? c->server_name : "-",
             tls_conn_version(c->tls), tls_conn_cipher(c->tls),
             tls_conn_bits(c->tls), tls_conn_verified(c->tls),
             tls_conn_verify_error(c->tls));
    /* RFC 3207 §4.2: forget what was learnt before TLS. */
    c->ext = 0;
    c->size_max = 0;
    c->esmtp = 0;
    smtpc_send_ehlo(c, SMTPC_S_EHLO2);
}

static void
smtpc_start_tls(struct smtpc *c)
{
    enum tls_res r;

    /* RFC 3207 §4.2: anything that came with or after the 220 was sent
       before the handshake: never trust it. */
    if (c->in.len > 0) {
        log_warn("event=smtpc.starttls_injection id=%s addr=%s bytes=%zu",
                 smtpc_id(c), c->addr, c->in.len);
        buf_reset(&c->in);
    }
    c->tls = tls_conn_client(c->o.tls_ctx, c->server_name);
    if (c->tls == NULL) {
        smtpc_fail(c, SMTPC_E_NOMEM, NULL);
        return;
    }
    smtpc_enter(c, SMTPC_S_TLS_HANDSHAKE);
    r = tls_conn_handshake(c->tls);
    smtpc_tls_flush(c);
    if (r == TLS_ERROR) {
        log_info("event=smtpc.tls_failed id=%s addr=%s err=\"%s\"", smtpc_id(c),
                 c->addr, tls_conn_error(c->tls));
        smtpc_fail(c, SMTPC_E_TLS, NULL);
    }
}

/* ---- transactions ----------------------------------------------------- */

/* Bytes that may appear in an address or parameter we put on a command
   line: no controls, no spaces (they would end the parameter) — the
   values come from our own queue, but a command is never built from
   bytes that could inject another one. */
static int
smtpc_safe(const char *s, int allow_space)
{
    for (; s != NULL && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7f || (ch == ' ' && !allow_space))
            return 0;
    }
    return 1;
}

static int
smtpc_rcpt_line(struct smtpc *c, struct buf *b, const struct smtpc_rcpt *rc)
{
    int r = buf_appendf(b, "RCPT TO:<%s>", rc->addr);

    /* RFC 3461 §4: NOTIFY and ORCPT only to a server that offers DSN. */
    if (r == 0 && (c->ext & SMTPC_EXT_DSN) && rc->notify != 0) {
        if (rc->notify & STORE_NOTIFY_NEVER) {
            r = buf_appendf(b, " NOTIFY=NEVER");
        } else {
            const char *sep = "";
            r = buf_appendf(b, " NOTIFY=");
            if (r == 0 && (rc->notify & STORE_NOTIFY_SUCCESS)) {
                r = buf_appendf(b, "SUCCESS");
                sep = ",";
            }
            if (r == 0 && (rc->notify & STORE_NOTIFY_FAILURE)) {
                r = buf_appendf(b, "%sFAILURE", sep);
                sep = ",";
            }
            if (r == 0 && (rc->notify & STORE_NOTIFY_DELAY))
                r = buf_appendf(b, "%sDELAY", sep);
        }
    }
    if (r == 0 && (c->ext & SMTPC_EXT_DSN) && rc->orcpt != NULL && rc->orcpt[0])
        r = buf_appendf(b, " ORCPT=%s", rc->orcpt);
    if (r == 0)
        r = buf_append(b, "\r\n", 2);
    return r;
}

/* MAIL (and, with PIPELINING, every RCPT and DATA: RFC 2920 §3.1 lets
   DATA end the group) in one write. */
static void
smtpc_start_mail(struct smtpc *c)
{
    struct smtpc_txn *t = c->txn;
    struct buf b;
    int r;

    buf_init(&b, SMTPC_CMD_MAX);
    r = buf_appendf(&b, "MAIL FROM:<%s>", t->mail_from);
    /* RFC 1870 §6 */
    if (r == 0 && (c->ext & SMTPC_EXT_SIZE))
        r = buf_appendf(&b, " SIZE=%llu", (unsigned long long)t->size);
    /* RFC 6152 §2 */
    if (r == 0 && t->eightbit && (c->ext & SMTPC_EXT_8BITMIME))
        r = buf_appendf(&b, " BODY=8BITMIME");
    /* RFC 6531 §3.4 */
    if (r == 0 && t->smtputf8)
        r = buf_appendf(&b, " SMTPUTF8");
    /* RFC 3461 §4.3, §4.4 */
    if (r == 0 && (c->ext & SMTPC_EXT_DSN) && t->ret != 0)
        r = buf_appendf(&b, " RET=%s", t->ret == 2 ? "HDRS" : "FULL");
    if (r == 0 && (c->ext & SMTPC_EXT_DSN) && t->envid != NULL && t->envid[0])
        r = buf_appendf(&b, " ENVID=%s", t->envid);
    if (r == 0)
        r = buf_append(&b, "\r\n", 2);
    c->pipelined = (c->ext & SMTPC_EXT_PIPELINING) != 0;
    if (c->pipelined) {
        for (size_t i = 0; r == 0 && i < t->nrcpts; i++)
            r = smtpc_rcpt_line(c, &b, &t->rcpts[i]);
        if (r == 0)
            r = buf_append(&b, "DATA\r\n", 6);
    }
    if (r != 0) {
        buf_cleanup(&b);
        smtpc_fail(c, r == -ENOMEM ? SMTPC_E_NOMEM : r, NULL);
        return;
    }
    r = smtpc_write(c, b.data, b.len);
    buf_cleanup(&b);
    if (r == 0)
        smtpc_enter(c, SMTPC_S_MAIL);
}

static void
smtpc_send_rcpt(struct smtpc *c)
{
    struct buf b;
    int r;

    buf_init(&b, 2048);
    r = smtpc_rcpt_line(c, &b, &c->txn->rcpts[c->rcpt_i]);
    if (r != 0) {
        buf_cleanup(&b);
        smtpc_fail(c, r == -ENOMEM ? SMTPC_E_NOMEM : r, NULL);
        return;
    }
    r = smtpc_write(c, b.data, b.len);
    buf_cleanup(&b);
    if (r == 0)
        smtpc_enter(c, SMTPC_S_RCPT);
}

static void
smtpc_txn_done(struct smtpc *c)
{
    struct smtpc_txn *t = c->txn;
    smtpc_txn_cb cb = c->txn_cb;
    char q[600];

    log_debug(
        "event=smtpc.txn id=%s addr=%s n=%u from=<%s> rcpts=%zu "
        "accepted=%zu mail=%d data=%d enh=%s text=%s pipelined=%d",
        smtpc_id(c), c->addr, c->ntxn, t->mail_from, t->nrcpts, c->res.accepted,
        c->res.mail.code, c->res.data.code,
        c->res.data.enh[0] ? c->res.data.enh : "-",
        log_quote(q, sizeof(q), c->res.data.text, strlen(c->res.data.text)),
        c->pipelined);
    c->txn = NULL;
    c->pending = SMTPC_P_NONE;
    c->res.status = 0;
    smtpc_enter(c, SMTPC_S_READY);
    cb(c->txn_arg, c, t, &c->res);
}

/* The server did not finish the transaction: RSET before the next one
   (RFC 5321 §4.1.1.5). */
static void
smtpc_txn_broken(struct smtpc *c)
{
    c->need_rset = 1;
    smtpc_txn_done(c);
}

/* Dot-stuff (RFC 5321 §4.5.2) the next piece of the body and write it;
   the write callback calls again when it is on the wire. */
static void
smtpc_body_next(struct smtpc *c)
{
    struct smtpc_txn *t = c->txn;
    struct buf b;
    size_t end;
    int r = 0;

    if (c->body_done)
        return;
    buf_init(&b, 2 * SMTPC_BODY_PIECE + 8);
    if ((r = buf_reserve(&b, SMTPC_BODY_PIECE + 64)) != 0)
        goto fail;
    end = t->len - c->body_off > SMTPC_BODY_PIECE
              ? c->body_off + SMTPC_BODY_PIECE
              : t->len;
    while (r == 0 && c->body_off < end) {
        const char *p = t->data + c->body_off;
        size_t n = end - c->body_off, k = 0;

        if (c->body_bol && p[0] == '.') {
            r = buf_append(&b, ".", 1);
            if (r != 0)
                break;
        }
        /* copy up to and including the next LF */
        const char *lf = memchr(p, '\n', n);
        k = lf ? (size_t)(lf - p) + 1 : n;
        r = buf_append(&b, p, k);
        c->body_off += k;
        c->body_bol = lf != NULL;
    }
    if (r != 0)
        goto fail;
    if (c->body_off == t->len) {
        /* RFC 5321 §4.1.1.4: the terminator is CRLF.CRLF; the message's
           own last line end is its first CRLF. */
        if (t->len < 2 || memcmp(t->data + t->len - 2, "\r\n", 2) != 0)
            r = buf_append(&b, "\r\n", 2);
        if (r == 0)
            r = buf_append(&b, ".\r\n", 3);
        if (r != 0)
            goto fail;
        c->body_done = 1;
    }
    smtpc_arm(c, c->o.timeout_data_block); /* per write, §4.5.3.2.5 */
    r = smtpc_write(c, b.data, b.len);
    buf_cleanup(&b);
    /* After the last piece the reply to "." may come before the write
       callback: wait for it from now (its timeout covers the write). */
    if (r == 0 && c->body_done)
        smtpc_enter(c, SMTPC_S_DOT);
    return;
fail:
    buf_cleanup(&b);
    smtpc_fail(c, r == -ENOMEM ? SMTPC_E_NOMEM : r, NULL);
}

static void
smtpc_start_body(struct smtpc *c, int dot_only)
{
    c->body_off = 0;
    c->body_bol = 1;
    c->body_done = 0;
    c->dot_only = dot_only;
    smtpc_enter(c, SMTPC_S_BODY);
    if (dot_only) {
        /* RFC 2920 §3.1 / RFC 5321 §3.3: a server that answered DATA
           with 354 though no RCPT succeeded gets an empty message; it
           must refuse it (503 / 554), and no recipient is counted as
           delivered whatever it says. RSET is no option after 354. */
        c->body_done = 1;
        if (smtpc_write(c, ".\r\n", 3) == 0)
            smtpc_enter(c, SMTPC_S_DOT);
        return;
    }
    smtpc_body_next(c);
}

/* ---- replies ---------------------------------------------------------- */

static int
smtpc_2xx(int code)
{
    return code >= 200 && code < 300;
}

/* A whole reply in c->reply for the current state. */
static void
smtpc_on_reply(struct smtpc *c)
{
    struct smtpc_reply *r = &c->reply;
    struct smtpc_txn *t = c->txn;

    /* RFC 5321 §3.8: 421 is the server going away, in any state. */
    if (r->code == 421 && c->state != SMTPC_S_QUIT) {
        switch (c->state) {
        case SMTPC_S_MAIL:
            c->res.mail = *r;
            break;
        case SMTPC_S_RCPT:
            t->rcpts[c->rcpt_i].r = *r;
            break;
        case SMTPC_S_DATA:
        case SMTPC_S_DOT:
            c->res.data = *r;
            break;
        case SMTPC_S_CONNECTING:
        case SMTPC_S_GREETING:
        case SMTPC_S_EHLO:
        case SMTPC_S_HELO:
        case SMTPC_S_STARTTLS:
        case SMTPC_S_TLS_HANDSHAKE:
        case SMTPC_S_EHLO2:
        case SMTPC_S_AUTH:
        case SMTPC_S_READY:
        case SMTPC_S_RSET:
        case SMTPC_S_BODY:
        case SMTPC_S_QUIT:
        case SMTPC_S_CLOSING:
            break;
        }
        smtpc_fail(c, SMTPC_E_REPLY, r);
        return;
    }
    switch (c->state) {
    case SMTPC_S_GREETING:
        if (r->code != 220) {
            /* RFC 5321 §3.1: after a 554 greeting the client sends QUIT */
            (void)smtpc_cmd(c, "QUIT");
            smtpc_fail(c, SMTPC_E_REPLY, r);
            return;
        }
        smtpc_send_ehlo(c, SMTPC_S_EHLO);
        return;
    case SMTPC_S_EHLO:
    case SMTPC_S_EHLO2:
        if (smtpc_2xx(r->code)) {
            c->ext = c->rp.ext;
            c->size_max = (c->ext & SMTPC_EXT_SIZE) ? c->rp.size_max : 0;
            c->esmtp = 1;
            smtpc_after_ehlo(c);
            return;
        }
        /* RFC 5321 §4.1.4: a server that does not do EHLO gets HELO */
        if (c->state == SMTPC_S_EHLO && r->code >= 500) {
            if (smtpc_cmd(c, "HELO %s", c->helo) == 0)
                smtpc_enter(c, SMTPC_S_HELO);
            return;
        }
        smtpc_fail(c, SMTPC_E_REPLY, r);
        return;
    case SMTPC_S_HELO:
        if (!smtpc_2xx(r->code)) {
            smtpc_fail(c, SMTPC_E_REPLY, r);
            return;
        }
        c->ext = 0;
        c->size_max = 0;
        c->esmtp = 0;
        smtpc_after_ehlo(c);
        return;
    case SMTPC_S_STARTTLS:
        if (r->code == 220) {
            smtpc_start_tls(c);
            return;
        }
        if (c->o.tls == SMTPC_TLS_REQUIRED) {
            smtpc_fail(c, SMTPC_E_TLS, r);
            return;
        }
        /* Opportunistic: refused (454 and the like) is not a failed
           handshake; go on in plaintext on this connection. */
        log_info("event=smtpc.starttls_refused id=%s addr=%s reply=%d",
                 smtpc_id(c), c->addr, r->code);
        c->tls_refused = 1;
        smtpc_after_ehlo(c);
        return;
    case SMTPC_S_AUTH:
        if (r->code != 235) {
            smtpc_fail(c, SMTPC_E_REPLY, r);
            return;
        }
        smtpc_ready(c);
        return;
    case SMTPC_S_RSET:
        if (!smtpc_2xx(r->code)) {
            smtpc_fail(c, SMTPC_E_REPLY, r);
            return;
        }
        c->need_rset = 0;
        smtpc_start_mail(c);
        return;
    case SMTPC_S_MAIL:
        c->res.mail = *r;
        c->rcpt_i = 0;
        if (c->pipelined) {
            smtpc_enter(c, SMTPC_S_RCPT); /* their replies follow */
            return;
        }
        if (!smtpc_2xx(r->code)) {
            smtpc_txn_broken(c);
            return;
        }
        smtpc_send_rcpt(c);
        return;
    case SMTPC_S_RCPT:
        t->rcpts[c->rcpt_i].r = *r;
        if (smtpc_2xx(r->code) && smtpc_2xx(c->res.mail.code))
            c->res.accepted++;
        c->rcpt_i++;
        if (c->rcpt_i < t->nrcpts) {
            if (!c->pipelined)
                smtpc_send_rcpt(c);
            else
                smtpc_enter(c, SMTPC_S_RCPT);
            return;
        }
        if (c->pipelined) {
            smtpc_enter(c, SMTPC_S_DATA);
            return;
        }
        if (c->res.accepted == 0) {
            smtpc_txn_broken(c);
            return;
        }
        if (smtpc_cmd(c, "DATA") == 0)
            smtpc_enter(c, SMTPC_S_DATA);
        return;
    case SMTPC_S_DATA:
        c->res.data = *r;
        if (r->code == 354) {
            smtpc_start_body(c, c->res.accepted == 0);
            return;
        }
        smtpc_txn_broken(c);
        return;
    case SMTPC_S_DOT:
        c->res.data = *r;
        if (c->dot_only)
            c->res.accepted = 0; /* nobody's message was sent */
        c->need_rset = 0;        /* "." ends the transaction either way */
        smtpc_txn_done(c);
        return;
    case SMTPC_S_QUIT:
        smtpc_close(c);
        return;
    case SMTPC_S_BODY:
    case SMTPC_S_READY:
        /* Nothing was asked: a server talking out of turn. */
        if (c->state == SMTPC_S_BODY)
            c->res.data = *r;
        smtpc_fail(c, SMTPC_E_PROTO, r);
        return;
    case SMTPC_S_CONNECTING:
    case SMTPC_S_TLS_HANDSHAKE:
    case SMTPC_S_CLOSING:
        smtpc_fail(c, SMTPC_E_PROTO, r);
        return;
    }
}

/* Cut c->in into lines and replies. */
static void
smtpc_process(struct smtpc *c)
{
    size_t off = 0;

    while (!c->closing && c->state != SMTPC_S_TLS_HANDSHAKE) {
        const char *p = c->in.data + off;
        size_t have = c->in.len - off, len;
        const char *lf = have ? memchr(p, '\n', have) : NULL;
        int r;

        if (lf == NULL) {
            if (have + 2 > SMTPC_REPLY_LINE_MAX) {
                smtpc_fail(c, SMTPC_E_PROTO, NULL);
                return;
            }
            break;
        }
        len = (size_t)(lf - p);
        off += len + 1;
        if (len > 0 && p[len - 1] == '\r')
            len--;
        if (c->rp.lines == 0) {
            smtpc_reply_parser_init(&c->rp, &c->reply,
                                    c->state == SMTPC_S_EHLO ||
                                        c->state == SMTPC_S_EHLO2);
        }
        r = smtpc_reply_line(&c->rp, p, len);
        if (r < 0) {
            smtpc_fail(c, SMTPC_E_PROTO, c->reply.code ? &c->reply : NULL);
            return;
        }
        if (r == 1) {
            c->rp.lines = 0; /* the next line starts a new reply */
            if (c->state == SMTPC_S_STARTTLS && c->reply.code == 220) {
                /* keep only what followed, for the injection check */
                memmove(c->in.data, c->in.data + off, c->in.len - off);
                c->in.len -= off;
                off = 0;
            }
            smtpc_on_reply(c);
        }
    }
    if (c->closing)
        return;
    if (off > 0) {
        memmove(c->in.data, c->in.data + off, c->in.len - off);
        c->in.len -= off;
    }
}

/* ---- input ------------------------------------------------------------ */

static void
smtpc_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h;
    (void)hint;
    b->base = malloc(SMTPC_READ_SIZE);
    b->len = b->base ? SMTPC_READ_SIZE : 0;
}

static void
smtpc_tls_input(struct smtpc *c)
{
    enum tls_res r;

    if (c->state == SMTPC_S_TLS_HANDSHAKE) {
        r = tls_conn_handshake(c->tls);
        smtpc_tls_flush(c);
        if (r == TLS_WANT || c->closing)
            return;
        if (r != TLS_OK) {
            log_info("event=smtpc.tls_failed id=%s addr=%s err=\"%s\"",
                     smtpc_id(c), c->addr,
                     r == TLS_CLOSED ? "closed by server"
                                     : tls_conn_error(c->tls));
            smtpc_fail(c, SMTPC_E_TLS, NULL);
            return;
        }
        smtpc_tls_established(c);
    }
    while (!c->closing && tls_conn_buffered(c->tls)) {
        size_t before = c->in.len;

        if (c->in.len >= SMTPC_IN_MAX) {
            smtpc_fail(c, SMTPC_E_PROTO, NULL);
            return;
        }
        r = tls_conn_read(c->tls, &c->in, SMTPC_IN_MAX - c->in.len);
        smtpc_tls_flush(c);
        if (c->closing)
            return;
        if (r == TLS_CLOSED) {
            smtpc_fail(c, SMTPC_E_CLOSED, NULL);
            return;
        }
        if (r != TLS_OK) {
            log_info("event=smtpc.tls_error id=%s err=\"%s\"", smtpc_id(c),
                     tls_conn_error(c->tls));
            smtpc_fail(c, SMTPC_E_TLS, NULL);
            return;
        }
        if (c->in.len == before)
            break; /* a partial record */
        smtpc_process(c);
    }
}

static void
smtpc_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct smtpc *c = st->data;

    if (c->closing) {
        free(b->base);
        return;
    }
    if (nread < 0) {
        free(b->base);
        if (c->state == SMTPC_S_QUIT) {
            smtpc_close(c);
            return;
        }
        smtpc_fail(c,
                   nread == UV_EOF || nread == UV_ECONNRESET ? SMTPC_E_CLOSED
                                                             : (int)nread,
                   NULL);
        return;
    }
    if (nread == 0) {
        free(b->base);
        return;
    }
    if (c->tls != NULL) {
        int r = tls_conn_feed(c->tls, b->base, (size_t)nread);
        free(b->base);
        if (r != 0) {
            smtpc_fail(c, SMTPC_E_NOMEM, NULL);
            return;
        }
        smtpc_tls_input(c);
        return;
    }
    if (buf_append(&c->in, b->base, (size_t)nread) != 0) {
        free(b->base);
        smtpc_fail(c, SMTPC_E_PROTO, NULL);
        return;
    }
    free(b->base);
    smtpc_process(c);
}

static void
smtpc_connect_cb(uv_connect_t *req, int status)
{
    struct smtpc *c = req->data;
    int r;

    if (c->closing)
        return;
    if (status < 0) {
        smtpc_fail(c, status, NULL);
        return;
    }
    c->connected = 1;
    log_info("event=smtpc.connect id=%s addr=%s server_name=%s tls=%s",
             smtpc_id(c), c->addr, c->server_name[0] ? c->server_name : "-",
             c->o.tls == SMTPC_TLS_NONE       ? "none"
             : c->o.tls == SMTPC_TLS_REQUIRED ? "required"
                                              : "opportunistic");
    (void)uv_tcp_nodelay(&c->tcp, 1);
    if ((r = uv_read_start((uv_stream_t *)&c->tcp, smtpc_alloc_cb,
                           smtpc_read_cb)) != 0) {
        smtpc_fail(c, r, NULL);
        return;
    }
    smtpc_enter(c, SMTPC_S_GREETING);
}

/* ---- API -------------------------------------------------------------- */

static char *
smtpc_strdup(const char *s)
{
    return strdup(s != NULL ? s : "");
}

static void
smtpc_addr_str(const struct sockaddr *sa, char *out, size_t outsz)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        port = ntohs(s6->sin6_port);
        snprintf(out, outsz, "[%s]:%u", ip, port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        port = ntohs(s4->sin_port);
        snprintf(out, outsz, "%s:%u", ip, port);
    }
}

int
smtpc_connect(uv_loop_t *loop, const struct sockaddr *sa,
              const struct smtpc_opts *opts, smtpc_ready_cb cb, void *arg,
              struct smtpc **out)
{
    struct smtpc *c;
    int r;

    if (opts->tls != SMTPC_TLS_NONE && opts->tls_ctx == NULL)
        return RM_E_INVAL;
    if (opts->auth_user != NULL &&
        (strlen(opts->auth_user) > SMTPC_AUTH_FIELD_MAX ||
         opts->auth_pass == NULL ||
         strlen(opts->auth_pass) > SMTPC_AUTH_FIELD_MAX))
        return RM_E_INVAL;
    if (opts->helo == NULL || opts->helo[0] == '\0' ||
        !smtpc_safe(opts->helo, 0))
        return RM_E_INVAL;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return -ENOMEM;
    c->loop = loop;
    c->o = *opts;
    c->helo = smtpc_strdup(opts->helo);
    c->server_name = smtpc_strdup(opts->server_name);
    c->log_id = smtpc_strdup(opts->log_id);
    if (opts->auth_user != NULL) {
        c->auth_user = smtpc_strdup(opts->auth_user);
        c->auth_pass = smtpc_strdup(opts->auth_pass);
        if (c->auth_user == NULL || c->auth_pass == NULL) {
            smtpc_free(c);
            return -ENOMEM;
        }
    }
    if (c->helo == NULL || c->server_name == NULL || c->log_id == NULL) {
        smtpc_free(c);
        return -ENOMEM;
    }
    /* the copies stand in for the caller's strings */
    c->o.helo = c->helo;
    c->o.server_name = c->server_name;
    c->o.auth_user = c->auth_user;
    c->o.auth_pass = NULL;
    c->o.log_id = c->log_id;
    buf_init(&c->in, SMTPC_IN_MAX);
    smtpc_addr_str(sa, c->addr, sizeof(c->addr));
    c->ready_cb = cb;
    c->ready_arg = arg;
    c->pending = SMTPC_P_READY;
    c->state = SMTPC_S_CONNECTING;
    if ((r = uv_tcp_init(loop, &c->tcp)) != 0) {
        smtpc_free(c);
        return r;
    }
    c->tcp.data = c;
    c->handles_open = 1;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 2;
    c->conn_req.data = c;
    r = uv_tcp_connect(&c->conn_req, &c->tcp, sa, smtpc_connect_cb);
    *out = c;
    if (r != 0) {
        /* Reported through the callback, from the close callback: never
           from inside this call. */
        smtpc_fail(c, r, NULL);
        return 0;
    }
    smtpc_enter(c, SMTPC_S_CONNECTING);
    return 0;
}

int
smtpc_send(struct smtpc *c, struct smtpc_txn *t, smtpc_txn_cb cb, void *arg)
{
    if (c->closing || c->released || c->state != SMTPC_S_READY ||
        c->txn != NULL || t->nrcpts == 0 || cb == NULL)
        return RM_E_INVAL;
    if (t->mail_from == NULL || !smtpc_safe(t->mail_from, 1) ||
        !smtpc_safe(t->envid, 0) || (t->data == NULL && t->len > 0))
        return RM_E_INVAL;
    for (size_t i = 0; i < t->nrcpts; i++) {
        if (t->rcpts[i].addr == NULL || t->rcpts[i].addr[0] == '\0' ||
            !smtpc_safe(t->rcpts[i].addr, 1) ||
            !smtpc_safe(t->rcpts[i].orcpt, 0))
            return RM_E_INVAL;
    }
    /* RFC 1870 §6: not even tried when the server said it is too big */
    if ((c->ext & SMTPC_EXT_SIZE) && c->size_max > 0 && t->size > c->size_max)
        return SMTPC_E_TOOBIG;
    /* RFC 6531 §3.4: a message that needs SMTPUTF8 is not downgraded */
    if (t->smtputf8 && !(c->ext & SMTPC_EXT_SMTPUTF8))
        return SMTPC_E_NOUTF8;
    for (size_t i = 0; i < t->nrcpts; i++)
        memset(&t->rcpts[i].r, 0, sizeof(t->rcpts[i].r));
    memset(&c->res, 0, sizeof(c->res));
    c->res.dsn = (c->ext & SMTPC_EXT_DSN) != 0;
    c->txn = t;
    c->txn_cb = cb;
    c->txn_arg = arg;
    c->pending = SMTPC_P_TXN;
    c->status = 0;
    memset(&c->fail_r, 0, sizeof(c->fail_r));
    c->rcpt_i = 0;
    c->dot_only = 0;
    c->ntxn++;
    if (c->need_rset) {
        if (smtpc_cmd(c, "RSET") == 0)
            smtpc_enter(c, SMTPC_S_RSET);
        return 0;
    }
    smtpc_start_mail(c);
    return 0;
}

int
smtpc_usable(const struct smtpc *c)
{
    return c != NULL && !c->closing && !c->released &&
           c->state == SMTPC_S_READY && c->txn == NULL;
}

const char *
smtpc_tls_version(const struct smtpc *c)
{
    return c->tls != NULL && tls_conn_established(c->tls)
               ? tls_conn_version(c->tls)
               : NULL;
}

const char *
smtpc_tls_cipher(const struct smtpc *c)
{
    return c->tls != NULL && tls_conn_established(c->tls)
               ? tls_conn_cipher(c->tls)
               : NULL;
}

int
smtpc_tls_verified(const struct smtpc *c)
{
    return c->tls != NULL && tls_conn_verified(c->tls);
}

uint64_t
smtpc_max_size(const struct smtpc *c)
{
    return (c->ext & SMTPC_EXT_SIZE) ? c->size_max : 0;
}

unsigned
smtpc_extensions(const struct smtpc *c)
{
    return c->ext;
}

void
smtpc_quit(struct smtpc *c)
{
    if (c == NULL || c->released)
        return;
    c->released = 1;
    /* Whatever was pending is dropped: no callback after this. */
    c->pending = SMTPC_P_NONE;
    c->txn = NULL;
    if (c->closing) {
        /* Dead already: free now unless the handles are still closing
           (then the last close callback does) or we are inside it. */
        if (c->handles_open == 0 && !c->in_final)
            smtpc_free(c);
        return;
    }
    if (c->state == SMTPC_S_READY && c->connected) {
        /* RFC 5321 §4.1.1.10 */
        if (smtpc_cmd(c, "QUIT") == 0)
            smtpc_enter(c, SMTPC_S_QUIT);
        return;
    }
    smtpc_close(c);
}
