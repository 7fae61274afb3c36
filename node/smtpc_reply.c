/*
 * smtpc_reply: the SMTP client's reply parser (see smtp_client.h).
 *
 * Pure: no I/O, no allocation, no globals, so that it is unit-tested and
 * fuzzed alone (library rm_parse). Replies per RFC 5321 §4.2: "NNN SP
 * text" ends a reply, "NNN-text" continues it, every line of one reply
 * carries the same code (§4.2.1). Enhanced status codes per RFC 3463 /
 * RFC 2034 §4 ("class.subject.detail" at the start of the text). EHLO
 * keywords per RFC 5321 §4.1.1.1: one per line after the first.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/rm_error.h"
#include "node/smtp_client.h"

static int
smtpc_is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static char
smtpc_upper(char ch)
{
    return ch >= 'a' && ch <= 'z' ? (char)(ch - 'a' + 'A') : ch;
}

/* Case-insensitive comparison of s[0..n) with the upper-case word w. */
static int
smtpc_word_eq(const char *s, size_t n, const char *w)
{
    size_t k = strlen(w);

    if (n != k)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (smtpc_upper(s[i]) != w[i])
            return 0;
    }
    return 1;
}

/*
 * RFC 3463 §2: status-code = class "." subject "." detail, class one of
 * 2, 4, 5 (and, RFC 2034 §4, the same class as the reply code), subject
 * and detail 1 to 3 digits. It must be followed by a space or the end of
 * the line. Returns its length, or 0 if the text does not start with one.
 */
static size_t
smtpc_enh_len(const char *t, size_t n, int code)
{
    size_t i = 0, k;

    if (code / 100 == 3 || n < 5 || t[0] != (char)('0' + code / 100) ||
        t[1] != '.')
        return 0;
    i = 2;
    for (k = 0; i < n && smtpc_is_digit(t[i]) && k < 4; i++, k++)
        ;
    if (k == 0 || k > 3 || i >= n || t[i] != '.')
        return 0;
    i++;
    for (k = 0; i < n && smtpc_is_digit(t[i]) && k < 4; i++, k++)
        ;
    if (k == 0 || k > 3)
        return 0;
    if (i < n && t[i] != ' ')
        return 0;
    return i;
}

/* Append text to r->text: "; " between lines, control bytes shown as
   '?' (the text ends up in logs and bounces), cut to fit. */
static void
smtpc_text_add(struct smtpc_reply *r, const char *t, size_t n)
{
    size_t have = strnlen(r->text, sizeof(r->text));

    if (have >= sizeof(r->text) - 1)
        return;
    if (have > 0 && n > 0) {
        for (const char *sep = "; "; *sep && have < sizeof(r->text) - 1; sep++)
            r->text[have++] = *sep;
    }
    for (size_t i = 0; i < n && have < sizeof(r->text) - 1; i++) {
        unsigned char ch = (unsigned char)t[i];
        r->text[have++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    r->text[have] = '\0';
}

/* RFC 1870 §4: "SIZE" [SP number]; a missing, zero or unrepresentable
   number means no fixed limit. */
static uint64_t
smtpc_size_param(const char *s, size_t n)
{
    uint64_t v = 0;

    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d;

        if (!smtpc_is_digit(s[i]))
            return 0;
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0; /* overflow: larger than anything we could send */
        v = v * 10 + d;
    }
    return v;
}

/* One ehlo-line (RFC 5321 §4.1.1.1): keyword *(SP param). Unknown
   keywords are ignored. "AUTH=" is the pre-RFC 4954 form some servers
   still send. */
static void
smtpc_ehlo_line(struct smtpc_reply_parser *p, const char *t, size_t n)
{
    size_t kw = 0;
    const char *args;
    size_t alen;

    while (kw < n && t[kw] != ' ' && t[kw] != '=')
        kw++;
    args = t + kw;
    alen = n - kw;
    if (alen > 0) {
        args++;
        alen--;
    }
    while (alen > 0 && args[alen - 1] == ' ')
        alen--;
    if (smtpc_word_eq(t, kw, "PIPELINING")) {
        p->ext |= SMTPC_EXT_PIPELINING;
    } else if (smtpc_word_eq(t, kw, "SIZE")) {
        p->ext |= SMTPC_EXT_SIZE;
        p->size_max = smtpc_size_param(args, alen);
    } else if (smtpc_word_eq(t, kw, "8BITMIME")) {
        p->ext |= SMTPC_EXT_8BITMIME;
    } else if (smtpc_word_eq(t, kw, "SMTPUTF8")) {
        p->ext |= SMTPC_EXT_SMTPUTF8;
    } else if (smtpc_word_eq(t, kw, "STARTTLS")) {
        p->ext |= SMTPC_EXT_STARTTLS;
    } else if (smtpc_word_eq(t, kw, "DSN")) {
        p->ext |= SMTPC_EXT_DSN;
    } else if (smtpc_word_eq(t, kw, "ENHANCEDSTATUSCODES")) {
        p->ext |= SMTPC_EXT_ENHANCED;
    } else if (smtpc_word_eq(t, kw, "AUTH")) {
        /* RFC 4954 §3: AUTH SP mechanism *(SP mechanism) */
        size_t i = 0;
        while (i < alen) {
            size_t j = i;
            while (j < alen && args[j] != ' ')
                j++;
            if (smtpc_word_eq(args + i, j - i, "PLAIN"))
                p->ext |= SMTPC_EXT_AUTH_PLAIN;
            i = j + 1;
        }
    }
}

void
smtpc_reply_parser_init(struct smtpc_reply_parser *p, struct smtpc_reply *r,
                        int ehlo)
{
    memset(p, 0, sizeof(*p));
    p->r = r;
    p->ehlo = ehlo;
    if (r != NULL)
        memset(r, 0, sizeof(*r));
}

int
smtpc_reply_line(struct smtpc_reply_parser *p, const char *line, size_t len)
{
    const char *t;
    size_t n, e;
    int code, last;

    /* RFC 5321 §4.5.3.1.5 allows 512 octets a reply line; we take up to
       SMTPC_REPLY_LINE_MAX (CRLF included) and so many lines. */
    if (len + 2 > SMTPC_REPLY_LINE_MAX || p->lines >= SMTPC_REPLY_LINES_MAX)
        return RM_E_PROTO;
    /* §4.2: Reply-code = %x32-35 %x30-35 %x30-39 */
    if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
        line[1] > '5' || !smtpc_is_digit(line[2]))
        return RM_E_PROTO;
    if (len == 3 || line[3] == ' ')
        last = 1;
    else if (line[3] == '-')
        last = 0;
    else
        return RM_E_PROTO;
    code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (p->lines > 0 && code != p->code)
        return RM_E_PROTO; /* §4.2.1: one code per reply */
    t = len > 4 ? line + 4 : line + len;
    n = len > 4 ? len - 4 : 0;
    if (p->lines == 0)
        p->code = code;
    if (p->ehlo && p->lines > 0 && code / 100 == 2) {
        /* the first line is the greeting, the others keywords */
        smtpc_ehlo_line(p, t, n);
    } else if ((e = smtpc_enh_len(t, n, code)) > 0) {
        if (p->r != NULL && p->r->enh[0] == '\0') {
            memcpy(p->r->enh, t, e); /* e <= 9 < sizeof(enh) */
            p->r->enh[e] = '\0';
        }
        t += e;
        n -= e;
        while (n > 0 && *t == ' ') {
            t++;
            n--;
        }
    }
    p->lines++;
    if (p->r != NULL) {
        p->r->code = code;
        smtpc_text_add(p->r, t, n);
    }
    return last ? 1 : 0;
}
