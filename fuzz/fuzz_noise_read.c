/*
 * Fuzz the Noise handshake message reader (mesh/noise.c). The first input
 * byte picks the pattern (NN, XX, IK, XXpsk3) and which handshake message
 * the rest of the input replaces: the harness runs the genuine handshake
 * (fixed keys, so runs repeat) up to that message, feeds the input to the
 * party that reads it, and, if it is accepted, finishes the handshake and
 * exchanges transport messages. Invariants are checked with abort():
 *   - a read returns 0 or RM_E_PROTO, nothing else;
 *   - after an error the handshake is FAILED, wiped and refuses more;
 *   - an accepted payload is exactly the message minus its overhead;
 *   - a handshake that completes agrees on the hash and the transport
 *     keys (a forged message that completes would be a break).
 * The seed corpus (corpus/fuzz_noise_read/) holds each genuine message.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/rm_error.h"
#include "mesh/noise.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

static const uint8_t key_is[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint8_t key_rs[32] = {11, 12, 13, 14, 15, 16, 17, 18, 19};
static const uint8_t key_ie[32] = {21, 22, 23, 24, 25, 26, 27, 28, 29};
static const uint8_t key_re[32] = {31, 32, 33, 34, 35, 36, 37, 38, 39};
static const uint8_t key_psk[32] = {41, 42, 43, 44, 45, 46, 47, 48, 49};
static const uint8_t prologue[] = "fuzz_noise_read";

static const enum noise_pattern fuzz_patterns[] = {
    NOISE_PATTERN_NN, NOISE_PATTERN_XX, NOISE_PATTERN_IK, NOISE_PATTERN_XXPSK3};
#define NPATTERNS (sizeof(fuzz_patterns) / sizeof(fuzz_patterns[0]))

static uint8_t msgbuf[NOISE_MSG_MAX], plbuf[NOISE_MSG_MAX];

static unsigned
nmsgs(enum noise_pattern p)
{
    return p == NOISE_PATTERN_XX || p == NOISE_PATTERN_XXPSK3 ? 3 : 2;
}

static void
party_init(struct noise_handshake *hs, enum noise_pattern p,
           enum noise_role role)
{
    struct noise_handshake_opts o;
    uint8_t rs_pub[32];

    memset(&o, 0, sizeof(o));
    o.pattern = p;
    o.role = role;
    o.prologue = prologue;
    o.prologue_len = sizeof(prologue);
    o.e_priv = role == NOISE_INITIATOR ? key_ie : key_re;
    if (p != NOISE_PATTERN_NN)
        o.s_priv = role == NOISE_INITIATOR ? key_is : key_rs;
    if (p == NOISE_PATTERN_IK && role == NOISE_INITIATOR) {
        noise_public_key(rs_pub, key_rs);
        o.rs = rs_pub;
    }
    if (p == NOISE_PATTERN_XXPSK3)
        o.psk = key_psk;
    CHECK(noise_handshake_init(hs, &o) == 0);
}

/* One genuine step: hs[i % 2] writes message i, the other reads it. On
 * error *who is the party that failed. */
static int
step(struct noise_handshake hs[2], unsigned i, unsigned *who)
{
    static const uint8_t payload[] = "hello";
    size_t n, plen;
    int rc;

    *who = i % 2;
    rc = noise_handshake_write(&hs[i % 2], payload, sizeof(payload), msgbuf,
                               sizeof(msgbuf), &n);
    if (rc != 0)
        return rc;
    *who = (i + 1) % 2;
    return noise_handshake_read(&hs[(i + 1) % 2], msgbuf, n, plbuf,
                                sizeof(plbuf), &plen);
}

static void
check_dead(struct noise_handshake *hs)
{
    static const uint8_t zero[sizeof(hs->ss.ck)];
    size_t plen;
    struct noise_cipher a, b;

    CHECK(noise_handshake_action(hs) == NOISE_ACTION_FAILED);
    CHECK(memcmp(hs->ss.ck, zero, sizeof(zero)) == 0);
    CHECK(memcmp(hs->s_priv, zero, sizeof(hs->s_priv)) == 0);
    CHECK(noise_handshake_read(hs, msgbuf, 0, plbuf, sizeof(plbuf), &plen) ==
          RM_E_INVAL);
    CHECK(noise_handshake_split(hs, &a, &b) == RM_E_INVAL);
}

static void
run(enum noise_pattern p, unsigned target, const uint8_t *data, size_t size)
{
    struct noise_handshake hs[2];
    struct noise_cipher tx[2], rx[2];
    uint8_t h0[NOISE_HASHLEN], h1[NOISE_HASHLEN], ct[64], pt[64];
    unsigned n = nmsgs(p), who;
    size_t plen, clen;
    int rc;

    party_init(&hs[0], p, NOISE_INITIATOR);
    party_init(&hs[1], p, NOISE_RESPONDER);
    for (unsigned i = 0; i < target; i++)
        CHECK(step(hs, i, &who) == 0);

    /* the fuzzed message replaces message `target` on the wire */
    rc = noise_handshake_read(&hs[(target + 1) % 2], data, size, plbuf,
                              sizeof(plbuf), &plen);
    CHECK(rc == 0 || rc == RM_E_PROTO);
    if (rc != 0) {
        check_dead(&hs[(target + 1) % 2]);
        goto out;
    }
    CHECK(plen <= size && size <= NOISE_MSG_MAX);
    /* the writer never wrote it: give it a genuine turn so its state moves
     * on; the two now disagree unless the input was the genuine message */
    {
        size_t wn;
        CHECK(noise_handshake_write(&hs[target % 2], (const uint8_t *)"hello",
                                    6, msgbuf, sizeof(msgbuf), &wn) == 0);
    }
    for (unsigned i = target + 1; i < n; i++) {
        /* a write fails too if the accepted message held a low-order key */
        rc = step(hs, i, &who);
        CHECK(rc == 0 || rc == RM_E_PROTO);
        if (rc != 0) {
            check_dead(&hs[who]);
            goto out;
        }
    }
    /* completed: the two must agree */
    CHECK(noise_handshake_hash(&hs[0], h0) == 0);
    CHECK(noise_handshake_hash(&hs[1], h1) == 0);
    CHECK(memcmp(h0, h1, sizeof(h0)) == 0);
    CHECK(noise_handshake_split(&hs[0], &tx[0], &rx[0]) == 0);
    CHECK(noise_handshake_split(&hs[1], &tx[1], &rx[1]) == 0);
    CHECK(noise_cipher_encrypt(&tx[0], NULL, 0, (const uint8_t *)"ping", 4, ct,
                               sizeof(ct), &clen) == 0);
    CHECK(noise_cipher_decrypt(&rx[1], NULL, 0, ct, clen, pt, sizeof(pt),
                               &plen) == 0);
    CHECK(plen == 4 && memcmp(pt, "ping", 4) == 0);
    for (int i = 0; i < 2; i++) {
        noise_cipher_cleanup(&tx[i]);
        noise_cipher_cleanup(&rx[i]);
    }
out:
    noise_handshake_cleanup(&hs[0]);
    noise_handshake_cleanup(&hs[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum noise_pattern p;
    uint8_t *copy;

    if (size == 0)
        return 0;
    p = fuzz_patterns[data[0] % NPATTERNS];
    /* exact-size copy so that ASan sees any read past the end */
    copy = malloc(size - 1 ? size - 1 : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data + 1, size - 1);
    run(p, (data[0] / NPATTERNS) % nmsgs(p), copy, size - 1);
    free(copy);
    return 0;
}

#ifdef FUZZ_NOISE_SEEDS
/*
 * Seed corpus writer: every genuine handshake message, prefixed with the
 * selector byte that aims at it.
 *   cc -DFUZZ_NOISE_SEEDS -I. fuzz/fuzz_noise_read.c mesh/noise.c \
 *      common/rm_error.c -lsodium -o /tmp/seeds && /tmp/seeds DIR
 */
#include <stdio.h>

int main(int argc, char **argv);

int
main(int argc, char **argv)
{
    static const char *names[] = {"nn", "xx", "ik", "xxpsk3"};
    static uint8_t out[1 + NOISE_MSG_MAX];

    if (argc != 2)
        return 2;
    for (unsigned pi = 0; pi < NPATTERNS; pi++) {
        enum noise_pattern p = fuzz_patterns[pi];
        for (unsigned target = 0; target < nmsgs(p); target++) {
            struct noise_handshake hs[2];
            char path[512];
            unsigned who;
            size_t n;
            FILE *f;

            party_init(&hs[0], p, NOISE_INITIATOR);
            party_init(&hs[1], p, NOISE_RESPONDER);
            for (unsigned i = 0; i < target; i++)
                CHECK(step(hs, i, &who) == 0);
            CHECK(noise_handshake_write(&hs[target % 2],
                                        (const uint8_t *)"hello", 6, out + 1,
                                        sizeof(out) - 1, &n) == 0);
            out[0] = (uint8_t)(pi + NPATTERNS * target);
            snprintf(path, sizeof(path), "%s/%s_msg%u", argv[1], names[pi],
                     target + 1);
            f = fopen(path, "wb");
            CHECK(f != NULL && fwrite(out, 1, n + 1, f) == n + 1);
            fclose(f);
            noise_handshake_cleanup(&hs[0]);
            noise_handshake_cleanup(&hs[1]);
        }
    }
    return 0;
}
#endif
