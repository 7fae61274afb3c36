/*
 * smtpc_send: node/smtp_client.c on a libuv loop, for the integration
 * tests (tests/integration/test_smtp_client.py). Not installed.
 *
 *   smtpc_send HOST:PORT [--from ADDR] --to ADDR [--to ADDR ...]
 *              [--file MESSAGE] [--tls none|opportunistic|required]
 *              [--count N] [--auth USER:PASS] [--timeout-scale F]
 *              [--helo NAME] [--server-name NAME] [--size N]
 *              [--notify SUCCESS,FAILURE,DELAY|NEVER] [--orcpt VALUE]
 *              [--ret FULL|HDRS] [--envid VALUE] [--smtputf8] [--debug]
 *
 * The message file's bare LF line ends are made CRLF; it is 8bit if any
 * byte is >= 0x80; it needs SMTPUTF8 if an address is not ASCII (or with
 * --smtputf8). The same transaction runs COUNT times on one connection.
 * Output, one line each:
 *
 *   ready tls=TLSv1.3 cipher=... verified=0 ext=0x.. size_max=N
 *   connect status=NAME code=N text="..."        (connection failed)
 *   send N status=NAME                           (refused at once)
 *   mail N CODE ENH TEXT
 *   rcpt N ADDR CODE ENH TEXT
 *   data N CODE ENH TEXT
 *   result N status=NAME accepted=K dsn=0|1
 *
 * NAME is "ok", TIMEOUT, CLOSED, PROTO, TLS, REPLY, TOOBIG, NOUTF8, NOMEM,
 * NOAUTH, INVAL or a libuv error name (ECONNREFUSED). Exit 0 when every
 * transaction ran and its DATA got 2xx, 1 otherwise, 2 for bad usage, 3
 * if the loop does not close clean.
 */
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "node/smtp_client.h"
#include "node/tls.h"
#include "store/store.h"

#define SEND_RCPTS_MAX 1000

struct send {
    struct smtpc *c;
    struct smtpc_txn txn;
    struct smtpc_rcpt rcpts[SEND_RCPTS_MAX];
    unsigned count, done;
    int failed;
};

static const char *
status_name(int s)
{
    switch (s) {
    case 0:
        return "ok";
    case SMTPC_E_TIMEOUT:
        return "TIMEOUT";
    case SMTPC_E_CLOSED:
        return "CLOSED";
    case SMTPC_E_PROTO:
        return "PROTO";
    case SMTPC_E_TLS:
        return "TLS";
    case SMTPC_E_REPLY:
        return "REPLY";
    case SMTPC_E_TOOBIG:
        return "TOOBIG";
    case SMTPC_E_NOUTF8:
        return "NOUTF8";
    case SMTPC_E_NOMEM:
        return "NOMEM";
    case SMTPC_E_NOAUTH:
        return "NOAUTH";
    case RM_E_INVAL:
        return "INVAL";
    default:
        break;
    }
    return s < 0 && s > -4096 ? uv_err_name(s) : "UNKNOWN";
}

static void
print_reply(const char *what, unsigned n, const char *addr,
            const struct smtpc_reply *r)
{
    printf("%s %u %s%s%d %s %s\n", what, n, addr ? addr : "", addr ? " " : "",
           r->code, r->enh[0] ? r->enh : "-", r->text);
}

static void send_next(struct send *s);

static void
txn_cb(void *arg, struct smtpc *c, struct smtpc_txn *t,
       const struct smtpc_result *res)
{
    struct send *s = arg;
    unsigned n = s->done + 1;

    (void)c;
    print_reply("mail", n, NULL, &res->mail);
    for (size_t i = 0; i < t->nrcpts; i++)
        print_reply("rcpt", n, t->rcpts[i].addr, &t->rcpts[i].r);
    print_reply("data", n, NULL, &res->data);
    printf("result %u status=%s accepted=%zu dsn=%d\n", n,
           status_name(res->status), res->accepted, res->dsn);
    fflush(stdout);
    if (res->status != 0 || res->data.code < 200 || res->data.code > 299)
        s->failed = 1;
    if (res->status < 0) {
        s->c = NULL; /* gone */
        return;
    }
    s->done++;
    send_next(s);
}

static void
send_next(struct send *s)
{
    int r;

    if (s->done >= s->count) {
        smtpc_quit(s->c);
        s->c = NULL;
        return;
    }
    r = smtpc_send(s->c, &s->txn, txn_cb, s);
    if (r != 0) {
        printf("send %u status=%s usable=%d\n", s->done + 1, status_name(r),
               smtpc_usable(s->c));
        fflush(stdout);
        s->failed = 1;
        smtpc_quit(s->c);
        s->c = NULL;
    }
}

static void
ready_cb(void *arg, struct smtpc *c, int status, const struct smtpc_reply *r)
{
    struct send *s = arg;
    const char *v;

    if (status != 0) {
        printf("connect status=%s code=%d text=\"%s\"\n", status_name(status),
               r ? r->code : 0, r ? r->text : "");
        fflush(stdout);
        s->failed = 1;
        s->c = NULL;
        return;
    }
    v = smtpc_tls_version(c);
    printf("ready tls=%s cipher=%s verified=%d ext=0x%x size_max=%llu\n",
           v ? v : "none", v ? smtpc_tls_cipher(c) : "none",
           smtpc_tls_verified(c), smtpc_extensions(c),
           (unsigned long long)smtpc_max_size(c));
    fflush(stdout);
    send_next(s);
}

static char *
read_message(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *out;
    size_t n = 0, cap = 4096;
    int ch, prev = 0;

    if (f == NULL)
        return NULL;
    if ((out = malloc(cap)) == NULL)
        exit(2);
    while ((ch = getc(f)) != EOF) {
        if (n + 3 > cap) {
            cap *= 2;
            if ((out = realloc(out, cap)) == NULL)
                exit(2);
        }
        if (ch == '\n' && prev != '\r')
            out[n++] = '\r';
        out[n++] = (char)ch;
        prev = ch;
    }
    fclose(f);
    *len = n;
    return out;
}

static int
non_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80)
            return 1;
    }
    return 0;
}

static unsigned
scaled(unsigned secs, double scale)
{
    double v = ceil(secs * scale);
    return v < 1 ? 1 : (unsigned)v;
}

static unsigned
parse_notify(const char *v)
{
    unsigned bits = 0;
    char tmp[128], *save = NULL;

    snprintf(tmp, sizeof(tmp), "%s", v);
    for (char *w = strtok_r(tmp, ",", &save); w;
         w = strtok_r(NULL, ",", &save)) {
        if (strcasecmp(w, "NEVER") == 0)
            bits |= STORE_NOTIFY_NEVER;
        else if (strcasecmp(w, "SUCCESS") == 0)
            bits |= STORE_NOTIFY_SUCCESS;
        else if (strcasecmp(w, "FAILURE") == 0)
            bits |= STORE_NOTIFY_FAILURE;
        else if (strcasecmp(w, "DELAY") == 0)
            bits |= STORE_NOTIFY_DELAY;
    }
    return bits;
}

static void
usage(void)
{
    fprintf(stderr, "usage: smtpc_send HOST:PORT --to ADDR [options] "
                    "(see tests/tools/smtpc_send.c)\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    static struct send s;
    struct smtpc_opts o;
    struct sockaddr_storage ss;
    struct tls_client *tc = NULL;
    uv_loop_t loop;
    const char *file = NULL, *notify = NULL, *orcpt = NULL;
    char *hostport, *colon, *auth = NULL;
    double scale = 1.0;
    long long size = -1;
    size_t nrcpts = 0, len = 0;
    char *msg;
    int force_utf8 = 0, r;

    if (argc < 2)
        usage();
    memset(&o, 0, sizeof(o));
    o.helo = "client.test";
    o.server_name = "";
    o.tls = SMTPC_TLS_NONE;
    o.log_id = "smtpc_send";
    s.count = 1;
    s.txn.mail_from = "";
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--smtputf8") == 0) {
            force_utf8 = 1;
            continue;
        }
        if (strcmp(a, "--debug") == 0) {
            log_set_level(LOG_DEBUG);
            continue;
        }
        if (v == NULL)
            usage();
        i++;
        if (strcmp(a, "--from") == 0) {
            s.txn.mail_from = v;
        } else if (strcmp(a, "--to") == 0) {
            if (nrcpts >= SEND_RCPTS_MAX)
                usage();
            s.rcpts[nrcpts++].addr = v;
        } else if (strcmp(a, "--file") == 0) {
            file = v;
        } else if (strcmp(a, "--tls") == 0) {
            if (strcmp(v, "none") == 0)
                o.tls = SMTPC_TLS_NONE;
            else if (strcmp(v, "opportunistic") == 0)
                o.tls = SMTPC_TLS_OPPORTUNISTIC;
            else if (strcmp(v, "required") == 0)
                o.tls = SMTPC_TLS_REQUIRED;
            else
                usage();
        } else if (strcmp(a, "--count") == 0) {
            s.count = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--auth") == 0) {
            auth = strdup(v);
        } else if (strcmp(a, "--timeout-scale") == 0) {
            scale = strtod(v, NULL);
        } else if (strcmp(a, "--helo") == 0) {
            o.helo = v;
        } else if (strcmp(a, "--server-name") == 0) {
            o.server_name = v;
        } else if (strcmp(a, "--size") == 0) {
            size = strtoll(v, NULL, 10);
        } else if (strcmp(a, "--notify") == 0) {
            notify = v;
        } else if (strcmp(a, "--orcpt") == 0) {
            orcpt = v;
        } else if (strcmp(a, "--ret") == 0) {
            s.txn.ret = strcasecmp(v, "HDRS") == 0 ? 2 : 1;
        } else if (strcmp(a, "--envid") == 0) {
            s.txn.envid = v;
        } else {
            usage();
        }
    }
    if (nrcpts == 0)
        usage();

    hostport = strdup(argv[1]);
    colon = hostport ? strrchr(hostport, ':') : NULL;
    if (colon == NULL)
        usage();
    *colon = '\0';
    {
        char *host = hostport;
        int port = atoi(colon + 1);
        size_t hl = strlen(host);
        if (hl > 1 && host[0] == '[' && host[hl - 1] == ']') {
            host[hl - 1] = '\0';
            host++;
        }
        if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
            uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
            usage();
    }

    if (file != NULL) {
        if ((msg = read_message(file, &len)) == NULL) {
            fprintf(stderr, "smtpc_send: cannot read %s\n", file);
            return 2;
        }
    } else {
        msg = strdup("Subject: test\r\n\r\nhello\r\n");
        len = strlen(msg);
    }
    s.txn.data = msg;
    s.txn.len = len;
    s.txn.size = size >= 0 ? (uint64_t)size : len;
    s.txn.eightbit = non_ascii(msg, len);
    s.txn.smtputf8 =
        force_utf8 || non_ascii(s.txn.mail_from, strlen(s.txn.mail_from));
    for (size_t i = 0; i < nrcpts; i++) {
        if (notify != NULL)
            s.rcpts[i].notify = parse_notify(notify);
        s.rcpts[i].orcpt = orcpt;
        if (non_ascii(s.rcpts[i].addr, strlen(s.rcpts[i].addr)))
            s.txn.smtputf8 = 1;
    }
    s.txn.rcpts = s.rcpts;
    s.txn.nrcpts = nrcpts;

    if (auth != NULL) {
        char *p = strchr(auth, ':');
        if (p == NULL)
            usage();
        *p = '\0';
        o.auth_user = auth;
        o.auth_pass = p + 1;
    }
    o.timeout_connect = scaled(30, scale);
    o.timeout_greeting = scaled(300, scale);
    o.timeout_mail = scaled(300, scale);
    o.timeout_rcpt = scaled(300, scale);
    o.timeout_data_init = scaled(120, scale);
    o.timeout_data_block = scaled(180, scale);
    o.timeout_data_done = scaled(600, scale);
    if (o.tls != SMTPC_TLS_NONE) {
        char err[256];
        if (tls_client_new(&tc, err, sizeof(err)) != 0) {
            fprintf(stderr, "smtpc_send: %s\n", err);
            return 2;
        }
        o.tls_ctx = tc;
    }

    uv_loop_init(&loop);
    r = smtpc_connect(&loop, (struct sockaddr *)&ss, &o, ready_cb, &s, &s.c);
    if (r != 0) {
        printf("connect status=%s code=0 text=\"\"\n", status_name(r));
        return 1;
    }
    if (auth != NULL)
        memset(auth, 0, strlen(auth) + strlen(auth + strlen(auth) + 1) + 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    r = uv_loop_close(&loop);
    tls_client_free(tc);
    free(msg);
    free(hostport);
    free(auth);
    if (r != 0) {
        fprintf(stderr, "smtpc_send: loop did not close clean\n");
        return 3;
    }
    return s.failed ? 1 : 0;
}
