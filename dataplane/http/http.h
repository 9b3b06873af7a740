/* http.h - strict, incremental, zero-copy HTTP/1.1 request- and
 * response-head parsers (RFC 9112) and in-place chunked body decoder for the
 * node's workers.
 *
 * No allocation, no I/O, no global state: every result is a view (pointer +
 * length) into the caller's receive buffer. Only CRLF line endings are
 * accepted; anything ambiguous for request smuggling is refused.
 */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Defaults applied to a limit left at 0. */
#define HTTP_DEFAULT_MAX_HEAD_BYTES	 (8u * 1024)
#define HTTP_DEFAULT_MAX_FIELDS		 100u
#define HTTP_DEFAULT_MAX_TARGET_BYTES	 (4u * 1024)
#define HTTP_DEFAULT_MAX_BODY_BYTES	 (10ull * 1024 * 1024)
#define HTTP_DEFAULT_MAX_CHUNK_EXT_BYTES 1024u

/* Per-route limits and the client-id header name. Owned by the caller
 * (the route config); read only during a call. A 0 field means its
 * HTTP_DEFAULT_*; a NULL limits pointer means every default. */
struct http_limits {
	size_t max_head_bytes;	     /* request line + fields + final CRLF */
	size_t max_fields;	     /* header field lines */
	size_t max_target_bytes;     /* request-target */
	uint64_t max_body_bytes;     /* Content-Length, or decoded chunk data */
	size_t max_chunk_ext_bytes;  /* one chunk's extensions (";a=b...") */
	const char *client_id_name;  /* NUL-terminated, NULL/"" = none */
};

/* Why a request was refused. http_error_status() maps each to its status. */
enum http_error {
	HTTP_OK = 0,
	HTTP_ERR_SYNTAX,	     /* 400 malformed request line or field line */
	HTTP_ERR_BAD_CHAR,	     /* 400 NUL, CTL or a byte not allowed there */
	HTTP_ERR_BARE_LF,	     /* 400 LF without CR, or CR without LF */
	HTTP_ERR_OBS_FOLD,	     /* 400 field line starting with SP/HTAB */
	HTTP_ERR_SPACE_BEFORE_COLON, /* 400 "Name :" */
	HTTP_ERR_BAD_CONTENT_LENGTH, /* 400 not 1*DIGIT, or above INT64_MAX */
	HTTP_ERR_DUP_CONTENT_LENGTH, /* 400 a second Content-Length, even equal */
	HTTP_ERR_CL_AND_TE,	     /* 400 Content-Length with Transfer-Encoding */
	HTTP_ERR_TE_NOT_CHUNKED,     /* 400 chunked not final, repeated, or HTTP/1.0 */
	HTTP_ERR_TE_UNSUPPORTED,     /* 501 a coding other than chunked */
	HTTP_ERR_HOST_MISSING,	     /* 400 HTTP/1.1 without Host */
	HTTP_ERR_HOST_DUPLICATE,     /* 400 two Host fields */
	HTTP_ERR_BAD_HOST,	     /* 400 Host with characters no host has */
	HTTP_ERR_TARGET_TOO_LONG,    /* 414 */
	HTTP_ERR_HEAD_TOO_LARGE,     /* 431 head above max_head_bytes */
	HTTP_ERR_TOO_MANY_FIELDS,    /* 431 above max_fields or headers_cap */
	HTTP_ERR_VERSION,	     /* 505 well-formed, not HTTP/1.0 or 1.1 */
	HTTP_ERR_EXPECTATION,	     /* 417 Expect other than 100-continue */
	HTTP_ERR_BODY_TOO_LARGE,     /* 413 Content-Length or chunk data above max */
	HTTP_ERR_BAD_CHUNK,	     /* 400 chunk framing, size overflow */
	HTTP_ERR_CHUNK_EXT_TOO_LONG, /* 400 chunk extensions above max */
	HTTP_ERR_TRAILER_TOO_LARGE,  /* 431 trailer section above max_head_bytes */
	HTTP_ERR__COUNT
};

/* A view into the caller's buffer, living as long as that buffer; ptr ==
 * NULL means absent (a present empty value has ptr != NULL, len == 0). Not
 * NUL-terminated. */
struct http_str {
	const char *ptr;
	size_t len;
};

/* One field line; name and value views, value without surrounding OWS.
 * Lives in the caller's array; the views live as long as the buffer. */
struct http_header {
	struct http_str name;
	struct http_str value;
};

enum http_target_form {
	HTTP_TARGET_ORIGIN,	/* "/path?query" */
	HTTP_TARGET_ABSOLUTE,	/* "http://authority/path?query" */
	HTTP_TARGET_AUTHORITY,	/* "host:port" (CONNECT) */
	HTTP_TARGET_ASTERISK,	/* "*" (OPTIONS) */
};

/* A parsed request head. Owned by the caller (per connection); every view
 * points into the buffer given to http_parse_request and is valid only as
 * long as that buffer's bytes stay where they are. */
struct http_request {
	/* Set by the caller; kept by the parser. headers may be NULL (fields
	 * are then checked and interpreted but not stored). */
	struct http_header *headers;
	size_t headers_cap;

	/* Results, all reset by every call. */
	struct http_str method;	  /* any token; the proxy decides */
	struct http_str target;	  /* whole request-target */
	struct http_str authority; /* absolute- and authority-form only */
	struct http_str path;	  /* target up to '?' (absolute-form: from the
				   * first '/' after the authority; may be empty) */
	struct http_str query;	  /* after '?', absent without '?' */
	enum http_target_form target_form;
	int version_minor;	  /* 0 or 1 */
	size_t num_headers;
	struct http_str host;	  /* the Host value, absent if none */
	struct http_str client_id; /* first field named lim->client_id_name */
	int64_t content_length;	  /* -1 if no Content-Length */
	bool chunked;		  /* Transfer-Encoding: chunked */
	bool keep_alive;	  /* connection stays open after this exchange */
	bool expect_continue;	  /* HTTP/1.1 "Expect: 100-continue" */
	enum http_error error;	  /* why -EBADMSG, else HTTP_OK */
};

/* Parses one request head (request line and header fields through the empty
 * line) from buf[0..len). Empty lines (CRLF) before the request line are
 * skipped and counted in the result.
 *
 * last_len is 0 on the first call for a request; after -EAGAIN, call again
 * with the same buffer start, more bytes, and last_len = the previous len:
 * only the new bytes are scanned for the end of the head, and the head is
 * parsed whole once it is there (errors in a partial head may therefore
 * show only when it completes or grows past max_head_bytes).
 *
 * Returns the head length in bytes (the body, if any, starts there),
 * -EAGAIN if the head is incomplete, or -EBADMSG with req->error set: the
 * reply is http_error_status(req->error) and the connection must close.
 *
 * Choices: strict CRLF (a bare LF or CR is 400); a second Content-Length is
 * 400 even with the same value; Transfer-Encoding must end in exactly one
 * "chunked" (else 400) and have no other coding (else 501), and is 400 in
 * HTTP/1.0; Expect values other than 100-continue are 417, 100-continue
 * is ignored in HTTP/1.0; the first client-id field wins. Content-Length
 * above max_body_bytes is 413 once the head is complete. */
int http_parse_request(const char *buf, size_t len, size_t last_len, struct http_request *req,
		       const struct http_limits *lim);

/* A parsed response head (an upstream's). Owned by the caller (per upstream
 * connection or worker); every view points into the buffer given to
 * http_parse_response and is valid only as long as that buffer's bytes stay
 * where they are. */
struct http_response {
	/* Set by the caller; kept by the parser. headers may be NULL (fields
	 * are then checked and interpreted but not stored, and not counted
	 * against headers_cap). */
	struct http_header *headers;
	size_t headers_cap;

	/* Results, all reset by every call. */
	int version_minor;	  /* 0 or 1 */
	int status;		  /* 100..999 */
	struct http_str reason;	  /* may be empty, never absent once parsed */
	size_t num_headers;
	int64_t content_length;	  /* -1 if no Content-Length */
	bool chunked;		  /* the final transfer coding is chunked */
	bool te_not_chunked;	  /* Transfer-Encoding present, final coding not
				   * chunked (or none): the body ends at close
				   * (RFC 9112 6.3) */
	bool keep_alive;	  /* the upstream keeps the connection open:
				   * 1.1 without "close", 1.0 with "keep-alive" */
	bool conn_other;	  /* Connection lists an option other than close
				   * and keep-alive: fields to drop when forwarding */
	enum http_error error;	  /* why -EBADMSG, else HTTP_OK */
};

/* Parses one response head (status line and header fields through the empty
 * line) from buf[0..len), in one pass. last_len works as for
 * http_parse_request: 0 on the first call, the previous len after -EAGAIN.
 * The caller bounds the head by len (a buffer that fills up without a
 * complete head is the caller's error); heads above INT32_MAX bytes are
 * refused.
 *
 * Returns the head length in bytes (the body, if any, starts there),
 * -EAGAIN if the head is incomplete, or -EBADMSG with resp->error set
 * (http_error_str says why; a proxy answers 502 whatever the error, so
 * http_error_status means nothing here).
 *
 * Accepted: "HTTP/1.0" or "HTTP/1.1", SP, three digits >= 100, then SP and a
 * reason phrase (SP/HTAB/VCHAR/obs-text) or directly CRLF; field lines as in
 * requests (CRLF only, no obs-fold, tchar names, no CTL but HTAB in values,
 * no space before ':'); Content-Length of 1 to 18 digits, repeated only with
 * the same value (RFC 9110 8.6); more than headers_cap fields is
 * HTTP_ERR_TOO_MANY_FIELDS. Transfer-Encoding fields form one list whose last
 * non-empty element decides chunked / te_not_chunked; Content-Length next to
 * Transfer-Encoding is reported, not refused: the caller lets
 * Transfer-Encoding win and does not reuse the connection. */
int http_parse_response(const char *buf, size_t len, size_t last_len, struct http_response *resp);

/* Chunked body decoder state. Owned by the connection; lives for one body.
 * Fields are private to http.c. */
struct http_chunked {
	uint64_t max_body_bytes;
	size_t max_ext_bytes;
	size_t max_trailer_bytes;
	uint64_t body_bytes;	/* decoded data so far */
	uint64_t chunk_left;	/* data bytes left in this chunk */
	size_t count;		/* digits, extension or trailer bytes so far */
	unsigned state;
	enum http_error error;	/* why -EBADMSG, else HTTP_OK */
};

/* Starts a body: limits from lim (NULL = defaults; trailers are bounded by
 * max_head_bytes). */
void http_chunked_init(struct http_chunked *c, const struct http_limits *lim);

/* Decodes buf[0..*len) in place: chunk framing, extensions and trailers are
 * removed and the data moved to the front; on return *len is the number of
 * data bytes now at buf[0..*len). Call again with the next bytes (in any
 * split) until it returns >= 0: the body ended and the return value is the
 * number of bytes after it (the next pipelined request), moved to
 * buf[*len .. *len + ret). Returns -EAGAIN when every byte was used and the
 * body has not ended, -EBADMSG with c->error set (413 for the body limit).
 * Do not call again after a result other than -EAGAIN. */
int http_chunked_decode(struct http_chunked *c, char *buf, size_t *len);

/* The status code for an error (HTTP_OK gives 200, unknown values 400). */
int http_error_status(enum http_error e);
/* A short fixed description for logs ("duplicate Content-Length"). */
const char *http_error_str(enum http_error e);
/* The reason phrase for a status ("Too Many Requests"); "" if unknown. */
const char *http_status_reason(int status);

#endif
