/*
 * config: where and as whom the DLL logs on (rmc_cfg_* in rmclient.h).
 *
 * Sources, later ones winning: built-in defaults, the registry
 * (HKCU\Software\relaymesh), the environment (RELAYMESH_MAPI_*), then
 * the caller's profile / password. The settings are one table
 * (cfg_items): registry value, environment variable, type, bounds, field.
 *
 * Text is UTF-16 in the registry and the environment and UTF-8 in
 * struct rmc_cfg; a value that is not valid UTF-16 or does not fit its
 * field is an error naming where it came from, never silently cut. The
 * password is stored as the CryptProtectData blob of its UTF-8 bytes
 * (current-user scope): only the same Windows user on the same machine
 * can read it back. Temporary copies of the password are wiped with
 * SecureZeroMemory; config.c does not include sodium.h (STYLE 4).
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <wincrypt.h>

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rm_error.h"
#include "win32/rmclient.h"

#define CFG_KEY L"Software\\relaymesh"
#define CFG_KEY_TEXT "HKCU\\Software\\relaymesh"
/* TimeoutMs / RELAYMESH_MAPI_TIMEOUT_MS bounds, milliseconds. */
#define CFG_TIMEOUT_MIN 100
#define CFG_TIMEOUT_MAX 600000
/* A DPAPI blob of a 1,024-byte password is well under 2 KiB; refuse
 * anything absurd before allocating. */
#define CFG_BLOB_MAX 16384
/* UTF-16 units read for one text value: the largest field (password,
 * 1,024 bytes) needs at most 1,024 units plus the NUL. */
#define CFG_WTEXT_MAX 1100

enum cfg_type {
    CFG_TEXT,   /* REG_SZ, UTF-8 in the field */
    CFG_SECRET, /* REG_BINARY DPAPI blob of the UTF-8 text */
    CFG_MS,     /* REG_DWORD milliseconds, bounded */
};

struct cfg_item {
    const wchar_t *reg; /* value under CFG_KEY */
    const char *reg_text;
    const wchar_t *env; /* environment override */
    const char *env_text;
    enum cfg_type type;
    size_t off, size; /* the field in struct rmc_cfg */
};

#define CFG_FIELD(f)                                                           \
    offsetof(struct rmc_cfg, f), sizeof(((struct rmc_cfg *)0)->f)

static const struct cfg_item cfg_items[] = {
    {L"Node", "Node", L"RELAYMESH_MAPI_NODE", "RELAYMESH_MAPI_NODE", CFG_TEXT,
     CFG_FIELD(node)},
    {L"Fingerprint", "Fingerprint", L"RELAYMESH_MAPI_FINGERPRINT",
     "RELAYMESH_MAPI_FINGERPRINT", CFG_TEXT, CFG_FIELD(fingerprint)},
    {L"User", "User", L"RELAYMESH_MAPI_USER", "RELAYMESH_MAPI_USER", CFG_TEXT,
     CFG_FIELD(user)},
    {L"Password", "Password", L"RELAYMESH_MAPI_PASSWORD",
     "RELAYMESH_MAPI_PASSWORD", CFG_SECRET, CFG_FIELD(password)},
    {L"TimeoutMs", "TimeoutMs", L"RELAYMESH_MAPI_TIMEOUT_MS",
     "RELAYMESH_MAPI_TIMEOUT_MS", CFG_MS, CFG_FIELD(timeout_ms)},
};

#define CFG_N (sizeof(cfg_items) / sizeof(cfg_items[0]))

static int cfg_fail(char *why, size_t whysz, int code, const char *fmt, ...)
    __attribute__((format(gnu_printf, 4, 5))); /* mingw-w64 C99 stdio */

static int
cfg_fail(char *why, size_t whysz, int code, const char *fmt, ...)
{
    va_list ap;

    if (why != NULL && whysz > 0) {
        va_start(ap, fmt);
        vsnprintf(why, whysz, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* "text of the Windows error (error N)". */
static const char *
cfg_winerr(DWORD e, char *buf, size_t bufsz)
{
    char msg[160];
    DWORD n;

    n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM |
                           FORMAT_MESSAGE_IGNORE_INSERTS |
                           FORMAT_MESSAGE_MAX_WIDTH_MASK,
                       NULL, e, 0, msg, sizeof(msg), NULL);
    while (n > 0 && (msg[n - 1] == ' ' || msg[n - 1] == '.' ||
                     msg[n - 1] == '\r' || msg[n - 1] == '\n'))
        n--;
    msg[n] = '\0';
    snprintf(buf, bufsz, "%s%serror %lu%s", msg, n ? " (" : "",
             (unsigned long)e, n ? ")" : "");
    return buf;
}

static char *
cfg_text_field(struct rmc_cfg *cfg, const struct cfg_item *it)
{
    return (char *)cfg + it->off;
}

/* UTF-16 (NUL-terminated) into the item's field as UTF-8. */
static int
cfg_put_text(struct rmc_cfg *cfg, const struct cfg_item *it, const wchar_t *w,
             const char *from, char *why, size_t whysz)
{
    char *f = cfg_text_field(cfg, it);
    int n;

    n = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, f,
                            (int)it->size, NULL, NULL);
    if (n > 0)
        return 0;
    SecureZeroMemory(f, it->size);
    if (GetLastError() == ERROR_INSUFFICIENT_BUFFER)
        return cfg_fail(why, whysz, RM_E_CONFIG,
                        "%s is too long: at most %u bytes of UTF-8", from,
                        (unsigned)it->size - 1);
    return cfg_fail(why, whysz, RM_E_CONFIG,
                    "%s is not valid Unicode text (UTF-16)", from);
}

/* Decimal milliseconds within bounds; 0 or -1. */
static int
cfg_parse_ms(const wchar_t *w, unsigned *out)
{
    unsigned long v = 0;

    if (*w == L'\0')
        return -1;
    for (; *w != L'\0'; w++) {
        if (*w < L'0' || *w > L'9' || v > CFG_TIMEOUT_MAX)
            return -1;
        v = v * 10 + (unsigned long)(*w - L'0');
    }
    if (v < CFG_TIMEOUT_MIN || v > CFG_TIMEOUT_MAX)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* DPAPI blob to the UTF-8 password. */
static int
cfg_unprotect(struct rmc_cfg *cfg, const struct cfg_item *it, BYTE *blob,
              DWORD len, char *why, size_t whysz)
{
    DATA_BLOB in, out;
    char *f = cfg_text_field(cfg, it), eb[200];
    int r = 0;

    in.pbData = blob;
    in.cbData = len;
    memset(&out, 0, sizeof(out));
    if (!CryptUnprotectData(&in, NULL, NULL, NULL, NULL,
                            CRYPTPROTECT_UI_FORBIDDEN, &out))
        return cfg_fail(why, whysz, RM_E_CONFIG,
                        CFG_KEY_TEXT "\\%s cannot be decrypted: %s; it was "
                                     "stored by another Windows user or on "
                                     "another machine: store the password "
                                     "again",
                        it->reg_text,
                        cfg_winerr(GetLastError(), eb, sizeof(eb)));
    if (out.cbData >= it->size || memchr(out.pbData, '\0', out.cbData) ||
        !bproto_text_valid((const char *)out.pbData, out.cbData)) {
        r = cfg_fail(why, whysz, RM_E_CONFIG,
                     CFG_KEY_TEXT "\\%s holds no valid password (at most %u "
                                  "bytes of UTF-8 text): store it again",
                     it->reg_text, (unsigned)it->size - 1);
    } else {
        memcpy(f, out.pbData, out.cbData);
        f[out.cbData] = '\0';
    }
    SecureZeroMemory(out.pbData, out.cbData);
    LocalFree(out.pbData);
    return r;
}

/* One registry value into its field; absent values leave the default. */
static int
cfg_load_reg(struct rmc_cfg *cfg, const struct cfg_item *it, char *why,
             size_t whysz)
{
    wchar_t w[CFG_WTEXT_MAX];
    char from[96], eb[200];
    DWORD sz, dw, want;
    BYTE *blob;
    LONG e;
    int r;

    snprintf(from, sizeof(from), CFG_KEY_TEXT "\\%s", it->reg_text);
    switch (it->type) {
    case CFG_TEXT:
        want = RRF_RT_REG_SZ;
        sz = sizeof(w);
        e = RegGetValueW(HKEY_CURRENT_USER, CFG_KEY, it->reg, want, NULL, w,
                         &sz);
        break;
    case CFG_MS:
        want = RRF_RT_REG_DWORD;
        sz = sizeof(dw);
        e = RegGetValueW(HKEY_CURRENT_USER, CFG_KEY, it->reg, want, NULL, &dw,
                         &sz);
        break;
    case CFG_SECRET:
        want = RRF_RT_REG_BINARY;
        sz = 0;
        e = RegGetValueW(HKEY_CURRENT_USER, CFG_KEY, it->reg, want, NULL, NULL,
                         &sz);
        break;
    default:
        return cfg_fail(why, whysz, RM_E_INVAL, "bad setting type");
    }
    if (e == ERROR_FILE_NOT_FOUND || e == ERROR_PATH_NOT_FOUND)
        return 0;
    if (e == ERROR_UNSUPPORTED_TYPE)
        return cfg_fail(why, whysz, RM_E_CONFIG,
                        "%s has the wrong type: it must be %s", from,
                        it->type == CFG_TEXT ? "REG_SZ"
                        : it->type == CFG_MS ? "REG_DWORD"
                                             : "REG_BINARY");
    if (e == ERROR_MORE_DATA)
        return cfg_fail(why, whysz, RM_E_CONFIG,
                        "%s is too long: at most %u bytes", from,
                        (unsigned)it->size - 1);
    if (e != ERROR_SUCCESS)
        return cfg_fail(why, whysz, RM_E_CONFIG, "cannot read %s: %s", from,
                        cfg_winerr((DWORD)e, eb, sizeof(eb)));

    switch (it->type) {
    case CFG_TEXT:
        return cfg_put_text(cfg, it, w, from, why, whysz);
    case CFG_MS:
        if (dw < CFG_TIMEOUT_MIN || dw > CFG_TIMEOUT_MAX)
            return cfg_fail(why, whysz, RM_E_CONFIG,
                            "%s is %lu: it must be from %u to %u "
                            "milliseconds",
                            from, (unsigned long)dw, CFG_TIMEOUT_MIN,
                            CFG_TIMEOUT_MAX);
        *(unsigned *)(void *)((char *)cfg + it->off) = (unsigned)dw;
        return 0;
    case CFG_SECRET:
        if (sz == 0)
            return 0; /* an empty value: no password stored */
        if (sz > CFG_BLOB_MAX)
            return cfg_fail(why, whysz, RM_E_CONFIG,
                            "%s is %lu bytes, more than a stored password "
                            "can be: store the password again",
                            from, (unsigned long)sz);
        if ((blob = malloc(sz)) == NULL)
            return cfg_fail(why, whysz, -ENOMEM, "out of memory");
        e = RegGetValueW(HKEY_CURRENT_USER, CFG_KEY, it->reg, want, NULL, blob,
                         &sz);
        if (e != ERROR_SUCCESS)
            r = cfg_fail(why, whysz, RM_E_CONFIG, "cannot read %s: %s", from,
                         cfg_winerr((DWORD)e, eb, sizeof(eb)));
        else
            r = cfg_unprotect(cfg, it, blob, sz, why, whysz);
        SecureZeroMemory(blob, sz);
        free(blob);
        return r;
    default:
        return cfg_fail(why, whysz, RM_E_INVAL, "bad setting type");
    }
}

/* The environment override of one setting; unset or "" leaves it. */
static int
cfg_load_env(struct rmc_cfg *cfg, const struct cfg_item *it, char *why,
             size_t whysz)
{
    wchar_t w[CFG_WTEXT_MAX];
    DWORD n;
    int r;

    n = GetEnvironmentVariableW(it->env, w, CFG_WTEXT_MAX);
    if (n == 0)
        return 0;
    if (n >= CFG_WTEXT_MAX)
        return cfg_fail(why, whysz, RM_E_CONFIG,
                        "%s is too long: at most %u bytes", it->env_text,
                        (unsigned)it->size - 1);
    switch (it->type) {
    case CFG_TEXT:
    case CFG_SECRET:
        r = cfg_put_text(cfg, it, w, it->env_text, why, whysz);
        break;
    case CFG_MS:
        r = cfg_parse_ms(w, (unsigned *)(void *)((char *)cfg + it->off));
        if (r != 0)
            r = cfg_fail(why, whysz, RM_E_CONFIG,
                         "%s must be a number of milliseconds from %u to %u",
                         it->env_text, CFG_TIMEOUT_MIN, CFG_TIMEOUT_MAX);
        break;
    default:
        r = cfg_fail(why, whysz, RM_E_INVAL, "bad setting type");
        break;
    }
    SecureZeroMemory(w, sizeof(w));
    return r;
}

/* The caller's UTF-8 text (NULL or "": not given) into a field. */
static int
cfg_put_caller(char *field, size_t size, const char *v, const char *what,
               char *why, size_t whysz)
{
    size_t n;

    if (v == NULL || v[0] == '\0')
        return 0;
    n = strlen(v);
    if (n >= size)
        return cfg_fail(why, whysz, RM_E_CONFIG,
                        "the %s given to MAPILogon is too long: at most %u "
                        "bytes",
                        what, (unsigned)size - 1);
    if (!bproto_text_valid(v, n))
        return cfg_fail(why, whysz, RM_E_CONFIG,
                        "the %s given to MAPILogon is not UTF-8 text", what);
    memcpy(field, v, n + 1);
    return 0;
}

int
rmc_cfg_load(struct rmc_cfg *cfg, const char *profile, const char *password,
             char *why, size_t whysz)
{
    int r = 0;

    if (why != NULL && whysz > 0)
        why[0] = '\0';
    if (cfg == NULL)
        return cfg_fail(why, whysz, RM_E_INVAL, "rmc_cfg_load: NULL cfg");
    memset(cfg, 0, sizeof(*cfg));
    memcpy(cfg->node, RMC_DEFAULT_NODE, sizeof(RMC_DEFAULT_NODE));
    cfg->timeout_ms = RMC_TIMEOUT_MS;
    for (size_t i = 0; i < CFG_N && r == 0; i++)
        r = cfg_load_reg(cfg, &cfg_items[i], why, whysz);
    for (size_t i = 0; i < CFG_N && r == 0; i++)
        r = cfg_load_env(cfg, &cfg_items[i], why, whysz);
    if (r == 0)
        r = cfg_put_caller(cfg->user, sizeof(cfg->user), profile,
                           "profile name (user)", why, whysz);
    if (r == 0)
        r = cfg_put_caller(cfg->password, sizeof(cfg->password), password,
                           "password", why, whysz);
    if (r != 0)
        rmc_cfg_wipe(cfg);
    return r;
}

void
rmc_cfg_wipe(struct rmc_cfg *cfg)
{
    if (cfg != NULL)
        SecureZeroMemory(cfg->password, sizeof(cfg->password));
}

/* UTF-8 field to UTF-16; w has CFG_WTEXT_MAX units. */
static int
cfg_to_wide(const char *s, size_t size, wchar_t *w, const char *what, char *why,
            size_t whysz)
{
    if (memchr(s, '\0', size) == NULL)
        return cfg_fail(why, whysz, RM_E_INVAL, "%s: not terminated", what);
    if (MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w,
                            CFG_WTEXT_MAX) == 0)
        return cfg_fail(why, whysz, RM_E_CONFIG, "%s is not UTF-8 text", what);
    return 0;
}

static int
cfg_set(const struct cfg_item *it, DWORD type, const void *data, DWORD len,
        char *why, size_t whysz)
{
    char eb[200];
    LONG e;

    e = RegSetKeyValueW(HKEY_CURRENT_USER, CFG_KEY, it->reg, type, data, len);
    if (e != ERROR_SUCCESS)
        return cfg_fail(why, whysz, RM_E_CONFIG,
                        "cannot write " CFG_KEY_TEXT "\\%s: %s", it->reg_text,
                        cfg_winerr((DWORD)e, eb, sizeof(eb)));
    return 0;
}

static int
cfg_unset(const struct cfg_item *it, char *why, size_t whysz)
{
    char eb[200];
    LONG e;

    e = RegDeleteKeyValueW(HKEY_CURRENT_USER, CFG_KEY, it->reg);
    if (e != ERROR_SUCCESS && e != ERROR_FILE_NOT_FOUND &&
        e != ERROR_PATH_NOT_FOUND)
        return cfg_fail(why, whysz, RM_E_CONFIG,
                        "cannot delete " CFG_KEY_TEXT "\\%s: %s", it->reg_text,
                        cfg_winerr((DWORD)e, eb, sizeof(eb)));
    return 0;
}

static int
cfg_save_secret(const struct cfg_item *it, const char *s, char *why,
                size_t whysz)
{
    DATA_BLOB in, out;
    char eb[200];
    size_t n = strnlen(s, it->size);
    int r;

    if (n == it->size)
        return cfg_fail(why, whysz, RM_E_INVAL, "password: not terminated");
    if (n == 0)
        return cfg_unset(it, why, whysz);
    in.pbData = (BYTE *)(void *)s;
    in.cbData = (DWORD)n;
    memset(&out, 0, sizeof(out));
    if (!CryptProtectData(&in, L"relaymesh bridge password", NULL, NULL, NULL,
                          CRYPTPROTECT_UI_FORBIDDEN, &out))
        return cfg_fail(why, whysz, RM_E_CONFIG,
                        "cannot protect the password with DPAPI: %s",
                        cfg_winerr(GetLastError(), eb, sizeof(eb)));
    r = cfg_set(it, REG_BINARY, out.pbData, out.cbData, why, whysz);
    LocalFree(out.pbData);
    return r;
}

int
rmc_cfg_save(const struct rmc_cfg *cfg, char *why, size_t whysz)
{
    wchar_t w[CFG_WTEXT_MAX];
    int r = 0;

    if (why != NULL && whysz > 0)
        why[0] = '\0';
    if (cfg == NULL)
        return cfg_fail(why, whysz, RM_E_INVAL, "rmc_cfg_save: NULL cfg");
    for (size_t i = 0; i < CFG_N && r == 0; i++) {
        const struct cfg_item *it = &cfg_items[i];
        const char *f = (const char *)cfg + it->off;

        switch (it->type) {
        case CFG_TEXT:
            r = cfg_to_wide(f, it->size, w, it->reg_text, why, whysz);
            if (r == 0)
                r = cfg_set(it, REG_SZ, w,
                            (DWORD)((wcslen(w) + 1) * sizeof(wchar_t)), why,
                            whysz);
            break;
        case CFG_SECRET:
            r = cfg_save_secret(it, f, why, whysz);
            break;
        case CFG_MS: {
            DWORD ms = (DWORD)cfg->timeout_ms;

            if (ms == 0)
                r = cfg_unset(it, why, whysz); /* the default */
            else if (ms < CFG_TIMEOUT_MIN || ms > CFG_TIMEOUT_MAX)
                r = cfg_fail(why, whysz, RM_E_CONFIG,
                             "timeout %lu ms: it must be from %u to %u",
                             (unsigned long)ms, CFG_TIMEOUT_MIN,
                             CFG_TIMEOUT_MAX);
            else
                r = cfg_set(it, REG_DWORD, &ms, sizeof(ms), why, whysz);
            break;
        }
        default:
            r = cfg_fail(why, whysz, RM_E_INVAL, "bad setting type");
            break;
        }
    }
    SecureZeroMemory(w, sizeof(w));
    return r;
}
