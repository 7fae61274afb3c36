/*
 * Fuzz the stored-message reader (node/mime_parse.c): the input is one
 * message as it would sit in a mailbox. It is parsed, then the body and
 * every attachment are read back through the ranged readers, and the
 * invariants are checked with abort():
 *   - only an empty input is refused;
 *   - every string is valid UTF-8 without NUL and within its bound; the
 *     counts are within theirs; types are lower case;
 *   - the body is body_len octets of valid UTF-8 without NUL and reads
 *     back the same in chunks;
 *   - each attachment decodes to exactly its size, a range of it to the
 *     same octets as the whole, and an index past the end is refused;
 *   - the header text is valid UTF-8 within its limit;
 *   - the header block lies inside the input.
 * ASan catches reads out of bounds and leaks.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "node/mime_compose.h"
#include "node/mime_parse.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

static void
check_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t k;

        CHECK(p[i] != 0);
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        k = mime_compose_utf8_len(p + i, n - i);
        CHECK(k > 0);
        i += k;
    }
}

static void
check_str(const char *s, size_t max)
{
    size_t n;

    CHECK(s != NULL);
    n = strnlen(s, max + 1);
    CHECK(n <= max);
    check_utf8(s, n);
}

static void
check_addrs(const struct mime_parse_addr *v, unsigned n)
{
    CHECK(n == 0 || v != NULL);
    for (unsigned i = 0; i < n; i++) {
        check_str(v[i].name, MIME_PARSE_NAME_MAX);
        check_str(v[i].address, MIME_PARSE_ADDR_MAX);
    }
}

struct fz_acc {
    struct buf *all;
};

static int
fz_sink(void *arg, const void *data, size_t len)
{
    struct fz_acc *a = arg;

    CHECK(len > 0 && len <= 4096);
    return buf_append(a->all, data, len) == 0 ? 0 : 1;
}

static void
check_att(const struct mime_parse_msg *m, unsigned i)
{
    const struct mime_parse_att *a = &m->atts[i];
    struct buf all, part;
    struct fz_acc acc;
    uint64_t off, max;

    CHECK(a->index == i);
    check_str(a->name, MIME_PARSE_FILENAME_MAX);
    check_str(a->type, MIME_PARSE_TYPE_MAX);
    CHECK(a->type[0] != '\0');
    for (const char *p = a->type; *p != '\0'; p++)
        CHECK(!(*p >= 'A' && *p <= 'Z'));
    buf_init(&all, (size_t)1 << 30);
    acc.all = &all;
    CHECK(mime_parse_att_decode(m, i, 0, UINT64_MAX, fz_sink, &acc) == 0);
    CHECK(all.len == a->size);
    /* A range in the middle is the same octets as in the whole. */
    off = a->size / 3;
    max = a->size / 2 + 1;
    buf_init(&part, (size_t)1 << 30);
    CHECK(mime_parse_att_read(m, i, off, (size_t)max, &part) == 0);
    CHECK(part.len == (a->size - off < max ? a->size - off : max));
    CHECK(part.len == 0 || memcmp(part.data, all.data + off, part.len) == 0);
    buf_cleanup(&part);
    buf_cleanup(&all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mime_parse_msg m;
    struct buf b;
    int rc;

    rc = mime_parse(data, size, &m);
    if (size == 0) {
        CHECK(rc == RM_E_INVAL && m.why[0] != '\0');
        mime_parse_cleanup(&m);
        return 0;
    }
    if (rc == -ENOMEM)
        return 0;
    CHECK(rc == 0);
    CHECK(strnlen(m.why, sizeof(m.why)) < sizeof(m.why));
    check_str(m.from.name, MIME_PARSE_NAME_MAX);
    check_str(m.from.address, MIME_PARSE_ADDR_MAX);
    CHECK(m.n_to + m.n_cc + m.n_bcc <= MIME_PARSE_RCPTS_MAX);
    check_addrs(m.to, m.n_to);
    check_addrs(m.cc, m.n_cc);
    check_addrs(m.bcc, m.n_bcc);
    check_str(m.subject, MIME_PARSE_SUBJECT_MAX);
    check_str(m.message_id, MIME_PARSE_MSGID_MAX);
    CHECK(m.hdr_off <= size && m.hdr_len <= size - m.hdr_off);
    CHECK(m.body != NULL && strlen(m.body) == m.body_len);
    check_utf8(m.body, m.body_len);
    /* A message the size of the input cannot give more text than three
       octets (U+FFFD) for each of its octets. */
    CHECK(m.body_len <= 3 * size);

    buf_init(&b, (size_t)1 << 30);
    for (uint64_t off = 0; off < m.body_len; off += 1000)
        CHECK(mime_parse_body_read(&m, off, 1000, &b) == 0);
    CHECK(b.len == m.body_len);
    CHECK(b.len == 0 || memcmp(b.data, m.body, b.len) == 0);
    buf_cleanup(&b);

    buf_init(&b, 64 * 1024);
    CHECK(mime_parse_headers_text(&m, 64 * 1024, &b) == 0);
    check_utf8(b.data != NULL ? b.data : "", b.len);
    buf_cleanup(&b);

    CHECK(m.n_atts <= MIME_PARSE_ATTS_MAX);
    for (unsigned i = 0; i < m.n_atts; i++)
        check_att(&m, i);
    buf_init(&b, 16);
    CHECK(mime_parse_att_read(&m, m.n_atts, 0, 1, &b) == RM_E_NOTFOUND);
    buf_cleanup(&b);
    mime_parse_cleanup(&m);
    return 0;
}
