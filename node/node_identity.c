/*
 * node_identity.c: the node's key pair (see node_identity.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "node/node_identity.h"

#define ID_HEADER "relaymesh node key v1\n"
#define ID_FILE_MAX 256

void
node_identity_fingerprint(const uint8_t pk[NODE_ID_PK_LEN],
                          char out[NODE_ID_FP_LEN])
{
    static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    uint8_t h[32];
    size_t o = 0;
    unsigned bits = 0, acc = 0, n = 0;

    crypto_generichash(h, sizeof(h), pk, NODE_ID_PK_LEN, NULL, 0);
    /* 20 bytes = 160 bits = 32 base32 characters, in groups of 4. */
    for (size_t i = 0; i < 20; i++) {
        acc = (acc << 8) | h[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            if (n > 0 && n % 4 == 0)
                out[o++] = '-';
            out[o++] = b32[(acc >> bits) & 31];
            n++;
        }
    }
    out[o] = '\0';
}

static int
id_from_seed(struct node_identity *id, const uint8_t seed[32])
{
    id->sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    if (id->sk == NULL)
        return -ENOMEM;
    crypto_sign_seed_keypair(id->pk, id->sk, seed);
    if (crypto_sign_ed25519_pk_to_curve25519(id->x25519_pk, id->pk) != 0)
        return RM_E_CONFIG;
    sodium_bin2base64(id->pk_b64, sizeof(id->pk_b64), id->pk, sizeof(id->pk),
                      sodium_base64_VARIANT_ORIGINAL);
    node_identity_fingerprint(id->pk, id->fingerprint);
    return 0;
}

static int
id_create(struct node_identity *id, char *err, size_t errsz)
{
    uint8_t seed[32];
    char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
    char text[ID_FILE_MAX];
    int fd, n, r;

    randombytes_buf(seed, sizeof(seed));
    sodium_bin2base64(b64, sizeof(b64), seed, sizeof(seed),
                      sodium_base64_VARIANT_ORIGINAL);
    n = snprintf(text, sizeof(text), ID_HEADER "%s\n", b64);
    sodium_memzero(b64, sizeof(b64));
    fd = open(id->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errsz, "cannot create %s: %s", id->path, strerror(errno));
        sodium_memzero(text, sizeof(text));
        sodium_memzero(seed, sizeof(seed));
        return RM_E_CONFIG;
    }
    r = (write(fd, text, (size_t)n) == n && fsync(fd) == 0) ? 0 : -errno;
    close(fd);
    sodium_memzero(text, sizeof(text));
    if (r != 0) {
        unlink(id->path);
        snprintf(err, errsz, "cannot write %s: %s", id->path, strerror(-r));
        sodium_memzero(seed, sizeof(seed));
        return RM_E_CONFIG;
    }
    r = id_from_seed(id, seed);
    sodium_memzero(seed, sizeof(seed));
    id->created = 1;
    return r;
}

static int
id_read(struct node_identity *id, char *err, size_t errsz)
{
    char text[ID_FILE_MAX + 1];
    uint8_t seed[32];
    size_t seedlen = 0;
    const char *end = NULL, *b64;
    struct stat st;
    ssize_t n;
    int fd, r;

    fd = open(id->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errsz, "cannot read %s: %s", id->path, strerror(errno));
        return RM_E_CONFIG;
    }
    if (fstat(fd, &st) != 0 || (st.st_mode & 077) != 0) {
        close(fd);
        snprintf(err, errsz,
                 "%s is readable by others (mode %03o): the node's secret "
                 "key must be private; chmod 600 it, and if others may have "
                 "read it, make the node a new identity",
                 id->path, (unsigned)(st.st_mode & 0777));
        return RM_E_CONFIG;
    }
    n = read(fd, text, ID_FILE_MAX);
    close(fd);
    if (n < 0 || (size_t)n < sizeof(ID_HEADER) - 1 ||
        memcmp(text, ID_HEADER, sizeof(ID_HEADER) - 1) != 0) {
        snprintf(err, errsz,
                 "%s is not a relaymesh node key (it should start with "
                 "\"relaymesh node key v1\"); restore it from a backup — it "
                 "is never replaced automatically",
                 id->path);
        sodium_memzero(text, sizeof(text));
        return RM_E_CONFIG;
    }
    text[n] = '\0';
    b64 = text + sizeof(ID_HEADER) - 1;
    r = sodium_base642bin(seed, sizeof(seed), b64, strlen(b64), "\r\n",
                          &seedlen, &end, sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(text, sizeof(text));
    if (r != 0 || seedlen != sizeof(seed)) {
        snprintf(err, errsz,
                 "%s: the key does not decode to 32 bytes; restore it from a "
                 "backup — it is never replaced automatically",
                 id->path);
        sodium_memzero(seed, sizeof(seed));
        return RM_E_CONFIG;
    }
    r = id_from_seed(id, seed);
    sodium_memzero(seed, sizeof(seed));
    return r;
}

int
node_identity_load(struct node_identity *id, const char *datadir, char *err,
                   size_t errsz)
{
    int r;

    memset(id, 0, sizeof(*id));
    if (sodium_init() < 0) {
        snprintf(err, errsz, "libsodium failed to initialise");
        return RM_E_CONFIG;
    }
    if ((size_t)snprintf(id->path, sizeof(id->path), "%s/%s", datadir,
                         NODE_ID_FILE) >= sizeof(id->path)) {
        snprintf(err, errsz, "data directory path too long");
        return RM_E_CONFIG;
    }
    if (access(id->path, F_OK) == 0)
        r = id_read(id, err, errsz);
    else if (errno == ENOENT)
        r = id_create(id, err, errsz);
    else {
        snprintf(err, errsz, "cannot look at %s: %s", id->path,
                 strerror(errno));
        r = RM_E_CONFIG;
    }
    if (r != 0) {
        if (r == -ENOMEM)
            snprintf(err, errsz, "out of memory for the node key");
        node_identity_free(id);
        return RM_E_CONFIG;
    }
    if (id->created)
        log_info("event=node.identity_created file=%s fingerprint=%s "
                 "hint=\"back this file up: it is the node's identity in "
                 "the mesh\"",
                 id->path, id->fingerprint);
    else
        log_info("event=node.identity fingerprint=%s", id->fingerprint);
    return 0;
}

void
node_identity_free(struct node_identity *id)
{
    if (id->sk != NULL)
        sodium_free(id->sk);
    id->sk = NULL;
}
