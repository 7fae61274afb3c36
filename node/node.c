/*
 * node: `relaymesh serve` — one node, one process, one libuv loop.
 *
 * Start-up order matters: bind the listeners (may need root), drop
 * privileges, then open the store and the control socket as the
 * unprivileged user so that every file the node creates is its own.
 * Shutdown (SIGTERM / SIGINT): stop accepting, let sessions in flight
 * finish up to timeout_shutdown, close the control socket and the queue,
 * let the store's writer finish and commit, exit 0.
 */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/log.h"
#include "common/rm_error.h"
#include "bridge/server.h"
#include "node/auth_cache.h"
#include "node/mesh.h"
#include "node/node.h"
#include "node/ratelimit.h"
#include "node/smtp_session.h"
#include "node/tls.h"

struct node_runtime {
    struct node n;
    struct node_config cfg;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t shutdown_timer;
    int stopping;
};

static void
node_usage(FILE *f)
{
    fprintf(f, "usage: relaymesh serve [-c FILE] [--check] "
               "[--log-level error|warn|info|debug]\n"
               "  -c FILE       configuration file (default: the embedded "
               "loopback node)\n"
               "  --check       validate the configuration, print it, and "
               "exit\n");
}

static int
node_mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof(tmp))
        return -ENAMETOOLONG;
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Started as root: hand the data dir to cfg->user and become it. Where
   that user does not exist (the embedded default before `make install`)
   warn once and go on. */
static int
node_drop_privileges(const struct node_config *cfg)
{
    struct passwd *pw;
    DIR *d;
    struct dirent *de;

    if (geteuid() != 0)
        return 0;
    pw = getpwnam(cfg->user);
    if (pw == NULL) {
        log_warn("event=node.privileges user=%s status=\"no such user; "
                 "running as root\" hint=\"create it (make install does) "
                 "or set [node] user\"",
                 cfg->user);
        return 0;
    }
    if (chown(cfg->datadir, pw->pw_uid, pw->pw_gid) != 0)
        return -errno;
    d = opendir(cfg->datadir);
    if (d != NULL) {
        while ((de = readdir(d)) != NULL) {
            char p[PATH_MAX];
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof(p), "%s/%s", cfg->datadir, de->d_name);
            if (lchown(p, pw->pw_uid, pw->pw_gid) != 0)
                log_warn("event=node.chown path=%s err=\"%s\"", p,
                         strerror(errno));
        }
        closedir(d);
    }
    if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0)
        return -errno;
    log_info("event=node.privileges user=%s uid=%u", cfg->user,
             (unsigned)pw->pw_uid);
    return 0;
}

static void
node_raise_nofile(void)
{
    struct rlimit rl;

    /* Thousands of sessions need thousands of descriptors. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Refuse to start a second node on the same data directory before
   binding anything or opening the store: the control socket answers
   while a node runs (ctl_server_new checks again, race-free). */
static int
node_already_running(const char *sockpath)
{
    struct sockaddr_un sa;
    int fd, r;

    if (strlen(sockpath) >= sizeof(sa.sun_path))
        return 0;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, sockpath, strlen(sockpath) + 1);
    r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    close(fd);
    return r == 0;
}

static void
node_close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void
node_finish(struct node_runtime *rt)
{
    struct node *n = &rt->n;

    if (n->ctl) {
        ctl_server_close(n->ctl);
        n->ctl = NULL;
    }
    if (n->queue) {
        node_queue_close(n->queue);
        n->queue = NULL;
    }
    if (n->smtp) {
        smtp_server_close(n->smtp);
        n->smtp = NULL;
    }
    if (n->bridge) {
        bridge_close(n->bridge);
        n->bridge = NULL;
    }
    if (n->mesh) {
        mesh_close(n->mesh);
        n->mesh = NULL;
    }
    /* Same tick as node_queue_close(): see node_queue.c. */
    if (n->store) {
        store_close(n->store);
        n->store = NULL;
    }
    uv_close((uv_handle_t *)&rt->sigterm, NULL);
    uv_close((uv_handle_t *)&rt->sigint, NULL);
    uv_close((uv_handle_t *)&rt->sighup, NULL);
    uv_close((uv_handle_t *)&rt->shutdown_timer, NULL);
    log_info("event=node.stopped");
}

static void
node_drained_cb(void *arg)
{
    struct node_runtime *rt = arg;

    log_info("event=node.drained");
    uv_timer_stop(&rt->shutdown_timer);
    node_finish(rt);
}

static void
node_shutdown_timeout_cb(uv_timer_t *t)
{
    struct node_runtime *rt = t->data;

    log_warn("event=node.shutdown_timeout sessions=%llu",
             (unsigned long long)rt->n.stats.sessions_current);
    smtp_server_abort(rt->n.smtp);
}

static void
node_signal_cb(uv_signal_t *h, int signum)
{
    struct node_runtime *rt = h->data;

    if (signum == SIGHUP) {
        char err[512];
        /* Configuration is immutable while running; certificates are
           re-read so that a renewed one needs no restart. */
        log_info("event=node.sighup action=tls_reload hint=\"restart to "
                 "apply other configuration changes\"");
        node_tls_reload(&rt->n, err, sizeof(err));
        return;
    }
    if (rt->stopping) {
        log_warn("event=node.signal sig=%d status=\"already stopping\"",
                 signum);
        return;
    }
    rt->stopping = 1;
    rt->n.draining = 1;
    log_info("event=node.stopping signal=%s sessions=%llu timeout=%us",
             signum == SIGTERM ? "TERM" : "INT",
             (unsigned long long)rt->n.stats.sessions_current,
             rt->cfg.timeout_shutdown);
    uv_timer_start(&rt->shutdown_timer, node_shutdown_timeout_cb,
                   (uint64_t)rt->cfg.timeout_shutdown * 1000, 0);
    smtp_server_drain(rt->n.smtp, node_drained_cb, rt);
}

int
node_tls_reload(struct node *n, char *err, size_t errsz)
{
    if (n->tls == NULL) {
        snprintf(err, errsz, "TLS is not enabled on this node");
        return RM_E_CONFIG;
    }
    return tls_server_reload(n->tls, err, errsz);
}

static void
node_print_ready(struct node_runtime *rt)
{
    const struct node_config *cfg = &rt->cfg;
    char ls[3 * NODE_CONFIG_LISTEN_MAX][64];
    enum smtp_kind kinds[3 * NODE_CONFIG_LISTEN_MAX];
    size_t nls = smtp_server_listeners(rt->n.smtp, ls, kinds,
                                       3 * NODE_CONFIG_LISTEN_MAX);

    printf("relaymesh %s: node %s is running (pid %d)\n", RM_VERSION,
           cfg->hostname, (int)getpid());
    for (size_t i = 0; i < nls; i++)
        printf("  %-11s%s%s\n", smtp_kind_name(kinds[i]), ls[i],
               kinds[i] == SMTP_KIND_RELAY ? "  (STARTTLS)"
               : kinds[i] == SMTP_KIND_SUBMISSION
                   ? "  (STARTTLS, AUTH required)"
                   : "  (implicit TLS, AUTH "
                     "required)");
    if (rt->n.tls) {
        const struct tls_cert_info *ti = tls_server_info(rt->n.tls);
        printf("  tls        %s%s, expires %s\n", ti->file,
               ti->self_signed ? " (self-signed)" : "", ti->not_after);
    }
    {
        const char *bl[NODE_CONFIG_LISTEN_MAX];
        size_t nb = bridge_listeners(rt->n.bridge, bl, NODE_CONFIG_LISTEN_MAX);

        for (size_t i = 0; i < nb; i++)
            printf("  bridge     %s  (MAPI clients; key %s)\n", bl[i],
                   rt->n.id.fingerprint);
    }
    printf("  control    %s\n", cfg->control_socket);
    printf("  data       %s\n", cfg->datadir);
    printf("  domains   ");
    for (size_t i = 0; i < cfg->ndomains; i++)
        printf(" %s", cfg->domains[i]);
    printf("\n");
    if (nls > 0) {
        char host[64];
        const char *colon;
        snprintf(host, sizeof(host), "%s", ls[0]);
        colon = strrchr(host, ':');
        printf("Send it a first message:  swaks --server %s --to "
               "postmaster@%s\n",
               host, cfg->ndomains ? cfg->domains[0] : "localhost");
        (void)colon;
        printf("then read it:             relaymesh%s%s mailbox list "
               "postmaster@%s\n",
               cfg->path ? " -c " : "", cfg->path ? cfg->path : "",
               cfg->ndomains ? cfg->domains[0] : "localhost");
    }
    printf("Stop with Ctrl-C (or SIGTERM).\n");
    fflush(stdout);
}

int
node_serve_main(int argc, char **argv)
{
    struct node_runtime *rt;
    const char *path = NULL;
    const char *level = NULL;
    int check = 0;
    char err[512];
    enum log_level lv;
    uv_loop_t loop;
    int r, rc = 1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "--check") == 0) {
            check = 1;
        } else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            level = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 ||
                   strcmp(argv[i], "--help") == 0) {
            node_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "relaymesh serve: unknown option %s\n", argv[i]);
            node_usage(stderr);
            return 2;
        }
    }

    rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        fprintf(stderr, "relaymesh: out of memory\n");
        return 1;
    }
    if (node_config_load(&rt->cfg, path, err, sizeof(err)) != 0) {
        fprintf(stderr, "relaymesh: %s\n", err);
        free(rt);
        return 1;
    }
    if (level == NULL)
        level = rt->cfg.log_level;
    if (log_level_parse(level, &lv) != 0) {
        fprintf(stderr,
                "relaymesh: unknown log level '%s' (error, warn, "
                "info, debug)\n",
                level);
        goto out_cfg;
    }
    log_set_level(lv);
    if (check) {
        node_config_dump(&rt->cfg, 1);
        printf("# configuration %s is valid\n",
               path ? path : "(embedded default)");
        rc = 0;
        goto out_cfg;
    }

    signal(SIGPIPE, SIG_IGN);
    umask(077);
    node_raise_nofile();
    r = node_mkdir_p(rt->cfg.datadir, 0700);
    if (r != 0) {
        fprintf(stderr, "relaymesh: cannot create data directory %s: %s\n",
                rt->cfg.datadir, strerror(-r));
        goto out_cfg;
    }

    if (node_already_running(rt->cfg.control_socket)) {
        fprintf(stderr,
                "relaymesh: another node is already running on %s (its "
                "control socket %s answers); stop it first or use another "
                "datadir\n",
                rt->cfg.datadir, rt->cfg.control_socket);
        goto out_cfg;
    }
    if (uv_loop_init(&loop) != 0) {
        fprintf(stderr, "relaymesh: cannot create the event loop\n");
        goto out_cfg;
    }
    rt->n.loop = &loop;
    rt->n.cfg = &rt->cfg;
    rt->n.started = (int64_t)time(NULL);

    r = smtp_server_new(&rt->n, &rt->n.smtp);
    if (r != 0)
        goto out_loop;
    r = node_drop_privileges(&rt->cfg);
    if (r != 0) {
        fprintf(stderr, "relaymesh: cannot drop privileges to user %s: %s\n",
                rt->cfg.user, strerror(-r));
        goto out_close;
    }
    {
        struct store_opts so = {0};
        so.map_size_max = (size_t)rt->cfg.map_size_max;
        r = store_open(&rt->n.store, rt->cfg.datadir, &so, &loop);
    }
    if (r != 0) {
        fprintf(stderr, "relaymesh: cannot open the store in %s: %s\n",
                rt->cfg.datadir, rm_strerror(r));
        goto out_close;
    }
    r = node_identity_load(&rt->n.id, rt->cfg.datadir, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "relaymesh: node key: %s\n", err);
        goto out_close;
    }
    r = tls_server_new(&rt->cfg, &rt->n.tls, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "relaymesh: TLS: %s\n", err);
        goto out_close;
    }
    r = ratelimit_new(&rt->n.rl);
    if (r == 0)
        r = auth_cache_new(rt->cfg.auth_cache_ttl, &rt->n.auth);
    if (r != 0) {
        fprintf(stderr, "relaymesh: out of memory\n");
        goto out_close;
    }
    r = node_queue_new(&rt->n, &rt->n.queue);
    if (r != 0) {
        fprintf(stderr, "relaymesh: cannot start the queue manager: %s\n",
                rm_strerror(r));
        goto out_close;
    }
    r = mesh_new(&rt->n, &rt->n.mesh, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "relaymesh: mesh: %s\n", err);
        goto out_close;
    }
    r = bridge_new(&rt->n, &rt->n.bridge, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "relaymesh: bridge: %s\n", err);
        goto out_close;
    }
    r = ctl_server_new(&rt->n, &rt->n.ctl);
    if (r != 0) {
        fprintf(stderr, "relaymesh: cannot open the control socket %s: %s\n",
                rt->cfg.control_socket, rm_strerror(r));
        goto out_close;
    }
    uv_signal_init(&loop, &rt->sigterm);
    uv_signal_init(&loop, &rt->sigint);
    uv_signal_init(&loop, &rt->sighup);
    uv_timer_init(&loop, &rt->shutdown_timer);
    rt->sigterm.data = rt->sigint.data = rt->sighup.data = rt;
    rt->shutdown_timer.data = rt;
    uv_signal_start(&rt->sigterm, node_signal_cb, SIGTERM);
    uv_signal_start(&rt->sigint, node_signal_cb, SIGINT);
    uv_signal_start(&rt->sighup, node_signal_cb, SIGHUP);
    uv_unref((uv_handle_t *)&rt->sighup);
    smtp_server_start(rt->n.smtp);
    log_info("event=node.started hostname=%s datadir=%s pid=%d",
             rt->cfg.hostname, rt->cfg.datadir, (int)getpid());
    node_print_ready(rt);

    uv_run(&loop, UV_RUN_DEFAULT);
    rc = 0;
    goto out_loop;

out_close:
    if (rt->n.ctl)
        ctl_server_close(rt->n.ctl);
    if (rt->n.queue)
        node_queue_close(rt->n.queue);
    if (rt->n.smtp)
        smtp_server_close(rt->n.smtp);
    if (rt->n.bridge)
        bridge_close(rt->n.bridge);
    if (rt->n.mesh)
        mesh_close(rt->n.mesh);
    if (rt->n.store)
        store_close(rt->n.store);
    uv_run(&loop, UV_RUN_DEFAULT);
out_loop:
    uv_walk(&loop, node_close_walk_cb, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        log_warn("event=node.loop_not_clean");
    tls_server_free(rt->n.tls);
    ratelimit_free(rt->n.rl);
    auth_cache_free(rt->n.auth);
    node_identity_free(&rt->n.id);
out_cfg:
    node_config_cleanup(&rt->cfg);
    free(rt);
    return rc;
}
