/* policy_bench.c - benchmark suite 'policy': the request-path decision and
 * the cost of applying a delta, against the full-copy snapshot design of
 * ../shared/origins/rcu-snapshots.md measured in the same run.
 *
 * decision_ns_*: one sample per request = RCU read lock + decision_eval +
 * unlock, timed with CLOCK_MONOTONIC around the call; the median cost of a
 * back-to-back pair of clock reads (~20 ns here) is subtracted from every
 * sample. As a cross-check of that correction, *_mean_batched times the
 * same request sequence with no clock per call (minus a loop that only
 * renders the requests): it should match *_mean. Each request is rendered
 * (host, path, client key, source) into one reused buffer just before its
 * timed call, as the proxy's parser hands the decision a request head it
 * has just read; the sequence of requests is drawn up front (Zipf s = 1,
 * uniform or hot) and is the same on every run. Rendering is not timed.
 * (Until 2026-11-22 every request was kept rendered in an 11 MiB array,
 * so each timed call also read its request from memory, a miss a real
 * decision does not have, and pushed the hot clients out of cache.)
 *
 * Prints `name: value` lines. With SLUICE_BENCH_RECORD=1 it also appends a
 * dated row to bench/RESULTS.md (path from SLUICE_BENCH_RESULTS). For
 * profiling (perf record), SLUICE_BENCH_ONLY=zipf|uniform|hot runs that one
 * decision mix and nothing else, and records nothing; SLUICE_BENCH_DECISIONS
 * then sets how many decisions it times (default 2,000,000).
 */
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_record.h"
#include "decision.h"
#include "fixture.h"
#include "limiter.h"
#include "snapshot.h"

#define N_CLIENTS 100000
#define N_HOSTS 100
#define N_PREFIXES 10   /* per host: N_HOSTS * N_PREFIXES = 1,000 routes */
#define N_LIMITS 10
#define N_DENY 1000
#define N_REQUESTS (1 << 16)
#define N_DECISIONS 2000000
/* Decisions per mix: N_DECISIONS, or SLUICE_BENCH_DECISIONS with
 * SLUICE_BENCH_ONLY (short runs under valgrind --tool=callgrind). */
static int n_decisions = N_DECISIONS;
#define N_APPLIES 2000
#define N_FULL_COPIES 30

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t percentile(uint64_t *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return v[(size_t)(p * (double)(n - 1))];
}

/* Reproducible inputs across runs. */
static uint64_t rng(void)
{
	return fixture_rand();
}

/* ---- the ruleset: 100,000 clients, 1,000 routes ---- */

static struct policy_res **make_resources(size_t *n_out)
{
	size_t cap = N_CLIENTS + N_HOSTS * N_PREFIXES + N_LIMITS + 16, n = 0;
	struct policy_res **res = calloc(cap, sizeof(*res));
	char *deny = malloc(N_DENY * 24 + 64), *p = deny;

	if (!res || !deny)
		abort();
	p += sprintf(p, "[");
	for (int i = 0; i < N_DENY; i++)
		p += sprintf(p, "%s\"100.%d.%d.0/24\"", i ? "," : "", 64 + i / 256, i % 256);
	sprintf(p, "]");

	res[n++] = fixture_res("{\"settings\": {\"id\": \"global\", \"defaultRateLimit\": \"rl0\","
			       " \"accessLists\": [\"deny\"]}}");
	res[n++] = fixture_res("{\"accessList\": {\"id\": \"deny\", \"deny\": %s}}", deny);
	res[n++] = fixture_res("{\"upstream\": {\"id\": \"up\", \"endpoints\": [\"127.0.0.1:9\"]}}");
	for (int i = 0; i < N_LIMITS; i++)
		res[n++] = fixture_res("{\"rateLimit\": {\"id\": \"rl%d\", \"algorithm\": \"%s\","
				       " \"rate\": \"1000000\", \"unit\": \"SECOND\"}}",
				       i, i % 2 ? "LEAKY_BUCKET" : "TOKEN_BUCKET");
	for (int i = 0; i < N_CLIENTS; i++)
		res[n++] = fixture_res("{\"client\": {\"id\": \"c%06d\", \"keys\": [\"key-%06d\"],"
				       " \"rateLimit\": \"rl%d\"}}", i, i, i % N_LIMITS);
	for (int h = 0; h < N_HOSTS; h++)
		for (int k = 0; k < N_PREFIXES; k++)
			res[n++] = fixture_res("{\"route\": {\"id\": \"r%d-%d\", \"host\":"
					       " \"h%d.example.com\", \"pathPrefix\": \"/svc%d/v1\","
					       " \"upstream\": \"up\"}}", h, k, h, k);
	free(deny);
	*n_out = n;
	return res;
}

/* Which client sends a request. Edge traffic is skewed: a few clients send
 * most requests (Zipf, s = 1). Uniform is the worst case for caches: every
 * request touches a cold client and a cold bucket. Hot (64 clients, all
 * cache resident) shows what a decision costs without memory stalls. */
enum mix { MIX_ZIPF, MIX_UNIFORM, MIX_HOT };

static int *shuffled_ids(void)
{
	/* rank -> client id, so hot clients are spread over the snapshot */
	int *perm = malloc(N_CLIENTS * sizeof(*perm));

	if (!perm)
		abort();
	for (int i = 0; i < N_CLIENTS; i++)
		perm[i] = i;
	for (int i = N_CLIENTS - 1; i > 0; i--) {
		int j = (int)(rng() % (uint64_t)(i + 1)), t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	return perm;
}

static int pick_client(enum mix mix, const double *cdf, const int *perm)
{
	if (mix == MIX_UNIFORM)
		return (int)(rng() % N_CLIENTS);
	if (mix == MIX_HOT)
		return perm[rng() % 64];
	double u = (double)(rng() >> 11) / 9007199254740992.0;
	size_t lo = 0, hi = N_CLIENTS - 1;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return perm[lo];
}

/* One request as the proxy's parser hands it to the decision: views into
 * the request head it just received. */
struct bench_req {
	struct decision_request req;
	char host[32];
	char path[48];
	char key[16];
};

/* What a request is, drawn up front; rendered into a bench_req just before
 * its decision (see bench_decision). */
struct req_spec {
	uint32_t ip;     /* host order */
	uint16_t host;   /* h<host>.example.com */
	uint16_t user;   /* /svc<prefix>/v1/users/<user> */
	uint32_t client; /* key-<client> */
	uint8_t prefix;
};

static void render(const struct req_spec *sp, struct bench_req *b)
{
	b->req.host = b->host;
	b->req.host_len = (size_t)snprintf(b->host, sizeof(b->host), "h%u.example.com", sp->host);
	b->req.path = b->path;
	b->req.path_len = (size_t)snprintf(b->path, sizeof(b->path), "/svc%u/v1/users/%u",
					   sp->prefix, sp->user);
	b->req.method = "GET";
	b->req.method_len = 3;
	b->req.client_key = b->key;
	b->req.client_key_len = (size_t)snprintf(b->key, sizeof(b->key), "key-%06u", sp->client);
	b->req.source.family = AF_INET;
	memcpy(b->req.source.addr, &(uint32_t){ __builtin_bswap32(sp->ip) }, 4);
}

static struct req_spec *make_requests(enum mix mix)
{
	struct req_spec *v = calloc(N_REQUESTS, sizeof(*v));
	double *cdf = malloc(N_CLIENTS * sizeof(*cdf)), sum = 0;
	int *perm = shuffled_ids();

	if (!v || !cdf)
		abort();
	for (int i = 0; i < N_CLIENTS; i++)
		cdf[i] = (sum += 1.0 / (i + 1));
	for (int i = 0; i < N_CLIENTS; i++)
		cdf[i] /= sum;
	for (int i = 0; i < N_REQUESTS; i++) {
		struct req_spec *sp = &v[i];

		/* Same draws, in the same order, as when requests were kept
		 * rendered: the same request sequence. */
		sp->ip = (10u << 24) | (uint32_t)(rng() & 0xffffff);
		sp->host = (uint16_t)(rng() % N_HOSTS);
		sp->prefix = (uint8_t)(rng() % N_PREFIXES);
		sp->user = (uint16_t)(rng() % 1000);
		sp->client = (uint32_t)pick_client(mix, cdf, perm);
	}
	free(cdf);
	free(perm);
	return v;
}

/* ---- decision_ns ---- */

/* Called once the warm-up is over: a mark for callgrind, whose last dump
 * then counts the timed decisions only. Instructions and (simulated) cache
 * misses per decision, which a shared machine's noise does not move:
 *   SLUICE_BENCH_ONLY=zipf SLUICE_BENCH_DECISIONS=100000 valgrind
 *     --tool=callgrind --cache-sim=yes --LL=2097152,16,64
 *     --dump-before=bench_warm --toggle-collect=decision_eval
 *     --toggle-collect=snapshot_read_lock --toggle-collect=snapshot_read_unlock
 *     --toggle-collect=snapshot_cell_get bench/policy_bench
 * then divide the last dump's totals by 2 * SLUICE_BENCH_DECISIONS (the
 * timed and the batched loop). --LL models this machine's 2 MiB L2. */
static __attribute__((noinline)) void bench_warm(void)
{
	__asm__ volatile("");
}

static void bench_decision(struct snapshot_cell *cell, enum mix mix, uint64_t *median,
			   uint64_t *p99, double *mean, double *mean_batched)
{
	struct req_spec *specs = make_requests(mix);
	uint64_t *lat = malloc((size_t)n_decisions * sizeof(*lat));
	uint64_t overhead[4096], sum = 0, t_both, t_render;
	struct bench_req b;
	struct limiter *lim;
	struct decision d;
	unsigned allowed = 0;

	if (!lat || limiter_new(&(struct limiter_config){ 0 }, &lim) < 0)
		abort();
	/* What a pair of clock reads costs, subtracted from every sample. */
	for (int i = 0; i < 4096; i++) {
		uint64_t t0 = now_ns();

		overhead[i] = now_ns() - t0;
	}
	uint64_t clock_cost = percentile(overhead, 4096, 0.5);

	/* One read section per request, as a proxy worker does: a section
	 * held for seconds would also stall the grace periods the limiter's
	 * hash table needs to grow. The warm-up creates every bucket, so the
	 * timed loop measures the steady state of a busy node. */
	for (int i = 0; i < N_REQUESTS * 4; i++) {
		render(&specs[i % N_REQUESTS], &b);
		snapshot_read_lock();
		decision_eval(snapshot_cell_get(cell), lim, &b.req, now_ns(), &d);
		snapshot_read_unlock();
	}
	bench_warm();
	for (int i = 0; i < n_decisions; i++) {
		uint64_t t0, t1;

		render(&specs[i % N_REQUESTS], &b);
		t0 = now_ns();
		snapshot_read_lock();
		decision_eval(snapshot_cell_get(cell), lim, &b.req, t0, &d);
		snapshot_read_unlock();
		t1 = now_ns();
		lat[i] = t1 - t0 > clock_cost ? t1 - t0 - clock_cost : 0;
		sum += lat[i];
		allowed += d.verdict == DECISION_ALLOW;
	}
	if (allowed != (unsigned)n_decisions) {
		fprintf(stderr, "policy_bench: only %u of %d requests allowed: the ruleset or"
			" the decision code is wrong\n", allowed, n_decisions);
		exit(1);
	}
	/* Cross-check of the clock correction: the same sequence without a
	 * clock per call, minus the rendering alone. */
	uint64_t t0 = now_ns();
	for (int i = 0; i < n_decisions; i++) {
		render(&specs[i % N_REQUESTS], &b);
		snapshot_read_lock();
		decision_eval(snapshot_cell_get(cell), lim, &b.req, t0 + (uint64_t)i, &d);
		snapshot_read_unlock();
	}
	t_both = now_ns() - t0;
	t0 = now_ns();
	for (int i = 0; i < n_decisions; i++) {
		render(&specs[i % N_REQUESTS], &b);
		__asm__ volatile("" : : "r"(&b) : "memory");
	}
	t_render = now_ns() - t0;
	*mean = (double)sum / n_decisions;
	*mean_batched = t_both > t_render ? (double)(t_both - t_render) / n_decisions : 0;
	*median = percentile(lat, n_decisions, 0.5);
	*p99 = percentile(lat, n_decisions, 0.99);
	limiter_free(lim);
	free(lat);
	free(specs);
}

/* ---- apply_delta_us: path copying ---- */

static double bench_apply(struct snapshot_cell *cell, size_t heap_base, size_t snap_bytes,
			  double *peak_ratio)
{
	uint64_t *lat = malloc(N_APPLIES * sizeof(*lat));
	size_t peak = 0;

	if (!lat)
		abort();
	for (int i = 0; i < N_APPLIES; i++) {
		int c = (int)(rng() % N_CLIENTS);
		struct policy_res *r = fixture_res("{\"client\": {\"id\": \"c%06d\", \"keys\":"
						   " [\"key-%06d\"], \"rateLimit\": \"rl%d\","
						   " \"priority\": %d}}", c, c, (c + i) % N_LIMITS,
						   1 + i % 200);
		const struct snapshot *cur;
		struct policy_delta *d;
		struct snapshot *next;
		struct policy_errs errs;
		uint64_t t0;

		snapshot_read_lock();
		cur = snapshot_cell_get(cell);
		if (policy_delta_new(snapshot_ruleset(cur), snapshot_version(cur),
				     snapshot_version(cur) + 1, &d) < 0 ||
		    policy_delta_add_upsert(d, r) < 0)
			abort();
		policy_errs_init(&errs);
		t0 = now_ns();
		if (snapshot_apply(cur, d, &errs, &next) < 0) {
			fprintf(stderr, "policy_bench: apply failed: %s\n", errs.n ? errs.msg[0] : "?");
			exit(1);
		}
		snapshot_read_unlock();
		snapshot_cell_publish(cell, next);
		lat[i] = now_ns() - t0;

		/* Old and new are both alive until the grace period ends: this
		 * is the peak. */
		size_t h = heap_in_use();
		if (h > peak)
			peak = h;
		policy_delta_free(d);
		policy_res_unref(r);
		if (i % 64 == 63)
			snapshot_barrier();
	}
	snapshot_barrier();
	*peak_ratio = (double)(peak - heap_base) / (double)snap_bytes;
	double us = (double)percentile(lat, N_APPLIES, 0.5) / 1000.0;
	free(lat);
	return us;
}

/* ---- full_copy_us: the origin design ----
 * "copy the whole map, change one entry, swap": the snapshot's maps are
 * plain hash tables (id -> rule, client key -> client); an update copies
 * every entry into new tables, changes one and swaps the pointer. Go's map
 * copy is iterate-and-insert; so is this. */

struct flat_entry {
	uint64_t hash;
	const void *key;
	size_t key_len;
	const struct policy_res *val;
};

struct flat_map {
	size_t cap; /* power of two */
	size_t count;
	struct flat_entry *slots;
};

static void flat_put(struct flat_map *m, uint64_t hash, const void *key, size_t key_len,
		     const struct policy_res *val)
{
	size_t i = hash & (m->cap - 1);

	while (m->slots[i].val) {
		if (m->slots[i].hash == hash && m->slots[i].key_len == key_len &&
		    memcmp(m->slots[i].key, key, key_len) == 0) {
			m->slots[i].val = val;
			return;
		}
		i = (i + 1) & (m->cap - 1);
	}
	m->slots[i] = (struct flat_entry){ hash, key, key_len, val };
	m->count++;
}

static struct flat_map *flat_new(size_t cap)
{
	struct flat_map *m = calloc(1, sizeof(*m));

	if (!m || !(m->slots = calloc(cap, sizeof(*m->slots))))
		abort();
	m->cap = cap;
	return m;
}

static struct flat_map *flat_copy(const struct flat_map *old)
{
	struct flat_map *m = flat_new(old->cap);

	for (size_t i = 0; i < old->cap; i++)
		if (old->slots[i].val)
			flat_put(m, old->slots[i].hash, old->slots[i].key, old->slots[i].key_len,
				 old->slots[i].val);
	return m;
}

static void flat_free(struct flat_map *m)
{
	if (m)
		free(m->slots);
	free(m);
}

struct full_snapshot {
	struct flat_map *by_id;
	struct flat_map *by_client_key;
};

static int flat_fill(void *arg, const struct policy_res *r)
{
	struct full_snapshot *fs = arg;

	flat_put(fs->by_id, r->key_hash, r->id, r->id_len, r);
	if (r->kind == POLICY_KIND_CLIENT)
		for (size_t k = 0; k < r->u.client.n_keys; k++)
			flat_put(fs->by_client_key, r->u.client.key_hashes[k],
				 r->u.client.keys[k], strlen(r->u.client.keys[k]), r);
	return 0;
}

static double bench_full_copy(const struct snapshot *s, size_t *copy_bytes)
{
	struct full_snapshot cur = { flat_new(1 << 18), flat_new(1 << 18) };
	struct full_snapshot *published = &cur;
	uint64_t lat[N_FULL_COPIES];

	snapshot_foreach(s, flat_fill, &cur);
	for (int i = 0; i < N_FULL_COPIES; i++) {
		struct full_snapshot *old = published, *next = malloc(sizeof(*next));
		size_t h0 = heap_in_use();
		uint64_t t0 = now_ns();

		next->by_id = flat_copy(old->by_id);
		next->by_client_key = flat_copy(old->by_client_key);
		const struct policy_res *r = snapshot_get(s, POLICY_KIND_CLIENT, "c000042");
		flat_put(next->by_id, r->key_hash, r->id, r->id_len, r);
		__atomic_store_n(&published, next, __ATOMIC_RELEASE);
		lat[i] = now_ns() - t0;
		*copy_bytes = heap_in_use() - h0;
		if (old != &cur) {
			flat_free(old->by_id);
			flat_free(old->by_client_key);
			free(old);
		}
	}
	struct full_snapshot *last = published;
	if (last != &cur) {
		flat_free(last->by_id);
		flat_free(last->by_client_key);
		free(last);
	}
	flat_free(cur.by_id);
	flat_free(cur.by_client_key);
	return (double)percentile(lat, N_FULL_COPIES, 0.5) / 1000.0;
}

int main(void)
{
	struct policy_errs errs;
	struct snapshot_cell *cell;
	struct snapshot *s;
	struct policy_res **res;
	size_t n, heap0, snap_bytes, copy_bytes = 0;
	uint64_t t0, dec_median, dec_p99, uni_median, uni_p99, hot_median, hot_p99;
	double apply_us, full_us, peak_ratio, mean, mean_batched;
	char line[512];
	const char *only;

	snapshot_thread_online();
	res = make_resources(&n);
	heap0 = heap_in_use();
	policy_errs_init(&errs);
	t0 = now_ns();
	if (snapshot_build("bench", 1, res, n, &errs, &s) < 0) {
		fprintf(stderr, "policy_bench: build failed: %s\n", errs.n ? errs.msg[0] : "?");
		return 1;
	}
	printf("snapshot_resources: %zu\n", snapshot_count(s, 0));
	printf("snapshot_routes: %zu\n", snapshot_count(s, POLICY_KIND_ROUTE));
	printf("snapshot_build_ms: %.1f\n", (double)(now_ns() - t0) / 1e6);
	/* The snapshot owns the resources now; its memory is the index cost
	 * on top of them. */
	for (size_t i = 0; i < n; i++)
		policy_res_unref(res[i]);
	free(res);
	snap_bytes = heap_in_use() - heap0;
	printf("snapshot_heap_mib: %.1f\n", (double)snap_bytes / (1 << 20));
	if (snapshot_cell_new(s, &cell) < 0)
		return 1;

	if ((only = getenv("SLUICE_BENCH_ONLY"))) {
		enum mix mix = !strcmp(only, "uniform") ? MIX_UNIFORM :
			       !strcmp(only, "hot") ? MIX_HOT : MIX_ZIPF;
		const char *count = getenv("SLUICE_BENCH_DECISIONS");

		if (count && atoi(count) > 0)
			n_decisions = atoi(count);

		bench_decision(cell, mix, &dec_median, &dec_p99, &mean, &mean_batched);
		printf("decision_%s_ns_median: %lu\n", only, (unsigned long)dec_median);
		printf("decision_%s_ns_p99: %lu\n", only, (unsigned long)dec_p99);
		printf("decision_%s_ns_mean: %.1f\n", only, mean);
		printf("decision_%s_ns_mean_batched: %.1f\n", only, mean_batched);
		snapshot_cell_free(cell);
		snapshot_thread_offline();
		return 0;
	}

	bench_decision(cell, MIX_ZIPF, &dec_median, &dec_p99, &mean, &mean_batched);
	printf("decision_ns_median: %lu\n", (unsigned long)dec_median);
	printf("decision_ns_p99: %lu\n", (unsigned long)dec_p99);
	printf("decision_ns_mean: %.1f\n", mean);
	printf("decision_ns_mean_batched: %.1f\n", mean_batched);
	bench_decision(cell, MIX_UNIFORM, &uni_median, &uni_p99, &mean, &mean_batched);
	printf("decision_uniform_ns_median: %lu\n", (unsigned long)uni_median);
	printf("decision_uniform_ns_p99: %lu\n", (unsigned long)uni_p99);
	bench_decision(cell, MIX_HOT, &hot_median, &hot_p99, &mean, &mean_batched);
	printf("decision_hot_ns_median: %lu\n", (unsigned long)hot_median);
	printf("decision_hot_ns_mean: %.1f\n", mean);
	printf("decision_hot_ns_mean_batched: %.1f\n", mean_batched);

	snapshot_barrier();
	snap_bytes = heap_in_use() - heap0;
	apply_us = bench_apply(cell, heap0, snap_bytes, &peak_ratio);
	printf("apply_delta_us: %.2f\n", apply_us);

	snapshot_read_lock();
	full_us = bench_full_copy(snapshot_cell_get(cell), &copy_bytes);
	snapshot_read_unlock();
	printf("full_copy_us: %.1f\n", full_us);
	printf("apply_speedup: %.0f\n", full_us / apply_us);
	printf("apply_peak_mem_ratio: %.4f\n", peak_ratio);
	printf("full_copy_peak_mem_ratio: %.4f\n", (double)(snap_bytes + copy_bytes) / (double)snap_bytes);

	snprintf(line, sizeof(line), "policy | %lu | %lu | %lu | %lu | %.2f | %.1f | %.0f | %.4f",
		 (unsigned long)dec_median, (unsigned long)dec_p99, (unsigned long)uni_median,
		 (unsigned long)hot_median, apply_us, full_us,
		 full_us / apply_us, peak_ratio);
	bench_record("policy_bench", "policy", line);

	snapshot_cell_free(cell);
	snapshot_thread_offline();
	return 0;
}
