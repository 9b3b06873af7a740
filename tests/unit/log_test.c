/* log_test.c - logfmt line shape, level filter, quoting and whole lines.
 *
 * Lines are captured through a pipe installed with log_set_fd. Every line
 * read back is checked with a small logfmt validator, so a cut line must
 * still be well-formed; the thread test checks that no line interleaves.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LINE_MAX_BYTES 4096

/* ---- capture ------------------------------------------------------------ */

/* A pipe the logger writes into; read back with drain(). Lives for one test. */
struct capture {
	int rd;
	int wr;
};

static struct capture capture_start(void)
{
	int fds[2];

	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	/* Big enough for every single-threaded test's output. */
	fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
	cr_assert_eq(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
	log_set_fd(fds[1]);
	return (struct capture){ .rd = fds[0], .wr = fds[1] };
}

/* Everything written so far, NUL-terminated; caller frees. */
static char *drain(struct capture *c, size_t *len_out)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap + 1);

	cr_assert(buf);
	for (;;) {
		ssize_t r;

		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
			cr_assert(buf);
		}
		r = read(c->rd, buf + len, cap - len);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	if (len_out)
		*len_out = len;
	return buf;
}

static void capture_end(struct capture *c)
{
	close(c->rd);
	close(c->wr);
}

/* ---- logfmt validator --------------------------------------------------- */

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* True when `line` (len bytes) is key=value pairs separated by single
 * spaces, values bare or quoted with only the escapes log.c emits, ending
 * in exactly one '\n'. */
static bool valid_logfmt(const char *line, size_t len)
{
	size_t i = 0;

	if (len == 0 || line[len - 1] != '\n')
		return false;
	len--;
	while (i < len) {
		size_t key = i;

		while (i < len && line[i] != '=' && line[i] != ' ' && line[i] != '"' && line[i] != '\n')
			i++;
		if (i == key || i >= len || line[i] != '=')
			return false;
		i++;
		if (i < len && line[i] == '"') {
			i++;
			for (;;) {
				if (i >= len || line[i] == '\n')
					return false;
				if (line[i] == '"')
					break;
				if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
					return false;
				if (line[i] == '\\') {
					if (i + 1 >= len)
						return false;
					if (line[i + 1] == 'x') {
						if (i + 3 >= len || !is_hex(line[i + 2]) || !is_hex(line[i + 3]))
							return false;
						i += 4;
						continue;
					}
					if (!strchr("\"\\ntr", line[i + 1]))
						return false;
					i += 2;
					continue;
				}
				i++;
			}
			i++;
		} else {
			size_t v = i;

			while (i < len && line[i] != ' ' && line[i] != '"' && line[i] != '\n')
				i++;
			if (i == v)
				return false;
		}
		if (i < len) {
			if (line[i] != ' ')
				return false;
			i++;
			if (i == len)
				return false;
		}
	}
	return true;
}

static bool matches(const char *re_text, const char *s)
{
	regex_t re;
	int r;

	cr_assert_eq(regcomp(&re, re_text, REG_EXTENDED | REG_NOSUB), 0, "bad regex %s", re_text);
	r = regexec(&re, s, 0, NULL, 0);
	regfree(&re);
	return r == 0;
}

#define TS_RE "ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

/* ---- line shape --------------------------------------------------------- */

Test(log, writes_one_logfmt_line_with_timestamp_level_msg_and_fields)
{
	struct capture c = capture_start();
	char *out;

	log_info("hello world", "ruleset=%s version=%lu", "edge", 42UL);
	out = drain(&c, NULL);
	cr_assert(matches("^" TS_RE " level=info msg=\"hello world\" ruleset=edge version=42\n$", out),
		  "got: %s", out);
	cr_assert(valid_logfmt(out, strlen(out)));
	free(out);
	capture_end(&c);
}

Test(log, timestamp_is_utc_now)
{
	struct capture c = capture_start();
	struct tm tm = { 0 };
	struct timespec ts;
	time_t before, after, stamped;
	char *out;
	int ms;

	/* The clock the log reads: time() is the coarse clock, which can still
	 * show the last second when CLOCK_REALTIME has already moved on. */
	clock_gettime(CLOCK_REALTIME, &ts);
	before = ts.tv_sec;
	log_warn("tick", NULL);
	clock_gettime(CLOCK_REALTIME, &ts);
	after = ts.tv_sec;
	out = drain(&c, NULL);
	cr_assert_eq(sscanf(out, "ts=%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
			    &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms), 7, "got: %s", out);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	stamped = timegm(&tm);
	cr_assert(stamped >= before && stamped <= after, "ts %ld not in [%ld, %ld]", (long)stamped,
		  (long)before, (long)after);
	cr_assert(ms >= 0 && ms <= 999);
	free(out);
	capture_end(&c);
}

Test(log, null_and_empty_fields_add_nothing)
{
	struct capture c = capture_start();
	char *out;

	log_error("a", NULL);
	log_error("b", "%s", "");
	out = drain(&c, NULL);
	cr_assert(matches("^" TS_RE " level=error msg=\"a\"\n"
			  TS_RE " level=error msg=\"b\"\n$", out), "got: %s", out);
	free(out);
	capture_end(&c);
}

/* The line after "ts=<stamp> ", for exact comparisons. */
static const char *after_ts(const char *line)
{
	const char *sp = strchr(line, ' ');

	cr_assert(sp && strncmp(line, "ts=", 3) == 0, "got: %s", line);
	return sp + 1;
}

Test(log, escapes_the_message)
{
	struct capture c = capture_start();
	char *out;

	log_info("say \"hi\"\n\tto C:\\ \x01\x7f\r caf\xc3\xa9", NULL);
	out = drain(&c, NULL);
	cr_assert_str_eq(after_ts(out),
			 "level=info msg=\"say \\\"hi\\\"\\n\\tto C:\\\\ \\x01\\x7f\\r caf\xc3\xa9\"\n");
	free(out);
	log_info(NULL, NULL);
	out = drain(&c, NULL);
	cr_assert_str_eq(after_ts(out), "level=info msg=\"\"\n");
	free(out);
	capture_end(&c);
}

/* What a caller with its own variadic wrapper does. */
static void __attribute__((format(printf, 2, 3))) wrapper(const char *msg, const char *fields, ...)
{
	va_list ap;

	va_start(ap, fields);
	log_vwrite(LOG_LEVEL_INFO, msg, fields, ap);
	va_end(ap);
}

Test(log, vwrite_takes_a_va_list)
{
	struct capture c = capture_start();
	char *out;

	wrapper("m", "a=%d b=%s c=%.2f", 1, "two", 3.0);
	out = drain(&c, NULL);
	cr_assert(matches("^" TS_RE " level=info msg=\"m\" a=1 b=two c=3.00\n$", out), "got: %s", out);
	free(out);
	capture_end(&c);
}

Test(log, keeps_errno)
{
	struct capture c = capture_start();
	char *out;

	errno = EBUSY;
	log_info("x", "n=%d", 1);
	cr_assert_eq(errno, EBUSY);
	/* A failing write must not leak its errno either. */
	log_set_fd(-1);
	errno = ENOENT;
	log_info("x", NULL);
	cr_assert_eq(errno, ENOENT);
	out = drain(&c, NULL);
	free(out);
	capture_end(&c);
}

Test(log, defaults_to_info_on_stderr)
{
	int fds[2], saved;
	char buf[256] = { 0 };
	ssize_t r;

	cr_assert_eq(log_get_level(), LOG_LEVEL_INFO);
	cr_assert_eq(pipe(fds), 0);
	saved = dup(2);
	cr_assert_eq(dup2(fds[1], 2), 2);
	log_info("to stderr", NULL);
	log_debug("hidden", NULL);
	dup2(saved, 2);
	close(saved);
	close(fds[1]);
	r = read(fds[0], buf, sizeof(buf) - 1);
	cr_assert_gt(r, 0);
	cr_assert(matches("^" TS_RE " level=info msg=\"to stderr\"\n$", buf), "got: %s", buf);
	close(fds[0]);
}

/* ---- level filter ------------------------------------------------------- */

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

Test(log, level_filter_drops_lower_levels)
{
	struct capture c = capture_start();
	char *out;

	log_set_level(LOG_LEVEL_WARN);
	cr_assert_eq(log_get_level(), LOG_LEVEL_WARN);
	log_debug("d", NULL);
	log_info("i", NULL);
	log_warn("w", NULL);
	log_error("e", NULL);
	out = drain(&c, NULL);
	cr_assert(matches("^" TS_RE " level=warn msg=\"w\"\n" TS_RE " level=error msg=\"e\"\n$", out),
		  "got: %s", out);
	free(out);

	log_set_level(LOG_LEVEL_DEBUG);
	log_debug("d", "k=%d", 1);
	log_info("i", NULL);
	out = drain(&c, NULL);
	cr_assert(matches("^" TS_RE " level=debug msg=\"d\" k=1\n" TS_RE " level=info msg=\"i\"\n$", out),
		  "got: %s", out);
	free(out);

	log_set_level(LOG_LEVEL_ERROR);
	log_warn("w", NULL);
	log_error("e", NULL);
	out = drain(&c, NULL);
	cr_assert_eq(count_lines(out), 1);
	cr_assert(matches("level=error", out));
	free(out);
	capture_end(&c);
}

static int evaluated;

static int side_effect(void)
{
	return ++evaluated;
}

Test(log, debug_macro_skips_arguments_when_filtered)
{
	struct capture c = capture_start();
	char *out;

	log_set_level(LOG_LEVEL_INFO);
	log_debug("d", "n=%d", side_effect());
	cr_assert_eq(evaluated, 0);
	log_set_level(LOG_LEVEL_DEBUG);
	log_debug("d", "n=%d", side_effect());
	cr_assert_eq(evaluated, 1);
	out = drain(&c, NULL);
	cr_assert_eq(count_lines(out), 1);
	free(out);
	capture_end(&c);
}

/* ---- log_level_parse ---------------------------------------------------- */

/* One table row; static, copied by value into each test process. */
struct level_case {
	char name[16];
	int null_input;
	int ret;
	int level;
};

static struct level_case level_cases[] = {
	{ "debug", 0, 0, LOG_LEVEL_DEBUG },
	{ "info", 0, 0, LOG_LEVEL_INFO },
	{ "warn", 0, 0, LOG_LEVEL_WARN },
	{ "error", 0, 0, LOG_LEVEL_ERROR },
	{ "INFO", 0, -EINVAL, 0 },
	{ "warning", 0, -EINVAL, 0 },
	{ "inf", 0, -EINVAL, 0 },
	{ "info ", 0, -EINVAL, 0 },
	{ "", 0, -EINVAL, 0 },
	{ "", 1, -EINVAL, 0 },
};

ParameterizedTestParameters(log_level_parse, table)
{
	return cr_make_param_array(struct level_case, level_cases,
				   sizeof(level_cases) / sizeof(level_cases[0]));
}

ParameterizedTest(struct level_case *tc, log_level_parse, table)
{
	enum log_level got = (enum log_level)77;

	cr_assert_eq(log_level_parse(tc->null_input ? NULL : tc->name, &got), tc->ret, "'%s'", tc->name);
	cr_assert_eq((int)got, tc->ret ? 77 : tc->level, "'%s'", tc->name);
}

/* ---- log_quote ---------------------------------------------------------- */

/* One table row; static, copied by value into each test process. */
struct quote_case {
	char name[32];
	char in[32];
	int null_input;
	char want[48];
};

static struct quote_case quote_cases[] = {
	{ "word is bare", "abc", 0, "abc" },
	{ "all safe punctuation is bare", "a.b_c:d/e@f+g-h09", 0, "a.b_c:d/e@f+g-h09" },
	{ "address and port is bare", "10.0.0.1:8080", 0, "10.0.0.1:8080" },
	{ "empty is quoted", "", 0, "\"\"" },
	{ "null is quoted empty", "", 1, "\"\"" },
	{ "space", "a b", 0, "\"a b\"" },
	{ "equals", "a=b", 0, "\"a=b\"" },
	{ "quote", "a\"b", 0, "\"a\\\"b\"" },
	{ "backslash", "a\\b", 0, "\"a\\\\b\"" },
	{ "newline", "a\nb", 0, "\"a\\nb\"" },
	{ "tab", "a\tb", 0, "\"a\\tb\"" },
	{ "carriage return", "a\rb", 0, "\"a\\rb\"" },
	{ "control byte", "a\x01" "b", 0, "\"a\\x01b\"" },
	{ "escape byte", "\x1b[0m", 0, "\"\\x1b[0m\"" },
	{ "delete", "\x7f", 0, "\"\\x7f\"" },
	{ "utf-8 kept raw but quoted", "caf\xc3\xa9", 0, "\"caf\xc3\xa9\"" },
	{ "comma", "a,b", 0, "\"a,b\"" },
};

ParameterizedTestParameters(log_quote, table)
{
	return cr_make_param_array(struct quote_case, quote_cases,
				   sizeof(quote_cases) / sizeof(quote_cases[0]));
}

ParameterizedTest(struct quote_case *tc, log_quote, table)
{
	char buf[64];

	cr_assert_eq(log_quote(tc->null_input ? NULL : tc->in, buf, sizeof(buf)), buf);
	cr_assert_str_eq(buf, tc->want, "%s", tc->name);
}

/* One table row; static, copied by value into each test process. */
struct quote_cut_case {
	char in[32];
	size_t len;
	char want[32];
};

static struct quote_cut_case quote_cut_cases[] = {
	{ "abcdef", 4, "abc" },
	{ "abcdef", 1, "" },
	{ "a b c", 5, "\"a \"" },
	{ "a b c", 6, "\"a b\"" },
	{ "a\"b", 5, "\"a\"" },    /* \" would not fit with the closing quote */
	{ "a\"b", 6, "\"a\\\"\"" },
	{ "\x01\x02", 7, "\"\\x01\"" },
	{ "\x01\x02", 6, "\"\"" },
	{ "x\xc3\xa9", 5, "\"x\"" }, /* é would be split */
	{ "a b", 2, "" },
	{ "a b", 3, "\"\"" },
};

ParameterizedTestParameters(log_quote, cut)
{
	return cr_make_param_array(struct quote_cut_case, quote_cut_cases,
				   sizeof(quote_cut_cases) / sizeof(quote_cut_cases[0]));
}

ParameterizedTest(struct quote_cut_case *tc, log_quote, cut)
{
	char buf[40];

	memset(buf, '#', sizeof(buf));
	log_quote(tc->in, buf, tc->len);
	cr_assert_str_eq(buf, tc->want, "len %zu", tc->len);
	/* Nothing written past len. */
	for (size_t i = tc->len; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], '#', "byte %zu written (len %zu)", i, tc->len);
}

Test(log_quote, zero_length_buffer_is_left_alone)
{
	char buf[1] = { '#' };

	cr_assert_eq(log_quote("abc", buf, 0), buf);
	cr_assert_eq(buf[0], '#');
}

/* ---- long lines --------------------------------------------------------- */

static char *repeat(const char *unit, size_t times)
{
	size_t u = strlen(unit);
	char *s = malloc(u * times + 1);

	cr_assert(s);
	for (size_t i = 0; i < times; i++)
		memcpy(s + i * u, unit, u);
	s[u * times] = '\0';
	return s;
}

static void check_cut_line(const char *out, size_t len)
{
	cr_assert_leq(len, LINE_MAX_BYTES);
	cr_assert_eq(count_lines(out), 1, "got: %s", out);
	cr_assert(valid_logfmt(out, len), "not logfmt: %s", out);
	cr_assert(len > 16 && strcmp(out + len - 16, " truncated=true\n") == 0, "tail of: %s", out);
}

Test(log, long_message_is_cut_and_closed)
{
	struct capture c = capture_start();
	char *msg = repeat("ab\"", 3000);
	size_t len;
	char *out;

	log_info(msg, "after=%d", 1);
	out = drain(&c, &len);
	check_cut_line(out, len);
	cr_assert_null(strstr(out, "after=1"));
	free(out);
	free(msg);
	capture_end(&c);
}

Test(log, long_fields_are_cut_without_breaking_quotes_escapes_or_utf8)
{
	struct capture c = capture_start();
	/* Each unit is a different escape or a two-byte character, and the
	 * padding shifts where the cut lands through every position. */
	const char *units[] = { "\\\"", "\\\\", "\\x1b", "\xc3\xa9", "a" };

	for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
		char *body = repeat(units[u], 4096 / strlen(units[u]) + 8);

		for (int pad = 0; pad < 8; pad++) {
			size_t len;
			char *out;

			log_info("m", "pad=%.*s v=\"%s\"", pad + 1, "PPPPPPPPP", body);
			out = drain(&c, &len);
			check_cut_line(out, len);
			/* No UTF-8 sequence split: every lead byte has its
			 * continuation. */
			for (size_t i = 0; i < len; i++)
				if ((unsigned char)out[i] == 0xc3)
					cr_assert_eq((unsigned char)out[i + 1], 0xa9);
			free(out);
		}
		free(body);
	}
	capture_end(&c);
}

Test(log, long_message_is_cut_without_breaking_escapes_or_utf8)
{
	struct capture c = capture_start();
	const char *units[] = { "\"", "\\", "\x1b", "\xc3\xa9", "a" };

	for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
		char *body = repeat(units[u], 4096 / strlen(units[u]) + 8);

		for (int pad = 0; pad < 8; pad++) {
			size_t len;
			char *out;

			char *msg = malloc(strlen(body) + 9);

			/* Shifting the start moves the cut through every
			 * position of a unit. */
			cr_assert(msg);
			memset(msg, 'P', (size_t)pad);
			strcpy(msg + pad, body);
			log_info(msg, NULL);
			free(msg);
			out = drain(&c, &len);
			check_cut_line(out, len);
			for (size_t i = 0; i < len; i++)
				if ((unsigned char)out[i] == 0xc3)
					cr_assert_eq((unsigned char)out[i + 1], 0xa9);
			free(out);
		}
		free(body);
	}
	capture_end(&c);
}

Test(log, cut_never_leaves_a_key_without_value)
{
	struct capture c = capture_start();
	char *pairs = repeat(" key=value", 500);

	for (int pad = 0; pad < 12; pad++) {
		size_t len;
		char *out;

		log_info("m", "pad=%.*s%s", pad + 1, "PPPPPPPPPPPPP", pairs);
		out = drain(&c, &len);
		check_cut_line(out, len);
		cr_assert(strstr(out, "key=value truncated=true\n"), "tail: %s", out + len - 40);
		free(out);
	}
	free(pairs);
	capture_end(&c);
}

Test(log, line_of_exactly_the_limit_is_not_cut)
{
	struct capture c = capture_start();
	size_t head, len;
	char *out, *pad;

	/* Measure the fixed part, then fill the line to exactly 4096 bytes. */
	log_info("m", "k=");
	out = drain(&c, &head);
	free(out);
	pad = repeat("x", LINE_MAX_BYTES - head);
	log_info("m", "k=%s", pad);
	out = drain(&c, &len);
	cr_assert_eq(len, LINE_MAX_BYTES);
	cr_assert_null(strstr(out, "truncated=true"));
	free(out);
	log_info("m", "k=%sy", pad);
	out = drain(&c, &len);
	check_cut_line(out, len);
	free(out);
	free(pad);
	capture_end(&c);
}

/* ---- threads ------------------------------------------------------------ */

#define THREADS 8
#define LINES_PER_THREAD 400

static void *writer(void *arg)
{
	int id = (int)(intptr_t)arg;
	static const char pad[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	char body[3001];

	for (int seq = 0; seq < LINES_PER_THREAD; seq++) {
		/* Lengths up to 3000 bytes: a short write() would show up as
		 * a split line in the reader. */
		size_t n = (size_t)((id * 7919 + seq * 104729) % 3000);

		for (size_t i = 0; i < n; i++)
			body[i] = pad[(i + (size_t)id) % (sizeof(pad) - 1)];
		body[n] = '\0';
		log_info("worker line", "thread=%d seq=%d n=%zu body=%s", id, seq, n, body);
	}
	return NULL;
}

/* Reads the pipe until every writer closed it. Lives on the test's stack;
 * buf is freed by the test. */
struct reader {
	int fd;
	char *buf;
	size_t len;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	size_t cap = 1 << 20;

	r->buf = malloc(cap + 1);
	for (;;) {
		ssize_t n;

		if (r->len == cap) {
			cap *= 2;
			r->buf = realloc(r->buf, cap + 1);
		}
		if (!r->buf)
			return NULL;
		n = read(r->fd, r->buf + r->len, cap - r->len);
		if (n <= 0)
			break;
		r->len += (size_t)n;
	}
	r->buf[r->len] = '\0';
	return NULL;
}

Test(log, concurrent_lines_never_interleave)
{
	pthread_t threads[THREADS], rd;
	struct reader r = { 0 };
	int next_seq[THREADS] = { 0 };
	int fds[2], lines = 0;
	char *line, *save = NULL;

	cr_assert_eq(pipe(fds), 0);
	r.fd = fds[0];
	log_set_fd(fds[1]);
	cr_assert_eq(pthread_create(&rd, NULL, reader_main, &r), 0);
	for (intptr_t i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&threads[i], NULL, writer, (void *)i), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	close(fds[1]);
	pthread_join(rd, NULL);
	close(fds[0]);
	cr_assert(r.buf);
	cr_assert_eq(r.buf[r.len - 1], '\n');

	for (line = strtok_r(r.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		int id, seq, off = 0;
		size_t n;

		cr_assert_eq(sscanf(line, "ts=%*s level=info msg=\"worker line\" thread=%d seq=%d n=%zu body=%n",
				    &id, &seq, &n, &off), 3, "bad line %d: %.80s", lines, line);
		cr_assert(id >= 0 && id < THREADS);
		/* Per thread the lines arrive in order and none is missing. */
		cr_assert_eq(seq, next_seq[id], "thread %d", id);
		next_seq[id]++;
		cr_assert_eq(strlen(line + off), n, "line %d body cut or mixed", lines);
		for (size_t i = 0; i < n; i++)
			cr_assert(line[off + i] != ' ' && line[off + i] != '=');
		lines++;
	}
	cr_assert_eq(lines, THREADS * LINES_PER_THREAD);
	free(r.buf);
}
