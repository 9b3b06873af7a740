/* admin_test.c - the sluice.v1.PolicyAdmin handlers against a real etcd
 * (tests/integration/admin). Requests are written as the proto3 JSON an
 * operator gives grpcurl, encoded, passed to the handler found through
 * admin_methods(), and the encoded replies decoded and checked. Every test
 * gets its own etcd (etcd_helper); without /usr/bin/etcd the binary prints
 * why and exits 77 (skip).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sluice/v1/admin.pb-c.h"

#include "admin.h"
#include "etcd.h"
#include "etcd_helper.h"
#include "fixture.h"
#include "pbjson.h"
#include "policy.h"
#include "policy_wire.h"
#include "snapshot.h"
#include "store.h"

#define TEST_TIMEOUT_MS 5000
#define PATH "/sluice.v1.PolicyAdmin/"

__attribute__((constructor)) static void skip_without_etcd(void)
{
	char why[256];

	if (!etcd_helper_available(why, sizeof(why))) {
		fprintf(stderr, "admin_test: skipped: %s\n", why);
		_exit(77);
	}
}

/* ---- fixture -------------------------------------------------------------- */

/* One admin stack (etcd client, store, admin), owned by the test that made
 * it; released with stack_free. */
struct stack {
	struct etcd *etcd;
	struct store *store;
	struct admin *admin;
};

static struct etcd_helper *srv;
static struct stack main_stack;
static struct admin *adm;

static void stack_init(struct stack *s, uint64_t timeout_ms, size_t max_txn_ops,
		       void (*before_commit)(void *), void *arg)
{
	const char *ep[1] = { srv->endpoint };
	struct etcd_config ecfg = { .endpoints = ep, .n_endpoints = 1, .timeout_ms = timeout_ms };
	struct store_config scfg = { .max_txn_ops = max_txn_ops, .before_commit = before_commit,
				     .before_commit_arg = arg };

	memset(s, 0, sizeof(*s));
	cr_assert_eq(etcd_new(&ecfg, &s->etcd), 0);
	scfg.etcd = s->etcd;
	cr_assert_eq(store_new(&scfg, &s->store), 0);
	cr_assert_eq(admin_new(&(struct admin_config){ .store = s->store }, &s->admin), 0);
}

static void stack_free(struct stack *s)
{
	admin_free(s->admin);
	store_free(s->store);
	etcd_free(s->etcd);
	memset(s, 0, sizeof(*s));
}

static void setup(void)
{
	cr_assert_eq(etcd_helper_start(&srv), 0, "cannot start etcd");
	stack_init(&main_stack, TEST_TIMEOUT_MS, 0, NULL, NULL);
	adm = main_stack.admin;
}

static void teardown(void)
{
	stack_free(&main_stack);
	adm = NULL;
	etcd_helper_free(srv);
	srv = NULL;
}

TestSuite(admin, .init = setup, .fini = teardown, .timeout = 90);

/* ---- calling the handlers -------------------------------------------------- */

static const struct admin_method *method(const char *name)
{
	char path[128];
	const struct admin_method *m;
	size_t n;

	snprintf(path, sizeof(path), PATH "%s", name);
	m = admin_methods(&n);
	for (size_t i = 0; i < n; i++)
		if (strcmp(m[i].path, path) == 0)
			return &m[i];
	cr_assert_fail("no method %s", path);
	return NULL;
}

static const ProtobufCMessageDescriptor *request_desc(const char *name)
{
	if (strcmp(name, "ListRulesets") == 0)
		return &sluice__v1__list_rulesets_request__descriptor;
	if (strcmp(name, "GetRuleset") == 0)
		return &sluice__v1__get_ruleset_request__descriptor;
	if (strcmp(name, "Validate") == 0 || strcmp(name, "ApplyChanges") == 0)
		return &sluice__v1__apply_changes_request__descriptor;
	if (strcmp(name, "GetHistory") == 0)
		return &sluice__v1__get_history_request__descriptor;
	if (strcmp(name, "Diff") == 0)
		return &sluice__v1__diff_request__descriptor;
	if (strcmp(name, "Rollback") == 0)
		return &sluice__v1__rollback_request__descriptor;
	cr_assert_fail("no request type for %s", name);
	return NULL;
}

static struct rpc_reply call_bytes(struct admin *a, const char *name, const uint8_t *buf,
				   size_t len)
{
	struct rpc_peer peer = { .identity = "admin-test", .admin = true };
	struct rpc_reply reply = { 0 };

	method(name)->fn(a, &peer, buf, len, &reply);
	if (reply.status == RPC_OK)
		cr_assert_null(reply.message, "%s: OK with a message", name);
	else
		cr_assert_not_null(reply.message, "%s: status %d without a message", name,
				   reply.status);
	return reply;
}

/* Calls `name` on `a` with the request given as proto3 JSON (what grpcurl
 * sends with -d). */
__attribute__((format(printf, 3, 4)))
static struct rpc_reply call_on(struct admin *a, const char *name, const char *fmt, ...)
{
	char err[PBJSON_ERR_LEN], *json;
	ProtobufCMessage *req;
	struct rpc_reply reply;
	uint8_t *buf;
	size_t len;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&json, fmt, ap);
	va_end(ap);
	cr_assert_geq(r, 0);
	r = pbjson_decode(request_desc(name), json, strlen(json), err, &req);
	cr_assert_eq(r, 0, "request JSON %s: %s", json, err);
	free(json);
	len = protobuf_c_message_get_packed_size(req);
	buf = malloc(len + 1);
	cr_assert_not_null(buf);
	protobuf_c_message_pack(req, buf);
	protobuf_c_message_free_unpacked(req, NULL);
	reply = call_bytes(a, name, buf, len);
	free(buf);
	return reply;
}

#define call(name, ...) call_on(adm, name, __VA_ARGS__)

static void reply_done(struct rpc_reply *r)
{
	free(r->data);
	free(r->message);
	memset(r, 0, sizeof(*r));
}

/* The OK reply decoded as `desc` (free with protobuf_c_message_free_unpacked);
 * the reply is released. */
static void *ok_msg(struct rpc_reply r, const ProtobufCMessageDescriptor *desc)
{
	ProtobufCMessage *m;

	cr_assert_eq(r.status, RPC_OK, "status %d: %s", r.status, r.message ? r.message : "");
	m = protobuf_c_message_unpack(desc, NULL, r.len, r.data);
	cr_assert_not_null(m, "reply does not decode as %s", desc->name);
	reply_done(&r);
	return m;
}

/* Checks status and that the message contains every needle (NULL ends). */
static void expect_error(struct rpc_reply r, enum rpc_status status, ...)
{
	const char *needle;
	va_list ap;

	cr_assert_eq(r.status, status, "status %d, want %d: %s", r.status, status,
		     r.message ? r.message : "");
	cr_assert_null(r.data);
	va_start(ap, status);
	while ((needle = va_arg(ap, const char *)))
		cr_assert(strstr(r.message, needle), "message '%s' lacks '%s'", r.message, needle);
	va_end(ap);
	reply_done(&r);
}

static Sluice__V1__VersionInfo *apply_reply(struct rpc_reply r)
{
	Sluice__V1__ApplyChangesResponse *resp =
		ok_msg(r, &sluice__v1__apply_changes_response__descriptor);
	Sluice__V1__VersionInfo *v = resp->version;

	cr_assert_not_null(v, "ApplyChangesResponse without a version");
	resp->version = NULL;
	sluice__v1__apply_changes_response__free_unpacked(resp, NULL);
	return v;
}

/* Applies the JSON upserts/removes (the inside of the request object) by
 * alice; returns the new version. */
__attribute__((format(printf, 2, 3)))
static uint64_t apply_ok(const char *rs, const char *fmt, ...)
{
	Sluice__V1__VersionInfo *v;
	char *body;
	uint64_t version;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&body, fmt, ap);
	va_end(ap);
	cr_assert_geq(r, 0);
	v = apply_reply(call("ApplyChanges", "{\"ruleset\": \"%s\", \"author\": \"alice\", %s}",
			     rs, body));
	free(body);
	version = v->version;
	cr_assert_gt(version, 0);
	sluice__v1__version_info__free_unpacked(v, NULL);
	return version;
}

#define UP(id, port) "{\"upstream\": {\"id\": \"" id "\", \"endpoints\": [\"10.0.0.1:" #port "\"]}}"
#define ROUTE(id, up) \
	"{\"route\": {\"id\": \"" id "\", \"pathPrefix\": \"/" id "\", \"upstream\": \"" up "\"}}"
#define CLIENT(id, key) "{\"client\": {\"id\": \"" id "\", \"keys\": [\"" key "\"]}}"

/* The ruleset as GetRuleset returns it, as a snapshot. */
static struct snapshot *get_snap(const char *rs, uint64_t version)
{
	Sluice__V1__Ruleset *m = ok_msg(call("GetRuleset", "{\"ruleset\": \"%s\", \"version\": %" PRIu64 "}",
					     rs, version),
					&sluice__v1__ruleset__descriptor);
	struct policy_errs errs;
	struct snapshot *s = NULL;
	int r;

	policy_errs_init(&errs);
	r = policy_ruleset_from_pb(m, &errs, &s);
	cr_assert_eq(r, 0, "GetRuleset reply does not validate: %s", errs.n ? errs.msg[0] : "");
	sluice__v1__ruleset__free_unpacked(m, NULL);
	return s;
}

/* The snapshot the given resources make (references consumed). */
static struct snapshot *expect_snap(const char *rs, struct policy_res **res, size_t n)
{
	struct snapshot *s = NULL;

	cr_assert_eq(snapshot_build(rs, 1, res, n, NULL, &s), 0);
	for (size_t i = 0; i < n; i++)
		policy_res_unref(res[i]);
	return s;
}

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

static int64_t etcd_revision(void)
{
	struct etcd_range_result rr;
	int64_t rev;

	cr_assert_eq(etcd_range(main_stack.etcd, "x", 1, NULL, 0, 0, 0, &rr), 0);
	rev = rr.revision;
	etcd_range_result_done(&rr);
	return rev;
}

static Sluice__V1__GetHistoryResponse *history(const char *rs, uint32_t limit, uint64_t before)
{
	return ok_msg(call("GetHistory", "{\"ruleset\": \"%s\", \"limit\": %u, \"beforeVersion\": %"
			   PRIu64 "}", rs, limit, before),
		      &sluice__v1__get_history_response__descriptor);
}

static char *fmt_u64(char buf[32], uint64_t v)
{
	snprintf(buf, 32, "%" PRIu64, v);
	return buf;
}

/* ---- the method table ------------------------------------------------------ */

Test(admin, method_table_serves_every_rpc_of_the_service)
{
	const ProtobufCServiceDescriptor *sd = &sluice__v1__policy_admin__descriptor;
	const struct admin_method *m;
	size_t n;

	m = admin_methods(&n);
	cr_assert_eq(n, sd->n_methods);
	for (unsigned i = 0; i < sd->n_methods; i++) {
		char path[128];
		bool found = false;

		snprintf(path, sizeof(path), "/%s/%s", sd->name, sd->methods[i].name);
		for (size_t j = 0; j < n; j++)
			if (strcmp(m[j].path, path) == 0) {
				cr_assert_not_null(m[j].fn);
				cr_assert(!found, "%s listed twice", path);
				found = true;
			}
		cr_assert(found, "%s has no handler", path);
	}
}

Test(admin, new_refuses_missing_store)
{
	struct admin *a = (struct admin *)0x1;

	cr_assert_eq(admin_new(&(struct admin_config){ .store = NULL }, &a), -EINVAL);
	cr_assert_eq(admin_new(NULL, &a), -EINVAL);
	cr_assert_eq(a, (struct admin *)0x1, "ret written on failure");
	admin_free(NULL);
}

Test(admin, undecodable_request_is_invalid_argument_for_every_method)
{
	/* Field 1, length-delimited, says 16 bytes follow; none do. */
	static const uint8_t junk[] = { 0x0a, 0x10 };
	const struct admin_method *m;
	size_t n;

	m = admin_methods(&n);
	for (size_t i = 0; i < n; i++) {
		struct rpc_reply r = call_bytes(adm, strrchr(m[i].path, '/') + 1, junk,
						sizeof(junk));

		expect_error(r, RPC_INVALID_ARGUMENT, "does not decode", "sluice.v1.", NULL);
	}
}

/* ---- ApplyChanges, GetRuleset ---------------------------------------------- */

Test(admin, apply_commits_version_and_get_returns_its_content)
{
	Sluice__V1__VersionInfo *v;
	struct snapshot *got, *want;

	v = apply_reply(call("ApplyChanges",
			     "{\"ruleset\": \"prod\", \"author\": \"alice\", \"message\": \"init\","
			     " \"upserts\": [" UP("u1", 80) ", " ROUTE("api", "u1") "]}"));
	cr_assert_gt(v->version, 0);
	cr_assert_str_eq(v->ruleset, "prod");
	cr_assert_str_eq(v->author, "alice");
	cr_assert_str_eq(v->message, "init");
	cr_assert_eq(v->upserts, 2);
	cr_assert_eq(v->removes, 0);
	cr_assert_eq(v->resources, 2);
	cr_assert_eq(v->n_touched, 2);
	cr_assert_gt(v->time_unix_ms, 0);

	got = get_snap("prod", 0);
	want = expect_snap("prod", (struct policy_res *[]){ upstream("u1", 80), route("api", "u1") }, 2);
	cr_assert(snapshot_equal(got, want));
	cr_assert_eq(snapshot_version(got), v->version);
	snapshot_unref(want);
	snapshot_unref(got);
	sluice__v1__version_info__free_unpacked(v, NULL);
}

Test(admin, apply_without_author_is_refused_and_writes_nothing)
{
	int64_t rev = etcd_revision();

	expect_error(call("ApplyChanges", "{\"ruleset\": \"prod\", \"upserts\": [" UP("u1", 80) "]}"),
		     RPC_INVALID_ARGUMENT, "author: required", "'prod'", NULL);
	expect_error(call("ApplyChanges", "{\"ruleset\": \"prod\", \"dryRun\": true,"
			  " \"upserts\": [" UP("u1", 80) "]}"),
		     RPC_INVALID_ARGUMENT, "author: required", NULL);
	cr_assert_eq(etcd_revision(), rev, "a refused change wrote to etcd");
	expect_error(call("GetRuleset", "{\"ruleset\": \"prod\"}"), RPC_NOT_FOUND,
		     "'prod' does not exist", NULL);
}

Test(admin, validation_errors_name_every_resource_and_field)
{
	struct rpc_reply r;
	int64_t rev = etcd_revision();

	r = call("ApplyChanges", "{\"ruleset\": \"prod\", \"author\": \"alice\", \"upserts\": ["
		 "{\"route\": {\"id\": \"api\", \"pathPrefix\": \"api\", \"upstream\": \"u1\"}},"
		 "{\"upstream\": {\"id\": \"u1\", \"endpoints\": [\"no-port\"]}},"
		 "{\"route\": {\"id\": \"web\", \"pathPrefix\": \"/web\", \"upstream\": \"u1\","
		 " \"methods\": [\"G E T\"]}}]}");
	cr_log_info("validation message: %s", r.message);
	expect_error(r, RPC_INVALID_ARGUMENT, "ruleset 'prod'", "3 errors",
		     "route/api.path_prefix", "upstream/u1.endpoints", "route/web.methods", NULL);
	cr_assert_eq(etcd_revision(), rev);
}

Test(admin, cross_resource_error_names_the_dangling_reference)
{
	struct rpc_reply r;

	r = call("ApplyChanges", "{\"ruleset\": \"prod\", \"author\": \"alice\","
		 " \"upserts\": [" ROUTE("api", "missing") "]}");
	cr_log_info("reference message: %s", r.message);
	expect_error(r, RPC_INVALID_ARGUMENT, "route/api.upstream", "missing", NULL);

	/* Removing what others still reference is the same kind of error. */
	apply_ok("prod", "\"upserts\": [" UP("u1", 80) ", " ROUTE("api", "u1") "]");
	r = call("ApplyChanges", "{\"ruleset\": \"prod\", \"author\": \"alice\","
		 " \"removes\": [{\"kind\": \"UPSTREAM\", \"id\": \"u1\"}]}");
	cr_log_info("remove message: %s", r.message);
	expect_error(r, RPC_INVALID_ARGUMENT, "upstream/u1", "still referenced", NULL);
}

Test(admin, bad_ruleset_name_and_remove_keys_are_named)
{
	expect_error(call("ApplyChanges", "{\"ruleset\": \"Bad Name\", \"author\": \"a\","
			  " \"removes\": [{\"kind\": \"ROUTE\", \"id\": \"\"}, {\"id\": \"x\"},"
			  " {\"kind\": \"SETTINGS\", \"id\": \"other\"}]}"),
		     RPC_INVALID_ARGUMENT, "ruleset:", "removes[0].id", "removes[1].kind",
		     "removes[2].id", "global", NULL);
	expect_error(call("ApplyChanges", "{\"author\": \"a\", \"upserts\": [{}]}"),
		     RPC_INVALID_ARGUMENT, "ruleset:", "upserts[0]", NULL);
}

Test(admin, removing_an_absent_resource_is_invalid)
{
	apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");
	expect_error(call("ApplyChanges", "{\"ruleset\": \"prod\", \"author\": \"a\","
			  " \"removes\": [{\"kind\": \"ROUTE\", \"id\": \"nope\"}]}"),
		     RPC_INVALID_ARGUMENT, "nope", NULL);
}

Test(admin, oversized_change_is_refused_before_the_store)
{
	Sluice__V1__ApplyChangesRequest m = SLUICE__V1__APPLY_CHANGES_REQUEST__INIT;
	Sluice__V1__ResourceKey k = SLUICE__V1__RESOURCE_KEY__INIT;
	size_t n = ADMIN_MAX_CHANGE_ITEMS + 1;
	Sluice__V1__ResourceKey **keys = calloc(n, sizeof(*keys));
	uint8_t *buf;
	size_t len;

	cr_assert_not_null(keys);
	k.kind = SLUICE__V1__KIND__CLIENT;
	k.id = "c1";
	for (size_t i = 0; i < n; i++)
		keys[i] = &k;
	m.ruleset = "prod";
	m.author = "alice";
	m.n_removes = n;
	m.removes = keys;
	len = sluice__v1__apply_changes_request__get_packed_size(&m);
	buf = malloc(len);
	cr_assert_not_null(buf);
	sluice__v1__apply_changes_request__pack(&m, buf);
	expect_error(call_bytes(adm, "ApplyChanges", buf, len), RPC_INVALID_ARGUMENT,
		     "exceed the cap", NULL);
	free(buf);
	free(keys);
}

Test(admin, change_larger_than_one_transaction_is_invalid_argument)
{
	struct stack small;

	/* 3 upserts + head + log = 5 etcd operations > 4. */
	stack_init(&small, TEST_TIMEOUT_MS, 4, NULL, NULL);
	expect_error(call_on(small.admin, "ApplyChanges",
			     "{\"ruleset\": \"prod\", \"author\": \"a\", \"upserts\": ["
			     UP("u1", 80) ", " UP("u2", 80) ", " UP("u3", 80) "]}"),
		     RPC_INVALID_ARGUMENT, "split it", NULL);
	stack_free(&small);
}

Test(admin, dry_run_reports_the_change_and_writes_nothing)
{
	Sluice__V1__VersionInfo *v;
	Sluice__V1__ListRulesetsResponse *l;
	struct snapshot *got, *want;
	uint64_t v1;
	int64_t rev;

	v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) ", " ROUTE("api", "u1") "]");
	rev = etcd_revision();
	v = apply_reply(call("ApplyChanges", "{\"ruleset\": \"prod\", \"author\": \"alice\","
			     " \"dryRun\": true, \"upserts\": [" UP("u1", 81) ", " CLIENT("c1", "k1") "],"
			     " \"removes\": [{\"kind\": \"ROUTE\", \"id\": \"api\"}]}"));
	cr_assert_eq(v->version, 0, "a dry run has no version");
	cr_assert_eq(v->upserts, 2);
	cr_assert_eq(v->removes, 1);
	cr_assert_eq(v->resources, 2);
	cr_assert_eq(v->n_touched, 3);
	sluice__v1__version_info__free_unpacked(v, NULL);

	/* A dry run that would create a ruleset creates nothing either. */
	v = apply_reply(call("ApplyChanges", "{\"ruleset\": \"staging\", \"author\": \"alice\","
			     " \"dryRun\": true, \"upserts\": [" UP("u1", 80) "]}"));
	cr_assert_eq(v->upserts, 1);
	sluice__v1__version_info__free_unpacked(v, NULL);

	cr_assert_eq(etcd_revision(), rev, "a dry run wrote to etcd");
	got = get_snap("prod", 0);
	want = expect_snap("prod", (struct policy_res *[]){ upstream("u1", 80), route("api", "u1") }, 2);
	cr_assert(snapshot_equal(got, want));
	cr_assert_eq(snapshot_version(got), v1);
	snapshot_unref(want);
	snapshot_unref(got);
	l = ok_msg(call("ListRulesets", "{}"), &sluice__v1__list_rulesets_response__descriptor);
	cr_assert_eq(l->n_rulesets, 1);
	cr_assert_str_eq(l->rulesets[0]->ruleset, "prod");
	sluice__v1__list_rulesets_response__free_unpacked(l, NULL);

	/* And an invalid dry run fails like the real change would. */
	expect_error(call("ApplyChanges", "{\"ruleset\": \"prod\", \"author\": \"alice\","
			  " \"dryRun\": true, \"upserts\": [" ROUTE("web", "nope") "]}"),
		     RPC_INVALID_ARGUMENT, "route/web.upstream", NULL);
}

/* ---- Validate -------------------------------------------------------------- */

Test(admin, validate_returns_errors_as_data_and_writes_nothing)
{
	Sluice__V1__ValidateResponse *v;
	int64_t rev;
	bool found = false;

	apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");
	rev = etcd_revision();
	v = ok_msg(call("Validate", "{\"ruleset\": \"prod\", \"upserts\": ["
			"{\"route\": {\"id\": \"api\", \"pathPrefix\": \"api\", \"upstream\": \"u1\"}},"
			ROUTE("web", "nope") "]}"),
		   &sluice__v1__validate_response__descriptor);
	cr_assert(!v->valid);
	cr_assert_geq(v->n_errors, 1);
	for (size_t i = 0; i < v->n_errors; i++)
		if (strstr(v->errors[i], "route/api.path_prefix"))
			found = true;
	cr_assert(found, "no error names route/api.path_prefix (first: %s)", v->errors[0]);
	sluice__v1__validate_response__free_unpacked(v, NULL);

	/* Cross-resource errors come back as data too (resources are valid). */
	v = ok_msg(call("Validate", "{\"ruleset\": \"prod\", \"upserts\": [" ROUTE("web", "nope") "]}"),
		   &sluice__v1__validate_response__descriptor);
	cr_assert(!v->valid);
	cr_assert_eq(v->n_errors, 1);
	cr_assert(strstr(v->errors[0], "route/web.upstream"), "%s", v->errors[0]);
	sluice__v1__validate_response__free_unpacked(v, NULL);

	/* Valid, with no author (Validate does not write, so it needs none). */
	v = ok_msg(call("Validate", "{\"ruleset\": \"prod\", \"upserts\": [" ROUTE("web", "u1") "]}"),
		   &sluice__v1__validate_response__descriptor);
	cr_assert(v->valid);
	cr_assert_eq(v->n_errors, 0);
	sluice__v1__validate_response__free_unpacked(v, NULL);
	cr_assert_eq(etcd_revision(), rev, "Validate wrote to etcd");
}

Test(admin, validate_with_stale_expected_version_is_failed_precondition)
{
	uint64_t v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");
	char want[32];

	apply_ok("prod", "\"upserts\": [" UP("u1", 81) "]");
	expect_error(call("Validate", "{\"ruleset\": \"prod\", \"expectedVersion\": %" PRIu64 ","
			  " \"upserts\": [" UP("u2", 80) "]}", v1),
		     RPC_FAILED_PRECONDITION, fmt_u64(want, v1), NULL);
}

/* ---- races ----------------------------------------------------------------- */

Test(admin, stale_expected_version_is_failed_precondition_with_current_version)
{
	uint64_t v1, v2;
	char cur[64], exp[64], buf[32];
	int64_t rev;

	v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");
	v2 = apply_ok("prod", "\"upserts\": [" UP("u1", 81) "]");
	rev = etcd_revision();
	snprintf(cur, sizeof(cur), "version %s", fmt_u64(buf, v2));
	snprintf(exp, sizeof(exp), "expected_version %s", fmt_u64(buf, v1));
	expect_error(call("ApplyChanges", "{\"ruleset\": \"prod\", \"author\": \"a\","
			  " \"expectedVersion\": %" PRIu64 ", \"upserts\": [" UP("u2", 80) "]}", v1),
		     RPC_FAILED_PRECONDITION, cur, exp, NULL);
	cr_assert_eq(etcd_revision(), rev);
	/* With the current version it goes through. */
	cr_assert_gt(apply_ok("prod", "\"expectedVersion\": %" PRIu64 ","
			      " \"upserts\": [" UP("u2", 80) "]", v2), v2);
}

/* Commits a competing change through the main admin, once, from inside the
 * other store's read-to-commit window. */
static bool competed;
static uint64_t competing_version;

static void compete(void *arg)
{
	(void)arg;
	if (competed)
		return;
	competed = true;
	competing_version = apply_ok("prod", "\"upserts\": [" CLIENT("rival", "rk") "]");
}

Test(admin, race_lost_between_read_and_commit_is_failed_precondition)
{
	Sluice__V1__GetHistoryResponse *h;
	struct stack racer;
	struct rpc_reply r;
	uint64_t v1;
	char cur[64], buf[32];

	v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");
	stack_init(&racer, TEST_TIMEOUT_MS, 0, compete, NULL);
	competed = false;
	r = call_on(racer.admin, "ApplyChanges",
		    "{\"ruleset\": \"prod\", \"author\": \"loser\", \"expectedVersion\": %"
		    PRIu64 ", \"upserts\": [" CLIENT("c1", "k1") "]}", v1);
	cr_assert(competed);
	snprintf(cur, sizeof(cur), "at version %s", fmt_u64(buf, competing_version));
	expect_error(r, RPC_FAILED_PRECONDITION, "expected_version", cur, NULL);
	stack_free(&racer);

	h = history("prod", 0, 0);
	cr_assert_eq(h->n_versions, 2, "the loser must not be recorded");
	cr_assert_eq(h->versions[0]->version, competing_version);
	cr_assert_str_eq(h->versions[0]->author, "alice");
	sluice__v1__get_history_response__free_unpacked(h, NULL);
}

#define RACERS 6

/* One racing writer: its own etcd client, store and admin. */
struct racer {
	pthread_barrier_t *start;
	uint64_t expected;
	int index;
	struct stack stack;
	enum rpc_status status;
	uint64_t version;
	char message[512];
};

static void *race(void *arg)
{
	struct racer *r = arg;
	char json[512];
	struct rpc_reply reply = { 0 };
	struct rpc_peer peer = { .admin = true };
	ProtobufCMessage *req;
	uint8_t buf[1024];
	size_t len;

	snprintf(json, sizeof(json),
		 "{\"ruleset\": \"prod\", \"author\": \"racer%d\", \"expectedVersion\": %" PRIu64 ","
		 " \"upserts\": [{\"client\": {\"id\": \"c%d\", \"keys\": [\"k%d\"]}}]}",
		 r->index, r->expected, r->index, r->index);
	if (pbjson_decode(&sluice__v1__apply_changes_request__descriptor, json, strlen(json), NULL,
			  &req) < 0) {
		r->status = RPC_UNKNOWN;
		return NULL;
	}
	len = protobuf_c_message_pack(req, buf);
	protobuf_c_message_free_unpacked(req, NULL);
	pthread_barrier_wait(r->start);
	method("ApplyChanges")->fn(r->stack.admin, &peer, buf, len, &reply);
	r->status = reply.status;
	if (reply.message)
		snprintf(r->message, sizeof(r->message), "%s", reply.message);
	if (reply.status == RPC_OK) {
		Sluice__V1__ApplyChangesResponse *resp =
			sluice__v1__apply_changes_response__unpack(NULL, reply.len, reply.data);

		if (resp && resp->version)
			r->version = resp->version->version;
		sluice__v1__apply_changes_response__free_unpacked(resp, NULL);
	}
	free(reply.data);
	free(reply.message);
	return NULL;
}

Test(admin, concurrent_applies_with_same_expected_version_exactly_one_wins)
{
	struct racer racers[RACERS];
	pthread_t threads[RACERS];
	pthread_barrier_t start;
	struct snapshot *head;
	uint64_t v1;
	int ok = 0, stale = 0, winner = -1;

	v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");
	cr_assert_eq(pthread_barrier_init(&start, NULL, RACERS), 0);
	for (int i = 0; i < RACERS; i++) {
		racers[i] = (struct racer){ .start = &start, .expected = v1, .index = i };
		stack_init(&racers[i].stack, TEST_TIMEOUT_MS, 0, NULL, NULL);
		cr_assert_eq(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
	}
	for (int i = 0; i < RACERS; i++)
		pthread_join(threads[i], NULL);
	pthread_barrier_destroy(&start);
	for (int i = 0; i < RACERS; i++) {
		if (racers[i].status == RPC_OK) {
			ok++;
			winner = i;
		} else if (racers[i].status == RPC_FAILED_PRECONDITION) {
			stale++;
		} else {
			cr_log_error("racer %d: status %d: %s", i, racers[i].status,
				     racers[i].message);
		}
		stack_free(&racers[i].stack);
	}
	cr_assert_eq(ok, 1, "winners: %d", ok);
	cr_assert_eq(stale, RACERS - 1);

	head = get_snap("prod", 0);
	cr_assert_eq(snapshot_version(head), racers[winner].version);
	cr_assert_eq(snapshot_count(head, POLICY_KIND_CLIENT), 1, "only the winner's client");
	{
		char id[16];

		snprintf(id, sizeof(id), "c%d", winner);
		cr_assert_not_null(snapshot_get(head, POLICY_KIND_CLIENT, id));
	}
	snapshot_unref(head);
	for (int i = 0; i < RACERS; i++)
		if (i != winner)
			cr_assert(strstr(racers[i].message, "expected_version"), "%s",
				  racers[i].message);
}

/* ---- GetRuleset at versions, ListRulesets ----------------------------------- */

Test(admin, get_ruleset_at_old_version_returns_old_content)
{
	struct snapshot *s1, *s2, *w1, *w2;
	uint64_t v1, v2;

	v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) ", " ROUTE("api", "u1") "]");
	v2 = apply_ok("prod", "\"upserts\": [" UP("u1", 81) ", " CLIENT("c1", "k1") "],"
		      " \"removes\": [{\"kind\": \"ROUTE\", \"id\": \"api\"}]");
	s1 = get_snap("prod", v1);
	s2 = get_snap("prod", 0);
	w1 = expect_snap("prod", (struct policy_res *[]){ upstream("u1", 80), route("api", "u1") }, 2);
	w2 = expect_snap("prod", (struct policy_res *[]){ upstream("u1", 81), client("c1", "k1") }, 2);
	cr_assert(snapshot_equal(s1, w1));
	cr_assert(snapshot_equal(s2, w2));
	cr_assert_eq(snapshot_version(s1), v1);
	cr_assert_eq(snapshot_version(s2), v2);
	snapshot_unref(s1);
	snapshot_unref(s2);
	snapshot_unref(w1);
	snapshot_unref(w2);
}

Test(admin, get_unknown_ruleset_or_version_is_not_found)
{
	uint64_t other;
	char buf[32];

	expect_error(call("GetRuleset", "{\"ruleset\": \"nope\"}"), RPC_NOT_FOUND,
		     "'nope' does not exist", NULL);
	apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");
	/* A real revision, but of another ruleset. */
	other = apply_ok("other", "\"upserts\": [" UP("u1", 80) "]");
	expect_error(call("GetRuleset", "{\"ruleset\": \"prod\", \"version\": %" PRIu64 "}", other),
		     RPC_NOT_FOUND, "'prod' has no version", fmt_u64(buf, other), NULL);
	expect_error(call("GetRuleset", "{\"ruleset\": \"prod\", \"version\": 999999999}"),
		     RPC_NOT_FOUND, "has no version 999999999", NULL);
	expect_error(call("GetRuleset", "{\"ruleset\": \"-bad\"}"), RPC_INVALID_ARGUMENT,
		     "ruleset:", NULL);
}

Test(admin, list_rulesets_returns_each_head_sorted_by_name)
{
	Sluice__V1__ListRulesetsResponse *l;
	uint64_t b, a1, a2;

	l = ok_msg(call("ListRulesets", "{}"), &sluice__v1__list_rulesets_response__descriptor);
	cr_assert_eq(l->n_rulesets, 0);
	sluice__v1__list_rulesets_response__free_unpacked(l, NULL);

	b = apply_ok("b", "\"upserts\": [" UP("u1", 80) "]");
	a1 = apply_ok("a", "\"upserts\": [" UP("u1", 80) "]");
	a2 = apply_ok("a", "\"upserts\": [" UP("u2", 80) "], \"message\": \"second\"");
	l = ok_msg(call("ListRulesets", "{}"), &sluice__v1__list_rulesets_response__descriptor);
	cr_assert_eq(l->n_rulesets, 2);
	cr_assert_str_eq(l->rulesets[0]->ruleset, "a");
	cr_assert_eq(l->rulesets[0]->version, a2);
	cr_assert_neq(a1, a2);
	cr_assert_str_eq(l->rulesets[0]->message, "second");
	cr_assert_eq(l->rulesets[0]->resources, 2);
	cr_assert_str_eq(l->rulesets[1]->ruleset, "b");
	cr_assert_eq(l->rulesets[1]->version, b);
	sluice__v1__list_rulesets_response__free_unpacked(l, NULL);
}

/* ---- GetHistory ------------------------------------------------------------- */

Test(admin, history_is_newest_first_with_limit_and_before_version)
{
	Sluice__V1__GetHistoryResponse *h;
	uint64_t v1, v2, v3;

	v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");
	v2 = apply_ok("prod", "\"upserts\": [" UP("u2", 80) "]");
	v3 = apply_ok("prod", "\"removes\": [{\"kind\": \"UPSTREAM\", \"id\": \"u1\"}]");

	h = history("prod", 0, 0);
	cr_assert_eq(h->n_versions, 3);
	cr_assert_eq(h->versions[0]->version, v3);
	cr_assert_eq(h->versions[1]->version, v2);
	cr_assert_eq(h->versions[2]->version, v1);
	cr_assert_eq(h->versions[0]->removes, 1);
	cr_assert_eq(h->versions[0]->n_touched, 1);
	cr_assert_eq(h->versions[0]->touched[0]->kind, SLUICE__V1__KIND__UPSTREAM);
	cr_assert_str_eq(h->versions[0]->touched[0]->id, "u1");
	cr_assert_str_eq(h->versions[2]->author, "alice");
	sluice__v1__get_history_response__free_unpacked(h, NULL);

	h = history("prod", 2, 0);
	cr_assert_eq(h->n_versions, 2);
	cr_assert_eq(h->versions[1]->version, v2);
	sluice__v1__get_history_response__free_unpacked(h, NULL);

	h = history("prod", 1, v3);
	cr_assert_eq(h->n_versions, 1);
	cr_assert_eq(h->versions[0]->version, v2);
	sluice__v1__get_history_response__free_unpacked(h, NULL);

	/* Huge limits are clamped, not refused. */
	h = history("prod", 4000000000u, 0);
	cr_assert_eq(h->n_versions, 3);
	sluice__v1__get_history_response__free_unpacked(h, NULL);

	expect_error(call("GetHistory", "{\"ruleset\": \"nope\"}"), RPC_NOT_FOUND,
		     "'nope' does not exist", NULL);
}

/* ---- Diff -------------------------------------------------------------------- */

static bool delta_has_upsert(const Sluice__V1__Delta *d, Sluice__V1__Resource__KindCase kind,
			     const char *id)
{
	for (size_t i = 0; i < d->n_upserts; i++) {
		struct policy_res *r = NULL;
		bool match;

		if (d->upserts[i]->kind_case != kind)
			continue;
		cr_assert_eq(policy_res_from_pb(d->upserts[i], NULL, &r), 0);
		match = strcmp(r->id, id) == 0;
		policy_res_unref(r);
		if (match)
			return true;
	}
	return false;
}

Test(admin, diff_returns_the_delta_between_versions)
{
	Sluice__V1__Delta *d;
	uint64_t v1, v2;
	char buf[32];

	v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) ", " ROUTE("api", "u1") "]");
	v2 = apply_ok("prod", "\"upserts\": [" UP("u1", 81) ", " CLIENT("c1", "k1") "],"
		      " \"removes\": [{\"kind\": \"ROUTE\", \"id\": \"api\"}]");

	d = ok_msg(call("Diff", "{\"ruleset\": \"prod\", \"fromVersion\": %" PRIu64 ","
			" \"toVersion\": %" PRIu64 "}", v1, v2), &sluice__v1__delta__descriptor);
	cr_assert_str_eq(d->ruleset, "prod");
	cr_assert_eq(d->from_version, v1);
	cr_assert_eq(d->to_version, v2);
	cr_assert_eq(d->n_upserts, 2);
	cr_assert(delta_has_upsert(d, SLUICE__V1__RESOURCE__KIND_UPSTREAM, "u1"));
	cr_assert(delta_has_upsert(d, SLUICE__V1__RESOURCE__KIND_CLIENT, "c1"));
	cr_assert_eq(d->n_removes, 1);
	cr_assert_eq(d->removes[0]->kind, SLUICE__V1__KIND__ROUTE);
	cr_assert_str_eq(d->removes[0]->id, "api");
	sluice__v1__delta__free_unpacked(d, NULL);

	/* From 0: everything at v1; to 0: the head. */
	d = ok_msg(call("Diff", "{\"ruleset\": \"prod\", \"toVersion\": %" PRIu64 "}", v1),
		   &sluice__v1__delta__descriptor);
	cr_assert_eq(d->from_version, 0);
	cr_assert_eq(d->n_upserts, 2);
	cr_assert_eq(d->n_removes, 0);
	sluice__v1__delta__free_unpacked(d, NULL);
	d = ok_msg(call("Diff", "{\"ruleset\": \"prod\", \"fromVersion\": %" PRIu64 "}", v2),
		   &sluice__v1__delta__descriptor);
	cr_assert_eq(d->to_version, v2);
	cr_assert_eq(d->n_upserts + d->n_removes, 0);
	sluice__v1__delta__free_unpacked(d, NULL);

	/* The version at fault is named, whichever side it is on. */
	expect_error(call("Diff", "{\"ruleset\": \"prod\", \"fromVersion\": 999999999,"
			  " \"toVersion\": %" PRIu64 "}", v2),
		     RPC_NOT_FOUND, "no version 999999999", NULL);
	expect_error(call("Diff", "{\"ruleset\": \"prod\", \"fromVersion\": %" PRIu64 ","
			  " \"toVersion\": %" PRIu64 "}", v1, v1 + 1000000),
		     RPC_NOT_FOUND, fmt_u64(buf, v1 + 1000000), NULL);
	expect_error(call("Diff", "{\"ruleset\": \"nope\"}"), RPC_NOT_FOUND,
		     "'nope' does not exist", NULL);
}

/* ---- Rollback ---------------------------------------------------------------- */

Test(admin, rollback_writes_the_old_content_as_a_new_version)
{
	Sluice__V1__VersionInfo *v;
	Sluice__V1__GetHistoryResponse *h;
	struct snapshot *old, *now;
	uint64_t v1, v2;

	v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) ", " ROUTE("api", "u1") "]");
	v2 = apply_ok("prod", "\"upserts\": [" UP("u1", 81) ", " CLIENT("c1", "k1") "],"
		      " \"removes\": [{\"kind\": \"ROUTE\", \"id\": \"api\"}]");
	v = apply_reply(call("Rollback", "{\"ruleset\": \"prod\", \"toVersion\": %" PRIu64 ","
			     " \"expectedVersion\": %" PRIu64 ", \"author\": \"bob\","
			     " \"message\": \"undo v2\"}", v1, v2));
	cr_assert_gt(v->version, v2);
	cr_assert_eq(v->rollback_of, v1);
	cr_assert_str_eq(v->author, "bob");
	cr_assert_str_eq(v->message, "undo v2");
	cr_assert_eq(v->resources, 2);

	old = get_snap("prod", v1);
	now = get_snap("prod", 0);
	cr_assert(snapshot_equal(old, now), "rolled-back content differs from version v1");
	cr_assert_eq(snapshot_version(now), v->version);
	snapshot_unref(old);
	snapshot_unref(now);

	h = history("prod", 1, 0);
	cr_assert_eq(h->versions[0]->version, v->version);
	cr_assert_eq(h->versions[0]->rollback_of, v1);
	sluice__v1__get_history_response__free_unpacked(h, NULL);
	sluice__v1__version_info__free_unpacked(v, NULL);
}

Test(admin, rollback_refusals_map_to_their_status)
{
	uint64_t v1, v2, other;
	char buf[32];

	expect_error(call("Rollback", "{\"ruleset\": \"prod\"}"), RPC_INVALID_ARGUMENT,
		     "author: required", "to_version: required", NULL);
	expect_error(call("Rollback", "{\"ruleset\": \"nope\", \"toVersion\": 5, \"author\": \"b\"}"),
		     RPC_NOT_FOUND, "'nope'", NULL);
	v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");
	v2 = apply_ok("prod", "\"upserts\": [" UP("u1", 81) "]");
	other = apply_ok("other", "\"upserts\": [" UP("u1", 81) "]");
	expect_error(call("Rollback", "{\"ruleset\": \"prod\", \"toVersion\": %" PRIu64 ","
			  " \"author\": \"b\"}", other),
		     RPC_NOT_FOUND, "has no version", fmt_u64(buf, other), NULL);
	expect_error(call("Rollback", "{\"ruleset\": \"prod\", \"toVersion\": %" PRIu64 ","
			  " \"expectedVersion\": %" PRIu64 ", \"author\": \"b\"}", v1, v1),
		     RPC_FAILED_PRECONDITION, "expected_version", fmt_u64(buf, v2), NULL);
}

/* ---- compaction -------------------------------------------------------------- */

Test(admin, compacted_version_is_out_of_range_but_history_survives)
{
	Sluice__V1__GetHistoryResponse *h;
	uint64_t v1, v2;
	char buf[32];

	v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");
	v2 = apply_ok("prod", "\"upserts\": [" UP("u1", 81) "]");
	cr_assert_eq(etcd_compact(main_stack.etcd, (int64_t)v2, true), 0);

	expect_error(call("GetRuleset", "{\"ruleset\": \"prod\", \"version\": %" PRIu64 "}", v1),
		     RPC_OUT_OF_RANGE, "compacted", fmt_u64(buf, v1), NULL);
	expect_error(call("Diff", "{\"ruleset\": \"prod\", \"fromVersion\": %" PRIu64 ","
			  " \"toVersion\": %" PRIu64 "}", v1, v2),
		     RPC_OUT_OF_RANGE, "compacted", fmt_u64(buf, v1), NULL);
	expect_error(call("Rollback", "{\"ruleset\": \"prod\", \"toVersion\": %" PRIu64 ","
			  " \"author\": \"b\"}", v1),
		     RPC_OUT_OF_RANGE, "compacted", NULL);

	h = history("prod", 0, 0);
	cr_assert_eq(h->n_versions, 2);
	cr_assert_eq(h->versions[1]->version, v1);
	sluice__v1__get_history_response__free_unpacked(h, NULL);
	/* The head (at the compaction revision) still reads. */
	snapshot_unref(get_snap("prod", v2));
}

/* ---- etcd failures ------------------------------------------------------------ */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One valid request per method against ruleset prod at version v. */
static void every_method_fails_with(struct admin *a, uint64_t v, enum rpc_status status,
				    double max_s)
{
	static const char *const names[] = { "ListRulesets", "GetRuleset", "Validate",
					     "ApplyChanges", "GetHistory", "Diff", "Rollback" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct rpc_reply r;
		double t0 = now_s(), dt;

		if (strcmp(names[i], "ListRulesets") == 0)
			r = call_on(a, names[i], "{}");
		else if (strcmp(names[i], "GetRuleset") == 0)
			r = call_on(a, names[i], "{\"ruleset\": \"prod\", \"version\": %" PRIu64 "}", v);
		else if (strcmp(names[i], "Validate") == 0 || strcmp(names[i], "ApplyChanges") == 0)
			r = call_on(a, names[i], "{\"ruleset\": \"prod\", \"author\": \"a\","
				    " \"upserts\": [" UP("u9", 80) "]}");
		else if (strcmp(names[i], "GetHistory") == 0)
			r = call_on(a, names[i], "{\"ruleset\": \"prod\"}");
		else if (strcmp(names[i], "Diff") == 0)
			r = call_on(a, names[i], "{\"ruleset\": \"prod\", \"toVersion\": %" PRIu64 "}",
				    v);
		else
			r = call_on(a, names[i], "{\"ruleset\": \"prod\", \"toVersion\": %" PRIu64 ","
				    " \"author\": \"a\"}", v);
		dt = now_s() - t0;
		cr_log_info("%s with etcd down: %d: %s (%.2f s)", names[i], r.status, r.message, dt);
		/* Bounded by the etcd deadline, not a speed check: a generous
		 * multiple so that only a hang fails. */
		cr_assert_lt(dt, max_s, "%s took %.1f s", names[i], dt);
		/* Only a timed-out write can have committed unseen. */
		if (status == RPC_DEADLINE_EXCEEDED)
			cr_assert_eq(strstr(r.message, "may or may not have committed") != NULL,
				     strcmp(names[i], "ApplyChanges") == 0 ||
				     strcmp(names[i], "Rollback") == 0, "%s: %s", names[i], r.message);
		expect_error(r, status, "etcd", NULL);
	}
}

Test(admin, etcd_down_is_unavailable_for_every_method)
{
	uint64_t v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");

	cr_assert_eq(etcd_helper_kill(srv), 0);
	every_method_fails_with(adm, v1, RPC_UNAVAILABLE, 3.0 * TEST_TIMEOUT_MS / 1000);
	/* And back when etcd is. */
	cr_assert_eq(etcd_helper_restart(srv), 0);
	cr_assert_gt(apply_ok("prod", "\"upserts\": [" UP("u2", 80) "]"), v1);
}

Test(admin, etcd_hung_is_deadline_exceeded_for_every_method)
{
	struct stack quick;
	uint64_t v1 = apply_ok("prod", "\"upserts\": [" UP("u1", 80) "]");

	stack_init(&quick, 500, 0, NULL, NULL);
	cr_assert_eq(kill(srv->pid, SIGSTOP), 0);
	every_method_fails_with(quick.admin, v1, RPC_DEADLINE_EXCEEDED, 3 * 0.5 + 2);
	cr_assert_eq(kill(srv->pid, SIGCONT), 0);
	stack_free(&quick);
}

/* ---- the README's grpcurl walkthrough ------------------------------------------ */

/* Every `-d '<json>'` body in the README decodes as the request of the method
 * its command calls, every resource in it validates, and every method has a
 * command. */
Test(admin, readme_has_a_valid_grpcurl_body_for_every_method)
{
	const ProtobufCServiceDescriptor *sd = &sluice__v1__policy_admin__descriptor;
	bool seen[16] = { false };
	char *text = NULL, *p;
	size_t cap = 0;
	FILE *f = fopen(ADMIN_README, "r");
	ssize_t len;

	cr_assert_not_null(f, "%s: %s", ADMIN_README, strerror(errno));
	len = getdelim(&text, &cap, '\0', f);
	fclose(f);
	cr_assert_gt(len, 0);
	for (p = strstr(text, "-d '"); p; p = strstr(p, "-d '")) {
		char *body = p + 4, *end = strchr(body, '\''), *call, name[64] = "";
		char err[PBJSON_ERR_LEN];
		ProtobufCMessage *req;
		int r;

		cr_assert_not_null(end);
		call = strstr(end, "sluice.v1.PolicyAdmin/");
		cr_assert_not_null(call, "body without a method: %.40s", body);
		sscanf(call + strlen("sluice.v1.PolicyAdmin/"), "%63[A-Za-z]", name);
		r = pbjson_decode(request_desc(name), body, (size_t)(end - body), err, &req);
		cr_assert_eq(r, 0, "README body for %s: %s", name, err);
		if (req->descriptor == &sluice__v1__apply_changes_request__descriptor) {
			Sluice__V1__ApplyChangesRequest *m = (Sluice__V1__ApplyChangesRequest *)req;

			for (size_t i = 0; i < m->n_upserts; i++) {
				struct policy_errs errs;
				struct policy_res *res = NULL;

				policy_errs_init(&errs);
				r = policy_res_from_pb(m->upserts[i], &errs, &res);
				cr_assert_eq(r, 0, "README %s upserts[%zu]: %s", name, i,
					     errs.n ? errs.msg[0] : "");
				policy_res_unref(res);
			}
		}
		protobuf_c_message_free_unpacked(req, NULL);
		for (unsigned i = 0; i < sd->n_methods; i++)
			if (strcmp(sd->methods[i].name, name) == 0)
				seen[i] = true;
		p = end + 1;
	}
	free(text);
	for (unsigned i = 0; i < sd->n_methods; i++)
		cr_assert(seen[i], "README has no grpcurl body for %s", sd->methods[i].name);
}
