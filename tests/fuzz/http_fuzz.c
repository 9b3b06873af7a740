/* http_fuzz.c - libFuzzer target for the HTTP request and response parsers
 * and the chunked decoder.
 *
 * The input is parsed as a request head: twice whole (same result), then fed
 * in pieces with last_len (same result once it gives one). If the head says
 * chunked, the rest is decoded whole and in pieces (same data, leftover and
 * error). The same input is then parsed as a response head, whole and in
 * pieces, and compared with a slow reference parser written from the rules
 * in http.h (line by line, byte by byte, no word tricks). Piece sizes come
 * from a hash of the input, so runs are repeatable. Any disagreement aborts;
 * over-reads are ASan's job.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FIELDS 64

/* Parse result plus a private copy of the header array; lives per run. */
struct parsed {
	int r;
	struct http_request req;
	struct http_header hdrs[MAX_FIELDS];
};

static const struct http_limits limits = {
	.max_head_bytes = 4096,
	.max_fields = MAX_FIELDS,
	.max_target_bytes = 1024,
	.max_body_bytes = 1 << 16,
	.max_chunk_ext_bytes = 64,
	.client_id_name = "Client-ID",
};

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void parse_into(struct parsed *p, const char *buf, size_t len, size_t last_len)
{
	memset(p, 0, sizeof(*p));
	p->req.headers = p->hdrs;
	p->req.headers_cap = MAX_FIELDS;
	p->r = http_parse_request(buf, len, last_len, &p->req, &limits);
}

static bool str_eq(struct http_str a, struct http_str b)
{
	return a.ptr == b.ptr && a.len == b.len;
}

static void check_same(const struct parsed *a, const struct parsed *b, const char *what)
{
	const struct http_request *x = &a->req, *y = &b->req;
	bool same = a->r == b->r && x->error == y->error;

	if (same && a->r >= 0) {
		same = str_eq(x->method, y->method) && str_eq(x->target, y->target) &&
		       str_eq(x->authority, y->authority) && str_eq(x->path, y->path) &&
		       str_eq(x->query, y->query) && x->target_form == y->target_form &&
		       x->version_minor == y->version_minor && x->num_headers == y->num_headers &&
		       str_eq(x->host, y->host) && str_eq(x->client_id, y->client_id) &&
		       x->content_length == y->content_length && x->chunked == y->chunked &&
		       x->keep_alive == y->keep_alive && x->expect_continue == y->expect_continue;
		for (size_t i = 0; same && i < x->num_headers; i++)
			same = str_eq(a->hdrs[i].name, b->hdrs[i].name) &&
			       str_eq(a->hdrs[i].value, b->hdrs[i].value);
	}
	if (!same) {
		fprintf(stderr, "%s: %d (%s) vs %d (%s)\n", what, a->r, http_error_str(x->error), b->r,
			http_error_str(y->error));
		abort();
	}
}

static void check_head(const struct parsed *p, const char *buf, size_t len)
{
	const struct http_request *req = &p->req;

	if (p->r == -EAGAIN || p->r == -EBADMSG) {
		if ((p->r == -EBADMSG) != (req->error != HTTP_OK))
			abort();
		return;
	}
	if (p->r <= 0 || (size_t)p->r > len || req->error != HTTP_OK)
		abort();
	/* Every view lies inside the head. */
	if (req->method.ptr < buf || req->target.ptr + req->target.len > buf + p->r)
		abort();
	for (size_t i = 0; i < req->num_headers; i++)
		if (p->hdrs[i].value.ptr < buf ||
		    p->hdrs[i].value.ptr + p->hdrs[i].value.len > buf + p->r)
			abort();
	if (req->chunked && req->content_length != -1)
		abort();
}

/* Decodes body[0..len) in pieces of random size (max_piece 0: whole). */
static int decode(const char *body, size_t len, uint64_t *seed, size_t max_piece, char *out,
		  size_t *out_len, enum http_error *err)
{
	struct http_chunked c;
	size_t from = 0;
	int r = -EAGAIN;

	http_chunked_init(&c, &limits);
	*out_len = 0;
	while (from < len) {
		size_t n = max_piece ? 1 + rng_next(seed) % max_piece : len;
		char *piece;

		if (n > len - from)
			n = len - from;
		/* An exact-size heap copy, so ASan sees any over-read. */
		piece = malloc(n);
		if (!piece)
			abort();
		memcpy(piece, body + from, n);
		from += n;
		r = http_chunked_decode(&c, piece, &n);
		memcpy(out + *out_len, piece, n);
		*out_len += n;
		if (r >= 0) {
			memcpy(out + *out_len, piece + n, (size_t)r);
			memcpy(out + *out_len + r, body + from, len - from);
			r += (int)(len - from);
		}
		free(piece);
		if (r != -EAGAIN)
			break;
	}
	*err = c.error;
	return r;
}

/* ---- responses ---- */

/* Response parse result plus a private copy of the header array. */
struct parsed_resp {
	int r;
	struct http_response resp;
	struct http_header hdrs[MAX_FIELDS];
};

static void parse_resp_into(struct parsed_resp *p, const char *buf, size_t len, size_t last_len)
{
	memset(p, 0, sizeof(*p));
	p->resp.headers = p->hdrs;
	p->resp.headers_cap = MAX_FIELDS;
	p->r = http_parse_response(buf, len, last_len, &p->resp);
}

static bool same_resp(const struct parsed_resp *a, const struct parsed_resp *b)
{
	const struct http_response *x = &a->resp, *y = &b->resp;
	bool same = a->r == b->r && x->error == y->error;

	if (same && a->r >= 0) {
		same = x->version_minor == y->version_minor && x->status == y->status &&
		       str_eq(x->reason, y->reason) && x->num_headers == y->num_headers &&
		       x->content_length == y->content_length && x->chunked == y->chunked &&
		       x->te_not_chunked == y->te_not_chunked && x->keep_alive == y->keep_alive &&
		       x->conn_other == y->conn_other;
		for (size_t i = 0; same && i < x->num_headers; i++)
			same = str_eq(a->hdrs[i].name, b->hdrs[i].name) &&
			       str_eq(a->hdrs[i].value, b->hdrs[i].value);
	}
	return same;
}

static bool ref_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool ref_vchar(unsigned char ch)
{
	return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

static bool ref_ows(char ch)
{
	return ch == ' ' || ch == '\t';
}

static struct http_str ref_trim(const char *s, const char *e)
{
	while (s < e && ref_ows(*s))
		s++;
	while (e > s && ref_ows(e[-1]))
		e--;
	return (struct http_str){ s, (size_t)(e - s) };
}

static bool ref_ieq(struct http_str s, const char *lit)
{
	return s.len == strlen(lit) && strncasecmp(s.ptr, lit, s.len) == 0;
}

/* The reference: the head ends at the first CRLFCRLF; -EAGAIN without one,
 * else -EBADMSG (error not classified) or the head length and the results. */
static int ref_parse_response(const char *buf, size_t len, struct parsed_resp *out)
{
	struct http_response *o = &out->resp;
	const char *end = NULL, *p, *le;
	bool have_te = false, last_chunked = false, close = false, ka = false;

	for (size_t i = 0; i + 4 <= len && !end; i++)
		if (memcmp(buf + i, "\r\n\r\n", 4) == 0)
			end = buf + i + 2;	/* the final CRLF */
	memset(out, 0, sizeof(*out));
	o->content_length = -1;
	if (!end)
		return -EAGAIN;
	/* Status line: to its CRLF, no other CR or LF. */
	le = memchr(buf, '\r', (size_t)(end - buf));
	if (le[1] != '\n' || le - buf < 12 || memcmp(buf, "HTTP/1.", 7) != 0 ||
	    (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ')
		return -EBADMSG;
	for (int i = 9; i < 12; i++)
		if (buf[i] < '0' || buf[i] > '9')
			return -EBADMSG;
	if (buf[9] == '0' || (le > buf + 12 && buf[12] != ' '))
		return -EBADMSG;
	o->version_minor = buf[7] - '0';
	o->status = atoi((char[]){ buf[9], buf[10], buf[11], 0 });
	o->reason.ptr = buf + (le > buf + 12 ? 13 : 12);
	o->reason.len = (size_t)(le - o->reason.ptr);
	for (size_t i = 0; i < o->reason.len; i++)
		if (!ref_vchar((unsigned char)o->reason.ptr[i]))
			return -EBADMSG;
	for (p = le + 2; p < end; p = le + 2) {
		const char *colon;
		struct http_str name, value;

		le = memchr(p, '\r', (size_t)(end + 2 - p));
		if (le[1] != '\n')
			return -EBADMSG;
		colon = memchr(p, ':', (size_t)(le - p));
		if (!colon || colon == p)
			return -EBADMSG;
		for (const char *q = p; q < colon; q++)
			if (!ref_tchar((unsigned char)*q))
				return -EBADMSG;
		for (const char *q = colon + 1; q < le; q++)
			if (!ref_vchar((unsigned char)*q))
				return -EBADMSG;
		if (o->num_headers == MAX_FIELDS)
			return -EBADMSG;
		name = (struct http_str){ p, (size_t)(colon - p) };
		value = ref_trim(colon + 1, le);
		out->hdrs[o->num_headers].name = name;
		out->hdrs[o->num_headers++].value = value;
		if (ref_ieq(name, "content-length")) {
			int64_t n = 0;

			if (value.len == 0 || value.len > 18)
				return -EBADMSG;
			for (size_t i = 0; i < value.len; i++) {
				if (value.ptr[i] < '0' || value.ptr[i] > '9')
					return -EBADMSG;
				n = n * 10 + (value.ptr[i] - '0');
			}
			if (o->content_length >= 0 && o->content_length != n)
				return -EBADMSG;
			o->content_length = n;
		} else if (ref_ieq(name, "transfer-encoding") || ref_ieq(name, "connection")) {
			bool te = ref_ieq(name, "transfer-encoding");
			const char *s = value.ptr, *ve = value.ptr + value.len;

			have_te |= te;
			while (s <= ve) {
				const char *c = memchr(s, ',', (size_t)(ve - s));
				struct http_str el = ref_trim(s, c ? c : ve);

				s = c ? c + 1 : ve + 1;
				if (el.len == 0)
					continue;
				if (te)
					last_chunked = ref_ieq(el, "chunked");
				else if (ref_ieq(el, "close"))
					close = true;
				else if (ref_ieq(el, "keep-alive"))
					ka = true;
				else
					o->conn_other = true;
			}
		}
	}
	o->chunked = have_te && last_chunked;
	o->te_not_chunked = have_te && !last_chunked;
	o->keep_alive = !close && (o->version_minor == 1 || ka);
	return (int)(end + 2 - buf);
}

static void fuzz_response(const char *buf, size_t size, uint64_t *seed)
{
	static struct parsed_resp whole, again, inc, ref;
	size_t len, last = 0;

	parse_resp_into(&whole, buf, size, 0);
	if ((whole.r == -EBADMSG) != (whole.resp.error != HTTP_OK) ||
	    (whole.r < 0 && whole.r != -EAGAIN && whole.r != -EBADMSG))
		abort();
	parse_resp_into(&again, buf, size, 0);
	if (!same_resp(&whole, &again))
		abort();

	/* Against the reference: once it sees a complete head, the fast
	 * parser must accept exactly what it accepts, with the same results. */
	ref.r = ref_parse_response(buf, size, &ref);
	if (ref.r == -EAGAIN) {
		if (whole.r >= 0)
			abort();
	} else if (ref.r == -EBADMSG) {
		if (whole.r != -EBADMSG) {
			fprintf(stderr, "response: reference refuses, parser gives %d\n", whole.r);
			abort();
		}
	} else {
		ref.resp.error = HTTP_OK;
		ref.resp.headers = whole.resp.headers;
		ref.resp.headers_cap = whole.resp.headers_cap;
		if (!same_resp(&whole, &ref)) {
			fprintf(stderr, "response: reference gives %d, parser %d (%s)\n", ref.r,
				whole.r, http_error_str(whole.resp.error));
			abort();
		}
	}

	/* In pieces, with last_len. */
	inc.r = -EAGAIN;
	for (len = 0; len < size;) {
		len += 1 + rng_next(seed) % 64;
		if (len > size)
			len = size;
		parse_resp_into(&inc, buf, len, last);
		if (inc.r != -EAGAIN)
			break;
		last = len;
	}
	if (inc.r != -EAGAIN) {
		if (!same_resp(&whole, &inc)) {
			fprintf(stderr, "response: incremental %d vs whole %d\n", inc.r, whole.r);
			abort();
		}
	} else if (whole.r >= 0) {
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct parsed whole, again, inc;
	const char *buf = (const char *)data;
	uint64_t seed = 0xcbf29ce484222325ull;
	size_t len, last = 0, out_len[2];
	enum http_error err[2];
	char *out[2];
	int r[2];

	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 0x100000001b3ull;
	seed |= 1;

	parse_into(&whole, buf, size, 0);
	check_head(&whole, buf, size);
	parse_into(&again, buf, size, 0);
	check_same(&whole, &again, "parse is not deterministic");

	/* The same bytes arriving in pieces. */
	inc.r = -EAGAIN;
	for (len = 0; len < size;) {
		len += 1 + rng_next(&seed) % 64;
		if (len > size)
			len = size;
		parse_into(&inc, buf, len, last);
		if (inc.r != -EAGAIN)
			break;
		last = len;
	}
	/* A prefix decides only what the whole input decides the same way; a
	 * complete head is always found. */
	if (inc.r != -EAGAIN)
		check_same(&whole, &inc, "incremental parse differs");
	else if (whole.r >= 0)
		abort();

	fuzz_response(buf, size, &seed);

	if (whole.r < 0 || !whole.req.chunked)
		return 0;
	{
		const char *body = buf + whole.r;
		size_t body_len = size - (size_t)whole.r;

		out[0] = malloc(body_len + 1);
		out[1] = malloc(body_len + 1);
		if (!out[0] || !out[1])
			abort();
		r[0] = decode(body, body_len, &seed, 0, out[0], &out_len[0], &err[0]);
		r[1] = decode(body, body_len, &seed, 1 + seed % 16, out[1], &out_len[1], &err[1]);
		if (r[0] != r[1] || err[0] != err[1] || out_len[0] != out_len[1] ||
		    (r[0] >= 0 && memcmp(out[0], out[1], out_len[0] + (size_t)r[0]) != 0) ||
		    (r[0] < 0 && memcmp(out[0], out[1], out_len[0]) != 0)) {
			fprintf(stderr, "split chunked decode differs: %d/%d %s/%s\n", r[0], r[1],
				http_error_str(err[0]), http_error_str(err[1]));
			abort();
		}
		if (out_len[0] > body_len)
			abort();
		free(out[0]);
		free(out[1]);
	}
	return 0;
}
