/*
 * mcodec: the small msgpack values of the mesh service that are not
 * records (mesh/mrec.h has those): the credential a peer presents in the
 * Noise handshake, the admission sent to a joiner, this node's own
 * membership as kept in the store, and a pending invite.
 *
 *   credential (member)  {"c": chain}
 *   credential (joiner)  {"j": token text, "k": bin 32 (Ed25519 key),
 *                         "n": name}
 *   admission            {"c": chain}            (frame "admit")
 *   self                 {"m": bin 16 mesh id, "r": bin 32 root key,
 *                         "c": chain, "v": record version}
 *   pending invite       {"e": expires (unix s), "n": name}
 *
 * Decoders check structure first (mpack_check) and refuse anything else
 * with RM_E_PROTO; unknown keys are ignored. Pure C, no I/O.
 */
#ifndef RM_MESH_MCODEC_H
#define RM_MESH_MCODEC_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "mesh/mrec.h"

#define MCODEC_TOKEN_MAX MREC_INVITE_TEXT_MAX

enum mcodec_cred_kind {
    MCODEC_CRED_MEMBER,
    MCODEC_CRED_JOIN,
};

struct mcodec_cred {
    enum mcodec_cred_kind kind;
    struct mrec_chain chain;      /* MEMBER */
    char token[MCODEC_TOKEN_MAX]; /* JOIN */
    uint8_t pk[MREC_PK];          /* JOIN */
    char name[MREC_NAME_MAX];     /* JOIN */
};

int mcodec_cred_member_encode(struct buf *out, const struct mrec_chain *ch);
int mcodec_cred_join_encode(struct buf *out, const char *token,
                            const uint8_t pk[MREC_PK], const char *name);
int mcodec_cred_decode(const void *p, size_t len, struct mcodec_cred *out);
int mcodec_cred_decode_obj(const msgpack_object *o, struct mcodec_cred *out);

struct mcodec_self {
    uint8_t mesh_id[MREC_MESHID];
    uint8_t root_pk[MREC_PK];
    struct mrec_chain chain;
    uint64_t record_version;
};

int mcodec_self_encode(struct buf *out, const struct mcodec_self *s);
int mcodec_self_decode(const void *p, size_t len, struct mcodec_self *out);

int mcodec_invite_encode(struct buf *out, int64_t expires, const char *name);
int mcodec_invite_decode(const void *p, size_t len, int64_t *expires,
                         char name[MREC_NAME_MAX]);

#endif
