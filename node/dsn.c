/*
 * dsn: see dsn.h. Delivery status notifications (RFC 3464) in a
 * multipart/report (RFC 6522), global types when the original needed
 * SMTPUTF8 (RFC 6533), laid out like Postfix's bounces.
 *
 * Everything written here comes from our caller or from a remote server
 * (the diagnostic). Fields we copy verbatim (addresses, host names,
 * ENVID, ORCPT) are validated and refused when they could break a line;
 * the diagnostic, which a remote server chose, is never refused but
 * sanitised: control characters become spaces, 8-bit octets that are not
 * allowed become '?', and the text is folded to stay within the line
 * limits of RFC 5322 §2.1.1.
 */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "common/rm_error.h"
#include "node/dsn.h"
#include "node/mime_compose.h"

/* RFC 5322 §2.1.1: lines SHOULD be at most 78 and MUST be at most 998
   characters, excluding CRLF. */
#define DSN_LINE_SOFT 78
#define DSN_LINE_HARD 998
/* A word of the diagnostic longer than the soft limit gets a line of its
   own and is cut only past this many octets: a long URL in a reply stays
   whole in practice, and no line comes near DSN_LINE_HARD. */
#define DSN_WORD_CUT 900
/* Longest address, host name, ENVID or ORCPT we copy verbatim. RFC 3461
   §4.2 bounds ORCPT at 500 characters, §4.4 ENVID at 100; RFC 5321
   §4.5.3.1.3 a path at 256 octets. With the longest field name in front
   ("Original-Recipient: ", 20) every such line stays far under 998. */
#define DSN_TOKEN_MAX 500
/* RFC 1035 §2.3.4 (as text, without the trailing dot). */
#define DSN_HOST_MAX 253
/* Tries to draw a boundary that does not occur in the original. */
#define DSN_BOUNDARY_TRIES 8

#define DSN_TRY(x)                                                             \
    do {                                                                       \
        int dsn_rc_ = (x);                                                     \
        if (dsn_rc_ != 0)                                                      \
            return dsn_rc_;                                                    \
    } while (0)

/* What a token may contain (dsn_token_ok). */
#define DSN_TOK_SPACE 0x1 /* SP allowed (a quoted local part) */
#define DSN_TOK_ANGLE 0x2 /* '<' and '>' refused (written inside <>) */

/* ---- characters ------------------------------------------------------ */

/*
 * A field copied verbatim: present, at most max octets, no control
 * characters (so no CR or LF), no SP unless DSN_TOK_SPACE, 8-bit only as
 * well-formed UTF-8 and only when utf8 (RFC 6531/6532).
 */
static int
dsn_token_ok(const char *s, size_t max, int utf8, unsigned flags)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len;

    if (s == NULL)
        return 0;
    len = strnlen(s, max + 1);
    if (len == 0 || len > max)
        return 0;
    for (size_t i = 0; i < len;) {
        if (p[i] >= 0x80) {
            size_t n = utf8 ? mime_compose_utf8_len(p + i, len - i) : 0;

            if (n == 0)
                return 0;
            i += n;
            continue;
        }
        if (p[i] < 0x20 || p[i] == 0x7F)
            return 0;
        if (p[i] == ' ' && !(flags & DSN_TOK_SPACE))
            return 0;
        if ((p[i] == '<' || p[i] == '>') && (flags & DSN_TOK_ANGLE))
            return 0;
        i++;
    }
    return 1;
}

static int
dsn_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * RFC 3463 §2: class "." subject "." detail, class 2, 4 or 5, subject and
 * detail 1*3digit. The code ends at NUL, or at SP when stop_at_sp.
 * Returns its class digit, or 0.
 */
static int
dsn_status_class(const char *s, int stop_at_sp)
{
    size_t i = 1;

    if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return 0;
    for (int part = 0; part < 2; part++) {
        size_t n = 0;

        i++; /* the dot */
        while (dsn_is_digit(s[i]) && n < 4) {
            i++;
            n++;
        }
        if (n == 0 || n > 3)
            return 0;
        if (part == 0 && s[i] != '.')
            return 0;
    }
    if (s[i] == '\0' || (stop_at_sp && s[i] == ' '))
        return s[0] - '0';
    return 0;
}

const char *
dsn_status_from_reply(int code, const char *enh, char out[16])
{
    int cls = code / 100;
    int ecls = dsn_status_class(enh, 1);

    /* RFC 3463 §2: the class of the enhanced code must agree with the
       reply's (RFC 5321 §4.2.1); anything not 2yz or 4yz counts as a
       permanent failure. */
    if (cls != 2 && cls != 4)
        cls = 5;
    if (code < 200 || code > 599)
        cls = 5;
    if (ecls != 0 && ecls == cls) {
        size_t n = strcspn(enh, " ");

        memcpy(out, enh, n); /* at most 11 octets: "5.999.999" */
        out[n] = '\0';
        return out;
    }
    snprintf(out, 16, "%d.0.0", cls);
    return out;
}

/* ---- output helpers -------------------------------------------------- */

static int
dsn_put(struct buf *out, const char *s)
{
    return buf_append(out, s, strlen(s));
}

static int
dsn_put_date(struct buf *out, const char *name, int64_t t)
{
    char d[MIME_COMPOSE_DATE_SIZE];

    DSN_TRY(mime_compose_date(t, d));
    return buf_appendf(out, "%s: %s\r\n", name, d);
}

static void
dsn_random_hex(char *out, size_t nbytes)
{
    unsigned char rnd[32];

    randombytes_buf(rnd, nbytes);
    sodium_bin2hex(out, nbytes * 2 + 1, rnd, nbytes);
}

/* ---- folding --------------------------------------------------------- */

/*
 * Writes text word by word after a prefix the caller wrote, breaking
 * lines before a word that would pass DSN_LINE_SOFT; a continuation line
 * starts with indent (" " makes it RFC 5322 §2.2.3 folding white space).
 * Text is sanitised on the way: runs of SP, HTAB, CR, LF and other
 * control characters become one SP, 8-bit octets that are not allowed
 * become '?'. The line is ended by dsn_fold_end().
 */
struct dsn_fold {
    struct buf *out;
    const char *indent;
    size_t col;
    int fresh; /* no word on this line since the prefix / indent */
    int utf8;
};

static void
dsn_fold_start(struct dsn_fold *f, struct buf *out, size_t col,
               const char *indent, int utf8)
{
    f->out = out;
    f->indent = indent;
    f->col = col;
    f->fresh = 1;
    f->utf8 = utf8;
}

static int
dsn_is_sep(unsigned char c)
{
    return c <= 0x20 || c == 0x7F;
}

/* Appends n octets of one word, replacing what may not be written. */
static int
dsn_put_clean(struct dsn_fold *f, const unsigned char *p, size_t n)
{
    size_t i = 0, run = 0;

    while (i < n) {
        size_t k = 1;

        if (p[i] >= 0x80) {
            k = f->utf8 ? mime_compose_utf8_len(p + i, n - i) : 0;
            if (k == 0) {
                DSN_TRY(buf_append(f->out, p + run, i - run));
                DSN_TRY(buf_append(f->out, "?", 1));
                i++;
                run = i;
                continue;
            }
        }
        i += k;
    }
    return buf_append(f->out, p + run, i - run);
}

static int
dsn_fold_newline(struct dsn_fold *f)
{
    DSN_TRY(dsn_put(f->out, "\r\n"));
    DSN_TRY(dsn_put(f->out, f->indent));
    f->col = strlen(f->indent);
    f->fresh = 1;
    return 0;
}

static int
dsn_fold_text(struct dsn_fold *f, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    const unsigned char *end = p + len;

    for (;;) {
        const unsigned char *w;
        size_t wlen, sep;

        while (p < end && dsn_is_sep(*p))
            p++;
        if (p == end)
            return 0;
        w = p;
        while (p < end && !dsn_is_sep(*p))
            p++;
        wlen = (size_t)(p - w);
        if (!f->fresh && f->col + 1 + wlen > DSN_LINE_SOFT)
            DSN_TRY(dsn_fold_newline(f));
        sep = f->fresh ? 0 : 1;
        /* A word with no space in it for DSN_WORD_CUT octets is cut; the
           cut never splits a UTF-8 sequence. */
        while (f->col + sep + wlen > DSN_WORD_CUT) {
            size_t n =
                DSN_WORD_CUT > f->col + sep ? DSN_WORD_CUT - f->col - sep : 0;

            /* Move the cut back to the start of a well-formed sequence
               that it would split; stray octets (written as '?') may be
               cut anywhere. */
            for (size_t k = 1; f->utf8 && k <= 3 && k <= n && n < wlen; k++) {
                if (mime_compose_utf8_len(w + n - k, wlen - (n - k)) > k) {
                    n -= k;
                    break;
                }
            }
            if (n > 0) {
                if (sep)
                    DSN_TRY(buf_append(f->out, " ", 1));
                DSN_TRY(dsn_put_clean(f, w, n));
                w += n;
                wlen -= n;
            }
            DSN_TRY(dsn_fold_newline(f));
            sep = 0;
        }
        if (sep)
            DSN_TRY(buf_append(f->out, " ", 1));
        DSN_TRY(dsn_put_clean(f, w, wlen));
        f->col += sep + wlen;
        f->fresh = 0;
    }
}

static int
dsn_fold_str(struct dsn_fold *f, const char *s)
{
    return dsn_fold_text(f, s, strlen(s));
}

static int
dsn_fold_end(struct dsn_fold *f)
{
    return dsn_put(f->out, "\r\n");
}

/* Whether a diagnostic has anything but white space and controls. */
static int
dsn_has_text(const char *s)
{
    if (s == NULL)
        return 0;
    for (; *s; s++) {
        if (!dsn_is_sep((unsigned char)*s))
            return 1;
    }
    return 0;
}

/* ---- validation ------------------------------------------------------ */

static int
dsn_rcpt_ok(const struct dsn_rcpt *rc, int utf8)
{
    int cls = dsn_status_class(rc->status, 0);

    if (!dsn_token_ok(rc->addr, DSN_TOKEN_MAX, utf8, DSN_TOK_SPACE))
        return 0;
    /* RFC 3464 §2.3.3 with RFC 3463: failed is permanent (5) or a
       temporary failure given up on (4, e.g. 4.4.7 queue lifetime);
       delayed is 4; delivered and relayed are 2. */
    switch (rc->action) {
    case DSN_FAILED:
        if (cls != 5 && cls != 4)
            return 0;
        break;
    case DSN_DELAYED:
        if (cls != 4)
            return 0;
        break;
    case DSN_DELIVERED:
    case DSN_RELAYED:
        if (cls != 2)
            return 0;
        break;
    default:
        return 0;
    }
    /* RFC 3464 §2.3.1, RFC 3461 §4.2: ORCPT is addr-type ";" xtext (RFC
       6533 §3: utf-8 text in a global DSN). */
    if (rc->orcpt != NULL && rc->orcpt[0] != '\0') {
        size_t t = 0;

        if (!dsn_token_ok(rc->orcpt, DSN_TOKEN_MAX, utf8, 0))
            return 0;
        while ((rc->orcpt[t] >= 'A' && rc->orcpt[t] <= 'Z') ||
               (rc->orcpt[t] >= 'a' && rc->orcpt[t] <= 'z') ||
               dsn_is_digit(rc->orcpt[t]) || rc->orcpt[t] == '-')
            t++;
        if (t == 0 || rc->orcpt[t] != ';' || rc->orcpt[t + 1] == '\0')
            return 0;
    }
    if (rc->remote_mta != NULL && rc->remote_mta[0] != '\0' &&
        !dsn_token_ok(rc->remote_mta, DSN_HOST_MAX, utf8, 0))
        return 0;
    if (rc->last_attempt < 0)
        return 0;
    return 1;
}

static int
dsn_report_ok(const struct dsn_report *r)
{
    int utf8;

    if (r == NULL)
        return 0;
    utf8 = r->smtputf8 != 0;
    if (!dsn_token_ok(r->reporting_mta, DSN_HOST_MAX, utf8, 0) ||
        !dsn_token_ok(r->from, DSN_TOKEN_MAX, utf8,
                      DSN_TOK_SPACE | DSN_TOK_ANGLE) ||
        /* RFC 5321 §4.5.5: never a report to the null sender. */
        !dsn_token_ok(r->to, DSN_TOKEN_MAX, utf8,
                      DSN_TOK_SPACE | DSN_TOK_ANGLE) ||
        !dsn_token_ok(r->msgid_domain, DSN_HOST_MAX, utf8, DSN_TOK_ANGLE))
        return 0;
    /* RFC 3461 §4.4: ENVID is xtext, so ASCII. */
    if (r->envid != NULL && r->envid[0] != '\0' &&
        !dsn_token_ok(r->envid, DSN_TOKEN_MAX, 0, 0))
        return 0;
    if (r->now <= 0 || r->arrival < 0 || r->retry_until < 0)
        return 0;
    if (r->orig == NULL && r->orig_len != 0)
        return 0;
    if (r->rcpts == NULL || r->nrcpts == 0)
        return 0;
    for (size_t i = 0; i < r->nrcpts; i++) {
        if (!dsn_rcpt_ok(&r->rcpts[i], utf8))
            return 0;
    }
    return 1;
}

/* ---- the parts ------------------------------------------------------- */

static const char *
dsn_action_name(enum dsn_action a)
{
    switch (a) {
    case DSN_FAILED:
        return "failed";
    case DSN_DELAYED:
        return "delayed";
    case DSN_DELIVERED:
        return "delivered";
    case DSN_RELAYED:
        return "relayed";
    }
    return "failed"; /* not reached: validated */
}

/* What the sender can do, by the subject of the status (RFC 3463 §3). */
static const char *
dsn_advice(const struct dsn_rcpt *rc)
{
    const char *st = rc->status;

    if (rc->action == DSN_DELAYED)
        return "You do not need to do anything yet: the mail system keeps "
               "trying and will tell you if it gives up.";
    if (strncmp(st + 1, ".3.4", 4) == 0 && st[5] == '\0')
        return "The message is too big for the recipient's system. Send it "
               "again in smaller pieces or without large attachments.";
    if (st[3] != '.')
        return "If the problem persists, ask your postmaster for help, "
               "including this report.";
    switch (st[2]) {
    case '1':
        return "Check the address for typing mistakes. If it is right, the "
               "mailbox no longer exists: reach the recipient another way.";
    case '2':
        return "The recipient's mailbox is full or disabled. Try again later "
               "or reach the recipient another way.";
    case '3':
        return "The recipient's mail system could not take the message. Try "
               "again later; if it keeps failing, contact its postmaster.";
    case '4':
        return "The recipient's mail server could not be reached. Check the "
               "domain part of the address, then send the message again.";
    case '5':
    case '6':
        return "The recipient's mail system did not accept the message in "
               "this form. Ask your postmaster for help, including this "
               "report.";
    case '7':
        return "The message was refused by the recipient's policy (spam "
               "filter, sender authentication or permissions). Contact the "
               "recipient's postmaster, including this report.";
    default:
        return "If the problem persists, ask your postmaster for help, "
               "including this report.";
    }
}

static int
dsn_put_para(struct buf *out, const char *const *lines)
{
    for (size_t i = 0; lines[i] != NULL; i++) {
        DSN_TRY(dsn_put(out, lines[i]));
        DSN_TRY(dsn_put(out, "\r\n"));
    }
    return 0;
}

/* "4.0 hours" / "2.5 days", for the delay warning. */
static void
dsn_duration(int64_t secs, char out[32])
{
    if (secs < 0)
        secs = 0;
    if (secs < 2 * 86400)
        snprintf(out, 32, "%.1f hours", (double)secs / 3600.0);
    else
        snprintf(out, 32, "%.1f days", (double)secs / 86400.0);
}

static int
dsn_put_notification(const struct dsn_report *r, struct buf *out,
                     const unsigned *count)
{
    static const char *const failed[] = {
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. The reasons are below.",
        "",
        "For further assistance, please send mail to your postmaster.",
        "If you do so, please include this problem report.",
        NULL};
    static const char *const delayed[] = {
        "####################################################################",
        "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
        "####################################################################",
        NULL};
    static const char *const delivered[] = {
        "Your message was successfully delivered to the destination(s)",
        "listed below. If the message was delivered to a mailbox you will",
        "receive no further notifications. Otherwise you may still receive",
        "notifications of mail delivery errors from other systems.", NULL};
    static const char *const relayed[] = {
        "Your message was relayed to the destination(s) listed below, whose",
        "mail system does not report delivery status. You may receive no",
        "further notifications, even if delivery fails there.", NULL};
    static const enum dsn_action order[] = {DSN_FAILED, DSN_DELAYED,
                                            DSN_DELIVERED, DSN_RELAYED};
    struct dsn_fold f;

    /* The host name is at most DSN_HOST_MAX: this line needs no fold. */
    DSN_TRY(buf_appendf(out, "This is the mail system at host %s.\r\n",
                        r->reporting_mta));
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        enum dsn_action a = order[k];

        if (count[a] == 0)
            continue;
        DSN_TRY(dsn_put(out, "\r\n"));
        switch (a) {
        case DSN_FAILED:
            DSN_TRY(dsn_put_para(out, failed));
            break;
        case DSN_DELAYED: {
            char d[32], until[MIME_COMPOSE_DATE_SIZE];

            DSN_TRY(dsn_put_para(out, delayed));
            dsn_duration(r->now - r->arrival, d);
            DSN_TRY(dsn_put(out, "\r\n"));
            if (r->arrival > 0)
                DSN_TRY(buf_appendf(out,
                                    "Your message could not be delivered "
                                    "for %s.\r\n",
                                    d));
            if (r->retry_until > 0) {
                DSN_TRY(mime_compose_date(r->retry_until, until));
                DSN_TRY(buf_appendf(out, "It will be retried until %s.\r\n",
                                    until));
            }
            break;
        }
        case DSN_DELIVERED:
            DSN_TRY(dsn_put_para(out, delivered));
            break;
        case DSN_RELAYED:
            DSN_TRY(dsn_put_para(out, relayed));
            break;
        }
        for (size_t i = 0; i < r->nrcpts; i++) {
            const struct dsn_rcpt *rc = &r->rcpts[i];
            int remote = rc->remote_mta != NULL && rc->remote_mta[0];

            if (rc->action != a)
                continue;
            /* The address is at most DSN_TOKEN_MAX: fits one line. */
            DSN_TRY(buf_appendf(out, "\r\n<%s>:", rc->addr));
            dsn_fold_start(&f, out, strlen(rc->addr) + 3, "    ", r->smtputf8);
            f.fresh = 0;
            if (dsn_has_text(rc->diagnostic)) {
                if (remote) {
                    DSN_TRY(dsn_fold_str(&f, "host"));
                    DSN_TRY(dsn_fold_str(&f, rc->remote_mta));
                    DSN_TRY(dsn_fold_str(&f, "said:"));
                }
                DSN_TRY(dsn_fold_str(&f, rc->diagnostic));
            } else {
                DSN_TRY(dsn_fold_str(&f, dsn_action_name(a)));
                if (remote) {
                    DSN_TRY(dsn_fold_str(&f, a == DSN_FAILED ? "at" : "to"));
                    DSN_TRY(dsn_fold_str(&f, rc->remote_mta));
                }
            }
            DSN_TRY(dsn_fold_str(&f, "(status"));
            DSN_TRY(dsn_fold_str(&f, rc->status));
            DSN_TRY(buf_append(out, ")", 1));
            f.col++;
            DSN_TRY(dsn_fold_end(&f));
            if (a == DSN_FAILED || a == DSN_DELAYED) {
                DSN_TRY(dsn_put(out, "    "));
                dsn_fold_start(&f, out, 4, "    ", 0);
                DSN_TRY(dsn_fold_str(&f, dsn_advice(rc)));
                DSN_TRY(dsn_fold_end(&f));
            }
        }
    }
    DSN_TRY(dsn_put(out, "\r\n                   The mail system\r\n"));
    return 0;
}

static int
dsn_put_status(const struct dsn_report *r, struct buf *out)
{
    struct dsn_fold f;

    /* RFC 3464 §2.2: per-message fields. */
    DSN_TRY(buf_appendf(out, "Reporting-MTA: dns; %s\r\n", r->reporting_mta));
    if (r->envid != NULL && r->envid[0] != '\0')
        DSN_TRY(buf_appendf(out, "Original-Envelope-Id: %s\r\n", r->envid));
    if (r->arrival > 0)
        DSN_TRY(dsn_put_date(out, "Arrival-Date", r->arrival));
    /* RFC 3464 §2.3: one block per recipient, each after a blank line. */
    for (size_t i = 0; i < r->nrcpts; i++) {
        const struct dsn_rcpt *rc = &r->rcpts[i];
        /* RFC 6533 §3: the "utf-8" address type for a non-ASCII address. */
        const char *type = "rfc822";

        for (const char *p = rc->addr; *p; p++) {
            if ((unsigned char)*p >= 0x80)
                type = "utf-8";
        }
        DSN_TRY(dsn_put(out, "\r\n"));
        /* RFC 3464 §2.3.1: ORCPT as received, not decoded. */
        if (rc->orcpt != NULL && rc->orcpt[0] != '\0')
            DSN_TRY(buf_appendf(out, "Original-Recipient: %s\r\n", rc->orcpt));
        DSN_TRY(
            buf_appendf(out, "Final-Recipient: %s; %s\r\n", type, rc->addr));
        DSN_TRY(buf_appendf(out, "Action: %s\r\nStatus: %s\r\n",
                            dsn_action_name(rc->action), rc->status));
        if (rc->remote_mta != NULL && rc->remote_mta[0] != '\0')
            DSN_TRY(
                buf_appendf(out, "Remote-MTA: dns; %s\r\n", rc->remote_mta));
        if (dsn_has_text(rc->diagnostic)) {
            /* RFC 3464 §2.3.6; RFC 6533 §3 allows UTF-8 in a global DSN. */
            DSN_TRY(dsn_put(out, "Diagnostic-Code: smtp; "));
            dsn_fold_start(&f, out, strlen("Diagnostic-Code: smtp; "), " ",
                           r->smtputf8);
            DSN_TRY(dsn_fold_str(&f, rc->diagnostic));
            DSN_TRY(dsn_fold_end(&f));
        }
        if (rc->last_attempt > 0)
            DSN_TRY(dsn_put_date(out, "Last-Attempt-Date", rc->last_attempt));
        if (rc->action == DSN_DELAYED && r->retry_until > 0)
            DSN_TRY(dsn_put_date(out, "Will-Retry-Until", r->retry_until));
    }
    return 0;
}

/* Length of the original's header section: up to, not including, the
   first empty line (RFC 5322 §2.1); the whole message if there is none. */
static size_t
dsn_header_len(const char *m, size_t len)
{
    size_t i = 0;

    while (i < len) {
        const char *nl;

        if (m[i] == '\n' || (m[i] == '\r' && i + 1 < len && m[i + 1] == '\n'))
            return i;
        nl = memchr(m + i, '\n', len - i);
        if (nl == NULL)
            return len;
        i = (size_t)(nl - m) + 1;
    }
    return len;
}

static int
dsn_has_8bit(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)p[i] >= 0x80)
            return 1;
    }
    return 0;
}

const char *
dsn_subject(const struct dsn_report *r)
{
    int delayed = 0;

    for (size_t i = 0; i < r->nrcpts; i++) {
        if (r->rcpts[i].action == DSN_FAILED)
            return "Undelivered Mail Returned to Sender";
        delayed |= r->rcpts[i].action == DSN_DELAYED;
    }
    return delayed ? "Delayed Mail (still being retried)"
                   : "Successful Mail Delivery Report";
}

static int
dsn_compose_all(const struct dsn_report *r, struct buf *out)
{
    unsigned count[4] = {0, 0, 0, 0};
    char msgid[33], bnd[64], date[MIME_COMPOSE_DATE_SIZE];
    const char *subject;
    const char *part3 = r->orig != NULL ? r->orig : "";
    size_t part3_len;
    int orig8, utf8 = r->smtputf8 != 0;

    for (size_t i = 0; i < r->nrcpts; i++)
        count[r->rcpts[i].action]++;
    subject = dsn_subject(r);

    part3_len = r->ret_full ? r->orig_len : dsn_header_len(part3, r->orig_len);
    orig8 = dsn_has_8bit(part3, part3_len);

    /* RFC 2046 §5.1.1: the boundary must not occur in the encapsulated
       text. Only the original can hold a line that starts with "--": all
       else we write starts with a field name, a word or an indent. */
    for (int tries = 0;; tries++) {
        if (tries == DSN_BOUNDARY_TRIES)
            return RM_E_INVAL; /* not reached with 128 random bits */
        memcpy(bnd, "=_dsn_", 6);
        dsn_random_hex(bnd + 6, 16);
        if (memmem(part3, part3_len, bnd, strlen(bnd)) == NULL)
            break;
    }
    dsn_random_hex(msgid, 16);
    DSN_TRY(mime_compose_date(r->now, date));

    /* RFC 5322 §3.6 header; RFC 3834 §5 Auto-Submitted. */
    DSN_TRY(buf_appendf(out, "Date: %s\r\n", date));
    DSN_TRY(buf_appendf(out, "From: Mail Delivery System <%s>\r\n", r->from));
    DSN_TRY(buf_appendf(out, "Subject: %s\r\n", subject));
    DSN_TRY(buf_appendf(out, "To: <%s>\r\n", r->to));
    DSN_TRY(buf_appendf(out, "Auto-Submitted: auto-replied\r\n"));
    DSN_TRY(
        buf_appendf(out, "Message-ID: <%s@%s>\r\n", msgid, r->msgid_domain));
    DSN_TRY(dsn_put(out, "MIME-Version: 1.0\r\n"));
    /* RFC 6522 §3; Postfix keeps report-type=delivery-status for the
       global variant too, and so do we. */
    DSN_TRY(buf_appendf(out,
                        "Content-Type: multipart/report; "
                        "report-type=delivery-status;\r\n"
                        "\tboundary=\"%s\"\r\n",
                        bnd));
    /* RFC 2045 §6.4: a multipart's encoding is that of its widest part. */
    if (utf8 || orig8)
        DSN_TRY(dsn_put(out, "Content-Transfer-Encoding: 8bit\r\n"));
    DSN_TRY(dsn_put(out, "\r\nThis is a MIME-encapsulated message.\r\n"));

    /* Part 1: for a person. */
    DSN_TRY(buf_appendf(out, "\r\n--%s\r\n", bnd));
    DSN_TRY(dsn_put(out, "Content-Description: Notification\r\n"
                         "Content-Type: text/plain; charset=utf-8\r\n"));
    if (utf8)
        DSN_TRY(dsn_put(out, "Content-Transfer-Encoding: 8bit\r\n"));
    DSN_TRY(dsn_put(out, "\r\n"));
    DSN_TRY(dsn_put_notification(r, out, count));

    /* Part 2: for a program (RFC 3464 §2; RFC 6533 §6.2). */
    DSN_TRY(buf_appendf(out, "\r\n--%s\r\n", bnd));
    DSN_TRY(buf_appendf(out,
                        "Content-Description: Delivery report\r\n"
                        "Content-Type: message/%sdelivery-status\r\n",
                        utf8 ? "global-" : ""));
    if (utf8)
        DSN_TRY(dsn_put(out, "Content-Transfer-Encoding: 8bit\r\n"));
    DSN_TRY(dsn_put(out, "\r\n"));
    DSN_TRY(dsn_put_status(r, out));

    /* Part 3: the original (RFC 6522 §3; RFC 6533 §6.3, §6.4). */
    DSN_TRY(buf_appendf(out, "\r\n--%s\r\n", bnd));
    DSN_TRY(buf_appendf(out, "Content-Description: %s%s\r\n",
                        count[DSN_FAILED] || count[DSN_DELAYED] ? "Undelivered "
                                                                : "",
                        r->ret_full ? "Message" : "Message Headers"));
    if (r->ret_full)
        DSN_TRY(buf_appendf(out, "Content-Type: message/%s\r\n",
                            utf8 ? "global" : "rfc822"));
    else
        DSN_TRY(buf_appendf(out, "Content-Type: %s\r\n",
                            utf8 ? "message/global-headers"
                                 : "text/rfc822-headers"));
    if (orig8)
        DSN_TRY(dsn_put(out, "Content-Transfer-Encoding: 8bit\r\n"));
    DSN_TRY(dsn_put(out, "\r\n"));
    DSN_TRY(buf_append(out, part3, part3_len));
    /* The CRLF before the delimiter belongs to it (RFC 2046 §5.1.1): end
       the original's last line first. */
    if (part3_len > 0 && part3[part3_len - 1] != '\n')
        DSN_TRY(dsn_put(out, "\r\n"));
    DSN_TRY(buf_appendf(out, "\r\n--%s--\r\n", bnd));
    return 0;
}

int
dsn_compose(const struct dsn_report *r, struct buf *out)
{
    size_t len0;
    int rc;

    if (out == NULL || !dsn_report_ok(r))
        return RM_E_INVAL;
    len0 = out->len;
    rc = dsn_compose_all(r, out);
    if (rc != 0) {
        /* Leave out as the caller gave it. */
        out->len = len0;
        if (out->data != NULL)
            out->data[len0] = '\0';
    }
    return rc;
}
