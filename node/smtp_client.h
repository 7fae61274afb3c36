/*
 * smtp_client: one outbound SMTP connection (RFC 5321 client side), its
 * own state machine on the node's libuv loop.
 *
 * Life of a connection:
 *   smtpc_connect()  TCP connect, 220 greeting, EHLO (HELO when EHLO is
 *                    refused with 5xx), STARTTLS per policy and EHLO
 *                    again, AUTH PLAIN when credentials are set (only
 *                    over TLS) -> ready_cb(status 0)
 *   smtpc_send()     one transaction: MAIL, RCPT..., DATA (pipelined
 *                    when the server offers PIPELINING, RFC 2920), the
 *                    message dot-stuffed, "." -> txn_cb with one reply per
 *                    recipient and the DATA reply. Repeat on the same
 *                    connection for more messages (RSET between
 *                    transactions when the previous one failed part-way).
 *   smtpc_quit()     QUIT, close, free (asynchronously).
 *
 * Extensions: SIZE (RFC 1870: MAIL carries SIZE=; a server whose announced
 * maximum is below the message's size is not sent it: SMTPC_E_TOOBIG),
 * 8BITMIME (BODY=8BITMIME when the message is 8bit and the server offers
 * it; without the offer the message goes as is, like most MTAs),
 * SMTPUTF8 (RFC 6531: a message that needs it, to a server without it:
 * SMTPC_E_NOUTF8, nothing is sent), DSN (RFC 3461: NOTIFY / ORCPT / RET /
 * ENVID passed on only when the server offers DSN; the result says whether
 * it did), PIPELINING, STARTTLS (RFC 3207), AUTH PLAIN (RFC 4954).
 *
 * Timeouts per RFC 5321 §4.5.3.2, from struct smtpc_opts. Every buffer is
 * bounded; a reply line over 4 KiB or more than 100 lines is a protocol
 * error. Replies are parsed by smtpc_reply_parse() (pure, fuzzed).
 *
 * Loop thread only. Callbacks never run from inside the call that
 * started the operation. After a connection-level failure (status < 0)
 * the connection is closed and freed by the client itself: the caller
 * must not use it again.
 */
#ifndef RM_NODE_SMTP_CLIENT_H
#define RM_NODE_SMTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

struct smtpc;
struct tls_client;

enum smtpc_tls {
    SMTPC_TLS_NONE = 0,          /* never STARTTLS */
    SMTPC_TLS_OPPORTUNISTIC = 1, /* STARTTLS when offered; a failed
                                    handshake is an error for this host
                                    (SMTPC_E_TLS), like Postfix */
    SMTPC_TLS_REQUIRED = 2       /* no STARTTLS offered or a failed
                                    handshake: SMTPC_E_TLS */
};

/* Client errors (status < 0 in callbacks); -errno for socket errors. */
enum smtpc_err {
    SMTPC_E_TIMEOUT = -30001, /* a timeout of struct smtpc_opts fired */
    SMTPC_E_CLOSED = -30002,  /* server closed the connection */
    SMTPC_E_PROTO = -30003,   /* unparseable or over-long reply */
    SMTPC_E_TLS = -30004,     /* STARTTLS required but not offered, or
                                 the handshake failed */
    SMTPC_E_REPLY = -30005,   /* greeting / EHLO / STARTTLS / AUTH / MAIL
                                 / DATA refused: see the reply */
    SMTPC_E_TOOBIG = -30006,  /* server's SIZE below the message size */
    SMTPC_E_NOUTF8 = -30007,  /* needs SMTPUTF8, server lacks it */
    SMTPC_E_NOMEM = -30008,
    SMTPC_E_NOAUTH = -30009 /* credentials set, but the server offers
                               no AUTH PLAIN (after TLS) */
};
const char *smtpc_strerror(int err);

struct smtpc_opts {
    const char *helo;        /* our name for EHLO */
    const char *server_name; /* MX host name: SNI and logs ("" if none) */
    enum smtpc_tls tls;
    struct tls_client *tls_ctx; /* required unless tls == NONE */
    const char *auth_user;      /* NULL: no AUTH */
    const char *auth_pass;
    /* Seconds (RFC 5321 §4.5.3.2 defaults in brackets). */
    unsigned timeout_connect;    /* [30] */
    unsigned timeout_greeting;   /* 220 and EHLO/HELO/STARTTLS/AUTH [300] */
    unsigned timeout_mail;       /* [300] */
    unsigned timeout_rcpt;       /* [300] */
    unsigned timeout_data_init;  /* 354 [120] */
    unsigned timeout_data_block; /* each write of the body [180] */
    unsigned timeout_data_done;  /* reply to "." [600] */
    const char *log_id;          /* prefix for log lines (delivery id) */
};

/* One reply: the code, the enhanced status code if the server gave one
   (RFC 3463, "" otherwise), and its text (lines joined by "; ", cut to
   fit, without the codes). code 0: no reply was received. */
struct smtpc_reply {
    int code;
    char enh[16];
    char text[512];
};

typedef void (*smtpc_ready_cb)(void *arg, struct smtpc *c, int status,
                               const struct smtpc_reply *r);

/*
 * Connect to sa (port set) and get the session ready. ready_cb(status 0)
 * when it is; else status < 0 (r holds the server's reply for
 * SMTPC_E_REPLY and SMTPC_E_TLS when there was one) and the connection is
 * already gone. opts and the strings it points to are copied. 0 or
 * -ENOMEM (ready_cb not called then).
 */
int smtpc_connect(uv_loop_t *loop, const struct sockaddr *sa,
                  const struct smtpc_opts *opts, smtpc_ready_cb cb, void *arg,
                  struct smtpc **out);

struct smtpc_rcpt {
    const char *addr;     /* without <> */
    unsigned notify;      /* STORE_NOTIFY_* bits; 0 = not given */
    const char *orcpt;    /* ORCPT value as received (xtext) or NULL */
    struct smtpc_reply r; /* out: the RCPT reply (code 0 if never sent) */
};

struct smtpc_txn {
    const char *mail_from; /* "" = null sender */
    uint64_t size;         /* message bytes (SIZE=) */
    int eightbit;          /* body has 8-bit bytes (BODY=8BITMIME) */
    int smtputf8;          /* needs SMTPUTF8 */
    int ret;               /* DSN RET: 0 unset, 1 FULL, 2 HDRS */
    const char *envid;     /* DSN ENVID or NULL */
    struct smtpc_rcpt *rcpts;
    size_t nrcpts;
    /* The message, CRLF line ends, not dot-stuffed (the client stuffs). */
    const char *data;
    size_t len;
};

struct smtpc_result {
    int status;              /* 0: the transaction ran to its end (which
                                may still be a refusal: see the replies);
                                < 0: it broke off (connection gone) */
    struct smtpc_reply mail; /* MAIL reply */
    struct smtpc_reply data; /* DATA's 354 if refused, else the final reply
                                after "."; code 0 if never reached */
    int dsn;                 /* the server offered DSN */
    size_t accepted;         /* recipients with a 2xx RCPT reply */
};

/* A recipient of t was delivered iff status == 0, its RCPT reply is 2xx
   and data.code is 2xx. */
typedef void (*smtpc_txn_cb)(void *arg, struct smtpc *c, struct smtpc_txn *t,
                             const struct smtpc_result *res);

/* Run one transaction; t and everything it points to stay valid until cb.
   Only on a ready, idle connection. 0, or RM_E_INVAL (busy / not ready),
   SMTPC_E_TOOBIG / SMTPC_E_NOUTF8 (checked at once: nothing sent, cb not
   called, the connection stays usable). */
int smtpc_send(struct smtpc *c, struct smtpc_txn *t, smtpc_txn_cb cb,
               void *arg);

/* 1 if the connection is ready for another smtpc_send(). */
int smtpc_usable(const struct smtpc *c);
/* What the server offered and what was negotiated (for logs, Received
   of nothing, and queue show). */
const char *smtpc_tls_version(const struct smtpc *c); /* NULL: no TLS */
const char *smtpc_tls_cipher(const struct smtpc *c);
uint64_t smtpc_max_size(const struct smtpc *c); /* 0: no SIZE limit */
/* 1 if TLS is up and the server's certificate verified (logs only:
   opportunistic TLS does not enforce it). */
int smtpc_tls_verified(const struct smtpc *c);
/* SMTPC_EXT_* bits of the last EHLO (0 after HELO). */
unsigned smtpc_extensions(const struct smtpc *c);
/* Send QUIT (when idle and connected), close, free. Never calls any
   pending callback. */
void smtpc_quit(struct smtpc *c);

/* ---- reply parser (pure; fuzz/fuzz_smtp_reply.c) ------------------- */

#define SMTPC_REPLY_LINE_MAX 4096 /* bytes per line, CRLF included */
#define SMTPC_REPLY_LINES_MAX 100

struct smtpc_reply_parser {
    int code;       /* code of the first line, 0 before */
    unsigned lines; /* lines consumed in this reply */
    struct smtpc_reply *r;
    /* EHLO keywords seen in this reply (filled when ehlo is set). */
    int ehlo;
    unsigned ext;      /* SMTPC_EXT_* bits */
    uint64_t size_max; /* SIZE parameter; 0 none */
};

#define SMTPC_EXT_PIPELINING 0x01
#define SMTPC_EXT_SIZE 0x02
#define SMTPC_EXT_8BITMIME 0x04
#define SMTPC_EXT_SMTPUTF8 0x08
#define SMTPC_EXT_STARTTLS 0x10
#define SMTPC_EXT_DSN 0x20
#define SMTPC_EXT_AUTH_PLAIN 0x40
#define SMTPC_EXT_ENHANCED 0x80

/*
 * Feed one reply line (without its CRLF). Returns 1 when the reply is
 * complete (a "NNN " or a bare "NNN" line), 0 when more lines follow
 * ("NNN-"), RM_E_PROTO on a malformed line (no 3-digit code 2xx-5xx, a
 * continuation line with another code, too many lines, too long). r
 * is filled as lines come.
 */
void smtpc_reply_parser_init(struct smtpc_reply_parser *p,
                             struct smtpc_reply *r, int ehlo);
int smtpc_reply_line(struct smtpc_reply_parser *p, const char *line,
                     size_t len);

#endif
