/*
 * Unit tests for mesh/noise.c: XX, IK, NN and XXpsk3 handshakes between two
 * in-memory parties with random keys; every handshake message tampered
 * with (each byte flipped) or truncated is refused and leaves a dead
 * handshake; IK with the wrong responder key is refused; low-order peer
 * keys; nonce exhaustion; rekey; buffer limits; misuse. The published test
 * vectors run separately (tests/tools/noise_vectors.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "common/rm_error.h"
#include "mesh/noise.h"

#define MAXMSG 1024

struct keys {
    uint8_t is_priv[32], is_pub[32]; /* initiator static */
    uint8_t rs_priv[32], rs_pub[32]; /* responder static */
    uint8_t psk[32];
};

/* One recorded run: the handshake messages as sent. */
struct transcript {
    unsigned n;
    uint8_t msg[3][MAXMSG];
    size_t len[3];
};

static const uint8_t prologue[] = "relaymesh test prologue";

static void
keys_new(struct keys *k)
{
    noise_keypair(k->is_pub, k->is_priv);
    noise_keypair(k->rs_pub, k->rs_priv);
    randombytes_buf(k->psk, sizeof(k->psk));
}

static void
party_init(struct noise_handshake *hs, enum noise_pattern pat,
           enum noise_role role, const struct keys *k, const uint8_t *rs)
{
    struct noise_handshake_opts o;

    memset(&o, 0, sizeof(o));
    o.pattern = pat;
    o.role = role;
    o.prologue = prologue;
    o.prologue_len = sizeof(prologue);
    if (pat != NOISE_PATTERN_NN)
        o.s_priv = role == NOISE_INITIATOR ? k->is_priv : k->rs_priv;
    if (pat == NOISE_PATTERN_IK && role == NOISE_INITIATOR)
        o.rs = rs != NULL ? rs : k->rs_pub;
    if (pat == NOISE_PATTERN_XXPSK3)
        o.psk = k->psk;
    assert_int_equal(noise_handshake_init(hs, &o), 0);
}

static unsigned
pattern_msgs(enum noise_pattern pat)
{
    return pat == NOISE_PATTERN_XX || pat == NOISE_PATTERN_XXPSK3 ? 3 : 2;
}

/*
 * Run a handshake. Message number `tamper_msg` (if < 3) is altered on the
 * wire by `alter` before the receiver sees it. Returns 0 if the handshake
 * completed, or the first error with *where = the message index at which a
 * read failed.
 */
typedef void (*alter_fn)(uint8_t *msg, size_t *len, size_t arg);

static int
run_handshake(enum noise_pattern pat, const struct keys *k,
              const uint8_t *ik_rs, unsigned tamper_msg, alter_fn alter,
              size_t arg, unsigned *where, struct transcript *tr,
              struct noise_cipher tx[2], struct noise_cipher rx[2])
{
    struct noise_handshake hs[2];
    uint8_t buf[MAXMSG], pl[MAXMSG];
    char payload[32];
    size_t n, plen;
    unsigned nmsg = pattern_msgs(pat);
    int rc = 0;

    party_init(&hs[0], pat, NOISE_INITIATOR, k, ik_rs);
    party_init(&hs[1], pat, NOISE_RESPONDER, k, NULL);
    for (unsigned i = 0; i < nmsg; i++) {
        struct noise_handshake *snd = &hs[i % 2], *rcv = &hs[(i + 1) % 2];

        snprintf(payload, sizeof(payload), "payload %u", i);
        assert_int_equal(noise_handshake_action(snd), NOISE_ACTION_WRITE);
        assert_int_equal(noise_handshake_action(rcv), NOISE_ACTION_READ);
        rc = noise_handshake_write(snd, (const uint8_t *)payload,
                                   strlen(payload), buf, sizeof(buf), &n);
        if (rc != 0) {
            *where = i;
            break;
        }
        if (tr != NULL) {
            memcpy(tr->msg[i], buf, n);
            tr->len[i] = n;
            tr->n = i + 1;
        }
        if (i == tamper_msg)
            alter(buf, &n, arg);
        rc = noise_handshake_read(rcv, buf, n, pl, sizeof(pl), &plen);
        if (rc != 0) {
            *where = i;
            /* no half state: dead, wiped, refuses everything */
            assert_int_equal(noise_handshake_action(rcv), NOISE_ACTION_FAILED);
            assert_true(sodium_is_zero(rcv->ss.ck, sizeof(rcv->ss.ck)));
            assert_true(sodium_is_zero(rcv->ss.cs.k, sizeof(rcv->ss.cs.k)));
            assert_true(sodium_is_zero(rcv->s_priv, sizeof(rcv->s_priv)));
            assert_true(sodium_is_zero(rcv->e_priv, sizeof(rcv->e_priv)));
            assert_int_equal(
                noise_handshake_read(rcv, buf, n, pl, sizeof(pl), &plen),
                RM_E_INVAL);
            assert_int_equal(
                noise_handshake_write(rcv, NULL, 0, buf, sizeof(buf), &n),
                RM_E_INVAL);
            assert_int_equal(noise_handshake_split(rcv, &tx[0], &rx[0]),
                             RM_E_INVAL);
            break;
        }
        if (i == tamper_msg)
            continue; /* an unauthenticated first message: see detected_at */
        assert_int_equal(plen, strlen(payload));
        assert_memory_equal(pl, payload, plen);
    }
    if (rc == 0) {
        uint8_t h0[NOISE_HASHLEN], h1[NOISE_HASHLEN], r[32];

        assert_int_equal(noise_handshake_action(&hs[0]), NOISE_ACTION_SPLIT);
        assert_int_equal(noise_handshake_action(&hs[1]), NOISE_ACTION_SPLIT);
        assert_int_equal(noise_handshake_hash(&hs[0], h0), 0);
        assert_int_equal(noise_handshake_hash(&hs[1], h1), 0);
        assert_memory_equal(h0, h1, sizeof(h0));
        if (pat != NOISE_PATTERN_NN) {
            /* each side learnt the other's static key */
            assert_int_equal(noise_handshake_remote_static(&hs[0], r), 0);
            assert_memory_equal(r, k->rs_pub, 32);
            assert_int_equal(noise_handshake_remote_static(&hs[1], r), 0);
            assert_memory_equal(r, k->is_pub, 32);
        } else {
            assert_int_equal(noise_handshake_remote_static(&hs[0], r),
                             RM_E_NOTFOUND);
        }
        assert_int_equal(noise_handshake_split(&hs[0], &tx[0], &rx[0]), 0);
        assert_int_equal(noise_handshake_split(&hs[1], &tx[1], &rx[1]), 0);
        assert_int_equal(noise_handshake_action(&hs[0]), NOISE_ACTION_DONE);
        /* split once only; the hash survives it */
        assert_int_equal(noise_handshake_split(&hs[0], &tx[0], &rx[0]),
                         RM_E_INVAL);
        assert_int_equal(noise_handshake_hash(&hs[0], h1), 0);
        assert_memory_equal(h0, h1, sizeof(h0));
    }
    noise_handshake_cleanup(&hs[0]);
    noise_handshake_cleanup(&hs[1]);
    return rc;
}

static void
no_alter(uint8_t *msg, size_t *len, size_t arg)
{
    (void)msg, (void)len, (void)arg;
}

/* arg: byte index * 256 + xor mask */
static void
flip(uint8_t *msg, size_t *len, size_t arg)
{
    msg[arg / 256] ^= (uint8_t)(arg % 256);
}

static void
truncate_to(uint8_t *msg, size_t *len, size_t arg)
{
    *len = arg;
}

static void
extend(uint8_t *msg, size_t *len, size_t arg)
{
    msg[(*len)++] = (uint8_t)arg;
}

/* Transport both ways after a handshake. */
static void
check_transport(struct noise_cipher tx[2], struct noise_cipher rx[2])
{
    uint8_t ct[128], pt[128];
    size_t n, m;

    for (int dir = 0; dir < 2; dir++) {
        for (int i = 0; i < 3; i++) {
            const char *msg = dir ? "from responder" : "from initiator";
            assert_int_equal(
                noise_cipher_encrypt(&tx[dir], NULL, 0, (const uint8_t *)msg,
                                     strlen(msg), ct, sizeof(ct), &n),
                0);
            assert_int_equal(n, strlen(msg) + NOISE_TAGLEN);
            assert_int_equal(noise_cipher_decrypt(&rx[1 - dir], NULL, 0, ct, n,
                                                  pt, sizeof(pt), &m),
                             0);
            assert_int_equal(m, strlen(msg));
            assert_memory_equal(pt, msg, m);
        }
    }
    /* a side cannot read its own messages: the keys differ by direction */
    assert_int_equal(
        noise_cipher_encrypt(&tx[0], NULL, 0, pt, 4, ct, sizeof(ct), &n), 0);
    assert_int_equal(
        noise_cipher_decrypt(&rx[0], NULL, 0, ct, n, pt, sizeof(pt), &m),
        RM_E_PROTO);
}

static void
roundtrip(enum noise_pattern pat)
{
    struct keys k;
    struct noise_cipher tx[2], rx[2];
    unsigned where = 99;

    keys_new(&k);
    assert_int_equal(
        run_handshake(pat, &k, NULL, 99, no_alter, 0, &where, NULL, tx, rx), 0);
    check_transport(tx, rx);
    for (int i = 0; i < 2; i++) {
        noise_cipher_cleanup(&tx[i]);
        noise_cipher_cleanup(&rx[i]);
    }
}

static void
test_xx(void **state)
{
    roundtrip(NOISE_PATTERN_XX);
}

static void
test_ik(void **state)
{
    roundtrip(NOISE_PATTERN_IK);
}

static void
test_nn(void **state)
{
    roundtrip(NOISE_PATTERN_NN);
}

static void
test_xxpsk3(void **state)
{
    roundtrip(NOISE_PATTERN_XXPSK3);
}

/* Message 1 of NN and XX carries no tag (no key yet): tampering shows when
 * the initiator reads message 2. In XXpsk3 the e token already keys the
 * cipher (section 9.2) and IK starts with es, so every other message is
 * refused at once. */
static unsigned
detected_at(enum noise_pattern pat, unsigned msg)
{
    return msg == 0 && (pat == NOISE_PATTERN_NN || pat == NOISE_PATTERN_XX)
               ? 1
               : msg;
}

static void
tamper(enum noise_pattern pat)
{
    static const uint8_t masks[] = {0x01, 0x80, 0xff};
    struct keys k;
    struct transcript tr;
    struct noise_cipher tx[2], rx[2];
    unsigned where = 99;

    keys_new(&k);
    memset(&tr, 0, sizeof(tr));
    /* record the lengths (random ephemerals: contents differ per run) */
    assert_int_equal(
        run_handshake(pat, &k, NULL, 99, no_alter, 0, &where, &tr, tx, rx), 0);
    for (unsigned m = 0; m < tr.n; m++) {
        for (size_t i = 0; i < tr.len[m]; i++) {
            for (size_t j = 0; j < sizeof(masks); j++) {
                where = 99;
                assert_int_equal(run_handshake(pat, &k, NULL, m, flip,
                                               i * 256 + masks[j], &where, NULL,
                                               tx, rx),
                                 RM_E_PROTO);
                assert_int_equal(where, detected_at(pat, m));
            }
        }
        /* truncated to every shorter length */
        for (size_t len = 0; len < tr.len[m]; len++) {
            where = 99;
            assert_int_equal(run_handshake(pat, &k, NULL, m, truncate_to, len,
                                           &where, NULL, tx, rx),
                             RM_E_PROTO);
            /* short of the fixed part: refused on the spot */
            assert_true(where == m || where == detected_at(pat, m));
        }
        /* one byte too many */
        where = 99;
        assert_int_equal(
            run_handshake(pat, &k, NULL, m, extend, 0x41, &where, NULL, tx, rx),
            RM_E_PROTO);
        assert_int_equal(where, detected_at(pat, m));
    }
}

static void
test_tamper_xx(void **state)
{
    tamper(NOISE_PATTERN_XX);
}

static void
test_tamper_ik(void **state)
{
    tamper(NOISE_PATTERN_IK);
}

static void
test_tamper_xxpsk3(void **state)
{
    tamper(NOISE_PATTERN_XXPSK3);
}

/* IK: the initiator believes in the wrong responder key. */
static void
test_ik_wrong_responder_key(void **state)
{
    struct keys k;
    struct noise_cipher tx[2], rx[2];
    uint8_t other_pub[32], other_priv[32];
    unsigned where = 99;

    keys_new(&k);
    noise_keypair(other_pub, other_priv);
    assert_int_equal(run_handshake(NOISE_PATTERN_IK, &k, other_pub, 99,
                                   no_alter, 0, &where, NULL, tx, rx),
                     RM_E_PROTO);
    assert_int_equal(where, 0);
}

/* XXpsk3 with different PSKs: the responder refuses message 3. */
static void
test_psk_mismatch(void **state)
{
    struct keys k;
    struct noise_handshake hs[2];
    struct noise_handshake_opts o;
    uint8_t buf[MAXMSG], pl[MAXMSG], psk2[32];
    size_t n, plen;

    keys_new(&k);
    party_init(&hs[0], NOISE_PATTERN_XXPSK3, NOISE_INITIATOR, &k, NULL);
    memcpy(psk2, k.psk, 32);
    psk2[31] ^= 1;
    memset(&o, 0, sizeof(o));
    o.pattern = NOISE_PATTERN_XXPSK3;
    o.role = NOISE_RESPONDER;
    o.prologue = prologue;
    o.prologue_len = sizeof(prologue);
    o.s_priv = k.rs_priv;
    o.psk = psk2;
    assert_int_equal(noise_handshake_init(&hs[1], &o), 0);
    assert_int_equal(
        noise_handshake_write(&hs[0], NULL, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(
        noise_handshake_read(&hs[1], buf, n, pl, sizeof(pl), &plen), 0);
    assert_int_equal(
        noise_handshake_write(&hs[1], NULL, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(
        noise_handshake_read(&hs[0], buf, n, pl, sizeof(pl), &plen), 0);
    assert_int_equal(
        noise_handshake_write(&hs[0], NULL, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(
        noise_handshake_read(&hs[1], buf, n, pl, sizeof(pl), &plen),
        RM_E_PROTO);
    noise_handshake_cleanup(&hs[0]);
    noise_handshake_cleanup(&hs[1]);
}

/* A different prologue on one side fails the first authenticated read. */
static void
test_prologue_mismatch(void **state)
{
    struct keys k;
    struct noise_handshake hs[2];
    struct noise_handshake_opts o;
    uint8_t buf[MAXMSG], pl[MAXMSG];
    size_t n, plen;

    keys_new(&k);
    party_init(&hs[0], NOISE_PATTERN_IK, NOISE_INITIATOR, &k, NULL);
    memset(&o, 0, sizeof(o));
    o.pattern = NOISE_PATTERN_IK;
    o.role = NOISE_RESPONDER;
    o.prologue = (const uint8_t *)"other";
    o.prologue_len = 5;
    o.s_priv = k.rs_priv;
    assert_int_equal(noise_handshake_init(&hs[1], &o), 0);
    assert_int_equal(
        noise_handshake_write(&hs[0], NULL, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(
        noise_handshake_read(&hs[1], buf, n, pl, sizeof(pl), &plen),
        RM_E_PROTO);
    noise_handshake_cleanup(&hs[0]);
    noise_handshake_cleanup(&hs[1]);
}

/* Low-order points give an all-zero DH: refused. */
static void
test_low_order_key(void **state)
{
    /* 0 and 1 are low-order points on Curve25519 */
    static const uint8_t zero[32], one[32] = {1};
    const uint8_t *bad[] = {zero, one};
    struct keys k;
    struct noise_handshake hs;
    uint8_t buf[MAXMSG], pl[MAXMSG];
    size_t n, plen;

    keys_new(&k);
    for (int b = 0; b < 2; b++) {
        /* IK responder: es with the peer's e at once */
        memset(buf, 0, sizeof(buf));
        memcpy(buf, bad[b], 32);
        party_init(&hs, NOISE_PATTERN_IK, NOISE_RESPONDER, &k, NULL);
        assert_int_equal(
            noise_handshake_read(&hs, buf, 32 + 48 + 16, pl, sizeof(pl), &plen),
            RM_E_PROTO);
        assert_int_equal(noise_handshake_action(&hs), NOISE_ACTION_FAILED);
        /* IK initiator given a low-order responder key: write refuses */
        party_init(&hs, NOISE_PATTERN_IK, NOISE_INITIATOR, &k, bad[b]);
        assert_int_equal(
            noise_handshake_write(&hs, NULL, 0, buf, sizeof(buf), &n),
            RM_E_PROTO);
        assert_int_equal(noise_handshake_action(&hs), NOISE_ACTION_FAILED);
        /* XX responder: message 1 carries no DH; ee in its own write */
        party_init(&hs, NOISE_PATTERN_XX, NOISE_RESPONDER, &k, NULL);
        memcpy(buf, bad[b], 32);
        assert_int_equal(
            noise_handshake_read(&hs, buf, 32, pl, sizeof(pl), &plen), 0);
        assert_int_equal(
            noise_handshake_write(&hs, NULL, 0, buf, sizeof(buf), &n),
            RM_E_PROTO);
        assert_int_equal(noise_handshake_action(&hs), NOISE_ACTION_FAILED);
        noise_handshake_cleanup(&hs);
    }
}

static void
test_wrong_state_and_misuse(void **state)
{
    struct keys k;
    struct noise_handshake hs;
    struct noise_handshake_opts o;
    struct noise_cipher c1, c2;
    uint8_t buf[MAXMSG], pl[MAXMSG];
    size_t n, plen;

    keys_new(&k);
    /* a responder cannot write first, an initiator cannot read first */
    party_init(&hs, NOISE_PATTERN_XX, NOISE_RESPONDER, &k, NULL);
    assert_int_equal(noise_handshake_write(&hs, NULL, 0, buf, sizeof(buf), &n),
                     RM_E_INVAL);
    assert_int_equal(noise_handshake_action(&hs), NOISE_ACTION_FAILED);
    party_init(&hs, NOISE_PATTERN_XX, NOISE_INITIATOR, &k, NULL);
    assert_int_equal(noise_handshake_read(&hs, buf, 32, pl, sizeof(pl), &plen),
                     RM_E_INVAL);
    assert_int_equal(noise_handshake_action(&hs), NOISE_ACTION_FAILED);
    /* split before the end */
    party_init(&hs, NOISE_PATTERN_XX, NOISE_INITIATOR, &k, NULL);
    assert_int_equal(noise_handshake_split(&hs, &c1, &c2), RM_E_INVAL);
    assert_int_equal(noise_handshake_hash(&hs, buf), RM_E_INVAL);
    assert_int_equal(noise_handshake_remote_static(&hs, buf), RM_E_NOTFOUND);
    /* write into a buffer too small: refused, and the handshake is over */
    assert_int_equal(noise_handshake_write(&hs, NULL, 0, buf, 31, &n),
                     RM_E_TOOBIG);
    assert_int_equal(noise_handshake_action(&hs), NOISE_ACTION_FAILED);
    /* a payload past the Noise maximum */
    party_init(&hs, NOISE_PATTERN_XX, NOISE_INITIATOR, &k, NULL);
    {
        static uint8_t big[NOISE_MSG_MAX + 64];
        assert_int_equal(noise_handshake_write(&hs, big, NOISE_MSG_MAX - 31,
                                               big, sizeof(big), &n),
                         RM_E_TOOBIG);
    }
    /* exactly the maximum is fine */
    party_init(&hs, NOISE_PATTERN_XX, NOISE_INITIATOR, &k, NULL);
    {
        static uint8_t big[NOISE_MSG_MAX], out[NOISE_MSG_MAX];
        struct noise_handshake r;
        assert_int_equal(noise_handshake_write(&hs, big, NOISE_MSG_MAX - 32,
                                               out, sizeof(out), &n),
                         0);
        assert_int_equal(n, NOISE_MSG_MAX);
        party_init(&r, NOISE_PATTERN_XX, NOISE_RESPONDER, &k, NULL);
        /* the payload buffer is too small by one */
        assert_int_equal(
            noise_handshake_read(&r, out, n, big, NOISE_MSG_MAX - 33, &plen),
            RM_E_TOOBIG);
        party_init(&r, NOISE_PATTERN_XX, NOISE_RESPONDER, &k, NULL);
        assert_int_equal(
            noise_handshake_read(&r, out, n, big, sizeof(big), &plen), 0);
        assert_int_equal(plen, NOISE_MSG_MAX - 32);
        noise_handshake_cleanup(&r);
    }
    /* a message longer than the Noise maximum is refused unread */
    party_init(&hs, NOISE_PATTERN_XX, NOISE_RESPONDER, &k, NULL);
    {
        static uint8_t big[NOISE_MSG_MAX + 1], out[NOISE_MSG_MAX + 1];
        assert_int_equal(noise_handshake_read(&hs, big, sizeof(big), out,
                                              sizeof(out), &plen),
                         RM_E_PROTO);
    }
    /* init: keys the pattern needs, and none it does not use */
    memset(&o, 0, sizeof(o));
    o.pattern = NOISE_PATTERN_XX;
    o.role = NOISE_INITIATOR;
    assert_int_equal(noise_handshake_init(&hs, &o), RM_E_INVAL); /* no s */
    assert_int_equal(noise_handshake_action(&hs), NOISE_ACTION_FAILED);
    o.pattern = NOISE_PATTERN_IK;
    o.s_priv = k.is_priv;
    assert_int_equal(noise_handshake_init(&hs, &o), RM_E_INVAL); /* no rs */
    o.rs = k.rs_pub;
    assert_int_equal(noise_handshake_init(&hs, &o), 0);
    o.role = NOISE_RESPONDER;
    assert_int_equal(noise_handshake_init(&hs, &o), RM_E_INVAL); /* rs */
    o.rs = NULL;
    o.psk = k.psk;
    assert_int_equal(noise_handshake_init(&hs, &o), RM_E_INVAL); /* psk */
    o.pattern = NOISE_PATTERN_XXPSK3;
    assert_int_equal(noise_handshake_init(&hs, &o), 0);
    o.pattern = NOISE_PATTERN_COUNT;
    assert_int_equal(noise_handshake_init(&hs, &o), RM_E_INVAL);
    o.pattern = NOISE_PATTERN_NN;
    o.psk = NULL;
    o.role = (enum noise_role)7;
    o.s_priv = NULL;
    assert_int_equal(noise_handshake_init(&hs, &o), RM_E_INVAL);
    o.role = NOISE_INITIATOR;
    o.prologue_len = 3; /* with a NULL prologue */
    assert_int_equal(noise_handshake_init(&hs, &o), RM_E_INVAL);
    assert_int_equal(noise_handshake_init(NULL, &o), RM_E_INVAL);
    assert_int_equal(noise_handshake_init(&hs, NULL), RM_E_INVAL);
    noise_handshake_cleanup(&hs);

    {
        enum noise_pattern p;
        assert_int_equal(noise_pattern_parse("IK", &p), 0);
        assert_int_equal(p, NOISE_PATTERN_IK);
        assert_int_equal(noise_pattern_parse("XXpsk3", &p), 0);
        assert_int_equal(p, NOISE_PATTERN_XXPSK3);
        assert_int_equal(noise_pattern_parse("KK", &p), RM_E_NOTFOUND);
        assert_string_equal(noise_protocol_name(NOISE_PATTERN_XX),
                            "Noise_XX_25519_ChaChaPoly_BLAKE2b");
    }
}

static void
test_nonce_exhaustion(void **state)
{
    struct noise_cipher c, d;
    uint8_t key[32], ct[64], pt[64];
    size_t n, m;

    randombytes_buf(key, sizeof(key));
    noise_cipher_init(&c, key);
    noise_cipher_init(&d, key);
    assert_true(noise_cipher_has_key(&c));
    /* 2^64-2 is the last usable nonce */
    noise_cipher_set_nonce(&c, UINT64_MAX - 1);
    noise_cipher_set_nonce(&d, UINT64_MAX - 1);
    assert_int_equal(
        noise_cipher_encrypt(&c, NULL, 0, pt, 8, ct, sizeof(ct), &n), 0);
    assert_int_equal(
        noise_cipher_decrypt(&d, NULL, 0, ct, n, pt, sizeof(pt), &m), 0);
    /* 2^64-1 is reserved: refused both ways, nonce unchanged */
    assert_int_equal(
        noise_cipher_encrypt(&c, NULL, 0, pt, 8, ct, sizeof(ct), &n),
        RM_E_TOOBIG);
    assert_int_equal(
        noise_cipher_encrypt(&c, NULL, 0, pt, 8, ct, sizeof(ct), &n),
        RM_E_TOOBIG);
    assert_int_equal(
        noise_cipher_decrypt(&d, NULL, 0, ct, 24, pt, sizeof(pt), &m),
        RM_E_TOOBIG);
    assert_true(c.n == UINT64_MAX);
    noise_cipher_cleanup(&c);
    noise_cipher_cleanup(&d);
}

static void
test_rekey(void **state)
{
    struct noise_cipher c, d;
    uint8_t key[32], ct[64], pt[64], expect[48], npub[12];
    size_t n, m;

    randombytes_buf(key, sizeof(key));
    noise_cipher_init(&c, key);
    noise_cipher_init(&d, key);
    noise_cipher_set_nonce(&c, 5);
    noise_cipher_set_nonce(&d, 5);
    /* REKEY(k) = first 32 bytes of ENCRYPT(k, 2^64-1, "", zeros[32]) */
    memset(pt, 0, 32);
    memset(npub, 0, 4);
    memset(npub + 4, 0xff, 8);
    crypto_aead_chacha20poly1305_ietf_encrypt(expect, NULL, pt, 32, NULL, 0,
                                              NULL, npub, key);
    assert_int_equal(noise_cipher_rekey(&c), 0);
    assert_memory_equal(c.k, expect, 32);
    assert_true(c.n == 5); /* the nonce is not reset */
    /* one side rekeyed: the other cannot read */
    assert_int_equal(
        noise_cipher_encrypt(&c, NULL, 0, pt, 8, ct, sizeof(ct), &n), 0);
    assert_int_equal(
        noise_cipher_decrypt(&d, NULL, 0, ct, n, pt, sizeof(pt), &m),
        RM_E_PROTO);
    assert_true(d.n == 5); /* failed decrypt leaves the nonce alone */
    /* both rekeyed: in step again */
    assert_int_equal(noise_cipher_rekey(&d), 0);
    assert_int_equal(
        noise_cipher_decrypt(&d, NULL, 0, ct, n, pt, sizeof(pt), &m), 0);
    assert_int_equal(m, 8);
    /* no key: nothing to rekey */
    noise_cipher_init(&c, NULL);
    assert_int_equal(noise_cipher_rekey(&c), RM_E_INVAL);
    noise_cipher_cleanup(&c);
    noise_cipher_cleanup(&d);
}

/* Nonce layout (section 12.3): 4 zero bytes, then the counter LE. */
static void
test_nonce_layout(void **state)
{
    struct noise_cipher c;
    uint8_t key[32], ct[64], expect[64], npub[12], ad[3] = {1, 2, 3};
    const uint64_t n = 0x0102030405060708ULL;
    size_t len;

    randombytes_buf(key, sizeof(key));
    noise_cipher_init(&c, key);
    noise_cipher_set_nonce(&c, n);
    assert_int_equal(noise_cipher_encrypt(&c, ad, sizeof(ad),
                                          (const uint8_t *)"hello", 5, ct,
                                          sizeof(ct), &len),
                     0);
    memset(npub, 0, 4);
    for (int i = 0; i < 8; i++)
        npub[4 + i] = (uint8_t)(n >> (8 * i));
    crypto_aead_chacha20poly1305_ietf_encrypt(expect, NULL,
                                              (const uint8_t *)"hello", 5, ad,
                                              sizeof(ad), NULL, npub, key);
    assert_int_equal(len, 5 + 16);
    assert_memory_equal(ct, expect, len);
    /* in place round trip, short input, small output buffer */
    noise_cipher_set_nonce(&c, n);
    assert_int_equal(
        noise_cipher_decrypt(&c, ad, sizeof(ad), ct, len, ct, sizeof(ct), &len),
        0);
    assert_memory_equal(ct, "hello", 5);
    assert_int_equal(
        noise_cipher_decrypt(&c, NULL, 0, ct, 15, ct, sizeof(ct), &len),
        RM_E_PROTO);
    assert_int_equal(noise_cipher_encrypt(&c, NULL, 0, ct, 5, ct, 20, &len),
                     RM_E_TOOBIG);
    noise_cipher_cleanup(&c);
}

/* HMAC-BLAKE2b against the RFC 2104 definition computed by hand, with a
 * key longer than the block (hashed first). */
static void
test_hmac(void **state)
{
    uint8_t key[200], data[50], got[64], want[64], k[128], pad[128], inner[64];
    crypto_generichash_blake2b_state st;

    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)i;
    memset(data, 0xab, sizeof(data));
    for (int long_key = 0; long_key < 2; long_key++) {
        size_t klen = long_key ? sizeof(key) : 64;

        memset(k, 0, sizeof(k));
        if (long_key)
            crypto_generichash_blake2b(k, 64, key, klen, NULL, 0);
        else
            memcpy(k, key, klen);
        for (int i = 0; i < 128; i++)
            pad[i] = k[i] ^ 0x36;
        crypto_generichash_blake2b_init(&st, NULL, 0, 64);
        crypto_generichash_blake2b_update(&st, pad, 128);
        crypto_generichash_blake2b_update(&st, data, sizeof(data));
        crypto_generichash_blake2b_final(&st, inner, 64);
        for (int i = 0; i < 128; i++)
            pad[i] = k[i] ^ 0x5c;
        crypto_generichash_blake2b_init(&st, NULL, 0, 64);
        crypto_generichash_blake2b_update(&st, pad, 128);
        crypto_generichash_blake2b_update(&st, inner, 64);
        crypto_generichash_blake2b_final(&st, want, 64);
        noise_hmac(key, klen, data, sizeof(data), got);
        assert_memory_equal(got, want, 64);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xx),
        cmocka_unit_test(test_ik),
        cmocka_unit_test(test_nn),
        cmocka_unit_test(test_xxpsk3),
        cmocka_unit_test(test_tamper_xx),
        cmocka_unit_test(test_tamper_ik),
        cmocka_unit_test(test_tamper_xxpsk3),
        cmocka_unit_test(test_ik_wrong_responder_key),
        cmocka_unit_test(test_psk_mismatch),
        cmocka_unit_test(test_prologue_mismatch),
        cmocka_unit_test(test_low_order_key),
        cmocka_unit_test(test_wrong_state_and_misuse),
        cmocka_unit_test(test_nonce_exhaustion),
        cmocka_unit_test(test_rekey),
        cmocka_unit_test(test_nonce_layout),
        cmocka_unit_test(test_hmac),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
