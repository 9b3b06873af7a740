/* log.c - logfmt lines, one write(2) each, filtered by a process-wide level.
 *
 * Invariants: a line is built whole in a stack buffer of LOG_LINE_MAX bytes
 * (<= PIPE_BUF, so a pipe never splits it) and always ends in '\n'; a line
 * that does not fit is cut at a character boundary, any open quote is
 * closed and ` truncated=true` is appended. Settings are relaxed atomics.
 */
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

/* Replaces the '\n' of a line that had to be cut. */
static const char truncated_tail[] = " truncated=true\n";

/* Lets the compiler check that `fields` is a printf format here, where it
 * is passed on to vsnprintf. */
void log_vwrite(enum log_level level, const char *msg, const char *fields, va_list ap)
	__attribute__((format(printf, 3, 0)));

static atomic_int log_level_setting = LOG_LEVEL_INFO;
static atomic_int log_fd_setting = 2;

static const char *const level_names[] = {
	[LOG_LEVEL_DEBUG] = "debug",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_ERROR] = "error",
};

void log_set_level(enum log_level level)
{
	assert(level >= LOG_LEVEL_DEBUG && level <= LOG_LEVEL_ERROR);
	atomic_store_explicit(&log_level_setting, (int)level, memory_order_relaxed);
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load_explicit(&log_level_setting, memory_order_relaxed);
}

void log_set_fd(int fd)
{
	atomic_store_explicit(&log_fd_setting, fd, memory_order_relaxed);
}

int log_level_parse(const char *name, enum log_level *out)
{
	if (!name)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

static bool is_bare_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '/' || c == '@' || c == '+' || c == '-';
}

/* The escaped form of one byte inside double quotes; returns its length
 * (1, 2 or 4) and writes it to out. */
static size_t escape_byte(unsigned char c, char out[4])
{
	static const char hex[] = "0123456789abcdef";

	switch (c) {
	case '"': out[0] = '\\'; out[1] = '"'; return 2;
	case '\\': out[0] = '\\'; out[1] = '\\'; return 2;
	case '\n': out[0] = '\\'; out[1] = 'n'; return 2;
	case '\t': out[0] = '\\'; out[1] = 't'; return 2;
	case '\r': out[0] = '\\'; out[1] = 'r'; return 2;
	default:
		break;
	}
	if (c < 0x20 || c == 0x7f) {
		out[0] = '\\';
		out[1] = 'x';
		out[2] = hex[c >> 4];
		out[3] = hex[c & 0xf];
		return 4;
	}
	out[0] = (char)c;
	return 1;
}

/* Writes s quoted into dst[0..cap), never splitting an escape and always
 * leaving room for the closing quote. Returns bytes written (no NUL) and
 * sets *cut when s did not fit. cap must be >= 2. */
static size_t quote_into(const char *s, char *dst, size_t cap, bool *cut)
{
	size_t n = 0;

	*cut = false;
	dst[n++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char esc[4];
		size_t k = escape_byte(*p, esc);

		if (n + k + 1 > cap) {
			*cut = true;
			/* Don't end on half a UTF-8 sequence: drop the
			 * continuation bytes already copied and their lead. */
			if ((*p & 0xc0) == 0x80) {
				while (n > 1 && ((unsigned char)dst[n - 1] & 0xc0) == 0x80)
					n--;
				if (n > 1 && ((unsigned char)dst[n - 1] & 0xc0) == 0xc0)
					n--;
			}
			break;
		}
		memcpy(dst + n, esc, k);
		n += k;
	}
	dst[n++] = '"';
	return n;
}

const char *log_quote(const char *s, char *buf, size_t len)
{
	const unsigned char *p;
	bool bare, cut;
	size_t n;

	if (!buf || len == 0)
		return buf;
	if (!s)
		s = "";
	bare = *s != '\0';
	for (p = (const unsigned char *)s; *p && bare; p++)
		bare = is_bare_char(*p);
	if (bare) {
		n = strlen(s);
		if (n >= len)
			n = len - 1;
		memcpy(buf, s, n);
		buf[n] = '\0';
		return buf;
	}
	if (len < 3) {
		/* No room for even "" plus NUL; an empty result is the only
		 * output that is not a broken value. */
		buf[0] = '\0';
		return buf;
	}
	n = quote_into(s, buf, len - 1, &cut);
	buf[n] = '\0';
	return buf;
}

/* Cuts the logfmt text that starts at line[from] so that it ends by index
 * `limit` (plus one closing quote) and is still key=value pairs: no split
 * escape or UTF-8 sequence, no open quote, no partial key or bare value (a
 * quoted value may end early, closed). Returns the new line length. */
static size_t cut_line(char *line, size_t from, size_t limit)
{
	size_t keep = limit, i = from, token = from;
	bool q = false, eq = false;

	/* Back up to a UTF-8 lead byte (or ASCII): line[keep] is the first
	 * byte dropped, so no sequence is left half. */
	while (keep > from && ((unsigned char)line[keep] & 0xc0) == 0x80)
		keep--;
	while (i < keep) {
		char c = line[i];

		if (q && c == '\\') {
			size_t esc_len = i + 1 < keep && line[i + 1] == 'x' ? 4 : 2;

			if (i + esc_len > keep)
				break;
			i += esc_len;
			continue;
		}
		if (c == '"') {
			q = !q;
		} else if (!q && c == ' ') {
			token = i + 1;
			eq = false;
		} else if (!q && c == '=') {
			eq = true;
		}
		i++;
	}
	if (q) {
		line[i++] = '"';
		return i;
	}
	/* Outside quotes only whole pairs stay: a cut bare value would read
	 * as a different value (version=12 from version=1234). line[i] is
	 * the first byte dropped, so a complete pair is followed by ' '. */
	if (!eq || i == token || line[i - 1] == '=' || line[i] != ' ')
		i = token > from ? token - 1 : from;
	return i;
}

void log_vwrite(enum log_level level, const char *msg, const char *fields, va_list ap)
{
	/* One spare byte: vsnprintf's NUL may land at line[LOG_LINE_MAX]. */
	char line[LOG_LINE_MAX + 1];
	int saved_errno = errno;
	struct timespec now;
	struct tm tm;
	size_t n, body;
	bool over;
	int fd;

	if ((int)level < atomic_load_explicit(&log_level_setting, memory_order_relaxed))
		return;
	if (level < LOG_LEVEL_DEBUG || level > LOG_LEVEL_ERROR)
		level = LOG_LEVEL_ERROR;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ level=%s ",
			      now.tv_nsec / 1000000L, level_names[level]);
	body = n;
	memcpy(line + n, "msg=", 4);
	n += 4;

	/* First try to fit everything with just the '\n'; only a line that
	 * does not fit pays for the truncation marker. */
	n += quote_into(msg ? msg : "", line + n, LOG_LINE_MAX - n, &over);
	if (!over && n > LOG_LINE_MAX - 1)
		over = true;
	if (!over && fields && *fields) {
		if (n + 2 > LOG_LINE_MAX) {
			over = true;
		} else {
			int w;

			line[n] = ' ';
			w = vsnprintf(line + n + 1, LOG_LINE_MAX + 1 - (n + 1), fields, ap);
			/* A bad format drops the fields; empty output adds no
			 * trailing space. */
			if (w > 0) {
				if (n + 1 + (size_t)w > LOG_LINE_MAX - 1)
					over = true;
				else
					n += 1 + (size_t)w;
			}
		}
	}
	if (over) {
		n = cut_line(line, body, LOG_LINE_MAX - (sizeof(truncated_tail) - 1) - 1);
		memcpy(line + n, truncated_tail, sizeof(truncated_tail) - 1);
		n += sizeof(truncated_tail) - 1;
	} else {
		line[n++] = '\n';
	}
	assert(n <= LOG_LINE_MAX);

	fd = atomic_load_explicit(&log_fd_setting, memory_order_relaxed);
	for (size_t off = 0; off < n;) {
		/* One call in practice; the loop only finishes a write that a
		 * signal or a full non-pipe descriptor cut short. */
		ssize_t w = write(fd, line + off, n - off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		off += (size_t)w;
	}
	errno = saved_errno;
}

void log_write(enum log_level level, const char *msg, const char *fields, ...)
{
	va_list ap;

	va_start(ap, fields);
	log_vwrite(level, msg, fields, ap);
	va_end(ap);
}
