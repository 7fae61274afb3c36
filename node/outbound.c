/*
 * outbound.c: delivery of remote queue entries (see outbound.h).
 *
 * Objects:
 *   struct ob_dest  a destination domain (or the smarthost): its queue of
 *                   jobs and how many connections it has;
 *   struct ob_job   one message for one destination: up to OB_JOB_RCPTS
 *                   recipients, the message data once loaded, and each
 *                   recipient's outcome;
 *   struct ob_conn  one delivery connection: the MX list, which host it
 *                   is at, its SMTP client, the job it is sending.
 *
 * A connection's life: DNS lookup -> connect to the hosts in order until
 * one is ready -> take jobs from its destination one after another on
 * the same connection -> QUIT when the destination has no more jobs.
 * When no host answers, every job waiting for the destination is
 * deferred with that reason (the destination is down: no point in each
 * job timing out on its own).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/rm_error.h"
#include "node/dns.h"
#include "node/dsn.h"
#include "node/mesh_repl.h"
#include "node/mesh.h"
#include "node/mesh_xfer.h"
#include "node/node.h"
#include "node/outbound.h"
#include "node/smtp_client.h"
#include "node/tls.h"
#include "store/store.h"

#define OB_HASH_BUCKETS 65536
#define OB_DEST_BUCKETS 4096
#define OB_TEXT_MAX 600
#define OB_REMOTE_MAX (DNS_NAME_MAX + INET6_ADDRSTRLEN + 16)
/* A destination nobody answered for: jobs that arrive within this are
   deferred at once. */
#define OB_DEAD_SECS 60
/* An idle session waits this long for more mail to its destination
   before QUIT (as Postfix's connection cache does). */
#define OB_PARK_MS 2000
/* Jobs of one mesh destination handed to the mesh at once: twice what a
   link carries at a time (MESH_XFER_LINK_MAX), so that the link never
   idles while the bodies held in memory stay few. */
#define OB_MESH_INFLIGHT (2 * MESH_XFER_LINK_MAX)

struct ob_rcpt {
    uint32_t idx;
    char *addr;
    char *orcpt;
    unsigned notify;
    uint32_t attempts;
    /* outcome */
    int done;
    enum store_outcome out;
    char status[16];
    char diag[OB_TEXT_MAX];
};

struct ob_dest;
struct outbound;

struct ob_job {
    struct ob_job *next; /* in the destination's queue */
    struct outbound *ob;
    struct ob_dest *dest;
    char qid[STORE_QID_LEN + 1];
    char *mail_from;
    char *envid;
    int ret;
    int smtputf8;
    int eightbit;
    int body_type;
    int64_t arrival;
    uint64_t size;
    struct ob_rcpt *rcpts;
    size_t nrcpts;
    /* while sending */
    struct buf data;
    struct smtpc_rcpt *crcpts;
    struct smtpc_txn txn;
    char remote[OB_REMOTE_MAX];     /* "host[addr]:port" it went to */
    char remote_host[DNS_NAME_MAX]; /* its name, for Remote-MTA */
    int dsn_offered;
    /* the outcomes, while their transaction is with the store (kept to
       try again when it fails) */
    struct store_qresult *res;
    char (*hist)[OB_TEXT_MAX + 400];
    struct ob_job *retry_next;
    /* the report, while its transaction is with the store */
    struct buf report;
    struct store_msg rmsg;
    struct store_rcpt rrcpt;
    char rmailbox[STORE_ADDR_MAX];
    /* over the mesh */
    struct ob_job *mprev, *mnext; /* in outbound.mesh_jobs */
    uint64_t mesh_h;
    char home[MESH_NAME_MAX];
};

struct ob_dest {
    struct ob_dest *hnext;
    char *domain;
    struct ob_job *head, *tail;
    struct ob_dest *rnext; /* in outbound.ready */
    int in_ready;
    size_t njobs;           /* waiting in the queue */
    unsigned conns;         /* open or opening */
    unsigned idle;          /* conns not yet holding a job */
    unsigned working;       /* conns with a session ready */
    struct ob_conn *parked; /* idle sessions, newest first */
    int64_t dead_until;
    int is_mesh;            /* a domain a mesh member hosts (per dispatch) */
    int is_egress;          /* ... or Internet mail for a member with egress */
    unsigned mesh_inflight; /* its jobs handed to the mesh */
    int dead_perm;
    char dead_status[16];
    char dead_text[OB_TEXT_MAX];
};

struct ob_conn {
    struct ob_conn *prev, *next; /* every connection, for close */
    struct outbound *ob;
    struct ob_dest *dest;
    int idle;         /* counted in dest->idle (holds no job) */
    int working;      /* counted in dest->working (session ready) */
    int job_specific; /* the failure is the job's (size, SMTPUTF8) */
    int parked;       /* idle session kept for the next job */
    uint64_t parked_at;
    struct ob_conn *pnext; /* in dest->parked */
    struct dns_result *mx;
    size_t host_i, addr_i;
    struct smtpc *c;
    struct ob_job *job;
    char remote[OB_REMOTE_MAX];
    char remote_host[DNS_NAME_MAX];
    /* the last failure, reported when every host failed */
    int fail_perm;
    char fail_status[16];
    char fail_text[OB_TEXT_MAX];
};

struct ob_key {
    struct ob_key *next;
    char qid[STORE_QID_LEN];
    uint32_t rcpt;
};

struct outbound {
    struct node *n;
    struct dns *dns;
    struct tls_client *tls;
    uv_timer_t wake;      /* next due entry */
    uv_timer_t scan_soon; /* a coalesced scan */
    int64_t wake_at;      /* unix seconds the wake timer is set for */
    int64_t last_scan_ms;
    int backlog;      /* due entries left out: the active set was full */
    uv_timer_t retry; /* failed result writes, again */
    uv_timer_t sweep; /* QUIT for sessions parked too long */
    unsigned nparked;
    struct ob_job *retry_jobs; /* their jobs, outcomes kept */
    struct ob_job *mesh_jobs;  /* jobs with a mesh transfer */
    uv_timer_t mesh_ready;     /* a coalesced walk for mesh mail */
    int closing;
    int dispatching;
    int handles; /* open uv handles */
    struct ob_key **active;
    size_t nactive;
    struct ob_dest **dests;
    size_t ndests;
    struct ob_dest *ready; /* destinations with jobs waiting */
    struct ob_dest **ready_tail;
    struct ob_conn *conn_list;
    unsigned conns;
    struct outbound_stats st;
    char helo[256];
    char smarthost[256];
    unsigned smarthost_port;
    int smarthost_mx;
};

static void ob_dispatch(struct outbound *ob);
static void ob_conn_next_job(struct ob_conn *cn);
static void ob_conn_try(struct ob_conn *cn);
static void ob_job_finish(struct ob_job *j);

static int64_t
ob_now(void)
{
    return (int64_t)time(NULL);
}

static char *
ob_strdup(const char *s)
{
    return strdup(s ? s : "");
}

/* Printable, one line, no quotes: for logs and reports. */
static void
ob_clean(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '"' || *s == 0x7f)
            *s = ' ';
}

/* ---- the active set ------------------------------------------------- */

static size_t
ob_key_hash(const char *qid, uint32_t rcpt)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < STORE_QID_LEN; i++)
        h = (h ^ (unsigned char)qid[i]) * 1099511628211ULL;
    h = (h ^ rcpt) * 1099511628211ULL;
    return (size_t)(h % OB_HASH_BUCKETS);
}

static int
ob_active_has(struct outbound *ob, const char *qid, uint32_t rcpt)
{
    for (struct ob_key *k = ob->active[ob_key_hash(qid, rcpt)]; k; k = k->next)
        if (k->rcpt == rcpt && memcmp(k->qid, qid, STORE_QID_LEN) == 0)
            return 1;
    return 0;
}

static int
ob_active_add(struct outbound *ob, const char *qid, uint32_t rcpt)
{
    size_t h = ob_key_hash(qid, rcpt);
    struct ob_key *k = malloc(sizeof(*k));

    if (k == NULL)
        return -ENOMEM;
    memcpy(k->qid, qid, STORE_QID_LEN);
    k->rcpt = rcpt;
    k->next = ob->active[h];
    ob->active[h] = k;
    ob->nactive++;
    return 0;
}

static void
ob_active_del(struct outbound *ob, const char *qid, uint32_t rcpt)
{
    struct ob_key **pp = &ob->active[ob_key_hash(qid, rcpt)];

    for (; *pp; pp = &(*pp)->next) {
        struct ob_key *k = *pp;
        if (k->rcpt == rcpt && memcmp(k->qid, qid, STORE_QID_LEN) == 0) {
            *pp = k->next;
            free(k);
            ob->nactive--;
            return;
        }
    }
}

/* ---- destinations and jobs ------------------------------------------ */

static size_t
ob_dest_hash(const char *d)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *d; d++)
        h = (h ^ (unsigned char)*d) * 1099511628211ULL;
    return (size_t)(h % OB_DEST_BUCKETS);
}

/* The destination of an address (its domain, lower-case), or the
   smarthost when one is set. */
static struct ob_dest *
ob_dest_get(struct outbound *ob, const char *addr)
{
    char dom[DNS_NAME_MAX];
    const char *at = strrchr(addr, '@');
    struct ob_dest *d;
    size_t h, len;

    struct mesh_home home;

    if (ob->smarthost[0] != '\0' &&
        mesh_route(ob->n->mesh, addr, strlen(addr), &home) != 1) {
        snprintf(dom, sizeof(dom), "%s", ob->smarthost);
    } else {
        if (at == NULL)
            return NULL;
        len = strlen(at + 1);
        while (len > 0 && at[len] == '.')
            len--; /* a trailing dot names the same domain */
        if (len == 0 || len >= sizeof(dom))
            return NULL;
        for (size_t i = 0; i < len; i++)
            dom[i] = (char)tolower((unsigned char)at[1 + i]);
        dom[len] = '\0';
    }
    h = ob_dest_hash(dom);
    for (d = ob->dests[h]; d; d = d->hnext)
        if (strcmp(d->domain, dom) == 0)
            return d;
    d = calloc(1, sizeof(*d));
    if (d == NULL || (d->domain = strdup(dom)) == NULL) {
        free(d);
        return NULL;
    }
    d->hnext = ob->dests[h];
    ob->dests[h] = d;
    ob->ndests++;
    return d;
}

static void
ob_job_free(struct ob_job *j)
{
    for (size_t i = 0; i < j->nrcpts; i++) {
        free(j->rcpts[i].addr);
        free(j->rcpts[i].orcpt);
    }
    free(j->rcpts);
    free(j->crcpts);
    free(j->res);
    free(j->hist);
    free(j->mail_from);
    free(j->envid);
    buf_cleanup(&j->data);
    buf_cleanup(&j->report);
    free(j);
}

static void
ob_ready(struct outbound *ob, struct ob_dest *d)
{
    if (d->in_ready)
        return;
    d->in_ready = 1;
    /* At the tail: destinations take turns, none starves. */
    d->rnext = NULL;
    *ob->ready_tail = d;
    ob->ready_tail = &d->rnext;
}

static void
ob_set_idle(struct ob_conn *cn, int idle)
{
    if (cn->idle == idle)
        return;
    cn->idle = idle;
    if (idle)
        cn->dest->idle++;
    else
        cn->dest->idle--;
}

/* Take the first waiting job of d, or NULL. */
static struct ob_job *
ob_dest_pop(struct ob_dest *d)
{
    struct ob_job *j = d->head;

    if (j == NULL)
        return NULL;
    d->head = j->next;
    if (d->head == NULL)
        d->tail = NULL;
    d->njobs--;
    j->next = NULL;
    return j;
}

static void
ob_dest_push_front(struct outbound *ob, struct ob_dest *d, struct ob_job *j)
{
    j->next = d->head;
    d->head = j;
    if (d->tail == NULL)
        d->tail = j;
    d->njobs++;
    ob_ready(ob, d);
}

/* Add one due entry to the job for its message and destination. */
static int
ob_take_entry(struct outbound *ob, const struct store_qentry *e)
{
    struct ob_dest *d;
    struct ob_job *j = NULL;
    struct ob_rcpt *r, *nr;

    if (e->route != STORE_ROUTE_REMOTE ||
        (e->state != STORE_Q_QUEUED && e->state != STORE_Q_DEFERRED))
        return 0;
    if (ob_active_has(ob, e->key.qid, e->key.rcpt))
        return 0;
    /* An origin back from a restart or a partition waits until it knows
       whether a replica took the entry over meanwhile (mesh_repl.h). */
    if (!mesh_repl_may_deliver(ob->n->mesh, e->key.qid))
        return 0;
    if (ob->nactive >= OB_ACTIVE_MAX) {
        ob->backlog = 1;
        return 1; /* stop the scan */
    }
    d = ob_dest_get(ob, e->addr);
    if (d == NULL) {
        log_err("event=delivery.bad_address qid=%s rcpt=%u addr=<%s>",
                e->key.qid, e->key.rcpt, e->addr);
        return 0;
    }
    /* Recipients of one message arrive together in the due index. */
    if (d->tail != NULL && strcmp(d->tail->qid, e->key.qid) == 0 &&
        d->tail->nrcpts < OB_JOB_RCPTS)
        j = d->tail;
    if (j == NULL) {
        j = calloc(1, sizeof(*j));
        if (j == NULL)
            return -ENOMEM;
        j->ob = ob;
        j->dest = d;
        memcpy(j->qid, e->key.qid, sizeof(j->qid));
        j->mail_from = ob_strdup(e->mail_from);
        j->envid = e->envid[0] ? ob_strdup(e->envid) : NULL;
        j->ret = e->ret;
        j->smtputf8 = e->smtputf8;
        j->eightbit = e->body_type != STORE_BODY_7BIT;
        j->body_type = (int)e->body_type;
        j->arrival = e->arrival;
        j->size = e->size;
        buf_init(&j->data, e->size + 16);
        buf_init(&j->report, (size_t)64 << 20);
        if (j->mail_from == NULL) {
            ob_job_free(j);
            return -ENOMEM;
        }
        if (d->tail)
            d->tail->next = j;
        else
            d->head = j;
        d->tail = j;
        d->njobs++;
        ob_ready(ob, d);
    }
    nr = realloc(j->rcpts, (j->nrcpts + 1) * sizeof(*nr));
    if (nr == NULL)
        return -ENOMEM;
    j->rcpts = nr;
    r = &j->rcpts[j->nrcpts];
    memset(r, 0, sizeof(*r));
    r->idx = e->key.rcpt;
    r->addr = ob_strdup(e->addr);
    r->orcpt = e->orcpt[0] ? ob_strdup(e->orcpt) : NULL;
    r->notify = e->notify;
    r->attempts = e->attempts;
    if (r->addr == NULL)
        return -ENOMEM;
    j->nrcpts++;
    return ob_active_add(ob, e->key.qid, e->key.rcpt);
}

static int
ob_scan_cb(void *arg, const struct store_qentry *e)
{
    struct outbound *ob = arg;
    int r = ob_take_entry(ob, e);

    if (r < 0)
        log_err("event=delivery.take_failed qid=%s err=\"%s\"", e->key.qid,
                rm_strerror(r));
    return r > 0 ? 1 : 0;
}

static void ob_wake_cb(uv_timer_t *t);

/* Wake up at unix time t (or earlier if already set so). */
static void
ob_wake_at(struct outbound *ob, int64_t t)
{
    int64_t now = ob_now();
    uint64_t ms;

    if (ob->closing || t == INT64_MAX)
        return;
    if (uv_is_active((uv_handle_t *)&ob->wake) && ob->wake_at <= t)
        return;
    ob->wake_at = t;
    ms = t > now ? (uint64_t)(t - now) * 1000 : 0;
    uv_timer_start(&ob->wake, ob_wake_cb, ms + 50, 0);
}

/* Read the front of the due index and take what is due. */
static void
ob_scan(struct outbound *ob)
{
    int64_t next = INT64_MAX;
    int rc;

    if (ob->closing)
        return;
    ob->backlog = 0;
    ob->last_scan_ms = (int64_t)uv_now(ob->n->loop);
    rc = store_queue_due_scan(ob->n->store, ob_now(), ob_scan_cb, ob, &next);
    if (rc < 0)
        log_err("event=delivery.scan_failed err=\"%s\"", rm_strerror(rc));
    uv_timer_stop(&ob->wake);
    if (ob->backlog)
        next = ob_now() + 1;
    ob_wake_at(ob, next);
    ob_dispatch(ob);
}

static void
ob_wake_cb(uv_timer_t *t)
{
    ob_scan(t->data);
}

static void
ob_scan_soon_cb(uv_timer_t *t)
{
    ob_scan(t->data);
}

void
outbound_kick(struct outbound *o)
{
    if (o == NULL || o->closing)
        return;
    /* An administrator's retry: no destination is presumed down. */
    for (size_t b = 0; b < OB_DEST_BUCKETS; b++)
        for (struct ob_dest *d = o->dests[b]; d; d = d->hnext)
            d->dead_until = 0;
    if (!uv_is_active((uv_handle_t *)&o->scan_soon))
        uv_timer_start(&o->scan_soon, ob_scan_soon_cb, 10, 0);
}

void
outbound_message(struct outbound *o, const char *qid)
{
    int rc;

    if (o == NULL || o->closing)
        return;
    rc = store_queue_get(o->n->store, qid, ob_scan_cb, o);
    if (rc < 0 && rc != RM_E_NOTFOUND)
        log_err("event=delivery.read_failed qid=%s err=\"%s\"", qid,
                rm_strerror(rc));
    if (o->backlog)
        ob_wake_at(o, ob_now() + 1);
    ob_dispatch(o);
}

/* ---- outcomes ------------------------------------------------------- */

static void
ob_rcpt_set(struct ob_rcpt *r, enum store_outcome out, const char *status,
            const char *diag)
{
    if (r->done)
        return;
    r->done = 1;
    r->out = out;
    snprintf(r->status, sizeof(r->status), "%s", status);
    snprintf(r->diag, sizeof(r->diag), "%s", diag ? diag : "");
    ob_clean(r->diag);
}

/* Every recipient of j not yet decided gets this outcome. */
static void
ob_job_set_all(struct ob_job *j, int perm, const char *status, const char *diag)
{
    for (size_t i = 0; i < j->nrcpts; i++)
        ob_rcpt_set(&j->rcpts[i], perm ? STORE_OUT_BOUNCED : STORE_OUT_DEFERRED,
                    status, diag);
}

static void
ob_reply_text(const struct smtpc_reply *r, char *out, size_t outsz)
{
    if (r->code == 0)
        snprintf(out, outsz, "no reply");
    else if (r->enh[0])
        snprintf(out, outsz, "%d %s %s", r->code, r->enh, r->text);
    else
        snprintf(out, outsz, "%d %s", r->code, r->text);
    ob_clean(out);
}

/* ---- reports (RFC 3464) -------------------------------------------- */

struct ob_read {
    struct buf *b;
};

static int
ob_read_cb(void *arg, const char *data, size_t len)
{
    struct ob_read *rd = arg;

    return buf_append(rd->b, data, len) == 0 ? 0 : RM_E_TOOBIG;
}

static int
ob_load(struct ob_job *j)
{
    struct ob_read rd = {&j->data};
    int rc;

    if (j->data.len > 0)
        return 0;
    rc = store_msg_read(j->ob->n->store, j->qid, ob_read_cb, &rd);
    if (rc != 0)
        buf_reset(&j->data);
    return rc;
}

static int
ob_user_cb(void *arg, const struct store_user *u)
{
    (void)u;
    *(int *)arg = 1;
    return 0;
}

/* Where a report to addr goes: a local mailbox (the user, or the
   postmaster when there is no such user) or out. */
static void
ob_report_route(struct outbound *ob, const char *addr, struct store_rcpt *r,
                char *mailbox, size_t mbsz, int double_bounce)
{
    const struct node_config *cfg = ob->n->cfg;
    const char *at = strrchr(addr, '@');
    char canon[STORE_ADDR_MAX];
    int found = 0;

    memset(r, 0, sizeof(*r));
    r->addr = addr;
    /* A report that fails is reported to the postmaster (the null sender
       path in ob_report); one to the postmaster is never reported. */
    r->notify = double_bounce ? STORE_NOTIFY_NEVER : 0;
    if (at == NULL || !node_config_local_domain(cfg, at + 1, strlen(at + 1))) {
        r->route = STORE_ROUTE_REMOTE;
        return;
    }
    r->route = STORE_ROUTE_LOCAL;
    if (store_addr_canon(addr, canon, sizeof(canon)) == 0 &&
        strncasecmp(addr, "postmaster@", 11) != 0 &&
        store_user_get(ob->n->store, canon, ob_user_cb, &found) == 0 && found)
        snprintf(mailbox, mbsz, "%s", canon);
    else
        snprintf(mailbox, mbsz, "%s", cfg->postmaster);
    r->mailbox = mailbox;
}

/*
 * Compose the report for the recipients of j that call for one (bounced,
 * delay notices, NOTIFY=SUCCESS relayed to a server without DSN) into
 * j->rmsg. 0 with j->rmsg.nrcpts = 0 when none is due.
 */
static int
ob_report(struct ob_job *j, const int *notice, int64_t retry_until)
{
    struct outbound *ob = j->ob;
    const struct node_config *cfg = ob->n->cfg;
    struct dsn_rcpt dr[OB_JOB_RCPTS];
    struct dsn_report rep;
    char from[300];
    const char *to = j->mail_from;
    size_t n = 0;
    enum dsn_action first = DSN_FAILED;
    int double_bounce = 0, rc;

    memset(&j->rmsg, 0, sizeof(j->rmsg));
    for (size_t i = 0; i < j->nrcpts; i++) {
        struct ob_rcpt *r = &j->rcpts[i];
        enum dsn_action a;
        if (!notice[i])
            continue;
        a = r->out == STORE_OUT_BOUNCED    ? DSN_FAILED
            : r->out == STORE_OUT_DEFERRED ? DSN_DELAYED
                                           : DSN_RELAYED;
        /* About mail from the null sender: failures only (to the
           postmaster, below). */
        if (j->mail_from[0] == '\0' && a != DSN_FAILED)
            continue;
        if (n == 0)
            first = a;
        memset(&dr[n], 0, sizeof(dr[n]));
        dr[n].addr = r->addr;
        dr[n].orcpt = r->orcpt;
        dr[n].action = a;
        dr[n].status = r->status;
        dr[n].remote_mta = j->remote_host[0] ? j->remote_host : NULL;
        dr[n].diagnostic = r->diag[0] ? r->diag : NULL;
        dr[n].last_attempt = ob_now();
        n++;
    }
    if (n == 0)
        return 0;
    if (to[0] == '\0') {
        /* A report about mail from the null sender (a bounce that could
           not be delivered) goes to the postmaster, and only failures. */
        if (first != DSN_FAILED)
            return 0;
        to = cfg->postmaster;
        double_bounce = 1;
    }
    if (rc = ob_load(j), rc != 0 && rc != RM_E_NOTFOUND)
        return rc;
    snprintf(from, sizeof(from), "MAILER-DAEMON@%s", cfg->hostname);
    memset(&rep, 0, sizeof(rep));
    rep.reporting_mta = cfg->hostname;
    rep.from = from;
    rep.to = to;
    rep.envid = j->envid;
    rep.arrival = j->arrival;
    rep.now = ob_now();
    rep.retry_until = first == DSN_DELAYED ? retry_until : 0;
    rep.ret_full = j->ret == STORE_RET_FULL;
    rep.smtputf8 = j->smtputf8;
    rep.orig = j->data.data ? j->data.data : "";
    rep.orig_len = j->data.len;
    rep.rcpts = dr;
    rep.nrcpts = n;
    rep.msgid_domain = cfg->hostname;
    buf_reset(&j->report);
    rc = dsn_compose(&rep, &j->report);
    if (rc == RM_E_INVAL) {
        /* A field the remote side chose (its host name) that a report
           cannot carry: report without it rather than not at all. */
        for (size_t i = 0; i < n; i++)
            dr[i].remote_mta = NULL;
        buf_reset(&j->report);
        rc = dsn_compose(&rep, &j->report);
    }
    if (rc != 0)
        return rc;
    ob_report_route(ob, to, &j->rrcpt, j->rmailbox, sizeof(j->rmailbox),
                    double_bounce);
    store_qid_new(ob->n->store, j->rmsg.qid);
    j->rmsg.mail_from = "";
    j->rmsg.ret = STORE_RET_HDRS;
    j->rmsg.body_type =
        j->smtputf8 || j->eightbit ? STORE_BODY_8BITMIME : STORE_BODY_7BIT;
    j->rmsg.smtputf8 = j->smtputf8;
    j->rmsg.arrival = ob_now();
    j->rmsg.client = "relaymesh (delivery status notification)";
    j->rmsg.hdr_from = from;
    j->rmsg.hdr_subject = dsn_subject(&rep);
    j->rmsg.rcpts = &j->rrcpt;
    j->rmsg.nrcpts = 1;
    j->rmsg.data = j->report.data;
    j->rmsg.len = j->report.len;
    log_info("event=delivery.report qid=%s for=%s to=<%s> action=%s "
             "rcpts=%zu%s",
             j->rmsg.qid, j->qid, to,
             first == DSN_FAILED    ? "failed"
             : first == DSN_DELAYED ? "delayed"
                                    : "relayed",
             n, double_bounce ? " double_bounce=1" : "");
    return 0;
}

static int64_t
ob_backoff(const struct node_config *cfg, uint32_t attempts)
{
    int64_t b = cfg->delivery_retry_first;

    for (uint32_t i = 0; i < attempts && b < cfg->delivery_retry_max; i++)
        b *= 2;
    return b < cfg->delivery_retry_max ? b : cfg->delivery_retry_max;
}

static void ob_results_submit(struct ob_job *j);

static void
ob_retry_cb(uv_timer_t *t)
{
    struct outbound *ob = t->data;
    struct ob_job *list = ob->retry_jobs, *j;

    ob->retry_jobs = NULL;
    while ((j = list) != NULL) {
        list = j->retry_next;
        j->retry_next = NULL;
        ob_results_submit(j);
    }
}

static void
ob_results_done(void *arg, int status)
{
    struct ob_job *j = arg;
    struct outbound *ob = j->ob;

    if (status != 0 && !ob->closing) {
        /* Nothing was recorded (a full disk, say). Keep the outcomes and
           the entries in the active set, and write them again later:
           sending the message again would duplicate it for the
           recipients that have it. */
        log_err("event=delivery.record_failed qid=%s err=\"%s\" "
                "retry_in=5s",
                j->qid, rm_strerror(status));
        j->retry_next = ob->retry_jobs;
        ob->retry_jobs = j;
        if (!uv_is_active((uv_handle_t *)&ob->retry))
            uv_timer_start(&ob->retry, ob_retry_cb, 5000, 0);
        return;
    }
    if (status == 0 && !ob->closing)
        mesh_repl_results(ob->n->mesh, j->res, j->nrcpts);
    if (status == 0 && j->rmsg.nrcpts > 0 && !ob->closing) {
        ob->st.reports++;
        if (j->rrcpt.route == STORE_ROUTE_LOCAL) {
            uint32_t zero = 0;
            node_queue_local(ob->n->queue, j->rmsg.qid, &zero, 1);
        } else {
            outbound_message(ob, j->rmsg.qid);
        }
    }
    for (size_t i = 0; i < j->nrcpts; i++)
        ob_active_del(ob, j->qid, j->rcpts[i].idx);
    ob_job_free(j);
    if (!ob->closing && ob->backlog && ob->nactive < OB_ACTIVE_MAX / 2 &&
        !uv_is_active((uv_handle_t *)&ob->scan_soon))
        uv_timer_start(&ob->scan_soon, ob_scan_soon_cb, 10, 0);
}

static void
ob_results_submit(struct ob_job *j)
{
    int rc = store_queue_results(j->ob->n->store, j->res, j->nrcpts,
                                 j->rmsg.nrcpts ? &j->rmsg : NULL,
                                 ob_results_done, j);
    if (rc != 0)
        ob_results_done(j, rc);
}

/* Every recipient of j has an outcome: record them (and the report) in
   one store transaction. */
static void
ob_job_finish(struct ob_job *j)
{
    struct outbound *ob = j->ob;
    const struct node_config *cfg = ob->n->cfg;
    struct store_qresult *res;
    char(*hist)[OB_TEXT_MAX + 400];
    int notice[OB_JOB_RCPTS];
    int64_t now = ob_now(), expire = j->arrival + cfg->delivery_lifetime;
    int64_t next_min = INT64_MAX;
    double delay;
    int rc;

    res = j->res = calloc(j->nrcpts, sizeof(*j->res));
    hist = j->hist = calloc(j->nrcpts, sizeof(*j->hist));
    if (res == NULL || hist == NULL) {
        /* Without memory to record them the entries stay due; the next
           scan takes them again. */
        log_err("event=delivery.out_of_memory qid=%s", j->qid);
        for (size_t i = 0; i < j->nrcpts; i++)
            ob_active_del(ob, j->qid, j->rcpts[i].idx);
        ob_job_free(j);
        ob_wake_at(ob, now + 5);
        return;
    }
    delay = (double)(now - j->arrival);
    {
        /* The queue id counts microseconds since the epoch (<< 8): a
           finer start than the arrival second. */
        unsigned long long v = strtoull(j->qid, NULL, 16) >> 8;
        uv_timeval64_t tv;
        if (v > 0 && uv_gettimeofday(&tv) == 0)
            delay = ((double)tv.tv_sec * 1e6 + (double)tv.tv_usec - (double)v) /
                    1e6;
    }
    for (size_t i = 0; i < j->nrcpts; i++) {
        struct ob_rcpt *r = &j->rcpts[i];
        unsigned nf = r->notify;
        unsigned kw = nf & 0x0f; /* the DSN keywords, not our flags */
        int want_fail = kw == 0 || (kw & STORE_NOTIFY_FAILURE);

        if (!r->done)
            ob_rcpt_set(r, STORE_OUT_DEFERRED, "4.3.0",
                        "internal: no outcome recorded");
        memset(&res[i], 0, sizeof(res[i]));
        memcpy(res[i].key.qid, j->qid, sizeof(res[i].key.qid));
        res[i].key.rcpt = r->idx;
        notice[i] = 0;
        /* Out of time: a deferral becomes a bounce. */
        if (r->out == STORE_OUT_DEFERRED && now >= expire) {
            char d[64];
            size_t len = strlen(r->diag);
            snprintf(d, sizeof(d),
                     " (gave up after %u attempts: queue lifetime exceeded)",
                     r->attempts + 1);
            if (len + strlen(d) >= sizeof(r->diag))
                len = sizeof(r->diag) - strlen(d) - 1;
            memcpy(r->diag + len, d, strlen(d) + 1);
            r->out = STORE_OUT_BOUNCED;
            if (r->status[0] != '5')
                snprintf(r->status, sizeof(r->status), "4.4.7");
        }
        res[i].outcome = r->out;
        switch (r->out) {
        case STORE_OUT_DELIVERED:
            ob->st.delivered++;
            log_info("event=delivery.sent qid=%s rcpt=<%s> relay=%s "
                     "delay=%.3f status=%s reply=\"%s\"",
                     j->qid, r->addr, j->remote, delay, r->status, r->diag);
            /* NOTIFY=SUCCESS to a server that does not do DSN: we tell
               the sender it was relayed (RFC 3461 §5.2.2). */
            notice[i] = (nf & STORE_NOTIFY_SUCCESS) && !j->dsn_offered;
            break;
        case STORE_OUT_BOUNCED:
            ob->st.bounced++;
            log_warn("event=delivery.bounced qid=%s rcpt=<%s> relay=%s "
                     "delay=%.3f status=%s reason=\"%s\"",
                     j->qid, r->addr, j->remote[0] ? j->remote : "none", delay,
                     r->status, r->diag);
            notice[i] = want_fail;
            break;
        case STORE_OUT_DEFERRED: {
            int64_t next = now + ob_backoff(cfg, r->attempts);
            char when[32];
            struct tm tm;
            time_t tt = (time_t)now;
            if (next > expire)
                next = expire;
            res[i].next_try = next;
            res[i].error = r->diag;
            gmtime_r(&tt, &tm);
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
            snprintf(hist[i], sizeof(hist[i]), "%s deferred %s: %s %s", when,
                     j->remote[0] ? j->remote : j->dest->domain, r->status,
                     r->diag);
            res[i].history = hist[i];
            if (next < next_min)
                next_min = next;
            ob->st.deferred++;
            log_info("event=delivery.deferred qid=%s rcpt=<%s> relay=%s "
                     "delay=%.3f attempts=%u next_try_in=%" PRId64
                     "s status=%s reason=\"%s\"",
                     j->qid, r->addr, j->remote[0] ? j->remote : "none", delay,
                     r->attempts + 1, next - now, r->status, r->diag);
            if (cfg->delivery_delay_notice > 0 &&
                now - j->arrival >= (int64_t)cfg->delivery_delay_notice &&
                !(nf & STORE_NOTIFY_DELAY_SENT) && !(nf & STORE_NOTIFY_NEVER) &&
                (kw == 0 || (kw & STORE_NOTIFY_DELAY))) {
                notice[i] = 1;
                res[i].set_notify = STORE_NOTIFY_DELAY_SENT;
            }
            break;
        }
        }
    }
    rc = ob_report(j, notice, expire);
    if (rc != 0) {
        /* Without its report a bounce would be silent: keep the entries
           and try again later. */
        log_err("event=delivery.report_failed qid=%s err=\"%s\"", j->qid,
                rm_strerror(rc));
        memset(&j->rmsg, 0, sizeof(j->rmsg));
        for (size_t i = 0; i < j->nrcpts; i++) {
            res[i].set_notify = 0; /* no notice was sent */
            if (res[i].outcome == STORE_OUT_BOUNCED) {
                res[i].outcome = STORE_OUT_DEFERRED;
                res[i].next_try = now + cfg->delivery_retry_first;
                res[i].error = j->rcpts[i].diag;
                if (res[i].next_try < next_min)
                    next_min = res[i].next_try;
            }
        }
    }
    ob_results_submit(j);
    ob_wake_at(ob, next_min);
}

/* ---- connections ---------------------------------------------------- */

static void
ob_unpark(struct ob_conn *cn)
{
    struct ob_conn **pp = &cn->dest->parked;

    if (!cn->parked)
        return;
    for (; *pp != NULL; pp = &(*pp)->pnext) {
        if (*pp == cn) {
            *pp = cn->pnext;
            break;
        }
    }
    cn->parked = 0;
    cn->pnext = NULL;
    cn->ob->nparked--;
}

static void
ob_conn_free(struct ob_conn *cn)
{
    struct outbound *ob = cn->ob;

    ob_unpark(cn);

    if (cn->c != NULL)
        smtpc_quit(cn->c);
    ob_set_idle(cn, 0);
    if (cn->working)
        cn->dest->working--;
    if (cn->job != NULL) {
        /* Only at close: the entries stay due in the store. */
        ob_job_free(cn->job);
    }
    if (cn->prev)
        cn->prev->next = cn->next;
    else
        ob->conn_list = cn->next;
    if (cn->next)
        cn->next->prev = cn->prev;
    cn->dest->conns--;
    ob->conns--;
    free(cn->mx);
    free(cn);
    if (!ob->closing)
        ob_dispatch(ob);
}

/* How long a destination nobody answered for stays marked down: jobs for
   it meanwhile are deferred at once. */
static int64_t
ob_dead_secs(const struct node_config *cfg)
{
    return cfg->delivery_retry_first < 2 * OB_DEAD_SECS
               ? cfg->delivery_retry_first / 2
               : OB_DEAD_SECS;
}

/* The connection ends with cn->fail_*: the job in hand gets the reason;
   when the failure is the destination's (no host would talk) and no
   other connection is working for it, so does every job waiting. */
static void
ob_conn_failed(struct ob_conn *cn)
{
    struct outbound *ob = cn->ob;
    struct ob_dest *d = cn->dest;
    struct ob_job *j;

    if (!cn->job_specific)
        log_warn("event=delivery.unreachable dest=%s status=%s "
                 "reason=\"%s\"",
                 d->domain, cn->fail_status, cn->fail_text);
    if (cn->job != NULL) {
        j = cn->job;
        cn->job = NULL;
        snprintf(j->remote, sizeof(j->remote), "%s", cn->remote);
        snprintf(j->remote_host, sizeof(j->remote_host), "%s", cn->remote_host);
        ob_job_set_all(j, cn->fail_perm, cn->fail_status, cn->fail_text);
        ob_job_finish(j);
    }
    if (!cn->job_specific && !ob->closing) {
        /* No new connection for a while; the jobs waiting get the reason
           unless a connection that works will take them. */
        d->dead_until = ob_now() + ob_dead_secs(ob->n->cfg);
        d->dead_perm = cn->fail_perm;
        snprintf(d->dead_status, sizeof(d->dead_status), "%s", cn->fail_status);
        snprintf(d->dead_text, sizeof(d->dead_text), "%s", cn->fail_text);
        while (d->working == 0 && (j = ob_dest_pop(d)) != NULL) {
            ob_job_set_all(j, cn->fail_perm, cn->fail_status, cn->fail_text);
            ob_job_finish(j);
        }
    }
    ob_conn_free(cn);
}

static void ob_fail(struct ob_conn *cn, int perm, const char *status,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
ob_fail(struct ob_conn *cn, int perm, const char *status, const char *fmt, ...)
{
    va_list ap;

    cn->fail_perm = perm;
    snprintf(cn->fail_status, sizeof(cn->fail_status), "%s", status);
    va_start(ap, fmt);
    vsnprintf(cn->fail_text, sizeof(cn->fail_text), fmt, ap);
    va_end(ap);
    ob_clean(cn->fail_text);
}

static void
ob_conn_next_addr(struct ob_conn *cn)
{
    cn->addr_i++;
    if (cn->addr_i >= cn->mx->hosts[cn->host_i].naddrs) {
        cn->addr_i = 0;
        cn->host_i++;
    }
    ob_conn_try(cn);
}

static void
ob_txn_cb(void *arg, struct smtpc *c, struct smtpc_txn *t,
          const struct smtpc_result *res)
{
    struct ob_conn *cn = arg;
    struct ob_job *j = cn->job;
    char text[OB_TEXT_MAX], st[16];

    (void)t;
    cn->job = NULL;
    j->dsn_offered = res->dsn;
    if (res->status < 0) {
        /* The connection broke during the transaction: it is gone. */
        cn->c = NULL;
        snprintf(text, sizeof(text),
                 "lost connection with %s while sending the message (%s)",
                 cn->remote, smtpc_strerror(res->status));
        ob_job_set_all(j, 0, "4.4.2", text);
        ob_job_finish(j);
        ob_conn_free(cn);
        return;
    }
    if (res->mail.code < 200 || res->mail.code > 299) {
        ob_reply_text(&res->mail, text, sizeof(text));
        dsn_status_from_reply(res->mail.code, res->mail.enh, st);
        ob_job_set_all(j, res->mail.code >= 500, st, text);
    }
    for (size_t i = 0; i < j->nrcpts; i++) {
        struct smtpc_rcpt *cr = &j->crcpts[i];
        struct ob_rcpt *r = &j->rcpts[i];
        const struct smtpc_reply *rep = &cr->r;
        if (r->done)
            continue;
        if (cr->r.code >= 200 && cr->r.code <= 299) {
            rep = &res->data;
            if (rep->code == 0) {
                ob_rcpt_set(r, STORE_OUT_DEFERRED, "4.4.2",
                            "no reply to the end of data");
                continue;
            }
        } else if (cr->r.code == 0) {
            ob_rcpt_set(r, STORE_OUT_DEFERRED, "4.4.2", "no reply to RCPT TO");
            continue;
        }
        ob_reply_text(rep, text, sizeof(text));
        dsn_status_from_reply(rep->code, rep->enh, st);
        if (rep->code >= 200 && rep->code <= 299)
            ob_rcpt_set(r, STORE_OUT_DELIVERED, st, text);
        else
            ob_rcpt_set(
                r, rep->code >= 500 ? STORE_OUT_BOUNCED : STORE_OUT_DEFERRED,
                st, text);
    }
    ob_job_finish(j);
    ob_set_idle(cn, 1);
    if (smtpc_usable(c))
        ob_conn_next_job(cn);
    else
        ob_conn_free(cn);
}

/* Sessions parked longer than OB_PARK_MS say QUIT. */
static void
ob_sweep_cb(uv_timer_t *t)
{
    struct outbound *ob = t->data;
    uint64_t now = uv_now(ob->n->loop);
    struct ob_conn *cn = ob->conn_list, *next;

    /* No dispatch while walking the list: it could free the next one. */
    ob->dispatching = 1;
    for (; cn != NULL; cn = next) {
        next = cn->next;
        if (cn->parked &&
            (now - cn->parked_at >= OB_PARK_MS || !smtpc_usable(cn->c)))
            ob_conn_free(cn);
    }
    ob->dispatching = 0;
    if (ob->nparked == 0)
        uv_timer_stop(&ob->sweep);
    ob_dispatch(ob);
}

/* A ready connection takes the next job of its destination, or ends. */
static void
ob_conn_next_job(struct ob_conn *cn)
{
    struct ob_dest *d = cn->dest;
    struct ob_job *j;
    int rc;

    for (;;) {
        if (!cn->ob->closing && d->head == NULL && cn->c != NULL &&
            smtpc_usable(cn->c)) {
            /* Nothing to send now: keep the session a moment for the
               next message to this destination. */
            struct outbound *ob = cn->ob;
            cn->parked = 1;
            cn->parked_at = uv_now(ob->n->loop);
            cn->pnext = d->parked;
            d->parked = cn;
            ob->nparked++;
            if (!uv_is_active((uv_handle_t *)&ob->sweep))
                uv_timer_start(&ob->sweep, ob_sweep_cb, OB_PARK_MS / 2,
                               OB_PARK_MS / 2);
            return;
        }
        if (cn->ob->closing || (j = ob_dest_pop(d)) == NULL) {
            ob_conn_free(cn);
            return;
        }
        rc = ob_load(j);
        if (rc == RM_E_NOTFOUND) {
            /* Deleted meanwhile: nothing to send, nothing to record. */
            for (size_t i = 0; i < j->nrcpts; i++)
                ob_active_del(cn->ob, j->qid, j->rcpts[i].idx);
            ob_job_free(j);
            continue;
        }
        if (rc != 0) {
            ob_job_set_all(j, 0, "4.3.0",
                           "cannot read the message from the store");
            ob_job_finish(j);
            continue;
        }
        break;
    }
    ob_set_idle(cn, 0);
    cn->job = j;
    cn->job_specific = 0;
    snprintf(j->remote, sizeof(j->remote), "%s", cn->remote);
    snprintf(j->remote_host, sizeof(j->remote_host), "%s", cn->remote_host);
    free(j->crcpts);
    j->crcpts = calloc(j->nrcpts, sizeof(*j->crcpts));
    if (j->crcpts == NULL) {
        cn->job = NULL;
        ob_job_set_all(j, 0, "4.3.0", "out of memory");
        ob_job_finish(j);
        ob_conn_free(cn);
        return;
    }
    for (size_t i = 0; i < j->nrcpts; i++) {
        j->crcpts[i].addr = j->rcpts[i].addr;
        j->crcpts[i].notify = j->rcpts[i].notify & 0x0f;
        j->crcpts[i].orcpt = j->rcpts[i].orcpt;
    }
    memset(&j->txn, 0, sizeof(j->txn));
    j->txn.mail_from = j->mail_from;
    j->txn.size = j->data.len;
    j->txn.eightbit = j->eightbit;
    j->txn.smtputf8 = j->smtputf8;
    j->txn.ret = j->ret == STORE_RET_FULL   ? 1
                 : j->ret == STORE_RET_HDRS ? 2
                                            : 0;
    j->txn.envid = j->envid;
    j->txn.rcpts = j->crcpts;
    j->txn.nrcpts = j->nrcpts;
    j->txn.data = j->data.data;
    j->txn.len = j->data.len;
    rc = smtpc_send(cn->c, &j->txn, ob_txn_cb, cn);
    if (rc == SMTPC_E_TOOBIG || rc == SMTPC_E_NOUTF8) {
        /* This host cannot take it: the next host may. The job stays
           with this connection while it moves on. */
        if (rc == SMTPC_E_TOOBIG)
            ob_fail(cn, 1, "5.3.4",
                    "message size %zu exceeds the limit of %s (%" PRIu64
                    " bytes)",
                    j->data.len, cn->remote, smtpc_max_size(cn->c));
        else
            ob_fail(cn, 1, "5.6.7",
                    "the message needs SMTPUTF8 and %s does not support it",
                    cn->remote);
        cn->job_specific = 1;
        smtpc_quit(cn->c);
        cn->c = NULL;
        if (cn->working) {
            cn->working = 0;
            cn->dest->working--;
        }
        ob_conn_next_addr(cn);
        return;
    }
    if (rc != 0) {
        cn->job = NULL;
        ob_job_set_all(j, 0, "4.3.0",
                       "internal error starting the transaction");
        ob_job_finish(j);
        ob_conn_free(cn);
    }
}

static void
ob_ready_cb(void *arg, struct smtpc *c, int status, const struct smtpc_reply *r)
{
    struct ob_conn *cn = arg;
    char text[OB_TEXT_MAX], st[16];

    if (status == 0) {
        cn->c = c;
        if (!cn->working) {
            cn->working = 1;
            cn->dest->working++;
        }
        if (cn->job != NULL) {
            /* A job that the previous host could not take goes first. */
            ob_dest_push_front(cn->ob, cn->dest, cn->job);
            cn->job = NULL;
            ob_set_idle(cn, 1);
        }
        ob_conn_next_job(cn);
        return;
    }
    cn->c = NULL; /* the client freed itself */
    if (status == SMTPC_E_REPLY && r != NULL && r->code != 0) {
        ob_reply_text(r, text, sizeof(text));
        dsn_status_from_reply(r->code, r->enh, st);
        /* Temporary even for a 5xx: another host, or the same one later
           (a wrong smarthost password must not bounce mail). */
        ob_fail(cn, 0, r->code >= 500 ? "4.4.2" : st,
                "host %s refused to talk to me: %s", cn->remote, text);
    } else if (status == SMTPC_E_TLS) {
        ob_fail(cn, 0, "4.7.5",
                "TLS with %s failed or is not offered "
                "(policy: %s)%s%s",
                cn->remote,
                node_config_tls_for(cn->ob->n->cfg, cn->dest->domain) ==
                        NODE_DTLS_REQUIRED
                    ? "required"
                    : "opportunistic",
                r && r->code ? ": " : "", r && r->code ? r->text : "");
    } else {
        ob_fail(cn, 0, "4.4.1", "connect to %s: %s", cn->remote,
                status < -30000 ? smtpc_strerror(status) : uv_strerror(status));
    }
    ob_conn_next_addr(cn);
}

/* Connect to the current address, or report when none is left. */
static void
ob_conn_try(struct ob_conn *cn)
{
    struct outbound *ob = cn->ob;
    const struct node_config *cfg = ob->n->cfg;
    struct smtpc_opts o;
    struct dns_host *h;
    struct sockaddr_storage sa;
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    enum node_delivery_tls lvl;
    int rc;

    while (cn->host_i < cn->mx->nhosts && cn->mx->hosts[cn->host_i].naddrs == 0)
        cn->host_i++;
    if (ob->closing || cn->host_i >= cn->mx->nhosts) {
        ob_conn_failed(cn);
        return;
    }
    h = &cn->mx->hosts[cn->host_i];
    memcpy(&sa, &h->addrs[cn->addr_i].sa, sizeof(sa));
    port = ob->smarthost[0] ? ob->smarthost_port : cfg->delivery_port;
    if (sa.ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)port);
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, ip,
                  sizeof(ip));
    } else {
        ((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)port);
        inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, ip,
                  sizeof(ip));
    }
    snprintf(cn->remote, sizeof(cn->remote), "%s[%s]:%u", h->name, ip, port);
    snprintf(cn->remote_host, sizeof(cn->remote_host), "%s", h->name);
    lvl = node_config_tls_for(cfg, cn->dest->domain);
    memset(&o, 0, sizeof(o));
    o.helo = ob->helo;
    o.server_name = h->name;
    o.tls = lvl == NODE_DTLS_NONE       ? SMTPC_TLS_NONE
            : lvl == NODE_DTLS_REQUIRED ? SMTPC_TLS_REQUIRED
                                        : SMTPC_TLS_OPPORTUNISTIC;
    o.tls_ctx = ob->tls;
    if (ob->smarthost[0] && cfg->delivery_smarthost_user[0]) {
        o.auth_user = cfg->delivery_smarthost_user;
        o.auth_pass = cfg->delivery_smarthost_pass;
        o.tls = SMTPC_TLS_REQUIRED; /* never a password in clear */
    }
    if (ob->tls == NULL)
        o.tls = SMTPC_TLS_NONE;
    o.timeout_connect = cfg->delivery_timeout_connect;
    o.timeout_greeting = cfg->delivery_timeout_greeting;
    o.timeout_mail = cfg->delivery_timeout_mail;
    o.timeout_rcpt = cfg->delivery_timeout_rcpt;
    o.timeout_data_init = cfg->delivery_timeout_data_init;
    o.timeout_data_block = cfg->delivery_timeout_data_block;
    o.timeout_data_done = cfg->delivery_timeout_data_done;
    o.log_id = cn->dest->domain;
    ob->st.connections++;
    rc = smtpc_connect(ob->n->loop, (struct sockaddr *)&sa, &o, ob_ready_cb, cn,
                       &cn->c);
    if (rc != 0) {
        ob_fail(cn, 0, "4.3.0", "cannot start a connection to %s: %s",
                cn->remote, rm_strerror(rc));
        ob_conn_failed(cn);
    }
}

static void
ob_dns_cb(void *arg, const struct dns_result *r)
{
    struct ob_conn *cn = arg;

    if (r->status != DNS_OK) {
        switch (r->status) {
        case DNS_NULLMX:
            ob_fail(cn, 1, "5.1.10", "%s", r->error);
            break;
        case DNS_NXDOMAIN:
            ob_fail(cn, 1, "5.1.2", "%s", r->error);
            break;
        case DNS_NOHOST:
            ob_fail(cn, 0, "4.4.4", "%s", r->error);
            break;
        case DNS_OK:
        case DNS_TEMPFAIL:
            ob_fail(cn, 0, "4.4.3", "%s", r->error);
            break;
        }
        cn->mx = NULL;
        cn->remote[0] = '\0';
        cn->remote_host[0] = '\0';
        ob_conn_failed(cn);
        return;
    }
    cn->mx = malloc(sizeof(*cn->mx));
    if (cn->mx == NULL) {
        ob_fail(cn, 0, "4.3.0", "out of memory");
        ob_conn_failed(cn);
        return;
    }
    memcpy(cn->mx, r, sizeof(*r));
    ob_fail(cn, 0, "4.4.1", "no MX host of %s could be reached",
            cn->dest->domain);
    ob_conn_try(cn);
}

/* 0, or -1 when no connection could be started (the failure has been
   dealt with: the destination is marked down). */
static int
ob_conn_start(struct outbound *ob, struct ob_dest *d)
{
    struct ob_conn *cn = calloc(1, sizeof(*cn));
    int rc;

    if (cn == NULL) {
        log_err("event=delivery.out_of_memory dest=%s", d->domain);
        d->dead_until = ob_now() + 1;
        d->dead_perm = 0;
        snprintf(d->dead_status, sizeof(d->dead_status), "4.3.0");
        snprintf(d->dead_text, sizeof(d->dead_text), "out of memory");
        return -1;
    }
    cn->ob = ob;
    cn->dest = d;
    cn->next = ob->conn_list;
    if (ob->conn_list)
        ob->conn_list->prev = cn;
    ob->conn_list = cn;
    d->conns++;
    ob->conns++;
    ob_set_idle(cn, 1);
    if (ob->smarthost[0] && !ob->smarthost_mx)
        rc = dns_host(ob->dns, ob->smarthost, ob_dns_cb, cn);
    else
        rc = dns_mx(ob->dns, d->domain, ob_dns_cb, cn);
    if (rc != 0) {
        ob_fail(cn, rc == RM_E_INVAL, rc == RM_E_INVAL ? "5.1.2" : "4.3.0",
                "cannot look up %s: %s", d->domain, rm_strerror(rc));
        ob_conn_failed(cn);
        return -1;
    }
    return 0;
}

/* ---- mesh domains --------------------------------------------------- */

static void
ob_mesh_unlink(struct outbound *ob, struct ob_job *j)
{
    if (j->mprev)
        j->mprev->mnext = j->mnext;
    else if (ob->mesh_jobs == j)
        ob->mesh_jobs = j->mnext;
    if (j->mnext)
        j->mnext->mprev = j->mprev;
    j->mprev = j->mnext = NULL;
}

static void
ob_mesh_held(struct ob_job *j, const char *why)
{
    char diag[OB_TEXT_MAX];

    if (j->dest->is_egress && strcmp(j->home, "(none)") == 0)
        snprintf(diag, sizeof(diag),
                 "4.4.1 this node has no egress ([mesh] egress = no) and no "
                 "mesh member announces it; held for store and forward");
    else if (j->dest->is_egress)
        snprintf(diag, sizeof(diag),
                 "4.4.1 egress node %s unreachable; held for store and "
                 "forward%s%s",
                 j->home, why ? ": " : "", why ? why : "");
    else
        snprintf(diag, sizeof(diag),
                 "4.4.1 home node %s of %s unreachable; held for store and "
                 "forward%s%s",
                 j->home, j->dest->domain, why ? ": " : "", why ? why : "");
    ob_job_set_all(j, 0, "4.4.1", diag);
}

static void
ob_mesh_cb(void *arg, int status, const char *why, const struct mxfer_res *res)
{
    struct ob_job *j = arg;
    struct outbound *ob = j->ob;

    ob_mesh_unlink(ob, j);
    j->dest->mesh_inflight--;
    if (status != 0) {
        ob_mesh_held(j, why);
    } else {
        for (size_t i = 0; i < j->nrcpts && i < res->n; i++) {
            const struct mxfer_result *r = &res->r[i];
            enum store_outcome out =
                r->outcome == MXFER_DELIVERED ? STORE_OUT_DELIVERED
                : r->outcome == MXFER_BOUNCED ? STORE_OUT_BOUNCED
                                              : STORE_OUT_DEFERRED;
            ob_rcpt_set(&j->rcpts[i], out, r->status, r->diag);
        }
    }
    ob_job_finish(j);
    ob_dispatch(ob); /* the destination's next jobs */
}

/* Hand j to the mesh: its home node gets it over the mesh connection. */
static void
ob_mesh_send(struct outbound *ob, struct ob_job *j,
             const struct mesh_home *home)
{
    struct mxfer_begin *b;
    int rc;

    snprintf(j->home, sizeof(j->home), "%s", home->name);
    snprintf(j->remote, sizeof(j->remote), "%s[mesh]", home->name);
    j->dest->mesh_inflight--; /* until the send below succeeds */
    if (!mesh_reach(ob->n->mesh, home->pk)) {
        /* Not connected now (a dial starts): no wait for it here, the
           entries come back as soon as the connection is up
           (outbound_mesh_ready). */
        ob_mesh_held(j, NULL);
        ob_job_finish(j);
        return;
    }
    if ((rc = ob_load(j)) != 0 || (b = calloc(1, sizeof(*b))) == NULL) {
        ob_job_set_all(j, 0, "4.3.0", "cannot read the message");
        ob_job_finish(j);
        return;
    }
    snprintf(b->mail_from, sizeof(b->mail_from), "%s", j->mail_from);
    snprintf(b->envid, sizeof(b->envid), "%s", j->envid ? j->envid : "");
    b->ret = (unsigned)j->ret;
    b->body = (unsigned)j->body_type;
    b->smtputf8 = j->smtputf8;
    b->nrcpts = (unsigned)j->nrcpts;
    for (size_t i = 0; i < j->nrcpts; i++) {
        snprintf(b->rcpts[i].addr, sizeof(b->rcpts[i].addr), "%s",
                 j->rcpts[i].addr);
        snprintf(b->rcpts[i].orcpt, sizeof(b->rcpts[i].orcpt), "%s",
                 j->rcpts[i].orcpt ? j->rcpts[i].orcpt : "");
        b->rcpts[i].notify = j->rcpts[i].notify & 0x0f;
    }
    /* In the list first: the callback unlinks. */
    j->mnext = ob->mesh_jobs;
    if (ob->mesh_jobs)
        ob->mesh_jobs->mprev = j;
    ob->mesh_jobs = j;
    j->dest->mesh_inflight++;
    rc = mesh_xfer_send(ob->n->mesh, home->pk, j->qid, b, j->data.data,
                        j->data.len, ob_mesh_cb, j, &j->mesh_h);
    free(b);
    if (rc != 0) {
        j->dest->mesh_inflight--;
        ob_mesh_unlink(ob, j);
        ob_mesh_held(j, rc == RM_E_AGAIN ? NULL : rm_strerror(rc));
        ob_job_finish(j);
    }
}

/* d's domain is hosted by a mesh member: waiting jobs go there, at most
   OB_MESH_INFLIGHT at a time (each holds its message in memory while
   it waits its turn on the link). 0 when d is not a mesh domain. */
static int
ob_dest_mesh(struct outbound *ob, struct ob_dest *d)
{
    struct mesh_home home;
    char addr[DNS_NAME_MAX + 4];
    struct ob_job *j;

    snprintf(addr, sizeof(addr), "x@%s", d->domain);
    d->is_mesh = mesh_route(ob->n->mesh, addr, strlen(addr), &home) == 1;
    /* Internet mail, and this node has no egress: a member with it
       delivers (store and forward while none is reachable). */
    d->is_egress = !d->is_mesh && mesh_egress_route(ob->n->mesh, &home) == 1;
    if (!d->is_mesh && !d->is_egress)
        return 0;
    while (d->mesh_inflight < OB_MESH_INFLIGHT &&
           (j = ob_dest_pop(d)) != NULL) {
        d->mesh_inflight++;
        ob_mesh_send(ob, j, &home);
    }
    return 1;
}

struct ob_mesh_walk {
    struct outbound *ob;
    size_t taken;
};

static int
ob_mesh_walk_cb(void *arg, const struct store_qentry *e)
{
    struct ob_mesh_walk *w = arg;
    struct mesh_home home;
    int r;

    if (e->route != STORE_ROUTE_REMOTE || e->state != STORE_Q_DEFERRED)
        return 0;
    if (mesh_route(w->ob->n->mesh, e->addr, strlen(e->addr), &home) != 1 &&
        mesh_egress_route(w->ob->n->mesh, &home) != 1)
        return 0;
    if (!home.reachable)
        return 0;
    r = ob_take_entry(w->ob, e);
    if (r == 0)
        w->taken++;
    return r > 0 ? 1 : 0;
}

static void
ob_mesh_ready_cb(uv_timer_t *t)
{
    struct outbound *ob = t->data;
    struct ob_mesh_walk w = {ob, 0};
    int rc;

    if (ob->closing)
        return;
    /* Deferred entries wait in the due index for their next try; the
       ones for a home node that is back are taken now. */
    rc = store_queue_list(ob->n->store, ob_mesh_walk_cb, &w);
    if (rc < 0 && rc != RM_E_NOTFOUND)
        log_err("event=delivery.scan_failed err=\"%s\"", rm_strerror(rc));
    if (w.taken > 0)
        log_info("event=delivery.mesh_ready entries=%zu", w.taken);
    ob_dispatch(ob);
}

void
outbound_mesh_ready(struct outbound *o)
{
    if (o == NULL || o->closing)
        return;
    if (!uv_is_active((uv_handle_t *)&o->mesh_ready))
        uv_timer_start(&o->mesh_ready, ob_mesh_ready_cb, 50, 0);
}

/* Start connections where jobs wait and the limits allow. */
static void
ob_dispatch(struct outbound *ob)
{
    const struct node_config *cfg = ob->n->cfg;
    struct ob_dest **pp = &ob->ready, *d;
    int64_t now = ob_now();

    if (ob->closing || ob->dispatching)
        return;
    ob->dispatching = 1; /* ob_job_finish and friends call back here */
    while ((d = *pp) != NULL) {
        struct ob_job *j;
        if (d->njobs == 0) {
            *pp = d->rnext;
            if (*pp == NULL)
                ob->ready_tail = pp;
            d->in_ready = 0;
            continue;
        }
        if (ob_dest_mesh(ob, d)) {
            if (d->njobs == 0)
                continue;   /* removed from ready above */
            pp = &d->rnext; /* the rest when a transfer ends */
            continue;
        }
        if (d->dead_until > now) {
            /* Down a moment ago: no new connection; what waits gets the
               same answer unless a working connection takes it. */
            while (d->working == 0 && (j = ob_dest_pop(d)) != NULL) {
                ob_job_set_all(j, d->dead_perm, d->dead_status, d->dead_text);
                ob_job_finish(j);
            }
            pp = &d->rnext;
            continue;
        }
        while (d->parked != NULL && d->njobs > 0) {
            struct ob_conn *cn = d->parked;
            ob_unpark(cn);
            if (smtpc_usable(cn->c))
                ob_conn_next_job(cn);
            else
                ob_conn_free(cn);
        }
        while (d->njobs > d->idle &&
               d->conns < cfg->delivery_concurrency_dest &&
               ob->conns < cfg->delivery_concurrency && d->dead_until <= now)
            if (ob_conn_start(ob, d) != 0)
                break;
        if (ob->conns >= cfg->delivery_concurrency)
            break;
        pp = &d->rnext;
    }
    ob->dispatching = 0;
}

/* ---- life ----------------------------------------------------------- */

int
outbound_new(struct node *n, struct outbound **out)
{
    const struct node_config *cfg = n->cfg;
    struct outbound *ob = calloc(1, sizeof(*ob));
    char err[256];
    int rc;

    if (ob == NULL)
        return -ENOMEM;
    ob->n = n;
    ob->ready_tail = &ob->ready;
    ob->active = calloc(OB_HASH_BUCKETS, sizeof(*ob->active));
    ob->dests = calloc(OB_DEST_BUCKETS, sizeof(*ob->dests));
    if (ob->active == NULL || ob->dests == NULL) {
        free(ob->active);
        free(ob->dests);
        free(ob);
        return -ENOMEM;
    }
    snprintf(ob->helo, sizeof(ob->helo), "%s",
             cfg->delivery_helo && cfg->delivery_helo[0] ? cfg->delivery_helo
                                                         : cfg->hostname);
    if (node_config_smarthost(cfg, ob->smarthost, sizeof(ob->smarthost),
                              &ob->smarthost_port, &ob->smarthost_mx) != 0)
        ob->smarthost[0] = '\0';
    rc = dns_new(n->loop, cfg->dns_server, &ob->dns, err, sizeof(err));
    if (rc != 0) {
        log_err("event=delivery.dns_failed err=\"%s\"", err);
        free(ob->active);
        free(ob->dests);
        free(ob);
        return RM_E_CONFIG;
    }
    if (cfg->delivery_tls != NODE_DTLS_NONE ||
        (cfg->delivery_tls_policy && cfg->delivery_tls_policy[0]) ||
        ob->smarthost[0]) {
        rc = tls_client_new(&ob->tls, err, sizeof(err));
        if (rc != 0) {
            log_err("event=delivery.tls_failed err=\"%s\" "
                    "hint=\"outbound mail goes without STARTTLS\"",
                    err);
            ob->tls = NULL;
        }
    }
    uv_timer_init(n->loop, &ob->wake);
    uv_timer_init(n->loop, &ob->scan_soon);
    uv_timer_init(n->loop, &ob->retry);
    uv_timer_init(n->loop, &ob->sweep);
    uv_timer_init(n->loop, &ob->mesh_ready);
    ob->sweep.data = ob;
    ob->mesh_ready.data = ob;
    ob->wake.data = ob;
    ob->scan_soon.data = ob;
    ob->retry.data = ob;
    ob->handles = 5;
    log_info("event=delivery.ready dns=%s smarthost=%s port=%u tls=%s%s",
             cfg->dns_server && cfg->dns_server[0] ? cfg->dns_server : "system",
             ob->smarthost[0] ? ob->smarthost : "none",
             ob->smarthost[0] ? ob->smarthost_port : cfg->delivery_port,
             ob->tls == NULL                                ? "none"
             : cfg->delivery_tls == NODE_DTLS_REQUIRED      ? "required"
             : cfg->delivery_tls == NODE_DTLS_OPPORTUNISTIC ? "opportunistic"
                                                            : "none",
             cfg->delivery_tls_policy && cfg->delivery_tls_policy[0]
                 ? " tls_policy=set"
                 : "");
    *out = ob;
    outbound_kick(ob);
    return 0;
}

void
outbound_get_stats(const struct outbound *o, struct outbound_stats *s)
{
    *s = o->st;
    s->active = o->nactive;
    s->conns_now = o->conns;
}

static void
ob_free_all(struct outbound *ob)
{
    for (size_t b = 0; b < OB_DEST_BUCKETS; b++) {
        struct ob_dest *d = ob->dests[b], *dn;
        for (; d; d = dn) {
            struct ob_job *j, *jn;
            dn = d->hnext;
            for (j = d->head; j; j = jn) {
                jn = j->next;
                ob_job_free(j);
            }
            free(d->domain);
            free(d);
        }
    }
    for (size_t b = 0; b < OB_HASH_BUCKETS; b++) {
        struct ob_key *k = ob->active[b], *kn;
        for (; k; k = kn) {
            kn = k->next;
            free(k);
        }
    }
    free(ob->active);
    free(ob->dests);
    if (ob->tls)
        tls_client_free(ob->tls);
    free(ob);
}

static void
ob_close_cb(uv_handle_t *h)
{
    struct outbound *ob = h->data;

    if (--ob->handles == 0)
        ob_free_all(ob);
}

void
outbound_close(struct outbound *o)
{
    if (o == NULL)
        return;
    o->closing = 1;
    while (o->conn_list != NULL)
        ob_conn_free(o->conn_list);
    uv_timer_stop(&o->wake);
    uv_timer_stop(&o->scan_soon);
    dns_free(o->dns);
    o->dns = NULL;
    uv_close((uv_handle_t *)&o->wake, ob_close_cb);
    uv_close((uv_handle_t *)&o->scan_soon, ob_close_cb);
    uv_timer_stop(&o->retry);
    uv_close((uv_handle_t *)&o->retry, ob_close_cb);
    uv_timer_stop(&o->sweep);
    uv_close((uv_handle_t *)&o->sweep, ob_close_cb);
    uv_timer_stop(&o->mesh_ready);
    uv_close((uv_handle_t *)&o->mesh_ready, ob_close_cb);
    while (o->mesh_jobs != NULL) {
        /* In transfer: the entries stay due in the store; a home node
           that stored it meanwhile drops the copy sent again. */
        struct ob_job *j = o->mesh_jobs;
        ob_mesh_unlink(o, j);
        mesh_xfer_cancel(o->n->mesh, j->mesh_h);
        ob_job_free(j);
    }
    while (o->retry_jobs != NULL) {
        /* Never recorded: the entries stay due in the store. */
        struct ob_job *j = o->retry_jobs;
        o->retry_jobs = j->retry_next;
        ob_job_free(j);
    }
}
