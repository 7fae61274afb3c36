/*
 * Logging: one line per event, "key=value" pairs, to stderr.
 *
 * Every line starts with a timestamp, the level and an event name:
 *   2026-11-28T13:00:00.123Z info event=smtp.accept sid=3f2a addr=127.0.0.1
 * Values that contain spaces or quotes must be quoted by the caller with
 * log_quote(). The level and sink are process-wide: logging is the one
 * piece of state every module shares; it is set once at start-up.
 * Thread-safe: each line is written with a single write(2).
 */
#ifndef RM_LOG_H
#define RM_LOG_H

#include <stddef.h>

enum log_level { LOG_ERR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Set the threshold; lines above it are dropped. Default LOG_INFO. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "error", "warn", "info", "debug"; returns 0 or RM_E_INVAL. */
int log_level_parse(const char *s, enum log_level *out);
/* Send log lines to fd instead of stderr (2). */
void log_set_fd(int fd);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/*
 * Quote s for use as a log value: wraps it in double quotes and escapes
 * quotes, backslashes and control bytes; truncates to fit. Returns out.
 */
const char *log_quote(char *out, size_t outsz, const char *s, size_t len);

#endif
