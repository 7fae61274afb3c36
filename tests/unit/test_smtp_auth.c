/*
 * Unit tests for node/smtp_auth.c: base64 response lines (RFC 4648 test
 * vectors, padding, bad input, output bounds), encoding round trips, the
 * SASL PLAIN message (RFC 4616) and LOGIN fields.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/smtp_auth.h"

/* A string literal with its length (it may hold NUL bytes). */
#define S(lit) (lit), (sizeof(lit) - 1)

/* Guard bytes after an output buffer: a decoder must not touch them. */
#define GUARD 16
#define GUARD_BYTE 0x5a

static char *
guarded(size_t n)
{
    char *p = malloc(n + GUARD);

    assert_non_null(p);
    memset(p, GUARD_BYTE, n + GUARD);
    return p;
}

static void
check_guard(const char *p, size_t n)
{
    for (size_t i = 0; i < GUARD; i++)
        assert_int_equal((unsigned char)p[n + i], GUARD_BYTE);
}

/* Decode in (NUL-terminated) into a large buffer: the result code. */
static enum smtp_auth_err
dec(const char *in, char *out, size_t *n)
{
    return smtp_auth_b64(in, strlen(in), out, 256, n);
}

/* ---- 1. base64 decoding --------------------------------------------- */

static const struct {
    const char *plain, *b64;
} rfc4648[] = {
    /* RFC 4648 §10 */
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void
test_b64_vectors(void **state)
{
    char out[256];
    size_t n;

    (void)state;
    for (size_t i = 1; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        n = 99;
        assert_int_equal(dec(rfc4648[i].b64, out, &n), SMTP_AUTH_OK);
        assert_int_equal(n, strlen(rfc4648[i].plain));
        assert_memory_equal(out, rfc4648[i].plain, n);
        assert_int_equal(out[n], '\0');
    }
    /* Binary output, NULs included: "\0alice\0secret". */
    assert_int_equal(dec("AGFsaWNlAHNlY3JldA==", out, &n), SMTP_AUTH_OK);
    assert_int_equal(n, 13);
    assert_memory_equal(out, "\0alice\0secret", 13);
    assert_int_equal(dec("AP/+AA==", out, &n), SMTP_AUTH_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "\0\xff\xfe\0", 4);
    /* The whole alphabet. */
    assert_int_equal(
        dec("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            out, &n),
        SMTP_AUTH_OK);
    assert_int_equal(n, 48);
    assert_int_equal((unsigned char)out[0], 0x00);
    assert_int_equal((unsigned char)out[1], 0x10);
    assert_int_equal((unsigned char)out[2], 0x83);
    assert_int_equal((unsigned char)out[47], 0xbf);
}

static void
test_b64_empty(void **state)
{
    char out[8];
    size_t n = 99;

    (void)state;
    /* RFC 4954 §4: "=" alone is the empty response. */
    memset(out, 'x', sizeof(out));
    assert_int_equal(smtp_auth_b64(S("="), out, sizeof(out), &n), SMTP_AUTH_OK);
    assert_int_equal(n, 0);
    assert_int_equal(out[0], '\0');
    n = 99;
    assert_int_equal(smtp_auth_b64(S("="), out, 1, &n), SMTP_AUTH_OK);
    assert_int_equal(n, 0);
    /* An empty line is not a response. */
    n = 99;
    assert_int_equal(smtp_auth_b64("", 0, out, sizeof(out), &n),
                     SMTP_AUTH_BASE64);
    assert_int_equal(n, 0);
    assert_int_equal(out[0], '\0');
    assert_int_equal(smtp_auth_b64(S("=="), out, sizeof(out), &n),
                     SMTP_AUTH_BASE64);
    assert_int_equal(smtp_auth_b64(S("===="), out, sizeof(out), &n),
                     SMTP_AUTH_BASE64);
}

static void
test_b64_padding(void **state)
{
    static const char *const bad[] = {
        "Zg",       /* padding is required */
        "Zm8",      /* */
        "Zg=",      /* short padding */
        "Zg===",    /* long padding */
        "Zm9vYg",   /* */
        "Zm9v====", /* padding after a full quantum */
        "Zm8==",    /* */
        "Z===",     /* one sextet is no octet */
        "Zg==Zg==", /* padding in the middle */
        "Zm=v",     /* */
        "=Zm9",     /* */
        "Zh==",     /* non-zero bits past the last octet */
        "Zm9=",     /* */
        "Zm8/Zg=a", /* */
    };
    char out[256];
    size_t n;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = 99;
        if (dec(bad[i], out, &n) != SMTP_AUTH_BASE64)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_int_equal(n, 0);
    }
}

static void
test_b64_bad_chars(void **state)
{
    static const char *const bad[] = {
        "Zm9v YmFy",                  /* whitespace inside */
        " Zm9vYmFy",                  /* */
        "Zm9vYmFy ",                  /* */
        "Zm9v\tYmF",                  /* */
        "Zm9vYmFy\r\n", "Zm9vYg==\n", /* */
        "Zm9vYm-_",                   /* the URL-safe alphabet */
        "Zm9*",                       /* */
        "Zm9.",                       /* */
        "Zm9\x80",                    /* */
        "Zm9\xff",                    /* */
        "****",                       /* */
    };
    char out[256];
    size_t n;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = 99;
        if (dec(bad[i], out, &n) != SMTP_AUTH_BASE64)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_int_equal(n, 0);
    }
    /* Every octet in the last place: only the alphabet and "=" pass.
       (libsodium alone takes 0x80-0xff for "/".) */
    for (int c = 0; c < 256; c++) {
        char in[4] = {'A', 'A', 'A', (char)c};
        int want = c == '=' || c == '+' || c == '/' || (c >= 'A' && c <= 'Z') ||
                   (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        n = 99;
        if ((smtp_auth_b64(in, 4, out, sizeof(out), &n) == SMTP_AUTH_OK) !=
            want)
            fail_msg("octet 0x%02x %s", c, want ? "refused" : "accepted");
    }
    /* A NUL inside the line (the length says where it ends). */
    n = 99;
    assert_int_equal(smtp_auth_b64(S("Zm9v\0AAA"), out, sizeof(out), &n),
                     SMTP_AUTH_BASE64);
    assert_int_equal(smtp_auth_b64(S("Zm\0v"), out, sizeof(out), &n),
                     SMTP_AUTH_BASE64);
    assert_int_equal(n, 0);
    /* Only len bytes are read: what follows does not matter. */
    assert_int_equal(smtp_auth_b64("Zm9v!!!!", 4, out, sizeof(out), &n),
                     SMTP_AUTH_OK);
    assert_int_equal(n, 3);
    assert_string_equal(out, "foo");
}

static void
test_b64_outsz(void **state)
{
    char *out;
    size_t n;

    (void)state;
    /* "foobar" needs 6 octets and a NUL. */
    out = guarded(7);
    assert_int_equal(smtp_auth_b64(S("Zm9vYmFy"), out, 7, &n), SMTP_AUTH_OK);
    assert_int_equal(n, 6);
    assert_string_equal(out, "foobar");
    check_guard(out, 7);
    free(out);
    for (size_t sz = 0; sz < 7; sz++) {
        out = guarded(sz);
        n = 99;
        assert_int_equal(smtp_auth_b64(S("Zm9vYmFy"), out, sz, &n),
                         SMTP_AUTH_TOOLONG);
        assert_int_equal(n, 0);
        check_guard(out, sz);
        free(out);
    }
    /* With padding the output is shorter than 3 per quantum: it either
       fits or is refused, never written past outsz. */
    for (size_t sz = 0; sz < 8; sz++) {
        enum smtp_auth_err e;
        out = guarded(sz);
        n = 99;
        e = smtp_auth_b64(S("Zm9vYg=="), out, sz, &n);
        if (e == SMTP_AUTH_OK) {
            assert_true(sz >= 5);
            assert_int_equal(n, 4);
            assert_string_equal(out, "foob");
        } else {
            assert_int_equal(e, SMTP_AUTH_TOOLONG);
            assert_int_equal(n, 0);
        }
        check_guard(out, sz);
        free(out);
    }
    out = guarded(7);
    assert_int_equal(smtp_auth_b64(S("Zm9vYg=="), out, 7, &n), SMTP_AUTH_OK);
    assert_int_equal(n, 4);
    check_guard(out, 7);
    free(out);
}

static void
test_b64_line_max(void **state)
{
    const size_t max = SMTP_AUTH_LINE_MAX, outmax = max / 4 * 3;
    char *in = malloc(max + 5);
    char *out = guarded(outmax + 1);
    size_t n;

    (void)state;
    assert_non_null(in);
    memset(in, 'A', max + 4);
    in[max + 4] = '\0';
    /* The longest line RFC 4954 §4 allows. */
    assert_int_equal(smtp_auth_b64(in, max, out, outmax + 1, &n), SMTP_AUTH_OK);
    assert_int_equal(n, outmax);
    for (size_t i = 0; i < outmax; i++)
        assert_int_equal(out[i], 0);
    check_guard(out, outmax + 1);
    /* One quantum more is refused, whatever the room. */
    free(out);
    out = guarded(outmax + 8);
    n = 99;
    assert_int_not_equal(smtp_auth_b64(in, max + 4, out, outmax + 8, &n),
                         SMTP_AUTH_OK);
    assert_int_equal(n, 0);
    check_guard(out, outmax + 8);
    free(out);
    free(in);
}

/* ---- 2. base64 encoding --------------------------------------------- */

static void
test_b64_encode(void **state)
{
    char out[256];

    (void)state;
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        const char *p = rfc4648[i].plain, *b = rfc4648[i].b64;
        assert_int_equal(smtp_auth_b64_encode(p, strlen(p), out, sizeof(out)),
                         0);
        assert_string_equal(out, b);
        /* Room for exactly the text and its NUL. */
        assert_int_equal(smtp_auth_b64_encode(p, strlen(p), out, strlen(b) + 1),
                         0);
        assert_string_equal(out, b);
        assert_int_equal(smtp_auth_b64_encode(p, strlen(p), out, strlen(b)),
                         -1);
    }
    /* The challenges of LOGIN. */
    assert_int_equal(smtp_auth_b64_encode(S("Username:"), out, sizeof(out)), 0);
    assert_string_equal(out, "VXNlcm5hbWU6");
    assert_int_equal(smtp_auth_b64_encode(S("Password:"), out, sizeof(out)), 0);
    assert_string_equal(out, "UGFzc3dvcmQ6");
    assert_int_equal(smtp_auth_b64_encode(S("x"), out, 0), -1);
}

static void
test_b64_round_trip(void **state)
{
    static char in[SMTP_AUTH_LINE_MAX / 4 * 3];
    static char enc[SMTP_AUTH_LINE_MAX + 1];
    static char back[SMTP_AUTH_LINE_MAX / 4 * 3 + 1];
    uint32_t x = 2463534242u; /* xorshift32 */
    size_t n;

    (void)state;
    for (size_t i = 0; i < sizeof(in); i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        in[i] = (char)(x & 0xff);
    }
    for (size_t i = 0; i < 256; i++)
        in[i] = (char)i;
    for (size_t len = 1; len <= sizeof(in);
         len = len < 300 ? len + 1 : len * 2 + 7) {
        if (len > sizeof(in))
            len = sizeof(in);
        assert_int_equal(smtp_auth_b64_encode(in, len, enc, sizeof(enc)), 0);
        assert_int_equal(strlen(enc), (len + 2) / 3 * 4);
        n = 0;
        assert_int_equal(
            smtp_auth_b64(enc, strlen(enc), back, sizeof(back), &n),
            SMTP_AUTH_OK);
        assert_int_equal(n, len);
        assert_memory_equal(back, in, len);
        if (len == sizeof(in))
            break;
    }
}

/* ---- 3. PLAIN (RFC 4616) -------------------------------------------- */

static void
assert_cred_zero(const struct smtp_auth_cred *cr)
{
    assert_int_equal(cr->user[0], '\0');
    assert_int_equal(cr->pass[0], '\0');
    assert_int_equal(cr->passlen, 0);
}

static void
test_plain_ok(void **state)
{
    struct smtp_auth_cred cr;

    (void)state;
    /* No authzid. */
    assert_int_equal(smtp_auth_plain(S("\0alice\0secret"), &cr), SMTP_AUTH_OK);
    assert_string_equal(cr.user, "alice");
    assert_string_equal(cr.pass, "secret");
    assert_int_equal(cr.passlen, 6);
    /* An authzid equal to the authcid. */
    assert_int_equal(
        smtp_auth_plain(S("alice@example.org\0alice@example.org\0pw"), &cr),
        SMTP_AUTH_OK);
    assert_string_equal(cr.user, "alice@example.org");
    assert_string_equal(cr.pass, "pw");
    assert_int_equal(cr.passlen, 2);
    /* The password is octets: UTF-8 and spaces kept as they are. */
    assert_int_equal(smtp_auth_plain(S("\0bob\0p\xc3\xa4ss w\xff rd "), &cr),
                     SMTP_AUTH_OK);
    assert_string_equal(cr.user, "bob");
    assert_int_equal(cr.passlen, 12);
    assert_memory_equal(cr.pass, "p\xc3\xa4ss w\xff rd ", 12);
    assert_int_equal(cr.pass[12], '\0');
    /* A one-octet name and password. */
    assert_int_equal(smtp_auth_plain(S("\0a\0b"), &cr), SMTP_AUTH_OK);
    assert_string_equal(cr.user, "a");
    assert_string_equal(cr.pass, "b");
}

static void
test_plain_vectors(void **state)
{
    char d[256];
    size_t n;
    struct smtp_auth_cred cr;

    (void)state;
    /* RFC 4616 §4, first example. */
    assert_int_equal(dec("AHRpbQB0YW5zdGFhZnRhbnN0YWFm", d, &n), SMTP_AUTH_OK);
    assert_int_equal(smtp_auth_plain(d, n, &cr), SMTP_AUTH_OK);
    assert_string_equal(cr.user, "tim");
    assert_string_equal(cr.pass, "tanstaaftanstaaf");
    assert_int_equal(cr.passlen, 16);
    /* RFC 4616 §4, second example: Kurt acting as Ursel is a proxy
       login, refused here. */
    assert_int_equal(dec("VXJzZWwAS3VydAB4aXBqM3BsbXE=", d, &n), SMTP_AUTH_OK);
    assert_int_equal(n, 20);
    assert_int_equal(smtp_auth_plain(d, n, &cr), SMTP_AUTH_AUTHZID);
    assert_cred_zero(&cr);
    /* RFC 4954 §4 example: "test" NUL "test" NUL "1234". */
    assert_int_equal(dec("dGVzdAB0ZXN0ADEyMzQ=", d, &n), SMTP_AUTH_OK);
    assert_int_equal(smtp_auth_plain(d, n, &cr), SMTP_AUTH_OK);
    assert_string_equal(cr.user, "test");
    assert_string_equal(cr.pass, "1234");
    assert_int_equal(cr.passlen, 4);
}

static void
test_plain_authzid(void **state)
{
    struct smtp_auth_cred cr;

    (void)state;
    assert_int_equal(smtp_auth_plain(S("bob\0alice\0secret"), &cr),
                     SMTP_AUTH_AUTHZID);
    assert_cred_zero(&cr);
    /* A prefix, an extension, another case: all someone else. */
    assert_int_equal(smtp_auth_plain(S("alic\0alice\0secret"), &cr),
                     SMTP_AUTH_AUTHZID);
    assert_cred_zero(&cr);
    assert_int_equal(smtp_auth_plain(S("alicex\0alice\0secret"), &cr),
                     SMTP_AUTH_AUTHZID);
    assert_int_equal(smtp_auth_plain(S("Alice\0alice\0secret"), &cr),
                     SMTP_AUTH_AUTHZID);
    assert_int_equal(smtp_auth_plain(S("alice\0alicf\0secret"), &cr),
                     SMTP_AUTH_AUTHZID);
    assert_cred_zero(&cr);
}

static void
test_plain_form(void **state)
{
    struct smtp_auth_cred cr;

    (void)state;
    /* Missing NULs. */
    assert_int_equal(smtp_auth_plain(S("alice"), &cr), SMTP_AUTH_FORM);
    assert_cred_zero(&cr);
    assert_int_equal(smtp_auth_plain(S("x"), &cr), SMTP_AUTH_FORM);
    assert_int_equal(smtp_auth_plain(S("\0alice"), &cr), SMTP_AUTH_FORM);
    assert_int_equal(smtp_auth_plain(S("alice\0secret"), &cr), SMTP_AUTH_FORM);
    assert_int_equal(smtp_auth_plain(S("\0"), &cr), SMTP_AUTH_FORM);
    assert_int_equal(smtp_auth_plain("", 0, &cr), SMTP_AUTH_FORM);
    assert_cred_zero(&cr);
    /* An empty authcid, with or without an authzid. */
    assert_int_equal(smtp_auth_plain(S("\0\0secret"), &cr), SMTP_AUTH_FORM);
    assert_cred_zero(&cr);
    assert_int_equal(smtp_auth_plain(S("alice\0\0secret"), &cr),
                     SMTP_AUTH_FORM);
    assert_int_equal(smtp_auth_plain(S("\0\0"), &cr), SMTP_AUTH_FORM);
    assert_int_equal(smtp_auth_plain(S("\0\0\0"), &cr), SMTP_AUTH_FORM);
    /* A NUL inside the password (a third NUL). */
    assert_int_equal(smtp_auth_plain(S("\0alice\0sec\0ret"), &cr),
                     SMTP_AUTH_FORM);
    assert_cred_zero(&cr);
    assert_int_equal(smtp_auth_plain(S("\0alice\0secret\0"), &cr),
                     SMTP_AUTH_FORM);
    assert_cred_zero(&cr);
    assert_int_equal(smtp_auth_plain(S("\0alice\0\0"), &cr), SMTP_AUTH_FORM);
    assert_cred_zero(&cr);
}

static void
test_plain_empty_pass(void **state)
{
    struct smtp_auth_cred cr;

    (void)state;
    /* RFC 4616's passwd is 1*SAFE, but the decoder passes an empty one
       on: the check of the password refuses it like any wrong one
       (and counts it as a failure). */
    assert_int_equal(smtp_auth_plain(S("\0alice\0"), &cr), SMTP_AUTH_OK);
    assert_string_equal(cr.user, "alice");
    assert_int_equal(cr.passlen, 0);
    assert_string_equal(cr.pass, "");
}

static void
test_plain_lengths(void **state)
{
    /* authzid NUL authcid NUL passwd, each up to its maximum + 1. */
    static char msg[2 * (SMTP_AUTH_ID_MAX + 1) + SMTP_AUTH_PASS_MAX + 3];
    char id[SMTP_AUTH_ID_MAX + 2], pass[SMTP_AUTH_PASS_MAX + 2];
    struct smtp_auth_cred cr;
    size_t len;

    (void)state;
    memset(id, 'u', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    memset(pass, 'p', sizeof(pass) - 1);
    pass[sizeof(pass) - 1] = '\0';

#define BUILD(zl, ul, pl)                                                      \
    do {                                                                       \
        len = 0;                                                               \
        memcpy(msg + len, id, (zl));                                           \
        len += (zl);                                                           \
        msg[len++] = '\0';                                                     \
        memcpy(msg + len, id, (ul));                                           \
        len += (ul);                                                           \
        msg[len++] = '\0';                                                     \
        memcpy(msg + len, pass, (pl));                                         \
        len += (pl);                                                           \
    } while (0)

    /* Exactly the maxima. */
    BUILD(0, SMTP_AUTH_ID_MAX, SMTP_AUTH_PASS_MAX);
    assert_int_equal(smtp_auth_plain(msg, len, &cr), SMTP_AUTH_OK);
    assert_int_equal(strlen(cr.user), SMTP_AUTH_ID_MAX);
    assert_int_equal(cr.passlen, SMTP_AUTH_PASS_MAX);
    assert_memory_equal(cr.pass, pass, SMTP_AUTH_PASS_MAX);
    assert_int_equal(cr.pass[SMTP_AUTH_PASS_MAX], '\0');
    BUILD(SMTP_AUTH_ID_MAX, SMTP_AUTH_ID_MAX, SMTP_AUTH_PASS_MAX);
    assert_int_equal(smtp_auth_plain(msg, len, &cr), SMTP_AUTH_OK);
    assert_int_equal(strlen(cr.user), SMTP_AUTH_ID_MAX);

    /* One octet past: refused, nothing handed back. */
    BUILD(0, SMTP_AUTH_ID_MAX + 1, 6);
    assert_int_equal(smtp_auth_plain(msg, len, &cr), SMTP_AUTH_TOOLONG);
    assert_cred_zero(&cr);
    BUILD(0, 5, SMTP_AUTH_PASS_MAX + 1);
    assert_int_equal(smtp_auth_plain(msg, len, &cr), SMTP_AUTH_TOOLONG);
    assert_cred_zero(&cr);
    BUILD(SMTP_AUTH_ID_MAX + 1, SMTP_AUTH_ID_MAX + 1, 6);
    assert_int_equal(smtp_auth_plain(msg, len, &cr), SMTP_AUTH_TOOLONG);
    assert_cred_zero(&cr);
    /* A long authzid that is not the authcid is someone else. */
    BUILD(SMTP_AUTH_ID_MAX + 1, 5, 6);
    assert_int_equal(smtp_auth_plain(msg, len, &cr), SMTP_AUTH_AUTHZID);
    assert_cred_zero(&cr);
#undef BUILD
}

/* ---- 4. LOGIN fields ------------------------------------------------ */

static void
test_field(void **state)
{
    char *out;
    size_t n;

    (void)state;
    out = guarded(6);
    n = 99;
    assert_int_equal(smtp_auth_field(S("alice"), out, 5, &n), SMTP_AUTH_OK);
    assert_int_equal(n, 5);
    assert_string_equal(out, "alice");
    check_guard(out, 6);
    /* One past max: refused, nothing written. */
    memset(out, GUARD_BYTE, 6 + GUARD);
    assert_int_equal(smtp_auth_field(S("alice!"), out, 5, &n),
                     SMTP_AUTH_TOOLONG);
    assert_int_equal((unsigned char)out[0], GUARD_BYTE);
    check_guard(out, 6);
    /* A NUL in it. */
    assert_int_equal(smtp_auth_field(S("al\0ce"), out, 5, &n), SMTP_AUTH_FORM);
    assert_int_equal(smtp_auth_field(S("\0"), out, 5, &n), SMTP_AUTH_FORM);
    assert_int_equal(smtp_auth_field(S("alice\0"), out, 5, &n),
                     SMTP_AUTH_TOOLONG);
    /* Empty; outlen may be NULL. */
    n = 99;
    assert_int_equal(smtp_auth_field("", 0, out, 5, &n), SMTP_AUTH_OK);
    assert_int_equal(n, 0);
    assert_int_equal(out[0], '\0');
    assert_int_equal(smtp_auth_field(S("bob"), out, 5, NULL), SMTP_AUTH_OK);
    assert_string_equal(out, "bob");
    check_guard(out, 6);
    free(out);

    /* At the real maxima. */
    {
        char big[SMTP_AUTH_PASS_MAX + 1];
        char *o = guarded(SMTP_AUTH_PASS_MAX + 1);
        memset(big, 'p', sizeof(big));
        assert_int_equal(
            smtp_auth_field(big, SMTP_AUTH_PASS_MAX, o, SMTP_AUTH_PASS_MAX, &n),
            SMTP_AUTH_OK);
        assert_int_equal(n, SMTP_AUTH_PASS_MAX);
        assert_int_equal(o[SMTP_AUTH_PASS_MAX], '\0');
        assert_int_equal(
            smtp_auth_field(big, sizeof(big), o, SMTP_AUTH_PASS_MAX, &n),
            SMTP_AUTH_TOOLONG);
        check_guard(o, SMTP_AUTH_PASS_MAX + 1);
        free(o);
    }

    /* LOGIN over base64: "Username:" then the name. */
    {
        char d[256], user[SMTP_AUTH_ID_MAX + 1];
        assert_int_equal(dec("YWxpY2VAZXhhbXBsZS5vcmc=", d, &n), SMTP_AUTH_OK);
        assert_int_equal(smtp_auth_field(d, n, user, SMTP_AUTH_ID_MAX, &n),
                         SMTP_AUTH_OK);
        assert_string_equal(user, "alice@example.org");
        assert_int_equal(n, 17);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_vectors),
        cmocka_unit_test(test_b64_empty),
        cmocka_unit_test(test_b64_padding),
        cmocka_unit_test(test_b64_bad_chars),
        cmocka_unit_test(test_b64_outsz),
        cmocka_unit_test(test_b64_line_max),
        cmocka_unit_test(test_b64_encode),
        cmocka_unit_test(test_b64_round_trip),
        cmocka_unit_test(test_plain_ok),
        cmocka_unit_test(test_plain_vectors),
        cmocka_unit_test(test_plain_authzid),
        cmocka_unit_test(test_plain_form),
        cmocka_unit_test(test_plain_empty_pass),
        cmocka_unit_test(test_plain_lengths),
        cmocka_unit_test(test_field),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
