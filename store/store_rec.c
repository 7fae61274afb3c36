/*
 * Record codec: a small bounds-checked binary format (see store_int.h).
 * Decoding never trusts the stored bytes: every read is checked against
 * the value's length, strings must end in their NUL, enums must be in
 * range and the record must be consumed exactly. Anything else is
 * RM_E_CORRUPT, so a torn or garbled value can never crash a reader.
 */
#include <errno.h>
#include <string.h>

#include "common/rm_error.h"
#include "store/store_int.h"

#define REC_TAG_MSG 'M'
#define REC_TAG_Q 'Q'
#define REC_TAG_MBOX 'B'
#define REC_TAG_MAIL 'L'
#define REC_TAG_USER 'U'
#define REC_VERSION 1

/* ---- writer ---------------------------------------------------------- */

struct rec_w {
    struct buf *b;
    int err;
};

static void
rec_put(struct rec_w *w, const void *p, size_t n)
{
    if (w->err == 0)
        w->err = buf_append(w->b, p, n);
}

static void
rec_u8(struct rec_w *w, uint8_t v)
{
    rec_put(w, &v, 1);
}

static void
rec_u32(struct rec_w *w, uint32_t v)
{
    uint8_t b[4];

    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    rec_put(w, b, sizeof(b));
}

static void
rec_u64(struct rec_w *w, uint64_t v)
{
    uint8_t b[8];

    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    rec_put(w, b, sizeof(b));
}

static void
rec_str(struct rec_w *w, const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n > STORE__REC_MAX) {
        w->err = RM_E_TOOBIG;
        return;
    }
    rec_u32(w, (uint32_t)n);
    rec_put(w, s ? s : "", n + 1);
}

static void
rec_begin(struct rec_w *w, struct buf *b, uint8_t tag)
{
    w->b = b;
    w->err = 0;
    buf_reset(b);
    rec_u8(w, tag);
    rec_u8(w, REC_VERSION);
}

/* ---- reader ---------------------------------------------------------- */

struct rec_r {
    const uint8_t *p;
    size_t len, off;
    int bad;
};

static const uint8_t *
rec_take(struct rec_r *r, size_t n)
{
    const uint8_t *p;

    if (r->bad || n > r->len - r->off) {
        r->bad = 1;
        return NULL;
    }
    p = r->p + r->off;
    r->off += n;
    return p;
}

static uint8_t
rec_get_u8(struct rec_r *r)
{
    const uint8_t *p = rec_take(r, 1);

    return p ? p[0] : 0;
}

static uint32_t
rec_get_u32(struct rec_r *r)
{
    const uint8_t *p = rec_take(r, 4);
    uint32_t v = 0;

    if (p == NULL)
        return 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t
rec_get_u64(struct rec_r *r)
{
    const uint8_t *p = rec_take(r, 8);
    uint64_t v = 0;

    if (p == NULL)
        return 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static const char *
rec_get_str(struct rec_r *r)
{
    uint32_t n = rec_get_u32(r);
    const uint8_t *p;

    if (r->bad || (size_t)n >= r->len - r->off) {
        r->bad = 1;
        return "";
    }
    p = rec_take(r, (size_t)n + 1);
    /* The NUL must be where the length says and nowhere before it, or a
       reader would see a different string than the writer stored. */
    if (p == NULL || p[n] != '\0' || memchr(p, '\0', n) != NULL) {
        r->bad = 1;
        return "";
    }
    return (const char *)p;
}

static void
rec_open(struct rec_r *r, const void *p, size_t len, uint8_t tag)
{
    r->p = p;
    r->len = p ? len : 0;
    r->off = 0;
    r->bad = 0;
    if (rec_get_u8(r) != tag || rec_get_u8(r) != REC_VERSION)
        r->bad = 1;
}

static int
rec_close(struct rec_r *r)
{
    if (r->bad || r->off != r->len)
        return RM_E_CORRUPT;
    return 0;
}

/* ---- records --------------------------------------------------------- */

int
store__rec_msg_encode(struct buf *b, const struct store__msgrec *m)
{
    struct rec_w w;

    rec_begin(&w, b, REC_TAG_MSG);
    rec_u32(&w, m->refcount);
    rec_u32(&w, m->nchunks);
    rec_u64(&w, m->size);
    rec_u64(&w, (uint64_t)m->arrival);
    rec_u8(&w, m->ret);
    rec_u8(&w, m->body_type);
    rec_u8(&w, m->smtputf8);
    rec_str(&w, m->mail_from);
    rec_str(&w, m->envid);
    rec_str(&w, m->client);
    rec_str(&w, m->hdr_from);
    rec_str(&w, m->hdr_subject);
    rec_str(&w, m->hdr_msgid);
    rec_str(&w, m->hdr_date);
    return w.err;
}

int
store__rec_msg_decode(const void *p, size_t len, struct store__msgrec *m)
{
    struct rec_r r;

    rec_open(&r, p, len, REC_TAG_MSG);
    m->refcount = rec_get_u32(&r);
    m->nchunks = rec_get_u32(&r);
    m->size = rec_get_u64(&r);
    m->arrival = (int64_t)rec_get_u64(&r);
    m->ret = rec_get_u8(&r);
    m->body_type = rec_get_u8(&r);
    m->smtputf8 = rec_get_u8(&r);
    m->mail_from = rec_get_str(&r);
    m->envid = rec_get_str(&r);
    m->client = rec_get_str(&r);
    m->hdr_from = rec_get_str(&r);
    m->hdr_subject = rec_get_str(&r);
    m->hdr_msgid = rec_get_str(&r);
    m->hdr_date = rec_get_str(&r);
    if (m->ret > STORE_RET_HDRS || m->body_type > STORE_BODY_BINARYMIME ||
        m->smtputf8 > 1)
        r.bad = 1;
    return rec_close(&r);
}

int
store__rec_q_encode(struct buf *b, const struct store__qrec *q)
{
    struct rec_w w;

    rec_begin(&w, b, REC_TAG_Q);
    rec_u8(&w, q->state);
    rec_u8(&w, q->route);
    rec_u32(&w, q->notify);
    rec_u32(&w, q->attempts);
    rec_u64(&w, (uint64_t)q->next_try);
    rec_str(&w, q->addr);
    rec_str(&w, q->mailbox);
    rec_str(&w, q->orcpt);
    rec_str(&w, q->last_error);
    return w.err;
}

int
store__rec_q_decode(const void *p, size_t len, struct store__qrec *q)
{
    struct rec_r r;

    rec_open(&r, p, len, REC_TAG_Q);
    q->state = rec_get_u8(&r);
    q->route = rec_get_u8(&r);
    q->notify = rec_get_u32(&r);
    q->attempts = rec_get_u32(&r);
    q->next_try = (int64_t)rec_get_u64(&r);
    q->addr = rec_get_str(&r);
    q->mailbox = rec_get_str(&r);
    q->orcpt = rec_get_str(&r);
    q->last_error = rec_get_str(&r);
    if (q->state > STORE_Q_BOUNCED || q->route > STORE_ROUTE_REMOTE)
        r.bad = 1;
    return rec_close(&r);
}

int
store__rec_mbox_encode(struct buf *b, const struct store__mboxrec *x)
{
    struct rec_w w;

    rec_begin(&w, b, REC_TAG_MBOX);
    rec_u32(&w, x->uidvalidity);
    rec_u32(&w, x->uidnext);
    rec_u32(&w, x->count);
    rec_u64(&w, x->bytes);
    return w.err;
}

int
store__rec_mbox_decode(const void *p, size_t len, struct store__mboxrec *x)
{
    struct rec_r r;

    rec_open(&r, p, len, REC_TAG_MBOX);
    x->uidvalidity = rec_get_u32(&r);
    x->uidnext = rec_get_u32(&r);
    x->count = rec_get_u32(&r);
    x->bytes = rec_get_u64(&r);
    if (x->uidvalidity == 0 || x->uidnext == 0)
        r.bad = 1;
    return rec_close(&r);
}

int
store__rec_mail_encode(struct buf *b, const struct store__mailrec *x)
{
    struct rec_w w;

    rec_begin(&w, b, REC_TAG_MAIL);
    rec_u32(&w, x->flags);
    rec_u64(&w, (uint64_t)x->internaldate);
    rec_u64(&w, x->size);
    rec_str(&w, x->qid);
    rec_str(&w, x->prefix);
    rec_str(&w, x->mail_from);
    rec_str(&w, x->hdr_from);
    rec_str(&w, x->hdr_subject);
    rec_str(&w, x->hdr_msgid);
    rec_str(&w, x->hdr_date);
    return w.err;
}

int
store__rec_mail_decode(const void *p, size_t len, struct store__mailrec *x)
{
    struct rec_r r;

    rec_open(&r, p, len, REC_TAG_MAIL);
    x->flags = rec_get_u32(&r);
    x->internaldate = (int64_t)rec_get_u64(&r);
    x->size = rec_get_u64(&r);
    x->qid = rec_get_str(&r);
    x->prefix = rec_get_str(&r);
    x->mail_from = rec_get_str(&r);
    x->hdr_from = rec_get_str(&r);
    x->hdr_subject = rec_get_str(&r);
    x->hdr_msgid = rec_get_str(&r);
    x->hdr_date = rec_get_str(&r);
    if (!r.bad && !store__qid_valid(x->qid))
        r.bad = 1;
    return rec_close(&r);
}

int
store__rec_user_encode(struct buf *b, const struct store__userrec *u)
{
    struct rec_w w;

    rec_begin(&w, b, REC_TAG_USER);
    rec_u64(&w, (uint64_t)u->created);
    rec_str(&w, u->pwhash);
    return w.err;
}

int
store__rec_user_decode(const void *p, size_t len, struct store__userrec *u)
{
    struct rec_r r;

    rec_open(&r, p, len, REC_TAG_USER);
    u->created = (int64_t)rec_get_u64(&r);
    u->pwhash = rec_get_str(&r);
    return rec_close(&r);
}

/* ---- keys ------------------------------------------------------------ */

static void
be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint32_t
store__be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

size_t
store__qkey(uint8_t out[STORE__QKEY_LEN], const char *qid, uint32_t rcpt)
{
    memcpy(out, qid, STORE_QID_LEN);
    be32_put(out + STORE_QID_LEN, rcpt);
    return STORE__QKEY_LEN;
}

size_t
store__bodykey(uint8_t out[STORE__QKEY_LEN], const char *qid, uint32_t chunk)
{
    return store__qkey(out, qid, chunk);
}

size_t
store__duekey(uint8_t out[STORE__DUEKEY_LEN], int64_t next_try, const char *qid,
              uint32_t rcpt)
{
    /* Flipping the sign bit makes big-endian byte order equal to signed
       numeric order, so the index sorts by time even before 1970. */
    uint64_t t = (uint64_t)next_try ^ (UINT64_C(1) << 63);

    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(t >> (56 - 8 * i));
    store__qkey(out + 8, qid, rcpt);
    return STORE__DUEKEY_LEN;
}

int64_t
store__duekey_time(const uint8_t *p)
{
    uint64_t t = 0;

    for (int i = 0; i < 8; i++)
        t = (t << 8) | p[i];
    return (int64_t)(t ^ (UINT64_C(1) << 63));
}

int
store__mailkey(uint8_t out[STORE__MAILKEY_MAX], const char *mailbox,
               uint32_t uid, size_t *len)
{
    size_t n = strlen(mailbox);

    if (n == 0 || n > STORE__NAME_MAX)
        return RM_E_INVAL;
    memcpy(out, mailbox, n);
    out[n] = '\0';
    be32_put(out + n + 1, uid);
    *len = n + 5;
    return 0;
}

int
store__qid_valid(const char *s)
{
    for (int i = 0; i < STORE_QID_LEN; i++) {
        char c = s[i];

        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')))
            return 0;
    }
    return s[STORE_QID_LEN] == '\0';
}
