/*
 * smtp_session: one inbound SMTP session (RFC 5321 server side).
 *
 * An explicit state machine (enum smtp_state, smtp_session_enter() logs
 * every transition) driven by a command table (verb, allowed states,
 * flags, handler) over the pure tokenizers of smtp_parse.h. The session
 * owns its stream handle (a uv_tcp_t from the listener, or a uv_pipe_t in
 * tests and the fuzz harness), its idle timer and all its memory; it is
 * torn down in one place, after both handles have closed and no store
 * request is outstanding.
 *
 * Durability is part of the state machine: after the end of DATA (or
 * BDAT LAST) the session enters SMTP_S_COMMIT, stops executing pipelined
 * input, and sends its 250 from the store's commit callback.
 * Loop thread only.
 */
#ifndef RM_SMTP_SESSION_H
#define RM_SMTP_SESSION_H

#include <sys/socket.h>

#include <uv.h>

struct node;
struct smtp_session;

/* What a listener is for; the session's rules follow from it. */
enum smtp_kind {
    SMTP_KIND_RELAY = 0,  /* MX / relay (RFC 5321): STARTTLS, AUTH optional */
    SMTP_KIND_SUBMISSION, /* RFC 6409: STARTTLS, AUTH before MAIL */
    SMTP_KIND_SMTPS       /* RFC 8314 implicit TLS, then as submission */
};

/* Called once when the session's memory is about to be freed. */
typedef void (*smtp_session_gone_cb)(void *arg, struct smtp_session *s);

/*
 * Allocate a session for node n whose stream handle the caller then
 * initialises with smtp_session_stream() (uv_tcp_init / uv_accept, or
 * uv_pipe_init + uv_pipe_open) before calling smtp_session_start().
 * gone(gone_arg) runs once, just before the session's memory is freed.
 * 0 or -ENOMEM.
 */
int smtp_session_new(struct node *n, smtp_session_gone_cb gone, void *gone_arg,
                     struct smtp_session **out);
/* The client's address (AF_INET / AF_INET6); without one the session is
   untrusted and its Received header says "unknown". Before start. */
void smtp_session_set_peer(struct smtp_session *s, const struct sockaddr *peer);
/* The listener kind (default SMTP_KIND_RELAY). Before start. */
void smtp_session_set_kind(struct smtp_session *s, enum smtp_kind kind);
/* The session's stream handle storage (big enough for tcp or pipe). */
uv_stream_t *smtp_session_stream(struct smtp_session *s, int is_pipe);
/* Send the greeting and start reading. On failure the session closes
   itself. */
void smtp_session_start(struct smtp_session *s);
/* Close now if the session is idle, else after the current transaction
   (SIGTERM drain); a 421 is sent to idle sessions. */
void smtp_session_drain(struct smtp_session *s);
/* Close at once (shutdown timeout): no reply, no waiting. */
void smtp_session_abort(struct smtp_session *s);
/* Release a session whose stream was never initialised (e.g. uv_accept
   failed before smtp_session_start). */
void smtp_session_discard(struct smtp_session *s);

/* ---- smtp_server.c: the listeners ---------------------------------- */

struct smtp_server;

/* Bind every cfg->listen address (before privileges are dropped). Does
   not accept until smtp_server_start(). -errno with a log line. */
int smtp_server_new(struct node *n, struct smtp_server **out);
int smtp_server_start(struct smtp_server *srv);
/* Stop accepting and drain sessions; done_cb when the last has gone. */
void smtp_server_drain(struct smtp_server *srv, void (*done_cb)(void *),
                       void *arg);
/* Abort remaining sessions (drain timeout). */
void smtp_server_abort(struct smtp_server *srv);
/* Close listeners; memory is freed once every handle has closed. */
void smtp_server_close(struct smtp_server *srv);
/* Bound addresses as text, one per listener ("127.0.0.1:2525"), and
   their kinds. */
size_t smtp_server_listeners(const struct smtp_server *srv, char (*out)[64],
                             enum smtp_kind *kinds, size_t max);
const char *smtp_kind_name(enum smtp_kind kind);

#endif
