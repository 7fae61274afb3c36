/*
 * mime_parse: see mime_parse.h. A stored message read for the MAPI
 * bridge (RFC 5322, RFC 2045-2047, RFC 2183, RFC 2231).
 *
 * The input is whatever a remote mailer sent, so every rule here is
 * tolerant and every loop is bounded by the input: the parser slices
 * into the input and copies only what it gives out (bounded strings,
 * the body text). Header fields are unfolded into a temporary copy,
 * read, and freed. The multipart tree is walked by recursion limited to
 * MIME_PARSE_DEPTH_MAX; a part's parsed header parameters live only in
 * a helper's frame, not across the recursion.
 *
 * Allocation failure is sticky in the context (c->rc): helpers return
 * early once it is set and mime_parse() reports -ENOMEM.
 */
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/rm_error.h"
#include "node/mime_parse.h"

/* Temporary buffers hold at most a few times the input; no limit of
   their own beyond what size_t arithmetic allows. */
#define MP_BIG (SIZE_MAX / 8)
#define MP_PARAMS_MAX 64     /* parameters read per field */
#define MP_SECTIONS_MAX 1000 /* RFC 2231 §3 continuation sections */
#define MP_CHARSET_MAX 63    /* a charset name we pass to iconv */
/* RFC 2046 §5.1.1 allows 70 characters; take any that fits a line. */
#define MP_BOUNDARY_MAX 998
#define MP_CHUNK 8192 /* arena chunk */
#define MP_BLOCK 4096 /* decoded octets handed to a sink at once */
#define MP_CONV_OUT 4096
/* Header text decoded for a field of max octets reads at most this much
   of its raw value: max * MP_TEXT_RAW + MP_TEXT_RAW_MIN. */
#define MP_TEXT_RAW 16
#define MP_TEXT_RAW_MIN 65536

#define MP_REPL "\xEF\xBF\xBD" /* U+FFFD */

#define MP_TRY(x)                                                              \
    do {                                                                       \
        int mp_rc_ = (x);                                                      \
        if (mp_rc_ != 0)                                                       \
            return mp_rc_;                                                     \
    } while (0)

/* ---- context and arena ----------------------------------------------- */

struct mp_chunk {
    struct mp_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

/* One candidate for the body text. */
struct mp_leaf {
    int found;
    size_t off, len;
    enum mime_parse_cte cte;
    char charset[MP_CHARSET_MAX + 1];
};

struct mp_ctx {
    struct mime_parse_msg *m;
    const unsigned char *in;
    size_t len;
    int rc; /* 0 or -ENOMEM, sticky */
    struct mp_chunk *arena;
    unsigned nparts;
    struct mime_parse_att *atts; /* MIME_PARSE_ATTS_MAX, in the arena */
    unsigned n_atts;
    struct mp_leaf plain, html;
};

static void
mp_defect(struct mp_ctx *c, const char *why)
{
    if (c->m->why[0] == '\0')
        snprintf(c->m->why, sizeof(c->m->why), "%s", why);
}

static void
mp_arena_free(struct mp_chunk *k)
{
    while (k != NULL) {
        struct mp_chunk *next = k->next;

        free(k);
        k = next;
    }
}

static void *
mp_alloc(struct mp_ctx *c, size_t n)
{
    struct mp_chunk *k = c->arena;
    void *p;

    if (c->rc != 0)
        return NULL;
    n = (n + 15) & ~(size_t)15;
    if (k == NULL || k->cap - k->used < n) {
        size_t cap = n > MP_CHUNK ? n : MP_CHUNK;

        k = malloc(sizeof(*k) + cap);
        if (k == NULL) {
            c->rc = -ENOMEM;
            return NULL;
        }
        k->next = c->arena;
        k->used = 0;
        k->cap = cap;
        c->arena = k;
    }
    p = (unsigned char *)k->data + k->used;
    k->used += n;
    return p;
}

/* A NUL-terminated copy in the arena; "" (static) on failure, so the
   struct never holds NULL strings. */
static const char *
mp_sdup(struct mp_ctx *c, const char *s, size_t n)
{
    char *p;

    if (n == 0)
        return "";
    p = mp_alloc(c, n + 1);
    if (p == NULL)
        return "";
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static const char *
mp_bdup(struct mp_ctx *c, const struct buf *b)
{
    return mp_sdup(c, b->data != NULL ? b->data : "", b->len);
}

/* A buf operation's failure: only memory can fail (MP_BIG). */
static void
mp_check(struct mp_ctx *c, int rc)
{
    if (rc != 0 && c->rc == 0)
        c->rc = -ENOMEM;
}

/* ---- characters ------------------------------------------------------ */

static int
mp_is_wsp(unsigned char ch)
{
    return ch == ' ' || ch == '\t';
}

static int
mp_hex(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static unsigned char
mp_lower(unsigned char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + 32) : ch;
}

/*
 * The UTF-8 sequence at p (RFC 3629 §4): its length when well formed
 * (*bad 0), else the length of the maximal ill-formed subpart to replace
 * by one U+FFFD (Unicode §3.9, "U+FFFD substitution of maximal
 * subparts"), at least 1 (*bad 1).
 */
static size_t
mp_utf8_seq(const unsigned char *p, size_t avail, int *bad)
{
    unsigned char ch = p[0], lo = 0x80, hi = 0xBF;
    size_t n;

    *bad = 0;
    if (ch < 0x80)
        return 1;
    if (ch >= 0xC2 && ch <= 0xDF) {
        n = 2;
    } else if (ch >= 0xE0 && ch <= 0xEF) {
        n = 3;
        if (ch == 0xE0)
            lo = 0xA0;
        else if (ch == 0xED)
            hi = 0x9F;
    } else if (ch >= 0xF0 && ch <= 0xF4) {
        n = 4;
        if (ch == 0xF0)
            lo = 0x90;
        else if (ch == 0xF4)
            hi = 0x8F;
    } else {
        *bad = 1;
        return 1;
    }
    for (size_t i = 1; i < n; i++) {
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;

        if (i >= avail || p[i] < l || p[i] > h) {
            *bad = 1;
            return i;
        }
    }
    return n;
}

static int
mp_utf8_valid(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        int bad;

        if (p[i] < 0x80) {
            i++;
            continue;
        }
        i += mp_utf8_seq(p + i, n - i, &bad);
        if (bad)
            return 0;
    }
    return 1;
}

size_t
mime_parse_utf8_cut(const char *s, size_t len, size_t max)
{
    size_t n;

    if (len <= max)
        return len;
    n = max;
    /* s[n] is the first octet left out: when it continues a sequence,
       that sequence is left out whole. */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* Octets read as UTF-8: well-formed sequences copied, each maximal
   ill-formed subpart U+FFFD, NUL dropped. */
static int
mp_put_utf8(struct buf *out, const unsigned char *p, size_t n)
{
    size_t run = 0, i = 0;

    while (i < n) {
        size_t k;
        int bad;

        if (p[i] != 0 && p[i] < 0x80) {
            i++;
            continue;
        }
        if (p[i] == 0) {
            MP_TRY(buf_append(out, p + run, i - run));
            run = ++i;
            continue;
        }
        k = mp_utf8_seq(p + i, n - i, &bad);
        if (bad) {
            MP_TRY(buf_append(out, p + run, i - run));
            MP_TRY(buf_append(out, MP_REPL, 3));
            run = i + k;
        }
        i += k;
    }
    return buf_append(out, p + run, n - run);
}

/* Octets read as Latin-1 (ISO 8859-1 maps onto U+0000..U+00FF). */
static int
mp_put_latin1(struct buf *out, const unsigned char *p, size_t n)
{
    size_t run = 0;

    for (size_t i = 0; i < n; i++) {
        char two[2];

        if (p[i] != 0 && p[i] < 0x80)
            continue;
        MP_TRY(buf_append(out, p + run, i - run));
        run = i + 1;
        if (p[i] == 0)
            continue;
        two[0] = (char)(0xC0 | (p[i] >> 6));
        two[1] = (char)(0x80 | (p[i] & 0x3F));
        MP_TRY(buf_append(out, two, 2));
    }
    return buf_append(out, p + run, n - run);
}

/* Header text that is not encoded: UTF-8 unless the field is not valid
   UTF-8, then Latin-1. */
static int
mp_put_raw(struct buf *out, const unsigned char *p, size_t n, int latin1)
{
    return latin1 ? mp_put_latin1(out, p, n) : mp_put_utf8(out, p, n);
}

/* ---- charsets -------------------------------------------------------- */

/*
 * An iconv descriptor from the charset to UTF-8, or (iconv_t)-1 when the
 * text is to be read as UTF-8: UTF-8 itself, US-ASCII (a subset: 8-bit
 * octets in "ASCII" text are in practice UTF-8 more often than not), no
 * charset, or one iconv does not know. Names are checked first: only
 * the characters of RFC 2978 names reach iconv_open.
 */
static iconv_t
mp_iconv_open(const char *cs)
{
    static const char *const utf8[] = {"utf-8",     "utf8",    "us-ascii",
                                       "ascii",     "us",      "ansi_x3.4-1968",
                                       "iso646-us", "csascii", "utf-8-sig"};
    /* Names mailers write that glibc does not know, or that are in
       practice the superset. */
    static const struct {
        const char *from, *to;
    } alias[] = {
        {"ks_c_5601-1987", "CP949"}, {"gb2312", "GB18030"},
        {"gbk", "GB18030"},          {"x-gbk", "GB18030"},
        {"x-sjis", "SHIFT_JIS"},     {"iso-8859-8-i", "ISO-8859-8"},
        {"windows-874", "CP874"},    {"x-mac-roman", "MACINTOSH"},
    };
    char name[MP_CHARSET_MAX + 1];
    size_t n;

    if (cs == NULL)
        return (iconv_t)-1;
    for (n = 0; cs[n] != '\0'; n++) {
        unsigned char ch = (unsigned char)cs[n];

        if (n == MP_CHARSET_MAX)
            return (iconv_t)-1;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || strchr("-_.:+()", ch) != NULL))
            return (iconv_t)-1;
        name[n] = (char)mp_lower(ch);
    }
    name[n] = '\0';
    if (n == 0)
        return (iconv_t)-1;
    for (size_t i = 0; i < sizeof(utf8) / sizeof(utf8[0]); i++) {
        if (strcmp(name, utf8[i]) == 0)
            return (iconv_t)-1;
    }
    for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++) {
        if (strcmp(name, alias[i].from) == 0)
            return iconv_open("UTF-8", alias[i].to);
    }
    return iconv_open("UTF-8", name);
}

/* Octets in charset cs as UTF-8 (see mp_iconv_open); octets invalid in
   it become U+FFFD, NUL is dropped. */
static int
mp_conv(struct buf *out, const char *cs, const unsigned char *p, size_t n)
{
    iconv_t cd;
    char *ip = (char *)p;
    size_t il = n;
    int rc = 0;

    if (n == 0)
        return 0;
    cd = mp_iconv_open(cs);
    if (cd == (iconv_t)-1)
        return mp_put_utf8(out, p, n);
    while (rc == 0) {
        char tmp[MP_CONV_OUT], *op = tmp;
        size_t ol = sizeof(tmp), r;
        int err;

        r = iconv(cd, &ip, &il, &op, &ol);
        err = r == (size_t)-1 ? errno : 0;
        /* iconv's output is checked again: NUL goes, and nothing but
           valid UTF-8 leaves this function whatever the converter. */
        rc = mp_put_utf8(out, (unsigned char *)tmp, (size_t)(op - tmp));
        if (rc != 0 || err == E2BIG)
            continue;
        if (err == EILSEQ && il > 0) {
            /* Skip one octet and go on (for a stateful encoding the
               shift state stays as it was). */
            rc = buf_append(out, MP_REPL, 3);
            ip++;
            il--;
            continue;
        }
        if (err != 0) /* EINVAL: a sequence cut at the end */
            rc = buf_append(out, MP_REPL, 3);
        break;
    }
    if (rc == 0) {
        char tmp[MP_CONV_OUT], *op = tmp;
        size_t ol = sizeof(tmp);

        /* Back to the initial shift state (ISO-2022-*). */
        iconv(cd, NULL, NULL, &op, &ol);
        rc = mp_put_utf8(out, (unsigned char *)tmp, (size_t)(op - tmp));
    }
    iconv_close(cd);
    return rc;
}

/* ---- transfer decoding ----------------------------------------------- */

/* Decoded octets go to a sink, past `skip` of them and at most `left`;
   with no sink they are only counted (total). */
struct mp_emit {
    mime_parse_sink_fn sink;
    void *arg;
    uint64_t skip, left, total;
    int rc;   /* the sink's non-zero return */
    int stop; /* enough: left reached 0 or the sink said stop */
    size_t bn;
    unsigned char blk[MP_BLOCK];
};

static int
mp_emit_out(struct mp_emit *e, const unsigned char *p, size_t n)
{
    e->total += n;
    if (e->sink == NULL || e->stop)
        return e->stop;
    if (e->skip >= n) {
        e->skip -= n;
        return 0;
    }
    p += e->skip;
    n -= (size_t)e->skip;
    e->skip = 0;
    if (n > e->left)
        n = (size_t)e->left;
    while (n > 0) {
        size_t k = n > MP_BLOCK ? MP_BLOCK : n;
        int r = e->sink(e->arg, p, k);

        if (r != 0) {
            e->rc = r;
            e->stop = 1;
            return 1;
        }
        p += k;
        n -= k;
        e->left -= k;
    }
    if (e->left == 0)
        e->stop = 1;
    return e->stop;
}

static int
mp_emit_flush(struct mp_emit *e)
{
    size_t n = e->bn;

    e->bn = 0;
    return n > 0 ? mp_emit_out(e, e->blk, n) : e->stop;
}

static int
mp_emit_byte(struct mp_emit *e, unsigned char b)
{
    e->blk[e->bn++] = b;
    return e->bn == sizeof(e->blk) ? mp_emit_flush(e) : 0;
}

static int
mp_emit_run(struct mp_emit *e, const unsigned char *p, size_t n)
{
    if (mp_emit_flush(e))
        return 1;
    return mp_emit_out(e, p, n);
}

/* RFC 2045 §6.8 Table 1: the value of each alphabet character, -1
   for every other octet. */
static const signed char mp_b64_tab[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, 62, -1, -1, -1, 63, 52, 53, 54, 55, 56, 57, 58, 59, 60,
    61, -1, -1, -1, -1, -1, -1, -1, 0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
    11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1,
    -1, -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42,
    43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

/* The octets a quantum of q (2 or 3) characters carries, when it ends
   early (padding or the end of the data). */
static int
mp_b64_tail(struct mp_emit *e, uint32_t acc, int q)
{
    if (q == 2)
        return mp_emit_byte(e, (unsigned char)(acc >> 4));
    if (q == 3) {
        if (mp_emit_byte(e, (unsigned char)(acc >> 10)))
            return 1;
        return mp_emit_byte(e, (unsigned char)(acc >> 2));
    }
    return 0;
}

/* RFC 2045 §6.8: characters outside the alphabet are ignored; "=" ends
   a quantum (so concatenated encodings decode too); a lone character
   left over carries nothing. */
static void
mp_dec_b64(const unsigned char *p, size_t n, struct mp_emit *e)
{
    uint32_t acc = 0;
    int q = 0;
    size_t i = 0;

    while (i < n) {
        int v;

        /* Whole quanta of alphabet characters (all of a line but its
           end), straight into the block. */
        while (q == 0 && i + 4 <= n) {
            int a = mp_b64_tab[p[i]], b = mp_b64_tab[p[i + 1]];
            int c = mp_b64_tab[p[i + 2]], d = mp_b64_tab[p[i + 3]];
            uint32_t w;

            if ((a | b | c | d) < 0)
                break;
            /* Never full after this quantum: mp_emit_byte() needs room. */
            if (e->bn + 3 >= sizeof(e->blk) && mp_emit_flush(e))
                return;
            w = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 |
                (uint32_t)d;
            e->blk[e->bn++] = (unsigned char)(w >> 16);
            e->blk[e->bn++] = (unsigned char)(w >> 8);
            e->blk[e->bn++] = (unsigned char)w;
            i += 4;
        }
        if (i == n)
            break;
        if (p[i] == '=') {
            if (mp_b64_tail(e, acc, q))
                return;
            acc = 0;
            q = 0;
            i++;
            continue;
        }
        v = mp_b64_tab[p[i++]];
        if (v < 0)
            continue;
        acc = acc << 6 | (uint32_t)v;
        if (++q == 4) {
            if (mp_emit_byte(e, (unsigned char)(acc >> 16)) ||
                mp_emit_byte(e, (unsigned char)(acc >> 8)) ||
                mp_emit_byte(e, (unsigned char)acc))
                return;
            acc = 0;
            q = 0;
        }
    }
    mp_b64_tail(e, acc, q);
}

/* RFC 2045 §6.7: "=XX" (either case), soft line breaks ("=" then
   transport padding then a line end, or the end), a stray "=" kept. */
static void
mp_dec_qp(const unsigned char *p, size_t n, struct mp_emit *e)
{
    size_t i = 0;

    while (i < n) {
        const unsigned char *eq = memchr(p + i, '=', n - i);
        size_t run = eq != NULL ? (size_t)(eq - (p + i)) : n - i, j;
        int h1, h2;

        if (run > 0 && mp_emit_run(e, p + i, run))
            return;
        i += run;
        if (i == n)
            break;
        h1 = i + 1 < n ? mp_hex(p[i + 1]) : -1;
        h2 = i + 2 < n ? mp_hex(p[i + 2]) : -1;
        if (h1 >= 0 && h2 >= 0) {
            if (mp_emit_byte(e, (unsigned char)(h1 << 4 | h2)))
                return;
            i += 3;
            continue;
        }
        for (j = i + 1; j < n && mp_is_wsp(p[j]); j++)
            ;
        if (j == n) {
            i = n;
        } else if (p[j] == '\n') {
            i = j + 1;
        } else if (p[j] == '\r' && (j + 1 == n || p[j + 1] == '\n')) {
            i = j + 1 == n ? n : j + 2;
        } else {
            if (mp_emit_byte(e, '='))
                return;
            i++;
        }
    }
}

static void
mp_decode(const unsigned char *p, size_t n, enum mime_parse_cte cte,
          struct mp_emit *e)
{
    switch (cte) {
    case MIME_PARSE_CTE_BASE64:
        mp_dec_b64(p, n, e);
        break;
    case MIME_PARSE_CTE_QP:
        mp_dec_qp(p, n, e);
        break;
    case MIME_PARSE_CTE_IDENTITY:
        mp_emit_run(e, p, n);
        break;
    }
    mp_emit_flush(e);
}

static int
mp_sink_buf(void *arg, const void *data, size_t len)
{
    return buf_append(arg, data, len);
}

/* ---- header fields --------------------------------------------------- */

/* A field's name and its value, folded, in the input. */
struct mp_field {
    size_t name, name_len;
    size_t val, val_end; /* after the colon; the final line end not in */
};

/* The line at pos: content end (before CR LF / LF) and next line. */
static void
mp_line(const unsigned char *p, size_t pos, size_t end, size_t *cend,
        size_t *next)
{
    const unsigned char *nl = memchr(p + pos, '\n', end - pos);
    size_t e = nl != NULL ? (size_t)(nl - p) : end;

    *next = nl != NULL ? e + 1 : end;
    if (nl != NULL && e > pos && p[e - 1] == '\r')
        e--;
    *cend = e;
}

/* "name:" (RFC 5322 §3.6.8 ftext; obsolete white space before the
   colon, §4.5): the colon's offset, or 0. */
static size_t
mp_field_colon(const unsigned char *p, size_t pos, size_t cend)
{
    size_t i = pos;

    while (i < cend && p[i] > 32 && p[i] < 127 && p[i] != ':')
        i++;
    if (i == pos)
        return 0;
    while (i < cend && mp_is_wsp(p[i]))
        i++;
    return i < cend && p[i] == ':' ? i : 0;
}

/*
 * The header block of the part at [start, end): *hend is where its
 * fields end (line end included), *bstart where the body starts (after
 * the empty line; or at the first line that is neither a field nor a
 * continuation, as if the empty line were missing). Returns the number
 * of fields. A continuation line before any field is skipped.
 */
static size_t
mp_header_end(const unsigned char *p, size_t start, size_t end, size_t *hend,
              size_t *bstart)
{
    size_t pos = start, nfields = 0;

    while (pos < end) {
        size_t cend, next;

        mp_line(p, pos, end, &cend, &next);
        if (cend == pos) {
            *hend = pos;
            *bstart = next;
            return nfields;
        }
        if (!mp_is_wsp(p[pos])) {
            if (mp_field_colon(p, pos, cend) == 0) {
                *hend = pos;
                *bstart = pos;
                return nfields;
            }
            nfields++;
        }
        pos = next;
    }
    *hend = end;
    *bstart = end;
    return nfields;
}

struct mp_hiter {
    const unsigned char *p;
    size_t pos, end;
};

/* The next field of a block mp_header_end() delimited. */
static int
mp_hnext(struct mp_hiter *it, struct mp_field *f)
{
    while (it->pos < it->end) {
        size_t cend, next, colon;

        mp_line(it->p, it->pos, it->end, &cend, &next);
        colon = mp_is_wsp(it->p[it->pos])
                    ? 0
                    : mp_field_colon(it->p, it->pos, cend);
        if (colon == 0) {
            it->pos = next;
            continue;
        }
        f->name = it->pos;
        f->name_len = colon - it->pos;
        while (f->name_len > 0 && mp_is_wsp(it->p[it->pos + f->name_len - 1]))
            f->name_len--;
        f->val = colon + 1;
        f->val_end = cend;
        it->pos = next;
        /* RFC 5322 §2.2.3: continuation lines start with WSP. */
        while (it->pos < it->end && mp_is_wsp(it->p[it->pos])) {
            mp_line(it->p, it->pos, it->end, &cend, &next);
            f->val_end = cend;
            it->pos = next;
        }
        return 1;
    }
    return 0;
}

static int
mp_field_is(const unsigned char *p, const struct mp_field *f, const char *name)
{
    return strlen(name) == f->name_len &&
           strncasecmp((const char *)p + f->name, name, f->name_len) == 0;
}

/* First field of that name in [hstart, hend). */
static int
mp_field_find(const unsigned char *p, size_t hstart, size_t hend,
              const char *name, struct mp_field *f)
{
    struct mp_hiter it = {p, hstart, hend};

    while (mp_hnext(&it, f)) {
        if (mp_field_is(p, f, name))
            return 1;
    }
    return 0;
}

/* The value unfolded (RFC 5322 §2.2.3: line ends before WSP removed),
   without white space at either end, in a new NUL-terminated string
   (free()), or NULL on allocation failure. */
static char *
mp_unfold(struct mp_ctx *c, const struct mp_field *f, size_t *n)
{
    const unsigned char *p = c->in;
    size_t a = f->val, b = f->val_end, k = 0;
    char *s;

    while (a < b && (mp_is_wsp(p[a]) || p[a] == '\r' || p[a] == '\n'))
        a++;
    while (b > a && (mp_is_wsp(p[b - 1]) || p[b - 1] == '\r'))
        b--;
    s = malloc(b - a + 1);
    if (s == NULL) {
        c->rc = -ENOMEM;
        return NULL;
    }
    for (size_t i = a; i < b; i++) {
        if (p[i] == '\n' || (p[i] == '\r' && i + 1 < b && p[i + 1] == '\n'))
            continue;
        s[k++] = (char)p[i];
    }
    s[k] = '\0';
    *n = k;
    return s;
}

/* Header text given out: CR and LF made SP (one line), NUL dropped. */
static void
mp_oneline(struct buf *b)
{
    size_t k = 0;

    for (size_t i = 0; i < b->len; i++) {
        char ch = b->data[i];

        if (ch == '\0')
            continue;
        b->data[k++] = ch == '\r' || ch == '\n' ? ' ' : ch;
    }
    buf_truncate(b, k);
}

static void
mp_trim(struct buf *b)
{
    size_t a = 0, e = b->len;

    while (a < e && mp_is_wsp((unsigned char)b->data[a]))
        a++;
    while (e > a && mp_is_wsp((unsigned char)b->data[e - 1]))
        e--;
    if (a > 0)
        memmove(b->data, b->data + a, e - a);
    buf_truncate(b, e - a);
}

/* Cut valid UTF-8 to max octets at a character boundary. */
static void
mp_cut(struct buf *b, size_t max)
{
    if (b->len > max)
        buf_truncate(b, mime_parse_utf8_cut(b->data, b->len, max));
}

/* ---- RFC 2047 encoded-words ------------------------------------------ */

struct mp_ew {
    char charset[MP_CHARSET_MAX + 1];
    int b; /* B, else Q */
    const unsigned char *txt;
    size_t txt_len;
    size_t total; /* octets from "=?" to "?=" */
};

/* "=?charset?B|Q?text?=" at s (RFC 2047 §2; a language after '*',
   RFC 2231 §5, is dropped). */
static int
mp_ew_scan(const unsigned char *s, size_t n, struct mp_ew *ew)
{
    size_t i = 2, cs_end, t0;

    if (n < 8 || s[0] != '=' || s[1] != '?')
        return 0;
    while (i < n && s[i] != '?' && s[i] > 32 && s[i] < 127)
        i++;
    if (i == n || s[i] != '?' || i == 2)
        return 0;
    cs_end = i;
    for (size_t k = 2; k < i; k++) {
        if (s[k] == '*') {
            cs_end = k;
            break;
        }
    }
    if (cs_end == 2 || cs_end - 2 > MP_CHARSET_MAX)
        return 0;
    if (i + 3 >= n || s[i + 2] != '?')
        return 0;
    if (mp_lower(s[i + 1]) != 'b' && mp_lower(s[i + 1]) != 'q')
        return 0;
    ew->b = mp_lower(s[i + 1]) == 'b';
    t0 = i + 3;
    for (i = t0; i < n && s[i] != '?' && s[i] > 32 && s[i] < 127; i++)
        ;
    if (i + 1 >= n || s[i] != '?' || s[i + 1] != '=')
        return 0;
    memcpy(ew->charset, s + 2, cs_end - 2);
    ew->charset[cs_end - 2] = '\0';
    ew->txt = s + t0;
    ew->txt_len = i - t0;
    ew->total = i + 2;
    return 1;
}

/* The octets an encoded-word carries (RFC 2047 §4.1, §4.2). */
static int
mp_ew_bytes(const struct mp_ew *ew, struct buf *out)
{
    struct buf *b = out;

    if (ew->b) {
        struct mp_emit *e = calloc(1, sizeof(*e));
        int rc;

        if (e == NULL)
            return -ENOMEM;
        e->sink = mp_sink_buf;
        e->arg = b;
        e->left = UINT64_MAX;
        mp_decode(ew->txt, ew->txt_len, MIME_PARSE_CTE_BASE64, e);
        rc = e->rc != 0 ? -ENOMEM : 0;
        free(e);
        return rc;
    }
    for (size_t i = 0; i < ew->txt_len; i++) {
        unsigned char ch = ew->txt[i];
        int h1, h2;

        if (ch == '_') {
            ch = ' ';
        } else if (ch == '=' && i + 2 < ew->txt_len &&
                   (h1 = mp_hex(ew->txt[i + 1])) >= 0 &&
                   (h2 = mp_hex(ew->txt[i + 2])) >= 0) {
            ch = (unsigned char)(h1 << 4 | h2);
            i += 2;
        }
        MP_TRY(buf_append(b, &ch, 1));
    }
    return 0;
}

/*
 * Text with encoded-words (RFC 2047 §5 (1)) as UTF-8, appended to out.
 * Runs of octets outside encoded-words go through mp_put_raw(). White
 * space between two encoded-words is dropped (§6.2); adjacent words in
 * the same charset are joined before conversion, so a character split
 * between them (a common fault) still reads whole. Encoded-words are
 * also found inside words ("Re:=?..?="), as most readers do. Stops once
 * out holds more than max octets.
 */
static int
mp_decode_text(const unsigned char *s, size_t n, int latin1, size_t max,
               struct buf *out)
{
    struct buf pend; /* octets of adjacent encoded-words, one charset */
    char pcs[MP_CHARSET_MAX + 1] = "";
    size_t i = 0, ws = 0, ws_len = 0;
    int prev_ew = 0, rc = 0;

    buf_init(&pend, MP_BIG);
    /* Encoded-words that decode to nothing (NUL) would not fill out:
       the raw text read is bounded as well. */
    if (n > max * MP_TEXT_RAW + MP_TEXT_RAW_MIN)
        n = max * MP_TEXT_RAW + MP_TEXT_RAW_MIN;
    while (i < n && rc == 0 && out->len <= max) {
        struct mp_ew ew;
        size_t j;

        if (mp_is_wsp(s[i]) || s[i] == '\r' || s[i] == '\n') {
            ws = i;
            while (i < n && (mp_is_wsp(s[i]) || s[i] == '\r' || s[i] == '\n'))
                i++;
            ws_len = i - ws;
            continue;
        }
        if (mp_ew_scan(s + i, n - i, &ew)) {
            if (!prev_ew || strcasecmp(ew.charset, pcs) != 0) {
                rc = mp_conv(out, pcs, (unsigned char *)pend.data, pend.len);
                buf_reset(&pend);
                snprintf(pcs, sizeof(pcs), "%s", ew.charset);
            }
            if (rc == 0 && !prev_ew && ws_len > 0)
                rc = mp_put_raw(out, s + ws, ws_len, latin1);
            ws_len = 0;
            if (rc == 0)
                rc = mp_ew_bytes(&ew, &pend);
            prev_ew = 1;
            i += ew.total;
            continue;
        }
        if (prev_ew) {
            rc = mp_conv(out, pcs, (unsigned char *)pend.data, pend.len);
            buf_reset(&pend);
            prev_ew = 0;
        }
        if (rc == 0 && ws_len > 0)
            rc = mp_put_raw(out, s + ws, ws_len, latin1);
        ws_len = 0;
        /* A run up to white space or the next "=?". */
        for (j = i + 1;
             j < n && !mp_is_wsp(s[j]) && s[j] != '\r' && s[j] != '\n' &&
             !(s[j] == '=' && j + 1 < n && s[j + 1] == '?');
             j++)
            ;
        if (rc == 0)
            rc = mp_put_raw(out, s + i, j - i, latin1);
        i = j;
    }
    if (rc == 0 && prev_ew)
        rc = mp_conv(out, pcs, (unsigned char *)pend.data, pend.len);
    if (rc == 0 && ws_len > 0 && out->len <= max)
        rc = mp_put_raw(out, s + ws, ws_len, latin1);
    buf_cleanup(&pend);
    return rc;
}

/* ---- addresses ------------------------------------------------------- */

/* RFC 5322 §3.2.3 specials that end an atom; '.' is kept in atoms so
   that obsolete phrases ("John Q. Public", §4.1) read as written. */
static int
mp_is_special(unsigned char ch)
{
    /* strchr() finds the terminating NUL too: NUL is no special. */
    return ch != 0 && strchr("()<>[]:;@\\,\"", ch) != NULL;
}

static int
mp_is_space(unsigned char ch)
{
    return mp_is_wsp(ch) || ch == '\r' || ch == '\n';
}

/* The end of a quoted-string or domain literal opened at s[i], and its
   content unescaped (quoted-pair, §3.2.1) appended to out if not NULL.
   An unterminated one runs to the end. */
static size_t
mp_quoted(const unsigned char *s, size_t i, size_t n, unsigned char close,
          struct buf *out, int *rc)
{
    size_t run;

    run = ++i;
    while (i < n && s[i] != close) {
        if (s[i] == '\\' && i + 1 < n) {
            if (out != NULL && *rc == 0)
                *rc = buf_append(out, s + run, i - run);
            run = ++i; /* the escaped octet starts the next run */
        }
        i++;
    }
    if (out != NULL && *rc == 0)
        *rc = buf_append(out, s + run, i - run);
    return i < n ? i + 1 : n;
}

/* A comment (§3.2.2, nested) opened at s[i]; its content, unescaped, to
   out if not NULL. */
static size_t
mp_comment(const unsigned char *s, size_t i, size_t n, struct buf *out, int *rc)
{
    size_t depth = 0, run = i + 1;

    for (; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            if (out != NULL && *rc == 0)
                *rc = buf_append(out, s + run, i - run);
            run = ++i;
            continue;
        }
        if (s[i] == '(') {
            depth++;
        } else if (s[i] == ')' && --depth == 0) {
            break;
        }
    }
    if (out != NULL && *rc == 0)
        *rc = buf_append(out, s + run, (i < n ? i : n) - run);
    return i < n ? i + 1 : n;
}

/* One mailbox being read. */
struct mp_mbox {
    struct buf phrase;  /* words before '<', joined by SP, unescaped */
    struct buf addr;    /* inside <>, or every word when there is none */
    struct buf comment; /* the first comment */
    int angle;          /* 0 none, 1 inside, 2 after '>' */
    int words, tokens, at;
};

struct mp_alist {
    struct mp_ctx *c;
    struct mime_parse_addr *v;
    unsigned n, cap;
    int cut;
    int latin1;
    struct mp_mbox mb;
};

static void
mp_mbox_reset(struct mp_mbox *mb)
{
    buf_reset(&mb->phrase);
    buf_reset(&mb->addr);
    buf_reset(&mb->comment);
    mb->angle = 0;
    mb->words = 0;
    mb->tokens = 0;
    mb->at = 0;
}

/* Phrase or comment text to a display name. */
static const char *
mp_name(struct mp_alist *l, const struct buf *raw)
{
    struct buf b;
    const char *s;

    buf_init(&b, MP_BIG);
    mp_check(l->c, mp_decode_text((const unsigned char *)raw->data, raw->len,
                                  l->latin1, MIME_PARSE_NAME_MAX, &b));
    s = "";
    if (b.data != NULL) {
        mp_oneline(&b);
        mp_trim(&b);
        mp_cut(&b, MIME_PARSE_NAME_MAX);
        s = mp_bdup(l->c, &b);
    }
    buf_cleanup(&b);
    return s;
}

/* The mailbox read so far, kept when there is room. */
static void
mp_mbox_end(struct mp_alist *l)
{
    struct mp_mbox *mb = &l->mb;
    struct mime_parse_addr *a;
    const struct buf *name = NULL;
    int use_addr = 0;

    if (mb->tokens == 0 && mb->angle == 0)
        return;
    if (l->n == l->cap) {
        l->cut = 1;
        return;
    }
    if (mb->angle != 0) {
        use_addr = 1;
        name = mb->phrase.len > 0 ? &mb->phrase : &mb->comment;
    } else if (mb->at || mb->words <= 1) {
        /* An addr-spec alone (§3.4), perhaps "addr (Name)". */
        use_addr = 1;
        name = &mb->comment;
    } else {
        /* Words without '@' or '<': a name alone ("Mailer Daemon"). */
        name = &mb->phrase;
    }
    a = &l->v[l->n++];
    a->name = name->len > 0 ? mp_name(l, name) : "";
    a->address = "";
    if (use_addr && mb->addr.len > 0) {
        struct buf b;

        buf_init(&b, MP_BIG);
        mp_check(l->c, mp_put_raw(&b, (const unsigned char *)mb->addr.data,
                                  mb->addr.len, l->latin1));
        if (b.data != NULL) {
            mp_oneline(&b);
            /* RFC 5321 §4.5.3.1.3: longer is no address we can use. */
            if (b.len <= MIME_PARSE_ADDR_MAX)
                a->address = mp_bdup(l->c, &b);
        }
        buf_cleanup(&b);
    }
}

/* An address-list (RFC 5322 §3.4, obsolete forms of §4.4) into l->v. */
static void
mp_addr_list(struct mp_alist *l, const unsigned char *s, size_t n)
{
    struct mp_mbox *mb = &l->mb;
    size_t i = 0;
    int rc = 0;

    buf_init(&mb->phrase, MP_BIG);
    buf_init(&mb->addr, MP_BIG);
    buf_init(&mb->comment, MP_BIG);
    mp_mbox_reset(mb);
    l->latin1 = !mp_utf8_valid(s, n);
    while (i < n && rc == 0 && l->c->rc == 0 && !l->cut) {
        unsigned char ch = s[i];
        size_t j;

        if (mp_is_space(ch)) {
            i++;
        } else if (ch == '(') {
            i = mp_comment(s, i, n, mb->comment.len == 0 ? &mb->comment : NULL,
                           &rc);
        } else if (ch == '"' || ch == '[') {
            j = mp_quoted(s, i, n, ch == '"' ? '"' : ']', NULL, &rc);
            mb->tokens++;
            if (mb->angle == 1 || (mb->angle == 0 && ch == '[')) {
                rc = buf_append(&mb->addr, s + i, j - i);
            } else if (mb->angle == 0) {
                if (mb->phrase.len > 0)
                    rc = buf_append(&mb->phrase, " ", 1);
                if (rc == 0)
                    mp_quoted(s, i, n, '"', &mb->phrase, &rc);
                if (rc == 0)
                    rc = buf_append(&mb->addr, s + i, j - i);
                mb->words++;
            }
            i = j;
        } else if (ch == '<') {
            if (mb->angle == 0) {
                mb->angle = 1;
                buf_reset(&mb->addr);
            }
            i++;
        } else if (ch == '>') {
            if (mb->angle == 1)
                mb->angle = 2;
            i++;
        } else if (ch == ':') {
            if (mb->angle == 1) {
                buf_reset(&mb->addr); /* obs-route (§4.4) */
            } else if (mb->angle == 0 && !mb->at) {
                mp_mbox_reset(mb); /* a group's display name (§3.4) */
            }
            i++;
        } else if (ch == ';') {
            if (mb->angle != 1) {
                mp_mbox_end(l); /* a group ends */
                mp_mbox_reset(mb);
            }
            i++;
        } else if (ch == ',') {
            if (mb->angle != 1) {
                mp_mbox_end(l);
                mp_mbox_reset(mb);
            }
            i++;
        } else if (ch == '@') {
            if (mb->angle != 2) {
                rc = buf_append(&mb->addr, "@", 1);
                mb->at = 1;
                mb->tokens++;
            }
            i++;
        } else if (ch == ')' || ch == '\\') {
            i++;
        } else {
            for (j = i + 1; j < n && !mp_is_space(s[j]) && !mp_is_special(s[j]);
                 j++)
                ;
            mb->tokens++;
            if (mb->angle == 1) {
                rc = buf_append(&mb->addr, s + i, j - i);
            } else if (mb->angle == 0) {
                if (mb->phrase.len > 0)
                    rc = buf_append(&mb->phrase, " ", 1);
                if (rc == 0)
                    rc = buf_append(&mb->phrase, s + i, j - i);
                if (rc == 0)
                    rc = buf_append(&mb->addr, s + i, j - i);
                mb->words++;
            }
            i = j;
        }
    }
    if (rc == 0 && !l->cut)
        mp_mbox_end(l);
    mp_check(l->c, rc);
    buf_cleanup(&mb->phrase);
    buf_cleanup(&mb->addr);
    buf_cleanup(&mb->comment);
}

/* ---- parameters (RFC 2045 §5.1, RFC 2183 §2, RFC 2231) ---------------- */

struct mp_param {
    const unsigned char *name, *val;
    size_t name_len, val_len;
    int quoted; /* val holds quoted-pairs */
};

struct mp_params {
    size_t n;
    struct mp_param v[MP_PARAMS_MAX];
};

static int
mp_is_token(unsigned char ch)
{
    return ch > 32 && ch < 127 && strchr("()<>@,;:\\\"/[]?=", ch) == NULL;
}

static size_t
mp_skip_cfws(const unsigned char *s, size_t i, size_t n)
{
    int rc = 0;

    while (i < n) {
        if (mp_is_space(s[i]))
            i++;
        else if (s[i] == '(')
            i = mp_comment(s, i, n, NULL, &rc);
        else
            break;
    }
    return i;
}

/*
 * "type/subtype; params" (want_slash) or "disposition; params" in the
 * unfolded value s. The value (lower case) to v (v_size octets with
 * NUL; "" when it is not a valid one, *v_long when only too long), the
 * parameters to ps as slices of s. Tolerant: white space around '=',
 * values unquoted up to ';' ("name=my file.pdf"), junk skipped to the
 * next ';'.
 */
static void
mp_params_read(const unsigned char *s, size_t n, int want_slash, char *v,
               size_t v_size, int *v_long, struct mp_params *ps)
{
    size_t i = mp_skip_cfws(s, 0, n), t0 = i, k = 0;
    int ok = 1, slash = 0;

    v[0] = '\0';
    *v_long = 0;
    ps->n = 0;
    while (i < n && (mp_is_token(s[i]) || (want_slash && s[i] == '/'))) {
        if (s[i] == '/') {
            if (slash || i == t0)
                ok = 0;
            slash = 1;
        }
        i++;
    }
    if (i == t0 || (want_slash && (!slash || s[i - 1] == '/')))
        ok = 0;
    if (ok && i - t0 >= v_size)
        *v_long = 1;
    else if (ok) {
        for (k = 0; k < i - t0; k++)
            v[k] = (char)mp_lower(s[t0 + k]);
        v[k] = '\0';
    }
    while (i < n && ps->n < MP_PARAMS_MAX) {
        struct mp_param *p = &ps->v[ps->n];
        size_t a;

        while (i < n && s[i] != ';') {
            if (s[i] == '"') {
                int rc = 0;

                i = mp_quoted(s, i, n, '"', NULL, &rc);
            } else {
                i++;
            }
        }
        if (i == n)
            break;
        i = mp_skip_cfws(s, i + 1, n);
        a = i;
        while (i < n && mp_is_token(s[i]))
            i++;
        p->name = s + a;
        p->name_len = i - a;
        i = mp_skip_cfws(s, i, n);
        if (p->name_len == 0 || i == n || s[i] != '=')
            continue;
        i = mp_skip_cfws(s, i + 1, n);
        if (i < n && s[i] == '"') {
            int rc = 0;
            size_t e = mp_quoted(s, i, n, '"', NULL, &rc);

            p->val = s + i + 1;
            p->val_len = e - i - 1;
            if (p->val_len > 0 && s[e - 1] == '"' && e - 1 > i)
                p->val_len--;
            p->quoted = 1;
            i = e;
        } else {
            size_t e = i;

            while (e < n && s[e] != ';')
                e++;
            p->val = s + i;
            p->val_len = e - i;
            while (p->val_len > 0 && mp_is_space(p->val[p->val_len - 1]))
                p->val_len--;
            p->quoted = 0;
            i = e;
        }
        ps->n++;
    }
}

/* The value with quoted-pairs undone, appended to out. */
static int
mp_param_value(const struct mp_param *p, struct buf *out)
{
    size_t run = 0;

    if (!p->quoted)
        return buf_append(out, p->val, p->val_len);
    for (size_t i = 0; i < p->val_len; i++) {
        if (p->val[i] == '\\' && i + 1 < p->val_len) {
            MP_TRY(buf_append(out, p->val + run, i - run));
            run = ++i;
        }
    }
    return buf_append(out, p->val + run, p->val_len - run);
}

/* The parameter named `name` (case-insensitive) plus `suffix`, e.g.
   "filename" "*0*"; NULL if none. */
static const struct mp_param *
mp_param_find(const struct mp_params *ps, const char *name, const char *suffix)
{
    size_t nl = strlen(name), sl = strlen(suffix);

    for (size_t i = 0; i < ps->n; i++) {
        const struct mp_param *p = &ps->v[i];

        if (p->name_len == nl + sl &&
            strncasecmp((const char *)p->name, name, nl) == 0 &&
            memcmp(p->name + nl, suffix, sl) == 0)
            return p;
    }
    return NULL;
}

/* RFC 2231 §4 "%XX" undone, appended to out. */
static int
mp_pct_decode(const unsigned char *s, size_t n, struct buf *out)
{
    size_t run = 0;

    for (size_t i = 0; i < n; i++) {
        int h1, h2;
        unsigned char b;

        if (s[i] != '%' || i + 2 >= n || (h1 = mp_hex(s[i + 1])) < 0 ||
            (h2 = mp_hex(s[i + 2])) < 0)
            continue;
        b = (unsigned char)(h1 << 4 | h2);
        MP_TRY(buf_append(out, s + run, i - run));
        MP_TRY(buf_append(out, &b, 1));
        i += 2;
        run = i + 1;
    }
    return buf_append(out, s + run, n - run);
}

/* charset'language'value (RFC 2231 §4): the charset to cs, the rest. */
static void
mp_2231_split(const unsigned char **s, size_t *n, char cs[MP_CHARSET_MAX + 1])
{
    const unsigned char *q1 = memchr(*s, '\'', *n), *q2;
    size_t cl;

    cs[0] = '\0';
    if (q1 == NULL)
        return;
    q2 = memchr(q1 + 1, '\'', *n - (size_t)(q1 + 1 - *s));
    if (q2 == NULL)
        return;
    cl = (size_t)(q1 - *s);
    if (cl <= MP_CHARSET_MAX) {
        memcpy(cs, *s, cl);
        cs[cl] = '\0';
    }
    *n -= (size_t)(q2 + 1 - *s);
    *s = q2 + 1;
}

/*
 * A text parameter (a file name) as UTF-8 in out: RFC 2231 name*= or
 * name*0*= ... sections (charset from the first), else the plain
 * name= with RFC 2047 encoded-words inside (what Outlook writes, not
 * RFC 2047 proper, §5 (3)). Octets without a charset: UTF-8 if valid,
 * else Latin-1. 1 when the parameter is present, else 0; errors to c.
 */
static int
mp_param_text(struct mp_ctx *c, const struct mp_params *ps, const char *name,
              struct buf *out)
{
    const struct mp_param *p;
    char cs[MP_CHARSET_MAX + 1] = "";
    struct buf raw;
    int ext = 0, rc = 0, found = 1;

    buf_init(&raw, MP_BIG);
    if ((p = mp_param_find(ps, name, "*")) != NULL) {
        struct buf v;
        const unsigned char *s;
        size_t n;

        buf_init(&v, MP_BIG);
        rc = mp_param_value(p, &v);
        s = (const unsigned char *)(v.data != NULL ? v.data : "");
        n = v.len;
        mp_2231_split(&s, &n, cs);
        if (rc == 0)
            rc = mp_pct_decode(s, n, &raw);
        buf_cleanup(&v);
        ext = 1;
    } else if (mp_param_find(ps, name, "*0") != NULL ||
               mp_param_find(ps, name, "*0*") != NULL) {
        /* RFC 2231 §3: sections 0, 1, ... up to the first missing. */
        for (unsigned k = 0; k < MP_SECTIONS_MAX && rc == 0; k++) {
            char suf[16];
            int sext = 0;

            snprintf(suf, sizeof(suf), "*%u", k);
            if ((p = mp_param_find(ps, name, suf)) == NULL) {
                snprintf(suf, sizeof(suf), "*%u*", k);
                p = mp_param_find(ps, name, suf);
                sext = 1;
            }
            if (p == NULL)
                break;
            if (sext) {
                struct buf v;
                const unsigned char *s;
                size_t n;

                buf_init(&v, MP_BIG);
                rc = mp_param_value(p, &v);
                s = (const unsigned char *)(v.data != NULL ? v.data : "");
                n = v.len;
                if (k == 0)
                    mp_2231_split(&s, &n, cs);
                if (rc == 0)
                    rc = mp_pct_decode(s, n, &raw);
                buf_cleanup(&v);
                ext = 1;
            } else {
                rc = mp_param_value(p, &raw);
            }
        }
    } else if ((p = mp_param_find(ps, name, "")) != NULL) {
        rc = mp_param_value(p, &raw);
    } else {
        found = 0;
    }
    if (rc == 0 && found && raw.len > 0) {
        const unsigned char *s = (const unsigned char *)raw.data;

        if (ext && cs[0] != '\0')
            rc = mp_conv(out, cs, s, raw.len);
        else if (ext)
            rc = mp_put_raw(out, s, raw.len, !mp_utf8_valid(s, raw.len));
        else
            rc = mp_decode_text(s, raw.len, !mp_utf8_valid(s, raw.len),
                                MIME_PARSE_FILENAME_MAX, out);
    }
    buf_cleanup(&raw);
    mp_check(c, rc);
    return found;
}

/* ---- parts ----------------------------------------------------------- */

/* What a part's header says, read in one helper so that the parameters
   do not stay on the stack across the recursion. */
struct mp_info {
    char type[MIME_PARSE_TYPE_MAX + 1]; /* lower case; defaulted */
    int type_long;                      /* given, but past TYPE_MAX */
    char charset[MP_CHARSET_MAX + 1];   /* lower case; "" none */
    char *boundary;                     /* malloc()ed; NULL none */
    size_t blen;
    enum mime_parse_cte cte;
    int disp_attach;
    char *filename; /* malloc()ed UTF-8; NULL none or empty */
};

static void
mp_info_free(struct mp_info *pi)
{
    free(pi->boundary);
    free(pi->filename);
}

static void
mp_info_read(struct mp_ctx *c, size_t hstart, size_t hend, int in_digest,
             struct mp_info *pi)
{
    struct mp_params *ps = NULL, *pd = NULL;
    struct mp_field f;
    char *ct = NULL, *cd = NULL;
    size_t ctn = 0, cdn = 0;
    char disp[32];
    int dlong;
    struct buf b;

    memset(pi, 0, sizeof(*pi));
    pi->cte = MIME_PARSE_CTE_IDENTITY;
    ps = malloc(sizeof(*ps));
    pd = malloc(sizeof(*pd));
    if (ps == NULL || pd == NULL) {
        c->rc = -ENOMEM;
        goto out;
    }
    ps->n = 0;
    pd->n = 0;
    if (mp_field_find(c->in, hstart, hend, "content-type", &f)) {
        ct = mp_unfold(c, &f, &ctn);
        if (ct == NULL)
            goto out;
        mp_params_read((unsigned char *)ct, ctn, 1, pi->type, sizeof(pi->type),
                       &pi->type_long, ps);
    }
    if (pi->type_long) {
        snprintf(pi->type, sizeof(pi->type), "application/octet-stream");
    } else if (pi->type[0] == '\0') {
        /* RFC 2045 §5.2 (absent or invalid), RFC 2046 §5.1.5. */
        snprintf(pi->type, sizeof(pi->type), "%s",
                 in_digest ? "message/rfc822" : "text/plain");
    }
    if (mp_field_find(c->in, hstart, hend, "content-transfer-encoding", &f)) {
        size_t n;
        char *v = mp_unfold(c, &f, &n);

        if (v == NULL)
            goto out;
        /* RFC 2045 §6.1: a token, case-insensitive. */
        if (strncasecmp(v, "base64", 6) == 0 &&
            (n == 6 || mp_is_space((unsigned char)v[6]) || v[6] == '('))
            pi->cte = MIME_PARSE_CTE_BASE64;
        else if (strncasecmp(v, "quoted-printable", 16) == 0 &&
                 (n == 16 || mp_is_space((unsigned char)v[16]) || v[16] == '('))
            pi->cte = MIME_PARSE_CTE_QP;
        free(v);
    }
    if (mp_field_find(c->in, hstart, hend, "content-disposition", &f)) {
        cd = mp_unfold(c, &f, &cdn);
        if (cd == NULL)
            goto out;
        mp_params_read((unsigned char *)cd, cdn, 0, disp, sizeof(disp), &dlong,
                       pd);
        pi->disp_attach = strcmp(disp, "attachment") == 0;
    }

    buf_init(&b, MP_BIG);
    {
        const struct mp_param *p = mp_param_find(ps, "charset", "");

        if (p != NULL && mp_param_value(p, &b) == 0 && b.len > 0 &&
            b.len <= MP_CHARSET_MAX) {
            for (size_t i = 0; i < b.len; i++)
                pi->charset[i] = (char)mp_lower((unsigned char)b.data[i]);
            pi->charset[b.len] = '\0';
        }
        buf_reset(&b);
        p = mp_param_find(ps, "boundary", "");
        if (p != NULL && mp_param_value(p, &b) == 0 && b.len > 0 &&
            b.len <= MP_BOUNDARY_MAX) {
            pi->boundary = buf_take(&b, &pi->blen);
        }
        buf_reset(&b);
    }
    /* RFC 2183 §2.3 filename, else the Content-Type name (RFC 2046
       §4.5.1 obsolete, but what many mailers write). */
    if (mp_param_text(c, pd, "filename", &b) ||
        mp_param_text(c, ps, "name", &b)) {
        if (b.data != NULL) {
            mp_oneline(&b);
            mp_trim(&b);
            mp_cut(&b, MIME_PARSE_FILENAME_MAX);
        }
        if (b.len > 0)
            pi->filename = buf_take(&b, NULL);
    }
    buf_cleanup(&b);
out:
    free(ct);
    free(cd);
    free(ps);
    free(pd);
}

/* The next delimiter line (RFC 2046 §5.1.1) of bnd in [from, end), with
   lo the start of the multipart body (a line start). Fills where the
   "--" starts, where the next line starts, and whether it closes. */
static int
mp_delim_next(const unsigned char *p, size_t lo, size_t from, size_t end,
              const char *bnd, size_t blen, size_t *dstart, size_t *dnext,
              int *close)
{
    size_t i = from;

    while (i + blen <= end) {
        const unsigned char *hit = memmem(p + i, end - i, bnd, blen);
        size_t k, j;

        if (hit == NULL)
            return 0;
        k = (size_t)(hit - p);
        i = k + 1;
        if (k < lo + 2 || p[k - 1] != '-' || p[k - 2] != '-')
            continue;
        if (k - 2 != lo && p[k - 3] != '\n')
            continue;
        j = k + blen;
        *close = j + 1 < end && p[j] == '-' && p[j + 1] == '-';
        if (*close)
            j += 2;
        while (j < end && mp_is_wsp(p[j]))
            j++;
        if (j < end && p[j] == '\r' && (j + 1 == end || p[j + 1] == '\n'))
            j++;
        if (j < end && p[j] != '\n')
            continue;
        *dstart = k - 2;
        *dnext = j < end ? j + 1 : end;
        return 1;
    }
    return 0;
}

/* The CR LF or LF before a delimiter belongs to it (§5.1.1). */
static size_t
mp_part_end(const unsigned char *p, size_t start, size_t dstart)
{
    size_t e = dstart;

    if (e > start && p[e - 1] == '\n')
        e--;
    if (e > start && p[e - 1] == '\r')
        e--;
    return e;
}

static void mp_part(struct mp_ctx *c, size_t start, size_t end, int depth,
                    int in_digest);

/* The parts of a multipart body [lo, end). 0 when the boundary never
   occurs (the caller reads the body as a leaf). */
static int
mp_multipart(struct mp_ctx *c, size_t lo, size_t end, const char *bnd,
             size_t blen, int depth, int digest)
{
    size_t dstart, dnext;
    int close = 0;

    if (!mp_delim_next(c->in, lo, lo, end, bnd, blen, &dstart, &dnext, &close))
        return 0;
    /* The preamble before the first delimiter is not read. */
    while (!close && c->rc == 0 && c->nparts <= MIME_PARSE_PARTS_MAX) {
        size_t start = dnext, ds2, dn2;
        int close2 = 0;

        if (!mp_delim_next(c->in, lo, start, end, bnd, blen, &ds2, &dn2,
                           &close2)) {
            mp_defect(c, "a multipart lacks its close delimiter");
            c->m->flags |= MIME_PARSE_F_UNCLOSED;
            mp_part(c, start, end, depth + 1, digest);
            break;
        }
        mp_part(c, start, mp_part_end(c->in, start, ds2), depth + 1, digest);
        dnext = dn2;
        close = close2;
    }
    /* The epilogue after the close delimiter is not read either. */
    return 1;
}

static void
mp_leaf_note(struct mp_leaf *l, const struct mp_info *pi, size_t off,
             size_t len)
{
    l->found = 1;
    l->off = off;
    l->len = len;
    l->cte = pi->cte;
    memcpy(l->charset, pi->charset, sizeof(l->charset));
}

static void
mp_attach(struct mp_ctx *c, const struct mp_info *pi, size_t off, size_t len,
          const char *fallback_name)
{
    struct mime_parse_att *a;
    struct mp_emit *e;
    const char *name = pi->filename != NULL ? pi->filename : fallback_name;

    if (c->n_atts == MIME_PARSE_ATTS_MAX) {
        mp_defect(c, "too many attachments");
        c->m->flags |= MIME_PARSE_F_ATTS_CUT;
        return;
    }
    if (c->atts == NULL) {
        c->atts = mp_alloc(c, MIME_PARSE_ATTS_MAX * sizeof(*c->atts));
        if (c->atts == NULL)
            return;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        c->rc = -ENOMEM;
        return;
    }
    /* Counting only: no sink. */
    mp_decode(c->in + off, len, pi->cte, e);
    a = &c->atts[c->n_atts];
    a->index = c->n_atts;
    a->name = mp_sdup(c, name, strlen(name));
    a->type = mp_sdup(c, pi->type, strlen(pi->type));
    a->size = e->total;
    a->off = off;
    a->len = len;
    a->cte = pi->cte;
    free(e);
    c->n_atts++;
}

static void
mp_part(struct mp_ctx *c, size_t start, size_t end, int depth, int in_digest)
{
    struct mp_info pi;
    size_t hend, bstart;
    int is_text, is_msg;

    if (c->rc != 0)
        return;
    if (++c->nparts > MIME_PARSE_PARTS_MAX) {
        mp_defect(c, "too many parts");
        c->m->flags |= MIME_PARSE_F_PARTS_CUT;
        return;
    }
    mp_header_end(c->in, start, end, &hend, &bstart);
    mp_info_read(c, start, hend, in_digest, &pi);
    if (c->rc != 0) {
        mp_info_free(&pi);
        return;
    }
    if (strncmp(pi.type, "multipart/", 10) == 0) {
        if (pi.boundary == NULL) {
            mp_defect(c, "a multipart has no boundary");
            snprintf(pi.type, sizeof(pi.type), "text/plain");
        } else if (depth >= MIME_PARSE_DEPTH_MAX) {
            mp_defect(c, "multipart nesting too deep");
            c->m->flags |= MIME_PARSE_F_DEPTH_CUT;
        } else {
            char *bnd = pi.boundary;
            size_t blen = pi.blen;
            int digest = strcmp(pi.type, "multipart/digest") == 0;

            pi.boundary = NULL;
            mp_info_free(&pi);
            if (mp_multipart(c, bstart, end, bnd, blen, depth, digest)) {
                free(bnd);
                return;
            }
            free(bnd);
            mp_defect(c, "a multipart boundary never occurs");
            /* Read again for the leaf (the charset, the name). */
            mp_info_read(c, start, hend, in_digest, &pi);
            if (c->rc != 0) {
                mp_info_free(&pi);
                return;
            }
            snprintf(pi.type, sizeof(pi.type), "text/plain");
        }
    }
    is_text = strncmp(pi.type, "text/", 5) == 0;
    is_msg = strcmp(pi.type, "message/rfc822") == 0 ||
             strcmp(pi.type, "message/global") == 0;
    if (is_msg)
        mp_attach(c, &pi, bstart, end - bstart, "message.eml");
    else if (pi.disp_attach || pi.filename != NULL || !is_text)
        mp_attach(c, &pi, bstart, end - bstart, "");
    else if (strcmp(pi.type, "text/plain") == 0 && !c->plain.found)
        mp_leaf_note(&c->plain, &pi, bstart, end - bstart);
    else if (strcmp(pi.type, "text/html") == 0 && !c->html.found)
        mp_leaf_note(&c->html, &pi, bstart, end - bstart);
    mp_info_free(&pi);
}

/* ---- the top level --------------------------------------------------- */

/* The subject, From and the recipients, Date, Message-ID. */
static void
mp_envelope(struct mp_ctx *c, size_t hstart, size_t hend)
{
    static const char *const names[] = {"from",    "to",   "cc",        "bcc",
                                        "subject", "date", "message-id"};
    enum { F_FROM, F_TO, F_CC, F_BCC, F_SUBJECT, F_DATE, F_MSGID, F_N };
    struct mp_field fs[F_N], f;
    int have[F_N] = {0};
    struct mp_hiter it = {c->in, hstart, hend};
    struct mime_parse_addr *v;
    struct mp_alist l;
    struct mime_parse_msg *m = c->m;
    unsigned total = 0;

    while (mp_hnext(&it, &f)) {
        for (int k = 0; k < F_N; k++) {
            if (!have[k] && mp_field_is(c->in, &f, names[k])) {
                fs[k] = f;
                have[k] = 1;
            }
        }
    }
    m->from.name = "";
    m->from.address = "";
    m->subject = "";
    m->message_id = "";

    v = malloc((MIME_PARSE_RCPTS_MAX + 1) * sizeof(*v));
    if (v == NULL) {
        c->rc = -ENOMEM;
        return;
    }
    for (int k = F_FROM; k <= F_BCC && c->rc == 0; k++) {
        char *s;
        size_t n;
        struct mime_parse_addr *keep;

        if (!have[k])
            continue;
        s = mp_unfold(c, &fs[k], &n);
        if (s == NULL)
            break;
        memset(&l, 0, sizeof(l));
        l.c = c;
        l.v = v;
        l.cap = k == F_FROM ? 1 : MIME_PARSE_RCPTS_MAX - total;
        if (l.cap > 0)
            mp_addr_list(&l, (unsigned char *)s, n);
        else
            l.cut = n > 0;
        free(s);
        if (k == F_FROM) {
            if (l.n > 0)
                m->from = v[0];
            continue;
        }
        if (l.cut) {
            mp_defect(c, "too many recipients");
            m->flags |= MIME_PARSE_F_RCPTS_CUT;
        }
        keep = NULL;
        if (l.n > 0) {
            keep = mp_alloc(c, l.n * sizeof(*keep));
            if (keep == NULL)
                break;
            memcpy(keep, v, l.n * sizeof(*keep));
        }
        total += l.n;
        if (k == F_TO) {
            m->to = keep;
            m->n_to = l.n;
        } else if (k == F_CC) {
            m->cc = keep;
            m->n_cc = l.n;
        } else {
            m->bcc = keep;
            m->n_bcc = l.n;
        }
    }
    free(v);

    if (have[F_SUBJECT] && c->rc == 0) {
        size_t n;
        char *s = mp_unfold(c, &fs[F_SUBJECT], &n);
        struct buf b;

        if (s != NULL) {
            buf_init(&b, MP_BIG);
            mp_check(c, mp_decode_text((unsigned char *)s, n,
                                       !mp_utf8_valid((unsigned char *)s, n),
                                       MIME_PARSE_SUBJECT_MAX, &b));
            if (b.data != NULL) {
                mp_oneline(&b);
                mp_cut(&b, MIME_PARSE_SUBJECT_MAX);
                m->subject = mp_bdup(c, &b);
            }
            buf_cleanup(&b);
            free(s);
        }
    }
    if (have[F_DATE] && c->rc == 0) {
        size_t n;
        char *s = mp_unfold(c, &fs[F_DATE], &n);

        if (s != NULL && mime_parse_date(s, n, &m->date) != 0)
            mp_defect(c, "the Date cannot be read");
        free(s);
    }
    if (have[F_MSGID] && c->rc == 0) {
        size_t n;
        char *s = mp_unfold(c, &fs[F_MSGID], &n);
        const char *lt, *gt = NULL;
        struct buf b;

        if (s == NULL || n == 0) {
            free(s);
            return;
        }
        /* RFC 5322 §3.6.4 msg-id, as written; else the value. */
        lt = memchr(s, '<', n);
        if (lt != NULL)
            gt = memchr(lt, '>', n - (size_t)(lt - s));
        if (gt == NULL) {
            lt = s;
            gt = s + n - 1;
        }
        buf_init(&b, MP_BIG);
        {
            const unsigned char *u = (const unsigned char *)lt;
            size_t un = (size_t)(gt - lt) + 1;

            mp_check(c, mp_put_raw(&b, u, un, !mp_utf8_valid(u, un)));
        }
        if (b.data != NULL) {
            mp_oneline(&b);
            if (b.len <= MIME_PARSE_MSGID_MAX)
                m->message_id = mp_bdup(c, &b);
        }
        buf_cleanup(&b);
        free(s);
    }
}

/* The body text from the chosen leaf: transfer-decoded, then UTF-8. */
static void
mp_body(struct mp_ctx *c)
{
    const struct mp_leaf *l = c->plain.found  ? &c->plain
                              : c->html.found ? &c->html
                                              : NULL;
    struct buf raw, text;
    struct mp_emit *e;

    c->m->body = "";
    c->m->body_len = 0;
    if (l == NULL || c->rc != 0)
        return;
    if (l == &c->html)
        c->m->flags |= MIME_PARSE_F_HTML;
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        c->rc = -ENOMEM;
        return;
    }
    buf_init(&raw, MP_BIG);
    buf_init(&text, MP_BIG);
    e->sink = mp_sink_buf;
    e->arg = &raw;
    e->left = UINT64_MAX;
    mp_decode(c->in + l->off, l->len, l->cte, e);
    if (e->rc != 0) {
        c->rc = -ENOMEM;
    } else if (raw.len > 0) {
        mp_check(c, buf_reserve(&text, raw.len));
        if (c->rc == 0)
            mp_check(c, mp_conv(&text, l->charset,
                                (const unsigned char *)raw.data, raw.len));
    }
    free(e);
    buf_cleanup(&raw);
    if (c->rc == 0 && text.len > 0) {
        size_t n;
        char *s = buf_take(&text, &n);

        c->m->body = s;
        c->m->body_len = n;
        c->m->mem_body = s;
    }
    buf_cleanup(&text);
}

int
mime_parse(const void *msg, size_t len, struct mime_parse_msg *out)
{
    struct mp_ctx c;
    size_t hstart = 0, hend, bstart;

    if (out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    out->from.name = "";
    out->from.address = "";
    out->subject = "";
    out->message_id = "";
    out->body = "";
    if (msg == NULL || len == 0) {
        snprintf(out->why, sizeof(out->why),
                 "empty message: there is nothing to read");
        return RM_E_INVAL;
    }
    memset(&c, 0, sizeof(c));
    c.m = out;
    c.in = msg;
    c.len = len;
    out->in = msg;
    out->in_len = len;
    /* An mbox "From " line before the header (RFC 4155) is skipped. */
    if (len >= 5 && memcmp(c.in, "From ", 5) == 0) {
        const unsigned char *nl = memchr(c.in, '\n', len);

        hstart = nl != NULL ? (size_t)(nl - c.in) + 1 : len;
    }
    if (mp_header_end(c.in, hstart, len, &hend, &bstart) == 0) {
        mp_defect(&c, "no header fields");
        out->flags |= MIME_PARSE_F_NO_HEADERS;
    }
    out->hdr_off = hstart;
    out->hdr_len = hend - hstart;
    mp_envelope(&c, hstart, hend);
    mp_part(&c, hstart, len, 0, 0);
    mp_body(&c);
    out->atts = c.atts;
    out->n_atts = c.n_atts;
    out->mem = c.arena;
    if (c.rc != 0) {
        mime_parse_cleanup(out);
        snprintf(out->why, sizeof(out->why),
                 "out of memory while reading the message");
        return c.rc;
    }
    return 0;
}

void
mime_parse_cleanup(struct mime_parse_msg *m)
{
    if (m == NULL)
        return;
    mp_arena_free(m->mem);
    free(m->mem_body);
    m->mem = NULL;
    m->mem_body = NULL;
    m->from.name = "";
    m->from.address = "";
    m->to = m->cc = m->bcc = NULL;
    m->n_to = m->n_cc = m->n_bcc = 0;
    m->subject = "";
    m->message_id = "";
    m->body = "";
    m->body_len = 0;
    m->atts = NULL;
    m->n_atts = 0;
}

/* ---- serving the data ------------------------------------------------ */

int
mime_parse_att_decode(const struct mime_parse_msg *m, unsigned index,
                      uint64_t offset, uint64_t max, mime_parse_sink_fn sink,
                      void *arg)
{
    const struct mime_parse_att *a;
    struct mp_emit *e;
    int rc;

    if (sink == NULL)
        return RM_E_INVAL;
    if (m == NULL || index >= m->n_atts)
        return RM_E_NOTFOUND;
    a = &m->atts[index];
    if (max == 0 || offset >= a->size)
        return 0;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    e->sink = sink;
    e->arg = arg;
    e->skip = offset;
    e->left = max;
    mp_decode(m->in + a->off, a->len, a->cte, e);
    rc = e->rc;
    free(e);
    return rc;
}

int
mime_parse_att_read(const struct mime_parse_msg *m, unsigned index,
                    uint64_t offset, size_t max, struct buf *out)
{
    size_t len0 = out->len;
    int rc;

    if (m == NULL || index >= m->n_atts)
        return RM_E_NOTFOUND;
    rc = mime_parse_att_decode(m, index, offset, max, mp_sink_buf, out);
    if (rc != 0)
        buf_truncate(out, len0);
    return rc;
}

int
mime_parse_body_read(const struct mime_parse_msg *m, uint64_t offset,
                     size_t max, struct buf *out)
{
    size_t n;

    if (m == NULL || offset >= m->body_len)
        return 0;
    n = m->body_len - (size_t)offset;
    if (n > max)
        n = max;
    return buf_append(out, m->body + offset, n);
}

int
mime_parse_headers_text(const struct mime_parse_msg *m, size_t max,
                        struct buf *out)
{
    const unsigned char *p;
    size_t len0 = out->len, n, i = 0, used = 0, line_cut = 0;
    int rc = 0, cut = 0;

    if (m == NULL || m->in == NULL)
        return 0;
    p = m->in + m->hdr_off;
    n = m->hdr_len;
    while (i < n && rc == 0) {
        char two[3];
        size_t k, w;
        const void *src;
        int bad;

        if (p[i] == 0) {
            i++;
            continue;
        }
        k = p[i] < 0x80 ? 1 : mp_utf8_seq(p + i, n - i, &bad);
        if (p[i] >= 0x80 && bad) {
            /* One octet as Latin-1; the rest of the subpart next. */
            k = 1;
            two[0] = (char)(0xC0 | (p[i] >> 6));
            two[1] = (char)(0x80 | (p[i] & 0x3F));
            src = two;
            w = 2;
        } else {
            src = p + i;
            w = k;
        }
        if (used + w > max) {
            cut = 1;
            break;
        }
        rc = buf_append(out, src, w);
        used += w;
        i += k;
        if (p[i - 1] == '\n')
            line_cut = used;
    }
    if (rc == 0 && cut && line_cut > 0)
        buf_truncate(out, len0 + line_cut);
    if (rc != 0)
        buf_truncate(out, len0);
    return rc;
}

/* ---- dates ----------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (the civil-days
   computation: years counted from March, in 400-year eras). */
static int64_t
mp_days(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
mp_mdays(int y, int m)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return mdays[m - 1];
}

/* A named zone (RFC 5322 §4.3) in minutes east; 0 for military and
   unknown ones ("-0000"). 1 when the word is a zone name. */
static int
mp_zone_name(const char *w, size_t n, int *off)
{
    static const struct {
        const char *name;
        int off;
    } zones[] = {{"ut", 0},        {"utc", 0},       {"gmt", 0},
                 {"z", 0},         {"est", -5 * 60}, {"edt", -4 * 60},
                 {"cst", -6 * 60}, {"cdt", -5 * 60}, {"mst", -7 * 60},
                 {"mdt", -6 * 60}, {"pst", -8 * 60}, {"pdt", -7 * 60},
                 {"cet", 60},      {"cest", 120},    {"bst", 60},
                 {"eet", 120},     {"eest", 180},    {"jst", 9 * 60}};

    for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
        if (strlen(zones[i].name) == n &&
            strncasecmp(w, zones[i].name, n) == 0) {
            *off = zones[i].off;
            return 1;
        }
    }
    if (n == 1) {
        *off = 0; /* military (§4.3: treat as -0000) */
        return 1;
    }
    return 0;
}

int
mime_parse_date(const char *s, size_t len, int64_t *t)
{
    static const char mon3[] = "janfebmaraprmayjunjulaugsepoctnovdec";
    int day = -1, mon = -1, hh = -1, mi = 0, ss = 0, zone = 0, pm = -1;
    int have_zone = 0;
    long year = -1;
    int ydig = 0;
    size_t i = 0;

    while (i < len) {
        unsigned char ch = (unsigned char)s[i];
        size_t j;

        if (ch == '(') {
            int rc = 0;

            i = mp_comment((const unsigned char *)s, i, len, NULL, &rc);
            continue;
        }
        if (ch >= '0' && ch <= '9') {
            long v = 0;

            for (j = i; j < len && s[j] >= '0' && s[j] <= '9'; j++) {
                if (v < 100000)
                    v = v * 10 + (s[j] - '0');
            }
            if (j < len && s[j] == ':' && hh < 0 && j - i <= 2) {
                /* hour ":" minute [":" second] (§3.3) */
                size_t k = j + 1, k0 = k;

                hh = (int)v;
                mi = 0;
                while (k < len && k - k0 < 2 && s[k] >= '0' && s[k] <= '9')
                    mi = mi * 10 + (s[k++] - '0');
                if (k == k0)
                    return RM_E_INVAL;
                if (k < len && s[k] == ':') {
                    k0 = ++k;
                    while (k < len && k - k0 < 2 && s[k] >= '0' && s[k] <= '9')
                        ss = ss * 10 + (s[k++] - '0');
                    if (k == k0)
                        return RM_E_INVAL;
                }
                if (k < len && s[k] == '.') /* fractions: not in 5322 */
                    for (k++; k < len && s[k] >= '0' && s[k] <= '9'; k++)
                        ;
                i = k;
                continue;
            }
            if (day < 0 && j - i <= 2 && v >= 1 && v <= 31 && year < 0) {
                day = (int)v;
            } else if (year < 0) {
                year = v;
                ydig = (int)(j - i);
            } else if (day < 0 && j - i <= 2) {
                day = (int)v;
            }
            i = j;
            continue;
        }
        if ((ch == '+' || ch == '-') && hh >= 0 && !have_zone) {
            int v = 0;

            for (j = i + 1; j < len && j - i <= 4 && s[j] >= '0' && s[j] <= '9';
                 j++)
                v = v * 10 + (s[j] - '0');
            if (j - i == 5 && (j == len || s[j] < '0' || s[j] > '9')) {
                if (v % 100 > 59)
                    return RM_E_INVAL;
                zone = (v / 100) * 60 + v % 100;
                if (ch == '-')
                    zone = -zone;
                have_zone = 1;
                i = j;
                continue;
            }
            i++;
            continue;
        }
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) {
            int off;

            for (j = i; j < len && ((s[j] >= 'a' && s[j] <= 'z') ||
                                    (s[j] >= 'A' && s[j] <= 'Z'));
                 j++)
                ;
            if (mon < 0 && j - i >= 3) {
                for (int k = 0; k < 12; k++) {
                    if (strncasecmp(s + i, mon3 + 3 * k, 3) == 0) {
                        mon = k + 1;
                        break;
                    }
                }
                if (mon > 0) {
                    i = j;
                    continue;
                }
            }
            if (j - i == 2 && strncasecmp(s + i, "am", 2) == 0) {
                pm = 0;
            } else if (j - i == 2 && strncasecmp(s + i, "pm", 2) == 0) {
                pm = 1;
            } else if (hh >= 0 && !have_zone &&
                       mp_zone_name(s + i, j - i, &off)) {
                zone = off;
                have_zone = 1;
            }
            i = j;
            continue;
        }
        i++;
    }
    if (day < 0 || mon < 0 || year < 0)
        return RM_E_INVAL;
    /* §4.3: two-digit years from 1950, three-digit ones from 1900. */
    if (ydig <= 2)
        year += year < 50 ? 2000 : 1900;
    else if (ydig == 3)
        year += 1900;
    if (hh < 0)
        hh = 0;
    if (pm == 1 && hh < 12)
        hh += 12;
    else if (pm == 0 && hh == 12)
        hh = 0;
    if (year < 1000 || year > 9999 || day > mp_mdays((int)year, mon) ||
        hh > 23 || mi > 59 || ss > 60)
        return RM_E_INVAL;
    *t = mp_days(year, mon, day) * 86400 + hh * 3600 + mi * 60 + ss -
         (int64_t)zone * 60;
    return 0;
}
