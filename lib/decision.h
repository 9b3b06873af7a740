/* decision.h - the per-request policy decision both the proxy and the tools
 * use: access lists, route, method, client, rate limits, in that order.
 *
 * Pure function of (snapshot, limiter state, request, time): no locks, no
 * allocation but a thread's first call (its client and route memos, kept
 * per snapshot uid, so they never change a result). The caller holds the snapshot (an RCU read section) for as
 * long as it uses the resource pointers in the result.
 */
#ifndef SLUICE_DECISION_H
#define SLUICE_DECISION_H

#include <stddef.h>
#include <stdint.h>

#include "cidr.h"
#include "limiter.h"
#include "policy.h"
#include "snapshot.h"

/* Views into the caller's request; none is retained. */
struct decision_request {
	const char *host;        /* lower case, without port; may be empty */
	size_t host_len;
	const char *path;        /* path of the target, without query */
	size_t path_len;
	const char *method;
	size_t method_len;
	const char *client_key;  /* client-id header value; NULL when absent */
	size_t client_key_len;
	/* decision_client_hint(client_key, client_key_len) when the caller
	 * already has it; 0: decision_eval hashes the key itself. */
	uint64_t client_key_hash;
	struct cidr_addr source;
};

enum decision_verdict {
	DECISION_ALLOW = 0,
	DECISION_DENY,                /* access list: 403 */
	DECISION_NO_ROUTE,            /* 404 */
	DECISION_METHOD_NOT_ALLOWED,  /* 405 */
	DECISION_RATE_LIMITED,        /* 429 */
};

#define DECISION_MAX_SHADOW 4

/* Result of one decision. Resource pointers borrow from the snapshot. */
struct decision {
	enum decision_verdict verdict;
	const struct policy_res *route;        /* NULL when none matched */
	const struct policy_res *client;       /* NULL when not identified */
	const struct policy_res *access_list;  /* the list that refused */
	/* The limit that refused the request; when allowed, the checked limit
	 * with the fewest remaining requests (for the RateLimit headers). */
	const struct policy_res *limit;
	struct limiter_result limit_result;
	unsigned limits_checked;
	unsigned shadow_rejects;  /* SHADOW limits this request exceeded */
	/* The first DECISION_MAX_SHADOW of them, in evaluation order; the
	 * first min(shadow_rejects, DECISION_MAX_SHADOW) entries are set. */
	const struct policy_res *shadow[DECISION_MAX_SHADOW];
	unsigned limiter_full;    /* checks skipped: bucket table at its cap */
	uint64_t delay_ns;        /* pace the request (leaky buckets) */
	/* When client is set: the hash of the key that named it (what
	 * decision_client_hint returns), a stable per-key counter key that
	 * costs no read of the client resource. */
	uint64_t client_key_hash;
};

/* HTTP status for a verdict: 200, 403, 404, 405, 429. */
int decision_http_status(enum decision_verdict v);

/* The hash of a client-id value as decision_request.client_key_hash
 * takes it. Also starts loading the calling thread's memo entry for the
 * key, so a caller that knows the key early (right after parsing the
 * head) overlaps that cache miss with its own work. No other effect. */
uint64_t decision_client_hint(const char *key, size_t len);

/* Evaluates one request at now_ns. Order: Settings.disabled (everything
 * allowed); global and route access lists; route (404); route methods
 * (405); client by the client-id header value; rate limits: the client's
 * limit (or Settings.default_rate_limit for an unknown client or one
 * that names no limit) then the route's, each only when its selector matches and it is enforced by the
 * proxy. Buckets are per (limit, client), or per (limit, source address)
 * for unidentified clients. A disabled client skips rate limiting. The
 * first REJECT limit over its rate ends the evaluation with 429; SHADOW
 * limits only count. The calling thread must be RCU-registered. */
void decision_eval(const struct snapshot *s, struct limiter *lim,
		   const struct decision_request *req, uint64_t now_ns, struct decision *out);

#endif
