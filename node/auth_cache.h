/*
 * auth_cache: logins verified recently, so that a client that logs in
 * for every message (most submission clients) pays the argon2id check
 * once per cache_ttl, not once per message (like Dovecot's auth cache).
 *
 * An entry holds the login and a keyed BLAKE2b tag of login + password
 * under a key made at start and never stored: the cache holds no
 * password and no hash an attacker could test offline. Only successes
 * are cached; failures always pay the full check. Any change to a user
 * (password, removal) must call auth_cache_forget(), which also moves
 * the generation on so that a check that started before the change
 * cannot put the old password back. Loop thread only. Bounded: at most
 * AUTH_CACHE_MAX entries; the oldest is replaced when full.
 */
#ifndef RM_AUTH_CACHE_H
#define RM_AUTH_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_CACHE_MAX 256

struct auth_cache;

/* ttl_s = 0: a cache that never hits. 0 or -ENOMEM. */
int auth_cache_new(unsigned ttl_s, struct auth_cache **out);
void auth_cache_free(struct auth_cache *c);

/* 1 if login + password were verified within the TTL, else 0. */
int auth_cache_check(struct auth_cache *c, const char *login, const char *pw,
                     size_t pwlen, uint64_t now_ms);
/* The current generation: take it before a check starts. */
uint64_t auth_cache_gen(const struct auth_cache *c);
/* Remember a verified login, unless a user changed since gen. */
void auth_cache_put(struct auth_cache *c, const char *login, const char *pw,
                    size_t pwlen, uint64_t now_ms, uint64_t gen);
/* A user changed or went: drop what is cached for that login. */
void auth_cache_forget(struct auth_cache *c, const char *login);

#endif
