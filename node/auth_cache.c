/* Verified-login cache; see auth_cache.h. */
#include "node/auth_cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "store/store.h"

struct auth_entry {
    char login[STORE_ADDR_MAX];
    unsigned char tag[crypto_generichash_BYTES];
    uint64_t expires; /* ms; 0 = free */
};

struct auth_cache {
    uint64_t ttl_ms;
    uint64_t gen;
    unsigned char key[crypto_generichash_KEYBYTES];
    struct auth_entry e[AUTH_CACHE_MAX];
};

int
auth_cache_new(unsigned ttl_s, struct auth_cache **out)
{
    struct auth_cache *c = calloc(1, sizeof(*c));

    *out = NULL;
    if (c == NULL)
        return -ENOMEM;
    c->ttl_ms = (uint64_t)ttl_s * 1000;
    randombytes_buf(c->key, sizeof(c->key));
    *out = c;
    return 0;
}

void
auth_cache_free(struct auth_cache *c)
{
    if (c == NULL)
        return;
    sodium_memzero(c, sizeof(*c));
    free(c);
}

static void
auth_tag(const struct auth_cache *c, const char *login, const char *pw,
         size_t pwlen, unsigned char *tag)
{
    crypto_generichash_state st;

    crypto_generichash_init(&st, c->key, sizeof(c->key),
                            crypto_generichash_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)login,
                              strlen(login) + 1); /* with its NUL */
    crypto_generichash_update(&st, (const unsigned char *)pw, pwlen);
    crypto_generichash_final(&st, tag, crypto_generichash_BYTES);
}

static struct auth_entry *
auth_find(struct auth_cache *c, const char *login)
{
    for (size_t i = 0; i < AUTH_CACHE_MAX; i++)
        if (c->e[i].expires != 0 && strcmp(c->e[i].login, login) == 0)
            return &c->e[i];
    return NULL;
}

int
auth_cache_check(struct auth_cache *c, const char *login, const char *pw,
                 size_t pwlen, uint64_t now_ms)
{
    unsigned char tag[crypto_generichash_BYTES];
    struct auth_entry *e;
    int ok;

    if (c == NULL || c->ttl_ms == 0 || (e = auth_find(c, login)) == NULL)
        return 0;
    if (e->expires <= now_ms) {
        sodium_memzero(e, sizeof(*e));
        return 0;
    }
    auth_tag(c, login, pw, pwlen, tag);
    ok = sodium_memcmp(tag, e->tag, sizeof(tag)) == 0;
    sodium_memzero(tag, sizeof(tag));
    return ok;
}

uint64_t
auth_cache_gen(const struct auth_cache *c)
{
    return c ? c->gen : 0;
}

void
auth_cache_put(struct auth_cache *c, const char *login, const char *pw,
               size_t pwlen, uint64_t now_ms, uint64_t gen)
{
    struct auth_entry *e;

    if (c == NULL || c->ttl_ms == 0 || gen != c->gen ||
        strlen(login) >= sizeof(e->login))
        return;
    if ((e = auth_find(c, login)) == NULL) {
        /* A free or expired slot, else the one that expires first. */
        e = &c->e[0];
        for (size_t i = 0; i < AUTH_CACHE_MAX; i++) {
            if (c->e[i].expires <= now_ms) {
                e = &c->e[i];
                break;
            }
            if (c->e[i].expires < e->expires)
                e = &c->e[i];
        }
    }
    snprintf(e->login, sizeof(e->login), "%s", login);
    auth_tag(c, login, pw, pwlen, e->tag);
    e->expires = now_ms + c->ttl_ms;
}

void
auth_cache_forget(struct auth_cache *c, const char *login)
{
    struct auth_entry *e;

    if (c == NULL)
        return;
    c->gen++;
    while ((e = auth_find(c, login)) != NULL)
        sodium_memzero(e, sizeof(*e));
}
