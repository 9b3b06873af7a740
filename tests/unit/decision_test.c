/* decision_test.c - the per-request decision: order of checks, which limits
 * apply, buckets per client or per source, shadow and disabled, pacing. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decision.h"
#include "fixture.h"

#define S 1000000000ull

static struct limiter *lim;

static void setup(void)
{
	snapshot_thread_online();
	cr_assert_eq(limiter_new(&(struct limiter_config){ 0 }, &lim), 0);
}

static void teardown(void)
{
	limiter_free(lim);
	snapshot_thread_offline();
}

TestSuite(decision, .init = setup, .fini = teardown);

/* A ruleset from n resource JSON strings. */
static struct snapshot *build_n(const char *const *json, size_t n)
{
	return fixture_snapshot("t", json, n);
}

/* A ruleset from resource JSON strings (NULL-terminated). */
static struct snapshot *build(const char *const *json)
{
	size_t n = 0;

	while (json[n])
		n++;
	return build_n(json, n);
}

#define BASE_RESOURCES                                                                        \
	"{\"settings\": {\"id\": \"global\", \"defaultRateLimit\": \"anon\","                 \
	" \"accessLists\": [\"block\"]}}",                                                    \
	"{\"accessList\": {\"id\": \"block\", \"deny\": [\"192.0.2.0/24\", \"2001:db8::/32\"]}}", \
	"{\"accessList\": {\"id\": \"office\", \"allow\": [\"10.0.0.0/8\"]}}",               \
	"{\"rateLimit\": {\"id\": \"anon\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"2\","  \
	" \"unit\": \"SECOND\"}}",                                                            \
	"{\"rateLimit\": {\"id\": \"gold\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"5\","  \
	" \"unit\": \"SECOND\"}}",                                                            \
	"{\"rateLimit\": {\"id\": \"posts\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"1\"," \
	" \"unit\": \"MINUTE\", \"selector\": {\"method\": \"POST\"}}}",                      \
	"{\"rateLimit\": {\"id\": \"watch\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"1\"," \
	" \"unit\": \"MINUTE\", \"action\": \"SHADOW\"}}",                                    \
	"{\"rateLimit\": {\"id\": \"kernel\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"1\"," \
	" \"unit\": \"HOUR\", \"enforce\": \"KERNEL\"}}",                                     \
	"{\"rateLimit\": {\"id\": \"paced\", \"algorithm\": \"LEAKY_BUCKET\", \"rate\": \"1\"," \
	" \"unit\": \"SECOND\", \"burst\": \"3\"}}",                                          \
	"{\"client\": {\"id\": \"acme\", \"keys\": [\"k-acme\"], \"rateLimit\": \"gold\"}}", \
	"{\"client\": {\"id\": \"free\", \"rateLimit\": \"gold\", \"disabled\": true}}",      \
	"{\"client\": {\"id\": \"plain\"}}",                                                  \
	"{\"client\": {\"id\": \"slow\", \"rateLimit\": \"paced\"}}",                         \
	"{\"upstream\": {\"id\": \"up\", \"endpoints\": [\"127.0.0.1:8080\"]}}",            \
	"{\"route\": {\"id\": \"api\", \"pathPrefix\": \"/api\", \"upstream\": \"up\","       \
	" \"methods\": [\"GET\", \"POST\"], \"rateLimits\": [\"posts\", \"watch\", \"kernel\"]}}", \
	"{\"route\": {\"id\": \"admin\", \"host\": \"admin.example.com\", \"pathPrefix\": \"/\"," \
	" \"upstream\": \"up\", \"accessLists\": [\"office\"]}}"

static struct snapshot *base(void)
{
	static const char *const json[] = { BASE_RESOURCES, NULL };

	return build(json);
}

static struct decision_request request(const char *host, const char *method, const char *path,
				       const char *client, const char *source)
{
	struct decision_request r = {
		.host = host, .host_len = strlen(host),
		.path = path, .path_len = strlen(path),
		.method = method, .method_len = strlen(method),
		.client_key = client, .client_key_len = client ? strlen(client) : 0,
	};

	cr_assert_eq(cidr_addr_parse(source, &r.source), 0);
	return r;
}

/* Runs `n` identical requests at time t and returns how many were allowed. */
static unsigned allowed_of(const struct snapshot *s, const struct decision_request *r,
			   unsigned n, uint64_t t)
{
	unsigned ok = 0;
	struct decision d;

	for (unsigned i = 0; i < n; i++) {
		decision_eval(s, lim, r, t, &d);
		ok += d.verdict == DECISION_ALLOW;
	}
	return ok;
}

Test(decision, http_status_per_verdict)
{
	cr_expect_eq(decision_http_status(DECISION_ALLOW), 200);
	cr_expect_eq(decision_http_status(DECISION_DENY), 403);
	cr_expect_eq(decision_http_status(DECISION_NO_ROUTE), 404);
	cr_expect_eq(decision_http_status(DECISION_METHOD_NOT_ALLOWED), 405);
	cr_expect_eq(decision_http_status(DECISION_RATE_LIMITED), 429);
}

Test(decision, global_deny_list_refuses_before_routing)
{
	struct snapshot *s = base();
	struct decision d;
	struct decision_request r = request("x", "GET", "/nowhere", "k-acme", "192.0.2.9");

	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_DENY);
	cr_assert_str_eq(d.access_list->id, "block");
	r = request("x", "GET", "/api", NULL, "2001:db8::1");
	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_DENY);
	snapshot_unref(s);
}

Test(decision, route_allow_list_must_match)
{
	struct snapshot *s = base();
	struct decision d;
	struct decision_request r = request("admin.example.com", "GET", "/x", NULL, "8.8.8.8");

	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_DENY);
	cr_assert_str_eq(d.access_list->id, "office");
	r = request("admin.example.com", "GET", "/x", NULL, "10.2.3.4");
	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_ALLOW);
	cr_assert_str_eq(d.route->id, "admin");
	snapshot_unref(s);
}

Test(decision, unrouted_is_404_and_wrong_method_405)
{
	struct snapshot *s = base();
	struct decision d;
	struct decision_request r = request("x", "GET", "/apix", NULL, "10.0.0.1");

	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_NO_ROUTE);
	cr_assert_null(d.route);
	r = request("x", "DELETE", "/api/a", NULL, "10.0.0.1");
	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_METHOD_NOT_ALLOWED);
	cr_assert_str_eq(d.route->id, "api");
	snapshot_unref(s);
}

Test(decision, client_limit_admits_burst_then_429_with_retry_after)
{
	struct snapshot *s = base();
	struct decision d;
	struct decision_request r = request("x", "GET", "/api/a", "k-acme", "10.0.0.1");

	cr_assert_eq(allowed_of(s, &r, 5, S), 5);
	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_RATE_LIMITED);
	cr_assert_str_eq(d.client->id, "acme");
	cr_assert_str_eq(d.limit->id, "gold");
	cr_assert_gt(d.limit_result.retry_after_ns, 0);
	cr_assert_leq(d.limit_result.retry_after_ns, S / 5);
	/* One refill interval later, exactly one more request passes. */
	cr_assert_eq(allowed_of(s, &r, 2, S + S / 5), 1);
	snapshot_unref(s);
}

Test(decision, identified_client_shares_its_bucket_across_sources)
{
	struct snapshot *s = base();
	struct decision_request a = request("x", "GET", "/api/a", "k-acme", "10.0.0.1");
	struct decision_request b = request("x", "GET", "/api/a", "k-acme", "10.0.0.2");

	cr_assert_eq(allowed_of(s, &a, 3, S), 3);
	cr_assert_eq(allowed_of(s, &b, 5, S), 2);
	snapshot_unref(s);
}

/* The key hash a caller passes in (from decision_client_hint) gives the
 * same answers and bucket as decision_eval hashing the key itself, and the
 * decision hands back that hash only when the key named a client. */
Test(decision, client_hint_hash_is_the_one_decision_uses)
{
	struct snapshot *s = base();
	struct decision d;
	struct decision_request r = request("x", "GET", "/api/a", "k-acme", "10.0.0.1");
	struct decision_request u = request("x", "GET", "/api/a", "nobody", "10.0.0.1");
	uint64_t h = decision_client_hint("k-acme", 6);

	cr_assert_eq(h, snapshot_client_key_hash("k-acme", 6));
	cr_assert_neq(h, 0);
	/* Three by the caller's hash, then two by decision_eval's own: one
	 * bucket of burst 5. */
	r.client_key_hash = h;
	cr_assert_eq(allowed_of(s, &r, 3, S), 3);
	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.client_key_hash, h);
	cr_assert_str_eq(d.client->id, "acme");
	r.client_key_hash = 0;
	cr_assert_eq(allowed_of(s, &r, 3, S), 1);
	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_RATE_LIMITED);
	cr_assert_eq(d.client_key_hash, h);
	/* No client named: no hash. */
	u.client_key_hash = decision_client_hint("nobody", 6);
	decision_eval(s, lim, &u, S, &d);
	cr_assert_null(d.client);
	cr_assert_eq(d.client_key_hash, 0);
	snapshot_unref(s);
}

Test(decision, unknown_client_gets_default_limit_per_source)
{
	struct snapshot *s = base();
	struct decision d;
	struct decision_request a = request("x", "GET", "/api/a", "nobody", "10.0.0.1");
	struct decision_request b = request("x", "GET", "/api/a", NULL, "10.0.0.2");

	cr_assert_eq(allowed_of(s, &a, 4, S), 2);
	decision_eval(s, lim, &a, S, &d);
	cr_assert_null(d.client);
	cr_assert_str_eq(d.limit->id, "anon");
	cr_assert_eq(allowed_of(s, &b, 4, S), 2, "another source has its own bucket");
	snapshot_unref(s);
}

Test(decision, client_without_limit_gets_default)
{
	struct snapshot *s = base();
	struct decision_request r = request("x", "GET", "/api/a", "plain", "10.0.0.1");

	cr_assert_eq(allowed_of(s, &r, 4, S), 2);
	snapshot_unref(s);
}

Test(decision, disabled_client_is_not_limited)
{
	struct snapshot *s = base();
	struct decision_request r = request("x", "GET", "/api/a", "free", "10.0.0.1");

	cr_assert_eq(allowed_of(s, &r, 50, S), 50);
	snapshot_unref(s);
}

Test(decision, selector_limits_only_matching_requests)
{
	struct snapshot *s = base();
	struct decision d;
	struct decision_request post = request("x", "POST", "/api/a", "k-acme", "10.0.0.1");

	/* posts: 1/min for POST only; GETs are not counted against it. */
	decision_eval(s, lim, &post, S, &d);
	cr_assert_eq(d.verdict, DECISION_ALLOW);
	decision_eval(s, lim, &post, S, &d);
	cr_assert_eq(d.verdict, DECISION_RATE_LIMITED);
	cr_assert_str_eq(d.limit->id, "posts");
	struct decision_request get = request("x", "GET", "/api/a", "k-acme", "10.0.0.1");
	decision_eval(s, lim, &get, S, &d);
	cr_assert_eq(d.verdict, DECISION_ALLOW);
	snapshot_unref(s);
}

Test(decision, shadow_limit_counts_but_allows)
{
	struct snapshot *s = base();
	struct decision d;
	struct decision_request r = request("x", "GET", "/api/a", "k-acme", "10.0.0.1");

	/* watch: 1/min SHADOW on the route; the first request fits. */
	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.shadow_rejects, 0);
	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_ALLOW);
	cr_assert_eq(d.shadow_rejects, 1);
	cr_assert_str_eq(d.shadow[0]->id, "watch");
	snapshot_unref(s);
}

Test(decision, kernel_only_limit_is_left_to_the_kernel)
{
	struct snapshot *s = base();
	struct decision d;
	struct decision_request r = request("x", "GET", "/api/a", "k-acme", "10.0.0.1");

	/* kernel: 1/hour, KERNEL-enforced; the proxy checks gold, posts
	 * (no match) and watch: two limits, not three. */
	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_ALLOW);
	cr_assert_eq(d.limits_checked, 2);
	snapshot_unref(s);
}

Test(decision, leaky_bucket_paces_instead_of_bursting)
{
	struct snapshot *s = base();
	struct decision d;
	struct decision_request r = request("x", "GET", "/api/a", "slow", "10.0.0.1");

	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_ALLOW);
	cr_assert_eq(d.delay_ns, 0);
	decision_eval(s, lim, &r, S, &d);
	cr_assert_eq(d.verdict, DECISION_ALLOW);
	cr_assert_eq(d.delay_ns, S, "second request waits one interval, got %lu",
		     (unsigned long)d.delay_ns);
	snapshot_unref(s);
}

Test(decision, global_switch_off_allows_everything)
{
	static const char *const json[] = {
		"{\"settings\": {\"id\": \"global\", \"disabled\": true, \"accessLists\": [\"all\"]}}",
		"{\"accessList\": {\"id\": \"all\", \"deny\": [\"0.0.0.0/0\"]}}",
		"{\"upstream\": {\"id\": \"up\", \"endpoints\": [\"127.0.0.1:8080\"]}}",
		"{\"route\": {\"id\": \"r\", \"pathPrefix\": \"/\", \"upstream\": \"up\"}}",
		NULL,
	};
	struct snapshot *s = build(json);
	struct decision_request r = request("x", "GET", "/a", NULL, "10.0.0.1");

	cr_assert_eq(allowed_of(s, &r, 100, S), 100);
	snapshot_unref(s);
}

Test(decision, bucket_state_survives_a_policy_change)
{
	static const char *const v1[] = {
		"{\"rateLimit\": {\"id\": \"l\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"3\","
		" \"unit\": \"MINUTE\"}}",
		"{\"client\": {\"id\": \"c\", \"rateLimit\": \"l\"}}",
		"{\"upstream\": {\"id\": \"up\", \"endpoints\": [\"127.0.0.1:8080\"]}}",
		"{\"route\": {\"id\": \"r\", \"pathPrefix\": \"/\", \"upstream\": \"up\"}}",
		NULL,
	};
	static const char *const v2[] = {
		"{\"rateLimit\": {\"id\": \"l\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"4\","
		" \"unit\": \"MINUTE\"}}",
		"{\"client\": {\"id\": \"c\", \"rateLimit\": \"l\"}}",
		"{\"upstream\": {\"id\": \"up\", \"endpoints\": [\"127.0.0.1:8080\"]}}",
		"{\"route\": {\"id\": \"r\", \"pathPrefix\": \"/\", \"upstream\": \"up\"}}",
		NULL,
	};
	struct snapshot *a = build(v1), *b = build(v2);
	struct decision_request r = request("x", "GET", "/a", "c", "10.0.0.1");

	cr_assert_eq(allowed_of(a, &r, 3, S), 3);
	/* A new snapshot with a bigger limit: the spent bucket is still spent,
	 * not a fresh burst of 4. */
	cr_assert_leq(allowed_of(b, &r, 4, S), 1);
	snapshot_unref(a);
	snapshot_unref(b);
}

/* Each thread memoizes client lookups per snapshot (decision.c): a new
 * snapshot, even one at the address of a freed one, must be read afresh. */
#define MEMO_BASE                                                                              \
	"{\"rateLimit\": {\"id\": \"one\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"1\","  \
	" \"unit\": \"HOUR\"}}",                                                               \
	"{\"rateLimit\": {\"id\": \"many\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"1000\"," \
	" \"unit\": \"SECOND\"}}",                                                             \
	"{\"upstream\": {\"id\": \"up\", \"endpoints\": [\"127.0.0.1:8080\"]}}",              \
	"{\"route\": {\"id\": \"r\", \"pathPrefix\": \"/\", \"upstream\": \"up\"}}"

Test(decision, a_new_snapshot_is_not_answered_from_the_memo_of_the_old)
{
	static const char *const v1[] = {
		MEMO_BASE, "{\"client\": {\"id\": \"c\", \"keys\": [\"k\"], \"rateLimit\": \"one\"}}",
		NULL,
	};
	static const char *const v2[] = {
		MEMO_BASE, "{\"client\": {\"id\": \"c\", \"keys\": [\"k\"], \"rateLimit\": \"many\"}}",
		NULL,
	};
	static const char *const v3[] = { MEMO_BASE, NULL };
	static const char *const v4[] = {
		MEMO_BASE, "{\"client\": {\"id\": \"c\", \"keys\": [\"k\"], \"disabled\": true}}",
		NULL,
	};
	struct decision_request r = request("x", "GET", "/a", "k", "10.0.0.1");
	struct snapshot *s = build(v1);
	struct decision d;

	/* Twice, so the second answer comes from the memo. */
	for (int i = 0; i < 2; i++) {
		decision_eval(s, lim, &r, S, &d);
		cr_assert_str_eq(d.client->id, "c");
		cr_assert_str_eq(d.limit->id, "one");
	}
	cr_assert_eq(d.verdict, DECISION_RATE_LIMITED);
	snapshot_unref(s);

	/* Freed, then the next snapshot very likely reuses its memory. */
	s = build(v2);
	for (int i = 0; i < 2; i++) {
		decision_eval(s, lim, &r, S, &d);
		cr_assert_eq(d.verdict, DECISION_ALLOW);
		cr_assert_str_eq(d.limit->id, "many", "limit of the new snapshot, not the memo's");
	}
	snapshot_unref(s);

	s = build(v3);
	decision_eval(s, lim, &r, S, &d);
	cr_assert_null(d.client, "the key names no client any more");
	cr_assert_null(d.limit);
	snapshot_unref(s);

	s = build(v4);
	for (int i = 0; i < 2; i++) {
		decision_eval(s, lim, &r, S, &d);
		cr_assert_eq(d.verdict, DECISION_ALLOW);
		cr_assert_eq(d.limits_checked, 0, "a disabled client is not limited");
	}
	snapshot_unref(s);
}

Test(decision, memoized_and_fresh_answers_agree_over_many_clients)
{
	enum { N = 3000 };
	static const char *json[N + 8];
	static char buf[N][128];
	struct snapshot *s;
	struct decision a, b;
	size_t n = 0;

	json[n++] = "{\"rateLimit\": {\"id\": \"many\", \"algorithm\": \"TOKEN_BUCKET\","
		    " \"rate\": \"1000\", \"unit\": \"SECOND\"}}";
	json[n++] = "{\"rateLimit\": {\"id\": \"dflt\", \"algorithm\": \"TOKEN_BUCKET\","
		    " \"rate\": \"1000\", \"unit\": \"SECOND\"}}";
	json[n++] = "{\"settings\": {\"id\": \"global\", \"defaultRateLimit\": \"dflt\"}}";
	json[n++] = "{\"upstream\": {\"id\": \"up\", \"endpoints\": [\"127.0.0.1:8080\"]}}";
	json[n++] = "{\"route\": {\"id\": \"r\", \"pathPrefix\": \"/\", \"upstream\": \"up\"}}";
	for (int i = 0; i < N; i++) {
		/* Every third client has no limit (default), every fifth is off;
		 * some keys are too long for the memo. */
		snprintf(buf[i], sizeof(buf[i]),
			 "{\"client\": {\"id\": \"c%d\", \"keys\": [\"%s%d\"]%s%s}}", i,
			 i % 7 ? "k" : "a-key-longer-than-the-memo-holds-", i,
			 i % 3 ? ", \"rateLimit\": \"many\"" : "",
			 i % 5 ? "" : ", \"disabled\": true");
		json[n++] = buf[i];
	}
	json[n] = NULL;
	s = build_n(json, n);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N + 100; i++) {
			char key[64];

			snprintf(key, sizeof(key), "%s%d", i % 7 ? "k" : "a-key-longer-than-the-memo-holds-",
				 i);
			struct decision_request r = request("x", "GET", "/a", key, "10.0.0.1");

			decision_eval(s, lim, &r, S, &a);
			decision_eval(s, lim, &r, S, &b);
			cr_assert_eq(a.verdict, DECISION_ALLOW);
			cr_assert_eq(a.client, b.client);
			cr_assert_eq(a.limit, b.limit);
			if (i >= N) {
				cr_assert_null(a.client);
				continue;
			}
			cr_assert_not_null(a.client, "client %d", i);
			cr_assert_eq(a.client, snapshot_get(s, POLICY_KIND_CLIENT, a.client->id));
			if (i % 5 == 0)
				cr_assert_null(a.limit);
			else
				cr_assert_str_eq(a.limit->id, i % 3 ? "many" : "dflt", "client %d", i);
		}
	}
	snapshot_unref(s);
}

/* The memo is set-associative (decision.c: 8,192 sets of two ways, the set
 * taken from the top 13 bits of snapshot_client_key_hash, MEMO_SET_BITS). Four clients
 * whose keys share one set take turns: every answer names the right
 * client, and each one's bucket counts exactly, whichever way holds it or
 * whoever was evicted in between. */
Test(decision, clients_sharing_a_memo_set_keep_their_own_answers_and_counts)
{
	enum { K = 4 };
	static char keys[K][16], bufs[K][160];
	static const char *json[2 * K + 4];
	uint64_t top = 0;
	size_t n = 0, found = 0;
	struct snapshot *s;

	for (unsigned i = 0; found < K; i++) {
		char key[64] = { 0 };
		size_t len = (size_t)snprintf(key, 16, "k%u", i);
		uint64_t set = snapshot_client_key_hash(key, len) >> (64 - 13);

		cr_assert(i < 10000000, "no four keys share a set");
		if (found == 0)
			top = set;
		if (set == top)
			memcpy(keys[found++], key, len + 1);
	}
	json[n++] = "{\"upstream\": {\"id\": \"up\", \"endpoints\": [\"127.0.0.1:8080\"]}}";
	json[n++] = "{\"route\": {\"id\": \"r\", \"pathPrefix\": \"/\", \"upstream\": \"up\"}}";
	for (size_t k = 0; k < K; k++) {
		/* Client k may send k + 2 requests an hour. */
		snprintf(bufs[k], sizeof(bufs[k]),
			 "{\"rateLimit\": {\"id\": \"l%zu\", \"algorithm\": \"TOKEN_BUCKET\","
			 " \"rate\": \"%zu\", \"unit\": \"HOUR\", \"burst\": \"%zu\"}}", k, k + 2, k + 2);
		json[n++] = bufs[k];
	}
	static char cl[K][160];
	for (size_t k = 0; k < K; k++) {
		snprintf(cl[k], sizeof(cl[k]),
			 "{\"client\": {\"id\": \"c%zu\", \"keys\": [\"%s\"], \"rateLimit\": \"l%zu\"}}", k,
			 keys[k], k);
		json[n++] = cl[k];
	}
	json[n] = NULL;
	s = build_n(json, n);

	struct limiter *l;
	unsigned ok[K] = { 0 };

	cr_assert_eq(limiter_new(&(struct limiter_config){ 0 }, &l), 0);
	/* Uneven turns, so hit counts differ and ways get replaced. */
	static const unsigned order[] = { 0, 0, 1, 2, 0, 3, 1, 1, 2, 3, 3, 0, 2, 1, 3, 3, 2, 0,
					  1, 2, 3, 0, 1, 2, 3, 3, 3, 2, 1, 0 };
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		unsigned k = order[i];
		struct decision_request r = request("x", "GET", "/a", keys[k], "10.0.0.1");
		struct decision d;
		char id[8];

		decision_eval(s, l, &r, S, &d);
		snprintf(id, sizeof(id), "c%u", k);
		cr_assert_not_null(d.client);
		cr_assert_str_eq(d.client->id, id, "turn %zu", i);
		snprintf(id, sizeof(id), "l%u", k);
		cr_assert_str_eq(d.limit->id, id, "turn %zu", i);
		ok[k] += d.verdict == DECISION_ALLOW;
	}
	for (unsigned k = 0; k < K; k++)
		cr_assert_eq(ok[k], k + 2, "client %u: its burst exactly", k);
	limiter_free(l);
	snapshot_unref(s);
}

/* The memo also remembers where a client's bucket lives in the limiter
 * (a hint the limiter checks). Counts stay exact when the bucket is swept
 * and re-created, and when the same snapshot is evaluated against another
 * limiter; for a key at the memo's length limit and one just over it. */
Test(decision, memoized_bucket_slots_keep_counts_exact_across_sweeps_and_limiters)
{
	static const char *const json[] = {
		"{\"rateLimit\": {\"id\": \"three\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"3\","
		" \"unit\": \"HOUR\", \"burst\": \"3\"}}",
		"{\"client\": {\"id\": \"in\", \"keys\": [\"k-twenty-five-bytes-long!\"],"
		" \"rateLimit\": \"three\"}}",
		"{\"client\": {\"id\": \"out\", \"keys\": [\"k-twenty-six-bytes-long-xy\"],"
		" \"rateLimit\": \"three\"}}",
		"{\"upstream\": {\"id\": \"up\", \"endpoints\": [\"127.0.0.1:8080\"]}}",
		"{\"route\": {\"id\": \"r\", \"pathPrefix\": \"/\", \"upstream\": \"up\"}}",
		NULL,
	};
	static const char *const keys[] = { "k-twenty-five-bytes-long!", "k-twenty-six-bytes-long-xy" };
	struct snapshot *s = build(json);
	const uint64_t later = S + 2 * 3600 * S;

	/* MEMO_KEY_MAX in decision.c is 25. */
	cr_assert_eq(strlen(keys[0]), 25);
	cr_assert_eq(strlen(keys[1]), 26);
	for (size_t k = 0; k < 2; k++) {
		struct decision_request r = request("x", "GET", "/a", keys[k], "10.0.0.1");
		struct limiter *l1, *l2;
		unsigned ok = 0;
		struct decision d;

		cr_assert_eq(limiter_new(&(struct limiter_config){ .idle_ttl_ns = S }, &l1), 0);
		cr_assert_eq(limiter_new(&(struct limiter_config){ .idle_ttl_ns = S }, &l2), 0);
		for (int i = 0; i < 5; i++) {
			decision_eval(s, l1, &r, S, &d);
			ok += d.verdict == DECISION_ALLOW;
		}
		cr_assert_eq(ok, 3, "key %zu: the burst, then 429", k);
		cr_assert_str_eq(d.client->id, k ? "out" : "in");
		/* Full again after an hour, idle for a second: reclaimed. */
		cr_assert_eq(limiter_sweep(l1, later), 1);
		ok = 0;
		for (int i = 0; i < 5; i++) {
			decision_eval(s, l1, &r, later, &d);
			ok += d.verdict == DECISION_ALLOW;
		}
		cr_assert_eq(ok, 3, "key %zu: a swept bucket starts again full, once", k);
		/* Another limiter: its own fresh bucket; l1's stays spent. */
		ok = 0;
		for (int i = 0; i < 5; i++) {
			decision_eval(s, l2, &r, later, &d);
			ok += d.verdict == DECISION_ALLOW;
		}
		cr_assert_eq(ok, 3, "key %zu: another limiter's bucket", k);
		decision_eval(s, l1, &r, later, &d);
		cr_assert_eq(d.verdict, DECISION_RATE_LIMITED, "key %zu", k);
		cr_assert_eq(limiter_count(l1), 1);
		cr_assert_eq(limiter_count(l2), 1);
		limiter_free(l1);
		limiter_free(l2);
	}
	snapshot_unref(s);
}
