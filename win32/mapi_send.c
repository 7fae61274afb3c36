/*
 * mapi_send: composing — MAPISendMail, MAPISendMailW, MAPISendDocuments
 * and MAPISaveMail, on the bridge's send / save (with upload for what does
 * not fit inline, resolve for recipients given by name only). See
 * mapi_int.h and win32/README.md ("Simple MAPI behaviour").
 *
 * A call runs in three steps, so that a bad argument never costs a
 * request: the caller's MapiMessage (ANSI) or MapiMessageW (UTF-16) is
 * checked and converted into a struct compose in the call's pool; the
 * attachment files are opened and sized; then, on the session,
 * recipients are resolved, large parts uploaded and the message sent or
 * saved.
 */
#include <errno.h>
#include <string.h>

#include "mapi_int.h"

#include "common/rm_error.h"

struct c_rcpt {
    ULONG cls;     /* MAPI_TO, MAPI_CC, MAPI_BCC */
    char *name;    /* UTF-8, <= BPROTO_NAME_MAX; "" none */
    char *address; /* UTF-8; NULL: resolve name */
};

struct c_file {
    const WCHAR *path;
    char *name; /* UTF-8 name shown, <= BPROTO_FILENAME_MAX */
    HANDLE h;   /* INVALID_HANDLE_VALUE until opened */
    uint64_t size;
    uint8_t *data; /* inline: the bytes (pool), len */
    size_t len;
    int inline_;
    uint64_t upload; /* uploaded: the handle */
};

struct compose {
    char *subject; /* UTF-8 */
    char *body;    /* UTF-8; NULL: none */
    size_t body_len;
    uint32_t flags;
    unsigned n_rcpts;
    struct c_rcpt *rcpts;
    unsigned n_files;
    struct c_file *files;
};

/* A caller's string (ANSI, or UTF-16 when wide) to UTF-8 in the pool. */
static int
conv(struct mapi_pool *p, int wide, const void *s, size_t max, char **out,
     size_t *len)
{
    if (wide)
        return mapi_text_wide_to_utf8(p, s, max, out, len);
    return mapi_text_acp_to_utf8(p, s, max, out, len);
}

static ULONG
rcpt_take(struct mapi_pool *p, int wide, ULONG cls, const void *name,
          const void *address, const void *eid, ULONG eidsz, struct c_rcpt *r)
{
    const char *a;
    char *u;
    int rc;

    r->cls = cls;
    rc = conv(p, wide, name, BPROTO_NAME_MAX * 4, &r->name, NULL);
    if (rc == RM_E_TOOBIG) /* a display name only: shorten it */
        rc = conv(p, wide, name, SIZE_MAX, &r->name, NULL);
    if (rc != 0)
        return mapi_err_rm(rc, MAPI_E_INVALID_RECIPS);
    if (r->name == NULL) {
        r->name = mapi_pool_alloc(p, 1);
        if (r->name == NULL)
            return MAPI_E_INSUFFICIENT_MEMORY;
    }
    mapi_text_utf8_cut(r->name, BPROTO_NAME_MAX);
    r->address = mapi_eid_address(p, eid, eidsz);
    if (r->address != NULL)
        return SUCCESS_SUCCESS;
    rc = conv(p, wide, address, BPROTO_ADDRESS_MAX + 64, &u, NULL);
    if (rc != 0)
        return mapi_err_rm(rc, MAPI_E_INVALID_RECIPS);
    a = mapi_text_strip_smtp(u);
    if (a != NULL && a[0] != '\0') {
        if (strlen(a) > BPROTO_ADDRESS_MAX)
            return MAPI_E_INVALID_RECIPS;
        r->address = (char *)a;
        return SUCCESS_SUCCESS;
    }
    if (r->name[0] == '\0')
        return MAPI_E_INVALID_RECIPS; /* neither name nor address */
    return SUCCESS_SUCCESS;
}

/* The name shown for an attachment given by path only: its base name. */
static const WCHAR *
base_name(const WCHAR *path)
{
    const WCHAR *b = path, *q;

    for (q = path; *q; q++)
        if (*q == L'\\' || *q == L'/' || *q == L':')
            b = q + 1;
    return b;
}

static ULONG
file_take(struct mapi_pool *p, int wide, const void *path, const void *fname,
          struct c_file *f)
{
    int rc;

    f->h = INVALID_HANDLE_VALUE;
    if (path == NULL)
        return MAPI_E_ATTACHMENT_NOT_FOUND;
    if (wide) {
        f->path = path;
    } else {
        WCHAR *w;

        rc = mapi_text_acp_to_wide(p, path, &w);
        if (rc != 0)
            return mapi_err_rm(rc, MAPI_E_ATTACHMENT_NOT_FOUND);
        f->path = w;
    }
    if (f->path[0] == 0)
        return MAPI_E_ATTACHMENT_NOT_FOUND;
    if (fname != NULL &&
        (wide ? ((const WCHAR *)fname)[0] != 0 : ((const char *)fname)[0]))
        rc = conv(p, wide, fname, SIZE_MAX, &f->name, NULL);
    else
        rc = mapi_text_wide_to_utf8(p, base_name(f->path), SIZE_MAX, &f->name,
                                    NULL);
    if (rc != 0)
        return mapi_err_rm(rc, MAPI_E_ATTACHMENT_NOT_FOUND);
    mapi_text_utf8_cut(f->name, BPROTO_FILENAME_MAX);
    return SUCCESS_SUCCESS;
}

static ULONG
compose_alloc(struct mapi_pool *p, struct compose *c, ULONG nr, ULONG nf)
{
    if (nr > BPROTO_RCPTS_MAX)
        return MAPI_E_TOO_MANY_RECIPIENTS;
    if (nf > BPROTO_ATTS_MAX)
        return MAPI_E_TOO_MANY_FILES;
    c->rcpts = mapi_pool_alloc(p, sizeof(*c->rcpts) * (nr ? nr : 1));
    c->files = mapi_pool_alloc(p, sizeof(*c->files) * (nf ? nf : 1));
    if (c->rcpts == NULL || c->files == NULL)
        return MAPI_E_INSUFFICIENT_MEMORY;
    return SUCCESS_SUCCESS;
}

static ULONG
compose_text(struct mapi_pool *p, int wide, const void *subject,
             const void *body, struct compose *c)
{
    int rc;

    rc = conv(p, wide, subject, BPROTO_SUBJECT_MAX, &c->subject, NULL);
    if (rc != 0)
        return mapi_err_rm(rc, MAPI_E_TEXT_TOO_LARGE);
    rc = conv(p, wide, body, SIZE_MAX, &c->body, &c->body_len);
    if (rc != 0)
        return mapi_err_rm(rc, MAPI_E_TEXT_TOO_LARGE);
    return SUCCESS_SUCCESS;
}

/* The caller's MapiMessage (ANSI), m may be NULL: an empty message. */
static ULONG
compose_from_a(struct mapi_pool *p, const MapiMessage *m, struct compose *c)
{
    ULONG i, rv;

    memset(c, 0, sizeof(*c));
    if (m == NULL)
        return compose_alloc(p, c, 0, 0);
    if (m->nRecipCount > 0 && m->lpRecips == NULL)
        return MAPI_E_INVALID_RECIPS;
    if (m->nFileCount > 0 && m->lpFiles == NULL)
        return MAPI_E_ATTACHMENT_NOT_FOUND;
    rv = compose_alloc(p, c, m->nRecipCount, m->nFileCount);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    rv = compose_text(p, 0, m->lpszSubject, m->lpszNoteText, c);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    if (m->flFlags & MAPI_RECEIPT_REQUESTED)
        c->flags |= BPROTO_FLAG_RECEIPT;
    for (i = 0; i < m->nRecipCount; i++) {
        const MapiRecipDesc *r = &m->lpRecips[i];

        if (r->ulRecipClass == MAPI_ORIG)
            continue; /* the sender is the logged-on user */
        if (r->ulRecipClass > MAPI_BCC)
            return MAPI_E_BAD_RECIPTYPE;
        rv = rcpt_take(p, 0, r->ulRecipClass, r->lpszName, r->lpszAddress,
                       r->lpEntryID, r->ulEIDSize, &c->rcpts[c->n_rcpts]);
        if (rv != SUCCESS_SUCCESS)
            return rv;
        c->n_rcpts++;
    }
    for (i = 0; i < m->nFileCount; i++) {
        const MapiFileDesc *f = &m->lpFiles[i];

        rv = file_take(p, 0, f->lpszPathName, f->lpszFileName,
                       &c->files[c->n_files]);
        if (rv != SUCCESS_SUCCESS)
            return rv;
        c->n_files++;
    }
    return SUCCESS_SUCCESS;
}

static ULONG
compose_from_w(struct mapi_pool *p, const MapiMessageW *m, struct compose *c)
{
    ULONG i, rv;

    memset(c, 0, sizeof(*c));
    if (m == NULL)
        return compose_alloc(p, c, 0, 0);
    if (m->nRecipCount > 0 && m->lpRecips == NULL)
        return MAPI_E_INVALID_RECIPS;
    if (m->nFileCount > 0 && m->lpFiles == NULL)
        return MAPI_E_ATTACHMENT_NOT_FOUND;
    rv = compose_alloc(p, c, m->nRecipCount, m->nFileCount);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    rv = compose_text(p, 1, m->lpszSubject, m->lpszNoteText, c);
    if (rv != SUCCESS_SUCCESS)
        return rv;
    if (m->flFlags & MAPI_RECEIPT_REQUESTED)
        c->flags |= BPROTO_FLAG_RECEIPT;
    for (i = 0; i < m->nRecipCount; i++) {
        const MapiRecipDescW *r = &m->lpRecips[i];

        if (r->ulRecipClass == MAPI_ORIG)
            continue;
        if (r->ulRecipClass > MAPI_BCC)
            return MAPI_E_BAD_RECIPTYPE;
        rv = rcpt_take(p, 1, r->ulRecipClass, r->lpszName, r->lpszAddress,
                       r->lpEntryID, r->ulEIDSize, &c->rcpts[c->n_rcpts]);
        if (rv != SUCCESS_SUCCESS)
            return rv;
        c->n_rcpts++;
    }
    for (i = 0; i < m->nFileCount; i++) {
        const MapiFileDescW *f = &m->lpFiles[i];

        rv = file_take(p, 1, f->lpszPathName, f->lpszFileName,
                       &c->files[c->n_files]);
        if (rv != SUCCESS_SUCCESS)
            return rv;
        c->n_files++;
    }
    return SUCCESS_SUCCESS;
}

/* ---- files ----------------------------------------------------------------
 */

static ULONG
files_open(struct compose *c)
{
    LARGE_INTEGER sz;
    unsigned i;
    DWORD e;

    for (i = 0; i < c->n_files; i++) {
        struct c_file *f = &c->files[i];

        f->h =
            CreateFileW(f->path, GENERIC_READ,
                        FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                        NULL, OPEN_EXISTING, FILE_FLAG_SEQUENTIAL_SCAN, NULL);
        if (f->h == INVALID_HANDLE_VALUE) {
            e = GetLastError();
            mapi_log("event=attachment_open_failed file=\"%s\" error=%lu",
                     f->name, (unsigned long)e);
            if (e == ERROR_FILE_NOT_FOUND || e == ERROR_PATH_NOT_FOUND ||
                e == ERROR_INVALID_NAME || e == ERROR_BAD_NETPATH ||
                e == ERROR_INVALID_DRIVE)
                return MAPI_E_ATTACHMENT_NOT_FOUND;
            return MAPI_E_ATTACHMENT_OPEN_FAILURE;
        }
        if (!GetFileSizeEx(f->h, &sz) || sz.QuadPart < 0)
            return MAPI_E_ATTACHMENT_OPEN_FAILURE;
        f->size = (uint64_t)sz.QuadPart;
        if (f->size > BPROTO_MESSAGE_MAX)
            return MAPI_E_ATTACHMENT_TOO_LARGE;
    }
    return SUCCESS_SUCCESS;
}

static void
files_close(struct compose *c)
{
    unsigned i;

    for (i = 0; i < c->n_files; i++) {
        if (c->files[i].h != INVALID_HANDLE_VALUE)
            CloseHandle(c->files[i].h);
        c->files[i].h = INVALID_HANDLE_VALUE;
    }
}

/* Up to want bytes from the file's current position; *got 0 at its end. */
static ULONG
file_read(struct c_file *f, uint8_t *buf, size_t want, size_t *got)
{
    DWORD n;

    *got = 0;
    while (*got < want) {
        DWORD ask = (DWORD)(want - *got > 0x100000 ? 0x100000 : want - *got);

        if (!ReadFile(f->h, buf + *got, ask, &n, NULL)) {
            mapi_log("event=attachment_read_failed file=\"%s\" error=%lu",
                     f->name, (unsigned long)GetLastError());
            return MAPI_E_ATTACHMENT_OPEN_FAILURE;
        }
        if (n == 0)
            break;
        *got += n;
    }
    return SUCCESS_SUCCESS;
}

/* ---- the requests ---------------------------------------------------------
 */

struct uploader {
    struct mapi_sess *s;
    uint8_t *chunk; /* BPROTO_CHUNK_MAX bytes */
    int holding;    /* an upload handle exists on this connection */
    ULONG too_big;
};

/* Upload len bytes of mem, or of the file f when mem is NULL. */
static ULONG
upload_run(struct uploader *u, const uint8_t *mem, size_t len, struct c_file *f,
           uint64_t *handle)
{
    struct bproto_req q;
    struct bproto_res res;
    uint64_t off = 0, h = 0;
    size_t n;
    ULONG rv;

    do {
        if (mem != NULL) {
            n = len - (size_t)off > BPROTO_CHUNK_MAX ? BPROTO_CHUNK_MAX
                                                     : len - (size_t)off;
            memcpy(u->chunk, mem + off, n);
        } else {
            rv = file_read(f, u->chunk, BPROTO_CHUNK_MAX, &n);
            if (rv != SUCCESS_SUCCESS)
                return rv;
            if (n == 0 && off > 0)
                break;
        }
        memset(&q, 0, sizeof(q));
        q.op = BPROTO_OP_UPLOAD;
        q.a.upload.upload = h;
        q.a.upload.offset = off;
        q.a.upload.data = u->chunk;
        q.a.upload.len = n;
        /* The first upload of a call may be repeated on a new connection;
         * once a handle exists, the connection must stay the same. */
        rv = mapi_sess_request(u->s, &q, &res,
                               u->holding ? MAPI_CALL_BOUND : MAPI_CALL_SAFE,
                               u->too_big);
        if (rv == SUCCESS_SUCCESS &&
            (res.r.upload.upload == 0 || (h != 0 && res.r.upload.upload != h) ||
             res.r.upload.size != off + n)) {
            mapi_log("event=upload_mismatch user=%s", u->s->user);
            rv = MAPI_E_FAILURE;
        }
        if (rv == SUCCESS_SUCCESS)
            h = res.r.upload.upload;
        bproto_res_cleanup(&res);
        if (rv != SUCCESS_SUCCESS)
            return rv;
        u->holding = 1;
        off += n;
    } while (mem != NULL ? off < len : n == BPROTO_CHUNK_MAX);
    *handle = h;
    return SUCCESS_SUCCESS;
}

/*
 * Resolve, upload and send (folder NULL) or save into folder (replacing
 * message replace when not 0; the new id in *saved).
 */
static ULONG
compose_run(struct mapi_sess *s, struct mapi_pool *p, struct compose *c,
            const char *folder, uint64_t replace, uint64_t *saved)
{
    struct bproto_addr *to, *cc, *bcc;
    struct bproto_att_in *atts;
    struct bproto_compose *m;
    struct bproto_req q;
    struct bproto_res res;
    struct uploader up;
    uint64_t total, body_upload = 0;
    size_t budget = BPROTO_INLINE_MAX;
    unsigned i, nto = 0, ncc = 0, nbcc = 0;
    int body_up = 0, need_upload = 0;
    ULONG rv;

    memset(&up, 0, sizeof(up));
    up.s = s;
    up.too_big =
        c->n_files ? MAPI_E_ATTACHMENT_TOO_LARGE : MAPI_E_TEXT_TOO_LARGE;

    /* Recipients given by name only: the node's directory decides. */
    for (i = 0; i < c->n_rcpts; i++) {
        struct c_rcpt *r = &c->rcpts[i];
        char *name, *address;

        if (r->address != NULL)
            continue;
        rv = mapi_resolve(s, p, r->name, &name, &address);
        if (rv != SUCCESS_SUCCESS)
            return rv;
        r->address = address;
        if (name[0] != '\0')
            r->name = name;
    }

    total = c->body_len;
    for (i = 0; i < c->n_files; i++)
        total += c->files[i].size;
    if (s->max_message != 0 && total > s->max_message) {
        mapi_log("event=message_too_big user=%s bytes=%llu max=%llu", s->user,
                 (unsigned long long)total, (unsigned long long)s->max_message);
        return up.too_big;
    }

    /* Inline what fits (the body first) and read those files now; the
     * rest is uploaded in chunks. */
    if (c->body != NULL && c->body_len <= budget)
        budget -= c->body_len;
    else if (c->body != NULL)
        need_upload = body_up = 1;
    for (i = 0; i < c->n_files; i++) {
        struct c_file *f = &c->files[i];

        if (f->size > budget) {
            need_upload = 1;
            continue;
        }
        f->inline_ = 1;
        budget -= (size_t)f->size;
        f->data = mapi_pool_alloc(p, (size_t)f->size);
        if (f->data == NULL)
            return MAPI_E_INSUFFICIENT_MEMORY;
        rv = file_read(f, f->data, (size_t)f->size, &f->len);
        if (rv != SUCCESS_SUCCESS)
            return rv;
    }
    if (need_upload) {
        up.chunk = mapi_pool_alloc(p, BPROTO_CHUNK_MAX);
        if (up.chunk == NULL)
            return MAPI_E_INSUFFICIENT_MEMORY;
    }
    if (body_up) {
        rv = upload_run(&up, (const uint8_t *)c->body, c->body_len, NULL,
                        &body_upload);
        if (rv != SUCCESS_SUCCESS)
            return rv;
    }
    for (i = 0; i < c->n_files; i++) {
        struct c_file *f = &c->files[i];

        if (f->inline_)
            continue;
        rv = upload_run(&up, NULL, 0, f, &f->upload);
        if (rv != SUCCESS_SUCCESS)
            return rv;
    }

    /* The request. */
    to = mapi_pool_alloc(p, sizeof(*to) * (c->n_rcpts ? c->n_rcpts : 1));
    cc = mapi_pool_alloc(p, sizeof(*cc) * (c->n_rcpts ? c->n_rcpts : 1));
    bcc = mapi_pool_alloc(p, sizeof(*bcc) * (c->n_rcpts ? c->n_rcpts : 1));
    atts = mapi_pool_alloc(p, sizeof(*atts) * (c->n_files ? c->n_files : 1));
    if (to == NULL || cc == NULL || bcc == NULL || atts == NULL)
        return MAPI_E_INSUFFICIENT_MEMORY;
    for (i = 0; i < c->n_rcpts; i++) {
        struct c_rcpt *r = &c->rcpts[i];
        struct bproto_addr *a = r->cls == MAPI_TO   ? &to[nto++]
                                : r->cls == MAPI_CC ? &cc[ncc++]
                                                    : &bcc[nbcc++];

        a->name = r->name;
        a->address = r->address;
    }
    for (i = 0; i < c->n_files; i++) {
        struct c_file *f = &c->files[i];

        atts[i].name = f->name;
        atts[i].type = "";
        atts[i].upload = f->inline_ ? 0 : f->upload;
        atts[i].data = f->inline_ ? f->data : NULL;
        atts[i].len = f->inline_ ? f->len : 0;
    }
    memset(&q, 0, sizeof(q));
    if (folder != NULL) {
        q.op = BPROTO_OP_SAVE;
        q.a.save.folder = folder;
        q.a.save.id = replace;
        m = &q.a.save.m;
    } else {
        q.op = BPROTO_OP_SEND;
        m = &q.a.send;
    }
    m->from = NULL;
    m->n_to = nto;
    m->n_cc = ncc;
    m->n_bcc = nbcc;
    m->to = nto ? to : NULL;
    m->cc = ncc ? cc : NULL;
    m->bcc = nbcc ? bcc : NULL;
    m->subject = c->subject;
    m->body = body_up ? NULL : c->body;
    m->body_upload = body_upload;
    m->n_atts = c->n_files;
    m->atts = c->n_files ? atts : NULL;
    m->flags = c->flags;
    rv = mapi_sess_request(
        s, &q, &res, up.holding ? MAPI_CALL_BOUND : MAPI_CALL_ONCE, up.too_big);
    if (rv == SUCCESS_SUCCESS && folder != NULL)
        *saved = res.r.save.id;
    if (rv == SUCCESS_SUCCESS && folder == NULL)
        mapi_log("event=sent user=%s message_id=%s rcpts=%u files=%u", s->user,
                 res.r.send.message_id, c->n_rcpts, c->n_files);
    bproto_res_cleanup(&res);
    return rv;
}

/* ---- exports --------------------------------------------------------------
 */

static ULONG
send_common(LHANDLE lhSession, struct mapi_pool *p, struct compose *c,
            FLAGS flFlags)
{
    struct mapi_sess *s;
    ULONG rv;

    if (c->n_rcpts == 0) {
        /* With MAPI_DIALOG the user would add recipients in the compose
         * window; there is none, so that is the user giving up. */
        return (flFlags & MAPI_DIALOG) ? MAPI_E_USER_ABORT
                                       : MAPI_E_INVALID_RECIPS;
    }
    rv = files_open(c);
    if (rv == SUCCESS_SUCCESS)
        rv = mapi_sess_enter(lhSession, &s);
    if (rv == SUCCESS_SUCCESS) {
        rv = compose_run(s, p, c, NULL, 0, NULL);
        mapi_sess_leave(s);
    }
    files_close(c);
    return rv;
}

ULONG WINAPI
MAPISendMail(LHANDLE lhSession, ULONG_PTR ulUIParam, lpMapiMessage lpMessage,
             FLAGS flFlags, ULONG ulReserved)
{
    struct mapi_pool pool;
    struct compose c;
    ULONG rv;

    (void)ulUIParam;
    (void)ulReserved;

    if (flFlags & ~(FLAGS)MAPI_FLAGS_SEND)
        return MAPI_E_FAILURE;
    mapi_pool_init(&pool);
    rv = compose_from_a(&pool, lpMessage, &c);
    if (rv == SUCCESS_SUCCESS)
        rv = send_common(lhSession, &pool, &c, flFlags);
    else if (rv == MAPI_E_INVALID_RECIPS && (flFlags & MAPI_DIALOG))
        rv = MAPI_E_USER_ABORT; /* the dialog would have let them fix it */
    files_close(&c);
    mapi_pool_cleanup(&pool);
    return rv;
}

ULONG WINAPI
MAPISendMailW(LHANDLE lhSession, ULONG_PTR ulUIParam, lpMapiMessageW lpMessage,
              FLAGS flFlags, ULONG ulReserved)
{
    struct mapi_pool pool;
    struct compose c;
    ULONG rv;

    (void)ulUIParam;
    (void)ulReserved;

    if (flFlags & ~(FLAGS)MAPI_FLAGS_SEND)
        return MAPI_E_FAILURE;
    mapi_pool_init(&pool);
    rv = compose_from_w(&pool, lpMessage, &c);
    if (rv == SUCCESS_SUCCESS)
        rv = send_common(lhSession, &pool, &c, flFlags);
    else if (rv == MAPI_E_INVALID_RECIPS && (flFlags & MAPI_DIALOG))
        rv = MAPI_E_USER_ABORT;
    files_close(&c);
    mapi_pool_cleanup(&pool);
    return rv;
}

/* Save c in the session's Drafts folder; *id (the caller's string, may be
 * "") names the draft it replaces and receives the new id. */
static ULONG
save_draft(struct mapi_sess *s, struct mapi_pool *p, struct compose *c,
           const char *old_id, char *new_id)
{
    unsigned folder;
    uint64_t replace = 0, saved = 0;
    ULONG rv;

    if (s->drafts < 0) {
        mapi_log("event=save_failed user=%s why=\"the node listed no Drafts "
                 "folder\"",
                 s->user);
        return MAPI_E_FAILURE;
    }
    if (old_id != NULL && old_id[0] != '\0') {
        if (mapi_id_parse(s, old_id, &folder, &replace) != 0 ||
            folder != (unsigned)s->drafts)
            return MAPI_E_INVALID_MESSAGE;
    }
    rv = compose_run(s, p, c, s->folders[s->drafts].id, replace, &saved);
    if (rv == SUCCESS_SUCCESS && new_id != NULL)
        mapi_id_format(new_id, (unsigned)s->drafts, saved);
    return rv;
}

ULONG WINAPI
MAPISaveMail(LHANDLE lhSession, ULONG_PTR ulUIParam, lpMapiMessage lpMessage,
             FLAGS flFlags, ULONG ulReserved, LPSTR lpszMessageID)
{
    struct mapi_pool pool;
    struct mapi_sess *s;
    struct compose c;
    char id[MAPI_ID_MAX], old[MAPI_ID_MAX + 1];
    size_t n;
    ULONG rv;

    (void)ulUIParam;
    (void)ulReserved;

    if (lpMessage == NULL || lpszMessageID == NULL ||
        (flFlags & ~(FLAGS)MAPI_FLAGS_SAVE))
        return MAPI_E_FAILURE;
    n = strnlen(lpszMessageID, MAPI_ID_MAX + 1);
    if (n > MAPI_ID_MAX)
        return MAPI_E_INVALID_MESSAGE;
    memcpy(old, lpszMessageID, n);
    old[n] = '\0';
    mapi_pool_init(&pool);
    rv = compose_from_a(&pool, lpMessage, &c);
    if (rv == SUCCESS_SUCCESS)
        rv = files_open(&c);
    if (rv == SUCCESS_SUCCESS) {
        rv = mapi_sess_enter(lhSession, &s);
        if (rv == SUCCESS_SUCCESS) {
            rv = save_draft(s, &pool, &c, old, id);
            mapi_sess_leave(s);
        }
    }
    if (rv == SUCCESS_SUCCESS)
        memcpy(lpszMessageID, id, strlen(id) + 1);
    files_close(&c);
    mapi_pool_cleanup(&pool);
    return rv;
}

/* The n-th field of list (fields separated by delim) into the pool:
 * 0, -ENOMEM, or RM_E_NOTFOUND past the last field (or list NULL). */
static int
field(struct mapi_pool *p, const char *list, char delim, unsigned n, char **out)
{
    const char *b = list, *e;

    *out = NULL;
    if (list == NULL)
        return RM_E_NOTFOUND;
    for (;;) {
        e = strchr(b, delim);
        if (n == 0)
            break;
        if (e == NULL)
            return RM_E_NOTFOUND;
        b = e + 1;
        n--;
    }
    *out = mapi_pool_strndup(p, b, e ? (size_t)(e - b) : strlen(b));
    return *out ? 0 : -ENOMEM;
}

ULONG WINAPI
MAPISendDocuments(ULONG_PTR ulUIParam, LPSTR lpszDelimChar, LPSTR lpszFilePaths,
                  LPSTR lpszFileNames, ULONG ulReserved)
{
    struct mapi_pool pool;
    struct mapi_sess *s;
    struct compose c;
    char delim = ';';
    const char *q;
    unsigned n = 0, i;
    ULONG rv;

    (void)ulUIParam;
    (void)ulReserved;

    /* Without UI the documents go into a new draft in Drafts, for the user
     * to address and send from their mail program. */
    if (lpszDelimChar != NULL && lpszDelimChar[0] != '\0')
        delim = lpszDelimChar[0];
    if (lpszFilePaths == NULL || lpszFilePaths[0] == '\0')
        return MAPI_E_USER_ABORT; /* an empty compose window, closed */
    for (q = lpszFilePaths; q != NULL; n++) {
        if (n >= BPROTO_ATTS_MAX)
            return MAPI_E_TOO_MANY_FILES;
        q = strchr(q, delim);
        if (q != NULL)
            q++;
    }

    mapi_pool_init(&pool);
    memset(&c, 0, sizeof(c));
    rv = compose_alloc(&pool, &c, 0, n);
    for (i = 0; rv == SUCCESS_SUCCESS && i < n; i++) {
        char *path = NULL, *name = NULL;
        int rc;

        rc = field(&pool, lpszFilePaths, delim, i, &path);
        if (rc == 0)
            rc = field(&pool, lpszFileNames, delim, i, &name);
        if (rc == -ENOMEM) {
            rv = MAPI_E_INSUFFICIENT_MEMORY;
            break;
        }
        if (path == NULL || path[0] == '\0')
            continue; /* "a;;b" */
        rv = file_take(&pool, 0, path, name, &c.files[c.n_files]);
        if (rv == SUCCESS_SUCCESS)
            c.n_files++;
    }
    if (rv == SUCCESS_SUCCESS && c.n_files == 0)
        rv = MAPI_E_USER_ABORT; /* only empty paths: nothing to send */
    if (rv == SUCCESS_SUCCESS)
        rv = compose_text(&pool, 0, "", NULL, &c);
    if (rv == SUCCESS_SUCCESS)
        rv = files_open(&c);
    if (rv == SUCCESS_SUCCESS) {
        rv = mapi_sess_enter(0, &s);
        if (rv == SUCCESS_SUCCESS) {
            rv = save_draft(s, &pool, &c, NULL, NULL);
            mapi_sess_leave(s);
        }
    }
    files_close(&c);
    mapi_pool_cleanup(&pool);
    return rv;
}
