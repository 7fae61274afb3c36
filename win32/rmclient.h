/*
 * rmclient: the DLL's side of the bridge channel (bridge/README.md) — a
 * blocking Winsock connection to a node's bridge listener, the Noise_XX
 * handshake as initiator (mesh/noise.h) with the node's key pinned, then
 * request / response frames (mesh/frame.h carrying bridge/proto.h bodies).
 *
 * Wire (the same as node/mesh_conn.c, with its own prologue):
 *   each handshake message: 2-byte big-endian length, then the Noise
 *   message; prologue "relaymesh-bridge-v1" (RMC_PROLOGUE).
 *   -> e                      payload empty
 *   <- e, ee, s, es           payload: msgpack map {"pk": bin 32 (the
 *                             node's Ed25519 public key), "node": str}
 *   -> s, se                  payload empty (the client's static key is a
 *                             fresh X25519 key per connection; the user
 *                             proves who they are with logon)
 *   The client refuses the node unless crypto_sign_ed25519_pk_to_curve25519
 *   (pk) equals the proven remote static key AND the fingerprint of pk
 *   (first 20 bytes of BLAKE2b-256 over pk, base32 RFC 4648 alphabet
 *   "A..Z2..7", groups of 4 joined by '-', as node/node_identity.c and
 *   `relaymesh status` show it) equals the configured one (compared
 *   ignoring case, '-' and spaces).
 *   Then frames: {"v":1,"t":"req","b":request} out, {"t":"res"} in; frames
 *   of type "ka" (keepalive) and "ev" (reserved) are read and ignored.
 *
 * Memory: plain malloc / calloc / realloc / free. The DLL is linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free (alloc.c),
 * so the fault-injection test reaches every allocation, also those inside
 * proto.c, frame.c and msgpack-c. Never aborts.
 * Threads: one struct rmc is used by one thread at a time.
 */
#ifndef RM_WIN32_RMCLIENT_H
#define RM_WIN32_RMCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "bridge/proto.h"

#define RMC_PROLOGUE "relaymesh-bridge-v1"
#define RMC_DEFAULT_NODE "127.0.0.1:4751"
#define RMC_TIMEOUT_MS 30000 /* connect, handshake and each call */

/* Where and as whom to log on. Filled by rmc_cfg_load() (config.c). */
struct rmc_cfg {
    char node[256];        /* "host:port" ("[v6]:port"); default above */
    char fingerprint[64];  /* node key fingerprint; "" refuses to connect */
    char user[256];        /* address */
    char password[1025];   /* wiped by rmc_cfg_wipe() */
    unsigned timeout_ms;   /* RMC_TIMEOUT_MS unless overridden */
};

/*
 * Load the configuration: HKCU\Software\relaymesh values "Node" (REG_SZ),
 * "Fingerprint" (REG_SZ), "User" (REG_SZ), "Password" (REG_BINARY: the
 * UTF-8 password protected with CryptProtectData, current user scope),
 * "TimeoutMs" (REG_DWORD); then the environment overrides
 * RELAYMESH_MAPI_NODE, RELAYMESH_MAPI_FINGERPRINT, RELAYMESH_MAPI_USER,
 * RELAYMESH_MAPI_PASSWORD, RELAYMESH_MAPI_TIMEOUT_MS; then the caller's
 * profile / password (MAPILogon's lpszProfileName / lpszPassword, UTF-8,
 * either may be NULL or "": not given), which win over both.
 * 0, or a negative code (-ENOMEM; RM_E_CONFIG with why filled when a
 * value is unreadable, e.g. a password DPAPI cannot unprotect).
 */
int rmc_cfg_load(struct rmc_cfg *cfg, const char *profile,
                 const char *password, char *why, size_t whysz);
void rmc_cfg_wipe(struct rmc_cfg *cfg);
/* Store the configuration under HKCU (password protected with DPAPI).
 * Used by the test program and by an administrator's setup tool. */
int rmc_cfg_save(const struct rmc_cfg *cfg, char *why, size_t whysz);

struct rmc;

/*
 * Connect to cfg->node, run the handshake, check the pinned key.
 * Errors: RM_E_CONFIG (no fingerprint configured, bad node address),
 * RM_E_PERM (the node's key does not match the pinned fingerprint),
 * RM_E_AGAIN (timed out), RM_E_PROTO (the peer is not a bridge), a negative
 * errno-style code for socket errors (node down: connection refused),
 * -ENOMEM. why is filled on every error, for the DLL's log.
 */
int rmc_open(const struct rmc_cfg *cfg, struct rmc **out, char *why,
             size_t whysz);
/*
 * One request, one response: q->id is set here (a counter). Encodes q,
 * sends it, reads frames until the response with that id, decodes it as
 * q->op into *res (the caller calls bproto_res_cleanup(res) after, also
 * when this returns an error). Returns 0 when a response arrived — it may
 * be a failed one (res->ok == 0, res->err.code) — or a transport error
 * (the connection is then dead: rmc_close() it): RM_E_CLOSED,
 * RM_E_AGAIN (timed out), RM_E_PROTO, -ENOMEM, RM_E_INVAL / RM_E_TOOBIG (q does not
 * encode; the connection stays usable).
 */
int rmc_call(struct rmc *c, struct bproto_req *q, struct bproto_res *res);
/* The node's name from the handshake; "" when it sent none. */
const char *rmc_node_name(const struct rmc *c);
void rmc_close(struct rmc *c);

#endif
