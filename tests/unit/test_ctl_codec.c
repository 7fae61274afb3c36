/*
 * ctl_codec: frame reader, request/response round trips, bad input
 * (truncated, oversize, wrong types, hostile counts), JSON output.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "node/ctl_codec.h"

/* Finish e and copy the frame out (caller frees). */
static char *
frame_of(struct ctl_enc *e, size_t *len)
{
    const char *data;
    char *out;

    assert_int_equal(ctl_enc_finish(e, &data, len), 0);
    out = malloc(*len);
    assert_non_null(out);
    memcpy(out, data, *len);
    ctl_enc_cleanup(e);
    return out;
}

static void
test_request_round_trip(void **state)
{
    struct ctl_enc e;
    struct ctl_request req;
    char err[128], buf[64];
    uint64_t u;
    int64_t i;
    size_t len;
    char *f;

    (void)state;
    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, "queue.list", 3);
    ctl_enc_kstr(&e, "state", "hold");
    ctl_enc_ku64(&e, "uid", 42);
    ctl_enc_ki64(&e, "neg", -7);
    f = frame_of(&e, &len);
    assert_int_equal(((unsigned char)f[0] << 24 | (unsigned char)f[1] << 16 |
                      (unsigned char)f[2] << 8 | (unsigned char)f[3]),
                     len - CTL_HDR_LEN);
    assert_int_equal(ctl_request_decode(&req, f + 4, len - 4, err, sizeof(err)),
                     0);
    assert_string_equal(req.cmd, "queue.list");
    assert_int_equal(ctl_obj_type(req.args), CTL_T_MAP);
    assert_int_equal(ctl_obj_len(req.args), 3);
    assert_int_equal(ctl_obj_get_str(req.args, "state", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "hold");
    assert_int_equal(ctl_obj_get_u64(req.args, "uid", &u), 0);
    assert_int_equal(u, 42);
    assert_int_equal(ctl_obj_get_i64(req.args, "neg", &i), 0);
    assert_int_equal(i, -7);
    assert_int_equal(ctl_obj_get_u64(req.args, "neg", &u), RM_E_INVAL);
    assert_int_equal(ctl_obj_get_u64(req.args, "nope", &u), RM_E_NOTFOUND);
    assert_int_equal(ctl_obj_get_str(req.args, "uid", buf, sizeof(buf)),
                     RM_E_INVAL);
    assert_int_equal(ctl_obj_get_str(req.args, "state", buf, 4), RM_E_TOOBIG);
    ctl_request_cleanup(&req);
    free(f);
}

static void
test_response_round_trip(void **state)
{
    struct ctl_enc e, items;
    struct ctl_response resp;
    const struct ctl_obj *d, *it;
    const char *p;
    char err[128];
    size_t len, n;
    char *f;
    int b;

    (void)state;
    ctl_enc_init(&items, 0);
    for (int k = 0; k < 3; k++) {
        ctl_enc_map(&items, 2);
        ctl_enc_ku64(&items, "uid", (uint64_t)k + 1);
        ctl_enc_str(&items, "data");
        ctl_enc_bin(&items, "a\0b", 3);
    }
    ctl_enc_init(&e, 1);
    ctl_enc_ok(&e);
    ctl_enc_map(&e, 2);
    ctl_enc_kbool(&e, "flag", 1);
    ctl_enc_str(&e, "items");
    ctl_enc_splice(&e, &items, 3);
    ctl_enc_cleanup(&items);
    f = frame_of(&e, &len);
    assert_int_equal(
        ctl_response_decode(&resp, f + 4, len - 4, err, sizeof(err)), 0);
    assert_true(resp.ok);
    d = resp.data;
    assert_int_equal(ctl_obj_bool(ctl_obj_get(d, "flag"), &b), 0);
    assert_true(b);
    it = ctl_obj_get(d, "items");
    assert_int_equal(ctl_obj_type(it), CTL_T_ARRAY);
    assert_int_equal(ctl_obj_len(it), 3);
    assert_int_equal(
        ctl_obj_bytes(ctl_obj_get(ctl_obj_at(it, 2), "data"), &p, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "a\0b", 3);
    assert_null(ctl_obj_at(it, 3));
    ctl_response_cleanup(&resp);
    free(f);

    ctl_enc_init(&e, 1);
    ctl_enc_error(&e, RM_E_NOTFOUND, "no user bob@localhost\n");
    f = frame_of(&e, &len);
    assert_int_equal(
        ctl_response_decode(&resp, f + 4, len - 4, err, sizeof(err)), 0);
    assert_false(resp.ok);
    assert_int_equal(resp.code, RM_E_NOTFOUND);
    /* control bytes are not passed on to a terminal */
    assert_string_equal(resp.error, "no user bob@localhost?");
    ctl_response_cleanup(&resp);
    free(f);
}

static void
test_reader_resumable(void **state)
{
    struct ctl_reader r;
    struct ctl_enc e;
    struct ctl_request req;
    char stream[4096], err[128];
    size_t len = 0, flen, taken, frames = 0;
    const char *p;
    size_t plen;

    (void)state;
    /* three frames back to back, fed one byte at a time */
    for (int k = 0; k < 3; k++) {
        char *f;
        ctl_enc_init(&e, 1);
        ctl_enc_request(&e, k == 1 ? "user.list" : "status", 0);
        f = frame_of(&e, &flen);
        memcpy(stream + len, f, flen);
        len += flen;
        free(f);
    }
    ctl_reader_init(&r, 0);
    for (size_t i = 0; i < len; i++) {
        assert_int_equal(ctl_reader_feed(&r, stream + i, 1, &taken), 0);
        assert_int_equal(taken, 1);
        while (ctl_reader_frame(&r, &p, &plen) == 1) {
            assert_int_equal(
                ctl_request_decode(&req, p, plen, err, sizeof(err)), 0);
            assert_string_equal(req.cmd, frames == 1 ? "user.list" : "status");
            ctl_request_cleanup(&req);
            ctl_reader_consume(&r);
            frames++;
        }
    }
    assert_int_equal(frames, 3);
    assert_int_equal(ctl_reader_frame(&r, &p, &plen), 0);

    /* all at once: feed stops after the first whole frame */
    assert_int_equal(ctl_reader_feed(&r, stream, len, &taken), 0);
    assert_true(taken <= len);
    frames = 0;
    for (size_t off = taken;;) {
        while (ctl_reader_frame(&r, &p, &plen) == 1) {
            ctl_reader_consume(&r);
            frames++;
        }
        if (off == len)
            break;
        assert_int_equal(ctl_reader_feed(&r, stream + off, len - off, &taken),
                         0);
        off += taken;
    }
    assert_int_equal(frames, 3);
    ctl_reader_cleanup(&r);
}

static void
test_reader_oversize(void **state)
{
    struct ctl_reader r;
    unsigned char hdr[4] = {0x01, 0x00, 0x00, 0x01}; /* 16 MiB + 1 */
    const char *p;
    char *space;
    size_t plen, taken, n;

    (void)state;
    ctl_reader_init(&r, 0);
    assert_int_equal(ctl_reader_feed(&r, hdr, 4, &taken), RM_E_TOOBIG);
    assert_int_equal(ctl_reader_frame(&r, &p, &plen), RM_E_TOOBIG);
    assert_int_equal(ctl_reader_space(&r, &space, &n), RM_E_TOOBIG);
    /* nothing was allocated for the announced payload */
    assert_true(r.cap <= 64 * 1024);
    ctl_reader_cleanup(&r);

    /* a smaller configured maximum */
    ctl_reader_init(&r, 100);
    hdr[0] = 0;
    hdr[1] = 0;
    hdr[2] = 0;
    hdr[3] = 101;
    assert_int_equal(ctl_reader_feed(&r, hdr, 4, &taken), RM_E_TOOBIG);
    ctl_reader_cleanup(&r);
    assert_int_equal(ctl_frame_len(hdr, 101, &plen), 0);
    assert_int_equal(plen, 101);
    assert_int_equal(ctl_frame_len(hdr, 100, &plen), RM_E_TOOBIG);
}

static void
test_reader_space(void **state)
{
    struct ctl_reader r;
    struct ctl_enc e;
    char *space, *f;
    const char *p;
    size_t n, flen, plen;

    (void)state;
    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, "status", 0);
    f = frame_of(&e, &flen);
    ctl_reader_init(&r, 0);
    assert_int_equal(ctl_reader_space(&r, &space, &n), 0);
    assert_true(n >= flen);
    memcpy(space, f, flen);
    ctl_reader_commit(&r, flen);
    assert_int_equal(ctl_reader_space(&r, &space, &n), RM_E_AGAIN);
    assert_int_equal(ctl_reader_frame(&r, &p, &plen), 1);
    assert_int_equal(plen, flen - 4);
    ctl_reader_consume(&r);
    assert_int_equal(ctl_reader_space(&r, &space, &n), 0);
    ctl_reader_cleanup(&r);
    free(f);
}

/* Decoding must fail with RM_E_PROTO and a reason containing want. */
static void
bad_request(const void *data, size_t len, const char *want)
{
    struct ctl_request req;
    char err[128] = "";
    int r = ctl_request_decode(&req, data, len, err, sizeof(err));

    if (r != RM_E_PROTO || strstr(err, want) == NULL)
        fail_msg("want RM_E_PROTO \"%s\", got %d \"%s\"", want, r, err);
    assert_null(req.priv);
}

static void
test_bad_requests(void **state)
{
    (void)state;
    bad_request("", 0, "truncated");
    bad_request("\x81\xa1v", 3, "truncated");
    bad_request("\xc1", 1, "invalid msgpack byte");
    bad_request("\x90", 1, "not a map");
    bad_request("\x80", 1, "\"v\"");
    bad_request("\x81\xa1v\x02", 4, "unsupported protocol version 2");
    bad_request("\x81\xa1v\xa1\x31", 5, "\"v\"");
    bad_request("\x81\xa1v\x01", 4, "\"cmd\"");
    bad_request("\x82\xa1v\x01\xa3\x63md\x05", 9, "\"cmd\"");
    bad_request("\x82\xa1v\x01\xa3\x63md\xa0", 9, "empty");
    bad_request("\x82\xa1v\x01\xa3\x63md\xa2X!", 11, "character");
    bad_request("\x83\xa1v\x01\xa3\x63md\xa1s\xa4\x61rgs\x90", 16,
                "\"args\" is not a map");
    /* trailing bytes after the map */
    bad_request("\x82\xa1v\x01\xa3\x63md\xa1s\x00", 11, "after the message");
    /* hostile counts: 2^32-1 elements in a 5-byte input */
    bad_request("\xdd\xff\xff\xff\xff", 5, "truncated");
    bad_request("\xdf\xff\xff\xff\xff", 5, "truncated");
    bad_request("\xdb\xff\xff\xff\xff", 5, "truncated");
    bad_request("\xc9\xff\xff\xff\xff\x01", 6, "truncated");
    /* too deep */
    {
        unsigned char deep[64];
        memset(deep, 0x91, sizeof(deep));
        deep[63] = 0xc0;
        bad_request(deep, sizeof(deep), "nested deeper");
    }
    /* the shortest good request, for contrast */
    {
        struct ctl_request req;
        char err[64];
        assert_int_equal(ctl_request_decode(&req,
                                            "\x82\xa1v\x01\xa3\x63md\xa1s", 10,
                                            err, sizeof(err)),
                         0);
        assert_string_equal(req.cmd, "s");
        assert_int_equal(ctl_obj_type(req.args), CTL_T_MAP);
        assert_int_equal(ctl_obj_len(req.args), 0);
        ctl_request_cleanup(&req);
    }
}

static void
test_bad_responses(void **state)
{
    struct ctl_response resp;
    char err[128];

    (void)state;
    assert_int_equal(
        ctl_response_decode(&resp, "\x81\xa1v\x01", 4, err, sizeof(err)),
        RM_E_PROTO);
    assert_non_null(strstr(err, "\"ok\""));
    /* ok:false without error text */
    assert_int_equal(ctl_response_decode(&resp, "\x82\xa1v\x01\xa2ok\xc2", 8,
                                         err, sizeof(err)),
                     RM_E_PROTO);
    /* ok:false with text, code missing: RM_E_PROTO stands in */
    assert_int_equal(ctl_response_decode(&resp,
                                         "\x83\xa1v\x01\xa2ok\xc2"
                                         "\xa5\x65rror\xa1x",
                                         16, err, sizeof(err)),
                     0);
    assert_false(resp.ok);
    assert_int_equal(resp.code, RM_E_PROTO);
    assert_string_equal(resp.error, "x");
    ctl_response_cleanup(&resp);
    /* ok:true without data: nil */
    assert_int_equal(ctl_response_decode(&resp, "\x82\xa1v\x01\xa2ok\xc3", 8,
                                         err, sizeof(err)),
                     0);
    assert_true(resp.ok);
    assert_int_equal(ctl_obj_type(resp.data), CTL_T_NIL);
    ctl_response_cleanup(&resp);
}

static void
test_json(void **state)
{
    struct ctl_enc e;
    struct ctl_response resp;
    struct buf b;
    char err[64];
    size_t len;
    char *f;

    (void)state;
    ctl_enc_init(&e, 1);
    ctl_enc_ok(&e);
    ctl_enc_map(&e, 7);
    ctl_enc_kstr(&e, "s", "a\"b\\c\n\x01\x7f");
    ctl_enc_str(&e, "utf8");
    ctl_enc_str(&e, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    ctl_enc_str(&e, "bad");
    ctl_enc_strn(&e, "x\xff\xc3(\xed\xa0\x80y", 8);
    ctl_enc_ki64(&e, "n", -3);
    ctl_enc_str(&e, "a");
    ctl_enc_array(&e, 3);
    ctl_enc_nil(&e);
    ctl_enc_bool(&e, 0);
    ctl_enc_u64(&e, UINT64_MAX);
    ctl_enc_u64(&e, 5); /* a non-string key */
    ctl_enc_bin(&e, "\\Seen", 5);
    ctl_enc_str(&e, "e");
    ctl_enc_map(&e, 0);
    f = frame_of(&e, &len);
    assert_int_equal(
        ctl_response_decode(&resp, f + 4, len - 4, err, sizeof(err)), 0);
    buf_init(&b, 1 << 20);
    assert_int_equal(ctl_obj_json(resp.data, &b, 0), 0);
    assert_string_equal(b.data,
                        "{\"s\":\"a\\\"b\\\\c\\n\\u0001\\u007f\","
                        "\"utf8\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
                        "\"bad\":\"x\\ufffd\\ufffd(\\ufffd\\ufffd\\ufffdy\","
                        "\"n\":-3,\"a\":[null,false,18446744073709551615],"
                        "\"5\":\"\\\\Seen\",\"e\":{}}");
    buf_reset(&b);
    assert_int_equal(ctl_obj_json(ctl_obj_get(resp.data, "a"), &b, 1), 0);
    assert_string_equal(b.data, "[\n  null,\n  false,\n  "
                                "18446744073709551615\n]\n");
    buf_cleanup(&b);
    /* a full output buffer is an error, not a crash */
    buf_init(&b, 10);
    assert_int_equal(ctl_obj_json(resp.data, &b, 0), RM_E_TOOBIG);
    buf_cleanup(&b);
    ctl_response_cleanup(&resp);
    free(f);
}

static void
test_encoder_limits(void **state)
{
    struct ctl_enc e;
    const char *data;
    size_t len;
    char *big;

    (void)state;
    big = malloc(CTL_FRAME_MAX);
    assert_non_null(big);
    memset(big, 'x', CTL_FRAME_MAX);
    ctl_enc_init(&e, 1);
    ctl_enc_ok(&e);
    ctl_enc_bin(&e, big, CTL_FRAME_MAX);
    ctl_enc_u64(&e, 1); /* ignored after the error */
    assert_int_equal(ctl_enc_finish(&e, &data, &len), RM_E_TOOBIG);
    ctl_enc_cleanup(&e);
    free(big);
    /* a plain encoder cannot be finished as a frame */
    ctl_enc_init(&e, 0);
    ctl_enc_nil(&e);
    assert_int_equal(ctl_enc_finish(&e, &data, &len), RM_E_INVAL);
    ctl_enc_cleanup(&e);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_response_round_trip),
        cmocka_unit_test(test_reader_resumable),
        cmocka_unit_test(test_reader_oversize),
        cmocka_unit_test(test_reader_space),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_bad_responses),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_encoder_limits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
