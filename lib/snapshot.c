/* snapshot.c - immutable ruleset snapshots built by path copying, published
 * with RCU. Invariants: a built snapshot never changes; its indexes (client
 * keys, routes, limits with their plans, reference counts, and the flat
 * client and route indexes that mirror two of them) agree with its resource
 * map; every reference names an existing resource of the right kind; a
 * failed build releases everything it took. */
#if defined(__SANITIZE_THREAD__)
#define SNAPSHOT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SNAPSHOT_TSAN 1
#endif
#endif

/* _LGPL_SOURCE, in this file only: liburcu then inlines its read side
 * (urcu/static/urcu-memb.h) into snapshot_read_lock/unlock, where the
 * library's exported urcu_memb_read_lock/unlock cost a PLT call and a
 * __tls_get_addr call each: ~80 of the ~960 instructions a cached
 * decision took (callgrind). Licence:
 * liburcu's README allows _LGPL_SOURCE for "LGPL or GPL compatible" code;
 * liburcu is LGPL-2.1-or-later and our Apache-2.0 is compatible with its
 * v3; independently, what gets inlined is only the read-side fast path,
 * functions of ten lines or less, which LGPL-2.1 section 5 leaves
 * unrestricted. URCU_INLINE_SMALL_FUNCTIONS, liburcu's licence-neutral
 * switch, does not cover the read side in 0.13. The inlined code must match
 * the library's major version: Debian rebuilds us against liburcu8. Every
 * other urcu call here (register, call_rcu, synchronize, barrier) stays a
 * library call. Not under ThreadSanitizer: liburcu's read side synchronizes
 * with volatile accesses and fences, which TSan cannot follow once
 * instrumented; its model of the library (below) wants it opaque. */
#ifndef SNAPSHOT_TSAN
#define _LGPL_SOURCE
#endif
#include "snapshot.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>
#include <xxhash.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "bytes.h"
#include "pmap.h"

/* Route depths are bounded by the path length: "/a/b" has 2 segments. */
#define ROUTE_DEPTH_MAX (POLICY_MAX_PATH_LEN / 2 + 1)
/* Outgoing references of one resource: a route's upstream plus its lists. */
#define OUT_REFS_MAX (2 + 2 * POLICY_MAX_REFS)

#ifdef SNAPSHOT_TSAN
/* liburcu is not instrumented, so ThreadSanitizer cannot see that a grace
 * period orders every read section before the free that follows it. Model
 * exactly that guarantee: each read section releases this address when it
 * ends, and reclamation acquires it before freeing. Any read section that
 * could still see the old snapshot ended before the grace period did, so
 * its release is ordered before the acquire; the writer's release in
 * publish likewise models call_rcu() handing the snapshot to the callback
 * thread. */
void __tsan_release(void *addr);
void __tsan_acquire(void *addr);
static char snapshot_rcu_sync;
#define TSAN_RELEASE() __tsan_release(&snapshot_rcu_sync)
#define TSAN_ACQUIRE() __tsan_acquire(&snapshot_rcu_sync)
#else
#define TSAN_RELEASE() ((void)0)
#define TSAN_ACQUIRE() ((void)0)
#endif

/* An access list and one of its tables; borrowed from the resource. */
struct list_table {
	const struct policy_res *list;
	const struct cidr_table *table;
};

/* One ruleset at one version. Owned by its references (snapshot_ref/unref,
 * a cell holds one); lives until the last is dropped, after an RCU grace
 * period when it was published. */
struct snapshot {
	struct snapshot_head head; /* first: snapshot.h's inline accessors read it */
	uint32_t refcnt;      /* atomic */
	uint32_t rcu_queued;  /* atomic: rcu head in use by call_rcu */
	uint64_t version;
	struct pmap *res;     /* (kind, id) -> struct policy_res */
	struct pmap *clients; /* client key bytes -> struct client_ent */
	struct pmap *routes;  /* (host, match_prefix) -> struct route_ent */
	struct pmap *refs;    /* referenced (kind, id) -> struct ref_ent */
	/* Rate limits, access lists, upstreams and settings again, (kind, id)
	 * -> policy_res: a few entries, so the request path's lookups of them
	 * walk a shallow trie instead of the one that also holds every client. */
	struct pmap *small;
	/* Rate limits once more, (kind, id) -> struct limit_ent: the resource
	 * with its limiter plan, so a request does no division to set up. */
	struct pmap *limits;
	/* Flat copies of the client and route maps for the request path
	 * (pmap.h, pindex): three cache lines per lookup instead of two per
	 * trie level. Same keys and hashes; values borrowed from the maps. */
	struct pindex *client_ix; /* client_ix_hash(key) -> struct client_ent */
	struct pindex *route_ix;  /* route hash -> struct route_ent */
	const struct policy_res *settings; /* borrowed from res; NULL: defaults */
	/* settings.access_lists resolved when built (borrowed from res), as
	 * (list, table) pairs in order, skipping absent tables: the request
	 * path neither looks them up nor reads the list resources. */
	struct list_table global_deny[2 * POLICY_MAX_REFS], global_allow[2 * POLICY_MAX_REFS];
	size_t n_global_deny, n_global_allow;
	size_t nodes_created; /* map nodes allocated when this one was built */
	size_t kind_count[POLICY_KIND_MAX + 1];
	unsigned route_depth_max; /* deepest match_depth of any route */
	uint32_t route_depth_count[ROUTE_DEPTH_MAX + 1];
	struct rcu_head rcu;
	char ruleset[POLICY_RULESET_NAME_MAX_LEN + 1];
};
_Static_assert(offsetof(struct snapshot, head) == 0, "snapshot.h reads the head at offset 0");

/* The published pointer. Owned by its creator until snapshot_cell_free. */
struct snapshot_cell {
	struct snapshot *cur; /* atomic; holds one reference */
};

/* One client key in the index. Immutable; owned by the client-map nodes
 * that hold it, lives until the last of them is freed. The key bytes are
 * inline: a lookup compares them without touching the (colder) resource. */
struct client_ent {
	uint32_t refcnt; /* atomic */
	uint32_t key_len;
	struct snapshot_client c; /* c.res holds one reference */
	char key[];      /* key bytes, NUL, then c.rate_limit.id and its NUL */
};

/* How many resources reference (kind, id). Immutable (shared by snapshots):
 * a change stores a new entry. Owned by the ref-map nodes holding it. */
struct ref_ent {
	uint32_t refcnt; /* atomic */
	uint32_t count;
	enum policy_kind kind;
	size_t id_len;
	char id[];
};

/* One rate limit in the limit index. Immutable; owned by the limit-map
 * nodes holding it, lives until the last of them is freed. */
struct limit_ent {
	uint32_t refcnt; /* atomic */
	struct snapshot_limit l; /* l.res holds one reference */
};

/* One route in the route index: its key bytes inline, so that matching a
 * candidate reads this one line rather than the resource and its strings.
 * Immutable; owned by the route-map nodes holding it, lives until the last
 * of them is freed. */
struct route_ent {
	uint32_t refcnt; /* atomic */
	uint16_t host_len;
	uint16_t prefix_len;
	struct snapshot_route r; /* r.res holds one reference */
	char key[];      /* host, NUL, match_prefix, NUL */
};

/* Lookup key of the resource and reference maps; on the caller's stack
 * for the duration of one call. */
struct res_key {
	enum policy_kind kind;
	const char *id;
	size_t id_len;
};

/* Lookup key of the client map; on the caller's stack for one call. */
struct bytes_key {
	const char *p;
	size_t len;
};

/* Lookup key of the route map; on the caller's stack for one call. */
struct route_key {
	const char *host;
	size_t host_len;
	const char *prefix;
	size_t prefix_len;
};

static size_t live_snapshots;
static uint64_t next_uid = 1;

static const struct policy_settings default_settings = {
	.client_id_header = POLICY_DEFAULT_CLIENT_ID_HEADER,
	.max_body_bytes = POLICY_DEFAULT_MAX_BODY_BYTES,
	.request_timeout_ms = POLICY_DEFAULT_REQUEST_TIMEOUT_MS,
};

/* ---- map value operations ---- */

static bool res_match(const void *val, const void *key)
{
	const struct policy_res *r = val;
	const struct res_key *k = key;

	return r->kind == k->kind && r->id_len == k->id_len && memcmp(r->id, k->id, k->id_len) == 0;
}

static bool res_same(const void *a, const void *b)
{
	const struct policy_res *ra = a, *rb = b;

	return ra->kind == rb->kind && ra->id_len == rb->id_len &&
	       memcmp(ra->id, rb->id, ra->id_len) == 0;
}

static void res_ref(void *v)
{
	policy_res_ref(v);
}

static void res_unref(void *v)
{
	policy_res_unref(v);
}

static const struct pmap_ops res_ops = {
	.match = res_match, .same_key = res_same, .val_ref = res_ref, .val_unref = res_unref,
};

static bool client_match(const void *val, const void *key)
{
	const struct client_ent *c = val;
	const struct bytes_key *k = key;

	return c->key_len == k->len && memcmp(c->key, k->p, k->len) == 0;
}

static bool client_same(const void *a, const void *b)
{
	const struct client_ent *ca = a, *cb = b;

	return ca->key_len == cb->key_len && memcmp(ca->key, cb->key, ca->key_len) == 0;
}

static void client_ref(void *v)
{
	__atomic_add_fetch(&((struct client_ent *)v)->refcnt, 1, __ATOMIC_RELAXED);
}

static void client_unref(void *v)
{
	struct client_ent *c = v;

	if (__atomic_sub_fetch(&c->refcnt, 1, __ATOMIC_ACQ_REL) == 0) {
		policy_res_unref((struct policy_res *)c->c.res);
		free(c);
	}
}

static const struct pmap_ops client_ops = {
	.match = client_match, .same_key = client_same,
	.val_ref = client_ref, .val_unref = client_unref,
};

/* Routes are keyed by (host, match_prefix). */
static inline bool route_is(const struct route_ent *e, const char *host, size_t host_len,
			    const char *prefix, size_t prefix_len)
{
	return e->host_len == host_len && e->prefix_len == prefix_len &&
	       bytes_eq_short(e->key, host, host_len) &&
	       bytes_eq_short(e->key + host_len + 1, prefix, prefix_len);
}

static bool route_match(const void *val, const void *key)
{
	const struct route_key *k = key;

	return route_is(val, k->host, k->host_len, k->prefix, k->prefix_len);
}

static bool route_same(const void *a, const void *b)
{
	const struct route_ent *ea = a, *eb = b;

	return ea->host_len == eb->host_len && ea->prefix_len == eb->prefix_len &&
	       memcmp(ea->key, eb->key, (size_t)ea->host_len + 1 + ea->prefix_len) == 0;
}

static void route_ent_ref(void *v)
{
	__atomic_add_fetch(&((struct route_ent *)v)->refcnt, 1, __ATOMIC_RELAXED);
}

static void route_ent_unref(void *v)
{
	struct route_ent *e = v;

	if (__atomic_sub_fetch(&e->refcnt, 1, __ATOMIC_ACQ_REL) == 0) {
		policy_res_unref((struct policy_res *)e->r.res);
		free(e);
	}
}

static const struct pmap_ops route_ops = {
	.match = route_match, .same_key = route_same,
	.val_ref = route_ent_ref, .val_unref = route_ent_unref,
};

static bool ref_match(const void *val, const void *key)
{
	const struct ref_ent *r = val;
	const struct res_key *k = key;

	return r->kind == k->kind && r->id_len == k->id_len && memcmp(r->id, k->id, k->id_len) == 0;
}

static bool ref_same(const void *a, const void *b)
{
	const struct ref_ent *ra = a, *rb = b;

	return ra->kind == rb->kind && ra->id_len == rb->id_len &&
	       memcmp(ra->id, rb->id, ra->id_len) == 0;
}

static void ref_ent_ref(void *v)
{
	__atomic_add_fetch(&((struct ref_ent *)v)->refcnt, 1, __ATOMIC_RELAXED);
}

static void ref_ent_unref(void *v)
{
	struct ref_ent *r = v;

	if (__atomic_sub_fetch(&r->refcnt, 1, __ATOMIC_ACQ_REL) == 0)
		free(r);
}

static bool limit_match(const void *val, const void *key)
{
	return res_match(((const struct limit_ent *)val)->l.res, key);
}

static bool limit_same(const void *a, const void *b)
{
	return res_same(((const struct limit_ent *)a)->l.res, ((const struct limit_ent *)b)->l.res);
}

static void limit_ref(void *v)
{
	__atomic_add_fetch(&((struct limit_ent *)v)->refcnt, 1, __ATOMIC_RELAXED);
}

static void limit_unref(void *v)
{
	struct limit_ent *e = v;

	if (__atomic_sub_fetch(&e->refcnt, 1, __ATOMIC_ACQ_REL) == 0) {
		policy_res_unref((struct policy_res *)e->l.res);
		free(e);
	}
}

static const struct pmap_ops limit_ops = {
	.match = limit_match, .same_key = limit_same, .val_ref = limit_ref, .val_unref = limit_unref,
};

static const struct pmap_ops ref_ops = {
	.match = ref_match, .same_key = ref_same, .val_ref = ref_ent_ref, .val_unref = ref_ent_unref,
};

/* The flat client index hashes keys with XXH3, not with the clients map's
 * FNV-1a (policy_client_key_hash, fixed by the eBPF ABI): uniform bits to
 * index with, and a quarter of the latency for a short key. */
static inline uint64_t client_ix_hash(const char *key, size_t len)
{
	return snapshot_client_key_hash(key, len);
}

/* The route hash covers host and prefix without building "host\0prefix":
 * the host is hashed once per lookup and each candidate prefix slice in
 * place; the two hashes are independent (not seeded one by the other), so
 * the CPU computes them side by side. The odd multiplier keeps (a, b) and
 * (b, a) apart; the result stays uniform, as pindex needs. */
static uint64_t host_seed(const char *host, size_t host_len)
{
	return XXH3_64bits(host, host_len);
}

static uint64_t route_hash(uint64_t seed, const char *prefix, size_t prefix_len)
{
	return seed ^ (XXH3_64bits(prefix, prefix_len) * 0x9e3779b97f4a7c15ull);
}

static uint64_t route_res_hash(const struct policy_res *r)
{
	const struct policy_route *rt = &r->u.route;

	return route_hash(host_seed(rt->host, strlen(rt->host)), rt->match_prefix,
			  rt->match_prefix_len);
}

static struct route_key route_res_key(const struct policy_res *r)
{
	const struct policy_route *rt = &r->u.route;

	return (struct route_key){ rt->host, strlen(rt->host), rt->match_prefix,
				   rt->match_prefix_len };
}

/* ---- snapshot lifetime ---- */

static struct snapshot *snap_alloc(void)
{
	struct snapshot *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->refcnt = 1;
	s->head.uid = __atomic_fetch_add(&next_uid, 1, __ATOMIC_RELAXED);
	s->head.settings = &default_settings;
	memset(s->head.v4_open, 0xff, sizeof(s->head.v4_open)); /* no lists yet */
	__atomic_add_fetch(&live_snapshots, 1, __ATOMIC_RELAXED);
	return s;
}

static void snap_free(struct snapshot *s)
{
	pmap_unref(s->res);
	pmap_unref(s->clients);
	pmap_unref(s->routes);
	pmap_unref(s->refs);
	pmap_unref(s->small);
	pmap_unref(s->limits);
	pindex_free(s->client_ix);
	pindex_free(s->route_ix);
	free(s);
	__atomic_sub_fetch(&live_snapshots, 1, __ATOMIC_RELAXED);
}

struct snapshot *snapshot_ref(const struct snapshot *s)
{
	struct snapshot *ss = (struct snapshot *)s;

	__atomic_add_fetch(&ss->refcnt, 1, __ATOMIC_RELAXED);
	return ss;
}

void snapshot_unref(struct snapshot *s)
{
	if (s && __atomic_sub_fetch(&s->refcnt, 1, __ATOMIC_ACQ_REL) == 0)
		snap_free(s);
}

size_t snapshot_live_count(void)
{
	return __atomic_load_n(&live_snapshots, __ATOMIC_RELAXED);
}

static int empty_index(struct pindex **ret)
{
	struct pindex_edit *e;
	bool refill;
	int r = pindex_edit_begin(NULL, 0, &e, &refill);

	return r < 0 ? r : pindex_edit_end(e, ret);
}

int snapshot_new_empty(const char *ruleset, struct snapshot **ret)
{
	struct snapshot *s;

	if (!ruleset || !policy_ruleset_name_valid(ruleset))
		return -EINVAL;
	s = snap_alloc();
	if (!s)
		return -ENOMEM;
	strcpy(s->ruleset, ruleset);
	s->res = pmap_new(&res_ops);
	s->clients = pmap_new(&client_ops);
	s->routes = pmap_new(&route_ops);
	s->refs = pmap_new(&ref_ops);
	s->small = pmap_new(&res_ops);
	s->limits = pmap_new(&limit_ops);
	if (!s->res || !s->clients || !s->routes || !s->refs || !s->small || !s->limits ||
	    empty_index(&s->client_ix) < 0 || empty_index(&s->route_ix) < 0) {
		snap_free(s);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

/* ---- building: apply a set of changes to a base snapshot ---- */

/* One outgoing reference of a resource, with the field that holds it;
 * in a caller's stack array, borrowing from the resource. */
struct out_ref {
	enum policy_kind kind;
	const struct policy_ref *ref;
	const char *field;
	int index; /* into a repeated field; -1 for a singular one */
};

static void out_add(struct out_ref *out, size_t *n, enum policy_kind kind,
		    const struct policy_ref *ref, const char *field, int index)
{
	if (!ref->id || *n >= OUT_REFS_MAX)
		return;
	out[(*n)++] = (struct out_ref){ kind, ref, field, index };
}

/* Lists every reference r makes. Returns false when r makes more than the
 * caps allow (validation upstream should have refused it). */
static bool res_out_refs(const struct policy_res *r, struct out_ref *out, size_t *n)
{
	*n = 0;
	switch (r->kind) {
	case POLICY_KIND_CLIENT:
		out_add(out, n, POLICY_KIND_RATE_LIMIT, &r->u.client.rate_limit, "rate_limit", -1);
		return true;
	case POLICY_KIND_RATE_LIMIT:
		out_add(out, n, POLICY_KIND_CLIENT, &r->u.rate_limit.sel.client, "selector.client",
			-1);
		return true;
	case POLICY_KIND_ROUTE: {
		const struct policy_route *rt = &r->u.route;

		if (rt->n_rate_limits > POLICY_MAX_REFS || rt->n_access_lists > POLICY_MAX_REFS)
			return false;
		if (rt->backend == POLICY_BACKEND_UPSTREAM)
			out_add(out, n, POLICY_KIND_UPSTREAM, &rt->upstream, "upstream", -1);
		for (size_t i = 0; i < rt->n_rate_limits; i++)
			out_add(out, n, POLICY_KIND_RATE_LIMIT, &rt->rate_limits[i], "rate_limits",
				(int)i);
		for (size_t i = 0; i < rt->n_access_lists; i++)
			out_add(out, n, POLICY_KIND_ACCESS_LIST, &rt->access_lists[i],
				"access_lists", (int)i);
		return true;
	}
	case POLICY_KIND_SETTINGS: {
		const struct policy_settings *st = &r->u.settings;

		if (st->n_access_lists > 2 * POLICY_MAX_REFS)
			return false;
		out_add(out, n, POLICY_KIND_RATE_LIMIT, &st->default_rate_limit,
			"default_rate_limit", -1);
		for (size_t i = 0; i < st->n_access_lists; i++)
			out_add(out, n, POLICY_KIND_ACCESS_LIST, &st->access_lists[i],
				"access_lists", (int)i);
		return true;
	}
	default:
		return true;
	}
}

/* Is out[i] the first reference to its target in out[0..i]? Referrers are
 * counted once per resource however often they name a target. */
static bool out_first(const struct out_ref *out, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (out[j].kind == out[i].kind && strcmp(out[j].ref->id, out[i].ref->id) == 0)
			return false;
	return true;
}

/* The in-progress next snapshot: one open edit per map. Lives on the
 * stack of build_next(). */
struct builder {
	struct snapshot *next;
	struct pmap_edit *res, *clients, *routes, *refs, *small, *limits;
	struct pindex_edit *client_ix, *route_ix; /* mirror clients and routes */
	struct policy_errs *errs;
	bool cap_hit;
};

static const struct policy_res *edit_get_res(struct pmap_edit *e, enum policy_kind kind,
					     const char *id, size_t id_len, uint64_t hash)
{
	struct res_key k = { kind, id, id_len };

	return pmap_edit_get(e, hash, &k);
}

static int refs_adjust(struct builder *b, enum policy_kind kind, const char *id, int delta)
{
	struct res_key k = { kind, id, strlen(id) };
	uint64_t h = policy_key_hash(kind, id, k.id_len);
	const struct ref_ent *old = pmap_edit_get(b->refs, h, &k);
	uint32_t count = old ? old->count : 0;
	struct ref_ent *e;
	int r;

	assert(delta > 0 || count > 0);
	count += delta;
	if (count == 0)
		return pmap_edit_del(b->refs, h, &k);
	e = malloc(sizeof(*e) + k.id_len + 1);
	if (!e)
		return -ENOMEM;
	e->refcnt = 0; /* the map takes the only reference */
	e->count = count;
	e->kind = kind;
	e->id_len = k.id_len;
	memcpy(e->id, id, k.id_len + 1);
	r = pmap_edit_put(b->refs, h, &k, e);
	if (r < 0)
		free(e);
	return r;
}

static int refs_of(const struct builder *b, enum policy_kind kind, const char *id)
{
	struct res_key k = { kind, id, strlen(id) };
	const struct ref_ent *e = pmap_edit_get(b->refs, policy_key_hash(kind, id, k.id_len), &k);

	return e ? (int)e->count : 0;
}

static void count_adjust(struct builder *b, const struct policy_res *r, int delta)
{
	struct snapshot *n = b->next;

	if (delta > 0)
		n->kind_count[r->kind]++;
	else
		n->kind_count[r->kind]--;
	if (r->kind == POLICY_KIND_ROUTE) {
		unsigned d = r->u.route.match_depth;

		n->route_depth_count[d < ROUTE_DEPTH_MAX ? d : ROUTE_DEPTH_MAX] += (uint32_t)delta;
	}
	if (r->kind == POLICY_KIND_SETTINGS)
		n->settings = delta > 0 ? r : NULL;
}

/* Takes a resource that is leaving the ruleset (removed or replaced) out of
 * every index. Its entry in the resource map is handled by the caller. */
static int unindex(struct builder *b, const struct policy_res *old)
{
	struct out_ref out[OUT_REFS_MAX];
	size_t n;
	int r;

	if (old->kind == POLICY_KIND_CLIENT) {
		const struct policy_client *c = &old->u.client;

		for (size_t i = 0; i < c->n_keys; i++) {
			struct bytes_key k = { c->keys[i], strlen(c->keys[i]) };
			const struct client_ent *e = pmap_edit_get(b->clients, c->key_hashes[i], &k);

			if (!e || e->c.res != old)
				continue;
			/* -ENOENT: an entry its full chunk dropped (see pindex). */
			r = pindex_edit_remove(b->client_ix, client_ix_hash(k.p, k.len), e);
			if (r < 0 && r != -ENOENT)
				return r;
			r = pmap_edit_del(b->clients, c->key_hashes[i], &k);
			if (r < 0)
				return r;
		}
	} else if (old->kind == POLICY_KIND_ROUTE) {
		struct route_key k = route_res_key(old);
		uint64_t h = route_res_hash(old);

		const struct route_ent *e = pmap_edit_get(b->routes, h, &k);

		if (e && e->r.res == old) {
			r = pindex_edit_remove(b->route_ix, h, e);
			if (r < 0 && r != -ENOENT)
				return r;
			r = pmap_edit_del(b->routes, h, &k);
			if (r < 0)
				return r;
		}
	} else {
		struct res_key k = { old->kind, old->id, old->id_len };

		if (pmap_edit_get(b->small, old->key_hash, &k) == old) {
			r = pmap_edit_del(b->small, old->key_hash, &k);
			if (r < 0)
				return r;
		}
		if (old->kind == POLICY_KIND_RATE_LIMIT) {
			const struct limit_ent *le = pmap_edit_get(b->limits, old->key_hash, &k);

			if (le && le->l.res == old) {
				r = pmap_edit_del(b->limits, old->key_hash, &k);
				if (r < 0)
					return r;
			}
		}
	}
	res_out_refs(old, out, &n);
	for (size_t i = 0; i < n; i++) {
		if (!out_first(out, i))
			continue;
		r = refs_adjust(b, out[i].kind, out[i].ref->id, -1);
		if (r < 0)
			return r;
	}
	count_adjust(b, old, -1);
	return 0;
}

static void field_name(char *buf, size_t len, const struct out_ref *o)
{
	if (o->index < 0)
		snprintf(buf, len, "%s", o->field);
	else
		snprintf(buf, len, "%s[%d]", o->field, o->index);
}

static bool selector_empty(const struct policy_selector *sel)
{
	return !sel->client.id && !sel->has_source && !sel->host && !sel->path_prefix &&
	       !sel->method;
}

/* Puts a resource entering the ruleset into every index; duplicates of
 * another resource's client key or route are reported in errs. */
static int reindex(struct builder *b, struct policy_res *res)
{
	const char *kname = policy_kind_name(res->kind);
	struct out_ref out[OUT_REFS_MAX];
	size_t n;
	int r;

	if (res->kind == POLICY_KIND_CLIENT) {
		const struct policy_client *c = &res->u.client;

		for (size_t i = 0; i < c->n_keys; i++) {
			struct bytes_key k = { c->keys[i], strlen(c->keys[i]) };
			const struct client_ent *old = pmap_edit_get(b->clients, c->key_hashes[i], &k);
			struct client_ent *e;

			if (old) {
				policy_errs_add(b->errs, "%s/%s.keys[%zu]: key '%s' is already used by %s/%s",
						kname, res->id, i, c->keys[i], kname, old->c.res->id);
				continue;
			}
			size_t rl_len = c->rate_limit.id ? strlen(c->rate_limit.id) + 1 : 0;

			e = malloc(sizeof(*e) + k.len + 1 + rl_len);
			if (!e)
				return -ENOMEM;
			e->refcnt = 0;
			e->key_len = (uint32_t)k.len;
			memcpy(e->key, k.p, k.len);
			e->key[k.len] = '\0';
			e->c.key_hash = res->key_hash;
			e->c.disabled = c->disabled;
			e->c.rate_limit = c->rate_limit;
			if (rl_len) {
				memcpy(e->key + k.len + 1, c->rate_limit.id, rl_len);
				e->c.rate_limit.id = e->key + k.len + 1;
			}
			e->c.res = policy_res_ref(res);
			r = pmap_edit_put(b->clients, c->key_hashes[i], &k, e);
			if (r < 0) {
				policy_res_unref(res);
				free(e);
				return r;
			}
			r = pindex_edit_add(b->client_ix, client_ix_hash(k.p, k.len), e);
			if (r < 0)
				return r;
		}
	} else if (res->kind == POLICY_KIND_ROUTE) {
		struct route_key k = route_res_key(res);
		uint64_t h = route_res_hash(res);
		const struct route_ent *old = pmap_edit_get(b->routes, h, &k);
		struct route_ent *e;

		if (old) {
			policy_errs_add(b->errs,
					"%s/%s.path_prefix: host '%s' path '%s' is already routed by %s/%s",
					kname, res->id, res->u.route.host, res->u.route.path_prefix,
					kname, old->r.res->id);
		} else if (k.host_len > UINT16_MAX || k.prefix_len > UINT16_MAX) {
			/* Beyond POLICY_MAX_HOST_LEN / POLICY_MAX_PATH_LEN. */
			policy_errs_add(b->errs, "%s/%s: host or path prefix too long", kname,
					res->id);
		} else {
			e = malloc(sizeof(*e) + k.host_len + k.prefix_len + 2);
			if (!e)
				return -ENOMEM;
			e->refcnt = 0; /* the map takes the only reference */
			e->host_len = (uint16_t)k.host_len;
			e->prefix_len = (uint16_t)k.prefix_len;
			memcpy(e->key, k.host, k.host_len + 1);
			memcpy(e->key + k.host_len + 1, k.prefix, k.prefix_len);
			e->key[k.host_len + 1 + k.prefix_len] = '\0';
			e->r.res = policy_res_ref(res);
			e->r.all_methods = res->u.route.n_methods == 0;
			e->r.no_access_lists = res->u.route.n_access_lists == 0;
			e->r.no_rate_limits = res->u.route.n_rate_limits == 0;
			r = pmap_edit_put(b->routes, h, &k, e);
			if (r < 0) {
				policy_res_unref(res);
				free(e);
				return r;
			}
			if ((r = pindex_edit_add(b->route_ix, h, e)) < 0)
				return r;
		}
	} else {
		struct res_key k = { res->kind, res->id, res->id_len };

		r = pmap_edit_put(b->small, res->key_hash, &k, res);
		if (r < 0)
			return r;
		if (res->kind == POLICY_KIND_RATE_LIMIT) {
			struct limit_ent *le = malloc(sizeof(*le));
			struct limiter_params params;

			if (!le)
				return -ENOMEM;
			le->refcnt = 0; /* the map takes the only reference */
			le->l.res = policy_res_ref(res);
			le->l.proxy = res->u.rate_limit.enforce != POLICY_ENFORCE_KERNEL;
			le->l.shadow = res->u.rate_limit.action == POLICY_ACTION_SHADOW;
			le->l.selects_all = selector_empty(&res->u.rate_limit.sel);
			limiter_params_from_policy(&res->u.rate_limit, &params);
			limiter_plan_init(&params, &le->l.plan);
			r = pmap_edit_put(b->limits, res->key_hash, &k, le);
			if (r < 0) {
				policy_res_unref(res);
				free(le);
				return r;
			}
		}
	}
	if (!res_out_refs(res, out, &n))
		policy_errs_add(b->errs, "%s/%s: too many references", kname, res->id);
	for (size_t i = 0; i < n; i++) {
		if (!out_first(out, i))
			continue;
		assert(out[i].ref->key_hash == policy_key_hash(out[i].kind, out[i].ref->id,
							       strlen(out[i].ref->id)));
		r = refs_adjust(b, out[i].kind, out[i].ref->id, +1);
		if (r < 0)
			return r;
	}
	count_adjust(b, res, +1);
	return 0;
}

/* Every reference an entering resource makes must name a resource of the
 * right kind in the new ruleset. */
static void check_out_refs(struct builder *b, const struct policy_res *res)
{
	struct out_ref out[OUT_REFS_MAX];
	size_t n;
	char field[64];

	res_out_refs(res, out, &n);
	for (size_t i = 0; i < n; i++) {
		const char *id = out[i].ref->id;

		if (edit_get_res(b->res, out[i].kind, id, strlen(id),
				 policy_key_hash(out[i].kind, id, strlen(id))))
			continue;
		field_name(field, sizeof(field), &out[i]);
		policy_errs_add(b->errs, "%s/%s.%s: %s/%s does not exist",
				policy_kind_name(res->kind), res->id, field,
				policy_kind_name(out[i].kind), id);
	}
}

/* Open-addressing set of resource keys, to find keys named twice in one
 * change set in O(n). Lives for one build_next() call. */
struct key_set {
	struct res_key *slot;
	uint64_t *hash;
	size_t mask;
};

static int key_set_init(struct key_set *ks, size_t n)
{
	size_t cap = 16;

	while (cap < 2 * n)
		cap *= 2;
	ks->slot = calloc(cap, sizeof(*ks->slot));
	ks->hash = calloc(cap, sizeof(*ks->hash));
	ks->mask = cap - 1;
	if (!ks->slot || !ks->hash) {
		free(ks->slot);
		free(ks->hash);
		return -ENOMEM;
	}
	return 0;
}

/* Adds the key; false when it was already there. */
static bool key_set_add(struct key_set *ks, struct res_key k, uint64_t h)
{
	for (size_t i = h & ks->mask;; i = (i + 1) & ks->mask) {
		struct res_key *s = &ks->slot[i];

		if (!s->id) {
			*s = k;
			ks->hash[i] = h;
			return true;
		}
		if (ks->hash[i] == h && s->kind == k.kind && s->id_len == k.id_len &&
		    memcmp(s->id, k.id, k.id_len) == 0)
			return false;
	}
}

/* A change set: what to upsert and what to remove; on the stack of
 * snapshot_apply/build, borrowing the caller's arrays. */
struct changes {
	const char *label; /* "delta" or "snapshot", for messages */
	struct policy_res *const *upserts;
	size_t n_upserts;
	const struct policy_key *removes;
	size_t n_removes;
};

/* Keys named twice, and removes of absent keys: refused before any edit. */
static int check_change_keys(const struct snapshot *base, const struct changes *ch,
			     struct policy_errs *errs)
{
	unsigned errs_before = policy_errs_count(errs);
	struct key_set ks;
	int r;

	r = key_set_init(&ks, ch->n_upserts + ch->n_removes);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ch->n_upserts; i++) {
		const struct policy_res *u = ch->upserts[i];
		struct res_key k = { u->kind, u->id, u->id_len };

		if (!key_set_add(&ks, k, u->key_hash))
			policy_errs_add(errs, "%s: %s/%s appears twice", ch->label,
					policy_kind_name(u->kind), u->id);
	}
	for (size_t i = 0; i < ch->n_removes; i++) {
		const struct policy_key *rm = &ch->removes[i];
		struct res_key k = { rm->kind, rm->id, strlen(rm->id) };
		uint64_t h = policy_key_hash(rm->kind, rm->id, k.id_len);

		if (!key_set_add(&ks, k, h))
			policy_errs_add(errs, "%s: %s/%s appears twice", ch->label,
					policy_kind_name(rm->kind), rm->id);
		else if (!pmap_get(base->res, h, &k))
			policy_errs_add(errs, "%s.removes: %s/%s does not exist", ch->label,
					policy_kind_name(rm->kind), rm->id);
	}
	free(ks.slot);
	free(ks.hash);
	return policy_errs_count(errs) != errs_before ? -EINVAL : 0;
}

static void builder_abort(struct builder *b)
{
	pmap_edit_abort(b->res);
	pmap_edit_abort(b->clients);
	pmap_edit_abort(b->routes);
	pmap_edit_abort(b->refs);
	pmap_edit_abort(b->small);
	pmap_edit_abort(b->limits);
	pindex_edit_abort(b->client_ix);
	pindex_edit_abort(b->route_ix);
	snap_free(b->next);
}

/* Seals the five edits into b->next. On failure everything is released. */
static int builder_finish(struct builder *b, struct snapshot **ret)
{
	struct snapshot *n = b->next;

	n->nodes_created = pmap_edit_nodes_allocated(b->res) +
			   pmap_edit_nodes_allocated(b->clients) +
			   pmap_edit_nodes_allocated(b->routes) + pmap_edit_nodes_allocated(b->refs) +
			   pmap_edit_nodes_allocated(b->small) + pmap_edit_nodes_allocated(b->limits) +
			   pindex_edit_nodes_allocated(b->client_ix) +
			   pindex_edit_nodes_allocated(b->route_ix);
	n->res = pmap_edit_end(b->res);
	n->clients = pmap_edit_end(b->clients);
	n->routes = pmap_edit_end(b->routes);
	n->refs = pmap_edit_end(b->refs);
	n->small = pmap_edit_end(b->small);
	n->limits = pmap_edit_end(b->limits);
	pindex_edit_end(b->client_ix, &n->client_ix);
	pindex_edit_end(b->route_ix, &n->route_ix);
	if (!n->res || !n->clients || !n->routes || !n->refs || !n->small || !n->limits) {
		snap_free(n); /* pmap_edit_end freed the edits that failed */
		return -ENOMEM;
	}
	n->head.settings = n->settings ? &n->settings->u.settings : &default_settings;
	if (n->settings) {
		const struct policy_settings *st = &n->settings->u.settings;

		for (size_t i = 0; i < st->n_access_lists && i < 2 * POLICY_MAX_REFS; i++) {
			const struct policy_res *al =
				snapshot_get_ref(n, POLICY_KIND_ACCESS_LIST, &st->access_lists[i]);

			if (!al)
				continue;
			if (al->u.access_list.deny_table)
				n->global_deny[n->n_global_deny++] =
					(struct list_table){ al, al->u.access_list.deny_table };
			if (al->u.access_list.allow_table)
				n->global_allow[n->n_global_allow++] =
					(struct list_table){ al, al->u.access_list.allow_table };
		}
	}
	for (unsigned oct = 0; oct < 256; oct++) {
		const struct cidr_addr a = { .family = AF_INET, .addr = { (uint8_t)oct } };
		bool open = n->n_global_allow == 0;

		for (size_t i = 0; i < n->n_global_deny && open; i++)
			open = cidr_table_surely_misses(n->global_deny[i].table, &a);
		if (open)
			n->head.v4_open[oct / 64] |= 1ull << (oct % 64);
		else
			n->head.v4_open[oct / 64] &= ~(1ull << (oct % 64));
	}
	n->route_depth_max = 0;
	for (unsigned d = ROUTE_DEPTH_MAX + 1; d-- > 0;) {
		if (n->route_depth_count[d]) {
			n->route_depth_max = d;
			break;
		}
	}
	*ret = n;
	return 0;
}

static int refill_client_cb(void *arg, void *val)
{
	const struct client_ent *e = val;

	return pindex_edit_add(arg, client_ix_hash(e->key, e->key_len), val);
}

static int refill_route_cb(void *arg, void *val)
{
	const struct route_ent *e = val;

	return pindex_edit_add(arg, route_res_hash(e->r.res), val);
}

/* Opens the flat indexes' edits, sized for what the change could add; an
 * index that must grow starts over and is refilled from base's map. */
static int index_begin(const struct snapshot *base, const struct changes *ch, struct builder *b)
{
	size_t clients = pmap_count(base->clients), routes = pmap_count(base->routes);
	bool refill;
	int r;

	for (size_t i = 0; i < ch->n_upserts; i++) {
		if (ch->upserts[i]->kind == POLICY_KIND_CLIENT)
			clients += ch->upserts[i]->u.client.n_keys;
		else if (ch->upserts[i]->kind == POLICY_KIND_ROUTE)
			routes++;
	}
	r = pindex_edit_begin(base->client_ix, clients, &b->client_ix, &refill);
	if (r == 0 && refill)
		r = pmap_foreach(base->clients, refill_client_cb, b->client_ix);
	if (r < 0)
		return r;
	r = pindex_edit_begin(base->route_ix, routes, &b->route_ix, &refill);
	if (r == 0 && refill)
		r = pmap_foreach(base->routes, refill_route_cb, b->route_ix);
	return r;
}

static int build_next(const struct snapshot *base, uint64_t version, const struct changes *ch,
		      struct policy_errs *errs, struct snapshot **ret)
{
	struct builder b = { .errs = errs };
	unsigned errs_before = policy_errs_count(errs);
	unsigned char *noop = NULL;
	size_t total;
	int r;

	r = check_change_keys(base, ch, errs);
	if (r < 0)
		return r;

	b.next = snap_alloc();
	noop = calloc(ch->n_upserts ? ch->n_upserts : 1, 1);
	if (!b.next || !noop) {
		free(noop);
		if (b.next)
			snap_free(b.next);
		return -ENOMEM;
	}
	memcpy(b.next->ruleset, base->ruleset, sizeof(base->ruleset));
	b.next->version = version;
	b.next->settings = base->settings;
	memcpy(b.next->kind_count, base->kind_count, sizeof(base->kind_count));
	memcpy(b.next->route_depth_count, base->route_depth_count,
	       sizeof(base->route_depth_count));
	if ((r = pmap_edit_begin(base->res, &b.res)) < 0 ||
	    (r = pmap_edit_begin(base->clients, &b.clients)) < 0 ||
	    (r = pmap_edit_begin(base->routes, &b.routes)) < 0 ||
	    (r = pmap_edit_begin(base->refs, &b.refs)) < 0 ||
	    (r = pmap_edit_begin(base->small, &b.small)) < 0 ||
	    (r = pmap_edit_begin(base->limits, &b.limits)) < 0 ||
	    (r = index_begin(base, ch, &b)) < 0)
		goto out_abort;

	/* Everything leaving first, so that a key or route moving from one
	 * resource to another within the same change is not a duplicate. */
	for (size_t i = 0; i < ch->n_removes; i++) {
		const struct policy_key *rm = &ch->removes[i];
		struct res_key k = { rm->kind, rm->id, strlen(rm->id) };
		uint64_t h = policy_key_hash(rm->kind, rm->id, k.id_len);
		const struct policy_res *old = pmap_get(base->res, h, &k);

		if ((r = unindex(&b, old)) < 0 || (r = pmap_edit_del(b.res, h, &k)) < 0)
			goto out_abort;
	}
	for (size_t i = 0; i < ch->n_upserts; i++) {
		const struct policy_res *u = ch->upserts[i];
		const struct policy_res *old = edit_get_res(b.res, u->kind, u->id, u->id_len,
							    u->key_hash);

		if (old && policy_res_equal(old, u)) {
			noop[i] = 1;
			continue;
		}
		if (old && (r = unindex(&b, old)) < 0)
			goto out_abort;
	}
	for (size_t i = 0; i < ch->n_upserts; i++) {
		struct policy_res *u = ch->upserts[i];
		struct res_key k = { u->kind, u->id, u->id_len };

		if (noop[i])
			continue;
		if ((r = reindex(&b, u)) < 0 || (r = pmap_edit_put(b.res, u->key_hash, &k, u)) < 0)
			goto out_abort;
	}

	/* Validate the whole new ruleset: references out of what entered, and
	 * references into what left (a remove of something still named). */
	for (size_t i = 0; i < ch->n_upserts; i++)
		if (!noop[i])
			check_out_refs(&b, ch->upserts[i]);
	for (size_t i = 0; i < ch->n_removes; i++) {
		const struct policy_key *rm = &ch->removes[i];
		int n = refs_of(&b, rm->kind, rm->id);

		if (n > 0)
			policy_errs_add(errs, "%s/%s: still referenced by %d resource%s",
					policy_kind_name(rm->kind), rm->id, n, n == 1 ? "" : "s");
	}
	total = pmap_edit_count(b.res);
	if (total > POLICY_MAX_RESOURCES) {
		policy_errs_add(errs, "%s: %zu resources exceed the cap of %u (POLICY_MAX_RESOURCES)",
				ch->label, total, POLICY_MAX_RESOURCES);
		b.cap_hit = true;
	}
	if (b.next->kind_count[POLICY_KIND_ROUTE] > POLICY_MAX_ROUTES) {
		policy_errs_add(errs, "%s: %zu routes exceed the cap of %u (POLICY_MAX_ROUTES)",
				ch->label, b.next->kind_count[POLICY_KIND_ROUTE], POLICY_MAX_ROUTES);
		b.cap_hit = true;
	}
	if (policy_errs_count(errs) != errs_before) {
		r = b.cap_hit ? -E2BIG : -EINVAL;
		goto out_abort;
	}
	free(noop);
	return builder_finish(&b, ret);

out_abort:
	free(noop);
	builder_abort(&b);
	return r;
}

int snapshot_build(const char *ruleset, uint64_t version, struct policy_res *const *res,
		   size_t n, struct policy_errs *errs, struct snapshot **ret)
{
	struct policy_errs local;
	struct changes ch = { .label = "snapshot", .upserts = res, .n_upserts = n };
	struct snapshot *empty;
	int r;

	if (!errs) {
		errs = &local;
		policy_errs_init(errs);
	}
	r = snapshot_new_empty(ruleset, &empty);
	if (r < 0)
		return r;
	r = build_next(empty, version, &ch, errs, ret);
	snapshot_unref(empty);
	return r;
}

int snapshot_apply(const struct snapshot *base, const struct policy_delta *d,
		   struct policy_errs *errs, struct snapshot **ret)
{
	struct policy_errs local;
	struct changes ch = {
		.label = "delta",
		.upserts = d->upserts, .n_upserts = d->n_upserts,
		.removes = d->removes, .n_removes = d->n_removes,
	};

	unsigned errs_before;

	if (!errs) {
		errs = &local;
		policy_errs_init(errs);
	}
	errs_before = policy_errs_count(errs);
	if (strcmp(d->ruleset, base->ruleset) != 0)
		policy_errs_add(errs, "delta.ruleset: '%s' does not match the node's ruleset '%s'",
				d->ruleset, base->ruleset);
	if (d->from_version != base->version)
		policy_errs_add(errs, "delta.from_version: %llu does not match the node's version %llu",
				(unsigned long long)d->from_version,
				(unsigned long long)base->version);
	if (policy_errs_count(errs) != errs_before)
		return -ESTALE;
	if (d->to_version <= d->from_version) {
		policy_errs_add(errs, "delta.to_version: %llu must be greater than from_version %llu",
				(unsigned long long)d->to_version,
				(unsigned long long)d->from_version);
		return -EINVAL;
	}
	return build_next(base, d->to_version, &ch, errs, ret);
}

size_t snapshot_nodes_created(const struct snapshot *s)
{
	return s->nodes_created;
}

/* ---- comparing ---- */

static int res_cmp(const void *pa, const void *pb)
{
	const struct policy_res *a = *(const struct policy_res *const *)pa;
	const struct policy_res *b = *(const struct policy_res *const *)pb;

	if (a->kind != b->kind)
		return a->kind < b->kind ? -1 : 1;
	return strcmp(a->id, b->id);
}

/* A growable array of borrowed resource pointers; owned by the function
 * that fills it, freed before it returns. */
struct res_list {
	struct policy_res **v;
	size_t n, cap;
};

static int res_list_add(struct res_list *l, struct policy_res *r)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct policy_res **v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = r;
	return 0;
}

/* pmap_diff accumulator for snapshot_diff; on its stack. */
struct diff_acc {
	struct res_list up, rm;
};

static int diff_cb(void *arg, void *va, void *vb)
{
	struct diff_acc *acc = arg;

	if (!vb)
		return res_list_add(&acc->rm, va);
	if (!va || !policy_res_equal(va, vb))
		return res_list_add(&acc->up, vb);
	return 0;
}

int snapshot_diff(const struct snapshot *a, const struct snapshot *b, struct policy_delta **ret)
{
	struct diff_acc acc = { 0 };
	struct policy_delta *d = NULL;
	int r;

	if (strcmp(a->ruleset, b->ruleset) != 0)
		return -EINVAL;
	r = pmap_diff(a->res, b->res, diff_cb, &acc);
	if (r < 0)
		goto out;
	if (acc.up.n > 1)
		qsort(acc.up.v, acc.up.n, sizeof(acc.up.v[0]), res_cmp);
	if (acc.rm.n > 1)
		qsort(acc.rm.v, acc.rm.n, sizeof(acc.rm.v[0]), res_cmp);
	r = policy_delta_new(a->ruleset, a->version, b->version, &d);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < acc.up.n && r == 0; i++)
		r = policy_delta_add_upsert(d, acc.up.v[i]);
	for (size_t i = 0; i < acc.rm.n && r == 0; i++)
		r = policy_delta_add_remove(d, acc.rm.v[i]->kind, acc.rm.v[i]->id);
	if (r < 0) {
		policy_delta_free(d);
		goto out;
	}
	*ret = d;
out:
	free(acc.up.v);
	free(acc.rm.v);
	return r;
}

static int differs_cb(void *arg, void *va, void *vb)
{
	(void)arg;
	return !va || !vb || !policy_res_equal(va, vb);
}

bool snapshot_equal(const struct snapshot *a, const struct snapshot *b)
{
	if (strcmp(a->ruleset, b->ruleset) != 0)
		return false;
	if (a->res == b->res)
		return true;
	if (pmap_count(a->res) != pmap_count(b->res))
		return false;
	return pmap_diff(a->res, b->res, differs_cb, NULL) == 0;
}

/* ---- reading ---- */

const char *snapshot_ruleset(const struct snapshot *s)
{
	return s->ruleset;
}

uint64_t snapshot_version(const struct snapshot *s)
{
	return s->version;
}

size_t snapshot_count(const struct snapshot *s, enum policy_kind kind)
{
	if (kind == 0)
		return pmap_count(s->res);
	if (kind < POLICY_KIND_MIN || kind > POLICY_KIND_MAX)
		return 0;
	return s->kind_count[kind];
}

/* The map to look a resource of this kind up in. */
static const struct pmap *kind_map(const struct snapshot *s, enum policy_kind kind)
{
	return kind == POLICY_KIND_CLIENT || kind == POLICY_KIND_ROUTE ? s->res : s->small;
}

const struct policy_res *snapshot_get(const struct snapshot *s, enum policy_kind kind,
				      const char *id)
{
	struct res_key k = { kind, id, strlen(id) };

	return pmap_get(kind_map(s, kind), policy_key_hash(kind, id, k.id_len), &k);
}

static inline bool res_is(const struct policy_res *r, enum policy_kind kind, const char *id,
			  size_t id_len)
{
	return r->kind == kind && r->id_len == id_len && memcmp(r->id, id, id_len) == 0;
}

/* The request path's lookups compare keys inline (pmap_get_hash) rather
 * than through the maps' ops: no indirect call per level or candidate. */
const struct policy_res *snapshot_get_ref(const struct snapshot *s, enum policy_kind kind,
					  const struct policy_ref *ref)
{
	const struct pmap *m = kind_map(s, kind);
	const struct policy_res *r;

	if (!ref->id)
		return NULL;
	for (size_t n = 0; (r = pmap_get_hash(m, ref->key_hash, n)); n++)
		if (res_is(r, kind, ref->id, ref->id_len))
			return r;
	return NULL;
}

const struct snapshot_limit *snapshot_lookup_limit(const struct snapshot *s,
						   const struct policy_ref *ref)
{
	const struct limit_ent *e;

	if (!ref->id)
		return NULL;
	for (size_t n = 0; (e = pmap_get_hash(s->limits, ref->key_hash, n)); n++)
		if (e->l.res->kind == POLICY_KIND_RATE_LIMIT && e->l.res->id_len == ref->id_len &&
		    bytes_eq_short(e->l.res->id, ref->id, ref->id_len))
			return &e->l;
	return NULL;
}

static int collect_cb(void *arg, void *val)
{
	return res_list_add(arg, val);
}

int snapshot_foreach(const struct snapshot *s,
		     int (*cb)(void *arg, const struct policy_res *r), void *arg)
{
	struct res_list all = { 0 };
	int r;

	r = pmap_foreach(s->res, collect_cb, &all);
	if (r == 0) {
		if (all.n > 1)
			qsort(all.v, all.n, sizeof(all.v[0]), res_cmp);
		for (size_t i = 0; i < all.n && r == 0; i++)
			r = cb(arg, all.v[i]);
	}
	free(all.v);
	return r;
}

const struct snapshot_client *snapshot_lookup_client(const struct snapshot *s, const char *key,
						    size_t len)
{
	return snapshot_lookup_client_hash(s, key, len, client_ix_hash(key, len));
}

const struct snapshot_client *snapshot_lookup_client_hash(const struct snapshot *s,
							 const char *key, size_t len,
							 uint64_t hash)
{
	const struct client_ent *e;
	bool unsure;
	uint64_t h;

	for (size_t n = 0; (e = pindex_get(s->client_ix, hash, n, &unsure)); n++)
		if (e->key_len == len && bytes_eq_short(e->key, key, len))
			return &e->c;
	if (!unsure)
		return NULL;
	h = policy_client_key_hash(key, len);
	for (size_t n = 0; (e = pmap_get_hash(s->clients, h, n)); n++)
		if (e->key_len == len && memcmp(e->key, key, len) == 0)
			return &e->c;
	return NULL;
}

const struct policy_res *snapshot_find_client(const struct snapshot *s, const char *key,
					      size_t len)
{
	const struct snapshot_client *c = snapshot_lookup_client(s, key, len);

	return c ? c->res : NULL;
}

static const struct snapshot_route *route_get(const struct snapshot *s, uint64_t h,
					      const char *host, size_t host_len, const char *prefix,
					      size_t prefix_len)
{
	const struct route_ent *e;
	bool unsure;

	for (size_t n = 0; (e = pindex_get(s->route_ix, h, n, &unsure)); n++)
		if (route_is(e, host, host_len, prefix, prefix_len))
			return &e->r;
	if (!unsure)
		return NULL;
	for (size_t n = 0; (e = pmap_get_hash(s->routes, h, n)); n++)
		if (route_is(e, host, host_len, prefix, prefix_len))
			return &e->r;
	return NULL;
}

/* The longest route of one host for the path, trying prefixes at segment
 * boundaries from `end` (the end of the deepest useful prefix) up to "/".
 * `seed` is host_seed(host, host_len); `h0`, when not 0, is the route hash
 * of the first candidate, already computed by the caller. */
static const struct snapshot_route *match_host(const struct snapshot *s, const char *host,
					       size_t host_len, uint64_t seed, uint64_t h0,
					       const char *path, size_t end)
{
	for (;;) {
		const char *prefix = end ? path : "/";
		size_t prefix_len = end ? end : 1;
		uint64_t h = h0 ? h0 : route_hash(seed, prefix, prefix_len);
		const struct snapshot_route *r = route_get(s, h, host, host_len, prefix, prefix_len);

		if (r)
			return r;
		if (end <= 1)
			return NULL;
		h0 = 0;
		do
			end--;
		while (end > 0 && path[end] != '/');
	}
}

const struct policy_res *snapshot_match_route(const struct snapshot *s, const char *host,
					      size_t host_len, const char *path,
					      size_t path_len)
{
	struct snapshot_route r;

	return snapshot_find_route(s, host, host_len, path, path_len, &r) ? r.res : NULL;
}

/* 0x80 in each byte of x that equals c, 0 elsewhere: exact, no borrow
 * from one byte into the next (unlike the usual has-zero-byte test). */
static inline uint64_t bytes_eq(uint64_t x, unsigned char c)
{
	const uint64_t lo7 = 0x7f7f7f7f7f7f7f7full;
	uint64_t y = x ^ (0x0101010101010101ull * c);

	return ~(((y & lo7) + lo7) | y | lo7);
}

/* Where a path stops mattering for the route match: the index of its
 * (depth_max + 1)th '/' before any '?', else of its first '?', else len.
 * Sixteen bytes at a time (SSE2), then eight, then one (paths are a few
 * dozen bytes; a byte loop spent eight instructions and three branches on
 * each, the word loop 77 instructions on policy_bench's 18-byte paths),
 * reading only path[0, len). */
static inline __attribute__((always_inline)) size_t
path_stop(const char *path, size_t len, unsigned depth_max)
{
	unsigned seen = 0;
	size_t i = 0;

#ifdef __SSE2__
	/* Sixteen bytes at a time where the path has them: one compare per
	 * character class and a 16-bit mask each. */
	for (; i + 16 <= len; i += 16) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(path + i));
		unsigned sl = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8('/')));
		unsigned q = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8('?')));
		unsigned n;

		if (q)
			sl &= (q & -q) - 1; /* only the slashes before the query */
		n = (unsigned)__builtin_popcount(sl);
		if (seen + n > depth_max) {
			for (unsigned k = depth_max - seen; k; k--)
				sl &= sl - 1;
			return i + (size_t)__builtin_ctz(sl);
		}
		seen += n;
		if (q)
			return i + (size_t)__builtin_ctz(q);
	}
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	for (; i + 8 <= len; i += 8) {
		uint64_t x, sl, q;
		unsigned n;

		memcpy(&x, path + i, 8);
		sl = bytes_eq(x, '/');
		q = bytes_eq(x, '?');
		if (q)
			sl &= (q & -q) - 1; /* only the slashes before the query */
		n = (unsigned)__builtin_popcountll(sl);
		if (seen + n > depth_max) {
			for (unsigned k = depth_max - seen; k; k--)
				sl &= sl - 1;
			return i + (size_t)__builtin_ctzll(sl) / 8;
		}
		seen += n;
		if (q)
			return i + (size_t)__builtin_ctzll(q) / 8;
	}
#endif
	for (; i < len; i++) {
		if (path[i] == '/') {
			if (seen == depth_max)
				return i;
			seen++;
		} else if (path[i] == '?') {
			return i;
		}
	}
	return len;
}

/* True when path[i, len) holds only slashes up to a '?' or its end. */
static bool only_slashes_follow(const char *path, size_t i, size_t len)
{
	while (i < len && path[i] == '/')
		i++;
	return i == len || path[i] == '?';
}

/* ---- per-thread memo of route matches ----
 *
 * A match costs two hashes (host, then the deepest candidate prefix), and
 * for every candidate a walk down the flat index (root, page, chunk, then
 * the route entry: dependent cache lines) and the fallback to routes of
 * any host. The answer depends only on the snapshot, the host and the
 * path up to `end` (the deepest useful prefix), and traffic goes to few
 * (host, prefix) pairs, so each thread keeps the answers it found, one
 * cache line each, in sets of two adjacent lines: a hit reads the memo
 * instead of the index and computes neither XXH3 hash. Two ways, because a
 * direct-mapped table as large lost a third of a thousand busy pairs to
 * collisions (callgrind, policy_bench hot mix); 2,048 sets, because with
 * 1,024 one set in thirteen drew three or more of a thousand pairs, which
 * then kept missing (10% of policy_bench's lookups). The set is picked by
 * route_memo_set(), a word-at-a-time hash a few instructions long: it
 * only spreads pairs over sets (the key bytes are compared in full), so
 * its weakness against crafted input costs an attacker's pairs their
 * hits, never a wrong answer. An entry is used only while the snapshot
 * that produced it is the one being read (same uid): a publish
 * invalidates everything at once, and no stale pointer is ever
 * dereferenced. Misses (no route) are not memoized: anyone can send a new
 * path. Like the client memo in decision.c, a frequent pair is kept
 * against one-off ones: a new pair replaces an entry only once misses
 * have worn down the hits it earned. Pairs longer than ROUTE_MEMO_KEY_MAX
 * bytes go to the index every time. */
#define ROUTE_MEMO_SETS 2048u
#define ROUTE_MEMO_SET_BITS 11
#define ROUTE_MEMO_KEY_MAX 42u

/* One memoized match: one cache line, owned by its thread's memo. It
 * holds a copy of the route's struct snapshot_route, so that a hit does
 * not read the route's index entry either (a pointer to it cost the
 * decision that line's miss instead). The host and path bytes are
 * compared in full: the set hash is weak, and the route hash not keyed. */
struct route_memo_ent {
	uint64_t snap_uid; /* 0: empty */
	const struct policy_res *res;
	uint8_t host_len;
	uint8_t path_len;
	uint8_t hits;
	bool all_methods, no_access_lists, no_rate_limits;
	char key[ROUTE_MEMO_KEY_MAX]; /* host bytes, then path bytes */
};
_Static_assert(sizeof(struct route_memo_ent) == 64, "a route memo entry is one cache line");

struct route_memo {
	struct route_memo_ent ent[ROUTE_MEMO_SETS][2];
};

/* Allocated on the thread's first lookup, freed when it exits (pthread key
 * destructor). */
static __thread struct route_memo *tl_route_memo;
static pthread_key_t route_memo_key;
static pthread_once_t route_memo_once = PTHREAD_ONCE_INIT;
static bool route_memo_key_ok;

static void route_memo_destroy(void *m)
{
	free(m);
}

static void route_memo_key_init(void)
{
	route_memo_key_ok = pthread_key_create(&route_memo_key, route_memo_destroy) == 0;
}

/* The calling thread's memo; NULL when it cannot have one (no memory). */
static struct route_memo *route_memo_get(void)
{
	struct route_memo *m = tl_route_memo;

	if (__builtin_expect(m != NULL, 1))
		return m;
	pthread_once(&route_memo_once, route_memo_key_init);
	if (!route_memo_key_ok || !(m = aligned_alloc(64, sizeof(*m))))
		return NULL;
	memset(m, 0, sizeof(*m));
	if (pthread_setspecific(route_memo_key, m) != 0) {
		free(m);
		return NULL;
	}
	tl_route_memo = m;
	return m;
}

/* Mixes the n bytes at p into h, eight at a time (the last word
 * overlapping the one before, or assembled from the short tail), reading
 * only p[0, n). */
static inline uint64_t route_memo_mix(uint64_t h, const char *p, size_t n)
{
	const uint64_t k = 0x9e3779b97f4a7c15ull;
	uint64_t w;

	if (n >= 8) {
		/* Whole words, the last one overlapping the one before (the
		 * caller mixes the lengths in first, so this stays exact
		 * enough to spread pairs); no separate tail. */
		for (size_t i = 0; i + 8 < n; i += 8) {
			memcpy(&w, p + i, 8);
			h = (h ^ w) * k;
			h ^= h >> 29;
		}
		memcpy(&w, p + n - 8, 8);
	} else if (n >= 4) {
		uint32_t a, b;

		memcpy(&a, p, 4);
		memcpy(&b, p + n - 4, 4);
		w = a | (uint64_t)b << 32;
	} else if (n) {
		w = (uint64_t)(unsigned char)p[0] | (uint64_t)(unsigned char)p[n / 2] << 8 |
		    (uint64_t)(unsigned char)p[n - 1] << 16;
	} else {
		return h;
	}
	h = (h ^ w) * k;
	h ^= h >> 29;
	return h;
}

/* The memo set of (host, path[0, end)). */
static inline size_t route_memo_set(const char *host, size_t host_len, const char *path,
				    size_t end)
{
	uint64_t h = route_memo_mix((uint64_t)host_len << 32 | end, host, host_len);

	h = route_memo_mix(h, path, end) * 0xc2b2ae3d27d4eb4full;
	return (size_t)(h >> (64 - ROUTE_MEMO_SET_BITS)); /* top bits: the best mixed */
}
_Static_assert(ROUTE_MEMO_SETS == 1u << ROUTE_MEMO_SET_BITS,
	       "route_memo_set takes the top ROUTE_MEMO_SET_BITS bits");

/* Does entry e hold (host, path[0, end)) for snapshot `uid`? */
static inline bool route_memo_is(const struct route_memo_ent *e, uint64_t uid, const char *host,
				 size_t host_len, const char *path, size_t end)
{
	return e->snap_uid == uid && e->host_len == host_len && e->path_len == end &&
	       bytes_eq_short(e->key, host, host_len) && bytes_eq_short(e->key + host_len, path, end);
}

/* Keeps a match in set `set`: in a way that is empty or from another
 * snapshot, else in place of the way with fewer hits once misses have worn
 * them down. */
static void route_memo_store(struct route_memo_ent *set, uint64_t uid, const char *host,
			     size_t host_len, const char *path, size_t end,
			     const struct snapshot_route *r)
{
	struct route_memo_ent *e = &set[0];

	if (set[0].snap_uid == uid)
		e = set[1].snap_uid != uid || set[1].hits < set[0].hits ? &set[1] : &set[0];
	if (e->snap_uid == uid && e->hits > 0) {
		e->hits--;
		return;
	}
	e->snap_uid = uid;
	e->res = r->res;
	e->all_methods = r->all_methods;
	e->no_access_lists = r->no_access_lists;
	e->no_rate_limits = r->no_rate_limits;
	e->host_len = (uint8_t)host_len;
	e->path_len = (uint8_t)end;
	e->hits = 0;
	memcpy(e->key, host, host_len);
	memcpy(e->key + host_len, path, end);
}

/* The route match; with `memo`, looked up in and kept in the calling
 * thread's memo, and then *copy is filled and `copy` returned on a hit.
 * Inlined into both callers, so that the request path's (memo true) pays
 * for no call and no test of `memo`. */
static inline __attribute__((always_inline)) const struct snapshot_route *
lookup_route(const struct snapshot *s, const char *host, size_t host_len, const char *path,
	     size_t path_len, bool memo, struct snapshot_route *copy)
{
	const unsigned depth_max = s->route_depth_max;
	const struct snapshot_route *r;
	struct route_memo_ent *me = NULL;
	uint64_t seed, h0;
	size_t end;

	if (s->kind_count[POLICY_KIND_ROUTE] == 0)
		return NULL;
	/* Empty, not absolute, or only a query: "/". */
	if (path_len == 0 || path[0] != '/') {
		path = "/";
		path_len = 1;
	}
	/* One pass finds where the query starts and the slash after the
	 * deepest segment any route has (no route is deeper than
	 * route_depth_max segments): the longest prefix worth trying ends
	 * there, or at the end of the path without its trailing slashes
	 * (which do not count: "/a/" is "/a"). */
	end = path_stop(path, path_len, depth_max);
	if (end == path_len || path[end] == '?' || only_slashes_follow(path, end, path_len))
		while (end > 1 && path[end - 1] == '/')
			end--;
	if (memo && host_len + end <= ROUTE_MEMO_KEY_MAX) {
		struct route_memo *m = route_memo_get();

		if (m) {
			me = m->ent[route_memo_set(host, host_len, path, end)];
			for (int w = 0; w < 2; w++)
				if (route_memo_is(&me[w], s->head.uid, host, host_len, path, end)) {
					if (me[w].hits < UINT8_MAX)
						me[w].hits++;
					copy->res = me[w].res;
					copy->all_methods = me[w].all_methods;
					copy->no_access_lists = me[w].no_access_lists;
					copy->no_rate_limits = me[w].no_rate_limits;
					return copy;
				}
		}
	}
	/* end >= 1 here (path starts with '/'), so the first candidate of
	 * match_host is path[0, end) and h0 is its hash. */
	seed = host_seed(host, host_len);
	h0 = route_hash(seed, path, end);
	r = NULL;
	if (host_len)
		r = match_host(s, host, host_len, seed, h0, path, end);
	if (!r) {
		uint64_t seed0 = host_seed("", 0);

		r = match_host(s, "", 0, seed0, host_len ? 0 : h0, path, end);
	}
	if (r && me)
		route_memo_store(me, s->head.uid, host, host_len, path, end, r);
	return r;
}

const struct snapshot_route *snapshot_lookup_route(const struct snapshot *s, const char *host,
						   size_t host_len, const char *path,
						   size_t path_len)
{
	return lookup_route(s, host, host_len, path, path_len, false, NULL);
}

bool snapshot_find_route(const struct snapshot *s, const char *host, size_t host_len,
			 const char *path, size_t path_len, struct snapshot_route *out)
{
	const struct snapshot_route *r = lookup_route(s, host, host_len, path, path_len, true, out);

	if (!r)
		return false;
	if (r != out)
		*out = *r;
	return true;
}

/* Most addresses fall where no prefix of a table is (an IPv4 first octet
 * that no prefix covers): cidr_table_surely_misses() answers those inline,
 * without a call. */
static inline bool table_has(const struct cidr_table *t, const struct cidr_addr *addr)
{
	return !cidr_table_surely_misses(t, addr) && cidr_table_lookup(t, addr, NULL) >= 0;
}

/* The first list that refuses addr: by its deny table (deny) or because its
 * non-empty allow table does not hold addr (!deny). NULL when none does. */
static const struct policy_res *refusing_list(const struct policy_res *const *lists, size_t n,
					      const struct cidr_addr *addr, bool deny)
{
	for (size_t i = 0; i < n; i++) {
		const struct policy_access_list *al = &lists[i]->u.access_list;

		if (deny ? al->deny_table && table_has(al->deny_table, addr)
			 : al->allow_table && !table_has(al->allow_table, addr))
			return lists[i];
	}
	return NULL;
}

/* snapshot_check_access() for a route with access lists of its own. */
static __attribute__((noinline)) enum snapshot_access
check_access_route(const struct snapshot *s, const struct policy_route *rt,
		   const struct cidr_addr *addr, const struct policy_res **list)
{
	const struct policy_res *route_lists[POLICY_MAX_REFS], *by;
	enum snapshot_access verdict = SNAPSHOT_ACCESS_ALLOW;
	size_t n = 0;

	for (size_t i = 0; i < rt->n_access_lists && n < POLICY_MAX_REFS; i++) {
		const struct policy_res *al =
			snapshot_get_ref(s, POLICY_KIND_ACCESS_LIST, &rt->access_lists[i]);
		if (al)
			route_lists[n++] = al;
	}
	/* Deny wins over every allow list, global or per route. */
	by = NULL;
	for (size_t i = 0; i < s->n_global_deny && !by; i++)
		if (table_has(s->global_deny[i].table, addr))
			by = s->global_deny[i].list;
	if (by || (n && (by = refusing_list(route_lists, n, addr, true)))) {
		verdict = SNAPSHOT_ACCESS_DENY;
	} else {
		for (size_t i = 0; i < s->n_global_allow && !by; i++)
			if (!table_has(s->global_allow[i].table, addr))
				by = s->global_allow[i].list;
		if (by || (n && (by = refusing_list(route_lists, n, addr, false))))
			verdict = SNAPSHOT_ACCESS_NOT_ALLOWED;
	}
	if (list)
		*list = by;
	return verdict;
}

enum snapshot_access snapshot_check_access(const struct snapshot *s,
					   const struct policy_res *route,
					   const struct cidr_addr *addr,
					   const struct policy_res **list)
{
	/* Most routes have no lists of their own: the global lists alone,
	 * with no array of the route's lists to gather. */
	if (route && route->kind == POLICY_KIND_ROUTE && route->u.route.n_access_lists)
		return check_access_route(s, &route->u.route, addr, list);
	for (size_t i = 0; i < s->n_global_deny; i++)
		if (table_has(s->global_deny[i].table, addr)) {
			if (list)
				*list = s->global_deny[i].list;
			return SNAPSHOT_ACCESS_DENY;
		}
	for (size_t i = 0; i < s->n_global_allow; i++)
		if (!table_has(s->global_allow[i].table, addr)) {
			if (list)
				*list = s->global_allow[i].list;
			return SNAPSHOT_ACCESS_NOT_ALLOWED;
		}
	if (list)
		*list = NULL;
	return SNAPSHOT_ACCESS_ALLOW;
}

/* ---- publication ---- */

/* Threads that called snapshot_thread_online(); call_rcu() and the barrier
 * need a registered caller, so unregistered writers register briefly. */
static __thread unsigned rcu_online;

void snapshot_thread_online(void)
{
	if (rcu_online++ == 0)
		urcu_memb_register_thread();
}

void snapshot_thread_offline(void)
{
	if (rcu_online && --rcu_online == 0)
		urcu_memb_unregister_thread();
}

void snapshot_read_lock(void)
{
	urcu_memb_read_lock();
}

void snapshot_read_unlock(void)
{
	TSAN_RELEASE();
	urcu_memb_read_unlock();
}

const struct snapshot *snapshot_cell_get(const struct snapshot_cell *c)
{
	return __atomic_load_n(&c->cur, __ATOMIC_ACQUIRE);
}

int snapshot_cell_new(struct snapshot *initial, struct snapshot_cell **ret)
{
	struct snapshot_cell *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->cur = initial;
	*ret = c;
	return 0;
}

void snapshot_cell_free(struct snapshot_cell *c)
{
	if (!c)
		return;
	urcu_memb_synchronize_rcu();
	TSAN_ACQUIRE();
	snapshot_unref(c->cur);
	free(c);
}

static void release_cb(struct rcu_head *head)
{
	struct snapshot *s = caa_container_of(head, struct snapshot, rcu);

	TSAN_ACQUIRE();
	__atomic_store_n(&s->rcu_queued, 0, __ATOMIC_RELEASE);
	snapshot_unref(s);
}

/* Holder for a snapshot whose own rcu head is already queued (the same
 * snapshot released by two cells within one grace period). Owned by the
 * call_rcu queue; freed by its callback. */
struct release_holder {
	struct rcu_head rcu;
	struct snapshot *s;
};

static void release_holder_cb(struct rcu_head *head)
{
	struct release_holder *h = caa_container_of(head, struct release_holder, rcu);

	TSAN_ACQUIRE();
	snapshot_unref(h->s);
	free(h);
}

void snapshot_cell_publish(struct snapshot_cell *c, struct snapshot *next)
{
	struct snapshot *old = __atomic_exchange_n(&c->cur, next, __ATOMIC_ACQ_REL);
	struct release_holder *h;
	bool tmp_online = rcu_online == 0;

	if (!old)
		return;
	if (old == next) {
		/* The cell keeps one of the two references it now has. */
		snapshot_unref(old);
		return;
	}
	if (tmp_online)
		urcu_memb_register_thread();
	if (!__atomic_exchange_n(&old->rcu_queued, 1, __ATOMIC_ACQ_REL)) {
		TSAN_RELEASE(); /* everything done to old so far precedes its free */
		urcu_memb_call_rcu(&old->rcu, release_cb);
	} else if ((h = malloc(sizeof(*h)))) {
		h->s = old;
		TSAN_RELEASE();
		urcu_memb_call_rcu(&h->rcu, release_holder_cb);
	} else {
		/* Out of memory on the rare double release: wait instead (the
		 * writer is never inside a read section). */
		urcu_memb_synchronize_rcu();
		TSAN_ACQUIRE();
		snapshot_unref(old);
	}
	if (tmp_online)
		urcu_memb_unregister_thread();
}

void snapshot_barrier(void)
{
	bool tmp_online = rcu_online == 0;

	if (tmp_online)
		urcu_memb_register_thread();
	urcu_memb_barrier();
	if (tmp_online)
		urcu_memb_unregister_thread();
}
