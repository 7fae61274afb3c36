/*
 * mapi_addr: names and addresses — MAPIResolveName, MAPIAddress,
 * MAPIDetails, and the resolution the send path uses for recipients given
 * by name. All on the bridge's resolve (exact matches first, then
 * partial ones). No UI is ever shown: see win32/README.md.
 */
#include <errno.h>
#include <string.h>

#include "mapi_int.h"

#include "common/rm_error.h"

/* One resolve request; *n matches (0, 1, or 2 meaning "several"). */
static ULONG
resolve_once(struct mapi_sess *s, struct mapi_pool *p, const char *query,
             int partial, unsigned *n, char **name, char **address)
{
    struct bproto_req q;
    struct bproto_res res;
    const struct bproto_addr *m;
    ULONG rv;

    memset(&q, 0, sizeof(q));
    q.op = BPROTO_OP_RESOLVE;
    q.a.resolve.name = query;
    q.a.resolve.partial = partial;
    rv = mapi_sess_request(s, &q, &res, MAPI_CALL_SAFE, MAPI_E_FAILURE);
    if (rv == SUCCESS_SUCCESS) {
        *n = res.r.resolve.n;
        if (res.r.resolve.more && *n < 2)
            *n = 2;
        if (*n == 1) {
            m = &res.r.resolve.matches[0];
            *name = mapi_pool_strndup(p, m->name, strlen(m->name));
            *address = mapi_pool_strndup(p, m->address, strlen(m->address));
            if (*name == NULL || *address == NULL)
                rv = MAPI_E_INSUFFICIENT_MEMORY;
        }
    }
    bproto_res_cleanup(&res);
    return rv;
}

ULONG
mapi_resolve(struct mapi_sess *s, struct mapi_pool *p, const char *query,
             char **name, char **address)
{
    unsigned n = 0;
    ULONG rv;

    *name = NULL;
    *address = NULL;
    /* The node takes 1 .. BPROTO_NAME_MAX bytes: nothing else can match. */
    if (query == NULL || query[0] == '\0' || strlen(query) > BPROTO_NAME_MAX)
        return MAPI_E_UNKNOWN_RECIPIENT;
    rv = resolve_once(s, p, query, 0, &n, name, address);
    if (rv == SUCCESS_SUCCESS && n == 0)
        rv = resolve_once(s, p, query, 1, &n, name, address);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    if (n == 0)
        return MAPI_E_UNKNOWN_RECIPIENT;
    if (n > 1)
        return MAPI_E_AMBIGUOUS_RECIPIENT;
    if ((*address)[0] == '\0')
        return MAPI_E_UNKNOWN_RECIPIENT; /* a name without an address */
    return SUCCESS_SUCCESS;
}

char *
mapi_eid_address(struct mapi_pool *p, const void *eid, ULONG size)
{
    const char *b = eid;
    size_t n;

    if (b == NULL || size <= MAPI_EID_PREFIX_LEN ||
        size > MAPI_EID_PREFIX_LEN + BPROTO_ADDRESS_MAX + 1 ||
        memcmp(b, MAPI_EID_PREFIX, MAPI_EID_PREFIX_LEN) != 0)
        return NULL;
    n = size - MAPI_EID_PREFIX_LEN;
    if (b[MAPI_EID_PREFIX_LEN + n - 1] == '\0') /* a copy with its NUL */
        n--;
    if (n == 0 || memchr(b + MAPI_EID_PREFIX_LEN, '\0', n) != NULL ||
        !bproto_text_valid(b + MAPI_EID_PREFIX_LEN, n))
        return NULL;
    return mapi_pool_strndup(p, b + MAPI_EID_PREFIX_LEN, n);
}

ULONG
mapi_recip_fill(struct alloc_chain *ch, MapiRecipDesc *r, ULONG cls,
                const char *name, const char *address)
{
    size_t alen = strlen(address);
    char *eid;

    r->ulReserved = 0;
    r->ulRecipClass = cls;
    /* A display name alone is shown as the address when there is none. */
    if (mapi_text_utf8_to_acp(ch, name[0] ? name : address,
                              strlen(name[0] ? name : address),
                              &r->lpszName) != 0)
        return MAPI_E_INSUFFICIENT_MEMORY;
    if (mapi_text_utf8_to_acp(ch, address, alen, &r->lpszAddress) != 0)
        return MAPI_E_INSUFFICIENT_MEMORY;
    r->lpEntryID = NULL;
    r->ulEIDSize = 0;
    if (alen == 0)
        return SUCCESS_SUCCESS;
    eid = alloc_chain_more(ch, MAPI_EID_PREFIX_LEN + alen + 1);
    if (eid == NULL)
        return MAPI_E_INSUFFICIENT_MEMORY;
    memcpy(eid, MAPI_EID_PREFIX, MAPI_EID_PREFIX_LEN);
    memcpy(eid + MAPI_EID_PREFIX_LEN, address, alen);
    r->lpEntryID = eid;
    r->ulEIDSize = (ULONG)(MAPI_EID_PREFIX_LEN + alen);
    return SUCCESS_SUCCESS;
}

/* A caller's recipient (ANSI) as UTF-8 name and address: the address from
 * our entry id, else lpszAddress (without "SMTP:"), else resolved from the
 * name. */
static ULONG
recip_resolve(struct mapi_sess *s, struct mapi_pool *p, const MapiRecipDesc *r,
              int resolve_address, char **name, char **address)
{
    const char *a;
    char *q = NULL;
    int rc;

    *name = NULL;
    *address = NULL;
    rc = mapi_text_acp_to_utf8(p, r->lpszName, BPROTO_NAME_MAX * 4, name, NULL);
    if (rc != 0 && rc != RM_E_TOOBIG)
        return mapi_err_rm(rc, MAPI_E_FAILURE);
    if (rc == RM_E_TOOBIG)
        *name = NULL;
    *address = mapi_eid_address(p, r->lpEntryID, r->ulEIDSize);
    if (*address == NULL) {
        a = mapi_text_strip_smtp(r->lpszAddress);
        if (a != NULL && a[0] != '\0') {
            rc = mapi_text_acp_to_utf8(p, a, BPROTO_ADDRESS_MAX, address, NULL);
            if (rc != 0)
                return rc == -ENOMEM ? MAPI_E_INSUFFICIENT_MEMORY
                                     : MAPI_E_UNKNOWN_RECIPIENT;
        }
    }
    if (*address != NULL && !resolve_address) {
        if (*name == NULL) {
            *name = mapi_pool_alloc(p, 1);
            if (*name == NULL)
                return MAPI_E_INSUFFICIENT_MEMORY;
        }
        mapi_text_utf8_cut(*name, BPROTO_NAME_MAX);
        return SUCCESS_SUCCESS;
    }
    if (*address != NULL)
        q = *address;
    else if (*name != NULL)
        q = *name;
    if (q == NULL)
        return MAPI_E_UNKNOWN_RECIPIENT;
    return mapi_resolve(s, p, q, name, address);
}

ULONG WINAPI
MAPIResolveName(LHANDLE lhSession, ULONG_PTR ulUIParam, LPSTR lpszName,
                FLAGS flFlags, ULONG ulReserved, lpMapiRecipDesc *lppRecip)
{
    struct mapi_sess *s;
    struct mapi_pool pool;
    struct alloc_chain ch = {0};
    MapiRecipDesc *r;
    char *q, *name, *address;
    ULONG rv;
    int rc;

    (void)ulUIParam;
    (void)ulReserved;

    if (lppRecip == NULL)
        return MAPI_E_FAILURE;
    *lppRecip = NULL;
    if (flFlags & ~(FLAGS)MAPI_FLAGS_RESOLVE)
        return MAPI_E_FAILURE;
    if (lpszName == NULL || mapi_text_strip_smtp(lpszName)[0] == '\0')
        return MAPI_E_UNKNOWN_RECIPIENT;
    rv = mapi_sess_enter(lhSession, &s);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    mapi_pool_init(&pool);
    rc = mapi_text_acp_to_utf8(&pool, mapi_text_strip_smtp(lpszName),
                               BPROTO_NAME_MAX, &q, NULL);
    if (rc != 0) {
        rv = rc == -ENOMEM ? MAPI_E_INSUFFICIENT_MEMORY
                           : MAPI_E_UNKNOWN_RECIPIENT;
        goto out;
    }
    /* MAPI_DIALOG would let the user pick among several matches; without
     * UI an ambiguous name stays MAPI_E_AMBIGUOUS_RECIPIENT. */
    rv = mapi_resolve(s, &pool, q, &name, &address);
    if (rv != SUCCESS_SUCCESS)
        goto out;
    r = alloc_chain_new(&ch, sizeof(*r));
    if (r == NULL) {
        rv = MAPI_E_INSUFFICIENT_MEMORY;
        goto out;
    }
    rv = mapi_recip_fill(&ch, r, MAPI_TO, name, address);
    if (rv == SUCCESS_SUCCESS)
        *lppRecip = alloc_chain_take(&ch);

out:
    alloc_chain_discard(&ch);
    mapi_pool_cleanup(&pool);
    mapi_sess_leave(s);
    return rv;
}

ULONG WINAPI
MAPIAddress(LHANDLE lhSession, ULONG_PTR ulUIParam, LPSTR lpszCaption,
            ULONG nEditFields, LPSTR lpszLabels, ULONG nRecips,
            lpMapiRecipDesc lpRecips, FLAGS flFlags, ULONG ulReserved,
            LPULONG lpnNewRecips, lpMapiRecipDesc *lppNewRecips)
{
    struct mapi_sess *s;
    struct mapi_pool pool;
    struct alloc_chain ch = {0};
    MapiRecipDesc *out;
    char *name, *address;
    ULONG i, rv;

    (void)ulUIParam;
    (void)lpszCaption;
    (void)lpszLabels;
    (void)ulReserved;

    if (lpnNewRecips == NULL || lppNewRecips == NULL)
        return MAPI_E_FAILURE;
    *lpnNewRecips = 0;
    *lppNewRecips = NULL;
    if (flFlags & ~(FLAGS)MAPI_FLAGS_ADDRESS)
        return MAPI_E_FAILURE;
    if (nEditFields > 4)
        return MAPI_E_INVALID_EDITFIELDS;
    /* The address book dialog is not available: what the caller gives is
     * resolved as it is; with nothing given the "user" has chosen
     * nothing. */
    if (nRecips == 0)
        return MAPI_E_USER_ABORT;
    if (lpRecips == NULL)
        return MAPI_E_INVALID_RECIPS;
    if (nRecips > BPROTO_RCPTS_MAX)
        return MAPI_E_TOO_MANY_RECIPIENTS;
    for (i = 0; i < nRecips; i++)
        if (lpRecips[i].ulRecipClass > MAPI_BCC)
            return MAPI_E_BAD_RECIPTYPE;
    rv = mapi_sess_enter(lhSession, &s);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    mapi_pool_init(&pool);
    out = alloc_chain_new(&ch, sizeof(*out) * nRecips);
    if (out == NULL) {
        rv = MAPI_E_INSUFFICIENT_MEMORY;
        goto out;
    }
    for (i = 0; i < nRecips; i++) {
        rv = recip_resolve(s, &pool, &lpRecips[i], 0, &name, &address);
        if (rv == SUCCESS_SUCCESS)
            rv = mapi_recip_fill(&ch, &out[i], lpRecips[i].ulRecipClass, name,
                                 address);
        if (rv != SUCCESS_SUCCESS)
            goto out;
    }
    *lppNewRecips = alloc_chain_take(&ch);
    *lpnNewRecips = nRecips;

out:
    alloc_chain_discard(&ch);
    mapi_pool_cleanup(&pool);
    mapi_sess_leave(s);
    return rv;
}

ULONG WINAPI
MAPIDetails(LHANDLE lhSession, ULONG_PTR ulUIParam, lpMapiRecipDesc lpRecip,
            FLAGS flFlags, ULONG ulReserved)
{
    struct mapi_sess *s;
    struct mapi_pool pool;
    char *name, *address;
    ULONG rv;

    (void)ulUIParam;
    (void)ulReserved;

    if (flFlags & ~(FLAGS)MAPI_FLAGS_DETAILS)
        return MAPI_E_FAILURE;
    if (lpRecip == NULL)
        return MAPI_E_UNKNOWN_RECIPIENT;
    rv = mapi_sess_enter(lhSession, &s);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    mapi_pool_init(&pool);
    /* No details dialog: success says the recipient is one the node
     * knows (its entry id, address or name resolves to one user). */
    rv = recip_resolve(s, &pool, lpRecip, 1, &name, &address);
    mapi_pool_cleanup(&pool);
    mapi_sess_leave(s);
    return rv;
}
