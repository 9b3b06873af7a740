/* pbjson.c - proto3 JSON <-> protobuf-c messages, driven only by descriptors.
 *
 * Invariant: a decoded message is always in protobuf-c's unpack layout (every
 * string, array, bytes buffer and sub-message malloc'ed), so it is freeable
 * with protobuf_c_message_free_unpacked(m, NULL) at every step, including
 * half-built on an error path.
 *
 * Mapping choices (proto3 JSON, as grpcurl speaks it):
 * - Presence mirrors protobuf-c's packer: a field is written iff pack would
 *   put it on the wire, so decode(encode(m)) packs to the same bytes as m.
 *   A set oneof member is written even at its default value; one whose string
 *   or message pointer is NULL (or the default string) counts as unset.
 * - Input is parsed by json-c (strict, UTF-8 validated, at most 64 levels).
 *   json-c silently keeps the last of duplicate keys, clamps integers beyond
 *   64 bits and tolerates 'single quotes', NaN and raw control characters in
 *   strings, so a second pass over the text (scan_*) records every token in
 *   document order: it rejects what RFC 8259 forbids, counts object keys so
 *   duplicates are errors, and gives the number converters the exact digits.
 * - Integers: numbers or decimal strings; a number with a fraction or an
 *   exponent is accepted when integral ("1.0", "1e3"). 64-bit integers are
 *   written as strings, 32-bit ones as numbers.
 * - float/double: numbers or strings ("1.5", "NaN", "Infinity",
 *   "-Infinity"); written with the fewest digits that read back exactly.
 * - Enums: written by name, or as a number when the value has no name; read
 *   by name or as any int32 number.
 * - bytes: written as standard base64 with padding; read in the standard or
 *   URL-safe alphabet, padding optional.
 * - Strings containing U+0000 are rejected: protobuf-c strings are C strings.
 * - Field names may appear in either spelling, but a field given twice (in
 *   any spelling) is an error, as are two members of one oneof.
 * - proto2 REQUIRED fields are always written and must be present on input.
 * - json-c turns a lone UTF-16 surrogate escape into U+FFFD; unknown fields
 *   kept by protobuf-c's unpacker (msg->unknown_fields) are not written.
 */
#include "pbjson.h"

#include "fileio.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define PBJSON_MAX_DEPTH 64
#define PBJSON_MAX_FILE_BYTES ((size_t)256 << 20)
#define PBJSON_PATH_LEN 512
/* How much of an offending JSON token an error message quotes. */
#define PBJSON_GOT_LEN 40

/* strtod and "%g" follow LC_NUMERIC; JSON always wants '.', so both entry
 * points switch this thread to the C numeric locale for the call. The locale
 * object is made once and lives for the process. */
static locale_t c_numeric;
static pthread_once_t c_numeric_once = PTHREAD_ONCE_INIT;

static void c_numeric_init(void)
{
	c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

/* Returns the locale to restore, or (locale_t)0 if none could be set. */
static locale_t numeric_c_begin(void)
{
	pthread_once(&c_numeric_once, c_numeric_init);
	return c_numeric ? uselocale(c_numeric) : (locale_t)0;
}

static void numeric_c_end(locale_t saved)
{
	if (saved)
		uselocale(saved);
}

/* ---- pass 2: token scan over text json-c has already accepted ---------- */

/* One JSON token in document order: a value, or an object key (a key is
 * followed by its value's tokens). Owned by struct dec; lives until the
 * decode call returns. */
struct scan_tok {
	uint32_t off;   /* byte offset of the token's first character */
	uint32_t n;     /* object: keys; array: elements; scalar/key: bytes */
	uint32_t next;  /* index of the token after this one's subtree */
};

/* Scanner state for one text. Owned by pbjson_decode; lives for the call. */
struct scanner {
	const char *text;
	size_t len;
	size_t pos;
	struct scan_tok *toks;
	uint32_t n_toks;
	uint32_t cap_toks;
	const char *why;  /* set on a syntax error, at byte pos */
};

static bool is_json_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void scan_skip_ws(struct scanner *s)
{
	while (s->pos < s->len && is_json_ws(s->text[s->pos]))
		s->pos++;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_hex(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Returns the new token's index, or UINT32_MAX when out of memory. */
static uint32_t scan_push(struct scanner *s)
{
	if (s->n_toks == s->cap_toks) {
		uint32_t cap = s->cap_toks ? s->cap_toks * 2 : 64;
		struct scan_tok *t;

		if (cap < s->cap_toks || cap > UINT32_MAX / 2)
			return UINT32_MAX;
		t = realloc(s->toks, (size_t)cap * sizeof(*t));
		if (!t)
			return UINT32_MAX;
		s->toks = t;
		s->cap_toks = cap;
	}
	s->toks[s->n_toks] = (struct scan_tok){ .off = (uint32_t)s->pos };
	return s->n_toks++;
}

static int scan_fail(struct scanner *s, const char *why)
{
	s->why = why;
	return -EBADMSG;
}

/* A key may not hold U+0000: json-c keeps keys as C strings, so
 * "f_int32\u0000junk" would silently name the field f_int32. */
static int scan_string(struct scanner *s, bool key)
{
	s->pos++;  /* opening quote */
	while (s->pos < s->len) {
		unsigned char c = (unsigned char)s->text[s->pos];

		if (c == '"') {
			s->pos++;
			return 0;
		}
		if (c < 0x20)
			return scan_fail(s, "control character in a string must be escaped");
		if (c != '\\') {
			s->pos++;
			continue;
		}
		if (s->pos + 1 >= s->len)
			break;
		c = (unsigned char)s->text[s->pos + 1];
		if (c == 'u') {
			if (s->pos + 6 > s->len)
				break;
			for (size_t i = 2; i < 6; i++)
				if (!is_hex(s->text[s->pos + i]))
					return scan_fail(s, "bad \\u escape");
			if (key && memcmp(s->text + s->pos + 2, "0000", 4) == 0)
				return scan_fail(s, "object keys may not contain U+0000");
			s->pos += 6;
		} else if (strchr("\"\\/bfnrt", c) && c != '\0') {
			s->pos += 2;
		} else {
			return scan_fail(s, "bad escape in string");
		}
	}
	return scan_fail(s, "unterminated string");
}

/* RFC 8259 number grammar; json-c also takes forms such as NaN. */
static int scan_number(struct scanner *s)
{
	const char *t = s->text;
	size_t p = s->pos;

	if (p < s->len && t[p] == '-')
		p++;
	if (p < s->len && t[p] == '0') {
		p++;
	} else if (p < s->len && is_digit(t[p])) {
		while (p < s->len && is_digit(t[p]))
			p++;
	} else {
		s->pos = p;
		return scan_fail(s, "bad number");
	}
	if (p < s->len && t[p] == '.') {
		p++;
		if (p >= s->len || !is_digit(t[p])) {
			s->pos = p;
			return scan_fail(s, "bad number");
		}
		while (p < s->len && is_digit(t[p]))
			p++;
	}
	if (p < s->len && (t[p] == 'e' || t[p] == 'E')) {
		p++;
		if (p < s->len && (t[p] == '+' || t[p] == '-'))
			p++;
		if (p >= s->len || !is_digit(t[p])) {
			s->pos = p;
			return scan_fail(s, "bad number");
		}
		while (p < s->len && is_digit(t[p]))
			p++;
	}
	s->pos = p;
	return 0;
}

static int scan_literal(struct scanner *s)
{
	static const char *const lits[] = { "true", "false", "null" };

	for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
		size_t n = strlen(lits[i]);

		if (s->len - s->pos >= n && memcmp(s->text + s->pos, lits[i], n) == 0) {
			s->pos += n;
			return 0;
		}
	}
	return scan_fail(s, "unexpected character");
}

static int scan_value(struct scanner *s, int depth);

/* Object or array at s->pos; tok is its token's index. */
static int scan_container(struct scanner *s, uint32_t tok, int depth)
{
	bool object = s->text[s->pos] == '{';
	char close = object ? '}' : ']';
	uint32_t count = 0;
	int r;

	if (depth > PBJSON_MAX_DEPTH)
		return scan_fail(s, "nesting deeper than 64 levels");
	s->pos++;
	scan_skip_ws(s);
	if (s->pos < s->len && s->text[s->pos] == close) {
		s->pos++;
		goto out_done;
	}
	for (;;) {
		scan_skip_ws(s);
		if (object) {
			uint32_t key;

			if (s->pos >= s->len || s->text[s->pos] != '"')
				return scan_fail(s, "expected a double-quoted key");
			key = scan_push(s);
			if (key == UINT32_MAX)
				return -ENOMEM;
			r = scan_string(s, true);
			if (r < 0)
				return r;
			s->toks[key].n = (uint32_t)(s->pos - s->toks[key].off);
			s->toks[key].next = key + 1;
			scan_skip_ws(s);
			if (s->pos >= s->len || s->text[s->pos] != ':')
				return scan_fail(s, "expected ':'");
			s->pos++;
		}
		r = scan_value(s, depth + 1);
		if (r < 0)
			return r;
		count++;
		scan_skip_ws(s);
		if (s->pos < s->len && s->text[s->pos] == ',') {
			s->pos++;
			continue;
		}
		if (s->pos < s->len && s->text[s->pos] == close) {
			s->pos++;
			break;
		}
		return scan_fail(s, "expected ',' or a closing bracket");
	}
out_done:
	s->toks[tok].n = count;
	s->toks[tok].next = s->n_toks;
	return 0;
}

static int scan_value(struct scanner *s, int depth)
{
	uint32_t tok;
	int r;

	scan_skip_ws(s);
	if (s->pos >= s->len)
		return scan_fail(s, "unexpected end of data");
	tok = scan_push(s);
	if (tok == UINT32_MAX)
		return -ENOMEM;
	switch (s->text[s->pos]) {
	case '{':
	case '[':
		return scan_container(s, tok, depth);
	case '"':
		r = scan_string(s, false);
		break;
	case 't':
	case 'f':
	case 'n':
		r = scan_literal(s);
		break;
	default:
		if (s->text[s->pos] != '-' && !is_digit(s->text[s->pos]))
			return scan_fail(s, "unexpected character");
		r = scan_number(s);
		break;
	}
	if (r < 0)
		return r;
	s->toks[tok].n = (uint32_t)(s->pos - s->toks[tok].off);
	s->toks[tok].next = tok + 1;
	return 0;
}

/* ---- decoding ---------------------------------------------------------- */

/* One decode call. Owned by pbjson_decode; lives for the call. */
struct dec {
	const char *text;
	const struct scan_tok *toks;
	uint32_t n_toks;
	uint32_t cur;            /* next token to consume, in document order */
	char *err;               /* PBJSON_ERR_LEN bytes or NULL */
	char path[PBJSON_PATH_LEN];
	size_t path_len;
	bool path_cut;           /* path did not fit: shown with "..." */
};

/* Per-message bookkeeping while its JSON object is decoded. Owned by
 * decode_object; lives until it returns. */
struct field_seen {
	const char *key;   /* the JSON key as written (json-c owns it) */
	bool set;          /* the value was not null */
};

/* Writes a message into the caller's err buffer (may be NULL); messages
 * longer than PBJSON_ERR_LEN are cut, by design. */
__attribute__((format(printf, 2, 3)))
static void err_set(char *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(err, PBJSON_ERR_LEN, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 2, 3)))
static int dec_fail(struct dec *d, const char *fmt, ...)
{
	char msg[PBJSON_ERR_LEN];
	va_list ap;

	if (!d->err)
		return -EBADMSG;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err_set(d->err, "%s%s: %s", d->path_len ? d->path : "<root>",
		d->path_cut ? "..." : "", msg);
	return -EBADMSG;
}

static int dec_oom(struct dec *d)
{
	err_set(d->err, "out of memory");
	return -ENOMEM;
}

/* Appends to the path, replacing control characters so the message stays
 * one printable line. Returns the length to restore with path_pop(). */
static size_t path_push(struct dec *d, bool dot, const char *s)
{
	size_t saved = d->path_len;
	size_t i = d->path_len;

	if (dot && i > 0 && i < sizeof(d->path) - 1)
		d->path[i++] = '.';
	for (; *s; s++) {
		if (i >= sizeof(d->path) - 1) {
			d->path_cut = true;
			break;
		}
		d->path[i++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
	}
	d->path[i] = '\0';
	d->path_len = i;
	return saved;
}

static size_t path_push_index(struct dec *d, size_t idx)
{
	char b[32];

	snprintf(b, sizeof(b), "[%zu]", idx);
	return path_push(d, false, b);
}

static void path_pop(struct dec *d, size_t saved)
{
	d->path_len = saved;
	d->path[saved] = '\0';
	d->path_cut = false;
}

/* User text shortened and made printable for an error message. */
static const char *excerpt(const char *s, size_t len, char buf[PBJSON_GOT_LEN + 8])
{
	size_t n = len < PBJSON_GOT_LEN ? len : PBJSON_GOT_LEN;

	/* Cut on a character boundary, not inside a UTF-8 sequence. */
	while (n < len && n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	for (size_t i = 0; i < n; i++)
		buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	strcpy(buf + n, len > n ? "..." : "");
	return buf;
}

/* The token as written, for "got ..." in messages. */
static const char *tok_excerpt(const struct dec *d, const struct scan_tok *t,
			       char buf[PBJSON_GOT_LEN + 8])
{
	const char *p = d->text + t->off;

	if (p[0] == '{')
		return "an object";
	if (p[0] == '[')
		return "an array";
	return excerpt(p, t->n, buf);
}

/* RFC 3629: no overlong forms, surrogates or code points past U+10FFFF. */
static bool utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i];
		size_t len;
		uint32_t cp, min;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			len = 2; cp = c & 0x1f; min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3; cp = c & 0x0f; min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4; cp = c & 0x07; min = 0x10000;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

/* Takes the next token for value v, checking that the scan and json-c's tree
 * agree; they always should, this only guards the lock-step assumption. */
static int dec_take(struct dec *d, const struct json_object *v, const struct scan_tok **ret)
{
	const struct scan_tok *t;
	char c;
	bool ok;

	if (d->cur >= d->n_toks)
		return dec_fail(d, "internal error: token scan out of step");
	t = &d->toks[d->cur];
	c = d->text[t->off];
	switch (json_object_get_type(v)) {
	case json_type_null:    ok = c == 'n'; break;
	case json_type_boolean: ok = c == 't' || c == 'f'; break;
	case json_type_int:
	case json_type_double:  ok = c == '-' || is_digit(c); break;
	case json_type_string:  ok = c == '"'; break;
	case json_type_object:  ok = c == '{'; break;
	case json_type_array:   ok = c == '['; break;
	default:                ok = false; break;
	}
	if (!ok)
		return dec_fail(d, "internal error: token scan out of step");
	d->cur++;
	*ret = t;
	return 0;
}

static const char *type_expect(ProtobufCType type)
{
	switch (type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32: return "a signed 32-bit integer";
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64: return "a signed 64-bit integer";
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:  return "an unsigned 32-bit integer";
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:  return "an unsigned 64-bit integer";
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE:   return "a number";
	case PROTOBUF_C_TYPE_BOOL:     return "true or false";
	case PROTOBUF_C_TYPE_ENUM:     return "an enum name or number";
	case PROTOBUF_C_TYPE_STRING:   return "a string";
	case PROTOBUF_C_TYPE_BYTES:    return "a base64 string";
	case PROTOBUF_C_TYPE_MESSAGE:  return "a JSON object";
	}
	return "a value";
}

static const char *type_name(ProtobufCType type)
{
	static const char *const names[] = {
		[PROTOBUF_C_TYPE_INT32] = "int32",       [PROTOBUF_C_TYPE_SINT32] = "sint32",
		[PROTOBUF_C_TYPE_SFIXED32] = "sfixed32", [PROTOBUF_C_TYPE_INT64] = "int64",
		[PROTOBUF_C_TYPE_SINT64] = "sint64",     [PROTOBUF_C_TYPE_SFIXED64] = "sfixed64",
		[PROTOBUF_C_TYPE_UINT32] = "uint32",     [PROTOBUF_C_TYPE_FIXED32] = "fixed32",
		[PROTOBUF_C_TYPE_UINT64] = "uint64",     [PROTOBUF_C_TYPE_FIXED64] = "fixed64",
		[PROTOBUF_C_TYPE_FLOAT] = "float",       [PROTOBUF_C_TYPE_DOUBLE] = "double",
		[PROTOBUF_C_TYPE_BOOL] = "bool",         [PROTOBUF_C_TYPE_ENUM] = "enum",
		[PROTOBUF_C_TYPE_STRING] = "string",     [PROTOBUF_C_TYPE_BYTES] = "bytes",
		[PROTOBUF_C_TYPE_MESSAGE] = "message",
	};

	if ((unsigned)type < sizeof(names) / sizeof(names[0]) && names[type])
		return names[type];
	return "?";
}

static int fail_type(struct dec *d, ProtobufCType type, const struct scan_tok *t)
{
	char buf[PBJSON_GOT_LEN + 8];

	return dec_fail(d, "expected %s, got %s", type_expect(type), tok_excerpt(d, t, buf));
}

static int fail_range(struct dec *d, ProtobufCType type, const struct scan_tok *t)
{
	char buf[PBJSON_GOT_LEN + 8];

	return dec_fail(d, "%s is out of range for %s", tok_excerpt(d, t, buf), type_name(type));
}

/* An integer from the JSON text: either exact (sign + magnitude, from
 * plain digits) or a double that still has to be checked for integrality.
 * Lives on dec_integer's stack. */
struct int_in {
	bool exact;
	bool neg;
	bool overflow;  /* magnitude beyond 2^64 - 1 */
	uint64_t mag;
	double d;
};

/* Plain decimal digits, optional leading '-'. Returns false if s is not. */
static bool parse_decimal(const char *s, size_t n, struct int_in *out)
{
	size_t i = 0;

	*out = (struct int_in){ .exact = true };
	if (i < n && s[i] == '-') {
		out->neg = true;
		i++;
	}
	if (i == n)
		return false;
	for (; i < n; i++) {
		unsigned dig;

		if (!is_digit(s[i]))
			return false;
		dig = (unsigned)(s[i] - '0');
		if (out->mag > (UINT64_MAX - dig) / 10)
			out->overflow = true;
		else
			out->mag = out->mag * 10 + dig;
	}
	return true;
}

/* strtod on a token that is not NUL-terminated in the input. */
static int strtod_n(const char *s, size_t n, double *out)
{
	char small[64];
	char *b = small;
	char *end;
	int r = 0;

	if (n >= sizeof(small)) {
		b = malloc(n + 1);
		if (!b)
			return -ENOMEM;
	}
	memcpy(b, s, n);
	b[n] = '\0';
	errno = 0;
	*out = strtod(b, &end);
	if (end != b + n)
		r = -EINVAL;
	else if (errno == ERANGE && isinf(*out))
		r = -ERANGE;
	if (b != small)
		free(b);
	return r;
}

/* Reads an integer of `type` (any of the eight integer types, or enum as
 * int32) from a number token or, if allow_string, a decimal string. */
static int dec_integer(struct dec *d, ProtobufCType type, struct json_object *v,
		       const struct scan_tok *t, bool allow_string, uint64_t *bits)
{
	const char *p = d->text + t->off;
	bool is_signed, wide;
	struct int_in in;
	uint64_t max_pos, max_neg;  /* largest magnitudes allowed */

	switch (type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32: case PROTOBUF_C_TYPE_ENUM:
		is_signed = true; wide = false; break;
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		is_signed = true; wide = true; break;
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
		is_signed = false; wide = false; break;
	default:
		is_signed = false; wide = true; break;
	}
	max_pos = wide ? (is_signed ? (uint64_t)INT64_MAX : UINT64_MAX)
		       : (is_signed ? (uint64_t)INT32_MAX : UINT32_MAX);
	max_neg = !is_signed ? 0 : wide ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT32_MAX + 1;

	if (json_object_is_type(v, json_type_string)) {
		const char *s = json_object_get_string(v);
		size_t n = (size_t)json_object_get_string_len(v);

		if (!allow_string || !parse_decimal(s, n, &in))
			return fail_type(d, type, t);
	} else if (json_object_is_type(v, json_type_int) ||
		   json_object_is_type(v, json_type_double)) {
		if (!parse_decimal(p, t->n, &in)) {
			int r = strtod_n(p, t->n, &in.d);

			if (r == -ENOMEM)
				return dec_oom(d);
			if (r == -ERANGE)
				return fail_range(d, type, t);
			if (r < 0 || in.d != trunc(in.d))
				return fail_type(d, type, t);
			in.exact = false;
		}
	} else {
		return fail_type(d, type, t);
	}

	if (!in.exact) {
		/* 2^64 and 2^63 are exact doubles; compare before converting. */
		if (in.d >= 0) {
			if (in.d >= 18446744073709551616.0 || (uint64_t)in.d > max_pos)
				return fail_range(d, type, t);
			*bits = (uint64_t)in.d;
		} else {
			if (-in.d > 9223372036854775808.0 || (uint64_t)-in.d > max_neg)
				return fail_range(d, type, t);
			*bits = 0 - (uint64_t)-in.d;
		}
		return 0;
	}
	if (in.overflow || in.mag > (in.neg ? max_neg : max_pos))
		return fail_range(d, type, t);
	*bits = in.neg ? 0 - in.mag : in.mag;
	return 0;
}

static int dec_float(struct dec *d, ProtobufCType type, struct json_object *v,
		     const struct scan_tok *t, double *out)
{
	const char *s;
	size_t n;
	int r;

	if (json_object_is_type(v, json_type_string)) {
		struct scanner chk;

		s = json_object_get_string(v);
		n = (size_t)json_object_get_string_len(v);
		if (strcmp(s, "NaN") == 0 && n == 3) {
			*out = NAN;
			return 0;
		}
		if (strcmp(s, "Infinity") == 0 && n == 8) {
			*out = INFINITY;
			return 0;
		}
		if (strcmp(s, "-Infinity") == 0 && n == 9) {
			*out = -INFINITY;
			return 0;
		}
		/* Only JSON number syntax: strtod alone would take "0x1p3". */
		chk = (struct scanner){ .text = s, .len = n };
		if (n == 0 || scan_number(&chk) < 0 || chk.pos != n)
			return fail_type(d, type, t);
	} else if (json_object_is_type(v, json_type_int) ||
		   json_object_is_type(v, json_type_double)) {
		s = d->text + t->off;
		n = t->n;
	} else {
		return fail_type(d, type, t);
	}
	r = strtod_n(s, n, out);
	if (r == -ENOMEM)
		return dec_oom(d);
	if (r == -ERANGE)
		return fail_range(d, type, t);
	if (r < 0)
		return fail_type(d, type, t);
	if (type == PROTOBUF_C_TYPE_FLOAT && isinf((float)*out))
		return fail_range(d, type, t);
	return 0;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Standard or URL-safe alphabet, padding optional. out has room for
 * n / 4 * 3 + 3 bytes. Returns the decoded length or -EINVAL. */
static ssize_t b64_decode(const char *s, size_t n, uint8_t *out)
{
	size_t o = 0, pad = 0;
	uint32_t acc = 0;
	unsigned bits = 0;

	if (n % 4 == 0 && n >= 1 && s[n - 1] == '=') {
		pad = (n >= 2 && s[n - 2] == '=') ? 2 : 1;
		n -= pad;
	}
	if (n % 4 == 1)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int v = b64_value((unsigned char)s[i]);

		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	return (ssize_t)o;
}

static int dec_bytes(struct dec *d, struct json_object *v, const struct scan_tok *t,
		     ProtobufCBinaryData *out)
{
	const char *s;
	size_t n;
	uint8_t *buf;
	ssize_t got;

	if (!json_object_is_type(v, json_type_string))
		return fail_type(d, PROTOBUF_C_TYPE_BYTES, t);
	s = json_object_get_string(v);
	n = (size_t)json_object_get_string_len(v);
	/* Never NULL, even when empty: a set oneof or repeated element keeps a
	 * real buffer, exactly as protobuf-c's unpacker would. */
	buf = malloc(n / 4 * 3 + 3);
	if (!buf)
		return dec_oom(d);
	got = b64_decode(s, n, buf);
	if (got < 0) {
		free(buf);
		return fail_type(d, PROTOBUF_C_TYPE_BYTES, t);
	}
	out->data = buf;
	out->len = (size_t)got;
	return 0;
}

static int dec_enum(struct dec *d, const ProtobufCFieldDescriptor *f, struct json_object *v,
		    const struct scan_tok *t, int *out)
{
	const ProtobufCEnumDescriptor *ed = f->descriptor;

	if (json_object_is_type(v, json_type_string)) {
		const char *name = json_object_get_string(v);
		const ProtobufCEnumValue *ev = NULL;

		if (strlen(name) == (size_t)json_object_get_string_len(v))
			ev = protobuf_c_enum_descriptor_get_value_by_name(ed, name);
		if (!ev) {
			char buf[PBJSON_GOT_LEN + 8];

			return dec_fail(d, "unknown enum value '%s' for %s",
					excerpt(name, (size_t)json_object_get_string_len(v), buf),
					ed->name);
		}
		*out = ev->value;
		return 0;
	}
	if (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)) {
		uint64_t bits;
		int r = dec_integer(d, PROTOBUF_C_TYPE_ENUM, v, t, false, &bits);

		if (r < 0)
			return r;
		*out = (int32_t)(uint32_t)bits;
		return 0;
	}
	return fail_type(d, PROTOBUF_C_TYPE_ENUM, t);
}

static int decode_object(struct dec *d, const ProtobufCMessageDescriptor *desc,
			 struct json_object *obj, ProtobufCMessage **ret);

/* Bytes one element of this type takes in a protobuf-c struct or array. */
static size_t elem_size(ProtobufCType type)
{
	switch (type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32: case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32: return sizeof(uint32_t);
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64: case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: return sizeof(uint64_t);
	case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
	case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
	case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
	}
	return 0;
}

/* Decodes one non-null value of field f into dst (a struct member or array
 * slot). dst is written only on success. */
static int decode_one(struct dec *d, const ProtobufCFieldDescriptor *f,
		      struct json_object *v, void *dst)
{
	const struct scan_tok *t;
	uint64_t bits;
	double dbl;
	int r;

	if (json_object_is_type(v, json_type_object) && f->type == PROTOBUF_C_TYPE_MESSAGE) {
		ProtobufCMessage *sub;

		r = decode_object(d, f->descriptor, v, &sub);
		if (r < 0)
			return r;
		memcpy(dst, &sub, sizeof(sub));
		return 0;
	}
	r = dec_take(d, v, &t);
	if (r < 0)
		return r;
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32: case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32: {
		uint32_t u;

		r = dec_integer(d, f->type, v, t, true, &bits);
		if (r < 0)
			return r;
		u = (uint32_t)bits;
		memcpy(dst, &u, sizeof(u));
		return 0;
	}
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64: case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		r = dec_integer(d, f->type, v, t, true, &bits);
		if (r < 0)
			return r;
		memcpy(dst, &bits, sizeof(bits));
		return 0;
	case PROTOBUF_C_TYPE_FLOAT: {
		float fl;

		r = dec_float(d, f->type, v, t, &dbl);
		if (r < 0)
			return r;
		fl = (float)dbl;
		memcpy(dst, &fl, sizeof(fl));
		return 0;
	}
	case PROTOBUF_C_TYPE_DOUBLE:
		r = dec_float(d, f->type, v, t, &dbl);
		if (r < 0)
			return r;
		memcpy(dst, &dbl, sizeof(dbl));
		return 0;
	case PROTOBUF_C_TYPE_BOOL: {
		protobuf_c_boolean b;

		if (!json_object_is_type(v, json_type_boolean))
			return fail_type(d, f->type, t);
		b = json_object_get_boolean(v) ? 1 : 0;
		memcpy(dst, &b, sizeof(b));
		return 0;
	}
	case PROTOBUF_C_TYPE_ENUM: {
		int e = 0;

		r = dec_enum(d, f, v, t, &e);
		if (r < 0)
			return r;
		memcpy(dst, &e, sizeof(e));
		return 0;
	}
	case PROTOBUF_C_TYPE_STRING: {
		size_t n;
		char *s;

		if (!json_object_is_type(v, json_type_string))
			return fail_type(d, f->type, t);
		n = (size_t)json_object_get_string_len(v);
		if (memchr(json_object_get_string(v), '\0', n))
			return dec_fail(d, "strings may not contain U+0000");
		if (!utf8_valid(json_object_get_string(v), n))
			return dec_fail(d, "string is not valid UTF-8");
		s = malloc(n + 1);
		if (!s)
			return dec_oom(d);
		memcpy(s, json_object_get_string(v), n + 1);
		memcpy(dst, &s, sizeof(s));
		return 0;
	}
	case PROTOBUF_C_TYPE_BYTES:
		return dec_bytes(d, v, t, dst);
	case PROTOBUF_C_TYPE_MESSAGE:
		return fail_type(d, f->type, t);
	}
	return dec_fail(d, "unsupported field type %d", (int)f->type);
}

static int decode_repeated(struct dec *d, ProtobufCMessage *msg,
			   const ProtobufCFieldDescriptor *f, struct json_object *v)
{
	size_t *count = (size_t *)((char *)msg + f->quantifier_offset);
	void **arr = (void **)((char *)msg + f->offset);
	const struct scan_tok *t;
	size_t n, sz = elem_size(f->type);
	int r;

	r = dec_take(d, v, &t);
	if (r < 0)
		return r;
	if (!v)
		return 0;
	if (!json_object_is_type(v, json_type_array)) {
		char buf[PBJSON_GOT_LEN + 8];

		return dec_fail(d, "expected a JSON array, got %s", tok_excerpt(d, t, buf));
	}
	n = json_object_array_length(v);
	if (n != t->n)
		return dec_fail(d, "internal error: token scan out of step");
	if (n == 0)
		return 0;
	/* Filled one slot at a time with the count trailing, so the message
	 * stays freeable if an element fails. */
	*arr = calloc(n, sz);
	if (!*arr)
		return dec_oom(d);
	*count = 0;
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(v, i);
		size_t saved = path_push_index(d, i);

		if (!e) {
			const struct scan_tok *nt;

			r = dec_take(d, e, &nt);
			if (r == 0)
				r = fail_type(d, f->type, nt);
		} else {
			r = decode_one(d, f, e, (char *)*arr + i * sz);
		}
		if (r < 0)
			return r;
		path_pop(d, saved);
		(*count)++;
	}
	return 0;
}

static const ProtobufCFieldDescriptor *field_by_id(const ProtobufCMessageDescriptor *desc,
						   uint32_t id, unsigned *idx)
{
	for (unsigned i = 0; i < desc->n_fields; i++) {
		if (desc->fields[i].id == id) {
			*idx = i;
			return &desc->fields[i];
		}
	}
	return NULL;
}

/* A singular field: plain, optional, required or a oneof member. */
static int decode_single(struct dec *d, ProtobufCMessage *msg, const ProtobufCMessageDescriptor *desc,
			 const ProtobufCFieldDescriptor *f, struct json_object *v,
			 const struct field_seen *seen)
{
	char *member = (char *)msg + f->offset;
	char *quant = (char *)msg + f->quantifier_offset;
	int r;

	if (!v) {
		/* null: the default, and for a oneof member "not this one". */
		const struct scan_tok *t;

		return dec_take(d, v, &t);
	}
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		uint32_t cur;

		memcpy(&cur, quant, sizeof(cur));
		if (cur != 0 && cur != f->id) {
			unsigned oi = 0;
			const ProtobufCFieldDescriptor *other = field_by_id(desc, cur, &oi);
			const char *other_key = other ? (seen[oi].key ? seen[oi].key : other->name) : "?";
			const char *key = seen[f - desc->fields].key;
			char b1[PBJSON_GOT_LEN + 8], b2[PBJSON_GOT_LEN + 8];

			return dec_fail(d, "'%s' and '%s' are members of the same oneof; set at most one",
					excerpt(other_key, strlen(other_key), b1),
					excerpt(key, strlen(key), b2));
		}
	}
	r = decode_one(d, f, v, member);
	if (r < 0)
		return r;
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		uint32_t id = f->id;

		memcpy(quant, &id, sizeof(id));
	} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
		   f->type != PROTOBUF_C_TYPE_MESSAGE) {
		protobuf_c_boolean has = 1;

		memcpy(quant, &has, sizeof(has));
	}
	return 0;
}

/* proto3 JSON names drop each '_' and upper-case the letter after it.
 * Returns the next character of the JSON name of *name, or 0 at its end. */
static char json_name_next(const char **name)
{
	bool up = false;
	char c;

	while (**name == '_') {
		up = true;
		(*name)++;
	}
	c = **name;
	if (!c)
		return 0;
	(*name)++;
	return up && c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static bool key_is_json_name(const char *key, const char *name)
{
	for (char c; (c = json_name_next(&name));)
		if (*key++ != c)
			return false;
	return *key == '\0';
}

static const ProtobufCFieldDescriptor *field_by_key(const ProtobufCMessageDescriptor *desc,
						    const char *key, unsigned *idx)
{
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const char *name = desc->fields[i].name;

		if (strcmp(name, key) == 0 || key_is_json_name(key, name)) {
			*idx = i;
			return &desc->fields[i];
		}
	}
	return NULL;
}

/* json-c kept only the last of a duplicated key; find one to name it. */
static int fail_duplicate_key(struct dec *d, const struct scan_tok *obj_tok)
{
	uint32_t obj_idx = (uint32_t)(obj_tok - d->toks);
	struct json_object *set = json_object_new_object();
	struct json_tokener *tok = json_tokener_new();
	int r = -ENOMEM;

	if (!set || !tok)
		goto out_free;
	for (uint32_t i = obj_idx + 1; i < obj_tok->next; i = d->toks[i + 1].next) {
		struct json_object *k;
		const char *ks;

		json_tokener_reset(tok);
		k = json_tokener_parse_ex(tok, d->text + d->toks[i].off, (int)d->toks[i].n);
		if (!k)
			break;
		ks = json_object_get_string(k);
		if (json_object_object_get_ex(set, ks, NULL)) {
			char buf[PBJSON_GOT_LEN + 8];

			r = dec_fail(d, "duplicate key '%s'", excerpt(ks, strlen(ks), buf));
			json_object_put(k);
			goto out_free;
		}
		if (json_object_object_add(set, ks, NULL) < 0) {
			json_object_put(k);
			goto out_free;
		}
		json_object_put(k);
	}
	r = dec_fail(d, "duplicate key");
out_free:
	if (r == -ENOMEM)
		dec_oom(d);
	json_tokener_free(tok);
	json_object_put(set);
	return r;
}

static int decode_object(struct dec *d, const ProtobufCMessageDescriptor *desc,
			 struct json_object *obj, ProtobufCMessage **ret)
{
	const struct scan_tok *t;
	struct field_seen *seen = NULL;
	ProtobufCMessage *msg = NULL;
	int r;

	r = dec_take(d, obj, &t);
	if (r < 0)
		return r;
	if (!json_object_is_type(obj, json_type_object)) {
		char buf[PBJSON_GOT_LEN + 8];

		return dec_fail(d, "expected a JSON object, got %s", tok_excerpt(d, t, buf));
	}
	if ((uint32_t)json_object_object_length(obj) != t->n)
		return fail_duplicate_key(d, t);

	msg = malloc(desc->sizeof_message);
	seen = calloc(desc->n_fields ? desc->n_fields : 1, sizeof(*seen));
	if (!msg || !seen) {
		free(msg);
		msg = NULL;
		r = dec_oom(d);
		goto out_free;
	}
	protobuf_c_message_init(desc, msg);

	json_object_object_foreach(obj, key, val) {
		const ProtobufCFieldDescriptor *f;
		unsigned fi = 0;
		size_t saved;

		/* The key's own token. */
		if (d->cur >= d->n_toks || d->text[d->toks[d->cur].off] != '"') {
			r = dec_fail(d, "internal error: token scan out of step");
			goto out_free;
		}
		d->cur++;
		saved = path_push(d, true, key);
		f = field_by_key(desc, key, &fi);
		if (!f) {
			r = dec_fail(d, "unknown field");
			goto out_free;
		}
		if (seen[fi].key) {
			char buf[PBJSON_GOT_LEN + 8];

			r = dec_fail(d, "field already given as '%s'",
				     excerpt(seen[fi].key, strlen(seen[fi].key), buf));
			goto out_free;
		}
		seen[fi].key = key;
		seen[fi].set = val != NULL;
		if (f->label == PROTOBUF_C_LABEL_REPEATED)
			r = decode_repeated(d, msg, f, val);
		else
			r = decode_single(d, msg, desc, f, val, seen);
		if (r < 0)
			goto out_free;
		path_pop(d, saved);
	}
	if (d->cur != t->next) {
		r = dec_fail(d, "internal error: token scan out of step");
		goto out_free;
	}
	for (unsigned i = 0; i < desc->n_fields; i++) {
		if (desc->fields[i].label == PROTOBUF_C_LABEL_REQUIRED && !seen[i].set) {
			r = dec_fail(d, "missing required field '%s'", desc->fields[i].name);
			goto out_free;
		}
	}
	*ret = msg;
	msg = NULL;
	r = 0;
out_free:
	if (msg)
		protobuf_c_message_free_unpacked(msg, NULL);
	free(seen);
	return r;
}

static int decode_text(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
		       char *err, ProtobufCMessage **ret)
{
	struct json_tokener *tok = NULL;
	struct json_object *root = NULL;
	struct scanner s = { .text = json, .len = len };
	struct dec d = { .text = json, .err = err };
	enum json_tokener_error jerr;
	size_t end;
	int r;

	if (err)
		err[0] = '\0';
	if (!desc || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC || !ret ||
	    (!json && len > 0)) {
		err_set(err, "invalid arguments");
		return -EINVAL;
	}
	/* json-c takes an int length, and tokens are indexed by uint32_t. */
	if (len >= INT32_MAX) {
		err_set(err, "JSON text of %zu bytes is too large", len);
		return -EBADMSG;
	}

	tok = json_tokener_new_ex(PBJSON_MAX_DEPTH);
	if (!tok)
		return dec_oom(&d);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	root = json_tokener_parse_ex(tok, json ? json : "", (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (!root && jerr == json_tokener_continue) {
		/* The NUL tells json-c the text ends here (a bare number needs it). */
		root = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
		end = len + json_tokener_get_parse_end(tok);
		if (end > len)
			end = len;
	}
	if (!root && jerr != json_tokener_success) {
		err_set(err, "invalid JSON at byte %zu: %s", end,
				 jerr == json_tokener_error_depth ? "nesting deeper than 64 levels"
								 : json_tokener_error_desc(jerr));
		r = -EBADMSG;
		goto out_free;
	}
	for (size_t i = end; i < len; i++) {
		if (!is_json_ws(json[i])) {
			err_set(err, "invalid JSON at byte %zu: unexpected data after the JSON value", i);
			r = -EBADMSG;
			goto out_free;
		}
	}

	r = scan_value(&s, 1);
	if (r == 0) {
		scan_skip_ws(&s);
		if (s.pos != len)
			r = scan_fail(&s, "unexpected data after the JSON value");
	}
	if (r == -ENOMEM) {
		dec_oom(&d);
		goto out_free;
	}
	if (r < 0) {
		err_set(err, "invalid JSON at byte %zu: %s", s.pos, s.why);
		goto out_free;
	}

	d.toks = s.toks;
	d.n_toks = s.n_toks;
	r = decode_object(&d, desc, root, ret);
out_free:
	free(s.toks);
	json_object_put(root);
	json_tokener_free(tok);
	return r;
}

int pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
		  char err[PBJSON_ERR_LEN], ProtobufCMessage **ret)
{
	locale_t saved = numeric_c_begin();
	int r = decode_text(desc, json, len, err, ret);

	numeric_c_end(saved);
	return r;
}

int pbjson_decode_file(const ProtobufCMessageDescriptor *desc, const char *path,
		       char err[PBJSON_ERR_LEN], ProtobufCMessage **ret)
{
	char inner[PBJSON_ERR_LEN];
	char *buf = NULL;
	size_t len = 0;
	int r;

	if (err)
		err[0] = '\0';
	if (!path) {
		err_set(err, "invalid arguments");
		return -EINVAL;
	}
	r = fileio_read(path, PBJSON_MAX_FILE_BYTES, &buf, &len);
	if (r == -EFBIG) {
		err_set(err, "'%s': larger than 256 MiB", path);
		return r;
	}
	if (r < 0) {
		err_set(err, "'%s': %s", path, strerror(-r));
		return r;
	}
	r = pbjson_decode(desc, buf, len, inner, ret);
	if (r < 0)
		err_set(err, "'%s': %s", path, inner);
	free(buf);
	return r;
}

/* ---- encoding ---------------------------------------------------------- */

/* Output buffer. Owned by pbjson_encode; the string is handed to the caller. */
struct out {
	char *p;
	size_t len;
	size_t cap;
	bool oom;
	bool pretty;
	bool proto_names;
};

static void out_reserve(struct out *o, size_t n)
{
	size_t cap;
	char *p;

	if (o->oom || o->len + n < o->cap)
		return;
	cap = o->cap ? o->cap : 256;
	while (cap <= o->len + n)
		cap *= 2;
	p = realloc(o->p, cap);
	if (!p) {
		o->oom = true;
		return;
	}
	o->p = p;
	o->cap = cap;
}

static void out_mem(struct out *o, const char *s, size_t n)
{
	out_reserve(o, n);
	if (o->oom)
		return;
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static void out_str(struct out *o, const char *s)
{
	out_mem(o, s, strlen(s));
}

static void out_char(struct out *o, char c)
{
	out_mem(o, &c, 1);
}

__attribute__((format(printf, 2, 3)))
static void out_fmt(struct out *o, const char *fmt, ...)
{
	char b[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	if (n > 0)
		out_mem(o, b, (size_t)n < sizeof(b) ? (size_t)n : sizeof(b) - 1);
}

static void out_newline(struct out *o, int depth)
{
	if (!o->pretty)
		return;
	out_char(o, '\n');
	for (int i = 0; i < depth; i++)
		out_mem(o, "  ", 2);
}

/* JSON string body (no quotes) of n bytes; other bytes pass through. */
static void out_escaped(struct out *o, const char *s, size_t n)
{
	size_t run = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		char u[8];

		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		default:
			if (c < 0x20) {
				snprintf(u, sizeof(u), "\\u%04x", c);
				esc = u;
			}
		}
		if (!esc)
			continue;
		out_mem(o, s + run, i - run);
		out_str(o, esc);
		run = i + 1;
	}
	out_mem(o, s + run, n - run);
}

static void out_quoted(struct out *o, const char *s)
{
	out_char(o, '"');
	out_escaped(o, s, strlen(s));
	out_char(o, '"');
}

static void out_key(struct out *o, const char *name)
{
	out_char(o, '"');
	if (o->proto_names) {
		out_escaped(o, name, strlen(name));
	} else {
		for (char c; (c = json_name_next(&name));)
			out_escaped(o, &c, 1);
	}
	out_mem(o, o->pretty ? "\": " : "\":", o->pretty ? 3 : 2);
}

static void out_double(struct out *o, double v, bool is_float)
{
	char b[40];

	if (isnan(v)) {
		out_str(o, "\"NaN\"");
		return;
	}
	if (isinf(v)) {
		out_str(o, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
		return;
	}
	/* Fewest significant digits that read back to the same value. */
	for (int prec = is_float ? 6 : 15; prec <= 17; prec++) {
		snprintf(b, sizeof(b), "%.*g", prec, v);
		/* Check as the decoder reads it: strtod, then narrowed. */
		if (is_float ? (float)strtod(b, NULL) == (float)v : strtod(b, NULL) == v)
			break;
	}
	out_str(o, b);
}

static void out_base64(struct out *o, const uint8_t *p, size_t n)
{
	static const char tbl[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	out_char(o, '"');
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		char q[4];

		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		q[0] = tbl[(v >> 18) & 63];
		q[1] = tbl[(v >> 12) & 63];
		q[2] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
		q[3] = i + 2 < n ? tbl[v & 63] : '=';
		out_mem(o, q, 4);
	}
	out_char(o, '"');
}

static int encode_message(struct out *o, const ProtobufCMessage *msg, int depth);

/* One value of field f stored at p. */
static int encode_value(struct out *o, const ProtobufCFieldDescriptor *f, const void *p, int depth)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32: {
		int32_t v;

		memcpy(&v, p, sizeof(v));
		out_fmt(o, "%" PRId32, v);
		break;
	}
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: {
		uint32_t v;

		memcpy(&v, p, sizeof(v));
		out_fmt(o, "%" PRIu32, v);
		break;
	}
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64: {
		int64_t v;

		memcpy(&v, p, sizeof(v));
		out_fmt(o, "\"%" PRId64 "\"", v);
		break;
	}
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: {
		uint64_t v;

		memcpy(&v, p, sizeof(v));
		out_fmt(o, "\"%" PRIu64 "\"", v);
		break;
	}
	case PROTOBUF_C_TYPE_FLOAT: {
		float v;

		memcpy(&v, p, sizeof(v));
		out_double(o, v, true);
		break;
	}
	case PROTOBUF_C_TYPE_DOUBLE: {
		double v;

		memcpy(&v, p, sizeof(v));
		out_double(o, v, false);
		break;
	}
	case PROTOBUF_C_TYPE_BOOL: {
		protobuf_c_boolean v;

		memcpy(&v, p, sizeof(v));
		out_str(o, v ? "true" : "false");
		break;
	}
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumValue *ev;
		int v;

		memcpy(&v, p, sizeof(v));
		ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
		if (ev)
			out_quoted(o, ev->name);
		else
			out_fmt(o, "%d", v);
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s;

		memcpy(&s, p, sizeof(s));
		if (!s)
			s = "";
		/* JSON text must be UTF-8; there is no escape for a stray byte. */
		if (!utf8_valid(s, strlen(s)))
			return -EILSEQ;
		out_quoted(o, s);
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = p;

		out_base64(o, b->data, b->data ? b->len : 0);
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m;

		memcpy(&m, p, sizeof(m));
		if (!m) {
			out_str(o, "{}");
			break;
		}
		return encode_message(o, m, depth);
	}
	}
	return 0;
}

/* Whether pack would put singular field f on the wire. */
static bool field_present(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
	const char *member = (const char *)msg + f->offset;
	const char *quant = (const char *)msg + f->quantifier_offset;
	bool ptr_type = f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE;
	const void *ptr = NULL;

	if (ptr_type)
		memcpy(&ptr, member, sizeof(ptr));
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		uint32_t c;

		memcpy(&c, quant, sizeof(c));
		if (c != f->id)
			return false;
		return !ptr_type || (ptr && ptr != f->default_value);
	}
	switch (f->label) {
	case PROTOBUF_C_LABEL_REQUIRED:
		return !ptr_type || ptr;
	case PROTOBUF_C_LABEL_OPTIONAL:
		if (ptr_type)
			return ptr && ptr != f->default_value;
		{
			protobuf_c_boolean has;

			memcpy(&has, quant, sizeof(has));
			return has;
		}
	case PROTOBUF_C_LABEL_REPEATED:
		return false;
	case PROTOBUF_C_LABEL_NONE:
		break;
	}
	/* proto3 implicit presence: only non-zero values. */
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING:
		return ptr && *(const char *)ptr;
	case PROTOBUF_C_TYPE_MESSAGE:
		return ptr;
	case PROTOBUF_C_TYPE_BYTES: {
		ProtobufCBinaryData b;

		memcpy(&b, member, sizeof(b));
		return b.len > 0;
	}
	case PROTOBUF_C_TYPE_FLOAT: {
		float v;

		memcpy(&v, member, sizeof(v));
		return v != 0;
	}
	case PROTOBUF_C_TYPE_DOUBLE: {
		double v;

		memcpy(&v, member, sizeof(v));
		return v != 0;
	}
	default: {
		size_t sz = elem_size(f->type);
		uint64_t v = 0;

		memcpy(&v, member, sz);
		return v != 0;
	}
	}
}

static int encode_message(struct out *o, const ProtobufCMessage *msg, int depth)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;
	bool first = true;

	/* Past this depth the output could not be decoded again. */
	if (depth >= PBJSON_MAX_DEPTH || !desc ||
	    desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
		return -EINVAL;
	out_char(o, '{');
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		const char *member = (const char *)msg + f->offset;
		int r;

		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n, sz = elem_size(f->type);
			const char *arr;

			memcpy(&n, (const char *)msg + f->quantifier_offset, sizeof(n));
			memcpy(&arr, member, sizeof(arr));
			if (n == 0 || !arr)
				continue;
			if (depth + 1 >= PBJSON_MAX_DEPTH)
				return -EINVAL;
			if (!first)
				out_char(o, ',');
			first = false;
			out_newline(o, depth + 1);
			out_key(o, f->name);
			out_char(o, '[');
			for (size_t j = 0; j < n; j++) {
				if (j)
					out_char(o, ',');
				out_newline(o, depth + 2);
				r = encode_value(o, f, arr + j * sz, depth + 2);
				if (r < 0)
					return r;
			}
			out_newline(o, depth + 1);
			out_char(o, ']');
			continue;
		}
		if (!field_present(msg, f))
			continue;
		if (!first)
			out_char(o, ',');
		first = false;
		out_newline(o, depth + 1);
		out_key(o, f->name);
		r = encode_value(o, f, member, depth + 1);
		if (r < 0)
			return r;
	}
	if (!first)
		out_newline(o, depth);
	out_char(o, '}');
	return 0;
}

char *pbjson_encode(const ProtobufCMessage *msg, unsigned flags)
{
	struct out o = {
		.pretty = flags & PBJSON_PRETTY,
		.proto_names = flags & PBJSON_PROTO_NAMES,
	};
	locale_t saved;
	int r;

	if (!msg || (flags & ~(unsigned)(PBJSON_PRETTY | PBJSON_PROTO_NAMES))) {
		errno = EINVAL;
		return NULL;
	}
	saved = numeric_c_begin();
	r = encode_message(&o, msg, 0);
	numeric_c_end(saved);
	if (r == 0 && o.pretty)
		out_char(&o, '\n');
	if (r == 0 && o.oom)
		r = -ENOMEM;
	if (r < 0) {
		free(o.p);
		errno = -r;
		return NULL;
	}
	return o.p;
}
