/*
 * mesh_probe: an outsider at a node's mesh port, for the integration tests
 * (tests/integration/test_mesh.py). Not installed.
 *
 *   mesh_probe ADDR:PORT stranger|garbage
 *
 * stranger: a fresh key pair makes a mesh of its own (a self-signed
 *   certificate, valid, but for another root) and runs the Noise_XX
 *   handshake as a member of it; right after message 3 it sends an
 *   encrypted "swim" frame in the same write. The node must refuse in the
 *   handshake and read nothing after it.
 * garbage: a handshake message 1 of random bytes of a valid length, then
 *   more random bytes.
 *
 * Output: one line, "handshake2 ok" when message 2 arrived and
 * authenticated (the node proved its key), then "closed" when the node
 * closed the connection, or "open" if it was still open after 3 s. Exit 0
 * when the node closed it, 1 when it stayed open, 2 on usage or setup
 * errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "common/buf.h"
#include "mesh/frame.h"
#include "mesh/mcodec.h"
#include "mesh/noise.h"

static int
write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = write(fd, c, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read exactly n bytes within ms; 0, or -1 on EOF / error / timeout. */
static int
read_all(int fd, void *p, size_t n, int ms)
{
    char *c = p;

    while (n > 0) {
        struct pollfd pf = {fd, POLLIN, 0};
        ssize_t r;

        if (poll(&pf, 1, ms) <= 0)
            return -1;
        r = read(fd, c, n);
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Wait for EOF (or a reset): 1 closed, 0 still open after ms. */
static int
wait_closed(int fd, int ms)
{
    char b[4096];

    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        ssize_t r;

        if (poll(&pf, 1, ms) <= 0)
            return 0;
        r = read(fd, b, sizeof(b));
        if (r <= 0)
            return 1;
    }
}

static int
hs_send(int fd, struct noise_handshake *hs, const uint8_t *payload, size_t plen)
{
    uint8_t msg[2 + NOISE_MSG_MAX];
    size_t n;

    if (noise_handshake_write(hs, payload, plen, msg + 2, NOISE_MSG_MAX, &n) !=
        0)
        return -1;
    msg[0] = (uint8_t)(n >> 8);
    msg[1] = (uint8_t)n;
    return write_all(fd, msg, 2 + n);
}

static int
stranger_run(int fd, struct buf *cred, struct buf *fr)
{
    static uint8_t payload[NOISE_MSG_MAX], msg[NOISE_MSG_MAX];
    unsigned char pk[crypto_sign_PUBLICKEYBYTES],
        sk[crypto_sign_SECRETKEYBYTES];
    uint8_t x_sk[32], hdr[2], m3[2 + NOISE_MSG_MAX];
    struct noise_handshake hs;
    struct noise_cipher tx, rx;
    struct noise_handshake_opts o;
    struct mrec_chain ch;
    struct frame_tx ftx;
    size_t mlen, plen, n;
    int64_t now = (int64_t)time(NULL);
    int r;

    crypto_sign_keypair(pk, sk);
    crypto_sign_ed25519_sk_to_curve25519(x_sk, sk);
    memset(&ch, 0, sizeof(ch));
    ch.n = 1;
    randombytes_buf(ch.c[0].mesh_id, sizeof(ch.c[0].mesh_id));
    memcpy(ch.c[0].node_pk, pk, sizeof(pk));
    strcpy(ch.c[0].name, "stranger");
    ch.c[0].issued = now;
    ch.c[0].expires = now + 3600;
    if (mrec_cert_sign(&ch.c[0], sk) != 0 ||
        mcodec_cred_member_encode(cred, &ch) != 0)
        return 2;
    memset(&o, 0, sizeof(o));
    o.pattern = NOISE_PATTERN_XX;
    o.role = NOISE_INITIATOR;
    o.prologue = (const uint8_t *)"relaymesh-mesh-v1";
    o.prologue_len = 17;
    o.s_priv = x_sk;
    if (noise_handshake_init(&hs, &o) != 0 || hs_send(fd, &hs, NULL, 0))
        return 2;
    if (read_all(fd, hdr, 2, 3000) != 0)
        return 0; /* closed */
    mlen = ((size_t)hdr[0] << 8) | hdr[1];
    if (read_all(fd, msg, mlen, 3000) != 0 ||
        noise_handshake_read(&hs, msg, mlen, payload, sizeof(payload), &plen) !=
            0)
        return 0;
    printf("handshake2 ok\n");
    /* Message 3 and, in the same write, a frame after it. */
    if (noise_handshake_write(&hs, (const uint8_t *)cred->data, cred->len,
                              m3 + 2, NOISE_MSG_MAX, &n) != 0 ||
        noise_handshake_split(&hs, &tx, &rx) != 0 ||
        frame_tx_init(&ftx, &tx, NULL) != 0)
        return 2;
    m3[0] = (uint8_t)(n >> 8);
    m3[1] = (uint8_t)n;
    r = buf_append(fr, m3, 2 + n);
    if (r == 0)
        r = frame_encode(&ftx, "swim", 4, "\xc0", 1, fr);
    frame_tx_cleanup(&ftx);
    noise_handshake_cleanup(&hs);
    if (r != 0)
        return 2;
    if (write_all(fd, fr->data, fr->len) != 0)
        return 0;
    return wait_closed(fd, 3000) ? 0 : 1;
}

static int
stranger(int fd)
{
    struct buf cred, fr;
    int r;

    buf_init(&cred, 16384);
    buf_init(&fr, 2 * FRAME_MSG_MAX);
    r = stranger_run(fd, &cred, &fr);
    buf_cleanup(&cred);
    buf_cleanup(&fr);
    if (r == 0)
        printf("closed\n");
    else if (r == 1)
        printf("open\n");
    return r;
}

static int
garbage(int fd)
{
    uint8_t b[2 + 32 + 200];

    randombytes_buf(b, sizeof(b));
    b[0] = 0;
    b[1] = 32;
    if (write_all(fd, b, sizeof(b)) != 0) {
        printf("closed\n");
        return 0;
    }
    if (wait_closed(fd, 3000)) {
        printf("closed\n");
        return 0;
    }
    printf("open\n");
    return 1;
}

int
main(int argc, char **argv)
{
    struct sockaddr_in sa;
    char host[64];
    const char *colon;
    int fd;

    if (argc != 3 || (colon = strrchr(argv[1], ':')) == NULL ||
        (size_t)(colon - argv[1]) >= sizeof(host)) {
        fprintf(stderr, "usage: mesh_probe ADDR:PORT stranger|garbage\n");
        return 2;
    }
    if (sodium_init() < 0)
        return 2;
    memcpy(host, argv[1], (size_t)(colon - argv[1]));
    host[colon - argv[1]] = '\0';
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "mesh_probe: %s is not an IPv4 address\n", host);
        return 2;
    }
    if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "mesh_probe: connect %s: %s\n", argv[1],
                strerror(errno));
        return 2;
    }
    if (strcmp(argv[2], "stranger") == 0)
        return stranger(fd);
    if (strcmp(argv[2], "garbage") == 0)
        return garbage(fd);
    fprintf(stderr, "usage: mesh_probe ADDR:PORT stranger|garbage\n");
    return 2;
}
