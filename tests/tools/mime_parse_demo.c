/*
 * mime_parse_demo: node/mime_parse.c from the command line, for
 * integration/test_mime_parse.py and for looking at a message by hand
 * (not installed).
 *
 *   mime_parse_demo [-d DIR] [-c CHUNK] FILE
 *
 * Prints the parse of FILE as one JSON object on stdout: from, to, cc,
 * bcc ({"name", "address"}), subject, date, message_id, hdr_off,
 * hdr_len, headers (mime_parse_headers_text, at most 64 KiB), body,
 * body_size, flags, why, attachments ({"index", "name", "type",
 * "size"}). The body is read back with mime_parse_body_read() and every
 * attachment decoded with mime_parse_att_read() in CHUNK-octet ranges
 * (default 65536); with -d each attachment is written to DIR/att-INDEX.
 * A chunked read that disagrees with the parse (length, body bytes)
 * exits 3. A refused input: {"error": code, "why": text}, exit 2. Bad
 * usage or I/O: exit 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "node/mime_parse.h"

#define DEMO_HEADERS_MAX (64 * 1024)

static void
demo_str(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7F)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void
demo_cstr(const char *s)
{
    demo_str(s, strlen(s));
}

static void
demo_addrs(const char *key, const struct mime_parse_addr *v, unsigned n)
{
    printf(", \"%s\": [", key);
    for (unsigned i = 0; i < n; i++) {
        printf("%s{\"name\": ", i > 0 ? ", " : "");
        demo_cstr(v[i].name);
        printf(", \"address\": ");
        demo_cstr(v[i].address);
        putchar('}');
    }
    putchar(']');
}

static int
demo_read_file(const char *path, struct buf *in)
{
    FILE *f = fopen(path, "rb");
    char tmp[65536];
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "mime_parse_demo: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
        if (buf_append(in, tmp, n) != 0) {
            fclose(f);
            fprintf(stderr, "mime_parse_demo: %s: too large\n", path);
            return -1;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, "mime_parse_demo: %s: read error\n", path);
        fclose(f);
        return -1;
    }
    fclose(f);
    return 0;
}

/* Attachment i in chunks; to DIR/att-i when dir is not NULL. 0, 3 when
   the decoded length is not the size the parse gave, 1 on I/O. */
static int
demo_att(const struct mime_parse_msg *m, unsigned i, size_t chunk,
         const char *dir)
{
    struct buf b;
    uint64_t off = 0;
    FILE *f = NULL;
    int rc = 0;

    if (dir != NULL) {
        char path[4096];

        snprintf(path, sizeof(path), "%s/att-%u", dir, i);
        f = fopen(path, "wb");
        if (f == NULL) {
            fprintf(stderr, "mime_parse_demo: %s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    buf_init(&b, chunk);
    for (;;) {
        buf_reset(&b);
        if (mime_parse_att_read(m, i, off, chunk, &b) != 0) {
            rc = 1;
            break;
        }
        if (b.len == 0)
            break;
        if (f != NULL && fwrite(b.data, 1, b.len, f) != b.len) {
            rc = 1;
            break;
        }
        off += b.len;
    }
    buf_cleanup(&b);
    if (f != NULL && fclose(f) != 0)
        rc = 1;
    if (rc == 0 && off != m->atts[i].size) {
        fprintf(stderr,
                "mime_parse_demo: attachment %u: %llu octets read, "
                "size %llu\n",
                i, (unsigned long long)off,
                (unsigned long long)m->atts[i].size);
        rc = 3;
    }
    return rc;
}

/* The body read back in chunks must be the body. */
static int
demo_body_check(const struct mime_parse_msg *m, size_t chunk)
{
    struct buf all, b;
    uint64_t off = 0;
    int rc = 0;

    buf_init(&all, m->body_len + 1);
    buf_init(&b, chunk);
    for (;;) {
        buf_reset(&b);
        if (mime_parse_body_read(m, off, chunk, &b) != 0) {
            rc = 1;
            break;
        }
        if (b.len == 0)
            break;
        if (buf_append(&all, b.data, b.len) != 0) {
            rc = 3;
            break;
        }
        off += b.len;
    }
    if (rc == 0 && (all.len != m->body_len ||
                    (all.len > 0 && memcmp(all.data, m->body, all.len) != 0)))
        rc = 3;
    buf_cleanup(&all);
    buf_cleanup(&b);
    return rc;
}

int
main(int argc, char **argv)
{
    const char *dir = NULL, *path = NULL;
    size_t chunk = 65536;
    struct buf in, hdr;
    struct mime_parse_msg m;
    int rc, i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-d") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            chunk = strtoul(argv[++i], NULL, 10);
        } else if (path == NULL && argv[i][0] != '-') {
            path = argv[i];
        } else {
            path = NULL;
            break;
        }
    }
    if (path == NULL || chunk == 0) {
        fprintf(stderr, "usage: mime_parse_demo [-d DIR] [-c CHUNK] FILE\n");
        return 1;
    }
    buf_init(&in, (size_t)1 << 32);
    if (demo_read_file(path, &in) != 0) {
        buf_cleanup(&in);
        return 1;
    }
    rc = mime_parse(in.data, in.len, &m);
    if (rc != 0) {
        printf("{\"error\": %d, \"why\": ", rc);
        demo_cstr(m.why);
        printf("}\n");
        buf_cleanup(&in);
        return 2;
    }
    printf("{\"from\": {\"name\": ");
    demo_cstr(m.from.name);
    printf(", \"address\": ");
    demo_cstr(m.from.address);
    putchar('}');
    demo_addrs("to", m.to, m.n_to);
    demo_addrs("cc", m.cc, m.n_cc);
    demo_addrs("bcc", m.bcc, m.n_bcc);
    printf(", \"subject\": ");
    demo_cstr(m.subject);
    printf(", \"date\": %lld, \"message_id\": ", (long long)m.date);
    demo_cstr(m.message_id);
    printf(", \"hdr_off\": %zu, \"hdr_len\": %zu, \"headers\": ", m.hdr_off,
           m.hdr_len);
    buf_init(&hdr, DEMO_HEADERS_MAX);
    if (mime_parse_headers_text(&m, DEMO_HEADERS_MAX, &hdr) != 0) {
        rc = 1;
    }
    demo_str(hdr.data != NULL ? hdr.data : "", hdr.len);
    buf_cleanup(&hdr);
    printf(", \"body\": ");
    demo_str(m.body, m.body_len);
    printf(", \"body_size\": %zu, \"flags\": %u, \"why\": ", m.body_len,
           m.flags);
    demo_cstr(m.why);
    printf(", \"attachments\": [");
    for (unsigned k = 0; k < m.n_atts; k++) {
        const struct mime_parse_att *a = &m.atts[k];

        printf("%s{\"index\": %u, \"name\": ", k > 0 ? ", " : "", a->index);
        demo_cstr(a->name);
        printf(", \"type\": ");
        demo_cstr(a->type);
        printf(", \"size\": %llu}", (unsigned long long)a->size);
    }
    printf("]}\n");
    if (rc == 0)
        rc = demo_body_check(&m, chunk);
    for (unsigned k = 0; k < m.n_atts && rc == 0; k++)
        rc = demo_att(&m, k, chunk, dir);
    mime_parse_cleanup(&m);
    buf_cleanup(&in);
    return rc;
}
