/*
 * Fuzz the DATA / BDAT machine of smtp_parse. The input is what a client
 * sends after "354". Each input runs under several limit / normalise
 * settings, fed in one go and in pseudo-random pieces (seeded from the
 * input); the two must give identical output bytes and results. Against
 * a reference: data ends exactly at the first CRLF "." CRLF (or a first
 * line "."), never elsewhere (SMTP smuggling), and a clean strict run
 * outputs exactly the unstuffed lines. Invariants are checked with
 * abort().
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node/smtp_parse.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

struct outbuf {
    char *p;
    size_t len;
    size_t cap;
    int fail; /* return this from every call */
    size_t calls;
};

static int
out_cb(void *arg, const char *p, size_t len)
{
    struct outbuf *o = arg;

    CHECK(len > 0);
    o->calls++;
    if (o->fail)
        return o->fail;
    CHECK(o->len + len <= o->cap);
    memcpy(o->p + o->len, p, len);
    o->len += len;
    return 0;
}

struct cfg {
    size_t max_line;
    size_t max_header;
    uint64_t max_size;
    unsigned max_received;
    int normalise;
    int fail;
};

struct result {
    enum smtp_data_res res;
    size_t used;
    struct smtp_data_state ds;
};

static uint32_t
rng_next(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x ? x : 0x9e3779b9u;
    return *s;
}

static void
setup(const struct cfg *c, struct smtp_data_state *ds)
{
    memset(ds, 0, sizeof(*ds));
    ds->max_line = c->max_line;
    ds->max_header = c->max_header;
    ds->max_size = c->max_size;
    ds->max_received = c->max_received;
    ds->normalise = c->normalise;
    smtp_data_init(ds);
}

/* piece 0: all at once; else pieces of 1..piece bytes from the rng */
static void
run_data(const struct cfg *c, const char *in, size_t len, size_t piece,
         uint32_t seed, struct outbuf *o, struct result *r)
{
    size_t off = 0;

    setup(c, &r->ds);
    o->len = 0;
    o->calls = 0;
    o->fail = c->fail;
    r->res = SMTP_DATA_AGAIN;
    while (off < len || off == 0) {
        size_t n = len - off, used = (size_t)-1;
        if (piece != 0) {
            size_t want = 1 + rng_next(&seed) % piece;
            if (want < n)
                n = want;
        }
        r->res = smtp_data_feed(&r->ds, in + off, n, &used, out_cb, o);
        CHECK(used <= n);
        off += used;
        if (r->res == SMTP_DATA_END)
            break;
        CHECK(r->res == SMTP_DATA_AGAIN && used == n);
        if (len == 0)
            break;
    }
    r->used = off;
    if (r->res == SMTP_DATA_END) {
        size_t used = 1;
        /* after END nothing is taken */
        CHECK(smtp_data_feed(&r->ds, in, len, &used, out_cb, o) ==
              SMTP_DATA_END);
        CHECK(used == 0);
    }
}

static void
run_bdat(const struct cfg *c, const char *in, size_t len, size_t piece,
         uint32_t seed, struct outbuf *o, struct result *r)
{
    size_t off = 0;

    setup(c, &r->ds);
    o->len = 0;
    o->calls = 0;
    o->fail = c->fail;
    while (off < len) {
        size_t n = len - off;
        enum smtp_data_res res;
        if (piece != 0) {
            size_t want = 1 + rng_next(&seed) % piece;
            if (want < n)
                n = want;
        }
        res = smtp_bdat_feed(&r->ds, in + off, n, out_cb, o);
        CHECK(res ==
              (smtp_data_ok(&r->ds) ? SMTP_DATA_AGAIN : SMTP_DATA_ERROR));
        off += n;
    }
    r->res = smtp_bdat_end(&r->ds, out_cb, o);
    CHECK(r->res == (smtp_data_ok(&r->ds) ? SMTP_DATA_END : SMTP_DATA_ERROR));
    r->used = off;
}

static void
check_hdr(const char *v)
{
    size_t n = strnlen(v, SMTP_HDR_VALUE_MAX);

    CHECK(n < SMTP_HDR_VALUE_MAX);
    if (n > 0)
        CHECK(v[0] != ' ' && v[n - 1] != ' ');
    for (size_t i = 0; i < n; i++)
        CHECK((unsigned char)v[i] >= 0x20 && (unsigned char)v[i] != 0x7f);
}

static void
check_same(const struct result *a, const struct outbuf *oa,
           const struct result *b, const struct outbuf *ob)
{
    CHECK(a->res == b->res);
    CHECK(a->used == b->used);
    CHECK(oa->len == ob->len);
    CHECK(oa->len == 0 || memcmp(oa->p, ob->p, oa->len) == 0);
    CHECK(a->ds.error == b->ds.error);
    CHECK((a->ds.cb_error != 0) == (b->ds.cb_error != 0));
    CHECK(a->ds.size == b->ds.size);
    CHECK(a->ds.received == b->ds.received);
    CHECK(a->ds.in_header == b->ds.in_header);
    CHECK(a->ds.saw_8bit == b->ds.saw_8bit);
    CHECK(strcmp(a->ds.from, b->ds.from) == 0);
    CHECK(strcmp(a->ds.subject, b->ds.subject) == 0);
    CHECK(strcmp(a->ds.msgid, b->ds.msgid) == 0);
    CHECK(strcmp(a->ds.date, b->ds.date) == 0);
}

/* Output never holds a bare CR or a bare LF. */
static void
check_clean(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r')
            CHECK(i + 1 < n && p[i + 1] == '\n');
        if (p[i] == '\n')
            CHECK(i > 0 && p[i - 1] == '\r');
    }
}

static void
check_result(const struct cfg *c, const struct result *r,
             const struct outbuf *o)
{
    const struct smtp_data_state *ds = &r->ds;

    check_clean(o->p, o->len);
    check_hdr(ds->from);
    check_hdr(ds->subject);
    check_hdr(ds->msgid);
    check_hdr(ds->date);
    CHECK(ds->error >= SMTP_DERR_NONE && ds->error < SMTP_DERR_8BIT);
    if (smtp_data_ok(ds)) {
        CHECK(ds->size == o->len);
        CHECK(ds->size <= ds->max_size);
        CHECK(ds->received <= ds->max_received);
    } else {
        CHECK(o->len <= ds->size);
    }
    if (c->fail)
        CHECK(o->len == 0 && (o->calls == 0) == (ds->cb_error == 0));
    if (c->normalise)
        CHECK(ds->error != SMTP_DERR_BARE_CR && ds->error != SMTP_DERR_BARE_LF);
}

/* Where the data must end: after the first CRLF "." CRLF, or after a
   first line "." (§4.1.1.4); 0 when it does not. */
static size_t
ref_end(const char *p, size_t n)
{
    if (n >= 3 && memcmp(p, ".\r\n", 3) == 0)
        return 3;
    for (size_t i = 0; i + 5 <= n; i++) {
        if (memcmp(p + i, "\r\n.\r\n", 5) == 0)
            return i + 5;
    }
    return 0;
}

static int
has_bare(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
            return 1;
        if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
            return 1;
    }
    return 0;
}

/* Unstuff CRLF lines p[0..n) (§4.5.2) into out. */
static size_t
ref_unstuff(const char *p, size_t n, char *out)
{
    size_t k = 0;
    int bol = 1;

    for (size_t i = 0; i < n; i++) {
        if (!(bol && p[i] == '.'))
            out[k++] = p[i];
        bol = p[i] == '\n';
    }
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t h = 2166136261u;
    struct cfg cfgs[4];
    struct outbuf oa, ob;
    static struct result ra, rb;
    char *in, *ref;
    size_t end;

    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    in = malloc(size ? size : 1);
    oa.cap = ob.cap = 2 * size + 16;
    oa.p = malloc(oa.cap);
    ob.p = malloc(ob.cap);
    ref = malloc(size + 1);
    if (in == NULL || oa.p == NULL || ob.p == NULL || ref == NULL)
        abort();
    memcpy(in, data, size);

    memset(cfgs, 0, sizeof(cfgs));
    /* 0: strict, default limits */
    /* 1: normalising, small limits */
    cfgs[1].normalise = 1;
    cfgs[1].max_line = 3 + h % 90;
    cfgs[1].max_header = 1 + (h >> 8) % 300;
    cfgs[1].max_size = 1 + (h >> 12) % 2000;
    cfgs[1].max_received = 1 + (h >> 20) % 4;
    /* 2: strict, other small limits */
    cfgs[2].max_line = 3 + (h >> 4) % 200;
    cfgs[2].max_header = 1 + (h >> 10) % 100;
    cfgs[2].max_size = 1 + (h >> 16) % 500;
    cfgs[2].max_received = 1 + (h >> 24) % 3;
    /* 3: strict, out always fails */
    cfgs[3].fail = -1;

    end = ref_end(in, size);
    for (int k = 0; k < 4; k++) {
        const struct cfg *c = &cfgs[k];
        size_t piece = (size_t[]){1, 2, 7, 64, 1000}[(h >> (k * 3)) % 5];

        run_data(c, in, size, 0, h, &oa, &ra);
        run_data(c, in, size, piece, h + (uint32_t)k, &ob, &rb);
        check_same(&ra, &oa, &rb, &ob);
        check_result(c, &ra, &oa);

        /* the end is the first CRLF.CRLF, and nothing else */
        if (end != 0) {
            CHECK(ra.res == SMTP_DATA_END && ra.used == end);
        } else {
            CHECK(ra.res == SMTP_DATA_AGAIN && ra.used == size);
        }
        if (end != 0 && !c->normalise) {
            /* bare CR / LF is always caught (unless another error came
               first) */
            if (has_bare(in, end))
                CHECK(ra.ds.error != SMTP_DERR_NONE);
            if (smtp_data_ok(&ra.ds)) {
                size_t n = ref_unstuff(in, end - 3, ref);
                CHECK(n == oa.len && memcmp(ref, oa.p, n) == 0);
            }
        }

        run_bdat(c, in, size, 0, h, &oa, &ra);
        run_bdat(c, in, size, piece, h ^ 0x5bd1e995u, &ob, &rb);
        check_same(&ra, &oa, &rb, &ob);
        check_result(c, &ra, &oa);
        if (!c->normalise) {
            if (has_bare(in, size))
                CHECK(ra.ds.error != SMTP_DERR_NONE);
            if (smtp_data_ok(&ra.ds))
                CHECK(oa.len == size &&
                      (size == 0 || memcmp(oa.p, in, size) == 0));
        }
    }
    free(in);
    free(oa.p);
    free(ob.p);
    free(ref);
    return 0;
}
