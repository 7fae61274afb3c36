#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "rm_error.h"

/* Process-wide by design (see log.h): set once at start-up. */
static enum log_level log_threshold = LOG_INFO;
static int log_fd = 2;

static const char *const log_names[] = {"error", "warn", "info", "debug"};

void
log_set_level(enum log_level level)
{
    log_threshold = level;
}

enum log_level
log_get_level(void)
{
    return log_threshold;
}

void
log_set_fd(int fd)
{
    log_fd = fd;
}

int
log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
        if (strcmp(s, log_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "err") == 0 || strcmp(s, "warning") == 0) {
        *out = s[0] == 'e' ? LOG_ERR : LOG_WARN;
        return 0;
    }
    return RM_E_INVAL;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    char line[4096];
    struct timeval tv;
    struct tm tm;
    size_t n;
    int r;
    va_list ap;

    if (level > log_threshold)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03dZ %s ",
                 (int)(tv.tv_usec / 1000), log_names[level]);
    if (r > 0)
        n += (size_t)r;
    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (r < 0)
        r = 0;
    n += (size_t)r;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2; /* truncated: still one whole line */
    line[n++] = '\n';
    /* One write per line keeps lines whole across threads. */
    if (write(log_fd, line, n) < 0) {
        /* Nowhere left to report it. */
    }
}

const char *
log_quote(char *out, size_t outsz, const char *s, size_t len)
{
    size_t o = 0;

    if (outsz < 3) {
        if (outsz)
            out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    for (size_t i = 0; i < len && o + 5 < outsz; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}
