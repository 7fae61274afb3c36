/*
 * Fuzz node/mime_compose.c with arbitrary field contents. The composer
 * parses its input (addresses, msg-ids, types, UTF-8), so any octets go
 * in; what comes out must hold the invariants whatever went in:
 *   - refused (RM_E_INVAL / RM_E_TOOBIG) with the buffer untouched, or
 *   - every line CRLF-terminated, at most 998 octets, 7-bit;
 *   - every header line is one of the fields we write or a continuation
 *     (SP first): no injected header line;
 *   - no Bcc unless asked.
 * Input: a flags octet, then fields separated by NUL: subject, from
 * name, from address, to name, to address, bcc address, body, file name,
 * type ("" = guess), in-reply-to, references, attachment data (the rest).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/rm_error.h"
#include "node/mime_compose.h"

#define NFIELDS 12

static const char *const fields[] = {"Date:",
                                     "From:",
                                     "To:",
                                     "Cc:",
                                     "Bcc:",
                                     "Subject:",
                                     "Message-ID:",
                                     "In-Reply-To:",
                                     "References:",
                                     "Disposition-Notification-To:",
                                     "MIME-Version:",
                                     "Content-Type:",
                                     "Content-Transfer-Encoding:"};

static void
check(const struct buf *b, int keep_bcc)
{
    size_t i = 0;
    int in_hdr = 1;

    if (b->len < 2 || memcmp(b->data + b->len - 2, "\r\n", 2) != 0)
        abort();
    while (i < b->len) {
        const char *l = b->data + i;
        const char *eol = memmem(l, b->len - i, "\r\n", 2);
        size_t n;

        if (eol == NULL)
            abort();
        n = (size_t)(eol - l);
        if (n > 998 || memchr(l, '\n', n) != NULL || memchr(l, '\r', n) != NULL)
            abort();
        for (size_t k = 0; k < n; k++) {
            if ((unsigned char)l[k] >= 0x80 || l[k] == '\0')
                abort();
        }
        if (in_hdr && n == 0) {
            in_hdr = 0;
        } else if (in_hdr && l[0] != ' ') {
            int known = 0;

            for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
                size_t fl = strlen(fields[f]);

                if (n >= fl && memcmp(l, fields[f], fl) == 0)
                    known = 1;
            }
            if (!known || (!keep_bcc && memcmp(l, "Bcc:", 4) == 0))
                abort();
        }
        i += n + 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned char rnd[MIME_COMPOSE_RANDOM_LEN] = {1, 2, 3};
    char *f[NFIELDS];
    size_t flen[NFIELDS];
    struct mime_compose_addr to, bcc;
    struct mime_compose_attach att;
    struct mime_compose_msg m;
    unsigned flags;
    size_t pos = 1;
    struct buf b;
    int rc;

    if (size < 1 || size > 65536)
        return 0;
    flags = data[0];
    for (int i = 0; i < NFIELDS; i++) {
        const uint8_t *end = i < NFIELDS - 1 && pos < size
                                 ? memchr(data + pos, 0, size - pos)
                                 : NULL;
        size_t n = end != NULL  ? (size_t)(end - (data + pos))
                   : pos < size ? size - pos
                                : 0;

        f[i] = malloc(n + 1);
        if (f[i] == NULL)
            abort();
        if (n > 0)
            memcpy(f[i], data + pos, n);
        f[i][n] = '\0';
        flen[i] = n;
        pos += n + (end != NULL ? 1 : 0);
        if (end == NULL)
            pos = size;
    }

    memset(&m, 0, sizeof(m));
    m.subject = f[0];
    m.from.name = f[1];
    m.from.addr = f[2];
    to.name = f[3];
    to.addr = f[4];
    bcc.name = NULL;
    bcc.addr = f[5];
    m.to = &to;
    m.nto = 1;
    m.bcc = &bcc;
    m.nbcc = (flags & 1) ? 1 : 0;
    m.keep_bcc = (flags & 2) != 0;
    m.receipt = (flags & 4) != 0;
    m.text = f[6];
    m.text_len = flen[6];
    att.filename = f[7];
    att.type = flen[8] > 0 ? f[8] : NULL;
    att.data = f[11];
    att.len = flen[11];
    m.attach = &att;
    m.nattach = (flags & 8) ? 1 : 0;
    m.in_reply_to = flen[9] > 0 ? f[9] : NULL;
    m.references = flen[10] > 0 ? f[10] : NULL;
    m.date = 1700000000;
    m.msgid_domain = "fuzz.example";
    m.random = rnd;
    m.max_size = (flags & 16) ? 4096 : 0;

    buf_init(&b, 1 << 22);
    rc = mime_compose(&m, &b, NULL);
    if (rc == 0)
        check(&b, m.keep_bcc);
    else if (b.len != 0 || (rc != RM_E_INVAL && rc != RM_E_TOOBIG))
        abort();
    buf_cleanup(&b);
    for (int i = 0; i < NFIELDS; i++)
        free(f[i]);
    return 0;
}
