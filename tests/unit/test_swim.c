/*
 * Unit tests for mesh/swim.c: the SWIM + Lifeguard state machine driven by
 * a fake clock (a millisecond counter) and a fake network (an in-memory
 * queue of struct swim_msg between N machines, with a fixed latency,
 * per-link drop rules and seeded random loss). Everything is
 * deterministic: every machine and the network draw from their own seeded
 * xorshift generator.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rm_error.h"
#include "mesh/swim.h"

#define SIM_NODES_MAX 8
#define SIM_QUEUE_MAX 4096
#define SIM_EVENTS_MAX 4096
#define SIM_LATENCY_MS 5

struct sim;

struct sim_node {
    struct sim *sim;
    unsigned idx;
    char name[16];
    struct swim *s;
    uint64_t rng;
    int down; /* crashed: no ticks, no deliveries */
};

struct sim_qmsg {
    unsigned to;
    uint64_t at;
    struct swim_msg msg;
};

struct sim_event {
    uint64_t t;
    unsigned observer;
    char name[SWIM_NAME_MAX];
    enum swim_state old, new_state;
    uint32_t inc;
};

struct sim {
    unsigned n;
    struct sim_node node[SIM_NODES_MAX];
    uint64_t now;
    struct sim_qmsg *q;
    unsigned nq;
    int drop[SIM_NODES_MAX][SIM_NODES_MAX]; /* directed link down */
    unsigned loss_pct;
    uint64_t net_rng;
    struct sim_event *ev;
    unsigned nev;
    unsigned attempts[SIM_NODES_MAX][SIM_NODES_MAX]; /* sends tried */
};

static uint32_t
xorshift(uint64_t *st)
{
    uint64_t x = *st;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *st = x;
    return (uint32_t)(x >> 32);
}

static int
sim_index(const struct sim *sim, const char *name)
{
    for (unsigned i = 0; i < sim->n; i++) {
        if (strcmp(sim->node[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static void
sim_send(void *ctx, const char *to, const struct swim_msg *msg)
{
    struct sim_node *nd = ctx;
    struct sim *sim = nd->sim;
    int t = sim_index(sim, to);

    assert_true(t >= 0);
    assert_true(msg->n_updates <= SWIM_PIGGYBACK_MAX);
    sim->attempts[nd->idx][t]++;
    if (sim->drop[nd->idx][t]) {
        return;
    }
    if (sim->loss_pct > 0 && xorshift(&sim->net_rng) % 100 < sim->loss_pct) {
        return;
    }
    assert_true(sim->nq < SIM_QUEUE_MAX);
    sim->q[sim->nq].to = (unsigned)t;
    sim->q[sim->nq].at = sim->now + SIM_LATENCY_MS;
    sim->q[sim->nq].msg = *msg;
    sim->nq++;
}

static void
sim_state_change(void *ctx, const char *name, enum swim_state old,
                 enum swim_state new_state, uint32_t inc)
{
    struct sim_node *nd = ctx;
    struct sim *sim = nd->sim;
    struct sim_event *e;

    assert_true(sim->nev < SIM_EVENTS_MAX);
    e = &sim->ev[sim->nev++];
    e->t = sim->now;
    e->observer = nd->idx;
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->old = old;
    e->new_state = new_state;
    e->inc = inc;
}

static uint32_t
sim_random(void *ctx)
{
    struct sim_node *nd = ctx;

    return xorshift(&nd->rng);
}

/* n machines; full: each knows all the others, else only node 0 (seed). */
static struct sim *
sim_new(unsigned n, int full, uint64_t seed)
{
    struct sim *sim = calloc(1, sizeof(*sim));

    assert_non_null(sim);
    sim->q = calloc(SIM_QUEUE_MAX, sizeof(*sim->q));
    sim->ev = calloc(SIM_EVENTS_MAX, sizeof(*sim->ev));
    assert_non_null(sim->q);
    assert_non_null(sim->ev);
    sim->n = n;
    sim->net_rng = seed * 7919 + 1;
    for (unsigned i = 0; i < n; i++) {
        struct sim_node *nd = &sim->node[i];
        struct swim_callbacks cb = {sim_send, sim_state_change, sim_random, nd};

        nd->sim = sim;
        nd->idx = i;
        snprintf(nd->name, sizeof(nd->name), "node%u", i);
        nd->rng = seed * 1000003 + i + 1;
        /* Start the machines slightly apart, as real nodes do. */
        sim->now = i * 37;
        assert_int_equal(
            swim_new(nd->name, &swim_profile_lan, &cb, sim->now, &nd->s), 0);
    }
    for (unsigned i = 0; i < n; i++) {
        for (unsigned j = 0; j < n; j++) {
            if (i != j && (full || (i != 0 && j == 0))) {
                assert_int_equal(swim_add_member(sim->node[i].s,
                                                 sim->node[j].name, 0,
                                                 sim->now),
                                 0);
            }
        }
    }
    sim->nev = 0; /* initial "learnt of" events are not interesting */
    return sim;
}

static void
sim_trace(const struct sim *sim)
{
    if (getenv("SWIM_TEST_TRACE") != NULL) {
        for (unsigned i = 0; i < sim->nev; i++) {
            printf("# %6llu node%u: %s %s -> %s inc %u\n",
                   (unsigned long long)sim->ev[i].t, sim->ev[i].observer,
                   sim->ev[i].name, swim_state_name(sim->ev[i].old),
                   swim_state_name(sim->ev[i].new_state), sim->ev[i].inc);
        }
    }
}

static void
sim_free(struct sim *sim)
{
    for (unsigned i = 0; i < sim->n; i++) {
        swim_free(sim->node[i].s);
    }
    free(sim->q);
    free(sim->ev);
    free(sim);
}

/* Advance the fake clock 1 ms at a time up to `until`. */
static void
sim_run(struct sim *sim, uint64_t until)
{
    while (sim->now < until) {
        unsigned k = 0;
        unsigned nq;

        sim->now++;
        /* Deliver what is due; deliveries append to the queue (at a later
         * time), so walk only the messages present before. */
        nq = sim->nq;
        for (unsigned i = 0; i < nq; i++) {
            struct sim_qmsg m = sim->q[i];

            if (m.at > sim->now) {
                sim->q[k++] = m;
                continue;
            }
            if (!sim->node[m.to].down) {
                assert_int_equal(
                    swim_receive(sim->node[m.to].s, &m.msg, sim->now), 0);
            }
        }
        memmove(&sim->q[k], &sim->q[nq], (sim->nq - nq) * sizeof(*sim->q));
        sim->nq = k + (sim->nq - nq);
        for (unsigned i = 0; i < sim->n; i++) {
            struct sim_node *nd = &sim->node[i];

            if (!nd->down && swim_next_deadline(nd->s) <= sim->now) {
                assert_int_equal(swim_tick(nd->s, sim->now), 0);
            }
        }
    }
}

static void
sim_isolate(struct sim *sim, unsigned x, int on)
{
    for (unsigned i = 0; i < sim->n; i++) {
        if (i != x) {
            sim->drop[i][x] = on;
            sim->drop[x][i] = on;
        }
    }
}

static unsigned
count_events(const struct sim *sim, const char *name, enum swim_state st)
{
    unsigned c = 0;

    for (unsigned i = 0; i < sim->nev; i++) {
        if ((name == NULL || strcmp(sim->ev[i].name, name) == 0) &&
            sim->ev[i].new_state == st && sim->ev[i].old != st) {
            c++;
        }
    }
    return c;
}

/* Time of the first transition to st about name seen by observer, or
 * UINT64_MAX. */
static uint64_t
first_event(const struct sim *sim, unsigned observer, const char *name,
            enum swim_state st)
{
    for (unsigned i = 0; i < sim->nev; i++) {
        if (sim->ev[i].observer == observer &&
            strcmp(sim->ev[i].name, name) == 0 && sim->ev[i].new_state == st &&
            sim->ev[i].old != st) {
            return sim->ev[i].t;
        }
    }
    return UINT64_MAX;
}

/* The formula of swim.h, computed independently of swim.c. */
static uint64_t
expect_suspicion_timeout(const struct swim_profile *p, unsigned n, unsigned c)
{
    double scale = fmax(1.0, log10(fmax(1.0, (double)n)));
    double min = p->suspicion_mult * scale * p->probe_interval_ms;
    double max = 6 * min;
    unsigned k = p->suspicion_mult - 2;
    double t;

    if (n < k + 2) {
        return (uint64_t)min;
    }
    t = max - (max - min) * log(c + 1.0) / log(k + 1.0);
    return (uint64_t)floor(fmax(t, min));
}

static void
assert_all_alive(const struct sim *sim, uint32_t min_inc_of_last)
{
    for (unsigned i = 0; i < sim->n; i++) {
        assert_int_equal(swim_member_count(sim->node[i].s), sim->n);
        for (unsigned j = 0; j < sim->n; j++) {
            enum swim_state st;
            uint32_t inc;

            assert_int_equal(
                swim_member_get(sim->node[i].s, sim->node[j].name, &st, &inc),
                0);
            assert_int_equal(st, SWIM_ALIVE);
            if (j == sim->n - 1) {
                assert_true(inc >= min_inc_of_last);
            }
        }
    }
}

/* Five members, each knowing only the seed, learn of each other by gossip
 * and stay alive. */
static void
test_converge(void **state)
{
    struct sim *sim = sim_new(5, 0, 1);

    (void)state;
    sim_run(sim, 20000);
    assert_all_alive(sim, 0);
    assert_int_equal(count_events(sim, NULL, SWIM_SUSPECT), 0);
    assert_int_equal(count_events(sim, NULL, SWIM_DEAD), 0);
    for (unsigned i = 0; i < sim->n; i++) {
        assert_int_equal(swim_awareness(sim->node[i].s), 0);
    }
    sim_free(sim);
}

/* A member that stops answering is suspected, then declared dead by every
 * member within the LAN bound: found by a probe within two passes over the
 * others, suspected at the end of that probe interval, dead at most the
 * maximum suspicion timeout later. */
static void
test_crash_detected(void **state)
{
    const unsigned n = 5;
    const uint64_t crash = 5000;
    struct sim *sim = sim_new(n, 1, 2);
    uint64_t tmin = expect_suspicion_timeout(&swim_profile_lan, n, 2);
    uint64_t tmax = expect_suspicion_timeout(&swim_profile_lan, n, 0);
    uint64_t first_suspect = UINT64_MAX;

    (void)state;
    assert_int_equal(tmin, 4000); /* 4 * max(1, log10 5) * 1000 */
    assert_int_equal(tmax, 24000);
    sim_run(sim, crash);
    sim->node[4].down = 1;
    /* Relays answer nack before the requester's probe ends, so a dead
     * member costs the healthy ones no local health (Lifeguard): their
     * score stays 0 and their probing keeps its pace. */
    for (uint64_t t = crash;
         t < crash + 2 * (n - 1) * 1000 + 1000 + tmax + 1000; t += 50) {
        sim_run(sim, t + 50);
        for (unsigned i = 0; i < n - 1; i++) {
            assert_int_equal(swim_awareness(sim->node[i].s), 0);
        }
    }
    for (unsigned i = 0; i < n - 1; i++) {
        uint64_t s = first_event(sim, i, "node4", SWIM_SUSPECT);
        uint64_t d = first_event(sim, i, "node4", SWIM_DEAD);
        enum swim_state st;

        if (s < first_suspect) {
            first_suspect = s;
        }
        assert_true(d != UINT64_MAX);
        assert_int_equal(swim_member_get(sim->node[i].s, "node4", &st, NULL),
                         0);
        assert_int_equal(st, SWIM_DEAD);
        /* Probed within two passes of n - 1, suspected one interval on. */
        assert_true(d - crash <= 2 * (n - 1) * 1000 + 1000 + tmax);
    }
    assert_true(first_suspect - crash <= 2 * (n - 1) * 1000 + 1000);
    /* The first dead declaration: no sooner than min after the first
     * suspicion, no later than max. All four suspect on their own, so
     * confirmations bring it near min. */
    {
        uint64_t first_dead = UINT64_MAX;

        for (unsigned i = 0; i < n - 1; i++) {
            uint64_t d = first_event(sim, i, "node4", SWIM_DEAD);

            if (d < first_dead) {
                first_dead = d;
            }
        }
        assert_true(first_dead - first_suspect >= tmin);
        assert_true(first_dead - first_suspect <= tmax);
        printf("# crash at %llu: suspect +%llu ms, dead +%llu ms\n",
               (unsigned long long)crash,
               (unsigned long long)(first_suspect - crash),
               (unsigned long long)(first_dead - crash));
    }
    /* The others never suspected each other. */
    for (unsigned i = 0; i < n - 1; i++) {
        assert_int_equal(count_events(sim, sim->node[i].name, SWIM_SUSPECT), 0);
    }
    sim_free(sim);
}

/* A member cut off for a moment is suspected; it hears so once the link is
 * back, refutes with a higher incarnation and is never declared dead. */
static void
test_refute(void **state)
{
    struct sim *sim = sim_new(3, 1, 3);
    uint32_t inc;

    (void)state;
    sim_run(sim, 5000);
    sim_isolate(sim, 2, 1);
    sim_run(sim, 7500);
    sim_isolate(sim, 2, 0);
    sim_run(sim, 40000);
    sim_trace(sim);
    assert_true(count_events(sim, "node2", SWIM_SUSPECT) > 0);
    assert_int_equal(count_events(sim, NULL, SWIM_DEAD), 0);
    assert_all_alive(sim, 1);
    assert_int_equal(swim_member_get(sim->node[2].s, "node2", NULL, &inc), 0);
    assert_true(inc >= 1);
    assert_true(swim_stats_get(sim->node[2].s)->refutations >= 1);
    sim_free(sim);
}

/* The direct link 0 <-> 2 is down; the ping-req through 1 keeps 2 alive in
 * 0's view (and 0 in 2's). */
static void
test_indirect_probe(void **state)
{
    struct sim *sim = sim_new(3, 1, 4);

    (void)state;
    sim->drop[0][2] = 1;
    sim->drop[2][0] = 1;
    sim_run(sim, 60000);
    assert_true(sim->attempts[0][2] > 10);
    assert_true(sim->attempts[2][0] > 10);
    assert_int_equal(count_events(sim, NULL, SWIM_SUSPECT), 0);
    assert_all_alive(sim, 0);
    sim_free(sim);
}

/* 20% loss on every link for 60 s: suspicions may happen, but nobody is
 * declared dead. SWIM_TEST_TRACE=1 prints every state change. */
static void
test_loss_no_false_dead(void **state)
{
    /* Five seeds by default; SWIM_SEEDS=N runs N (300 pass). */
    const char *env = getenv("SWIM_SEEDS");
    uint64_t nseeds = env != NULL ? strtoull(env, NULL, 10) : 5;

    for (uint64_t seed = 10; seed < 10 + nseeds; seed++) {
        struct sim *sim = sim_new(5, 1, seed);

        (void)state;
        sim->loss_pct = 20;
        sim_run(sim, 60000);
        sim_trace(sim);
        printf("# seed %llu: %u suspicions, 0 dead expected, %u seen\n",
               (unsigned long long)seed, count_events(sim, NULL, SWIM_SUSPECT),
               count_events(sim, NULL, SWIM_DEAD));
        assert_int_equal(count_events(sim, NULL, SWIM_DEAD), 0);
        sim_free(sim);
    }
}

/* ---- Single machine, messages injected by hand. ---- */

#define CAP_MAX 256

struct cap {
    uint64_t rng;
    unsigned nsent;
    char to[CAP_MAX][SWIM_NAME_MAX];
    struct swim_msg sent[CAP_MAX];
    unsigned nchanges;
    enum swim_state last_state;
    char last_name[SWIM_NAME_MAX];
};

static void
cap_send(void *ctx, const char *to, const struct swim_msg *msg)
{
    struct cap *c = ctx;

    assert_true(msg->n_updates <= SWIM_PIGGYBACK_MAX);
    if (c->nsent < CAP_MAX) {
        snprintf(c->to[c->nsent], SWIM_NAME_MAX, "%s", to);
        c->sent[c->nsent] = *msg;
    }
    c->nsent++;
}

static void
cap_change(void *ctx, const char *name, enum swim_state old,
           enum swim_state new_state, uint32_t inc)
{
    struct cap *c = ctx;

    c->nchanges++;
    c->last_state = new_state;
    snprintf(c->last_name, SWIM_NAME_MAX, "%s", name);
}

static uint32_t
cap_random(void *ctx)
{
    struct cap *c = ctx;

    return xorshift(&c->rng);
}

static struct swim *
cap_new(struct cap *c, unsigned others)
{
    struct swim_callbacks cb = {cap_send, cap_change, cap_random, c};
    struct swim *s;
    char name[SWIM_NAME_MAX];

    memset(c, 0, sizeof(*c));
    c->rng = 42;
    assert_int_equal(swim_new("a", &swim_profile_lan, &cb, 0, &s), 0);
    for (unsigned i = 0; i < others; i++) {
        snprintf(name, sizeof(name), "m%u", i);
        assert_int_equal(swim_add_member(s, name, 0, 0), 0);
    }
    return s;
}

static void
inject(struct swim *s, const char *from, const char *name, enum swim_state st,
       uint32_t inc, uint64_t now)
{
    struct swim_msg m;

    memset(&m, 0, sizeof(m));
    m.type = SWIM_MSG_ACK;
    m.seq = 0xdead; /* matches nothing */
    snprintf(m.from, sizeof(m.from), "%s", from);
    m.n_updates = 1;
    snprintf(m.updates[0].name, SWIM_NAME_MAX, "%s", name);
    snprintf(m.updates[0].from, SWIM_NAME_MAX, "%s", from);
    m.updates[0].incarnation = inc;
    m.updates[0].state = st;
    assert_int_equal(swim_receive(s, &m, now), 0);
}

static void
expect_member(struct swim *s, const char *name, enum swim_state st,
              uint32_t inc)
{
    enum swim_state got;
    uint32_t got_inc;

    assert_int_equal(swim_member_get(s, name, &got, &got_inc), 0);
    assert_string_equal(swim_state_name(got), swim_state_name(st));
    assert_int_equal(got_inc, inc);
}

static void
test_incarnation_rules(void **state)
{
    struct cap c;
    struct swim *s = cap_new(&c, 2);

    (void)state;
    assert_int_equal(swim_add_member(s, "x", 5, 0), 0);
    expect_member(s, "x", SWIM_ALIVE, 5);
    /* Stale alive ignored. */
    inject(s, "m0", "x", SWIM_ALIVE, 4, 10);
    expect_member(s, "x", SWIM_ALIVE, 5);
    /* Stale suspect ignored. */
    inject(s, "m0", "x", SWIM_SUSPECT, 4, 10);
    expect_member(s, "x", SWIM_ALIVE, 5);
    /* Suspect overrides alive at equal incarnation... */
    inject(s, "m0", "x", SWIM_SUSPECT, 5, 10);
    expect_member(s, "x", SWIM_SUSPECT, 5);
    /* ...and alive at equal incarnation does not undo it. */
    inject(s, "m1", "x", SWIM_ALIVE, 5, 10);
    expect_member(s, "x", SWIM_SUSPECT, 5);
    /* A higher alive overrides suspect. */
    inject(s, "m1", "x", SWIM_ALIVE, 6, 10);
    expect_member(s, "x", SWIM_ALIVE, 6);
    /* Dead overrides alive (and suspect) at equal incarnation. */
    inject(s, "m0", "x", SWIM_DEAD, 6, 10);
    expect_member(s, "x", SWIM_DEAD, 6);
    /* Dead is final until an alive with a higher incarnation. */
    inject(s, "m0", "x", SWIM_ALIVE, 6, 10);
    expect_member(s, "x", SWIM_DEAD, 6);
    inject(s, "m0", "x", SWIM_SUSPECT, 7, 10);
    expect_member(s, "x", SWIM_DEAD, 6);
    inject(s, "m0", "x", SWIM_ALIVE, 7, 10);
    expect_member(s, "x", SWIM_ALIVE, 7);
    /* A member that says it is dead has left. */
    inject(s, "x", "x", SWIM_DEAD, 7, 10);
    expect_member(s, "x", SWIM_LEFT, 7);
    /* Unknown member: suspect and dead are ignored, alive adds it. */
    inject(s, "m0", "y", SWIM_DEAD, 3, 10);
    assert_int_equal(swim_member_get(s, "y", NULL, NULL), RM_E_NOTFOUND);
    inject(s, "m0", "y", SWIM_ALIVE, 3, 10);
    expect_member(s, "y", SWIM_ALIVE, 3);

    /* Never accept dead or suspect about ourselves: refute beyond it. */
    inject(s, "m0", "a", SWIM_SUSPECT, 0, 20);
    expect_member(s, "a", SWIM_ALIVE, 1);
    inject(s, "m0", "a", SWIM_DEAD, 4, 20);
    expect_member(s, "a", SWIM_ALIVE, 5);
    inject(s, "m0", "a", SWIM_DEAD, 2, 20); /* stale: ignored */
    expect_member(s, "a", SWIM_ALIVE, 5);
    assert_int_equal(swim_stats_get(s)->refutations, 2);
    assert_int_equal(swim_awareness(s), 2);
    /* The refutation is gossiped on the next message. */
    {
        struct swim_msg ping;
        int found = 0;

        memset(&ping, 0, sizeof(ping));
        ping.type = SWIM_MSG_PING;
        ping.seq = 7;
        snprintf(ping.from, sizeof(ping.from), "m0");
        snprintf(ping.target, sizeof(ping.target), "a");
        c.nsent = 0;
        assert_int_equal(swim_receive(s, &ping, 30), 0);
        assert_int_equal(c.nsent, 1);
        assert_string_equal(c.to[0], "m0");
        assert_int_equal(c.sent[0].type, SWIM_MSG_ACK);
        assert_int_equal(c.sent[0].seq, 7);
        for (unsigned u = 0; u < c.sent[0].n_updates; u++) {
            const struct swim_update *up = &c.sent[0].updates[u];

            if (strcmp(up->name, "a") == 0) {
                assert_int_equal(up->state, SWIM_ALIVE);
                assert_int_equal(up->incarnation, 5);
                found = 1;
            }
        }
        assert_true(found);
    }
    /* After leaving, a member does not refute. */
    assert_int_equal(swim_leave(s, 40), 0);
    inject(s, "m0", "a", SWIM_DEAD, 9, 50);
    expect_member(s, "a", SWIM_LEFT, 5);
    swim_free(s);
}

/* Run the single machine to `until`, answering each of its pings at once:
 * every other member is reachable, so only injected suspicions count. */
static void
cap_run(struct swim *s, struct cap *c, uint64_t *now, uint64_t until)
{
    while (*now < until) {
        (*now)++;
        c->nsent = 0;
        if (swim_next_deadline(s) <= *now) {
            assert_int_equal(swim_tick(s, *now), 0);
        }
        for (unsigned i = 0; i < c->nsent && i < CAP_MAX; i++) {
            if (c->sent[i].type == SWIM_MSG_PING) {
                struct swim_msg ack;

                memset(&ack, 0, sizeof(ack));
                ack.type = SWIM_MSG_ACK;
                ack.seq = c->sent[i].seq;
                snprintf(ack.from, sizeof(ack.from), "%s", c->to[i]);
                assert_int_equal(swim_receive(s, &ack, *now), 0);
            }
        }
    }
}

static void
test_confirmations_shrink_timeout(void **state)
{
    const unsigned n = 10; /* log10(10) = 1: min 4 s, max 24 s, k = 2 */
    uint64_t t1 = expect_suspicion_timeout(&swim_profile_lan, n, 1);
    enum swim_state st;

    (void)state;
    assert_int_equal(expect_suspicion_timeout(&swim_profile_lan, n, 0), 24000);
    assert_int_equal(t1, 11381); /* 24000 - 20000 * ln 2 / ln 3 */
    assert_int_equal(expect_suspicion_timeout(&swim_profile_lan, n, 2), 4000);

    /* No confirmation: max. */
    {
        struct cap c;
        struct swim *s = cap_new(&c, n - 1);
        uint64_t now = 0;

        cap_run(s, &c, &now, 1000);
        inject(s, "m1", "m0", SWIM_SUSPECT, 0, now);
        cap_run(s, &c, &now, 1000 + 24000 - 1);
        expect_member(s, "m0", SWIM_SUSPECT, 0);
        cap_run(s, &c, &now, 1000 + 24000);
        expect_member(s, "m0", SWIM_DEAD, 0);
        swim_free(s);
    }
    /* One independent confirmation (a repeat from the same member does
     * not count). */
    {
        struct cap c;
        struct swim *s = cap_new(&c, n - 1);
        uint64_t now = 0;

        cap_run(s, &c, &now, 1000);
        inject(s, "m1", "m0", SWIM_SUSPECT, 0, now);
        cap_run(s, &c, &now, 2000);
        inject(s, "m1", "m0", SWIM_SUSPECT, 0, now);
        inject(s, "m2", "m0", SWIM_SUSPECT, 0, now);
        cap_run(s, &c, &now, 1000 + t1 - 1);
        expect_member(s, "m0", SWIM_SUSPECT, 0);
        cap_run(s, &c, &now, 1000 + t1);
        expect_member(s, "m0", SWIM_DEAD, 0);
        swim_free(s);
    }
    /* k confirmations: min, counted from the first suspicion; a third
     * changes nothing. */
    {
        struct cap c;
        struct swim *s = cap_new(&c, n - 1);
        uint64_t now = 0;

        cap_run(s, &c, &now, 1000);
        inject(s, "m1", "m0", SWIM_SUSPECT, 0, now);
        cap_run(s, &c, &now, 2000);
        inject(s, "m2", "m0", SWIM_SUSPECT, 0, now);
        inject(s, "m3", "m0", SWIM_SUSPECT, 0, now);
        inject(s, "m4", "m0", SWIM_SUSPECT, 0, now);
        cap_run(s, &c, &now, 1000 + 4000 - 1);
        assert_int_equal(swim_member_get(s, "m0", &st, NULL), 0);
        assert_int_equal(st, SWIM_SUSPECT);
        cap_run(s, &c, &now, 1000 + 4000);
        expect_member(s, "m0", SWIM_DEAD, 0);
        swim_free(s);
    }
}

/* An update is carried by exactly retransmit_mult * ceil(log10(n + 1))
 * messages, then dropped. */
static void
test_retransmit_limit(void **state)
{
    struct cap c;
    struct swim *s = cap_new(&c, 4);
    unsigned carried = 0;

    (void)state;
    /* n = 6 after y joins: 4 * ceil(log10 7) = 4. */
    inject(s, "m0", "y", SWIM_ALIVE, 1, 0);
    assert_int_equal(swim_retransmit_limit(s), 4);
    c.nsent = 0;
    for (unsigned i = 0; i < 20; i++) {
        struct swim_msg ping;

        memset(&ping, 0, sizeof(ping));
        ping.type = SWIM_MSG_PING;
        ping.seq = i;
        snprintf(ping.from, sizeof(ping.from), "m1");
        snprintf(ping.target, sizeof(ping.target), "a");
        assert_int_equal(swim_receive(s, &ping, 1), 0);
    }
    assert_int_equal(c.nsent, 20);
    for (unsigned i = 0; i < c.nsent; i++) {
        for (unsigned u = 0; u < c.sent[i].n_updates; u++) {
            if (strcmp(c.sent[i].updates[u].name, "y") == 0) {
                carried++;
            }
        }
    }
    assert_int_equal(carried, 4);
    /* Nothing left to gossip: the queue drains. */
    assert_int_equal(c.sent[19].n_updates, 0);
    swim_free(s);

    /* n = 10: 4 * ceil(log10 11) = 8. */
    s = cap_new(&c, 9);
    assert_int_equal(swim_retransmit_limit(s), 8);
    swim_free(s);
}

static void
test_misuse_and_bad_input(void **state)
{
    struct cap c;
    struct swim *s = cap_new(&c, 1);
    struct swim_callbacks cb = {cap_send, NULL, NULL, &c};
    struct swim_profile bad = swim_profile_lan;
    struct swim *t = NULL;
    struct swim_msg m;

    (void)state;
    assert_int_equal(swim_new("z", &swim_profile_lan, &cb, 0, &t), RM_E_INVAL);
    cb.random = cap_random;
    assert_int_equal(swim_new("", &swim_profile_lan, &cb, 0, &t), RM_E_INVAL);
    bad.indirect_checks = SWIM_INDIRECT_MAX + 1;
    assert_int_equal(swim_new("z", &bad, &cb, 0, &t), RM_E_INVAL);
    assert_null(t);
    memset(&m, 'x', sizeof(m)); /* names not terminated */
    m.type = SWIM_MSG_ACK;
    m.n_updates = 0;
    assert_int_equal(swim_receive(s, &m, 0), RM_E_PROTO);
    memset(&m, 0, sizeof(m));
    m.type = SWIM_MSG_ACK;
    snprintf(m.from, sizeof(m.from), "m0");
    m.n_updates = SWIM_PIGGYBACK_MAX + 1;
    assert_int_equal(swim_receive(s, &m, 0), RM_E_PROTO);
    assert_int_equal(swim_stats_get(s)->rx_invalid, 2);
    assert_string_equal(swim_state_name(SWIM_SUSPECT), "suspect");
    swim_free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_converge),
        cmocka_unit_test(test_crash_detected),
        cmocka_unit_test(test_refute),
        cmocka_unit_test(test_indirect_probe),
        cmocka_unit_test(test_loss_no_false_dead),
        cmocka_unit_test(test_incarnation_rules),
        cmocka_unit_test(test_confirmations_shrink_timeout),
        cmocka_unit_test(test_retransmit_limit),
        cmocka_unit_test(test_misuse_and_bad_input),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
