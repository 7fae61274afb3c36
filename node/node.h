/*
 * node: one running relaymesh node — one process, one libuv loop.
 *
 * struct node ties the modules together: config, store, SMTP listeners,
 * queue manager and control socket. Everything here runs on the loop
 * thread; the store's writer thread reports back through the loop.
 */
#ifndef RM_NODE_H
#define RM_NODE_H

#include <stdint.h>

#include <uv.h>

#include "node/node_config.h"
#include "node/node_identity.h"
#include "store/store.h"

struct smtp_server;
struct node_queue;
struct ctl_server;
struct tls_server;
struct ratelimit;
struct mesh;
struct bridge;

/* Counters shown by `relaymesh status`. Loop thread only. */
struct node_stats {
    uint64_t sessions_total;
    uint64_t sessions_current;
    uint64_t sessions_refused;  /* over max_sessions */
    uint64_t messages_accepted; /* 250 after DATA / BDAT LAST */
    uint64_t recipients_accepted;
    uint64_t messages_rejected; /* 5xx / 4xx at end of data */
    uint64_t rcpt_rejected;
    uint64_t delivered_local;
    uint64_t store_full; /* 452 4.3.1 answers */
    uint64_t protocol_errors;
    uint64_t tls_sessions; /* handshakes completed */
    uint64_t tls_failures; /* handshakes failed */
    uint64_t auth_ok;      /* 235 */
    uint64_t auth_failed;  /* 535 */
    uint64_t ratelimited;  /* 421 / 451 from a rate limit */
};

struct node {
    uv_loop_t *loop;
    const struct node_config *cfg;
    struct store *store;
    struct smtp_server *smtp;
    struct node_queue *queue;
    struct ctl_server *ctl;
    struct tls_server *tls;  /* NULL: no TLS (then no STARTTLS, no smtps) */
    struct ratelimit *rl;    /* per-IP and per-user counters */
    struct auth_cache *auth; /* logins verified recently */
    struct mesh *mesh;       /* the mesh service (node/mesh.h) */
    struct bridge *bridge;   /* the MAPI bridge (bridge/server.h) */
    struct node_identity id; /* long-term key pair (<datadir>/node.key) */
    int64_t started;         /* unix seconds */
    int draining;            /* SIGTERM received */
    struct node_stats stats;
};

/* `relaymesh serve [-c FILE] [--check] [--log-level L]`: returns the exit
   code. */
int node_serve_main(int argc, char **argv);

/* ---- queue manager (node_queue.c) ---------------------------------- */

/* Create the queue manager; it recovers local entries left by a crash
   (accepted, not yet delivered) and delivers them. */
int node_queue_new(struct node *n, struct node_queue **out);
/* A message was committed: deliver its local recipients (indexes into
   the message's recipient list). Batched with others into one write. */
void node_queue_local(struct node_queue *q, const char *qid,
                      const uint32_t *rcpts, size_t n);
/* A message with remote recipients was committed: deliver them. */
void node_queue_remote(struct node_queue *q, const char *qid);
/* The same once its replicas acknowledged it ([mesh] ack_replicas,
   mesh_repl.h): deliver them, without replicating it again. */
void node_queue_outbound(struct node_queue *q, const char *qid);
/* A mesh member hosting domains became reachable: mail held for it goes
   now (outbound_mesh_ready()). */
void node_queue_mesh_ready(struct node_queue *q);
struct outbound_stats;
void node_queue_outbound_stats(const struct node_queue *q,
                               struct outbound_stats *s);
/* Look at the queue again (after `queue release`, a retry). */
void node_queue_kick(struct node_queue *q);
/* Stop timers; the memory is freed once handles close. */
void node_queue_close(struct node_queue *q);
/* Entries handed to the writer and not yet committed. */
size_t node_queue_inflight(const struct node_queue *q);

/* Re-read the TLS certificate (SIGHUP, `relaymesh tls reload`). 0, or
   RM_E_CONFIG with the reason in err; the old certificate stays. */
int node_tls_reload(struct node *n, char *err, size_t errsz);

/* ---- control socket (ctl_server.c) --------------------------------- */

/* Listen on cfg->control_socket (mode 0600; a stale socket is replaced
   only when nothing answers on it). -errno on failure. */
int ctl_server_new(struct node *n, struct ctl_server **out);
void ctl_server_close(struct ctl_server *c);

/* ---- CLI client (ctl_client.c) ------------------------------------- */

/* Every subcommand but serve: `relaymesh status|user|queue|mailbox ...`.
   Returns the process exit code (0 ok, 1 error, 2 usage). */
int ctl_main(int argc, char **argv);

#endif
