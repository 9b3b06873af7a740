/* fleet_api.c - sluice.v1.Fleet (ListNodes, GetNode, WatchNodes,
 * WatchStats) over the fleet's state, the bounded per-watcher queues, the
 * Prometheus families and the small /metrics HTTP listener.
 */
#include <errno.h>
#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "etcd.h"
#include "log.h"
#include "fleet_internal.h"

/* WatchStats: each report is an event; a full stream drops it (counted). */
void fleet_stats_send(struct fleet *f, struct rpc_buf *b, const char *node_id)
{
	for (struct watcher *w = f->stat_watchers; w; w = w->next) {
		if (w->filter[0] && strcmp(w->filter, node_id))
			continue;
		if (rpc_stream_sendv(w->st, &b, 1) == -EAGAIN)
			count(&f->c.watch_stats_dropped, 1);
	}
}

static int pend_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pend *)a)->node_id, ((const struct pend *)b)->node_id);
}

static void pend_free(void *p)
{
	struct pend *e = p;

	rpc_buf_unref(e->b);
	free(e->node_id);
	free(e);
}

/* WatchNodes: a status is state, not an event, so a slow watcher gets the
 * latest status of each node once its stream has room (older ones are
 * dropped, counted); memory per watcher is bounded by FLEET_WATCH_PENDING. */
void fleet_nodes_send(struct fleet *f, struct rpc_buf *b, const char *node_id,
		       const char *ruleset)
{
	for (struct watcher *w = f->node_watchers; w; w = w->next) {
		struct pend key = { .node_id = (char *)node_id }, *e;
		void **p;

		if (w->filter[0] && strcmp(w->filter, ruleset))
			continue;
		/* with statuses pending, a newer one must not overtake them */
		if (!w->n_pend && rpc_stream_sendv(w->st, &b, 1) != -EAGAIN)
			continue;
		p = tfind(&key, &w->pend, pend_cmp);
		if (p) {
			e = *p;
			rpc_buf_unref(e->b);
			rpc_buf_ref(b);
			e->b = b;
			e->seq = ++f->nonce_seq;
			count(&f->c.watch_nodes_dropped, 1);
			continue;
		}
		e = w->n_pend < FLEET_WATCH_PENDING ? calloc(1, sizeof(*e)) : NULL;
		if (e && !(e->node_id = strdup(node_id))) {
			free(e);
			e = NULL;
		}
		if (!e || !tsearch(e, &w->pend, pend_cmp)) {
			if (e)
				free(e->node_id);
			free(e);
			count(&f->c.watch_nodes_dropped, 1);
			continue;
		}
		rpc_buf_ref(b);
		e->b = b;
		e->seq = ++f->nonce_seq;
		w->n_pend++;
	}
}

struct pend_list {
	struct pend **v;
	size_t n;
};

static void pend_collect(const void *nodep, VISIT which, void *arg)
{
	struct pend_list *l = arg;

	if (which == postorder || which == leaf)
		l->v[l->n++] = *(struct pend *const *)nodep;
}

static int pend_seq_cmp(const void *a, const void *b)
{
	uint64_t x = (*(struct pend *const *)a)->seq, y = (*(struct pend *const *)b)->seq;

	return x < y ? -1 : x > y;
}

/* Sends what waits, oldest first, while the stream has room. f->mu held. */
void fleet_watcher_flush(struct watcher *w)
{
	struct pend_list l = { .v = malloc(w->n_pend * sizeof(*l.v)) };

	if (!w->n_pend || !l.v) {
		free(l.v);
		return;
	}
	twalk_r(w->pend, pend_collect, &l);
	qsort(l.v, l.n, sizeof(*l.v), pend_seq_cmp);
	for (size_t i = 0; i < l.n; i++) {
		if (rpc_stream_sendv(w->st, &l.v[i]->b, 1) == -EAGAIN)
			break;
		tdelete(l.v[i], &w->pend, pend_cmp);
		pend_free(l.v[i]);
		w->n_pend--;
	}
	free(l.v);
}
/* ---- Fleet -------------------------------------------------------------------------- */

/* Every node status this replica knows, local ones fresh, others from
 * etcd (head and lag recomputed from this replica's view when it knows the
 * ruleset). Calls fn with a packed NodeStatus; f->mu held. */
struct each_ctx {
	struct fleet *f;
	const char *ruleset_filter;
	void (*fn)(void *arg, const uint8_t *buf, size_t len, const char *node_id,
		   const char *ruleset);
	void *arg;
};

static void each_view(const void *nodep, VISIT which, void *arg)
{
	const struct view_ent *v = *(const struct view_ent *const *)nodep;
	struct each_ctx *e = arg;
	Sluice__V1__NodeStatus *m;
	struct reg *g;
	struct ruleset *rs;

	if (which != postorder && which != leaf)
		return;
	g = fleet_reg_find(e->f, v->node_id);
	if (g && g->conn)
		return;   /* connected here: the local status is newer */
	m = sluice__v1__node_status__unpack(NULL, v->len, v->val);
	if (!m)
		return;
	if (!e->ruleset_filter[0] || !strcmp(e->ruleset_filter, m->ruleset)) {
		rs = fleet_ruleset_find(e->f, m->ruleset);
		if (rs && fleet_head_version(rs) >= m->head_version) {
			m->head_version = fleet_head_version(rs);
			m->lag_versions = fleet_lag_versions(rs, m->acked_version);
		}
		{
			struct rpc_buf *b = fleet_pack_buf(&m->base);

			if (b) {
				e->fn(e->arg, rpc_buf_data(b), rpc_buf_len(b), m->node_id, m->ruleset);
				rpc_buf_unref(b);
			}
		}
	}
	sluice__v1__node_status__free_unpacked(m, NULL);
}

static void each_node(struct fleet *f, const char *ruleset_filter,
		      void (*fn)(void *, const uint8_t *, size_t, const char *, const char *),
		      void *arg)
{
	struct each_ctx e = { f, ruleset_filter, fn, arg };

	for (struct ruleset *rs = f->rulesets; rs; rs = rs->next) {
		if (ruleset_filter[0] && strcmp(ruleset_filter, rs->name))
			continue;
		for (struct conn *c = rs->conns; c; c = c->rs_next) {
			struct rpc_buf *b = fleet_conn_status_buf(c, true);

			if (b) {
				fn(arg, rpc_buf_data(b), rpc_buf_len(b), c->node_id, rs->name);
				rpc_buf_unref(b);
			}
		}
	}
	twalk_r(f->view, each_view, &e);
}

struct list_acc {
	Sluice__V1__NodeStatus **nodes;
	size_t n, cap;
	int err;
};

static void list_add(void *arg, const uint8_t *buf, size_t len, const char *id, const char *rs)
{
	struct list_acc *a = arg;
	Sluice__V1__NodeStatus *m;

	(void)id;
	(void)rs;
	if (a->err)
		return;
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		void *p = realloc(a->nodes, cap * sizeof(*a->nodes));

		if (!p) {
			a->err = -ENOMEM;
			return;
		}
		a->nodes = p;
		a->cap = cap;
	}
	m = sluice__v1__node_status__unpack(NULL, len, buf);
	if (!m) {
		a->err = -ENOMEM;
		return;
	}
	a->nodes[a->n++] = m;
}

static int status_cmp(const void *a, const void *b)
{
	return strcmp((*(Sluice__V1__NodeStatus *const *)a)->node_id,
		      (*(Sluice__V1__NodeStatus *const *)b)->node_id);
}

static void reply_msg(struct rpc_reply *reply, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);

	reply->data = malloc(len ? len : 1);
	if (!reply->data) {
		rpc_reply_error(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	reply->len = protobuf_c_message_pack(m, reply->data);
	reply->status = RPC_OK;
}

static void list_nodes(void *ctx, const struct rpc_peer *peer, const uint8_t *req, size_t len,
		       struct rpc_reply *reply)
{
	struct fleet *f = ctx;
	Sluice__V1__ListNodesRequest *rq = sluice__v1__list_nodes_request__unpack(NULL, len, req);
	Sluice__V1__ListNodesResponse resp = SLUICE__V1__LIST_NODES_RESPONSE__INIT;
	struct list_acc a = { 0 };

	(void)peer;
	if (!rq) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT, "ListNodesRequest does not decode");
		return;
	}
	pthread_mutex_lock(&f->mu);
	each_node(f, rq->ruleset, list_add, &a);
	pthread_mutex_unlock(&f->mu);
	if (a.err) {
		rpc_reply_error(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
	} else {
		if (a.n)
			qsort(a.nodes, a.n, sizeof(*a.nodes), status_cmp);
		resp.n_nodes = a.n;
		resp.nodes = a.nodes;
		reply_msg(reply, &resp.base);
	}
	for (size_t i = 0; i < a.n; i++)
		sluice__v1__node_status__free_unpacked(a.nodes[i], NULL);
	free(a.nodes);
	sluice__v1__list_nodes_request__free_unpacked(rq, NULL);
}

struct get_acc {
	const char *id;
	uint8_t *buf;
	size_t len;
};

static void get_add(void *arg, const uint8_t *buf, size_t len, const char *id, const char *rs)
{
	struct get_acc *a = arg;

	(void)rs;
	if (a->buf || strcmp(id, a->id))
		return;
	a->buf = malloc(len ? len : 1);
	if (a->buf) {
		memcpy(a->buf, buf, len);
		a->len = len;
	}
}

static void get_node(void *ctx, const struct rpc_peer *peer, const uint8_t *req, size_t len,
		     struct rpc_reply *reply)
{
	struct fleet *f = ctx;
	Sluice__V1__GetNodeRequest *rq = sluice__v1__get_node_request__unpack(NULL, len, req);
	struct get_acc a = { 0 };
	char q[300];

	(void)peer;
	if (!rq) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT, "GetNodeRequest does not decode");
		return;
	}
	if (!rq->node_id[0]) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT, "node_id: required");
		goto out;
	}
	a.id = rq->node_id;
	pthread_mutex_lock(&f->mu);
	each_node(f, "", get_add, &a);
	pthread_mutex_unlock(&f->mu);
	if (!a.buf) {
		rpc_reply_error(reply, RPC_NOT_FOUND, "node %s: not known to the fleet",
				log_quote(rq->node_id, q, sizeof(q)));
		goto out;
	}
	reply->status = RPC_OK;
	reply->data = a.buf;
	reply->len = a.len;
out:
	sluice__v1__get_node_request__free_unpacked(rq, NULL);
}

struct initial_ctx {
	struct rpc_stream *st;
	uint64_t *dropped;
};

static void watch_initial(void *arg, const uint8_t *buf, size_t len, const char *id,
			  const char *rs)
{
	struct initial_ctx *w = arg;

	(void)id;
	(void)rs;
	if (rpc_stream_send(w->st, buf, len) == -EAGAIN)
		count(w->dropped, 1);
}

void fleet_watcher_remove(struct watcher **list, struct rpc_stream *st)
{
	for (struct watcher **p = list; *p; p = &(*p)->next)
		if ((*p)->st == st) {
			struct watcher *w = *p;

			*p = w->next;
			rpc_stream_unref(w->st);
			tdestroy(w->pend, pend_free);
			free(w->filter);
			free(w);
			return;
		}
}

static struct watcher *watcher_new(struct rpc_stream *st, const char *filter)
{
	struct watcher *w = calloc(1, sizeof(*w));

	if (!w || !(w->filter = strdup(filter))) {
		free(w);
		return NULL;
	}
	rpc_stream_ref(st);
	w->st = st;
	return w;
}

static void watch_nodes_open(void *ctx, struct rpc_stream *st, const struct rpc_peer *peer,
			     const uint8_t *req, size_t len)
{
	struct fleet *f = ctx;
	Sluice__V1__WatchNodesRequest *rq = sluice__v1__watch_nodes_request__unpack(NULL, len, req);
	struct watcher *w;

	(void)peer;
	if (!rq) {
		rpc_stream_finish(st, RPC_INVALID_ARGUMENT, "WatchNodesRequest does not decode");
		return;
	}
	w = watcher_new(st, rq->ruleset);
	sluice__v1__watch_nodes_request__free_unpacked(rq, NULL);
	if (!w) {
		rpc_stream_finish(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	pthread_mutex_lock(&f->mu);
	/* the current statuses first, then (registered under the same lock)
	 * every change: nothing falls in between */
	each_node(f, w->filter, watch_initial,
		  &(struct initial_ctx){ .st = st, .dropped = &f->c.watch_nodes_dropped });
	w->next = f->node_watchers;
	f->node_watchers = w;
	pthread_mutex_unlock(&f->mu);
}

static void watch_nodes_close(void *ctx, struct rpc_stream *st, enum rpc_status status)
{
	struct fleet *f = ctx;

	(void)status;
	pthread_mutex_lock(&f->mu);
	fleet_watcher_remove(&f->node_watchers, st);
	pthread_mutex_unlock(&f->mu);
}

static void watch_stats_open(void *ctx, struct rpc_stream *st, const struct rpc_peer *peer,
			     const uint8_t *req, size_t len)
{
	struct fleet *f = ctx;
	Sluice__V1__WatchStatsRequest *rq = sluice__v1__watch_stats_request__unpack(NULL, len, req);
	struct watcher *w;

	(void)peer;
	if (!rq) {
		rpc_stream_finish(st, RPC_INVALID_ARGUMENT, "WatchStatsRequest does not decode");
		return;
	}
	w = watcher_new(st, rq->node_id);
	sluice__v1__watch_stats_request__free_unpacked(rq, NULL);
	if (!w) {
		rpc_stream_finish(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	pthread_mutex_lock(&f->mu);
	w->next = f->stat_watchers;
	f->stat_watchers = w;
	pthread_mutex_unlock(&f->mu);
}

static void watch_stats_close(void *ctx, struct rpc_stream *st, enum rpc_status status)
{
	struct fleet *f = ctx;

	(void)status;
	pthread_mutex_lock(&f->mu);
	fleet_watcher_remove(&f->stat_watchers, st);
	pthread_mutex_unlock(&f->mu);
}

int fleet_register(struct fleet *f, struct rpc_server *s)
{
	static const struct rpc_stream_ops sync_ops = {
		.open = fleet_sync_open, .recv = fleet_sync_recv, .close = fleet_sync_close,
	};
	static const struct rpc_stream_ops nodes_ops = {
		.open = watch_nodes_open, .close = watch_nodes_close,
	};
	static const struct rpc_stream_ops stats_ops = {
		.open = watch_stats_open, .close = watch_stats_close,
	};
	int r;

	r = rpc_server_add_stream(s, "/sluice.v1.PolicySync/Sync",
				  f->any_node ? RPC_ROLE_NONE : RPC_ROLE_NODE, RPC_STREAM_BIDI,
				  &sync_ops, f);
	if (!r)
		r = rpc_server_add_unary(s, "/sluice.v1.Fleet/ListNodes", RPC_ROLE_ADMIN,
					 list_nodes, f);
	if (!r)
		r = rpc_server_add_unary(s, "/sluice.v1.Fleet/GetNode", RPC_ROLE_ADMIN, get_node, f);
	if (!r)
		r = rpc_server_add_stream(s, "/sluice.v1.Fleet/WatchNodes", RPC_ROLE_ADMIN,
					  RPC_STREAM_SERVER, &nodes_ops, f);
	if (!r)
		r = rpc_server_add_stream(s, "/sluice.v1.Fleet/WatchStats", RPC_ROLE_ADMIN,
					  RPC_STREAM_SERVER, &stats_ops, f);
	return r;
}

/* ---- metrics ---------------------------------------------------------------------- */

void fleet_metrics_render(struct fleet *f, struct metrics_buf *b)
{
	static const char *const delta_l[] = { "kind", "delta", NULL };
	static const char *const snap_l[] = { "kind", "snapshot", NULL };
	static const char *const nodes_l[] = { "stream", "watch_nodes", NULL };
	static const char *const stats_l[] = { "stream", "watch_stats", NULL };
	static const char *const reg_l[] = { "op", "registry", NULL };
	static const char *const store_l[] = { "op", "store", NULL };
	uint64_t connected, lease;

	pthread_mutex_lock(&f->mu);
	connected = f->connected;
	lease = f->lease != 0;
	pthread_mutex_unlock(&f->mu);

	metrics_family(b, "sluice_control_sync_pushes_total", "counter",
		       "Versions pushed to nodes, by message kind");
	metrics_sample_u64(b, "sluice_control_sync_pushes_total", delta_l, load(&f->c.pushes_delta));
	metrics_sample_u64(b, "sluice_control_sync_pushes_total", snap_l,
			   load(&f->c.pushes_snapshot));
	metrics_scalar_u64(b, "sluice_control_sync_pushes_deferred_total", "counter",
			   "Pushes put off because the node's stream queue was full",
			   load(&f->c.pushes_deferred));
	metrics_scalar_u64(b, "sluice_control_sync_acks_total", "counter",
			   "Acks of pushed versions",
			   load(&f->c.acks));
	metrics_scalar_u64(b, "sluice_control_sync_acks_ignored_total", "counter",
			   "Acks and nacks that matched no pending push (stale nonce)",
			   load(&f->c.acks_ignored));
	metrics_scalar_u64(b, "sluice_control_sync_nacks_total", "counter",
			   "Versions refused by nodes",
			   load(&f->c.nacks));
	metrics_scalar_u64(b, "sluice_control_sync_reports_total", "counter",
			   "NodeReports received",
			   load(&f->c.reports));
	metrics_scalar_u64(b, "sluice_control_sync_hello_refused_total", "counter",
			   "Hellos whose node_id did not match the client certificate",
			   load(&f->c.hello_refused));
	metrics_scalar_u64(b, "sluice_control_connected_nodes", "gauge",
			   "Nodes with a Sync stream on this replica",
			   connected);
	metrics_scalar_u64(b, "sluice_control_versions_applied_total", "counter",
			   "Ruleset versions taken from the etcd watch",
			   load(&f->c.versions_applied));
	metrics_scalar_u64(b, "sluice_control_reloads_total", "counter",
			   "Full re-reads from etcd (compaction past the watch, "
			   "inconsistent events)",
			   load(&f->c.reloads));
	metrics_scalar_u64(b, "sluice_control_sync_bodies_built_total", "counter",
			   "Delta and snapshot encodings built "
			   "(each shared by every stream needing it)",
			   load(&f->c.bodies_built));
	metrics_scalar_u64(b, "sluice_control_registry_writes_total", "counter",
			   "Node registry writes to etcd",
			   load(&f->c.reg_writes));
	metrics_scalar_u64(b, "sluice_control_registry_write_errors_total", "counter",
			   "Node registry writes that failed (retried)",
			   load(&f->c.reg_write_errors));
	metrics_scalar_u64(b, "sluice_control_registry_superseded_total", "counter",
			   "Streams ended because their node connected to another replica",
			   load(&f->c.reg_superseded));
	metrics_scalar_u64(b, "sluice_control_registry_lease_held", "gauge",
			   "1 while this replica holds its registry lease",
			   lease);
	metrics_family(b, "sluice_control_watch_dropped_total", "counter",
		       "Fleet watch messages dropped for slow subscribers");
	metrics_sample_u64(b, "sluice_control_watch_dropped_total", nodes_l,
			   load(&f->c.watch_nodes_dropped));
	metrics_sample_u64(b, "sluice_control_watch_dropped_total", stats_l,
			   load(&f->c.watch_stats_dropped));
	metrics_family(b, "sluice_control_convergence_seconds", "histogram",
		       "Commit of a version to its ack by a node");
	metrics_histogram_render(b, "sluice_control_convergence_seconds", NULL, &f->convergence);
	metrics_family(b, "sluice_control_etcd_request_seconds", "histogram",
		       "Latency of etcd calls: op=registry (the fleet's registry writes and "
		       "lease keep-alives), op=store (admin reads and commits)");
	metrics_histogram_render(b, "sluice_control_etcd_request_seconds", reg_l, &f->etcd_latency);
	if (f->store_etcd)
		metrics_histogram_render(b, "sluice_control_etcd_request_seconds", store_l,
					 etcd_latency(f->store_etcd));
}

/* A deliberately small HTTP/1.0 responder: one request per connection,
 * GET /metrics only, a 2 s receive deadline so a silent client cannot hold
 * the thread. Scrapes are rare; one thread is plenty. */
static void http_serve(struct fleet *f, int fd)
{
	char req[2048];
	size_t got = 0;
	struct timeval tv = { .tv_sec = 2 };
	struct metrics_buf b;
	char head[256];
	const char *status = "200 OK";
	int hl;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (got < sizeof(req) - 1) {
		ssize_t n = recv(fd, req + got, sizeof(req) - 1 - got, 0);

		if (n <= 0)
			return;
		got += (size_t)n;
		req[got] = 0;
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			break;
	}
	metrics_buf_init(&b);
	if (!strncmp(req, "GET /metrics ", 13) || !strncmp(req, "GET /metrics?", 13)) {
		fleet_metrics_render(f, &b);
	} else {
		status = "404 Not Found";
	}
	if (b.err) {
		status = "500 Internal Server Error";
		b.len = 0;
	}
	hl = snprintf(head, sizeof(head),
		      "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
		      "Content-Length: %zu\r\nConnection: close\r\n\r\n", status, b.len);
	if (send(fd, head, (size_t)hl, MSG_NOSIGNAL) == hl && b.len)
		for (size_t off = 0; off < b.len;) {
			ssize_t n = send(fd, b.data + off, b.len - off, MSG_NOSIGNAL);

			if (n <= 0)
				break;
			off += (size_t)n;
		}
	metrics_buf_done(&b);
}

static void *http_main(void *arg)
{
	struct fleet *f = arg;

	while (!__atomic_load_n(&f->stopping, __ATOMIC_RELAXED)) {
		struct pollfd p = { .fd = f->http_fd, .events = POLLIN };
		int fd;

		if (poll(&p, 1, 200) <= 0)
			continue;
		fd = accept4(f->http_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		http_serve(f, fd);
		close(fd);
	}
	return NULL;
}

int fleet_metrics_listen(struct fleet *f, const char *addr, int *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	char host[256];
	const char *colon = strrchr(addr, ':');
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, one = 1, r;

	if (f->http_running)
		return -EBUSY;
	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return -EINVAL;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = 0;
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = 0;
	}
	if (getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai) || !ai)
		return -EINVAL;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		freeaddrinfo(ai);
		return r;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0) {
		r = -errno;
		close(fd);
		freeaddrinfo(ai);
		return r;
	}
	freeaddrinfo(ai);
	if (port) {
		getsockname(fd, (struct sockaddr *)&ss, &sl);
		*port = ntohs(ss.ss_family == AF_INET6 ?
			      ((struct sockaddr_in6 *)&ss)->sin6_port :
			      ((struct sockaddr_in *)&ss)->sin_port);
	}
	f->http_fd = fd;
	r = pthread_create(&f->http_thr, NULL, http_main, f);
	if (r) {
		close(fd);
		f->http_fd = -1;
		return -r;
	}
	f->http_running = true;
	return 0;
}
