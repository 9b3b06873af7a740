/* policy_wire.c - validation of wire resources and conversion between the
 * protobuf-c structs and struct policy_res / policy_delta.
 * Invariants: a policy_res is one malloc (struct, strings, arrays and its
 * canonical encoding, sized before filling) plus, for access lists, the
 * cidr tables; every problem found is reported, not just the first; the
 * canonical bytes depend only on the decoded field values.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "policy.h"
#include "policy_wire.h"

#define ARENA_ALIGN 8u

static const Sluice__V1__Client empty_client = SLUICE__V1__CLIENT__INIT;
static const Sluice__V1__RateLimit empty_rate_limit = SLUICE__V1__RATE_LIMIT__INIT;
static const Sluice__V1__Selector empty_selector = SLUICE__V1__SELECTOR__INIT;
static const Sluice__V1__AccessList empty_access_list = SLUICE__V1__ACCESS_LIST__INIT;
static const Sluice__V1__Route empty_route = SLUICE__V1__ROUTE__INIT;
static const Sluice__V1__StaticBackend empty_static = SLUICE__V1__STATIC_BACKEND__INIT;
static const Sluice__V1__Upstream empty_upstream = SLUICE__V1__UPSTREAM__INIT;
static const Sluice__V1__Settings empty_settings = SLUICE__V1__SETTINGS__INIT;

/* Hand-built messages may leave strings NULL; decoded ones never do. */
static const char *S(const char *s)
{
	return s ? s : "";
}

static size_t slen(const char *s)
{
	return s ? strlen(s) : 0;
}

/* ---- bump arena: one malloc holds the whole resource ---- */

/* Owned by policy_res_from_pb while it fills one resource; the block it
 * carves becomes the policy_res (or is freed on error). */
struct arena {
	uint8_t *base;
	size_t used;
	size_t cap;
};

static void *arena_alloc(struct arena *a, size_t size, size_t align)
{
	size_t off = (a->used + align - 1) & ~(align - 1);

	if (size == 0)
		return NULL;
	/* The block was sized from the same message by res_size(): running
	 * out is a bug in that function, never an input problem. */
	if (off > a->cap || size > a->cap - off)
		abort();
	a->used = off + size;
	return a->base + off;
}

static char *arena_strn(struct arena *a, const char *s, size_t n)
{
	char *p;

	if (n == SIZE_MAX) /* cannot be: n is the length of a string in memory */
		abort();
	p = arena_alloc(a, n + 1, 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static char *arena_str(struct arena *a, const char *s)
{
	return arena_strn(a, S(s), slen(s));
}

static size_t str_sz(const char *s)
{
	return slen(s) + 1;
}

static size_t strs_sz(char *const *v, size_t n)
{
	size_t sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += str_sz(v[i]);
	return sum;
}

static size_t arr_sz(size_t n, size_t elem)
{
	return n * elem + ARENA_ALIGN;
}

/* ---- the wire sub-message of each kind ---- */

static const Sluice__V1__Client *w_client(const Sluice__V1__Resource *m)
{
	return m->client ? m->client : &empty_client;
}

static const Sluice__V1__RateLimit *w_rate_limit(const Sluice__V1__Resource *m)
{
	return m->rate_limit ? m->rate_limit : &empty_rate_limit;
}

static const Sluice__V1__Selector *w_selector(const Sluice__V1__RateLimit *m)
{
	return m->selector ? m->selector : &empty_selector;
}

static const Sluice__V1__AccessList *w_access_list(const Sluice__V1__Resource *m)
{
	return m->access_list ? m->access_list : &empty_access_list;
}

static const Sluice__V1__Route *w_route(const Sluice__V1__Resource *m)
{
	return m->route ? m->route : &empty_route;
}

static const Sluice__V1__StaticBackend *w_static(const Sluice__V1__Route *m)
{
	return m->static_files ? m->static_files : &empty_static;
}

static const Sluice__V1__Upstream *w_upstream(const Sluice__V1__Resource *m)
{
	return m->upstream ? m->upstream : &empty_upstream;
}

static const Sluice__V1__Settings *w_settings(const Sluice__V1__Resource *m)
{
	return m->settings ? m->settings : &empty_settings;
}

static const char *wire_id(const Sluice__V1__Resource *m)
{
	switch (m->kind_case) {
	case SLUICE__V1__RESOURCE__KIND_CLIENT:
		return S(w_client(m)->id);
	case SLUICE__V1__RESOURCE__KIND_RATE_LIMIT:
		return S(w_rate_limit(m)->id);
	case SLUICE__V1__RESOURCE__KIND_ACCESS_LIST:
		return S(w_access_list(m)->id);
	case SLUICE__V1__RESOURCE__KIND_ROUTE:
		return S(w_route(m)->id);
	case SLUICE__V1__RESOURCE__KIND_UPSTREAM:
		return S(w_upstream(m)->id);
	case SLUICE__V1__RESOURCE__KIND_SETTINGS:
		return S(w_settings(m)->id);
	default:
		return "";
	}
}

/* ---- canonical form ---- */

/* A shallow copy of one wire resource holding only the known fields; its
 * strings point into the caller's message. Lives on the stack of
 * policy_res_from_pb, only to be packed. */
struct canon_msg {
	Sluice__V1__Resource res;
	Sluice__V1__Selector sel;
	Sluice__V1__StaticBackend sb;
	union {
		Sluice__V1__Client client;
		Sluice__V1__RateLimit rate_limit;
		Sluice__V1__AccessList access_list;
		Sluice__V1__Route route;
		Sluice__V1__Upstream upstream;
		Sluice__V1__Settings settings;
	} k;
};

#define CS(x) ((char *)S(x)) /* protobuf-c wants char *; packing only reads */

static bool selector_empty(const Sluice__V1__Selector *s)
{
	return !*S(s->client) && !*S(s->source_cidr) && !*S(s->host) && !*S(s->path_prefix) &&
	       !*S(s->method);
}

static void canon_build(const Sluice__V1__Resource *m, struct canon_msg *c)
{
	sluice__v1__resource__init(&c->res);
	c->res.kind_case = m->kind_case;
	switch (m->kind_case) {
	case SLUICE__V1__RESOURCE__KIND_CLIENT: {
		const Sluice__V1__Client *w = w_client(m);
		Sluice__V1__Client *o = &c->k.client;

		sluice__v1__client__init(o);
		o->id = CS(w->id);
		o->n_keys = w->n_keys;
		o->keys = w->keys;
		o->rate_limit = CS(w->rate_limit);
		o->priority = w->priority;
		o->disabled = w->disabled;
		c->res.client = o;
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_RATE_LIMIT: {
		const Sluice__V1__RateLimit *w = w_rate_limit(m);
		const Sluice__V1__Selector *ws = w_selector(w);
		Sluice__V1__RateLimit *o = &c->k.rate_limit;

		sluice__v1__rate_limit__init(o);
		o->id = CS(w->id);
		/* An empty selector and an absent one mean the same. */
		if (!selector_empty(ws)) {
			sluice__v1__selector__init(&c->sel);
			c->sel.client = CS(ws->client);
			c->sel.source_cidr = CS(ws->source_cidr);
			c->sel.host = CS(ws->host);
			c->sel.path_prefix = CS(ws->path_prefix);
			c->sel.method = CS(ws->method);
			o->selector = &c->sel;
		}
		o->algorithm = w->algorithm;
		o->rate = w->rate;
		o->unit = w->unit;
		o->burst = w->burst;
		o->action = w->action;
		o->enforce = w->enforce;
		c->res.rate_limit = o;
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_ACCESS_LIST: {
		const Sluice__V1__AccessList *w = w_access_list(m);
		Sluice__V1__AccessList *o = &c->k.access_list;

		sluice__v1__access_list__init(o);
		o->id = CS(w->id);
		o->n_allow = w->n_allow;
		o->allow = w->allow;
		o->n_deny = w->n_deny;
		o->deny = w->deny;
		c->res.access_list = o;
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_ROUTE: {
		const Sluice__V1__Route *w = w_route(m);
		Sluice__V1__Route *o = &c->k.route;

		sluice__v1__route__init(o);
		o->id = CS(w->id);
		o->host = CS(w->host);
		o->path_prefix = CS(w->path_prefix);
		o->backend_case = w->backend_case;
		if (w->backend_case == SLUICE__V1__ROUTE__BACKEND_UPSTREAM) {
			o->upstream = CS(w->upstream);
		} else if (w->backend_case == SLUICE__V1__ROUTE__BACKEND_STATIC_FILES) {
			const Sluice__V1__StaticBackend *ws = w_static(w);

			sluice__v1__static_backend__init(&c->sb);
			c->sb.root = CS(ws->root);
			c->sb.index = CS(ws->index);
			c->sb.in_memory = ws->in_memory;
			o->static_files = &c->sb;
		}
		o->rewrite_prefix = CS(w->rewrite_prefix);
		o->n_methods = w->n_methods;
		o->methods = w->methods;
		o->max_body_bytes = w->max_body_bytes;
		o->request_timeout_ms = w->request_timeout_ms;
		o->n_rate_limits = w->n_rate_limits;
		o->rate_limits = w->rate_limits;
		o->n_access_lists = w->n_access_lists;
		o->access_lists = w->access_lists;
		c->res.route = o;
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_UPSTREAM: {
		const Sluice__V1__Upstream *w = w_upstream(m);
		Sluice__V1__Upstream *o = &c->k.upstream;

		sluice__v1__upstream__init(o);
		o->id = CS(w->id);
		o->n_endpoints = w->n_endpoints;
		o->endpoints = w->endpoints;
		o->connect_timeout_ms = w->connect_timeout_ms;
		o->read_timeout_ms = w->read_timeout_ms;
		o->keepalive_pool_size = w->keepalive_pool_size;
		c->res.upstream = o;
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_SETTINGS: {
		const Sluice__V1__Settings *w = w_settings(m);
		Sluice__V1__Settings *o = &c->k.settings;

		sluice__v1__settings__init(o);
		o->id = CS(w->id);
		o->client_id_header = CS(w->client_id_header);
		o->default_rate_limit = CS(w->default_rate_limit);
		o->disabled = w->disabled;
		o->n_access_lists = w->n_access_lists;
		o->access_lists = w->access_lists;
		o->max_body_bytes = w->max_body_bytes;
		o->request_timeout_ms = w->request_timeout_ms;
		o->escalation_rejects = w->escalation_rejects;
		o->escalation_window_ms = w->escalation_window_ms;
		o->escalation_ttl_s = w->escalation_ttl_s;
		c->res.settings = o;
		break;
	}
	default:
		break;
	}
}

/* Upper bound of the bytes policy_res_from_pb carves for this message;
 * mirrors the build_* functions below (each array alloc may pad). */
static size_t res_size(const Sluice__V1__Resource *m, size_t canon_len)
{
	size_t sz = sizeof(struct policy_res) + ARENA_ALIGN + str_sz(wire_id(m)) + canon_len;

	switch (m->kind_case) {
	case SLUICE__V1__RESOURCE__KIND_CLIENT: {
		const Sluice__V1__Client *w = w_client(m);
		size_t n = w->n_keys ? w->n_keys : 1;

		sz += arr_sz(n, sizeof(char *)) + arr_sz(n, sizeof(uint64_t)) +
		      strs_sz(w->keys, w->n_keys) + str_sz(w->rate_limit);
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_RATE_LIMIT: {
		const Sluice__V1__Selector *s = w_selector(w_rate_limit(m));

		sz += str_sz(s->client) + str_sz(s->host) + str_sz(s->path_prefix) +
		      str_sz(s->method);
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_ACCESS_LIST: {
		const Sluice__V1__AccessList *w = w_access_list(m);

		sz += arr_sz(w->n_allow, sizeof(struct cidr)) + arr_sz(w->n_deny, sizeof(struct cidr));
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_ROUTE: {
		const Sluice__V1__Route *w = w_route(m);

		sz += str_sz(w->host) + 2 * str_sz(w->path_prefix) + str_sz(w->rewrite_prefix);
		if (w->backend_case == SLUICE__V1__ROUTE__BACKEND_UPSTREAM) {
			sz += str_sz(w->upstream);
		} else if (w->backend_case == SLUICE__V1__ROUTE__BACKEND_STATIC_FILES) {
			const Sluice__V1__StaticBackend *sb = w_static(w);

			sz += str_sz(sb->root) + str_sz(sb->index) + sizeof(POLICY_DEFAULT_INDEX);
		}
		sz += arr_sz(w->n_methods, sizeof(char *)) + strs_sz(w->methods, w->n_methods);
		sz += arr_sz(w->n_rate_limits, sizeof(struct policy_ref)) +
		      strs_sz(w->rate_limits, w->n_rate_limits);
		sz += arr_sz(w->n_access_lists, sizeof(struct policy_ref)) +
		      strs_sz(w->access_lists, w->n_access_lists);
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_UPSTREAM: {
		const Sluice__V1__Upstream *w = w_upstream(m);

		sz += arr_sz(w->n_endpoints, sizeof(char *)) +
		      arr_sz(w->n_endpoints, sizeof(struct policy_endpoint)) +
		      2 * strs_sz(w->endpoints, w->n_endpoints);
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_SETTINGS: {
		const Sluice__V1__Settings *w = w_settings(m);

		sz += str_sz(w->client_id_header) + sizeof(POLICY_DEFAULT_CLIENT_ID_HEADER) +
		      str_sz(w->default_rate_limit) +
		      arr_sz(w->n_access_lists, sizeof(struct policy_ref)) +
		      strs_sz(w->access_lists, w->n_access_lists);
		break;
	}
	default:
		break;
	}
	return sz;
}

/* ---- syntax checks: each returns NULL or a static reason ---- */

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_lower(unsigned char c)
{
	return c >= 'a' && c <= 'z';
}

static bool is_upper(unsigned char c)
{
	return c >= 'A' && c <= 'Z';
}

static bool is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool has_upper(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (is_upper((unsigned char)s[i]))
			return true;
	return false;
}

static bool is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* Host as routes, selectors and endpoints use it: a lower-case DNS name, an
 * IPv4 literal or a bracketed IPv6 literal; never a port. `s` non-empty. */
static const char *host_problem(const char *s, size_t len)
{
	char tmp[INET6_ADDRSTRLEN + 1];
	struct in6_addr a6;
	struct in_addr a4;
	size_t label = 0;

	if (len > POLICY_MAX_HOST_LEN)
		return "must be at most 253 bytes";
	if (has_upper(s, len))
		return "must be lower case";
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);
		size_t n;

		if (!close)
			return "invalid IPv6 literal";
		if (close != s + len - 1)
			return close[1] == ':' ? "must not contain a port" : "invalid IPv6 literal";
		n = (size_t)(close - s) - 1;
		if (n == 0 || n >= sizeof(tmp))
			return "invalid IPv6 literal";
		memcpy(tmp, s + 1, n);
		tmp[n] = '\0';
		if (inet_pton(AF_INET6, tmp, &a6) != 1)
			return "invalid IPv6 literal";
		return NULL;
	}
	if (memchr(s, ':', len)) {
		if (len < sizeof(tmp)) {
			memcpy(tmp, s, len);
			tmp[len] = '\0';
			if (inet_pton(AF_INET6, tmp, &a6) == 1)
				return "IPv6 literal must be in brackets";
		}
		return "must not contain a port";
	}
	if (s[len - 1] == '.')
		return "must not end with '.'";
	for (size_t i = 0; i <= len; i++) {
		unsigned char c = i < len ? (unsigned char)s[i] : '.';

		if (c == '.') {
			size_t l = i - label;

			if (l == 0)
				return "must not contain an empty label";
			if (l > 63)
				return "labels must be at most 63 bytes";
			if (s[label] == '-' || s[i - 1] == '-')
				return "labels must not start or end with '-'";
			label = i + 1;
			continue;
		}
		if (!is_lower(c) && !is_digit(c) && c != '-')
			return "must contain only [a-z0-9.-]";
	}
	/* A name whose last label is numeric is an IPv4 literal or nothing:
	 * "10.1.2" or "1.2.3.04" must not pass as names. */
	const char *last = memrchr(s, '.', len);
	last = last ? last + 1 : s;
	bool numeric = true;
	for (const char *p = last; p < s + len; p++)
		if (!is_digit((unsigned char)*p))
			numeric = false;
	if (numeric) {
		if (len >= sizeof(tmp))
			return "invalid IPv4 address";
		memcpy(tmp, s, len);
		tmp[len] = '\0';
		if (inet_pton(AF_INET, tmp, &a4) != 1)
			return "invalid IPv4 address";
	}
	return NULL;
}

/* RFC 3986 pchar, less pct-encoded (handled by the caller). */
static bool is_pchar(unsigned char c)
{
	if (is_lower(c) || is_upper(c) || is_digit(c))
		return true;
	return strchr("-._~!$&'()*+,;=:@", c) != NULL && c != '\0';
}

/* "." or ".." after decoding %2e, which a request path could use to the
 * same effect. */
static bool is_dot_segment(const char *seg, size_t n)
{
	unsigned dots = 0;

	for (size_t i = 0; i < n;) {
		if (seg[i] == '.') {
			i++;
		} else if (seg[i] == '%' && i + 2 < n && seg[i + 1] == '2' &&
			   (seg[i + 2] == 'e' || seg[i + 2] == 'E')) {
			i += 3;
		} else {
			return false;
		}
		dots++;
	}
	return dots == 1 || dots == 2;
}

/* URL path prefixes (route path_prefix, rewrite_prefix, selector
 * path_prefix). `s` non-empty. */
static const char *path_problem(const char *s)
{
	size_t len = strlen(s);
	const char *seg;

	if (s[0] != '/')
		return "must start with '/'";
	if (len > POLICY_MAX_PATH_LEN)
		return "must be at most 1024 bytes";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '?')
			return "must not contain '?'";
		if (c == '#')
			return "must not contain '#'";
		if (c == '%') {
			if (!is_hex((unsigned char)s[i + 1]) || !is_hex((unsigned char)s[i + 2]))
				return "malformed percent-encoding";
			i += 2;
			continue;
		}
		if (c != '/' && !is_pchar(c))
			return "must contain only URI path characters (RFC 3986)";
	}
	seg = s + 1;
	while (seg < s + len) {
		const char *end = strchr(seg, '/');
		size_t n = end ? (size_t)(end - seg) : strlen(seg);

		if (n == 0)
			return "must not contain empty segments ('//')";
		if (is_dot_segment(seg, n))
			return "must not contain '.' or '..' segments";
		if (!end)
			break;
		seg = end + 1;
	}
	return NULL;
}

/* The form paths are matched in: no trailing '/' unless the whole is "/". */
static size_t match_len(const char *path)
{
	size_t n = strlen(path);

	if (n > 1 && path[n - 1] == '/')
		n--;
	return n;
}

static unsigned path_depth(const char *p, size_t n)
{
	unsigned depth = 0;

	if (n <= 1)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (p[i] == '/')
			depth++;
	return depth;
}

static const char *method_problem(const char *s)
{
	size_t len = strlen(s);
	bool lower = false, other = false;

	if (len == 0)
		return "must not be empty";
	if (len > 16)
		return "must be at most 16 characters";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_lower(c))
			lower = true;
		else if (!is_upper(c) && c != '-' && c != '_')
			other = true;
	}
	if (lower)
		return "must be upper case";
	if (other)
		return "must contain only [A-Z_-]";
	return NULL;
}

static const char *key_problem(const char *s)
{
	size_t len = strlen(s);

	if (len == 0)
		return "must not be empty";
	if (len > POLICY_MAX_KEY_LEN)
		return "must be at most 256 bytes";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x21 || c > 0x7e)
			return "must contain only visible ASCII, no spaces";
	}
	return NULL;
}

/* RFC 9110 token: the header name the client id arrives in. */
static const char *token_problem(const char *s)
{
	size_t len = strlen(s);

	if (len > POLICY_MAX_HEADER_NAME_LEN)
		return "must be at most 64 bytes";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!is_lower(c) && !is_upper(c) && !is_digit(c) && !strchr("!#$%&'*+-.^_`|~", c))
			return "must be an HTTP token (RFC 9110 tchar)";
	}
	return NULL;
}

/* A file-system path on the node. `s` non-empty. */
static const char *root_problem(const char *s)
{
	size_t len = strlen(s);
	const char *seg;

	if (s[0] != '/')
		return "must be an absolute path";
	if (len > POLICY_MAX_PATH_LEN)
		return "must be at most 1024 bytes";
	for (size_t i = 0; i < len; i++)
		if (is_ctl((unsigned char)s[i]))
			return "must not contain control characters";
	for (seg = s + 1; seg <= s + len;) {
		const char *end = strchr(seg, '/');
		size_t n = end ? (size_t)(end - seg) : strlen(seg);

		if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return "must not contain '.' or '..' segments";
		if (!end)
			break;
		seg = end + 1;
	}
	return NULL;
}

static const char *index_problem(const char *s)
{
	size_t len = strlen(s);

	if (len > 255)
		return "must be at most 255 bytes";
	if (strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return "must be a file name (no '/', not '.' or '..')";
	for (size_t i = 0; i < len; i++)
		if (is_ctl((unsigned char)s[i]))
			return "must not contain control characters";
	return NULL;
}

/* "host:port" / "[v6]:port". On success the host (without brackets) is
 * *host, *host_len bytes long. *why_host tells whether the reason is about the host part. */
static const char *endpoint_problem(const char *s, const char **host, size_t *host_len,
				    uint16_t *port, bool *why_host)
{
	const char *h, *p, *why;
	size_t hl;
	unsigned long v = 0;

	*why_host = false;
	if (!*s)
		return "must not be empty";
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return "invalid IPv6 literal";
		if (close[1] != ':')
			return "must be host:port";
		h = s;
		hl = (size_t)(close - s) + 1;
		p = close + 2;
	} else {
		const char *colon = strrchr(s, ':');

		if (!colon)
			return "must be host:port";
		if (memchr(s, ':', (size_t)(colon - s)))
			return "IPv6 literal must be in brackets";
		h = s;
		hl = (size_t)(colon - s);
		p = colon + 1;
	}
	if (hl == 0)
		return "must be host:port";
	why = host_problem(h, hl);
	if (why) {
		*why_host = true;
		return why;
	}
	if (!*p || strlen(p) > 5 || p[0] == '0')
		return "port must be 1..65535";
	for (const char *q = p; *q; q++) {
		if (!is_digit((unsigned char)*q))
			return "port must be 1..65535";
		v = v * 10 + (unsigned long)(*q - '0');
	}
	if (v < 1 || v > 65535)
		return "port must be 1..65535";
	if (h[0] == '[') {
		h++;
		hl -= 2;
	}
	*host = h;
	*host_len = hl;
	*port = (uint16_t)v;
	return NULL;
}

/* ---- validation context ---- */

/* Owned by policy_res_from_pb for one resource: where its errors go, the
 * "<kind>/<id>" they start with, and the arena being filled. */
struct vctx {
	struct policy_errs *errs;
	unsigned n_errs;
	char who[160];
	struct arena a;
};

static void bad(struct vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bad(struct vctx *v, const char *fmt, ...)
{
	char what[POLICY_ERR_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	policy_errs_add(v->errs, "%s.%s", v->who, what);
	v->n_errs++;
}

/* The id as given, made safe for a log line even when invalid. */
static void set_who(struct vctx *v, enum policy_kind kind, const char *id)
{
	size_t n = strlen(id), lim = 64, o;

	o = (size_t)snprintf(v->who, sizeof(v->who), "%s/", policy_kind_name(kind));
	if (policy_id_valid(id))
		lim = POLICY_ID_MAX_LEN;
	for (size_t i = 0; i < n && i < lim; i++) {
		unsigned char c = (unsigned char)id[i];

		v->who[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	v->who[o] = '\0';
	if (n > lim)
		memcpy(v->who + o, "...", 4);
}

/* j < i with v[j] equal to v[i], or SIZE_MAX. For short lists only. */
static size_t find_dup(char *const *list, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (strcmp(S(list[j]), S(list[i])) == 0)
			return j;
	return SIZE_MAX;
}

/* An optional reference: "" leaves *out unset. */
static void take_ref(struct vctx *v, const char *field, const char *id, enum policy_kind kind,
		     struct policy_ref *out)
{
	const char *why;

	out->id = NULL;
	out->id_len = 0;
	out->key_hash = 0;
	if (!*S(id))
		return;
	why = policy_id_problem(id);
	if (why) {
		bad(v, "%s: %s", field, why);
		return;
	}
	out->id = arena_str(&v->a, id);
	out->id_len = strlen(id);
	out->key_hash = policy_key_hash(kind, id, out->id_len);
}

static const struct policy_ref *take_ref_list(struct vctx *v, const char *field,
					      char *const *ids, size_t n, enum policy_kind kind,
					      size_t *n_out)
{
	struct policy_ref *refs = arena_alloc(&v->a, n * sizeof(*refs), ARENA_ALIGN);

	if (n > POLICY_MAX_REFS)
		bad(v, "%s: at most %u entries", field, POLICY_MAX_REFS);
	for (size_t i = 0; i < n; i++) {
		const char *id = S(ids[i]);
		const char *why = policy_id_problem(id);
		size_t j;

		refs[i].id = arena_str(&v->a, id);
		refs[i].id_len = strlen(id);
		refs[i].key_hash = policy_key_hash(kind, id, refs[i].id_len);
		if (why)
			bad(v, "%s[%zu]: %s", field, i, why);
		else if (n <= POLICY_MAX_REFS && (j = find_dup(ids, i)) != SIZE_MAX)
			bad(v, "%s[%zu]: duplicate of %s[%zu]", field, i, field, j);
	}
	*n_out = n;
	return refs;
}

static const char **take_methods(struct vctx *v, const char *field, char *const *ms, size_t n,
				 size_t *n_out)
{
	const char **out = arena_alloc(&v->a, n * sizeof(*out), ARENA_ALIGN);

	if (n > POLICY_MAX_REFS)
		bad(v, "%s: at most %u entries", field, POLICY_MAX_REFS);
	for (size_t i = 0; i < n; i++) {
		const char *why = method_problem(S(ms[i]));
		size_t j;

		out[i] = arena_str(&v->a, ms[i]);
		if (why)
			bad(v, "%s[%zu]: %s", field, i, why);
		else if (n <= POLICY_MAX_REFS && (j = find_dup(ms, i)) != SIZE_MAX)
			bad(v, "%s[%zu]: duplicate of %s[%zu]", field, i, field, j);
	}
	*n_out = n;
	return out;
}

/* ---- per kind ---- */

static void build_client(struct vctx *v, const Sluice__V1__Client *w, struct policy_res *r)
{
	struct policy_client *c = &r->u.client;
	size_t n = w->n_keys ? w->n_keys : 1;
	const char **keys = arena_alloc(&v->a, n * sizeof(*keys), ARENA_ALIGN);
	uint64_t *hashes = arena_alloc(&v->a, n * sizeof(*hashes), ARENA_ALIGN);

	if (w->n_keys > POLICY_MAX_CLIENT_KEYS)
		bad(v, "keys: at most %u entries", POLICY_MAX_CLIENT_KEYS);
	if (w->n_keys == 0) {
		/* A client without keys is recognised by its id. */
		keys[0] = r->id;
		hashes[0] = policy_client_key_hash(r->id, r->id_len);
	}
	for (size_t i = 0; i < w->n_keys; i++) {
		const char *k = S(w->keys[i]);
		const char *why = key_problem(k);
		size_t j;

		keys[i] = arena_str(&v->a, k);
		hashes[i] = policy_client_key_hash(k, strlen(k));
		if (why)
			bad(v, "keys[%zu]: %s", i, why);
		else if (w->n_keys <= POLICY_MAX_CLIENT_KEYS &&
			 (j = find_dup(w->keys, i)) != SIZE_MAX)
			bad(v, "keys[%zu]: duplicate of keys[%zu]", i, j);
	}
	c->keys = keys;
	c->key_hashes = hashes;
	c->n_keys = n;
	take_ref(v, "rate_limit", w->rate_limit, POLICY_KIND_RATE_LIMIT, &c->rate_limit);
	if (w->priority > 255)
		bad(v, "priority: must be at most 255");
	c->priority = (uint8_t)w->priority;
	c->disabled = w->disabled;
}

static void build_selector(struct vctx *v, const Sluice__V1__Selector *w, struct policy_selector *s)
{
	const char *why;

	take_ref(v, "selector.client", w->client, POLICY_KIND_CLIENT, &s->client);
	if (*S(w->source_cidr)) {
		why = NULL;
		if (cidr_parse(w->source_cidr, &s->source, &why) < 0)
			bad(v, "selector.source_cidr: %s", why ? why : "invalid CIDR");
		else
			s->has_source = true;
	}
	if (*S(w->host)) {
		why = host_problem(w->host, strlen(w->host));
		if (why)
			bad(v, "selector.host: %s", why);
		s->host = arena_str(&v->a, w->host);
	}
	if (*S(w->path_prefix)) {
		why = path_problem(w->path_prefix);
		if (why)
			bad(v, "selector.path_prefix: %s", why);
		s->path_prefix = arena_strn(&v->a, w->path_prefix, match_len(w->path_prefix));
	}
	if (*S(w->method)) {
		why = method_problem(w->method);
		if (why)
			bad(v, "selector.method: %s", why);
		s->method = arena_str(&v->a, w->method);
	}
}

static void build_rate_limit(struct vctx *v, const Sluice__V1__RateLimit *w, struct policy_res *r)
{
	struct policy_rate_limit *rl = &r->u.rate_limit;
	const Sluice__V1__Selector *ws = w_selector(w);
	bool alg_ok = false, enforce_ok = false;
	int alg = (int)w->algorithm, unit = (int)w->unit;
	int action = (int)w->action, enforce = (int)w->enforce;

	build_selector(v, ws, &rl->sel);

	if (alg == 0)
		bad(v, "algorithm: required");
	else if (alg < POLICY_ALG_TOKEN_BUCKET || alg > POLICY_ALG_SLIDING_WINDOW)
		bad(v, "algorithm: unknown value %d", alg);
	else
		alg_ok = true;
	rl->algorithm = (enum policy_algorithm)alg;

	if (w->rate == 0)
		bad(v, "rate: must be at least 1");
	else if (w->rate > POLICY_MAX_RATE)
		bad(v, "rate: must be at most %llu", POLICY_MAX_RATE);
	else if (alg == POLICY_ALG_SLIDING_WINDOW && w->rate > POLICY_MAX_SLIDING_RATE)
		bad(v, "rate: must be at most %llu for SLIDING_WINDOW", POLICY_MAX_SLIDING_RATE);
	rl->rate = w->rate;

	switch (unit) {
	case POLICY_UNIT_SECOND:
		rl->unit_ns = 1000000000ull;
		break;
	case POLICY_UNIT_MINUTE:
		rl->unit_ns = 60ull * 1000000000ull;
		break;
	case POLICY_UNIT_HOUR:
		rl->unit_ns = 3600ull * 1000000000ull;
		break;
	case 0:
		bad(v, "unit: required");
		break;
	default:
		bad(v, "unit: unknown value %d", unit);
		break;
	}
	rl->unit = (enum policy_unit)unit;

	if (w->burst > POLICY_MAX_RATE)
		bad(v, "burst: must be at most %llu", POLICY_MAX_RATE);
	rl->burst = w->burst ? w->burst : w->rate;

	if (action == 0)
		action = POLICY_ACTION_REJECT;
	else if (action != POLICY_ACTION_REJECT && action != POLICY_ACTION_SHADOW)
		bad(v, "action: unknown value %d", action);
	rl->action = (enum policy_action)action;

	if (enforce == 0)
		enforce = POLICY_ENFORCE_PROXY;
	if (enforce < POLICY_ENFORCE_PROXY || enforce > POLICY_ENFORCE_BOTH)
		bad(v, "enforce: unknown value %d", enforce);
	else
		enforce_ok = true;
	rl->enforce = (enum policy_enforce)enforce;

	/* The TC program sees the client-id header and nothing else of the
	 * request, and keeps only bucket state. */
	if (alg_ok && enforce_ok && enforce != POLICY_ENFORCE_PROXY &&
	    (alg == POLICY_ALG_SLIDING_WINDOW || *S(ws->source_cidr) || *S(ws->host) ||
	     *S(ws->path_prefix) || *S(ws->method)))
		bad(v, "enforce: KERNEL enforcement supports only token and leaky buckets selected by client");
}

/* A parsed entry and its list index; lives in take_cidrs' scratch array. */
struct cidr_sort {
	struct cidr c;
	uint32_t idx;
};

static int cidr_cmp(const struct cidr *a, const struct cidr *b)
{
	size_t n = a->family == AF_INET ? 4 : 16;

	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	if (a->prefix_len != b->prefix_len)
		return a->prefix_len < b->prefix_len ? -1 : 1;
	return memcmp(a->addr, b->addr, n);
}

static int cidr_sort_cmp(const void *pa, const void *pb)
{
	const struct cidr_sort *a = pa, *b = pb;
	int c = cidr_cmp(&a->c, &b->c);

	if (c)
		return c;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Parses one direction of an access list into *out; reports bad entries
 * and duplicates (sorting, as a list may hold 65536 entries). */
static int take_cidrs(struct vctx *v, const char *field, char *const *in, size_t n,
		      const struct cidr **out, bool *ok)
{
	struct cidr *arr = arena_alloc(&v->a, n * sizeof(*arr), ARENA_ALIGN);
	struct cidr_sort *srt = NULL;
	uint32_t *dup_of = NULL;
	bool *parsed = NULL;
	size_t n_ok = 0;
	int rc = 0;

	*out = arr;
	*ok = true;
	if (n > POLICY_MAX_CIDRS) {
		bad(v, "%s: at most %u entries", field, POLICY_MAX_CIDRS);
		*ok = false;
	}
	if (n == 0)
		return 0;
	parsed = calloc(n, sizeof(*parsed));
	srt = malloc(n * sizeof(*srt));
	dup_of = malloc(n * sizeof(*dup_of));
	if (!parsed || !srt || !dup_of) {
		rc = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < n; i++) {
		const char *s = S(in[i]), *why = NULL;

		memset(&arr[i], 0, sizeof(arr[i]));
		dup_of[i] = UINT32_MAX;
		if (!*s) {
			bad(v, "%s[%zu]: must not be empty", field, i);
			*ok = false;
		} else if (cidr_parse(s, &arr[i], &why) < 0) {
			bad(v, "%s[%zu]: %s", field, i, why ? why : "invalid CIDR");
			*ok = false;
		} else {
			parsed[i] = true;
			srt[n_ok].c = arr[i];
			srt[n_ok].idx = (uint32_t)i;
			n_ok++;
		}
	}
	qsort(srt, n_ok, sizeof(*srt), cidr_sort_cmp);
	for (size_t i = 1, first = 0; i < n_ok; i++) {
		if (cidr_cmp(&srt[i].c, &srt[first].c) == 0)
			dup_of[srt[i].idx] = srt[first].idx;
		else
			first = i;
	}
	for (size_t i = 0; i < n; i++) {
		if (parsed[i] && dup_of[i] != UINT32_MAX) {
			bad(v, "%s[%zu]: duplicate of %s[%u]", field, i, field, dup_of[i]);
			*ok = false;
		}
	}
out_free:
	free(dup_of);
	free(srt);
	free(parsed);
	return rc;
}

static int build_table(const struct cidr *c, size_t n, const struct cidr_table **ret)
{
	struct cidr_table *t = NULL;
	uint32_t *values;
	int rc;

	*ret = NULL;
	if (n == 0)
		return 0;
	values = malloc(n * sizeof(*values));
	if (!values)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		values[i] = (uint32_t)i; /* the entry's index in the list */
	rc = cidr_table_new(c, values, n, &t);
	free(values);
	if (rc)
		return rc;
	*ret = t;
	return 0;
}

static int build_access_list(struct vctx *v, const Sluice__V1__AccessList *w, struct policy_res *r)
{
	struct policy_access_list *al = &r->u.access_list;
	bool allow_ok, deny_ok;
	int rc;

	rc = take_cidrs(v, "allow", w->allow, w->n_allow, &al->allow, &allow_ok);
	if (rc)
		return rc;
	al->n_allow = w->n_allow;
	rc = take_cidrs(v, "deny", w->deny, w->n_deny, &al->deny, &deny_ok);
	if (rc)
		return rc;
	al->n_deny = w->n_deny;
	if (v->n_errs)
		return 0; /* the resource is discarded anyway */
	rc = build_table(al->allow, al->n_allow, &al->allow_table);
	if (rc)
		return rc;
	return build_table(al->deny, al->n_deny, &al->deny_table);
}

static void build_route(struct vctx *v, const Sluice__V1__Route *w, struct policy_res *r)
{
	struct policy_route *rt = &r->u.route;
	const char *host = S(w->host), *path = S(w->path_prefix), *rw = S(w->rewrite_prefix);
	const char *why;

	if (*host && (why = host_problem(host, strlen(host))))
		bad(v, "host: %s", why);
	rt->host = arena_str(&v->a, host);

	if (!*path)
		bad(v, "path_prefix: required");
	else if ((why = path_problem(path)))
		bad(v, "path_prefix: %s", why);
	rt->path_prefix = arena_str(&v->a, path);
	rt->match_prefix_len = match_len(path);
	rt->match_prefix = arena_strn(&v->a, path, rt->match_prefix_len);
	rt->match_depth = path_depth(rt->match_prefix, rt->match_prefix_len);

	switch (w->backend_case) {
	case SLUICE__V1__ROUTE__BACKEND_UPSTREAM: {
		const char *up = S(w->upstream);

		rt->backend = POLICY_BACKEND_UPSTREAM;
		if (!*up)
			bad(v, "upstream: must not be empty");
		else
			take_ref(v, "upstream", up, POLICY_KIND_UPSTREAM, &rt->upstream);
		break;
	}
	case SLUICE__V1__ROUTE__BACKEND_STATIC_FILES: {
		const Sluice__V1__StaticBackend *sb = w_static(w);
		const char *root = S(sb->root), *index = S(sb->index);

		rt->backend = POLICY_BACKEND_STATIC;
		if (!*root)
			bad(v, "static_files.root: required");
		else if ((why = root_problem(root)))
			bad(v, "static_files.root: %s", why);
		rt->static_root = arena_str(&v->a, root);
		if (!*index)
			index = POLICY_DEFAULT_INDEX;
		else if ((why = index_problem(index)))
			bad(v, "static_files.index: %s", why);
		rt->static_index = arena_str(&v->a, index);
		rt->static_in_memory = sb->in_memory;
		break;
	}
	default:
		bad(v, "backend: one of upstream or static_files is required");
		break;
	}

	if (*rw) {
		if (rt->backend == POLICY_BACKEND_STATIC)
			bad(v, "rewrite_prefix: only allowed with an upstream backend");
		else if ((why = path_problem(rw)))
			bad(v, "rewrite_prefix: %s", why);
		rt->rewrite_prefix = arena_str(&v->a, rw);
	}

	rt->methods = take_methods(v, "methods", w->methods, w->n_methods, &rt->n_methods);
	if (w->max_body_bytes > POLICY_MAX_BODY_BYTES)
		bad(v, "max_body_bytes: must be at most %llu", POLICY_MAX_BODY_BYTES);
	rt->max_body_bytes = w->max_body_bytes;
	if (w->request_timeout_ms > POLICY_MAX_TIMEOUT_MS)
		bad(v, "request_timeout_ms: must be at most %u", POLICY_MAX_TIMEOUT_MS);
	rt->request_timeout_ms = w->request_timeout_ms;
	rt->rate_limits = take_ref_list(v, "rate_limits", w->rate_limits, w->n_rate_limits,
					POLICY_KIND_RATE_LIMIT, &rt->n_rate_limits);
	rt->access_lists = take_ref_list(v, "access_lists", w->access_lists, w->n_access_lists,
					 POLICY_KIND_ACCESS_LIST, &rt->n_access_lists);
}

static void build_upstream(struct vctx *v, const Sluice__V1__Upstream *w, struct policy_res *r)
{
	struct policy_upstream *up = &r->u.upstream;
	size_t n = w->n_endpoints;
	const char **eps = arena_alloc(&v->a, n * sizeof(*eps), ARENA_ALIGN);
	struct policy_endpoint *parsed = arena_alloc(&v->a, n * sizeof(*parsed), ARENA_ALIGN);

	if (n == 0)
		bad(v, "endpoints: at least one endpoint is required");
	else if (n > POLICY_MAX_ENDPOINTS)
		bad(v, "endpoints: at most %u entries", POLICY_MAX_ENDPOINTS);
	for (size_t i = 0; i < n; i++) {
		const char *s = S(w->endpoints[i]), *host = "", *why;
		size_t host_len = 0, j;
		uint16_t port = 0;
		bool why_host;

		eps[i] = arena_str(&v->a, s);
		why = endpoint_problem(s, &host, &host_len, &port, &why_host);
		parsed[i].host = arena_strn(&v->a, host, host_len);
		parsed[i].port = port;
		if (why)
			bad(v, "endpoints[%zu]: %s%s", i, why_host ? "host " : "", why);
		else if (n <= POLICY_MAX_ENDPOINTS && (j = find_dup(w->endpoints, i)) != SIZE_MAX)
			bad(v, "endpoints[%zu]: duplicate of endpoints[%zu]", i, j);
	}
	up->endpoints = eps;
	up->parsed = parsed;
	up->n_endpoints = n;

	if (w->connect_timeout_ms > POLICY_MAX_TIMEOUT_MS)
		bad(v, "connect_timeout_ms: must be at most %u", POLICY_MAX_TIMEOUT_MS);
	up->connect_timeout_ms = w->connect_timeout_ms ? w->connect_timeout_ms
						       : POLICY_DEFAULT_CONNECT_TIMEOUT_MS;
	if (w->read_timeout_ms > POLICY_MAX_TIMEOUT_MS)
		bad(v, "read_timeout_ms: must be at most %u", POLICY_MAX_TIMEOUT_MS);
	up->read_timeout_ms = w->read_timeout_ms ? w->read_timeout_ms : POLICY_DEFAULT_READ_TIMEOUT_MS;
	if (w->keepalive_pool_size > POLICY_MAX_POOL_SIZE)
		bad(v, "keepalive_pool_size: must be at most %u", POLICY_MAX_POOL_SIZE);
	up->keepalive_pool_size = w->keepalive_pool_size ? w->keepalive_pool_size
							 : POLICY_DEFAULT_POOL_SIZE;
}

static void build_settings(struct vctx *v, const Sluice__V1__Settings *w, struct policy_res *r)
{
	struct policy_settings *st = &r->u.settings;
	const char *hdr = S(w->client_id_header), *why;

	if (!*hdr)
		hdr = POLICY_DEFAULT_CLIENT_ID_HEADER;
	else if ((why = token_problem(hdr)))
		bad(v, "client_id_header: %s", why);
	st->client_id_header = arena_str(&v->a, hdr);
	take_ref(v, "default_rate_limit", w->default_rate_limit, POLICY_KIND_RATE_LIMIT,
		 &st->default_rate_limit);
	st->disabled = w->disabled;
	st->access_lists = take_ref_list(v, "access_lists", w->access_lists, w->n_access_lists,
					 POLICY_KIND_ACCESS_LIST, &st->n_access_lists);
	if (w->max_body_bytes > POLICY_MAX_BODY_BYTES)
		bad(v, "max_body_bytes: must be at most %llu", POLICY_MAX_BODY_BYTES);
	st->max_body_bytes = w->max_body_bytes ? w->max_body_bytes : POLICY_DEFAULT_MAX_BODY_BYTES;
	if (w->request_timeout_ms > POLICY_MAX_TIMEOUT_MS)
		bad(v, "request_timeout_ms: must be at most %u", POLICY_MAX_TIMEOUT_MS);
	st->request_timeout_ms = w->request_timeout_ms ? w->request_timeout_ms
						       : POLICY_DEFAULT_REQUEST_TIMEOUT_MS;
	if (w->escalation_rejects > POLICY_MAX_ESCALATION_REJECTS)
		bad(v, "escalation_rejects: must be at most %u", POLICY_MAX_ESCALATION_REJECTS);
	st->escalation_rejects = w->escalation_rejects;
	if (w->escalation_window_ms > POLICY_MAX_ESCALATION_WINDOW_MS)
		bad(v, "escalation_window_ms: must be at most %u", POLICY_MAX_ESCALATION_WINDOW_MS);
	st->escalation_window_ms = w->escalation_window_ms ? w->escalation_window_ms
							   : POLICY_DEFAULT_ESCALATION_WINDOW_MS;
	if (w->escalation_ttl_s > POLICY_MAX_ESCALATION_TTL_S)
		bad(v, "escalation_ttl_s: must be at most %u", POLICY_MAX_ESCALATION_TTL_S);
	st->escalation_ttl_s = w->escalation_ttl_s ? w->escalation_ttl_s
						   : POLICY_DEFAULT_ESCALATION_TTL_S;
}

/* ---- public ---- */

int policy_res_from_pb(const Sluice__V1__Resource *msg, struct policy_errs *errs,
		       struct policy_res **ret)
{
	struct policy_errs local;
	struct canon_msg cm;
	struct policy_res *r;
	struct vctx v;
	enum policy_kind kind;
	XXH128_hash_t h;
	const char *id;
	uint8_t *canon;
	size_t canon_len;
	int rc = 0;

	if (!errs) {
		policy_errs_init(&local);
		errs = &local;
	}
	if (!msg)
		return -EINVAL;
	if (msg->kind_case == SLUICE__V1__RESOURCE__KIND__NOT_SET) {
		policy_errs_add(errs, "resource.kind: not set");
		return -EINVAL;
	}
	kind = (enum policy_kind)msg->kind_case;
	if (!policy_kind_name(kind)) {
		policy_errs_add(errs, "resource.kind: unknown value %d", (int)msg->kind_case);
		return -EINVAL;
	}
	id = wire_id(msg);

	canon_build(msg, &cm);
	canon_len = sluice__v1__resource__get_packed_size(&cm.res);

	memset(&v, 0, sizeof(v));
	v.errs = errs;
	set_who(&v, kind, id);
	v.a.cap = res_size(msg, canon_len);
	v.a.base = malloc(v.a.cap);
	if (!v.a.base)
		return -ENOMEM;

	r = arena_alloc(&v.a, sizeof(*r), _Alignof(struct policy_res));
	memset(r, 0, sizeof(*r));
	r->refcnt = 1;
	r->kind = kind;
	r->id = arena_str(&v.a, id);
	r->id_len = strlen(id);
	r->key_hash = policy_key_hash(kind, id, r->id_len);
	canon = arena_alloc(&v.a, canon_len, 1);
	if (canon_len)
		sluice__v1__resource__pack(&cm.res, canon);
	r->canon = canon;
	r->canon_len = canon_len;
	h = XXH3_128bits(canon, canon_len);
	r->content_hash[0] = h.low64;
	r->content_hash[1] = h.high64;

	if (!*id)
		bad(&v, "id: required");
	else if (!policy_id_valid(id))
		bad(&v, "id: %s", policy_id_problem(id));
	else if (kind == POLICY_KIND_SETTINGS && strcmp(id, POLICY_SETTINGS_ID) != 0)
		bad(&v, "id: must be \"" POLICY_SETTINGS_ID "\"");

	switch (kind) {
	case POLICY_KIND_CLIENT:
		build_client(&v, w_client(msg), r);
		break;
	case POLICY_KIND_RATE_LIMIT:
		build_rate_limit(&v, w_rate_limit(msg), r);
		break;
	case POLICY_KIND_ACCESS_LIST:
		rc = build_access_list(&v, w_access_list(msg), r);
		break;
	case POLICY_KIND_ROUTE:
		build_route(&v, w_route(msg), r);
		break;
	case POLICY_KIND_UPSTREAM:
		build_upstream(&v, w_upstream(msg), r);
		break;
	case POLICY_KIND_SETTINGS:
		build_settings(&v, w_settings(msg), r);
		break;
	}
	if (rc == 0 && v.n_errs)
		rc = -EINVAL;
	if (rc)
		goto out_free;
	*ret = r;
	return 0;

out_free:
	if (kind == POLICY_KIND_ACCESS_LIST) {
		cidr_table_free((struct cidr_table *)r->u.access_list.allow_table);
		cidr_table_free((struct cidr_table *)r->u.access_list.deny_table);
	}
	free(v.a.base);
	return rc;
}

Sluice__V1__Resource *policy_res_to_pb(const struct policy_res *r)
{
	Sluice__V1__Resource *m;

	if (!r) {
		errno = EINVAL;
		return NULL;
	}
	/* The canonical bytes were produced by protobuf-c from a valid
	 * message, so failure here can only be allocation. */
	m = sluice__v1__resource__unpack(NULL, r->canon_len, r->canon ? r->canon : (const uint8_t *)"");
	if (!m)
		errno = ENOMEM;
	return m;
}

/* One key of a delta, for spotting keys that appear twice; lives in
 * check_delta_dups' scratch array, ids borrowed from the delta. */
struct delta_key {
	enum policy_kind kind;
	uint64_t hash;
	const char *id;
	bool remove;
	size_t idx;
};

static int delta_key_cmp(const void *pa, const void *pb)
{
	const struct delta_key *a = pa, *b = pb;
	int c;

	if (a->kind != b->kind)
		return a->kind < b->kind ? -1 : 1;
	if (a->hash != b->hash)
		return a->hash < b->hash ? -1 : 1;
	c = strcmp(a->id, b->id);
	if (c)
		return c;
	if (a->remove != b->remove)
		return a->remove ? 1 : -1;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static const char *delta_list(bool remove)
{
	return remove ? "removes" : "upserts";
}

/* A key upserted twice, or both upserted and removed, has no single
 * meaning: report every occurrence after the first. */
static int check_delta_dups(const struct policy_delta *d, const size_t *upsert_idx, const size_t *remove_idx,
			    struct policy_errs *errs)
{
	size_t n = d->n_upserts + d->n_removes, k = 0;
	struct delta_key *keys;
	unsigned found = 0;

	if (n < 2)
		return 0;
	keys = malloc(n * sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < d->n_upserts; i++, k++) {
		keys[k].kind = d->upserts[i]->kind;
		keys[k].hash = d->upserts[i]->key_hash;
		keys[k].id = d->upserts[i]->id;
		keys[k].remove = false;
		keys[k].idx = upsert_idx[i];
	}
	for (size_t i = 0; i < d->n_removes; i++, k++) {
		keys[k].kind = d->removes[i].kind;
		keys[k].id = d->removes[i].id;
		keys[k].hash = policy_key_hash(keys[k].kind, keys[k].id, strlen(keys[k].id));
		keys[k].remove = true;
		keys[k].idx = remove_idx[i];
	}
	qsort(keys, n, sizeof(*keys), delta_key_cmp);
	for (size_t i = 1, first = 0; i < n; i++) {
		const struct delta_key *a = &keys[first], *b = &keys[i];

		if (a->kind == b->kind && a->hash == b->hash && strcmp(a->id, b->id) == 0) {
			policy_errs_add(errs, "delta.%s[%zu]: %s/%s already appears at delta.%s[%zu]",
					delta_list(b->remove), b->idx, policy_kind_name(b->kind),
					b->id, delta_list(a->remove), a->idx);
			found++;
		} else {
			first = i;
		}
	}
	free(keys);
	return found ? -EINVAL : 0;
}

int policy_delta_from_pb(const Sluice__V1__Delta *msg, struct policy_errs *errs,
			 struct policy_delta **ret)
{
	struct policy_errs local;
	struct policy_delta *d;
	size_t *upsert_idx = NULL, *remove_idx = NULL;
	const char *why;
	bool invalid = false;
	int rc = 0;

	if (!errs) {
		policy_errs_init(&local);
		errs = &local;
	}
	if (!msg)
		return -EINVAL;
	/* Allocated here rather than by policy_delta_new() so that a bad
	 * ruleset name does not stop the upserts from being checked too. */
	d = calloc(1, sizeof(*d));
	upsert_idx = malloc((msg->n_upserts + 1) * sizeof(*upsert_idx));
	remove_idx = malloc((msg->n_removes + 1) * sizeof(*remove_idx));
	if (!d || !upsert_idx || !remove_idx) {
		rc = -ENOMEM;
		goto out_free;
	}
	why = policy_ruleset_name_problem(S(msg->ruleset));
	if (why) {
		policy_errs_add(errs, "delta.ruleset: %s", why);
		invalid = true;
	} else {
		memcpy(d->ruleset, msg->ruleset, strlen(msg->ruleset) + 1);
	}
	d->from_version = msg->from_version;
	d->to_version = msg->to_version;

	for (size_t i = 0; i < msg->n_upserts; i++) {
		const Sluice__V1__Resource *u = msg->upserts[i];
		struct policy_res *r;

		if (!u || u->kind_case == SLUICE__V1__RESOURCE__KIND__NOT_SET) {
			/* Without a kind the message names no resource. */
			policy_errs_add(errs, "delta.upserts[%zu]: resource.kind: not set", i);
			invalid = true;
			continue;
		}
		if (!policy_kind_name((enum policy_kind)u->kind_case)) {
			policy_errs_add(errs, "delta.upserts[%zu]: resource.kind: unknown value %d", i,
					(int)u->kind_case);
			invalid = true;
			continue;
		}
		rc = policy_res_from_pb(u, errs, &r);
		if (rc == -EINVAL) {
			invalid = true;
			rc = 0;
			continue;
		}
		if (rc)
			goto out_free;
		upsert_idx[d->n_upserts] = i;
		rc = policy_delta_add_upsert(d, r);
		policy_res_unref(r);
		if (rc)
			goto out_free;
	}

	for (size_t i = 0; i < msg->n_removes; i++) {
		const Sluice__V1__ResourceKey *k = msg->removes[i];
		int kind = k ? (int)k->kind : 0;
		const char *id = k ? S(k->id) : "";
		bool ok = true;

		if (kind == 0) {
			policy_errs_add(errs, "delta.removes[%zu].kind: not set", i);
			ok = false;
		} else if (!policy_kind_name((enum policy_kind)kind)) {
			policy_errs_add(errs, "delta.removes[%zu].kind: unknown value %d", i, kind);
			ok = false;
		}
		if ((why = policy_id_problem(id))) {
			policy_errs_add(errs, "delta.removes[%zu].id: %s", i, why);
			ok = false;
		} else if (kind == POLICY_KIND_SETTINGS && strcmp(id, POLICY_SETTINGS_ID) != 0) {
			policy_errs_add(errs, "delta.removes[%zu].id: must be \"" POLICY_SETTINGS_ID "\"", i);
			ok = false;
		}
		if (!ok) {
			invalid = true;
			continue;
		}
		remove_idx[d->n_removes] = i;
		rc = policy_delta_add_remove(d, (enum policy_kind)kind, id);
		if (rc)
			goto out_free;
	}

	rc = check_delta_dups(d, upsert_idx, remove_idx, errs);
	if (rc == -EINVAL) {
		invalid = true;
		rc = 0;
	}
	if (rc)
		goto out_free;
	if (invalid) {
		rc = -EINVAL;
		goto out_free;
	}
	free(upsert_idx);
	free(remove_idx);
	*ret = d;
	return 0;

out_free:
	free(upsert_idx);
	free(remove_idx);
	policy_delta_free(d);
	return rc;
}

void policy_delta_pb_free(Sluice__V1__Delta *m)
{
	if (!m)
		return;
	if (m->ruleset != protobuf_c_empty_string)
		free(m->ruleset);
	for (size_t i = 0; i < m->n_upserts; i++)
		sluice__v1__resource__free_unpacked(m->upserts[i], NULL);
	free(m->upserts);
	for (size_t i = 0; i < m->n_removes; i++) {
		if (m->removes[i]->id != protobuf_c_empty_string)
			free(m->removes[i]->id);
		free(m->removes[i]);
	}
	free(m->removes);
	free(m);
}

Sluice__V1__Delta *policy_delta_to_pb(const struct policy_delta *d)
{
	Sluice__V1__Delta *m;

	if (!d) {
		errno = EINVAL;
		return NULL;
	}
	m = malloc(sizeof(*m));
	if (!m)
		goto out_nomem;
	sluice__v1__delta__init(m);
	m->from_version = d->from_version;
	m->to_version = d->to_version;
	m->ruleset = strdup(d->ruleset);
	if (!m->ruleset) {
		m->ruleset = (char *)protobuf_c_empty_string;
		goto out_free;
	}
	if (d->n_upserts) {
		m->upserts = calloc(d->n_upserts, sizeof(*m->upserts));
		if (!m->upserts)
			goto out_free;
	}
	/* Each upsert is its canonical form, unpacked into its own tree so
	 * that free_unpacked can release it. */
	for (size_t i = 0; i < d->n_upserts; i++) {
		m->upserts[i] = policy_res_to_pb(d->upserts[i]);
		if (!m->upserts[i])
			goto out_free;
		m->n_upserts++;
	}
	if (d->n_removes) {
		m->removes = calloc(d->n_removes, sizeof(*m->removes));
		if (!m->removes)
			goto out_free;
	}
	for (size_t i = 0; i < d->n_removes; i++) {
		Sluice__V1__ResourceKey *k = malloc(sizeof(*k));

		if (!k)
			goto out_free;
		sluice__v1__resource_key__init(k);
		k->kind = (Sluice__V1__Kind)d->removes[i].kind;
		k->id = strdup(d->removes[i].id);
		m->removes[m->n_removes++] = k;
		if (!k->id) {
			k->id = (char *)protobuf_c_empty_string;
			goto out_free;
		}
	}
	return m;

out_free:
	policy_delta_pb_free(m);
out_nomem:
	errno = ENOMEM;
	return NULL;
}

/* ---- whole rulesets ---- */

int policy_ruleset_from_pb(const Sluice__V1__Ruleset *m, struct policy_errs *errs,
			   struct snapshot **ret)
{
	struct policy_res **res;
	size_t n = 0;
	int err = 0;

	if (!policy_ruleset_name_valid(m->name)) {
		if (errs)
			policy_errs_add(errs, "ruleset.name: '%.64s' is not a valid ruleset name",
					m->name);
		return -EINVAL;
	}
	if (m->n_resources > POLICY_MAX_RESOURCES) {
		if (errs)
			policy_errs_add(errs, "ruleset.resources: %zu resources exceed the cap of %u",
					m->n_resources, POLICY_MAX_RESOURCES);
		return -E2BIG;
	}
	res = calloc(m->n_resources ? m->n_resources : 1, sizeof(*res));
	if (!res)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_resources; i++) {
		int r = policy_res_from_pb(m->resources[i], errs, &res[n]);

		if (r == 0)
			n++;
		else if (!err || r == -ENOMEM)
			err = r;
	}
	if (!err)
		err = snapshot_build(m->name, m->version, res, n, errs, ret);
	for (size_t i = 0; i < n; i++)
		policy_res_unref(res[i]);
	free(res);
	return err;
}

static int ruleset_collect(void *arg, const struct policy_res *r)
{
	Sluice__V1__Ruleset *m = arg;
	Sluice__V1__Resource *pb = policy_res_to_pb(r);

	if (!pb)
		return -ENOMEM;
	m->resources[m->n_resources++] = pb;
	return 0;
}

Sluice__V1__Ruleset *policy_ruleset_to_pb(const struct snapshot *s)
{
	Sluice__V1__Ruleset *m = calloc(1, sizeof(*m));
	size_t n = snapshot_count(s, 0);

	if (!m)
		return NULL;
	sluice__v1__ruleset__init(m);
	m->version = snapshot_version(s);
	m->name = strdup(snapshot_ruleset(s));
	m->resources = calloc(n ? n : 1, sizeof(*m->resources));
	if (!m->name || !m->resources || snapshot_foreach(s, ruleset_collect, m) != 0) {
		policy_ruleset_pb_free(m);
		errno = ENOMEM;
		return NULL;
	}
	return m;
}

void policy_ruleset_pb_free(Sluice__V1__Ruleset *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_resources; i++)
		sluice__v1__resource__free_unpacked(m->resources[i], NULL);
	free(m->resources);
	if (m->name != protobuf_c_empty_string)
		free(m->name);
	free(m);
}
