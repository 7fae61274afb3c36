/*
 * rmc_probe: log on to a node's bridge with the DLL's client (rmclient.h)
 * and report each step on one line.
 *
 *   rmc_probe [--timeout MS] NODE FINGERPRINT USER PASSWORD
 *       connect (handshake, pinned key), logon, ping, logoff
 *   rmc_probe --config [USER [PASSWORD]]
 *       the same with the DLL's configuration (registry, RELAYMESH_MAPI_*
 *       environment, then these arguments, as MAPILogon passes them)
 *   rmc_probe --save NODE FINGERPRINT USER PASSWORD [TIMEOUT_MS]
 *       store that configuration under HKCU\Software\relaymesh (the
 *       password protected with DPAPI) and exit
 *
 * Output: "STEP: ok (N ms) ..." or "STEP: failed (N ms): why [code]".
 * Exit status: 0 all steps passed; 2 the node was refused (its key does
 * not match FINGERPRINT); 1 any other failure (usage: 1 as well).
 * Arguments are taken as UTF-16 from the command line and passed on as
 * UTF-8, as the DLL does.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <shellapi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rm_error.h"
#include "win32/rmclient.h"

#define PROBE_CLIENT "rmc_probe"

static ULONGLONG probe_t0;

static unsigned long
probe_ms(void)
{
    return (unsigned long)(GetTickCount64() - probe_t0);
}

/* rm_strerror() for relaymesh's codes; Windows has no text for the
 * errno-style socket codes (-ECONNREFUSED ...), so those show as numbers. */
static const char *
probe_code(int r)
{
    static char tmp[32];

    if (r <= RM_E_BASE)
        return rm_strerror(r);
    snprintf(tmp, sizeof(tmp), "errno %d", -r);
    return tmp;
}

static void
probe_start(void)
{
    probe_t0 = GetTickCount64();
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: rmc_probe [--timeout MS] NODE FINGERPRINT USER PASSWORD\n"
            "       rmc_probe --config [USER [PASSWORD]]\n"
            "       rmc_probe --save NODE FINGERPRINT USER PASSWORD "
            "[TIMEOUT_MS]\n");
}

/* argv as UTF-8, from the UTF-16 command line. */
static char **
probe_args(int *argc)
{
    LPWSTR *wv = CommandLineToArgvW(GetCommandLineW(), argc);
    char **v;

    if (wv == NULL)
        return NULL;
    if ((v = calloc((size_t)*argc + 1, sizeof(*v))) == NULL)
        goto fail;
    for (int i = 0; i < *argc; i++) {
        int n = WideCharToMultiByte(CP_UTF8, 0, wv[i], -1, NULL, 0, NULL, NULL);

        if (n <= 0 || (v[i] = malloc((size_t)n)) == NULL)
            goto fail;
        WideCharToMultiByte(CP_UTF8, 0, wv[i], -1, v[i], n, NULL, NULL);
    }
    LocalFree(wv);
    return v;
fail:
    LocalFree(wv);
    return NULL;
}

static int
copy_arg(char *dst, size_t size, const char *src, const char *what)
{
    if (strlen(src) >= size) {
        fprintf(stderr, "rmc_probe: %s is too long (at most %u bytes)\n", what,
                (unsigned)size - 1);
        return -1;
    }
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

static int
parse_ms(const char *s, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v == 0 || v > 600000) {
        fprintf(stderr, "rmc_probe: timeout '%s': give 1..600000 ms\n", s);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* One request; prints its line. 0 when the node answered ok. */
static int
probe_call(struct rmc *c, const char *step, struct bproto_req *q)
{
    struct bproto_res res;
    int r;

    probe_start();
    r = rmc_call(c, q, &res);
    if (r != 0) {
        printf("%s: failed (%lu ms): %s [%s]\n", step, probe_ms(),
               res.why[0] ? res.why : probe_code(r), probe_code(r));
        bproto_res_cleanup(&res);
        return -1;
    }
    if (!res.ok) {
        const char *code = bproto_errcode_name(res.err.code);

        printf("%s: failed (%lu ms): the node answered %s: %s\n", step,
               probe_ms(), code ? code : "?",
               res.err.msg && res.err.msg[0] ? res.err.msg : "(no message)");
        bproto_res_cleanup(&res);
        return -1;
    }
    if (q->op == BPROTO_OP_LOGON) {
        const struct bproto_logon_res *l = &res.r.logon;

        printf("logon: ok (%lu ms) user=%s name=\"%s\" node=%s version=%u "
               "max_message=%llu folders=%u\n",
               probe_ms(), l->user, l->name ? l->name : "",
               l->node ? l->node : "", (unsigned)l->version,
               (unsigned long long)l->max_message, l->n_folders);
    } else {
        printf("%s: ok (%lu ms)\n", step, probe_ms());
    }
    bproto_res_cleanup(&res);
    return 0;
}

static int
probe(const struct rmc_cfg *cfg)
{
    struct bproto_req q;
    struct rmc *c = NULL;
    char why[512];
    int r;

    probe_start();
    r = rmc_open(cfg, &c, why, sizeof(why));
    if (r == RM_E_PERM) {
        printf("connect: refused (%lu ms): %s\n", probe_ms(), why);
        return 2;
    }
    if (r != 0) {
        printf("connect: failed (%lu ms): %s [%s]\n", probe_ms(), why,
               probe_code(r));
        return 1;
    }
    printf("connect: ok (%lu ms) node=%s address=%s\n", probe_ms(),
           rmc_node_name(c)[0] ? rmc_node_name(c) : "(unnamed)", cfg->node);

    memset(&q, 0, sizeof(q));
    q.op = BPROTO_OP_LOGON;
    q.a.logon.version = BPROTO_VERSION;
    q.a.logon.user = cfg->user;
    q.a.logon.password = cfg->password;
    q.a.logon.client = PROBE_CLIENT;
    r = probe_call(c, "logon", &q);
    if (r == 0) {
        memset(&q, 0, sizeof(q));
        q.op = BPROTO_OP_PING;
        r = probe_call(c, "ping", &q);
    }
    if (r == 0) {
        memset(&q, 0, sizeof(q));
        q.op = BPROTO_OP_LOGOFF;
        r = probe_call(c, "logoff", &q);
    }
    rmc_close(c);
    return r == 0 ? 0 : 1;
}

static int
fill(struct rmc_cfg *cfg, char **a)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->timeout_ms = RMC_TIMEOUT_MS;
    if (copy_arg(cfg->node, sizeof(cfg->node), a[0], "NODE") != 0 ||
        copy_arg(cfg->fingerprint, sizeof(cfg->fingerprint), a[1],
                 "FINGERPRINT") != 0 ||
        copy_arg(cfg->user, sizeof(cfg->user), a[2], "USER") != 0 ||
        copy_arg(cfg->password, sizeof(cfg->password), a[3], "PASSWORD") != 0)
        return -1;
    return 0;
}

int
main(void)
{
    struct rmc_cfg cfg;
    char why[512], **argv;
    int argc, r, i = 1;

    setvbuf(stdout, NULL, _IONBF, 0);
    if ((argv = probe_args(&argc)) == NULL) {
        fprintf(stderr, "rmc_probe: cannot read the command line\n");
        return 1;
    }
    if (argc >= 2 && strcmp(argv[1], "--config") == 0) {
        if (argc > 4) {
            usage();
            return 1;
        }
        r = rmc_cfg_load(&cfg, argc > 2 ? argv[2] : NULL,
                         argc > 3 ? argv[3] : NULL, why, sizeof(why));
        if (r != 0) {
            printf("config: failed: %s [%s]\n", why, probe_code(r));
            return 1;
        }
        printf("config: ok node=%s fingerprint=%s user=%s password=%s "
               "timeout_ms=%u\n",
               cfg.node, cfg.fingerprint[0] ? cfg.fingerprint : "(none)",
               cfg.user[0] ? cfg.user : "(none)",
               cfg.password[0] ? "(set)" : "(empty)", cfg.timeout_ms);
        r = probe(&cfg);
        rmc_cfg_wipe(&cfg);
        return r;
    }
    if (argc >= 2 && strcmp(argv[1], "--save") == 0) {
        if (argc != 6 && argc != 7) {
            usage();
            return 1;
        }
        if (fill(&cfg, argv + 2) != 0)
            return 1;
        cfg.timeout_ms = 0;
        if (argc == 7 && parse_ms(argv[6], &cfg.timeout_ms) != 0)
            return 1;
        r = rmc_cfg_save(&cfg, why, sizeof(why));
        rmc_cfg_wipe(&cfg);
        if (r != 0) {
            printf("save: failed: %s [%s]\n", why, probe_code(r));
            return 1;
        }
        printf("save: ok HKCU\\Software\\relaymesh\n");
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "--timeout") == 0) {
        if (parse_ms(argv[2], &cfg.timeout_ms) != 0)
            return 1;
        i = 3;
    }
    if (argc - i != 4) {
        usage();
        return 1;
    }
    {
        unsigned ms = i == 3 ? cfg.timeout_ms : RMC_TIMEOUT_MS;

        if (fill(&cfg, argv + i) != 0)
            return 1;
        cfg.timeout_ms = ms;
    }
    r = probe(&cfg);
    rmc_cfg_wipe(&cfg);
    return r;
}
