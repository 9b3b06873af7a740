/* proxy.c - the proxy's public face: configuration defaults, SO_REUSEPORT
 * listeners (one per worker, optional classic-BPF steering by client IP),
 * worker threads, graceful drain, the per-client counter tables (their slow
 * path, and the merge into a top N) and the Prometheus families.
 *
 * Invariants: listeners are bound in proxy_new (so port 0 is known before
 * start); after proxy_start only workers touch their listeners; counters
 * read here are relaxed atomics or single-writer tables.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "proxy_internal.h"

static const double latency_bounds_s[] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

/* "host:port", "[v6]:port", ":port" (any IPv4 address). */
static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon, *h = s;
	size_t hl;
	struct addrinfo hints, *res = NULL;
	int r;

	if (s[0] == '[') {
		const char *e = strchr(s, ']');

		if (!e || e[1] != ':')
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(e - h);
		colon = e + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - s);
	}
	if (hl >= sizeof(host) || !colon[1])
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	for (const char *p = colon + 1; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	r = getaddrinfo(hl ? host : NULL, colon + 1, &hints, &res);
	if (r != 0 || !res)
		return -EINVAL;
	if (!hl)
		for (struct addrinfo *a = res; a; a = a->ai_next)
			if (a->ai_family == AF_INET) {
				memcpy(ss, a->ai_addr, a->ai_addrlen);
				*len = a->ai_addrlen;
				freeaddrinfo(res);
				return 0;
			}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static uint16_t get_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return 0;
	return ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
				       : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Steers a connection to socket (hash of the client address) % n, so one
 * client keeps to one worker. The kernel falls back to its own hash when
 * the program cannot run or returns an index out of range. */
static int attach_steering(int fd, unsigned n)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)SKF_NET_OFF + 0),
		BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 2, 0),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 12), /* IPv4 saddr */
		BPF_JUMP(BPF_JMP | BPF_JA, 1, 0, 0),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 20), /* IPv6 saddr, low word */
		BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, 0x9E3779B1u),
		BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
		BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),
		BPF_STMT(BPF_RET | BPF_A, 0),
	};
	struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]), .filter = code };

	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) < 0)
		return -errno;
	return 0;
}

static int bind_group(struct proxy *p, const char *addr_s, unsigned which)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	uint16_t port = 0;
	int r, one = 1;

	r = parse_listen(addr_s, &ss, &sl);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < p->n_workers; i++) {
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			return -errno;
		p->workers[i].listen_fd[which] = fd;
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
			return -errno;
		if (i > 0)
			set_port(&ss, port);
		if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 4096) < 0)
			return -errno;
		if (i == 0)
			port = get_port(fd);
	}
	p->port[which] = port;
	if (p->cfg.reuseport_steering && p->n_workers > 1) {
		r = attach_steering(p->workers[0].listen_fd[which], p->n_workers);
		if (r < 0)
			log_warn("Failed to attach reuseport steering, using the kernel hash",
				 "error=%d", r);
	}
	return 0;
}

static void resolve_defaults(struct proxy_config *c)
{
#define DEF(f, v) \
	do { if (!c->f) c->f = (v); } while (0)
	DEF(max_connections, PROXY_DEFAULT_MAX_CONNECTIONS);
	DEF(max_head_bytes, HTTP_DEFAULT_MAX_HEAD_BYTES);
	DEF(header_timeout_ms, PROXY_DEFAULT_HEADER_TIMEOUT_MS);
	DEF(body_timeout_ms, PROXY_DEFAULT_BODY_TIMEOUT_MS);
	DEF(idle_timeout_ms, PROXY_DEFAULT_IDLE_TIMEOUT_MS);
	DEF(upstream_idle_timeout_ms, PROXY_DEFAULT_UP_IDLE_TIMEOUT_MS);
	DEF(drain_timeout_ms, PROXY_DEFAULT_DRAIN_TIMEOUT_MS);
	DEF(max_clients, PROXY_DEFAULT_MAX_CLIENTS);
#undef DEF
	/* upstream_connect_timeout_ms, upstream_read_timeout_ms,
	 * upstream_idle_per_worker and max_body_bytes stay 0: the policy's
	 * values apply then (see upstream.c). */
}

static void free_workers(struct proxy *p)
{
	for (unsigned i = 0; p->workers && i < p->n_workers; i++) {
		struct proxy_worker *w = &p->workers[i];

		for (unsigned k = 0; k < 2; k++)
			if (w->listen_fd[k] >= 0)
				close(w->listen_fd[k]);
		free(w->scratch);
		free(w->logbuf[0]);
		free(w->logbuf[1]);
		free(w->requests);
		free(w->decisions);
		proxy_ctable_done(&w->clients);
	}
	free(p->workers);
	p->workers = NULL;
}

int proxy_new(const struct proxy_config *cfg, struct proxy **ret)
{
	struct proxy *p;
	long ncpu;
	int r;

	if (!cfg || !cfg->policy || !cfg->limiter || (!cfg->listen && !cfg->tls_listen))
		return -EINVAL;
	if (cfg->tls_listen && !cfg->tls)
		return -EINVAL;
	if (cfg->max_head_bytes > (1u << 20))
		return -EINVAL;
	if (cfg->max_clients > PROXY_MAX_CLIENTS_LIMIT)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->cfg = *cfg;
	resolve_defaults(&p->cfg);
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	p->n_workers = cfg->workers ? cfg->workers : (unsigned)(ncpu > 0 ? ncpu : 1);
	metrics_histogram_init(&p->latency, latency_bounds_s,
			       sizeof(latency_bounds_s) / sizeof(latency_bounds_s[0]));
	p->workers = calloc(p->n_workers, sizeof(*p->workers));
	if (!p->workers) {
		free(p);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < p->n_workers; i++) {
		struct proxy_worker *w = &p->workers[i];

		w->p = p;
		w->idx = i;
		w->listen_fd[0] = w->listen_fd[1] = -1;
		w->scratch = malloc(PROXY_UP_BUF_BYTES);
		w->requests = calloc(1, sizeof(*w->requests));
		w->decisions = calloc(1, sizeof(*w->decisions));
		if (p->cfg.access_log_fd >= 0) {
			w->logbuf[0] = malloc(PROXY_LOG_BUF_BYTES);
			w->logbuf[1] = malloc(PROXY_LOG_BUF_BYTES);
		}
		if (!w->scratch || !w->requests || !w->decisions ||
		    proxy_ctable_init(&w->clients, p->cfg.max_clients) < 0 ||
		    (p->cfg.access_log_fd >= 0 && (!w->logbuf[0] || !w->logbuf[1]))) {
			r = -ENOMEM;
			goto out_free;
		}
	}
	if (cfg->listen) {
		r = bind_group(p, cfg->listen, 0);
		if (r < 0)
			goto out_free;
	}
	if (cfg->tls_listen) {
		r = bind_group(p, cfg->tls_listen, 1);
		if (r < 0)
			goto out_free;
	}
	*ret = p;
	return 0;

out_free:
	free_workers(p);
	free(p);
	return r;
}

int proxy_start(struct proxy *p)
{
	int r = 0;

	if (p->started)
		return -EALREADY;
	for (unsigned i = 0; i < p->n_workers; i++) {
		r = -pthread_create(&p->workers[i].thread, NULL, proxy_worker_main, &p->workers[i]);
		if (r < 0) {
			atomic_compare_exchange_strong(&p->workers_failed, &(int){ 0 }, r);
			atomic_fetch_add(&p->workers_ready, p->n_workers - i);
			break;
		}
		p->workers[i].thread_started = true;
	}
	p->started = true;
	while (atomic_load(&p->workers_ready) < p->n_workers) {
		struct timespec ts = { 0, 1000000 };

		nanosleep(&ts, NULL);
	}
	r = atomic_load(&p->workers_failed);
	return r;
}

uint16_t proxy_port(const struct proxy *p, bool tls)
{
	return p ? p->port[tls ? 1 : 0] : 0;
}

unsigned proxy_drain(struct proxy *p)
{
	if (!p || p->drained)
		return 0;
	p->drain_deadline_ns = proxy_now_ns() + (uint64_t)p->cfg.drain_timeout_ms * 1000000ull;
	atomic_store_explicit(&p->draining, true, memory_order_release);
	for (unsigned i = 0; i < p->n_workers; i++)
		if (p->workers[i].thread_started)
			pthread_join(p->workers[i].thread, NULL);
	p->drained = true;
	return atomic_load(&p->forced_closes);
}

void proxy_free(struct proxy *p)
{
	if (!p)
		return;
	if (p->started)
		proxy_drain(p);
	free_workers(p);
	free(p);
}

/* ---- per-client counters ---- */

int proxy_ctable_init(struct proxy_ctable *t, unsigned cap)
{
	size_t slots = 64;
	void *m;

	memset(t, 0, sizeof(*t));
	while (slots < 2 * (size_t)cap)
		slots *= 2;
	/* Anonymous pages: zero (every slot empty) without writing them,
	 * resident only once a client lands there, and page-aligned so a
	 * slot never straddles two cache lines. */
	m = mmap(NULL, slots * sizeof(*t->slots), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -ENOMEM;
	t->slots = m;
	t->mask = (uint32_t)(slots - 1);
	t->id_of = calloc(slots, sizeof(*t->id_of));
	t->ids = calloc(cap ? cap : 1, sizeof(*t->ids));
	if (!t->id_of || !t->ids) {
		proxy_ctable_done(t);
		return -ENOMEM;
	}
	t->cap = cap;
	return 0;
}

void proxy_ctable_done(struct proxy_ctable *t)
{
	if (t->slots)
		munmap(t->slots, ((size_t)t->mask + 1) * sizeof(*t->slots));
	free(t->id_of);
	free(t->ids);
	t->slots = NULL;
	t->id_of = NULL;
	t->ids = NULL;
}

void proxy_ctable_insert(struct proxy_ctable *t, uint32_t i, uint64_t key, const char *id,
			 size_t id_len, unsigned outcome, bool shadow)
{
	struct proxy_cslot *s = &t->slots[i];

	if (t->used == t->cap) {
		atomic_store_explicit(&t->overflow,
				      atomic_load_explicit(&t->overflow, memory_order_relaxed) + 1,
				      memory_order_relaxed);
		return;
	}
	if (id_len > POLICY_ID_MAX_LEN)
		id_len = POLICY_ID_MAX_LEN; /* validated ids never are */
	memcpy(t->ids[t->used], id, id_len);
	t->ids[t->used][id_len] = '\0';
	t->id_of[i] = t->used++;
	atomic_store_explicit(&s->n[outcome], 1, memory_order_relaxed);
	if (shadow)
		atomic_store_explicit(&s->n[PROXY_CLIENT_SHADOW], 1, memory_order_relaxed);
	/* Publishes the id and the first counts to readers. */
	atomic_store_explicit(&s->key, key, memory_order_release);
}

/* One client's row while merging: the id stays in its worker's table
 * (written once before the row was published, never changed). */
struct crow {
	uint64_t n[PROXY_CLIENT__N];
	const char *id;
};

static int crow_by_id(const void *a, const void *b)
{
	const struct crow *x = a, *y = b;

	return strcmp(x->id, y->id);
}

static int crow_by_total(const void *a, const void *b)
{
	const struct crow *x = a, *y = b;
	uint64_t tx = x->n[PROXY_CLIENT_ALLOWED] + x->n[PROXY_CLIENT_REJECTED];
	uint64_t ty = y->n[PROXY_CLIENT_ALLOWED] + y->n[PROXY_CLIENT_REJECTED];

	if (tx != ty)
		return tx > ty ? -1 : 1;
	return strcmp(x->id, y->id);
}

int proxy_client_counters(const struct proxy *p, size_t top_n, struct proxy_client_count **ret,
			  size_t *n_ret, struct proxy_client_summary *summary)
{
	size_t cap = 0, n = 0, m = 0;
	uint64_t overflow = 0;
	struct crow *rows;
	struct proxy_client_count *out = NULL;

	for (unsigned w = 0; w < p->n_workers; w++)
		cap += p->workers[w].clients.cap;
	rows = malloc((cap ? cap : 1) * sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	for (unsigned w = 0; w < p->n_workers; w++) {
		const struct proxy_ctable *t = &p->workers[w].clients;
		size_t before = n;

		overflow += atomic_load_explicit(&t->overflow, memory_order_relaxed);
		for (uint32_t i = 0; i <= t->mask; i++) {
			const struct proxy_cslot *s = &t->slots[i];
			uint64_t key = atomic_load_explicit(&s->key, memory_order_acquire);

			/* A worker publishes at most cap keys; the check
			 * keeps rows[] in bounds whatever happens. */
			if (!key || n - before == t->cap)
				continue;
			for (unsigned k = 0; k < PROXY_CLIENT__N; k++)
				rows[n].n[k] = atomic_load_explicit(&s->n[k], memory_order_relaxed);
			rows[n].id = t->ids[t->id_of[i]];
			n++;
		}
	}
	/* The same client on several workers, or through several of its
	 * keys (a table counts per key): one row. */
	qsort(rows, n, sizeof(*rows), crow_by_id);
	for (size_t i = 0; i < n; i++) {
		if (m && strcmp(rows[m - 1].id, rows[i].id) == 0) {
			for (unsigned k = 0; k < PROXY_CLIENT__N; k++)
				rows[m - 1].n[k] += rows[i].n[k];
			continue;
		}
		rows[m++] = rows[i];
	}
	qsort(rows, m, sizeof(*rows), crow_by_total);
	if (top_n > m)
		top_n = m;
	if (top_n) {
		out = malloc(top_n * sizeof(*out));
		if (!out) {
			free(rows);
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < top_n; i++) {
		snprintf(out[i].client, sizeof(out[i].client), "%s", rows[i].id);
		out[i].allowed = rows[i].n[PROXY_CLIENT_ALLOWED];
		out[i].rejected = rows[i].n[PROXY_CLIENT_REJECTED];
		out[i].shadow_rejected = rows[i].n[PROXY_CLIENT_SHADOW];
	}
	free(rows);
	if (summary) {
		summary->clients = m;
		summary->overflow = overflow;
	}
	*ret = out;
	*n_ret = top_n;
	return 0;
}

/* ---- metrics ---- */

struct merged {
	const char *label;
	int code;
	uint64_t count;
};

/* Sums one table kind over every worker. Returns the entries (caller frees). */
static struct merged *merge_tables(const struct proxy *p, bool decisions, size_t *n_out,
				   uint64_t *dropped)
{
	size_t cap = (size_t)p->n_workers * PROXY_LTABLE_CAP, n = 0;
	struct merged *m = malloc(cap * sizeof(*m));

	*dropped = 0;
	if (!m) {
		*n_out = 0;
		return NULL;
	}
	for (unsigned i = 0; i < p->n_workers; i++) {
		struct proxy_ltable *t = decisions ? p->workers[i].decisions : p->workers[i].requests;

		*dropped += atomic_load_explicit(&t->dropped, memory_order_relaxed);
		for (unsigned k = 0; k < PROXY_LTABLE_CAP; k++) {
			struct proxy_lentry *e = &t->e[k];
			uint64_t cnt;
			size_t j;

			if (!atomic_load_explicit(&e->used, memory_order_acquire))
				continue;
			cnt = atomic_load_explicit(&e->count, memory_order_relaxed);
			for (j = 0; j < n; j++)
				if (m[j].code == e->code && strcmp(m[j].label, e->label) == 0)
					break;
			if (j == n)
				m[n++] = (struct merged){ e->label, e->code, 0 };
			m[j].count += cnt;
		}
	}
	*n_out = n;
	return m;
}

/* The busiest clients only, so the number of series stays bounded; a
 * client that leaves the top N loses its series until it is back, and
 * since its counters kept counting meanwhile, rate() over the gap stays
 * right. The NodeReport's clients[] are read from these lines. */
_Static_assert(PROXY_CLIENT_TOP_N == 100, "the help text below says 100");
static void client_metrics(const struct proxy *p, struct metrics_buf *b)
{
	struct proxy_client_count *c = NULL;
	struct proxy_client_summary sum = { 0 };
	size_t n = 0;

	if (proxy_client_counters(p, PROXY_CLIENT_TOP_N, &c, &n, &sum) < 0)
		b->err = -ENOMEM; /* a partial exposition must not pass as whole */
	metrics_family(b, "sluice_proxy_client_decisions_total", "counter",
		       "Policy decisions per identified client (the busiest 100 by allow + "
		       "rate_limited), by outcome; shadow: a SHADOW limit would have refused "
		       "the request.");
	for (size_t i = 0; i < n; i++) {
		static const char *const outcomes[] = { "allow", "rate_limited", "shadow" };
		const uint64_t v[] = { c[i].allowed, c[i].rejected, c[i].shadow_rejected };

		for (unsigned k = 0; k < 3; k++) {
			const char *labels[] = { "client", c[i].client, "outcome", outcomes[k], NULL };

			metrics_sample_u64(b, "sluice_proxy_client_decisions_total", labels, v[k]);
		}
	}
	free(c);
	metrics_scalar_u64(b, "sluice_proxy_clients_counted", "gauge",
			   "Distinct clients with per-client counters (all, not only those shown).",
			   sum.clients);
	metrics_scalar_u64(b, "sluice_proxy_client_overflow_total", "counter",
			   "Decisions of identified clients not counted per client: the worker's "
			   "client table was full (proxy max_clients).",
			   sum.overflow);
}

void proxy_metrics(const struct proxy *p, struct metrics_buf *b)
{
	struct merged *m;
	size_t n;
	uint64_t dropped;
	char code[16];

	if (!p)
		return;
	metrics_family(b, "sluice_proxy_requests_total", "counter",
		       "Responses by route (empty: none matched) and status.");
	m = merge_tables(p, false, &n, &dropped);
	for (size_t i = 0; i < n; i++) {
		const char *labels[] = { "route", m[i].label, "status", code, NULL };

		snprintf(code, sizeof(code), "%d", m[i].code);
		metrics_sample_u64(b, "sluice_proxy_requests_total", labels, m[i].count);
	}
	free(m);
	if (dropped) {
		const char *labels[] = { "route", "_overflow", "status", "0", NULL };

		metrics_sample_u64(b, "sluice_proxy_requests_total", labels, dropped);
	}

	metrics_family(b, "sluice_proxy_decisions_total", "counter",
		       "Policy decisions by deciding rule (limit, access list or route) and outcome.");
	m = merge_tables(p, true, &n, &dropped);
	for (size_t i = 0; i < n; i++) {
		const char *labels[] = { "rule", m[i].label, "outcome",
					 proxy_outcome_name(m[i].code), NULL };

		metrics_sample_u64(b, "sluice_proxy_decisions_total", labels, m[i].count);
	}
	free(m);

	client_metrics(p, b);

	metrics_family(b, "sluice_proxy_request_duration_seconds", "histogram",
		       "From the first byte of a request head to the last byte of its response.");
	metrics_histogram_render(b, "sluice_proxy_request_duration_seconds", NULL, &p->latency);

	metrics_scalar_u64(b, "sluice_proxy_connections_open", "gauge", "Client connections open.",
			   atomic_load_explicit(&p->conns_open, memory_order_relaxed));
	metrics_scalar_u64(b, "sluice_proxy_connections_accepted_total", "counter",
			   "Client connections accepted and served.",
			   atomic_load_explicit(&p->conns_accepted, memory_order_relaxed));
	metrics_family(b, "sluice_proxy_connections_refused_total", "counter",
		       "Client connections closed at once: the global cap was reached, or TLS "
		       "refused them (ktls_required without offload).");
	{
		const char *labels[] = { "reason", "cap", NULL };

		const char *tls_labels[] = { "reason", "tls", NULL };

		metrics_sample_u64(b, "sluice_proxy_connections_refused_total", labels,
				   atomic_load_explicit(&p->conns_refused_cap, memory_order_relaxed));
		metrics_sample_u64(b, "sluice_proxy_connections_refused_total", tls_labels,
				   atomic_load_explicit(&p->conns_refused_tls, memory_order_relaxed));
	}
	metrics_scalar_u64(b, "sluice_proxy_timeouts_total", "counter",
			   "Connections or requests ended by a header, body, idle, send or "
			   "upstream timeout.",
			   atomic_load_explicit(&p->conns_timed_out, memory_order_relaxed));
	metrics_scalar_u64(b, "sluice_proxy_upstream_connects_total", "counter",
			   "New upstream connections opened.",
			   atomic_load_explicit(&p->up_connects, memory_order_relaxed));
	metrics_scalar_u64(b, "sluice_proxy_upstream_reuses_total", "counter",
			   "Requests sent on a pooled keep-alive upstream connection.",
			   atomic_load_explicit(&p->up_reuses, memory_order_relaxed));
	metrics_scalar_u64(b, "sluice_proxy_upstream_errors_total", "counter",
			   "Upstream exchanges that failed (502, 503, 504 or a cut response).",
			   atomic_load_explicit(&p->up_errors, memory_order_relaxed));
	metrics_scalar_u64(b, "sluice_proxy_access_log_dropped_total", "counter",
			   "Access log lines dropped because the log could not keep up.",
			   atomic_load_explicit(&p->log_dropped, memory_order_relaxed));
	metrics_scalar_u64(b, "sluice_proxy_workers", "gauge", "Worker threads.", p->n_workers);
}
