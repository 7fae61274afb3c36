/*
 * noise: the Noise Protocol Framework (revision 34) handshake for the mesh's
 * secure channel and the MAPI bridge: Noise_NN, Noise_XX, Noise_IK and
 * Noise_XXpsk3 with DH = 25519, cipher = ChaChaPoly, hash = BLAKE2b, built
 * on libsodium primitives only (no Noise library). Section numbers below
 * cite https://noiseprotocol.org/noise.html.
 *
 * Pure C: no I/O, no allocation, no globals, no POSIX-only calls, so the
 * Windows DLL builds the same file. Only noise.c includes sodium.h.
 *
 * Memory and ownership. Every state is a struct in the caller's storage
 * (_init / _cleanup); the fields are private. They hold secret keys: the
 * caller chooses where they live (the mesh keeps them in sodium_malloc
 * memory, STYLE 13) and must call the _cleanup function, which wipes them
 * (sodium_memzero). Input pointers are borrowed only for the duration of
 * the call; nothing keeps a pointer to caller memory. Output buffers are
 * the caller's, bounded by an explicit size; a Noise message is at most
 * NOISE_MSG_MAX bytes (section 3).
 *
 * Errors: 0 or a negative code from common/rm_error.h.
 *   RM_E_PROTO   the peer's message is malformed: too short, too long,
 *                failed authentication (bad tag: tampered, wrong keys,
 *                wrong prologue or PSK), or a DH with the peer's key gave
 *                the all-zero value (low-order point).
 *   RM_E_TOOBIG  a caller buffer is too small, a message would exceed
 *                NOISE_MSG_MAX, or the nonce space is used up (section 5.1:
 *                nonce 2^64-1 is reserved; rekey or close the channel).
 *   RM_E_INVAL   misuse: NULL argument, missing key for the pattern, call
 *                in the wrong state (write when a read is due, split before
 *                the end, any call after a failure).
 * A handshake is unusable after ANY error from noise_handshake_write() or
 * noise_handshake_read(): its keys are wiped at once, its action becomes
 * NOISE_ACTION_FAILED and every later call returns RM_E_INVAL. No half
 * state survives; the caller drops the connection and calls
 * noise_handshake_cleanup().
 *
 * Authentication. The handshake proves that the peer holds the private key
 * of the static key it sent; whether that key is welcome (mesh membership,
 * the DLL's pinned node key) is the caller's decision, taken with
 * noise_handshake_remote_static() before trusting any payload.
 *
 * Payloads (section 7.7): the first message of NN, XX and XXpsk3 carries
 * its payload in clear (NN, XX: without a tag either: a change shows only
 * when the initiator reads message 2). Put nothing secret or trusted there;
 * the mesh sends its frames after noise_handshake_split().
 *
 * Threads: none inside; a state is used by one thread at a time.
 */
#ifndef RM_NOISE_H
#define RM_NOISE_H

#include <stddef.h>
#include <stdint.h>

#define NOISE_DHLEN 32      /* X25519 public / private key, section 12.1 */
#define NOISE_KEYLEN 32     /* cipher key, section 5 */
#define NOISE_TAGLEN 16     /* AEAD tag, section 5 */
#define NOISE_HASHLEN 64    /* BLAKE2b, section 12.8 */
#define NOISE_PSKLEN 32     /* section 9 */
#define NOISE_MSG_MAX 65535 /* every Noise message, section 3 */

/* ---------------------------------------------------------------------
 * CipherState (section 5.1). Transport encryption after
 * noise_handshake_split().
 */
struct noise_cipher {
    uint8_t k[NOISE_KEYLEN];
    uint64_t n;
    int has_key;
};

/* InitializeKey: k = key (NULL: empty), n = 0. */
void noise_cipher_init(struct noise_cipher *cs, const uint8_t *key);
/* HasKey. */
int noise_cipher_has_key(const struct noise_cipher *cs);
/* SetNonce (for tests and out-of-order transports). */
void noise_cipher_set_nonce(struct noise_cipher *cs, uint64_t n);
/*
 * EncryptWithAd: writes len + NOISE_TAGLEN bytes (len bytes when the state
 * has no key) to out, which has room for outmax bytes, and sets *outlen.
 * out may equal in (in place); other overlaps are not allowed. The nonce is
 * incremented only on success. Errors: RM_E_TOOBIG (outmax too small or
 * nonce exhausted), RM_E_INVAL.
 */
int noise_cipher_encrypt(struct noise_cipher *cs, const uint8_t *ad,
                         size_t adlen, const uint8_t *in, size_t len,
                         uint8_t *out, size_t outmax, size_t *outlen);
/*
 * DecryptWithAd: the reverse; out gets len - NOISE_TAGLEN bytes. When
 * authentication fails out holds zeros, not plaintext, and the nonce is not
 * incremented (section 5.1). Errors: RM_E_PROTO (shorter
 * than a tag or authentication failed), RM_E_TOOBIG (outmax too small or
 * nonce exhausted), RM_E_INVAL.
 */
int noise_cipher_decrypt(struct noise_cipher *cs, const uint8_t *ad,
                         size_t adlen, const uint8_t *in, size_t len,
                         uint8_t *out, size_t outmax, size_t *outlen);
/* Rekey (section 4.2 / 11.3): k = first 32 bytes of ENCRYPT(k, 2^64-1, "",
 * zeros). The nonce is unchanged. Errors: RM_E_INVAL when there is no key. */
int noise_cipher_rekey(struct noise_cipher *cs);
/* Wipe. */
void noise_cipher_cleanup(struct noise_cipher *cs);

/* ---------------------------------------------------------------------
 * SymmetricState (section 5.2). Used by the handshake; public for tests.
 */
struct noise_symmetric {
    struct noise_cipher cs;
    uint8_t ck[NOISE_HASHLEN];
    uint8_t h[NOISE_HASHLEN];
};

void noise_symmetric_init(struct noise_symmetric *ss, const char *name);
/* MixKey, MixHash, MixKeyAndHash (section 5.2). */
void noise_symmetric_mix_key(struct noise_symmetric *ss, const uint8_t *ikm,
                             size_t len);
void noise_symmetric_mix_hash(struct noise_symmetric *ss, const uint8_t *data,
                              size_t len);
void noise_symmetric_mix_key_and_hash(struct noise_symmetric *ss,
                                      const uint8_t *ikm, size_t len);
/* Borrowed: valid until the state changes or is wiped. */
const uint8_t *noise_symmetric_hash_get(const struct noise_symmetric *ss);
/* EncryptAndHash / DecryptAndHash: errors as noise_cipher_*; in place
 * (out == in) is allowed. */
int noise_symmetric_encrypt(struct noise_symmetric *ss, const uint8_t *in,
                            size_t len, uint8_t *out, size_t outmax,
                            size_t *outlen);
int noise_symmetric_decrypt(struct noise_symmetric *ss, const uint8_t *in,
                            size_t len, uint8_t *out, size_t outmax,
                            size_t *outlen);
/* Split: c1 (initiator to responder) and c2 (responder to initiator). */
void noise_symmetric_split(struct noise_symmetric *ss, struct noise_cipher *c1,
                           struct noise_cipher *c2);
void noise_symmetric_cleanup(struct noise_symmetric *ss);

/* HMAC-BLAKE2b and HKDF (section 4.3; public for tests). Any of out1..out3
 * may be NULL; they may alias ck. */
void noise_hmac(const uint8_t *key, size_t keylen, const uint8_t *data,
                size_t len, uint8_t out[NOISE_HASHLEN]);
void noise_hkdf(const uint8_t ck[NOISE_HASHLEN], const uint8_t *ikm, size_t len,
                uint8_t out1[NOISE_HASHLEN], uint8_t out2[NOISE_HASHLEN],
                uint8_t out3[NOISE_HASHLEN]);

/* ---------------------------------------------------------------------
 * HandshakeState (section 5.3).
 */
enum noise_pattern {
    NOISE_PATTERN_NN,     /* -> e; <- e, ee */
    NOISE_PATTERN_XX,     /* -> e; <- e, ee, s, es; -> s, se */
    NOISE_PATTERN_IK,     /* <- s ...; -> e, es, s, ss; <- e, ee, se */
    NOISE_PATTERN_XXPSK3, /* XX with psk after the third message's se */
    NOISE_PATTERN_COUNT
};

enum noise_role {
    NOISE_INITIATOR,
    NOISE_RESPONDER,
};

/* What the handshake expects next. */
enum noise_action {
    NOISE_ACTION_WRITE, /* call noise_handshake_write() */
    NOISE_ACTION_READ,  /* call noise_handshake_read() */
    NOISE_ACTION_SPLIT, /* finished: call noise_handshake_split() */
    NOISE_ACTION_DONE,  /* split done: hash and remote static remain */
    NOISE_ACTION_FAILED /* an error ended it; only cleanup remains */
};

struct noise_handshake_opts {
    enum noise_pattern pattern;
    enum noise_role role;
    const uint8_t *prologue; /* may be NULL when prologue_len is 0 */
    size_t prologue_len;
    /* Local static private key (the public key is derived). Required by
     * XX, XXpsk3 and IK (both sides); NULL for NN. */
    const uint8_t *s_priv;
    /* Remote static public key known in advance: required by the IK
     * initiator (the responder's key), otherwise NULL. */
    const uint8_t *rs;
    /* Pre-shared key: required by XXpsk3, otherwise NULL. */
    const uint8_t *psk;
    /* Test vectors only: a fixed ephemeral private key. NULL (always, in
     * production) draws a fresh one from randombytes. */
    const uint8_t *e_priv;
};

struct noise_handshake {
    struct noise_symmetric ss;
    uint8_t s_priv[NOISE_DHLEN], s_pub[NOISE_DHLEN];
    uint8_t e_priv[NOISE_DHLEN], e_pub[NOISE_DHLEN];
    uint8_t fixed_e[NOISE_DHLEN];
    uint8_t rs[NOISE_DHLEN], re[NOISE_DHLEN];
    uint8_t psk[NOISE_PSKLEN];
    uint8_t h_final[NOISE_HASHLEN];
    enum noise_pattern pattern;
    enum noise_role role;
    enum noise_action action;
    unsigned msg; /* index of the next handshake message */
    unsigned has_s : 1, has_e : 1, has_fixed_e : 1, has_rs : 1, has_re : 1,
        has_psk : 1;
};

/* "XX" -> NOISE_PATTERN_XX etc. (the pattern part of a protocol name).
 * Errors: RM_E_NOTFOUND (not implemented), RM_E_INVAL. */
int noise_pattern_parse(const char *s, enum noise_pattern *out);
/* "Noise_XX_25519_ChaChaPoly_BLAKE2b"; static storage, never NULL. */
const char *noise_protocol_name(enum noise_pattern p);

/* A fresh X25519 key pair from randombytes. */
void noise_keypair(uint8_t pub[NOISE_DHLEN], uint8_t priv[NOISE_DHLEN]);
/* pub = priv * basepoint. */
void noise_public_key(uint8_t pub[NOISE_DHLEN],
                      const uint8_t priv[NOISE_DHLEN]);

/*
 * Initialize (section 5.3): copies every key from opts, mixes the protocol
 * name, the prologue and the pre-message keys. Errors: RM_E_INVAL (NULL,
 * unknown pattern or role, a key the pattern needs is missing or one it
 * does not use is given); *hs is then wiped and NOISE_ACTION_FAILED.
 */
int noise_handshake_init(struct noise_handshake *hs,
                         const struct noise_handshake_opts *opts);
enum noise_action noise_handshake_action(const struct noise_handshake *hs);
/*
 * WriteMessage: the next handshake message, carrying payload (plen bytes,
 * may be 0 with payload NULL), into out (room for outmax bytes); *outlen
 * gets its length (<= NOISE_MSG_MAX). payload and out must not overlap.
 * Errors: RM_E_INVAL (wrong state), RM_E_TOOBIG (outmax too small or the
 * message would exceed NOISE_MSG_MAX), RM_E_PROTO (a DH with the peer's key
 * gave zero). Any error ends the handshake (see above).
 */
int noise_handshake_write(struct noise_handshake *hs, const uint8_t *payload,
                          size_t plen, uint8_t *out, size_t outmax,
                          size_t *outlen);
/*
 * ReadMessage: msg (mlen bytes) is the peer's next handshake message; its
 * payload goes to payload (room for pmax bytes; NULL if 0), *plen gets its
 * length. msg and payload must not overlap. Errors: RM_E_PROTO (malformed:
 * short, longer than NOISE_MSG_MAX, bad tag, zero DH), RM_E_TOOBIG (pmax
 * too small), RM_E_INVAL (wrong state). Any error ends the handshake; on
 * error nothing is left in payload.
 */
int noise_handshake_read(struct noise_handshake *hs, const uint8_t *msg,
                         size_t mlen, uint8_t *payload, size_t pmax,
                         size_t *plen);
/*
 * Split (section 5.2) once the action is NOISE_ACTION_SPLIT: tx encrypts
 * what this side sends, rx decrypts what it receives. Wipes the handshake's
 * keys; the handshake hash and the remote static key stay readable.
 * Errors: RM_E_INVAL (not finished).
 */
int noise_handshake_split(struct noise_handshake *hs, struct noise_cipher *tx,
                          struct noise_cipher *rx);
/* GetHandshakeHash (channel binding): valid in state SPLIT or DONE.
 * Errors: RM_E_INVAL. */
int noise_handshake_hash(const struct noise_handshake *hs,
                         uint8_t out[NOISE_HASHLEN]);
/* The peer's static public key once known (IK: from the start, on the
 * initiator). Errors: RM_E_NOTFOUND (not received yet / not in pattern),
 * RM_E_INVAL (failed handshake). */
int noise_handshake_remote_static(const struct noise_handshake *hs,
                                  uint8_t out[NOISE_DHLEN]);
/* Wipe everything; the state is NOISE_ACTION_FAILED afterwards. */
void noise_handshake_cleanup(struct noise_handshake *hs);

#endif
