/*
 * Fuzz the AUTH decoders: base64 line -> PLAIN message, and LOGIN fields.
 * Invariants: no crash; on success the fields are NUL-free and bounded,
 * and encoding then decoding gives the bytes back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node/smtp_auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dec[SMTP_AUTH_LINE_MAX];
    static char enc[SMTP_AUTH_LINE_MAX * 2];
    static char back[SMTP_AUTH_LINE_MAX];
    struct smtp_auth_cred cr;
    char field[SMTP_AUTH_PASS_MAX + 1];
    size_t n = 0, m = 0;

    if (smtp_auth_b64((const char *)data, size, dec, sizeof(dec), &n) ==
        SMTP_AUTH_OK) {
        if (smtp_auth_plain(dec, n, &cr) == SMTP_AUTH_OK) {
            if (strlen(cr.user) == 0 || strlen(cr.user) > SMTP_AUTH_ID_MAX ||
                cr.passlen > SMTP_AUTH_PASS_MAX ||
                memchr(cr.pass, '\0', cr.passlen) != NULL)
                abort();
        }
        (void)smtp_auth_field(dec, n, field, SMTP_AUTH_PASS_MAX, NULL);
        if (n > 0 && smtp_auth_b64_encode(dec, n, enc, sizeof(enc)) == 0) {
            if (smtp_auth_b64(enc, strlen(enc), back, sizeof(back), &m) !=
                    SMTP_AUTH_OK ||
                m != n || memcmp(back, dec, n) != 0)
                abort();
        }
    }
    /* The raw bytes as a PLAIN message too (decoder bypassed). */
    (void)smtp_auth_plain((const char *)data, size, &cr);
    return 0;
}
