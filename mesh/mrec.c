/*
 * mrec: the mesh's wire records (see mrec.h for the encodings and the
 * contract).
 *
 * One encoder per record, written as a "pack" function that emits the
 * fields in a fixed order, with or without the signature: the same
 * function makes the wire encoding and the bytes that are signed, so the
 * two cannot drift apart. Packing goes through a small writer that either
 * appends to a struct buf, fills a fixed array or only counts (the size of
 * a node record is checked without building it).
 *
 * Decoders check every value against the same rules the encoders enforce,
 * so whatever decodes also re-encodes, and to the same canonical bytes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <sodium.h>

#include "common/mpack_check.h"
#include "common/mpack_decode.h"
#include "common/rm_error.h"
#include "mesh/mrec.h"

/* Signing contexts: sizeof() counts the NUL that ends each. */
static const char mrec_ctx_cert[] = "relaymesh-cert-v1";
static const char mrec_ctx_node[] = "relaymesh-node-v1";
static const char mrec_ctx_revoke[] = "relaymesh-revoke-v1";
static const char mrec_ctx_invite[] = "relaymesh-invite-v1";

/* Room for a signed certificate, revocation or invite with its context
 * (an invite, the largest, is under 1,400 bytes). */
#define MREC_SMALL_MAX 2048
#define MREC_TEXT_IN_MAX 16384 /* invite text, whitespace included */
#define MREC_B64 sodium_base64_VARIANT_URLSAFE_NO_PADDING

_Static_assert(MREC_NAME_MAX == SWIM_NAME_MAX, "one name size");
_Static_assert(MREC_SK == crypto_sign_SECRETKEYBYTES, "sk size");
_Static_assert(MREC_PK == crypto_sign_PUBLICKEYBYTES, "pk size");
_Static_assert(MREC_SIG == crypto_sign_BYTES, "sig size");
_Static_assert(MREC_INVITE_TEXT_MAX >=
                   sizeof(MREC_INVITE_PREFIX) - 1 +
                       sodium_base64_ENCODED_LEN(MREC_INVITE_ENC_MAX, MREC_B64),
               "invite text room");
_Static_assert(MREC_INVITE_ENC_MAX + sizeof(mrec_ctx_invite) <= MREC_SMALL_MAX,
               "invite signing room");

/* ---- text rules --------------------------------------------------------- */

static int
mrec_name_ok(const char *s, size_t n)
{
    if (n < 1 || n >= MREC_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* An invite's name for the joiner: "" (keep its own) or a name. */
static int
mrec_name_or_empty_ok(const char *s, size_t n)
{
    return n == 0 || mrec_name_ok(s, n);
}

/* swim.h's rule: 1..63 bytes, no NUL. */
static int
mrec_swim_name_ok(const char *s, size_t n)
{
    return n >= 1 && n < SWIM_NAME_MAX && memchr(s, '\0', n) == NULL;
}

static int
mrec_swim_target_ok(const char *s, size_t n)
{
    return n == 0 || mrec_swim_name_ok(s, n);
}

static int
mrec_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int
mrec_addr_ok(const char *s, size_t n)
{
    size_t colon = n, hostlen;
    unsigned long port = 0;

    if (n < 1 || n >= MREC_ADDR_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x21 || c > 0x7e)
            return 0;
        if (c == ':')
            colon = i;
    }
    if (colon == n || n - colon - 1 < 1 || n - colon - 1 > 5)
        return 0;
    for (size_t i = colon + 1; i < n; i++) {
        if (!mrec_digit((unsigned char)s[i]))
            return 0;
        port = port * 10 + (unsigned long)(s[i] - '0');
    }
    if (port < 1 || port > 65535)
        return 0;
    hostlen = colon;
    if (hostlen == 0)
        return 0;
    if (s[0] == '[') {
        /* "[v6]:port": hex digits, ':' and '.' (v4-mapped) inside. */
        if (hostlen < 3 || s[hostlen - 1] != ']')
            return 0;
        for (size_t i = 1; i < hostlen - 1; i++) {
            unsigned char c = (unsigned char)s[i];

            if (!(mrec_digit(c) || (c >= 'a' && c <= 'f') ||
                  (c >= 'A' && c <= 'F') || c == ':' || c == '.'))
                return 0;
        }
        return 1;
    }
    for (size_t i = 0; i < hostlen; i++) {
        if (s[i] == ':' || s[i] == '[' || s[i] == ']')
            return 0;
    }
    return 1;
}

static int
mrec_domain_ok(const char *s, size_t n)
{
    if (n < 1 || n > MREC_DOMAIN_MAX || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x80 || (c >= 'a' && c <= 'z') || mrec_digit(c) || c == '-' ||
            c == '_')
            continue;
        if (c == '.' && s[i - 1] != '.')
            continue;
        return 0;
    }
    return 1;
}

static int
mrec_user_ok(const char *s, size_t n)
{
    size_t at = n;

    if (n < 3 || n > MREC_USER_MAX)
        return 0;
    /* The last '@' splits: a quoted local part may hold one (RFC 5321
     * section 4.1.2), a domain never does. */
    for (size_t i = n; i-- > 0;) {
        if (s[i] == '@') {
            at = i;
            break;
        }
    }
    if (at == n || at < 1 || at > MREC_LOCAL_MAX)
        return 0;
    for (size_t i = 0; i < at; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x21 || c == 0x7f)
            return 0;
    }
    return mrec_domain_ok(s + at + 1, n - at - 1);
}

static int
mrec_software_ok(const char *s, size_t n)
{
    if (n >= MREC_SOFTWARE_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    }
    return 1;
}

/* A NUL-terminated field of a struct (cap bytes at most, NUL included)
 * under rule ok. */
static int
mrec_field_ok(const char *f, size_t cap, int (*ok)(const char *, size_t))
{
    const char *nul;

    if (f == NULL)
        return 0;
    nul = memchr(f, '\0', cap);
    return nul != NULL && ok(f, (size_t)(nul - f));
}

int
mrec_name_valid(const char *name)
{
    return mrec_field_ok(name, MREC_NAME_MAX, mrec_name_ok);
}

int
mrec_addr_valid(const char *addr)
{
    return addr != NULL && mrec_addr_ok(addr, strnlen(addr, MREC_ADDR_MAX));
}

int
mrec_domain_valid(const char *domain)
{
    return domain != NULL &&
           mrec_domain_ok(domain, strnlen(domain, MREC_DOMAIN_MAX + 1));
}

int
mrec_user_valid(const char *user)
{
    return user != NULL && mrec_user_ok(user, strnlen(user, MREC_USER_MAX + 1));
}

/* ---- packing ------------------------------------------------------------ */

/* Where packed bytes go: appended to b, else copied to p, else counted;
 * never more than max in all. */
struct mrec_w {
    struct buf *b;
    uint8_t *p;
    size_t len, max;
    int err;
};

static int
mrec_w_write(void *data, const char *s, size_t n)
{
    struct mrec_w *w = data;
    int r = 0;

    if (w->err != 0)
        return -1;
    if (n > w->max - w->len)
        r = RM_E_TOOBIG;
    else if (w->b != NULL)
        r = buf_append(w->b, s, n);
    else if (w->p != NULL && n > 0)
        memcpy(w->p + w->len, s, n);
    if (r != 0) {
        w->err = r;
        return -1;
    }
    w->len += n;
    return 0;
}

static void
mrec_pk_key(msgpack_packer *pk, const char *k)
{
    msgpack_pack_str_with_body(pk, k, strlen(k));
}

static void
mrec_pk_text(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void
mrec_pk_bin(msgpack_packer *pk, const uint8_t *p, size_t n)
{
    msgpack_pack_bin_with_body(pk, p, n);
}

/* Packs one record, with its signature or without (what is signed). The
 * record has been checked: every string is terminated and within rules. */
typedef void (*mrec_pack_fn)(msgpack_packer *pk, const void *rec, int with_sig);

/* Append rec's encoding to out, at most max bytes; nothing on error. */
static int
mrec_emit(struct buf *out, size_t max, mrec_pack_fn fn, const void *rec)
{
    struct mrec_w w = {.b = out, .max = max};
    size_t start = out->len;
    msgpack_packer pk;

    msgpack_packer_init(&pk, &w, mrec_w_write);
    fn(&pk, rec, 1);
    if (w.err != 0) {
        buf_truncate(out, start);
        return w.err;
    }
    return 0;
}

/* Bytes of rec's encoding, counted up to max (RM_E_TOOBIG past it). */
static int
mrec_size(mrec_pack_fn fn, const void *rec, int with_sig, size_t max,
          size_t *len)
{
    struct mrec_w w = {.max = max};
    msgpack_packer pk;

    msgpack_packer_init(&pk, &w, mrec_w_write);
    fn(&pk, rec, with_sig);
    *len = w.len;
    return w.err;
}

/* The bytes signed for a small record: ctx (NUL included) and the
 * encoding without the signature, into p (MREC_SMALL_MAX bytes). */
static int
mrec_tbs_small(uint8_t *p, const char *ctx, size_t ctxsz, mrec_pack_fn fn,
               const void *rec, size_t *len)
{
    struct mrec_w w = {.p = p + ctxsz, .max = MREC_SMALL_MAX - ctxsz};
    msgpack_packer pk;

    memcpy(p, ctx, ctxsz);
    msgpack_packer_init(&pk, &w, mrec_w_write);
    fn(&pk, rec, 0);
    if (w.err != 0)
        return w.err;
    *len = ctxsz + w.len;
    return 0;
}

static int
mrec_sign_small(uint8_t sig[MREC_SIG], const uint8_t sk[MREC_SK],
                const char *ctx, size_t ctxsz, mrec_pack_fn fn, const void *rec)
{
    uint8_t m[MREC_SMALL_MAX];
    size_t len;
    int r = mrec_tbs_small(m, ctx, ctxsz, fn, rec, &len);

    if (r != 0)
        return r;
    crypto_sign_detached(sig, NULL, m, len, sk);
    return 0;
}

static int
mrec_verify_small(const uint8_t sig[MREC_SIG], const uint8_t pk[MREC_PK],
                  const char *ctx, size_t ctxsz, mrec_pack_fn fn,
                  const void *rec)
{
    uint8_t m[MREC_SMALL_MAX];
    size_t len;

    if (mrec_tbs_small(m, ctx, ctxsz, fn, rec, &len) != 0)
        return RM_E_PERM;
    if (crypto_sign_verify_detached(sig, m, len, pk) != 0)
        return RM_E_PERM;
    return 0;
}

/* ---- unpacking ---------------------------------------------------------- */

typedef int (*mrec_obj_fn)(const msgpack_object *o, void *arg);

/* Check, unpack into a private zone, hand the value to fn. */
static int
mrec_from_bytes(const void *p, size_t len, mrec_obj_fn fn, void *arg)
{
    if (p == NULL && len != 0)
        return RM_E_INVAL;
    if (len > FRAME_MSG_MAX)
        return RM_E_PROTO;
    return mpack_decode(p, len, fn, arg, NULL, 0);
}

/*
 * o must be a map; vals[i] is the value of keys[i] (all required). Other
 * string keys are skipped; a key given twice or a non-string key is
 * RM_E_PROTO.
 */
static int
mrec_map(const msgpack_object *o, const char *const *keys, size_t nkeys,
         const msgpack_object **vals)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_MAP)
        return RM_E_PROTO;
    for (size_t j = 0; j < nkeys; j++)
        vals[j] = NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;

        if (k->type != MSGPACK_OBJECT_STR)
            return RM_E_PROTO;
        for (size_t j = 0; j < nkeys; j++) {
            if (strlen(keys[j]) != k->via.str.size ||
                memcmp(keys[j], k->via.str.ptr, k->via.str.size) != 0)
                continue;
            if (vals[j] != NULL)
                return RM_E_PROTO;
            vals[j] = &o->via.map.ptr[i].val;
            break;
        }
    }
    for (size_t j = 0; j < nkeys; j++) {
        if (vals[j] == NULL)
            return RM_E_PROTO;
    }
    return 0;
}

static int
mrec_get_bin(const msgpack_object *v, uint8_t *out, size_t n)
{
    if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != n)
        return RM_E_PROTO;
    memcpy(out, v->via.bin.ptr, n);
    return 0;
}

/* A string under rule ok into out (outsz bytes, NUL added). */
static int
mrec_get_text(const msgpack_object *v, char *out, size_t outsz,
              int (*ok)(const char *, size_t))
{
    if (v->type != MSGPACK_OBJECT_STR || v->via.str.size >= outsz ||
        !ok(v->via.str.ptr, v->via.str.size))
        return RM_E_PROTO;
    memcpy(out, v->via.str.ptr, v->via.str.size);
    out[v->via.str.size] = '\0';
    return 0;
}

static int
mrec_get_u64(const msgpack_object *v, uint64_t max, uint64_t *out)
{
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 > max)
        return RM_E_PROTO;
    *out = v->via.u64;
    return 0;
}

static int
mrec_get_u32(const msgpack_object *v, uint32_t max, uint32_t *out)
{
    uint64_t u;

    if (mrec_get_u64(v, max, &u) != 0)
        return RM_E_PROTO;
    *out = (uint32_t)u;
    return 0;
}

static int
mrec_get_i64(const msgpack_object *v, int64_t *out)
{
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        v->via.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)v->via.u64;
        return 0;
    }
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = v->via.i64;
        return 0;
    }
    return RM_E_PROTO;
}

static int
mrec_get_bool(const msgpack_object *v, int *out)
{
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return RM_E_PROTO;
    *out = v->via.boolean ? 1 : 0;
    return 0;
}

static int
mrec_get_addrs(const msgpack_object *v, unsigned min,
               char addrs[MREC_ADDRS_MAX][MREC_ADDR_MAX], unsigned *n)
{
    if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size < min ||
        v->via.array.size > MREC_ADDRS_MAX)
        return RM_E_PROTO;
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        if (mrec_get_text(&v->via.array.ptr[i], addrs[i], MREC_ADDR_MAX,
                          mrec_addr_ok) != 0)
            return RM_E_PROTO;
    }
    *n = v->via.array.size;
    return 0;
}

/* An array holding at least min elements (fixed-shape tuples). */
static const msgpack_object *
mrec_tuple(const msgpack_object *v, uint32_t min)
{
    if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size < min)
        return NULL;
    return v->via.array.ptr;
}

static int
mrec_addrs_ok(unsigned n, unsigned min,
              const char addrs[MREC_ADDRS_MAX][MREC_ADDR_MAX])
{
    if (n < min || n > MREC_ADDRS_MAX)
        return 0;
    for (unsigned i = 0; i < n; i++) {
        if (!mrec_field_ok(addrs[i], MREC_ADDR_MAX, mrec_addr_ok))
            return 0;
    }
    return 1;
}

static void
mrec_pk_addrs(msgpack_packer *pk, unsigned n,
              const char addrs[MREC_ADDRS_MAX][MREC_ADDR_MAX])
{
    msgpack_pack_array(pk, n);
    for (unsigned i = 0; i < n; i++)
        mrec_pk_text(pk, addrs[i]);
}

/* ---- certificates ------------------------------------------------------- */

static const char *const mrec_cert_keys[] = {"m", "k", "n", "i", "e", "b", "s"};

static void
mrec_cert_pack(msgpack_packer *pk, const void *rec, int with_sig)
{
    const struct mrec_cert *c = rec;

    msgpack_pack_map(pk, with_sig ? 7 : 6);
    mrec_pk_key(pk, "m");
    mrec_pk_bin(pk, c->mesh_id, MREC_MESHID);
    mrec_pk_key(pk, "k");
    mrec_pk_bin(pk, c->node_pk, MREC_PK);
    mrec_pk_key(pk, "n");
    mrec_pk_text(pk, c->name);
    mrec_pk_key(pk, "i");
    msgpack_pack_int64(pk, c->issued);
    mrec_pk_key(pk, "e");
    msgpack_pack_int64(pk, c->expires);
    mrec_pk_key(pk, "b");
    mrec_pk_bin(pk, c->issuer_pk, MREC_PK);
    if (with_sig) {
        mrec_pk_key(pk, "s");
        mrec_pk_bin(pk, c->sig, MREC_SIG);
    }
}

static int
mrec_cert_ok(const struct mrec_cert *c)
{
    return c != NULL && mrec_name_valid(c->name);
}

int
mrec_cert_sign(struct mrec_cert *c, const uint8_t issuer_sk[MREC_SK])
{
    if (!mrec_cert_ok(c) || issuer_sk == NULL)
        return RM_E_INVAL;
    crypto_sign_ed25519_sk_to_pk(c->issuer_pk, issuer_sk);
    return mrec_sign_small(c->sig, issuer_sk, mrec_ctx_cert,
                           sizeof(mrec_ctx_cert), mrec_cert_pack, c);
}

int
mrec_cert_verify_sig(const struct mrec_cert *c)
{
    if (!mrec_cert_ok(c))
        return RM_E_PERM;
    return mrec_verify_small(c->sig, c->issuer_pk, mrec_ctx_cert,
                             sizeof(mrec_ctx_cert), mrec_cert_pack, c);
}

int
mrec_cert_encode(struct buf *out, const struct mrec_cert *c)
{
    if (out == NULL || !mrec_cert_ok(c))
        return RM_E_INVAL;
    return mrec_emit(out, SIZE_MAX, mrec_cert_pack, c);
}

int
mrec_cert_decode_obj(const msgpack_object *o, struct mrec_cert *out)
{
    const msgpack_object *v[7];

    if (o == NULL || out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    if (mrec_map(o, mrec_cert_keys, 7, v) != 0 ||
        mrec_get_bin(v[0], out->mesh_id, MREC_MESHID) != 0 ||
        mrec_get_bin(v[1], out->node_pk, MREC_PK) != 0 ||
        mrec_get_text(v[2], out->name, MREC_NAME_MAX, mrec_name_ok) != 0 ||
        mrec_get_i64(v[3], &out->issued) != 0 ||
        mrec_get_i64(v[4], &out->expires) != 0 ||
        mrec_get_bin(v[5], out->issuer_pk, MREC_PK) != 0 ||
        mrec_get_bin(v[6], out->sig, MREC_SIG) != 0) {
        memset(out, 0, sizeof(*out));
        return RM_E_PROTO;
    }
    return 0;
}

static int
mrec_cert_obj(const msgpack_object *o, void *arg)
{
    return mrec_cert_decode_obj(o, arg);
}

int
mrec_cert_decode_bytes(const void *p, size_t len, struct mrec_cert *out)
{
    if (out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    return mrec_from_bytes(p, len, mrec_cert_obj, out);
}

/* ---- chains ------------------------------------------------------------- */

static void
mrec_chain_pack(msgpack_packer *pk, const void *rec, int with_sig)
{
    const struct mrec_chain *ch = rec;

    msgpack_pack_array(pk, ch->n);
    for (unsigned i = 0; i < ch->n; i++)
        mrec_cert_pack(pk, &ch->c[i], 1);
}

int
mrec_chain_encode(struct buf *out, const struct mrec_chain *ch)
{
    if (out == NULL || ch == NULL || ch->n < 1 || ch->n > MREC_CHAIN_MAX)
        return RM_E_INVAL;
    for (unsigned i = 0; i < ch->n; i++) {
        if (!mrec_cert_ok(&ch->c[i]))
            return RM_E_INVAL;
    }
    return mrec_emit(out, SIZE_MAX, mrec_chain_pack, ch);
}

int
mrec_chain_decode_obj(const msgpack_object *o, struct mrec_chain *out)
{
    if (o == NULL || out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 1 ||
        o->via.array.size > MREC_CHAIN_MAX)
        return RM_E_PROTO;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        if (mrec_cert_decode_obj(&o->via.array.ptr[i], &out->c[i]) != 0) {
            memset(out, 0, sizeof(*out));
            return RM_E_PROTO;
        }
    }
    out->n = o->via.array.size;
    return 0;
}

static int
mrec_chain_obj(const msgpack_object *o, void *arg)
{
    return mrec_chain_decode_obj(o, arg);
}

int
mrec_chain_decode_bytes(const void *p, size_t len, struct mrec_chain *out)
{
    if (out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    return mrec_from_bytes(p, len, mrec_chain_obj, out);
}

/* t as "YYYY-MM-DDTHH:MM:SSZ" (UTC; gmtime_r uses no time zone state). */
static void
mrec_iso_time(int64_t t, char *out, size_t outsz)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL ||
        strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outsz, "%lld", (long long)t);
}

/* A certificate's name for a message: checked, since the struct may come
 * from anywhere. */
static const char *
mrec_cert_name(const struct mrec_cert *c)
{
    return mrec_name_valid(c->name) ? c->name : "?";
}

static int mrec_perm(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
mrec_perm(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errsz > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return RM_E_PERM;
}

int
mrec_chain_verify(const struct mrec_chain *ch,
                  const uint8_t mesh_id[MREC_MESHID],
                  const uint8_t root_pk[MREC_PK], int64_t now,
                  int (*is_revoked)(void *arg, const uint8_t pk[MREC_PK]),
                  void *arg, char *err, size_t errsz)
{
    const struct mrec_cert *last;
    char when[48];

    if (err != NULL && errsz > 0)
        err[0] = '\0';
    if (ch == NULL || mesh_id == NULL || root_pk == NULL)
        return RM_E_INVAL;
    if (ch->n < 1)
        return mrec_perm(err, errsz, "empty certificate chain");
    if (ch->n > MREC_CHAIN_MAX)
        return mrec_perm(err, errsz, "chain too long");
    /* Authenticity first: nothing is said about a forged certificate
     * beyond that. */
    for (unsigned i = 0; i < ch->n; i++) {
        const struct mrec_cert *c = &ch->c[i];

        if (sodium_memcmp(c->mesh_id, mesh_id, MREC_MESHID) != 0)
            return mrec_perm(err, errsz,
                             "certificate of %s is not of this mesh",
                             mrec_cert_name(c));
        if (mrec_cert_verify_sig(c) != 0)
            return mrec_perm(err, errsz, "bad signature on %s's certificate",
                             mrec_cert_name(c));
        if (i + 1 < ch->n &&
            sodium_memcmp(c->issuer_pk, ch->c[i + 1].node_pk, MREC_PK) != 0)
            return mrec_perm(err, errsz,
                             "issuer mismatch: %s's certificate is not "
                             "signed by %s",
                             mrec_cert_name(c), mrec_cert_name(&ch->c[i + 1]));
    }
    last = &ch->c[ch->n - 1];
    if (sodium_memcmp(last->issuer_pk, last->node_pk, MREC_PK) != 0 ||
        sodium_memcmp(last->node_pk, root_pk, MREC_PK) != 0)
        return mrec_perm(err, errsz,
                         "chain does not end at the mesh's first node");
    for (unsigned i = 0; i < ch->n; i++) {
        const struct mrec_cert *c = &ch->c[i];

        if (now >= c->expires) {
            mrec_iso_time(c->expires, when, sizeof(when));
            return mrec_perm(err, errsz, "certificate of %s expired at %s",
                             mrec_cert_name(c), when);
        }
        if (now <= INT64_MAX - MREC_CLOCK_SKEW &&
            c->issued > now + MREC_CLOCK_SKEW) {
            mrec_iso_time(c->issued, when, sizeof(when));
            return mrec_perm(err, errsz,
                             "certificate of %s is not valid before %s",
                             mrec_cert_name(c), when);
        }
        if (is_revoked != NULL && is_revoked(arg, c->node_pk))
            return mrec_perm(err, errsz, "%s is revoked", mrec_cert_name(c));
    }
    return 0;
}

/* ---- node records ------------------------------------------------------- */

static const char *const mrec_node_keys[] = {"m",  "k", "n", "v", "sw",
                                             "eg", "a", "d", "u", "s"};

static void
mrec_node_pack(msgpack_packer *pk, const void *rec, int with_sig)
{
    const struct mrec_node *n = rec;

    msgpack_pack_map(pk, with_sig ? 10 : 9);
    mrec_pk_key(pk, "m");
    mrec_pk_bin(pk, n->mesh_id, MREC_MESHID);
    mrec_pk_key(pk, "k");
    mrec_pk_bin(pk, n->node_pk, MREC_PK);
    mrec_pk_key(pk, "n");
    mrec_pk_text(pk, n->name);
    mrec_pk_key(pk, "v");
    msgpack_pack_uint64(pk, n->version);
    mrec_pk_key(pk, "sw");
    mrec_pk_text(pk, n->software);
    mrec_pk_key(pk, "eg");
    if (n->egress)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    mrec_pk_key(pk, "a");
    mrec_pk_addrs(pk, n->n_addrs, n->addrs);
    mrec_pk_key(pk, "d");
    msgpack_pack_array(pk, n->n_domains);
    for (unsigned i = 0; i < n->n_domains; i++)
        mrec_pk_text(pk, n->domains[i]);
    mrec_pk_key(pk, "u");
    msgpack_pack_array(pk, n->n_users);
    for (unsigned i = 0; i < n->n_users; i++)
        mrec_pk_text(pk, n->users[i]);
    if (with_sig) {
        mrec_pk_key(pk, "s");
        mrec_pk_bin(pk, n->sig, MREC_SIG);
    }
}

/* Every field within the rules (not the size). */
static int
mrec_node_fields_ok(const struct mrec_node *n)
{
    if (n == NULL || !mrec_name_valid(n->name) ||
        !mrec_field_ok(n->software, MREC_SOFTWARE_MAX, mrec_software_ok) ||
        !mrec_addrs_ok(n->n_addrs, 0, n->addrs) ||
        n->n_domains > MREC_DOMAINS_MAX || n->n_users > MREC_USERS_MAX ||
        (n->n_domains > 0 && n->domains == NULL) ||
        (n->n_users > 0 && n->users == NULL))
        return 0;
    for (unsigned i = 0; i < n->n_domains; i++) {
        if (!mrec_domain_valid(n->domains[i]))
            return 0;
    }
    for (unsigned i = 0; i < n->n_users; i++) {
        if (!mrec_user_valid(n->users[i]))
            return 0;
    }
    return 1;
}

int
mrec_node_check(const struct mrec_node *n)
{
    size_t len;

    if (!mrec_node_fields_ok(n))
        return RM_E_INVAL;
    return mrec_size(mrec_node_pack, n, 1, MREC_NODE_ENC_MAX, &len);
}

/* The bytes signed: the context and the encoding without the signature,
 * into b (which the caller cleans up). */
static int
mrec_node_tbs(const struct mrec_node *n, struct buf *b)
{
    struct mrec_w w = {.b = b, .max = MREC_NODE_ENC_MAX};
    msgpack_packer pk;
    int r;

    buf_init(b, sizeof(mrec_ctx_node) + MREC_NODE_ENC_MAX);
    r = buf_append(b, mrec_ctx_node, sizeof(mrec_ctx_node));
    if (r != 0)
        return r;
    msgpack_packer_init(&pk, &w, mrec_w_write);
    mrec_node_pack(&pk, n, 0);
    return w.err;
}

int
mrec_node_sign(struct mrec_node *n, const uint8_t sk[MREC_SK])
{
    struct buf b;
    int r;

    if (sk == NULL)
        return RM_E_INVAL;
    r = mrec_node_check(n);
    if (r != 0)
        return r;
    crypto_sign_ed25519_sk_to_pk(n->node_pk, sk);
    r = mrec_node_tbs(n, &b);
    if (r == 0)
        crypto_sign_detached(n->sig, NULL, (const uint8_t *)b.data, b.len, sk);
    buf_cleanup(&b);
    return r;
}

int
mrec_node_verify(const struct mrec_node *n)
{
    struct buf b;
    int r;

    if (!mrec_node_fields_ok(n))
        return RM_E_PERM;
    r = mrec_node_tbs(n, &b);
    if (r == RM_E_TOOBIG)
        r = RM_E_PERM;
    else if (r == 0 &&
             crypto_sign_verify_detached(n->sig, (const uint8_t *)b.data, b.len,
                                         n->node_pk) != 0)
        r = RM_E_PERM;
    buf_cleanup(&b);
    return r;
}

int
mrec_node_encode(struct buf *out, const struct mrec_node *n)
{
    if (out == NULL || !mrec_node_fields_ok(n))
        return RM_E_INVAL;
    return mrec_emit(out, MREC_NODE_ENC_MAX, mrec_node_pack, n);
}

/* A list of strings under rule ok: at most max of them, *bytes grows by
 * their lengths plus a NUL each. */
static int
mrec_list_ok(const msgpack_object *v, uint32_t max, size_t maxlen,
             int (*ok)(const char *, size_t), size_t *bytes)
{
    if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > max)
        return RM_E_PROTO;
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        const msgpack_object *s = &v->via.array.ptr[i];

        if (s->type != MSGPACK_OBJECT_STR || s->via.str.size > maxlen ||
            !ok(s->via.str.ptr, s->via.str.size))
            return RM_E_PROTO;
        *bytes += s->via.str.size + 1;
    }
    return 0;
}

/* Copy a checked list of strings: pointers to ptrs[], bytes at *pool. */
static void
mrec_list_copy(const msgpack_object *v, char **ptrs, char **pool)
{
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        const msgpack_object *s = &v->via.array.ptr[i];

        ptrs[i] = *pool;
        memcpy(*pool, s->via.str.ptr, s->via.str.size);
        (*pool)[s->via.str.size] = '\0';
        *pool += s->via.str.size + 1;
    }
}

int
mrec_node_decode_obj(const msgpack_object *o, struct mrec_node **out)
{
    const msgpack_object *v[10];
    struct mrec_node tmp, *n;
    size_t bytes = 0, len, total;
    uint32_t nd, nu;
    char **ptrs, *pool;

    if (o == NULL || out == NULL)
        return RM_E_INVAL;
    *out = NULL;
    memset(&tmp, 0, sizeof(tmp));
    if (mrec_map(o, mrec_node_keys, 10, v) != 0 ||
        mrec_get_bin(v[0], tmp.mesh_id, MREC_MESHID) != 0 ||
        mrec_get_bin(v[1], tmp.node_pk, MREC_PK) != 0 ||
        mrec_get_text(v[2], tmp.name, MREC_NAME_MAX, mrec_name_ok) != 0 ||
        mrec_get_u64(v[3], UINT64_MAX, &tmp.version) != 0 ||
        mrec_get_text(v[4], tmp.software, MREC_SOFTWARE_MAX,
                      mrec_software_ok) != 0 ||
        mrec_get_bool(v[5], &tmp.egress) != 0 ||
        mrec_get_addrs(v[6], 0, tmp.addrs, &tmp.n_addrs) != 0 ||
        mrec_list_ok(v[7], MREC_DOMAINS_MAX, MREC_DOMAIN_MAX, mrec_domain_ok,
                     &bytes) != 0 ||
        mrec_list_ok(v[8], MREC_USERS_MAX, MREC_USER_MAX, mrec_user_ok,
                     &bytes) != 0 ||
        mrec_get_bin(v[9], tmp.sig, MREC_SIG) != 0)
        return RM_E_PROTO;
    nd = v[7]->via.array.size;
    nu = v[8]->via.array.size;
    /* One allocation: the struct, the pointer arrays, the strings. The
     * strings are no longer than the input that carried them. */
    total = sizeof(*n) + ((size_t)nd + nu) * sizeof(char *) + bytes;
    n = malloc(total);
    if (n == NULL)
        return -ENOMEM;
    *n = tmp;
    ptrs = (char **)(n + 1);
    pool = (char *)(ptrs + nd + nu);
    n->n_domains = nd;
    n->domains = nd > 0 ? ptrs : NULL;
    mrec_list_copy(v[7], ptrs, &pool);
    n->n_users = nu;
    n->users = nu > 0 ? ptrs + nd : NULL;
    mrec_list_copy(v[8], ptrs + nd, &pool);
    if (mrec_size(mrec_node_pack, n, 1, MREC_NODE_ENC_MAX, &len) != 0) {
        free(n);
        return RM_E_PROTO;
    }
    *out = n;
    return 0;
}

static int
mrec_node_obj(const msgpack_object *o, void *arg)
{
    return mrec_node_decode_obj(o, arg);
}

int
mrec_node_decode_bytes(const void *p, size_t len, struct mrec_node **out)
{
    if (out == NULL)
        return RM_E_INVAL;
    *out = NULL;
    return mrec_from_bytes(p, len, mrec_node_obj, out);
}

void
mrec_node_free(struct mrec_node *n)
{
    free(n);
}

/* ---- revocations -------------------------------------------------------- */

static const char *const mrec_revoke_keys[] = {"m", "k", "n", "t", "b", "s"};

static void
mrec_revoke_pack(msgpack_packer *pk, const void *rec, int with_sig)
{
    const struct mrec_revoke *r = rec;

    msgpack_pack_map(pk, with_sig ? 6 : 5);
    mrec_pk_key(pk, "m");
    mrec_pk_bin(pk, r->mesh_id, MREC_MESHID);
    mrec_pk_key(pk, "k");
    mrec_pk_bin(pk, r->node_pk, MREC_PK);
    mrec_pk_key(pk, "n");
    mrec_pk_text(pk, r->name);
    mrec_pk_key(pk, "t");
    msgpack_pack_int64(pk, r->when);
    mrec_pk_key(pk, "b");
    mrec_pk_bin(pk, r->by_pk, MREC_PK);
    if (with_sig) {
        mrec_pk_key(pk, "s");
        mrec_pk_bin(pk, r->sig, MREC_SIG);
    }
}

static int
mrec_revoke_ok(const struct mrec_revoke *r)
{
    return r != NULL && mrec_name_valid(r->name);
}

int
mrec_revoke_sign(struct mrec_revoke *r, const uint8_t sk[MREC_SK])
{
    if (!mrec_revoke_ok(r) || sk == NULL)
        return RM_E_INVAL;
    crypto_sign_ed25519_sk_to_pk(r->by_pk, sk);
    return mrec_sign_small(r->sig, sk, mrec_ctx_revoke, sizeof(mrec_ctx_revoke),
                           mrec_revoke_pack, r);
}

int
mrec_revoke_verify_sig(const struct mrec_revoke *r)
{
    if (!mrec_revoke_ok(r))
        return RM_E_PERM;
    return mrec_verify_small(r->sig, r->by_pk, mrec_ctx_revoke,
                             sizeof(mrec_ctx_revoke), mrec_revoke_pack, r);
}

int
mrec_revoke_encode(struct buf *out, const struct mrec_revoke *r)
{
    if (out == NULL || !mrec_revoke_ok(r))
        return RM_E_INVAL;
    return mrec_emit(out, SIZE_MAX, mrec_revoke_pack, r);
}

int
mrec_revoke_decode_obj(const msgpack_object *o, struct mrec_revoke *out)
{
    const msgpack_object *v[6];

    if (o == NULL || out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    if (mrec_map(o, mrec_revoke_keys, 6, v) != 0 ||
        mrec_get_bin(v[0], out->mesh_id, MREC_MESHID) != 0 ||
        mrec_get_bin(v[1], out->node_pk, MREC_PK) != 0 ||
        mrec_get_text(v[2], out->name, MREC_NAME_MAX, mrec_name_ok) != 0 ||
        mrec_get_i64(v[3], &out->when) != 0 ||
        mrec_get_bin(v[4], out->by_pk, MREC_PK) != 0 ||
        mrec_get_bin(v[5], out->sig, MREC_SIG) != 0) {
        memset(out, 0, sizeof(*out));
        return RM_E_PROTO;
    }
    return 0;
}

static int
mrec_revoke_obj(const msgpack_object *o, void *arg)
{
    return mrec_revoke_decode_obj(o, arg);
}

int
mrec_revoke_decode_bytes(const void *p, size_t len, struct mrec_revoke *out)
{
    if (out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    return mrec_from_bytes(p, len, mrec_revoke_obj, out);
}

/* ---- invites ------------------------------------------------------------ */

static const char *const mrec_invite_keys[] = {"m",  "r", "b", "bn", "a",
                                               "id", "n", "e", "s"};

static void
mrec_invite_pack(msgpack_packer *pk, const void *rec, int with_sig)
{
    const struct mrec_invite *iv = rec;

    msgpack_pack_map(pk, with_sig ? 9 : 8);
    mrec_pk_key(pk, "m");
    mrec_pk_bin(pk, iv->mesh_id, MREC_MESHID);
    mrec_pk_key(pk, "r");
    mrec_pk_bin(pk, iv->root_pk, MREC_PK);
    mrec_pk_key(pk, "b");
    mrec_pk_bin(pk, iv->inviter_pk, MREC_PK);
    mrec_pk_key(pk, "bn");
    mrec_pk_text(pk, iv->inviter_name);
    mrec_pk_key(pk, "a");
    mrec_pk_addrs(pk, iv->n_addrs, iv->addrs);
    mrec_pk_key(pk, "id");
    mrec_pk_bin(pk, iv->id, MREC_INVITE_ID);
    mrec_pk_key(pk, "n");
    mrec_pk_text(pk, iv->name);
    mrec_pk_key(pk, "e");
    msgpack_pack_int64(pk, iv->expires);
    if (with_sig) {
        mrec_pk_key(pk, "s");
        mrec_pk_bin(pk, iv->sig, MREC_SIG);
    }
}

static int
mrec_invite_ok(const struct mrec_invite *iv)
{
    return iv != NULL && mrec_name_valid(iv->inviter_name) &&
           mrec_field_ok(iv->name, MREC_NAME_MAX, mrec_name_or_empty_ok) &&
           mrec_addrs_ok(iv->n_addrs, 1, iv->addrs);
}

int
mrec_invite_sign(struct mrec_invite *iv, const uint8_t sk[MREC_SK])
{
    if (!mrec_invite_ok(iv) || sk == NULL)
        return RM_E_INVAL;
    crypto_sign_ed25519_sk_to_pk(iv->inviter_pk, sk);
    return mrec_sign_small(iv->sig, sk, mrec_ctx_invite,
                           sizeof(mrec_ctx_invite), mrec_invite_pack, iv);
}

int
mrec_invite_verify_sig(const struct mrec_invite *iv)
{
    if (!mrec_invite_ok(iv))
        return RM_E_PERM;
    return mrec_verify_small(iv->sig, iv->inviter_pk, mrec_ctx_invite,
                             sizeof(mrec_ctx_invite), mrec_invite_pack, iv);
}

int
mrec_invite_encode(struct buf *out, const struct mrec_invite *iv)
{
    if (out == NULL || !mrec_invite_ok(iv))
        return RM_E_INVAL;
    return mrec_emit(out, MREC_INVITE_ENC_MAX, mrec_invite_pack, iv);
}

int
mrec_invite_decode_obj(const msgpack_object *o, struct mrec_invite *out)
{
    const msgpack_object *v[9];

    if (o == NULL || out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    if (mrec_map(o, mrec_invite_keys, 9, v) != 0 ||
        mrec_get_bin(v[0], out->mesh_id, MREC_MESHID) != 0 ||
        mrec_get_bin(v[1], out->root_pk, MREC_PK) != 0 ||
        mrec_get_bin(v[2], out->inviter_pk, MREC_PK) != 0 ||
        mrec_get_text(v[3], out->inviter_name, MREC_NAME_MAX, mrec_name_ok) !=
            0 ||
        mrec_get_addrs(v[4], 1, out->addrs, &out->n_addrs) != 0 ||
        mrec_get_bin(v[5], out->id, MREC_INVITE_ID) != 0 ||
        mrec_get_text(v[6], out->name, MREC_NAME_MAX, mrec_name_or_empty_ok) !=
            0 ||
        mrec_get_i64(v[7], &out->expires) != 0 ||
        mrec_get_bin(v[8], out->sig, MREC_SIG) != 0) {
        memset(out, 0, sizeof(*out));
        return RM_E_PROTO;
    }
    return 0;
}

static int
mrec_invite_obj(const msgpack_object *o, void *arg)
{
    return mrec_invite_decode_obj(o, arg);
}

int
mrec_invite_decode_bytes(const void *p, size_t len, struct mrec_invite *out)
{
    if (out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    return mrec_from_bytes(p, len, mrec_invite_obj, out);
}

int
mrec_invite_to_text(const struct mrec_invite *iv, char *out, size_t outsz)
{
    const size_t plen = sizeof(MREC_INVITE_PREFIX) - 1;
    uint8_t bin[MREC_INVITE_ENC_MAX];
    struct mrec_w w = {.p = bin, .max = sizeof(bin)};
    msgpack_packer pk;

    if (out == NULL || !mrec_invite_ok(iv))
        return RM_E_INVAL;
    msgpack_packer_init(&pk, &w, mrec_w_write);
    mrec_invite_pack(&pk, iv, 1);
    if (w.err != 0)
        return w.err;
    if (outsz < plen + sodium_base64_encoded_len(w.len, MREC_B64))
        return RM_E_TOOBIG;
    memcpy(out, MREC_INVITE_PREFIX, plen);
    sodium_bin2base64(out + plen, outsz - plen, bin, w.len, MREC_B64);
    return 0;
}

static int
mrec_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int
mrec_text_err(char *err, size_t errsz, const char *msg)
{
    if (err != NULL && errsz > 0)
        snprintf(err, errsz, "%s", msg);
    return RM_E_PROTO;
}

int
mrec_invite_from_text(const char *text, struct mrec_invite *out, char *err,
                      size_t errsz)
{
    const size_t plen = sizeof(MREC_INVITE_PREFIX) - 1;
    uint8_t bin[MREC_INVITE_ENC_MAX];
    const char *s, *b64_end;
    size_t n, binlen;

    if (err != NULL && errsz > 0)
        err[0] = '\0';
    if (text == NULL || out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    n = strnlen(text, MREC_TEXT_IN_MAX + 1);
    if (n > MREC_TEXT_IN_MAX)
        return mrec_text_err(err, errsz, "token is too long");
    s = text;
    while (n > 0 && mrec_space(*s)) {
        s++;
        n--;
    }
    while (n > 0 && mrec_space(s[n - 1]))
        n--;
    if (n < plen || memcmp(s, MREC_INVITE_PREFIX, plen) != 0)
        return mrec_text_err(err, errsz, "not a relaymesh invite token");
    s += plen;
    n -= plen;
    errno = 0;
    if (sodium_base642bin(bin, sizeof(bin), s, n, " \t\r\n", &binlen, &b64_end,
                          MREC_B64) != 0) {
        if (errno == ERANGE)
            return mrec_text_err(err, errsz, "token is too long");
        return mrec_text_err(err, errsz,
                             "token is damaged (copy it again whole)");
    }
    if (b64_end != s + n || binlen == 0 ||
        mrec_invite_decode_bytes(bin, binlen, out) != 0) {
        memset(out, 0, sizeof(*out));
        return mrec_text_err(err, errsz,
                             "token is damaged (copy it again whole)");
    }
    return 0;
}

/* ---- SWIM messages ------------------------------------------------------ */

static int
mrec_swim_ok(const struct swim_msg *m)
{
    if (m == NULL || (unsigned)m->type > SWIM_MSG_GOSSIP ||
        !mrec_field_ok(m->from, SWIM_NAME_MAX, mrec_swim_name_ok) ||
        !mrec_field_ok(m->target, SWIM_NAME_MAX, mrec_swim_target_ok) ||
        m->n_updates > SWIM_PIGGYBACK_MAX)
        return 0;
    if ((m->type == SWIM_MSG_PING || m->type == SWIM_MSG_PING_REQ) &&
        m->target[0] == '\0')
        return 0;
    for (unsigned i = 0; i < m->n_updates; i++) {
        const struct swim_update *u = &m->updates[i];

        if (!mrec_field_ok(u->name, SWIM_NAME_MAX, mrec_swim_name_ok) ||
            !mrec_field_ok(u->from, SWIM_NAME_MAX, mrec_swim_name_ok) ||
            (unsigned)u->state > SWIM_LEFT)
            return 0;
    }
    return 1;
}

static void
mrec_swim_pack(msgpack_packer *pk, const void *rec, int with_sig)
{
    const struct swim_msg *m = rec;

    msgpack_pack_array(pk, 5);
    msgpack_pack_uint32(pk, (uint32_t)m->type);
    msgpack_pack_uint32(pk, m->seq);
    mrec_pk_text(pk, m->from);
    mrec_pk_text(pk, m->target);
    msgpack_pack_array(pk, m->n_updates);
    for (unsigned i = 0; i < m->n_updates; i++) {
        const struct swim_update *u = &m->updates[i];

        msgpack_pack_array(pk, 4);
        mrec_pk_text(pk, u->name);
        mrec_pk_text(pk, u->from);
        msgpack_pack_uint32(pk, u->incarnation);
        msgpack_pack_uint32(pk, (uint32_t)u->state);
    }
}

int
mrec_swim_encode(struct buf *out, const struct swim_msg *m)
{
    if (out == NULL || !mrec_swim_ok(m))
        return RM_E_INVAL;
    return mrec_emit(out, SIZE_MAX, mrec_swim_pack, m);
}

static int
mrec_swim_fill(const msgpack_object *o, struct swim_msg *out)
{
    const msgpack_object *f = mrec_tuple(o, 5), *ups;
    uint32_t type, state;

    if (f == NULL || mrec_get_u32(&f[0], SWIM_MSG_GOSSIP, &type) != 0 ||
        mrec_get_u32(&f[1], UINT32_MAX, &out->seq) != 0 ||
        mrec_get_text(&f[2], out->from, SWIM_NAME_MAX, mrec_swim_name_ok) !=
            0 ||
        mrec_get_text(&f[3], out->target, SWIM_NAME_MAX, mrec_swim_target_ok) !=
            0)
        return RM_E_PROTO;
    out->type = (enum swim_msg_type)type;
    if ((out->type == SWIM_MSG_PING || out->type == SWIM_MSG_PING_REQ) &&
        out->target[0] == '\0')
        return RM_E_PROTO;
    if (f[4].type != MSGPACK_OBJECT_ARRAY ||
        f[4].via.array.size > SWIM_PIGGYBACK_MAX)
        return RM_E_PROTO;
    ups = f[4].via.array.ptr;
    for (uint32_t i = 0; i < f[4].via.array.size; i++) {
        struct swim_update *u = &out->updates[i];
        const msgpack_object *e = mrec_tuple(&ups[i], 4);

        if (e == NULL ||
            mrec_get_text(&e[0], u->name, SWIM_NAME_MAX, mrec_swim_name_ok) !=
                0 ||
            mrec_get_text(&e[1], u->from, SWIM_NAME_MAX, mrec_swim_name_ok) !=
                0 ||
            mrec_get_u32(&e[2], UINT32_MAX, &u->incarnation) != 0 ||
            mrec_get_u32(&e[3], SWIM_LEFT, &state) != 0)
            return RM_E_PROTO;
        u->state = (enum swim_state)state;
    }
    out->n_updates = f[4].via.array.size;
    return 0;
}

int
mrec_swim_decode_obj(const msgpack_object *o, struct swim_msg *out)
{
    if (o == NULL || out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    if (mrec_swim_fill(o, out) != 0) {
        memset(out, 0, sizeof(*out));
        return RM_E_PROTO;
    }
    return 0;
}

static int
mrec_swim_obj(const msgpack_object *o, void *arg)
{
    return mrec_swim_decode_obj(o, arg);
}

int
mrec_swim_decode_bytes(const void *p, size_t len, struct swim_msg *out)
{
    if (out == NULL)
        return RM_E_INVAL;
    memset(out, 0, sizeof(*out));
    return mrec_from_bytes(p, len, mrec_swim_obj, out);
}

/* ---- push/pull state ---------------------------------------------------- */

static const char *const mrec_pp_keys[] = {"r", "e"};

struct mrec_pp {
    int want_reply;
    const struct mrec_pp_entry *e;
    size_t n;
};

static void
mrec_pp_pack(msgpack_packer *pk, const void *rec, int with_sig)
{
    const struct mrec_pp *pp = rec;

    msgpack_pack_map(pk, 2);
    mrec_pk_key(pk, "r");
    if (pp->want_reply)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    mrec_pk_key(pk, "e");
    msgpack_pack_array(pk, (uint32_t)pp->n);
    for (size_t i = 0; i < pp->n; i++) {
        const struct mrec_pp_entry *e = &pp->e[i];

        msgpack_pack_array(pk, 4);
        mrec_pk_text(pk, e->name);
        msgpack_pack_uint32(pk, e->incarnation);
        msgpack_pack_uint32(pk, (uint32_t)e->state);
        msgpack_pack_uint64(pk, e->record_version);
    }
}

int
mrec_pp_encode(struct buf *out, int want_reply, const struct mrec_pp_entry *e,
               size_t n)
{
    struct mrec_pp pp = {.want_reply = want_reply, .e = e, .n = n};

    if (out == NULL || (e == NULL && n > 0) || n > SWIM_MEMBERS_MAX)
        return RM_E_INVAL;
    for (size_t i = 0; i < n; i++) {
        if (!mrec_field_ok(e[i].name, MREC_NAME_MAX, mrec_swim_name_ok) ||
            (unsigned)e[i].state > SWIM_LEFT)
            return RM_E_INVAL;
    }
    return mrec_emit(out, SIZE_MAX, mrec_pp_pack, &pp);
}

struct mrec_pp_out {
    int *want_reply;
    struct mrec_pp_entry *e;
    size_t max, *n;
};

static int
mrec_pp_fill(const msgpack_object *o, struct mrec_pp_out *po)
{
    const msgpack_object *v[2], *items;
    size_t max = po->max < SWIM_MEMBERS_MAX ? po->max : SWIM_MEMBERS_MAX;

    if (mrec_map(o, mrec_pp_keys, 2, v) != 0 ||
        mrec_get_bool(v[0], po->want_reply) != 0 ||
        v[1]->type != MSGPACK_OBJECT_ARRAY || v[1]->via.array.size > max)
        return RM_E_PROTO;
    items = v[1]->via.array.ptr;
    for (uint32_t i = 0; i < v[1]->via.array.size; i++) {
        struct mrec_pp_entry *e = &po->e[i];
        const msgpack_object *f = mrec_tuple(&items[i], 4);
        uint32_t state;

        memset(e, 0, sizeof(*e));
        if (f == NULL ||
            mrec_get_text(&f[0], e->name, MREC_NAME_MAX, mrec_swim_name_ok) !=
                0 ||
            mrec_get_u32(&f[1], UINT32_MAX, &e->incarnation) != 0 ||
            mrec_get_u32(&f[2], SWIM_LEFT, &state) != 0 ||
            mrec_get_u64(&f[3], UINT64_MAX, &e->record_version) != 0)
            return RM_E_PROTO;
        e->state = (enum swim_state)state;
    }
    *po->n = v[1]->via.array.size;
    return 0;
}

static int
mrec_pp_obj(const msgpack_object *o, void *arg)
{
    struct mrec_pp_out *po = arg;

    if (mrec_pp_fill(o, po) != 0) {
        *po->want_reply = 0;
        *po->n = 0;
        return RM_E_PROTO;
    }
    return 0;
}

int
mrec_pp_decode_obj(const msgpack_object *o, int *want_reply,
                   struct mrec_pp_entry *out, size_t max, size_t *n)
{
    struct mrec_pp_out po = {want_reply, out, max, n};

    if (o == NULL || want_reply == NULL || n == NULL ||
        (out == NULL && max > 0))
        return RM_E_INVAL;
    *want_reply = 0;
    *n = 0;
    return mrec_pp_obj(o, &po);
}

int
mrec_pp_decode_bytes(const void *p, size_t len, int *want_reply,
                     struct mrec_pp_entry *out, size_t max, size_t *n)
{
    struct mrec_pp_out po = {want_reply, out, max, n};

    if (want_reply == NULL || n == NULL || (out == NULL && max > 0))
        return RM_E_INVAL;
    *want_reply = 0;
    *n = 0;
    return mrec_from_bytes(p, len, mrec_pp_obj, &po);
}
