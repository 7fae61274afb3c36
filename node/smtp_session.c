/*
 * smtp_session: the inbound SMTP state machine (RFC 5321 server side).
 *
 * Input flows: read_cb -> s->in -> smtp_session_process(), which runs the
 * tokenizer for the current state (command lines, DATA content, BDAT
 * chunk bytes) and hands each command to its table entry. Replies are
 * collected in s->out and written once per processed read (RFC 2920 lets
 * a server flush whenever it likes; one write per read keeps pipelined
 * replies in order and cheap).
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/rm_error.h"
#include "node/auth_cache.h"
#include "node/mesh.h"
#include "node/mesh_repl.h"
#include "node/node.h"
#include "node/ratelimit.h"
#include "node/smtp_auth.h"
#include "node/smtp_parse.h"
#include "node/smtp_session.h"
#include "node/tls.h"
#include "store/store.h"

/* Input kept while a commit is outstanding or a line is incomplete. Past
   SMTP_IN_HIGH the session stops reading (back-pressure, not an error). */
#define SMTP_IN_MAX (256 * 1024)
#define SMTP_IN_HIGH (64 * 1024)
#define SMTP_READ_SIZE (64 * 1024)
/* Replies written but not yet taken by the kernel: a client that
   pipelines without reading its replies is paused past this. */
#define SMTP_WPENDING_MAX (64 * 1024)
#define SMTP_OUT_MAX (64 * 1024)
/* Room kept in s->out for the replies to one command (EHLO's is the
   longest, a few hundred bytes): past it, flush before parsing on. */
#define SMTP_OUT_ROOM (8 * 1024)
/* Commands that do no work (NOOP, RSET, VRFY, HELP) allowed per session,
   like Postfix's smtpd_junk_command_limit. */
#define SMTP_JUNK_MAX 100
/* Room for our own trace header in front of the message. */
#define SMTP_TRACE_MAX 2048
/* RFC 3461 §4.4: ENVID is at most 100 characters. */
#define SMTP_ENVID_MAX 100
/* RFC 3461 §4.2: ORCPT is at most 500 characters. */
#define SMTP_ORCPT_MAX 500

enum smtp_state {
    SMTP_S_INIT = 0, /* greeting sent, no HELO / EHLO yet */
    SMTP_S_READY,    /* HELO / EHLO done, no transaction */
    SMTP_S_MAIL,     /* MAIL accepted, no recipient yet */
    SMTP_S_RCPT,     /* at least one recipient accepted */
    SMTP_S_DATA,     /* reading DATA content up to CRLF.CRLF */
    SMTP_S_BDAT,     /* reading the bytes of one BDAT chunk */
    SMTP_S_CHUNKING, /* between BDAT chunks of one transaction */
    SMTP_S_COMMIT,   /* message handed to the store; input waits */
    SMTP_S_REPLWAIT, /* committed; reply held for [mesh] ack_replicas */
    SMTP_S_TLS,      /* TLS handshake (after STARTTLS, or smtps) */
    SMTP_S_AUTH,     /* AUTH exchange: the next line is a SASL response */
    SMTP_S_AUTHWAIT, /* password being checked, or failure delay; input waits */
    SMTP_S_CLOSING,  /* last reply queued; closing */
    SMTP_S__COUNT
};

static const char *const smtp_state_names[SMTP_S__COUNT] = {
    [SMTP_S_INIT] = "init",         [SMTP_S_READY] = "ready",
    [SMTP_S_MAIL] = "mail",         [SMTP_S_RCPT] = "rcpt",
    [SMTP_S_DATA] = "data",         [SMTP_S_BDAT] = "bdat",
    [SMTP_S_CHUNKING] = "chunking", [SMTP_S_COMMIT] = "commit",
    [SMTP_S_REPLWAIT] = "replwait", [SMTP_S_TLS] = "tls",
    [SMTP_S_AUTH] = "auth",         [SMTP_S_AUTHWAIT] = "authwait",
    [SMTP_S_CLOSING] = "closing",
};

#define ST(x) (1u << SMTP_S_##x)

struct smtp_rcpt {
    char *addr;    /* as given, without <> */
    char *mailbox; /* local: owner mailbox; remote: NULL */
    char *orcpt;
    unsigned notify;
    enum store_route route;
};

struct smtp_session {
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } io;
    uv_timer_t timer;
    struct node *n;
    const struct node_config *cfg;
    char sid[24];
    enum smtp_state state;
    enum smtp_state bdat_return; /* state after a discarded chunk */
    smtp_session_gone_cb gone;
    void *gone_arg;

    enum smtp_kind kind;

    /* TLS and AUTH */
    struct tls_conn *tls; /* set from STARTTLS / smtps on */
    int tls_starting;     /* STARTTLS answered; switch after the flush */
    int greeted;          /* 220 sent (smtps: after the handshake) */
    int tls_bye;          /* close_notify queued */
    int plain_auth_ok;    /* client may AUTH without TLS */
    char *auth_user;      /* canonical login after 235 */
    int auth_mech;        /* SMTP_AUTH_MECH_* during an exchange */
    char auth_login[SMTP_AUTH_ID_MAX + 1]; /* LOGIN: the user so far */
    int work_pending;     /* a password check runs in the thread pool */
    int auth_delayed;     /* the timer sends the held auth reply */
    char auth_reply[160]; /* reply held for the failure delay */
    int auth_close;       /* close after the held reply */
    char rl_key[INET6_ADDRSTRLEN + 16]; /* "c:<ip>" while counted */

    /* lifetime */
    int started;
    int closing;      /* close requested */
    int handles_open; /* handles not yet through close_cb */
    int store_pending;
    int draining;
    const char *close_reason;

    /* peer */
    struct sockaddr_storage peer;
    int has_peer;
    char peer_ip[INET6_ADDRSTRLEN + 8];
    int trusted;
    int esmtp;
    char helo[256];
    unsigned errors;
    unsigned junk;
    uint64_t msgs;

    /* I/O */
    struct smtp_line_state ls;
    struct buf in;
    struct buf out;
    size_t wpending;
    int reading;
    uint64_t deadline; /* loop ms: the client must have progressed by then */

    /* transaction (RFC 5321 §3.3) */
    char *mail_from;
    int smtputf8;
    enum store_body body;
    enum store_ret ret;
    char *envid;
    struct smtp_rcpt *rcpts;
    size_t nrcpts;
    size_t rcap;
    char qid[STORE_QID_LEN + 1];
    struct buf msg;
    size_t trace_len; /* our Received header at the front of msg */
    struct smtp_data_state ds;
    int data_started;
    uint64_t bdat_left;
    int bdat_last;
    int bdat_discard;
    const char *bdat_reply; /* reply for a discarded chunk */
    struct store_msg sm;
    struct store_rcpt *srcpts;
    struct mesh_repl_wait *rwait; /* [mesh] ack_replicas, from DATA end */
};

struct smtp_write {
    uv_write_t req;
    struct smtp_session *s;
    size_t len;
    char data[];
};

enum { SMTP_AUTH_MECH_NONE = 0, SMTP_AUTH_MECH_PLAIN, SMTP_AUTH_MECH_LOGIN };

typedef void (*smtp_proceed_fn)(struct smtp_session *s, struct smtp_cmd *c);

/* Command table flags. */
#define SMTP_CF_NOARG 0x01 /* no argument allowed (501 5.5.4) */
#define SMTP_CF_JUNK 0x02  /* does no work: counts toward SMTP_JUNK_MAX */

struct smtp_cmd_def {
    enum smtp_verb verb;
    unsigned states; /* where the verb is allowed */
    unsigned flags;
    smtp_proceed_fn proceed;
    const char *bad_seq; /* reply text when not allowed */
};

static void smtp_session_process(struct smtp_session *s);
static void smtp_session_close(struct smtp_session *s, const char *reason);
static void smtp_flush(struct smtp_session *s);
static void smtp_update_reading(struct smtp_session *s);
static void smtp_deadline_set(struct smtp_session *s, unsigned secs);
static void smtp_tls_send(struct smtp_session *s);
static void smtp_start_tls(struct smtp_session *s);
static void smtp_auth_line(struct smtp_session *s, const char *line,
                           size_t len);
static void smtp_tls_input(struct smtp_session *s, size_t nread);

/* ---- state ----------------------------------------------------------- */

static void
smtp_session_enter(struct smtp_session *s, enum smtp_state next)
{
    if (s->state == next)
        return;
    log_debug("event=smtp.state sid=%s from=%s to=%s", s->sid,
              smtp_state_names[s->state], smtp_state_names[next]);
    s->state = next;
    /* A new phase starts its own clock (RFC 5321 §4.5.3.2): the data
       timeout for message content, the command timeout otherwise. */
    if (next == SMTP_S_DATA || next == SMTP_S_BDAT)
        smtp_deadline_set(s, s->cfg->timeout_data);
    else if (next != SMTP_S_COMMIT && next != SMTP_S_REPLWAIT &&
             next != SMTP_S_CLOSING)
        smtp_deadline_set(s, s->cfg->timeout_command);
}

/* ---- replies ----------------------------------------------------------- */

static void smtp_reply(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 3)
        n = sizeof(line) - 3;
    line[n++] = '\r';
    line[n++] = '\n';
    if (buf_append(&s->out, line, (size_t)n) != 0) {
        /* Replies pile up only if the client never reads them; we stop
           reading long before this, so this is a client we drop. */
        smtp_session_close(s, "output overflow");
        return;
    }
    if (line[0] == '4' || line[0] == '5')
        log_info("event=smtp.reply sid=%s state=%s reply=\"%.*s\"", s->sid,
                 smtp_state_names[s->state], n - 2, line);
}

/* A client error: replied, counted; too many end the session (§4.5.3.2
   budget; Postfix's smtpd_hard_error_limit). */
static void
smtp_error(struct smtp_session *s)
{
    s->errors++;
    s->n->stats.protocol_errors++;
    if (s->errors >= s->cfg->max_errors) {
        smtp_reply(s, "421 4.7.0 %s Error: too many errors", s->cfg->hostname);
        smtp_session_close(s, "too many errors");
    }
}

/* ---- transaction ------------------------------------------------------- */

static void
smtp_txn_reset(struct smtp_session *s)
{
    for (size_t i = 0; i < s->nrcpts; i++) {
        free(s->rcpts[i].addr);
        free(s->rcpts[i].mailbox);
        free(s->rcpts[i].orcpt);
    }
    s->nrcpts = 0;
    free(s->mail_from);
    s->mail_from = NULL;
    free(s->envid);
    s->envid = NULL;
    free(s->srcpts);
    s->srcpts = NULL;
    s->smtputf8 = 0;
    s->body = STORE_BODY_7BIT;
    s->ret = STORE_RET_UNSPEC;
    s->qid[0] = '\0';
    s->data_started = 0;
    /* Keep a small message buffer around; give big ones back. */
    if (s->msg.cap > 256 * 1024)
        buf_cleanup(&s->msg);
    else
        buf_reset(&s->msg);
}

static void
smtp_txn_end(struct smtp_session *s)
{
    smtp_txn_reset(s);
    smtp_session_enter(s, SMTP_S_READY);
}

/* ---- helpers ------------------------------------------------------------ */

static char *
smtp_strndup(const char *p, size_t len)
{
    char *d = malloc(len + 1);

    if (d == NULL)
        return NULL;
    if (len)
        memcpy(d, p, len);
    d[len] = '\0';
    return d;
}

static void
smtp_rfc5322_date(char *out, size_t outsz, time_t t)
{
    struct tm tm;

    localtime_r(&t, &tm);
    strftime(out, outsz, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* ---- commands ------------------------------------------------------------ */

static void
smtp_do_helo(struct smtp_session *s, struct smtp_cmd *c)
{
    int ehlo = c->verb == SMTP_V_EHLO;
    const struct node_config *cfg = s->cfg;

    if (c->arg.len == 0) {
        smtp_reply(s, "501 5.5.4 Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
        smtp_error(s);
        return;
    }
    if (c->arg.len >= sizeof(s->helo)) {
        smtp_reply(s, "501 5.5.4 Hostname too long");
        smtp_error(s);
        return;
    }
    /* RFC 5321 §4.1.4: EHLO / HELO also reset any transaction. */
    smtp_txn_reset(s);
    memcpy(s->helo, c->arg.p, c->arg.len);
    s->helo[c->arg.len] = '\0';
    s->esmtp = ehlo;
    smtp_session_enter(s, SMTP_S_READY);
    if (!ehlo) {
        smtp_reply(s, "250 %s", cfg->hostname);
        return;
    }
    /* RFC 5321 §4.1.1.1; one keyword a line. */
    smtp_reply(s, "250-%s Hello %s [%s]", cfg->hostname, s->helo,
               s->has_peer ? s->peer_ip : "unknown");
    if (s->tls == NULL && s->n->tls != NULL)
        smtp_reply(s, "250-STARTTLS"); /* RFC 3207 */
    if (s->tls != NULL || s->plain_auth_ok)
        smtp_reply(s, "250-AUTH PLAIN LOGIN");                 /* RFC 4954 */
    smtp_reply(s, "250-PIPELINING");                           /* RFC 2920 */
    smtp_reply(s, "250-SIZE %" PRIu64, cfg->max_message_size); /* RFC 1870 */
    smtp_reply(s, "250-8BITMIME");                             /* RFC 6152 */
    smtp_reply(s, "250-ENHANCEDSTATUSCODES");                  /* RFC 2034 */
    smtp_reply(s, "250-SMTPUTF8");                             /* RFC 6531 */
    smtp_reply(s, "250-CHUNKING");                             /* RFC 3030 */
    smtp_reply(s, "250 DSN");                                  /* RFC 3461 */
}

/* An authenticated sender: its own address (sender policy), and its
   hourly message budget. 0, or -1 with the reply sent. */
static int
smtp_mail_auth_checks(struct smtp_session *s, struct smtp_cmd *c)
{
    const struct node_config *cfg = s->cfg;
    char sender[STORE_ADDR_MAX], key[RL_KEY_MAX];

    if (c->path.len >= sizeof(sender)) {
        smtp_reply(s, "501 5.1.7 Sender address too long");
        smtp_error(s);
        return -1;
    }
    if (c->path.len > 0) /* the null sender has no bytes at all */
        memcpy(sender, c->path.p, c->path.len);
    sender[c->path.len] = '\0';
    if (!node_config_sender_ok(cfg, s->auth_user, sender)) {
        log_info("event=smtp.sender_denied sid=%s user=%s sender=<%s>", s->sid,
                 s->auth_user, sender);
        smtp_reply(s,
                   "553 5.7.1 <%s>: Sender address rejected: not owned by "
                   "user %s",
                   sender, s->auth_user);
        smtp_error(s);
        return -1;
    }
    /* Per login, wherever the client is (trusted networks too): it is
       what stops a stolen password from spamming. */
    if (cfg->msgs_per_user_hour && s->n->rl) {
        snprintf(key, sizeof(key), "m:%s", s->auth_user);
        if (!rl_take(s->n->rl, key, uv_now(s->n->loop), 3600,
                     cfg->msgs_per_user_hour)) {
            s->n->stats.ratelimited++;
            log_warn("event=ratelimit kind=msgs_per_user_hour sid=%s user=%s "
                     "limit=%u",
                     s->sid, s->auth_user, cfg->msgs_per_user_hour);
            smtp_reply(s,
                       "451 4.7.1 Error: %s has sent %u messages this hour, "
                       "the limit; try again later",
                       s->auth_user, cfg->msgs_per_user_hour);
            return -1;
        }
    }
    return 0;
}

static void
smtp_do_mail(struct smtp_session *s, struct smtp_cmd *c)
{
    const struct node_config *cfg = s->cfg;
    int smtputf8 = 0;
    enum store_body body = STORE_BODY_7BIT;
    enum store_ret ret = STORE_RET_UNSPEC;
    const char *envid = NULL;
    size_t envid_len = 0;

    if (s->kind != SMTP_KIND_RELAY && s->auth_user == NULL) {
        /* RFC 6409 §4.3: submission needs AUTH. */
        smtp_reply(s, "530 5.7.0 Authentication required");
        smtp_error(s);
        return;
    }
    if (s->auth_user != NULL && smtp_mail_auth_checks(s, c) != 0)
        return;
    if (c->nparams && !s->esmtp) {
        smtp_reply(s, "555 5.5.4 MAIL parameters need EHLO");
        smtp_error(s);
        return;
    }
    for (size_t i = 0; i < c->nparams; i++) {
        const struct smtp_param *p = &c->params[i];
        if (smtp_slice_eq(p->key, "SIZE")) {
            uint64_t size;
            if (smtp_param_size(p->value, &size) != 0) {
                smtp_reply(s, "501 5.5.4 Bad SIZE parameter");
                smtp_error(s);
                return;
            }
            /* RFC 1870 §6.3: refuse at MAIL when the declared size is
               already over our limit. */
            if (size > cfg->max_message_size) {
                smtp_reply(s,
                           "552 5.3.4 Message size exceeds fixed limit of "
                           "%" PRIu64 " bytes",
                           cfg->max_message_size);
                smtp_error(s);
                return;
            }
        } else if (smtp_slice_eq(p->key, "BODY")) {
            if (smtp_slice_eq(p->value, "7BIT")) {
                body = STORE_BODY_7BIT;
            } else if (smtp_slice_eq(p->value, "8BITMIME")) {
                body = STORE_BODY_8BITMIME;
            } else {
                /* BINARYMIME (RFC 3030) is not advertised. */
                smtp_reply(s, "555 5.5.4 Unsupported BODY type");
                smtp_error(s);
                return;
            }
        } else if (smtp_slice_eq(p->key, "SMTPUTF8")) {
            if (p->value.p != NULL) {
                smtp_reply(s, "555 5.5.4 SMTPUTF8 takes no value");
                smtp_error(s);
                return;
            }
            smtputf8 = 1;
        } else if (smtp_slice_eq(p->key, "RET")) {
            /* RFC 3461 §4.3 */
            if (smtp_slice_eq(p->value, "FULL")) {
                ret = STORE_RET_FULL;
            } else if (smtp_slice_eq(p->value, "HDRS")) {
                ret = STORE_RET_HDRS;
            } else {
                smtp_reply(s, "501 5.5.4 RET must be FULL or HDRS");
                smtp_error(s);
                return;
            }
        } else if (smtp_slice_eq(p->key, "ENVID")) {
            /* RFC 3461 §4.4 */
            if (p->value.len == 0 || p->value.len > SMTP_ENVID_MAX ||
                smtp_param_xtext_ok(p->value) != 0) {
                smtp_reply(s, "501 5.5.4 Bad ENVID parameter");
                smtp_error(s);
                return;
            }
            envid = p->value.p;
            envid_len = p->value.len;
        } else {
            smtp_reply(s, "555 5.5.4 Unsupported parameter %.*s",
                       (int)(p->key.len > 32 ? 32 : p->key.len), p->key.p);
            smtp_error(s);
            return;
        }
    }
    /* RFC 6531 §3.4: a UTF-8 address needs SMTPUTF8 on this MAIL. */
    if (c->path_utf8 && !smtputf8) {
        smtp_reply(s, "553 5.6.7 UTF-8 address needs the SMTPUTF8 "
                      "parameter");
        smtp_error(s);
        return;
    }
    s->mail_from = smtp_strndup(c->path.p, c->path.len);
    if (envid)
        s->envid = smtp_strndup(envid, envid_len);
    if (s->mail_from == NULL || (envid && s->envid == NULL)) {
        smtp_reply(s, "451 4.3.0 Out of memory, try again later");
        smtp_txn_reset(s);
        return;
    }
    s->smtputf8 = smtputf8;
    s->body = body;
    s->ret = ret;
    smtp_session_enter(s, SMTP_S_MAIL);
    smtp_reply(s, "250 2.1.0 Ok");
}

/* The domain part of a path, after the last '@' (quoted local parts may
   contain '@'); NULL when there is none. */
static const char *
smtp_path_domain(const char *addr, size_t len, size_t *dlen)
{
    for (size_t i = len; i > 0; i--) {
        if (addr[i - 1] == '@') {
            *dlen = len - i;
            return addr + i;
        }
    }
    return NULL;
}

struct smtp_user_probe {
    int found;
};

static int
smtp_user_found(void *arg, const struct store_user *u)
{
    struct smtp_user_probe *pr = arg;

    (void)u;
    pr->found = 1;
    return 0;
}

struct smtp_user_hash {
    char *out;
    size_t outsz;
};

static int
smtp_user_hash_cb(void *arg, const struct store_user *u)
{
    struct smtp_user_hash *h = arg;

    if (u->pwhash != NULL && strlen(u->pwhash) < h->outsz)
        memcpy(h->out, u->pwhash, strlen(u->pwhash) + 1);
    return 0;
}

static void
smtp_do_rcpt(struct smtp_session *s, struct smtp_cmd *c)
{
    const struct node_config *cfg = s->cfg;
    struct smtp_rcpt r = {0};
    char canon[STORE_ADDR_MAX];
    struct mesh_home home;
    const char *domain;
    size_t dlen = 0;
    const char *mailbox = NULL;
    int postmaster = 0;

    if (c->null_path) {
        smtp_reply(s, "501 5.1.3 Null recipient address not allowed");
        smtp_error(s);
        return;
    }
    if (s->nrcpts >= cfg->max_recipients) {
        /* RFC 5321 §4.5.3.1.10: 452 for too many recipients, the client
           sends the rest in another transaction. */
        smtp_reply(s, "452 4.5.3 Too many recipients");
        s->n->stats.rcpt_rejected++;
        return;
    }
    if (c->path_utf8 && !s->smtputf8) {
        smtp_reply(s, "553 5.6.7 UTF-8 address needs SMTPUTF8 on MAIL");
        smtp_error(s);
        return;
    }
    if (c->nparams && !s->esmtp) {
        smtp_reply(s, "555 5.5.4 RCPT parameters need EHLO");
        smtp_error(s);
        return;
    }
    for (size_t i = 0; i < c->nparams; i++) {
        const struct smtp_param *p = &c->params[i];
        if (smtp_slice_eq(p->key, "NOTIFY")) {
            if (smtp_param_notify(p->value, &r.notify) != 0) {
                smtp_reply(s, "501 5.5.4 Bad NOTIFY parameter");
                smtp_error(s);
                return;
            }
        } else if (smtp_slice_eq(p->key, "ORCPT")) {
            /* RFC 3461 §4.2: addr-type ";" xtext */
            if (p->value.len > SMTP_ORCPT_MAX ||
                smtp_param_orcpt_ok(p->value) != 0) {
                smtp_reply(s, "501 5.5.4 Bad ORCPT parameter");
                smtp_error(s);
                free(r.orcpt);
                return;
            }
            free(r.orcpt);
            r.orcpt = smtp_strndup(p->value.p, p->value.len);
            if (r.orcpt == NULL)
                goto nomem;
        } else {
            smtp_reply(s, "555 5.5.4 Unsupported parameter %.*s",
                       (int)(p->key.len > 32 ? 32 : p->key.len), p->key.p);
            smtp_error(s);
            free(r.orcpt);
            return;
        }
    }

    domain = smtp_path_domain(c->path.p, c->path.len, &dlen);
    if (domain == NULL) {
        /* RFC 5321 §4.1.1.3: "Postmaster" alone must be accepted. */
        if (smtp_slice_eq(c->path, "postmaster")) {
            postmaster = 1;
        } else {
            smtp_reply(s, "501 5.1.3 Recipient address needs a domain");
            smtp_error(s);
            free(r.orcpt);
            return;
        }
    }
    if (postmaster || node_config_local_domain(cfg, domain, dlen)) {
        size_t llen = postmaster ? c->path.len : c->path.len - dlen - 1;
        struct smtp_slice local = {c->path.p, llen};
        if (!s->trusted && s->auth_user == NULL && !postmaster &&
            (memchr(local.p, '%', llen) || memchr(local.p, '!', llen) ||
             memchr(local.p, '@', llen))) {
            /* Percent hack, bang path, a quoted address inside the local
               part: old relay tricks, never honoured for strangers. */
            log_info("event=smtp.relay_trick sid=%s addr=%s rcpt=<%.*s>",
                     s->sid, s->has_peer ? s->peer_ip : "unknown",
                     (int)c->path.len, c->path.p);
            smtp_reply(s, "554 5.7.1 <%.*s>: Relay access denied",
                       (int)c->path.len, c->path.p);
            s->n->stats.rcpt_rejected++;
            smtp_error(s);
            free(r.orcpt);
            return;
        }
        if (postmaster || smtp_slice_eq(local, "postmaster")) {
            /* RFC 5321 §4.5.1: postmaster is always accepted. */
            mailbox = cfg->postmaster;
        } else {
            struct smtp_user_probe pr = {0};
            char addr[STORE_ADDR_MAX];
            int rc;
            if (c->path.len >= sizeof(addr)) {
                smtp_reply(s, "501 5.1.3 Address too long");
                smtp_error(s);
                free(r.orcpt);
                return;
            }
            memcpy(addr, c->path.p, c->path.len);
            addr[c->path.len] = '\0';
            rc = store_addr_canon(addr, canon, sizeof(canon));
            if (rc == 0)
                rc = store_user_get(s->n->store, canon, smtp_user_found, &pr);
            if (rc == RM_E_NOTFOUND || (rc == 0 && !pr.found)) {
                smtp_reply(s,
                           "550 5.1.1 <%s>: Recipient address rejected: "
                           "User unknown in local recipient table",
                           addr);
                s->n->stats.rcpt_rejected++;
                smtp_error(s);
                free(r.orcpt);
                return;
            }
            if (rc != 0) {
                log_err("event=smtp.user_lookup_failed sid=%s err=\"%s\"",
                        s->sid, rm_strerror(rc));
                smtp_reply(s, "451 4.3.0 Temporary lookup failure");
                free(r.orcpt);
                return;
            }
            mailbox = canon;
        }
        r.route = STORE_ROUTE_LOCAL;
    } else if (mesh_route(s->n->mesh, c->path.p, c->path.len, &home) == 1) {
        /* Another office's domain: the mesh as a whole is its MX, so it
           is taken from anyone, for the users its home node announces
           (refused here, at RCPT, like an unknown local user). */
        if (!home.user_known) {
            smtp_reply(s,
                       "550 5.1.1 <%.*s>: Recipient address rejected: "
                       "User unknown in the mesh",
                       (int)c->path.len, c->path.p);
            s->n->stats.rcpt_rejected++;
            smtp_error(s);
            free(r.orcpt);
            return;
        }
        r.route = STORE_ROUTE_REMOTE;
    } else if (s->trusted || s->auth_user != NULL) {
        r.route = STORE_ROUTE_REMOTE;
    } else {
        smtp_reply(s, "554 5.7.1 <%.*s>: Relay access denied", (int)c->path.len,
                   c->path.p);
        s->n->stats.rcpt_rejected++;
        smtp_error(s);
        free(r.orcpt);
        return;
    }

    /* The same mailbox twice in one transaction is delivered once. */
    for (size_t i = 0; i < s->nrcpts; i++) {
        const struct smtp_rcpt *o = &s->rcpts[i];
        if (mailbox && o->mailbox && strcmp(o->mailbox, mailbox) == 0) {
            free(r.orcpt);
            smtp_reply(s, "250 2.1.5 Ok");
            return;
        }
    }
    if (s->nrcpts == s->rcap) {
        size_t ncap = s->rcap ? s->rcap * 2 : 4;
        struct smtp_rcpt *nr = realloc(s->rcpts, ncap * sizeof(*nr));
        if (nr == NULL)
            goto nomem;
        s->rcpts = nr;
        s->rcap = ncap;
    }
    r.addr = smtp_strndup(c->path.p, c->path.len);
    if (mailbox) {
        r.mailbox = strdup(mailbox);
        if (r.mailbox == NULL)
            goto nomem;
    }
    if (r.addr == NULL)
        goto nomem;
    s->rcpts[s->nrcpts++] = r;
    smtp_session_enter(s, SMTP_S_RCPT);
    smtp_reply(s, "250 2.1.5 Ok");
    return;

nomem:
    free(r.addr);
    free(r.mailbox);
    free(r.orcpt);
    smtp_reply(s, "451 4.3.0 Out of memory, try again later");
}

/* Our trace header, in front of the message (RFC 5321 §4.4). */
static int
smtp_begin_message(struct smtp_session *s)
{
    char proto[16];
    char extra[600] = "";
    char date[64];
    int r;

    store_qid_new(s->n->store, s->qid);
    /* The buffer may still hold an allocation from the last message. */
    buf_reset(&s->msg);
    s->msg.max = s->cfg->max_message_size + SMTP_TRACE_MAX;
    smtp_data_init(&s->ds);
    s->ds.max_line = s->cfg->max_text_line;
    s->ds.max_header = s->cfg->max_header_size;
    s->ds.max_size = s->cfg->max_message_size;
    s->ds.max_received = s->cfg->max_received;
    s->ds.normalise = s->cfg->bare_lf == NODE_BARE_NORMALISE;
    /* RFC 3848 protocol names (S: TLS, A: AUTH); RFC 6531 §3.7.3 for
       UTF8SMTP. */
    snprintf(proto, sizeof(proto), "%s%s%s",
             s->smtputf8 ? "UTF8SMTP"
             : s->esmtp  ? "ESMTP"
                         : "SMTP",
             s->tls ? "S" : "", s->auth_user ? "A" : "");
    if (s->tls)
        snprintf(extra, sizeof(extra),
                 "\r\n\t(using %s with cipher %s (%d bits))",
                 tls_conn_version(s->tls), tls_conn_cipher(s->tls),
                 tls_conn_bits(s->tls));
    if (s->auth_user)
        snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
                 "\r\n\t(Authenticated sender: %s)", s->auth_user);
    smtp_rfc5322_date(date, sizeof(date), time(NULL));
    if (s->nrcpts == 1)
        r = buf_appendf(&s->msg,
                        "Received: from %s (%s%s%s)\r\n\tby %s (relaymesh) "
                        "with %s id %s%s\r\n\tfor <%s>; %s\r\n",
                        s->helo, s->has_peer ? "[" : "",
                        s->has_peer ? s->peer_ip : "unknown",
                        s->has_peer ? "]" : "", s->cfg->hostname, proto, s->qid,
                        extra, s->rcpts[0].addr, date);
    else
        r = buf_appendf(&s->msg,
                        "Received: from %s (%s%s%s)\r\n\tby %s (relaymesh) "
                        "with %s id %s%s;\r\n\t%s\r\n",
                        s->helo, s->has_peer ? "[" : "",
                        s->has_peer ? s->peer_ip : "unknown",
                        s->has_peer ? "]" : "", s->cfg->hostname, proto, s->qid,
                        extra, date);
    s->trace_len = s->msg.len;
    s->data_started = 1;
    return r;
}

static int
smtp_msg_out(void *arg, const char *p, size_t len)
{
    struct smtp_session *s = arg;

    return buf_append(&s->msg, p, len);
}

static void
smtp_do_data(struct smtp_session *s, struct smtp_cmd *c)
{
    (void)c;
    if (smtp_begin_message(s) != 0) {
        smtp_reply(s, "451 4.3.0 Out of memory, try again later");
        smtp_txn_end(s);
        return;
    }
    smtp_session_enter(s, SMTP_S_DATA);
    smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void smtp_commit_done(void *arg, int status);

/* RFC 6409 §8.2, §8.3: a submitted message without Message-ID or Date
   gets them, after our Received header. */
static void
smtp_add_missing_headers(struct smtp_session *s)
{
    struct smtp_data_state *ds = &s->ds;
    char extra[SMTP_HDR_VALUE_MAX + 64], id[128], date[64];
    unsigned char rnd[8];
    int k = 0;

    if (ds->msgid[0] == '\0') {
        randombytes_buf(rnd, sizeof(rnd));
        snprintf(id, sizeof(id), "<%s.%02x%02x%02x%02x%02x%02x%02x%02x@%.60s>",
                 s->qid, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6],
                 rnd[7], s->cfg->hostname);
        k += snprintf(extra + k, sizeof(extra) - (size_t)k,
                      "Message-ID: %s\r\n", id);
        snprintf(ds->msgid, sizeof(ds->msgid), "%s", id);
    }
    if (ds->date[0] == '\0') {
        smtp_rfc5322_date(date, sizeof(date), time(NULL));
        k += snprintf(extra + k, sizeof(extra) - (size_t)k, "Date: %s\r\n",
                      date);
        snprintf(ds->date, sizeof(ds->date), "%s", date);
    }
    if (k == 0 || s->trace_len > s->msg.len)
        return;
    if (buf_reserve(&s->msg, (size_t)k + 1) != 0) {
        log_warn("event=smtp.header_not_added sid=%s qid=%s reason=size",
                 s->sid, s->qid);
        return;
    }
    memmove(s->msg.data + s->trace_len + k, s->msg.data + s->trace_len,
            s->msg.len - s->trace_len);
    memcpy(s->msg.data + s->trace_len, extra, (size_t)k);
    s->msg.len += (size_t)k;
    s->msg.data[s->msg.len] = '\0';
}

/* RFC 3463 §3.5, X.4.3 (a server the network needed to forward the
   message was unavailable): the mesh peers that were to hold the copies
   [mesh] ack_replicas asks for did not. Persistent transient: 451. */
#define SMTP_REPLY_UNREPLICATED                                                \
    "451 4.4.3 Not enough mesh replicas reachable to hold the message; try "   \
    "again later"

static int
smtp_has_remote(const struct smtp_session *s)
{
    for (size_t i = 0; i < s->nrcpts; i++)
        if (s->rcpts[i].route == STORE_ROUTE_REMOTE)
            return 1;
    return 0;
}

/* [mesh] ack_replicas: a message that will be replicated needs a wait
   before it is stored. 0 (go on), or answered (-1): the mesh cannot
   hold it now, so nothing is stored. */
static int
smtp_replwait_prepare(struct smtp_session *s)
{
    char why[160];

    s->rwait = NULL;
    if (s->cfg->mesh_ack_replicas == 0 || !smtp_has_remote(s))
        return 0;
    if (mesh_repl_wait_new(s->n->mesh, &s->rwait, why, sizeof(why)) == 0)
        return 0;
    s->n->stats.messages_rejected++;
    log_warn("event=smtp.reject_unreplicated sid=%s qid=%s need=%u "
             "why=\"%s\"",
             s->sid, s->qid, s->cfg->mesh_ack_replicas, why);
    smtp_reply(s, SMTP_REPLY_UNREPLICATED);
    smtp_txn_end(s);
    return -1;
}

/* The message is complete: judge it, then hand it to the store. The reply
   is sent from smtp_commit_done() (durability before 250) or, with
   [mesh] ack_replicas, from smtp_replicated(). */
static void
smtp_end_message(struct smtp_session *s)
{
    struct smtp_data_state *ds = &s->ds;
    int rc;

    if (!smtp_data_ok(ds)) {
        s->n->stats.messages_rejected++;
        switch (ds->error) {
        case SMTP_DERR_BARE_CR:
        case SMTP_DERR_BARE_LF:
            /* RFC 5321 §2.3.8: CR and LF only as CRLF (SMTP smuggling). */
            smtp_reply(s,
                       "550 5.6.0 Message contains bare %s; use CRLF "
                       "line ends",
                       ds->error == SMTP_DERR_BARE_CR ? "CR" : "LF");
            break;
        case SMTP_DERR_LINE_TOOLONG:
            smtp_reply(s,
                       "500 5.5.2 Message text line longer than %zu "
                       "bytes (RFC 5321 4.5.3.1.6)",
                       s->cfg->max_text_line);
            break;
        case SMTP_DERR_HDR_TOOBIG:
            smtp_reply(s,
                       "552 5.3.4 Message header exceeds limit of %zu "
                       "bytes",
                       s->cfg->max_header_size);
            break;
        case SMTP_DERR_TOOBIG:
            smtp_reply(s,
                       "552 5.3.4 Message size exceeds fixed limit of "
                       "%" PRIu64 " bytes",
                       s->cfg->max_message_size);
            break;
        case SMTP_DERR_LOOP:
            smtp_reply(s,
                       "554 5.4.6 Too many hops: more than %u Received "
                       "headers (mail loop?)",
                       s->cfg->max_received);
            break;
        case SMTP_DERR_8BIT:
        case SMTP_DERR_NONE:
            /* cb_error: our buffer refused the bytes. */
            if (ds->cb_error == RM_E_TOOBIG)
                smtp_reply(s,
                           "552 5.3.4 Message size exceeds fixed limit "
                           "of %" PRIu64 " bytes",
                           s->cfg->max_message_size);
            else
                smtp_reply(s, "451 4.3.0 Out of memory, try again later");
            break;
        }
        log_info("event=smtp.reject_message sid=%s qid=%s err=%d", s->sid,
                 s->qid, (int)ds->error);
        smtp_error(s);
        if (!s->closing)
            smtp_txn_end(s);
        return;
    }

    if (s->auth_user != NULL)
        smtp_add_missing_headers(s);
    s->srcpts = calloc(s->nrcpts, sizeof(*s->srcpts));
    if (s->srcpts == NULL) {
        smtp_reply(s, "451 4.3.0 Out of memory, try again later");
        smtp_txn_end(s);
        return;
    }
    for (size_t i = 0; i < s->nrcpts; i++) {
        s->srcpts[i].addr = s->rcpts[i].addr;
        s->srcpts[i].mailbox = s->rcpts[i].mailbox;
        s->srcpts[i].orcpt = s->rcpts[i].orcpt;
        s->srcpts[i].notify = s->rcpts[i].notify;
        s->srcpts[i].route = s->rcpts[i].route;
    }
    memset(&s->sm, 0, sizeof(s->sm));
    memcpy(s->sm.qid, s->qid, sizeof(s->sm.qid));
    s->sm.mail_from = s->mail_from;
    s->sm.envid = s->envid;
    s->sm.ret = s->ret;
    s->sm.body_type = s->body;
    s->sm.smtputf8 = s->smtputf8;
    s->sm.arrival = (int64_t)time(NULL);
    s->sm.client = s->helo;
    s->sm.hdr_from = ds->from;
    s->sm.hdr_subject = ds->subject;
    s->sm.hdr_msgid = ds->msgid;
    s->sm.hdr_date = ds->date;
    s->sm.rcpts = s->srcpts;
    s->sm.nrcpts = s->nrcpts;
    s->sm.data = s->msg.data;
    s->sm.len = s->msg.len;
    if (smtp_replwait_prepare(s) != 0)
        return;
    rc = store_msg_accept(s->n->store, &s->sm, smtp_commit_done, s);
    if (rc != 0) {
        mesh_repl_wait_cancel(s->rwait);
        s->rwait = NULL;
        log_err("event=smtp.store_submit_failed sid=%s qid=%s err=\"%s\"",
                s->sid, s->qid, rm_strerror(rc));
        smtp_reply(s, "451 4.3.0 Local error in processing, try again "
                      "later");
        smtp_txn_end(s);
        return;
    }
    s->store_pending = 1;
    smtp_session_enter(s, SMTP_S_COMMIT);
}

/* The message is ours: hand it on and say so. replicated: its replicas
   acknowledged it already ([mesh] ack_replicas). */
static void
smtp_accepted(struct smtp_session *s, int replicated)
{
    struct node *n = s->n;
    uint32_t local[64];
    size_t nl = 0;

    n->stats.messages_accepted++;
    n->stats.recipients_accepted += s->nrcpts;
    s->msgs++;
    s->junk = 0;
    log_info("event=smtp.accept sid=%s qid=%s from=<%s> rcpts=%zu "
             "size=%zu",
             s->sid, s->qid, s->mail_from, s->nrcpts, s->msg.len);
    /* Hand local recipients to the queue manager whatever happens to
       the connection now: the message is durable. */
    for (size_t i = 0; i < s->nrcpts; i++) {
        if (s->rcpts[i].route != STORE_ROUTE_LOCAL)
            continue;
        local[nl++] = (uint32_t)i;
        if (nl == sizeof(local) / sizeof(local[0])) {
            if (n->queue)
                node_queue_local(n->queue, s->qid, local, nl);
            nl = 0;
        }
    }
    if (nl && n->queue)
        node_queue_local(n->queue, s->qid, local, nl);
    if (smtp_has_remote(s)) {
        if (replicated)
            node_queue_outbound(n->queue, s->qid);
        else
            node_queue_remote(n->queue, s->qid);
    }
    if (!s->closing)
        smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->qid);
}

/* The transaction is answered: on to the next command, or to the close
   that was asked for meanwhile. */
static void
smtp_txn_finish(struct smtp_session *s)
{
    if (s->closing) {
        smtp_txn_reset(s);
        /* The connection went while we committed: finish tearing down. */
        smtp_session_close(s, s->close_reason);
        return;
    }
    smtp_txn_end(s);
    if (s->draining) {
        smtp_reply(s, "421 4.3.2 %s Service shutting down", s->cfg->hostname);
        smtp_session_close(s, "shutdown");
        smtp_flush(s);
        return;
    }
    /* Pipelined commands may be waiting. */
    smtp_session_process(s);
}

/* [mesh] ack_replicas decided (mesh_repl.h). Never called once the
   session closed: closing cancels the wait, which withdraws the
   message. */
static void
smtp_replicated(void *arg, int status)
{
    struct smtp_session *s = arg;

    s->rwait = NULL;
    if (status == 0) {
        smtp_accepted(s, 1);
    } else {
        s->n->stats.messages_rejected++;
        log_warn("event=smtp.reject_unreplicated sid=%s qid=%s why=\"%s\"",
                 s->sid, s->qid,
                 status == RM_E_AGAIN
                     ? "not enough replicas acknowledged in time; withdrawn"
                     : rm_strerror(status));
        smtp_reply(s, SMTP_REPLY_UNREPLICATED);
    }
    smtp_txn_finish(s);
}

static void
smtp_commit_done(void *arg, int status)
{
    struct smtp_session *s = arg;
    struct node *n = s->n;
    struct mesh_repl_wait *w = s->rwait;

    s->store_pending = 0;
    if (status == 0 && w != NULL && !s->closing) {
        /* Durable here; the 250 waits for the replicas. */
        smtp_session_enter(s, SMTP_S_REPLWAIT);
        mesh_repl_wait_start(w, s->qid, smtp_replicated, s);
        return; /* smtp_replicated() may have run already */
    }
    if (status == 0 && w != NULL) {
        /* The client went before it could hear 250: nothing is kept. */
        s->rwait = NULL;
        log_info("event=smtp.withdraw sid=%s qid=%s why=\"client gone "
                 "before the replicas answered\"",
                 s->sid, s->qid);
        mesh_repl_wait_start(w, s->qid, NULL, NULL);
        mesh_repl_wait_cancel(w);
    } else if (status == 0) {
        smtp_accepted(s, 0);
    } else {
        mesh_repl_wait_cancel(w);
        s->rwait = NULL;
        n->stats.messages_rejected++;
        if (status == RM_E_FULL) {
            n->stats.store_full++;
            log_warn("event=smtp.store_full sid=%s qid=%s", s->sid, s->qid);
            if (!s->closing)
                smtp_reply(s, "452 4.3.1 Insufficient system storage");
        } else {
            log_err("event=smtp.commit_failed sid=%s qid=%s err=\"%s\"", s->sid,
                    s->qid, rm_strerror(status));
            if (!s->closing)
                smtp_reply(s, "451 4.3.0 Local error in processing, try "
                              "again later");
        }
    }
    smtp_txn_finish(s);
}

static void
smtp_do_bdat(struct smtp_session *s, struct smtp_cmd *c)
{
    uint64_t size;
    int last;

    /* RFC 3030 §2 / §4: BDAT size [LAST]. */
    if (smtp_bdat_arg(c->arg, &size, &last) != 0) {
        smtp_reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
        smtp_error(s);
        return;
    }
    s->bdat_left = size;
    s->bdat_last = last;
    s->bdat_discard = 0;
    s->bdat_reply = NULL;
    if (s->state != SMTP_S_RCPT && s->state != SMTP_S_CHUNKING) {
        /* The chunk's bytes must still be read and dropped, or they
           would be taken for commands. */
        s->bdat_discard = 1;
        s->bdat_return = s->state;
        s->bdat_reply = s->state == SMTP_S_MAIL || s->state == SMTP_S_READY ||
                                s->state == SMTP_S_INIT
                            ? "503 5.5.1 Error: need RCPT command"
                            : "503 5.5.1 Error: bad sequence of commands";
    } else if (!s->data_started) {
        if (smtp_begin_message(s) != 0) {
            s->bdat_discard = 1;
            s->bdat_return = SMTP_S_READY;
            s->bdat_reply = "451 4.3.0 Out of memory, try again later";
            smtp_txn_reset(s);
        }
    }
    smtp_session_enter(s, SMTP_S_BDAT);
}

static void
smtp_bdat_chunk_done(struct smtp_session *s)
{
    if (s->bdat_discard) {
        smtp_session_enter(s, s->bdat_return);
        smtp_reply(s, "%s", s->bdat_reply);
        smtp_error(s);
        return;
    }
    if (!smtp_data_ok(&s->ds)) {
        /* RFC 3030 §2: a failed chunk fails the transaction. */
        smtp_end_message(s);
        return;
    }
    if (!s->bdat_last) {
        smtp_session_enter(s, SMTP_S_CHUNKING);
        smtp_reply(s, "250 2.0.0 %" PRIu64 " bytes received", s->ds.size);
        return;
    }
    /* A CR held back at the very end of the last chunk is bare. */
    smtp_bdat_end(&s->ds, smtp_msg_out, s);
    smtp_end_message(s);
}

static void
smtp_do_rset(struct smtp_session *s, struct smtp_cmd *c)
{
    (void)c;
    smtp_txn_reset(s);
    if (s->state != SMTP_S_INIT)
        smtp_session_enter(s, SMTP_S_READY);
    smtp_reply(s, "250 2.0.0 Ok");
}

static void
smtp_do_noop(struct smtp_session *s, struct smtp_cmd *c)
{
    (void)c;
    smtp_reply(s, "250 2.0.0 Ok");
}

static void
smtp_do_vrfy(struct smtp_session *s, struct smtp_cmd *c)
{
    (void)c;
    /* RFC 5321 §3.5.3: 252 when we will not verify but will accept. */
    smtp_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message "
                  "and attempt delivery");
}

static void
smtp_do_expn(struct smtp_session *s, struct smtp_cmd *c)
{
    (void)c;
    smtp_reply(s, "502 5.5.1 EXPN not available");
}

static void
smtp_do_help(struct smtp_session *s, struct smtp_cmd *c)
{
    (void)c;
    smtp_reply(s, "214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET");
    smtp_reply(s, "214-2.0.0 NOOP VRFY HELP QUIT");
    smtp_reply(s, "214 2.0.0 See RFC 5321");
}

static void
smtp_do_quit(struct smtp_session *s, struct smtp_cmd *c)
{
    (void)c;
    smtp_reply(s, "221 2.0.0 %s closing connection", s->cfg->hostname);
    smtp_session_close(s, "quit");
}

/* ---- STARTTLS (RFC 3207) ------------------------------------------------ */

static void
smtp_do_starttls(struct smtp_session *s, struct smtp_cmd *c)
{
    if (s->tls != NULL) {
        smtp_reply(s, "503 5.5.1 Error: TLS already active");
        smtp_error(s);
        return;
    }
    if (s->n->tls == NULL) {
        smtp_reply(s, "454 4.7.0 TLS not available");
        return;
    }
    if (c->arg.len != 0) {
        smtp_reply(s, "501 5.5.4 Syntax: STARTTLS");
        smtp_error(s);
        return;
    }
    smtp_reply(s, "220 2.0.0 Ready to start TLS");
    s->tls_starting = 1; /* smtp_session_process() switches after this */
}

/* The 220 goes out in plaintext; every byte after it is TLS. */
static void
smtp_start_tls(struct smtp_session *s)
{
    s->tls_starting = 0;
    smtp_flush(s);
    if (s->closing)
        return;
    s->tls = tls_conn_server(s->n->tls);
    if (s->tls == NULL) {
        smtp_session_close(s, "out of memory");
        return;
    }
    smtp_session_enter(s, SMTP_S_TLS);
}

/* ---- AUTH (RFC 4954) ---------------------------------------------------- */

struct smtp_auth_work {
    uv_work_t req;
    struct smtp_session *s;
    char login[STORE_ADDR_MAX];
    char hash[STORE_PWHASH_MAX];
    char pass[SMTP_AUTH_PASS_MAX + 1];
    size_t passlen;
    int skip; /* locked out: check against the dummy, then fail */
    int ok;
    uint64_t gen; /* auth_cache generation when the check started */
};

static char smtp_dummy_hash[STORE_PWHASH_MAX];
static uv_once_t smtp_dummy_once = UV_ONCE_INIT;

/* A hash no password matches, so that an unknown user costs the same
   argon2id work as a known one (no timing oracle). */
static void
smtp_dummy_init(void)
{
    unsigned char pw[32];

    randombytes_buf(pw, sizeof(pw));
    if (store_pw_hash((const char *)pw, sizeof(pw), smtp_dummy_hash) != 0)
        smtp_dummy_hash[0] = '\0';
    sodium_memzero(pw, sizeof(pw));
}

static void
smtp_auth_work_cb(uv_work_t *req)
{
    struct smtp_auth_work *w = req->data;
    int real = !w->skip && w->hash[0] != '\0';

    uv_once(&smtp_dummy_once, smtp_dummy_init);
    if (real) {
        w->ok = store_pw_verify(w->hash, w->pass, w->passlen) == 0;
    } else {
        if (smtp_dummy_hash[0] != '\0')
            (void)store_pw_verify(smtp_dummy_hash, w->pass, w->passlen);
        w->ok = 0;
    }
}

static void
smtp_auth_reset(struct smtp_session *s)
{
    s->auth_mech = SMTP_AUTH_MECH_NONE;
    sodium_memzero(s->auth_login, sizeof(s->auth_login));
}

static void
smtp_rl_key(struct smtp_session *s, char *key, size_t keysz, char kind,
            const char *v)
{
    snprintf(key, keysz, "%c:%.320s", kind, v);
    (void)s;
}

/* After a failure's delay: send the held reply, maybe close. */
static void
smtp_auth_finish(struct smtp_session *s)
{
    s->auth_delayed = 0;
    smtp_reply(s, "%s", s->auth_reply);
    if (s->auth_close) {
        smtp_reply(s,
                   "421 4.7.0 %s Error: too many failed logins, try again "
                   "later",
                   s->cfg->hostname);
        smtp_session_close(s, "too many failed logins");
        smtp_flush(s);
        return;
    }
    smtp_session_enter(s, SMTP_S_READY);
    smtp_session_process(s);
}

static void smtp_timer_cb(uv_timer_t *t);

/* The password matched (cached: no hash was computed). The caller goes
   on with the input. */
static void
smtp_auth_success(struct smtp_session *s, const char *login, int cached)
{
    s->auth_user = strdup(login);
    smtp_session_enter(s, SMTP_S_READY);
    if (s->auth_user == NULL) {
        smtp_reply(s, "454 4.7.0 Temporary authentication failure");
        return;
    }
    s->n->stats.auth_ok++;
    log_info("event=smtp.auth sid=%s addr=%s user=%s tls=%d cached=%d", s->sid,
             s->has_peer ? s->peer_ip : "unknown", s->auth_user, s->tls != NULL,
             cached);
    smtp_reply(s, "235 2.7.0 Authentication successful");
}

static void
smtp_auth_after_cb(uv_work_t *req, int status)
{
    struct smtp_auth_work *w = req->data;
    struct smtp_session *s = w->s;
    const struct node_config *cfg = s->cfg;
    uint64_t now = uv_now(s->n->loop);
    char key[RL_KEY_MAX];
    unsigned nip = 0, nuser = 0, n;
    uint64_t delay;

    s->work_pending = 0;
    if (status != 0)
        w->ok = 0;
    if (s->closing || !w->ok)
        sodium_memzero(w->pass, sizeof(w->pass));
    if (s->closing) {
        /* A failure still counts when the client hung up during the
           check: otherwise hanging up would be a way to guess for free. */
        if (!w->ok && s->n->rl) {
            s->n->stats.auth_failed++;
            if (s->has_peer) {
                smtp_rl_key(s, key, sizeof(key), 'a', s->peer_ip);
                rl_add(s->n->rl, key, now, cfg->auth_fail_window);
            }
            smtp_rl_key(s, key, sizeof(key), 'u', w->login);
            rl_add(s->n->rl, key, now, cfg->auth_fail_window);
            log_warn("event=smtp.auth_failed sid=%s addr=%s user=\"%.100s\" "
                     "msg=\"client left during the check\"",
                     s->sid, s->has_peer ? s->peer_ip : "unknown", w->login);
        }
        free(w);
        smtp_session_close(s, s->close_reason);
        return;
    }
    if (w->ok) {
        auth_cache_put(s->n->auth, w->login, w->pass, w->passlen, now, w->gen);
        sodium_memzero(w->pass, sizeof(w->pass));
        smtp_auth_success(s, w->login, 0);
        free(w);
        smtp_session_process(s);
        return;
    }
    s->n->stats.auth_failed++;
    if (s->n->rl) {
        if (s->has_peer) {
            smtp_rl_key(s, key, sizeof(key), 'a', s->peer_ip);
            nip = rl_add(s->n->rl, key, now, cfg->auth_fail_window);
        }
        smtp_rl_key(s, key, sizeof(key), 'u', w->login);
        nuser = rl_add(s->n->rl, key, now, cfg->auth_fail_window);
    }
    log_warn("event=smtp.auth_failed sid=%s addr=%s user=\"%.100s\" "
             "failures_ip=%u failures_user=%u",
             s->sid, s->has_peer ? s->peer_ip : "unknown", w->login, nip,
             nuser);
    free(w);
    snprintf(s->auth_reply, sizeof(s->auth_reply),
             "535 5.7.8 Authentication credentials invalid");
    if (nip >= cfg->auth_max_fail_ip) {
        s->n->stats.ratelimited++;
        log_warn("event=ratelimit kind=auth_failures_ip sid=%s addr=%s "
                 "limit=%u window=%us",
                 s->sid, s->peer_ip, cfg->auth_max_fail_ip,
                 cfg->auth_fail_window);
        s->auth_close = 1;
    }
    /* Each failure counted for this address or this name doubles the
       wait before the answer, up to fail_delay_max. */
    n = nip > nuser ? nip : nuser;
    delay = cfg->auth_fail_delay;
    for (unsigned i = 1; i < n && delay < cfg->auth_fail_delay_max; i++)
        delay *= 2;
    if (delay > cfg->auth_fail_delay_max)
        delay = cfg->auth_fail_delay_max;
    if (delay == 0) {
        smtp_auth_finish(s);
        return;
    }
    s->auth_delayed = 1;
    uv_timer_start(&s->timer, smtp_timer_cb, delay * 1000, 0);
}

/* Check user / password off the loop (argon2id takes ~0.1 s). */
static void
smtp_auth_check(struct smtp_session *s, const char *user, const char *pass,
                size_t passlen)
{
    struct smtp_auth_work *w = calloc(1, sizeof(*w));
    char key[RL_KEY_MAX];
    int r;

    smtp_auth_reset(s);
    if (w == NULL) {
        smtp_reply(s, "454 4.7.0 Temporary authentication failure");
        smtp_session_enter(s, SMTP_S_READY);
        return;
    }
    w->s = s;
    w->req.data = w;
    if (store_addr_canon(user, w->login, sizeof(w->login)) != 0)
        snprintf(w->login, sizeof(w->login), "%s", user);
    memcpy(w->pass, pass, passlen);
    w->passlen = passlen;
    smtp_rl_key(s, key, sizeof(key), 'u', w->login);
    if (s->n->rl &&
        rl_count(s->n->rl, key, uv_now(s->n->loop), s->cfg->auth_fail_window) >=
            s->cfg->auth_max_fail_user) {
        /* Locked: the same reply and the same work as a wrong password. */
        w->skip = 1;
        log_warn(
            "event=ratelimit kind=auth_failures_user sid=%s user=\"%.100s\" "
            "limit=%u",
            s->sid, w->login, s->cfg->auth_max_fail_user);
    } else if (auth_cache_check(s->n->auth, w->login, w->pass, w->passlen,
                                uv_now(s->n->loop))) {
        smtp_auth_success(s, w->login, 1);
        sodium_memzero(w, sizeof(*w));
        free(w);
        return;
    } else {
        struct smtp_user_hash uh = {w->hash, sizeof(w->hash)};
        r = store_user_get(s->n->store, w->login, smtp_user_hash_cb, &uh);
        if (r != 0 && r != RM_E_NOTFOUND)
            log_err("event=smtp.user_lookup_failed sid=%s err=\"%s\"", s->sid,
                    rm_strerror(r));
    }
    w->gen = auth_cache_gen(s->n->auth);
    r = uv_queue_work(s->n->loop, &w->req, smtp_auth_work_cb,
                      smtp_auth_after_cb);
    if (r != 0) {
        sodium_memzero(w, sizeof(*w));
        free(w);
        smtp_reply(s, "454 4.7.0 Temporary authentication failure");
        smtp_session_enter(s, SMTP_S_READY);
        return;
    }
    s->work_pending = 1;
    smtp_session_enter(s, SMTP_S_AUTHWAIT);
}

/* One client response of the exchange (or the initial response). */
static void
smtp_auth_response(struct smtp_session *s, const char *p, size_t len)
{
    static char dec[SMTP_AUTH_LINE_MAX];
    struct smtp_auth_cred cr;
    size_t n = 0;
    enum smtp_auth_err e;

    if (smtp_auth_b64(p, len, dec, sizeof(dec), &n) != SMTP_AUTH_OK) {
        sodium_memzero(dec, sizeof(dec));
        smtp_auth_reset(s);
        smtp_session_enter(s, SMTP_S_READY);
        smtp_reply(s, "501 5.5.2 Cannot decode response (base64 expected)");
        smtp_error(s);
        return;
    }
    switch (s->auth_mech) {
    case SMTP_AUTH_MECH_PLAIN:
        e = smtp_auth_plain(dec, n, &cr);
        sodium_memzero(dec, n);
        if (e == SMTP_AUTH_FORM) {
            smtp_auth_reset(s);
            smtp_session_enter(s, SMTP_S_READY);
            smtp_reply(s, "501 5.5.2 Malformed PLAIN response");
            smtp_error(s);
            return;
        }
        if (e != SMTP_AUTH_OK) {
            /* Too long, or another authorization identity: a failed
               login like any other. */
            smtp_auth_check(s, cr.user[0] ? cr.user : "-", "", 0);
            return;
        }
        smtp_auth_check(s, cr.user, cr.pass, cr.passlen);
        sodium_memzero(&cr, sizeof(cr));
        return;
    case SMTP_AUTH_MECH_LOGIN:
        if (smtp_auth_field(dec, n, s->auth_login, SMTP_AUTH_ID_MAX, NULL) !=
            SMTP_AUTH_OK)
            snprintf(s->auth_login, sizeof(s->auth_login), "-");
        sodium_memzero(dec, n);
        s->auth_mech = SMTP_AUTH_MECH_LOGIN + 1; /* now the password */
        smtp_session_enter(s, SMTP_S_AUTH);
        smtp_reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
        return;
    default: {
        char user[SMTP_AUTH_ID_MAX + 1];
        char pass[SMTP_AUTH_PASS_MAX + 1];
        size_t plen = 0;
        snprintf(user, sizeof(user), "%s", s->auth_login);
        if (smtp_auth_field(dec, n, pass, SMTP_AUTH_PASS_MAX, &plen) !=
            SMTP_AUTH_OK)
            plen = 0;
        sodium_memzero(dec, n);
        smtp_auth_check(s, user, pass, plen);
        sodium_memzero(pass, sizeof(pass));
        return;
    }
    }
}

static void
smtp_auth_line(struct smtp_session *s, const char *line, size_t len)
{
    if (len == 1 && line[0] == '*') {
        /* RFC 4954 §4: the client cancels. */
        smtp_auth_reset(s);
        smtp_session_enter(s, SMTP_S_READY);
        smtp_reply(s, "501 5.0.0 Authentication cancelled");
        return;
    }
    smtp_auth_response(s, line, len);
}

static void
smtp_do_auth(struct smtp_session *s, struct smtp_cmd *c)
{
    const char *a = c->arg.p, *sp, *ir = NULL;
    size_t alen = c->arg.len, mlen, irlen = 0;
    char key[RL_KEY_MAX];

    if (s->auth_user != NULL) {
        smtp_reply(s, "503 5.5.1 Error: already authenticated");
        smtp_error(s);
        return;
    }
    if (!s->esmtp) {
        smtp_reply(s, "503 5.5.1 Error: send EHLO first");
        smtp_error(s);
        return;
    }
    if (s->tls == NULL && !s->plain_auth_ok) {
        smtp_reply(s, "538 5.7.11 Encryption required for requested "
                      "authentication mechanism");
        smtp_error(s);
        return;
    }
    if (s->n->rl && s->has_peer) {
        smtp_rl_key(s, key, sizeof(key), 'a', s->peer_ip);
        if (rl_count(s->n->rl, key, uv_now(s->n->loop),
                     s->cfg->auth_fail_window) >= s->cfg->auth_max_fail_ip) {
            s->n->stats.ratelimited++;
            log_warn("event=ratelimit kind=auth_failures_ip sid=%s addr=%s "
                     "limit=%u",
                     s->sid, s->peer_ip, s->cfg->auth_max_fail_ip);
            smtp_reply(s,
                       "421 4.7.0 %s Error: too many failed logins from %s, "
                       "try again later",
                       s->cfg->hostname, s->peer_ip);
            smtp_session_close(s, "too many failed logins");
            return;
        }
    }
    if (alen == 0) {
        smtp_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        smtp_error(s);
        return;
    }
    sp = memchr(a, ' ', alen);
    mlen = sp ? (size_t)(sp - a) : alen;
    if (sp) {
        ir = sp + 1;
        irlen = alen - mlen - 1;
    }
    if (mlen == 5 && strncasecmp(a, "PLAIN", 5) == 0) {
        s->auth_mech = SMTP_AUTH_MECH_PLAIN;
        if (ir) {
            smtp_auth_response(s, ir, irlen);
            return;
        }
        smtp_session_enter(s, SMTP_S_AUTH);
        smtp_reply(s, "334 ");
    } else if (mlen == 5 && strncasecmp(a, "LOGIN", 5) == 0) {
        s->auth_mech = SMTP_AUTH_MECH_LOGIN;
        s->auth_login[0] = '\0';
        if (ir) {
            smtp_auth_response(s, ir, irlen);
            return;
        }
        smtp_session_enter(s, SMTP_S_AUTH);
        smtp_reply(s, "334 VXNlcm5hbWU6"); /* "Username:" */
    } else {
        smtp_reply(s, "504 5.5.4 Unrecognized authentication type");
        smtp_error(s);
    }
}

#define ST_SESSION (ST(INIT) | ST(READY) | ST(MAIL) | ST(RCPT) | ST(CHUNKING))

static const struct smtp_cmd_def smtp_cmds[] = {
    {SMTP_V_HELO, ST_SESSION, 0, smtp_do_helo, NULL},
    {SMTP_V_EHLO, ST_SESSION, 0, smtp_do_helo, NULL},
    {SMTP_V_MAIL, ST(READY), 0, smtp_do_mail,
     "503 5.5.1 Error: nested MAIL command"},
    {SMTP_V_RCPT, ST(MAIL) | ST(RCPT), 0, smtp_do_rcpt,
     "503 5.5.1 Error: need MAIL command"},
    {SMTP_V_DATA, ST(RCPT), SMTP_CF_NOARG, smtp_do_data,
     "503 5.5.1 Error: need RCPT command"},
    {SMTP_V_BDAT, ST_SESSION, 0, smtp_do_bdat, NULL},
    {SMTP_V_RSET, ST_SESSION, SMTP_CF_NOARG | SMTP_CF_JUNK, smtp_do_rset, NULL},
    {SMTP_V_NOOP, ST_SESSION, SMTP_CF_JUNK, smtp_do_noop, NULL},
    {SMTP_V_VRFY, ST_SESSION, SMTP_CF_JUNK, smtp_do_vrfy, NULL},
    {SMTP_V_EXPN, ST_SESSION, SMTP_CF_JUNK, smtp_do_expn, NULL},
    {SMTP_V_HELP, ST_SESSION, SMTP_CF_JUNK, smtp_do_help, NULL},
    {SMTP_V_QUIT, ST_SESSION, SMTP_CF_NOARG, smtp_do_quit, NULL},
    {SMTP_V_STARTTLS, ST(INIT) | ST(READY), 0, smtp_do_starttls,
     "503 5.5.1 Error: STARTTLS not allowed in a transaction"},
    {SMTP_V_AUTH, ST(READY), 0, smtp_do_auth,
     "503 5.5.1 Error: AUTH not allowed in a transaction"},
};

static const struct smtp_cmd_def *
smtp_cmd_lookup(enum smtp_verb v)
{
    for (size_t i = 0; i < sizeof(smtp_cmds) / sizeof(smtp_cmds[0]); i++) {
        if (smtp_cmds[i].verb == v)
            return &smtp_cmds[i];
    }
    return NULL;
}

static void
smtp_reply_perr(struct smtp_session *s, enum smtp_verb v, enum smtp_perr e)
{
    const char *what = v == SMTP_V_MAIL ? "sender" : "recipient";

    switch (e) {
    case SMTP_PERR_OK:
        return;
    case SMTP_PERR_SYNTAX:
        if (v == SMTP_V_MAIL)
            smtp_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
        else if (v == SMTP_V_RCPT)
            smtp_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
        else
            smtp_reply(s, "501 5.5.4 Syntax error in parameters");
        break;
    case SMTP_PERR_PATH:
        smtp_reply(s, "501 5.1.%d Bad %s address syntax",
                   v == SMTP_V_MAIL ? 7 : 3, what);
        break;
    case SMTP_PERR_PATH_TOOLONG:
        /* RFC 5321 §4.5.3.1.1-3 */
        smtp_reply(s, "501 5.1.%d %s address too long",
                   v == SMTP_V_MAIL ? 7 : 3,
                   v == SMTP_V_MAIL ? "Sender" : "Recipient");
        break;
    case SMTP_PERR_PARAM:
        smtp_reply(s, "555 5.5.4 Malformed parameter");
        break;
    case SMTP_PERR_PARAM_DUP:
        smtp_reply(s, "555 5.5.4 Parameter given twice");
        break;
    case SMTP_PERR_TOOMANY:
        smtp_reply(s, "555 5.5.4 Too many parameters");
        break;
    case SMTP_PERR_UTF8:
        smtp_reply(s, "553 5.6.7 UTF-8 address needs SMTPUTF8");
        break;
    }
    smtp_error(s);
}

static void
smtp_handle_line(struct smtp_session *s, const char *line, size_t len)
{
    struct smtp_cmd c;
    const struct smtp_cmd_def *def;
    enum smtp_perr pe;

    /* The tokenizer admits AUTH's longer lines (RFC 4954 §4); every
       other command keeps the §4.5.3.1.4 limit. */
    if (len + 2 > s->cfg->max_command_line &&
        !(len > 5 && strncasecmp(line, "AUTH ", 5) == 0)) {
        smtp_reply(s, "500 5.5.2 Error: command line longer than %zu bytes",
                   s->cfg->max_command_line);
        smtp_error(s);
        return;
    }
    /* SMTPUTF8 addresses are judged against the MAIL parameter by the
       handlers, so the parser may accept UTF-8 whenever EHLO was used. */
    pe = smtp_cmd_parse(line, len, s->esmtp, &c);
    def = smtp_cmd_lookup(c.verb);
    if (def == NULL) {
        smtp_reply(s, "500 5.5.2 Error: command not recognized");
        smtp_error(s);
        return;
    }
    log_debug("event=smtp.cmd sid=%s verb=%s state=%s", s->sid,
              smtp_verb_name(c.verb), smtp_state_names[s->state]);
    if (def->flags & SMTP_CF_JUNK) {
        if (++s->junk > SMTP_JUNK_MAX) {
            smtp_reply(s,
                       "421 4.7.0 %s Error: too many commands without "
                       "mail",
                       s->cfg->hostname);
            smtp_session_close(s, "junk commands");
            return;
        }
    }
    if (!(def->states & (1u << s->state))) {
        if (s->state == SMTP_S_INIT &&
            (c.verb == SMTP_V_MAIL || c.verb == SMTP_V_RCPT ||
             c.verb == SMTP_V_DATA))
            smtp_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
        else if (def->bad_seq)
            smtp_reply(s, "%s", def->bad_seq);
        else
            smtp_reply(s, "503 5.5.1 Error: bad sequence of commands");
        smtp_error(s);
        return;
    }
    if (pe != SMTP_PERR_OK) {
        smtp_reply_perr(s, c.verb, pe);
        return;
    }
    if ((def->flags & SMTP_CF_NOARG) && c.arg.len != 0) {
        smtp_reply(s, "501 5.5.4 Syntax: %s takes no argument",
                   smtp_verb_name(c.verb));
        smtp_error(s);
        return;
    }
    def->proceed(s, &c);
}

/* ---- input ------------------------------------------------------------ */

/* A whole command line arrived: the client has until timeout_command for
   the next one. Partial input never extends the deadline, so a client
   that trickles a line byte by byte is cut (slowloris). */
static void
smtp_command_done(struct smtp_session *s)
{
    if (s->closing)
        return;
    if ((ST(INIT) | ST(READY) | ST(MAIL) | ST(RCPT) | ST(CHUNKING)) &
        (1u << s->state))
        smtp_deadline_set(s, s->cfg->timeout_command);
}

/* Message content arrived: like Postfix's smtpd_min_data_rate, each byte
   buys 1/min_data_rate seconds, never past timeout_data from now. */
static void
smtp_data_progress(struct smtp_session *s, size_t nread)
{
    uint64_t now = uv_now(s->n->loop);
    uint64_t cap = now + (uint64_t)s->cfg->timeout_data * 1000;

    if (s->cfg->min_data_rate == 0) {
        s->deadline = cap;
        return;
    }
    s->deadline += (uint64_t)nread * 1000 / s->cfg->min_data_rate;
    if (s->deadline > cap)
        s->deadline = cap;
}

static int smtp_tls_pull(struct smtp_session *s);

/* Execute what the input buffer holds, as far as the state allows. */
static void
smtp_session_consume(struct smtp_session *s)
{
    size_t off = 0;

    while (!s->closing && s->state != SMTP_S_COMMIT &&
           s->state != SMTP_S_REPLWAIT && s->state != SMTP_S_TLS &&
           s->state != SMTP_S_AUTHWAIT && s->wpending < SMTP_WPENDING_MAX) {
        const char *p = s->in.data + off;
        size_t avail = s->in.len - off;
        size_t used = 0;
        struct smtp_slice line;

        if (s->out.len > SMTP_OUT_MAX - SMTP_OUT_ROOM) {
            /* Many pipelined commands in one read: hand the replies so
               far to the kernel; smtp_write_cb resumes if it must wait. */
            smtp_flush(s);
            if (s->closing || s->out.len != 0 ||
                s->wpending >= SMTP_WPENDING_MAX)
                break;
        }
        if (s->state == SMTP_S_DATA) {
            enum smtp_data_res r;
            if (avail == 0)
                break;
            r = smtp_data_feed(
                &s->ds, p, avail, &used,
                s->ds.error || s->ds.cb_error ? NULL : smtp_msg_out, s);
            off += used;
            if (r == SMTP_DATA_END)
                smtp_end_message(s);
            else if (r == SMTP_DATA_AGAIN)
                break;
            continue;
        }
        if (s->state == SMTP_S_BDAT) {
            size_t take = avail;
            if ((uint64_t)take > s->bdat_left)
                take = (size_t)s->bdat_left;
            if (take && !s->bdat_discard && !s->ds.error && !s->ds.cb_error)
                smtp_bdat_feed(&s->ds, p, take, smtp_msg_out, s);
            off += take;
            s->bdat_left -= take;
            if (s->bdat_left == 0) {
                smtp_bdat_chunk_done(s);
                continue;
            }
            break;
        }
        if (avail == 0)
            break;
        switch (smtp_line_next(&s->ls, p, avail, &line, &used)) {
        case SMTP_TOK_AGAIN:
            off += used;
            goto out;
        case SMTP_TOK_LINE:
            off += used;
            if (s->state == SMTP_S_AUTH)
                smtp_auth_line(s, line.p, line.len);
            else
                smtp_handle_line(s, line.p, line.len);
            smtp_command_done(s);
            if (s->tls_starting) {
                /* RFC 3207 §4.2 / STARTTLS injection: what the client
                   pipelined after STARTTLS was sent in plaintext and is
                   thrown away, never executed. */
                if (s->in.len > off)
                    log_warn("event=smtp.starttls_injection sid=%s addr=%s "
                             "discarded=%zu",
                             s->sid, s->has_peer ? s->peer_ip : "unknown",
                             s->in.len - off);
                off = s->in.len;
                smtp_start_tls(s);
                goto out;
            }
            break;
        case SMTP_TOK_TOOLONG:
            off += used;
            smtp_command_done(s);
            /* RFC 5321 §4.5.3.1.4 */
            smtp_reply(s,
                       "500 5.5.2 Error: command line longer than %zu "
                       "bytes",
                       s->cfg->max_command_line);
            smtp_error(s);
            break;
        case SMTP_TOK_BARELF:
            off += used;
            smtp_command_done(s);
            /* RFC 5321 §2.3.8 */
            smtp_reply(s, "500 5.5.2 Error: bare LF in command; use CRLF");
            smtp_error(s);
            break;
        }
    }
out:
    if (off) {
        memmove(s->in.data, s->in.data + off, s->in.len - off);
        s->in.len -= off;
        s->in.data[s->in.len] = '\0';
    }
}

static void
smtp_session_process(struct smtp_session *s)
{
    /* Under TLS, decrypted input is taken only up to SMTP_IN_HIGH; the
       rest waits in the TLS layer and is pulled as the buffer drains. */
    do
        smtp_session_consume(s);
    while (smtp_tls_pull(s));
    smtp_flush(s);
    smtp_update_reading(s);
}

static void
smtp_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h;
    (void)hint;
    /* Allocated per read and freed in read_cb: an idle session holds no
       read buffer at all. */
    b->base = malloc(SMTP_READ_SIZE);
    b->len = b->base ? SMTP_READ_SIZE : 0;
}

static void smtp_greet(struct smtp_session *s);

/* The handshake is done: RFC 3207 §4.2, the session starts over. */
static void
smtp_tls_ready(struct smtp_session *s)
{
    s->n->stats.tls_sessions++;
    log_info("event=tls.established sid=%s version=%s cipher=%s bits=%d",
             s->sid, tls_conn_version(s->tls), tls_conn_cipher(s->tls),
             tls_conn_bits(s->tls));
    smtp_txn_reset(s);
    s->helo[0] = '\0';
    s->esmtp = 0;
    /* Even a login made before TLS is forgotten: a man in the middle
       could have made it with an account of his own. */
    free(s->auth_user);
    s->auth_user = NULL;
    smtp_auth_reset(s);
    smtp_session_enter(s, SMTP_S_INIT);
    if (!s->greeted)
        smtp_greet(s); /* smtps: the greeting comes over TLS */
}

/* Ciphertext arrived (nread bytes): handshake, or decrypt into s->in. */
static void
smtp_tls_input(struct smtp_session *s, size_t nread)
{
    enum tls_res r;

    if (s->state == SMTP_S_TLS) {
        r = tls_conn_handshake(s->tls);
        smtp_tls_send(s);
        if (r == TLS_WANT)
            return;
        if (r != TLS_OK) {
            s->n->stats.tls_failures++;
            log_info("event=tls.handshake_failed sid=%s addr=%s err=\"%s\"",
                     s->sid, s->has_peer ? s->peer_ip : "unknown",
                     r == TLS_CLOSED ? "closed by client"
                                     : tls_conn_error(s->tls));
            smtp_session_close(s, "TLS handshake failed");
            return;
        }
        smtp_tls_ready(s);
    }
    (void)nread;
    smtp_session_process(s);
}

/* Decrypt buffered TLS input into s->in up to SMTP_IN_HIGH. 1 if
   plaintext was added, 0 if none (nothing buffered, a partial record,
   the buffer full, no TLS, or the session closing). */
static int
smtp_tls_pull(struct smtp_session *s)
{
    enum tls_res r;
    size_t before = s->in.len;

    if (s->tls == NULL || s->closing || s->state == SMTP_S_TLS ||
        s->in.len >= SMTP_IN_HIGH || !tls_conn_buffered(s->tls))
        return 0;
    r = tls_conn_read(s->tls, &s->in, SMTP_IN_HIGH - s->in.len);
    smtp_tls_send(s); /* TLS 1.3 post-handshake messages, alerts */
    if (r == TLS_CLOSED) {
        smtp_session_close(s, "client closed TLS");
        return 0;
    }
    if (r != TLS_OK) {
        log_info("event=tls.error sid=%s err=\"%s\"", s->sid,
                 tls_conn_error(s->tls));
        smtp_session_close(s, "TLS error");
        return 0;
    }
    if (s->in.len == before)
        return 0;
    if (s->state == SMTP_S_DATA || s->state == SMTP_S_BDAT)
        smtp_data_progress(s, s->in.len - before);
    return 1;
}

static void
smtp_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct smtp_session *s = st->data;

    if (nread < 0) {
        free(b->base);
        smtp_session_close(s, nread == UV_EOF ? "client closed"
                                              : uv_strerror((int)nread));
        return;
    }
    if (nread == 0) {
        free(b->base);
        return;
    }
    if (s->closing) {
        free(b->base);
        return;
    }
    if (s->tls != NULL) {
        int r = tls_conn_feed(s->tls, b->base, (size_t)nread);
        free(b->base);
        if (r != 0) {
            smtp_session_close(s, "out of memory");
            return;
        }
        smtp_tls_input(s, (size_t)nread);
        return;
    }
    if (buf_append(&s->in, b->base, (size_t)nread) != 0) {
        free(b->base);
        /* Cannot happen while reading stops at SMTP_IN_HIGH. */
        smtp_reply(s, "421 4.7.0 %s Error: input overflow", s->cfg->hostname);
        smtp_session_close(s, "input overflow");
        smtp_flush(s);
        return;
    }
    free(b->base);
    if (s->state == SMTP_S_DATA || s->state == SMTP_S_BDAT)
        smtp_data_progress(s, (size_t)nread);
    smtp_session_process(s);
}

static void
smtp_update_reading(struct smtp_session *s)
{
    int want = !s->closing && s->in.len < SMTP_IN_HIGH &&
               s->wpending < SMTP_WPENDING_MAX &&
               !((s->state == SMTP_S_COMMIT || s->state == SMTP_S_REPLWAIT) &&
                 s->in.len > 0);

    if (want && !s->reading) {
        if (uv_read_start(&s->io.s, smtp_alloc_cb, smtp_read_cb) == 0)
            s->reading = 1;
    } else if (!want && s->reading) {
        uv_read_stop(&s->io.s);
        s->reading = 0;
    }
}

/* ---- output ------------------------------------------------------------- */

static void smtp_really_close(struct smtp_session *s);

static void
smtp_write_cb(uv_write_t *req, int status)
{
    struct smtp_write *w = (struct smtp_write *)req;
    struct smtp_session *s = w->s;

    s->wpending = s->wpending >= w->len ? s->wpending - w->len : 0;
    free(w);
    if (status < 0 && !s->closing)
        smtp_session_close(s, uv_strerror(status));
    if (s->closing) {
        if (s->wpending == 0)
            smtp_really_close(s);
        return;
    }
    if (s->wpending < SMTP_WPENDING_MAX / 2)
        smtp_session_process(s);
}

/* Hand bytes to the socket: what the kernel takes now, the rest in a
   write request (wpending counts it). 0 or -1 (session closing). */
static int
smtp_send_bytes(struct smtp_session *s, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    struct smtp_write *w;
    int n = s->wpending ? 0 : uv_try_write(&s->io.s, &b, 1);

    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        smtp_session_close(s, uv_strerror(n));
        return -1;
    }
    if ((size_t)n < len) {
        size_t rest = len - (size_t)n;
        w = malloc(sizeof(*w) + rest);
        if (w == NULL) {
            smtp_session_close(s, "out of memory");
            return -1;
        }
        w->s = s;
        w->len = rest;
        memcpy(w->data, data + n, rest);
        b = uv_buf_init(w->data, (unsigned)rest);
        if (uv_write(&w->req, &s->io.s, &b, 1, smtp_write_cb) != 0) {
            free(w);
            smtp_session_close(s, "write failed");
            return -1;
        }
        s->wpending += rest;
    }
    return 0;
}

/* Ciphertext the TLS layer produced (handshake, alerts, records). */
static void
smtp_tls_send(struct smtp_session *s)
{
    struct buf c;

    if (s->tls == NULL || tls_conn_pending(s->tls) == 0 ||
        uv_is_closing(&s->io.h))
        return;
    buf_init(&c, tls_conn_pending(s->tls));
    if (tls_conn_take(s->tls, &c) != 0) {
        buf_cleanup(&c);
        smtp_session_close(s, "out of memory");
        return;
    }
    if (c.len)
        smtp_send_bytes(s, c.data, c.len);
    buf_cleanup(&c);
}

/* Closing a TLS session: a close_notify alert, so that the client can
   tell our close from a truncation (RFC 8446 §6.1). */
static void
smtp_tls_bye(struct smtp_session *s)
{
    if (s->tls == NULL || s->tls_bye || s->state == SMTP_S_TLS ||
        !tls_conn_established(s->tls))
        return;
    s->tls_bye = 1;
    tls_conn_shutdown(s->tls);
    smtp_tls_send(s);
}

static void
smtp_flush(struct smtp_session *s)
{
    if (!s->started || uv_is_closing(&s->io.h))
        return;
    if (s->out.len == 0)
        goto done;
    if (s->tls != NULL && s->state != SMTP_S_TLS) {
        if (tls_conn_write(s->tls, s->out.data, s->out.len) != TLS_OK) {
            buf_reset(&s->out);
            smtp_session_close(s, "TLS write failed");
            return;
        }
        buf_reset(&s->out);
        if (s->closing)
            smtp_tls_bye(s); /* after the last reply, e.g. 221 */
        smtp_tls_send(s);
    } else {
        /* On failure the session is closing; the reset below lets the
           close finish at done. */
        (void)smtp_send_bytes(s, s->out.data, s->out.len);
        buf_reset(&s->out);
    }
done:
    if (s->closing && s->wpending == 0)
        smtp_really_close(s);
}

/* ---- timers and lifetime ------------------------------------------------ */

static void
smtp_timer_cb(uv_timer_t *t)
{
    struct smtp_session *s = t->data;
    uint64_t now = uv_now(s->n->loop);

    if (s->closing)
        return;
    if (s->state == SMTP_S_AUTHWAIT && s->auth_delayed) {
        smtp_auth_finish(s);
        return;
    }
    if (s->state == SMTP_S_COMMIT || s->state == SMTP_S_REPLWAIT ||
        s->state == SMTP_S_AUTHWAIT) {
        /* Waiting on our own disk, replicas (their own timer) or password
           check, not the client. */
        smtp_deadline_set(s, s->cfg->timeout_command);
        return;
    }
    if (now < s->deadline) {
        /* The client earned more time since the timer was set. */
        uv_timer_start(&s->timer, smtp_timer_cb, s->deadline - now, 0);
        return;
    }
    /* RFC 5321 §4.5.3.2: the server may close a session that stalls. */
    log_info("event=smtp.timeout sid=%s state=%s", s->sid,
             smtp_state_names[s->state]);
    smtp_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->hostname);
    smtp_session_close(s, "timeout");
    smtp_flush(s);
}

static void
smtp_deadline_set(struct smtp_session *s, unsigned secs)
{
    if (!s->started)
        return;
    s->deadline = uv_now(s->n->loop) + (uint64_t)secs * 1000;
    uv_timer_start(&s->timer, smtp_timer_cb, (uint64_t)secs * 1000, 0);
}

static void
smtp_session_free(struct smtp_session *s)
{
    if (s->gone)
        s->gone(s->gone_arg, s);
    if (s->rl_key[0] && s->n->rl)
        rl_release(s->n->rl, s->rl_key);
    tls_conn_free(s->tls);
    free(s->auth_user);
    sodium_memzero(s->auth_login, sizeof(s->auth_login));
    smtp_txn_reset(s);
    buf_cleanup(&s->msg);
    buf_cleanup(&s->in);
    buf_cleanup(&s->out);
    free(s->rcpts);
    free(s);
}

static void
smtp_close_cb(uv_handle_t *h)
{
    struct smtp_session *s = h->data;

    if (--s->handles_open == 0 && !s->store_pending && !s->work_pending)
        smtp_session_free(s);
}

static void
smtp_really_close(struct smtp_session *s)
{
    if (uv_is_closing(&s->io.h))
        return;
    /* Never free under a store callback that is still to come: the
       commit callback finishes the teardown (smtp_commit_done). */
    if (s->store_pending || s->work_pending)
        return;
    log_info(
        "event=smtp.disconnect sid=%s reason=\"%s\" msgs=%" PRIu64 " errors=%u",
        s->sid, s->close_reason ? s->close_reason : "", s->msgs, s->errors);
    smtp_session_enter(s, SMTP_S_CLOSING);
    uv_close(&s->io.h, smtp_close_cb);
    uv_close((uv_handle_t *)&s->timer, smtp_close_cb);
}

static void
smtp_session_close(struct smtp_session *s, const char *reason)
{
    if (!s->closing) {
        s->closing = 1;
        s->close_reason = reason;
        if (s->reading) {
            uv_read_stop(&s->io.s);
            s->reading = 0;
        }
        uv_timer_stop(&s->timer);
        if (s->out.len == 0)
            smtp_tls_bye(s); /* else smtp_flush() sends it after the reply */
        if (s->state == SMTP_S_REPLWAIT && s->rwait != NULL) {
            /* It never heard 250: withdraw the message everywhere. */
            log_info("event=smtp.withdraw sid=%s qid=%s why=\"%s\"", s->sid,
                     s->qid, reason != NULL ? reason : "closed");
            mesh_repl_wait_cancel(s->rwait);
            s->rwait = NULL;
        }
    }
    if (s->wpending == 0 && s->out.len == 0)
        smtp_really_close(s);
    /* else: smtp_flush() / smtp_write_cb() finish it */
}

int
smtp_session_new(struct node *n, smtp_session_gone_cb gone, void *gone_arg,
                 struct smtp_session **out)
{
    struct smtp_session *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return -ENOMEM;
    s->n = n;
    s->cfg = n->cfg;
    s->gone = gone;
    s->gone_arg = gone_arg;
    s->state = SMTP_S_INIT;
    snprintf(s->sid, sizeof(s->sid), "%" PRIx64 "%05" PRIx64,
             (uint64_t)n->started & 0xfffff, n->stats.sessions_total);
    buf_init(&s->in, SMTP_IN_MAX);
    buf_init(&s->out, SMTP_OUT_MAX);
    buf_init(&s->msg, 0);
    smtp_line_init(&s->ls, n->cfg->max_command_line > SMTP_AUTH_LINE_MAX + 8
                               ? n->cfg->max_command_line
                               : SMTP_AUTH_LINE_MAX + 8);
    *out = s;
    return 0;
}

void
smtp_session_set_peer(struct smtp_session *s, const struct sockaddr *peer)
{
    if (peer && (peer->sa_family == AF_INET || peer->sa_family == AF_INET6)) {
        size_t sl = peer->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                               : sizeof(struct sockaddr_in6);
        memcpy(&s->peer, peer, sl);
        s->has_peer = 1;
        if (peer->sa_family == AF_INET) {
            inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr,
                      s->peer_ip, sizeof(s->peer_ip));
        } else {
            /* RFC 5321 §4.1.3 IPv6 address literal */
            memcpy(s->peer_ip, "IPv6:", 5);
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr,
                      s->peer_ip + 5, sizeof(s->peer_ip) - 5);
        }
        s->trusted = node_config_trusted(s->cfg, peer);
        s->plain_auth_ok = node_config_in_nets(s->cfg->auth_plain_nets,
                                               s->cfg->nauth_plain_nets, peer);
    }
}

void
smtp_session_set_kind(struct smtp_session *s, enum smtp_kind kind)
{
    s->kind = kind;
}

uv_stream_t *
smtp_session_stream(struct smtp_session *s, int is_pipe)
{
    (void)is_pipe;
    s->io.h.data = s;
    return &s->io.s;
}

void
smtp_session_discard(struct smtp_session *s)
{
    s->handles_open = 0;
    if (s->gone)
        s->gone(s->gone_arg, s);
    s->gone = NULL;
    smtp_session_free(s);
}

/* RFC 5321 §4.2: greeting; §4.3.1 no enhanced code before EHLO. */
static void
smtp_greet(struct smtp_session *s)
{
    s->greeted = 1;
    smtp_reply(s, "220 %s ESMTP %s", s->cfg->hostname,
               s->cfg->banner ? s->cfg->banner : "relaymesh");
    smtp_deadline_set(s, s->cfg->timeout_command);
    smtp_flush(s);
}

/* Connection rate and concurrent sessions per client address. 1 if the
   session may go on; else it is answered 421 (not on smtps) and closed. */
static int
smtp_admit(struct smtp_session *s)
{
    const struct node_config *cfg = s->cfg;
    struct ratelimit *rl = s->n->rl;
    uint64_t now = uv_now(s->n->loop);
    const char *what, *kind;
    unsigned limit;
    char key[RL_KEY_MAX];

    if (rl == NULL || !s->has_peer ||
        (cfg->conn_rate_per_ip == 0 && cfg->sessions_per_ip == 0) ||
        (s->trusted && cfg->rate_exempt_trusted))
        return 1;
    smtp_rl_key(s, key, sizeof(key), 'c', s->peer_ip);
    if (!rl_take(rl, key, now, 60, cfg->conn_rate_per_ip)) {
        what = "connections per minute";
        kind = "conn_rate_per_ip";
        limit = cfg->conn_rate_per_ip;
    } else if (cfg->sessions_per_ip != 0 &&
               !rl_hold(rl, key, now, cfg->sessions_per_ip)) {
        what = "concurrent sessions";
        kind = "sessions_per_ip";
        limit = cfg->sessions_per_ip;
    } else {
        if (cfg->sessions_per_ip != 0)
            snprintf(s->rl_key, sizeof(s->rl_key), "c:%s", s->peer_ip);
        return 1;
    }
    s->n->stats.ratelimited++;
    log_warn("event=ratelimit kind=%s sid=%s addr=%s limit=%u", kind, s->sid,
             s->peer_ip, limit);
    if (s->kind != SMTP_KIND_SMTPS)
        smtp_reply(s,
                   "421 4.7.0 %s Error: too many %s from %s (limit %u), try "
                   "again later",
                   cfg->hostname, what, s->peer_ip, limit);
    smtp_session_close(s, "rate limit");
    smtp_flush(s);
    return 0;
}

void
smtp_session_start(struct smtp_session *s)
{
    struct node *n = s->n;

    s->io.h.data = s;
    s->handles_open = 1;
    uv_timer_init(n->loop, &s->timer);
    s->timer.data = s;
    s->handles_open = 2;
    s->started = 1;
    log_info("event=smtp.connect sid=%s kind=%s addr=%s trusted=%d", s->sid,
             smtp_kind_name(s->kind), s->has_peer ? s->peer_ip : "unknown",
             s->trusted);
    if (!smtp_admit(s))
        return;
    if (s->kind == SMTP_KIND_SMTPS) {
        /* RFC 8314 §3.3: TLS first, then the greeting over it. */
        s->tls = n->tls ? tls_conn_server(n->tls) : NULL;
        if (s->tls == NULL) {
            smtp_session_close(s, "TLS not available");
            return;
        }
        smtp_session_enter(s, SMTP_S_TLS);
        smtp_update_reading(s);
        return;
    }
    smtp_greet(s);
    smtp_update_reading(s);
}

void
smtp_session_drain(struct smtp_session *s)
{
    if (s->closing)
        return;
    s->draining = 1;
    switch (s->state) {
    case SMTP_S_INIT:
    case SMTP_S_READY:
    case SMTP_S_MAIL:
    case SMTP_S_RCPT:
    case SMTP_S_CHUNKING:
    case SMTP_S_AUTH:
        /* Idle between commands: RFC 5321 §3.8, 421 then close. */
        smtp_reply(s, "421 4.3.2 %s Service shutting down", s->cfg->hostname);
        smtp_session_close(s, "shutdown");
        smtp_flush(s);
        break;
    case SMTP_S_DATA:
    case SMTP_S_BDAT:
    case SMTP_S_COMMIT:
    case SMTP_S_REPLWAIT:
        /* Let the message finish (the replicas within ack_timeout);
           smtp_txn_finish() says goodbye. */
        break;
    case SMTP_S_TLS:
    case SMTP_S_AUTHWAIT:
        /* Mid-handshake (no plaintext reply is possible) or mid-check:
           just close; a password check finishes first. */
        smtp_session_close(s, "shutdown");
        break;
    case SMTP_S_CLOSING:
    case SMTP_S__COUNT:
        break;
    }
}

void
smtp_session_abort(struct smtp_session *s)
{
    buf_reset(&s->out);
    if (!s->closing)
        smtp_session_close(s, "shutdown timeout");
    /* Pending writes are cancelled by uv_close (their callbacks run with
       UV_ECANCELED before the close callback). */
    s->wpending = 0;
    smtp_really_close(s);
}
