/* admin.c - sluice.v1.PolicyAdmin: protobuf-c requests in, store calls,
 * protobuf-c replies out, store errors mapped to gRPC statuses.
 *
 * Invariants: request-level problems (undecodable bytes, bad ruleset name,
 * missing author, caps, invalid resources) are found before the store is
 * called, so a refused write never reaches etcd; every status message names
 * the ruleset and, for validation, every field at fault.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/v1/admin.pb-c.h"

#include "admin.h"
#include "policy.h"
#include "policy_wire.h"
#include "snapshot.h"
#include "store.h"

/* Owned by the creator of admin_new; lives until admin_free. */
struct admin {
	struct store *store; /* borrowed */
};

#define PATH_PREFIX "/sluice.v1.PolicyAdmin/"

static const char *S(const char *s)
{
	return s ? s : "";
}

/* ---- replies -------------------------------------------------------------- */

static void reply_msg(struct rpc_reply *reply, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	/* +1: an empty message still gets a buffer the adapter can free. */
	uint8_t *buf = malloc(len + 1);

	if (!buf) {
		rpc_reply_error(reply, RPC_INTERNAL, "out of memory encoding the reply");
		return;
	}
	protobuf_c_message_pack(m, buf);
	free(reply->data);
	free(reply->message);
	reply->status = RPC_OK;
	reply->message = NULL;
	reply->data = buf;
	reply->len = len;
}

/* "a; b; c; and 3 more" into buf (always NUL-terminated). */
static void errs_join(const struct policy_errs *e, char *buf, size_t size)
{
	size_t off = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < e->n && off < size; i++) {
		int w = snprintf(buf + off, size - off, "%s%s", i ? "; " : "", e->msg[i]);

		if (w < 0)
			break;
		off += (size_t)w;
	}
	if (e->dropped && off < size)
		snprintf(buf + off, size - off, "; and %u more", e->dropped);
}

/* INVALID_ARGUMENT listing every validation error. */
static void reply_invalid(struct rpc_reply *reply, const char *rs, const struct policy_errs *e)
{
	char buf[POLICY_ERRS_MAX * (POLICY_ERR_LEN + 2) + 64];
	unsigned n = policy_errs_count(e);

	errs_join(e, buf, sizeof(buf));
	rpc_reply_error(reply, RPC_INVALID_ARGUMENT, "invalid change to ruleset '%s' (%u error%s): %s",
			rs, n, n == 1 ? "" : "s", buf);
}

/* Errors every store call may return: etcd's and the process's. `what` says
 * what was being done ("apply a change to ruleset 'prod'"); `write` when the
 * call may have sent a transaction, whose outcome a broken call leaves
 * unknown. */
static void reply_store_error(struct rpc_reply *reply, int r, const char *what, bool write)
{
	const char *unknown = write ? " (the change may or may not have committed:"
				      " check GetHistory)" : "";

	switch (r) {
	case -ETIMEDOUT:
		rpc_reply_error(reply, RPC_DEADLINE_EXCEEDED,
				"cannot %s: etcd did not answer within its deadline%s", what,
				unknown);
		break;
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
	case -EIO:
		rpc_reply_error(reply, RPC_UNAVAILABLE, "cannot %s: etcd is unavailable (%s)", what,
				strerrordesc_np(-r));
		break;
	case -ECONNRESET:
		rpc_reply_error(reply, RPC_UNAVAILABLE, "cannot %s: the connection to etcd broke%s",
				what, unknown);
		break;
	case -EBADMSG:
		rpc_reply_error(reply, RPC_INTERNAL,
				"cannot %s: etcd holds data under the store prefix that does not decode",
				what);
		break;
	case -ENOMEM:
		rpc_reply_error(reply, RPC_RESOURCE_EXHAUSTED, "cannot %s: out of memory", what);
		break;
	default:
		rpc_reply_error(reply, RPC_INTERNAL, "cannot %s: %s (error %d)", what,
				S(strerrordesc_np(-r)), r);
		break;
	}
}

/* A read of `version` (0 = head) of ruleset rs failed with r. */
static void reply_get_error(struct rpc_reply *reply, const char *rs, uint64_t version, int r)
{
	char what[160];

	if (r == -ENOENT && version == 0) {
		rpc_reply_error(reply, RPC_NOT_FOUND, "ruleset '%s' does not exist", rs);
		return;
	}
	if (r == -ENOENT) {
		rpc_reply_error(reply, RPC_NOT_FOUND,
				"ruleset '%s' has no version %" PRIu64
				" (it does not exist, or no change to it committed at that version;"
				" GetHistory lists its versions)", rs, version);
		return;
	}
	if (r == -ESTALE) {
		/* OUT_OF_RANGE, not NOT_FOUND: the version did exist, and asking
		 * again will not help; only newer versions can be read. */
		rpc_reply_error(reply, RPC_OUT_OF_RANGE,
				"version %" PRIu64 " of ruleset '%s' has been compacted in etcd:"
				" its content is gone (its change record remains in GetHistory)",
				version, rs);
		return;
	}
	snprintf(what, sizeof(what), "read ruleset '%s' at version %" PRIu64, rs, version);
	reply_store_error(reply, r, what, false);
}

/* The head version of rs (0 when it does not exist); -errno when etcd
 * cannot say. */
static int current_version(struct admin *a, const char *rs, uint64_t *version)
{
	struct store_version *v = NULL;
	size_t n = 0;
	int r = store_history(a->store, rs, 1, 0, &v, &n);

	if (r == -ENOENT) {
		*version = 0;
		return 0;
	}
	if (r < 0)
		return r;
	*version = n ? v[0].version : 0;
	store_versions_free(v, n);
	return 0;
}

/* A write lost to another writer (-ESTALE from store_apply/rollback). */
static void reply_stale(struct admin *a, struct rpc_reply *reply, const char *rs,
			uint64_t expected)
{
	char now[48] = "an unknown version (etcd did not say)";
	uint64_t cur;

	if (current_version(a, rs, &cur) == 0)
		snprintf(now, sizeof(now), "version %" PRIu64, cur);
	if (expected)
		rpc_reply_error(reply, RPC_FAILED_PRECONDITION,
				"ruleset '%s' is at %s, not at expected_version %" PRIu64
				": re-read it and retry", rs, now, expected);
	else
		rpc_reply_error(reply, RPC_FAILED_PRECONDITION,
				"ruleset '%s' kept changing under this change (lost the race %d times);"
				" it is now at %s: retry", rs, STORE_APPLY_ATTEMPTS, now);
}

/* ---- request checks ------------------------------------------------------- */

static void check_ruleset(const char *rs, struct policy_errs *errs)
{
	const char *why = policy_ruleset_name_problem(rs);

	if (why)
		policy_errs_add(errs, "ruleset: %s", why);
}

static void check_meta(const char *author, const char *message, bool require_author,
		       struct policy_errs *errs)
{
	if (require_author && author[0] == '\0')
		policy_errs_add(errs, "author: required");
	if (strlen(author) > STORE_MAX_AUTHOR_LEN)
		policy_errs_add(errs, "author: longer than %d bytes", STORE_MAX_AUTHOR_LEN);
	if (strlen(message) > STORE_MAX_MESSAGE_LEN)
		policy_errs_add(errs, "message: longer than %d bytes", STORE_MAX_MESSAGE_LEN);
}

/* A request's ruleset name for messages: quoted as given, cut short. */
static const char *rs_for_msg(const char *rs)
{
	return policy_ruleset_name_valid(rs) ? rs : "(invalid name)";
}

/* An ApplyChangesRequest decoded into policy structs. Owned by the handler
 * that fills it (change_decode); released with change_done before return. */
struct change_req {
	struct policy_res **upserts;
	size_t n_upserts;
	struct policy_key *removes;
	size_t n_removes;
};

static void change_done(struct change_req *c)
{
	for (size_t i = 0; i < c->n_upserts; i++)
		policy_res_unref(c->upserts[i]);
	free(c->upserts);
	free(c->removes);
	memset(c, 0, sizeof(*c));
}

/* Decodes upserts and removes; every problem goes to errs (named by
 * resource and field, or by position when the resource has no name).
 * 0 (check errs), or -ENOMEM. */
static int change_decode(const Sluice__V1__ApplyChangesRequest *m, struct change_req *c,
			 struct policy_errs *errs)
{
	memset(c, 0, sizeof(*c));
	if (m->n_upserts + m->n_removes > ADMIN_MAX_CHANGE_ITEMS) {
		policy_errs_add(errs, "upserts+removes: %zu items exceed the cap of %d per change",
				m->n_upserts + m->n_removes, ADMIN_MAX_CHANGE_ITEMS);
		return 0;
	}
	c->upserts = calloc(m->n_upserts + 1, sizeof(*c->upserts));
	c->removes = calloc(m->n_removes + 1, sizeof(*c->removes));
	if (!c->upserts || !c->removes) {
		change_done(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < m->n_upserts; i++) {
		const Sluice__V1__Resource *u = m->upserts[i];
		struct policy_res *res;
		int r;

		if (!u || u->kind_case == SLUICE__V1__RESOURCE__KIND__NOT_SET) {
			policy_errs_add(errs, "upserts[%zu]: no resource kind set (client, rate_limit,"
					" access_list, route, upstream or settings)", i);
			continue;
		}
		if (!policy_kind_name((enum policy_kind)u->kind_case)) {
			policy_errs_add(errs, "upserts[%zu]: unknown resource kind %d", i,
					(int)u->kind_case);
			continue;
		}
		r = policy_res_from_pb(u, errs, &res);
		if (r == -EINVAL || r == -EBADMSG)
			continue;
		if (r < 0) {
			change_done(c);
			return r;
		}
		c->upserts[c->n_upserts++] = res;
	}
	for (size_t i = 0; i < m->n_removes; i++) {
		const Sluice__V1__ResourceKey *k = m->removes[i];
		int kind = k ? (int)k->kind : 0;
		const char *id = k ? S(k->id) : "";
		const char *why = policy_id_problem(id);
		bool ok = true;

		if (kind == 0) {
			policy_errs_add(errs, "removes[%zu].kind: required", i);
			ok = false;
		} else if (!policy_kind_name((enum policy_kind)kind)) {
			policy_errs_add(errs, "removes[%zu].kind: unknown value %d", i, kind);
			ok = false;
		}
		if (why) {
			policy_errs_add(errs, "removes[%zu].id: %s", i, why);
			ok = false;
		} else if (kind == POLICY_KIND_SETTINGS && strcmp(id, POLICY_SETTINGS_ID) != 0) {
			policy_errs_add(errs, "removes[%zu].id: the settings resource is named \""
					POLICY_SETTINGS_ID "\"", i);
			ok = false;
		}
		if (!ok)
			continue;
		c->removes[c->n_removes].kind = (enum policy_kind)kind;
		snprintf(c->removes[c->n_removes].id, sizeof(c->removes[0].id), "%s", id);
		c->n_removes++;
	}
	return 0;
}

/* Decodes and checks an ApplyChangesRequest, then hands it to store_apply
 * (dry_run forced for Validate). Returns the store's result; *errs holds
 * request and validation problems, and -EINVAL means "see errs". */
static int apply_request(struct admin *a, const Sluice__V1__ApplyChangesRequest *m,
			 bool validate_only, struct policy_errs *errs, struct store_version *out)
{
	const char *rs = S(m->ruleset);
	struct change_req c;
	struct store_change ch;
	int r;

	check_ruleset(rs, errs);
	check_meta(S(m->author), S(m->message), !validate_only, errs);
	r = change_decode(m, &c, errs);
	if (r < 0)
		return r;
	if (policy_errs_count(errs)) {
		change_done(&c);
		return -EINVAL;
	}
	ch = (struct store_change){
		.ruleset = rs,
		.upserts = c.upserts,
		.n_upserts = c.n_upserts,
		.removes = c.removes,
		.n_removes = c.n_removes,
		.expected_version = m->expected_version,
		.author = S(m->author),
		.message = S(m->message),
		.dry_run = validate_only || m->dry_run,
	};
	r = store_apply(a->store, &ch, errs, out);
	change_done(&c);
	if (r == -E2BIG && policy_errs_count(errs) == 0)
		policy_errs_add(errs, "change: touches more resources than one etcd transaction"
				" allows (%d operations by default): split it into smaller changes",
				STORE_DEFAULT_MAX_TXN_OPS);
	if ((r == -EINVAL || r == -E2BIG) && policy_errs_count(errs) == 0)
		/* etcd itself refused the transaction (e.g. request too large). */
		policy_errs_add(errs, "change: refused by etcd as invalid (too large?)");
	if (r == -E2BIG)
		r = -EINVAL;
	return r;
}

/* ---- handlers ------------------------------------------------------------- */

static void list_rulesets(void *ctx, const struct rpc_peer *peer, const uint8_t *req,
			  size_t len, struct rpc_reply *reply)
{
	struct admin *a = ctx;
	Sluice__V1__ListRulesetsRequest *m;
	Sluice__V1__ListRulesetsResponse resp = SLUICE__V1__LIST_RULESETS_RESPONSE__INIT;
	struct store_version *v = NULL;
	size_t n = 0, done = 0;
	int r;

	(void)peer;
	m = sluice__v1__list_rulesets_request__unpack(NULL, len, req);
	if (!m) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT,
				"request does not decode as sluice.v1.ListRulesetsRequest");
		return;
	}
	sluice__v1__list_rulesets_request__free_unpacked(m, NULL);
	r = store_list(a->store, &v, &n);
	if (r < 0) {
		reply_store_error(reply, r, "list rulesets", false);
		return;
	}
	resp.rulesets = calloc(n + 1, sizeof(*resp.rulesets));
	if (!resp.rulesets)
		goto out_nomem;
	for (; done < n; done++) {
		resp.rulesets[done] = store_version_to_pb(&v[done]);
		if (!resp.rulesets[done])
			goto out_nomem;
	}
	resp.n_rulesets = n;
	reply_msg(reply, &resp.base);
	goto out_free;
out_nomem:
	rpc_reply_error(reply, RPC_RESOURCE_EXHAUSTED, "cannot list rulesets: out of memory");
out_free:
	for (size_t i = 0; resp.rulesets && i < done; i++)
		sluice__v1__version_info__free_unpacked(resp.rulesets[i], NULL);
	free(resp.rulesets);
	store_versions_free(v, n);
}

static void get_ruleset(void *ctx, const struct rpc_peer *peer, const uint8_t *req, size_t len,
			struct rpc_reply *reply)
{
	struct admin *a = ctx;
	Sluice__V1__GetRulesetRequest *m;
	Sluice__V1__Ruleset *out;
	struct snapshot *snap = NULL;
	const char *why;
	int r;

	(void)peer;
	m = sluice__v1__get_ruleset_request__unpack(NULL, len, req);
	if (!m) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT,
				"request does not decode as sluice.v1.GetRulesetRequest");
		return;
	}
	why = policy_ruleset_name_problem(S(m->ruleset));
	if (why) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT, "ruleset: %s", why);
		goto out_free;
	}
	r = store_get(a->store, m->ruleset, m->version, &snap);
	if (r < 0) {
		reply_get_error(reply, m->ruleset, m->version, r);
		goto out_free;
	}
	out = policy_ruleset_to_pb(snap);
	if (!out) {
		rpc_reply_error(reply, RPC_RESOURCE_EXHAUSTED, "cannot encode ruleset '%s': %s",
				m->ruleset, strerrordesc_np(errno));
		goto out_free;
	}
	reply_msg(reply, &out->base);
	policy_ruleset_pb_free(out);
out_free:
	snapshot_unref(snap);
	sluice__v1__get_ruleset_request__free_unpacked(m, NULL);
}

static void validate(void *ctx, const struct rpc_peer *peer, const uint8_t *req, size_t len,
		     struct rpc_reply *reply)
{
	struct admin *a = ctx;
	Sluice__V1__ApplyChangesRequest *m;
	Sluice__V1__ValidateResponse resp = SLUICE__V1__VALIDATE_RESPONSE__INIT;
	char *errors[POLICY_ERRS_MAX + 1];
	char more[64];
	struct policy_errs errs;
	struct store_version v;
	char what[128];
	int r;

	(void)peer;
	m = sluice__v1__apply_changes_request__unpack(NULL, len, req);
	if (!m) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT,
				"request does not decode as sluice.v1.ApplyChangesRequest");
		return;
	}
	policy_errs_init(&errs);
	r = apply_request(a, m, true, &errs, &v);
	if (r == 0) {
		store_version_done(&v);
		resp.valid = true;
		reply_msg(reply, &resp.base);
	} else if (r == -EINVAL) {
		/* Validation problems are the answer, not a failure of the call. */
		for (unsigned i = 0; i < errs.n; i++)
			errors[i] = errs.msg[i];
		resp.n_errors = errs.n;
		if (errs.dropped) {
			snprintf(more, sizeof(more), "and %u more errors", errs.dropped);
			errors[resp.n_errors++] = more;
		}
		resp.errors = errors;
		reply_msg(reply, &resp.base);
	} else if (r == -ESTALE) {
		reply_stale(a, reply, rs_for_msg(S(m->ruleset)), m->expected_version);
	} else {
		snprintf(what, sizeof(what), "validate a change to ruleset '%s'",
			 rs_for_msg(S(m->ruleset)));
		reply_store_error(reply, r, what, false);
	}
	sluice__v1__apply_changes_request__free_unpacked(m, NULL);
}

/* ApplyChangesResponse carrying v. */
static void reply_version(struct rpc_reply *reply, const struct store_version *v)
{
	Sluice__V1__ApplyChangesResponse resp = SLUICE__V1__APPLY_CHANGES_RESPONSE__INIT;

	resp.version = store_version_to_pb(v);
	if (!resp.version) {
		/* The change may have committed: say so rather than hide it. */
		rpc_reply_error(reply, RPC_INTERNAL,
				"ruleset '%s': out of memory encoding the reply (version %" PRIu64
				" was committed)", v->ruleset, v->version);
		return;
	}
	reply_msg(reply, &resp.base);
	sluice__v1__version_info__free_unpacked(resp.version, NULL);
}

static void apply_changes(void *ctx, const struct rpc_peer *peer, const uint8_t *req,
			  size_t len, struct rpc_reply *reply)
{
	struct admin *a = ctx;
	Sluice__V1__ApplyChangesRequest *m;
	struct policy_errs errs;
	struct store_version v;
	char what[128];
	int r;

	(void)peer;
	m = sluice__v1__apply_changes_request__unpack(NULL, len, req);
	if (!m) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT,
				"request does not decode as sluice.v1.ApplyChangesRequest");
		return;
	}
	policy_errs_init(&errs);
	r = apply_request(a, m, false, &errs, &v);
	if (r == 0) {
		reply_version(reply, &v);
		store_version_done(&v);
	} else if (r == -EINVAL) {
		reply_invalid(reply, rs_for_msg(S(m->ruleset)), &errs);
	} else if (r == -ESTALE) {
		reply_stale(a, reply, m->ruleset, m->expected_version);
	} else {
		snprintf(what, sizeof(what), "apply a change to ruleset '%s'", m->ruleset);
		reply_store_error(reply, r, what, !m->dry_run);
	}
	sluice__v1__apply_changes_request__free_unpacked(m, NULL);
}

static void get_history(void *ctx, const struct rpc_peer *peer, const uint8_t *req, size_t len,
			struct rpc_reply *reply)
{
	struct admin *a = ctx;
	Sluice__V1__GetHistoryRequest *m;
	Sluice__V1__GetHistoryResponse resp = SLUICE__V1__GET_HISTORY_RESPONSE__INIT;
	struct store_version *v = NULL;
	size_t n = 0, done = 0;
	uint32_t limit;
	const char *why;
	char what[128];
	int r;

	(void)peer;
	m = sluice__v1__get_history_request__unpack(NULL, len, req);
	if (!m) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT,
				"request does not decode as sluice.v1.GetHistoryRequest");
		return;
	}
	why = policy_ruleset_name_problem(S(m->ruleset));
	if (why) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT, "ruleset: %s", why);
		goto out_req;
	}
	limit = m->limit > ADMIN_MAX_HISTORY_LIMIT ? ADMIN_MAX_HISTORY_LIMIT : m->limit;
	r = store_history(a->store, m->ruleset, limit, m->before_version, &v, &n);
	if (r == -ENOENT) {
		rpc_reply_error(reply, RPC_NOT_FOUND, "ruleset '%s' does not exist", m->ruleset);
		goto out_req;
	}
	if (r < 0) {
		snprintf(what, sizeof(what), "read the history of ruleset '%s'", m->ruleset);
		reply_store_error(reply, r, what, false);
		goto out_req;
	}
	resp.versions = calloc(n + 1, sizeof(*resp.versions));
	if (!resp.versions)
		goto out_nomem;
	for (; done < n; done++) {
		resp.versions[done] = store_version_to_pb(&v[done]);
		if (!resp.versions[done])
			goto out_nomem;
	}
	resp.n_versions = n;
	reply_msg(reply, &resp.base);
	goto out_free;
out_nomem:
	rpc_reply_error(reply, RPC_RESOURCE_EXHAUSTED,
			"cannot read the history of ruleset '%s': out of memory", m->ruleset);
out_free:
	for (size_t i = 0; resp.versions && i < done; i++)
		sluice__v1__version_info__free_unpacked(resp.versions[i], NULL);
	free(resp.versions);
	store_versions_free(v, n);
out_req:
	sluice__v1__get_history_request__free_unpacked(m, NULL);
}

static void diff(void *ctx, const struct rpc_peer *peer, const uint8_t *req, size_t len,
		 struct rpc_reply *reply)
{
	struct admin *a = ctx;
	Sluice__V1__DiffRequest *m;
	Sluice__V1__Delta *out;
	struct policy_delta *d = NULL;
	const char *why;
	char what[160];
	int r;

	(void)peer;
	m = sluice__v1__diff_request__unpack(NULL, len, req);
	if (!m) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT,
				"request does not decode as sluice.v1.DiffRequest");
		return;
	}
	why = policy_ruleset_name_problem(S(m->ruleset));
	if (why) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT, "ruleset: %s", why);
		goto out_free;
	}
	r = store_diff(a->store, m->ruleset, m->from_version, m->to_version, &d);
	if (r == -ENOENT || r == -ESTALE) {
		/* Name the version at fault: probe each (error path only). */
		struct snapshot *s = NULL;
		uint64_t probe[2] = { m->to_version, m->from_version };

		for (int i = 0; i < 2; i++) {
			int pr;

			if (i == 1 && probe[i] == 0)
				break;
			pr = store_get(a->store, m->ruleset, probe[i], &s);
			snapshot_unref(s);
			s = NULL;
			if (pr == -ENOENT || pr == -ESTALE) {
				reply_get_error(reply, m->ruleset, probe[i], pr);
				goto out_free;
			}
		}
		reply_get_error(reply, m->ruleset, m->to_version, r);
		goto out_free;
	}
	if (r < 0) {
		snprintf(what, sizeof(what), "diff ruleset '%s' from %" PRIu64 " to %" PRIu64,
			 m->ruleset, m->from_version, m->to_version);
		reply_store_error(reply, r, what, false);
		goto out_free;
	}
	out = policy_delta_to_pb(d);
	if (!out) {
		rpc_reply_error(reply, RPC_RESOURCE_EXHAUSTED, "cannot encode the diff of '%s': %s",
				m->ruleset, strerrordesc_np(errno));
		goto out_free;
	}
	reply_msg(reply, &out->base);
	policy_delta_pb_free(out);
out_free:
	policy_delta_free(d);
	sluice__v1__diff_request__free_unpacked(m, NULL);
}

static void rollback(void *ctx, const struct rpc_peer *peer, const uint8_t *req, size_t len,
		     struct rpc_reply *reply)
{
	struct admin *a = ctx;
	Sluice__V1__RollbackRequest *m;
	struct policy_errs errs;
	struct store_version v;
	struct snapshot *s = NULL;
	char what[160];
	int r;

	(void)peer;
	m = sluice__v1__rollback_request__unpack(NULL, len, req);
	if (!m) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT,
				"request does not decode as sluice.v1.RollbackRequest");
		return;
	}
	policy_errs_init(&errs);
	check_ruleset(S(m->ruleset), &errs);
	if (m->to_version == 0)
		policy_errs_add(&errs, "to_version: required (the version whose content to restore)");
	check_meta(S(m->author), S(m->message), true, &errs);
	if (policy_errs_count(&errs)) {
		char buf[POLICY_ERRS_MAX * (POLICY_ERR_LEN + 2) + 64];

		errs_join(&errs, buf, sizeof(buf));
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT, "invalid rollback of ruleset '%s': %s",
				rs_for_msg(S(m->ruleset)), buf);
		goto out_free;
	}
	r = store_rollback(a->store, m->ruleset, m->to_version, m->expected_version, m->author,
			   m->message, &v);
	if (r == 0) {
		reply_version(reply, &v);
		store_version_done(&v);
		goto out_free;
	}
	if (r == -ESTALE) {
		/* Either to_version was compacted or the write lost a race. */
		int pr = store_get(a->store, m->ruleset, m->to_version, &s);

		snapshot_unref(s);
		if (pr == -ESTALE)
			reply_get_error(reply, m->ruleset, m->to_version, pr);
		else
			reply_stale(a, reply, m->ruleset, m->expected_version);
	} else if (r == -ENOENT) {
		reply_get_error(reply, m->ruleset, m->to_version, r);
	} else if (r == -E2BIG) {
		rpc_reply_error(reply, RPC_FAILED_PRECONDITION,
				"rolling ruleset '%s' back to version %" PRIu64 " changes more"
				" resources than one etcd transaction allows: roll back in steps",
				m->ruleset, m->to_version);
	} else if (r == -EINVAL) {
		rpc_reply_error(reply, RPC_INVALID_ARGUMENT,
				"etcd refused the rollback of ruleset '%s' as invalid (too large?)",
				m->ruleset);
	} else {
		snprintf(what, sizeof(what), "roll ruleset '%s' back to version %" PRIu64,
			 m->ruleset, m->to_version);
		reply_store_error(reply, r, what, true);
	}
out_free:
	sluice__v1__rollback_request__free_unpacked(m, NULL);
}

/* ---- public --------------------------------------------------------------- */

static const struct admin_method methods[] = {
	{ PATH_PREFIX "ListRulesets", list_rulesets },
	{ PATH_PREFIX "GetRuleset", get_ruleset },
	{ PATH_PREFIX "Validate", validate },
	{ PATH_PREFIX "ApplyChanges", apply_changes },
	{ PATH_PREFIX "GetHistory", get_history },
	{ PATH_PREFIX "Diff", diff },
	{ PATH_PREFIX "Rollback", rollback },
};

const struct admin_method *admin_methods(size_t *n)
{
	*n = sizeof(methods) / sizeof(methods[0]);
	return methods;
}

int admin_new(const struct admin_config *cfg, struct admin **ret)
{
	struct admin *a;

	if (!cfg || !cfg->store)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->store = cfg->store;
	*ret = a;
	return 0;
}

void admin_free(struct admin *a)
{
	free(a);
}
