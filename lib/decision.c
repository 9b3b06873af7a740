/* decision.c - evaluate one request against a snapshot and the limiter.
 *
 * Reads only immutable snapshot data and the limiter's atomic buckets, so
 * any number of workers run it at once without locks. See decision.h for
 * the evaluation order; docs/POLICY.md explains it for operators.
 */
#include "decision.h"

#include <string.h>
#include <xxhash.h>

int decision_http_status(enum decision_verdict v)
{
	switch (v) {
	case DECISION_ALLOW:
		return 200;
	case DECISION_DENY:
		return 403;
	case DECISION_NO_ROUTE:
		return 404;
	case DECISION_METHOD_NOT_ALLOWED:
		return 405;
	case DECISION_RATE_LIMITED:
		return 429;
	}
	return 500;
}

static bool str_eq(const char *a, const char *b, size_t b_len)
{
	return strlen(a) == b_len && memcmp(a, b, b_len) == 0;
}

/* Segment-wise prefix, as routes match: "/api" covers "/api" and "/api/x". */
static bool path_under(const char *path, size_t len, const char *prefix)
{
	size_t plen = strlen(prefix);

	if (plen == 1 && prefix[0] == '/')
		return true;
	if (len < plen || memcmp(path, prefix, plen) != 0)
		return false;
	return len == plen || path[plen] == '/';
}

static bool method_allowed(const struct policy_route *rt, const struct decision_request *req)
{
	if (rt->n_methods == 0)
		return true;
	for (size_t i = 0; i < rt->n_methods; i++)
		if (str_eq(rt->methods[i], req->method, req->method_len))
			return true;
	return false;
}

static bool selector_matches(const struct policy_selector *sel,
			     const struct snapshot_client *client,
			     const struct decision_request *req)
{
	/* The hash settles almost every mismatch without reading the client
	 * resource; the id compare makes it exact. */
	if (sel->client.id && (!client || client->key_hash != sel->client.key_hash ||
			       strcmp(client->res->id, sel->client.id) != 0))
		return false;
	if (sel->has_source && !cidr_contains(&sel->source, &req->source))
		return false;
	if (sel->host && !str_eq(sel->host, req->host, req->host_len))
		return false;
	if (sel->path_prefix && !path_under(req->path, req->path_len, sel->path_prefix))
		return false;
	if (sel->method && !str_eq(sel->method, req->method, req->method_len))
		return false;
	return true;
}

/* Runs one limit; returns true when it refuses the request for good. */
static bool run_limit(const struct policy_res *rl_res, struct limiter *lim, uint64_t subject,
		      uint64_t now_ns, struct decision *out)
{
	const struct policy_rate_limit *rl = &rl_res->u.rate_limit;
	struct limiter_params params;
	struct limiter_result res;

	limiter_params_from_policy(rl, &params);
	if (limiter_check(lim, limiter_key(rl_res->key_hash, subject), &params, now_ns, &res) < 0) {
		/* Bucket table at its cap: fail open, but count it. */
		out->limiter_full++;
		return false;
	}
	out->limits_checked++;

	if (!res.allowed) {
		if (rl->action == POLICY_ACTION_SHADOW) {
			out->shadow_rejects++;
			return false;
		}
		out->limit = rl_res;
		out->limit_result = res;
		return true;
	}
	if (!out->limit || res.remaining < out->limit_result.remaining) {
		out->limit = rl_res;
		out->limit_result = res;
	}
	if (res.delay_ns > out->delay_ns)
		out->delay_ns = res.delay_ns;
	return false;
}

/* Returns true when the limit exists, applies to this request, and refuses it. */
static bool check_ref(const struct snapshot *s, const struct policy_ref *ref,
		      const struct snapshot_client *client, const struct decision_request *req,
		      struct limiter *lim, uint64_t subject, uint64_t now_ns, struct decision *out)
{
	const struct policy_res *rl_res;

	if (!ref->id)
		return false;
	rl_res = snapshot_get_ref(s, POLICY_KIND_RATE_LIMIT, ref);
	if (!rl_res || rl_res->u.rate_limit.enforce == POLICY_ENFORCE_KERNEL)
		return false;
	if (!selector_matches(&rl_res->u.rate_limit.sel, client, req))
		return false;
	return run_limit(rl_res, lim, subject, now_ns, out);
}

void decision_eval(const struct snapshot *s, struct limiter *lim,
		   const struct decision_request *req, uint64_t now_ns, struct decision *out)
{
	const struct policy_settings *settings = snapshot_settings(s);
	const struct policy_route *rt;
	const struct snapshot_client *client = NULL;
	const struct policy_ref *own;
	uint64_t subject;

	memset(out, 0, sizeof(*out));
	out->route = snapshot_match_route(s, req->host, req->host_len, req->path, req->path_len);
	if (settings->disabled) {
		out->verdict = out->route ? DECISION_ALLOW : DECISION_NO_ROUTE;
		return;
	}

	if (snapshot_check_access(s, out->route, &req->source, &out->access_list) !=
	    SNAPSHOT_ACCESS_ALLOW) {
		out->verdict = DECISION_DENY;
		return;
	}
	if (!out->route) {
		out->verdict = DECISION_NO_ROUTE;
		return;
	}
	rt = &out->route->u.route;
	if (!method_allowed(rt, req)) {
		out->verdict = DECISION_METHOD_NOT_ALLOWED;
		return;
	}

	if (req->client_key)
		client = snapshot_lookup_client(s, req->client_key, req->client_key_len);
	if (client) {
		out->client = client->res;
		if (client->disabled) {
			out->verdict = DECISION_ALLOW;
			return;
		}
	}

	/* Identified clients share one bucket per limit wherever they come
	 * from; anonymous traffic is bucketed per source address. */
	subject = client ? client->key_hash
			 : XXH3_64bits_withSeed(req->source.addr, sizeof(req->source.addr),
						req->source.family);

	/* A client without a limit of its own gets the default, like an
	 * unknown one. */
	own = client && client->rate_limit.id ? &client->rate_limit : &settings->default_rate_limit;
	out->verdict = DECISION_RATE_LIMITED;
	if (check_ref(s, own, client, req, lim, subject, now_ns, out))
		return;
	for (size_t i = 0; i < rt->n_rate_limits; i++)
		if (check_ref(s, &rt->rate_limits[i], client, req, lim, subject, now_ns, out))
			return;
	out->verdict = DECISION_ALLOW;
}
