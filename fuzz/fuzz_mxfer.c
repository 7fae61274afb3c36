/*
 * Fuzz the mesh's mail transfer decoders (mesh/mxfer.c): what a member
 * sends in xfer / xdat / xack / xres frames. The first input byte picks
 * the decoder (% 4). Invariants, checked with abort(): a decoder returns
 * 0, RM_E_PROTO or -ENOMEM; what decodes re-encodes, and the re-encoding
 * decodes to the same values.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/rm_error.h"
#include "mesh/mxfer.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_begin(const uint8_t *p, size_t n)
{
    static struct mxfer_begin a, b;
    struct buf out;
    int r = mxfer_begin_decode(p, n, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0)
        return;
    buf_init(&out, 1 << 20);
    CHECK(mxfer_begin_encode(&out, &a) == 0);
    CHECK(mxfer_begin_decode(out.data, out.len, &b) == 0);
    CHECK(a.x == b.x && a.size == b.size && a.nrcpts == b.nrcpts);
    CHECK(strcmp(a.id, b.id) == 0 && strcmp(a.mail_from, b.mail_from) == 0);
    for (unsigned i = 0; i < a.nrcpts; i++)
        CHECK(strcmp(a.rcpts[i].addr, b.rcpts[i].addr) == 0 &&
              a.rcpts[i].notify == b.rcpts[i].notify);
    buf_cleanup(&out);
}

static void
fuzz_data(const uint8_t *p, size_t n)
{
    struct mxfer_data d;
    int r = mxfer_data_decode(p, n, &d);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r == 0)
        CHECK(d.len > 0 && d.len <= MXFER_CHUNK_MAX);
}

static void
fuzz_ack(const uint8_t *p, size_t n)
{
    struct mxfer_ack a, b;
    struct buf out;
    int r = mxfer_ack_decode(p, n, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0)
        return;
    buf_init(&out, 4096);
    CHECK(mxfer_ack_encode(&out, &a) == 0);
    CHECK(mxfer_ack_decode(out.data, out.len, &b) == 0);
    CHECK(a.x == b.x && a.off == b.off);
    buf_cleanup(&out);
}

static void
fuzz_res(const uint8_t *p, size_t n)
{
    static struct mxfer_res a, b;
    struct buf out;
    int r = mxfer_res_decode(p, n, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0)
        return;
    buf_init(&out, 1 << 20);
    CHECK(mxfer_res_encode(&out, &a) == 0);
    CHECK(mxfer_res_decode(out.data, out.len, &b) == 0);
    CHECK(a.x == b.x && a.n == b.n);
    for (unsigned i = 0; i < a.n; i++)
        CHECK(a.r[i].outcome == b.r[i].outcome &&
              strcmp(a.r[i].status, b.r[i].status) == 0 &&
              strcmp(a.r[i].diag, b.r[i].diag) == 0);
    buf_cleanup(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 4) {
    case 0:
        fuzz_begin(data + 1, size - 1);
        break;
    case 1:
        fuzz_data(data + 1, size - 1);
        break;
    case 2:
        fuzz_ack(data + 1, size - 1);
        break;
    default:
        fuzz_res(data + 1, size - 1);
    }
    return 0;
}
