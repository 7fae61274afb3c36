/*
 * outbound: the queue manager's outbound half. It delivers queue entries
 * of route REMOTE to the Internet by SMTP: MX lookup (dns.c), one SMTP
 * client connection per delivery (smtp_client.c), several recipients per
 * transaction and several messages per connection, concurrency limits
 * per destination and in all, retries with doubling backoff, the queue
 * lifetime, and RFC 3464 reports (dsn.c) to the sender.
 *
 * The active set. Entries being worked on are kept in memory (at most
 * OB_ACTIVE_MAX), grouped into jobs (one message, one destination
 * domain, up to OB_JOB_RCPTS recipients) queued per destination. An entry
 * joins the active set when its message is accepted (outbound_message)
 * or when a scan of the due index finds it due; it leaves when the
 * outcome of its attempt is durably recorded (store_queue_results). The
 * due index is read from its front only, up to the first entry that is
 * not due, so entries waiting for a later try cost nothing: there is no
 * periodic walk over the queue.
 *
 * Outcomes and reports are recorded in one store transaction, so a crash
 * can neither lose a bounce nor make two. A crash during an attempt
 * leaves the entry due: it is tried again at start (at least once).
 *
 * Mesh domains. A recipient whose domain another mesh member hosts
 * (mesh_route()) is not looked up in DNS: its job goes to that home
 * node over the mesh (mesh_xfer.c) and the home node's per-recipient
 * answers are recorded like SMTP replies. When the home node cannot be
 * reached the entries are deferred ("4.4.1 home node NAME of DOMAIN
 * unreachable; held for store and forward") and taken again as soon
 * as it can (outbound_mesh_ready()), not only at their next try.
 *
 * Loop thread only.
 */
#ifndef RM_NODE_OUTBOUND_H
#define RM_NODE_OUTBOUND_H

#include <stdint.h>

struct node;
struct outbound;

#define OB_ACTIVE_MAX 20000 /* entries in memory at once */
#define OB_JOB_RCPTS                                                           \
    100 /* recipients per transaction (RFC 5321                                \
           §4.5.3.1.8's minimum a server takes) */

struct outbound_stats {
    uint64_t delivered;   /* recipients delivered (2xx after DATA) */
    uint64_t deferred;    /* attempts that ended in a deferral */
    uint64_t bounced;     /* recipients returned to their sender */
    uint64_t reports;     /* delivery status notifications queued */
    uint64_t connections; /* SMTP connections made */
    uint64_t active;      /* entries in the active set now */
    uint64_t conns_now;   /* SMTP connections open now */
};

/* 0, or RM_E_CONFIG (resolver, TLS client) with the reason logged. */
int outbound_new(struct node *n, struct outbound **out);
/* A message was committed: take its remote entries now. */
void outbound_message(struct outbound *o, const char *qid);
/* A mesh home node became reachable: entries waiting for a mesh domain
   whose home node can be reached now are taken at once, whatever their
   next try (coalesced: one queue walk per burst of calls). */
void outbound_mesh_ready(struct outbound *o);
/* Look at the due index again soon (retry, release, start). */
void outbound_kick(struct outbound *o);
void outbound_get_stats(const struct outbound *o, struct outbound_stats *s);
/* Stop: close connections (entries in flight stay queued in the store and
   are tried again at the next start); memory goes once handles close. */
void outbound_close(struct outbound *o);

#endif
