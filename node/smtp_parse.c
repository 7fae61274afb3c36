/*
 * smtp_parse: pure, resumable SMTP tokenizers. See smtp_parse.h for the
 * contract. No I/O, no allocation, no mutable globals: only const tables.
 *
 * Character classes are our own ASCII tests, not <ctype.h>: the wire is
 * bytes, and ctype depends on the locale.
 */
#include "node/smtp_parse.h"

#include <string.h>

/* ---- small helpers --------------------------------------------------- */

static int
is_alpha(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int
is_alnum(unsigned char c)
{
    return is_alpha(c) || is_digit(c);
}

static int
is_hexdig(unsigned char c)
{
    return is_digit(c) || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

static int
is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static unsigned char
to_upper(unsigned char c)
{
    return (c >= 'a' && c <= 'z') ? (unsigned char)(c - 'a' + 'A') : c;
}

/* RFC 5322 §3.2.3 atext, ASCII part. */
static int
is_atext(unsigned char c)
{
    if (is_alnum(c))
        return 1;
    return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/*
 * Length of the well-formed UTF-8 sequence at p[0..n) (RFC 3629 §4:
 * no overlong forms, no surrogates, nothing above U+10FFFF), or 0.
 * p[0] must be >= 0x80.
 */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t need;

    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    }
    return need;
}

int
smtp_slice_eq(struct smtp_slice s, const char *lit)
{
    size_t n = strlen(lit);

    if (s.len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (to_upper((unsigned char)s.p[i]) != to_upper((unsigned char)lit[i]))
            return 0;
    }
    return 1;
}

/* ---- 1. lines ------------------------------------------------------- */

void
smtp_line_init(struct smtp_line_state *ls, size_t max)
{
    ls->max = max;
    ls->discarding = 0;
}

static const char *
find_lf(const char *p, size_t n)
{
    return memchr(p, '\n', n);
}

enum smtp_tok
smtp_line_next(struct smtp_line_state *ls, const char *in, size_t len,
               struct smtp_slice *line, size_t *used)
{
    const char *lf;
    size_t scan;

    line->p = NULL;
    line->len = 0;
    *used = 0;
    if (len == 0)
        return SMTP_TOK_AGAIN;

    if (ls->discarding) {
        lf = find_lf(in, len);
        if (lf == NULL) {
            *used = len;
            return SMTP_TOK_AGAIN;
        }
        ls->discarding = 0;
        *used = (size_t)(lf - in) + 1;
        return SMTP_TOK_TOOLONG;
    }

    /* A line may hold at most max bytes with its CRLF (§4.5.3.1.4), so
       its LF, if acceptable, lies within the first max bytes. */
    scan = len < ls->max ? len : ls->max;
    lf = find_lf(in, scan);
    if (lf != NULL) {
        size_t i = (size_t)(lf - in);
        *used = i + 1;
        /* §2.3.8: LF alone is not a line end; we refuse the line rather
           than guess. */
        if (i == 0 || in[i - 1] != '\r')
            return SMTP_TOK_BARELF;
        line->p = in;
        line->len = i - 1;
        return SMTP_TOK_LINE;
    }
    if (len < ls->max)
        return SMTP_TOK_AGAIN;

    /* Too long: its LF may already be here, else drop what we have. */
    lf = find_lf(in + scan, len - scan);
    if (lf != NULL) {
        *used = (size_t)(lf - in) + 1;
        return SMTP_TOK_TOOLONG;
    }
    ls->discarding = 1;
    *used = len;
    return SMTP_TOK_AGAIN;
}

/* ---- 2. commands ---------------------------------------------------- */

static const char *const verb_names[SMTP_V__COUNT] = {
    [SMTP_V_UNKNOWN] = "UNKNOWN", [SMTP_V_HELO] = "HELO",
    [SMTP_V_EHLO] = "EHLO",       [SMTP_V_MAIL] = "MAIL",
    [SMTP_V_RCPT] = "RCPT",       [SMTP_V_DATA] = "DATA",
    [SMTP_V_BDAT] = "BDAT",       [SMTP_V_RSET] = "RSET",
    [SMTP_V_NOOP] = "NOOP",       [SMTP_V_VRFY] = "VRFY",
    [SMTP_V_EXPN] = "EXPN",       [SMTP_V_HELP] = "HELP",
    [SMTP_V_QUIT] = "QUIT",       [SMTP_V_STARTTLS] = "STARTTLS",
    [SMTP_V_AUTH] = "AUTH",
};

const char *
smtp_verb_name(enum smtp_verb v)
{
    if ((unsigned)v >= SMTP_V__COUNT || verb_names[v] == NULL)
        return "UNKNOWN";
    return verb_names[v];
}

const char *
smtp_perr_text(enum smtp_perr e)
{
    switch (e) {
    case SMTP_PERR_OK:
        return "ok";
    case SMTP_PERR_SYNTAX:
        return "syntax error in command";
    case SMTP_PERR_PATH:
        return "bad address syntax";
    case SMTP_PERR_PATH_TOOLONG:
        return "address too long";
    case SMTP_PERR_PARAM:
        return "malformed parameter";
    case SMTP_PERR_PARAM_DUP:
        return "parameter given twice";
    case SMTP_PERR_TOOMANY:
        return "too many parameters";
    case SMTP_PERR_UTF8:
        return "non-ASCII address without SMTPUTF8";
    }
    return "unknown error";
}

/* RFC 5321 §4.5.3.1.1-3 */
#define LOCAL_MAX 64
#define DOMAIN_MAX 255
#define PATH_MAX_OCTETS 256

/* A cursor over one MAIL/RCPT argument. */
struct cur {
    const unsigned char *p;
    size_t n;
    size_t i;
    int utf8_ok;
    int saw_utf8;
};

static int
cur_peek(const struct cur *c)
{
    return c->i < c->n ? c->p[c->i] : -1;
}

static int
cur_eat(struct cur *c, unsigned char ch)
{
    if (c->i < c->n && c->p[c->i] == ch) {
        c->i++;
        return 1;
    }
    return 0;
}

/*
 * A non-ASCII character at the cursor (RFC 6531 §3.3 UTF8-non-ascii):
 * OK (cursor moved), or the error to return.
 */
static enum smtp_perr
cur_utf8(struct cur *c)
{
    size_t k;

    if (!c->utf8_ok)
        return SMTP_PERR_UTF8;
    k = utf8_len(c->p + c->i, c->n - c->i);
    if (k == 0)
        return SMTP_PERR_PATH;
    c->i += k;
    c->saw_utf8 = 1;
    return SMTP_PERR_OK;
}

/* Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str]
   (§4.1.2), and RFC 6531 §3.3 sub-domain =/ U-label. */
static enum smtp_perr
parse_domain(struct cur *c)
{
    for (;;) {
        int last_hyphen = 0;
        size_t start = c->i;

        while (c->i < c->n) {
            unsigned char ch = c->p[c->i];
            if (is_alnum(ch)) {
                c->i++;
                last_hyphen = 0;
            } else if (ch == '-' && c->i > start) {
                c->i++;
                last_hyphen = 1;
            } else if (ch >= 0x80) {
                enum smtp_perr e = cur_utf8(c);
                if (e != SMTP_PERR_OK)
                    return e;
                last_hyphen = 0;
            } else {
                break;
            }
        }
        if (c->i == start || last_hyphen)
            return SMTP_PERR_PATH;
        if (!cur_eat(c, '.'))
            return SMTP_PERR_OK;
        /* One trailing dot, "example.com." (the DNS root), is taken
           and judged as "example.com" (relay policy, local domains);
           "example.com.." still fails at the caller. */
        if (c->i >= c->n ||
            !(is_alnum(c->p[c->i]) || (unsigned char)c->p[c->i] >= 0x80))
            return SMTP_PERR_OK;
    }
}

/* Snum = 1*3DIGIT, 0-255 (§4.1.3). Returns chars used or 0. */
static size_t
parse_snum(const unsigned char *p, size_t n)
{
    size_t i = 0;
    unsigned v = 0;

    while (i < n && i < 3 && is_digit(p[i])) {
        v = v * 10 + (unsigned)(p[i] - '0');
        i++;
    }
    if (i == 0 || v > 255 || (i < n && is_digit(p[i])))
        return 0;
    return i;
}

/* IPv4-address-literal = Snum 3("." Snum) (§4.1.3), exactly p[0..n). */
static int
ipv4_ok(const unsigned char *p, size_t n)
{
    size_t i = 0;

    for (int part = 0; part < 4; part++) {
        size_t k;
        if (part > 0) {
            if (i >= n || p[i] != '.')
                return 0;
            i++;
        }
        k = parse_snum(p + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return i == n;
}

/*
 * IPv6-addr (§4.1.3), exactly p[0..n): 1*4HEXDIG groups separated by
 * ":", at most one "::", optionally ending in an IPv4 address (two
 * groups' worth). RFC 5321's grammar lets "::" stand for at least two
 * groups; we follow RFC 4291 §2.2 (at least one), as inet_pton and
 * real clients do.
 */
static int
ipv6_ok(const unsigned char *p, size_t n)
{
    size_t i = 0;
    int groups = 0, dcolon = 0;

    if (n >= 2 && p[0] == ':' && p[1] == ':') {
        dcolon = 1;
        i = 2;
        if (i == n)
            return 1;
    } else if (n >= 1 && p[0] == ':') {
        return 0;
    }
    for (;;) {
        size_t k = 0;
        size_t j = i;

        /* An IPv4 tail? It has a '.' before the next ':'. */
        while (j < n && p[j] != ':' && p[j] != '.')
            j++;
        if (j < n && p[j] == '.') {
            if (!ipv4_ok(p + i, n - i))
                return 0;
            groups += 2;
            break;
        }
        while (i + k < n && k < 5 && is_hexdig(p[i + k]))
            k++;
        if (k == 0 || k > 4)
            return 0;
        i += k;
        groups++;
        if (i == n)
            break;
        if (p[i] != ':')
            return 0;
        i++;
        if (i < n && p[i] == ':') {
            if (dcolon)
                return 0;
            dcolon = 1;
            i++;
            if (i == n)
                break;
        } else if (i == n) {
            return 0; /* trailing single ':' */
        }
    }
    return dcolon ? groups <= 7 : groups == 8;
}

/* address-literal = "[" ( IPv4 / "IPv6:" IPv6 / General ) "]" (§4.1.3);
   the cursor is on '['. */
static enum smtp_perr
parse_addr_literal(struct cur *c)
{
    const unsigned char *p;
    size_t start = c->i + 1, end = start, n;

    while (end < c->n && c->p[end] != ']')
        end++;
    if (end >= c->n)
        return SMTP_PERR_PATH;
    p = c->p + start;
    n = end - start;
    c->i = end + 1;

    if (n >= 5 && to_upper(p[0]) == 'I' && to_upper(p[1]) == 'P' &&
        to_upper(p[2]) == 'V' && p[3] == '6' && p[4] == ':')
        return ipv6_ok(p + 5, n - 5) ? SMTP_PERR_OK : SMTP_PERR_PATH;
    if (ipv4_ok(p, n))
        return SMTP_PERR_OK;

    /* General-address-literal = Standardized-tag ":" 1*dcontent,
       Standardized-tag = Ldh-str, dcontent = %d33-90 / %d94-126. */
    {
        size_t i = 0;
        while (i < n && (is_alnum(p[i]) || p[i] == '-'))
            i++;
        if (i == 0 || p[i - 1] == '-' || i >= n || p[i] != ':')
            return SMTP_PERR_PATH;
        i++;
        if (i == n)
            return SMTP_PERR_PATH;
        for (; i < n; i++) {
            if (!((p[i] >= 33 && p[i] <= 90) || (p[i] >= 94 && p[i] <= 126)))
                return SMTP_PERR_PATH;
        }
    }
    return SMTP_PERR_OK;
}

/* Local-part = Dot-string / Quoted-string (§4.1.2), RFC 6531 §3.3
   adding UTF8-non-ascii to atext and qtextSMTP. */
static enum smtp_perr
parse_local(struct cur *c, int *quoted)
{
    enum smtp_perr e;

    *quoted = 0;
    if (cur_eat(c, '"')) {
        *quoted = 1;
        for (;;) {
            int ch = cur_peek(c);
            if (ch < 0)
                return SMTP_PERR_PATH;
            if (ch == '"') {
                c->i++;
                return SMTP_PERR_OK;
            }
            if (ch == '\\') {
                /* quoted-pairSMTP = %d92 %d32-126 */
                c->i++;
                ch = cur_peek(c);
                if (ch < 32 || ch > 126)
                    return SMTP_PERR_PATH;
                c->i++;
            } else if (ch >= 0x80) {
                if ((e = cur_utf8(c)) != SMTP_PERR_OK)
                    return e;
            } else if (ch >= 32 && ch <= 126) {
                /* qtextSMTP = %d32-33 / %d35-91 / %d93-126 */
                c->i++;
            } else {
                return SMTP_PERR_PATH;
            }
        }
    }
    /* Dot-string = Atom *("." Atom) */
    for (;;) {
        size_t start = c->i;
        while (c->i < c->n) {
            unsigned char ch = c->p[c->i];
            if (is_atext(ch)) {
                c->i++;
            } else if (ch >= 0x80) {
                if ((e = cur_utf8(c)) != SMTP_PERR_OK)
                    return e;
            } else {
                break;
            }
        }
        if (c->i == start)
            return SMTP_PERR_PATH;
        if (!cur_eat(c, '.'))
            return SMTP_PERR_OK;
    }
}

/*
 * Path = "<" [ A-d-l ":" ] Mailbox ">" (§4.1.2), or "<>" for MAIL.
 * The cursor is on '<'.
 */
static enum smtp_perr
parse_path(struct cur *c, int is_rcpt, struct smtp_cmd *cmd)
{
    enum smtp_perr e;
    size_t mb, local_len, dom_start, dom_len = 0;
    int quoted;

    if (!cur_eat(c, '<'))
        return SMTP_PERR_PATH;
    if (cur_eat(c, '>')) {
        /* Reverse-path = Path / "<>"; a Forward-path is never null. */
        if (is_rcpt)
            return SMTP_PERR_PATH;
        cmd->null_path = 1;
        return SMTP_PERR_OK;
    }
    /* A-d-l = At-domain *( "," At-domain ): MUST accept, MAY ignore
       (§4.1.1.3, Appendix C). We check it and drop it. */
    if (cur_peek(c) == '@') {
        do {
            if (!cur_eat(c, '@'))
                return SMTP_PERR_PATH;
            if (cur_peek(c) == '[')
                e = parse_addr_literal(c);
            else
                e = parse_domain(c);
            if (e != SMTP_PERR_OK)
                return e;
        } while (cur_eat(c, ','));
        if (!cur_eat(c, ':'))
            return SMTP_PERR_PATH;
    }
    mb = c->i;
    if ((e = parse_local(c, &quoted)) != SMTP_PERR_OK)
        return e;
    local_len = c->i - mb;
    if (cur_eat(c, '@')) {
        dom_start = c->i;
        if (cur_peek(c) == '[')
            e = parse_addr_literal(c);
        else
            e = parse_domain(c);
        if (e != SMTP_PERR_OK)
            return e;
        dom_len = c->i - dom_start;
    } else {
        /* §4.1.1.3: RCPT TO:<Postmaster> needs no domain (the local
           part is case-insensitive there, §4.5.1). */
        struct smtp_slice lp = {(const char *)c->p + mb, local_len};
        if (!is_rcpt || quoted || !smtp_slice_eq(lp, "postmaster"))
            return SMTP_PERR_PATH;
    }
    if (!cur_eat(c, '>'))
        return SMTP_PERR_PATH;
    if (local_len > LOCAL_MAX || dom_len > DOMAIN_MAX ||
        (c->i - 1 - mb) + 2 > PATH_MAX_OCTETS)
        return SMTP_PERR_PATH_TOOLONG;
    cmd->path.p = (const char *)c->p + mb;
    cmd->path.len = c->i - 1 - mb;
    cmd->path_utf8 = c->saw_utf8;
    return SMTP_PERR_OK;
}

/*
 * esmtp-param *(SP esmtp-param) (§4.1.2):
 *   esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
 *   esmtp-value   = 1*(%d33-60 / %d62-126), RFC 6531 §3.3 =/ UTF8-non-ascii
 * We accept several SPs between parameters.
 */
static enum smtp_perr
parse_params(struct cur *c, struct smtp_cmd *cmd)
{
    while (c->i < c->n) {
        struct smtp_param *pm;
        size_t ks;

        if (!cur_eat(c, ' '))
            return SMTP_PERR_SYNTAX;
        while (cur_eat(c, ' '))
            ;
        if (c->i >= c->n)
            break; /* cannot happen: arg has trailing spaces removed */
        if (cmd->nparams == SMTP_PARAMS_MAX)
            return SMTP_PERR_TOOMANY;
        pm = &cmd->params[cmd->nparams];
        ks = c->i;
        if (!is_alnum(c->p[c->i]))
            return SMTP_PERR_PARAM;
        while (c->i < c->n && (is_alnum(c->p[c->i]) || c->p[c->i] == '-'))
            c->i++;
        pm->key.p = (const char *)c->p + ks;
        pm->key.len = c->i - ks;
        pm->value.p = NULL;
        pm->value.len = 0;
        if (cur_eat(c, '=')) {
            size_t vs = c->i;
            while (c->i < c->n && c->p[c->i] != ' ') {
                unsigned char ch = c->p[c->i];
                if (ch >= 0x80) {
                    size_t k;
                    if (!c->utf8_ok)
                        return SMTP_PERR_PARAM;
                    k = utf8_len(c->p + c->i, c->n - c->i);
                    if (k == 0)
                        return SMTP_PERR_PARAM;
                    c->i += k;
                } else if (ch >= 33 && ch <= 126 && ch != '=') {
                    c->i++;
                } else {
                    return SMTP_PERR_PARAM;
                }
            }
            if (c->i == vs)
                return SMTP_PERR_PARAM;
            pm->value.p = (const char *)c->p + vs;
            pm->value.len = c->i - vs;
        } else if (c->i < c->n && c->p[c->i] != ' ') {
            return SMTP_PERR_PARAM;
        }
        for (size_t j = 0; j < cmd->nparams; j++) {
            const struct smtp_slice *k = &cmd->params[j].key;
            if (k->len == pm->key.len) {
                size_t m = 0;
                while (m < k->len && to_upper((unsigned char)k->p[m]) ==
                                         to_upper((unsigned char)pm->key.p[m]))
                    m++;
                if (m == k->len)
                    return SMTP_PERR_PARAM_DUP;
            }
        }
        cmd->nparams++;
    }
    return SMTP_PERR_OK;
}

/* "FROM:" / "TO:" [SP] Path [SP Mail-parameters] (§4.1.1.2, §4.1.1.3) */
static enum smtp_perr
parse_mail_rcpt(struct smtp_cmd *cmd, int utf8_ok)
{
    const char *kw = cmd->verb == SMTP_V_MAIL ? "FROM:" : "TO:";
    size_t kwlen = strlen(kw);
    struct cur c;
    struct smtp_slice head;
    enum smtp_perr e;

    if (cmd->arg.len < kwlen)
        return SMTP_PERR_SYNTAX;
    head.p = cmd->arg.p;
    head.len = kwlen;
    if (!smtp_slice_eq(head, kw))
        return SMTP_PERR_SYNTAX;
    c.p = (const unsigned char *)cmd->arg.p;
    c.n = cmd->arg.len;
    c.i = kwlen;
    c.utf8_ok = utf8_ok;
    c.saw_utf8 = 0;
    (void)cur_eat(&c, ' ');
    e = parse_path(&c, cmd->verb == SMTP_V_RCPT, cmd);
    if (e != SMTP_PERR_OK)
        return e;
    return parse_params(&c, cmd);
}

enum smtp_perr
smtp_cmd_parse(const char *line, size_t len, int utf8_ok, struct smtp_cmd *cmd)
{
    size_t i = 0, end;

    memset(cmd, 0, sizeof(*cmd));
    cmd->verb = SMTP_V_UNKNOWN;
    while (i < len && line[i] != ' ')
        i++;
    cmd->verb_word.p = line;
    cmd->verb_word.len = i;
    if (i < len) {
        end = len;
        while (end > i + 1 && line[end - 1] == ' ')
            end--;
        cmd->arg.p = line + i + 1;
        cmd->arg.len = end - (i + 1);
    } else {
        cmd->arg.p = line + len;
        cmd->arg.len = 0;
    }
    for (int v = SMTP_V_UNKNOWN + 1; v < SMTP_V__COUNT; v++) {
        if (smtp_slice_eq(cmd->verb_word, verb_names[v])) {
            cmd->verb = (enum smtp_verb)v;
            break;
        }
    }
    /* Commands are printable text and SP (§4.1.1, §2.3.8): NUL, CR, TAB
       or any other control byte is a syntax error whatever the verb. */
    for (size_t k = 0; k < len; k++) {
        if (is_ctl((unsigned char)line[k]))
            return SMTP_PERR_SYNTAX;
    }
    if (cmd->verb == SMTP_V_MAIL || cmd->verb == SMTP_V_RCPT)
        return parse_mail_rcpt(cmd, utf8_ok);
    return SMTP_PERR_OK;
}

int
smtp_param_size(struct smtp_slice v, uint64_t *out)
{
    uint64_t n = 0;

    /* RFC 1870 §3: size-value ::= 1*20DIGIT */
    if (v.len == 0 || v.len > 20)
        return -1;
    for (size_t i = 0; i < v.len; i++) {
        unsigned d;
        if (!is_digit((unsigned char)v.p[i]))
            return -1;
        d = (unsigned)(v.p[i] - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *out = n;
    return 0;
}

/* RFC 3461 §4: xtext = *( xchar / hexchar ), xchar = %d33-126 except "+"
   and "=", hexchar = "+" 2(%x30-39 / %x41-46). */
static int
xtext_ok(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '+') {
            for (int k = 1; k <= 2; k++) {
                unsigned char h;
                if (i + (size_t)k >= n)
                    return 0;
                h = p[i + (size_t)k];
                if (!(is_digit(h) || (h >= 'A' && h <= 'F')))
                    return 0;
            }
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return 0;
        }
    }
    return 1;
}

int
smtp_param_xtext_ok(struct smtp_slice v)
{
    if (v.len == 0)
        return -1;
    return xtext_ok((const unsigned char *)v.p, v.len) ? 0 : -1;
}

int
smtp_param_orcpt_ok(struct smtp_slice v)
{
    size_t i = 0;

    /* RFC 3461 §4.2: addr-type ";" xtext, addr-type = atom */
    while (i < v.len && is_atext((unsigned char)v.p[i]))
        i++;
    if (i == 0 || i >= v.len || v.p[i] != ';' || i + 1 == v.len)
        return -1;
    return xtext_ok((const unsigned char *)v.p + i + 1, v.len - i - 1) ? 0 : -1;
}

int
smtp_param_notify(struct smtp_slice v, unsigned *out)
{
    static const struct {
        const char *name;
        unsigned bit;
    } kw[] = {{"NEVER", 1}, {"SUCCESS", 2}, {"FAILURE", 4}, {"DELAY", 8}};
    unsigned bits = 0;
    size_t i = 0;

    /* RFC 3461 §4.1: "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) */
    if (v.len == 0)
        return -1;
    while (i <= v.len) {
        size_t j = i;
        struct smtp_slice item;
        size_t k;

        while (j < v.len && v.p[j] != ',')
            j++;
        item.p = v.p + i;
        item.len = j - i;
        for (k = 0; k < sizeof(kw) / sizeof(kw[0]); k++) {
            if (smtp_slice_eq(item, kw[k].name))
                break;
        }
        if (k == sizeof(kw) / sizeof(kw[0]))
            return -1;
        bits |= kw[k].bit;
        i = j + 1;
    }
    if ((bits & 1) && bits != 1)
        return -1;
    *out = bits;
    return 0;
}

int
smtp_bdat_arg(struct smtp_slice arg, uint64_t *size, int *last)
{
    uint64_t n = 0;
    size_t i = 0;
    struct smtp_slice rest;

    /* RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ],
       chunk-size = 1*DIGIT, end-marker = "LAST" */
    while (i < arg.len && is_digit((unsigned char)arg.p[i])) {
        unsigned d = (unsigned)(arg.p[i] - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
        i++;
    }
    if (i == 0)
        return -1;
    if (i == arg.len) {
        *size = n;
        *last = 0;
        return 0;
    }
    if (arg.p[i] != ' ')
        return -1;
    rest.p = arg.p + i + 1;
    rest.len = arg.len - i - 1;
    if (!smtp_slice_eq(rest, "LAST"))
        return -1;
    *size = n;
    *last = 1;
    return 0;
}

/* ---- 3. message data ------------------------------------------------ */

/*
 * The DATA machine works on bytes, one at a time, so that any cut of the
 * stream gives the same result. States:
 *   BOL     at the start of a line
 *   TEXT    inside a line
 *   CR      a CR was seen (held back: bare or the start of CRLF?)
 *   DOT     "." at the start of a line (held back and dropped: a stuffing
 *           dot, §4.5.2, or the start of the terminator)
 *   DOT_CR  "." CR at the start of a line
 *   END     the terminator was seen
 * crlf_bol tells whether the line began after a real CRLF (or is the
 * first): only then does "." CRLF end the data (§4.1.1.4). A bare CR or
 * LF also starts a line (normalised, or while scanning after an error),
 * but never one that can end the data: this is what stops smuggling.
 */
enum ds_state { DS_BOL = 0, DS_TEXT, DS_CR, DS_DOT, DS_DOT_CR, DS_END };

enum hdr_phase { HP_NAME = 0, HP_VALUE, HP_SKIP };

enum hdr_which { HW_NONE = 0, HW_FROM, HW_SUBJECT, HW_MSGID, HW_DATE };

#define DS_DEF_MAX_LINE 1000     /* RFC 5321 §4.5.3.1.6 */
#define DS_DEF_MAX_HEADER 102400 /* Postfix header_size_limit */
#define DS_DEF_MAX_RECEIVED 100  /* RFC 5321 §6.3: a large threshold */

/* One feed call: the input and the pending run of input bytes for out. */
struct feed {
    struct smtp_data_state *ds;
    const char *in;
    const char *run;
    size_t runlen;
    smtp_data_out out;
    void *arg;
};

/* A rule broke: stop checking rules and capturing headers. */
static int
ds_halted(const struct smtp_data_state *ds)
{
    return ds->error != SMTP_DERR_NONE;
}

/* No more output: a rule broke or out refused. A failing out does not
   stop the rule checks, so that the results do not depend on when runs
   are flushed, i.e. on how the input was cut. */
static int
ds_mute(const struct smtp_data_state *ds)
{
    return ds->error != SMTP_DERR_NONE || ds->cb_error != 0;
}

int
smtp_data_ok(const struct smtp_data_state *ds)
{
    return !ds_mute(ds);
}

void
smtp_data_init(struct smtp_data_state *ds)
{
    size_t max_line = ds->max_line ? ds->max_line : DS_DEF_MAX_LINE;
    size_t max_header = ds->max_header ? ds->max_header : DS_DEF_MAX_HEADER;
    uint64_t max_size = ds->max_size ? ds->max_size : UINT64_MAX;
    unsigned max_received =
        ds->max_received ? ds->max_received : DS_DEF_MAX_RECEIVED;
    int normalise = ds->normalise;

    memset(ds, 0, sizeof(*ds));
    ds->max_line = max_line;
    ds->max_header = max_header;
    ds->max_size = max_size;
    ds->max_received = max_received;
    ds->normalise = normalise;
    ds->error = SMTP_DERR_NONE;
    ds->in_header = 1;
    ds->st = DS_BOL;
    ds->crlf_bol = 1;
    ds->hdr_phase = HP_NAME;
    ds->hdr_which = HW_NONE;
}

static void
feed_flush(struct feed *f)
{
    if (f->runlen > 0 && !ds_mute(f->ds) && f->out != NULL) {
        int rc = f->out(f->arg, f->run, f->runlen);
        if (rc != 0)
            f->ds->cb_error = rc;
    }
    f->runlen = 0;
}

/* Bytes before the one that broke a rule reach out; none after. */
static void
feed_error(struct feed *f, enum smtp_data_err e)
{
    if (ds_halted(f->ds))
        return;
    feed_flush(f);
    f->ds->error = e;
}

/* n bytes of input starting at in[i], in order. */
static void
emit_in(struct feed *f, size_t i, size_t n)
{
    if (ds_mute(f->ds))
        return;
    if (f->runlen > 0 && f->run + f->runlen == f->in + i) {
        f->runlen += n;
        return;
    }
    feed_flush(f);
    f->run = f->in + i;
    f->runlen = n;
}

static void
emit_crlf_lit(struct feed *f)
{
    if (ds_mute(f->ds))
        return;
    feed_flush(f);
    if (f->out != NULL && !ds_mute(f->ds)) {
        int rc = f->out(f->arg, "\r\n", 2);
        if (rc != 0)
            f->ds->cb_error = rc;
    }
}

static char *
hdr_buf(struct smtp_data_state *ds, int which)
{
    switch ((enum hdr_which)which) {
    case HW_FROM:
        return ds->from;
    case HW_SUBJECT:
        return ds->subject;
    case HW_MSGID:
        return ds->msgid;
    case HW_DATE:
        return ds->date;
    case HW_NONE:
        break;
    }
    return NULL;
}

/* The field being captured is over: its value is final. */
static void
hdr_field_done(struct smtp_data_state *ds)
{
    if (ds->hdr_which != HW_NONE)
        ds->hdr_done |= 1u << ds->hdr_which;
    ds->hdr_which = HW_NONE;
    ds->hdr_val_len = 0;
    ds->hdr_sp = 0;
    ds->hdr_fold = 0;
    ds->hdr_full = 0;
}

/* Length of the value cut at k without a trailing incomplete UTF-8
   character or trailing spaces. */
static size_t
hdr_cut(const char *b, size_t k)
{
    size_t lead = k, want = 1;

    while (lead > 0 && k - lead < 4 &&
           ((unsigned char)b[lead - 1] & 0xc0) == 0x80)
        lead--;
    if (lead > 0) {
        unsigned char c = (unsigned char)b[lead - 1];
        if (c >= 0xf0)
            want = 4;
        else if (c >= 0xe0)
            want = 3;
        else if (c >= 0xc0)
            want = 2;
        if (want > 1 && k - (lead - 1) < want)
            k = lead - 1;
    }
    while (k > 0 && b[k - 1] == ' ')
        k--;
    return k;
}

static void
hdr_put(struct smtp_data_state *ds, unsigned char c)
{
    char *b = hdr_buf(ds, ds->hdr_which);

    if (b == NULL || ds->hdr_full)
        return;
    if (ds->hdr_val_len >= SMTP_HDR_VALUE_MAX - 1) {
        ds->hdr_val_len = hdr_cut(b, ds->hdr_val_len);
        b[ds->hdr_val_len] = '\0';
        ds->hdr_full = 1;
        return;
    }
    /* The values end up in logs: no control bytes. */
    if (is_ctl(c))
        c = '?';
    b[ds->hdr_val_len++] = (char)c;
    b[ds->hdr_val_len] = '\0';
}

static void
hdr_value_byte(struct smtp_data_state *ds, unsigned char c)
{
    if (ds->hdr_which == HW_NONE)
        return;
    if (c == ' ' || c == '\t') {
        /* Held back: dropped at the start and end (trim) and at a fold. */
        if (ds->hdr_val_len > 0 && !ds->hdr_fold)
            ds->hdr_sp++;
        return;
    }
    if (ds->hdr_val_len > 0) {
        size_t sp = ds->hdr_fold ? 1 : ds->hdr_sp;
        while (sp-- > 0)
            hdr_put(ds, ' ');
    }
    ds->hdr_fold = 0;
    ds->hdr_sp = 0;
    hdr_put(ds, c);
}

/* The field name is complete (a ':' was seen). */
static void
hdr_name_done(struct feed *f)
{
    struct smtp_data_state *ds = f->ds;
    struct smtp_slice name;
    int which = HW_NONE;

    /* the obsolete syntax allows WSP before the ':' (RFC 5322 §4.5) */
    while (ds->hdr_name_len > 0 && ds->hdr_name_len <= sizeof(ds->hdr_name) &&
           (ds->hdr_name[ds->hdr_name_len - 1] == ' ' ||
            ds->hdr_name[ds->hdr_name_len - 1] == '\t'))
        ds->hdr_name_len--;
    name.p = ds->hdr_name;
    name.len = ds->hdr_name_len;
    ds->hdr_phase = HP_VALUE;
    if (ds->hdr_name_len > sizeof(ds->hdr_name))
        return;
    if (smtp_slice_eq(name, "Received")) {
        /* §6.3: count Received fields to detect loops. */
        ds->received++;
        if (ds->received > ds->max_received)
            feed_error(f, SMTP_DERR_LOOP);
        return;
    }
    if (smtp_slice_eq(name, "From"))
        which = HW_FROM;
    else if (smtp_slice_eq(name, "Subject"))
        which = HW_SUBJECT;
    else if (smtp_slice_eq(name, "Message-ID"))
        which = HW_MSGID;
    else if (smtp_slice_eq(name, "Date"))
        which = HW_DATE;
    if (which != HW_NONE && !(ds->hdr_done & (1u << which))) {
        ds->hdr_which = which;
        ds->hdr_val_len = 0;
        ds->hdr_sp = 0;
        ds->hdr_fold = 0;
        ds->hdr_full = 0;
    }
}

/* One unstuffed content byte (in[i]) of the current line. */
static void
data_byte(struct feed *f, size_t i)
{
    struct smtp_data_state *ds = f->ds;
    unsigned char c = (unsigned char)f->in[i];
    int bol = ds->line_len == 0;

    ds->size++;
    if (c >= 0x80)
        ds->saw_8bit = 1;
    if (ds_halted(ds))
        return;
    if (ds->size > ds->max_size) {
        feed_error(f, SMTP_DERR_TOOBIG);
        return;
    }
    ds->line_len++;
    /* §4.5.3.1.6: 1000 octets with the CRLF, which this line still needs */
    if (ds->line_len + 2 > ds->max_line) {
        feed_error(f, SMTP_DERR_LINE_TOOLONG);
        return;
    }
    if (ds->in_header) {
        ds->hdr_bytes++;
        if (ds->hdr_bytes > ds->max_header) {
            feed_error(f, SMTP_DERR_HDR_TOOBIG);
            return;
        }
        if (bol && (c == ' ' || c == '\t')) {
            /* RFC 5322 §2.2.3: a folded line continues the field (the
               fold was noted at the line end); before any field it is
               no header line */
            if (ds->hdr_phase == HP_NAME)
                ds->hdr_phase = HP_SKIP;
            emit_in(f, i, 1);
            return;
        }
        if (bol) {
            hdr_field_done(ds);
            ds->hdr_phase = HP_NAME;
            ds->hdr_name_len = 0;
        }
        if (ds->hdr_phase == HP_NAME) {
            if (c == ':') {
                hdr_name_done(f);
                if (ds_halted(ds))
                    return;
            } else if (ds->hdr_name_len < sizeof(ds->hdr_name)) {
                ds->hdr_name[ds->hdr_name_len++] = (char)c;
            } else {
                ds->hdr_name_len = sizeof(ds->hdr_name) + 1;
            }
        } else if (ds->hdr_phase == HP_VALUE) {
            hdr_value_byte(ds, c);
        }
    }
    emit_in(f, i, 1);
}

/*
 * End of the current line. real: a CRLF from the input, whose LF is
 * in[i] (its CR is in[i - 1] when i > 0, else it came in an earlier
 * call); otherwise a bare CR / LF, normalised to CRLF.
 */
static void
data_eol(struct feed *f, size_t i, int real)
{
    struct smtp_data_state *ds = f->ds;

    ds->size += 2;
    if (!ds_halted(ds)) {
        if (ds->size > ds->max_size) {
            feed_error(f, SMTP_DERR_TOOBIG);
        } else if (ds->in_header) {
            if (ds->line_len == 0) {
                /* RFC 5322 §2.1: the empty line ends the header section */
                hdr_field_done(ds);
                ds->in_header = 0;
            } else {
                ds->hdr_bytes += 2;
                if (ds->hdr_bytes > ds->max_header)
                    feed_error(f, SMTP_DERR_HDR_TOOBIG);
                else if (ds->hdr_which != HW_NONE) {
                    ds->hdr_sp = 0;
                    ds->hdr_fold = 1;
                }
                if (ds->hdr_phase == HP_NAME)
                    ds->hdr_phase = HP_SKIP;
            }
        }
    }
    if (real && i > 0)
        emit_in(f, i - 1, 2);
    else
        emit_crlf_lit(f);
    ds->line_len = 0;
    ds->crlf_bol = real;
    ds->st = DS_BOL;
}

/* A bare CR or LF (RFC 5321 §2.3.8): an error unless normalising; either
   way it ends the line, but the next line cannot end the data. */
static void
data_bare(struct feed *f, size_t i, enum smtp_data_err e)
{
    if (!f->ds->normalise)
        feed_error(f, e);
    data_eol(f, i, 0);
}

/* Run the machine over in[0..len); dots: DATA (1) or BDAT (0). Returns
   the bytes consumed: len, or up to the end of the terminator. */
static size_t
data_run(struct feed *f, size_t len, int dots)
{
    struct smtp_data_state *ds = f->ds;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)f->in[i];
    again:
        switch ((enum ds_state)ds->st) {
        case DS_BOL:
            if (c == '.' && dots) {
                ds->st = DS_DOT;
                break;
            }
            if (c == '\r')
                ds->st = DS_CR;
            else if (c == '\n')
                data_bare(f, i, SMTP_DERR_BARE_LF);
            else {
                data_byte(f, i);
                ds->st = DS_TEXT;
            }
            break;
        case DS_TEXT:
            if (c == '\r')
                ds->st = DS_CR;
            else if (c == '\n')
                data_bare(f, i, SMTP_DERR_BARE_LF);
            else
                data_byte(f, i);
            break;
        case DS_CR:
            if (c == '\n') {
                data_eol(f, i, 1);
                break;
            }
            data_bare(f, i, SMTP_DERR_BARE_CR);
            goto again;
        case DS_DOT:
            if (c == '\r') {
                ds->st = DS_DOT_CR;
            } else if (c == '\n') {
                data_bare(f, i, SMTP_DERR_BARE_LF);
            } else {
                data_byte(f, i);
                ds->st = DS_TEXT;
            }
            break;
        case DS_DOT_CR:
            if (c == '\n') {
                if (ds->crlf_bol) {
                    /* CRLF "." CRLF (§4.1.1.4): the end of data. */
                    ds->st = DS_END;
                    if (ds->in_header && !ds_halted(ds))
                        hdr_field_done(ds);
                    return i + 1;
                }
                /* A "." line after a bare line end: unstuffed, empty. */
                data_eol(f, i, 1);
                break;
            }
            data_bare(f, i, SMTP_DERR_BARE_CR);
            goto again;
        case DS_END:
            return i;
        }
    }
    return len;
}

enum smtp_data_res
smtp_data_feed(struct smtp_data_state *ds, const char *in, size_t len,
               size_t *used, smtp_data_out out, void *arg)
{
    struct feed f = {ds, in, NULL, 0, out, arg};

    if (ds->st == DS_END) {
        *used = 0;
        return SMTP_DATA_END;
    }
    *used = data_run(&f, len, 1);
    feed_flush(&f);
    return ds->st == DS_END ? SMTP_DATA_END : SMTP_DATA_AGAIN;
}

enum smtp_data_res
smtp_bdat_feed(struct smtp_data_state *ds, const char *in, size_t len,
               smtp_data_out out, void *arg)
{
    struct feed f = {ds, in, NULL, 0, out, arg};

    (void)data_run(&f, len, 0);
    feed_flush(&f);
    return ds_mute(ds) ? SMTP_DATA_ERROR : SMTP_DATA_AGAIN;
}

enum smtp_data_res
smtp_bdat_end(struct smtp_data_state *ds, smtp_data_out out, void *arg)
{
    struct feed f = {ds, "", NULL, 0, out, arg};

    if (ds->st == DS_CR)
        data_bare(&f, 0, SMTP_DERR_BARE_CR);
    feed_flush(&f);
    if (ds->in_header && !ds_halted(ds))
        hdr_field_done(ds);
    ds->st = DS_END;
    return ds_mute(ds) ? SMTP_DATA_ERROR : SMTP_DATA_END;
}
