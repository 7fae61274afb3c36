/*
 * tls: see tls.h. OpenSSL 3 with memory BIOs.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "node/node_config.h"
#include "node/tls.h"

#define TLS_SELF_DAYS 3650
#define TLS_READ_CHUNK 16384

struct tls_server {
    SSL_CTX *ctx;
    char cert[PATH_MAX];
    char key[PATH_MAX];
    int self_signed;
    int min_version; /* TLS1_2_VERSION / TLS1_3_VERSION */
    char *ciphers;
    char *suites;
    struct tls_cert_info info;
};

struct tls_client {
    SSL_CTX *ctx;
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio; /* network -> OpenSSL */
    BIO *wbio; /* OpenSSL -> network */
    int established;
    int client; /* connect state (tls_conn_client) */
    char err[200];
};

/* The first queued OpenSSL error as text, and the queue emptied. */
static void
tls_errstr(char *out, size_t outsz, const char *what)
{
    unsigned long e = ERR_get_error();
    char s[160];

    if (e == 0) {
        snprintf(out, outsz, "%s", what);
    } else {
        ERR_error_string_n(e, s, sizeof(s));
        snprintf(out, outsz, "%s: %s", what, s);
    }
    ERR_clear_error();
}

/* ---- self-signed certificate -------------------------------------- */

static int
tls_write_pem(const char *path, int is_key, EVP_PKEY *pk, X509 *x)
{
    char tmp[PATH_MAX + 8];
    FILE *f;
    int fd, ok;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if ((f = fdopen(fd, "w")) == NULL) {
        int e = -errno;
        close(fd);
        unlink(tmp);
        return e;
    }
    ok = is_key ? PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL)
                : PEM_write_X509(f, x);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -EIO;
    }
    return 0;
}

static int
tls_make_self_signed(const char *host, const char *cert, const char *key,
                     char *err, size_t errsz)
{
    EVP_PKEY *pk = NULL;
    X509 *x = NULL;
    X509_NAME *name;
    X509_EXTENSION *ext;
    X509V3_CTX v3;
    BIGNUM *bn = NULL;
    unsigned char serial[16];
    char san[300];
    int r = RM_E_CONFIG;

    pk = EVP_EC_gen("P-256");
    x = X509_new();
    bn = BN_new();
    if (pk == NULL || x == NULL || bn == NULL ||
        RAND_bytes(serial, sizeof(serial)) != 1) {
        tls_errstr(err, errsz, "cannot make a key for the certificate");
        goto out;
    }
    serial[0] &= 0x7f; /* positive */
    if (BN_bin2bn(serial, sizeof(serial), bn) == NULL ||
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
        X509_set_version(x, 2) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), (long)TLS_SELF_DAYS * 86400) ==
            NULL ||
        X509_set_pubkey(x, pk) != 1) {
        tls_errstr(err, errsz, "cannot build the certificate");
        goto out;
    }
    name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   (const unsigned char *)host, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(x, name) != 1) {
        tls_errstr(err, errsz, "cannot name the certificate");
        goto out;
    }
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    snprintf(san, sizeof(san), "DNS:%s", host);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (ext == NULL || X509_add_ext(x, ext, -1) != 1) {
        X509_EXTENSION_free(ext);
        tls_errstr(err, errsz, "cannot add subjectAltName");
        goto out;
    }
    X509_EXTENSION_free(ext);
    if (X509_sign(x, pk, EVP_sha256()) == 0) {
        tls_errstr(err, errsz, "cannot sign the certificate");
        goto out;
    }
    /* The key first: a certificate without its key is no use. */
    if ((r = tls_write_pem(key, 1, pk, NULL)) != 0 ||
        (r = tls_write_pem(cert, 0, NULL, x)) != 0) {
        snprintf(err, errsz, "cannot write %s: %s", r == 0 ? cert : key,
                 strerror(-r));
        r = RM_E_CONFIG;
        goto out;
    }
    r = 0;
out:
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(pk);
    return r;
}

/* ---- context ------------------------------------------------------ */

static void
tls_fill_info(struct tls_server *t, X509 *x)
{
    struct tls_cert_info *in = &t->info;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    struct tm tm;

    memset(in, 0, sizeof(*in));
    {
        /* RFC 2253 form ("CN=mx.example.org,O=..."), one line. */
        BIO *b = BIO_new(BIO_s_mem());
        int k = 0;
        if (b != NULL && X509_NAME_print_ex(b, X509_get_subject_name(x), 0,
                                            XN_FLAG_RFC2253) >= 0)
            k = BIO_read(b, in->subject, (int)sizeof(in->subject) - 1);
        in->subject[k > 0 ? k : 0] = '\0';
        BIO_free(b);
    }
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1) {
        in->not_after_ts = (int64_t)timegm(&tm);
        strftime(in->not_after, sizeof(in->not_after), "%Y-%m-%d %H:%M:%S UTC",
                 &tm);
    }
    if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1) {
        size_t k = 0;
        for (unsigned i = 0; i < mdlen && k + 4 <= sizeof(in->sha256); i++)
            k += (size_t)snprintf(in->sha256 + k, sizeof(in->sha256) - k,
                                  "%s%02X", i ? ":" : "", md[i]);
    }
    snprintf(in->file, sizeof(in->file), "%s", t->cert);
    in->self_signed = t->self_signed;
}

static SSL_CTX *
tls_build_ctx(struct tls_server *t, char *err, size_t errsz)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    ERR_clear_error();
    if (ctx == NULL) {
        tls_errstr(err, errsz, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, t->min_version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle sessions give their 34 KiB of record buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1) {
        tls_errstr(err, errsz, "tls.ciphers: no usable cipher");
        goto fail;
    }
    if (SSL_CTX_set_ciphersuites(ctx, t->suites) != 1) {
        tls_errstr(err, errsz, "tls.ciphersuites: no usable suite");
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
        char what[PATH_MAX + 64];
        snprintf(what, sizeof(what), "cannot load certificate %s", t->cert);
        tls_errstr(err, errsz, what);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1) {
        char what[PATH_MAX + 64];
        snprintf(what, sizeof(what), "cannot load private key %s", t->key);
        tls_errstr(err, errsz, what);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        char what[2 * PATH_MAX + 64];
        snprintf(what, sizeof(what), "key %s does not match certificate %s",
                 t->key, t->cert);
        tls_errstr(err, errsz, what);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int
tls_server_new(const struct node_config *cfg, struct tls_server **out,
               char *err, size_t errsz)
{
    struct tls_server *t = calloc(1, sizeof(*t));
    int r;

    if (t == NULL)
        return -ENOMEM;
    t->min_version =
        cfg->tls_min_version == NODE_TLS_13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    t->ciphers = strdup(cfg->tls_ciphers ? cfg->tls_ciphers : "");
    t->suites = strdup(cfg->tls_ciphersuites ? cfg->tls_ciphersuites : "");
    if (t->ciphers == NULL || t->suites == NULL) {
        r = -ENOMEM;
        goto fail;
    }
    if (cfg->tls_cert_file == NULL || cfg->tls_cert_file[0] == '\0') {
        char dir[PATH_MAX - 64];
        struct stat st;

        snprintf(dir, sizeof(dir), "%.*s/tls", (int)sizeof(dir) - 5,
                 cfg->datadir);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errsz, "cannot create %s: %s", dir, strerror(errno));
            r = RM_E_CONFIG;
            goto fail;
        }
        snprintf(t->cert, sizeof(t->cert), "%s/selfsigned.crt", dir);
        snprintf(t->key, sizeof(t->key), "%s/selfsigned.key", dir);
        t->self_signed = 1;
        if (stat(t->cert, &st) != 0 || stat(t->key, &st) != 0) {
            r = tls_make_self_signed(cfg->hostname, t->cert, t->key, err,
                                     errsz);
            if (r != 0)
                goto fail;
            log_warn("event=tls.selfsigned cert=%s subject=\"CN=%s\" "
                     "hint=\"set [tls] cert_file and key_file for a "
                     "certificate clients can verify\"",
                     t->cert, cfg->hostname);
        }
    } else {
        snprintf(t->cert, sizeof(t->cert), "%s", cfg->tls_cert_file);
        snprintf(t->key, sizeof(t->key), "%s",
                 cfg->tls_key_file && cfg->tls_key_file[0]
                     ? cfg->tls_key_file
                     : cfg->tls_cert_file);
    }
    if ((t->ctx = tls_build_ctx(t, err, errsz)) == NULL) {
        r = RM_E_CONFIG;
        goto fail;
    }
    tls_fill_info(t, SSL_CTX_get0_certificate(t->ctx));
    log_info("event=tls.ready cert=%s subject=\"%s\" not_after=\"%s\" "
             "sha256=%s",
             t->cert, t->info.subject, t->info.not_after, t->info.sha256);
    *out = t;
    return 0;
fail:
    tls_server_free(t);
    return r;
}

int
tls_server_reload(struct tls_server *t, char *err, size_t errsz)
{
    SSL_CTX *ctx = tls_build_ctx(t, err, errsz);

    if (ctx == NULL) {
        log_err("event=tls.reload_failed cert=%s err=\"%s\"", t->cert, err);
        return RM_E_CONFIG;
    }
    /* Sessions in flight hold their own reference to the old one. */
    SSL_CTX_free(t->ctx);
    t->ctx = ctx;
    tls_fill_info(t, SSL_CTX_get0_certificate(ctx));
    log_info("event=tls.reloaded cert=%s subject=\"%s\" not_after=\"%s\" "
             "sha256=%s",
             t->cert, t->info.subject, t->info.not_after, t->info.sha256);
    return 0;
}

void
tls_server_free(struct tls_server *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t->ciphers);
    free(t->suites);
    free(t);
}

const struct tls_cert_info *
tls_server_info(const struct tls_server *t)
{
    return &t->info;
}

/* ---- client context ----------------------------------------------- */

int
tls_client_new(struct tls_client **out, char *err, size_t errsz)
{
    struct tls_client *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return -ENOMEM;
    ERR_clear_error();
    if ((t->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
        tls_errstr(err, errsz, "cannot create a TLS client context");
        free(t);
        return RM_E_CONFIG;
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(t->ctx,
                        SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Opportunistic TLS (RFC 7435): the chain is checked so that the log
       can say whether it verified, but a failure does not stop the
       handshake; MX host names are not authenticated without DANE or
       MTA-STS anyway. */
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_NONE, NULL);
    if (SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
        /* No trust store: everything logs as unverified. */
        ERR_clear_error();
        log_warn("event=tls.client_no_trust_store");
    }
    *out = t;
    return 0;
}

void
tls_client_free(struct tls_client *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

/* ---- connections -------------------------------------------------- */

/* The memory-BIO plumbing shared by both ends. */
static struct tls_conn *
tls_conn_new(SSL_CTX *ctx)
{
    struct tls_conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    ERR_clear_error();
    c->ssl = SSL_new(ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        SSL_free(c->ssl);
        free(c);
        ERR_clear_error();
        return NULL;
    }
    /* An empty input BIO means "wait for more", not end of file. */
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    return c;
}

struct tls_conn *
tls_conn_server(struct tls_server *t)
{
    struct tls_conn *c = tls_conn_new(t->ctx);

    if (c != NULL)
        SSL_set_accept_state(c->ssl);
    return c;
}

/* A host name (not an address literal, not empty): worth SNI (RFC 6066
   §3 forbids literal addresses there) and a name check. */
static int
tls_is_hostname(const char *s)
{
    unsigned char a[16];

    if (s == NULL || s[0] == '\0' || strlen(s) > 253)
        return 0;
    if (inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1)
        return 0;
    for (const char *p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
            return 0;
    }
    return 1;
}

struct tls_conn *
tls_conn_client(struct tls_client *t, const char *sni)
{
    struct tls_conn *c = tls_conn_new(t->ctx);

    if (c == NULL)
        return NULL;
    c->client = 1;
    if (tls_is_hostname(sni)) {
        /* SNI, and the name checked during verification (logged only). */
        if (SSL_set_tlsext_host_name(c->ssl, sni) != 1 ||
            SSL_set1_host(c->ssl, sni) != 1) {
            tls_conn_free(c);
            ERR_clear_error();
            return NULL;
        }
    }
    SSL_set_connect_state(c->ssl);
    return c;
}

int
tls_conn_verified(const struct tls_conn *c)
{
    X509 *x;
    int ok;

    if (!c->established)
        return 0;
    x = SSL_get1_peer_certificate(c->ssl);
    ok = x != NULL && SSL_get_verify_result(c->ssl) == X509_V_OK;
    X509_free(x);
    return ok;
}

const char *
tls_conn_verify_error(const struct tls_conn *c)
{
    if (!c->established)
        return "no handshake";
    if (tls_conn_verified(c))
        return "ok";
    return X509_verify_cert_error_string(SSL_get_verify_result(c->ssl));
}

void
tls_conn_free(struct tls_conn *c)
{
    if (c == NULL)
        return;
    SSL_free(c->ssl); /* frees both BIOs */
    free(c);
}

int
tls_conn_feed(struct tls_conn *c, const void *p, size_t n)
{
    const char *s = p;

    while (n > 0) {
        int k = n > INT_MAX ? INT_MAX : (int)n;
        int w = BIO_write(c->rbio, s, k);
        if (w <= 0)
            return -ENOMEM;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static enum tls_res
tls_conn_fail(struct tls_conn *c, int ret, const char *what)
{
    int e = SSL_get_error(c->ssl, ret);

    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        ERR_clear_error();
        return TLS_WANT;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return TLS_CLOSED;
    default:
        tls_errstr(c->err, sizeof(c->err), what);
        return TLS_ERROR;
    }
}

enum tls_res
tls_conn_handshake(struct tls_conn *c)
{
    int r;

    if (c->established)
        return TLS_OK;
    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->established = 1;
        return TLS_OK;
    }
    return tls_conn_fail(c, r, "handshake failed");
}

enum tls_res
tls_conn_read(struct tls_conn *c, struct buf *out, size_t max)
{
    size_t got = 0;

    while (got < max) {
        size_t want = max - got;
        int r;

        if (want > TLS_READ_CHUNK)
            want = TLS_READ_CHUNK;
        if (buf_reserve(out, want) != 0)
            return TLS_OK; /* the caller's buffer is full: read later */
        ERR_clear_error();
        r = SSL_read(c->ssl, out->data + out->len, (int)want);
        if (r <= 0) {
            enum tls_res res = tls_conn_fail(c, r, "read failed");
            return res == TLS_WANT ? TLS_OK : res;
        }
        out->len += (size_t)r;
        out->data[out->len] = '\0';
        got += (size_t)r;
    }
    return TLS_OK;
}

enum tls_res
tls_conn_write(struct tls_conn *c, const void *p, size_t n)
{
    const char *s = p;

    while (n > 0) {
        int k = n > INT_MAX ? INT_MAX : (int)n;
        int w;

        ERR_clear_error();
        w = SSL_write(c->ssl, s, k);
        if (w <= 0) {
            /* Memory BIOs never push back: anything here is an error. */
            tls_conn_fail(c, w, "write failed");
            return TLS_ERROR;
        }
        s += w;
        n -= (size_t)w;
    }
    return TLS_OK;
}

size_t
tls_conn_pending(const struct tls_conn *c)
{
    return BIO_ctrl_pending(c->wbio);
}

int
tls_conn_buffered(const struct tls_conn *c)
{
    return BIO_ctrl_pending(c->rbio) > 0 || SSL_pending(c->ssl) > 0;
}

int
tls_conn_take(struct tls_conn *c, struct buf *out)
{
    size_t n = BIO_ctrl_pending(c->wbio);
    int r;

    if (n == 0)
        return 0;
    if ((r = buf_reserve(out, n)) != 0)
        return r;
    r = BIO_read(c->wbio, out->data + out->len, (int)n);
    if (r > 0) {
        out->len += (size_t)r;
        out->data[out->len] = '\0';
    }
    return 0;
}

void
tls_conn_shutdown(struct tls_conn *c)
{
    if (!c->established)
        return;
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl); /* queues close_notify; no reply awaited */
    ERR_clear_error();
}

int
tls_conn_established(const struct tls_conn *c)
{
    return c->established;
}

const char *
tls_conn_version(const struct tls_conn *c)
{
    return SSL_get_version(c->ssl);
}

const char *
tls_conn_cipher(const struct tls_conn *c)
{
    const char *s = SSL_get_cipher_name(c->ssl);
    return s ? s : "unknown";
}

int
tls_conn_bits(const struct tls_conn *c)
{
    return SSL_get_cipher_bits(c->ssl, NULL);
}

const char *
tls_conn_error(const struct tls_conn *c)
{
    return c->err[0] ? c->err : "unknown TLS error";
}
