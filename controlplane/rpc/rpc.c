/* rpc.c - the gRPC C-core server behind rpc.h: one completion queue, one
 * thread draining it, a worker pool for every service callback.
 *
 * Invariants: the completion-queue thread only moves tags (re-requests
 * calls, starts the next write, queues jobs); service code runs on workers.
 * A stream's callbacks are serialized by its own strand flag. Each object
 * tied to a grpc_call counts in srv->live until the call is released, so
 * shutdown knows when the queue can be drained.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fileio.h"
#include "log.h"
#include "rpc_internal.h"

#define RPC_DEFAULT_LISTEN "127.0.0.1:7070"
#define RPC_MAX_SENDV_PARTS 8
#define RPC_IDENTITY_MAX 256
/* Liveness of idle node streams: a ping every 30 s, 10 s to answer. The
 * node agent (dataplane/sync) pings every 30 s on connections that carry
 * only an idle Sync stream, so the server must accept pings without data
 * at least that often: gRPC's server default is one per 5 minutes, and
 * after 2 strikes it sends GOAWAY too_many_pings and the node reconnects
 * and resyncs. 10 s leaves room for agents configured below 30 s. */
#define RPC_KEEPALIVE_TIME_MS 30000
#define RPC_KEEPALIVE_TIMEOUT_MS 10000
#define RPC_MIN_CLIENT_PING_MS 10000
/* grpc.tsi.max_frame_size: gRPC clamps it to [1024, 16384]. */
#define RPC_TSI_MAX_FRAME_BYTES 4096

enum tag_kind {
	TAG_NEW_CALL,        /* a registered method's call arrived */
	TAG_NEW_UNKNOWN,     /* a call to a method nobody registered */
	TAG_UNARY_DONE,
	TAG_UNKNOWN_DONE,
	TAG_STREAM_SEND,
	TAG_STREAM_RECV,
	TAG_STREAM_CLOSE,
	TAG_SHUTDOWN,
};

/* Embedded in the object it names; lives as long as that object. */
struct rpc_tag {
	enum tag_kind kind;
	void *obj;
};

/* A job for the worker pool, embedded in its object; queued at most once
 * at a time. */
struct rpc_job {
	struct rpc_job *next;
	void (*run)(struct rpc_job *job);
};

enum method_kind { METHOD_UNARY = 0, METHOD_SERVER_STREAM, METHOD_BIDI };

/* Owned by the server; lives until rpc_server_free. */
struct rpc_method {
	char *path;
	char *service;          /* "pkg.Svc" from the path */
	enum rpc_role role;
	enum method_kind kind;
	rpc_unary_fn fn;
	struct rpc_stream_ops ops;
	void *ctx;
	void *handle;           /* grpc_server_register_method */
};

struct rpc_server {
	grpc_server *server;
	grpc_completion_queue *cq;
	int port;
	bool tls;
	struct rpc_method **methods;
	size_t n_methods;
	char **tokens;
	size_t n_tokens;
	size_t stream_queue_max;
	unsigned n_workers;

	pthread_t cq_thread;
	pthread_t *workers;
	unsigned n_started_workers;
	bool cq_started;

	pthread_mutex_t mu;     /* guards what follows */
	pthread_cond_t cond;    /* live, shutdown_seen, jobs */
	bool started;
	bool shutting_down;
	bool shutdown_seen;     /* grpc's shutdown notification arrived */
	bool stopped;           /* shutdown has returned */
	size_t live;            /* call objects not yet released */
	struct rpc_stream *streams; /* open, not yet released */
	struct rpc_job *job_head, *job_tail;
	bool workers_stop;

	struct rpc_tag shutdown_tag;
	struct rpc_health *health;
	struct rpc_reflection *reflection;
};

/* A requested call slot for one registered method. Owned by the server;
 * lives until the call arrives (then its parts move on) or shutdown. */
struct rpc_incoming {
	struct rpc_tag tag;
	struct rpc_server *srv;
	struct rpc_method *m;
	grpc_call *call;
	gpr_timespec deadline;
	grpc_metadata_array md;
	grpc_byte_buffer *payload;
};

/* The caller as authenticated; strings owned here. */
struct rpc_peer_info {
	struct rpc_peer peer;
	char identity[RPC_IDENTITY_MAX];
	char *address;          /* gpr_malloc'ed */
	bool bad_token;
	bool cert;
};

/* One unary call. Owned by the server; lives until its reply batch
 * completes. */
struct rpc_ucall {
	struct rpc_tag done_tag;
	struct rpc_job job;
	struct rpc_server *srv;
	struct rpc_method *m;
	grpc_call *call;
	uint64_t deadline_ms;
	grpc_metadata_array md;
	grpc_byte_buffer *payload;
	grpc_byte_buffer *resp;
	grpc_slice details;
	int cancelled;
};

/* A call to an unregistered method: answered UNIMPLEMENTED at once by the
 * completion-queue thread. Lives until that batch completes. */
struct rpc_unknown {
	struct rpc_tag tag;
	struct rpc_server *srv;
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array md;
	grpc_slice status_details;
	int cancelled;
};

struct rpc_stream {
	struct rpc_server *srv;     /* NULL once released */
	struct rpc_method *m;
	grpc_call *call;            /* NULL once released */
	atomic_uint refs;
	struct rpc_stream *next, *prev; /* srv->streams, under srv->mu */
	bool shutdown_marked;       /* under srv->mu */

	struct rpc_peer_info pi;
	grpc_metadata_array md;
	grpc_byte_buffer *first;    /* server stream: the request */
	void *data;

	pthread_mutex_t mu;         /* guards everything below */
	/* send queue: a ring of byte buffers */
	grpc_byte_buffer **q;
	size_t q_head, q_len, q_cap;
	grpc_byte_buffer *sending;
	bool send_busy;
	bool md_sent;
	bool finish_req;
	bool status_sent;
	enum rpc_status fin_status;
	grpc_slice fin_details;
	/* receive */
	grpc_byte_buffer *recv_bb;
	bool recv_busy;
	bool recv_ready;            /* recv_bb holds a message to deliver */
	bool half_close_pending;
	bool half_closed;
	/* end */
	bool closed;                /* RECV_CLOSE_ON_SERVER completed */
	int cancelled;
	/* strand */
	bool open_pending;
	bool opened;
	bool close_pending;
	bool close_done;
	bool cb_scheduled;
	bool released;
	unsigned n_batches;

	struct rpc_job job;
	struct rpc_tag send_tag, recv_tag, close_tag;
};

/* Refcounted immutable bytes; freed by the last unref. */
struct rpc_buf {
	atomic_uint refs;
	size_t len;
	uint8_t *data;
	bool owned;                 /* data separately malloc'ed */
	uint8_t inline_data[];
};

static _Thread_local uint64_t tls_deadline_ms = UINT64_MAX;

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t rpc_call_deadline_ms(void)
{
	return tls_deadline_ms;
}

/* gpr clocks may start at process start: convert through "time left". */
static uint64_t deadline_to_mono_ms(gpr_timespec deadline)
{
	gpr_timespec left;
	int64_t left_ms;

	if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
		return UINT64_MAX;
	left = gpr_time_sub(deadline, gpr_now(deadline.clock_type));
	left_ms = left.tv_sec * 1000 + left.tv_nsec / 1000000;
	if (left_ms < 0)
		left_ms = 0;
	return mono_ms() + (uint64_t)left_ms;
}

const char *rpc_status_name(enum rpc_status status)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
		"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
		"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
	};

	if ((unsigned)status < sizeof(names) / sizeof(names[0]))
		return names[status];
	return "UNKNOWN";
}

/* ---- worker pool ----------------------------------------------------------- */

static void job_push(struct rpc_server *s, struct rpc_job *job)
{
	pthread_mutex_lock(&s->mu);
	job->next = NULL;
	if (s->job_tail)
		s->job_tail->next = job;
	else
		s->job_head = job;
	s->job_tail = job;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

static void *worker_main(void *arg)
{
	struct rpc_server *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct rpc_job *job = s->job_head;

		if (!job) {
			if (s->workers_stop)
				break;
			pthread_cond_wait(&s->cond, &s->mu);
			continue;
		}
		s->job_head = job->next;
		if (!s->job_head)
			s->job_tail = NULL;
		pthread_mutex_unlock(&s->mu);
		job->run(job);
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- live call accounting ---------------------------------------------------- */

static void live_add(struct rpc_server *s)
{
	pthread_mutex_lock(&s->mu);
	s->live++;
	pthread_mutex_unlock(&s->mu);
}

static void live_done(struct rpc_server *s)
{
	pthread_mutex_lock(&s->mu);
	s->live--;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

/* ---- files and credentials ----------------------------------------------------- */

/* Whole file as a NUL-terminated string; NULL (errno set) when it cannot
 * be read or holds more than max_len bytes. */
static char *read_file(const char *path, size_t max_len)
{
	char *buf = NULL;
	int r = fileio_read(path, max_len, &buf, NULL);

	if (r < 0)
		errno = -r;
	return buf;
}

/* Checks with OpenSSL what gRPC would only find out at the first
 * handshake: the certificate parses and the key belongs to it. */
static int check_key_pair(const char *cert_pem, const char *key_pem)
{
	BIO *cb = BIO_new_mem_buf(cert_pem, -1);
	BIO *kb = BIO_new_mem_buf(key_pem, -1);
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	int err = -EINVAL;

	if (!cb || !kb) {
		err = -ENOMEM;
		goto out;
	}
	x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
	k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
	if (x && k && X509_check_private_key(x, k) == 1)
		err = 0;
out:
	ERR_clear_error();
	X509_free(x);
	EVP_PKEY_free(k);
	BIO_free(cb);
	BIO_free(kb);
	return err;
}

static int check_ca(const char *ca_pem)
{
	BIO *b = BIO_new_mem_buf(ca_pem, -1);
	X509 *x;

	if (!b)
		return -ENOMEM;
	x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	ERR_clear_error();
	BIO_free(b);
	if (!x)
		return -EINVAL;
	X509_free(x);
	return 0;
}

static int load_tokens(struct rpc_server *s, const char *path)
{
	char *text = read_file(path, 1u << 20);
	char *line, *save = NULL;
	int err = 0;

	if (!text) {
		log_debug("rpc: cannot read token file", "path=%s errno=%d", path, errno);
		return -EINVAL;
	}
	s->tokens = calloc(RPC_MAX_TOKENS, sizeof(*s->tokens));
	if (!s->tokens) {
		err = -ENOMEM;
		goto out;
	}
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t len;

		while (*line == ' ' || *line == '\t')
			line++;
		len = strlen(line);
		while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
			line[--len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		if (len > RPC_MAX_TOKEN_LEN || s->n_tokens == RPC_MAX_TOKENS) {
			err = -EINVAL;
			goto out;
		}
		s->tokens[s->n_tokens] = strdup(line);
		if (!s->tokens[s->n_tokens]) {
			err = -ENOMEM;
			goto out;
		}
		s->n_tokens++;
	}
out:
	/* the file held secrets */
	explicit_bzero(text, strlen(text));
	free(text);
	return err;
}

static grpc_server_credentials *make_creds(struct rpc_server *s,
					   const struct rpc_server_config *cfg, int *err)
{
	grpc_server_credentials *creds = NULL;
	grpc_ssl_pem_key_cert_pair pair;
	grpc_ssl_client_certificate_request_type req = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
	char *cert = NULL, *key = NULL, *ca = NULL;

	*err = 0;
	if (!cfg->tls_cert_file && !cfg->tls_key_file) {
		if (cfg->tls_ca_file || cfg->require_client_cert) {
			*err = -EINVAL;
			return NULL;
		}
		creds = grpc_insecure_server_credentials_create();
		if (!creds)
			*err = -ENOMEM;
		return creds;
	}
	if (!cfg->tls_cert_file || !cfg->tls_key_file) {
		*err = -EINVAL;
		return NULL;
	}
	cert = read_file(cfg->tls_cert_file, 1u << 20);
	key = read_file(cfg->tls_key_file, 1u << 20);
	if (cfg->tls_ca_file)
		ca = read_file(cfg->tls_ca_file, 1u << 22);
	if (!cert || !key || (cfg->tls_ca_file && !ca)) {
		*err = -EINVAL;
		goto out;
	}
	*err = check_key_pair(cert, key);
	if (*err == 0 && ca)
		*err = check_ca(ca);
	if (*err)
		goto out;
	if (ca)
		req = cfg->require_client_cert ?
			GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY :
			GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
	else if (cfg->require_client_cert) {
		*err = -EINVAL;
		goto out;
	}
	pair.private_key = key;
	pair.cert_chain = cert;
	creds = grpc_ssl_server_credentials_create_ex(ca, &pair, 1, req, NULL);
	if (!creds)
		*err = -EINVAL;
	else
		s->tls = true;
out:
	if (key)
		explicit_bzero(key, strlen(key));
	free(cert);
	free(key);
	free(ca);
	return creds;
}

/* ---- server construction ----------------------------------------------------------- */

int rpc_server_new(const struct rpc_server_config *cfg, struct rpc_server **ret)
{
	struct rpc_server *s;
	grpc_server_credentials *creds;
	grpc_arg args[7];
	grpc_channel_args chargs;
	const char *listen;
	int err;

	if (!cfg || !ret)
		return -EINVAL;
	listen = cfg->listen ? cfg->listen : RPC_DEFAULT_LISTEN;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->stream_queue_max = cfg->stream_queue_max ? cfg->stream_queue_max :
		RPC_DEFAULT_STREAM_QUEUE;
	s->n_workers = cfg->n_workers ? cfg->n_workers : RPC_DEFAULT_WORKERS;
	s->shutdown_tag.kind = TAG_SHUTDOWN;
	s->shutdown_tag.obj = s;
	grpc_init();

	if (cfg->admin_token_file) {
		err = load_tokens(s, cfg->admin_token_file);
		if (err)
			goto out_free;
	}
	creds = make_creds(s, cfg, &err);
	if (!creds)
		goto out_free;

	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[0].value.integer = (int)(cfg->max_message_bytes ? cfg->max_message_bytes :
				      RPC_DEFAULT_MAX_MESSAGE_BYTES);
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = (char *)GRPC_ARG_KEEPALIVE_TIME_MS;
	args[1].value.integer = RPC_KEEPALIVE_TIME_MS;
	args[2].type = GRPC_ARG_INTEGER;
	args[2].key = (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS;
	args[2].value.integer = RPC_KEEPALIVE_TIMEOUT_MS;
	args[3].type = GRPC_ARG_INTEGER;
	args[3].key = (char *)GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
	args[3].value.integer = RPC_MIN_CLIENT_PING_MS;
	args[4].type = GRPC_ARG_INTEGER;
	args[4].key = (char *)GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS;
	args[4].value.integer = 1;
	/* two servers on one port would split the calls between them */
	args[5].type = GRPC_ARG_INTEGER;
	args[5].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
	args[5].value.integer = 0;
	/* Outbound TLS records of at most 4 KiB: the frame protector keeps a
	 * buffer of this size per connection, and the 16 KiB default costs
	 * ~5 KiB RSS per mTLS node (bench/fleet, N = 1000). Pushes are small;
	 * a large snapshot is just cut into more records. No-op in plaintext. */
	args[6].type = GRPC_ARG_INTEGER;
	args[6].key = (char *)GRPC_ARG_TSI_MAX_FRAME_SIZE;
	args[6].value.integer = RPC_TSI_MAX_FRAME_BYTES;
	chargs.num_args = sizeof(args) / sizeof(args[0]);
	chargs.args = args;

	s->server = grpc_server_create(&chargs, NULL);
	s->cq = grpc_completion_queue_create_for_next(NULL);
	if (!s->server || !s->cq) {
		grpc_server_credentials_release(creds);
		err = -ENOMEM;
		goto out_free;
	}
	grpc_server_register_completion_queue(s->server, s->cq, NULL);
	s->port = grpc_server_add_http2_port(s->server, listen, creds);
	grpc_server_credentials_release(creds);
	if (s->port <= 0) {
		err = -EADDRINUSE;
		goto out_free;
	}
	*ret = s;
	return 0;

out_free:
	rpc_server_free(s);
	return err;
}

int rpc_server_port(const struct rpc_server *s)
{
	return s->port;
}

static int add_method(struct rpc_server *s, const char *path, enum rpc_role role,
		      enum method_kind kind, rpc_unary_fn fn,
		      const struct rpc_stream_ops *ops, void *ctx)
{
	struct rpc_method *m, **nm;
	const char *slash;

	if (!s || !path || path[0] != '/' || role > RPC_ROLE_NODE)
		return -EINVAL;
	slash = strchr(path + 1, '/');
	if (!slash || slash == path + 1 || slash[1] == '\0' || strchr(slash + 1, '/'))
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	if (s->started) {
		pthread_mutex_unlock(&s->mu);
		return -EBUSY;
	}
	pthread_mutex_unlock(&s->mu);
	for (size_t i = 0; i < s->n_methods; i++)
		if (strcmp(s->methods[i]->path, path) == 0)
			return -EEXIST;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->path = strdup(path);
	m->service = strndup(path + 1, (size_t)(slash - path - 1));
	nm = realloc(s->methods, (s->n_methods + 1) * sizeof(*nm));
	if (!m->path || !m->service || !nm) {
		if (nm)
			s->methods = nm;
		free(m->path);
		free(m->service);
		free(m);
		return -ENOMEM;
	}
	s->methods = nm;
	m->role = role;
	m->kind = kind;
	m->fn = fn;
	if (ops)
		m->ops = *ops;
	m->ctx = ctx;
	m->handle = grpc_server_register_method(s->server, path, NULL,
		kind == METHOD_BIDI ? GRPC_SRM_PAYLOAD_NONE :
				      GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	if (!m->handle) {
		free(m->path);
		free(m->service);
		free(m);
		return -EEXIST;
	}
	s->methods[s->n_methods++] = m;
	return 0;
}

int rpc_server_add_unary(struct rpc_server *s, const char *path, enum rpc_role role,
			 rpc_unary_fn fn, void *ctx)
{
	if (!fn)
		return -EINVAL;
	return add_method(s, path, role, METHOD_UNARY, fn, NULL, ctx);
}

int rpc_server_add_stream(struct rpc_server *s, const char *path, enum rpc_role role,
			  enum rpc_stream_kind kind, const struct rpc_stream_ops *ops,
			  void *ctx)
{
	if (kind != RPC_STREAM_SERVER && kind != RPC_STREAM_BIDI)
		return -EINVAL;
	return add_method(s, path, role,
			  kind == RPC_STREAM_BIDI ? METHOD_BIDI : METHOD_SERVER_STREAM,
			  NULL, ops, ctx);
}

void rpc_server_each_service(const struct rpc_server *s,
			     void (*fn)(void *arg, const char *service), void *arg)
{
	for (size_t i = 0; i < s->n_methods; i++) {
		bool seen = false;

		for (size_t j = 0; j < i && !seen; j++)
			seen = strcmp(s->methods[j]->service, s->methods[i]->service) == 0;
		if (!seen)
			fn(arg, s->methods[i]->service);
	}
}

void rpc_server_set_builtin(struct rpc_server *s, struct rpc_health *h,
			    struct rpc_reflection *r)
{
	if (h)
		s->health = h;
	if (r)
		s->reflection = r;
}

struct rpc_health *rpc_server_health(const struct rpc_server *s)
{
	return s->health;
}

struct rpc_reflection *rpc_server_reflection(const struct rpc_server *s)
{
	return s->reflection;
}

/* ---- authentication ---------------------------------------------------------------- */

static bool token_matches(const struct rpc_server *s, const char *tok, size_t len)
{
	bool ok = false;

	/* compare against every token, in constant time per token */
	for (size_t i = 0; i < s->n_tokens; i++) {
		size_t tl = strlen(s->tokens[i]);

		if (tl == len && CRYPTO_memcmp(s->tokens[i], tok, len) == 0)
			ok = true;
	}
	return ok;
}

static void auth_token(const struct rpc_server *s, const grpc_metadata_array *md,
		       struct rpc_peer_info *pi)
{
	static const char bearer[] = "bearer ";

	for (size_t i = 0; i < md->count; i++) {
		const grpc_metadata *e = &md->metadata[i];
		const char *v;
		size_t vl;

		if (GRPC_SLICE_LENGTH(e->key) != 13 ||
		    strncasecmp((const char *)GRPC_SLICE_START_PTR(e->key), "authorization", 13))
			continue;
		v = (const char *)GRPC_SLICE_START_PTR(e->value);
		vl = GRPC_SLICE_LENGTH(e->value);
		if (vl > sizeof(bearer) - 1 && strncasecmp(v, bearer, sizeof(bearer) - 1) == 0 &&
		    token_matches(s, v + sizeof(bearer) - 1, vl - (sizeof(bearer) - 1)))
			pi->peer.admin = true;
		else
			pi->bad_token = true;
	}
}

/* The verified client certificate (gRPC's TLS layer checked it against
 * the CA): CN (else first DNS/URI SAN) as identity, OU=admin as admin. */
static void auth_cert(grpc_call *call, struct rpc_peer_info *pi)
{
	grpc_auth_context *ctx = grpc_call_auth_context(call);
	grpc_auth_property_iterator it;
	const grpc_auth_property *p;
	BIO *b = NULL;
	X509 *x = NULL;
	X509_NAME *subj;
	bool admin = false;
	int idx;

	if (!ctx)
		return;
	it = grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
	p = grpc_auth_property_iterator_next(&it);
	if (!p || !p->value || p->value_length == 0)
		goto out;
	b = BIO_new_mem_buf(p->value, (int)p->value_length);
	if (!b)
		goto out;
	x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	if (!x)
		goto out;
	subj = X509_get_subject_name(x);
	idx = -1;
	while ((idx = X509_NAME_get_index_by_NID(subj, NID_organizationalUnitName, idx)) >= 0) {
		ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));

		if (ASN1_STRING_length(d) == 5 && memcmp(ASN1_STRING_get0_data(d), "admin", 5) == 0)
			admin = true;
	}
	idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	if (idx >= 0) {
		ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
		int n = ASN1_STRING_length(d);

		if (n > 0 && (size_t)n < sizeof(pi->identity) &&
		    !memchr(ASN1_STRING_get0_data(d), '\0', (size_t)n)) {
			memcpy(pi->identity, ASN1_STRING_get0_data(d), (size_t)n);
			pi->identity[n] = '\0';
		}
	}
	if (!pi->identity[0]) {
		GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);

		for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
			GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
			ASN1_STRING *d;
			int n;

			if (g->type != GEN_DNS && g->type != GEN_URI)
				continue;
			d = g->type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
			n = ASN1_STRING_length(d);
			if (n > 0 && (size_t)n < sizeof(pi->identity) &&
			    !memchr(ASN1_STRING_get0_data(d), '\0', (size_t)n)) {
				memcpy(pi->identity, ASN1_STRING_get0_data(d), (size_t)n);
				pi->identity[n] = '\0';
				break;
			}
		}
		GENERAL_NAMES_free(sans);
	}
	if (!pi->identity[0])
		goto out;      /* a certificate that names nobody grants nothing */
	pi->cert = true;
	pi->peer.identity = pi->identity;
	if (admin)
		pi->peer.admin = true;
	else
		pi->peer.node = true;
out:
	ERR_clear_error();
	X509_free(x);
	BIO_free(b);
	grpc_auth_context_release(ctx);
}

/* Fills pi and returns RPC_OK when the caller may call m; else the status
 * to answer with (and *why). */
static enum rpc_status authenticate(const struct rpc_server *s, const struct rpc_method *m,
				    grpc_call *call, const grpc_metadata_array *md,
				    struct rpc_peer_info *pi, const char **why)
{
	bool has;

	memset(pi, 0, sizeof(*pi));
	pi->address = grpc_call_get_peer(call);
	pi->peer.address = pi->address;
	auth_token(s, md, pi);
	if (s->tls)
		auth_cert(call, pi);
	if (m->role == RPC_ROLE_NONE)
		return RPC_OK;
	if (pi->bad_token) {
		*why = "invalid bearer token";
		return RPC_UNAUTHENTICATED;
	}
	has = pi->peer.admin || pi->peer.node;
	if (!has) {
		*why = m->role == RPC_ROLE_ADMIN ?
			"an admin credential (bearer token or admin certificate) is required" :
			"a node certificate is required";
		return RPC_UNAUTHENTICATED;
	}
	if (m->role == RPC_ROLE_ADMIN && !pi->peer.admin) {
		*why = "admin role required";
		return RPC_PERMISSION_DENIED;
	}
	if (m->role == RPC_ROLE_NODE && !pi->peer.node) {
		*why = "node certificate required";
		return RPC_PERMISSION_DENIED;
	}
	return RPC_OK;
}

static void rpc_peer_info_done(struct rpc_peer_info *pi)
{
	if (pi->address)
		gpr_free(pi->address);
	pi->address = NULL;
}

/* Contiguous copy of a received message; NULL + errno. *len = 0 and a
 * non-NULL dummy for an empty message. */
static uint8_t *bb_to_bytes(grpc_byte_buffer *bb, size_t *len)
{
	grpc_byte_buffer_reader r;
	grpc_slice all;
	uint8_t *out;

	if (!grpc_byte_buffer_reader_init(&r, bb)) {
		errno = EBADMSG;
		return NULL;
	}
	all = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	*len = GRPC_SLICE_LENGTH(all);
	out = malloc(*len ? *len : 1);
	if (out)
		memcpy(out, GRPC_SLICE_START_PTR(all), *len);
	grpc_slice_unref(all);
	return out;
}

/* ---- requesting calls (completion-queue thread or start) ------------------------------ */

static int request_registered(struct rpc_server *s, struct rpc_method *m)
{
	struct rpc_incoming *in = calloc(1, sizeof(*in));
	grpc_call_error ce;

	if (!in)
		return -ENOMEM;
	in->tag.kind = TAG_NEW_CALL;
	in->tag.obj = in;
	in->srv = s;
	in->m = m;
	grpc_metadata_array_init(&in->md);
	live_add(s);
	ce = grpc_server_request_registered_call(s->server, m->handle, &in->call, &in->deadline,
		&in->md, m->kind == METHOD_BIDI ? NULL : &in->payload, s->cq, s->cq, &in->tag);
	if (ce != GRPC_CALL_OK) {
		grpc_metadata_array_destroy(&in->md);
		free(in);
		live_done(s);
		return -EIO;
	}
	return 0;
}

static int request_unknown(struct rpc_server *s)
{
	struct rpc_unknown *u = calloc(1, sizeof(*u));
	grpc_call_error ce;

	if (!u)
		return -ENOMEM;
	u->tag.kind = TAG_NEW_UNKNOWN;
	u->tag.obj = u;
	u->srv = s;
	grpc_call_details_init(&u->details);
	grpc_metadata_array_init(&u->md);
	live_add(s);
	ce = grpc_server_request_call(s->server, &u->call, &u->details, &u->md, s->cq, s->cq,
				      &u->tag);
	if (ce != GRPC_CALL_OK) {
		grpc_call_details_destroy(&u->details);
		grpc_metadata_array_destroy(&u->md);
		free(u);
		live_done(s);
		return -EIO;
	}
	return 0;
}

static void unknown_free(struct rpc_unknown *u)
{
	struct rpc_server *s = u->srv;

	if (u->call)
		grpc_call_unref(u->call);
	grpc_slice_unref(u->status_details);
	grpc_call_details_destroy(&u->details);
	grpc_metadata_array_destroy(&u->md);
	free(u);
	live_done(s);
}

static void on_unknown(struct rpc_unknown *u, bool ok)
{
	struct rpc_server *s = u->srv;
	grpc_op ops[3];
	char msg[320];
	int n;

	if (!ok) {
		unknown_free(u);
		return;
	}
	if (request_unknown(s))
		log_warn("rpc: cannot request the next unknown-method call", NULL);
	n = (int)GRPC_SLICE_LENGTH(u->details.method);
	if (n > 256)
		n = 256;
	snprintf(msg, sizeof(msg), "unknown method %.*s", n,
		 (const char *)GRPC_SLICE_START_PTR(u->details.method));
	u->status_details = grpc_slice_from_copied_string(msg);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
	ops[1].data.send_status_from_server.status_details = &u->status_details;
	ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[2].data.recv_close_on_server.cancelled = &u->cancelled;
	u->tag.kind = TAG_UNKNOWN_DONE;
	if (grpc_call_start_batch(u->call, ops, 3, &u->tag, NULL) != GRPC_CALL_OK)
		unknown_free(u);
}

/* ---- unary calls ------------------------------------------------------------------------ */

static void ucall_free(struct rpc_ucall *uc)
{
	struct rpc_server *s = uc->srv;

	if (uc->call)
		grpc_call_unref(uc->call);
	grpc_metadata_array_destroy(&uc->md);
	if (uc->payload)
		grpc_byte_buffer_destroy(uc->payload);
	if (uc->resp)
		grpc_byte_buffer_destroy(uc->resp);
	grpc_slice_unref(uc->details);
	free(uc);
	live_done(s);
}

/* Worker: authenticate, run the handler, send the answer. */
static void ucall_run(struct rpc_job *job)
{
	struct rpc_ucall *uc = (struct rpc_ucall *)((char *)job - offsetof(struct rpc_ucall, job));
	struct rpc_reply reply = { .status = RPC_OK };
	struct rpc_peer_info pi;
	const char *why = NULL;
	enum rpc_status st;
	grpc_op ops[4];
	size_t nops = 0;

	st = authenticate(uc->srv, uc->m, uc->call, &uc->md, &pi, &why);
	if (st != RPC_OK) {
		rpc_reply_error(&reply, st, "%s", why);
	} else if (!uc->payload) {
		rpc_reply_error(&reply, RPC_INVALID_ARGUMENT, "missing request message");
	} else if (uc->deadline_ms != UINT64_MAX && mono_ms() >= uc->deadline_ms) {
		rpc_reply_error(&reply, RPC_DEADLINE_EXCEEDED, "deadline passed before the call ran");
	} else {
		size_t len = 0;
		uint8_t *req = bb_to_bytes(uc->payload, &len);

		if (!req) {
			rpc_reply_error(&reply, RPC_INTERNAL, "cannot read the request");
		} else {
			tls_deadline_ms = uc->deadline_ms;
			uc->m->fn(uc->m->ctx, &pi.peer, req, len, &reply);
			tls_deadline_ms = UINT64_MAX;
			free(req);
		}
	}
	rpc_peer_info_done(&pi);
	if (reply.status == RPC_OK) {
		grpc_slice sl = grpc_slice_from_copied_buffer((const char *)reply.data, reply.len);

		uc->resp = grpc_raw_byte_buffer_create(&sl, 1);
		grpc_slice_unref(sl);
	}
	uc->details = reply.message ? grpc_slice_from_copied_string(reply.message) :
		grpc_empty_slice();
	free(reply.data);
	free(reply.message);

	memset(ops, 0, sizeof(ops));
	ops[nops++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (uc->resp) {
		ops[nops].op = GRPC_OP_SEND_MESSAGE;
		ops[nops++].data.send_message.send_message = uc->resp;
	}
	ops[nops].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[nops].data.send_status_from_server.status = (grpc_status_code)reply.status;
	ops[nops++].data.send_status_from_server.status_details = &uc->details;
	ops[nops].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[nops++].data.recv_close_on_server.cancelled = &uc->cancelled;
	uc->done_tag.kind = TAG_UNARY_DONE;
	uc->done_tag.obj = uc;
	if (grpc_call_start_batch(uc->call, ops, nops, &uc->done_tag, NULL) != GRPC_CALL_OK)
		ucall_free(uc);
}

/* ---- streams ----------------------------------------------------------------------------- */

static void stream_schedule_locked(struct rpc_stream *st);
static void stream_pump_locked(struct rpc_stream *st);

static void stream_free(struct rpc_stream *st)
{
	if (st->q) {
		for (size_t i = 0; i < st->q_len; i++)
			grpc_byte_buffer_destroy(st->q[(st->q_head + i) % st->q_cap]);
		free(st->q);
	}
	if (st->sending)
		grpc_byte_buffer_destroy(st->sending);
	if (st->recv_bb)
		grpc_byte_buffer_destroy(st->recv_bb);
	if (st->first)
		grpc_byte_buffer_destroy(st->first);
	grpc_metadata_array_destroy(&st->md);
	grpc_slice_unref(st->fin_details);
	rpc_peer_info_done(&st->pi);
	pthread_mutex_destroy(&st->mu);
	free(st);
}

void rpc_stream_ref(struct rpc_stream *st)
{
	atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
}

void rpc_stream_unref(struct rpc_stream *st)
{
	if (st && atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) == 1)
		stream_free(st);
}

/* For shutdown's walk: a reference unless the stream is already dying. */
static bool stream_tryref(struct rpc_stream *st)
{
	unsigned r = atomic_load_explicit(&st->refs, memory_order_relaxed);

	while (r != 0)
		if (atomic_compare_exchange_weak(&st->refs, &r, r + 1))
			return true;
	return false;
}

void rpc_stream_set_data(struct rpc_stream *st, void *data)
{
	st->data = data;
}

void *rpc_stream_data(const struct rpc_stream *st)
{
	return st->data;
}

const struct rpc_peer *rpc_stream_peer(const struct rpc_stream *st)
{
	return &st->pi.peer;
}

/* The adapter is done with the call: give it back to gRPC. Called with no
 * lock held, once, when the call is closed, the close callback has run and
 * no batch is in flight. */
static void stream_release(struct rpc_stream *st)
{
	struct rpc_server *s = st->srv;

	pthread_mutex_lock(&s->mu);
	if (st->prev)
		st->prev->next = st->next;
	else if (s->streams == st)
		s->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	st->next = st->prev = NULL;
	pthread_mutex_unlock(&s->mu);
	grpc_call_unref(st->call);
	pthread_mutex_lock(&st->mu);
	st->call = NULL;
	st->srv = NULL;
	pthread_mutex_unlock(&st->mu);
	live_done(s);
	rpc_stream_unref(st);       /* the adapter's own reference */
}

static bool stream_should_release_locked(struct rpc_stream *st)
{
	if (st->released || !st->close_done || st->n_batches || st->cb_scheduled)
		return false;
	st->released = true;
	return true;
}

/* Starts one batch on the stream's call; the batch holds a reference. */
static bool stream_batch_locked(struct rpc_stream *st, grpc_op *ops, size_t n,
				struct rpc_tag *tag)
{
	rpc_stream_ref(st);
	st->n_batches++;
	if (grpc_call_start_batch(st->call, ops, n, tag, NULL) != GRPC_CALL_OK) {
		st->n_batches--;
		/* cannot be the last reference: the adapter holds one */
		atomic_fetch_sub(&st->refs, 1);
		return false;
	}
	return true;
}

/* Starts the next write if none is in flight: initial metadata first,
 * then messages in order, then the status once the queue is empty. */
static void stream_pump_locked(struct rpc_stream *st)
{
	grpc_op ops[3];
	size_t n = 0;

	if (st->send_busy || st->closed || st->status_sent || !st->call)
		return;
	memset(ops, 0, sizeof(ops));
	if (!st->md_sent)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (st->q_len) {
		st->sending = st->q[st->q_head];
		st->q_head = (st->q_head + 1) % st->q_cap;
		st->q_len--;
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = st->sending;
	}
	if (st->finish_req && st->q_len == 0) {
		ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
		ops[n].data.send_status_from_server.status = (grpc_status_code)st->fin_status;
		ops[n++].data.send_status_from_server.status_details = &st->fin_details;
	}
	if (n == 0)
		return;
	if (!stream_batch_locked(st, ops, n, &st->send_tag)) {
		if (st->sending) {
			grpc_byte_buffer_destroy(st->sending);
			st->sending = NULL;
		}
		return;
	}
	st->send_busy = true;
	st->md_sent = true;
	if (ops[n - 1].op == GRPC_OP_SEND_STATUS_FROM_SERVER)
		st->status_sent = true;
}

static int stream_enqueue(struct rpc_stream *st, grpc_byte_buffer *bb)
{
	int err = 0;

	pthread_mutex_lock(&st->mu);
	if (st->closed || st->finish_req || !st->call) {
		err = -EPIPE;
		goto out;
	}
	if (st->q_len + (st->sending ? 1 : 0) >= st->srv->stream_queue_max) {
		err = -EAGAIN;
		goto out;
	}
	if (st->q_len == st->q_cap) {
		size_t ncap = st->q_cap ? st->q_cap * 2 : 4;
		grpc_byte_buffer **nq = malloc(ncap * sizeof(*nq));

		if (!nq) {
			err = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < st->q_len; i++)
			nq[i] = st->q[(st->q_head + i) % st->q_cap];
		free(st->q);
		st->q = nq;
		st->q_cap = ncap;
		st->q_head = 0;
	}
	st->q[(st->q_head + st->q_len) % st->q_cap] = bb;
	st->q_len++;
	bb = NULL;
	stream_pump_locked(st);
out:
	pthread_mutex_unlock(&st->mu);
	if (bb)
		grpc_byte_buffer_destroy(bb);
	return err;
}

int rpc_stream_send(struct rpc_stream *st, const void *data, size_t len)
{
	grpc_slice sl = grpc_slice_from_copied_buffer(data, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);

	grpc_slice_unref(sl);
	if (!bb)
		return -ENOMEM;
	return stream_enqueue(st, bb);
}

static void buf_slice_unref(void *p)
{
	rpc_buf_unref(p);
}

int rpc_stream_sendv(struct rpc_stream *st, struct rpc_buf *const *parts, size_t n)
{
	grpc_slice sl[RPC_MAX_SENDV_PARTS];
	grpc_byte_buffer *bb;

	if (n == 0 || n > RPC_MAX_SENDV_PARTS)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		rpc_buf_ref(parts[i]);
		/* a zero-length slice must not point at the data: gRPC would
		 * take it inline and never call the destroy function */
		if (parts[i]->len == 0) {
			rpc_buf_unref(parts[i]);
			sl[i] = grpc_empty_slice();
		} else {
			sl[i] = grpc_slice_new_with_user_data(parts[i]->data, parts[i]->len,
							      buf_slice_unref, parts[i]);
		}
	}
	bb = grpc_raw_byte_buffer_create(sl, n);
	for (size_t i = 0; i < n; i++)
		grpc_slice_unref(sl[i]);
	if (!bb)
		return -ENOMEM;
	return stream_enqueue(st, bb);
}

size_t rpc_stream_queued(struct rpc_stream *st)
{
	size_t n;

	pthread_mutex_lock(&st->mu);
	n = st->q_len + (st->sending ? 1 : 0);
	pthread_mutex_unlock(&st->mu);
	return n;
}

int rpc_stream_finish(struct rpc_stream *st, enum rpc_status status, const char *message)
{
	int err = 0;

	pthread_mutex_lock(&st->mu);
	if (st->closed || !st->call) {
		err = -EPIPE;
	} else if (st->finish_req) {
		err = -EALREADY;
	} else {
		st->finish_req = true;
		st->fin_status = status;
		grpc_slice_unref(st->fin_details);
		st->fin_details = message ? grpc_slice_from_copied_string(message) :
			grpc_empty_slice();
		stream_pump_locked(st);
	}
	pthread_mutex_unlock(&st->mu);
	return err;
}

static void stream_recv_locked(struct rpc_stream *st)
{
	grpc_op op;

	if (st->recv_busy || st->recv_ready || st->half_closed || st->closed || !st->call)
		return;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &st->recv_bb;
	if (stream_batch_locked(st, &op, 1, &st->recv_tag))
		st->recv_busy = true;
}

/* Worker: runs the stream's pending callbacks in order. */
static void stream_strand(struct rpc_job *job)
{
	struct rpc_stream *st = (struct rpc_stream *)((char *)job - offsetof(struct rpc_stream, job));
	const struct rpc_method *m = st->m;
	bool release;

	pthread_mutex_lock(&st->mu);
	for (;;) {
		if (st->open_pending) {
			const char *why = NULL;
			enum rpc_status status;
			uint8_t *req = NULL;
			size_t len = 0;

			st->open_pending = false;
			pthread_mutex_unlock(&st->mu);
			status = authenticate(st->srv, m, st->call, &st->md, &st->pi, &why);
			if (status != RPC_OK) {
				rpc_stream_finish(st, status, why);
			} else if (m->kind == METHOD_SERVER_STREAM && !st->first) {
				rpc_stream_finish(st, RPC_INVALID_ARGUMENT, "missing request message");
			} else if (m->kind == METHOD_SERVER_STREAM &&
				   !(req = bb_to_bytes(st->first, &len))) {
				rpc_stream_finish(st, RPC_INTERNAL, "cannot read the request");
			} else {
				if (m->ops.open)
					m->ops.open(m->ctx, st, &st->pi.peer, req,
						    m->kind == METHOD_SERVER_STREAM ? len : 0);
			}
			free(req);
			pthread_mutex_lock(&st->mu);
			st->opened = true;
			stream_pump_locked(st);     /* initial metadata at least */
			if (m->kind == METHOD_BIDI && !st->finish_req)
				stream_recv_locked(st);
			continue;
		}
		if (st->recv_ready) {
			grpc_byte_buffer *bb = st->recv_bb;
			uint8_t *msg;
			size_t len = 0;

			st->recv_bb = NULL;
			st->recv_ready = false;
			pthread_mutex_unlock(&st->mu);
			msg = bb_to_bytes(bb, &len);
			grpc_byte_buffer_destroy(bb);
			if (!msg)
				rpc_stream_finish(st, RPC_INTERNAL, "cannot read a message");
			else if (m->ops.recv)
				m->ops.recv(m->ctx, st, msg, len);
			free(msg);
			pthread_mutex_lock(&st->mu);
			stream_recv_locked(st);
			continue;
		}
		if (st->half_close_pending) {
			st->half_close_pending = false;
			pthread_mutex_unlock(&st->mu);
			if (m->ops.recv)
				m->ops.recv(m->ctx, st, NULL, 0);
			pthread_mutex_lock(&st->mu);
			continue;
		}
		if (st->close_pending && st->opened && !st->recv_busy) {
			enum rpc_status status = st->cancelled || !st->status_sent ?
				RPC_CANCELLED : st->fin_status;

			st->close_pending = false;
			pthread_mutex_unlock(&st->mu);
			if (m->ops.close)
				m->ops.close(m->ctx, st, status);
			pthread_mutex_lock(&st->mu);
			st->close_done = true;
			continue;
		}
		break;
	}
	st->cb_scheduled = false;
	release = stream_should_release_locked(st);
	pthread_mutex_unlock(&st->mu);
	if (release)
		stream_release(st);
	rpc_stream_unref(st);       /* the strand's reference */
}

static void stream_schedule_locked(struct rpc_stream *st)
{
	if (st->cb_scheduled)
		return;
	st->cb_scheduled = true;
	rpc_stream_ref(st);
	job_push(st->srv, &st->job);
}

/* No memory for the call's state: end it at once and drop the incoming. */
static void incoming_refuse_oom(struct rpc_server *s, struct rpc_incoming *in)
{
	grpc_call_cancel_with_status(in->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory",
				     NULL);
	grpc_call_unref(in->call);
	grpc_metadata_array_destroy(&in->md);
	if (in->payload)
		grpc_byte_buffer_destroy(in->payload);
	free(in);
	live_done(s);
}

static void stream_accept(struct rpc_server *s, struct rpc_incoming *in)
{
	struct rpc_stream *st = calloc(1, sizeof(*st));
	grpc_op op;

	if (!st) {
		incoming_refuse_oom(s, in);
		return;
	}
	pthread_mutex_init(&st->mu, NULL);
	atomic_init(&st->refs, 1);
	st->srv = s;
	st->m = in->m;
	st->call = in->call;
	st->md = in->md;            /* moved */
	st->first = in->payload;
	st->fin_details = grpc_empty_slice();
	st->job.run = stream_strand;
	st->send_tag = (struct rpc_tag){ TAG_STREAM_SEND, st };
	st->recv_tag = (struct rpc_tag){ TAG_STREAM_RECV, st };
	st->close_tag = (struct rpc_tag){ TAG_STREAM_CLOSE, st };
	free(in);                   /* its live count moves to the stream */

	pthread_mutex_lock(&s->mu);
	st->next = s->streams;
	if (s->streams)
		s->streams->prev = st;
	s->streams = st;
	pthread_mutex_unlock(&s->mu);

	pthread_mutex_lock(&st->mu);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &st->cancelled;
	if (!stream_batch_locked(st, &op, 1, &st->close_tag)) {
		/* no close will ever come: behave as if it had */
		st->closed = true;
		st->cancelled = 1;
		st->close_pending = true;
	}
	st->open_pending = true;
	stream_schedule_locked(st);
	pthread_mutex_unlock(&st->mu);
}

/* Completion-queue thread: one stream tag completed. */
static void on_stream_tag(struct rpc_tag *tag, bool ok)
{
	struct rpc_stream *st = tag->obj;
	bool release;

	pthread_mutex_lock(&st->mu);
	st->n_batches--;
	switch (tag->kind) {
	case TAG_STREAM_SEND:
		st->send_busy = false;
		if (st->sending) {
			grpc_byte_buffer_destroy(st->sending);
			st->sending = NULL;
		}
		if (ok)
			stream_pump_locked(st);
		break;
	case TAG_STREAM_RECV:
		st->recv_busy = false;
		if (ok && st->recv_bb) {
			st->recv_ready = true;
		} else {
			if (st->recv_bb) {
				grpc_byte_buffer_destroy(st->recv_bb);
				st->recv_bb = NULL;
			}
			st->half_closed = true;
			if (ok && !st->closed)
				st->half_close_pending = true;
		}
		stream_schedule_locked(st);
		break;
	case TAG_STREAM_CLOSE:
		st->closed = true;
		/* nothing queued will ever be written */
		for (size_t i = 0; i < st->q_len; i++)
			grpc_byte_buffer_destroy(st->q[(st->q_head + i) % st->q_cap]);
		st->q_len = 0;
		st->close_pending = true;
		stream_schedule_locked(st);
		break;
	default:
		break;
	}
	release = stream_should_release_locked(st);
	pthread_mutex_unlock(&st->mu);
	if (release)
		stream_release(st);
	rpc_stream_unref(st);       /* the batch's reference */
}

/* ---- the completion-queue thread ---------------------------------------------------------- */

static void on_new_call(struct rpc_incoming *in, bool ok)
{
	struct rpc_server *s = in->srv;
	struct rpc_method *m = in->m;
	struct rpc_ucall *uc;
	bool stopping;

	if (!ok) {
		grpc_metadata_array_destroy(&in->md);
		if (in->payload)
			grpc_byte_buffer_destroy(in->payload);
		free(in);
		live_done(s);
		return;
	}
	pthread_mutex_lock(&s->mu);
	stopping = s->shutting_down;
	pthread_mutex_unlock(&s->mu);
	if (!stopping && request_registered(s, m))
		log_warn("rpc: cannot request the next call", "method=%s", m->path);
	if (m->kind != METHOD_UNARY) {
		stream_accept(s, in);
		return;
	}
	uc = calloc(1, sizeof(*uc));
	if (!uc) {
		incoming_refuse_oom(s, in);
		return;
	}
	uc->srv = s;
	uc->m = m;
	uc->call = in->call;
	uc->md = in->md;
	uc->payload = in->payload;
	uc->deadline_ms = deadline_to_mono_ms(in->deadline);
	uc->details = grpc_empty_slice();
	uc->job.run = ucall_run;
	free(in);
	job_push(s, &uc->job);
}

static void *cq_main(void *arg)
{
	struct rpc_server *s = arg;

	for (;;) {
		grpc_event ev = grpc_completion_queue_next(s->cq,
			gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		struct rpc_tag *tag;

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		tag = ev.tag;
		switch (tag->kind) {
		case TAG_NEW_CALL:
			on_new_call(tag->obj, ev.success);
			break;
		case TAG_NEW_UNKNOWN:
			on_unknown(tag->obj, ev.success);
			break;
		case TAG_UNARY_DONE:
			ucall_free(tag->obj);
			break;
		case TAG_UNKNOWN_DONE:
			unknown_free(tag->obj);
			break;
		case TAG_STREAM_SEND:
		case TAG_STREAM_RECV:
		case TAG_STREAM_CLOSE:
			on_stream_tag(tag, ev.success);
			break;
		case TAG_SHUTDOWN:
			pthread_mutex_lock(&s->mu);
			s->shutdown_seen = true;
			pthread_cond_broadcast(&s->cond);
			pthread_mutex_unlock(&s->mu);
			break;
		}
	}
	return NULL;
}

/* ---- start and stop ---------------------------------------------------------------------------- */

int rpc_server_start(struct rpc_server *s)
{
	int err;

	pthread_mutex_lock(&s->mu);
	if (s->started) {
		pthread_mutex_unlock(&s->mu);
		return -EBUSY;
	}
	s->started = true;
	pthread_mutex_unlock(&s->mu);
	if (s->health)
		rpc_health_seed(s->health);
	s->workers = calloc(s->n_workers, sizeof(*s->workers));
	if (!s->workers)
		return -ENOMEM;
	for (unsigned i = 0; i < s->n_workers; i++) {
		err = -pthread_create(&s->workers[i], NULL, worker_main, s);
		if (err)
			return err;     /* shutdown joins those that started */
		s->n_started_workers++;
	}
	grpc_server_start(s->server);
	err = -pthread_create(&s->cq_thread, NULL, cq_main, s);
	if (err)
		return err;
	s->cq_started = true;
	for (size_t i = 0; i < s->n_methods; i++)
		if (request_registered(s, s->methods[i]))
			return -ENOMEM;
	if (request_unknown(s))
		return -ENOMEM;
	return 0;
}

static void finish_all_streams(struct rpc_server *s)
{
	struct rpc_stream *batch[64];
	size_t n;

	/* finish takes each stream's lock, and a stream's lock is held while
	 * it takes srv->mu: collect references under srv->mu, finish after */
	do {
		n = 0;
		pthread_mutex_lock(&s->mu);
		for (struct rpc_stream *st = s->streams; st && n < 64; st = st->next) {
			if (st->shutdown_marked)
				continue;
			st->shutdown_marked = true;
			if (stream_tryref(st))
				batch[n++] = st;
		}
		pthread_mutex_unlock(&s->mu);
		for (size_t i = 0; i < n; i++) {
			rpc_stream_finish(batch[i], RPC_UNAVAILABLE, "server shutting down");
			rpc_stream_unref(batch[i]);
		}
	} while (n == 64);
}

static void wait_until(struct rpc_server *s, uint64_t until_ms, bool need_live_zero)
{
	pthread_mutex_lock(&s->mu);
	while (!s->shutdown_seen || (need_live_zero && s->live != 0)) {
		struct timespec ts;
		uint64_t now = mono_ms(), wait_ms;

		if (until_ms != UINT64_MAX && now >= until_ms)
			break;
		wait_ms = until_ms == UINT64_MAX ? 1000 : until_ms - now;
		if (wait_ms > 1000)
			wait_ms = 1000;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(wait_ms / 1000);
		ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->cond, &s->mu, &ts);
	}
	pthread_mutex_unlock(&s->mu);
}

void rpc_server_shutdown(struct rpc_server *s, uint64_t grace_ms)
{
	bool started;

	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	started = s->started;
	if (s->stopped || s->shutting_down || !s->server) {
		pthread_mutex_unlock(&s->mu);
		return;
	}
	s->shutting_down = true;
	pthread_mutex_unlock(&s->mu);

	grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
	if (s->cq_started) {
		finish_all_streams(s);
		wait_until(s, mono_ms() + grace_ms, true);
		grpc_server_cancel_all_calls(s->server);
		wait_until(s, UINT64_MAX, true);
	} else {
		/* never started: no thread drains the queue, do it here */
		for (;;) {
			grpc_event ev = grpc_completion_queue_next(s->cq,
				gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
					     gpr_time_from_millis(100, GPR_TIMESPAN)), NULL);

			if (ev.type == GRPC_OP_COMPLETE && ev.tag == &s->shutdown_tag)
				break;
			if (ev.type == GRPC_QUEUE_SHUTDOWN)
				break;
		}
	}
	grpc_completion_queue_shutdown(s->cq);
	if (s->cq_started)
		pthread_join(s->cq_thread, NULL);
	else
		while (grpc_completion_queue_next(s->cq, gpr_inf_past(GPR_CLOCK_REALTIME),
						  NULL).type != GRPC_QUEUE_SHUTDOWN)
			;

	pthread_mutex_lock(&s->mu);
	s->workers_stop = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
	for (unsigned i = 0; i < s->n_started_workers; i++)
		pthread_join(s->workers[i], NULL);
	s->n_started_workers = 0;
	(void)started;

	pthread_mutex_lock(&s->mu);
	s->stopped = true;
	pthread_mutex_unlock(&s->mu);
}

void rpc_server_free(struct rpc_server *s)
{
	if (!s)
		return;
	if (s->server) {
		rpc_server_shutdown(s, 0);
		grpc_server_destroy(s->server);
	}
	if (s->cq)
		grpc_completion_queue_destroy(s->cq);
	rpc_health_free(s->health);
	rpc_reflection_free(s->reflection);
	for (size_t i = 0; i < s->n_methods; i++) {
		free(s->methods[i]->path);
		free(s->methods[i]->service);
		free(s->methods[i]);
	}
	free(s->methods);
	for (size_t i = 0; i < s->n_tokens; i++) {
		explicit_bzero(s->tokens[i], strlen(s->tokens[i]));
		free(s->tokens[i]);
	}
	free(s->tokens);
	free(s->workers);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->mu);
	free(s);
	grpc_shutdown();
}

/* ---- rpc_buf --------------------------------------------------------------------------------------- */

struct rpc_buf *rpc_buf_new(const void *data, size_t len)
{
	struct rpc_buf *b = malloc(sizeof(*b) + (len ? len : 1));

	if (!b) {
		errno = ENOMEM;
		return NULL;
	}
	atomic_init(&b->refs, 1);
	b->len = len;
	b->data = b->inline_data;
	b->owned = false;
	if (len)
		memcpy(b->inline_data, data, len);
	return b;
}

struct rpc_buf *rpc_buf_take(void *data, size_t len)
{
	struct rpc_buf *b = malloc(sizeof(*b));

	if (!b) {
		errno = ENOMEM;
		return NULL;
	}
	atomic_init(&b->refs, 1);
	b->len = len;
	b->data = data;
	b->owned = true;
	return b;
}

void rpc_buf_ref(struct rpc_buf *b)
{
	atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void rpc_buf_unref(struct rpc_buf *b)
{
	if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (b->owned)
		free(b->data);
	free(b);
}

const uint8_t *rpc_buf_data(const struct rpc_buf *b)
{
	return b->data;
}

size_t rpc_buf_len(const struct rpc_buf *b)
{
	return b->len;
}
