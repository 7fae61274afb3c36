/*
 * swim: SWIM membership and failure detection with the Lifeguard
 * refinements, as a pure, deterministic state machine.
 *
 * References: Das, Gupta, Motivala, "SWIM" (DSN 2002); Dadgar, Phillips,
 * Currey, "Lifeguard: Local Health Awareness for More Accurate Failure
 * Detection" (2018); HashiCorp memberlist (state.go, suspicion.go,
 * awareness.go, queue.go), whose defaults and rules are the reference.
 *
 * No sockets, no loop, no clock, no globals. The caller:
 *   - passes the current time (milliseconds, any monotonic origin) to
 *     every call;
 *   - calls swim_tick() at or after swim_next_deadline();
 *   - delivers every received message with swim_receive();
 *   - receives actions through struct swim_callbacks: "send this message
 *     to that member", "this member changed state";
 *   - provides randomness (so tests are deterministic).
 * Messages are a C struct (struct swim_msg); encoding comes later.
 *
 * Rules (memberlist's):
 *   - alive(i) about X replaces X's state if i > X.incarnation, or if X is
 *     unknown. At equal incarnation an alive is ignored, whatever X's state:
 *     so suspect overrides alive at equal incarnation, and a dead member
 *     comes back only with an alive of a higher incarnation.
 *   - suspect(i) about an alive X with i >= X.incarnation makes X suspect;
 *     about a suspect X (i >= incarnation) it is a confirmation from a new
 *     member, which shrinks the suspicion timeout (Lifeguard):
 *       min = suspicion_mult * max(1, log10(max(1, n))) * probe_interval
 *       max = SWIM_SUSPICION_MAX_MULT * min
 *       timeout(c) = max(min, max - (max - min) * ln(c + 1) / ln(k + 1))
 *     with k = suspicion_mult - 2 expected confirmations (0 when fewer than
 *     k + 2 members are known; then timeout = min) and n the number of
 *     alive or suspect members including this one. The outer max(1, ...)
 *     is memberlist's: without it a small mesh would have no suspicion.
 *     Ignored about a dead or left member.
 *   - dead(i) about an alive or suspect X with i >= X.incarnation makes X
 *     dead (or left, if X said it about itself: swim_leave()).
 *   - About itself a member never accepts suspect or dead (unless it left):
 *     it refutes, taking incarnation max(own, i) + 1 and gossiping alive.
 *     Refuting raises the local health score (Lifeguard).
 *
 * Probing: every probe_interval * (score + 1) ms the next member of a
 * shuffled list (reshuffled at each pass, memberlist's round robin) that is
 * alive or suspect gets a ping; no ack within probe_timeout * (score + 1)
 * sends ping-req to indirect_checks random alive members, which ping the
 * target and answer ack, or nack after 4/5 of (probe_interval -
 * probe_timeout), the time the requester has left, so that a nack arrives
 * before the requester gives up (memberlist waits probe_timeout, and its
 * nacks race the requester's deadline: a late one counts as missing). No
 * ack by the end of the probe interval: the target becomes suspect.
 * Local health (Lifeguard): score 0 .. SWIM_AWARENESS_MAX - 1, so probe
 * interval and timeout are scaled by 1 .. SWIM_AWARENESS_MAX. A successful
 * probe lowers it by 1; a failed probe raises it by the number of missing
 * nacks (or by 1 when no ping-req could be sent); a refutation raises it
 * by 1.
 *
 * Dissemination: every gossip_interval ms, when updates are queued, a
 * gossip message goes to gossip_nodes random alive or suspect members
 * (memberlist's GossipInterval / GossipNodes); and each outgoing message
 * carries up to SWIM_PIGGYBACK_MAX
 * updates, least transmitted first (newest first among equals). There is
 * at most one queued update per member (a newer one replaces it), so the
 * queue is bounded by SWIM_MEMBERS_MAX. An update is dropped after
 *   retransmit_mult * ceil(log10(n + 1))
 * transmissions, n the number of known members including this one.
 * Lifeguard's "tell the suspect": every message to a member held suspect
 * carries that suspicion, and a ping carrying a suspicion or death of its
 * addressee is answered with the addressee's alive, even a stale one (the
 * sender missed the refutation).
 *
 * Memory: struct swim is heap-allocated by swim_new() (bounded:
 * SWIM_MEMBERS_MAX members) and freed by swim_free(); nothing else
 * allocates. Threading: none; a handle is used from one thread.
 * Callbacks run synchronously inside swim_new/tick/receive/add/leave; they
 * must not call back into the same handle.
 *
 * Errors: 0 or a negative code from common/rm_error.h.
 *   RM_E_INVAL   misuse (NULL, a bad name or profile).
 *   RM_E_PROTO   a received message is malformed (name not terminated,
 *                too many updates, bad type or state); it is ignored and
 *                counted.
 *   RM_E_FULL    swim_add_member(): SWIM_MEMBERS_MAX members known.
 *   -ENOMEM      swim_new().
 */
#ifndef RM_MESH_SWIM_H
#define RM_MESH_SWIM_H

#include <stdint.h>

#define SWIM_NAME_MAX 64 /* bytes of a member name, NUL included */
#define SWIM_MEMBERS_MAX 1024
#define SWIM_PIGGYBACK_MAX 8      /* updates carried by one message */
#define SWIM_INDIRECT_MAX 8       /* bound on indirect_checks */
#define SWIM_RELAY_MAX 64         /* ping-req probes run for others at once */
#define SWIM_AWARENESS_MAX 8      /* memberlist's awarenessMaxMultiplier */
#define SWIM_SUSPICION_MAX_MULT 6 /* memberlist's suspicionMaxTimeoutMult */

enum swim_state {
    SWIM_ALIVE,
    SWIM_SUSPECT,
    SWIM_DEAD,
    SWIM_LEFT,
};

enum swim_msg_type {
    SWIM_MSG_PING,     /* seq, target: answer ack(seq) */
    SWIM_MSG_ACK,      /* seq of the ping or ping-req answered */
    SWIM_MSG_PING_REQ, /* seq, target: ping target for me, ack or nack */
    SWIM_MSG_NACK,     /* seq of the ping-req: target did not answer */
    SWIM_MSG_GOSSIP,   /* updates only, no answer (memberlist gossip()) */
};

/* One piggybacked membership update. from: who says so (suspect, dead);
 * for alive it is the sender of the update. */
struct swim_update {
    char name[SWIM_NAME_MAX];
    char from[SWIM_NAME_MAX];
    uint32_t incarnation;
    enum swim_state state;
};

struct swim_msg {
    enum swim_msg_type type;
    uint32_t seq;
    char from[SWIM_NAME_MAX];   /* sender */
    char target[SWIM_NAME_MAX]; /* ping, ping-req: the member probed */
    unsigned n_updates;         /* <= SWIM_PIGGYBACK_MAX */
    struct swim_update updates[SWIM_PIGGYBACK_MAX];
};

struct swim_profile {
    uint32_t probe_interval_ms;
    uint32_t probe_timeout_ms;
    uint32_t indirect_checks;    /* 0 .. SWIM_INDIRECT_MAX */
    uint32_t suspicion_mult;     /* >= 1 */
    uint32_t retransmit_mult;    /* >= 1 */
    uint32_t gossip_interval_ms; /* 0: piggyback on probes only */
    uint32_t gossip_nodes;       /* members gossiped to per interval */
};

/* memberlist's DefaultLANConfig / DefaultWANConfig: probe 1 s / 500 ms,
 * 3 indirect checks, suspicion mult 4, retransmit mult 4, gossip every
 * 200 ms to 3 (LAN); 5 s / 3 s, 3, 6, 4, 500 ms to 4 (WAN). Constants. */
extern const struct swim_profile swim_profile_lan;
extern const struct swim_profile swim_profile_wan;

struct swim_callbacks {
    /* Send msg to member `to`. msg and to are borrowed for the call. */
    void (*send)(void *ctx, const char *to, const struct swim_msg *msg);
    /* Member `name` went from old to new state (or was first learnt of:
     * old == new == SWIM_ALIVE). Also called for this member itself on
     * refutation (state stays alive, incarnation grows). Optional. */
    void (*state_change)(void *ctx, const char *name, enum swim_state old,
                         enum swim_state new_state, uint32_t incarnation);
    /* A uniformly random 32-bit value. Required. */
    uint32_t (*random)(void *ctx);
    void *ctx;
};

struct swim_stats {
    uint64_t rx_invalid;      /* malformed messages ignored */
    uint64_t updates_dropped; /* new members refused: table full */
    uint64_t relays_dropped;  /* ping-req refused: SWIM_RELAY_MAX busy */
    uint64_t refutations;
};

struct swim;

/* Create the state machine for member `self` (incarnation 0, alive), with
 * a copy of *profile and *cb. The first probe is due one interval after
 * now. On success *out is the caller's, to free with swim_free(). */
int swim_new(const char *self, const struct swim_profile *profile,
             const struct swim_callbacks *cb, uint64_t now, struct swim **out);
void swim_free(struct swim *s);

/* Learn of a member (a seed, or one admitted by invite) as alive with the
 * given incarnation, under the alive rule above. */
int swim_add_member(struct swim *s, const char *name, uint32_t incarnation,
                    uint64_t now);

/* Run every timer due at now: probe phases, ping-req relays, suspicion
 * timeouts, the next probe. */
int swim_tick(struct swim *s, uint64_t now);

/* The earliest time swim_tick() has work to do. */
uint64_t swim_next_deadline(const struct swim *s);

/* A received message (borrowed for the call). The piggybacked updates are
 * applied first. */
int swim_receive(struct swim *s, const struct swim_msg *msg, uint64_t now);

/* Leave gracefully: gossip "left" about this member and stop probing. */
int swim_leave(struct swim *s, uint64_t now);

/* State and incarnation of a member; RM_E_NOTFOUND if unknown. */
int swim_member_get(const struct swim *s, const char *name,
                    enum swim_state *state, uint32_t *incarnation);

/* Member i (0 = this member; i < swim_member_count()): name borrowed
 * until the next call on s. RM_E_NOTFOUND past the end. */
int swim_member_at(const struct swim *s, unsigned i, const char **name,
                   enum swim_state *state, uint32_t *incarnation);
unsigned swim_member_count(const struct swim *s); /* self included */
unsigned swim_awareness(const struct swim *s);    /* health score */
unsigned swim_retransmit_limit(const struct swim *s);
const struct swim_stats *swim_stats_get(const struct swim *s); /* borrowed */

const char *swim_state_name(enum swim_state st);

#endif
