/*
 * node_config: the node's configuration, from an INI file or the embedded
 * default.
 *
 * Config is a table (name, type, default, bounds) in node_config.c,
 * validated at load and immutable after. Errors cite "file:line". With no
 * file, the embedded default of DESIGN.md applies (loopback listeners,
 * data in ./relaymesh-data, local domain "localhost").
 *
 * Ownership: node_config_load() fills caller storage; node_config_cleanup()
 * frees what it allocated. Not thread-safe; read-only after load.
 */
#ifndef RM_NODE_CONFIG_H
#define RM_NODE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NODE_CONFIG_LISTEN_MAX 8
#define NODE_CONFIG_DOMAINS_MAX 64
#define NODE_CONFIG_NETS_MAX 64
#define NODE_CONFIG_ALIASES_MAX 256

struct node_listen {
    char text[128]; /* as written: "127.0.0.1:2525" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

struct node_net {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network bytes, masked */
    unsigned prefix;        /* prefix length */
};

enum node_tls_version {
    NODE_TLS_12 = 0, /* TLS 1.2 and 1.3 (default) */
    NODE_TLS_13 = 1  /* TLS 1.3 only */
};

enum node_sender_policy {
    NODE_SENDER_OWN = 0, /* login address or an alias of it (default) */
    NODE_SENDER_ANY = 1
};

enum node_delivery_tls {
    NODE_DTLS_NONE = 0,
    NODE_DTLS_OPPORTUNISTIC = 1, /* default */
    NODE_DTLS_REQUIRED = 2
};

enum node_mesh_profile {
    NODE_MESH_LAN = 0, /* memberlist's LAN defaults (default) */
    NODE_MESH_WAN = 1
};

enum node_bare_lf {
    NODE_BARE_REJECT = 0,   /* 5xx on bare CR / LF (default) */
    NODE_BARE_NORMALISE = 1 /* convert to CRLF */
};

struct node_config {
    char *path; /* config file, NULL = embedded */
    /* [node] */
    char *hostname;       /* default: gethostname() */
    char *datadir;        /* default "./relaymesh-data" */
    char *user;           /* drop privileges to; "relaymesh" */
    char *log_level;      /* "info" */
    char *control_socket; /* default "<datadir>/control.sock" */
    /* [smtp] */
    struct node_listen listen[NODE_CONFIG_LISTEN_MAX];
    size_t nlisten; /* default 127.0.0.1:2525 */
    struct node_listen submission[NODE_CONFIG_LISTEN_MAX];
    size_t nsubmission; /* default 127.0.0.1:2587 */
    struct node_listen smtps[NODE_CONFIG_LISTEN_MAX];
    size_t nsmtps;                          /* default 127.0.0.1:2465 */
    char *domains[NODE_CONFIG_DOMAINS_MAX]; /* local domains, lower-case */
    size_t ndomains;                        /* default "localhost" */
    struct node_net mynetworks[NODE_CONFIG_NETS_MAX];
    size_t nmynetworks; /* default 127.0.0.0/8, ::1/128 */
    char *postmaster;   /* mailbox for postmaster@ any local
                           domain; default postmaster@<first> */
    char *banner;       /* greeting text after hostname */
    /* [limits] RFC 5321 §4.5.3 and session budget */
    size_t max_command_line;     /* 512 (§4.5.3.1.4) */
    size_t max_text_line;        /* 1000 (§4.5.3.1.6) */
    size_t max_recipients;       /* 1000 (§4.5.3.1.8 minimum is 100) */
    uint64_t max_message_size;   /* 26214400 */
    size_t max_header_size;      /* 102400 */
    unsigned max_errors;         /* 10, then 421 */
    unsigned max_received;       /* 50 Received headers, loop */
    unsigned max_sessions;       /* 10000 concurrent, then 421 */
    unsigned timeout_command;    /* seconds; 300 (§4.5.3.2.7) */
    unsigned timeout_data;       /* seconds; 600 without progress */
    unsigned min_data_rate;      /* bytes/s floor in DATA; 500 */
    unsigned conn_rate_per_ip;   /* per minute; 0 = off */
    unsigned sessions_per_ip;    /* concurrent; 0 = off */
    unsigned msgs_per_user_hour; /* 0 = off */
    int rate_exempt_trusted;     /* mynetworks exempt; yes */
    /* [tls] */
    char *tls_cert_file; /* "" = self-signed in <datadir>/tls */
    char *tls_key_file;
    enum node_tls_version tls_min_version;
    char *tls_ciphers;      /* TLS 1.2 list */
    char *tls_ciphersuites; /* TLS 1.3 suites */
    /* [auth] */
    struct node_net auth_plain_nets[NODE_CONFIG_NETS_MAX];
    size_t nauth_plain_nets; /* AUTH without TLS; loopback */
    enum node_sender_policy sender_policy;
    char *sender_aliases[NODE_CONFIG_ALIASES_MAX]; /* "alias=login" */
    size_t nsender_aliases;
    unsigned auth_fail_delay;     /* seconds; 1 */
    unsigned auth_fail_delay_max; /* seconds; 8 */
    unsigned auth_max_fail_ip;    /* 10 per window */
    unsigned auth_max_fail_user;  /* 10 per window */
    unsigned auth_fail_window;    /* seconds; 3600 */
    unsigned auth_cache_ttl;      /* seconds; 300; 0 = off */
    unsigned timeout_shutdown;    /* seconds SIGTERM waits for sessions */
    enum node_bare_lf bare_lf;    /* "reject" | "normalise" */
    /* [dns] */
    char *dns_server; /* "" = system resolvers; "ADDR[@PORT]" */
    /* [delivery] outbound SMTP and the queue's schedule (seconds) */
    unsigned delivery_port; /* 25 */
    char *delivery_helo;    /* "" = hostname */
    enum node_delivery_tls delivery_tls;
    char *delivery_tls_policy; /* "domain=level, ..." */
    unsigned delivery_concurrency;
    unsigned delivery_concurrency_dest;
    unsigned delivery_retry_first;  /* 300 */
    unsigned delivery_retry_max;    /* 3600 */
    unsigned delivery_lifetime;     /* 5 days */
    unsigned delivery_delay_notice; /* 4 h; 0 = off */
    char *delivery_smarthost;       /* "" = MX lookup */
    char *delivery_smarthost_user;
    char *delivery_smarthost_pass;
    unsigned delivery_timeout_connect;
    unsigned delivery_timeout_greeting;
    unsigned delivery_timeout_mail;
    unsigned delivery_timeout_rcpt;
    unsigned delivery_timeout_data_init;
    unsigned delivery_timeout_data_block;
    unsigned delivery_timeout_data_done;
    /* [mesh] */
    struct node_listen mesh_listen[NODE_CONFIG_LISTEN_MAX];
    size_t nmesh_listen; /* default 127.0.0.1:4750; 0 = no mesh */
    struct node_listen mesh_advertise[NODE_CONFIG_LISTEN_MAX];
    size_t nmesh_advertise; /* 0 = the listen addresses */
    char *mesh_name;        /* default: [node] hostname */
    enum node_mesh_profile mesh_profile;
    int mesh_egress;                  /* may deliver to the Internet */
    unsigned mesh_lifetime;           /* membership lifetime, seconds */
    unsigned mesh_push_pull_interval; /* seconds; 0 = the profile's */
    unsigned mesh_tombstone_lifetime; /* seconds a mesh dedup record is
                                         kept; default 14 days */
    unsigned mesh_replicas;           /* peers holding a copy of each entry */
    unsigned mesh_takeover_grace;     /* seconds after a node is declared dead
                                         before a replica delivers its mail */
    unsigned mesh_ack_replicas;       /* 250 only once this many replicas
                                         hold the message; 0 = off */
    unsigned mesh_ack_timeout;        /* seconds to wait for them before
                                         451 4.4.3 */
    /* [bridge] */
    struct node_listen bridge_listen[NODE_CONFIG_LISTEN_MAX];
    size_t nbridge_listen;        /* default 127.0.0.1:4751; 0 = none */
    unsigned bridge_idle_timeout; /* seconds */
    unsigned bridge_max_sessions;
    /* [store] */
    uint64_t map_size_max; /* 0 = no limit but the disk */
};

/*
 * Load path (NULL: embedded default). On error returns RM_E_CONFIG and
 * writes "file:line: what is wrong" into err; cfg is left cleaned up.
 * Unknown sections or keys are errors (a typo must not pass silently).
 */
int node_config_load(struct node_config *cfg, const char *path, char *err,
                     size_t errsz);
/*
 * Same as node_config_load() on the text of a config file already in
 * memory (NUL-terminated); name is used in error messages ("name:line:").
 * For tests and the fuzzer.
 */
int node_config_load_string(struct node_config *cfg, const char *text,
                            const char *name, char *err, size_t errsz);
void node_config_cleanup(struct node_config *cfg);

/* 1 if sa (AF_INET / AF_INET6, v4-mapped v6 handled) is in mynetworks. */
int node_config_trusted(const struct node_config *cfg,
                        const struct sockaddr *sa);
/* 1 if sa is in one of nets. */
int node_config_in_nets(const struct node_net *nets, size_t nnets,
                        const struct sockaddr *sa);
/* 1 if an authenticated login may use sender as MAIL FROM (policy, the
   login itself, sender_aliases; addresses compared without case). */
int node_config_sender_ok(const struct node_config *cfg, const char *login,
                          const char *sender);
/* 1 if domain (any case, no trailing dot) is a local domain. */
int node_config_local_domain(const struct node_config *cfg, const char *domain,
                             size_t len);

/* The STARTTLS level for mail to domain: [delivery] tls_policy's entry
   for it (exact, case-insensitive, or a parent domain given as
   ".example.com"), else [delivery] tls. */
enum node_delivery_tls node_config_tls_for(const struct node_config *cfg,
                                           const char *domain);

/* [delivery] smarthost split: host (brackets removed), port (default 25),
   mx: 1 if the MX of host is to be looked up (no brackets). 0, or
   RM_E_NOTFOUND when no smarthost is set. */
int node_config_smarthost(const struct node_config *cfg, char *host,
                          size_t hostsz, unsigned *port, int *mx);

/* Write every key with its value, as INI, to fd (for `serve --check -v`
   and the sample config). */
void node_config_dump(const struct node_config *cfg, int fd);

#endif
