/* escalate_test.c - the escalation tracker (dataplane/bpfload/escalate.c)
 * with a fake clock and a recording deny callback: threshold, window, TTL,
 * IPv6 /64 grouping, table cap and eviction order, callback failures with
 * back-off, exactly one escalation under concurrent rejections; and the
 * Settings fields that drive it (lib/policy_wire.c validation). No root.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include <criterion/criterion.h>

#include "escalate.h"
#include "fixture.h"
#include "policy.h"

#define MS 1000000ull
#define SEC 1000000000ull

/* What the deny callback saw. */
struct calls {
	_Atomic unsigned n;
	struct cidr last;
	uint64_t last_ttl_ns;
	int fail_with; /* returned instead of 0 when set */
};

static int record(void *arg, const struct cidr *prefix, uint64_t ttl_ns)
{
	struct calls *c = arg;

	atomic_fetch_add(&c->n, 1);
	c->last = *prefix;
	c->last_ttl_ns = ttl_ns;
	return c->fail_with;
}

static struct escalate *new_tracker(struct calls *c, size_t capacity)
{
	/* A fixed seed: which sources share a bucket is the same every run. */
	struct escalate_config cfg = {.capacity = capacity, .deny = record, .deny_arg = c,
				      .hash_seed = 0x5eed};
	struct escalate *e = NULL;

	cr_assert_eq(escalate_new(&cfg, &e), 0);
	return e;
}

static struct sockaddr_in v4(const char *a)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(40000)};

	cr_assert_eq(inet_pton(AF_INET, a, &sa.sin_addr), 1);
	return sa;
}

static struct sockaddr_in6 v6(const char *a)
{
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(40000)};

	cr_assert_eq(inet_pton(AF_INET6, a, &sa.sin6_addr), 1);
	return sa;
}

#define REJ4(e, addr, now) \
	({ struct sockaddr_in _sa = v4(addr); \
	   escalate_reject(e, (struct sockaddr *)&_sa, sizeof(_sa), now); })
#define REJ6(e, addr, now) \
	({ struct sockaddr_in6 _sa = v6(addr); \
	   escalate_reject(e, (struct sockaddr *)&_sa, sizeof(_sa), now); })

static void expect_prefix(const struct cidr *c, const char *want)
{
	char buf[64];

	cr_assert_gt(cidr_format(c, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, want);
}

Test(escalate, off_until_a_policy_sets_a_threshold)
{
	struct calls c = {0};
	struct escalate *e = new_tracker(&c, 0);
	struct escalate_stats st;

	for (int i = 0; i < 1000; i++)
		cr_assert_eq(REJ4(e, "192.0.2.1", 1 * SEC + (uint64_t)i), 0);
	cr_assert_eq(c.n, 0);
	escalate_stats(e, &st);
	cr_assert_eq(st.rejects, 1000, "rejections are counted even when off");
	cr_assert_eq(st.entries, 0, "but not tracked");
	cr_assert_eq(st.capacity, ESCALATE_DEFAULT_CAPACITY);
	escalate_free(e);
}

Test(escalate, threshold_within_the_window_escalates_once_per_ttl)
{
	struct calls c = {0};
	struct escalate *e = new_tracker(&c, 0);
	uint64_t t = 100 * SEC;

	escalate_set_policy(e, 3, 1000, 5);
	cr_assert_eq(REJ4(e, "192.0.2.1", t), 0);
	cr_assert_eq(REJ4(e, "192.0.2.1", t + 100 * MS), 0);
	cr_assert_eq(REJ4(e, "198.51.100.1", t + 150 * MS), 0, "another source counts apart");
	cr_assert_eq(REJ4(e, "192.0.2.1", t + 200 * MS), 1, "third rejection crosses");
	cr_assert_eq(c.n, 1);
	expect_prefix(&c.last, "192.0.2.1/32");
	cr_assert_eq(c.last_ttl_ns, 5 * SEC);
	/* Late rejections (requests already in flight) do not call again. */
	for (int i = 0; i < 10; i++)
		cr_assert_eq(REJ4(e, "192.0.2.1", t + 300 * MS + (uint64_t)i * MS), 0);
	cr_assert_eq(c.n, 1);
	/* After the TTL the source starts from zero. */
	t += 200 * MS + 5 * SEC;
	cr_assert_eq(REJ4(e, "192.0.2.1", t), 0);
	cr_assert_eq(REJ4(e, "192.0.2.1", t + 1), 0);
	cr_assert_eq(REJ4(e, "192.0.2.1", t + 2), 1);
	cr_assert_eq(c.n, 2);
	escalate_free(e);
}

Test(escalate, rejections_spread_over_more_than_the_window_do_not_escalate)
{
	struct calls c = {0};
	struct escalate *e = new_tracker(&c, 0);
	uint64_t t = 10 * SEC;

	escalate_set_policy(e, 3, 1000, 60);
	/* One every 600 ms: never three in one window. */
	for (int i = 0; i < 20; i++) {
		int r = REJ4(e, "203.0.113.9", t + (uint64_t)i * 600 * MS);

		cr_assert_eq(r, 0, "rejection %d", i);
	}
	cr_assert_eq(c.n, 0);
	escalate_free(e);
}

Test(escalate, defaults_apply_for_zero_window_and_ttl)
{
	struct calls c = {0};
	struct escalate *e = new_tracker(&c, 0);

	escalate_set_policy(e, 2, 0, 0);
	cr_assert_eq(REJ4(e, "192.0.2.7", SEC), 0);
	cr_assert_eq(REJ4(e, "192.0.2.7", SEC + (POLICY_DEFAULT_ESCALATION_WINDOW_MS - 1) * MS), 1);
	cr_assert_eq(c.last_ttl_ns, POLICY_DEFAULT_ESCALATION_TTL_S * SEC);
	escalate_free(e);
}

Test(escalate, ipv6_sources_count_and_escalate_per_64)
{
	struct calls c = {0};
	struct escalate *e = new_tracker(&c, 0);

	escalate_set_policy(e, 3, 1000, 10);
	cr_assert_eq(REJ6(e, "2001:db8:1:2::1", SEC), 0);
	cr_assert_eq(REJ6(e, "2001:db8:1:2:ffff::9", SEC + 1), 0);
	cr_assert_eq(REJ6(e, "2001:db8:1:3::1", SEC + 2), 0, "another /64");
	cr_assert_eq(REJ6(e, "2001:db8:1:2:dead:beef:0:1", SEC + 3), 1);
	expect_prefix(&c.last, "2001:db8:1:2::/64");
	/* A v4-mapped peer (dual-stack listener) is the IPv4 source. */
	cr_assert_eq(REJ6(e, "::ffff:192.0.2.44", SEC + 4), 0);
	cr_assert_eq(REJ4(e, "192.0.2.44", SEC + 5), 0);
	cr_assert_eq(REJ6(e, "::ffff:192.0.2.44", SEC + 6), 1);
	expect_prefix(&c.last, "192.0.2.44/32");
	escalate_free(e);
}

Test(escalate, refuses_other_families_and_short_addresses)
{
	struct calls c = {0};
	struct escalate *e = new_tracker(&c, 0);
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	struct sockaddr_in sa = v4("192.0.2.1");

	escalate_set_policy(e, 1, 1000, 10);
	cr_assert_eq(escalate_reject(e, (struct sockaddr *)&un, sizeof(un), SEC), -EAFNOSUPPORT);
	cr_assert_eq(escalate_reject(e, (struct sockaddr *)&sa, 4, SEC), -EINVAL);
	cr_assert_eq(escalate_reject(e, NULL, 0, SEC), -EINVAL);
	cr_assert_eq(c.n, 0);
	escalate_free(e);
}

Test(escalate, table_never_grows_past_its_capacity)
{
	struct calls c = {0};
	struct escalate *e = new_tracker(&c, 1000); /* rounds up to 1024 */
	struct escalate_stats st;
	char a[32];

	escalate_set_policy(e, 1000, 60000, 10);
	for (unsigned i = 0; i < 200000; i++) {
		snprintf(a, sizeof(a), "10.%u.%u.%u", i >> 16 & 0xff, i >> 8 & 0xff, i & 0xff);
		cr_assert_eq(REJ4(e, a, SEC + i), 0);
	}
	escalate_stats(e, &st);
	cr_assert_eq(st.capacity, 1024);
	cr_assert_leq(st.entries, 1024);
	cr_assert_geq(st.entries, 1000, "a full table stays full: %zu", st.entries);
	cr_assert_geq(st.evictions, 200000 - 1024);
	cr_assert_eq(c.n, 0);
	/* Sweeping after every window has passed empties it. */
	cr_assert_eq(escalate_sweep(e, SEC + 200000 + 61 * SEC), st.entries);
	escalate_stats(e, &st);
	cr_assert_eq(st.entries, 0);
	escalate_free(e);
}

Test(escalate, a_stream_of_one_off_sources_does_not_evict_a_repeat_offender)
{
	struct calls c = {0};
	struct escalate *e = new_tracker(&c, 64);
	struct escalate_stats st;
	uint64_t t = SEC;
	char a[32];
	int escalated = 0;

	escalate_set_policy(e, 20, 60000, 10);
	/* 20 rejections of one source, each after 24 fresh one-off sources:
	 * 480 one-offs churn through a 64-entry table meanwhile. */
	for (int k = 0; k < 20; k++) {
		for (unsigned i = 0; i < 24; i++) {
			unsigned n = (unsigned)k * 24 + i;

			snprintf(a, sizeof(a), "10.9.%u.%u", n >> 8 & 0xff, n & 0xff);
			cr_assert_eq(REJ4(e, a, t++), 0);
		}
		escalated += REJ4(e, "192.0.2.99", t++);
	}
	escalate_stats(e, &st);
	cr_assert_gt(st.evictions, 400, "the table churned: %llu",
		     (unsigned long long)st.evictions);
	cr_assert_eq(escalated, 1);
	cr_assert_eq(c.n, 1);
	expect_prefix(&c.last, "192.0.2.99/32");
	escalate_free(e);
}

Test(escalate, failed_denial_backs_off_then_retries)
{
	struct calls c = {.fail_with = -ENOSPC};
	struct escalate *e = new_tracker(&c, 0);
	struct escalate_stats st;

	escalate_set_policy(e, 2, 10000, 60);
	cr_assert_eq(REJ4(e, "192.0.2.5", SEC), 0);
	cr_assert_eq(REJ4(e, "192.0.2.5", SEC + 1), -ENOSPC);
	/* Within the back-off: counted, no call. */
	for (int i = 0; i < 50; i++)
		cr_assert_eq(REJ4(e, "192.0.2.5", SEC + 2 + (uint64_t)i), 0);
	cr_assert_eq(c.n, 1);
	/* After it (not after the 60 s TTL): tried again. */
	c.fail_with = 0;
	cr_assert_eq(REJ4(e, "192.0.2.5", SEC + 1 + ESCALATE_RETRY_NS), 0);
	cr_assert_eq(REJ4(e, "192.0.2.5", SEC + 2 + ESCALATE_RETRY_NS), 1);
	escalate_stats(e, &st);
	cr_assert_eq(st.failures, 1);
	cr_assert_eq(st.escalations, 1);
	escalate_free(e);
}

struct hammer {
	struct escalate *e;
	_Atomic int crossed;
};

static void *hammer(void *arg)
{
	struct hammer *h = arg;

	for (int i = 0; i < 20000; i++) {
		int r = REJ4(h->e, "192.0.2.200", SEC + (uint64_t)i);

		if (r == 1)
			atomic_fetch_add(&h->crossed, 1);
		/* Other sources on other stripes meanwhile. */
		char a[32];

		snprintf(a, sizeof(a), "10.1.%d.%d", i >> 8 & 0xff, i & 0xff);
		REJ4(h->e, a, SEC + (uint64_t)i);
	}
	return NULL;
}

Test(escalate, concurrent_rejections_escalate_exactly_once)
{
	struct calls c = {0};
	struct hammer h = {.e = new_tracker(&c, 0)};
	pthread_t th[4];
	struct escalate_stats st;

	escalate_set_policy(h.e, 1000, 60000, 3600);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, hammer, &h), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(h.crossed, 1);
	cr_assert_eq(c.n, 1);
	escalate_stats(h.e, &st);
	cr_assert_eq(st.rejects, 4 * 2 * 20000);
	escalate_free(h.e);
}

Test(escalate, new_refuses_bad_config)
{
	struct escalate_config cfg = {0};
	struct escalate *e = NULL;

	cr_assert_eq(escalate_new(&cfg, &e), -EINVAL, "no callback");
	cfg.deny = record;
	cfg.capacity = (size_t)ESCALATE_MAX_CAPACITY + 1;
	cr_assert_eq(escalate_new(&cfg, &e), -EINVAL);
	cr_assert_null(e);
	escalate_free(NULL);
}

/* ---- Settings fields ---------------------------------------------------- */

Test(escalate, settings_fields_are_validated_and_defaulted)
{
	struct policy_errs errs;
	struct policy_res *r = NULL;

	r = fixture_res("{\"settings\": {\"id\": \"global\"}}");
	cr_assert_eq(r->u.settings.escalation_rejects, 0, "off by default");
	cr_assert_eq(r->u.settings.escalation_window_ms, POLICY_DEFAULT_ESCALATION_WINDOW_MS);
	cr_assert_eq(r->u.settings.escalation_ttl_s, POLICY_DEFAULT_ESCALATION_TTL_S);
	policy_res_unref(r);

	r = fixture_res("{\"settings\": {\"id\": \"global\", \"escalationRejects\": 50,"
			" \"escalationWindowMs\": 2000, \"escalationTtlS\": 600}}");
	cr_assert_eq(r->u.settings.escalation_rejects, 50);
	cr_assert_eq(r->u.settings.escalation_window_ms, 2000);
	cr_assert_eq(r->u.settings.escalation_ttl_s, 600);
	policy_res_unref(r);

	policy_errs_init(&errs);
	r = NULL;
	cr_assert_eq(fixture_res_try(&errs, &r,
				     "{\"settings\": {\"id\": \"global\", \"escalationRejects\": 1000001,"
				     " \"escalationWindowMs\": 3600001, \"escalationTtlS\": 86401}}"),
		     -EINVAL);
	cr_assert_null(r);
	cr_assert_eq(errs.n, 3);
	cr_assert_str_eq(errs.msg[0], "settings/global.escalation_rejects: must be at most 1000000");
	cr_assert_str_eq(errs.msg[1],
			 "settings/global.escalation_window_ms: must be at most 3600000");
	cr_assert_str_eq(errs.msg[2], "settings/global.escalation_ttl_s: must be at most 86400");
}

Test(escalate, settings_fields_change_the_canonical_bytes)
{
	struct policy_res *a = fixture_res("{\"settings\": {\"id\": \"global\"}}");
	struct policy_res *b =
		fixture_res("{\"settings\": {\"id\": \"global\", \"escalationRejects\": 5}}");

	/* A delta carrying only an escalation change must not look like no
	 * change: the content hash covers the new fields. */
	cr_assert(a->content_hash[0] != b->content_hash[0] ||
		  a->content_hash[1] != b->content_hash[1]);
	policy_res_unref(a);
	policy_res_unref(b);
}
