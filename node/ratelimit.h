/*
 * ratelimit: counters per client IP and per login, in fixed time windows,
 * for the connection rate, concurrent sessions, failed logins and
 * messages per user (like Postfix's anvil, in process).
 *
 * Keys are short strings ("c:192.0.2.1", "u:alice@example.org"); each
 * has one windowed counter and, for connections, a count of sessions
 * open. Entries are dropped once idle and out of their window; the table
 * is bounded (RL_ENTRIES_MAX): past it, new keys are not tracked (fail
 * open, logged once) rather than letting a flood of addresses grow memory
 * without end. Loop thread only. Time is passed in (ms), so tests drive
 * it with a fake clock.
 */
#ifndef RM_NODE_RATELIMIT_H
#define RM_NODE_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define RL_ENTRIES_MAX 200000
#define RL_KEY_MAX 330

struct ratelimit;

int ratelimit_new(struct ratelimit **out);
void ratelimit_free(struct ratelimit *rl);
size_t ratelimit_size(const struct ratelimit *rl);

/* The count of key in the window that holds now (0 if none). */
unsigned rl_count(struct ratelimit *rl, const char *key, uint64_t now_ms,
                  unsigned window_s);
/* Count one event for key; returns the count including it. */
unsigned rl_add(struct ratelimit *rl, const char *key, uint64_t now_ms,
                unsigned window_s);
/* Count one event if the window holds fewer than max (0 = no limit):
   1 if allowed (and counted), 0 if over. */
int rl_take(struct ratelimit *rl, const char *key, uint64_t now_ms,
            unsigned window_s, unsigned max);

/* Sessions open for key: +1 if fewer than max (0 = no limit), returns 1;
   else 0 and nothing changes. rl_release() gives one back. */
int rl_hold(struct ratelimit *rl, const char *key, uint64_t now_ms,
            unsigned max);
void rl_release(struct ratelimit *rl, const char *key);

#endif
