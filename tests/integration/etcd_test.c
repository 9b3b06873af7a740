/* etcd_test.c - the etcd client against a real etcd (tests/integration).
 *
 * Every test gets its own etcd on free ports in a temp dir (etcd_helper),
 * started in .init and removed in .fini, so a failing test leaves nothing
 * behind. Without /usr/bin/etcd the binary prints why and exits 77 (skip).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "etcd.h"
#include "etcd_helper.h"

#define TEST_TIMEOUT_MS 3000
#define WAIT_EVENTS_MS 10000

/* Runs before Criterion's main: a missing etcd skips the whole binary. */
__attribute__((constructor)) static void skip_without_etcd(void)
{
	char why[256];

	if (!etcd_helper_available(why, sizeof(why))) {
		fprintf(stderr, "etcd_test: skipped: %s\n", why);
		_exit(77);
	}
}

/* ---- fixture -------------------------------------------------------------- */

static struct etcd_helper *srv;
static struct etcd *cli;

static struct etcd *client_for(const char *const *endpoints, size_t n, uint64_t timeout_ms)
{
	struct etcd_config cfg = { .endpoints = endpoints, .n_endpoints = n,
				   .timeout_ms = timeout_ms };
	struct etcd *e = NULL;

	cr_assert_eq(etcd_new(&cfg, &e), 0);
	return e;
}

static void setup(void)
{
	const char *ep[1];

	cr_assert_eq(etcd_helper_start(&srv), 0, "cannot start etcd");
	ep[0] = srv->endpoint;
	cli = client_for(ep, 1, TEST_TIMEOUT_MS);
}

static void teardown(void)
{
	etcd_free(cli);
	cli = NULL;
	etcd_helper_free(srv);
	srv = NULL;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int64_t put_s(const char *key, const char *value)
{
	int64_t rev = 0;

	cr_assert_eq(etcd_put(cli, key, strlen(key), value, strlen(value), 0, &rev), 0,
		     "put '%s'", key);
	cr_assert_gt(rev, 0);
	return rev;
}

static int64_t current_revision(void)
{
	struct etcd_range_result r;
	int64_t rev;

	cr_assert_eq(etcd_range(cli, "\0", 1, NULL, 0, 0, 0, &r), 0);
	rev = r.revision;
	etcd_range_result_done(&r);
	return rev;
}

/* Value of `key` at `revision`, as a C string in buf ("" when absent). */
static int get_s(const char *key, int64_t revision, char *buf, size_t len)
{
	struct etcd_range_result r;
	int err = etcd_range(cli, key, strlen(key), NULL, 0, revision, 0, &r);

	buf[0] = '\0';
	if (err == 0 && r.n_kvs == 1)
		snprintf(buf, len, "%s", (const char *)r.kvs[0].value);
	etcd_range_result_done(&r);
	return err;
}

/* ---- config and helpers without a server ------------------------------- */

Test(etcd, new_rejects_configs_without_usable_endpoints)
{
	const char *empty[] = { "" };
	const char *slash[] = { "/" };
	const char *ok[] = { "http://127.0.0.1:1" };
	const struct {
		const char *name;
		struct etcd_config cfg;
		int want;
	} cases[] = {
		{ "no endpoint array", { NULL, 1, 0 }, -EINVAL },
		{ "zero endpoints", { ok, 0, 0 }, -EINVAL },
		{ "empty endpoint", { empty, 1, 0 }, -EINVAL },
		{ "only a slash", { slash, 1, 0 }, -EINVAL },
		{ "one endpoint", { ok, 1, 0 }, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct etcd *e = (struct etcd *)0x1;
		int r = etcd_new(&cases[i].cfg, &e);

		cr_assert_eq(r, cases[i].want, "%s: got %d", cases[i].name, r);
		if (r == 0)
			etcd_free(e);
		else
			cr_assert_eq(e, (struct etcd *)0x1, "%s: ret written on failure", cases[i].name);
	}
	etcd_free(NULL);
}

Test(etcd, prefix_end_increments_last_byte_below_ff)
{
	const struct {
		const char *name;
		const char *prefix;
		size_t len;
		const char *want;
		size_t want_len;
	} cases[] = {
		{ "text", "abc", 3, "abd", 3 },
		{ "trailing ff dropped", "a\xff", 2, "b", 1 },
		{ "fe becomes ff", "a\xfe", 2, "a\xff", 2 },
		{ "NUL inside", "a\0b", 3, "a\0c", 3 },
		{ "all ff: to the end", "\xff\xff", 2, "\0", 1 },
		{ "empty: to the end", "", 0, "\0", 1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[8];
		size_t n = etcd_prefix_end(cases[i].prefix, cases[i].len, out);

		cr_assert_eq(n, cases[i].want_len, "%s: length %zu", cases[i].name, n);
		cr_assert_eq(memcmp(out, cases[i].want, n), 0, "%s: bytes", cases[i].name);
	}
}

/* ---- KV ----------------------------------------------------------------------- */

Test(etcd, put_and_range_round_trip_binary_keys_and_values, .init = setup, .fini = teardown)
{
	/* Lengths 1..5 cover every base64 padding case; NUL and 0xff bytes
	 * prove nothing is treated as a C string. */
	const struct {
		const char *key;
		size_t key_len;
		const char *value;
		size_t value_len;
	} cases[] = {
		{ "\0", 1, "", 0 },
		{ "k\0", 2, "\0", 1 },
		{ "\xff\0\xff", 3, "\0\0", 2 },
		{ "\0\0\0\0", 4, "\xff\xfe\0", 3 },
		{ "bin\0\x01", 5, "v\0\xff\x80\n", 5 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct etcd_range_result r;
		int64_t rev = 0;

		cr_assert_eq(etcd_put(cli, cases[i].key, cases[i].key_len, cases[i].value,
				      cases[i].value_len, 0, &rev), 0, "case %zu: put", i);
		cr_assert_eq(etcd_range(cli, cases[i].key, cases[i].key_len, NULL, 0, 0, 0, &r), 0);
		cr_assert_eq(r.n_kvs, 1, "case %zu: one kv", i);
		cr_assert_eq(r.count, 1);
		cr_assert_eq(r.kvs[0].key_len, cases[i].key_len, "case %zu: key length", i);
		cr_assert_eq(memcmp(r.kvs[0].key, cases[i].key, cases[i].key_len), 0);
		cr_assert_eq(r.kvs[0].key[r.kvs[0].key_len], '\0', "key is NUL-terminated");
		cr_assert_eq(r.kvs[0].value_len, cases[i].value_len, "case %zu: value length", i);
		cr_assert_eq(memcmp(r.kvs[0].value, cases[i].value, cases[i].value_len), 0);
		cr_assert_eq(r.kvs[0].mod_revision, rev);
		cr_assert_eq(r.kvs[0].create_revision, rev);
		cr_assert_eq(r.kvs[0].version, 1);
		cr_assert_eq(r.kvs[0].lease, 0);
		cr_assert_eq(r.revision, rev, "header revision is the store's");
		etcd_range_result_done(&r);
	}
}

Test(etcd, range_of_missing_key_is_empty_not_an_error, .init = setup, .fini = teardown)
{
	struct etcd_range_result r;

	cr_assert_eq(etcd_range(cli, "nope", 4, NULL, 0, 0, 0, &r), 0);
	cr_assert_eq(r.n_kvs, 0);
	cr_assert_eq(r.count, 0);
	cr_assert_gt(r.revision, 0);
	cr_assert_eq(r.more, false);
	etcd_range_result_done(&r);
}

Test(etcd, range_reads_history_at_a_revision, .init = setup, .fini = teardown)
{
	char v[16];
	int64_t r1 = put_s("k", "one"), r2 = put_s("k", "two");
	int64_t r3;

	cr_assert_eq(etcd_delete(cli, "k", 1, NULL, 0, NULL, &r3), 0);
	cr_assert_eq(get_s("k", r1, v, sizeof(v)), 0);
	cr_assert_str_eq(v, "one");
	cr_assert_eq(get_s("k", r2, v, sizeof(v)), 0);
	cr_assert_str_eq(v, "two");
	cr_assert_eq(get_s("k", r1 - 1, v, sizeof(v)), 0);
	cr_assert_str_eq(v, "", "before the first put the key did not exist");
	cr_assert_eq(get_s("k", 0, v, sizeof(v)), 0);
	cr_assert_str_eq(v, "", "deleted at latest");
}

Test(etcd, range_of_compacted_revision_is_stale, .init = setup, .fini = teardown)
{
	char v[16];
	int64_t r1 = put_s("k", "one");
	int64_t r2 = put_s("k", "two");
	int64_t r3 = put_s("k", "three");

	(void)r2;
	cr_assert_eq(etcd_compact(cli, r3, true), 0);
	cr_assert_eq(get_s("k", r1, v, sizeof(v)), -ESTALE);
	cr_assert_eq(get_s("k", r3, v, sizeof(v)), 0, "the compact revision itself is kept");
	cr_assert_str_eq(v, "three");
	cr_assert_eq(get_s("k", r3 + 100, v, sizeof(v)), -ERANGE, "future revision");
	cr_assert_eq(etcd_compact(cli, r1, false), -ESTALE, "compacting again below");
}

Test(etcd, range_over_prefix_honours_limit_and_reports_more, .init = setup, .fini = teardown)
{
	const char prefix[] = "/p/";
	char end[sizeof(prefix)];
	size_t end_len = etcd_prefix_end(prefix, 3, end);
	struct etcd_range_result r;

	put_s("/p/a", "1");
	put_s("/p/b", "2");
	put_s("/p/c", "3");
	put_s("/p0", "outside: '0' sorts after '/'");
	put_s("/o", "outside");

	cr_assert_eq(etcd_range(cli, prefix, 3, end, end_len, 0, 2, &r), 0);
	cr_assert_eq(r.n_kvs, 2);
	cr_assert_eq(r.count, 3, "count ignores the limit");
	cr_assert(r.more);
	cr_assert_str_eq(r.kvs[0].key, "/p/a");
	cr_assert_str_eq(r.kvs[1].key, "/p/b");
	etcd_range_result_done(&r);

	cr_assert_eq(etcd_range(cli, prefix, 3, end, end_len, 0, 0, &r), 0);
	cr_assert_eq(r.n_kvs, 3);
	cr_assert_not(r.more);
	cr_assert_str_eq(r.kvs[2].key, "/p/c");
	cr_assert_str_eq((const char *)r.kvs[2].value, "3");
	etcd_range_result_done(&r);
}

Test(etcd, delete_of_a_range_reports_count_and_revision, .init = setup, .fini = teardown)
{
	char end[2];
	size_t end_len = etcd_prefix_end("d", 1, end);
	int64_t deleted = -1, rev = 0, last = 0;

	put_s("d1", "x");
	last = put_s("d2", "y");
	cr_assert_eq(etcd_delete(cli, "d", 1, end, end_len, &deleted, &rev), 0);
	cr_assert_eq(deleted, 2);
	cr_assert_eq(rev, last + 1, "one revision for the whole delete");
	cr_assert_eq(etcd_delete(cli, "d1", 2, NULL, 0, &deleted, &rev), 0);
	cr_assert_eq(deleted, 0, "deleting nothing is not an error");
}

/* ---- transactions --------------------------------------------------------------- */

Test(etcd, txn_cas_on_mod_revision_commits_when_expected, .init = setup, .fini = teardown)
{
	int64_t r1 = put_s("head", "v1");
	struct etcd_compare cmp = { .key = "head", .key_len = 4, .target = ETCD_CMP_MOD,
				    .result = ETCD_CMP_EQUAL, .number = r1 };
	struct etcd_op puts[] = {
		{ .type = ETCD_OP_PUT, .key = "head", .key_len = 4, .value = "v2", .value_len = 2 },
		{ .type = ETCD_OP_PUT, .key = "log/1", .key_len = 5, .value = "why", .value_len = 3 },
	};
	struct etcd_op read = { .type = ETCD_OP_RANGE, .key = "head", .key_len = 4 };
	struct etcd_txn t = { &cmp, 1, puts, 2, &read, 1 };
	struct etcd_txn_result res;
	struct etcd_range_result r;

	cr_assert_eq(etcd_txn(cli, &t, &res), 0);
	cr_assert(res.succeeded);
	cr_assert_eq(res.revision, r1 + 1, "the revision of the committed change");
	cr_assert_eq(res.n_responses, 2);
	cr_assert_eq(res.responses[0].type, ETCD_OP_PUT);
	etcd_txn_result_done(&res);

	cr_assert_eq(etcd_range(cli, "log/1", 5, NULL, 0, 0, 0, &r), 0);
	cr_assert_eq(r.n_kvs, 1);
	cr_assert_eq(r.kvs[0].mod_revision, r1 + 1, "both puts in one revision");
	etcd_range_result_done(&r);
}

Test(etcd, txn_cas_with_stale_revision_runs_failure_branch, .init = setup, .fini = teardown)
{
	int64_t r1 = put_s("head", "v1");
	int64_t r2 = put_s("head", "v2");
	struct etcd_compare cmp = { .key = "head", .key_len = 4, .target = ETCD_CMP_MOD,
				    .result = ETCD_CMP_EQUAL, .number = r1 };
	struct etcd_op put = { .type = ETCD_OP_PUT, .key = "head", .key_len = 4,
			       .value = "lost", .value_len = 4 };
	struct etcd_op read = { .type = ETCD_OP_RANGE, .key = "head", .key_len = 4 };
	struct etcd_txn t = { &cmp, 1, &put, 1, &read, 1 };
	struct etcd_txn_result res;
	char v[16];

	cr_assert_eq(etcd_txn(cli, &t, &res), 0, "a false compare is not an error");
	cr_assert_not(res.succeeded);
	cr_assert_eq(res.revision, r2, "nothing committed");
	cr_assert_eq(res.n_responses, 1);
	cr_assert_eq(res.responses[0].type, ETCD_OP_RANGE);
	cr_assert_eq(res.responses[0].range.n_kvs, 1);
	cr_assert_str_eq((const char *)res.responses[0].range.kvs[0].value, "v2");
	cr_assert_eq(res.responses[0].range.kvs[0].mod_revision, r2);
	etcd_txn_result_done(&res);
	cr_assert_eq(get_s("head", 0, v, sizeof(v)), 0);
	cr_assert_str_eq(v, "v2");
}

Test(etcd, txn_compares_every_target_and_result, .init = setup, .fini = teardown)
{
	int64_t rev = put_s("c", "mid");
	const struct {
		const char *name;
		const char *key;
		enum etcd_compare_target target;
		enum etcd_compare_result result;
		int64_t number;
		const char *value;
		bool want;
	} cases[] = {
		{ "version equal", "c", ETCD_CMP_VERSION, ETCD_CMP_EQUAL, 1, NULL, true },
		{ "version greater", "c", ETCD_CMP_VERSION, ETCD_CMP_GREATER, 1, NULL, false },
		{ "create equal", "c", ETCD_CMP_CREATE, ETCD_CMP_EQUAL, rev, NULL, true },
		{ "create less", "c", ETCD_CMP_CREATE, ETCD_CMP_LESS, rev + 1, NULL, true },
		{ "mod not equal", "c", ETCD_CMP_MOD, ETCD_CMP_NOT_EQUAL, rev, NULL, false },
		{ "mod greater", "c", ETCD_CMP_MOD, ETCD_CMP_GREATER, rev - 1, NULL, true },
		{ "value equal", "c", ETCD_CMP_VALUE, ETCD_CMP_EQUAL, 0, "mid", true },
		{ "value less", "c", ETCD_CMP_VALUE, ETCD_CMP_LESS, 0, "zzz", true },
		{ "value greater", "c", ETCD_CMP_VALUE, ETCD_CMP_GREATER, 0, "zzz", false },
		{ "value not equal", "c", ETCD_CMP_VALUE, ETCD_CMP_NOT_EQUAL, 0, "mid", false },
		{ "absent: create 0", "absent", ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0, NULL, true },
		{ "absent: version 0", "absent", ETCD_CMP_VERSION, ETCD_CMP_EQUAL, 0, NULL, true },
		{ "present: create 0", "c", ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0, NULL, false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct etcd_compare cmp = {
			.key = cases[i].key, .key_len = strlen(cases[i].key),
			.target = cases[i].target, .result = cases[i].result,
			.number = cases[i].number, .value = cases[i].value,
			.value_len = cases[i].value ? strlen(cases[i].value) : 0,
		};
		struct etcd_txn t = { .compares = &cmp, .n_compares = 1 };
		struct etcd_txn_result res;

		cr_assert_eq(etcd_txn(cli, &t, &res), 0, "%s", cases[i].name);
		cr_assert_eq(res.succeeded, cases[i].want, "%s", cases[i].name);
		cr_assert_eq(res.revision, rev, "%s: an empty branch writes nothing", cases[i].name);
		etcd_txn_result_done(&res);
	}
}

Test(etcd, txn_create_if_absent_and_delete_ops, .init = setup, .fini = teardown)
{
	struct etcd_compare absent = { .key = "new", .key_len = 3, .target = ETCD_CMP_CREATE,
				       .result = ETCD_CMP_EQUAL, .number = 0 };
	struct etcd_op create[] = {
		{ .type = ETCD_OP_PUT, .key = "new", .key_len = 3, .value = "1", .value_len = 1 },
		{ .type = ETCD_OP_DELETE, .key = "old", .key_len = 3 },
	};
	struct etcd_txn t = { &absent, 1, create, 2, NULL, 0 };
	struct etcd_txn_result res;
	char v[8];

	put_s("old", "x");
	cr_assert_eq(etcd_txn(cli, &t, &res), 0);
	cr_assert(res.succeeded);
	cr_assert_eq(res.n_responses, 2);
	cr_assert_eq(res.responses[1].type, ETCD_OP_DELETE);
	cr_assert_eq(res.responses[1].deleted, 1);
	etcd_txn_result_done(&res);
	cr_assert_eq(get_s("old", 0, v, sizeof(v)), 0);
	cr_assert_str_eq(v, "");

	cr_assert_eq(etcd_txn(cli, &t, &res), 0);
	cr_assert_not(res.succeeded, "the key exists now");
	cr_assert_eq(res.n_responses, 0);
	etcd_txn_result_done(&res);
}

/* One racer of the CAS race; owned by the test, lives for one round. */
struct racer {
	struct etcd *e;
	pthread_barrier_t *start;
	int64_t expected;
	int id;
	int err;
	bool won;
};

static void *race(void *p)
{
	struct racer *r = p;
	char value[8];
	struct etcd_compare cmp = { .key = "head", .key_len = 4, .target = ETCD_CMP_MOD,
				    .result = ETCD_CMP_EQUAL, .number = r->expected };
	struct etcd_op put = { .type = ETCD_OP_PUT, .key = "head", .key_len = 4,
			       .value = value, .value_len = 1 };
	struct etcd_txn t = { &cmp, 1, &put, 1, NULL, 0 };
	struct etcd_txn_result res;

	snprintf(value, sizeof(value), "%d", r->id);
	pthread_barrier_wait(r->start);
	r->err = etcd_txn(r->e, &t, &res);
	r->won = r->err == 0 && res.succeeded;
	etcd_txn_result_done(&res);
	return NULL;
}

Test(etcd, racing_cas_with_same_expected_revision_has_one_winner, .init = setup,
     .fini = teardown, .timeout = 60)
{
	const char *ep[] = { srv->endpoint };
	struct etcd *clients[2] = { client_for(ep, 1, TEST_TIMEOUT_MS),
				    client_for(ep, 1, TEST_TIMEOUT_MS) };
	int64_t expected = put_s("head", "start");

	for (int round = 0; round < 20; round++) {
		pthread_barrier_t start;
		struct racer racers[2];
		pthread_t th[2];
		char v[8];
		int winner = -1;

		pthread_barrier_init(&start, NULL, 2);
		for (int i = 0; i < 2; i++) {
			racers[i] = (struct racer){ .e = clients[i], .start = &start,
						    .expected = expected, .id = i };
			pthread_create(&th[i], NULL, race, &racers[i]);
		}
		for (int i = 0; i < 2; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&start);
		cr_assert_eq(racers[0].err, 0);
		cr_assert_eq(racers[1].err, 0);
		cr_assert_eq(racers[0].won + racers[1].won, 1, "round %d: exactly one wins", round);
		winner = racers[0].won ? 0 : 1;
		cr_assert_eq(get_s("head", 0, v, sizeof(v)), 0);
		cr_assert_eq(v[0] - '0', winner, "round %d: the winner's value is stored", round);
		expected = current_revision();
	}
	etcd_free(clients[0]);
	etcd_free(clients[1]);
}

/* ---- leases --------------------------------------------------------------------- */

Test(etcd, lease_revoke_deletes_its_keys, .init = setup, .fini = teardown)
{
	struct etcd_range_result r;
	int64_t id = 0, ttl = 0;

	cr_assert_eq(etcd_lease_grant(cli, 60, &id), 0);
	cr_assert_neq(id, 0);
	cr_assert_eq(etcd_put(cli, "nodes/a", 7, "up", 2, id, NULL), 0);
	cr_assert_eq(etcd_range(cli, "nodes/a", 7, NULL, 0, 0, 0, &r), 0);
	cr_assert_eq(r.n_kvs, 1);
	cr_assert_eq(r.kvs[0].lease, id);
	etcd_range_result_done(&r);

	cr_assert_eq(etcd_lease_revoke(cli, id), 0);
	cr_assert_eq(etcd_range(cli, "nodes/a", 7, NULL, 0, 0, 0, &r), 0);
	cr_assert_eq(r.n_kvs, 0, "the key went with its lease");
	etcd_range_result_done(&r);

	cr_assert_eq(etcd_lease_revoke(cli, id), -ENOENT);
	cr_assert_eq(etcd_lease_keepalive(cli, id, &ttl), -ENOENT);
	cr_assert_eq(etcd_lease_timetolive(cli, id, &ttl, NULL), -ENOENT);
	cr_assert_eq(etcd_put(cli, "nodes/b", 7, "up", 2, id, NULL), -ENOENT,
		     "a put under a dead lease is refused");
}

Test(etcd, lease_keepalive_resets_remaining_ttl, .init = setup, .fini = teardown)
{
	int64_t id = 0, before = 0, granted = 0, renewed = 0, after = 0;

	cr_assert_eq(etcd_lease_grant(cli, 10, &id), 0);
	/* Let the remaining TTL drop a whole second at least (etcd reports
	 * whole seconds, rounded down). */
	usleep(1500 * 1000);
	cr_assert_eq(etcd_lease_timetolive(cli, id, &before, &granted), 0);
	cr_assert_eq(granted, 10);
	cr_assert_lt(before, 10);
	cr_assert_eq(etcd_lease_keepalive(cli, id, &renewed), 0);
	cr_assert_eq(renewed, 10, "keepalive answers the full TTL");
	cr_assert_eq(etcd_lease_timetolive(cli, id, &after, NULL), 0);
	cr_assert_gt(after, before, "the remaining TTL went back up");
}

/* ---- watch ---------------------------------------------------------------------- */

/* A copy of one delivered event. */
struct seen {
	enum etcd_watch_event_type type;
	int64_t revision;
	int64_t compact_revision;
	char key[16];
	char value[16];
	bool has_prev;
	char prev_value[16];
	bool last_in_revision;
};

/* Collects events from the watch thread; owned by one test. */
struct recorder {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct seen ev[64];
	size_t n;
	bool out_of_order;
	/* COMPACTED: re-read with this client and return its revision. */
	struct etcd *reread;
	int64_t reread_revision;
};

static void recorder_init(struct recorder *rec)
{
	memset(rec, 0, sizeof(*rec));
	pthread_mutex_init(&rec->lock, NULL);
	pthread_cond_init(&rec->cond, NULL);
}

static void copy_str(char *dst, size_t cap, const void *src, size_t len)
{
	if (len >= cap)
		len = cap - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

static int64_t record(void *arg, const struct etcd_watch_event *ev)
{
	struct recorder *rec = arg;
	int64_t ret = 0;

	if (ev->type == ETCD_WATCH_COMPACTED && rec->reread) {
		struct etcd_range_result r;

		if (etcd_range(rec->reread, "\0", 1, "\0", 1, 0, 0, &r) == 0) {
			ret = r.revision;
			rec->reread_revision = r.revision;
			etcd_range_result_done(&r);
		}
	}
	pthread_mutex_lock(&rec->lock);
	if (rec->n > 0 && ev->revision < rec->ev[rec->n - 1].revision)
		rec->out_of_order = true;
	if (rec->n < sizeof(rec->ev) / sizeof(rec->ev[0])) {
		struct seen *s = &rec->ev[rec->n++];

		s->type = ev->type;
		s->revision = ev->revision;
		s->compact_revision = ev->compact_revision;
		s->last_in_revision = ev->last_in_revision;
		if (ev->kv) {
			copy_str(s->key, sizeof(s->key), ev->kv->key, ev->kv->key_len);
			copy_str(s->value, sizeof(s->value), ev->kv->value, ev->kv->value_len);
		}
		if (ev->prev_kv) {
			s->has_prev = true;
			copy_str(s->prev_value, sizeof(s->prev_value), ev->prev_kv->value,
				 ev->prev_kv->value_len);
		}
	}
	pthread_cond_broadcast(&rec->cond);
	pthread_mutex_unlock(&rec->lock);
	return ret;
}

/* Waits until at least n events arrived; returns how many did. */
static size_t wait_events(struct recorder *rec, size_t n)
{
	uint64_t deadline = mono_ms() + WAIT_EVENTS_MS;
	size_t got;

	pthread_mutex_lock(&rec->lock);
	while (rec->n < n && mono_ms() < deadline) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&rec->cond, &rec->lock, &ts);
	}
	got = rec->n;
	pthread_mutex_unlock(&rec->lock);
	return got;
}

static struct etcd_watch *watch_prefix(const char *const *ep, size_t n_ep, const char *prefix,
				       int64_t start, struct recorder *rec)
{
	struct etcd_config cfg = { .endpoints = ep, .n_endpoints = n_ep,
				   .timeout_ms = TEST_TIMEOUT_MS };
	char end[16];
	size_t end_len = etcd_prefix_end(prefix, strlen(prefix), end);
	struct etcd_watch *w = NULL;

	cr_assert_eq(etcd_watch_start(&cfg, prefix, strlen(prefix), end, end_len, start, true,
				      record, rec, &w), 0);
	return w;
}

Test(etcd, watch_delivers_puts_and_deletes_in_order_with_prev_kv, .init = setup,
     .fini = teardown)
{
	const char *ep[] = { srv->endpoint };
	struct recorder rec;
	struct etcd_watch *w;
	int64_t r1, r2, r3, r4;
	struct etcd_op ops[] = {
		{ .type = ETCD_OP_PUT, .key = "w/b", .key_len = 3, .value = "B", .value_len = 1 },
		{ .type = ETCD_OP_DELETE, .key = "w/a", .key_len = 3 },
	};
	struct etcd_txn t = { .success = ops, .n_success = 2 };
	struct etcd_txn_result res;

	recorder_init(&rec);
	w = watch_prefix(ep, 1, "w/", current_revision() + 1, &rec);
	r1 = put_s("w/a", "1");
	put_s("x/outside", "not watched");
	r2 = put_s("w/a", "2");
	cr_assert_eq(etcd_txn(cli, &t, &res), 0);
	r3 = res.revision;
	etcd_txn_result_done(&res);
	cr_assert_eq(etcd_delete(cli, "w/b", 3, NULL, 0, NULL, &r4), 0);

	cr_assert_eq(wait_events(&rec, 5), 5);
	etcd_watch_stop(w);
	cr_assert_eq(rec.n, 5, "nothing more than the five changes");
	cr_assert_not(rec.out_of_order);

	cr_assert_eq(rec.ev[0].type, ETCD_WATCH_PUT);
	cr_assert_eq(rec.ev[0].revision, r1);
	cr_assert_str_eq(rec.ev[0].key, "w/a");
	cr_assert_str_eq(rec.ev[0].value, "1");
	cr_assert_not(rec.ev[0].has_prev, "created: no previous kv");
	cr_assert(rec.ev[0].last_in_revision);

	cr_assert_eq(rec.ev[1].type, ETCD_WATCH_PUT);
	cr_assert_eq(rec.ev[1].revision, r2);
	cr_assert_str_eq(rec.ev[1].value, "2");
	cr_assert(rec.ev[1].has_prev);
	cr_assert_str_eq(rec.ev[1].prev_value, "1");

	/* The txn's two changes share a revision and arrive together. */
	cr_assert_eq(rec.ev[2].type, ETCD_WATCH_PUT);
	cr_assert_eq(rec.ev[2].revision, r3);
	cr_assert_str_eq(rec.ev[2].key, "w/b");
	cr_assert_not(rec.ev[2].last_in_revision);
	cr_assert_eq(rec.ev[3].type, ETCD_WATCH_DELETE);
	cr_assert_eq(rec.ev[3].revision, r3);
	cr_assert_str_eq(rec.ev[3].key, "w/a");
	cr_assert_str_eq(rec.ev[3].prev_value, "2");
	cr_assert(rec.ev[3].last_in_revision);

	cr_assert_eq(rec.ev[4].type, ETCD_WATCH_DELETE);
	cr_assert_eq(rec.ev[4].revision, r4);
	cr_assert_str_eq(rec.ev[4].prev_value, "B");
}

Test(etcd, watch_resumes_after_etcd_restart_without_gaps_or_repeats, .init = setup,
     .fini = teardown, .timeout = 60)
{
	const char *ep[] = { srv->endpoint };
	struct recorder rec;
	struct etcd_watch *w;
	int64_t written[6];
	char key[8];

	recorder_init(&rec);
	w = watch_prefix(ep, 1, "r/", current_revision() + 1, &rec);
	for (int i = 0; i < 3; i++) {
		snprintf(key, sizeof(key), "r/%d", i);
		written[i] = put_s(key, "before");
	}
	cr_assert_eq(wait_events(&rec, 3), 3);

	cr_assert_eq(etcd_helper_kill(srv), 0);
	/* Let the watch notice and start retrying against a dead port. */
	usleep(300 * 1000);
	cr_assert_eq(etcd_helper_restart(srv), 0);
	for (int i = 3; i < 6; i++) {
		snprintf(key, sizeof(key), "r/%d", i);
		written[i] = put_s(key, "after");
	}
	cr_assert_eq(wait_events(&rec, 6), 6);
	/* A duplicate would come right behind the real ones. */
	usleep(300 * 1000);
	etcd_watch_stop(w);

	cr_assert_eq(rec.n, 6, "each revision exactly once");
	for (int i = 0; i < 6; i++) {
		cr_assert_eq(rec.ev[i].revision, written[i], "event %d", i);
		cr_assert_eq(rec.ev[i].type, ETCD_WATCH_PUT);
	}
}

Test(etcd, watch_from_compacted_revision_reports_compaction_then_continues, .init = setup,
     .fini = teardown)
{
	const char *ep[] = { srv->endpoint };
	struct recorder rec;
	struct etcd_watch *w;
	int64_t r1 = put_s("c/a", "1"), r3, r4;

	put_s("c/a", "2");
	r3 = put_s("c/a", "3");
	cr_assert_eq(etcd_compact(cli, r3, true), 0);

	recorder_init(&rec);
	rec.reread = client_for(ep, 1, TEST_TIMEOUT_MS);
	w = watch_prefix(ep, 1, "c/", r1, &rec);
	cr_assert_eq(wait_events(&rec, 1), 1);
	r4 = put_s("c/a", "4");
	cr_assert_eq(wait_events(&rec, 2), 2);
	usleep(200 * 1000);
	etcd_watch_stop(w);
	etcd_free(rec.reread);

	cr_assert_eq(rec.n, 2);
	cr_assert_eq(rec.ev[0].type, ETCD_WATCH_COMPACTED);
	cr_assert_eq(rec.ev[0].compact_revision, r3);
	cr_assert_eq(rec.reread_revision, r3, "the owner re-read at the head");
	cr_assert_eq(rec.ev[1].type, ETCD_WATCH_PUT);
	cr_assert_eq(rec.ev[1].revision, r4, "resumed right after the re-read");
	cr_assert_str_eq(rec.ev[1].value, "4");
}

/* ---- endpoints and deadlines ---------------------------------------------------- */

Test(etcd, failover_skips_a_dead_endpoint, .init = setup, .fini = teardown)
{
	char dead[40];
	const char *dead_only[1], *dead_first[2];
	struct recorder rec;
	struct etcd_watch *w;
	struct etcd *e;
	char v[8];
	int64_t rev = 0;

	snprintf(dead, sizeof(dead), "http://127.0.0.1:%u", etcd_helper_free_port());
	dead_only[0] = dead;
	dead_first[0] = dead;
	dead_first[1] = srv->endpoint;

	e = client_for(dead_only, 1, TEST_TIMEOUT_MS);
	cr_assert_eq(etcd_put(e, "f", 1, "x", 1, 0, NULL), -ECONNREFUSED);
	etcd_free(e);

	recorder_init(&rec);
	w = watch_prefix(dead_first, 2, "f", 0, &rec);
	e = client_for(dead_first, 2, TEST_TIMEOUT_MS);
	cr_assert_eq(etcd_put(e, "f", 1, "x", 1, 0, &rev), 0, "a write that was never sent moves on");
	cr_assert_eq(get_s("f", 0, v, sizeof(v)), 0);
	cr_assert_str_eq(v, "x");
	cr_assert_eq(etcd_lease_grant(e, 30, &(int64_t){0}), 0);
	etcd_free(e);

	/* The watch may have started after the put: it began "from now". Put
	 * again until it has reached the live endpoint. */
	for (int i = 0; i < 100 && wait_events(&rec, 0) == 0; i++) {
		put_s("f", "again");
		usleep(50 * 1000);
	}
	cr_assert_gt(wait_events(&rec, 1), 0, "the watch reached the live endpoint");
	etcd_watch_stop(w);
}

Test(etcd, silent_endpoint_times_out_within_the_deadline, .init = setup, .fini = teardown)
{
	const uint64_t timeout_ms = 300;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char silent[40];
	const char *ep[1] = { silent };
	struct recorder rec;
	struct etcd_watch *w;
	struct etcd_range_result r;
	struct etcd *e;
	uint64_t t0, elapsed_ms;

	/* The kernel completes the handshake from the backlog; nobody ever
	 * accepts or reads. */
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(fd, 16), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	snprintf(silent, sizeof(silent), "http://127.0.0.1:%u", ntohs(sa.sin_port));

	e = client_for(ep, 1, timeout_ms);
	t0 = mono_ms();
	cr_assert_eq(etcd_range(e, "k", 1, NULL, 0, 0, 0, &r), -ETIMEDOUT);
	elapsed_ms = mono_ms() - t0;
	cr_assert_lt(elapsed_ms, 5 * timeout_ms, "took %llu ms", (unsigned long long)elapsed_ms);
	cr_assert_eq(etcd_txn(e, &(struct etcd_txn){0}, &(struct etcd_txn_result){0}), -ETIMEDOUT);
	etcd_free(e);

	/* A watch stuck on it keeps retrying and still stops on request. */
	recorder_init(&rec);
	w = watch_prefix(ep, 1, "s", 0, &rec);
	usleep(100 * 1000);
	etcd_watch_stop(w);
	cr_assert_eq(rec.n, 0);
	close(fd);
}
