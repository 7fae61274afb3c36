/*
 * Fuzz the mesh service's small decoders (mesh/mcodec.c): the credential
 * a peer presents inside the Noise handshake (read before the peer is
 * trusted), the stored membership and a pending invite. The first input
 * byte picks the decoder (% 3). Invariants, checked with abort(): a
 * decoder returns 0, RM_E_PROTO or -ENOMEM; what decodes re-encodes, and
 * the re-encoding decodes to the same values.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/rm_error.h"
#include "mesh/mcodec.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_cred(const uint8_t *p, size_t n)
{
    static struct mcodec_cred a, b;
    struct buf out;
    int r = mcodec_cred_decode(p, n, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0)
        return;
    buf_init(&out, 1 << 20);
    if (a.kind == MCODEC_CRED_MEMBER)
        r = mcodec_cred_member_encode(&out, &a.chain);
    else
        r = mcodec_cred_join_encode(&out, a.token, a.pk, a.name);
    CHECK(r == 0);
    CHECK(mcodec_cred_decode(out.data, out.len, &b) == 0);
    CHECK(a.kind == b.kind);
    if (a.kind == MCODEC_CRED_MEMBER) {
        CHECK(a.chain.n == b.chain.n);
        CHECK(memcmp(a.chain.c, b.chain.c, a.chain.n * sizeof(a.chain.c[0])) ==
              0);
    } else {
        CHECK(strcmp(a.token, b.token) == 0 && strcmp(a.name, b.name) == 0 &&
              memcmp(a.pk, b.pk, sizeof(a.pk)) == 0);
    }
    buf_cleanup(&out);
}

static void
fuzz_self(const uint8_t *p, size_t n)
{
    static struct mcodec_self a, b;
    struct buf out;
    int r = mcodec_self_decode(p, n, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0)
        return;
    buf_init(&out, 1 << 20);
    CHECK(mcodec_self_encode(&out, &a) == 0);
    CHECK(mcodec_self_decode(out.data, out.len, &b) == 0);
    CHECK(memcmp(a.mesh_id, b.mesh_id, sizeof(a.mesh_id)) == 0);
    CHECK(a.record_version == b.record_version && a.chain.n == b.chain.n);
    buf_cleanup(&out);
}

static void
fuzz_invite(const uint8_t *p, size_t n)
{
    char name[MREC_NAME_MAX], name2[MREC_NAME_MAX];
    int64_t e = 0, e2 = 0;
    struct buf out;
    int r = mcodec_invite_decode(p, n, &e, name);

    CHECK(r == 0 || r == RM_E_PROTO || r == -ENOMEM);
    if (r != 0)
        return;
    buf_init(&out, 4096);
    CHECK(mcodec_invite_encode(&out, e, name) == 0);
    CHECK(mcodec_invite_decode(out.data, out.len, &e2, name2) == 0);
    CHECK(e == e2 && strcmp(name, name2) == 0);
    buf_cleanup(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_cred(data + 1, size - 1);
        break;
    case 1:
        fuzz_self(data + 1, size - 1);
        break;
    default:
        fuzz_invite(data + 1, size - 1);
    }
    return 0;
}
