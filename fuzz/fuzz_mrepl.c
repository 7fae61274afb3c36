/*
 * Fuzz the queue replication decoders (mesh/mrepl.c): what a member
 * sends in rput / rack / rsum / rrec frames. The first input byte picks
 * the decoder (% 4). Invariants, checked with abort(): a decoder returns
 * 0, RM_E_PROTO or -ENOMEM; a record that decodes re-encodes, and its
 * re-encoding decodes to the same bytes again (canonical).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/rm_error.h"
#include "mesh/mrepl.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_put(const uint8_t *p, size_t n)
{
    static struct mrepl_put a;
    static struct mrepl_rec b;
    struct buf o1, o2;
    int r = mrepl_put_decode(p, n, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0)
        return;
    buf_init(&o1, 1 << 20);
    buf_init(&o2, 1 << 20);
    /* The decoder accepts what the encoder would refuse only in fields it
       does not police (arrival sign, say): then skip. */
    if (mrepl_rec_encode(&o1, &a.rec) == 0) {
        CHECK(mrepl_rec_decode(o1.data, o1.len, &b) == 0);
        CHECK(mrepl_rec_encode(&o2, &b) == 0);
        CHECK(o1.len == o2.len && memcmp(o1.data, o2.data, o1.len) == 0);
        CHECK(mrepl_rec_cmp(&a.rec, &b) == 0);
    }
    buf_cleanup(&o1);
    buf_cleanup(&o2);
}

static void
fuzz_ack(const uint8_t *p, size_t n)
{
    struct mrepl_ack a, b;
    struct buf o;
    int r = mrepl_ack_decode(p, n, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0)
        return;
    buf_init(&o, 4096);
    CHECK(mrepl_ack_encode(&o, &a) == 0);
    CHECK(mrepl_ack_decode(o.data, o.len, &b) == 0);
    CHECK(a.seq == b.seq && memcmp(a.key, b.key, MREPL_KEY_LEN) == 0);
    buf_cleanup(&o);
}

static void
fuzz_sum(const uint8_t *p, size_t n)
{
    struct mrepl_sum a, b;
    struct buf o;
    int r = mrepl_sum_decode(p, n, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0)
        return;
    buf_init(&o, 4096);
    CHECK(mrepl_sum_encode(&o, &a) == 0);
    CHECK(mrepl_sum_decode(o.data, o.len, &b) == 0);
    CHECK(a.n == b.n && a.seq == b.seq && a.want == b.want &&
          memcmp(a.digest, b.digest, MREPL_DIGEST) == 0);
    buf_cleanup(&o);
}

static void
fuzz_recmsg(const uint8_t *p, size_t n)
{
    struct mrepl_recmsg a;
    int r = mrepl_recmsg_decode(p, n, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r == 0)
        CHECK(a.len > 0 && a.len <= MREPL_RECON_MAX);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 4) {
    case 0:
        fuzz_put(data + 1, size - 1);
        break;
    case 1:
        fuzz_ack(data + 1, size - 1);
        break;
    case 2:
        fuzz_sum(data + 1, size - 1);
        break;
    default:
        fuzz_recmsg(data + 1, size - 1);
        break;
    }
    return 0;
}
