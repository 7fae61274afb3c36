/*
 * mesh_xfer: mail between mesh nodes — a message for a domain another
 * member hosts goes over the mesh connection to that home node (wire
 * messages: mesh/mxfer.h).
 *
 * Sender (outbound.c calls mesh_xfer_send() for a job): the begin
 * message (envelope, recipients, size, mesh message id = this node's
 * fingerprint + "/" + queue id, the same at every retry), then the data
 * in pieces of MXFER_CHUNK_MAX bytes, at most MESH_XFER_WINDOW bytes
 * ahead of what the home node acknowledged, at most MESH_XFER_LINK_MAX
 * transfers at a time per connection (more wait in turn): the
 * connection's 16 MiB write queue is never reached. The outcome comes
 * through the callback: per-recipient results, or a failure (home node
 * unreachable, connection lost, no progress for MESH_XFER_TIMEOUT_MS).
 *
 * Home node: each recipient is checked (a local user must exist, else a
 * permanent 5.1.1 for that recipient); recipients whose dedup record
 * (the mesh message id and the canonical address, hashed, in the mesh
 * table under "xd/") is present are answered as delivered and left
 * out; the rest are stored with store_msg_accept(), local routes, their
 * dedup records in the same transaction (a record that appeared
 * meanwhile fails the transaction: the check is made again), and
 * handed to the queue manager for delivery into mailboxes. Only after
 * that commit are the results sent: exactly one copy per recipient
 * whatever is retried. Dedup records are removed after [mesh]
 * tombstone_lifetime (a sweep every MESH_XFER_SWEEP_S).
 *
 * Bounds: MESH_XFER_IN_MAX transfers being received per connection; a
 * transfer's data up to its declared size and [smtp] max_message_size
 * (larger is answered 5.3.4 at once). A malformed message, data beyond
 * the declared size, or a transfer past the limit close the connection
 * with a log line.
 *
 * Loop thread only.
 */
#ifndef RM_NODE_MESH_XFER_H
#define RM_NODE_MESH_XFER_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "mesh/mxfer.h"

struct mesh;
struct mesh_xfer;

#define MESH_XFER_WINDOW (2u << 20) /* unacknowledged bytes per transfer */
#define MESH_XFER_LINK_MAX 4        /* transfers sent at once per link */
#define MESH_XFER_IN_MAX 8          /* transfers received per link */
#define MESH_XFER_TIMEOUT_MS 60000  /* no progress: given up */
#define MESH_XFER_SWEEP_S 600       /* dedup records looked at */
#define MESH_XFER_DEDUP_PREFIX "xd/"

/* ---- for mesh.c ------------------------------------------------------- */

int mesh_xfer_new(struct mesh *m, struct mesh_xfer **out);
/* The node is closing: forget transfers being sent (their owners have
   cancelled them) and received; commits in flight still finish. */
void mesh_xfer_stop(struct mesh_xfer *x);
/* Free (mesh.c, once nothing is held: see mesh__hold()). NULL: no-op. */
void mesh_xfer_free(struct mesh_xfer *x);
/* A frame of a member (peer: its name) on link. 1 when it is one of
   ours (handled, maybe by closing the link), 0 when not. */
int mesh_xfer_frame(struct mesh_xfer *x, uint64_t link, const char *peer,
                    const char *type, size_t tlen, const msgpack_object *body);
void mesh_xfer_link_closed(struct mesh_xfer *x, uint64_t link);
/* Every second: timeouts, and the dedup sweep when due. */
void mesh_xfer_tick(struct mesh_xfer *x);

/* ---- for outbound.c ---------------------------------------------------- */

/*
 * The outcome of a transfer: status 0 and res (n = the recipients, in
 * order), or status < 0 and why (RM_E_CLOSED: the connection went,
 * RM_E_TIMEOUT: no progress; RM_E_PROTO: a bad answer). Borrowed for the
 * call.
 */
typedef void (*mesh_xfer_cb)(void *arg, int status, const char *why,
                             const struct mxfer_res *res);

/*
 * Send a message to the member with Ed25519 key home_pk. b: the envelope
 * and recipients (b->x and b->id are set here, from qid); data / len:
 * the message, borrowed until the callback or mesh_xfer_cancel(). On
 * success *handle names the transfer and cb follows, once, never from
 * inside this call. Errors (no callback): RM_E_AGAIN (no connection to
 * the home node now: a dial is started), RM_E_INVAL, -ENOMEM,
 * RM_E_CLOSED.
 */
int mesh_xfer_send(struct mesh *m, const uint8_t home_pk[32], const char *qid,
                   const struct mxfer_begin *b, const char *data, size_t len,
                   mesh_xfer_cb cb, void *arg, uint64_t *handle);
/* Forget a transfer: its callback will not run. */
void mesh_xfer_cancel(struct mesh *m, uint64_t handle);

#endif
