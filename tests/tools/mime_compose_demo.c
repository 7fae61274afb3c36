/*
 * mime_compose_demo: node/mime_compose.c from the command line, for
 * integration/test_mime_compose.py (not installed).
 *
 *   mime_compose_demo OUT < spec
 *
 * The spec is one field a line; text values are "x" followed by hex (so
 * any octet, CR and LF included, can be given; "x" alone is empty), "-"
 * is NULL:
 *   from|to|cc|bcc NAME ADDR     attach FILENAME TYPE DATA
 *   subject TEXT   body TEXT     irt TEXT   refs TEXT
 *   date N   domain TEXT   random TEXT (32 octets)   max N
 *   receipt   keepbcc
 * Writes the message to OUT and its Message-ID to stdout; exit 0. A
 * refused message: "error <code> <text>" on stdout, exit 2. A bad spec:
 * exit 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "node/mime_compose.h"

#define DEMO_LIST_MAX (MIME_COMPOSE_RCPTS_MAX + 1)
#define DEMO_ALLOCS_MAX 8192

/* Every value made by demo_value(), freed at exit. */
static char *demo_allocs[DEMO_ALLOCS_MAX];
static size_t demo_nallocs;
static char *demo_line; /* getline()'s buffer */

/* A "x<hex>" value decoded into a new NUL-terminated string (its length
   in *len), NULL for "-". Exits on a malformed value. */
static char *
demo_value(const char *tok, size_t *len)
{
    size_t n;
    char *out;

    if (tok == NULL) {
        fprintf(stderr, "mime_compose_demo: missing value\n");
        exit(1);
    }
    if (strcmp(tok, "-") == 0) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    n = strlen(tok);
    if (tok[0] != 'x' || (n - 1) % 2 != 0) {
        fprintf(stderr, "mime_compose_demo: bad value %s\n", tok);
        exit(1);
    }
    out = malloc((n - 1) / 2 + 1);
    if (out == NULL || demo_nallocs == DEMO_ALLOCS_MAX)
        exit(1);
    demo_allocs[demo_nallocs++] = out; /* freed at exit */
    for (size_t i = 0; i < (n - 1) / 2; i++) {
        unsigned v;

        if (sscanf(tok + 1 + 2 * i, "%2x", &v) != 1) {
            fprintf(stderr, "mime_compose_demo: bad hex\n");
            exit(1);
        }
        out[i] = (char)v;
    }
    out[(n - 1) / 2] = '\0';
    if (len != NULL)
        *len = (n - 1) / 2;
    return out;
}

static void
demo_free_all(void)
{
    while (demo_nallocs > 0)
        free(demo_allocs[--demo_nallocs]);
    free(demo_line);
    demo_line = NULL;
}

static void
demo_addr(struct mime_compose_addr *a, char **save)
{
    a->name = demo_value(strtok_r(NULL, " \n", save), NULL);
    a->addr = demo_value(strtok_r(NULL, " \n", save), NULL);
}

int
main(int argc, char **argv)
{
    static struct mime_compose_addr to[DEMO_LIST_MAX], cc[DEMO_LIST_MAX],
        bcc[DEMO_LIST_MAX];
    static struct mime_compose_attach att[MIME_COMPOSE_ATTACH_MAX + 1];
    static unsigned char rnd[MIME_COMPOSE_RANDOM_LEN];
    struct mime_compose_msg m;
    char msgid[MIME_COMPOSE_MSGID_SIZE];
    size_t cap = 0;
    struct buf out;
    FILE *f;
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: mime_compose_demo OUT < spec\n");
        return 1;
    }
    atexit(demo_free_all);
    memset(&m, 0, sizeof(m));
    m.to = to;
    m.cc = cc;
    m.bcc = bcc;
    m.attach = att;
    m.random = rnd;
    m.date = 1700000000;
    m.msgid_domain = "node.example";
    while (getline(&demo_line, &cap, stdin) > 0) {
        char *save = NULL;
        char *key = strtok_r(demo_line, " \n", &save);

        if (key == NULL)
            continue;
        if (strcmp(key, "from") == 0) {
            demo_addr(&m.from, &save);
        } else if (strcmp(key, "to") == 0 && m.nto < DEMO_LIST_MAX) {
            demo_addr(&to[m.nto++], &save);
        } else if (strcmp(key, "cc") == 0 && m.ncc < DEMO_LIST_MAX) {
            demo_addr(&cc[m.ncc++], &save);
        } else if (strcmp(key, "bcc") == 0 && m.nbcc < DEMO_LIST_MAX) {
            demo_addr(&bcc[m.nbcc++], &save);
        } else if (strcmp(key, "subject") == 0) {
            m.subject = demo_value(strtok_r(NULL, " \n", &save), NULL);
        } else if (strcmp(key, "body") == 0) {
            m.text = demo_value(strtok_r(NULL, " \n", &save), &m.text_len);
        } else if (strcmp(key, "irt") == 0) {
            m.in_reply_to = demo_value(strtok_r(NULL, " \n", &save), NULL);
        } else if (strcmp(key, "refs") == 0) {
            m.references = demo_value(strtok_r(NULL, " \n", &save), NULL);
        } else if (strcmp(key, "domain") == 0) {
            m.msgid_domain = demo_value(strtok_r(NULL, " \n", &save), NULL);
        } else if (strcmp(key, "random") == 0) {
            size_t n;
            char *r = demo_value(strtok_r(NULL, " \n", &save), &n);

            if (r == NULL || n != sizeof(rnd))
                return 1;
            memcpy(rnd, r, n);
        } else if (strcmp(key, "attach") == 0 &&
                   m.nattach < MIME_COMPOSE_ATTACH_MAX + 1) {
            struct mime_compose_attach *a = &att[m.nattach++];

            a->filename = demo_value(strtok_r(NULL, " \n", &save), NULL);
            a->type = demo_value(strtok_r(NULL, " \n", &save), NULL);
            a->data = demo_value(strtok_r(NULL, " \n", &save), &a->len);
        } else if (strcmp(key, "date") == 0) {
            m.date = strtoll(strtok_r(NULL, " \n", &save), NULL, 10);
        } else if (strcmp(key, "max") == 0) {
            m.max_size = strtoull(strtok_r(NULL, " \n", &save), NULL, 10);
        } else if (strcmp(key, "receipt") == 0) {
            m.receipt = 1;
        } else if (strcmp(key, "keepbcc") == 0) {
            m.keep_bcc = 1;
        } else {
            fprintf(stderr, "mime_compose_demo: bad line %s\n", key);
            return 1;
        }
    }

    buf_init(&out, (size_t)256 << 20);
    rc = mime_compose(&m, &out, msgid);
    if (rc != 0) {
        printf("error %d %s\n", rc, rm_strerror(rc));
        buf_cleanup(&out);
        return 2;
    }
    f = fopen(argv[1], "wb");
    if (f == NULL || fwrite(out.data, 1, out.len, f) != out.len ||
        fclose(f) != 0) {
        perror(argv[1]);
        buf_cleanup(&out);
        return 1;
    }
    printf("%s\n", msgid);
    buf_cleanup(&out);
    return 0;
}
