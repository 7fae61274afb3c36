/*
 * mesh_int.h: what mesh.c lends to mesh_xfer.c (the mail transfers over
 * its connections). Not for other modules. Loop thread only.
 *
 * Links are named by a number that is never reused, so that a transfer
 * can hold on to one without holding a pointer that a closed connection
 * would leave dangling; mesh_xfer_link_closed() tells when one goes.
 */
#ifndef RM_NODE_MESH_INT_H
#define RM_NODE_MESH_INT_H

#include <stddef.h>
#include <stdint.h>

struct mesh;
struct node;

struct node *mesh__node(struct mesh *m);
struct mesh_xfer *mesh__xfer(struct mesh *m);
/* 1 when the member named name announces egress in its record. */
int mesh__peer_egress(struct mesh *m, const char *name);
/* The name of the member with key pk into out (unchanged if unknown). */
void mesh__peer_name(struct mesh *m, const uint8_t pk[32], char *out,
                     size_t outsz);
/* Our outgoing link to the member whose Ed25519 key is pk, when it is
 * up; 0 when not (a dial is started when one is due). */
uint64_t mesh__out_link(struct mesh *m, const uint8_t pk[32]);
/* Send one frame on a link: mesh_conn_send()'s errors, RM_E_CLOSED when
 * the link is gone. */
int mesh__link_send(struct mesh *m, uint64_t link, const char *type,
                    const void *body, size_t len);
/* The bytes sent on a link and not yet written (mesh_conn_queued());
 * RM_E_CLOSED when the link is gone. */
int mesh__link_queued(struct mesh *m, uint64_t link, size_t *queued);
/* Close a link (bad: it sent something malformed, counted as bad
 * input). Its closed callback comes later, never from inside. */
void mesh__link_drop(struct mesh *m, uint64_t link, int bad);
/* A store request that will call back into the transfer module: m is
 * not freed before the matching release. mesh__release() may free m
 * (and the transfer module): nothing may touch either after it. */
void mesh__hold(struct mesh *m);
void mesh__release(struct mesh *m);

/* The replication module (mesh_repl.c). */
struct mesh_repl *mesh__repl(struct mesh *m);
/* 1 once this node has created or joined a mesh. */
int mesh__is_member(struct mesh *m);
/* The SWIM state (enum swim_state) of the member with key pk and since
 * when (unix ms) it has been in it; -1 when pk is no member we know. */
int mesh__member_state(struct mesh *m, const uint8_t pk[32], int64_t *since_ms);
/* The keys of the members alive or suspect now (not us, not revoked),
 * at most max; returns how many. */
unsigned mesh__live_members(struct mesh *m, uint8_t (*out)[32], unsigned max);

#endif
