/* decision.c - evaluate one request against a snapshot and the limiter.
 *
 * Reads only immutable snapshot data and the limiter's atomic buckets, so
 * any number of workers run it at once without locks. See decision.h for
 * the evaluation order; docs/POLICY.md explains it for operators. Each
 * thread memoizes what it found for the clients it sees often; an entry
 * holds only for the snapshot (snapshot_uid) it was read from. The route
 * comes from snapshot_find_route(), which keeps a memo of the same kind.
 */
#include "decision.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "bytes.h"

/* ---- per-thread memo of client lookups ----
 *
 * Finding a client and its own limit walks the client index, the client
 * entry, the limit map and the limit entry: a chain of dependent cache
 * lines. Traffic is skewed (a few clients send most requests), so each
 * thread keeps what it found, keyed by the header value, in one cache line
 * per client: everything a decision needs of the client (so a hit reads
 * neither the index nor the client entry) and where its bucket was found
 * in the limiter (so a hit skips the bucket table's probe). An entry is
 * used only while the snapshot that produced it is the one being evaluated
 * (same uid), so a publish invalidates everything at once and no pointer
 * outlives the snapshot the caller holds. Frequent clients are kept
 * against one-off ones: a miss replaces an entry only once misses have
 * worn down the hits it earned. The set is picked by the client index's
 * own hash of the key (snapshot_client_key_hash), so a miss hashes the key
 * once.
 *
 * Sized for skewed traffic over many clients: under Zipf (s = 1) over
 * 100,000 clients the 2,048 busiest send 68% of requests, the 8,192
 * busiest 79% and the 16,384 busiest 85%. A direct-mapped 2,048-entry
 * memo held 58% (collisions cost the rest; policy_bench under callgrind),
 * 4,096 sets of two adjacent ways 77%; 8,192 sets (1 MiB per thread,
 * touched only where clients land) cut policy_bench's p75 by a fifth. A miss reads several dependent lines of the client index, mostly
 * from DRAM, and pushes other clients' lines out of cache; a hit reads one
 * set: two adjacent lines, which the L2 prefetcher fetches as a pair. */
#define MEMO_SETS 8192u
#define MEMO_SET_BITS 13
#define MEMO_WAYS 2u
#define MEMO_KEY_MAX 25u

/* One memoized client: one cache line. Owned by its thread's memo. The key
 * bytes are compared in full: a hash match alone would let a crafted key
 * borrow another client's identity. */
struct memo_ent {
	uint64_t snap_uid;                /* 0: empty */
	const struct policy_res *res;     /* the client */
	const struct snapshot_limit *own; /* NULL: no limit of its own or default */
	uint64_t own_key;                 /* bucket of `own` for this client */
	uint32_t own_slot;                /* limiter_check_hint() hint for own_key */
	uint8_t key_len;
	uint8_t hits;
	uint8_t disabled;
	char key[MEMO_KEY_MAX];
};
_Static_assert(sizeof(struct memo_ent) == 64, "a memo entry is one cache line");

/* A thread's memo: allocated on its first decision, freed when the thread
 * exits (pthread key destructor). */
struct memo {
	struct memo_ent ent[MEMO_SETS][MEMO_WAYS];
};
_Static_assert(MEMO_SETS == 1u << MEMO_SET_BITS && MEMO_WAYS == 2,
	       "memo_set takes the top MEMO_SET_BITS bits; memo_find and memo_store look at two ways");

static __thread struct memo *tl_memo;
static pthread_key_t memo_key;
static pthread_once_t memo_once = PTHREAD_ONCE_INIT;
static bool memo_key_ok;

static void memo_destroy(void *m)
{
	free(m);
}

static void memo_key_init(void)
{
	memo_key_ok = pthread_key_create(&memo_key, memo_destroy) == 0;
}

/* The calling thread's memo; NULL when it cannot have one (no memory). */
static struct memo *memo_get(void)
{
	struct memo *m = tl_memo;

	if (__builtin_expect(m != NULL, 1))
		return m;
	pthread_once(&memo_once, memo_key_init);
	if (!memo_key_ok || !(m = aligned_alloc(64, sizeof(*m))))
		return NULL;
	memset(m, 0, sizeof(*m));
	if (pthread_setspecific(memo_key, m) != 0) {
		free(m);
		return NULL;
	}
	tl_memo = m;
	return m;
}

/* The set of a key hashed h: its top bits, as uniform as the low ones
 * (XXH3), which pick the client index's chunk slot. */
static inline struct memo_ent *memo_set(struct memo *m, uint64_t h)
{
	return m->ent[h >> (64 - MEMO_SET_BITS)];
}

static inline bool memo_is(const struct memo_ent *e, uint64_t uid, const char *key, size_t len)
{
	return e->snap_uid == uid && e->key_len == len && bytes_eq_short(e->key, key, len);
}

static inline struct memo_ent *memo_find(struct memo *m, uint64_t uid, uint64_t h,
					 const char *key, size_t len)
{
	struct memo_ent *set = memo_set(m, h), *e;

	if (memo_is(&set[0], uid, key, len))
		e = &set[0];
	else if (memo_is(&set[1], uid, key, len))
		e = &set[1];
	else
		return NULL;
	if (e->hits < UINT8_MAX)
		e->hits++;
	return e;
}

/* The entry now holding the key, or NULL when the set's owners stay: a way
 * that is empty or from another snapshot is taken, else the way with fewer
 * hits once misses have worn them down. */
static struct memo_ent *memo_store(struct memo *m, uint64_t uid, uint64_t h, const char *key,
				   size_t len, const struct snapshot_client *client,
				   const struct snapshot_limit *own, uint64_t own_key)
{
	struct memo_ent *set = memo_set(m, h), *e = &set[0];

	if (set[0].snap_uid == uid)
		e = set[1].snap_uid != uid || set[1].hits < set[0].hits ? &set[1] : &set[0];
	if (e->snap_uid == uid && e->hits > 0) {
		e->hits--;
		return NULL;
	}
	e->snap_uid = uid;
	e->res = client->res;
	e->own = own;
	e->own_key = own_key;
	e->own_slot = 0;
	e->key_len = (uint8_t)len;
	e->hits = 0;
	e->disabled = client->disabled;
	memcpy(e->key, key, len);
	return e;
}

uint64_t decision_client_hint(const char *key, size_t len)
{
	uint64_t h = snapshot_client_key_hash(key, len);
	struct memo *m = tl_memo;

	if (m && len <= MEMO_KEY_MAX) {
		/* Both ways: memo_find reads the second when the first is
		 * another key. */
		__builtin_prefetch(memo_set(m, h));
		__builtin_prefetch(memo_set(m, h) + 1);
	}
	return h;
}

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

/* The client a request names, as the rest of the decision sees it: from
 * the memo or the client index. Lives on the stack for one decision. */
struct who {
	const struct policy_res *res;     /* NULL: not identified */
	/* The client's index entry when it was looked up (NULL on a memo
	 * hit): its key_hash is on a line just read, unlike res->key_hash. */
	const struct snapshot_client *client;
	const struct snapshot_limit *own; /* its own limit (or the default); NULL: none */
	uint64_t own_key;                 /* bucket of `own` */
	uint32_t *own_slot;               /* where own_key's limiter hint is kept */
	uint64_t key_hash;                /* of the request's client key */
	bool disabled;
};

static bool selector_matches(const struct policy_selector *sel, const struct who *w,
			     const struct decision_request *req)
{
	/* The hash settles almost every mismatch; the id compare makes it
	 * exact. (A client's key_hash is policy_key_hash of its id, as a
	 * reference's is.) */
	if (sel->client.id && (!w->res || w->res->key_hash != sel->client.key_hash ||
			       strcmp(w->res->id, sel->client.id) != 0))
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

/* Runs one limit on bucket `key` (its limiter hint in *slot, or NULL);
 * returns true when it refuses the request for good. Inlined: a call with
 * its spills cost a tenth of a cached decision. */
static inline __attribute__((always_inline)) bool
run_limit(const struct snapshot_limit *sl, struct limiter *lim, uint64_t key, uint32_t *slot,
	  uint64_t now_ns, struct decision *out)
{
	const struct policy_res *rl_res = sl->res;
	struct limiter_result res;
	int r;

	r = slot ? limiter_check_hint(lim, key, &sl->plan, now_ns, slot, &res)
		 : limiter_check_plan(lim, key, &sl->plan, now_ns, &res);
	if (r < 0) {
		/* Bucket table at its cap: fail open, but count it. */
		out->limiter_full++;
		return false;
	}
	out->limits_checked++;

	if (!res.allowed) {
		if (sl->shadow) {
			if (out->shadow_rejects < DECISION_MAX_SHADOW)
				out->shadow[out->shadow_rejects] = rl_res;
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

/* Returns true when limit sl (may be NULL) applies to this request and
 * refuses it. `key` is its bucket: limiter_key(limit key hash, subject). */
static inline __attribute__((always_inline)) bool
check_limit(const struct snapshot_limit *sl, uint64_t key, uint32_t *slot, const struct who *w,
	    const struct decision_request *req, struct limiter *lim, uint64_t now_ns,
	    struct decision *out)
{
	if (!sl || !sl->proxy)
		return false;
	if (!sl->selects_all && !selector_matches(&sl->res->u.rate_limit.sel, w, req))
		return false;
	return run_limit(sl, lim, key, slot, now_ns, out);
}

/* Identified clients share one bucket per limit wherever they come from;
 * anonymous traffic is bucketed per source address. */
static uint64_t subject_of(const struct who *w, const struct decision_request *req)
{
	if (w->client)
		return w->client->key_hash;
	if (w->res)
		return w->res->key_hash;
	return XXH3_64bits_withSeed(req->source.addr, sizeof(req->source.addr),
				    req->source.family);
}

/* Fills *w with the client named by the request, its own limit (the
 * default when it names none) and that limit's bucket: from this thread's
 * memo when it saw the key in this snapshot, else looked up (and
 * memoized). w->own stays NULL for a disabled client and when no limit
 * applies. *spare_slot holds the limiter hint when no memo entry does. */
static void find_client(const struct snapshot *s, const struct policy_settings *settings,
			const struct decision_request *req, struct who *w, uint32_t *spare_slot)
{
	const struct snapshot_client *client = NULL;
	const struct policy_ref *ref;
	struct memo *m = NULL;
	struct memo_ent *e;
	uint64_t h = 0, uid = 0;

	w->own_slot = spare_slot;
	if (req->client_key) {
		h = req->client_key_hash ? req->client_key_hash
					 : snapshot_client_key_hash(req->client_key, req->client_key_len);
		w->key_hash = h;
		if (req->client_key_len <= MEMO_KEY_MAX && (m = memo_get())) {
			uid = snapshot_uid(s);
			e = memo_find(m, uid, h, req->client_key, req->client_key_len);
			if (e) {
				w->res = e->res;
				w->disabled = e->disabled;
				w->own = e->own;
				w->own_key = e->own_key;
				w->own_slot = &e->own_slot;
				return;
			}
		}
		client = snapshot_lookup_client_hash(s, req->client_key, req->client_key_len, h);
	}
	w->client = client;
	w->res = client ? client->res : NULL;
	w->disabled = client && client->disabled;
	if (!w->disabled) {
		/* A client without a limit of its own gets the default, like
		 * an unknown one. */
		ref = client && client->rate_limit.id ? &client->rate_limit
						      : &settings->default_rate_limit;
		w->own = snapshot_lookup_limit(s, ref);
		if (w->own)
			w->own_key = limiter_key(ref->key_hash, subject_of(w, req));
	}
	/* Unknown keys are not memoized: anyone can send a new one. */
	if (m && client &&
	    (e = memo_store(m, uid, h, req->client_key, req->client_key_len, client, w->own,
			    w->own_key)))
		w->own_slot = &e->own_slot;
}

/* shadow[] is not cleared: only its first shadow_rejects entries count. */
_Static_assert(sizeof(struct decision) == 120 + sizeof(((struct decision *)0)->shadow),
	       "decision_eval clears every field: add new ones there");

void decision_eval(const struct snapshot *s, struct limiter *lim,
		   const struct decision_request *req, uint64_t now_ns, struct decision *out)
{
	const struct policy_settings *settings = snapshot_settings(s);
	struct who w = { 0 };
	struct snapshot_route route_copy;
	const struct snapshot_route *sr;
	const struct policy_route *rt;
	uint32_t spare_slot = 0;

	/* Field by field: gcc turns a whole-struct clear into `rep stos`,
	 * whose start-up alone is a good part of this function. */
	out->verdict = DECISION_ALLOW;
	out->route = NULL;
	out->client = NULL;
	out->access_list = NULL;
	out->limit = NULL;
	out->limit_result.allowed = false;
	out->limit_result.limit = 0;
	out->limit_result.remaining = 0;
	out->limit_result.reset_ns = 0;
	out->limit_result.retry_after_ns = 0;
	out->limit_result.delay_ns = 0;
	out->limits_checked = 0;
	out->shadow_rejects = 0;
	out->limiter_full = 0;
	out->delay_ns = 0;
	out->client_key_hash = 0;
	/* The client and its first bucket are the reads most likely to miss
	 * the cache, each depending on the one before: start them first, so
	 * the route and access checks below run while they are on their way.
	 * Lookups only: the order of the checks is unchanged. */
	if (!settings->disabled) {
		find_client(s, settings, req, &w, &spare_slot);
		if (w.own)
			limiter_prefetch(lim, w.own_key);
	}

	/* The route's index entry (or this thread's memo copy of it) says
	 * whether it has methods, lists or limits of its own: a plain route's
	 * resource is not read. */
	sr = snapshot_find_route(s, req->host, req->host_len, req->path, req->path_len,
				 &route_copy)
		     ? &route_copy
		     : NULL;
	out->route = sr ? sr->res : NULL;
	if (settings->disabled) {
		out->verdict = out->route ? DECISION_ALLOW : DECISION_NO_ROUTE;
		return;
	}

	/* Lists of the route's own, or a source the global lists may reach:
	 * the full check. */
	if ((!snapshot_global_access_open(s, &req->source) || (sr && !sr->no_access_lists)) &&
	    snapshot_check_access(s, sr && !sr->no_access_lists ? sr->res : NULL, &req->source,
				  &out->access_list) != SNAPSHOT_ACCESS_ALLOW) {
		out->verdict = DECISION_DENY;
		return;
	}
	if (!out->route) {
		out->verdict = DECISION_NO_ROUTE;
		return;
	}
	rt = &out->route->u.route;
	if (!sr->all_methods && !method_allowed(rt, req)) {
		out->verdict = DECISION_METHOD_NOT_ALLOWED;
		return;
	}

	if (w.res) {
		out->client = w.res;
		out->client_key_hash = w.key_hash;
		if (w.disabled) {
			out->verdict = DECISION_ALLOW;
			return;
		}
	}

	out->verdict = DECISION_RATE_LIMITED;
	if (check_limit(w.own, w.own_key, w.own_slot, &w, req, lim, now_ns, out))
		return;
	if (!sr->no_rate_limits) {
		uint64_t subject = subject_of(&w, req);

		for (size_t i = 0; i < rt->n_rate_limits; i++) {
			const struct policy_ref *ref = &rt->rate_limits[i];

			if (ref->id && check_limit(snapshot_lookup_limit(s, ref),
						   limiter_key(ref->key_hash, subject), NULL, &w,
						   req, lim, now_ns, out))
				return;
		}
	}
	out->verdict = DECISION_ALLOW;
}
