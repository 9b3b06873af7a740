/* http.c - RFC 9112 request- and response-head parsers and chunked body
 * decoder (http.h).
 *
 * A head is parsed in one forward pass (requests over at most
 * max_head_bytes). Runs of one byte class (method, target, name, value,
 * Host) are scanned 16 bytes at a time (SSE2 compares, SSSE3 nibble
 * tables), else with a 256-entry class table. Every decision depends only
 * on bytes already seen, so a prefix of a head yields -EAGAIN or the same
 * error as the whole head. Nothing here allocates or keeps global state.
 */
#include "bytes.h"
#include "http.h"

#include <errno.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#ifdef __SSSE3__
#include <tmmintrin.h>
#endif

enum {
	C_TCHAR = 1,  /* RFC 9110 tchar: method, field name, coding */
	C_VALUE = 2,  /* field-value byte: VCHAR, obs-text, SP, HTAB */
	C_TARGET = 4, /* request-target byte: visible ASCII */
	C_HOST = 8,   /* uri-host / port byte (reg-name, IP-literal, ':') */
};

static const uint8_t ctype[256] = {
	 0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0, /* 0x00 */
	 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 0x10 */
	 2, 15,  6,  7, 15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15,  6, /* 0x20 */
	15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14,  6, 14,  6,  6, /* 0x30 */
	 6, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
	15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14,  6, 14,  7, 15, /* 0x50 */
	 7, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
	15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  6,  7,  6, 15,  0, /* 0x70 */
	 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0x80 */
	 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0x90 */
	 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xa0 */
	 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xb0 */
	 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xc0 */
	 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xd0 */
	 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xe0 */
	 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xf0 */
};

#define IS(c, cls) (ctype[(unsigned char)(c)] & (cls))

/* ---- fast scanning ------------------------------------------------------ */

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline uint64_t load64(const char *p)
{
	uint64_t w;

	memcpy(&w, p, sizeof(w));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	/* The borrow tricks below are exact only for the lowest-addressed
	 * flagged byte when it is the least significant one. */
	w = __builtin_bswap64(w);
#endif
	return w;
}

/* The high bit of every byte of w that is a CTL (below 0x20, or DEL), plus
 * possibly false ones above a true one (a borrow), so only the lowest flag is
 * exact: that is the first such byte in memory order. */
static inline uint64_t ctl_bytes(uint64_t w)
{
	uint64_t del = w ^ (ONES * 0x7f);

	return ((w - ONES * 0x20) & ~w & HIGHS) | ((del - ONES) & ~del & HIGHS);
}

/* Length of the run of field-value bytes (C_VALUE: VCHAR, obs-text, SP,
 * HTAB) at the start of p[0..n). Whole vectors while 16 bytes remain (SSE2,
 * baseline on x86-64), then whole words while 8 remain: a CTL other than
 * HTAB (normally the CR ending the line) is found in about ten
 * instructions per 16 or 8 bytes instead of a table look-up per byte. The
 * tail that would cross n goes byte by byte: nothing past n is read. */
static inline size_t value_len(const char *p, size_t n)
{
	size_t i = 0;

#ifdef __SSE2__
	const __m128i sp = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);

	while (n - i >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		/* max(v, 0x20) == v: the byte is at least 0x20 (unsigned) */
		unsigned ok = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(v, sp), v));
		unsigned m = (ok ^ 0xffffu) | (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, del));

		if (!m) {
			i += 16;
			continue;
		}
		i += (size_t)__builtin_ctz(m);
		if (p[i] != '\t')
			return i;
		i++;
	}
#endif
	while (n - i >= 8) {
		uint64_t m = ctl_bytes(load64(p + i));

		if (!m) {
			i += 8;
			continue;
		}
		i += (size_t)__builtin_ctzll(m) >> 3;
		if (p[i] != '\t')
			return i;
		i++;
	}
	while (i < n && IS(p[i], C_VALUE))
		i++;
	return i;
}

static inline uint16_t load16(const char *p)
{
	uint16_t w;

	memcpy(&w, p, sizeof(w));
	return w;
}

static inline uint32_t load32(const char *p)
{
	uint32_t w;

	memcpy(&w, p, sizeof(w));
	return w;
}

#define LC_IS(s, len, lit) ((len) == sizeof(lit) - 1 && bytes_eq_lower((s), lit, sizeof(lit) - 1))

/* The classes as pairs of 16-entry nibble tables: a byte b is in the class
 * iff lo[b & 15] & hi[b >> 4] is not 0 (one bit per distinct set of low
 * nibbles; derived from ctype[] and checked against it byte by byte by the
 * unit tests' every-byte cases). */
static const uint8_t tchar_nib[2][16] = {
	{ 0x3a, 0x3f, 0x3e, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f,
	  0x3e, 0x3e, 0x3d, 0x15, 0x34, 0x15, 0x3d, 0x1c },
	{ 0x00, 0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20 },
};
static const uint8_t host_nib[2][16] = {
	{ 0x1a, 0x1f, 0x1e, 0x1e, 0x1f, 0x1f, 0x1f, 0x1f,
	  0x1f, 0x1f, 0x1f, 0x0f, 0x05, 0x0f, 0x15, 0x0c },
	{ 0x00, 0x00, 0x01, 0x02, 0x04, 0x08, 0x04, 0x10 },
};

#ifdef __SSE2__
static inline __m128i load128(const char *p)
{
	return _mm_loadu_si128((const __m128i *)(const void *)p);
}
#endif

#ifdef __SSSE3__
/* Bit i set: byte i of v is outside the class nib (two PSHUFB look-ups). */
static inline unsigned nib_outside(__m128i v, const uint8_t nib[2][16])
{
	const __m128i low4 = _mm_set1_epi8(0x0f);
	__m128i lo = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)nib[0]),
				      _mm_and_si128(v, low4));
	__m128i hi = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)nib[1]),
				      _mm_and_si128(_mm_srli_epi16(v, 4), low4));

	return (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(lo, hi),
							  _mm_setzero_si128()));
}
#endif

/* Length of the run of bytes of class cls (nib: the same class as nibble
 * tables) at the start of p[0..n). 16 bytes at a time when n >= 16, the
 * last short piece by loading the final 16 bytes again (those before the
 * piece are already known to be in the class); below 16, four table
 * look-ups per bound check. Nothing outside p[0..n) is read. */
static inline __attribute__((always_inline)) size_t
class_len(const char *p, size_t n, const uint8_t nib[2][16], unsigned cls)
{
	size_t i = 0;

#ifdef __SSSE3__
	if (n >= 16) {
		unsigned m;

		for (; n - i >= 16; i += 16) {
			m = nib_outside(load128(p + i), nib);
			if (m)
				return i + (size_t)__builtin_ctz(m);
		}
		if (i == n)
			return n;
		m = nib_outside(load128(p + n - 16), nib) >> (16 - (n - i));
		return m ? i + (size_t)__builtin_ctz(m) : n;
	}
#else
	(void)nib;
#endif
	while (n - i >= 4 && (ctype[(unsigned char)p[i]] & ctype[(unsigned char)p[i + 1]] &
			      ctype[(unsigned char)p[i + 2]] & ctype[(unsigned char)p[i + 3]] & cls))
		i += 4;
	while (i < n && IS(p[i], cls))
		i++;
	return i;
}

/* Length of the run of tchar bytes at the start of p[0..n). */
static inline __attribute__((always_inline)) size_t
tchar_len(const char *p, size_t n)
{
	return class_len(p, n, tchar_nib, C_TCHAR);
}

/* Length of the run of request-target bytes (visible ASCII) at the start of
 * p[0..n); *query is set to the offset of the first '?' in the run, or to
 * the run's length if it has none, so that the target is not searched
 * again. Vectors as in class_len (a range check needs no table). */
static inline size_t target_len(const char *p, size_t n, size_t *query)
{
	size_t i = 0, q = SIZE_MAX;

#ifdef __SSE2__
	if (n >= 16) {
		const __m128i lo = _mm_set1_epi8(0x21), span = _mm_set1_epi8(0x7e - 0x21),
			      qm = _mm_set1_epi8('?');
		unsigned m, qs;

		for (;;) {
			bool last = n - i < 16;
			size_t at = last ? n - 16 : i, skip = last ? 16 - (n - i) : 0;
			__m128i v = load128(p + at);
			/* b - 0x21, unsigned, at most 0x7e - 0x21: visible ASCII */
			__m128i d = _mm_sub_epi8(v, lo);

			m = ((unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(d, span), d)) ^
			     0xffffu) >> skip;
			qs = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, qm)) >> skip;
			if (m)
				qs &= (1u << __builtin_ctz(m)) - 1;
			if (qs && q == SIZE_MAX)
				q = i + (size_t)__builtin_ctz(qs);
			if (m) {
				i += (size_t)__builtin_ctz(m);
				break;
			}
			i += 16 - skip;
			if (i == n)
				break;
		}
		*query = q == SIZE_MAX ? i : q;
		return i;
	}
#endif
	while (i < n && IS(p[i], C_TARGET)) {
		if (p[i] == '?' && q == SIZE_MAX)
			q = i;
		i++;
	}
	*query = q == SIZE_MAX ? i : q;
	return i;
}

/* Whether the bytes of x and y are pairwise equal ignoring ASCII case, exactly:
 * bytes may differ only in bit 0x20, and only where x holds a letter. */
static inline bool ci_word_eq(uint64_t x, uint64_t y)
{
	uint64_t d = x ^ y, l, low7, letter;

	if (!d)
		return true;
	if (d & ~(ONES * 0x20))
		return false;
	l = x | ONES * 0x20;
	low7 = l & ~HIGHS;
	/* Per byte, no carry out: 'a' <= low7 <= 'z' and the high bit clear. */
	letter = (low7 + ONES * (0x80 - 'a')) & ~(low7 + ONES * (0x7f - 'z')) & ~l & HIGHS;
	return ((d << 2) & ~letter) == 0;
}

/* ASCII case-insensitive equality of s[0..len) and t[0..len), any bytes,
 * a word at a time (the last word overlapping the one before). Not
 * tolower(): the locale must not change what a header name means. */
static bool ci_eq(const char *s, const char *t, size_t len)
{
	size_t i;

	if (len >= 8) {
		for (i = 0; i + 8 < len; i += 8)
			if (!ci_word_eq(load64(s + i), load64(t + i)))
				return false;
		return ci_word_eq(load64(s + len - 8), load64(t + len - 8));
	}
	for (i = 0; i < len; i++)
		if (!ci_word_eq((unsigned char)s[i], (unsigned char)t[i]))
			return false;
	return true;
}

/* Limits with defaults filled in; lives for one call. */
struct limits_eff {
	size_t max_head;
	size_t max_fields;
	size_t max_target;
	uint64_t max_body;
	size_t max_ext;
	const char *cid;
	size_t cid_len;
};

/* What the fields of a request or response head said, gathered while
 * parsing (Content-Length goes straight into the result); lives for one
 * call. */
struct head_state {
	bool have_te;
	bool te_last_chunked;	  /* the last coding so far is chunked */
	bool te_chunked_nonfinal; /* chunked followed by another coding */
	bool te_chunked_twice;
	bool te_other;		  /* a coding other than chunked */
	bool conn_close;
	bool conn_keep_alive;
	bool conn_other;	  /* an option other than close and keep-alive */
	bool expect_continue;
	bool expect_other;
};

static inline void limits_resolve(const struct http_limits *lim, struct limits_eff *e)
{
	static const struct http_limits none;

	if (!lim)
		lim = &none;
	e->max_head = lim->max_head_bytes ? lim->max_head_bytes : HTTP_DEFAULT_MAX_HEAD_BYTES;
	e->max_fields = lim->max_fields ? lim->max_fields : HTTP_DEFAULT_MAX_FIELDS;
	e->max_target = lim->max_target_bytes ? lim->max_target_bytes : HTTP_DEFAULT_MAX_TARGET_BYTES;
	e->max_body = lim->max_body_bytes ? lim->max_body_bytes : HTTP_DEFAULT_MAX_BODY_BYTES;
	e->max_ext = lim->max_chunk_ext_bytes ? lim->max_chunk_ext_bytes
					      : HTTP_DEFAULT_MAX_CHUNK_EXT_BYTES;
	e->cid = lim->client_id_name;
	e->cid_len = e->cid ? strlen(e->cid) : 0;
}

static int fail(struct http_request *req, enum http_error e)
{
	req->error = e;
	return -EBADMSG;
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* Next non-empty element of a comma list in [*p, end), OWS trimmed. RFC
 * 9110 5.6.1 asks recipients to skip empty elements. */
static bool list_next(const char **p, const char *end, const char **el, size_t *el_len)
{
	while (*p < end) {
		const char *s = *p, *comma = memchr(s, ',', (size_t)(end - s));
		const char *e = comma ? comma : end;

		*p = comma ? comma + 1 : end;
		while (s < e && is_ows(*s))
			s++;
		while (e > s && is_ows(e[-1]))
			e--;
		if (e > s) {
			*el = s;
			*el_len = (size_t)(e - s);
			return true;
		}
	}
	return false;
}

/* Content-Length = 1*DIGIT, into *cl (-1 until one is seen). At most
 * max_digits digits, and with more than 18 only a value that fits int64_t.
 * A repeat is refused before its value is read, or with same_ok accepted
 * if its value is the same (RFC 9110 8.6). Returns 0 or why it is bad. */
static inline enum http_error content_length(const char *v, size_t len, int64_t *cl,
					     size_t max_digits, bool same_ok)
{
	int64_t n = 0;

	if (!same_ok && *cl >= 0)
		return HTTP_ERR_DUP_CONTENT_LENGTH;
	if (len == 0 || len > max_digits)
		return HTTP_ERR_BAD_CONTENT_LENGTH;
	for (size_t i = 0; i < len; i++) {
		unsigned d = (unsigned char)v[i] - '0';

		/* 18 digits cannot overflow int64_t. */
		if (d > 9 || (i >= 18 && n > (INT64_MAX - (int64_t)d) / 10))
			return HTTP_ERR_BAD_CONTENT_LENGTH;
		n = n * 10 + (int64_t)d;
	}
	if (*cl >= 0 && *cl != n)
		return HTTP_ERR_DUP_CONTENT_LENGTH;
	*cl = n;
	return HTTP_OK;
}

/* Transfer-Encoding = #transfer-coding, several fields being one list (RFC
 * 9110 5.3). transfer-coding = token *( OWS ";" OWS transfer-parameter );
 * only the coding name matters, parameters make a coding other than plain
 * chunked. strict: an element that is not a transfer-coding is an error,
 * else just a coding other than chunked. */
static inline enum http_error transfer_encoding(struct head_state *hs, const char *v, size_t len,
						bool strict)
{
	const char *p = v, *end = v + len, *el;
	size_t el_len;

	hs->have_te = true;
	while (list_next(&p, end, &el, &el_len)) {
		/* Only tchar bytes compare equal to "chunked" (see bytes_eq_lower). */
		if (LC_IS(el, el_len, "chunked")) {
			if (hs->te_last_chunked || hs->te_chunked_nonfinal)
				hs->te_chunked_twice = true;
			hs->te_last_chunked = true;
			continue;
		}
		if (strict) {
			size_t i = 0;

			while (i < el_len && IS(el[i], C_TCHAR))
				i++;
			if (i == 0)
				return HTTP_ERR_TE_NOT_CHUNKED;
			if (i < el_len) {
				while (i < el_len && is_ows(el[i]))
					i++;
				if (i == el_len || el[i] != ';')
					return HTTP_ERR_TE_NOT_CHUNKED;
			}
		}
		if (hs->te_last_chunked)
			hs->te_chunked_nonfinal = true;
		hs->te_last_chunked = false;
		hs->te_other = true;
	}
	return HTTP_OK;
}

/* Connection = #connection-option. */
static inline __attribute__((always_inline)) void
connection(struct head_state *hs, const char *v, size_t len)
{
	const char *p = v, *end = v + len, *el;
	size_t el_len;

	/* One token, the usual case, needs no list walk. */
	if (LC_IS(v, len, "keep-alive")) {
		hs->conn_keep_alive = true;
		return;
	}
	if (LC_IS(v, len, "close")) {
		hs->conn_close = true;
		return;
	}
	while (list_next(&p, end, &el, &el_len)) {
		if (LC_IS(el, el_len, "close"))
			hs->conn_close = true;
		else if (LC_IS(el, el_len, "keep-alive"))
			hs->conn_keep_alive = true;
		else
			hs->conn_other = true;
	}
}

/* v[0..len) is the trimmed value, v[0..room) the buffer from v on: what
 * follows the value (OWS, CR) is no host byte, so the class scan may run on
 * past len in whole vectors and still stops by len. */
static enum http_error parse_host(struct http_request *req, const char *v, size_t len, size_t room)
{
	if (req->host.ptr)
		return HTTP_ERR_HOST_DUPLICATE;
	if (class_len(v, room, host_nib, C_HOST) < len)
		return HTTP_ERR_BAD_HOST;
	req->host.ptr = v;
	req->host.len = len;
	return HTTP_OK;
}

/* Interprets the fields the proxy needs, so it never scans the head again:
 * of a request (req, L its limits) Host, Expect, Content-Length,
 * Transfer-Encoding, Connection and the client-id field; of a response
 * (req and L unused) the last three, which frame it. Dispatched on the
 * name's length, then its first byte, before any whole compare: most
 * fields cost a switch. v[0..vlen) is the trimmed value, v[0..vroom) the
 * buffer from there on. Returns 0 or why the field is bad. */
static inline __attribute__((always_inline)) enum http_error
interpret_field(bool request, struct http_request *req, const struct limits_eff *L,
		struct head_state *hs, int64_t *cl, const char *name, size_t nlen, const char *v,
		size_t vlen, size_t vroom)
{
	const char *p = v, *end = v + vlen, *el;
	size_t el_len;

	if (request && nlen == L->cid_len && !req->client_id.ptr && ci_eq(name, L->cid, nlen)) {
		req->client_id.ptr = v;
		req->client_id.len = vlen;
	}
	switch (nlen) {
	case 4:
		if (request && bytes_eq_lower(name, "host", 4))
			return parse_host(req, v, vlen, vroom);
		break;
	case 6:
		if (!request || (name[0] | 0x20) != 'e' || !bytes_eq_lower(name, "expect", 6))
			break;
		/* One token, the usual case, needs no list walk. */
		if (LC_IS(v, vlen, "100-continue")) {
			hs->expect_continue = true;
			break;
		}
		while (list_next(&p, end, &el, &el_len)) {
			if (LC_IS(el, el_len, "100-continue"))
				hs->expect_continue = true;
			else
				hs->expect_other = true;
		}
		break;
	case 10:
		if ((name[0] | 0x20) == 'c' && bytes_eq_lower(name, "connection", 10))
			connection(hs, v, vlen);
		break;
	case 14:
		/* A request's: any digits that fit int64_t, never repeated; a
		 * response's: 1 to 18 digits, repeated only equal. */
		if ((name[0] | 0x20) == 'c' && bytes_eq_lower(name, "content-length", 14))
			return content_length(v, vlen, cl, request ? SIZE_MAX : 18, !request);
		break;
	case 17:
		/* A response's framing needs only its final coding (RFC 9112
		 * 6.3): what the others are, it does not judge. */
		if ((name[0] | 0x20) == 't' && bytes_eq_lower(name, "transfer-encoding", 17))
			return transfer_encoding(hs, v, vlen, request);
		break;
	default:
		break;
	}
	return HTTP_OK;
}

/* Why a field line is bad whose name (empty or not) ends at ch, ch not ':'
 * after a name, nor CR at the start of a line. over: the head already holds
 * as many lines as it may, judged after a bad line start's own errors. */
static enum http_error name_error(char ch, bool empty, bool over)
{
	if (!empty)
		return is_ows(ch) ? HTTP_ERR_SPACE_BEFORE_COLON : HTTP_ERR_BAD_CHAR;
	if (ch == '\n')
		return HTTP_ERR_BARE_LF;
	/* Also whitespace before the first field (RFC 9112 2.2). */
	if (is_ows(ch))
		return HTTP_ERR_OBS_FOLD;
	if (over)
		return HTTP_ERR_TOO_MANY_FIELDS;
	return ch == ':' ? HTTP_ERR_SYNTAX : HTTP_ERR_BAD_CHAR;
}

/* Why a line of field-value bytes (reason-phrase bytes are the same) that
 * stops at buf[i] (buf[0..end)) is not ended by CRLF there: -EAGAIN if it
 * may be once more bytes come, else the error. Classified only once a
 * line is known to be bad, so a well-formed one takes one branch. */
static int crlf_error(const char *buf, size_t end, size_t i)
{
	if (end - i < 1)
		return -EAGAIN;
	if (buf[i] == '\n')
		return HTTP_ERR_BARE_LF;
	if (buf[i] != '\r')
		return HTTP_ERR_BAD_CHAR;
	if (end - i < 2)
		return -EAGAIN;
	return HTTP_ERR_BARE_LF;
}

static inline bool at_crlf(const char *buf, size_t end, size_t i)
{
	return end - i >= 2 && load16(buf + i) == load16("\r\n");
}

/* Offsets of a field line's parts in the head's buffer; lives for one line. */
struct field_line {
	size_t name, name_end;
	size_t value, value_end; /* OWS trimmed */
};

enum { LINE_EMPTY = -1 }; /* field_line: the empty line ending the head */

/* Parses one field line (field-name ":" OWS field-value OWS CRLF) from
 * buf[*p], buf[0..end), into *f and moves *p past it. Returns 0,
 * LINE_EMPTY for the empty line that ends the head (*p moved past it too),
 * -EAGAIN if the line may go on past end, or why it is bad. over: the head
 * already holds as many lines as it may, an error as soon as the line
 * starts with a name byte. Checks are ordered so that a well-formed line
 * takes the fewest branches. */
static inline __attribute__((always_inline)) int
field_line(const char *buf, size_t end, size_t *p, bool over, struct field_line *f)
{
	size_t i = *p, name, name_end, value, value_end;

	if (end - i < 1)
		return -EAGAIN;
	if (!IS(buf[i], C_TCHAR)) {
		if (buf[i] != '\r')
			return name_error(buf[i], true, over);
		if (end - i < 2)
			return -EAGAIN;
		if (buf[i + 1] != '\n')
			return HTTP_ERR_BARE_LF;
		*p = i + 2;
		return LINE_EMPTY;
	}
	if (over)
		return HTTP_ERR_TOO_MANY_FIELDS;

	name = i;
	i += 1 + tchar_len(buf + i + 1, end - i - 1);
	if (i == end || buf[i] != ':')
		return i == end ? -EAGAIN : (int)name_error(buf[i], false, false);
	name_end = i;
	i++;

	/* OWS is made of value bytes: skipped before the value is scanned
	 * (the scan would stop at the same byte), trimmed from its end after. */
	while (i < end && is_ows(buf[i]))
		i++;
	value = i;
	i += value_len(buf + i, end - i);
	if (!at_crlf(buf, end, i))
		return crlf_error(buf, end, i);
	value_end = i;
	i += 2;
	/* Among value bytes, only OWS is at or below SP. */
	while (value_end > value && (unsigned char)buf[value_end - 1] <= ' ')
		value_end--;
	f->name = name;
	f->name_end = name_end;
	f->value = value;
	f->value_end = value_end;
	*p = i;
	return 0;
}

/* Splits the target into authority, path and query views; query is the
 * offset of the target's first '?' (its length if none), found by the scan
 * that delimited it. */
static void split_target(struct http_request *req, size_t query)
{
	const char *t = req->target.ptr, *end = t + req->target.len, *p = t, *q;

	if (t[0] == '/') {
		req->target_form = HTTP_TARGET_ORIGIN;
	} else if (req->target.len == 1 && t[0] == '*') {
		req->target_form = HTTP_TARGET_ASTERISK;
		req->path = req->target;
		return;
	} else {
		/* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
		const char *s = t;

		if ((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z') {
			s++;
			while (s < end && (((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z') ||
					   (*s >= '0' && *s <= '9') || *s == '+' || *s == '-' ||
					   *s == '.'))
				s++;
		}
		if (s > t && end - s >= 3 && memcmp(s, "://", 3) == 0) {
			req->target_form = HTTP_TARGET_ABSOLUTE;
			p = s + 3;
			q = p;
			while (q < end && *q != '/' && *q != '?')
				q++;
			req->authority.ptr = p;
			req->authority.len = (size_t)(q - p);
			p = q;
		} else {
			req->target_form = HTTP_TARGET_AUTHORITY;
			req->authority = req->target;
			return;
		}
	}
	/* The scheme and the authority hold no '?', so the target's first
	 * '?' is at or after p. */
	q = t + query;
	req->path.ptr = p;
	req->path.len = (size_t)(q - p);
	if (q < end) {
		req->query.ptr = q + 1;
		req->query.len = (size_t)(end - q - 1);
	}
}

/* Whole-head checks, once the empty line has been seen. */
static int finish_head(struct http_request *req, const struct head_state *hs,
		       const struct limits_eff *L)
{
	if (hs->have_te) {
		/* RFC 9112 6.3: CL with TE is a smuggling vector; a proxy must
		 * not forward both, and refusing is the simplest safe answer. */
		if (req->content_length >= 0)
			return fail(req, HTTP_ERR_CL_AND_TE);
		if (req->version_minor == 0 || !hs->te_last_chunked || hs->te_chunked_nonfinal ||
		    hs->te_chunked_twice)
			return fail(req, HTTP_ERR_TE_NOT_CHUNKED);
		if (hs->te_other)
			return fail(req, HTTP_ERR_TE_UNSUPPORTED);
		req->chunked = true;
	}
	if (req->version_minor == 1 && !req->host.ptr)
		return fail(req, HTTP_ERR_HOST_MISSING);
	if (hs->expect_other)
		return fail(req, HTTP_ERR_EXPECTATION);
	/* RFC 9110 10.1.1: 100-continue in HTTP/1.0 is ignored. */
	req->expect_continue = hs->expect_continue && req->version_minor == 1;
	if (req->content_length > 0 && (uint64_t)req->content_length > L->max_body)
		return fail(req, HTTP_ERR_BODY_TOO_LARGE);
	if (hs->conn_close)
		req->keep_alive = false;
	else
		req->keep_alive = req->version_minor == 1 || hs->conn_keep_alive;
	return 0;
}

/* The request line's error when its method or target is empty or ends at
 * ch other than SP. */
static int line_error(struct http_request *req, char ch)
{
	return fail(req, ch == '\r' || ch == '\n' || ch == ' ' ? HTTP_ERR_SYNTAX : HTTP_ERR_BAD_CHAR);
}

/* Checks are ordered so that a well-formed head takes the fewest branches;
 * a line that fails a fast check is classified by the same tests, in the
 * same order, as a byte-by-byte reading would make, so every error (and
 * every -EAGAIN before one) is what it always was. */
static int parse_head(const char *buf, size_t len, struct http_request *req,
		      const struct limits_eff *L)
{
	/* Never look past the head limit: running out of bytes there is 431,
	 * before it -EAGAIN. */
	size_t end = len < L->max_head ? len : L->max_head;
	size_t max_lines = req->headers && req->headers_cap < L->max_fields ? req->headers_cap
									     : L->max_fields;
	/* Kept in locals: the stores into the caller's array could alias req. */
	struct http_header *fields = req->headers;
	size_t nfields = 0;
	struct head_state hs = { 0 };
	size_t p = 0, start, query;
	int r;

#define NEED(n)                              \
	do {                                 \
		if (end - p < (size_t)(n))   \
			goto out_incomplete; \
	} while (0)

	/* RFC 9112 2.2: empty lines before the request line are ignored. */
	for (;;) {
		NEED(1);
		if (buf[p] == '\n')
			return fail(req, HTTP_ERR_BARE_LF);
		if (buf[p] != '\r')
			break;
		NEED(2);
		if (buf[p + 1] != '\n')
			return fail(req, HTTP_ERR_BARE_LF);
		p += 2;
	}

	/* method SP */
	start = p;
	p += tchar_len(buf + p, end - p);
	NEED(1);
	if (p == start || buf[p] != ' ')
		return line_error(req, buf[p]);
	req->method.ptr = buf + start;
	req->method.len = p - start;
	p++;

	/* request-target SP */
	start = p;
	p += target_len(buf + p, end - p, &query);
	if (p - start > L->max_target)
		return fail(req, HTTP_ERR_TARGET_TOO_LONG);
	NEED(1);
	if (p == start || buf[p] != ' ')
		return line_error(req, buf[p]);
	req->target.ptr = buf + start;
	req->target.len = p - start;
	p++;

	/* HTTP-version CRLF: "HTTP/" DIGIT "." DIGIT, case-sensitive */
	if (end - p >= 10 && memcmp(buf + p, "HTTP/1.", 7) == 0 &&
	    (buf[p + 7] == '1' || buf[p + 7] == '0') && buf[p + 8] == '\r' && buf[p + 9] == '\n') {
		req->version_minor = buf[p + 7] - '0';
		p += 10;
	} else {
		NEED(9);
		if (memcmp(buf + p, "HTTP/", 5) != 0 || (unsigned)(buf[p + 5] - '0') > 9 ||
		    buf[p + 6] != '.' || (unsigned)(buf[p + 7] - '0') > 9)
			return fail(req, HTTP_ERR_SYNTAX);
		if (buf[p + 8] == '\n')
			return fail(req, HTTP_ERR_BARE_LF);
		if (buf[p + 8] != '\r')
			return fail(req, HTTP_ERR_SYNTAX);
		if (buf[p + 5] != '1' || (buf[p + 7] != '0' && buf[p + 7] != '1'))
			return fail(req, HTTP_ERR_VERSION);
		NEED(10);
		return fail(req, HTTP_ERR_BARE_LF);
	}

	/* *( field-line CRLF ) CRLF */
	for (;;) {
		struct field_line f;

		r = field_line(buf, end, &p, nfields >= max_lines, &f);
		if (r) {
			if (r == LINE_EMPTY)
				break;
			if (r == -EAGAIN)
				goto out_incomplete;
			return fail(req, r);
		}
		if (fields) {
			struct http_header *h = &fields[nfields];

			h->name.ptr = buf + f.name;
			h->name.len = f.name_end - f.name;
			h->value.ptr = buf + f.value;
			h->value.len = f.value_end - f.value;
		}
		req->num_headers = ++nfields;
		r = interpret_field(true, req, L, &hs, &req->content_length, buf + f.name,
				    f.name_end - f.name, buf + f.value, f.value_end - f.value,
				    end - f.value);
		if (r)
			return fail(req, r);
	}
#undef NEED

	split_target(req, query);
	r = finish_head(req, &hs, L);
	if (r < 0)
		return r;
	return (int)p;

out_incomplete:
	return len > L->max_head ? fail(req, HTTP_ERR_HEAD_TOO_LARGE) : -EAGAIN;
}

/* Could buf[0..len) hold a complete head, given that buf[0..last_len) did
 * not? Looks only at new bytes (and the 3 before them) for CRLF CRLF; a bare
 * LF also says yes, so that the full parse reports it now. */
static bool may_be_complete(const char *buf, size_t len, size_t last_len)
{
	size_t i = last_len >= 3 ? last_len - 3 : 0;

	for (;;) {
		const char *lf = memchr(buf + i, '\n', len - i);

		if (!lf)
			return false;
		i = (size_t)(lf - buf);
		if (i == 0 || buf[i - 1] != '\r')
			return true;
		if (i >= 3 && buf[i - 2] == '\n' && buf[i - 3] == '\r')
			return true;
		i++;
	}
}

int http_parse_request(const char *buf, size_t len, size_t last_len, struct http_request *req,
		       const struct http_limits *lim)
{
	struct http_header *headers = req->headers;
	size_t headers_cap = req->headers_cap;
	struct limits_eff L;

	limits_resolve(lim, &L);
	memset(req, 0, sizeof(*req));
	req->headers = headers;
	req->headers_cap = headers_cap;
	req->content_length = -1;

	/* Head sizes are bounded well below INT_MAX by max_head_bytes, but a
	 * caller could configure anything. */
	if (L.max_head > INT32_MAX)
		L.max_head = INT32_MAX;
	if (last_len != 0 && last_len < len && len <= L.max_head &&
	    !may_be_complete(buf, len, last_len))
		return -EAGAIN;
	return parse_head(buf, len, req, &L);
}

/* ---- responses ---------------------------------------------------------- */

static int resp_fail(struct http_response *resp, enum http_error e)
{
	resp->error = e;
	return -EBADMSG;
}

/* Checks the fixed first 13 bytes of a status line, "HTTP/1.1 200 " or
 * "HTTP/1.1 200\r" (the SP before an empty reason was always tolerated
 * missing), and sets version_minor and status. */
static int status_start(const char *buf, struct http_response *resp)
{
	unsigned d0 = (unsigned)(buf[9] - '0'), d1 = (unsigned)(buf[10] - '0'),
		 d2 = (unsigned)(buf[11] - '0');

	if (memcmp(buf, "HTTP/", 5) != 0 || (unsigned)(buf[5] - '0') > 9 || buf[6] != '.' ||
	    (unsigned)(buf[7] - '0') > 9)
		return resp_fail(resp, HTTP_ERR_SYNTAX);
	if (buf[5] != '1' || (buf[7] != '0' && buf[7] != '1'))
		return resp_fail(resp, HTTP_ERR_VERSION);
	if (buf[8] != ' ' || d0 > 9 || d1 > 9 || d2 > 9 || d0 == 0 ||
	    (buf[12] != ' ' && buf[12] != '\r'))
		return resp_fail(resp, HTTP_ERR_SYNTAX);
	resp->version_minor = buf[7] - '0';
	resp->status = (int)(d0 * 100 + d1 * 10 + d2);
	return 0;
}

static int parse_response_head(const char *buf, size_t end, struct http_response *resp)
{
	size_t max_fields = resp->headers ? resp->headers_cap : SIZE_MAX;
	struct head_state hs = { 0 };
	size_t p, start;
	int r;

	/* status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ] CRLF */
	if (end < 13) {
		/* Too short to judge whole: refuse now if a byte already
		 * cannot be where it is, so that a short error reply fails at
		 * once rather than at a timeout. A copy completed with valid
		 * bytes gives the error the whole line would give, except that
		 * the version is judged only once bytes 5 to 7 are all here
		 * (a malformed "HTTP/0x" is a syntax error, not a version). */
		char line[13];

		memcpy(line, "HTTP/1.1 200 ", sizeof(line));
		if (end)
			memcpy(line, buf, end);
		r = status_start(line, resp);
		resp->version_minor = 0;
		resp->status = 0;
		if (r < 0 && (end >= 8 || resp->error != HTTP_ERR_VERSION))
			return r;
		resp->error = HTTP_OK;
		return -EAGAIN;
	}
	r = status_start(buf, resp);
	if (r < 0)
		return r;
	p = buf[12] == ' ' ? 13 : 12;
	start = p;
	p += value_len(buf + p, end - p);
	if (!at_crlf(buf, end, p)) {
		r = crlf_error(buf, end, p);
		return r < 0 ? r : resp_fail(resp, r);
	}
	resp->reason.ptr = buf + start;
	resp->reason.len = p - start;
	p += 2;

	/* *( field-line CRLF ) CRLF: the rules of parse_head, but that too
	 * many fields is judged once the line is known to be well-formed. */
	for (;;) {
		struct field_line f;

		r = field_line(buf, end, &p, false, &f);
		if (r) {
			if (r == LINE_EMPTY)
				break;
			return r < 0 ? r : resp_fail(resp, r);
		}
		if (resp->num_headers >= max_fields)
			return resp_fail(resp, HTTP_ERR_TOO_MANY_FIELDS);
		if (resp->headers) {
			struct http_header *h = &resp->headers[resp->num_headers];

			h->name.ptr = buf + f.name;
			h->name.len = f.name_end - f.name;
			h->value.ptr = buf + f.value;
			h->value.len = f.value_end - f.value;
		}
		resp->num_headers++;
		r = interpret_field(false, NULL, NULL, &hs, &resp->content_length, buf + f.name,
				    f.name_end - f.name, buf + f.value, f.value_end - f.value,
				    end - f.value);
		if (r)
			return resp_fail(resp, r);
	}
	resp->chunked = hs.have_te && hs.te_last_chunked;
	resp->te_not_chunked = hs.have_te && !hs.te_last_chunked;
	resp->keep_alive = !hs.conn_close && (resp->version_minor == 1 || hs.conn_keep_alive);
	resp->conn_other = hs.conn_other;
	return (int)p;
}

int http_parse_response(const char *buf, size_t len, size_t last_len, struct http_response *resp)
{
	struct http_header *headers = resp->headers;
	size_t headers_cap = resp->headers_cap;
	size_t end = len > INT32_MAX ? INT32_MAX : len;
	int r;

	memset(resp, 0, sizeof(*resp));
	resp->headers = headers;
	resp->headers_cap = headers_cap;
	resp->content_length = -1;

	if (last_len != 0 && last_len < len && len == end && !may_be_complete(buf, len, last_len))
		return -EAGAIN;
	r = parse_response_head(buf, end, resp);
	if (r == -EAGAIN && len > end)
		return resp_fail(resp, HTTP_ERR_HEAD_TOO_LARGE);
	return r;
}

/* ---- chunked ------------------------------------------------------------ */

enum chunk_state {
	CH_SIZE_FIRST,	  /* first hex digit of a chunk-size */
	CH_SIZE,	  /* more hex digits, or what ends the size */
	CH_EXT_BWS,	  /* BWS after the size, before ';' */
	CH_EXT,		  /* inside chunk-ext, up to CR */
	CH_SIZE_LF,	  /* LF ending the size line */
	CH_DATA,
	CH_DATA_CR,	  /* CRLF after chunk-data */
	CH_DATA_LF,
	CH_TRAILER_LINE,  /* start of a trailer field line or the final CRLF */
	CH_TRAILER_NAME,
	CH_TRAILER_VALUE,
	CH_TRAILER_LF,	  /* LF ending a trailer field line */
	CH_END_LF,	  /* LF of the final empty line */
	CH_DONE,
	CH_FAILED,
};

void http_chunked_init(struct http_chunked *c, const struct http_limits *lim)
{
	struct limits_eff L;

	limits_resolve(lim, &L);
	memset(c, 0, sizeof(*c));
	c->max_body_bytes = L.max_body;
	c->max_ext_bytes = L.max_ext;
	c->max_trailer_bytes = L.max_head;
	c->state = CH_SIZE_FIRST;
}

static int hex_value(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch |= 0x20;
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

int http_chunked_decode(struct http_chunked *c, char *buf, size_t *len)
{
	size_t src = 0, dst = 0, n = *len, left;
	enum http_error err;

	if (c->state == CH_DONE || c->state == CH_FAILED) {
		err = c->error != HTTP_OK ? c->error : HTTP_ERR_BAD_CHUNK;
		goto out_fail;
	}
	while (src < n) {
		unsigned char ch = (unsigned char)buf[src];
		int h;

		if (c->state >= CH_TRAILER_LINE && ++c->count > c->max_trailer_bytes) {
			err = HTTP_ERR_TRAILER_TOO_LARGE;
			goto out_fail;
		}
		switch (c->state) {
		case CH_SIZE_FIRST:
		case CH_SIZE:
			h = hex_value(ch);
			if (h >= 0) {
				/* 16 digits fill 64 bits; more (even leading
				 * zeros) would let a client stall us forever. */
				if (++c->count > 16) {
					err = HTTP_ERR_BAD_CHUNK;
					goto out_fail;
				}
				c->chunk_left = c->chunk_left << 4 | (uint64_t)h;
				c->state = CH_SIZE;
				break;
			}
			if (c->state == CH_SIZE_FIRST) {
				err = HTTP_ERR_BAD_CHUNK;
				goto out_fail;
			}
			if (c->chunk_left > c->max_body_bytes - c->body_bytes) {
				err = HTTP_ERR_BODY_TOO_LARGE;
				goto out_fail;
			}
			c->count = 0;
			if (ch == '\r') {
				c->state = CH_SIZE_LF;
			} else if (ch == ';' || is_ows((char)ch)) {
				c->state = ch == ';' ? CH_EXT : CH_EXT_BWS;
				c->count = 1;
			} else {
				err = HTTP_ERR_BAD_CHUNK;
				goto out_fail;
			}
			break;
		case CH_EXT_BWS:
		case CH_EXT:
			if (ch == '\r' && c->state == CH_EXT) {
				c->state = CH_SIZE_LF;
				break;
			}
			if (c->state == CH_EXT_BWS && ch == ';')
				c->state = CH_EXT;
			else if (c->state == CH_EXT_BWS ? !is_ows((char)ch) : !IS(ch, C_VALUE)) {
				err = HTTP_ERR_BAD_CHUNK;
				goto out_fail;
			}
			if (++c->count > c->max_ext_bytes) {
				err = HTTP_ERR_CHUNK_EXT_TOO_LONG;
				goto out_fail;
			}
			break;
		case CH_SIZE_LF:
			if (ch != '\n') {
				err = HTTP_ERR_BAD_CHUNK;
				goto out_fail;
			}
			c->count = 0;
			c->state = c->chunk_left ? CH_DATA : CH_TRAILER_LINE;
			break;
		case CH_DATA:
			left = n - src;
			if (left > c->chunk_left)
				left = (size_t)c->chunk_left;
			memmove(buf + dst, buf + src, left);
			dst += left;
			src += left;
			c->chunk_left -= left;
			c->body_bytes += left;
			if (c->chunk_left == 0)
				c->state = CH_DATA_CR;
			continue;
		case CH_DATA_CR:
		case CH_DATA_LF:
			if (ch != (c->state == CH_DATA_CR ? '\r' : '\n')) {
				err = HTTP_ERR_BAD_CHUNK;
				goto out_fail;
			}
			c->state = c->state == CH_DATA_CR ? CH_DATA_LF : CH_SIZE_FIRST;
			break;
		case CH_TRAILER_LINE:
			if (ch == '\r') {
				c->state = CH_END_LF;
			} else if (IS(ch, C_TCHAR)) {
				c->state = CH_TRAILER_NAME;
			} else {
				err = HTTP_ERR_BAD_CHUNK;
				goto out_fail;
			}
			break;
		case CH_TRAILER_NAME:
			if (ch == ':') {
				c->state = CH_TRAILER_VALUE;
			} else if (!IS(ch, C_TCHAR)) {
				err = HTTP_ERR_BAD_CHUNK;
				goto out_fail;
			}
			break;
		case CH_TRAILER_VALUE:
			if (ch == '\r') {
				c->state = CH_TRAILER_LF;
			} else if (!IS(ch, C_VALUE)) {
				err = HTTP_ERR_BAD_CHUNK;
				goto out_fail;
			}
			break;
		case CH_TRAILER_LF:
		case CH_END_LF:
			if (ch != '\n') {
				err = HTTP_ERR_BAD_CHUNK;
				goto out_fail;
			}
			if (c->state == CH_END_LF) {
				src++;
				c->state = CH_DONE;
				left = n - src;
				memmove(buf + dst, buf + src, left);
				*len = dst;
				return (int)(left > INT32_MAX ? INT32_MAX : left);
			}
			c->state = CH_TRAILER_LINE;
			break;
		default:
			err = HTTP_ERR_BAD_CHUNK;
			goto out_fail;
		}
		src++;
	}
	*len = dst;
	return -EAGAIN;

out_fail:
	c->state = CH_FAILED;
	c->error = err;
	*len = dst;
	return -EBADMSG;
}

/* ---- statuses ----------------------------------------------------------- */

static const struct {
	int status;
	const char *str;
} errors[HTTP_ERR__COUNT] = {
	[HTTP_OK] = { 200, "ok" },
	[HTTP_ERR_SYNTAX] = { 400, "malformed request" },
	[HTTP_ERR_BAD_CHAR] = { 400, "invalid character" },
	[HTTP_ERR_BARE_LF] = { 400, "line not ended by CRLF" },
	[HTTP_ERR_OBS_FOLD] = { 400, "obsolete line folding" },
	[HTTP_ERR_SPACE_BEFORE_COLON] = { 400, "whitespace before ':'" },
	[HTTP_ERR_BAD_CONTENT_LENGTH] = { 400, "invalid Content-Length" },
	[HTTP_ERR_DUP_CONTENT_LENGTH] = { 400, "duplicate Content-Length" },
	[HTTP_ERR_CL_AND_TE] = { 400, "Content-Length with Transfer-Encoding" },
	[HTTP_ERR_TE_NOT_CHUNKED] = { 400, "chunked is not the final transfer coding" },
	[HTTP_ERR_TE_UNSUPPORTED] = { 501, "unsupported transfer coding" },
	[HTTP_ERR_HOST_MISSING] = { 400, "missing Host" },
	[HTTP_ERR_HOST_DUPLICATE] = { 400, "duplicate Host" },
	[HTTP_ERR_BAD_HOST] = { 400, "invalid Host" },
	[HTTP_ERR_TARGET_TOO_LONG] = { 414, "request-target too long" },
	[HTTP_ERR_HEAD_TOO_LARGE] = { 431, "header section too large" },
	[HTTP_ERR_TOO_MANY_FIELDS] = { 431, "too many header fields" },
	[HTTP_ERR_VERSION] = { 505, "unsupported HTTP version" },
	[HTTP_ERR_EXPECTATION] = { 417, "unsupported expectation" },
	[HTTP_ERR_BODY_TOO_LARGE] = { 413, "body too large" },
	[HTTP_ERR_BAD_CHUNK] = { 400, "malformed chunked body" },
	[HTTP_ERR_CHUNK_EXT_TOO_LONG] = { 400, "chunk extension too long" },
	[HTTP_ERR_TRAILER_TOO_LARGE] = { 431, "trailer section too large" },
};

int http_error_status(enum http_error e)
{
	if ((unsigned)e >= HTTP_ERR__COUNT)
		return 400;
	return errors[e].status;
}

const char *http_error_str(enum http_error e)
{
	if ((unsigned)e >= HTTP_ERR__COUNT)
		return "unknown error";
	return errors[e].str;
}

const char *http_status_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "";
	}
}
