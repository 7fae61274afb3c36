/*
 * Fuzz the SMTP client's reply parser (node/smtpc_reply.c): the input is
 * a server's byte stream, cut into lines at LF (a CR before it dropped)
 * the way smtp_client.c does, each line fed to smtpc_reply_line(), in
 * plain and in EHLO mode. Invariants are checked with abort(): the
 * reply text stays NUL-terminated and free of control bytes, the
 * enhanced code is well formed and of the reply's class, limits hold.
 * The first input byte picks the mode, so a corpus file can aim at
 * either.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/rm_error.h"
#include "node/smtp_client.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

static void
check_reply(const struct smtpc_reply_parser *p, const struct smtpc_reply *r)
{
    size_t n = strnlen(r->text, sizeof(r->text));
    size_t e = strnlen(r->enh, sizeof(r->enh));

    CHECK(n < sizeof(r->text));
    CHECK(e < sizeof(r->enh));
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)r->text[i];
        CHECK(ch >= 0x20 && ch != 0x7f);
    }
    CHECK(p->lines <= SMTPC_REPLY_LINES_MAX);
    if (p->lines > 0) {
        CHECK(r->code >= 200 && r->code <= 559);
        CHECK(r->code == p->code);
    }
    if (e > 0) {
        /* class.subject.detail, RFC 3463 §2, same class as the code */
        unsigned dots = 0;
        CHECK(e >= 5 && e <= 9);
        CHECK(r->enh[0] == (char)('0' + r->code / 100));
        for (size_t i = 0; i < e; i++) {
            if (r->enh[i] == '.')
                dots++;
            else
                CHECK(r->enh[i] >= '0' && r->enh[i] <= '9');
        }
        CHECK(dots == 2);
    }
    if (!p->ehlo)
        CHECK(p->ext == 0 && p->size_max == 0);
    if (p->size_max != 0)
        CHECK(p->ext & SMTPC_EXT_SIZE);
}

static void
run(const char *data, size_t size, int ehlo)
{
    struct smtpc_reply_parser p;
    struct smtpc_reply r;
    size_t pos = 0;
    int need_init = 1;

    while (pos < size) {
        const char *lf = memchr(data + pos, '\n', size - pos);
        size_t len = lf ? (size_t)(lf - (data + pos)) : size - pos;
        size_t next = pos + len + (lf ? 1 : 0);
        int rc;

        if (len > 0 && data[pos + len - 1] == '\r')
            len--;
        if (need_init) {
            smtpc_reply_parser_init(&p, &r, ehlo);
            need_init = 0;
        }
        rc = smtpc_reply_line(&p, data + pos, len);
        CHECK(rc == 0 || rc == 1 || rc == RM_E_PROTO);
        check_reply(&p, &r);
        if (rc == 1) {
            CHECK(len == 3 || data[pos + 3] == ' ');
            need_init = 1;
        } else if (rc == 0) {
            CHECK(len >= 4 && data[pos + 3] == '-');
        } else {
            need_init = 1; /* the client gives up the connection */
        }
        pos = next;
    }
    /* a NULL reply is allowed too (keywords only) */
    smtpc_reply_parser_init(&p, NULL, ehlo);
    (void)smtpc_reply_line(&p, data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy;

    if (size == 0)
        return 0;
    /* exact-size copy so that ASan sees any read past the end */
    copy = malloc(size - 1 ? size - 1 : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data + 1, size - 1);
    run(copy, size - 1, data[0] & 1);
    free(copy);
    return 0;
}
