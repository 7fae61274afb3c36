/*
 * Fuzz the control-socket codec. The first byte picks the mode:
 *   even: the rest is one payload, decoded as a request and a response,
 *         and whatever decodes is walked and written as JSON;
 *   odd:  the rest is a byte stream of frames, fed to a frame reader in
 *         chunks of (second byte % 31 + 1) bytes, each frame decoded.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "node/ctl_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
walk(const struct ctl_obj *o, int depth)
{
    const struct ctl_obj *k, *v;
    const char *p;
    size_t len;
    uint64_t u;
    int64_t i;
    int b;

    if (depth > CTL_DEPTH_MAX + 2)
        abort(); /* the validator bounds depth */
    (void)ctl_obj_bytes(o, &p, &len);
    (void)ctl_obj_u64(o, &u);
    (void)ctl_obj_i64(o, &i);
    (void)ctl_obj_bool(o, &b);
    switch (ctl_obj_type(o)) {
    case CTL_T_ARRAY:
        for (size_t n = 0; n < ctl_obj_len(o); n++)
            walk(ctl_obj_at(o, n), depth + 1);
        break;
    case CTL_T_MAP:
        for (size_t n = 0; n < ctl_obj_len(o); n++) {
            if (ctl_obj_pair(o, n, &k, &v) != 0)
                abort();
            walk(k, depth + 1);
            walk(v, depth + 1);
        }
        break;
    case CTL_T_NIL:
    case CTL_T_BOOL:
    case CTL_T_INT:
    case CTL_T_FLOAT:
    case CTL_T_STR:
    case CTL_T_BIN:
    case CTL_T_EXT:
        break;
    }
}

static void
payload(const char *p, size_t len)
{
    struct ctl_request req;
    struct ctl_response resp;
    struct buf json;
    char err[256], s[64];
    uint64_t u;

    buf_init(&json, 1 << 20);
    if (ctl_request_decode(&req, p, len, err, sizeof(err)) == 0) {
        walk(req.args, 0);
        (void)ctl_obj_get_str(req.args, "address", s, sizeof(s));
        (void)ctl_obj_get_u64(req.args, "uid", &u);
        (void)ctl_obj_json(req.args, &json, 1);
        ctl_request_cleanup(&req);
    }
    buf_reset(&json);
    if (ctl_response_decode(&resp, p, len, err, sizeof(err)) == 0) {
        walk(resp.data, 0);
        (void)ctl_obj_json(resp.data, &json, 0);
        ctl_response_cleanup(&resp);
    }
    buf_cleanup(&json);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ctl_reader r;
    size_t chunk, off;

    if (size < 2)
        return 0;
    if ((data[0] & 1) == 0) {
        payload((const char *)data + 1, size - 1);
        return 0;
    }
    chunk = (size_t)(data[1] % 31) + 1;
    ctl_reader_init(&r, 1 << 16);
    for (off = 2; off < size;) {
        const char *p;
        size_t len, taken, n = size - off < chunk ? size - off : chunk;
        int rc = ctl_reader_feed(&r, data + off, n, &taken);
        if (rc < 0)
            break;
        off += taken;
        while ((rc = ctl_reader_frame(&r, &p, &len)) == 1) {
            payload(p, len);
            ctl_reader_consume(&r);
        }
        if (rc < 0)
            break;
        if (taken == 0 && n > 0)
            abort(); /* no frame waiting, yet no progress */
    }
    ctl_reader_cleanup(&r);
    return 0;
}
