/*
 * mapi: Simple MAPI sessions on the bridge (MAPILogon, MAPILogoff,
 * MAPIFreeBuffer), and what the other mapi_*.c files share: the session
 * table, requests with reconnection, error mapping, message ids, the
 * scratch pool and the log. See mapi_int.h; bridge/README.md for the
 * protocol and win32/README.md ("Simple MAPI behaviour") for the choices.
 *
 * A session is one rmc connection (rmclient.h) on which the bridge's
 * logon succeeded. Handles given to callers are numbers from a counter,
 * looked up in a table under a lock, never pointers: a stale or made-up
 * handle is MAPI_E_INVALID_SESSION, not a crash.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapi_int.h"

#include "common/rm_error.h"

/* ---- log ----------------------------------------------------------------- */

void
mapi_log(const char *fmt, ...)
{
    char line[768];
    va_list ap;
    int n;

    n = snprintf(line, sizeof(line), "relaymesh-mapi: ");
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    n = (int)strlen(line);
    line[n] = '\n';
    line[n + 1] = '\0';
    OutputDebugStringA(line);
}

/* ---- scratch pool -------------------------------------------------------- */

struct mapi_pool_blk {
    struct mapi_pool_blk *next;
    /* the caller's bytes follow, aligned for any type */
    union {
        long double ld;
        void *p;
        uint64_t u;
    } align[];
};

void
mapi_pool_init(struct mapi_pool *p)
{
    p->head = NULL;
}

void *
mapi_pool_alloc(struct mapi_pool *p, size_t n)
{
    struct mapi_pool_blk *b;

    if (n > SIZE_MAX / 2 - sizeof(*b))
        return NULL;
    b = calloc(1, sizeof(*b) + (n ? n : 1));
    if (b == NULL)
        return NULL;
    b->next = p->head;
    p->head = b;
    return b->align;
}

char *
mapi_pool_strndup(struct mapi_pool *p, const char *s, size_t len)
{
    char *d;

    if (len > SIZE_MAX / 2)
        return NULL;
    d = mapi_pool_alloc(p, len + 1);
    if (d == NULL)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

void
mapi_pool_cleanup(struct mapi_pool *p)
{
    struct mapi_pool_blk *b, *next;

    for (b = p->head; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    p->head = NULL;
}

/* ---- errors -------------------------------------------------------------- */

ULONG
mapi_err_node(enum bproto_errcode code, ULONG too_big_code)
{
    switch (code) {
    case BPROTO_E_UNSUPPORTED:
        return MAPI_E_NOT_SUPPORTED;
    case BPROTO_E_LOGIN_FAILURE:
        return MAPI_E_LOGIN_FAILURE;
    case BPROTO_E_NOT_LOGGED_IN:
        return MAPI_E_INVALID_SESSION;
    case BPROTO_E_UNKNOWN_RECIPIENT:
        return MAPI_E_UNKNOWN_RECIPIENT;
    case BPROTO_E_AMBIGUOUS_RECIPIENT:
        return MAPI_E_AMBIGUOUS_RECIPIENT;
    case BPROTO_E_TOO_MANY_RECIPIENTS:
        return MAPI_E_TOO_MANY_RECIPIENTS;
    case BPROTO_E_NO_MESSAGES:
        return MAPI_E_NO_MESSAGES;
    case BPROTO_E_INVALID_MESSAGE:
        return MAPI_E_INVALID_MESSAGE;
    case BPROTO_E_ATTACHMENT_NOT_FOUND:
        return MAPI_E_ATTACHMENT_NOT_FOUND;
    case BPROTO_E_TOO_BIG:
        return too_big_code;
    case BPROTO_E_DISK_FULL:
        return MAPI_E_DISK_FULL;
    case BPROTO_E_ACCESS_DENIED:
        return MAPI_E_ACCESS_DENIED;
    case BPROTO_E_FAILURE:
    case BPROTO_E_BAD_REQUEST:
    case BPROTO_E_VERSION:
    case BPROTO_E_FOLDER_NOT_FOUND:
    case BPROTO_E_TRY_LATER:
    case BPROTO_E_RESYNC:
    case BPROTO_E_COUNT:
        break;
    }
    return MAPI_E_FAILURE;
}

ULONG
mapi_err_rm(int rc, ULONG too_big_code)
{
    if (rc == 0)
        return SUCCESS_SUCCESS;
    if (rc == -ENOMEM)
        return MAPI_E_INSUFFICIENT_MEMORY;
    if (rc == RM_E_TOOBIG)
        return too_big_code;
    return MAPI_E_FAILURE;
}

/* ---- message ids --------------------------------------------------------- */

void
mapi_id_format(char *out, unsigned folder, uint64_t id)
{
    snprintf(out, MAPI_ID_MAX, "%u.%llx", folder, (unsigned long long)id);
}

int
mapi_id_parse(const struct mapi_sess *s, const char *str, unsigned *folder,
              uint64_t *id)
{
    unsigned f = 0, nd = 0;
    uint64_t v = 0;
    const char *p = str;

    if (str == NULL)
        return RM_E_INVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (++nd > 3)
            return RM_E_INVAL;
        f = f * 10 + (unsigned)(*p - '0');
    }
    if (nd == 0 || (nd > 1 && str[0] == '0') || *p++ != '.')
        return RM_E_INVAL;
    for (nd = 0; *p != '\0'; p++) {
        unsigned d;

        if (*p >= '0' && *p <= '9')
            d = (unsigned)(*p - '0');
        else if (*p >= 'a' && *p <= 'f')
            d = (unsigned)(*p - 'a' + 10);
        else if (*p >= 'A' && *p <= 'F')
            d = (unsigned)(*p - 'A' + 10);
        else
            return RM_E_INVAL;
        if (++nd > 16)
            return RM_E_INVAL;
        v = v << 4 | d;
    }
    if (nd == 0 || v == 0 || f >= s->n_folders)
        return RM_E_INVAL;
    *folder = f;
    *id = v;
    return 0;
}

/* ---- the session table --------------------------------------------------- */

static CRITICAL_SECTION table_lock;
static struct mapi_sess *table[MAPI_SESSIONS_MAX];
static LHANDLE next_handle = 0x524d0000; /* arbitrary; never 0 */
static struct mapi_sess *shared_sess;

void
mapi_attach(void)
{
    InitializeCriticalSection(&table_lock);
}

void
mapi_detach(void)
{
    /* Sessions a program did not log off are left to the process's end:
     * no network I/O under the loader lock. */
    DeleteCriticalSection(&table_lock);
}

static void
folders_free(struct mapi_sess *s)
{
    unsigned i;

    if (s->folders != NULL) {
        for (i = 0; i < s->n_folders; i++)
            free(s->folders[i].id);
        free(s->folders);
    }
    s->folders = NULL;
    s->n_folders = 0;
    s->inbox = -1;
    s->drafts = -1;
}

/* Take the folder list of a logon or folders result. */
static int
folders_take(struct mapi_sess *s, const struct bproto_folder *src, unsigned n)
{
    struct mapi_folder *f;
    unsigned i;

    f = calloc(n ? n : 1, sizeof(*f));
    if (f == NULL)
        return -ENOMEM;
    for (i = 0; i < n; i++) {
        size_t len = strlen(src[i].id);

        f[i].id = malloc(len + 1);
        if (f[i].id == NULL) {
            while (i-- > 0)
                free(f[i].id);
            free(f);
            return -ENOMEM;
        }
        memcpy(f[i].id, src[i].id, len + 1);
        f[i].role = src[i].role;
    }
    if (s->n_folders != 0 && s->n_folders != n)
        mapi_log("event=folders_changed user=%s before=%u now=%u", s->user,
                 s->n_folders, n);
    folders_free(s);
    s->folders = f;
    s->n_folders = n;
    for (i = 0; i < n; i++) {
        if (f[i].role == BPROTO_ROLE_INBOX && s->inbox < 0)
            s->inbox = (int)i;
        if (f[i].role == BPROTO_ROLE_DRAFTS && s->drafts < 0)
            s->drafts = (int)i;
    }
    return 0;
}

static void
sess_drop(struct mapi_sess *s)
{
    if (s->c != NULL)
        rmc_close(s->c);
    s->c = NULL;
    s->call_live = 0;
}

static void
copy_str(char *dst, size_t dstsz, const char *src)
{
    size_t n = src ? strlen(src) : 0;

    if (n >= dstsz)
        n = dstsz - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/*
 * Connect and log on (first logon and reconnects). On error the session
 * has no connection.
 */
static ULONG
sess_connect(struct mapi_sess *s)
{
    struct bproto_req q;
    struct bproto_res res;
    char why[256];
    struct rmc *c;
    ULONG rv;
    int rc;

    sess_drop(s);
    why[0] = '\0';
    rc = rmc_open(&s->cfg, &c, why, sizeof(why));
    if (rc != 0) {
        mapi_log("event=connect_failed node=%s user=%s error=\"%s\" why=\"%s\"",
                 s->cfg.node, s->cfg.user, rm_strerror(rc), why);
        return rc == -ENOMEM ? MAPI_E_INSUFFICIENT_MEMORY : MAPI_E_FAILURE;
    }
    memset(&q, 0, sizeof(q));
    memset(&res, 0, sizeof(res));
    q.op = BPROTO_OP_LOGON;
    q.a.logon.version = BPROTO_VERSION;
    q.a.logon.user = s->cfg.user;
    q.a.logon.password = s->cfg.password;
    q.a.logon.client = MAPI_CLIENT_NAME;
    rc = rmc_call(c, &q, &res);
    if (rc != 0) {
        mapi_log("event=logon_failed node=%s user=%s error=\"%s\"", s->cfg.node,
                 s->cfg.user, rm_strerror(rc));
        rv = mapi_err_rm(rc, MAPI_E_FAILURE);
        goto fail;
    }
    if (!res.ok) {
        mapi_log("event=logon_refused node=%s user=%s code=%s msg=\"%s\"",
                 s->cfg.node, s->cfg.user, bproto_errcode_name(res.err.code),
                 res.err.msg ? res.err.msg : "");
        rv = mapi_err_node(res.err.code, MAPI_E_FAILURE);
        if (res.err.code == BPROTO_E_NOT_LOGGED_IN)
            rv = MAPI_E_LOGIN_FAILURE;
        goto fail;
    }
    copy_str(s->user, sizeof(s->user), res.r.logon.user);
    copy_str(s->name, sizeof(s->name), res.r.logon.name);
    s->max_message = res.r.logon.max_message;
    s->c = c;
    if (res.r.logon.n_folders > 0) {
        rc = folders_take(s, res.r.logon.folders, res.r.logon.n_folders);
        bproto_res_cleanup(&res);
        if (rc != 0) {
            sess_drop(s);
            return MAPI_E_INSUFFICIENT_MEMORY;
        }
    } else {
        bproto_res_cleanup(&res);
        memset(&q, 0, sizeof(q));
        memset(&res, 0, sizeof(res));
        q.op = BPROTO_OP_FOLDERS;
        rc = rmc_call(c, &q, &res);
        if (rc != 0 || !res.ok) {
            rv = rc ? mapi_err_rm(rc, MAPI_E_FAILURE)
                    : mapi_err_node(res.err.code, MAPI_E_FAILURE);
            mapi_log("event=folders_failed user=%s error=\"%s\"", s->user,
                     rc ? rm_strerror(rc) : bproto_errcode_name(res.err.code));
            bproto_res_cleanup(&res);
            sess_drop(s);
            return rv;
        }
        rc = folders_take(s, res.r.folders.folders, res.r.folders.n_folders);
        bproto_res_cleanup(&res);
        if (rc != 0) {
            sess_drop(s);
            return MAPI_E_INSUFFICIENT_MEMORY;
        }
    }
    s->call_live = 1;
    mapi_log("event=logon user=%s node=%s folders=%u", s->user,
             rmc_node_name(s->c), s->n_folders);
    return SUCCESS_SUCCESS;

fail:
    bproto_res_cleanup(&res);
    rmc_close(c);
    return rv;
}

static void
sess_free(struct mapi_sess *s)
{
    if (s->c != NULL) {
        struct bproto_req q;
        struct bproto_res res;

        /* Best effort: the node drops the session with the channel
         * anyway. */
        memset(&q, 0, sizeof(q));
        memset(&res, 0, sizeof(res));
        q.op = BPROTO_OP_LOGOFF;
        (void)rmc_call(s->c, &q, &res);
        bproto_res_cleanup(&res);
        sess_drop(s);
    }
    folders_free(s);
    rmc_cfg_wipe(&s->cfg);
    DeleteCriticalSection(&s->lock);
    SecureZeroMemory(s, sizeof(*s));
    free(s);
}

/* A new session from the configuration and the caller's credentials
 * (UTF-8, NULL or "": not given), logged on. */
static ULONG
sess_open(const char *profile, const char *password, struct mapi_sess **out)
{
    struct mapi_sess *s;
    char why[256];
    ULONG rv;
    int rc;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return MAPI_E_INSUFFICIENT_MEMORY;
    s->inbox = -1;
    s->drafts = -1;
    InitializeCriticalSection(&s->lock);
    why[0] = '\0';
    rc = rmc_cfg_load(&s->cfg, profile, password, why, sizeof(why));
    if (rc != 0) {
        mapi_log("event=config_failed error=\"%s\" why=\"%s\"", rm_strerror(rc),
                 why);
        rv = rc == -ENOMEM ? MAPI_E_INSUFFICIENT_MEMORY : MAPI_E_FAILURE;
        goto fail;
    }
    if (s->cfg.user[0] == '\0' || s->cfg.password[0] == '\0') {
        /* Simple MAPI would prompt (MAPI_LOGON_UI); this provider never
         * shows UI, so missing credentials are a failed logon. */
        mapi_log("event=logon_failed why=\"no %s configured or given\"",
                 s->cfg.user[0] == '\0' ? "user" : "password");
        rv = MAPI_E_LOGIN_FAILURE;
        goto fail;
    }
    rv = sess_connect(s);
    if (rv != SUCCESS_SUCCESS)
        goto fail;
    *out = s;
    return SUCCESS_SUCCESS;

fail:
    sess_free(s);
    return rv;
}

/* Table lock held. */
static struct mapi_sess *
table_find(LHANDLE h)
{
    unsigned i;

    if (h == 0)
        return NULL;
    for (i = 0; i < MAPI_SESSIONS_MAX; i++)
        if (table[i] != NULL && table[i]->handle == h)
            return table[i];
    return NULL;
}

static void
sess_unref(struct mapi_sess *s)
{
    LONG left;

    EnterCriticalSection(&table_lock);
    left = --s->refs;
    LeaveCriticalSection(&table_lock);
    if (left == 0)
        sess_free(s);
}

ULONG
mapi_sess_enter(LHANDLE h, struct mapi_sess **out)
{
    struct mapi_sess *s;
    ULONG rv;

    *out = NULL;
    EnterCriticalSection(&table_lock);
    s = h ? table_find(h) : shared_sess;
    if (s != NULL)
        s->refs++;
    LeaveCriticalSection(&table_lock);
    if (s == NULL && h != 0)
        return MAPI_E_INVALID_SESSION;
    if (s == NULL) {
        /* A session for the duration of the call (lhSession 0). */
        rv = sess_open(NULL, NULL, &s);
        if (rv != SUCCESS_SUCCESS)
            return rv;
        s->refs = 1;
    }
    EnterCriticalSection(&s->lock);
    s->call_live = 0;
    s->call_retry = 1;
    *out = s;
    return SUCCESS_SUCCESS;
}

void
mapi_sess_leave(struct mapi_sess *s)
{
    if (s == NULL)
        return;
    LeaveCriticalSection(&s->lock);
    sess_unref(s);
}

static int
transport_dead(int rc)
{
    /* RM_E_INVAL / RM_E_TOOBIG: the request did not encode, nothing was
     * sent, the connection is fine. Anything else may have left a frame
     * half read or written. */
    return rc != 0 && rc != RM_E_INVAL && rc != RM_E_TOOBIG;
}

ULONG
mapi_sess_request(struct mapi_sess *s, struct bproto_req *q,
                  struct bproto_res *res, enum mapi_call_kind kind,
                  ULONG too_big_code)
{
    ULONG rv;
    int rc;

    memset(res, 0, sizeof(*res));
    if (s->c == NULL) {
        if (kind == MAPI_CALL_BOUND || !s->call_retry)
            return MAPI_E_FAILURE;
        s->call_retry = 0;
        rv = sess_connect(s);
        if (rv != SUCCESS_SUCCESS)
            return rv;
    }
    if (kind == MAPI_CALL_ONCE && !s->call_live) {
        /* The connection may have died while idle: find out with a ping
         * before a request that must not be repeated. */
        struct bproto_req pq;

        memset(&pq, 0, sizeof(pq));
        pq.op = BPROTO_OP_PING;
        rv = mapi_sess_request(s, &pq, res, MAPI_CALL_SAFE, MAPI_E_FAILURE);
        bproto_res_cleanup(res);
        memset(res, 0, sizeof(*res));
        if (rv != SUCCESS_SUCCESS)
            return rv;
    }
    rc = rmc_call(s->c, q, res);
    if (transport_dead(rc) && rc != -ENOMEM && kind == MAPI_CALL_SAFE &&
        !s->call_live && s->call_retry) {
        /* An idle connection the node (or a NAT) closed: once per call,
         * log on again and repeat the request. */
        mapi_log("event=reconnect user=%s op=%s error=\"%s\"", s->user,
                 bproto_op_name(q->op), rm_strerror(rc));
        bproto_res_cleanup(res);
        memset(res, 0, sizeof(*res));
        s->call_retry = 0;
        rv = sess_connect(s);
        if (rv != SUCCESS_SUCCESS)
            return rv;
        rc = rmc_call(s->c, q, res);
    }
    if (rc != 0) {
        mapi_log("event=request_failed user=%s op=%s error=\"%s\"", s->user,
                 bproto_op_name(q->op), rm_strerror(rc));
        if (transport_dead(rc))
            sess_drop(s);
        return mapi_err_rm(rc, too_big_code);
    }
    s->call_live = 1;
    if (!res->ok) {
        mapi_log("event=request_refused user=%s op=%s code=%s msg=\"%s\"",
                 s->user, bproto_op_name(q->op),
                 bproto_errcode_name(res->err.code),
                 res->err.msg ? res->err.msg : "");
        return mapi_err_node(res->err.code, too_big_code);
    }
    return SUCCESS_SUCCESS;
}

/* ---- MAPILogon / MAPILogoff ---------------------------------------------- */

/* Would a logon with these credentials get the shared session s? Table
 * lock held. */
static int
shared_matches(const struct mapi_sess *s, const char *profile,
               const char *password)
{
    if (profile != NULL && profile[0] != '\0' &&
        lstrcmpiA(profile, s->cfg.user) != 0)
        return 0;
    if (password != NULL && password[0] != '\0' &&
        strcmp(password, s->cfg.password) != 0)
        return 0;
    return 1;
}

ULONG WINAPI
MAPILogon(ULONG_PTR ulUIParam, LPSTR lpszProfileName, LPSTR lpszPassword,
          FLAGS flFlags, ULONG ulReserved, LPLHANDLE lplhSession)
{
    struct mapi_pool pool;
    struct mapi_sess *s = NULL;
    char *profile = NULL, *password = NULL;
    unsigned i;
    ULONG rv;
    int rc;

    (void)ulUIParam;
    (void)ulReserved;

    if (lplhSession == NULL)
        return MAPI_E_FAILURE;
    *lplhSession = 0;
    if (flFlags & ~(FLAGS)MAPI_FLAGS_LOGON)
        return MAPI_E_FAILURE;
    mapi_pool_init(&pool);
    rc = mapi_text_acp_to_utf8(&pool, lpszProfileName, BPROTO_ADDRESS_MAX,
                               &profile, NULL);
    if (rc == 0)
        rc = mapi_text_acp_to_utf8(&pool, lpszPassword, BPROTO_PASSWORD_MAX,
                                   &password, NULL);
    if (rc != 0) {
        /* A name or password longer than any the node accepts. */
        rv = rc == -ENOMEM ? MAPI_E_INSUFFICIENT_MEMORY : MAPI_E_LOGIN_FAILURE;
        goto out;
    }

    if (!(flFlags & MAPI_NEW_SESSION)) {
        EnterCriticalSection(&table_lock);
        if (shared_sess != NULL &&
            shared_matches(shared_sess, profile, password)) {
            shared_sess->logons++;
            *lplhSession = shared_sess->handle;
        }
        LeaveCriticalSection(&table_lock);
        if (*lplhSession != 0) {
            rv = SUCCESS_SUCCESS;
            goto out;
        }
    }

    rv = sess_open(profile, password, &s);
    if (rv != SUCCESS_SUCCESS)
        goto out;
    EnterCriticalSection(&table_lock);
    for (i = 0; i < MAPI_SESSIONS_MAX; i++)
        if (table[i] == NULL)
            break;
    if (i < MAPI_SESSIONS_MAX) {
        if (++next_handle == 0)
            next_handle = 1;
        s->handle = next_handle;
        s->refs = 1;
        s->logons = 1;
        table[i] = s;
        if (!(flFlags & MAPI_NEW_SESSION) && shared_sess == NULL) {
            s->shared = 1;
            shared_sess = s;
        }
        *lplhSession = s->handle;
    }
    LeaveCriticalSection(&table_lock);
    if (i == MAPI_SESSIONS_MAX) {
        mapi_log("event=logon_refused why=\"%d sessions open already\"",
                 MAPI_SESSIONS_MAX);
        sess_free(s);
        rv = MAPI_E_TOO_MANY_SESSIONS;
    }

out:
    if (password != NULL)
        SecureZeroMemory(password, strlen(password));
    mapi_pool_cleanup(&pool);
    return rv;
}

ULONG WINAPI
MAPILogoff(LHANDLE lhSession, ULONG_PTR ulUIParam, FLAGS flFlags,
           ULONG ulReserved)
{
    struct mapi_sess *s;
    unsigned i;
    int last = 0;

    (void)ulUIParam;
    (void)flFlags;
    (void)ulReserved;

    EnterCriticalSection(&table_lock);
    s = table_find(lhSession);
    if (s != NULL && --s->logons == 0) {
        for (i = 0; i < MAPI_SESSIONS_MAX; i++)
            if (table[i] == s)
                table[i] = NULL;
        if (shared_sess == s)
            shared_sess = NULL;
        last = 1;
    }
    LeaveCriticalSection(&table_lock);
    if (s == NULL)
        return MAPI_E_INVALID_SESSION;
    if (last) {
        /* Wait for a call running on it, then drop the table's
         * reference; the last holder frees it (and logs off). */
        EnterCriticalSection(&s->lock);
        LeaveCriticalSection(&s->lock);
        sess_unref(s);
    }
    return SUCCESS_SUCCESS;
}

/* ---- MAPIFreeBuffer ------------------------------------------------------ */

ULONG WINAPI
MAPIFreeBuffer(LPVOID pv)
{
    alloc_chain_free(pv);
    return SUCCESS_SUCCESS;
}
