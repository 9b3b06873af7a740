/* snapshot_stress.c - readers on the published snapshot while one writer
 * applies and publishes thousands of random deltas.
 * Readers also run decisions against one shared limiter that the writer
 * keeps sweeping: each thread's client memo must never answer from an
 * older snapshot, and its bucket hints must survive buckets being swept.
 *
 * A plain program (no Criterion) so that ThreadSanitizer sees only these
 * threads. Readers check invariants a torn or freed snapshot would break;
 * the writer finally compares its snapshot with one built from scratch out
 * of its own model. Exit 0 on success, 1 with a message on failure.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include "decision.h"
#include "fixture.h"
#include "limiter.h"
#include "policy.h"
#include "policy_wire.h"
#include "snapshot.h"

#define RS "stress"
#define N_READERS 4
#define N_DELTAS 5000
#define NC 64 /* clients c0.. */
#define NR 8  /* rate limits r0.. */
#define NA 6  /* access lists a0.. */
#define NT 24 /* routes t0.. */

/* The writer's model of the ruleset: what each slot holds (-1 absent). */
struct model {
	int client_variant[NC], client_rl[NC];
	int rl_variant[NR];
	int al_variant[NA];
	int route_variant[NT], route_rl[NT], route_al[NT];
};

/* Shared between the writer and the readers for the whole run. */
static struct snapshot_cell *cell;
static int stop;
/* Client count of each published version, written before publication. */
static size_t expected_clients[N_DELTAS + 2];
static char failure[256];
static int failed;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;

	if (__atomic_exchange_n(&failed, 1, __ATOMIC_ACQ_REL))
		return;
	va_start(ap, fmt);
	vsnprintf(failure, sizeof(failure), fmt, ap);
	va_end(ap);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
}

static unsigned rnd(unsigned n)
{
	return (unsigned)(fixture_rand() % n);
}

/* ---- resources ---- */

static struct policy_res *decode(Sluice__V1__Resource *m)
{
	struct policy_errs e;
	struct policy_res *r = NULL;

	policy_errs_init(&e);
	if (policy_res_from_pb(m, &e, &r) < 0) {
		fprintf(stderr, "snapshot_stress: cannot make a resource: %s\n",
			e.n ? e.msg[0] : "?");
		exit(1);
	}
	return r;
}

static struct policy_res *mk_client(int i, int variant, int rl)
{
	Sluice__V1__Client c = SLUICE__V1__CLIENT__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;
	char id[16], k0[32], k1[32], rid[16];
	char *keys[2] = { k0, k1 };

	snprintf(id, sizeof(id), "c%d", i);
	/* Keys name their client, so readers can check what they find. */
	snprintf(k0, sizeof(k0), "key-c%d-%d", i, variant);
	snprintf(k1, sizeof(k1), "alt-c%d", i);
	snprintf(rid, sizeof(rid), "r%d", rl);
	c.id = id;
	c.n_keys = (size_t)(1 + variant % 2);
	c.keys = keys;
	c.rate_limit = rl >= 0 ? rid : NULL;
	c.priority = (uint32_t)variant;
	m.kind_case = SLUICE__V1__RESOURCE__KIND_CLIENT;
	m.client = &c;
	return decode(&m);
}

static struct policy_res *mk_rate_limit(int i, int variant)
{
	Sluice__V1__RateLimit rl = SLUICE__V1__RATE_LIMIT__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;
	char id[16];

	snprintf(id, sizeof(id), "r%d", i);
	rl.id = id;
	rl.algorithm = SLUICE__V1__ALGORITHM__TOKEN_BUCKET;
	rl.rate = (uint64_t)(10 + variant);
	rl.unit = SLUICE__V1__RATE_UNIT__SECOND;
	m.kind_case = SLUICE__V1__RESOURCE__KIND_RATE_LIMIT;
	m.rate_limit = &rl;
	return decode(&m);
}

static struct policy_res *mk_access_list(int i, int variant)
{
	Sluice__V1__AccessList al = SLUICE__V1__ACCESS_LIST__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;
	char id[16], cidr[32];
	char *list[1] = { cidr };

	snprintf(id, sizeof(id), "a%d", i);
	snprintf(cidr, sizeof(cidr), "10.%d.0.0/16", variant);
	al.id = id;
	if (variant % 2) {
		al.n_deny = 1;
		al.deny = list;
	} else {
		al.n_allow = 1;
		al.allow = list;
	}
	m.kind_case = SLUICE__V1__RESOURCE__KIND_ACCESS_LIST;
	m.access_list = &al;
	return decode(&m);
}

static struct policy_res *mk_upstream(void)
{
	Sluice__V1__Upstream up = SLUICE__V1__UPSTREAM__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;
	char *eps[1] = { "10.0.0.1:8080" };

	up.id = "u0";
	up.n_endpoints = 1;
	up.endpoints = eps;
	m.kind_case = SLUICE__V1__RESOURCE__KIND_UPSTREAM;
	m.upstream = &up;
	return decode(&m);
}

/* Route t<i> serves "/t<i>" (deeper with a variant) on host "" or
 * "h<i%3>.example", so its id is derivable from what it matches. */
static void route_target(int i, int variant, char *host, size_t hl, char *path, size_t pl)
{
	if (i % 4 == 0)
		snprintf(host, hl, "%s", "");
	else
		snprintf(host, hl, "h%d.example", i % 3);
	if (variant)
		snprintf(path, pl, "/t%d/v%d", i, variant);
	else
		snprintf(path, pl, "/t%d", i);
}

static struct policy_res *mk_route(int i, int variant, int rl, int al)
{
	Sluice__V1__Route rt = SLUICE__V1__ROUTE__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;
	char id[16], host[32], path[32], rid[16], aid[16];
	char *rls[1] = { rid }, *als[1] = { aid };

	snprintf(id, sizeof(id), "t%d", i);
	route_target(i, variant, host, sizeof(host), path, sizeof(path));
	snprintf(rid, sizeof(rid), "r%d", rl);
	snprintf(aid, sizeof(aid), "a%d", al);
	rt.id = id;
	rt.host = host;
	rt.path_prefix = path;
	rt.backend_case = SLUICE__V1__ROUTE__BACKEND_UPSTREAM;
	rt.upstream = "u0";
	rt.n_rate_limits = rl >= 0;
	rt.rate_limits = rls;
	rt.n_access_lists = al >= 0;
	rt.access_lists = als;
	m.kind_case = SLUICE__V1__RESOURCE__KIND_ROUTE;
	m.route = &rt;
	return decode(&m);
}

/* ---- readers ---- */

static void check_snapshot(const struct snapshot *s, uint64_t *last_version)
{
	uint64_t v = snapshot_version(s);
	size_t clients = 0;
	char id[16], key[32], host[32], path[48];

	if (v < *last_version)
		fail("version went back from %llu to %llu", (unsigned long long)*last_version,
		     (unsigned long long)v);
	*last_version = v;
	if (v >= N_DELTAS + 2)
		fail("version %llu out of range", (unsigned long long)v);
	if (snapshot_count(s, POLICY_KIND_CLIENT) != expected_clients[v])
		fail("version %llu: %zu clients, expected %zu", (unsigned long long)v,
		     snapshot_count(s, POLICY_KIND_CLIENT), expected_clients[v]);
	if (snapshot_count(s, 0) != snapshot_count(s, POLICY_KIND_CLIENT) +
				    snapshot_count(s, POLICY_KIND_RATE_LIMIT) +
				    snapshot_count(s, POLICY_KIND_ACCESS_LIST) +
				    snapshot_count(s, POLICY_KIND_ROUTE) +
				    snapshot_count(s, POLICY_KIND_UPSTREAM))
		fail("version %llu: kind counts do not add up", (unsigned long long)v);

	/* A few clients: present ones are found by their keys, and their
	 * rate limit exists. */
	for (int k = 0; k < 8; k++) {
		int i = (int)((v * 7 + (uint64_t)k * 13) % NC);
		const struct policy_res *c;

		snprintf(id, sizeof(id), "c%d", i);
		c = snapshot_get(s, POLICY_KIND_CLIENT, id);
		if (!c)
			continue;
		clients++;
		for (size_t j = 0; j < c->u.client.n_keys; j++) {
			const char *kk = c->u.client.keys[j];
			const struct policy_res *f = snapshot_find_client(s, kk, strlen(kk));

			if (f != c)
				fail("version %llu: key '%s' finds %s, not %s",
				     (unsigned long long)v, kk, f ? f->id : "nothing", id);
		}
		if (c->u.client.rate_limit.id &&
		    !snapshot_get_ref(s, POLICY_KIND_RATE_LIMIT, &c->u.client.rate_limit))
			fail("version %llu: %s names a missing rate limit", (unsigned long long)v,
			     id);
		snprintf(key, sizeof(key), "alt-c%d", i);
		const struct policy_res *alt = snapshot_find_client(s, key, strlen(key));
		if (alt && alt != c)
			fail("version %llu: '%s' finds the wrong client", (unsigned long long)v, key);
	}
	(void)clients;

	/* A few routes: a present route matches its own prefix and below. */
	for (int k = 0; k < 4; k++) {
		int i = (int)((v * 5 + (uint64_t)k * 7) % NT);
		const struct policy_res *t, *m;

		snprintf(id, sizeof(id), "t%d", i);
		t = snapshot_get(s, POLICY_KIND_ROUTE, id);
		if (!t)
			continue;
		snprintf(host, sizeof(host), "%s", t->u.route.host);
		snprintf(path, sizeof(path), "%s/x/y", t->u.route.match_prefix);
		m = snapshot_match_route(s, host, strlen(host), path, strlen(path));
		if (m != t)
			fail("version %llu: %s%s matches %s, not %s", (unsigned long long)v, host,
			     path, m ? m->id : "nothing", id);
		if (!snapshot_get_ref(s, POLICY_KIND_UPSTREAM, &t->u.route.upstream))
			fail("version %llu: %s has no upstream", (unsigned long long)v, id);
	}
}

static long total_reads, total_decisions;
/* Shared by every reader's decisions; swept by the writer. */
static struct limiter *lim;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One decision for client c<i>'s "alt" key on route t<j> (when present):
 * whatever the memo holds, a decision that gets as far as the client must
 * name the client this snapshot has for the key. Returns whether a limit
 * was checked. */
static bool check_decision(const struct snapshot *s, unsigned i, unsigned j)
{
	char key[32], tid[16], path[80];
	const struct policy_res *t;
	struct decision_request r = { 0 };
	struct decision d;

	snprintf(key, sizeof(key), "alt-c%u", i);
	snprintf(tid, sizeof(tid), "t%u", j);
	r.client_key = key;
	r.client_key_len = strlen(key);
	r.method = "GET";
	r.method_len = 3;
	r.host = "";
	r.path = "/";
	r.path_len = 1;
	r.source.family = AF_INET;
	r.source.addr[0] = 10;
	if ((t = snapshot_get(s, POLICY_KIND_ROUTE, tid))) {
		r.host = t->u.route.host;
		snprintf(path, sizeof(path), "%s/x", t->u.route.match_prefix);
		r.path = path;
		r.path_len = strlen(path);
	}
	r.host_len = strlen(r.host);
	decision_eval(s, lim, &r, mono_ns(), &d);
	/* Refused before the client stage (403, 404, 405): no client named. */
	if ((d.verdict == DECISION_ALLOW || d.verdict == DECISION_RATE_LIMITED) &&
	    d.client != snapshot_find_client(s, key, strlen(key)))
		fail("version %llu: key %s decided as %s", (unsigned long long)snapshot_version(s),
		     key, d.client ? d.client->id : "nobody");
	return d.limits_checked > 0;
}

static void *reader_main(void *arg)
{
	uint64_t last = 0, x = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
	long reads = 0, decisions = 0;

	snapshot_thread_online();
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		snapshot_read_lock();
		check_snapshot(snapshot_cell_get(cell), &last);
		snapshot_read_unlock();
		reads++;
		/* A few clients again and again, as traffic is: memo hits. */
		for (int k = 0; k < 8; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
			snapshot_read_lock();
			decisions += check_decision(snapshot_cell_get(cell), (unsigned)(x % 8),
						    (unsigned)(x >> 8) % NT);
			snapshot_read_unlock();
		}
	}
	snapshot_thread_offline();
	__atomic_add_fetch(&total_reads, reads, __ATOMIC_RELAXED);
	__atomic_add_fetch(&total_decisions, decisions, __ATOMIC_RELAXED);
	return NULL;
}

/* ---- writer ---- */

static bool rl_used(const struct model *m, int r)
{
	for (int i = 0; i < NC; i++)
		if (m->client_variant[i] >= 0 && m->client_rl[i] == r)
			return true;
	for (int i = 0; i < NT; i++)
		if (m->route_variant[i] >= 0 && m->route_rl[i] == r)
			return true;
	return false;
}

static bool al_used(const struct model *m, int a)
{
	for (int i = 0; i < NT; i++)
		if (m->route_variant[i] >= 0 && m->route_al[i] == a)
			return true;
	return false;
}

static int pick_present(const int *variant, int n)
{
	int i = (int)rnd((unsigned)n);

	for (int k = 0; k < n; k++, i = (i + 1) % n)
		if (variant[i] >= 0)
			return rnd(3) == 0 ? -1 : i;
	return -1;
}

static void add_up(struct policy_delta *d, struct policy_res *r)
{
	if (policy_delta_add_upsert(d, r) < 0) {
		fprintf(stderr, "snapshot_stress: out of memory\n");
		exit(1);
	}
	policy_res_unref(r);
}

/* One random change to the model, recorded in d. Each slot is touched at
 * most once per delta (touched[] marks it). The model is valid after every
 * change: references name only present slots, and a rate limit or list is
 * removed only when nothing in the model names it, so deltas apply. */
static void random_change(struct model *m, struct policy_delta *d, bool *touched)
{
	char id[16];
	int i;

	switch (rnd(8)) {
	case 0: case 1: case 2: /* client upsert */
		i = (int)rnd(NC);
		if (touched[i])
			return;
		touched[i] = true;
		m->client_variant[i] = (int)rnd(4);
		m->client_rl[i] = pick_present(m->rl_variant, NR);
		add_up(d, mk_client(i, m->client_variant[i], m->client_rl[i]));
		return;
	case 3: /* client remove */
		i = (int)rnd(NC);
		if (touched[i] || m->client_variant[i] < 0)
			return;
		touched[i] = true;
		m->client_variant[i] = -1;
		snprintf(id, sizeof(id), "c%d", i);
		policy_delta_add_remove(d, POLICY_KIND_CLIENT, id);
		return;
	case 4: /* rate limit upsert or remove */
		i = (int)rnd(NR);
		if (touched[NC + i])
			return;
		touched[NC + i] = true;
		if (m->rl_variant[i] >= 0 && !rl_used(m, i) && rnd(2)) {
			m->rl_variant[i] = -1;
			snprintf(id, sizeof(id), "r%d", i);
			policy_delta_add_remove(d, POLICY_KIND_RATE_LIMIT, id);
		} else {
			m->rl_variant[i] = (int)rnd(5);
			add_up(d, mk_rate_limit(i, m->rl_variant[i]));
		}
		return;
	case 5: /* access list upsert or remove */
		i = (int)rnd(NA);
		if (touched[NC + NR + i])
			return;
		touched[NC + NR + i] = true;
		if (m->al_variant[i] >= 0 && !al_used(m, i) && rnd(2)) {
			m->al_variant[i] = -1;
			snprintf(id, sizeof(id), "a%d", i);
			policy_delta_add_remove(d, POLICY_KIND_ACCESS_LIST, id);
		} else {
			m->al_variant[i] = (int)rnd(4);
			add_up(d, mk_access_list(i, m->al_variant[i]));
		}
		return;
	default: /* route upsert or remove */
		i = (int)rnd(NT);
		if (touched[NC + NR + NA + i])
			return;
		touched[NC + NR + NA + i] = true;
		if (m->route_variant[i] >= 0 && rnd(3) == 0) {
			m->route_variant[i] = -1;
			snprintf(id, sizeof(id), "t%d", i);
			policy_delta_add_remove(d, POLICY_KIND_ROUTE, id);
		} else {
			m->route_variant[i] = (int)rnd(3);
			m->route_rl[i] = pick_present(m->rl_variant, NR);
			m->route_al[i] = pick_present(m->al_variant, NA);
			add_up(d, mk_route(i, m->route_variant[i], m->route_rl[i], m->route_al[i]));
		}
		return;
	}
}

static struct snapshot *model_build(const struct model *m, uint64_t version)
{
	struct policy_res *v[1 + NC + NR + NA + NT];
	struct policy_errs e;
	struct snapshot *s = NULL;
	size_t n = 0;
	int rc;

	v[n++] = mk_upstream();
	for (int i = 0; i < NC; i++)
		if (m->client_variant[i] >= 0)
			v[n++] = mk_client(i, m->client_variant[i], m->client_rl[i]);
	for (int i = 0; i < NR; i++)
		if (m->rl_variant[i] >= 0)
			v[n++] = mk_rate_limit(i, m->rl_variant[i]);
	for (int i = 0; i < NA; i++)
		if (m->al_variant[i] >= 0)
			v[n++] = mk_access_list(i, m->al_variant[i]);
	for (int i = 0; i < NT; i++)
		if (m->route_variant[i] >= 0)
			v[n++] = mk_route(i, m->route_variant[i], m->route_rl[i], m->route_al[i]);
	policy_errs_init(&e);
	rc = snapshot_build(RS, version, v, n, &e, &s);
	for (size_t i = 0; i < n; i++)
		policy_res_unref(v[i]);
	if (rc < 0) {
		fprintf(stderr, "snapshot_stress: model does not build: %s\n", e.n ? e.msg[0] : "?");
		exit(1);
	}
	return s;
}

static size_t model_clients(const struct model *m)
{
	size_t n = 0;

	for (int i = 0; i < NC; i++)
		n += m->client_variant[i] >= 0;
	return n;
}

int main(void)
{
	struct model m;
	struct snapshot *cur, *expect;
	pthread_t th[N_READERS];
	size_t live_before = snapshot_live_count();
	unsigned applied = 0, refused = 0;

	memset(&m, 0xff, sizeof(m)); /* every slot absent (-1) */
	cur = model_build(&m, 1);
	expected_clients[1] = 0;
	if (snapshot_cell_new(snapshot_ref(cur), &cell) < 0) {
		fprintf(stderr, "snapshot_stress: out of memory\n");
		return 1;
	}
	/* Buckets idle for 1 ns go at the next sweep: most are swept while
	 * readers hold hints to them. */
	if (limiter_new(&(struct limiter_config){ .max_buckets = 4096, .idle_ttl_ns = 1 },
			&lim) < 0) {
		fprintf(stderr, "snapshot_stress: out of memory\n");
		return 1;
	}
	snapshot_thread_online();
	for (int i = 0; i < N_READERS; i++) {
		if (pthread_create(&th[i], NULL, reader_main, (void *)(uintptr_t)(i + 1)) != 0) {
			fprintf(stderr, "snapshot_stress: pthread_create failed\n");
			return 1;
		}
	}

	for (uint64_t v = 2; v < N_DELTAS + 2 && !__atomic_load_n(&failed, __ATOMIC_ACQUIRE); v++) {
		struct model next_m = m;
		bool touched[NC + NR + NA + NT] = { 0 };
		struct policy_delta *d = NULL;
		struct policy_errs e;
		struct snapshot *next = NULL;
		int n = 1 + (int)rnd(4), rc;

		if (policy_delta_new(RS, v - 1, v, &d) < 0) {
			fprintf(stderr, "snapshot_stress: out of memory\n");
			return 1;
		}
		for (int k = 0; k < n; k++)
			random_change(&next_m, d, touched);
		policy_errs_init(&e);
		rc = snapshot_apply(cur, d, &e, &next);
		policy_delta_free(d);
		if (rc < 0) {
			/* Should not happen (see random_change); report it
			 * and keep versions dense with an empty delta. */
			fprintf(stderr, "snapshot_stress: delta %llu refused: %s\n",
				(unsigned long long)v, e.n ? e.msg[0] : "?");
			refused++;
			if (policy_delta_new(RS, v - 1, v, &d) < 0 ||
			    snapshot_apply(cur, d, NULL, &next) < 0) {
				fprintf(stderr, "snapshot_stress: empty delta refused\n");
				return 1;
			}
			policy_delta_free(d);
		} else {
			m = next_m;
			applied++;
		}
		expected_clients[v] = model_clients(&m);
		snapshot_unref(cur);
		cur = next;
		snapshot_cell_publish(cell, snapshot_ref(cur));
		if (v % 16 == 0)
			limiter_sweep(lim, mono_ns());
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < N_READERS; i++)
		pthread_join(th[i], NULL);
	if (failed) {
		fprintf(stderr, "snapshot_stress: FAILED: %s\n", failure);
		return 1;
	}

	expect = model_build(&m, snapshot_version(cur));
	if (!snapshot_equal(cur, expect)) {
		fprintf(stderr, "snapshot_stress: FAILED: final snapshot differs from the model\n");
		return 1;
	}
	snapshot_unref(expect);
	snapshot_cell_free(cell);
	snapshot_unref(cur);
	snapshot_barrier();
	snapshot_thread_offline();
	if (snapshot_live_count() != live_before) {
		fprintf(stderr, "snapshot_stress: FAILED: %zu snapshots still alive\n",
			snapshot_live_count() - live_before);
		return 1;
	}
	if (refused || applied < N_DELTAS) {
		fprintf(stderr, "snapshot_stress: FAILED: only %u of %u deltas applied\n", applied,
			N_DELTAS);
		return 1;
	}
	limiter_free(lim);
	if (total_decisions == 0) {
		fprintf(stderr, "snapshot_stress: FAILED: no decision checked a limit\n");
		return 1;
	}
	printf("snapshot_stress: %u deltas applied, %u refused, %ld reads and %ld limited"
	       " decisions by %d readers\n", applied, refused, total_reads, total_decisions,
	       N_READERS);
	return 0;
}
