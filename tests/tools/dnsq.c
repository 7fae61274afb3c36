/*
 * dnsq: node/dns.c on a libuv loop, for the integration tests
 * (tests/integration/test_dns.py). Not installed.
 *
 *   dnsq SERVER mx|host NAME [COUNT]
 *   dnsq SERVER cancel NAME
 *   dnsq SERVER first NAME COUNT
 *
 * SERVER is "ADDR@PORT" ("" for the system resolvers). COUNT lookups of
 * NAME run at once on one resolver; for each, a status line then one line
 * per host, best first:
 *
 *   status=ok implicit=0 hosts=2
 *   10 mx1.example.test 127.0.0.10 ::1
 *   20 mx2.example.test 127.0.0.11
 *
 * a failure's status line ends with " error=<text>". "cancel" starts a
 * lookup and frees the resolver at once: it prints "cancelled" and must
 * not call back. "first" starts COUNT MX lookups and frees the resolver
 * from inside the first callback: the others must not call back.
 * DNSQ_TIMEOUT_MS in the environment sets the lookup
 * deadline (dns_set_timeout), DNSQ_DEBUG=1 turns on debug logs. Exit 0, 2 for
 * bad usage or a refused call, 3 if the loop does not close clean.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/log.h"
#include "node/dns.h"

#define DNSQ_MAX 1000

struct dnsq {
    struct dns *d;
    int left; /* callbacks still due */
    int called;
    int first; /* dns_free from the first callback */
};

static void
dnsq_print_host(const struct dns_host *h)
{
    char a[INET6_ADDRSTRLEN];

    printf("%u %s", h->pref, h->name);
    for (size_t i = 0; i < h->naddrs; i++) {
        const struct sockaddr *sa = (const struct sockaddr *)&h->addrs[i].sa;

        if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr,
                      a, sizeof(a));
        else
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, a,
                      sizeof(a));
        printf(" %s", a);
    }
    printf("\n");
}

static void
dnsq_cb(void *arg, const struct dns_result *r)
{
    struct dnsq *q = arg;

    q->called++;
    printf("status=%s implicit=%d hosts=%zu", dns_status_str(r->status),
           r->implicit, r->nhosts);
    if (r->error[0] != '\0')
        printf(" error=%s", r->error);
    printf("\n");
    for (size_t i = 0; i < r->nhosts; i++)
        dnsq_print_host(&r->hosts[i]);
    if (q->first && q->called > 1) {
        printf("callback after dns_free\n");
        return;
    }
    if (--q->left == 0 || q->first)
        dns_free(q->d); /* from inside a callback, as a node may */
}

static int
dnsq_usage(void)
{
    fprintf(stderr, "usage: dnsq SERVER mx|host NAME [COUNT]\n"
                    "       dnsq SERVER cancel NAME\n"
                    "       dnsq SERVER first NAME COUNT\n");
    return 2;
}

int
main(int argc, char **argv)
{
    uv_loop_t loop;
    struct dnsq q = {0};
    char err[256];
    int count = 1, cancel = 0, host = 0, rc;

    if (argc < 4 || argc > 5)
        return dnsq_usage();
    if (strcmp(argv[2], "cancel") == 0)
        cancel = 1;
    else if (strcmp(argv[2], "first") == 0)
        q.first = 1;
    else if (strcmp(argv[2], "host") == 0)
        host = 1;
    else if (strcmp(argv[2], "mx") != 0)
        return dnsq_usage();
    if (argc == 5 && ((count = atoi(argv[4])) < 1 || count > DNSQ_MAX))
        return dnsq_usage();
    log_set_level(getenv("DNSQ_DEBUG") ? LOG_DEBUG : LOG_WARN);
    uv_loop_init(&loop);
    if ((rc = dns_new(&loop, argv[1], &q.d, err, sizeof(err))) != 0) {
        fprintf(stderr, "dnsq: %s (%d)\n", err, rc);
        uv_loop_close(&loop);
        return 2;
    }
    if (getenv("DNSQ_TIMEOUT_MS") != NULL)
        dns_set_timeout(q.d, (unsigned)atoi(getenv("DNSQ_TIMEOUT_MS")));
    for (int i = 0; i < count; i++) {
        rc = host ? dns_host(q.d, argv[3], dnsq_cb, &q)
                  : dns_mx(q.d, argv[3], dnsq_cb, &q);
        if (rc != 0) {
            printf("refused=%d\n", rc);
            break;
        }
        q.left++;
    }
    if (q.called != 0) {
        fprintf(stderr, "dnsq: callback ran inside dns_mx/dns_host\n");
        return 2;
    }
    if (cancel || q.left == 0) {
        dns_free(q.d);
        if (cancel)
            printf("cancelled\n");
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    fflush(stdout);
    if ((cancel && q.called != 0) || (q.first && q.called != 1)) {
        fprintf(stderr, "dnsq: callback after dns_free\n");
        return 2;
    }
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "dnsq: loop not closed clean\n");
        return 3;
    }
    return rc != 0 ? 2 : 0;
}
