/* etcd.c - etcd v3 JSON-gateway client: unary calls and the watch stream.
 *
 * Invariants: one keep-alive curl easy handle per struct etcd, used under
 * its mutex; a call never outlives its deadline, whichever endpoints it
 * tries. A watch owns its thread, multi handle and easy handle, and its
 * next_revision only grows: it is what a reconnect resumes from.
 */
#include "etcd.h"
#include "metrics.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A range of a big prefix can be large, but an answer past this is a bug
 * or an attack, not data we want in memory. */
#define ETCD_MAX_RESPONSE_BYTES (256u << 20)
/* etcd's own request limit is 1.5 MiB; one watch message holds at most one
 * batch of revisions, each at most a request's worth. */
#define ETCD_MAX_WATCH_LINE_BYTES (64u << 20)
#define WATCH_BACKOFF_MIN_MS 50u
#define WATCH_BACKOFF_MAX_MS 1000u
/* How often the watch loop looks at its deadlines when curl has nothing
 * to say; stop does not wait for this (curl_multi_wakeup). */
#define WATCH_POLL_MS 100

/* ---- small utilities ------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

/* curl_global_init is not guaranteed thread-safe on every libcurl build:
 * run it exactly once, whichever thread creates the first client. */
static void curl_init_once(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int curl_ready(void)
{
	pthread_once(&curl_once, curl_init_once);
	return curl_init_result == CURLE_OK ? 0 : -ENOMEM;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Growable byte buffer; owned by the struct that embeds it. */
struct buf {
	char *data;
	size_t len;
	size_t cap;
};

static int buf_append(struct buf *b, const void *p, size_t n, size_t max_len)
{
	if (n > max_len - b->len)
		return -EMSGSIZE;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *d;

		while (cap < b->len + n + 1)
			cap *= 2;
		d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

/* ---- base64 (OpenSSL's block codec: no line breaks, '=' padding) ---------- */

/* Returns a malloc'ed NUL-terminated encoding, NULL on ENOMEM/EOVERFLOW. */
static char *b64_encode(const void *p, size_t n)
{
	size_t out_len;
	char *out;

	/* EVP_EncodeBlock takes an int. */
	if (n > (size_t)INT_MAX / 4 * 3 - 3) {
		errno = EOVERFLOW;
		return NULL;
	}
	out_len = (n + 2) / 3 * 4;
	out = malloc(out_len + 1);
	if (!out)
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	out[out_len] = '\0';
	return out;
}

/* Decodes canonical base64 (what etcd sends) into a malloc'ed buffer with
 * a NUL after the data. 0, -EBADMSG, -ENOMEM. */
static int b64_decode(const char *s, size_t n, uint8_t **out, size_t *out_len)
{
	size_t pad = 0;
	uint8_t *d;
	int got;

	/* EVP_DecodeBlock skips surrounding whitespace and counts padding as
	 * data: require the canonical form and subtract the padding here. */
	if (n % 4 != 0 || n > (size_t)INT_MAX)
		return -EBADMSG;
	if (n > 0 && s[n - 1] == '=')
		pad++;
	if (n > 1 && s[n - 2] == '=')
		pad++;
	d = malloc(n / 4 * 3 + 1);
	if (!d)
		return -ENOMEM;
	if (n == 0) {
		d[0] = 0;
		*out = d;
		*out_len = 0;
		return 0;
	}
	if (s[0] == ' ' || s[0] == '\t' || s[0] == '\n' || s[0] == '\r')
		goto out_bad;
	got = EVP_DecodeBlock(d, (const unsigned char *)s, (int)n);
	if (got < 0 || (size_t)got != n / 4 * 3)
		goto out_bad;
	*out_len = (size_t)got - pad;
	d[*out_len] = 0;
	*out = d;
	return 0;

out_bad:
	free(d);
	return -EBADMSG;
}

/* ---- JSON helpers ---------------------------------------------------------- */

/* The gateway writes int64 as strings ("revision":"7") and omits zeros;
 * ints are accepted too in case a proxy rewrites them. */
static int json_get_i64(struct json_object *o, const char *name, int64_t *out)
{
	struct json_object *v;
	const char *s;
	char *end;
	long long x;

	*out = 0;
	if (!o || !json_object_object_get_ex(o, name, &v) || !v)
		return 0;
	if (json_object_is_type(v, json_type_int)) {
		*out = json_object_get_int64(v);
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return -EBADMSG;
	s = json_object_get_string(v);
	errno = 0;
	x = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return -EBADMSG;
	*out = x;
	return 0;
}

static bool json_get_bool(struct json_object *o, const char *name)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, name, &v) || !v)
		return false;
	return json_object_get_boolean(v);
}

static struct json_object *json_get(struct json_object *o, const char *name)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, name, &v))
		return NULL;
	return v;
}

/* A missing field is an empty byte string (etcd omits empty values). */
static int json_get_bytes(struct json_object *o, const char *name, uint8_t **out,
			  size_t *out_len)
{
	struct json_object *v = json_get(o, name);

	if (!v)
		return b64_decode("", 0, out, out_len);
	if (!json_object_is_type(v, json_type_string))
		return -EBADMSG;
	return b64_decode(json_object_get_string(v), (size_t)json_object_get_string_len(v),
			  out, out_len);
}

static int json_add_b64(struct json_object *o, const char *name, const void *p, size_t n)
{
	char *s = b64_encode(p, n);
	struct json_object *v;

	if (!s)
		return errno == EOVERFLOW ? -EINVAL : -ENOMEM;
	v = json_object_new_string(s);
	free(s);
	if (!v)
		return -ENOMEM;
	if (json_object_object_add(o, name, v) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

static int json_add_i64(struct json_object *o, const char *name, int64_t x)
{
	char s[24];
	struct json_object *v;

	snprintf(s, sizeof(s), "%" PRId64, x);
	v = json_object_new_string(s);
	if (!v)
		return -ENOMEM;
	if (json_object_object_add(o, name, v) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

static int json_add_bool(struct json_object *o, const char *name, bool b)
{
	struct json_object *v = json_object_new_boolean(b);

	if (!v)
		return -ENOMEM;
	if (json_object_object_add(o, name, v) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

static int json_add_str(struct json_object *o, const char *name, const char *s)
{
	struct json_object *v = json_object_new_string(s);

	if (!v)
		return -ENOMEM;
	if (json_object_object_add(o, name, v) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

/* Adds `child` under `name`, taking ownership of it in every case. */
static int json_add_obj(struct json_object *o, const char *name, struct json_object *child)
{
	if (!child)
		return -ENOMEM;
	if (json_object_object_add(o, name, child) < 0) {
		json_object_put(child);
		return -ENOMEM;
	}
	return 0;
}

/* Parses exactly one JSON value spanning all n bytes. */
static struct json_object *json_parse_n(const char *s, size_t n)
{
	struct json_tokener *tok;
	struct json_object *o;

	if (n > INT_MAX)
		return NULL;
	tok = json_tokener_new();
	if (!tok)
		return NULL;
	o = json_tokener_parse_ex(tok, s, (int)n);
	if (o && json_tokener_get_error(tok) == json_tokener_success &&
	    json_tokener_get_parse_end(tok) < n) {
		/* Only whitespace may follow the value. */
		for (size_t i = json_tokener_get_parse_end(tok); i < n; i++) {
			if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t') {
				json_object_put(o);
				o = NULL;
				break;
			}
		}
	}
	if (o && json_tokener_get_error(tok) != json_tokener_success) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

/* ---- kv and results -------------------------------------------------------- */

static void kv_done(struct etcd_kv *kv)
{
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

static int kv_parse(struct json_object *o, struct etcd_kv *kv)
{
	uint8_t *key = NULL;
	int r;

	memset(kv, 0, sizeof(*kv));
	if (!json_object_is_type(o, json_type_object))
		return -EBADMSG;
	r = json_get_bytes(o, "key", &key, &kv->key_len);
	if (r < 0)
		return r;
	kv->key = (char *)key;
	r = json_get_bytes(o, "value", &kv->value, &kv->value_len);
	if (r < 0)
		goto out_free;
	if ((r = json_get_i64(o, "create_revision", &kv->create_revision)) < 0 ||
	    (r = json_get_i64(o, "mod_revision", &kv->mod_revision)) < 0 ||
	    (r = json_get_i64(o, "version", &kv->version)) < 0 ||
	    (r = json_get_i64(o, "lease", &kv->lease)) < 0)
		goto out_free;
	return 0;

out_free:
	kv_done(kv);
	return r;
}

void etcd_range_result_done(struct etcd_range_result *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_kvs; i++)
		kv_done(&r->kvs[i]);
	free(r->kvs);
	memset(r, 0, sizeof(*r));
}

/* A RangeResponse body (top level or inside a txn response). */
static int range_result_parse(struct json_object *o, struct etcd_range_result *out)
{
	struct etcd_range_result r = {0};
	struct json_object *kvs = json_get(o, "kvs");
	int err;

	if ((err = json_get_i64(json_get(o, "header"), "revision", &r.revision)) < 0 ||
	    (err = json_get_i64(o, "count", &r.count)) < 0)
		return err;
	r.more = json_get_bool(o, "more");
	if (kvs) {
		size_t n;

		if (!json_object_is_type(kvs, json_type_array))
			return -EBADMSG;
		n = json_object_array_length(kvs);
		r.kvs = calloc(n ? n : 1, sizeof(*r.kvs));
		if (!r.kvs)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			err = kv_parse(json_object_array_get_idx(kvs, i), &r.kvs[i]);
			if (err < 0) {
				etcd_range_result_done(&r);
				return err;
			}
			r.n_kvs = i + 1;
		}
	}
	*out = r;
	return 0;
}

void etcd_txn_result_done(struct etcd_txn_result *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_responses; i++)
		etcd_range_result_done(&r->responses[i].range);
	free(r->responses);
	memset(r, 0, sizeof(*r));
}

size_t etcd_prefix_end(const char *prefix, size_t len, char *out)
{
	size_t n = len;

	while (n > 0 && (unsigned char)prefix[n - 1] == 0xff)
		n--;
	if (n == 0) {
		out[0] = '\0';
		return 1;
	}
	memcpy(out, prefix, n);
	out[n - 1] = (char)((unsigned char)out[n - 1] + 1);
	return n;
}

/* ---- the unary client -------------------------------------------------------- */

/* Owned by the caller of etcd_new; lives until etcd_free. */
struct etcd {
	pthread_mutex_t lock;
	CURL *curl;
	struct curl_slist *headers;
	char **endpoints;	/* without trailing '/' */
	size_t n_endpoints;
	size_t current;		/* the last endpoint that answered */
	uint64_t timeout_ms;
	struct buf resp;
	bool resp_overflow;
	struct metrics_histogram latency; /* every etcd_call */
};

/* Seconds: a local etcd answers in ~1 ms, a commit with fsync in ~10 ms. */
static const double latency_bounds[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
					 0.1, 0.25, 0.5, 1, 2.5, 5 };

const struct metrics_histogram *etcd_latency(const struct etcd *e)
{
	return &e->latency;
}

static void free_endpoints(char **eps, size_t n)
{
	if (!eps)
		return;
	for (size_t i = 0; i < n; i++)
		free(eps[i]);
	free(eps);
}

static int copy_endpoints(const struct etcd_config *cfg, char ***ret)
{
	char **eps;

	if (!cfg || !cfg->endpoints || cfg->n_endpoints == 0)
		return -EINVAL;
	eps = calloc(cfg->n_endpoints, sizeof(*eps));
	if (!eps)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->n_endpoints; i++) {
		const char *s = cfg->endpoints[i];
		size_t n = s ? strlen(s) : 0;

		while (n > 0 && s[n - 1] == '/')
			n--;
		if (n == 0) {
			free_endpoints(eps, cfg->n_endpoints);
			return -EINVAL;
		}
		eps[i] = strndup(s, n);
		if (!eps[i]) {
			free_endpoints(eps, cfg->n_endpoints);
			return -ENOMEM;
		}
	}
	*ret = eps;
	return 0;
}

static size_t unary_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct etcd *e = userdata;
	size_t n = size * nmemb;

	if (buf_append(&e->resp, ptr, n, ETCD_MAX_RESPONSE_BYTES) < 0) {
		e->resp_overflow = true;
		return 0;
	}
	return n;
}

int etcd_new(const struct etcd_config *cfg, struct etcd **ret)
{
	struct etcd *e;
	int r;

	r = curl_ready();
	if (r < 0)
		return r;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	r = copy_endpoints(cfg, &e->endpoints);
	if (r < 0)
		goto out_free;
	e->n_endpoints = cfg->n_endpoints;
	e->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : ETCD_DEFAULT_TIMEOUT_MS;
	metrics_histogram_init(&e->latency, latency_bounds,
			       sizeof(latency_bounds) / sizeof(latency_bounds[0]));
	r = -ENOMEM;
	e->curl = curl_easy_init();
	if (!e->curl)
		goto out_free_endpoints;
	e->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (!e->headers)
		goto out_cleanup_curl;
	r = pthread_mutex_init(&e->lock, NULL);
	if (r) {
		r = -r;
		goto out_free_headers;
	}
	/* Signals cannot interrupt a resolver in a threaded program. */
	curl_easy_setopt(e->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e->curl, CURLOPT_HTTPHEADER, e->headers);
	curl_easy_setopt(e->curl, CURLOPT_WRITEFUNCTION, unary_write);
	curl_easy_setopt(e->curl, CURLOPT_WRITEDATA, e);
	curl_easy_setopt(e->curl, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e->curl, CURLOPT_TCP_KEEPALIVE, 1L);
	*ret = e;
	return 0;

out_free_headers:
	curl_slist_free_all(e->headers);
out_cleanup_curl:
	curl_easy_cleanup(e->curl);
out_free_endpoints:
	free_endpoints(e->endpoints, cfg->n_endpoints);
out_free:
	free(e);
	return r;
}

void etcd_free(struct etcd *e)
{
	if (!e)
		return;
	curl_easy_cleanup(e->curl);
	curl_slist_free_all(e->headers);
	free_endpoints(e->endpoints, e->n_endpoints);
	free(e->resp.data);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

/* gRPC status code in an error body -> errno. */
static int grpc_code_to_errno(int64_t code, const char *message)
{
	switch (code) {
	case 3:		/* INVALID_ARGUMENT */
	case 9:		/* FAILED_PRECONDITION */
		return -EINVAL;
	case 4:		/* DEADLINE_EXCEEDED */
		return -ETIMEDOUT;
	case 5:		/* NOT_FOUND: leases */
		return -ENOENT;
	case 7:		/* PERMISSION_DENIED */
	case 16:	/* UNAUTHENTICATED */
		return -EACCES;
	case 8:		/* RESOURCE_EXHAUSTED: etcd's quota */
		return -ENOSPC;
	case 11:	/* OUT_OF_RANGE: compacted or future revision */
		return message && strstr(message, "compacted") ? -ESTALE : -ERANGE;
	default:
		return -EIO;
	}
}

static int curl_code_to_errno(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	default:
		return -ECONNRESET;
	}
}

/* POSTs `req` to `path` and parses a 200 answer into *resp. `idempotent`:
 * the request may be sent again to another endpoint after an unknown
 * outcome (broken connection, 5xx). Caller holds no lock. */
static int etcd_call(struct etcd *e, const char *path, struct json_object *req,
		     bool idempotent, struct json_object **resp)
{
	const char *body;
	uint64_t start_ms = now_ms(), deadline_ms = start_ms + e->timeout_ms;
	size_t tried = 0;
	int err = -ETIMEDOUT;

	body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN |
						    JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!body)
		return -ENOMEM;

	pthread_mutex_lock(&e->lock);
	for (; tried < e->n_endpoints; tried++) {
		size_t idx = (e->current + tried) % e->n_endpoints;
		uint64_t now = now_ms(), remaining_ms, connect_ms;
		size_t left = e->n_endpoints - tried;
		struct json_object *o;
		char *url;
		CURLcode cc;
		long status = 0;

		if (now >= deadline_ms) {
			err = -ETIMEDOUT;
			break;
		}
		remaining_ms = deadline_ms - now;
		/* A black-holed endpoint must not eat the whole deadline: each
		 * connect gets a fair share of what is left. */
		connect_ms = remaining_ms / left ? remaining_ms / left : 1;
		if (asprintf(&url, "%s%s", e->endpoints[idx], path) < 0) {
			err = -ENOMEM;
			break;
		}
		curl_easy_setopt(e->curl, CURLOPT_URL, url);
		curl_easy_setopt(e->curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(e->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
		curl_easy_setopt(e->curl, CURLOPT_TIMEOUT_MS, (long)remaining_ms);
		curl_easy_setopt(e->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
		e->resp.len = 0;
		e->resp_overflow = false;
		cc = curl_easy_perform(e->curl);
		free(url);

		if (cc != CURLE_OK) {
			bool not_sent = cc == CURLE_COULDNT_CONNECT ||
					cc == CURLE_COULDNT_RESOLVE_HOST ||
					cc == CURLE_COULDNT_RESOLVE_PROXY;

			if (e->resp_overflow) {
				err = -ENOMEM;
				break;
			}
			err = curl_code_to_errno(cc);
			if (cc == CURLE_OPERATION_TIMEDOUT) {
				/* Time left means the per-endpoint connect
				 * timeout fired: nothing was sent. */
				if (now_ms() + 1 >= deadline_ms)
					break;
				not_sent = true;
			}
			if (!not_sent && !idempotent)
				break;
			continue;
		}
		curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &status);
		o = json_parse_n(e->resp.data ? e->resp.data : "", e->resp.len);
		if (status >= 500) {
			json_object_put(o);
			err = -EIO;
			if (!idempotent) {
				/* Unknown outcome: do not resend, but let the
				 * next call start on another member. */
				e->current = (idx + 1) % e->n_endpoints;
				break;
			}
			continue;
		}
		e->current = idx;
		if (!o) {
			err = -EBADMSG;
			break;
		}
		if (status != 200) {
			int64_t code = 0;
			struct json_object *msg = json_get(o, "message");

			if (json_get_i64(o, "code", &code) < 0 || code == 0)
				err = -EBADMSG;
			else
				err = grpc_code_to_errno(code, msg ? json_object_get_string(msg) : NULL);
			json_object_put(o);
			break;
		}
		if (!json_object_is_type(o, json_type_object)) {
			json_object_put(o);
			err = -EBADMSG;
			break;
		}
		*resp = o;
		err = 0;
		break;
	}
	pthread_mutex_unlock(&e->lock);
	metrics_histogram_observe(&e->latency, (double)(now_ms() - start_ms) / 1000.0);
	return err;
}

/* ---- KV ------------------------------------------------------------------------ */

/* Fills a RangeRequest / DeleteRangeRequest key pair. */
static int add_key_range(struct json_object *o, const char *key, size_t key_len,
			 const char *range_end, size_t range_end_len)
{
	int r = json_add_b64(o, "key", key, key_len);

	if (r == 0 && range_end)
		r = json_add_b64(o, "range_end", range_end, range_end_len);
	return r;
}

int etcd_range(struct etcd *e, const char *key, size_t key_len,
	       const char *range_end, size_t range_end_len, int64_t revision,
	       size_t limit, struct etcd_range_result *out)
{
	struct json_object *req = json_object_new_object(), *resp = NULL;
	int r;

	memset(out, 0, sizeof(*out));
	if (!req)
		return -ENOMEM;
	r = add_key_range(req, key, key_len, range_end, range_end_len);
	if (r == 0 && revision > 0)
		r = json_add_i64(req, "revision", revision);
	if (r == 0 && limit > 0)
		r = json_add_i64(req, "limit", (int64_t)limit);
	if (r == 0)
		r = etcd_call(e, "/v3/kv/range", req, true, &resp);
	if (r == 0)
		r = range_result_parse(resp, out);
	json_object_put(resp);
	json_object_put(req);
	return r;
}

int etcd_put(struct etcd *e, const char *key, size_t key_len,
	     const void *value, size_t value_len, int64_t lease, int64_t *revision)
{
	struct json_object *req = json_object_new_object(), *resp = NULL;
	int64_t rev = 0;
	int r;

	if (!req)
		return -ENOMEM;
	r = json_add_b64(req, "key", key, key_len);
	if (r == 0)
		r = json_add_b64(req, "value", value, value_len);
	if (r == 0 && lease)
		r = json_add_i64(req, "lease", lease);
	if (r == 0)
		r = etcd_call(e, "/v3/kv/put", req, false, &resp);
	if (r == 0)
		r = json_get_i64(json_get(resp, "header"), "revision", &rev);
	if (r == 0 && revision)
		*revision = rev;
	json_object_put(resp);
	json_object_put(req);
	return r;
}

int etcd_delete(struct etcd *e, const char *key, size_t key_len,
		const char *range_end, size_t range_end_len,
		int64_t *deleted, int64_t *revision)
{
	struct json_object *req = json_object_new_object(), *resp = NULL;
	int64_t rev = 0, n = 0;
	int r;

	if (!req)
		return -ENOMEM;
	r = add_key_range(req, key, key_len, range_end, range_end_len);
	if (r == 0)
		r = etcd_call(e, "/v3/kv/deleterange", req, false, &resp);
	if (r == 0)
		r = json_get_i64(json_get(resp, "header"), "revision", &rev);
	if (r == 0)
		r = json_get_i64(resp, "deleted", &n);
	if (r == 0 && revision)
		*revision = rev;
	if (r == 0 && deleted)
		*deleted = n;
	json_object_put(resp);
	json_object_put(req);
	return r;
}

int etcd_compact(struct etcd *e, int64_t revision, bool physical)
{
	struct json_object *req = json_object_new_object(), *resp = NULL;
	int r;

	if (!req)
		return -ENOMEM;
	r = json_add_i64(req, "revision", revision);
	if (r == 0 && physical)
		r = json_add_bool(req, "physical", true);
	if (r == 0)
		r = etcd_call(e, "/v3/kv/compaction", req, false, &resp);
	json_object_put(resp);
	json_object_put(req);
	return r;
}

/* ---- transactions ------------------------------------------------------------ */

static const char *const cmp_target_names[] = {
	[ETCD_CMP_VERSION] = "VERSION",
	[ETCD_CMP_CREATE] = "CREATE",
	[ETCD_CMP_MOD] = "MOD",
	[ETCD_CMP_VALUE] = "VALUE",
};

static const char *const cmp_target_fields[] = {
	[ETCD_CMP_VERSION] = "version",
	[ETCD_CMP_CREATE] = "create_revision",
	[ETCD_CMP_MOD] = "mod_revision",
	[ETCD_CMP_VALUE] = "value",
};

static const char *const cmp_result_names[] = {
	[ETCD_CMP_EQUAL] = "EQUAL",
	[ETCD_CMP_GREATER] = "GREATER",
	[ETCD_CMP_LESS] = "LESS",
	[ETCD_CMP_NOT_EQUAL] = "NOT_EQUAL",
};

static struct json_object *compare_json(const struct etcd_compare *c, int *err)
{
	struct json_object *o = json_object_new_object();
	int r;

	if (!o) {
		*err = -ENOMEM;
		return NULL;
	}
	if ((unsigned)c->target > ETCD_CMP_VALUE || (unsigned)c->result > ETCD_CMP_NOT_EQUAL) {
		r = -EINVAL;
		goto out_put;
	}
	r = json_add_b64(o, "key", c->key, c->key_len);
	if (r == 0)
		r = json_add_str(o, "target", cmp_target_names[c->target]);
	if (r == 0)
		r = json_add_str(o, "result", cmp_result_names[c->result]);
	if (r == 0 && c->target == ETCD_CMP_VALUE)
		r = json_add_b64(o, "value", c->value, c->value_len);
	else if (r == 0)
		/* Sent even when 0: "absent" is a value the compare needs. */
		r = json_add_i64(o, cmp_target_fields[c->target], c->number);
	if (r == 0)
		return o;
out_put:
	json_object_put(o);
	*err = r;
	return NULL;
}

static struct json_object *op_json(const struct etcd_op *op, int *err)
{
	struct json_object *o = json_object_new_object(), *inner = json_object_new_object();
	const char *name;
	int r = 0;

	if (!o || !inner) {
		r = -ENOMEM;
		goto out_put;
	}
	switch (op->type) {
	case ETCD_OP_PUT:
		name = "request_put";
		r = json_add_b64(inner, "key", op->key, op->key_len);
		if (r == 0)
			r = json_add_b64(inner, "value", op->value, op->value_len);
		if (r == 0 && op->lease)
			r = json_add_i64(inner, "lease", op->lease);
		break;
	case ETCD_OP_DELETE:
		name = "request_delete_range";
		r = add_key_range(inner, op->key, op->key_len, op->range_end, op->range_end_len);
		break;
	case ETCD_OP_RANGE:
		name = "request_range";
		r = add_key_range(inner, op->key, op->key_len, op->range_end, op->range_end_len);
		if (r == 0 && op->limit)
			r = json_add_i64(inner, "limit", (int64_t)op->limit);
		break;
	default:
		r = -EINVAL;
		goto out_put;
	}
	if (r < 0)
		goto out_put;
	r = json_add_obj(o, name, inner);
	inner = NULL;
	if (r == 0)
		return o;
out_put:
	json_object_put(inner);
	json_object_put(o);
	*err = r;
	return NULL;
}

static int add_ops(struct json_object *req, const char *name, const struct etcd_op *ops,
		   size_t n)
{
	struct json_object *arr;
	int r = 0;

	if (n == 0)
		return 0;
	arr = json_object_new_array();
	if (!arr)
		return -ENOMEM;
	for (size_t i = 0; i < n && r == 0; i++) {
		struct json_object *o = op_json(&ops[i], &r);

		if (o && json_object_array_add(arr, o) < 0) {
			json_object_put(o);
			r = -ENOMEM;
		}
	}
	if (r < 0) {
		json_object_put(arr);
		return r;
	}
	return json_add_obj(req, name, arr);
}

static int txn_responses_parse(struct json_object *arr, struct etcd_txn_result *out)
{
	size_t n;

	if (!arr)
		return 0;
	if (!json_object_is_type(arr, json_type_array))
		return -EBADMSG;
	n = json_object_array_length(arr);
	out->responses = calloc(n ? n : 1, sizeof(*out->responses));
	if (!out->responses)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_array_get_idx(arr, i), *v;
		struct etcd_op_result *res = &out->responses[i];
		int r = 0;

		if ((v = json_get(o, "response_range"))) {
			res->type = ETCD_OP_RANGE;
			r = range_result_parse(v, &res->range);
		} else if ((v = json_get(o, "response_delete_range"))) {
			res->type = ETCD_OP_DELETE;
			r = json_get_i64(v, "deleted", &res->deleted);
		} else if (json_get(o, "response_put")) {
			res->type = ETCD_OP_PUT;
		} else {
			r = -EBADMSG;
		}
		if (r < 0)
			return r;
		out->n_responses = i + 1;
	}
	return 0;
}

int etcd_txn(struct etcd *e, const struct etcd_txn *t, struct etcd_txn_result *out)
{
	struct json_object *req = json_object_new_object(), *resp = NULL;
	struct etcd_txn_result res = {0};
	int r = 0;

	memset(out, 0, sizeof(*out));
	if (!req)
		return -ENOMEM;
	if (t->n_compares) {
		struct json_object *arr = json_object_new_array();

		r = arr ? 0 : -ENOMEM;
		for (size_t i = 0; i < t->n_compares && r == 0; i++) {
			struct json_object *c = compare_json(&t->compares[i], &r);

			if (c && json_object_array_add(arr, c) < 0) {
				json_object_put(c);
				r = -ENOMEM;
			}
		}
		if (r < 0)
			json_object_put(arr);
		else
			r = json_add_obj(req, "compare", arr);
	}
	if (r == 0)
		r = add_ops(req, "success", t->success, t->n_success);
	if (r == 0)
		r = add_ops(req, "failure", t->failure, t->n_failure);
	if (r == 0)
		r = etcd_call(e, "/v3/kv/txn", req, false, &resp);
	if (r == 0)
		r = json_get_i64(json_get(resp, "header"), "revision", &res.revision);
	if (r == 0) {
		res.succeeded = json_get_bool(resp, "succeeded");
		r = txn_responses_parse(json_get(resp, "responses"), &res);
	}
	if (r == 0)
		*out = res;
	else
		etcd_txn_result_done(&res);
	json_object_put(resp);
	json_object_put(req);
	return r;
}

/* ---- leases ------------------------------------------------------------------- */

int etcd_lease_grant(struct etcd *e, int64_t ttl_s, int64_t *id)
{
	struct json_object *req = json_object_new_object(), *resp = NULL;
	int64_t got = 0;
	int r;

	if (!req)
		return -ENOMEM;
	r = json_add_i64(req, "TTL", ttl_s);
	if (r == 0)
		r = etcd_call(e, "/v3/lease/grant", req, false, &resp);
	if (r == 0)
		r = json_get_i64(resp, "ID", &got);
	if (r == 0 && got == 0)
		r = -EBADMSG;
	if (r == 0)
		*id = got;
	json_object_put(resp);
	json_object_put(req);
	return r;
}

int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ttl_s)
{
	struct json_object *req = json_object_new_object(), *resp = NULL;
	int64_t ttl = 0;
	int r;

	if (!req)
		return -ENOMEM;
	r = json_add_i64(req, "ID", id);
	/* A stream endpoint: with a one-object request body the gateway
	 * answers one {"result":...} object and ends the response. */
	if (r == 0)
		r = etcd_call(e, "/v3/lease/keepalive", req, true, &resp);
	if (r == 0 && !json_get(resp, "result"))
		r = json_get(resp, "error") ? -EIO : -EBADMSG;
	if (r == 0)
		r = json_get_i64(json_get(resp, "result"), "TTL", &ttl);
	/* An unknown or expired lease answers TTL 0 (omitted). */
	if (r == 0 && ttl <= 0)
		r = -ENOENT;
	if (r == 0 && ttl_s)
		*ttl_s = ttl;
	json_object_put(resp);
	json_object_put(req);
	return r;
}

int etcd_lease_timetolive(struct etcd *e, int64_t id, int64_t *ttl_s,
			  int64_t *granted_ttl_s)
{
	struct json_object *req = json_object_new_object(), *resp = NULL;
	int64_t ttl = 0, granted = 0;
	int r;

	if (!req)
		return -ENOMEM;
	r = json_add_i64(req, "ID", id);
	if (r == 0)
		r = etcd_call(e, "/v3/lease/timetolive", req, true, &resp);
	if (r == 0)
		r = json_get_i64(resp, "TTL", &ttl);
	if (r == 0)
		r = json_get_i64(resp, "grantedTTL", &granted);
	/* etcd reports a missing lease as TTL -1. */
	if (r == 0 && (ttl < 0 || granted == 0))
		r = -ENOENT;
	if (r == 0 && ttl_s)
		*ttl_s = ttl;
	if (r == 0 && granted_ttl_s)
		*granted_ttl_s = granted;
	json_object_put(resp);
	json_object_put(req);
	return r;
}

int etcd_lease_revoke(struct etcd *e, int64_t id)
{
	struct json_object *req = json_object_new_object(), *resp = NULL;
	int r;

	if (!req)
		return -ENOMEM;
	r = json_add_i64(req, "ID", id);
	if (r == 0)
		r = etcd_call(e, "/v3/lease/revoke", req, false, &resp);
	json_object_put(resp);
	json_object_put(req);
	return r;
}

/* ---- watch ------------------------------------------------------------------------ */

/* How one stream session ended. */
enum watch_end {
	WATCH_LOST,		/* closed, broken, refused or bad: back off */
	WATCH_RESUME_NOW,	/* compaction handled: re-watch at once */
	WATCH_STOPPED,
};

/* Owned by the caller of etcd_watch_start; lives until etcd_watch_stop.
 * Everything below `lock` is touched by the watch thread only. */
struct etcd_watch {
	atomic_bool stopping;
	pthread_mutex_t lock;	/* with `wake`: the backoff sleep */
	pthread_cond_t wake;
	pthread_t thread;
	CURLM *multi;
	CURL *curl;
	struct curl_slist *headers;
	char **endpoints;
	size_t n_endpoints;
	size_t endpoint_idx;
	uint64_t timeout_ms;
	char *key;
	size_t key_len;
	char *range_end;	/* NULL: single key */
	size_t range_end_len;
	bool prev_kv;
	etcd_watch_cb cb;
	void *arg;
	/* First revision not yet delivered; 0 until etcd names "now". */
	int64_t next_revision;
	unsigned int rand_seed;
	/* Per session. */
	struct buf line;
	bool created;
	enum watch_end end;
};

/* One event parsed from a message, before delivery. */
struct watch_item {
	enum etcd_watch_event_type type;
	struct etcd_kv kv;
	struct etcd_kv prev_kv;
	bool has_prev;
};

static void items_free(struct watch_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		kv_done(&items[i].kv);
		kv_done(&items[i].prev_kv);
	}
	free(items);
}

/* Delivers a message's events whole: parse all, then call back, so that a
 * bad event never leaves a revision half-delivered. false: bad message. */
static bool watch_events(struct etcd_watch *w, struct json_object *events)
{
	size_t n = json_object_array_length(events), parsed = 0, first = 0;
	struct watch_item *items = calloc(n ? n : 1, sizeof(*items));
	bool ok = false;

	if (!items)
		return false;
	for (; parsed < n; parsed++) {
		struct json_object *ev = json_object_array_get_idx(events, parsed);
		struct json_object *type = json_get(ev, "type"), *prev = json_get(ev, "prev_kv");
		struct watch_item *it = &items[parsed];

		/* PUT is the enum's zero, so etcd leaves it out. */
		it->type = type && !strcmp(json_object_get_string(type), "DELETE")
				   ? ETCD_WATCH_DELETE : ETCD_WATCH_PUT;
		if (kv_parse(json_get(ev, "kv"), &it->kv) < 0)
			goto out_free;
		if (prev) {
			if (kv_parse(prev, &it->prev_kv) < 0) {
				kv_done(&it->kv);
				goto out_free;
			}
			it->has_prev = true;
		}
		/* Revisions must grow within a message. */
		if (it->kv.mod_revision <= 0 ||
		    (parsed > 0 && it->kv.mod_revision < items[parsed - 1].kv.mod_revision)) {
			parsed++;
			goto out_free;
		}
	}
	/* Already delivered before a reconnect: never twice. */
	while (first < n && items[first].kv.mod_revision < w->next_revision)
		first++;
	for (size_t i = first; i < n; i++) {
		struct etcd_watch_event ev = {
			.type = items[i].type,
			.revision = items[i].kv.mod_revision,
			.kv = &items[i].kv,
			.prev_kv = items[i].has_prev ? &items[i].prev_kv : NULL,
			.last_in_revision = i + 1 == n ||
					    items[i + 1].kv.mod_revision != items[i].kv.mod_revision,
		};

		w->cb(w->arg, &ev);
	}
	if (first < n)
		w->next_revision = items[n - 1].kv.mod_revision + 1;
	ok = true;
out_free:
	items_free(items, parsed);
	return ok;
}

/* Returns true to keep the stream, false to end it (w->end says how). */
static bool watch_message(struct etcd_watch *w, const char *s, size_t n)
{
	struct json_object *o = json_parse_n(s, n), *res, *events;
	int64_t header_rev = 0, compact_rev = 0;
	bool keep = false;

	w->end = WATCH_LOST;
	res = json_get(o, "result");
	if (!res || json_get_i64(json_get(res, "header"), "revision", &header_rev) < 0 ||
	    json_get_i64(res, "compact_revision", &compact_rev) < 0)
		goto out;
	if (json_get_bool(res, "created")) {
		w->created = true;
		if (w->next_revision == 0)
			w->next_revision = header_rev + 1;
	}
	if (json_get_bool(res, "canceled")) {
		if (compact_rev > 0) {
			struct etcd_watch_event ev = {
				.type = ETCD_WATCH_COMPACTED,
				.revision = compact_rev,
				.compact_revision = compact_rev,
				.last_in_revision = true,
			};
			int64_t read_at = w->cb(w->arg, &ev);

			w->next_revision = (read_at > compact_rev ? read_at : compact_rev) + 1;
			/* etcd keeps the canceled stream open: close it. */
			w->end = WATCH_RESUME_NOW;
		}
		goto out;
	}
	events = json_get(res, "events");
	if (events) {
		if (!json_object_is_type(events, json_type_array) ||
		    !watch_events(w, events))
			goto out;
	}
	keep = true;
out:
	json_object_put(o);
	return keep;
}

static size_t watch_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct etcd_watch *w = userdata;
	size_t n = size * nmemb, start = 0;

	if (atomic_load(&w->stopping)) {
		w->end = WATCH_STOPPED;
		return 0;
	}
	if (buf_append(&w->line, ptr, n, ETCD_MAX_WATCH_LINE_BYTES) < 0) {
		w->end = WATCH_LOST;
		return 0;
	}
	for (;;) {
		char *nl = memchr(w->line.data + start, '\n', w->line.len - start);
		size_t len;

		if (!nl)
			break;
		len = (size_t)(nl - (w->line.data + start));
		if (len > 0 && !watch_message(w, w->line.data + start, len))
			return 0;	/* aborts the transfer */
		start += len + 1;
	}
	memmove(w->line.data, w->line.data + start, w->line.len - start);
	w->line.len -= start;
	return n;
}

static struct json_object *watch_request(const struct etcd_watch *w)
{
	struct json_object *req = json_object_new_object(), *create = json_object_new_object();
	int r = (req && create) ? 0 : -ENOMEM;

	if (r == 0)
		r = add_key_range(create, w->key, w->key_len, w->range_end, w->range_end_len);
	if (r == 0 && w->next_revision > 0)
		r = json_add_i64(create, "start_revision", w->next_revision);
	if (r == 0 && w->prev_kv)
		r = json_add_bool(create, "prev_kv", true);
	if (r == 0) {
		r = json_add_obj(req, "create_request", create);
		create = NULL;
	}
	json_object_put(create);
	if (r < 0) {
		json_object_put(req);
		return NULL;
	}
	return req;
}

/* One stream, from connect to its end. */
static enum watch_end watch_session(struct etcd_watch *w)
{
	struct json_object *req = watch_request(w);
	uint64_t started_ms = now_ms();
	char *url = NULL;
	bool done = false;

	w->line.len = 0;
	w->created = false;
	w->end = WATCH_LOST;
	if (!req || asprintf(&url, "%s/v3/watch", w->endpoints[w->endpoint_idx]) < 0) {
		json_object_put(req);
		return WATCH_LOST;
	}
	curl_easy_setopt(w->curl, CURLOPT_URL, url);
	curl_easy_setopt(w->curl, CURLOPT_COPYPOSTFIELDS,
			 json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
	free(url);
	json_object_put(req);
	if (curl_multi_add_handle(w->multi, w->curl) != CURLM_OK)
		return WATCH_LOST;
	while (!done) {
		int running = 0, queued;
		CURLMsg *msg;

		if (curl_multi_perform(w->multi, &running) != CURLM_OK)
			break;
		while ((msg = curl_multi_info_read(w->multi, &queued)))
			if (msg->msg == CURLMSG_DONE)
				done = true;
		if (done || !running)
			break;
		if (atomic_load(&w->stopping)) {
			w->end = WATCH_STOPPED;
			break;
		}
		/* Accepting the connection is not enough: an endpoint that
		 * does not confirm the watch in time is as good as down. */
		if (!w->created && now_ms() - started_ms > w->timeout_ms)
			break;
		curl_multi_poll(w->multi, NULL, 0, WATCH_POLL_MS, NULL);
	}
	curl_multi_remove_handle(w->multi, w->curl);
	if (atomic_load(&w->stopping))
		return WATCH_STOPPED;
	return w->end;
}

/* Sleeps up to delay_ms; returns early (true) when stop is requested. */
static bool watch_sleep(struct etcd_watch *w, unsigned int delay_ms)
{
	struct timespec until;
	bool stop;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += delay_ms / 1000;
	until.tv_nsec += (long)(delay_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->lock);
	while (!(stop = atomic_load(&w->stopping)))
		if (pthread_cond_timedwait(&w->wake, &w->lock, &until) == ETIMEDOUT)
			break;
	stop = atomic_load(&w->stopping);
	pthread_mutex_unlock(&w->lock);
	return stop;
}

static void *watch_main(void *p)
{
	struct etcd_watch *w = p;
	unsigned int attempt = 0;

	while (!atomic_load(&w->stopping)) {
		enum watch_end end = watch_session(w);
		unsigned int cap_ms, delay_ms;

		if (end == WATCH_STOPPED)
			break;
		if (end == WATCH_RESUME_NOW) {
			attempt = 0;
			continue;
		}
		/* A stream that got going was healthy: start the backoff over. */
		if (w->created)
			attempt = 0;
		w->endpoint_idx = (w->endpoint_idx + 1) % w->n_endpoints;
		cap_ms = attempt >= 5 ? WATCH_BACKOFF_MAX_MS : WATCH_BACKOFF_MIN_MS << attempt;
		if (cap_ms > WATCH_BACKOFF_MAX_MS)
			cap_ms = WATCH_BACKOFF_MAX_MS;
		/* Jitter in [cap/2, cap]: replicas that lost etcd together
		 * must not come back in lockstep. */
		delay_ms = cap_ms / 2 + (unsigned int)rand_r(&w->rand_seed) % (cap_ms / 2 + 1);
		attempt++;
		if (watch_sleep(w, delay_ms))
			break;
	}
	return NULL;
}

static void watch_free(struct etcd_watch *w)
{
	if (w->multi)
		curl_multi_cleanup(w->multi);
	if (w->curl)
		curl_easy_cleanup(w->curl);
	curl_slist_free_all(w->headers);
	free_endpoints(w->endpoints, w->n_endpoints);
	free(w->key);
	free(w->range_end);
	free(w->line.data);
	free(w);
}

int etcd_watch_start(const struct etcd_config *cfg, const char *key, size_t key_len,
		     const char *range_end, size_t range_end_len,
		     int64_t start_revision, bool prev_kv, etcd_watch_cb cb,
		     void *arg, struct etcd_watch **ret)
{
	pthread_condattr_t ca;
	struct etcd_watch *w;
	int r;

	if (!cb || start_revision < 0)
		return -EINVAL;
	r = curl_ready();
	if (r < 0)
		return r;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	r = copy_endpoints(cfg, &w->endpoints);
	if (r < 0) {
		free(w);
		return r;
	}
	w->n_endpoints = cfg->n_endpoints;
	w->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : ETCD_DEFAULT_TIMEOUT_MS;
	w->prev_kv = prev_kv;
	w->cb = cb;
	w->arg = arg;
	w->next_revision = start_revision;
	w->rand_seed = (unsigned int)now_ms() ^ (unsigned int)(uintptr_t)w;
	atomic_init(&w->stopping, false);
	r = -ENOMEM;
	w->key = malloc(key_len ? key_len : 1);
	if (!w->key)
		goto out_free;
	memcpy(w->key, key, key_len);
	w->key_len = key_len;
	if (range_end) {
		w->range_end = malloc(range_end_len ? range_end_len : 1);
		if (!w->range_end)
			goto out_free;
		memcpy(w->range_end, range_end, range_end_len);
		w->range_end_len = range_end_len;
	}
	w->multi = curl_multi_init();
	w->curl = curl_easy_init();
	w->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (!w->multi || !w->curl || !w->headers)
		goto out_free;
	curl_easy_setopt(w->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, w->headers);
	curl_easy_setopt(w->curl, CURLOPT_WRITEFUNCTION, watch_write);
	curl_easy_setopt(w->curl, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(w->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)w->timeout_ms);
	/* The stream is idle for as long as nothing changes: only TCP
	 * keep-alive notices a peer that vanished without a FIN. */
	curl_easy_setopt(w->curl, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(w->curl, CURLOPT_TCP_KEEPIDLE, 10L);
	curl_easy_setopt(w->curl, CURLOPT_TCP_KEEPINTVL, 5L);

	r = pthread_mutex_init(&w->lock, NULL);
	if (r) {
		r = -r;
		goto out_free;
	}
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	r = pthread_cond_init(&w->wake, &ca);
	pthread_condattr_destroy(&ca);
	if (r) {
		r = -r;
		goto out_destroy_lock;
	}
	r = pthread_create(&w->thread, NULL, watch_main, w);
	if (r) {
		r = -r;
		goto out_destroy_cond;
	}
	*ret = w;
	return 0;

out_destroy_cond:
	pthread_cond_destroy(&w->wake);
out_destroy_lock:
	pthread_mutex_destroy(&w->lock);
out_free:
	watch_free(w);
	return r;
}

void etcd_watch_stop(struct etcd_watch *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	atomic_store(&w->stopping, true);
	pthread_cond_broadcast(&w->wake);
	pthread_mutex_unlock(&w->lock);
	curl_multi_wakeup(w->multi);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	watch_free(w);
}
