/*
 * mesh: this node's part in the mesh — admission (create, invite, join,
 * remove), the secure connections to its peers (mesh_conn.c), SWIM
 * membership (mesh/swim.c) over them, signed node records and membership
 * certificates (mesh/mrec.c), and the control commands `mesh ...`.
 *
 * Trust. A mesh is created by one node, whose self-signed membership
 * certificate is the root. Every other member holds a certificate issued
 * by the member that admitted it (or renewed it), so a member proves its
 * membership with a chain of at most MREC_CHAIN_MAX certificates ending
 * at the root. Certificates expire ([mesh] membership_lifetime) and are
 * renewed at half-life by a connected peer (the root re-signs its own).
 * A revocation, signed by any member, is kept forever and gossiped; a
 * chain through a revoked node is refused. Invite tokens are signed by
 * the inviter, expire, and are single-use: the inviter keeps the pending
 * ones in the store and consumes one atomically when it admits.
 *
 * Connections. Each node dials every member it needs to talk to (one
 * outgoing connection per peer; the peer's own dial is a second one),
 * sends SWIM messages on its outgoing connection, and answers push/pull
 * requests on the connection they came on. A failed dial is retried with
 * jittered exponential backoff (250 ms doubling to 2 probe intervals);
 * dead members are still dialed at that pace, and a member heard from
 * again is reconciled at once (full state push/pull both ways).
 *
 * Loop thread only. Persistent state is in the store's mesh table.
 */
#ifndef RM_NODE_MESH_H
#define RM_NODE_MESH_H

#include <stddef.h>
#include <stdint.h>

struct node;
struct mesh;
struct ctl_obj;
struct ctl_enc;

/* Start the mesh part of the node: load the membership from the store,
 * listen on [mesh] listen, and, when this node is a member, start
 * membership and dial the peers. err gets what went wrong. */
int mesh_new(struct node *n, struct mesh **out, char *err, size_t errsz);
/* Leave the mesh's connections and free everything once handles have
 * closed; pending control commands are answered RM_E_CLOSED. */
void mesh_close(struct mesh *m);

/* The local users changed: publish a new node record. */
void mesh_users_changed(struct mesh *m);

/*
 * Control commands "mesh.create", "mesh.invite", "mesh.join",
 * "mesh.remove", "mesh.peers", "mesh.status". Returns:
 *   0  done: one value was written to data (a plain ctl_enc);
 *   1  pending: cb(arg, status, err, data) follows, once, later;
 *  <0  failed: the reason is in err.
 */
typedef void (*mesh_ctl_cb)(void *arg, int status, const char *err,
                            struct ctl_enc *data);
int mesh_ctl(struct mesh *m, const char *cmd, const struct ctl_obj *args,
             struct ctl_enc *data, char *err, size_t errsz, mesh_ctl_cb cb,
             void *arg);
/* Forget a pending command's callback (its client went away). */
void mesh_ctl_cancel(struct mesh *m, void *arg);

/*
 * Routing: where mail for an address goes in the mesh.
 *
 * mesh_route() looks at the domain of addr (len bytes, "local@domain",
 * no <>): 1 when another member hosts it (its current node record lists
 * the domain; revoked members and members that left do not count),
 * with *home filled; 0 when it is not a mesh domain (one of this node's
 * own [smtp] domains, a domain no member announces, no address, no
 * mesh, or m NULL). home->user_known says whether the home node
 * announces the user (canonical comparison, store_addr_canon(); the
 * postmaster of a hosted domain is always known); home->reachable
 * whether our connection to it is up now.
 */
#define MESH_NAME_MAX 64
#define MESH_FP_MAX 40

struct mesh_home {
    uint8_t pk[32]; /* Ed25519 key of the home node */
    char name[MESH_NAME_MAX];
    char fp[MESH_FP_MAX];
    int user_known;
    int reachable;
};

int mesh_route(struct mesh *m, const char *addr, size_t len,
               struct mesh_home *home);
/* Internet mail of a node without egress ([mesh] egress = no) goes to a
 * member that has it: 1 with *home filled (a live member whose
 * connection is up if there is one, else a live one, else any; none at
 * all: a zero key, name "(none)", not reachable, so the mail is held);
 * 0 when this node delivers to the Internet itself (it has egress, or is
 * not in a mesh). */
int mesh_egress_route(struct mesh *m, struct mesh_home *home);

/* 1 when our connection to the member with key pk is up; 0 when not (a
   dial is started when one is due). */
int mesh_reach(struct mesh *m, const uint8_t pk[32]);

/* The user directory of the other offices: cb(arg, address, node name)
   for every user the current record of a member announces (revoked
   members and members that left do not count; this node's own users are
   in the store). A non-zero return from cb stops the walk and is
   returned. 0 with m NULL. */
typedef int (*mesh_users_cb)(void *arg, const char *addr, const char *node);
int mesh_users_each(struct mesh *m, mesh_users_cb cb, void *arg);

/* The "mesh" part of `relaymesh status`: one map value. */
void mesh_status_enc(struct mesh *m, struct ctl_enc *e);

#endif
