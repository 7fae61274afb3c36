/*
 * mrec: the mesh's wire records and their codecs — membership certificates
 * and chains, node records, revocations, invite tokens, SWIM messages and
 * push/pull state. Pure C: no I/O, no clock (times are passed in), no
 * globals; msgpack-c for the encoding, libsodium for Ed25519.
 *
 * Encodings. Every record is one msgpack value. Records are maps with
 * short string keys, always written in the order listed below (the
 * encoder is deterministic: integers and strings take their shortest
 * form). A decoder ignores map keys it does not know (forward
 * compatibility); a required key missing, a key given twice, a non-string
 * key, a value of the wrong type, a string or list past its bound or a
 * byte field of the wrong length is RM_E_PROTO. Keys and ids are msgpack
 * bin of exactly their size; text is msgpack str (never NUL inside);
 * times are signed integers (unix seconds).
 *
 *   cert     {"m": mesh_id, "k": node_pk, "n": name, "i": issued,
 *             "e": expires, "b": issuer_pk, "s": sig}
 *   chain    [cert, ...]                     1 .. MREC_CHAIN_MAX certs
 *   node     {"m": mesh_id, "k": node_pk, "n": name, "v": version (uint),
 *             "sw": software, "eg": egress (bool), "a": [addr, ...],
 *             "d": [domain, ...], "u": [user, ...], "s": sig}
 *   revoke   {"m": mesh_id, "k": node_pk, "n": name, "t": when,
 *             "b": by_pk, "s": sig}
 *   invite   {"m": mesh_id, "r": root_pk, "b": inviter_pk,
 *             "bn": inviter_name, "a": [addr, ...], "id": id,
 *             "n": name ("" or a name), "e": expires, "s": sig}
 *   swim     [type, seq, from, target, [[name, from, incarnation, state],
 *             ...]]               target "" unless ping / ping-req
 *   pp       {"r": want_reply (bool), "e": [[name, incarnation, state,
 *             record_version], ...]}
 * Arrays of fixed shape (swim, its updates, pp entries) may carry more
 * trailing elements than listed; a decoder ignores them (as unknown keys).
 *
 * Text rules (checked by encoders, RM_E_INVAL, and decoders, RM_E_PROTO):
 *   name      1..63 bytes of [A-Za-z0-9._-] (certs, records, revocations,
 *             invites). SWIM messages and push/pull entries only require
 *             swim.h's rule: 1..63 bytes, no NUL.
 *   addr      "host:port" or "[v6]:port", 1..127 bytes of printable ASCII
 *             without space; port 1..65535; host non-empty.
 *   domain    1..253 bytes of [a-z0-9._-] or UTF-8 (bytes >= 0x80), no
 *             upper case, no leading, trailing or double dot.
 *   user      "local@domain", at most 254 bytes; the last '@' splits; local
 *             part 1..64 bytes of printable ASCII without space, or UTF-8;
 *             domain as above.
 *   software  0..31 bytes of printable ASCII.
 * Lists are not checked for duplicates.
 *
 * Signatures. Ed25519 (crypto_sign_detached) over a context string with
 * its NUL ("relaymesh-cert-v1\0", "relaymesh-node-v1\0",
 * "relaymesh-revoke-v1\0", "relaymesh-invite-v1\0") followed by the
 * canonical encoding of the record without its "s" key (the map then has
 * one entry fewer). Verification re-encodes the decoded fields, so how the
 * sender encoded them does not matter. Secret keys are libsodium's 64-byte
 * crypto_sign secret keys (seed and public key); the signer's public key
 * is taken from them. Decoding never verifies a signature: call the
 * _verify function.
 *
 * Memory. Every struct lives in the caller's storage except the decoded
 * node record (mrec_node_decode_*: one heap allocation holding the struct,
 * its lists and their strings; the caller frees it with mrec_node_free()).
 * A node record the caller builds itself may point to the caller's own
 * lists and strings: nothing here keeps or frees them. Byte decoders run
 * mpack_check() first and unpack into a private zone freed before they
 * return (bounded: about 24 bytes per input byte); they take at most
 * FRAME_MSG_MAX bytes. The _obj decoders take a value already checked
 * (a frame body) and copy what they keep: the object may go right after.
 * Encoders append one msgpack value to out (bounded by out->max); on
 * error nothing is appended.
 *
 * Errors: 0 or a negative code from common/rm_error.h.
 *   RM_E_PROTO   decoding: malformed input (see above).
 *   RM_E_INVAL   misuse: NULL, or a struct given to an encoder or signer
 *                that breaks the rules above.
 *   RM_E_TOOBIG  encoding: out->max (or outsz) too small, or a node
 *                record whose encoding exceeds MREC_NODE_ENC_MAX.
 *   RM_E_PERM    verification failed.
 *   -ENOMEM.
 *
 * Threads: no shared state; any function may run on any thread, on
 * distinct arguments.
 */
#ifndef RM_MESH_MREC_H
#define RM_MESH_MREC_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "common/buf.h"
#include "mesh/frame.h"
#include "mesh/swim.h"

#define MREC_PK 32        /* Ed25519 public key */
#define MREC_SK 64        /* libsodium crypto_sign secret key */
#define MREC_SIG 64       /* Ed25519 signature */
#define MREC_MESHID 16    /* random mesh id, made with the root */
#define MREC_NAME_MAX 64  /* == SWIM_NAME_MAX, NUL included */
#define MREC_ADDR_MAX 128 /* "host:port" / "[v6]:port", NUL included */
#define MREC_ADDRS_MAX 8
#define MREC_DOMAIN_MAX 253 /* bytes of a domain (RFC 1035 section 2.3.4) */
#define MREC_USER_MAX 254   /* bytes of a user address (RFC 5321 4.5.3.1.3) */
#define MREC_LOCAL_MAX 64   /* bytes of its local part (RFC 5321 4.5.3.1.1) */
#define MREC_DOMAINS_MAX 1024
#define MREC_USERS_MAX 50000
#define MREC_CHAIN_MAX 8
#define MREC_INVITE_ID 16
#define MREC_SOFTWARE_MAX 32 /* NUL included */
/* Largest encoded node record (bytes): under FRAME_MSG_MAX - 1024, so that
 * a record fits one frame with room for the message around it. */
#define MREC_NODE_ENC_MAX (FRAME_MSG_MAX - 1024 - 1)
/* Clock skew allowed for a certificate's issued time (seconds). */
#define MREC_CLOCK_SKEW 300
/* Invite token text: "rmi1." and unpadded base64url of at most
 * MREC_INVITE_ENC_MAX bytes, NUL included. */
#define MREC_INVITE_PREFIX "rmi1."
#define MREC_INVITE_ENC_MAX 1536
#define MREC_INVITE_TEXT_MAX (5 + 2048 + 1)
#define MREC_ERR_MAX 256 /* enough for any err text written here */

/* Validity of one text value (NUL-terminated) under the rules above:
 * 1 or 0. */
int mrec_name_valid(const char *name);
int mrec_addr_valid(const char *addr);
int mrec_domain_valid(const char *domain);
int mrec_user_valid(const char *user);

/* ---- membership certificates ------------------------------------------ */

/* "node_pk, called name, belongs to mesh_id from issued until expires",
 * signed by issuer_pk (a member; the root signs its own). */
struct mrec_cert {
    uint8_t mesh_id[MREC_MESHID];
    uint8_t node_pk[MREC_PK];
    char name[MREC_NAME_MAX];
    int64_t issued, expires; /* unix seconds */
    uint8_t issuer_pk[MREC_PK];
    uint8_t sig[MREC_SIG];
};

/* Set issuer_pk to issuer_sk's public key and sign. RM_E_INVAL: bad name. */
int mrec_cert_sign(struct mrec_cert *c, const uint8_t issuer_sk[MREC_SK]);
/* 0 if sig is issuer_pk's signature of the other fields, else RM_E_PERM
 * (also for a struct that breaks the rules). */
int mrec_cert_verify_sig(const struct mrec_cert *c);
int mrec_cert_encode(struct buf *out, const struct mrec_cert *c);
int mrec_cert_decode_bytes(const void *p, size_t len, struct mrec_cert *out);
int mrec_cert_decode_obj(const msgpack_object *o, struct mrec_cert *out);

/* c[0] is the member's certificate, c[i + 1] the issuer's of c[i], the
 * last the root's self-signed one. */
struct mrec_chain {
    unsigned n; /* 1 .. MREC_CHAIN_MAX */
    struct mrec_cert c[MREC_CHAIN_MAX];
};

int mrec_chain_encode(struct buf *out, const struct mrec_chain *ch);
int mrec_chain_decode_bytes(const void *p, size_t len, struct mrec_chain *out);
int mrec_chain_decode_obj(const msgpack_object *o, struct mrec_chain *out);

/*
 * Is ch a valid membership chain of the mesh (mesh_id, root_pk) at time
 * now? Checks: 1 <= n <= MREC_CHAIN_MAX; every certificate of mesh_id and
 * correctly signed; c[i].issuer_pk == c[i + 1].node_pk; the last
 * self-signed with node_pk == root_pk; for every certificate now <
 * expires and issued <= now + MREC_CLOCK_SKEW; no node_pk revoked
 * (is_revoked(arg, pk) != 0; is_revoked may be NULL, it is called
 * synchronously). 0, or RM_E_PERM with the first reason found in err
 * (err may be NULL; MREC_ERR_MAX bytes suffice), e.g. "certificate of
 * NAME expired at 2025-01-31T12:00:00Z", "NAME is revoked", "bad signature
 * on NAME's certificate", "certificate of NAME is not of this mesh",
 * "chain does not end at the mesh's first node", "chain too long", "issuer
 * mismatch: ...". RM_E_INVAL for a NULL ch or mesh_id or root_pk.
 */
int mrec_chain_verify(const struct mrec_chain *ch,
                      const uint8_t mesh_id[MREC_MESHID],
                      const uint8_t root_pk[MREC_PK], int64_t now,
                      int (*is_revoked)(void *arg, const uint8_t pk[MREC_PK]),
                      void *arg, char *err, size_t errsz);

/* ---- node records ------------------------------------------------------ */

/* What a node says about itself, signed with its own key. A newer version
 * of a node's record replaces an older one. */
struct mrec_node {
    uint8_t mesh_id[MREC_MESHID];
    uint8_t node_pk[MREC_PK];
    char name[MREC_NAME_MAX];
    uint64_t version; /* strictly increasing per node */
    char software[MREC_SOFTWARE_MAX];
    int egress; /* delivers to the Internet; decoded as 0 or 1 */
    unsigned n_addrs;
    char addrs[MREC_ADDRS_MAX][MREC_ADDR_MAX];
    unsigned n_domains; /* <= MREC_DOMAINS_MAX */
    char **domains;     /* lower-case domains; NULL when none */
    unsigned n_users;   /* <= MREC_USERS_MAX */
    char **users;       /* "local@domain"; NULL when none */
    uint8_t sig[MREC_SIG];
};

/*
 * Building one: fill a struct mrec_node (on the stack, say) with the
 * node's fields, domains / users pointing to the caller's own arrays of
 * strings, then mrec_node_sign() and mrec_node_encode(). Neither keeps
 * nor frees a pointer.
 */
/* 0, RM_E_INVAL (a field breaks the rules) or RM_E_TOOBIG (the encoding
 * would exceed MREC_NODE_ENC_MAX). */
int mrec_node_check(const struct mrec_node *n);
/* Set node_pk to sk's public key and sign. Errors: as mrec_node_check(),
 * -ENOMEM. */
int mrec_node_sign(struct mrec_node *n, const uint8_t sk[MREC_SK]);
/* 0 if sig is node_pk's signature, RM_E_PERM if not (or if the struct
 * breaks the rules), -ENOMEM. */
int mrec_node_verify(const struct mrec_node *n);
int mrec_node_encode(struct buf *out, const struct mrec_node *n);
/* On success *out is a new record (caller frees it with mrec_node_free());
 * on error *out is NULL. A record whose canonical encoding exceeds
 * MREC_NODE_ENC_MAX is RM_E_PROTO. */
int mrec_node_decode_bytes(const void *p, size_t len, struct mrec_node **out);
int mrec_node_decode_obj(const msgpack_object *o, struct mrec_node **out);
/* Only for records from mrec_node_decode_*; NULL is a no-op. */
void mrec_node_free(struct mrec_node *n);

/* ---- revocations ------------------------------------------------------- */

/* "node_pk (name) is no longer a member since when", signed by by_pk. */
struct mrec_revoke {
    uint8_t mesh_id[MREC_MESHID];
    uint8_t node_pk[MREC_PK];
    char name[MREC_NAME_MAX];
    int64_t when; /* unix seconds */
    uint8_t by_pk[MREC_PK];
    uint8_t sig[MREC_SIG];
};

/* Set by_pk to sk's public key and sign. RM_E_INVAL: bad name. */
int mrec_revoke_sign(struct mrec_revoke *r, const uint8_t sk[MREC_SK]);
int mrec_revoke_verify_sig(const struct mrec_revoke *r); /* 0, RM_E_PERM */
int mrec_revoke_encode(struct buf *out, const struct mrec_revoke *r);
int mrec_revoke_decode_bytes(const void *p, size_t len,
                             struct mrec_revoke *out);
int mrec_revoke_decode_obj(const msgpack_object *o, struct mrec_revoke *out);

/* ---- invites ----------------------------------------------------------- */

/* Lets its bearer join: contact the inviter at one of addrs and present
 * id. Signed by the inviter. */
struct mrec_invite {
    uint8_t mesh_id[MREC_MESHID];
    uint8_t root_pk[MREC_PK];
    uint8_t inviter_pk[MREC_PK];
    char inviter_name[MREC_NAME_MAX];
    unsigned n_addrs; /* 1 .. MREC_ADDRS_MAX */
    char addrs[MREC_ADDRS_MAX][MREC_ADDR_MAX];
    uint8_t id[MREC_INVITE_ID];
    char name[MREC_NAME_MAX]; /* name the joiner gets; "" = its own */
    int64_t expires;          /* unix seconds */
    uint8_t sig[MREC_SIG];
};

/* Set inviter_pk to sk's public key and sign. RM_E_INVAL: a bad field. */
int mrec_invite_sign(struct mrec_invite *iv, const uint8_t sk[MREC_SK]);
int mrec_invite_verify_sig(const struct mrec_invite *iv); /* 0, RM_E_PERM */
int mrec_invite_encode(struct buf *out, const struct mrec_invite *iv);
int mrec_invite_decode_bytes(const void *p, size_t len,
                             struct mrec_invite *out);
int mrec_invite_decode_obj(const msgpack_object *o, struct mrec_invite *out);
/* The token: MREC_INVITE_PREFIX and the unpadded base64url of the encoding
 * (sig included), NUL-terminated in out. RM_E_TOOBIG if outsz is too small
 * (MREC_INVITE_TEXT_MAX always suffices), RM_E_INVAL. */
int mrec_invite_to_text(const struct mrec_invite *iv, char *out, size_t outsz);
/*
 * Parse a token (whitespace around and inside it, e.g. line breaks from a
 * copy, is ignored). 0, or RM_E_PROTO with a reason in err (err may be
 * NULL): "not a relaymesh invite token" (wrong prefix), "token is damaged
 * (copy it again whole)" (bad base64 or encoding), "token is too long".
 * Neither the signature nor the expiry is checked: the caller calls
 * mrec_invite_verify_sig() and compares expires with its clock.
 */
int mrec_invite_from_text(const char *text, struct mrec_invite *out, char *err,
                          size_t errsz);

/* ---- SWIM messages ----------------------------------------------------- */

/* Encoder: RM_E_INVAL for a message swim_receive() would refuse (bad
 * type, state or name, too many updates, no target for ping / ping-req).
 * Decoder: the same as RM_E_PROTO, plus seq or incarnation past 2^32 - 1;
 * out is zeroed first, so unused bytes are 0. */
int mrec_swim_encode(struct buf *out, const struct swim_msg *m);
int mrec_swim_decode_bytes(const void *p, size_t len, struct swim_msg *out);
int mrec_swim_decode_obj(const msgpack_object *o, struct swim_msg *out);

/* ---- push/pull state --------------------------------------------------- */

/* One member as the sender knows it, for a full state exchange. */
struct mrec_pp_entry {
    char name[MREC_NAME_MAX];
    uint32_t incarnation;
    enum swim_state state;
    uint64_t record_version; /* newest node record version held; 0: none */
};

/* n <= SWIM_MEMBERS_MAX entries (else RM_E_INVAL). */
int mrec_pp_encode(struct buf *out, int want_reply,
                   const struct mrec_pp_entry *e, size_t n);
/* Fill out[0 .. *n) (each entry zeroed first, so unused bytes are 0) and
 * *want_reply (0 or 1). More than max or SWIM_MEMBERS_MAX entries is
 * RM_E_PROTO; on error *n and *want_reply are 0 (out may have been
 * written). */
int mrec_pp_decode_bytes(const void *p, size_t len, int *want_reply,
                         struct mrec_pp_entry *out, size_t max, size_t *n);
int mrec_pp_decode_obj(const msgpack_object *o, int *want_reply,
                       struct mrec_pp_entry *out, size_t max, size_t *n);

#endif
