/*
 * mrepl: queue replication between mesh nodes — the replica record, the
 * wire messages that carry it, the rendezvous choice of replicas and the
 * order of versions and claims (node/mesh_repl.c drives them).
 *
 * A replica record describes one accepted message that its accepting
 * node (the origin) has not delivered locally at once: envelope,
 * recipients with their state, the replicas chosen for it, and, after a
 * takeover, the claim (owner, epoch). Its key (MREPL_KEY_LEN bytes) is
 * the first MREPL_KEY_ORIGIN bytes of the origin's Ed25519 key then the
 * origin's 16-character queue id, so records of one origin sort together
 * and in acceptance order (the LMDB key order anti-entropy walks).
 *
 * Wire messages (the body of one mesh frame, mesh/frame.h; msgpack maps):
 *
 *   "rput"  a record version, maybe with a piece of the message:
 *           {"r": record, "o": offset (with "d"), "d": bin (1 ..
 *            MREPL_CHUNK_MAX)}; without "d" only the record (a state
 *            change, a claim, a tombstone)
 *   "rack"  {"k": key, "s": seq} the record is durable at the sender
 *   "rsum"  {"o": origin key (32), "n": records, "s": highest seq,
 *            "h": bin 16 digest, "w": bool (answer wanted)}
 *           the cheap per-origin exchange
 *   "rrec"  {"o": origin key, "m": bin (a mesh/recon.h message)} the
 *           repair path when the summaries differ
 *
 *   record  {"o": bin 32 origin, "q": qid, "m": mesh message id,
 *            "s": seq, "tb": tombstone bool, "ta": tombstone time,
 *            "c": bin 32 owner (after a claim), "ep": claim epoch,
 *            "f": MAIL FROM, "e": ENVID (optional), "rt": RET, "b": BODY,
 *            "u": SMTPUTF8 bool, "a": arrival, "z": size,
 *            "p": [bin 32, ...] replicas,
 *            "t": [{"a", "o"?, "n", "i": index, "x": rcpt state}, ...]}
 *
 * Versions. The version of a record is (tombstone, epoch, owner, seq),
 * compared in that order: a tombstone beats any live version; a higher
 * claim (epoch, then owner key bytes) beats a lower one; then the higher
 * seq. mrepl_rec_cmp() is that order, and every node keeps the greater
 * version it sees, so all copies converge.
 *
 * Decoders check every bound and required key and refuse anything else
 * with RM_E_PROTO (unknown keys are ignored). Pure C: no I/O, no clock.
 */
#ifndef RM_MESH_MREPL_H
#define RM_MESH_MREPL_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "common/buf.h"

#define MREPL_PK 32
#define MREPL_KEY_ORIGIN 8
#define MREPL_QID_LEN 16
#define MREPL_KEY_LEN (MREPL_KEY_ORIGIN + MREPL_QID_LEN)
#define MREPL_ID_MAX 96
#define MREPL_ADDR_MAX 512
#define MREPL_ENVID_MAX 128
#define MREPL_RCPTS_MAX 100
#define MREPL_REPLICAS_MAX 8
#define MREPL_CHUNK_MAX (256u * 1024)
#define MREPL_SIZE_MAX ((uint64_t)1 << 32)
#define MREPL_DIGEST 16
#define MREPL_RECON_MAX (768u * 1024)

enum mrepl_rcpt_state {
    MREPL_R_PENDING = 0,
    MREPL_R_DELIVERED = 1,
    MREPL_R_BOUNCED = 2,
};

struct mrepl_rcpt {
    char addr[MREPL_ADDR_MAX];
    char orcpt[MREPL_ADDR_MAX]; /* "" when none */
    unsigned notify;            /* 0 .. 15 */
    uint32_t idx;               /* recipient index in the origin's queue */
    enum mrepl_rcpt_state st;
};

struct mrepl_rec {
    uint8_t origin[MREPL_PK];
    char qid[MREPL_QID_LEN + 1];
    char mid[MREPL_ID_MAX];
    uint64_t seq;
    int tomb;
    int64_t tomb_at;
    int has_owner;
    uint8_t owner[MREPL_PK];
    uint64_t epoch;
    char mail_from[MREPL_ADDR_MAX];
    char envid[MREPL_ENVID_MAX];
    unsigned ret, body; /* 0 .. 2 */
    int smtputf8;
    int64_t arrival;
    uint64_t size;
    unsigned nreplicas;
    uint8_t replicas[MREPL_REPLICAS_MAX][MREPL_PK];
    unsigned nrcpts; /* 1 .. MREPL_RCPTS_MAX */
    struct mrepl_rcpt rcpts[MREPL_RCPTS_MAX];
};

struct mrepl_put {
    struct mrepl_rec rec;
    int has_data;
    uint64_t off;
    const uint8_t *data; /* borrowed from the decoded object */
    size_t len;
};

struct mrepl_ack {
    uint8_t key[MREPL_KEY_LEN];
    uint64_t seq;
};

struct mrepl_sum {
    uint8_t origin[MREPL_PK];
    uint64_t n;
    uint64_t seq;
    uint8_t digest[MREPL_DIGEST];
    int want;
};

struct mrepl_recmsg {
    uint8_t origin[MREPL_PK];
    const uint8_t *msg; /* borrowed */
    size_t len;         /* 1 .. MREPL_RECON_MAX */
};

/* The record's key into key (MREPL_KEY_LEN bytes). */
void mrepl_key(const uint8_t origin[MREPL_PK], const char *qid,
               uint8_t key[MREPL_KEY_LEN]);

/* Encoders append one value: 0, RM_E_INVAL (a field out of bounds),
 * RM_E_TOOBIG (nothing appended). */
int mrepl_rec_encode(struct buf *out, const struct mrepl_rec *r);
int mrepl_put_encode(struct buf *out, const struct mrepl_rec *r, uint64_t off,
                     const void *data, size_t len); /* data NULL: none */
int mrepl_ack_encode(struct buf *out, const struct mrepl_ack *a);
int mrepl_sum_encode(struct buf *out, const struct mrepl_sum *s);
int mrepl_recmsg_encode(struct buf *out, const uint8_t origin[MREPL_PK],
                        const void *msg, size_t len);

/* Decoders: 0, RM_E_PROTO, -ENOMEM (bytes only). Borrowed pointers of the
 * object forms point into o. */
int mrepl_rec_decode(const void *p, size_t len, struct mrepl_rec *out);
int mrepl_rec_decode_obj(const msgpack_object *o, struct mrepl_rec *out);
int mrepl_put_decode_obj(const msgpack_object *o, struct mrepl_put *out);
int mrepl_ack_decode_obj(const msgpack_object *o, struct mrepl_ack *out);
int mrepl_sum_decode_obj(const msgpack_object *o, struct mrepl_sum *out);
int mrepl_recmsg_decode_obj(const msgpack_object *o, struct mrepl_recmsg *out);
/* Bytes forms (for tests and fuzzing): borrowed pointers are NULL after. */
int mrepl_put_decode(const void *p, size_t len, struct mrepl_put *out);
int mrepl_ack_decode(const void *p, size_t len, struct mrepl_ack *out);
int mrepl_sum_decode(const void *p, size_t len, struct mrepl_sum *out);
int mrepl_recmsg_decode(const void *p, size_t len, struct mrepl_recmsg *out);

/* Version order (see top): < 0, 0, > 0 as a is older, the same, newer. */
int mrepl_rec_cmp(const struct mrepl_rec *a, const struct mrepl_rec *b);
/* Claim order alone: (epoch, owner) — the higher claim wins. */
int mrepl_claim_cmp(uint64_t ea, const uint8_t oa[MREPL_PK], uint64_t eb,
                    const uint8_t ob[MREPL_PK]);

/* The content hash of an encoded record (for recon items, digests). */
void mrepl_hash(const void *enc, size_t len, uint8_t out[MREPL_DIGEST]);
/* Fold one item hash into a per-origin digest (a sum mod 2^128, so the
 * order of the walk does not matter). */
void mrepl_digest_add(uint8_t digest[MREPL_DIGEST],
                      const uint8_t h[MREPL_DIGEST]);

/*
 * Rendezvous (highest random weight) choice: the r candidates with the
 * highest BLAKE2b-64(id || candidate key), best first. Deterministic: any
 * node with the same candidates picks the same replicas; removing a
 * candidate only moves the ids it held. out gets up to r indexes into
 * cands; returns how many (min(r, n)).
 */
unsigned mrepl_rendezvous(const char *id, const uint8_t (*cands)[MREPL_PK],
                          unsigned n, unsigned r, unsigned *out);

#endif
