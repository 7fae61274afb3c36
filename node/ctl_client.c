/*
 * ctl_client: the relaymesh CLI's client side. Every subcommand but
 * `serve` sends one request (a few for `mailbox cat`) over the node's
 * control socket and prints the answer: aligned columns for people, or
 * one JSON document with --json (ctl_obj_json(): invalid UTF-8 becomes
 * U+FFFD). Plain blocking I/O: a CLI has nothing else to do meanwhile.
 *
 * Messages go to stderr as "relaymesh: what happened; what to do".
 * Exit codes: 0 ok, 1 error, 2 usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "node/ctl_codec.h"
#include "node/node.h"

#define CTL_DEFAULT_SOCKET "./relaymesh-data/control.sock"
#define CTL_TIMEOUT_SEC 120
#define CTL_PW_MAX 1024

struct ctl_cli {
    const char *socket; /* path to connect to */
    char sockbuf[4096];
    int json;
    const char *state;      /* queue list --state */
    const char *route;      /* queue list --route */
    const char *domain;     /* queue list --domain */
    const char *older_than; /* queue list --older-than, as given */
    uint64_t older_secs;    /* ... in seconds */
    int all;                /* queue retry --all */
    const char *expires;    /* mesh invite --expires */
    const char *name;       /* mesh invite --name */
    const char *words[8];   /* subcommand words and arguments */
    size_t nwords;
    int fd;
};

/* A response and the frame its values point into. */
struct ctl_answer {
    char *frame;
    struct ctl_response resp;
};

static int ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
ctl_err(const char *fmt, ...)
{
    va_list ap;

    fputs("relaymesh: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static int
ctl_usage(const char *what)
{
    fprintf(stderr,
            "relaymesh: usage: relaymesh [-d DATADIR | -c FILE] [--json] "
            "%s\n(run `relaymesh help` for every command)\n",
            what);
    return 2;
}

/* ---- socket I/O --------------------------------------------------------- */

static int
ctl_connect(struct ctl_cli *cli)
{
    struct sockaddr_un sun;
    struct timeval tv = {CTL_TIMEOUT_SEC, 0};
    int fd, e;

    if (strlen(cli->socket) >= sizeof(sun.sun_path))
        return ctl_err("the control socket path %s is too long; use a "
                       "shorter datadir or control_socket",
                       cli->socket);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, cli->socket);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return ctl_err("cannot create a socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        e = errno;
        close(fd);
        if (e == EACCES || e == EPERM)
            return ctl_err("cannot reach the node at %s: %s; run as the "
                           "user the node runs as (or root)",
                           cli->socket, strerror(e));
        return ctl_err("cannot reach the node at %s: %s; is `relaymesh "
                       "serve` running here? use -d DATADIR or -c FILE",
                       cli->socket, strerror(e));
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    cli->fd = fd;
    return 0;
}

static int
ctl_write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* 0, -errno, or RM_E_CLOSED on EOF. */
static int
ctl_read_all(int fd, char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return RM_E_CLOSED;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void
ctl_answer_free(struct ctl_answer *a)
{
    ctl_response_cleanup(&a->resp);
    free(a->frame);
    a->frame = NULL;
}

static int
ctl_io_error(const struct ctl_cli *cli, int r)
{
    if (r == -EAGAIN || r == -EWOULDBLOCK)
        return ctl_err("the node at %s did not answer within %d s; check "
                       "its log",
                       cli->socket, CTL_TIMEOUT_SEC);
    if (r == RM_E_CLOSED)
        return ctl_err("the node at %s closed the connection; check its "
                       "log",
                       cli->socket);
    return ctl_err("lost the connection to the node at %s: %s", cli->socket,
                   rm_strerror(r));
}

/*
 * Send the request in e (finished here) and read the answer. Returns 0
 * with a->resp filled (ok or not), or 1 after printing why not.
 */
static int
ctl_call(struct ctl_cli *cli, struct ctl_enc *e, struct ctl_answer *a)
{
    unsigned char hdr[CTL_HDR_LEN];
    char err[256];
    const char *data;
    size_t len;
    int r;

    memset(a, 0, sizeof(*a));
    if ((r = ctl_enc_finish(e, &data, &len)) != 0)
        return ctl_err("cannot encode the request: %s", rm_strerror(r));
    if ((r = ctl_write_all(cli->fd, data, len)) != 0)
        return ctl_io_error(cli, r);
    if ((r = ctl_read_all(cli->fd, (char *)hdr, sizeof(hdr))) != 0)
        return ctl_io_error(cli, r);
    if (ctl_frame_len(hdr, CTL_FRAME_MAX, &len) != 0)
        return ctl_err("the node sent a frame larger than 16 MiB; is %s "
                       "a relaymesh control socket?",
                       cli->socket);
    if ((a->frame = malloc(len ? len : 1)) == NULL)
        return ctl_err("out of memory");
    if ((r = ctl_read_all(cli->fd, a->frame, len)) != 0) {
        ctl_answer_free(a);
        return ctl_io_error(cli, r);
    }
    if (ctl_response_decode(&a->resp, a->frame, len, err, sizeof(err)) != 0) {
        ctl_answer_free(a);
        return ctl_err("the node sent a malformed answer (%s); are the CLI "
                       "and the node the same version?",
                       err);
    }
    return 0;
}

/* One request, answer checked: 0 = a->resp.ok, 1 = error printed. */
static int
ctl_request(struct ctl_cli *cli, struct ctl_enc *e, struct ctl_answer *a,
            const char *hint)
{
    if (ctl_call(cli, e, a) != 0)
        return 1;
    if (!a->resp.ok) {
        ctl_err("%s%s%s", a->resp.error, hint ? "; " : "", hint ? hint : "");
        ctl_answer_free(a);
        return 1;
    }
    return 0;
}

/* ---- formatting ------------------------------------------------------- */

static int
ctl_print_json(const struct ctl_obj *o)
{
    struct buf b;
    int r;

    buf_init(&b, (size_t)1 << 30);
    r = ctl_obj_json(o, &b, 1);
    if (r == 0 && b.len > 0 && fwrite(b.data, 1, b.len, stdout) != b.len)
        r = -EIO;
    buf_cleanup(&b);
    if (r != 0)
        return ctl_err("cannot write the JSON output: %s", rm_strerror(r));
    return 0;
}

static void
ctl_human_size(uint64_t n, char *out, size_t outsz)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    size_t u = 0;

    if (n < 1024) {
        snprintf(out, outsz, "%" PRIu64 " B", n);
        return;
    }
    v /= 1024;
    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    snprintf(out, outsz, "%.1f %s", v, units[u]);
}

static void
ctl_time(int64_t t, char *out, size_t outsz)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t <= 0 || localtime_r(&tt, &tm) == NULL) {
        snprintf(out, outsz, "-");
        return;
    }
    strftime(out, outsz, "%Y-%m-%d %H:%M", &tm);
}

static void
ctl_duration(int64_t s, char *out, size_t outsz)
{
    if (s < 60)
        snprintf(out, outsz, "%" PRId64 "s", s);
    else if (s < 3600)
        snprintf(out, outsz, "%" PRId64 "m", s / 60);
    else if (s < 86400)
        snprintf(out, outsz, "%" PRId64 "h %" PRId64 "m", s / 3600,
                 s % 3600 / 60);
    else
        snprintf(out, outsz, "%" PRId64 "d %" PRId64 "h", s / 86400,
                 s % 86400 / 3600);
}

static void
ctl_next_try(int64_t t, char *out, size_t outsz)
{
    int64_t now = (int64_t)time(NULL);
    char d[32];

    if (t <= now) {
        snprintf(out, outsz, "now");
        return;
    }
    ctl_duration(t - now, d, sizeof(d));
    snprintf(out, outsz, "in %s", d);
}

/*
 * Copy bytes for a terminal: control bytes and invalid UTF-8 become '?'
 * (a subject must not be able to move the cursor). At most width display
 * characters; longer text ends in "...". *cols gets the width used.
 */
static char *
ctl_cell(const char *s, size_t len, size_t width, size_t *cols)
{
    struct buf b;
    size_t i = 0, n = 0, total = 0;
    char *out;

    /* Count characters first to know whether to cut. */
    for (size_t j = 0; j < len;) {
        unsigned char c = (unsigned char)s[j];
        size_t k = 1;
        if (c >= 0xc0 && c < 0xf8) {
            k = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
            if (j + k > len)
                k = 1;
            for (size_t m = 1; m < k; m++) {
                if (((unsigned char)s[j + m] & 0xc0) != 0x80)
                    k = 1;
            }
        }
        j += k;
        total++;
    }
    buf_init(&b, (width ? width : len) * 4 + 16);
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        size_t k = 1;
        if (width > 0 && total > width && n + 3 >= width) {
            buf_append(&b, "...", width >= 3 ? 3 : width);
            n += width >= 3 ? 3 : width;
            break;
        }
        if (c >= 0xc0 && c < 0xf8) {
            k = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
            if (i + k > len)
                k = 1;
            for (size_t m = 1; m < k; m++) {
                if (((unsigned char)s[i + m] & 0xc0) != 0x80)
                    k = 1;
            }
        }
        if (k > 1)
            buf_append(&b, s + i, k);
        else if (c < 0x20 || c >= 0x7f)
            buf_append(&b, "?", 1);
        else
            buf_append(&b, s + i, 1);
        i += k;
        n++;
    }
    out = buf_take(&b, &len);
    if (out == NULL)
        out = strdup("");
    *cols = n;
    return out;
}

struct ctl_col {
    const char *name;
    size_t max; /* display width cap, 0 = none */
    int right;  /* right-aligned (numbers) */
};

struct ctl_table {
    const struct ctl_col *cols;
    size_t ncols;
    char **cells;
    size_t *widths; /* per cell */
    char **notes;   /* per row: lines printed under it, or NULL */
    size_t nrows, cap;
};

static void
ctl_table_init(struct ctl_table *t, const struct ctl_col *cols, size_t n)
{
    memset(t, 0, sizeof(*t));
    t->cols = cols;
    t->ncols = n;
}

/* Add one row of ncols NUL-terminated texts. */
static int
ctl_table_add(struct ctl_table *t, const char *const *texts)
{
    if (t->nrows == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, nc * t->ncols * sizeof(*c));
        char **n;
        size_t *w;
        if (c == NULL)
            return -ENOMEM;
        t->cells = c;
        w = realloc(t->widths, nc * t->ncols * sizeof(*w));
        if (w == NULL)
            return -ENOMEM;
        t->widths = w;
        n = realloc(t->notes, nc * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        t->notes = n;
        t->cap = nc;
    }
    t->notes[t->nrows] = NULL;
    for (size_t i = 0; i < t->ncols; i++) {
        size_t k = t->nrows * t->ncols + i;
        /* An empty field shows as "-" so columns stay readable. */
        const char *x = texts[i][0] ? texts[i] : "-";
        t->cells[k] = ctl_cell(x, strlen(x), t->cols[i].max, &t->widths[k]);
    }
    t->nrows++;
    return 0;
}

/* A line of text (sanitized here, not cut) to print under the last row,
   after indent. */
static int
ctl_table_note(struct ctl_table *t, const char *indent, const char *s,
               size_t len)
{
    struct buf b;
    size_t cols, n;
    char **note, *line;

    if (t->nrows == 0)
        return -EINVAL;
    note = &t->notes[t->nrows - 1];
    line = ctl_cell(s, len, 0, &cols);
    buf_init(&b, (size_t)1 << 24);
    if ((*note != NULL && buf_append(&b, *note, strlen(*note)) != 0) ||
        buf_appendf(&b, "%s%s\n", indent, line) != 0) {
        free(line);
        buf_cleanup(&b);
        return -ENOMEM;
    }
    free(line);
    free(*note);
    *note = buf_take(&b, &n);
    return 0;
}

static void
ctl_table_print(const struct ctl_table *t, FILE *f)
{
    size_t w[16] = {0};
    struct buf line;

    buf_init(&line, (size_t)1 << 20);
    for (size_t i = 0; i < t->ncols && i < 16; i++) {
        w[i] = strlen(t->cols[i].name);
        for (size_t r = 0; r < t->nrows; r++) {
            if (t->widths[r * t->ncols + i] > w[i])
                w[i] = t->widths[r * t->ncols + i];
        }
    }
    for (size_t r = 0; r <= t->nrows; r++) {
        buf_reset(&line);
        for (size_t i = 0; i < t->ncols && i < 16; i++) {
            const char *s =
                r == 0 ? t->cols[i].name : t->cells[(r - 1) * t->ncols + i];
            size_t sw = r == 0 ? strlen(s) : t->widths[(r - 1) * t->ncols + i];
            int pad = (int)(w[i] > sw ? w[i] - sw : 0);
            if (t->cols[i].right)
                buf_appendf(&line, "%*s%s", pad, "", s);
            else
                buf_appendf(&line, "%s%*s", s, pad, "");
            if (i + 1 < t->ncols)
                buf_append(&line, "  ", 2);
        }
        while (line.len > 0 && line.data[line.len - 1] == ' ')
            line.len--;
        if (line.len > 0)
            fwrite(line.data, 1, line.len, f);
        fputc('\n', f);
        if (r > 0 && t->notes[r - 1] != NULL)
            fputs(t->notes[r - 1], f);
    }
    buf_cleanup(&line);
}

static void
ctl_table_cleanup(struct ctl_table *t)
{
    for (size_t k = 0; k < t->nrows * t->ncols; k++)
        free(t->cells[k]);
    for (size_t r = 0; r < t->nrows; r++)
        free(t->notes[r]);
    free(t->cells);
    free(t->widths);
    free(t->notes);
    memset(t, 0, sizeof(*t));
}

/* A string field as a C string (bounded copy into out). */
static const char *
ctl_field(const struct ctl_obj *m, const char *key, char *out, size_t outsz)
{
    size_t len;
    const char *p = ctl_obj_get_strn(m, key, &len);

    if (len >= outsz)
        len = outsz - 1;
    memcpy(out, p, len);
    out[len] = '\0';
    return out;
}

static uint64_t
ctl_u64(const struct ctl_obj *m, const char *key)
{
    uint64_t v = 0;

    ctl_obj_get_u64(m, key, &v);
    return v;
}

static int64_t
ctl_i64(const struct ctl_obj *m, const char *key)
{
    int64_t v = 0;

    ctl_obj_get_i64(m, key, &v);
    return v;
}

/* Printable single-line text of a field (sanitized, uncut). */
static char *
ctl_text(const struct ctl_obj *m, const char *key)
{
    size_t len, cols;
    const char *p = ctl_obj_get_strn(m, key, &len);

    return ctl_cell(p, len, 0, &cols);
}

static const char *
ctl_plural(uint64_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* ---- commands --------------------------------------------------------- */

/* One line per listener of a kind: "submission  127.0.0.1:2587  (...)". */
static void
ctl_print_listeners(const struct ctl_obj *d, const char *key, const char *label,
                    const char *note)
{
    const struct ctl_obj *l = ctl_obj_get(d, key);

    for (size_t i = 0; i < ctl_obj_len(l); i++) {
        const char *p;
        size_t len, cols;
        if (ctl_obj_bytes(ctl_obj_at(l, i), &p, &len) == 0) {
            char *s = ctl_cell(p, len, 0, &cols);
            printf("%s  %s  %s\n", label, s, note);
            free(s);
        }
    }
}

/* The certificate: subject, expiry with a warning, fingerprint, file. */
static void
ctl_print_tls(const struct ctl_obj *t, int64_t now)
{
    char *subj, *exp, *fp, *file;
    int64_t left;
    int self = 0;

    if (t == NULL || ctl_obj_type(t) != CTL_T_MAP) {
        printf("certificate none (TLS off)\n");
        return;
    }
    subj = ctl_text(t, "subject");
    exp = ctl_text(t, "not_after");
    fp = ctl_text(t, "sha256");
    file = ctl_text(t, "file");
    ctl_obj_bool(ctl_obj_get(t, "self_signed"), &self);
    left = ctl_i64(t, "not_after_ts") - now;
    printf("certificate %s%s, expires %s", subj, self ? " (self-signed)" : "",
           exp);
    if (left <= 0)
        printf("  EXPIRED: clients will refuse it; install a new one and "
               "run `relaymesh tls reload`");
    else if (left < 30 * 86400)
        printf("  EXPIRES IN %" PRId64 " DAYS", left / 86400);
    printf("\n            sha256 %s\n            %s\n", fp, file);
    free(subj);
    free(exp);
    free(fp);
    free(file);
}

static int
ctl_do_status(struct ctl_cli *cli)
{
    struct ctl_enc e;
    struct ctl_answer a;
    const struct ctl_obj *d, *st, *l;
    char up[32], used[32], map[32];
    char *host, *dir;
    int r;

    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, "status", 0);
    r = ctl_request(cli, &e, &a, NULL);
    ctl_enc_cleanup(&e);
    if (r != 0)
        return r;
    d = a.resp.data;
    if (cli->json) {
        r = ctl_print_json(d);
        ctl_answer_free(&a);
        return r;
    }
    host = ctl_text(d, "hostname");
    dir = ctl_text(d, "datadir");
    ctl_duration(ctl_i64(d, "uptime"), up, sizeof(up));
    {
        char *ver = ctl_text(d, "version");
        printf("relaymesh %s on %s, pid %" PRIu64 ", up %s\n", ver, host,
               ctl_u64(d, "pid"), up);
        free(ver);
    }
    printf("data dir    %s\n", dir);
    free(host);
    free(dir);
    ctl_print_listeners(d, "listeners", "smtp      ", "(STARTTLS)");
    ctl_print_listeners(d, "submission", "submission",
                        "(STARTTLS, AUTH required)");
    ctl_print_listeners(d, "smtps", "smtps     ",
                        "(implicit TLS, AUTH required)");
    ctl_print_tls(ctl_obj_get(d, "tls"), (int64_t)time(NULL));
    printf("domains    ");
    l = ctl_obj_get(d, "domains");
    for (size_t i = 0; i < ctl_obj_len(l); i++) {
        const char *p;
        size_t len, cols;
        if (ctl_obj_bytes(ctl_obj_at(l, i), &p, &len) == 0) {
            char *s = ctl_cell(p, len, 0, &cols);
            printf(" %s", s);
            free(s);
        }
    }
    printf("\nsessions    %" PRIu64 " now, %" PRIu64 " since start\n",
           ctl_u64(d, "sessions_current"), ctl_u64(d, "sessions_total"));
    printf("messages    %" PRIu64 " accepted (%" PRIu64 " recipients), "
           "%" PRIu64 " rejected, %" PRIu64 " delivered locally\n",
           ctl_u64(d, "messages_accepted"), ctl_u64(d, "recipients_accepted"),
           ctl_u64(d, "messages_rejected"), ctl_u64(d, "delivered_local"));
    printf("queue       %" PRIu64 " %s\n", ctl_u64(d, "queue_entries"),
           ctl_plural(ctl_u64(d, "queue_entries"), "entry", "entries"));
    st = ctl_obj_get(d, "store");
    if (ctl_obj_type(st) == CTL_T_MAP) {
        ctl_human_size(ctl_u64(st, "used_bytes"), used, sizeof(used));
        ctl_human_size(ctl_u64(st, "map_size"), map, sizeof(map));
        printf("store       %s used of %s mapped; %" PRIu64 " %s, %" PRIu64
               " %s, %" PRIu64 " %s\n",
               used, map, ctl_u64(st, "messages"),
               ctl_plural(ctl_u64(st, "messages"), "message", "messages"),
               ctl_u64(st, "mailboxes"),
               ctl_plural(ctl_u64(st, "mailboxes"), "mailbox", "mailboxes"),
               ctl_u64(st, "users"),
               ctl_plural(ctl_u64(st, "users"), "user", "users"));
    }
    if (ctl_obj_get(d, "tls_sessions") != NULL) {
        printf("tls         %" PRIu64 " %s, %" PRIu64 " failed handshakes\n",
               ctl_u64(d, "tls_sessions"),
               ctl_plural(ctl_u64(d, "tls_sessions"), "session", "sessions"),
               ctl_u64(d, "tls_failures"));
        printf("auth        %" PRIu64 " %s, %" PRIu64 " failed; %" PRIu64
               " refused by rate limits\n",
               ctl_u64(d, "auth_ok"),
               ctl_plural(ctl_u64(d, "auth_ok"), "login", "logins"),
               ctl_u64(d, "auth_failed"), ctl_u64(d, "ratelimited"));
    }
    st = ctl_obj_get(d, "identity");
    if (ctl_obj_type(st) == CTL_T_MAP) {
        char fp[64], pk[64];
        if (ctl_obj_get_str(st, "fingerprint", fp, sizeof(fp)) == 0 &&
            ctl_obj_get_str(st, "public_key", pk, sizeof(pk)) == 0)
            printf("node key    %s (ed25519 %s)\n", fp, pk);
    }
    st = ctl_obj_get(d, "mesh");
    if (ctl_obj_type(st) == CTL_T_MAP) {
        int member = 0;
        char name[64], id[40];

        ctl_obj_bool(ctl_obj_get(st, "member"), &member);
        ctl_field(st, "name", name, sizeof(name));
        ctl_field(st, "mesh", id, sizeof(id));
        if (member)
            printf("mesh        %s as %s: %" PRIu64 " alive, %" PRIu64
                   " suspect, %" PRIu64 " dead, %" PRIu64
                   " removed (`relaymesh mesh peers`)\n",
                   id, name, ctl_u64(st, "alive"), ctl_u64(st, "suspect"),
                   ctl_u64(st, "dead"), ctl_u64(st, "revoked"));
        else
            printf("mesh        not in a mesh (`relaymesh mesh create`, or "
                   "`mesh join TOKEN`)\n");
    }
    st = ctl_obj_get(d, "bridge");
    if (ctl_obj_type(st) == CTL_T_MAP) {
        char listen[128];

        ctl_field(st, "listen", listen, sizeof(listen));
        printf("bridge      %s: %" PRIu64 " %s now, %" PRIu64
               " logons, %" PRIu64 " failed, %" PRIu64 " sent\n",
               listen, ctl_u64(st, "sessions"),
               ctl_plural(ctl_u64(st, "sessions"), "session", "sessions"),
               ctl_u64(st, "logons"), ctl_u64(st, "logon_failures"),
               ctl_u64(st, "sent"));
    }
    st = ctl_obj_get(d, "delivery");
    if (ctl_obj_type(st) == CTL_T_MAP) {
        printf("delivery    %" PRIu64 " delivered, %" PRIu64
               " deferred attempts, %" PRIu64 " bounced, %" PRIu64
               " %s sent; %" PRIu64 " in progress over %" PRIu64 " %s\n",
               ctl_u64(st, "delivered"), ctl_u64(st, "deferred"),
               ctl_u64(st, "bounced"), ctl_u64(st, "reports"),
               ctl_plural(ctl_u64(st, "reports"), "report", "reports"),
               ctl_u64(st, "active"), ctl_u64(st, "connections_now"),
               ctl_plural(ctl_u64(st, "connections_now"), "connection",
                          "connections"));
    }
    if (ctl_u64(d, "store_full") > 0)
        printf("store full  %" PRIu64 " times answered 452 4.3.1; free disk "
               "space or raise map_size_max\n",
               ctl_u64(d, "store_full"));
    if (ctl_obj_get(d, "draining") != NULL) {
        int dr = 0;
        ctl_obj_bool(ctl_obj_get(d, "draining"), &dr);
        if (dr)
            printf("state       shutting down\n");
    }
    ctl_answer_free(&a);
    return 0;
}

/* Re-read the certificate and key files (like SIGHUP), and say which
   certificate is now in use. */
static int
ctl_do_tls_reload(struct ctl_cli *cli)
{
    struct ctl_enc e;
    struct ctl_answer a;
    int r;

    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, "tls.reload", 0);
    r = ctl_request(cli, &e, &a,
                    "check [tls] cert_file and key_file: PEM, matching, "
                    "readable by the node's user");
    ctl_enc_cleanup(&e);
    if (r != 0)
        return r;
    if (cli->json) {
        r = ctl_print_json(a.resp.data);
    } else {
        printf("certificate reloaded\n");
        ctl_print_tls(a.resp.data, (int64_t)time(NULL));
    }
    ctl_answer_free(&a);
    return r;
}

static void ctl_tty_restore(int sig);

/* The terminal settings to restore if the prompt is interrupted: the one
   piece of process state here, because a signal handler needs it. */
static struct termios ctl_saved_tty;

static void
ctl_tty_restore(int sig)
{
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &ctl_saved_tty);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int
ctl_read_line(int fd, char *out, size_t outsz, size_t *len)
{
    size_t n = 0;

    *len = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0 || c == '\n')
            break;
        if (n + 1 >= outsz)
            return RM_E_TOOBIG;
        out[n++] = c;
    }
    if (n > 0 && out[n - 1] == '\r')
        n--;
    out[n] = '\0';
    *len = n;
    return 0;
}

static int
ctl_prompt(const char *prompt, char *out, size_t outsz, size_t *len)
{
    struct termios t;
    int r;

    fputs(prompt, stderr);
    fflush(stderr);
    if (tcgetattr(STDIN_FILENO, &ctl_saved_tty) != 0)
        return -errno;
    t = ctl_saved_tty;
    t.c_lflag &= ~(tcflag_t)ECHO;
    t.c_lflag |= ECHONL;
    signal(SIGINT, ctl_tty_restore);
    signal(SIGTERM, ctl_tty_restore);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
    r = ctl_read_line(STDIN_FILENO, out, outsz, len);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &ctl_saved_tty);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    return r;
}

/* The new password: first line of stdin, or asked twice on a tty. */
static int
ctl_password(const char *addr, char *pw, size_t pwsz, size_t *len)
{
    char again[CTL_PW_MAX + 2], prompt[600];
    size_t alen = 0;
    int r;

    if (!isatty(STDIN_FILENO)) {
        r = ctl_read_line(STDIN_FILENO, pw, pwsz, len);
        if (r == RM_E_TOOBIG)
            return ctl_err("the password on stdin is longer than %d bytes",
                           CTL_PW_MAX);
        if (r != 0)
            return ctl_err("cannot read the password from stdin: %s",
                           rm_strerror(r));
        if (*len == 0)
            return ctl_err("no password on stdin; give it as the first "
                           "line, e.g. `printf '%%s\\n' \"$PW\" | relaymesh "
                           "user add %s`",
                           addr);
        return 0;
    }
    snprintf(prompt, sizeof(prompt), "New password for %s: ", addr);
    r = ctl_prompt(prompt, pw, pwsz, len);
    if (r == 0)
        r = ctl_prompt("Retype the password: ", again, sizeof(again), &alen);
    if (r == RM_E_TOOBIG)
        return ctl_err("the password is longer than %d bytes", CTL_PW_MAX);
    if (r != 0)
        return ctl_err("cannot read the password: %s", rm_strerror(r));
    r = *len != alen || memcmp(pw, again, alen) != 0;
    explicit_bzero(again, sizeof(again));
    if (r)
        return ctl_err("the passwords do not match; nothing was changed");
    if (*len == 0)
        return ctl_err("the password is empty; nothing was changed");
    return 0;
}

static void
ctl_enc_wipe(struct ctl_enc *e)
{
    if (e->buf.data != NULL)
        explicit_bzero(e->buf.data, e->buf.cap);
    ctl_enc_cleanup(e);
}

static int
ctl_do_user_pw(struct ctl_cli *cli, const char *cmd, const char *addr,
               const char *done)
{
    char pw[CTL_PW_MAX + 2];
    struct ctl_answer a;
    struct ctl_enc e;
    size_t len;
    int r;

    if (ctl_password(addr, pw, sizeof(pw), &len) != 0) {
        explicit_bzero(pw, sizeof(pw));
        return 1;
    }
    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, cmd, 2);
    ctl_enc_kstr(&e, "address", addr);
    ctl_enc_str(&e, "password");
    ctl_enc_strn(&e, pw, len);
    explicit_bzero(pw, sizeof(pw));
    r = ctl_request(cli, &e, &a, NULL);
    ctl_enc_wipe(&e);
    if (r != 0)
        return r;
    if (cli->json) {
        r = ctl_print_json(a.resp.data);
    } else {
        char canon[STORE_ADDR_MAX];
        printf("user %s %s\n",
               ctl_field(a.resp.data, "address", canon, sizeof(canon)), done);
    }
    ctl_answer_free(&a);
    return r;
}

static int
ctl_do_simple(struct ctl_cli *cli, const char *cmd, const char *key,
              const char *val, const char *fmt, const char *hint)
{
    struct ctl_answer a;
    struct ctl_enc e;
    int r;

    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, cmd, 1);
    ctl_enc_kstr(&e, key, val);
    r = ctl_request(cli, &e, &a, hint);
    ctl_enc_cleanup(&e);
    if (r != 0)
        return r;
    if (cli->json) {
        r = ctl_print_json(a.resp.data);
    } else {
        char what[STORE_ADDR_MAX];
        ctl_field(a.resp.data, key, what, sizeof(what));
        printf(fmt, what[0] ? what : val);
        putchar('\n');
    }
    ctl_answer_free(&a);
    return r;
}

static int
ctl_do_user_list(struct ctl_cli *cli)
{
    static const struct ctl_col cols[] = {{"ADDRESS", 60, 0},
                                          {"CREATED", 0, 0}};
    struct ctl_answer a;
    struct ctl_table t;
    struct ctl_enc e;
    const struct ctl_obj *d;
    size_t n;
    int r;

    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, "user.list", 0);
    r = ctl_request(cli, &e, &a, NULL);
    ctl_enc_cleanup(&e);
    if (r != 0)
        return r;
    d = a.resp.data;
    if (cli->json) {
        r = ctl_print_json(d);
        ctl_answer_free(&a);
        return r;
    }
    n = ctl_obj_len(d);
    if (n == 0) {
        printf("no users; add one with `relaymesh user add ADDRESS`\n");
        ctl_answer_free(&a);
        return 0;
    }
    ctl_table_init(&t, cols, 2);
    for (size_t i = 0; i < n; i++) {
        const struct ctl_obj *u = ctl_obj_at(d, i);
        char addr[STORE_ADDR_MAX], created[32];
        const char *row[2] = {ctl_field(u, "address", addr, sizeof(addr)),
                              created};
        ctl_time(ctl_i64(u, "created"), created, sizeof(created));
        ctl_table_add(&t, row);
    }
    ctl_table_print(&t, stdout);
    printf("%zu %s\n", n, ctl_plural(n, "user", "users"));
    ctl_table_cleanup(&t);
    ctl_answer_free(&a);
    return 0;
}

/* One page of mailbox.list: UIDs above after, at most CTL_MAIL_PAGE. */
#define CTL_MAIL_PAGE 1000

static int
ctl_mailbox_page(struct ctl_cli *cli, const char *addr, uint64_t after,
                 struct ctl_answer *a)
{
    struct ctl_enc e;
    int r;

    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, "mailbox.list", 3);
    ctl_enc_kstr(&e, "address", addr);
    ctl_enc_ku64(&e, "after", after);
    ctl_enc_ku64(&e, "limit", CTL_MAIL_PAGE);
    r = ctl_request(cli, &e, a, "see `relaymesh user list`");
    ctl_enc_cleanup(&e);
    return r;
}

/*
 * Pages through the mailbox so that a mailbox of any size lists: the
 * table is printed once all rows are in (column widths need them all);
 * --json streams one array, page by page.
 */
static int
ctl_do_mailbox_list(struct ctl_cli *cli, const char *addr)
{
    static const struct ctl_col cols[] = {
        {"UID", 0, 1},      {"DATE", 0, 0},        {"FROM", 30, 0},
        {"SUBJECT", 40, 0}, {"MESSAGE-ID", 32, 0}, {"SIZE", 0, 1},
        {"FLAGS", 0, 0}};
    struct ctl_answer a;
    struct ctl_table t;
    struct buf jb;
    uint64_t total = 0, after = 0;
    size_t n = 0, np;
    int r = 0;

    ctl_table_init(&t, cols, 7);
    buf_init(&jb, (size_t)1 << 30);
    do {
        const struct ctl_obj *d;

        if ((r = ctl_mailbox_page(cli, addr, after, &a)) != 0)
            break;
        if (cli->json && n == 0)
            fputs("[", stdout);
        d = a.resp.data;
        np = ctl_obj_len(d);
        for (size_t i = 0; i < np; i++) {
            const struct ctl_obj *m = ctl_obj_at(d, i), *fl;
            char uid[24], date[32], from[512], subj[1024], mid[512], size[32];
            char flags[128] = "";
            const char *row[7] = {uid, date, from, subj, mid, size, flags};

            after = ctl_u64(m, "uid");
            if (cli->json) {
                buf_reset(&jb);
                if ((r = ctl_obj_json(m, &jb, 0)) != 0)
                    break;
                printf("%s\n  %.*s", n + i ? "," : "", (int)jb.len, jb.data);
                continue;
            }
            snprintf(uid, sizeof(uid), "%" PRIu64, after);
            ctl_time(ctl_i64(m, "internaldate"), date, sizeof(date));
            ctl_field(m, "from", from, sizeof(from));
            ctl_field(m, "subject", subj, sizeof(subj));
            ctl_field(m, "message_id", mid, sizeof(mid));
            ctl_human_size(ctl_u64(m, "size"), size, sizeof(size));
            total += ctl_u64(m, "size");
            fl = ctl_obj_get(m, "flags");
            for (size_t k = 0; k < ctl_obj_len(fl); k++) {
                const char *p;
                size_t len;
                if (ctl_obj_bytes(ctl_obj_at(fl, k), &p, &len) != 0)
                    continue;
                if (len > 0 && p[0] == '\\') {
                    p++;
                    len--;
                }
                snprintf(flags + strlen(flags), sizeof(flags) - strlen(flags),
                         "%s%.*s", flags[0] ? "," : "", (int)len, p);
            }
            if (flags[0] == '\0')
                strcpy(flags, "-");
            if (ctl_table_add(&t, row) != 0) {
                r = ctl_err("out of memory listing mailbox %s", addr);
                break;
            }
        }
        n += np;
        ctl_answer_free(&a);
    } while (r == 0 && np == CTL_MAIL_PAGE && after < UINT32_MAX);
    buf_cleanup(&jb);
    if (cli->json) {
        if (r == 0 || n > 0)
            fputs(n ? "\n]\n" : "]\n", stdout);
    } else if (r == 0 && n == 0) {
        printf("mailbox %s is empty\n", addr);
    } else if (r == 0) {
        char sz[32];
        ctl_table_print(&t, stdout);
        ctl_human_size(total, sz, sizeof(sz));
        printf("%zu %s, %s\n", n, ctl_plural(n, "message", "messages"), sz);
    }
    ctl_table_cleanup(&t);
    return r;
}

static int
ctl_do_mailbox_cat(struct ctl_cli *cli, const char *addr, const char *uids)
{
    uint64_t uid, offset = 0, size;
    char *end;

    errno = 0;
    uid = strtoull(uids, &end, 10);
    if (*uids < '0' || *uids > '9' || *end != '\0' || errno != 0 || uid == 0 ||
        uid > UINT32_MAX)
        return ctl_usage("mailbox cat ADDRESS UID  (UID: a number from "
                         "`mailbox list`)");
    do {
        struct ctl_answer a;
        struct ctl_enc e;
        const char *p;
        size_t len;
        int r;

        ctl_enc_init(&e, 1);
        ctl_enc_request(&e, "mailbox.cat", 3);
        ctl_enc_kstr(&e, "address", addr);
        ctl_enc_ku64(&e, "uid", uid);
        ctl_enc_ku64(&e, "offset", offset);
        r = ctl_request(cli, &e, &a, "see `relaymesh mailbox list ADDRESS`");
        ctl_enc_cleanup(&e);
        if (r != 0)
            return r;
        size = ctl_u64(a.resp.data, "size");
        if (ctl_obj_bytes(ctl_obj_get(a.resp.data, "data"), &p, &len) != 0 ||
            (len == 0 && offset < size)) {
            ctl_answer_free(&a);
            return ctl_err("the node sent a malformed mailbox.cat answer");
        }
        if (len > 0 && fwrite(p, 1, len, stdout) != len) {
            ctl_answer_free(&a);
            return ctl_err("cannot write to stdout: %s", strerror(errno));
        }
        offset += len;
        ctl_answer_free(&a);
    } while (offset < size);
    if (fflush(stdout) != 0)
        return ctl_err("cannot write to stdout: %s", strerror(errno));
    return 0;
}

/* One line of text: runs of blanks, CR and LF become one space (an SMTP
   error may be a multi-line reply). */
static void
ctl_oneline(char *s)
{
    char *w = s;
    int blank = 1; /* drops leading blanks */

    for (const char *p = s; *p != '\0'; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
            if (!blank)
                *w++ = ' ';
            blank = 1;
        } else {
            *w++ = *p;
            blank = 0;
        }
    }
    while (w > s && w[-1] == ' ')
        w--;
    *w = '\0';
}

/* Append "what val" to the filter text in out, unless val is NULL. */
static void
ctl_filter_text(char *out, size_t outsz, const char *what, const char *val)
{
    size_t n = strlen(out);

    if (val != NULL && n + 1 < outsz)
        snprintf(out + n, outsz - n, "%s%s %s", n ? ", " : "", what, val);
}

static int
ctl_do_queue_list(struct ctl_cli *cli)
{
    static const struct ctl_col cols[] = {
        {"ID", 0, 0},         {"N", 0, 1},           {"STATE", 0, 0},
        {"AGE", 0, 1},        {"ROUTE", 0, 0},       {"TRIES", 0, 1},
        {"NEXT TRY", 0, 0},   {"SIZE", 0, 1},        {"SENDER", 28, 0},
        {"RECIPIENT", 28, 0}, {"LAST ERROR", 40, 0}, {"REPLICAS", 40, 0}};
    struct ctl_answer a;
    struct ctl_table t;
    struct ctl_enc e;
    const struct ctl_obj *d;
    size_t n, nargs = (cli->state != NULL) + (cli->route != NULL) +
                      (cli->domain != NULL) + (cli->older_than != NULL);
    size_t nstate[5] = {0};
    int64_t now = (int64_t)time(NULL);
    int r;

    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, "queue.list", nargs);
    if (cli->state != NULL)
        ctl_enc_kstr(&e, "state", cli->state);
    if (cli->route != NULL)
        ctl_enc_kstr(&e, "route", cli->route);
    if (cli->domain != NULL)
        ctl_enc_kstr(&e, "domain", cli->domain);
    if (cli->older_than != NULL)
        ctl_enc_ku64(&e, "older_than", cli->older_secs);
    r = ctl_request(cli, &e, &a, NULL);
    ctl_enc_cleanup(&e);
    if (r != 0)
        return r;
    d = a.resp.data;
    if (cli->json) {
        r = ctl_print_json(d);
        ctl_answer_free(&a);
        return r;
    }
    n = ctl_obj_len(d);
    if (n == 0) {
        char f[1200] = "";
        ctl_filter_text(f, sizeof(f), "state", cli->state);
        ctl_filter_text(f, sizeof(f), "route", cli->route);
        ctl_filter_text(f, sizeof(f), "destination", cli->domain);
        ctl_filter_text(f, sizeof(f), "older than", cli->older_than);
        if (f[0] != '\0')
            printf("queue is empty (for %s)\n", f);
        else
            printf("queue is empty\n");
        ctl_answer_free(&a);
        return 0;
    }
    /* The replicas column only in a mesh that replicates. */
    size_t ncols = 11;
    for (size_t i = 0; i < n; i++) {
        char reps[8];
        ctl_field(ctl_obj_at(d, i), "replicas", reps, sizeof(reps));
        if (reps[0] != '\0')
            ncols = 12;
    }
    ctl_table_init(&t, cols, ncols);
    for (size_t i = 0; i < n; i++) {
        static const char *const states[] = {"queued", "hold", "deferred",
                                             "delivered", "bounced"};
        const struct ctl_obj *q = ctl_obj_at(d, i);
        char id[32], rc[16], state[16], age[32], route[16], tries[16];
        char next[40], size[32], from[600], to[600], err[600];
        char reps[600], owner[80], repl[700];
        const char *row[12] = {id,   rc,   state, age, route, tries,
                               next, size, from,  to,  err,   repl};
        int64_t arrival = ctl_i64(q, "arrival");
        ctl_field(q, "id", id, sizeof(id));
        snprintf(rc, sizeof(rc), "%" PRIu64, ctl_u64(q, "rcpt"));
        ctl_field(q, "state", state, sizeof(state));
        ctl_duration(arrival > 0 && now > arrival ? now - arrival : 0, age,
                     sizeof(age));
        ctl_field(q, "route", route, sizeof(route));
        snprintf(tries, sizeof(tries), "%" PRIu64, ctl_u64(q, "attempts"));
        if (strcmp(state, "hold") == 0)
            strcpy(next, "-");
        else
            ctl_next_try(ctl_i64(q, "next_try"), next, sizeof(next));
        ctl_human_size(ctl_u64(q, "size"), size, sizeof(size));
        ctl_field(q, "sender", from + 1, sizeof(from) - 2);
        from[0] = '<';
        strcat(from, ">");
        ctl_field(q, "recipient", to, sizeof(to));
        ctl_field(q, "last_error", err, sizeof(err));
        ctl_oneline(err);
        ctl_field(q, "replicas", reps, sizeof(reps));
        ctl_field(q, "owner", owner, sizeof(owner));
        if (reps[0] != '\0')
            snprintf(repl, sizeof(repl), "%s (owner %s)", reps, owner);
        else
            snprintf(repl, sizeof(repl), "-");
        for (size_t s = 0; s < 5; s++)
            nstate[s] += strcmp(state, states[s]) == 0;
        if (ctl_table_add(&t, row) != 0) {
            ctl_table_cleanup(&t);
            ctl_answer_free(&a);
            return ctl_err("out of memory listing the queue");
        }
    }
    ctl_table_print(&t, stdout);
    printf("queue: %zu %s (%zu queued, %zu deferred, %zu held)\n", n,
           ctl_plural(n, "entry", "entries"), nstate[0], nstate[2], nstate[1]);
    ctl_table_cleanup(&t);
    ctl_answer_free(&a);
    return 0;
}

static int
ctl_do_queue_show(struct ctl_cli *cli, const char *id)
{
    static const struct ctl_col cols[] = {
        {"N", 0, 1},          {"RECIPIENT", 40, 0}, {"STATE", 0, 0},
        {"ROUTE", 0, 0},      {"TRIES", 0, 1},      {"NEXT TRY", 0, 0},
        {"LAST ERROR", 50, 0}};
    struct ctl_answer a;
    struct ctl_table t;
    struct ctl_enc e;
    const struct ctl_obj *d, *rs, *hist;
    char buf[64];
    char *s;
    int r;

    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, "queue.show", 1);
    ctl_enc_kstr(&e, "id", id);
    r = ctl_request(cli, &e, &a, "see `relaymesh queue list`");
    ctl_enc_cleanup(&e);
    if (r != 0)
        return r;
    d = a.resp.data;
    if (cli->json) {
        r = ctl_print_json(d);
        ctl_answer_free(&a);
        return r;
    }
    s = ctl_text(d, "id");
    printf("id          %s\n", s);
    free(s);
    s = ctl_text(d, "sender");
    printf("sender      <%s>\n", s);
    free(s);
    ctl_time(ctl_i64(d, "arrival"), buf, sizeof(buf));
    {
        int64_t now = (int64_t)time(NULL), arr = ctl_i64(d, "arrival");
        char age[32];
        ctl_duration(arr > 0 && now > arr ? now - arr : 0, age, sizeof(age));
        printf("arrival     %s (%s ago)\n", buf, age);
    }
    ctl_human_size(ctl_u64(d, "size"), buf, sizeof(buf));
    printf("size        %s (%" PRIu64 " bytes)\n", buf, ctl_u64(d, "size"));
    s = ctl_text(d, "client");
    printf("client      %s\n", s);
    free(s);
    s = ctl_text(d, "subject");
    printf("subject     %s\n", s);
    {
        char *reps = ctl_text(d, "replicas"), *owner = ctl_text(d, "owner");
        if (reps[0] != '\0')
            printf("replicas    %s (owner %s)\n", reps, owner);
        free(reps);
        free(owner);
    }
    free(s);
    {
        char *body = ctl_text(d, "body"), *ret = ctl_text(d, "ret"),
             *envid = ctl_text(d, "envid");
        int u8 = 0;
        ctl_obj_bool(ctl_obj_get(d, "smtputf8"), &u8);
        printf("body        %s%s\n", body[0] ? body : "7BIT",
               u8 ? ", SMTPUTF8" : "");
        if (ret[0] || envid[0])
            printf("dsn         RET=%s ENVID=%s\n", ret[0] ? ret : "-",
                   envid[0] ? envid : "-");
        free(body);
        free(ret);
        free(envid);
    }
    rs = ctl_obj_get(d, "recipients");
    printf("\n");
    ctl_table_init(&t, cols, 7);
    for (size_t i = 0; i < ctl_obj_len(rs) && r == 0; i++) {
        const struct ctl_obj *q = ctl_obj_at(rs, i);
        char rc[16], to[600], state[16], route[16], tries[16], next[40];
        char err[600];
        const char *row[7] = {rc, to, state, route, tries, next, err};
        snprintf(rc, sizeof(rc), "%" PRIu64, ctl_u64(q, "rcpt"));
        ctl_field(q, "recipient", to, sizeof(to));
        ctl_field(q, "state", state, sizeof(state));
        ctl_field(q, "route", route, sizeof(route));
        snprintf(tries, sizeof(tries), "%" PRIu64, ctl_u64(q, "attempts"));
        if (strcmp(state, "hold") == 0)
            strcpy(next, "-");
        else
            ctl_next_try(ctl_i64(q, "next_try"), next, sizeof(next));
        ctl_field(q, "last_error", err, sizeof(err));
        ctl_oneline(err);
        if (ctl_table_add(&t, row) != 0) {
            r = ctl_err("out of memory showing %s", id);
            break;
        }
        /* The delivery history under its recipient, oldest first. */
        hist = ctl_obj_get(q, "history");
        for (size_t k = 0; k < ctl_obj_len(hist) && r == 0; k++) {
            const char *p;
            size_t len;
            if (ctl_obj_bytes(ctl_obj_at(hist, k), &p, &len) == 0 &&
                ctl_table_note(&t, "      ", p, len) != 0)
                r = ctl_err("out of memory showing %s", id);
        }
    }
    if (r != 0) {
        ctl_table_cleanup(&t);
        ctl_answer_free(&a);
        return r;
    }
    ctl_table_print(&t, stdout);
    printf("%zu %s\n", ctl_obj_len(rs),
           ctl_plural(ctl_obj_len(rs), "recipient", "recipients"));
    ctl_table_cleanup(&t);
    ctl_answer_free(&a);
    return 0;
}

/* `queue retry ID[.N]` or `queue retry --all`: due now (postqueue -i/-f). */
static int
ctl_do_queue_retry(struct ctl_cli *cli, const char *id)
{
    struct ctl_answer a;
    struct ctl_enc e;
    char what[64];
    uint64_t held, waiting;
    int r;

    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, "queue.retry", 1);
    if (id == NULL)
        ctl_enc_kbool(&e, "all", 1);
    else
        ctl_enc_kstr(&e, "id", id);
    r = ctl_request(cli, &e, &a, "see `relaymesh queue list`");
    ctl_enc_cleanup(&e);
    if (r != 0)
        return r;
    if (cli->json) {
        r = ctl_print_json(a.resp.data);
        ctl_answer_free(&a);
        return r;
    }
    if (id == NULL) {
        printf("all deferred mail scheduled for delivery now\n");
        ctl_answer_free(&a);
        return 0;
    }
    ctl_field(a.resp.data, "id", what, sizeof(what));
    if (what[0] == '\0')
        snprintf(what, sizeof(what), "%s", id);
    held = ctl_u64(a.resp.data, "held");
    waiting = ctl_u64(a.resp.data, "waiting");
    if (held == 0)
        printf("%s scheduled for delivery now\n", what);
    else if (waiting == 0)
        printf("%s is on hold, not scheduled; `relaymesh queue release %s` "
               "sends it on\n",
               what, what);
    else
        printf("%s scheduled for delivery now, but for %" PRIu64
               " %s on hold (`relaymesh queue release %s` sends %s on)\n",
               what, held, ctl_plural(held, "recipient", "recipients"), what,
               ctl_plural(held, "it", "them"));
    ctl_answer_free(&a);
    return 0;
}

/*
 * A duration for --older-than: a number of seconds, or a number with s,
 * m, h or d (30m, 2h, 1d). 0 or -1.
 */
static int
ctl_parse_duration(const char *s, uint64_t *out)
{
    uint64_t v = 0, mul = 1;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    switch (*p) {
    case '\0':
    case 's':
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
        return -1;
    }
    if (*p != '\0' && p[1] != '\0')
        return -1;
    /* 100 years: the node refuses more (ctl_server.c CTL_AGE_MAX). */
    if (v > 100 * 366 * 86400ULL / mul)
        return -1;
    *out = v * mul;
    return 0;
}

/* --domain: a domain name (an address's part after '@'); "@d" is taken
   as d. 0 or -1. */
static int
ctl_check_domain(const char **d)
{
    const char *s = *d;
    size_t n;

    if (s[0] == '@')
        s++;
    n = strlen(s);
    if (n == 0 || n > 253 || strpbrk(s, "@ \t\r\n") != NULL)
        return -1;
    *d = s;
    return 0;
}

/* ---- command line ------------------------------------------------------- */

static int
ctl_is(const struct ctl_cli *cli, size_t i, const char *w)
{
    return i < cli->nwords && strcmp(cli->words[i], w) == 0;
}

/* ---- mesh ------------------------------------------------------------ */

static void
ctl_ago(double t, char *out, size_t outsz)
{
    double now = (double)time(NULL);

    if (t <= 0) {
        snprintf(out, outsz, "-");
        return;
    }
    if (now - t < 1)
        snprintf(out, outsz, "now");
    else {
        char d[32];

        ctl_duration((int64_t)(now - t), d, sizeof(d));
        snprintf(out, outsz, "%s ago", d);
    }
}

static void
ctl_join_list(const struct ctl_obj *arr, char *out, size_t outsz)
{
    size_t off = 0;

    out[0] = '\0';
    for (size_t i = 0; i < ctl_obj_len(arr) && off + 1 < outsz; i++) {
        const char *p;
        size_t len;

        if (ctl_obj_bytes(ctl_obj_at(arr, i), &p, &len) != 0)
            continue;
        off += (size_t)snprintf(out + off, outsz - off, "%s%.*s", i ? "," : "",
                                (int)len, p);
    }
    if (out[0] == '\0')
        snprintf(out, outsz, "-");
}

static void
ctl_print_peers(const struct ctl_obj *peers)
{
    static const struct ctl_col cols[] = {
        {"NAME", 30, 0},     {"STATE", 0, 0},    {"ADDRESS", 40, 0},
        {"LAST SEEN", 0, 0}, {"RTT", 0, 1},      {"INC", 0, 1},
        {"EGRESS", 0, 0},    {"DOMAINS", 40, 0}, {"FINGERPRINT", 0, 0}};
    struct ctl_table t;
    size_t n = ctl_obj_len(peers);

    ctl_table_init(&t, cols, 9);
    for (size_t i = 0; i < n; i++) {
        const struct ctl_obj *p = ctl_obj_at(peers, i);
        char name[80], state[16], addr[300], seen[40], rtt[32], inc[24],
            dom[400], fp[64];
        const char *row[9] = {name, state, addr, seen, rtt, inc, NULL, dom, fp};
        int self = 0, eg = 0;
        double v;

        ctl_obj_bool(ctl_obj_get(p, "self"), &self);
        ctl_obj_bool(ctl_obj_get(p, "egress"), &eg);
        ctl_field(p, "name", name, sizeof(name) - 12);
        if (self)
            strcat(name, " (this)");
        ctl_field(p, "state", state, sizeof(state));
        ctl_join_list(ctl_obj_get(p, "addresses"), addr, sizeof(addr));
        if (self)
            snprintf(seen, sizeof(seen), "-");
        else if (ctl_obj_double(ctl_obj_get(p, "last_contact"), &v) == 0)
            ctl_ago(v, seen, sizeof(seen));
        else
            snprintf(seen, sizeof(seen), "never");
        if (ctl_obj_double(ctl_obj_get(p, "rtt_ms"), &v) == 0)
            snprintf(rtt, sizeof(rtt), "%.1f ms", v);
        else
            snprintf(rtt, sizeof(rtt), "-");
        snprintf(inc, sizeof(inc), "%" PRIu64, ctl_u64(p, "incarnation"));
        row[6] = eg ? "yes" : "no";
        ctl_join_list(ctl_obj_get(p, "domains"), dom, sizeof(dom));
        ctl_field(p, "fingerprint", fp, sizeof(fp));
        ctl_table_add(&t, row);
    }
    ctl_table_print(&t, stdout);
    ctl_table_cleanup(&t);
}

static int
ctl_do_mesh_peers(struct ctl_cli *cli, int status)
{
    struct ctl_answer a;
    struct ctl_enc e;
    const struct ctl_obj *d, *peers;
    int r, member = 0;

    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, status ? "mesh.status" : "mesh.peers", 0);
    r = ctl_request(cli, &e, &a, NULL);
    ctl_enc_cleanup(&e);
    if (r != 0)
        return r;
    d = a.resp.data;
    if (cli->json) {
        r = ctl_print_json(d);
        ctl_answer_free(&a);
        return r;
    }
    peers = ctl_obj_get(d, "peers");
    if (status) {
        const struct ctl_obj *m = ctl_obj_get(d, "mesh");
        char id[40], name[64], exp[32], prof[8];
        int root = 0;

        ctl_obj_bool(ctl_obj_get(m, "member"), &member);
        if (!member) {
            printf("not in a mesh: run `relaymesh mesh create` on the first "
                   "node, or `relaymesh mesh join TOKEN` with a token from "
                   "`relaymesh mesh invite` on a member\n");
            ctl_answer_free(&a);
            return 0;
        }
        ctl_obj_bool(ctl_obj_get(m, "root"), &root);
        ctl_field(m, "mesh", id, sizeof(id));
        ctl_field(m, "name", name, sizeof(name));
        ctl_field(m, "profile", prof, sizeof(prof));
        ctl_time(ctl_i64(m, "expires"), exp, sizeof(exp));
        printf("mesh        %s\n", id);
        printf("this node   %s%s, %s profile\n", name,
               root ? " (the mesh's first node)" : "", prof);
        printf("membership  valid until %s (renewed automatically at "
               "half-life)\n",
               exp);
        printf("peers       %" PRIu64 " alive, %" PRIu64 " suspect, %" PRIu64
               " dead, %" PRIu64 " left, %" PRIu64 " removed\n",
               ctl_u64(m, "alive"), ctl_u64(m, "suspect"), ctl_u64(m, "dead"),
               ctl_u64(m, "left"), ctl_u64(m, "revoked"));
        printf("health      %" PRIu64 " (0 is good; up to 7: this node's own "
               "probes fail, so it probes slower rather than accuse "
               "others)\n",
               ctl_u64(m, "health"));
        printf("refused     %" PRIu64 " connections (not members, removed, "
               "expired or bad tokens)\n",
               ctl_u64(m, "refused"));
        printf("invites     %" PRIu64 " pending\n", ctl_u64(m, "invites"));
        {
            const struct ctl_obj *rp = ctl_obj_get(m, "replication");
            const struct ctl_obj *lag = ctl_obj_get(rp, "lag");
            printf("replicas    %" PRIu64 " records held (%" PRIu64
                   " tombstones); %" PRIu64 " copies sent, %" PRIu64
                   " acknowledged; %" PRIu64 " taken over, %" PRIu64
                   " stood down\n",
                   ctl_u64(rp, "records"), ctl_u64(rp, "tombstones"),
                   ctl_u64(rp, "sent"), ctl_u64(rp, "acks"),
                   ctl_u64(rp, "takeovers"), ctl_u64(rp, "stood_down"));
            printf("repair      %" PRIu64 " anti-entropy sessions, %" PRIu64
                   " bytes, %" PRIu64 " entries repaired\n",
                   ctl_u64(rp, "antientropy_sessions"),
                   ctl_u64(rp, "antientropy_bytes"),
                   ctl_u64(rp, "antientropy_repaired"));
            if (ctl_u64(rp, "ack_waits") + ctl_u64(rp, "ack_refused") > 0)
                printf(
                    "ack waits   %" PRIu64 " (%" PRIu64 " now): %" PRIu64
                    " held by enough replicas, %" PRIu64 " timed out, %" PRIu64
                    " client gone; %" PRIu64 " refused at once\n",
                    ctl_u64(rp, "ack_waits"), ctl_u64(rp, "ack_waiting"),
                    ctl_u64(rp, "ack_ok"), ctl_u64(rp, "ack_timeouts"),
                    ctl_u64(rp, "ack_cancelled"), ctl_u64(rp, "ack_refused"));
            for (size_t i = 0; i < ctl_obj_len(lag); i++) {
                const struct ctl_obj *q = ctl_obj_at(lag, i);
                char peer[64];
                int synced = 0;
                ctl_field(q, "peer", peer, sizeof(peer));
                ctl_obj_bool(ctl_obj_get(q, "synced"), &synced);
                printf("lag         %s: %" PRIu64 " unacknowledged, oldest "
                       "%" PRIu64 " ms%s\n",
                       peer, ctl_u64(q, "unacked"), ctl_u64(q, "oldest_ms"),
                       synced ? "" : " (not reconciled since start)");
            }
            printf("\n");
        }
    } else {
        ctl_obj_bool(ctl_obj_get(d, "member"), &member);
        if (!member) {
            printf("not in a mesh: run `relaymesh mesh create` or "
                   "`relaymesh mesh join TOKEN`\n");
            ctl_answer_free(&a);
            return 0;
        }
    }
    ctl_print_peers(peers);
    ctl_answer_free(&a);
    return 0;
}

static int
ctl_do_mesh_cmd(struct ctl_cli *cli, const char *cmd, const char *key,
                const char *val)
{
    struct ctl_answer a;
    struct ctl_enc e;
    const struct ctl_obj *d;
    int r;
    size_t nargs = 0;
    uint64_t secs = 0;

    if (strcmp(cmd, "mesh.invite") == 0 && cli->expires != NULL &&
        (ctl_parse_duration(cli->expires, &secs) != 0 || secs == 0)) {
        fprintf(stderr,
                "relaymesh: --expires %s is not a duration; "
                "e.g. 30m, 24h, 7d\n",
                cli->expires);
        return 2;
    }
    nargs = (key != NULL) + (cli->expires != NULL) + (cli->name != NULL);
    ctl_enc_init(&e, 1);
    ctl_enc_request(&e, cmd, nargs);
    if (key != NULL)
        ctl_enc_kstr(&e, key, val);
    if (cli->expires != NULL)
        ctl_enc_ku64(&e, "expires", secs);
    if (cli->name != NULL)
        ctl_enc_kstr(&e, "name", cli->name);
    r = ctl_request(cli, &e, &a, NULL);
    ctl_enc_cleanup(&e);
    if (r != 0)
        return r;
    d = a.resp.data;
    if (cli->json) {
        r = ctl_print_json(d);
        ctl_answer_free(&a);
        return r;
    }
    if (strcmp(cmd, "mesh.invite") == 0) {
        char tok[4096];

        /* The token alone on stdout, so that scripts can capture it. */
        ctl_field(d, "token", tok, sizeof(tok));
        printf("%s\n", tok);
        fprintf(stderr,
                "relaymesh: single-use invite%s%s; on the new node "
                "run: relaymesh mesh join TOKEN\n",
                cli->name ? " for " : "", cli->name ? cli->name : "");
    } else if (strcmp(cmd, "mesh.create") == 0) {
        char id[40], name[64];

        printf("created mesh %s with this node (%s) as its first member; "
               "add nodes with `relaymesh mesh invite`\n",
               ctl_field(d, "mesh", id, sizeof(id)),
               ctl_field(d, "name", name, sizeof(name)));
    } else if (strcmp(cmd, "mesh.join") == 0) {
        char id[40], name[64], inv[64];

        printf("joined mesh %s as %s (admitted by %s); see `relaymesh mesh "
               "peers`\n",
               ctl_field(d, "mesh", id, sizeof(id)),
               ctl_field(d, "name", name, sizeof(name)),
               ctl_field(d, "inviter", inv, sizeof(inv)));
    } else if (strcmp(cmd, "mesh.remove") == 0) {
        char name[64];

        printf("removed %s from the mesh; every peer drops it as the news "
               "spreads\n",
               ctl_field(d, "removed", name, sizeof(name)));
    }
    ctl_answer_free(&a);
    return 0;
}

static int
ctl_run(struct ctl_cli *cli)
{
    const char *const *w = cli->words;
    size_t n = cli->nwords;

    if (ctl_is(cli, 0, "status")) {
        if (n != 1)
            return ctl_usage("status");
        return ctl_connect(cli) ? 1 : ctl_do_status(cli);
    }
    if (ctl_is(cli, 0, "mesh")) {
        if (n == 2 && (ctl_is(cli, 1, "peers") || ctl_is(cli, 1, "status")))
            return ctl_connect(cli)
                       ? 1
                       : ctl_do_mesh_peers(cli, ctl_is(cli, 1, "status"));
        if (n == 2 && ctl_is(cli, 1, "create"))
            return ctl_connect(cli)
                       ? 1
                       : ctl_do_mesh_cmd(cli, "mesh.create", NULL, NULL);
        if (n == 2 && ctl_is(cli, 1, "invite"))
            return ctl_connect(cli)
                       ? 1
                       : ctl_do_mesh_cmd(cli, "mesh.invite", NULL, NULL);
        if (n == 3 && ctl_is(cli, 1, "join"))
            return ctl_connect(cli)
                       ? 1
                       : ctl_do_mesh_cmd(cli, "mesh.join", "token", w[2]);
        if (n == 3 && ctl_is(cli, 1, "remove"))
            return ctl_connect(cli)
                       ? 1
                       : ctl_do_mesh_cmd(cli, "mesh.remove", "node", w[2]);
        return ctl_usage("mesh create | mesh invite [--expires DURATION] "
                         "[--name NAME] | mesh join TOKEN | mesh remove NODE "
                         "| mesh peers | mesh status");
    }
    if (ctl_is(cli, 0, "tls")) {
        if (n != 2 || !ctl_is(cli, 1, "reload"))
            return ctl_usage("tls reload");
        return ctl_connect(cli) ? 1 : ctl_do_tls_reload(cli);
    }
    if (ctl_is(cli, 0, "user")) {
        if (ctl_is(cli, 1, "list")) {
            if (n != 2)
                return ctl_usage("user list");
            return ctl_connect(cli) ? 1 : ctl_do_user_list(cli);
        }
        if (n != 3 || !(ctl_is(cli, 1, "add") || ctl_is(cli, 1, "del") ||
                        ctl_is(cli, 1, "passwd")))
            return ctl_usage("user add|del|passwd ADDRESS | user list");
        if (ctl_connect(cli) != 0)
            return 1;
        if (ctl_is(cli, 1, "add"))
            return ctl_do_user_pw(cli, "user.add", w[2], "added");
        if (ctl_is(cli, 1, "passwd"))
            return ctl_do_user_pw(cli, "user.passwd", w[2],
                                  "has a new password");
        return ctl_do_simple(cli, "user.del", "address", w[2],
                             "user %s deleted (the mailbox is kept)",
                             "see `relaymesh user list`");
    }
    if (ctl_is(cli, 0, "mailbox")) {
        if (ctl_is(cli, 1, "list") && n == 3)
            return ctl_connect(cli) ? 1 : ctl_do_mailbox_list(cli, w[2]);
        if (ctl_is(cli, 1, "cat") && n == 4)
            return ctl_connect(cli) ? 1 : ctl_do_mailbox_cat(cli, w[2], w[3]);
        return ctl_usage("mailbox list ADDRESS | mailbox cat ADDRESS UID");
    }
    if (ctl_is(cli, 0, "queue")) {
        static const char list_usage[] =
            "queue list [--state queued|hold|deferred] [--route local|remote] "
            "[--domain DESTINATION] [--older-than DURATION]  (DURATION: "
            "seconds, or 30m, 2h, 1d)";
        static const struct {
            const char *word, *cmd, *fmt;
        } ops[] = {{"delete", "queue.delete", "%s deleted from the queue"},
                   {"hold", "queue.hold",
                    "%s held; `queue release` sends it "
                    "on"},
                   {"release", "queue.release", "%s released"}};
        if (ctl_is(cli, 1, "list")) {
            if (n != 2)
                return ctl_usage(list_usage);
            if (cli->older_than != NULL &&
                ctl_parse_duration(cli->older_than, &cli->older_secs) != 0) {
                fprintf(stderr,
                        "relaymesh: --older-than %s is not a duration; "
                        "give seconds, or a number with s, m, h or d "
                        "(30m, 2h, 1d)\n",
                        cli->older_than);
                return ctl_usage(list_usage);
            }
            if (cli->domain != NULL && ctl_check_domain(&cli->domain) != 0) {
                fprintf(stderr,
                        "relaymesh: --domain \"%s\" is not a domain like "
                        "example.com\n",
                        cli->domain);
                return ctl_usage(list_usage);
            }
            return ctl_connect(cli) ? 1 : ctl_do_queue_list(cli);
        }
        if (ctl_is(cli, 1, "retry")) {
            if (cli->all ? n != 2 : n != 3)
                return ctl_usage("queue retry ID[.N] | queue retry --all");
            return ctl_connect(cli)
                       ? 1
                       : ctl_do_queue_retry(cli, cli->all ? NULL : w[2]);
        }
        if (ctl_is(cli, 1, "show") && n == 3)
            return ctl_connect(cli) ? 1 : ctl_do_queue_show(cli, w[2]);
        for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
            if (ctl_is(cli, 1, ops[i].word) && n == 3) {
                if (ctl_connect(cli) != 0)
                    return 1;
                return ctl_do_simple(cli, ops[i].cmd, "id", w[2], ops[i].fmt,
                                     "see `relaymesh queue list`");
            }
        }
        return ctl_usage("queue list [--state S] [--route R] [--domain D] "
                         "[--older-than DURATION] | queue "
                         "show|retry|delete|hold|release ID | queue retry "
                         "--all");
    }
    if (n == 0)
        return ctl_usage("COMMAND");
    fprintf(stderr, "relaymesh: unknown command \"%s\"; run `relaymesh help`\n",
            w[0]);
    return 2;
}

int
ctl_main(int argc, char **argv)
{
    struct ctl_cli cli;
    const char *datadir = NULL, *config = NULL;
    int opts_done = 0, r;

    memset(&cli, 0, sizeof(cli));
    cli.fd = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **val = NULL;
        if (!opts_done && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                opts_done = 1;
                continue;
            }
            if (strcmp(a, "--json") == 0) {
                cli.json = 1;
                continue;
            }
            if (strcmp(a, "--all") == 0) {
                cli.all = 1;
                continue;
            }
            if (strcmp(a, "-d") == 0 || strcmp(a, "--datadir") == 0)
                val = &datadir;
            else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
                val = &config;
            else if (strcmp(a, "--state") == 0)
                val = &cli.state;
            else if (strcmp(a, "--route") == 0)
                val = &cli.route;
            else if (strcmp(a, "--domain") == 0)
                val = &cli.domain;
            else if (strcmp(a, "--older-than") == 0)
                val = &cli.older_than;
            else if (strcmp(a, "--expires") == 0)
                val = &cli.expires;
            else if (strcmp(a, "--name") == 0)
                val = &cli.name;
            if (val == NULL) {
                fprintf(stderr,
                        "relaymesh: unknown option %s; run "
                        "`relaymesh help`\n",
                        a);
                return 2;
            }
            if (i + 1 >= argc) {
                fprintf(stderr, "relaymesh: option %s needs a value\n", a);
                return 2;
            }
            *val = argv[++i];
            continue;
        }
        if (cli.nwords == sizeof(cli.words) / sizeof(cli.words[0]))
            return ctl_usage("COMMAND ARGS...  (too many arguments)");
        cli.words[cli.nwords++] = a;
    }
    if (datadir != NULL && config != NULL)
        return ctl_usage("COMMAND  (give -d or -c, not both)");
    if ((cli.state || cli.route || cli.domain || cli.older_than) &&
        !(ctl_is(&cli, 0, "queue") && ctl_is(&cli, 1, "list")))
        return ctl_usage("queue list [--state S] [--route R] [--domain D] "
                         "[--older-than DURATION]  (these options are for "
                         "queue list only)");
    if ((cli.expires || cli.name) &&
        !(ctl_is(&cli, 0, "mesh") && ctl_is(&cli, 1, "invite")))
        return ctl_usage("mesh invite [--expires DURATION] [--name NAME]  "
                         "(these options are for mesh invite only)");
    if (cli.all && !(ctl_is(&cli, 0, "queue") && ctl_is(&cli, 1, "retry")))
        return ctl_usage("queue retry --all  (--all is for queue retry "
                         "only)");
    if (config != NULL) {
        struct node_config cfg;
        char err[512];
        if (node_config_load(&cfg, config, err, sizeof(err)) != 0)
            return ctl_err("%s; fix the config or use -d DATADIR", err);
        snprintf(cli.sockbuf, sizeof(cli.sockbuf), "%s", cfg.control_socket);
        node_config_cleanup(&cfg);
    } else if (datadir != NULL) {
        size_t l = strlen(datadir);
        snprintf(cli.sockbuf, sizeof(cli.sockbuf), "%s%scontrol.sock", datadir,
                 l > 0 && datadir[l - 1] == '/' ? "" : "/");
    } else {
        snprintf(cli.sockbuf, sizeof(cli.sockbuf), "%s", CTL_DEFAULT_SOCKET);
    }
    cli.socket = cli.sockbuf;
    r = ctl_run(&cli);
    if (cli.fd >= 0)
        close(cli.fd);
    if (r == 0 && fflush(stdout) != 0)
        return ctl_err("cannot write to stdout: %s", strerror(errno));
    return r;
}
