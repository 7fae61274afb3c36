/*
 * mime_compose: see mime_compose.h. A message for the MAPI bridge's
 * "send" and "save draft", composed whole (RFC 5322, RFC 2045-2047,
 * RFC 2183, RFC 2231).
 *
 * Everything written comes from a Windows program through the bridge, so
 * it is user input: fields that land in header lines are validated and
 * refused when they hold control characters (no header injection) or
 * malformed UTF-8; what is not plain ASCII is encoded, never written raw,
 * so the message is 7-bit clean and needs neither 8BITMIME nor SMTPUTF8.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/rm_error.h"
#include "node/mime_compose.h"
#include "node/smtp_parse.h"

/* RFC 5322 §2.1.1: lines SHOULD be at most 78 and MUST be at most 998
   characters, excluding CRLF. */
#define MC_LINE_SOFT 78
#define MC_LINE_HARD 998
/* RFC 2047 §2: an encoded-word is at most 75 characters. */
#define MC_EW_MAX 75
/* "=?utf-8?B?" and "?=" around the encoded text. */
#define MC_EW_OVERHEAD 12
/* Below this many columns left, an encoded-word starts a new line rather
   than carrying fewer than 6 octets (room for any UTF-8 sequence). */
#define MC_EW_MIN (MC_EW_OVERHEAD + 8)
/* Octets one encoded-word carries: (75 - 12) / 4 * 3. */
#define MC_EW_BYTES_MAX 45
/* In a name="..." parameter, folded between words as Outlook does: 42
   octets make 68-character words, so ' name="' and a word fit in 78. */
#define MC_NAME_EW_BYTES 42
/* RFC 2045 §6.7 (5), §6.8: encoded lines of at most 76 characters. */
#define MC_ENC_LINE 76
/* ASCII display names and words of a subject longer than these are
   encoded instead, so that the header can still fold at 78. */
#define MC_PHRASE_RAW_MAX 64
#define MC_WORD_RAW_MAX 64
/* An ASCII file name written as a quoted-string; longer ones take the
   RFC 2231 form, which can be continued over lines (§3). */
#define MC_FILENAME_RAW_MAX 60
/* RFC 2231 §3: the length of one continuation section's value. */
#define MC_RFC2231_SECTION 56
/* A msg-id (RFC 5322 §3.6.4) we copy: fits one line with room to spare. */
#define MC_MSGID_MAX 900

#define MC_TRY(x)                                                              \
    do {                                                                       \
        int mc_rc_ = (x);                                                      \
        if (mc_rc_ != 0)                                                       \
            return mc_rc_;                                                     \
    } while (0)

static const char mc_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char mc_hex[] = "0123456789ABCDEF";

/* ---- characters ------------------------------------------------------ */

size_t
mime_compose_utf8_len(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;

    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    }
    return n;
}

/* What a text field may hold (mc_text_ok). */
#define MC_TXT_TAB 0x1 /* HTAB allowed (it is then encoded) */
#define MC_TXT_CTL 0x2 /* every control character allowed (a body) */

/* Well-formed UTF-8; no control characters unless flags allow them. */
static int
mc_text_ok(const char *s, size_t len, unsigned flags)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < len;) {
        if (p[i] >= 0x80) {
            size_t n = mime_compose_utf8_len(p + i, len - i);

            if (n == 0)
                return 0;
            i += n;
            continue;
        }
        if ((p[i] < 0x20 || p[i] == 0x7F) && !(flags & MC_TXT_CTL) &&
            !(p[i] == '\t' && (flags & MC_TXT_TAB)))
            return 0;
        i++;
    }
    return 1;
}

/* Printable ASCII and SP only. */
static int
mc_is_print(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7E)
            return 0;
    }
    return 1;
}

/*
 * Text that can be written as it is in a header and read back the same
 * after unfolding (RFC 5322 §2.2.3) and RFC 2047 decoding: printable
 * ASCII, single spaces between words, none at either end, nothing that
 * looks like an encoded-word ("=?", RFC 2047 §6.1), no word so long that
 * the line could not fold.
 */
static int
mc_raw_ok(const char *s, size_t len, size_t word_max)
{
    size_t word = 0;

    if (!mc_is_print(s, len) || memmem(s, len, "=?", 2) != NULL)
        return 0;
    if (len > 0 && (s[0] == ' ' || s[len - 1] == ' '))
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ') {
            if (s[i + 1] == ' ')
                return 0;
            word = 0;
        } else if (++word > word_max) {
            return 0;
        }
    }
    return 1;
}

/* RFC 5322 §3.2.3 atext. */
static int
mc_is_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* RFC 2045 §5.1 token: printable ASCII but SP and tspecials. */
static int
mc_is_token_char(unsigned char c)
{
    return c > 0x20 && c < 0x7F && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* ---- dates and types ------------------------------------------------- */

int
mime_compose_date(int64_t t, char out[MIME_COMPOSE_DATE_SIZE])
{
    static const char *const wday[] = {"Sun", "Mon", "Tue", "Wed",
                                       "Thu", "Fri", "Sat"};
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt;
    struct tm tm;

    /* RFC 5322 §3.3: a 4-digit year; 253402300799 is 9999-12-31. */
    if (t < 0 || t > INT64_C(253402300799))
        return RM_E_INVAL;
    tt = (time_t)t;
    if (gmtime_r(&tt, &tm) == NULL)
        return RM_E_INVAL;
    snprintf(out, MIME_COMPOSE_DATE_SIZE, "%s, %d %s %04d %02d:%02d:%02d +0000",
             wday[tm.tm_wday], tm.tm_mday, mon[tm.tm_mon], tm.tm_year + 1900,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    return 0;
}

const char *
mime_compose_guess_type(const char *filename)
{
    /* What Windows programs attach most; the rest is octet-stream. No
       message/ or multipart/ types: those may not be base64. */
    static const struct {
        const char *ext;
        const char *type;
    } table[] = {
        {"txt", "text/plain"},
        {"log", "text/plain"},
        {"csv", "text/csv"},
        {"htm", "text/html"},
        {"html", "text/html"},
        {"xml", "application/xml"},
        {"json", "application/json"},
        {"rtf", "application/rtf"},
        {"pdf", "application/pdf"},
        {"zip", "application/zip"},
        {"gz", "application/gzip"},
        {"7z", "application/x-7z-compressed"},
        {"doc", "application/msword"},
        {"dot", "application/msword"},
        {"xls", "application/vnd.ms-excel"},
        {"ppt", "application/vnd.ms-powerpoint"},
        {"docx", "application/"
                 "vnd.openxmlformats-officedocument.wordprocessingml.document"},
        {"xlsx",
         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
        {"pptx", "application/"
                 "vnd.openxmlformats-officedocument.presentationml."
                 "presentation"},
        {"odt", "application/vnd.oasis.opendocument.text"},
        {"ods", "application/vnd.oasis.opendocument.spreadsheet"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"bmp", "image/bmp"},
        {"tif", "image/tiff"},
        {"tiff", "image/tiff"},
        {"svg", "image/svg+xml"},
        {"ics", "text/calendar"},
        {"vcf", "text/vcard"},
        {"mp3", "audio/mpeg"},
        {"wav", "audio/wav"},
        {"mp4", "video/mp4"},
    };
    const char *dot = filename != NULL ? strrchr(filename, '.') : NULL;

    if (dot != NULL && dot[1] != '\0') {
        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
            if (strcasecmp(dot + 1, table[i].ext) == 0)
                return table[i].type;
        }
    }
    return "application/octet-stream";
}

/* RFC 2045 §5.1 type "/" subtype, both tokens; not a composite type we
   would have to send unencoded (RFC 2046 §5.1, §5.2.1). */
static int
mc_type_ok(const char *t)
{
    size_t len, slash = 0;

    len = strnlen(t, MIME_COMPOSE_TYPE_MAX + 1);
    if (len == 0 || len > MIME_COMPOSE_TYPE_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '/') {
            if (slash != 0 || i == 0)
                return 0;
            slash = i;
        } else if (!mc_is_token_char((unsigned char)t[i])) {
            return 0;
        }
    }
    if (slash == 0 || slash + 1 == len)
        return 0;
    return strncasecmp(t, "multipart/", 10) != 0 &&
           strncasecmp(t, "message/", 8) != 0;
}

/* ---- validation ------------------------------------------------------ */

/* An addr-spec as the SMTP side takes it in MAIL FROM (RFC 5321 §4.1.2,
   smtp_cmd_parse), ASCII only, and nothing dropped (no source route). */
static int
mc_addr_ok(const char *addr)
{
    char line[300];
    struct smtp_cmd cmd;
    size_t len;
    int n;

    if (addr == NULL)
        return 0;
    len = strnlen(addr, 257);
    if (len == 0 || len > 256 || addr[0] == '@')
        return 0;
    n = snprintf(line, sizeof(line), "MAIL FROM:<%s>", addr);
    if (n < 0 || (size_t)n >= sizeof(line))
        return 0;
    if (smtp_cmd_parse(line, (size_t)n, 0, &cmd) != SMTP_PERR_OK ||
        cmd.verb != SMTP_V_MAIL || cmd.null_path || cmd.nparams != 0)
        return 0;
    return cmd.path.len == len && memchr(addr, '@', len) != NULL;
}

static int
mc_mailbox_ok(const struct mime_compose_addr *a)
{
    if (!mc_addr_ok(a->addr))
        return 0;
    if (a->name != NULL) {
        size_t len = strnlen(a->name, MIME_COMPOSE_NAME_MAX + 1);

        if (len > MIME_COMPOSE_NAME_MAX || !mc_text_ok(a->name, len, 0))
            return 0;
    }
    return 1;
}

static int
mc_list_ok(const struct mime_compose_addr *l, size_t n)
{
    if (n > MIME_COMPOSE_RCPTS_MAX || (n > 0 && l == NULL))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!mc_mailbox_ok(&l[i]))
            return 0;
    }
    return 1;
}

/*
 * 1*msg-id separated by white space (RFC 5322 §3.6.4), each "<" ... ">"
 * of printable ASCII without '<', '>' or SP inside, non-empty. We check
 * this much, not the dot-atom syntax of id-left and id-right: ids of
 * real messages do not always follow it and are echoed back as they
 * came.
 */
static int
mc_msgids_ok(const char *s, size_t max)
{
    size_t len, i = 0, n = 0;

    len = strnlen(s, max + 1);
    if (len > max)
        return 0;
    while (i < len) {
        size_t start;

        if (s[i] == ' ' || s[i] == '\t') {
            i++;
            continue;
        }
        if (s[i] != '<')
            return 0;
        start = ++i;
        while (i < len && s[i] != '>') {
            if (s[i] <= 0x20 || s[i] >= 0x7F || s[i] == '<')
                return 0;
            i++;
        }
        if (i == len || i == start || i - start > MC_MSGID_MAX)
            return 0;
        i++;
        n++;
    }
    return n > 0;
}

static int
mc_domain_ok(const char *d)
{
    size_t len;

    if (d == NULL)
        return 0;
    len = strnlen(d, MIME_COMPOSE_HOST_MAX + 1);
    if (len == 0 || len > MIME_COMPOSE_HOST_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)d[i];

        /* A host name (RFC 1123 §2.1), '_' tolerated. */
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
            return 0;
    }
    return 1;
}

static int
mc_msg_ok(const struct mime_compose_msg *m)
{
    if (m->date <= 0 || m->random == NULL || !mc_domain_ok(m->msgid_domain))
        return 0;
    if (!mc_mailbox_ok(&m->from) || !mc_list_ok(m->to, m->nto) ||
        !mc_list_ok(m->cc, m->ncc) || !mc_list_ok(m->bcc, m->nbcc))
        return 0;
    if (m->nto + m->ncc + m->nbcc > MIME_COMPOSE_RCPTS_MAX)
        return 0;
    if (m->subject != NULL) {
        size_t len = strnlen(m->subject, MIME_COMPOSE_SUBJECT_MAX + 1);

        if (len > MIME_COMPOSE_SUBJECT_MAX ||
            !mc_text_ok(m->subject, len, MC_TXT_TAB))
            return 0;
    }
    if (m->text == NULL && m->text_len != 0)
        return 0;
    if (m->text_len > 0 && !mc_text_ok(m->text, m->text_len, MC_TXT_CTL))
        return 0;
    if (m->in_reply_to != NULL &&
        !mc_msgids_ok(m->in_reply_to, MIME_COMPOSE_REFS_MAX))
        return 0;
    if (m->references != NULL &&
        !mc_msgids_ok(m->references, MIME_COMPOSE_REFS_MAX))
        return 0;
    if (m->nattach > MIME_COMPOSE_ATTACH_MAX ||
        (m->nattach > 0 && m->attach == NULL))
        return 0;
    for (size_t i = 0; i < m->nattach; i++) {
        const struct mime_compose_attach *a = &m->attach[i];
        size_t len;

        if (a->filename == NULL || (a->data == NULL && a->len != 0))
            return 0;
        len = strnlen(a->filename, MIME_COMPOSE_FILENAME_MAX + 1);
        if (len == 0 || len > MIME_COMPOSE_FILENAME_MAX ||
            !mc_text_ok(a->filename, len, 0))
            return 0;
        if (a->type != NULL && !mc_type_ok(a->type))
            return 0;
    }
    return 1;
}

/* ---- encoders -------------------------------------------------------- */

static int
mc_put(struct buf *out, const char *s)
{
    return buf_append(out, s, strlen(s));
}

/* Base64 (RFC 2045 §6.8) of n octets, no line breaks. */
static int
mc_b64_put(struct buf *out, const unsigned char *p, size_t n)
{
    char q[4];

    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;

        if (i + 1 < n)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        q[0] = mc_b64[(v >> 18) & 63];
        q[1] = mc_b64[(v >> 12) & 63];
        q[2] = i + 1 < n ? mc_b64[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? mc_b64[v & 63] : '=';
        MC_TRY(buf_append(out, q, 4));
    }
    return 0;
}

/* Base64 body: lines of MC_ENC_LINE characters, CRLF between lines, none
   after the last (the caller ends it). */
static int
mc_b64_body(struct buf *out, const unsigned char *p, size_t n)
{
    const size_t per_line = MC_ENC_LINE / 4 * 3;

    MC_TRY(buf_reserve(out, (n + 2) / 3 * 4 + (n / per_line + 1) * 2));
    for (size_t i = 0; i < n; i += per_line) {
        if (i > 0)
            MC_TRY(buf_append(out, "\r\n", 2));
        MC_TRY(mc_b64_put(out, p + i, n - i < per_line ? n - i : per_line));
    }
    return 0;
}

/* Whether quoted-printable must escape this octet of a line; trailing
   SP / HTAB are escaped too (RFC 2045 §6.7 (3)). */
static int
mc_qp_escape(unsigned char c, int last)
{
    if (c == ' ' || c == '\t')
        return last;
    return c < 0x20 || c > 0x7E || c == '=';
}

/* Quoted-printable (RFC 2045 §6.7) of CRLF-lined text: soft breaks keep
   every encoded line at MC_ENC_LINE or less; an escape is never cut. */
static int
mc_qp_body(struct buf *out, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t i = 0;

    while (i < len) {
        const unsigned char *eol = memmem(p + i, len - i, "\r\n", 2);
        size_t end = eol != NULL ? (size_t)(eol - p) : len;
        size_t col = 0;

        for (size_t k = i; k < end; k++) {
            int esc = mc_qp_escape(p[k], k + 1 == end);
            size_t w = esc ? 3 : 1;
            /* Room for the soft break's "=" unless this is the line's
               last octet. */
            size_t lim = k + 1 == end ? MC_ENC_LINE : MC_ENC_LINE - 1;

            if (col + w > lim) {
                MC_TRY(buf_append(out, "=\r\n", 3));
                col = 0;
            }
            if (esc) {
                char e[3] = {'=', mc_hex[p[k] >> 4], mc_hex[p[k] & 15]};

                MC_TRY(buf_append(out, e, 3));
            } else {
                MC_TRY(buf_append(out, p + k, 1));
            }
            col += w;
        }
        if (eol == NULL)
            break;
        MC_TRY(buf_append(out, "\r\n", 2));
        i = end + 2;
    }
    return 0;
}

/* ---- header lines ---------------------------------------------------- */

/*
 * One header field being written: tokens separated by SP, a line broken
 * (RFC 5322 §2.2.3 folding) before a token that would pass MC_LINE_SOFT.
 * Tokens are at most a few hundred octets, so no line nears
 * MC_LINE_HARD.
 */
struct mc_hdr {
    struct buf *out;
    size_t col;
    size_t reserve; /* columns kept free after a token (a list's ",") */
    int fresh;      /* nothing yet after the field name */
};

static int
mc_hdr_start(struct mc_hdr *h, struct buf *out, const char *name)
{
    h->out = out;
    h->col = strlen(name) + 1;
    h->reserve = 0;
    h->fresh = 1;
    MC_TRY(mc_put(out, name));
    return buf_append(out, ":", 1);
}

/* A token after SP (or folding white space). */
static int
mc_hdr_token(struct mc_hdr *h, const char *s, size_t n)
{
    if (!h->fresh && h->col + 1 + n + h->reserve > MC_LINE_SOFT) {
        MC_TRY(buf_append(h->out, "\r\n", 2));
        h->col = 0;
    }
    MC_TRY(buf_append(h->out, " ", 1));
    MC_TRY(buf_append(h->out, s, n));
    h->col += 1 + n;
    h->fresh = 0;
    return 0;
}

/* Octets right after the last token, no space ("," in a list). */
static int
mc_hdr_glue(struct mc_hdr *h, const char *s)
{
    h->col += strlen(s);
    return mc_put(h->out, s);
}

static int
mc_hdr_end(struct mc_hdr *h)
{
    return buf_append(h->out, "\r\n", 2);
}

/*
 * RFC 2047 B encoded-words for text, each after SP: as many octets as fit
 * the line (at most 45, i.e. 75 characters, §2), cut only between UTF-8
 * sequences (§5 (3)). White space between encoded-words is not part of
 * the text when decoded (§6.2), so the words can be folded anywhere.
 */
static int
mc_hdr_ew(struct mc_hdr *h, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t i = 0;

    while (i < len) {
        size_t room, max, n = 0;

        room = h->col + 1 + h->reserve < MC_LINE_SOFT
                   ? MC_LINE_SOFT - h->col - 1 - h->reserve
                   : 0;
        /* Rather fold than cut text that one word on a new line holds:
           fewer words, and parsers that wrongly keep the space between
           them in a phrase (CPython gh-128110) still read it whole. */
        if (!h->fresh && len - i <= MC_EW_BYTES_MAX &&
            room < MC_EW_OVERHEAD + (len - i + 2) / 3 * 4)
            room = 0;
        if (room < MC_EW_MIN && !h->fresh) {
            MC_TRY(buf_append(h->out, "\r\n", 2));
            h->col = 0;
            room = MC_LINE_SOFT - 1 - h->reserve;
        }
        if (room > MC_EW_MAX)
            room = MC_EW_MAX;
        if (room < MC_EW_MIN)
            room = MC_EW_MIN; /* a long field name: pass 78, not 998 */
        max = (room - MC_EW_OVERHEAD) / 4 * 3;
        while (i + n < len) {
            size_t k = p[i + n] < 0x80
                           ? 1
                           : mime_compose_utf8_len(p + i + n, len - i - n);

            if (k == 0)
                k = 1; /* not reached: validated */
            if (n + k > max)
                break;
            n += k;
        }
        MC_TRY(mc_put(h->out, " =?utf-8?B?"));
        MC_TRY(mc_b64_put(h->out, p + i, n));
        MC_TRY(mc_put(h->out, "?="));
        h->col += 1 + MC_EW_OVERHEAD + (n + 2) / 3 * 4;
        h->fresh = 0;
        i += n;
    }
    return 0;
}

/* Unstructured text (Subject): as it is when that reads back the same,
   else encoded-words. */
static int
mc_hdr_text(struct mc_hdr *h, const char *s)
{
    size_t len = strlen(s);

    if (!mc_raw_ok(s, len, MC_WORD_RAW_MAX))
        return mc_hdr_ew(h, s, len);
    for (size_t i = 0; i < len;) {
        size_t n = strcspn(s + i, " ");

        MC_TRY(mc_hdr_token(h, s + i, n));
        i += n + 1;
    }
    return 0;
}

/* A display name (RFC 5322 §3.4 phrase): atoms, a quoted-string when it
   holds specials, or encoded-words (RFC 2047 §5 (3)). */
static int
mc_hdr_phrase(struct mc_hdr *h, const char *name)
{
    size_t len = strlen(name);
    int atoms = 1;
    char q[2 * MC_PHRASE_RAW_MAX + 3];
    size_t n = 0;

    if (len > MC_PHRASE_RAW_MAX || !mc_raw_ok(name, len, MC_PHRASE_RAW_MAX))
        return mc_hdr_ew(h, name, len);
    for (size_t i = 0; i < len; i++) {
        if (name[i] != ' ' && !mc_is_atext((unsigned char)name[i]))
            atoms = 0;
    }
    if (atoms)
        return mc_hdr_text(h, name);
    /* RFC 5322 §3.2.4: quoted-pair for DQUOTE and backslash. */
    q[n++] = '"';
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '"' || name[i] == '\\')
            q[n++] = '\\';
        q[n++] = name[i];
    }
    q[n++] = '"';
    return mc_hdr_token(h, q, n);
}

static int
mc_hdr_mailbox(struct mc_hdr *h, const struct mime_compose_addr *a)
{
    char angle[260];
    size_t n = strlen(a->addr);

    if (a->name == NULL || a->name[0] == '\0')
        return mc_hdr_token(h, a->addr, n);
    MC_TRY(mc_hdr_phrase(h, a->name));
    angle[0] = '<';
    memcpy(angle + 1, a->addr, n);
    angle[n + 1] = '>';
    return mc_hdr_token(h, angle, n + 2);
}

static int
mc_put_list(struct buf *out, const char *name,
            const struct mime_compose_addr *l, size_t n)
{
    struct mc_hdr h;

    if (n == 0)
        return 0;
    MC_TRY(mc_hdr_start(&h, out, name));
    h.reserve = 1;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            MC_TRY(mc_hdr_glue(&h, ","));
        MC_TRY(mc_hdr_mailbox(&h, &l[i]));
    }
    return mc_hdr_end(&h);
}

static int
mc_put_msgids(struct buf *out, const char *name, const char *ids)
{
    struct mc_hdr h;

    if (ids == NULL)
        return 0;
    MC_TRY(mc_hdr_start(&h, out, name));
    for (size_t i = 0; ids[i] != '\0';) {
        size_t n;

        if (ids[i] == ' ' || ids[i] == '\t') {
            i++;
            continue;
        }
        n = strcspn(ids + i, " \t");
        MC_TRY(mc_hdr_token(&h, ids + i, n));
        i += n;
    }
    return mc_hdr_end(&h);
}

/* ---- the body -------------------------------------------------------- */

enum mc_cte { MC_7BIT, MC_QP, MC_B64 };

/* The text with every line end (CRLF, LF, lone CR) made CRLF. */
static int
mc_normalise(const char *s, size_t len, struct buf *norm)
{
    size_t run = 0;

    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\r' && s[i] != '\n')
            continue;
        MC_TRY(buf_append(norm, s + run, i - run));
        MC_TRY(buf_append(norm, "\r\n", 2));
        if (s[i] == '\r' && i + 1 < len && s[i + 1] == '\n')
            i++;
        run = i + 1;
    }
    MC_TRY(buf_append(norm, s + run, len - run));
    return 0;
}

/* RFC 2045 §2.7: 7bit is ASCII without NUL (we refuse every control but
   HTAB, which MTAs and clients treat badly) in lines of at most 998.
   Else quoted-printable, unless escapes would make it larger than
   base64. */
static enum mc_cte
mc_choose_cte(const char *s, size_t len)
{
    size_t line = 0, esc = 0;
    int seven = 1;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '\r' && i + 1 < len && s[i + 1] == '\n') {
            i++;
            line = 0;
            continue;
        }
        if (++line > MC_LINE_HARD)
            seven = 0;
        if (c >= 0x80 || (c < 0x20 && c != '\t') || c == 0x7F)
            seven = 0;
        if (mc_qp_escape(c, 0))
            esc++;
    }
    if (seven)
        return MC_7BIT;
    /* QP spends 3 octets per escape, base64 4 per 3. */
    return esc * 6 > len ? MC_B64 : MC_QP;
}

static const char *
mc_cte_name(enum mc_cte c)
{
    switch (c) {
    case MC_7BIT:
        return "7bit";
    case MC_QP:
        return "quoted-printable";
    case MC_B64:
        return "base64";
    }
    return "base64";
}

/* The encoded text; ends with CRLF when `terminate` (a single part: the
   message ends with a line end), else as the text does (a body part: the
   CRLF before the delimiter belongs to it, RFC 2046 §5.1.1). */
static int
mc_put_text(struct buf *out, enum mc_cte cte, const char *s, size_t len,
            int terminate)
{
    switch (cte) {
    case MC_7BIT:
        MC_TRY(buf_append(out, s, len));
        break;
    case MC_QP:
        MC_TRY(mc_qp_body(out, s, len));
        break;
    case MC_B64:
        MC_TRY(mc_b64_body(out, (const unsigned char *)s, len));
        if (len > 0)
            MC_TRY(mc_put(out, "\r\n"));
        return 0;
    }
    if (terminate && len > 0 && s[len - 1] != '\n')
        MC_TRY(mc_put(out, "\r\n"));
    return 0;
}

/* ---- attachments ----------------------------------------------------- */

/* RFC 5987 §3.2.1 attr-char: what RFC 2231 values carry unescaped. */
static int
mc_is_attr_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || strchr("!#$&+-.^_`|~", c) != NULL;
}

/*
 * The file name parameters. A short printable ASCII name without '"'
 * or '\' is a quoted-string in both. Otherwise Content-Disposition gets
 * RFC 2231 filename*=utf-8''%XX... (continued over lines in sections,
 * §3, never cutting an escape) and Content-Type a name= quoted
 * encoded-word list for clients that predate RFC 2231 (not RFC 2047
 * proper, §5 (3), but what Outlook writes and every reader decodes),
 * folded between the words.
 */
static int
mc_put_attach_headers(struct buf *out, const struct mime_compose_attach *a)
{
    const char *type =
        a->type != NULL ? a->type : mime_compose_guess_type(a->filename);
    const unsigned char *f = (const unsigned char *)a->filename;
    size_t len = strlen(a->filename);
    int raw = len <= MC_FILENAME_RAW_MAX && mc_is_print(a->filename, len) &&
              strpbrk(a->filename, "\"\\") == NULL &&
              strstr(a->filename, "=?") == NULL;
    char sec[MC_RFC2231_SECTION + 4];
    size_t nsec = 0, sn = 0, enc = 0;

    if (raw)
        return buf_appendf(out,
                           "Content-Type: %s;\r\n name=\"%s\"\r\n"
                           "Content-Disposition: attachment;\r\n"
                           " filename=\"%s\"\r\n",
                           type, a->filename, a->filename);

    MC_TRY(buf_appendf(out, "Content-Type: %s;\r\n name=\"", type));
    for (size_t i = 0; i < len;) {
        size_t n = 0;

        while (i + n < len) {
            size_t k = f[i + n] < 0x80
                           ? 1
                           : mime_compose_utf8_len(f + i + n, len - i - n);

            if (k == 0)
                k = 1; /* not reached: validated */
            if (n + k > MC_NAME_EW_BYTES)
                break;
            n += k;
        }
        MC_TRY(mc_put(out, i > 0 ? "\r\n =?utf-8?B?" : "=?utf-8?B?"));
        MC_TRY(mc_b64_put(out, f + i, n));
        MC_TRY(mc_put(out, "?="));
        i += n;
    }
    MC_TRY(mc_put(out, "\"\r\nContent-Disposition: attachment"));

    for (size_t i = 0; i < len; i++)
        enc += mc_is_attr_char(f[i]) ? 1 : 3;
    for (size_t i = 0; i <= len; i++) {
        int last = i == len;

        if (!last) {
            size_t w = mc_is_attr_char(f[i]) ? 1 : 3;

            if (sn + w <= MC_RFC2231_SECTION) {
                if (w == 1) {
                    sec[sn++] = (char)f[i];
                } else {
                    sec[sn++] = '%';
                    sec[sn++] = mc_hex[f[i] >> 4];
                    sec[sn++] = mc_hex[f[i] & 15];
                }
                continue;
            }
        }
        /* Flush a full section (or the last one). */
        if (enc <= MC_RFC2231_SECTION)
            MC_TRY(
                buf_appendf(out, ";\r\n filename*=utf-8''%.*s", (int)sn, sec));
        else
            MC_TRY(buf_appendf(out, ";\r\n filename*%zu*=%s%.*s", nsec,
                               nsec == 0 ? "utf-8''" : "", (int)sn, sec));
        nsec++;
        sn = 0;
        if (!last)
            i--; /* this octet starts the next section */
    }
    return mc_put(out, "\r\n");
}

/* ---- the message ----------------------------------------------------- */

static void
mc_hex_lower(char *out, const unsigned char *p, size_t n)
{
    static const char hx[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[p[i] >> 4];
        out[2 * i + 1] = hx[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int
mc_compose_all(const struct mime_compose_msg *m, struct buf *out,
               const struct buf *norm, const char *msgid)
{
    char date[MIME_COMPOSE_DATE_SIZE], bnd[48];
    const char *text = norm->data != NULL ? norm->data : "";
    enum mc_cte cte = mc_choose_cte(text, norm->len);
    struct mc_hdr h;

    MC_TRY(mime_compose_date(m->date, date));
    /* RFC 2046 §5.1.1: the boundary must not occur in the parts. "=_"
       cannot occur in quoted-printable or base64 (RFC 2045 §6.7 note),
       nor in the headers we write at the start of a line; only a 7bit
       text can hold it, and then the text goes quoted-printable. */
    memcpy(bnd, "=_rm_", 5);
    mc_hex_lower(bnd + 5, m->random + 16, 16);
    if (m->nattach > 0 && cte == MC_7BIT &&
        memmem(text, norm->len, bnd, strlen(bnd)) != NULL)
        cte = MC_QP;

    /* RFC 5322 §3.6: the fields, in the customary order. */
    MC_TRY(buf_appendf(out, "Date: %s\r\n", date));
    MC_TRY(mc_put_list(out, "From", &m->from, 1));
    MC_TRY(mc_put_list(out, "To", m->to, m->nto));
    MC_TRY(mc_put_list(out, "Cc", m->cc, m->ncc));
    if (m->keep_bcc)
        MC_TRY(mc_put_list(out, "Bcc", m->bcc, m->nbcc));
    if (m->subject != NULL && m->subject[0] != '\0') {
        MC_TRY(mc_hdr_start(&h, out, "Subject"));
        MC_TRY(mc_hdr_text(&h, m->subject));
        MC_TRY(mc_hdr_end(&h));
    }
    MC_TRY(buf_appendf(out, "Message-ID: %s\r\n", msgid));
    MC_TRY(mc_put_msgids(out, "In-Reply-To", m->in_reply_to));
    MC_TRY(mc_put_msgids(out, "References", m->references));
    /* RFC 8098 §2.1: receipts go to the author. */
    if (m->receipt)
        MC_TRY(mc_put_list(out, "Disposition-Notification-To", &m->from, 1));
    MC_TRY(mc_put(out, "MIME-Version: 1.0\r\n"));

    if (m->nattach == 0) {
        MC_TRY(buf_appendf(out,
                           "Content-Type: text/plain; charset=utf-8\r\n"
                           "Content-Transfer-Encoding: %s\r\n\r\n",
                           mc_cte_name(cte)));
        return mc_put_text(out, cte, text, norm->len, 1);
    }

    MC_TRY(buf_appendf(out,
                       "Content-Type: multipart/mixed;\r\n"
                       " boundary=\"%s\"\r\n\r\n"
                       "This is a multi-part message in MIME format.\r\n",
                       bnd));
    MC_TRY(buf_appendf(out,
                       "\r\n--%s\r\n"
                       "Content-Type: text/plain; charset=utf-8\r\n"
                       "Content-Transfer-Encoding: %s\r\n\r\n",
                       bnd, mc_cte_name(cte)));
    MC_TRY(mc_put_text(out, cte, text, norm->len, 0));
    for (size_t i = 0; i < m->nattach; i++) {
        const struct mime_compose_attach *a = &m->attach[i];

        MC_TRY(buf_appendf(out, "\r\n--%s\r\n", bnd));
        MC_TRY(mc_put_attach_headers(out, a));
        MC_TRY(mc_put(out, "Content-Transfer-Encoding: base64\r\n\r\n"));
        MC_TRY(mc_b64_body(out, a->data, a->len));
    }
    return buf_appendf(out, "\r\n--%s--\r\n", bnd);
}

int
mime_compose(const struct mime_compose_msg *m, struct buf *out,
             char msgid[MIME_COMPOSE_MSGID_SIZE])
{
    char id[MIME_COMPOSE_MSGID_SIZE], hex[33];
    struct buf norm;
    size_t len0, est = 0;
    int rc;

    if (m == NULL || out == NULL || !mc_msg_ok(m))
        return RM_E_INVAL;
    /* The normalised copy of the text below needs twice its length. */
    if (m->text_len > SIZE_MAX / 4)
        return RM_E_TOOBIG;
    /* Refuse what cannot fit before encoding it: base64 alone makes the
       attachments 4/3 larger. */
    if (m->max_size > 0) {
        for (size_t i = 0; i < m->nattach; i++) {
            if (m->attach[i].len > m->max_size)
                return RM_E_TOOBIG;
            est += m->attach[i].len / 3 * 4;
            if (est > m->max_size)
                return RM_E_TOOBIG;
        }
        if (m->text_len > m->max_size)
            return RM_E_TOOBIG;
    }
    mc_hex_lower(hex, m->random, 16);
    snprintf(id, sizeof(id), "<%s@%s>", hex, m->msgid_domain);

    /* Normalised, the text at most doubles (a lone LF becomes CRLF). */
    buf_init(&norm, m->text_len * 2 + 2);
    rc = mc_normalise(m->text != NULL ? m->text : "", m->text_len, &norm);
    len0 = out->len;
    if (rc == 0)
        rc = mc_compose_all(m, out, &norm, id);
    buf_cleanup(&norm);
    if (rc == 0 && m->max_size > 0 && out->len - len0 > m->max_size)
        rc = RM_E_TOOBIG;
    if (rc != 0) {
        /* Leave out as the caller gave it. */
        out->len = len0;
        if (out->data != NULL)
            out->data[len0] = '\0';
        return rc;
    }
    if (msgid != NULL)
        memcpy(msgid, id, strlen(id) + 1);
    return 0;
}
