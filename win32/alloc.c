/*
 * alloc: allocator wrappers with fault injection, and the MAPI buffer
 * chains callers free with MAPIFreeBuffer. See alloc.h.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "mapi_compat.h"

#include "alloc.h"

/*
 * The countdown: 0 is disarmed; n > 0 fails the n-th allocation from the
 * moment it was armed, once. Process-wide state is unavoidable here: the
 * wrapped malloc is called from code (msgpack-c, libsodium) that has no
 * handle to pass. fault_fired records that the armed failure happened, for
 * RelaymeshFaultInject's answer.
 */
static volatile LONG fault_countdown;
static volatile LONG fault_fired;

int
alloc_fault_hit(void)
{
    LONG cur, next;

    for (;;) {
        cur = InterlockedCompareExchange(&fault_countdown, 0, 0);
        if (cur <= 0)
            return 0;
        next = cur - 1;
        if (InterlockedCompareExchange(&fault_countdown, next, cur) == cur)
            break;
    }
    if (next != 0)
        return 0;
    InterlockedExchange(&fault_fired, 1);
    return 1;
}

LONG WINAPI
RelaymeshFaultInject(LONG n)
{
    LONG fired;

    /* Disarm first so that no allocation sees the old and the new count
     * mixed; then report and re-arm. */
    InterlockedExchange(&fault_countdown, 0);
    fired = InterlockedExchange(&fault_fired, 0);
    if (n > 0)
        InterlockedExchange(&fault_countdown, n);
    return fired ? 1 : 0;
}

void *
__wrap_malloc(size_t n)
{
    if (alloc_fault_hit()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_malloc(n);
}

void *
__wrap_calloc(size_t n, size_t size)
{
    if (alloc_fault_hit()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t n)
{
    /* A failed realloc leaves p allocated, as the real one does. */
    if (alloc_fault_hit()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_realloc(p, n);
}

void
__wrap_free(void *p)
{
    __real_free(p);
}

/* ---- MAPI buffer chains (mapi32's layout, see alloc.h) ------------------ */

/* A block: [void *next-block][size bytes]; returns the header. */
static void **
chain_block(size_t size)
{
    void **hdr;

    if (size > (size_t)MAXLONG - sizeof(void *) - 1)
        return NULL;
    if (alloc_fault_hit())
        return NULL;
    hdr = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(void *) + size);
    if (hdr == NULL)
        return NULL;
    *hdr = NULL;
    return hdr;
}

void *
alloc_chain_new(struct alloc_chain *ch, size_t size)
{
    void **hdr;

    ch->root = NULL;
    ch->last = NULL;
    hdr = chain_block(size);
    if (hdr == NULL)
        return NULL;
    ch->root = hdr + 1;
    ch->last = hdr;
    return ch->root;
}

void *
alloc_chain_more(struct alloc_chain *ch, size_t size)
{
    void **hdr;

    if (ch->root == NULL)
        return NULL;
    hdr = chain_block(size);
    if (hdr == NULL)
        return NULL;
    *ch->last = hdr;
    ch->last = hdr;
    return hdr + 1;
}

void *
alloc_chain_mem(struct alloc_chain *ch, const void *p, size_t len)
{
    char *d;

    if (len > (size_t)MAXLONG - 1)
        return NULL;
    d = alloc_chain_more(ch, len + 1);
    if (d == NULL)
        return NULL;
    if (len)
        memcpy(d, p, len);
    d[len] = '\0';
    return d;
}

char *
alloc_chain_str(struct alloc_chain *ch, const char *s)
{
    if (s == NULL)
        return NULL;
    return alloc_chain_mem(ch, s, strlen(s));
}

void
alloc_chain_free(void *root)
{
    void **hdr, **next;

    if (root == NULL)
        return;
    for (hdr = (void **)root - 1; hdr != NULL; hdr = next) {
        next = *hdr;
        HeapFree(GetProcessHeap(), 0, hdr);
    }
}

void
alloc_chain_discard(struct alloc_chain *ch)
{
    alloc_chain_free(ch->root);
    ch->root = NULL;
    ch->last = NULL;
}

void *
alloc_chain_take(struct alloc_chain *ch)
{
    void *root = ch->root;

    ch->root = NULL;
    ch->last = NULL;
    return root;
}
