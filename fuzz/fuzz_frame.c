/*
 * Fuzz the secure channel's frame receiver (mesh/frame.c). The receiver
 * decrypts with a fixed key (so the committed corpus of genuine frames
 * stays valid) and rekeys every FUZZ_REKEY messages, so both the
 * decryption, the reassembly of chunks, the rekey schedule and the msgpack
 * decoding are reached. The first input byte picks how the rest is fed: 0
 * in one piece, otherwise in pieces of that many bytes. Invariants are
 * checked with abort():
 *   - frame_rx_next() returns 1, 0, RM_E_PROTO or RM_E_TOOBIG;
 *   - after an error every call returns RM_E_CLOSED;
 *   - a message returned has version 1, a type and a body, and its raw
 *     bytes are at most FRAME_MSG_MAX;
 *   - after frame_rx_next() returned 0 at least FRAME_RX_FEED_MIN bytes
 *     can be fed; the message count never goes down.
 * The seed corpus (corpus/fuzz_frame/) was made with the same key and
 * schedule by frame_encode(): single messages, several in a row, a
 * multi-chunk message, a rekey crossing.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/rm_error.h"
#include "mesh/frame.h"
#include "mesh/noise.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

#define FUZZ_REKEY 2

static const uint8_t fuzz_key[NOISE_KEYLEN] = {
    0x66, 0x75, 0x7a, 0x7a, 0x5f, 0x66, 0x72, 0x61, 0x6d, 0x65, 1,  2,  3,
    4,    5,    6,    7,    8,    9,    10,   11,   12,   13,   14, 15, 16};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct frame_opts o = {.rekey_interval = FUZZ_REKEY};
    struct noise_cipher cs;
    struct frame_rx rx;
    struct frame_msg m;
    size_t piece, off = 1;
    uint64_t count = 0;
    int dead = 0;

    if (size < 1)
        return 0;
    piece = data[0] == 0 ? size : data[0];
    noise_cipher_init(&cs, fuzz_key);
    CHECK(frame_rx_init(&rx, &cs, &o) == 0);
    while (off < size && !dead) {
        size_t n = size - off < piece ? size - off : piece;
        int r = frame_rx_feed(&rx, data + off, n);

        if (r == RM_E_AGAIN) {
            /* only possible while messages are still waiting: drain */
            CHECK(n > FRAME_RX_FEED_MIN);
            n = FRAME_RX_FEED_MIN;
            r = frame_rx_feed(&rx, data + off, n);
        }
        CHECK(r == 0);
        off += n;
        for (;;) {
            r = frame_rx_next(&rx, &m);
            CHECK(frame_rx_count(&rx) >= count);
            count = frame_rx_count(&rx);
            if (r == 1) {
                CHECK(m.version == FRAME_VERSION);
                CHECK(m.body != NULL);
                CHECK(m.raw != NULL && m.raw_len <= FRAME_MSG_MAX);
                CHECK(!m.type_is_str || m.type != NULL || m.type_len == 0);
                continue;
            }
            if (r == 0) {
                CHECK(frame_rx_room(&rx) >= FRAME_RX_FEED_MIN);
                break;
            }
            CHECK(r == RM_E_PROTO || r == RM_E_TOOBIG);
            CHECK(frame_rx_next(&rx, &m) == RM_E_CLOSED);
            CHECK(frame_rx_feed(&rx, data, 1) == RM_E_CLOSED);
            CHECK(frame_rx_room(&rx) == 0);
            dead = 1;
            break;
        }
    }
    frame_rx_cleanup(&rx);
    noise_cipher_cleanup(&cs);
    return 0;
}
