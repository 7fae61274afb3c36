/*
 * noise-vectors: runs mesh/noise.c against test vectors in the Noise wiki
 * / cacophony JSON format ({"vectors": [...]}; each vector names its
 * protocol in "protocol_name" or "name" and gives init_/resp_ prologue,
 * static, ephemeral, remote_static and psks keys, then "messages" with
 * payload and ciphertext in hex, and optionally "handshake_hash").
 *
 *   noise-vectors FILE...
 *
 * Every vector whose protocol we implement is run in both directions: each
 * handshake message written by its sender must equal the ciphertext and
 * read back by the receiver to the payload; after Split the handshake hash
 * must agree (and equal handshake_hash when given), and the transport
 * messages are checked the same way. Other vectors are counted as skipped.
 * Prints "N passed, M skipped, K failed"; exits 1 if any failed or none
 * passed, 2 on a usage or file error.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/rm_error.h"
#include "mesh/noise.h"

#define MSG_BUF (NOISE_MSG_MAX + 1)

enum result { PASS, SKIP, FAIL };

struct party {
    struct noise_handshake hs;
    struct noise_cipher tx, rx;
};

/* One vector's working buffers: too big for the stack, reused. */
static uint8_t want_ct[MSG_BUF], want_pt[MSG_BUF], got[MSG_BUF];

static char why[512];

static enum result
fail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return FAIL;
}

static int
unhex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode the hex string obj[key] into out (max bytes). Returns 1 if
 * present and decoded, 0 if absent, -1 if malformed or too long. */
static int
get_hex(json_t *obj, const char *key, uint8_t *out, size_t max, size_t *len)
{
    json_t *v = json_object_get(obj, key);
    const char *s;
    size_t n;

    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return -1;
    s = json_string_value(v);
    n = json_string_length(v);
    if (n % 2 != 0 || n / 2 > max)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = unhex((unsigned char)s[2 * i]);
        int lo = unhex((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n / 2;
    return 1;
}

/* A 32-byte key; 1 present, 0 absent, -1 malformed. */
static int
get_key(json_t *obj, const char *key, uint8_t out[32])
{
    size_t len = 0;
    int rc = get_hex(obj, key, out, 32, &len);

    if (rc == 1 && len != 32)
        return -1;
    return rc;
}

/* "Noise_XX_25519_ChaChaPoly_BLAKE2b": SKIP unless it is ours. */
static enum result
parse_name(const char *name, enum noise_pattern *pat)
{
    char buf[128], *parts[6];
    int n = 0;
    char *p;

    if (strlen(name) >= sizeof(buf))
        return SKIP;
    strcpy(buf, name);
    for (p = buf; n < 6;) {
        parts[n++] = p;
        p = strchr(p, '_');
        if (p == NULL)
            break;
        *p++ = '\0';
    }
    if (n != 5 || strcmp(parts[0], "Noise") != 0 ||
        strcmp(parts[2], "25519") != 0 || strcmp(parts[3], "ChaChaPoly") != 0 ||
        strcmp(parts[4], "BLAKE2b") != 0)
        return SKIP;
    if (noise_pattern_parse(parts[1], pat) != 0)
        return SKIP;
    return PASS;
}

static enum result
setup(struct party *pt, json_t *v, enum noise_pattern pat, enum noise_role role)
{
    const char *pre = role == NOISE_INITIATOR ? "init" : "resp";
    char key[64];
    uint8_t prologue[1024], s[32], e[32], rs[32], psk[32];
    size_t prologue_len = 0, n;
    struct noise_handshake_opts o;
    json_t *psks;
    int has_s, has_e, has_rs, rc;

    memset(&o, 0, sizeof(o));
    o.pattern = pat;
    o.role = role;
    snprintf(key, sizeof(key), "%s_prologue", pre);
    if (get_hex(v, key, prologue, sizeof(prologue), &prologue_len) < 0)
        return fail("bad %s", key);
    o.prologue = prologue;
    o.prologue_len = prologue_len;
    snprintf(key, sizeof(key), "%s_static", pre);
    has_s = get_key(v, key, s);
    snprintf(key, sizeof(key), "%s_ephemeral", pre);
    has_e = get_key(v, key, e);
    snprintf(key, sizeof(key), "%s_remote_static", pre);
    has_rs = get_key(v, key, rs);
    if (has_s < 0 || has_e < 0 || has_rs < 0)
        return fail("bad %s key", pre);
    if (has_e != 1)
        return fail("no %s_ephemeral", pre);
    o.e_priv = e;
    /* pass only the keys the pattern uses: init() refuses the others */
    if (pat != NOISE_PATTERN_NN) {
        if (has_s != 1)
            return fail("no %s_static", pre);
        o.s_priv = s;
    }
    if (pat == NOISE_PATTERN_IK && role == NOISE_INITIATOR) {
        if (has_rs != 1)
            return fail("no %s_remote_static", pre);
        o.rs = rs;
    }
    snprintf(key, sizeof(key), "%s_psks", pre);
    psks = json_object_get(v, key);
    if (pat == NOISE_PATTERN_XXPSK3) {
        json_t *p0 = json_is_array(psks) && json_array_size(psks) == 1
                         ? json_array_get(psks, 0)
                         : NULL;
        const char *hex = json_is_string(p0) ? json_string_value(p0) : NULL;
        if (hex == NULL || strlen(hex) != 64)
            return fail("%s: need one 32-byte psk", key);
        for (n = 0; n < 32; n++) {
            int hi = unhex((unsigned char)hex[2 * n]);
            int lo = unhex((unsigned char)hex[2 * n + 1]);
            if (hi < 0 || lo < 0)
                return fail("bad %s", key);
            psk[n] = (uint8_t)(hi << 4 | lo);
        }
        o.psk = psk;
    }
    rc = noise_handshake_init(&pt->hs, &o);
    if (rc != 0)
        return fail("%s init: %s", pre, rm_strerror(rc));
    return PASS;
}

static enum result
run_vector(json_t *v, const char *name)
{
    struct party parties[2];
    enum noise_pattern pat;
    enum result r;
    json_t *msgs, *fail_flag;
    uint8_t h0[NOISE_HASHLEN], h1[NOISE_HASHLEN], want_h[NOISE_HASHLEN];
    size_t nmsg, ctlen, ptlen, n, hlen;
    int split = 0, rc;

    if (parse_name(name, &pat) != PASS)
        return SKIP;
    /* vectors that expect failure, fallback or hybrid ones: not ours */
    fail_flag = json_object_get(v, "fail");
    if ((fail_flag != NULL && !json_is_false(fail_flag)) ||
        json_object_get(v, "fallback") != NULL ||
        json_object_get(v, "fallback_pattern") != NULL ||
        json_object_get(v, "hybrid") != NULL)
        return SKIP;
    msgs = json_object_get(v, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return fail("no messages");
    nmsg = json_array_size(msgs);

    r = setup(&parties[0], v, pat, NOISE_INITIATOR);
    if (r == PASS)
        r = setup(&parties[1], v, pat, NOISE_RESPONDER);
    if (r != PASS)
        goto out;

    for (size_t i = 0; i < nmsg; i++) {
        /* messages alternate, the initiator first (two-way patterns) */
        struct party *snd = &parties[i % 2], *rcv = &parties[(i + 1) % 2];
        json_t *m = json_array_get(msgs, i);

        if (get_hex(m, "payload", want_pt, sizeof(want_pt), &ptlen) != 1 ||
            get_hex(m, "ciphertext", want_ct, sizeof(want_ct), &ctlen) != 1) {
            r = fail("message %zu: bad payload/ciphertext", i);
            goto out;
        }
        if (!split) {
            rc = noise_handshake_write(&snd->hs, want_pt, ptlen, got,
                                       sizeof(got), &n);
            if (rc != 0) {
                r = fail("message %zu: write: %s", i, rm_strerror(rc));
                goto out;
            }
            if (n != ctlen || memcmp(got, want_ct, n) != 0) {
                r = fail("message %zu: handshake ciphertext differs", i);
                goto out;
            }
            rc = noise_handshake_read(&rcv->hs, want_ct, ctlen, got,
                                      sizeof(got), &n);
            if (rc != 0) {
                r = fail("message %zu: read: %s", i, rm_strerror(rc));
                goto out;
            }
            if (n != ptlen || memcmp(got, want_pt, n) != 0) {
                r = fail("message %zu: handshake payload differs", i);
                goto out;
            }
            if (noise_handshake_action(&snd->hs) == NOISE_ACTION_SPLIT &&
                noise_handshake_action(&rcv->hs) == NOISE_ACTION_SPLIT) {
                if (noise_handshake_hash(&parties[0].hs, h0) != 0 ||
                    noise_handshake_hash(&parties[1].hs, h1) != 0 ||
                    memcmp(h0, h1, sizeof(h0)) != 0) {
                    r = fail("handshake hashes differ");
                    goto out;
                }
                rc =
                    get_hex(v, "handshake_hash", want_h, sizeof(want_h), &hlen);
                if (rc < 0 ||
                    (rc == 1 && (hlen != NOISE_HASHLEN ||
                                 memcmp(h0, want_h, NOISE_HASHLEN) != 0))) {
                    r = fail("handshake_hash differs");
                    goto out;
                }
                for (int k = 0; k < 2; k++) {
                    if (noise_handshake_split(&parties[k].hs, &parties[k].tx,
                                              &parties[k].rx) != 0) {
                        r = fail("split failed");
                        goto out;
                    }
                }
                split = 1;
            }
            continue;
        }
        rc = noise_cipher_encrypt(&snd->tx, NULL, 0, want_pt, ptlen, got,
                                  sizeof(got), &n);
        if (rc != 0 || n != ctlen || memcmp(got, want_ct, n) != 0) {
            r = fail("message %zu: transport ciphertext differs", i);
            goto out;
        }
        rc = noise_cipher_decrypt(&rcv->rx, NULL, 0, want_ct, ctlen, got,
                                  sizeof(got), &n);
        if (rc != 0 || n != ptlen || memcmp(got, want_pt, n) != 0) {
            r = fail("message %zu: transport payload differs", i);
            goto out;
        }
    }
    if (!split)
        r = fail("handshake did not finish in %zu messages", nmsg);
out:
    for (int k = 0; k < 2; k++) {
        noise_handshake_cleanup(&parties[k].hs);
        noise_cipher_cleanup(&parties[k].tx);
        noise_cipher_cleanup(&parties[k].rx);
    }
    return r;
}

int
main(int argc, char **argv)
{
    unsigned passed = 0, skipped = 0, failed = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: noise-vectors FILE.json...\n");
        return 2;
    }
    for (int a = 1; a < argc; a++) {
        json_error_t err;
        json_t *root = json_load_file(argv[a], JSON_REJECT_DUPLICATES, &err);
        json_t *vectors;

        if (root == NULL) {
            fprintf(stderr, "%s:%d: %s\n", argv[a], err.line, err.text);
            return 2;
        }
        vectors =
            json_is_object(root) ? json_object_get(root, "vectors") : NULL;
        if (!json_is_array(vectors)) {
            fprintf(stderr, "%s: no \"vectors\" array\n", argv[a]);
            json_decref(root);
            return 2;
        }
        for (size_t i = 0; i < json_array_size(vectors); i++) {
            json_t *v = json_array_get(vectors, i);
            json_t *jn = json_object_get(v, "protocol_name");
            const char *name;

            if (jn == NULL)
                jn = json_object_get(v, "name");
            name = json_is_string(jn) ? json_string_value(jn) : "?";
            why[0] = '\0';
            switch (json_is_object(v) ? run_vector(v, name)
                                      : fail("not an object")) {
            case PASS:
                passed++;
                printf("PASS %s\n", name);
                break;
            case SKIP:
                skipped++;
                printf("skip %s\n", name);
                break;
            case FAIL:
                failed++;
                printf("FAIL %s [%s#%zu]: %s\n", name, argv[a], i, why);
                break;
            }
        }
        json_decref(root);
    }
    printf("%u passed, %u skipped, %u failed\n", passed, skipped, failed);
    return failed > 0 || passed == 0 ? 1 : 0;
}
