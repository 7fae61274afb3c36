/*
 * smtp_auth: the SASL decoders of SMTP AUTH (RFC 4954): base64 lines and
 * the PLAIN message (RFC 4616). Pure functions over caller buffers; no
 * I/O, no state, fuzzed (fuzz/fuzz_smtp_auth.c).
 */
#ifndef RM_NODE_SMTP_AUTH_H
#define RM_NODE_SMTP_AUTH_H

#include <stddef.h>

/* RFC 4954 §4: a client response may be 12288 octets of base64. */
#define SMTP_AUTH_LINE_MAX 12288
#define SMTP_AUTH_ID_MAX 320 /* login name (an address) */
#define SMTP_AUTH_PASS_MAX 1024

enum smtp_auth_err {
    SMTP_AUTH_OK = 0,
    SMTP_AUTH_BASE64,  /* not base64 */
    SMTP_AUTH_FORM,    /* not authzid NUL authcid NUL passwd */
    SMTP_AUTH_TOOLONG, /* a field past its maximum */
    SMTP_AUTH_AUTHZID  /* asks to act as someone else */
};

struct smtp_auth_cred {
    char user[SMTP_AUTH_ID_MAX + 1];
    char pass[SMTP_AUTH_PASS_MAX + 1];
    size_t passlen;
};

/*
 * Decode one base64 response line (RFC 4648, with padding; "=" alone is
 * the empty response, RFC 4954 §4). out gets a NUL after the bytes.
 */
enum smtp_auth_err smtp_auth_b64(const char *in, size_t len, char *out,
                                 size_t outsz, size_t *outlen);
/* Encode for a 334 challenge. 0, or -1 when out is too small. */
int smtp_auth_b64_encode(const char *in, size_t len, char *out, size_t outsz);
/*
 * Parse a decoded PLAIN message: [authzid] NUL authcid NUL passwd. An
 * authzid other than empty or authcid is refused (no proxy logins).
 */
enum smtp_auth_err smtp_auth_plain(const char *msg, size_t len,
                                   struct smtp_auth_cred *out);
/* A decoded LOGIN username or password into out (no NUL allowed). */
enum smtp_auth_err smtp_auth_field(const char *p, size_t len, char *out,
                                   size_t max, size_t *outlen);

#endif
