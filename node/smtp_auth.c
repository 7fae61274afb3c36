/*
 * smtp_auth: see smtp_auth.h. Base64 is libsodium's constant-time codec.
 */
#include <string.h>

#include <sodium.h>

#include "node/smtp_auth.h"

enum smtp_auth_err
smtp_auth_b64(const char *in, size_t len, char *out, size_t outsz,
              size_t *outlen)
{
    const char *end = NULL;
    size_t n = 0;
    unsigned char high = 0;

    *outlen = 0;
    if (outsz == 0)
        return SMTP_AUTH_TOOLONG;
    out[0] = '\0';
    if (len == 1 && in[0] == '=')
        return SMTP_AUTH_OK;
    if (len == 0 || len > SMTP_AUTH_LINE_MAX || len % 4 != 0)
        return SMTP_AUTH_BASE64;
    if (len / 4 * 3 >= outsz)
        return SMTP_AUTH_TOOLONG;
    /* libsodium reads the text as (signed) char: octets 0x80-0xff pass
       as '/'. Refuse them first (no branch per octet: constant time). */
    for (size_t i = 0; i < len; i++)
        high |= (unsigned char)in[i];
    if (high & 0x80)
        return SMTP_AUTH_BASE64;
    if (sodium_base642bin((unsigned char *)out, outsz - 1, in, len, NULL, &n,
                          &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != in + len)
        return SMTP_AUTH_BASE64;
    out[n] = '\0';
    *outlen = n;
    return SMTP_AUTH_OK;
}

int
smtp_auth_b64_encode(const char *in, size_t len, char *out, size_t outsz)
{
    if (outsz < sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL))
        return -1;
    sodium_bin2base64(out, outsz, (const unsigned char *)in, len,
                      sodium_base64_VARIANT_ORIGINAL);
    return 0;
}

enum smtp_auth_err
smtp_auth_field(const char *p, size_t len, char *out, size_t max,
                size_t *outlen)
{
    if (len > max)
        return SMTP_AUTH_TOOLONG;
    if (memchr(p, '\0', len) != NULL)
        return SMTP_AUTH_FORM;
    if (len)
        memcpy(out, p, len);
    out[len] = '\0';
    if (outlen)
        *outlen = len;
    return SMTP_AUTH_OK;
}

enum smtp_auth_err
smtp_auth_plain(const char *msg, size_t len, struct smtp_auth_cred *out)
{
    const char *z1 = memchr(msg, '\0', len), *z2;
    const char *user, *pass;
    size_t zlen, ulen, plen;
    enum smtp_auth_err e;

    memset(out, 0, sizeof(*out));
    if (z1 == NULL)
        return SMTP_AUTH_FORM;
    zlen = (size_t)(z1 - msg);
    user = z1 + 1;
    z2 = memchr(user, '\0', len - zlen - 1);
    if (z2 == NULL)
        return SMTP_AUTH_FORM;
    ulen = (size_t)(z2 - user);
    pass = z2 + 1;
    plen = len - zlen - ulen - 2;
    if (ulen == 0)
        return SMTP_AUTH_FORM;
    if ((e = smtp_auth_field(user, ulen, out->user, SMTP_AUTH_ID_MAX, NULL)) !=
        SMTP_AUTH_OK)
        return e;
    if ((e = smtp_auth_field(pass, plen, out->pass, SMTP_AUTH_PASS_MAX,
                             &out->passlen)) != SMTP_AUTH_OK) {
        sodium_memzero(out, sizeof(*out));
        return e;
    }
    if (zlen != 0 && (zlen != ulen || memcmp(msg, user, ulen) != 0)) {
        sodium_memzero(out, sizeof(*out));
        return SMTP_AUTH_AUTHZID;
    }
    return SMTP_AUTH_OK;
}
