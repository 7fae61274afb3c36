/*
 * node_config: the config table, the INI loader (inih) and the embedded
 * default.
 *
 * Every key is one row of cfg_keys[]: section, name, type, default (as
 * text, parsed by the same code as the file), bounds and the offset of its
 * field in struct node_config. Defaults are applied first; a key given in
 * the file replaces its default (list keys given again, or continued on an
 * indented line, append). Defaults that depend on other keys (hostname,
 * control_socket, postmaster) are computed after the file.
 *
 * inih as packaged by Debian calls the handler without a line number, so
 * the file is fed to ini_parse_stream() through our own line reader, which
 * counts lines (the handler runs while its line is the current one) and
 * enforces the line length inih can hold.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <ini.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/rm_error.h"
#include "node/node_config.h"

#define CFG_FILE_MAX (1024 * 1024) /* a config file larger is a mistake */
#define CFG_VALUE_MAX 1024
#define CFG_PATH_MAX 4096

enum cfg_type {
    CFG_STRING, /* char * */
    CFG_SIZE,   /* bytes, suffixes k/m/g/t; size_t or uint64_t */
    CFG_U64,    /* plain number; size_t or uint64_t */
    CFG_UINT,   /* plain number; unsigned */
    CFG_TIME,   /* seconds, suffixes s/m/h/d ("5m", "4h"); unsigned */
    CFG_BOOL,   /* yes/no, true/false, on/off, 1/0; int */
    CFG_LIST,   /* comma-separated domains; char *[] + count */
    CFG_PAIRS,  /* comma-separated "address=address"; char *[] + count */
    CFG_LISTEN, /* comma-separated host:port; struct node_listen[] */
    CFG_NETS,   /* comma-separated CIDR; struct node_net[] */
    CFG_ENUM    /* one of enums[]; stored as its index in an enum */
};

typedef int (*cfg_check_fn)(const char *value, char *msg, size_t msgsz);

struct cfg_key {
    const char *section;
    const char *name;
    enum cfg_type type;
    const char *def;   /* default as text; NULL = computed after load */
    uint64_t min, max; /* numbers: bounds; strings: max length */
    size_t off;        /* field in struct node_config */
    size_t width;      /* sizeof the field (numbers) */
    size_t count_off;  /* lists: the count field */
    const char *const *enums;
    cfg_check_fn check; /* strings: extra validation */
    const char *help;   /* one-line comment for dump / sample */
};

static int cfg_check_log_level(const char *v, char *msg, size_t msgsz);
static int cfg_check_hostname(const char *v, char *msg, size_t msgsz);
static int cfg_check_text(const char *v, char *msg, size_t msgsz);
static int cfg_check_mailbox(const char *v, char *msg, size_t msgsz);
static int cfg_check_text_opt(const char *v, char *msg, size_t msgsz);
static int cfg_check_dns_server(const char *v, char *msg, size_t msgsz);
static int cfg_check_tls_policy(const char *v, char *msg, size_t msgsz);
static int cfg_check_smarthost(const char *v, char *msg, size_t msgsz);
static int cfg_check_mesh_name(const char *v, char *msg, size_t msgsz);

static const char *const cfg_bare_lf_names[] = {"reject", "normalise", NULL};
static const char *const cfg_tls_version_names[] = {"TLSv1.2", "TLSv1.3", NULL};
static const char *const cfg_sender_policy_names[] = {"own", "any", NULL};
static const char *const cfg_mesh_profile_names[] = {"lan", "wan", NULL};
static const char *const cfg_delivery_tls_names[] = {"none", "opportunistic",
                                                     "required", NULL};

#define OFF(f) offsetof(struct node_config, f)
#define WID(f) sizeof(((struct node_config *)0)->f)

/* clang-format off */
static const struct cfg_key cfg_keys[] = {
    {"node", "hostname", CFG_STRING, NULL, 0, 253, OFF(hostname), 0, 0,
     NULL, cfg_check_hostname,
     "name in the greeting and Received headers (default: gethostname())"},
    {"node", "datadir", CFG_STRING, "./relaymesh-data", 0, CFG_PATH_MAX,
     OFF(datadir), 0, 0, NULL, NULL,
     "store, keys and control socket; relative to the working directory"},
    {"node", "user", CFG_STRING, "relaymesh", 0, 32, OFF(user), 0, 0, NULL,
     cfg_check_text, "unprivileged user to switch to when started as root"},
    {"node", "log_level", CFG_STRING, "info", 0, 16, OFF(log_level), 0, 0,
     NULL, cfg_check_log_level, "error | warn | info | debug"},
    {"node", "control_socket", CFG_STRING, NULL, 0, CFG_PATH_MAX,
     OFF(control_socket), 0, 0, NULL, NULL,
     "Unix socket of the CLI, mode 0600 (default: <datadir>/control.sock)"},
    {"smtp", "listen", CFG_LISTEN, "127.0.0.1:2525", 1,
     NODE_CONFIG_LISTEN_MAX, OFF(listen), 0, OFF(nlisten), NULL, NULL,
     "SMTP relay/MX listeners, host:port, IPv6 as [::1]:25; numeric"},
    {"smtp", "submission", CFG_LISTEN, "127.0.0.1:2587", 0,
     NODE_CONFIG_LISTEN_MAX, OFF(submission), 0, OFF(nsubmission), NULL, NULL,
     "submission listeners (RFC 6409: AUTH required); empty = none"},
    {"smtp", "smtps", CFG_LISTEN, "127.0.0.1:2465", 0, NODE_CONFIG_LISTEN_MAX,
     OFF(smtps), 0, OFF(nsmtps), NULL, NULL,
     "implicit-TLS submission listeners (RFC 8314); empty = none"},
    {"smtp", "domains", CFG_LIST, "localhost", 1, NODE_CONFIG_DOMAINS_MAX,
     OFF(domains), 0, OFF(ndomains), NULL, NULL,
     "local domains: their mail goes into this node's mailboxes"},
    {"smtp", "mynetworks", CFG_NETS, "127.0.0.0/8, ::1/128", 0,
     NODE_CONFIG_NETS_MAX, OFF(mynetworks), 0, OFF(nmynetworks), NULL, NULL,
     "trusted networks (CIDR) that may relay without AUTH"},
    {"smtp", "postmaster", CFG_STRING, NULL, 0, 512, OFF(postmaster), 0, 0,
     NULL, cfg_check_mailbox,
     "who gets postmaster@ mail (default: postmaster@<first domain>)"},
    {"smtp", "banner", CFG_STRING, "relaymesh ESMTP", 0, 200, OFF(banner), 0,
     0, NULL, cfg_check_text, "greeting text after \"220 <hostname>\""},
    {"smtp", "bare_lf", CFG_ENUM, "reject", 0, 0, OFF(bare_lf),
     WID(bare_lf), 0, cfg_bare_lf_names, NULL,
     "bare CR or LF in DATA: reject (5xx) | normalise (to CRLF)"},
    {"limits", "max_command_line", CFG_SIZE, "512", 512, 65536,
     OFF(max_command_line), WID(max_command_line), 0, NULL, NULL,
     "bytes per command line incl. CRLF (RFC 5321 4.5.3.1.4: >= 512)"},
    {"limits", "max_text_line", CFG_SIZE, "1000", 1000, 1048576,
     OFF(max_text_line), WID(max_text_line), 0, NULL, NULL,
     "bytes per text line incl. CRLF (RFC 5321 4.5.3.1.6: >= 1000)"},
    {"limits", "max_recipients", CFG_U64, "1000", 100, 100000,
     OFF(max_recipients), WID(max_recipients), 0, NULL, NULL,
     "recipients per message (RFC 5321 4.5.3.1.8: >= 100)"},
    {"limits", "max_message_size", CFG_SIZE, "26214400", 65536,
     UINT64_C(4294967296), OFF(max_message_size), WID(max_message_size), 0,
     NULL, NULL, "bytes per message, announced in SIZE (RFC 1870)"},
    {"limits", "max_header_size", CFG_SIZE, "102400", 1024, 16777216,
     OFF(max_header_size), WID(max_header_size), 0, NULL, NULL,
     "bytes of header section per message"},
    {"limits", "max_errors", CFG_UINT, "10", 1, 1000, OFF(max_errors),
     WID(max_errors), 0, NULL, NULL,
     "protocol errors per session before 421"},
    {"limits", "max_received", CFG_UINT, "50", 10, 1000, OFF(max_received),
     WID(max_received), 0, NULL, NULL,
     "Received headers before a message is a loop (554 5.4.6)"},
    {"limits", "max_sessions", CFG_UINT, "10000", 1, 1000000,
     OFF(max_sessions), WID(max_sessions), 0, NULL, NULL,
     "concurrent SMTP sessions before 421"},
    {"limits", "timeout_command", CFG_UINT, "300", 1, 86400,
     OFF(timeout_command), WID(timeout_command), 0, NULL, NULL,
     "seconds to wait for a command (RFC 5321 4.5.3.2.7: 5 minutes)"},
    {"limits", "timeout_data", CFG_UINT, "600", 1, 86400, OFF(timeout_data),
     WID(timeout_data), 0, NULL, NULL,
     "seconds to wait for message data with no progress"},
    {"limits", "min_data_rate", CFG_UINT, "500", 0, 1000000000,
     OFF(min_data_rate), WID(min_data_rate), 0, NULL, NULL,
     "bytes/s a client must keep up during DATA / BDAT; 0 = no floor"},
    {"limits", "timeout_shutdown", CFG_UINT, "30", 0, 3600,
     OFF(timeout_shutdown), WID(timeout_shutdown), 0, NULL, NULL,
     "seconds SIGTERM waits for sessions in flight"},
    {"limits", "conn_rate_per_ip", CFG_UINT, "0", 0, 1000000,
     OFF(conn_rate_per_ip), WID(conn_rate_per_ip), 0, NULL, NULL,
     "new connections per client IP per minute, then 421; 0 = no limit"},
    {"limits", "sessions_per_ip", CFG_UINT, "0", 0, 1000000,
     OFF(sessions_per_ip), WID(sessions_per_ip), 0, NULL, NULL,
     "concurrent sessions per client IP, then 421; 0 = no limit"},
    {"limits", "msgs_per_user_hour", CFG_UINT, "0", 0, 100000000,
     OFF(msgs_per_user_hour), WID(msgs_per_user_hour), 0, NULL, NULL,
     "messages per authenticated user per hour, then 451; 0 = no limit"},
    {"limits", "rate_exempt_trusted", CFG_BOOL, "yes", 0, 1,
     OFF(rate_exempt_trusted), WID(rate_exempt_trusted), 0, NULL, NULL,
     "mynetworks clients are exempt from the two per-IP limits"},
    {"tls", "cert_file", CFG_STRING, "", 0, CFG_PATH_MAX, OFF(tls_cert_file),
     0, 0, NULL, NULL,
     "PEM certificate chain; empty = a self-signed one in <datadir>/tls"},
    {"tls", "key_file", CFG_STRING, "", 0, CFG_PATH_MAX, OFF(tls_key_file), 0,
     0, NULL, NULL, "PEM private key of cert_file"},
    {"tls", "min_version", CFG_ENUM, "TLSv1.2", 0, 0, OFF(tls_min_version),
     WID(tls_min_version), 0, cfg_tls_version_names, NULL,
     "oldest protocol accepted: TLSv1.2 | TLSv1.3"},
    {"tls", "ciphers", CFG_STRING,
     "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
     "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
     "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
     0, 1000, OFF(tls_ciphers), 0, 0, NULL, cfg_check_text,
     "TLS 1.2 cipher list (OpenSSL syntax)"},
    {"tls", "ciphersuites", CFG_STRING,
     "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
     "TLS_CHACHA20_POLY1305_SHA256",
     0, 1000, OFF(tls_ciphersuites), 0, 0, NULL, cfg_check_text,
     "TLS 1.3 cipher suites (OpenSSL syntax)"},
    {"auth", "plaintext_networks", CFG_NETS, "127.0.0.1/32, ::1/128", 0,
     NODE_CONFIG_NETS_MAX, OFF(auth_plain_nets), 0, OFF(nauth_plain_nets),
     NULL, NULL, "clients that may AUTH without TLS (default: loopback)"},
    {"auth", "sender_policy", CFG_ENUM, "own", 0, 0, OFF(sender_policy),
     WID(sender_policy), 0, cfg_sender_policy_names, NULL,
     "MAIL FROM of authenticated users: own (login or alias) | any"},
    {"auth", "sender_aliases", CFG_PAIRS, "", 0, NODE_CONFIG_ALIASES_MAX,
     OFF(sender_aliases), 0, OFF(nsender_aliases), NULL, NULL,
     "extra senders per login: alias@domain=login@domain, ..."},
    {"auth", "fail_delay", CFG_UINT, "1", 0, 60, OFF(auth_fail_delay),
     WID(auth_fail_delay), 0, NULL, NULL,
     "seconds before 535 after a failure; doubles per recent failure"},
    {"auth", "fail_delay_max", CFG_UINT, "8", 0, 300, OFF(auth_fail_delay_max),
     WID(auth_fail_delay_max), 0, NULL, NULL,
     "ceiling of that delay, seconds"},
    {"auth", "max_failures_ip", CFG_UINT, "10", 1, 1000000,
     OFF(auth_max_fail_ip), WID(auth_max_fail_ip), 0, NULL, NULL,
     "failed logins per client IP in fail_window, then 421"},
    {"auth", "max_failures_user", CFG_UINT, "10", 1, 1000000,
     OFF(auth_max_fail_user), WID(auth_max_fail_user), 0, NULL, NULL,
     "failed logins per login name in fail_window, then refused"},
    {"auth", "fail_window", CFG_UINT, "3600", 1, 604800,
     OFF(auth_fail_window), WID(auth_fail_window), 0, NULL, NULL,
     "seconds over which failures are counted"},
    {"auth", "cache_ttl", CFG_UINT, "300", 0, 86400, OFF(auth_cache_ttl),
     WID(auth_cache_ttl), 0, NULL, NULL,
     "seconds a verified login skips the password hash; 0 = off"},
    {"dns", "server", CFG_STRING, "", 0, 128, OFF(dns_server), 0, 0, NULL,
     cfg_check_dns_server,
     "resolver to ask, ADDR or ADDR@PORT; empty = /etc/resolv.conf"},
    {"delivery", "port", CFG_UINT, "25", 1, 65535, OFF(delivery_port),
     WID(delivery_port), 0, NULL, NULL,
     "TCP port of the MX hosts mail is delivered to"},
    {"delivery", "helo_name", CFG_STRING, "", 0, 253, OFF(delivery_helo), 0,
     0, NULL, cfg_check_text_opt, "name sent in EHLO; empty = [node] hostname"},
    {"delivery", "tls", CFG_ENUM, "opportunistic", 0, 0, OFF(delivery_tls),
     WID(delivery_tls), 0, cfg_delivery_tls_names, NULL,
     "STARTTLS to MX hosts: none, opportunistic or required"},
    {"delivery", "tls_policy", CFG_STRING, "", 0, 4000,
     OFF(delivery_tls_policy), 0, 0, NULL, cfg_check_tls_policy,
     "per destination: domain=none|opportunistic|required, ..."},
    {"delivery", "concurrency", CFG_UINT, "100", 1, 10000,
     OFF(delivery_concurrency), WID(delivery_concurrency), 0, NULL, NULL,
     "outbound connections at once, all destinations"},
    {"delivery", "concurrency_per_destination", CFG_UINT, "10", 1, 1000,
     OFF(delivery_concurrency_dest), WID(delivery_concurrency_dest), 0, NULL,
     NULL, "outbound connections at once to one destination domain"},
    {"delivery", "retry_first", CFG_TIME, "5m", 1, 86400,
     OFF(delivery_retry_first), WID(delivery_retry_first), 0, NULL, NULL,
     "wait before the first retry; doubles per attempt"},
    {"delivery", "retry_max", CFG_TIME, "1h", 1, 604800,
     OFF(delivery_retry_max), WID(delivery_retry_max), 0, NULL, NULL,
     "longest wait between two attempts"},
    {"delivery", "queue_lifetime", CFG_TIME, "5d", 1, 31536000,
     OFF(delivery_lifetime), WID(delivery_lifetime), 0, NULL, NULL,
     "give up (bounce) a message not delivered after this long"},
    {"delivery", "delay_notice", CFG_TIME, "4h", 0, 31536000,
     OFF(delivery_delay_notice), WID(delivery_delay_notice), 0, NULL, NULL,
     "tell the sender mail is delayed after this long; 0 = never"},
    {"delivery", "smarthost", CFG_STRING, "", 0, 300,
     OFF(delivery_smarthost), 0, 0, NULL, cfg_check_smarthost,
     "relay all outbound mail via host, [host], host:port; empty = MX"},
    {"delivery", "smarthost_user", CFG_STRING, "", 0, 512,
     OFF(delivery_smarthost_user), 0, 0, NULL, cfg_check_text_opt,
     "AUTH PLAIN login at the smarthost (only over TLS)"},
    {"delivery", "smarthost_password", CFG_STRING, "", 0, 512,
     OFF(delivery_smarthost_pass), 0, 0, NULL, NULL,
     "its password (keep this file 0600)"},
    {"delivery", "timeout_connect", CFG_TIME, "30s", 1, 3600,
     OFF(delivery_timeout_connect), WID(delivery_timeout_connect), 0, NULL,
     NULL, "TCP connect to an MX host"},
    {"delivery", "timeout_greeting", CFG_TIME, "5m", 1, 3600,
     OFF(delivery_timeout_greeting), WID(delivery_timeout_greeting), 0, NULL,
     NULL, "220 greeting, EHLO, STARTTLS, AUTH (RFC 5321 4.5.3.2.1)"},
    {"delivery", "timeout_mail", CFG_TIME, "5m", 1, 3600,
     OFF(delivery_timeout_mail), WID(delivery_timeout_mail), 0, NULL, NULL,
     "reply to MAIL (RFC 5321 4.5.3.2.2)"},
    {"delivery", "timeout_rcpt", CFG_TIME, "5m", 1, 3600,
     OFF(delivery_timeout_rcpt), WID(delivery_timeout_rcpt), 0, NULL, NULL,
     "reply to RCPT (RFC 5321 4.5.3.2.3)"},
    {"delivery", "timeout_data_init", CFG_TIME, "2m", 1, 3600,
     OFF(delivery_timeout_data_init), WID(delivery_timeout_data_init), 0,
     NULL, NULL, "354 reply to DATA (RFC 5321 4.5.3.2.4)"},
    {"delivery", "timeout_data_block", CFG_TIME, "3m", 1, 3600,
     OFF(delivery_timeout_data_block), WID(delivery_timeout_data_block), 0,
     NULL, NULL, "each block of message data sent (RFC 5321 4.5.3.2.5)"},
    {"delivery", "timeout_data_done", CFG_TIME, "10m", 1, 3600,
     OFF(delivery_timeout_data_done), WID(delivery_timeout_data_done), 0,
     NULL, NULL, "reply after the final dot (RFC 5321 4.5.3.2.6)"},
    {"store", "map_size_max", CFG_SIZE, "0", 0, UINT64_C(1) << 50,
     OFF(map_size_max), WID(map_size_max), 0, NULL, NULL,
     "ceiling of the LMDB map, bytes (k/m/g); 0 = no limit but the disk"},
    {"mesh", "listen", CFG_LISTEN, "127.0.0.1:4750", 0,
     NODE_CONFIG_LISTEN_MAX, OFF(mesh_listen), 0, OFF(nmesh_listen), NULL,
     NULL, "mesh listeners (Noise over TCP), host:port; empty = no mesh"},
    {"mesh", "advertise", CFG_LISTEN, "", 0, NODE_CONFIG_LISTEN_MAX,
     OFF(mesh_advertise), 0, OFF(nmesh_advertise), NULL, NULL,
     "addresses peers dial to reach this node; empty = mesh.listen"},
    {"mesh", "name", CFG_STRING, NULL, 0, 63, OFF(mesh_name), 0, 0, NULL,
     cfg_check_mesh_name,
     "this node's name in the mesh (default: [node] hostname)"},
    {"mesh", "profile", CFG_ENUM, "lan", 0, 0, OFF(mesh_profile),
     WID(mesh_profile), 0, cfg_mesh_profile_names, NULL,
     "failure detection timing: lan (probe 1 s) | wan (probe 5 s)"},
    {"mesh", "egress", CFG_BOOL, "yes", 0, 1, OFF(mesh_egress),
     WID(mesh_egress), 0, NULL, NULL,
     "this node may deliver mail to the Internet"},
    {"mesh", "membership_lifetime", CFG_TIME, "90d", 10, 315360000,
     OFF(mesh_lifetime), WID(mesh_lifetime), 0, NULL, NULL,
     "membership certificates expire after this; renewed at half-life"},
    {"mesh", "push_pull_interval", CFG_TIME, "0", 0, 86400,
     OFF(mesh_push_pull_interval), WID(mesh_push_pull_interval), 0, NULL,
     NULL, "full state exchange with a random peer; 0 = 30s lan, 60s wan"},
    {"mesh", "tombstone_lifetime", CFG_TIME, "14d", 60, 315360000,
     OFF(mesh_tombstone_lifetime), WID(mesh_tombstone_lifetime), 0, NULL,
     NULL, "how long a mesh node remembers the mail it received (dedup)"},
    {"mesh", "replicas", CFG_UINT, "2", 0, 8, OFF(mesh_replicas),
     WID(mesh_replicas), 0, NULL, NULL,
     "queue entries not delivered at once are copied to this many peers"},
    {"mesh", "takeover_grace", CFG_TIME, "5m", 1, 315360000,
     OFF(mesh_takeover_grace), WID(mesh_takeover_grace), 0, NULL, NULL,
     "a replica takes over a dead node's mail after this long"},
    {"mesh", "ack_replicas", CFG_UINT, "0", 0, 8, OFF(mesh_ack_replicas),
     WID(mesh_ack_replicas), 0, NULL, NULL,
     "answer 250 only once this many replicas hold the message; 0 = off"},
    {"mesh", "ack_timeout", CFG_TIME, "10s", 1, 3600, OFF(mesh_ack_timeout),
     WID(mesh_ack_timeout), 0, NULL, NULL,
     "wait this long for ack_replicas, then 451 4.4.3 and drop the message"},
    {"bridge", "listen", CFG_LISTEN, "127.0.0.1:4751", 0,
     NODE_CONFIG_LISTEN_MAX, OFF(bridge_listen), 0, OFF(nbridge_listen), NULL,
     NULL, "MAPI bridge listeners (Noise over TCP), host:port; empty = none"},
    {"bridge", "idle_timeout", CFG_TIME, "30m", 10, 86400,
     OFF(bridge_idle_timeout), WID(bridge_idle_timeout), 0, NULL, NULL,
     "close a bridge session that sent nothing for this long"},
    {"bridge", "max_sessions", CFG_UINT, "256", 1, 100000,
     OFF(bridge_max_sessions), WID(bridge_max_sessions), 0, NULL, NULL,
     "bridge sessions at once (logged on or not)"},
};
/* clang-format on */

#define CFG_NKEYS (sizeof(cfg_keys) / sizeof(cfg_keys[0]))

static const char *const cfg_sections[] = {
    "node",     "smtp", "limits", "tls",   "auth", "dns",
    "delivery", "mesh", "bridge", "store", NULL};

struct cfg_parse {
    struct node_config *cfg;
    const char *name;    /* file name for messages */
    const char *p, *end; /* reader position */
    int lineno;          /* line the reader handed out last */
    unsigned char seen[CFG_NKEYS];
    int err_line;  /* first error: line (0 = none) */
    char err[256]; /* and its text */
};

static void cfg_fail(struct cfg_parse *ps, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
cfg_fail(struct cfg_parse *ps, const char *fmt, ...)
{
    va_list ap;

    if (ps->err_line != 0)
        return; /* keep the first error */
    ps->err_line = ps->lineno > 0 ? ps->lineno : 1;
    va_start(ap, fmt);
    vsnprintf(ps->err, sizeof(ps->err), fmt, ap);
    va_end(ap);
}

/* ---- value checks -------------------------------------------------- */

static int
cfg_check_log_level(const char *v, char *msg, size_t msgsz)
{
    enum log_level l;

    if (log_level_parse(v, &l) != 0) {
        snprintf(msg, msgsz, "expected error, warn, info or debug");
        return RM_E_INVAL;
    }
    return 0;
}

static int
cfg_check_text(const char *v, char *msg, size_t msgsz)
{
    if (*v == '\0') {
        snprintf(msg, msgsz, "must not be empty");
        return RM_E_INVAL;
    }
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            snprintf(msg, msgsz, "control characters are not allowed");
            return RM_E_INVAL;
        }
    }
    return 0;
}

static int
cfg_domain_ok(const char *d, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (label == 0)
                return 0;
            label = 0;
            continue;
        }
        if (!isalnum(c) && c != '-' && c != '_')
            return 0;
        if (++label > 63)
            return 0;
    }
    return label != 0;
}

/* local@domain with a plausible local part and a valid domain. */
static int
cfg_addr_ok(const char *a, size_t len)
{
    const char *at = memrchr(a, '@', len);

    if (at == NULL || at == a || len > 320)
        return 0;
    for (const char *p = a; p < at; p++) {
        if ((unsigned char)*p <= ' ' || *p == ',' || *p == '=' || *p == '<' ||
            *p == '>')
            return 0;
    }
    return cfg_domain_ok(at + 1, len - (size_t)(at + 1 - a));
}

static int
cfg_check_mesh_name(const char *v, char *msg, size_t msgsz)
{
    if (*v == '\0' || strlen(v) > 63 ||
        strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "0123456789.-_") != strlen(v)) {
        snprintf(msg, msgsz,
                 "\"%s\" is not a node name (1-63 letters, digits, '.', "
                 "'-', '_')",
                 v);
        return -1;
    }
    return 0;
}

static int
cfg_check_hostname(const char *v, char *msg, size_t msgsz)
{
    if (!cfg_domain_ok(v, strlen(v))) {
        snprintf(msg, msgsz, "not a valid host name");
        return RM_E_INVAL;
    }
    return 0;
}

static int
cfg_check_mailbox(const char *v, char *msg, size_t msgsz)
{
    const char *at = strrchr(v, '@');

    if (cfg_check_text(v, msg, msgsz) != 0)
        return RM_E_INVAL;
    if (at == NULL || at == v || !cfg_domain_ok(at + 1, strlen(at + 1)) ||
        strchr(v, ' ') != NULL) {
        snprintf(msg, msgsz, "expected an address like postmaster@example.org");
        return RM_E_INVAL;
    }
    return 0;
}

/* ---- value parsers ------------------------------------------------- */

static char *
cfg_trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

static int
cfg_parse_number(const char *v, int suffixes, uint64_t *out, char *msg,
                 size_t msgsz)
{
    uint64_t n = 0, mul = 1;
    const char *p = v;

    if (!isdigit((unsigned char)*p)) {
        snprintf(msg, msgsz, "expected a number, got \"%.40s\"", v);
        return RM_E_INVAL;
    }
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10) {
            snprintf(msg, msgsz, "number too large");
            return RM_E_INVAL;
        }
        n = n * 10 + d;
    }
    if (*p != '\0' && suffixes) {
        switch (tolower((unsigned char)*p)) {
        case 'k':
            mul = UINT64_C(1) << 10;
            break;
        case 'm':
            mul = UINT64_C(1) << 20;
            break;
        case 'g':
            mul = UINT64_C(1) << 30;
            break;
        case 't':
            mul = UINT64_C(1) << 40;
            break;
        default:
            mul = 0;
            break;
        }
        if (mul != 0) {
            p++;
            if (tolower((unsigned char)*p) == 'i')
                p++;
            if (tolower((unsigned char)*p) == 'b')
                p++;
        }
    }
    if (*p != '\0' || mul == 0) {
        snprintf(msg, msgsz, "expected a number%s, got \"%.40s\"",
                 suffixes ? " (with k, m, g or t)" : "", v);
        return RM_E_INVAL;
    }
    if (n != 0 && mul > UINT64_MAX / n) {
        snprintf(msg, msgsz, "number too large");
        return RM_E_INVAL;
    }
    *out = n * mul;
    return 0;
}

/* A duration: a number of seconds, or with one suffix s, m, h or d. */
static int
cfg_parse_time(const char *v, uint64_t *out, char *msg, size_t msgsz)
{
    char num[32];
    size_t len = strlen(v);
    uint64_t n, mul = 1;

    if (len > 0 && len < sizeof(num) && isalpha((unsigned char)v[len - 1])) {
        switch (tolower((unsigned char)v[len - 1])) {
        case 's':
            mul = 1;
            break;
        case 'm':
            mul = 60;
            break;
        case 'h':
            mul = 3600;
            break;
        case 'd':
            mul = 86400;
            break;
        default:
            snprintf(msg, msgsz,
                     "expected a duration (300, 300s, 5m, 4h, 5d), got "
                     "\"%.40s\"",
                     v);
            return RM_E_INVAL;
        }
        memcpy(num, v, len - 1);
        num[len - 1] = '\0';
        v = num;
    }
    if (cfg_parse_number(v, 0, &n, msg, msgsz) != 0)
        return RM_E_INVAL;
    if (n > UINT32_MAX / mul) {
        snprintf(msg, msgsz, "duration too long");
        return RM_E_INVAL;
    }
    *out = n * mul;
    return 0;
}

/* Parse "a.b.c.d:port", "[v6]:port" or "*:port" into l. */
static int
cfg_parse_listen(const char *v, struct node_listen *l, char *msg, size_t msgsz)
{
    char host[64];
    const char *port;
    size_t hlen;
    uint64_t pn;

    memset(l, 0, sizeof(*l));
    if (v[0] == '[') {
        const char *rb = strchr(v, ']');
        if (rb == NULL || rb[1] != ':') {
            snprintf(msg, msgsz, "expected [IPv6]:port, got \"%.60s\"", v);
            return RM_E_INVAL;
        }
        hlen = (size_t)(rb - v - 1);
        if (hlen >= sizeof(host))
            goto badhost;
        memcpy(host, v + 1, hlen);
        host[hlen] = '\0';
        port = rb + 2;
    } else {
        const char *colon = strrchr(v, ':');
        if (colon == NULL) {
            snprintf(msg, msgsz, "expected host:port, got \"%.60s\"", v);
            return RM_E_INVAL;
        }
        if (memchr(v, ':', (size_t)(colon - v)) != NULL) {
            snprintf(msg, msgsz,
                     "write IPv6 addresses in brackets: [::1]:2525");
            return RM_E_INVAL;
        }
        hlen = (size_t)(colon - v);
        if (hlen >= sizeof(host))
            goto badhost;
        memcpy(host, v, hlen);
        host[hlen] = '\0';
        port = colon + 1;
    }
    if (cfg_parse_number(port, 0, &pn, msg, msgsz) != 0 || pn > 65535) {
        snprintf(msg, msgsz, "bad port in \"%.60s\" (0-65535)", v);
        return RM_E_INVAL;
    }
    if (strcmp(host, "*") == 0 || (host[0] == '\0' && v[0] != '['))
        strcpy(host, "0.0.0.0");
    if (v[0] == '[') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&l->addr;
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            goto badhost;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)pn);
        l->addrlen = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&l->addr;
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            goto badhost;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)pn);
        l->addrlen = sizeof(*s4);
    }
    if (strlen(v) >= sizeof(l->text)) {
        snprintf(msg, msgsz, "listen address too long");
        return RM_E_INVAL;
    }
    strcpy(l->text, v);
    return 0;
badhost:
    snprintf(msg, msgsz,
             "\"%.60s\": the host must be a numeric address (no DNS at "
             "config load), e.g. 127.0.0.1:2525 or [::1]:2525",
             v);
    return RM_E_INVAL;
}

/* Parse "addr/prefix" or a bare address (/32, /128); host bits are
   masked off. */
static int
cfg_parse_net(const char *v, struct node_net *n, char *msg, size_t msgsz)
{
    char host[64];
    const char *slash = strchr(v, '/');
    size_t hlen = slash ? (size_t)(slash - v) : strlen(v);
    uint64_t prefix;
    unsigned bits;

    memset(n, 0, sizeof(*n));
    if (hlen >= sizeof(host))
        goto bad;
    memcpy(host, v, hlen);
    host[hlen] = '\0';
    if (inet_pton(AF_INET, host, n->addr) == 1) {
        n->family = AF_INET;
        bits = 32;
    } else if (inet_pton(AF_INET6, host, n->addr) == 1) {
        n->family = AF_INET6;
        bits = 128;
    } else {
        goto bad;
    }
    prefix = bits;
    if (slash != NULL) {
        char tmp[128];
        if (slash[1] == '\0' || strlen(slash + 1) > 3 ||
            cfg_parse_number(slash + 1, 0, &prefix, tmp, sizeof(tmp)) != 0 ||
            prefix > bits) {
            snprintf(msg, msgsz, "bad prefix length in \"%.60s\" (0-%u)", v,
                     bits);
            return RM_E_INVAL;
        }
    }
    n->prefix = (unsigned)prefix;
    for (unsigned i = 0; i < bits / 8; i++) {
        unsigned keep = n->prefix > i * 8 ? n->prefix - i * 8 : 0;
        if (keep < 8)
            n->addr[i] &= (unsigned char)(0xff00u >> keep);
    }
    return 0;
bad:
    snprintf(msg, msgsz,
             "\"%.60s\" is not a network: expected 192.0.2.0/24, "
             "2001:db8::/32 or a single address",
             v);
    return RM_E_INVAL;
}

/* Empty, or text as cfg_check_text wants it. */
static int
cfg_check_text_opt(const char *v, char *msg, size_t msgsz)
{
    return *v == '\0' ? 0 : cfg_check_text(v, msg, msgsz);
}

/* "ADDR" or "ADDR@PORT", ADDR an IPv4 or IPv6 address (libunbound's
   forwarder syntax). */
static int
cfg_check_dns_server(const char *v, char *msg, size_t msgsz)
{
    char a[INET6_ADDRSTRLEN + 8];
    unsigned char bin[16];
    const char *at = strchr(v, '@');
    size_t alen = at ? (size_t)(at - v) : strlen(v);
    uint64_t port;

    if (*v == '\0')
        return 0;
    if (alen >= sizeof(a))
        goto bad;
    memcpy(a, v, alen);
    a[alen] = '\0';
    if (inet_pton(AF_INET, a, bin) != 1 && inet_pton(AF_INET6, a, bin) != 1)
        goto bad;
    if (at != NULL && (cfg_parse_number(at + 1, 0, &port, msg, msgsz) != 0 ||
                       port == 0 || port > 65535))
        goto bad;
    return 0;
bad:
    snprintf(msg, msgsz,
             "expected a resolver address like 192.0.2.53 or 127.0.0.1@5353");
    return RM_E_INVAL;
}

/* Look domain up in a tls_policy value; -1 if no entry names it. */
static int
cfg_tls_policy_find(const char *policy, const char *domain)
{
    const char *p = policy;
    size_t dlen = strlen(domain);
    int found = -1;
    size_t best = 0;

    while (*p != '\0') {
        const char *e = strchr(p, ','), *eq;
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char item[300], *name, *lvl;
        if (len < sizeof(item)) {
            memcpy(item, p, len);
            item[len] = '\0';
            name = cfg_trim(item);
            if ((eq = strchr(name, '=')) != NULL) {
                size_t nlen;
                item[eq - item] = '\0';
                lvl = cfg_trim((char *)eq + 1);
                name = cfg_trim(name);
                nlen = strlen(name);
                for (int i = 0; cfg_delivery_tls_names[i] != NULL; i++) {
                    if (strcmp(lvl, cfg_delivery_tls_names[i]) != 0)
                        continue;
                    if (strcasecmp(name, domain) == 0)
                        return i; /* exact beats a parent */
                    if (name[0] == '.' && dlen > nlen && nlen > best &&
                        strcasecmp(domain + dlen - nlen, name) == 0) {
                        found = i;
                        best = nlen;
                    }
                }
            }
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return found;
}

static int
cfg_check_tls_policy(const char *v, char *msg, size_t msgsz)
{
    const char *p = v;

    while (*p != '\0') {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char item[300], *name, *lvl, *eq;
        int ok = 0;
        if (len >= sizeof(item))
            goto bad;
        memcpy(item, p, len);
        item[len] = '\0';
        name = cfg_trim(item);
        if ((eq = strchr(name, '=')) == NULL)
            goto bad;
        *eq = '\0';
        lvl = cfg_trim(eq + 1);
        name = cfg_trim(name);
        if (!cfg_domain_ok(name[0] == '.' ? name + 1 : name,
                           strlen(name[0] == '.' ? name + 1 : name)))
            goto bad;
        for (int i = 0; cfg_delivery_tls_names[i] != NULL; i++)
            ok |= strcmp(lvl, cfg_delivery_tls_names[i]) == 0;
        if (!ok)
            goto bad;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
bad:
    snprintf(msg, msgsz,
             "expected domain=none|opportunistic|required, ... (a leading "
             "dot covers subdomains: .example.com=required)");
    return RM_E_INVAL;
}

/* host, [host], host:port, [host]:port, [IPv6:addr]:port. */
static int
cfg_smarthost_split(const char *v, char *host, size_t hostsz, unsigned *port,
                    int *mx)
{
    const char *hend, *rest;
    uint64_t pn = 25;
    char tmp[64];
    size_t hlen;

    if (*v == '[') {
        hend = strchr(v, ']');
        if (hend == NULL)
            return RM_E_INVAL;
        v++;
        rest = hend + 1;
        *mx = 0;
        if (strncasecmp(v, "IPv6:", 5) == 0)
            v += 5;
    } else {
        hend = strchr(v, ':');
        if (hend == NULL)
            hend = v + strlen(v);
        rest = hend;
        *mx = 1;
    }
    hlen = (size_t)(hend - v);
    if (hlen == 0 || hlen >= hostsz)
        return RM_E_INVAL;
    memcpy(host, v, hlen);
    host[hlen] = '\0';
    if (*rest == ':') {
        if (cfg_parse_number(rest + 1, 0, &pn, tmp, sizeof(tmp)) != 0 ||
            pn == 0 || pn > 65535)
            return RM_E_INVAL;
    } else if (*rest != '\0') {
        return RM_E_INVAL;
    }
    *port = (unsigned)pn;
    return 0;
}

static int
cfg_check_smarthost(const char *v, char *msg, size_t msgsz)
{
    char host[256];
    unsigned port;
    int mx;

    if (*v == '\0')
        return 0;
    if (cfg_smarthost_split(v, host, sizeof(host), &port, &mx) != 0 ||
        (mx && !cfg_domain_ok(host, strlen(host)))) {
        snprintf(msg, msgsz,
                 "expected host, [host], host:port or [192.0.2.1]:587");
        return RM_E_INVAL;
    }
    return 0;
}

enum node_delivery_tls
node_config_tls_for(const struct node_config *cfg, const char *domain)
{
    int i = -1;

    if (cfg->delivery_tls_policy != NULL && domain != NULL)
        i = cfg_tls_policy_find(cfg->delivery_tls_policy, domain);
    return i >= 0 ? (enum node_delivery_tls)i : cfg->delivery_tls;
}

int
node_config_smarthost(const struct node_config *cfg, char *host, size_t hostsz,
                      unsigned *port, int *mx)
{
    if (cfg->delivery_smarthost == NULL || cfg->delivery_smarthost[0] == '\0')
        return RM_E_NOTFOUND;
    return cfg_smarthost_split(cfg->delivery_smarthost, host, hostsz, port, mx);
}

/* ---- setting keys -------------------------------------------------- */

static void
cfg_clear_key(struct node_config *cfg, const struct cfg_key *k)
{
    char *base = (char *)cfg;

    switch (k->type) {
    case CFG_STRING: {
        char **sp = (char **)(base + k->off);
        free(*sp);
        *sp = NULL;
        break;
    }
    case CFG_LIST:
    case CFG_PAIRS: {
        char **arr = (char **)(base + k->off);
        size_t *cnt = (size_t *)(base + k->count_off);
        for (size_t i = 0; i < *cnt; i++) {
            free(arr[i]);
            arr[i] = NULL;
        }
        *cnt = 0;
        break;
    }
    case CFG_LISTEN:
    case CFG_NETS:
        *(size_t *)(base + k->count_off) = 0;
        break;
    case CFG_SIZE:
    case CFG_U64:
    case CFG_UINT:
    case CFG_TIME:
    case CFG_BOOL:
    case CFG_ENUM:
        break;
    }
}

static void
cfg_store_num(void *p, size_t width, uint64_t v)
{
    if (width == sizeof(uint64_t)) {
        uint64_t x = v;
        memcpy(p, &x, sizeof(x));
    } else if (width == sizeof(uint32_t)) {
        uint32_t x = (uint32_t)v;
        memcpy(p, &x, sizeof(x));
    } else {
        unsigned char x = (unsigned char)v;
        memcpy(p, &x, 1);
    }
}

/* Add the items of one comma-separated list value. */
static int
cfg_set_list(struct node_config *cfg, const struct cfg_key *k,
             const char *value, char *msg, size_t msgsz)
{
    char tmp[CFG_VALUE_MAX + 1];
    char *save = NULL, *item;
    char *base = (char *)cfg;
    size_t *cnt = (size_t *)(base + k->count_off);

    if (strlen(value) > CFG_VALUE_MAX) {
        snprintf(msg, msgsz, "value too long");
        return RM_E_INVAL;
    }
    strcpy(tmp, value);
    for (item = strtok_r(tmp, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        item = cfg_trim(item);
        if (*item == '\0')
            continue;
        if (*cnt >= k->max) {
            snprintf(msg, msgsz, "too many entries (at most %llu)",
                     (unsigned long long)k->max);
            return RM_E_INVAL;
        }
        switch (k->type) {
        case CFG_LIST: {
            char **arr = (char **)(base + k->off);
            size_t len = strlen(item);
            int dup = 0;
            if (len > 1 && item[len - 1] == '.')
                item[--len] = '\0';
            for (char *c = item; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            if (!cfg_domain_ok(item, len)) {
                snprintf(msg, msgsz, "\"%.60s\" is not a valid domain", item);
                return RM_E_INVAL;
            }
            for (size_t i = 0; i < *cnt; i++)
                dup |= strcmp(arr[i], item) == 0;
            if (dup)
                continue;
            arr[*cnt] = strdup(item);
            if (arr[*cnt] == NULL) {
                snprintf(msg, msgsz, "out of memory");
                return -ENOMEM;
            }
            break;
        }
        case CFG_PAIRS: {
            char **arr = (char **)(base + k->off);
            char *eq = strchr(item, '=');
            if (eq == NULL || !cfg_addr_ok(item, (size_t)(eq - item)) ||
                !cfg_addr_ok(eq + 1, strlen(eq + 1))) {
                snprintf(msg, msgsz,
                         "\"%.60s\" is not alias@domain=login@domain", item);
                return RM_E_INVAL;
            }
            arr[*cnt] = strdup(item);
            if (arr[*cnt] == NULL) {
                snprintf(msg, msgsz, "out of memory");
                return -ENOMEM;
            }
            break;
        }
        case CFG_LISTEN: {
            struct node_listen *l = (struct node_listen *)(base + k->off);
            if (cfg_parse_listen(item, &l[*cnt], msg, msgsz) != 0)
                return RM_E_INVAL;
            break;
        }
        case CFG_NETS: {
            struct node_net *n = (struct node_net *)(base + k->off);
            if (cfg_parse_net(item, &n[*cnt], msg, msgsz) != 0)
                return RM_E_INVAL;
            break;
        }
        case CFG_STRING:
        case CFG_SIZE:
        case CFG_U64:
        case CFG_UINT:
        case CFG_TIME:
        case CFG_BOOL:
        case CFG_ENUM:
            return RM_E_INVAL;
        }
        (*cnt)++;
    }
    return 0;
}

static int
cfg_set(struct node_config *cfg, const struct cfg_key *k, const char *value,
        char *msg, size_t msgsz)
{
    char *base = (char *)cfg;
    uint64_t n;

    switch (k->type) {
    case CFG_STRING: {
        char **sp = (char **)(base + k->off);
        char *s;
        if (strlen(value) > k->max) {
            snprintf(msg, msgsz, "value too long (at most %llu bytes)",
                     (unsigned long long)k->max);
            return RM_E_INVAL;
        }
        if (k->check != NULL && k->check(value, msg, msgsz) != 0)
            return RM_E_INVAL;
        if ((s = strdup(value)) == NULL) {
            snprintf(msg, msgsz, "out of memory");
            return -ENOMEM;
        }
        free(*sp);
        *sp = s;
        return 0;
    }
    case CFG_SIZE:
    case CFG_U64:
    case CFG_UINT:
    case CFG_TIME:
        if (k->type == CFG_TIME ? cfg_parse_time(value, &n, msg, msgsz) != 0
                                : cfg_parse_number(value, k->type == CFG_SIZE,
                                                   &n, msg, msgsz) != 0)
            return RM_E_INVAL;
        if (n < k->min || n > k->max) {
            snprintf(msg, msgsz, "%llu is out of range (%llu to %llu)",
                     (unsigned long long)n, (unsigned long long)k->min,
                     (unsigned long long)k->max);
            return RM_E_INVAL;
        }
        cfg_store_num(base + k->off, k->width, n);
        return 0;
    case CFG_BOOL: {
        static const char *const yes[] = {"yes", "true", "on", "1", NULL};
        static const char *const no[] = {"no", "false", "off", "0", NULL};
        for (size_t i = 0; yes[i] != NULL; i++) {
            if (strcasecmp(value, yes[i]) == 0) {
                cfg_store_num(base + k->off, k->width, 1);
                return 0;
            }
            if (strcasecmp(value, no[i]) == 0) {
                cfg_store_num(base + k->off, k->width, 0);
                return 0;
            }
        }
        snprintf(msg, msgsz, "expected yes or no, got \"%.40s\"", value);
        return RM_E_INVAL;
    }
    case CFG_ENUM: {
        struct buf names;
        for (size_t i = 0; k->enums[i] != NULL; i++) {
            if (strcmp(value, k->enums[i]) == 0) {
                cfg_store_num(base + k->off, k->width, i);
                return 0;
            }
        }
        buf_init(&names, 256);
        for (size_t i = 0; k->enums[i] != NULL; i++)
            buf_appendf(&names, "%s%s", i ? " or " : "", k->enums[i]);
        snprintf(msg, msgsz, "expected %s, got \"%.40s\"",
                 names.data ? names.data : "?", value);
        buf_cleanup(&names);
        return RM_E_INVAL;
    }
    case CFG_LIST:
    case CFG_PAIRS:
    case CFG_LISTEN:
    case CFG_NETS:
        return cfg_set_list(cfg, k, value, msg, msgsz);
    }
    return RM_E_INVAL;
}

/* ---- inih glue ----------------------------------------------------- */

static const struct cfg_key *
cfg_find(const char *section, const char *name, size_t *idx)
{
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        if (strcmp(cfg_keys[i].section, section) == 0 &&
            strcmp(cfg_keys[i].name, name) == 0) {
            *idx = i;
            return &cfg_keys[i];
        }
    }
    return NULL;
}

static int
cfg_section_known(const char *s)
{
    for (size_t i = 0; cfg_sections[i] != NULL; i++) {
        if (strcmp(cfg_sections[i], s) == 0)
            return 1;
    }
    return 0;
}

static int
cfg_handler(void *user, const char *section, const char *name,
            const char *value)
{
    struct cfg_parse *ps = user;
    const struct cfg_key *k;
    char msg[200];
    size_t idx;

    if (*section == '\0') {
        cfg_fail(ps,
                 "\"%.40s\" is outside a section: put it under [node], "
                 "[smtp], [limits] or [store]",
                 name);
        return 0;
    }
    if (!cfg_section_known(section)) {
        cfg_fail(ps, "unknown section [%.40s]", section);
        return 0;
    }
    k = cfg_find(section, name, &idx);
    if (k == NULL) {
        cfg_fail(ps, "unknown key \"%.40s\" in [%s]", name, section);
        return 0;
    }
    if (ps->seen[idx]) {
        /* Lists may be continued (repeated key or indented line). */
        if (k->type != CFG_LIST && k->type != CFG_LISTEN &&
            k->type != CFG_NETS) {
            cfg_fail(ps, "%s.%s is given twice", section, name);
            return 0;
        }
    } else {
        cfg_clear_key(ps->cfg, k);
        ps->seen[idx] = 1;
    }
    msg[0] = '\0';
    if (cfg_set(ps->cfg, k, value, msg, sizeof(msg)) != 0) {
        cfg_fail(ps, "%s.%s: %s", section, name, msg);
        return 0;
    }
    return 1;
}

/* fgets-style reader over the in-memory text: counts lines, rejects lines
   longer than inih's buffer instead of letting it split them. */
static char *
cfg_reader(char *str, int num, void *stream)
{
    struct cfg_parse *ps = stream;
    const char *nl;
    size_t len, linelen;

    if (ps->p >= ps->end || num < 3)
        return NULL;
    nl = memchr(ps->p, '\n', (size_t)(ps->end - ps->p));
    linelen = nl ? (size_t)(nl - ps->p) + 1 : (size_t)(ps->end - ps->p);
    ps->lineno++;
    if (linelen > (size_t)num - 1) {
        cfg_fail(ps,
                 "line too long (at most %d characters); continue a "
                 "list on an indented line",
                 num - 3);
        str[0] = '\n';
        str[1] = '\0';
    } else {
        len = linelen;
        memcpy(str, ps->p, len);
        str[len] = '\0';
        /* A section header: check it here, inih does not report empty
           sections to the handler. */
        const char *s = str;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '[') {
            const char *rb = strchr(s, ']');
            if (rb != NULL) {
                char sec[64];
                size_t sl = (size_t)(rb - s - 1);
                if (sl >= sizeof(sec))
                    sl = sizeof(sec) - 1;
                memcpy(sec, s + 1, sl);
                sec[sl] = '\0';
                if (!cfg_section_known(sec))
                    cfg_fail(ps, "unknown section [%.40s]", sec);
            }
        }
    }
    ps->p += linelen;
    return str;
}

/* ---- defaults and the load ------------------------------------------ */

static char *
cfg_abspath(const char *p)
{
    char cwd[CFG_PATH_MAX];
    char *out;

    if (p[0] == '/')
        return strdup(p);
    while (p[0] == '.' && p[1] == '/') {
        p += 2;
        while (*p == '/')
            p++;
    }
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return NULL;
    if (strcmp(p, ".") == 0 || *p == '\0')
        return strdup(cwd);
    if (asprintf(&out, "%s%s%s", cwd, strcmp(cwd, "/") ? "/" : "", p) < 0)
        return NULL;
    return out;
}

static int
cfg_finish(struct cfg_parse *ps)
{
    struct node_config *cfg = ps->cfg;
    char *s;

    ps->lineno = 0; /* errors below are about the whole file */
    if (cfg->hostname == NULL) {
        char host[256];
        if (gethostname(host, sizeof(host)) != 0 ||
            !cfg_domain_ok(host, strnlen(host, sizeof(host) - 1)))
            strcpy(host, "localhost");
        host[sizeof(host) - 1] = '\0';
        if ((cfg->hostname = strdup(host)) == NULL)
            return -ENOMEM;
    }
    if (cfg->mesh_name == NULL) {
        char m[64];
        size_t n = strlen(cfg->hostname);

        /* The hostname when it is a valid node name, else its first
           label (a node name is at most 63 characters). */
        if (n > 63)
            n = strcspn(cfg->hostname, ".");
        if (n > 63)
            n = 63;
        memcpy(m, cfg->hostname, n);
        m[n] = '\0';
        if ((cfg->mesh_name = strdup(m)) == NULL)
            return -ENOMEM;
    }
    if (*cfg->datadir == '\0') {
        cfg_fail(ps, "node.datadir must not be empty");
        return RM_E_CONFIG;
    }
    if ((s = cfg_abspath(cfg->datadir)) == NULL)
        return -ENOMEM;
    free(cfg->datadir);
    cfg->datadir = s;
    if (cfg->control_socket == NULL || *cfg->control_socket == '\0') {
        free(cfg->control_socket);
        if (asprintf(&cfg->control_socket, "%s/control.sock", cfg->datadir) <
            0) {
            cfg->control_socket = NULL;
            return -ENOMEM;
        }
    } else {
        if ((s = cfg_abspath(cfg->control_socket)) == NULL)
            return -ENOMEM;
        free(cfg->control_socket);
        cfg->control_socket = s;
    }
    if (strlen(cfg->control_socket) >=
        sizeof(((struct sockaddr_un *)0)->sun_path)) {
        cfg_fail(ps,
                 "node.control_socket: \"%.60s...\" is longer than a Unix "
                 "socket path may be (%zu bytes); set a shorter "
                 "control_socket",
                 cfg->control_socket,
                 sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return RM_E_CONFIG;
    }
    if (cfg->ndomains == 0) {
        cfg_fail(ps, "smtp.domains: at least one local domain is needed");
        return RM_E_CONFIG;
    }
    if (cfg->nlisten == 0) {
        cfg_fail(ps, "smtp.listen: at least one listener is needed");
        return RM_E_CONFIG;
    }
    if (cfg->postmaster == NULL &&
        asprintf(&cfg->postmaster, "postmaster@%s", cfg->domains[0]) < 0) {
        cfg->postmaster = NULL;
        return -ENOMEM;
    }
    if (cfg->map_size_max != 0 && cfg->map_size_max < (UINT64_C(64) << 20)) {
        cfg_fail(ps,
                 "store.map_size_max (%llu) is below the smallest store "
                 "(64m); use 0 for no limit or at least 64m",
                 (unsigned long long)cfg->map_size_max);
        return RM_E_CONFIG;
    }
    if (cfg->mesh_ack_replicas > cfg->mesh_replicas) {
        cfg_fail(ps,
                 "mesh.ack_replicas (%u) is larger than mesh.replicas (%u): "
                 "a message is copied to only mesh.replicas peers, so that "
                 "many acknowledgements can never arrive; lower ack_replicas "
                 "or raise replicas",
                 cfg->mesh_ack_replicas, cfg->mesh_replicas);
        return RM_E_CONFIG;
    }
    if (cfg->max_header_size > cfg->max_message_size) {
        cfg_fail(ps,
                 "limits.max_header_size (%zu) is larger than "
                 "limits.max_message_size (%llu)",
                 cfg->max_header_size,
                 (unsigned long long)cfg->max_message_size);
        return RM_E_CONFIG;
    }
    return 0;
}

static int
cfg_load_text(struct node_config *cfg, const char *path, const char *text,
              size_t len, const char *name, char *err, size_t errsz)
{
    struct cfg_parse ps;
    char msg[200];
    int r = 0;

    memset(cfg, 0, sizeof(*cfg));
    memset(&ps, 0, sizeof(ps));
    ps.cfg = cfg;
    ps.name = name;
    if (path != NULL && (cfg->path = strdup(path)) == NULL) {
        r = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        if (cfg_keys[i].def == NULL)
            continue;
        msg[0] = '\0';
        r = cfg_set(cfg, &cfg_keys[i], cfg_keys[i].def, msg, sizeof(msg));
        if (r != 0) {
            /* A bad built-in default is a bug, not a user error. */
            snprintf(err, errsz, "%s: default of %s.%s: %s", name,
                     cfg_keys[i].section, cfg_keys[i].name, msg);
            goto fail;
        }
    }
    if (text != NULL) {
        ps.p = text;
        ps.end = text + len;
        r = ini_parse_stream(cfg_reader, &ps, cfg_handler, &ps);
        if (r < 0) {
            snprintf(err, errsz, "%s: out of memory", name);
            r = -ENOMEM;
            goto fail;
        }
        if (r > 0 && (ps.err_line == 0 || r < ps.err_line)) {
            snprintf(err, errsz,
                     "%s:%d: syntax error: expected [section], key = value "
                     "or a comment",
                     name, r);
            r = RM_E_CONFIG;
            goto fail;
        }
        if (ps.err_line != 0) {
            snprintf(err, errsz, "%s:%d: %s", name, ps.err_line, ps.err);
            r = RM_E_CONFIG;
            goto fail;
        }
    }
    r = cfg_finish(&ps);
    if (ps.err_line != 0) {
        snprintf(err, errsz, "%s: %s", name, ps.err);
        r = RM_E_CONFIG;
        goto fail;
    }
    if (r != 0) {
        snprintf(err, errsz, "%s: %s", name, rm_strerror(r));
        goto fail;
    }
    return 0;
fail:
    node_config_cleanup(cfg);
    return r == -ENOMEM ? r : RM_E_CONFIG;
}

int
node_config_load_string(struct node_config *cfg, const char *text,
                        const char *name, char *err, size_t errsz)
{
    if (name == NULL)
        name = "(string)";
    return cfg_load_text(cfg, NULL, text, text ? strlen(text) : 0, name, err,
                         errsz);
}

int
node_config_load(struct node_config *cfg, const char *path, char *err,
                 size_t errsz)
{
    struct buf text;
    char chunk[8192];
    int fd, r;

    if (path == NULL)
        return cfg_load_text(cfg, NULL, NULL, 0, "(embedded default)", err,
                             errsz);
    memset(cfg, 0, sizeof(*cfg));
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(err, errsz, "%s: cannot open: %s", path, strerror(errno));
        return RM_E_CONFIG;
    }
    buf_init(&text, CFG_FILE_MAX);
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errsz, "%s: cannot read: %s", path, strerror(errno));
            r = RM_E_CONFIG;
            goto out;
        }
        if (n == 0)
            break;
        if ((r = buf_append(&text, chunk, (size_t)n)) != 0) {
            snprintf(err, errsz, "%s: %s", path,
                     r == RM_E_TOOBIG ? "file too large (over 1 MiB)"
                                      : "out of memory");
            r = r == RM_E_TOOBIG ? RM_E_CONFIG : r;
            goto out;
        }
    }
    if (text.len > 0 && memchr(text.data, '\0', text.len) != NULL) {
        snprintf(err, errsz, "%s: contains a NUL byte; not a text file", path);
        r = RM_E_CONFIG;
        goto out;
    }
    r = cfg_load_text(cfg, path, text.data ? text.data : "", text.len, path,
                      err, errsz);
out:
    close(fd);
    buf_cleanup(&text);
    return r;
}

void
node_config_cleanup(struct node_config *cfg)
{
    for (size_t i = 0; i < CFG_NKEYS; i++)
        cfg_clear_key(cfg, &cfg_keys[i]);
    free(cfg->path);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- queries ------------------------------------------------------- */

static int
cfg_net_match(const struct node_net *n, const unsigned char *addr)
{
    unsigned full = n->prefix / 8, rest = n->prefix % 8;

    if (memcmp(n->addr, addr, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((n->addr[full] ^ addr[full]) & (0xff00u >> rest)) == 0;
}

int
node_config_trusted(const struct node_config *cfg, const struct sockaddr *sa)
{
    return node_config_in_nets(cfg->mynetworks, cfg->nmynetworks, sa);
}

int
node_config_in_nets(const struct node_net *nets, size_t nnets,
                    const struct sockaddr *sa)
{
    const unsigned char *addr;
    int family;

    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        addr =
            (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 =
            &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            addr = a6->s6_addr + 12;
            family = AF_INET;
        } else {
            addr = a6->s6_addr;
            family = AF_INET6;
        }
    } else {
        return 0;
    }
    for (size_t i = 0; i < nnets; i++) {
        if (nets[i].family == family && cfg_net_match(&nets[i], addr))
            return 1;
    }
    return 0;
}

int
node_config_local_domain(const struct node_config *cfg, const char *domain,
                         size_t len)
{
    if (domain == NULL)
        return 0;
    if (len > 0 && domain[len - 1] == '.')
        len--;
    if (len == 0)
        return 0;
    for (size_t i = 0; i < cfg->ndomains; i++) {
        if (strlen(cfg->domains[i]) == len &&
            strncasecmp(cfg->domains[i], domain, len) == 0)
            return 1;
    }
    return 0;
}

static void
cfg_dump_value(struct buf *b, const struct node_config *cfg,
               const struct cfg_key *k)
{
    const char *base = (const char *)cfg;
    uint64_t v = 0;

    switch (k->type) {
    case CFG_STRING: {
        const char *s = *(char *const *)(base + k->off);
        if (s != NULL && *s != '\0' && strstr(k->name, "password") != NULL)
            s = "(set; not shown)";
        buf_appendf(b, "%s", s ? s : "");
        return;
    }
    case CFG_SIZE:
    case CFG_U64:
    case CFG_UINT:
    case CFG_TIME:
    case CFG_BOOL:
    case CFG_ENUM:
        if (k->width == sizeof(uint64_t)) {
            memcpy(&v, base + k->off, sizeof(v));
        } else if (k->width == sizeof(uint32_t)) {
            uint32_t x;
            memcpy(&x, base + k->off, sizeof(x));
            v = x;
        }
        if (k->type == CFG_ENUM)
            buf_appendf(b, "%s", k->enums[v]);
        else if (k->type == CFG_BOOL)
            buf_appendf(b, "%s", v ? "yes" : "no");
        else if (k->type == CFG_TIME && v != 0 && v % 86400 == 0)
            buf_appendf(b, "%llud", (unsigned long long)(v / 86400));
        else if (k->type == CFG_TIME && v != 0 && v % 3600 == 0)
            buf_appendf(b, "%lluh", (unsigned long long)(v / 3600));
        else if (k->type == CFG_TIME && v != 0 && v % 60 == 0)
            buf_appendf(b, "%llum", (unsigned long long)(v / 60));
        else if (k->type == CFG_TIME)
            buf_appendf(b, "%llus", (unsigned long long)v);
        else
            buf_appendf(b, "%llu", (unsigned long long)v);
        return;
    case CFG_LIST:
    case CFG_PAIRS: {
        char *const *arr = (char *const *)(base + k->off);
        size_t cnt = *(const size_t *)(base + k->count_off);
        for (size_t i = 0; i < cnt; i++)
            buf_appendf(b, "%s%s", i ? ", " : "", arr[i]);
        return;
    }
    case CFG_LISTEN: {
        const struct node_listen *l =
            (const struct node_listen *)(base + k->off);
        size_t cnt = *(const size_t *)(base + k->count_off);
        for (size_t i = 0; i < cnt; i++)
            buf_appendf(b, "%s%s", i ? ", " : "", l[i].text);
        return;
    }
    case CFG_NETS:
        for (size_t i = 0; i < *(const size_t *)(base + k->count_off); i++) {
            char a[INET6_ADDRSTRLEN];
            const struct node_net *n =
                &((const struct node_net *)(base + k->off))[i];
            inet_ntop(n->family, n->addr, a, sizeof(a));
            buf_appendf(b, "%s%s/%u", i ? ", " : "", a, n->prefix);
        }
        return;
    }
}

void
node_config_dump(const struct node_config *cfg, int fd)
{
    struct buf b;
    const char *section = "";
    size_t off = 0;

    buf_init(&b, 1024 * 1024);
    buf_appendf(&b, "; relaymesh effective configuration (%s)\n",
                cfg->path ? cfg->path : "embedded default");
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (strcmp(section, k->section) != 0) {
            section = k->section;
            buf_appendf(&b, "\n[%s]\n", section);
        }
        buf_appendf(&b, "; %s\n%s = ", k->help, k->name);
        cfg_dump_value(&b, cfg, k);
        buf_append(&b, "\n", 1);
    }
    while (off < b.len) {
        ssize_t n = write(fd, b.data + off, b.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    buf_cleanup(&b);
}

int
node_config_sender_ok(const struct node_config *cfg, const char *login,
                      const char *sender)
{
    size_t slen = strlen(sender);

    if (cfg->sender_policy == NODE_SENDER_ANY || slen == 0)
        return 1;
    if (strcasecmp(login, sender) == 0)
        return 1;
    for (size_t i = 0; i < cfg->nsender_aliases; i++) {
        const char *a = cfg->sender_aliases[i];
        const char *eq = strchr(a, '=');
        if (eq != NULL && (size_t)(eq - a) == slen &&
            strncasecmp(a, sender, slen) == 0 && strcasecmp(eq + 1, login) == 0)
            return 1;
    }
    return 0;
}
