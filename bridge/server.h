/*
 * bridge server: the node's service for MAPI clients (the Simple MAPI
 * DLL, win32/), on [bridge] listen (default 127.0.0.1:4751).
 *
 * Channel: node/mesh_conn.c as responder, with its own Noise prologue
 * (BRIDGE_PROLOGUE), so a mesh peer and a bridge client can never be
 * mistaken for one another. The node's handshake payload is
 * {"pk": bin 32 (its Ed25519 public key), "node": str (its name)}: the
 * client checks that pk is the key it proved and that its fingerprint is
 * the one it pins (`relaymesh status`). The client's payload is empty
 * (its static key is a throwaway; the user proves who they are with the
 * logon request). Then request / response frames as bridge/README.md
 * describes; bridge/proto.h is the codec.
 *
 * Sessions: one per connection, at most [bridge] max_sessions. Requests
 * are answered in order, one at a time (a store write in flight holds the
 * next request back); at most BRIDGE_QUEUE_MAX decoded requests wait,
 * past that the client is not reading its answers and is cut off. Logon
 * checks the password with argon2id on the thread pool and shares the
 * failure counters (per address, per user) and the delays of SMTP AUTH.
 *
 * Folders: Inbox is the user's mailbox, Sent and Drafts the store
 * mailboxes "<user>/sent" and "<user>/drafts" (`relaymesh mailbox list
 * alice@example.org/sent`). A message id on the wire is
 * UIDVALIDITY << 32 | UID.
 *
 * Loop thread only.
 */
#ifndef RM_BRIDGE_SERVER_H
#define RM_BRIDGE_SERVER_H

#include <stddef.h>
#include <stdint.h>

struct node;
struct bridge;
struct ctl_enc;

#define BRIDGE_PROLOGUE "relaymesh-bridge-v1"
#define BRIDGE_QUEUE_MAX 16 /* decoded requests waiting per session */

/* Listen on [bridge] listen (nothing when it is empty). 0, or an error
 * with what went wrong in err (an address that cannot be bound). */
int bridge_new(struct node *n, struct bridge **out, char *err, size_t errsz);
/* Close the listeners and every session; the memory goes once the last
 * handle has closed (run the loop). NULL is fine. */
void bridge_close(struct bridge *b);
/* "host:port" of each listener, for the start-up banner. */
size_t bridge_listeners(const struct bridge *b, const char **out, size_t max);
/* The "bridge" part of `relaymesh status`: one map value. */
void bridge_status_enc(const struct bridge *b, struct ctl_enc *e);

#endif
