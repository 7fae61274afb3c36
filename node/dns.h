/*
 * dns: where to deliver a domain's mail (RFC 5321 §5.1), resolved with
 * libunbound on the node's libuv loop.
 *
 * The unbound context runs asynchronously in a thread of its own
 * (ub_ctx_async(ctx, 1)); its answer pipe (ub_fd) is watched with a
 * uv_poll_t, and ub_process() runs the callbacks on the loop thread. The
 * loop never blocks on DNS.
 *
 * Answers are cached by libunbound within their TTLs (one context per
 * node, so every lookup shares the cache).
 *
 * A lookup's result is a list of hosts in the order to try them: MX
 * records by preference, equal preferences in random order; with no MX
 * record, the domain itself (implicit MX, RFC 5321 §5.1) at preference 0;
 * a null MX (RFC 7505: a single MX with target ".") is DNS_NULLMX. CNAMEs
 * are followed (by libunbound). Each host carries its IPv6 and IPv4
 * addresses (AAAA first, then A).
 *
 * Loop thread only.
 */
#ifndef RM_NODE_DNS_H
#define RM_NODE_DNS_H

#include <stddef.h>
#include <sys/socket.h>

#include <uv.h>

struct dns;

#define DNS_HOSTS_MAX 16 /* MX hosts kept, best first */
#define DNS_ADDRS_MAX 8  /* addresses kept per host */
#define DNS_NAME_MAX 256
/* A lookup still unanswered after this long (every sub-query included)
   is cancelled and ends DNS_TEMPFAIL. */
#define DNS_TIMEOUT_MS 30000

enum dns_status {
    DNS_OK = 0,       /* hosts[] holds at least one host with an address */
    DNS_NULLMX = 1,   /* RFC 7505: the domain accepts no mail (5.1.10) */
    DNS_NXDOMAIN = 2, /* the domain does not exist (permanent, 5.1.2) */
    DNS_NOHOST = 3,   /* no MX host has an address (temporary, 4.4.4) */
    DNS_TEMPFAIL = 4  /* SERVFAIL, timeout, resolver error: retry (4.4.3) */
};

struct dns_addr {
    struct sockaddr_storage sa; /* port 0: the caller sets it */
    socklen_t len;
};

struct dns_host {
    char name[DNS_NAME_MAX]; /* MX target (lower case, no final dot) or
                                the address literal as given */
    unsigned pref;
    size_t naddrs;
    struct dns_addr addrs[DNS_ADDRS_MAX];
};

struct dns_result {
    enum dns_status status;
    char error[256]; /* for the log and the bounce: "domain example.test
                        has a null MX (RFC 7505)", "SERVFAIL for MX
                        example.test", ... ("" when DNS_OK) */
    int implicit;    /* 1: no MX records, the domain's own addresses */
    size_t nhosts;
    struct dns_host hosts[DNS_HOSTS_MAX];
};

/* "ok", "nullmx", "nxdomain", "nohost", "tempfail"; static storage. */
const char *dns_status_str(enum dns_status s);

/* Called exactly once per lookup, on the loop thread, never from inside
   dns_mx() / dns_host() themselves. r is valid only during the call. */
typedef void (*dns_cb)(void *arg, const struct dns_result *r);

/*
 * A resolver on loop. server NULL or "": the system's resolvers
 * (/etc/resolv.conf) and /etc/hosts; else forward every query to
 * "ADDR" or "ADDR@PORT" (e.g. "127.0.0.1@5353", as the config key
 * [dns] server). 0, or RM_E_CONFIG (-ENOMEM) with the reason in err.
 * No DNSSEC validation (no trust anchor is configured). With a server,
 * the special-use name "test." (RFC 6761) goes to it too, instead of
 * the NXDOMAIN libunbound gives by default: test setups use it.
 */
int dns_new(uv_loop_t *loop, const char *server, struct dns **out, char *err,
            size_t errsz);

/* Where mail for domain goes (MX, implicit MX, null MX). domain may be an
   address literal "[192.0.2.1]" / "[IPv6:2001:db8::1]": one host, no
   lookup. 0 or -ENOMEM / RM_E_INVAL / RM_E_AGAIN (cb not called then).
   domain must be letter-digit-hyphen labels (underscore allowed; an IDN
   as A-labels), at most 253 octets, an optional final dot: anything else
   is RM_E_INVAL. MX hosts that have no address are left out of hosts[];
   with none left the status is DNS_TEMPFAIL if an address query failed
   temporarily, else DNS_NOHOST. */
int dns_mx(struct dns *d, const char *domain, dns_cb cb, void *arg);

/* The addresses of one host name, no MX lookup (a smarthost): one host
   in the result. An IP address given as name ("192.0.2.1", "2001:db8::1"
   or an address literal as for dns_mx) needs no lookup. Status DNS_OK,
   DNS_NOHOST (no address, or no such name) or DNS_TEMPFAIL. 0 or -ENOMEM
   / RM_E_INVAL / RM_E_AGAIN (cb not called then). */
int dns_host(struct dns *d, const char *name, dns_cb cb, void *arg);

/* The deadline of the lookups started from now on, in ms (0: back to
   DNS_TIMEOUT_MS). libunbound alone takes about 17 s to give up on a
   forwarder that refuses every query. */
void dns_set_timeout(struct dns *d, unsigned ms);

/* Cancel every lookup still running (their callbacks are not called),
   close the poll handle and free d once it has closed. */
void dns_free(struct dns *d);

#endif
