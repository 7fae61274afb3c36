/*
 * mapi_int: what the Simple MAPI files of relaymesh-mapi.dll share
 * (mapi.c, mapi_text.c, mapi_send.c, mapi_read.c, mapi_addr.c). Not an
 * interface of the DLL: the exports are declared in mapi_compat.h.
 *
 * Error vocabulary. The exports answer Simple MAPI codes (SUCCESS_SUCCESS,
 * MAPI_E_*), so every function here that decides an outcome returns a
 * ULONG MAPI code too; the small helpers (pool, text) return 0 or a
 * negative common/rm_error.h code, and mapi_err_rm() turns those into
 * MAPI codes at the one place each is decided.
 *
 * Memory. Per-call scratch memory (converted strings, recipient lists,
 * inline attachment data) comes from a struct mapi_pool, released in one
 * go when the call ends, on every path. What the caller receives is built
 * as one MAPI buffer chain (alloc.h). Heap memory is malloc (wrapped by
 * alloc.c for fault injection).
 *
 * Threads. A session is used by one API call at a time: mapi_sess_enter()
 * takes its lock and mapi_sess_leave() releases it, so calls from several
 * threads on one session are serialised, and calls on different sessions
 * run in parallel. The session table has its own lock.
 */
#ifndef RM_WIN32_MAPI_INT_H
#define RM_WIN32_MAPI_INT_H

#include <stddef.h>
#include <stdint.h>

#include "mapi_compat.h"

#include "alloc.h"
#include "bridge/proto.h"
#include "rmclient.h"

#define MAPI_CLIENT_NAME "relaymesh-mapi/0.1" /* logon's "client" */
#define MAPI_SESSIONS_MAX 64                  /* live sessions per process */
/* Message identifier: "<folder index>.<id in lower-case hex>", at most
 * 3 + 1 + 16 characters (bridge/README.md "Simple MAPI on the protocol"). */
#define MAPI_ID_MAX 24
/* Entry ids we hand out: "RMEID:" followed by the address. */
#define MAPI_EID_PREFIX "RMEID:"
#define MAPI_EID_PREFIX_LEN 6

/*
 * The flags each function's documentation lists; any other bit is refused
 * with MAPI_E_FAILURE before anything happens (a flag this provider does
 * not know may ask for something it does not do). MAPILogoff and
 * MAPIDeleteMail have reserved flags and accept anything.
 */
#define MAPI_FLAGS_LOGON                                                       \
    (MAPI_LOGON_UI | MAPI_NEW_SESSION | MAPI_FORCE_DOWNLOAD |                  \
     MAPI_PASSWORD_UI | MAPI_EXTENDED)
#define MAPI_FLAGS_SEND                                                        \
    (MAPI_LOGON_UI | MAPI_NEW_SESSION | MAPI_DIALOG | MAPI_DIALOG_MODELESS |   \
     MAPI_FORCE_UNICODE)
#define MAPI_FLAGS_SAVE (MAPI_LOGON_UI | MAPI_NEW_SESSION | MAPI_LONG_MSGID)
#define MAPI_FLAGS_FIND                                                        \
    (MAPI_GUARANTEE_FIFO | MAPI_LONG_MSGID | MAPI_UNREAD_ONLY)
#define MAPI_FLAGS_READ                                                        \
    (MAPI_BODY_AS_FILE | MAPI_ENVELOPE_ONLY | MAPI_PEEK | MAPI_SUPPRESS_ATTACH)
#define MAPI_FLAGS_RESOLVE                                                     \
    (MAPI_AB_NOMODIFY | MAPI_DIALOG | MAPI_LOGON_UI | MAPI_NEW_SESSION)
#define MAPI_FLAGS_ADDRESS (MAPI_LOGON_UI | MAPI_NEW_SESSION)
#define MAPI_FLAGS_DETAILS (MAPI_AB_NOMODIFY | MAPI_LOGON_UI | MAPI_NEW_SESSION)

/* ---- logging (OutputDebugStringA, one key=value line per event) --------- */
void mapi_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- per-call scratch memory --------------------------------------------- */
struct mapi_pool_blk;
struct mapi_pool {
    struct mapi_pool_blk *head;
};
void mapi_pool_init(struct mapi_pool *p);
/* n bytes, zeroed; NULL when memory ran out (n == 0 gives a valid
 * pointer). Lives until mapi_pool_cleanup(). */
void *mapi_pool_alloc(struct mapi_pool *p, size_t n);
/* Copy of len bytes plus a NUL. */
char *mapi_pool_strndup(struct mapi_pool *p, const char *s, size_t len);
/* Frees every block; the pool is empty and usable again. */
void mapi_pool_cleanup(struct mapi_pool *p);

/* ---- text conversions (mapi_text.c) -------------------------------------- */
/*
 * To UTF-8 (what the bridge speaks) from the ANSI code page (CP_ACP, the
 * A functions' strings) or from UTF-16 (the W functions), into the pool.
 * s NULL gives *out NULL and 0. *len (may be NULL) gets the byte length.
 * Lone surrogates become U+FFFD. Errors: -ENOMEM; RM_E_TOOBIG (longer than
 * max bytes of UTF-8, or than Win32's int lengths); RM_E_INVAL (the
 * conversion failed).
 */
int mapi_text_acp_to_utf8(struct mapi_pool *p, const char *s, size_t max,
                          char **out, size_t *len);
int mapi_text_wide_to_utf8(struct mapi_pool *p, const WCHAR *s, size_t max,
                           char **out, size_t *len);
/* ANSI to UTF-16 (file names given to the A functions); same errors. */
int mapi_text_acp_to_wide(struct mapi_pool *p, const char *s, WCHAR **out);
/* UTF-8 (len bytes) to UTF-16 in the pool; same errors. */
int mapi_text_utf8_to_wide(struct mapi_pool *p, const char *s, size_t len,
                           WCHAR **out);
/*
 * UTF-8 or UTF-16 to the ANSI code page, into a caller's MAPI buffer
 * chain (characters the code page lacks become its default character).
 * s NULL gives *out NULL and 0. Errors: -ENOMEM, RM_E_TOOBIG, RM_E_INVAL.
 */
int mapi_text_utf8_to_acp(struct alloc_chain *ch, const char *s, size_t len,
                          char **out);
int mapi_text_wide_to_acp(struct alloc_chain *ch, const WCHAR *s, char **out);
/* Cut s (UTF-8, NUL-terminated) to at most max bytes on a character
 * boundary, in place. */
void mapi_text_utf8_cut(char *s, size_t max);
/* An address as a caller wrote it: skip spaces and an "SMTP:" prefix (any
 * case); returns a pointer into s (NULL stays NULL). */
const char *mapi_text_strip_smtp(const char *s);

/* ---- sessions (mapi.c) --------------------------------------------------- */
struct mapi_folder {
    char *id; /* the node's folder id */
    enum bproto_role role;
};

struct mapi_sess {
    LHANDLE handle;        /* 0 for a temporary session (not in the table) */
    LONG refs;             /* holders; under the table lock */
    unsigned logons;       /* MAPILogon calls sharing it; under the lock */
    int shared;            /* MAPILogon without MAPI_NEW_SESSION made it */
    CRITICAL_SECTION lock; /* one API call at a time */
    struct rmc_cfg cfg;    /* kept for reconnecting; wiped when freed */
    struct rmc *c;         /* NULL: dropped; reconnect before a request */
    char user[BPROTO_ADDRESS_MAX + 1];
    char name[BPROTO_NAME_MAX + 1];
    uint64_t max_message; /* from logon; 0: unknown */
    unsigned n_folders;
    struct mapi_folder *folders; /* logon's list, in its order */
    int inbox, drafts;           /* indexes into folders; -1: none */
    /* State of the API call that holds the lock: */
    int call_live;  /* a request already succeeded on this connection */
    int call_retry; /* the one reconnect of this call is still available */
};

/* DllMain (register.c) calls these at process attach / detach. */
void mapi_attach(void);
void mapi_detach(void);

/*
 * Start an API call on session h: h == 0 takes the shared session if there
 * is one, else logs on a temporary session from the configuration (ended
 * by mapi_sess_leave()). Locks the session. Returns SUCCESS_SUCCESS and
 * *out, or MAPI_E_INVALID_SESSION (h is not a live session) or a logon
 * error.
 */
ULONG mapi_sess_enter(LHANDLE h, struct mapi_sess **out);
void mapi_sess_leave(struct mapi_sess *s);

/* How mapi_sess_request() may recover from a dropped connection. */
enum mapi_call_kind {
    MAPI_CALL_SAFE,  /* repeatable: reconnect and send it again (once) */
    MAPI_CALL_ONCE,  /* must not run twice (send, save, delete, mark):
                        probe the connection with ping first */
    MAPI_CALL_BOUND, /* depends on this connection (an upload handle):
                        never reconnect in between */
};

/*
 * One request on the session's connection (reconnecting first when it is
 * dropped, as kind allows). res must be cleaned up by the caller
 * (bproto_res_cleanup) whatever the result. Returns SUCCESS_SUCCESS when
 * the node answered ok; otherwise the MAPI code for the node's error (too
 * big: too_big_code) or for the transport failure (the connection is then
 * closed; the next request reconnects).
 */
ULONG mapi_sess_request(struct mapi_sess *s, struct bproto_req *q,
                        struct bproto_res *res, enum mapi_call_kind kind,
                        ULONG too_big_code);

/* Node error kind to Simple MAPI (bridge/README.md's table). */
ULONG mapi_err_node(enum bproto_errcode code, ULONG too_big_code);
/* An rm_error.h code (from the helpers here) to Simple MAPI:
 * -ENOMEM is MAPI_E_INSUFFICIENT_MEMORY, RM_E_TOOBIG too_big_code, the
 * rest MAPI_E_FAILURE. */
ULONG mapi_err_rm(int rc, ULONG too_big_code);

/* Message identifiers. mapi_id_format writes at most MAPI_ID_MAX bytes
 * with the NUL. mapi_id_parse: 0, or RM_E_INVAL when s is not one of ours
 * for this session (MAPI_E_INVALID_MESSAGE). */
void mapi_id_format(char *out, unsigned folder, uint64_t id);
int mapi_id_parse(const struct mapi_sess *s, const char *str, unsigned *folder,
                  uint64_t *id);

/* ---- addresses (mapi_addr.c) --------------------------------------------- */
/*
 * Resolve a name (UTF-8) with the node: exact matches first, then partial
 * ones. One match: SUCCESS_SUCCESS, *name / *address copied into the
 * pool. None: MAPI_E_UNKNOWN_RECIPIENT; several:
 * MAPI_E_AMBIGUOUS_RECIPIENT; or a request's error.
 */
ULONG mapi_resolve(struct mapi_sess *s, struct mapi_pool *p, const char *query,
                   char **name, char **address);
/* The address inside one of our entry ids (eid / size as a caller gives
 * them back), copied into the pool; NULL when it is not ours. */
char *mapi_eid_address(struct mapi_pool *p, const void *eid, ULONG size);
/* Fill a MapiRecipDesc of a caller's buffer chain from UTF-8 name and
 * address: strings in ANSI, lpEntryID our own bytes (NULL when address is
 * ""). SUCCESS_SUCCESS or MAPI_E_INSUFFICIENT_MEMORY. */
ULONG mapi_recip_fill(struct alloc_chain *ch, MapiRecipDesc *r, ULONG cls,
                      const char *name, const char *address);

#endif
