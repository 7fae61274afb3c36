/*
 * mapi_read: the Inbox side — MAPIFindNext, MAPIReadMail, MAPIDeleteMail
 * on the bridge's find / read / fetch_body / fetch_attachment / mark /
 * delete. See mapi_int.h and win32/README.md ("Simple MAPI behaviour").
 *
 * MAPIReadMail reads with peek always and marks the message read only
 * after everything else succeeded, so that a failed call leaves it unread
 * (as the MAPIReadMail documentation asks). Attachments land in new files
 * in the user's temporary folder, which the caller owns afterwards; on
 * failure the files made so far are deleted again.
 */
#include <errno.h>
#include <string.h>

#include "mapi_int.h"

#include "common/rm_error.h"

/* ---- MAPIFindNext ----------------------------------------------------------
 */

ULONG WINAPI
MAPIFindNext(LHANDLE lhSession, ULONG_PTR ulUIParam, LPSTR lpszMessageType,
             LPSTR lpszSeedMessageID, FLAGS flFlags, ULONG ulReserved,
             LPSTR lpszMessageID)
{
    struct mapi_sess *s;
    struct bproto_req q;
    struct bproto_res res;
    char id[MAPI_ID_MAX];
    unsigned folder;
    uint64_t after = 0;
    ULONG rv;

    (void)ulUIParam;
    (void)ulReserved;

    if (lpszMessageID == NULL || (flFlags & ~(FLAGS)MAPI_FLAGS_FIND))
        return MAPI_E_FAILURE;
    /* Interpersonal messages only (NULL, "" or an "IPM" class). */
    if (lpszMessageType != NULL && lpszMessageType[0] != '\0' &&
        _strnicmp(lpszMessageType, "IPM", 3) != 0)
        return MAPI_E_NO_MESSAGES;
    if (lpszSeedMessageID != NULL &&
        strnlen(lpszSeedMessageID, MAPI_ID_MAX + 1) > MAPI_ID_MAX)
        return MAPI_E_INVALID_MESSAGE;
    rv = mapi_sess_enter(lhSession, &s);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    if (lpszSeedMessageID != NULL && lpszSeedMessageID[0] != '\0' &&
        (mapi_id_parse(s, lpszSeedMessageID, &folder, &after) != 0 ||
         (int)folder != s->inbox)) {
        rv = MAPI_E_INVALID_MESSAGE;
        goto out;
    }
    if (s->inbox < 0) {
        mapi_log("event=find_failed user=%s why=\"the node listed no Inbox\"",
                 s->user);
        rv = MAPI_E_NO_MESSAGES;
        goto out;
    }
    /* Ids grow with arrival, so the walk is in order of receipt
     * (MAPI_GUARANTEE_FIFO holds always); ours fit 64 characters, so
     * MAPI_LONG_MSGID changes nothing. */
    memset(&q, 0, sizeof(q));
    q.op = BPROTO_OP_FIND;
    q.a.find.folder = s->folders[s->inbox].id;
    q.a.find.after = after;
    q.a.find.unread_only = (flFlags & MAPI_UNREAD_ONLY) != 0;
    q.a.find.limit = 1;
    rv = mapi_sess_request(s, &q, &res, MAPI_CALL_SAFE, MAPI_E_FAILURE);
    if (rv == SUCCESS_SUCCESS && res.r.find.n_ids == 0)
        rv = MAPI_E_NO_MESSAGES;
    if (rv == SUCCESS_SUCCESS) {
        mapi_id_format(id, (unsigned)s->inbox, res.r.find.ids[0]);
        memcpy(lpszMessageID, id, strlen(id) + 1);
    }
    bproto_res_cleanup(&res);
out:
    mapi_sess_leave(s);
    return rv;
}

/* ---- temporary files --------------------------------------------------------
 */

#define TEMP_PATH_MAX (MAX_PATH + 64)

/* Paths of the files one MAPIReadMail call created. */
struct temps {
    WCHAR *path[BPROTO_ATTS_MAX + 1];
    unsigned n;
};

static void
temps_remove(struct temps *t)
{
    while (t->n > 0)
        DeleteFileW(t->path[--t->n]);
}

static WCHAR *
put_hex(WCHAR *w, unsigned long v)
{
    static const char hex[] = "0123456789abcdef";
    int i;

    for (i = 28; i >= 0; i -= 4)
        *w++ = (WCHAR)hex[(v >> i) & 0xf];
    return w;
}

/* The extension of name (UTF-8) to keep: ".xyz" of 1..16 letters or
 * digits, else none. */
static void
ext_of(const char *name, char ext[18])
{
    const char *dot = strrchr(name, '.');
    size_t i, n;

    ext[0] = '\0';
    if (dot == NULL)
        return;
    n = strlen(dot + 1);
    if (n == 0 || n > 16)
        return;
    for (i = 0; i < n; i++) {
        char ch = dot[1 + i];

        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
              (ch >= 'A' && ch <= 'Z')))
            return;
    }
    memcpy(ext, dot, n + 2);
}

/* A new file "rm<pid><counter><tick>.<ext>" in the temporary folder. */
static ULONG
temp_create(struct mapi_pool *p, struct temps *t, const char *name, HANDLE *h)
{
    static volatile LONG counter;
    WCHAR dir[MAX_PATH + 1], *path, *w;
    char ext[18];
    DWORD n, e;
    unsigned tries, i;

    *h = INVALID_HANDLE_VALUE;
    n = GetTempPathW(MAX_PATH + 1, dir);
    if (n == 0 || n > MAX_PATH) {
        mapi_log("event=temp_failed why=\"no temporary folder\" error=%lu",
                 (unsigned long)GetLastError());
        return MAPI_E_ATTACHMENT_WRITE_FAILURE;
    }
    path = mapi_pool_alloc(p, TEMP_PATH_MAX * sizeof(WCHAR));
    if (path == NULL)
        return MAPI_E_INSUFFICIENT_MEMORY;
    ext_of(name, ext);
    for (tries = 0; tries < 100; tries++) {
        memcpy(path, dir, n * sizeof(WCHAR));
        w = path + n;
        *w++ = L'r';
        *w++ = L'm';
        w = put_hex(w, GetCurrentProcessId());
        w = put_hex(w, (unsigned long)InterlockedIncrement(&counter));
        w = put_hex(w, GetTickCount());
        for (i = 0; ext[i] != '\0'; i++)
            *w++ = (WCHAR)ext[i];
        *w = 0;
        *h = CreateFileW(path, GENERIC_WRITE, 0, NULL, CREATE_NEW,
                         FILE_ATTRIBUTE_NORMAL, NULL);
        if (*h != INVALID_HANDLE_VALUE)
            break;
        e = GetLastError();
        if (e != ERROR_FILE_EXISTS && e != ERROR_ALREADY_EXISTS) {
            mapi_log("event=temp_failed error=%lu", (unsigned long)e);
            return e == ERROR_DISK_FULL ? MAPI_E_DISK_FULL
                                        : MAPI_E_ATTACHMENT_WRITE_FAILURE;
        }
    }
    if (*h == INVALID_HANDLE_VALUE)
        return MAPI_E_ATTACHMENT_WRITE_FAILURE;
    t->path[t->n++] = path;
    return SUCCESS_SUCCESS;
}

static ULONG
temp_write(HANDLE h, const void *data, size_t len)
{
    const char *b = data;
    DWORD n, e;

    while (len > 0) {
        DWORD ask = len > 0x100000 ? 0x100000 : (DWORD)len;

        if (!WriteFile(h, b, ask, &n, NULL) || n == 0) {
            e = GetLastError();
            mapi_log("event=temp_write_failed error=%lu", (unsigned long)e);
            return (e == ERROR_DISK_FULL || e == ERROR_HANDLE_DISK_FULL)
                       ? MAPI_E_DISK_FULL
                       : MAPI_E_ATTACHMENT_WRITE_FAILURE;
        }
        b += n;
        len -= n;
    }
    return SUCCESS_SUCCESS;
}

/* The path as the ANSI caller can open it: the short (8.3) form when the
 * long one has characters the code page lacks. */
static ULONG
temp_path_acp(struct alloc_chain *ch, const WCHAR *path, char **out)
{
    WCHAR shortp[TEMP_PATH_MAX];
    BOOL lossy = FALSE;
    DWORD n;

    if (WideCharToMultiByte(CP_ACP, WC_NO_BEST_FIT_CHARS, path, -1, NULL, 0,
                            NULL, &lossy) > 0 &&
        lossy) {
        n = GetShortPathNameW(path, shortp, TEMP_PATH_MAX);
        if (n > 0 && n < TEMP_PATH_MAX)
            path = shortp;
    }
    return mapi_text_wide_to_acp(ch, path, out) == 0
               ? SUCCESS_SUCCESS
               : MAPI_E_INSUFFICIENT_MEMORY;
}

/* ---- MAPIReadMail -----------------------------------------------------------
 */

struct reader {
    struct mapi_sess *s;
    struct mapi_pool pool;
    struct alloc_chain ch;
    struct temps temps;
    const char *folder; /* node's folder id */
    uint64_t id;
};

/* One chunk of fetch_body or fetch_attachment at off, checked. */
static ULONG
fetch_chunk(struct reader *r, enum bproto_op op, uint32_t index, uint64_t off,
            struct bproto_res *res)
{
    struct bproto_req q;
    const struct bproto_chunk *k;
    ULONG rv;

    memset(&q, 0, sizeof(q));
    q.op = op;
    q.a.fetch.folder = r->folder;
    q.a.fetch.id = r->id;
    q.a.fetch.index = index;
    q.a.fetch.offset = off;
    q.a.fetch.max = BPROTO_CHUNK_MAX;
    rv = mapi_sess_request(r->s, &q, res, MAPI_CALL_SAFE, MAPI_E_FAILURE);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    k = &res->r.chunk;
    /* The codec checked offset + len <= total and last; what is left is
     * that the node answers the offset asked and makes progress. */
    if (k->offset != off || (k->len == 0 && !k->last)) {
        mapi_log("event=fetch_mismatch user=%s op=%s offset=%llu got=%llu",
                 r->s->user, bproto_op_name(op), (unsigned long long)off,
                 (unsigned long long)k->offset);
        return MAPI_E_FAILURE;
    }
    return SUCCESS_SUCCESS;
}

/* The whole body text (UTF-8) into the pool: what read sent, then the rest
 * from fetch_body. */
static ULONG
body_get(struct reader *r, const struct bproto_message *m, char **text,
         size_t *len)
{
    struct bproto_res res;
    size_t have = m->body ? strlen(m->body) : 0;
    uint64_t off;
    char *t;
    ULONG rv;
    int last = 0;

    if (m->body_size <= have) {
        *text = m->body ? mapi_pool_strndup(&r->pool, m->body, have)
                        : mapi_pool_alloc(&r->pool, 1);
        *len = have;
        return *text ? SUCCESS_SUCCESS : MAPI_E_INSUFFICIENT_MEMORY;
    }
    if (m->body_size > (uint64_t)(SIZE_MAX / 4))
        return MAPI_E_INSUFFICIENT_MEMORY;
    t = mapi_pool_alloc(&r->pool, (size_t)m->body_size + 1);
    if (t == NULL)
        return MAPI_E_INSUFFICIENT_MEMORY;
    if (have)
        memcpy(t, m->body, have);
    for (off = have; off < m->body_size && !last;) {
        rv = fetch_chunk(r, BPROTO_OP_FETCH_BODY, 0, off, &res);
        if (rv == SUCCESS_SUCCESS && res.r.chunk.len > m->body_size - off) {
            mapi_log("event=fetch_mismatch user=%s op=fetch_body "
                     "why=\"longer than body_size\"",
                     r->s->user);
            rv = MAPI_E_FAILURE;
        }
        if (rv == SUCCESS_SUCCESS) {
            if (res.r.chunk.len)
                memcpy(t + off, res.r.chunk.data, res.r.chunk.len);
            off += res.r.chunk.len;
            last = res.r.chunk.last; /* the text ends here, even if short */
        }
        bproto_res_cleanup(&res);
        if (rv != SUCCESS_SUCCESS)
            return rv;
    }
    t[off] = '\0';
    /* A NUL inside would cut the text for the caller; the codec refuses
     * NUL in str but fetch_body data is bin. */
    *len = strlen(t);
    if (!bproto_text_valid(t, *len)) {
        mapi_log("event=body_invalid user=%s why=\"not UTF-8\"", r->s->user);
        return MAPI_E_FAILURE;
    }
    *text = t;
    return SUCCESS_SUCCESS;
}

static ULONG
att_get(struct reader *r, const struct bproto_att_info *a, MapiFileDesc *fd)
{
    struct bproto_res res;
    uint64_t off = 0;
    HANDLE h;
    ULONG rv;
    int last = 0;

    rv = temp_create(&r->pool, &r->temps, a->name, &h);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    while (!last) {
        rv = fetch_chunk(r, BPROTO_OP_FETCH_ATTACHMENT, a->index, off, &res);
        if (rv == SUCCESS_SUCCESS)
            rv = temp_write(h, res.r.chunk.data, res.r.chunk.len);
        if (rv == SUCCESS_SUCCESS) {
            off += res.r.chunk.len;
            last = res.r.chunk.last;
        }
        bproto_res_cleanup(&res);
        if (rv != SUCCESS_SUCCESS)
            break;
    }
    if (!CloseHandle(h) && rv == SUCCESS_SUCCESS)
        rv = MAPI_E_ATTACHMENT_WRITE_FAILURE;
    if (rv != SUCCESS_SUCCESS)
        return rv;
    fd->nPosition = (ULONG)-1;
    rv =
        temp_path_acp(&r->ch, r->temps.path[r->temps.n - 1], &fd->lpszPathName);
    if (rv == SUCCESS_SUCCESS &&
        mapi_text_utf8_to_acp(&r->ch, a->name, strlen(a->name),
                              &fd->lpszFileName) != 0)
        rv = MAPI_E_INSUFFICIENT_MEMORY;
    return rv;
}

/* "YYYY/MM/DD HH:MM", local time (the MapiMessage documentation's
 * format for lpszDateReceived); 0 when t is out of range. */
static int
date_format(int64_t t, char out[32])
{
    ULARGE_INTEGER u;
    FILETIME ft;
    SYSTEMTIME utc, loc;

    if (t <= 0 || t > INT64_C(253402300799)) /* 9999-12-31 */
        return 0;
    u.QuadPart = ((uint64_t)t + UINT64_C(11644473600)) * 10000000u;
    ft.dwLowDateTime = u.LowPart;
    ft.dwHighDateTime = u.HighPart;
    if (!FileTimeToSystemTime(&ft, &utc))
        return 0;
    if (!SystemTimeToTzSpecificLocalTime(NULL, &utc, &loc))
        loc = utc;
    snprintf(out, 32, "%04u/%02u/%02u %02u:%02u", loc.wYear, loc.wMonth,
             loc.wDay, loc.wHour, loc.wMinute);
    return 1;
}

static ULONG
message_build(struct reader *r, const struct bproto_message *m, FLAGS fl,
              MapiMessage **out)
{
    MapiMessage *mm;
    MapiRecipDesc *rd;
    char date[32];
    char *text = NULL;
    size_t len = 0;
    unsigned i, n, nfiles;
    ULONG rv;

    mm = alloc_chain_new(&r->ch, sizeof(*mm));
    if (mm == NULL)
        return MAPI_E_INSUFFICIENT_MEMORY;
    if (mapi_text_utf8_to_acp(&r->ch, m->subject ? m->subject : "",
                              m->subject ? strlen(m->subject) : 0,
                              &mm->lpszSubject) != 0)
        return MAPI_E_INSUFFICIENT_MEMORY;
    if (date_format(m->received ? m->received : m->date, date)) {
        mm->lpszDateReceived = alloc_chain_str(&r->ch, date);
        if (mm->lpszDateReceived == NULL)
            return MAPI_E_INSUFFICIENT_MEMORY;
    }
    mm->lpszMessageType = NULL;    /* interpersonal message */
    mm->lpszConversationID = NULL; /* the bridge has no threads */
    if (!(m->flags & BPROTO_FLAG_READ))
        mm->flFlags |= MAPI_UNREAD;
    if (m->flags & BPROTO_FLAG_RECEIPT)
        mm->flFlags |= MAPI_RECEIPT_REQUESTED;
    if (m->flags & BPROTO_FLAG_SENT)
        mm->flFlags |= MAPI_SENT;

    mm->lpOriginator = alloc_chain_more(&r->ch, sizeof(MapiRecipDesc));
    if (mm->lpOriginator == NULL)
        return MAPI_E_INSUFFICIENT_MEMORY;
    rv = mapi_recip_fill(&r->ch, mm->lpOriginator, MAPI_ORIG,
                         m->from.name ? m->from.name : "",
                         m->from.address ? m->from.address : "");
    if (rv != SUCCESS_SUCCESS)
        return rv;

    n = m->n_to + m->n_cc + m->n_bcc;
    if (n > 0) {
        rd = alloc_chain_more(&r->ch, sizeof(*rd) * n);
        if (rd == NULL)
            return MAPI_E_INSUFFICIENT_MEMORY;
        for (i = 0; i < n && rv == SUCCESS_SUCCESS; i++) {
            const struct bproto_addr *a = i < m->n_to ? &m->to[i]
                                          : i < m->n_to + m->n_cc
                                              ? &m->cc[i - m->n_to]
                                              : &m->bcc[i - m->n_to - m->n_cc];
            ULONG cls = i < m->n_to             ? MAPI_TO
                        : i < m->n_to + m->n_cc ? MAPI_CC
                                                : MAPI_BCC;

            rv = mapi_recip_fill(&r->ch, &rd[i], cls, a->name, a->address);
        }
        if (rv != SUCCESS_SUCCESS)
            return rv;
        mm->lpRecips = rd;
        mm->nRecipCount = n;
    }

    if (fl & MAPI_ENVELOPE_ONLY) {
        *out = mm;
        return SUCCESS_SUCCESS;
    }
    rv = body_get(r, m, &text, &len);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    nfiles = ((fl & MAPI_BODY_AS_FILE) ? 1 : 0) + m->n_atts;
    if (nfiles > 0) {
        mm->lpFiles = alloc_chain_more(&r->ch, sizeof(MapiFileDesc) * nfiles);
        if (mm->lpFiles == NULL)
            return MAPI_E_INSUFFICIENT_MEMORY;
    }
    if (fl & MAPI_BODY_AS_FILE) {
        /* The text goes to a file, first in the list, in the code page
         * lpszNoteText would have had; lpszNoteText stays NULL. */
        MapiFileDesc *fd = &mm->lpFiles[mm->nFileCount];
        char *acp;
        HANDLE h;

        if (mapi_text_utf8_to_acp(&r->ch, text, len, &acp) != 0)
            return MAPI_E_INSUFFICIENT_MEMORY;
        rv = temp_create(&r->pool, &r->temps, "body.txt", &h);
        if (rv != SUCCESS_SUCCESS)
            return rv;
        rv = temp_write(h, acp, strlen(acp));
        if (!CloseHandle(h) && rv == SUCCESS_SUCCESS)
            rv = MAPI_E_ATTACHMENT_WRITE_FAILURE;
        if (rv == SUCCESS_SUCCESS)
            rv = temp_path_acp(&r->ch, r->temps.path[r->temps.n - 1],
                               &fd->lpszPathName);
        if (rv != SUCCESS_SUCCESS)
            return rv;
        fd->nPosition = (ULONG)-1;
        mm->nFileCount++;
    } else if (mapi_text_utf8_to_acp(&r->ch, text, len, &mm->lpszNoteText) !=
               0) {
        return MAPI_E_INSUFFICIENT_MEMORY;
    }
    for (i = 0; i < m->n_atts; i++) {
        MapiFileDesc *fd = &mm->lpFiles[mm->nFileCount];

        if (fl & MAPI_SUPPRESS_ATTACH) {
            /* Listed by name, no file: lpszPathName stays NULL. */
            fd->nPosition = (ULONG)-1;
            if (mapi_text_utf8_to_acp(&r->ch, m->atts[i].name,
                                      strlen(m->atts[i].name),
                                      &fd->lpszFileName) != 0)
                return MAPI_E_INSUFFICIENT_MEMORY;
        } else {
            rv = att_get(r, &m->atts[i], fd);
            if (rv != SUCCESS_SUCCESS)
                return rv;
        }
        mm->nFileCount++;
    }
    *out = mm;
    return SUCCESS_SUCCESS;
}

ULONG WINAPI
MAPIReadMail(LHANDLE lhSession, ULONG_PTR ulUIParam, LPSTR lpszMessageID,
             FLAGS flFlags, ULONG ulReserved, lpMapiMessage *lppMessage)
{
    struct reader r;
    struct bproto_req q;
    struct bproto_res res;
    MapiMessage *mm = NULL;
    unsigned folder;
    ULONG rv;

    (void)ulUIParam;
    (void)ulReserved;

    if (lppMessage == NULL)
        return MAPI_E_FAILURE;
    *lppMessage = NULL;
    if (flFlags & ~(FLAGS)MAPI_FLAGS_READ)
        return MAPI_E_FAILURE;
    if (lpszMessageID == NULL ||
        strnlen(lpszMessageID, MAPI_ID_MAX + 1) > MAPI_ID_MAX)
        return MAPI_E_INVALID_MESSAGE;
    memset(&r, 0, sizeof(r));
    mapi_pool_init(&r.pool);
    rv = mapi_sess_enter(lhSession, &r.s);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    if (mapi_id_parse(r.s, lpszMessageID, &folder, &r.id) != 0) {
        rv = MAPI_E_INVALID_MESSAGE;
        goto out;
    }
    r.folder = r.s->folders[folder].id;

    memset(&q, 0, sizeof(q));
    q.op = BPROTO_OP_READ;
    q.a.read.folder = r.folder;
    q.a.read.id = r.id;
    q.a.read.peek = 1; /* marked read below, once all went well */
    q.a.read.envelope_only = (flFlags & MAPI_ENVELOPE_ONLY) != 0;
    q.a.read.body = !(flFlags & MAPI_ENVELOPE_ONLY);
    q.a.read.headers = 0;
    rv = mapi_sess_request(r.s, &q, &res, MAPI_CALL_SAFE, MAPI_E_FAILURE);
    if (rv == SUCCESS_SUCCESS)
        rv = message_build(&r, &res.r.read, flFlags, &mm);
    if (rv == SUCCESS_SUCCESS && !(flFlags & MAPI_PEEK) &&
        !(res.r.read.flags & BPROTO_FLAG_READ)) {
        struct bproto_res mres;

        memset(&q, 0, sizeof(q));
        q.op = BPROTO_OP_MARK;
        q.a.mark.folder = r.folder;
        q.a.mark.id = r.id;
        q.a.mark.read = 1;
        rv = mapi_sess_request(r.s, &q, &mres, MAPI_CALL_SAFE, MAPI_E_FAILURE);
        bproto_res_cleanup(&mres);
    }
    bproto_res_cleanup(&res);
    if (rv == SUCCESS_SUCCESS)
        *lppMessage = alloc_chain_take(&r.ch);

out:
    if (rv != SUCCESS_SUCCESS)
        temps_remove(&r.temps);
    alloc_chain_discard(&r.ch);
    mapi_pool_cleanup(&r.pool);
    mapi_sess_leave(r.s);
    return rv;
}

/* ---- MAPIDeleteMail ---------------------------------------------------------
 */

ULONG WINAPI
MAPIDeleteMail(LHANDLE lhSession, ULONG_PTR ulUIParam, LPSTR lpszMessageID,
               FLAGS flFlags, ULONG ulReserved)
{
    struct mapi_sess *s;
    struct bproto_req q;
    struct bproto_res res;
    unsigned folder;
    uint64_t id;
    ULONG rv;

    (void)ulUIParam;
    (void)flFlags;
    (void)ulReserved;

    if (lpszMessageID == NULL ||
        strnlen(lpszMessageID, MAPI_ID_MAX + 1) > MAPI_ID_MAX)
        return MAPI_E_INVALID_MESSAGE;
    rv = mapi_sess_enter(lhSession, &s);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    if (mapi_id_parse(s, lpszMessageID, &folder, &id) != 0) {
        rv = MAPI_E_INVALID_MESSAGE;
    } else {
        memset(&q, 0, sizeof(q));
        q.op = BPROTO_OP_DELETE;
        q.a.del.folder = s->folders[folder].id;
        q.a.del.id = id;
        rv = mapi_sess_request(s, &q, &res, MAPI_CALL_ONCE, MAPI_E_FAILURE);
        bproto_res_cleanup(&res);
    }
    mapi_sess_leave(s);
    return rv;
}
