/*
 * rmclient: the DLL's bridge client (the contract is rmclient.h).
 *
 * One blocking request at a time over a non-blocking socket: every wait
 * goes through select() with a deadline, so no call blocks past the
 * configured timeout (rmc_open: connect and handshake together; rmc_call:
 * sending the request and reading its response). Winsock is started per
 * connection (WSAStartup in rmc_open, WSACleanup in rmc_close; Winsock
 * counts them), so the DLL needs no global initialisation and never
 * touches Winsock from DllMain.
 *
 * Secrets. The handshake state and the ciphers live inside struct rmc
 * (plain calloc, as rmclient.h requires, so the fault-injection
 * allocator sees it) and are wiped with sodium_memzero before it is
 * freed. A request's plaintext (the logon password) is packed into a
 * buffer reserved at open time, large enough for any logon request so
 * that it is never copied by realloc, encrypted from there straight into
 * the wire buffer (frame_encode_raw) and wiped right after.
 *
 * Transport errors in rmc_call have no why parameter in rmclient.h: their
 * reason goes to res->why (struct bproto_res's decode-failure field),
 * which the caller can log.
 */
#define WIN32_LEAN_AND_MEAN
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/buf.h"
#include "common/mpack_decode.h"
#include "common/rm_error.h"
#include "mesh/frame.h"
#include "mesh/noise.h"
#include "win32/rmclient.h"

#define RMC_DEFAULT_PORT "4751"
#define RMC_HS_HDR 2 /* big-endian length before each handshake message */
/* The node's XX message 2: e (32), encrypted s (32 + tag), encrypted
 * payload (at least a tag). Anything shorter is not the bridge. */
#define RMC_HS2_MIN (NOISE_DHLEN + NOISE_DHLEN + 2 * NOISE_TAGLEN)
#define RMC_PK_LEN 32   /* Ed25519 public key in the node's payload */
#define RMC_FP_CHARS 32 /* base32 characters of a fingerprint */
#define RMC_FP_TEXT 40  /* 32 characters, 7 dashes, NUL */
/* Room reserved for a request's plaintext at open time: a logon request
 * (user 254 + password 1,024 + client 255 bytes plus keys: under 1.7 KiB)
 * always fits, so the password is never moved by realloc. */
#define RMC_REQ_RESERVE 8192
/* The wire bytes of the largest request: the message plus, per chunk, a
 * length, a flag and a tag (mesh/frame.h). */
#define RMC_WIRE_MAX                                                           \
    (FRAME_MSG_MAX + (FRAME_MSG_MAX / FRAME_CHUNK_MAX + 1) *                   \
                         (FRAME_HDRLEN + 1 + NOISE_TAGLEN))
#define RMC_RBUF 16384 /* one recv() */
#define RMC_HOST_MAX 256

struct rmc {
    SOCKET s;
    int wsa;    /* WSAStartup succeeded: WSACleanup in rmc_close */
    int frames; /* ftx / frx initialised */
    int dead;   /* a transport error happened: only rmc_close remains */
    unsigned timeout_ms;
    uint64_t next_id;
    char node[sizeof(((struct rmc_cfg *)0)->node)]; /* address, for why */
    char name[BPROTO_NODE_MAX + 1]; /* node name from the handshake */
    struct noise_handshake hs;
    struct noise_cipher tx, rx;
    struct frame_tx ftx;
    struct frame_rx frx;
    struct buf msg; /* plaintext of the request being sent; wiped */
    struct buf out; /* its wire bytes (ciphertext) */
    uint8_t rbuf[RMC_RBUF];
};

/* The node's handshake payload: {"pk": bin 32, "node": str}. */
struct rmc_hello {
    uint8_t pk[RMC_PK_LEN];
    int has_pk, has_name;
    char name[BPROTO_NODE_MAX + 1];
    char why[96];
};

static int rmc_fail(char *why, size_t whysz, int code, const char *fmt, ...)
    __attribute__((format(gnu_printf, 4, 5))); /* mingw-w64 C99 stdio */

static int
rmc_fail(char *why, size_t whysz, int code, const char *fmt, ...)
{
    va_list ap;

    if (why != NULL && whysz > 0) {
        va_start(ap, fmt);
        vsnprintf(why, whysz, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- Winsock errors ------------------------------------------------------ */

static int
rmc_wsa_code(int e)
{
    switch (e) {
    case WSAECONNREFUSED:
        return -ECONNREFUSED;
    case WSAECONNRESET:
        return -ECONNRESET;
    case WSAECONNABORTED:
        return -ECONNABORTED;
    case WSAETIMEDOUT:
        return RM_E_AGAIN;
    case WSAENETUNREACH:
    case WSAENETDOWN:
        return -ENETUNREACH;
    case WSAEHOSTUNREACH:
        return -EHOSTUNREACH;
    case WSAEADDRNOTAVAIL:
        return -EADDRNOTAVAIL;
    case WSAENOBUFS:
    case WSA_NOT_ENOUGH_MEMORY:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

static const char *
rmc_wsa_text(int e, char *tmp, size_t tmpsz)
{
    switch (e) {
    case WSAECONNREFUSED:
        return "connection refused (is the node running, with [bridge] "
               "listen on this address?)";
    case WSAECONNRESET:
        return "connection reset by the node";
    case WSAECONNABORTED:
        return "connection aborted";
    case WSAETIMEDOUT:
        return "timed out";
    case WSAENETUNREACH:
    case WSAENETDOWN:
        return "network unreachable";
    case WSAEHOSTUNREACH:
        return "host unreachable";
    case WSAEADDRNOTAVAIL:
        return "address not available";
    case WSAENOBUFS:
    case WSA_NOT_ENOUGH_MEMORY:
        return "out of memory";
    default:
        snprintf(tmp, tmpsz, "Winsock error %d", e);
        return tmp;
    }
}

static int
rmc_wsa_fail(char *why, size_t whysz, const char *node, const char *what, int e)
{
    char tmp[32];

    return rmc_fail(why, whysz, rmc_wsa_code(e), "node %s: %s: %s", node, what,
                    rmc_wsa_text(e, tmp, sizeof(tmp)));
}

/* ---- addresses ----------------------------------------------------------- */

/*
 * "host:port", "[v6]:port", "host" or "[v6]" (port 4751), or a bare IPv6
 * address (more than one ':', no brackets; port 4751).
 */
static int
rmc_split_node(const char *node, char *host, char *port, char *why,
               size_t whysz)
{
    const char *h = node, *p = NULL, *end;
    size_t hlen;

    if (node[0] == '\0')
        return rmc_fail(why, whysz, RM_E_CONFIG,
                        "no node address configured: set Node "
                        "(host:port) or RELAYMESH_MAPI_NODE");
    if (node[0] == '[') {
        if ((end = strchr(node, ']')) == NULL)
            return rmc_fail(why, whysz, RM_E_CONFIG,
                            "node address '%s': no ']' after the IPv6 "
                            "address; write [address]:port",
                            node);
        h = node + 1;
        hlen = (size_t)(end - h);
        if (end[1] == ':')
            p = end + 2;
        else if (end[1] != '\0')
            return rmc_fail(why, whysz, RM_E_CONFIG,
                            "node address '%s': expected ':port' after "
                            "']'",
                            node);
    } else {
        const char *c = strchr(node, ':');

        if (c != NULL && strchr(c + 1, ':') == NULL) {
            hlen = (size_t)(c - node);
            p = c + 1;
        } else {
            hlen = strlen(node); /* a name, or a bare IPv6 address */
        }
    }
    if (hlen == 0 || hlen >= RMC_HOST_MAX)
        return rmc_fail(why, whysz, RM_E_CONFIG,
                        "node address '%s': the host part is %s", node,
                        hlen == 0 ? "empty" : "too long");
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (p == NULL) {
        memcpy(port, RMC_DEFAULT_PORT, sizeof(RMC_DEFAULT_PORT));
        return 0;
    }
    {
        unsigned long v = 0;
        size_t n = 0;

        for (; p[n] != '\0'; n++) {
            if (p[n] < '0' || p[n] > '9' || n >= 5)
                break;
            v = v * 10 + (unsigned long)(p[n] - '0');
        }
        if (n == 0 || p[n] != '\0' || v == 0 || v > 65535)
            return rmc_fail(why, whysz, RM_E_CONFIG,
                            "node address '%s': the port must be a number "
                            "from 1 to 65535",
                            node);
        snprintf(port, 6, "%lu", v);
    }
    return 0;
}

/* ---- fingerprints (as node/node_identity.c shows them) -------------------
 */

static void
rmc_fingerprint(const uint8_t pk[RMC_PK_LEN], char out[RMC_FP_TEXT])
{
    static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    uint8_t h[32];
    unsigned acc = 0, bits = 0, n = 0;
    size_t o = 0;

    crypto_generichash(h, sizeof(h), pk, RMC_PK_LEN, NULL, 0);
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

/* The 32 base32 characters, upper case, without '-' and spaces; 0 or -1
 * when it is not a fingerprint. */
static int
rmc_fp_normalize(const char *in, char out[RMC_FP_CHARS + 1])
{
    size_t n = 0;

    for (; *in != '\0'; in++) {
        char ch = *in;

        if (ch == '-' || ch == ' ')
            continue;
        if (ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= '2' && ch <= '7')))
            return -1;
        if (n == RMC_FP_CHARS)
            return -1;
        out[n++] = ch;
    }
    out[n] = '\0';
    return n == RMC_FP_CHARS ? 0 : -1;
}

/* ---- socket I/O with a deadline ------------------------------------------ */

static DWORD
rmc_left(ULONGLONG deadline)
{
    ULONGLONG now = GetTickCount64();

    return now >= deadline ? 0 : (DWORD)(deadline - now);
}

/* Wait until s is readable (want_write 0) or writable / failed connecting
 * (want_write 1). 0, RM_E_AGAIN at the deadline, or a Winsock error (its
 * WSA code in *wsa). */
static int
rmc_wait(SOCKET s, int want_write, ULONGLONG deadline, int *wsa)
{
    fd_set rf, wf, ef;
    struct timeval tv;
    DWORD left = rmc_left(deadline);
    int n;

    if (left == 0)
        return RM_E_AGAIN;
    FD_ZERO(&rf);
    FD_ZERO(&wf);
    FD_ZERO(&ef);
    if (want_write)
        FD_SET(s, &wf);
    else
        FD_SET(s, &rf);
    FD_SET(s, &ef); /* Windows reports a failed connect here */
    tv.tv_sec = (long)(left / 1000);
    tv.tv_usec = (long)(left % 1000) * 1000;
    n = select(0, &rf, &wf, &ef, &tv);
    if (n == 0)
        return RM_E_AGAIN;
    if (n == SOCKET_ERROR) {
        *wsa = WSAGetLastError();
        return rmc_wsa_code(*wsa);
    }
    return 0;
}

static int
rmc_timeout(struct rmc *c, const char *what, char *why, size_t whysz)
{
    return rmc_fail(why, whysz, RM_E_AGAIN, "node %s: timed out after %u ms %s",
                    c->node, c->timeout_ms, what);
}

static int
rmc_send_all(struct rmc *c, const void *data, size_t len, ULONGLONG deadline,
             const char *what, char *why, size_t whysz)
{
    const char *p = data;
    int r, e = 0;

    while (len > 0) {
        int n = len > (1u << 20) ? (1 << 20) : (int)len;

        n = send(c->s, p, n, 0);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        e = WSAGetLastError();
        if (e != WSAEWOULDBLOCK)
            return rmc_wsa_fail(why, whysz, c->node, what, e);
        r = rmc_wait(c->s, 1, deadline, &e);
        if (r == RM_E_AGAIN)
            return rmc_timeout(c, what, why, whysz);
        if (r != 0)
            return rmc_wsa_fail(why, whysz, c->node, what, e);
    }
    return 0;
}

/* Read 1 .. max bytes. RM_E_CLOSED when the node closed the connection. */
static int
rmc_recv_some(struct rmc *c, void *p, size_t max, size_t *got,
              ULONGLONG deadline, const char *what, char *why, size_t whysz)
{
    int n, r, e = 0;

    for (;;) {
        n = recv(c->s, p, max > INT_MAX ? INT_MAX : (int)max, 0);
        if (n > 0) {
            *got = (size_t)n;
            return 0;
        }
        if (n == 0)
            return rmc_fail(why, whysz, RM_E_CLOSED,
                            "node %s: the connection was closed %s", c->node,
                            what);
        e = WSAGetLastError();
        if (e != WSAEWOULDBLOCK)
            return rmc_wsa_fail(why, whysz, c->node, what, e);
        r = rmc_wait(c->s, 0, deadline, &e);
        if (r == RM_E_AGAIN)
            return rmc_timeout(c, what, why, whysz);
        if (r != 0)
            return rmc_wsa_fail(why, whysz, c->node, what, e);
    }
}

static int
rmc_recv_exact(struct rmc *c, uint8_t *p, size_t len, ULONGLONG deadline,
               const char *what, char *why, size_t whysz)
{
    size_t got;
    int r;

    while (len > 0) {
        r = rmc_recv_some(c, p, len, &got, deadline, what, why, whysz);
        if (r != 0)
            return r;
        p += got;
        len -= got;
    }
    return 0;
}

/* ---- connect ------------------------------------------------------------- */

static int
rmc_connect(struct rmc *c, const char *host, const char *port,
            ULONGLONG deadline, char *why, size_t whysz)
{
    struct addrinfo hints, *res = NULL, *ai;
    int r, e = 0, last = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        if (r == EAI_AGAIN)
            return rmc_fail(why, whysz, RM_E_AGAIN,
                            "node %s: cannot resolve '%s' now (temporary "
                            "name service failure); try again",
                            c->node, host);
        if (r == EAI_MEMORY)
            return rmc_fail(why, whysz, -ENOMEM,
                            "node %s: out of memory resolving '%s'", c->node,
                            host);
        return rmc_fail(why, whysz, RM_E_CONFIG,
                        "node %s: cannot resolve '%s' (error %d); check "
                        "the Node setting",
                        c->node, host, r);
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        u_long nb = 1;
        int err = 0, errlen = sizeof(err);

        c->s = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (c->s == INVALID_SOCKET) {
            last = WSAGetLastError();
            continue;
        }
        /* Programs that host the DLL may start children: keep the
         * socket out of them. */
        SetHandleInformation((HANDLE)c->s, HANDLE_FLAG_INHERIT, 0);
        if (ioctlsocket(c->s, FIONBIO, &nb) != 0) {
            last = WSAGetLastError();
            goto next;
        }
        if (connect(c->s, ai->ai_addr, (int)ai->ai_addrlen) == 0)
            break;
        last = WSAGetLastError();
        if (last != WSAEWOULDBLOCK)
            goto next;
        r = rmc_wait(c->s, 1, deadline, &e);
        if (r == RM_E_AGAIN) {
            freeaddrinfo(res);
            return rmc_timeout(c, "connecting", why, whysz);
        }
        if (r != 0) {
            last = e;
            goto next;
        }
        if (getsockopt(c->s, SOL_SOCKET, SO_ERROR, (char *)&err, &errlen) != 0)
            err = WSAGetLastError();
        if (err == 0)
            break;
        last = err;
    next:
        closesocket(c->s);
        c->s = INVALID_SOCKET;
    }
    freeaddrinfo(res);
    if (c->s == INVALID_SOCKET)
        return rmc_wsa_fail(why, whysz, c->node, "connect",
                            last ? last : WSAEHOSTUNREACH);
    {
        BOOL one = TRUE;

        /* One small request, one response: no Nagle delay. */
        setsockopt(c->s, IPPROTO_TCP, TCP_NODELAY, (const char *)&one,
                   sizeof(one));
    }
    return 0;
}

/* ---- handshake ----------------------------------------------------------- */

static int
rmc_hello_obj(const msgpack_object *o, void *arg)
{
    struct rmc_hello *h = arg;

    if (o->type != MSGPACK_OBJECT_MAP) {
        snprintf(h->why, sizeof(h->why), "not a map");
        return RM_E_PROTO;
    }
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (k->type != MSGPACK_OBJECT_STR) {
            snprintf(h->why, sizeof(h->why), "a key is not a string");
            return RM_E_PROTO;
        }
        if (k->via.str.size == 2 && memcmp(k->via.str.ptr, "pk", 2) == 0) {
            if (h->has_pk || v->type != MSGPACK_OBJECT_BIN ||
                v->via.bin.size != RMC_PK_LEN) {
                snprintf(h->why, sizeof(h->why), "pk: not one bin of 32 bytes");
                return RM_E_PROTO;
            }
            memcpy(h->pk, v->via.bin.ptr, RMC_PK_LEN);
            h->has_pk = 1;
        } else if (k->via.str.size == 4 &&
                   memcmp(k->via.str.ptr, "node", 4) == 0) {
            if (h->has_name) {
                snprintf(h->why, sizeof(h->why), "node: given twice");
                return RM_E_PROTO;
            }
            h->has_name = 1;
            if (v->type == MSGPACK_OBJECT_NIL)
                continue;
            if (v->type != MSGPACK_OBJECT_STR ||
                v->via.str.size > BPROTO_NODE_MAX ||
                !bproto_text_valid(v->via.str.ptr, v->via.str.size)) {
                snprintf(h->why, sizeof(h->why),
                         "node: not UTF-8 text of at most %d bytes",
                         BPROTO_NODE_MAX);
                return RM_E_PROTO;
            }
            memcpy(h->name, v->via.str.ptr, v->via.str.size);
            h->name[v->via.str.size] = '\0';
        }
        /* Other keys: ignored (forward compatibility). */
    }
    if (!h->has_pk) {
        snprintf(h->why, sizeof(h->why), "pk: missing");
        return RM_E_PROTO;
    }
    return 0;
}

/* The node must prove the key it names, and that key must be the pinned
 * one (rmclient.h). */
static int
rmc_check_node(struct rmc *c, const struct rmc_hello *h,
               const uint8_t rs[NOISE_DHLEN], const char *want, char *why,
               size_t whysz)
{
    uint8_t x[NOISE_DHLEN];
    char fp[RMC_FP_TEXT], got[RMC_FP_CHARS + 1];
    int bound;

    bound = crypto_sign_ed25519_pk_to_curve25519(x, h->pk) == 0 &&
            sodium_memcmp(x, rs, NOISE_DHLEN) == 0;
    sodium_memzero(x, sizeof(x));
    if (!bound)
        return rmc_fail(why, whysz, RM_E_PERM,
                        "node %s: refused: the key the node names is not "
                        "the key it proved in the handshake (not a genuine "
                        "relaymesh node)",
                        c->node);
    rmc_fingerprint(h->pk, fp);
    if (rmc_fp_normalize(fp, got) != 0 || strcmp(got, want) != 0)
        return rmc_fail(why, whysz, RM_E_PERM,
                        "node %s: refused: its key fingerprint is %s, not "
                        "the configured one; if the node's key was replaced "
                        "on purpose, set Fingerprint to what 'relaymesh "
                        "status' shows on it",
                        c->node, fp);
    return 0;
}

static int
rmc_hs_send(struct rmc *c, uint8_t *hb, ULONGLONG deadline, char *why,
            size_t whysz)
{
    size_t n;
    int r;

    r = noise_handshake_write(&c->hs, NULL, 0, hb + RMC_HS_HDR, NOISE_MSG_MAX,
                              &n);
    if (r != 0)
        return rmc_fail(why, whysz, r, "node %s: handshake: %s", c->node,
                        rm_strerror(r));
    hb[0] = (uint8_t)(n >> 8);
    hb[1] = (uint8_t)n;
    return rmc_send_all(c, hb, RMC_HS_HDR + n, deadline, "in the handshake",
                        why, whysz);
}

static int
rmc_handshake(struct rmc *c, const char *want_fp, ULONGLONG deadline, char *why,
              size_t whysz)
{
    struct noise_handshake_opts o;
    struct rmc_hello hello;
    uint8_t s_pub[NOISE_DHLEN], s_priv[NOISE_DHLEN], rs[NOISE_DHLEN];
    uint8_t *hb, *pl;
    size_t mlen, plen = 0;
    char w[96] = "";
    int r;

    /* One handshake message with its length, then its payload. */
    hb = malloc(RMC_HS_HDR + NOISE_MSG_MAX + NOISE_MSG_MAX);
    if (hb == NULL)
        return rmc_fail(why, whysz, -ENOMEM, "out of memory");
    pl = hb + RMC_HS_HDR + NOISE_MSG_MAX;
    memset(&hello, 0, sizeof(hello));

    /* A fresh static key per connection: the user proves who they are
     * with logon, not with a key. */
    noise_keypair(s_pub, s_priv);
    memset(&o, 0, sizeof(o));
    o.pattern = NOISE_PATTERN_XX;
    o.role = NOISE_INITIATOR;
    o.prologue = (const uint8_t *)RMC_PROLOGUE;
    o.prologue_len = sizeof(RMC_PROLOGUE) - 1;
    o.s_priv = s_priv;
    r = noise_handshake_init(&c->hs, &o);
    sodium_memzero(s_priv, sizeof(s_priv));
    if (r != 0) {
        r = rmc_fail(why, whysz, r, "handshake set-up: %s", rm_strerror(r));
        goto out;
    }

    /* -> e */
    if ((r = rmc_hs_send(c, hb, deadline, why, whysz)) != 0)
        goto out;

    /* <- e, ee, s, es, payload {"pk", "node"} */
    r = rmc_recv_exact(c, hb, RMC_HS_HDR, deadline,
                       "waiting for the node's handshake", why, whysz);
    if (r == RM_E_CLOSED)
        r = rmc_fail(why, whysz, RM_E_PROTO,
                     "node %s: closed the connection instead of answering "
                     "the handshake: is this the node's bridge port ([bridge] "
                     "listen)?",
                     c->node);
    if (r != 0)
        goto out;
    mlen = ((size_t)hb[0] << 8) | hb[1];
    if (mlen < RMC_HS2_MIN) {
        r = rmc_fail(why, whysz, RM_E_PROTO,
                     "node %s: answered with a %zu-byte message, not a "
                     "bridge handshake: is this the node's bridge port?",
                     c->node, mlen);
        goto out;
    }
    r = rmc_recv_exact(c, hb + RMC_HS_HDR, mlen, deadline,
                       "reading the node's handshake", why, whysz);
    if (r == RM_E_CLOSED)
        r = rmc_fail(why, whysz, RM_E_PROTO,
                     "node %s: closed the connection in the middle of the "
                     "handshake: not a relaymesh bridge",
                     c->node);
    if (r != 0)
        goto out;
    r = noise_handshake_read(&c->hs, hb + RMC_HS_HDR, mlen, pl, NOISE_MSG_MAX,
                             &plen);
    if (r != 0) {
        r = rmc_fail(why, whysz, RM_E_PROTO,
                     "node %s: the handshake failed (%s): not a relaymesh "
                     "bridge, or one speaking another protocol version",
                     c->node, rm_strerror(r));
        goto out;
    }
    if (noise_handshake_remote_static(&c->hs, rs) != 0) {
        r = rmc_fail(why, whysz, RM_E_PROTO,
                     "node %s: the handshake gave no node key", c->node);
        goto out;
    }
    r = mpack_decode(pl, plen, rmc_hello_obj, &hello, w, sizeof(w));
    if (r != 0) {
        r = rmc_fail(why, whysz, r == -ENOMEM ? r : RM_E_PROTO,
                     "node %s: bad handshake payload: %s", c->node,
                     hello.why[0] ? hello.why : w);
        goto out;
    }
    /* Decided before anything is sent under the handshake's keys. */
    if ((r = rmc_check_node(c, &hello, rs, want_fp, why, whysz)) != 0)
        goto out;
    memcpy(c->name, hello.name, sizeof(c->name));

    /* -> s, se */
    if ((r = rmc_hs_send(c, hb, deadline, why, whysz)) != 0)
        goto out;
    if (noise_handshake_action(&c->hs) != NOISE_ACTION_SPLIT ||
        noise_handshake_split(&c->hs, &c->tx, &c->rx) != 0) {
        r = rmc_fail(why, whysz, RM_E_PROTO,
                     "node %s: the handshake did not finish", c->node);
        goto out;
    }
    if ((r = frame_tx_init(&c->ftx, &c->tx, NULL)) != 0 ||
        (r = frame_rx_init(&c->frx, &c->rx, NULL)) != 0) {
        frame_tx_cleanup(&c->ftx);
        r = rmc_fail(why, whysz, r, "frame set-up: %s", rm_strerror(r));
        goto out;
    }
    c->frames = 1;
out:
    sodium_memzero(hb, RMC_HS_HDR + NOISE_MSG_MAX + plen);
    sodium_memzero(&hello, sizeof(hello));
    free(hb);
    return r;
}

/* ---- public -------------------------------------------------------------- */

int
rmc_open(const struct rmc_cfg *cfg, struct rmc **out, char *why, size_t whysz)
{
    char host[RMC_HOST_MAX], port[6], fp[RMC_FP_CHARS + 1];
    WSADATA wd;
    struct rmc *c;
    ULONGLONG deadline;
    int r;

    if (why != NULL && whysz > 0)
        why[0] = '\0';
    if (out != NULL)
        *out = NULL;
    if (cfg == NULL || out == NULL)
        return rmc_fail(why, whysz, RM_E_INVAL, "rmc_open: NULL argument");
    if (memchr(cfg->node, '\0', sizeof(cfg->node)) == NULL ||
        memchr(cfg->fingerprint, '\0', sizeof(cfg->fingerprint)) == NULL)
        return rmc_fail(why, whysz, RM_E_INVAL,
                        "rmc_open: unterminated configuration string");
    if (cfg->fingerprint[0] == '\0')
        return rmc_fail(why, whysz, RM_E_CONFIG,
                        "no node fingerprint configured: set Fingerprint "
                        "(or RELAYMESH_MAPI_FINGERPRINT) to what 'relaymesh "
                        "status' shows on the node");
    if (rmc_fp_normalize(cfg->fingerprint, fp) != 0)
        return rmc_fail(why, whysz, RM_E_CONFIG,
                        "the configured fingerprint '%s' is not a node "
                        "fingerprint (32 characters A-Z and 2-7, groups of "
                        "4 joined by '-', as 'relaymesh status' shows it)",
                        cfg->fingerprint);
    if ((r = rmc_split_node(cfg->node, host, port, why, whysz)) != 0)
        return r;
    if (sodium_init() < 0)
        return rmc_fail(why, whysz, -EIO,
                        "libsodium could not initialise (no system random "
                        "source?)");

    if ((c = calloc(1, sizeof(*c))) == NULL)
        return rmc_fail(why, whysz, -ENOMEM, "out of memory");
    c->s = INVALID_SOCKET;
    c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : RMC_TIMEOUT_MS;
    snprintf(c->node, sizeof(c->node), "%s", cfg->node);
    buf_init(&c->msg, FRAME_MSG_MAX);
    buf_init(&c->out, RMC_WIRE_MAX);
    if ((r = WSAStartup(MAKEWORD(2, 2), &wd)) != 0) {
        r = rmc_fail(why, whysz, -EIO,
                     "Winsock could not start (error %d): the network "
                     "stack is not available",
                     r);
        goto fail;
    }
    c->wsa = 1;
    if (buf_reserve(&c->msg, RMC_REQ_RESERVE) != 0) {
        r = rmc_fail(why, whysz, -ENOMEM, "out of memory");
        goto fail;
    }
    /* One budget for connecting and the handshake. */
    deadline = GetTickCount64() + c->timeout_ms;
    if ((r = rmc_connect(c, host, port, deadline, why, whysz)) != 0)
        goto fail;
    if ((r = rmc_handshake(c, fp, deadline, why, whysz)) != 0)
        goto fail;
    *out = c;
    return 0;
fail:
    rmc_close(c);
    return r;
}

static int
rmc_buf_write(void *data, const char *p, size_t len)
{
    return buf_append(data, p, len) == 0 ? 0 : -1;
}

/* The request's plaintext: the frame map {"v": 1, "t": "req", "b": body},
 * packed here rather than by frame_encode() so that it lives only in
 * c->msg (see the top of this file). */
static int
rmc_pack(struct rmc *c, const struct bproto_req *q)
{
    msgpack_packer pk;

    buf_reset(&c->msg);
    msgpack_packer_init(&pk, &c->msg, rmc_buf_write);
    if (msgpack_pack_map(&pk, 3) != 0 ||
        msgpack_pack_str_with_body(&pk, "v", 1) != 0 ||
        msgpack_pack_unsigned_int(&pk, FRAME_VERSION) != 0 ||
        msgpack_pack_str_with_body(&pk, "t", 1) != 0 ||
        msgpack_pack_str_with_body(&pk, BPROTO_T_REQ,
                                   sizeof(BPROTO_T_REQ) - 1) != 0 ||
        msgpack_pack_str_with_body(&pk, "b", 1) != 0)
        return -ENOMEM; /* only allocation can fail this early */
    return bproto_req_encode(&c->msg, q);
}

static void
rmc_wipe_msg(struct rmc *c)
{
    if (c->msg.data != NULL)
        sodium_memzero(c->msg.data, c->msg.len);
    buf_reset(&c->msg);
}

static int
rmc_is_type(const struct frame_msg *m, const char *t)
{
    size_t n = strlen(t);

    return m->type_is_str && m->type_len == n && memcmp(m->type, t, n) == 0;
}

/* A transport error: the connection is dead, the reason in res->why. */
static int
rmc_dead(struct rmc *c, struct bproto_res *res, int r, const char *why)
{
    c->dead = 1;
    if (why != NULL)
        snprintf(res->why, sizeof(res->why), "%s", why);
    return r;
}

int
rmc_call(struct rmc *c, struct bproto_req *q, struct bproto_res *res)
{
    char why[256];
    ULONGLONG deadline;
    int r;

    if (res == NULL)
        return RM_E_INVAL;
    memset(res, 0, sizeof(*res));
    if (c == NULL || q == NULL) {
        snprintf(res->why, sizeof(res->why), "rmc_call: NULL argument");
        return RM_E_INVAL;
    }
    if (c->dead || !c->frames) {
        snprintf(res->why, sizeof(res->why),
                 "connection closed after an earlier error");
        return RM_E_CLOSED;
    }
    res->op = q->op;
    deadline = GetTickCount64() + c->timeout_ms;
    q->id = ++c->next_id;

    r = rmc_pack(c, q);
    if (r == 0) {
        buf_reset(&c->out);
        r = frame_encode_raw(&c->ftx, c->msg.data, c->msg.len, &c->out);
        if (r != 0 && r != RM_E_TOOBIG && r != -ENOMEM)
            c->dead = 1; /* a nonce may be spent */
    }
    rmc_wipe_msg(c);
    if (r != 0) {
        snprintf(res->why, sizeof(res->why), "request %s: %s",
                 bproto_op_name(q->op) ? bproto_op_name(q->op) : "?",
                 rm_strerror(r));
        return r;
    }
    r = rmc_send_all(c, c->out.data, c->out.len, deadline, "sending a request",
                     why, sizeof(why));
    if (r != 0)
        return rmc_dead(c, res, r == RM_E_AGAIN ? r : RM_E_CLOSED, why);

    for (;;) {
        struct frame_msg m;
        uint64_t id;
        size_t room, got;

        r = frame_rx_next(&c->frx, &m);
        if (r < 0) {
            snprintf(why, sizeof(why), "bad frame from the node: %s",
                     rm_strerror(r));
            return rmc_dead(c, res, r == -ENOMEM ? r : RM_E_PROTO, why);
        }
        if (r == 0) {
            room = frame_rx_room(&c->frx);
            if (room == 0)
                return rmc_dead(c, res, RM_E_PROTO,
                                "frame receiver stuck with no room");
            r = rmc_recv_some(
                c, c->rbuf, room < sizeof(c->rbuf) ? room : sizeof(c->rbuf),
                &got, deadline, "waiting for a response", why, sizeof(why));
            if (r != 0)
                return rmc_dead(c, res, r == RM_E_AGAIN ? r : RM_E_CLOSED, why);
            r = frame_rx_feed(&c->frx, c->rbuf, got);
            if (r != 0)
                return rmc_dead(c, res, r == -ENOMEM ? r : RM_E_PROTO,
                                "frame receiver refused input");
            continue;
        }
        if (rmc_is_type(&m, "ka") || rmc_is_type(&m, BPROTO_T_EVENT))
            continue;
        if (!rmc_is_type(&m, BPROTO_T_RES))
            return rmc_dead(c, res, RM_E_PROTO,
                            "node sent a frame of unknown type");
        if (bproto_res_id(m.body, &id) != 0)
            return rmc_dead(c, res, RM_E_PROTO,
                            "node sent a response without an id");
        if (id != q->id) {
            snprintf(why, sizeof(why),
                     "node answered request %llu, expected %llu",
                     (unsigned long long)id, (unsigned long long)q->id);
            return rmc_dead(c, res, RM_E_PROTO, why);
        }
        r = bproto_res_decode_obj(m.body, q->op, res);
        if (r != 0) /* res->why says what was wrong */
            return rmc_dead(c, res, r == -ENOMEM ? r : RM_E_PROTO, NULL);
        return 0;
    }
}

const char *
rmc_node_name(const struct rmc *c)
{
    return c != NULL ? c->name : "";
}

void
rmc_close(struct rmc *c)
{
    if (c == NULL)
        return;
    if (c->s != INVALID_SOCKET)
        closesocket(c->s);
    if (c->frames) {
        frame_tx_cleanup(&c->ftx);
        frame_rx_cleanup(&c->frx);
    }
    noise_handshake_cleanup(&c->hs);
    noise_cipher_cleanup(&c->tx);
    noise_cipher_cleanup(&c->rx);
    if (c->msg.data != NULL)
        sodium_memzero(c->msg.data, c->msg.cap);
    buf_cleanup(&c->msg);
    buf_cleanup(&c->out);
    if (c->wsa)
        WSACleanup();
    sodium_memzero(c, sizeof(*c));
    free(c);
}
