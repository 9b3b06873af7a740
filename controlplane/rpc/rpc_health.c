/* rpc_health.c - grpc.health.v1.Health on the adapter's own API: Check
 * (unary) and Watch (server stream of status changes).
 *
 * Invariant: a watcher has been sent the current status of its service,
 * or has a send of it queued, or its stream is ending (a full queue
 * finishes the stream: a watcher that cannot keep up must re-watch).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "rpc_internal.h"

#define HEALTH_SERVICE_MAX_LEN 256

/* One service's status. Owned by rpc_health; lives until it is freed. */
struct health_entry {
	char *service;
	enum rpc_health_status status;
};

/* One Watch call. Owned by rpc_health (holds a stream reference); lives
 * until the stream's close callback. */
struct health_watcher {
	struct health_watcher *next;
	struct rpc_stream *st;
	char *service;
	int last_sent;          /* serving status last queued, -1 none */
};

/* Owned by the server; lives until rpc_server_free. */
struct rpc_health {
	struct rpc_server *srv;
	pthread_mutex_t mu;     /* guards entries and watchers */
	struct health_entry *entries;
	size_t n_entries;
	struct health_watcher *watchers;
};

/* Serving status of a service for the wire; SERVICE_UNKNOWN when unset. */
static int status_locked(const struct rpc_health *h, const char *service)
{
	for (size_t i = 0; i < h->n_entries; i++)
		if (strcmp(h->entries[i].service, service) == 0)
			return (int)h->entries[i].status;
	return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
}

static int encode_status(int status, uint8_t *buf, size_t cap, size_t *len)
{
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

	resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
	*len = grpc__health__v1__health_check_response__get_packed_size(&resp);
	if (*len > cap)
		return -ENOBUFS;
	grpc__health__v1__health_check_response__pack(&resp, buf);
	return 0;
}

/* Queues the status for one watcher if it changed. Under h->mu. */
static void notify_locked(struct health_watcher *w, int status)
{
	uint8_t buf[16];
	size_t len;
	int err;

	if (w->last_sent == status || encode_status(status, buf, sizeof(buf), &len))
		return;
	err = rpc_stream_send(w->st, buf, len);
	if (err == 0) {
		w->last_sent = status;
	} else if (err == -EAGAIN) {
		/* a watcher that cannot keep up would miss a change: end it */
		rpc_stream_finish(w->st, RPC_RESOURCE_EXHAUSTED, "health watcher too slow");
	}
}

static int set_locked(struct rpc_health *h, const char *service, enum rpc_health_status status)
{
	struct health_entry *e = NULL;

	for (size_t i = 0; i < h->n_entries && !e; i++)
		if (strcmp(h->entries[i].service, service) == 0)
			e = &h->entries[i];
	if (!e) {
		struct health_entry *ne = realloc(h->entries, (h->n_entries + 1) * sizeof(*ne));
		char *name = strdup(service);

		if (ne)
			h->entries = ne;
		if (!ne || !name) {
			free(name);
			return -ENOMEM;
		}
		e = &h->entries[h->n_entries++];
		e->service = name;
	}
	e->status = status;
	for (struct health_watcher *w = h->watchers; w; w = w->next)
		if (strcmp(w->service, service) == 0)
			notify_locked(w, (int)status);
	return 0;
}

int rpc_health_set(struct rpc_health *h, const char *service, enum rpc_health_status status)
{
	int err;

	if (!h)
		return -ENOENT;
	if (status != RPC_HEALTH_SERVING && status != RPC_HEALTH_NOT_SERVING)
		return -EINVAL;
	pthread_mutex_lock(&h->mu);
	err = set_locked(h, service ? service : "", status);
	pthread_mutex_unlock(&h->mu);
	return err;
}

int rpc_health_set_all(struct rpc_health *h, enum rpc_health_status status)
{
	int err = 0;

	if (!h)
		return -ENOENT;
	pthread_mutex_lock(&h->mu);
	if (status_locked(h, "") == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN)
		err = set_locked(h, "", status);
	for (size_t i = 0; i < h->n_entries && !err; i++)
		err = set_locked(h, h->entries[i].service, status);
	pthread_mutex_unlock(&h->mu);
	return err;
}

static void seed_one(void *arg, const char *service)
{
	struct rpc_health *h = arg;

	if (status_locked(h, service) ==
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN &&
	    set_locked(h, service, RPC_HEALTH_SERVING))
		log_warn("rpc: cannot add health entry", "service=%s", service);
}

void rpc_health_seed(struct rpc_health *h)
{
	pthread_mutex_lock(&h->mu);
	seed_one(h, "");
	rpc_server_each_service(h->srv, seed_one, h);
	pthread_mutex_unlock(&h->mu);
}

/* Decodes a HealthCheckRequest; the service name is copied into out. */
static int decode_request(const uint8_t *req, size_t len, char *out, size_t cap)
{
	Grpc__Health__V1__HealthCheckRequest *m =
		grpc__health__v1__health_check_request__unpack(NULL, len, req);
	size_t n;

	if (!m)
		return -EBADMSG;
	n = strlen(m->service);
	if (n >= cap) {
		grpc__health__v1__health_check_request__free_unpacked(m, NULL);
		return -ENAMETOOLONG;
	}
	memcpy(out, m->service, n + 1);
	grpc__health__v1__health_check_request__free_unpacked(m, NULL);
	return 0;
}

static void health_check(void *ctx, const struct rpc_peer *peer, const uint8_t *req,
			 size_t len, struct rpc_reply *reply)
{
	struct rpc_health *h = ctx;
	char service[HEALTH_SERVICE_MAX_LEN];
	uint8_t buf[16];
	int status;

	(void)peer;
	if (decode_request(req, len, service, sizeof(service))) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT, "bad HealthCheckRequest");
		return;
	}
	pthread_mutex_lock(&h->mu);
	status = status_locked(h, service);
	pthread_mutex_unlock(&h->mu);
	if (status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN) {
		rpc_reply_error(reply, RPC_NOT_FOUND, "unknown service '%s'", service);
		return;
	}
	if (encode_status(status, buf, sizeof(buf), &reply->len) ||
	    !(reply->data = malloc(reply->len ? reply->len : 1))) {
		rpc_reply_error(reply, RPC_INTERNAL, "out of memory");
		return;
	}
	memcpy(reply->data, buf, reply->len);
	reply->status = RPC_OK;
}

static void watch_open(void *ctx, struct rpc_stream *st, const struct rpc_peer *peer,
		       const uint8_t *req, size_t len)
{
	struct rpc_health *h = ctx;
	char service[HEALTH_SERVICE_MAX_LEN];
	struct health_watcher *w;

	(void)peer;
	if (decode_request(req, len, service, sizeof(service))) {
		rpc_stream_finish(st, RPC_INVALID_ARGUMENT, "bad HealthCheckRequest");
		return;
	}
	w = calloc(1, sizeof(*w));
	if (w)
		w->service = strdup(service);
	if (!w || !w->service) {
		free(w);
		rpc_stream_finish(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	rpc_stream_ref(st);
	w->st = st;
	w->last_sent = -1;
	rpc_stream_set_data(st, w);
	pthread_mutex_lock(&h->mu);
	w->next = h->watchers;
	h->watchers = w;
	notify_locked(w, status_locked(h, service));
	pthread_mutex_unlock(&h->mu);
}

static void watch_close(void *ctx, struct rpc_stream *st, enum rpc_status status)
{
	struct rpc_health *h = ctx;
	struct health_watcher *w = rpc_stream_data(st), **pp;

	(void)status;
	if (!w)
		return;
	pthread_mutex_lock(&h->mu);
	for (pp = &h->watchers; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	pthread_mutex_unlock(&h->mu);
	rpc_stream_set_data(st, NULL);
	rpc_stream_unref(w->st);
	free(w->service);
	free(w);
}

int rpc_health_new(struct rpc_server *s, struct rpc_health **ret)
{
	static const struct rpc_stream_ops watch_ops = {
		.open = watch_open,
		.close = watch_close,
	};
	struct rpc_health *h = calloc(1, sizeof(*h));
	int err;

	if (!h)
		return -ENOMEM;
	h->srv = s;
	pthread_mutex_init(&h->mu, NULL);
	err = rpc_server_add_unary(s, "/grpc.health.v1.Health/Check", RPC_ROLE_NONE,
				   health_check, h);
	if (!err)
		err = rpc_server_add_stream(s, "/grpc.health.v1.Health/Watch", RPC_ROLE_NONE,
					    RPC_STREAM_SERVER, &watch_ops, h);
	if (err) {
		/* a method registered already points at h: keep it alive with
		 * the server rather than free it under a registered handler */
		rpc_server_set_builtin(s, h, NULL);
		return err;
	}
	*ret = h;
	return 0;
}

void rpc_health_free(struct rpc_health *h)
{
	if (!h)
		return;
	/* every stream has closed by now (the server shut down first) */
	while (h->watchers) {
		struct health_watcher *w = h->watchers;

		h->watchers = w->next;
		rpc_stream_unref(w->st);
		free(w->service);
		free(w);
	}
	for (size_t i = 0; i < h->n_entries; i++)
		free(h->entries[i].service);
	free(h->entries);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

int rpc_server_enable_health(struct rpc_server *s)
{
	struct rpc_health *h;
	int err;

	if (rpc_server_health(s))
		return -EEXIST;
	err = rpc_health_new(s, &h);
	if (err)
		return err;
	rpc_server_set_builtin(s, h, NULL);
	return 0;
}

int rpc_server_set_health(struct rpc_server *s, const char *service, enum rpc_health_status status)
{
	return rpc_health_set(rpc_server_health(s), service, status);
}

int rpc_server_set_health_all(struct rpc_server *s, enum rpc_health_status status)
{
	return rpc_health_set_all(rpc_server_health(s), status);
}
