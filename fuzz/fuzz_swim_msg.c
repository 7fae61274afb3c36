/*
 * Fuzz the decoders of SWIM messages and push/pull state (mesh/mrec.c).
 * The first input byte picks the decoder and its bound: bit 0 clear, a
 * SWIM message; set, push/pull state with room for (byte >> 1) entries
 * (0: SWIM_MEMBERS_MAX). The rest is the decoder's input. Invariants are
 * checked with abort():
 *   - a decoder returns 0 or RM_E_PROTO (-ENOMEM aside); a failed SWIM
 *     decode leaves the message zeroed, a failed push/pull decode reports
 *     no entries;
 *   - a decoded message is one swim_receive() would take (type, states,
 *     names, counts in range); push/pull entries are no more than the room
 *     given;
 *   - what decodes re-encodes, decodes again to equal fields, and encodes
 *     again to the same bytes.
 * The seed corpus (corpus/fuzz_swim_msg/) was made by the encoders: every
 * message type with and without piggybacked updates, push/pull state
 * empty, small and with a reply wanted.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "mesh/mrec.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

#define BUFMAX (1024 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
name_ok(const char *s, int empty_ok)
{
    const char *nul = memchr(s, '\0', SWIM_NAME_MAX);

    return nul != NULL && (empty_ok || nul != s);
}

static void
fuzz_swim(const uint8_t *p, size_t n)
{
    struct swim_msg m, d;
    struct buf b1, b2;
    int r = mrec_swim_decode_bytes(p, n, &m);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0) {
        const uint8_t *z = (const uint8_t *)&m;

        for (size_t i = 0; i < sizeof(m); i++)
            CHECK(z[i] == 0);
        return;
    }
    CHECK((unsigned)m.type <= SWIM_MSG_GOSSIP);
    CHECK(name_ok(m.from, 0));
    CHECK(name_ok(m.target,
                  m.type != SWIM_MSG_PING && m.type != SWIM_MSG_PING_REQ));
    CHECK(m.n_updates <= SWIM_PIGGYBACK_MAX);
    for (unsigned i = 0; i < m.n_updates; i++) {
        CHECK(name_ok(m.updates[i].name, 0));
        CHECK(name_ok(m.updates[i].from, 0));
        CHECK((unsigned)m.updates[i].state <= SWIM_LEFT);
    }
    buf_init(&b1, BUFMAX);
    buf_init(&b2, BUFMAX);
    CHECK(mrec_swim_encode(&b1, &m) == 0);
    CHECK(mrec_swim_decode_bytes(b1.data, b1.len, &d) == 0);
    CHECK(memcmp(&m, &d, sizeof(m)) == 0);
    CHECK(mrec_swim_encode(&b2, &d) == 0);
    CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
    buf_cleanup(&b1);
    buf_cleanup(&b2);
}

static void
fuzz_pp(const uint8_t *p, size_t n, size_t max)
{
    struct mrec_pp_entry *e = calloc(max, sizeof(*e));
    struct mrec_pp_entry *d = calloc(max, sizeof(*d));
    struct buf b1, b2;
    size_t cnt = 99, cnt2;
    int want = 99, want2;
    int r;

    CHECK(e != NULL && d != NULL);
    r = mrec_pp_decode_bytes(p, n, &want, e, max, &cnt);
    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0) {
        CHECK(cnt == 0 && want == 0);
        goto out;
    }
    CHECK(want == 0 || want == 1);
    CHECK(cnt <= max && cnt <= SWIM_MEMBERS_MAX);
    for (size_t i = 0; i < cnt; i++) {
        CHECK(name_ok(e[i].name, 0));
        CHECK((unsigned)e[i].state <= SWIM_LEFT);
    }
    buf_init(&b1, BUFMAX);
    buf_init(&b2, BUFMAX);
    CHECK(mrec_pp_encode(&b1, want, e, cnt) == 0);
    CHECK(mrec_pp_decode_bytes(b1.data, b1.len, &want2, d, max, &cnt2) == 0);
    CHECK(want2 == want && cnt2 == cnt);
    CHECK(cnt == 0 || memcmp(e, d, cnt * sizeof(*e)) == 0);
    CHECK(mrec_pp_encode(&b2, want2, d, cnt2) == 0);
    CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
    buf_cleanup(&b1);
    buf_cleanup(&b2);
out:
    free(e);
    free(d);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if ((data[0] & 1) == 0) {
        fuzz_swim(data + 1, size - 1);
    } else {
        size_t max = data[0] >> 1;

        fuzz_pp(data + 1, size - 1, max == 0 ? SWIM_MEMBERS_MAX : max);
    }
    return 0;
}
