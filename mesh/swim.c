/*
 * SWIM + Lifeguard membership state machine. See swim.h for the contract
 * and the rules; the comments here say why, citing memberlist where its
 * behaviour is followed.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/rm_error.h"
#include "mesh/swim.h"

struct swim_member {
    char name[SWIM_NAME_MAX];
    uint32_t incarnation;
    enum swim_state state;
    /* Suspicion (Lifeguard): valid while state == SWIM_SUSPECT. */
    uint64_t susp_start;
    uint64_t susp_deadline;
    uint32_t susp_min, susp_max;
    unsigned susp_k, susp_n;
    /* Who already confirmed (the first suspector included, as memberlist
     * does, so it cannot count twice). At most k + 1 are needed. */
    char susp_from[SWIM_INDIRECT_MAX + 2][SWIM_NAME_MAX];
    unsigned susp_nfrom;
    /* The one queued update about this member (memberlist's
     * TransmitLimitedQueue invalidates older updates about a node). */
    int bcast_pending;
    unsigned bcast_transmits;
    uint64_t bcast_id;
    struct swim_update bcast;
};

struct swim_relay {
    int used;
    uint32_t seq;     /* our ping to the target */
    uint32_t req_seq; /* the requester's ping-req */
    uint64_t deadline;
    char requester[SWIM_NAME_MAX];
};

struct swim_probe {
    int active;
    int indirect; /* ping-reqs sent */
    unsigned target;
    uint32_t seq;
    uint64_t direct_deadline;
    uint64_t end;
    unsigned expected_nacks, nacks;
};

struct swim {
    struct swim_profile prof;
    struct swim_callbacks cb;
    struct swim_member *m; /* m[0] is this member */
    unsigned n;
    uint16_t order[SWIM_MEMBERS_MAX]; /* probe order, self excluded */
    unsigned norder, probe_index;
    uint16_t scratch[SWIM_MEMBERS_MAX];
    uint32_t next_seq;
    uint64_t next_bcast_id;
    uint64_t next_probe;
    uint64_t next_gossip;
    unsigned awareness;
    int left;
    int tell_alive; /* piggyback(): add our alive (a reply to a suspector) */
    struct swim_probe probe;
    struct swim_relay relay[SWIM_RELAY_MAX];
    struct swim_stats stats;
};

const struct swim_profile swim_profile_lan = {
    .probe_interval_ms = 1000,
    .probe_timeout_ms = 500,
    .indirect_checks = 3,
    .suspicion_mult = 4,
    .retransmit_mult = 4,
    .gossip_interval_ms = 200,
    .gossip_nodes = 3,
};

const struct swim_profile swim_profile_wan = {
    .probe_interval_ms = 5000,
    .probe_timeout_ms = 3000,
    .indirect_checks = 3,
    .suspicion_mult = 6,
    .retransmit_mult = 4,
    .gossip_interval_ms = 500,
    .gossip_nodes = 4,
};

static const char *const state_names[] = {
    [SWIM_ALIVE] = "alive",
    [SWIM_SUSPECT] = "suspect",
    [SWIM_DEAD] = "dead",
    [SWIM_LEFT] = "left",
};

const char *
swim_state_name(enum swim_state st)
{
    if ((unsigned)st < sizeof(state_names) / sizeof(state_names[0])) {
        return state_names[st];
    }
    return "?";
}

static int
name_ok(const char *name)
{
    return name != NULL && name[0] != '\0' &&
           memchr(name, '\0', SWIM_NAME_MAX) != NULL;
}

static uint32_t
rnd(struct swim *s, uint32_t bound)
{
    return bound == 0 ? 0 : s->cb.random(s->cb.ctx) % bound;
}

static uint64_t
scaled(const struct swim *s, uint32_t ms)
{
    return (uint64_t)ms * (s->awareness + 1);
}

static void
awareness_apply(struct swim *s, int delta)
{
    int v = (int)s->awareness + delta;

    if (v < 0) {
        v = 0;
    }
    if (v > SWIM_AWARENESS_MAX - 1) {
        v = SWIM_AWARENESS_MAX - 1;
    }
    s->awareness = (unsigned)v;
}

static int
find(const struct swim *s, const char *name)
{
    for (unsigned i = 0; i < s->n; i++) {
        if (strcmp(s->m[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Members that count for the suspicion timeout: alive or suspect. */
static unsigned
live_count(const struct swim *s)
{
    unsigned c = 0;

    for (unsigned i = 0; i < s->n; i++) {
        if (s->m[i].state == SWIM_ALIVE || s->m[i].state == SWIM_SUSPECT) {
            c++;
        }
    }
    return c;
}

unsigned
swim_retransmit_limit(const struct swim *s)
{
    /* memberlist util.go retransmitLimit: mult * ceil(log10(n + 1)). */
    double scale = ceil(log10((double)s->n + 1.0));

    return s->prof.retransmit_mult * (unsigned)scale;
}

static void
notify(struct swim *s, unsigned i, enum swim_state old)
{
    if (s->cb.state_change != NULL) {
        s->cb.state_change(s->cb.ctx, s->m[i].name, old, s->m[i].state,
                           s->m[i].incarnation);
    }
}

static void
set_state(struct swim *s, unsigned i, enum swim_state st)
{
    enum swim_state old = s->m[i].state;

    s->m[i].state = st;
    notify(s, i, old);
}

static void
enqueue(struct swim *s, unsigned i, enum swim_state st, const char *from)
{
    struct swim_member *m = &s->m[i];

    memset(&m->bcast, 0, sizeof(m->bcast));
    memcpy(m->bcast.name, m->name, SWIM_NAME_MAX);
    memcpy(m->bcast.from, from, strlen(from) + 1);
    m->bcast.incarnation = m->incarnation;
    m->bcast.state = st;
    m->bcast_pending = 1;
    m->bcast_transmits = 0;
    m->bcast_id = s->next_bcast_id++;
}

/* Fill msg->updates: least transmitted first, newest first among equals
 * (memberlist queue.go GetBroadcasts). A suspicion or death about the
 * addressee itself goes first, so that it learns of it and can refute
 * (Lifeguard: tell the suspect). */
static void
piggyback(struct swim *s, struct swim_msg *msg, const char *to)
{
    unsigned limit = swim_retransmit_limit(s);
    unsigned chosen[SWIM_PIGGYBACK_MAX];
    int t = find(s, to);

    int notice = 0;

    msg->n_updates = 0;
    if (t > 0 && s->m[t].state == SWIM_SUSPECT) {
        /* Every message to a suspect says so, however often the update
         * was gossiped: it may have been cut off while it was. */
        struct swim_update *u = &msg->updates[msg->n_updates++];

        memset(u, 0, sizeof(*u));
        memcpy(u->name, s->m[t].name, SWIM_NAME_MAX);
        memcpy(u->from, s->m[0].name, SWIM_NAME_MAX);
        u->incarnation = s->m[t].incarnation;
        u->state = SWIM_SUSPECT;
        chosen[0] = (unsigned)t;
        notice = 1;
    } else if (t > 0 && s->m[t].bcast_pending &&
               s->m[t].bcast.state != SWIM_ALIVE) {
        chosen[msg->n_updates] = (unsigned)t;
        msg->updates[msg->n_updates++] = s->m[t].bcast;
    }
    if (s->tell_alive && !s->left) {
        /* The addressee told us we are suspect or dead: answer with our
         * alive, whatever the queue says (see about_self()). */
        struct swim_update *u = &msg->updates[msg->n_updates];

        memset(u, 0, sizeof(*u));
        memcpy(u->name, s->m[0].name, SWIM_NAME_MAX);
        memcpy(u->from, s->m[0].name, SWIM_NAME_MAX);
        u->incarnation = s->m[0].incarnation;
        u->state = SWIM_ALIVE;
        chosen[msg->n_updates++] = 0;
    }
    while (msg->n_updates < SWIM_PIGGYBACK_MAX) {
        int best = -1;

        for (unsigned i = 0; i < s->n; i++) {
            struct swim_member *m = &s->m[i];
            int taken = 0;

            for (unsigned c = 0; c < msg->n_updates; c++) {
                taken |= chosen[c] == i;
            }
            if (!m->bcast_pending || taken) {
                continue;
            }
            if (best < 0 || m->bcast_transmits < s->m[best].bcast_transmits ||
                (m->bcast_transmits == s->m[best].bcast_transmits &&
                 m->bcast_id > s->m[best].bcast_id)) {
                best = (int)i;
            }
        }
        if (best < 0) {
            break;
        }
        chosen[msg->n_updates] = (unsigned)best;
        msg->updates[msg->n_updates++] = s->m[best].bcast;
    }
    for (unsigned c = notice ? 1 : 0; c < msg->n_updates; c++) {
        struct swim_member *m = &s->m[chosen[c]];

        if (++m->bcast_transmits >= limit) {
            m->bcast_pending = 0;
        }
    }
}

static void send_to_name(struct swim *s, const char *to,
                         enum swim_msg_type type, uint32_t seq,
                         const char *target);

static void
send_msg(struct swim *s, unsigned to, enum swim_msg_type type, uint32_t seq,
         const char *target)
{
    send_to_name(s, s->m[to].name, type, seq, target);
}

static uint64_t
suspicion_timeout(const struct swim_member *m)
{
    double frac, raw;

    if (m->susp_k < 1) {
        return m->susp_min;
    }
    /* Lifeguard / memberlist suspicion.go remainingSuspicionTime. */
    frac = log((double)m->susp_n + 1.0) / log((double)m->susp_k + 1.0);
    raw = (double)m->susp_max - frac * (double)(m->susp_max - m->susp_min);
    if (raw < (double)m->susp_min) {
        return m->susp_min;
    }
    return (uint64_t)floor(raw);
}

static void
suspicion_start(struct swim *s, unsigned i, const char *from, uint64_t now)
{
    struct swim_member *m = &s->m[i];
    unsigned n = live_count(s);
    double scale = log10(n > 1 ? (double)n : 1.0);
    unsigned k;

    /* memberlist state.go suspectNode and util.go suspicionTimeout. */
    if (scale < 1.0) {
        scale = 1.0;
    }
    m->susp_min = (uint32_t)(s->prof.suspicion_mult * scale *
                             (double)s->prof.probe_interval_ms);
    m->susp_max = SWIM_SUSPICION_MAX_MULT * m->susp_min;
    k = s->prof.suspicion_mult >= 2 ? s->prof.suspicion_mult - 2 : 0;
    if (k > SWIM_INDIRECT_MAX) {
        k = SWIM_INDIRECT_MAX;
    }
    if (n < k + 2) {
        k = 0;
    }
    m->susp_k = k;
    m->susp_n = 0;
    m->susp_start = now;
    memcpy(m->susp_from[0], from, strlen(from) + 1);
    m->susp_nfrom = 1;
    m->susp_deadline = now + suspicion_timeout(m);
}

/* A suspect about an already suspect member from someone new: returns 1 if
 * it counted (memberlist suspicion.go Confirm). */
static int
suspicion_confirm(struct swim_member *m, const char *from)
{
    if (m->susp_n >= m->susp_k) {
        return 0;
    }
    for (unsigned j = 0; j < m->susp_nfrom; j++) {
        if (strcmp(m->susp_from[j], from) == 0) {
            return 0;
        }
    }
    memcpy(m->susp_from[m->susp_nfrom++], from, strlen(from) + 1);
    m->susp_n++;
    m->susp_deadline = m->susp_start + suspicion_timeout(m);
    return 1;
}

static void
refute(struct swim *s, uint32_t heard)
{
    struct swim_member *self = &s->m[0];

    /* memberlist state.go refute: beyond whatever was said about us. */
    self->incarnation =
        (heard >= self->incarnation ? heard : self->incarnation) + 1;
    enqueue(s, 0, SWIM_ALIVE, self->name);
    awareness_apply(s, 1);
    s->stats.refutations++;
    notify(s, 0, SWIM_ALIVE);
}

/* Suspect or dead about ourselves. A stale one means the sender missed our
 * refutation (it was gossiped a bounded number of times, maybe all lost):
 * queue our alive again, without a new incarnation, so the reply to that
 * sender carries it. memberlist ignores it and counts on push/pull. */
static void
about_self(struct swim *s, const struct swim_update *u)
{
    if (s->left) {
        return;
    }
    if (u->incarnation >= s->m[0].incarnation) {
        refute(s, u->incarnation);
    } else if (!s->m[0].bcast_pending) {
        enqueue(s, 0, SWIM_ALIVE, s->m[0].name);
    }
}

static int
member_add(struct swim *s, const char *name, uint32_t inc)
{
    unsigned i;
    unsigned pos;

    if (s->n >= SWIM_MEMBERS_MAX) {
        s->stats.updates_dropped++;
        return RM_E_FULL;
    }
    i = s->n++;
    memset(&s->m[i], 0, sizeof(s->m[i]));
    memcpy(s->m[i].name, name, strlen(name) + 1);
    s->m[i].incarnation = inc;
    s->m[i].state = SWIM_ALIVE;
    /* Insert at a random place in the probe order (memberlist aliveNode). */
    s->order[s->norder] = (uint16_t)i;
    pos = rnd(s, s->norder + 1);
    s->order[s->norder] = s->order[pos];
    s->order[pos] = (uint16_t)i;
    s->norder++;
    return (int)i;
}

static void
on_alive(struct swim *s, const struct swim_update *u)
{
    int i = find(s, u->name);

    if (i == 0) {
        /* Someone has a newer incarnation of us (say, from before a
         * restart): go past it. */
        if (!s->left && u->incarnation > s->m[0].incarnation) {
            refute(s, u->incarnation);
        }
        return;
    }
    if (i < 0) {
        i = member_add(s, u->name, u->incarnation);
        if (i < 0) {
            return;
        }
        enqueue(s, (unsigned)i, SWIM_ALIVE, u->from);
        notify(s, (unsigned)i, SWIM_ALIVE);
        return;
    }
    /* Equal incarnation never revives: suspect and dead win ties. */
    if (u->incarnation <= s->m[i].incarnation) {
        return;
    }
    s->m[i].incarnation = u->incarnation;
    enqueue(s, (unsigned)i, SWIM_ALIVE, u->from);
    if (s->m[i].state != SWIM_ALIVE) {
        set_state(s, (unsigned)i, SWIM_ALIVE);
    }
}

static void
on_suspect(struct swim *s, const struct swim_update *u, uint64_t now)
{
    int i = find(s, u->name);
    struct swim_member *m;

    if (i < 0) {
        return;
    }
    m = &s->m[i];
    if (i == 0) {
        about_self(s, u);
        return;
    }
    if (u->incarnation < m->incarnation) {
        return; /* stale */
    }
    switch (m->state) {
    case SWIM_SUSPECT:
        if (suspicion_confirm(m, u->from)) {
            /* Re-gossip so the others learn of the confirmation too. */
            enqueue(s, (unsigned)i, SWIM_SUSPECT, u->from);
        }
        return;
    case SWIM_DEAD:
    case SWIM_LEFT:
        return;
    case SWIM_ALIVE:
        break;
    }
    m->incarnation = u->incarnation;
    suspicion_start(s, (unsigned)i, u->from, now);
    enqueue(s, (unsigned)i, SWIM_SUSPECT, u->from);
    set_state(s, (unsigned)i, SWIM_SUSPECT);
    /* Tell the suspect at once, on a ping of its own (not a probe: its ack
     * matches nothing, but carries the refutation back). */
    send_msg(s, (unsigned)i, SWIM_MSG_PING, s->next_seq++, m->name);
}

static void
on_dead(struct swim *s, const struct swim_update *u)
{
    int i = find(s, u->name);
    struct swim_member *m;

    if (i < 0) {
        return;
    }
    m = &s->m[i];
    if (i == 0) {
        about_self(s, u);
        return;
    }
    if (u->incarnation < m->incarnation) {
        return;
    }
    if (m->state == SWIM_DEAD || m->state == SWIM_LEFT) {
        return;
    }
    m->incarnation = u->incarnation;
    /* A member declaring itself dead has left (memberlist deadNode). */
    if (strcmp(u->from, u->name) == 0) {
        enqueue(s, (unsigned)i, SWIM_LEFT, u->from);
        set_state(s, (unsigned)i, SWIM_LEFT);
    } else {
        enqueue(s, (unsigned)i, SWIM_DEAD, u->from);
        set_state(s, (unsigned)i, SWIM_DEAD);
    }
}

static void
apply_update(struct swim *s, const struct swim_update *u, uint64_t now)
{
    switch (u->state) {
    case SWIM_ALIVE:
        on_alive(s, u);
        break;
    case SWIM_SUSPECT:
        on_suspect(s, u, now);
        break;
    case SWIM_DEAD:
    case SWIM_LEFT:
        on_dead(s, u);
        break;
    }
}

int
swim_new(const char *self, const struct swim_profile *profile,
         const struct swim_callbacks *cb, uint64_t now, struct swim **out)
{
    struct swim *s;

    if (out == NULL || !name_ok(self) || profile == NULL || cb == NULL ||
        cb->send == NULL || cb->random == NULL ||
        profile->probe_interval_ms == 0 || profile->probe_timeout_ms == 0 ||
        profile->probe_timeout_ms > profile->probe_interval_ms ||
        profile->indirect_checks > SWIM_INDIRECT_MAX ||
        profile->suspicion_mult == 0 || profile->retransmit_mult == 0 ||
        profile->gossip_nodes > SWIM_MEMBERS_MAX) {
        return RM_E_INVAL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    s->m = calloc(SWIM_MEMBERS_MAX, sizeof(*s->m));
    if (s->m == NULL) {
        free(s);
        return -ENOMEM;
    }
    s->prof = *profile;
    s->cb = *cb;
    s->n = 1;
    memcpy(s->m[0].name, self, strlen(self) + 1);
    s->m[0].state = SWIM_ALIVE;
    enqueue(s, 0, SWIM_ALIVE, self); /* announce ourselves */
    s->next_seq = 1;
    s->next_probe = now + s->prof.probe_interval_ms;
    s->next_gossip = s->prof.gossip_interval_ms > 0
                         ? now + s->prof.gossip_interval_ms
                         : UINT64_MAX;
    *out = s;
    return RM_OK;
}

void
swim_free(struct swim *s)
{
    if (s == NULL) {
        return;
    }
    free(s->m);
    free(s);
}

int
swim_add_member(struct swim *s, const char *name, uint32_t incarnation,
                uint64_t now)
{
    struct swim_update u;

    if (s == NULL || !name_ok(name)) {
        return RM_E_INVAL;
    }
    if (find(s, name) < 0 && s->n >= SWIM_MEMBERS_MAX) {
        s->stats.updates_dropped++;
        return RM_E_FULL;
    }
    memset(&u, 0, sizeof(u));
    memcpy(u.name, name, strlen(name) + 1);
    memcpy(u.from, s->m[0].name, SWIM_NAME_MAX);
    u.incarnation = incarnation;
    u.state = SWIM_ALIVE;
    on_alive(s, &u);
    (void)now;
    return RM_OK;
}

static void
probe_start(struct swim *s, uint64_t now)
{
    for (unsigned tries = 0; tries < s->norder; tries++) {
        unsigned i;

        if (s->probe_index >= s->norder) {
            /* A new pass: reshuffle (memberlist resetNodes). */
            for (unsigned j = s->norder; j > 1; j--) {
                unsigned r = rnd(s, j);
                uint16_t t = s->order[j - 1];

                s->order[j - 1] = s->order[r];
                s->order[r] = t;
            }
            s->probe_index = 0;
        }
        i = s->order[s->probe_index++];
        if (s->m[i].state != SWIM_ALIVE && s->m[i].state != SWIM_SUSPECT) {
            continue;
        }
        memset(&s->probe, 0, sizeof(s->probe));
        s->probe.active = 1;
        s->probe.target = i;
        s->probe.seq = s->next_seq++;
        s->probe.direct_deadline = now + scaled(s, s->prof.probe_timeout_ms);
        s->probe.end = now + scaled(s, s->prof.probe_interval_ms);
        send_msg(s, i, SWIM_MSG_PING, s->probe.seq, s->m[i].name);
        return;
    }
}

static void
probe_indirect(struct swim *s)
{
    unsigned ne = 0;
    unsigned k = s->prof.indirect_checks;
    const char *target = s->m[s->probe.target].name;

    s->probe.indirect = 1;
    for (unsigned i = 1; i < s->n; i++) {
        if (i != s->probe.target && s->m[i].state == SWIM_ALIVE) {
            s->scratch[ne++] = (uint16_t)i;
        }
    }
    for (unsigned j = 0; j < k && j < ne; j++) {
        unsigned r = j + rnd(s, ne - j);
        uint16_t t = s->scratch[j];

        s->scratch[j] = s->scratch[r];
        s->scratch[r] = t;
        send_msg(s, s->scratch[j], SWIM_MSG_PING_REQ, s->probe.seq, target);
        s->probe.expected_nacks++;
    }
}

static void
probe_fail(struct swim *s, uint64_t now)
{
    struct swim_member *m = &s->m[s->probe.target];
    int delta;
    struct swim_update u;

    /* memberlist state.go probeNode: missed nacks say our own link is the
     * problem; with no one to ask, count the failure itself. */
    if (s->probe.expected_nacks > 0) {
        delta = (int)(s->probe.expected_nacks - s->probe.nacks);
    } else {
        delta = 1;
    }
    awareness_apply(s, delta);
    s->probe.active = 0;
    if (m->state != SWIM_ALIVE && m->state != SWIM_SUSPECT) {
        return;
    }
    memset(&u, 0, sizeof(u));
    memcpy(u.name, m->name, SWIM_NAME_MAX);
    memcpy(u.from, s->m[0].name, SWIM_NAME_MAX);
    u.incarnation = m->incarnation;
    u.state = SWIM_SUSPECT;
    on_suspect(s, &u, now);
}

/* memberlist state.go gossip(): only when there is something to say. */
static void
gossip(struct swim *s)
{
    unsigned ne = 0;
    int pending = 0;

    for (unsigned i = 0; i < s->n; i++) {
        pending |= s->m[i].bcast_pending;
    }
    if (!pending) {
        return;
    }
    for (unsigned i = 1; i < s->n; i++) {
        if (s->m[i].state == SWIM_ALIVE || s->m[i].state == SWIM_SUSPECT) {
            s->scratch[ne++] = (uint16_t)i;
        }
    }
    for (unsigned j = 0; j < s->prof.gossip_nodes && j < ne; j++) {
        unsigned r = j + rnd(s, ne - j);
        uint16_t t = s->scratch[j];

        s->scratch[j] = s->scratch[r];
        s->scratch[r] = t;
        send_msg(s, s->scratch[j], SWIM_MSG_GOSSIP, 0, NULL);
    }
}

int
swim_tick(struct swim *s, uint64_t now)
{
    if (s == NULL) {
        return RM_E_INVAL;
    }
    for (unsigned r = 0; r < SWIM_RELAY_MAX; r++) {
        struct swim_relay *rl = &s->relay[r];

        if (rl->used && now >= rl->deadline) {
            rl->used = 0;
            send_to_name(s, rl->requester, SWIM_MSG_NACK, rl->req_seq, NULL);
        }
    }
    if (s->probe.active && !s->probe.indirect &&
        now >= s->probe.direct_deadline) {
        probe_indirect(s);
    }
    if (s->probe.active && now >= s->probe.end) {
        probe_fail(s, now);
    }
    for (unsigned i = 1; i < s->n; i++) {
        struct swim_member *m = &s->m[i];

        if (m->state == SWIM_SUSPECT && now >= m->susp_deadline) {
            enqueue(s, i, SWIM_DEAD, s->m[0].name);
            set_state(s, i, SWIM_DEAD);
        }
    }
    if (now >= s->next_gossip) {
        s->next_gossip = now + s->prof.gossip_interval_ms;
        gossip(s);
    }
    if (!s->left && now >= s->next_probe) {
        s->next_probe = now + scaled(s, s->prof.probe_interval_ms);
        probe_start(s, now);
    }
    return RM_OK;
}

uint64_t
swim_next_deadline(const struct swim *s)
{
    uint64_t d = s->left ? UINT64_MAX : s->next_probe;

    if (s->next_gossip < d) {
        d = s->next_gossip;
    }

    for (unsigned r = 0; r < SWIM_RELAY_MAX; r++) {
        if (s->relay[r].used && s->relay[r].deadline < d) {
            d = s->relay[r].deadline;
        }
    }
    if (s->probe.active) {
        uint64_t p =
            s->probe.indirect ? s->probe.end : s->probe.direct_deadline;
        if (p < d) {
            d = p;
        }
    }
    for (unsigned i = 1; i < s->n; i++) {
        if (s->m[i].state == SWIM_SUSPECT && s->m[i].susp_deadline < d) {
            d = s->m[i].susp_deadline;
        }
    }
    return d;
}

/* Send by name: the addressee may be a member not learnt yet (a ping from
 * a joiner is answered before its alive update is gossiped back). */
static void
send_to_name(struct swim *s, const char *to, enum swim_msg_type type,
             uint32_t seq, const char *target)
{
    struct swim_msg msg;

    memset(&msg, 0, sizeof(msg));
    msg.type = type;
    msg.seq = seq;
    memcpy(msg.from, s->m[0].name, SWIM_NAME_MAX);
    if (target != NULL) {
        memcpy(msg.target, target, strlen(target) + 1);
    }
    piggyback(s, &msg, to);
    s->cb.send(s->cb.ctx, to, &msg);
}

static int
msg_valid(const struct swim_msg *msg)
{
    if (!name_ok(msg->from) ||
        memchr(msg->target, '\0', SWIM_NAME_MAX) == NULL ||
        msg->n_updates > SWIM_PIGGYBACK_MAX) {
        return 0;
    }
    switch (msg->type) {
    case SWIM_MSG_PING:
    case SWIM_MSG_PING_REQ:
        if (msg->target[0] == '\0') {
            return 0;
        }
        break;
    case SWIM_MSG_ACK:
    case SWIM_MSG_NACK:
    case SWIM_MSG_GOSSIP:
        break;
    default:
        return 0;
    }
    for (unsigned u = 0; u < msg->n_updates; u++) {
        const struct swim_update *up = &msg->updates[u];

        if (!name_ok(up->name) || !name_ok(up->from) ||
            (unsigned)up->state > SWIM_LEFT) {
            return 0;
        }
    }
    return 1;
}

int
swim_receive(struct swim *s, const struct swim_msg *msg, uint64_t now)
{
    int told = 0;

    if (s == NULL || msg == NULL) {
        return RM_E_INVAL;
    }
    if (!msg_valid(msg)) {
        s->stats.rx_invalid++;
        return RM_E_PROTO;
    }
    for (unsigned u = 0; u < msg->n_updates; u++) {
        apply_update(s, &msg->updates[u], now);
        if (strcmp(msg->updates[u].name, s->m[0].name) == 0 &&
            msg->updates[u].state != SWIM_ALIVE) {
            told = 1;
        }
    }
    switch (msg->type) {
    case SWIM_MSG_PING:
        /* memberlist handlePing: a ping meant for another name (an old
         * address reused) is not answered. */
        if (strcmp(msg->target, s->m[0].name) == 0) {
            s->tell_alive = told;
            send_to_name(s, msg->from, SWIM_MSG_ACK, msg->seq, NULL);
            s->tell_alive = 0;
        }
        break;
    case SWIM_MSG_PING_REQ: {
        int t = find(s, msg->target);
        struct swim_relay *rl = NULL;

        if (t <= 0) {
            break; /* unknown target, or ourselves */
        }
        for (unsigned r = 0; r < SWIM_RELAY_MAX; r++) {
            if (!s->relay[r].used) {
                rl = &s->relay[r];
                break;
            }
        }
        if (rl == NULL) {
            s->stats.relays_dropped++;
            break;
        }
        rl->used = 1;
        rl->seq = s->next_seq++;
        rl->req_seq = msg->seq;
        /* Answer within the time the requester has left for indirect
         * probes (interval - timeout), with a margin, so that its nack
         * arrives before the requester gives up: a nack that comes late
         * counts as missing and would raise the requester's health score
         * for nothing, slowing its probing just when a member died. */
        rl->deadline =
            now +
            scaled(s, (s->prof.probe_interval_ms - s->prof.probe_timeout_ms) *
                          4 / 5);
        memcpy(rl->requester, msg->from, SWIM_NAME_MAX);
        send_msg(s, (unsigned)t, SWIM_MSG_PING, rl->seq, msg->target);
        break;
    }
    case SWIM_MSG_ACK:
        if (s->probe.active && msg->seq == s->probe.seq) {
            s->probe.active = 0;
            awareness_apply(s, -1);
            break;
        }
        for (unsigned r = 0; r < SWIM_RELAY_MAX; r++) {
            struct swim_relay *rl = &s->relay[r];

            if (rl->used && rl->seq == msg->seq) {
                rl->used = 0;
                send_to_name(s, rl->requester, SWIM_MSG_ACK, rl->req_seq, NULL);
                break;
            }
        }
        break;
    case SWIM_MSG_GOSSIP:
        break;
    case SWIM_MSG_NACK:
        if (s->probe.active && msg->seq == s->probe.seq &&
            s->probe.nacks < s->probe.expected_nacks) {
            s->probe.nacks++;
        }
        break;
    }
    return RM_OK;
}

int
swim_leave(struct swim *s, uint64_t now)
{
    if (s == NULL) {
        return RM_E_INVAL;
    }
    if (s->left) {
        return RM_OK;
    }
    s->left = 1;
    s->probe.active = 0;
    enqueue(s, 0, SWIM_DEAD, s->m[0].name);
    set_state(s, 0, SWIM_LEFT);
    (void)now;
    return RM_OK;
}

int
swim_member_get(const struct swim *s, const char *name, enum swim_state *state,
                uint32_t *incarnation)
{
    int i;

    if (s == NULL || !name_ok(name)) {
        return RM_E_INVAL;
    }
    i = find(s, name);
    if (i < 0) {
        return RM_E_NOTFOUND;
    }
    if (state != NULL) {
        *state = s->m[i].state;
    }
    if (incarnation != NULL) {
        *incarnation = s->m[i].incarnation;
    }
    return RM_OK;
}

int
swim_member_at(const struct swim *s, unsigned i, const char **name,
               enum swim_state *state, uint32_t *incarnation)
{
    if (s == NULL || i >= s->n) {
        return RM_E_NOTFOUND;
    }
    if (name != NULL) {
        *name = s->m[i].name;
    }
    if (state != NULL) {
        *state = s->m[i].state;
    }
    if (incarnation != NULL) {
        *incarnation = s->m[i].incarnation;
    }
    return RM_OK;
}

unsigned
swim_member_count(const struct swim *s)
{
    return s->n;
}

unsigned
swim_awareness(const struct swim *s)
{
    return s->awareness;
}

const struct swim_stats *
swim_stats_get(const struct swim *s)
{
    return &s->stats;
}
