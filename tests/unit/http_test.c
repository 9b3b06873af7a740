/* http_test.c - the HTTP/1.1 request- and response-head parsers and the
 * chunked decoder.
 *
 * Every input sits at the very end of a mapping followed by a PROT_NONE
 * page, so reading one byte past it crashes the test. Each table row is one
 * named case; rows are also replayed byte by byte, and chunked bodies at
 * every split point, to show that incremental input changes nothing.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http.h"

/* ---- guard page --------------------------------------------------------- */

/* Copies len bytes so that the last one is the last readable byte before a
 * PROT_NONE page. One mapping per test process, regrown when needed and
 * writable (the chunked decoder works in place), so the result is valid
 * until the next call. */
static char *guarded(const void *data, size_t len)
{
	static char *mem;
	static size_t mem_bytes;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t need = (len + page - 1) / page * page + page;

	if (need < 2 * page)
		need = 2 * page;
	if (need > mem_bytes) {
		if (mem)
			munmap(mem, mem_bytes);
		mem = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		cr_assert_neq(mem, MAP_FAILED);
		mem_bytes = need;
		cr_assert_eq(mprotect(mem + need - page, page, PROT_NONE), 0);
	}
	memcpy(mem + mem_bytes - page - len, data, len);
	return mem + mem_bytes - page - len;
}

static const struct http_limits test_limits = { .client_id_name = "Client-ID" };

static struct http_header hdrs[128];

/* Parses a whole guarded copy of s with the default limits. */
static int parse_n(const char *s, size_t len, struct http_request *req,
		   const struct http_limits *lim)
{
	memset(req, 0, sizeof(*req));
	req->headers = hdrs;
	req->headers_cap = sizeof(hdrs) / sizeof(hdrs[0]);
	return http_parse_request(guarded(s, len), len, 0, req, lim ? lim : &test_limits);
}

static int parse(const char *s, struct http_request *req)
{
	return parse_n(s, strlen(s), req, NULL);
}

static bool view_is(struct http_str v, const char *want)
{
	return v.ptr && v.len == strlen(want) && memcmp(v.ptr, want, v.len) == 0;
}

#define cr_assert_view(v, want) \
	cr_assert(view_is((v), (want)), "%s: got '%.*s', want '%s'", #v, \
		  (v).ptr ? (int)(v).len : 6, (v).ptr ? (v).ptr : "(null)", (want))

/* ---- generated inputs --------------------------------------------------- */

static char gen_buf[32 * 1024];

/* A request whose target is n bytes long. */
static size_t gen_target(size_t n)
{
	size_t p = (size_t)sprintf(gen_buf, "GET /");

	memset(gen_buf + p, 'a', n - 1);
	p += n - 1;
	p += (size_t)sprintf(gen_buf + p, " HTTP/1.1\r\nHost: a\r\n\r\n");
	return p;
}

static size_t gen_target_4096(void) { return gen_target(4096); }
static size_t gen_target_4097(void) { return gen_target(4097); }

/* A request with n "X-N: v" fields after Host. */
static size_t gen_fields(size_t n)
{
	size_t p = (size_t)sprintf(gen_buf, "GET / HTTP/1.1\r\nHost: a\r\n");

	for (size_t i = 0; i < n; i++)
		p += (size_t)sprintf(gen_buf + p, "X-%zu: v\r\n", i);
	p += (size_t)sprintf(gen_buf + p, "\r\n");
	return p;
}

static size_t gen_fields_100(void) { return gen_fields(99); }
static size_t gen_fields_101(void) { return gen_fields(100); }

/* A request whose whole head is exactly n bytes. */
static size_t gen_head(size_t n)
{
	const char *pre = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
	size_t p = strlen(pre), pad = n - p - 4;

	memcpy(gen_buf, pre, p);
	memset(gen_buf + p, 'p', pad);
	p += pad;
	memcpy(gen_buf + p, "\r\n\r\n", 4);
	return p + 4;
}

static size_t gen_head_8192(void) { return gen_head(8192); }
static size_t gen_head_8193(void) { return gen_head(8193); }

/* ---- request table ------------------------------------------------------ */

/* Parameters are copied into each test's process, so no pointers: inputs
 * are arrays and generated ones are named by an index into gens[]. */
struct req_case {
	char name[48];
	char in[128];
	size_t len;
	int gen;    /* > 0: input made by gens[gen] instead of in */
	int status; /* 0 = parses */
	enum http_error error;
};

enum { G_NONE, G_TARGET_4096, G_TARGET_4097, G_FIELDS_100, G_FIELDS_101, G_HEAD_8192,
       G_HEAD_8193 };

static size_t (*const gens[])(void) = {
	[G_TARGET_4096] = gen_target_4096, [G_TARGET_4097] = gen_target_4097,
	[G_FIELDS_100] = gen_fields_100,   [G_FIELDS_101] = gen_fields_101,
	[G_HEAD_8192] = gen_head_8192,	   [G_HEAD_8193] = gen_head_8193,
};

#define OK(n, s) { n, s, sizeof(s) - 1, G_NONE, 0, HTTP_OK }
#define BAD(n, s, st, e) { n, s, sizeof(s) - 1, G_NONE, st, e }
#define GEN_OK(n, g) { n, "", 0, g, 0, HTTP_OK }
#define GEN_BAD(n, g, st, e) { n, "", 0, g, st, e }
#define H11 " HTTP/1.1\r\nHost: a\r\n"

static struct req_case req_cases[] = {
	OK("simple GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
	OK("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n"),
	OK("several fields", "GET /x?y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: t/1\r\n\r\n"),
	OK("empty lines before request line", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
	OK("POST with Content-Length", "POST /p" H11 "Content-Length: 5\r\n\r\n"),
	OK("Content-Length zero", "POST /p" H11 "Content-Length: 0\r\n\r\n"),
	OK("Content-Length at body limit", "POST /p" H11 "Content-Length: 10485760\r\n\r\n"),
	OK("chunked", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n"),
	OK("chunked in any case", "POST /p" H11 "Transfer-Encoding: ChUnKeD\r\n\r\n"),
	OK("chunked with empty list elements", "POST /p" H11 "Transfer-Encoding: , chunked ,\r\n\r\n"),
	OK("obs-text in value", "GET /" H11 "X-U: caf\xc3\xa9\r\n\r\n"),
	OK("empty value", "GET /" H11 "X-E:\r\n\r\n"),
	OK("empty Host value", "GET * HTTP/1.1\r\nHost:\r\n\r\n"),
	OK("Host with port and IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"),
	OK("any token method", "PURGE-ME! /" H11 "\r\n"),
	OK("absolute-form target", "GET http://a/b?c" H11 "\r\n"),
	OK("authority-form target", "CONNECT a:443" H11 "\r\n"),
	OK("Expect 100-continue", "PUT /" H11 "Expect: 100-continue\r\nContent-Length: 1\r\n\r\n"),
	GEN_OK("target at 4096-byte limit", G_TARGET_4096),
	GEN_OK("100 fields", G_FIELDS_100),
	GEN_OK("head of exactly 8192 bytes", G_HEAD_8192),

	/* smuggling */
	BAD("CL and TE", "POST /" H11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400, HTTP_ERR_CL_AND_TE),
	BAD("TE and CL", "POST /" H11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400, HTTP_ERR_CL_AND_TE),
	BAD("duplicate CL, different", "POST /" H11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400, HTTP_ERR_DUP_CONTENT_LENGTH),
	BAD("duplicate CL, same value", "POST /" H11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 400, HTTP_ERR_DUP_CONTENT_LENGTH),
	BAD("CL list", "POST /" H11 "Content-Length: 5, 5\r\n\r\n", 400, HTTP_ERR_BAD_CONTENT_LENGTH),
	BAD("CL plus sign", "POST /" H11 "Content-Length: +5\r\n\r\n", 400, HTTP_ERR_BAD_CONTENT_LENGTH),
	BAD("CL minus sign", "POST /" H11 "Content-Length: -5\r\n\r\n", 400, HTTP_ERR_BAD_CONTENT_LENGTH),
	BAD("CL inner space", "POST /" H11 "Content-Length: 5 5\r\n\r\n", 400, HTTP_ERR_BAD_CONTENT_LENGTH),
	BAD("CL garbage", "POST /" H11 "Content-Length: 5abc\r\n\r\n", 400, HTTP_ERR_BAD_CONTENT_LENGTH),
	BAD("CL hex", "POST /" H11 "Content-Length: 0x5\r\n\r\n", 400, HTTP_ERR_BAD_CONTENT_LENGTH),
	BAD("CL empty", "POST /" H11 "Content-Length:\r\n\r\n", 400, HTTP_ERR_BAD_CONTENT_LENGTH),
	BAD("CL overflow", "POST /" H11 "Content-Length: 99999999999999999999\r\n\r\n", 400, HTTP_ERR_BAD_CONTENT_LENGTH),
	BAD("CL INT64_MAX + 1", "POST /" H11 "Content-Length: 9223372036854775808\r\n\r\n", 400, HTTP_ERR_BAD_CONTENT_LENGTH),
	BAD("TE gzip, chunked", "POST /" H11 "Transfer-Encoding: gzip, chunked\r\n\r\n", 501, HTTP_ERR_TE_UNSUPPORTED),
	BAD("TE chunked, gzip", "POST /" H11 "Transfer-Encoding: chunked, gzip\r\n\r\n", 400, HTTP_ERR_TE_NOT_CHUNKED),
	BAD("TE gzip alone", "POST /" H11 "Transfer-Encoding: gzip\r\n\r\n", 400, HTTP_ERR_TE_NOT_CHUNKED),
	BAD("TE chunked twice", "POST /" H11 "Transfer-Encoding: chunked, chunked\r\n\r\n", 400, HTTP_ERR_TE_NOT_CHUNKED),
	BAD("TE chunked then gzip field", "POST /" H11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400, HTTP_ERR_TE_NOT_CHUNKED),
	BAD("TE chunked with parameter", "POST /" H11 "Transfer-Encoding: chunked;q=1\r\n\r\n", 400, HTTP_ERR_TE_NOT_CHUNKED),
	BAD("TE chunked with junk", "POST /" H11 "Transfer-Encoding: chunked x\r\n\r\n", 400, HTTP_ERR_TE_NOT_CHUNKED),
	BAD("TE empty", "POST /" H11 "Transfer-Encoding: \r\n\r\n", 400, HTTP_ERR_TE_NOT_CHUNKED),
	BAD("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, HTTP_ERR_TE_NOT_CHUNKED),
	BAD("obs-fold", "GET /" H11 "X-A: 1\r\n 2\r\n\r\n", 400, HTTP_ERR_OBS_FOLD),
	BAD("whitespace before first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, HTTP_ERR_OBS_FOLD),
	BAD("space before colon", "GET /" H11 "Content-Length : 5\r\n\r\n", 400, HTTP_ERR_SPACE_BEFORE_COLON),
	BAD("tab before colon", "GET /" H11 "X-A\t: 5\r\n\r\n", 400, HTTP_ERR_SPACE_BEFORE_COLON),
	BAD("bare LF after request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400, HTTP_ERR_BARE_LF),
	BAD("bare LF after field", "GET / HTTP/1.1\r\nHost: a\n\r\n", 400, HTTP_ERR_BARE_LF),
	BAD("bare LF ending head", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400, HTTP_ERR_BARE_LF),
	BAD("bare LF only", "GET / HTTP/1.1\nHost: a\n\n", 400, HTTP_ERR_BARE_LF),
	BAD("bare LF before request", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, HTTP_ERR_BARE_LF),
	BAD("bare CR in value", "GET /" H11 "X-A: 1\r2\r\n\r\n", 400, HTTP_ERR_BARE_LF),
	BAD("NUL in value", "GET /" H11 "X-A: 1\0002\r\n\r\n", 400, HTTP_ERR_BAD_CHAR),
	BAD("NUL in name", "GET /" H11 "X\000A: 1\r\n\r\n", 400, HTTP_ERR_BAD_CHAR),
	BAD("NUL in target", "GET /a\000b" H11 "\r\n", 400, HTTP_ERR_BAD_CHAR),
	BAD("NUL in method", "GE\000T /" H11 "\r\n", 400, HTTP_ERR_BAD_CHAR),
	BAD("CTL in value", "GET /" H11 "X-A: \001\r\n\r\n", 400, HTTP_ERR_BAD_CHAR),
	BAD("DEL in value", "GET /" H11 "X-A: \177\r\n\r\n", 400, HTTP_ERR_BAD_CHAR),
	BAD("bad method char", "G(T /" H11 "\r\n", 400, HTTP_ERR_BAD_CHAR),
	BAD("bad method char @", "GE@T /" H11 "\r\n", 400, HTTP_ERR_BAD_CHAR),
	BAD("leading space before method", " GET /" H11 "\r\n", 400, HTTP_ERR_SYNTAX),
	BAD("non-ASCII in target", "GET /caf\xc3\xa9" H11 "\r\n", 400, HTTP_ERR_BAD_CHAR),
	BAD("empty target", "GET " H11 "\r\n", 400, HTTP_ERR_SYNTAX),
	BAD("space in target", "GET /a b" H11 "\r\n", 400, HTTP_ERR_SYNTAX),
	BAD("empty field name", "GET /" H11 ": x\r\n\r\n", 400, HTTP_ERR_SYNTAX),
	BAD("field name with slash", "GET /" H11 "X/Y: x\r\n\r\n", 400, HTTP_ERR_BAD_CHAR),
	BAD("lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400, HTTP_ERR_SYNTAX),
	BAD("version with trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, HTTP_ERR_SYNTAX),
	BAD("version with three digits", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, HTTP_ERR_SYNTAX),
	BAD("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, HTTP_ERR_VERSION),
	BAD("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, HTTP_ERR_VERSION),
	BAD("HTTP/0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505, HTTP_ERR_VERSION),
	BAD("missing Host in HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, HTTP_ERR_HOST_MISSING),
	BAD("duplicate Host", "GET /" H11 "host: b\r\n\r\n", 400, HTTP_ERR_HOST_DUPLICATE),
	BAD("duplicate Host in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400, HTTP_ERR_HOST_DUPLICATE),
	BAD("Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, HTTP_ERR_BAD_HOST),
	BAD("Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, HTTP_ERR_BAD_HOST),
	BAD("Host with at sign", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, HTTP_ERR_BAD_HOST),
	BAD("Expect other", "PUT /" H11 "Expect: 200-ok\r\n\r\n", 417, HTTP_ERR_EXPECTATION),
	BAD("Expect list with other", "PUT /" H11 "Expect: 100-continue, x\r\n\r\n", 417, HTTP_ERR_EXPECTATION),
	BAD("CL above body limit", "POST /" H11 "Content-Length: 10485761\r\n\r\n", 413, HTTP_ERR_BODY_TOO_LARGE),
	GEN_BAD("target one above limit", G_TARGET_4097, 414, HTTP_ERR_TARGET_TOO_LONG),
	GEN_BAD("101 fields", G_FIELDS_101, 431, HTTP_ERR_TOO_MANY_FIELDS),
	GEN_BAD("head of 8193 bytes", G_HEAD_8193, 431, HTTP_ERR_HEAD_TOO_LARGE),

	/* Fields are recognised by length and first byte before a whole
	 * compare: names that share both with an interesting one are plain
	 * fields, and the interesting ones match in any case. */
	BAD("look-alikes of Host only", "GET / HTTP/1.1\r\nHosx: a\r\nXost: a\r\nHost-: a\r\n\r\n", 400, HTTP_ERR_HOST_MISSING),
	OK("look-alikes of CL and TE", "POST /" H11 "Content-Lengtz: x\r\nXontent-Length: x\r\nTransfer-Encodinz: gzip\r\n\r\n"),
	OK("look-alikes of Expect, Connection", "PUT /" H11 "Expecz: 200-ok\r\nXxpect: x\r\nConnectioz: x\r\nAccept: */*\r\n\r\n"),
	BAD("HOST twice in upper case", "GET /" H11 "HOST: b\r\n\r\n", 400, HTTP_ERR_HOST_DUPLICATE),
	BAD("CL twice in mixed case", "POST /" H11 "CONTENT-length: 1\r\ncontent-LENGTH: 1\r\n\r\n", 400, HTTP_ERR_DUP_CONTENT_LENGTH),
	BAD("EXPECT other", "PUT /" H11 "EXPECT: 200-ok\r\n\r\n", 417, HTTP_ERR_EXPECTATION),
	BAD("Expect list, any case, then other", "PUT /" H11 "Expect: 100-continue,100-continuE,x\r\n\r\n", 417, HTTP_ERR_EXPECTATION),
	BAD("TRANSFER-ENCODING gzip", "POST /" H11 "TRANSFER-ENCODING: gzip\r\n\r\n", 400, HTTP_ERR_TE_NOT_CHUNKED),
	BAD("CR without LF after version", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400, HTTP_ERR_BARE_LF),
	BAD("CR CR after version", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400, HTTP_ERR_BARE_LF),
	BAD("HTTP/1.3", "GET / HTTP/1.3\r\nHost: a\r\n\r\n", 505, HTTP_ERR_VERSION),
	BAD("HTTP/1.x", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400, HTTP_ERR_SYNTAX),
	BAD("Host with a space in a long value", "GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaa.example.com b\r\n\r\n", 400, HTTP_ERR_BAD_HOST),
	OK("long Host with OWS around it", "GET / HTTP/1.1\r\nHost: \t aaaaaaaaaaaaaaaaaaaa.example.com:8080 \t\r\n\r\n"),
	BAD("bad char as a field line's first byte", "GET /" H11 "\001X: 1\r\n\r\n", 400, HTTP_ERR_BAD_CHAR),
};

static const char *case_input(const struct req_case *tc, size_t *len)
{
	if (tc->gen != G_NONE) {
		*len = gens[tc->gen]();
		return gen_buf;
	}
	*len = tc->len;
	return tc->in;
}

static void check_result(const struct req_case *tc, int r, const struct http_request *req,
			 size_t len)
{
	if (tc->status == 0) {
		cr_assert_eq(r, (int)len, "%s: returned %d (%s), want %zu", tc->name, r,
			     http_error_str(req->error), len);
		cr_assert_eq(req->error, HTTP_OK, "%s", tc->name);
	} else {
		cr_assert_eq(r, -EBADMSG, "%s: returned %d, want -EBADMSG", tc->name, r);
		cr_assert_eq(req->error, tc->error, "%s: error %s, want %s", tc->name,
			     http_error_str(req->error), http_error_str(tc->error));
		cr_assert_eq(http_error_status(req->error), tc->status, "%s", tc->name);
	}
}

ParameterizedTestParameters(http_parse, table)
{
	return cr_make_param_array(struct req_case, req_cases,
				   sizeof(req_cases) / sizeof(req_cases[0]));
}

ParameterizedTest(struct req_case *tc, http_parse, table)
{
	struct http_request req;
	size_t len;
	const char *in = case_input(tc, &len);

	check_result(tc, parse_n(in, len, &req, NULL), &req, len);
}

/* Fed one byte more at a time, with and without last_len: a valid request
 * gives -EAGAIN until its last byte, then the same result as the whole
 * input; an invalid one gives -EAGAIN, then the same error as the whole
 * (possibly before its last byte). */
static void feed_bytewise(const struct req_case *tc, bool resume)
{
	struct http_request req;
	size_t len, last = 0;
	const char *src = case_input(tc, &len);
	char *copy = malloc(len + 1);
	int r = -EAGAIN;
	size_t n;

	cr_assert_not_null(copy);
	memcpy(copy, src, len);
	for (n = 1; n <= len; n++) {
		memset(&req, 0, sizeof(req));
		req.headers = hdrs;
		req.headers_cap = sizeof(hdrs) / sizeof(hdrs[0]);
		r = http_parse_request(guarded(copy, n), n, resume ? last : 0, &req, &test_limits);
		if (r != -EAGAIN)
			break;
		last = n;
	}
	if (tc->status == 0)
		cr_assert_eq(n, r == -EAGAIN ? len + 1 : len, "%s: result %d after %zu of %zu bytes",
			     tc->name, r, n, len);
	check_result(tc, r, &req, len);
	free(copy);
}

ParameterizedTestParameters(http_parse, bytewise)
{
	return cr_make_param_array(struct req_case, req_cases,
				   sizeof(req_cases) / sizeof(req_cases[0]));
}

ParameterizedTest(struct req_case *tc, http_parse, bytewise)
{
	feed_bytewise(tc, false);
}

ParameterizedTestParameters(http_parse, bytewise_resume)
{
	return cr_make_param_array(struct req_case, req_cases,
				   sizeof(req_cases) / sizeof(req_cases[0]));
}

ParameterizedTest(struct req_case *tc, http_parse, bytewise_resume)
{
	feed_bytewise(tc, true);
}

/* ---- what the parser extracts ------------------------------------------- */

Test(http_parse, simple_get_gives_views_into_the_buffer)
{
	const char *s = "GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\nAccept:  */* \t\r\n\r\n";
	size_t len = strlen(s);
	struct http_request req = { .headers = hdrs, .headers_cap = 128 };
	const char *buf = guarded(s, len);

	cr_assert_eq(http_parse_request(buf, len, 0, &req, NULL), (int)len);
	cr_assert_view(req.method, "GET");
	cr_assert_view(req.target, "/a/b?x=1&y");
	cr_assert_view(req.path, "/a/b");
	cr_assert_view(req.query, "x=1&y");
	cr_assert_eq(req.target_form, HTTP_TARGET_ORIGIN);
	cr_assert_null(req.authority.ptr);
	cr_assert_eq(req.version_minor, 1);
	cr_assert_view(req.host, "example.com");
	cr_assert_eq(req.num_headers, 2);
	cr_assert_view(hdrs[0].name, "Host");
	cr_assert_view(hdrs[0].value, "example.com");
	cr_assert_view(hdrs[1].name, "Accept");
	cr_assert_view(hdrs[1].value, "*/*");
	cr_assert_eq(req.content_length, -1);
	cr_assert_not(req.chunked);
	cr_assert(req.keep_alive);
	cr_assert_not(req.expect_continue);
	cr_assert_null(req.client_id.ptr);
	/* Zero-copy: the views are the buffer's own bytes. */
	cr_assert_eq(req.method.ptr, buf);
	cr_assert_eq(hdrs[1].value.ptr, memmem(buf, len, "*/*", 3));
}

Test(http_parse, leading_empty_lines_count_in_the_head_length)
{
	struct http_request req;

	cr_assert_eq(parse("\r\n\r\nGET / HTTP/1.0\r\n\r\n", &req), 22);
	cr_assert_view(req.method, "GET");
	cr_assert_eq(req.version_minor, 0);
}

/* One target and the views it must split into; lives in a test's table. */
struct target_case {
	const char *target;
	enum http_target_form form;
	const char *authority, *path, *query; /* NULL = absent */
};

Test(http_parse, splits_target_by_form)
{
	static const struct target_case cases[] = {
		{ "/", HTTP_TARGET_ORIGIN, NULL, "/", NULL },
		{ "/a?", HTTP_TARGET_ORIGIN, NULL, "/a", "" },
		{ "/a?b?c", HTTP_TARGET_ORIGIN, NULL, "/a", "b?c" },
		{ "*", HTTP_TARGET_ASTERISK, NULL, "*", NULL },
		{ "http://ex.com:81/p/q?r=1", HTTP_TARGET_ABSOLUTE, "ex.com:81", "/p/q", "r=1" },
		{ "https://ex.com", HTTP_TARGET_ABSOLUTE, "ex.com", "", NULL },
		{ "h2c+x://ex.com?q", HTTP_TARGET_ABSOLUTE, "ex.com", "", "q" },
		{ "ex.com:443", HTTP_TARGET_AUTHORITY, "ex.com:443", NULL, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct target_case *tc = &cases[i];
		struct http_request req;
		char in[256];

		snprintf(in, sizeof(in), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", tc->target);
		cr_assert_gt(parse(in, &req), 0, "%s", tc->target);
		cr_assert_eq(req.target_form, tc->form, "%s", tc->target);
		if (tc->authority)
			cr_assert_view(req.authority, tc->authority);
		else
			cr_assert_null(req.authority.ptr, "%s", tc->target);
		if (tc->path)
			cr_assert_view(req.path, tc->path);
		else
			cr_assert_null(req.path.ptr, "%s", tc->target);
		if (tc->query)
			cr_assert_view(req.query, tc->query);
		else
			cr_assert_null(req.query.ptr, "%s", tc->target);
	}
}

/* The first '?' is found by the scan that delimits the target, a vector at
 * a time: at every offset, also in the last (overlapping) vector of a short
 * head, and never past the target's end. */
Test(http_parse, query_starts_at_the_targets_first_question_mark)
{
	struct http_request req;
	char in[128];

	for (size_t tlen = 2; tlen <= 40; tlen++) {
		for (size_t q = 1; q <= tlen; q++) {
			char t[48];

			memset(t, 'a', tlen);
			t[0] = '/';
			if (q < tlen)
				t[q] = '?';
			if (q + 2 < tlen)
				t[q + 2] = '?';
			t[tlen] = '\0';
			snprintf(in, sizeof(in), "GET %s HTTP/1.0\r\n\r\n", t);
			cr_assert_eq(parse(in, &req), (int)strlen(in), "%s", t);
			cr_assert_eq(req.path.len, q, "%s", t);
			if (q < tlen) {
				cr_assert_eq(req.query.ptr, req.target.ptr + q + 1, "%s", t);
				cr_assert_eq(req.query.len, tlen - q - 1, "%s", t);
			} else {
				cr_assert_null(req.query.ptr, "%s", t);
			}
		}
	}
	/* A '?' just after the target, in the same vector, is not the
	 * target's. */
	cr_assert_gt(parse("GET / HTTP/1.1\r\nA:?\r\nHost: a\r\n\r\n", &req), 0);
	cr_assert_view(req.path, "/");
	cr_assert_null(req.query.ptr);
	cr_assert_gt(parse("GET http://a/b HTTP/1.1\r\nA:?\r\nHost: a\r\n\r\n", &req), 0);
	cr_assert_view(req.path, "/b");
	cr_assert_null(req.query.ptr);
}

/* Names of the same length and first letter as the interesting ones change
 * nothing. */
Test(http_parse, look_alike_names_are_plain_fields)
{
	struct http_request req;

	cr_assert_gt(parse("POST / HTTP/1.1\r\nHost: a\r\nHosx: b\r\nConnectioz: close\r\n"
			   "Cxnnection: close\r\nExpecz: 100-continue\r\n"
			   "Content-Lengtz: 5\r\nTransfer-Encodinz: chunked\r\n\r\n",
			   &req),
		     0);
	cr_assert_view(req.host, "a");
	cr_assert(req.keep_alive);
	cr_assert_not(req.expect_continue);
	cr_assert_eq(req.content_length, -1);
	cr_assert_not(req.chunked);
	cr_assert_eq(req.num_headers, 7);

	cr_assert_gt(parse("GET / HTTP/1.1\r\nhOST: a\r\ncONNECTION: CLOSE\r\n"
			   "eXPECT: 100-CONTINUE\r\ncONTENT-lENGTH: 5\r\n\r\n",
			   &req),
		     0);
	cr_assert_view(req.host, "a");
	cr_assert_not(req.keep_alive);
	cr_assert(req.expect_continue);
	cr_assert_eq(req.content_length, 5);
	cr_assert_gt(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req), 0);
	cr_assert(req.keep_alive);
}

Test(http_parse, extracts_framing)
{
	struct http_request req;

	cr_assert_gt(parse("POST /" H11 "Content-Length: 0012\r\n\r\n", &req), 0);
	cr_assert_eq(req.content_length, 12);
	cr_assert_not(req.chunked);
	cr_assert_gt(parse("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n", &req), 0);
	cr_assert_eq(req.content_length, -1);
	cr_assert(req.chunked);
	cr_assert_eq(parse("POST /" H11 "Content-Length: 9223372036854775807\r\n\r\n", &req), -EBADMSG);
	cr_assert_eq(req.error, HTTP_ERR_BODY_TOO_LARGE);
}

Test(http_parse, pipelined_requests_parse_one_head_at_a_time)
{
	const char *a = "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
	const char *b = "GET /two HTTP/1.1\r\nHost: a\r\n\r\n";
	char all[256];
	size_t alen = strlen(a), blen = strlen(b), len;
	struct http_request req = { 0 };
	const char *buf;
	int r;

	len = (size_t)snprintf(all, sizeof(all), "%shello%s", a, b);
	buf = guarded(all, len);
	r = http_parse_request(buf, len, 0, &req, NULL);
	cr_assert_eq(r, (int)alen);
	cr_assert_view(req.target, "/one");
	cr_assert_eq(req.content_length, 5);
	r = http_parse_request(buf + alen + 5, len - alen - 5, 0, &req, NULL);
	cr_assert_eq(r, (int)blen);
	cr_assert_view(req.target, "/two");
	cr_assert_eq(req.content_length, -1);

	/* Two heads back to back, no body. */
	len = (size_t)snprintf(all, sizeof(all), "%s%s", b, b);
	buf = guarded(all, len);
	cr_assert_eq(http_parse_request(buf, len, 0, &req, NULL), (int)blen);
	cr_assert_eq(http_parse_request(buf + blen, len - blen, 0, &req, NULL), (int)blen);
}

/* HTTP version, Connection value and the keep-alive verdict; test table row. */
struct ka_case {
	const char *name;
	const char *version;
	const char *connection; /* NULL = no Connection field */
	bool keep_alive;
};

Test(http_parse, keep_alive_rules)
{
	static const struct ka_case cases[] = {
		{ "1.1 default", "1.1", NULL, true },
		{ "1.0 default", "1.0", NULL, false },
		{ "1.1 close", "1.1", "close", false },
		{ "1.1 Close upper case", "1.1", "CLOSE", false },
		{ "1.0 keep-alive", "1.0", "keep-alive", true },
		{ "1.0 Keep-Alive", "1.0", "Keep-Alive", true },
		{ "1.1 keep-alive", "1.1", "keep-alive", true },
		{ "1.1 close in a list", "1.1", "Upgrade, close", false },
		{ "1.0 keep-alive in a list", "1.0", "te ,keep-alive, ", true },
		{ "close wins over keep-alive", "1.0", "keep-alive, close", false },
		{ "close-ish token is not close", "1.1", "closed", true },
		{ "other tokens only", "1.0", "upgrade", false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct ka_case *tc = &cases[i];
		struct http_request req;
		char in[256];

		snprintf(in, sizeof(in), "GET / HTTP/%s\r\nHost: a\r\n%s%s%s\r\n", tc->version,
			 tc->connection ? "Connection: " : "", tc->connection ? tc->connection : "",
			 tc->connection ? "\r\n" : "");
		cr_assert_gt(parse(in, &req), 0, "%s", tc->name);
		cr_assert_eq(req.keep_alive, tc->keep_alive, "%s", tc->name);
	}
}

Test(http_parse, expect_100_continue)
{
	struct http_request req;

	cr_assert_gt(parse("PUT /" H11 "Expect: 100-continue\r\n\r\n", &req), 0);
	cr_assert(req.expect_continue);
	cr_assert_gt(parse("PUT /" H11 "Expect: 100-Continue\r\n\r\n", &req), 0);
	cr_assert(req.expect_continue);
	cr_assert_gt(parse("PUT /" H11 "\r\n", &req), 0);
	cr_assert_not(req.expect_continue);
	/* RFC 9110 10.1.1: ignored in HTTP/1.0. */
	cr_assert_gt(parse("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &req), 0);
	cr_assert_not(req.expect_continue);
	cr_assert_eq(parse("PUT /" H11 "Expect: 100\r\n\r\n", &req), -EBADMSG);
	cr_assert_eq(http_error_status(req.error), 417);
}

Test(http_parse, client_id_matches_name_case_insensitively)
{
	struct http_limits lim = { .client_id_name = "Client-ID" };
	struct http_request req;
	const char *s;

	s = "GET /" H11 "client-id:  abc \r\n\r\n";
	cr_assert_gt(parse_n(s, strlen(s), &req, &lim), 0);
	cr_assert_view(req.client_id, "abc");
	s = "GET /" H11 "CLIENT-ID: first\r\nClient-Id: second\r\n\r\n";
	cr_assert_gt(parse_n(s, strlen(s), &req, &lim), 0);
	cr_assert_view(req.client_id, "first");
	s = "GET /" H11 "Client-IDs: no\r\nClient-I: no\r\n\r\n";
	cr_assert_gt(parse_n(s, strlen(s), &req, &lim), 0);
	cr_assert_null(req.client_id.ptr);

	lim.client_id_name = "x-api-key";
	s = "GET /" H11 "Client-ID: no\r\nX-API-Key: k1\r\n\r\n";
	cr_assert_gt(parse_n(s, strlen(s), &req, &lim), 0);
	cr_assert_view(req.client_id, "k1");

	lim.client_id_name = NULL;
	cr_assert_gt(parse_n(s, strlen(s), &req, &lim), 0);
	cr_assert_null(req.client_id.ptr);

	/* Same length and first letter, or a difference in the last byte
	 * only: no match. */
	lim.client_id_name = "Client-ID";
	s = "GET /" H11 "Client-IE: no\r\nClient_ID: no\r\nDlient-ID: no\r\nClient-Ix: no\r\n\r\n";
	cr_assert_gt(parse_n(s, strlen(s), &req, &lim), 0);
	cr_assert_null(req.client_id.ptr);

	/* Case folds letters only: '^' and '~' (0x5e, 0x7e) and '_' and '\x7f'
	 * differ in the same bit as 'A' and 'a'. */
	lim.client_id_name = "X^Id";
	s = "GET /" H11 "X~Id: no\r\nx^iD: yes\r\n\r\n";
	cr_assert_gt(parse_n(s, strlen(s), &req, &lim), 0);
	cr_assert_view(req.client_id, "yes");
	lim.client_id_name = "Long~Client^Name-1";
	s = "GET /" H11 "LONG^CLIENT^NAME-1: no\r\nlong~client~name-1: no\r\n"
	    "long~client^name-1: yes\r\n\r\n";
	cr_assert_gt(parse_n(s, strlen(s), &req, &lim), 0);
	cr_assert_view(req.client_id, "yes");
	lim.client_id_name = "ab";
	s = "GET /" H11 "aB: yes\r\n\r\n";
	cr_assert_gt(parse_n(s, strlen(s), &req, &lim), 0);
	cr_assert_view(req.client_id, "yes");
	/* A name the client can never send matches nothing. */
	lim.client_id_name = "a b";
	s = "GET /" H11 "a: b\r\n\r\n";
	cr_assert_gt(parse_n(s, strlen(s), &req, &lim), 0);
	cr_assert_null(req.client_id.ptr);
}

/* ---- every byte in every vector lane ------------------------------------ */

/* Where the byte under test goes: a 40-byte run of a valid byte inside the
 * method, the target, a field name, a field value or the Host value. */
enum lane_ctx { L_METHOD, L_TARGET, L_NAME, L_VALUE, L_HOST, L__COUNT };

#define LANE_RUN 40

static bool ref_tchar(unsigned b)
{
	return (b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'z') ||
	       (b && strchr("!#$%&'*+-.^_`|~", (int)b));
}

static bool ref_host(unsigned b)
{
	return (b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'z') ||
	       (b && strchr("-._~!$&'()*+,;=:[]%", (int)b));
}

static bool ref_value(unsigned b)
{
	return b == '\t' || (b >= 0x20 && b != 0x7f);
}

/* Builds the request for byte b at offset k of the run; returns its length
 * and sets *at to b's offset in it. */
static size_t lane_input(enum lane_ctx ctx, unsigned b, size_t k, char *out, size_t *at)
{
	static const char *const pre[L__COUNT] = {
		"", "GET /", "GET / HTTP/1.1\r\nHost: h\r\n", "GET / HTTP/1.1\r\nHost: h\r\nX: ",
		"GET / HTTP/1.1\r\nHost: ",
	};
	static const char *const post[L__COUNT] = {
		" / HTTP/1.1\r\nHost: h\r\n\r\n", " HTTP/1.1\r\nHost: h\r\n\r\n",
		": v\r\n\r\n", "\r\n\r\n", "\r\nX: v\r\n\r\n",
	};
	size_t p = strlen(pre[ctx]);

	memcpy(out, pre[ctx], p);
	memset(out + p, 'a', LANE_RUN);
	*at = p + k;
	out[*at] = (char)b;
	p += LANE_RUN;
	memcpy(out + p, post[ctx], strlen(post[ctx]));
	return p + strlen(post[ctx]);
}

/* What the whole request must give, from the grammar, not from http.c's
 * tables: HTTP_OK or the error. */
static enum http_error lane_expect(enum lane_ctx ctx, unsigned b)
{
	switch (ctx) {
	case L_METHOD:
		if (ref_tchar(b))
			return HTTP_OK;
		/* a SP ends the method early: the version is then wrong */
		return b == ' ' || b == '\r' || b == '\n' ? HTTP_ERR_SYNTAX : HTTP_ERR_BAD_CHAR;
	case L_TARGET:
		if (b > 0x20 && b < 0x7f)
			return HTTP_OK;
		return b == ' ' || b == '\r' || b == '\n' ? HTTP_ERR_SYNTAX : HTTP_ERR_BAD_CHAR;
	case L_NAME:
		/* ':' ends the name early, the rest is value */
		if (ref_tchar(b) || b == ':')
			return HTTP_OK;
		return b == ' ' || b == '\t' ? HTTP_ERR_SPACE_BEFORE_COLON : HTTP_ERR_BAD_CHAR;
	case L_VALUE:
	case L_HOST:
		if (!ref_value(b))
			return b == '\r' || b == '\n' ? HTTP_ERR_BARE_LF : HTTP_ERR_BAD_CHAR;
		return ctx == L_HOST && !ref_host(b) ? HTTP_ERR_BAD_HOST : HTTP_OK;
	default:
		return HTTP_ERR__COUNT;
	}
}

/* The views a valid request must give for byte b at offset at. */
static void lane_check_views(enum lane_ctx ctx, unsigned b, const char *buf, size_t at,
			     const struct http_request *req)
{
	cr_assert_eq(req->num_headers, ctx == L_NAME || ctx == L_VALUE || ctx == L_HOST ? 2 : 1);
	switch (ctx) {
	case L_METHOD:
		cr_assert_eq(req->method.len, LANE_RUN, "method, byte 0x%02x", b);
		break;
	case L_TARGET:
		cr_assert_eq(req->target.len, LANE_RUN + 1, "target, byte 0x%02x", b);
		if (b == '?') {
			cr_assert_eq(req->query.ptr, buf + at + 1, "query after '?' at %zu", at);
			cr_assert_eq(req->path.len, at - 4);
		} else {
			cr_assert_null(req->query.ptr, "byte 0x%02x", b);
			cr_assert_eq(req->path.len, LANE_RUN + 1);
		}
		break;
	case L_NAME:
		/* a ':' ends the name there */
		cr_assert_eq(hdrs[1].name.len,
			     b == ':' ? (size_t)(buf + at - hdrs[1].name.ptr) : LANE_RUN,
			     "name, byte 0x%02x", b);
		break;
	case L_VALUE:
		cr_assert_eq(hdrs[1].value.len, LANE_RUN, "value, byte 0x%02x", b);
		break;
	case L_HOST:
		cr_assert_eq(req->host.len, LANE_RUN, "host, byte 0x%02x", b);
		break;
	default:
		break;
	}
}

Test(http_parse, works_without_a_header_array)
{
	const char *s = "GET /" H11 "Content-Length: 3\r\nX-A: b\r\n\r\n";
	struct http_request req = { 0 };

	cr_assert_eq(http_parse_request(guarded(s, strlen(s)), strlen(s), 0, &req, NULL),
		     (int)strlen(s));
	cr_assert_eq(req.num_headers, 3);
	cr_assert_eq(req.content_length, 3);
	cr_assert_view(req.host, "a");
}

Test(http_parse, header_array_capacity_bounds_fields)
{
	const char *s = "GET /" H11 "X-A: 1\r\nX-B: 2\r\n\r\n";
	struct http_header small[2];
	struct http_request req = { .headers = small, .headers_cap = 2 };

	cr_assert_eq(http_parse_request(guarded(s, strlen(s)), strlen(s), 0, &req, NULL), -EBADMSG);
	cr_assert_eq(req.error, HTTP_ERR_TOO_MANY_FIELDS);
	cr_assert_eq(req.headers, small, "the caller's array is kept");
	cr_assert_eq(req.headers_cap, 2);
}

Test(http_parse, custom_limits)
{
	struct http_limits lim = { .max_head_bytes = 64, .max_fields = 2, .max_target_bytes = 8,
				   .max_body_bytes = 100 };
	struct http_request req;
	const char *s;

	s = "GET /1234567 HTTP/1.1\r\nHost: a\r\n\r\n";
	cr_assert_eq(parse_n(s, strlen(s), &req, &lim), (int)strlen(s));
	s = "GET /12345678 HTTP/1.1\r\nHost: a\r\n\r\n";
	cr_assert_eq(parse_n(s, strlen(s), &req, &lim), -EBADMSG);
	cr_assert_eq(req.error, HTTP_ERR_TARGET_TOO_LONG);
	s = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
	cr_assert_eq(parse_n(s, strlen(s), &req, &lim), -EBADMSG);
	cr_assert_eq(req.error, HTTP_ERR_TOO_MANY_FIELDS);
	s = "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n";
	cr_assert_eq(parse_n(s, strlen(s), &req, &lim), -EBADMSG);
	cr_assert_eq(http_error_status(req.error), 413);
	s = "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n";
	cr_assert_eq(parse_n(s, strlen(s), &req, &lim), (int)strlen(s));
	s = "GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
	cr_assert_eq(parse_n(s, strlen(s), &req, &lim), -EBADMSG);
	cr_assert_eq(req.error, HTTP_ERR_HEAD_TOO_LARGE);
}

Test(http_parse, incomplete_head_waits_until_the_head_limit)
{
	struct http_limits lim = { .max_head_bytes = 32 };
	struct http_request req;
	char in[64];

	memset(in, 0, sizeof(in));
	strcpy(in, "GET / HTTP/1.1\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaa");
	cr_assert_eq(parse_n(in, 32, &req, &lim), -EAGAIN);
	cr_assert_eq(parse_n(in, 33, &req, &lim), -EBADMSG);
	cr_assert_eq(req.error, HTTP_ERR_HEAD_TOO_LARGE);
	cr_assert_eq(parse_n(in, 0, &req, &lim), -EAGAIN);
}

Test(http_parse, resume_scans_only_for_the_end)
{
	const char *s = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
	size_t len = strlen(s);
	struct http_request req = { 0 };
	const char *buf = guarded(s, len);

	/* The end may straddle the previous and the new bytes. */
	for (size_t last = 1; last < len; last++) {
		cr_assert_eq(http_parse_request(buf, len, last, &req, NULL), (int)len, "last %zu", last);
		cr_assert_view(req.host, "a");
	}
}

/* Each byte value at each offset of a run longer than two vectors, so
 * every lane of a vector scan, and the short piece after the last whole
 * vector, sees it: the result must be what the grammar says. The same
 * input cut short 0 to 16 bytes after the byte, so that the byte falls in
 * the last (overlapping) load or in the byte-wise tail, must give the
 * same error at once when the byte alone decides it, else -EAGAIN or the
 * same error. */
Test(http_parse, every_byte_in_every_lane)
{
	char in[256];

	for (int ctx = 0; ctx < L__COUNT; ctx++) {
		for (unsigned b = 0; b < 256; b++) {
			enum http_error want = lane_expect((enum lane_ctx)ctx, b);
			/* decided by the byte itself, without what follows */
			bool at_once = want == HTTP_ERR_BAD_CHAR ||
				       want == HTTP_ERR_SPACE_BEFORE_COLON;

			for (size_t k = 1; k < LANE_RUN - 1; k++) {
				struct http_request req;
				size_t at, len = lane_input((enum lane_ctx)ctx, b, k, in, &at);
				const char *buf = guarded(in, len);
				int r;

				memset(&req, 0, sizeof(req));
				req.headers = hdrs;
				req.headers_cap = sizeof(hdrs) / sizeof(hdrs[0]);
				r = http_parse_request(buf, len, 0, &req, &test_limits);
				if (want == HTTP_OK) {
					cr_assert_eq(r, (int)len, "ctx %d byte 0x%02x at %zu: %d (%s)",
						     ctx, b, k, r, http_error_str(req.error));
					lane_check_views((enum lane_ctx)ctx, b, buf, at, &req);
				} else {
					cr_assert_eq(r, -EBADMSG, "ctx %d byte 0x%02x at %zu: %d", ctx,
						     b, k, r);
					cr_assert_eq(req.error, want, "ctx %d byte 0x%02x at %zu: %s",
						     ctx, b, k, http_error_str(req.error));
				}
				for (size_t cut = at + 1; cut <= at + 17 && cut < len; cut++) {
					memset(&req, 0, sizeof(req));
					req.headers = hdrs;
					req.headers_cap = sizeof(hdrs) / sizeof(hdrs[0]);
					r = http_parse_request(guarded(in, cut), cut, 0, &req,
							       &test_limits);
					if (at_once || r != -EAGAIN) {
						cr_assert_eq(r, -EBADMSG,
							     "ctx %d byte 0x%02x at %zu cut %zu: %d",
							     ctx, b, k, cut, r);
						cr_assert_eq(req.error, want,
							     "ctx %d byte 0x%02x at %zu cut %zu: %s",
							     ctx, b, k, cut,
							     http_error_str(req.error));
					}
				}
			}
		}
	}
}

/* ---- response table ----------------------------------------------------- */

/* One response head and what it parses to, or its error; copied into each
 * parameterized test's process, hence arrays. Expected fields are checked
 * only for valid rows. */
struct resp_case {
	char name[48];
	char in[192];
	size_t len;
	size_t head_len;	/* 0 = the whole input */
	enum http_error error;	/* HTTP_OK = valid */
	int status;
	int version_minor;
	int64_t content_length;
	bool chunked, te_not_chunked, keep_alive, conn_other;
	size_t num_headers;
};

/* Valid: name, input, status, minor, Content-Length, chunked, te_not_chunked,
 * keep_alive, conn_other, fields. */
#define ROK(n, s, st, mi, cl, ch, tnc, ka, co, nh) \
	{ n, s, sizeof(s) - 1, 0, HTTP_OK, st, mi, cl, ch, tnc, ka, co, nh }
#define RBAD(n, s, e) { n, s, sizeof(s) - 1, 0, e, 0, 0, 0, false, false, false, false, 0 }
#define S200 "HTTP/1.1 200 OK\r\n"
#define NGINX_HEAD                                                                        \
	"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 03:45:00 GMT\r\n" \
	"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"

static struct resp_case resp_cases[] = {
	ROK("nginx 200", NGINX_HEAD, 200, 1, 2, false, false, true, false, 5),
	{ "head followed by its body", NGINX_HEAD "ok", sizeof(NGINX_HEAD "ok") - 1,
	  sizeof(NGINX_HEAD) - 1, HTTP_OK, 200, 1, 2, false, false, true, false, 5 },
	ROK("HTTP/1.0 closes by default", "HTTP/1.0 200 OK\r\n\r\n", 200, 0, -1, false, false, false, false, 0),
	ROK("HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n", 200, 0, -1, false, false, true, false, 1),
	ROK("empty reason after SP", "HTTP/1.1 204 \r\n\r\n", 204, 1, -1, false, false, true, false, 0),
	ROK("no SP, no reason", "HTTP/1.1 204\r\n\r\n", 204, 1, -1, false, false, true, false, 0),
	ROK("reason with HTAB and obs-text", "HTTP/1.1 404 Not\tFound \xc3\xa9 at all\r\n\r\n", 404, 1, -1, false, false, true, false, 0),
	ROK("interim 100", "HTTP/1.1 100 Continue\r\n\r\n", 100, 1, -1, false, false, true, false, 0),
	ROK("status 999", "HTTP/1.1 999 Odd\r\n\r\n", 999, 1, -1, false, false, true, false, 0),
	ROK("chunked", S200 "Transfer-Encoding: chunked\r\n\r\n", 200, 1, -1, true, false, true, false, 1),
	ROK("CHUNKED, name in any case", S200 "TRANSFER-encoding: CHUNKED\r\n\r\n", 200, 1, -1, true, false, true, false, 1),
	ROK("gzip, chunked", S200 "Transfer-Encoding: gzip, chunked\r\n\r\n", 200, 1, -1, true, false, true, false, 1),
	ROK("gzip field then chunked field", S200 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 200, 1, -1, true, false, true, false, 2),
	ROK("chunked, trailing empty element", S200 "Transfer-Encoding: chunked ,\r\n\r\n", 200, 1, -1, true, false, true, false, 1),
	ROK("chunked, gzip ends at close", S200 "Transfer-Encoding: chunked, gzip\r\n\r\n", 200, 1, -1, false, true, true, false, 1),
	ROK("chunked field then gzip field", S200 "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 200, 1, -1, false, true, true, false, 2),
	ROK("chunked with a parameter", S200 "Transfer-Encoding: chunked;q=1\r\n\r\n", 200, 1, -1, false, true, true, false, 1),
	ROK("empty Transfer-Encoding", S200 "Transfer-Encoding:\r\n\r\n", 200, 1, -1, false, true, true, false, 1),
	ROK("CL and TE both reported", S200 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 200, 1, 5, true, false, true, false, 2),
	ROK("duplicate CL, same value", S200 "Content-Length: 5\r\ncontent-length: 5\r\n\r\n", 200, 1, 5, false, false, true, false, 2),
	ROK("CL of 18 digits", S200 "Content-Length: 999999999999999999\r\n\r\n", 200, 1, 999999999999999999LL, false, false, true, false, 1),
	ROK("CL with leading zeros and OWS", S200 "CONTENT-LENGTH:\t 0012 \t\r\n\r\n", 200, 1, 12, false, false, true, false, 1),
	ROK("CL zero", S200 "Content-Length: 0\r\n\r\n", 200, 1, 0, false, false, true, false, 1),
	ROK("Connection close", S200 "Connection: close\r\n\r\n", 200, 1, -1, false, false, false, false, 1),
	ROK("CONNECTION: CLOSE", S200 "CONNECTION: CLOSE\r\n\r\n", 200, 1, -1, false, false, false, false, 1),
	ROK("close wins over keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\n\r\n", 200, 0, -1, false, false, false, false, 1),
	ROK("Connection names an option", S200 "Connection: Upgrade, keep-alive\r\n\r\n", 200, 1, -1, false, false, true, true, 1),
	ROK("Connection option alone", S200 "Connection: X-Foo\r\n\r\n", 200, 1, -1, false, false, true, true, 1),
	ROK("close-ish token is an option", S200 "Connection: closed\r\n\r\n", 200, 1, -1, false, false, true, true, 1),
	ROK("names that only look like framing fields",
	    S200 "Content-Lengtx: x\r\nXontent-Length: y\r\nConnectiox: close\r\nTransfer-Encodinf: chunked\r\nContent-Lengths: z\r\n\r\n",
	    200, 1, -1, false, false, true, false, 5),
	ROK("empty value", S200 "X-E:\r\n\r\n", 200, 1, -1, false, false, true, false, 1),
	ROK("long value with tabs", S200 "X-T: aaaaaaaaaaa\tbbbbbbbbbbbbbbbbbbbbb\t\tc\r\n\r\n", 200, 1, -1, false, false, true, false, 1),
	ROK("obs-text and punctuation in value", S200 "X-U: caf\xc3\xa9 \"q\" (c) ~!@#$%^&*\r\n\r\n", 200, 1, -1, false, false, true, false, 1),
	ROK("every tchar in a name", S200 "!#$%&'*+-.^_`|~09AZaz: v\r\n\r\n", 200, 1, -1, false, false, true, false, 1),

	/* status line */
	RBAD("HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", HTTP_ERR_VERSION),
	RBAD("HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n", HTTP_ERR_VERSION),
	RBAD("HTTP/0.9", "HTTP/0.9 200 OK\r\n\r\n", HTTP_ERR_VERSION),
	RBAD("lower-case version", "http/1.1 200 OK\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("version with three digits", "HTTP/1.10 200 OK\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("two spaces before status", "HTTP/1.1  200 OK\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("status of two digits", "HTTP/1.1 20 OK\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("status of four digits", "HTTP/1.1 2000 OK\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("status below 100", "HTTP/1.1 099 Odd\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("status with a letter", "HTTP/1.1 2x0 OK\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("tab after status", "HTTP/1.1 200\tOK\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("empty line before status line", "\r\nHTTP/1.1 200 OK\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("short reply, not HTTP", "OK\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("short reply, cut version", "HTTP/\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("short reply, HTTP/2.0", "HTTP/2.0\r\n\r\n", HTTP_ERR_VERSION),
	RBAD("short reply, HTTP/0x", "HTTP/0x\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("short reply, no status", "HTTP/1.1 \r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("bare LF in reason", "HTTP/1.1 200 O\nK\r\n\r\n", HTTP_ERR_BARE_LF),
	RBAD("bare CR in reason", "HTTP/1.1 200 O\rK\r\n\r\n", HTTP_ERR_BARE_LF),
	RBAD("CTL in reason", "HTTP/1.1 200 O\001K\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("NUL in reason", "HTTP/1.1 200 O\000K\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("bare LF ending status line", "HTTP/1.1 200 OK\nServer: a\r\n\r\n", HTTP_ERR_BARE_LF),
	RBAD("bare LF after status without reason", "HTTP/1.1 200\n\r\n", HTTP_ERR_SYNTAX),

	/* field lines */
	RBAD("bare LF after field", S200 "Server: a\n\r\n", HTTP_ERR_BARE_LF),
	RBAD("bare LF ending head", S200 "Server: a\r\n\n", HTTP_ERR_BARE_LF),
	RBAD("bare CR ending head", S200 "Server: a\r\n\rX\r\n\r\n", HTTP_ERR_BARE_LF),
	RBAD("bare CR in value", S200 "X-A: 1\r2\r\n\r\n", HTTP_ERR_BARE_LF),
	RBAD("obs-fold", S200 "X-A: 1\r\n 2\r\n\r\n", HTTP_ERR_OBS_FOLD),
	RBAD("tab fold", S200 "X-A: 1\r\n\t2\r\n\r\n", HTTP_ERR_OBS_FOLD),
	RBAD("space before colon", S200 "Content-Length : 5\r\n\r\n", HTTP_ERR_SPACE_BEFORE_COLON),
	RBAD("tab before colon", S200 "X-A\t: 5\r\n\r\n", HTTP_ERR_SPACE_BEFORE_COLON),
	RBAD("empty field name", S200 ": x\r\n\r\n", HTTP_ERR_SYNTAX),
	RBAD("field name with slash", S200 "X/Y: x\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("NUL in name", S200 "X\000A: 1\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("non-ASCII in name", S200 "X\xc3\xa9: 1\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("line without colon", S200 "Server\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("NUL in value", S200 "X-A: 1\0002\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("CTL in value", S200 "X-A: \001\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("DEL in value", S200 "X-A: \177\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("CTL deep in a long value", S200 "X-A: aaaaaaaaaaaaaaaaaaaaaaa\033b\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("NUL after a tab in a long value", S200 "X-A: aaaaaaaaa\t\000aaaaaaaaaaaaaaa\r\n\r\n", HTTP_ERR_BAD_CHAR),
	RBAD("DEL deep in a long value", S200 "X-A: aaaaaaaaaaaaaaaa\177aaaaaaaaaaa\r\n\r\n", HTTP_ERR_BAD_CHAR),

	/* Content-Length */
	RBAD("CL differing duplicate", S200 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", HTTP_ERR_DUP_CONTENT_LENGTH),
	RBAD("CL list", S200 "Content-Length: 5, 5\r\n\r\n", HTTP_ERR_BAD_CONTENT_LENGTH),
	RBAD("CL empty", S200 "Content-Length:\r\n\r\n", HTTP_ERR_BAD_CONTENT_LENGTH),
	RBAD("CL of 19 digits", S200 "Content-Length: 1000000000000000000\r\n\r\n", HTTP_ERR_BAD_CONTENT_LENGTH),
	RBAD("CL plus sign", S200 "Content-Length: +5\r\n\r\n", HTTP_ERR_BAD_CONTENT_LENGTH),
	RBAD("CL minus sign", S200 "Content-Length: -5\r\n\r\n", HTTP_ERR_BAD_CONTENT_LENGTH),
	RBAD("CL inner space", S200 "Content-Length: 5 5\r\n\r\n", HTTP_ERR_BAD_CONTENT_LENGTH),
	RBAD("CL hex", S200 "Content-Length: 0x5\r\n\r\n", HTTP_ERR_BAD_CONTENT_LENGTH),
};

static struct http_header resp_hdrs[128];

static int parse_resp(const char *buf, size_t len, size_t last_len, struct http_response *resp)
{
	memset(resp, 0, sizeof(*resp));
	resp->headers = resp_hdrs;
	resp->headers_cap = sizeof(resp_hdrs) / sizeof(resp_hdrs[0]);
	return http_parse_response(buf, len, last_len, resp);
}

static void check_resp(const struct resp_case *tc, int r, const struct http_response *resp)
{
	size_t head_len = tc->head_len ? tc->head_len : tc->len;

	if (tc->error != HTTP_OK) {
		cr_assert_eq(r, -EBADMSG, "%s: returned %d, want -EBADMSG", tc->name, r);
		cr_assert_eq(resp->error, tc->error, "%s: error %s, want %s", tc->name,
			     http_error_str(resp->error), http_error_str(tc->error));
		return;
	}
	cr_assert_eq(r, (int)head_len, "%s: returned %d (%s), want %zu", tc->name, r,
		     http_error_str(resp->error), head_len);
	cr_assert_eq(resp->error, HTTP_OK, "%s", tc->name);
	cr_assert_eq(resp->status, tc->status, "%s: status %d", tc->name, resp->status);
	cr_assert_eq(resp->version_minor, tc->version_minor, "%s", tc->name);
	cr_assert_eq(resp->content_length, tc->content_length, "%s: Content-Length %lld", tc->name,
		     (long long)resp->content_length);
	cr_assert_eq(resp->chunked, tc->chunked, "%s: chunked", tc->name);
	cr_assert_eq(resp->te_not_chunked, tc->te_not_chunked, "%s: te_not_chunked", tc->name);
	cr_assert_eq(resp->keep_alive, tc->keep_alive, "%s: keep_alive", tc->name);
	cr_assert_eq(resp->conn_other, tc->conn_other, "%s: conn_other", tc->name);
	cr_assert_eq(resp->num_headers, tc->num_headers, "%s: %zu fields", tc->name,
		     resp->num_headers);
	cr_assert_not_null(resp->reason.ptr, "%s", tc->name);
}

ParameterizedTestParameters(http_response, table)
{
	return cr_make_param_array(struct resp_case, resp_cases,
				   sizeof(resp_cases) / sizeof(resp_cases[0]));
}

ParameterizedTest(struct resp_case *tc, http_response, table)
{
	struct http_response resp;

	check_resp(tc, parse_resp(guarded(tc->in, tc->len), tc->len, 0, &resp), &resp);
}

/* Every prefix, each at the end of the guarded page, with and without
 * last_len: a valid head gives -EAGAIN until its last byte, then the whole
 * result; an invalid one gives -EAGAIN, then the same error as the whole. */
static void resp_bytewise(const struct resp_case *tc, bool resume)
{
	struct http_response resp;
	size_t head_len = tc->head_len ? tc->head_len : tc->len, n, last = 0;
	int r = -EAGAIN;

	for (n = 0; n <= tc->len; n++) {
		r = parse_resp(guarded(tc->in, n), n, resume ? last : 0, &resp);
		if (r != -EAGAIN)
			break;
		cr_assert_eq(resp.error, HTTP_OK, "%s", tc->name);
		last = n;
	}
	if (tc->error == HTTP_OK)
		cr_assert_eq(n, head_len, "%s: result %d after %zu of %zu bytes", tc->name, r, n,
			     head_len);
	check_resp(tc, r, &resp);
}

ParameterizedTestParameters(http_response, bytewise)
{
	return cr_make_param_array(struct resp_case, resp_cases,
				   sizeof(resp_cases) / sizeof(resp_cases[0]));
}

ParameterizedTest(struct resp_case *tc, http_response, bytewise)
{
	resp_bytewise(tc, false);
}

ParameterizedTestParameters(http_response, bytewise_resume)
{
	return cr_make_param_array(struct resp_case, resp_cases,
				   sizeof(resp_cases) / sizeof(resp_cases[0]));
}

ParameterizedTest(struct resp_case *tc, http_response, bytewise_resume)
{
	resp_bytewise(tc, true);
}

Test(http_response, views_point_into_the_buffer)
{
	const char *s = "HTTP/1.1 404 Not Found\r\nServer:  nginx \t\r\nX-Empty:\r\nVia: 1.1 a\r\n\r\n";
	size_t len = strlen(s);
	struct http_response resp;
	const char *buf = guarded(s, len);

	cr_assert_eq(parse_resp(buf, len, 0, &resp), (int)len);
	cr_assert_eq(resp.status, 404);
	cr_assert_view(resp.reason, "Not Found");
	cr_assert_eq(resp.reason.ptr, buf + 13);
	cr_assert_eq(resp.num_headers, 3);
	cr_assert_view(resp_hdrs[0].name, "Server");
	cr_assert_view(resp_hdrs[0].value, "nginx");
	cr_assert_eq(resp_hdrs[0].name.ptr, buf + 24);
	cr_assert_view(resp_hdrs[1].name, "X-Empty");
	cr_assert_not_null(resp_hdrs[1].value.ptr);
	cr_assert_eq(resp_hdrs[1].value.len, 0);
	cr_assert_view(resp_hdrs[2].value, "1.1 a");
}

Test(http_response, interim_then_final_head)
{
	const char *a = "HTTP/1.1 100 Continue\r\n\r\n";
	const char *b = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	char all[128];
	size_t alen = strlen(a), len;
	struct http_response resp;
	const char *buf;

	len = (size_t)snprintf(all, sizeof(all), "%s%s", a, b);
	buf = guarded(all, len);
	cr_assert_eq(parse_resp(buf, len, 0, &resp), (int)alen);
	cr_assert_eq(resp.status, 100);
	cr_assert_eq(parse_resp(buf + alen, len - alen, 0, &resp), (int)strlen(b));
	cr_assert_eq(resp.status, 200);
	cr_assert_eq(resp.content_length, 0);
}

Test(http_response, header_array_capacity_bounds_fields)
{
	const char *s = S200 "A: 1\r\nB: 2\r\n\r\n";
	struct http_header small[2];
	struct http_response resp = { .headers = small, .headers_cap = 2 };

	cr_assert_eq(http_parse_response(guarded(s, strlen(s)), strlen(s), 0, &resp),
		     (int)strlen(s));
	cr_assert_eq(resp.num_headers, 2);
	s = S200 "A: 1\r\nB: 2\r\nC: 3\r\n\r\n";
	cr_assert_eq(http_parse_response(guarded(s, strlen(s)), strlen(s), 0, &resp), -EBADMSG);
	cr_assert_eq(resp.error, HTTP_ERR_TOO_MANY_FIELDS);
	cr_assert_eq(resp.headers, small, "the caller's array is kept");
	cr_assert_eq(resp.headers_cap, 2);
}

Test(http_response, works_without_a_header_array)
{
	const char *s = S200 "Content-Length: 3\r\nConnection: close\r\nX-A: b\r\n\r\n";
	struct http_response resp = { 0 };

	cr_assert_eq(http_parse_response(guarded(s, strlen(s)), strlen(s), 0, &resp),
		     (int)strlen(s));
	cr_assert_eq(resp.num_headers, 3);
	cr_assert_eq(resp.content_length, 3);
	cr_assert_not(resp.keep_alive);
}

Test(http_response, resume_finds_an_end_across_the_old_bytes)
{
	const char *s = NGINX_HEAD;
	size_t len = strlen(s);
	struct http_response resp;
	const char *buf = guarded(s, len);

	for (size_t last = 1; last < len; last++) {
		cr_assert_eq(parse_resp(buf, len, last, &resp), (int)len, "last %zu", last);
		cr_assert_eq(resp.content_length, 2, "last %zu", last);
	}
	cr_assert_eq(parse_resp(buf, 0, 0, &resp), -EAGAIN);
}

/* ---- chunked ------------------------------------------------------------ */

/* A chunked body and what it decodes to, or its error; copied into each
 * parameterized test's process, hence arrays rather than pointers. */
struct chunk_case {
	char name[48];
	char in[96];
	size_t len;
	char out[48];	   /* decoded data */
	char leftover[24]; /* bytes after the body */
	enum http_error error; /* HTTP_OK = valid */
	uint64_t max_body;    /* 0 = default */
};

#define CK(n, s, out, rest) { n, s, sizeof(s) - 1, out, rest, HTTP_OK, 0 }
#define CBAD(n, s, e) { n, s, sizeof(s) - 1, "", "", e, 0 }
#define CBAD_LIM(n, s, e, lim) { n, s, sizeof(s) - 1, "", "", e, lim }

static struct chunk_case chunk_cases[] = {
	CK("one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", ""),
	CK("empty body", "0\r\n\r\n", "", ""),
	CK("several chunks, hex digits", "3\r\nabc\r\nA\r\n0123456789\r\na\r\nABCDEFGHIJ\r\n0\r\n\r\n",
	   "abc0123456789ABCDEFGHIJ", ""),
	CK("leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello", ""),
	CK("extensions", "5;a=b;c\r\nhello\r\n0;last\r\n\r\n", "hello", ""),
	CK("extension with BWS", "5 \t;a = b\r\nhello\r\n0\r\n\r\n", "hello", ""),
	CK("quoted extension", "5;a=\"b c\"\r\nhello\r\n0\r\n\r\n", "hello", ""),
	CK("trailers", "5\r\nhello\r\n0\r\nX-T: 1\r\nY:\r\n\r\n", "hello", ""),
	CK("CRLF in data", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n", ""),
	CK("pipelined leftover", "2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "hi", "GET / HTTP/1.1\r\n"),
	CK("body at the limit", "8\r\n12345678\r\n2\r\n90\r\n0\r\n\r\n", "1234567890", ""),

	CBAD("no size", "\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("not hex", "g\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("negative size", "-5\r\nhello\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("space before size", " 5\r\nhello\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("trailing space without extension", "5 \r\nhello\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("bare LF after size", "5\nhello\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("data longer than size", "5\r\nhello!\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("data shorter than size", "5\r\nhell\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("bare LF after data", "5\r\nhello\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("size overflow, 17 digits", "10000000000000000\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("size overflow, 17 zeros", "00000000000000000\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("size of 2^64-1 is above the limit", "ffffffffffffffff\r\n", HTTP_ERR_BODY_TOO_LARGE),
	CBAD("CTL in extension", "5;a\001\r\nhello\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("NUL in extension", "5;a\000\r\nhello\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("trailer obs-fold", "0\r\nX: 1\r\n 2\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("trailer without colon", "0\r\nX\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("trailer space before colon", "0\r\nX : 1\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("trailer NUL", "0\r\nX: \000\r\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("trailer bare LF", "0\r\nX: 1\n\r\n", HTTP_ERR_BAD_CHUNK),
	CBAD("final bare CR", "0\r\n\rX", HTTP_ERR_BAD_CHUNK),
	CBAD_LIM("one chunk above the limit", "b\r\n", HTTP_ERR_BODY_TOO_LARGE, 10),
	CBAD_LIM("chunks add up above the limit", "6\r\nabcdef\r\n5\r\n", HTTP_ERR_BODY_TOO_LARGE, 10),
};

/* Decodes in pieces split at the given offsets (ascending, ending at len);
 * each piece at a guard page. Returns the last result; out gets the data
 * and then the leftover. */
static int decode_pieces(const struct chunk_case *tc, const size_t *cuts, size_t ncuts, char *out,
			 size_t *out_len, size_t *leftover, enum http_error *err)
{
	struct http_limits lim = { .max_body_bytes = tc->max_body };
	struct http_chunked c;
	size_t from = 0;
	int r = -EAGAIN;

	http_chunked_init(&c, &lim);
	*out_len = 0;
	*leftover = 0;
	for (size_t i = 0; i < ncuts; i++) {
		size_t n = cuts[i] - from;
		char *buf = guarded(tc->in + from, n);

		r = http_chunked_decode(&c, buf, &n);
		memcpy(out + *out_len, buf, n);
		*out_len += n;
		if (r >= 0) {
			/* What was not fed yet follows the leftover. */
			memcpy(out + *out_len, buf + n, (size_t)r);
			memcpy(out + *out_len + r, tc->in + cuts[i], tc->len - cuts[i]);
			*leftover = (size_t)r + tc->len - cuts[i];
			break;
		}
		if (r != -EAGAIN)
			break;
		from = cuts[i];
	}
	*err = c.error;
	return r;
}

static void check_chunk_result(const struct chunk_case *tc, const char *how, int r,
			       const char *out, size_t out_len, size_t leftover,
			       enum http_error err)
{
	if (tc->error == HTTP_OK) {
		cr_assert_geq(r, 0, "%s (%s): returned %d (%s)", tc->name, how, r,
			      http_error_str(err));
		cr_assert_eq(out_len, strlen(tc->out), "%s (%s)", tc->name, how);
		cr_assert_eq(memcmp(out, tc->out, out_len), 0, "%s (%s)", tc->name, how);
		cr_assert_eq(leftover, strlen(tc->leftover), "%s (%s)", tc->name, how);
		cr_assert_eq(memcmp(out + out_len, tc->leftover, leftover), 0, "%s (%s)", tc->name,
			     how);
	} else {
		cr_assert_eq(r, -EBADMSG, "%s (%s): returned %d", tc->name, how, r);
		cr_assert_eq(err, tc->error, "%s (%s): %s, want %s", tc->name, how,
			     http_error_str(err), http_error_str(tc->error));
	}
}

ParameterizedTestParameters(http_chunked, table)
{
	return cr_make_param_array(struct chunk_case, chunk_cases,
				   sizeof(chunk_cases) / sizeof(chunk_cases[0]));
}

ParameterizedTest(struct chunk_case *tc, http_chunked, table)
{
	char out[256];
	size_t out_len, leftover, cut = tc->len;
	enum http_error err;
	int r = decode_pieces(tc, &cut, 1, out, &out_len, &leftover, &err);

	check_chunk_result(tc, "whole", r, out, out_len, leftover, err);
}

ParameterizedTestParameters(http_chunked, every_split)
{
	return cr_make_param_array(struct chunk_case, chunk_cases,
				   sizeof(chunk_cases) / sizeof(chunk_cases[0]));
}

/* Two pieces at every split point, then one byte at a time. */
ParameterizedTest(struct chunk_case *tc, http_chunked, every_split)
{
	size_t cuts[256], out_len, leftover;
	enum http_error err;
	char out[256], how[32];
	int r;

	cr_assert_lt(tc->len, sizeof(cuts) / sizeof(cuts[0]));
	for (size_t at = 1; at < tc->len; at++) {
		cuts[0] = at;
		cuts[1] = tc->len;
		r = decode_pieces(tc, cuts, 2, out, &out_len, &leftover, &err);
		snprintf(how, sizeof(how), "split at %zu", at);
		check_chunk_result(tc, how, r, out, out_len, leftover, err);
	}
	for (size_t i = 0; i < tc->len; i++)
		cuts[i] = i + 1;
	r = decode_pieces(tc, cuts, tc->len, out, &out_len, &leftover, &err);
	check_chunk_result(tc, "bytewise", r, out, out_len, leftover, err);
}

Test(http_chunked, extension_length_is_bounded)
{
	struct http_limits lim = { .max_chunk_ext_bytes = 8 };
	struct http_chunked c;
	char ok[] = "1;abcdef\r\nx\r\n0\r\n\r\n";  /* ";abcdef" + 1 = 7 bytes */
	char ok8[] = "1;abcdefg\r\nx\r\n0\r\n\r\n";
	char bad[] = "1;abcdefgh\r\nx\r\n0\r\n\r\n";
	size_t n;

	http_chunked_init(&c, &lim);
	n = sizeof(ok) - 1;
	cr_assert_eq(http_chunked_decode(&c, guarded(ok, n), &n), 0);
	http_chunked_init(&c, &lim);
	n = sizeof(ok8) - 1;
	cr_assert_eq(http_chunked_decode(&c, guarded(ok8, n), &n), 0);
	http_chunked_init(&c, &lim);
	n = sizeof(bad) - 1;
	cr_assert_eq(http_chunked_decode(&c, guarded(bad, n), &n), -EBADMSG);
	cr_assert_eq(c.error, HTTP_ERR_CHUNK_EXT_TOO_LONG);
	cr_assert_eq(http_error_status(c.error), 400);

	/* The default bound is 1 KiB. */
	{
		char big[2048];
		size_t len;

		http_chunked_init(&c, NULL);
		memcpy(big, "1;", 2);
		memset(big + 2, 'e', 1100);
		memcpy(big + 1102, "\r\n", 2);
		len = 1104;
		cr_assert_eq(http_chunked_decode(&c, guarded(big, len), &len), -EBADMSG);
		cr_assert_eq(c.error, HTTP_ERR_CHUNK_EXT_TOO_LONG);
	}
}

Test(http_chunked, trailer_section_is_bounded)
{
	struct http_limits lim = { .max_head_bytes = 16 };
	struct http_chunked c;
	char fits[] = "0\r\nX: 123456789\r\n\r\n";	 /* trailer section 16 bytes */
	char over[] = "0\r\nX: 1234567890\r\n\r\n";
	size_t n;

	http_chunked_init(&c, &lim);
	n = sizeof(fits) - 1;
	cr_assert_eq(http_chunked_decode(&c, guarded(fits, n), &n), 0);
	cr_assert_eq(n, 0);
	http_chunked_init(&c, &lim);
	n = sizeof(over) - 1;
	cr_assert_eq(http_chunked_decode(&c, guarded(over, n), &n), -EBADMSG);
	cr_assert_eq(c.error, HTTP_ERR_TRAILER_TOO_LARGE);
	cr_assert_eq(http_error_status(c.error), 431);
}

Test(http_chunked, body_limit_is_413)
{
	struct http_limits lim = { .max_body_bytes = 4 };
	struct http_chunked c;
	char body[] = "2\r\nab\r\n3\r\n";
	size_t n = sizeof(body) - 1;

	http_chunked_init(&c, &lim);
	cr_assert_eq(http_chunked_decode(&c, guarded(body, n), &n), -EBADMSG);
	cr_assert_eq(n, 2, "data before the refused chunk was decoded");
	cr_assert_eq(http_error_status(c.error), 413);
}

Test(http_chunked, refuses_calls_after_the_end)
{
	struct http_chunked c;
	char body[] = "0\r\n\r\n";
	size_t n = 5;

	http_chunked_init(&c, NULL);
	cr_assert_eq(http_chunked_decode(&c, guarded(body, n), &n), 0);
	n = 5;
	cr_assert_eq(http_chunked_decode(&c, guarded(body, n), &n), -EBADMSG);
	cr_assert_eq(n, 0);
}

Test(http_chunked, empty_input_asks_for_more)
{
	struct http_chunked c;
	size_t n = 0;
	char b[1];

	http_chunked_init(&c, NULL);
	cr_assert_eq(http_chunked_decode(&c, b, &n), -EAGAIN);
	cr_assert_eq(n, 0);
}

/* ---- statuses ----------------------------------------------------------- */

Test(http_status, every_error_has_a_status_and_a_description)
{
	static const int want[HTTP_ERR__COUNT] = {
		[HTTP_OK] = 200,
		[HTTP_ERR_SYNTAX] = 400,
		[HTTP_ERR_BAD_CHAR] = 400,
		[HTTP_ERR_BARE_LF] = 400,
		[HTTP_ERR_OBS_FOLD] = 400,
		[HTTP_ERR_SPACE_BEFORE_COLON] = 400,
		[HTTP_ERR_BAD_CONTENT_LENGTH] = 400,
		[HTTP_ERR_DUP_CONTENT_LENGTH] = 400,
		[HTTP_ERR_CL_AND_TE] = 400,
		[HTTP_ERR_TE_NOT_CHUNKED] = 400,
		[HTTP_ERR_TE_UNSUPPORTED] = 501,
		[HTTP_ERR_HOST_MISSING] = 400,
		[HTTP_ERR_HOST_DUPLICATE] = 400,
		[HTTP_ERR_BAD_HOST] = 400,
		[HTTP_ERR_TARGET_TOO_LONG] = 414,
		[HTTP_ERR_HEAD_TOO_LARGE] = 431,
		[HTTP_ERR_TOO_MANY_FIELDS] = 431,
		[HTTP_ERR_VERSION] = 505,
		[HTTP_ERR_EXPECTATION] = 417,
		[HTTP_ERR_BODY_TOO_LARGE] = 413,
		[HTTP_ERR_BAD_CHUNK] = 400,
		[HTTP_ERR_CHUNK_EXT_TOO_LONG] = 400,
		[HTTP_ERR_TRAILER_TOO_LARGE] = 431,
	};

	for (int e = 0; e < HTTP_ERR__COUNT; e++) {
		cr_assert_eq(http_error_status((enum http_error)e), want[e], "error %d", e);
		cr_assert_gt(strlen(http_error_str((enum http_error)e)), 0, "error %d", e);
		cr_assert_gt(strlen(http_status_reason(want[e])), 0, "status %d", want[e]);
	}
	cr_assert_eq(http_error_status(HTTP_ERR__COUNT), 400);
	cr_assert_str_eq(http_error_str(HTTP_ERR__COUNT), "unknown error");
}

/* Status and its reason phrase; test table row. */
struct reason_case {
	int status;
	const char *reason;
};

Test(http_status, reason_phrases)
{
	static const struct reason_case cases[] = {
		{ 100, "Continue" },
		{ 200, "OK" },
		{ 400, "Bad Request" },
		{ 403, "Forbidden" },
		{ 408, "Request Timeout" },
		{ 413, "Content Too Large" },
		{ 414, "URI Too Long" },
		{ 417, "Expectation Failed" },
		{ 429, "Too Many Requests" },
		{ 431, "Request Header Fields Too Large" },
		{ 501, "Not Implemented" },
		{ 502, "Bad Gateway" },
		{ 503, "Service Unavailable" },
		{ 504, "Gateway Timeout" },
		{ 505, "HTTP Version Not Supported" },
		{ 299, "" },
		{ -1, "" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_str_eq(http_status_reason(cases[i].status), cases[i].reason, "%d",
				 cases[i].status);
}
