/*
 * recon: range-based set reconciliation (Aljoscha Meyer, "Range-Based Set
 * Reconciliation", 2023) between two mesh peers, the anti-entropy repair
 * path over the queue's key order. Pure C: no I/O, no clock, no globals,
 * no LMDB. The items come from a sorted cursor the caller provides (the
 * node backs it with an LMDB cursor in one read transaction); what the
 * session finds is two lists of items, and the caller then moves the
 * entries themselves.
 *
 * Items. An item is a key (1 .. RECON_KEY_MAX bytes, ordered like LMDB's
 * default: memcmp over the common length, then the shorter first) and a
 * RECON_HASH-byte content hash or version, so that a changed entry counts
 * as different. A set holds at most one item per key. An entry whose hash
 * differs shows up on both lists (mine on "have", the peer's on "need"):
 * which one is newer is the caller's decision.
 *
 * Fingerprint of a range: every item is hashed, h = BLAKE2b-256 with
 * personal "rm-recon-item-v1" of (key length byte || key || hash); the h
 * of the items in the range are added as little-endian integers mod 2^256
 * (associative and commutative, so any split of a range can be combined,
 * which is what a per-page aggregate needs); the fingerprint is the
 * BLAKE2b-128 (personal "rm-recon-fp-v1") of that sum and the item count
 * (u64 little endian). Sum, not XOR: XOR is linear over GF(2), so anyone
 * who can place about 257 items of their choice (a sender controls a
 * message's content and so its hash) can make a set of them cancel out by
 * Gaussian elimination and hide a difference; a sum mod 2^256 needs a
 * subset sum / generalised birthday attack instead (Wagner), far more
 * costly at 256 bits. The count makes a range of n items differ from one
 * of n + k items even if the sums met.
 *
 * Cost. A fingerprint here is a walk over the range through the cursor:
 * O(n) per range, O(n log_b n) per session (measured in test_recon: a
 * whole-set fingerprint of 10,000 items is a few milliseconds). A
 * production store would keep the sum per B-tree page (or per block of
 * keys) so that a range costs O(log n); the wire protocol would not
 * change.
 *
 * Protocol. The initiator sends the first message (recon_initiate()),
 * then the peers alternate, each answering the other's last message with
 * recon_step(). A message is a list of ranges that follow each other from
 * the smallest key: each range is [previous upper bound, upper bound); the
 * first starts at the empty key (below every key), an upper bound is a
 * byte string or infinity; past the last range nothing is asked. A range
 * is one of:
 *   SKIP   nothing to do here (equal, or already resolved);
 *   FP     the sender's fingerprint: "equal? else split";
 *   ITEMS  every item the sender has in the range (sent when it has at
 *          most cfg.items_max there): "tell me the difference";
 *   DIFF   the answer to ITEMS: the sender's items the peer lacks, and a
 *          bitmap over the peer's ITEMS list of those the sender lacks.
 * The answer to FP is nothing (equal), ITEMS (at most items_max items) or
 * the range split into cfg.branch sub-ranges of about equal counts, each
 * an FP, small ones too (an FP is cheaper than an item, and most
 * sub-ranges are equal); the answer to ITEMS is DIFF (the receiver now
 * knows both directions, and so does the other side once DIFF arrives) or,
 * if the receiver holds too many items there, a split. A message with no
 * FP or ITEMS range asks nothing: once it is sent the session is over.
 * Identical sets take one round trip (a 22-byte FP message, a 1-byte
 * empty answer).
 *
 * Bounds. A message has at most RECON_RANGES_MAX FP / ITEMS / DIFF ranges
 * (and 2 * RECON_RANGES_MAX + 1 in all, SKIPs included) and
 * RECON_ITEMS_MAX items; its encoding is at most RECON_MSG_ENC_MAX bytes
 * (under FRAME_MSG_MAX). When an answer would exceed them, the answer so
 * far is kept and the rest of the key space from the range being answered
 * is sent as one FP range: the next rounds take it up again. Re-examined
 * ranges may report a difference twice; the lists are deduplicated.
 * A peer can keep a session going for ever (always answering "split"):
 * the caller bounds the rounds (recon_rounds()); every step is bounded by
 * the limits above and a walk over the caller's set per range.
 *
 * Wire format (msgpack; the encoder is deterministic):
 *   msg    [range, ...]
 *   range  [upper, mode, ...]       upper: bin of 1..RECON_KEY_MAX bytes,
 *                                    strictly increasing, or nil (infinity,
 *                                    last range only)
 *          [upper, 0]                                  SKIP
 *          [upper, 1, bin fp (RECON_FP bytes)]         FP
 *          [upper, 2, [item, ...]]                     ITEMS
 *          [upper, 3, [item, ...], bin bitmap]         DIFF
 *   item   bin of key || hash (RECON_HASH + 1 .. RECON_HASH + RECON_KEY_MAX
 *          bytes); the items of a range have strictly increasing keys, all
 *          within the range.
 *   bitmap bit i (byte i / 8, bit i % 8, least significant first) set:
 *          the sender lacks item i of the peer's ITEMS list for that range;
 *          exactly ceil(n / 8) bytes, padding bits 0 (checked by the
 *          receiver, which knows n).
 * A range array may carry more trailing elements than listed; a decoder
 * ignores them. Anything else malformed, or past a bound, is RM_E_PROTO.
 *
 * Snapshot. Both peers must see one unchanging set for the whole session
 * (an LMDB read transaction): a range's items are walked again when its
 * answer comes back. A set that changed under the session shows up as
 * RM_E_PROTO (a bitmap that does not fit) or RM_E_AGAIN (a range shorter
 * on the second walk).
 *
 * Memory. struct recon and struct recon_msg live in the caller's storage
 * and own heap arrays, freed by _cleanup(). recon_have_get() and
 * recon_need_get() lend arrays owned by the handle, valid until the next
 * recon_step() or recon_cleanup().
 *
 * Errors: 0 or a negative code from common/rm_error.h.
 *   RM_E_PROTO   the peer's message is malformed or inconsistent.
 *   RM_E_INVAL   misuse: NULL, a bad config, a step after the end, or a
 *                cursor that returned a bad item or keys out of order.
 *   RM_E_AGAIN   the set changed during the session.
 *   RM_E_TOOBIG  out->max too small (RECON_MSG_ENC_MAX suffices), or more
 *                differences than cfg.diff_max.
 *   -ENOMEM, and any negative code the cursor returns (passed up).
 * After an error the handle only accepts recon_cleanup().
 *
 * Threads: no shared state; a handle is used by one thread at a time.
 */
#ifndef RM_MESH_RECON_H
#define RM_MESH_RECON_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define RECON_KEY_MAX 32      /* bytes of a key */
#define RECON_HASH 16         /* bytes of an item's content hash / version */
#define RECON_FP 16           /* bytes of a range fingerprint */
#define RECON_RANGES_MAX 2048 /* non-SKIP ranges in one message */
#define RECON_ITEMS_MAX 8192  /* items in one message */
#define RECON_BRANCH_MAX 64
#define RECON_THRESHOLD_MAX 64
/* Largest answer to ITEMS sent as DIFF (more: split). */
#define RECON_DIFF_RANGE_MAX (RECON_ITEMS_MAX / 2)
#define RECON_MSG_ENC_MAX (768 * 1024) /* bytes of an encoded message */

#define RECON_BRANCH_DEFAULT 16
#define RECON_THRESHOLD_DEFAULT 4
#define RECON_DIFF_MAX_DEFAULT (1024 * 1024)

struct recon_item {
    uint8_t key_len; /* 1 .. RECON_KEY_MAX */
    uint8_t key[RECON_KEY_MAX];
    uint8_t hash[RECON_HASH];
};

/*
 * The caller's sorted set, read through a cursor. Both functions fill
 * *out and return 1, return 0 past the last item, or a negative code
 * (passed up by recon). Keys must come strictly increasing.
 *   seek: position at the first item whose key is >= key (keylen 0: the
 *         first item);
 *   next: the item after the last one returned.
 * Called synchronously from recon_initiate() / recon_step() only.
 */
struct recon_source {
    int (*seek)(void *arg, const uint8_t *key, size_t keylen,
                struct recon_item *out);
    int (*next)(void *arg, struct recon_item *out);
    void *arg;
};

struct recon_config {
    unsigned branch;    /* sub-ranges per split, 2 .. RECON_BRANCH_MAX */
    unsigned items_max; /* ranges of at most this many items go as an
                           item list, 1 .. RECON_THRESHOLD_MAX */
    size_t diff_max;    /* differences kept per list, >= 1 */
};

/* ---- messages (the codec) ---------------------------------------------- */

enum recon_mode {
    RECON_SKIP = 0,
    RECON_FPRINT = 1,
    RECON_ITEMS = 2,
    RECON_DIFF = 3,
};

/* An upper bound: key[0 .. len) (len 1 .. RECON_KEY_MAX), or infinity.
 * The lower bound of a message's first range is the empty key (len 0). */
struct recon_bound {
    uint8_t inf; /* 1: infinity (len is 0) */
    uint8_t len;
    uint8_t key[RECON_KEY_MAX];
};

struct recon_range {
    struct recon_bound upper;
    enum recon_mode mode;
    uint8_t fp[RECON_FP]; /* RECON_FPRINT */
    size_t item_off;      /* RECON_ITEMS, RECON_DIFF: items[item_off ..) */
    size_t n_items;
    size_t bits_off; /* RECON_DIFF: bits[bits_off .. + n_bits) */
    size_t n_bits;   /* bytes of the bitmap */
};

/* A decoded message, or one being built: arrays owned by the struct. */
struct recon_msg {
    struct recon_range *ranges;
    size_t n_ranges, cap_ranges;
    struct recon_item *items;
    size_t n_items, cap_items;
    uint8_t *bits;
    size_t n_bits, cap_bits;
};

void recon_msg_init(struct recon_msg *m);
void recon_msg_cleanup(struct recon_msg *m);
/* Append m's encoding to out (nothing on error). RM_E_INVAL if m breaks
 * the rules above (order, bounds, sizes), RM_E_TOOBIG, -ENOMEM. */
int recon_msg_encode(struct buf *out, const struct recon_msg *m);
/* Decode p (at most RECON_MSG_ENC_MAX bytes; mpack_check() first) into m
 * (an initialised message; its previous contents are dropped). On error m
 * is empty. RM_E_PROTO, -ENOMEM. */
int recon_msg_decode(const void *p, size_t len, struct recon_msg *m);

/* ---- sessions ---------------------------------------------------------- */

struct recon {
    struct recon_config cfg;
    struct recon_source src;
    struct recon_msg in, out;       /* scratch, reused each step */
    struct recon_item *have, *need; /* see recon_have_get() */
    size_t n_have, cap_have, n_need, cap_need;
    int sorted, done, failed;
    unsigned rounds; /* messages made and taken */
};

/* branch RECON_BRANCH_DEFAULT, items_max RECON_THRESHOLD_DEFAULT,
 * diff_max RECON_DIFF_MAX_DEFAULT. */
void recon_config_default(struct recon_config *cfg);
/* Copies cfg (NULL: defaults) and src; keeps no pointer to either but
 * src->arg. RM_E_INVAL: a bound broken, src or its functions NULL. */
int recon_init(struct recon *r, const struct recon_config *cfg,
               const struct recon_source *src);
void recon_cleanup(struct recon *r);

/* The initiator's first message, appended to out. */
int recon_initiate(struct recon *r, struct buf *out);
/*
 * Take the peer's message and append the answer to out. *done is set to 1
 * when the session is over: either the peer's message asked nothing (out
 * is left as it was: send nothing), or the answer asks nothing (send it,
 * expect no reply). *done 0: send out and wait for the peer's answer.
 */
int recon_step(struct recon *r, const void *msg, size_t len, struct buf *out,
               int *done);
/* Messages made and taken so far by this side. */
unsigned recon_rounds(const struct recon *r);
/*
 * The differences found so far, sorted by key and deduplicated: "have",
 * my items the peer lacks (or holds with another hash); "need", the
 * peer's items I lack (or hold with another hash). Complete once the
 * session is done. Borrowed: valid until the next recon_step() or
 * recon_cleanup().
 */
void recon_have_get(struct recon *r, const struct recon_item **items,
                    size_t *n);
void recon_need_get(struct recon *r, const struct recon_item **items,
                    size_t *n);

#endif
