/*
 * frame: the transport framing of the mesh secure channel, after the Noise
 * handshake (mesh/noise.h). Pure C: no I/O, no globals, no POSIX-only
 * calls; the connection code feeds it the bytes it reads and sends the
 * bytes it produces.
 *
 * Wire format (one direction; both directions alike):
 *
 *   wire message  = length ciphertext
 *   length        = 4 bytes, big-endian: the number of ciphertext bytes,
 *                   FRAME_WIRE_MIN .. NOISE_MSG_MAX (Noise section 3)
 *   ciphertext    = Noise transport message: ChaChaPoly with the sending
 *                   CipherState, AD empty, tag included (section 5.1)
 *   plaintext     = flag chunk
 *   flag          = 1 byte: FRAME_CHUNK_FINAL (0x00) or FRAME_CHUNK_MORE
 *                   (0x01, more chunks of the same message follow)
 *   chunk         = 0 .. FRAME_CHUNK_MAX bytes of the logical message
 *
 * A logical message (the chunks concatenated, at most the configured
 * msg_max <= FRAME_MSG_MAX bytes) is exactly one msgpack map with the
 * string keys "v" (protocol version: unsigned, FRAME_VERSION), "t" (message
 * type: string or unsigned) and "b" (body: any msgpack value), each once,
 * and no other key.
 *
 * Nonces and rekeying. Nonces come from the CipherStates, so they never
 * repeat and a replayed, reordered or dropped wire message fails its tag.
 * Both sides count the Noise messages of a direction from the split (the
 * cipher must be fresh: nonce 0); after every rekey_interval-th message
 * each side calls noise_cipher_rekey() (section 11.3), so they stay in
 * lock-step with no negotiation. The sender refuses to send past
 * nonce_limit messages (well before the nonce space runs out, section
 * 5.1); the receiver treats a message past it as a protocol error. The
 * connection must then be closed and a new handshake made.
 *
 * Memory and ownership. struct frame_tx / frame_rx live in the caller's
 * storage (_init / _cleanup). The CipherState is borrowed: it must outlive
 * the frame state and be used by nothing else (the caller keeps it in
 * sodium_malloc memory and wipes it, see noise.h). The receiver allocates
 * (bounded): its wire buffer (at most FRAME_RX_BUF_MAX bytes), the message
 * being reassembled (at most msg_max) and a msgpack zone for the decoded
 * message (about 24 bytes per input byte at worst, since every container
 * is checked to claim no more elements than there are bytes left).
 *
 * Errors: 0 or a negative code from common/rm_error.h.
 *   RM_E_PROTO   the peer broke the protocol: a length below
 *                FRAME_WIRE_MIN, a failed tag (tampered, replayed,
 *                reordered), a bad chunk flag, a message that is not the
 *                map above, a wrong version, a message past nonce_limit.
 *   RM_E_TOOBIG  a length above NOISE_MSG_MAX, or a message that would
 *                exceed msg_max: decided from the 4-byte length alone,
 *                before the ciphertext is read. For the sender: the
 *                message is longer than msg_max, the output buffer's max
 *                is too small, or nonce_limit would be passed.
 *   RM_E_AGAIN   frame_rx_feed(): no room; call frame_rx_next() first.
 *   RM_E_INVAL   misuse (NULL, a used or keyless cipher, a body that is
 *                not exactly one msgpack value, a bad option).
 *   RM_E_CLOSED  the state is dead after an earlier error.
 *   -ENOMEM.
 * The receiver is dead after any error from frame_rx_next() (and after
 * RM_E_CLOSED / -ENOMEM from frame_rx_feed()): every later call returns
 * RM_E_CLOSED; the connection must be dropped. The sender is dead after an
 * error in the middle of a message (its nonces advanced); errors found
 * before the first encryption (TOOBIG, INVAL) leave it unchanged.
 *
 * Threads: none inside; a state is used by one thread at a time.
 */
#ifndef RM_FRAME_H
#define RM_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "common/buf.h"
#include "common/mpack_check.h"
#include "mesh/noise.h"

#define FRAME_VERSION 1
#define FRAME_HDRLEN 4 /* big-endian length of the ciphertext */
#define FRAME_CHUNK_FINAL 0x00
#define FRAME_CHUNK_MORE 0x01
/* Ciphertext bounds: a flag byte and a tag at least; a Noise message at
 * most (section 3). */
#define FRAME_WIRE_MIN (1 + NOISE_TAGLEN)
#define FRAME_CHUNK_MAX (NOISE_MSG_MAX - NOISE_TAGLEN - 1) /* 65518 */
#define FRAME_MSG_MAX (1024 * 1024)              /* largest logical message */
#define FRAME_REKEY_INTERVAL ((uint64_t)1 << 20) /* Noise messages */
#define FRAME_NONCE_LIMIT ((uint64_t)1 << 62)    /* Noise messages */
/* The receiver's wire buffer: two whole wire messages, so that after
 * frame_rx_next() returned 0 at least FRAME_RX_FEED_MIN bytes fit. */
#define FRAME_RX_BUF_MAX (2 * (FRAME_HDRLEN + NOISE_MSG_MAX))
#define FRAME_RX_FEED_MIN (FRAME_HDRLEN + NOISE_MSG_MAX)
#define FRAME_DEPTH_MAX MPACK_DEPTH_MAX /* msgpack nesting (mpack_check) */

/* Options; a zero field takes the default shown. Both sides of a
 * connection must use the same rekey_interval and nonce_limit. */
struct frame_opts {
    size_t msg_max;          /* FRAME_MSG_MAX; at most FRAME_MSG_MAX */
    uint64_t rekey_interval; /* FRAME_REKEY_INTERVAL */
    uint64_t nonce_limit;    /* FRAME_NONCE_LIMIT; at most 2^64 - 2 */
};

/* Sender. Fields are private. */
struct frame_tx {
    struct noise_cipher *cs;
    size_t msg_max;
    uint64_t rekey_interval, nonce_limit;
    uint64_t count;     /* Noise messages sent */
    struct buf scratch; /* the map being packed by frame_encode() */
    int dead;
};

/* A decoded message, borrowed from the receiver: valid until the next
 * frame_rx_next(), frame_rx_feed() or frame_rx_cleanup() on it. */
struct frame_msg {
    uint64_t version; /* always FRAME_VERSION */
    int type_is_str;  /* 1: type / type_len; 0: type_num */
    const char *type; /* not NUL-terminated */
    size_t type_len;
    uint64_t type_num;
    const msgpack_object *body;
    const uint8_t *raw; /* the whole logical message (msgpack map) */
    size_t raw_len;
};

/* Receiver. Fields are private. */
struct frame_rx {
    struct noise_cipher *cs;
    size_t msg_max;
    uint64_t rekey_interval, nonce_limit;
    uint64_t count; /* Noise messages received */
    struct buf in;  /* wire bytes; in.data[pos..in.len) not yet used */
    size_t pos;
    struct buf msg; /* the logical message being reassembled */
    int msg_done;   /* msg / zone hold the message last returned */
    msgpack_zone zone;
    msgpack_object body;
    int dead;
};

/*
 * Sender. cs: the sending CipherState from noise_handshake_split(), fresh
 * (nonce 0), borrowed (see above). opts may be NULL. Errors: RM_E_INVAL.
 */
int frame_tx_init(struct frame_tx *tx, struct noise_cipher *cs,
                  const struct frame_opts *opts);
/*
 * Append the wire bytes of one message {"v": 1, "t": type, "b": body} to
 * out. type: tlen bytes (frame_encode) or an unsigned number
 * (frame_encode_num). body: exactly one packed msgpack value (body_len
 * bytes), copied; it must not point into out (out may be reallocated).
 * On error nothing is appended to out. Errors: see above.
 */
int frame_encode(struct frame_tx *tx, const char *type, size_t tlen,
                 const void *body, size_t body_len, struct buf *out);
int frame_encode_num(struct frame_tx *tx, uint64_t type, const void *body,
                     size_t body_len, struct buf *out);
/* Append the wire bytes of a logical message given whole (len bytes, not
 * checked: for tests and for relaying a message received intact). */
int frame_encode_raw(struct frame_tx *tx, const void *msg, size_t len,
                     struct buf *out);
/* Noise messages sent so far (for tests and statistics). */
uint64_t frame_tx_count(const struct frame_tx *tx);
/* Frees the scratch buffer; does not touch the cipher. */
void frame_tx_cleanup(struct frame_tx *tx);

/*
 * Receiver. cs: the receiving CipherState from noise_handshake_split(),
 * fresh, borrowed. opts may be NULL. Errors: RM_E_INVAL, -ENOMEM.
 */
int frame_rx_init(struct frame_rx *rx, struct noise_cipher *cs,
                  const struct frame_opts *opts);
/*
 * Take len bytes read from the connection (copied). Errors: RM_E_AGAIN
 * (they do not fit: nothing taken, the receiver stays usable; drain with
 * frame_rx_next()), RM_E_CLOSED, -ENOMEM (then dead). Invalidates the last
 * message returned.
 */
int frame_rx_feed(struct frame_rx *rx, const void *data, size_t len);
/* Bytes frame_rx_feed() takes now. */
size_t frame_rx_room(const struct frame_rx *rx);
/*
 * Decode: 1 and *out filled with the next complete message; 0 when more
 * bytes are needed; or an error (see above; the receiver is then dead).
 */
int frame_rx_next(struct frame_rx *rx, struct frame_msg *out);
/* Noise messages received so far. */
uint64_t frame_rx_count(const struct frame_rx *rx);
/* Frees the buffers and the zone; does not touch the cipher. */
void frame_rx_cleanup(struct frame_rx *rx);

#endif
