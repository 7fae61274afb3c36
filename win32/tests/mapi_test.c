/*
 * mapi_test: drives relaymesh-mapi.dll the way a Windows program does, one
 * case per run, for tests/integration/test_mapi_wine.py (under Wine).
 *
 *   mapi_test.exe MODE CASE [--key=value ...] [ARGS...]
 *
 * MODE is "direct:C:\path\to\relaymesh-mapi.dll" (LoadLibrary of the DLL
 * itself) or "mapi32" (the system's mapi32.dll, which forwards to the
 * default mail client registered under HKLM\Software\Clients\Mail). Nothing
 * of relaymesh is linked in: every function comes from GetProcAddress.
 *
 * Options: --profile=ADDR --password=PW (MAPILogon's profile name and
 * password; without them the DLL's own configuration is used, e.g. the
 * RELAYMESH_MAPI_* environment), --subject=TEXT (delete: the message to
 * delete), --expect-details=N, --expect-address=N (resolve).
 *
 * Cases (each says below what it expects): send_ansi FILE1 FILE2,
 * send_unicode FILE, read, save FILE, delete, resolve, wrong_password,
 * node_down, wrong_fingerprint, oversized FILE..., invalid_args FILE,
 * free_through_mapi32 (mapi32 mode), fault_injection FILE (direct mode),
 * send_documents FILE1 FILE2, no_ui, logon_ui.
 *
 * Output: one event per line, "key=value" pairs; text that may be
 * non-ASCII is printed as "x" + hex of its UTF-8 bytes ("-" for NULL).
 * "FAIL what" lines say what differed from the case's expectation.
 * Exit status: 0 the calls behaved as expected, 1 something differed,
 * 2 bad usage or setup (DLL not loadable, export missing), 99 a crash
 * (an unhandled exception or abort inside the process).
 */
#include <windows.h>
#include <wincrypt.h>
#include <shellapi.h>

#include <fcntl.h>
#include <io.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef RM_WINE_MAPI_H
#define RM_WINE_MAPI_H "/usr/include/wine/wine/windows/mapi.h"
#endif
#include "mapi_compat.h"

#define T_MAX_IDS 1000
#define T_MAX_POS 16
#define T_GUARD 32 /* canary bytes after every message id buffer */
#define T_FAULT_MAX 20000

/* ---- the API under test -------------------------------------------------- */

struct t_api {
    HMODULE mod;
    int direct;
    LPMAPILOGON Logon;
    LPMAPILOGOFF Logoff;
    LPMAPISENDMAIL SendMail;
    LPMAPISENDMAILW SendMailW;
    LPMAPISENDDOCUMENTS SendDocuments;
    LPMAPIFINDNEXT FindNext;
    LPMAPIREADMAIL ReadMail;
    LPMAPISAVEMAIL SaveMail;
    LPMAPIDELETEMAIL DeleteMail;
    LPMAPIFREEBUFFER FreeBuffer;
    LPMAPIADDRESS Address;
    LPMAPIDETAILS Details;
    LPMAPIRESOLVENAME ResolveName;
    LPRELAYMESHFAULTINJECT FaultInject;
};

struct t_opts {
    char *profile;  /* ACP, NULL when not given */
    char *password; /* ACP */
    char *subject;  /* ACP */
    long expect_details;
    long expect_address;
    int npos;
    WCHAR *pos[T_MAX_POS];
};

static struct t_api A;
static struct t_opts O;
static int t_failures;

/* ---- crash reporting ----------------------------------------------------- */

static void
t_crash(const char *what, DWORD code, void *addr)
{
    char line[256];
    DWORD n;
    HMODULE m = NULL;
    char mod[MAX_PATH] = "?";

    if (addr != NULL &&
        GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS |
                               GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                           (LPCSTR)addr, &m))
        GetModuleFileNameA(m, mod, sizeof mod);
    snprintf(line, sizeof line, "\nCRASH what=%s code=0x%08lx addr=%p in=%s\n",
             what, (unsigned long)code, addr, mod);
    fflush(stdout);
    WriteFile(GetStdHandle(STD_OUTPUT_HANDLE), line, (DWORD)strlen(line), &n,
              NULL);
    TerminateProcess(GetCurrentProcess(), 99);
}

static LONG WINAPI
t_unhandled(EXCEPTION_POINTERS *ep)
{
    t_crash("unhandled", ep->ExceptionRecord->ExceptionCode,
            ep->ExceptionRecord->ExceptionAddress);
    return EXCEPTION_EXECUTE_HANDLER;
}

/* First-chance exceptions: a library may handle an access violation itself
 * (probing memory), so only those that can never be survived end the run
 * here; the rest reach t_unhandled when nobody handles them. */
static LONG WINAPI
t_vectored(EXCEPTION_POINTERS *ep)
{
    DWORD code = ep->ExceptionRecord->ExceptionCode;

    if (code == STATUS_STACK_OVERFLOW || code == 0xC0000409 /* fast fail */
        || code == 0xC0000374 /* heap corruption */)
        t_crash("fatal", code, ep->ExceptionRecord->ExceptionAddress);
    return EXCEPTION_CONTINUE_SEARCH;
}

static void
t_on_abort(int sig)
{
    t_crash("abort", (DWORD)sig, NULL);
}

static void
t_install_crash_handlers(void)
{
    SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX |
                 SEM_NOOPENFILEERRORBOX);
    SetUnhandledExceptionFilter(t_unhandled);
    AddVectoredExceptionHandler(1, t_vectored);
    signal(SIGABRT, t_on_abort);
}

/* ---- output -------------------------------------------------------------- */

static const char *const t_rc_names[] = {
    "SUCCESS_SUCCESS",
    "MAPI_E_USER_ABORT",
    "MAPI_E_FAILURE",
    "MAPI_E_LOGIN_FAILURE",
    "MAPI_E_DISK_FULL",
    "MAPI_E_INSUFFICIENT_MEMORY",
    "MAPI_E_ACCESS_DENIED",
    "7",
    "MAPI_E_TOO_MANY_SESSIONS",
    "MAPI_E_TOO_MANY_FILES",
    "MAPI_E_TOO_MANY_RECIPIENTS",
    "MAPI_E_ATTACHMENT_NOT_FOUND",
    "MAPI_E_ATTACHMENT_OPEN_FAILURE",
    "MAPI_E_ATTACHMENT_WRITE_FAILURE",
    "MAPI_E_UNKNOWN_RECIPIENT",
    "MAPI_E_BAD_RECIPTYPE",
    "MAPI_E_NO_MESSAGES",
    "MAPI_E_INVALID_MESSAGE",
    "MAPI_E_TEXT_TOO_LARGE",
    "MAPI_E_INVALID_SESSION",
    "MAPI_E_TYPE_NOT_SUPPORTED",
    "MAPI_E_AMBIGUOUS_RECIPIENT",
    "MAPI_E_MESSAGE_IN_USE",
    "MAPI_E_NETWORK_FAILURE",
    "MAPI_E_INVALID_EDITFIELDS",
    "MAPI_E_INVALID_RECIPS",
    "MAPI_E_NOT_SUPPORTED",
    "MAPI_E_UNICODE_NOT_SUPPORTED",
    "MAPI_E_ATTACHMENT_TOO_LARGE",
};

static const char *
t_rc_name(ULONG rc)
{
    if (rc < sizeof t_rc_names / sizeof t_rc_names[0])
        return t_rc_names[rc];
    return "NOT_A_MAPI_CODE";
}

/* A code Simple MAPI defines (SUCCESS_SUCCESS .. MAPI_E_ATTACHMENT_TOO_LARGE,
 * 7 being unassigned). */
static int
t_is_mapi_code(ULONG rc)
{
    return rc <= MAPI_E_ATTACHMENT_TOO_LARGE && rc != 7;
}

static void
t_fail(const char *fmt, ...)
{
    va_list ap;

    t_failures++;
    fputs("FAIL ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
}

static void
t_put_hex(const char *key, const void *p, size_t n)
{
    const unsigned char *b = p;

    printf(" %s=", key);
    if (p == NULL) {
        fputc('-', stdout);
        return;
    }
    fputc('x', stdout);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
}

/* Converts between code pages; NULL stays NULL. Returns a malloc'd string
 * or NULL (also when a character has no equivalent and strict is set). */
static WCHAR *
t_to_wide(const char *s, UINT cp)
{
    int n;
    WCHAR *w;

    if (s == NULL)
        return NULL;
    n = MultiByteToWideChar(cp, 0, s, -1, NULL, 0);
    if (n <= 0)
        return NULL;
    w = malloc((size_t)n * sizeof(WCHAR));
    if (w == NULL)
        return NULL;
    MultiByteToWideChar(cp, 0, s, -1, w, n);
    return w;
}

static char *
t_from_wide(const WCHAR *w, UINT cp, int strict)
{
    BOOL lossy = FALSE;
    BOOL *plossy = cp == CP_UTF8 ? NULL : &lossy;
    DWORD fl = cp == CP_UTF8 ? 0 : WC_NO_BEST_FIT_CHARS;
    int n;
    char *s;

    if (w == NULL)
        return NULL;
    n = WideCharToMultiByte(cp, fl, w, -1, NULL, 0, NULL, plossy);
    if (n <= 0 || (strict && lossy))
        return NULL;
    s = malloc((size_t)n);
    if (s == NULL)
        return NULL;
    WideCharToMultiByte(cp, fl, w, -1, s, n, NULL, plossy);
    return s;
}

/* An ANSI string (the process code page) printed as UTF-8 hex. */
static void
t_put_acp(const char *key, const char *s)
{
    WCHAR *w;
    char *u;

    if (s == NULL) {
        t_put_hex(key, NULL, 0);
        return;
    }
    w = t_to_wide(s, CP_ACP);
    u = t_from_wide(w, CP_UTF8, 0);
    if (u != NULL)
        t_put_hex(key, u, strlen(u));
    else
        printf(" %s=?", key);
    free(u);
    free(w);
}

static void
t_put_wide(const char *key, const WCHAR *s)
{
    char *u = t_from_wide(s, CP_UTF8, 0);

    if (s == NULL)
        t_put_hex(key, NULL, 0);
    else if (u != NULL)
        t_put_hex(key, u, strlen(u));
    else
        printf(" %s=?", key);
    free(u);
}

/* A message id as text when it is printable ASCII, else as hex. */
static void
t_put_id(const char *key, const char *id)
{
    size_t n = id != NULL ? strlen(id) : 0;

    for (size_t i = 0; i < n; i++) {
        if (id[i] <= ' ' || id[i] > '~' || id[i] == ',') {
            t_put_hex(key, id, n);
            return;
        }
    }
    printf(" %s=%s", key, id != NULL ? id : "-");
}

static void
t_put_rc(const char *call, ULONG rc)
{
    printf("call=%s rc=%lu name=%s\n", call, (unsigned long)rc, t_rc_name(rc));
}

/* The call returned want: say so; else a FAIL line. Returns 1 when equal. */
static int
t_want(const char *call, ULONG rc, ULONG want)
{
    t_put_rc(call, rc);
    if (rc == want)
        return 1;
    t_fail("%s returned %lu (%s), expected %lu (%s)", call, (unsigned long)rc,
           t_rc_name(rc), (unsigned long)want, t_rc_name(want));
    return 0;
}

/* The call failed with a Simple MAPI error code (any). */
static int
t_want_error(const char *call, ULONG rc)
{
    t_put_rc(call, rc);
    if (rc != SUCCESS_SUCCESS && t_is_mapi_code(rc))
        return 1;
    t_fail("%s returned %lu (%s), expected an error code", call,
           (unsigned long)rc, t_rc_name(rc));
    return 0;
}

/* ---- files --------------------------------------------------------------- */

/* SHA-256 and size of a file (CryptoAPI). 0 on success. */
static int
t_file_sha256(const char *path, char hex[65], unsigned long long *size)
{
    HCRYPTPROV prov = 0;
    HCRYPTHASH hash = 0;
    HANDLE f;
    BYTE buf[65536], dig[32];
    DWORD got, dlen = sizeof dig;
    int rc = -1;

    *size = 0;
    f = CreateFileA(path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                    FILE_ATTRIBUTE_NORMAL, NULL);
    if (f == INVALID_HANDLE_VALUE)
        return -1;
    if (!CryptAcquireContextW(&prov, NULL, NULL, PROV_RSA_AES,
                              CRYPT_VERIFYCONTEXT) ||
        !CryptCreateHash(prov, CALG_SHA_256, 0, 0, &hash))
        goto out;
    for (;;) {
        if (!ReadFile(f, buf, sizeof buf, &got, NULL))
            goto out;
        if (got == 0)
            break;
        if (!CryptHashData(hash, buf, got, 0))
            goto out;
        *size += got;
    }
    if (!CryptGetHashParam(hash, HP_HASHVAL, dig, &dlen, 0) || dlen != 32)
        goto out;
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    rc = 0;
out:
    if (hash)
        CryptDestroyHash(hash);
    if (prov)
        CryptReleaseContext(prov, 0);
    CloseHandle(f);
    return rc;
}

/* A small file's bytes as " key=x<hex>". */
static void
t_put_file(const char *key, const char *path)
{
    static unsigned char buf[65536];
    DWORD got = 0;
    HANDLE f = CreateFileA(path, GENERIC_READ, FILE_SHARE_READ, NULL,
                           OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);

    if (f == INVALID_HANDLE_VALUE) {
        t_put_hex(key, NULL, 0);
        return;
    }
    if (!ReadFile(f, buf, sizeof buf, &got, NULL))
        got = 0;
    CloseHandle(f);
    t_put_hex(key, buf, got);
}

/* ---- loading ------------------------------------------------------------- */

static void (*t_sym(const char *name))(void)
{
    return (void (*)(void))GetProcAddress(A.mod, name);
}

static int
t_load(const WCHAR *mode)
{
    int missing = 0;

    if (wcsncmp(mode, L"direct:", 7) == 0) {
        A.direct = 1;
        A.mod = LoadLibraryExW(mode + 7, NULL, LOAD_WITH_ALTERED_SEARCH_PATH);
    } else if (wcscmp(mode, L"mapi32") == 0) {
        A.mod = LoadLibraryW(L"mapi32.dll");
    } else {
        printf("FAIL usage: MODE must be direct:PATH or mapi32\n");
        return 2;
    }
    if (A.mod == NULL) {
        printf("FAIL load: LoadLibrary error=%lu\n",
               (unsigned long)GetLastError());
        return 2;
    }
#define T_GET(field, type, name)                                               \
    do {                                                                       \
        A.field = (type)t_sym(name);                                           \
        if (A.field == NULL) {                                                 \
            printf("missing=%s\n", name);                                      \
            missing++;                                                         \
        }                                                                      \
    } while (0)
    T_GET(Logon, LPMAPILOGON, "MAPILogon");
    T_GET(Logoff, LPMAPILOGOFF, "MAPILogoff");
    T_GET(SendMail, LPMAPISENDMAIL, "MAPISendMail");
    T_GET(SendMailW, LPMAPISENDMAILW, "MAPISendMailW");
    T_GET(SendDocuments, LPMAPISENDDOCUMENTS, "MAPISendDocuments");
    T_GET(FindNext, LPMAPIFINDNEXT, "MAPIFindNext");
    T_GET(ReadMail, LPMAPIREADMAIL, "MAPIReadMail");
    T_GET(SaveMail, LPMAPISAVEMAIL, "MAPISaveMail");
    T_GET(DeleteMail, LPMAPIDELETEMAIL, "MAPIDeleteMail");
    T_GET(FreeBuffer, LPMAPIFREEBUFFER, "MAPIFreeBuffer");
    T_GET(Address, LPMAPIADDRESS, "MAPIAddress");
    T_GET(Details, LPMAPIDETAILS, "MAPIDetails");
    T_GET(ResolveName, LPMAPIRESOLVENAME, "MAPIResolveName");
#undef T_GET
    A.FaultInject = (LPRELAYMESHFAULTINJECT)t_sym("RelaymeshFaultInject");
    printf("loaded mode=%s acp=%u missing=%d fault_inject=%d\n",
           A.direct ? "direct" : "mapi32", GetACP(), missing,
           A.FaultInject != NULL);
    if (missing) {
        printf("FAIL load: %d Simple MAPI exports missing\n", missing);
        return 2;
    }
    return 0;
}

/* Through mapi32, the first call must have reached our DLL. */
static void
t_check_provider(void)
{
    int loaded;

    if (A.direct)
        return;
    loaded = GetModuleHandleW(L"relaymesh-mapi.dll") != NULL;
    printf("provider_loaded=%d\n", loaded);
    if (!loaded)
        t_fail("mapi32 did not load relaymesh-mapi.dll (not registered as "
               "the default mail client?)");
}

/* ---- building blocks ----------------------------------------------------- */

static char *
t_acp_strict(const WCHAR *w, const char *what)
{
    char *s = t_from_wide(w, CP_ACP, 1);

    if (s == NULL) {
        printf("FAIL setup: %s is not representable in code page %u\n", what,
               GetACP());
        exit(2);
    }
    return s;
}

static char *
t_pos_acp(int i)
{
    if (i >= O.npos) {
        printf("FAIL usage: argument %d missing\n", i + 1);
        exit(2);
    }
    return t_acp_strict(O.pos[i], "an argument");
}

static ULONG
t_logon(LHANDLE *h, FLAGS fl)
{
    ULONG rc;

    *h = 0;
    rc = A.Logon(0, O.profile, O.password, fl, 0, h);
    t_put_rc("MAPILogon", rc);
    t_check_provider();
    if (rc == SUCCESS_SUCCESS && *h == 0)
        t_fail("MAPILogon succeeded with a null session handle");
    return rc;
}

static void
t_logoff(LHANDLE h)
{
    t_want("MAPILogoff", A.Logoff(h, 0, 0, 0), SUCCESS_SUCCESS);
}

/* Walks the Inbox with MAPIFindNext. same_buf: the seed buffer is also the
 * output buffer (as many programs call it). Every id buffer is the
 * documented minimum of 64 characters followed by a canary. Returns 1 and
 * the ids, or 0 after a FAIL line. */
static int
t_walk(LHANDLE h, FLAGS fl, int same_buf, char ids[][MAPI_MSGID_SHORT], int *n,
       const char *tag)
{
    char seed[MAPI_MSGID_SHORT + T_GUARD], out[MAPI_MSGID_SHORT + T_GUARD];

    *n = 0;
    memset(seed, 0x5a, sizeof seed);
    seed[0] = '\0';
    for (;;) {
        ULONG rc;
        char *got;

        memset(out, 0x5a, sizeof out);
        if (same_buf) {
            rc = A.FindNext(h, 0, NULL, seed, fl, 0, seed);
            got = seed;
        } else {
            rc = A.FindNext(h, 0, NULL, *n ? seed : NULL, fl, 0, out);
            got = out;
        }
        for (int i = MAPI_MSGID_SHORT; i < MAPI_MSGID_SHORT + T_GUARD; i++) {
            if (seed[i] != 0x5a || out[i] != 0x5a) {
                t_fail("MAPIFindNext wrote past the 64-character id buffer");
                return 0;
            }
        }
        if (rc == MAPI_E_NO_MESSAGES)
            break;
        if (rc != SUCCESS_SUCCESS) {
            t_put_rc("MAPIFindNext", rc);
            t_fail("MAPIFindNext (%s) returned %lu (%s)", tag,
                   (unsigned long)rc, t_rc_name(rc));
            return 0;
        }
        if (memchr(got, '\0', MAPI_MSGID_SHORT) == NULL || got[0] == '\0') {
            t_fail("MAPIFindNext returned an empty or unterminated id");
            return 0;
        }
        for (int i = 0; i < *n; i++) {
            if (strcmp(ids[i], got) == 0) {
                t_fail("MAPIFindNext returned id %s twice", got);
                return 0;
            }
        }
        if (*n >= T_MAX_IDS) {
            t_fail("MAPIFindNext never ends");
            return 0;
        }
        strcpy(ids[(*n)++], got);
        if (!same_buf)
            strcpy(seed, got);
    }
    printf("find tag=%s flags=0x%lx count=%d", tag, (unsigned long)fl, *n);
    for (int i = 0; i < *n; i++) {
        char key[16];

        snprintf(key, sizeof key, "id%d", i);
        t_put_id(key, ids[i]);
    }
    printf("\n");
    return 1;
}

static int
t_in(char ids[][MAPI_MSGID_SHORT], int n, const char *id)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(ids[i], id) == 0)
            return 1;
    }
    return 0;
}

/* What one MAPIReadMail gave. */
struct t_read {
    ULONG rc;
    ULONG flags;
    int has_text;
    ULONG nfiles;
    char sha[8][65];
    unsigned long long size[8];
    char subject[512]; /* ACP */
};

/* Prints a recipient line. */
static void
t_put_recip(const char *tag, const MapiRecipDesc *r)
{
    printf("%s class=%lu", tag, (unsigned long)r->ulRecipClass);
    t_put_acp("name", r->lpszName);
    t_put_acp("addr", r->lpszAddress);
    printf(" eid_size=%lu\n", (unsigned long)r->ulEIDSize);
}

/* MAPIReadMail, checks what the flags promise, prints the message, hashes
 * and removes the attachment files, frees the buffer. */
static void
t_read(LHANDLE h, const char *id, FLAGS fl, const char *tag, struct t_read *ri)
{
    lpMapiMessage m = NULL;
    char call[64];
    int envelope = (fl & MAPI_ENVELOPE_ONLY) != 0;
    int nofiles = envelope || (fl & MAPI_SUPPRESS_ATTACH) != 0;

    memset(ri, 0, sizeof *ri);
    snprintf(call, sizeof call, "MAPIReadMail/%s", tag);
    ri->rc = A.ReadMail(h, 0, (LPSTR)id, fl, 0, &m);
    t_put_rc(call, ri->rc);
    if (ri->rc != SUCCESS_SUCCESS) {
        t_fail("%s of %s returned %lu (%s)", call, id, (unsigned long)ri->rc,
               t_rc_name(ri->rc));
        return;
    }
    if (m == NULL) {
        t_fail("%s succeeded without a message", call);
        return;
    }
    ri->flags = m->flFlags;
    ri->nfiles = m->nFileCount;
    ri->has_text = m->lpszNoteText != NULL && m->lpszNoteText[0] != '\0';
    if (m->lpszSubject != NULL)
        snprintf(ri->subject, sizeof ri->subject, "%s", m->lpszSubject);
    printf("msg tag=%s", tag);
    t_put_id("id", id);
    printf(" flags=0x%lx unread=%d", (unsigned long)m->flFlags,
           (m->flFlags & MAPI_UNREAD) != 0);
    t_put_acp("subject", m->lpszSubject);
    t_put_acp("date", m->lpszDateReceived);
    t_put_acp("type", m->lpszMessageType);
    t_put_acp("body", m->lpszNoteText);
    printf(" nrecips=%lu nfiles=%lu\n", (unsigned long)m->nRecipCount,
           (unsigned long)m->nFileCount);
    if (m->lpOriginator != NULL)
        t_put_recip("orig", m->lpOriginator);
    if (m->nRecipCount > 0 && m->lpRecips == NULL)
        t_fail("%s: nRecipCount %lu with no lpRecips", call,
               (unsigned long)m->nRecipCount);
    for (ULONG i = 0; m->lpRecips != NULL && i < m->nRecipCount && i < 300; i++)
        t_put_recip("recip", &m->lpRecips[i]);
    if (envelope && ri->has_text)
        t_fail("%s: MAPI_ENVELOPE_ONLY but the message text was written", call);
    if (m->nFileCount > 0 && m->lpFiles == NULL)
        t_fail("%s: nFileCount %lu with no lpFiles", call,
               (unsigned long)m->nFileCount);
    for (ULONG i = 0; m->lpFiles != NULL && i < m->nFileCount && i < 120; i++) {
        const MapiFileDesc *f = &m->lpFiles[i];
        int has_path = f->lpszPathName != NULL && f->lpszPathName[0] != '\0';
        char hex[65] = "-";
        unsigned long long size = 0;

        printf("file tag=%s index=%lu", tag, (unsigned long)i);
        t_put_acp("name", f->lpszFileName);
        printf(" has_path=%d", has_path);
        if (nofiles && has_path) {
            printf("\n");
            t_fail("%s: attachment %lu written to %s despite the flags", call,
                   (unsigned long)i, f->lpszPathName);
            DeleteFileA(f->lpszPathName);
            continue;
        }
        if (!nofiles && !has_path) {
            printf("\n");
            t_fail("%s: attachment %lu has no file", call, (unsigned long)i);
            continue;
        }
        if (has_path && i == 0 && (fl & MAPI_BODY_AS_FILE))
            t_put_file("content", f->lpszPathName);
        if (has_path) {
            if (t_file_sha256(f->lpszPathName, hex, &size) != 0) {
                printf("\n");
                t_fail("%s: attachment file %s cannot be read", call,
                       f->lpszPathName);
                continue;
            }
            /* the caller owns the temporary file */
            if (!DeleteFileA(f->lpszPathName))
                t_fail("%s: cannot delete attachment file %s", call,
                       f->lpszPathName);
        }
        printf(" size=%llu sha256=%s\n", size, hex);
        if (i < 8) {
            memcpy(ri->sha[i], hex, sizeof hex);
            ri->size[i] = size;
        }
    }
    t_want("MAPIFreeBuffer", A.FreeBuffer(m), SUCCESS_SUCCESS);
}

static int
t_heap_valid(void)
{
    int ok = HeapValidate(GetProcessHeap(), 0, NULL) != 0;

    printf("heap_valid=%d\n", ok);
    if (!ok)
        t_fail("the process heap is corrupt");
    return ok;
}

/* Bytes in busy blocks of the process heap (where MAPI buffers live). */
static unsigned long long
t_heap_busy(void)
{
    PROCESS_HEAP_ENTRY e;
    HANDLE hp = GetProcessHeap();
    unsigned long long total = 0;

    memset(&e, 0, sizeof e);
    HeapLock(hp);
    while (HeapWalk(hp, &e)) {
        if (e.wFlags & PROCESS_HEAP_ENTRY_BUSY)
            total += e.cbData;
    }
    HeapUnlock(hp);
    return total;
}

/* ---- the texts sent (the Python side has the same ones) ------------------ */

/* In code page 1252 (Wine's default ANSI code page). */
static const WCHAR T_ANSI_SUBJECT[] =
    L"Gr\u00fc\u00dfe aus K\u00f6ln \u2013 Preis 5 \u20ac, caf\u00e9";
static const WCHAR T_ANSI_BODY[] =
    L"Hallo Bob,\r\n\r\nder Kaffee im Caf\u00e9 kostet 5 \u20ac \u2013 "
    L"\u00fcbrigens g\u00fcnstig.\r\nGr\u00fc\u00dfe, Alice\r\n";
static const WCHAR T_ANSI_FILE2[] = L"Daten-\u00fc.bin";

static const WCHAR T_W_SUBJECT[] =
    L"\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u4e16\u754c "
    L"\U0001F30D \u00fc";
static const WCHAR T_W_BODY[] =
    L"\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u2014 "
    L"\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \U0001F600\r\n"
    L"zweite Zeile \u00e9\u20ac\r\n";
static const WCHAR T_W_PATHNAME[] = L"\u6587\u4ef6-\u03b1\u03b2\u03b3.txt";
static const WCHAR T_W_FILENAME[] =
    L"\u5831\u544a-\u00e9t\u00e9-\U0001F4CE.txt";
static const WCHAR T_W_TONAME[] = L"B\u00f6b";

/* ---- cases --------------------------------------------------------------- */

/* MAPISendMail: two TO (one given by name only, resolved by the DLL), one CC
 * (with the customary "SMTP:" prefix), ANSI subject and body, two
 * attachments (ARG1 under its own name, ARG2 renamed). */
static int
case_send_ansi(void)
{
    LHANDLE h;
    MapiRecipDesc r[3];
    MapiFileDesc f[2];
    MapiMessage msg;
    char *subject = t_acp_strict(T_ANSI_SUBJECT, "the subject");
    char *body = t_acp_strict(T_ANSI_BODY, "the body");
    char *name2 = t_acp_strict(T_ANSI_FILE2, "the file name");
    char *p1 = t_pos_acp(0), *p2 = t_pos_acp(1);

    if (t_logon(&h, 0) != SUCCESS_SUCCESS) {
        t_fail("MAPILogon failed");
        return 1;
    }
    memset(r, 0, sizeof r);
    r[0].ulRecipClass = MAPI_TO;
    r[0].lpszName = "Bob";
    r[0].lpszAddress = "bob@localhost";
    r[1].ulRecipClass = MAPI_TO;
    r[1].lpszName = "carol@localhost";
    r[2].ulRecipClass = MAPI_CC;
    r[2].lpszName = "Alicia";
    r[2].lpszAddress = "SMTP:alicia@localhost";
    memset(f, 0, sizeof f);
    f[0].nPosition = (ULONG)-1;
    f[0].lpszPathName = p1;
    f[1].nPosition = (ULONG)-1;
    f[1].lpszPathName = p2;
    f[1].lpszFileName = name2;
    memset(&msg, 0, sizeof msg);
    msg.lpszSubject = subject;
    msg.lpszNoteText = body;
    msg.nRecipCount = 3;
    msg.lpRecips = r;
    msg.nFileCount = 2;
    msg.lpFiles = f;
    t_want("MAPISendMail", A.SendMail(h, 0, &msg, 0, 0), SUCCESS_SUCCESS);
    printf("sent");
    t_put_acp("subject", subject);
    t_put_acp("body", body);
    printf("\n");
    t_logoff(h);
    t_heap_valid();
    return t_failures != 0;
}

/* MAPISendMailW with an implicit session (lhSession 0: the DLL logs on with
 * its configuration): Greek, CJK and emoji in subject, body, recipient
 * name and the attachment's name; the file itself has a Unicode path. */
static int
case_send_unicode(void)
{
    MapiRecipDescW r;
    MapiFileDescW f;
    MapiMessageW msg;
    WCHAR dir[MAX_PATH], path[MAX_PATH * 2];

    if (O.npos < 1) {
        printf("FAIL usage: send_unicode FILE\n");
        return 2;
    }
    GetTempPathW(MAX_PATH, dir);
    swprintf(path, sizeof path / sizeof path[0], L"%lsrmtest-%lu", dir,
             (unsigned long)GetCurrentProcessId());
    CreateDirectoryW(path, NULL);
    wcscat(path, L"\\");
    wcscat(path, T_W_PATHNAME);
    if (!CopyFileW(O.pos[0], path, FALSE)) {
        printf("FAIL setup: cannot copy the attachment (%lu)\n",
               (unsigned long)GetLastError());
        return 2;
    }
    memset(&r, 0, sizeof r);
    r.ulRecipClass = MAPI_TO;
    r.lpszName = (PWSTR)T_W_TONAME;
    r.lpszAddress = L"bob@localhost";
    memset(&f, 0, sizeof f);
    f.nPosition = (ULONG)-1;
    f.lpszPathName = path;
    f.lpszFileName = (PWSTR)T_W_FILENAME;
    memset(&msg, 0, sizeof msg);
    msg.lpszSubject = (PWSTR)T_W_SUBJECT;
    msg.lpszNoteText = (PWSTR)T_W_BODY;
    msg.nRecipCount = 1;
    msg.lpRecips = &r;
    msg.nFileCount = 1;
    msg.lpFiles = &f;
    t_want("MAPISendMailW", A.SendMailW(0, 0, &msg, 0, 0), SUCCESS_SUCCESS);
    t_check_provider();
    printf("sent");
    t_put_wide("subject", T_W_SUBJECT);
    t_put_wide("body", T_W_BODY);
    t_put_wide("file", T_W_FILENAME);
    t_put_wide("toname", T_W_TONAME);
    printf("\n");
    DeleteFileW(path);
    t_heap_valid();
    return t_failures != 0;
}

/* As the recipient: walk the Inbox (all, and unread only), then for the
 * first message: envelope only, full peek, suppress-attach peek, full read
 * (marks it read), checking MAPI_UNREAD and MAPI_UNREAD_ONLY at each step;
 * every other message is read with MAPI_PEEK. Expects fresh (unread)
 * messages. */
static int
case_read(void)
{
    static char all[T_MAX_IDS][MAPI_MSGID_SHORT],
        unread[T_MAX_IDS][MAPI_MSGID_SHORT], after[T_MAX_IDS][MAPI_MSGID_SHORT];
    int nall, nunread, nafter;
    LHANDLE h;
    struct t_read env, peek, supp, full, env2;
    const char *first;

    if (t_logon(&h, MAPI_NEW_SESSION) != SUCCESS_SUCCESS) {
        t_fail("MAPILogon failed");
        return 1;
    }
    if (!t_walk(h, 0, 0, all, &nall, "all") ||
        !t_walk(h, MAPI_UNREAD_ONLY, 1, unread, &nunread, "unread"))
        goto out;
    if (nall == 0) {
        t_fail("MAPIFindNext found no message in the Inbox");
        goto out;
    }
    if (nunread != nall)
        t_fail("MAPI_UNREAD_ONLY found %d of %d fresh messages", nunread, nall);
    first = all[0];
    {
        char id[MAPI_MSGID_SHORT + T_GUARD] = "";

        t_put_rc("MAPIFindNext/type-ipm",
                 A.FindNext(h, 0, "IPM.Note", NULL, 0, 0, id));
        t_put_rc("MAPIFindNext/type-other",
                 A.FindNext(h, 0, "IPC.Relaymesh.Other", NULL, 0, 0, id));
    }

    t_read(h, first, MAPI_PEEK | MAPI_ENVELOPE_ONLY, "envelope", &env);
    if (env.rc == SUCCESS_SUCCESS && !(env.flags & MAPI_UNREAD))
        t_fail("a fresh message lacks MAPI_UNREAD");
    t_read(h, first, MAPI_PEEK, "peek", &peek);
    if (peek.rc == SUCCESS_SUCCESS && !(peek.flags & MAPI_UNREAD))
        t_fail("MAPI_PEEK read: the message lacks MAPI_UNREAD");
    t_read(h, first, MAPI_PEEK | MAPI_SUPPRESS_ATTACH, "suppress", &supp);
    if (supp.rc == SUCCESS_SUCCESS && peek.rc == SUCCESS_SUCCESS &&
        supp.has_text != peek.has_text)
        t_fail("MAPI_SUPPRESS_ATTACH changed whether the text is there");
    /* MAPI_SUPPRESS_ATTACH and MAPI_ENVELOPE_ONLY write no files; whether
     * they still list the attachments (without files) is not specified. */
    if (supp.rc == SUCCESS_SUCCESS && peek.rc == SUCCESS_SUCCESS &&
        supp.nfiles != 0 && supp.nfiles != peek.nfiles)
        t_fail("MAPI_SUPPRESS_ATTACH lists %lu attachments, a full read %lu",
               (unsigned long)supp.nfiles, (unsigned long)peek.nfiles);
    if (env.rc == SUCCESS_SUCCESS && peek.rc == SUCCESS_SUCCESS &&
        env.nfiles != 0 && env.nfiles != peek.nfiles)
        t_fail("MAPI_ENVELOPE_ONLY lists %lu attachments, a full read %lu",
               (unsigned long)env.nfiles, (unsigned long)peek.nfiles);
    t_read(h, first, MAPI_PEEK | MAPI_BODY_AS_FILE, "body_as_file", &env2);
    if (env2.rc == SUCCESS_SUCCESS && peek.rc == SUCCESS_SUCCESS &&
        env2.nfiles != peek.nfiles + 1)
        t_fail("MAPI_BODY_AS_FILE gave %lu files for %lu attachments",
               (unsigned long)env2.nfiles, (unsigned long)peek.nfiles);
    if (env2.rc == SUCCESS_SUCCESS && env2.has_text)
        t_fail("MAPI_BODY_AS_FILE and the text is in lpszNoteText too");
    t_read(h, first, MAPI_PEEK | MAPI_ENVELOPE_ONLY, "envelope2", &env2);
    if (env2.rc == SUCCESS_SUCCESS && !(env2.flags & MAPI_UNREAD))
        t_fail("MAPI_PEEK read marked the message read");
    if (!t_walk(h, MAPI_UNREAD_ONLY, 0, after, &nafter, "unread_after_peek"))
        goto out;
    if (!t_in(after, nafter, first))
        t_fail("after MAPI_PEEK reads, MAPI_UNREAD_ONLY skips the message");

    t_read(h, first, 0, "full", &full);
    if (full.rc == SUCCESS_SUCCESS && peek.rc == SUCCESS_SUCCESS) {
        if (full.nfiles != peek.nfiles)
            t_fail("full read: %lu attachments, peek read %lu",
                   (unsigned long)full.nfiles, (unsigned long)peek.nfiles);
        for (ULONG i = 0; i < full.nfiles && i < 8; i++) {
            if (strcmp(full.sha[i], peek.sha[i]) != 0)
                t_fail("attachment %lu differs between two reads",
                       (unsigned long)i);
        }
    }
    t_read(h, first, MAPI_PEEK | MAPI_ENVELOPE_ONLY, "envelope3", &env2);
    if (env2.rc == SUCCESS_SUCCESS && (env2.flags & MAPI_UNREAD))
        t_fail("a read without MAPI_PEEK left the message unread");
    if (!t_walk(h, MAPI_UNREAD_ONLY, 1, after, &nafter, "unread_after_read"))
        goto out;
    if (t_in(after, nafter, first))
        t_fail("MAPI_UNREAD_ONLY still returns the message after it was read");
    if (nafter != nall - 1)
        t_fail("MAPI_UNREAD_ONLY: %d unread, expected %d", nafter, nall - 1);
    for (int i = 1; i < nall; i++) {
        char tag[32];

        snprintf(tag, sizeof tag, "other%d", i);
        t_read(h, all[i], MAPI_PEEK, tag, &peek);
    }
out:
    t_logoff(h);
    t_heap_valid();
    return t_failures != 0;
}

/* MAPISaveMail: a new draft, then the same id again to replace it; the new
 * one reads back, the replaced one (when the id changed) is gone. */
static int
case_save(void)
{
    LHANDLE h;
    MapiRecipDesc r;
    MapiFileDesc f;
    MapiMessage msg;
    char id[MAPI_MSGID_SHORT + T_GUARD], id1[MAPI_MSGID_SHORT];
    char *s1 = t_acp_strict(L"Entwurf 1 \u2013 caf\u00e9", "subject");
    char *s2 = t_acp_strict(L"Entwurf 2 \u2013 \u20ac", "subject");
    struct t_read ri;
    lpMapiMessage m = NULL;
    ULONG rc;

    if (O.npos < 1) {
        printf("FAIL usage: save FILE\n");
        return 2;
    }
    if (t_logon(&h, 0) != SUCCESS_SUCCESS) {
        t_fail("MAPILogon failed");
        return 1;
    }
    memset(&r, 0, sizeof r);
    r.ulRecipClass = MAPI_TO;
    r.lpszName = "Bob";
    r.lpszAddress = "bob@localhost";
    memset(&f, 0, sizeof f);
    f.nPosition = (ULONG)-1;
    f.lpszPathName = t_pos_acp(0);
    memset(&msg, 0, sizeof msg);
    msg.lpszSubject = s1;
    msg.lpszNoteText = "first draft\r\n";
    msg.nRecipCount = 1;
    msg.lpRecips = &r;
    msg.nFileCount = 1;
    msg.lpFiles = &f;
    memset(id, 0x5a, sizeof id);
    id[0] = '\0';
    if (!t_want("MAPISaveMail/new", A.SaveMail(h, 0, &msg, 0, 0, id),
                SUCCESS_SUCCESS))
        goto out;
    if (memchr(id, '\0', MAPI_MSGID_SHORT) == NULL || id[0] == '\0') {
        t_fail("MAPISaveMail gave no id (or one past 64 characters)");
        goto out;
    }
    snprintf(id1, sizeof id1, "%s", id);
    printf("saved n=1");
    t_put_id("id", id1);
    printf("\n");

    msg.lpszSubject = s2;
    msg.lpszNoteText = "second draft\r\n";
    if (!t_want("MAPISaveMail/replace", A.SaveMail(h, 0, &msg, 0, 0, id),
                SUCCESS_SUCCESS))
        goto out;
    if (memchr(id, '\0', MAPI_MSGID_SHORT) == NULL || id[0] == '\0') {
        t_fail("MAPISaveMail (replace) left no id");
        goto out;
    }
    for (int i = MAPI_MSGID_SHORT; i < MAPI_MSGID_SHORT + T_GUARD; i++) {
        if (id[i] != 0x5a) {
            t_fail("MAPISaveMail wrote past the 64-character id buffer");
            break;
        }
    }
    printf("saved n=2");
    t_put_id("id", id);
    printf(" same=%d\n", strcmp(id, id1) == 0);
    t_read(h, id, MAPI_PEEK, "draft", &ri);
    if (ri.rc == SUCCESS_SUCCESS && strcmp(ri.subject, s2) != 0)
        t_fail("the saved draft reads back with another subject");
    if (strcmp(id, id1) != 0) {
        rc = A.ReadMail(h, 0, id1, MAPI_PEEK | MAPI_ENVELOPE_ONLY, 0, &m);
        t_want("MAPIReadMail/replaced", rc, MAPI_E_INVALID_MESSAGE);
        if (rc == SUCCESS_SUCCESS && m != NULL)
            A.FreeBuffer(m);
    }
out:
    t_logoff(h);
    t_heap_valid();
    return t_failures != 0;
}

/* MAPIDeleteMail of the message whose subject is --subject. */
static int
case_delete(void)
{
    static char ids[T_MAX_IDS][MAPI_MSGID_SHORT],
        left[T_MAX_IDS][MAPI_MSGID_SHORT];
    int n, nleft, target = -1;
    LHANDLE h;

    if (O.subject == NULL) {
        printf("FAIL usage: delete --subject=TEXT\n");
        return 2;
    }
    if (t_logon(&h, 0) != SUCCESS_SUCCESS) {
        t_fail("MAPILogon failed");
        return 1;
    }
    if (!t_walk(h, 0, 0, ids, &n, "before"))
        goto out;
    for (int i = 0; i < n && target < 0; i++) {
        struct t_read ri;

        t_read(h, ids[i], MAPI_PEEK | MAPI_ENVELOPE_ONLY, "envelope", &ri);
        if (ri.rc == SUCCESS_SUCCESS && strcmp(ri.subject, O.subject) == 0)
            target = i;
    }
    if (target < 0) {
        t_fail("no message with that subject");
        goto out;
    }
    printf("deleting");
    t_put_id("id", ids[target]);
    printf("\n");
    t_want("MAPIDeleteMail", A.DeleteMail(h, 0, ids[target], 0, 0),
           SUCCESS_SUCCESS);
    if (!t_walk(h, 0, 0, left, &nleft, "after"))
        goto out;
    if (t_in(left, nleft, ids[target]))
        t_fail("MAPIFindNext still returns the deleted message");
    if (nleft != n - 1)
        t_fail("%d messages left of %d", nleft, n);
    t_want("MAPIDeleteMail/again", A.DeleteMail(h, 0, ids[target], 0, 0),
           MAPI_E_INVALID_MESSAGE);
out:
    t_logoff(h);
    t_heap_valid();
    return t_failures != 0;
}

/* Strips a leading "SMTP:" (any case). */
static const char *
t_bare(const char *addr)
{
    if (addr != NULL && _strnicmp(addr, "SMTP:", 5) == 0)
        return addr + 5;
    return addr;
}

static void
t_resolve_one(LHANDLE h, const char *name, ULONG want, const char *addr,
              lpMapiRecipDesc *keep)
{
    lpMapiRecipDesc r = NULL;
    ULONG rc = A.ResolveName(h, 0, (LPSTR)name, 0, 0, &r);
    char call[128];

    snprintf(call, sizeof call, "MAPIResolveName/%s", name);
    t_want(call, rc, want);
    if (rc != SUCCESS_SUCCESS)
        return;
    if (r == NULL) {
        t_fail("%s succeeded without a recipient", call);
        return;
    }
    t_put_recip("resolved", r);
    if (addr != NULL &&
        (r->lpszAddress == NULL || _stricmp(t_bare(r->lpszAddress), addr)))
        t_fail("%s resolved to %s, expected %s", call,
               r->lpszAddress ? r->lpszAddress : "(null)", addr);
    if (keep != NULL)
        *keep = r;
    else
        t_want("MAPIFreeBuffer", A.FreeBuffer(r), SUCCESS_SUCCESS);
}

/* MAPIResolveName: exact, partial (one match), ambiguous, unknown; then
 * MAPIDetails and MAPIAddress, whose results are compared with
 * --expect-details / --expect-address when given. */
static int
case_resolve(void)
{
    LHANDLE h;
    lpMapiRecipDesc bob = NULL, picked = NULL;
    ULONG rc, n = 0;

    if (t_logon(&h, 0) != SUCCESS_SUCCESS) {
        t_fail("MAPILogon failed");
        return 1;
    }
    t_resolve_one(h, "bob@localhost", SUCCESS_SUCCESS, "bob@localhost", &bob);
    t_resolve_one(h, "carol", SUCCESS_SUCCESS, "carol@localhost", NULL);
    t_resolve_one(h, "ali", MAPI_E_AMBIGUOUS_RECIPIENT, NULL, NULL);
    t_resolve_one(h, "nobody-here-xyz", MAPI_E_UNKNOWN_RECIPIENT, NULL, NULL);

    if (bob != NULL) {
        rc = A.Details(h, 0, bob, 0, 0);
        t_put_rc("MAPIDetails", rc);
        if (!t_is_mapi_code(rc))
            t_fail("MAPIDetails returned %lu", (unsigned long)rc);
        if (O.expect_details >= 0)
            t_want("MAPIDetails", rc, (ULONG)O.expect_details);
        t_want("MAPIFreeBuffer", A.FreeBuffer(bob), SUCCESS_SUCCESS);
    }
    rc = A.Address(h, 0, "Choose", 1, "To", 0, NULL, 0, 0, &n, &picked);
    t_put_rc("MAPIAddress", rc);
    printf("address n=%lu picked=%d\n", (unsigned long)n, picked != NULL);
    if (!t_is_mapi_code(rc))
        t_fail("MAPIAddress returned %lu", (unsigned long)rc);
    if (O.expect_address >= 0)
        t_want("MAPIAddress", rc, (ULONG)O.expect_address);
    if (rc == SUCCESS_SUCCESS && n > 0 && picked == NULL)
        t_fail("MAPIAddress: %lu recipients and no array", (unsigned long)n);
    if (rc == SUCCESS_SUCCESS && picked != NULL)
        t_want("MAPIFreeBuffer", A.FreeBuffer(picked), SUCCESS_SUCCESS);

    /* MAPIAddress with a recipient given by name (nothing to choose: it is
     * resolved as it is), and MAPIDetails of someone nobody knows. */
    {
        MapiRecipDesc given, nobody;

        memset(&given, 0, sizeof given);
        given.ulRecipClass = MAPI_CC;
        given.lpszName = "carol";
        picked = NULL;
        n = 0;
        rc = A.Address(h, 0, "Choose", 1, "To", 1, &given, 0, 0, &n, &picked);
        t_put_rc("MAPIAddress/given", rc);
        printf("address_given n=%lu\n", (unsigned long)n);
        if (!t_is_mapi_code(rc))
            t_fail("MAPIAddress returned %lu", (unsigned long)rc);
        if (rc == SUCCESS_SUCCESS && (picked == NULL || n != 1))
            t_fail("MAPIAddress: success with %lu recipients",
                   (unsigned long)n);
        else if (rc == SUCCESS_SUCCESS) {
            t_put_recip("address_picked", picked);
            t_want("MAPIFreeBuffer", A.FreeBuffer(picked), SUCCESS_SUCCESS);
        }
        memset(&nobody, 0, sizeof nobody);
        nobody.ulRecipClass = MAPI_TO;
        nobody.lpszName = "nobody-here-xyz";
        rc = A.Details(h, 0, &nobody, 0, 0);
        t_put_rc("MAPIDetails/unknown", rc);
        if (!t_is_mapi_code(rc) || rc == SUCCESS_SUCCESS)
            t_fail("MAPIDetails of an unknown recipient returned %lu",
                   (unsigned long)rc);
    }
    t_logoff(h);
    t_heap_valid();
    return t_failures != 0;
}

/* MAPILogon with the given (wrong) password, then an implicit-session send
 * with the configured (wrong) one: both MAPI_E_LOGIN_FAILURE. */
static int
case_wrong_password(void)
{
    LHANDLE h = 0;
    MapiRecipDesc r;
    MapiMessage msg;

    t_want("MAPILogon", A.Logon(0, O.profile, O.password, 0, 0, &h),
           MAPI_E_LOGIN_FAILURE);
    memset(&r, 0, sizeof r);
    r.ulRecipClass = MAPI_TO;
    r.lpszAddress = "bob@localhost";
    memset(&msg, 0, sizeof msg);
    msg.lpszSubject = "must not arrive";
    msg.lpszNoteText = "wrong password\r\n";
    msg.nRecipCount = 1;
    msg.lpRecips = &r;
    t_want("MAPISendMail/implicit", A.SendMail(0, 0, &msg, 0, 0),
           MAPI_E_LOGIN_FAILURE);
    t_heap_valid();
    return t_failures != 0;
}

/* Nothing listens where the configuration points: MAPI_E_FAILURE, quickly
 * (the time each call took is printed; the Python side bounds it too). */
static int
case_node_down(void)
{
    LHANDLE h = 0;
    MapiRecipDesc r;
    MapiMessage msg;
    ULONGLONG t0;
    unsigned long ms;

    t0 = GetTickCount64();
    t_want("MAPILogon", A.Logon(0, O.profile, O.password, 0, 0, &h),
           MAPI_E_FAILURE);
    ms = (unsigned long)(GetTickCount64() - t0);
    printf("elapsed call=MAPILogon ms=%lu\n", ms);
    if (ms > 5000)
        t_fail("MAPILogon took %lu ms to report a node that is down", ms);
    memset(&r, 0, sizeof r);
    r.ulRecipClass = MAPI_TO;
    r.lpszAddress = "bob@localhost";
    memset(&msg, 0, sizeof msg);
    msg.lpszSubject = "node down";
    msg.nRecipCount = 1;
    msg.lpRecips = &r;
    t0 = GetTickCount64();
    t_want("MAPISendMail/implicit", A.SendMail(0, 0, &msg, 0, 0),
           MAPI_E_FAILURE);
    ms = (unsigned long)(GetTickCount64() - t0);
    printf("elapsed call=MAPISendMail ms=%lu\n", ms);
    if (ms > 5000)
        t_fail("MAPISendMail took %lu ms to report a node that is down", ms);
    t_heap_valid();
    return t_failures != 0;
}

/* The node's key does not match the configured fingerprint: logon and an
 * implicit send are refused. */
static int
case_wrong_fingerprint(void)
{
    LHANDLE h = 0;
    MapiRecipDesc r;
    MapiMessage msg;

    t_want_error("MAPILogon", A.Logon(0, O.profile, O.password, 0, 0, &h));
    memset(&r, 0, sizeof r);
    r.ulRecipClass = MAPI_TO;
    r.lpszAddress = "bob@localhost";
    memset(&msg, 0, sizeof msg);
    msg.lpszSubject = "must not arrive";
    msg.nRecipCount = 1;
    msg.lpRecips = &r;
    t_want_error("MAPISendMail/implicit", A.SendMail(0, 0, &msg, 0, 0));
    t_heap_valid();
    return t_failures != 0;
}

/* Each ARG as the only attachment of a message to bob: refused (the node's
 * limit is lower). Then a small message in the same session goes through. */
static int
case_oversized(void)
{
    LHANDLE h;
    MapiRecipDesc r;
    MapiFileDesc f;
    MapiMessage msg;

    if (O.npos < 1) {
        printf("FAIL usage: oversized FILE...\n");
        return 2;
    }
    if (t_logon(&h, 0) != SUCCESS_SUCCESS) {
        t_fail("MAPILogon failed");
        return 1;
    }
    memset(&r, 0, sizeof r);
    r.ulRecipClass = MAPI_TO;
    r.lpszAddress = "bob@localhost";
    for (int i = 0; i < O.npos; i++) {
        memset(&f, 0, sizeof f);
        f.nPosition = (ULONG)-1;
        f.lpszPathName = t_pos_acp(i);
        memset(&msg, 0, sizeof msg);
        msg.lpszSubject = "too big";
        msg.lpszNoteText = "this must not arrive\r\n";
        msg.nRecipCount = 1;
        msg.lpRecips = &r;
        msg.nFileCount = 1;
        msg.lpFiles = &f;
        t_want_error("MAPISendMail/oversized", A.SendMail(h, 0, &msg, 0, 0));
    }
    memset(&msg, 0, sizeof msg);
    msg.lpszSubject = "after oversized";
    msg.lpszNoteText = "small\r\n";
    msg.nRecipCount = 1;
    msg.lpRecips = &r;
    t_want("MAPISendMail/small", A.SendMail(h, 0, &msg, 0, 0), SUCCESS_SUCCESS);
    t_logoff(h);
    t_heap_valid();
    return t_failures != 0;
}

#define T_BAD_SESSION ((LHANDLE)0x13572468)
#define T_BAD_FLAG 0x40000000UL

/* NULL pointers, bad session handles, unknown flags, absurd counts: each an
 * error code and no crash; the session still works afterwards. */
static int
case_invalid_args(void)
{
    LHANDLE h, junk = 0;
    MapiRecipDesc r, rbad;
    MapiFileDesc f;
    MapiMessage msg, m2;
    lpMapiMessage pm = NULL;
    lpMapiRecipDesc pr = NULL;
    char id[MAPI_MSGID_SHORT + T_GUARD] = "", bogus[] = "no-such-message";
    ULONG rc;

    if (O.npos < 1) {
        printf("FAIL usage: invalid_args FILE\n");
        return 2;
    }
    t_want_error("MAPILogon/null-out",
                 A.Logon(0, O.profile, O.password, 0, 0, NULL));
    t_want_error("MAPILogon/bad-flags",
                 A.Logon(0, O.profile, O.password, T_BAD_FLAG, 0, &junk));
    if (junk != 0)
        A.Logoff(junk, 0, 0, 0);
    if (t_logon(&h, 0) != SUCCESS_SUCCESS) {
        t_fail("MAPILogon failed");
        return 1;
    }
    memset(&r, 0, sizeof r);
    r.ulRecipClass = MAPI_TO;
    r.lpszName = "Bob";
    r.lpszAddress = "bob@localhost";
    memset(&f, 0, sizeof f);
    f.nPosition = (ULONG)-1;
    f.lpszPathName = t_pos_acp(0);
    memset(&msg, 0, sizeof msg);
    msg.lpszSubject = "must not arrive";
    msg.lpszNoteText = "invalid arguments\r\n";
    msg.nRecipCount = 1;
    msg.lpRecips = &r;

    /* MAPISendMail */
    t_want_error("MAPISendMail/null-message", A.SendMail(h, 0, NULL, 0, 0));
    t_want_error("MAPISendMail/bad-session",
                 A.SendMail(T_BAD_SESSION, 0, &msg, 0, 0));
    t_want_error("MAPISendMail/bad-flags",
                 A.SendMail(h, 0, &msg, T_BAD_FLAG, 0));
    m2 = msg;
    m2.nRecipCount = 0x7fffffff;
    t_want_error("MAPISendMail/huge-recip-count", A.SendMail(h, 0, &m2, 0, 0));
    m2.nRecipCount = 0xffffffff;
    t_want_error("MAPISendMail/max-recip-count", A.SendMail(h, 0, &m2, 0, 0));
    m2 = msg;
    m2.lpRecips = NULL;
    t_want_error("MAPISendMail/null-recips", A.SendMail(h, 0, &m2, 0, 0));
    m2 = msg;
    m2.nFileCount = 0x7fffffff;
    m2.lpFiles = &f;
    t_want_error("MAPISendMail/huge-file-count", A.SendMail(h, 0, &m2, 0, 0));
    m2.nFileCount = 1;
    m2.lpFiles = NULL;
    t_want_error("MAPISendMail/null-files", A.SendMail(h, 0, &m2, 0, 0));
    {
        MapiFileDesc nf = f;

        nf.lpszPathName = "C:\\no\\such\\dir\\missing.bin";
        m2.lpFiles = &nf;
        rc = A.SendMail(h, 0, &m2, 0, 0);
        t_want_error("MAPISendMail/missing-file", rc);
        if (rc != MAPI_E_ATTACHMENT_NOT_FOUND &&
            rc != MAPI_E_ATTACHMENT_OPEN_FAILURE)
            t_fail("a missing attachment file gave %s, expected "
                   "MAPI_E_ATTACHMENT_NOT_FOUND or _OPEN_FAILURE",
                   t_rc_name(rc));
        nf.lpszPathName = NULL;
        t_want_error("MAPISendMail/null-path", A.SendMail(h, 0, &m2, 0, 0));
    }
    {
        static char longsub[5001];

        memset(longsub, 'a', sizeof longsub - 1);
        m2 = msg;
        m2.lpszSubject = longsub;
        t_want_error("MAPISendMail/long-subject", A.SendMail(h, 0, &m2, 0, 0));
    }
    rbad = r;
    rbad.ulRecipClass = 9;
    m2 = msg;
    m2.lpRecips = &rbad;
    t_want_error("MAPISendMail/bad-recip-class", A.SendMail(h, 0, &m2, 0, 0));
    rbad.ulRecipClass = MAPI_TO;
    rbad.lpszName = NULL;
    rbad.lpszAddress = NULL;
    t_want_error("MAPISendMail/empty-recip", A.SendMail(h, 0, &m2, 0, 0));

    /* MAPIFindNext */
    t_want("MAPIFindNext/bad-session",
           A.FindNext(T_BAD_SESSION, 0, NULL, NULL, 0, 0, id),
           MAPI_E_INVALID_SESSION);
    t_want_error("MAPIFindNext/null-out",
                 A.FindNext(h, 0, NULL, NULL, 0, 0, NULL));
    t_want_error("MAPIFindNext/bad-flags",
                 A.FindNext(h, 0, NULL, NULL, T_BAD_FLAG, 0, id));
    t_want_error("MAPIFindNext/bogus-seed",
                 A.FindNext(h, 0, NULL, bogus, 0, 0, id));

    /* MAPIReadMail */
    t_want("MAPIReadMail/bad-session",
           A.ReadMail(T_BAD_SESSION, 0, bogus, 0, 0, &pm),
           MAPI_E_INVALID_SESSION);
    t_want_error("MAPIReadMail/null-id", A.ReadMail(h, 0, NULL, 0, 0, &pm));
    t_want_error("MAPIReadMail/empty-id", A.ReadMail(h, 0, "", 0, 0, &pm));
    t_want("MAPIReadMail/bogus-id", A.ReadMail(h, 0, bogus, 0, 0, &pm),
           MAPI_E_INVALID_MESSAGE);
    t_want("MAPIReadMail/bogus-id2",
           A.ReadMail(h, 0, "0:ffffffffffffffff", 0, 0, &pm),
           MAPI_E_INVALID_MESSAGE);
    t_want_error("MAPIReadMail/null-out",
                 A.ReadMail(h, 0, bogus, MAPI_PEEK, 0, NULL));
    t_want_error("MAPIReadMail/bad-flags",
                 A.ReadMail(h, 0, bogus, T_BAD_FLAG, 0, &pm));

    /* MAPIDeleteMail */
    t_want("MAPIDeleteMail/bad-session",
           A.DeleteMail(T_BAD_SESSION, 0, bogus, 0, 0), MAPI_E_INVALID_SESSION);
    t_want_error("MAPIDeleteMail/null-id", A.DeleteMail(h, 0, NULL, 0, 0));
    t_want("MAPIDeleteMail/bogus-id", A.DeleteMail(h, 0, bogus, 0, 0),
           MAPI_E_INVALID_MESSAGE);

    /* MAPISaveMail */
    t_want_error("MAPISaveMail/null-message", A.SaveMail(h, 0, NULL, 0, 0, id));
    t_want_error("MAPISaveMail/null-id", A.SaveMail(h, 0, &msg, 0, 0, NULL));
    t_want_error("MAPISaveMail/bad-session",
                 A.SaveMail(T_BAD_SESSION, 0, &msg, 0, 0, id));
    t_want_error("MAPISaveMail/bogus-replace",
                 A.SaveMail(h, 0, &msg, 0, 0, bogus));

    /* MAPIResolveName */
    t_want_error("MAPIResolveName/null-name",
                 A.ResolveName(h, 0, NULL, 0, 0, &pr));
    t_want_error("MAPIResolveName/empty-name",
                 A.ResolveName(h, 0, "", 0, 0, &pr));
    t_want_error("MAPIResolveName/null-out",
                 A.ResolveName(h, 0, "bob@localhost", 0, 0, NULL));
    t_want("MAPIResolveName/bad-session",
           A.ResolveName(T_BAD_SESSION, 0, "bob@localhost", 0, 0, &pr),
           MAPI_E_INVALID_SESSION);

    /* MAPISendDocuments */
    t_want_error("MAPISendDocuments/null-paths",
                 A.SendDocuments(0, ";", NULL, NULL, 0));

    /* MAPIFreeBuffer(NULL) must be harmless */
    rc = A.FreeBuffer(NULL);
    t_put_rc("MAPIFreeBuffer/null", rc);

    /* the session still works */
    rc = A.FindNext(h, 0, NULL, NULL, 0, 0, id);
    t_put_rc("MAPIFindNext/after", rc);
    if (rc != SUCCESS_SUCCESS && rc != MAPI_E_NO_MESSAGES)
        t_fail("the session no longer works after bad calls (%s)",
               t_rc_name(rc));

    t_want("MAPILogoff/bad-session", A.Logoff(T_BAD_SESSION, 0, 0, 0),
           MAPI_E_INVALID_SESSION);
    t_logoff(h);
    t_want("MAPILogoff/again", A.Logoff(h, 0, 0, 0), MAPI_E_INVALID_SESSION);
    t_want("MAPIFindNext/stale-session", A.FindNext(h, 0, NULL, NULL, 0, 0, id),
           MAPI_E_INVALID_SESSION);
    t_heap_valid();
    return t_failures != 0;
}

/* Through mapi32: results of MAPIReadMail and MAPIResolveName freed with
 * mapi32's MAPIFreeBuffer (Wine's allocator, not the DLL's) — no crash, a
 * valid heap, and no growth over many rounds. Run as the recipient of at
 * least one message. */
static int
case_free_through_mapi32(void)
{
    static char ids[T_MAX_IDS][MAPI_MSGID_SHORT];
    int n;
    LHANDLE h;
    unsigned long long before = 0, after;
    const int rounds = 100;

    if (A.direct) {
        printf("FAIL usage: free_through_mapi32 runs in mapi32 mode\n");
        return 2;
    }
    if (t_logon(&h, 0) != SUCCESS_SUCCESS) {
        t_fail("MAPILogon failed");
        return 1;
    }
    if (!t_walk(h, 0, 0, ids, &n, "all") || n == 0) {
        t_fail("no message to read");
        goto out;
    }
    for (int round = 0; round <= rounds; round++) {
        lpMapiMessage m = NULL;
        lpMapiRecipDesc r = NULL;
        ULONG rc;

        if (round == 1)
            before = t_heap_busy();
        rc = A.ReadMail(h, 0, ids[0], MAPI_PEEK | MAPI_SUPPRESS_ATTACH, 0, &m);
        if (rc != SUCCESS_SUCCESS || m == NULL) {
            t_want("MAPIReadMail", rc, SUCCESS_SUCCESS);
            break;
        }
        rc = A.FreeBuffer(m);
        if (rc != SUCCESS_SUCCESS)
            t_want("MAPIFreeBuffer/message", rc, SUCCESS_SUCCESS);
        rc = A.ResolveName(h, 0, "bob@localhost", 0, 0, &r);
        if (rc != SUCCESS_SUCCESS || r == NULL) {
            t_want("MAPIResolveName", rc, SUCCESS_SUCCESS);
            break;
        }
        rc = A.FreeBuffer(r);
        if (rc != SUCCESS_SUCCESS)
            t_want("MAPIFreeBuffer/recip", rc, SUCCESS_SUCCESS);
        if (!HeapValidate(GetProcessHeap(), 0, NULL)) {
            t_fail("the process heap is corrupt after round %d", round);
            break;
        }
    }
    after = t_heap_busy();
    printf("heap rounds=%d before=%llu after=%llu growth=%lld\n", rounds,
           before, after, (long long)(after - before));
    /* A round's buffers are a few hundred bytes (the recipient) to
     * several KiB (the message): any of them left behind each round adds
     * up past this, while Wine's own bookkeeping stays flat. */
    if (after > before && after - before > 4 * 1024)
        t_fail("the process heap grew by %llu bytes over %d rounds",
               after - before, rounds);
out:
    t_logoff(h);
    t_heap_valid();
    return t_failures != 0;
}

/* One round of the fault-injection sequence; every return code is kept. */
static int
t_fault_round(const char *path, ULONG rcs[6])
{
    LHANDLE h = 0;
    MapiRecipDesc r;
    MapiFileDesc f;
    MapiMessage msg;
    lpMapiMessage m = NULL;
    char id[MAPI_MSGID_SHORT + T_GUARD];
    int failed = 0;

    for (int i = 0; i < 6; i++)
        rcs[i] = SUCCESS_SUCCESS;
    rcs[0] = A.Logon(0, O.profile, O.password, 0, 0, &h);
    if (rcs[0] != SUCCESS_SUCCESS)
        return 1;
    memset(&r, 0, sizeof r);
    r.ulRecipClass = MAPI_TO;
    r.lpszAddress = "alice@localhost";
    memset(&f, 0, sizeof f);
    f.nPosition = (ULONG)-1;
    f.lpszPathName = (LPSTR)path;
    memset(&msg, 0, sizeof msg);
    msg.lpszSubject = "fault injection";
    msg.lpszNoteText = "round\r\n";
    msg.nRecipCount = 1;
    msg.lpRecips = &r;
    msg.nFileCount = 1;
    msg.lpFiles = &f;
    rcs[1] = A.SendMail(h, 0, &msg, 0, 0);
    id[0] = '\0';
    rcs[2] = A.FindNext(h, 0, NULL, NULL, 0, 0, id);
    if (rcs[2] == SUCCESS_SUCCESS) {
        rcs[3] = A.ReadMail(h, 0, id, MAPI_PEEK, 0, &m);
        if (rcs[3] == SUCCESS_SUCCESS && m != NULL) {
            for (ULONG i = 0; m->lpFiles != NULL && i < m->nFileCount; i++) {
                if (m->lpFiles[i].lpszPathName != NULL)
                    DeleteFileA(m->lpFiles[i].lpszPathName);
            }
            rcs[4] = A.FreeBuffer(m);
        }
    }
    rcs[5] = A.Logoff(h, 0, 0, 0);
    for (int i = 0; i < 6; i++)
        failed |= rcs[i] != SUCCESS_SUCCESS;
    return failed;
}

/* For n = 1, 2, ...: the n-th allocation fails during logon, send with an
 * attachment, find, read, free, logoff. Every call must return a Simple
 * MAPI code; the process must survive. Ends when the armed failure no
 * longer fires (the sequence makes fewer than n allocations). */
static int
case_fault_injection(void)
{
    static const char *const names[6] = {"logon", "send", "find",
                                         "read",  "free", "logoff"};
    char *path;
    ULONG rcs[6];
    long n;
    int failed_rounds = 0;

    if (!A.direct || A.FaultInject == NULL) {
        printf("FAIL usage: fault_injection needs direct mode and "
               "RelaymeshFaultInject\n");
        return 2;
    }
    path = t_pos_acp(0);
    A.FaultInject(0);
    if (t_fault_round(path, rcs)) {
        t_fail("the sequence fails without fault injection:"
               " logon=%lu send=%lu find=%lu read=%lu free=%lu logoff=%lu",
               rcs[0], rcs[1], rcs[2], rcs[3], rcs[4], rcs[5]);
        return 1;
    }
    for (n = 1; n <= T_FAULT_MAX; n++) {
        int failed, fired;

        A.FaultInject(n);
        failed = t_fault_round(path, rcs);
        fired = (int)A.FaultInject(0);
        for (int i = 0; i < 6; i++) {
            if (!t_is_mapi_code(rcs[i]))
                t_fail("n=%ld: %s returned %lu, not a Simple MAPI code", n,
                       names[i], (unsigned long)rcs[i]);
        }
        if (failed) {
            failed_rounds++;
            printf("fault n=%ld fired=%d", n, fired);
            for (int i = 0; i < 6; i++)
                printf(" %s=%lu", names[i], (unsigned long)rcs[i]);
            printf("\n");
        }
        if (!fired)
            break;
        if (!HeapValidate(GetProcessHeap(), 0, NULL)) {
            t_fail("n=%ld: the process heap is corrupt", n);
            break;
        }
    }
    if (n > T_FAULT_MAX)
        t_fail("more than %d allocations: the sequence does not converge",
               T_FAULT_MAX);
    printf("fault_injection tested=%ld failed_rounds=%d\n", n - 1,
           failed_rounds);
    if (n == 1)
        t_fail("the first armed failure never fired (is fault injection "
               "wired to the allocator?)");
    /* After all that, a clean round still works. */
    if (t_fault_round(path, rcs))
        t_fail("a clean round fails after fault injection:"
               " logon=%lu send=%lu find=%lu read=%lu free=%lu logoff=%lu",
               rcs[0], rcs[1], rcs[2], rcs[3], rcs[4], rcs[5]);
    t_heap_valid();
    return t_failures != 0;
}

/* MAPISendDocuments(ARG1;ARG2) with names: saved as a draft (no UI). */
static int
case_send_documents(void)
{
    char paths[2 * MAX_PATH + 2], names[256];
    char *p1 = t_pos_acp(0), *p2 = t_pos_acp(1);
    char *n1 = t_acp_strict(L"Bericht-\u00e4.txt", "a file name");

    snprintf(paths, sizeof paths, "%s;%s", p1, p2);
    snprintf(names, sizeof names, "%s;%s", n1, "data.bin");
    t_want("MAPISendDocuments", A.SendDocuments(0, ";", paths, names, 0),
           SUCCESS_SUCCESS);
    t_check_provider();
    t_heap_valid();
    return t_failures != 0;
}

/* Where Simple MAPI would show a window (win32/README.md "No user
 * interface"), with implicit sessions: MAPI_DIALOG without recipients is
 * the user closing the window; with recipients the message is sent as
 * given; MAPISendDocuments without files; MAPIResolveName with
 * MAPI_DIALOG and several matches. */
static int
case_no_ui(void)
{
    MapiRecipDesc r;
    MapiMessage msg;
    lpMapiRecipDesc pr = NULL;
    LHANDLE h;
    ULONG rc;

    memset(&msg, 0, sizeof msg);
    msg.lpszSubject = "no recipients";
    msg.lpszNoteText = "nobody\r\n";
    t_want("MAPISendMail/dialog-no-recips",
           A.SendMail(0, 0, &msg, MAPI_DIALOG, 0), MAPI_E_USER_ABORT);
    t_want("MAPISendMail/no-recips", A.SendMail(0, 0, &msg, 0, 0),
           MAPI_E_INVALID_RECIPS);
    memset(&r, 0, sizeof r);
    r.ulRecipClass = MAPI_TO;
    r.lpszAddress = "bob@localhost";
    msg.lpszSubject = "sent with MAPI_DIALOG";
    msg.nRecipCount = 1;
    msg.lpRecips = &r;
    t_want("MAPISendMail/dialog", A.SendMail(0, 0, &msg, MAPI_DIALOG, 0),
           SUCCESS_SUCCESS);
    t_want("MAPISendDocuments/no-paths", A.SendDocuments(0, ";", "", NULL, 0),
           MAPI_E_USER_ABORT);
    if (t_logon(&h, 0) != SUCCESS_SUCCESS) {
        t_fail("MAPILogon failed");
        return 1;
    }
    rc = A.ResolveName(h, 0, "ali", MAPI_DIALOG, 0, &pr);
    t_want("MAPIResolveName/dialog-ambiguous", rc, MAPI_E_AMBIGUOUS_RECIPIENT);
    if (rc == SUCCESS_SUCCESS && pr != NULL)
        A.FreeBuffer(pr);
    t_logoff(h);
    t_heap_valid();
    return t_failures != 0;
}

/* No user or password configured: a logon that asks for UI fails. */
static int
case_logon_ui(void)
{
    LHANDLE h = 0;

    t_want("MAPILogon/logon-ui", A.Logon(0, NULL, NULL, MAPI_LOGON_UI, 0, &h),
           MAPI_E_LOGIN_FAILURE);
    h = 0;
    t_want("MAPILogon/password-ui",
           A.Logon(0, O.profile, NULL, MAPI_PASSWORD_UI, 0, &h),
           MAPI_E_LOGIN_FAILURE);
    t_heap_valid();
    return t_failures != 0;
}

static const struct t_case {
    const char *name;
    int (*run)(void);
} t_cases[] = {
    {"send_ansi", case_send_ansi},
    {"send_unicode", case_send_unicode},
    {"read", case_read},
    {"save", case_save},
    {"delete", case_delete},
    {"resolve", case_resolve},
    {"wrong_password", case_wrong_password},
    {"node_down", case_node_down},
    {"wrong_fingerprint", case_wrong_fingerprint},
    {"oversized", case_oversized},
    {"invalid_args", case_invalid_args},
    {"free_through_mapi32", case_free_through_mapi32},
    {"fault_injection", case_fault_injection},
    {"send_documents", case_send_documents},
    {"no_ui", case_no_ui},
    {"logon_ui", case_logon_ui},
};

/* ---- main ---------------------------------------------------------------- */

static char *
t_opt(const WCHAR *arg, const WCHAR *key)
{
    size_t n = wcslen(key);

    if (wcsncmp(arg, key, n) != 0)
        return NULL;
    return t_acp_strict(arg + n, "an option");
}

int
main(void)
{
    int argc, rc;
    WCHAR **argv = CommandLineToArgvW(GetCommandLineW(), &argc);
    const struct t_case *c = NULL;
    char *cname;

    t_install_crash_handlers();
    setvbuf(stdout, NULL, _IONBF, 0);
    _setmode(_fileno(stdout), _O_BINARY);
    if (argv == NULL || argc < 3) {
        printf("FAIL usage: mapi_test MODE CASE [--key=value...] [ARGS...]\n");
        return 2;
    }
    O.expect_details = -1;
    O.expect_address = -1;
    for (int i = 3; i < argc; i++) {
        char *v;

        if ((v = t_opt(argv[i], L"--profile=")) != NULL)
            O.profile = v;
        else if ((v = t_opt(argv[i], L"--password=")) != NULL)
            O.password = v;
        else if ((v = t_opt(argv[i], L"--subject=")) != NULL)
            O.subject = v;
        else if ((v = t_opt(argv[i], L"--expect-details=")) != NULL)
            O.expect_details = strtol(v, NULL, 10);
        else if ((v = t_opt(argv[i], L"--expect-address=")) != NULL)
            O.expect_address = strtol(v, NULL, 10);
        else if (wcsncmp(argv[i], L"--", 2) == 0) {
            printf("FAIL usage: unknown option\n");
            return 2;
        } else if (O.npos < T_MAX_POS)
            O.pos[O.npos++] = argv[i];
    }
    cname = t_from_wide(argv[2], CP_UTF8, 0);
    for (size_t i = 0; cname && i < sizeof t_cases / sizeof t_cases[0]; i++) {
        if (strcmp(cname, t_cases[i].name) == 0)
            c = &t_cases[i];
    }
    if (c == NULL) {
        printf("FAIL usage: unknown case\n");
        return 2;
    }
    rc = t_load(argv[1]);
    if (rc != 0)
        return rc;
    printf("case=%s\n", c->name);
    rc = c->run();
    printf("result=%s failures=%d\n", rc == 0 ? "ok" : "failed", t_failures);
    return rc;
}
