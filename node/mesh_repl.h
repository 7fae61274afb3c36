/*
 * mesh_repl: R-way replication of the queue, anti-entropy and takeover
 * (wire messages and the record: mesh/mrepl.h).
 *
 * Replication. An accepted message with recipients that are not
 * delivered locally at once (Internet mail, mail held for another
 * office) gets a replica record (envelope, those recipients and their
 * state), stored by the accepting node (the origin) under "rp/" + key in
 * the store's mesh table, and sent with the message to [mesh] replicas
 * live members chosen by rendezvous hashing on its mesh id. A replica
 * keeps the record and the message ("rb/" + key + chunk) in that table,
 * not in its queue, and answers "rack" after its commit. Every outcome
 * recorded by outbound (mesh_repl_results()) updates the record and is
 * sent to the others; when no recipient is pending the record becomes a
 * tombstone (no message), removed after [mesh] tombstone_lifetime.
 *
 * Anti-entropy. When our link to a peer comes up and every
 * MESH_REPL_SUM_S, we send it a summary of our own records it should
 * hold (count, highest seq, a digest); a peer whose own summary differs
 * runs a range-based reconciliation (mesh/recon.h) over the records'
 * LMDB key order, and each side then sends the versions the other lacks.
 * Every node keeps the greater version (mrepl_rec_cmp()).
 *
 * Takeover. When the node responsible for a record (its origin, or the
 * replica that claimed it) has been dead (SWIM) for [mesh]
 * takeover_grace and the record is no tombstone, the first live replica
 * in the record's rendezvous order claims it (epoch + 1), moves the
 * pending recipients into its own queue (one store transaction, guarded
 * by "rt/" + key so it happens once) and sends the claim to the others.
 * A node that sees a higher claim for a record it delivers stands down
 * (its queue entries are removed). An origin holds its entries back
 * until it has reconciled with one of their replicas since it started
 * and since its link to it last came up (or the grace passed), so that
 * after a restart or a partition it learns of a claim before it could
 * deliver again.
 *
 * Loop thread only.
 */
#ifndef RM_NODE_MESH_REPL_H
#define RM_NODE_MESH_REPL_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "store/store.h"

struct mesh;
struct mesh_repl;
struct ctl_enc;

#define MESH_REPL_SUM_S 30              /* summaries to each peer */
#define MESH_REPL_SCAN_S 2              /* takeover / tombstone scan */
#define MESH_REPL_BODY_CHUNK (1u << 20) /* message bytes per table value */
#define MESH_REPL_ASM_MAX 32            /* messages being received at once */
#define MESH_REPL_WAITS_MAX 4096        /* replies held for ack_replicas */

/* ---- for mesh.c ------------------------------------------------------- */

int mesh_repl_new(struct mesh *m, struct mesh_repl **out);
void mesh_repl_stop(struct mesh_repl *r);
void mesh_repl_free(struct mesh_repl *r);
/* 1 when a mesh table key is one of ours (not membership state). */
int mesh_repl_owns_key(const void *key, size_t klen);
/* A frame of the member with key peer on link: 1 when ours. */
int mesh_repl_frame(struct mesh_repl *r, uint64_t link, const uint8_t peer[32],
                    const char *type, size_t tlen, const msgpack_object *body);
/* Our outgoing link to peer is up: anti-entropy with it. */
void mesh_repl_link_up(struct mesh_repl *r, uint64_t link,
                       const uint8_t peer[32]);
/* Every second. */
void mesh_repl_tick(struct mesh_repl *r);
/* The link's write queue drained (mesh_conn's drained callback): send
   more of the messages waiting for it. */
void mesh_repl_drained(struct mesh_repl *r, uint64_t link);
/* Replication lag per peer for `mesh status` (an array value). */
void mesh_repl_status_enc(struct mesh_repl *r, struct ctl_enc *e);

/* ---- for the queue manager and outbound -------------------------------- */

/* A message with remote recipients was accepted: replicate it. */
void mesh_repl_accepted(struct mesh *m, const char *qid);
/* Outcomes recorded for entries (after their commit). */
void mesh_repl_results(struct mesh *m, const struct store_qresult *res,
                       size_t n);
/* 0 when outbound must not take qid's entries now (an origin not yet
 * reconciled with their replicas after a restart or a reconnect, or
 * another node claimed them); 1 otherwise. */
int mesh_repl_may_deliver(struct mesh *m, const char *qid);
/* The mesh id qid was accepted with when it is mail this node took over
 * (1, into out), else 0. */
int mesh_repl_mid(struct mesh *m, const char *qid, char *out, size_t outsz);
/* The replica record of a queue id, for `queue list/show`: 1 and the
 * replicas' and owner's names, 0 when none. */
int mesh_repl_describe(struct mesh *m, const char *qid, char *replicas,
                       size_t rsz, char *owner, size_t osz);

/* ---- [mesh] ack_replicas: 250 only once replicas hold the message ---- */

/*
 * A message that will be replicated (it has recipients not delivered
 * locally at once) is answered only when [mesh] ack_replicas of its
 * replicas have acknowledged it ("rack", sent after their commit), or
 * refused (451 4.4.3) and withdrawn everywhere when they have not within
 * [mesh] ack_timeout. Use:
 *
 *   before the message's commit:  mesh_repl_wait_new()    (can it wait?)
 *   commit failed:                mesh_repl_wait_cancel()
 *   commit done:                  mesh_repl_wait_start()  (instead of
 *                                 node_queue_local/_remote)
 *   the client went meanwhile:    mesh_repl_wait_cancel() (withdraws)
 *
 * While a wait is undecided nothing delivers the message: outbound and
 * the local rescan skip it (mesh_repl_may_deliver(),
 * mesh_repl_wait_pending()).
 *
 * Callback status:
 *   0            the replicas hold it: hand it on with node_queue_local()
 *                and node_queue_outbound() (it is replicated already),
 *                then answer 250.
 *   RM_E_AGAIN   not enough acknowledgements: the message is withdrawn
 *                (queue entries and message removed and the replica
 *                record made a tombstone, one transaction; the tombstone
 *                sent to the replicas) before the callback runs.
 *   other        the withdrawal failed (store; logged with what to do).
 * The wait is freed by this module after its callback; the caller must
 * drop its pointer there. Loop thread only.
 */
struct mesh_repl_wait;
typedef void (*mesh_repl_wait_cb)(void *arg, int status);

/* 0 and *out (owned by the caller until started or cancelled), or
   RM_E_AGAIN / -ENOMEM with a reason for the log and the reply in why:
   not in a mesh, fewer live peers than ack_replicas, too many waits. */
int mesh_repl_wait_new(struct mesh *m, struct mesh_repl_wait **out, char *why,
                       size_t whysz);
/* qid has been committed: replicate it and wait. cb runs exactly once
   (possibly before this returns: nothing to wait for), unless the wait
   is cancelled first. */
void mesh_repl_wait_start(struct mesh_repl_wait *w, const char *qid,
                          mesh_repl_wait_cb cb, void *arg);
/* The caller no longer wants the answer: before start, w is freed; after,
   the message is withdrawn as on a timeout and cb never runs. */
void mesh_repl_wait_cancel(struct mesh_repl_wait *w);
/* 1 while qid's acknowledgements are awaited or it is being withdrawn. */
int mesh_repl_wait_pending(struct mesh *m, const char *qid);

#endif
