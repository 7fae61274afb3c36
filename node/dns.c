/*
 * dns: see dns.h. Mail routing lookups (RFC 5321 §5.1, RFC 7505) on
 * libunbound, driven from the libuv loop.
 *
 * One lookup is one struct dns_lookup with a count of the sub-queries
 * (ub_resolve_async) it has running:
 *
 *   DNS_L_NEW   not started
 *   DNS_L_MX    the MX query (dns_mx only)
 *   DNS_L_ADDR  AAAA and A of every host kept, all at once (at most
 *               2 * DNS_HOSTS_MAX sub-queries per lookup)
 *   DNS_L_DONE  result final, in d->done until the timer delivers it
 *
 * A lookup ends when its last sub-query answers (delivered straight from
 * that answer's callback, which runs under ub_process() in the poll
 * callback), when its deadline passes (DNS_TIMEOUT_MS: cancelled,
 * DNS_TEMPFAIL), or at once for an address literal: those wait in d->done
 * for a 0 ms timer, so that no callback ever runs inside dns_mx() or
 * dns_host().
 *
 * There is no cache here: libunbound keeps answers for their TTLs in the
 * context that every lookup of this resolver shares.
 *
 * Memory: a lookup is freed after its callback returns, or in dns_free()
 * after ub_cancel() of its sub-queries (whose callbacks libunbound then
 * never calls). struct dns and the unbound context go when the poll and
 * timer handles have closed: the context owns the fd being polled.
 */
#include "node/dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <sodium.h>
#include <unbound.h>

#include "common/log.h"
#include "common/rm_error.h"

/* RFC 1035 §3.2.2, RFC 3596 §2.1 */
#define DNS_T_A 1
#define DNS_T_MX 15
#define DNS_T_AAAA 28
#define DNS_C_IN 1
#define DNS_RCODE_NXDOMAIN 3 /* RFC 1035 §4.1.1 */

#define DNS_LABEL_MAX 63 /* RFC 1035 §2.3.4 */
#define DNS_WIRE_MAX 255 /* a name on the wire, RFC 1035 §2.3.4 */
#define DNS_TEXT_MAX 253 /* the same name as text, no trailing dot */

enum dns_kind { DNS_K_MX, DNS_K_HOST };

enum dns_lstate { DNS_L_NEW, DNS_L_MX, DNS_L_ADDR, DNS_L_DONE };

static const char *const dns_lstate_names[] = {
    [DNS_L_NEW] = "new",
    [DNS_L_MX] = "mx",
    [DNS_L_ADDR] = "addr",
    [DNS_L_DONE] = "done",
};

static const char *const dns_status_names[] = {
    [DNS_OK] = "ok",
    [DNS_NULLMX] = "nullmx",
    [DNS_NXDOMAIN] = "nxdomain",
    [DNS_NOHOST] = "nohost",
    [DNS_TEMPFAIL] = "tempfail",
};

/* Slots of a host's two address queries: AAAA first (dns.h). */
enum dns_family { DNS_F_V6 = 0, DNS_F_V4 = 1, DNS_F_N = 2 };

struct dns_lookup;

struct dns_query {
    struct dns_lookup *lk;
    int running; /* ub_resolve_async accepted it, no answer yet */
    int id;      /* libunbound's async id, for ub_cancel */
    int type;    /* DNS_T_* */
    size_t host; /* index into r.hosts (address queries) */
};

/* Addresses of one host as they come in, one list per family. */
struct dns_found {
    size_t n[DNS_F_N];
    unsigned char addr[DNS_F_N][DNS_ADDRS_MAX][16];
};

struct dns_lookup {
    TAILQ_ENTRY(dns_lookup) entry;
    struct dns *d;
    enum dns_kind kind;
    enum dns_lstate state;
    uint64_t id;       /* for the log */
    uint64_t started;  /* uv_now, ms */
    uint64_t deadline; /* uv_now, ms */
    dns_cb cb;
    void *arg;
    char name[DNS_NAME_MAX]; /* domain or host asked for, no final dot */
    unsigned pending;        /* sub-queries running */
    unsigned tempfail;       /* address queries that failed temporarily */
    struct dns_query mxq;
    struct dns_query aq[DNS_HOSTS_MAX][DNS_F_N];
    uint32_t mxkey[DNS_HOSTS_MAX]; /* random order among equal prefs */
    struct dns_found found[DNS_HOSTS_MAX];
    struct dns_result r;
};

TAILQ_HEAD(dns_lookups, dns_lookup);

struct dns {
    uv_loop_t *loop;
    struct ub_ctx *ctx;
    uv_poll_t poll;   /* ub_fd(): active only while a lookup runs */
    uv_timer_t timer; /* deadlines and immediate answers */
    int handles;      /* still open; d is freed when the last closes */
    int closing;
    unsigned timeout_ms; /* per lookup */
    uint64_t next_id;
    struct dns_lookups running; /* by deadline: oldest first */
    struct dns_lookups done;    /* results for the timer to deliver */
};

static void dns_on_readable(uv_poll_t *h, int status, int events);
static void dns_on_timer(uv_timer_t *t);
static void dns_on_answer(void *arg, int err, struct ub_result *res);

const char *
dns_status_str(enum dns_status s)
{
    if ((unsigned)s >= sizeof(dns_status_names) / sizeof(*dns_status_names))
        return "?";
    return dns_status_names[s];
}

/* ---- names and literals ---------------------------------------------- */

static int
dns_label_char(unsigned char c)
{
    /* letters, digits, hyphen (RFC 1035 §2.3.1) and the underscore that
       real zones carry; anything else is refused, so that a name is never
       interpreted by libunbound's text parser (backslash escapes) */
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Names compare without case (RFC 4343) and servers may echo the case of
   the question into answers: every name is kept in lower case. */
static char
dns_lower(unsigned char c)
{
    return (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
}

/* Check a host or domain name given as text and copy it to out, in lower
   case, without its final dot. 0 or RM_E_INVAL. Internationalised names must
   come as A-labels (RFC 5890): non-ASCII is refused. */
static int
dns_name_copy(const char *in, char *out)
{
    size_t len = strlen(in), label = 0;

    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_TEXT_MAX)
        return RM_E_INVAL;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '.') {
            if (label == 0)
                return RM_E_INVAL;
            label = 0;
            continue;
        }
        if (!dns_label_char((unsigned char)in[i]) || ++label > DNS_LABEL_MAX)
            return RM_E_INVAL;
    }
    for (size_t i = 0; i < len; i++)
        out[i] = dns_lower((unsigned char)in[i]);
    out[len] = '\0';
    return 0;
}

static void
dns_addr_set(struct dns_addr *a, int family, const void *bin)
{
    memset(a, 0, sizeof(*a));
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->sa;

        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, bin, 16);
        a->len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&a->sa;

        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, bin, 4);
        a->len = sizeof(*s4);
    }
}

/* An IP address as text: 1 and *a set, or 0 if s is not one. */
static int
dns_ip_parse(const char *s, int v6only, struct dns_addr *a)
{
    unsigned char bin[16];

    if (!v6only && inet_pton(AF_INET, s, bin) == 1) {
        dns_addr_set(a, AF_INET, bin);
        return 1;
    }
    if (inet_pton(AF_INET6, s, bin) == 1) {
        dns_addr_set(a, AF_INET6, bin);
        return 1;
    }
    return 0;
}

/* An address literal (RFC 5321 §4.1.3): "[192.0.2.1]" or
   "[IPv6:2001:db8::1]". 1 and *a set; 0 if s is not bracketed;
   RM_E_INVAL for a bracketed string that is no address literal. */
static int
dns_literal_parse(const char *s, struct dns_addr *a)
{
    char in[INET6_ADDRSTRLEN + 8];
    size_t len = strlen(s);
    int v6 = 0;

    if (len == 0 || s[0] != '[')
        return 0;
    if (len < 3 || s[len - 1] != ']' || len - 2 >= sizeof(in))
        return RM_E_INVAL;
    memcpy(in, s + 1, len - 2);
    in[len - 2] = '\0';
    if (strncasecmp(in, "IPv6:", 5) == 0)
        v6 = 5;
    if (!dns_ip_parse(in + v6, v6 != 0, a))
        return RM_E_INVAL;
    return 1;
}

/*
 * MX RDATA (RFC 1035 §3.3.9): PREFERENCE, 16 bits, then EXCHANGE, a
 * domain name. libunbound hands out rdata with every name uncompressed
 * (it decompresses while parsing the packet), so a compression pointer
 * here is malformed. The name must fill the rdata exactly. 0 and the
 * target as text ("" for the root, RFC 7505), or RM_E_INVAL.
 */
static int
dns_mx_rdata(const unsigned char *p, size_t len, unsigned *pref, char *name)
{
    size_t off = 2, o = 0, wire = 1;

    if (len < 3)
        return RM_E_INVAL;
    *pref = (unsigned)p[0] << 8 | p[1];
    for (;;) {
        size_t l;

        if (off >= len)
            return RM_E_INVAL;
        l = p[off++];
        if (l == 0)
            break;
        if (l > DNS_LABEL_MAX || off + l > len) /* pointer, or cut */
            return RM_E_INVAL;
        wire += l + 1;
        if (wire > DNS_WIRE_MAX || o + l + 1 >= DNS_NAME_MAX)
            return RM_E_INVAL;
        if (o > 0)
            name[o++] = '.';
        for (size_t i = 0; i < l; i++) {
            if (!dns_label_char(p[off + i]))
                return RM_E_INVAL;
            name[o++] = dns_lower(p[off + i]);
        }
        off += l;
    }
    if (off != len)
        return RM_E_INVAL;
    name[o] = '\0';
    return 0;
}

/* ---- lookups ------------------------------------------------------------ */

static struct dns_lookup *
dns_lookup_new(struct dns *d, enum dns_kind kind, const char *name, dns_cb cb,
               void *arg)
{
    struct dns_lookup *lk = calloc(1, sizeof(*lk));

    if (lk == NULL)
        return NULL;
    lk->d = d;
    lk->kind = kind;
    lk->id = ++d->next_id;
    lk->started = uv_now(d->loop);
    lk->deadline = lk->started + d->timeout_ms;
    lk->cb = cb;
    lk->arg = arg;
    snprintf(lk->name, sizeof(lk->name), "%s", name);
    return lk;
}

/* The one place a lookup changes state. */
static void
dns_enter(struct dns_lookup *lk, enum dns_lstate st)
{
    if (lk->state == st)
        return;
    log_debug("event=dns.state id=%llu name=%s from=%s to=%s hosts=%zu "
              "pending=%u",
              (unsigned long long)lk->id, lk->name, dns_lstate_names[lk->state],
              dns_lstate_names[st], lk->r.nhosts, lk->pending);
    lk->state = st;
}

static void
dns_timer_arm(struct dns *d)
{
    struct dns_lookup *lk;
    uint64_t now;

    if (d->closing)
        return;
    if (!TAILQ_EMPTY(&d->done)) {
        uv_timer_start(&d->timer, dns_on_timer, 0, 0);
        return;
    }
    if ((lk = TAILQ_FIRST(&d->running)) == NULL) {
        uv_timer_stop(&d->timer);
        uv_poll_stop(&d->poll);
        return;
    }
    now = uv_now(d->loop);
    uv_timer_start(&d->timer, dns_on_timer,
                   lk->deadline > now ? lk->deadline - now : 0, 0);
}

static int
dns_query_start(struct dns_lookup *lk, struct dns_query *q, const char *name,
                int type, size_t host)
{
    int rc;

    q->lk = lk;
    q->type = type;
    q->host = host;
    rc = ub_resolve_async(lk->d->ctx, name, type, DNS_C_IN, q, dns_on_answer,
                          &q->id);
    if (rc != 0) {
        log_warn("event=dns.query_error id=%llu name=%s type=%d err=%s",
                 (unsigned long long)lk->id, name, type, ub_strerror(rc));
        return rc == UB_NOMEM ? -ENOMEM : RM_E_AGAIN;
    }
    q->running = 1;
    lk->pending++;
    return 0;
}

static void
dns_query_cancel(struct dns_lookup *lk, struct dns_query *q)
{
    if (!q->running)
        return;
    q->running = 0;
    lk->pending--;
    ub_cancel(lk->d->ctx, q->id);
}

static void
dns_lookup_cancel(struct dns_lookup *lk)
{
    dns_query_cancel(lk, &lk->mxq);
    for (size_t i = 0; i < DNS_HOSTS_MAX; i++)
        for (int f = 0; f < DNS_F_N; f++)
            dns_query_cancel(lk, &lk->aq[i][f]);
}

static void dns_fail(struct dns_lookup *lk, enum dns_status st, const char *fmt,
                     ...) __attribute__((format(printf, 3, 4)));

static void
dns_fail(struct dns_lookup *lk, enum dns_status st, const char *fmt, ...)
{
    va_list ap;

    lk->r.status = st;
    lk->r.nhosts = 0;
    va_start(ap, fmt);
    vsnprintf(lk->r.error, sizeof(lk->r.error), fmt, ap);
    va_end(ap);
}

/* Log the outcome, call back, free. lk is out of every list. */
static void
dns_deliver(struct dns_lookup *lk)
{
    struct dns *d = lk->d;
    char q[300];

    dns_enter(lk, DNS_L_DONE);
    log_info("event=dns.%s id=%llu name=%s status=%s implicit=%d hosts=%zu "
             "ms=%llu%s%s",
             lk->kind == DNS_K_MX ? "mx" : "host", (unsigned long long)lk->id,
             lk->name, dns_status_str(lk->r.status), lk->r.implicit,
             lk->r.nhosts, (unsigned long long)(uv_now(d->loop) - lk->started),
             lk->r.error[0] ? " error=" : "",
             lk->r.error[0]
                 ? log_quote(q, sizeof(q), lk->r.error, strlen(lk->r.error))
                 : "");
    lk->cb(lk->arg, &lk->r);
    free(lk);
}

/* The last sub-query of lk has answered (we run inside ub_process(),
   never inside dns_mx / dns_host): deliver now. */
static void
dns_complete(struct dns_lookup *lk)
{
    struct dns *d = lk->d;

    TAILQ_REMOVE(&d->running, lk, entry);
    dns_deliver(lk); /* may run dns_free(d) */
    dns_timer_arm(d);
}

/* Take a host's addresses, AAAA first then A (dns.h). When both families
   have more than fit, each keeps at least half of DNS_ADDRS_MAX, so that
   a host never loses a whole family to the other. */
static void
dns_host_addrs(struct dns_host *h, const struct dns_found *f)
{
    size_t n6 = f->n[DNS_F_V6], n4 = f->n[DNS_F_V4];
    size_t room6 =
        DNS_ADDRS_MAX - (n4 < DNS_ADDRS_MAX / 2 ? n4 : DNS_ADDRS_MAX / 2);
    size_t k6 = n6 < room6 ? n6 : room6;
    size_t k4 = n4 < DNS_ADDRS_MAX - k6 ? n4 : DNS_ADDRS_MAX - k6;

    h->naddrs = 0;
    for (size_t i = 0; i < k6; i++)
        dns_addr_set(&h->addrs[h->naddrs++], AF_INET6, f->addr[DNS_F_V6][i]);
    for (size_t i = 0; i < k4; i++)
        dns_addr_set(&h->addrs[h->naddrs++], AF_INET, f->addr[DNS_F_V4][i]);
}

/* All address queries have answered: keep the hosts that have addresses,
   in order, and decide the status. */
static void
dns_addr_done(struct dns_lookup *lk)
{
    struct dns_result *r = &lk->r;
    size_t n = 0;

    for (size_t i = 0; i < r->nhosts; i++) {
        dns_host_addrs(&r->hosts[i], &lk->found[i]);
        if (r->hosts[i].naddrs == 0) {
            log_info("event=dns.host_noaddr id=%llu name=%s host=%s pref=%u",
                     (unsigned long long)lk->id, lk->name, r->hosts[i].name,
                     r->hosts[i].pref);
            continue;
        }
        if (n != i)
            r->hosts[n] = r->hosts[i];
        n++;
    }
    r->nhosts = n;
    if (n > 0) {
        r->status = DNS_OK;
        r->error[0] = '\0';
    } else if (lk->tempfail > 0) {
        dns_fail(lk, DNS_TEMPFAIL,
                 "temporary DNS failure looking up the addresses of %s%s",
                 lk->kind == DNS_K_MX && !r->implicit ? "the MX hosts of " : "",
                 lk->name);
    } else if (lk->kind == DNS_K_HOST) {
        dns_fail(lk, DNS_NOHOST, "host %s has no address", lk->name);
    } else if (r->implicit) {
        dns_fail(lk, DNS_NOHOST, "domain %s has no MX and no address record",
                 lk->name);
    } else {
        dns_fail(lk, DNS_NOHOST, "no MX host of %s has an address", lk->name);
    }
}

/* AAAA and A for every host in r.hosts, all at once. A query that cannot
   start counts as a temporary failure of that host. */
static void
dns_addr_start(struct dns_lookup *lk)
{
    dns_enter(lk, DNS_L_ADDR);
    for (size_t i = 0; i < lk->r.nhosts; i++) {
        const char *h = lk->r.hosts[i].name;

        if (dns_query_start(lk, &lk->aq[i][DNS_F_V6], h, DNS_T_AAAA, i) != 0)
            lk->tempfail++;
        if (dns_query_start(lk, &lk->aq[i][DNS_F_V4], h, DNS_T_A, i) != 0)
            lk->tempfail++;
    }
}

/*
 * Keep the DNS_HOSTS_MAX best MX targets, sorted by preference (RFC 5321
 * §5.1), equal preferences in random order: each record draws a random
 * key and the list is kept sorted by (preference, key), which is a
 * uniform shuffle within a preference and a fair pick at the cut. A
 * target listed twice is kept once, at its best preference.
 */
static void
dns_mx_keep(struct dns_lookup *lk, unsigned pref, const char *name)
{
    struct dns_result *r = &lk->r;
    uint32_t key = randombytes_random();
    size_t i;

    for (i = 0; i < r->nhosts; i++) {
        if (strcmp(r->hosts[i].name, name) != 0)
            continue;
        if (r->hosts[i].pref <= pref)
            return;
        memmove(&r->hosts[i], &r->hosts[i + 1],
                (r->nhosts - i - 1) * sizeof(r->hosts[0]));
        memmove(&lk->mxkey[i], &lk->mxkey[i + 1],
                (r->nhosts - i - 1) * sizeof(lk->mxkey[0]));
        r->nhosts--;
        break;
    }
    for (i = 0; i < r->nhosts; i++)
        if (pref < r->hosts[i].pref ||
            (pref == r->hosts[i].pref && key < lk->mxkey[i]))
            break;
    if (i == DNS_HOSTS_MAX) {
        log_debug("event=dns.mx_dropped id=%llu name=%s host=%s pref=%u "
                  "reason=hosts_max",
                  (unsigned long long)lk->id, lk->name, name, pref);
        return;
    }
    if (r->nhosts == DNS_HOSTS_MAX) {
        log_debug("event=dns.mx_dropped id=%llu name=%s host=%s pref=%u "
                  "reason=hosts_max",
                  (unsigned long long)lk->id, lk->name,
                  r->hosts[DNS_HOSTS_MAX - 1].name,
                  r->hosts[DNS_HOSTS_MAX - 1].pref);
        r->nhosts--;
    }
    memmove(&r->hosts[i + 1], &r->hosts[i],
            (r->nhosts - i) * sizeof(r->hosts[0]));
    memmove(&lk->mxkey[i + 1], &lk->mxkey[i],
            (r->nhosts - i) * sizeof(lk->mxkey[0]));
    memset(&r->hosts[i], 0, sizeof(r->hosts[i]));
    snprintf(r->hosts[i].name, sizeof(r->hosts[i].name), "%s", name);
    r->hosts[i].pref = pref;
    lk->mxkey[i] = key;
    r->nhosts++;
}

/* The MX records are in: the hosts to try, or a final status. */
static void
dns_mx_records(struct dns_lookup *lk, const struct ub_result *res)
{
    char name[DNS_NAME_MAX];
    unsigned pref;
    size_t nrec = 0, nroot = 0;

    for (size_t i = 0; res->data[i] != NULL; i++) {
        nrec++;
        if (res->len[i] < 0 ||
            dns_mx_rdata((const unsigned char *)res->data[i],
                         (size_t)res->len[i], &pref, name) != 0) {
            log_warn("event=dns.mx_skip id=%llu name=%s len=%d "
                     "reason=malformed",
                     (unsigned long long)lk->id, lk->name, res->len[i]);
            continue;
        }
        if (name[0] == '\0') {
            nroot++;
            continue;
        }
        dns_mx_keep(lk, pref, name);
    }
    /* RFC 7505 §3: a null MX is the only MX record of its domain. Next to
       other records a "." target is no host, and is ignored. */
    if (nrec == 1 && nroot == 1) {
        dns_fail(lk, DNS_NULLMX, "domain %s has a null MX (RFC 7505)",
                 lk->name);
        return;
    }
    if (nroot > 0)
        log_warn("event=dns.mx_skip id=%llu name=%s reason=null_mx_not_alone "
                 "records=%zu",
                 (unsigned long long)lk->id, lk->name, nrec);
    if (lk->r.nhosts == 0) {
        dns_fail(lk, DNS_NOHOST, "no usable MX record for %s", lk->name);
        return;
    }
    dns_addr_start(lk);
}

static void
dns_mx_answer(struct dns_lookup *lk, int err, const struct ub_result *res)
{
    struct dns_result *r = &lk->r;

    if (err != 0) {
        dns_fail(lk, DNS_TEMPFAIL, "resolver error for MX %s: %s", lk->name,
                 ub_strerror(err));
    } else if (res->rcode == DNS_RCODE_NXDOMAIN || res->nxdomain) {
        dns_fail(lk, DNS_NXDOMAIN, "domain %s does not exist", lk->name);
    } else if (res->rcode != 0) {
        dns_fail(lk, DNS_TEMPFAIL, "%s for MX %s",
                 res->rcode == 2 ? "SERVFAIL" : "DNS error", lk->name);
    } else if (res->bogus) {
        dns_fail(lk, DNS_TEMPFAIL, "DNSSEC validation failed for MX %s",
                 lk->name);
    } else if (!res->havedata) {
        /* NODATA: RFC 5321 §5.1, the domain itself is the host */
        r->implicit = 1;
        r->nhosts = 1;
        snprintf(r->hosts[0].name, sizeof(r->hosts[0].name), "%s", lk->name);
        r->hosts[0].pref = 0;
        dns_addr_start(lk);
    } else {
        dns_mx_records(lk, res);
    }
}

static void
dns_addr_answer(struct dns_lookup *lk, const struct dns_query *q, int err,
                const struct ub_result *res)
{
    int fam = q->type == DNS_T_AAAA ? DNS_F_V6 : DNS_F_V4;
    int alen = fam == DNS_F_V6 ? 16 : 4;
    struct dns_found *f = &lk->found[q->host];

    if (err != 0 || (res->rcode != 0 && res->rcode != DNS_RCODE_NXDOMAIN) ||
        res->bogus) {
        lk->tempfail++;
        log_info("event=dns.addr_tempfail id=%llu host=%s type=%d rcode=%d "
                 "err=%s",
                 (unsigned long long)lk->id, lk->r.hosts[q->host].name, q->type,
                 err != 0 ? -1 : res->rcode,
                 err != 0 ? ub_strerror(err) : "none");
        return;
    }
    for (size_t i = 0; res->data[i] != NULL; i++) {
        if (res->len[i] != alen)
            continue; /* not an address of the family asked */
        if (f->n[fam] == DNS_ADDRS_MAX)
            break;
        memcpy(f->addr[fam][f->n[fam]++], res->data[i], (size_t)alen);
    }
}

/* Every sub-query's callback, run by ub_process() on the loop thread. */
static void
dns_on_answer(void *arg, int err, struct ub_result *res)
{
    struct dns_query *q = arg;
    struct dns_lookup *lk = q->lk;

    q->running = 0;
    lk->pending--;
    if (err == 0 && res == NULL)
        err = UB_NOMEM;
    if (q->type == DNS_T_MX)
        dns_mx_answer(lk, err, res);
    else
        dns_addr_answer(lk, q, err, res);
    ub_resolve_free(res);
    if (lk->pending > 0)
        return;
    if (lk->state == DNS_L_ADDR)
        dns_addr_done(lk);
    dns_complete(lk);
}

static void
dns_on_readable(uv_poll_t *h, int status, int events)
{
    struct dns *d = h->data;
    int rc;

    if (status < 0) {
        log_err("event=dns.poll_error err=%s", uv_strerror(status));
        return;
    }
    rc = ub_process(d->ctx);
    if (rc != 0)
        log_err("event=dns.process_error err=%s", ub_strerror(rc));
}

/* Deliver immediate results, then expire lookups past their deadline. */
static void
dns_on_timer(uv_timer_t *t)
{
    struct dns *d = t->data;
    struct dns_lookups batch;
    struct dns_lookup *lk;
    uint64_t now = uv_now(d->loop);

    /* only what was due when the timer fired: a callback that starts
       another literal lookup has it delivered on the next turn */
    TAILQ_INIT(&batch);
    TAILQ_CONCAT(&batch, &d->done, entry);
    while ((lk = TAILQ_FIRST(&batch)) != NULL) {
        TAILQ_REMOVE(&batch, lk, entry);
        if (d->closing)
            free(lk); /* dns_free() ran in an earlier callback */
        else
            dns_deliver(lk);
    }
    while (!d->closing && (lk = TAILQ_FIRST(&d->running)) != NULL &&
           lk->deadline <= now) {
        log_info("event=dns.timeout id=%llu name=%s state=%s pending=%u",
                 (unsigned long long)lk->id, lk->name,
                 dns_lstate_names[lk->state], lk->pending);
        dns_lookup_cancel(lk);
        dns_fail(lk, DNS_TEMPFAIL, "DNS lookup for %s timed out", lk->name);
        TAILQ_REMOVE(&d->running, lk, entry);
        dns_deliver(lk);
    }
    dns_timer_arm(d);
}

/* A lookup that needs no query (address literal): delivered by timer. */
static int
dns_literal_lookup(struct dns *d, enum dns_kind kind, const char *s,
                   const struct dns_addr *a, dns_cb cb, void *arg)
{
    struct dns_lookup *lk = dns_lookup_new(d, kind, s, cb, arg);

    if (lk == NULL)
        return -ENOMEM;
    lk->r.nhosts = 1;
    snprintf(lk->r.hosts[0].name, sizeof(lk->r.hosts[0].name), "%s", s);
    lk->r.hosts[0].naddrs = 1;
    lk->r.hosts[0].addrs[0] = *a;
    dns_enter(lk, DNS_L_DONE);
    TAILQ_INSERT_TAIL(&d->done, lk, entry);
    dns_timer_arm(d);
    return 0;
}

/* Keep d->running in deadline order. Lookups nearly always go last (one
   timeout for all): walk from the tail. */
static void
dns_running_insert(struct dns *d, struct dns_lookup *lk)
{
    struct dns_lookup *p;

    TAILQ_FOREACH_REVERSE(p, &d->running, dns_lookups, entry)
    if (p->deadline <= lk->deadline)
        break;
    if (p == NULL)
        TAILQ_INSERT_HEAD(&d->running, lk, entry);
    else
        TAILQ_INSERT_AFTER(&d->running, p, lk, entry);
    if (TAILQ_FIRST(&d->running) == lk)
        dns_timer_arm(d);
}

/* Start a lookup that queries: the MX, or the host's addresses. */
static int
dns_start(struct dns *d, enum dns_kind kind, const char *name, dns_cb cb,
          void *arg)
{
    struct dns_lookup *lk = dns_lookup_new(d, kind, name, cb, arg);
    int rc;

    if (lk == NULL)
        return -ENOMEM;
    if (kind == DNS_K_MX) {
        dns_enter(lk, DNS_L_MX);
        rc = dns_query_start(lk, &lk->mxq, lk->name, DNS_T_MX, 0);
    } else {
        lk->r.nhosts = 1;
        snprintf(lk->r.hosts[0].name, sizeof(lk->r.hosts[0].name), "%s",
                 lk->name);
        dns_addr_start(lk);
        rc = lk->tempfail > 0 ? RM_E_AGAIN : 0;
    }
    if (rc != 0) {
        dns_lookup_cancel(lk);
        free(lk);
        return rc;
    }
    if (TAILQ_EMPTY(&d->running) &&
        (rc = uv_poll_start(&d->poll, UV_READABLE, dns_on_readable)) != 0)
        log_err("event=dns.poll_error err=%s", uv_strerror(rc));
    dns_running_insert(d, lk);
    return 0;
}

int
dns_mx(struct dns *d, const char *domain, dns_cb cb, void *arg)
{
    char name[DNS_NAME_MAX];
    struct dns_addr a;
    int rc;

    if (d == NULL || d->closing || domain == NULL || cb == NULL)
        return RM_E_INVAL;
    rc = dns_literal_parse(domain, &a);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return dns_literal_lookup(d, DNS_K_MX, domain, &a, cb, arg);
    if (dns_name_copy(domain, name) != 0)
        return RM_E_INVAL;
    return dns_start(d, DNS_K_MX, name, cb, arg);
}

int
dns_host(struct dns *d, const char *name, dns_cb cb, void *arg)
{
    char n[DNS_NAME_MAX];
    struct dns_addr a;
    int rc;

    if (d == NULL || d->closing || name == NULL || cb == NULL)
        return RM_E_INVAL;
    rc = dns_literal_parse(name, &a);
    if (rc < 0)
        return rc;
    if (rc == 1 || dns_ip_parse(name, 0, &a))
        return dns_literal_lookup(d, DNS_K_HOST, name, &a, cb, arg);
    if (dns_name_copy(name, n) != 0)
        return RM_E_INVAL;
    return dns_start(d, DNS_K_HOST, n, cb, arg);
}

/* ---- the resolver ------------------------------------------------------- */

static int
dns_ctx_setup(struct ub_ctx *ctx, const char *server, char *err, size_t errsz)
{
    int rc;

    if ((rc = ub_ctx_async(ctx, 1)) != 0) {
        snprintf(err, errsz, "cannot run the resolver in a thread: %s",
                 ub_strerror(rc));
        return RM_E_CONFIG;
    }
    if (server != NULL && *server != '\0') {
        /* the forwarder is named by the admin: may be on loopback (by
           default libunbound refuses to query 127.0.0.0/8 and ::1) */
        ub_ctx_set_option(ctx, "do-not-query-localhost:", "no");
        if ((rc = ub_ctx_set_fwd(ctx, server)) != 0) {
            snprintf(err, errsz, "bad DNS server \"%s\": %s", server,
                     ub_strerror(rc));
            return RM_E_CONFIG;
        }
        /* and it answers for "test." (RFC 6761 §6.2), which libunbound
           otherwise answers itself with NXDOMAIN: test networks and this
           project's tests use that name. Last: this finalizes ctx. */
        if ((rc = ub_ctx_zone_remove(ctx, "test.")) != 0)
            log_warn("event=dns.zone_error zone=test. err=%d", rc);
        return 0;
    }
    if ((rc = ub_ctx_resolvconf(ctx, NULL)) != 0) {
        snprintf(err, errsz, "cannot use /etc/resolv.conf: %s",
                 ub_strerror(rc));
        return RM_E_CONFIG;
    }
    if ((rc = ub_ctx_hosts(ctx, NULL)) != 0) {
        /* not fatal: DNS still works without /etc/hosts */
        char q[128];
        const char *e = ub_strerror(rc);

        log_warn("event=dns.hosts_error err=%s",
                 log_quote(q, sizeof(q), e, strlen(e)));
    }
    return 0;
}

int
dns_new(uv_loop_t *loop, const char *server, struct dns **out, char *err,
        size_t errsz)
{
    struct dns *d;
    int rc, fd;

    *out = NULL;
    if (errsz > 0)
        err[0] = '\0';
    if ((d = calloc(1, sizeof(*d))) == NULL) {
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    d->loop = loop;
    d->timeout_ms = DNS_TIMEOUT_MS;
    TAILQ_INIT(&d->running);
    TAILQ_INIT(&d->done);
    if ((d->ctx = ub_ctx_create()) == NULL) {
        snprintf(err, errsz, "cannot create a resolver context");
        free(d);
        return RM_E_CONFIG;
    }
    rc = dns_ctx_setup(d->ctx, server, err, errsz);
    if (rc == 0 && (fd = ub_fd(d->ctx)) < 0) {
        snprintf(err, errsz, "resolver has no answer pipe");
        rc = RM_E_CONFIG;
    }
    if (rc == 0 && (rc = uv_poll_init(loop, &d->poll, fd)) != 0) {
        snprintf(err, errsz, "cannot poll the resolver: %s", uv_strerror(rc));
        rc = RM_E_CONFIG;
    }
    if (rc != 0) {
        ub_ctx_delete(d->ctx);
        free(d);
        return rc;
    }
    uv_timer_init(loop, &d->timer);
    d->poll.data = d;
    d->timer.data = d;
    d->handles = 2;
    log_info("event=dns.start server=%s",
             server != NULL && *server != '\0' ? server : "resolv.conf");
    *out = d;
    return 0;
}

void
dns_set_timeout(struct dns *d, unsigned ms)
{
    d->timeout_ms = ms > 0 ? ms : DNS_TIMEOUT_MS;
}

static void
dns_close_cb(uv_handle_t *h)
{
    struct dns *d = h->data;

    if (--d->handles > 0)
        return;
    /* the poll handle is gone: the fd it watched may go with the context,
       which also stops libunbound's thread */
    ub_ctx_delete(d->ctx);
    free(d);
}

void
dns_free(struct dns *d)
{
    struct dns_lookup *lk;

    if (d == NULL || d->closing)
        return;
    d->closing = 1;
    while ((lk = TAILQ_FIRST(&d->running)) != NULL) {
        TAILQ_REMOVE(&d->running, lk, entry);
        dns_lookup_cancel(lk);
        free(lk);
    }
    while ((lk = TAILQ_FIRST(&d->done)) != NULL) {
        TAILQ_REMOVE(&d->done, lk, entry);
        free(lk);
    }
    uv_close((uv_handle_t *)&d->poll, dns_close_cb);
    uv_close((uv_handle_t *)&d->timer, dns_close_cb);
}
