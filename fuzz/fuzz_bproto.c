/*
 * Fuzz the MAPI bridge's wire codec (bridge/proto.c): the node decodes
 * requests from any client that completed the handshake, the DLL decodes
 * the node's responses inside other programs.
 *
 * Input: one selector byte, then the body bytes. Selector < 0x80: decode
 * a request. Otherwise: decode a response to op (selector & 0x7f) %
 * BPROTO_OP_COUNT.
 *
 * Invariants, checked with abort(): a decoder returns 0, RM_E_PROTO,
 * RM_E_NOTFOUND (requests only, and then with the id), RM_E_TOOBIG or
 * -ENOMEM, holds no memory after an error and says why; a request that
 * failed with its id readable can be answered with the reason as the
 * error message; whatever decodes re-encodes, the re-encoding decodes,
 * and encoding that again gives the same bytes (the canonical form).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/proto.h"
#include "common/rm_error.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_same(const struct buf *a, const struct buf *b)
{
    CHECK(a->len == b->len);
    CHECK(memcmp(a->data, b->data, a->len) == 0);
}

static void
check_why(const char *why)
{
    CHECK(why[0] != '\0');
    CHECK(memchr(why, '\0', BPROTO_WHY_MAX) != NULL);
}

static void
fuzz_req(const uint8_t *p, size_t n)
{
    static struct bproto_req a, b;
    struct buf e1, e2;
    int r = bproto_req_decode(p, n, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == RM_E_NOTFOUND || r == RM_E_TOOBIG ||
          r == -ENOMEM);
    if (r != 0) {
        CHECK(a.mem == NULL);
        check_why(a.why);
        CHECK(r != RM_E_NOTFOUND || a.has_id);
        if (a.has_id && r != -ENOMEM) {
            /* What the node answers. */
            buf_init(&e1, BPROTO_MSG_MAX);
            CHECK(bproto_res_encode_err(&e1, a.id,
                                        r == RM_E_NOTFOUND
                                            ? BPROTO_E_UNSUPPORTED
                                            : BPROTO_E_BAD_REQUEST,
                                        a.why) == 0);
            buf_cleanup(&e1);
        }
        bproto_req_cleanup(&a);
        return;
    }
    CHECK(a.has_id);
    buf_init(&e1, BPROTO_MSG_MAX);
    buf_init(&e2, BPROTO_MSG_MAX);
    CHECK(bproto_req_encode(&e1, &a) == 0);
    CHECK(bproto_req_decode(e1.data, e1.len, &b) == 0);
    CHECK(a.id == b.id && a.op == b.op);
    CHECK(bproto_req_encode(&e2, &b) == 0);
    check_same(&e1, &e2);
    bproto_req_cleanup(&a);
    bproto_req_cleanup(&b);
    buf_cleanup(&e1);
    buf_cleanup(&e2);
}

static void
fuzz_res(enum bproto_op op, const uint8_t *p, size_t n)
{
    static struct bproto_res a, b;
    struct buf e1, e2;
    int r = bproto_res_decode(p, n, op, &a);

    CHECK(r == 0 || r == RM_E_PROTO || r == RM_E_TOOBIG || r == -ENOMEM);
    if (r != 0) {
        CHECK(a.mem == NULL);
        check_why(a.why);
        bproto_res_cleanup(&a);
        return;
    }
    CHECK(a.op == op);
    buf_init(&e1, BPROTO_MSG_MAX);
    buf_init(&e2, BPROTO_MSG_MAX);
    CHECK(bproto_res_encode(&e1, &a) == 0);
    CHECK(bproto_res_decode(e1.data, e1.len, op, &b) == 0);
    CHECK(a.id == b.id && a.ok == b.ok);
    CHECK(a.ok || a.err.code == b.err.code);
    CHECK(bproto_res_encode(&e2, &b) == 0);
    check_same(&e1, &e2);
    bproto_res_cleanup(&a);
    bproto_res_cleanup(&b);
    buf_cleanup(&e1);
    buf_cleanup(&e2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] < 0x80)
        fuzz_req(data + 1, size - 1);
    else
        fuzz_res((enum bproto_op)((data[0] & 0x7f) % BPROTO_OP_COUNT), data + 1,
                 size - 1);
    return 0;
}
