/*
 * store_addr.c: the canonical form of an address used as a mailbox and
 * user key.
 */
#include <string.h>
#include <strings.h>

#include "common/rm_error.h"
#include "store/store.h"

int
store_addr_canon(const char *addr, char *out, size_t outsz)
{
    const char *at;
    size_t n, lp;

    if (addr == NULL || out == NULL || outsz == 0)
        return RM_E_INVAL;
    n = strlen(addr);
    /* The last '@' splits: a quoted local part may contain '@'
       (RFC 5321 §4.1.2), a domain never does. */
    at = strrchr(addr, '@');
    if (at == NULL || at == addr || at[1] == '\0' || n >= outsz ||
        n >= STORE_ADDR_MAX)
        return RM_E_INVAL;
    lp = (size_t)(at - addr);
    /* RFC 5321 §4.5.1: "postmaster" is case-insensitive. Other local
       parts are case-sensitive (§2.4) and are kept as given. */
    if (lp == 10 && strncasecmp(addr, "postmaster", 10) == 0)
        memcpy(out, "postmaster", 10);
    else
        memcpy(out, addr, lp);
    out[lp] = '@';
    /* "example.com." (the DNS root) is "example.com". */
    if (n > lp + 2 && addr[n - 1] == '.')
        n--;
    for (size_t i = lp + 1; i < n; i++) {
        char c = addr[i];

        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[n] = '\0';
    return 0;
}
