/*
 * Unit tests for node/ratelimit.c: windowed counters (rl_count, rl_add,
 * rl_take), concurrent sessions (rl_hold, rl_release), pruning, the bound
 * on the table (RL_ENTRIES_MAX) and long keys (RL_KEY_MAX). Time is a
 * fake clock: every call takes now in ms.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "node/ratelimit.h"

/* A clock that does not start at 0, so "never used" is not "now". */
#define T0 ((uint64_t)1700000000000ULL)
#define SEC(n) ((uint64_t)(n)*1000)

static struct ratelimit *
rl_new(void)
{
    struct ratelimit *rl = NULL;

    assert_int_equal(ratelimit_new(&rl), 0);
    assert_non_null(rl);
    assert_int_equal(ratelimit_size(rl), 0);
    return rl;
}

static void
keyname(char *out, size_t outsz, const char *prefix, unsigned i)
{
    snprintf(out, outsz, "%s%u", prefix, i);
}

/* ---- 1. counters ---------------------------------------------------- */

static void
test_empty(void **state)
{
    struct ratelimit *rl = rl_new();

    (void)state;
    /* Reading or releasing an unknown key creates nothing. */
    assert_int_equal(rl_count(rl, "c:192.0.2.1", T0, 60), 0);
    rl_release(rl, "c:192.0.2.1");
    rl_release(rl, "");
    assert_int_equal(ratelimit_size(rl), 0);
    ratelimit_free(rl);
    ratelimit_free(NULL);
}

static void
test_add_count_window(void **state)
{
    struct ratelimit *rl = rl_new();

    (void)state;
    /* The window opens at the first event and is fixed, not sliding. */
    assert_int_equal(rl_add(rl, "a:192.0.2.1", T0, 60), 1);
    assert_int_equal(rl_add(rl, "a:192.0.2.1", T0 + SEC(10), 60), 2);
    assert_int_equal(rl_add(rl, "a:192.0.2.1", T0 + SEC(59), 60), 3);
    assert_int_equal(rl_count(rl, "a:192.0.2.1", T0 + SEC(59), 60), 3);
    assert_int_equal(rl_count(rl, "a:192.0.2.1", T0 + SEC(60) - 1, 60), 3);
    assert_int_equal(ratelimit_size(rl), 1);

    /* Keys are independent, even when one is a prefix of another. */
    assert_int_equal(rl_add(rl, "a:192.0.2.10", T0, 60), 1);
    assert_int_equal(rl_count(rl, "a:192.0.2.1", T0 + SEC(1), 60), 3);
    assert_int_equal(rl_count(rl, "a:192.0.2.", T0 + SEC(1), 60), 0);
    assert_int_equal(rl_count(rl, "", T0 + SEC(1), 60), 0);
    assert_int_equal(ratelimit_size(rl), 2);

    /* At exactly start + window the window has passed. */
    assert_int_equal(rl_count(rl, "a:192.0.2.1", T0 + SEC(60), 60), 0);
    assert_int_equal(rl_add(rl, "a:192.0.2.1", T0 + SEC(61), 60), 1);
    /* ... and the new window starts at that event (T0 + 61 s). */
    assert_int_equal(rl_add(rl, "a:192.0.2.1", T0 + SEC(120), 60), 2);
    assert_int_equal(rl_count(rl, "a:192.0.2.1", T0 + SEC(121) - 1, 60), 2);
    assert_int_equal(rl_count(rl, "a:192.0.2.1", T0 + SEC(121), 60), 0);

    /* A long idle gap. */
    assert_int_equal(rl_add(rl, "a:192.0.2.10", T0 + SEC(86400 * 365), 60), 1);

    /* The empty key is a key like any other. */
    assert_int_equal(rl_add(rl, "", T0, 60), 1);
    assert_int_equal(rl_add(rl, "", T0, 60), 2);
    ratelimit_free(rl);
}

static void
test_take_limit(void **state)
{
    struct ratelimit *rl = rl_new();
    const char *k = "c:2001:db8::1";

    (void)state;
    assert_int_equal(rl_take(rl, k, T0, 60, 3), 1);
    assert_int_equal(rl_take(rl, k, T0 + 1, 60, 3), 1);
    assert_int_equal(rl_take(rl, k, T0 + 2, 60, 3), 1);
    assert_int_equal(rl_count(rl, k, T0 + 2, 60), 3);
    /* At the limit: refused, and the refusals are not counted. */
    for (int i = 0; i < 100; i++)
        assert_int_equal(rl_take(rl, k, T0 + SEC(30), 60, 3), 0);
    assert_int_equal(rl_count(rl, k, T0 + SEC(30), 60), 3);
    /* A higher limit for the same key lets more through. */
    assert_int_equal(rl_take(rl, k, T0 + SEC(30), 60, 4), 1);
    assert_int_equal(rl_take(rl, k, T0 + SEC(30), 60, 4), 0);
    assert_int_equal(rl_count(rl, k, T0 + SEC(30), 60), 4);
    /* Once the window has passed the key starts again from 0. */
    assert_int_equal(rl_take(rl, k, T0 + SEC(60), 60, 3), 1);
    assert_int_equal(rl_count(rl, k, T0 + SEC(60), 60), 1);

    /* rl_add and rl_take share the counter. */
    assert_int_equal(rl_add(rl, "u:alice", T0, 3600), 1);
    assert_int_equal(rl_add(rl, "u:alice", T0, 3600), 2);
    assert_int_equal(rl_take(rl, "u:alice", T0, 3600, 2), 0);
    assert_int_equal(rl_take(rl, "u:alice", T0, 3600, 3), 1);
    assert_int_equal(rl_add(rl, "u:alice", T0, 3600), 4);

    /* max 1: exactly one per window. */
    assert_int_equal(rl_take(rl, "c:one", T0, 1, 1), 1);
    assert_int_equal(rl_take(rl, "c:one", T0 + 999, 1, 1), 0);
    assert_int_equal(rl_take(rl, "c:one", T0 + 1000, 1, 1), 1);
    ratelimit_free(rl);
}

static void
test_take_no_limit(void **state)
{
    struct ratelimit *rl = rl_new();

    (void)state;
    /* max 0 is no limit: always allowed, nothing is tracked. */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rl_take(rl, "c:192.0.2.7", T0, 60, 0), 1);
    assert_int_equal(ratelimit_size(rl), 0);
    assert_int_equal(rl_count(rl, "c:192.0.2.7", T0, 60), 0);
    ratelimit_free(rl);
}

static void
test_zero_window(void **state)
{
    struct ratelimit *rl = rl_new();

    (void)state;
    /* A window of 0 s holds nothing: every event is the first. */
    assert_int_equal(rl_add(rl, "z", T0, 0), 1);
    assert_int_equal(rl_add(rl, "z", T0, 0), 1);
    assert_int_equal(rl_take(rl, "z", T0, 0, 1), 1);
    assert_int_equal(rl_take(rl, "z", T0, 0, 1), 1);
    ratelimit_free(rl);
}

/* ---- 2. sessions ---------------------------------------------------- */

static void
test_hold_release(void **state)
{
    struct ratelimit *rl = rl_new();
    const char *k = "c:198.51.100.4";

    (void)state;
    assert_int_equal(rl_hold(rl, k, T0, 2), 1);
    assert_int_equal(rl_hold(rl, k, T0, 2), 1);
    assert_int_equal(rl_hold(rl, k, T0, 2), 0);
    assert_int_equal(rl_hold(rl, k, T0 + SEC(3600), 2), 0); /* no window */
    rl_release(rl, k);
    assert_int_equal(rl_hold(rl, k, T0, 2), 1);
    assert_int_equal(rl_hold(rl, k, T0, 2), 0);

    /* More releases than holds never go below zero: after them, one
       hold fits under max 1 and the next does not. */
    for (int i = 0; i < 10; i++)
        rl_release(rl, k);
    assert_int_equal(rl_hold(rl, k, T0, 1), 1);
    assert_int_equal(rl_hold(rl, k, T0, 1), 0);
    rl_release(rl, k);
    rl_release(rl, k);

    /* Holds and the windowed counter of one key are separate. */
    assert_int_equal(rl_take(rl, k, T0, 60, 5), 1);
    assert_int_equal(rl_hold(rl, k, T0, 1), 1);
    assert_int_equal(rl_count(rl, k, T0, 60), 1);
    assert_int_equal(rl_take(rl, k, T0, 60, 5), 1);
    assert_int_equal(rl_hold(rl, k, T0, 1), 0);
    rl_release(rl, k);
    assert_int_equal(rl_count(rl, k, T0, 60), 2);

    /* max 0: no limit, but holds are still counted. */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rl_hold(rl, "c:many", T0, 0), 1);
    assert_int_equal(rl_hold(rl, "c:many", T0, 1000), 0);
    for (int i = 0; i < 999; i++)
        rl_release(rl, "c:many");
    assert_int_equal(rl_hold(rl, "c:many", T0, 2), 1);
    assert_int_equal(rl_hold(rl, "c:many", T0, 2), 0);
    ratelimit_free(rl);
}

/* ---- 3. many keys, pruning ------------------------------------------ */

static void
test_many_keys(void **state)
{
    struct ratelimit *rl = rl_new();
    char k[64];
    const unsigned n = 20000; /* past the initial buckets: regrows */

    (void)state;
    for (unsigned i = 0; i < n; i++) {
        keyname(k, sizeof(k), "c:10.0.", i);
        for (unsigned j = 0; j <= i % 4; j++)
            assert_int_equal(rl_add(rl, k, T0 + i, 3600), j + 1);
    }
    assert_int_equal(ratelimit_size(rl), n);
    for (unsigned i = 0; i < n; i++) {
        keyname(k, sizeof(k), "c:10.0.", i);
        assert_int_equal(rl_count(rl, k, T0 + SEC(60), 3600), i % 4 + 1);
    }
    ratelimit_free(rl);
}

static void
test_prune(void **state)
{
    struct ratelimit *rl = rl_new();
    char k[64];
    const unsigned old = 1000, fresh = 4000;

    (void)state;
    for (unsigned i = 0; i < old; i++) {
        keyname(k, sizeof(k), "old:", i);
        assert_int_equal(rl_add(rl, k, T0, 60), 1);
    }
    /* Kept through pruning: a key with a session open (its counter
       long expired), and one whose (longer) window still runs. */
    assert_int_equal(rl_hold(rl, "held", T0, 1), 1);
    assert_int_equal(rl_add(rl, "long", T0, 86400), 1);
    assert_int_equal(rl_add(rl, "long", T0, 86400), 2);
    /* Dropped: one whose only session has ended. */
    assert_int_equal(rl_hold(rl, "released", T0, 1), 1);
    rl_release(rl, "released");
    assert_int_equal(ratelimit_size(rl), old + 3);

    /* Long after: new keys come in; pruning, amortised over inserts,
       drops what is idle and out of its window. */
    for (unsigned i = 0; i < fresh; i++) {
        keyname(k, sizeof(k), "new:", i);
        assert_int_equal(rl_add(rl, k, T0 + SEC(120), 60), 1);
    }
    /* Each prune drops every idle entry at once: none of the old keys
       (nor the released one) is left. */
    assert_int_equal(ratelimit_size(rl), fresh + 2);

    assert_int_equal(rl_hold(rl, "held", T0 + SEC(120), 1), 0);
    assert_int_equal(rl_count(rl, "long", T0 + SEC(120), 86400), 2);
    assert_int_equal(rl_hold(rl, "released", T0 + SEC(120), 1), 1);
    for (unsigned i = 0; i < old; i++) {
        keyname(k, sizeof(k), "old:", i);
        assert_int_equal(rl_count(rl, k, T0 + SEC(120), 60), 0);
    }
    ratelimit_free(rl);
}

/* ---- 4. a full table ------------------------------------------------ */

static size_t
count_in_fd(int fd, const char *what)
{
    static char buf[65536];
    size_t n = 0;
    ssize_t r;
    const char *p;

    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    r = read(fd, buf, sizeof(buf) - 1);
    assert_true(r >= 0);
    buf[r] = '\0';
    for (p = buf; (p = strstr(p, what)) != NULL; p++)
        n++;
    return n;
}

static void
test_table_full(void **state)
{
    struct ratelimit *rl = rl_new();
    char k[64];
    FILE *logf = tmpfile();
    const uint64_t t1 = T0 + SEC(3600);

    (void)state;
    assert_non_null(logf);
    log_set_fd(fileno(logf));
    for (unsigned i = 0; i < RL_ENTRIES_MAX; i++) {
        keyname(k, sizeof(k), "c:", i);
        assert_int_equal(rl_add(rl, k, T0 + i / 100, 60), 1);
    }
    assert_int_equal(ratelimit_size(rl), RL_ENTRIES_MAX);
    /* A held session in the full table. */
    assert_int_equal(rl_hold(rl, "c:7", T0 + SEC(1), 1), 1);

    /* Full, every entry live: new keys are not tracked (fail open). */
    for (unsigned i = 0; i < 1000; i++) {
        keyname(k, sizeof(k), "x:", i);
        assert_int_equal(rl_add(rl, k, T0 + SEC(10), 60), 0);
        assert_int_equal(rl_take(rl, k, T0 + SEC(10), 60, 1), 1);
        assert_int_equal(rl_take(rl, k, T0 + SEC(10), 60, 1), 1);
        assert_int_equal(rl_hold(rl, k, T0 + SEC(10), 1), 1);
        assert_int_equal(rl_hold(rl, k, T0 + SEC(10), 1), 1);
        assert_int_equal(rl_count(rl, k, T0 + SEC(10), 60), 0);
        rl_release(rl, k);
    }
    assert_int_equal(ratelimit_size(rl), RL_ENTRIES_MAX);
    /* Logged once, not once per refusal. */
    assert_int_equal(count_in_fd(fileno(logf), "ratelimit.table_full"), 1);
    /* Keys already in the table are still limited. */
    assert_int_equal(rl_take(rl, "c:0", T0 + SEC(10), 60, 1), 0);
    assert_int_equal(rl_count(rl, "c:12345", T0 + SEC(10), 60), 1);
    assert_int_equal(rl_add(rl, "c:12345", T0 + SEC(10), 60), 2);

    /* Later the entries have expired: new keys are tracked again, and
       the table is not full of dead entries. */
    assert_int_equal(rl_take(rl, "x:late", t1, 60, 1), 1);
    assert_int_equal(rl_take(rl, "x:late", t1, 60, 1), 0);
    assert_true(ratelimit_size(rl) < 1000);
    assert_int_equal(rl_add(rl, "x:0", t1, 60), 1);
    assert_int_equal(rl_add(rl, "x:0", t1, 60), 2);
    /* The held session survived the pruning. */
    assert_int_equal(rl_hold(rl, "c:7", t1, 1), 0);
    rl_release(rl, "c:7");
    assert_int_equal(rl_hold(rl, "c:7", t1, 1), 1);

    log_set_fd(2);
    fclose(logf);
    ratelimit_free(rl);
}

/* ---- 5. long keys --------------------------------------------------- */

static void
test_long_keys(void **state)
{
    struct ratelimit *rl = rl_new();
    char a[RL_KEY_MAX + 80], b[RL_KEY_MAX + 80], c[RL_KEY_MAX + 1];

    (void)state;
    /* The longest key a caller builds ("u:" + a 320-octet login) fits. */
    memset(c, 'u', RL_KEY_MAX - 1);
    c[RL_KEY_MAX - 1] = '\0';
    assert_int_equal(rl_add(rl, c, T0, 60), 1);
    assert_int_equal(rl_add(rl, c, T0, 60), 2);
    c[RL_KEY_MAX - 2] = 'v'; /* differs in its last octet */
    assert_int_equal(rl_add(rl, c, T0, 60), 1);
    assert_int_equal(ratelimit_size(rl), 2);

    /* Exactly RL_KEY_MAX octets. */
    memset(c, 'm', RL_KEY_MAX);
    c[RL_KEY_MAX] = '\0';
    assert_int_equal(rl_add(rl, c, T0, 60), 1);
    assert_int_equal(rl_add(rl, c, T0, 60), 2);
    assert_int_equal(rl_count(rl, c, T0, 60), 2);
    assert_int_equal(ratelimit_size(rl), 3);

    /* Longer keys are cut at RL_KEY_MAX octets: still one counter per
       key (not a new entry per call), and keys that differ only past
       the cut share it. */
    memset(a, 'k', sizeof(a) - 1);
    a[sizeof(a) - 1] = '\0';
    memcpy(b, a, sizeof(b));
    b[RL_KEY_MAX + 10] = 'z';
    assert_int_equal(rl_add(rl, a, T0, 60), 1);
    assert_int_equal(rl_add(rl, a, T0, 60), 2);
    assert_int_equal(rl_count(rl, a, T0, 60), 2);
    assert_int_equal(rl_add(rl, b, T0, 60), 3);
    assert_int_equal(ratelimit_size(rl), 4);
    assert_int_equal(rl_take(rl, a, T0, 60, 3), 0);
    assert_int_equal(ratelimit_size(rl), 4);
    /* ... and a cut key is still not its own prefix. */
    a[RL_KEY_MAX - 1] = '\0';
    assert_int_equal(rl_count(rl, a, T0, 60), 0);
    a[RL_KEY_MAX - 1] = 'k';

    /* Sessions on a long key are given back. */
    assert_int_equal(rl_hold(rl, b, T0, 1), 1);
    assert_int_equal(rl_hold(rl, a, T0, 1), 0);
    rl_release(rl, a);
    assert_int_equal(rl_hold(rl, b, T0, 1), 1);
    assert_int_equal(ratelimit_size(rl), 4);
    ratelimit_free(rl);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_add_count_window),
        cmocka_unit_test(test_take_limit),
        cmocka_unit_test(test_take_no_limit),
        cmocka_unit_test(test_zero_window),
        cmocka_unit_test(test_hold_release),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_prune),
        cmocka_unit_test(test_table_full),
        cmocka_unit_test(test_long_keys),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
