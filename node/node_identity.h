/*
 * node_identity: the node's long-term key pair, made at first start.
 *
 * One Ed25519 key pair (libsodium crypto_sign): it signs what the node
 * says about itself to the mesh (node records, invites), and its X25519
 * form (crypto_sign_ed25519_*_to_curve25519) is the node's static key in
 * the Noise handshake. Only the 32-byte seed is stored, in
 * <datadir>/node.key (mode 0600, written once, never overwritten):
 *
 *     relaymesh node key v1
 *     <seed, base64>
 *
 * The fingerprint shown to administrators (`relaymesh status`, and what
 * the MAPI DLL pins) is the first 20 bytes of BLAKE2b-256 over the Ed25519
 * public key, in base32 groups: "ABCD-EFGH-...".
 *
 * The secret key lives in sodium_malloc memory (guarded, locked, wiped
 * on free). Loop thread only.
 */
#ifndef RM_NODE_IDENTITY_H
#define RM_NODE_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define NODE_ID_PK_LEN 32 /* Ed25519 public key */
#define NODE_ID_FP_LEN 40 /* "XXXX-" x 8, NUL included */
#define NODE_ID_FILE "node.key"

struct node_identity {
    uint8_t pk[NODE_ID_PK_LEN]; /* Ed25519 public key */
    uint8_t x25519_pk[32];      /* Noise static public key */
    char pk_b64[48];            /* base64 of pk */
    char fingerprint[NODE_ID_FP_LEN];
    char path[4096];
    int created;       /* made by this start */
    unsigned char *sk; /* 64 bytes, sodium_malloc */
};

/*
 * Load <datadir>/node.key, or create it when it does not exist. 0, or
 * RM_E_CONFIG with what is wrong and what to do in err (a file that does
 * not parse, has the wrong size or is readable by others is refused, never
 * replaced).
 */
int node_identity_load(struct node_identity *id, const char *datadir, char *err,
                       size_t errsz);
void node_identity_free(struct node_identity *id);

/* Fingerprint of an Ed25519 public key, as above. */
void node_identity_fingerprint(const uint8_t pk[NODE_ID_PK_LEN],
                               char out[NODE_ID_FP_LEN]);

#endif
