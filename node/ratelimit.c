/*
 * ratelimit: see ratelimit.h. A chained hash table of small entries.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "node/ratelimit.h"

struct rl_entry {
    struct rl_entry *next;
    uint64_t win_start; /* ms */
    uint32_t window_s;  /* of the last use; for pruning */
    uint32_t count;     /* events in [win_start, win_start + window) */
    uint32_t held;      /* sessions open */
    char key[];
};

struct ratelimit {
    struct rl_entry **b;
    size_t nb; /* buckets, a power of two */
    size_t n;  /* entries */
    size_t adds_since_prune;
    uint64_t pruned_at; /* ms */
    int warned;
};

/* Keys are cut at RL_KEY_MAX octets: hash and compare only those. */
static uint64_t
rl_hash(const char *k)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (size_t i = 0; i < RL_KEY_MAX && k[i]; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int
ratelimit_new(struct ratelimit **out)
{
    struct ratelimit *rl = calloc(1, sizeof(*rl));

    if (rl == NULL)
        return -ENOMEM;
    rl->nb = 1024;
    rl->b = calloc(rl->nb, sizeof(*rl->b));
    if (rl->b == NULL) {
        free(rl);
        return -ENOMEM;
    }
    *out = rl;
    return 0;
}

void
ratelimit_free(struct ratelimit *rl)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < rl->nb; i++) {
        struct rl_entry *e = rl->b[i], *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(rl->b);
    free(rl);
}

size_t
ratelimit_size(const struct ratelimit *rl)
{
    return rl->n;
}

static int
rl_idle(const struct rl_entry *e, uint64_t now)
{
    return e->held == 0 && (e->count == 0 ||
                            now - e->win_start >= (uint64_t)e->window_s * 1000);
}

/* Drop entries that hold nothing: amortised over inserts. */
static void
rl_prune(struct ratelimit *rl, uint64_t now)
{
    for (size_t i = 0; i < rl->nb; i++) {
        struct rl_entry **pp = &rl->b[i];
        while (*pp) {
            struct rl_entry *e = *pp;
            if (rl_idle(e, now)) {
                *pp = e->next;
                free(e);
                rl->n--;
            } else {
                pp = &e->next;
            }
        }
    }
    rl->adds_since_prune = 0;
    rl->pruned_at = now;
}

static void
rl_grow(struct ratelimit *rl)
{
    size_t nb = rl->nb * 2;
    struct rl_entry **b = calloc(nb, sizeof(*b));

    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < rl->nb; i++) {
        struct rl_entry *e = rl->b[i], *next;
        for (; e; e = next) {
            size_t k = rl_hash(e->key) & (nb - 1);
            next = e->next;
            e->next = b[k];
            b[k] = e;
        }
    }
    free(rl->b);
    rl->b = b;
    rl->nb = nb;
}

static struct rl_entry *
rl_find(struct ratelimit *rl, const char *key, uint64_t now, int create)
{
    size_t k = rl_hash(key) & (rl->nb - 1);
    size_t len;
    struct rl_entry *e;

    for (e = rl->b[k]; e; e = e->next) {
        if (strncmp(e->key, key, RL_KEY_MAX) == 0)
            return e;
    }
    if (!create)
        return NULL;
    /* When full no insert counts towards the next prune: prune then at
       most once a second, or the table stays full for good. */
    if (rl->adds_since_prune >= rl->n / 2 + 256 ||
        (rl->n >= RL_ENTRIES_MAX && now - rl->pruned_at >= 1000))
        rl_prune(rl, now);
    if (rl->n >= RL_ENTRIES_MAX) {
        if (!rl->warned)
            log_warn("event=ratelimit.table_full entries=%zu action=\"new "
                     "clients are not limited until entries expire\"",
                     rl->n);
        rl->warned = 1;
        return NULL;
    }
    rl->warned = 0;
    len = strnlen(key, RL_KEY_MAX);
    e = calloc(1, sizeof(*e) + len + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->key, key, len);
    if (rl->n >= rl->nb * 2)
        rl_grow(rl);
    k = rl_hash(e->key) & (rl->nb - 1);
    e->next = rl->b[k];
    rl->b[k] = e;
    rl->n++;
    rl->adds_since_prune++;
    return e;
}

static void
rl_roll(struct rl_entry *e, uint64_t now, unsigned window_s)
{
    e->window_s = window_s;
    if (e->count == 0 || now - e->win_start >= (uint64_t)window_s * 1000) {
        e->win_start = now;
        e->count = 0;
    }
}

unsigned
rl_count(struct ratelimit *rl, const char *key, uint64_t now_ms,
         unsigned window_s)
{
    struct rl_entry *e = rl_find(rl, key, now_ms, 0);

    if (e == NULL)
        return 0;
    rl_roll(e, now_ms, window_s);
    return e->count;
}

unsigned
rl_add(struct ratelimit *rl, const char *key, uint64_t now_ms,
       unsigned window_s)
{
    struct rl_entry *e = rl_find(rl, key, now_ms, 1);

    if (e == NULL)
        return 0;
    rl_roll(e, now_ms, window_s);
    if (e->count < UINT32_MAX)
        e->count++;
    return e->count;
}

int
rl_take(struct ratelimit *rl, const char *key, uint64_t now_ms,
        unsigned window_s, unsigned max)
{
    struct rl_entry *e;

    if (max == 0)
        return 1;
    if ((e = rl_find(rl, key, now_ms, 1)) == NULL)
        return 1;
    rl_roll(e, now_ms, window_s);
    if (e->count >= max)
        return 0;
    e->count++;
    return 1;
}

int
rl_hold(struct ratelimit *rl, const char *key, uint64_t now_ms, unsigned max)
{
    struct rl_entry *e = rl_find(rl, key, now_ms, 1);

    if (e == NULL)
        return 1;
    if (max != 0 && e->held >= max)
        return 0;
    e->held++;
    return 1;
}

void
rl_release(struct ratelimit *rl, const char *key)
{
    struct rl_entry *e = rl_find(rl, key, 0, 0);

    if (e != NULL && e->held > 0)
        e->held--;
}
