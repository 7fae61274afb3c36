/*
 * node_queue: the queue manager. It delivers local recipients into their
 * mailboxes (here) and hands remote recipients to outbound.c, which
 * delivers them by SMTP.
 *
 * Local delivery is batched: while one delivery request is with the
 * store's writer, keys of newly committed messages gather in `pending`
 * and go together in the next request. Delivery is idempotent in the
 * store, so a key that is delivered twice (a rescan racing a pending
 * batch, a crash between commit and delivery) still lands once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "node/mesh_repl.h"
#include "node/node.h"
#include "node/outbound.h"
#include "store/store.h"

/* A store that is full keeps the keys; try again after this long. */
#define NODE_QUEUE_RETRY_MS 5000
/* Keys per delivery request: bounds one write transaction. */
#define NODE_QUEUE_BATCH_MAX 4096

struct node_queue {
    struct node *n;
    uv_timer_t retry;
    struct store_qkey *pending;
    size_t npending;
    size_t cap;
    struct store_qkey *inflight;
    size_t ninflight;
    int busy;
    int closing;
    int failed;           /* last request failed: wait for the retry timer */
    struct outbound *out; /* remote recipients */
};

static void node_queue_submit(struct node_queue *q);

static int
node_queue_push(struct node_queue *q, const char *qid, uint32_t rcpt)
{
    if (q->npending == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 64;
        struct store_qkey *p = realloc(q->pending, ncap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        q->pending = p;
        q->cap = ncap;
    }
    memcpy(q->pending[q->npending].qid, qid, STORE_QID_LEN);
    q->pending[q->npending].qid[STORE_QID_LEN] = '\0';
    q->pending[q->npending].rcpt = rcpt;
    q->npending++;
    return 0;
}

static void
node_queue_retry_cb(uv_timer_t *t)
{
    struct node_queue *q = t->data;

    q->failed = 0;
    node_queue_submit(q);
}

static void
node_queue_done(void *arg, int status)
{
    struct node_queue *q = arg;
    size_t n = q->ninflight;

    q->busy = 0;
    if (status == 0) {
        q->n->stats.delivered_local += n;
        log_debug("event=queue.delivered_local count=%zu", n);
        free(q->inflight);
        q->inflight = NULL;
        q->ninflight = 0;
    } else {
        /* Put the keys back in front and try again later; the store has
           kept them queued, so nothing is lost even if we stop now. */
        log_warn("event=queue.deliver_failed count=%zu err=\"%s\" "
                 "retry_in=%ds",
                 n, rm_strerror(status), NODE_QUEUE_RETRY_MS / 1000);
        for (size_t i = 0; i < n && !q->closing; i++) {
            if (node_queue_push(q, q->inflight[i].qid, q->inflight[i].rcpt) !=
                0)
                break;
        }
        free(q->inflight);
        q->inflight = NULL;
        q->ninflight = 0;
        if (!q->closing) {
            q->failed = 1;
            uv_timer_start(&q->retry, node_queue_retry_cb, NODE_QUEUE_RETRY_MS,
                           0);
        }
    }
    if (!q->closing)
        node_queue_submit(q);
}

static void
node_queue_submit(struct node_queue *q)
{
    size_t take;
    int r;

    if (q->busy || q->closing || q->failed || q->npending == 0)
        return;
    take =
        q->npending < NODE_QUEUE_BATCH_MAX ? q->npending : NODE_QUEUE_BATCH_MAX;
    q->inflight = malloc(take * sizeof(*q->inflight));
    if (q->inflight == NULL)
        return;
    memcpy(q->inflight, q->pending, take * sizeof(*q->inflight));
    memmove(q->pending, q->pending + take,
            (q->npending - take) * sizeof(*q->pending));
    q->npending -= take;
    q->ninflight = take;
    r = store_queue_deliver_local(q->n->store, q->inflight, take,
                                  node_queue_done, q);
    if (r != 0) {
        /* Immediate refusal: callback never runs; treat like a failure. */
        q->busy = 1;
        node_queue_done(q, r);
        return;
    }
    q->busy = 1;
}

void
node_queue_local(struct node_queue *q, const char *qid, const uint32_t *rcpts,
                 size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (node_queue_push(q, qid, rcpts[i]) != 0) {
            /* Still queued in the store; the next rescan finds it. */
            log_err("event=queue.out_of_memory qid=%s", qid);
            break;
        }
    }
    node_queue_submit(q);
}

static int
node_queue_scan_cb(void *arg, const struct store_qentry *e)
{
    struct node_queue *q = arg;

    if (e->route != STORE_ROUTE_LOCAL)
        return 0;
    if (e->state != STORE_Q_QUEUED && e->state != STORE_Q_DEFERRED)
        return 0;
    /* Its sender has no answer yet ([mesh] ack_replicas): the wait hands
       it on, or withdraws it. */
    if (mesh_repl_wait_pending(q->n->mesh, e->key.qid))
        return 0;
    return node_queue_push(q, e->key.qid, e->key.rcpt);
}

/* Find local entries the store holds but we have not handed on: after a
   crash (accepted, not yet delivered) or a `queue release`. */
static void
node_queue_rescan(struct node_queue *q)
{
    size_t before = q->npending;
    int r = store_queue_list(q->n->store, node_queue_scan_cb, q);

    if (r != 0 && r != RM_E_NOTFOUND)
        log_err("event=queue.scan_failed err=\"%s\"", rm_strerror(r));
    if (q->npending > before)
        log_info("event=queue.recovered count=%zu", q->npending - before);
    node_queue_submit(q);
}

int
node_queue_new(struct node *n, struct node_queue **out)
{
    struct node_queue *q = calloc(1, sizeof(*q));
    int r;

    if (q == NULL)
        return -ENOMEM;
    q->n = n;
    uv_timer_init(n->loop, &q->retry);
    q->retry.data = q;
    *out = q;
    n->queue = q;
    node_queue_rescan(q);
    r = outbound_new(n, &q->out);
    if (r != 0) {
        node_queue_close(q);
        n->queue = NULL;
        *out = NULL;
        return r;
    }
    return 0;
}

void
node_queue_remote(struct node_queue *q, const char *qid)
{
    if (q == NULL || q->closing)
        return;
    /* Copied to the replicas before (or while) it is tried. */
    mesh_repl_accepted(q->n->mesh, qid);
    outbound_message(q->out, qid);
}

void
node_queue_outbound(struct node_queue *q, const char *qid)
{
    if (q == NULL || q->closing)
        return;
    outbound_message(q->out, qid);
}

void
node_queue_mesh_ready(struct node_queue *q)
{
    if (q != NULL && !q->closing)
        outbound_mesh_ready(q->out);
}

void
node_queue_outbound_stats(const struct node_queue *q, struct outbound_stats *s)
{
    if (q != NULL && q->out != NULL)
        outbound_get_stats(q->out, s);
    else
        memset(s, 0, sizeof(*s));
}

void
node_queue_kick(struct node_queue *q)
{
    if (q == NULL || q->closing)
        return;
    q->failed = 0;
    uv_timer_stop(&q->retry);
    node_queue_rescan(q);
    outbound_kick(q->out);
}

size_t
node_queue_inflight(const struct node_queue *q)
{
    return q->ninflight + q->npending;
}

static void
node_queue_close_cb(uv_handle_t *h)
{
    struct node_queue *q = h->data;

    free(q->pending);
    free(q->inflight);
    free(q);
}

void
node_queue_close(struct node_queue *q)
{
    /* A delivery still with the writer completes from store_close(),
       which the caller runs in this same loop tick, before the timer's
       close callback frees q. Undelivered keys stay queued in the store
       and are recovered at the next start. */
    q->closing = 1;
    outbound_close(q->out);
    q->out = NULL;
    uv_timer_stop(&q->retry);
    uv_close((uv_handle_t *)&q->retry, node_queue_close_cb);
}
