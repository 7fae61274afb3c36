/*
 * mesh_conn: one mesh connection on the loop — TCP, the Noise_XX
 * handshake (mesh/noise.h), then encrypted frames (mesh/frame.h).
 *
 * Wire: each handshake message is a 2-byte big-endian length and the
 * Noise message (the Noise specification's framing, section 3); the
 * prologue "relaymesh-mesh-v1" (or the owner's, see opts) binds the
 * handshake to this protocol. The MAPI bridge uses the same connection.
 *   initiator -> responder   e                       (payload empty)
 *   responder -> initiator   e, ee, s, es            payload: its credential
 *   initiator -> responder   s, se                   payload: its credential
 * A credential (membership chain, or an invite token for a joiner) is
 * opaque here: the owner's verify callback decides, with the peer's proven
 * static key, before the connection carries any frame. A refusal closes
 * the connection at once: nothing the peer sends after is read.
 *
 * Liveness: every ka_interval a keepalive frame goes out when nothing else
 * did; a connection that received nothing for idle_timeout is closed
 * (RM_E_AGAIN): a dead TCP connection is noticed in bounded time even
 * when the kernel would wait minutes. Connect and handshake together must
 * finish within hs_timeout.
 *
 * Memory: a connection is heap-allocated and freed after its closed
 * callback returned; the owner must forget its pointer in that callback.
 * mesh_conn_close() may be called from any callback, any number of
 * times. Loop thread only.
 */
#ifndef RM_NODE_MESH_CONN_H
#define RM_NODE_MESH_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "mesh/frame.h"

#define MESH_CONN_CRED_MAX 16384     /* credential bytes, each way */
#define MESH_CONN_WQ_MAX (16u << 20) /* bytes queued to a slow peer */
#define MESH_CONN_FRAME_TYPE_MAX 16

struct mesh_conn;

struct mesh_conn_cbs {
    /* The peer proved it holds the static key rs (X25519) and sent cred.
     * Return 0 to go on, or a negative code to refuse (the connection is
     * closed with it; write why into why, whysz bytes). */
    int (*verify)(struct mesh_conn *c, const uint8_t rs[32],
                  const uint8_t *cred, size_t len, char *why, size_t whysz);
    /* The handshake is complete: frames may flow. */
    void (*established)(struct mesh_conn *c);
    /* One frame (borrowed for the call). */
    void (*frame)(struct mesh_conn *c, const struct frame_msg *m);
    /* The connection is gone (reason 0 after mesh_conn_close(c, 0)). */
    void (*closed)(struct mesh_conn *c, int reason, const char *why);
};

struct mesh_conn_opts {
    const uint8_t *s_priv; /* X25519 static private key, copied */
    const uint8_t *cred;   /* credential sent in the handshake, copied */
    size_t cred_len;
    uint64_t hs_timeout_ms;
    uint64_t ka_interval_ms;
    uint64_t idle_timeout_ms;
    /* The Noise prologue, which binds the handshake to one protocol:
     * NULL is the mesh's "relaymesh-mesh-v1"; the bridge uses its own
     * (bridge/server.h), so neither side can be talked into the other. */
    const char *prologue;
};

/* Dial addr. 0 (the outcome comes through the callbacks, never from
 * inside this call) or an error (nothing to clean up). */
int mesh_conn_connect(uv_loop_t *loop, const struct sockaddr *addr,
                      const struct mesh_conn_opts *o,
                      const struct mesh_conn_cbs *cb, void *user,
                      struct mesh_conn **out);
/* Accept a pending connection from listener as responder. */
int mesh_conn_accept(uv_stream_t *listener, const struct mesh_conn_opts *o,
                     const struct mesh_conn_cbs *cb, void *user,
                     struct mesh_conn **out);

/* Send one frame; body is one packed msgpack value. Errors: RM_E_AGAIN
 * (handshake not finished), RM_E_CLOSED, RM_E_TOOBIG (the peer does not
 * read: the connection is closed), frame_encode()'s. */
int mesh_conn_send(struct mesh_conn *c, const char *type, const void *body,
                   size_t len);
void mesh_conn_close(struct mesh_conn *c, int reason);
/* Close after what was sent has been written (a last answer, then the
 * end); nothing more may be sent. The closed callback follows (reason
 * 0). */
void mesh_conn_close_flush(struct mesh_conn *c);

void *mesh_conn_user(const struct mesh_conn *c);
void mesh_conn_set_user(struct mesh_conn *c, void *user);
int mesh_conn_is_up(const struct mesh_conn *c); /* handshake done, open */
int mesh_conn_initiator(const struct mesh_conn *c);
/* "ADDR:PORT" of the peer (as connected / accepted). */
const char *mesh_conn_peer(const struct mesh_conn *c);
uint64_t mesh_conn_bytes_in(const struct mesh_conn *c);
uint64_t mesh_conn_bytes_out(const struct mesh_conn *c);
/* Bytes written and not yet taken by the kernel: a sender that writes
 * a burst checks it against MESH_CONN_WQ_MAX first. */
size_t mesh_conn_queued(const struct mesh_conn *c);

#endif
