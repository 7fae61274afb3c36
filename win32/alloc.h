/*
 * alloc: every allocation relaymesh-mapi.dll makes, and the fault
 * injection the tests drive through the RelaymeshFaultInject export.
 *
 * Heap memory. The DLL is linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free, so every
 * malloc / calloc / realloc / free in the DLL (ours, rmclient.c, proto.c,
 * frame.c, msgpack-c, libsodium) lands in __wrap_* here, which count down
 * towards an armed failure and forward to the C runtime's __real_*.
 *
 * MAPI buffers. Memory handed to a Simple MAPI caller must be freeable by
 * our MAPIFreeBuffer (the caller loaded this DLL) and equally by Wine's
 * mapi32 MAPIFreeBuffer (the call came through the system's mapi32.dll,
 * which frees buffers itself instead of asking the provider). So the
 * layout is mapi32's (Wine dlls/mapi32/util.c, MAPIAllocateBuffer /
 * MAPIAllocateMore / MAPIFreeBuffer):
 *
 *   each block is HeapAlloc(GetProcessHeap(), ...) of a pointer-sized
 *   header followed by the caller's bytes; the caller sees the bytes.
 *   A root block's header starts NULL; a block allocated "more" on a
 *   root is linked by storing its block address (header address) in the
 *   header of the chain's last block. Freeing the root walks the chain
 *   from the root's header and HeapFree()s every block.
 *
 * Everything one call returns (a MapiMessage with its recipients, files
 * and strings; a MapiRecipDesc array; ...) is built as one chain rooted at
 * the pointer returned, so one MAPIFreeBuffer releases it all. MAPI
 * buffers count in the same fault-injection countdown as heap memory.
 *
 * Threads: any thread. The countdown is one process-wide counter (it has
 * to be: malloc has no handle to hang it on), updated with Interlocked*.
 * A struct alloc_chain is used by one thread at a time.
 */
#ifndef RM_WIN32_ALLOC_H
#define RM_WIN32_ALLOC_H

#include <stddef.h>

/* The linker's names for the C runtime's allocator (--wrap). */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

/*
 * One step of the countdown: 1 when this allocation is the armed one (the
 * caller then fails it, as if memory had run out), else 0. Used by the
 * wrappers and the MAPI buffer functions; nothing else needs it.
 */
int alloc_fault_hit(void);

/*
 * A MAPI buffer chain under construction. alloc_chain_new() makes the
 * root block (zeroed, size bytes); alloc_chain_more() adds a zeroed block
 * to the chain; alloc_chain_str() copies a NUL-terminated string (NULL
 * gives NULL, not an error). Each returns NULL when memory ran out (or
 * the fault fired); the chain stays valid and is released with
 * alloc_chain_discard() on the error path, or handed to the caller with
 * alloc_chain_take() (the caller then frees it with MAPIFreeBuffer).
 * The struct only remembers the root and the last block, so adding is
 * O(1); the memory layout is the one described above.
 */
struct alloc_chain {
    void *root;  /* caller's pointer of the root block; NULL: none yet */
    void **last; /* header of the chain's last block */
};

void *alloc_chain_new(struct alloc_chain *ch, size_t size);
void *alloc_chain_more(struct alloc_chain *ch, size_t size);
char *alloc_chain_str(struct alloc_chain *ch, const char *s);
/* Bytes (not NUL-terminated; a NUL is added after them anyway). */
void *alloc_chain_mem(struct alloc_chain *ch, const void *p, size_t len);
void alloc_chain_discard(struct alloc_chain *ch);
void *alloc_chain_take(struct alloc_chain *ch);

/* Free a chain given its root's pointer (NULL: nothing). mapi32's
 * MAPIFreeBuffer does the same walk. */
void alloc_chain_free(void *root);

#endif
