/*
 * tls: OpenSSL behind memory BIOs, for the SMTP server (STARTTLS, implicit
 * TLS) and the SMTP client (STARTTLS, node/smtp_client.c).
 *
 * No sockets and no event loop here: the caller feeds ciphertext read from
 * the network with tls_conn_feed(), takes plaintext with tls_conn_read(),
 * gives plaintext with tls_conn_write() and sends whatever
 * tls_conn_take() returns. That keeps the TLS layer testable and lets the
 * session keep owning its I/O and its buffers.
 *
 * Policy (config [tls]): TLS 1.2 and 1.3 only (or 1.3 only), the
 * configured cipher lists, no compression, no renegotiation, server
 * cipher preference. With no certificate configured, a self-signed one
 * for the node's hostname is made once and kept in <datadir>/tls (0600).
 *
 * A context is reference counted by OpenSSL: a reload builds a new one
 * and swaps it in; sessions in flight keep the one they started with.
 */
#ifndef RM_NODE_TLS_H
#define RM_NODE_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct node_config;
struct tls_server;
struct tls_conn;

struct tls_cert_info {
    char subject[256];
    char not_after[64];   /* "2027-11-28 17:46:50 UTC" */
    int64_t not_after_ts; /* seconds since the epoch */
    char sha256[96];      /* "AB:CD:..." of the DER certificate */
    char file[4096];      /* where it came from */
    int self_signed;      /* made by the node */
};

/*
 * Load (or make) the certificate and build the server context. On error
 * returns RM_E_CONFIG and writes what is wrong and what to do into err.
 */
int tls_server_new(const struct node_config *cfg, struct tls_server **out,
                   char *err, size_t errsz);
/* Re-read the certificate files; on failure the old context stays. */
int tls_server_reload(struct tls_server *t, char *err, size_t errsz);
void tls_server_free(struct tls_server *t);
const struct tls_cert_info *tls_server_info(const struct tls_server *t);

enum tls_res {
    TLS_OK = 0,     /* done (handshake complete / data moved) */
    TLS_WANT = 1,   /* needs more input from the peer */
    TLS_CLOSED = 2, /* the peer sent close_notify */
    TLS_ERROR = -1  /* protocol error: see tls_conn_error() */
};

struct tls_conn *tls_conn_server(struct tls_server *t);

/*
 * The client context (outbound SMTP, RFC 3207): TLS 1.2 minimum, no
 * compression, no renegotiation, the system's trust store loaded. The
 * peer certificate is checked but a failure is not enforced
 * (opportunistic TLS, like Postfix's "may" and "encrypt" levels); the
 * result is kept for logs (tls_conn_verified). On error RM_E_CONFIG with
 * the reason in err, or -ENOMEM.
 */
struct tls_client;
int tls_client_new(struct tls_client **out, char *err, size_t errsz);
void tls_client_free(struct tls_client *t);
/* A client connection; sni (may be NULL or "") is sent as SNI and checked
   against the certificate when it is a host name, not an address
   literal. NULL when out of memory. */
struct tls_conn *tls_conn_client(struct tls_client *t, const char *sni);
/* 1 when the handshake is done and the peer's certificate chained to a
   trusted root (and matched sni, when one was given). */
int tls_conn_verified(const struct tls_conn *c);
/* The verification result as text, for logs ("ok" or OpenSSL's reason). */
const char *tls_conn_verify_error(const struct tls_conn *c);
void tls_conn_free(struct tls_conn *c);
/* Ciphertext from the network. 0 or -ENOMEM. */
int tls_conn_feed(struct tls_conn *c, const void *p, size_t n);
/* Advance the handshake with what was fed. */
enum tls_res tls_conn_handshake(struct tls_conn *c);
/* Append decrypted plaintext to out, at most max bytes. */
enum tls_res tls_conn_read(struct tls_conn *c, struct buf *out, size_t max);
/* Encrypt n bytes of plaintext into the pending output. */
enum tls_res tls_conn_write(struct tls_conn *c, const void *p, size_t n);
/* Ciphertext waiting to be sent: moves it into out (appended). */
int tls_conn_take(struct tls_conn *c, struct buf *out);
size_t tls_conn_pending(const struct tls_conn *c);
/* Input fed but not yet read as plaintext (whole or partial records). */
int tls_conn_buffered(const struct tls_conn *c);
/* Queue a close_notify alert (tls_conn_take() then has it). */
void tls_conn_shutdown(struct tls_conn *c);
int tls_conn_established(const struct tls_conn *c);
const char *tls_conn_version(const struct tls_conn *c); /* "TLSv1.3" */
const char *tls_conn_cipher(const struct tls_conn *c);
int tls_conn_bits(const struct tls_conn *c);
/* The last error, for the log ("wrong version number", ...). */
const char *tls_conn_error(const struct tls_conn *c);

#endif
