/*
 * Unit tests for mesh/frame.c: the transport framing of the secure channel
 * between two CipherStates made by a real Noise_XX handshake. Round trips
 * (small, exactly 1 MiB, string and numeric types), byte-at-a-time
 * feeding, several messages in one feed, every byte tampered with, lengths
 * too big (decided from the header alone) or too small, malformed maps and
 * wrong versions, replay and reorder, nonce progression, rekeying in
 * lock-step and the nonce limit, buffer limits and misuse.
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

#include "common/buf.h"
#include "common/rm_error.h"
#include "mesh/frame.h"
#include "mesh/noise.h"

#define WIRE_MAX (4 * 1024 * 1024)

/* The initiator's sending cipher is the responder's receiving one. */
struct chan {
    struct noise_cipher tx, rx;   /* initiator side */
    struct noise_cipher rtx, rrx; /* responder side */
};

static void
chan_new(struct chan *c)
{
    struct noise_handshake hs[2];
    struct noise_handshake_opts o;
    uint8_t ipub[32], ipriv[32], rpub[32], rpriv[32];
    uint8_t msg[NOISE_MSG_MAX], pl[NOISE_MSG_MAX];
    size_t n, plen;

    noise_keypair(ipub, ipriv);
    noise_keypair(rpub, rpriv);
    for (int i = 0; i < 2; i++) {
        memset(&o, 0, sizeof(o));
        o.pattern = NOISE_PATTERN_XX;
        o.role = i == 0 ? NOISE_INITIATOR : NOISE_RESPONDER;
        o.s_priv = i == 0 ? ipriv : rpriv;
        assert_int_equal(noise_handshake_init(&hs[i], &o), 0);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            noise_handshake_write(&hs[i % 2], NULL, 0, msg, sizeof(msg), &n),
            0);
        assert_int_equal(noise_handshake_read(&hs[(i + 1) % 2], msg, n, pl,
                                              sizeof(pl), &plen),
                         0);
    }
    assert_int_equal(noise_handshake_split(&hs[0], &c->tx, &c->rx), 0);
    assert_int_equal(noise_handshake_split(&hs[1], &c->rtx, &c->rrx), 0);
    noise_handshake_cleanup(&hs[0]);
    noise_handshake_cleanup(&hs[1]);
}

static void
chan_free(struct chan *c)
{
    noise_cipher_cleanup(&c->tx);
    noise_cipher_cleanup(&c->rx);
    noise_cipher_cleanup(&c->rtx);
    noise_cipher_cleanup(&c->rrx);
}

/* A sender on the initiator's tx and a receiver on the responder's rx. */
struct pair {
    struct chan c;
    struct frame_tx tx;
    struct frame_rx rx;
    struct buf wire;
};

static void
pair_new(struct pair *p, const struct frame_opts *txo,
         const struct frame_opts *rxo)
{
    chan_new(&p->c);
    assert_int_equal(frame_tx_init(&p->tx, &p->c.tx, txo), 0);
    assert_int_equal(frame_rx_init(&p->rx, &p->c.rrx, rxo), 0);
    buf_init(&p->wire, WIRE_MAX);
}

static void
pair_free(struct pair *p)
{
    frame_tx_cleanup(&p->tx);
    frame_rx_cleanup(&p->rx);
    buf_cleanup(&p->wire);
    chan_free(&p->c);
}

/* msgpack for {"k": "hello"} */
static const uint8_t body_small[] = {0x81, 0xa1, 'k', 0xa5, 'h',
                                     'e',  'l',  'l', 'o'};

static void
expect_small(const struct frame_msg *m, const char *type)
{
    assert_int_equal(m->version, 1);
    assert_true(m->type_is_str);
    assert_int_equal(m->type_len, strlen(type));
    assert_memory_equal(m->type, type, strlen(type));
    assert_non_null(m->body);
    assert_int_equal(m->body->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(m->body->via.map.size, 1);
    assert_int_equal(m->body->via.map.ptr[0].val.type, MSGPACK_OBJECT_STR);
    assert_memory_equal(m->body->via.map.ptr[0].val.via.str.ptr, "hello", 5);
}

static void
test_roundtrip_small(void **state)
{
    struct pair p;
    struct frame_msg m;

    pair_new(&p, NULL, NULL);
    assert_int_equal(
        frame_encode(&p.tx, "ping", 4, body_small, sizeof(body_small), &p.wire),
        0);
    /* 4-byte length + flag + map + tag */
    assert_int_equal(p.wire.len, 4 + 1 + 22 + NOISE_TAGLEN);
    assert_int_equal(p.wire.data[3], 1 + 22 + NOISE_TAGLEN);
    assert_int_equal(frame_rx_next(&p.rx, &m), 0);
    assert_int_equal(frame_rx_feed(&p.rx, p.wire.data, p.wire.len), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), 1);
    expect_small(&m, "ping");
    assert_int_equal(m.raw_len, 22);
    assert_int_equal(frame_rx_next(&p.rx, &m), 0);

    /* numeric type, nil body */
    buf_reset(&p.wire);
    assert_int_equal(
        frame_encode_num(&p.tx, 42, (const uint8_t[]){0xc0}, 1, &p.wire), 0);
    assert_int_equal(frame_rx_feed(&p.rx, p.wire.data, p.wire.len), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), 1);
    assert_false(m.type_is_str);
    assert_int_equal(m.type_num, 42);
    assert_int_equal(m.body->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(frame_tx_count(&p.tx), 2);
    assert_int_equal(frame_rx_count(&p.rx), 2);
    pair_free(&p);
}

/* A message of exactly len bytes: {"v":1,"t":"big","b": bin32}. */
static size_t
big_overhead(void)
{
    return 1 + 2 + 1 + 2 + 4 + 2 + 5;
}

static uint8_t *
big_body(size_t msglen, size_t *blen)
{
    size_t n = msglen - big_overhead();
    uint8_t *b = malloc(n + 5);

    assert_non_null(b);
    b[0] = 0xc6;
    b[1] = (uint8_t)(n >> 24);
    b[2] = (uint8_t)(n >> 16);
    b[3] = (uint8_t)(n >> 8);
    b[4] = (uint8_t)n;
    for (size_t i = 0; i < n; i++)
        b[5 + i] = (uint8_t)(i * 7 + 3);
    *blen = n + 5;
    return b;
}

static void
test_roundtrip_1mib(void **state)
{
    struct pair p;
    struct frame_msg m;
    size_t blen, nchunks;
    uint8_t *body = big_body(FRAME_MSG_MAX, &blen);

    pair_new(&p, NULL, NULL);
    assert_int_equal(frame_encode(&p.tx, "big", 3, body, blen, &p.wire), 0);
    nchunks = (FRAME_MSG_MAX + FRAME_CHUNK_MAX - 1) / FRAME_CHUNK_MAX;
    assert_int_equal(nchunks, 17);
    assert_int_equal(p.wire.len,
                     FRAME_MSG_MAX + nchunks * (4 + 1 + NOISE_TAGLEN));
    assert_int_equal(frame_tx_count(&p.tx), nchunks);
    /* fed in socket-sized pieces */
    for (size_t off = 0; off < p.wire.len;) {
        size_t n = p.wire.len - off < 65536 ? p.wire.len - off : 65536;
        int r;

        assert_true(frame_rx_room(&p.rx) >= FRAME_RX_FEED_MIN);
        assert_int_equal(frame_rx_feed(&p.rx, p.wire.data + off, n), 0);
        off += n;
        r = frame_rx_next(&p.rx, &m);
        assert_int_equal(r, off == p.wire.len ? 1 : 0);
    }
    assert_int_equal(m.raw_len, FRAME_MSG_MAX);
    assert_int_equal(m.body->type, MSGPACK_OBJECT_BIN);
    assert_int_equal(m.body->via.bin.size, blen - 5);
    assert_memory_equal(m.body->via.bin.ptr, body + 5, blen - 5);
    assert_int_equal(frame_rx_count(&p.rx), nchunks);

    /* one byte more is refused by the sender, which stays usable */
    free(body);
    body = big_body(FRAME_MSG_MAX + 1, &blen);
    buf_reset(&p.wire);
    assert_int_equal(frame_encode(&p.tx, "big", 3, body, blen, &p.wire),
                     RM_E_TOOBIG);
    assert_int_equal(p.wire.len, 0);
    assert_int_equal(frame_tx_count(&p.tx), nchunks);
    assert_int_equal(
        frame_encode(&p.tx, "ping", 4, body_small, sizeof(body_small), &p.wire),
        0);
    assert_int_equal(frame_rx_feed(&p.rx, p.wire.data, p.wire.len), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), 1);
    expect_small(&m, "ping");
    free(body);
    pair_free(&p);
}

static void
test_byte_at_a_time(void **state)
{
    struct pair p;
    struct frame_msg m;
    size_t blen;
    uint8_t *body = big_body(100000, &blen); /* two chunks */

    pair_new(&p, NULL, NULL);
    assert_int_equal(frame_encode(&p.tx, "big", 3, body, blen, &p.wire), 0);
    assert_int_equal(
        frame_encode(&p.tx, "ping", 4, body_small, sizeof(body_small), &p.wire),
        0);
    for (size_t i = 0, got = 0; i < p.wire.len; i++) {
        int r;

        assert_int_equal(frame_rx_feed(&p.rx, p.wire.data + i, 1), 0);
        r = frame_rx_next(&p.rx, &m);
        assert_true(r == 0 || r == 1);
        if (r == 1) {
            got++;
            if (got == 1) {
                assert_int_equal(m.raw_len, 100000);
                assert_memory_equal(m.body->via.bin.ptr, body + 5, blen - 5);
            } else {
                assert_int_equal(i, p.wire.len - 1);
                expect_small(&m, "ping");
            }
        }
        if (i == p.wire.len - 1)
            assert_int_equal(got, 2);
    }
    free(body);
    pair_free(&p);
}

static void
test_several_in_one_feed(void **state)
{
    struct pair p;
    struct frame_msg m;
    char t[8];

    pair_new(&p, NULL, NULL);
    for (int i = 0; i < 5; i++) {
        snprintf(t, sizeof(t), "m%d", i);
        assert_int_equal(
            frame_encode(&p.tx, t, 2, body_small, sizeof(body_small), &p.wire),
            0);
    }
    assert_int_equal(frame_rx_feed(&p.rx, p.wire.data, p.wire.len), 0);
    for (int i = 0; i < 5; i++) {
        snprintf(t, sizeof(t), "m%d", i);
        assert_int_equal(frame_rx_next(&p.rx, &m), 1);
        expect_small(&m, t);
    }
    assert_int_equal(frame_rx_next(&p.rx, &m), 0);
    assert_int_equal(frame_rx_count(&p.rx), 5);
    pair_free(&p);
}

/* Feed a, then b and enough zeros to complete any length a claims (a
 * tampered length may ask for more bytes), and read until an answer. */
static int
drain(struct frame_rx *rx, const void *a, size_t alen, const void *b,
      size_t blen)
{
    static const uint8_t zeros[FRAME_RX_FEED_MIN];
    struct frame_msg m;
    int r;

    if ((r = frame_rx_feed(rx, a, alen)) != 0)
        return r;
    if ((r = frame_rx_next(rx, &m)) != 0)
        return r;
    if ((r = frame_rx_feed(rx, b, blen)) != 0)
        return r;
    if ((r = frame_rx_next(rx, &m)) != 0)
        return r;
    if ((r = frame_rx_feed(rx, zeros, sizeof(zeros))) != 0)
        return r;
    return frame_rx_next(rx, &m);
}

static void
test_tamper_every_byte(void **state)
{
    struct chan c;
    struct frame_tx tx;
    struct frame_rx rx;
    struct frame_msg m;
    struct buf w1, w2;
    uint8_t *t;

    chan_new(&c);
    buf_init(&w1, WIRE_MAX);
    buf_init(&w2, WIRE_MAX);
    assert_int_equal(frame_tx_init(&tx, &c.tx, NULL), 0);
    assert_int_equal(
        frame_encode(&tx, "ping", 4, body_small, sizeof(body_small), &w1), 0);
    assert_int_equal(
        frame_encode(&tx, "pong", 4, body_small, sizeof(body_small), &w2), 0);
    t = malloc(w1.len);
    for (size_t i = 0; i < w1.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            struct noise_cipher rcs = c.rrx; /* fresh copy each time */
            int r;

            memcpy(t, w1.data, w1.len);
            t[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(frame_rx_init(&rx, &rcs, NULL), 0);
            r = drain(&rx, t, w1.len, w2.data, w2.len);
            if (i >= 4)
                assert_int_equal(r, RM_E_PROTO);
            else
                assert_true(r == RM_E_PROTO || r == RM_E_TOOBIG);
            /* dead */
            assert_int_equal(frame_rx_next(&rx, &m), RM_E_CLOSED);
            assert_int_equal(frame_rx_feed(&rx, w2.data, w2.len), RM_E_CLOSED);
            frame_rx_cleanup(&rx);
        }
    }
    /* untampered, the same copies decode */
    assert_int_equal(frame_rx_init(&rx, &c.rrx, NULL), 0);
    assert_int_equal(frame_rx_feed(&rx, w1.data, w1.len), 0);
    assert_int_equal(frame_rx_next(&rx, &m), 1);
    expect_small(&m, "ping");
    frame_rx_cleanup(&rx);
    free(t);
    frame_tx_cleanup(&tx);
    buf_cleanup(&w1);
    buf_cleanup(&w2);
    chan_free(&c);
}

static void
test_tamper_big(void **state)
{
    struct pair p;
    struct frame_msg m;
    size_t blen;
    uint8_t *body = big_body(300000, &blen);
    size_t chunkw = 4 + 1 + FRAME_CHUNK_MAX + NOISE_TAGLEN;

    pair_new(&p, NULL, NULL);
    assert_int_equal(frame_encode(&p.tx, "big", 3, body, blen, &p.wire), 0);
    /* a byte in the third chunk */
    p.wire.data[2 * chunkw + 1000] ^= 0x40;
    for (size_t off = 0; off < p.wire.len; off += 60000) {
        size_t n = p.wire.len - off < 60000 ? p.wire.len - off : 60000;
        int r;

        assert_int_equal(frame_rx_feed(&p.rx, p.wire.data + off, n), 0);
        r = frame_rx_next(&p.rx, &m);
        if (r != 0) {
            assert_int_equal(r, RM_E_PROTO);
            break;
        }
    }
    assert_int_equal(frame_rx_count(&p.rx), 2);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_CLOSED);
    free(body);
    pair_free(&p);
}

static void
test_length_limits(void **state)
{
    struct pair p;
    struct frame_msg m;
    struct frame_opts o = {.msg_max = 100};
    static const uint8_t over[] = {0x00, 0x01, 0x00, 0x00}; /* 65536 */
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff};
    static const uint8_t small[] = {0x00, 0x00, 0x00, 0x10}; /* 16 */
    static const uint8_t zero[] = {0x00, 0x00, 0x00, 0x00};
    static const uint8_t over_msg[] = {0x00, 0x00, 0x00, 118}; /* 101 */
    static const uint8_t at_msg[] = {0x00, 0x00, 0x00, 117};   /* 100 */

    /* decided from the 4 bytes alone: no body was ever fed */
    pair_new(&p, NULL, NULL);
    assert_int_equal(frame_rx_feed(&p.rx, over, 3), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), 0);
    assert_int_equal(frame_rx_feed(&p.rx, over + 3, 1), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_TOOBIG);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_CLOSED);
    assert_int_equal(frame_rx_count(&p.rx), 0);
    pair_free(&p);

    pair_new(&p, NULL, NULL);
    assert_int_equal(frame_rx_feed(&p.rx, huge, 4), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_TOOBIG);
    pair_free(&p);

    pair_new(&p, NULL, NULL);
    assert_int_equal(frame_rx_feed(&p.rx, small, 4), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_PROTO);
    pair_free(&p);

    pair_new(&p, NULL, NULL);
    assert_int_equal(frame_rx_feed(&p.rx, zero, 4), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_PROTO);
    pair_free(&p);

    /* a configured message maximum, also from the header */
    pair_new(&p, NULL, &o);
    assert_int_equal(frame_rx_feed(&p.rx, over_msg, 4), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_TOOBIG);
    pair_free(&p);
    pair_new(&p, NULL, &o);
    assert_int_equal(frame_rx_feed(&p.rx, at_msg, 4), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), 0); /* waits for the body */
    pair_free(&p);

    /* the sender with the same maximum refuses what would be too big */
    pair_new(&p, &o, NULL);
    {
        size_t blen;
        uint8_t *body = big_body(101, &blen);

        assert_int_equal(frame_encode(&p.tx, "big", 3, body, blen, &p.wire),
                         RM_E_TOOBIG);
        free(body);
        body = big_body(100, &blen);
        assert_int_equal(frame_encode(&p.tx, "big", 3, body, blen, &p.wire), 0);
        free(body);
    }
    pair_free(&p);
}

static void
test_bad_messages(void **state)
{
    static const struct {
        const char *what;
        uint8_t msg[32];
        size_t len;
    } bad[] = {
        {"version 2",
         {0x83, 0xa1, 'v', 0x02, 0xa1, 't', 0xa1, 'x', 0xa1, 'b', 0xc0},
         11},
        {"version 0",
         {0x83, 0xa1, 'v', 0x00, 0xa1, 't', 0xa1, 'x', 0xa1, 'b', 0xc0},
         11},
        {"version -1",
         {0x83, 0xa1, 'v', 0xff, 0xa1, 't', 0xa1, 'x', 0xa1, 'b', 0xc0},
         11},
        {"version as string",
         {0x83, 0xa1, 'v', 0xa1, '1', 0xa1, 't', 0xa1, 'x', 0xa1, 'b', 0xc0},
         12},
        {"no version", {0x82, 0xa1, 't', 0xa1, 'x', 0xa1, 'b', 0xc0}, 8},
        {"no body", {0x82, 0xa1, 'v', 0x01, 0xa1, 't', 0xa1, 'x'}, 8},
        {"no type", {0x82, 0xa1, 'v', 0x01, 0xa1, 'b', 0xc0}, 7},
        {"type is a bool",
         {0x83, 0xa1, 'v', 0x01, 0xa1, 't', 0xc3, 0xa1, 'b', 0xc0},
         10},
        {"duplicate key",
         {0x84, 0xa1, 'v', 0x01, 0xa1, 't', 0xa1, 'x', 0xa1, 'b', 0xc0, 0xa1,
          'v', 0x01},
         14},
        {"unknown key",
         {0x84, 0xa1, 'v', 0x01, 0xa1, 't', 0xa1, 'x', 0xa1, 'b', 0xc0, 0xa1,
          'z', 0x01},
         14},
        {"integer key",
         {0x83, 0x01, 0x01, 0xa1, 't', 0xa1, 'x', 0xa1, 'b', 0xc0},
         10},
        {"array", {0x93, 0x01, 0xa1, 'x', 0xc0}, 5},
        {"trailing byte",
         {0x83, 0xa1, 'v', 0x01, 0xa1, 't', 0xa1, 'x', 0xa1, 'b', 0xc0, 0xc0},
         12},
        {"truncated", {0x83, 0xa1, 'v', 0x01, 0xa1, 't', 0xa1, 'x', 0xa1}, 9},
        {"huge array claim",
         {0x83, 0xa1, 'v', 0x01, 0xa1, 't', 0xa1, 'x', 0xa1, 'b', 0xdd, 0xff,
          0xff, 0xff, 0xff},
         15},
        {"0xc1", {0xc1}, 1},
        {"empty", {0}, 0},
    };
    static const uint8_t good[] = {0x83, 0xa1, 'v',  0x01, 0xa1, 't',
                                   0xa1, 'x',  0xa1, 'b',  0xc0};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pair p;
        struct frame_msg m;

        pair_new(&p, NULL, NULL);
        assert_int_equal(
            frame_encode_raw(&p.tx, bad[i].msg, bad[i].len, &p.wire), 0);
        assert_int_equal(frame_rx_feed(&p.rx, p.wire.data, p.wire.len), 0);
        if (frame_rx_next(&p.rx, &m) != RM_E_PROTO)
            fail_msg("accepted: %s", bad[i].what);
        assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_CLOSED);
        pair_free(&p);
    }
    {
        struct pair p;
        struct frame_msg m;

        pair_new(&p, NULL, NULL);
        assert_int_equal(frame_encode_raw(&p.tx, good, sizeof(good), &p.wire),
                         0);
        assert_int_equal(frame_rx_feed(&p.rx, p.wire.data, p.wire.len), 0);
        assert_int_equal(frame_rx_next(&p.rx, &m), 1);
        assert_int_equal(m.type_len, 1);
        pair_free(&p);
    }
}

static void
test_bad_chunk_flag(void **state)
{
    struct pair p;
    struct frame_msg m;
    uint8_t pt[3] = {0x02, 0xc0}, ct[64];
    size_t n;

    /* flags are inside the ciphertext: forge with the sender's cipher */
    pair_new(&p, NULL, NULL);
    assert_int_equal(
        noise_cipher_encrypt(&p.c.tx, NULL, 0, pt, 2, ct + 4, 60, &n), 0);
    ct[0] = ct[1] = ct[2] = 0;
    ct[3] = (uint8_t)n;
    assert_int_equal(frame_rx_feed(&p.rx, ct, 4 + n), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_PROTO);
    pair_free(&p);

    /* an empty "more" chunk */
    pair_new(&p, NULL, NULL);
    pt[0] = FRAME_CHUNK_MORE;
    assert_int_equal(
        noise_cipher_encrypt(&p.c.tx, NULL, 0, pt, 1, ct + 4, 60, &n), 0);
    ct[3] = (uint8_t)n;
    assert_int_equal(frame_rx_feed(&p.rx, ct, 4 + n), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_PROTO);
    pair_free(&p);
}

static void
test_replay_and_reorder(void **state)
{
    struct pair p;
    struct frame_msg m;
    struct buf a;

    pair_new(&p, NULL, NULL);
    buf_init(&a, WIRE_MAX);
    assert_int_equal(
        frame_encode(&p.tx, "a", 1, body_small, sizeof(body_small), &a), 0);
    assert_int_equal(
        frame_encode(&p.tx, "b", 1, body_small, sizeof(body_small), &p.wire),
        0);
    /* replayed */
    assert_int_equal(frame_rx_feed(&p.rx, a.data, a.len), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), 1);
    expect_small(&m, "a");
    assert_int_equal(frame_rx_feed(&p.rx, a.data, a.len), 0);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_PROTO);
    frame_rx_cleanup(&p.rx);

    /* reordered (the second before the first) */
    {
        struct chan c;
        struct frame_tx tx;
        struct frame_rx rx;

        chan_new(&c);
        buf_reset(&a);
        buf_reset(&p.wire);
        assert_int_equal(frame_tx_init(&tx, &c.tx, NULL), 0);
        assert_int_equal(frame_rx_init(&rx, &c.rrx, NULL), 0);
        assert_int_equal(
            frame_encode(&tx, "a", 1, body_small, sizeof(body_small), &a), 0);
        assert_int_equal(
            frame_encode(&tx, "b", 1, body_small, sizeof(body_small), &p.wire),
            0);
        assert_int_equal(frame_rx_feed(&rx, p.wire.data, p.wire.len), 0);
        assert_int_equal(frame_rx_next(&rx, &m), RM_E_PROTO);
        frame_rx_cleanup(&rx);
        frame_tx_cleanup(&tx);
        chan_free(&c);
    }
    buf_cleanup(&a);
    frame_tx_cleanup(&p.tx);
    buf_cleanup(&p.wire);
    chan_free(&p.c);
}

/* Send n small messages tx -> rx; return the first non-1 result of next. */
static int
exchange(struct pair *p, int n)
{
    struct frame_msg m;
    int r;

    for (int i = 0; i < n; i++) {
        buf_reset(&p->wire);
        r = frame_encode(&p->tx, "x", 1, body_small, sizeof(body_small),
                         &p->wire);
        if (r != 0)
            return r;
        if ((r = frame_rx_feed(&p->rx, p->wire.data, p->wire.len)) != 0)
            return r;
        if ((r = frame_rx_next(&p->rx, &m)) != 1)
            return r;
    }
    return 1;
}

static void
test_nonce_and_rekey(void **state)
{
    struct pair p;
    struct frame_opts o3 = {.rekey_interval = 3}, o4 = {.rekey_interval = 4};
    uint8_t k0[NOISE_KEYLEN];

    /* nonces progress one per Noise message, in both directions */
    pair_new(&p, &o3, &o3);
    memcpy(k0, p.c.tx.k, sizeof(k0));
    assert_int_equal(exchange(&p, 2), 1);
    assert_int_equal(p.c.tx.n, 2);
    assert_int_equal(p.c.rrx.n, 2);
    assert_memory_equal(p.c.tx.k, k0, sizeof(k0));
    assert_int_equal(exchange(&p, 1), 1); /* third: both rekey */
    assert_int_equal(p.c.tx.n, 3);
    assert_memory_not_equal(p.c.tx.k, k0, sizeof(k0));
    assert_memory_equal(p.c.tx.k, p.c.rrx.k, sizeof(k0));
    assert_int_equal(exchange(&p, 20), 1);
    assert_int_equal(frame_tx_count(&p.tx), 23);
    assert_int_equal(frame_rx_count(&p.rx), 23);
    assert_memory_equal(p.c.tx.k, p.c.rrx.k, sizeof(k0));
    /* a multi-chunk message across rekeys */
    {
        size_t blen;
        uint8_t *body = big_body(FRAME_MSG_MAX, &blen);
        struct frame_msg m;

        buf_reset(&p.wire);
        assert_int_equal(frame_encode(&p.tx, "big", 3, body, blen, &p.wire), 0);
        assert_int_equal(frame_rx_feed(&p.rx, p.wire.data, 60000), 0);
        assert_int_equal(frame_rx_next(&p.rx, &m), 0);
        for (size_t off = 60000; off < p.wire.len; off += 60000) {
            size_t n = p.wire.len - off < 60000 ? p.wire.len - off : 60000;
            assert_int_equal(frame_rx_feed(&p.rx, p.wire.data + off, n), 0);
            assert_int_equal(frame_rx_next(&p.rx, &m),
                             off + n == p.wire.len ? 1 : 0);
        }
        assert_memory_equal(m.body->via.bin.ptr, body + 5, blen - 5);
        assert_int_equal(frame_rx_count(&p.rx), 23 + 17);
        free(body);
    }
    pair_free(&p);

    /* sides that disagree fail exactly at the first rekey of one of them */
    pair_new(&p, &o3, &o4);
    assert_int_equal(exchange(&p, 3), 1);
    assert_int_equal(exchange(&p, 1), RM_E_PROTO);
    assert_int_equal(frame_rx_count(&p.rx), 3);
    pair_free(&p);

    /* the default interval is 2^20 */
    pair_new(&p, NULL, NULL);
    assert_int_equal(p.tx.rekey_interval, (uint64_t)1 << 20);
    pair_free(&p);
}

static void
test_nonce_limit(void **state)
{
    struct pair p;
    struct frame_opts o5 = {.nonce_limit = 5}, o6 = {.nonce_limit = 6};
    struct frame_msg m;
    size_t blen;
    uint8_t *body = big_body(100000, &blen); /* 2 Noise messages */

    pair_new(&p, &o5, &o5);
    assert_int_equal(exchange(&p, 4), 1);
    /* 2 messages would pass the limit: refused whole, nothing spent */
    buf_reset(&p.wire);
    assert_int_equal(frame_encode(&p.tx, "big", 3, body, blen, &p.wire),
                     RM_E_TOOBIG);
    assert_int_equal(p.wire.len, 0);
    assert_int_equal(p.c.tx.n, 4);
    assert_int_equal(exchange(&p, 1), 1);
    assert_int_equal(exchange(&p, 1), RM_E_TOOBIG);
    assert_int_equal(exchange(&p, 1), RM_E_TOOBIG);
    assert_int_equal(p.c.tx.n, 5);
    pair_free(&p);

    /* a sender that goes on past the receiver's limit */
    pair_new(&p, &o6, &o5);
    assert_int_equal(exchange(&p, 5), 1);
    assert_int_equal(exchange(&p, 1), RM_E_PROTO);
    assert_int_equal(frame_rx_next(&p.rx, &m), RM_E_CLOSED);
    pair_free(&p);
    free(body);
}

static void
test_misuse_and_buffers(void **state)
{
    struct chan c;
    struct frame_tx tx;
    struct frame_rx rx;
    struct frame_msg m;
    struct frame_opts bad = {.msg_max = FRAME_MSG_MAX + 1};
    struct noise_cipher empty;
    struct buf small;
    uint8_t *junk;

    chan_new(&c);
    noise_cipher_init(&empty, NULL);
    assert_int_equal(frame_tx_init(&tx, &empty, NULL), RM_E_INVAL);
    frame_tx_cleanup(&tx);
    assert_int_equal(frame_rx_init(&rx, NULL, NULL), RM_E_INVAL);
    frame_rx_cleanup(&rx);
    assert_int_equal(frame_rx_init(&rx, &c.rrx, &bad), RM_E_INVAL);
    frame_rx_cleanup(&rx);

    /* an output buffer too small: nothing spent, nothing written */
    assert_int_equal(frame_tx_init(&tx, &c.tx, NULL), 0);
    buf_init(&small, 30);
    assert_int_equal(
        frame_encode(&tx, "ping", 4, body_small, sizeof(body_small), &small),
        RM_E_TOOBIG);
    assert_int_equal(small.len, 0);
    assert_int_equal(frame_tx_count(&tx), 0);
    /* a body that is not one msgpack value */
    assert_int_equal(frame_encode(&tx, "x", 1, "\xc1", 1, &small), RM_E_INVAL);
    assert_int_equal(frame_encode(&tx, "x", 1, "\xc0\xc0", 2, &small),
                     RM_E_INVAL);
    assert_int_equal(frame_encode(&tx, "x", 1, "", 0, &small), RM_E_INVAL);
    buf_cleanup(&small);

    /* a used cipher is refused (the rekey schedule counts from 0) */
    {
        struct frame_tx tx2;

        assert_int_equal(frame_tx_init(&tx2, &c.tx, NULL), 0);
        buf_init(&small, 1000);
        assert_int_equal(
            frame_encode(&tx2, "p", 1, body_small, sizeof(body_small), &small),
            0);
        frame_tx_cleanup(&tx2);
        assert_int_equal(frame_tx_init(&tx2, &c.tx, NULL), RM_E_INVAL);
        frame_tx_cleanup(&tx2);
        buf_cleanup(&small);
    }
    frame_tx_cleanup(&tx);

    /* the wire buffer is bounded; drained, it takes FRAME_RX_FEED_MIN */
    assert_int_equal(frame_rx_init(&rx, &c.rrx, NULL), 0);
    junk = calloc(1, FRAME_RX_BUF_MAX + 1);
    assert_int_equal(frame_rx_room(&rx), FRAME_RX_BUF_MAX);
    assert_int_equal(frame_rx_feed(&rx, junk, FRAME_RX_BUF_MAX + 1),
                     RM_E_AGAIN);
    assert_int_equal(frame_rx_feed(&rx, junk, 10), 0);
    assert_int_equal(frame_rx_room(&rx), FRAME_RX_BUF_MAX - 10);
    /* zeros: a length of 0 */
    assert_int_equal(frame_rx_next(&rx, &m), RM_E_PROTO);
    assert_int_equal(frame_rx_room(&rx), 0);
    frame_rx_cleanup(&rx);
    free(junk);
    chan_free(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_small),
        cmocka_unit_test(test_roundtrip_1mib),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_several_in_one_feed),
        cmocka_unit_test(test_tamper_every_byte),
        cmocka_unit_test(test_tamper_big),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_bad_messages),
        cmocka_unit_test(test_bad_chunk_flag),
        cmocka_unit_test(test_replay_and_reorder),
        cmocka_unit_test(test_nonce_and_rekey),
        cmocka_unit_test(test_nonce_limit),
        cmocka_unit_test(test_misuse_and_buffers),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
