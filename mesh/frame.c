/*
 * frame: transport framing of the mesh secure channel (see frame.h for the
 * wire format and the contract).
 *
 * msgpack-c's unpacker allocates an array or map's element storage from
 * the count in its header, before the elements arrive: a 5-byte input
 * claiming 2^32 elements would ask for ~100 GB. So every logical message is
 * first walked by mpack_check() (common/, as for the control socket),
 * which checks the structure, the nesting depth and that no container
 * claims more elements than there are bytes left; only then is it handed
 * to msgpack_unpack().
 */
#include <errno.h>
#include <string.h>

#include <msgpack.h>

#include "common/rm_error.h"
#include "common/mpack_check.h"
#include "mesh/frame.h"

/* ---- validation ----------------------------------------------------- */

static uint64_t
frame_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- common --------------------------------------------------------- */

static int
frame_opts_get(const struct frame_opts *opts, size_t *msg_max,
               uint64_t *rekey_interval, uint64_t *nonce_limit)
{
    *msg_max = FRAME_MSG_MAX;
    *rekey_interval = FRAME_REKEY_INTERVAL;
    *nonce_limit = FRAME_NONCE_LIMIT;
    if (opts == NULL)
        return 0;
    if (opts->msg_max > FRAME_MSG_MAX || opts->nonce_limit > UINT64_MAX - 1)
        return RM_E_INVAL;
    if (opts->msg_max)
        *msg_max = opts->msg_max;
    if (opts->rekey_interval)
        *rekey_interval = opts->rekey_interval;
    if (opts->nonce_limit)
        *nonce_limit = opts->nonce_limit;
    return 0;
}

/* Only a CipherState fresh from the split: both sides count messages
 * from nonce 0, which is what keeps the rekeys in lock-step. */
static int
frame_cipher_ok(const struct noise_cipher *cs)
{
    return cs != NULL && noise_cipher_has_key(cs) && cs->n == 0;
}

/* After each Noise message: rekey every rekey_interval-th one (Noise
 * section 11.3 leaves the schedule to the application; counting messages
 * needs no negotiation). */
static int
frame_count(struct noise_cipher *cs, uint64_t *count, uint64_t interval)
{
    (*count)++;
    if (*count % interval == 0)
        return noise_cipher_rekey(cs);
    return 0;
}

/* ---- sender --------------------------------------------------------- */

int
frame_tx_init(struct frame_tx *tx, struct noise_cipher *cs,
              const struct frame_opts *opts)
{
    int r;

    if (tx == NULL)
        return RM_E_INVAL;
    memset(tx, 0, sizeof(*tx));
    tx->dead = 1;
    if (!frame_cipher_ok(cs))
        return RM_E_INVAL;
    r = frame_opts_get(opts, &tx->msg_max, &tx->rekey_interval,
                       &tx->nonce_limit);
    if (r != 0)
        return r;
    tx->cs = cs;
    buf_init(&tx->scratch, tx->msg_max);
    tx->dead = 0;
    return 0;
}

int
frame_encode_raw(struct frame_tx *tx, const void *msg, size_t len,
                 struct buf *out)
{
    const uint8_t *m = msg;
    size_t nchunks, total, start, off = 0;
    int r;

    if (tx == NULL || out == NULL || (msg == NULL && len != 0))
        return RM_E_INVAL;
    if (tx->dead)
        return RM_E_CLOSED;
    if (len > tx->msg_max)
        return RM_E_TOOBIG;
    nchunks = len == 0 ? 1 : (len + FRAME_CHUNK_MAX - 1) / FRAME_CHUNK_MAX;
    if (nchunks > tx->nonce_limit - tx->count)
        return RM_E_TOOBIG;
    total = nchunks * (FRAME_HDRLEN + 1 + NOISE_TAGLEN) + len;
    /* All the room up front, so that nothing can fail once the first
     * nonce has been used. */
    r = buf_reserve(out, total);
    if (r != 0)
        return r;
    start = out->len;
    for (size_t i = 0; i < nchunks; i++) {
        size_t clen = len - off < FRAME_CHUNK_MAX ? len - off : FRAME_CHUNK_MAX;
        uint8_t *p = (uint8_t *)out->data + out->len;
        size_t ctlen = 1 + clen + NOISE_TAGLEN, olen;

        p[0] = (uint8_t)(ctlen >> 24);
        p[1] = (uint8_t)(ctlen >> 16);
        p[2] = (uint8_t)(ctlen >> 8);
        p[3] = (uint8_t)ctlen;
        p[4] = i + 1 < nchunks ? FRAME_CHUNK_MORE : FRAME_CHUNK_FINAL;
        if (clen)
            memcpy(p + 5, m + off, clen);
        r = noise_cipher_encrypt(tx->cs, NULL, 0, p + 4, 1 + clen, p + 4, ctlen,
                                 &olen);
        if (r == 0)
            r = frame_count(tx->cs, &tx->count, tx->rekey_interval);
        if (r != 0) {
            /* A nonce may be spent: this direction cannot go on. */
            tx->dead = 1;
            out->len = start;
            out->data[out->len] = '\0';
            return r;
        }
        out->len += FRAME_HDRLEN + olen;
        off += clen;
    }
    out->data[out->len] = '\0';
    return 0;
}

struct frame_pack {
    struct buf *b;
    int err;
};

static int
frame_pack_write(void *data, const char *p, size_t len)
{
    struct frame_pack *pk = data;
    int r = buf_append(pk->b, p, len);

    if (r != 0 && pk->err == 0)
        pk->err = r;
    return r;
}

/* Pack {"v": 1, "t": type, "b": body} into tx->scratch and send it. */
static int
frame_encode_any(struct frame_tx *tx, const char *type, size_t tlen,
                 uint64_t type_num, const void *body, size_t body_len,
                 struct buf *out)
{
    struct frame_pack fp;
    msgpack_packer pk;
    int r;

    if (tx == NULL || out == NULL || body == NULL)
        return RM_E_INVAL;
    if (tx->dead)
        return RM_E_CLOSED;
    if (mpack_check(body, body_len, NULL, 0) != 0)
        return RM_E_INVAL;
    buf_reset(&tx->scratch);
    fp.b = &tx->scratch;
    fp.err = 0;
    msgpack_packer_init(&pk, &fp, frame_pack_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_unsigned_int(&pk, FRAME_VERSION);
    msgpack_pack_str_with_body(&pk, "t", 1);
    if (type != NULL)
        msgpack_pack_str_with_body(&pk, type, tlen);
    else
        msgpack_pack_uint64(&pk, type_num);
    msgpack_pack_str_with_body(&pk, "b", 1);
    frame_pack_write(&fp, body, body_len);
    if (fp.err != 0) {
        buf_reset(&tx->scratch);
        return fp.err;
    }
    r = frame_encode_raw(tx, tx->scratch.data, tx->scratch.len, out);
    buf_reset(&tx->scratch);
    return r;
}

int
frame_encode(struct frame_tx *tx, const char *type, size_t tlen,
             const void *body, size_t body_len, struct buf *out)
{
    if (type == NULL)
        return RM_E_INVAL;
    return frame_encode_any(tx, type, tlen, 0, body, body_len, out);
}

int
frame_encode_num(struct frame_tx *tx, uint64_t type, const void *body,
                 size_t body_len, struct buf *out)
{
    return frame_encode_any(tx, NULL, 0, type, body, body_len, out);
}

uint64_t
frame_tx_count(const struct frame_tx *tx)
{
    return tx->count;
}

void
frame_tx_cleanup(struct frame_tx *tx)
{
    if (tx == NULL)
        return;
    buf_cleanup(&tx->scratch);
    tx->cs = NULL;
    tx->dead = 1;
}

/* ---- receiver ------------------------------------------------------- */

int
frame_rx_init(struct frame_rx *rx, struct noise_cipher *cs,
              const struct frame_opts *opts)
{
    int r;

    if (rx == NULL)
        return RM_E_INVAL;
    memset(rx, 0, sizeof(*rx));
    rx->dead = 1;
    buf_init(&rx->in, FRAME_RX_BUF_MAX);
    buf_init(&rx->msg, 0);
    if (!frame_cipher_ok(cs))
        return RM_E_INVAL;
    r = frame_opts_get(opts, &rx->msg_max, &rx->rekey_interval,
                       &rx->nonce_limit);
    if (r != 0)
        return r;
    buf_init(&rx->msg, rx->msg_max);
    if (!msgpack_zone_init(&rx->zone, 2048))
        return -ENOMEM;
    rx->cs = cs;
    rx->dead = 0;
    return 0;
}

static int
frame_rx_fail(struct frame_rx *rx, int r)
{
    rx->dead = 1;
    return r;
}

/* Drop the message last returned by frame_rx_next(). */
static void
frame_rx_release(struct frame_rx *rx)
{
    if (!rx->msg_done)
        return;
    buf_reset(&rx->msg);
    msgpack_zone_clear(&rx->zone);
    rx->msg_done = 0;
}

int
frame_rx_feed(struct frame_rx *rx, const void *data, size_t len)
{
    int r;

    if (rx == NULL || (data == NULL && len != 0))
        return RM_E_INVAL;
    if (rx->dead)
        return RM_E_CLOSED;
    frame_rx_release(rx);
    if (rx->pos > 0) {
        memmove(rx->in.data, rx->in.data + rx->pos, rx->in.len - rx->pos);
        rx->in.len -= rx->pos;
        rx->pos = 0;
    }
    if (len > rx->in.max - rx->in.len)
        return RM_E_AGAIN;
    r = buf_append(&rx->in, data, len);
    if (r != 0)
        return frame_rx_fail(rx, r);
    return 0;
}

size_t
frame_rx_room(const struct frame_rx *rx)
{
    if (rx->dead)
        return 0;
    return rx->in.max - (rx->in.len - rx->pos);
}

/* The reassembled message: one map {"v": 1, "t": str|uint, "b": any}. */
static int
frame_rx_decode(struct frame_rx *rx, struct frame_msg *out)
{
    const char *data = rx->msg.data;
    size_t off = 0;
    msgpack_object obj;
    unsigned seen = 0;

    if (rx->msg.len == 0 || mpack_check(data, rx->msg.len, NULL, 0) != 0)
        return RM_E_PROTO;
    if (msgpack_unpack(data, rx->msg.len, &off, &rx->zone, &obj) !=
            MSGPACK_UNPACK_SUCCESS ||
        obj.type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    memset(out, 0, sizeof(*out));
    for (uint32_t i = 0; i < obj.via.map.size; i++) {
        const msgpack_object *k = &obj.via.map.ptr[i].key;
        const msgpack_object *v = &obj.via.map.ptr[i].val;
        unsigned bit;

        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != 1)
            return RM_E_PROTO;
        switch (k->via.str.ptr[0]) {
        case 'v':
            bit = 1;
            if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                v->via.u64 != FRAME_VERSION)
                return RM_E_PROTO;
            out->version = v->via.u64;
            break;
        case 't':
            bit = 2;
            if (v->type == MSGPACK_OBJECT_STR) {
                out->type_is_str = 1;
                out->type = v->via.str.ptr;
                out->type_len = v->via.str.size;
            } else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                out->type_num = v->via.u64;
            } else {
                return RM_E_PROTO;
            }
            break;
        case 'b':
            bit = 4;
            rx->body = *v;
            out->body = &rx->body;
            break;
        default:
            return RM_E_PROTO;
        }
        if (seen & bit)
            return RM_E_PROTO;
        seen |= bit;
    }
    if (seen != 7)
        return RM_E_PROTO;
    out->raw = (const uint8_t *)data;
    out->raw_len = rx->msg.len;
    return 0;
}

int
frame_rx_next(struct frame_rx *rx, struct frame_msg *out)
{
    int r;

    if (rx == NULL || out == NULL)
        return RM_E_INVAL;
    if (rx->dead)
        return RM_E_CLOSED;
    frame_rx_release(rx);
    for (;;) {
        uint8_t *p = (uint8_t *)rx->in.data + rx->pos;
        size_t avail = rx->in.len - rx->pos, len, plen;

        if (avail < FRAME_HDRLEN)
            return 0;
        len = (size_t)frame_be(p, FRAME_HDRLEN);
        /* Decided from the length alone, before the ciphertext. */
        if (len > NOISE_MSG_MAX)
            return frame_rx_fail(rx, RM_E_TOOBIG);
        if (len < FRAME_WIRE_MIN)
            return frame_rx_fail(rx, RM_E_PROTO);
        if (len - FRAME_WIRE_MIN > rx->msg_max - rx->msg.len)
            return frame_rx_fail(rx, RM_E_TOOBIG);
        if (rx->count >= rx->nonce_limit)
            return frame_rx_fail(rx, RM_E_PROTO);
        if (avail - FRAME_HDRLEN < len)
            return 0;
        p += FRAME_HDRLEN;
        r = noise_cipher_decrypt(rx->cs, NULL, 0, p, len, p, len, &plen);
        if (r != 0)
            return frame_rx_fail(rx, RM_E_PROTO);
        rx->pos += FRAME_HDRLEN + len;
        r = frame_count(rx->cs, &rx->count, rx->rekey_interval);
        if (r != 0)
            return frame_rx_fail(rx, r);
        /* A sender only marks full chunks "more"; an empty one would let
         * a peer spin us for nothing. */
        if (p[0] != FRAME_CHUNK_FINAL &&
            (p[0] != FRAME_CHUNK_MORE || plen == 1))
            return frame_rx_fail(rx, RM_E_PROTO);
        r = buf_append(&rx->msg, p + 1, plen - 1);
        if (r != 0)
            return frame_rx_fail(rx, r);
        if (p[0] == FRAME_CHUNK_MORE)
            continue;
        r = frame_rx_decode(rx, out);
        if (r != 0) {
            memset(out, 0, sizeof(*out));
            return frame_rx_fail(rx, r);
        }
        rx->msg_done = 1;
        return 1;
    }
}

uint64_t
frame_rx_count(const struct frame_rx *rx)
{
    return rx->count;
}

void
frame_rx_cleanup(struct frame_rx *rx)
{
    if (rx == NULL)
        return;
    buf_cleanup(&rx->in);
    buf_cleanup(&rx->msg);
    if (rx->cs != NULL)
        msgpack_zone_destroy(&rx->zone);
    rx->cs = NULL;
    rx->dead = 1;
}
