/*
 * bridge_pipe: a MAPI bridge client channel for the integration tests
 * (tests/integration/test_bridge.py). Not installed.
 *
 *   bridge_pipe ADDR:PORT FINGERPRINT [--hangup]
 *
 * Connects, runs the Noise_XX handshake as initiator with the bridge's
 * prologue and a throwaway static key, and checks the node's payload
 * {"pk", "node"}: pk's X25519 form must be the key the node proved, and
 * pk's fingerprint the one given (what win32/rmclient.c does). Then it
 * is a pipe: each request body read from stdin (4-byte big-endian length,
 * then one msgpack value) goes out as a "req" frame; each "res" frame's
 * body comes back on stdout the same way ("ka" frames are skipped). The
 * test speaks msgpack itself, so it can send anything, broken requests
 * included. --hangup: send the first request and close the connection
 * at once, without waiting for the answer (a client that leaves while
 * the node works on it).
 *
 * stderr: "connected NODE" after the handshake. Exit status: 0 at the end
 * of stdin, 1 when the node closed the connection or broke the protocol,
 * 2 on a refused key (fingerprint mismatch), 3 on usage or connect errors.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <msgpack.h>
#include <sodium.h>

#include "bridge/proto.h"
#include "bridge/server.h"
#include "common/buf.h"
#include "common/mpack_check.h"
#include "mesh/frame.h"
#include "mesh/noise.h"
#include "node/node_identity.h"

#define PIPE_TIMEOUT_MS 60000

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

/* Exactly n bytes; 0, or -1 on EOF, error or timeout (ms < 0: none). */
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
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

static int
dial(const char *addr)
{
    char host[256], *colon;
    struct addrinfo hints, *res, *ai;
    int fd = -1;

    snprintf(host, sizeof(host), "%s", addr);
    colon = strrchr(host, ':');
    if (colon == NULL)
        return -1;
    *colon = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host[0] == '[' ? host + 1 : host, colon + 1, &hints,
                    &res) != 0)
        return -1;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, 0);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static void
fp_norm(const char *in, char *out, size_t outsz)
{
    size_t o = 0;

    for (; *in && o + 1 < outsz; in++)
        if (*in != '-' && *in != ' ')
            out[o++] = (char)toupper((unsigned char)*in);
    out[o] = '\0';
}

/* The node's payload: pk must match rs and the pinned fingerprint. */
static int
check_node(const uint8_t *p, size_t len, const uint8_t rs[32], const char *want,
           char *node, size_t nodesz)
{
    msgpack_unpacked u;
    const msgpack_object *o;
    uint8_t pk[32] = {0}, x[32];
    char fp[NODE_ID_FP_LEN], a[64], b[64];
    int have_pk = 0, ok = -1;

    node[0] = '\0';
    if (mpack_check(p, len, NULL, 0) != 0)
        return -1;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)p, len, NULL) !=
            MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP)
        goto out;
    o = &u.data;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (k->type != MSGPACK_OBJECT_STR)
            continue;
        if (k->via.str.size == 2 && memcmp(k->via.str.ptr, "pk", 2) == 0 &&
            v->type == MSGPACK_OBJECT_BIN && v->via.bin.size == 32) {
            memcpy(pk, v->via.bin.ptr, 32);
            have_pk = 1;
        } else if (k->via.str.size == 4 &&
                   memcmp(k->via.str.ptr, "node", 4) == 0 &&
                   v->type == MSGPACK_OBJECT_STR) {
            snprintf(node, nodesz, "%.*s", (int)v->via.str.size,
                     v->via.str.ptr);
        }
    }
    if (!have_pk || crypto_sign_ed25519_pk_to_curve25519(x, pk) != 0 ||
        sodium_memcmp(x, rs, 32) != 0)
        goto out;
    node_identity_fingerprint(pk, fp);
    fp_norm(fp, a, sizeof(a));
    fp_norm(want, b, sizeof(b));
    ok = strcmp(a, b) == 0 ? 0 : -2;
out:
    msgpack_unpacked_destroy(&u);
    return ok;
}

int
main(int argc, char **argv)
{
    static uint8_t msg[2 + NOISE_MSG_MAX], pl[NOISE_MSG_MAX];
    struct noise_handshake hs;
    struct noise_handshake_opts o;
    struct noise_cipher tx, rx;
    struct frame_tx ftx;
    struct frame_rx frx;
    struct buf out, in;
    uint8_t s_pub[32], s_priv[32], rs[32], hdr[4];
    char node[256];
    size_t n, plen;
    int fd, r, rc = 1, hangup;

    hangup = argc == 4 && strcmp(argv[3], "--hangup") == 0;
    if (argc != 3 && !hangup) {
        fprintf(stderr, "usage: bridge_pipe ADDR:PORT FINGERPRINT "
                        "[--hangup]\n");
        return 3;
    }
    if (sodium_init() < 0 || (fd = dial(argv[1])) < 0) {
        fprintf(stderr, "bridge_pipe: cannot connect to %s\n", argv[1]);
        return 3;
    }
    noise_keypair(s_pub, s_priv);
    memset(&o, 0, sizeof(o));
    o.pattern = NOISE_PATTERN_XX;
    o.role = NOISE_INITIATOR;
    o.prologue = (const uint8_t *)BRIDGE_PROLOGUE;
    o.prologue_len = strlen(BRIDGE_PROLOGUE);
    o.s_priv = s_priv;
    if (noise_handshake_init(&hs, &o) != 0 ||
        noise_handshake_write(&hs, NULL, 0, msg + 2, NOISE_MSG_MAX, &n) != 0)
        return 3;
    msg[0] = (uint8_t)(n >> 8);
    msg[1] = (uint8_t)n;
    if (write_all(fd, msg, 2 + n) != 0 ||
        read_all(fd, msg, 2, PIPE_TIMEOUT_MS) != 0) {
        fprintf(stderr, "bridge_pipe: no handshake answer\n");
        return 1;
    }
    n = (size_t)msg[0] << 8 | msg[1];
    if (read_all(fd, msg, n, PIPE_TIMEOUT_MS) != 0 ||
        noise_handshake_read(&hs, msg, n, pl, sizeof(pl), &plen) != 0 ||
        noise_handshake_remote_static(&hs, rs) != 0) {
        fprintf(stderr, "bridge_pipe: handshake message 2 refused\n");
        return 1;
    }
    r = check_node(pl, plen, rs, argv[2], node, sizeof(node));
    if (r != 0) {
        fprintf(stderr, "bridge_pipe: %s\n",
                r == -2 ? "the node's key does not match the fingerprint"
                        : "the node's handshake payload is not valid");
        return 2;
    }
    if (noise_handshake_write(&hs, NULL, 0, msg + 2, NOISE_MSG_MAX, &n) != 0)
        return 3;
    msg[0] = (uint8_t)(n >> 8);
    msg[1] = (uint8_t)n;
    if (write_all(fd, msg, 2 + n) != 0 ||
        noise_handshake_split(&hs, &tx, &rx) != 0 ||
        frame_tx_init(&ftx, &tx, NULL) != 0 ||
        frame_rx_init(&frx, &rx, NULL) != 0)
        return 3;
    fprintf(stderr, "connected %s\n", node);
    buf_init(&out, 8u << 20);
    buf_init(&in, FRAME_MSG_MAX);
    for (;;) {
        uint32_t len;
        struct frame_msg fm;
        int got = 0;

        if (read_all(0, hdr, 4, -1) != 0) {
            rc = 0; /* end of the test's requests */
            break;
        }
        len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
              (uint32_t)hdr[2] << 8 | hdr[3];
        buf_reset(&in);
        if (len > FRAME_MSG_MAX || buf_reserve(&in, len) != 0 ||
            read_all(0, in.data, len, -1) != 0)
            break;
        in.len = len;
        buf_reset(&out);
        if (frame_encode(&ftx, BPROTO_T_REQ, 3, in.data, in.len, &out) != 0 ||
            write_all(fd, out.data, out.len) != 0) {
            fprintf(stderr, "bridge_pipe: cannot send the request\n");
            break;
        }
        if (hangup) {
            rc = 0;
            break;
        }
        /* Read frames until a response. */
        while (!got) {
            char rb[65536];
            ssize_t k;

            r = frame_rx_next(&frx, &fm);
            if (r < 0) {
                fprintf(stderr, "bridge_pipe: bad frame from the node\n");
                goto done;
            }
            if (r == 1) {
                uint8_t h[4];
                msgpack_sbuffer sb;
                msgpack_packer pk;

                if (!fm.type_is_str || fm.type_len != 3 ||
                    memcmp(fm.type, BPROTO_T_RES, 3) != 0)
                    continue; /* keepalive */
                msgpack_sbuffer_init(&sb);
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                msgpack_pack_object(&pk, *fm.body);
                h[0] = (uint8_t)(sb.size >> 24);
                h[1] = (uint8_t)(sb.size >> 16);
                h[2] = (uint8_t)(sb.size >> 8);
                h[3] = (uint8_t)sb.size;
                r = write_all(1, h, 4) == 0 &&
                    write_all(1, sb.data, sb.size) == 0;
                msgpack_sbuffer_destroy(&sb);
                if (!r)
                    goto done;
                got = 1;
                break;
            }
            {
                struct pollfd pf = {fd, POLLIN, 0};

                if (poll(&pf, 1, PIPE_TIMEOUT_MS) <= 0) {
                    fprintf(stderr, "bridge_pipe: no answer\n");
                    goto done;
                }
            }
            k = read(fd, rb,
                     frame_rx_room(&frx) < sizeof(rb) ? frame_rx_room(&frx)
                                                      : sizeof(rb));
            if (k <= 0) {
                fprintf(stderr, "bridge_pipe: the node closed the "
                                "connection\n");
                goto done;
            }
            if (frame_rx_feed(&frx, rb, (size_t)k) != 0)
                goto done;
        }
    }
done:
    buf_cleanup(&out);
    buf_cleanup(&in);
    frame_tx_cleanup(&ftx);
    frame_rx_cleanup(&frx);
    noise_cipher_cleanup(&tx);
    noise_cipher_cleanup(&rx);
    noise_handshake_cleanup(&hs);
    close(fd);
    return rc;
}
