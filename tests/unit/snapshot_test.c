/* snapshot_test.c - snapshots: build, apply (and every refusal), diff,
 * request-path lookups and RCU publication.
 *
 * Resources are made the way the planes make them: a sluice.v1.Resource
 * wire struct validated by policy_res_from_pb(). The randomized property
 * test checks apply(a, diff(a, b)) == b over thousands of pairs.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "policy.h"
#include "policy_wire.h"
#include "snapshot.h"

#define RS "prod"

/* ---- building resources ---- */

static struct policy_res *decode(Sluice__V1__Resource *m)
{
	struct policy_errs e;
	struct policy_res *r = NULL;
	int rc;

	policy_errs_init(&e);
	rc = policy_res_from_pb(m, &e, &r);
	cr_assert_eq(rc, 0, "decode failed (%d): %s", rc, e.n ? e.msg[0] : "?");
	return r;
}

static size_t strv_len(const char *const *v)
{
	size_t n = 0;

	while (v && v[n])
		n++;
	return n;
}

/* keys: NULL-terminated or NULL (the id is the key). rl: NULL for none. */
static struct policy_res *mk_client_full(const char *id, const char *const *keys, const char *rl,
					 unsigned priority, bool disabled)
{
	Sluice__V1__Client c = SLUICE__V1__CLIENT__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;

	c.id = (char *)id;
	c.n_keys = strv_len(keys);
	c.keys = (char **)keys;
	c.rate_limit = (char *)rl;
	c.priority = priority;
	c.disabled = disabled;
	m.kind_case = SLUICE__V1__RESOURCE__KIND_CLIENT;
	m.client = &c;
	return decode(&m);
}

static struct policy_res *mk_client(const char *id, const char *const *keys, const char *rl)
{
	return mk_client_full(id, keys, rl, 0, false);
}

static struct policy_res *mk_rate_limit(const char *id, uint64_t rate, const char *sel_client)
{
	Sluice__V1__RateLimit rl = SLUICE__V1__RATE_LIMIT__INIT;
	Sluice__V1__Selector sel = SLUICE__V1__SELECTOR__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;

	rl.id = (char *)id;
	rl.algorithm = SLUICE__V1__ALGORITHM__TOKEN_BUCKET;
	rl.rate = rate;
	rl.unit = SLUICE__V1__RATE_UNIT__SECOND;
	if (sel_client) {
		sel.client = (char *)sel_client;
		rl.selector = &sel;
	}
	m.kind_case = SLUICE__V1__RESOURCE__KIND_RATE_LIMIT;
	m.rate_limit = &rl;
	return decode(&m);
}

static struct policy_res *mk_access_list(const char *id, const char *const *allow,
					 const char *const *deny)
{
	Sluice__V1__AccessList al = SLUICE__V1__ACCESS_LIST__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;

	al.id = (char *)id;
	al.n_allow = strv_len(allow);
	al.allow = (char **)allow;
	al.n_deny = strv_len(deny);
	al.deny = (char **)deny;
	m.kind_case = SLUICE__V1__RESOURCE__KIND_ACCESS_LIST;
	m.access_list = &al;
	return decode(&m);
}

static struct policy_res *mk_upstream(const char *id, const char *endpoint)
{
	Sluice__V1__Upstream up = SLUICE__V1__UPSTREAM__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;
	char *eps[1] = { (char *)endpoint };

	up.id = (char *)id;
	up.n_endpoints = 1;
	up.endpoints = eps;
	m.kind_case = SLUICE__V1__RESOURCE__KIND_UPSTREAM;
	m.upstream = &up;
	return decode(&m);
}

/* upstream NULL: a static backend. */
static struct policy_res *mk_route(const char *id, const char *host, const char *path,
				   const char *upstream, const char *const *rls,
				   const char *const *als)
{
	Sluice__V1__Route rt = SLUICE__V1__ROUTE__INIT;
	Sluice__V1__StaticBackend sb = SLUICE__V1__STATIC_BACKEND__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;

	rt.id = (char *)id;
	rt.host = (char *)host;
	rt.path_prefix = (char *)path;
	if (upstream) {
		rt.backend_case = SLUICE__V1__ROUTE__BACKEND_UPSTREAM;
		rt.upstream = (char *)upstream;
	} else {
		sb.root = "/srv/www";
		rt.backend_case = SLUICE__V1__ROUTE__BACKEND_STATIC_FILES;
		rt.static_files = &sb;
	}
	rt.n_rate_limits = strv_len(rls);
	rt.rate_limits = (char **)rls;
	rt.n_access_lists = strv_len(als);
	rt.access_lists = (char **)als;
	m.kind_case = SLUICE__V1__RESOURCE__KIND_ROUTE;
	m.route = &rt;
	return decode(&m);
}

static struct policy_res *mk_settings(const char *header, const char *default_rl,
				      const char *const *als)
{
	Sluice__V1__Settings st = SLUICE__V1__SETTINGS__INIT;
	Sluice__V1__Resource m = SLUICE__V1__RESOURCE__INIT;

	st.id = POLICY_SETTINGS_ID;
	st.client_id_header = (char *)header;
	st.default_rate_limit = (char *)default_rl;
	st.n_access_lists = strv_len(als);
	st.access_lists = (char **)als;
	m.kind_case = SLUICE__V1__RESOURCE__KIND_SETTINGS;
	m.settings = &st;
	return decode(&m);
}

#define STRV(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* A growable list of resource references (one reference each). */
struct rlist {
	struct policy_res **v;
	size_t n, cap;
};

static void rl_add(struct rlist *l, struct policy_res *r)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		cr_assert_not_null(l->v);
	}
	l->v[l->n++] = r;
}

static void rl_free(struct rlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		policy_res_unref(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static struct snapshot *build_ok(uint64_t version, struct rlist *l)
{
	struct policy_errs e;
	struct snapshot *s = NULL;
	int rc;

	policy_errs_init(&e);
	rc = snapshot_build(RS, version, l->v, l->n, &e, &s);
	cr_assert_eq(rc, 0, "build failed (%d): %s", rc, e.n ? e.msg[0] : "?");
	return s;
}

/* The base ruleset most tests start from (version 5). */
static struct snapshot *base_snapshot(void)
{
	struct rlist l = { 0 };
	struct snapshot *s;

	rl_add(&l, mk_rate_limit("gold", 100, NULL));
	rl_add(&l, mk_rate_limit("silver", 10, NULL));
	rl_add(&l, mk_client("acme", STRV("k1", "k2"), "gold"));
	rl_add(&l, mk_client("beta", NULL, "silver"));
	rl_add(&l, mk_upstream("u1", "10.0.0.1:8080"));
	rl_add(&l, mk_access_list("office", STRV("10.0.0.0/8"), NULL));
	rl_add(&l, mk_route("r1", "api.example.com", "/v1", "u1", STRV("gold"), STRV("office")));
	s = build_ok(5, &l);
	rl_free(&l);
	return s;
}

static struct policy_delta *delta(uint64_t from, uint64_t to)
{
	struct policy_delta *d = NULL;

	cr_assert_eq(policy_delta_new(RS, from, to, &d), 0);
	return d;
}

static void d_up(struct policy_delta *d, struct policy_res *r)
{
	cr_assert_eq(policy_delta_add_upsert(d, r), 0);
	policy_res_unref(r);
}

static void d_rm(struct policy_delta *d, enum policy_kind kind, const char *id)
{
	cr_assert_eq(policy_delta_add_remove(d, kind, id), 0);
}

static bool errs_have(const struct policy_errs *e, const char *msg)
{
	for (unsigned i = 0; i < e->n; i++)
		if (strcmp(e->msg[i], msg) == 0)
			return true;
	return false;
}

static void dump_errs(const struct policy_errs *e)
{
	for (unsigned i = 0; i < e->n; i++)
		cr_log_info("err[%u]: %s", i, e->msg[i]);
}

/* What a snapshot holds, as text: every (kind, id, content hash). */
static int fp_cb(void *arg, const struct policy_res *r)
{
	char *buf = arg;
	size_t len = strlen(buf);

	snprintf(buf + len, 8192 - len, "%d/%s/%016llx ", r->kind, r->id,
		 (unsigned long long)r->content_hash[0]);
	return 0;
}

static void fingerprint(const struct snapshot *s, char buf[8192])
{
	buf[0] = 0;
	snapshot_foreach(s, fp_cb, buf);
}

/* Applies d to base, expects refusal rc with message msg, and checks the
 * base still holds exactly what it held. */
static void expect_refusal(struct snapshot *base, struct policy_delta *d, int rc, const char *msg)
{
	static char before[8192], after[8192];
	struct policy_errs e;
	struct snapshot *out = (struct snapshot *)0x1;
	uint64_t v = snapshot_version(base);

	fingerprint(base, before);
	policy_errs_init(&e);
	int got = snapshot_apply(base, d, &e, &out);
	dump_errs(&e);
	cr_assert_eq(got, rc, "rc %d, want %d", got, rc);
	cr_assert_eq(out, (struct snapshot *)0x1, "ret written on failure");
	cr_assert(errs_have(&e, msg), "missing error '%s' (have %u, first: '%s')", msg, e.n,
		  e.n ? e.msg[0] : "");
	cr_assert_eq(snapshot_version(base), v);
	fingerprint(base, after);
	cr_assert_str_eq(after, before, "base changed");
	policy_delta_free(d);
}

static struct snapshot *apply_ok(const struct snapshot *base, const struct policy_delta *d)
{
	struct policy_errs e;
	struct snapshot *s = NULL;
	int rc;

	policy_errs_init(&e);
	rc = snapshot_apply(base, d, &e, &s);
	dump_errs(&e);
	cr_assert_eq(rc, 0, "apply failed (%d): %s", rc, e.n ? e.msg[0] : "?");
	return s;
}

/* ---- construction and accessors ---- */

Test(snapshot, lookup_client_carries_what_the_request_path_needs)
{
	struct snapshot *base = base_snapshot(), *s;
	struct policy_delta *d = delta(5, 6);
	const struct snapshot_client *c;
	const struct policy_res *acme = snapshot_get(base, POLICY_KIND_CLIENT, "acme");

	c = snapshot_lookup_client(base, "k2", 2);
	cr_assert_not_null(c);
	cr_assert_eq(c->res, acme);
	cr_assert_eq(c->key_hash, acme->key_hash);
	cr_assert_str_eq(c->rate_limit.id, "gold");
	cr_assert_eq(c->rate_limit.key_hash, acme->u.client.rate_limit.key_hash);
	cr_assert_not(c->disabled);
	cr_assert_null(snapshot_lookup_client(base, "k", 1));
	cr_assert_null(snapshot_lookup_client(base, "acme", 4), "keys given: the id is no key");

	/* A changed client is seen through its entry in the next snapshot,
	 * the old snapshot's entry is unchanged. */
	d_up(d, mk_client_full("acme", STRV("k1", "k2"), NULL, 0, true));
	s = apply_ok(base, d);
	c = snapshot_lookup_client(s, "k1", 2);
	cr_assert(c->disabled);
	cr_assert_null(c->rate_limit.id);
	cr_assert_str_eq(snapshot_lookup_client(base, "k1", 2)->rate_limit.id, "gold");
	policy_delta_free(d);
	snapshot_unref(s);
	snapshot_unref(base);
}

Test(snapshot, new_empty_has_version_zero_and_default_settings)
{
	struct snapshot *s = NULL;

	cr_assert_eq(snapshot_new_empty(RS, &s), 0);
	cr_assert_str_eq(snapshot_ruleset(s), RS);
	cr_assert_eq(snapshot_version(s), 0);
	cr_assert_eq(snapshot_count(s, 0), 0);
	cr_assert_eq(snapshot_count(s, POLICY_KIND_CLIENT), 0);
	cr_assert_null(snapshot_get(s, POLICY_KIND_CLIENT, "acme"));
	cr_assert_null(snapshot_find_client(s, "k1", 2));
	cr_assert_null(snapshot_match_route(s, "x", 1, "/", 1));
	const struct policy_settings *st = snapshot_settings(s);
	cr_assert_str_eq(st->client_id_header, POLICY_DEFAULT_CLIENT_ID_HEADER);
	cr_assert_eq(st->max_body_bytes, POLICY_DEFAULT_MAX_BODY_BYTES);
	cr_assert_eq(st->request_timeout_ms, POLICY_DEFAULT_REQUEST_TIMEOUT_MS);
	cr_assert_null(st->default_rate_limit.id);
	cr_assert_eq(st->n_access_lists, 0);
	cr_assert_not(st->disabled);
	snapshot_unref(s);
}

Test(snapshot, new_empty_refuses_bad_ruleset_names)
{
	struct snapshot *s = (struct snapshot *)0x1;

	cr_assert_eq(snapshot_new_empty("", &s), -EINVAL);
	cr_assert_eq(snapshot_new_empty("Has Space", &s), -EINVAL);
	cr_assert_eq(snapshot_build("-x", 1, NULL, 0, NULL, &s), -EINVAL);
	cr_assert_eq(s, (struct snapshot *)0x1);
}

Test(snapshot, build_counts_and_finds_every_resource)
{
	struct snapshot *s = base_snapshot();

	cr_assert_str_eq(snapshot_ruleset(s), RS);
	cr_assert_eq(snapshot_version(s), 5);
	cr_assert_eq(snapshot_count(s, 0), 7);
	cr_assert_eq(snapshot_count(s, POLICY_KIND_CLIENT), 2);
	cr_assert_eq(snapshot_count(s, POLICY_KIND_RATE_LIMIT), 2);
	cr_assert_eq(snapshot_count(s, POLICY_KIND_ACCESS_LIST), 1);
	cr_assert_eq(snapshot_count(s, POLICY_KIND_ROUTE), 1);
	cr_assert_eq(snapshot_count(s, POLICY_KIND_UPSTREAM), 1);
	cr_assert_eq(snapshot_count(s, POLICY_KIND_SETTINGS), 0);

	const struct policy_res *acme = snapshot_get(s, POLICY_KIND_CLIENT, "acme");
	cr_assert_not_null(acme);
	cr_assert_str_eq(acme->id, "acme");
	cr_assert_eq(acme->kind, POLICY_KIND_CLIENT);
	cr_assert_null(snapshot_get(s, POLICY_KIND_RATE_LIMIT, "acme"), "kind is part of the key");
	cr_assert_null(snapshot_get(s, POLICY_KIND_CLIENT, "nobody"));

	const struct policy_res *gold = snapshot_get_ref(s, POLICY_KIND_RATE_LIMIT,
							 &acme->u.client.rate_limit);
	cr_assert_not_null(gold);
	cr_assert_str_eq(gold->id, "gold");
	struct policy_ref none = { 0 };
	cr_assert_null(snapshot_get_ref(s, POLICY_KIND_RATE_LIMIT, &none));
	snapshot_unref(s);
}

Test(snapshot, build_refuses_what_apply_refuses)
{
	struct rlist l = { 0 };
	struct policy_errs e;
	struct snapshot *s = (struct snapshot *)0x1;

	rl_add(&l, mk_client("acme", NULL, "gold"));
	rl_add(&l, mk_client("acme", STRV("x"), NULL));
	rl_add(&l, mk_client("b", STRV("acme"), NULL));
	policy_errs_init(&e);
	cr_assert_eq(snapshot_build(RS, 3, l.v, l.n, &e, &s), -EINVAL);
	dump_errs(&e);
	cr_assert(errs_have(&e, "snapshot: client/acme appears twice"));
	cr_assert_eq(s, (struct snapshot *)0x1);
	rl_free(&l);

	rl_add(&l, mk_client("acme", NULL, "gold"));
	rl_add(&l, mk_client("b", STRV("acme"), NULL));
	policy_errs_init(&e);
	cr_assert_eq(snapshot_build(RS, 3, l.v, l.n, &e, &s), -EINVAL);
	dump_errs(&e);
	cr_assert(errs_have(&e, "client/acme.rate_limit: rate_limit/gold does not exist"));
	cr_assert(errs_have(&e, "client/b.keys[0]: key 'acme' is already used by client/acme") ||
		  errs_have(&e, "client/acme.keys[0]: key 'acme' is already used by client/b"));
	cr_assert_eq(e.n, 2, "every problem is reported");
	rl_free(&l);
}

Test(snapshot, ref_and_unref_share_one_snapshot)
{
	struct snapshot *s = base_snapshot();
	size_t live = snapshot_live_count();
	struct snapshot *r = snapshot_ref(s);

	cr_assert_eq(r, s);
	snapshot_unref(s);
	cr_assert_eq(snapshot_live_count(), live);
	cr_assert_eq(snapshot_count(r, 0), 7);
	snapshot_unref(r);
	cr_assert_eq(snapshot_live_count(), live - 1);
	snapshot_unref(NULL);
}

static int collect_ids(void *arg, const struct policy_res *r)
{
	char *buf = arg;

	strcat(buf, policy_kind_name(r->kind));
	strcat(buf, "/");
	strcat(buf, r->id);
	strcat(buf, " ");
	return 0;
}

static int stop_at_second(void *arg, const struct policy_res *r)
{
	(void)r;
	return ++*(int *)arg == 2 ? 9 : 0;
}

Test(snapshot, foreach_visits_by_kind_then_id)
{
	struct rlist l = { 0 };
	struct snapshot *s;
	char buf[512] = "";
	int n = 0;

	rl_add(&l, mk_upstream("zeta", "10.0.0.1:80"));
	rl_add(&l, mk_client("b", NULL, NULL));
	rl_add(&l, mk_settings(NULL, NULL, NULL));
	rl_add(&l, mk_client("a10", NULL, NULL));
	rl_add(&l, mk_client("a2", NULL, NULL));
	rl_add(&l, mk_rate_limit("r", 1, NULL));
	rl_add(&l, mk_upstream("alpha", "10.0.0.2:80"));
	s = build_ok(1, &l);
	rl_free(&l);
	cr_assert_eq(snapshot_foreach(s, collect_ids, buf), 0);
	cr_assert_str_eq(buf, "client/a10 client/a2 client/b rate_limit/r upstream/alpha "
			      "upstream/zeta settings/global ");
	cr_assert_eq(snapshot_foreach(s, stop_at_second, &n), 9);
	cr_assert_eq(n, 2);
	snapshot_unref(s);
}

Test(snapshot, settings_come_from_the_resource_when_present)
{
	struct rlist l = { 0 };
	struct snapshot *s, *s2;
	struct policy_delta *d;

	rl_add(&l, mk_rate_limit("dflt", 5, NULL));
	rl_add(&l, mk_access_list("blk", NULL, STRV("192.0.2.0/24")));
	rl_add(&l, mk_settings("X-Api-Key", "dflt", STRV("blk")));
	s = build_ok(1, &l);
	rl_free(&l);
	const struct policy_settings *st = snapshot_settings(s);
	cr_assert_str_eq(st->client_id_header, "X-Api-Key");
	cr_assert_str_eq(st->default_rate_limit.id, "dflt");
	cr_assert_eq(st->n_access_lists, 1);
	cr_assert_eq(snapshot_count(s, POLICY_KIND_SETTINGS), 1);

	d = delta(1, 2);
	d_rm(d, POLICY_KIND_SETTINGS, POLICY_SETTINGS_ID);
	s2 = apply_ok(s, d);
	policy_delta_free(d);
	cr_assert_str_eq(snapshot_settings(s2)->client_id_header, POLICY_DEFAULT_CLIENT_ID_HEADER);
	cr_assert_eq(snapshot_settings(s2)->n_access_lists, 0);
	cr_assert_str_eq(snapshot_settings(s)->client_id_header, "X-Api-Key", "old unchanged");
	snapshot_unref(s);
	snapshot_unref(s2);
}

/* ---- apply ---- */

Test(snapshot, apply_adds_replaces_and_removes)
{
	struct snapshot *base = base_snapshot(), *next;
	struct policy_delta *d = delta(5, 9);

	d_up(d, mk_client("acme", STRV("k3"), "silver"));     /* replace */
	d_up(d, mk_client("gamma", STRV("k1"), NULL));        /* takes acme's old key */
	d_rm(d, POLICY_KIND_CLIENT, "beta");
	d_up(d, mk_route("r2", "", "/", NULL, NULL, NULL)); /* add */
	next = apply_ok(base, d);
	policy_delta_free(d);

	cr_assert_eq(snapshot_version(next), 9);
	cr_assert_eq(snapshot_count(next, 0), 8);
	cr_assert_eq(snapshot_count(next, POLICY_KIND_CLIENT), 2);
	cr_assert_eq(snapshot_count(next, POLICY_KIND_ROUTE), 2);
	cr_assert_null(snapshot_get(next, POLICY_KIND_CLIENT, "beta"));
	cr_assert_str_eq(snapshot_find_client(next, "k1", 2)->id, "gamma");
	cr_assert_null(snapshot_find_client(next, "k2", 2));
	cr_assert_str_eq(snapshot_find_client(next, "k3", 2)->id, "acme");
	cr_assert_null(snapshot_find_client(next, "beta", 4));

	/* The base is untouched. */
	cr_assert_eq(snapshot_version(base), 5);
	cr_assert_eq(snapshot_count(base, 0), 7);
	cr_assert_str_eq(snapshot_find_client(base, "k1", 2)->id, "acme");
	cr_assert_str_eq(snapshot_find_client(base, "beta", 4)->id, "beta");
	cr_assert_null(snapshot_find_client(base, "k3", 2));
	cr_assert_null(snapshot_match_route(base, "other", 5, "/x", 2));
	cr_assert_str_eq(snapshot_match_route(next, "other", 5, "/x", 2)->id, "r2");

	/* Now silver is used by acme: removing it is refused; gold is free. */
	d = delta(9, 10);
	d_rm(d, POLICY_KIND_RATE_LIMIT, "silver");
	expect_refusal(next, d, -EINVAL, "rate_limit/silver: still referenced by 1 resource");
	snapshot_unref(next);
	snapshot_unref(base);
}

Test(snapshot, identical_upsert_is_a_no_op)
{
	struct snapshot *base = base_snapshot(), *next;
	struct policy_delta *d = delta(5, 6);

	d_up(d, mk_client("acme", STRV("k1", "k2"), "gold"));
	d_up(d, mk_route("r1", "api.example.com", "/v1", "u1", STRV("gold"), STRV("office")));
	next = apply_ok(base, d);
	policy_delta_free(d);
	cr_assert_eq(snapshot_nodes_created(next), 0, "created %zu nodes",
		     snapshot_nodes_created(next));
	cr_assert_eq(snapshot_version(next), 6);
	cr_assert(snapshot_equal(base, next));
	/* The stored resource is still the base's own object. */
	cr_assert_eq(snapshot_get(next, POLICY_KIND_CLIENT, "acme"),
		     snapshot_get(base, POLICY_KIND_CLIENT, "acme"));
	snapshot_unref(next);
	snapshot_unref(base);
}

Test(snapshot, apply_accepts_null_errs)
{
	struct snapshot *base = base_snapshot(), *next = NULL;
	struct policy_delta *d = delta(4, 6);

	cr_assert_eq(snapshot_apply(base, d, NULL, &next), -ESTALE);
	policy_delta_free(d);
	d = delta(5, 6);
	d_up(d, mk_upstream("u2", "10.0.0.9:80"));
	cr_assert_eq(snapshot_apply(base, d, NULL, &next), 0);
	cr_assert_eq(snapshot_count(next, POLICY_KIND_UPSTREAM), 2);
	policy_delta_free(d);
	snapshot_unref(next);
	snapshot_unref(base);
}

Test(snapshot, refuses_stale_from_version)
{
	struct snapshot *base = base_snapshot();
	struct policy_delta *d = delta(7, 8);

	d_up(d, mk_upstream("u2", "10.0.0.9:80"));
	expect_refusal(base, d, -ESTALE, "delta.from_version: 7 does not match the node's version 5");
	snapshot_unref(base);
}

Test(snapshot, refuses_other_ruleset)
{
	struct snapshot *base = base_snapshot();
	struct policy_delta *d = NULL;

	cr_assert_eq(policy_delta_new("staging", 5, 6, &d), 0);
	expect_refusal(base, d, -ESTALE,
		       "delta.ruleset: 'staging' does not match the node's ruleset 'prod'");
	snapshot_unref(base);
}

Test(snapshot, refuses_to_version_not_after_from_version)
{
	struct snapshot *base = base_snapshot();

	expect_refusal(base, delta(5, 5), -EINVAL,
		       "delta.to_version: 5 must be greater than from_version 5");
	expect_refusal(base, delta(5, 3), -EINVAL,
		       "delta.to_version: 3 must be greater than from_version 5");
	snapshot_unref(base);
}

Test(snapshot, refuses_key_upserted_twice)
{
	struct snapshot *base = base_snapshot();
	struct policy_delta *d = delta(5, 6);

	d_up(d, mk_client("a", NULL, NULL));
	d_up(d, mk_client("a", STRV("other"), NULL));
	expect_refusal(base, d, -EINVAL, "delta: client/a appears twice");
	snapshot_unref(base);
}

Test(snapshot, refuses_key_upserted_and_removed)
{
	struct snapshot *base = base_snapshot();
	struct policy_delta *d = delta(5, 6);

	d_up(d, mk_client("beta", STRV("b2"), NULL));
	d_rm(d, POLICY_KIND_CLIENT, "beta");
	expect_refusal(base, d, -EINVAL, "delta: client/beta appears twice");
	snapshot_unref(base);
}

Test(snapshot, refuses_remove_of_absent_resource)
{
	struct snapshot *base = base_snapshot();
	struct policy_delta *d = delta(5, 6);

	d_rm(d, POLICY_KIND_CLIENT, "x");
	expect_refusal(base, d, -EINVAL, "delta.removes: client/x does not exist");
	snapshot_unref(base);
}

/* One dangling reference per reference field. */
struct dangling_case {
	char name[48];
	char msg[128];
	int which;
};

ParameterizedTestParameters(snapshot, refuses_dangling_reference)
{
	static struct dangling_case cases[] = {
		{ "client.rate_limit", "client/acme.rate_limit: rate_limit/platinum does not exist", 0 },
		{ "selector.client", "rate_limit/per-c.selector.client: client/ghost does not exist", 1 },
		{ "route.upstream", "route/api.upstream: upstream/nope does not exist", 2 },
		{ "route.rate_limits", "route/api.rate_limits[1]: rate_limit/nope does not exist", 3 },
		{ "route.access_lists", "route/api.access_lists[0]: access_list/nope does not exist", 4 },
		{ "settings.default_rate_limit",
		  "settings/global.default_rate_limit: rate_limit/nope does not exist", 5 },
		{ "settings.access_lists",
		  "settings/global.access_lists[1]: access_list/nope does not exist", 6 },
		{ "reference of the wrong kind", "client/acme.rate_limit: rate_limit/u1 does not exist",
		  7 },
	};
	return cr_make_param_array(struct dangling_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct dangling_case *c, snapshot, refuses_dangling_reference)
{
	struct snapshot *base = base_snapshot();
	struct policy_delta *d = delta(5, 6);

	cr_log_info("case: %s", c->name);
	switch (c->which) {
	case 0:
		d_up(d, mk_client("acme", STRV("k1"), "platinum"));
		break;
	case 1:
		d_up(d, mk_rate_limit("per-c", 3, "ghost"));
		break;
	case 2:
		d_up(d, mk_route("api", "", "/api", "nope", NULL, NULL));
		break;
	case 3:
		d_up(d, mk_route("api", "", "/api", "u1", STRV("gold", "nope"), NULL));
		break;
	case 4:
		d_up(d, mk_route("api", "", "/api", "u1", NULL, STRV("nope")));
		break;
	case 5:
		d_up(d, mk_settings(NULL, "nope", NULL));
		break;
	case 6:
		d_up(d, mk_settings(NULL, NULL, STRV("office", "nope")));
		break;
	case 7:
		d_up(d, mk_client("acme", STRV("k1"), "u1")); /* an upstream, not a limit */
		break;
	}
	expect_refusal(base, d, -EINVAL, c->msg);
	snapshot_unref(base);
}

Test(snapshot, refuses_removing_a_referenced_resource)
{
	struct snapshot *base = base_snapshot(), *next;
	struct policy_delta *d = delta(5, 6);

	/* gold is named by client/acme and route/r1. */
	d_rm(d, POLICY_KIND_RATE_LIMIT, "gold");
	expect_refusal(base, d, -EINVAL, "rate_limit/gold: still referenced by 2 resources");

	d = delta(5, 6);
	d_rm(d, POLICY_KIND_UPSTREAM, "u1");
	expect_refusal(base, d, -EINVAL, "upstream/u1: still referenced by 1 resource");

	/* Removing the referrers in the same delta makes it fine. */
	d = delta(5, 6);
	d_rm(d, POLICY_KIND_RATE_LIMIT, "gold");
	d_rm(d, POLICY_KIND_CLIENT, "acme");
	d_up(d, mk_route("r1", "api.example.com", "/v1", "u1", NULL, NULL));
	next = apply_ok(base, d);
	policy_delta_free(d);
	cr_assert_null(snapshot_get(next, POLICY_KIND_RATE_LIMIT, "gold"));
	snapshot_unref(next);
	snapshot_unref(base);
}

Test(snapshot, refuses_duplicate_client_key)
{
	struct snapshot *base = base_snapshot();
	struct policy_delta *d = delta(5, 6);

	d_up(d, mk_client("b", STRV("k1"), NULL));
	expect_refusal(base, d, -EINVAL, "client/b.keys[0]: key 'k1' is already used by client/acme");

	/* The id is the key of a client without keys. */
	d = delta(5, 6);
	d_up(d, mk_client("c", STRV("zz", "beta"), NULL));
	expect_refusal(base, d, -EINVAL, "client/c.keys[1]: key 'beta' is already used by client/beta");
	snapshot_unref(base);
}

Test(snapshot, refuses_duplicate_route)
{
	struct snapshot *base = base_snapshot();
	struct policy_delta *d = delta(5, 6);

	d_up(d, mk_route("r2", "api.example.com", "/v1", NULL, NULL, NULL));
	expect_refusal(base, d, -EINVAL,
		       "route/r2.path_prefix: host 'api.example.com' path '/v1' is already routed by route/r1");

	/* A trailing slash names the same prefix. */
	d = delta(5, 6);
	d_up(d, mk_route("r3", "api.example.com", "/v1/", NULL, NULL, NULL));
	expect_refusal(base, d, -EINVAL,
		       "route/r3.path_prefix: host 'api.example.com' path '/v1/' is already routed by route/r1");
	snapshot_unref(base);
}

Test(snapshot, collects_several_errors)
{
	struct snapshot *base = base_snapshot();
	struct policy_delta *d = delta(5, 6);

	d_up(d, mk_client("b", STRV("k1"), "nope"));
	d_up(d, mk_route("r2", "api.example.com", "/v1", "nope", NULL, NULL));
	d_rm(d, POLICY_KIND_RATE_LIMIT, "silver");
	struct policy_errs e;
	struct snapshot *out = NULL;

	policy_errs_init(&e);
	cr_assert_eq(snapshot_apply(base, d, &e, &out), -EINVAL);
	dump_errs(&e);
	cr_assert_eq(policy_errs_count(&e), 5);
	cr_assert(errs_have(&e, "client/b.rate_limit: rate_limit/nope does not exist"));
	cr_assert(errs_have(&e, "route/r2.upstream: upstream/nope does not exist"));
	cr_assert(errs_have(&e, "rate_limit/silver: still referenced by 1 resource"));
	policy_delta_free(d);
	snapshot_unref(base);
}

Test(snapshot, refuses_more_routes_than_the_cap, .timeout = 120)
{
	struct snapshot *empty = NULL;
	struct policy_delta *d = delta(0, 1);
	struct policy_errs e;
	struct snapshot *out = (struct snapshot *)0x1;
	char id[32], path[32];

	cr_assert_eq(snapshot_new_empty(RS, &empty), 0);
	for (unsigned i = 0; i <= POLICY_MAX_ROUTES; i++) {
		snprintf(id, sizeof(id), "r%u", i);
		snprintf(path, sizeof(path), "/p%u", i);
		d_up(d, mk_route(id, "", path, NULL, NULL, NULL));
	}
	policy_errs_init(&e);
	cr_assert_eq(snapshot_apply(empty, d, &e, &out), -E2BIG);
	dump_errs(&e);
	cr_assert(errs_have(&e, "delta: 10001 routes exceed the cap of 10000 (POLICY_MAX_ROUTES)"));
	cr_assert_eq(out, (struct snapshot *)0x1);
	cr_assert_eq(snapshot_count(empty, 0), 0);

	/* Exactly at the cap is fine. */
	d->n_upserts--;
	policy_res_unref(d->upserts[d->n_upserts]);
	out = apply_ok(empty, d);
	cr_assert_eq(snapshot_count(out, POLICY_KIND_ROUTE), POLICY_MAX_ROUTES);
	snapshot_unref(out);
	policy_delta_free(d);
	snapshot_unref(empty);
}

Test(snapshot, refusal_leaks_nothing)
{
	size_t live = snapshot_live_count();
	struct snapshot *base = base_snapshot();
	struct policy_res *r = mk_client("b", STRV("k1"), NULL);
	struct policy_delta *d = delta(5, 6);

	cr_assert_eq(policy_delta_add_upsert(d, r), 0);
	cr_assert_eq(snapshot_apply(base, d, NULL, &(struct snapshot *){ NULL }), -EINVAL);
	policy_delta_free(d);
	/* Only our own reference remains: the aborted edits dropped theirs. */
	cr_assert_eq(__atomic_load_n(&r->refcnt, __ATOMIC_RELAXED), 1);
	policy_res_unref(r);
	snapshot_unref(base);
	cr_assert_eq(snapshot_live_count(), live);
}

/* ---- request path ---- */

Test(snapshot, find_client_by_each_key_and_by_id)
{
	struct rlist l = { 0 };
	struct snapshot *s;

	rl_add(&l, mk_client("acme", STRV("k1", "k2", "longer-key-with-dashes"), NULL));
	rl_add(&l, mk_client("plain", NULL, NULL));
	rl_add(&l, mk_client_full("off", STRV("k-off"), NULL, 3, true));
	s = build_ok(1, &l);
	rl_free(&l);
	cr_assert_str_eq(snapshot_find_client(s, "k1", 2)->id, "acme");
	cr_assert_str_eq(snapshot_find_client(s, "k2", 2)->id, "acme");
	cr_assert_str_eq(snapshot_find_client(s, "longer-key-with-dashes", 22)->id, "acme");
	cr_assert_str_eq(snapshot_find_client(s, "plain", 5)->id, "plain");
	cr_assert_null(snapshot_find_client(s, "acme", 4), "acme has keys: its id is not one");
	const struct policy_res *off = snapshot_find_client(s, "k-off", 5);
	cr_assert_not_null(off, "disabled clients are found too");
	cr_assert(off->u.client.disabled);
	cr_assert_null(snapshot_find_client(s, "k", 1));
	cr_assert_null(snapshot_find_client(s, "k1x", 3));
	cr_assert_null(snapshot_find_client(s, "k1x", 0));
	/* The length decides, not a terminator. */
	cr_assert_str_eq(snapshot_find_client(s, "k1k2", 2)->id, "acme");
	snapshot_unref(s);
}

/* The request path hashes a key once and hands the hash on: the hashed
 * lookup must answer exactly as the plain one, including for absent keys. */
Test(snapshot, lookup_client_by_precomputed_hash_agrees)
{
	static const char *const keys[] = { "k1", "k2", "longer-key-with-dashes", "plain",
					    "k-off", "acme", "k", "k1x", "" };
	struct rlist l = { 0 };
	struct snapshot *s;

	rl_add(&l, mk_client("acme", STRV("k1", "k2", "longer-key-with-dashes"), NULL));
	rl_add(&l, mk_client("plain", NULL, NULL));
	rl_add(&l, mk_client_full("off", STRV("k-off"), NULL, 3, true));
	s = build_ok(1, &l);
	rl_free(&l);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		size_t n = strlen(keys[i]);
		const struct snapshot_client *a = snapshot_lookup_client(s, keys[i], n);
		const struct snapshot_client *b =
			snapshot_lookup_client_hash(s, keys[i], n, snapshot_client_key_hash(keys[i], n));

		cr_assert_eq(a, b, "key '%s'", keys[i]);
		cr_assert_eq(a != NULL, i < 5, "key '%s'", keys[i]);
	}
	snapshot_unref(s);
}

struct route_case {
	char name[64];
	char host[32];
	char path[64];
	char want[16]; /* "" when no route matches */
};

ParameterizedTestParameters(snapshot, match_route_picks_host_then_longest_prefix)
{
	static struct route_case cases[] = {
		{ "exact host, exact prefix", "api.example.com", "/api", "h-api" },
		{ "exact host, deeper path", "api.example.com", "/api/x/y", "h-api" },
		{ "exact host, longest prefix wins", "api.example.com", "/api/v2/users", "h-api-v2" },
		{ "prefix must end at a segment", "api.example.com", "/apix", "h-root" },
		{ "trailing slash", "api.example.com", "/api/v2/", "h-api-v2" },
		{ "query ignored", "api.example.com", "/api/v2?x=/api/v2/deep", "h-api-v2" },
		{ "exact host root route", "api.example.com", "/other", "h-root" },
		{ "exact host beats catch-all deeper", "api.example.com", "/static/img", "h-root" },
		{ "other host falls to catch-all", "www.example.com", "/static/img/a.png",
		  "any-static" },
		{ "catch-all longest", "www.example.com", "/static/img/x/a", "any-static" },
		{ "catch-all segment boundary", "www.example.com", "/staticfiles", "any-root" },
		{ "catch-all root", "www.example.com", "/", "any-root" },
		{ "empty path is the root", "www.example.com", "", "any-root" },
		{ "no host", "", "/static/img", "any-static" },
		{ "deep route exact depth", "deep.example.com", "/a/b/c/d", "deep" },
		{ "deep route deeper path", "deep.example.com", "/a/b/c/d/e/f/g", "deep" },
		{ "deep route shorter path", "deep.example.com", "/a/b/c", "any-root" },
		{ "deep route sibling", "deep.example.com", "/a/b/c/dd", "any-root" },
		{ "host match is exact", "API.example.com", "/api", "any-root" },
		{ "trailing slashes", "api.example.com", "/api/v2///", "h-api-v2" },
		{ "trailing slash then query", "api.example.com", "/api/v2/?q=1", "h-api-v2" },
		{ "only a query is the root", "api.example.com", "?/api/v2", "h-root" },
		{ "inner double slash", "api.example.com", "/api//v2", "h-api" },
		{ "double slash after the prefix", "api.example.com", "/api/v2//x", "h-api-v2" },
		{ "query right after the prefix", "deep.example.com", "/a/b/c/d?e", "deep" },
		{ "slashes past the deepest route", "deep.example.com", "/a/b/c/d//", "deep" },
		{ "relative path is the root", "www.example.com", "static/img", "any-root" },
	};
	return cr_make_param_array(struct route_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct route_case *c, snapshot, match_route_picks_host_then_longest_prefix)
{
	struct rlist l = { 0 };
	struct snapshot *s;

	cr_log_info("case: %s", c->name);
	rl_add(&l, mk_route("h-api", "api.example.com", "/api", NULL, NULL, NULL));
	rl_add(&l, mk_route("h-api-v2", "api.example.com", "/api/v2/", NULL, NULL, NULL));
	rl_add(&l, mk_route("h-root", "api.example.com", "/", NULL, NULL, NULL));
	rl_add(&l, mk_route("any-static", "", "/static/img", NULL, NULL, NULL));
	rl_add(&l, mk_route("any-root", "", "/", NULL, NULL, NULL));
	rl_add(&l, mk_route("deep", "deep.example.com", "/a/b/c/d", NULL, NULL, NULL));
	s = build_ok(1, &l);
	rl_free(&l);
	const struct policy_res *r = snapshot_match_route(s, c->host, strlen(c->host), c->path,
							  strlen(c->path));
	if (!c->want[0])
		cr_assert_null(r, "got %s", r ? r->id : "");
	else
		cr_assert(r && strcmp(r->id, c->want) == 0, "got %s, want %s", r ? r->id : "(none)",
			  c->want);
	snapshot_unref(s);
}

Test(snapshot, match_route_without_catch_all_can_miss)
{
	struct rlist l = { 0 };
	struct snapshot *s;

	rl_add(&l, mk_route("api", "api.example.com", "/api", NULL, NULL, NULL));
	s = build_ok(1, &l);
	rl_free(&l);
	cr_assert_null(snapshot_match_route(s, "api.example.com", 15, "/", 1));
	cr_assert_null(snapshot_match_route(s, "api.example.com", 15, "/apix/y", 7));
	cr_assert_null(snapshot_match_route(s, "other", 5, "/api", 4));
	cr_assert_str_eq(snapshot_match_route(s, "api.example.com", 15, "/api/y", 6)->id, "api");
	/* Lengths are honoured: the bytes after them are not part of it. */
	cr_assert_str_eq(snapshot_match_route(s, "api.example.comXX", 15, "/apixx", 4)->id, "api");
	snapshot_unref(s);
}

/* The route match as docs/POLICY.md states it, by brute force over every
 * route of the snapshot: what the request path's indexes and its
 * per-thread memo must reproduce exactly. */
struct ref_route_arg {
	const char *host, *path;
	size_t host_len, path_len;
	const struct policy_res *best;
};

static int ref_route_cb(void *arg, const struct policy_res *r)
{
	struct ref_route_arg *a = arg;
	const struct policy_route *rt = &r->u.route;
	size_t l = rt->match_prefix_len;

	if (r->kind != POLICY_KIND_ROUTE || strlen(rt->host) != a->host_len ||
	    memcmp(rt->host, a->host, a->host_len) != 0)
		return 0;
	if (!(l == 1 && rt->match_prefix[0] == '/') &&
	    !(l <= a->path_len && memcmp(a->path, rt->match_prefix, l) == 0 &&
	      (l == a->path_len || a->path[l] == '/')))
		return 0;
	if (!a->best || l > a->best->u.route.match_prefix_len)
		a->best = r;
	return 0;
}

static const struct policy_res *ref_match_route(const struct snapshot *s, const char *host,
						size_t host_len, const char *path, size_t path_len)
{
	struct ref_route_arg a = { .host = host, .host_len = host_len };
	const char *q;

	if (path_len == 0 || path[0] != '/') {
		path = "/";
		path_len = 1;
	}
	if ((q = memchr(path, '?', path_len)))
		path_len = (size_t)(q - path);
	a.path = path;
	a.path_len = path_len;
	if (host_len) {
		snapshot_foreach(s, ref_route_cb, &a);
		if (a.best)
			return a.best;
	}
	a.host = "";
	a.host_len = 0;
	snapshot_foreach(s, ref_route_cb, &a);
	return a.best;
}

static uint32_t route_rand(void)
{
	return (uint32_t)(fixture_rand() >> 32);
}

/* A random path over "/ab?" (or an empty or relative one now and then). */
static size_t random_path(char *buf, size_t cap)
{
	static const char alpha[] = "//ab?";
	size_t n = route_rand() % cap;

	for (size_t i = 0; i < n; i++)
		buf[i] = alpha[route_rand() % 5];
	if (n && route_rand() % 8)
		buf[0] = '/';
	return n;
}

/* A random ruleset of routes over a few hosts and short segment prefixes. */
static struct snapshot *random_routes(uint64_t version, const char *const *hosts, size_t n_hosts)
{
	struct rlist l = { 0 };
	char id[32], prefix[32];
	struct snapshot *s;
	int n = 0;

	for (size_t h = 0; h < n_hosts; h++) {
		/* Distinct normalized prefixes per host: a duplicate is refused. */
		static const char *const pool[] = { "/", "/a", "/b", "/a/b", "/a/a", "/b/a/b",
						    "/a/b/a", "/ab", "/a/b/a/b/a", "/b/b/" };
		for (size_t k = 0; k < sizeof(pool) / sizeof(pool[0]); k++) {
			if (route_rand() % 2)
				continue;
			snprintf(id, sizeof(id), "r%d", n++);
			snprintf(prefix, sizeof(prefix), "%s", pool[k]);
			rl_add(&l, mk_route(id, hosts[h], prefix, NULL, NULL, NULL));
		}
	}
	s = build_ok(version, &l);
	rl_free(&l);
	return s;
}

/* Old and new agree: the index match (with the per-thread memo, hit and
 * missed, across snapshots whose memo entries share slots) against the
 * brute-force reference, on random rulesets and random requests. */
Test(snapshot, match_route_agrees_with_brute_force_on_random_requests)
{
	static const char *const hosts[] = {
		"", "x", "api.example.com",
		"a-host-name-too-long-for-the-memo-of-routes-to-keep.example.com",
	};
	const size_t n_hosts = sizeof(hosts) / sizeof(hosts[0]);
	char path[16];

	for (int round = 0; round < 60; round++) {
		struct snapshot *s[2] = { random_routes(1, hosts, n_hosts),
					  random_routes(2, hosts, n_hosts) };

		for (int i = 0; i < 3000; i++) {
			const struct snapshot *cur = s[route_rand() % 2];
			/* "z": a host without routes of its own. */
			const char *host = route_rand() % 5 ? hosts[route_rand() % n_hosts] : "z";
			size_t pl = random_path(path, sizeof(path));

			for (int again = 0; again < 2; again++) {
				const struct policy_res *want =
					ref_match_route(cur, host, strlen(host), path, pl);
				const struct policy_res *got =
					snapshot_match_route(cur, host, strlen(host), path, pl);

				cr_assert_eq(got, want, "host '%s' path '%.*s': got %s, want %s",
					     host, (int)pl, path, got ? got->id : "(none)",
					     want ? want->id : "(none)");
				/* The index without the memo, and its copy. */
				const struct snapshot_route *sr =
					snapshot_lookup_route(cur, host, strlen(host), path, pl);
				struct snapshot_route copy;

				cr_assert_eq(sr ? sr->res : NULL, want);
				cr_assert_eq(snapshot_find_route(cur, host, strlen(host), path, pl,
								 &copy),
					     want != NULL);
				if (sr)
					cr_assert(copy.res == sr->res &&
						  copy.all_methods == sr->all_methods &&
						  copy.no_access_lists == sr->no_access_lists &&
						  copy.no_rate_limits == sr->no_rate_limits);
			}
		}
		snapshot_unref(s[0]);
		snapshot_unref(s[1]);
	}
}

/* The same on long paths (up to 63 bytes) with few slashes and a rare
 * '?', so that the scan for where a path stops mattering runs its
 * sixteen-byte blocks, then its eight-byte words, then single bytes, and
 * finds the deciding slash or query in each of them. */
Test(snapshot, match_route_agrees_with_brute_force_on_long_paths)
{
	static const char *const hosts[] = { "", "api.example.com" };
	static const char alpha[] = "/aaabbbbab/aaaabbab?";
	char path[64];

	for (int round = 0; round < 20; round++) {
		struct snapshot *s = random_routes(1, hosts, 2);

		for (int i = 0; i < 3000; i++) {
			const char *host = hosts[route_rand() % 2];
			size_t pl = route_rand() % sizeof(path);

			for (size_t k = 0; k < pl; k++)
				path[k] = alpha[route_rand() % (sizeof(alpha) - 1)];
			if (pl)
				path[0] = '/';
			/* Now and then a long run without a slash, or of slashes. */
			if (pl > 20 && route_rand() % 4 == 0)
				memset(path + 1 + route_rand() % 8, route_rand() % 2 ? 'a' : '/',
				       route_rand() % (pl - 10));
			for (int again = 0; again < 2; again++) {
				const struct policy_res *want =
					ref_match_route(s, host, strlen(host), path, pl);
				const struct policy_res *got =
					snapshot_match_route(s, host, strlen(host), path, pl);
				const struct snapshot_route *sr =
					snapshot_lookup_route(s, host, strlen(host), path, pl);

				cr_assert_eq(got, want, "host '%s' path '%.*s': got %s, want %s",
					     host, (int)pl, path, got ? got->id : "(none)",
					     want ? want->id : "(none)");
				cr_assert_eq(sr ? sr->res : NULL, want);
			}
		}
		snapshot_unref(s);
	}
}

/* The per-thread memo answers for one snapshot only: the same request
 * against a later snapshot, or an earlier one again, sees that snapshot's
 * route, also when the memo holds the other's answer for the same pair. */
Test(snapshot, match_route_memo_answers_for_its_snapshot_only)
{
	struct rlist l = { 0 };
	struct snapshot *a, *b, *c;

	rl_add(&l, mk_route("ra", "api.example.com", "/v1", NULL, NULL, NULL));
	a = build_ok(1, &l);
	rl_free(&l);
	rl_add(&l, mk_route("rb", "api.example.com", "/v1", NULL, NULL, NULL));
	b = build_ok(2, &l);
	rl_free(&l);
	rl_add(&l, mk_route("rc", "api.example.com", "/v2", NULL, NULL, NULL));
	c = build_ok(3, &l);
	rl_free(&l);
	for (int i = 0; i < 3; i++) {
		cr_assert_str_eq(snapshot_match_route(a, "api.example.com", 15, "/v1/x", 5)->id, "ra");
		cr_assert_str_eq(snapshot_match_route(b, "api.example.com", 15, "/v1/x", 5)->id, "rb");
		cr_assert_null(snapshot_match_route(c, "api.example.com", 15, "/v1/x", 5));
		cr_assert_str_eq(snapshot_lookup_route(a, "api.example.com", 15, "/v1/x", 5)->res->id,
				 "ra");
		struct snapshot_route copy;

		cr_assert(snapshot_find_route(b, "api.example.com", 15, "/v1/x", 5, &copy));
		cr_assert_str_eq(copy.res->id, "rb");
		cr_assert_not(snapshot_find_route(c, "api.example.com", 15, "/v1/x", 5, &copy));
	}
	snapshot_unref(a);
	snapshot_unref(b);
	snapshot_unref(c);
}

struct access_case {
	char name[64];
	char addr[48];
	int with_route;   /* use the route's lists too */
	int want;         /* enum snapshot_access */
	char list[16];    /* deciding list on refusal */
};

ParameterizedTestParameters(snapshot, check_access_applies_deny_then_allow)
{
	static struct access_case cases[] = {
		{ "global deny wins", "192.0.2.7", 1, SNAPSHOT_ACCESS_DENY, "g-deny" },
		{ "global deny without route", "192.0.2.7", 0, SNAPSHOT_ACCESS_DENY, "g-deny" },
		{ "route deny wins over route allow", "10.9.9.9", 1, SNAPSHOT_ACCESS_DENY, "rt-mixed" },
		{ "allowed by every allow list", "10.1.2.3", 1, SNAPSHOT_ACCESS_ALLOW, "" },
		{ "global lists only: no allow list there", "172.16.0.1", 0, SNAPSHOT_ACCESS_ALLOW,
		  "" },
		{ "route allow must match", "172.16.0.1", 1, SNAPSHOT_ACCESS_NOT_ALLOWED,
		  "rt-mixed" },
		{ "IPv6 deny", "2001:db8:dead::1", 1, SNAPSHOT_ACCESS_DENY, "g-deny" },
		{ "IPv6 allowed", "2001:db8:1::5", 1, SNAPSHOT_ACCESS_ALLOW, "" },
		{ "IPv6 not in allow", "2001:db9::1", 1, SNAPSHOT_ACCESS_NOT_ALLOWED, "rt-mixed" },
		{ "v4-mapped looked up as IPv4", "::ffff:192.0.2.7", 1, SNAPSHOT_ACCESS_DENY,
		  "g-deny" },
		{ "v4-mapped allowed", "::ffff:10.1.2.3", 1, SNAPSHOT_ACCESS_ALLOW, "" },
	};
	return cr_make_param_array(struct access_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct access_case *c, snapshot, check_access_applies_deny_then_allow)
{
	struct rlist l = { 0 };
	struct snapshot *s;
	struct cidr_addr a;

	cr_log_info("case: %s", c->name);
	rl_add(&l, mk_access_list("g-deny", NULL, STRV("192.0.2.0/24", "2001:db8:dead::/48")));
	rl_add(&l, mk_access_list("g-empty", NULL, NULL));
	rl_add(&l, mk_access_list("rt-mixed", STRV("10.0.0.0/8", "2001:db8::/32"),
				  STRV("10.9.0.0/16")));
	rl_add(&l, mk_settings(NULL, NULL, STRV("g-deny", "g-empty")));
	rl_add(&l, mk_route("r", "", "/", NULL, NULL, STRV("rt-mixed")));
	s = build_ok(1, &l);
	rl_free(&l);
	cr_assert_eq(cidr_addr_parse(c->addr, &a), 0);
	const struct policy_res *route = c->with_route ? snapshot_get(s, POLICY_KIND_ROUTE, "r")
						       : NULL;
	const struct policy_res *list = (const struct policy_res *)0x1;
	enum snapshot_access got = snapshot_check_access(s, route, &a, &list);

	cr_assert_eq((int)got, (int)c->want, "got %d, want %d", got, c->want);
	if (c->want == SNAPSHOT_ACCESS_ALLOW)
		cr_assert_null(list);
	else
		cr_assert(list && strcmp(list->id, c->list) == 0, "list %s, want %s",
			  list ? list->id : "(none)", c->list);
	cr_assert_eq((int)snapshot_check_access(s, route, &a, NULL), (int)c->want);
	snapshot_unref(s);
}

Test(snapshot, check_access_allows_without_any_list)
{
	struct snapshot *s = NULL;
	struct cidr_addr a;

	cr_assert_eq(snapshot_new_empty(RS, &s), 0);
	cr_assert_eq(cidr_addr_parse("203.0.113.9", &a), 0);
	cr_assert_eq(snapshot_check_access(s, NULL, &a, NULL), SNAPSHOT_ACCESS_ALLOW);
	snapshot_unref(s);
}

/* snapshot_global_access_open() (inline, snapshot.h) may only say "the
 * global lists let this address through" when snapshot_check_access()
 * without a route allows it, and says it wherever no global list reaches
 * the first octet and no global allow list exists. Every first octet, at
 * the edges of each /8, for: no lists; deny lists (with a /16, a /32 at
 * an octet's last address, a v4-mapped prefix and an IPv6 one); a deny
 * list with /0; an allow list; and the empty snapshot. */
Test(snapshot, global_access_open_agrees_with_check_access)
{
	static const struct {
		const char *deny[4], *allow[2];
		const char *closed; /* first octets not open: "a,b," */
	} sets[] = {
		{ { NULL }, { NULL }, "" },
		{ { "100.64.0.0/16", "9.255.255.255/32", "::ffff:192.168.0.0/112", "2001:db8::/32" },
		  { NULL }, "9,100,192," },
		{ { "0.0.0.0/0" }, { NULL }, "all" },
		{ { "100.64.0.0/16" }, { "10.0.0.0/8" }, "all" },
	};

	for (size_t k = 0; k <= sizeof(sets) / sizeof(sets[0]); k++) {
		struct rlist l = { 0 };
		struct snapshot *s;
		bool closed[256] = { false };

		if (k == sizeof(sets) / sizeof(sets[0])) {
			cr_assert_eq(snapshot_new_empty(RS, &s), 0);
		} else {
			const char *const *deny = sets[k].deny[0] ? sets[k].deny : NULL;
			const char *const *allow = sets[k].allow[0] ? sets[k].allow : NULL;

			if (deny || allow) {
				rl_add(&l, mk_access_list("g", allow, deny));
				rl_add(&l, mk_settings(NULL, NULL, STRV("g")));
			}
			rl_add(&l, mk_route("r", "", "/", NULL, NULL, NULL));
			s = build_ok(1, &l);
			rl_free(&l);
			if (!strcmp(sets[k].closed, "all"))
				memset(closed, 1, sizeof(closed));
			for (const char *c = sets[k].closed; *c && *c != 'a'; c++) {
				char *end;
				unsigned long o = strtoul(c, &end, 10);

				closed[o] = true;
				c = end;
			}
		}
		for (unsigned oct = 0; oct < 256; oct++) {
			static const uint8_t tails[][3] = { { 0, 0, 0 }, { 64, 0, 1 }, { 255, 255, 255 } };

			for (size_t t = 0; t < 3; t++) {
				struct cidr_addr a = { .family = AF_INET,
						       .addr = { (uint8_t)oct, tails[t][0], tails[t][1],
								 tails[t][2] } };
				bool open = snapshot_global_access_open(s, &a);

				cr_assert_eq(open, !closed[oct], "set %zu, first octet %u", k, oct);
				if (open)
					cr_assert_eq(snapshot_check_access(s, NULL, &a, NULL),
						     SNAPSHOT_ACCESS_ALLOW, "set %zu, %u.%u.%u.%u", k,
						     a.addr[0], a.addr[1], a.addr[2], a.addr[3]);
			}
		}
		/* IPv6 sources always take the full check. */
		struct cidr_addr a6 = { .family = AF_INET6 };

		cr_assert_not(snapshot_global_access_open(s, &a6));
		snapshot_unref(s);
	}
}

/* ---- path copying at scale ---- */

Test(snapshot, one_resource_delta_on_100k_clients_copies_little, .timeout = 120)
{
	enum { N = 100000 };
	struct policy_res **v = malloc(N * sizeof(*v));
	struct snapshot *big, *next;
	struct policy_delta *d;
	char id[32], key[32];

	cr_assert_not_null(v);
	for (unsigned i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "c%u", i);
		snprintf(key, sizeof(key), "key-%u", i);
		v[i] = mk_client(id, STRV(key), NULL);
	}
	struct policy_errs e;
	policy_errs_init(&e);
	cr_assert_eq(snapshot_build(RS, 1, v, N, &e, &big), 0);
	cr_assert_eq(snapshot_count(big, POLICY_KIND_CLIENT), N);
	/* A bulk build mutates its own nodes in place: O(n) nodes in all,
	 * where copying paths per insert would make ~4 per map and key. */
	cr_assert_lt(snapshot_nodes_created(big), 2 * N, "created %zu",
		     snapshot_nodes_created(big));

	d = delta(1, 2);
	d_up(d, mk_client("c77", STRV("new-key"), NULL));
	next = apply_ok(big, d);
	policy_delta_free(d);
	cr_assert_leq(snapshot_nodes_created(next), 64, "created %zu",
		      snapshot_nodes_created(next));
	cr_assert_str_eq(snapshot_find_client(next, "new-key", 7)->id, "c77");
	cr_assert_null(snapshot_find_client(next, "key-77", 6));
	/* the old snapshot is unchanged */
	cr_assert_str_eq(snapshot_find_client(big, "key-77", 6)->id, "c77");
	cr_assert_null(snapshot_find_client(big, "new-key", 7));
	cr_assert_str_eq(snapshot_find_client(next, "key-99999", 9)->id, "c99999");

	struct policy_delta *back = NULL;
	cr_assert_eq(snapshot_diff(big, next, &back), 0);
	cr_assert_eq(back->n_upserts, 1);
	cr_assert_eq(back->n_removes, 0);
	cr_assert_str_eq(back->upserts[0]->id, "c77");
	policy_delta_free(back);

	for (unsigned i = 0; i < N; i++)
		policy_res_unref(v[i]);
	free(v);
	snapshot_unref(next);
	snapshot_unref(big);
}

/* ---- diff and equality ---- */

Test(snapshot, diff_lists_sorted_upserts_and_removes)
{
	struct snapshot *a = base_snapshot(), *b;
	struct policy_delta *d = delta(5, 8), *got = NULL;

	d_up(d, mk_client("zed", NULL, NULL));
	d_up(d, mk_client("acme", STRV("k1"), "gold"));
	d_up(d, mk_upstream("u0", "10.0.0.3:80"));
	d_rm(d, POLICY_KIND_CLIENT, "beta");
	d_rm(d, POLICY_KIND_RATE_LIMIT, "silver");
	b = apply_ok(a, d);
	policy_delta_free(d);

	cr_assert_eq(snapshot_diff(a, b, &got), 0);
	cr_assert_str_eq(got->ruleset, RS);
	cr_assert_eq(got->from_version, 5);
	cr_assert_eq(got->to_version, 8);
	cr_assert_eq(got->n_upserts, 3);
	cr_assert_str_eq(got->upserts[0]->id, "acme");
	cr_assert_str_eq(got->upserts[1]->id, "zed");
	cr_assert_str_eq(got->upserts[2]->id, "u0");
	cr_assert_eq(got->n_removes, 2);
	cr_assert_eq(got->removes[0].kind, POLICY_KIND_CLIENT);
	cr_assert_str_eq(got->removes[0].id, "beta");
	cr_assert_eq(got->removes[1].kind, POLICY_KIND_RATE_LIMIT);
	cr_assert_str_eq(got->removes[1].id, "silver");
	policy_delta_free(got);

	cr_assert_not(snapshot_equal(a, b));
	cr_assert(snapshot_equal(a, a));
	struct snapshot *c = base_snapshot();
	cr_assert(snapshot_equal(a, c), "built separately, same content");
	cr_assert_eq(snapshot_diff(a, c, &got), 0);
	cr_assert_eq(got->n_upserts + got->n_removes, 0);
	policy_delta_free(got);

	struct snapshot *other = NULL;
	cr_assert_eq(snapshot_new_empty("other", &other), 0);
	cr_assert_eq(snapshot_diff(a, other, &got), -EINVAL);
	cr_assert_not(snapshot_equal(a, other));
	struct snapshot *empty = NULL;
	cr_assert_eq(snapshot_new_empty(RS, &empty), 0);
	cr_assert_not(snapshot_equal(a, empty));
	snapshot_unref(empty);
	snapshot_unref(other);
	snapshot_unref(c);
	snapshot_unref(a);
	snapshot_unref(b);
}

/* ---- the randomized property: apply(a, diff(a, b)) == b ---- */

static uint32_t rnd(void)
{
	return (uint32_t)(fixture_rand() >> 32);
}

/* Slots of the random universe: 36 resources at most. */
enum { NC = 10, NR = 6, NA = 5, NT = 10, NU = 4, NS = 1 };
enum { S_C = 0, S_R = S_C + NC, S_A = S_R + NR, S_T = S_A + NA, S_U = S_T + NT, S_S = S_U + NU,
       NSLOT = S_S + NS };

/* A random ruleset described by slot: present, content variant, and the
 * choices that pick its references among the present targets. */
struct world {
	bool present[NSLOT];
	uint8_t variant[NSLOT];
	uint32_t pick[NSLOT][3];
};

static void world_random(struct world *w)
{
	unsigned p = rnd() % 101;

	for (int i = 0; i < NSLOT; i++) {
		w->present[i] = rnd() % 100 < p;
		w->variant[i] = rnd() % 3;
		for (int j = 0; j < 3; j++)
			w->pick[i][j] = rnd();
	}
}

static void world_mutate(struct world *w)
{
	int n = 1 + rnd() % 4;

	for (int k = 0; k < n; k++) {
		int i = rnd() % NSLOT;

		if (rnd() % 2)
			w->present[i] = !w->present[i];
		else
			w->variant[i] = (w->variant[i] + 1) % 3;
		if (rnd() % 4 == 0)
			w->pick[i][rnd() % 3] = rnd();
	}
}

/* The pick-th present slot in [first, first+n), or -1 for none. */
static int choose(const struct world *w, int first, int n, uint32_t pick)
{
	int present = 0, k;

	for (int i = first; i < first + n; i++)
		present += w->present[i];
	if (present == 0 || pick % (present + 1) == (uint32_t)present)
		return -1;
	k = (int)(pick % present);
	for (int i = first; i < first + n; i++)
		if (w->present[i] && k-- == 0)
			return i - first;
	return -1;
}

static struct policy_res *world_res(const struct world *w, int slot)
{
	char id[16], ref[16], ref2[16], k1[32], k2[32];
	int c;

	if (slot < S_R) {
		int i = slot - S_C, v = w->variant[slot];

		snprintf(id, sizeof(id), "c%d", i);
		snprintf(k1, sizeof(k1), "key-c%d-%d", i, v);
		snprintf(k2, sizeof(k2), "alt-c%d", i);
		c = choose(w, S_R, NR, w->pick[slot][0]);
		snprintf(ref, sizeof(ref), "r%d", c);
		const char *keys1[] = { k1, NULL }, *keys2[] = { k1, k2, NULL };
		return mk_client_full(id, v == 0 ? NULL : v == 1 ? keys1 : keys2,
				      c < 0 ? NULL : ref, v, false);
	}
	if (slot < S_A) {
		int i = slot - S_R;

		snprintf(id, sizeof(id), "r%d", i);
		c = choose(w, S_C, NC, w->pick[slot][0]);
		snprintf(ref, sizeof(ref), "c%d", c);
		return mk_rate_limit(id, 10 + w->variant[slot], c < 0 ? NULL : ref);
	}
	if (slot < S_T) {
		int i = slot - S_A;

		snprintf(id, sizeof(id), "a%d", i);
		switch (w->variant[slot]) {
		case 0:
			return mk_access_list(id, NULL, NULL);
		case 1:
			return mk_access_list(id, STRV("10.0.0.0/8"), STRV("10.1.0.0/16"));
		default:
			return mk_access_list(id, NULL, STRV("2001:db8::/32"));
		}
	}
	if (slot < S_U) {
		static const char *hosts[] = { "", "a.example", "b.example" };
		int i = slot - S_T, v = w->variant[slot];
		int up = choose(w, S_U, NU, w->pick[slot][0]);
		int rl = choose(w, S_R, NR, w->pick[slot][1]);
		int al = choose(w, S_A, NA, w->pick[slot][2]);
		char path[32], upid[16];
		const char *rls[] = { ref, NULL }, *als[] = { ref2, NULL };

		snprintf(id, sizeof(id), "t%d", i);
		snprintf(path, sizeof(path), v ? "/p%d/v%d" : "/p%d", i, v);
		snprintf(upid, sizeof(upid), "u%d", up);
		snprintf(ref, sizeof(ref), "r%d", rl);
		snprintf(ref2, sizeof(ref2), "a%d", al);
		return mk_route(id, hosts[i % 3], path, up < 0 ? NULL : upid,
				rl < 0 ? NULL : rls, al < 0 ? NULL : als);
	}
	if (slot < S_S) {
		int i = slot - S_U;
		char ep[32];

		snprintf(id, sizeof(id), "u%d", i);
		snprintf(ep, sizeof(ep), "10.0.0.%d:%d", i + 1, 8080 + w->variant[slot]);
		return mk_upstream(id, ep);
	}
	{
		int rl = choose(w, S_R, NR, w->pick[slot][0]);
		int al = choose(w, S_A, NA, w->pick[slot][1]);
		const char *als[] = { ref2, NULL };

		snprintf(ref, sizeof(ref), "r%d", rl);
		snprintf(ref2, sizeof(ref2), "a%d", al);
		return mk_settings(w->variant[slot] ? "X-Key" : NULL, rl < 0 ? NULL : ref,
				   al < 0 ? NULL : als);
	}
}

static struct snapshot *world_build(const struct world *w, uint64_t version)
{
	struct rlist l = { 0 };
	struct snapshot *s;

	/* Insertion order varies too. */
	int start = rnd() % NSLOT;
	for (int k = 0; k < NSLOT; k++) {
		int i = (start + k) % NSLOT;

		if (w->present[i])
			rl_add(&l, world_res(w, i));
	}
	s = build_ok(version, &l);
	rl_free(&l);
	return s;
}

static const struct policy_res *slot_get(const struct snapshot *s, int slot)
{
	static const struct { int first; enum policy_kind kind; char p; } map[] = {
		{ S_C, POLICY_KIND_CLIENT, 'c' }, { S_R, POLICY_KIND_RATE_LIMIT, 'r' },
		{ S_A, POLICY_KIND_ACCESS_LIST, 'a' }, { S_T, POLICY_KIND_ROUTE, 't' },
		{ S_U, POLICY_KIND_UPSTREAM, 'u' },
	};
	char id[16];

	if (slot >= S_S)
		return snapshot_get(s, POLICY_KIND_SETTINGS, POLICY_SETTINGS_ID);
	for (int k = 4; k >= 0; k--) {
		if (slot >= map[k].first) {
			snprintf(id, sizeof(id), "%c%d", map[k].p, slot - map[k].first);
			return snapshot_get(s, map[k].kind, id);
		}
	}
	return NULL;
}

/* b = a with the changes between worlds wa and wb applied as a hand-made
 * delta, so that b shares a's unchanged subtrees. */
static struct snapshot *world_derive(const struct snapshot *a, const struct world *wb,
				     uint64_t version)
{
	struct policy_delta *d = delta(snapshot_version(a), version);
	struct snapshot *b;

	for (int i = 0; i < NSLOT; i++) {
		const struct policy_res *old = slot_get(a, i);

		if (wb->present[i]) {
			struct policy_res *r = world_res(wb, i);

			if (old && policy_res_equal(old, r))
				policy_res_unref(r);
			else
				d_up(d, r);
		} else if (old) {
			d_rm(d, old->kind, old->id);
		}
	}
	b = apply_ok(a, d);
	policy_delta_free(d);
	return b;
}

static int cmp_key(const struct policy_res *a, enum policy_kind kind, const char *id)
{
	if (a->kind != kind)
		return a->kind < kind ? -1 : 1;
	return strcmp(a->id, id);
}

/* d must be exactly the brute-force difference of a and b, sorted. */
static void check_delta_exact(const struct snapshot *a, const struct snapshot *b,
			      const struct policy_delta *d)
{
	size_t ups = 0, rms = 0;

	for (size_t i = 1; i < d->n_upserts; i++)
		cr_assert_lt(cmp_key(d->upserts[i - 1], d->upserts[i]->kind, d->upserts[i]->id), 0);
	for (size_t i = 1; i < d->n_removes; i++) {
		const struct policy_key *p = &d->removes[i - 1], *q = &d->removes[i];
		cr_assert(p->kind < q->kind || (p->kind == q->kind && strcmp(p->id, q->id) < 0));
	}
	for (int i = 0; i < NSLOT; i++) {
		const struct policy_res *ra = slot_get(a, i), *rb = slot_get(b, i);

		if (rb && (!ra || !policy_res_equal(ra, rb))) {
			bool found = false;

			for (size_t k = 0; k < d->n_upserts; k++)
				found |= policy_res_equal(d->upserts[k], rb);
			cr_assert(found, "missing upsert %s", rb->id);
			ups++;
		}
		if (ra && !rb) {
			bool found = false;

			for (size_t k = 0; k < d->n_removes; k++)
				found |= d->removes[k].kind == ra->kind &&
					 strcmp(d->removes[k].id, ra->id) == 0;
			cr_assert(found, "missing remove %s", ra->id);
			rms++;
		}
	}
	cr_assert_eq(d->n_upserts, ups);
	cr_assert_eq(d->n_removes, rms);
}

Test(snapshot, apply_of_diff_reproduces_target_for_random_pairs, .timeout = 300)
{
	enum { PAIRS = 2000 };
	size_t live = snapshot_live_count();
	unsigned derived = 0, nonempty = 0;

	fixture_seed(20240611);
	for (int it = 0; it < PAIRS; it++) {
		struct world wa, wb;
		uint64_t va = 1 + rnd() % 1000, vb = va + 1 + rnd() % 50;
		struct snapshot *a, *b, *c, *c2;
		struct policy_delta *d = NULL, *rest = NULL, *d2 = NULL;
		struct policy_errs e;

		world_random(&wa);
		a = world_build(&wa, va);
		if (it % 2 == 0) {
			wb = wa;
			world_mutate(&wb);
			b = world_derive(a, &wb, vb);
			derived++;
		} else {
			world_random(&wb);
			b = world_build(&wb, vb);
		}

		cr_assert_eq(snapshot_diff(a, b, &d), 0);
		cr_assert_eq(d->from_version, va);
		cr_assert_eq(d->to_version, vb);
		check_delta_exact(a, b, d);
		nonempty += d->n_upserts + d->n_removes > 0;

		c = apply_ok(a, d);
		cr_assert(snapshot_equal(c, b), "pair %d: apply(a, diff(a, b)) != b", it);
		cr_assert_eq(snapshot_version(c), vb);
		cr_assert_eq(snapshot_diff(c, b, &rest), 0);
		cr_assert_eq(rest->n_upserts + rest->n_removes, 0, "pair %d: leftover diff", it);
		policy_delta_free(rest);
		for (int k = POLICY_KIND_MIN; k <= POLICY_KIND_MAX; k++)
			cr_assert_eq(snapshot_count(c, k), snapshot_count(b, k));

		/* The same delta on a snapshot at another version is stale. */
		struct snapshot *out = NULL;
		policy_errs_init(&e);
		cr_assert_eq(snapshot_apply(b, d, &e, &out), -ESTALE);
		cr_assert_null(out);
		cr_assert_eq(snapshot_version(b), vb);
		cr_assert(snapshot_equal(c, b), "b unchanged by the refusal");

		/* Through the wire and back gives the same result. */
		Sluice__V1__Delta *pb = policy_delta_to_pb(d);
		cr_assert_not_null(pb);
		policy_errs_init(&e);
		cr_assert_eq(policy_delta_from_pb(pb, &e, &d2), 0);
		policy_delta_pb_free(pb);
		c2 = apply_ok(a, d2);
		cr_assert(snapshot_equal(c2, b), "pair %d: wire round trip differs", it);

		policy_delta_free(d);
		policy_delta_free(d2);
		snapshot_unref(c2);
		snapshot_unref(c);
		snapshot_unref(b);
		snapshot_unref(a);
	}
	cr_assert_eq(derived, PAIRS / 2);
	cr_assert_gt(nonempty, PAIRS * 3 / 4);
	cr_assert_eq(snapshot_live_count(), live);
}

/* ---- publication ---- */

Test(snapshot, cell_get_returns_what_was_published)
{
	struct snapshot *a = base_snapshot(), *b;
	struct snapshot_cell *c = NULL;
	struct policy_delta *d = delta(5, 6);
	size_t live;

	d_up(d, mk_upstream("u2", "10.0.0.2:80"));
	b = apply_ok(a, d);
	policy_delta_free(d);
	live = snapshot_live_count();

	snapshot_thread_online();
	cr_assert_eq(snapshot_cell_new(a, &c), 0);
	snapshot_read_lock();
	snapshot_read_lock(); /* nestable */
	cr_assert_eq(snapshot_cell_get(c), a);
	snapshot_read_unlock();
	snapshot_read_unlock();

	snapshot_cell_publish(c, b);
	snapshot_read_lock();
	cr_assert_eq(snapshot_cell_get(c), b);
	snapshot_read_unlock();
	snapshot_barrier();
	cr_assert_eq(snapshot_live_count(), live - 1, "a freed after the grace period");

	/* Publishing the current snapshot again only drops the extra reference. */
	snapshot_cell_publish(c, snapshot_ref(b));
	snapshot_barrier();
	cr_assert_eq(snapshot_live_count(), live - 1);
	cr_assert_eq(snapshot_cell_get(c), b);

	snapshot_cell_free(c);
	cr_assert_eq(snapshot_live_count(), live - 2);
	snapshot_cell_free(NULL);
	snapshot_thread_offline();
}

Test(snapshot, publish_works_from_an_unregistered_writer)
{
	struct snapshot *a = base_snapshot(), *b = base_snapshot();
	struct snapshot_cell *c = NULL, *c2 = NULL;
	size_t live = snapshot_live_count();

	cr_assert_eq(snapshot_cell_new(NULL, &c), 0);
	cr_assert_null(snapshot_cell_get(c));
	snapshot_cell_publish(c, a);
	/* The same snapshot released by two cells in one grace period. */
	cr_assert_eq(snapshot_cell_new(snapshot_ref(a), &c2), 0);
	snapshot_cell_publish(c, b);
	snapshot_cell_publish(c2, snapshot_ref(b));
	snapshot_barrier();
	cr_assert_eq(snapshot_live_count(), live - 1, "a freed once both cells let go");
	snapshot_cell_free(c);
	snapshot_cell_free(c2);
	cr_assert_eq(snapshot_live_count(), live - 2);
}

/* Readers check that whatever they see is whole: a snapshot built from
 * `version` clients reports exactly that many and finds its last one. */
struct pub_state {
	struct snapshot_cell *cell;
	int stop;
	long reads;
	int bad;
};

static void *reader_main(void *arg)
{
	struct pub_state *st = arg;
	char key[32];

	snapshot_thread_online();
	while (!__atomic_load_n(&st->stop, __ATOMIC_ACQUIRE)) {
		snapshot_read_lock();
		const struct snapshot *s = snapshot_cell_get(st->cell);
		uint64_t v = snapshot_version(s);
		int n = snprintf(key, sizeof(key), "c%llu", (unsigned long long)v);

		if (snapshot_count(s, POLICY_KIND_CLIENT) != v ||
		    !snapshot_find_client(s, key, (size_t)n))
			__atomic_store_n(&st->bad, 1, __ATOMIC_RELAXED);
		snapshot_read_unlock();
		__atomic_add_fetch(&st->reads, 1, __ATOMIC_RELAXED);
	}
	snapshot_thread_offline();
	return NULL;
}

Test(snapshot, readers_see_whole_snapshots_while_a_writer_publishes)
{
	struct pub_state st = { 0 };
	struct snapshot *cur;
	pthread_t th[2];
	size_t live = snapshot_live_count();
	char id[32];
	struct rlist l = { 0 };

	rl_add(&l, mk_client("c1", NULL, NULL));
	cur = build_ok(1, &l);
	rl_free(&l);
	cr_assert_eq(snapshot_cell_new(snapshot_ref(cur), &st.cell), 0);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, reader_main, &st), 0);
	while (__atomic_load_n(&st.reads, __ATOMIC_RELAXED) < 2)
		sched_yield();
	for (uint64_t v = 2; v <= 400; v++) {
		struct policy_delta *d = delta(v - 1, v);
		struct snapshot *next;

		snprintf(id, sizeof(id), "c%llu", (unsigned long long)v);
		d_up(d, mk_client(id, NULL, NULL));
		next = apply_ok(cur, d);
		policy_delta_free(d);
		snapshot_unref(cur);
		cur = next;
		snapshot_cell_publish(st.cell, snapshot_ref(cur));
	}
	__atomic_store_n(&st.stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(st.bad, 0, "a reader saw a torn snapshot");
	cr_assert_gt(st.reads, 0);
	snapshot_barrier();
	cr_assert_eq(snapshot_live_count(), live + 1, "only the current one is alive");
	snapshot_cell_free(st.cell);
	snapshot_unref(cur);
	cr_assert_eq(snapshot_live_count(), live);
}

/* ---- whole rulesets on the wire (policy_wire.h) ---- */

Test(snapshot, ruleset_wire_round_trip_is_equal_and_sorted)
{
	struct snapshot *base = base_snapshot(), *back = NULL;
	struct policy_errs e;
	Sluice__V1__Ruleset *m = policy_ruleset_to_pb(base);

	cr_assert_not_null(m);
	cr_assert_str_eq(m->name, RS);
	cr_assert_eq(m->version, 5);
	cr_assert_eq(m->n_resources, snapshot_count(base, 0));
	/* sorted by (kind, id): clients acme, beta first */
	cr_assert_eq(m->resources[0]->kind_case, SLUICE__V1__RESOURCE__KIND_CLIENT);
	cr_assert_str_eq(m->resources[0]->client->id, "acme");
	cr_assert_str_eq(m->resources[1]->client->id, "beta");
	policy_errs_init(&e);
	cr_assert_eq(policy_ruleset_from_pb(m, &e, &back), 0);
	cr_assert(snapshot_equal(base, back));
	cr_assert_eq(snapshot_version(back), 5);
	policy_ruleset_pb_free(m);
	snapshot_unref(back);
	snapshot_unref(base);
}

static bool errs_start_with(const struct policy_errs *e, const char *prefix)
{
	for (unsigned i = 0; i < e->n; i++)
		if (strncmp(e->msg[i], prefix, strlen(prefix)) == 0)
			return true;
	return false;
}

Test(snapshot, ruleset_wire_refusals_name_the_problem)
{
	Sluice__V1__Ruleset m = SLUICE__V1__RULESET__INIT;
	Sluice__V1__Resource r = SLUICE__V1__RESOURCE__INIT, *rv[1] = { &r };
	Sluice__V1__Client c = SLUICE__V1__CLIENT__INIT;
	struct snapshot *s = NULL;
	struct policy_errs e;

	policy_errs_init(&e);
	m.name = "Bad Name";
	cr_assert_eq(policy_ruleset_from_pb(&m, &e, &s), -EINVAL);
	cr_assert(errs_start_with(&e, "ruleset.name: 'Bad Name'"), "got: %s", e.msg[0]);

	m.name = RS;
	m.n_resources = 1;
	m.resources = rv;
	r.kind_case = SLUICE__V1__RESOURCE__KIND_CLIENT;
	r.client = &c;
	c.id = "acme";
	c.rate_limit = "missing";
	policy_errs_init(&e);
	cr_assert_eq(policy_ruleset_from_pb(&m, &e, &s), -EINVAL);
	cr_assert(errs_have(&e, "client/acme.rate_limit: rate_limit/missing does not exist"),
		  "got: %s", e.msg[0]);
	c.id = "bad id";
	policy_errs_init(&e);
	cr_assert_eq(policy_ruleset_from_pb(&m, &e, &s), -EINVAL);
	cr_assert(errs_start_with(&e, "client/bad id.id: "), "got: %s", e.msg[0]);
	cr_assert_null(s);
}

/* ---- request-path indexes (flat client and route indexes, limits) ---- */

Test(snapshot, uids_are_never_shared)
{
	struct snapshot *a = base_snapshot(), *b = base_snapshot(), *c;
	uint64_t ua = snapshot_uid(a);

	cr_assert_neq(ua, 0);
	cr_assert_neq(ua, snapshot_uid(b));
	snapshot_unref(a);
	/* Even at a freed snapshot's address. */
	c = base_snapshot();
	cr_assert_neq(snapshot_uid(c), ua);
	cr_assert_neq(snapshot_uid(c), snapshot_uid(b));
	snapshot_unref(b);
	snapshot_unref(c);
}

Test(snapshot, lookup_limit_carries_the_plan_and_follows_changes)
{
	struct snapshot *base = base_snapshot(), *s;
	struct policy_delta *d = delta(5, 6);
	const struct snapshot_limit *l;
	struct policy_ref ref = { .id = "gold", .id_len = 4,
				  .key_hash = policy_key_hash(POLICY_KIND_RATE_LIMIT, "gold", 4) };

	l = snapshot_lookup_limit(base, &ref);
	cr_assert_not_null(l);
	cr_assert_eq(l->res, snapshot_get(base, POLICY_KIND_RATE_LIMIT, "gold"));
	cr_assert_eq(l->plan.params.rate, 100);
	cr_assert_eq(l->plan.units_per_ns, 1);
	cr_assert_eq(l->plan.interval_u, 10000000, "1 s / 100");
	cr_assert(l->proxy);
	cr_assert_not(l->shadow);
	cr_assert(l->selects_all);
	ref.id = "nope";
	ref.id_len = 4;
	ref.key_hash = policy_key_hash(POLICY_KIND_RATE_LIMIT, "nope", 4);
	cr_assert_null(snapshot_lookup_limit(base, &ref));
	ref.id = NULL;
	cr_assert_null(snapshot_lookup_limit(base, &ref));

	d_up(d, mk_rate_limit("gold", 7, "acme"));
	s = apply_ok(base, d);
	ref = (struct policy_ref){ .id = "gold", .id_len = 4,
				   .key_hash = policy_key_hash(POLICY_KIND_RATE_LIMIT, "gold", 4) };
	l = snapshot_lookup_limit(s, &ref);
	cr_assert_eq(l->plan.params.rate, 7);
	cr_assert_eq(l->plan.units_per_ns, 7, "1 s / 7 is exact in sevenths of a ns");
	cr_assert_not(l->selects_all, "a selector naming a client");
	cr_assert_eq(snapshot_lookup_limit(base, &ref)->plan.params.rate, 100, "base unchanged");
	policy_delta_free(d);
	snapshot_unref(s);
	snapshot_unref(base);
}

/* Enough clients that the flat client index grows (and is refilled) more
 * than once, then deltas that move, change and remove keys: every lookup
 * must agree with the resource map, in the new snapshot and the old. */
Test(snapshot, client_and_route_indexes_agree_with_the_maps_across_growth)
{
	enum { N = 12000, HOSTS = 40 };
	struct snapshot *s = base_snapshot(), *next, *first;
	char id[32], key[32], key2[32], host[32];
	uint64_t v = 5;

	first = snapshot_ref(s);
	for (int batch = 0; batch < 4; batch++) {
		struct policy_delta *d = delta(v, v + 1);

		for (int i = batch * N / 4; i < (batch + 1) * N / 4; i++) {
			snprintf(id, sizeof(id), "c%d", i);
			snprintf(key, sizeof(key), "key-%d", i);
			d_up(d, mk_client(id, STRV(key), i % 2 ? "gold" : NULL));
		}
		for (int h = batch * HOSTS / 4; h < (batch + 1) * HOSTS / 4; h++) {
			snprintf(id, sizeof(id), "rt%d", h);
			snprintf(host, sizeof(host), "h%d.example.com", h);
			d_up(d, mk_route(id, host, "/svc/v1", "u1", NULL, NULL));
		}
		next = apply_ok(s, d);
		policy_delta_free(d);
		snapshot_unref(s);
		s = next;
		v++;
	}
	/* Move every tenth key to a new name, remove every seventh client,
	 * drop half the routes. */
	struct policy_delta *d = delta(v, v + 1);

	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "c%d", i);
		snprintf(key2, sizeof(key2), "moved-%d", i);
		if (i % 7 == 0)
			d_rm(d, POLICY_KIND_CLIENT, id);
		else if (i % 10 == 0)
			d_up(d, mk_client(id, STRV(key2), "silver"));
	}
	for (int h = 0; h < HOSTS; h += 2) {
		snprintf(id, sizeof(id), "rt%d", h);
		d_rm(d, POLICY_KIND_ROUTE, id);
	}
	next = apply_ok(s, d);
	policy_delta_free(d);

	for (int i = 0; i < N; i++) {
		const struct snapshot_client *c_old, *c_new, *c_moved;

		snprintf(id, sizeof(id), "c%d", i);
		snprintf(key, sizeof(key), "key-%d", i);
		snprintf(key2, sizeof(key2), "moved-%d", i);
		c_old = snapshot_lookup_client(s, key, strlen(key));
		cr_assert_not_null(c_old, "%s before", key);
		cr_assert_eq(c_old->res, snapshot_get(s, POLICY_KIND_CLIENT, id));
		c_new = snapshot_lookup_client(next, key, strlen(key));
		c_moved = snapshot_lookup_client(next, key2, strlen(key2));
		if (i % 7 == 0) {
			cr_assert_null(c_new, "%s removed", key);
			cr_assert_null(c_moved);
		} else if (i % 10 == 0) {
			cr_assert_null(c_new, "%s moved away", key);
			cr_assert_not_null(c_moved, "%s", key2);
			cr_assert_str_eq(c_moved->rate_limit.id, "silver");
		} else {
			cr_assert_eq(c_new, c_old, "unchanged clients share their entry");
			cr_assert_null(c_moved);
		}
		cr_assert_eq(snapshot_find_client(next, key, strlen(key)), c_new ? c_new->res : NULL);
	}
	for (int h = 0; h < HOSTS; h++) {
		const struct policy_res *r_old, *r_new;

		snprintf(id, sizeof(id), "rt%d", h);
		snprintf(host, sizeof(host), "h%d.example.com", h);
		r_old = snapshot_match_route(s, host, strlen(host), "/svc/v1/x", 9);
		r_new = snapshot_match_route(next, host, strlen(host), "/svc/v1/x", 9);
		cr_assert_eq(r_old, snapshot_get(s, POLICY_KIND_ROUTE, id));
		cr_assert_eq(r_new, h % 2 ? snapshot_get(next, POLICY_KIND_ROUTE, id) : NULL);
		cr_assert_null(snapshot_match_route(next, host, strlen(host), "/svc/v2", 7));
	}
	/* The very first snapshot never saw any of it. */
	cr_assert_null(snapshot_lookup_client(first, "key-1", 5));
	cr_assert_null(snapshot_match_route(first, "h1.example.com", 14, "/svc/v1", 7));
	snapshot_unref(first);
	snapshot_unref(s);
	snapshot_unref(next);
}

Test(snapshot, lookup_route_says_what_the_route_has_to_check)
{
	struct snapshot *base = base_snapshot(), *s;
	struct policy_delta *d = delta(5, 6);
	const struct snapshot_route *r;

	r = snapshot_lookup_route(base, "api.example.com", 15, "/v1/x?y=1", 9);
	cr_assert_not_null(r);
	cr_assert_eq(r->res, snapshot_get(base, POLICY_KIND_ROUTE, "r1"));
	cr_assert_eq(r->res, snapshot_match_route(base, "api.example.com", 15, "/v1/x?y=1", 9));
	cr_assert(r->all_methods);
	cr_assert_not(r->no_access_lists, "r1 names 'office'");
	cr_assert_not(r->no_rate_limits, "r1 names 'gold'");
	cr_assert_null(snapshot_lookup_route(base, "api.example.com", 15, "/v2", 3));

	d_up(d, mk_route("r1", "api.example.com", "/v1", "u1", NULL, NULL));
	s = apply_ok(base, d);
	r = snapshot_lookup_route(s, "api.example.com", 15, "/v1", 3);
	cr_assert(r->no_access_lists && r->no_rate_limits && r->all_methods);
	cr_assert_not(snapshot_lookup_route(base, "api.example.com", 15, "/v1", 3)->no_rate_limits,
		      "the base keeps its own entry");
	policy_delta_free(d);
	snapshot_unref(s);
	snapshot_unref(base);
}
