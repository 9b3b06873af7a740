/* store_test.c - the versioned ruleset store against a real etcd
 * (tests/integration). Every test gets its own etcd (etcd_helper) started in
 * .init and removed in .fini. Without /usr/bin/etcd the binary prints why
 * and exits 77 (skip).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/v1/admin.pb-c.h"

#include "etcd.h"
#include "etcd_helper.h"
#include "fixture.h"
#include "policy.h"
#include "snapshot.h"
#include "store.h"

#define TEST_TIMEOUT_MS 5000

__attribute__((constructor)) static void skip_without_etcd(void)
{
	char why[256];

	if (!etcd_helper_available(why, sizeof(why))) {
		fprintf(stderr, "store_test: skipped: %s\n", why);
		_exit(77);
	}
}

/* ---- fixture -------------------------------------------------------------- */

static struct etcd_helper *srv;
static struct etcd *cli;
static struct store *st;

static struct etcd *new_client(void)
{
	const char *ep[1] = { srv->endpoint };
	struct etcd_config cfg = { .endpoints = ep, .n_endpoints = 1,
				   .timeout_ms = TEST_TIMEOUT_MS };
	struct etcd *e = NULL;

	cr_assert_eq(etcd_new(&cfg, &e), 0);
	return e;
}

static struct store *new_store(struct etcd *e, const char *prefix)
{
	struct store_config cfg = { .etcd = e, .prefix = prefix };
	struct store *s = NULL;

	cr_assert_eq(store_new(&cfg, &s), 0);
	return s;
}

static void setup(void)
{
	cr_assert_eq(etcd_helper_start(&srv), 0, "cannot start etcd");
	cli = new_client();
	st = new_store(cli, NULL);
}

static void teardown(void)
{
	store_free(st);
	st = NULL;
	etcd_free(cli);
	cli = NULL;
	etcd_helper_free(srv);
	srv = NULL;
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers -------------------------------------------------------------- */

static struct policy_res *upstream(const char *id, int port)
{
	return fixture_res("{\"upstream\": {\"id\": \"%s\", \"endpoints\": [\"10.0.0.1:%d\"]}}",
			   id, port);
}

static struct policy_res *route(const char *id, const char *up)
{
	return fixture_res("{\"route\": {\"id\": \"%s\", \"pathPrefix\": \"/%s\","
			   " \"upstream\": \"%s\"}}", id, id, up);
}

static struct policy_res *client(const char *id, const char *key)
{
	return fixture_res("{\"client\": {\"id\": \"%s\", \"keys\": [\"%s\"]}}", id, key);
}

/* A change of `n` upserts (references consumed by apply_change) and `nr`
 * removes. Lives on the test's stack. */
struct change {
	const char *rs;
	struct policy_res *up[8];
	size_t n;
	struct policy_key rm[8];
	size_t nr;
	uint64_t expected;
	const char *author;
	const char *message;
	bool dry_run;
};

static int apply_change(struct store *s, struct change *c, struct policy_errs *errs,
			struct store_version *out)
{
	struct store_change ch = {
		.ruleset = c->rs, .upserts = c->up, .n_upserts = c->n,
		.removes = c->rm, .n_removes = c->nr, .expected_version = c->expected,
		.author = c->author, .message = c->message, .dry_run = c->dry_run,
	};
	int r = store_apply(s, &ch, errs, out);

	for (size_t i = 0; i < c->n; i++)
		policy_res_unref(c->up[i]);
	c->n = 0;
	return r;
}

static uint64_t apply_ok(struct change c)
{
	struct store_version v;
	struct policy_errs errs;
	uint64_t version;
	int r;

	policy_errs_init(&errs);
	r = apply_change(st, &c, &errs, &v);
	cr_assert_eq(r, 0, "apply: %d (%s)", r, errs.n ? errs.msg[0] : "");
	version = v.version;
	cr_assert_gt(version, 0);
	store_version_done(&v);
	return version;
}

static struct policy_key key(enum policy_kind kind, const char *id)
{
	struct policy_key k = { .kind = kind };

	snprintf(k.id, sizeof(k.id), "%s", id);
	return k;
}

/* The store revision now (a read of any key reports it). */
static int64_t store_revision(void)
{
	struct etcd_range_result rr;
	int64_t rev;

	cr_assert_eq(etcd_range(cli, "x", 1, NULL, 0, 0, 0, &rr), 0);
	rev = rr.revision;
	etcd_range_result_done(&rr);
	return rev;
}

static struct snapshot *get_ok(const char *rs, uint64_t version)
{
	struct snapshot *s = NULL;
	int r = store_get(st, rs, version, &s);

	cr_assert_eq(r, 0, "get %s@%llu: %d", rs, (unsigned long long)version, r);
	return s;
}

/* The snapshot the given resources make (references consumed). */
static struct snapshot *expect(const char *rs, struct policy_res **res, size_t n)
{
	struct snapshot *s = NULL;

	cr_assert_eq(snapshot_build(rs, 1, res, n, NULL, &s), 0);
	for (size_t i = 0; i < n; i++)
		policy_res_unref(res[i]);
	return s;
}

static bool errs_contain(const struct policy_errs *e, const char *needle)
{
	for (unsigned i = 0; i < e->n; i++)
		if (strstr(e->msg[i], needle))
			return true;
	return false;
}

/* ---- apply and get -------------------------------------------------------- */

Test(store, first_apply_creates_ruleset_at_txn_revision)
{
	struct change c = { .rs = "prod", .up = { upstream("u1", 80), route("api", "u1") },
			    .n = 2, .author = "alice", .message = "init" };
	struct store_version v;
	struct etcd_range_result rr;
	struct snapshot *got, *want;
	const char *hk = "/sluice/v1/rulesets/prod/head";

	cr_assert_eq(apply_change(st, &c, NULL, &v), 0);
	cr_assert_gt(v.version, 0);
	cr_assert_eq(v.upserts, 2);
	cr_assert_eq(v.removes, 0);
	cr_assert_eq(v.resources, 2);
	cr_assert_str_eq(v.author, "alice");
	cr_assert_str_eq(v.ruleset, "prod");

	cr_assert_eq(etcd_range(cli, hk, strlen(hk), NULL, 0, 0, 0, &rr), 0);
	cr_assert_eq(rr.n_kvs, 1);
	cr_assert_eq((uint64_t)rr.kvs[0].mod_revision, v.version);
	cr_assert_eq(rr.revision, (int64_t)v.version, "the txn is the last write");
	etcd_range_result_done(&rr);

	got = get_ok("prod", 0);
	want = expect("prod", (struct policy_res *[]){ upstream("u1", 80), route("api", "u1") }, 2);
	cr_assert(snapshot_equal(got, want));
	cr_assert_eq(snapshot_version(got), v.version);
	snapshot_unref(want);
	snapshot_unref(got);
	store_version_done(&v);
}

Test(store, resources_stored_as_canonical_bytes_under_kind_and_id)
{
	struct policy_res *u = upstream("u1", 80);
	struct etcd_range_result rr;
	const char *k = "/sluice/v1/rulesets/prod/res/upstream/u1";

	apply_ok((struct change){ .rs = "prod", .up = { policy_res_ref(u) }, .n = 1 });
	cr_assert_eq(etcd_range(cli, k, strlen(k), NULL, 0, 0, 0, &rr), 0);
	cr_assert_eq(rr.n_kvs, 1);
	cr_assert_eq(rr.kvs[0].value_len, u->canon_len);
	cr_assert_eq(memcmp(rr.kvs[0].value, u->canon, u->canon_len), 0);
	etcd_range_result_done(&rr);
	policy_res_unref(u);
}

Test(store, old_version_stays_readable_after_second_apply)
{
	uint64_t v1, v2;
	struct snapshot *s1, *s2, *w1, *w2;

	v1 = apply_ok((struct change){ .rs = "prod",
				       .up = { upstream("u1", 80), route("api", "u1") }, .n = 2 });
	v2 = apply_ok((struct change){ .rs = "prod", .up = { upstream("u1", 81), client("c1", "k1") },
				       .n = 2, .expected = v1 });
	cr_assert_gt(v2, v1);

	s1 = get_ok("prod", v1);
	s2 = get_ok("prod", v2);
	w1 = expect("prod", (struct policy_res *[]){ upstream("u1", 80), route("api", "u1") }, 2);
	w2 = expect("prod", (struct policy_res *[]){ upstream("u1", 81), route("api", "u1"),
						     client("c1", "k1") }, 3);
	cr_assert(snapshot_equal(s1, w1));
	cr_assert(snapshot_equal(s2, w2));
	cr_assert_eq(snapshot_version(s1), v1);
	cr_assert_eq(snapshot_version(s2), v2);
	snapshot_unref(s1);
	snapshot_unref(s2);
	snapshot_unref(w1);
	snapshot_unref(w2);
}

Test(store, removes_delete_the_resource_key)
{
	struct etcd_range_result rr;
	struct snapshot *s;
	const char *k = "/sluice/v1/rulesets/prod/res/client/c1";

	apply_ok((struct change){ .rs = "prod", .up = { client("c1", "k1"), client("c2", "k2") },
				  .n = 2 });
	apply_ok((struct change){ .rs = "prod", .rm = { key(POLICY_KIND_CLIENT, "c1") }, .nr = 1 });
	cr_assert_eq(etcd_range(cli, k, strlen(k), NULL, 0, 0, 0, &rr), 0);
	cr_assert_eq(rr.n_kvs, 0);
	etcd_range_result_done(&rr);
	s = get_ok("prod", 0);
	cr_assert_eq(snapshot_count(s, 0), 1);
	cr_assert_not_null(snapshot_get(s, POLICY_KIND_CLIENT, "c2"));
	snapshot_unref(s);
}

Test(store, unchanged_upsert_is_not_counted_but_still_versions)
{
	struct change c = { .rs = "prod", .up = { client("c1", "k1") }, .n = 1 };
	struct store_version v;
	uint64_t v1;

	v1 = apply_ok((struct change){ .rs = "prod", .up = { client("c1", "k1") }, .n = 1 });
	cr_assert_eq(apply_change(st, &c, NULL, &v), 0);
	cr_assert_gt(v.version, v1);
	cr_assert_eq(v.upserts, 0);
	cr_assert_eq(v.n_touched, 0);
	cr_assert_eq(v.resources, 1);
	store_version_done(&v);
}

Test(store, get_refuses_unknown_ruleset_and_foreign_versions)
{
	struct snapshot *s = NULL;
	uint64_t va, vb;

	cr_assert_eq(store_get(st, "nope", 0, &s), -ENOENT);
	va = apply_ok((struct change){ .rs = "a", .up = { client("c1", "k1") }, .n = 1 });
	vb = apply_ok((struct change){ .rs = "b", .up = { client("c1", "k1") }, .n = 1 });
	cr_assert_eq(store_get(st, "a", vb, &s), -ENOENT, "b's version is not a's");
	cr_assert_eq(store_get(st, "b", va, &s), -ENOENT, "b did not exist at a's version");
	cr_assert_eq(store_get(st, "a", vb + 1000, &s), -ENOENT, "future revision");
	cr_assert_eq(store_get(st, "Bad/Name", 0, &s), -EINVAL);
	cr_assert_null(s);
}

/* ---- validation ----------------------------------------------------------- */

Test(store, validation_error_names_the_field_and_writes_nothing)
{
	struct change c = { .rs = "prod", .up = { client("b", "shared") }, .n = 1 };
	struct policy_errs errs;
	struct store_version v = { .version = 12345 };
	int64_t before;

	apply_ok((struct change){ .rs = "prod", .up = { client("a", "shared") }, .n = 1 });
	before = store_revision();
	policy_errs_init(&errs);
	cr_assert_eq(apply_change(st, &c, &errs, &v), -EINVAL);
	cr_assert(errs_contain(&errs, "client/b.keys[0]"), "%s", errs.msg[0]);
	cr_assert_eq(v.version, 12345, "out untouched on failure");
	cr_assert_eq(store_revision(), before);
}

Test(store, dangling_reference_refused)
{
	struct change c = { .rs = "prod", .up = { route("api", "missing") }, .n = 1 };
	struct change rm = { .rs = "prod", .rm = { key(POLICY_KIND_UPSTREAM, "u1") }, .nr = 1 };
	struct policy_errs errs;
	int64_t before = store_revision();

	policy_errs_init(&errs);
	cr_assert_eq(apply_change(st, &c, &errs, NULL), -EINVAL);
	cr_assert(errs_contain(&errs, "route/api.upstream: upstream/missing does not exist"),
		  "%s", errs.msg[0]);
	cr_assert_eq(store_revision(), before, "refused change of a new ruleset writes nothing");

	/* Removing what a route still needs is refused too. */
	apply_ok((struct change){ .rs = "prod", .up = { upstream("u1", 80), route("api", "u1") },
				  .n = 2 });
	before = store_revision();
	policy_errs_init(&errs);
	cr_assert_eq(apply_change(st, &rm, &errs, NULL), -EINVAL);
	cr_assert(errs_contain(&errs, "upstream/u1"), "%s", errs.msg[0]);
	cr_assert_eq(store_revision(), before);
}

Test(store, removing_an_absent_resource_refused)
{
	struct change c = { .rs = "prod", .rm = { key(POLICY_KIND_CLIENT, "ghost") }, .nr = 1 };
	struct policy_errs errs;

	apply_ok((struct change){ .rs = "prod", .up = { client("c1", "k1") }, .n = 1 });
	policy_errs_init(&errs);
	cr_assert_eq(apply_change(st, &c, &errs, NULL), -EINVAL);
	cr_assert(errs_contain(&errs, "client/ghost"), "%s", errs.msg[0]);
}

Test(store, bad_ruleset_name_and_oversized_author_refused)
{
	struct change c1 = { .rs = "Bad Name", .up = { client("c1", "k1") }, .n = 1 };
	struct change c2 = { .rs = "prod", .up = { client("c1", "k1") }, .n = 1 };
	struct policy_errs errs;
	char author[STORE_MAX_AUTHOR_LEN + 2];

	policy_errs_init(&errs);
	cr_assert_eq(apply_change(st, &c1, &errs, NULL), -EINVAL);
	cr_assert(errs_contain(&errs, "ruleset:"));
	memset(author, 'a', sizeof(author) - 1);
	author[sizeof(author) - 1] = '\0';
	c2.author = author;
	policy_errs_init(&errs);
	cr_assert_eq(apply_change(st, &c2, &errs, NULL), -EINVAL);
	cr_assert(errs_contain(&errs, "author:"));
}

Test(store, change_beyond_txn_op_cap_refused)
{
	struct store_config cfg = { .etcd = cli, .max_txn_ops = 4 };
	struct change c = { .rs = "prod", .up = { client("c1", "k1"), client("c2", "k2"),
						 client("c3", "k3") }, .n = 3 };
	struct store *small;
	int64_t before = store_revision();

	cr_assert_eq(store_new(&cfg, &small), 0);
	cr_assert_eq(apply_change(small, &c, NULL, NULL), -E2BIG);
	cr_assert_eq(store_revision(), before);
	store_free(small);
}

/* ---- expected_version and races ------------------------------------------- */

Test(store, stale_expected_version_refused_and_writes_nothing)
{
	struct change c = { .rs = "prod", .up = { client("c3", "k3") }, .n = 1 };
	struct change fresh = { .rs = "new", .up = { client("c1", "k1") }, .n = 1, .expected = 7 };
	uint64_t v1;
	int64_t before;

	v1 = apply_ok((struct change){ .rs = "prod", .up = { client("c1", "k1") }, .n = 1 });
	apply_ok((struct change){ .rs = "prod", .up = { client("c2", "k2") }, .n = 1,
				  .expected = v1 });
	before = store_revision();
	c.expected = v1;
	cr_assert_eq(apply_change(st, &c, NULL, NULL), -ESTALE);
	cr_assert_eq(apply_change(st, &fresh, NULL, NULL), -ESTALE, "no head to match");
	cr_assert_eq(store_revision(), before);
}

/* One thread of run_race; owned by run_race's caller, lives until it returns. */
struct racer {
	struct store *store;
	pthread_barrier_t *go;
	const char *id;
	uint64_t expected;
	int result;
	uint64_t version;
};

static void *race(void *arg)
{
	struct racer *rc = arg;
	char k[64];
	struct change c = { .rs = "prod", .n = 1 };
	struct store_version v = { 0 };

	snprintf(k, sizeof(k), "key-%s", rc->id);
	c.up[0] = client(rc->id, k);
	c.expected = rc->expected;
	pthread_barrier_wait(rc->go);
	rc->result = apply_change(rc->store, &c, NULL, &v);
	rc->version = v.version;
	store_version_done(&v);
	return NULL;
}

/* Runs two appliers at once, each on its own etcd connection. */
static void run_race(uint64_t expected, const char *id0, const char *id1, struct racer rc[2])
{
	struct etcd *e[2] = { new_client(), new_client() };
	pthread_barrier_t go;
	pthread_t t[2];
	const char *ids[2] = { id0, id1 };

	pthread_barrier_init(&go, NULL, 2);
	for (int i = 0; i < 2; i++) {
		rc[i] = (struct racer){ .store = new_store(e[i], NULL), .go = &go, .id = ids[i],
					.expected = expected };
		cr_assert_eq(pthread_create(&t[i], NULL, race, &rc[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		store_free(rc[i].store);
		etcd_free(e[i]);
	}
	pthread_barrier_destroy(&go);
}

Test(store, concurrent_writers_with_same_expected_version_exactly_one_wins)
{
	uint64_t head = apply_ok((struct change){ .rs = "prod", .up = { client("c0", "k0") },
						  .n = 1 });

	for (int round = 0; round < 5; round++) {
		struct racer rc[2];
		char a[16], b[16];
		struct snapshot *s;
		int winner;

		snprintf(a, sizeof(a), "a%d", round);
		snprintf(b, sizeof(b), "b%d", round);
		run_race(head, a, b, rc);
		cr_assert((rc[0].result == 0) != (rc[1].result == 0),
			  "round %d: results %d and %d", round, rc[0].result, rc[1].result);
		winner = rc[0].result == 0 ? 0 : 1;
		cr_assert_eq(rc[1 - winner].result, -ESTALE);
		s = get_ok("prod", 0);
		cr_assert_eq(snapshot_version(s), rc[winner].version);
		cr_assert_not_null(snapshot_get(s, POLICY_KIND_CLIENT, rc[winner].id));
		cr_assert_null(snapshot_get(s, POLICY_KIND_CLIENT, rc[1 - winner].id));
		head = rc[winner].version;
		snapshot_unref(s);
	}
}

Test(store, concurrent_writers_not_caring_about_version_both_win)
{
	apply_ok((struct change){ .rs = "prod", .up = { client("c0", "k0") }, .n = 1 });
	for (int round = 0; round < 5; round++) {
		struct racer rc[2];
		char a[16], b[16];
		struct snapshot *s;

		snprintf(a, sizeof(a), "a%d", round);
		snprintf(b, sizeof(b), "b%d", round);
		run_race(0, a, b, rc);
		cr_assert_eq(rc[0].result, 0, "round %d", round);
		cr_assert_eq(rc[1].result, 0, "round %d", round);
		cr_assert_neq(rc[0].version, rc[1].version);
		s = get_ok("prod", 0);
		cr_assert_not_null(snapshot_get(s, POLICY_KIND_CLIENT, a));
		cr_assert_not_null(snapshot_get(s, POLICY_KIND_CLIENT, b));
		cr_assert_eq(snapshot_version(s),
			     rc[0].version > rc[1].version ? rc[0].version : rc[1].version);
		snapshot_unref(s);
	}
}

/* A competing change committed between the store's read and its commit. */
static int competitor_runs;
static void compete(void *arg)
{
	struct store *other = arg;
	struct change c = { .rs = "prod", .n = 1 };

	if (competitor_runs++ > 0)
		return;
	c.up[0] = client("rival", "k-rival");
	cr_assert_eq(apply_change(other, &c, NULL, NULL), 0);
}

static struct store *store_with_competitor(void)
{
	struct store_config cfg = { .etcd = cli, .before_commit = compete,
				    .before_commit_arg = st };

	struct store *s = NULL;

	competitor_runs = 0;
	cr_assert_eq(store_new(&cfg, &s), 0);
	return s;
}

Test(store, lost_race_after_read_is_stale_with_expected_version)
{
	struct store *s = store_with_competitor();
	uint64_t v1 = apply_ok((struct change){ .rs = "prod", .up = { client("c0", "k0") }, .n = 1 });
	struct change c = { .rs = "prod", .up = { client("mine", "k-mine") }, .n = 1,
			    .expected = v1 };
	struct snapshot *head;

	cr_assert_eq(apply_change(s, &c, NULL, NULL), -ESTALE);
	cr_assert_eq(competitor_runs, 1);
	head = get_ok("prod", 0);
	cr_assert_not_null(snapshot_get(head, POLICY_KIND_CLIENT, "rival"));
	cr_assert_null(snapshot_get(head, POLICY_KIND_CLIENT, "mine"));
	snapshot_unref(head);
	store_free(s);
}

Test(store, lost_race_after_read_is_retried_without_expected_version)
{
	struct store *s = store_with_competitor();
	struct change c = { .rs = "prod", .up = { client("mine", "k-mine") }, .n = 1 };
	struct store_version v;
	struct store_version *h;
	size_t n;
	struct snapshot *head;

	apply_ok((struct change){ .rs = "prod", .up = { client("c0", "k0") }, .n = 1 });
	cr_assert_eq(apply_change(s, &c, NULL, &v), 0);
	cr_assert_eq(competitor_runs, 2, "read, lost, re-read, won");
	head = get_ok("prod", 0);
	cr_assert_eq(snapshot_version(head), v.version);
	cr_assert_not_null(snapshot_get(head, POLICY_KIND_CLIENT, "rival"));
	cr_assert_not_null(snapshot_get(head, POLICY_KIND_CLIENT, "mine"));
	cr_assert_eq(v.resources, 3);
	cr_assert_eq(store_history(st, "prod", 0, 0, &h, &n), 0);
	cr_assert_eq(n, 3);
	store_versions_free(h, n);
	snapshot_unref(head);
	store_version_done(&v);
	store_free(s);
}

/* ---- dry run ---------------------------------------------------------------- */

Test(store, dry_run_validates_and_writes_nothing)
{
	struct change ok = { .rs = "prod", .up = { client("c2", "k2") },
			     .rm = { key(POLICY_KIND_CLIENT, "c1") }, .n = 1, .nr = 1,
			     .dry_run = true };
	struct change bad = { .rs = "prod", .up = { client("c3", "k0") }, .n = 1,
			      .dry_run = true };
	struct change fresh = { .rs = "new", .up = { client("c1", "k1") }, .n = 1,
				.dry_run = true };
	struct store_version v;
	struct policy_errs errs;
	struct snapshot *s = NULL;
	int64_t before;

	apply_ok((struct change){ .rs = "prod", .up = { client("c0", "k0"), client("c1", "k1") },
				  .n = 2 });
	before = store_revision();
	cr_assert_eq(apply_change(st, &ok, NULL, &v), 0);
	cr_assert_eq(v.version, 0);
	cr_assert_eq(v.upserts, 1);
	cr_assert_eq(v.removes, 1);
	cr_assert_eq(v.resources, 2);
	store_version_done(&v);
	policy_errs_init(&errs);
	cr_assert_eq(apply_change(st, &bad, &errs, NULL), -EINVAL);
	cr_assert(errs_contain(&errs, "client/c3.keys[0]"), "%s", errs.msg[0]);
	cr_assert_eq(apply_change(st, &fresh, NULL, NULL), 0);
	cr_assert_eq(store_revision(), before);
	cr_assert_eq(store_get(st, "new", 0, &s), -ENOENT);
}

/* ---- history, diff, rollback ------------------------------------------------ */

Test(store, history_newest_first_with_authors_messages_and_touched_keys)
{
	struct store_version *h;
	size_t n;
	uint64_t v[3];

	v[0] = apply_ok((struct change){ .rs = "prod", .up = { upstream("u1", 80) }, .n = 1,
					 .author = "alice", .message = "one" });
	v[1] = apply_ok((struct change){ .rs = "prod", .up = { route("api", "u1"),
							       client("c1", "k1") },
					 .n = 2, .author = "bob", .message = "two" });
	v[2] = apply_ok((struct change){ .rs = "prod", .rm = { key(POLICY_KIND_CLIENT, "c1") },
					 .nr = 1, .author = "carol", .message = "three" });

	cr_assert_eq(store_history(st, "prod", 0, 0, &h, &n), 0);
	cr_assert_eq(n, 3);
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(h[i].version, v[2 - i]);
		cr_assert_str_eq(h[i].ruleset, "prod");
	}
	cr_assert_str_eq(h[0].author, "carol");
	cr_assert_str_eq(h[0].message, "three");
	cr_assert_eq(h[0].removes, 1);
	cr_assert_eq(h[0].n_touched, 1);
	cr_assert_eq(h[0].touched[0].kind, POLICY_KIND_CLIENT);
	cr_assert_str_eq(h[0].touched[0].id, "c1");
	cr_assert_str_eq(h[1].author, "bob");
	cr_assert_eq(h[1].upserts, 2);
	cr_assert_eq(h[1].resources, 3);
	cr_assert_eq(h[1].n_touched, 2);
	/* Upserts sorted by (kind, id): client before route. */
	cr_assert_str_eq(h[1].touched[0].id, "c1");
	cr_assert_str_eq(h[1].touched[1].id, "api");
	cr_assert_str_eq(h[2].author, "alice");
	cr_assert_gt(h[2].time_unix_ms, 1600000000000);
	store_versions_free(h, n);

	cr_assert_eq(store_history(st, "prod", 2, 0, &h, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_eq(h[0].version, v[2]);
	cr_assert_eq(h[1].version, v[1]);
	store_versions_free(h, n);

	cr_assert_eq(store_history(st, "prod", 0, v[2], &h, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_eq(h[0].version, v[1]);
	cr_assert_eq(h[1].version, v[0]);
	store_versions_free(h, n);

	cr_assert_eq(store_history(st, "prod", 1, v[1] + 1, &h, &n), 0, "between versions");
	cr_assert_eq(n, 1);
	cr_assert_eq(h[0].version, v[1]);
	store_versions_free(h, n);

	cr_assert_eq(store_history(st, "prod", 0, v[0], &h, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_null(h);
	cr_assert_eq(store_history(st, "nope", 0, 0, &h, &n), -ENOENT);
}

Test(store, diff_between_versions_equals_snapshot_diff)
{
	uint64_t v1, v2;
	struct policy_delta *got, *want;
	struct snapshot *s1, *s2;

	v1 = apply_ok((struct change){ .rs = "prod", .up = { upstream("u1", 80), route("api", "u1"),
							     client("c1", "k1") }, .n = 3 });
	v2 = apply_ok((struct change){ .rs = "prod", .up = { upstream("u1", 81), client("c2", "k2") },
				       .rm = { key(POLICY_KIND_CLIENT, "c1") }, .n = 2, .nr = 1 });
	s1 = get_ok("prod", v1);
	s2 = get_ok("prod", v2);
	cr_assert_eq(snapshot_diff(s1, s2, &want), 0);
	cr_assert_eq(store_diff(st, "prod", v1, 0, &got), 0);
	cr_assert_eq(got->from_version, v1);
	cr_assert_eq(got->to_version, v2);
	cr_assert_eq(got->n_upserts, want->n_upserts);
	cr_assert_eq(got->n_removes, want->n_removes);
	cr_assert_eq(got->n_upserts, 2);
	cr_assert_eq(got->n_removes, 1);
	for (size_t i = 0; i < got->n_upserts; i++)
		cr_assert(policy_res_equal(got->upserts[i], want->upserts[i]));
	cr_assert_str_eq(got->removes[0].id, "c1");
	policy_delta_free(got);

	/* Backwards, and from nothing. */
	cr_assert_eq(store_diff(st, "prod", v2, v1, &got), 0);
	cr_assert_eq(got->n_upserts, 2);
	cr_assert_eq(got->n_removes, 1);
	cr_assert_str_eq(got->removes[0].id, "c2");
	policy_delta_free(got);
	cr_assert_eq(store_diff(st, "prod", 0, v1, &got), 0);
	cr_assert_eq(got->n_upserts, 3);
	cr_assert_eq(got->n_removes, 0);
	policy_delta_free(got);

	policy_delta_free(want);
	snapshot_unref(s1);
	snapshot_unref(s2);
}

Test(store, rollback_restores_old_content_as_new_version)
{
	uint64_t v1, v2;
	struct store_version v;
	struct store_version *h;
	size_t n;
	struct snapshot *old, *now;

	v1 = apply_ok((struct change){ .rs = "prod", .up = { upstream("u1", 80), route("api", "u1") },
				       .n = 2 });
	v2 = apply_ok((struct change){ .rs = "prod", .up = { upstream("u1", 81), client("c1", "k1") },
				       .n = 2 });
	cr_assert_eq(store_rollback(st, "prod", v1, v1, "dave", "undo", NULL), -ESTALE);
	cr_assert_eq(store_rollback(st, "prod", v1, v2, "dave", "undo", &v), 0);
	cr_assert_gt(v.version, v2);
	cr_assert_eq(v.rollback_of, v1);
	cr_assert_eq(v.upserts, 1);
	cr_assert_eq(v.removes, 1);
	cr_assert_eq(v.resources, 2);
	old = get_ok("prod", v1);
	now = get_ok("prod", 0);
	cr_assert(snapshot_equal(old, now));
	cr_assert_eq(snapshot_version(now), v.version);

	cr_assert_eq(store_history(st, "prod", 1, 0, &h, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(h[0].version, v.version);
	cr_assert_eq(h[0].rollback_of, v1);
	cr_assert_str_eq(h[0].author, "dave");
	cr_assert_str_eq(h[0].message, "undo");
	store_versions_free(h, n);
	store_version_done(&v);
	snapshot_unref(old);
	snapshot_unref(now);

	cr_assert_eq(store_rollback(st, "prod", v2 + 1000, 0, "x", "y", NULL), -ENOENT);
}

/* ---- compaction -------------------------------------------------------------- */

Test(store, compacted_version_is_stale_but_history_survives)
{
	int64_t unrelated;
	uint64_t v1, v2;
	struct snapshot *s = NULL;
	struct store_version *h;
	size_t n;

	cr_assert_eq(etcd_put(cli, "other", 5, "x", 1, 0, &unrelated), 0);
	v1 = apply_ok((struct change){ .rs = "prod", .up = { client("c1", "k1") }, .n = 1 });
	v2 = apply_ok((struct change){ .rs = "prod", .up = { client("c2", "k2") }, .n = 1 });
	cr_assert_eq(etcd_compact(cli, (int64_t)v2, true), 0);

	cr_assert_eq(store_get(st, "prod", v1, &s), -ESTALE);
	cr_assert_eq(store_get(st, "prod", (uint64_t)unrelated, &s), -ENOENT,
		     "compacted, but never a version of prod");
	cr_assert_null(s);
	s = get_ok("prod", v2);
	cr_assert_eq(snapshot_count(s, 0), 2);
	snapshot_unref(s);
	cr_assert_eq(store_history(st, "prod", 0, 0, &h, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_eq(h[1].version, v1);
	store_versions_free(h, n);
	cr_assert_eq(store_rollback(st, "prod", v1, 0, "x", "y", NULL), -ESTALE);
}

/* ---- list, prefixes, wire form ----------------------------------------------- */

Test(store, list_shows_every_rulesets_head)
{
	struct store_version *l;
	size_t n;
	uint64_t va, vb, vbc;

	cr_assert_eq(store_list(st, &l, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_null(l);

	vb = apply_ok((struct change){ .rs = "b", .up = { client("c1", "k1") }, .n = 1,
				       .author = "bob" });
	va = apply_ok((struct change){ .rs = "a", .up = { client("c1", "k1"), client("c2", "k2") },
				       .n = 2, .author = "alice" });
	vbc = apply_ok((struct change){ .rs = "b.c", .up = { client("c1", "k1") }, .n = 1 });
	va = apply_ok((struct change){ .rs = "a", .rm = { key(POLICY_KIND_CLIENT, "c2") }, .nr = 1,
				       .author = "ann", .message = "trim" });
	/* A key of someone else's under the prefix is skipped. */
	cr_assert_eq(etcd_put(cli, "/sluice/v1/rulesets/junk", 24, "x", 1, 0, NULL), 0);

	cr_assert_eq(store_list(st, &l, &n), 0);
	cr_assert_eq(n, 3);
	cr_assert_str_eq(l[0].ruleset, "a");
	cr_assert_eq(l[0].version, va);
	cr_assert_str_eq(l[0].author, "ann");
	cr_assert_str_eq(l[0].message, "trim");
	cr_assert_eq(l[0].resources, 1);
	cr_assert_eq(l[0].n_touched, 0, "heads carry no touched keys");
	cr_assert_str_eq(l[1].ruleset, "b");
	cr_assert_eq(l[1].version, vb);
	cr_assert_str_eq(l[1].author, "bob");
	cr_assert_str_eq(l[2].ruleset, "b.c");
	cr_assert_eq(l[2].version, vbc);
	store_versions_free(l, n);
}

Test(store, prefixes_keep_stores_apart)
{
	struct store *other = new_store(cli, "/elsewhere/");
	struct store_version *l;
	struct snapshot *s = NULL;
	struct etcd_range_result rr;
	size_t n;
	const char *hk = "/elsewhere/rulesets/prod/head";

	apply_ok((struct change){ .rs = "prod", .up = { client("c1", "k1") }, .n = 1 });
	cr_assert_eq(store_get(other, "prod", 0, &s), -ENOENT);
	cr_assert_eq(store_list(other, &l, &n), 0);
	cr_assert_eq(n, 0);
	{
		struct change c = { .rs = "prod", .up = { client("c9", "k9") }, .n = 1 };

		cr_assert_eq(apply_change(other, &c, NULL, NULL), 0);
	}
	cr_assert_eq(etcd_range(cli, hk, strlen(hk), NULL, 0, 0, 0, &rr), 0);
	cr_assert_eq(rr.n_kvs, 1);
	etcd_range_result_done(&rr);
	s = get_ok("prod", 0);
	cr_assert_null(snapshot_get(s, POLICY_KIND_CLIENT, "c9"));
	snapshot_unref(s);
	store_free(other);
}

Test(store, version_to_pb_carries_every_field)
{
	struct policy_key touched[2] = { key(POLICY_KIND_ROUTE, "api"),
					 key(POLICY_KIND_CLIENT, "c1") };
	struct store_version v = {
		.ruleset = "prod", .version = 42, .author = (char *)"alice",
		.message = (char *)"why", .time_unix_ms = 1700000000123, .resources = 9,
		.upserts = 3, .removes = 1, .rollback_of = 17, .touched = touched,
		.n_touched = 2,
	};
	Sluice__V1__VersionInfo *m = store_version_to_pb(&v);

	cr_assert_not_null(m);
	cr_assert_str_eq(m->ruleset, "prod");
	cr_assert_eq(m->version, 42);
	cr_assert_str_eq(m->author, "alice");
	cr_assert_str_eq(m->message, "why");
	cr_assert_eq(m->time_unix_ms, 1700000000123);
	cr_assert_eq(m->resources, 9);
	cr_assert_eq(m->upserts, 3);
	cr_assert_eq(m->removes, 1);
	cr_assert_eq(m->rollback_of, 17);
	cr_assert_eq(m->n_touched, 2);
	cr_assert_eq(m->touched[0]->kind, SLUICE__V1__KIND__ROUTE);
	cr_assert_str_eq(m->touched[0]->id, "api");
	cr_assert_eq(m->touched[1]->kind, SLUICE__V1__KIND__CLIENT);
	sluice__v1__version_info__free_unpacked(m, NULL);
}

Test(store, new_refuses_missing_etcd)
{
	struct store_config cfg = { 0 };
	struct store *s = (struct store *)0x1;

	cr_assert_eq(store_new(&cfg, &s), -EINVAL);
	cr_assert_eq(s, (struct store *)0x1, "ret untouched on failure");
	store_free(NULL);
}
