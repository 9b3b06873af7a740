/* log.h - leveled, structured log lines (logfmt) for both planes.
 *
 * One line per call, written with a single write(2) so that lines from
 * different threads never interleave: `ts=... level=info msg="..." k=v`.
 * Library code logs at debug at most; the caller logs failures once.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* Process-wide settings; call before starting threads. Default: info, fd 2. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_set_fd(int fd);
/* "debug", "info", "warn", "error" -> 0 and *out; -EINVAL otherwise. */
int log_level_parse(const char *name, enum log_level *out);

/* `msg` is always quoted and escaped; `fields` is a printf format for the
 * remaining logfmt fields (may be NULL), e.g. "ruleset=%s version=%lu".
 * Use log_quote() for user-supplied values inside fields. A line longer
 * than 4096 bytes is cut and ends in ` truncated=true`. errno is kept. */
void log_write(enum log_level level, const char *msg, const char *fields, ...)
	__attribute__((format(printf, 3, 4)));
void log_vwrite(enum log_level level, const char *msg, const char *fields, va_list ap);

/* Writes `s` as a logfmt value into buf: bare when safe, otherwise quoted
 * with \" \\ \n \t and \xNN escapes. Always NUL-terminates; returns buf.
 * Bare means non-empty and only [A-Za-z0-9._:/@+-]; \r is escaped too, and
 * \xNN (lower-case hex) covers other bytes < 0x20 and 0x7f. A value that
 * does not fit is cut (never inside an escape) and a quoted one stays
 * closed (with len < 3 there is no room for quotes: the result is empty).
 * NULL is quoted as "". */
const char *log_quote(const char *s, char *buf, size_t len);

#define log_debug(msg, ...) \
	do { if (log_get_level() <= LOG_LEVEL_DEBUG) log_write(LOG_LEVEL_DEBUG, msg, __VA_ARGS__); } while (0)
#define log_info(msg, ...) log_write(LOG_LEVEL_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_write(LOG_LEVEL_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_write(LOG_LEVEL_ERROR, msg, __VA_ARGS__)

#endif
