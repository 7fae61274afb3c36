/*
 * Noise handshake over libsodium: see noise.h for the contract. Section
 * numbers cite the Noise specification, revision 34.
 *
 * Why no allocation: the states live where the caller puts them (the mesh:
 * sodium_malloc memory), and every message is built in the caller's
 * buffer. Temporaries on the stack that held secrets are wiped before
 * return.
 */
#include <string.h>

#include <sodium.h>

#include "common/rm_error.h"
#include "mesh/noise.h"

#define BLAKE2B_BLOCKLEN 128 /* HMAC block length for BLAKE2b, section 12.8 */

/* ---------------------------------------------------------------------
 * Patterns (section 7). Tokens of each message, in order; messages
 * alternate, the initiator sends the first.
 */
enum noise_token {
    TOK_END = 0,
    TOK_E,
    TOK_S,
    TOK_EE,
    TOK_ES,
    TOK_SE,
    TOK_SS,
    TOK_PSK,
};

#define NOISE_MSGS_MAX 3
#define NOISE_TOKENS_MAX 6

struct noise_pattern_def {
    const char *short_name;  /* the pattern part of the protocol name */
    const char *name;        /* the full protocol name, section 8 */
    unsigned psk : 1;        /* a psk modifier is present (section 9.2) */
    unsigned pre_resp_s : 1; /* "<- s" pre-message (section 7.1) */
    unsigned nmsg;
    unsigned char tokens[NOISE_MSGS_MAX][NOISE_TOKENS_MAX];
};

static const struct noise_pattern_def patterns[NOISE_PATTERN_COUNT] = {
    [NOISE_PATTERN_NN] = {"NN",
                          "Noise_NN_25519_ChaChaPoly_BLAKE2b",
                          0,
                          0,
                          2,
                          {{TOK_E}, {TOK_E, TOK_EE}}},
    [NOISE_PATTERN_XX] = {"XX",
                          "Noise_XX_25519_ChaChaPoly_BLAKE2b",
                          0,
                          0,
                          3,
                          {{TOK_E},
                           {TOK_E, TOK_EE, TOK_S, TOK_ES},
                           {TOK_S, TOK_SE}}},
    [NOISE_PATTERN_IK] = {"IK",
                          "Noise_IK_25519_ChaChaPoly_BLAKE2b",
                          0,
                          1,
                          2,
                          {{TOK_E, TOK_ES, TOK_S, TOK_SS},
                           {TOK_E, TOK_EE, TOK_SE}}},
    [NOISE_PATTERN_XXPSK3] = {"XXpsk3",
                              "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b",
                              1,
                              0,
                              3,
                              {{TOK_E},
                               {TOK_E, TOK_EE, TOK_S, TOK_ES},
                               {TOK_S, TOK_SE, TOK_PSK}}},
};

/* ---------------------------------------------------------------------
 * Hash, HMAC, HKDF (sections 4.3, 12.8).
 */
static void
hash2(uint8_t out[NOISE_HASHLEN], const uint8_t *a, size_t alen,
      const uint8_t *b, size_t blen)
{
    crypto_generichash_blake2b_state st;

    crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASHLEN);
    crypto_generichash_blake2b_update(&st, a, alen);
    if (blen > 0)
        crypto_generichash_blake2b_update(&st, b, blen);
    crypto_generichash_blake2b_final(&st, out, NOISE_HASHLEN);
    sodium_memzero(&st, sizeof(st));
}

/* HMAC (RFC 2104) over BLAKE2b; the data is d1 || d2. libsodium's keyed
 * BLAKE2b is a different construction and would not interoperate. */
static void
hmac2(const uint8_t *key, size_t keylen, const uint8_t *d1, size_t l1,
      const uint8_t *d2, size_t l2, uint8_t out[NOISE_HASHLEN])
{
    uint8_t k[BLAKE2B_BLOCKLEN], pad[BLAKE2B_BLOCKLEN], inner[NOISE_HASHLEN];
    crypto_generichash_blake2b_state st;

    memset(k, 0, sizeof(k));
    if (keylen > BLAKE2B_BLOCKLEN)
        hash2(k, key, keylen, NULL, 0);
    else if (keylen > 0)
        memcpy(k, key, keylen);

    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] = k[i] ^ 0x36;
    crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASHLEN);
    crypto_generichash_blake2b_update(&st, pad, sizeof(pad));
    if (l1 > 0)
        crypto_generichash_blake2b_update(&st, d1, l1);
    if (l2 > 0)
        crypto_generichash_blake2b_update(&st, d2, l2);
    crypto_generichash_blake2b_final(&st, inner, sizeof(inner));

    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] = k[i] ^ 0x5c;
    crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASHLEN);
    crypto_generichash_blake2b_update(&st, pad, sizeof(pad));
    crypto_generichash_blake2b_update(&st, inner, sizeof(inner));
    crypto_generichash_blake2b_final(&st, out, NOISE_HASHLEN);

    sodium_memzero(k, sizeof(k));
    sodium_memzero(pad, sizeof(pad));
    sodium_memzero(inner, sizeof(inner));
    sodium_memzero(&st, sizeof(st));
}

void
noise_hmac(const uint8_t *key, size_t keylen, const uint8_t *data, size_t len,
           uint8_t out[NOISE_HASHLEN])
{
    hmac2(key, keylen, data, len, NULL, 0, out);
}

/* Outputs may alias ck (MixKey overwrites ck with output 1). */
void
noise_hkdf(const uint8_t ck[NOISE_HASHLEN], const uint8_t *ikm, size_t len,
           uint8_t out1[NOISE_HASHLEN], uint8_t out2[NOISE_HASHLEN],
           uint8_t out3[NOISE_HASHLEN])
{
    uint8_t temp[NOISE_HASHLEN], o1[NOISE_HASHLEN], o2[NOISE_HASHLEN],
        o3[NOISE_HASHLEN];
    const uint8_t b1 = 0x01, b2 = 0x02, b3 = 0x03;

    hmac2(ck, NOISE_HASHLEN, ikm, len, NULL, 0, temp);
    hmac2(temp, sizeof(temp), &b1, 1, NULL, 0, o1);
    hmac2(temp, sizeof(temp), o1, sizeof(o1), &b2, 1, o2);
    if (out3 != NULL)
        hmac2(temp, sizeof(temp), o2, sizeof(o2), &b3, 1, o3);
    if (out1 != NULL)
        memcpy(out1, o1, NOISE_HASHLEN);
    if (out2 != NULL)
        memcpy(out2, o2, NOISE_HASHLEN);
    if (out3 != NULL)
        memcpy(out3, o3, NOISE_HASHLEN);
    sodium_memzero(temp, sizeof(temp));
    sodium_memzero(o1, sizeof(o1));
    sodium_memzero(o2, sizeof(o2));
    sodium_memzero(o3, sizeof(o3));
}

/* ---------------------------------------------------------------------
 * CipherState (sections 5.1, 12.3).
 */

/* ChaChaPoly nonce: 32 bits of zeros, then the 64-bit counter little-endian
 * (section 12.3). */
static void
nonce_bytes(uint8_t out[crypto_aead_chacha20poly1305_ietf_NPUBBYTES],
            uint64_t n)
{
    memset(out, 0, 4);
    for (int i = 0; i < 8; i++)
        out[4 + i] = (uint8_t)(n >> (8 * i));
}

void
noise_cipher_init(struct noise_cipher *cs, const uint8_t *key)
{
    if (key != NULL) {
        memmove(cs->k, key, NOISE_KEYLEN);
        cs->has_key = 1;
    } else {
        sodium_memzero(cs->k, sizeof(cs->k));
        cs->has_key = 0;
    }
    cs->n = 0;
}

int
noise_cipher_has_key(const struct noise_cipher *cs)
{
    return cs->has_key;
}

void
noise_cipher_set_nonce(struct noise_cipher *cs, uint64_t n)
{
    cs->n = n;
}

int
noise_cipher_encrypt(struct noise_cipher *cs, const uint8_t *ad, size_t adlen,
                     const uint8_t *in, size_t len, uint8_t *out, size_t outmax,
                     size_t *outlen)
{
    uint8_t npub[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    unsigned long long clen = 0;

    if (cs == NULL || outlen == NULL || (len > 0 && in == NULL) ||
        (adlen > 0 && ad == NULL) || (out == NULL && (len > 0 || cs->has_key)))
        return RM_E_INVAL;
    if (!cs->has_key) {
        if (outmax < len)
            return RM_E_TOOBIG;
        if (len > 0)
            memmove(out, in, len);
        *outlen = len;
        return 0;
    }
    if (len > SIZE_MAX - NOISE_TAGLEN || outmax < len + NOISE_TAGLEN)
        return RM_E_TOOBIG;
    /* 2^64-1 is reserved for rekey (section 5.1) */
    if (cs->n == UINT64_MAX)
        return RM_E_TOOBIG;
    nonce_bytes(npub, cs->n);
    crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, in, len, ad, adlen,
                                              NULL, npub, cs->k);
    cs->n++;
    *outlen = (size_t)clen;
    return 0;
}

int
noise_cipher_decrypt(struct noise_cipher *cs, const uint8_t *ad, size_t adlen,
                     const uint8_t *in, size_t len, uint8_t *out, size_t outmax,
                     size_t *outlen)
{
    uint8_t npub[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    unsigned long long mlen = 0;

    if (cs == NULL || outlen == NULL || (len > 0 && in == NULL) ||
        (adlen > 0 && ad == NULL))
        return RM_E_INVAL;
    if (!cs->has_key) {
        if (outmax < len)
            return RM_E_TOOBIG;
        if (len > 0) {
            if (out == NULL)
                return RM_E_INVAL;
            memmove(out, in, len);
        }
        *outlen = len;
        return 0;
    }
    if (len < NOISE_TAGLEN)
        return RM_E_PROTO;
    if (outmax < len - NOISE_TAGLEN)
        return RM_E_TOOBIG;
    if (out == NULL && len > NOISE_TAGLEN)
        return RM_E_INVAL;
    if (cs->n == UINT64_MAX)
        return RM_E_TOOBIG;
    nonce_bytes(npub, cs->n);
    if (out == NULL) {
        /* empty plaintext: libsodium still wants a pointer */
        uint8_t dummy[1];
        if (crypto_aead_chacha20poly1305_ietf_decrypt(
                dummy, &mlen, NULL, in, len, ad, adlen, npub, cs->k) != 0)
            return RM_E_PROTO;
    } else if (crypto_aead_chacha20poly1305_ietf_decrypt(
                   out, &mlen, NULL, in, len, ad, adlen, npub, cs->k) != 0) {
        sodium_memzero(out, len - NOISE_TAGLEN);
        return RM_E_PROTO;
    }
    cs->n++;
    *outlen = (size_t)mlen;
    return 0;
}

int
noise_cipher_rekey(struct noise_cipher *cs)
{
    uint8_t npub[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    uint8_t zeros[NOISE_KEYLEN], tmp[NOISE_KEYLEN + NOISE_TAGLEN];

    if (cs == NULL || !cs->has_key)
        return RM_E_INVAL;
    /* REKEY(k) = ENCRYPT(k, maxnonce, zerolen, zeros), first 32 bytes
     * (sections 4.2, 12.3) */
    memset(zeros, 0, sizeof(zeros));
    nonce_bytes(npub, UINT64_MAX);
    crypto_aead_chacha20poly1305_ietf_encrypt(tmp, NULL, zeros, sizeof(zeros),
                                              NULL, 0, NULL, npub, cs->k);
    memcpy(cs->k, tmp, NOISE_KEYLEN);
    sodium_memzero(tmp, sizeof(tmp));
    return 0;
}

void
noise_cipher_cleanup(struct noise_cipher *cs)
{
    if (cs != NULL)
        sodium_memzero(cs, sizeof(*cs));
}

/* ---------------------------------------------------------------------
 * SymmetricState (section 5.2).
 */
void
noise_symmetric_init(struct noise_symmetric *ss, const char *name)
{
    size_t len = strlen(name);

    if (len <= NOISE_HASHLEN) {
        memset(ss->h, 0, sizeof(ss->h));
        memcpy(ss->h, name, len);
    } else {
        hash2(ss->h, (const uint8_t *)name, len, NULL, 0);
    }
    memcpy(ss->ck, ss->h, NOISE_HASHLEN);
    noise_cipher_init(&ss->cs, NULL);
}

void
noise_symmetric_mix_key(struct noise_symmetric *ss, const uint8_t *ikm,
                        size_t len)
{
    uint8_t temp_k[NOISE_HASHLEN];

    noise_hkdf(ss->ck, ikm, len, ss->ck, temp_k, NULL);
    noise_cipher_init(&ss->cs, temp_k); /* truncated to 32 bytes */
    sodium_memzero(temp_k, sizeof(temp_k));
}

void
noise_symmetric_mix_hash(struct noise_symmetric *ss, const uint8_t *data,
                         size_t len)
{
    hash2(ss->h, ss->h, sizeof(ss->h), data, len);
}

void
noise_symmetric_mix_key_and_hash(struct noise_symmetric *ss, const uint8_t *ikm,
                                 size_t len)
{
    uint8_t temp_h[NOISE_HASHLEN], temp_k[NOISE_HASHLEN];

    noise_hkdf(ss->ck, ikm, len, ss->ck, temp_h, temp_k);
    noise_symmetric_mix_hash(ss, temp_h, sizeof(temp_h));
    noise_cipher_init(&ss->cs, temp_k);
    sodium_memzero(temp_h, sizeof(temp_h));
    sodium_memzero(temp_k, sizeof(temp_k));
}

const uint8_t *
noise_symmetric_hash_get(const struct noise_symmetric *ss)
{
    return ss->h;
}

int
noise_symmetric_encrypt(struct noise_symmetric *ss, const uint8_t *in,
                        size_t len, uint8_t *out, size_t outmax, size_t *outlen)
{
    int rc = noise_cipher_encrypt(&ss->cs, ss->h, sizeof(ss->h), in, len, out,
                                  outmax, outlen);
    if (rc == 0)
        noise_symmetric_mix_hash(ss, out, *outlen);
    return rc;
}

int
noise_symmetric_decrypt(struct noise_symmetric *ss, const uint8_t *in,
                        size_t len, uint8_t *out, size_t outmax, size_t *outlen)
{
    uint8_t h_next[NOISE_HASHLEN];
    int rc;

    /* the hash covers the ciphertext, which decrypting in place destroys:
     * compute it first, commit it only on success */
    hash2(h_next, ss->h, sizeof(ss->h), in, len);
    rc = noise_cipher_decrypt(&ss->cs, ss->h, sizeof(ss->h), in, len, out,
                              outmax, outlen);
    if (rc == 0)
        memcpy(ss->h, h_next, sizeof(h_next));
    return rc;
}

void
noise_symmetric_split(struct noise_symmetric *ss, struct noise_cipher *c1,
                      struct noise_cipher *c2)
{
    uint8_t k1[NOISE_HASHLEN], k2[NOISE_HASHLEN];

    noise_hkdf(ss->ck, NULL, 0, k1, k2, NULL);
    noise_cipher_init(c1, k1);
    noise_cipher_init(c2, k2);
    sodium_memzero(k1, sizeof(k1));
    sodium_memzero(k2, sizeof(k2));
}

void
noise_symmetric_cleanup(struct noise_symmetric *ss)
{
    if (ss != NULL)
        sodium_memzero(ss, sizeof(*ss));
}

/* ---------------------------------------------------------------------
 * HandshakeState (section 5.3).
 */
int
noise_pattern_parse(const char *s, enum noise_pattern *out)
{
    if (s == NULL || out == NULL)
        return RM_E_INVAL;
    for (int i = 0; i < NOISE_PATTERN_COUNT; i++) {
        if (strcmp(s, patterns[i].short_name) == 0) {
            *out = (enum noise_pattern)i;
            return 0;
        }
    }
    return RM_E_NOTFOUND;
}

const char *
noise_protocol_name(enum noise_pattern p)
{
    if ((unsigned)p >= NOISE_PATTERN_COUNT)
        return "Noise_?";
    return patterns[p].name;
}

void
noise_public_key(uint8_t pub[NOISE_DHLEN], const uint8_t priv[NOISE_DHLEN])
{
    crypto_scalarmult_base(pub, priv);
}

void
noise_keypair(uint8_t pub[NOISE_DHLEN], uint8_t priv[NOISE_DHLEN])
{
    randombytes_buf(priv, NOISE_DHLEN);
    crypto_scalarmult_base(pub, priv);
}

/* DH (section 12.1): an all-zero result means the peer sent a low-order
 * point; refuse it rather than mix a known value into the keys. */
static int
dh(uint8_t out[NOISE_DHLEN], const uint8_t priv[NOISE_DHLEN],
   const uint8_t pub[NOISE_DHLEN])
{
    if (crypto_scalarmult(out, priv, pub) != 0 ||
        sodium_is_zero(out, NOISE_DHLEN)) {
        sodium_memzero(out, NOISE_DHLEN);
        return RM_E_PROTO;
    }
    return 0;
}

/* Every error ends the handshake: wipe everything, leave FAILED. */
static int
hs_fail(struct noise_handshake *hs, int rc)
{
    sodium_memzero(hs, sizeof(*hs));
    hs->action = NOISE_ACTION_FAILED;
    return rc;
}

int
noise_handshake_init(struct noise_handshake *hs,
                     const struct noise_handshake_opts *o)
{
    const struct noise_pattern_def *p;
    int need_s, need_rs;

    if (hs == NULL)
        return RM_E_INVAL;
    sodium_memzero(hs, sizeof(*hs));
    hs->action = NOISE_ACTION_FAILED;
    if (o == NULL || (unsigned)o->pattern >= NOISE_PATTERN_COUNT ||
        (o->role != NOISE_INITIATOR && o->role != NOISE_RESPONDER) ||
        (o->prologue_len > 0 && o->prologue == NULL))
        return RM_E_INVAL;
    if (sodium_init() < 0)
        return RM_E_INVAL; /* libsodium cannot run here at all */
    p = &patterns[o->pattern];
    need_s = o->pattern != NOISE_PATTERN_NN;
    need_rs = p->pre_resp_s && o->role == NOISE_INITIATOR;
    if ((o->s_priv != NULL) != need_s || (o->rs != NULL) != need_rs ||
        (o->psk != NULL) != p->psk)
        return RM_E_INVAL;

    hs->pattern = o->pattern;
    hs->role = o->role;
    if (o->s_priv != NULL) {
        memcpy(hs->s_priv, o->s_priv, NOISE_DHLEN);
        crypto_scalarmult_base(hs->s_pub, hs->s_priv);
        hs->has_s = 1;
    }
    if (o->rs != NULL) {
        memcpy(hs->rs, o->rs, NOISE_DHLEN);
        hs->has_rs = 1;
    }
    if (o->psk != NULL) {
        memcpy(hs->psk, o->psk, NOISE_PSKLEN);
        hs->has_psk = 1;
    }
    if (o->e_priv != NULL) {
        memcpy(hs->fixed_e, o->e_priv, NOISE_DHLEN);
        hs->has_fixed_e = 1;
    }

    noise_symmetric_init(&hs->ss, p->name);
    noise_symmetric_mix_hash(&hs->ss, o->prologue, o->prologue_len);
    if (p->pre_resp_s)
        noise_symmetric_mix_hash(
            &hs->ss, o->role == NOISE_INITIATOR ? hs->rs : hs->s_pub,
            NOISE_DHLEN);
    hs->msg = 0;
    hs->action =
        o->role == NOISE_INITIATOR ? NOISE_ACTION_WRITE : NOISE_ACTION_READ;
    return 0;
}

enum noise_action
noise_handshake_action(const struct noise_handshake *hs)
{
    return hs != NULL ? hs->action : NOISE_ACTION_FAILED;
}

/*
 * Length of the current message without its payload: keys, tags, and the
 * payload's tag. Depends only on the pattern and whether a key is set, so
 * lengths are checked before any state changes.
 */
static size_t
msg_overhead(const struct noise_handshake *hs)
{
    const struct noise_pattern_def *p = &patterns[hs->pattern];
    const unsigned char *t = p->tokens[hs->msg];
    int has_key = hs->ss.cs.has_key;
    size_t n = 0;

    for (int i = 0; i < NOISE_TOKENS_MAX && t[i] != TOK_END; i++) {
        switch ((enum noise_token)t[i]) {
        case TOK_E:
            n += NOISE_DHLEN;
            if (p->psk)
                has_key = 1; /* MixKey(e) in psk handshakes, section 9.2 */
            break;
        case TOK_S:
            n += NOISE_DHLEN + (has_key ? NOISE_TAGLEN : 0);
            break;
        case TOK_EE:
        case TOK_ES:
        case TOK_SE:
        case TOK_SS:
        case TOK_PSK:
            has_key = 1;
            break;
        case TOK_END:
            break;
        }
    }
    return n + (has_key ? NOISE_TAGLEN : 0);
}

/* The DH tokens, section 5.3: es is DH(e, rs) for the initiator and
 * DH(s, re) for the responder; se the other way round. */
static int
mix_dh(struct noise_handshake *hs, enum noise_token tok)
{
    int init = hs->role == NOISE_INITIATOR;
    const uint8_t *priv = NULL, *pub = NULL;
    int have = 0;
    uint8_t shared[NOISE_DHLEN];
    int rc;

    switch (tok) {
    case TOK_EE:
        priv = hs->e_priv;
        pub = hs->re;
        have = hs->has_e && hs->has_re;
        break;
    case TOK_ES:
        priv = init ? hs->e_priv : hs->s_priv;
        pub = init ? hs->rs : hs->re;
        have = init ? hs->has_e && hs->has_rs : hs->has_s && hs->has_re;
        break;
    case TOK_SE:
        priv = init ? hs->s_priv : hs->e_priv;
        pub = init ? hs->re : hs->rs;
        have = init ? hs->has_s && hs->has_re : hs->has_e && hs->has_rs;
        break;
    case TOK_SS:
        priv = hs->s_priv;
        pub = hs->rs;
        have = hs->has_s && hs->has_rs;
        break;
    case TOK_END:
    case TOK_E:
    case TOK_S:
    case TOK_PSK:
        return RM_E_INVAL;
    }
    if (!have)
        return RM_E_INVAL; /* init() checked the keys: a bug */
    rc = dh(shared, priv, pub);
    if (rc == 0)
        noise_symmetric_mix_key(&hs->ss, shared, sizeof(shared));
    sodium_memzero(shared, sizeof(shared));
    return rc;
}

/* Common token handling; the e and s tokens differ by direction. */
static int
mix_token(struct noise_handshake *hs, enum noise_token tok)
{
    switch (tok) {
    case TOK_EE:
    case TOK_ES:
    case TOK_SE:
    case TOK_SS:
        return mix_dh(hs, tok);
    case TOK_PSK:
        noise_symmetric_mix_key_and_hash(&hs->ss, hs->psk, NOISE_PSKLEN);
        return 0;
    case TOK_END:
    case TOK_E:
    case TOK_S:
        break;
    }
    return RM_E_INVAL;
}

static void
msg_done(struct noise_handshake *hs)
{
    hs->msg++;
    if (hs->msg == patterns[hs->pattern].nmsg) {
        memcpy(hs->h_final, hs->ss.h, NOISE_HASHLEN);
        hs->action = NOISE_ACTION_SPLIT;
    } else {
        hs->action = hs->action == NOISE_ACTION_WRITE ? NOISE_ACTION_READ
                                                      : NOISE_ACTION_WRITE;
    }
}

int
noise_handshake_write(struct noise_handshake *hs, const uint8_t *payload,
                      size_t plen, uint8_t *out, size_t outmax, size_t *outlen)
{
    const struct noise_pattern_def *p;
    const unsigned char *t;
    size_t pos = 0, n, need;
    int rc;

    if (hs == NULL)
        return RM_E_INVAL;
    if (hs->action != NOISE_ACTION_WRITE || out == NULL || outlen == NULL ||
        (plen > 0 && payload == NULL))
        return hs_fail(hs, RM_E_INVAL);
    p = &patterns[hs->pattern];
    t = p->tokens[hs->msg];
    need = msg_overhead(hs);
    if (plen > NOISE_MSG_MAX || need + plen > NOISE_MSG_MAX ||
        need + plen > outmax)
        return hs_fail(hs, RM_E_TOOBIG);

    for (int i = 0; i < NOISE_TOKENS_MAX && t[i] != TOK_END; i++) {
        switch ((enum noise_token)t[i]) {
        case TOK_E:
            if (hs->has_fixed_e)
                memcpy(hs->e_priv, hs->fixed_e, NOISE_DHLEN);
            else
                randombytes_buf(hs->e_priv, NOISE_DHLEN);
            crypto_scalarmult_base(hs->e_pub, hs->e_priv);
            hs->has_e = 1;
            memcpy(out + pos, hs->e_pub, NOISE_DHLEN);
            pos += NOISE_DHLEN;
            noise_symmetric_mix_hash(&hs->ss, hs->e_pub, NOISE_DHLEN);
            if (p->psk)
                noise_symmetric_mix_key(&hs->ss, hs->e_pub, NOISE_DHLEN);
            break;
        case TOK_S:
            rc = noise_symmetric_encrypt(&hs->ss, hs->s_pub, NOISE_DHLEN,
                                         out + pos, outmax - pos, &n);
            if (rc != 0)
                return hs_fail(hs, rc);
            pos += n;
            break;
        case TOK_EE:
        case TOK_ES:
        case TOK_SE:
        case TOK_SS:
        case TOK_PSK:
        case TOK_END:
            rc = mix_token(hs, (enum noise_token)t[i]);
            if (rc != 0)
                return hs_fail(hs, rc);
            break;
        }
    }
    rc = noise_symmetric_encrypt(&hs->ss, payload, plen, out + pos,
                                 outmax - pos, &n);
    if (rc != 0)
        return hs_fail(hs, rc);
    pos += n;
    *outlen = pos;
    msg_done(hs);
    return 0;
}

int
noise_handshake_read(struct noise_handshake *hs, const uint8_t *msg,
                     size_t mlen, uint8_t *payload, size_t pmax, size_t *plen)
{
    const struct noise_pattern_def *p;
    const unsigned char *t;
    size_t pos = 0, n, need, slen;
    int rc;

    if (hs == NULL)
        return RM_E_INVAL;
    if (hs->action != NOISE_ACTION_READ || plen == NULL ||
        (mlen > 0 && msg == NULL) || (pmax > 0 && payload == NULL))
        return hs_fail(hs, RM_E_INVAL);
    p = &patterns[hs->pattern];
    t = p->tokens[hs->msg];
    need = msg_overhead(hs);
    if (mlen > NOISE_MSG_MAX || mlen < need)
        return hs_fail(hs, RM_E_PROTO);
    if (mlen - need > pmax)
        return hs_fail(hs, RM_E_TOOBIG);

    for (int i = 0; i < NOISE_TOKENS_MAX && t[i] != TOK_END; i++) {
        switch ((enum noise_token)t[i]) {
        case TOK_E:
            memcpy(hs->re, msg + pos, NOISE_DHLEN);
            hs->has_re = 1;
            pos += NOISE_DHLEN;
            noise_symmetric_mix_hash(&hs->ss, hs->re, NOISE_DHLEN);
            if (p->psk)
                noise_symmetric_mix_key(&hs->ss, hs->re, NOISE_DHLEN);
            break;
        case TOK_S:
            slen = NOISE_DHLEN + (hs->ss.cs.has_key ? NOISE_TAGLEN : 0);
            rc = noise_symmetric_decrypt(&hs->ss, msg + pos, slen, hs->rs,
                                         sizeof(hs->rs), &n);
            if (rc != 0)
                return hs_fail(hs, rc);
            hs->has_rs = 1;
            pos += slen;
            break;
        case TOK_EE:
        case TOK_ES:
        case TOK_SE:
        case TOK_SS:
        case TOK_PSK:
        case TOK_END:
            rc = mix_token(hs, (enum noise_token)t[i]);
            if (rc != 0)
                return hs_fail(hs, rc);
            break;
        }
    }
    rc = noise_symmetric_decrypt(&hs->ss, msg + pos, mlen - pos, payload, pmax,
                                 &n);
    if (rc != 0)
        return hs_fail(hs, rc);
    *plen = n;
    msg_done(hs);
    return 0;
}

int
noise_handshake_split(struct noise_handshake *hs, struct noise_cipher *tx,
                      struct noise_cipher *rx)
{
    struct noise_cipher c1, c2;

    if (hs == NULL || tx == NULL || rx == NULL ||
        hs->action != NOISE_ACTION_SPLIT)
        return RM_E_INVAL;
    noise_symmetric_split(&hs->ss, &c1, &c2);
    if (hs->role == NOISE_INITIATOR) {
        *tx = c1;
        *rx = c2;
    } else {
        *tx = c2;
        *rx = c1;
    }
    sodium_memzero(&c1, sizeof(c1));
    sodium_memzero(&c2, sizeof(c2));
    /* keep only what is public: the hash and the remote static key */
    noise_symmetric_cleanup(&hs->ss);
    sodium_memzero(hs->s_priv, sizeof(hs->s_priv));
    sodium_memzero(hs->e_priv, sizeof(hs->e_priv));
    sodium_memzero(hs->fixed_e, sizeof(hs->fixed_e));
    sodium_memzero(hs->psk, sizeof(hs->psk));
    hs->has_s = hs->has_e = hs->has_fixed_e = hs->has_psk = 0;
    hs->action = NOISE_ACTION_DONE;
    return 0;
}

int
noise_handshake_hash(const struct noise_handshake *hs,
                     uint8_t out[NOISE_HASHLEN])
{
    if (hs == NULL || out == NULL ||
        (hs->action != NOISE_ACTION_SPLIT && hs->action != NOISE_ACTION_DONE))
        return RM_E_INVAL;
    memcpy(out, hs->h_final, NOISE_HASHLEN);
    return 0;
}

int
noise_handshake_remote_static(const struct noise_handshake *hs,
                              uint8_t out[NOISE_DHLEN])
{
    if (hs == NULL || out == NULL || hs->action == NOISE_ACTION_FAILED)
        return RM_E_INVAL;
    if (!hs->has_rs)
        return RM_E_NOTFOUND;
    memcpy(out, hs->rs, NOISE_DHLEN);
    return 0;
}

void
noise_handshake_cleanup(struct noise_handshake *hs)
{
    if (hs == NULL)
        return;
    sodium_memzero(hs, sizeof(*hs));
    hs->action = NOISE_ACTION_FAILED;
}
