/*
 * Fuzz the command side of smtp_parse: the input is a client's byte
 * stream. It is cut into lines twice, once in one go and once appended
 * to a session-like buffer in pseudo-random pieces (seeded from the
 * input), and the two event sequences must match. Every line goes
 * through smtp_cmd_parse (with and without SMTPUTF8) and the parameter
 * helpers; invariants are checked with abort().
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node/smtp_parse.h"

#define LINE_MAX_TEST 512 /* RFC 5321 §4.5.3.1.4 */
#define PIECE_MAX 300

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            abort();                                                           \
    } while (0)

static uint32_t
rng_next(uint32_t *s)
{
    /* xorshift32: deterministic, seeded by the input */
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x ? x : 0x9e3779b9u;
    return *s;
}

static int
in_range(struct smtp_slice s, const char *base, size_t len)
{
    if (s.len == 0)
        return 1;
    return s.p >= base && s.p + s.len <= base + len;
}

static int
is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static void
check_cmd(const char *line, size_t len)
{
    struct smtp_cmd a, b;
    enum smtp_perr ea = smtp_cmd_parse(line, len, 0, &a);
    enum smtp_perr eb = smtp_cmd_parse(line, len, 1, &b);

    CHECK(ea <= SMTP_PERR_UTF8 && eb <= SMTP_PERR_UTF8);
    CHECK(smtp_perr_text(ea) != NULL);
    CHECK(smtp_verb_name(a.verb) != NULL);
    CHECK(a.verb == b.verb);
    CHECK(in_range(a.verb_word, line, len));
    CHECK(in_range(a.arg, line, len));
    CHECK(a.arg.len == 0 || a.arg.p[a.arg.len - 1] != ' ');
    CHECK(a.nparams <= SMTP_PARAMS_MAX);
    CHECK(b.nparams <= SMTP_PARAMS_MAX);
    /* whatever parses without SMTPUTF8 parses the same with it */
    if (ea == SMTP_PERR_OK) {
        CHECK(eb == SMTP_PERR_OK);
        CHECK(a.path.len == b.path.len && a.nparams == b.nparams);
        CHECK(a.path_utf8 == 0);
    }
    if (eb == SMTP_PERR_UTF8)
        abort(); /* with utf8_ok that error is never given */
    for (size_t k = 0; k < len; k++) {
        if (is_ctl((unsigned char)line[k])) {
            CHECK(ea == SMTP_PERR_SYNTAX && eb == SMTP_PERR_SYNTAX);
            break;
        }
    }
    if (eb != SMTP_PERR_OK)
        return;
    if (b.verb != SMTP_V_MAIL && b.verb != SMTP_V_RCPT) {
        CHECK(b.path.len == 0 && b.nparams == 0 && !b.null_path);
    } else {
        CHECK(in_range(b.path, line, len));
        /* §4.5.3.1.3: "<" path ">" is at most 256 */
        CHECK(b.path.len + 2 <= 256);
        if (b.null_path)
            CHECK(b.path.len == 0 && b.verb == SMTP_V_MAIL);
        else
            CHECK(b.path.len > 0);
        for (size_t k = 0; k < b.path.len; k++) {
            unsigned char c = (unsigned char)b.path.p[k];
            /* '<' and '>' may appear inside a quoted local part */
            CHECK(!is_ctl(c));
            if (c >= 0x80)
                CHECK(b.path_utf8);
        }
    }
    for (size_t i = 0; i < b.nparams; i++) {
        struct smtp_slice v = b.params[i].value;
        uint64_t n;
        unsigned bits;

        CHECK(in_range(b.params[i].key, line, len));
        CHECK(b.params[i].key.len > 0);
        CHECK(in_range(v, line, len));
        CHECK((v.p == NULL) == (v.len == 0));
        for (size_t k = 0; k < v.len; k++)
            CHECK(v.p[k] != ' ' && v.p[k] != '=');
        for (size_t j = 0; j < i; j++) {
            struct smtp_slice kj = b.params[j].key;
            char tmp[64];
            if (kj.len < sizeof(tmp) && kj.len == b.params[i].key.len) {
                memcpy(tmp, kj.p, kj.len);
                tmp[kj.len] = '\0';
                CHECK(!smtp_slice_eq(b.params[i].key, tmp));
            }
        }
        if (smtp_param_size(v, &n) == 0)
            CHECK(v.len >= 1 && v.len <= 20);
        if (smtp_param_notify(v, &bits) == 0)
            CHECK(bits != 0 && bits < 16 && (bits == 1 || !(bits & 1)));
        if (smtp_param_xtext_ok(v) == 0) {
            for (size_t k = 0; k < v.len; k++)
                CHECK((unsigned char)v.p[k] >= 33 &&
                      (unsigned char)v.p[k] <= 126);
        }
        (void)smtp_param_orcpt_ok(v);
    }
    if (b.verb == SMTP_V_BDAT) {
        uint64_t n;
        int last = -1;
        if (smtp_bdat_arg(b.arg, &n, &last) == 0)
            CHECK(last == 0 || last == 1);
    }
}

/* One event of the line tokenizer, hashed so that runs can be compared. */
struct trace {
    uint64_t hash;
    size_t events;
};

static void
trace_add(struct trace *t, enum smtp_tok tok, const char *p, size_t n)
{
    uint64_t h = t->hash ^ (uint64_t)tok;
    h *= 0x100000001b3ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    h ^= n;
    h *= 0x100000001b3ull;
    t->hash = h;
    t->events++;
}

/* Drain complete lines from buf[0..*have); checks the tokenizer's
   promises about *used and the slices. */
static void
drain(struct smtp_line_state *ls, char *buf, size_t *have, struct trace *t,
      int parse)
{
    for (;;) {
        struct smtp_slice line;
        size_t used = (size_t)-1;
        int was_discarding = ls->discarding;
        enum smtp_tok tok = smtp_line_next(ls, buf, *have, &line, &used);

        CHECK(used <= *have);
        switch (tok) {
        case SMTP_TOK_AGAIN:
            if (ls->discarding)
                CHECK(used == *have);
            else
                CHECK(used == 0 && *have < ls->max &&
                      memchr(buf, '\n', *have) == NULL);
            break;
        case SMTP_TOK_LINE:
            CHECK(!was_discarding);
            CHECK(line.p == buf && line.len + 2 == used);
            CHECK(used <= ls->max);
            CHECK(buf[used - 1] == '\n' && buf[used - 2] == '\r');
            CHECK(memchr(line.p, '\n', line.len) == NULL);
            trace_add(t, tok, line.p, line.len);
            if (parse)
                check_cmd(line.p, line.len);
            break;
        case SMTP_TOK_TOOLONG:
            CHECK(used >= 1 && buf[used - 1] == '\n');
            CHECK(memchr(buf, '\n', used - 1) == NULL);
            CHECK(was_discarding || used > ls->max);
            CHECK(!ls->discarding);
            trace_add(t, tok, NULL, 0);
            break;
        case SMTP_TOK_BARELF:
            CHECK(used >= 1 && used <= ls->max && buf[used - 1] == '\n');
            CHECK(used == 1 || buf[used - 2] != '\r');
            CHECK(memchr(buf, '\n', used - 1) == NULL);
            trace_add(t, tok, NULL, 0);
            break;
        }
        memmove(buf, buf + used, *have - used);
        *have -= used;
        if (tok == SMTP_TOK_AGAIN)
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char buf[LINE_MAX_TEST + PIECE_MAX];
    struct smtp_line_state ls;
    struct trace whole = {0xcbf29ce484222325ull, 0};
    struct trace parts = {0xcbf29ce484222325ull, 0};
    uint32_t seed = 2166136261u;
    size_t off = 0, have = 0;
    char *copy;

    /* exact-size copy so that ASan sees any read past the end */
    copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 16777619u;

    /* the whole stream at once (the tokenizer only ever sees its prefix
       up to the next line) */
    smtp_line_init(&ls, LINE_MAX_TEST);
    {
        size_t pos = 0;
        for (;;) {
            struct smtp_slice line;
            size_t used;
            enum smtp_tok tok =
                smtp_line_next(&ls, copy + pos, size - pos, &line, &used);
            CHECK(used <= size - pos);
            if (tok == SMTP_TOK_LINE)
                trace_add(&whole, tok, line.p, line.len);
            else if (tok != SMTP_TOK_AGAIN)
                trace_add(&whole, tok, NULL, 0);
            pos += used;
            if (tok == SMTP_TOK_AGAIN)
                break;
        }
    }

    /* the same stream in random pieces, like reads off a socket */
    smtp_line_init(&ls, LINE_MAX_TEST);
    while (off < size) {
        size_t n = 1 + rng_next(&seed) % PIECE_MAX;
        if (n > size - off)
            n = size - off;
        memcpy(buf + have, copy + off, n);
        have += n;
        off += n;
        drain(&ls, buf, &have, &parts, 1);
        CHECK(ls.discarding ? have == 0 : have < LINE_MAX_TEST);
    }
    CHECK(whole.events == parts.events && whole.hash == parts.hash);

    /* every input is also one command line */
    check_cmd(copy, size);
    free(copy);
    return 0;
}
