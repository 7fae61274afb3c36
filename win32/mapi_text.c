/*
 * mapi_text: conversions between the callers' strings (ANSI code page for
 * the A functions, UTF-16 for MAPISendMailW) and the bridge's UTF-8. See
 * mapi_int.h.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "mapi_int.h"

#include "common/rm_error.h"

/* Win32's conversions take int lengths: stay well inside them. */
#define TEXT_UNITS_MAX (INT_MAX / 4)

static int
wide_to_utf8(struct mapi_pool *p, const WCHAR *w, int wlen, size_t max,
             char **out, size_t *len)
{
    char *u;
    int n;

    if (wlen == 0) {
        u = mapi_pool_alloc(p, 1);
        if (u == NULL)
            return -ENOMEM;
        *out = u;
        if (len)
            *len = 0;
        return 0;
    }
    n = WideCharToMultiByte(CP_UTF8, 0, w, wlen, NULL, 0, NULL, NULL);
    if (n <= 0)
        return RM_E_INVAL;
    if ((size_t)n > max)
        return RM_E_TOOBIG;
    u = mapi_pool_alloc(p, (size_t)n + 1);
    if (u == NULL)
        return -ENOMEM;
    if (WideCharToMultiByte(CP_UTF8, 0, w, wlen, u, n, NULL, NULL) != n)
        return RM_E_INVAL;
    u[n] = '\0';
    *out = u;
    if (len)
        *len = (size_t)n;
    return 0;
}

int
mapi_text_wide_to_utf8(struct mapi_pool *p, const WCHAR *s, size_t max,
                       char **out, size_t *len)
{
    size_t n;

    *out = NULL;
    if (len)
        *len = 0;
    if (s == NULL)
        return 0;
    n = wcslen(s);
    if (n > TEXT_UNITS_MAX || n > max)
        return RM_E_TOOBIG; /* every UTF-16 unit is at least one byte */
    return wide_to_utf8(p, s, (int)n, max, out, len);
}

int
mapi_text_acp_to_utf8(struct mapi_pool *p, const char *s, size_t max,
                      char **out, size_t *len)
{
    WCHAR *w;
    size_t n;
    int wn, rc;

    *out = NULL;
    if (len)
        *len = 0;
    if (s == NULL)
        return 0;
    n = strlen(s);
    if (n > TEXT_UNITS_MAX || n > max)
        return RM_E_TOOBIG; /* every ANSI byte is at least one UTF-8 byte */
    if (n == 0)
        return wide_to_utf8(p, NULL, 0, max, out, len);
    wn = MultiByteToWideChar(CP_ACP, 0, s, (int)n, NULL, 0);
    if (wn <= 0)
        return RM_E_INVAL;
    w = malloc((size_t)wn * sizeof(WCHAR));
    if (w == NULL)
        return -ENOMEM;
    if (MultiByteToWideChar(CP_ACP, 0, s, (int)n, w, wn) != wn)
        rc = RM_E_INVAL;
    else
        rc = wide_to_utf8(p, w, wn, max, out, len);
    free(w);
    return rc;
}

static int
to_wide(struct mapi_pool *p, UINT cp, const char *s, size_t n, WCHAR **out)
{
    WCHAR *w;
    int wn;

    if (n > TEXT_UNITS_MAX)
        return RM_E_TOOBIG;
    if (n == 0) {
        w = mapi_pool_alloc(p, sizeof(WCHAR));
        if (w == NULL)
            return -ENOMEM;
        *out = w;
        return 0;
    }
    wn = MultiByteToWideChar(cp, 0, s, (int)n, NULL, 0);
    if (wn <= 0)
        return RM_E_INVAL;
    w = mapi_pool_alloc(p, ((size_t)wn + 1) * sizeof(WCHAR));
    if (w == NULL)
        return -ENOMEM;
    if (MultiByteToWideChar(cp, 0, s, (int)n, w, wn) != wn)
        return RM_E_INVAL;
    w[wn] = 0;
    *out = w;
    return 0;
}

int
mapi_text_acp_to_wide(struct mapi_pool *p, const char *s, WCHAR **out)
{
    *out = NULL;
    if (s == NULL)
        return 0;
    return to_wide(p, CP_ACP, s, strlen(s), out);
}

int
mapi_text_utf8_to_wide(struct mapi_pool *p, const char *s, size_t len,
                       WCHAR **out)
{
    *out = NULL;
    if (s == NULL)
        return 0;
    return to_wide(p, CP_UTF8, s, len, out);
}

static int
wide_to_acp_chain(struct alloc_chain *ch, const WCHAR *w, int wn, char **out)
{
    char *a;
    int n;

    if (wn == 0) {
        a = alloc_chain_more(ch, 1);
        if (a == NULL)
            return -ENOMEM;
        *out = a;
        return 0;
    }
    n = WideCharToMultiByte(CP_ACP, 0, w, wn, NULL, 0, NULL, NULL);
    if (n <= 0)
        return RM_E_INVAL;
    a = alloc_chain_more(ch, (size_t)n + 1);
    if (a == NULL)
        return -ENOMEM;
    if (WideCharToMultiByte(CP_ACP, 0, w, wn, a, n, NULL, NULL) != n)
        return RM_E_INVAL; /* the block stays in the chain, freed with it */
    a[n] = '\0';
    *out = a;
    return 0;
}

int
mapi_text_utf8_to_acp(struct alloc_chain *ch, const char *s, size_t len,
                      char **out)
{
    WCHAR *w;
    int wn, rc;

    *out = NULL;
    if (s == NULL)
        return 0;
    if (len > TEXT_UNITS_MAX)
        return RM_E_TOOBIG;
    if (len == 0)
        return wide_to_acp_chain(ch, NULL, 0, out);
    wn = MultiByteToWideChar(CP_UTF8, 0, s, (int)len, NULL, 0);
    if (wn <= 0)
        return RM_E_INVAL;
    w = malloc((size_t)wn * sizeof(WCHAR));
    if (w == NULL)
        return -ENOMEM;
    if (MultiByteToWideChar(CP_UTF8, 0, s, (int)len, w, wn) != wn)
        rc = RM_E_INVAL;
    else
        rc = wide_to_acp_chain(ch, w, wn, out);
    free(w);
    return rc;
}

int
mapi_text_wide_to_acp(struct alloc_chain *ch, const WCHAR *s, char **out)
{
    size_t n;

    *out = NULL;
    if (s == NULL)
        return 0;
    n = wcslen(s);
    if (n > TEXT_UNITS_MAX)
        return RM_E_TOOBIG;
    return wide_to_acp_chain(ch, s, (int)n, out);
}

void
mapi_text_utf8_cut(char *s, size_t max)
{
    size_t n = strlen(s);

    if (n <= max)
        return;
    n = max;
    /* Back off continuation bytes (10xxxxxx) to a character's start. */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    s[n] = '\0';
}

const char *
mapi_text_strip_smtp(const char *s)
{
    if (s == NULL)
        return NULL;
    while (*s == ' ' || *s == '\t')
        s++;
    if (_strnicmp(s, "SMTP:", 5) == 0)
        s += 5;
    return s;
}
