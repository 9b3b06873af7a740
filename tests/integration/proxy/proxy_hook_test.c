/* proxy_hook_test.c - the proxy library in-process, driven over real
 * loopback sockets: the escalation hook (proxy_config.on_reject) sees every
 * 403/429 the proxy answers and nothing else, the access log holds each
 * request exactly once however soon after it the drain starts (two bugs:
 * the last flushed batch written again at worker exit, and a batch lost when
 * its write was queued but never submitted before the ring went away), and
 * proxy_client_counters counts each identified client's decisions exactly,
 * merges workers, ranks, and stops at max_clients (the rest is overflow).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"
#include "limiter.h"
#include "proxy.h"
#include "proxy_internal.h"
#include "snapshot.h"

/* ---- fixture ---- */

static struct snapshot_cell *cell;
static struct limiter *lim;

static uint16_t closed_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	uint16_t port;

	cr_assert(fd >= 0);
	cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	cr_assert(getsockname(fd, (struct sockaddr *)&a, &l) == 0);
	port = ntohs(a.sin_port);
	close(fd); /* nothing listens there now: connects are refused (502) */
	return port;
}

static void policy_setup(void)
{
	struct policy_res *res[16];
	struct snapshot *s;
	size_t n = 0;

	res[n++] = fixture_res("{\"settings\": {\"id\": \"global\", \"clientIdHeader\": \"Client-ID\"}}");
	res[n++] = fixture_res("{\"rateLimit\": {\"id\": \"one\", \"algorithm\": \"TOKEN_BUCKET\","
			       " \"rate\": \"1\", \"unit\": \"MINUTE\", \"burst\": \"1\"}}");
	res[n++] = fixture_res("{\"rateLimit\": {\"id\": \"peek\", \"algorithm\": \"TOKEN_BUCKET\","
			       " \"rate\": \"1\", \"unit\": \"MINUTE\", \"burst\": \"1\","
			       " \"action\": \"SHADOW\"}}");
	res[n++] = fixture_res("{\"client\": {\"id\": \"c1\"}}");
	res[n++] = fixture_res("{\"client\": {\"id\": \"c2\"}}");
	res[n++] = fixture_res("{\"client\": {\"id\": \"c3\", \"keys\": [\"key-of-c3\", \"c3-alt\"]}}");
	res[n++] = fixture_res("{\"accessList\": {\"id\": \"nolo\", \"deny\": [\"127.0.0.0/8\"]}}");
	res[n++] = fixture_res("{\"upstream\": {\"id\": \"down\", \"endpoints\": [\"127.0.0.1:%u\"]}}",
			       closed_port());
	res[n++] = fixture_res("{\"route\": {\"id\": \"lim\", \"pathPrefix\": \"/lim\","
			       " \"upstream\": \"down\", \"rateLimits\": [\"one\"]}}");
	res[n++] = fixture_res("{\"route\": {\"id\": \"blocked\", \"pathPrefix\": \"/blocked\","
			       " \"upstream\": \"down\", \"accessLists\": [\"nolo\"]}}");
	res[n++] = fixture_res("{\"route\": {\"id\": \"open\", \"pathPrefix\": \"/open\","
			       " \"upstream\": \"down\"}}");
	res[n++] = fixture_res("{\"route\": {\"id\": \"sh\", \"pathPrefix\": \"/sh\","
			       " \"upstream\": \"down\", \"rateLimits\": [\"peek\"]}}");
	cr_assert(snapshot_build("t", 1, res, n, NULL, &s) == 0);
	for (size_t i = 0; i < n; i++)
		policy_res_unref(res[i]);
	cr_assert(snapshot_cell_new(s, &cell) == 0);
	cr_assert(limiter_new(&(struct limiter_config){ 0 }, &lim) == 0);
}

static void policy_teardown(void)
{
	snapshot_cell_free(cell);
	limiter_free(lim);
}

/* One request on a new connection; returns the status, 0 on failure. The
 * caller's local port goes to *local_port when not NULL. */
static int request(uint16_t port, const char *req, uint16_t *local_port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 5 };
	char buf[4096];
	size_t got = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0;

	cr_assert(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	if (local_port) {
		socklen_t l = sizeof(a);

		getsockname(fd, (struct sockaddr *)&a, &l);
		*local_port = ntohs(a.sin_port);
	}
	cr_assert(send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req));
	/* Connection: close requests: read to EOF, so the response is whole. */
	for (;;) {
		ssize_t k = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);

		if (k <= 0)
			break;
		got += (size_t)k;
		if (got == sizeof(buf) - 1)
			break;
	}
	buf[got] = '\0';
	if (got > 12 && strncmp(buf, "HTTP/1.1 ", 9) == 0)
		status = atoi(buf + 9);
	close(fd);
	return status;
}

/* ---- the escalation hook ---- */

#define MAX_CALLS 16
struct call {
	int family;
	uint16_t port;
	char client[64];
	bool has_client;
	int status;
	pthread_t thread;
};
static struct {
	pthread_mutex_t mu;
	struct call calls[MAX_CALLS];
	unsigned n;
	int arg_ok;
} rec = { .mu = PTHREAD_MUTEX_INITIALIZER };
static int hook_arg;

static void on_reject(void *arg, const struct sockaddr *peer, socklen_t len,
		      const char *client_id, size_t client_len, int http_status)
{
	struct call c = { .family = peer->sa_family, .status = http_status,
			  .thread = pthread_self() };

	if (peer->sa_family == AF_INET && len == sizeof(struct sockaddr_in))
		c.port = ntohs(((const struct sockaddr_in *)peer)->sin_port);
	if (client_id) {
		c.has_client = true;
		snprintf(c.client, sizeof(c.client), "%.*s", (int)client_len, client_id);
	}
	pthread_mutex_lock(&rec.mu);
	if (arg == &hook_arg)
		rec.arg_ok++;
	if (rec.n < MAX_CALLS)
		rec.calls[rec.n] = c;
	rec.n++;
	pthread_mutex_unlock(&rec.mu);
}

TestSuite(proxy_hook, .init = policy_setup, .fini = policy_teardown, .timeout = 60);

Test(proxy_hook, called_for_every_403_and_429_only)
{
	struct proxy_config cfg = {
		.workers = 1, .listen = "127.0.0.1:0", .policy = cell, .limiter = lim,
		.access_log_fd = -1, .on_reject = on_reject, .on_reject_arg = &hook_arg,
	};
	struct proxy *p;
	uint16_t port, lp[4];
	pthread_t main_thread = pthread_self();

	cr_assert(proxy_new(&cfg, &p) == 0);
	cr_assert(proxy_start(p) == 0);
	port = proxy_port(p, false);

	/* First request of c1 passes the limit (the upstream is down: 502),
	 * the second is over it. */
	cr_expect_eq(request(port, "GET /lim HTTP/1.1\r\nHost: a\r\nClient-ID: c1\r\n"
				   "Connection: close\r\n\r\n", NULL), 502);
	cr_expect_eq(request(port, "GET /lim HTTP/1.1\r\nHost: a\r\nClient-ID: c1\r\n"
				   "Connection: close\r\n\r\n", &lp[0]), 429);
	/* Access list: 127.0.0.0/8 denied, no client id. */
	cr_expect_eq(request(port, "GET /blocked HTTP/1.1\r\nHost: a\r\n"
				   "Connection: close\r\n\r\n", &lp[1]), 403);
	/* A dot-segment path is refused before routing. */
	cr_expect_eq(request(port, "GET /open/a/%2e%2e/b HTTP/1.1\r\nHost: a\r\n"
				   "Client-ID: x y\r\nConnection: close\r\n\r\n", &lp[2]), 403);
	/* Not rejections: no route, a bad request, an upstream failure. */
	cr_expect_eq(request(port, "GET /nothing HTTP/1.1\r\nHost: a\r\n"
				   "Connection: close\r\n\r\n", NULL), 404);
	cr_expect_eq(request(port, "GET /open HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
				   "Content-Length: 2\r\n\r\n", NULL), 400);
	cr_expect_eq(request(port, "GET /open HTTP/1.1\r\nHost: a\r\nClient-ID: c2\r\n"
				   "Connection: close\r\n\r\n", NULL), 502);
	proxy_free(p);

	pthread_mutex_lock(&rec.mu);
	cr_assert_eq(rec.n, 3, "hook calls: %u", rec.n);
	cr_expect_eq(rec.arg_ok, 3);
	cr_expect_eq(rec.calls[0].status, 429);
	cr_expect(rec.calls[0].has_client && strcmp(rec.calls[0].client, "c1") == 0,
		  "client '%s'", rec.calls[0].client);
	cr_expect_eq(rec.calls[1].status, 403);
	cr_expect(!rec.calls[1].has_client);
	cr_expect_eq(rec.calls[2].status, 403);
	cr_expect(rec.calls[2].has_client && strcmp(rec.calls[2].client, "x y") == 0,
		  "client '%s'", rec.calls[2].client);
	for (unsigned i = 0; i < 3; i++) {
		cr_expect_eq(rec.calls[i].family, AF_INET);
		cr_expect_eq(rec.calls[i].port, lp[i], "call %u: peer port %u, client's %u", i,
			     rec.calls[i].port, lp[i]);
		cr_expect(!pthread_equal(rec.calls[i].thread, main_thread),
			  "called on a worker thread");
	}
	pthread_mutex_unlock(&rec.mu);
}

/* ---- access log across a drain ---- */

static size_t read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	ssize_t k;
	size_t n = 0;

	cr_assert(fd >= 0);
	while (n < cap - 1 && (k = read(fd, buf + n, cap - 1 - n)) > 0)
		n += (size_t)k;
	close(fd);
	buf[n] = '\0';
	return n;
}

static unsigned count_str(const char *hay, const char *needle)
{
	unsigned k = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		k++;
	return k;
}

/* Each round: some requests, a pause long enough for the worker's periodic
 * flush (50 ms) to write them, then one more request and the drain at
 * once. Every line must be in the file exactly once. */
static void drain_rounds(unsigned workers)
{
	char path[] = "/tmp/sluice-proxy-hook-XXXXXX", *buf;
	int fd = mkstemp(path);
	unsigned rounds = 25, per_round = 3;

	cr_assert(fd >= 0);
	close(fd);
	buf = malloc(1 << 20);
	cr_assert(buf);
	for (unsigned r = 0; r < rounds; r++) {
		int log_fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
		struct proxy_config cfg = {
			.workers = workers, .listen = "127.0.0.1:0", .policy = cell,
			.limiter = lim, .access_log_fd = log_fd,
		};
		struct proxy *p;
		uint16_t port;
		char req[128];

		cr_assert(log_fd >= 0);
		cr_assert(proxy_new(&cfg, &p) == 0);
		cr_assert(proxy_start(p) == 0);
		port = proxy_port(p, false);
		for (unsigned i = 0; i < per_round; i++) {
			snprintf(req, sizeof(req), "GET /none/r%u-%u HTTP/1.1\r\nHost: a\r\n"
				 "Connection: close\r\n\r\n", r, i);
			cr_assert_eq(request(port, req, NULL), 404);
			if (i + 2 == per_round)
				nanosleep(&(struct timespec){ 0, 150000000 }, NULL);
		}
		proxy_drain(p);
		proxy_free(p);
		close(log_fd);
	}
	read_file(path, buf, 1 << 20);
	for (unsigned r = 0; r < rounds; r++)
		for (unsigned i = 0; i < per_round; i++) {
			char needle[64];
			unsigned k;

			snprintf(needle, sizeof(needle), "path=/none/r%u-%u ", r, i);
			k = count_str(buf, needle);
			cr_expect_eq(k, 1, "'%s' logged %u times", needle, k);
		}
	cr_expect_eq(count_str(buf, "\n"), rounds * per_round);
	unlink(path);
	free(buf);
}

Test(proxy_hook, access_log_exactly_once_across_drain)
{
	drain_rounds(1);
}

Test(proxy_hook, access_log_exactly_once_across_drain_two_workers)
{
	drain_rounds(2);
}

/* Numbers in heads (Content-Length, RateLimit fields, the access log):
 * every digit count and both ends of uint64_t, against printf. */
Test(proxy_hook, fmt_u64_matches_printf)
{
	uint64_t p = 1;

	for (int k = 0; k <= 20; k++) {
		uint64_t vals[] = { p - 1, p, p + 1, p * 7 + 3, UINT64_MAX - p + 1 };

		for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
			char want[32], got[32] = { 0 };
			size_t n = proxy_fmt_u64(got, vals[i]);

			snprintf(want, sizeof(want), "%llu", (unsigned long long)vals[i]);
			cr_assert_eq(n, strlen(want), "%s", want);
			cr_assert_eq(memcmp(got, want, n), 0, "%s: got %.*s", want, (int)n, got);
		}
		if (k < 19)
			p *= 10;
	}
}

/* ---- per-client counters ---- */

static void get_as(uint16_t port, const char *path, const char *client, int want)
{
	char req[256];

	if (client)
		snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\nClient-ID: %s\r\n"
			 "Connection: close\r\n\r\n", path, client);
	else
		snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
			 path);
	cr_assert_eq(request(port, req, NULL), want, "%s as '%s'", path, client ? client : "");
}

static const struct proxy_client_count *row_of(const struct proxy_client_count *c, size_t n,
					       const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(c[i].client, id) == 0)
			return &c[i];
	return NULL;
}

Test(proxy_hook, client_counters_exact_with_cap_and_overflow)
{
	struct proxy_config cfg = {
		.workers = 1, .listen = "127.0.0.1:0", .policy = cell, .limiter = lim,
		.access_log_fd = -1, .max_clients = 2,
	};
	struct proxy_client_summary sum;
	struct proxy_client_count *c;
	struct metrics_buf b;
	struct proxy *p;
	size_t n;
	uint16_t port;

	cr_assert(proxy_new(&cfg, &p) == 0);
	cr_assert(proxy_start(p) == 0);
	port = proxy_port(p, false);
	cr_assert(proxy_client_counters(p, 10, &c, &n, &sum) == 0);
	cr_expect_eq(n, 0);
	cr_expect_null(c);
	cr_expect_eq(sum.clients, 0);

	/* c1: a REJECT limit of burst 1 (the upstream is down: 502). */
	get_as(port, "/lim", "c1", 502);
	get_as(port, "/lim", "c1", 429);
	get_as(port, "/lim", "c1", 429);
	/* c2: a SHADOW limit of burst 1: all pass, three over it. */
	for (int i = 0; i < 4; i++)
		get_as(port, "/sh", "c2", 502);
	/* Not counted per client: no header, a value no client has, no
	 * route, an access-list denial (decided before the client). */
	get_as(port, "/open", NULL, 502);
	get_as(port, "/open", "stranger", 502);
	get_as(port, "/nothing", "c1", 404);
	get_as(port, "/blocked", "c1", 403);
	/* c3 (by its key) finds the table full: overflow, twice. */
	get_as(port, "/open", "key-of-c3", 502);
	get_as(port, "/sh", "key-of-c3", 502);

	cr_assert(proxy_client_counters(p, 10, &c, &n, &sum) == 0);
	cr_assert_eq(n, 2, "rows: %zu", n);
	cr_expect_eq(sum.clients, 2);
	cr_expect_eq(sum.overflow, 2);
	/* Busiest first. */
	cr_expect_str_eq(c[0].client, "c2");
	cr_expect_eq(c[0].allowed, 4);
	cr_expect_eq(c[0].rejected, 0);
	cr_expect_eq(c[0].shadow_rejected, 3);
	cr_expect_str_eq(c[1].client, "c1");
	cr_expect_eq(c[1].allowed, 1);
	cr_expect_eq(c[1].rejected, 2);
	cr_expect_eq(c[1].shadow_rejected, 0);
	free(c);

	cr_assert(proxy_client_counters(p, 1, &c, &n, NULL) == 0);
	cr_assert_eq(n, 1);
	cr_expect_str_eq(c[0].client, "c2");
	free(c);

	/* /metrics shows the same rows through the same function. */
	metrics_buf_init(&b);
	proxy_metrics(p, &b);
	cr_assert_eq(b.err, 0);
	cr_expect(strstr(b.data, "sluice_proxy_client_decisions_total{client=\"c2\",outcome=\"allow\"} 4\n"));
	cr_expect(strstr(b.data, "sluice_proxy_client_decisions_total{client=\"c2\",outcome=\"shadow\"} 3\n"));
	cr_expect(strstr(b.data, "sluice_proxy_client_decisions_total{client=\"c1\",outcome=\"rate_limited\"} 2\n"));
	cr_expect(strstr(b.data, "sluice_proxy_client_decisions_total{client=\"c1\",outcome=\"shadow\"} 0\n"));
	cr_expect(!strstr(b.data, "client=\"c3\""));
	cr_expect(strstr(b.data, "sluice_proxy_client_overflow_total 2\n"));
	cr_expect(strstr(b.data, "sluice_proxy_clients_counted 2\n"));
	metrics_buf_done(&b);
	proxy_free(p);
}

/* Tables count per key presented: a client reached through two of its
 * keys, on two workers, is still one row with every decision in it. */
Test(proxy_hook, client_counters_merge_keys_of_one_client)
{
	struct proxy_config cfg = {
		.workers = 2, .listen = "127.0.0.1:0", .policy = cell, .limiter = lim,
		.access_log_fd = -1, .max_clients = 8,
	};
	struct proxy_client_summary sum;
	struct proxy_client_count *c;
	const struct proxy_client_count *r3;
	struct proxy *p;
	size_t n;
	uint16_t port;

	cr_assert(proxy_new(&cfg, &p) == 0);
	cr_assert(proxy_start(p) == 0);
	port = proxy_port(p, false);
	/* New connections each: the kernel spreads them over both workers. */
	for (int i = 0; i < 6; i++)
		get_as(port, "/open", i % 3 ? "key-of-c3" : "c3-alt", 502);
	get_as(port, "/sh", "c2", 502);
	cr_assert(proxy_client_counters(p, 10, &c, &n, &sum) == 0);
	cr_assert_eq(n, 2, "rows: %zu", n);
	cr_expect_eq(sum.clients, 2);
	cr_expect_eq(sum.overflow, 0);
	r3 = row_of(c, n, "c3");
	cr_assert_not_null(r3);
	cr_expect_eq(r3->allowed, 6);
	cr_expect_eq(r3->rejected, 0);
	cr_expect_str_eq(c[0].client, "c3");
	cr_expect_eq(row_of(c, n, "c2")->allowed, 1);
	free(c);
	proxy_free(p);
}

/* A metrics reader racing the worker: every scrape sees counts that only
 * grow (ASan/UBSan build: no torn reads of rows being published). */
struct scraper {
	struct proxy *p;
	_Atomic bool stop;
	_Atomic unsigned scrapes;
	_Atomic bool failed;
	bool went_down;
};

static void *scrape_loop(void *arg)
{
	struct scraper *sc = arg;
	uint64_t last = 0;

	while (!atomic_load(&sc->stop)) {
		struct proxy_client_count *c;
		size_t n;

		/* No cr_assert off the test's thread: record, check after. */
		if (proxy_client_counters(sc->p, 10, &c, &n, NULL) < 0) {
			sc->failed = true;
			break;
		}
		for (size_t i = 0; i < n; i++)
			if (strcmp(c[i].client, "c2") == 0) {
				if (c[i].allowed < last)
					sc->went_down = true;
				last = c[i].allowed;
			}
		free(c);
		sc->scrapes++;
	}
	return NULL;
}

Test(proxy_hook, client_counters_merge_workers)
{
	struct proxy_config cfg = {
		.workers = 2, .listen = "127.0.0.1:0", .policy = cell, .limiter = lim,
		.access_log_fd = -1,
	};
	struct scraper sc = { 0 };
	const struct proxy_client_count *r;
	struct proxy_client_count *c;
	struct proxy_client_summary sum;
	pthread_t t;
	size_t n;
	uint16_t port;
	const unsigned reqs = 40;

	/* More than the hard limit is refused. */
	cfg.max_clients = (1u << 20) + 1;
	cr_expect_eq(proxy_new(&cfg, &sc.p), -EINVAL);
	cfg.max_clients = 0;
	cr_assert(proxy_new(&cfg, &sc.p) == 0);
	cr_assert(proxy_start(sc.p) == 0);
	port = proxy_port(sc.p, false);
	cr_assert(pthread_create(&t, NULL, scrape_loop, &sc) == 0);
	/* The requests start once the scraper runs: on a busy machine the
	 * thread can otherwise first run after they all finished. */
	while (atomic_load(&sc.scrapes) == 0 && !atomic_load(&sc.failed))
		sched_yield();
	/* A new connection each time: the kernel's reuseport hash spreads
	 * them over both workers (all on one: 2^-39), so c2 has a row in
	 * each table and must come out as one. */
	for (unsigned i = 0; i < reqs; i++) {
		get_as(port, "/open", "c2", 502);
		if (i % 4 == 0)
			get_as(port, "/open", "c1", 502);
	}
	atomic_store(&sc.stop, true);
	pthread_join(t, NULL);
	cr_expect(!sc.failed, "proxy_client_counters failed while scraping");
	cr_expect(!sc.went_down, "a scrape saw c2's count go down");
	cr_expect(sc.scrapes > 0);

	cr_assert(proxy_client_counters(sc.p, 10, &c, &n, &sum) == 0);
	cr_assert_eq(n, 2, "rows: %zu", n);
	cr_expect_eq(sum.clients, 2);
	cr_expect_eq(sum.overflow, 0);
	r = row_of(c, n, "c2");
	cr_assert(r);
	cr_expect_eq(r->allowed, reqs);
	cr_expect_eq(r->rejected + r->shadow_rejected, 0);
	r = row_of(c, n, "c1");
	cr_assert(r);
	cr_expect_eq(r->allowed, reqs / 4);
	cr_expect_str_eq(c[0].client, "c2");
	free(c);
	proxy_free(sc.p);
}
